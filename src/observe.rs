//! Observe: the AWS reads a plan depends on (the cluster, its VPC, subnets and security groups,
//! the IAM roles, container instance capacity, the task definition revisions, the service and
//! the resources tagged as the function's), turned into the plain structs of
//! [`crate::observed`]. The SDK's strings become the shared vocabulary's enums here, once.
//!
//! Only reads happen here; a failed read keeps the AWS error as its cause.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::Filter;
use aws_sdk_ecs::types as ecs;
use serde_json::Value;

use crate::aws_error::{AwsError, AwsErrorKind};
use crate::model::{
    AssignPublicIp, ClusterStatus, DelegateKey, HealthStatus, LaunchType, NetworkMode, OwnerLabel,
    RevisionStatus, RolloutState, ServiceStatus, StopCode, Target, TaskStatus, MANAGED_BY_TAG,
    MANAGED_BY_VALUE, RESOURCE_TAG,
};
pub use crate::observed::*;
use crate::spec::DelegateSpec;
use crate::{ecs_convert, Clients};

/// An AWS read that failed for a reason other than "not found".
#[derive(Debug, thiserror::Error)]
#[error("reading {what} failed: {source}")]
pub struct ObserveError {
    pub what: String,
    #[source]
    pub source: AwsError,
}

fn err(what: impl Into<String>, source: AwsError) -> ObserveError {
    ObserveError {
        what: what.into(),
        source,
    }
}

pub async fn observe(c: &Clients, spec: &DelegateSpec) -> Result<Observed, ObserveError> {
    let mut o = Observed {
        cluster: cluster(c, &spec.cluster).await?,
        ..Default::default()
    };
    let cluster_active = o.cluster_active();

    let roles = roles(c, spec);
    let td = latest_task_definition(c, &spec.family);
    let (roles, td) = futures::join!(roles, td);
    o.roles = roles?;
    o.latest_task_definition = td?;

    if cluster_active {
        o.service = service(c, &spec.cluster, &spec.service_name).await?;
        // Another delegate sharing the family may have registered the latest revision; the one
        // this service runs is the first candidate for reuse.
        let running = o
            .active_service()
            .map(|s| s.task_definition.clone())
            .filter(|td| {
                !td.is_empty() && o.latest_task_definition.as_ref().map(|l| &l.arn) != Some(td)
            });
        if let Some(td) = running {
            o.current_task_definition = describe_task_definition(c, &td).await?;
        }
        let needs_instances = spec.launch_type == LaunchType::Ec2
            || (spec.network_mode == NetworkMode::Awsvpc && spec.vpc_id.is_none());
        if needs_instances {
            o.container_instances = container_instances(c, &spec.cluster).await?;
        }
    }
    if spec.network_mode == NetworkMode::Awsvpc || spec.vpc_id.is_some() {
        o.network = network(c, spec, &o).await?;
    } else if cluster_active {
        // bridge: the VPC is informational only (reported in Data); a failure to find it is fine.
        if let Ok(d) = discover_vpc(c, spec, &o.container_instances).await {
            o.network.vpc_id = d.vpc;
            o.network.vpc_source = d.source;
            o.network.vpc_exists = o.network.vpc_id.is_some();
        }
    }
    Ok(o)
}

pub async fn cluster(c: &Clients, cluster: &str) -> Result<Option<ObservedCluster>, ObserveError> {
    let out = c
        .ecs
        .describe_clusters()
        .clusters(cluster)
        .send()
        .await
        .map_err(|e| {
            err(
                format!("ECS cluster {cluster}"),
                AwsError::new("ecs:DescribeClusters", e),
            )
        })?;
    Ok(out.clusters().first().map(|cl| ObservedCluster {
        arn: cl.cluster_arn().unwrap_or_default().to_string(),
        name: cl.cluster_name().unwrap_or_default().to_string(),
        status: ClusterStatus::from_aws(cl.status()),
    }))
}

async fn roles(c: &Clients, spec: &DelegateSpec) -> Result<Vec<ObservedRole>, ObserveError> {
    let mut out = Vec::new();
    for (property, arn) in [
        ("ExecutionRoleArn", &spec.execution_role_arn),
        ("TaskRoleArn", &spec.task_role_arn),
    ] {
        let Some(arn) = arn else { continue };
        let name = arn.rsplit('/').next().unwrap_or(arn);
        let trusts = match c.iam.get_role().role_name(name).send().await {
            Ok(r) => {
                let doc = r
                    .role()
                    .and_then(|r| r.assume_role_policy_document())
                    .unwrap_or_default();
                Some(trust_policy_allows_ecs_tasks(doc))
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_no_such_entity_exception()) =>
            {
                None
            }
            Err(e) => {
                return Err(err(
                    format!("IAM role {name}"),
                    AwsError::new("iam:GetRole", e),
                ))
            }
        };
        out.push(ObservedRole {
            property,
            arn: arn.clone(),
            trusts_ecs_tasks: trusts,
        });
    }
    Ok(out)
}

/// Whether a trust policy (as IAM returns it: URL-encoded JSON) lets ECS tasks assume the role.
pub fn trust_policy_allows_ecs_tasks(doc: &str) -> bool {
    let decoded = if doc.trim_start().starts_with('{') {
        doc.to_string()
    } else {
        percent_decode(doc)
    };
    let Ok(policy) = serde_json::from_str::<Value>(&decoded) else {
        return false;
    };
    let statements = match &policy["Statement"] {
        Value::Array(a) => a.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        _ => return false,
    };
    let as_list = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => vec![],
        }
    };
    statements.iter().any(|s| {
        s["Effect"] == "Allow"
            && as_list(&s["Action"])
                .iter()
                .any(|a| a == "sts:AssumeRole" || a == "sts:*" || a == "*")
            && as_list(&s["Principal"]["Service"])
                .iter()
                .any(|p| p == "ecs-tasks.amazonaws.com")
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The ACTIVE revisions of exactly `family`, oldest first, every page.
pub async fn active_revisions(c: &Clients, family: &str) -> Result<Vec<String>, ObserveError> {
    let arns = c
        .ecs
        .list_task_definitions()
        .family_prefix(family)
        .status(ecs::TaskDefinitionStatus::Active)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<String>, _>>()
        .await
        .map_err(|e| {
            err(
                format!("task definitions of {family}"),
                AwsError::new("ecs:ListTaskDefinitions", e),
            )
        })?;
    let mut ours: Vec<(i32, String)> = arns
        .into_iter()
        .filter_map(|arn| {
            let (fam, rev) = arn.rsplit('/').next()?.rsplit_once(':')?;
            let rev = rev.parse().ok()?;
            (fam == family).then_some((rev, arn))
        })
        .collect();
    ours.sort();
    Ok(ours.into_iter().map(|(_, arn)| arn).collect())
}

pub async fn latest_task_definition(
    c: &Clients,
    family: &str,
) -> Result<Option<ObservedTaskDefinition>, ObserveError> {
    match active_revisions(c, family).await?.last() {
        Some(arn) => describe_task_definition(c, arn).await,
        None => Ok(None),
    }
}

pub async fn describe_task_definition(
    c: &Clients,
    arn: &str,
) -> Result<Option<ObservedTaskDefinition>, ObserveError> {
    let out = c
        .ecs
        .describe_task_definition()
        .task_definition(arn)
        .include(ecs::TaskDefinitionField::Tags)
        .send()
        .await;
    let out = match out {
        Ok(o) => o,
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_client_exception()) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(err(
                format!("task definition {arn}"),
                AwsError::new("ecs:DescribeTaskDefinition", e),
            ))
        }
    };
    let Some(td) = out.task_definition() else {
        return Ok(None);
    };
    Ok(Some(ObservedTaskDefinition {
        arn: td.task_definition_arn().unwrap_or_default().to_string(),
        revision: td.revision(),
        status: RevisionStatus::from_aws(td.status().map(|s| s.as_str())),
        doc: ecs_convert::from_sdk(td),
        tags: ecs_tags(out.tags()),
    }))
}

fn ecs_tags(tags: &[ecs::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

pub fn observed_service(s: &ecs::Service) -> ObservedService {
    let network = s
        .network_configuration()
        .and_then(|n| n.awsvpc_configuration())
        .map(|a| AwsvpcConfig {
            subnets: a.subnets().iter().cloned().collect(),
            security_groups: a.security_groups().iter().cloned().collect(),
            assign_public_ip: a
                .assign_public_ip()
                .and_then(|x| AssignPublicIp::parse(x.as_str()))
                .unwrap_or(AssignPublicIp::Disabled),
        });
    ObservedService {
        arn: s.service_arn().unwrap_or_default().to_string(),
        name: s.service_name().unwrap_or_default().to_string(),
        status: ServiceStatus::from_aws(s.status()),
        desired_count: s.desired_count(),
        task_definition: s.task_definition().unwrap_or_default().to_string(),
        launch_type: s.launch_type().and_then(|l| LaunchType::parse(l.as_str())),
        network,
        tags: ecs_tags(s.tags()),
        running_count: s.running_count(),
        created_by: s.created_by().map(String::from),
        events: s
            .events()
            .iter()
            .map(|e| ServiceEvent {
                at_ms: e.created_at().map(epoch_ms).unwrap_or_default(),
                message: e.message().unwrap_or_default().to_string(),
            })
            .collect(),
        deployment: s
            .deployments()
            .iter()
            .find(|d| d.status() == Some("PRIMARY"))
            .map(|d| ObservedDeployment {
                task_definition: d.task_definition().unwrap_or_default().to_string(),
                rollout_state: d
                    .rollout_state()
                    .and_then(|r| RolloutState::parse(r.as_str())),
                rollout_reason: d.rollout_state_reason().map(String::from),
                failed_tasks: d.failed_tasks(),
                running_count: d.running_count(),
            }),
    }
}

/// `Err` with AWS's message when IAM refuses the function even a read of this service; any
/// other answer (the service or cluster gone included) is not a question of permission.
pub async fn may_act_on_service(c: &Clients, target: &Target) -> Result<(), AwsError> {
    let read = c
        .ecs
        .describe_services()
        .cluster(&target.cluster)
        .services(&target.service)
        .send()
        .await;
    match read.map_err(|e| AwsError::new("ecs:DescribeServices", e)) {
        Err(e) if e.is(AwsErrorKind::AccessDenied) => Err(e),
        _ => Ok(()),
    }
}

/// The named services of one cluster, described ten at a time (DescribeServices' limit) with
/// their tags. `None`: the cluster does not exist.
pub async fn services(
    c: &Clients,
    cluster: &str,
    names: &[String],
) -> Result<Option<BTreeMap<String, ObservedService>>, ObserveError> {
    let mut out = BTreeMap::new();
    for chunk in names.chunks(10) {
        let d = c
            .ecs
            .describe_services()
            .cluster(cluster)
            .set_services(Some(chunk.to_vec()))
            .include(ecs::ServiceField::Tags)
            .send()
            .await;
        match d {
            Ok(d) => out.extend(
                d.services()
                    .iter()
                    .map(observed_service)
                    .map(|s| (s.name.clone(), s)),
            ),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_cluster_not_found_exception()) =>
            {
                return Ok(None)
            }
            Err(e) => {
                return Err(err(
                    format!("ECS services {} of cluster {cluster}", chunk.join(", ")),
                    AwsError::new("ecs:DescribeServices", e),
                ))
            }
        }
    }
    Ok(Some(out))
}

/// One service of a cluster, with its tags. `None`: it does not exist, nor does the cluster.
pub async fn service(
    c: &Clients,
    cluster: &str,
    name: &str,
) -> Result<Option<ObservedService>, ObserveError> {
    Ok(services(c, cluster, &[name.to_string()])
        .await?
        .and_then(|mut found| found.remove(name)))
}

async fn container_instances(
    c: &Clients,
    cluster: &str,
) -> Result<Vec<ObservedInstance>, ObserveError> {
    let what = || format!("container instances of {cluster}");
    let arns = c
        .ecs
        .list_container_instances()
        .cluster(cluster)
        .status(ecs::ContainerInstanceStatus::Active)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<String>, _>>()
        .await
        .map_err(|e| err(what(), AwsError::new("ecs:ListContainerInstances", e)))?;
    if arns.is_empty() {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    // DescribeContainerInstances takes at most 100 at a time.
    for chunk in arns.chunks(100) {
        let d = c
            .ecs
            .describe_container_instances()
            .cluster(cluster)
            .set_container_instances(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| err(what(), AwsError::new("ecs:DescribeContainerInstances", e)))?;
        for ci in d.container_instances() {
            let remaining = ci
                .remaining_resources()
                .iter()
                .find(|r| r.name() == Some("MEMORY"))
                .map(|r| i64::from(r.integer_value()))
                .unwrap_or(0);
            out.push(ObservedInstance {
                arn: ci.container_instance_arn().unwrap_or_default().to_string(),
                ec2_instance_id: ci.ec2_instance_id().unwrap_or_default().to_string(),
                remaining_memory: remaining,
            });
        }
    }
    Ok(out)
}

/// The VPC the delegate runs in: VpcId; for EC2 the container instances' VPC; for Fargate the
/// given subnets' VPC, else the instances', else the one VPC the cluster's awsvpc services use.
async fn discover_vpc(
    c: &Clients,
    spec: &DelegateSpec,
    instances: &[ObservedInstance],
) -> Result<VpcDiscovery, ObserveError> {
    let ids: Vec<String> = instances
        .iter()
        .map(|i| i.ec2_instance_id.clone())
        .filter(|i| !i.is_empty())
        .collect();
    let ec2 = spec.launch_type == LaunchType::Ec2;
    // EC2 tasks run on the instances, so their VPC is checked even against a given VpcId.
    let instance_vpcs = if ids.is_empty() || (!ec2 && spec.vpc_id.is_some()) {
        vec![]
    } else {
        instance_vpcs(c, ids).await?
    };
    let found = |vpc: String, source| VpcDiscovery {
        vpc: Some(vpc),
        source: Some(source),
        candidates: vec![],
        instance_vpcs: instance_vpcs.clone(),
    };
    let undecided = |candidates: Vec<String>| VpcDiscovery {
        vpc: None,
        source: None,
        candidates,
        instance_vpcs: instance_vpcs.clone(),
    };
    if let Some(v) = &spec.vpc_id {
        return Ok(found(v.clone(), VpcSource::Property));
    }
    if ec2 {
        match instance_vpcs.as_slice() {
            [] => {}
            [one] => return Ok(found(one.clone(), VpcSource::ContainerInstances)),
            several => return Ok(undecided(several.to_vec())),
        }
    }
    if let Some(first) = spec.subnet_ids.as_ref().and_then(|s| s.first()) {
        if let Some(vpc) = subnet_vpcs(c, vec![first.clone()])
            .await?
            .into_iter()
            .next()
        {
            return Ok(found(vpc, VpcSource::Subnets));
        }
    }
    match instance_vpcs.as_slice() {
        [] => {}
        [one] => return Ok(found(one.clone(), VpcSource::ContainerInstances)),
        several => return Ok(undecided(several.to_vec())),
    }
    // The cluster's awsvpc services tell which VPC it runs in, if they agree on one.
    let vpcs = subnet_vpcs(c, awsvpc_service_subnets(c, &spec.cluster).await?).await?;
    Ok(match vpcs.as_slice() {
        [one] => found(one.clone(), VpcSource::AwsvpcServices),
        _ => undecided(vpcs),
    })
}

/// One subnet of each ACTIVE awsvpc service of the cluster.
async fn awsvpc_service_subnets(c: &Clients, cluster: &str) -> Result<Vec<String>, ObserveError> {
    let what = "services of the cluster";
    let arns = c
        .ecs
        .list_services()
        .cluster(cluster)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<String>, _>>()
        .await
        .map_err(|e| err(what, AwsError::new("ecs:ListServices", e)))?;
    let mut subnets = BTreeSet::new();
    for chunk in arns.chunks(10) {
        let d = c
            .ecs
            .describe_services()
            .cluster(cluster)
            .set_services(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| err(what, AwsError::new("ecs:DescribeServices", e)))?;
        subnets.extend(
            d.services()
                .iter()
                .filter(|s| ServiceStatus::from_aws(s.status()) == ServiceStatus::Active)
                .filter_map(|s| {
                    s.network_configuration()?
                        .awsvpc_configuration()?
                        .subnets()
                        .first()
                        .cloned()
                }),
        );
    }
    Ok(subnets.into_iter().collect())
}

/// The distinct VPCs of these EC2 instances. A filter, not InstanceIds, so that an instance
/// terminated a moment ago is skipped rather than failing the call.
async fn instance_vpcs(c: &Clients, ids: Vec<String>) -> Result<Vec<String>, ObserveError> {
    let mut vpcs = BTreeSet::new();
    for chunk in ids.chunks(200) {
        let pages = c
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("instance-id")
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            )
            .into_paginator()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| {
                err(
                    "EC2 instances of the cluster",
                    AwsError::new("ec2:DescribeInstances", e),
                )
            })?;
        vpcs.extend(
            pages
                .iter()
                .flat_map(|p| p.reservations())
                .flat_map(|r| r.instances())
                .filter_map(|i| i.vpc_id().map(String::from)),
        );
    }
    Ok(vpcs.into_iter().collect())
}

/// The distinct VPCs these subnets are in.
async fn subnet_vpcs(c: &Clients, subnets: Vec<String>) -> Result<Vec<String>, ObserveError> {
    if subnets.is_empty() {
        return Ok(vec![]);
    }
    let d = c
        .ec2
        .describe_subnets()
        .filters(
            Filter::builder()
                .name("subnet-id")
                .set_values(Some(subnets))
                .build(),
        )
        .send()
        .await
        .map_err(|e| err("subnets", AwsError::new("ec2:DescribeSubnets", e)))?;
    let vpcs: BTreeSet<String> = d
        .subnets()
        .iter()
        .filter_map(|s| s.vpc_id().map(String::from))
        .collect();
    Ok(vpcs.into_iter().collect())
}

/// Which VPC the delegate runs in, and how that was decided.
struct VpcDiscovery {
    vpc: Option<String>,
    source: Option<VpcSource>,
    /// When the cluster spans several VPCs: those VPCs (none is chosen).
    candidates: Vec<String>,
    /// The VPCs of the cluster's container instances (read for EC2, or to decide for Fargate).
    instance_vpcs: Vec<String>,
}

async fn network(
    c: &Clients,
    spec: &DelegateSpec,
    o: &Observed,
) -> Result<ObservedNetwork, ObserveError> {
    let mut n = ObservedNetwork::default();
    if o.cluster_active() || spec.vpc_id.is_some() {
        let d = discover_vpc(c, spec, &o.container_instances).await?;
        n.vpc_id = d.vpc;
        n.vpc_source = d.source;
        n.vpc_candidates = d.candidates;
        n.instance_vpcs = d.instance_vpcs;
    }
    if let Some(vpc) = &n.vpc_id {
        let d = c
            .ec2
            .describe_vpcs()
            .filters(Filter::builder().name("vpc-id").values(vpc).build())
            .send()
            .await
            .map_err(|e| err(format!("VPC {vpc}"), AwsError::new("ec2:DescribeVpcs", e)))?;
        n.vpc_exists = !d.vpcs().is_empty();
    }

    subnets(c, spec.subnet_ids.as_deref(), &mut n).await?;
    if let Some(ids) = &spec.security_group_ids {
        given_security_groups(c, ids, &mut n).await?;
    }
    // A delegate moved to another VPC gets a new group there; the old one goes with the Delete.
    n.managed_security_group = managed_security_groups(c, &spec.key())
        .await?
        .into_iter()
        .find(|g| Some(&g.vpc_id) == n.vpc_id.as_ref());
    Ok(n)
}

/// The subnets: the given ones wherever they are (so a wrong VPC can be named), else the VPC's,
/// each with whether it is public.
async fn subnets(
    c: &Clients,
    subnet_ids: Option<&[String]>,
    n: &mut ObservedNetwork,
) -> Result<(), ObserveError> {
    let subnet_filter = match (subnet_ids, &n.vpc_id) {
        (Some(ids), _) => Some(
            Filter::builder()
                .name("subnet-id")
                .set_values(Some(ids.to_vec()))
                .build(),
        ),
        (None, Some(vpc)) if n.vpc_exists => {
            Some(Filter::builder().name("vpc-id").values(vpc).build())
        }
        _ => None,
    };
    if let Some(f) = subnet_filter {
        let d = c
            .ec2
            .describe_subnets()
            .filters(f)
            .send()
            .await
            .map_err(|e| err("subnets", AwsError::new("ec2:DescribeSubnets", e)))?;
        let public = public_subnets(c, d.subnets()).await?;
        n.subnets = d
            .subnets()
            .iter()
            .map(|s| {
                let id = s.subnet_id().unwrap_or_default().to_string();
                ObservedSubnet {
                    public: public.contains(&id),
                    id,
                    vpc_id: s.vpc_id().unwrap_or_default().to_string(),
                    availability_zone: s.availability_zone().unwrap_or_default().to_string(),
                }
            })
            .collect();
        n.subnets.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(ids) = subnet_ids {
            n.missing_subnets = ids
                .iter()
                .filter(|id| !n.subnets.iter().any(|s| &s.id == *id))
                .cloned()
                .collect();
        }
    }

    Ok(())
}

/// The given security groups that exist, and the ids of those that do not.
async fn given_security_groups(
    c: &Clients,
    ids: &[String],
    n: &mut ObservedNetwork,
) -> Result<(), ObserveError> {
    let by_id = Filter::builder()
        .name("group-id")
        .set_values(Some(ids.to_vec()))
        .build();
    n.security_groups = security_groups(c, vec![by_id]).await?;
    n.missing_security_groups = ids
        .iter()
        .filter(|id| !n.security_groups.iter().any(|g| &g.id == *id))
        .cloned()
        .collect();
    Ok(())
}

fn observed_sg(g: &aws_sdk_ec2::types::SecurityGroup) -> ObservedSecurityGroup {
    ObservedSecurityGroup {
        id: g.group_id().unwrap_or_default().to_string(),
        vpc_id: g.vpc_id().unwrap_or_default().to_string(),
        name: g.group_name().unwrap_or_default().to_string(),
        tags: g
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_string(),
                    t.value().unwrap_or_default().to_string(),
                ))
            })
            .collect(),
    }
}

/// The security groups this function created for the delegate `key` (one per VPC it
/// has run in), found by their tags.
pub async fn managed_security_groups(
    c: &Clients,
    key: &DelegateKey,
) -> Result<Vec<ObservedSecurityGroup>, ObserveError> {
    managed_security_groups_of(c, std::slice::from_ref(key)).await
}

/// The security groups this function created for any of these delegates (at most 200 keys).
pub async fn managed_security_groups_of(
    c: &Clients,
    keys: &[DelegateKey],
) -> Result<Vec<ObservedSecurityGroup>, ObserveError> {
    let filters = vec![
        Filter::builder()
            .name(format!("tag:{RESOURCE_TAG}"))
            .set_values(Some(keys.iter().map(ToString::to_string).collect()))
            .build(),
        Filter::builder()
            .name(format!("tag:{MANAGED_BY_TAG}"))
            .values(MANAGED_BY_VALUE)
            .build(),
    ];
    security_groups(c, filters).await
}

/// The security groups that match every filter.
async fn security_groups(
    c: &Clients,
    filters: Vec<Filter>,
) -> Result<Vec<ObservedSecurityGroup>, ObserveError> {
    let d = c
        .ec2
        .describe_security_groups()
        .set_filters(Some(filters))
        .send()
        .await
        .map_err(|e| {
            err(
                "security groups",
                AwsError::new("ec2:DescribeSecurityGroups", e),
            )
        })?;
    Ok(d.security_groups().iter().map(observed_sg).collect())
}

/// Which of these subnets route to an internet gateway, through their own route table or, when
/// they have none, their VPC's main one.
async fn public_subnets(
    c: &Clients,
    subnets: &[aws_sdk_ec2::types::Subnet],
) -> Result<BTreeSet<String>, ObserveError> {
    let mut public = BTreeSet::new();
    let vpcs: BTreeSet<String> = subnets
        .iter()
        .filter_map(|s| s.vpc_id().map(String::from))
        .collect();
    if vpcs.is_empty() {
        return Ok(public);
    }
    let d = c
        .ec2
        .describe_route_tables()
        .filters(
            Filter::builder()
                .name("vpc-id")
                .set_values(Some(vpcs.iter().cloned().collect()))
                .build(),
        )
        .send()
        .await
        .map_err(|e| err("route tables", AwsError::new("ec2:DescribeRouteTables", e)))?;
    let to_igw = |rt: &aws_sdk_ec2::types::RouteTable| {
        rt.routes()
            .iter()
            .any(|r| r.gateway_id().is_some_and(|g| g.starts_with("igw-")))
    };
    let mut explicit: BTreeMap<String, bool> = BTreeMap::new();
    let mut main_public: BTreeMap<String, bool> = BTreeMap::new();
    for rt in d.route_tables() {
        let is_public = to_igw(rt);
        for a in rt.associations() {
            if a.main() == Some(true) {
                main_public.insert(rt.vpc_id().unwrap_or_default().to_string(), is_public);
            } else if let Some(s) = a.subnet_id() {
                explicit.insert(s.to_string(), is_public);
            }
        }
    }
    for s in subnets {
        let id = s.subnet_id().unwrap_or_default();
        let vpc = s.vpc_id().unwrap_or_default();
        let is_public = explicit
            .get(id)
            .copied()
            .unwrap_or_else(|| main_public.get(vpc).copied().unwrap_or(false));
        if is_public {
            public.insert(id.to_string());
        }
    }
    Ok(public)
}

/// Which of a delegate's leftovers a Delete from `owner` may remove: a CloudFormation Delete
/// removes what carries its owner tag, and untagged leftovers only when the service is its own;
/// never what a direct invocation or another stack made.
struct Removable<'a> {
    owner: Option<&'a OwnerLabel>,
    service_is_ours: bool,
}

impl Removable<'_> {
    fn allows(&self, tagged: Option<OwnerLabel>) -> bool {
        match (self.owner, tagged) {
            (None, _) => true,
            (Some(w), Some(h)) => *w == h,
            (Some(_), None) => self.service_is_ours,
        }
    }
}

/// What a Delete of the delegate `target` (family `family`) from `owner` may remove:
/// revisions and a group are this delegate's when tagged with its key and not with another
/// owner.
pub async fn observe_for_delete(
    c: &Clients,
    target: &Target,
    family: &str,
    owner: Option<&OwnerLabel>,
) -> Result<ObservedForDelete, ObserveError> {
    let key = target.key();
    let mut o = ObservedForDelete {
        service: service(c, &target.cluster, &target.service).await?,
        ..Default::default()
    };
    let removable = Removable {
        owner,
        service_is_ours: o.service.as_ref().is_some_and(|s| s.owned_by(owner)),
    };
    o.managed_security_groups = managed_security_groups(c, &key)
        .await?
        .into_iter()
        .filter(|g| removable.allows(g.owner()))
        .collect();
    let revision_records = our_revisions(c, &key, family, &removable, &mut o).await?;
    // The record labels on the service and the revisions, taken off with the delegate.
    if let Some(s) = o.service.as_ref().filter(|s| s.owned_by(owner)) {
        let keys = crate::record::record_keys(&s.tags);
        if !keys.is_empty() {
            o.records.push((s.arn.clone(), keys));
        }
    }
    o.records.extend(revision_records);
    Ok(o)
}

/// The family's ACTIVE revisions that are this delegate's (into `o.our_revisions`), and the
/// records on them and on the revision the service runs: found directly, since the tagging
/// index may lag behind a fresh registration.
async fn our_revisions(
    c: &Clients,
    key: &DelegateKey,
    family: &str,
    removable: &Removable<'_>,
    o: &mut ObservedForDelete,
) -> Result<Vec<(String, Vec<String>)>, ObserveError> {
    let mut records: Vec<(String, Vec<String>)> = Vec::new();
    let mut ours_with_record = |td: &ObservedTaskDefinition| {
        let ours = key.tagged_on(&td.tags) && removable.allows(crate::model::owner_of(&td.tags));
        let keys = crate::record::record_keys(&td.tags);
        if ours && !keys.is_empty() && !records.iter().any(|(a, _)| a == &td.arn) {
            records.push((td.arn.clone(), keys));
        }
        ours
    };
    for arn in active_revisions(c, family).await? {
        if let Some(td) = describe_task_definition(c, &arn).await? {
            if ours_with_record(&td) {
                o.our_revisions.push(td.arn);
            }
        }
    }
    let running = o
        .service
        .as_ref()
        .map(|s| s.task_definition.clone())
        .filter(|td| !td.is_empty() && !o.our_revisions.contains(td));
    if let Some(td) = running {
        if let Some(td) = describe_task_definition(c, &td).await? {
            ours_with_record(&td);
        }
    }
    Ok(records)
}

/// Epoch milliseconds of an AWS timestamp (0 before the epoch).
fn epoch_ms(t: &aws_sdk_ecs::primitives::DateTime) -> u64 {
    u64::try_from(t.to_millis().unwrap_or(0)).unwrap_or(0)
}

/// What a wait needs to judge a rollout of `revision` (an ARN): the service, and its tasks of
/// that revision, running or stopped in the last hour (ECS keeps stopped tasks about that long).
/// Three or four reads: DescribeServices, ListTasks twice, DescribeTasks when there are tasks.
pub async fn rollout(
    c: &Clients,
    target: &Target,
    revision: &str,
) -> Result<ObservedRollout, ObserveError> {
    let Some(service) = service(c, &target.cluster, &target.service).await? else {
        return Ok(ObservedRollout::default());
    };
    let mut arns = Vec::new();
    for desired in [ecs::DesiredStatus::Running, ecs::DesiredStatus::Stopped] {
        // One page each: a delegate runs a few tasks, and the newest are what a wait judges.
        let page = c
            .ecs
            .list_tasks()
            .cluster(&target.cluster)
            .service_name(&target.service)
            .desired_status(desired)
            .send()
            .await
            .map_err(|e| {
                err(
                    format!("the tasks of {}", target.key()),
                    AwsError::new("ecs:ListTasks", e),
                )
            })?;
        arns.extend(page.task_arns().iter().cloned());
    }
    let tasks = tasks(c, &target.cluster, &arns).await?;
    Ok(ObservedRollout {
        service: Some(service),
        tasks: tasks
            .into_iter()
            .filter(|t| t.task_definition == revision)
            .collect(),
    })
}

/// The tasks `arns` of `cluster`, described a hundred at a time (DescribeTasks' limit).
async fn tasks(
    c: &Clients,
    cluster: &str,
    arns: &[String],
) -> Result<Vec<ObservedTask>, ObserveError> {
    let mut out = Vec::new();
    for chunk in arns.chunks(100) {
        let d = c
            .ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| {
                err(
                    format!("tasks of {cluster}"),
                    AwsError::new("ecs:DescribeTasks", e),
                )
            })?;
        out.extend(d.tasks().iter().map(observed_task));
    }
    Ok(out)
}

fn observed_task(t: &ecs::Task) -> ObservedTask {
    ObservedTask {
        arn: t.task_arn().unwrap_or_default().to_string(),
        task_definition: t.task_definition_arn().unwrap_or_default().to_string(),
        status: TaskStatus::from_aws(t.last_status()),
        health: HealthStatus::from_aws(t.health_status().map(|h| h.as_str())),
        created_at_ms: t.created_at().map(epoch_ms).unwrap_or_default(),
        stopped_at_ms: t.stopped_at().or(t.stopping_at()).map(epoch_ms),
        stopped_reason: t.stopped_reason().map(String::from),
        stop_code: t.stop_code().and_then(|s| StopCode::parse(s.as_str())),
        containers: t
            .containers()
            .iter()
            .map(|k| ObservedContainer {
                name: k.name().unwrap_or_default().to_string(),
                reason: k.reason().map(String::from),
                exit_code: k.exit_code(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_policy_is_read_encoded_or_not() {
        let ok = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":["ec2.amazonaws.com","ecs-tasks.amazonaws.com"]},"Action":"sts:AssumeRole"}]}"#;
        assert!(trust_policy_allows_ecs_tasks(ok));
        let encoded = "%7B%22Statement%22%3A%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22Service%22%3A%22ecs-tasks.amazonaws.com%22%7D%2C%22Action%22%3A%5B%22sts%3AAssumeRole%22%5D%7D%7D";
        assert!(trust_policy_allows_ecs_tasks(encoded));
        let ec2_only = r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        assert!(!trust_policy_allows_ecs_tasks(ec2_only));
        let denied = r#"{"Statement":[{"Effect":"Deny","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        assert!(!trust_policy_allows_ecs_tasks(denied));
        assert!(!trust_policy_allows_ecs_tasks("not json"));
    }
}
