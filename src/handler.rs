//! The handler: runs one event through classify → spec → observe → preflight → plan → apply, and
//! turns the outcome into a CloudFormation response or an invocation result.
//!
//! For CloudFormation the duty is to answer exactly once: the work runs in its own task so that a
//! panic becomes a FAILED response, and under a timeout so that FAILED is sent a few seconds
//! before the Lambda deadline rather than never.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::apply::{Applied, Applier, ServiceTarget};
use crate::classify::{classify, CfnRequest, ClassifyError, DirectAction, RequestType, Trigger};
use crate::heal::{HealSettings, Scope};
use crate::plan::Plan;
use crate::respond::{self, CfnResponse, RespondError, RetryPolicy, Status};
use crate::spec::{self, DelegateSpec, Problems};
use crate::{observe, plan, preflight, Clients};

/// Physical id of a resource whose Create failed before its service could even be named (the
/// properties are unreadable): deterministic, and recognised by Delete as "nothing was created".
pub const NOT_CREATED_PREFIX: &str = "not-created:";

/// How long before the invocation deadline CloudFormation is answered FAILED if work is not done:
/// room for a few attempts of the response PUT.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(8);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Invalid(#[from] Problems),
    #[error(transparent)]
    Observe(#[from] observe::ObserveError),
    #[error(transparent)]
    Apply(#[from] crate::apply::ApplyError),
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    #[error(transparent)]
    Respond(#[from] RespondError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
}

impl HandlerError {
    /// The error type reported to Lambda (`errorType` in the invocation error).
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::Classify(_) => "UnrecognisedEvent",
            HandlerError::Respond(_) => "CloudFormationNotAnswered",
            HandlerError::Reconcile(ReconcileError::Invalid(_)) => "InvalidProperties",
            HandlerError::Reconcile(ReconcileError::Observe(_)) => "AwsReadFailed",
            HandlerError::Reconcile(ReconcileError::Apply(_)) => "AwsWriteFailed",
        }
    }
}

pub struct Handler {
    pub clients: Clients,
    /// Answers CloudFormation. Built on the first answer, not at start: most invocations are
    /// heals, which never need it, and building it loads the system's root certificates.
    pub http: std::sync::OnceLock<reqwest::Client>,
    /// `RESPONSE_URL_ALLOW_LOOPBACK=true`: accept http ResponseURLs to loopback (tests, local runs).
    pub allow_loopback: bool,
    pub retry: RetryPolicy,
    pub heal: HealSettings,
}

impl Handler {
    pub fn new(clients: Clients) -> Self {
        let allow_loopback =
            std::env::var("RESPONSE_URL_ALLOW_LOOPBACK").is_ok_and(|v| v == "true");
        Handler {
            clients,
            http: std::sync::OnceLock::new(),
            allow_loopback,
            retry: RetryPolicy::default(),
            heal: HealSettings::from_env(),
        }
    }

    /// Handle one event. `deadline` is when the invocation is cut off.
    pub async fn handle(&self, event: Value, deadline: Instant) -> Result<Value, HandlerError> {
        match classify(&event)? {
            Trigger::CloudFormation(req) => self.cloudformation(*req, deadline).await,
            Trigger::Direct { action, properties } => {
                Ok(self.direct(action, &properties, deadline).await?)
            }
            Trigger::Schedule => Ok(self.heal(Scope::All, "Schedule", deadline).await?),
            Trigger::Heal { targets } => {
                let scope = targets.map_or(Scope::All, Scope::Targets);
                Ok(self.heal(scope, "Heal", deadline).await?)
            }
            Trigger::EcsEvent(e) => match e.target {
                Ok(t) => Ok(self
                    .heal(Scope::Targets(vec![t]), &e.detail_type, deadline)
                    .await?),
                Err(why) => {
                    tracing::info!(trigger = %e.detail_type, reason = %why, "ECS event ignored");
                    Ok(json!({"Status": "IGNORED", "Reason": why}))
                }
            },
        }
    }

    async fn heal(
        &self,
        scope: Scope,
        trigger: &str,
        deadline: Instant,
    ) -> Result<Value, ReconcileError> {
        let report = crate::heal::heal(
            &self.clients,
            scope,
            &self.heal,
            trigger,
            earlier(deadline, DEADLINE_MARGIN),
        )
        .await?;
        Ok(report.to_json())
    }

    async fn direct(
        &self,
        action: DirectAction,
        props: &Value,
        deadline: Instant,
    ) -> Result<Value, ReconcileError> {
        let spec = spec::parse(props)?;
        match action {
            DirectAction::Plan => {
                let (_, plan, _) = prepare(&self.clients, &spec).await?;
                Ok(plan_json(&plan))
            }
            DirectAction::Reconcile => {
                let (plan, applied) = reconcile(&self.clients, &spec, deadline).await?;
                log_outcome("Reconcile", &spec.resource_key(), &plan, "SUCCESS");
                Ok(json!({"Status": "SUCCESS", "Actions": plan.actions, "Data": applied}))
            }
            DirectAction::Delete => {
                let actions = delete(
                    &self.clients,
                    &spec.cluster,
                    &spec.service_name,
                    &spec.family,
                    None,
                    deadline,
                )
                .await?;
                Ok(json!({"Status": "SUCCESS", "Actions": actions}))
            }
        }
    }

    async fn cloudformation(
        &self,
        req: CfnRequest,
        deadline: Instant,
    ) -> Result<Value, HandlerError> {
        // Without a usable URL there is no one to answer; say so in the invocation error.
        let url = respond::check_response_url(&req.response_url, self.allow_loopback)?;

        let clients = self.clients.clone();
        let work_req = req.clone();
        // Apply stops its own waits a little earlier, so it can still undo what it created.
        let apply_deadline = earlier(respond_by(deadline), Duration::from_secs(5));
        let work = async move { cloudformation_work(&clients, &work_req, apply_deadline).await };
        self.answer(req, url, deadline, work).await
    }

    /// Run `work` and answer CloudFormation with its outcome exactly once: FAILED if it panics,
    /// FAILED [`DEADLINE_MARGIN`] before `deadline` (the invocation's end) if it has not finished.
    pub async fn answer<F>(
        &self,
        req: CfnRequest,
        url: reqwest::Url,
        deadline: Instant,
        work: F,
    ) -> Result<Value, HandlerError>
    where
        F: std::future::Future<Output = Outcome> + Send + 'static,
    {
        let respond_by = respond_by(deadline);
        let task = tokio::spawn(work);
        let abort = task.abort_handle();
        let outcome = match tokio::time::timeout_at(respond_by, task).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(join)) => {
                let why = if join.is_panic() {
                    "the function panicked (a bug: see the function's logs)"
                } else {
                    "the work was cancelled"
                };
                tracing::error!(error = %join, "reconcile task failed");
                failed(
                    &req,
                    format!("internal error: {why}; nothing more was changed"),
                )
            }
            Err(_) => {
                abort.abort();
                failed(
                    &req,
                    "timed out: the function was about to reach its Lambda timeout; check the stack's resources and retry (raise the function's Timeout if this repeats)".into(),
                )
            }
        };
        let resp = CfnResponse {
            status: outcome.status,
            reason: outcome.reason.clone(),
            physical_resource_id: outcome.physical_resource_id.clone(),
            stack_id: req.stack_id.clone(),
            request_id: req.request_id.clone(),
            logical_resource_id: req.logical_resource_id.clone(),
            data: outcome.data.clone(),
        };
        tracing::info!(
            trigger = "CloudFormation",
            request_type = ?req.request_type,
            logical_resource_id = %req.logical_resource_id,
            status = ?resp.status,
            physical_resource_id = %resp.physical_resource_id,
            reason = %resp.reason,
            "custom resource request handled"
        );
        let http = match self.http.get() {
            Some(http) => http,
            // Built here, after the work, so it must not panic: an error is reported instead.
            None => match reqwest::Client::builder().build() {
                Ok(http) => self.http.get_or_init(|| http),
                Err(e) => {
                    let e = RespondError::Exhausted {
                        attempts: 0,
                        last: format!("the HTTP client could not be built: {e}"),
                    };
                    tracing::error!(error = %e, "CloudFormation not answered");
                    return Err(e.into());
                }
            },
        };
        match respond::send(http, &url, &resp, self.retry, deadline).await {
            Ok(()) => {}
            // An expired or refused URL stays refused: an invocation error would only make
            // Lambda run the whole request again.
            Err(e @ RespondError::Rejected(..)) => {
                tracing::error!(error = %e, "CloudFormation refused the response");
            }
            // A transient failure: the invocation error lets Lambda's retry answer again.
            Err(e) => return Err(e.into()),
        }
        Ok(json!({
            "Status": resp.status,
            "PhysicalResourceId": resp.physical_resource_id,
            "Reason": resp.reason,
            "Data": resp.data,
        }))
    }
}

/// `by` less `margin`, or `by` itself when that would be before the clock's start.
fn earlier(by: Instant, margin: Duration) -> Instant {
    by.checked_sub(margin).unwrap_or(by)
}

/// When CloudFormation is answered FAILED if the work has not finished.
fn respond_by(deadline: Instant) -> Instant {
    earlier(deadline, DEADLINE_MARGIN)
}

/// What a CloudFormation request came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub reason: String,
    pub physical_resource_id: String,
    pub data: BTreeMap<String, String>,
}

/// The physical id for a request that has none yet (a Create): the ARN the service has or would
/// have, computed from the stack's region and account and the properties, so that the Delete
/// CloudFormation sends after a failed Create can remove anything this resource did leave (a
/// Create cut off by the deadline, say). Delete only touches what carries this stack's owner tag.
/// Unreadable properties give the not-created marker.
fn new_physical_id(req: &CfnRequest) -> String {
    would_be_service_arn(req)
        .unwrap_or_else(|| format!("{NOT_CREATED_PREFIX}{}", req.logical_resource_id))
}

fn would_be_service_arn(req: &CfnRequest) -> Option<String> {
    // arn:<partition>:cloudformation:<region>:<account>:stack/<name>/<guid>
    let parts: Vec<&str> = req.stack_id.splitn(6, ':').collect();
    let [_, partition, _, region, account, _] = parts.as_slice() else {
        return None;
    };
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let props = &req.properties;
    let cluster = spec::cluster_short_name(props.get("ClusterName")?.as_str()?);
    let service = match props.get("ServiceName").and_then(Value::as_str) {
        Some(s) if !s.trim().is_empty() => s.trim(),
        _ => spec::DEFAULT_SERVICE_NAME,
    };
    (name_ok(cluster) && name_ok(service) && name_ok(region) && name_ok(account))
        .then(|| format!("arn:{partition}:ecs:{region}:{account}:service/{cluster}/{service}"))
}

/// A FAILED outcome with the physical id CloudFormation should keep: the existing one on Update
/// and Delete, the service's (would-be) ARN on Create.
pub fn failed(req: &CfnRequest, reason: String) -> Outcome {
    Outcome {
        status: Status::Failed,
        reason,
        physical_resource_id: req
            .physical_resource_id
            .clone()
            .unwrap_or_else(|| new_physical_id(req)),
        data: BTreeMap::new(),
    }
}

async fn cloudformation_work(c: &Clients, req: &CfnRequest, deadline: Instant) -> Outcome {
    let request_type = match &req.request_type {
        Ok(t) => *t,
        Err(raw) => {
            return failed(
                req,
                format!("RequestType \"{raw}\" is not one of Create, Update, Delete"),
            )
        }
    };
    match request_type {
        RequestType::Create | RequestType::Update => {
            let mut spec = match spec::parse(&req.properties) {
                Ok(s) => s,
                Err(p) => return failed(req, p.to_string()),
            };
            spec.owner = Some(owner_of(req));
            if request_type == RequestType::Update {
                if let Err(reason) = check_move(c, req, &spec).await {
                    return failed(req, reason);
                }
            }
            match reconcile(c, &spec, deadline).await {
                Ok((plan, applied)) => {
                    log_outcome("CloudFormation", &spec.resource_key(), &plan, "SUCCESS");
                    Outcome {
                        status: Status::Success,
                        reason: String::new(),
                        physical_resource_id: applied.service_arn.clone(),
                        data: data_of(&applied),
                    }
                }
                Err(e) => failed(req, e.to_string()),
            }
        }
        RequestType::Delete => {
            let physical = req.physical_resource_id.clone().unwrap_or_default();
            let ok = Outcome {
                status: Status::Success,
                reason: String::new(),
                physical_resource_id: if physical.is_empty() {
                    new_physical_id(req)
                } else {
                    physical.clone()
                },
                data: BTreeMap::new(),
            };
            // Only a service ARN names something we may have created; anything else (a failed
            // Create's marker, an id from another tool) means there is nothing of ours to remove.
            let Some((cluster, service)) = parse_service_arn(&physical, &req.properties) else {
                tracing::info!(physical_resource_id = %physical, "Delete of a resource that was never created: nothing to do");
                return ok;
            };
            let family = req
                .properties
                .get("TaskDefinitionFamily")
                .and_then(Value::as_str)
                .filter(|f| !f.is_empty())
                .unwrap_or(spec::DEFAULT_FAMILY)
                .to_string();
            match delete(
                c,
                &cluster,
                &service,
                &family,
                Some(&owner_of(req)),
                deadline,
            )
            .await
            {
                Ok(_) => ok,
                Err(e) => failed(req, e.to_string()),
            }
        }
    }
}

/// An Update that moves the delegate to another cluster is a replacement: CloudFormation then
/// deletes the old service with the function's new permissions. When those no longer reach the
/// old cluster (template.yaml scopes the role to one), that Delete would fail after the stack
/// succeeded and leave the old delegate running: refuse the move before anything changes.
async fn check_move(c: &Clients, req: &CfnRequest, spec: &DelegateSpec) -> Result<(), String> {
    let Some((old_cluster, old_service)) = req
        .physical_resource_id
        .as_deref()
        .and_then(|id| parse_service_arn(id, &req.properties))
    else {
        return Ok(());
    };
    let (old, new) = (
        spec::cluster_short_name(&old_cluster),
        spec::cluster_short_name(&spec.cluster),
    );
    if old == new {
        return Ok(());
    }
    observe::may_act_on_service(c, &old_cluster, &old_service)
        .await
        .map_err(|denied| {
            format!(
                "ClusterName: changed from {old} to {new}, but this function may not act on {old} any more ({denied}), so the delegate there could not be removed after the move. Its role covers one cluster: deploy a new stack with ClusterName {new}, then delete this one, or set ClusterName back to {old}"
            )
        })
}

/// The owner recorded on what a CloudFormation resource creates: `<stack name>/<logical id>`.
pub fn owner_of(req: &CfnRequest) -> String {
    // arn:aws:cloudformation:<region>:<account>:stack/<name>/<guid>
    let stack = req.stack_id.split('/').nth(1).unwrap_or(&req.stack_id);
    let owner = format!("{stack}/{}", req.logical_resource_id);
    if owner.len() <= 256 {
        return owner;
    }
    // Tag values hold 256 characters; long names keep a readable prefix and a stable hash.
    let hash = owner.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{}@{hash:016x}", &owner[..239])
}

/// `arn:aws:ecs:<region>:<account>:service/<cluster>/<service>` → (cluster, service). The old
/// ARN format without the cluster takes the cluster from the properties.
pub fn parse_service_arn(id: &str, props: &Value) -> Option<(String, String)> {
    let rest = id.strip_prefix("arn:")?;
    let parts: Vec<&str> = rest.splitn(5, ':').collect();
    if parts.len() != 5 || parts[1] != "ecs" {
        return None;
    }
    let path: Vec<&str> = parts[4].strip_prefix("service/")?.split('/').collect();
    match path.as_slice() {
        [cluster, service] if !cluster.is_empty() && !service.is_empty() => {
            Some((cluster.to_string(), service.to_string()))
        }
        [service] if !service.is_empty() => {
            let cluster = props.get("ClusterName")?.as_str()?;
            Some((cluster.to_string(), service.to_string()))
        }
        _ => None,
    }
}

fn data_of(a: &Applied) -> BTreeMap<String, String> {
    match serde_json::to_value(a) {
        Ok(Value::Object(m)) => m
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// observe → preflight → plan, without writing anything.
///
/// A request without an owner (a direct invocation) keeps the owner the service has, even one
/// deleted out of band (INACTIVE), so that it never takes a stack's delegate from its stack.
pub async fn prepare(
    c: &Clients,
    spec: &DelegateSpec,
) -> Result<(DelegateSpec, Plan, observe::Observed), ReconcileError> {
    let observed = observe::observe(c, spec).await?;
    let mut spec = spec.clone();
    if spec.owner.is_none() {
        spec.owner = observed
            .service
            .as_ref()
            .and_then(|s| s.owner().map(String::from));
    }
    preflight::check(&spec, &observed)?;
    let plan = plan::plan(&spec, &observed);
    preflight::check_adoption(&spec, &observed, &plan)?;
    Ok((spec, plan, observed))
}

/// Converge the delegate to `spec`: prepare, then apply.
pub async fn reconcile(
    c: &Clients,
    spec: &DelegateSpec,
    deadline: Instant,
) -> Result<(Plan, Applied), ReconcileError> {
    let (spec, plan, observed) = prepare(c, spec).await?;
    let cluster_arn = observed
        .cluster
        .as_ref()
        .map(|cl| cl.arn.clone())
        .unwrap_or_default();
    let current = observed
        .service
        .as_ref()
        .filter(|s| s.status == "ACTIVE")
        .map(|s| s.arn.clone());
    let mut record = plan.desired.record.clone();
    record.applied_at = crate::record::now_millis();
    let target = ServiceTarget {
        cluster: spec.cluster.clone(),
        record,
    };
    let applied = Applier::new(c, deadline)
        .reconcile(&target, &plan, &cluster_arn, current.as_deref())
        .await?;
    Ok((plan, applied))
}

/// Remove the delegate `cluster`/`service`: only what carries its tags.
pub async fn delete(
    c: &Clients,
    cluster: &str,
    service: &str,
    family: &str,
    owner: Option<&str>,
    deadline: Instant,
) -> Result<Vec<plan::Action>, ReconcileError> {
    // A cluster that is gone takes its services with it; the rest may still need removing.
    let observed = observe::observe_for_delete(c, cluster, service, family, owner).await?;
    let actions = plan::plan_delete(service, &observed, owner);
    if observed
        .service
        .as_ref()
        .is_some_and(|s| !s.owned_by(owner))
    {
        tracing::warn!(
            delegate = %format!("{}/{service}", spec::cluster_short_name(cluster)),
            owner = observed.service.as_ref().and_then(|s| s.owner()).unwrap_or_default(),
            "the service belongs to another stack's delegate: left alone"
        );
    }
    Applier::new(c, deadline).delete(cluster, &actions).await?;
    tracing::info!(
        delegate = %format!("{}/{service}", spec::cluster_short_name(cluster)),
        actions = %serde_json::to_string(&actions).unwrap_or_default(),
        "delegate deleted"
    );
    Ok(actions)
}

/// The plan as shown to a person: actions with reasons, the desired state, and the rendered task
/// definition with secrets redacted.
pub fn plan_json(plan: &Plan) -> Value {
    json!({
        "Actions": plan.actions,
        "Desired": plan.desired,
        "TaskDefinition": crate::task_definition::redacted(&plan.desired.task_definition),
    })
}

fn log_outcome(trigger: &str, key: &str, plan: &Plan, status: &str) {
    tracing::info!(
        trigger,
        delegate = key,
        status,
        actions = %serde_json::to_string(&plan.actions).unwrap_or_default(),
        "delegate reconciled"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_fit_in_a_tag_value() {
        let event = |stack: &str, logical: &str| {
            json!({"RequestType": "Create", "ResponseURL": "https://x.s3.amazonaws.com/a",
                "StackId": format!("arn:aws:cloudformation:us-east-1:1:stack/{stack}/guid"),
                "RequestId": "r", "LogicalResourceId": logical})
        };
        let owner = |e: Value| match crate::classify::classify(&e).unwrap() {
            crate::classify::Trigger::CloudFormation(r) => owner_of(&r),
            _ => unreachable!(),
        };
        assert_eq!(owner(event("prod", "Delegate")), "prod/Delegate");
        let long = owner(event(&"s".repeat(128), &"L".repeat(255)));
        assert_eq!(long.len(), 256);
        assert_ne!(
            long,
            owner(event(&"s".repeat(128), &format!("{}M", "L".repeat(254))))
        );
    }

    #[test]
    fn service_arns() {
        let props = json!({"ClusterName": "prod"});
        assert_eq!(
            parse_service_arn(
                "arn:aws:ecs:us-east-1:123:service/prod/harness-delegate",
                &props
            ),
            Some(("prod".into(), "harness-delegate".into()))
        );
        assert_eq!(
            parse_service_arn("arn:aws:ecs:us-east-1:123:service/harness-delegate", &props),
            Some(("prod".into(), "harness-delegate".into()))
        );
        for id in [
            "not-created:Delegate",
            "",
            "arn:aws:s3:::bucket",
            "arn:aws:ecs:us-east-1:1:cluster/prod",
            "2024/05/01/[$LATEST]abc",
        ] {
            assert_eq!(parse_service_arn(id, &props), None, "{id}");
        }
    }
}
