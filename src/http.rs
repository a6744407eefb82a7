//! The process's HTTP: one HTTPS client for every AWS client (the SDK's, shared), and one
//! connector of the same kind for the calls the SDK does not make (CloudFormation's response
//! URL, the Lambda Invoke, Secrets Manager, Harness). One TLS stack: the system's root
//! certificates are read once per process, during init, and each connector only makes its
//! trust anchors from them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_smithy_async::rt::sleep::SharedAsyncSleep;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::{Builder, Connector, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorSettings, SharedHttpClient,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::body::SdkBody;
use http_body_util::{BodyExt, Limited};

/// The SDK's HTTPS client, as the SDK's default builds it (rustls on aws-lc, the proxy of
/// `HTTPS_PROXY`/`NO_PROXY`), but one for all the clients of an `SdkConfig`: left to itself, each
/// service client builds its own, and each parses the root certificates again.
///
/// The SDK asks for a connector twice over. As each client is built (the service clients, and
/// STS's in the credentials chain), without settings, only to load the roots during init, and it
/// drops the answer; then at the first request, with the settings (`connect_timeout` and no read
/// timeout, as `Clients::from_env` sets them), and keeps the answer for every client with those
/// settings. The first early call builds the connector the first request will get, during init;
/// the others get a plain-HTTP connector, which costs nothing.
pub fn sdk_client(connect_timeout: Duration) -> SharedHttpClient {
    counted_sdk_client(connect_timeout, Arc::default())
}

/// [`sdk_client`], counting in `built` the TLS connectors (each with its root store) it builds.
fn counted_sdk_client(connect_timeout: Duration, built: Arc<AtomicUsize>) -> SharedHttpClient {
    let expected = HttpConnectorSettings::builder()
        .connect_timeout(connect_timeout)
        .build();
    // The first early call builds the connector; the first request with `expected` takes it.
    let early_call_seen = AtomicBool::new(false);
    let prepared: Mutex<Option<Connector>> = Mutex::new(None);
    Builder::new().build_with_connector_fn(move |settings, components| {
        let Some(settings) = settings else {
            if !early_call_seen.swap(true, Ordering::Relaxed) {
                let sleep = aws_smithy_async::rt::sleep::default_async_sleep();
                let connector = tls_connector(&expected, sleep, &built);
                *prepared.lock().unwrap_or_else(|p| p.into_inner()) = Some(connector);
            }
            return ConnectorBuilder::default().build_http();
        };
        let same = settings.connect_timeout() == expected.connect_timeout()
            && settings.read_timeout() == expected.read_timeout();
        if same {
            if let Some(c) = prepared.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return c;
            }
        }
        tls_connector(settings, components.and_then(|c| c.sleep_impl()), &built)
    })
}

fn tls_connector(
    settings: &HttpConnectorSettings,
    sleep: Option<SharedAsyncSleep>,
    built: &AtomicUsize,
) -> Connector {
    built.fetch_add(1, Ordering::Relaxed);
    let mut builder = ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
    builder.set_connector_settings(Some(settings.clone()));
    builder.set_sleep_impl(sleep);
    builder.set_proxy_config(Some(ProxyConfig::from_env()));
    builder.build()
}

/// How long our connector waits for a connection: as long as the SDK's clients wait
/// (`Clients::from_env`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of an answer's body that is read. Each answer we read is a short JSON document or
/// an S3 error; anything longer is not one of them.
const MAX_BODY: usize = 1 << 20;

/// What one of our requests got back.
#[derive(Debug)]
pub struct Answer {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

/// Our connector: the SDK's kind (rustls on aws-lc, the proxy of `HTTPS_PROXY`/`NO_PROXY`),
/// built at its first use, since most invocations are heals and never need it. Its roots come
/// from the SDK's process-wide copy of the system's certificates (aws-smithy-http-client decodes
/// them once), so a second connector does not read the bundle again. It follows no redirect: a
/// redirect would carry a signed request or the Harness key elsewhere, and none of the endpoints
/// it calls redirects.
fn ours() -> &'static Connector {
    static OURS: OnceLock<Connector> = OnceLock::new();
    OURS.get_or_init(|| {
        let settings = HttpConnectorSettings::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build();
        let sleep = aws_smithy_async::rt::sleep::default_async_sleep();
        tls_connector(&settings, sleep, &AtomicUsize::new(0))
    })
}

/// Send `request` with `body` and read the answer, the whole exchange within `timeout`. `Err`
/// says why no answer came, for a person, without the URL's query (a response URL's signature).
pub async fn send(
    request: http::request::Builder,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Answer, String> {
    let request = request
        .body(SdkBody::from(body))
        .map_err(|e| format!("the request could not be made: {e}"))?;
    let query = request.uri().query().map(str::to_string);
    let request = HttpRequest::try_from(request)
        .map_err(|e| format!("the request could not be made: {e}"))?;
    let exchange = async {
        let response = ours().call(request).await.map_err(|e| chain(&e))?;
        let response = response
            .try_into_http1x()
            .map_err(|e| format!("the answer could not be read: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("the answer could not be read: {e}"))?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    let answered = match tokio::time::timeout(timeout, exchange).await {
        Ok(answered) => answered,
        Err(_) => Err(format!("timed out after {} s", timeout.as_secs_f32())),
    };
    answered.map_err(|why| withhold(why, query.as_deref()))
}

/// An error of the connector's with every cause, in words, since the client's own Display is
/// terse. The SDK's dispatch and timeout errors are told the same way (aws_error).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// `why` without `query`: no error of the connector's is known to print the URL, but a response
/// URL's query is its signature, so a future one that does must not print it.
fn withhold(why: String, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => why.replace(q, "(query withheld)"),
        _ => why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers every request on a loopback port with an empty JSON object, which every AWS JSON
    /// protocol's list operation reads as an empty list.
    async fn empty_json_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {
                        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: 2\r\n\r\n{}";
                        if conn.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    /// The roots are parsed once per process, during init: the clients' early calls build one
    /// TLS connector between them, and the first requests of two clients take that one.
    #[tokio::test]
    async fn one_tls_connector_for_every_client_built_during_init() {
        let connect = Duration::from_secs(5);
        let built = Arc::new(AtomicUsize::new(0));
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(empty_json_server().await)
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new("AKID", "secret", None, None, "test"),
                ),
            )
            .http_client(counted_sdk_client(connect, built.clone()))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(connect)
                    .build(),
            )
            .sleep_impl(aws_smithy_async::rt::sleep::default_async_sleep().unwrap())
            .build();
        let clients = crate::Clients::new(&config);
        assert_eq!(
            built.load(Ordering::Relaxed),
            1,
            "after building the clients"
        );
        clients.ecs.list_clusters().send().await.unwrap();
        clients.store.client.list_tables().send().await.unwrap();
        assert_eq!(
            built.load(Ordering::Relaxed),
            1,
            "after two clients' first requests"
        );
    }

    /// A loopback server that gives every connection `answer` (after `delay`), and counts the
    /// requests it got.
    async fn answering(answer: &'static [u8], delay: Duration) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(AtomicUsize::new(0));
        let counted = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    if matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {
                        counted.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                        let _ = conn.write_all(answer).await;
                    }
                });
            }
        });
        (format!("http://{addr}"), asked)
    }

    #[tokio::test]
    async fn an_answer_is_read_whole_with_its_status_and_headers() {
        let (url, _) = answering(
            b"HTTP/1.1 404 Not Found\r\nx-amzn-errortype: X:y\r\ncontent-length: 5\r\n\r\nnope!",
            Duration::ZERO,
        )
        .await;
        let a = send(http::Request::get(url), Vec::new(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(a.status, 404);
        assert_eq!(a.headers["x-amzn-errortype"], "X:y");
        assert_eq!(&a.body[..], b"nope!");
    }

    #[tokio::test]
    async fn a_redirect_is_answered_not_followed() {
        let (target, followed) = answering(
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            Duration::ZERO,
        )
        .await;
        let answer: &'static [u8] =
            format!("HTTP/1.1 302 Found\r\nlocation: {target}/stolen\r\ncontent-length: 0\r\n\r\n")
                .into_bytes()
                .leak();
        let (url, _) = answering(answer, Duration::ZERO).await;
        let get = http::Request::get(url).header("x-api-key", "k");
        let a = send(get, Vec::new(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(a.status, 302);
        assert_eq!(
            followed.load(Ordering::Relaxed),
            0,
            "the redirect was followed"
        );
    }

    #[tokio::test]
    async fn a_slow_answer_times_out_and_says_so() {
        let (url, asked) = answering(
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            Duration::from_secs(30),
        )
        .await;
        let e = send(
            http::Request::get(url),
            Vec::new(),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert_eq!(asked.load(Ordering::Relaxed), 1);
        assert_eq!(e, "timed out after 0.3 s");
    }

    #[tokio::test]
    async fn an_answer_longer_than_any_we_read_is_refused() {
        let huge: &'static [u8] = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{}",
            MAX_BODY + 1,
            "x".repeat(MAX_BODY + 1)
        )
        .into_bytes()
        .leak();
        let (url, _) = answering(huge, Duration::ZERO).await;
        let e = send(http::Request::get(url), Vec::new(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.starts_with("the answer could not be read"), "{e}");
    }

    /// A failure says what failed, cause by cause, in words (not the error's debug form).
    #[tokio::test]
    async fn a_failure_to_connect_says_why() {
        // A port nothing listens on: bound, then dropped.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/cfn?X-Amz-Signature=d3adb33f");
        let e = send(
            http::Request::put(url),
            b"{}".to_vec(),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(e.ends_with("Connection refused (os error 111)"), "{e}");
        assert!(!e.contains("d3adb33f"), "{e}");
    }

    /// A response URL's query is its signature: a failure that names the URL must not print it.
    #[test]
    fn the_query_is_withheld_from_what_a_failure_says() {
        let q = "X-Amz-Signature=d3adb33f";
        let why = format!("error sending request for url (https://b.s3.amazonaws.com/k?{q})");
        let told = withhold(why, Some(q));
        assert_eq!(
            told,
            "error sending request for url (https://b.s3.amazonaws.com/k?(query withheld))"
        );
        assert_eq!(withhold("refused".into(), Some("")), "refused");
    }
}
