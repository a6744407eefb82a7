//! Apply: carry out a plan's actions with AWS write calls, in order.
//!
//! What this run creates is remembered, and if a later action fails it is removed again (newest
//! first), so a failed Create leaves nothing half-created. Waits (a service draining, a security
//! group whose network interfaces are still being released) are bounded by the deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_ec2::types::{ResourceType, Tag as Ec2Tag, TagSpecification};
use aws_sdk_ecs::types as ecs;
use tokio::time::Instant;

use crate::observe::{sdk_message, AwsvpcConfig, ObservedTaskDefinition};
use crate::plan::{Action, Plan};
use crate::record::{self, Record};
use crate::spec::LaunchType;
use crate::{task_definition, Clients};

/// An AWS write that failed, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{action} failed: {message}")]
pub struct ApplyError {
    pub action: String,
    pub message: String,
}

fn fail(action: impl Into<String>, message: impl Into<String>) -> ApplyError {
    ApplyError {
        action: action.into(),
        message: message.into(),
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
}

/// Something this run created, to remove again if a later step fails.
#[derive(Debug)]
enum Created {
    SecurityGroup(String),
    TaskDefinition(String),
    Service {
        cluster: String,
        name: String,
    },
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

fn ecs_tags(tags: &BTreeMap<String, String>) -> Vec<ecs::Tag> {
    tags.iter()
        .map(|(k, v)| ecs::Tag::builder().key(k).value(v).build())
        .collect()
}

pub struct Applier<'a> {
    pub clients: &'a Clients,
    pub deadline: Instant,
    created: Vec<Created>,
    /// The delegate's cluster and service, once a reconcile starts.
    target: Option<(String, String)>,
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

    /// Apply a reconcile or heal plan. `cluster_arn` is the observed cluster's ARN.
    pub async fn reconcile(
        &mut self,
        target: &ServiceTarget,
        plan: &Plan,
        cluster_arn: &str,
        current_service_arn: Option<&str>,
    ) -> Result<Applied, ApplyError> {
        match self
            .run(target, plan, cluster_arn, current_service_arn)
            .await
        {
            Ok(a) => Ok(a),
            Err(e) => {
                self.undo().await;
                Err(e)
            }
        }
    }

    async fn run(
        &mut self,
        target: &ServiceTarget,
        plan: &Plan,
        cluster_arn: &str,
        current_service_arn: Option<&str>,
    ) -> Result<Applied, ApplyError> {
        let c = self.clients;
        let cluster = target.cluster.as_str();
        let name = target.record.service.as_str();
        self.target = Some((cluster.to_string(), name.to_string()));
        // The record, with the revision filled in once it is known.
        let mut record = target.record.clone();
        let mut created_group: Option<String> = None;
        let mut registered = false;
        let mut td_arn = plan.desired.task_definition_arn.clone();
        if let Some(td) = &td_arn {
            record.task_definition = record::revision_name(td).to_string();
        }
        let mut service_arn = current_service_arn.map(String::from);
        // The awsvpc configuration to send, once the group this run may create has its id.
        let resolved =
            |group: Option<&str>| plan.desired.network.as_ref().map(|n| n.resolved(group));

        for action in &plan.actions {
            tracing::info!(action = ?action, "applying");
            #[cfg(feature = "test-hooks")]
            crate::test_hooks::before_action(name, action);
            match action {
                Action::CreateSecurityGroup {
                    name: group,
                    vpc_id,
                    ..
                } => {
                    let id = self.create_security_group(&record, group, vpc_id).await?;
                    // Recorded from here on, so that heal knows the group without reading it.
                    if let Some(n) = record.network.as_mut() {
                        n.managed_group = Some(id.clone());
                    }
                    created_group = Some(id);
                }
                Action::RegisterTaskDefinition { family, .. } => {
                    let req = task_definition::register_request(
                        &c.ecs,
                        &plan.desired.task_definition,
                        &record.all_tags(false),
                    )
                    .map_err(|e| fail(format!("registering a revision of {family}"), e))?;
                    let out = req.send().await.map_err(|e| {
                        fail(
                            format!("registering a revision of {family}"),
                            sdk_message("ecs:RegisterTaskDefinition", &e),
                        )
                    })?;
                    let mut arn = out
                        .task_definition()
                        .and_then(|t| t.task_definition_arn())
                        .unwrap_or_default()
                        .to_string();
                    if let Some(earlier) = self.earlier_equal_revision(family, &arn, plan).await {
                        if self.withdraw(&arn, &record).await {
                            // Registered by another run (or an earlier attempt of this call):
                            // not this run's to remove, but it gets this run's record, which
                            // undo puts back as it was if this run fails.
                            arn = earlier.arn;
                            record.task_definition = record::revision_name(&arn).to_string();
                            self.write_record(
                                &arn,
                                record.tags(false),
                                &record::recorded_tags(&earlier.tags),
                            )
                            .await?;
                            td_arn = Some(arn);
                            registered = true;
                            continue;
                        }
                    }
                    self.created.push(Created::TaskDefinition(arn.clone()));
                    // Registered with the record on it: a failed run takes that record off
                    // again before deregistering, or heal would apply what failed.
                    self.created.push(Created::Record {
                        arn: arn.clone(),
                        previous: BTreeMap::new(),
                        written: record.tags(false).into_keys().collect(),
                    });
                    record.task_definition = record::revision_name(&arn).to_string();
                    registered = true;
                    td_arn = Some(arn);
                }
                Action::RecordSpec {
                    on_service,
                    on_revision,
                    previous_service,
                    previous_revision,
                    ..
                } => {
                    if *on_revision && !registered {
                        let arn = td_arn.clone().unwrap_or_default();
                        self.write_record(&arn, record.tags(false), previous_revision)
                            .await?;
                    }
                    if *on_service {
                        let arn = service_arn.clone().unwrap_or_default();
                        self.write_record(&arn, record.tags(true), previous_service)
                            .await?;
                    }
                }
                Action::CreateService { .. } => {
                    let network = resolved(created_group.as_deref());
                    let td = td_arn.clone().unwrap_or_default();
                    service_arn = Some(
                        self.create_service(cluster, &record, &td, network.as_ref())
                            .await?,
                    );
                    self.commit_records();
                }
                Action::WaitForServiceDrain { .. } => {
                    self.wait_until_gone(cluster, name).await?;
                }
                Action::RecreateService { .. } => {
                    self.delete_service(cluster, name).await?;
                    self.wait_until_gone(cluster, name).await?;
                    let network = resolved(created_group.as_deref());
                    let td = td_arn.clone().unwrap_or_default();
                    service_arn = Some(
                        self.create_service(cluster, &record, &td, network.as_ref())
                            .await?,
                    );
                    self.commit_records();
                }
                Action::ForceNewDeployment { .. } => {
                    c.ecs
                        .update_service()
                        .cluster(cluster)
                        .service(name)
                        .force_new_deployment(true)
                        .send()
                        .await
                        .map_err(|e| {
                            fail(
                                format!("redeploying service {name}"),
                                sdk_message("ecs:UpdateService", &e),
                            )
                        })?;
                    self.mark_redeployed(service_arn.as_deref().unwrap_or_default(), name)
                        .await?;
                }
                Action::UpdateService {
                    desired_count,
                    task_definition,
                    network,
                    mark_redeployed,
                    ..
                } => {
                    let mut u = c
                        .ecs
                        .update_service()
                        .cluster(cluster)
                        .service(name)
                        .set_desired_count(*desired_count);
                    if *task_definition {
                        u = u.task_definition(td_arn.clone().unwrap_or_default());
                    }
                    if *network {
                        if let Some(n) = resolved(created_group.as_deref()) {
                            u = u.network_configuration(network_configuration(&n));
                        }
                    }
                    let out = u.send().await.map_err(|e| {
                        fail(
                            format!("updating service {name}"),
                            sdk_message("ecs:UpdateService", &e),
                        )
                    })?;
                    self.commit_records();
                    if *mark_redeployed {
                        self.mark_redeployed(service_arn.as_deref().unwrap_or_default(), name)
                            .await?;
                    }
                    // The service runs the new revision and group now: undoing must not remove them.
                    if *task_definition {
                        self.created
                            .retain(|c| !matches!(c, Created::TaskDefinition(_)));
                    }
                    if *network {
                        self.created
                            .retain(|c| !matches!(c, Created::SecurityGroup(_)));
                    }
                    if let Some(arn) = out.service().and_then(|s| s.service_arn()) {
                        service_arn = Some(arn.to_string());
                    }
                }
                Action::TagService { tags, .. } => {
                    let arn = service_arn.clone().unwrap_or_default();
                    self.tag(&arn, tags)
                        .await
                        .map_err(|e| fail(format!("tagging service {name}"), e))?;
                }
                Action::TagSecurityGroup { id, tags, .. } => {
                    c.ec2
                        .create_tags()
                        .resources(id)
                        .set_tags(Some(
                            tags.iter()
                                .map(|(k, v)| Ec2Tag::builder().key(k).value(v).build())
                                .collect(),
                        ))
                        .send()
                        .await
                        .map_err(|e| {
                            fail(
                                format!("tagging security group {id}"),
                                sdk_message("ec2:CreateTags", &e),
                            )
                        })?;
                }
                Action::DeleteService { .. }
                | Action::RemoveRecord { .. }
                | Action::DeregisterTaskDefinition { .. }
                | Action::DeleteSecurityGroup { .. } => {
                    unreachable!("delete actions are applied by Applier::delete")
                }
            }
        }

        let network = resolved(created_group.as_deref());
        let td = match td_arn {
            Some(t) => t,
            None => return Err(fail("reconcile", "no task definition revision was chosen")),
        };
        let service_arn = match service_arn {
            Some(a) => a,
            None => return Err(fail("reconcile", "the service ARN is unknown")),
        };
        Ok(Applied {
            service_arn,
            service_name: name.to_string(),
            cluster_arn: cluster_arn.to_string(),
            task_definition_arn: td,
            vpc_id: plan.desired.vpc_id.clone().unwrap_or_default(),
            subnet_ids: network
                .as_ref()
                .map(|n| n.subnets.iter().cloned().collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
            security_group_ids: network
                .as_ref()
                .map(|n| {
                    n.security_groups
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
            assign_public_ip: network
                .as_ref()
                .map(|n| n.assign_public_ip.clone())
                .unwrap_or_default(),
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
        let number = |arn: &str| {
            arn.rsplit_once(':')
                .and_then(|(_, n)| n.parse::<i32>().ok())
                .unwrap_or(0)
        };
        let mine = number(registered);
        let after = plan.desired.registered_after;
        if mine <= after + 1 {
            return None;
        }
        let revisions = match crate::observe::active_revisions(self.clients, family).await {
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
        let wanted = task_definition::normalize(&plan.desired.task_definition);
        let key = plan.desired.record.key();
        // Lowest first: the first equal one is the one every racing run settles on.
        for arn in between {
            match crate::observe::describe_task_definition(self.clients, arn).await {
                Ok(Some(td))
                    if td.status == "ACTIVE"
                        && td.tags.get(crate::RESOURCE_TAG) == Some(&key)
                        && task_definition::normalize(&td.doc) == wanted =>
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
    /// used, because a deregistered revision with a newer record would mislead heal. A failed
    /// deregister only leaves a spare revision without a record, and is logged.
    async fn withdraw(&self, arn: &str, record: &Record) -> bool {
        let keys: Vec<String> = record.tags(false).into_keys().collect();
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
                record.key()
            ))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::SecurityGroup)
                    .set_tags(Some(tags))
                    .build(),
            )
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                let duplicate = e
                    .as_service_error()
                    .is_some_and(|se| se.meta().code() == Some("InvalidGroup.Duplicate"));
                let msg = if duplicate {
                    // Made by this call's first attempt whose answer was lost, or by a replay
                    // of the same request running at the same time: this delegate's group.
                    match self.own_group(record, name, vpc_id).await {
                        Ok(Some(id)) => return Ok(id),
                        Ok(None) => format!("ec2:CreateSecurityGroup: a security group named {name} already exists in {vpc_id} and is not tagged as this delegate's: pass SecurityGroupIds, or rename or delete that group"),
                        Err(read) => format!("ec2:CreateSecurityGroup: a security group named {name} already exists in {vpc_id}, and whether it is this delegate's could not be read ({read}): run the request again"),
                    }
                } else {
                    sdk_message("ec2:CreateSecurityGroup", &e)
                };
                return Err(fail(format!("creating security group {name}"), msg));
            }
        };
        let id = out.group_id().unwrap_or_default().to_string();
        self.created.push(Created::SecurityGroup(id.clone()));
        // A new group allows all outbound traffic and no inbound: exactly what a delegate needs.
        Ok(id)
    }

    /// The group named `name` in `vpc_id` that this function created for this delegate. Read a
    /// few times: a group just created by another run may not be listed at once.
    async fn own_group(
        &self,
        record: &Record,
        name: &str,
        vpc_id: &str,
    ) -> Result<Option<String>, String> {
        let mut last_error = None;
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match crate::observe::managed_security_groups(self.clients, &record.key()).await {
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
                Err(e) => last_error = Some(e.to_string()),
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
        let mut req = self
            .clients
            .ecs
            .create_service()
            .cluster(cluster)
            .service_name(&record.service)
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
            .set_tags(Some(ecs_tags(&record.all_tags(true))));
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
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) => {
                // AWS refuses a second create of an ACTIVE name with other input (our tags
                // carry the time): a replay of this request running at the same time, or this
                // call's first attempt whose answer was lost, may have created it already.
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
                return Err(fail(
                    format!("creating service {}", record.service),
                    sdk_message("ecs:CreateService", &e),
                ));
            }
        };
        self.created.push(Created::Service {
            cluster: cluster.to_string(),
            name: record.service.clone(),
        });
        Ok(out
            .service()
            .and_then(|s| s.service_arn())
            .unwrap_or_default()
            .to_string())
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
            match crate::observe::service(self.clients, cluster, &record.service).await {
                Ok(Some(s)) if s.status == "ACTIVE" => {
                    let same = s.managed_by_us()
                        && s.tags.get(crate::RESOURCE_TAG) == Some(&record.key())
                        && s.owner() == record.owner.as_deref()
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
    async fn tag(&self, arn: &str, tags: &BTreeMap<String, String>) -> Result<(), String> {
        self.clients
            .ecs
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(ecs_tags(tags)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_message("ecs:TagResource", &e))
    }

    /// Remove tags from an ECS resource.
    async fn untag(&self, arn: &str, keys: &[String]) -> Result<(), String> {
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
            .map_err(|e| sdk_message("ecs:UntagResource", &e))
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
        self.tag(arn, &tags).await.map_err(|e| fail(what(), e))?;
        self.untag(arn, &stale).await.map_err(|e| fail(what(), e))
    }

    /// Remove a record ahead of a delete. A resource already gone (a revision deleted for good,
    /// a service purged) refuses tag changes with a client error, and a stack's Delete must not
    /// get stuck on it: that is logged. Anything else (throttling to the end, a 5xx, a refusal
    /// by IAM) stops the Delete before anything is removed, because a record left on a deleted
    /// delegate would make self-healing bring it back.
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
                tracing::warn!(resource = %arn, error = %sdk_message("ecs:UntagResource", &e), "could not remove the record of a resource that is gone");
                Ok(())
            }
            Err(e) => Err(fail(
                format!("removing the record from {arn}"),
                sdk_message("ecs:UntagResource", &e),
            )),
        }
    }

    /// Note on the service when heal last made it deploy: the back-off.
    async fn mark_redeployed(&self, service_arn: &str, name: &str) -> Result<(), ApplyError> {
        let now = (record::now_millis() / 1000).to_string();
        self.tag(
            service_arn,
            &BTreeMap::from([(record::REDEPLOYED_AT_TAG.to_string(), now)]),
        )
        .await
        .map_err(|e| fail(format!("tagging service {name}"), e))
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
            return Err(fail(what(), sdk_message("ecs:UpdateService", &e)));
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
            Err(e) => Err(fail(what(), sdk_message("ecs:DeleteService", &e))),
        }
    }

    /// Wait until the service is INACTIVE or gone, within the deadline.
    async fn wait_until_gone(&self, cluster: &str, name: &str) -> Result<(), ApplyError> {
        loop {
            let s = crate::observe::service(self.clients, cluster, name)
                .await
                .map_err(|e| {
                    fail(
                        format!("waiting for service {name} to drain"),
                        e.to_string(),
                    )
                })?;
            if s.as_ref().is_none_or(|s| s.status == "INACTIVE") {
                return Ok(());
            }
            if Instant::now() + Duration::from_secs(5) >= self.deadline {
                return Err(fail(
                    format!("waiting for service {name} to drain"),
                    "it is still DRAINING: run the update again in a few minutes",
                ));
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }

    /// Apply a delete plan. Failures are reported; there is nothing to undo.
    pub async fn delete(&mut self, cluster: &str, actions: &[Action]) -> Result<(), ApplyError> {
        for action in actions {
            tracing::info!(action = ?action, "applying");
            match action {
                Action::RemoveRecord {
                    resources, keys, ..
                } => {
                    for (arn, keys) in resources.iter().zip(keys) {
                        self.remove_record(arn, keys).await?;
                    }
                }
                Action::DeleteService { service, .. } => {
                    self.delete_service(cluster, service).await?;
                }
                Action::DeregisterTaskDefinition { arn, .. } => {
                    self.deregister(arn).await?;
                }
                Action::DeleteSecurityGroup { id, .. } => {
                    self.delete_security_group(id).await?;
                }
                other => unreachable!("not a delete action: {other:?}"),
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
            Err(e) => Err(fail(
                format!("deregistering {arn}"),
                sdk_message("ecs:DeregisterTaskDefinition", &e),
            )),
        }
    }

    /// Delete a security group, retrying while ENIs of stopped tasks still hold it.
    async fn delete_security_group(&self, id: &str) -> Result<(), ApplyError> {
        loop {
            match self
                .clients
                .ec2
                .delete_security_group()
                .group_id(id)
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let code = e
                        .as_service_error()
                        .and_then(|se| se.meta().code())
                        .unwrap_or_default()
                        .to_string();
                    if code == "InvalidGroup.NotFound" {
                        return Ok(());
                    }
                    let in_use = code == "DependencyViolation";
                    if !in_use || Instant::now() + Duration::from_secs(15) >= self.deadline {
                        let msg = if in_use {
                            format!("{id} is still in use by network interfaces of stopped tasks: delete it once they are released")
                        } else {
                            sdk_message("ec2:DeleteSecurityGroup", &e)
                        };
                        return Err(fail(format!("deleting security group {id}"), msg));
                    }
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        }
    }

    /// The revision and groups the delegate's ACTIVE service uses, when this run did not create
    /// that service itself (then undo removes it first, and nothing else uses what it made).
    async fn used_by_the_service(&self) -> BTreeSet<String> {
        let created_service = self
            .created
            .iter()
            .any(|c| matches!(c, Created::Service { .. }));
        let made_something = self
            .created
            .iter()
            .any(|c| matches!(c, Created::TaskDefinition(_) | Created::SecurityGroup(_)));
        let Some((cluster, name)) = self.target.as_ref() else {
            return BTreeSet::new();
        };
        if created_service || !made_something {
            return BTreeSet::new();
        }
        match crate::observe::service(self.clients, cluster, name).await {
            Ok(Some(s)) if s.status == "ACTIVE" => {
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
                Created::Service { cluster, name } => self.delete_service(cluster, name).await,
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
                        .map_err(|e| fail(format!("restoring the record on {arn}"), e))
                }
            };
            if let Err(e) = r {
                tracing::error!(created = ?c, error = %e, "could not remove it: remove it by hand");
            }
        }
    }
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
