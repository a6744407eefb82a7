//! Pre-flight: the AWS rules that need AWS state, checked before any write.
//!
//! AWS enforces these itself, but late and tersely, and the emulator the tests run against does
//! not enforce them at all. Checking them here gives one list of every problem, each naming the
//! property and the fix, and guarantees nothing is created for a request that cannot succeed.

use crate::model::{AssignPublicIp, ClusterStatus, LaunchType, NetworkMode, ServiceStatus};
use crate::observed::{Observed, ObservedService, VpcSource};
use crate::plan::{Action, Plan};
use crate::spec::{DelegateSpec, Problem, Problems};

/// Every rule that needs AWS state, all problems at once.
pub fn check(spec: &DelegateSpec, o: &Observed) -> Result<(), Problems> {
    let mut p = Vec::new();
    check_cluster(spec, o, &mut p);
    check_service(spec, o, &mut p);
    check_roles(o, &mut p);
    if spec.network_mode == NetworkMode::Awsvpc && o.cluster.is_some() {
        check_network(spec, o, &mut p);
    }
    if spec.launch_type == LaunchType::Ec2 && o.cluster_active() {
        check_capacity(spec, o, &mut p);
    }
    if p.is_empty() {
        Ok(())
    } else {
        Err(Problems(p))
    }
}

fn check_cluster(spec: &DelegateSpec, o: &Observed, p: &mut Vec<Problem>) {
    let cluster = spec.cluster_name();
    match &o.cluster {
        None => p.push(Problem::new(
            "ClusterName",
            format!("cluster {cluster} does not exist in this account and region: create it, or pass the name of an existing cluster"),
        )),
        Some(c) if c.status != ClusterStatus::Active => p.push(Problem::new(
            "ClusterName",
            format!("cluster {cluster} is {}, not ACTIVE: pass an ACTIVE cluster", c.status),
        )),
        Some(_) => {}
    }
}

/// A live service of the name must be this function's, and this stack's or no stack's.
fn check_service(spec: &DelegateSpec, o: &Observed, p: &mut Vec<Problem>) {
    let Some(s) = o
        .service
        .as_ref()
        .filter(|s| s.status != ServiceStatus::Inactive)
    else {
        return;
    };
    let (name, cluster) = (&spec.service_name, spec.cluster_name());
    if !s.managed_by_us() {
        p.push(Problem::new(
            "ServiceName",
            format!(
                "service {name} already exists in cluster {cluster} and was not created by this function: pass another ServiceName, or delete that service first"
            ),
        ));
    } else if let Some(theirs) = other_stack(spec, s) {
        p.push(Problem::new(
            "ServiceName",
            format!(
                "service {name} in cluster {cluster} belongs to the stack {theirs}, not to this one (a stack of the same name created again is another stack): pass another ServiceName, or, if that stack was deleted with the delegate retained and this stack is to take it over, set TakeOverFromStackId: {theirs}"
            ),
        ));
    } else if !s.may_adopt(spec.owner.as_ref()) && !taken_over(spec, s) {
        p.push(Problem::new(
            "ServiceName",
            format!(
                "service {name} in cluster {cluster} belongs to another stack's delegate ({}): pass another ServiceName, or remove that delegate from its stack first",
                s.owner().map(|o| o.to_string()).unwrap_or_default()
            ),
        ));
    }
}

/// The StackId of another stack the service is labelled as owned by, unless this request takes
/// it over on purpose. Only a label (tags can be written by others): it refuses, never grants.
fn other_stack<'a>(spec: &DelegateSpec, s: &'a ObservedService) -> Option<&'a str> {
    let (ours, theirs) = (spec.owner_stack_id.as_deref()?, s.owner_stack_id()?);
    let taken = spec.take_over_from.as_deref() == Some(theirs);
    (ours != theirs && !taken).then_some(theirs)
}

/// The service's owner is the stack `TakeOverFromStackId` names (the record store has checked
/// that the delegate is that stack's); by its name, on a service labelled before StackIds were.
fn taken_over(spec: &DelegateSpec, s: &ObservedService) -> bool {
    let Some(previous) = spec.take_over_from.as_deref() else {
        return false;
    };
    if let Some(theirs) = s.owner_stack_id() {
        return theirs == previous;
    }
    s.owner().is_some_and(|o| o.is_of_stack(previous))
}

fn check_roles(o: &Observed, p: &mut Vec<Problem>) {
    for r in &o.roles {
        match r.trusts_ecs_tasks {
            None => p.push(Problem::new(
                r.property,
                format!("role {} does not exist: create it or fix the ARN", r.arn),
            )),
            Some(false) => p.push(Problem::new(
                r.property,
                format!(
                    "role {} does not trust ecs-tasks.amazonaws.com, so ECS cannot use it: add ecs-tasks.amazonaws.com as a service principal allowed sts:AssumeRole in its trust policy",
                    r.arn
                ),
            )),
            Some(true) => {}
        }
    }
}

/// An EC2 delegate needs a container instance with its memory free.
fn check_capacity(spec: &DelegateSpec, o: &Observed, p: &mut Vec<Problem>) {
    let needed = i64::from(spec.memory);
    let best = o
        .container_instances
        .iter()
        .max_by_key(|i| i.remaining_memory);
    let fits = best.is_some_and(|i| i.remaining_memory >= needed);
    // An instance already running this delegate will free its memory during a deployment.
    let already_running = o.active_service().is_some_and(|s| s.managed_by_us());
    if fits || already_running {
        return;
    }
    let detail = match best {
        None => "it has no ACTIVE container instance".to_string(),
        Some(i) => format!(
            "the most free memory is {} MiB, on {}",
            i.remaining_memory,
            if i.ec2_instance_id.is_empty() {
                &i.arn
            } else {
                &i.ec2_instance_id
            }
        ),
    };
    p.push(Problem::new(
        "Memory",
        format!(
            "cluster {} has no container instance with {needed} MiB of memory free ({detail}): add EC2 capacity (about 8 GB per delegate), lower Memory, or use LaunchType FARGATE",
            spec.cluster_name()
        ),
    ));
}

/// A stack adopts a managed delegate that has no owner (one a direct invocation installed) only
/// when the delegate already is what the stack declares, apart from tags: otherwise a failed
/// Create would have changed, or replaced, a delegate that its rollback then may not touch.
pub fn check_adoption(spec: &DelegateSpec, o: &Observed, plan: &Plan) -> Result<(), Problems> {
    let adopting = spec.owner.is_some() && o.active_service().is_some_and(|s| s.owner().is_none());
    let changes = plan.actions.iter().any(|a| {
        !matches!(
            a,
            Action::TagService { .. } | Action::TagSecurityGroup { .. } | Action::RecordSpec { .. }
        )
    });
    if adopting && changes {
        return Err(Problems(vec![Problem::new(
            "ServiceName",
            format!(
                "service {} in cluster {} was installed outside CloudFormation and differs from these properties: converge it first (a direct Reconcile with the same properties), or delete it, then create the stack again",
                spec.service_name,
                spec.cluster_name()
            ),
        )]));
    }
    Ok(())
}

fn check_network(spec: &DelegateSpec, o: &Observed, p: &mut Vec<Problem>) {
    let n = &o.network;
    let cluster = spec.cluster_name();
    let Some(vpc) = &n.vpc_id else {
        if !n.vpc_candidates.is_empty() {
            p.push(Problem::new(
                "VpcId",
                format!(
                    "cluster {cluster} spans several VPCs ({}): pass VpcId or SubnetIds",
                    n.vpc_candidates.join(", ")
                ),
            ));
        } else if o.cluster_active() {
            p.push(Problem::new(
                "VpcId",
                format!("cannot tell which VPC cluster {cluster} runs in (it has no container instances and no awsvpc services): pass VpcId or SubnetIds"),
            ));
        }
        return;
    };
    if !n.vpc_exists {
        p.push(Problem::new(
            "VpcId",
            format!("VPC {vpc} does not exist in this account and region: pass an existing VPC id"),
        ));
        return;
    }
    let vpc_origin = match n.vpc_source {
        Some(VpcSource::Property) => format!("VpcId is {vpc}"),
        Some(VpcSource::Subnets) => format!("the first of SubnetIds is in {vpc}"),
        _ => format!("cluster {cluster} runs in {vpc}"),
    };
    if spec.launch_type == LaunchType::Ec2
        && !n.instance_vpcs.is_empty()
        && !n.instance_vpcs.contains(vpc)
    {
        p.push(Problem::new(
            "VpcId",
            format!(
                "{vpc_origin}, but the container instances of cluster {cluster} run in {}: EC2 tasks run on those instances, so pass VpcId and subnets of that VPC",
                n.instance_vpcs.join(", ")
            ),
        ));
    }
    let in_vpc = InVpc {
        vpc,
        origin: &vpc_origin,
    };
    let subnets = n.subnets.iter().map(|s| (&s.id, &s.vpc_id));
    in_vpc.check(p, "SubnetIds", "subnet", &n.missing_subnets, subnets);
    if spec.subnet_ids.is_none() && n.subnets.is_empty() {
        p.push(Problem::new(
            "SubnetIds",
            format!("VPC {vpc} has no subnets: create one, or pass SubnetIds"),
        ));
    }
    let groups = n.security_groups.iter().map(|g| (&g.id, &g.vpc_id));
    let missing = &n.missing_security_groups;
    in_vpc.check(p, "SecurityGroupIds", "security group", missing, groups);
    if spec.launch_type == LaunchType::Ec2 && spec.assign_public_ip == Some(AssignPublicIp::Enabled)
    {
        p.push(Problem::new(
            "AssignPublicIp",
            "ENABLED is only supported with LaunchType FARGATE: remove it, or use private subnets with a NAT gateway",
        ));
    }
}

/// The VPC the delegate runs in, and how that was decided (for the messages).
struct InVpc<'a> {
    vpc: &'a str,
    origin: &'a str,
}

impl InVpc<'_> {
    /// Each given subnet or group exists and is in the VPC.
    fn check<'a>(
        &self,
        p: &mut Vec<Problem>,
        property: &str,
        what: &str,
        missing: &[String],
        found: impl Iterator<Item = (&'a String, &'a String)>,
    ) {
        let (vpc, origin) = (self.vpc, self.origin);
        for id in missing {
            p.push(Problem::new(
                property,
                format!("{what} {id} does not exist: pass {what}s of {vpc}"),
            ));
        }
        for (id, in_vpc) in found.filter(|(_, v)| v.as_str() != vpc) {
            p.push(Problem::new(
                property,
                format!("{what} {id} is in {in_vpc}, but {origin}: pass {what}s of {vpc}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::*;
    use serde_json::json;

    fn spec(extra: serde_json::Value) -> DelegateSpec {
        let mut v = json!({"ClusterName": "prod", "AccountId": "a", "DelegateToken": "t"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        crate::spec::parse(&v).unwrap()
    }

    fn active_cluster() -> Option<ObservedCluster> {
        Some(ObservedCluster {
            arn: "arn:aws:ecs:us-east-1:1:cluster/prod".into(),
            name: "prod".into(),
            status: ClusterStatus::Active,
        })
    }

    fn instance(mem: i64) -> ObservedInstance {
        ObservedInstance {
            arn: "arn:ci".into(),
            ec2_instance_id: "i-1".into(),
            remaining_memory: mem,
        }
    }

    fn subnet(id: &str, vpc: &str) -> ObservedSubnet {
        ObservedSubnet {
            id: id.into(),
            vpc_id: vpc.into(),
            availability_zone: "a".into(),
            public: false,
        }
    }

    fn props(r: Result<(), Problems>) -> Vec<String> {
        r.err()
            .map(|p| p.0)
            .unwrap_or_default()
            .iter()
            .map(|p| p.property.clone())
            .collect()
    }

    #[test]
    fn missing_or_inactive_cluster() {
        let s = spec(json!({}));
        let o = Observed::default();
        assert_eq!(props(check(&s, &o)), vec!["ClusterName"]);
        let mut o = Observed {
            cluster: active_cluster(),
            ..Default::default()
        };
        o.cluster.as_mut().unwrap().status = ClusterStatus::Inactive;
        let e = check(&s, &o).unwrap_err();
        assert!(e.to_string().contains("is INACTIVE"), "{e}");
    }

    #[test]
    fn ec2_needs_an_instance_with_the_memory_free() {
        let s = spec(json!({}));
        let mut o = Observed {
            cluster: active_cluster(),
            container_instances: vec![instance(2048)],
            ..Default::default()
        };
        let e = check(&s, &o).unwrap_err();
        assert!(e.to_string().contains("2048 MiB, on i-1"), "{e}");
        o.container_instances.push(instance(8192));
        assert!(check(&s, &o).is_ok());
    }

    #[test]
    fn roles_must_exist_and_trust_ecs_tasks() {
        let s = spec(
            json!({"LaunchType": "FARGATE", "ExecutionRoleArn": "arn:aws:iam::1:role/e", "TaskRoleArn": "arn:aws:iam::1:role/t"}),
        );
        let o = Observed {
            cluster: active_cluster(),
            roles: vec![
                ObservedRole {
                    property: "ExecutionRoleArn",
                    arn: "arn:aws:iam::1:role/e".into(),
                    trusts_ecs_tasks: None,
                },
                ObservedRole {
                    property: "TaskRoleArn",
                    arn: "arn:aws:iam::1:role/t".into(),
                    trusts_ecs_tasks: Some(false),
                },
            ],
            network: ObservedNetwork {
                vpc_id: Some("vpc-1".into()),
                vpc_exists: true,
                subnets: vec![subnet("subnet-1", "vpc-1")],
                ..Default::default()
            },
            ..Default::default()
        };
        let e = check(&s, &o).unwrap_err();
        assert_eq!(
            props(Err(e.clone())),
            vec!["ExecutionRoleArn", "TaskRoleArn"]
        );
        assert!(e.to_string().contains("does not exist"));
        assert!(e
            .to_string()
            .contains("does not trust ecs-tasks.amazonaws.com"));
    }

    #[test]
    fn subnets_and_groups_of_another_vpc_are_named() {
        let s = spec(
            json!({"NetworkMode": "awsvpc", "SubnetIds": "subnet-a,subnet-x", "SecurityGroupIds": "sg-b"}),
        );
        let o = Observed {
            cluster: active_cluster(),
            container_instances: vec![instance(8192)],
            network: ObservedNetwork {
                vpc_id: Some("vpc-2".into()),
                vpc_source: Some(VpcSource::ContainerInstances),
                vpc_exists: true,
                subnets: vec![subnet("subnet-a", "vpc-1")],
                missing_subnets: vec!["subnet-x".into()],
                security_groups: vec![ObservedSecurityGroup {
                    id: "sg-b".into(),
                    vpc_id: "vpc-1".into(),
                    name: "g".into(),
                    tags: Default::default(),
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        let e = check(&s, &o).unwrap_err().to_string();
        assert!(e.contains("subnet subnet-a is in vpc-1, but cluster prod runs in vpc-2: pass subnets of vpc-2"), "{e}");
        assert!(e.contains("subnet subnet-x does not exist"), "{e}");
        assert!(e.contains("security group sg-b is in vpc-1"), "{e}");
    }

    #[test]
    fn awsvpc_without_a_known_vpc_asks_for_vpc_id() {
        let s = spec(json!({"LaunchType": "FARGATE", "ExecutionRoleArn": "arn:aws:iam::1:role/e"}));
        let o = Observed {
            cluster: active_cluster(),
            ..Default::default()
        };
        assert_eq!(props(check(&s, &o)), vec!["VpcId"]);
    }

    #[test]
    fn ec2_tasks_must_run_in_the_instances_vpc() {
        let s = spec(json!({"NetworkMode": "awsvpc", "VpcId": "vpc-2", "SubnetIds": "subnet-b"}));
        let o = Observed {
            cluster: active_cluster(),
            container_instances: vec![instance(8192)],
            network: ObservedNetwork {
                vpc_id: Some("vpc-2".into()),
                vpc_source: Some(VpcSource::Property),
                vpc_exists: true,
                instance_vpcs: vec!["vpc-1".into()],
                subnets: vec![subnet("subnet-b", "vpc-2")],
                ..Default::default()
            },
            ..Default::default()
        };
        let e = check(&s, &o).unwrap_err().to_string();
        assert!(
            e.contains("VpcId is vpc-2, but the container instances of cluster prod run in vpc-1"),
            "{e}"
        );
    }

    #[test]
    fn a_stack_adopts_only_a_delegate_that_already_matches() {
        use crate::plan::Desired;
        let mut s = spec(json!({}));
        s.owner = Some(crate::model::OwnerLabel::from_tag("stack/Delegate"));
        let mut tags = std::collections::BTreeMap::new();
        tags.insert(
            crate::MANAGED_BY_TAG.to_string(),
            crate::MANAGED_BY_VALUE.to_string(),
        );
        let o = Observed {
            service: Some(ObservedService {
                arn: "arn:svc".into(),
                name: "harness-delegate".into(),
                status: ServiceStatus::Active,
                desired_count: 1,
                task_definition: "td".into(),
                launch_type: Some(LaunchType::Ec2),
                network: None,
                tags,
                ..Default::default()
            }),
            ..Default::default()
        };
        let plan = |actions| Plan {
            actions,
            desired: Desired {
                task_definition: json!({}),
                task_definition_arn: None,
                network: None,
                vpc_id: None,
                record: Default::default(),
                registered_after: 0,
            },
        };
        let tag = Action::TagService {
            service: "harness-delegate".into(),
            tags: Default::default(),
            reason: String::new(),
        };
        assert!(check_adoption(&s, &o, &plan(vec![tag.clone()])).is_ok());
        let update = Action::UpdateService {
            service: "harness-delegate".into(),
            desired_count: Some(2),
            task_definition: false,
            network: false,
            reason: String::new(),
            mark_redeployed: false,
        };
        let e = check_adoption(&s, &o, &plan(vec![update, tag]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("installed outside CloudFormation and differs"),
            "{e}"
        );
        // A direct invocation (no owner) changes it freely.
        s.owner = None;
        let update = Action::UpdateService {
            service: "harness-delegate".into(),
            desired_count: Some(2),
            task_definition: false,
            network: false,
            reason: String::new(),
            mark_redeployed: false,
        };
        assert!(check_adoption(&s, &o, &plan(vec![update])).is_ok());
    }

    #[test]
    fn a_service_that_is_not_ours_is_not_taken_over() {
        let s = spec(json!({}));
        let o = Observed {
            cluster: active_cluster(),
            container_instances: vec![instance(8192)],
            service: Some(ObservedService {
                arn: "arn:svc".into(),
                name: "harness-delegate".into(),
                status: ServiceStatus::Active,
                desired_count: 1,
                task_definition: "td".into(),
                launch_type: Some(LaunchType::Ec2),
                network: None,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(props(check(&s, &o)), vec!["ServiceName"]);
    }
}
