//! The pipeline: one converge or delete of one delegate, its steps in order.
//!
//! Converge: parse the spec and check its rendered task definition (no AWS call yet) → observe →
//! pre-flight → plan → adoption check (a stack adopting a delegate installed without one: it
//! needs the plan) → apply. Delete: observe what is the delegate's → plan → apply. A
//! CloudFormation request adds its owner, and an Update that moves clusters is checked first.

use std::collections::BTreeSet;
use std::future::Future;

use futures::FutureExt;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::apply::{Applied, Applier, ApplyError, ServiceTarget};
use crate::classify::{CfnRequest, RequestType};
use crate::continuation::{self, Handoff, Waiter, HANDOFF_TIME};
use crate::custom_resource::{self, Outcome};
use crate::harness::HarnessError;
use crate::model::{cluster_short_name, DelegateKey, OwnerLabel, Target};
use crate::observe::{self, ObserveError, Observed, ObservedService};
use crate::operation::{self, Claim, OperationError, Start};
use crate::plan::{self, DeleteAction, Plan};
use crate::spec::{self, DelegateSpec, ImageUpgrade, Problem, Problems};
use crate::store::{Item, StoreError};
use crate::wait::{self, Wait, Waited};
use crate::{document, metrics, preflight, ready, record, task_definition, Clients};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Invalid(#[from] Problems),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Operation(#[from] OperationError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// AWS was changed, but the delegate did not become ready: nothing is committed.
    #[error("the delegate is not ready: {0}")]
    NotReady(ready::Failure),
    /// AWS was changed, but the change could not be committed to the record.
    #[error("the delegate was changed in AWS but its record could not be committed ({0}); the configuration committed before stays the one self-healing restores: retry the request")]
    NotCommitted(#[source] StoreError),
    /// Harness (or Secrets Manager, for its key) did not answer, or not with a version, and the
    /// delegate has no committed image to keep: nothing was changed, and a retry may succeed
    /// where new properties would not.
    #[error("{0}: the delegate's version cannot be chosen without Harness's latest supported version, and it has no committed image to keep; nothing was changed: retry, or pin Image")]
    HarnessUnavailable(#[source] HarnessError),
}

/// The spec the properties declare in `region`, its rendered task definition checked:
/// everything that can be known wrong before AWS is asked anything.
pub fn spec_of(props: &Value, region: Option<&str>) -> Result<DelegateSpec, Problems> {
    let mut spec = spec::parse(props)?;
    spec.region = region.map(String::from);
    task_definition::check(&spec)?;
    Ok(spec)
}

/// The work of one CloudFormation request, as the outcome to answer with; `None`: the wait
/// for the delegate was handed on, and the invocation that ends it answers.
pub async fn cloudformation(
    c: &Clients,
    req: &CfnRequest,
    deadline: Instant,
    waiter: &Waiter,
) -> Option<Outcome> {
    let outcome = match &req.request_type {
        Ok(RequestType::Create) => return converge_request(c, req, false, deadline, waiter).await,
        Ok(RequestType::Update) => return converge_request(c, req, true, deadline, waiter).await,
        Ok(RequestType::Delete) => delete_request(c, req, deadline).await,
        Err(raw) => Outcome::failed(
            req,
            format!("RequestType \"{raw}\" is not one of Create, Update, Delete"),
        ),
    };
    Some(outcome)
}

async fn converge_request(
    c: &Clients,
    req: &CfnRequest,
    update: bool,
    deadline: Instant,
    waiter: &Waiter,
) -> Option<Outcome> {
    let spec = match request_spec(c, req, update).await {
        Ok(s) => s,
        Err(e) => return Some(Outcome::failed(req, e.to_string())),
    };
    let claim = Claim {
        request_id: req.request_id.clone(),
        owner: Some(custom_resource::stack_owner(req)),
        force: false,
        take_over_from: spec.take_over_from.clone(),
    };
    let outcome_of = |r: &Result<(Plan, Applied), ReconcileError>| match r {
        Ok((_, applied)) => Outcome::success(applied.service_arn.clone(), applied.data()),
        Err(e) => Outcome::failed(req, e.to_string()),
    };
    let result = converge(c, &spec, &claim, deadline, waiter, |r| {
        Some(outcome_of(r).to_answer())
    })
    .await;
    let outcome = match result {
        Ok(Converged::Replayed(answer)) => replayed(req, &answer),
        Ok(Converged::Ran(r)) => {
            log_outcome("CloudFormation", &spec, &r);
            outcome_of(&r)
        }
        Ok(Converged::InProgress) => {
            tracing::info!(delegate = %spec.key(), request_id = %req.request_id, "a request delivered again while its wait goes on in another invocation: that one answers");
            return None;
        }
        Ok(Converged::HandedOn(h)) => {
            return continuation::pass_on(c, req, &claim, *h, waiter).await
        }
        Err(e) => {
            tracing::error!(trigger = "CloudFormation", delegate = %spec.key(), status = "FAILED", error = %e, "delegate not reconciled");
            Outcome::failed(req, e.to_string())
        }
    };
    Some(outcome)
}

/// The spec a Create or Update declares, owned by its stack resource, with what must hold
/// before anything is read: the stack's table is the function's, and a move between clusters
/// can be finished.
async fn request_spec(
    c: &Clients,
    req: &CfnRequest,
    update: bool,
) -> Result<DelegateSpec, ReconcileError> {
    let mut spec = spec_of(&req.properties, c.region.as_deref())?;
    spec.owner = Some(custom_resource::owner_of(req));
    spec.owner_stack_id = Some(req.stack_id.clone());
    same_table(&spec, c.store.table.as_deref())?;
    if update {
        check_move(c, req, &spec).await?;
    }
    choose_image(c, &mut spec).await?;
    Ok(spec)
}

/// With `ImageUpgrade: LatestSupported`, the image the request installs: Harness's latest
/// supported version, unless the committed image is newer or that version failed here (see
/// [`crate::image::choose`]). A spec that pins its image is left as it is. Neither the record
/// table nor Harness failing to answer is a problem with the properties: a caller retries them.
pub async fn choose_image(c: &Clients, spec: &mut DelegateSpec) -> Result<(), ReconcileError> {
    let (ImageUpgrade::LatestSupported, Some(secret)) =
        (spec.image_upgrade, spec.api_key_secret.as_deref())
    else {
        return Ok(());
    };
    let latest = c
        .harness
        .latest(secret, &spec.manager_host_and_port, &spec.account_id)
        .await;
    let item = c.store.get(&spec.key()).await?;
    let committed = item.committed.as_ref().and_then(|r| r.follow.as_ref());
    let chosen = crate::image::choose(
        latest.as_ref(),
        committed,
        item.failed_version.as_deref(),
        &spec.image_repository,
        spec.minimal_image,
    );
    let chosen = match chosen {
        Ok(chosen) => chosen,
        Err(why) => {
            return Err(match latest {
                Err(e) if e.is_unavailable() => ReconcileError::HarnessUnavailable(e),
                _ => Problems(vec![Problem::new("ImageUpgrade", why)]).into(),
            })
        }
    };
    if latest.is_err() {
        tracing::warn!(delegate = %spec.key(), image = %chosen.image, reason = %chosen.why, "Harness could not be asked: the committed image is kept");
    } else {
        tracing::info!(delegate = %spec.key(), image = %chosen.image, reason = %chosen.why, "image chosen");
    }
    spec.image = chosen.image;
    spec.image_chosen_because = Some(chosen.why);
    Ok(())
}

/// A stack's `RecordTable` must be the table the function records in: a delegate recorded in
/// another stack's table would be healed by nobody, or by the wrong function.
fn same_table(spec: &DelegateSpec, ours: Option<&str>) -> Result<(), Problems> {
    match (spec.record_table.as_deref(), ours) {
        (Some(theirs), Some(ours)) if theirs != ours => Err(Problems(vec![Problem::new(
            "RecordTable",
            format!("names the table {theirs}, but this function records delegates in {ours} (its RECORD_TABLE): pass the table of the function's own stack (!Ref RecordTable)"),
        )])),
        _ => Ok(()),
    }
}

/// The answer a redelivered request gets: the one it got the first time.
fn replayed(req: &CfnRequest, answer: &str) -> Outcome {
    tracing::warn!(request_id = %req.request_id, "a request answered before was delivered again: the same answer is sent, nothing is done");
    Outcome::from_answer(answer).unwrap_or_else(|| {
        Outcome::failed(
            req,
            "this request was handled before and its answer cannot be read back: nothing was done"
                .into(),
        )
    })
}

/// What an operation under the record store came to.
#[derive(Debug)]
pub enum Done<T> {
    /// The request was answered before: the answer (JSON); nothing was done.
    Replayed(String),
    /// The operation ran: its result (committed when it succeeded).
    Ran(T),
}

/// What a converge came to.
#[derive(Debug)]
pub enum Converged {
    /// The request was answered before: the answer (JSON); nothing was done.
    Replayed(String),
    /// The operation ran: its result (committed when it succeeded).
    Ran(Box<Result<(Plan, Applied), ReconcileError>>),
    /// The changes are in place and the wait for the delegate goes on in another invocation.
    HandedOn(Box<Handoff>),
    /// The same request, delivered again while another invocation waits for its delegate:
    /// that one answers.
    InProgress,
}

/// Converge `spec` under the delegate's record: take the lease (the item goes `pending`),
/// reconcile, wait for the delegate, then commit what succeeded, or keep what was committed
/// before; either way the answer (`answer_of` the result; `None`: nothing to remember) is kept
/// for a redelivery. A wait that outlasts the invocation is handed on, committing nothing yet.
/// `Err`: nothing was done.
pub async fn converge(
    c: &Clients,
    spec: &DelegateSpec,
    claim: &Claim,
    deadline: Instant,
    waiter: &Waiter,
    answer_of: impl FnOnce(&Result<(Plan, Applied), ReconcileError>) -> Option<String>,
) -> Result<Converged, OperationError> {
    let begin = |item: &Item, holder: &str, until| item.begin(holder, until);
    let item = match operation::start(&c.store, &spec.key(), claim, deadline, begin).await? {
        Start::Answered(a) => return Ok(Converged::Replayed(a)),
        Start::Waiting => return Ok(Converged::InProgress),
        Start::Begun(item) => *item,
    };
    // Boxed: each step's state is large, and a debug build's stack is not.
    let work = async {
        let (plan, applied) = Box::pin(reconcile(c, spec, claim.force, deadline)).await?;
        let doc = &plan.desired.task_definition;
        let ready = Box::pin(until_ready(c, spec, doc, applied, deadline, waiter)).await?;
        Ok((plan, ready))
    };
    let result = match unwinding(c, &item, work).await {
        Ok((_, Readiness::Waiting(waiting))) => {
            let (applied, w, progress) = *waiting;
            match hand_on(c, &item, claim, &applied, &w, deadline).await {
                Ok(item) => {
                    let h = Handoff {
                        item,
                        progress,
                        by: deadline,
                    };
                    return Ok(Converged::HandedOn(Box::new(h)));
                }
                Err(e) => Err(ReconcileError::NotCommitted(e)),
            }
        }
        Ok((plan, Readiness::Ready(applied))) => Ok((plan, *applied)),
        Err(e) => Err(e),
    };
    let settled = settle(c, spec, &item, claim, result, answer_of, deadline).await;
    Ok(Converged::Ran(Box::new(settled)))
}

/// Keep what the next invocation needs to take the wait up, and hold the lease for it.
async fn hand_on(
    c: &Clients,
    item: &Item,
    claim: &Claim,
    applied: &Applied,
    w: &Wait,
    deadline: Instant,
) -> Result<Item, StoreError> {
    let waiting = crate::store::Waiting {
        request_id: claim.request_id.clone(),
        record: applied.record.clone(),
        wait: serde_json::to_string(w).unwrap_or_default(),
        data: serde_json::to_string(&applied.data()).unwrap_or_default(),
    };
    continuation::keep_for_next(c, item, waiting, deadline).await
}

/// End an operation: commit what succeeded (then retire a family it left), or abandon what
/// did not; the answer is remembered either way.
async fn settle(
    c: &Clients,
    spec: &DelegateSpec,
    item: &Item,
    claim: &Claim,
    mut result: Result<(Plan, Applied), ReconcileError>,
    answer_of: impl FnOnce(&Result<(Plan, Applied), ReconcileError>) -> Option<String>,
    deadline: Instant,
) -> Result<(Plan, Applied), ReconcileError> {
    let answer = answer_of(&result);
    let stored = match &result {
        Ok((_, applied)) => {
            let record = applied.record.clone();
            operation::commit(&c.store, item, record, claim, answer).await
        }
        Err(_) => operation::abandon(&c.store, item, claim, answer).await,
    };
    match (&result, stored) {
        (Ok(_), Ok(_)) => retire_old_family(c, spec, item.committed.as_ref(), deadline).await,
        (Ok(_), Err(e)) => {
            tracing::error!(delegate = %spec.key(), error = %e, "AWS was changed but the record could not be committed");
            result = Err(ReconcileError::NotCommitted(e));
        }
        (Err(_), Err(e)) => {
            tracing::error!(delegate = %spec.key(), error = %e, "the failed operation's lease could not be given back: it expires on its own");
        }
        (Err(_), Ok(_)) => {}
    }
    result
}

/// Where a converge's wait stands.
#[derive(Debug)]
enum Readiness {
    /// The delegate is ready (or the spec does not wait).
    Ready(Box<Applied>),
    /// This invocation's time ran out first; the wait may go on in another.
    Waiting(Box<(Applied, Wait, ready::Progress)>),
}

/// Wait until the delegate `applied` put in place is ready, when the spec asks to: ready with
/// the running count in the answer's data, still waiting when time runs out and the wait can
/// be handed on, or why it is not ready.
async fn until_ready(
    c: &Clients,
    spec: &DelegateSpec,
    doc: &Value,
    mut applied: Applied,
    deadline: Instant,
    waiter: &Waiter,
) -> Result<Readiness, ReconcileError> {
    if !spec.wait_for_ready {
        return Ok(Readiness::Ready(Box::new(applied)));
    }
    let w = wait_of(spec, doc, &applied);
    let stop = if waiter.function_arn.is_some() {
        deadline.checked_sub(HANDOFF_TIME).unwrap_or(deadline)
    } else {
        deadline
    };
    match wait::wait(c, &w, waiter.poll, stop).await {
        Waited::Ready(p) => {
            applied.running_count = Some(p.running.to_string());
            Ok(Readiness::Ready(Box::new(applied)))
        }
        Waited::Failed(f) => Err(ReconcileError::NotReady(f)),
        Waited::OutOfTime(p) if waiter.function_arn.is_some() => {
            Ok(Readiness::Waiting(Box::new((applied, w, p))))
        }
        Waited::OutOfTime(p) => Err(ReconcileError::NotReady(ready::Failure {
            what: format!("the delegate was not ready before this invocation's time ran out: {p}"),
            check: "the delegate's progress in the ECS console; a direct request waits as long as its invocation lasts (a stack's request waits up to ReadyTimeoutSeconds)".into(),
            kind: ready::FailureKind::TimedOut,
        })),
    }
}

/// The wait for what `applied` put in place (the plan's rendered `doc`): its revision, from
/// the moment it was applied.
fn wait_of(spec: &DelegateSpec, doc: &Value, applied: &Applied) -> Wait {
    let since_ms = applied.record.applied_at;
    Wait {
        target: Target {
            cluster: spec.cluster.clone(),
            service: spec.service_name.clone(),
        },
        expect: ready::Expect {
            revision: applied.task_definition_arn.clone(),
            desired: spec.desired_count,
            health_check: task_definition::has_health_check(doc),
            since_ms,
            hints: ready::Hints::of(spec),
        },
        ready_by_ms: since_ms + u64::from(spec.ready_timeout_seconds) * 1000,
    }
}

/// After an Update moved the delegate to another family (the service now runs the new one),
/// deregister the old family's revisions this delegate registered, unless another delegate is
/// committed to one. A failure is logged and left: the operation itself succeeded, and the
/// revisions are only clutter.
async fn retire_old_family(
    c: &Clients,
    spec: &DelegateSpec,
    before: Option<&crate::record::Record>,
    deadline: Instant,
) {
    let Some(old) = before
        .map(|r| crate::model::revision_name(&r.task_definition))
        .and_then(|td| td.rsplit_once(':').map(|(family, _)| family.to_string()))
        .filter(|family| family != &spec.family)
    else {
        return;
    };
    let target = Target {
        cluster: spec.cluster.clone(),
        service: spec.service_name.clone(),
    };
    let retired = async {
        let observed = observe::observe_for_delete(c, &target, &old, spec.owner.as_ref()).await?;
        let others = revisions_of_other_delegates(c, &spec.key()).await?;
        let actions: Vec<DeleteAction> = observed
            .our_revisions
            .into_iter()
            .filter(|arn| !others.contains(crate::model::revision_name(arn)))
            .map(|arn| DeleteAction::DeregisterTaskDefinition {
                arn,
                reason: format!(
                    "the delegate moved from family {old} to {}: its revisions of the old one are retired",
                    spec.family
                ),
            })
            .collect();
        Applier::new(c, deadline)
            .delete(&target.cluster, &actions)
            .await?;
        Ok::<_, ReconcileError>(actions.len())
    };
    match retired.await {
        Ok(n) => {
            tracing::info!(delegate = %spec.key(), family = %old, revisions = n, "the old family's revisions retired")
        }
        Err(e) => {
            tracing::warn!(delegate = %spec.key(), family = %old, error = %e, "the old family's revisions could not be retired: they stay registered")
        }
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
    let claim = Claim {
        request_id: req.request_id.clone(),
        owner: Some(custom_resource::stack_owner(req)),
        force: false,
        take_over_from: None,
    };
    let owner = custom_resource::owner_of(req);
    let family = delete_family(&req.properties);
    let answer = Some(ok.to_answer());
    match remove(c, &target, family, Some(&owner), &claim, deadline, answer).await {
        Ok(Done::Replayed(a)) => replayed(req, &a),
        Ok(Done::Ran(_)) => ok,
        // Another stack's delegate: this resource has nothing of its own to remove.
        Err(ReconcileError::Operation(OperationError::Refused(why))) => {
            tracing::warn!(delegate = %target.key(), reason = %why, "Delete left another stack's delegate alone");
            ok
        }
        Err(e) => Outcome::failed(req, e.to_string()),
    }
}

/// The family a Delete looks in, read as the spec reads it (trimmed), or it looks in a family
/// nobody registered.
fn delete_family(props: &Value) -> &str {
    props
        .get("TaskDefinitionFamily")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .unwrap_or(spec::DEFAULT_FAMILY)
}

/// Run `work`; if it panics, give the lease of `item` back first (what was committed stays
/// the truth), then let the panic go on to the handler, which answers FAILED.
async fn unwinding<T>(c: &Clients, item: &Item, work: impl Future<Output = T>) -> T {
    // Boxed: the work's state is large, and a debug build's stack is not.
    match std::panic::AssertUnwindSafe(Box::pin(work))
        .catch_unwind()
        .await
    {
        Ok(done) => done,
        Err(panic) => {
            let released = item.abandon(record::now_millis() / 1000);
            if let Err(e) = c.store.put(&released).await {
                tracing::error!(delegate = %item.key, error = %e, "the lease of a panicked operation could not be released: it expires on its own");
            }
            std::panic::resume_unwind(panic)
        }
    }
}

/// Delete under the delegate's record: take the lease and mark the item deleted first (heal
/// restores nothing from then on), remove the resources, look once more for what a late call of
/// an aborted run created, then release the lease and remember the answer.
pub async fn remove(
    c: &Clients,
    target: &Target,
    family: &str,
    owner: Option<&OwnerLabel>,
    claim: &Claim,
    deadline: Instant,
    answer: Option<String>,
) -> Result<Done<Vec<DeleteAction>>, ReconcileError> {
    let key = target.key();
    if owner.is_none() && !claim.force {
        // Refused before the record is marked deleted: a refused Delete changes nothing. The
        // same check runs again under the lease, on what is there then; a label put on in
        // between is refused there, after the mark.
        let service = observe::service(c, &target.cluster, &target.service).await?;
        respect_stack(&key, service.as_ref(), false, "Delete")?;
    }
    let now_s = record::now_millis() / 1000;
    let begin = |item: &Item, holder: &str, until| item.tombstone(now_s, Some((holder, until)));
    let item = match operation::start(&c.store, &key, claim, deadline, begin).await? {
        Start::Answered(a) => return Ok(Done::Replayed(a)),
        // A Delete never shares its id with a request whose wait goes on; were it to, it must
        // not answer SUCCESS having removed nothing.
        Start::Waiting => {
            return Err(OperationError::Busy {
                key,
                holder: format!("the wait of request {}", claim.request_id),
                left_s: 0,
            }
            .into())
        }
        Start::Begun(item) => *item,
    };
    let work = async {
        let others = revisions_of_other_delegates(c, &key).await?;
        let mut actions = delete(c, target, family, owner, claim.force, &others, deadline).await?;
        actions.extend(delete(c, target, family, owner, claim.force, &others, deadline).await?);
        Ok::<_, ReconcileError>(actions)
    };
    let result = unwinding(c, &item, work).await;
    // Deleted either way: a failed Delete leaves a tombstone too, so nothing is restored, and
    // is not remembered as answered, so CloudFormation's retry runs it again.
    let done = item.tombstone(now_s, None);
    let done = match &result {
        Ok(_) => done.serve(&claim.request_id, answer),
        Err(_) => done,
    };
    c.store.put(&done).await?;
    Ok(Done::Ran(result?))
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
        spec.owner = observed.service.as_ref().and_then(|s| s.owner());
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

/// The revisions (`family:revision`) other live delegates are committed to, from the record
/// table: a Delete leaves them registered. Not by describing every cluster's services (the
/// function's role may only read its own cluster), nor from tags anyone may write.
async fn revisions_of_other_delegates(
    c: &Clients,
    except: &DelegateKey,
) -> Result<BTreeSet<String>, StoreError> {
    Ok(c.store
        .all()
        .await?
        .into_iter()
        .filter_map(Result::ok)
        .filter(|i| i.is_live() && &i.key != except)
        .filter_map(|i| i.committed)
        .map(|r| crate::model::revision_name(&r.task_definition).to_string())
        .collect())
}

/// Remove the delegate `target`: only what carries its tags, and no revision in `others`. A
/// direct request (no `owner`) removes a stack's delegate only when `force`d.
async fn delete(
    c: &Clients,
    target: &Target,
    family: &str,
    owner: Option<&OwnerLabel>,
    force: bool,
    others: &BTreeSet<String>,
    deadline: Instant,
) -> Result<Vec<DeleteAction>, ReconcileError> {
    // A cluster that is gone takes its services with it; the rest may still need removing.
    let mut observed = observe::observe_for_delete(c, target, family, owner).await?;
    observed.used_by_other_services = others.clone();
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
/// deleted) to its stack, unless forced; a forced one is logged at WARN with the owner. Refused
/// as the record's owner refuses it ([`operation::check_claim`]): the properties are not wrong.
fn respect_stack(
    key: &DelegateKey,
    service: Option<&ObservedService>,
    force: bool,
    action: &str,
) -> Result<(), OperationError> {
    let Some(owner) = service.and_then(ObservedService::owner) else {
        return Ok(());
    };
    if force {
        tracing::warn!(delegate = %key, %owner, action, "a stack's delegate changed by a forced direct request");
        return Ok(());
    }
    Err(OperationError::Refused(Problems(vec![Problem::new(
        "ServiceName",
        format!(
            "{key} belongs to the stack resource {owner}: change it through that stack, or add \"Force\": true to this {action} (the stack's next update may undo it)"
        ),
    )])))
}

/// The plan as shown to a person: actions with reasons, a summary, the desired state, the
/// rendered task definition with secrets redacted, and the wait for the delegate that follows.
pub fn plan_json(plan: &Plan, spec: &DelegateSpec) -> Value {
    let (wait, summary) = if spec.wait_for_ready {
        let s = spec.ready_timeout_seconds;
        let then = format!("then wait up to {s} s for the delegate to be ready (WaitForReady)");
        (
            json!({"ForReady": true, "TimeoutSeconds": s}),
            format!("{}; {then}", plan.summary()),
        )
    } else {
        (json!({"ForReady": false}), plan.summary())
    };
    json!({
        "Actions": plan.actions,
        "Summary": summary,
        "Desired": plan.desired,
        "TaskDefinition": document::redacted(&plan.desired.task_definition),
        "Wait": wait,
        "Image": {
            "Image": spec.image,
            "ImageUpgrade": spec.image_upgrade,
            "Because": spec.image_chosen_because.as_deref().unwrap_or("as the properties give it"),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_names_the_functions_own_table() {
        let spec = |t: Option<&str>| {
            let mut p =
                serde_json::json!({"ClusterName": "c", "AccountId": "a", "DelegateToken": "t"});
            if let Some(t) = t {
                p["RecordTable"] = serde_json::json!(t);
            }
            spec::parse(&p).unwrap()
        };
        assert!(same_table(&spec(Some("mine")), Some("mine")).is_ok());
        assert!(
            same_table(&spec(None), Some("mine")).is_ok(),
            "a stack from before the table"
        );
        let e = same_table(&spec(Some("theirs")), Some("mine"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("RecordTable") && e.contains("records delegates in mine"),
            "{e}"
        );
    }
}
