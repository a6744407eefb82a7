//! Heal: finds the delegates this function manages — every live one in the record table, or the
//! ones an ECS event or a direct call names — and repairs each toward its committed [`record`],
//! then reports (and logs, one line per delegate) what it found and what it did.
//!
//! For each delegate: take the committed record from its item (tags are never trusted), observe
//! what heal needs, plan the repair (`plan::plan_heal`) and apply it under the delegate's lease.
//! Clusters are healed concurrently; within a cluster, services are described ten at a time. A
//! heal never creates a cluster, never touches a service that is not the delegate's, never
//! restores a deleted delegate, and stands down when a stack operation holds the lease or
//! changed the record while it worked. Of a deleted delegate it removes only a service that
//! ECS says the function's role created after the Delete (a late call of a cut-off run).
//!
//! [`record`]: crate::record

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::apply::{Applier, ServiceTarget};
use crate::model::{self, string_enum, DelegateKey, OwnerLabel, Target};
use crate::observe::{self, ObserveError};
use crate::observed::{
    ObservedForHeal, ObservedSecurityGroup, ObservedService, ObservedTaskDefinition,
};
use crate::pipeline::ReconcileError;
use crate::plan::{self, Action, Backoff, HealPlan, Tombstoned};
use crate::record::{self, Record, RecordedGroups};
use crate::store::{Item, Owner, State, StoreError};
use crate::{metrics, Clients};

/// How many clusters are healed at once: enough to finish a region quickly, few enough not to
/// eat the account's ECS request rate that other tools share.
const CLUSTERS_AT_ONCE: usize = 8;

/// Time a repair of one delegate may need; a delegate is not started with less left.
const DELEGATE_TIME: Duration = Duration::from_secs(20);

/// How long after a Delete the scheduled heal still looks for a service that a late call of an
/// aborted run created: ECS may accept a deregistered revision for up to 10 minutes after its
/// deregistration, and a few heal schedules must pass after that.
const ORPHAN_WATCH: Duration = Duration::from_secs(3600);

/// Heal's settings, from the function's environment.
#[derive(Debug, Clone)]
pub struct HealSettings {
    /// A failed or crash-looping delegate is redeployed at most once per this window
    /// (`HEAL_REDEPLOY_BACKOFF_SECONDS`, default one hour).
    pub redeploy_backoff: Duration,
    /// The owner (`<stack>/<logical id>`) whose delegates this function heals (`HEAL_OWNER`);
    /// `None`: every delegate it manages. A stack's function may only act on its own cluster
    /// and family, so it must leave other stacks' delegates, which the region scan also finds,
    /// to their own functions.
    pub owner: Option<OwnerLabel>,
    /// The function's role (`FUNCTION_ROLE_ARN`): a service ECS says it created proves the
    /// function made it, where tags prove nothing. `None`: no service is proven the function's.
    pub function_role: Option<String>,
}

impl Default for HealSettings {
    fn default() -> Self {
        HealSettings {
            redeploy_backoff: Duration::from_secs(3600),
            owner: None,
            function_role: None,
        }
    }
}

impl HealSettings {
    pub fn from_env() -> Self {
        let mut s = HealSettings::default();
        if let Some(secs) = std::env::var("HEAL_REDEPLOY_BACKOFF_SECONDS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            s.redeploy_backoff = Duration::from_secs(secs);
        }
        let var = |name| {
            std::env::var(name)
                .ok()
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
        };
        s.owner = var("HEAL_OWNER").map(|o| OwnerLabel::from_tag(&o));
        s.function_role = var("FUNCTION_ROLE_ARN");
        s
    }

    /// Whether a delegate recorded with this owner is this function's to heal. The owner's
    /// label is made only when `HEAL_OWNER` is set: a scan asks this of every item.
    pub(crate) fn heals(&self, owner: Option<&Owner>) -> bool {
        self.owner
            .as_ref()
            .is_none_or(|ours| owner.map(Owner::label).as_ref() == Some(ours))
    }
}

/// Which delegates a heal covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every delegate this function manages in the region.
    All,
    Targets(Vec<Target>),
}

string_enum! {
    /// What became of one delegate.
    pub enum Outcome {
        /// Everything as recorded: nothing was written.
        Converged = "Converged",
        Repaired = "Repaired",
        /// Not a delegate this function manages (or one whose record was removed by a Delete).
        NotManaged = "NotManaged",
        /// Nothing can be done (the cluster is gone, the name is taken…): see `Found`.
        CannotHeal = "CannotHeal",
        /// A newer record appeared while healing (a stack Update): left to it.
        Superseded = "Superseded",
        /// Nothing done this time (the service is draining): the next heal looks again.
        Deferred = "Deferred",
        /// An AWS call failed: see `Error`.
        Failed = "Failed",
    }
}

impl Outcome {
    /// The delegate could not be healed: the invocation says FAILED, the metrics HealFailed.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::CannotHeal)
    }
}

/// What heal found and did for one delegate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DelegateReport {
    #[serde(rename = "Delegate")]
    pub delegate: String,
    #[serde(rename = "Outcome")]
    pub outcome: Outcome,
    #[serde(rename = "Found")]
    pub found: Vec<String>,
    #[serde(rename = "Actions")]
    pub actions: Vec<Action>,
    #[serde(rename = "Error", skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the service showed of its tasks, when heal saw it: for the metrics.
    #[serde(skip)]
    pub tasks: Option<metrics::Tasks>,
}

impl DelegateReport {
    fn new(key: &DelegateKey, outcome: Outcome, found: Vec<String>) -> Self {
        DelegateReport {
            delegate: key.to_string(),
            outcome,
            found,
            actions: vec![],
            error: None,
            tasks: None,
        }
    }

    fn one(key: &DelegateKey, outcome: Outcome, found: impl Into<String>) -> Self {
        DelegateReport::new(key, outcome, vec![found.into()])
    }

    /// A target outside the function's account and region, left alone.
    pub fn elsewhere(key: &DelegateKey, why: String) -> Self {
        DelegateReport::one(key, Outcome::NotManaged, why)
    }

    fn failed(key: &DelegateKey, error: impl std::fmt::Display) -> Self {
        DelegateReport {
            error: Some(error.to_string()),
            ..DelegateReport::new(key, Outcome::Failed, vec![])
        }
    }
}

/// The result of one heal invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct HealReport {
    pub delegates: Vec<DelegateReport>,
}

impl HealReport {
    /// FAILED when any delegate could not be healed, so that the invocation result says so.
    pub fn to_json(&self) -> Value {
        let failed = self.delegates.iter().any(|d| d.outcome.is_failure());
        json!({
            "Status": crate::model::InvocationStatus::of(failed),
            "Delegates": self.delegates,
        })
    }
}

/// A delegate to heal, with its item (absent: version 0).
#[derive(Debug, Clone)]
struct Candidate {
    target: Target,
    item: Item,
}

/// The groups this function made, by delegate.
type Groups = BTreeMap<DelegateKey, Vec<ObservedSecurityGroup>>;

/// The region's managed groups for a scheduled heal: read once, by the first delegate that
/// needs them, so that a heal where every delegate is steady reads none. A targeted heal has
/// no region read: its delegate's group is read alone, when needed.
struct RegionGroups {
    /// The delegates the read covers; `None` for a targeted heal.
    keys: Option<Vec<DelegateKey>>,
    read: tokio::sync::OnceCell<Groups>,
}

impl RegionGroups {
    /// `key`'s managed groups from the region's read (made now if it is the first asked),
    /// or `None` when the read does not cover `key`.
    async fn of(
        &self,
        c: &Clients,
        key: &DelegateKey,
    ) -> Result<Option<&[ObservedSecurityGroup]>, ObserveError> {
        let Some(keys) = &self.keys else {
            return Ok(None);
        };
        let groups = self
            .read
            .get_or_try_init(|| managed_groups(c, keys))
            .await?;
        Ok(groups.get(key).map(Vec::as_slice))
    }
}

/// Heal the delegates of `scope`. `trigger` names what started it, for the log.
pub async fn heal(
    c: &Clients,
    scope: Scope,
    settings: &HealSettings,
    trigger: &str,
    deadline: Instant,
) -> Result<HealReport, ReconcileError> {
    let all = scope == Scope::All;
    let candidates = match scope {
        Scope::All => scan(c, settings).await?,
        Scope::Targets(targets) => {
            let mut out = BTreeMap::new();
            for target in targets {
                let item = c.store.get(&target.key()).await?;
                out.insert(target.key(), Candidate { target, item });
            }
            out
        }
    };
    // One read of the region's groups pays off for many delegates; a targeted heal reads its
    // delegate's group only when it must.
    let groups = RegionGroups {
        keys: all.then(|| {
            candidates
                .iter()
                // Every delegate with a record: the groups of one that no longer uses its own
                // are deleted, and the read costs the same one call.
                .filter(|(_, cand)| cand.item.committed.is_some())
                .map(|(k, _)| k.clone())
                .collect()
        }),
        read: tokio::sync::OnceCell::new(),
    };
    let mut by_cluster: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for (key, cand) in candidates {
        by_cluster
            .entry(key.cluster().to_string())
            .or_default()
            .push(cand);
    }
    let groups = &groups;
    let mut delegates: Vec<DelegateReport> = futures::stream::iter(by_cluster.into_values())
        .map(|cands| heal_cluster(c, cands, groups, settings, all, deadline))
        .buffer_unordered(CLUSTERS_AT_ONCE)
        .collect::<Vec<Vec<DelegateReport>>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    delegates.sort_by(|a, b| a.delegate.cmp(&b.delegate));
    for d in &delegates {
        log(trigger, d);
    }
    Ok(HealReport { delegates })
}

/// Every live delegate in the record table, and those deleted within [`ORPHAN_WATCH`]; only
/// those of `settings.owner` when it is set (other functions' delegates are theirs to heal, and
/// are skipped without a word).
async fn scan(
    c: &Clients,
    settings: &HealSettings,
) -> Result<BTreeMap<DelegateKey, Candidate>, ReconcileError> {
    let mut out = BTreeMap::new();
    let now_s = record::now_millis() / 1000;
    for item in c.store.all().await? {
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable record skipped");
                continue;
            }
        };
        let watched = item
            .deleted_at()
            .is_some_and(|t| now_s.saturating_sub(t) < ORPHAN_WATCH.as_secs());
        if !(item.is_live() || watched) || !settings.heals(item.owner.as_ref()) {
            continue;
        }
        let target = Target {
            cluster: item.key.cluster().to_string(),
            service: item.key.service().to_string(),
        };
        out.insert(item.key.clone(), Candidate { target, item });
    }
    Ok(out)
}

/// The security groups this function created for the delegates that use one: one EC2 call for
/// the region rather than one a delegate. Delegates missing here have their groups read when
/// needed.
async fn managed_groups(c: &Clients, keys: &[DelegateKey]) -> Result<Groups, ObserveError> {
    let mut out: Groups = keys.iter().map(|k| (k.clone(), vec![])).collect();
    // EC2 takes at most 200 values a filter.
    for chunk in keys.chunks(200) {
        for g in observe::managed_security_groups_of(c, chunk).await? {
            if let Some(k) = g
                .tags
                .get(model::RESOURCE_TAG)
                .and_then(|k| DelegateKey::parse(k))
            {
                out.entry(k).or_default().push(g);
            }
        }
    }
    Ok(out)
}

/// Heal one cluster's candidates. `all`: the scheduled heal, which looks at recently deleted
/// delegates only for a late service, and reports them only when one runs.
async fn heal_cluster(
    c: &Clients,
    cands: Vec<Candidate>,
    groups: &RegionGroups,
    settings: &HealSettings,
    all: bool,
    deadline: Instant,
) -> Vec<DelegateReport> {
    let cluster = cands[0].target.cluster.clone();
    let names: Vec<String> = cands
        .iter()
        .map(|c| c.target.service.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let services = match observe::services(c, &cluster, &names).await {
        Ok(s) => s,
        Err(e) => {
            return cands
                .iter()
                .map(|cand| DelegateReport::failed(&cand.target.key(), &e))
                .collect()
        }
    };
    let mut out = Vec::new();
    for cand in cands {
        let key = cand.target.key();
        let service = services.as_ref().and_then(|s| s.get(&cand.target.service));
        if all && cand.item.is_tombstone() && !service.is_some_and(|s| s.is_active()) {
            continue;
        }
        // What the invocation has no time left for, the next heal does.
        if Instant::now() + DELEGATE_TIME >= deadline {
            out.push(DelegateReport::failed(
                &key,
                "not reached before the invocation's deadline: the next heal continues (raise the function's Timeout if this repeats)",
            ));
            continue;
        }
        let seen = Seen {
            service: service.cloned(),
            cluster_found: services.is_some(),
            groups,
        };
        // A deleted delegate has no figures: its alarms must not see one.
        let tasks = seen
            .service
            .as_ref()
            .filter(|_| cand.item.is_live())
            .map(tasks_of);
        let report = heal_one(c, &cand, seen, settings, deadline).await;
        let mut report = report.unwrap_or_else(|e| DelegateReport::failed(&key, e));
        report.tasks = tasks;
        out.push(report);
    }
    out
}

/// What the cluster-wide reads already saw of one delegate.
struct Seen<'a> {
    service: Option<ObservedService>,
    /// DescribeServices found the cluster.
    cluster_found: bool,
    /// The region's managed groups, when a scheduled heal needs them.
    groups: &'a RegionGroups,
}

/// Heal one delegate: take its committed record, observe, plan, repair.
async fn heal_one(
    c: &Clients,
    cand: &Candidate,
    seen: Seen<'_>,
    settings: &HealSettings,
    deadline: Instant,
) -> Result<DelegateReport, ReconcileError> {
    let key = cand.target.key();
    if cand.item.is_tombstone() {
        return tombstoned(c, cand, seen.service.as_ref(), settings, deadline).await;
    }
    let record = match committed(cand, seen.service.as_ref(), settings) {
        Ok(r) => r,
        Err(report) => return Ok(report),
    };
    let observed = observe_delegate(c, cand, record, &seen).await?;
    let backoff = Backoff {
        now: record::now_millis() / 1000,
        window: settings.redeploy_backoff.as_secs(),
    };
    let planned = match plan::plan_heal(record, &observed, backoff) {
        Ok(p) => p,
        Err(e) => {
            return Ok(DelegateReport::one(
                &key,
                Outcome::CannotHeal,
                e.to_string(),
            ))
        }
    };
    if let Some(why) = &planned.deferred {
        return Ok(DelegateReport::one(&key, Outcome::Deferred, why.clone()));
    }
    if planned.plan.actions.is_empty() && cand.item.state != State::Pending {
        return Ok(DelegateReport::new(
            &key,
            Outcome::Converged,
            planned.found(),
        ));
    }
    repair(c, cand, record, observed.service, planned, deadline).await
}

/// The committed record to heal toward. `Err`: the report when there is none this function
/// may act on now.
fn committed<'a>(
    cand: &'a Candidate,
    service: Option<&ObservedService>,
    settings: &HealSettings,
) -> Result<&'a Record, DelegateReport> {
    let key = cand.target.key();
    let item = &cand.item;
    let not_managed = |why: &str| DelegateReport::one(&key, Outcome::NotManaged, why);
    if item.version == 0 {
        return Err(not_managed(no_record(&key, service)));
    }
    if !settings.heals(item.owner.as_ref()) {
        let owner = item.owner.as_ref().map(Owner::label);
        let theirs = owner
            .as_ref()
            .map_or("no stack (a direct invocation)", OwnerLabel::as_str);
        let ours = settings.owner.as_ref().map_or("", OwnerLabel::as_str);
        let why = format!("belongs to {theirs}, not to this function's stack (HEAL_OWNER {ours}): left to its own function");
        return Err(DelegateReport::one(&key, Outcome::NotManaged, why));
    }
    if let Some(busy) = busy(cand) {
        return Err(busy);
    }
    item.committed.as_ref().ok_or_else(|| {
        not_managed("its first operation never completed: nothing was committed to restore")
    })
}

/// The report when an operation holds the delegate's lease: heal leaves it to that operation.
fn busy(cand: &Candidate) -> Option<DelegateReport> {
    let held = cand.item.held("", record::now_millis())?;
    let why = format!(
        "an operation ({}) is changing the delegate: left to it, the next heal looks again",
        held.holder
    );
    Some(DelegateReport::one(
        &cand.target.key(),
        Outcome::Superseded,
        why,
    ))
}

/// Why a delegate without an item is not healed.
fn no_record(key: &DelegateKey, service: Option<&ObservedService>) -> &'static str {
    match service {
        Some(s)
            if s.managed_by_us() && crate::record::Record::from_tags(&s.tags, None).is_some() =>
        {
            tracing::warn!(delegate = %key, "a delegate recorded in tags by an earlier version: heal leaves it alone until its stack's next Update records it in the table");
            "recorded in tags by an earlier version, which heal no longer trusts: run a stack Update to record it in the table"
        }
        Some(s) if s.managed_by_us() => {
            "no record: the delegate was deleted or never completed, nothing to resurrect"
        }
        Some(_) => "not managed by this function: ignored",
        None => "no such delegate and no record of one: ignored",
    }
}

/// What heal needs to see: the cluster (only when the service is not plainly there), the
/// recorded revision, the delegate's own group.
async fn observe_delegate(
    c: &Clients,
    cand: &Candidate,
    record: &Record,
    seen: &Seen<'_>,
) -> Result<ObservedForHeal, ObserveError> {
    let key = cand.target.key();
    let service_active = seen.service.as_ref().is_some_and(|s| s.is_active());
    let cluster_status = if service_active {
        Some(model::ClusterStatus::Active)
    } else if !seen.cluster_found {
        None
    } else {
        observe::cluster(c, &cand.target.cluster)
            .await?
            .map(|cl| cl.status)
    };
    let revision = match steady_on(record, seen.service.as_ref()) {
        Some(known) => Some(known),
        None => observe::describe_task_definition(c, &record.task_definition).await?,
    };
    let managed_security_group = match record.network.as_ref() {
        Some(n) if n.security_groups == RecordedGroups::Managed => {
            match running_in_recorded_group(record, seen.service.as_ref()) {
                Some(g) => Some(g),
                None => {
                    let read;
                    let groups = match seen.groups.of(c, &key).await? {
                        Some(g) => g,
                        None => {
                            read = observe::managed_security_groups(c, &key).await?;
                            &read[..]
                        }
                    };
                    groups.iter().find(|g| g.vpc_id == n.vpc_id).cloned()
                }
            }
        }
        _ => None,
    };
    let made = &cand.item.groups_made;
    let region = if may_have_unused(record, made) {
        seen.groups.of(c, &key).await?
    } else {
        None
    };
    let unused = region.map_or_else(Vec::new, |groups| unused_groups(record, made, seen, groups));
    Ok(ObservedForHeal {
        cluster_status,
        service: seen.service.clone(),
        revision,
        unused_security_groups: unused,
        last_redeploy: cand.item.last_redeploy_of(&record.task_definition),
        managed_security_group,
    })
}

/// Whether the function made a group for this delegate other than the one its configuration
/// uses: only then can a group be unused, and only then are the region's groups read for it.
fn may_have_unused(record: &Record, made: &[String]) -> bool {
    let current = record
        .network
        .as_ref()
        .filter(|n| n.security_groups == RecordedGroups::Managed)
        .and_then(|n| n.managed_group.as_ref());
    made.iter().any(|id| Some(id) != current)
}

/// The groups the function made for this delegate (`groups`, read by the region's scan, and
/// named in its record as made by the function) that its configuration no longer uses.
fn unused_groups(
    record: &Record,
    made: &[String],
    seen: &Seen<'_>,
    groups: &[ObservedSecurityGroup],
) -> Vec<ObservedSecurityGroup> {
    let in_use = |g: &ObservedSecurityGroup| match record.network.as_ref() {
        Some(n) => n.security_groups == RecordedGroups::Managed && g.vpc_id == n.vpc_id,
        None => false,
    };
    let service_uses = |g: &ObservedSecurityGroup| {
        seen.service
            .as_ref()
            .and_then(|s| s.network.as_ref())
            .is_some_and(|n| n.security_groups.contains(&g.id))
    };
    groups
        .iter()
        .filter(|g| !in_use(g) && !service_uses(g))
        // Tags can be put on any group: only a group the record says the function made.
        .filter(|g| made.contains(&g.id))
        .cloned()
        .collect()
}

/// A deleted delegate: nothing is restored, but a service the function's aborted run created
/// after the Delete (`plan::plan_tombstone` says how that is proven) is removed, under the lease.
async fn tombstoned(
    c: &Clients,
    cand: &Candidate,
    service: Option<&ObservedService>,
    settings: &HealSettings,
    deadline: Instant,
) -> Result<DelegateReport, ReconcileError> {
    let key = cand.target.key();
    if !settings.heals(cand.item.owner.as_ref()) {
        return Ok(DelegateReport::one(
            &key,
            Outcome::NotManaged,
            "deleted, and another stack's: left to its own function",
        ));
    }
    let action = match plan::plan_tombstone(service, settings.function_role.as_deref()) {
        Tombstoned::Nothing(why) => return Ok(DelegateReport::one(&key, Outcome::NotManaged, why)),
        Tombstoned::LeftAlone(why) => {
            tracing::warn!(delegate = %key, reason = %why, "a service of a deleted delegate's name is left alone");
            return Ok(DelegateReport::one(&key, Outcome::NotManaged, why));
        }
        Tombstoned::Remove(action) => action,
    };
    let leased = match lease(c, cand, deadline).await? {
        Ok(leased) => leased,
        Err(stood_down) => return Ok(stood_down),
    };
    let removed = Applier::new(c, deadline)
        .delete_service(&cand.target.cluster, &cand.target.service)
        .await;
    c.store.put(&leased.release()).await?;
    let mut r = DelegateReport {
        actions: vec![action.clone()],
        ..DelegateReport::one(&key, Outcome::Repaired, action.reason())
    };
    if let Err(e) = removed {
        r.outcome = Outcome::Failed;
        r.error = Some(e.to_string());
    }
    Ok(r)
}

/// Take the delegate's lease for heal, on the version read: `Err` is the report when a stack
/// operation holds it or changed the record meanwhile (heal stands down).
async fn lease(
    c: &Clients,
    cand: &Candidate,
    deadline: Instant,
) -> Result<Result<Item, DelegateReport>, ReconcileError> {
    let key = cand.target.key();
    if let Some(busy) = busy(cand) {
        return Ok(Err(busy));
    }
    let holder = crate::operation::fresh_id("heal");
    // Heal's deadline is already before the invocation's end: its lease ends with it.
    let until = crate::operation::epoch_ms_at(deadline);
    let leased = cand.item.lease_to(&holder, until);
    match c.store.put(&leased).await {
        Ok(()) => Ok(Ok(leased)),
        Err(StoreError::Conflict { .. }) => Ok(Err(DelegateReport::one(
            &key,
            Outcome::Superseded,
            "the record changed while healing (a stack operation): left to it",
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Apply a heal plan under the delegate's lease: taken on the version read, so a stack
/// operation that changed the record meanwhile wins and heal stands down. What heal put in
/// place (a re-registered revision, a new group) is committed; an operation left `pending` by
/// an aborted run is resolved, its changes undone by restoring the committed configuration.
async fn repair(
    c: &Clients,
    cand: &Candidate,
    record: &Record,
    service: Option<ObservedService>,
    planned: HealPlan,
    deadline: Instant,
) -> Result<DelegateReport, ReconcileError> {
    let key = cand.target.key();
    let found = planned.found();
    let leased = match lease(c, cand, deadline).await? {
        Ok(leased) => leased,
        Err(stood_down) => return Ok(stood_down),
    };
    let target = ServiceTarget {
        cluster: cand.target.cluster.clone(),
        record: record.clone(),
    };
    let current = service.filter(|s| s.is_active()).map(|s| s.arn);
    let result = Applier::new(c, deadline)
        .reconcile(&target, &planned.plan, "", current.as_deref())
        .await;
    let redeployed = planned.plan.actions.iter().any(Action::redeploys);
    let mut r = DelegateReport {
        actions: planned.plan.actions,
        ..DelegateReport::new(&key, Outcome::Repaired, found)
    };
    let done = match &result {
        Ok(applied) => {
            let mut next = leased.commit(applied.record.clone(), None);
            // A deleted group is no longer one to clean up: forgotten, so that the next
            // scheduled heal of a steady delegate reads no groups.
            next.groups_made
                .retain(|id| !r.actions.iter().any(|a| a.deletes_group(id)));
            if redeployed {
                next.redeployed = Some(crate::store::Redeployed {
                    at: record::now_millis() / 1000,
                    revision: applied.record.task_definition.clone(),
                });
            }
            next
        }
        Err(_) => leased.release(),
    };
    if let Err(e) = result {
        r.outcome = Outcome::Failed;
        r.error = Some(e.to_string());
    }
    if let Err(e) = c.store.put(&done).await {
        tracing::error!(delegate = %key, error = %e, repair_error = r.error.as_deref().unwrap_or("none"), "the repair's record could not be written: its lease expires on its own");
        return Err(e.into());
    }
    if r.actions.is_empty() {
        r.outcome = Outcome::Converged;
        r.found = vec![format!(
            "an operation that did not finish ({}) left nothing to undo: the committed configuration is in place",
            cand.item.pending.as_deref().unwrap_or("unknown")
        )];
    }
    Ok(r)
}

/// The committed revision, without reading it, when the service runs exactly it in a finished
/// deployment with every desired task running: a revision never changes, and a deregistered
/// one still runs and scales, so its status matters only once the service needs more (a new
/// deployment, a new service), and then heal reads it. Its status here is that assumption.
fn steady_on(record: &Record, service: Option<&ObservedService>) -> Option<ObservedTaskDefinition> {
    let s = service.filter(|s| s.is_active())?;
    let d = s.deployment.as_ref()?;
    let all_running = s.running_count == s.desired_count && d.running_count == s.desired_count;
    let ours = model::revision_name(&s.task_definition) == record.task_definition;
    (d.rolled_out() && all_running && ours).then(|| ObservedTaskDefinition {
        arn: s.task_definition.clone(),
        revision: model::revision_number(&record.task_definition),
        status: model::RevisionStatus::Active,
        doc: Value::Null,
        tags: BTreeMap::new(),
    })
}

/// The recorded managed group, without reading it, when the tasks of the service's current
/// deployment run in exactly that group: AWS refuses to delete a group that network interfaces
/// use, so it exists. Any other case (no tasks of this deployment yet, other groups, a record
/// without the id) reads the groups.
fn running_in_recorded_group(
    record: &Record,
    service: Option<&ObservedService>,
) -> Option<ObservedSecurityGroup> {
    let n = record.network.as_ref()?;
    let id = n.managed_group.as_ref()?;
    let s = service
        .filter(|s| s.is_active() && s.deployment.as_ref().is_some_and(|d| d.running_count > 0))?;
    let groups = &s.network.as_ref()?.security_groups;
    (groups.len() == 1 && groups.contains(id)).then(|| ObservedSecurityGroup {
        id: id.clone(),
        vpc_id: n.vpc_id.clone(),
        name: model::managed_security_group_name(record.service()),
        tags: BTreeMap::new(),
    })
}

/// The service's tasks as the metrics count them.
fn tasks_of(s: &ObservedService) -> metrics::Tasks {
    let rolled_out = s.deployment.as_ref().is_none_or(|d| d.rolled_out());
    metrics::Tasks {
        running: s.running_count,
        desired: s.desired_count,
        ready: s.is_active()
            && (s.desired_count == 0 || (rolled_out && s.running_count >= s.desired_count)),
    }
}

/// One structured line per delegate, so the history reads from CloudWatch Logs, and its
/// metrics.
fn log(trigger: &str, d: &DelegateReport) {
    let failed = d.outcome.is_failure();
    let repaired = d.outcome == Outcome::Repaired;
    metrics::emit(&metrics::heal_record(
        &d.delegate,
        repaired,
        failed,
        d.tasks,
        record::now_millis(),
    ));
    let found = d.found.join("; ");
    let actions = serde_json::to_string(&d.actions).unwrap_or_default();
    let outcome = d.outcome.as_str();
    let error = d.error.as_deref().unwrap_or_default();
    match d.outcome {
        Outcome::Failed | Outcome::CannotHeal => tracing::error!(
            trigger, delegate = %d.delegate, outcome, found, actions, error, "delegate heal"
        ),
        Outcome::Repaired | Outcome::Superseded | Outcome::Deferred => tracing::warn!(
            trigger, delegate = %d.delegate, outcome, found, actions, "delegate heal"
        ),
        Outcome::Converged | Outcome::NotManaged => tracing::info!(
            trigger, delegate = %d.delegate, outcome, found, "delegate heal"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_means_rolled_out_with_every_desired_task_running() {
        use crate::model::{RolloutState, ServiceStatus};
        use crate::observed::ObservedDeployment;
        let service = |status, running, desired, rollout| ObservedService {
            status,
            running_count: running,
            desired_count: desired,
            deployment: Some(ObservedDeployment {
                rollout_state: rollout,
                ..Default::default()
            }),
            ..Default::default()
        };
        let done = Some(RolloutState::Completed);
        let rolling = Some(RolloutState::InProgress);
        for (what, s, ready) in [
            (
                "running as desired",
                service(ServiceStatus::Active, 1, 1, done),
                true,
            ),
            (
                "nothing desired",
                service(ServiceStatus::Active, 0, 0, rolling),
                true,
            ),
            (
                "no rollout state",
                service(ServiceStatus::Active, 2, 2, None),
                true,
            ),
            (
                "a task missing",
                service(ServiceStatus::Active, 0, 1, done),
                false,
            ),
            (
                "still rolling out",
                service(ServiceStatus::Active, 1, 1, rolling),
                false,
            ),
            (
                "being deleted",
                service(ServiceStatus::Draining, 1, 1, done),
                false,
            ),
        ] {
            let t = tasks_of(&s);
            assert_eq!(t.ready, ready, "{what}");
            assert_eq!((t.running, t.desired), (s.running_count, s.desired_count));
        }
    }

    #[test]
    fn heal_owner_limits_heal_to_one_stacks_delegates() {
        let owner = |stack: &str| Owner {
            stack_id: format!("arn:aws:cloudformation:us-east-1:1:stack/{stack}/guid"),
            logical_id: "Delegate".into(),
        };
        let every = HealSettings::default();
        assert!(every.heals(Some(&owner("stack"))) && every.heals(None));
        let one = HealSettings {
            owner: Some(OwnerLabel::from_tag("stack/Delegate")),
            ..Default::default()
        };
        assert!(one.heals(Some(&owner("stack"))));
        assert!(!one.heals(Some(&owner("other"))));
        assert!(
            !one.heals(None),
            "a direct invocation's delegate is no stack's"
        );
    }

    /// Whether a scheduled heal must read the region's groups to find a group to delete: only
    /// when the function made one that the configuration does not use.
    #[test]
    fn only_a_group_made_and_no_longer_used_calls_for_the_groups_read() {
        use crate::model::{AssignPublicIp, LaunchType, NetworkMode};
        use crate::record::RecordedNetwork;
        let record = |groups: Option<(RecordedGroups, Option<&str>)>| Record {
            key: DelegateKey::new("prod", "harness-delegate"),
            owner: None,
            owner_stack_id: None,
            launch_type: LaunchType::Fargate,
            network_mode: NetworkMode::Awsvpc,
            desired_count: 1,
            task_definition: "harness-delegate-task-spec:1".into(),
            network: groups.map(|(security_groups, id)| RecordedNetwork {
                vpc_id: "vpc-1".into(),
                subnets: vec!["subnet-a".into()],
                security_groups,
                managed_group: id.map(String::from),
                assign_public_ip: AssignPublicIp::Disabled,
            }),
            applied_at: 0,
            user_tags: BTreeMap::new(),
            follow: None,
        };
        let managed = |id| Some((RecordedGroups::Managed, Some(id)));
        let given = Some((RecordedGroups::Given(vec!["sg-user".into()]), None));
        for (what, r, made, reads) in [
            (
                "the group it uses is the one it made",
                record(managed("sg-1")),
                vec!["sg-1"],
                false,
            ),
            (
                "it never made a group",
                record(given.clone()),
                vec![],
                false,
            ),
            ("a bridge delegate, no group", record(None), vec![], false),
            (
                "an older group beside the current one",
                record(managed("sg-2")),
                vec!["sg-1", "sg-2"],
                true,
            ),
            ("moved to given groups", record(given), vec!["sg-1"], true),
            (
                "the recorded id is unknown",
                record(Some((RecordedGroups::Managed, None))),
                vec!["sg-1"],
                true,
            ),
        ] {
            let made: Vec<String> = made.into_iter().map(String::from).collect();
            assert_eq!(may_have_unused(&r, &made), reads, "{what}");
        }
    }
}
