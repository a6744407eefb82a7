//! The function invokes itself: one asynchronous Lambda Invoke (InvocationType Event), which
//! hands a wait for the delegate on to a new invocation when this one's time runs low. Also the
//! SigV4 [`Signer`] for the few AWS calls made without an SDK client (this one, and reading the
//! Harness API key, in the `secrets` module): a client crate each would cost minutes of build.
//!
//! The call is signed by the SDK's own SigV4 signer with the SDK's credentials and sent through
//! the SDK's HTTP client (`crate::http::send`); the endpoint is the SDK's
//! (`AWS_ENDPOINT_URL_LAMBDA`, `AWS_ENDPOINT_URL`) or Lambda's regional one. The payload holds a
//! CloudFormation request, ResponseURL included: it is never logged (main.rs keeps the signer's
//! TRACE, which prints what it signs, out).

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

/// Attempts of one Invoke: Lambda throttles bursts (429) and has the odd 5xx. Each is short:
/// an asynchronous Invoke only queues the event, and all of them must end well within the
/// time an invocation keeps for handing its wait on.
const ATTEMPTS: u32 = 3;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("the function's credentials could not be read: {0}")]
    Credentials(String),
    #[error("the Lambda Invoke of {function} could not be signed: {why}")]
    Signing { function: String, why: String },
    /// Lambda refused (4xx): its error type and message.
    #[error("Lambda refused to invoke {function} (lambda:InvokeFunction): {kind}: {message}")]
    Refused {
        function: String,
        kind: String,
        message: String,
    },
    #[error("Lambda did not accept the Invoke of {function} after {ATTEMPTS} attempts: {last}")]
    Unavailable { function: String, last: String },
}

/// Invokes the function itself; built once per process from the SDK's configuration.
#[derive(Clone, Debug)]
pub struct SelfInvoker {
    credentials: Option<SharedCredentialsProvider>,
    region: Option<String>,
    endpoint: Option<String>,
}

impl SelfInvoker {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        let endpoint = std::env::var("AWS_ENDPOINT_URL_LAMBDA")
            .ok()
            .or_else(|| config.endpoint_url().map(String::from));
        SelfInvoker {
            credentials: config.credentials_provider(),
            region: config.region().map(|r| r.to_string()),
            endpoint,
        }
    }

    /// Invoke `function` (the ARN this invocation was invoked as) asynchronously with
    /// `payload`: `Ok` once Lambda has queued it (202). No attempt starts that could still be
    /// under way at `by`: the invocation answers FAILED itself after that, and an Invoke that
    /// Lambda accepted meanwhile would answer too.
    pub async fn invoke_async(
        &self,
        function: &str,
        payload: &[u8],
        by: tokio::time::Instant,
    ) -> Result<(), InvokeError> {
        let url = self.url(function);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            if tokio::time::Instant::now() + ATTEMPT_TIMEOUT > by {
                last = format!("{last} (no time was left in this invocation for another attempt)");
                break;
            }
            let headers = self.signed_headers(function, &url, payload).await?;
            let mut req = http::Request::post(&url)
                .header("x-amz-invocation-type", "Event")
                .header("content-type", "application/json");
            for (k, v) in headers {
                req = req.header(k, v);
            }
            match crate::http::send(req, payload.to_vec(), ATTEMPT_TIMEOUT).await {
                Ok(resp) if resp.status.is_success() => return Ok(()),
                Ok(resp) if resp.status.as_u16() == 429 || resp.status.is_server_error() => {
                    last = describe(&resp).1;
                }
                Ok(resp) => {
                    let (kind, message) = describe(&resp);
                    return Err(InvokeError::Refused {
                        function: function.to_string(),
                        kind,
                        message,
                    });
                }
                Err(why) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        Err(InvokeError::Unavailable {
            function: function.to_string(),
            last,
        })
    }

    /// Lambda's Invoke URL for `function`, whose ARN names the partition.
    fn url(&self, function: &str) -> String {
        let base = match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => {
                let region = self.region.as_deref().unwrap_or("us-east-1");
                let suffix = if function.starts_with("arn:aws-cn:") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                format!("https://lambda.{region}.{suffix}")
            }
        };
        // As the SDK sends it: the ARN's colons percent-encoded in the path.
        format!(
            "{base}/2015-03-31/functions/{}/invocations",
            function.replace(':', "%3A")
        )
    }

    async fn signed_headers(
        &self,
        function: &str,
        url: &str,
        payload: &[u8],
    ) -> Result<Vec<(String, String)>, InvokeError> {
        let headers = [
            ("x-amz-invocation-type", "Event"),
            ("content-type", "application/json"),
        ];
        let region = self.region.as_deref().unwrap_or("us-east-1");
        let signer = Signer {
            credentials: self.credentials.as_ref(),
            region,
            service: "lambda",
        };
        signer
            .headers(url, &headers, payload)
            .await
            .map_err(|e| match e {
                SignError::Credentials(why) => InvokeError::Credentials(why),
                SignError::Signing(why) => InvokeError::Signing {
                    function: function.to_string(),
                    why,
                },
            })
    }
}

/// Why a request could not be signed.
#[derive(Debug)]
pub(crate) enum SignError {
    Credentials(String),
    Signing(String),
}

/// SigV4 for the few AWS calls made without an SDK client: a POST to `service` in `region`.
pub(crate) struct Signer<'a> {
    pub credentials: Option<&'a SharedCredentialsProvider>,
    pub region: &'a str,
    pub service: &'a str,
}

impl Signer<'_> {
    /// The headers that sign a POST of `body` to `url` with `headers` (which are sent too).
    pub async fn headers(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, SignError> {
        let provider = self
            .credentials
            .ok_or_else(|| SignError::Credentials("no credentials provider".into()))?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| SignError::Credentials(e.to_string()))?;
        let identity: Identity = credentials.into();
        let signing = |e: &dyn std::fmt::Display| SignError::Signing(e.to_string());
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(self.service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| signing(&e))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| signing(&e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| signing(&e))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }
}

fn describe(resp: &crate::http::Answer) -> (String, String) {
    let status = resp.status;
    let kind = resp
        .headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).to_string());
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    let kind = kind
        .or_else(|| body["Type"].as_str().map(String::from))
        .or_else(|| body["__type"].as_str().map(String::from))
        .unwrap_or_else(|| format!("HTTP {status}"));
    let message = body["message"]
        .as_str()
        .or(body["Message"].as_str())
        .unwrap_or_default()
        .to_string();
    (kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_invoke_url_is_lambdas_own_or_the_configured_endpoint() {
        let arn = "arn:aws:lambda:eu-west-1:123456789012:function:stack-BootstrapFunction-1";
        let regional = SelfInvoker {
            credentials: None,
            region: Some("eu-west-1".into()),
            endpoint: None,
        };
        assert_eq!(
            regional.url(arn),
            "https://lambda.eu-west-1.amazonaws.com/2015-03-31/functions/arn%3Aaws%3Alambda%3Aeu-west-1%3A123456789012%3Afunction%3Astack-BootstrapFunction-1/invocations"
        );
        let china = SelfInvoker {
            region: Some("cn-north-1".into()),
            ..regional.clone()
        };
        assert!(china
            .url("arn:aws-cn:lambda:cn-north-1:1:function:f")
            .starts_with("https://lambda.cn-north-1.amazonaws.com.cn/"));
        let local = SelfInvoker {
            endpoint: Some("http://127.0.0.1:5000/".into()),
            ..regional
        };
        assert!(local
            .url("f")
            .starts_with("http://127.0.0.1:5000/2015-03-31/functions/f/"));
    }
}
