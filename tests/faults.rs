//! What moto cannot show: AWS throttling, 5xx, slow answers and AWS's own rejections, injected by
//! a proxy in front of moto; and the handler's guarantees on a panic and near the deadline.

mod support;

use std::time::Duration;

use harness_ecs_delegate_bootstrap::classify::{classify, Trigger};
use harness_ecs_delegate_bootstrap::handler::Outcome;
use harness_ecs_delegate_bootstrap::respond::Status;
use harness_ecs_delegate_bootstrap::Clients;
use serde_json::{json, Value};
use support::*;

async fn create_through(proxy: &Proxy, props: &Value, deadline_secs: u64) -> Value {
    let rx = Receiver::start(0).await;
    let h = handler(proxy.clients().await);
    let _ = h
        .handle(
            cfn_event("Create", &rx.url("c"), props, None, None),
            deadline_in(deadline_secs),
        )
        .await;
    let bodies = rx.bodies();
    assert_eq!(bodies.len(), 1, "exactly one answer");
    bodies[0].clone()
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let direct = clients().await;
    let w = seed(&direct, false).await;
    let proxy = Proxy::start(vec![
        Rule {
            operation: "CreateService",
            fault: Fault::Throttle,
            times: 2,
        },
        Rule {
            operation: "RegisterTaskDefinition",
            fault: Fault::ServerError,
            times: 1,
        },
        Rule {
            operation: "CreateSecurityGroup",
            fault: Fault::Throttle,
            times: 1,
        },
        Rule {
            operation: "DescribeClusters",
            fault: Fault::ServerError,
            times: 1,
        },
    ])
    .await;
    let body = create_through(&proxy, &w.fargate_props(), 120).await;
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    assert_eq!(
        proxy.calls("CreateService"),
        3,
        "two throttled attempts, then the one that worked"
    );
    assert_eq!(proxy.calls("RegisterTaskDefinition"), 2);
    assert_eq!(proxy.calls("CreateSecurityGroup"), 2);
    assert_eq!(
        service(&direct, &w.cluster, "harness-delegate")
            .await
            .and_then(|s| s.status().map(String::from))
            .as_deref(),
        Some("ACTIVE")
    );
    assert_eq!(
        groups_named(&direct, &w.vpc, "harness-delegate-delegate")
            .await
            .len(),
        1,
        "a retried create made one group, not two"
    );
}

#[tokio::test]
async fn an_aws_rejection_fails_the_create_and_removes_what_it_made() {
    let direct = clients().await;
    let w = seed(&direct, false).await;
    let proxy = Proxy::start(vec![Rule {
        operation: "CreateService",
        fault: Fault::Reject(
            "InvalidParameterException",
            "Creation of service was not idempotent.",
        ),
        times: u32::MAX,
    }])
    .await;
    let props = w.fargate_props();
    let body = create_through(&proxy, &props, 120).await;
    assert_eq!(body["Status"], "FAILED");
    let reason = body["Reason"].as_str().unwrap();
    assert!(reason.contains("creating service harness-delegate failed: ecs:CreateService: InvalidParameterException: Creation of service was not idempotent."), "{reason}");
    assert!(body["PhysicalResourceId"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":service/{}/harness-delegate", w.cluster)));
    assert_eq!(
        proxy.calls("CreateService"),
        1,
        "a rejection is not retried"
    );
    // The group and the revision made before the rejection are gone again.
    assert_eq!(proxy.calls("CreateSecurityGroup"), 1);
    assert_eq!(proxy.calls("RegisterTaskDefinition"), 1);
    assert_eq!(
        groups_named(&direct, &w.vpc, "harness-delegate-delegate")
            .await
            .len(),
        0
    );
    assert_eq!(
        active_revisions(&direct, props["TaskDefinitionFamily"].as_str().unwrap())
            .await
            .len(),
        0
    );
    assert!(service(&direct, &w.cluster, "harness-delegate")
        .await
        .is_none());
    // And the deregistered revision no longer carries the record, so no heal creates what
    // failed to be created.
    let registered = proxy.bodies("RegisterTaskDefinition");
    assert!(registered[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["key"] == "harness-delegate:applied-at"));
    let family = props["TaskDefinitionFamily"].as_str().unwrap();
    let td = direct
        .ecs
        .describe_task_definition()
        .task_definition(format!("{family}:1"))
        .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
        .send()
        .await
        .unwrap();
    assert!(
        td.tags()
            .iter()
            .all(|t| !t.key().unwrap().starts_with("harness-delegate:applied-at")),
        "{:?}",
        td.tags()
    );
    let heal = handler(direct.clone())
        .handle(
            json!({"Action": "Heal", "Targets": [{"ClusterName": w.cluster}]}),
            deadline_in(60),
        )
        .await
        .unwrap();
    assert_eq!(heal["Delegates"][0]["Outcome"], "NotManaged", "{heal}");
    assert!(service(&direct, &w.cluster, "harness-delegate")
        .await
        .is_none());
}

#[tokio::test]
async fn an_outage_on_reads_fails_before_any_write() {
    let direct = clients().await;
    let w = seed(&direct, false).await;
    let proxy = Proxy::start(vec![Rule {
        operation: "DescribeSubnets",
        fault: Fault::ServerError,
        times: u32::MAX,
    }])
    .await;
    let body = create_through(&proxy, &w.fargate_props(), 120).await;
    assert_eq!(body["Status"], "FAILED");
    assert!(
        body["Reason"]
            .as_str()
            .unwrap()
            .contains("reading subnets failed"),
        "{}",
        body["Reason"]
    );
    for write in [
        "CreateSecurityGroup",
        "RegisterTaskDefinition",
        "CreateService",
    ] {
        assert_eq!(proxy.calls(write), 0, "{write} was called");
    }
}

#[tokio::test]
async fn a_slow_aws_call_is_retried_after_the_attempt_timeout() {
    let direct = clients().await;
    let w = seed(&direct, false).await;
    let proxy = Proxy::start(vec![Rule {
        operation: "DescribeClusters",
        fault: Fault::Delay(Duration::from_secs(4)),
        times: 1,
    }])
    .await;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&proxy.endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(1))
                .build(),
        )
        .load()
        .await;
    let rx = Receiver::start(0).await;
    let h = handler(with_table(Clients::new(&config), "us-east-1").await);
    h.handle(
        cfn_event("Create", &rx.url("c"), &w.fargate_props(), None, None),
        deadline_in(120),
    )
    .await
    .unwrap();
    assert_eq!(rx.bodies()[0]["Status"], "SUCCESS", "{}", rx.bodies()[0]);
    assert_eq!(
        proxy.calls("DescribeClusters"),
        2,
        "the slow attempt timed out and was retried"
    );
}

#[tokio::test]
async fn failed_is_sent_before_the_deadline_when_aws_hangs() {
    let direct = clients().await;
    let w = seed(&direct, false).await;
    let proxy = Proxy::start(vec![Rule {
        operation: "DescribeClusters",
        fault: Fault::Delay(Duration::from_secs(60)),
        times: u32::MAX,
    }])
    .await;
    let started = std::time::Instant::now();
    let body = create_through(&proxy, &w.fargate_props(), 14).await;
    let took = started.elapsed();
    assert_eq!(body["Status"], "FAILED");
    assert!(
        body["Reason"].as_str().unwrap().starts_with("timed out"),
        "{}",
        body["Reason"]
    );
    assert!(
        took < Duration::from_secs(14),
        "answered after the deadline: {took:?}"
    );
    assert!(
        took >= Duration::from_secs(5),
        "answered too early: {took:?}"
    );
    assert!(service(&direct, &w.cluster, "harness-delegate")
        .await
        .is_none());
}

#[tokio::test]
async fn a_panic_is_answered_failed() {
    let rx = Receiver::start(0).await;
    let h = handler(clients_for("http://127.0.0.1:9").await);
    let event = cfn_event(
        "Update",
        &rx.url("p"),
        &json!({}),
        Some("arn:aws:ecs:us-east-1:1:service/c/s"),
        None,
    );
    let Trigger::CloudFormation(req) = classify(&event).unwrap() else {
        panic!()
    };
    let url = url::Url::parse(&req.response_url).unwrap();
    let out = h
        .answer(*req, url, deadline_in(30), async {
            if std::env::var("NEVER_SET_3f1").is_err() {
                panic!("a bug");
            }
            Some(Outcome {
                status: Status::Success,
                reason: String::new(),
                physical_resource_id: String::new(),
                data: Default::default(),
            })
        })
        .await
        .unwrap();
    assert_eq!(out["Status"], "FAILED");
    let body = rx.bodies().pop().unwrap();
    assert_eq!(body["Status"], "FAILED");
    assert!(
        body["Reason"].as_str().unwrap().contains("panicked"),
        "{body}"
    );
    assert_eq!(
        body["PhysicalResourceId"], "arn:aws:ecs:us-east-1:1:service/c/s",
        "an Update keeps its physical id"
    );
    assert_eq!(rx.count(), 1);
}

/// A bug that panics in the middle of a Create, after the group and the revision were made:
/// CloudFormation still hears FAILED, and the Delete it sends next removes what was made.
#[tokio::test]
async fn a_panic_in_the_middle_of_a_create_is_answered_failed_and_cleaned_up_by_the_delete() {
    let direct = clients().await;
    let w = seed(&direct, false).await;
    let mut props = w.fargate_props();
    let service_name = unique("panics");
    props["ServiceName"] = json!(service_name);
    harness_ecs_delegate_bootstrap::test_hooks::panic_before(&service_name, "CreateService");
    let rx = Receiver::start(0).await;
    let body = run_cfn(
        &direct,
        &rx,
        cfn_event("Create", &rx.url("c"), &props, None, None),
    )
    .await;
    assert_eq!(body["Status"], "FAILED", "{body}");
    assert!(
        body["Reason"].as_str().unwrap().contains("panicked"),
        "{body}"
    );
    let family = props["TaskDefinitionFamily"].as_str().unwrap();
    let group = format!("{service_name}-delegate");
    // The panic stopped the run before it could undo anything.
    assert_eq!(active_revisions(&direct, family).await.len(), 1);
    assert_eq!(groups_named(&direct, &w.vpc, &group).await.len(), 1);
    assert!(service(&direct, &w.cluster, &service_name).await.is_none());

    let physical = body["PhysicalResourceId"].as_str().unwrap();
    let deleted = run_cfn(
        &direct,
        &rx,
        cfn_event("Delete", &rx.url("d"), &props, Some(physical), None),
    )
    .await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    assert_eq!(active_revisions(&direct, family).await.len(), 0);
    assert_eq!(groups_named(&direct, &w.vpc, &group).await.len(), 0);
    record_figures(
        "panic",
        &json!({"panics injected mid-Create": 1, "answered FAILED": 1, "left after the Delete": 0}),
    );
}

/// moto ignores most of CreateService's input (deployment configuration, placement, platform
/// version), so the request itself is checked on its way to AWS.
#[tokio::test]
async fn create_service_asks_aws_for_the_right_service() {
    let direct = clients().await;
    let w = seed(&direct, true).await;
    let proxy = Proxy::start(vec![]).await;

    let body = create_through(&proxy, &w.fargate_props(), 120).await;
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    let req = proxy.last_body("CreateService");
    assert_eq!(
        req["deploymentConfiguration"]["deploymentCircuitBreaker"],
        json!({"enable": true, "rollback": true})
    );
    assert_eq!(req["launchType"], "FARGATE");
    assert_eq!(req["platformVersion"], "LATEST");
    assert_eq!(req["schedulingStrategy"], "REPLICA");
    assert_eq!(req["enableECSManagedTags"], true);
    assert!(
        req.get("placementStrategy").is_none(),
        "Fargate takes no placement strategy"
    );
    assert_eq!(
        req["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"],
        "DISABLED"
    );
    let tags = req["tags"].as_array().unwrap();
    assert!(tags.contains(&json!({"key": "team", "value": "platform"})));
    assert!(tags.contains(
        &json!({"key": "harness-delegate:managed-by", "value": "harness-ecs-delegate-bootstrap"})
    ));
    let td = proxy.last_body("RegisterTaskDefinition");
    assert_eq!(td["requiresCompatibilities"], json!(["FARGATE"]));
    assert!(td["containerDefinitions"][0].get("hostname").is_none());

    // EC2/bridge: spread over zones then instances, as Harness' service spec does; no network.
    let mut ec2 = w.ec2_props();
    ec2["ServiceName"] = json!("harness-delegate-ec2");
    let body = create_through(&proxy, &ec2, 120).await;
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    let req = proxy.last_body("CreateService");
    assert_eq!(req["launchType"], "EC2");
    assert_eq!(
        req["placementStrategy"],
        json!([{"type": "spread", "field": "attribute:ecs.availability-zone"}, {"type": "spread", "field": "instanceId"}])
    );
    assert!(req.get("networkConfiguration").is_none());
    assert!(req.get("platformVersion").is_none());
}

/// moto has no DRAINING state: a deleted service is INACTIVE at once. AWS keeps it DRAINING for a
/// while, and create-service on that name fails until it is gone, so the function waits.
#[tokio::test]
async fn a_draining_service_is_waited_for_then_created_again() {
    let direct = clients().await;
    let w = seed(&direct, true).await;
    let props = w.ec2_props();
    let h = handler(direct.clone());
    let r = h
        .handle(
            json!({"Action": "Reconcile", "ResourceProperties": props}),
            deadline_in(60),
        )
        .await
        .unwrap();
    let arn = r["Data"]["ServiceArn"].as_str().unwrap().to_string();
    let td = r["Data"]["TaskDefinitionArn"].as_str().unwrap().to_string();
    direct
        .ecs
        .delete_service()
        .cluster(&w.cluster)
        .service("harness-delegate")
        .force(true)
        .send()
        .await
        .unwrap();

    let draining = json!({"services": [{
        "serviceArn": arn, "serviceName": "harness-delegate", "status": "DRAINING",
        "desiredCount": 0, "runningCount": 1, "launchType": "EC2", "taskDefinition": td,
        "tags": [
            {"key": "harness-delegate:managed-by", "value": "harness-ecs-delegate-bootstrap"},
            {"key": "harness-delegate:resource", "value": format!("{}/harness-delegate", w.cluster)},
        ],
    }], "failures": []});
    // DRAINING for the plan and the first poll, then gone.
    let proxy = Proxy::start(vec![Rule {
        operation: "DescribeServices",
        fault: Fault::Respond(draining.clone()),
        times: 2,
    }])
    .await;
    let h = handler(proxy.clients().await);
    let r = h
        .handle(
            json!({"Action": "Reconcile", "ResourceProperties": props}),
            deadline_in(60),
        )
        .await
        .unwrap();
    assert_eq!(
        action_names(&r),
        vec!["WaitForServiceDrain", "CreateService"]
    );
    assert!(
        proxy.calls("DescribeServices") >= 3,
        "polled until the service was gone"
    );
    let s = direct
        .ecs
        .describe_services()
        .cluster(&w.cluster)
        .services("harness-delegate")
        .send()
        .await
        .unwrap();
    assert_eq!(s.services()[0].status(), Some("ACTIVE"));

    // Still DRAINING when the deadline nears: reported, with what to do, and nothing created.
    direct
        .ecs
        .delete_service()
        .cluster(&w.cluster)
        .service("harness-delegate")
        .force(true)
        .send()
        .await
        .unwrap();
    let proxy = Proxy::start(vec![Rule {
        operation: "DescribeServices",
        fault: Fault::Respond(draining),
        times: u32::MAX,
    }])
    .await;
    let h = handler(proxy.clients().await);
    let err = h
        .handle(
            json!({"Action": "Reconcile", "ResourceProperties": props}),
            // Room to start the wait: no step starts within 5 s of the work's deadline, which
            // is 8 s before the invocation's.
            deadline_in(20),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("still DRAINING: run the update again in a few minutes"),
        "{err}"
    );
    assert_eq!(proxy.calls("CreateService"), 0);
}

/// The worst case for "nothing half-created": AWS creates the service only after the function
/// has given up and answered FAILED. The physical id of that answer lets CloudFormation's
/// rollback Delete find and remove everything the Create left behind.
#[tokio::test]
async fn a_create_cut_off_by_the_deadline_is_cleaned_up_by_the_rollback_delete() {
    let direct = clients().await;
    let w = seed(&direct, false).await;
    let props = w.fargate_props();
    let family = props["TaskDefinitionFamily"].as_str().unwrap().to_string();
    let proxy = Proxy::start(vec![Rule {
        operation: "CreateService",
        fault: Fault::Delay(Duration::from_secs(16)),
        times: 1,
    }])
    .await;
    // 24 s: enough to start CreateService (no write starts in the last 5 s before the work's
    // deadline, which is 13 s before the invocation's), not to see it answered.
    let body = create_through(&proxy, &props, 24).await;
    assert_eq!(body["Status"], "FAILED");
    assert!(
        body["Reason"].as_str().unwrap().starts_with("timed out"),
        "{body}"
    );
    // Let the delayed CreateService reach moto.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        service(&direct, &w.cluster, "harness-delegate")
            .await
            .and_then(|s| s.status().map(String::from))
            .as_deref(),
        Some("ACTIVE"),
        "the emulator created the service after the FAILED answer"
    );
    assert_eq!(active_revisions(&direct, &family).await.len(), 1);

    let rx = Receiver::start(0).await;
    let physical = body["PhysicalResourceId"].as_str().unwrap();
    handler(direct.clone())
        .handle(
            cfn_event("Delete", &rx.url("d"), &props, Some(physical), None),
            deadline_in(60),
        )
        .await
        .unwrap();
    assert_eq!(rx.bodies()[0]["Status"], "SUCCESS");
    assert_eq!(
        service(&direct, &w.cluster, "harness-delegate")
            .await
            .unwrap()
            .status(),
        Some("INACTIVE")
    );
    assert!(active_revisions(&direct, &family).await.is_empty());
    assert!(groups_named(&direct, &w.vpc, "harness-delegate-delegate")
        .await
        .is_empty());
}

#[tokio::test]
async fn a_move_to_a_cluster_the_role_does_not_reach_back_is_refused_before_any_change() {
    let direct = clients().await;
    let a = seed(&direct, false).await;
    let b = seed(&direct, false).await;
    let props = a.fargate_props();
    let rx = Receiver::start(0).await;
    let created = create_ok(&direct, &rx, "c", &props).await;
    let arn = created["PhysicalResourceId"].as_str().unwrap().to_string();
    let mut moved = props.clone();
    moved["ClusterName"] = json!(b.cluster);
    moved["VpcId"] = json!(b.vpc);
    let update = |url: &str| cfn_event("Update", &rx.url(url), &moved, Some(&arn), Some(&props));

    // After the stack update, the function's role covers cluster B only (template.yaml): the
    // old service in A can no longer be read, so it could not be deleted after a move.
    let proxy = Proxy::start(vec![Rule {
        operation: "DescribeServices",
        fault: Fault::Reject(
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/fn-role/fn is not authorized to perform: ecs:DescribeServices on resource: the service because no identity-based policy allows the ecs:DescribeServices action",
        ),
        times: 1,
    }])
    .await;
    let refused = run_cfn(&proxy.clients().await, &rx, update("u1")).await;
    assert_eq!(refused["Status"], "FAILED", "{refused}");
    let reason = refused["Reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "ClusterName: changed from {} to {}",
            a.cluster, b.cluster
        )) && reason.contains("deploy a new stack")
            && reason.contains("not authorized"),
        "{reason}"
    );
    assert_eq!(
        refused["PhysicalResourceId"],
        arn.as_str(),
        "the old delegate stays the resource"
    );
    assert!(proxy.writes().is_empty(), "{:?}", proxy.writes());
    assert_eq!(
        proxy.calls("DescribeServices"),
        1,
        "refused at the first read"
    );
    assert!(
        proxy.bodies("DescribeServices")[0]["cluster"] == a.cluster.as_str(),
        "the read that was refused is of the old cluster"
    );
    assert!(service(&direct, &b.cluster, "harness-delegate")
        .await
        .is_none());

    // A role that reaches both clusters moves it: a replacement, with a new physical id.
    let moved_ok = run_cfn(&direct, &rx, update("u2")).await;
    assert_eq!(moved_ok["Status"], "SUCCESS", "{moved_ok}");
    assert_ne!(moved_ok["PhysicalResourceId"], arn.as_str());
}

#[test]
fn a_seeded_share_picks_the_same_calls_every_run() {
    let share = |seed| Fault::Fraction {
        per_mille: 300,
        seed,
        fault: Box::new(Fault::Throttle),
    };
    let picks = |seed| -> Vec<u32> {
        (1..=1000)
            .filter(|n| share(seed).for_call("DescribeServices", *n).is_some())
            .collect()
    };
    assert_eq!(picks(7), picks(7));
    assert_ne!(picks(7), picks(8));
    // Each operation gets its own picks, so the first calls of many operations (most are
    // called once) get the share too, not all or none of them.
    let first_calls = (0..200)
        .filter(|i| share(7).for_call(&format!("Operation{i}"), 1).is_some())
        .count();
    assert!((30..=90).contains(&first_calls), "{first_calls} of 200");
    let k = picks(7).len();
    assert!((250..=350).contains(&k), "{k} of 1000 for 300 per mille");
}

#[tokio::test]
async fn reset_connections_and_a_seeded_share_of_throttling_still_converge() {
    let direct = clients().await;
    let w = seed(&direct, false).await;
    let proxy = Proxy::start(vec![
        Rule {
            operation: "CreateService",
            fault: Fault::Reset,
            times: 1,
        },
        Rule {
            operation: "RegisterTaskDefinition",
            fault: Fault::Reset,
            times: 1,
        },
        // A fifth of every other call throttled, the same calls each run.
        Rule {
            operation: "*",
            fault: Fault::Fraction {
                per_mille: 200,
                seed: 7,
                fault: Box::new(Fault::Throttle),
            },
            times: u32::MAX,
        },
    ])
    .await;
    let body = create_through(&proxy, &w.fargate_props(), 120).await;
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    // The reset calls never reached moto and were sent again: one service, one revision.
    assert_eq!(proxy.injected("CreateService"), 1);
    assert_eq!(proxy.injected("RegisterTaskDefinition"), 1);
    let s = service(&direct, &w.cluster, "harness-delegate")
        .await
        .unwrap();
    assert_eq!(s.status(), Some("ACTIVE"));
    assert_eq!(
        active_revisions(&direct, &format!("{}-family", w.name))
            .await
            .len(),
        1
    );
    assert!(
        proxy.injected_total() > 2,
        "the seeded share throttled nothing: choose another seed"
    );
}

#[tokio::test]
async fn a_response_put_that_never_succeeds_ends_the_invocation_without_the_url() {
    let c = clients().await;
    let rx = Receiver::start(u32::MAX).await; // 503 for ever
    let h = handler(c);
    // Invalid, so the answer (FAILED) is ready at once and the test is about the PUT alone.
    let props = json!({"ClusterName": "c", "AccountId": "a", "DelegateToken": "t", "Cpu": "lots"});
    let err = h
        .handle(
            cfn_event("Create", &rx.url("never"), &props, None, None),
            deadline_in(30),
        )
        .await
        .expect_err("an answer that never arrived is an invocation error, for Lambda to retry")
        .to_string();
    assert_eq!(rx.count(), 3, "every attempt of the retry policy was made");
    assert!(err.contains("503"), "{err}");
    assert!(
        !err.contains("d3adb33f") && !err.contains("cfn-responses"),
        "the error names the presigned URL: {err}"
    );
    record_figures(
        "response-put-never",
        &json!({"attempts, all refused": rx.count(), "ended with an invocation error without the URL": 1}),
    );
}
