//! The pipeline: one converge or delete of one delegate, its steps in order.
//!
//! Converge: parse the spec and check its rendered task definition (no AWS call yet) → observe →
//! pre-flight → plan → adoption check (a stack adopting a delegate installed without one: it
//! needs the plan) → apply. Delete: observe what is the delegate's → plan → apply. A
//! CloudFormation request adds its owner, and an Update that moves clusters is checked first.

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::apply::{Applied, Applier, ApplyError, ServiceTarget};
use crate::classify::{CfnRequest, RequestType};
use crate::custom_resource::{self, Outcome};
use crate::model::{cluster_short_name, DelegateKey, Target};
use crate::observe::{self, ObserveError, Observed, ObservedService};
use crate::plan::{self, DeleteAction, Plan};
use crate::spec::{self, DelegateSpec, Problem, Problems};
use crate::{document, metrics, preflight, record, task_definition, Clients};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Invalid(#[from] Problems),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// The spec the properties declare in `region`, its rendered task definition checked:
/// everything that can be known wrong before AWS is asked anything.
pub fn spec_of(props: &Value, region: Option<&str>) -> Result<DelegateSpec, Problems> {
    let mut spec = spec::parse(props)?;
    spec.region = region.map(String::from);
    task_definition::check(&spec)?;
    Ok(spec)
}

/// The work of one CloudFormation request, as the outcome to answer with.
pub async fn cloudformation(c: &Clients, req: &CfnRequest, deadline: Instant) -> Outcome {
    match &req.request_type {
        Ok(RequestType::Create) => converge_request(c, req, false, deadline).await,
        Ok(RequestType::Update) => converge_request(c, req, true, deadline).await,
        Ok(RequestType::Delete) => delete_request(c, req, deadline).await,
        Err(raw) => Outcome::failed(
            req,
            format!("RequestType \"{raw}\" is not one of Create, Update, Delete"),
        ),
    }
}

async fn converge_request(
    c: &Clients,
    req: &CfnRequest,
    update: bool,
    deadline: Instant,
) -> Outcome {
    let mut spec = match spec_of(&req.properties, c.region.as_deref()) {
        Ok(s) => s,
        Err(p) => return Outcome::failed(req, p.to_string()),
    };
    spec.owner = Some(custom_resource::owner_of(req));
    if update {
        if let Err(p) = check_move(c, req, &spec).await {
            return Outcome::failed(req, p.to_string());
        }
    }
    let result = reconcile(c, &spec, false, deadline).await;
    log_outcome("CloudFormation", &spec, &result);
    match result {
        Ok((_, applied)) => Outcome::success(applied.service_arn.clone(), applied.data()),
        Err(e) => Outcome::failed(req, e.to_string()),
    }
}

async fn delete_request(c: &Clients, req: &CfnRequest, deadline: Instant) -> Outcome {
    let physical = req.physical_resource_id.clone().unwrap_or_default();
    let ok = Outcome::success(
        if physical.is_empty() {
            custom_resource::new_physical_id(req)
        } else {
            physical.clone()
        },
        Default::default(),
    );
    // Only a service ARN names something we may have created; anything else (a failed
    // Create's marker, an id from another tool) means there is nothing of ours to remove.
    let Some(target) = custom_resource::named_delegate(&physical, &req.properties) else {
        tracing::info!(physical_resource_id = %physical, "Delete of a resource that was never created: nothing to do");
        return ok;
    };
    // Read as the spec reads it (trimmed), or the Delete looks in a family nobody registered.
    let family = req
        .properties
        .get("TaskDefinitionFamily")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .unwrap_or(spec::DEFAULT_FAMILY);
    let owner = custom_resource::owner_of(req);
    match delete(c, &target, family, Some(&owner), false, deadline).await {
        Ok(_) => ok,
        Err(e) => Outcome::failed(req, e.to_string()),
    }
}

/// An Update that moves the delegate to another cluster is a replacement: CloudFormation then
/// deletes the old service with the function's new permissions. When those no longer reach the
/// old cluster (template.yaml scopes the role to one), that Delete would fail after the stack
/// succeeded and leave the old delegate running: refuse the move before anything changes.
async fn check_move(c: &Clients, req: &CfnRequest, spec: &DelegateSpec) -> Result<(), Problems> {
    let Some(old) = req
        .physical_resource_id
        .as_deref()
        .and_then(|id| custom_resource::named_delegate(id, &req.properties))
    else {
        return Ok(());
    };
    let (from, to) = (cluster_short_name(&old.cluster), spec.cluster_name());
    if from == to {
        return Ok(());
    }
    observe::may_act_on_service(c, &old).await.map_err(|denied| {
        Problems(vec![Problem::new(
            "ClusterName",
            format!(
                "changed from {from} to {to}, but this function may not act on {from} any more ({denied}), so the delegate there could not be removed after the move. Its role covers one cluster: deploy a new stack with ClusterName {to}, then delete this one, or set ClusterName back to {from}"
            ),
        )])
    })
}

/// observe → preflight → plan → adoption check, without writing anything.
///
/// A request without an owner (a direct invocation) keeps the owner the service has, even one
/// deleted out of band (INACTIVE), so that it never takes a stack's delegate from its stack.
pub async fn prepare(
    c: &Clients,
    spec: &DelegateSpec,
) -> Result<(DelegateSpec, Plan, Observed), ReconcileError> {
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

/// Converge the delegate to `spec`: prepare, then apply. A direct request (`spec` without an
/// owner) changes a stack's delegate only when `force`d.
pub async fn reconcile(
    c: &Clients,
    spec: &DelegateSpec,
    force: bool,
    deadline: Instant,
) -> Result<(Plan, Applied), ReconcileError> {
    let direct = spec.owner.is_none();
    let (spec, plan, observed) = prepare(c, spec).await?;
    if direct {
        respect_stack(&spec.key(), observed.service.as_ref(), force, "Reconcile")?;
    }
    let cluster_arn = observed
        .cluster
        .as_ref()
        .map(|cl| cl.arn.clone())
        .unwrap_or_default();
    let current = observed.active_service().map(|s| s.arn.clone());
    let mut record = plan.desired.record.clone();
    record.applied_at = record::now_millis();
    let target = ServiceTarget {
        cluster: spec.cluster.clone(),
        record,
    };
    let mut applied = Applier::new(c, deadline)
        .reconcile(&target, &plan, &cluster_arn, current.as_deref())
        .await?;
    applied.log_group_name = spec.log_group.clone().unwrap_or_else(|| "none".into());
    Ok((plan, applied))
}

/// Remove the delegate `target`: only what carries its tags. A direct request (no `owner`)
/// removes a stack's delegate only when `force`d.
pub async fn delete(
    c: &Clients,
    target: &Target,
    family: &str,
    owner: Option<&str>,
    force: bool,
    deadline: Instant,
) -> Result<Vec<DeleteAction>, ReconcileError> {
    // A cluster that is gone takes its services with it; the rest may still need removing.
    let observed = observe::observe_for_delete(c, target, family, owner).await?;
    if owner.is_none() {
        respect_stack(&target.key(), observed.service.as_ref(), force, "Delete")?;
    }
    let plan = plan::plan_delete(&target.service, &observed, owner);
    let delegate = target.key().to_string();
    if let Some(why) = &plan.left_alone {
        tracing::warn!(delegate, reason = %why, "delegate left alone");
    }
    Applier::new(c, deadline)
        .delete(&target.cluster, &plan.actions)
        .await?;
    let steps = serde_json::to_string(&plan.actions).unwrap_or_default();
    tracing::info!(delegate, actions = %steps, "delegate deleted");
    let actions = plan.actions;
    Ok(actions)
}

/// A direct request leaves a stack's delegate (its service carries the stack's owner tag, even
/// deleted) to its stack, unless forced; a forced one is logged at WARN with the owner.
fn respect_stack(
    key: &DelegateKey,
    service: Option<&ObservedService>,
    force: bool,
    action: &str,
) -> Result<(), Problems> {
    let Some(owner) = service.and_then(ObservedService::owner) else {
        return Ok(());
    };
    if force {
        tracing::warn!(delegate = %key, owner, action, "a stack's delegate changed by a forced direct request");
        return Ok(());
    }
    Err(Problems(vec![Problem::new(
        "ServiceName",
        format!(
            "{key} belongs to the stack resource {owner}: change it through that stack, or add \"Force\": true to this {action} (the stack's next update may undo it)"
        ),
    )]))
}

/// The plan as shown to a person: actions with reasons, a summary, the desired state, and the
/// rendered task definition with secrets redacted.
pub fn plan_json(plan: &Plan) -> Value {
    json!({
        "Actions": plan.actions,
        "Summary": plan.summary(),
        "Desired": plan.desired,
        "TaskDefinition": document::redacted(&plan.desired.task_definition),
    })
}

/// One structured line per converge: `status` SUCCESS with the steps taken, or FAILED with why;
/// and its metrics.
pub fn log_outcome(
    trigger: &str,
    spec: &DelegateSpec,
    result: &Result<(Plan, Applied), ReconcileError>,
) {
    let delegate = spec.key().to_string();
    let record = metrics::converge_record(
        &delegate,
        result.is_err(),
        spec.desired_count,
        record::now_millis(),
    );
    metrics::emit(&record);
    match result {
        Ok((plan, _)) => {
            let steps = serde_json::to_string(&plan.actions).unwrap_or_default();
            tracing::info!(trigger, delegate, status = "SUCCESS", actions = %steps, "delegate reconciled");
        }
        Err(e) => {
            tracing::error!(trigger, delegate, status = "FAILED", error = %e, "delegate not reconciled");
        }
    }
}
