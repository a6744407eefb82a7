//! The record store against tampering and races (the record-store issue's cases): what the
//! function reads back from AWS that others can write (tags, revisions, services) is never
//! acted on unless the record table agrees, and the table's item changes atomically whatever
//! runs at once. Each case checks that nothing foreign changed and that the end state is what
//! the last successful stack operation asked for, next to a genuine drift that heal still
//! repairs in the same test. Requests and heals run through the built binary (`invoke`, one
//! process each), except where a test needs a short invocation deadline. The figures feed
//! docs/reliability.md's tampering and race tables.

mod support;

use std::time::Duration;

use harness_ecs_delegate_bootstrap::Clients;
use serde_json::{json, Value};
use support::*;

/// Run one event through the built binary (`invoke`) against moto's `region`, through
/// `endpoint` (moto, or a proxy in front of it): what it printed (the invocation result), and
/// whether it exited successfully.
async fn invoke_in(endpoint: &str, region: &str, event: &Value) -> (Value, bool) {
    let file = std::env::temp_dir().join(format!("{}.json", unique("event")));
    std::fs::write(&file, event.to_string()).unwrap();
    let out = invoke_command(endpoint, region, &file)
        .output()
        .await
        .unwrap();
    let printed = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| json!({"stderr": String::from_utf8_lossy(&out.stderr).to_string()}));
    (printed, out.status.success())
}

/// The binary, `invoke FILE`, with the emulator's environment.
fn invoke_command(endpoint: &str, region: &str, file: &std::path::Path) -> tokio::process::Command {
    let mut cmd =
        tokio::process::Command::new(env!("CARGO_BIN_EXE_harness-ecs-delegate-bootstrap"));
    cmd.arg("invoke")
        .arg(file)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", region)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("RESPONSE_URL_ALLOW_LOOPBACK", "true")
        .env("RECORD_TABLE", RECORD_TABLE)
        .kill_on_drop(true);
    cmd
}

/// A CloudFormation request through the binary: the body CloudFormation received.
async fn cfn_via_binary(c: &Clients, rx: &Receiver, event: Value) -> Value {
    let before = rx.count();
    invoke_in(&moto(), c.region.as_deref().unwrap(), &event).await;
    assert_eq!(rx.count(), before + 1, "one answer to CloudFormation");
    rx.bodies().pop().unwrap()
}

/// The scheduled heal through the binary, in `c`'s region.
async fn scheduled_heal(c: &Clients) -> Value {
    let event = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    invoke_in(&moto(), c.region.as_deref().unwrap(), &event)
        .await
        .0
}

/// A Fargate delegate installed by the stack `test/guid` in a region of its own (so that a
/// scheduled heal sees this test's delegates only).
struct Installed {
    c: Clients,
    w: World,
    props: Value,
    rx: Receiver,
    arn: String,
    td: String,
}

impl Installed {
    async fn new() -> Installed {
        let c = clients_at(&moto(), fresh_region()).await;
        let w = seed(&c, false).await;
        let props = w.fargate_props();
        let rx = Receiver::start(0).await;
        let create = cfn_event("Create", &rx.url("create"), &props, None, None);
        let body = cfn_via_binary(&c, &rx, create).await;
        assert_eq!(body["Status"], "SUCCESS", "{body}");
        Installed {
            arn: body["PhysicalResourceId"].as_str().unwrap().to_string(),
            td: body["Data"]["TaskDefinitionArn"]
                .as_str()
                .unwrap()
                .to_string(),
            c,
            w,
            props,
            rx,
        }
    }

    /// The scheduled heal, through the binary: every delegate of the region's table.
    async fn heal(&self) -> Value {
        scheduled_heal(&self.c).await
    }

    /// A CloudFormation request through the binary: the body CloudFormation received.
    async fn cfn(&self, event: Value) -> Value {
        cfn_via_binary(&self.c, &self.rx, event).await
    }

    /// A Create of `props` from another stack of the same name (`OTHER_GUID`), through the
    /// binary: the body CloudFormation received.
    async fn create_from_other_stack(&self, name: &str, props: &Value) -> Value {
        let create = cfn_event("Create", &self.rx.url(name), props, None, None);
        self.cfn(from_stack(create, OTHER_GUID)).await
    }

    async fn heal_targets(&self, services: &[&str]) -> Value {
        let targets: Vec<Value> = services
            .iter()
            .map(|s| json!({"ClusterName": self.w.cluster, "ServiceName": s}))
            .collect();
        let event = json!({"Action": "Heal", "Targets": targets});
        invoke_in(&moto(), self.c.region.as_deref().unwrap(), &event)
            .await
            .0
    }

    async fn service(&self) -> aws_sdk_ecs::types::Service {
        service(&self.c, &self.w.cluster, "harness-delegate")
            .await
            .unwrap()
    }

    /// A genuine drift: the service scaled to 0 out of band.
    async fn scale_to_zero(&self) {
        update_out_of_band(&self.c, &self.w.cluster)
            .desired_count(0)
            .send()
            .await
            .unwrap();
    }

    fn key(&self) -> String {
        format!("{}/harness-delegate", self.w.cluster)
    }

    /// Remove the delegate's item, as if the table never knew it (a version that kept the
    /// record in tags, or a stack's new table).
    async fn forget_record(&self) {
        self.c
            .store
            .client
            .delete_item()
            .table_name(RECORD_TABLE)
            .key(
                "delegate",
                aws_sdk_dynamodb::types::AttributeValue::S(self.key()),
            )
            .send()
            .await
            .unwrap();
    }
}

/// Another stack, as CloudFormation names it.
fn from_stack(mut e: Value, stack_id: &str) -> Value {
    e["StackId"] = json!(stack_id);
    e
}

const OTHER_GUID: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/test/other-guid";
const OWNER: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/test/guid";

#[tokio::test]
async fn forged_tags_steer_nothing_and_a_genuine_drift_is_still_repaired() {
    let i = Installed::new().await;
    let ours =
        i.c.ecs
            .describe_task_definition()
            .task_definition(&i.td)
            .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
            .send()
            .await
            .unwrap();
    // 1. The delegate revision's tags copied onto an attacker's revision of another family,
    //    with a later applied-at.
    let mut forged: Vec<aws_sdk_ecs::types::Tag> = ours
        .tags()
        .to_vec()
        .into_iter()
        .filter(|t| t.key() != Some("harness-delegate:applied-at"))
        .collect();
    forged.push(
        aws_sdk_ecs::types::Tag::builder()
            .key("harness-delegate:applied-at")
            .value("9999999999999")
            .build(),
    );
    let evil_arn = register_foreign(&i.c, "attacker-fam", "evil/miner", forged.clone()).await;
    // 2. The record tags on the delegate's own service say desired=7, newer than the record.
    let svc = i.service().await;
    let edited = svc
        .tags()
        .iter()
        .find(|t| t.key() == Some("harness-delegate:service"))
        .unwrap()
        .value()
        .unwrap()
        .replace("desired=1", "desired=7");
    i.c.ecs
        .tag_resource()
        .resource_arn(&i.arn)
        .tags(
            aws_sdk_ecs::types::Tag::builder()
                .key("harness-delegate:service")
                .value(edited)
                .build(),
        )
        .tags(
            aws_sdk_ecs::types::Tag::builder()
                .key("harness-delegate:applied-at")
                .value("9999999999999")
                .build(),
        )
        .send()
        .await
        .unwrap();
    // And a genuine drift in the same heal.
    i.scale_to_zero().await;
    let result = i.heal().await;
    let r = report_of(&result, &i.key());
    assert_eq!(r["Outcome"], "Repaired", "{r}");
    assert_eq!(action_names(&r), ["UpdateService"], "{r}");
    let s = i.service().await;
    assert_eq!(s.desired_count(), 1, "the committed count, not the tag's 7");
    assert_eq!(s.task_definition(), Some(i.td.as_str()), "not {evil_arn}");
    // The attacker's revision is untouched (still ACTIVE, its tags as they were).
    let after =
        i.c.ecs
            .describe_task_definition()
            .task_definition(&evil_arn)
            .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
            .send()
            .await
            .unwrap();
    assert_eq!(
        after.task_definition().unwrap().status(),
        Some(&aws_sdk_ecs::types::TaskDefinitionStatus::Active)
    );
    assert_eq!(after.tags().len(), forged.len());
    // The next heal is steady.
    assert_eq!(report_of(&i.heal().await, &i.key())["Outcome"], "Converged");
    record_figures(
        "tamper-tags",
        &json!([
            {"case": "a revision of another family carrying copies of the delegate's record tags, with a later applied-at", "outcome": "ignored: heal keeps the committed revision; the forged revision is untouched"},
            {"case": "the record tags on the delegate's own service edited (desired=7)", "outcome": "ignored: heal restores the committed count (1)"},
        ]),
    );
}

#[tokio::test]
async fn a_service_with_copied_record_tags_is_not_healed() {
    let i = Installed::new().await;
    // 3. A service the function never made, given the delegate's record tags (no item).
    let td = register_foreign(&i.c, "app", "nginx", vec![]).await;
    let mut copied: Vec<aws_sdk_ecs::types::Tag> = i
        .service()
        .await
        .tags()
        .to_vec()
        .into_iter()
        .filter(|t| t.key() != Some("harness-delegate:managed-by"))
        .collect();
    copied.retain(|t| t.key() != Some("harness-delegate:resource"));
    copied.push(
        aws_sdk_ecs::types::Tag::builder()
            .key("harness-delegate:resource")
            .value(format!("{}/victim", i.w.cluster))
            .build(),
    );
    i.c.ecs
        .create_service()
        .cluster(&i.w.cluster)
        .service_name("victim")
        .task_definition(&td)
        .desired_count(3)
        .set_tags(Some(copied))
        .send()
        .await
        .unwrap();
    i.scale_to_zero().await;
    let result = i.heal_targets(&["victim", "harness-delegate"]).await;
    let victim = report_of(&result, &format!("{}/victim", i.w.cluster));
    assert_eq!(victim["Outcome"], "NotManaged", "{victim}");
    assert!(action_names(&victim).is_empty());
    let v = service(&i.c, &i.w.cluster, "victim").await.unwrap();
    assert_eq!(v.desired_count(), 3, "the foreign service is not scaled");
    let ours = report_of(&result, &i.key());
    assert_eq!(ours["Outcome"], "Repaired", "{ours}");
    assert_eq!(i.service().await.desired_count(), 1);
    record_figures(
        "tamper-service",
        &json!([{"case": "a service the function never made, given the delegate's record tags and named in a heal", "outcome": "NotManaged: nothing read from its tags is acted on; the delegate beside it is repaired"}]),
    );
}

#[tokio::test]
async fn another_stack_of_the_same_name_is_refused_until_it_takes_over_on_purpose() {
    let i = Installed::new().await;
    // 5. The same stack name, created again (another GUID): refused, naming the owner.
    let mut changed = i.props.clone();
    changed["DesiredCount"] = json!("2");
    let refused = i.create_from_other_stack("again", &changed).await;
    assert_eq!(refused["Status"], "FAILED", "{refused}");
    let why = refused["Reason"].as_str().unwrap();
    assert!(
        why.contains(&format!("belongs to the stack {OWNER}")),
        "{why}"
    );
    assert!(
        why.contains(&format!("TakeOverFromStackId: {OWNER}")),
        "{why}"
    );
    assert_eq!(i.service().await.desired_count(), 1, "nothing changed");
    // 6. While the owner's service is deleted out of band, the claim is refused all the same.
    delete_service_out_of_band(&i.c, &i.w.cluster).await;
    assert_eq!(
        i.create_from_other_stack("while-gone", &changed).await["Status"],
        "FAILED"
    );
    // ... and heal restores the owner's delegate (a genuine drift).
    let r = i.heal().await;
    assert_eq!(report_of(&r, &i.key())["Outcome"], "Repaired", "{r}");
    assert_eq!(i.service().await.desired_count(), 1);
    // On purpose: the new stack names the previous owner.
    changed["TakeOverFromStackId"] = json!(OWNER);
    let taken = i.create_from_other_stack("take-over", &changed).await;
    assert_eq!(taken["Status"], "SUCCESS", "{taken}");
    assert_eq!(i.service().await.desired_count(), 2);
    // The old stack's Delete (it is being deleted, the delegate was taken over) touches nothing.
    let delete = cfn_event(
        "Delete",
        &i.rx.url("old-delete"),
        &i.props,
        Some(&i.arn),
        None,
    );
    assert_eq!(i.cfn(delete).await["Status"], "SUCCESS");
    let s = i.service().await;
    assert_eq!((s.status(), s.desired_count()), (Some("ACTIVE"), 2));
    i.scale_to_zero().await;
    assert_eq!(report_of(&i.heal().await, &i.key())["Outcome"], "Repaired");
    assert_eq!(
        i.service().await.desired_count(),
        2,
        "the new owner's count"
    );
    record_figures(
        "tamper-owner",
        &json!([
            {"case": "a Create from a stack of the same name but another StackId", "outcome": "FAILED, naming the owner's StackId and TakeOverFromStackId; nothing changed"},
            {"case": "the same claim while the owner's service is deleted out of band", "outcome": "FAILED; heal recreates the owner's service"},
            {"case": "the claim with TakeOverFromStackId naming the owner", "outcome": "SUCCESS; the old stack's Delete then leaves the delegate alone"},
        ]),
    );
}

#[tokio::test]
async fn a_create_delivered_again_after_its_delete_installs_nothing() {
    let c = clients_at(&moto(), fresh_region()).await;
    let w = seed(&c, false).await;
    let rx = Receiver::start(0).await;
    let props = w.fargate_props();
    let family = props["TaskDefinitionFamily"].as_str().unwrap().to_string();
    // 9. The Create event exactly as first delivered (same RequestId), after its Delete.
    let first = cfn_event("Create", &rx.url("first"), &props, None, None);
    let created = cfn_via_binary(&c, &rx, first.clone()).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let arn = created["PhysicalResourceId"].as_str().unwrap();
    let delete = cfn_event("Delete", &rx.url("d"), &props, Some(arn), None);
    assert_eq!(cfn_via_binary(&c, &rx, delete).await["Status"], "SUCCESS");
    let again = cfn_via_binary(&c, &rx, first.clone()).await;
    assert_eq!(
        again["Status"], "SUCCESS",
        "answered as the first time: {again}"
    );
    assert_eq!(again["PhysicalResourceId"], created["PhysicalResourceId"]);
    assert_eq!(again["Data"], created["Data"]);
    let s = service(&c, &w.cluster, "harness-delegate").await;
    assert!(
        s.is_none_or(|s| s.status() == Some("INACTIVE")),
        "nothing installed again"
    );
    assert!(active_revisions(&c, &family).await.is_empty());
    let heal = scheduled_heal(&c).await;
    assert_eq!(
        heal["Delegates"],
        json!([]),
        "a tombstone is not healed: {heal}"
    );
    // A new Create (a new RequestId) of the same delegate still installs it, and it heals.
    let fresh = cfn_event("Create", &rx.url("fresh"), &props, None, None);
    assert_eq!(cfn_via_binary(&c, &rx, fresh).await["Status"], "SUCCESS");
    update_out_of_band(&c, &w.cluster)
        .desired_count(0)
        .send()
        .await
        .unwrap();
    let heal = scheduled_heal(&c).await;
    assert_eq!(heal["Delegates"][0]["Outcome"], "Repaired", "{heal}");
    record_figures(
        "race-replay-after-delete",
        &json!([{"case": "Create SUCCESS, Delete SUCCESS, then the same Create delivered again", "interleaving": "sequential (delivery is at least once)", "outcome": "the first answer again; nothing installed, nothing healed back; a new Create still installs"}]),
    );
}

/// 8. An Update (image A→B) cut off by the deadline while its UpdateService is in flight: it
/// answers FAILED, CloudFormation's rollback Update (the old properties) converges back to A,
/// and when the cut-off call lands afterwards, heal puts A back: B was never committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_cut_off_by_the_deadline_is_never_followed() {
    let i = Installed::new().await;
    let gate = Gate::new();
    let proxy = Proxy::start(vec![Rule {
        operation: "UpdateService",
        fault: Fault::Held(gate.clone()),
        times: 1,
    }])
    .await;
    let region = i.c.region.clone().unwrap();
    let via = proxy.clients_in(&region).await;
    let mut b = i.props.clone();
    b["Image"] = json!("harness/delegate:26.11.2");
    let update = cfn_event(
        "Update",
        &i.rx.url("to-b"),
        &b,
        Some(&i.arn),
        Some(&i.props),
    );
    let started = std::time::Instant::now();
    handler(via).handle(update, deadline_in(25)).await.unwrap();
    let cut = i.rx.bodies().pop().unwrap();
    assert_eq!(cut["Status"], "FAILED", "{cut}");
    assert!(
        cut["Reason"].as_str().unwrap().contains("timed out"),
        "{cut}"
    );
    // The rollback: the old properties, while B's UpdateService is still in flight.
    let rollback = cfn_event(
        "Update",
        &i.rx.url("back"),
        &i.props,
        Some(&i.arn),
        Some(&b),
    );
    let back = i.cfn(rollback).await;
    assert_eq!(back["Status"], "SUCCESS", "{back}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let image_of = |arn: String| {
        let c = i.c.clone();
        async move {
            let td = revision(&c, &arn).await;
            td.container_definitions()[0].image().unwrap().to_string()
        }
    };
    let running = i.service().await.task_definition().unwrap().to_string();
    assert_eq!(image_of(running).await, "harness/delegate:latest");
    // The cut-off call lands now: the service moves to B behind everyone's back.
    gate.open();
    let mut waited = 0;
    loop {
        let td = i.service().await.task_definition().unwrap().to_string();
        if image_of(td).await.ends_with("26.11.2") {
            break;
        }
        assert!(waited < 50, "the held UpdateService never landed");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let r = i.heal().await;
    let r = report_of(&r, &i.key());
    assert_eq!(r["Outcome"], "Repaired", "{r}");
    let td = i.service().await.task_definition().unwrap().to_string();
    assert_eq!(
        image_of(td).await,
        "harness/delegate:latest",
        "the committed image"
    );
    assert_eq!(report_of(&i.heal().await, &i.key())["Outcome"], "Converged");
    record_figures(
        "race-cut-off-update",
        &json!([{"case": "an Update (image A to B) cut off by the deadline with its UpdateService in flight", "interleaving": "FAILED answer, rollback Update to A, then B's call lands", "outcome": "the rollback converges to A; heal moves the service back to A (B was never committed)"}]),
    );
}

/// 10. Two stacks claim one name at the same time, each in its own function process: one
/// installs, the other waits for the lease, finds the delegate taken and is refused, having
/// written nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stacks_racing_for_one_name_in_two_processes() {
    let c = clients().await;
    let w = seed(&c, false).await;
    let rx = Receiver::start(0).await;
    // Whichever process registers first is held a second, so that the other has read the
    // record before anything exists.
    let proxy = Proxy::start(vec![Rule {
        operation: "RegisterTaskDefinition",
        fault: Fault::Delay(Duration::from_secs(1)),
        times: 1,
    }])
    .await;
    let stacks = [OWNER, OTHER_GUID];
    let mut runs = Vec::new();
    for (n, stack) in stacks.iter().enumerate() {
        let event = from_stack(
            cfn_event(
                "Create",
                &rx.url(&format!("p{n}")),
                &w.fargate_props(),
                None,
                None,
            ),
            stack,
        );
        let file = std::env::temp_dir().join(format!("{}.json", unique("race")));
        std::fs::write(&file, event.to_string()).unwrap();
        let child = invoke_command(&proxy.endpoint, "us-east-1", &file).output();
        runs.push(child);
    }
    // Each process answers CloudFormation (the loser's exit status says FAILED too).
    let outputs = futures::future::join_all(runs).await;
    let succeeded = outputs
        .iter()
        .filter(|o| o.as_ref().unwrap().status.success())
        .count();
    assert_eq!(succeeded, 1);
    let bodies = rx.bodies();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let won: Vec<&Value> = bodies.iter().filter(|b| b["Status"] == "SUCCESS").collect();
    let lost: Vec<&Value> = bodies.iter().filter(|b| b["Status"] == "FAILED").collect();
    assert_eq!((won.len(), lost.len()), (1, 1), "{bodies:?}");
    let winner = won[0]["StackId"].as_str().unwrap();
    let why = lost[0]["Reason"].as_str().unwrap();
    assert!(
        why.contains(&format!("belongs to the stack {winner}")),
        "{why}"
    );
    // The loser wrote nothing in AWS: one revision, one service, one group.
    assert_eq!(proxy.calls("RegisterTaskDefinition"), 1);
    assert_eq!(proxy.calls("CreateService"), 1);
    assert_eq!(proxy.calls("CreateSecurityGroup"), 1);
    let family = w.fargate_props()["TaskDefinitionFamily"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(active_revisions(&c, &family).await.len(), 1);
    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert_eq!(
        s.task_definition(),
        won[0]["Data"]["TaskDefinitionArn"].as_str()
    );
    // A genuine drift is repaired toward the winner's record.
    update_out_of_band(&c, &w.cluster)
        .desired_count(0)
        .send()
        .await
        .unwrap();
    let heal_event = json!({"Action": "Heal", "Targets": [{"ClusterName": w.cluster, "ServiceName": "harness-delegate"}]});
    let (heal, _) = invoke_in(&moto(), "us-east-1", &heal_event).await;
    assert_eq!(heal["Delegates"][0]["Outcome"], "Repaired", "{heal}");
    record_figures(
        "race-two-stacks",
        &json!([{"case": "two stacks Create one cluster and service at once", "interleaving": "two function processes; the first register held 1 s", "outcome": "one SUCCESS; the other waits for the lease, then FAILED naming the owner, having written nothing"}]),
    );
}

/// A delegate an earlier version recorded in tags only (its item absent): heal leaves it alone
/// and says why, and the stack's next Update records it from the stack's properties.
#[tokio::test]
async fn a_delegate_recorded_in_tags_by_an_earlier_version_is_imported_by_an_update() {
    let i = Installed::new().await;
    i.forget_record().await;
    i.scale_to_zero().await;
    let result = i.heal_targets(&["harness-delegate"]).await;
    let r = report_of(&result, &i.key());
    assert_eq!(r["Outcome"], "NotManaged", "{r}");
    assert!(
        r["Found"][0].as_str().unwrap().contains("earlier version"),
        "{r}"
    );
    assert_eq!(i.service().await.desired_count(), 0, "left alone");
    assert_eq!(
        i.heal().await["Delegates"],
        json!([]),
        "the schedule does not see it"
    );
    // The stack's next Update (any change) records it, from its own properties.
    let mut changed = i.props.clone();
    changed["Tags"] = json!({"team": "platform", "cost-centre": "42"});
    let update = cfn_event(
        "Update",
        &i.rx.url("u"),
        &changed,
        Some(&i.arn),
        Some(&i.props),
    );
    assert_eq!(i.cfn(update).await["Status"], "SUCCESS");
    assert_eq!(i.service().await.desired_count(), 1);
    i.scale_to_zero().await;
    assert_eq!(report_of(&i.heal().await, &i.key())["Outcome"], "Repaired");
    assert_eq!(i.service().await.desired_count(), 1);
}

/// A stack created again under the same name gets a record table of its own, empty: the
/// delegate its predecessor left (deleted with the delegate retained) is still refused, from
/// the StackId label on the service, until it is taken over on purpose.
#[tokio::test]
async fn a_stack_created_again_with_an_empty_table_does_not_adopt_silently() {
    let i = Installed::new().await;
    // The predecessor's table went with its stack.
    i.forget_record().await;
    let refused = i.create_from_other_stack("again", &i.props).await;
    assert_eq!(refused["Status"], "FAILED", "{refused}");
    let why = refused["Reason"].as_str().unwrap();
    assert!(
        why.contains(&format!("TakeOverFromStackId: {OWNER}")),
        "{why}"
    );
    let mut props = i.props.clone();
    props["TakeOverFromStackId"] = json!(OWNER);
    let taken = i.create_from_other_stack("take", &props).await;
    assert_eq!(taken["Status"], "SUCCESS", "{taken}");
    let s = i.service().await;
    let label = |k: &str| {
        s.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(String::from)
    };
    assert_eq!(
        label("harness-delegate:owner-stack-id").as_deref(),
        Some(OTHER_GUID)
    );
    i.scale_to_zero().await;
    assert_eq!(report_of(&i.heal().await, &i.key())["Outcome"], "Repaired");
}
