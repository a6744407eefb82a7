//! Respond: the one answer CloudFormation gets for each request, PUT to the request's ResponseURL.
//!
//! The body stays within CloudFormation's 4096-byte limit (the `Reason` is cut to fit), is sent
//! with an empty Content-Type as a presigned S3 PUT requires, and the PUT is retried on transient
//! failures. The ResponseURL is a credential (anyone holding it can decide the stack's fate), so
//! it is checked before use and never logged: errors from the HTTP client are stripped of it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

/// CloudFormation rejects response bodies above this size.
pub const MAX_BODY: usize = 4096;

crate::model::string_enum! {
    /// What CloudFormation is told.
    pub enum Status { Success = "SUCCESS", Failed = "FAILED" }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CfnResponse {
    #[serde(rename = "Status")]
    pub status: Status,
    #[serde(rename = "Reason", skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(rename = "PhysicalResourceId")]
    pub physical_resource_id: String,
    #[serde(rename = "StackId")]
    pub stack_id: String,
    #[serde(rename = "RequestId")]
    pub request_id: String,
    #[serde(rename = "LogicalResourceId")]
    pub logical_resource_id: String,
    #[serde(rename = "Data", skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    #[error("the ResponseURL is not usable ({0}); CloudFormation cannot be answered")]
    BadResponseUrl(String),
    #[error("the response body cannot be made to fit in {MAX_BODY} bytes even without Data")]
    TooLarge,
    #[error("CloudFormation's ResponseURL answered HTTP {0} (not retried): {1}")]
    Rejected(u16, String),
    #[error("sending the response failed after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
}

/// Marks a `Reason` that was cut to fit.
const TRUNCATED: &str = " … (truncated)";

/// The `Reason` of a SUCCESS that became FAILED because its Data did not fit.
const DATA_DROPPED: &str = "the response Data did not fit in CloudFormation's 4096-byte limit and \
     was dropped, so this is reported FAILED although the work succeeded; shorten the long names \
     in the resource's properties (Data echoes them) and retry";

/// The `Reason` of a FAILED response that came without one: CloudFormation is never left guessing.
const NO_REASON: &str =
    "failed without giving a reason (a bug in this function); see its CloudWatch logs";

/// The longest PhysicalResourceId an answer carries whole; ours are service ARNs, far shorter.
const MAX_PHYSICAL_ID: usize = 1024;

/// Serialize a response within [`MAX_BODY`] bytes (see [`fit`]).
pub fn body(resp: &CfnResponse) -> Result<Vec<u8>, RespondError> {
    fit(resp).map(|(_, body)| body)
}

/// The response as it will be sent, and its body, within [`MAX_BODY`] bytes. The whole `Reason`
/// is kept if it fits; if not, it is cut (on a character boundary, marked "(truncated)") to the
/// longest prefix that fits. A FAILED response carries no Data (CloudFormation ignores it) and
/// never goes without a `Reason`. A SUCCESS whose Data cannot fit becomes FAILED, saying so.
pub fn fit(resp: &CfnResponse) -> Result<(CfnResponse, Vec<u8>), RespondError> {
    let mut r = resp.clone();
    if r.status == Status::Failed {
        r.data.clear();
        if r.reason.is_empty() {
            r.reason = NO_REASON.into();
        }
    }
    // A PhysicalResourceId no answer can hold (one CloudFormation sent, never ours) is cut to a
    // stable short form: the request still gets its one answer.
    r.physical_resource_id = crate::model::within(&r.physical_resource_id, MAX_PHYSICAL_ID, '#');
    if let Some(fitted) = fit_reason(&r) {
        return Ok(fitted);
    }
    if r.data.is_empty() {
        return Err(RespondError::TooLarge);
    }
    r.data.clear();
    r.status = Status::Failed;
    r.reason = match resp.reason.as_str() {
        "" => DATA_DROPPED.into(),
        given => format!("{DATA_DROPPED}. Reason given: {given}"),
    };
    fit_reason(&r).ok_or(RespondError::TooLarge)
}

/// `r` and its body with its whole `Reason` if that fits, else with the longest cut one that
/// fits.
fn fit_reason(r: &CfnResponse) -> Option<(CfnResponse, Vec<u8>)> {
    let to_vec = |r: &CfnResponse| serde_json::to_vec(r).expect("a response always serializes");
    let whole = to_vec(r);
    if whole.len() <= MAX_BODY {
        return Some((r.clone(), whole));
    }
    // JSON escaping makes wire length differ from the reason's length: binary-search the longest
    // prefix (over character boundaries) that fits.
    let cuts: Vec<usize> = r.reason.char_indices().map(|(i, _)| i).collect();
    let mut cut = r.clone();
    let (mut lo, mut hi, mut best) = (0, cuts.len(), None);
    while lo < hi {
        let mid = (lo + hi) / 2;
        cut.reason = format!("{}{TRUNCATED}", &r.reason[..cuts[mid]]);
        let b = to_vec(&cut);
        if b.len() <= MAX_BODY {
            best = Some((cut.clone(), b));
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    best
}

/// Check that a ResponseURL is one CloudFormation would give: https to an S3 host. Plain http is
/// accepted only to a loopback address, and only when `allow_loopback` (local runs and tests).
pub fn check_response_url(raw: &str, allow_loopback: bool) -> Result<url::Url, RespondError> {
    let url = url::Url::parse(raw)
        .map_err(|e| RespondError::BadResponseUrl(format!("not a URL: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| RespondError::BadResponseUrl("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let loopback = host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    if loopback {
        if allow_loopback && (url.scheme() == "http" || url.scheme() == "https") {
            return Ok(url);
        }
        return Err(RespondError::BadResponseUrl(
            "a loopback address is only accepted when RESPONSE_URL_ALLOW_LOOPBACK=true".into(),
        ));
    }
    if url.scheme() != "https" {
        return Err(RespondError::BadResponseUrl(format!(
            "scheme {} is not https",
            url.scheme()
        )));
    }
    let aws = host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn");
    let s3 = host
        .split('.')
        .any(|label| label == "s3" || label.starts_with("s3-"));
    if !(aws && s3) {
        return Err(RespondError::BadResponseUrl(format!(
            "host {host} is not an Amazon S3 host"
        )));
    }
    Ok(url)
}

/// How the PUT is retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(500),
        }
    }
}

/// PUT the response. Retries connection failures, timeouts, 5xx and 429; a 4xx is final (an
/// expired or forged URL does not get better). No attempt runs past `deadline` (the Lambda
/// invocation's end).
pub async fn send(
    url: &url::Url,
    resp: &CfnResponse,
    retry: RetryPolicy,
    deadline: tokio::time::Instant,
) -> Result<(), RespondError> {
    let body = body(resp)?;
    let mut backoff = retry.first_backoff;
    let mut last = String::new();
    for attempt in 1..=retry.attempts {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left < Duration::from_millis(200) {
            last = format!("{last} (no time left before the Lambda deadline)");
            break;
        }
        // CloudFormation's presigned URL is signed with no content type.
        let put = http::Request::put(url.as_str()).header(http::header::CONTENT_TYPE, "");
        let r = crate::http::send(put, body.clone(), left.min(Duration::from_secs(10))).await;
        match r {
            Ok(ok) if ok.status.is_success() => {
                tracing::info!(
                    status = ?resp.status,
                    physical_resource_id = %resp.physical_resource_id,
                    attempt,
                    "CloudFormation response sent"
                );
                return Ok(());
            }
            Ok(bad) => {
                let code = bad.status.as_u16();
                let text: String = String::from_utf8_lossy(&bad.body)
                    .chars()
                    .take(300)
                    .collect();
                if code != 429 && (400..500).contains(&code) {
                    return Err(RespondError::Rejected(code, text));
                }
                last = format!("HTTP {code}");
            }
            Err(why) => last = why,
        }
        tracing::warn!(attempt, error = %last, "CloudFormation response PUT failed, retrying");
        if attempt < retry.attempts {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(backoff.min(left)).await;
            backoff *= 2;
        }
    }
    Err(RespondError::Exhausted {
        attempts: retry.attempts,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(reason: &str) -> CfnResponse {
        CfnResponse {
            status: Status::Success,
            reason: reason.into(),
            physical_resource_id: "arn:aws:ecs:us-east-1:1:service/prod/harness-delegate".into(),
            stack_id: "arn:aws:cloudformation:us-east-1:1:stack/s/guid".into(),
            request_id: "r".into(),
            logical_resource_id: "Delegate".into(),
            data: BTreeMap::from([("ServiceName".into(), "harness-delegate".into())]),
        }
    }

    #[test]
    fn small_bodies_are_untouched() {
        let b = body(&resp("bad subnet")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["Reason"], "bad subnet");
        assert_eq!(v["Data"]["ServiceName"], "harness-delegate");
    }

    #[test]
    fn long_reasons_are_cut_to_fit() {
        for reason in [
            "x".repeat(10_000),
            "é\"\n".repeat(3_000),
            "ünïcødé ".repeat(2000),
        ] {
            let b = body(&resp(&reason)).unwrap();
            assert!(b.len() <= MAX_BODY, "{} bytes", b.len());
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert!(v["Reason"].as_str().unwrap().ends_with("(truncated)"));
            assert!(
                v["Reason"].as_str().unwrap().len() > 1000,
                "cut far more than needed"
            );
        }
    }

    #[test]
    fn success_has_no_reason_key() {
        let mut r = resp("");
        r.status = Status::Success;
        let v: serde_json::Value = serde_json::from_slice(&body(&r).unwrap()).unwrap();
        assert!(v.get("Reason").is_none());
        assert_eq!(v["Status"], "SUCCESS");
    }

    /// Data too large for any body: one value of 5000 bytes.
    fn oversized_data(r: &mut CfnResponse) {
        r.data.insert("Big".into(), "d".repeat(5000));
    }

    fn parse(b: &[u8]) -> serde_json::Value {
        assert!(b.len() <= MAX_BODY, "{} bytes", b.len());
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn empty_reason_and_oversized_data_drops_data_and_says_why() {
        let mut r = resp("");
        r.status = Status::Success;
        oversized_data(&mut r);
        let v = parse(&body(&r).unwrap());
        assert!(v.get("Data").is_none());
        assert_eq!(v["Status"], "FAILED");
        let reason = v["Reason"].as_str().unwrap();
        assert!(
            reason.contains("Data") && reason.contains(&MAX_BODY.to_string()),
            "{reason}"
        );
    }

    #[test]
    fn failed_is_never_sent_without_a_reason() {
        for (status, big) in [
            (Status::Failed, false),
            (Status::Failed, true),
            (Status::Success, true),
        ] {
            let mut r = resp("");
            r.status = status;
            if big {
                oversized_data(&mut r);
            }
            let v = parse(&body(&r).unwrap());
            assert_eq!(v["Status"], "FAILED");
            assert!(!v["Reason"].as_str().unwrap_or_default().is_empty(), "{v}");
        }
    }

    #[test]
    fn a_failed_reason_is_kept_when_data_is_dropped() {
        let mut r = resp("subnet-1 is not in the cluster's VPC");
        r.status = Status::Failed;
        oversized_data(&mut r);
        let v = parse(&body(&r).unwrap());
        assert!(v.get("Data").is_none());
        assert_eq!(v["Status"], "FAILED");
        assert_eq!(v["Reason"], "subnet-1 is not in the cluster's VPC");
    }

    #[test]
    fn a_physical_id_no_answer_can_hold_is_shortened_stably() {
        let mut r = resp("");
        r.physical_resource_id = "p".repeat(5000);
        let (sent, b) = fit(&r).unwrap();
        assert!(b.len() <= MAX_BODY && sent.physical_resource_id.len() <= MAX_PHYSICAL_ID);
        assert_eq!(sent.status, Status::Success);
        assert_eq!(
            fit(&r).unwrap().0.physical_resource_id,
            sent.physical_resource_id
        );
        r.physical_resource_id.push('q');
        assert_ne!(
            fit(&r).unwrap().0.physical_resource_id,
            sent.physical_resource_id
        );
    }

    #[test]
    fn failed_carries_no_data() {
        let mut r = resp("bad subnet");
        r.status = Status::Failed;
        let (sent, b) = fit(&r).unwrap();
        assert!(sent.data.is_empty() && parse(&b).get("Data").is_none());
        assert_eq!(sent.reason, "bad subnet");
    }

    #[test]
    fn a_reason_that_fits_once_data_is_dropped_is_not_cut() {
        let reason = "y".repeat(2000);
        let mut r = resp(&reason);
        r.status = Status::Failed;
        oversized_data(&mut r);
        let v = parse(&body(&r).unwrap());
        assert!(v.get("Data").is_none());
        assert_eq!(v["Reason"], reason.as_str(), "cut though it fits");
    }

    #[test]
    fn an_oversized_reason_alone_is_cut_no_more_than_needed() {
        let mut r = resp(&"x".repeat(10_000));
        r.data.clear();
        let b = body(&r).unwrap();
        // One byte per character: the longest prefix fills the body exactly.
        assert_eq!(b.len(), MAX_BODY);
        let v = parse(&b);
        assert!(v["Reason"].as_str().unwrap().ends_with("(truncated)"));
    }

    #[test]
    fn multibyte_reasons_are_cut_on_character_boundaries() {
        for unit in ["é", "🦀", "aé🦀\"\\\n"] {
            let reason = unit.repeat(3000);
            let b = body(&resp(&reason)).unwrap();
            assert!(std::str::from_utf8(&b).is_ok());
            let v = parse(&b);
            assert_eq!(v["Data"]["ServiceName"], "harness-delegate");
            let cut = v["Reason"].as_str().unwrap();
            let kept = cut.strip_suffix(TRUNCATED).expect("marked as truncated");
            assert!(
                reason.starts_with(kept) && kept.len() > 1000,
                "{unit}: {kept}"
            );
        }
    }

    #[test]
    fn response_urls() {
        let ok = [
            "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/a?X-Amz-Signature=1",
            "https://cloudformation-custom-resource-response-euwest1.s3-eu-west-1.amazonaws.com/a",
            "https://bucket.s3.us-west-2.amazonaws.com/a",
            "https://s3.cn-north-1.amazonaws.com.cn/b/a",
        ];
        for u in ok {
            assert!(check_response_url(u, false).is_ok(), "{u}");
        }
        let bad = [
            "http://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/a",
            "https://evil.example.com/a",
            "https://s3.amazonaws.com.evil.com/a",
            "https://sqs.us-east-1.amazonaws.com/a",
            "http://127.0.0.1:9/a",
            "not a url",
        ];
        for u in bad {
            assert!(check_response_url(u, false).is_err(), "{u}");
        }
        assert!(check_response_url("http://127.0.0.1:9/a", true).is_ok());
        assert!(check_response_url("http://localhost:9/a", true).is_ok());
        assert!(check_response_url("http://[::1]:9/a", true).is_ok());
        assert!(check_response_url("http://10.0.0.1/a", true).is_err());
        // The URL itself never appears in the error.
        let e = check_response_url("http://10.0.0.1/secret-signature", true).unwrap_err();
        assert!(!e.to_string().contains("secret-signature"));
    }
}
