//! Self-healing against moto: every row of the repair matrix, driven by the sample events in
//! `events/`, and the three consequences of healing from the record (an Update is never
//! reverted, a Delete is never undone, delegates sharing a family heal independently).
//!
//! Each test installs its delegate with a stack Create in a region of its own (a scheduled heal
//! covers the whole region) and heals through a proxy that records every AWS call, so "no write"
//! is checked on the wire. What moto cannot show (tasks that fail, deployments that fail) is
//! patched into moto's DescribeServices answers by the proxy.

mod support;

use std::time::Duration;

use harness_ecs_delegate_bootstrap::Clients;
use serde_json::{json, Value};
use support::*;

/// A Fargate delegate installed by a stack Create, in a region of its own.
struct Installed {
    /// Straight to moto: for changes made out of band and for checks.
    c: Clients,
    /// Through the recording proxy: what heal uses.
    proxy: Proxy,
    via: Clients,
    w: World,
    props: Value,
    rx: Receiver,
    /// The physical id (the service ARN).
    arn: String,
    data: Value,
}

impl Installed {
    async fn new(rules: Vec<Rule>) -> Installed {
        Self::with(rules, |_| {}).await
    }

    async fn with(rules: Vec<Rule>, props: impl FnOnce(&mut Value)) -> Installed {
        let region = fresh_region();
        let c = clients_at(&aws(), region).await;
        let w = seed(&c, false).await;
        let mut p = w.fargate_props();
        props(&mut p);
        let proxy = Proxy::start(rules).await;
        let via = proxy.clients_in(region).await;
        let rx = Receiver::start(0).await;
        let body = create_ok(&c, &rx, "create", &p).await;
        Installed {
            arn: body["PhysicalResourceId"].as_str().unwrap().to_string(),
            data: body["Data"].clone(),
            c,
            proxy,
            via,
            w,
            props: p,
            rx,
        }
    }

    fn key(&self) -> String {
        format!("{}/harness-delegate", self.w.cluster)
    }

    /// The same delegate in a second cluster of the same region, installed by a stack Create
    /// under another logical id: that cluster's world and the Create's answer.
    async fn install_another(&self, logical_id: &str) -> (World, Value) {
        let b = seed(&self.c, false).await;
        let mut pb = self.props.clone();
        pb["ClusterName"] = json!(b.cluster);
        pb["VpcId"] = json!(b.vpc);
        let mut eb = cfn_event("Create", &self.rx.url(logical_id), &pb, None, None);
        eb["LogicalResourceId"] = json!(logical_id);
        let created = run_cfn(&self.c, &self.rx, eb).await;
        assert_eq!(created["Status"], "SUCCESS", "{created}");
        (b, created)
    }

    /// A sample event from `events/`, aimed at this delegate's cluster.
    fn event(&self, name: &str) -> Value {
        let path = format!("{}/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("harness-demo") || name == "heal-schedule",
            "{name}: the sample events name the demo cluster"
        );
        serde_json::from_str(&text.replace("harness-demo", &self.w.cluster)).unwrap()
    }

    /// Run an event through the handler, reaching AWS through the proxy; calls counted afresh.
    async fn run(&self, event: Value) -> Value {
        self.proxy.reset_counts();
        handler(self.via.clone())
            .handle(event, deadline_in(120))
            .await
            .expect("heal answers")
    }

    /// The scheduled heal (events/heal-schedule.json); returns this delegate's report.
    async fn heal(&self) -> Value {
        let result = self.run(self.event("heal-schedule")).await;
        report_of(&result, &self.key())
    }

    async fn service(&self) -> aws_sdk_ecs::types::Service {
        service(&self.c, &self.w.cluster, "harness-delegate")
            .await
            .expect("the service exists")
    }
}

/// The delegates a heal result reports, by key.
fn delegates_in(result: &Value) -> Vec<&str> {
    result["Delegates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["Delegate"].as_str().unwrap())
        .collect()
}

fn actions(report: &Value) -> Vec<String> {
    action_names(report)
}

fn network(s: &aws_sdk_ecs::types::Service) -> (Vec<String>, Vec<String>, String) {
    let a = s
        .network_configuration()
        .unwrap()
        .awsvpc_configuration()
        .unwrap();
    let mut subnets = a.subnets().to_vec();
    subnets.sort();
    (
        subnets,
        a.security_groups().to_vec(),
        a.assign_public_ip().unwrap().as_str().to_string(),
    )
}

#[tokio::test]
async fn everything_as_recorded_means_no_write_call() {
    let i = Installed::new(vec![]).await;
    let r = i.heal().await;
    assert_eq!(r["Outcome"], "Converged", "{r}");
    assert_eq!(r["Found"], json!(["as recorded"]));
    assert!(i.proxy.writes().is_empty(), "{:?}", i.proxy.writes());
    // The scheduled heal reads the record table and the service: the revision runs steadily
    // and the group the function made is in use, so neither is read.
    assert_eq!(
        (i.proxy.total_calls(), i.proxy.operations()),
        (2, vec!["Scan".to_string(), "DescribeServices".to_string()])
    );
    // A targeted heal of the same delegate, steady (its tasks run its revision), reads the
    // record and the service only: neither its revision nor its group can go while it runs.
    let r = report_of(&i.run(i.event("heal")).await, &i.key());
    assert_eq!(r["Outcome"], "Converged", "{r}");
    assert!(i.proxy.writes().is_empty(), "{:?}", i.proxy.writes());
    assert_eq!(
        (
            i.proxy.calls("GetItem"),
            i.proxy.calls("DescribeServices"),
            i.proxy.calls("DescribeTaskDefinition"),
        ),
        (1, 1, 0)
    );
}

/// moto runs no tasks; the proxy reports the desired count running in the current
/// deployment, rolled out, as in a steady state.
fn tasks_running(v: &mut Value) {
    for s in v["services"].as_array_mut().into_iter().flatten() {
        s["runningCount"] = s["desiredCount"].clone();
        s["deployments"][0]["runningCount"] = s["desiredCount"].clone();
        s["deployments"][0]["rolloutState"] = json!("COMPLETED");
    }
}

/// With its tasks running in the group the record names, the group exists (AWS does not delete
/// a group in use), so a targeted heal of a converged delegate reads the service and its
/// revision, nothing more. Once the service runs in another group, the groups are read again.
#[tokio::test]
async fn a_steady_delegate_is_checked_with_two_reads() {
    let i = Installed::new(vec![Rule {
        operation: "DescribeServices",
        fault: Fault::Patch(tasks_running),
        times: u32::MAX,
    }])
    .await;
    let recorded = network(&i.service().await).1;
    let r = report_of(&i.run(i.event("heal")).await, &i.key());
    assert_eq!(r["Outcome"], "Converged", "{r}");
    // The delegate's record and its service: the revision the service runs is the committed
    // one, which never changes, and the group is in use, so it exists.
    assert_eq!(i.proxy.operations(), ["GetItem", "DescribeServices"], "{r}");
    assert_eq!(i.proxy.total_calls(), 2);
    // Nor does it build the clients it does not call (src/lib.rs: LazyClient).
    let built = (i.via.ec2.is_built(), i.via.iam.is_built());
    assert_eq!(
        built,
        (false, false),
        "EC2's and IAM's clients built by a steady heal"
    );

    let other =
        i.c.ec2
            .create_security_group()
            .group_name(unique("other"))
            .description("x")
            .vpc_id(&i.w.vpc)
            .send()
            .await
            .unwrap();
    let (subnets, _, _) = network(&i.service().await);
    update_out_of_band(&i.c, &i.w.cluster)
        .network_configuration(
            aws_sdk_ecs::types::NetworkConfiguration::builder()
                .awsvpc_configuration(
                    aws_sdk_ecs::types::AwsVpcConfiguration::builder()
                        .set_subnets(Some(subnets))
                        .security_groups(other.group_id().unwrap())
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let r = report_of(&i.run(i.event("heal")).await, &i.key());
    assert_eq!(actions(&r), vec!["UpdateService"], "{r}");
    assert_eq!(i.proxy.calls("DescribeSecurityGroups"), 1);
    assert!(i.via.ec2.is_built(), "the groups were read through EC2");
    assert_eq!(network(&i.service().await).1, recorded);
}

#[tokio::test]
async fn a_deleted_service_is_created_again_as_recorded() {
    let i = Installed::new(vec![]).await;
    let before = i.service().await;
    delete_service_out_of_band(&i.c, &i.w.cluster).await;
    assert_eq!(i.service().await.status(), Some("INACTIVE"));

    let r = i.heal().await;
    assert_eq!(r["Outcome"], "Repaired", "{r}");
    assert_eq!(actions(&r), vec!["CreateService"]);
    let after = i.service().await;
    assert_eq!(after.status(), Some("ACTIVE"));
    assert_eq!(after.desired_count(), 1);
    assert_eq!(after.launch_type(), before.launch_type());
    assert_eq!(after.task_definition(), before.task_definition());
    assert_eq!(network(&after), network(&before), "the recorded network");
    let tag = |s: &aws_sdk_ecs::types::Service, k: &str| {
        s.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(String::from)
    };
    for k in [
        "team",
        "harness-delegate:owner",
        "harness-delegate:applied-at",
        "harness-delegate:task-definition",
    ] {
        assert_eq!(tag(&after, k), tag(&before, k), "tag {k}");
    }
    // And the next heal finds nothing to do.
    assert_eq!(i.heal().await["Outcome"], "Converged");
    assert!(i.proxy.writes().is_empty());
}

#[tokio::test]
async fn a_desired_count_changed_out_of_band_is_set_back() {
    let i = Installed::new(vec![]).await;
    for drifted in [0, 3] {
        update_out_of_band(&i.c, &i.w.cluster)
            .desired_count(drifted)
            .send()
            .await
            .unwrap();
        let r = i.heal().await;
        assert_eq!(actions(&r), vec!["UpdateService"], "{r}");
        assert!(r["Found"][0]
            .as_str()
            .unwrap()
            .contains(&format!("desired count {drifted} -> 1")));
        assert_eq!(i.service().await.desired_count(), 1);
        let sent = i.proxy.last_body("UpdateService");
        assert_eq!(sent["desiredCount"], 1);
        assert!(
            sent.get("taskDefinition").is_none(),
            "only the count: {sent}"
        );
    }
}

#[tokio::test]
async fn a_deregistered_revision_is_registered_again_and_used() {
    let i = Installed::new(vec![]).await;
    let family = i.props["TaskDefinitionFamily"].as_str().unwrap();
    let old = i.data["TaskDefinitionArn"].as_str().unwrap().to_string();
    i.c.ecs
        .deregister_task_definition()
        .task_definition(&old)
        .send()
        .await
        .unwrap();
    assert!(active_revisions(&i.c, family).await.is_empty());
    // A deregistered revision goes on running; it matters once ECS must start tasks again.
    ecs_sim::crash_tasks(&i.w.cluster, "harness-delegate");

    let r = i.heal().await;
    assert_eq!(
        actions(&r),
        vec!["RegisterTaskDefinition", "RecordSpec", "UpdateService"],
        "{r}"
    );
    let now = active_revisions(&i.c, family).await;
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], old);
    assert_eq!(i.service().await.task_definition(), Some(now[0].as_str()));
    // The copy is the same definition, secrets reference included.
    let describe = |arn: String| {
        let c = i.c.clone();
        async move { revision(&c, &arn).await }
    };
    let (a, b) = (describe(old).await, describe(now[0].clone()).await);
    assert_eq!(a.container_definitions(), b.container_definitions());
    assert_eq!((a.cpu(), a.memory()), (b.cpu(), b.memory()));
    assert_eq!(a.execution_role_arn(), b.execution_role_arn());
    assert_eq!(i.heal().await["Outcome"], "Converged");
    // The deregistered original still carries the record; the copy is what heal keeps using.
    delete_service_out_of_band(&i.c, &i.w.cluster).await;
    assert_eq!(actions(&i.heal().await), vec!["CreateService"]);
    assert_eq!(active_revisions(&i.c, family).await, now);
    assert_eq!(i.service().await.task_definition(), Some(now[0].as_str()));
}

#[tokio::test]
async fn a_service_moved_to_a_foreign_revision_is_pointed_back() {
    let i = Installed::new(vec![]).await;
    let foreign =
        i.c.ecs
            .register_task_definition()
            .family(unique("someone-elses"))
            .container_definitions(
                aws_sdk_ecs::types::ContainerDefinition::builder()
                    .name("x")
                    .image("busybox")
                    .memory(128)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    let foreign = foreign
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_string();
    update_out_of_band(&i.c, &i.w.cluster)
        .task_definition(&foreign)
        .send()
        .await
        .unwrap();

    let r = i.heal().await;
    assert_eq!(actions(&r), vec!["UpdateService"], "{r}");
    assert_eq!(
        i.service().await.task_definition(),
        i.data["TaskDefinitionArn"].as_str()
    );
}

#[tokio::test]
async fn a_network_configuration_changed_out_of_band_is_put_back() {
    let i = Installed::new(vec![]).await;
    let before = network(&i.service().await);
    let open =
        i.c.ec2
            .create_security_group()
            .group_name(unique("wide-open"))
            .description("x")
            .vpc_id(&i.w.vpc)
            .send()
            .await
            .unwrap();
    update_out_of_band(&i.c, &i.w.cluster)
        .network_configuration(
            aws_sdk_ecs::types::NetworkConfiguration::builder()
                .awsvpc_configuration(
                    aws_sdk_ecs::types::AwsVpcConfiguration::builder()
                        .subnets(&i.w.public)
                        .security_groups(open.group_id().unwrap())
                        .assign_public_ip(aws_sdk_ecs::types::AssignPublicIp::Enabled)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_ne!(network(&i.service().await), before);

    let r = i.heal().await;
    assert_eq!(actions(&r), vec!["UpdateService"], "{r}");
    let found = r["Found"][0].as_str().unwrap();
    for what in [
        "subnets",
        "security groups",
        "public IP ENABLED -> DISABLED",
    ] {
        assert!(found.contains(what), "{found}");
    }
    assert_eq!(network(&i.service().await), before);
}

#[tokio::test]
async fn a_deleted_security_group_is_created_again_and_used() {
    let i = Installed::new(vec![]).await;
    let old = i.data["SecurityGroupIds"].as_str().unwrap().to_string();
    // AWS refuses while tasks' ENIs use it: the delegate's tasks are down.
    ecs_sim::crash_tasks(&i.w.cluster, "harness-delegate");
    i.c.ec2
        .delete_security_group()
        .group_id(&old)
        .send()
        .await
        .unwrap();

    let r = i.heal().await;
    assert_eq!(
        actions(&r),
        vec!["CreateSecurityGroup", "UpdateService"],
        "{r}"
    );
    let groups = groups_named(&i.c, &i.w.vpc, "harness-delegate-delegate").await;
    assert_eq!(groups.len(), 1);
    assert_ne!(groups[0], old);
    assert_eq!(network(&i.service().await).1, groups);
    assert_eq!(i.heal().await["Outcome"], "Converged");
}

/// moto never fails a deployment: the proxy reports the PRIMARY deployment FAILED.
fn deployment_failed(v: &mut Value) {
    for s in v["services"].as_array_mut().into_iter().flatten() {
        s["deployments"][0]["rolloutState"] = json!("FAILED");
    }
}

/// moto never runs tasks: the proxy reports none running and three failed in a row.
fn crash_loop(v: &mut Value) {
    for s in v["services"].as_array_mut().into_iter().flatten() {
        s["runningCount"] = json!(0);
        s["deployments"][0]["failedTasks"] = json!(3);
        s["deployments"][0]["rolloutState"] = json!("IN_PROGRESS");
    }
}

async fn redeploys_once_per_back_off(patch: fn(&mut Value), found: &str) {
    let rule = Rule {
        operation: "DescribeServices",
        fault: Fault::Patch(patch),
        times: u32::MAX,
    };
    let i = Installed::new(vec![rule]).await;
    let r = i.heal().await;
    assert_eq!(actions(&r), vec!["ForceNewDeployment"], "{r}");
    assert!(r["Found"][0].as_str().unwrap().contains(found), "{r}");
    assert_eq!(i.proxy.calls("UpdateService"), 1);
    assert_eq!(
        i.proxy.last_body("UpdateService")["forceNewDeployment"],
        true
    );
    // Nothing else of the service changed.
    assert!(i
        .proxy
        .last_body("UpdateService")
        .get("desiredCount")
        .is_none());

    // Still failing a minute later: inside the back-off window, noted and left alone.
    let r = i.heal().await;
    assert_eq!(r["Outcome"], "Converged", "{r}");
    assert!(
        r["Found"][0]
            .as_str()
            .unwrap()
            .contains("heal made it deploy"),
        "{r}"
    );
    assert!(i.proxy.writes().is_empty(), "{:?}", i.proxy.writes());

    // A redeployed-at tag (anyone may write one) neither extends nor ends the window.
    let arn = i.service().await.service_arn().unwrap().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i.c.ecs
        .tag_resource()
        .resource_arn(arn)
        .tags(
            aws_sdk_ecs::types::Tag::builder()
                .key("harness-delegate:redeployed-at")
                .value((now - 7200).to_string())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(i.heal().await["Outcome"], "Converged");
    // Once the window has passed (the time in the record moved back), it is redeployed again.
    i.c.store
        .client
        .update_item()
        .table_name(RECORD_TABLE)
        .key(
            "delegate",
            aws_sdk_dynamodb::types::AttributeValue::S(i.key()),
        )
        .update_expression("SET redeployed_at = :past")
        .expression_attribute_values(
            ":past",
            aws_sdk_dynamodb::types::AttributeValue::N((now - 3601).to_string()),
        )
        .send()
        .await
        .unwrap();
    let r = i.heal().await;
    assert_eq!(actions(&r), vec!["ForceNewDeployment"], "{r}");
}

#[tokio::test]
async fn a_failed_deployment_is_redeployed_once_per_back_off_window() {
    redeploys_once_per_back_off(deployment_failed, "the latest deployment FAILED").await;
}

#[tokio::test]
async fn a_crash_loop_is_redeployed_once_per_back_off_window() {
    redeploys_once_per_back_off(crash_loop, "0 of 1 running, 3 failed in a row").await;
}

#[tokio::test]
async fn a_deleted_cluster_is_reported_and_nothing_is_created() {
    let i = Installed::new(vec![]).await;
    delete_service_out_of_band(&i.c, &i.w.cluster).await;
    i.c.ecs
        .delete_cluster()
        .cluster(&i.w.cluster)
        .send()
        .await
        .unwrap();

    let result = i.run(i.event("heal-schedule")).await;
    assert_eq!(result["Status"], "FAILED", "{result}");
    let r = report_of(&result, &i.key());
    assert_eq!(r["Outcome"], "CannotHeal");
    let found = r["Found"][0].as_str().unwrap();
    assert!(
        found.contains(&format!("cluster {} is INACTIVE", i.w.cluster))
            && found.contains("no cluster is created"),
        "{found}"
    );
    assert!(i.proxy.writes().is_empty(), "{:?}", i.proxy.writes());
}

#[tokio::test]
async fn a_heal_during_or_after_an_update_never_reverts_it() {
    // The Update's UpdateService is held for five seconds; a heal runs meanwhile.
    let hold = Rule {
        operation: "UpdateService",
        fault: Fault::Delay(Duration::from_secs(5)),
        times: 1,
    };
    let i = Installed::new(vec![hold]).await;
    let mut new_props = i.props.clone();
    new_props["DesiredCount"] = json!("2");
    new_props["Image"] = json!("harness/delegate:26.11.1");
    let update = cfn_event(
        "Update",
        &i.rx.url("update"),
        &new_props,
        Some(&i.arn),
        Some(&i.props),
    );
    let stack = {
        let via = i.via.clone();
        tokio::spawn(async move {
            handler(via)
                .handle(update, deadline_in(120))
                .await
                .expect("answered")
        })
    };
    // Mid-Update: the new record is on the service, the service itself not yet changed.
    let recorded = |s: &aws_sdk_ecs::types::Service| {
        s.tags().iter().any(|t| {
            t.key() == Some("harness-delegate:service")
                && t.value().is_some_and(|v| v.ends_with("desired=2"))
        })
    };
    let mut waited = 0;
    while !recorded(&i.service().await) {
        assert!(waited < 40, "the Update never recorded its configuration");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(
        i.service().await.desired_count(),
        1,
        "held before UpdateService"
    );
    let during = report_of(
        &handler(i.c.clone())
            .handle(i.event("heal-schedule"), deadline_in(120))
            .await
            .unwrap(),
        &i.key(),
    );
    // The Update holds the delegate's lease: the heal leaves it to the Update and writes
    // nothing, neither the old configuration nor half of the new one.
    assert_eq!(during["Outcome"], "Superseded", "{during}");
    assert!(
        during["Found"][0]
            .as_str()
            .unwrap()
            .contains("is changing the delegate"),
        "{during}"
    );
    assert!(actions(&during).is_empty(), "{during}");
    assert_eq!(i.service().await.desired_count(), 1, "{during}");
    stack.await.unwrap();
    let body = i.rx.bodies().pop().unwrap();
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    // And the heal after it keeps the Update.
    let after = i.heal().await;
    assert_eq!(after["Outcome"], "Converged", "{after}");
    let s = i.service().await;
    assert_eq!(s.desired_count(), 2, "{during}");
    let td = s.task_definition().unwrap().to_string();
    assert_eq!(body["Data"]["TaskDefinitionArn"], td.as_str());
    // After the Update: nothing to do, nothing written.
    let after = i.heal().await;
    assert_eq!(after["Outcome"], "Converged", "{after}");
    assert!(i.proxy.writes().is_empty(), "{:?}", i.proxy.writes());
    assert_eq!(i.service().await.desired_count(), 2);
}

#[tokio::test]
async fn after_a_delete_nothing_is_resurrected() {
    let i = Installed::new(vec![]).await;
    let family = i.props["TaskDefinitionFamily"].as_str().unwrap();
    let del = run_cfn(
        &i.c,
        &i.rx,
        cfn_event("Delete", &i.rx.url("delete"), &i.props, Some(&i.arn), None),
    )
    .await;
    assert_eq!(del["Status"], "SUCCESS", "{del}");

    let result = i.run(i.event("heal-schedule")).await;
    assert_eq!(result["Status"], "SUCCESS", "{result}");
    assert!(
        result["Delegates"].as_array().unwrap().is_empty(),
        "nothing left to heal: {result}"
    );
    // Named explicitly, by a direct Heal or an ECS event, it is not brought back either.
    for name in ["heal", "ecs-task-stopped"] {
        let r = report_of(&i.run(i.event(name)).await, &i.key());
        assert_eq!(r["Outcome"], "NotManaged", "{name}: {r}");
        assert!(
            i.proxy.writes().is_empty(),
            "{name}: {:?}",
            i.proxy.writes()
        );
    }
    assert_eq!(i.service().await.status(), Some("INACTIVE"));
    assert!(active_revisions(&i.c, family).await.is_empty());
}

#[tokio::test]
async fn two_delegates_sharing_a_family_heal_independently() {
    let family = unique("shared");
    let a = Installed::with(vec![], |p| p["TaskDefinitionFamily"] = json!(family)).await;
    // The same delegate in a second cluster of the same region, as the install guide suggests.
    let (b, created) = a.install_another("SecondDelegate").await;
    let b_key = format!("{}/harness-delegate", b.cluster);
    let b_td = created["Data"]["TaskDefinitionArn"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(a.data["TaskDefinitionArn"], b_td.as_str());

    // A drifts in count, B loses its service: one scheduled heal repairs each its own way.
    update_out_of_band(&a.c, &a.w.cluster)
        .desired_count(0)
        .send()
        .await
        .unwrap();
    delete_service_out_of_band(&a.c, &b.cluster).await;
    let result = a.run(a.event("heal-schedule")).await;
    let (ra, rb) = (report_of(&result, &a.key()), report_of(&result, &b_key));
    assert_eq!(actions(&ra), vec!["UpdateService"], "{result}");
    assert_eq!(actions(&rb), vec!["CreateService"], "{result}");
    let sb = service(&a.c, &b.cluster, "harness-delegate").await.unwrap();
    assert_eq!(
        sb.task_definition(),
        Some(b_td.as_str()),
        "B runs its own revision"
    );
    assert_eq!(a.service().await.desired_count(), 1);

    // Deleting A leaves B's revision registered, and B keeps healing.
    let del = run_cfn(
        &a.c,
        &a.rx,
        cfn_event("Delete", &a.rx.url("da"), &a.props, Some(&a.arn), None),
    )
    .await;
    assert_eq!(del["Status"], "SUCCESS");
    assert_eq!(active_revisions(&a.c, &family).await, vec![b_td.clone()]);
    update_out_of_band(&a.c, &b.cluster)
        .desired_count(4)
        .send()
        .await
        .unwrap();
    let result = a.run(a.event("heal-schedule")).await;
    let delegates = delegates_in(&result);
    assert_eq!(delegates, vec![b_key.as_str()], "A is gone for good");
    assert_eq!(actions(&report_of(&result, &b_key)), vec!["UpdateService"]);
    let sb = service(&a.c, &b.cluster, "harness-delegate").await.unwrap();
    assert_eq!(sb.desired_count(), 1);
}

#[tokio::test]
async fn ecs_events_heal_their_delegate_and_ignore_other_services() {
    let i = Installed::new(vec![]).await;
    update_out_of_band(&i.c, &i.w.cluster)
        .desired_count(0)
        .send()
        .await
        .unwrap();
    // A delegate task stopped: that delegate is healed, and only it.
    let result = i.run(i.event("ecs-task-stopped")).await;
    assert_eq!(result["Status"], "SUCCESS", "{result}");
    assert_eq!(result["Delegates"].as_array().unwrap().len(), 1);
    assert_eq!(
        actions(&report_of(&result, &i.key())),
        vec!["UpdateService"]
    );
    assert_eq!(i.service().await.desired_count(), 1);
    assert_eq!(
        i.proxy.calls("GetResources"),
        0,
        "no region scan for one delegate"
    );

    // A placement failure of the delegate: healed (here: nothing to do).
    let r = report_of(&i.run(i.event("ecs-service-action")).await, &i.key());
    assert_eq!(r["Outcome"], "Converged", "{r}");

    // The same event about a service that is not a delegate: a log line, not an error.
    let other = unique("web");
    i.c.ecs
        .create_service()
        .cluster(&i.w.cluster)
        .service_name(&other)
        .task_definition(i.data["TaskDefinitionArn"].as_str().unwrap())
        .desired_count(0)
        .send()
        .await
        .unwrap();
    let mut e = i.event("ecs-service-action");
    e["resources"][0] = json!(e["resources"][0]
        .as_str()
        .unwrap()
        .replace("/harness-delegate", &format!("/{other}")));
    let result = i.run(e).await;
    assert_eq!(result["Status"], "SUCCESS", "{result}");
    let r = report_of(&result, &format!("{}/{other}", i.w.cluster));
    assert_eq!(r["Outcome"], "NotManaged");
    assert_eq!(r["Found"][0], "not managed by this function: ignored");
    assert!(i.proxy.writes().is_empty(), "{:?}", i.proxy.writes());

    // Informational events call for nothing at all.
    let mut steady = i.event("ecs-service-action");
    steady["detail"]["eventType"] = json!("INFO");
    steady["detail"]["eventName"] = json!("SERVICE_STEADY_STATE");
    let result = i.run(steady).await;
    assert_eq!(result["Status"], "IGNORED", "{result}");
    assert!(i.proxy.writes().is_empty());
}

#[tokio::test]
async fn an_ec2_bridge_delegate_is_healed_too() {
    let region = fresh_region();
    let c = clients_at(&aws(), region).await;
    let w = seed(&c, true).await;
    let rx = Receiver::start(0).await;
    let props = w.ec2_props();
    let body = create_ok(&c, &rx, "c", &props).await;
    delete_service_out_of_band(&c, &w.cluster).await;
    let proxy = Proxy::start(vec![]).await;
    let h = handler(proxy.clients_in(region).await);
    let event = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    let result = h.handle(event, deadline_in(120)).await.unwrap();
    let r = report_of(&result, &format!("{}/harness-delegate", w.cluster));
    assert_eq!(actions(&r), vec!["CreateService"], "{r}");
    let sent = proxy.last_body("CreateService");
    assert_eq!(sent["launchType"], "EC2");
    assert!(sent.get("networkConfiguration").is_none(), "bridge: {sent}");
    assert_eq!(
        sent["placementStrategy"][0]["field"],
        "attribute:ecs.availability-zone"
    );
    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert_eq!(s.status(), Some("ACTIVE"));
    assert_eq!(
        s.task_definition(),
        body["Data"]["TaskDefinitionArn"].as_str()
    );
    // A bridge delegate uses no group, and the function never made one for it: no group read.
    assert_eq!(proxy.calls("DescribeSecurityGroups"), 0);
}

#[tokio::test]
async fn many_delegates_are_described_ten_at_a_time() {
    let region = fresh_region();
    let c = clients_at(&aws(), region).await;
    let w = seed(&c, false).await;
    let h = handler(c.clone());
    for n in 0..12 {
        let mut p = w.fargate_props();
        p["ServiceName"] = json!(format!("delegate-{n:02}"));
        let r = h
            .handle(
                json!({"Action": "Reconcile", "ResourceProperties": p}),
                deadline_in(120),
            )
            .await
            .unwrap();
        assert_eq!(r["Status"], "SUCCESS", "{r}");
    }
    let proxy = Proxy::start(vec![]).await;
    let h = handler(proxy.clients_in(region).await);
    let event = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    let result = h.handle(event, deadline_in(120)).await.unwrap();
    let delegates = result["Delegates"].as_array().unwrap();
    assert_eq!(delegates.len(), 12, "{result}");
    assert!(
        delegates.iter().all(|d| d["Outcome"] == "Converged"),
        "{result}"
    );
    assert_eq!(proxy.calls("DescribeServices"), 2, "12 services, 10 a call");
    assert_eq!(
        proxy.calls("DescribeTaskDefinition"),
        0,
        "steady delegates: their revisions need no read"
    );
    // Each runs in the group the function made for it, which AWS cannot delete while it is in
    // use: the groups are not read.
    assert_eq!(
        (proxy.total_calls(), proxy.operations()),
        (3, vec!["Scan".to_string(), "DescribeServices".to_string()]),
        "the record table and the two pages of services"
    );
    assert_eq!(proxy.calls("DescribeSecurityGroups"), 0);
    assert!(proxy.writes().is_empty(), "{:?}", proxy.writes());
}

/// A stack Update commits while a heal is between reading the record and writing: the heal's
/// lease, taken on the version it read, is refused, so it stands down and the Update stays.
#[tokio::test]
async fn a_heal_stands_down_when_the_record_changes_meanwhile() {
    let gate = Gate::new();
    let rule = Rule::hold("DescribeServices", &gate);
    let i = Installed::new(vec![rule]).await;
    let heal = {
        let (via, event) = (i.via.clone(), i.event("heal"));
        tokio::spawn(async move { handler(via).handle(event, deadline_in(120)).await.unwrap() })
    };
    // The heal has read the record; the Update (straight to AWS) scales the delegate to 0.
    i.proxy.wait_for_calls("DescribeServices", 1).await;
    let mut props = i.props.clone();
    props["DesiredCount"] = json!("0");
    let change = cfn_event(
        "Update",
        &i.rx.url("u"),
        &props,
        Some(&i.arn),
        Some(&i.props),
    );
    assert_eq!(run_cfn(&i.c, &i.rx, change).await["Status"], "SUCCESS");
    gate.open();
    let r = report_of(&heal.await.unwrap(), &i.key());
    assert_eq!(r["Outcome"], "Superseded", "{r}");
    assert!(
        r["Found"][0]
            .as_str()
            .unwrap()
            .contains("the record changed while healing"),
        "{r}"
    );
    assert_eq!(i.service().await.desired_count(), 0, "the Update's count");
    // A genuine drift is still repaired toward the Update's record.
    update_out_of_band(&i.c, &i.w.cluster)
        .desired_count(3)
        .send()
        .await
        .unwrap();
    let r = i.heal().await;
    assert_eq!(r["Outcome"], "Repaired", "{r}");
    assert_eq!(i.service().await.desired_count(), 0);
}

#[tokio::test]
async fn a_cluster_aws_no_longer_knows_is_reported_and_nothing_is_created() {
    // moto keeps a deleted cluster as INACTIVE; AWS eventually answers ClusterNotFoundException.
    let rules = ["DescribeServices", "DescribeClusters"].map(|operation| Rule {
        operation,
        fault: Fault::Reject("ClusterNotFoundException", "Cluster not found."),
        times: u32::MAX,
    });
    let i = Installed::new(rules.to_vec()).await;
    let result = i.run(i.event("heal-schedule")).await;
    assert_eq!(result["Status"], "FAILED", "{result}");
    let r = report_of(&result, &i.key());
    assert_eq!(r["Outcome"], "CannotHeal", "{r}");
    assert!(
        r["Found"][0]
            .as_str()
            .unwrap()
            .contains(&format!("cluster {} no longer exists", i.w.cluster)),
        "{r}"
    );
    assert!(i.proxy.writes().is_empty(), "{:?}", i.proxy.writes());
}

#[tokio::test]
async fn a_function_heals_only_its_own_stacks_delegates() {
    // Two stacks in one region, each with its own function (HEAL_OWNER, and an IAM role scoped
    // to its own cluster): A's function must leave B's delegate to B's, without even a read.
    let a = Installed::new(vec![]).await;
    let (b, _) = a.install_another("OtherStacksDelegate").await;
    let b_key = format!("{}/harness-delegate", b.cluster);
    delete_service_out_of_band(&a.c, &b.cluster).await;

    let mut only_a = handler(a.via.clone());
    // cfn_event's stack is "test", and Installed's resource is "Delegate".
    only_a.heal.owner = Some(harness_ecs_delegate_bootstrap::model::OwnerLabel::from_tag(
        "test/Delegate",
    ));
    a.proxy.reset_counts();
    let result = only_a
        .handle(a.event("heal-schedule"), deadline_in(120))
        .await
        .unwrap();
    assert_eq!(delegates_in(&result), vec![a.key().as_str()], "{result}");
    assert!(a.proxy.writes().is_empty(), "{:?}", a.proxy.writes());
    let asked = format!("{:?}", a.proxy.bodies("DescribeServices"));
    assert!(!asked.contains(&b.cluster), "B's cluster was read: {asked}");

    // Named directly, B's delegate is reported as another stack's, and nothing is written.
    let target = json!({"Action": "Heal", "Targets": [{"ClusterName": b.cluster, "ServiceName": "harness-delegate"}]});
    let result = only_a.handle(target, deadline_in(120)).await.unwrap();
    let r = report_of(&result, &b_key);
    assert_eq!(r["Outcome"], "NotManaged", "{result}");
    assert!(
        r["Found"][0]
            .as_str()
            .unwrap()
            .contains("belongs to test/OtherStacksDelegate"),
        "{r}"
    );
    assert!(a.proxy.writes().is_empty(), "{:?}", a.proxy.writes());
    let b_service = service(&a.c, &b.cluster, "harness-delegate").await;
    assert_ne!(
        b_service.as_ref().and_then(|s| s.status()),
        Some("ACTIVE"),
        "B's deleted service stays deleted"
    );

    // Without the setting (one function for the whole region), B is repaired.
    let result = handler(a.via.clone())
        .handle(a.event("heal-schedule"), deadline_in(120))
        .await
        .unwrap();
    assert_eq!(
        actions(&report_of(&result, &b_key)),
        vec!["CreateService"],
        "{result}"
    );
}

/// ECS events and Heal targets name an account and a region; those of another account or
/// region are ignored with no AWS call, while the same from here repairs the same drift.
#[tokio::test]
async fn events_and_targets_from_another_account_or_region_are_ignored() {
    use harness_ecs_delegate_bootstrap::model::Home;
    let i = Installed::new(vec![]).await;
    // arn:aws:ecs:<region>:<account>:service/<cluster>/<service>
    let parts: Vec<&str> = i.arn.split(':').collect();
    let (region, account) = (parts[3].to_string(), parts[4].to_string());
    let h = handler(i.via.clone());
    h.home
        .set(Home {
            account: account.clone(),
            region: region.clone(),
        })
        .unwrap();
    update_out_of_band(&i.c, &i.w.cluster)
        .desired_count(0)
        .send()
        .await
        .unwrap();
    let here = serde_json::from_str::<Value>(
        &i.event("ecs-service-action")
            .to_string()
            .replace("us-east-1", &region)
            .replace("123456789012", &account),
    )
    .unwrap();
    let mut other_account = here.clone();
    other_account["account"] = json!("999999999999");
    let mut other_region = here.clone();
    other_region["resources"][0] = json!(i.arn.replace(&region, "eu-west-1"));
    let cluster_elsewhere = format!("arn:aws:ecs:{region}:999999999999:cluster/{}", i.w.cluster);
    let target_elsewhere =
        json!({"Action": "Heal", "Targets": [{"ClusterName": cluster_elsewhere}]});
    for (what, event) in [
        ("another account's event", other_account),
        ("an event naming another region's service", other_region),
    ] {
        i.proxy.reset_counts();
        let r = h.handle(event, deadline_in(60)).await.unwrap();
        assert_eq!(r["Status"], "IGNORED", "{what}: {r}");
        assert!(
            r["Reason"]
                .as_str()
                .unwrap()
                .contains("not this function's"),
            "{r}"
        );
        assert_eq!(i.proxy.total_calls(), 0, "{what} reached AWS");
    }
    i.proxy.reset_counts();
    let r = h.handle(target_elsewhere, deadline_in(60)).await.unwrap();
    let d = report_of(&r, &i.key());
    assert_eq!(d["Outcome"], "NotManaged", "{r}");
    assert!(
        d["Found"][0]
            .as_str()
            .unwrap()
            .contains("account 999999999999"),
        "{d}"
    );
    assert_eq!(
        i.proxy.total_calls(),
        0,
        "a target of another account reached AWS"
    );
    assert_eq!(
        i.service().await.desired_count(),
        0,
        "nothing foreign changed it"
    );

    // The same event from here repairs the drift.
    let r = h.handle(here, deadline_in(60)).await.unwrap();
    assert_eq!(report_of(&r, &i.key())["Outcome"], "Repaired", "{r}");
    assert_eq!(i.service().await.desired_count(), 1);
    record_figures(
        "tamper-elsewhere",
        &json!([{"case": "an ECS event from another account and region, or a Heal target with another account's cluster ARN", "outcome": "ignored with a WARN, no AWS call; the same event from here repairs"}]),
    );
}

/// After an Update moves the delegate to given security groups, the scheduled heal deletes the
/// group the function made for it, once the service no longer uses it; a group of the same
/// delegate still in use is kept.
#[tokio::test]
async fn a_group_the_delegate_no_longer_uses_is_deleted_by_a_later_heal() {
    let i = Installed::new(vec![]).await;
    let (_, made, _) = network(&i.service().await);
    let given =
        i.c.ec2
            .create_security_group()
            .group_name(unique("given"))
            .description("x")
            .vpc_id(&i.w.vpc)
            .send()
            .await
            .unwrap();
    let given = given.group_id().unwrap().to_string();
    let mut props = i.props.clone();
    props["SecurityGroupIds"] = json!([given]);
    let update = cfn_event(
        "Update",
        &i.rx.url("sg"),
        &props,
        Some(&i.arn),
        Some(&i.props),
    );
    assert_eq!(run_cfn(&i.c, &i.rx, update).await["Status"], "SUCCESS");
    assert_eq!(network(&i.service().await).1, vec![given.clone()]);
    let r = i.heal().await;
    assert_eq!(actions(&r), vec!["DeleteUnusedSecurityGroup"], "{r}");
    assert!(
        groups_named(&i.c, &i.w.vpc, "harness-delegate-delegate")
            .await
            .is_empty(),
        "{made:?} deleted"
    );
    // The deleted group is forgotten: the next scheduled heal of the steady delegate reads its
    // record and its service, and no groups.
    assert_eq!(i.heal().await["Outcome"], "Converged");
    assert_eq!(
        i.proxy.operations(),
        ["Scan", "DescribeServices"],
        "a steady delegate whose old group is gone"
    );
    // The given group is the user's: never touched.
    assert_eq!(network(&i.service().await).1, vec![given]);
}
