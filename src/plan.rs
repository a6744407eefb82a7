//! The plan: given what is wanted (a spec, or heal's record) and what was observed, the ordered
//! steps that converge the delegate, each with the reason it is needed. Pure: no I/O and no AWS
//! SDK type, so every situation is a table row in the tests below.
//!
//! Converge ([`plan`]) and heal ([`plan_heal`]) share the sub-planners for the network, the
//! revision, the service, the record and the tags; heal adds only its own policy (the redeploy
//! back-off, and what it must never do). Rules that live here: a revision is registered only
//! when the rendered definition differs from the latest ACTIVE one; create-service is never
//! planned on an ACTIVE name; a change of launch type or network mode is a replacement, said
//! plainly.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
mod upgrade;
pub use upgrade::{plan_rollback, plan_upgrade};

use serde_json::Value;

use crate::document;
use crate::model::{
    self, AssignPublicIp, ClusterStatus, LaunchType, NetworkMode, OwnerLabel, RolloutState,
    ServiceStatus,
};
use crate::observed::{
    AwsvpcConfig, Observed, ObservedForDelete, ObservedForHeal, ObservedSecurityGroup,
    ObservedService, ObservedTaskDefinition,
};
use crate::record::{self, Record, RecordedGroups, RecordedNetwork, UnreadableRecord};
use crate::spec::DelegateSpec;
use crate::task_definition;

/// One step of a converge (Create, Update, Reconcile) or a heal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "Action")]
pub enum Action {
    CreateSecurityGroup {
        #[serde(rename = "GroupName")]
        name: String,
        #[serde(rename = "VpcId")]
        vpc_id: String,
        #[serde(rename = "Reason")]
        reason: String,
    },
    RegisterTaskDefinition {
        #[serde(rename = "Family")]
        family: String,
        #[serde(rename = "Reason")]
        reason: String,
    },
    CreateService {
        #[serde(rename = "ServiceName")]
        service: String,
        #[serde(rename = "Reason")]
        reason: String,
    },
    /// Changes made in place; only the fields flagged here are sent.
    UpdateService {
        #[serde(rename = "ServiceName")]
        service: String,
        #[serde(rename = "DesiredCount", skip_serializing_if = "Option::is_none")]
        desired_count: Option<i32>,
        #[serde(rename = "TaskDefinition")]
        task_definition: bool,
        #[serde(rename = "NetworkConfiguration")]
        network: bool,
        #[serde(rename = "Reason")]
        reason: String,
        /// Heal only: the service is made to deploy again; the record notes when, for the
        /// back-off.
        #[serde(skip)]
        mark_redeployed: bool,
    },
    /// A DRAINING service must be gone before a service of the same name can be created.
    WaitForServiceDrain {
        #[serde(rename = "ServiceName")]
        service: String,
        #[serde(rename = "Reason")]
        reason: String,
    },
    /// Delete the service and create it again: launch type and network mode cannot change in place.
    RecreateService {
        #[serde(rename = "ServiceName")]
        service: String,
        #[serde(rename = "Reason")]
        reason: String,
    },
    /// Add or change tags on the service (a changed `Tags` property, or the owning stack on a
    /// service created before it had one). Tags are only added or changed, never removed: the
    /// function cannot tell tags it set from tags others set.
    TagService {
        #[serde(rename = "ServiceName")]
        service: String,
        #[serde(rename = "Tags")]
        tags: BTreeMap<String, String>,
        #[serde(rename = "Reason")]
        reason: String,
    },
    TagSecurityGroup {
        #[serde(rename = "GroupId")]
        id: String,
        #[serde(rename = "Tags")]
        tags: BTreeMap<String, String>,
        #[serde(rename = "Reason")]
        reason: String,
    },
    /// Write the configuration tags (`record`: labels that repeat the record for people; heal
    /// reads the record table, never them): on the service when it exists and is kept, on the
    /// revision when an existing one is reused. The skipped fields hold the keys as they were,
    /// to put back if the run fails.
    RecordSpec {
        #[serde(rename = "OnService")]
        on_service: bool,
        #[serde(rename = "OnRevision")]
        on_revision: bool,
        #[serde(rename = "Reason")]
        reason: String,
        #[serde(skip)]
        previous_service: BTreeMap<String, String>,
        #[serde(skip)]
        previous_revision: BTreeMap<String, String>,
    },
    /// Heal only: start a new deployment of the same configuration (a failed deployment or a
    /// crash loop); the record notes when, for the back-off.
    ForceNewDeployment {
        #[serde(rename = "ServiceName")]
        service: String,
        #[serde(rename = "Reason")]
        reason: String,
    },
    /// Heal only: a group the function made for the delegate that its configuration no longer
    /// uses. Network interfaces of draining tasks may still hold it: then the next heal tries
    /// again.
    DeleteUnusedSecurityGroup {
        #[serde(rename = "GroupId")]
        id: String,
        #[serde(rename = "Reason")]
        reason: String,
    },
    /// Heal only: a service of a deleted delegate's name that this function created after the
    /// Delete (a call of an aborted run that landed late).
    DeleteOrphanService {
        #[serde(rename = "ServiceName")]
        service: String,
        #[serde(rename = "Reason")]
        reason: String,
    },
}

/// One step of a Delete.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "Action")]
pub enum DeleteAction {
    /// First of all: remove the record's labels (the item is already a tombstone; an earlier
    /// version of the function, one a stack rolled back to, heals from the labels).
    RemoveRecord {
        #[serde(rename = "Resources")]
        resources: Vec<String>,
        #[serde(rename = "Reason")]
        reason: String,
        /// The record keys each resource carries.
        #[serde(skip)]
        keys: Vec<Vec<String>>,
    },
    DeleteService {
        #[serde(rename = "ServiceName")]
        service: String,
        #[serde(rename = "Reason")]
        reason: String,
    },
    DeregisterTaskDefinition {
        #[serde(rename = "TaskDefinitionArn")]
        arn: String,
        #[serde(rename = "Reason")]
        reason: String,
    },
    DeleteSecurityGroup {
        #[serde(rename = "GroupId")]
        id: String,
        #[serde(rename = "Reason")]
        reason: String,
    },
}

impl Action {
    /// Whether the step makes the service deploy again (heal's back-off counts these).
    pub fn redeploys(&self) -> bool {
        matches!(
            self,
            Action::ForceNewDeployment { .. }
                | Action::UpdateService {
                    mark_redeployed: true,
                    ..
                }
        )
    }

    /// The step's name, as plans and reports show it.
    pub fn name(&self) -> &'static str {
        match self {
            Action::CreateSecurityGroup { .. } => "CreateSecurityGroup",
            Action::RegisterTaskDefinition { .. } => "RegisterTaskDefinition",
            Action::CreateService { .. } => "CreateService",
            Action::UpdateService { .. } => "UpdateService",
            Action::WaitForServiceDrain { .. } => "WaitForServiceDrain",
            Action::RecreateService { .. } => "RecreateService",
            Action::TagService { .. } => "TagService",
            Action::TagSecurityGroup { .. } => "TagSecurityGroup",
            Action::RecordSpec { .. } => "RecordSpec",
            Action::ForceNewDeployment { .. } => "ForceNewDeployment",
            Action::DeleteUnusedSecurityGroup { .. } => "DeleteUnusedSecurityGroup",
            Action::DeleteOrphanService { .. } => "DeleteOrphanService",
        }
    }

    /// Why the step is needed.
    pub fn reason(&self) -> &str {
        match self {
            Action::CreateSecurityGroup { reason, .. }
            | Action::RegisterTaskDefinition { reason, .. }
            | Action::CreateService { reason, .. }
            | Action::UpdateService { reason, .. }
            | Action::WaitForServiceDrain { reason, .. }
            | Action::RecreateService { reason, .. }
            | Action::TagService { reason, .. }
            | Action::TagSecurityGroup { reason, .. }
            | Action::RecordSpec { reason, .. }
            | Action::ForceNewDeployment { reason, .. }
            | Action::DeleteUnusedSecurityGroup { reason, .. }
            | Action::DeleteOrphanService { reason, .. } => reason,
        }
    }

    /// Whether the step deletes the group `id`.
    pub fn deletes_group(&self, id: &str) -> bool {
        matches!(self, Action::DeleteUnusedSecurityGroup { id: g, .. } if g == id)
    }
}

impl DeleteAction {
    /// The step's name, as plans and reports show it.
    pub fn name(&self) -> &'static str {
        match self {
            DeleteAction::RemoveRecord { .. } => "RemoveRecord",
            DeleteAction::DeleteService { .. } => "DeleteService",
            DeleteAction::DeregisterTaskDefinition { .. } => "DeregisterTaskDefinition",
            DeleteAction::DeleteSecurityGroup { .. } => "DeleteSecurityGroup",
        }
    }

    /// Why the step is needed.
    pub fn reason(&self) -> &str {
        match self {
            DeleteAction::RemoveRecord { reason, .. }
            | DeleteAction::DeleteService { reason, .. }
            | DeleteAction::DeregisterTaskDefinition { reason, .. }
            | DeleteAction::DeleteSecurityGroup { reason, .. } => reason,
        }
    }
}

/// A security group of the desired network configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum SecurityGroupRef {
    Existing(String),
    /// The group `CreateSecurityGroup` makes; its id is known once applied.
    ToCreate,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesiredNetwork {
    #[serde(rename = "Subnets")]
    pub subnets: Vec<String>,
    #[serde(rename = "SecurityGroups")]
    pub security_groups: Vec<SecurityGroupRef>,
    #[serde(rename = "AssignPublicIp")]
    pub assign_public_ip: AssignPublicIp,
}

impl DesiredNetwork {
    /// The awsvpc configuration this becomes once the managed group (if any) has an id.
    pub fn resolved(&self, created_group: Option<&str>) -> AwsvpcConfig {
        AwsvpcConfig {
            subnets: self.subnets.iter().cloned().collect(),
            security_groups: self
                .security_groups
                .iter()
                .filter_map(|g| match g {
                    SecurityGroupRef::Existing(id) => Some(id.clone()),
                    SecurityGroupRef::ToCreate => created_group.map(String::from),
                })
                .collect(),
            assign_public_ip: self.assign_public_ip,
        }
    }

    fn needs_group(&self) -> bool {
        self.security_groups.contains(&SecurityGroupRef::ToCreate)
    }
}

/// What the delegate should look like once the plan is applied.
#[derive(Clone, PartialEq, Serialize)]
pub struct Desired {
    /// The rendered task definition (secrets included: show it only through `redacted`, as
    /// `Debug` does).
    #[serde(skip)]
    pub task_definition: Value,
    /// The revision to use when no new one is registered.
    #[serde(rename = "TaskDefinitionArn", skip_serializing_if = "Option::is_none")]
    pub task_definition_arn: Option<String>,
    #[serde(rename = "Network", skip_serializing_if = "Option::is_none")]
    pub network: Option<DesiredNetwork>,
    #[serde(rename = "VpcId", skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// What the converge records for heal (its revision and time are filled in by apply).
    #[serde(skip)]
    pub record: Record,
    /// The family's newest ACTIVE revision number when observed. An equal revision numbered
    /// above it was registered meanwhile (a retried register whose first answer was lost, or a
    /// replay of the same request running at the same time): apply uses that one instead.
    #[serde(skip)]
    pub registered_after: i32,
}

impl std::fmt::Debug for Desired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desired")
            .field("task_definition", &document::Shown(&self.task_definition))
            .field("task_definition_arn", &self.task_definition_arn)
            .field("network", &self.network)
            .field("vpc_id", &self.vpc_id)
            .field("record", &self.record)
            .field("registered_after", &self.registered_after)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    #[serde(rename = "Actions")]
    pub actions: Vec<Action>,
    #[serde(rename = "Desired")]
    pub desired: Desired,
}

impl Plan {
    /// What the plan will do and why, in a sentence a person reads.
    pub fn summary(&self) -> String {
        if self.actions.is_empty() {
            return "nothing to change: the delegate is as the properties declare".into();
        }
        describe(self.actions.iter().map(|a| (a.name(), a.reason())))
    }
}

/// Steps as a person reads them: each name with its reason.
fn describe<'a>(steps: impl Iterator<Item = (&'static str, &'a str)>) -> String {
    let steps: Vec<String> = steps
        .map(|(name, reason)| format!("{name} ({reason})"))
        .collect();
    steps.join("; ")
}

// ---- shared sub-planners ------------------------------------------------------------------------

/// The security groups to run in: the given ones, else the delegate's own group, made if
/// missing.
fn security_group_refs(
    given: Option<&[String]>,
    managed: Option<&ObservedSecurityGroup>,
) -> Vec<SecurityGroupRef> {
    match given {
        Some(ids) => ids
            .iter()
            .cloned()
            .map(SecurityGroupRef::Existing)
            .collect(),
        None => vec![managed.map_or(SecurityGroupRef::ToCreate, |g| {
            SecurityGroupRef::Existing(g.id.clone())
        })],
    }
}

/// The step that makes the delegate's own group, when the network needs it.
fn group_to_create(
    network: Option<&DesiredNetwork>,
    service: &str,
    vpc_id: &str,
    reason: &str,
) -> Option<Action> {
    network
        .filter(|n| n.needs_group())
        .map(|_| Action::CreateSecurityGroup {
            name: model::managed_security_group_name(service),
            vpc_id: vpc_id.to_string(),
            reason: reason.to_string(),
        })
}

/// The service settings a plan converges to: from a spec (converge) or a record (heal).
struct WantedService<'a> {
    name: &'a str,
    launch_type: LaunchType,
    network_mode: NetworkMode,
    desired_count: i32,
}

impl<'a> WantedService<'a> {
    fn of(spec: &'a DelegateSpec) -> Self {
        WantedService {
            name: &spec.service_name,
            launch_type: spec.launch_type,
            network_mode: spec.network_mode,
            desired_count: spec.desired_count,
        }
    }

    fn recorded(r: &'a Record) -> Self {
        WantedService {
            name: r.service(),
            launch_type: r.launch_type,
            network_mode: r.network_mode,
            desired_count: r.desired_count,
        }
    }
}

/// What the service needs, before the caller's own policy.
enum ServiceNeed<'a> {
    /// It does not exist.
    Missing,
    /// It was deleted (INACTIVE).
    Deleted,
    /// It is being deleted: it must be gone before one of its name is created.
    Draining,
    /// Launch type or network mode differ, which ECS cannot change in place: the reason.
    Replacement(String),
    /// It exists; the in-place update it needs, if any.
    Update(Option<Action>, &'a ObservedService),
}

fn service_need<'a>(
    wanted: &WantedService,
    service: Option<&'a ObservedService>,
    desired_td: Option<&str>,
    network: Option<&DesiredNetwork>,
) -> ServiceNeed<'a> {
    let Some(s) = service else {
        return ServiceNeed::Missing;
    };
    match s.status {
        ServiceStatus::Inactive => ServiceNeed::Deleted,
        ServiceStatus::Draining => ServiceNeed::Draining,
        ServiceStatus::Active => match replacement_reason(wanted, s) {
            Some(reason) => ServiceNeed::Replacement(reason),
            None => ServiceNeed::Update(update(wanted, s, desired_td, network), s),
        },
    }
}

fn create_service(name: &str, reason: &str) -> Action {
    Action::CreateService {
        service: name.to_string(),
        reason: reason.to_string(),
    }
}

fn replacement_reason(wanted: &WantedService, s: &ObservedService) -> Option<String> {
    let want = wanted.launch_type;
    if let Some(have) = s.launch_type.filter(|have| *have != want) {
        return Some(format!(
            "launch type changes from {have} to {want}, which ECS cannot change in place: the service is replaced (deleted, then created again)"
        ));
    }
    let have = if s.network.is_some() {
        NetworkMode::Awsvpc
    } else {
        NetworkMode::Bridge
    };
    let want = wanted.network_mode;
    (have != want).then(|| format!(
        "network mode changes from {have} to {want}, which needs a new service: the service is replaced (deleted, then created again)"
    ))
}

/// The in-place update from what the service is to what is wanted; only what changed is sent.
fn update(
    wanted: &WantedService,
    s: &ObservedService,
    desired_td: Option<&str>,
    network: Option<&DesiredNetwork>,
) -> Option<Action> {
    let mut changes = Vec::new();
    let desired_count = (s.desired_count != wanted.desired_count).then(|| {
        changes.push(format!(
            "desired count {} -> {}",
            s.desired_count, wanted.desired_count
        ));
        wanted.desired_count
    });
    let td_changed = desired_td.is_none_or(|arn| s.task_definition != arn);
    if td_changed {
        changes.push(match desired_td {
            Some(arn) => format!("task definition -> {}", model::revision_name(arn)),
            None => "task definition -> the new revision".into(),
        });
    }
    let net_changes = network.map(|n| network_changes(s.network.as_ref(), n));
    let net_changed = net_changes.as_ref().is_some_and(|c| !c.is_empty());
    changes.extend(net_changes.into_iter().flatten());
    (!changes.is_empty()).then(|| Action::UpdateService {
        service: wanted.name.to_string(),
        desired_count,
        task_definition: td_changed,
        network: net_changed,
        reason: changes.join("; "),
        mark_redeployed: false,
    })
}

/// What differs between the service's awsvpc configuration and the wanted one (a service
/// without one gets it whole).
fn network_changes(have: Option<&AwsvpcConfig>, want: &DesiredNetwork) -> Vec<String> {
    let new_group = want.needs_group();
    let wanted = want.resolved(None);
    let Some(have) = have else {
        return vec!["network configuration -> awsvpc".into()];
    };
    let mut diff = Vec::new();
    if have.subnets != wanted.subnets {
        diff.push(format!(
            "subnets {} -> {}",
            join(&have.subnets),
            join(&wanted.subnets)
        ));
    }
    if new_group || have.security_groups != wanted.security_groups {
        let to = if new_group {
            "a new group".to_string()
        } else {
            join(&wanted.security_groups)
        };
        diff.push(format!(
            "security groups {} -> {to}",
            join(&have.security_groups)
        ));
    }
    if have.assign_public_ip != wanted.assign_public_ip {
        diff.push(format!(
            "public IP {} -> {}",
            have.assign_public_ip, wanted.assign_public_ip
        ));
    }
    diff
}

fn join(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "(none)".into()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(",")
    }
}

/// The step that writes the record (see `record`) before the service changes, on the service
/// and/or the revision given; it keeps what they carried, for undo.
fn record_step(
    service: Option<&ObservedService>,
    revision: Option<&ObservedTaskDefinition>,
    reason: &str,
) -> Option<Action> {
    (service.is_some() || revision.is_some()).then(|| Action::RecordSpec {
        on_service: service.is_some(),
        on_revision: revision.is_some(),
        reason: reason.to_string(),
        previous_service: service
            .map(|s| record::recorded_tags(&s.tags))
            .unwrap_or_default(),
        previous_revision: revision
            .map(|td| record::recorded_tags(&td.tags))
            .unwrap_or_default(),
    })
}

/// The desired tags that `have` lacks or holds with another value.
fn missing_tags(
    want: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    want.iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn tags_reason(missing: &BTreeMap<String, String>) -> String {
    let keys: Vec<&str> = missing.keys().map(String::as_str).collect();
    format!("tags to add or change: {}", keys.join(", "))
}

// ---- converge -----------------------------------------------------------------------------------

/// The awsvpc network the delegate should use, or `None` for bridge.
pub fn desired_network(spec: &DelegateSpec, o: &Observed) -> Option<DesiredNetwork> {
    if spec.network_mode != NetworkMode::Awsvpc {
        return None;
    }
    let n = &o.network;
    let (subnets, derived_ip) = match &spec.subnet_ids {
        Some(ids) => {
            let all_public = ids
                .iter()
                .all(|id| n.subnets.iter().any(|s| &s.id == id && s.public));
            (ids.clone(), all_public)
        }
        None => {
            let private: Vec<String> = n
                .subnets
                .iter()
                .filter(|s| !s.public)
                .map(|s| s.id.clone())
                .collect();
            if private.is_empty() {
                (n.subnets.iter().map(|s| s.id.clone()).collect(), true)
            } else {
                (private, false)
            }
        }
    };
    // A public IP only helps Fargate tasks in public subnets; EC2 awsvpc tasks cannot have one.
    let derived = if derived_ip && spec.launch_type == LaunchType::Fargate {
        AssignPublicIp::Enabled
    } else {
        AssignPublicIp::Disabled
    };
    Some(DesiredNetwork {
        subnets,
        security_groups: security_group_refs(
            spec.security_group_ids.as_deref(),
            n.managed_security_group.as_ref(),
        ),
        assign_public_ip: spec.assign_public_ip.unwrap_or(derived),
    })
}

/// Plan a Create, Update or Reconcile. `observed` has passed pre-flight.
pub fn plan(spec: &DelegateSpec, o: &Observed) -> Plan {
    let rendered = task_definition::render(spec);
    let network = desired_network(spec, o);
    let vpc_id = o.network.vpc_id.clone();
    let mut actions: Vec<Action> = group_to_create(
        network.as_ref(),
        &spec.service_name,
        vpc_id.as_deref().unwrap_or_default(),
        "no SecurityGroupIds given: the delegate gets its own egress-only group",
    )
    .into_iter()
    .collect();
    let (reuse, register) = choose_revision(spec, o, &rendered);
    actions.extend(register);
    let desired_td = reuse.map(|td| td.arn.clone());
    let service = converge_service(
        &WantedService::of(spec),
        o.service.as_ref(),
        desired_td.as_deref(),
        network.as_ref(),
    );
    // The labels go on before the service changes, and are put back if the run fails; also on
    // a service about to be replaced: while it drains, it shows what replaces it.
    let record = desired_record(spec, network.as_ref(), o, desired_td.as_deref());
    let stale = |tags: &BTreeMap<String, String>, revision: Option<&str>| !matches!(Record::from_tags(tags, revision), Some(Ok(r)) if r.same_as(&record));
    let on_service = o
        .active_service()
        .filter(|s| desired_td.is_none() || stale(&s.tags, None));
    let on_revision = reuse.filter(|td| stale(&td.tags, Some(model::revision_name(&td.arn))));
    actions.extend(record_step(
        on_service,
        on_revision,
        "label the resources with the applied configuration (heal restores the record table's)",
    ));
    let recreated = service
        .iter()
        .any(|a| matches!(a, Action::RecreateService { .. }));
    actions.extend(service);
    actions.extend(tag_group(spec, o, network.is_some()));
    // Last of all, so that a failed Create never marks a delegate as its own; a recreated
    // service is created with all its tags.
    if !recreated {
        actions.extend(tag_service(spec, o.active_service()));
    }
    Plan {
        actions,
        desired: Desired {
            task_definition: rendered,
            task_definition_arn: desired_td,
            network,
            vpc_id,
            record,
            registered_after: o.latest_task_definition.as_ref().map_or(0, |t| t.revision),
        },
    }
}

/// The revision to reuse, else the step that registers one. The service's revision, else the
/// family's latest, is reused when it is what the spec renders and was registered for this
/// delegate: delegates sharing a family must not leapfrog each other with new revisions, and
/// each keeps its labels on a revision of its own.
fn choose_revision<'a>(
    spec: &DelegateSpec,
    o: &'a Observed,
    rendered: &Value,
) -> (Option<&'a ObservedTaskDefinition>, Option<Action>) {
    let wanted = document::normalize(rendered);
    let key = spec.key();
    let candidates: Vec<&ObservedTaskDefinition> = [
        o.current_task_definition.as_ref(),
        o.latest_task_definition.as_ref(),
    ]
    .into_iter()
    .flatten()
    .filter(|td| {
        td.is_active() && td.doc["family"] == spec.family.as_str() && key.tagged_on(&td.tags)
    })
    .collect();
    let reuse = candidates
        .iter()
        .find(|td| document::normalize(&td.doc) == wanted)
        .copied();
    if reuse.is_some() {
        return (reuse, None);
    }
    let reason = match candidates.first() {
        None => format!(
            "family {} has no ACTIVE revision registered for this delegate",
            spec.family
        ),
        Some(td) => format!(
            "{} ({}:{}) differs in {}",
            if o.current_task_definition.as_ref().map(|c| &c.arn) == Some(&td.arn) {
                "the revision the service runs"
            } else {
                "the latest ACTIVE revision"
            },
            spec.family,
            td.revision,
            document::differences(&document::normalize(&td.doc), &wanted).join(", ")
        ),
    };
    let register = Action::RegisterTaskDefinition {
        family: spec.family.clone(),
        reason,
    };
    (None, Some(register))
}

/// The service steps of a converge.
fn converge_service(
    wanted: &WantedService,
    service: Option<&ObservedService>,
    desired_td: Option<&str>,
    network: Option<&DesiredNetwork>,
) -> Vec<Action> {
    let name = wanted.name;
    match service_need(wanted, service, desired_td, network) {
        ServiceNeed::Missing => vec![create_service(name, "the service does not exist")],
        ServiceNeed::Deleted => vec![create_service(name, "the service was deleted (INACTIVE)")],
        ServiceNeed::Draining => vec![
            Action::WaitForServiceDrain {
                service: name.to_string(),
                reason: "the service is DRAINING after a delete; a new one of the same name can only be created once it is gone".into(),
            },
            create_service(name, "the service was deleted (DRAINING)"),
        ],
        ServiceNeed::Replacement(reason) => vec![Action::RecreateService {
            service: name.to_string(),
            reason,
        }],
        ServiceNeed::Update(update, _) => update.into_iter().collect(),
    }
}

/// Tags the kept service lacks: a changed `Tags` property, or the owner a stack adopting a
/// service created outside CloudFormation adds.
fn tag_service(spec: &DelegateSpec, kept: Option<&ObservedService>) -> Option<Action> {
    let missing = missing_tags(&spec.resource_tags(), &kept?.tags);
    if missing.is_empty() {
        return None;
    }
    let reason = if missing.contains_key(model::OWNER_TAG) {
        "the service was created outside CloudFormation: this stack resource adopts it".into()
    } else {
        tags_reason(&missing)
    };
    Some(Action::TagService {
        service: spec.service_name.clone(),
        tags: missing,
        reason,
    })
}

/// Tags the delegate's own group lacks, while the delegate uses awsvpc.
fn tag_group(spec: &DelegateSpec, o: &Observed, awsvpc: bool) -> Option<Action> {
    let g = o
        .network
        .managed_security_group
        .as_ref()
        .filter(|_| awsvpc)?;
    let missing = missing_tags(&spec.resource_tags(), &g.tags);
    (!missing.is_empty()).then(|| Action::TagSecurityGroup {
        id: g.id.clone(),
        reason: tags_reason(&missing),
        tags: missing,
    })
}

/// The record a converge to `spec` leaves (its time is set when applied).
fn desired_record(
    spec: &DelegateSpec,
    network: Option<&DesiredNetwork>,
    o: &Observed,
    task_definition: Option<&str>,
) -> Record {
    let managed = spec.security_group_ids.is_none();
    Record {
        key: spec.key(),
        owner: spec.owner.clone(),
        owner_stack_id: spec.owner_stack_id.clone(),
        launch_type: spec.launch_type,
        network_mode: spec.network_mode,
        desired_count: spec.desired_count,
        task_definition: task_definition
            .map(model::revision_name)
            .unwrap_or_default()
            .to_string(),
        network: network.map(|n| RecordedNetwork {
            vpc_id: o.network.vpc_id.clone().unwrap_or_default(),
            subnets: n.subnets.clone(),
            security_groups: match &spec.security_group_ids {
                Some(ids) => RecordedGroups::Given(ids.clone()),
                None => RecordedGroups::Managed,
            },
            // A group still to be made gets its id in the record when apply makes it.
            managed_group: managed
                .then(|| {
                    o.network
                        .managed_security_group
                        .as_ref()
                        .map(|g| g.id.clone())
                })
                .flatten(),
            assign_public_ip: n.assign_public_ip,
        }),
        applied_at: 0,
        user_tags: spec.tags.clone(),
        follow: spec.follow(),
    }
}

// ---- delete -------------------------------------------------------------------------------------

/// What a Delete will remove, or why it leaves the delegate alone.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletePlan {
    pub actions: Vec<DeleteAction>,
    /// The service is another stack's (or no stack's) delegate: nothing at all is touched.
    pub left_alone: Option<String>,
}

impl DeletePlan {
    /// What the Delete will do and why, in a sentence a person reads.
    pub fn summary(&self) -> String {
        if let Some(why) = &self.left_alone {
            return why.clone();
        }
        if self.actions.is_empty() {
            return "nothing of this delegate's is left to remove".into();
        }
        describe(self.actions.iter().map(|a| (a.name(), a.reason())))
    }
}

/// Plan a Delete: the service, the revisions this delegate registered that no other managed
/// service uses, and the security group it created. Only resources tagged as ours are touched,
/// and nothing at all when the service belongs to another stack's delegate (`owner` differs).
pub fn plan_delete(
    service_name: &str,
    o: &ObservedForDelete,
    owner: Option<&OwnerLabel>,
) -> DeletePlan {
    let live = o
        .service
        .as_ref()
        .filter(|s| s.status != ServiceStatus::Inactive);
    if let Some(s) = live.filter(|s| !s.owned_by(owner)) {
        let theirs = s.owner().map_or_else(
            || "no stack (a direct invocation or another tool)".to_string(),
            |o| o.to_string(),
        );
        return DeletePlan {
            actions: vec![],
            left_alone: Some(format!(
                "service {service_name} belongs to {theirs}, not to this stack's delegate: left alone"
            )),
        };
    }
    let mut actions = Vec::new();
    if !o.records.is_empty() {
        actions.push(DeleteAction::RemoveRecord {
            resources: o.records.iter().map(|(arn, _)| arn.clone()).collect(),
            reason: "first of all, the record's labels (its item is already marked deleted: self-healing brings nothing back)".into(),
            keys: o.records.iter().map(|(_, k)| k.clone()).collect(),
        });
    }
    if live.is_some_and(ObservedService::managed_by_us) {
        actions.push(DeleteAction::DeleteService {
            service: service_name.to_string(),
            reason: "the delegate is being deleted: scale to 0 and delete".into(),
        });
    }
    for arn in &o.our_revisions {
        if !o.used_by_other_services.contains(model::revision_name(arn)) {
            actions.push(DeleteAction::DeregisterTaskDefinition {
                arn: arn.clone(),
                reason: "registered by this delegate and used by no other managed service".into(),
            });
        }
    }
    for g in &o.managed_security_groups {
        actions.push(DeleteAction::DeleteSecurityGroup {
            id: g.id.clone(),
            reason: format!("created by this function for the delegate ({})", g.name),
        });
    }
    DeletePlan {
        actions,
        left_alone: None,
    }
}

// ---- heal ---------------------------------------------------------------------------------------

/// Failed tasks in a row, with fewer tasks running than desired, that make a crash loop.
pub const CRASH_LOOP_FAILED_TASKS: i32 = 2;

/// What heal will do for one delegate, and what it noticed but leaves alone.
#[derive(Debug, Clone, PartialEq)]
pub struct HealPlan {
    pub plan: Plan,
    /// Observations that call for no action (a crash loop inside its back-off window).
    pub notes: Vec<String>,
    /// Nothing is done this time, for this reason; the next heal looks again.
    pub deferred: Option<String>,
}

impl HealPlan {
    /// What heal found: the reasons of its steps, then what it noticed and leaves alone.
    pub fn found(&self) -> Vec<String> {
        let mut found: Vec<String> = self
            .plan
            .actions
            .iter()
            .map(|a| a.reason().to_string())
            .chain(self.notes.iter().cloned())
            .chain(self.deferred.iter().cloned())
            .collect();
        if found.is_empty() {
            found.push("as recorded".into());
        }
        found
    }

    /// `found` in one line.
    pub fn summary(&self) -> String {
        self.found().join("; ")
    }
}

/// Why a delegate cannot be healed: said in the report, nothing is changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CannotHeal {
    #[error("cluster {cluster} no longer exists: nothing can be healed, and no cluster is created; recreate the cluster and update the stack, or delete the stack")]
    ClusterGone { cluster: String },
    #[error("cluster {cluster} is {status}: nothing can be healed, and no cluster is created; recreate the cluster and update the stack, or delete the stack")]
    ClusterNotActive {
        cluster: String,
        status: ClusterStatus,
    },
    #[error("the recorded task definition {task_definition} no longer exists (deleted, not just deregistered), and the record holds no secrets to rebuild it: run a stack Update to register it again")]
    RevisionGone { task_definition: String },
    #[error("service {service} in cluster {cluster} is not this delegate's (it lacks the delegate's tags): it is left alone; delete or rename it, then run the heal again")]
    NotTheDelegates { cluster: String, service: String },
    #[error("service {service} in cluster {cluster} now belongs to {theirs}, not to {ours}: it is left alone")]
    OtherOwner {
        cluster: String,
        service: String,
        theirs: OwnerLabel,
        /// This delegate's owner, described.
        ours: String,
    },
    #[error("{reason}; the service was changed outside the stack and heal does not replace services: delete it (the next heal creates it as recorded) or run a stack Update")]
    ChangedOutside { reason: String },
    #[error(transparent)]
    Unreadable(#[from] UnreadableRecord),
}

/// Heal's redeploy back-off: a service is made to deploy at most once per `window` seconds, so a
/// revision that keeps failing is not forced back again and again.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub now: u64,
    pub window: u64,
}

impl Backoff {
    /// When heal last made the service deploy its committed configuration (the record says;
    /// not a tag anyone may write), if inside the window.
    fn last(&self, o: &ObservedForHeal) -> Option<u64> {
        o.last_redeploy
            .filter(|t| self.now.saturating_sub(*t) < self.window)
    }

    fn waiting(&self, why: &str, t: u64) -> String {
        format!(
            "{why}; heal made it deploy {}s ago, the next no sooner than {}s after that",
            self.now.saturating_sub(t),
            self.window
        )
    }
}

/// What heal does for a deleted delegate (its item a tombstone).
#[derive(Debug, Clone, PartialEq)]
pub enum Tombstoned {
    /// Nothing of it runs: nothing to do, nothing is restored.
    Nothing(String),
    /// A service of its name runs that nothing proves this function created: left alone.
    LeftAlone(String),
    /// A service this function created after the Delete: removed.
    Remove(Action),
}

/// Heal of a deleted delegate. Nothing is restored; but a CreateService of an aborted run (in
/// flight when its invocation was cut off) can land after the Delete looked for the last time,
/// and its service would run with no record and no stack. Only `createdBy`, which ECS writes
/// and nobody else can, proves that this function made it (`function_role`: its role's ARN);
/// the delegate's tags prove nothing, since anyone may put them on any service.
pub fn plan_tombstone(
    service: Option<&ObservedService>,
    function_role: Option<&str>,
) -> Tombstoned {
    let nothing =
        || Tombstoned::Nothing("deleted (its record is a tombstone): nothing to resurrect".into());
    let Some(s) = service.filter(|s| s.status == ServiceStatus::Active) else {
        return nothing();
    };
    let labelled = if s.managed_by_us() {
        "carries the delegate's tags but "
    } else {
        ""
    };
    let by = s.created_by.as_deref().unwrap_or("an unknown principal");
    match function_role {
        Some(role) if s.created_by.as_deref().is_some_and(|by| created_by_role(by, role)) => {
            Tombstoned::Remove(Action::DeleteOrphanService {
                service: s.name.clone(),
                reason: format!("the delegate was deleted, yet service {} runs, created by this function's role ({by}): a call of an aborted run that landed late; it is removed", s.name),
            })
        }
        Some(_) => Tombstoned::LeftAlone(format!(
            "the delegate was deleted; service {} {labelled}was created by {by}, not by this function: left alone",
            s.name
        )),
        None => Tombstoned::LeftAlone(format!(
            "the delegate was deleted; service {} {labelled}runs, and without FUNCTION_ROLE_ARN nothing proves this function created it: left alone",
            s.name
        )),
    }
}

/// Whether ECS's `createdBy` names `role` (`arn:P:iam::ACCOUNT:role/PATH/NAME`): the role itself,
/// or a session of it (`arn:P:sts::ACCOUNT:assumed-role/NAME/SESSION`).
fn created_by_role(created_by: &str, role: &str) -> bool {
    if created_by == role {
        return true;
    }
    let (Some((p1, a1, session)), Some((p2, a2, role_path))) =
        (arn_parts(created_by), arn_parts(role))
    else {
        return false;
    };
    let session_role = session
        .strip_prefix("assumed-role/")
        .and_then(|r| r.split('/').next());
    let role_name = role_path
        .strip_prefix("role/")
        .and_then(|r| r.rsplit('/').next());
    p1 == p2 && a1 == a2 && session_role.is_some() && session_role == role_name
}

/// `(partition, account, resource)` of `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`.
fn arn_parts(arn: &str) -> Option<(&str, &str, &str)> {
    match arn.splitn(6, ':').collect::<Vec<_>>().as_slice() {
        ["arn", partition, _, _, account, resource] => Some((partition, account, resource)),
        _ => None,
    }
}

/// Plan the repair of one delegate toward its record.
pub fn plan_heal(
    r: &Record,
    o: &ObservedForHeal,
    backoff: Backoff,
) -> Result<HealPlan, CannotHeal> {
    check_cluster(r, o.cluster_status)?;
    let revision = o
        .revision
        .as_ref()
        .ok_or_else(|| CannotHeal::RevisionGone {
            task_definition: r.task_definition.clone(),
        })?;
    let desired_td = revision.is_active().then(|| revision.arn.clone());
    let mut actions = Vec::new();
    if desired_td.is_none() {
        actions.push(Action::RegisterTaskDefinition {
            family: revision.doc["family"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            reason: format!(
                "the recorded revision {} was deregistered ({}): a copy of it is registered",
                r.task_definition, revision.status
            ),
        });
    }
    let network = r.network.as_ref().map(|n| DesiredNetwork {
        subnets: n.subnets.clone(),
        security_groups: match &n.security_groups {
            RecordedGroups::Given(ids) => security_group_refs(Some(ids), None),
            RecordedGroups::Managed => security_group_refs(None, o.managed_security_group.as_ref()),
        },
        assign_public_ip: n.assign_public_ip,
    });
    let vpc_id = r.network.as_ref().map(|n| n.vpc_id.clone());
    actions.extend(group_to_create(
        network.as_ref(),
        r.service(),
        vpc_id.as_deref().unwrap_or_default(),
        "the delegate's own security group was deleted: it is created again",
    ));
    let kept = o.service.as_ref().filter(|s| s.is_active());
    if let Some(s) = kept {
        check_service_is_ours(r, s)?;
    }
    let mut heal = HealPlan {
        plan: Plan {
            actions: vec![],
            desired: Desired {
                task_definition: revision.doc.clone(),
                task_definition_arn: desired_td,
                network,
                vpc_id,
                record: r.clone(),
                registered_after: revision.revision,
            },
        },
        notes: vec![],
        deferred: None,
    };
    let service = heal_service(r, o, &mut heal, backoff)?;
    if heal.deferred.is_none() {
        // A re-registered revision is recorded on the service before the service moves to it.
        let re_registered = heal.plan.desired.task_definition_arn.is_none();
        actions.extend(record_step(
            kept.filter(|_| re_registered),
            None,
            "record the re-registered revision",
        ));
        let settled = service.is_empty();
        actions.extend(service);
        // Only once the service has settled on what it should run, so that what is deleted is
        // no longer asked for.
        if settled {
            actions.extend(unused_group_steps(o));
        }
        heal.plan.actions = actions;
    }
    Ok(heal)
}

/// Delete the groups the function made for the delegate that it no longer uses.
fn unused_group_steps(o: &ObservedForHeal) -> impl Iterator<Item = Action> + '_ {
    o.unused_security_groups
        .iter()
        .map(|g| Action::DeleteUnusedSecurityGroup {
            id: g.id.clone(),
            reason: format!(
                "the function made {} ({}) for the delegate, whose configuration no longer uses it",
                g.name, g.id
            ),
        })
}

fn check_cluster(r: &Record, status: Option<ClusterStatus>) -> Result<(), CannotHeal> {
    let cluster = r.key.cluster().to_string();
    match status {
        Some(ClusterStatus::Active) => Ok(()),
        None => Err(CannotHeal::ClusterGone { cluster }),
        Some(status) => Err(CannotHeal::ClusterNotActive { cluster, status }),
    }
}

/// Heal never touches a service that lacks the delegate's tags or that another stack owns.
fn check_service_is_ours(r: &Record, s: &ObservedService) -> Result<(), CannotHeal> {
    let (cluster, service) = (r.key.cluster().to_string(), r.service().to_string());
    if !s.is_delegate(&r.key) {
        return Err(CannotHeal::NotTheDelegates { cluster, service });
    }
    match s.owner() {
        Some(theirs) if Some(&theirs) != r.owner.as_ref() => Err(CannotHeal::OtherOwner {
            cluster,
            service,
            theirs,
            ours: r.owner.as_ref().map_or_else(
                || "no stack (a direct invocation)".to_string(),
                |o| o.to_string(),
            ),
        }),
        _ => Ok(()),
    }
}

/// The service steps of a heal: the shared need, under heal's policy. A DRAINING service sets
/// `deferred`; a crash loop inside the back-off adds a note.
fn heal_service(
    r: &Record,
    o: &ObservedForHeal,
    heal: &mut HealPlan,
    backoff: Backoff,
) -> Result<Vec<Action>, CannotHeal> {
    let wanted = WantedService::recorded(r);
    let desired = &heal.plan.desired;
    let need = service_need(
        &wanted,
        o.service.as_ref(),
        desired.task_definition_arn.as_deref(),
        desired.network.as_ref(),
    );
    let name = r.service();
    Ok(match need {
        ServiceNeed::Missing => vec![create_service(
            name,
            "the service was deleted: it is created again as recorded",
        )],
        ServiceNeed::Deleted => vec![create_service(
            name,
            "the service was deleted (INACTIVE): it is created again as recorded",
        )],
        ServiceNeed::Draining => {
            heal.deferred = Some("the service is DRAINING (being replaced or deleted): nothing is done now, the next heal looks again".into());
            vec![]
        }
        // Replacing is a stack's decision: heal does not delete a running service.
        ServiceNeed::Replacement(reason) => return Err(CannotHeal::ChangedOutside { reason }),
        ServiceNeed::Update(update, s) => {
            heal_update(update, s, backoff, backoff.last(o), &mut heal.notes)
                .into_iter()
                .collect()
        }
    })
}

/// An update or forced deployment, at most once per back-off window when it makes the service
/// deploy; inside the window, a note instead.
fn heal_update(
    update: Option<Action>,
    s: &ObservedService,
    backoff: Backoff,
    last: Option<u64>,
    notes: &mut Vec<String>,
) -> Option<Action> {
    match update {
        Some(Action::UpdateService {
            service,
            desired_count,
            task_definition: true,
            network,
            reason,
            ..
        }) => match last {
            Some(t) if desired_count.is_none() && !network => {
                notes.push(backoff.waiting(&reason, t));
                None
            }
            _ => Some(Action::UpdateService {
                service,
                desired_count,
                task_definition: last.is_none(),
                network,
                reason,
                mark_redeployed: last.is_none(),
            }),
        },
        Some(other) => Some(other),
        None => {
            let why = stuck(s)?;
            match last {
                Some(t) => {
                    notes.push(backoff.waiting(&why, t));
                    None
                }
                None => Some(Action::ForceNewDeployment {
                    service: s.name.clone(),
                    reason: format!(
                        "{why}: a new deployment is forced (at most once every {}s)",
                        backoff.window
                    ),
                }),
            }
        }
    }
}

/// Why the service needs a new deployment of the same configuration, if it does.
fn stuck(s: &ObservedService) -> Option<String> {
    let d = s.deployment.as_ref()?;
    if d.rollout_state == Some(RolloutState::Failed) {
        return Some("the latest deployment FAILED".into());
    }
    // failedTasks never resets on a deployment: only one still rolling out is stuck.
    let rolling_out = d.rollout_state == Some(RolloutState::InProgress);
    (rolling_out && s.running_count < s.desired_count && d.failed_tasks >= CRASH_LOOP_FAILED_TASKS)
        .then(|| {
            format!(
                "tasks keep stopping: {} of {} running, {} failed in a row",
                s.running_count, s.desired_count, d.failed_tasks
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RevisionStatus, MANAGED_BY_TAG, MANAGED_BY_VALUE, RESOURCE_TAG};
    use crate::observed::*;
    use crate::record::On;
    use serde_json::json;
    use std::collections::BTreeMap;

    const TD1: &str = "arn:aws:ecs:us-east-1:1:task-definition/harness-delegate-task-spec:1";

    fn spec(extra: Value) -> DelegateSpec {
        let mut v = json!({"ClusterName": "prod", "AccountId": "a", "DelegateToken": "t"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        crate::spec::parse(&v).unwrap()
    }

    fn fargate() -> Value {
        json!({"LaunchType": "FARGATE", "ExecutionRoleArn": "arn:aws:iam::1:role/e"})
    }

    fn ours() -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY_TAG.to_string(), MANAGED_BY_VALUE.to_string()),
            (
                RESOURCE_TAG.to_string(),
                "prod/harness-delegate".to_string(),
            ),
        ])
    }

    fn owned_by(owner: &str) -> BTreeMap<String, String> {
        let mut t = ours();
        t.insert(crate::OWNER_TAG.to_string(), owner.to_string());
        t
    }

    fn subnet(id: &str, public: bool) -> ObservedSubnet {
        ObservedSubnet {
            id: id.into(),
            vpc_id: "vpc-1".into(),
            availability_zone: "a".into(),
            public,
        }
    }

    /// The world in which `spec` is already fully converged, its record written.
    fn converged(s: &DelegateSpec) -> Observed {
        let mut o = converged_unrecorded(s);
        let mut record = plan(s, &o).desired.record;
        record.applied_at = 1;
        o.service
            .as_mut()
            .unwrap()
            .tags
            .extend(record.tags(On::Service));
        let td = o.latest_task_definition.as_mut().unwrap();
        td.tags.extend(record.tags(On::Revision));
        o
    }

    /// The world in which `spec` is converged by a version that wrote no record.
    fn converged_unrecorded(s: &DelegateSpec) -> Observed {
        let doc = crate::task_definition::render(s);
        let awsvpc = s.network_mode == NetworkMode::Awsvpc;
        Observed {
            cluster: Some(ObservedCluster {
                arn: "arn:c".into(),
                name: "prod".into(),
                status: ClusterStatus::Active,
            }),
            network: ObservedNetwork {
                vpc_id: Some("vpc-1".into()),
                vpc_exists: true,
                subnets: vec![
                    subnet("subnet-priv1", false),
                    subnet("subnet-priv2", false),
                    subnet("subnet-pub", true),
                ],
                managed_security_group: awsvpc.then(|| ObservedSecurityGroup {
                    id: "sg-ours".into(),
                    vpc_id: "vpc-1".into(),
                    name: "harness-delegate-delegate".into(),
                    tags: ours(),
                }),
                ..Default::default()
            },
            latest_task_definition: Some(ObservedTaskDefinition {
                arn: TD1.into(),
                revision: 1,
                status: RevisionStatus::Active,
                doc,
                tags: ours(),
            }),
            service: Some(ObservedService {
                arn: "arn:aws:ecs:us-east-1:1:service/prod/harness-delegate".into(),
                name: "harness-delegate".into(),
                status: ServiceStatus::Active,
                desired_count: s.desired_count,
                task_definition: TD1.into(),
                launch_type: Some(s.launch_type),
                network: awsvpc.then(|| AwsvpcConfig {
                    subnets: ["subnet-priv1", "subnet-priv2"]
                        .iter()
                        .map(|x| x.to_string())
                        .collect(),
                    security_groups: ["sg-ours".to_string()].into(),
                    assign_public_ip: AssignPublicIp::Disabled,
                }),
                tags: ours(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn names(actions: &[Action]) -> Vec<&'static str> {
        actions.iter().map(Action::name).collect()
    }

    fn delete_names(actions: &[DeleteAction]) -> Vec<&'static str> {
        actions.iter().map(DeleteAction::name).collect()
    }

    /// One row per situation: (what, spec properties, how the world differs from converged,
    /// expected actions, text the reasons must contain).
    #[test]
    fn reconcile_table() {
        type Tweak = fn(&mut Observed);
        let rows: Vec<(&str, Value, Tweak, Vec<&str>, &str)> = vec![
            (
                "converged: nothing to do",
                json!({}),
                |_| {},
                vec![],
                "nothing to change",
            ),
            (
                "converged fargate: nothing to do",
                fargate(),
                |_| {},
                vec![],
                "nothing to change",
            ),
            (
                "nothing exists yet",
                fargate(),
                |o| {
                    o.service = None;
                    o.latest_task_definition = None;
                    o.network.managed_security_group = None;
                },
                vec![
                    "CreateSecurityGroup",
                    "RegisterTaskDefinition",
                    "CreateService",
                ],
                "has no ACTIVE revision",
            ),
            (
                "service missing",
                json!({}),
                |o| o.service = None,
                vec!["CreateService"],
                "does not exist",
            ),
            (
                "service INACTIVE",
                json!({}),
                |o| o.service.as_mut().unwrap().status = ServiceStatus::Inactive,
                vec!["CreateService"],
                "INACTIVE",
            ),
            (
                "service DRAINING",
                json!({}),
                |o| o.service.as_mut().unwrap().status = ServiceStatus::Draining,
                vec!["WaitForServiceDrain", "CreateService"],
                "DRAINING",
            ),
            (
                "desired count drifted",
                json!({}),
                |o| o.service.as_mut().unwrap().desired_count = 0,
                vec!["UpdateService"],
                "desired count 0 -> 1",
            ),
            (
                "task definition changed",
                json!({}),
                |o| {
                    o.latest_task_definition.as_mut().unwrap().doc["containerDefinitions"][0]
                        ["image"] = json!("harness/delegate:old");
                },
                vec!["RegisterTaskDefinition", "RecordSpec", "UpdateService"],
                "container image",
            ),
            (
                "service on another revision",
                json!({}),
                |o| o.service.as_mut().unwrap().task_definition = "arn:other:7".into(),
                vec!["UpdateService"],
                "task definition -> harness-delegate-task-spec:1",
            ),
            (
                "subnets changed",
                fargate(),
                |o| {
                    o.service
                        .as_mut()
                        .unwrap()
                        .network
                        .as_mut()
                        .unwrap()
                        .subnets = ["subnet-pub".to_string()].into();
                },
                vec!["UpdateService"],
                "subnets subnet-pub -> subnet-priv1,subnet-priv2",
            ),
            (
                "security group deleted",
                fargate(),
                |o| o.network.managed_security_group = None,
                // The record names the group, so the new one is recorded.
                vec!["CreateSecurityGroup", "RecordSpec", "UpdateService"],
                "a new group",
            ),
            (
                "public ip changed",
                fargate(),
                |o| {
                    o.service
                        .as_mut()
                        .unwrap()
                        .network
                        .as_mut()
                        .unwrap()
                        .assign_public_ip = AssignPublicIp::Enabled;
                },
                vec!["UpdateService"],
                "public IP ENABLED -> DISABLED",
            ),
            (
                "launch type changed",
                fargate(),
                |o| o.service.as_mut().unwrap().launch_type = Some(LaunchType::Ec2),
                vec!["RecreateService"],
                "from EC2 to FARGATE",
            ),
            (
                "network mode changed",
                json!({}),
                |o| {
                    o.service.as_mut().unwrap().network = Some(AwsvpcConfig {
                        subnets: Default::default(),
                        security_groups: Default::default(),
                        assign_public_ip: AssignPublicIp::Disabled,
                    });
                },
                vec!["RecreateService"],
                "from awsvpc to bridge",
            ),
            (
                "revision deregistered, service still on it",
                json!({}),
                |o| o.latest_task_definition = None,
                vec!["RegisterTaskDefinition", "RecordSpec", "UpdateService"],
                "has no ACTIVE revision",
            ),
            (
                "given security groups differ from the service's (its labels current): the service is updated",
                json!({"LaunchType": "FARGATE", "ExecutionRoleArn": "arn:aws:iam::1:role/e", "SecurityGroupIds": "sg-1,sg-2"}),
                |_| {},
                vec!["UpdateService"],
                "security groups sg-ours -> sg-1,sg-2",
            ),
            (
                "tags changed along with a replacement: the new service is created with them (no TagService), the group is tagged",
                json!({"LaunchType": "FARGATE", "ExecutionRoleArn": "arn:aws:iam::1:role/e", "Tags": {"cost-center": "42"}}),
                |o| {
                    let s = o.service.as_mut().unwrap();
                    s.launch_type = Some(LaunchType::Ec2);
                    s.tags.remove("cost-center");
                },
                vec!["RecreateService", "TagSecurityGroup"],
                "from EC2 to FARGATE",
            ),
        ];
        for (what, props, tweak, expected, reason_has) in rows {
            let s = spec(props);
            let mut o = converged(&s);
            tweak(&mut o);
            let p = plan(&s, &o);
            assert_eq!(names(&p.actions), expected, "{what}");
            let text = p.summary();
            assert!(
                text.contains(reason_has),
                "{what}: reasons {text} lack {reason_has:?}"
            );
        }
    }

    #[test]
    fn a_shared_family_does_not_leapfrog() {
        // Another delegate registered a newer revision of the shared family; ours still runs the
        // revision that matches its spec, so nothing is registered or redeployed.
        let s = spec(json!({}));
        let mut o = converged(&s);
        let mine = o.latest_task_definition.clone().unwrap();
        let mut theirs = mine.clone();
        theirs.arn = "arn:aws:ecs:us-east-1:1:task-definition/harness-delegate-task-spec:2".into();
        theirs.revision = 2;
        theirs.doc["containerDefinitions"][0]["image"] = json!("someone/else");
        o.latest_task_definition = Some(theirs);
        o.current_task_definition = Some(mine);
        assert_eq!(names(&plan(&s, &o).actions), Vec::<&str>::new());
        // A matching revision registered for the same delegate in another cluster is not
        // shared: each delegate keeps its record on a revision of its own.
        let mut o2 = o.clone();
        let other = o2.current_task_definition.as_mut().unwrap();
        other
            .tags
            .insert(RESOURCE_TAG.into(), "other-cluster/harness-delegate".into());
        assert_eq!(
            names(&plan(&s, &o2).actions),
            vec!["RegisterTaskDefinition", "RecordSpec", "UpdateService"]
        );
        // A deregistered revision is not reused, even when it matches.
        o.current_task_definition.as_mut().unwrap().status = RevisionStatus::Inactive;
        let p = plan(&s, &o);
        assert_eq!(
            names(&p.actions),
            vec!["RegisterTaskDefinition", "RecordSpec", "UpdateService"]
        );
        // Nor is a revision of another family (TaskDefinitionFamily changed).
        let moved = spec(json!({"TaskDefinitionFamily": "new-family"}));
        let mut o = converged(&s);
        o.current_task_definition = o.latest_task_definition.take();
        let p = plan(&moved, &o);
        assert_eq!(
            names(&p.actions),
            vec!["RegisterTaskDefinition", "RecordSpec", "UpdateService"]
        );
    }

    #[test]
    fn a_replacement_records_the_new_configuration_on_the_old_service_first() {
        // While the old service drains, its labels already show the new configuration.
        let s = spec(fargate());
        let o = converged(&spec(json!({})));
        let p = plan(&s, &o);
        assert_eq!(
            names(&p.actions),
            vec![
                "CreateSecurityGroup",
                "RegisterTaskDefinition",
                "RecordSpec",
                "RecreateService"
            ]
        );
        assert!(matches!(
            &p.actions[2],
            Action::RecordSpec {
                on_service: true,
                ..
            }
        ));
    }

    #[test]
    fn a_stack_adopts_a_service_created_without_an_owner_last() {
        let mut s = spec(json!({"DesiredCount": "2"}));
        let o = converged(&spec(json!({})));
        s.owner = Some(crate::model::OwnerLabel::from_tag("stack/Delegate"));
        let p = plan(&s, &o);
        assert_eq!(
            names(&p.actions),
            vec!["RecordSpec", "UpdateService", "TagService"]
        );
        // Its own service needs no tagging; another stack's is refused in pre-flight, not here.
        let mut o = o;
        let tags = &mut o.service.as_mut().unwrap().tags;
        tags.insert(crate::OWNER_TAG.into(), "stack/Delegate".into());
        assert_eq!(
            names(&plan(&s, &o).actions),
            vec!["RecordSpec", "UpdateService"]
        );
    }

    #[test]
    fn changed_tags_are_added_to_the_service_and_group() {
        let s = spec(
            json!({"LaunchType": "FARGATE", "ExecutionRoleArn": "arn:aws:iam::1:role/e", "Tags": {"cost-center": "42"}}),
        );
        let o = converged(&spec(fargate()));
        let p = plan(&s, &o);
        assert_eq!(names(&p.actions), vec!["TagSecurityGroup", "TagService"]);
        let Action::TagService { tags, reason, .. } = &p.actions[1] else {
            panic!()
        };
        assert_eq!(
            tags,
            &BTreeMap::from([("cost-center".to_string(), "42".to_string())])
        );
        assert!(reason.contains("cost-center"), "{reason}");
    }

    #[test]
    fn update_sends_only_what_changed() {
        let s = spec(json!({"DesiredCount": "3"}));
        let o = converged(&spec(json!({})));
        let p = plan(&s, &o);
        // The labels first (put back if the run fails), then only the count.
        assert!(
            matches!(&p.actions[0], Action::RecordSpec { on_service: true, on_revision: true, previous_service, .. }
                if previous_service[record::SERVICE_TAG] == "launch=EC2 network=bridge desired=1"),
            "{:?}",
            p.actions[0]
        );
        assert_eq!(
            p.actions[1..],
            vec![Action::UpdateService {
                service: "harness-delegate".into(),
                desired_count: Some(3),
                task_definition: false,
                network: false,
                reason: "desired count 1 -> 3".into(),
                mark_redeployed: false,
            }]
        );
        assert_eq!(p.desired.task_definition_arn.as_deref(), Some(TD1));
    }

    #[test]
    fn memory_change_registers_and_updates() {
        let s = spec(json!({"Memory": "8192"}));
        let p = plan(&s, &converged(&spec(json!({}))));
        assert_eq!(
            names(&p.actions),
            vec!["RegisterTaskDefinition", "RecordSpec", "UpdateService"]
        );
        let text = serde_json::to_string(&p.actions).unwrap();
        assert!(text.contains("differs in memory"), "{text}");
    }

    #[test]
    fn token_change_is_named_not_shown() {
        let s = spec(json!({"DelegateToken": "new-secret-value"}));
        let p = plan(&s, &converged(&spec(json!({}))));
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains("environment DELEGATE_TOKEN"), "{text}");
        assert!(!text.contains("new-secret-value"));
        // Nor in `Debug`: of the plan, or of a revision observe described with the token.
        let described = converged(&s).latest_task_definition;
        let shown_env = r#"{"name":"DELEGATE_TOKEN","value":"<redacted>"}"#;
        for debug in [format!("{p:?}"), format!("{described:?}")] {
            assert!(debug.contains(shown_env), "{debug}");
            assert!(!debug.contains("new-secret-value"), "{debug}");
        }
    }

    #[test]
    fn network_choice() {
        let s = spec(fargate());
        let mut o = converged(&s);
        let n = desired_network(&s, &o).unwrap();
        assert_eq!(n.subnets, vec!["subnet-priv1", "subnet-priv2"]);
        assert_eq!(n.assign_public_ip, AssignPublicIp::Disabled);
        // Only public subnets: use them, with a public IP (Fargate only).
        o.network.subnets = vec![subnet("subnet-pub", true)];
        let n = desired_network(&s, &o).unwrap();
        assert_eq!(
            (n.subnets.clone(), n.assign_public_ip),
            (vec!["subnet-pub".to_string()], AssignPublicIp::Enabled)
        );
        let ec2 = spec(json!({"NetworkMode": "awsvpc"}));
        assert_eq!(
            desired_network(&ec2, &o).unwrap().assign_public_ip,
            AssignPublicIp::Disabled
        );
        // Given groups are used as they are, and no group is created.
        let given = spec(
            json!({"LaunchType": "FARGATE", "ExecutionRoleArn": "arn:aws:iam::1:role/e", "SecurityGroupIds": "sg-1,sg-2"}),
        );
        let n = desired_network(&given, &o).unwrap();
        assert_eq!(
            n.security_groups,
            vec![
                SecurityGroupRef::Existing("sg-1".into()),
                SecurityGroupRef::Existing("sg-2".into())
            ]
        );
        assert!(desired_network(&spec(json!({})), &o).is_none());
    }

    #[test]
    fn tombstone_table() {
        const ROLE: &str = "arn:aws:iam::123456789012:role/path/stack-Role-1A";
        let svc = |status, by: Option<&str>, tags| ObservedService {
            name: "harness-delegate".into(),
            status,
            tags,
            created_by: by.map(String::from),
            ..Default::default()
        };
        // Case, the service of the name, the function's role, the verdict, why.
        type Row<'a> = (
            &'a str,
            Option<ObservedService>,
            Option<&'a str>,
            &'a str,
            &'a str,
        );
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("nothing there", None, Some(ROLE), "Nothing", "nothing to resurrect"),
            ("deleted service", Some(svc(ServiceStatus::Inactive, Some(ROLE), ours())), Some(ROLE), "Nothing", "nothing to resurrect"),
            ("draining away", Some(svc(ServiceStatus::Draining, Some(ROLE), ours())), Some(ROLE), "Nothing", "nothing to resurrect"),
            ("created by the function's role", Some(svc(ServiceStatus::Active, Some(ROLE), ours())), Some(ROLE), "Remove", "created by this function's role"),
            ("created by an assumed-role session", Some(svc(ServiceStatus::Active, Some("arn:aws:sts::123456789012:assumed-role/stack-Role-1A/fn"), ours())), Some(ROLE), "Remove", "landed late"),
            ("the same role name in another account", Some(svc(ServiceStatus::Active, Some("arn:aws:sts::999999999999:assumed-role/stack-Role-1A/fn"), ours())), Some(ROLE), "LeftAlone", "not by this function"),
            ("our tags, created by a person", Some(svc(ServiceStatus::Active, Some("arn:aws:iam::123456789012:user/x"), ours())), Some(ROLE), "LeftAlone", "carries the delegate's tags but was created by arn:aws:iam::123456789012:user/x"),
            ("someone else's service of the name", Some(svc(ServiceStatus::Active, Some("arn:aws:iam::123456789012:user/x"), BTreeMap::new())), Some(ROLE), "LeftAlone", "service harness-delegate was created by"),
            ("no createdBy", Some(svc(ServiceStatus::Active, None, ours())), Some(ROLE), "LeftAlone", "an unknown principal"),
            ("the function's role unknown", Some(svc(ServiceStatus::Active, Some(ROLE), ours())), None, "LeftAlone", "without FUNCTION_ROLE_ARN"),
        ];
        for (case, service, role, verdict, why) in rows {
            let got = plan_tombstone(service.as_ref(), role);
            let (name, text) = match &got {
                Tombstoned::Nothing(t) => ("Nothing", t.clone()),
                Tombstoned::LeftAlone(t) => ("LeftAlone", t.clone()),
                Tombstoned::Remove(a) => ("Remove", a.reason().to_string()),
            };
            assert_eq!(name, verdict, "{case}: {got:?}");
            assert!(text.contains(why), "{case}: {text}");
        }
    }

    #[test]
    fn delete_table() {
        let svc = |tags: BTreeMap<String, String>, status: ServiceStatus| ObservedService {
            arn: "arn:svc".into(),
            name: "harness-delegate".into(),
            status,
            desired_count: 1,
            task_definition: TD1.into(),
            launch_type: Some(LaunchType::Ec2),
            network: None,
            tags,
            ..Default::default()
        };
        let sg = ObservedSecurityGroup {
            id: "sg-ours".into(),
            vpc_id: "vpc-1".into(),
            name: "harness-delegate-delegate".into(),
            tags: Default::default(),
        };
        const STACK: Option<&str> = Some("stack/Delegate");
        type Row<'a> = (
            &'a str,
            Option<&'a str>,
            ObservedForDelete,
            Vec<&'a str>,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (
                "nothing there",
                STACK,
                ObservedForDelete::default(),
                vec![],
                "nothing of this delegate's is left",
            ),
            (
                "everything ours",
                STACK,
                ObservedForDelete {
                    service: Some(svc(owned_by("stack/Delegate"), ServiceStatus::Active)),
                    our_revisions: vec![TD1.into()],
                    used_by_other_services: Default::default(),
                    managed_security_groups: vec![sg.clone()],
                    records: vec![("arn:svc".into(), vec![record::APPLIED_AT_TAG.into()])],
                },
                vec![
                    "RemoveRecord",
                    "DeleteService",
                    "DeregisterTaskDefinition",
                    "DeleteSecurityGroup",
                ],
                "the record's labels (its item is already marked deleted",
            ),
            (
                "revision shared with another delegate",
                STACK,
                ObservedForDelete {
                    service: Some(svc(owned_by("stack/Delegate"), ServiceStatus::Active)),
                    our_revisions: vec![TD1.into()],
                    used_by_other_services: ["harness-delegate-task-spec:1".to_string()].into(),
                    managed_security_groups: vec![],
                    records: vec![],
                },
                vec!["DeleteService"],
                "scale to 0 and delete",
            ),
            (
                "service not ours",
                STACK,
                ObservedForDelete {
                    service: Some(svc(Default::default(), ServiceStatus::Active)),
                    ..Default::default()
                },
                vec![],
                "belongs to no stack (a direct invocation or another tool), not to this stack's delegate: left alone",
            ),
            (
                "service already deleted",
                STACK,
                ObservedForDelete {
                    service: Some(svc(ours(), ServiceStatus::Inactive)),
                    ..Default::default()
                },
                vec![],
                "nothing of this delegate's is left",
            ),
            (
                "made by a direct invocation: a stack's Delete leaves it",
                STACK,
                ObservedForDelete {
                    service: Some(svc(ours(), ServiceStatus::Active)),
                    ..Default::default()
                },
                vec![],
                "belongs to no stack",
            ),
            (
                "another stack's delegate",
                STACK,
                ObservedForDelete {
                    service: Some(svc(owned_by("other-stack/Delegate"), ServiceStatus::Active)),
                    our_revisions: vec![TD1.into()],
                    used_by_other_services: Default::default(),
                    managed_security_groups: vec![sg.clone()],
                    records: vec![(TD1.into(), vec![record::APPLIED_AT_TAG.into()])],
                },
                vec![],
                "belongs to other-stack/Delegate, not to this stack's delegate: left alone",
            ),
            (
                "this stack's delegate",
                STACK,
                ObservedForDelete {
                    service: Some(svc(owned_by("stack/Delegate"), ServiceStatus::Active)),
                    ..Default::default()
                },
                vec!["DeleteService"],
                "the delegate is being deleted",
            ),
            (
                "this stack's delegate, its service still draining: deleted again",
                STACK,
                ObservedForDelete {
                    service: Some(svc(owned_by("stack/Delegate"), ServiceStatus::Draining)),
                    ..Default::default()
                },
                vec!["DeleteService"],
                "the delegate is being deleted",
            ),
            (
                "a direct Delete: any managed delegate, whichever stack's",
                None,
                ObservedForDelete {
                    service: Some(svc(owned_by("other-stack/Delegate"), ServiceStatus::Active)),
                    ..Default::default()
                },
                vec!["DeleteService"],
                "the delegate is being deleted",
            ),
            (
                "a direct Delete of a service the function did not make: left as it is",
                None,
                ObservedForDelete {
                    service: Some(svc(Default::default(), ServiceStatus::Active)),
                    ..Default::default()
                },
                vec![],
                "nothing of this delegate's is left to remove",
            ),
        ];
        for (what, owner, o, expected, reason) in rows {
            let owner = owner.map(OwnerLabel::from_tag);
            let p = plan_delete("harness-delegate", &o, owner.as_ref());
            assert_eq!(delete_names(&p.actions), expected, "{what}");
            let said = p.summary();
            assert!(said.contains(reason), "{what}: {said} lacks {reason:?}");
        }
    }

    /// One row per situation an upgrade run meets: (what, how the delegate differs from steady on
    /// its committed revision, the steps, or what the refusal must say).
    #[test]
    fn upgrade_table() {
        type Tweak = fn(&mut ObservedForHeal);
        /// The steps, or what the refusal must say.
        type Want = Result<Vec<&'static str>, &'static str>;
        fn service(o: &mut ObservedForHeal) -> &mut ObservedService {
            o.service.as_mut().unwrap()
        }
        let rows: Vec<(&str, Tweak, Want)> = vec![
            (
                "steady on its committed revision: a copy with the new image, deployed",
                |_| {},
                Ok(vec![
                    "RegisterTaskDefinition",
                    "RecordSpec",
                    "UpdateService",
                ]),
            ),
            (
                "no service",
                |o| o.service = None,
                Err("missing or not ACTIVE"),
            ),
            (
                "a draining service",
                |o| service(o).status = ServiceStatus::Draining,
                Err("missing or not ACTIVE"),
            ),
            (
                "a service that is not the delegate's",
                |o| {
                    service(o).tags.remove(RESOURCE_TAG);
                },
                Err("is not this delegate's"),
            ),
            (
                "a service another stack owns",
                |o| {
                    let tags = &mut service(o).tags;
                    tags.insert(crate::OWNER_TAG.into(), "other/Delegate".into());
                },
                Err("now belongs to other/Delegate"),
            ),
            (
                "running another revision than the committed one",
                |o| service(o).task_definition = TD1.replace(":1", ":2"),
                Err("not steady on its committed revision"),
            ),
            (
                "a rollout in progress",
                |o| {
                    let d = service(o).deployment.as_mut().unwrap();
                    d.rollout_state = Some(RolloutState::InProgress);
                },
                Err("not steady on its committed revision"),
            ),
            (
                "fewer tasks running than desired",
                |o| service(o).running_count = 0,
                Err("(0 of 1 running"),
            ),
            (
                "a committed revision the function did not render",
                |o| {
                    let doc = &mut o.revision.as_mut().unwrap().doc;
                    doc["containerDefinitions"][0]["name"] = json!("app");
                },
                Err("has no container named ecs-delegate"),
            ),
        ];
        let to = crate::harness::DelegateVersion::parse("25.11.87300").unwrap();
        let image = "harness/delegate:25.11.87300";
        for (what, tweak, want) in rows {
            let (r, mut o) = recorded();
            tweak(&mut o);
            let revision = o.revision.as_ref().unwrap();
            match (
                plan_upgrade(&r, revision, o.service.as_ref(), image, &to),
                want,
            ) {
                (Ok(p), Ok(steps)) => {
                    assert_eq!(names(&p.actions), steps, "{what}");
                    let containers = &p.desired.task_definition["containerDefinitions"];
                    assert_eq!(containers[0]["image"], image, "{what}");
                    assert_eq!(p.desired.registered_after, revision.revision, "{what}");
                    let said = p.actions[0].reason().to_string();
                    assert!(said.contains("25.11.87300"), "{what}: {said}");
                }
                (Err(e), Err(text)) => assert!(e.contains(text), "{what}: {e} lacks {text:?}"),
                (got, want) => panic!("{what}: got {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn a_rollback_deploys_the_committed_revision_again() {
        let (r, _) = recorded();
        let p = plan_rollback(&r, TD1, "harness-delegate", "harness-delegate-task-spec:2");
        assert_eq!(names(&p.actions), vec!["RecordSpec", "UpdateService"]);
        assert_eq!(p.desired.task_definition_arn.as_deref(), Some(TD1));
        let said = p.actions[1].reason().to_string();
        assert!(
            said.starts_with("harness-delegate-task-spec:2 did not become ready"),
            "{said}"
        );
        assert!(said.ends_with(&r.task_definition), "{said}");
    }

    /// A Fargate delegate converged by a stack: its record (read here from its labels, which
    /// hold the same record as its item), and a world exactly as recorded.
    fn recorded() -> (Record, ObservedForHeal) {
        let s = spec(fargate());
        let mut o = converged(&s);
        let record = Record::from_tags(&o.service.as_ref().unwrap().tags, None)
            .unwrap()
            .unwrap();
        let service = o.service.take();
        let healthy = ObservedForHeal {
            cluster_status: Some(ClusterStatus::Active),
            service: service.map(|s| ObservedService {
                running_count: 1,
                deployment: Some(ObservedDeployment {
                    rollout_state: Some(RolloutState::Completed),
                    failed_tasks: 0,
                    running_count: 1,
                    ..Default::default()
                }),
                ..s
            }),
            revision: o.latest_task_definition.take(),
            managed_security_group: o.network.managed_security_group.take(),
            unused_security_groups: vec![],
            last_redeploy: None,
        };
        (record, healthy)
    }

    fn unused_group() -> ObservedSecurityGroup {
        ObservedSecurityGroup {
            id: "sg-old".into(),
            vpc_id: "vpc-old".into(),
            name: "harness-delegate-delegate".into(),
            tags: BTreeMap::new(),
        }
    }

    /// The repair matrix, one row per situation: (what, how the world differs from the record,
    /// expected actions (`None`: nothing can be done), text the reasons must contain).
    #[test]
    fn heal_table() {
        const NOW: u64 = 1_800_000_000;
        const BACKOFF: u64 = 3600;
        type Tweak = fn(&mut ObservedForHeal);
        fn svc(o: &mut ObservedForHeal) -> &mut ObservedService {
            o.service.as_mut().unwrap()
        }
        fn crash_loop(o: &mut ObservedForHeal) {
            let s = svc(o);
            s.running_count = 0;
            s.deployment.as_mut().unwrap().rollout_state = Some(RolloutState::InProgress);
            s.deployment.as_mut().unwrap().failed_tasks = 3;
        }
        let rows: Vec<(&str, Tweak, Option<Vec<&str>>, &str)> =
            vec![
            (
                "everything as recorded: no write",
                |_| {},
                Some(vec![]),
                "as recorded",
            ),
            (
                "service deleted (gone)",
                |o| o.service = None,
                Some(vec!["CreateService"]),
                "was deleted",
            ),
            (
                "service deleted (INACTIVE)",
                |o| svc(o).status = ServiceStatus::Inactive,
                Some(vec!["CreateService"]),
                "INACTIVE",
            ),
            (
                "service DRAINING (being replaced or deleted): heal waits for the next run",
                |o| svc(o).status = ServiceStatus::Draining,
                Some(vec![]),
                "DRAINING (being replaced or deleted): nothing is done now",
            ),
            (
                "desired count lowered out of band",
                |o| svc(o).desired_count = 0,
                Some(vec!["UpdateService"]),
                "desired count 0 -> 1",
            ),
            (
                "desired count raised out of band",
                |o| svc(o).desired_count = 5,
                Some(vec!["UpdateService"]),
                "desired count 5 -> 1",
            ),
            (
                "recorded revision deregistered",
                |o| o.revision.as_mut().unwrap().status = RevisionStatus::Inactive,
                Some(vec![
                    "RegisterTaskDefinition",
                    "RecordSpec",
                    "UpdateService",
                ]),
                "was deregistered (INACTIVE): a copy of it is registered",
            ),
            (
                "service moved to a revision that is not ours",
                |o| {
                    svc(o).task_definition =
                        "arn:aws:ecs:us-east-1:1:task-definition/other:9".into()
                },
                Some(vec!["UpdateService"]),
                "task definition -> harness-delegate-task-spec:1",
            ),
            (
                "subnets changed out of band",
                |o| svc(o).network.as_mut().unwrap().subnets = ["subnet-pub".to_string()].into(),
                Some(vec!["UpdateService"]),
                "subnets subnet-pub -> subnet-priv1,subnet-priv2",
            ),
            (
                "security groups changed out of band",
                |o| {
                    svc(o).network.as_mut().unwrap().security_groups =
                        ["sg-open".to_string()].into()
                },
                Some(vec!["UpdateService"]),
                "security groups sg-open -> sg-ours",
            ),
            (
                "public IP changed out of band",
                |o| svc(o).network.as_mut().unwrap().assign_public_ip = AssignPublicIp::Enabled,
                Some(vec!["UpdateService"]),
                "public IP ENABLED -> DISABLED",
            ),
            (
                "a group the function made that the delegate no longer uses (another VPC's)",
                |o| o.unused_security_groups = vec![unused_group()],
                Some(vec!["DeleteUnusedSecurityGroup"]),
                "whose configuration no longer uses it",
            ),
            (
                "the same while the service must change: the group waits for the next heal",
                |o| {
                    o.unused_security_groups = vec![unused_group()];
                    svc(o).desired_count = 0;
                },
                Some(vec!["UpdateService"]),
                "desired count 0 -> 1",
            ),
            (
                "our security group deleted",
                |o| o.managed_security_group = None,
                Some(vec!["CreateSecurityGroup", "UpdateService"]),
                "security group was deleted",
            ),
            (
                "latest deployment FAILED",
                |o| svc(o).deployment.as_mut().unwrap().rollout_state = Some(RolloutState::Failed),
                Some(vec!["ForceNewDeployment"]),
                "the latest deployment FAILED",
            ),
            (
                "tasks keep stopping",
                crash_loop,
                Some(vec!["ForceNewDeployment"]),
                "0 of 1 running, 3 failed in a row",
            ),
            (
                "tasks keep stopping, redeployed inside the back-off window",
                |o| {
                    crash_loop(o);
                    o.last_redeploy = Some(NOW - 600);
                },
                Some(vec![]),
                "3 failed in a row; heal made it deploy 600s ago",
            ),
            (
                "tasks keep stopping, last redeploy before the window",
                |o| {
                    crash_loop(o);
                    o.last_redeploy = Some(NOW - BACKOFF - 1);
                },
                Some(vec!["ForceNewDeployment"]),
                "at most once every 3600s",
            ),
            (
                "tasks keep stopping, and a redeployed-at tag (anyone may write one) says just now",
                |o| {
                    crash_loop(o);
                    let t = ("harness-delegate:redeployed-at".to_string(), NOW.to_string());
                    svc(o).tags.extend([t]);
                },
                Some(vec!["ForceNewDeployment"]),
                "at most once every 3600s",
            ),
            (
                "fewer running than desired, but no task failed (starting up)",
                |o| svc(o).running_count = 0,
                Some(vec![]),
                "as recorded",
            ),
            (
                "launch type changed out of band: heal does not replace a running service",
                |o| svc(o).launch_type = Some(LaunchType::Ec2),
                None,
                "from EC2 to FARGATE",
            ),
            (
                "network mode changed out of band (no awsvpc configuration): not replaced either",
                |o| svc(o).network = None,
                None,
                "network mode changes from bridge to awsvpc",
            ),
            (
                "pointed back at our revision inside the back-off window, moved away again",
                |o| {
                    svc(o).task_definition =
                        "arn:aws:ecs:us-east-1:1:task-definition/other:9".into();
                    o.last_redeploy = Some(NOW - 60);
                },
                Some(vec![]),
                "task definition -> harness-delegate-task-spec:1; heal made it deploy 60s ago",
            ),
            (
                "the same, with the count drifted too: only the count is set back",
                |o| {
                    svc(o).task_definition =
                        "arn:aws:ecs:us-east-1:1:task-definition/other:9".into();
                    svc(o).desired_count = 0;
                    o.last_redeploy = Some(NOW - 60);
                },
                Some(vec!["UpdateService"]),
                "desired count 0 -> 1",
            ),
            (
                "failed tasks of a deployment that COMPLETED long ago do not count",
                |o| {
                    svc(o).running_count = 0;
                    svc(o).deployment.as_mut().unwrap().failed_tasks = 5;
                },
                Some(vec![]),
                "as recorded",
            ),
            (
                "the service now belongs to another stack",
                |o| {
                    let tags = &mut svc(o).tags;
                    tags.insert(crate::OWNER_TAG.into(), "other-stack/Delegate".into());
                },
                None,
                "now belongs to other-stack/Delegate",
            ),
            (
                "cluster gone",
                |o| o.cluster_status = None,
                None,
                "no longer exists: nothing can be healed, and no cluster is created",
            ),
            (
                "cluster INACTIVE",
                |o| o.cluster_status = Some(ClusterStatus::Inactive),
                None,
                "is INACTIVE: nothing can be healed",
            ),
            (
                "recorded revision deleted for good",
                |o| o.revision = None,
                None,
                "run a stack Update",
            ),
            (
                "the name now belongs to a service that is not the delegate's",
                |o| svc(o).tags.clear(),
                None,
                "is not this delegate's",
            ),
        ];
        for (what, tweak, expected, text) in rows {
            let (record, mut o) = recorded();
            tweak(&mut o);
            let backoff = Backoff {
                now: NOW,
                window: BACKOFF,
            };
            match (plan_heal(&record, &o, backoff), expected) {
                (Ok(p), Some(expected)) => {
                    assert_eq!(names(&p.plan.actions), expected, "{what}");
                    let said = p.summary();
                    assert!(said.contains(text), "{what}: {said} lacks {text:?}");
                }
                (Err(e), None) => assert!(e.to_string().contains(text), "{what}: {e}"),
                (got, want) => panic!("{what}: got {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn heal_notes_a_crash_loop_inside_its_back_off() {
        let (record, mut o) = recorded();
        let s = o.service.as_mut().unwrap();
        s.deployment.as_mut().unwrap().rollout_state = Some(RolloutState::Failed);
        o.last_redeploy = Some(1000);
        let p = plan_heal(
            &record,
            &o,
            Backoff {
                now: 1600,
                window: 3600,
            },
        )
        .unwrap();
        assert!(p.plan.actions.is_empty());
        assert_eq!(
            p.notes,
            vec!["the latest deployment FAILED; heal made it deploy 600s ago, the next no sooner than 3600s after that"]
        );
    }

    #[test]
    fn heal_recreates_a_deleted_service_as_recorded() {
        let (record, mut o) = recorded();
        o.service = None;
        let p = plan_heal(&record, &o, Backoff { now: 0, window: 0 })
            .unwrap()
            .plan;
        let n = p.desired.network.unwrap().resolved(None);
        assert_eq!(
            n.subnets,
            ["subnet-priv1", "subnet-priv2"].map(String::from).into()
        );
        assert_eq!(n.security_groups, ["sg-ours".to_string()].into());
        assert_eq!(n.assign_public_ip, AssignPublicIp::Disabled);
        assert_eq!(p.desired.task_definition_arn.as_deref(), Some(TD1));
        assert_eq!(p.desired.record, record);
    }

    #[test]
    fn a_record_from_an_earlier_version_is_written_on_the_next_converge() {
        let s = spec(fargate());
        let o = converged_unrecorded(&s);
        let p = plan(&s, &o);
        assert_eq!(names(&p.actions), vec!["RecordSpec"]);
        assert!(matches!(
            &p.actions[0],
            Action::RecordSpec {
                on_service: true,
                on_revision: true,
                ..
            }
        ));
    }
}
