//! The process's two HTTP stacks, each built once: the SDK's, shared by every AWS client, and
//! ours (reqwest), shared by the calls the SDK does not make (CloudFormation's response URL,
//! the Lambda Invoke, Secrets Manager, Harness). Each parses the system's root certificates when
//! its first TLS connection needs them, once per process instead of once per client.

use std::sync::OnceLock;

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// The SDK's HTTPS client, as the SDK's default builds it (rustls on aws-lc, the proxy of
/// `HTTPS_PROXY`/`NO_PROXY`), but one for all the clients of an `SdkConfig`: left to itself, each
/// service client builds its own, and each parses the root certificates again.
pub fn sdk_client() -> SharedHttpClient {
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut builder =
            ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
        builder.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            builder.set_sleep_impl(components.sleep_impl());
        }
        builder.set_proxy_config(Some(ProxyConfig::from_env()));
        builder.build()
    })
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
