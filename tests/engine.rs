//! The engine end to end against the moto emulator: CloudFormation Create → Create again →
//! Update → Delete, checked with SDK describe calls and on the response body that arrived.

mod support;

use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn fargate_delegate_create_again_update_delete() {
    let c = clients().await;
    let w = seed(&c, false).await;
    let rx = Receiver::start(0).await;
    let props = w.fargate_props();
    let family = props["TaskDefinitionFamily"].as_str().unwrap().to_string();

    // Create.
    let body = create_ok(&c, &rx, "create", &props).await;
    let arn = body["PhysicalResourceId"].as_str().unwrap().to_string();
    assert!(
        arn.ends_with(&format!("service/{}/harness-delegate", w.cluster)),
        "{arn}"
    );
    assert_eq!(body["LogicalResourceId"], "Delegate");
    assert_eq!(
        body["StackId"],
        "arn:aws:cloudformation:us-east-1:123456789012:stack/test/guid"
    );
    let data = &body["Data"];
    assert_eq!(data["ServiceArn"], arn.as_str());
    assert_eq!(data["ServiceName"], "harness-delegate");
    assert_eq!(data["VpcId"], w.vpc.as_str());
    assert_eq!(data["AssignPublicIp"], "DISABLED");
    let mut private = w.private.clone();
    private.sort();
    assert_eq!(data["SubnetIds"], private.join(","));
    assert!(data["ClusterArn"]
        .as_str()
        .unwrap()
        .ends_with(&format!("cluster/{}", w.cluster)));

    // The task definition is exactly right for Fargate.
    let revs = active_revisions(&c, &family).await;
    assert_eq!(revs.len(), 1);
    assert_eq!(data["TaskDefinitionArn"], revs[0].as_str());
    let td = c
        .ecs
        .describe_task_definition()
        .task_definition(&revs[0])
        .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
        .send()
        .await
        .unwrap();
    let tags = td
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect::<Vec<_>>();
    let td = td.task_definition().unwrap();
    assert_eq!(td.network_mode().unwrap().as_str(), "awsvpc");
    assert_eq!(td.requires_compatibilities()[0].as_str(), "FARGATE");
    assert_eq!(td.execution_role_arn(), Some(w.exec_role.as_str()));
    assert_eq!(td.task_role_arn(), Some(w.task_role.as_str()));
    assert_eq!((td.cpu(), td.memory()), (Some("1024"), Some("6144")));
    let ctr = &td.container_definitions()[0];
    assert_eq!(ctr.name(), Some("ecs-delegate"));
    assert_eq!(ctr.hostname(), None, "awsvpc must not set a hostname");
    assert_eq!(ctr.secrets()[0].name(), "DELEGATE_TOKEN");
    assert!(ctr
        .environment()
        .iter()
        .all(|e| e.name() != Some("DELEGATE_TOKEN")));
    assert!(tags.contains(&("team", "platform")), "{tags:?}");
    assert!(tags.contains(&(
        "harness-delegate:resource",
        &*format!("{}/harness-delegate", w.cluster)
    )));

    // The service: Fargate, private subnets, our egress-only group, no public IP.
    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert_eq!(s.status(), Some("ACTIVE"));
    assert_eq!(s.launch_type().unwrap().as_str(), "FARGATE");
    assert_eq!(s.desired_count(), 1);
    assert_eq!(s.task_definition(), Some(revs[0].as_str()));
    let net = s
        .network_configuration()
        .unwrap()
        .awsvpc_configuration()
        .unwrap();
    let mut subnets = net.subnets().to_vec();
    subnets.sort();
    assert_eq!(subnets, private);
    assert_eq!(net.assign_public_ip().unwrap().as_str(), "DISABLED");
    let sg = groups_named(&c, &w.vpc, "harness-delegate-delegate").await;
    assert_eq!(sg.len(), 1);
    assert_eq!(net.security_groups(), sg.as_slice());
    assert_eq!(data["SecurityGroupIds"], sg[0].as_str());
    let g = c
        .ec2
        .describe_security_groups()
        .group_ids(&sg[0])
        .send()
        .await
        .unwrap();
    let g = &g.security_groups()[0];
    assert!(
        g.ip_permissions().is_empty(),
        "the delegate's group allows no inbound traffic"
    );
    assert!(
        !g.ip_permissions_egress().is_empty(),
        "…and allows outbound"
    );

    // The same Create again (Lambda retries async invocations): nothing new.
    let again = run_cfn(
        &c,
        &rx,
        cfn_event("Create", &rx.url("create2"), &props, None, None),
    )
    .await;
    assert_eq!(again["Status"], "SUCCESS");
    assert_eq!(again["PhysicalResourceId"], arn.as_str());
    assert_eq!(
        active_revisions(&c, &family).await,
        revs,
        "no new revision for an unchanged spec"
    );
    assert_eq!(
        groups_named(&c, &w.vpc, "harness-delegate-delegate").await,
        sg
    );

    // Update: DesiredCount and Memory, as strings.
    let mut new_props = props.clone();
    new_props["DesiredCount"] = json!("2");
    new_props["Memory"] = json!("8192");
    let upd = run_cfn(
        &c,
        &rx,
        cfn_event(
            "Update",
            &rx.url("update"),
            &new_props,
            Some(&arn),
            Some(&props),
        ),
    )
    .await;
    assert_eq!(upd["Status"], "SUCCESS", "{upd}");
    assert_eq!(
        upd["PhysicalResourceId"],
        arn.as_str(),
        "same cluster and name: no replacement"
    );
    let revs2 = active_revisions(&c, &family).await;
    assert_eq!(revs2.len(), 2);
    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert_eq!(s.desired_count(), 2);
    assert_eq!(
        s.task_definition(),
        upd["Data"]["TaskDefinitionArn"].as_str()
    );
    assert_ne!(s.task_definition(), Some(revs[0].as_str()));
    let td = c
        .ecs
        .describe_task_definition()
        .task_definition(s.task_definition().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(td.task_definition().unwrap().memory(), Some("8192"));

    // Delete: no service, no ACTIVE revision of ours, no group of ours.
    let del = run_cfn(
        &c,
        &rx,
        cfn_event("Delete", &rx.url("delete"), &new_props, Some(&arn), None),
    )
    .await;
    assert_eq!(del["Status"], "SUCCESS", "{del}");
    assert_eq!(del["PhysicalResourceId"], arn.as_str());
    let s = service(&c, &w.cluster, "harness-delegate").await;
    assert!(s.is_none_or(|s| s.status() == Some("INACTIVE")));
    assert!(active_revisions(&c, &family).await.is_empty());
    assert!(groups_named(&c, &w.vpc, "harness-delegate-delegate")
        .await
        .is_empty());

    // Delete again (already gone): succeeds, touches nothing.
    let del2 = run_cfn(
        &c,
        &rx,
        cfn_event("Delete", &rx.url("delete2"), &new_props, Some(&arn), None),
    )
    .await;
    assert_eq!(del2["Status"], "SUCCESS");
}

#[tokio::test]
async fn ec2_bridge_delegate_with_a_plain_token() {
    let c = clients().await;
    let w = seed(&c, true).await;
    let rx = Receiver::start(0).await;
    let mut props = w.ec2_props();
    props["LogGroupName"] = json!("/harness/delegates");
    let body = create_ok(&c, &rx, "c", &props).await;
    assert_eq!(body["Data"]["LogGroupName"], "/harness/delegates");
    // The VPC was found through the container instance; bridge needs no subnets or groups.
    assert_eq!(body["Data"]["VpcId"], w.vpc.as_str());
    assert_eq!(body["Data"]["SubnetIds"], "");
    let raw = serde_json::to_string(&body).unwrap();
    assert!(
        !raw.contains("plain-token-value-42"),
        "the token never appears in a response"
    );

    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert_eq!(s.launch_type().unwrap().as_str(), "EC2");
    assert!(s
        .network_configuration()
        .and_then(|n| n.awsvpc_configuration())
        .is_none());
    let td = c
        .ecs
        .describe_task_definition()
        .task_definition(s.task_definition().unwrap())
        .send()
        .await
        .unwrap();
    let td = td.task_definition().unwrap();
    assert_ne!(td.network_mode().map(|m| m.as_str()), Some("awsvpc"));
    let ctr = &td.container_definitions()[0];
    assert_eq!(ctr.hostname(), Some("Harness-ECS-Delegate"));
    // An EC2/bridge delegate logs to its group too, in the function's region.
    let logs = ctr.log_configuration().expect("a log configuration");
    let option = |k: &str| logs.options().unwrap().get(k).cloned();
    assert_eq!(
        option("awslogs-group").as_deref(),
        Some("/harness/delegates")
    );
    assert_eq!(option("awslogs-region").as_deref(), Some("us-east-1"));
    assert_eq!(ctr.port_mappings()[0].container_port(), Some(8080));
    let env: Vec<_> = ctr
        .environment()
        .iter()
        .map(|e| e.name().unwrap())
        .collect();
    assert!(
        env.contains(&"ACCOUNT_SECRET") && env.contains(&"DELEGATE_CHECK_LOCATION"),
        "{env:?}"
    );
    assert!(groups_named(&c, &w.vpc, "harness-delegate-delegate")
        .await
        .is_empty());

    let arn = body["PhysicalResourceId"].as_str().unwrap();
    let del = run_cfn(
        &c,
        &rx,
        cfn_event("Delete", &rx.url("d"), &props, Some(arn), None),
    )
    .await;
    assert_eq!(del["Status"], "SUCCESS");
    let family = props["TaskDefinitionFamily"].as_str().unwrap();
    assert!(active_revisions(&c, family).await.is_empty());
}

#[tokio::test]
async fn preflight_failure_reports_everything_and_creates_nothing() {
    let c = clients().await;
    let w = seed(&c, false).await;
    let other = seed(&c, false).await;
    let rx = Receiver::start(0).await;
    let mut props = w.fargate_props();
    props["SubnetIds"] = json!([other.private[0]]);
    props["ExecutionRoleArn"] = json!(w.ec2_only_role);
    props["TaskRoleArn"] = json!("arn:aws:iam::123456789012:role/does-not-exist");
    let body = run_cfn(
        &c,
        &rx,
        cfn_event("Create", &rx.url("c"), &props, None, None),
    )
    .await;
    assert_eq!(body["Status"], "FAILED");
    let reason = body["Reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "subnet {} is in {}, but VpcId is {}: pass subnets of {}",
            other.private[0], other.vpc, w.vpc, w.vpc
        )),
        "{reason}"
    );
    assert!(
        reason.contains("does not trust ecs-tasks.amazonaws.com"),
        "{reason}"
    );
    assert!(
        reason.contains("role/does-not-exist does not exist"),
        "{reason}"
    );
    // The id is the ARN the service would have had: the rollback Delete can clean up by it.
    let would_be = format!(
        "arn:aws:ecs:us-east-1:123456789012:service/{}/harness-delegate",
        w.cluster
    );
    assert_eq!(body["PhysicalResourceId"], would_be.as_str());
    let family = props["TaskDefinitionFamily"].as_str().unwrap();
    assert!(active_revisions(&c, family).await.is_empty());
    assert!(service(&c, &w.cluster, "harness-delegate").await.is_none());
    assert!(groups_named(&c, &w.vpc, "harness-delegate-delegate")
        .await
        .is_empty());

    // CloudFormation's rollback then deletes the never-created resource: success, nothing touched.
    let del = run_cfn(
        &c,
        &rx,
        cfn_event("Delete", &rx.url("d"), &props, Some(&would_be), None),
    )
    .await;
    assert_eq!(del["Status"], "SUCCESS");
    assert_eq!(del["PhysicalResourceId"], would_be.as_str());
}

#[tokio::test]
async fn rules_moto_does_not_enforce_are_caught_before_any_write() {
    let c = clients().await;
    let w = seed(&c, true).await;
    let rx = Receiver::start(0).await;
    let rows: Vec<(&str, Value, &str)> = vec![
        (
            "hostname with awsvpc",
            json!({"NetworkMode": "awsvpc", "Hostname": "h", "LaunchType": "EC2"}),
            "Hostname: hostname is not supported on container when networkMode=awsvpc",
        ),
        (
            "bad fargate pair",
            json!({"Cpu": "1024", "Memory": "1024"}),
            "FARGATE with Cpu 1024 takes Memory 2048..8192",
        ),
        (
            "fargate on bridge",
            json!({"NetworkMode": "bridge"}),
            "FARGATE only runs awsvpc tasks",
        ),
        (
            "fargate without execution role",
            json!({"ExecutionRoleArn": null, "DelegateTokenSecretArn": null, "DelegateToken": "x"}),
            "FARGATE needs a task execution role",
        ),
        (
            "cluster missing",
            json!({"ClusterName": "no-such-cluster"}),
            "cluster no-such-cluster does not exist",
        ),
        (
            "unknown property",
            json!({"Subnets": "subnet-1"}),
            "did you mean SubnetIds?",
        ),
        (
            "ec2 without memory to spare",
            json!({"LaunchType": "EC2", "NetworkMode": "bridge", "Memory": "900000"}),
            "no container instance with 900000 MiB of memory free",
        ),
    ];
    for (what, change, expected) in rows {
        let mut props = w.fargate_props();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                props.as_object_mut().unwrap().remove(k);
            } else {
                props[k] = v.clone();
            }
        }
        if props["LaunchType"] == "EC2" {
            props.as_object_mut().unwrap().remove("VpcId");
        }
        let body = run_cfn(
            &c,
            &rx,
            cfn_event("Create", &rx.url(what), &props, None, None),
        )
        .await;
        assert_eq!(body["Status"], "FAILED", "{what}");
        assert!(
            body["Reason"].as_str().unwrap().contains(expected),
            "{what}: {}",
            body["Reason"]
        );
        let family = props["TaskDefinitionFamily"].as_str().unwrap();
        assert!(
            active_revisions(&c, family).await.is_empty(),
            "{what}: a revision was registered"
        );
        assert!(
            service(&c, &w.cluster, "harness-delegate").await.is_none(),
            "{what}: a service was created"
        );
    }
}

#[tokio::test]
async fn launch_type_change_replaces_the_service_and_name_change_gets_a_new_id() {
    let c = clients().await;
    let w = seed(&c, true).await;
    let rx = Receiver::start(0).await;
    let mut ec2 = w.fargate_props();
    ec2["LaunchType"] = json!("EC2");
    ec2["NetworkMode"] = json!("awsvpc");
    let body = run_cfn(&c, &rx, cfn_event("Create", &rx.url("c"), &ec2, None, None)).await;
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    let arn = body["PhysicalResourceId"].as_str().unwrap().to_string();

    let fargate = w.fargate_props();
    let h = handler(c.clone());
    let plan = h
        .handle(
            json!({"Action": "Plan", "ResourceProperties": fargate}),
            deadline_in(60),
        )
        .await
        .unwrap();
    let actions = serde_json::to_string(&plan["Actions"]).unwrap();
    assert!(
        actions.contains("RecreateService") && actions.contains("from EC2 to FARGATE"),
        "{actions}"
    );

    let upd = run_cfn(
        &c,
        &rx,
        cfn_event("Update", &rx.url("u"), &fargate, Some(&arn), Some(&ec2)),
    )
    .await;
    assert_eq!(upd["Status"], "SUCCESS", "{upd}");
    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert_eq!(
        (s.status(), s.launch_type().unwrap().as_str()),
        (Some("ACTIVE"), "FARGATE")
    );

    // A new ServiceName is a replacement: a new physical id, the old service left for the Delete.
    let mut renamed = fargate.clone();
    renamed["ServiceName"] = json!("harness-delegate-2");
    let upd2 = run_cfn(
        &c,
        &rx,
        cfn_event(
            "Update",
            &rx.url("u2"),
            &renamed,
            Some(&arn),
            Some(&fargate),
        ),
    )
    .await;
    assert_eq!(upd2["Status"], "SUCCESS", "{upd2}");
    let new_arn = upd2["PhysicalResourceId"].as_str().unwrap().to_string();
    assert!(new_arn.ends_with("/harness-delegate-2"));
    assert_eq!(
        service(&c, &w.cluster, "harness-delegate")
            .await
            .unwrap()
            .status(),
        Some("ACTIVE")
    );
    // CloudFormation then deletes the old one; the revision stays, the renamed service uses it.
    let del = run_cfn(
        &c,
        &rx,
        cfn_event("Delete", &rx.url("d"), &fargate, Some(&arn), None),
    )
    .await;
    assert_eq!(del["Status"], "SUCCESS");
    assert_eq!(
        service(&c, &w.cluster, "harness-delegate")
            .await
            .unwrap()
            .status(),
        Some("INACTIVE")
    );
    let s2 = service(&c, &w.cluster, "harness-delegate-2").await.unwrap();
    assert_eq!(s2.status(), Some("ACTIVE"));
    let family = fargate["TaskDefinitionFamily"].as_str().unwrap();
    assert!(active_revisions(&c, family)
        .await
        .contains(&s2.task_definition().unwrap().to_string()));
    assert_eq!(
        groups_named(&c, &w.vpc, "harness-delegate-delegate")
            .await
            .len(),
        0,
        "the old delegate's group is gone"
    );
    assert_eq!(
        groups_named(&c, &w.vpc, "harness-delegate-2-delegate")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn a_service_we_did_not_create_is_left_alone() {
    let c = clients().await;
    let w = seed(&c, true).await;
    let rx = Receiver::start(0).await;
    // Someone installed a delegate by hand, as the Harness guide says.
    c.ecs
        .register_task_definition()
        .family("by-hand")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("x")
                .image("harness/delegate")
                .memory(512)
                .build(),
        )
        .send()
        .await
        .unwrap();
    c.ecs
        .create_service()
        .cluster(&w.cluster)
        .service_name("harness-delegate")
        .task_definition("by-hand")
        .desired_count(1)
        .send()
        .await
        .unwrap();

    let body = run_cfn(
        &c,
        &rx,
        cfn_event("Create", &rx.url("c"), &w.ec2_props(), None, None),
    )
    .await;
    assert_eq!(body["Status"], "FAILED");
    assert!(
        body["Reason"]
            .as_str()
            .unwrap()
            .contains("was not created by this function"),
        "{}",
        body["Reason"]
    );
    // A Delete naming it (e.g. a stack that imported its ARN) does not delete it either.
    let arn = service(&c, &w.cluster, "harness-delegate")
        .await
        .unwrap()
        .service_arn()
        .unwrap()
        .to_string();
    let del = run_cfn(
        &c,
        &rx,
        cfn_event("Delete", &rx.url("d"), &w.ec2_props(), Some(&arn), None),
    )
    .await;
    assert_eq!(del["Status"], "SUCCESS");
    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert_eq!((s.status(), s.desired_count()), (Some("ACTIVE"), 1));
}

#[tokio::test]
async fn two_delegates_share_a_family_and_delete_keeps_the_other_ones_revision() {
    let c = clients().await;
    let a = seed(&c, true).await;
    let b = seed(&c, true).await;
    let rx = Receiver::start(0).await;
    let mut pa = a.ec2_props();
    let family = unique("shared");
    pa["TaskDefinitionFamily"] = json!(family);
    let mut pb = pa.clone();
    pb["ClusterName"] = json!(b.cluster);
    let ra = run_cfn(&c, &rx, cfn_event("Create", &rx.url("a"), &pa, None, None)).await;
    let rb = run_cfn(&c, &rx, cfn_event("Create", &rx.url("b"), &pb, None, None)).await;
    assert_eq!(
        (ra["Status"].as_str(), rb["Status"].as_str()),
        (Some("SUCCESS"), Some("SUCCESS"))
    );
    // Each delegate runs a revision of its own, which carries its record for self-healing.
    assert_ne!(
        ra["Data"]["TaskDefinitionArn"],
        rb["Data"]["TaskDefinitionArn"]
    );
    assert_eq!(active_revisions(&c, &family).await.len(), 2);

    let del = run_cfn(
        &c,
        &rx,
        cfn_event(
            "Delete",
            &rx.url("da"),
            &pa,
            ra["PhysicalResourceId"].as_str(),
            None,
        ),
    )
    .await;
    assert_eq!(del["Status"], "SUCCESS");
    assert_eq!(
        active_revisions(&c, &family).await,
        vec![rb["Data"]["TaskDefinitionArn"].as_str().unwrap()],
        "b's revision stays registered"
    );
    assert_eq!(
        service(&c, &b.cluster, "harness-delegate")
            .await
            .unwrap()
            .status(),
        Some("ACTIVE")
    );
}

#[tokio::test]
async fn direct_plan_changes_nothing_and_reconcile_converges() {
    let c = clients().await;
    let w = seed(&c, false).await;
    let props = w.fargate_props();
    let family = props["TaskDefinitionFamily"].as_str().unwrap().to_string();
    let h = handler(c.clone());
    let plan = h
        .handle(
            json!({"Action": "Plan", "ResourceProperties": props}),
            deadline_in(60),
        )
        .await
        .unwrap();
    assert_eq!(
        action_names(&plan),
        vec![
            "CreateSecurityGroup",
            "RegisterTaskDefinition",
            "CreateService"
        ]
    );
    // The plan says that the request would wait for the delegate, and for how long.
    assert_eq!(
        plan["Wait"],
        json!({"ForReady": true, "TimeoutSeconds": 1800})
    );
    assert!(
        plan["Summary"]
            .as_str()
            .unwrap()
            .ends_with("then wait up to 1800 s for the delegate to be ready (WaitForReady)"),
        "{plan}"
    );
    assert!(active_revisions(&c, &family).await.is_empty());
    assert!(service(&c, &w.cluster, "harness-delegate").await.is_none());
    assert!(groups_named(&c, &w.vpc, "harness-delegate-delegate")
        .await
        .is_empty());

    let r = h
        .handle(
            json!({"Action": "Reconcile", "ResourceProperties": props}),
            deadline_in(60),
        )
        .await
        .unwrap();
    assert_eq!(r["Status"], "SUCCESS");
    let plan = h
        .handle(
            json!({"Action": "Plan", "ResourceProperties": props}),
            deadline_in(60),
        )
        .await
        .unwrap();
    assert_eq!(plan["Actions"], json!([]), "converged: nothing left to do");

    // Out-of-band drift is repaired by the next Reconcile.
    update_out_of_band(&c, &w.cluster)
        .desired_count(0)
        .send()
        .await
        .unwrap();
    let r = h
        .handle(
            json!({"Action": "Reconcile", "ResourceProperties": props}),
            deadline_in(60),
        )
        .await
        .unwrap();
    assert!(serde_json::to_string(&r["Actions"])
        .unwrap()
        .contains("desired count 0 -> 1"));
    assert_eq!(
        service(&c, &w.cluster, "harness-delegate")
            .await
            .unwrap()
            .desired_count(),
        1
    );

    let d = h
        .handle(
            json!({"Action": "Delete", "ResourceProperties": props}),
            deadline_in(60),
        )
        .await
        .unwrap();
    assert_eq!(d["Status"], "SUCCESS");
    assert!(active_revisions(&c, &family).await.is_empty());
}

#[tokio::test]
async fn a_family_given_with_spaces_is_deleted_as_registered() {
    let c = clients().await;
    let w = seed(&c, true).await;
    let rx = Receiver::start(0).await;
    let family = unique("fam-g");
    let mut props = w.ec2_props();
    props["TaskDefinitionFamily"] = json!(format!("  {family}  "));
    let created = create_ok(&c, &rx, "c", &props).await;
    assert_eq!(active_revisions(&c, &family).await.len(), 1);
    let physical = created["PhysicalResourceId"].as_str();
    let del = run_cfn(
        &c,
        &rx,
        cfn_event("Delete", &rx.url("d"), &props, physical, None),
    )
    .await;
    assert_eq!(del["Status"], "SUCCESS", "{del}");
    assert_eq!(
        active_revisions(&c, &family).await,
        Vec::<String>::new(),
        "the Delete looked in the family as given, spaces included"
    );
}

/// An Update that moves the delegate to another family retires the old family's revisions once
/// the service runs the new one; another delegate's revision in the old family stays.
#[tokio::test]
async fn a_changed_family_retires_the_old_ones_revisions() {
    let c = clients().await;
    let w = seed(&c, true).await;
    let rx = Receiver::start(0).await;
    let (old, new) = (unique("fam-old"), unique("fam-new"));
    let mut props = w.ec2_props();
    props["TaskDefinitionFamily"] = json!(old);
    let created = create_ok(&c, &rx, "c", &props).await;
    let physical = created["PhysicalResourceId"].as_str();
    // Another delegate of the same cluster in the old family.
    let mut other = props.clone();
    other["ServiceName"] = json!("other-delegate");
    let mut e = cfn_event("Create", &rx.url("o"), &other, None, None);
    e["LogicalResourceId"] = json!("Other");
    assert_eq!(run_cfn(&c, &rx, e).await["Status"], "SUCCESS");
    assert_eq!(active_revisions(&c, &old).await.len(), 2);
    let mut moved = props.clone();
    moved["TaskDefinitionFamily"] = json!(new);
    let update = cfn_event("Update", &rx.url("u"), &moved, physical, Some(&props));
    let body = run_cfn(&c, &rx, update).await;
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    let now = active_revisions(&c, &new).await;
    assert_eq!(now.len(), 1);
    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert_eq!(s.task_definition(), Some(now[0].as_str()));
    let left = active_revisions(&c, &old).await;
    let theirs = service(&c, &w.cluster, "other-delegate").await.unwrap();
    assert_eq!(
        left,
        [theirs.task_definition().unwrap()],
        "only the other delegate's stays"
    );
}

/// A stack's owner label put on a direct delegate's service by someone else (its record names
/// no stack) still stops a direct Delete, as a label the function wrote would: refused, and the
/// refusal changes nothing, the record included, so self-healing goes on restoring the delegate.
/// Forced, the same Delete removes it.
#[tokio::test]
async fn a_refused_direct_delete_leaves_even_the_record_as_it_was() {
    use harness_ecs_delegate_bootstrap::model::DelegateKey;
    let c = clients().await;
    let w = seed(&c, true).await;
    let props = w.ec2_props();
    let h = handler(c.clone());
    let reconcile = json!({"Action": "Reconcile", "ResourceProperties": props});
    h.handle(reconcile, deadline_in(60)).await.unwrap();
    let key = DelegateKey::new(&w.cluster, "harness-delegate");
    assert!(c.store.get(&key).await.unwrap().is_live());
    let arn = service(&c, &w.cluster, "harness-delegate")
        .await
        .unwrap()
        .service_arn()
        .unwrap()
        .to_string();
    let label = aws_sdk_ecs::types::Tag::builder()
        .key("harness-delegate:owner")
        .value("someone/Delegate")
        .build();
    c.ecs
        .tag_resource()
        .resource_arn(&arn)
        .tags(label)
        .send()
        .await
        .unwrap();

    let delete = json!({"Action": "Delete", "ResourceProperties": props});
    let refused = h.handle(delete, deadline_in(60)).await.unwrap_err();
    assert_eq!(refused.kind(), "Refused", "{refused}");
    let said = refused.to_string();
    assert!(
        said.starts_with("refused, nothing was changed: ServiceName: ")
            && said.contains("someone/Delegate"),
        "{said}"
    );
    let item = c.store.get(&key).await.unwrap();
    assert!(
        item.is_live(),
        "the refused Delete marked the record deleted"
    );
    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert_eq!(s.status(), Some("ACTIVE"));

    let forced = json!({"Action": "Delete", "ResourceProperties": props, "Force": true});
    let deleted = h.handle(forced, deadline_in(60)).await.unwrap();
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert!(!c.store.get(&key).await.unwrap().is_live());
}

#[tokio::test]
async fn unanswerable_and_odd_requests() {
    let c = clients().await;
    let rx = Receiver::start(0).await;
    let h = handler(c.clone());
    // Unknown RequestType and properties that are not even an object: still answered, FAILED.
    let mut e = cfn_event("Restart", &rx.url("x"), &json!("nonsense"), None, None);
    let _ = h.handle(e.clone(), deadline_in(30)).await.unwrap();
    let body = rx.bodies().pop().unwrap();
    assert_eq!(body["Status"], "FAILED");
    assert!(body["Reason"].as_str().unwrap().contains("Restart"));
    e["RequestType"] = json!("Create");
    let _ = h.handle(e, deadline_in(30)).await.unwrap();
    let body = rx.bodies().pop().unwrap();
    assert_eq!(
        body["PhysicalResourceId"], "not-created:Delegate",
        "no service can be named from these properties"
    );
    assert!(
        body["Reason"]
            .as_str()
            .unwrap()
            .contains("ResourceProperties"),
        "{body}"
    );

    // A Delete of a PhysicalResourceId longer than any answer can hold still gets one answer.
    let huge = "i".repeat(5000);
    let e = cfn_event("Delete", &rx.url("huge"), &json!({}), Some(&huge), None);
    let body = run_cfn(&c, &rx, e).await;
    assert_eq!(
        body["Status"], "SUCCESS",
        "nothing of ours to delete: {body}"
    );
    assert!(body["PhysicalResourceId"]
        .as_str()
        .unwrap()
        .starts_with("iii"));

    // A ResponseURL that is not S3 (and not allowed loopback) is refused, and nothing is sent.
    let before = rx.count();
    let mut strict = handler(c.clone());
    strict.allow_loopback = false;
    let err = strict
        .handle(
            cfn_event("Create", &rx.url("y"), &json!({}), None, None),
            deadline_in(30),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("RESPONSE_URL_ALLOW_LOOPBACK"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("d3adb33f"),
        "the URL's signature leaked into an error"
    );
    assert_eq!(rx.count(), before);

    // An unrecognised payload names the four accepted shapes.
    let err = h
        .handle(json!({"foo": 1}), deadline_in(30))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("aws.events") && err.contains("RequestType"),
        "{err}"
    );
}

#[tokio::test]
async fn response_put_is_retried_and_reason_is_truncated() {
    let c = clients().await;
    let rx = Receiver::start(2).await; // two 503s, then OK
    let h = handler(c.clone());
    let mut props = json!({"ClusterName": "c", "AccountId": "a", "DelegateToken": "t"});
    for i in 0..300 {
        props[format!("UnknownProperty{i}")] = json!("x");
    }
    let out = h
        .handle(
            cfn_event("Create", &rx.url("big"), &props, None, None),
            deadline_in(30),
        )
        .await
        .unwrap();
    assert_eq!(out["Status"], "FAILED");
    let reqs = rx.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 3, "two failures then a success");
    let last = reqs.last().unwrap();
    assert!(last.body.len() <= 4096, "{} bytes", last.body.len());
    let body = last.json();
    assert!(body["Reason"].as_str().unwrap().ends_with("(truncated)"));
    let reason = body["Reason"].as_str().unwrap();
    assert!(
        reason.starts_with("300 problems with the delegate properties"),
        "{reason}"
    );
    assert!(
        reason.contains("UnknownProperty0: is not a known property"),
        "{reason}"
    );
}

/// The sample events in events/ run as the README says, with only the names of this test's world
/// (cluster, roles, family) and the ResponseURL swapped in.
#[tokio::test]
async fn sample_events_run_as_documented() {
    let c = clients().await;
    let w = seed(&c, true).await;
    let rx = Receiver::start(0).await;
    let family = unique("events");
    let load = |name: &str| -> Value {
        let path = format!("{}/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let mut e: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let props = &mut e["ResourceProperties"];
        assert_eq!(
            props["ClusterName"], "harness-demo",
            "{name}: the events target the demo cluster"
        );
        props["ClusterName"] = json!(w.cluster);
        props["ExecutionRoleArn"] = json!(w.exec_role);
        props["TaskRoleArn"] = json!(w.task_role);
        props["TaskDefinitionFamily"] = json!(family);
        if e.get("ResponseURL").is_some() {
            e["ResponseURL"] = json!(rx.url(name));
        }
        e
    };
    let h = handler(c.clone());

    let plan = h.handle(load("plan"), deadline_in(60)).await.unwrap();
    assert_eq!(plan["Actions"].as_array().unwrap().len(), 3, "{plan}");

    h.handle(load("create"), deadline_in(60)).await.unwrap();
    let created = rx.bodies().pop().unwrap();
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let arn = created["PhysicalResourceId"].as_str().unwrap().to_string();
    assert_eq!(
        created["Data"]["VpcId"],
        w.vpc.as_str(),
        "found through the cluster's instance"
    );

    let mut update = load("update");
    update["PhysicalResourceId"] = json!(arn);
    h.handle(update, deadline_in(60)).await.unwrap();
    let updated = rx.bodies().pop().unwrap();
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    let s = c
        .ecs
        .describe_services()
        .cluster(&w.cluster)
        .services("harness-delegate")
        .send()
        .await
        .unwrap();
    assert_eq!(s.services()[0].desired_count(), 2);

    let mut delete = load("delete");
    delete["PhysicalResourceId"] = json!(arn);
    h.handle(delete, deadline_in(60)).await.unwrap();
    let deleted = rx.bodies().pop().unwrap();
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert!(active_revisions(&c, &family).await.is_empty());
    assert_eq!(rx.count(), 3);
}

/// Two stacks that declare the same cluster and service name: the second is refused, and its
/// rollback Delete (naming the same service ARN) leaves the first stack's delegate running.
#[tokio::test]
async fn a_second_stack_cannot_take_over_or_delete_the_first_ones_delegate() {
    let c = clients().await;
    let w = seed(&c, true).await;
    let rx = Receiver::start(0).await;
    let props = w.ec2_props();
    let first = create_ok(&c, &rx, "a", &props).await;
    let arn = first["PhysicalResourceId"].as_str().unwrap().to_string();
    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert!(s
        .tags()
        .iter()
        .any(|t| t.key() == Some("harness-delegate:owner") && t.value() == Some("test/Delegate")));

    let other_stack = |mut e: Value| {
        e["StackId"] = json!("arn:aws:cloudformation:us-east-1:123456789012:stack/other/guid2");
        e
    };
    let mut changed = props.clone();
    changed["DesiredCount"] = json!("3");
    let second = run_cfn(
        &c,
        &rx,
        other_stack(cfn_event("Create", &rx.url("b"), &changed, None, None)),
    )
    .await;
    assert_eq!(second["Status"], "FAILED");
    let reason = second["Reason"].as_str().unwrap();
    assert!(
        reason.contains("belongs to the stack arn:aws:cloudformation:us-east-1:123456789012:stack/test/guid (resource Delegate)"),
        "{reason}"
    );
    let del = run_cfn(
        &c,
        &rx,
        other_stack(cfn_event(
            "Delete",
            &rx.url("bd"),
            &changed,
            Some(&arn),
            None,
        )),
    )
    .await;
    assert_eq!(del["Status"], "SUCCESS");
    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert_eq!(
        (s.status(), s.desired_count()),
        (Some("ACTIVE"), 1),
        "the first stack's delegate is untouched"
    );
    let family = props["TaskDefinitionFamily"].as_str().unwrap();
    assert_eq!(active_revisions(&c, family).await.len(), 1);
}

/// A delegate installed by a direct invocation has no owning stack. A stack whose Create fails
/// must not delete it in its rollback; a stack whose Create succeeds adopts it.
#[tokio::test]
async fn a_failed_stack_never_deletes_a_delegate_it_did_not_make() {
    let c = clients().await;
    let w = seed(&c, true).await;
    let rx = Receiver::start(0).await;
    let props = w.ec2_props();
    let h = handler(c.clone());
    let direct = h
        .handle(
            json!({"Action": "Reconcile", "ResourceProperties": props}),
            deadline_in(60),
        )
        .await
        .unwrap();
    assert_eq!(direct["Status"], "SUCCESS");

    let mut bad = props.clone();
    bad["TaskRoleArn"] = json!("arn:aws:iam::123456789012:role/missing");
    let failed = run_cfn(&c, &rx, cfn_event("Create", &rx.url("f"), &bad, None, None)).await;
    assert_eq!(failed["Status"], "FAILED");
    let physical = failed["PhysicalResourceId"].as_str().unwrap().to_string();
    let del = run_cfn(
        &c,
        &rx,
        cfn_event("Delete", &rx.url("fd"), &bad, Some(&physical), None),
    )
    .await;
    assert_eq!(del["Status"], "SUCCESS");
    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert_eq!(
        s.status(),
        Some("ACTIVE"),
        "the rollback deleted a delegate it did not make"
    );
    let family = props["TaskDefinitionFamily"].as_str().unwrap();
    assert_eq!(active_revisions(&c, family).await.len(), 1);

    // A stack declaring something else for it is refused, and nothing changes.
    let mut different = props.clone();
    different["DesiredCount"] = json!("3");
    let refused = run_cfn(
        &c,
        &rx,
        cfn_event("Create", &rx.url("r"), &different, None, None),
    )
    .await;
    assert_eq!(refused["Status"], "FAILED");
    assert!(
        refused["Reason"]
            .as_str()
            .unwrap()
            .contains("installed outside CloudFormation and differs"),
        "{refused}"
    );
    assert_eq!(
        service(&c, &w.cluster, "harness-delegate")
            .await
            .unwrap()
            .desired_count(),
        1
    );

    let ok = create_ok(&c, &rx, "ok", &props).await;
    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert!(
        s.tags().iter().any(
            |t| t.key() == Some("harness-delegate:owner") && t.value() == Some("test/Delegate")
        ),
        "adopted: {:?}",
        s.tags()
    );
    // Now the stack owns it, and its Delete removes it.
    let del = run_cfn(
        &c,
        &rx,
        cfn_event(
            "Delete",
            &rx.url("d"),
            &props,
            ok["PhysicalResourceId"].as_str(),
            None,
        ),
    )
    .await;
    assert_eq!(del["Status"], "SUCCESS");
    assert_eq!(
        service(&c, &w.cluster, "harness-delegate")
            .await
            .unwrap()
            .status(),
        Some("INACTIVE")
    );
    assert!(
        active_revisions(&c, family).await.is_empty(),
        "its untagged revision went with it"
    );
}

/// A stack Update that only changes Tags reaches the service and the group, and then converges.
#[tokio::test]
async fn a_tag_change_reaches_the_service_and_the_group() {
    let c = clients().await;
    let w = seed(&c, false).await;
    let rx = Receiver::start(0).await;
    let props = w.fargate_props();
    let created = run_cfn(
        &c,
        &rx,
        cfn_event("Create", &rx.url("c"), &props, None, None),
    )
    .await;
    let arn = created["PhysicalResourceId"].as_str().unwrap().to_string();
    let mut tagged = props.clone();
    tagged["Tags"] = json!({"team": "platform", "cost-center": "42"});
    let upd = run_cfn(
        &c,
        &rx,
        cfn_event("Update", &rx.url("u"), &tagged, Some(&arn), Some(&props)),
    )
    .await;
    assert_eq!(upd["Status"], "SUCCESS", "{upd}");

    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert!(
        s.tags()
            .iter()
            .any(|t| t.key() == Some("cost-center") && t.value() == Some("42")),
        "{:?}",
        s.tags()
    );
    let g = groups_named(&c, &w.vpc, "harness-delegate-delegate").await;
    let d = c
        .ec2
        .describe_security_groups()
        .group_ids(&g[0])
        .send()
        .await
        .unwrap();
    let tags = d.security_groups()[0].tags();
    assert!(
        tags.iter()
            .any(|t| t.key() == Some("cost-center") && t.value() == Some("42")),
        "{tags:?}"
    );
    let family = props["TaskDefinitionFamily"].as_str().unwrap();
    assert_eq!(
        active_revisions(&c, family).await.len(),
        1,
        "tags alone register no revision"
    );

    let plan = handler(c.clone())
        .handle(
            json!({"Action": "Plan", "ResourceProperties": tagged}),
            deadline_in(60),
        )
        .await
        .unwrap();
    assert_eq!(plan["Actions"], json!([]), "converged after the tag change");
}

/// A direct Reconcile that repairs a stack's delegate (deleted out of band) keeps the stack as
/// its owner, so the stack's Delete still removes it.
#[tokio::test]
async fn a_direct_repair_of_a_stacks_delegate_needs_force_and_keeps_the_stack_as_owner() {
    let c = clients().await;
    let w = seed(&c, true).await;
    let rx = Receiver::start(0).await;
    let props = w.ec2_props();
    let created = run_cfn(
        &c,
        &rx,
        cfn_event("Create", &rx.url("c"), &props, None, None),
    )
    .await;
    let arn = created["PhysicalResourceId"].as_str().unwrap().to_string();
    c.ecs
        .delete_service()
        .cluster(&w.cluster)
        .service("harness-delegate")
        .force(true)
        .send()
        .await
        .unwrap();

    // A direct request leaves a stack's delegate to its stack, unless forced.
    for action in ["Reconcile", "Delete"] {
        let refused = handler(c.clone())
            .handle(
                json!({"Action": action, "ResourceProperties": props}),
                deadline_in(60),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), "Refused", "{action}: {refused}");
        let refused = refused.to_string();
        assert!(
            refused.contains("belongs to the stack resource test/Delegate")
                && refused.contains("\"Force\": true"),
            "{refused}"
        );
    }
    assert_eq!(
        service(&c, &w.cluster, "harness-delegate")
            .await
            .unwrap()
            .status(),
        Some("INACTIVE"),
        "a refused Reconcile created nothing"
    );
    let r = handler(c.clone())
        .handle(
            json!({"Action": "Reconcile", "ResourceProperties": props, "Force": true}),
            deadline_in(60),
        )
        .await
        .unwrap();
    assert_eq!(action_names(&r), vec!["CreateService"]);
    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert!(
        s.tags().iter().any(
            |t| t.key() == Some("harness-delegate:owner") && t.value() == Some("test/Delegate")
        ),
        "{:?}",
        s.tags()
    );

    let del = run_cfn(
        &c,
        &rx,
        cfn_event("Delete", &rx.url("d"), &props, Some(&arn), None),
    )
    .await;
    assert_eq!(del["Status"], "SUCCESS");
    assert_eq!(
        service(&c, &w.cluster, "harness-delegate")
            .await
            .unwrap()
            .status(),
        Some("INACTIVE")
    );
    record_figures(
        "tamper-direct",
        &json!([{"case": "a direct Reconcile or Delete of a stack's delegate (its service deleted out of band)", "outcome": "refused, naming the owner and \"Force\": true; a forced one acts, logged at WARN"}]),
    );
}
