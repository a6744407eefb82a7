//! Readiness: whether the delegate a converge deployed is up, judged purely from what observe saw
//! of its service, its tasks and the service's events ([`judge`]); and when it is not and will
//! not be, the reason in ECS's own words with the one thing to check ([`Failure`]).
//!
//! Ready means the service's PRIMARY deployment runs the delegate's revision, has rolled out
//! (COMPLETED, or as many running as desired where ECS gives no rollout state), and as many of
//! that revision's tasks as desired are running, and healthy when the revision has a health
//! check (a NextGen delegate's passes only once it reached Harness).

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{self, HealthStatus, RolloutState, StopCode, TaskStatus};
use crate::observed::{ObservedRollout, ObservedTask, ServiceEvent};
use crate::spec::{DelegateSpec, DelegateToken};

/// How many of the revision's tasks must have stopped in a row, each for a reason that will not
/// fix itself, before the wait gives up: one may be bad luck (a pull that timed out), and ECS
/// replaces it; two with nothing healthy in between are a pattern.
pub const FAILED_IN_A_ROW: usize = 2;

/// What is waited for.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Expect {
    /// The revision deployed (ARN).
    pub revision: String,
    pub desired: i32,
    /// Whether the revision's delegate container has a health check.
    pub health_check: bool,
    /// Epoch milliseconds when the deployment began: older events and tasks are not its own.
    pub since_ms: u64,
    pub hints: Hints,
}

/// What the one thing to check names: the spec's settings a failure most often comes from.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Hints {
    pub image: String,
    pub execution_role: Option<String>,
    /// The token's Secrets Manager ARN (never a plain token).
    pub token_secret: Option<String>,
    pub log_group: Option<String>,
    pub manager: String,
    pub memory: u32,
}

impl Hints {
    pub fn of(spec: &DelegateSpec) -> Hints {
        Hints {
            image: spec.image.clone(),
            execution_role: spec.execution_role_arn.clone(),
            token_secret: match &spec.token {
                DelegateToken::SecretArn(arn) => Some(arn.clone()),
                DelegateToken::Plain(_) => None,
            },
            log_group: spec.log_group.clone(),
            manager: spec.manager_host_and_port.clone(),
            memory: spec.memory,
        }
    }

    /// The same, read from a revision's document (an upgrade has no spec) and the manager.
    pub fn of_document(doc: &serde_json::Value, manager: &str) -> Hints {
        let delegate = doc["containerDefinitions"]
            .as_array()
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["name"] == crate::task_definition::CONTAINER_NAME)
            })
            .cloned()
            .unwrap_or_default();
        let text = |v: &serde_json::Value| v.as_str().map(String::from);
        Hints {
            image: text(&delegate["image"]).unwrap_or_default(),
            execution_role: text(&doc["executionRoleArn"]),
            token_secret: delegate["secrets"]
                .as_array()
                .and_then(|s| s.first())
                .and_then(|s| text(&s["valueFrom"])),
            log_group: text(&delegate["logConfiguration"]["options"]["awslogs-group"]),
            manager: manager.to_string(),
            memory: doc["memory"]
                .as_str()
                .and_then(|m| m.parse().ok())
                .or_else(|| doc["memory"].as_u64().map(|m| m as u32))
                .unwrap_or(0),
        }
    }
}

/// How far a rollout has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub desired: i32,
    pub running: i32,
    pub healthy: i32,
    /// Whether health counts (the revision has a health check).
    pub health_check: bool,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} running", self.running, self.desired)?;
        if self.health_check {
            write!(f, ", {}/{} healthy", self.healthy, self.desired)?;
        }
        Ok(())
    }
}

/// Why a delegate did not come up: what happened, and the one thing to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub what: String,
    pub check: String,
    pub kind: FailureKind,
}

/// What failed: the revision itself, or something around it. An upgrade remembers a version
/// as failed only when its revision did ([`FailureKind::Revision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// ECS failed the deployment, or the revision's tasks keep stopping.
    Revision,
    /// ECS cannot place the task (capacity, network).
    Placement,
    /// The service was deleted or moved to another revision meanwhile.
    Service,
    /// The rollout could not be read.
    Unreadable,
    /// Not ready in the time there was.
    TimedOut,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}. Check: {}", self.what, self.check)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ready(Progress),
    Waiting(Progress),
    Failed(Failure),
}

/// The verdict on a rollout as `seen`.
pub fn judge(expect: &Expect, seen: &ObservedRollout) -> Verdict {
    let Some(service) = seen.service.as_ref().filter(|s| s.is_active()) else {
        return Verdict::Failed(Failure {
            what: "the delegate's service was deleted while waiting for it to be ready".into(),
            check: "who deleted it (CloudTrail: ecs:DeleteService); run the request again to recreate it".into(),
            kind: FailureKind::Service,
        });
    };
    let ours = of_revision(expect, seen);
    let progress = progress(expect, &ours);
    if expect.desired == 0 {
        return Verdict::Ready(progress);
    }
    let Some(primary) = service.deployment.as_ref() else {
        return Verdict::Waiting(progress);
    };
    if primary.task_definition != expect.revision {
        return Verdict::Failed(Failure {
            what: format!(
                "the service's deployment was replaced while waiting: it now deploys {}, not {}",
                model::revision_name(&primary.task_definition),
                model::revision_name(&expect.revision)
            ),
            check: "who changed the service (CloudTrail: ecs:UpdateService); change the delegate through its stack".into(),
            kind: FailureKind::Service,
        });
    }
    let stopped = failed_in_a_row(expect, &ours);
    if primary.rollout_state == Some(RolloutState::Failed) {
        let why = primary
            .rollout_reason
            .as_deref()
            .unwrap_or("the deployment failed");
        return Verdict::Failed(failure(
            format!("ECS failed the deployment: {why}"),
            expect,
            &ours,
            &service.events,
        ));
    }
    if stopped.len() >= FAILED_IN_A_ROW && progress.ready_tasks() < expect.desired {
        let what = format!(
            "the delegate's tasks keep stopping ({} in a row)",
            stopped.len()
        );
        return Verdict::Failed(failure(what, expect, &ours, &service.events));
    }
    if ours.is_empty() {
        if let Some(e) = events_since(&service.events, expect.since_ms)
            .find(|e| is_placement_failure(&e.message))
        {
            return Verdict::Failed(Failure {
                what: format!("ECS cannot start the delegate's task: {}", e.message),
                check: placement_check(&e.message),
                kind: FailureKind::Placement,
            });
        }
    }
    let rolled_out = primary
        .rollout_state
        .map_or(primary.running_count >= expect.desired, |r| {
            r == RolloutState::Completed
        });
    if rolled_out && progress.ready_tasks() >= expect.desired {
        Verdict::Ready(progress)
    } else {
        Verdict::Waiting(progress)
    }
}

impl Progress {
    /// Tasks that count towards ready: healthy ones where health counts, else running ones.
    pub fn ready_tasks(&self) -> i32 {
        if self.health_check {
            self.healthy
        } else {
            self.running
        }
    }
}

fn progress(expect: &Expect, ours: &[&ObservedTask]) -> Progress {
    let running = ours.iter().filter(|t| t.status == TaskStatus::Running);
    Progress {
        desired: expect.desired,
        running: running.clone().count() as i32,
        healthy: running
            .filter(|t| t.health == HealthStatus::Healthy)
            .count() as i32,
        health_check: expect.health_check,
    }
}

/// The tasks of the revision waited for.
fn of_revision<'a>(expect: &Expect, seen: &'a ObservedRollout) -> Vec<&'a ObservedTask> {
    seen.tasks
        .iter()
        .filter(|t| t.task_definition == expect.revision)
        .collect()
}

/// Those of `ours` that stopped, started since the deployment began.
fn stopped_since<'a>(expect: &Expect, ours: &[&'a ObservedTask]) -> Vec<&'a ObservedTask> {
    ours.iter()
        .copied()
        .filter(|t| t.status == TaskStatus::Stopped && t.created_at_ms >= expect.since_ms)
        .collect()
}

/// The revision's most recent stops since the deployment began, newest first, as long as each
/// stopped for a reason that will not fix itself.
fn failed_in_a_row<'a>(expect: &Expect, ours: &[&'a ObservedTask]) -> Vec<&'a ObservedTask> {
    let mut stopped = stopped_since(expect, ours);
    stopped.sort_by_key(|t| std::cmp::Reverse(t.stopped_at_ms.unwrap_or(t.created_at_ms)));
    stopped
        .into_iter()
        .take_while(|t| cause(t).is_some())
        .collect()
}

/// Why a task stopped, when it is a failure of the delegate (not a scale-in, a deployment
/// replacing it, or a Spot interruption).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cause {
    ImagePull,
    Secret,
    Logs,
    Network,
    OutOfMemory,
    HealthCheck,
    Exited,
    Other,
}

fn cause(t: &ObservedTask) -> Option<Cause> {
    let reason = t.stopped_reason.as_deref().unwrap_or_default();
    let containers: Vec<&str> = t
        .containers
        .iter()
        .filter_map(|c| c.reason.as_deref())
        .collect();
    let all = format!("{reason} {}", containers.join(" ")).to_ascii_lowercase();
    let has = |s: &str| all.contains(s);
    if matches!(
        t.stop_code,
        Some(StopCode::UserInitiated | StopCode::SpotInterruption | StopCode::TerminationNotice)
    ) {
        return None;
    }
    let cause = if has("cannotpullcontainer") || has("pull image") || has("pull access denied") {
        Cause::ImagePull
    } else if has("resourceinitializationerror") && (has("secret") || has("ssm")) {
        Cause::Secret
    } else if has("resourceinitializationerror") && has("log") {
        Cause::Logs
    } else if has("resourceinitializationerror") {
        Cause::Network
    } else if has("outofmemory") {
        Cause::OutOfMemory
    } else if has("health check") {
        Cause::HealthCheck
    } else if t.stop_code == Some(StopCode::EssentialContainerExited)
        || t.containers
            .iter()
            .any(|c| c.exit_code.is_some_and(|x| x != 0))
    {
        Cause::Exited
    } else if t.stop_code == Some(StopCode::TaskFailedToStart) {
        Cause::Other
    } else {
        // A deployment or a scale-in stopping a task is no failure.
        return None;
    };
    Some(cause)
}

/// The failure of a wait that ran out of time after `timeout_s`, with what was last seen.
pub fn timed_out(expect: &Expect, last: &ObservedRollout, timeout_s: u64) -> Failure {
    let ours = of_revision(expect, last);
    let progress = progress(expect, &ours);
    let what = format!(
        "the delegate was not ready within ReadyTimeoutSeconds ({timeout_s} s): {progress}"
    );
    let events = last
        .service
        .as_ref()
        .map(|s| s.events.as_slice())
        .unwrap_or_default();
    let mut f = failure(what, expect, &ours, events);
    f.kind = FailureKind::TimedOut;
    if ours.iter().all(|t| cause(t).is_none()) {
        let waiting_for = if progress.running > 0 && expect.health_check {
            "its tasks run but have not reported healthy, which a NextGen delegate does once it has connected to Harness"
        } else {
            "no task of its revision is running"
        };
        f.check = format!(
            "{}; {waiting_for} (or raise ReadyTimeoutSeconds)",
            check_for(None, &expect.hints, &[])
        );
    }
    f
}

/// The failure `what`, with the stopped tasks' reasons (de-duplicated, with counts), the
/// service's latest events since the deployment began, and the one thing to check.
fn failure(
    what: String,
    expect: &Expect,
    ours: &[&ObservedTask],
    events: &[ServiceEvent],
) -> Failure {
    let stopped = stopped_since(expect, ours);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in &stopped {
        *counts.entry(describe(t)).or_default() += 1;
    }
    let mut text = what;
    if !counts.is_empty() {
        let lines: Vec<String> = counts
            .iter()
            .map(|(d, n)| {
                if *n > 1 {
                    format!("{d} (×{n})")
                } else {
                    d.clone()
                }
            })
            .collect();
        text.push_str(&format!("; stopped tasks: {}", lines.join("; ")));
    }
    let latest: Vec<&str> = events_since(events, expect.since_ms)
        .map(|e| e.message.as_str())
        .filter(|m| !m.contains("has reached a steady state"))
        .take(2)
        .collect();
    if !latest.is_empty() {
        text.push_str(&format!("; latest service events: {}", latest.join(" | ")));
    }
    let cause = stopped.iter().filter_map(|t| cause(t)).min();
    Failure {
        what: model::within(&text, 2000, ' '),
        check: check_for(cause, &expect.hints, &stopped),
        kind: FailureKind::Revision,
    }
}

/// One stopped task in ECS's words: its stop code and reason, and each container's reason and
/// exit code.
fn describe(t: &ObservedTask) -> String {
    let mut parts = Vec::new();
    if let Some(code) = t.stop_code {
        parts.push(code.as_str().to_string());
    }
    if let Some(r) = &t.stopped_reason {
        parts.push(r.clone());
    }
    for c in &t.containers {
        let mut words = Vec::new();
        if let Some(r) = &c.reason {
            words.push(r.clone());
        }
        if let Some(x) = c.exit_code {
            words.push(format!("exit code {x}"));
        }
        if !words.is_empty() {
            parts.push(format!("container {}: {}", c.name, words.join(", ")));
        }
    }
    parts.join(": ")
}

/// The one thing to check for a cause.
fn check_for(cause: Option<Cause>, h: &Hints, stopped: &[&ObservedTask]) -> String {
    let role = h
        .execution_role
        .as_deref()
        .unwrap_or("(none: set ExecutionRoleArn)");
    let logs = match &h.log_group {
        Some(g) => format!(
            "the delegate's logs in the log group {g} (streams delegate/ecs-delegate/<task id>)"
        ),
        None => "the delegate's logs (set LogGroupName to keep them in CloudWatch)".to_string(),
    };
    match cause {
        Some(Cause::ImagePull) => format!(
            "that the image {} exists and that the tasks can reach its registry (a public IP or a NAT gateway in their subnets; for a private registry, the execution role {role} may pull from it)",
            h.image
        ),
        Some(Cause::Secret) => match &h.token_secret {
            Some(secret) => format!(
                "that the execution role {role} can read the secret {secret} (secretsmanager:GetSecretValue on it, and kms:Decrypt if a customer-managed key encrypts it), and that the tasks can reach Secrets Manager"
            ),
            None => format!("that the execution role {role} can read the secrets the task definition names"),
        },
        Some(Cause::Logs) => format!(
            "that the log group {} exists and that the execution role {role} may write to it (logs:CreateLogStream, logs:PutLogEvents)",
            h.log_group.as_deref().unwrap_or("(the task definition's)")
        ),
        Some(Cause::Network) => "that the tasks' subnets reach ECR, Secrets Manager and CloudWatch Logs (a NAT gateway, a public IP or VPC endpoints)".to_string(),
        Some(Cause::OutOfMemory) => format!("the delegate's memory ({} MiB): raise Memory", h.memory),
        Some(Cause::HealthCheck) => format!(
            "that the delegate can reach Harness at {} and that its token and AccountId are right: it reports healthy only once it has connected; {logs} say why",
            h.manager
        ),
        Some(Cause::Exited) => {
            let code = stopped.iter().flat_map(|t| &t.containers).find_map(|c| c.exit_code.filter(|x| *x != 0));
            let code = code.map(|c| format!(" (exit code {c})")).unwrap_or_default();
            format!("{logs}: the delegate's container exited{code}")
        }
        Some(Cause::Other) | None => format!("{logs}, and the stopped tasks in the ECS console"),
    }
}

fn events_since(events: &[ServiceEvent], since_ms: u64) -> impl Iterator<Item = &ServiceEvent> {
    // ECS's clock and ours may differ by a little.
    events.iter().filter(move |e| e.at_ms + 5_000 >= since_ms)
}

fn is_placement_failure(message: &str) -> bool {
    message.contains("unable to place a task")
}

fn placement_check(message: &str) -> String {
    if message.contains("memory")
        || message.contains("cpu")
        || message.contains("no container instance")
    {
        "the cluster's capacity: its container instances must have room for the delegate's Cpu and Memory (or use LaunchType FARGATE)".into()
    } else {
        "the cluster's capacity and the service's placement constraints".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::{ObservedContainer, ObservedDeployment, ObservedService};

    const REV: &str = "arn:aws:ecs:us-east-1:1:task-definition/harness-delegate-task-spec:2";
    const OLD: &str = "arn:aws:ecs:us-east-1:1:task-definition/harness-delegate-task-spec:1";
    const SINCE: u64 = 1_000_000;

    fn expect(desired: i32) -> Expect {
        Expect {
            revision: REV.into(),
            desired,
            health_check: true,
            since_ms: SINCE,
            hints: Hints {
                image: "harness/delegate:26.01.1".into(),
                execution_role: Some("arn:aws:iam::1:role/exec".into()),
                token_secret: Some("arn:aws:secretsmanager:us-east-1:1:secret:token".into()),
                log_group: Some("/harness/delegate".into()),
                manager: "https://app.harness.io".into(),
                memory: 2048,
            },
        }
    }

    fn service(rollout: Option<RolloutState>, running: i32, events: &[&str]) -> ObservedService {
        ObservedService {
            running_count: running,
            deployment: Some(ObservedDeployment {
                task_definition: REV.into(),
                rollout_state: rollout,
                rollout_reason: Some(
                    "ECS deployment circuit breaker: tasks failed to start.".into(),
                ),
                running_count: running,
                ..Default::default()
            }),
            events: events
                .iter()
                .map(|m| ServiceEvent {
                    at_ms: SINCE + 10,
                    message: m.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn task(status: TaskStatus, health: HealthStatus, at: u64) -> ObservedTask {
        ObservedTask {
            arn: format!("task-{at}"),
            task_definition: REV.into(),
            status,
            health,
            created_at_ms: SINCE + at,
            stopped_at_ms: (status == TaskStatus::Stopped).then_some(SINCE + at + 1),
            ..Default::default()
        }
    }

    fn stopped(
        at: u64,
        code: StopCode,
        reason: &str,
        container: Option<(&str, Option<i32>)>,
    ) -> ObservedTask {
        ObservedTask {
            stop_code: Some(code),
            stopped_reason: Some(reason.into()),
            containers: container
                .map(|(r, x)| ObservedContainer {
                    name: "ecs-delegate".into(),
                    reason: (!r.is_empty()).then(|| r.to_string()),
                    exit_code: x,
                })
                .into_iter()
                .collect(),
            ..task(TaskStatus::Stopped, HealthStatus::Unknown, at)
        }
    }

    const PULL: &str = "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref docker.io/harness/delegate:26.01.1: not found";
    const SECRET: &str = "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: unable to retrieve secret from asm: AccessDeniedException";
    const UNHEALTHY: &str = "Task failed container health checks";
    const PLACE: &str = "(service harness-delegate) was unable to place a task because no container instance met all of its requirements. The closest matching container-instance has insufficient memory available.";

    /// A situation, what is expected, what ECS shows, and the verdict with its words.
    type Row = (
        &'static str,
        Expect,
        Option<ObservedService>,
        Vec<ObservedTask>,
        &'static str,
        &'static [&'static str],
    );

    #[test]
    fn what_a_rollout_comes_to() {
        use HealthStatus::*;
        use TaskStatus::*;
        let completed = Some(RolloutState::Completed);
        let in_progress = Some(RolloutState::InProgress);
        let healthy = task(Running, Healthy, 10);
        // (situation, expect, service, tasks, verdict: "ready" | "waiting" | "failed", words)
        let rows: Vec<Row> = vec![
            ("one task running and healthy, rolled out", expect(1), Some(service(completed, 1, &[])), vec![healthy.clone()], "ready", &["1/1 running, 1/1 healthy"]),
            ("nothing started yet", expect(1), Some(service(in_progress, 0, &[])), vec![], "waiting", &["0/1 running, 0/1 healthy"]),
            ("running, its health not known yet", expect(1), Some(service(in_progress, 1, &[])), vec![task(Running, Unknown, 10)], "waiting", &["1/1 running, 0/1 healthy"]),
            ("COMPLETED but the task is not healthy: ECS counts it, the delegate has not connected", expect(1), Some(service(completed, 1, &[])), vec![task(Running, Unknown, 10)], "waiting", &["0/1 healthy"]),
            ("no health check: running is enough", Expect { health_check: false, ..expect(1) }, Some(service(completed, 1, &[])), vec![task(Running, Unknown, 10)], "ready", &["1/1 running"]),
            ("no rollout state: running equals desired", expect(1), Some(service(None, 1, &[])), vec![healthy.clone()], "ready", &[]),
            ("no rollout state, fewer running than desired", expect(2), Some(service(None, 1, &[])), vec![healthy.clone()], "waiting", &["1/2 running"]),
            ("DesiredCount 0 is ready at once", expect(0), Some(service(in_progress, 0, &[])), vec![], "ready", &["0/0 running"]),
            ("the previous revision's task does not count", expect(1), Some(service(completed, 1, &[])), vec![ObservedTask { task_definition: OLD.into(), ..healthy.clone() }], "waiting", &["0/1 running"]),
            ("the image cannot be pulled, twice", expect(1), Some(service(in_progress, 0, &[])),
                vec![stopped(1, StopCode::TaskFailedToStart, PULL, None), stopped(5, StopCode::TaskFailedToStart, PULL, None)],
                "failed", &["keep stopping (2 in a row)", "(×2)", "harness/delegate:26.01.1: not found", "Check: that the image harness/delegate:26.01.1 exists"]),
            ("the image could not be pulled once, the next task is coming up", expect(1), Some(service(in_progress, 1, &[])),
                vec![stopped(1, StopCode::TaskFailedToStart, PULL, None), task(Running, Unknown, 5)], "waiting", &["1/1 running"]),
            ("a first task failed, the second came up healthy", expect(1), Some(service(completed, 1, &[])),
                vec![stopped(1, StopCode::TaskFailedToStart, PULL, None), task(Running, Healthy, 5)], "ready", &[]),
            ("the token's secret cannot be read", expect(1), Some(service(in_progress, 0, &[])),
                vec![stopped(1, StopCode::TaskFailedToStart, SECRET, None), stopped(5, StopCode::TaskFailedToStart, SECRET, None)],
                "failed", &["AccessDeniedException", "the execution role arn:aws:iam::1:role/exec can read the secret arn:aws:secretsmanager:us-east-1:1:secret:token"]),
            ("the health check keeps failing", expect(1), Some(service(in_progress, 0, &[])),
                vec![stopped(1, StopCode::TaskFailedToStart, UNHEALTHY, None), stopped(5, StopCode::TaskFailedToStart, UNHEALTHY, None)],
                "failed", &["Task failed container health checks (×2)", "can reach Harness at https://app.harness.io", "/harness/delegate"]),
            ("the container exits", expect(1), Some(service(in_progress, 0, &[])),
                vec![stopped(1, StopCode::EssentialContainerExited, "Essential container in task exited", Some(("", Some(1)))), stopped(5, StopCode::EssentialContainerExited, "Essential container in task exited", Some(("", Some(1))))],
                "failed", &["container ecs-delegate: exit code 1 (×2)", "exited (exit code 1)"]),
            ("out of memory", expect(1), Some(service(in_progress, 0, &[])),
                vec![stopped(1, StopCode::EssentialContainerExited, "Essential container in task exited", Some(("OutOfMemoryError: Container killed due to memory usage", Some(137)))); 2],
                "failed", &["OutOfMemoryError", "2048 MiB): raise Memory"]),
            ("tasks stopped by a deployment or a person are no failure", expect(1), Some(service(in_progress, 0, &[])),
                vec![stopped(1, StopCode::UserInitiated, "Task stopped by user", None), stopped(5, StopCode::ServiceSchedulerInitiated, "Scaling activity initiated by (deployment ecs-svc/1)", None)],
                "waiting", &[]),
            ("failures before this deployment are not its own", expect(1), Some(service(in_progress, 0, &[])),
                vec![ObservedTask { created_at_ms: SINCE - 100_000, ..stopped(1, StopCode::TaskFailedToStart, PULL, None) }; 2], "waiting", &[]),
            ("the circuit breaker failed the deployment", expect(1), Some(service(Some(RolloutState::Failed), 0, &[])),
                vec![stopped(1, StopCode::TaskFailedToStart, PULL, None)],
                "failed", &["ECS failed the deployment: ECS deployment circuit breaker", "CannotPullContainerError", "Check: that the image"]),
            ("no capacity: a placement failure and no task", expect(1), Some(service(in_progress, 0, &[PLACE])), vec![],
                "failed", &["was unable to place a task", "insufficient memory", "Check: the cluster's capacity"]),
            ("a placement failure before this deployment is not its own", expect(1),
                Some(ObservedService { events: vec![ServiceEvent { at_ms: SINCE - 60_000, message: PLACE.into() }], ..service(in_progress, 0, &[]) }),
                vec![], "waiting", &[]),
            ("the service was deleted meanwhile", expect(1), None, vec![], "failed", &["was deleted while waiting"]),
            ("someone deployed another revision meanwhile", expect(1),
                Some(ObservedService { deployment: Some(ObservedDeployment { task_definition: OLD.into(), ..Default::default() }), ..service(None, 0, &[]) }),
                vec![], "failed", &["now deploys harness-delegate-task-spec:1, not harness-delegate-task-spec:2"]),
        ];
        for (what, expect, service, tasks, verdict, words) in rows {
            let got = judge(&expect, &ObservedRollout { service, tasks });
            let (kind, text) = match &got {
                Verdict::Ready(p) => ("ready", p.to_string()),
                Verdict::Waiting(p) => ("waiting", p.to_string()),
                Verdict::Failed(f) => ("failed", f.to_string()),
            };
            assert_eq!(kind, verdict, "{what}: {text}");
            for w in words {
                assert!(text.contains(w), "{what}: {w:?} not in {text}");
            }
        }
    }

    #[test]
    fn a_failure_reason_fits_and_never_names_a_plain_token() {
        let mut e = expect(1);
        e.hints.token_secret = None;
        let long = "x".repeat(5000);
        let seen = ObservedRollout {
            service: Some(service(Some(RolloutState::InProgress), 0, &[])),
            tasks: vec![
                stopped(
                    1,
                    StopCode::TaskFailedToStart,
                    &format!("ResourceInitializationError: secrets {long}"),
                    None
                );
                3
            ],
        };
        let Verdict::Failed(f) = judge(&e, &seen) else {
            panic!("not failed")
        };
        assert!(f.what.len() <= 2000, "{}", f.what.len());
        assert!(
            f.check
                .contains("can read the secrets the task definition names"),
            "{}",
            f.check
        );
    }
}
