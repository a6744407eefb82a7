//! Harness's API, for the one question the function asks it: the latest delegate version Harness
//! supports for an account (`GET {manager}/ng/api/delegate-setup/latest-supported-version`), and
//! the delegate versions that answer is compared with.
//!
//! The API key is a secret with the delegate token's treatment: [`ApiKey`] prints as
//! `<redacted>`, and no error carries it or the request's headers. Only https reaches Harness;
//! plain http only to a loopback address, and only when the caller allows it (tests, local runs).

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

/// How long one question to Harness may take: the answer is small, and a slow Harness must not
/// eat a heal's time (the next schedule asks again).
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub use crate::secrets::ApiKey;

/// A delegate image version, `yy.mm.build`, with `.minimal` for the minimal image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegateVersion {
    pub year: u32,
    pub month: u32,
    pub build: u64,
    pub minimal: bool,
}

impl DelegateVersion {
    /// A version as Harness spells it (`24.04.82804`, `24.04.82804.minimal`); `None` otherwise.
    pub fn parse(text: &str) -> Option<DelegateVersion> {
        let (core, minimal) = match text.strip_suffix(".minimal") {
            Some(core) => (core, true),
            None => (text, false),
        };
        let mut parts = core.split('.');
        let (year, month, build) = (parts.next()?, parts.next()?, parts.next()?);
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if parts.next().is_some() || ![year, month, build].iter().all(|s| digits(s)) {
            return None;
        }
        let month_n: u32 = month.parse().ok()?;
        (1..=12).contains(&month_n).then_some(())?;
        Some(DelegateVersion {
            year: year.parse().ok()?,
            month: month_n,
            build: build.parse().ok()?,
            minimal,
        })
    }

    /// The version an image runs, from its tag (`harness/delegate:24.04.82804`, a mirror's
    /// `registry:5000/harness/delegate:24.04.82804.minimal`); `None` for `latest`, a digest or
    /// no tag.
    pub fn of_image(image: &str) -> Option<DelegateVersion> {
        let name = image.split('@').next()?;
        let last = name.rsplit('/').next()?;
        let (_, tag) = last.split_once(':')?;
        DelegateVersion::parse(tag)
    }

    /// Newer, older or the same build, whatever the variant: Harness numbers builds in order,
    /// and `yy.mm` only leads them.
    pub fn cmp_build(&self, other: &DelegateVersion) -> Ordering {
        (self.year, self.month, self.build).cmp(&(other.year, other.month, other.build))
    }
}

impl fmt::Display for DelegateVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}.{:02}.{}", self.year, self.month, self.build)?;
        if self.minimal {
            f.write_str(".minimal")?;
        }
        Ok(())
    }
}

/// What Harness supports now for an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestSupported {
    pub version: DelegateVersion,
    pub minimal: DelegateVersion,
}

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("ManagerHostAndPort {0}: Harness is asked over https only (plain http only to a loopback address in a local run)")]
    NotHttps(String),
    /// 401 or 403: the key is wrong, expired, or lacks the permission.
    #[error("Harness refused the API key (HTTP {status}): check that the key in the secret is current, and that it belongs to account {account} with a role that may edit delegates at the account scope (core_delegate_edit: Harness asks that permission for the latest supported version)")]
    Unauthorized { status: u16, account: String },
    /// 5xx, a timeout or no connection. What follows depends on who asked: the upgrade run
    /// asks again at its next schedule, a request fails or keeps its committed image.
    #[error("Harness did not answer ({0})")]
    Unavailable(String),
    /// Any other refusal.
    #[error("Harness answered HTTP {status} ({message})")]
    Refused { status: u16, message: String },
    #[error("Harness's answer is not the latest supported version ({0})")]
    Malformed(String),
    /// The API key could not be read from its secret.
    #[error("{0}")]
    Key(#[source] crate::secrets::SecretError),
    /// The key asked for is not one this function may send there (its stack pins the key and
    /// the Manager it goes to).
    #[error("{0}")]
    KeyNotAllowed(String),
}

impl HarnessError {
    /// Harness, or Secrets Manager for its key, did not answer, or not with a version: a later
    /// question may get one, whatever the properties.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            HarnessError::Unavailable(_)
                | HarnessError::Malformed(_)
                | HarnessError::Key(crate::secrets::SecretError::Unavailable { .. })
        )
    }
}

/// Harness as the function reaches it: the key's secret read when needed, then the question.
#[derive(Clone, Debug)]
pub struct Harness {
    secrets: crate::secrets::SecretReader,
    /// Plain http to a loopback Harness (`RESPONSE_URL_ALLOW_LOOPBACK=true`: tests, local runs).
    allow_loopback: bool,
    /// The only key and Manager the function may use, as its stack set them
    /// (`HARNESS_API_KEY_SECRET_ARN`, `HARNESS_MANAGER`; template.yaml sets both, empty when
    /// the stack has no key). Unset (a local run): whatever a request names.
    pinned: Option<(String, String)>,
}

/// A Manager URL as compared: without the trailing slash.
fn manager_of(url: &str) -> &str {
    url.trim().trim_end_matches('/')
}

impl Harness {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        let pinned = match (
            std::env::var("HARNESS_API_KEY_SECRET_ARN"),
            std::env::var("HARNESS_MANAGER"),
        ) {
            (Ok(secret), Ok(manager)) => Some((secret.trim().to_string(), manager)),
            _ => None,
        };
        Harness {
            secrets: crate::secrets::SecretReader::new(config),
            allow_loopback: std::env::var("RESPONSE_URL_ALLOW_LOOPBACK").is_ok_and(|v| v == "true"),
            pinned,
        }
    }

    /// Whether the key in `key_secret` may be sent to `manager`: an invoker of the function
    /// must not be able to send the stack's key to a host of their choosing.
    fn check_pinned(&self, key_secret: &str, manager: &str) -> Result<(), HarnessError> {
        let Some((secret, ours)) = &self.pinned else {
            return Ok(());
        };
        if secret.is_empty() {
            return Err(HarnessError::KeyNotAllowed("HarnessApiKeySecretArn: this function's stack gives no Harness API key (its HarnessApiKeySecretArn parameter is empty): set it on the function's stack, or pin Image".into()));
        }
        if key_secret != secret || manager_of(manager) != manager_of(ours) {
            return Err(HarnessError::KeyNotAllowed(format!("HarnessApiKeySecretArn: this function sends its stack's API key ({secret}) only to its stack's ManagerHostAndPort ({}): use those two, or pin Image", manager_of(ours))));
        }
        Ok(())
    }

    /// The latest supported versions for `account`, asked with the key in `key_secret`.
    pub async fn latest(
        &self,
        key_secret: &str,
        manager: &str,
        account: &str,
    ) -> Result<LatestSupported, HarnessError> {
        // A bad URL, or a key or Manager this function may not use, is known before the secret
        // is read.
        latest_supported_url(manager, account, self.allow_loopback)?;
        self.check_pinned(key_secret, manager)?;
        let key = self
            .secrets
            .api_key(key_secret)
            .await
            .map_err(HarnessError::Key)?;
        latest_supported(manager, account, &key, self.allow_loopback).await
    }
}

/// The URL of the question, for `manager` (which may carry a path, e.g. `/gratis`).
pub fn latest_supported_url(
    manager: &str,
    account: &str,
    allow_loopback: bool,
) -> Result<url::Url, HarnessError> {
    let not_https = || HarnessError::NotHttps(manager.to_string());
    let base = url::Url::parse(manager.trim_end_matches('/')).map_err(|_| not_https())?;
    let host = base.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let allowed =
        base.scheme() == "https" || (allow_loopback && loopback && base.scheme() == "http");
    if !allowed {
        return Err(not_https());
    }
    let mut url = url::Url::parse(&format!(
        "{}/ng/api/delegate-setup/latest-supported-version",
        base.as_str().trim_end_matches('/')
    ))
    .map_err(|_| not_https())?;
    url.query_pairs_mut()
        .append_pair("accountIdentifier", account);
    Ok(url)
}

/// Ask Harness for the latest supported delegate version of `account`.
pub async fn latest_supported(
    manager: &str,
    account: &str,
    key: &ApiKey,
    allow_loopback: bool,
) -> Result<LatestSupported, HarnessError> {
    let url = latest_supported_url(manager, account, allow_loopback)?;
    // Our connector follows no redirect: one would carry the key wherever it points.
    let get = http::Request::get(url.as_str()).header("x-api-key", key.expose());
    let resp = crate::http::send(get, Vec::new(), TIMEOUT)
        .await
        .map_err(HarnessError::Unavailable)?;
    let status = resp.status.as_u16();
    let body = resp.body;
    match status {
        200 => read_latest(&body),
        401 | 403 => Err(HarnessError::Unauthorized {
            status,
            account: account.to_string(),
        }),
        500..=599 | 429 => Err(HarnessError::Unavailable(format!("HTTP {status}"))),
        _ => Err(HarnessError::Refused {
            status,
            message: crate::model::within(&String::from_utf8_lossy(&body), 200, ' '),
        }),
    }
}

/// The two versions of an answer like
/// `{"resource":{"latestSupportedVersion":"24.04.82804","latestSupportedMinimalVersion":"24.04.82804.minimal"}}`.
fn read_latest(body: &[u8]) -> Result<LatestSupported, HarnessError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| HarnessError::Malformed(format!("not JSON: {e}")))?;
    let field = |name: &str| {
        let text = v["resource"][name]
            .as_str()
            .ok_or_else(|| HarnessError::Malformed(format!("no resource.{name}")))?;
        DelegateVersion::parse(text).ok_or_else(|| {
            let shown = crate::model::within(text, 40, ' ');
            HarnessError::Malformed(format!("resource.{name} \"{shown}\" is not yy.mm.build"))
        })
    };
    let (version, minimal) = (
        field("latestSupportedVersion")?,
        field("latestSupportedMinimalVersion")?,
    );
    if version.minimal || !minimal.minimal {
        return Err(HarnessError::Malformed(
            "the regular and minimal versions are swapped".into(),
        ));
    }
    Ok(LatestSupported { version, minimal })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which failures a later question may get past, whatever the request's properties.
    #[test]
    fn unavailable_is_harness_or_its_secret_not_answering() {
        use crate::secrets::SecretError;
        let arn = || "arn:aws:secretsmanager:us-east-1:1:secret:k".to_string();
        let unavailable = [
            HarnessError::Unavailable("HTTP 503".into()),
            HarnessError::Malformed("not JSON".into()),
            HarnessError::Key(SecretError::Unavailable {
                arn: arn(),
                why: "timed out".into(),
            }),
        ];
        for e in unavailable {
            assert!(e.is_unavailable(), "{e}");
        }
        let for_the_properties = [
            HarnessError::Unauthorized {
                status: 401,
                account: "a".into(),
            },
            HarnessError::Refused {
                status: 400,
                message: "no".into(),
            },
            HarnessError::Key(SecretError::NotFound { arn: arn() }),
            HarnessError::Key(SecretError::Denied {
                arn: arn(),
                kind: "AccessDenied".into(),
            }),
            HarnessError::KeyNotAllowed("not this key".into()),
        ];
        for e in for_the_properties {
            assert!(!e.is_unavailable(), "{e}");
        }
    }

    #[test]
    fn delegate_versions_as_harness_spells_them() {
        let v = DelegateVersion::parse("24.04.82804").unwrap();
        assert_eq!((v.year, v.month, v.build, v.minimal), (24, 4, 82804, false));
        assert_eq!(v.to_string(), "24.04.82804");
        let m = DelegateVersion::parse("24.04.82804.minimal").unwrap();
        assert!(m.minimal);
        assert_eq!(m.to_string(), "24.04.82804.minimal");
        assert_eq!(v.cmp_build(&m), Ordering::Equal, "the same build");
        for bad in [
            "latest",
            "24.04",
            "24.13.1",
            "24.04.x",
            "24.04.1.2",
            "",
            "24.04.1.slim",
        ] {
            assert_eq!(DelegateVersion::parse(bad), None, "{bad}");
        }
        let older = DelegateVersion::parse("25.09.86900").unwrap();
        let newer = DelegateVersion::parse("25.10.87100").unwrap();
        assert_eq!(older.cmp_build(&newer), Ordering::Less);
        assert_eq!(newer.cmp_build(&v), Ordering::Greater);
    }

    #[test]
    fn the_version_an_image_runs_comes_from_its_tag() {
        for (image, version) in [
            ("harness/delegate:24.04.82804", Some("24.04.82804")),
            (
                "harness/delegate:24.04.82804.minimal",
                Some("24.04.82804.minimal"),
            ),
            (
                "registry.example.com:5000/mirror/delegate:25.10.87100",
                Some("25.10.87100"),
            ),
            ("harness/delegate:latest", None),
            ("harness/delegate", None),
            ("registry.example.com:5000/delegate", None),
            ("harness/delegate@sha256:0123", None),
        ] {
            let got = DelegateVersion::of_image(image).map(|v| v.to_string());
            assert_eq!(got.as_deref(), version, "{image}");
        }
    }

    #[test]
    fn the_question_goes_to_the_manager_over_https_with_its_path() {
        let url = latest_supported_url("https://app.harness.io/gratis/", "acct 1", false).unwrap();
        assert_eq!(
            url.as_str(),
            "https://app.harness.io/gratis/ng/api/delegate-setup/latest-supported-version?accountIdentifier=acct+1"
        );
        assert!(latest_supported_url("http://app.harness.io", "a", true).is_err());
        assert!(latest_supported_url("http://127.0.0.1:9/", "a", false).is_err());
        assert!(latest_supported_url("http://127.0.0.1:9/", "a", true).is_ok());
        assert!(latest_supported_url("not a url", "a", true).is_err());
        assert_eq!(
            format!("{:?}", ApiKey::new("pat.secret")),
            "ApiKey(<redacted>)"
        );
    }

    #[test]
    fn an_answer_without_two_proper_versions_is_malformed() {
        let ok = br#"{"metaData":{},"resource":{"latestSupportedVersion":"24.04.82804","latestSupportedMinimalVersion":"24.04.82804.minimal"},"responseMessages":[]}"#;
        let l = read_latest(ok).unwrap();
        assert_eq!(
            (l.version.to_string(), l.minimal.to_string()),
            ("24.04.82804".into(), "24.04.82804.minimal".into())
        );
        for (body, says) in [
            (&b"<html>"[..], "not JSON"),
            (br#"{"resource":{}}"#, "no resource.latestSupportedVersion"),
            (br#"{"resource":{"latestSupportedVersion":"latest","latestSupportedMinimalVersion":"1.2.3.minimal"}}"#, "\"latest\" is not yy.mm.build"),
            (br#"{"resource":{"latestSupportedVersion":"24.04.1.minimal","latestSupportedMinimalVersion":"24.04.1"}}"#, "swapped"),
        ] {
            let e = read_latest(body).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }
}
