//! An operation on one delegate under its record: read the item, answer a request it has already
//! answered, check who may act, take the lease (waiting a bounded time for another holder's to
//! expire), and at the end commit what succeeded or abandon what did not.
//!
//! The lease expires a little after the holder's own invocation must have answered, so a holder
//! cut off by its deadline never blocks the delegate for longer than that; and whoever takes it
//! next resolves what the holder left `pending` (the committed configuration stays the truth).

use std::time::Duration;

use tokio::time::Instant;

use crate::model::DelegateKey;
use crate::record::{now_millis, Record};
use crate::spec::{Problem, Problems};
use crate::store::{Held, Item, Owner, Store, StoreError};

/// How long after the holder's deadline its lease lasts: the handler answers CloudFormation
/// that long before the invocation ends at most.
pub const LEASE_GRACE: Duration = Duration::from_secs(10);

/// Conflicting writes retried before giving up: each means another invocation wrote the item
/// in between, which a few rereads settle.
const ATTEMPTS: usize = 5;

/// Who asks, and what they may do.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The request's id (CloudFormation's RequestId; a fresh id for direct invocations).
    pub request_id: String,
    /// The stack resource asking; `None`: a direct invocation.
    pub owner: Option<Owner>,
    /// A direct request that may change a stack's delegate.
    pub force: bool,
    /// The previous owner's StackId, when a stack takes a delegate over on purpose.
    pub take_over_from: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// The delegate is not the requester's to change: its properties may be right.
    #[error("refused, nothing was changed: {}", .0.listed())]
    Refused(#[from] Problems),
    #[error("another operation ({holder}) is changing {key} and did not end in the time this one had (its lease runs {left_s} s more): retry once it has ended")]
    Busy {
        key: DelegateKey,
        holder: String,
        left_s: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How an operation starts.
#[derive(Debug)]
pub enum Start {
    /// The request was answered before: this is the answer (JSON), nothing more is done.
    Answered(String),
    /// The request is being waited for by another invocation, which answers it: nothing is
    /// done, and nothing is answered here.
    Waiting,
    /// The lease is taken; the item is the one written.
    Begun(Box<Item>),
}

/// Epoch milliseconds at `at`.
pub fn epoch_ms_at(at: Instant) -> u64 {
    let now = Instant::now();
    let ahead = at.saturating_duration_since(now).as_millis() as u64;
    now_millis() + ahead
}

/// Whether `claim` may act on the delegate of `item`. A live delegate belongs to its owner:
/// another stack is refused (same name or not) unless it names the owner in
/// `TakeOverFromStackId`; a direct request is refused unless forced.
pub fn check_claim(item: &Item, claim: &Claim) -> Result<(), Problems> {
    let Some(theirs) = item.owner.as_ref().filter(|_| item.is_live()) else {
        return Ok(());
    };
    let key = &item.key;
    match &claim.owner {
        Some(ours) if ours == theirs => Ok(()),
        Some(_) if claim.take_over_from.as_deref() == Some(theirs.stack_id.as_str()) => {
            tracing::warn!(delegate = %key, previous_owner = %theirs.stack_id, "a stack takes over another stack's delegate, as its TakeOverFromStackId asks");
            Ok(())
        }
        Some(_) => Err(Problems(vec![Problem::new(
            "ServiceName",
            format!(
                "{key} belongs to the stack {} (resource {}): use another ClusterName or ServiceName. If that stack was deleted with the delegate retained and this stack is to take it over, set TakeOverFromStackId: {}",
                theirs.stack_id, theirs.logical_id, theirs.stack_id
            ),
        )])),
        None if claim.force => {
            tracing::warn!(delegate = %key, owner = %theirs.label(), "a stack's delegate changed by a forced direct request");
            Ok(())
        }
        None => Err(Problems(vec![Problem::new(
            "ServiceName",
            format!(
                "{key} belongs to the stack resource {}: change it through that stack, or add \"Force\": true to this request (the stack's next update may undo it)",
                theirs.label()
            ),
        )])),
    }
}

/// Read the item, replay an answer, check the claim and take the lease with `begin`, which
/// turns the item read into the one to write. A lease held by another is waited for while it
/// expires before `deadline`; else [`OperationError::Busy`].
pub async fn start(
    store: &Store,
    key: &DelegateKey,
    claim: &Claim,
    deadline: Instant,
    begin: impl Fn(&Item, &str, u64) -> Item,
) -> Result<Start, OperationError> {
    let until_ms = epoch_ms_at(deadline) + LEASE_GRACE.as_millis() as u64;
    // The holder is this invocation, not the request: the same request delivered twice at
    // once must not run twice.
    let holder = fresh_id(&claim.request_id);
    let mut conflicts = 0;
    loop {
        let item = store.get(key).await?;
        if let Some(answer) = item.answer_to(&claim.request_id) {
            return Ok(Start::Answered(answer.to_string()));
        }
        if item
            .waiting
            .as_ref()
            .is_some_and(|w| w.request_id == claim.request_id)
        {
            return Ok(Start::Waiting);
        }
        check_claim(&item, claim)?;
        if let Some(held) = item.held(&holder, now_millis()) {
            wait_for(key, held, deadline).await?;
            continue;
        }
        let next = begin(&item, &holder, until_ms);
        match store.put(&next).await {
            Ok(()) => return Ok(Start::Begun(Box::new(next))),
            Err(StoreError::Conflict { .. }) if conflicts + 1 < ATTEMPTS => conflicts += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// How often a held lease is looked at again: its holder usually ends well before it expires.
const POLL: Duration = Duration::from_millis(500);

/// Wait a little for `held` to end, unless `deadline` comes first.
async fn wait_for(key: &DelegateKey, held: Held, deadline: Instant) -> Result<(), OperationError> {
    let now = now_millis();
    let left = Duration::from_millis(held.until_ms.saturating_sub(now) + 100);
    if Instant::now() + left.min(POLL) >= deadline {
        return Err(OperationError::Busy {
            key: key.clone(),
            holder: held.holder,
            left_s: left.as_secs(),
        });
    }
    tracing::info!(delegate = %key, holder = %held.holder, "waiting for another operation on the delegate to end");
    tokio::time::sleep(left.min(POLL)).await;
    Ok(())
}

/// End an operation that succeeded: `record` becomes the truth and the claim's stack its
/// owner; the answer, if given, is remembered.
pub async fn commit(
    store: &Store,
    item: &Item,
    record: Record,
    claim: &Claim,
    answer: Option<String>,
) -> Result<Item, StoreError> {
    let next = item
        .commit(record, claim.owner.clone())
        .serve(&claim.request_id, answer);
    store.put(&next).await?;
    Ok(next)
}

/// End an operation that failed: what was committed stays the truth (and its owner); the
/// answer, if given, is remembered.
pub async fn abandon(
    store: &Store,
    item: &Item,
    claim: &Claim,
    answer: Option<String>,
) -> Result<Item, StoreError> {
    let next = item
        .abandon(now_millis() / 1000)
        .serve(&claim.request_id, answer);
    store.put(&next).await?;
    Ok(next)
}

/// An id no other invocation has: the lease's holder, or a request that brings none. Lambda
/// sandboxes share pids and start counters at 0, so each process takes a random id of its own
/// once (the kernel's), and counts from there.
pub fn fresh_id(what: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PROCESS: OnceLock<String> = OnceLock::new();
    static N: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .map(|u| u.trim().to_string())
            .unwrap_or_else(|_| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                format!("{}-{nanos}", std::process::id())
            })
    });
    format!("{what}-{process}-{}", N.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(guid: &str) -> Owner {
        Owner {
            stack_id: format!("arn:aws:cloudformation:us-east-1:1:stack/stack/{guid}"),
            logical_id: "Delegate".into(),
        }
    }

    fn claim(owner: Option<Owner>) -> Claim {
        Claim {
            request_id: "r".into(),
            owner,
            force: false,
            take_over_from: None,
        }
    }

    #[test]
    fn who_may_act_on_a_delegate() {
        let key = DelegateKey::new("c", "s");
        let live = Item::absent(key.clone())
            .begin("r0", 1)
            .commit(crate::record::Record::default(), Some(owner("g1")));
        let gone = live.tombstone(0, None);
        let unowned = Item::absent(key.clone()).begin("r0", 1);
        let take_over = Claim {
            take_over_from: Some(owner("g1").stack_id),
            ..claim(Some(owner("g2")))
        };
        let forced = Claim {
            force: true,
            ..claim(None)
        };
        for (what, item, claim, allowed, says) in [
            ("its own stack", &live, claim(Some(owner("g1"))), true, ""),
            (
                "a stack of the same name, recreated (another GUID)",
                &live,
                claim(Some(owner("g2"))),
                false,
                "TakeOverFromStackId: arn:aws:cloudformation:us-east-1:1:stack/stack/g1",
            ),
            ("a take-over naming the owner", &live, take_over, true, ""),
            (
                "a direct request",
                &live,
                claim(None),
                false,
                "\"Force\": true",
            ),
            ("a forced direct request", &live, forced, true, ""),
            (
                "anyone, once the delegate is deleted",
                &gone,
                claim(Some(owner("g2"))),
                true,
                "",
            ),
            (
                "a stack adopting what a direct request installed",
                &unowned,
                claim(Some(owner("g2"))),
                true,
                "",
            ),
            (
                "nobody's delegate yet",
                &Item::absent(key.clone()),
                claim(None),
                true,
                "",
            ),
        ] {
            let got = check_claim(item, &claim);
            assert_eq!(got.is_ok(), allowed, "{what}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains(says), "{what}: {e}");
            }
        }
    }
}
