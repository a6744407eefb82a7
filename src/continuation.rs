//! A wait for the delegate that outlasts one invocation: the invocation whose time runs low
//! hands it on to a new asynchronous invocation of the function itself ([`pass_on`]) and does
//! not answer; that one takes the wait up ([`resume`]) and answers, or hands it on again.
//!
//! The payload carries the CloudFormation request (to answer it) and the operation's id; what
//! the wait is for (the revision, the configuration to commit, the answer's data) stays in the
//! delegate's record, which only the function writes. A continuation acts only while the record
//! shows that same operation still pending for that same request: otherwise a newer request took
//! over or the delegate was deleted, and it stands down, answering FAILED and writing nothing.
//! A second delivery of the same continuation finds the lease taken, or the request answered,
//! and stays silent, so the request is answered once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::classify::{CfnRequest, CONTINUATION_MARKER, CONTINUE_WAIT};
use crate::custom_resource::{self, Outcome};
use crate::model::DelegateKey;
use crate::operation::{self, Claim};
use crate::ready::Progress;
use crate::record::now_millis;
use crate::store::{handoff_holder, Item, StoreError, Waiting};
use crate::wait::{self, Wait, Waited};
use crate::Clients;

/// How long past an invocation's deadline the lease waits for the next invocation to take the
/// wait up: an asynchronous invocation usually starts within a second.
pub const HANDOFF_GRACE: Duration = Duration::from_secs(120);

/// How long before its deadline an invocation stops waiting, to hand the wait on.
pub const HANDOFF_TIME: Duration = Duration::from_secs(10);

/// What a request's wait for the delegate needs from the invocation.
#[derive(Debug, Clone)]
pub struct Waiter {
    /// How often the rollout is looked at.
    pub poll: Duration,
    /// The function's own ARN, to hand the wait on to a new invocation of itself when this
    /// one's time runs low; `None` (a direct request, a local run): the wait fails then.
    pub function_arn: Option<String>,
}

/// A wait handed on: the item as written (its lease kept for the next invocation) and how far
/// the rollout had come.
#[derive(Debug)]
pub struct Handoff {
    pub item: Item,
    pub progress: Progress,
    /// When the invocation's work must end: no Invoke attempt may still be under way then.
    pub by: Instant,
}

/// Keep `waiting` in the record for the next invocation and hold the lease for it, past
/// `deadline` (this invocation's) by [`HANDOFF_GRACE`]: the item as written.
pub async fn keep_for_next(
    c: &Clients,
    item: &Item,
    waiting: Waiting,
    deadline: Instant,
) -> Result<Item, StoreError> {
    let until = operation::epoch_ms_at(deadline) + HANDOFF_GRACE.as_millis() as u64;
    let next = item.hand_on(waiting, until);
    c.store.put(&next).await?;
    Ok(next)
}

/// The payload that hands the wait of `operation` for `req` on.
pub fn payload(req: &CfnRequest, operation: &str) -> Value {
    json!({CONTINUATION_MARKER: CONTINUE_WAIT, "Operation": operation, "Request": req.to_event()})
}

/// Hand the wait `h` on to a new invocation and answer nothing (`None`); if Lambda refuses the
/// invocation, abandon the operation (the record keeps what was committed before) and answer
/// FAILED with the reason.
pub async fn pass_on(
    c: &Clients,
    req: &CfnRequest,
    claim: &Claim,
    h: Handoff,
    waiter: &Waiter,
) -> Option<Outcome> {
    let operation = h.item.pending.clone().unwrap_or_default();
    let function = waiter.function_arn.as_deref().unwrap_or_default();
    let body = payload(req, &operation).to_string();
    match c
        .invoker
        .invoke_async(function, body.as_bytes(), h.by)
        .await
    {
        Ok(()) => {
            tracing::info!(delegate = %h.item.key, progress = %h.progress, "the wait for the delegate goes on in a new invocation, which answers CloudFormation");
            None
        }
        Err(e) => {
            tracing::error!(delegate = %h.item.key, error = %e, "the wait for the delegate could not be handed on");
            let failed = Outcome::failed(
                req,
                format!("the delegate was not ready yet ({}) and the wait could not go on in a new invocation: {e}. Check that the function's role may invoke the function itself (lambda:InvokeFunction; template.yaml grants it)", h.progress),
            );
            abandon(c, &h.item, claim, &failed).await;
            Some(failed)
        }
    }
}

/// Take up the wait of `operation` for `req`: the outcome to answer with, or `None` when this
/// invocation must not answer (another one does, or did).
pub async fn resume(
    c: &Clients,
    req: &CfnRequest,
    operation: &str,
    deadline: Instant,
    waiter: &Waiter,
) -> Option<Outcome> {
    let key = match crate::spec::parse(&req.properties) {
        Ok(spec) => spec.key(),
        Err(p) => return Some(Outcome::failed(req, p.to_string())),
    };
    let claim = Claim {
        request_id: req.request_id.clone(),
        owner: Some(custom_resource::stack_owner(req)),
        force: false,
        take_over_from: None,
    };
    let item = match take_up(c, &key, req, operation, deadline).await {
        Ok(Ok(item)) => item,
        Ok(Err(stand_down)) => return stand_down,
        Err(e) => {
            let why = format!("the wait for the delegate could not go on: {e}");
            return Some(Outcome::failed(req, why));
        }
    };
    let waiting = item.waiting.clone()?;
    let Ok(w) = serde_json::from_str::<Wait>(&waiting.wait) else {
        let why = "the wait for the delegate cannot be read back from its record";
        return Some(Outcome::failed(req, why.into()));
    };
    let stop = deadline.checked_sub(HANDOFF_TIME).unwrap_or(deadline);
    match wait::wait(c, &w, waiter.poll, stop).await {
        Waited::Ready(p) => Some(ready(c, req, &claim, &item, waiting, p).await),
        Waited::Failed(f) => {
            let failed = Outcome::failed(req, format!("the delegate is not ready: {f}"));
            abandon(c, &item, &claim, &failed).await;
            Some(failed)
        }
        Waited::OutOfTime(progress) => {
            let next = match keep_for_next(c, &item, waiting, deadline).await {
                Ok(next) => next,
                Err(e) => {
                    let why = format!("the wait for the delegate could not be handed on: {e}");
                    return Some(Outcome::failed(req, why));
                }
            };
            let h = Handoff {
                item: next,
                progress,
                by: deadline,
            };
            pass_on(c, req, &claim, h, waiter).await
        }
    }
}

/// The delegate is ready: commit what the operation put in place and answer SUCCESS.
async fn ready(
    c: &Clients,
    req: &CfnRequest,
    claim: &Claim,
    item: &Item,
    waiting: Waiting,
    p: Progress,
) -> Outcome {
    let mut data: BTreeMap<String, String> =
        serde_json::from_str(&waiting.data).unwrap_or_default();
    data.insert("RunningCount".into(), p.running.to_string());
    let physical = data
        .get("ServiceArn")
        .cloned()
        .unwrap_or_else(|| custom_resource::new_physical_id(req));
    let ok = Outcome::success(physical, data);
    match operation::commit(&c.store, item, waiting.record, claim, Some(ok.to_answer())).await {
        Ok(_) => ok,
        Err(e) => Outcome::failed(
            req,
            format!("the delegate is ready, but its record could not be committed ({e}); the configuration committed before stays the one self-healing restores: retry the request"),
        ),
    }
}

/// End the operation without committing; what was committed before stays the truth.
async fn abandon(c: &Clients, item: &Item, claim: &Claim, failed: &Outcome) {
    if let Err(e) = operation::abandon(&c.store, item, claim, Some(failed.to_answer())).await {
        tracing::error!(delegate = %item.key, error = %e, "the operation's lease could not be given back: it expires on its own");
    }
}

/// Read the delegate's record and take the lease for this invocation, if the record shows the
/// operation still pending for this request and its lease free for the taking. `Ok(Err(..))`:
/// stand down, with the answer to give (`None`: none).
async fn take_up(
    c: &Clients,
    key: &DelegateKey,
    req: &CfnRequest,
    operation: &str,
    deadline: Instant,
) -> Result<Result<Item, Option<Outcome>>, StoreError> {
    let holder = operation::fresh_id(operation);
    let until = operation::epoch_ms_at(deadline) + operation::LEASE_GRACE.as_millis() as u64;
    for _ in 0..5 {
        let item = c.store.get(key).await?;
        if let Some(stand_down) = stand_down(&item, req, operation) {
            return Ok(Err(stand_down));
        }
        let next = item.lease_to(&holder, until);
        match c.store.put(&next).await {
            Ok(()) => return Ok(Ok(next)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Err(None))
}

/// Why this continuation must not go on, if it must not: `Some(None)` to stay silent (the
/// request was answered, or another invocation carries the wait on), `Some(Some(FAILED))`
/// when the record moved on.
fn stand_down(item: &Item, req: &CfnRequest, operation: &str) -> Option<Option<Outcome>> {
    let key = &item.key;
    if item.answer_to(&req.request_id).is_some() {
        tracing::info!(delegate = %key, "the request was answered already: this continuation stays silent");
        return Some(None);
    }
    let ours = item.is_live()
        && item.pending.as_deref() == Some(operation)
        && item
            .waiting
            .as_ref()
            .is_some_and(|w| w.request_id == req.request_id);
    if !ours {
        let why = match (&item.pending, item.is_live()) {
            (_, false) => "the delegate was deleted while this request waited",
            (Some(_), true) => "a newer request took the delegate over while this one waited",
            (None, true) => "the delegate's record holds no wait of this request",
        };
        tracing::warn!(delegate = %key, reason = why, "a continuation stands down");
        let failed = format!("{why}: this request's wait ended, and nothing more was changed");
        return Some(Some(Outcome::failed(req, failed)));
    }
    let free = item
        .lease
        .as_ref()
        .is_none_or(|l| l.holder == handoff_holder(operation) || l.until_ms <= now_millis());
    if !free {
        tracing::info!(delegate = %key, "another invocation carries this wait on: this one stays silent");
        return Some(None);
    }
    None
}
