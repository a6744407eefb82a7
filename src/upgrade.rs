//! The upgrade run (`{"Action": "Upgrade"}`, the upgrade schedule's input): every delegate whose
//! record says it follows Harness (`ImageUpgrade: LatestSupported`) is moved to Harness's latest
//! supported version, gated on readiness, and rolled back when the new version does not become
//! ready; delegates pinned by `Image` are only compared, with a WARN when behind.
//!
//! For each delegate: decide ([`image::decide`]), plan ([`plan::plan_upgrade`]), take the
//! delegate's lease as an operation (heal stands down meanwhile), apply, wait until ready, then
//! commit the new revision (heal keeps it from then on) or deploy the committed one again and
//! remember the failed version, which is not tried again until Harness names a newer one.
//!
//! **How many at once:** one delegate per cluster at a time, clusters side by side. A cluster's
//! other delegates keep running a known-good version while one tries the new one, and a version
//! that fails in a cluster is not tried on its other delegates in the same run. The wait fits in
//! the invocation: a delegate is not started without [`LEAST_TIME`] left, and its new version
//! must be ready [`ROLLBACK_TIME`] before the invocation ends; a delegate not reached is
//! reported Skipped and upgraded by the next run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::apply::{Applied, Applier, ServiceTarget};
use crate::harness::{DelegateVersion, HarnessError, LatestSupported};
use crate::heal::{HealSettings, Scope};
use crate::image::{self, Decision, Follow};
use crate::model::{string_enum, DelegateKey, Target};
use crate::observe;
use crate::operation::{self, Claim};
use crate::pipeline::ReconcileError;
use crate::plan::{self, Action, DeleteAction};
use crate::record::{self, Record};
use crate::store::Item;
use crate::wait::{self, Wait, Waited};
use crate::{ready, task_definition, Clients};

const CLUSTERS_AT_ONCE: usize = 8;

/// What the rollback keeps of the invocation: deploying the committed revision again and
/// seeing it come back.
pub const ROLLBACK_TIME: Duration = Duration::from_secs(90);

/// An upgrade is not started with less left: the new version needs time to start and pass its
/// health check, and the rollback its own.
pub const LEAST_TIME: Duration = Duration::from_secs(180);

string_enum! {
    /// What an upgrade run did with one delegate.
    pub enum Outcome {
        /// It runs Harness's latest supported version, or a newer one.
        UpToDate = "UpToDate",
        Upgraded = "Upgraded",
        /// The new version did not become ready: the committed one runs again.
        RolledBack = "RolledBack",
        /// Nothing was done: see `Reason`.
        Skipped = "Skipped",
        /// An AWS call failed: see `Reason`.
        Failed = "Failed",
    }
}

/// One delegate's result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DelegateUpgrade {
    #[serde(rename = "Delegate")]
    pub delegate: String,
    #[serde(rename = "Outcome")]
    pub outcome: Outcome,
    #[serde(rename = "RunningVersion", skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
    #[serde(
        rename = "LatestSupportedVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub latest: Option<String>,
    #[serde(rename = "Reason")]
    pub reason: String,
    #[serde(rename = "Actions", skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// Pinned by `Image` and older than Harness's latest supported version.
    #[serde(skip)]
    pub behind: bool,
}

/// The result of one upgrade run.
#[derive(Debug, Clone, PartialEq)]
pub struct UpgradeReport {
    pub delegates: Vec<DelegateUpgrade>,
}

impl UpgradeReport {
    /// FAILED when a delegate's upgrade failed or was rolled back: someone should look.
    pub fn to_json(&self) -> Value {
        let failed = self
            .delegates
            .iter()
            .any(|d| matches!(d.outcome, Outcome::Failed | Outcome::RolledBack));
        json!({
            "Status": crate::model::InvocationStatus::of(failed),
            "Delegates": self.delegates,
        })
    }
}

/// Harness's answer for one key, manager and account.
type Answers = BTreeMap<(String, String, String), Result<LatestSupported, HarnessError>>;

fn asked(f: &Follow) -> (String, String, String) {
    (
        f.api_key_secret.clone(),
        f.manager.clone(),
        f.account_id.clone(),
    )
}

/// Run the upgrade for the delegates of `scope` that this function heals.
pub async fn upgrade(
    c: &Clients,
    scope: Scope,
    settings: &HealSettings,
    poll: Duration,
    deadline: Instant,
) -> Result<UpgradeReport, ReconcileError> {
    let items = candidates(c, scope, settings).await?;
    // One question per key, manager and account, however many delegates share them.
    let mut answers = Answers::new();
    for f in items.iter().filter_map(followed) {
        if let std::collections::btree_map::Entry::Vacant(v) = answers.entry(asked(f)) {
            let latest = c
                .harness
                .latest(&f.api_key_secret, &f.manager, &f.account_id)
                .await;
            v.insert(latest);
        }
    }
    let mut by_cluster: BTreeMap<String, Vec<Item>> = BTreeMap::new();
    for item in items {
        by_cluster
            .entry(item.key.cluster().to_string())
            .or_default()
            .push(item);
    }
    let answers = &answers;
    let mut delegates: Vec<DelegateUpgrade> = futures::stream::iter(by_cluster.into_values())
        .map(|items| upgrade_cluster(c, items, answers, poll, deadline))
        .buffer_unordered(CLUSTERS_AT_ONCE)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    delegates.sort_by(|a, b| a.delegate.cmp(&b.delegate));
    for d in &delegates {
        log(d);
    }
    Ok(UpgradeReport { delegates })
}

/// What the image of a committed delegate follows, if the stack gave a key.
fn followed(item: &Item) -> Option<&Follow> {
    item.committed.as_ref()?.follow.as_ref()
}

/// The live, committed delegates of `scope` that this function heals and that gave a key.
async fn candidates(
    c: &Clients,
    scope: Scope,
    settings: &HealSettings,
) -> Result<Vec<Item>, ReconcileError> {
    let items: Vec<Item> = match scope {
        Scope::All => c
            .store
            .all()
            .await?
            .into_iter()
            .filter_map(|i| {
                i.map_err(|e| tracing::warn!(error = %e, "unreadable record skipped"))
                    .ok()
            })
            .collect(),
        Scope::Targets(targets) => {
            let mut out = vec![];
            for t in targets {
                out.push(c.store.get(&t.key()).await?);
            }
            out
        }
    };
    Ok(items
        .into_iter()
        .filter(|i| i.is_live() && followed(i).is_some())
        .filter(|i| settings.heals(i.owner.as_ref()))
        .collect())
}

/// One cluster's delegates, one after another; a version that fails on one is not tried on
/// the others in this run.
async fn upgrade_cluster(
    c: &Clients,
    items: Vec<Item>,
    answers: &Answers,
    poll: Duration,
    deadline: Instant,
) -> Vec<DelegateUpgrade> {
    let not_asked = HarnessError::Unavailable("not asked".into());
    let mut failed_here: BTreeSet<String> = BTreeSet::new();
    let mut out = vec![];
    for item in items {
        let Some(f) = followed(&item) else { continue };
        let latest = answers
            .get(&asked(f))
            .map(|a| a.as_ref())
            .unwrap_or(Err(&not_asked));
        let mut report = DelegateUpgrade {
            delegate: item.key.to_string(),
            outcome: Outcome::Skipped,
            running: f.running().map(|v| v.to_string()),
            latest: latest.ok().map(|l| f.image_of(l).1.to_string()),
            reason: String::new(),
            actions: vec![],
            behind: false,
        };
        match image::decide(f, latest, item.failed_version.as_deref()) {
            Decision::UpToDate => {
                report.outcome = Outcome::UpToDate;
                report.reason = "runs Harness's latest supported version (or a newer one)".into();
            }
            Decision::Behind => {
                report.behind = true;
                report.reason = format!(
                    "ImageUpgrade is Off: {} is pinned, older than Harness's latest supported version; remove Image (or set ImageUpgrade to LatestSupported) to keep it current",
                    f.image
                );
            }
            Decision::Skip(why) => report.reason = why,
            Decision::Upgrade { image, to } if failed_here.contains(&to.to_string()) => {
                report.reason = format!("{to} failed on another delegate of this cluster in this run: {image} is not tried here");
            }
            Decision::Upgrade { image, to } => {
                let step = Step {
                    c,
                    item: &item,
                    poll,
                    deadline,
                };
                step.run(&image, &to, &mut report).await;
                if report.outcome == Outcome::RolledBack {
                    failed_here.insert(to.to_string());
                }
            }
        }
        out.push(report);
    }
    out
}

/// One delegate's upgrade.
struct Step<'a> {
    c: &'a Clients,
    item: &'a Item,
    poll: Duration,
    deadline: Instant,
}

impl Step<'_> {
    fn key(&self) -> &DelegateKey {
        &self.item.key
    }

    fn target(&self) -> Target {
        Target {
            cluster: self.key().cluster().to_string(),
            service: self.key().service().to_string(),
        }
    }

    /// Upgrade to `image` (version `to`), filling in `report`.
    async fn run(&self, image: &str, to: &DelegateVersion, report: &mut DelegateUpgrade) {
        if let Some(why) = self.not_now() {
            report.reason = why;
            return;
        }
        let (record, plan, revision_arn, service_arn) = match self.prepare(image, to).await {
            Ok(Ok(p)) => p,
            Ok(Err(why)) => {
                report.reason = why;
                return;
            }
            Err(e) => {
                report.outcome = Outcome::Failed;
                report.reason = e.to_string();
                return;
            }
        };
        report.actions = plan.actions.clone();
        let claim = Claim {
            request_id: operation::fresh_id("upgrade"),
            owner: self.item.owner.clone(),
            force: false,
            take_over_from: None,
        };
        let begun = match self.begin(&claim).await {
            Ok(item) => item,
            Err(why) => {
                report.reason = why;
                report.actions.clear();
                return;
            }
        };
        let done = self.apply_and_wait(&record, &plan, &service_arn, to).await;
        let ended = match done {
            Ok(applied) => self.kept(&begun, applied, &claim, report).await,
            Err(Unready::NotApplied(why)) => self.not_applied(&begun, why, report).await,
            Err(Unready::NotReady(not_ready)) => {
                let back = Back {
                    record: &record,
                    revision_arn: &revision_arn,
                    service_arn: &service_arn,
                    to,
                };
                self.rolled_back(&begun, back, not_ready, report).await
            }
        };
        if let Err(e) = ended {
            report.outcome = Outcome::Failed;
            report.reason = format!("{}; the record could not be written ({e}): its lease expires on its own, and heal restores the committed configuration", report.reason);
        }
    }

    /// Why the delegate is not upgraded now, if it is not.
    fn not_now(&self) -> Option<String> {
        if let Some(held) = self.item.held("", record::now_millis()) {
            return Some(format!(
                "an operation ({}) is changing the delegate: the next upgrade run looks again",
                held.holder
            ));
        }
        if Instant::now() + LEAST_TIME + ROLLBACK_TIME >= self.deadline {
            return Some("not reached before the invocation's time ran short: the next upgrade run continues (raise the function's Timeout if this repeats)".into());
        }
        None
    }

    /// The committed record, the upgrade's plan, the committed revision's ARN and the
    /// service's; `Ok(Err)`: why the delegate is not upgraded now.
    #[allow(clippy::type_complexity)]
    async fn prepare(
        &self,
        image: &str,
        to: &DelegateVersion,
    ) -> Result<Result<(Record, plan::Plan, String, String), String>, ReconcileError> {
        let Some(record) = self.item.committed.clone() else {
            return Ok(Err("nothing committed".into()));
        };
        let t = self.target();
        let services =
            observe::services(self.c, &t.cluster, std::slice::from_ref(&t.service)).await?;
        let service = services.as_ref().and_then(|s| s.get(&t.service));
        let Some(revision) =
            observe::describe_task_definition(self.c, &record.task_definition).await?
        else {
            return Ok(Err(format!("the committed revision {} is gone: heal registers it again first; the next upgrade run looks again", record.task_definition)));
        };
        Ok(
            plan::plan_upgrade(&record, &revision, service, image, to).map(|plan| {
                let arn = service.map(|s| s.arn.clone()).unwrap_or_default();
                (record, plan, revision.arn.clone(), arn)
            }),
        )
    }

    /// Take the delegate's lease as an operation (the item goes `pending`): heal leaves it
    /// alone until the upgrade ends. Only on the version this run decided on: a record that
    /// changed meanwhile (a stack request, another run) is left to the next run. `Err`: why
    /// it could not be taken.
    async fn begin(&self, claim: &Claim) -> Result<Item, String> {
        let changed = "the delegate's record changed since this run read it (a stack request, or another upgrade run): the next upgrade run looks again";
        let fresh = self
            .c
            .store
            .get(self.key())
            .await
            .map_err(|e| e.to_string())?;
        if fresh.version != self.item.version {
            return Err(changed.into());
        }
        if let Some(held) = fresh.held("", record::now_millis()) {
            return Err(format!(
                "an operation ({}) is changing the delegate: the next upgrade run looks again",
                held.holder
            ));
        }
        let holder = operation::fresh_id(&claim.request_id);
        let next = fresh.begin(&holder, operation::epoch_ms_at(self.deadline) + 10_000);
        match self.c.store.put(&next).await {
            Ok(()) => Ok(next),
            Err(crate::store::StoreError::Conflict { .. }) => Err(changed.into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Register and deploy the new revision, then wait until it is ready; `Err`: it could not
    /// be put in place (apply undid its part), or it did not become ready.
    async fn apply_and_wait(
        &self,
        record: &Record,
        plan: &plan::Plan,
        service_arn: &str,
        to: &DelegateVersion,
    ) -> Result<Applied, Unready> {
        let mut upgraded = plan.desired.record.clone();
        upgraded.applied_at = record::now_millis();
        let target = ServiceTarget {
            cluster: self.key().cluster().to_string(),
            record: upgraded,
        };
        let stop = self
            .deadline
            .checked_sub(ROLLBACK_TIME)
            .unwrap_or(self.deadline);
        let applied = Applier::new(self.c, stop)
            .reconcile(&target, plan, "", Some(service_arn))
            .await
            .map_err(|e| Unready::NotApplied(format!("{to} could not be put in place: {e}")))?;
        let manager = record
            .follow
            .as_ref()
            .map(|f| f.manager.as_str())
            .unwrap_or_default();
        let w = self.wait_for(
            &applied.task_definition_arn,
            &plan.desired.task_definition,
            manager,
            record.desired_count,
            stop,
        );
        let (why, its_own) = match wait::wait(self.c, &w, self.poll, stop).await {
            Waited::Ready(_) => return Ok(applied),
            Waited::Failed(f) => (
                format!("{to} did not become ready: {f}"),
                f.kind == ready::FailureKind::Revision,
            ),
            Waited::OutOfTime(p) => (
                format!(
                    "{to} was not ready before the upgrade's time in this invocation ran out ({p})"
                ),
                false,
            ),
        };
        Err(Unready::NotReady(NotReady {
            why,
            registered: applied.task_definition_arn,
            its_own,
        }))
    }

    fn wait_for(
        &self,
        revision: &str,
        doc: &Value,
        manager: &str,
        desired: i32,
        stop: Instant,
    ) -> Wait {
        let since_ms = record::now_millis();
        Wait {
            target: self.target(),
            expect: ready::Expect {
                revision: revision.to_string(),
                desired,
                health_check: task_definition::has_health_check(doc),
                since_ms,
                hints: ready::Hints::of_document(doc, manager),
            },
            ready_by_ms: operation::epoch_ms_at(stop),
        }
    }

    /// The new version is ready: commit it.
    async fn kept(
        &self,
        begun: &Item,
        applied: Applied,
        claim: &Claim,
        report: &mut DelegateUpgrade,
    ) -> Result<(), crate::store::StoreError> {
        let image = applied
            .record
            .follow
            .as_ref()
            .map(|f| f.image.clone())
            .unwrap_or_default();
        operation::commit(&self.c.store, begun, applied.record, claim, None).await?;
        report.outcome = Outcome::Upgraded;
        report.running = report.latest.clone();
        report.reason = format!("{image} is ready and committed: heal keeps it");
        Ok(())
    }

    /// The new version did not become ready: deploy the committed revision again, wait for it
    /// while time allows, retire the new revision and remember the failed version.
    async fn rolled_back(
        &self,
        begun: &Item,
        back: Back<'_>,
        not_ready: NotReady,
        report: &mut DelegateUpgrade,
    ) -> Result<(), crate::store::StoreError> {
        let t = self.target();
        let failed = back.to.to_string();
        let plan = plan::plan_rollback(back.record, back.revision_arn, &t.service, &failed);
        let mut applier = Applier::new(self.c, self.deadline);
        let target = ServiceTarget {
            cluster: t.cluster.clone(),
            record: back.record.clone(),
        };
        let redeployed = applier
            .reconcile(&target, &plan, "", Some(back.service_arn))
            .await;
        let redeployed_ok = redeployed.is_ok();
        report.actions.extend(plan.actions.clone());
        let back_state = match redeployed {
            Err(e) => format!(
                "the committed revision could not be deployed again ({e}): heal restores it"
            ),
            Ok(_) => {
                let w = self.wait_for(
                    back.revision_arn,
                    &Value::Null,
                    "",
                    back.record.desired_count,
                    self.deadline,
                );
                match wait::wait(self.c, &w, self.poll, self.deadline).await {
                    Waited::Ready(_) => format!("{} runs again", back.record.task_definition),
                    _ => format!(
                        "{} is deployed again; heal watches it come back",
                        back.record.task_definition
                    ),
                }
            }
        };
        let mut next = begun.abandon(record::now_millis() / 1000);
        if not_ready.its_own {
            next.failed_version = Some(failed.clone());
        }
        self.c.store.put(&next).await?;
        if redeployed_ok {
            self.retire(not_ready.registered).await;
        }
        report.outcome = Outcome::RolledBack;
        report.running = begun
            .committed
            .as_ref()
            .and_then(|r| r.follow.as_ref())
            .and_then(|f| f.running())
            .map(|v| v.to_string());
        let again = if not_ready.its_own {
            format!("{failed} is not tried again until Harness publishes a newer version")
        } else {
            format!("the failure was not {failed}'s own, so the next upgrade run tries it again")
        };
        report.reason = format!("{}; rolled back: {back_state}; {again}", not_ready.why);
        Ok(())
    }

    /// The new version could not be put in place (apply removed what it made): the committed
    /// configuration stays, the lease is given back.
    async fn not_applied(
        &self,
        begun: &Item,
        why: String,
        report: &mut DelegateUpgrade,
    ) -> Result<(), crate::store::StoreError> {
        self.c
            .store
            .put(&begun.abandon(record::now_millis() / 1000))
            .await?;
        report.outcome = Outcome::Failed;
        report.reason =
            format!("{why}; the committed revision stays; the next upgrade run tries again");
        Ok(())
    }

    /// Deregister the failed version's revision, which the service no longer runs. A failure
    /// is logged and left: the revision is only clutter.
    async fn retire(&self, arn: String) {
        let actions = [DeleteAction::DeregisterTaskDefinition {
            arn: arn.clone(),
            reason: "the upgrade it was registered for was rolled back".into(),
        }];
        let mut applier = Applier::new(self.c, self.deadline);
        if let Err(e) = applier.delete(self.key().cluster(), &actions).await {
            tracing::warn!(delegate = %self.key(), revision = %arn, error = %e, "the failed version's revision could not be deregistered: it stays registered");
        }
    }
}

/// What a rollback returns to.
struct Back<'a> {
    record: &'a Record,
    revision_arn: &'a str,
    service_arn: &'a str,
    to: &'a DelegateVersion,
}

/// Why the new version is not kept.
enum Unready {
    /// It could not be put in place; apply removed what it made, the service is unchanged.
    NotApplied(String),
    /// It was deployed and did not become ready.
    NotReady(NotReady),
}

struct NotReady {
    why: String,
    /// Its revision, deployed.
    registered: String,
    /// The version itself failed (its tasks, its deployment), not what is around it: it is
    /// remembered, and not tried again.
    its_own: bool,
}

/// One line per delegate: the running and latest supported versions and what happened. A
/// pinned delegate behind Harness gets a WARN to build an alarm on.
fn log(d: &DelegateUpgrade) {
    let running = d.running.as_deref().unwrap_or("unknown");
    let latest = d.latest.as_deref().unwrap_or("unknown");
    let outcome = d.outcome.as_str();
    let version = |v: &Option<String>| v.as_deref().and_then(DelegateVersion::parse);
    let behind = match (version(&d.running), version(&d.latest)) {
        (Some(r), Some(l)) => Some(r.cmp_build(&l).is_lt()),
        _ => None,
    };
    let failed = matches!(d.outcome, Outcome::Failed | Outcome::RolledBack);
    crate::metrics::emit(&crate::metrics::upgrade_record(
        &d.delegate,
        behind,
        failed,
        record::now_millis(),
    ));
    match d.outcome {
        Outcome::Failed | Outcome::RolledBack => {
            tracing::error!(trigger = "Upgrade", delegate = %d.delegate, outcome, running_version = %running, latest_supported_version = %latest, reason = %d.reason, "delegate not upgraded")
        }
        _ if d.behind => {
            tracing::warn!(trigger = "Upgrade", delegate = %d.delegate, outcome, running_version = %running, latest_supported_version = %latest, reason = %d.reason, "delegate behind Harness's latest supported version ({running} < {latest})")
        }
        _ => {
            tracing::info!(trigger = "Upgrade", delegate = %d.delegate, outcome, running_version = %running, latest_supported_version = %latest, reason = %d.reason, "delegate upgrade")
        }
    }
}
