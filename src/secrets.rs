//! Secrets Manager, for the one secret the function reads itself: the Harness API key an
//! upgrade asks Harness with (`HarnessApiKeySecretArn`). The delegate's own token is never read
//! by the function: ECS hands it to the container.
//!
//! One `GetSecretValue`, signed with [`crate::invoke::Signer`] and sent by `crate::http::send`, at the
//! secret's own region (its ARN says which). The key has the token's treatment: it is returned
//! as an [`ApiKey`], which prints `<redacted>`, and no error carries the answer's body.

use std::fmt;
use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use serde_json::Value;

use crate::invoke::{SignError, Signer};

/// A Harness API key or service-account token.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key itself: only for the header Harness reads it from.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// One read of a small secret; a slow Secrets Manager must not eat an upgrade's time.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("HarnessApiKeySecretArn {arn}: the function's role may not read it ({kind}): grant secretsmanager:GetSecretValue on that secret (template.yaml does, for the stack's HarnessApiKeySecretArn), and kms:Decrypt when a customer key encrypts it")]
    Denied { arn: String, kind: String },
    #[error("HarnessApiKeySecretArn {arn}: no such secret, or it is scheduled for deletion: check the ARN")]
    NotFound { arn: String },
    #[error("HarnessApiKeySecretArn {arn}: {why}: store the Harness API key itself as the secret's value (SecretString), e.g. aws secretsmanager put-secret-value --secret-id <arn> --secret-string <key>")]
    Unusable { arn: String, why: &'static str },
    #[error("HarnessApiKeySecretArn {arn}: Secrets Manager did not answer ({why})")]
    Unavailable { arn: String, why: String },
}

/// Reads secrets with the function's credentials.
#[derive(Clone, Debug)]
pub struct SecretReader {
    credentials: Option<SharedCredentialsProvider>,
    endpoint: Option<String>,
}

impl SecretReader {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        let endpoint = std::env::var("AWS_ENDPOINT_URL_SECRETS_MANAGER")
            .ok()
            .or_else(|| config.endpoint_url().map(String::from));
        SecretReader {
            credentials: config.credentials_provider(),
            endpoint,
        }
    }

    /// The Harness API key held by the secret `arn`.
    pub async fn api_key(&self, arn: &str) -> Result<ApiKey, SecretError> {
        // The region names the host the request goes to: only a well-formed ARN's.
        if !is_secret_arn(arn) {
            return Err(SecretError::NotFound {
                arn: arn.to_string(),
            });
        }
        let region = arn.split(':').nth(3).unwrap_or("us-east-1");
        let url = match &self.endpoint {
            Some(e) => format!("{}/", e.trim_end_matches('/')),
            None if arn.starts_with("arn:aws-cn:") => {
                format!("https://secretsmanager.{region}.amazonaws.com.cn/")
            }
            None => format!("https://secretsmanager.{region}.amazonaws.com/"),
        };
        let body = serde_json::to_vec(&serde_json::json!({ "SecretId": arn })).unwrap_or_default();
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "secretsmanager.GetSecretValue"),
        ];
        let signer = Signer {
            credentials: self.credentials.as_ref(),
            region,
            service: "secretsmanager",
        };
        let unavailable = |why: String| SecretError::Unavailable {
            arn: arn.to_string(),
            why,
        };
        let signed = signer.headers(&url, &headers, &body).await.map_err(|e| {
            unavailable(match e {
                SignError::Credentials(w) => format!("the function's credentials: {w}"),
                SignError::Signing(w) => format!("signing: {w}"),
            })
        })?;
        let mut req = http::Request::post(&url);
        for (k, v) in headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(signed)
        {
            req = req.header(k, v);
        }
        let resp = crate::http::send(req, body, TIMEOUT)
            .await
            .map_err(unavailable)?;
        let status = resp.status;
        let answer: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
        if status.is_success() {
            return key_of(&answer).map_err(|why| SecretError::Unusable {
                arn: arn.to_string(),
                why,
            });
        }
        let kind = answer["__type"].as_str().unwrap_or_default();
        let kind = kind.rsplit('#').next().unwrap_or(kind).to_string();
        let answered = format!("HTTP {} {kind}", status.as_u16())
            .trim_end()
            .to_string();
        Err(match kind.as_str() {
            "ResourceNotFoundException" => SecretError::NotFound {
                arn: arn.to_string(),
            },
            "AccessDeniedException" | "AccessDenied" | "DecryptionFailure" => SecretError::Denied {
                arn: arn.to_string(),
                kind,
            },
            _ if status.is_client_error() && status.as_u16() != 429 => SecretError::Denied {
                arn: arn.to_string(),
                kind: answered,
            },
            _ => unavailable(answered),
        })
    }
}

/// `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`, each part in the
/// characters AWS allows: the region names the host the key is read from.
pub fn is_secret_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    let [arn_, partition, service, region, account, secret, name] = parts[..] else {
        return false;
    };
    let lower = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    arn_ == "arn"
        && partition.starts_with("aws")
        && lower(partition)
        && service == "secretsmanager"
        && lower(region)
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && secret == "secret"
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
}

/// The key in a `GetSecretValue` answer: the SecretString itself, or the one value of a JSON
/// object (the console's key/value form).
fn key_of(answer: &Value) -> Result<ApiKey, &'static str> {
    let text = answer["SecretString"]
        .as_str()
        .ok_or("the secret holds no text (SecretString)")?
        .trim();
    let key = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => {
            let mut strings = o.values().filter_map(Value::as_str);
            match (strings.next(), strings.next()) {
                (Some(only), None) => only.trim().to_string(),
                _ => return Err("the secret is a JSON object without exactly one text value"),
            }
        }
        _ => text.to_string(),
    };
    if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the secret's value is empty or holds spaces");
    }
    Ok(ApiKey::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_key_is_the_secret_text_or_its_one_value() {
        let plain = key_of(&json!({"SecretString": " pat.acct.id.secret\n"})).unwrap();
        assert_eq!(plain, ApiKey::new("pat.acct.id.secret"));
        let object = key_of(&json!({"SecretString": "{\"apiKey\":\"sat.a.b.c\"}"})).unwrap();
        assert_eq!(object, ApiKey::new("sat.a.b.c"));
        for (answer, says) in [
            (json!({"SecretBinary": "AAAA"}), "holds no text"),
            (
                json!({"SecretString": "{\"a\":\"1\",\"b\":\"2\"}"}),
                "exactly one",
            ),
            (json!({"SecretString": "  "}), "empty"),
            (json!({"SecretString": "two words"}), "spaces"),
        ] {
            let e = key_of(&answer).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
