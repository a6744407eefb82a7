//! The process's two HTTP stacks, each built once: the SDK's, shared by every AWS client, and
//! ours (reqwest), shared by the calls the SDK does not make (CloudFormation's response URL,
//! the Lambda Invoke, Secrets Manager, Harness). Each parses the system's root certificates
//! once per process instead of once per client.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_smithy_async::rt::sleep::SharedAsyncSleep;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::{Builder, Connector, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::{HttpConnectorSettings, SharedHttpClient};

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

/// Our client, built at its first use (most invocations are heals, which never need it). It
/// follows no redirect: a redirect would carry a signed request or the Harness key elsewhere,
/// and none of the endpoints it calls redirects. Each request sets its own timeout.
pub fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let built = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("the HTTP client could not be built: {e}"))?;
    Ok(CLIENT.get_or_init(|| built))
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
}
