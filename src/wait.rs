//! The wait for ready: after a converge applied its plan, read the rollout ([`observe::rollout`])
//! and judge it ([`ready::judge`]) every poll until the delegate is ready, fails, the ready
//! timeout passes, or this invocation's time runs low, when the wait is handed on.
//!
//! [`observe::rollout`]: crate::observe::rollout

use std::time::Duration;

use tokio::time::Instant;

use crate::model::Target;
use crate::observed::ObservedRollout;
use crate::ready::{self, Expect, Failure, FailureKind, Progress, Verdict};
use crate::record::now_millis;
use crate::{observe, Clients};

/// The environment variable that sets the poll interval, in seconds (fractions allowed: tests
/// poll every few hundred milliseconds).
pub const POLL_ENV: &str = "READY_POLL_SECONDS";

/// ECS updates a service's state every few seconds; a delegate takes minutes to start.
const DEFAULT_POLL: Duration = Duration::from_secs(15);

/// Reads in a row that may fail (after the SDK's own retries) before the wait gives up.
const READ_FAILURES: u32 = 3;

/// The poll interval from the environment, or the default.
pub fn poll_from_env() -> Duration {
    std::env::var(POLL_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 300.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_POLL)
}

/// One wait: what is waited for, on which service, until when.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Wait {
    pub target: Target,
    pub expect: Expect,
    /// Epoch milliseconds when the wait gives up (`ReadyTimeoutSeconds` after it began).
    pub ready_by_ms: u64,
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    Ready(Progress),
    Failed(Failure),
    /// This invocation's time ran out first; the wait may go on in another.
    OutOfTime(Progress),
}

/// Wait for `w`, polling every `poll`, until `deadline` (this invocation's) at the latest.
pub async fn wait(c: &Clients, w: &Wait, poll: Duration, deadline: Instant) -> Waited {
    let key = w.target.key().to_string();
    let mut shown = None;
    let mut last = ObservedRollout::default();
    let mut failures = 0;
    let mut read_error = None;
    loop {
        match observe::rollout(c, &w.target, &w.expect.revision).await {
            Ok(seen) => {
                failures = 0;
                match ready::judge(&w.expect, &seen) {
                    Verdict::Ready(p) => {
                        tracing::info!(delegate = %key, progress = %p, "the delegate is ready");
                        return Waited::Ready(p);
                    }
                    Verdict::Failed(f) => return Waited::Failed(f),
                    Verdict::Waiting(p) if shown != Some(p) => {
                        tracing::info!(delegate = %key, progress = %p, "waiting for the delegate: {p}");
                        shown = Some(p);
                    }
                    Verdict::Waiting(_) => {}
                }
                last = seen;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(delegate = %key, error = %e, "the delegate's rollout could not be read");
                read_error = Some(e.to_string());
                if failures >= READ_FAILURES {
                    return Waited::Failed(unreadable(failures, read_error));
                }
            }
        }
        if now_millis() >= w.ready_by_ms {
            let timeout_s = w.ready_by_ms.saturating_sub(w.expect.since_ms) / 1000;
            return Waited::Failed(ready::timed_out(&w.expect, &last, timeout_s));
        }
        if Instant::now() + poll >= deadline {
            // Time ran out while reads failed: that is the news, not the wait.
            if failures > 0 {
                return Waited::Failed(unreadable(failures, read_error));
            }
            return Waited::OutOfTime(shown.unwrap_or_default());
        }
        tokio::time::sleep(poll).await;
    }
}

fn unreadable(failures: u32, error: Option<String>) -> Failure {
    Failure {
        what: format!(
            "the delegate's rollout could not be read ({failures} times in a row): {}",
            error.unwrap_or_default()
        ),
        check: "the function's permissions (ecs:DescribeServices, ecs:ListTasks, ecs:DescribeTasks) and ECS's health in the region; the delegate itself may be fine".into(),
        kind: FailureKind::Unreadable,
    }
}
