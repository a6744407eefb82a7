//! Heal: finds the delegates this function manages — every one in the region by their tags, or
//! the ones an ECS event or a direct call names — and repairs each toward its [`record`], then
//! reports (and logs, one line per delegate) what it found and what it did.
//!
//! Clusters are healed concurrently; within a cluster, services are described ten at a time. A
//! heal never creates a cluster, never touches a service that is not the delegate's, and stands
//! down when a newer record appears while it works (a stack Update in progress).
//!
//! [`record`]: crate::record

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::apply::{Applier, ServiceTarget};
use crate::observe::{self, ObserveError, ObservedForHeal, ObservedService};
use crate::plan::{self, Action};
use crate::record::{self, Record, RecordedGroups};
use crate::spec::cluster_short_name;
use crate::Clients;

/// How many clusters are healed at once: enough to finish a region quickly, few enough not to
/// eat the account's ECS request rate that other tools share.
const CLUSTERS_AT_ONCE: usize = 8;

/// Time a repair of one delegate may need; a delegate is not started with less left.
const DELEGATE_TIME: Duration = Duration::from_secs(20);

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
    pub owner: Option<String>,
}

impl Default for HealSettings {
    fn default() -> Self {
        HealSettings {
            redeploy_backoff: Duration::from_secs(3600),
            owner: None,
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
        s.owner = std::env::var("HEAL_OWNER")
            .ok()
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty());
        s
    }

    /// Whether a delegate recorded with this owner is this function's to heal.
    fn heals(&self, owner: Option<&str>) -> bool {
        self.owner.as_deref().is_none_or(|ours| owner == Some(ours))
    }
}

/// One delegate to heal: a cluster (name or ARN) and a service name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub cluster: String,
    pub service: String,
}

impl Target {
    pub fn key(&self) -> String {
        format!("{}/{}", cluster_short_name(&self.cluster), self.service)
    }
}

/// Which delegates a heal covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every delegate this function manages in the region.
    All,
    Targets(Vec<Target>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Everything as recorded: nothing was written.
    Converged,
    Repaired,
    /// Not a delegate this function manages (or one whose record was removed by a Delete).
    NotManaged,
    /// Nothing can be done (the cluster is gone, the name is taken…): see `Found`.
    CannotHeal,
    /// A newer record appeared while healing (a stack Update): left to it.
    Superseded,
    /// Nothing done this time (the service is draining): the next heal looks again.
    Deferred,
    /// An AWS call failed: see `Error`.
    Failed,
}

/// What heal found and did for one delegate.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
}

impl DelegateReport {
    fn new(delegate: String, outcome: Outcome, found: Vec<String>) -> Self {
        DelegateReport {
            delegate,
            outcome,
            found,
            actions: vec![],
            error: None,
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
        let failed = self
            .delegates
            .iter()
            .any(|d| matches!(d.outcome, Outcome::Failed | Outcome::CannotHeal));
        json!({
            "Status": if failed { "FAILED" } else { "SUCCESS" },
            "Delegates": self.delegates,
        })
    }
}

/// A record found for a delegate, and where.
#[derive(Debug, Clone)]
struct Found {
    record: Record,
    /// The revision it was read from; `None`: the service's tags.
    revision: Option<String>,
}

/// A delegate to heal, with what discovery already knows of it.
#[derive(Debug, Clone, Default)]
struct Candidate {
    cluster: String,
    service: String,
    /// Records read from revisions' tags by the region scan (possibly stale: confirmed later).
    scanned: Vec<Found>,
    /// The scan found nothing else: look the delegate's revisions up by its tags if needed.
    look_up: bool,
}

/// Heal the delegates of `scope`. `trigger` names what started it, for the log.
pub async fn heal(
    c: &Clients,
    scope: Scope,
    settings: &HealSettings,
    trigger: &str,
    deadline: Instant,
) -> Result<HealReport, ObserveError> {
    let candidates = match scope {
        Scope::All => scan(c, settings).await?,
        Scope::Targets(targets) => targets
            .into_iter()
            .map(|t| {
                (
                    t.key(),
                    Candidate {
                        cluster: t.cluster,
                        service: t.service,
                        scanned: vec![],
                        look_up: true,
                    },
                )
            })
            .collect(),
    };
    let groups = managed_groups(c, &candidates).await?;
    let mut by_cluster: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for cand in candidates.into_values() {
        by_cluster
            .entry(cluster_short_name(&cand.cluster).to_string())
            .or_default()
            .push(cand);
    }
    let groups = &groups;
    let mut delegates: Vec<DelegateReport> = futures::stream::iter(by_cluster.into_values())
        .map(|cands| heal_cluster(c, cands, groups, settings, deadline))
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

/// Every delegate with a record in the region, from the tags of its revisions and service;
/// only those of `settings.owner` when it is set (other functions' delegates are theirs to
/// heal, and are skipped without a read or a word).
async fn scan(
    c: &Clients,
    settings: &HealSettings,
) -> Result<BTreeMap<String, Candidate>, ObserveError> {
    let mut out: BTreeMap<String, Candidate> = BTreeMap::new();
    let resources =
        observe::tagged_resources(c, &["ecs:task-definition", "ecs:service"], None).await?;
    for (arn, tags) in resources {
        let Some((cluster, service)) = tags
            .get(crate::RESOURCE_TAG)
            .and_then(|k| k.split_once('/'))
        else {
            continue;
        };
        if !settings.heals(tags.get(crate::OWNER_TAG).map(String::as_str)) {
            continue;
        }
        let revision = arn
            .contains(":task-definition/")
            .then(|| record::revision_name(&arn).to_string());
        let record = match Record::from_tags(&tags, revision.as_deref()) {
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                tracing::warn!(resource = %arn, error = %e, "unreadable record skipped");
                None
            }
            None => None,
        };
        // Services show up here for their key; their record is read from DescribeServices.
        let Some(record) = record else { continue };
        let cand = out
            .entry(format!("{cluster}/{service}"))
            .or_insert_with(|| Candidate {
                cluster: cluster.to_string(),
                service: service.to_string(),
                scanned: vec![],
                look_up: false,
            });
        if revision.is_some() {
            cand.scanned.push(Found {
                record,
                revision: Some(arn),
            });
        }
    }
    Ok(out)
}

/// The security groups this function created for the scanned delegates that use one, by
/// delegate key: one EC2 call for the region rather than one a delegate. Delegates missing here
/// have their groups read when needed.
async fn managed_groups(
    c: &Clients,
    candidates: &BTreeMap<String, Candidate>,
) -> Result<BTreeMap<String, Vec<observe::ObservedSecurityGroup>>, ObserveError> {
    let keys: Vec<String> = candidates
        .iter()
        .filter(|(_, cand)| {
            cand.scanned.iter().any(|f| {
                f.record
                    .network
                    .as_ref()
                    .is_some_and(|n| n.security_groups == RecordedGroups::Managed)
            })
        })
        .map(|(k, _)| k.clone())
        .collect();
    let mut out: BTreeMap<String, Vec<observe::ObservedSecurityGroup>> =
        keys.iter().map(|k| (k.clone(), vec![])).collect();
    // EC2 takes at most 200 values a filter.
    for chunk in keys.chunks(200) {
        for g in observe::managed_security_groups_of(c, chunk).await? {
            if let Some(k) = g.tags.get(crate::RESOURCE_TAG).cloned() {
                out.entry(k).or_default().push(g);
            }
        }
    }
    Ok(out)
}

async fn heal_cluster(
    c: &Clients,
    cands: Vec<Candidate>,
    groups: &BTreeMap<String, Vec<observe::ObservedSecurityGroup>>,
    settings: &HealSettings,
    deadline: Instant,
) -> Vec<DelegateReport> {
    let cluster = cands[0].cluster.clone();
    let names: Vec<String> = cands
        .iter()
        .map(|c| c.service.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let services = match observe::services(c, &cluster, &names).await {
        Ok(s) => s,
        Err(e) => {
            return cands
                .iter()
                .map(|cand| failed(key_of(cand), &e.to_string()))
                .collect()
        }
    };
    let mut out = Vec::new();
    for cand in cands {
        // What the invocation has no time left for, the next heal does.
        if Instant::now() + DELEGATE_TIME >= deadline {
            out.push(failed(
                key_of(&cand),
                "not reached before the invocation's deadline: the next heal continues (raise the function's Timeout if this repeats)",
            ));
            continue;
        }
        let service = services
            .as_ref()
            .and_then(|s| s.get(&cand.service))
            .cloned();
        let key = key_of(&cand);
        let report = match heal_one(
            c,
            &cand,
            service,
            services.is_some(),
            groups.get(&key).map(Vec::as_slice),
            settings,
            deadline,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => failed(key, &e),
        };
        out.push(report);
    }
    out
}

/// The newest record; among records of one converge (a revision heal registered again carries
/// its original's time) the one naming the latest revision, so that the copy is not copied again.
fn newest(found: Vec<Found>) -> Option<Found> {
    found.into_iter().max_by_key(|f| {
        (
            f.record.applied_at,
            revision_number(&f.record.task_definition),
        )
    })
}

/// `family:7` → 7.
fn revision_number(task_definition: &str) -> u64 {
    task_definition
        .rsplit_once(':')
        .and_then(|(_, r)| r.parse().ok())
        .unwrap_or(0)
}

fn key_of(cand: &Candidate) -> String {
    format!("{}/{}", cluster_short_name(&cand.cluster), cand.service)
}

fn failed(key: String, error: &str) -> DelegateReport {
    DelegateReport {
        error: Some(error.to_string()),
        ..DelegateReport::new(key, Outcome::Failed, vec![])
    }
}

/// Heal one delegate. `cluster_found`: DescribeServices found the cluster.
async fn heal_one(
    c: &Clients,
    cand: &Candidate,
    service: Option<ObservedService>,
    cluster_found: bool,
    groups: Option<&[observe::ObservedSecurityGroup]>,
    settings: &HealSettings,
    deadline: Instant,
) -> Result<DelegateReport, String> {
    let key = key_of(cand);
    let report =
        |outcome, found: &str| DelegateReport::new(key.clone(), outcome, vec![found.to_string()]);

    // The record: the newest of the service's and its revisions'.
    let mut found: Vec<Found> = cand.scanned.clone();
    let mut unreadable = None;
    if let Some(s) = &service {
        match Record::from_tags(&s.tags, None) {
            Some(Ok(record)) => found.push(Found {
                record,
                revision: None,
            }),
            Some(Err(e)) => unreadable = Some(e),
            None => {}
        }
    }
    if found.is_empty() && cand.look_up {
        let resources = observe::tagged_resources(c, &["ecs:task-definition"], Some(&key))
            .await
            .map_err(|e| e.to_string())?;
        for (arn, tags) in resources {
            if let Some(Ok(record)) = Record::from_tags(&tags, Some(record::revision_name(&arn))) {
                found.push(Found {
                    record,
                    revision: Some(arn),
                });
            }
        }
    }
    if found.is_empty() {
        if let Some(e) = unreadable {
            return Ok(report(Outcome::CannotHeal, &e.to_string()));
        }
    }
    let Some(chosen) = newest(found) else {
        let why = match &service {
            Some(s) if s.managed_by_us() && s.status == "ACTIVE" => "managed by this function but has no record yet (installed by an earlier version): run a stack Update or a direct Reconcile to record it",
            Some(s) if s.managed_by_us() => "no record: the delegate was deleted, nothing to resurrect",
            Some(_) => "not managed by this function: ignored",
            None => "no such delegate and no record of one: ignored",
        };
        return Ok(report(Outcome::NotManaged, why));
    };
    let record = chosen.record;
    if !settings.heals(record.owner.as_deref()) {
        let theirs = record
            .owner
            .as_deref()
            .unwrap_or("no stack (a direct invocation)");
        return Ok(report(
            Outcome::NotManaged,
            &format!(
                "belongs to {theirs}, not to this function's stack (HEAL_OWNER {}): left to its own function",
                settings.owner.as_deref().unwrap_or_default()
            ),
        ));
    }

    // What heal needs to see: the cluster (only when the service is not plainly there), the
    // recorded revision, the delegate's own group.
    let service_active = service.as_ref().is_some_and(|s| s.status == "ACTIVE");
    let cluster_status = if service_active {
        Some("ACTIVE".to_string())
    } else if !cluster_found {
        None
    } else {
        observe::cluster(c, &cand.cluster)
            .await
            .map_err(|e| e.to_string())?
            .map(|cl| cl.status)
    };
    let revision = observe::describe_task_definition(c, &record.task_definition)
        .await
        .map_err(|e| e.to_string())?;
    // A record read from a revision by the scan is confirmed on the revision itself: the
    // tagging index lags, and a Delete removes the record first.
    if let Some(arn) = &chosen.revision {
        let still = revision
            .as_ref()
            .filter(|td| &td.arn == arn)
            .and_then(|td| Record::from_tags(&td.tags, Some(record::revision_name(arn)))?.ok());
        match still {
            None => {
                return Ok(report(
                    Outcome::NotManaged,
                    "the record was removed (the delegate was deleted): nothing to resurrect",
                ))
            }
            Some(r) if r.applied_at != record.applied_at => return Ok(report(
                Outcome::Superseded,
                "the record changed since the region was scanned: the next heal uses the new one",
            )),
            Some(_) => {}
        }
    }
    let managed_security_group = match record.network.as_ref() {
        Some(n) if n.security_groups == RecordedGroups::Managed => {
            if let Some(g) = running_in_recorded_group(&record, service.as_ref()) {
                Some(g)
            } else {
                let read;
                let groups = match groups {
                    Some(g) => g,
                    None => {
                        read = observe::managed_security_groups(c, &key)
                            .await
                            .map_err(|e| e.to_string())?;
                        &read[..]
                    }
                };
                groups.iter().find(|g| g.vpc_id == n.vpc_id).cloned()
            }
        }
        _ => None,
    };
    let observed = ObservedForHeal {
        cluster_status,
        service: service.clone(),
        revision,
        managed_security_group,
    };
    let now = record::now_millis() / 1000;
    let planned =
        match plan::plan_heal(&record, &observed, now, settings.redeploy_backoff.as_secs()) {
            Ok(p) => p,
            Err(e) => return Ok(report(Outcome::CannotHeal, &e.to_string())),
        };
    let mut found_text: Vec<String> = planned
        .plan
        .actions
        .iter()
        .filter_map(reason_of)
        .chain(planned.notes.iter().cloned())
        .collect();
    if let Some(why) = planned.deferred {
        return Ok(report(Outcome::Deferred, &why));
    }
    if planned.plan.actions.is_empty() {
        if found_text.is_empty() {
            found_text.push("as recorded".into());
        }
        return Ok(DelegateReport::new(key, Outcome::Converged, found_text));
    }

    // Stand down if a Create/Update/Reconcile recorded something newer meanwhile.
    if let Some(newer) = newer_record(c, &cand.cluster, &record, chosen.revision.as_deref()).await?
    {
        return Ok(report(Outcome::Superseded, &newer));
    }
    let target = ServiceTarget {
        cluster: cand.cluster.clone(),
        record,
    };
    let current = service.filter(|s| s.status == "ACTIVE").map(|s| s.arn);
    let result = Applier::new(c, deadline)
        .reconcile(&target, &planned.plan, "", current.as_deref())
        .await;
    let mut r = DelegateReport {
        actions: planned.plan.actions,
        ..DelegateReport::new(key, Outcome::Repaired, found_text)
    };
    if let Err(e) = result {
        r.outcome = Outcome::Failed;
        r.error = Some(e.to_string());
    }
    Ok(r)
}

/// The recorded managed group, without reading it, when the tasks of the service's current
/// deployment run in exactly that group: AWS refuses to delete a group that network interfaces
/// use, so it exists. Any other case (no tasks of this deployment yet, other groups, a record
/// without the id) reads the groups.
fn running_in_recorded_group(
    record: &Record,
    service: Option<&ObservedService>,
) -> Option<observe::ObservedSecurityGroup> {
    let n = record.network.as_ref()?;
    let id = n.managed_group.as_ref()?;
    let s = service.filter(|s| {
        s.status == "ACTIVE" && s.deployment.as_ref().is_some_and(|d| d.running_count > 0)
    })?;
    let groups = &s.network.as_ref()?.security_groups;
    (groups.len() == 1 && groups.contains(id)).then(|| observe::ObservedSecurityGroup {
        id: id.clone(),
        vpc_id: n.vpc_id.clone(),
        name: format!("{}-delegate", record.service),
        tags: BTreeMap::new(),
    })
}

/// What changed if the record heal read is no longer the newest where it was read.
async fn newer_record(
    c: &Clients,
    cluster: &str,
    record: &Record,
    revision: Option<&str>,
) -> Result<Option<String>, String> {
    let tags = match revision {
        None => observe::service(c, cluster, &record.service)
            .await
            .map_err(|e| e.to_string())?
            .map(|s| s.tags),
        Some(arn) => observe::describe_task_definition(c, arn)
            .await
            .map_err(|e| e.to_string())?
            .map(|td| td.tags),
    };
    let now = tags.and_then(|t| Record::from_tags(&t, revision.map(record::revision_name)));
    Ok(match now {
        Some(Ok(r)) if r.applied_at == record.applied_at => None,
        Some(Ok(_)) => Some(
            "a newer configuration was recorded while healing (a stack Update or Reconcile): left to it"
                .into(),
        ),
        _ => Some("the record was removed while healing (the delegate is being deleted): nothing done".into()),
    })
}

fn reason_of(a: &Action) -> Option<String> {
    serde_json::to_value(a)
        .ok()?
        .get("Reason")?
        .as_str()
        .map(String::from)
}

/// One structured line per delegate, so the history reads from CloudWatch Logs.
fn log(trigger: &str, d: &DelegateReport) {
    let found = d.found.join("; ");
    let actions = serde_json::to_string(&d.actions).unwrap_or_default();
    let outcome = format!("{:?}", d.outcome);
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
    fn heal_owner_limits_heal_to_one_stacks_delegates() {
        let every = HealSettings::default();
        assert!(every.heals(Some("stack/Delegate")) && every.heals(None));
        let one = HealSettings {
            owner: Some("stack/Delegate".into()),
            ..Default::default()
        };
        assert!(one.heals(Some("stack/Delegate")));
        assert!(!one.heals(Some("other/Delegate")));
        assert!(
            !one.heals(None),
            "a direct invocation's delegate is no stack's"
        );
    }

    #[test]
    fn the_newest_record_wins_and_a_copy_beats_its_original() {
        let found = |applied_at: u64, td: &str| Found {
            record: Record {
                applied_at,
                task_definition: td.into(),
                ..Default::default()
            },
            revision: Some(format!("arn:aws:ecs:r:1:task-definition/{td}")),
        };
        let pick = |f: Vec<Found>| newest(f).map(|f| f.record.task_definition);
        assert_eq!(pick(vec![]), None);
        // An Update's record beats the one before it, whatever the order found.
        assert_eq!(
            pick(vec![found(2, "f:3"), found(1, "f:9")]),
            Some("f:3".into())
        );
        // A deregistered original (f:3) and heal's copy of it (f:4) carry the same time.
        assert_eq!(
            pick(vec![found(2, "f:4"), found(2, "f:3")]),
            Some("f:4".into())
        );
        assert_eq!(
            pick(vec![found(2, "f:3"), found(2, "f:4")]),
            Some("f:4".into())
        );
    }
}
