//! What observe saw of AWS, as plain data in the shared vocabulary: the cluster, its network,
//! roles, capacity, task definition revisions and the service, gathered into [`Observed`] (a
//! converge), [`ObservedForDelete`] and [`ObservedForHeal`]. No AWS SDK type appears here, so
//! preflight and plan, which read only these, stay pure.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::model::{
    self, AssignPublicIp, ClusterStatus, DelegateKey, HealthStatus, LaunchType, RevisionStatus,
    RolloutState, ServiceStatus, StopCode, TaskStatus,
};

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedCluster {
    pub arn: String,
    pub name: String,
    pub status: ClusterStatus,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedSubnet {
    pub id: String,
    pub vpc_id: String,
    pub availability_zone: String,
    /// Routed to an internet gateway (through its own or the VPC's main route table).
    pub public: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedSecurityGroup {
    pub id: String,
    pub vpc_id: String,
    pub name: String,
    pub tags: BTreeMap<String, String>,
}

impl ObservedSecurityGroup {
    /// Its owner tag, for the groups this function created.
    pub fn owner(&self) -> Option<model::OwnerLabel> {
        model::owner_of(&self.tags)
    }
}

/// Where the VPC the delegate runs in came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum VpcSource {
    Property,
    ContainerInstances,
    /// The VPC of the given `SubnetIds` (Fargate).
    Subnets,
    AwsvpcServices,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedNetwork {
    pub vpc_id: Option<String>,
    pub vpc_source: Option<VpcSource>,
    /// The VPCs the cluster spans, when they are several and none was chosen.
    pub vpc_candidates: Vec<String>,
    /// The VPCs of the cluster's container instances, where EC2 tasks run.
    pub instance_vpcs: Vec<String>,
    /// Whether the VPC (given or found) exists.
    pub vpc_exists: bool,
    /// The given `SubnetIds` that exist, or every subnet of the VPC when none were given.
    pub subnets: Vec<ObservedSubnet>,
    pub missing_subnets: Vec<String>,
    /// The given `SecurityGroupIds` that exist.
    pub security_groups: Vec<ObservedSecurityGroup>,
    pub missing_security_groups: Vec<String>,
    /// The group this function created for this delegate, if any.
    pub managed_security_group: Option<ObservedSecurityGroup>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedRole {
    pub property: &'static str,
    pub arn: String,
    /// `None`: the role does not exist.
    pub trusts_ecs_tasks: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedInstance {
    pub arn: String,
    pub ec2_instance_id: String,
    /// MiB; i64 so that any memory a spec asks for compares without a cast.
    pub remaining_memory: i64,
}

#[derive(Clone, PartialEq)]
pub struct ObservedTaskDefinition {
    pub arn: String,
    pub revision: i32,
    pub status: RevisionStatus,
    /// The supported fields, as a task definition document (the token included: see `Debug`).
    pub doc: Value,
    pub tags: BTreeMap<String, String>,
}

impl std::fmt::Debug for ObservedTaskDefinition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedTaskDefinition")
            .field("arn", &self.arn)
            .field("revision", &self.revision)
            .field("status", &self.status)
            .field("doc", &crate::document::Shown(&self.doc))
            .field("tags", &self.tags)
            .finish()
    }
}

impl ObservedTaskDefinition {
    pub fn is_active(&self) -> bool {
        self.status == RevisionStatus::Active
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AwsvpcConfig {
    pub subnets: BTreeSet<String>,
    pub security_groups: BTreeSet<String>,
    pub assign_public_ip: AssignPublicIp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedService {
    pub arn: String,
    pub name: String,
    pub status: ServiceStatus,
    pub desired_count: i32,
    pub task_definition: String,
    pub launch_type: Option<LaunchType>,
    pub network: Option<AwsvpcConfig>,
    pub tags: BTreeMap<String, String>,
    pub running_count: i32,
    /// The PRIMARY deployment (the one ECS is rolling out or has rolled out).
    pub deployment: Option<ObservedDeployment>,
    /// The principal that created the service, as ECS reports it: unlike tags, nobody can
    /// write it.
    pub created_by: Option<String>,
    /// The service's latest events (ECS keeps 100), newest first.
    pub events: Vec<ServiceEvent>,
}

/// One of a service's events: what the ECS scheduler said (a placement failure, a steady state).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceEvent {
    /// Epoch milliseconds.
    pub at_ms: u64,
    pub message: String,
}

/// One task of a service, as a wait reads it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedTask {
    pub arn: String,
    /// The revision's ARN.
    pub task_definition: String,
    pub status: TaskStatus,
    pub health: HealthStatus,
    /// Epoch milliseconds.
    pub created_at_ms: u64,
    pub stopped_at_ms: Option<u64>,
    pub stopped_reason: Option<String>,
    pub stop_code: Option<StopCode>,
    pub containers: Vec<ObservedContainer>,
}

/// A container of a task: why it stopped, if it did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedContainer {
    pub name: String,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
}

/// What a wait sees of a delegate's service: the service (its deployment and events) and its
/// tasks of the revision waited for, running and recently stopped.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedRollout {
    /// `None`: the service (or its cluster) is gone.
    pub service: Option<ObservedService>,
    pub tasks: Vec<ObservedTask>,
}

impl Default for ObservedService {
    fn default() -> Self {
        ObservedService {
            arn: String::new(),
            name: String::new(),
            status: ServiceStatus::Active,
            desired_count: 0,
            task_definition: String::new(),
            launch_type: None,
            network: None,
            tags: BTreeMap::new(),
            running_count: 0,
            deployment: None,
            created_by: None,
            events: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedDeployment {
    /// The revision it deploys (ARN).
    pub task_definition: String,
    /// `None`: ECS gives no rollout state for this deployment.
    pub rollout_state: Option<RolloutState>,
    /// Why it is in that state (the circuit breaker's words when it failed).
    pub rollout_reason: Option<String>,
    /// Tasks of this deployment that failed in a row (stopped before or after RUNNING).
    pub failed_tasks: i32,
    /// Tasks of this deployment (this configuration, this network) running now.
    pub running_count: i32,
}

impl ObservedDeployment {
    /// Rolled out: COMPLETED, or no rollout state (ECS gives none for some deployments).
    pub fn rolled_out(&self) -> bool {
        self.rollout_state
            .is_none_or(|r| r == crate::model::RolloutState::Completed)
    }
}

impl ObservedService {
    pub fn is_active(&self) -> bool {
        self.status == ServiceStatus::Active
    }

    pub fn managed_by_us(&self) -> bool {
        model::managed_by_us(&self.tags)
    }

    /// The CloudFormation resource that owns the service, if one does.
    pub fn owner(&self) -> Option<model::OwnerLabel> {
        model::owner_of(&self.tags)
    }

    /// Whether its tags name this delegate.
    pub fn is_delegate(&self, key: &DelegateKey) -> bool {
        key.tagged_on(&self.tags)
    }

    /// The owning stack's StackId tag, if any.
    pub fn owner_stack_id(&self) -> Option<&str> {
        self.tags.get(model::OWNER_STACK_TAG).map(String::as_str)
    }

    /// Whether a request from `owner` may change this service: its own, or one no stack owns
    /// yet (it is then adopted). Direct invocations (`None`) act on any managed service.
    pub fn may_adopt(&self, owner: Option<&model::OwnerLabel>) -> bool {
        match (self.owner(), owner) {
            (Some(have), Some(want)) => &have == want,
            _ => true,
        }
    }

    /// Whether a request from `owner` may delete this service: a CloudFormation resource only
    /// its own, so a failed Create's rollback never removes a delegate it did not make.
    pub fn owned_by(&self, owner: Option<&model::OwnerLabel>) -> bool {
        match owner {
            None => true,
            Some(want) => self.owner().as_ref() == Some(want),
        }
    }
}

/// Everything a reconcile plan needs to know.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// `None`: the cluster does not exist.
    pub cluster: Option<ObservedCluster>,
    pub network: ObservedNetwork,
    pub roles: Vec<ObservedRole>,
    /// ACTIVE container instances (read for the EC2 launch type only).
    pub container_instances: Vec<ObservedInstance>,
    /// The latest ACTIVE revision of the family.
    pub latest_task_definition: Option<ObservedTaskDefinition>,
    /// The revision the service runs, when that is not the latest.
    pub current_task_definition: Option<ObservedTaskDefinition>,
    pub service: Option<ObservedService>,
}

impl Observed {
    pub fn cluster_active(&self) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.status == ClusterStatus::Active)
    }

    /// The service when it is ACTIVE (neither deleted nor draining).
    pub fn active_service(&self) -> Option<&ObservedService> {
        self.service.as_ref().filter(|s| s.is_active())
    }
}

/// What a Delete needs to know.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedForDelete {
    pub service: Option<ObservedService>,
    /// ACTIVE revisions of the family registered by this resource.
    pub our_revisions: Vec<String>,
    /// Revisions (`family:revision`) that other delegates' services run.
    pub used_by_other_services: BTreeSet<String>,
    pub managed_security_groups: Vec<ObservedSecurityGroup>,
    /// Resources (the service, any revision) that carry this delegate's record, with its keys.
    pub records: Vec<(String, Vec<String>)>,
}

/// What heal sees of one delegate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedForHeal {
    /// The cluster's status; `None`: it does not exist.
    pub cluster_status: Option<ClusterStatus>,
    pub service: Option<ObservedService>,
    /// The recorded revision, whatever its status; `None`: it no longer exists.
    pub revision: Option<ObservedTaskDefinition>,
    /// The group this function created for the delegate in the recorded VPC.
    pub managed_security_group: Option<ObservedSecurityGroup>,
    /// Groups this function created for the delegate that its configuration no longer uses (it
    /// moved to given groups, to bridge, or to another VPC), when heal read them.
    pub unused_security_groups: Vec<ObservedSecurityGroup>,
    /// When heal last forced a deployment of the committed configuration (epoch seconds, from
    /// the record): the redeploy back-off. A newer configuration starts without one.
    pub last_redeploy: Option<u64>,
}
