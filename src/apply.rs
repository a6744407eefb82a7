//! Apply: carry out a plan's steps with AWS write calls, in order, one method per step over a
//! small [`Progress`] (the record as it fills in, the revision, group and service this run uses).
//!
//! What this run creates is remembered, and if a later step fails it is removed again (newest
//! first), so a failed Create leaves nothing half-created. Waits (a service draining, a security
//! group whose network interfaces are still being released) are bounded by the deadline. A value
//! a step needs that an earlier step should have produced is read through an accessor that
//! fails the run as an internal error, so no empty ARN ever reaches AWS.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_ec2::types::{ResourceType, Tag as Ec2Tag, TagSpecification};
use aws_sdk_ecs::types as ecs;
use tokio::time::Instant;

use crate::aws_error::{AwsError, AwsErrorKind};
use crate::model::{self, LaunchType, ServiceStatus, Target};
use crate::observe::{self, ObserveError};
use crate::observed::{AwsvpcConfig, ObservedTaskDefinition};
use crate::plan::{Action, DeleteAction, Plan};
use crate::record::{self, On, Record};
use crate::{document, ecs_convert, Clients};

/// Why an apply stopped. Each says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An AWS write (or a read it needed) failed.
    #[error("{step} failed: {source}")]
    Aws {
        step: String,
        #[source]
        source: AwsError,
    },
    #[error("{step} failed: {source}")]
    Read {
        step: String,
        #[source]
        source: ObserveError,
    },
    /// AWS's state stops the step: a name taken by something not ours, a service still
    /// draining, a group still in use. The message says what to do.
    #[error("{step} failed: {message}")]
    Blocked { step: String, message: String },
    /// The document could not be made into an SDK request (a field ECS requires is missing).
    #[error("{step} failed: the task definition is incomplete ({source}): check TaskDefinitionOverrides")]
    Incomplete {
        step: String,
        #[source]
        source: aws_sdk_ecs::error::BuildError,
    },
    /// A step found that an earlier one did not produce what it needs: a bug.
    #[error(
        "{step} failed: internal error, {what} (a bug: what this run created is removed again)"
    )]
    Invariant { step: String, what: &'static str },
}

impl ApplyError {
    fn aws(step: impl Into<String>, source: AwsError) -> Self {
        ApplyError::Aws {
            step: step.into(),
            source,
        }
    }

    fn blocked(step: impl Into<String>, message: impl Into<String>) -> Self {
        ApplyError::Blocked {
            step: step.into(),
            message: message.into(),
        }
    }
}

/// What the delegate looks like after a successful apply: the response `Data`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Applied {
    #[serde(rename = "ServiceArn")]
    pub service_arn: String,
    #[serde(rename = "ServiceName")]
    pub service_name: String,
    #[serde(rename = "ClusterArn")]
    pub cluster_arn: String,
    #[serde(rename = "TaskDefinitionArn")]
    pub task_definition_arn: String,
    #[serde(rename = "VpcId")]
    pub vpc_id: String,
    #[serde(rename = "SubnetIds")]
    pub subnet_ids: String,
    #[serde(rename = "SecurityGroupIds")]
    pub security_group_ids: String,
    #[serde(rename = "AssignPublicIp")]
    pub assign_public_ip: String,
    /// The delegate's log group, or `none` (filled in by the pipeline, from the spec).
    #[serde(rename = "LogGroupName")]
    pub log_group_name: String,
    /// The delegate's running tasks once it was ready; absent when the request did not wait.
    #[serde(rename = "RunningCount", skip_serializing_if = "Option::is_none")]
    pub running_count: Option<String>,
    /// The configuration now in place, with the revision and the group filled in: what the
    /// operation commits.
    #[serde(skip)]
    pub record: Record,
}

impl Applied {
    /// As CloudFormation's response `Data`: every field is a string.
    pub fn data(&self) -> BTreeMap<String, String> {
        serde_json::to_value(self)
            .and_then(serde_json::from_value)
            .unwrap_or_default()
    }
}

/// Something this run created, to remove again if a later step fails.
#[derive(Debug)]
enum Created {
    SecurityGroup(String),
    TaskDefinition(String),
    Service(Target),
    /// Record keys written on a resource: `previous` is what they were.
    Record {
        arn: String,
        previous: BTreeMap<String, String>,
        written: Vec<String>,
    },
}

/// The delegate a plan is applied to: the cluster as given (name or ARN) and the record the
/// converge leaves, which also says what the service is (its name, launch type, count, tags).
#[derive(Debug, Clone)]
pub struct ServiceTarget {
    pub cluster: String,
    pub record: Record,
}

/// What an UpdateService step sends (see `plan::Action::UpdateService`).
#[derive(Debug, Clone, Copy)]
struct ServiceUpdate {
    desired_count: Option<i32>,
    task_definition: bool,
    network: bool,
}

/// What a converge has produced so far.
struct Progress {
    /// The record, with the revision and the group filled in once known.
    record: Record,
    created_group: Option<String>,
    /// A revision was registered (or an equal one adopted) by this run.
    registered: bool,
    td_arn: Option<String>,
    service_arn: Option<String>,
}

impl Progress {
    fn td_arn(&self, step: &str) -> Result<String, ApplyError> {
        self.td_arn.clone().ok_or_else(|| ApplyError::Invariant {
            step: step.to_string(),
            what: "no task definition revision was chosen",
        })
    }

    fn service_arn(&self, step: &str) -> Result<String, ApplyError> {
        self.service_arn
            .clone()
            .ok_or_else(|| ApplyError::Invariant {
                step: step.to_string(),
                what: "the service ARN is unknown",
            })
    }

    fn use_revision(&mut self, arn: String) {
        self.record.task_definition = model::revision_name(&arn).to_string();
        self.td_arn = Some(arn);
    }
}

fn ecs_tags(tags: &BTreeMap<String, String>) -> Vec<ecs::Tag> {
    tags.iter()
        .map(|(k, v)| ecs::Tag::builder().key(k).value(v).build())
        .collect()
}

/// What one DeleteSecurityGroup came to.
enum GroupDeleted {
    Gone,
    /// Network interfaces (of tasks stopping) still hold it.
    InUse,
}

/// A write is not started with less time than this before the deadline.
const START_MARGIN: Duration = Duration::from_secs(5);

pub struct Applier<'a> {
    pub clients: &'a Clients,
    pub deadline: Instant,
    created: Vec<Created>,
    /// The delegate's cluster and service, once a reconcile starts.
    target: Option<Target>,
}

impl<'a> Applier<'a> {
    pub fn new(clients: &'a Clients, deadline: Instant) -> Self {
        Applier {
            clients,
            deadline,
            created: Vec::new(),
            target: None,
        }
    }

    /// Apply a converge or heal plan; on failure, remove what this run created. `cluster_arn`
    /// is the observed cluster's ARN.
    pub async fn reconcile(
        &mut self,
        target: &ServiceTarget,
        plan: &Plan,
        cluster_arn: &str,
        current_service_arn: Option<&str>,
    ) -> Result<Applied, ApplyError> {
        self.target = Some(Target {
            cluster: target.cluster.clone(),
            service: target.record.service().to_string(),
        });
        let mut progress = Progress {
            record: target.record.clone(),
            created_group: None,
            registered: false,
            td_arn: None,
            service_arn: current_service_arn.map(String::from),
        };
        if let Some(td) = plan.desired.task_definition_arn.clone() {
            progress.use_revision(td);
        }
        let mut result = Ok(());
        for action in &plan.actions {
            // A write started this late might not finish, nor be undone, before the answer.
            if Instant::now() + START_MARGIN >= self.deadline {
                result = Err(ApplyError::blocked(
                    action.name(),
                    "not started: too little of the invocation's time is left to do it and undo what this run did; the steps before it are undone (raise the function's Timeout if this repeats)",
                ));
                break;
            }
            tracing::info!(action = action.name(), reason = action.reason(), "applying");
            #[cfg(feature = "test-hooks")]
            crate::test_hooks::before_action(target.record.service(), action.name());
            result = self
                .step(action, &target.cluster, plan, &mut progress)
                .await;
            if result.is_err() {
                break;
            }
        }
        let applied = result.and_then(|()| applied(&progress, plan, cluster_arn));
        if applied.is_err() {
            self.undo().await;
        }
        applied
    }

    async fn step(
        &mut self,
        action: &Action,
        cluster: &str,
        plan: &Plan,
        p: &mut Progress,
    ) -> Result<(), ApplyError> {
        match action {
            Action::CreateSecurityGroup { name, vpc_id, .. } => {
                let id = self.create_security_group(&p.record, name, vpc_id).await?;
                // Recorded from here on, so that heal knows the group without reading it.
                if let Some(n) = p.record.network.as_mut() {
                    n.managed_group = Some(id.clone());
                }
                p.created_group = Some(id);
                Ok(())
            }
            Action::RegisterTaskDefinition { family, .. } => self.register(family, plan, p).await,
            Action::RecordSpec {
                on_service,
                on_revision,
                previous_service,
                previous_revision,
                ..
            } => {
                if *on_revision && !p.registered {
                    let arn = p.td_arn("recording the configuration on the revision")?;
                    self.write_record(&arn, p.record.tags(On::Revision), previous_revision)
                        .await?;
                }
                if *on_service {
                    let arn = p.service_arn("recording the configuration on the service")?;
                    self.write_record(&arn, p.record.tags(On::Service), previous_service)
                        .await?;
                }
                Ok(())
            }
            Action::CreateService { .. } => self.create_service_step(cluster, plan, p).await,
            Action::WaitForServiceDrain { .. } => {
                self.wait_until_gone(cluster, p.record.service()).await
            }
            Action::RecreateService { .. } => {
                self.delete_service(cluster, p.record.service()).await?;
                self.wait_until_gone(cluster, p.record.service()).await?;
                self.create_service_step(cluster, plan, p).await
            }
            Action::ForceNewDeployment { .. } => self.force_new_deployment(cluster, p).await,
            Action::DeleteUnusedSecurityGroup { id, .. } => self.delete_unused_group(id).await,
            Action::DeleteOrphanService { service, .. } => {
                self.delete_service(cluster, service).await
            }
            Action::UpdateService {
                desired_count,
                task_definition,
                network,
                ..
            } => {
                let update = ServiceUpdate {
                    desired_count: *desired_count,
                    task_definition: *task_definition,
                    network: *network,
                };
                self.update_service(update, cluster, plan, p).await
            }
            Action::TagService { tags, .. } => {
                let arn = p.service_arn("tagging the service")?;
                self.tag(&arn, tags).await.map_err(|e| {
                    ApplyError::aws(format!("tagging service {}", p.record.service()), e)
                })
            }
            Action::TagSecurityGroup { id, tags, .. } => self.tag_group(id, tags).await,
        }
    }

    /// Register the rendered revision with the record on it, or settle on an equal one that a
    /// replay or a lost answer registered meanwhile.
    async fn register(
        &mut self,
        family: &str,
        plan: &Plan,
        p: &mut Progress,
    ) -> Result<(), ApplyError> {
        let step = || format!("registering a revision of {family}");
        let req = ecs_convert::register_request(
            &self.clients.ecs,
            &plan.desired.task_definition,
            &p.record.all_tags(On::Revision),
        )
        .map_err(|source| ApplyError::Incomplete {
            step: step(),
            source,
        })?;
        let out = req
            .send()
            .await
            .map_err(|e| ApplyError::aws(step(), AwsError::new("ecs:RegisterTaskDefinition", e)))?;
        let Some(arn) = out
            .task_definition()
            .and_then(|t| t.task_definition_arn())
            .map(String::from)
        else {
            return Err(ApplyError::Invariant {
                step: step(),
                what: "AWS answered without the revision's ARN",
            });
        };
        p.registered = true;
        if let Some(earlier) = self.earlier_equal_revision(family, &arn, plan).await {
            if self.withdraw(&arn, &p.record).await {
                // Registered by another run (or an earlier attempt of this call): not this
                // run's to remove, but it gets this run's record, which undo puts back as it
                // was if this run fails.
                p.use_revision(earlier.arn.clone());
                let tags = p.record.tags(On::Revision);
                let previous = record::recorded_tags(&earlier.tags);
                return self.write_record(&earlier.arn, tags, &previous).await;
            }
        }
        self.created.push(Created::TaskDefinition(arn.clone()));
        // Registered with the record's labels on it: a failed run takes them off again before
        // deregistering, or they would show a configuration that was never committed.
        self.created.push(Created::Record {
            arn: arn.clone(),
            previous: BTreeMap::new(),
            written: p.record.tags(On::Revision).into_keys().collect(),
        });
        p.use_revision(arn);
        Ok(())
    }

    async fn create_service_step(
        &mut self,
        cluster: &str,
        plan: &Plan,
        p: &mut Progress,
    ) -> Result<(), ApplyError> {
        let network = resolved(plan, p);
        let td = p.td_arn("creating the service")?;
        let arn = self
            .create_service(cluster, &p.record, &td, network.as_ref())
            .await?;
        p.service_arn = Some(arn);
        self.commit_records();
        Ok(())
    }

    async fn force_new_deployment(
        &mut self,
        cluster: &str,
        p: &Progress,
    ) -> Result<(), ApplyError> {
        let name = p.record.service();
        self.clients
            .ecs
            .update_service()
            .cluster(cluster)
            .service(name)
            .force_new_deployment(true)
            .send()
            .await
            .map_err(|e| {
                ApplyError::aws(
                    format!("redeploying service {name}"),
                    AwsError::new("ecs:UpdateService", e),
                )
            })?;
        Ok(())
    }

    async fn update_service(
        &mut self,
        update: ServiceUpdate,
        cluster: &str,
        plan: &Plan,
        p: &mut Progress,
    ) -> Result<(), ApplyError> {
        let ServiceUpdate {
            desired_count,
            task_definition,
            network,
        } = update;
        let name = p.record.service().to_string();
        let mut u = self
            .clients
            .ecs
            .update_service()
            .cluster(cluster)
            .service(&name)
            .set_desired_count(desired_count);
        if task_definition {
            u = u.task_definition(p.td_arn("updating the service")?);
        }
        if let Some(n) = resolved(plan, p).filter(|_| network) {
            u = u.network_configuration(network_configuration(&n));
        }
        let out = u.send().await.map_err(|e| {
            ApplyError::aws(
                format!("updating service {name}"),
                AwsError::new("ecs:UpdateService", e),
            )
        })?;
        self.commit_records();
        // The service runs the new revision and group now: undoing must not remove them.
        self.created.retain(|c| match c {
            Created::TaskDefinition(_) => !task_definition,
            Created::SecurityGroup(_) => !network,
            _ => true,
        });
        if let Some(arn) = out.service().and_then(|s| s.service_arn()) {
            p.service_arn = Some(arn.to_string());
        }
        Ok(())
    }

    async fn tag_group(&self, id: &str, tags: &BTreeMap<String, String>) -> Result<(), ApplyError> {
        let tags = tags
            .iter()
            .map(|(k, v)| Ec2Tag::builder().key(k).value(v).build())
            .collect();
        self.clients
            .ec2
            .create_tags()
            .resources(id)
            .set_tags(Some(tags))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                ApplyError::aws(
                    format!("tagging security group {id}"),
                    AwsError::new("ec2:CreateTags", e),
                )
            })
    }

    /// A revision equal to `registered`, registered for this delegate between the plan's look at
    /// the family and `registered` itself: by this call's own first attempt whose answer was
    /// lost (the SDK then sent it again), or by a replay of the same request running at the same
    /// time. The lowest one is what every such run settles on. A failed look is logged and
    /// keeps `registered`: a spare revision is better than a failed install.
    async fn earlier_equal_revision(
        &self,
        family: &str,
        registered: &str,
        plan: &Plan,
    ) -> Option<ObservedTaskDefinition> {
        // Runs that raced each other are close together; other delegates sharing the family
        // may have registered in between, so look a little further than two runs need.
        const LOOK_BACK: usize = 20;
        let number = model::revision_number;
        let mine = number(registered);
        let after = plan.desired.registered_after;
        if mine <= after + 1 {
            return None;
        }
        let revisions = match observe::active_revisions(self.clients, family).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for an equal revision registered meanwhile");
                return None;
            }
        };
        let between: Vec<&String> = revisions
            .iter()
            .filter(|a| (after.max(mine - 1 - LOOK_BACK as i32) + 1..mine).contains(&number(a)))
            .collect();
        let wanted = document::normalize(&plan.desired.task_definition);
        let key = &plan.desired.record.key;
        // Lowest first: the first equal one is the one every racing run settles on.
        for arn in between {
            match observe::describe_task_definition(self.clients, arn).await {
                Ok(Some(td))
                    if td.is_active()
                        && key.tagged_on(&td.tags)
                        && document::normalize(&td.doc) == wanted =>
                {
                    tracing::info!(registered, equal = %td.arn, "an equal revision was registered meanwhile: using it");
                    return Some(td);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for an equal revision registered meanwhile");
                    return None;
                }
            }
        }
        None
    }

    /// Take back a revision this run registered and will not use: its record, then the
    /// revision. False when the record could not be removed: then the revision is kept and
    /// used, because a deregistered revision labelled with a newer record would mislead people
    /// and an earlier version of the function (one a stack rolled back to heals from labels). A
    /// failed deregister only leaves a spare revision without labels, and is logged.
    async fn withdraw(&self, arn: &str, record: &Record) -> bool {
        let keys: Vec<String> = record.tags(On::Revision).into_keys().collect();
        if let Err(e) = self.untag(arn, &keys).await {
            tracing::warn!(resource = %arn, error = %e, "could not remove the record: keeping this revision");
            return false;
        }
        if let Err(e) = self.deregister(arn).await {
            tracing::warn!(resource = %arn, error = %e, "a spare revision without a record is left: deregister it at leisure");
        }
        true
    }

    async fn create_security_group(
        &mut self,
        record: &Record,
        name: &str,
        vpc_id: &str,
    ) -> Result<String, ApplyError> {
        let tags: Vec<Ec2Tag> = record
            .resource_tags()
            .into_iter()
            .chain([("Name".to_string(), name.to_string())])
            .map(|(k, v)| Ec2Tag::builder().key(k).value(v).build())
            .collect();
        let out = self
            .clients
            .ec2
            .create_security_group()
            .group_name(name)
            .vpc_id(vpc_id)
            .description(format!(
                "Harness delegate {}: outbound only (created by harness-ecs-delegate-bootstrap)",
                record.key
            ))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::SecurityGroup)
                    .set_tags(Some(tags))
                    .build(),
            )
            .send()
            .await;
        let step = || format!("creating security group {name}");
        let e = match out {
            Ok(out) => {
                let Some(id) = out.group_id().map(String::from) else {
                    return Err(ApplyError::Invariant {
                        step: step(),
                        what: "AWS answered without the group's id",
                    });
                };
                self.created.push(Created::SecurityGroup(id.clone()));
                // A new group allows all outbound traffic and no inbound: what a delegate needs.
                return Ok(id);
            }
            Err(e) => AwsError::new("ec2:CreateSecurityGroup", e),
        };
        if !e.has_code("InvalidGroup.Duplicate") {
            return Err(ApplyError::aws(step(), e));
        }
        // Made by this call's first attempt whose answer was lost, or by a replay of the same
        // request running at the same time: this delegate's group.
        let msg = match self.own_group(record, name, vpc_id).await {
            Ok(Some(id)) => return Ok(id),
            Ok(None) => format!("ec2:CreateSecurityGroup: a security group named {name} already exists in {vpc_id} and is not tagged as this delegate's: pass SecurityGroupIds, or rename or delete that group"),
            Err(read) => format!("ec2:CreateSecurityGroup: a security group named {name} already exists in {vpc_id}, and whether it is this delegate's could not be read ({read}): run the request again"),
        };
        Err(ApplyError::blocked(step(), msg))
    }

    /// The group named `name` in `vpc_id` that this function created for this delegate. Read a
    /// few times: a group just created by another run may not be listed at once.
    async fn own_group(
        &self,
        record: &Record,
        name: &str,
        vpc_id: &str,
    ) -> Result<Option<String>, ObserveError> {
        let mut last_error = None;
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match observe::managed_security_groups(self.clients, &record.key).await {
                Ok(groups) => {
                    if let Some(g) = groups
                        .into_iter()
                        .find(|g| g.name == name && g.vpc_id == vpc_id)
                    {
                        tracing::info!(group = %g.id, "this delegate's group was created meanwhile: using it");
                        return Ok(Some(g.id));
                    }
                    last_error = None;
                }
                Err(e) => last_error = Some(e),
            }
        }
        last_error.map_or(Ok(None), Err)
    }

    async fn create_service(
        &mut self,
        cluster: &str,
        record: &Record,
        task_definition_arn: &str,
        network: Option<&AwsvpcConfig>,
    ) -> Result<String, ApplyError> {
        let req =
            create_service_request(self.clients, cluster, record, task_definition_arn, network);
        let step = || format!("creating service {}", record.service());
        let e = match req.send().await {
            Ok(out) => {
                self.created.push(Created::Service(Target {
                    cluster: cluster.to_string(),
                    service: record.service().to_string(),
                }));
                return out
                    .service()
                    .and_then(|s| s.service_arn())
                    .map(String::from)
                    .ok_or(ApplyError::Invariant {
                        step: step(),
                        what: "AWS answered without the service's ARN",
                    });
            }
            Err(e) => e,
        };
        // AWS refuses a second create of an ACTIVE name with other input (our tags carry the
        // time): a replay of this request running at the same time, or this call's first
        // attempt whose answer was lost, may have created it already. AWS says so only in the
        // message of an InvalidParameterException.
        let not_idempotent = e.as_service_error().is_some_and(|se| {
            se.is_invalid_parameter_exception()
                && se
                    .meta()
                    .message()
                    .is_some_and(|m| m.contains("idempotent"))
        });
        if not_idempotent {
            if let Some(arn) = self
                .same_service(cluster, record, task_definition_arn)
                .await
            {
                return Ok(arn);
            }
        }
        Err(ApplyError::aws(
            step(),
            AwsError::new("ecs:CreateService", e),
        ))
    }

    /// The ARN of the ACTIVE service `record` names, when it is this delegate's (managed by this
    /// function, the same delegate and owner) and runs `task_definition_arn`: what this run was
    /// about to create. Read a few times: a service just created may not be described at once.
    async fn same_service(
        &self,
        cluster: &str,
        record: &Record,
        task_definition_arn: &str,
    ) -> Option<String> {
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match observe::service(self.clients, cluster, record.service()).await {
                Ok(Some(s)) if s.is_active() => {
                    let same = s.managed_by_us()
                        && s.is_delegate(&record.key)
                        && s.owner() == record.owner
                        && s.task_definition == task_definition_arn;
                    if same {
                        tracing::info!(service = %s.arn, "the same service was created meanwhile: using it");
                        return Some(s.arn);
                    }
                    // Someone else's, or another configuration: not ours to take.
                    return None;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the service of the same name")
                }
            }
        }
        None
    }

    /// Add or change tags on an ECS resource.
    async fn tag(&self, arn: &str, tags: &BTreeMap<String, String>) -> Result<(), AwsError> {
        self.clients
            .ecs
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(ecs_tags(tags)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::new("ecs:TagResource", e))
    }

    /// Remove tags from an ECS resource.
    async fn untag(&self, arn: &str, keys: &[String]) -> Result<(), AwsError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.clients
            .ecs
            .untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(keys.to_vec()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::new("ecs:UntagResource", e))
    }

    /// Write a record on a resource, dropping record keys it no longer needs (a split value
    /// that got shorter), and remember what was there for undo.
    async fn write_record(
        &mut self,
        arn: &str,
        tags: BTreeMap<String, String>,
        previous: &BTreeMap<String, String>,
    ) -> Result<(), ApplyError> {
        let what = || format!("recording the configuration on {arn}");
        let stale: Vec<String> = previous
            .keys()
            .filter(|k| !tags.contains_key(*k))
            .cloned()
            .collect();
        self.created.push(Created::Record {
            arn: arn.to_string(),
            previous: previous.clone(),
            written: tags.keys().cloned().collect(),
        });
        self.tag(arn, &tags)
            .await
            .map_err(|e| ApplyError::aws(what(), e))?;
        self.untag(arn, &stale)
            .await
            .map_err(|e| ApplyError::aws(what(), e))
    }

    /// Remove a record ahead of a delete. A resource already gone (a revision deleted for good,
    /// a service purged) refuses tag changes with a client error, and a stack's Delete must not
    /// get stuck on it: that is logged. Anything else (throttling to the end, a 5xx, a refusal
    /// by IAM) stops the Delete before anything is removed: this version's heal keeps to the
    /// tombstone, but an earlier version (one a stack rolled back to) heals from labels, and
    /// labels left on a deleted delegate would have it bring the delegate back.
    async fn remove_record(&self, arn: &str, keys: &[String]) -> Result<(), ApplyError> {
        if keys.is_empty() {
            return Ok(());
        }
        let out = self
            .clients
            .ecs
            .untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(keys.to_vec()))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error().is_some_and(|se| {
                    se.is_resource_not_found_exception()
                        || se.is_invalid_parameter_exception()
                        || se.is_client_exception()
                }) =>
            {
                let e = AwsError::new("ecs:UntagResource", e);
                tracing::warn!(resource = %arn, error = %e, "could not remove the record of a resource that is gone");
                Ok(())
            }
            Err(e) => Err(ApplyError::aws(
                format!("removing the record from {arn}"),
                AwsError::new("ecs:UntagResource", e),
            )),
        }
    }

    /// The service now runs what the record says: a later failure must not roll it back.
    fn commit_records(&mut self) {
        self.created
            .retain(|c| !matches!(c, Created::Record { .. }));
    }

    /// Scale to 0 and delete with force.
    pub async fn delete_service(&self, cluster: &str, name: &str) -> Result<(), ApplyError> {
        let what = || format!("deleting service {name}");
        let scaled = self
            .clients
            .ecs
            .update_service()
            .cluster(cluster)
            .service(name)
            .desired_count(0)
            .send()
            .await;
        if let Err(e) = scaled {
            let gone = e.as_service_error().is_some_and(|se| {
                se.is_service_not_found_exception() || se.is_service_not_active_exception()
            });
            if gone {
                return Ok(());
            }
            return Err(ApplyError::aws(
                what(),
                AwsError::new("ecs:UpdateService", e),
            ));
        }
        match self
            .clients
            .ecs
            .delete_service()
            .cluster(cluster)
            .service(name)
            .force(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_service_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(ApplyError::aws(
                what(),
                AwsError::new("ecs:DeleteService", e),
            )),
        }
    }

    /// Wait until the service is INACTIVE or gone, within the deadline.
    async fn wait_until_gone(&self, cluster: &str, name: &str) -> Result<(), ApplyError> {
        loop {
            let s = observe::service(self.clients, cluster, name)
                .await
                .map_err(|source| ApplyError::Read {
                    step: format!("waiting for service {name} to drain"),
                    source,
                })?;
            if s.as_ref()
                .is_none_or(|s| s.status == ServiceStatus::Inactive)
            {
                return Ok(());
            }
            if Instant::now() + Duration::from_secs(5) >= self.deadline {
                return Err(ApplyError::blocked(
                    format!("waiting for service {name} to drain"),
                    "it is still DRAINING: run the update again in a few minutes",
                ));
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }

    /// Apply a delete plan. Failures are reported; there is nothing to undo.
    pub async fn delete(
        &mut self,
        cluster: &str,
        actions: &[DeleteAction],
    ) -> Result<(), ApplyError> {
        for action in actions {
            tracing::info!(action = action.name(), reason = action.reason(), "applying");
            match action {
                DeleteAction::RemoveRecord {
                    resources, keys, ..
                } => {
                    for (arn, keys) in resources.iter().zip(keys) {
                        self.remove_record(arn, keys).await?;
                    }
                }
                DeleteAction::DeleteService { service, .. } => {
                    self.delete_service(cluster, service).await?;
                }
                DeleteAction::DeregisterTaskDefinition { arn, .. } => {
                    self.deregister(arn).await?;
                }
                DeleteAction::DeleteSecurityGroup { id, .. } => {
                    self.delete_security_group(id).await?;
                }
            }
        }
        Ok(())
    }

    async fn deregister(&self, arn: &str) -> Result<(), ApplyError> {
        match self
            .clients
            .ecs
            .deregister_task_definition()
            .task_definition(arn)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already deregistered (by a person, or by an earlier try of this request).
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_client_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(ApplyError::aws(
                format!("deregistering {arn}"),
                AwsError::new("ecs:DeregisterTaskDefinition", e),
            )),
        }
    }

    /// Delete a group the delegate no longer uses, once: while network interfaces of stopped
    /// tasks still hold it, it stays for the next heal, which is not a failure.
    async fn delete_unused_group(&self, id: &str) -> Result<(), ApplyError> {
        match self.try_delete_group(id).await {
            Ok(GroupDeleted::Gone) => Ok(()),
            Ok(GroupDeleted::InUse) => {
                tracing::info!(group = id, "the unused group is still held by network interfaces: the next heal tries again");
                Ok(())
            }
            Err(e) => Err(ApplyError::aws(
                format!("deleting unused security group {id}"),
                e,
            )),
        }
    }

    /// One DeleteSecurityGroup: gone (or never there), or still held by network interfaces.
    async fn try_delete_group(&self, id: &str) -> Result<GroupDeleted, AwsError> {
        match self
            .clients
            .ec2
            .delete_security_group()
            .group_id(id)
            .send()
            .await
        {
            Ok(_) => Ok(GroupDeleted::Gone),
            Err(e) => {
                let e = AwsError::new("ec2:DeleteSecurityGroup", e);
                if e.is(AwsErrorKind::NotFound) {
                    Ok(GroupDeleted::Gone)
                } else if e.has_code("DependencyViolation") {
                    Ok(GroupDeleted::InUse)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Delete a security group, retrying while ENIs of stopped tasks still hold it.
    async fn delete_security_group(&self, id: &str) -> Result<(), ApplyError> {
        let step = || format!("deleting security group {id}");
        loop {
            match self.try_delete_group(id).await {
                Ok(GroupDeleted::Gone) => return Ok(()),
                Ok(GroupDeleted::InUse) => {
                    if Instant::now() + Duration::from_secs(15) >= self.deadline {
                        return Err(ApplyError::blocked(step(), format!("{id} is still in use by network interfaces of stopped tasks: delete it once they are released")));
                    }
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
                Err(e) => return Err(ApplyError::aws(step(), e)),
            }
        }
    }

    /// The revision and groups the delegate's ACTIVE service uses, when this run did not create
    /// that service itself (then undo removes it first, and nothing else uses what it made).
    async fn used_by_the_service(&self) -> BTreeSet<String> {
        let created_service = self
            .created
            .iter()
            .any(|c| matches!(c, Created::Service(_)));
        let made_something = self
            .created
            .iter()
            .any(|c| matches!(c, Created::TaskDefinition(_) | Created::SecurityGroup(_)));
        let Some(Target {
            cluster,
            service: name,
        }) = self.target.as_ref()
        else {
            return BTreeSet::new();
        };
        if created_service || !made_something {
            return BTreeSet::new();
        }
        match observe::service(self.clients, cluster, name).await {
            Ok(Some(s)) if s.is_active() => {
                let mut used: BTreeSet<String> =
                    s.network.map(|n| n.security_groups).unwrap_or_default();
                used.insert(s.task_definition);
                used
            }
            Ok(_) => BTreeSet::new(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the service before undoing: removing what this run made");
                BTreeSet::new()
            }
        }
    }

    /// Remove what this run created, newest first. Best effort: each failure is logged.
    async fn undo(&mut self) {
        let in_use = self.used_by_the_service().await;
        while let Some(c) = self.created.pop() {
            let used = match &c {
                Created::TaskDefinition(arn) => in_use.contains(arn),
                Created::SecurityGroup(id) => in_use.contains(id),
                _ => false,
            };
            if used {
                // A replay of this request running at the same time took it into its service.
                tracing::warn!(created = ?c, "not removed: the delegate's service uses it");
                continue;
            }
            tracing::warn!(created = ?c, "removing what this failed run created");
            let r = match &c {
                Created::Service(t) => self.delete_service(&t.cluster, &t.service).await,
                Created::TaskDefinition(arn) => self.deregister(arn).await,
                Created::SecurityGroup(id) => {
                    // A service just deleted may still hold the group; wait for it first.
                    self.delete_security_group(id).await
                }
                Created::Record {
                    arn,
                    previous,
                    written,
                } => {
                    let added: Vec<String> = written
                        .iter()
                        .filter(|k| !previous.contains_key(*k))
                        .cloned()
                        .collect();
                    let restored = if previous.is_empty() {
                        Ok(())
                    } else {
                        self.tag(arn, previous).await
                    };
                    restored
                        .and(self.untag(arn, &added).await)
                        .map_err(|e| ApplyError::aws(format!("restoring the record on {arn}"), e))
                }
            };
            if let Err(e) = r {
                tracing::error!(created = ?c, error = %e, "could not remove it: remove it by hand");
            }
        }
    }
}

/// CreateService for the delegate: the record's settings and tags, the deployment circuit
/// breaker with rollback, tasks spread across zones and instances on EC2.
fn create_service_request(
    c: &Clients,
    cluster: &str,
    record: &Record,
    task_definition_arn: &str,
    network: Option<&AwsvpcConfig>,
) -> aws_sdk_ecs::operation::create_service::builders::CreateServiceFluentBuilder {
    let mut req = c
        .ecs
        .create_service()
        .cluster(cluster)
        .service_name(record.service())
        .task_definition(task_definition_arn)
        .desired_count(record.desired_count)
        .launch_type(ecs::LaunchType::from(record.launch_type.as_str()))
        .scheduling_strategy(ecs::SchedulingStrategy::Replica)
        .deployment_configuration(
            ecs::DeploymentConfiguration::builder()
                .deployment_circuit_breaker(
                    ecs::DeploymentCircuitBreaker::builder()
                        .enable(true)
                        .rollback(true)
                        .build(),
                )
                .build(),
        )
        .enable_ecs_managed_tags(true)
        .propagate_tags(ecs::PropagateTags::Service)
        .set_tags(Some(ecs_tags(&record.all_tags(On::Service))));
    match record.launch_type {
        LaunchType::Fargate => req = req.platform_version("LATEST"),
        LaunchType::Ec2 => {
            for field in ["attribute:ecs.availability-zone", "instanceId"] {
                req = req.placement_strategy(
                    ecs::PlacementStrategy::builder()
                        .r#type(ecs::PlacementStrategyType::Spread)
                        .field(field)
                        .build(),
                );
            }
        }
    }
    if let Some(n) = network {
        req = req.network_configuration(network_configuration(n));
    }
    req
}

/// The awsvpc configuration to send, once the group this run may create has its id.
fn resolved(plan: &Plan, p: &Progress) -> Option<AwsvpcConfig> {
    plan.desired
        .network
        .as_ref()
        .map(|n| n.resolved(p.created_group.as_deref()))
}

/// What the delegate looks like once every step has run.
fn applied(p: &Progress, plan: &Plan, cluster_arn: &str) -> Result<Applied, ApplyError> {
    let network = resolved(plan, p);
    let join = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
    Ok(Applied {
        service_arn: p.service_arn("reporting the result")?,
        service_name: p.record.service().to_string(),
        cluster_arn: cluster_arn.to_string(),
        task_definition_arn: p.td_arn("reporting the result")?,
        vpc_id: plan.desired.vpc_id.clone().unwrap_or_default(),
        subnet_ids: network
            .as_ref()
            .map(|n| join(&n.subnets))
            .unwrap_or_default(),
        security_group_ids: network
            .as_ref()
            .map(|n| join(&n.security_groups))
            .unwrap_or_default(),
        assign_public_ip: network
            .as_ref()
            .map(|n| n.assign_public_ip.to_string())
            .unwrap_or_default(),
        log_group_name: String::new(),
        running_count: None,
        record: p.record.clone(),
    })
}

fn network_configuration(n: &AwsvpcConfig) -> ecs::NetworkConfiguration {
    ecs::NetworkConfiguration::builder()
        .awsvpc_configuration(
            ecs::AwsVpcConfiguration::builder()
                .set_subnets(Some(n.subnets.iter().cloned().collect()))
                .set_security_groups(Some(n.security_groups.iter().cloned().collect()))
                .assign_public_ip(ecs::AssignPublicIp::from(n.assign_public_ip.as_str()))
                .build()
                .expect("subnets are set"),
        )
        .build()
}
