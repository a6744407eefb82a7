//! The question the function asks Harness (src/harness.rs), against a fake Harness API on
//! loopback (tests/support/harness_api.rs): the answer read, each failure told apart, the key
//! sent only as Harness expects it and never shown.

mod support;

use std::time::Duration;

use harness_ecs_delegate_bootstrap::harness::{self, ApiKey, HarnessError};
use support::harness_api::{Answer, HarnessApi};

async fn ask(h: &HarnessApi, key: &str) -> Result<harness::LatestSupported, HarnessError> {
    harness::latest_supported(&h.manager, &h.account, &ApiKey::new(key), true).await
}

#[tokio::test]
async fn the_latest_supported_version_is_read_under_the_managers_path() {
    let h = HarnessApi::start(
        "/gratis",
        "acct-123",
        "pat.acct-123.key.secret",
        "25.10.87100",
    )
    .await;
    let l = ask(&h, "pat.acct-123.key.secret").await.unwrap();
    assert_eq!(l.version.to_string(), "25.10.87100");
    assert_eq!(l.minimal.to_string(), "25.10.87100.minimal");
    let asked = h.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec![(
            "/gratis/ng/api/delegate-setup/latest-supported-version?accountIdentifier=acct-123"
                .to_string(),
            Some("pat.acct-123.key.secret".to_string())
        )]
    );
}

#[tokio::test]
async fn each_failure_of_harness_says_what_it_is_and_never_shows_the_key() {
    let key = "pat.acct-123.key.secret";
    let h = HarnessApi::start("", "acct-123", key, "25.10.87100").await;

    let refused = ask(&h, "pat.acct-123.key.revoked").await.unwrap_err();
    assert!(
        matches!(refused, HarnessError::Unauthorized { status: 401, .. }),
        "{refused:?}"
    );
    let why = refused.to_string();
    assert!(
        why.contains("core_delegate_edit") && why.contains("acct-123"),
        "{why}"
    );

    h.answer(Answer::Status(503));
    let down = ask(&h, key).await.unwrap_err();
    assert!(matches!(down, HarnessError::Unavailable(_)), "{down:?}");
    assert_eq!(down.to_string(), "Harness did not answer (HTTP 503)");

    h.answer(Answer::Slow(harness::TIMEOUT + Duration::from_secs(1)));
    let started = std::time::Instant::now();
    let slow = ask(&h, key).await.unwrap_err();
    assert!(matches!(slow, HarnessError::Unavailable(_)), "{slow:?}");
    assert!(
        started.elapsed() < harness::TIMEOUT + Duration::from_secs(1),
        "bounded"
    );

    h.answer(Answer::Body(
        "{\"resource\":{\"latestSupportedVersion\":\"latest\"}}",
    ));
    let odd = ask(&h, key).await.unwrap_err();
    assert!(matches!(odd, HarnessError::Malformed(_)), "{odd:?}");

    for e in [refused, down, slow, odd] {
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains(key) && !shown.contains("key.revoked"),
            "the key shown: {shown}"
        );
    }
}
