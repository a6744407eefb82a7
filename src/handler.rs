//! The handler: dispatches each event (classify) to the pipeline, heal, an upgrade run, a
//! dry-run plan or the continuation of a handed-on wait, and turns the result into an
//! invocation result.
//!
//! For CloudFormation the duty is to answer exactly once: the work runs in its own task so that a
//! panic becomes a FAILED response, and under a timeout so that FAILED is sent a few seconds
//! before the Lambda deadline rather than never.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::classify::{classify, CfnRequest, ClassifyError, DirectAction, EcsEvent, Trigger};
use crate::continuation::Waiter;
pub use crate::custom_resource::{Outcome, NOT_CREATED_PREFIX};
use crate::heal::{DelegateReport, HealReport, HealSettings, Scope};
use crate::model::{Home, InvocationStatus, Origin, Target};
use crate::operation::Claim;
use crate::pipeline::{self, Converged, Done, ReconcileError};
use crate::respond::{self, CfnResponse, RespondError, RetryPolicy};
use crate::Clients;

/// How long before the invocation deadline CloudFormation is answered FAILED if work is not done:
/// room for a few attempts of the response PUT.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(8);

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Unreadable(Unreadable),
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
            HandlerError::Unreadable(_) => "UnreadableEvent",
            HandlerError::Classify(_) => "UnrecognisedEvent",
            HandlerError::Respond(_) => "CloudFormationNotAnswered",
            HandlerError::Reconcile(ReconcileError::Invalid(_)) => "InvalidProperties",
            HandlerError::Reconcile(ReconcileError::Observe(_)) => "AwsReadFailed",
            HandlerError::Reconcile(ReconcileError::Apply(_)) => "AwsWriteFailed",
            HandlerError::Reconcile(ReconcileError::NotReady(_)) => "DelegateNotReady",
            HandlerError::Reconcile(ReconcileError::HarnessUnavailable(_)) => "HarnessUnavailable",
            HandlerError::Reconcile(ReconcileError::Operation(
                crate::operation::OperationError::Refused(_),
            )) => "Refused",
            HandlerError::Reconcile(ReconcileError::Operation(
                crate::operation::OperationError::Busy { .. },
            )) => "DelegateBusy",
            HandlerError::Reconcile(
                ReconcileError::Operation(crate::operation::OperationError::Store(_))
                | ReconcileError::Store(_)
                | ReconcileError::NotCommitted(_),
            ) => "RecordStoreFailed",
        }
    }
}

/// The invocation error Lambda reports: the kind callers branch on, and the message.
impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(e: HandlerError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: e.kind().to_string(),
            error_message: e.to_string(),
        }
    }
}

pub struct Handler {
    pub clients: Clients,
    /// `RESPONSE_URL_ALLOW_LOOPBACK=true`: accept http ResponseURLs to loopback (tests, local runs).
    pub allow_loopback: bool,
    pub retry: RetryPolicy,
    pub heal: HealSettings,
    /// The function's own account and region, from the first invocation's function ARN: ECS
    /// events and Heal targets from anywhere else are ignored. Unset (a local run): not checked.
    pub home: std::sync::OnceLock<Home>,
    /// How often a wait for the delegate looks at its rollout (`READY_POLL_SECONDS`).
    pub poll: Duration,
    /// The function's own ARN, from the first invocation: a long wait is handed on to it.
    pub function_arn: std::sync::OnceLock<String>,
}

impl Handler {
    pub fn new(clients: Clients) -> Self {
        let allow_loopback =
            std::env::var("RESPONSE_URL_ALLOW_LOOPBACK").is_ok_and(|v| v == "true");
        Handler {
            clients,
            allow_loopback,
            retry: RetryPolicy::default(),
            heal: HealSettings::from_env(),
            home: std::sync::OnceLock::new(),
            poll: crate::wait::poll_from_env(),
            function_arn: std::sync::OnceLock::new(),
        }
    }

    /// Handle one invocation as Lambda hands it over: the event's text and the invoked
    /// function's ARN.
    pub async fn handle_invocation(
        &self,
        event: &str,
        function_arn: &str,
        deadline: Instant,
    ) -> Result<Value, HandlerError> {
        if let Some(home) = Home::from_function_arn(function_arn) {
            let _ = self.home.set(home);
            let _ = self.function_arn.set(function_arn.to_string());
        }
        match read_event(event) {
            Ok(event) => self.handle(event, deadline).await,
            Err((shallow, unreadable)) => self.unreadable(&shallow, unreadable, deadline).await,
        }
    }

    /// An event with fields nested deeper than JSON is read here: a CloudFormation request is
    /// still answered, FAILED, once; anything else is an invocation error.
    async fn unreadable(
        &self,
        shallow: &Value,
        unreadable: Unreadable,
        deadline: Instant,
    ) -> Result<Value, HandlerError> {
        let Ok(Trigger::CloudFormation(req)) = classify(shallow) else {
            return Err(HandlerError::Unreadable(unreadable));
        };
        let url = respond::check_response_url(&req.response_url, self.allow_loopback)?;
        let failed = Outcome::failed(&req, unreadable.to_string());
        self.answer(*req, url, deadline, async move { Some(failed) })
            .await
    }

    /// What of `origin` lies outside the function's account and region, if anything.
    fn elsewhere(&self, origin: &Origin) -> Option<String> {
        self.home.get()?.elsewhere(origin)
    }

    /// Handle one event. `deadline` is when the invocation is cut off.
    pub async fn handle(&self, event: Value, deadline: Instant) -> Result<Value, HandlerError> {
        let trigger = classify(&event)?;
        // Here, in the shallowest frame a request has: built one call deeper (in
        // cloudformation()), the clients overflowed a debug test thread's 2 MiB stack.
        if matches!(
            trigger,
            Trigger::CloudFormation(_) | Trigger::Direct { .. } | Trigger::Continuation { .. }
        ) {
            self.clients.build_all();
        }
        match trigger {
            Trigger::CloudFormation(req) => self.cloudformation(*req, None, deadline).await,
            Trigger::Direct {
                action,
                properties,
                force,
            } => Ok(self.direct(action, &properties.0, force, deadline).await?),
            Trigger::Schedule => Ok(self.heal(Scope::All, "Schedule", deadline).await?),
            Trigger::Heal { targets: None } => Ok(self.heal(Scope::All, "Heal", deadline).await?),
            Trigger::Heal {
                targets: Some(targets),
            } => Ok(self.heal_targets(targets, deadline).await?),
            Trigger::EcsEvent(e) => Ok(self.ecs_event(e, deadline).await?),
            Trigger::Upgrade { targets } => Ok(self.upgrade(targets, deadline).await?),
            Trigger::Continuation { request, operation } => {
                self.cloudformation(*request, Some(operation), deadline)
                    .await
            }
        }
    }

    /// Move the delegates that follow Harness to its latest supported version (all, or the
    /// targets in the function's account and region).
    async fn upgrade(
        &self,
        targets: Option<Vec<crate::model::Target>>,
        deadline: Instant,
    ) -> Result<Value, ReconcileError> {
        let scope = match targets {
            None => Scope::All,
            Some(ts) => Scope::Targets(
                ts.into_iter()
                    .filter(|t| self.elsewhere(&t.origin()).is_none())
                    .collect(),
            ),
        };
        let deadline = earlier(deadline, DEADLINE_MARGIN);
        let report =
            crate::upgrade::upgrade(&self.clients, scope, &self.heal, self.poll, deadline).await?;
        Ok(report.to_json())
    }

    /// Heal the delegate an ECS event names; an event that calls for no heal is ignored, one
    /// from another account or region with a WARN.
    async fn ecs_event(&self, e: EcsEvent, deadline: Instant) -> Result<Value, ReconcileError> {
        let why = match (self.elsewhere(&e.origin), e.target) {
            (None, Ok(t)) => {
                return self
                    .heal(Scope::Targets(vec![t]), &e.detail_type, deadline)
                    .await
            }
            (Some(away), _) => {
                let why = format!("the event is from {away}: ignored");
                tracing::warn!(trigger = %e.detail_type, reason = %why, "ECS event ignored");
                why
            }
            (None, Err(why)) => {
                tracing::info!(trigger = %e.detail_type, reason = %why, "ECS event ignored");
                why
            }
        };
        Ok(json!({"Status": InvocationStatus::Ignored, "Reason": why}))
    }

    async fn heal(
        &self,
        scope: Scope,
        trigger: &str,
        deadline: Instant,
    ) -> Result<Value, ReconcileError> {
        Ok(self.heal_report(scope, trigger, deadline).await?.to_json())
    }

    async fn heal_report(
        &self,
        scope: Scope,
        trigger: &str,
        deadline: Instant,
    ) -> Result<HealReport, ReconcileError> {
        let deadline = earlier(deadline, DEADLINE_MARGIN);
        crate::heal::heal(&self.clients, scope, &self.heal, trigger, deadline).await
    }

    /// Heal the targets of this account and region; the others are reported and left alone.
    async fn heal_targets(
        &self,
        targets: Vec<Target>,
        deadline: Instant,
    ) -> Result<Value, ReconcileError> {
        let mut here = Vec::new();
        let mut away = Vec::new();
        for t in targets {
            match self.elsewhere(&t.origin()) {
                None => here.push(t),
                Some(elsewhere) => away.push((t, elsewhere)),
            }
        }
        let mut report = self
            .heal_report(Scope::Targets(here), "Heal", deadline)
            .await?;
        for (t, elsewhere) in away {
            let why = format!("{elsewhere}: ignored");
            tracing::warn!(delegate = %t.key(), reason = %why, "Heal target ignored");
            report
                .delegates
                .push(DelegateReport::elsewhere(&t.key(), why));
        }
        Ok(report.to_json())
    }

    async fn direct(
        &self,
        action: DirectAction,
        props: &Value,
        force: bool,
        deadline: Instant,
    ) -> Result<Value, ReconcileError> {
        let mut spec = pipeline::spec_of(props, self.clients.region.as_deref())?;
        if action != DirectAction::Delete {
            pipeline::choose_image(&self.clients, &mut spec).await?;
        }
        // The lease a direct request takes must end with the invocation, not after it.
        let deadline = earlier(deadline, DEADLINE_MARGIN);
        match action {
            DirectAction::Plan => {
                let (_, plan, _) = pipeline::prepare(&self.clients, &spec).await?;
                Ok(pipeline::plan_json(&plan, &spec))
            }
            DirectAction::Reconcile => {
                let claim = direct_claim("reconcile", force);
                // A direct request's id is new each time: nothing to remember for a redelivery.
                // A direct request's caller waits for its answer: its wait is never handed on.
                let waiter = Waiter {
                    poll: self.poll,
                    function_arn: None,
                };
                let done =
                    pipeline::converge(&self.clients, &spec, &claim, deadline, &waiter, |_| None)
                        .await?;
                let result = match done {
                    Converged::Ran(result) => *result,
                    Converged::Replayed(answer) => return Ok(replayed(&answer)),
                    // A direct request's id is new each time, and its wait is never handed on.
                    Converged::HandedOn(_) | Converged::InProgress => {
                        return Ok(json!({"Status": InvocationStatus::Waiting}))
                    }
                };
                pipeline::log_outcome("Reconcile", &spec, &result);
                let (plan, applied) = result?;
                Ok(
                    json!({"Status": InvocationStatus::Success, "Actions": plan.actions, "Data": applied}),
                )
            }
            DirectAction::Delete => {
                let target = crate::model::Target {
                    cluster: spec.cluster.clone(),
                    service: spec.service_name.clone(),
                };
                let claim = direct_claim("delete", force);
                let done = pipeline::remove(
                    &self.clients,
                    &target,
                    &spec.family,
                    None,
                    &claim,
                    deadline,
                    None,
                )
                .await?;
                let actions = match done {
                    Done::Ran(actions) => actions,
                    Done::Replayed(answer) => return Ok(replayed(&answer)),
                };
                Ok(json!({"Status": InvocationStatus::Success, "Actions": actions}))
            }
        }
    }

    /// A CloudFormation request, or the continuation of its wait (`continued`: the operation
    /// that waits), answered once by [`Handler::answer`].
    async fn cloudformation(
        &self,
        req: CfnRequest,
        continued: Option<String>,
        deadline: Instant,
    ) -> Result<Value, HandlerError> {
        // Without a usable URL there is no one to answer; say so in the invocation error.
        let url = respond::check_response_url(&req.response_url, self.allow_loopback)?;

        let clients = self.clients.clone();
        let work_req = req.clone();
        // Apply stops its own waits a little earlier, so it can still undo what it created.
        let apply_deadline = earlier(respond_by(deadline), Duration::from_secs(5));
        let waiter = self.waiter();
        let work = async move {
            let (c, r, w) = (&clients, &work_req, &waiter);
            match continued {
                None => pipeline::cloudformation(c, r, apply_deadline, w).await,
                Some(op) => crate::continuation::resume(c, r, &op, apply_deadline, w).await,
            }
        };
        self.answer(req, url, deadline, work).await
    }

    /// How a CloudFormation request's wait runs in this invocation.
    fn waiter(&self) -> Waiter {
        Waiter {
            poll: self.poll,
            function_arn: self.function_arn.get().cloned(),
        }
    }

    /// Run `work` and answer CloudFormation with its outcome exactly once: FAILED if it panics,
    /// FAILED [`DEADLINE_MARGIN`] before `deadline` (the invocation's end) if it has not finished;
    /// nothing when the work handed its wait on (`None`): the invocation that ends it answers.
    pub async fn answer<F>(
        &self,
        req: CfnRequest,
        url: url::Url,
        deadline: Instant,
        work: F,
    ) -> Result<Value, HandlerError>
    where
        F: std::future::Future<Output = Option<Outcome>> + Send + 'static,
    {
        let Some(outcome) = run_to_outcome(&req, respond_by(deadline), work).await else {
            tracing::info!(trigger = "CloudFormation", request_type = req.request_type_name(), logical_resource_id = %req.logical_resource_id, "not answered here: the wait for the delegate goes on in another invocation, which answers");
            return Ok(
                json!({"Status": InvocationStatus::Waiting, "Reason": "the wait for the delegate goes on in another invocation, which answers CloudFormation"}),
            );
        };
        let resp = CfnResponse {
            status: outcome.status,
            reason: outcome.reason,
            physical_resource_id: outcome.physical_resource_id,
            stack_id: req.stack_id.clone(),
            request_id: req.request_id.clone(),
            logical_resource_id: req.logical_resource_id.clone(),
            data: outcome.data,
        };
        // What is logged and returned is what CloudFormation is sent.
        let (resp, _) = respond::fit(&resp)?;
        tracing::info!(
            trigger = "CloudFormation",
            request_type = req.request_type_name(),
            logical_resource_id = %req.logical_resource_id,
            status = resp.status.as_str(),
            physical_resource_id = %resp.physical_resource_id,
            reason = %resp.reason,
            "custom resource request handled"
        );
        match respond::send(&url, &resp, self.retry, deadline).await {
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

/// The work's outcome, or FAILED when it panics or is still running at `respond_by`.
async fn run_to_outcome<F>(req: &CfnRequest, respond_by: Instant, work: F) -> Option<Outcome>
where
    F: std::future::Future<Output = Option<Outcome>> + Send + 'static,
{
    let task = tokio::spawn(work);
    let abort = task.abort_handle();
    match tokio::time::timeout_at(respond_by, task).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(join)) => {
            let why = if join.is_panic() {
                "the function panicked (a bug: see the function's logs)"
            } else {
                "the work was cancelled"
            };
            tracing::error!(error = %join, "reconcile task failed");
            Some(Outcome::failed(
                req,
                format!("internal error: {why}; nothing more was changed"),
            ))
        }
        Err(_) => {
            abort.abort();
            Some(Outcome::failed(
                req,
                "timed out: the function was about to reach its Lambda timeout; check the stack's resources and retry (raise the function's Timeout if this repeats)".into(),
            ))
        }
    }
}

/// An event serde_json cannot read whole (nested deeper than its limit of 128 levels), with
/// the top-level fields that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the event cannot be read: {} nested deeper than JSON is read here (128 levels){}; nothing was changed", .fields.join(", "), .cause.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct Unreadable {
    pub fields: Vec<String>,
    pub cause: Option<String>,
}

/// The event, or its top level with the fields that could be read and what could not.
fn read_event(text: &str) -> Result<Value, (Value, Unreadable)> {
    let whole = match serde_json::from_str::<Value>(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let Ok(top) = serde_json::from_str::<
        std::collections::BTreeMap<String, Box<serde_json::value::RawValue>>,
    >(text) else {
        let unreadable = Unreadable {
            fields: vec!["the event".into()],
            cause: Some(whole.to_string()),
        };
        return Err((Value::Null, unreadable));
    };
    let mut shallow = serde_json::Map::new();
    let mut fields = Vec::new();
    for (k, raw) in top {
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(v) => {
                shallow.insert(k, v);
            }
            Err(_) => fields.push(k),
        }
    }
    Err((
        Value::Object(shallow),
        Unreadable {
            fields,
            cause: None,
        },
    ))
}

/// A direct request's claim: a fresh id (nothing to replay), no stack, forced or not.
fn direct_claim(what: &str, force: bool) -> Claim {
    Claim {
        request_id: crate::operation::fresh_id(what),
        owner: None,
        force,
        take_over_from: None,
    }
}

/// What the record remembers of a direct request: never anything (its id is new each time and
/// its answer is not kept), so this only answers what the type allows.
fn replayed(answer: &str) -> Value {
    serde_json::from_str(answer).unwrap_or_else(|_| json!({"Status": InvocationStatus::Failed}))
}

/// `by` less `margin`, or `by` itself when that would be before the clock's start.
fn earlier(by: Instant, margin: Duration) -> Instant {
    by.checked_sub(margin).unwrap_or(by)
}

/// When CloudFormation is answered FAILED if the work has not finished.
fn respond_by(deadline: Instant) -> Instant {
    earlier(deadline, DEADLINE_MARGIN)
}
