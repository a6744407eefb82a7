//! The record store against tampering and races (the record-store issue's cases): what the
//! function reads back from AWS that others can write (tags, revisions, services) is never
//! acted on unless the record table agrees, and the table's item changes atomically whatever
//! runs at once. Each case checks that nothing foreign changed and that the end state is what
//! the last successful stack operation asked for, next to a genuine drift that heal still
//! repairs in the same test. Requests and heals run through the built binary, one process
//! each: `invoke`, or the Lambda Runtime API where a test needs an invocation cut off by its
//! deadline. The figures feed docs/reliability.md's tampering and race tables.

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
    let mut cmd = function_binary(endpoint, region);
    cmd.arg("invoke").arg(file);
    cmd
}

/// The binary as Lambda runs it, serving `event` from a Runtime API whose invocation ends
/// `timeout` after it starts (as the function's Timeout would). Killed when dropped.
async fn in_lambda(
    endpoint: &str,
    region: &str,
    event: Value,
    timeout: Duration,
) -> (RuntimeApi, tokio::process::Child) {
    let api = runtime_api_with_deadline(Deadline::In(timeout)).await;
    api.events
        .lock()
        .unwrap()
        .push_back((unique("invocation"), event));
    let lambda = function_binary(endpoint, region)
        .envs(api.lambda_env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the binary");
    (api, lambda)
}

/// One CloudFormation request served by the binary as Lambda runs it ([`in_lambda`]): the body
/// CloudFormation received. The process stops once it has answered.
async fn cfn_in_lambda(
    endpoint: &str,
    region: &str,
    rx: &Receiver,
    event: Value,
    timeout: Duration,
) -> Value {
    let before = rx.count();
    let (api, mut lambda) = in_lambda(endpoint, region, event, timeout).await;
    let posted = wait_for(&api.posted, 1).await;
    lambda.start_kill().unwrap();
    lambda.wait().await.unwrap();
    assert_eq!(posted.len(), 1, "the invocation was answered");
    assert_eq!(rx.count(), before + 1, "one answer to CloudFormation");
    rx.bodies().pop().unwrap()
}

/// A CloudFormation request in the binary as Lambda runs it, with a 20 s timeout that a held
/// call outlasts: it must answer FAILED, saying it timed out. The body CloudFormation received.
async fn cut_off(endpoint: &str, region: &str, rx: &Receiver, event: Value) -> Value {
    let cut = cfn_in_lambda(endpoint, region, rx, event, Duration::from_secs(20)).await;
    assert_eq!(cut["Status"], "FAILED", "{cut}");
    let why = cut["Reason"].as_str().unwrap();
    assert!(why.contains("timed out"), "{cut}");
    cut
}

/// A CloudFormation request through the binary: the body CloudFormation received.
async fn cfn_via_binary(c: &Clients, rx: &Receiver, event: Value) -> Value {
    let before = rx.count();
    invoke_in(&aws(), c.region.as_deref().unwrap(), &event).await;
    assert_eq!(rx.count(), before + 1, "one answer to CloudFormation");
    rx.bodies().pop().unwrap()
}

/// The scheduled heal through the binary, in `c`'s region.
async fn scheduled_heal(c: &Clients) -> Value {
    let event = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    invoke_in(&aws(), c.region.as_deref().unwrap(), &event)
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
        let c = clients_at(&aws(), fresh_region()).await;
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
        invoke_in(&aws(), self.c.region.as_deref().unwrap(), &event)
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
    let c = clients_at(&aws(), fresh_region()).await;
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

/// A Create cut off by its invocation's deadline (the binary as Lambda runs it, AWS through
/// `proxy`) while its CreateService is held, then CloudFormation's rollback Delete of the
/// physical id the FAILED answer gave. Returns once the Delete succeeded; the held call is
/// still waiting at `gate`.
async fn create_cut_off_then_rolled_back(c: &Clients, rx: &Receiver, proxy: &Proxy, props: &Value) {
    let region = c.region.clone().unwrap();
    let create = cfn_event("Create", &rx.url("cut"), props, None, None);
    let cut = cut_off(&proxy.endpoint, &region, rx, create).await;
    let physical = cut["PhysicalResourceId"].as_str().unwrap();
    let delete = cfn_event("Delete", &rx.url("rollback"), props, Some(physical), None);
    let deleted = cfn_via_binary(c, rx, delete).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
}

/// 9. A Create cut off by the deadline while its CreateService is in flight, which lands only
/// after the rollback Delete finished: ECS refuses it, because the Delete deregistered the
/// revision it names. Nothing runs, heal restores nothing, and the stack can still install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_landing_after_its_rollback_delete_is_refused() {
    let c = clients_at(&aws(), fresh_region()).await;
    let w = seed(&c, false).await;
    let rx = Receiver::start(0).await;
    let gate = Gate::new();
    let held = Rule::hold("CreateService", &gate);
    let proxy = Proxy::start(vec![held]).await;
    let props = w.fargate_props();
    create_cut_off_then_rolled_back(&c, &rx, &proxy, &props).await;
    gate.open();
    let answers = proxy.wait_for_answers("CreateService", 1).await;
    assert_eq!(answers, vec![(400, "ClientException".to_string())]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        proxy.answers("CreateService").len(),
        1,
        "the call was made once"
    );
    assert!(service(&c, &w.cluster, "harness-delegate").await.is_none());
    let family = props["TaskDefinitionFamily"].as_str().unwrap();
    assert_eq!(active_revisions(&c, family).await, Vec::<String>::new());
    let region = c.region.clone().unwrap();
    let event = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    let (heal, _) = invoke_in(&proxy.endpoint, &region, &event).await;
    // A deleted delegate with nothing running is not even reported.
    assert_eq!(heal, json!({"Status": "SUCCESS", "Delegates": []}));
    assert!(service(&c, &w.cluster, "harness-delegate").await.is_none());
    // The stack's next Create installs as ever.
    let again = cfn_via_binary(
        &c,
        &rx,
        cfn_event("Create", &rx.url("again"), &props, None, None),
    )
    .await;
    assert_eq!(again["Status"], "SUCCESS", "{again}");
    record_figures(
        "race-late-create-refused",
        &json!([{"case": "a Create cut off with its CreateService in flight; the call lands after the rollback Delete", "interleaving": "FAILED answer, Delete SUCCESS (revision deregistered), then the call lands", "outcome": "ECS refuses it (TaskDefinition is inactive); nothing runs; a new Create installs"}]),
    );
}

/// 9. The same, landing within the 10 minutes in which ECS may still accept a deregistered
/// revision: a service runs with no record and no stack. Heal removes it, because ECS says the
/// function's role created it; a service a person created at another deleted delegate's name,
/// with that delegate's tags copied on, is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_a_late_create_left_after_its_delete_is_removed_by_heal() {
    let c = clients_at(&aws(), fresh_region()).await;
    let w = seed(&c, false).await;
    let rx = Receiver::start(0).await;
    // Another delegate, created and deleted: the forger copies its tags onto a service of its
    // name, made by a person.
    let mut other = w.fargate_props();
    other["ServiceName"] = json!("other-delegate");
    other["TaskDefinitionFamily"] = json!(format!("{}-other", w.name));
    let made = cfn_via_binary(
        &c,
        &rx,
        cfn_event("Create", &rx.url("other"), &other, None, None),
    )
    .await;
    assert_eq!(made["Status"], "SUCCESS", "{made}");
    let copied = service(&c, &w.cluster, "other-delegate")
        .await
        .unwrap()
        .tags()
        .to_vec();
    let physical = made["PhysicalResourceId"].as_str().unwrap();
    let gone = cfn_via_binary(
        &c,
        &rx,
        cfn_event(
            "Delete",
            &rx.url("other-gone"),
            &other,
            Some(physical),
            None,
        ),
    )
    .await;
    assert_eq!(gone["Status"], "SUCCESS", "{gone}");
    let td = made["Data"]["TaskDefinitionArn"].as_str().unwrap();
    let forged = register_foreign(
        &c,
        &format!("{}-forged", w.name),
        "public.ecr.aws/x/y:1",
        vec![],
    )
    .await;
    c.ecs
        .create_service()
        .cluster(&w.cluster)
        .service_name("other-delegate")
        .task_definition(&forged)
        .desired_count(1)
        .set_tags(Some(copied))
        .send()
        .await
        .unwrap();
    assert_ne!(forged, td);

    let gate = Gate::new();
    let held = Rule::hold("CreateService", &gate);
    let proxy = Proxy::start(vec![held]).await;
    proxy.inactive_revisions_usable();
    // A group of the user's: the Delete leaves it, so the late call finds it (a group the
    // function made is deleted by the Delete, and ECS refuses a call that names it).
    let given = c
        .ec2
        .create_security_group()
        .group_name(unique("given"))
        .description("the platform team's")
        .vpc_id(&w.vpc)
        .send()
        .await
        .unwrap();
    let mut props = w.fargate_props();
    props["SecurityGroupIds"] = json!(given.group_id().unwrap());
    create_cut_off_then_rolled_back(&c, &rx, &proxy, &props).await;
    gate.open();
    let answers = proxy.wait_for_answers("CreateService", 1).await;
    assert_eq!(answers, vec![(200, String::new())]);
    let orphan = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert_eq!(orphan.status(), Some("ACTIVE"));

    let region = c.region.clone().unwrap();
    let event = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    let (heal, _) = invoke_in(&proxy.endpoint, &region, &event).await;
    let r = report_of(&heal, &format!("{}/harness-delegate", w.cluster));
    assert_eq!(r["Outcome"], "Repaired", "{heal}");
    assert_eq!(action_names(&r), vec!["DeleteOrphanService"], "{r}");
    let after = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert_eq!(
        after.status(),
        Some("INACTIVE"),
        "the late service is removed"
    );
    let f = report_of(&heal, &format!("{}/other-delegate", w.cluster));
    assert_eq!(f["Outcome"], "NotManaged", "{heal}");
    let why = f["Found"][0].as_str().unwrap();
    assert!(
        why.contains(&format!("was created by {PERSON}, not by this function")),
        "{why}"
    );
    let kept = service(&c, &w.cluster, "other-delegate").await.unwrap();
    assert_eq!(
        (kept.status(), kept.desired_count()),
        (Some("ACTIVE"), 1),
        "the person's service is untouched"
    );
    // Removed once: the next heal finds nothing of the deleted delegate running, and does not
    // report it.
    let (next, _) = invoke_in(&proxy.endpoint, &region, &event).await;
    let keys: Vec<&Value> = next["Delegates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["Delegate"])
        .collect();
    assert_eq!(
        keys,
        vec![&json!(format!("{}/other-delegate", w.cluster))],
        "{next}"
    );
    record_figures(
        "race-late-create-removed",
        &json!([
            {"case": "a Create cut off with its CreateService in flight; the call lands after the rollback Delete, while ECS still accepts the deregistered revision", "interleaving": "FAILED answer, Delete SUCCESS, then the call lands and creates the service", "outcome": "the scheduled heal removes the service: ECS's createdBy is the function's role"},
        ]),
    );
    record_figures(
        "tamper-copied-tags-at-a-tombstone",
        &json!([{"case": "a person creates a service at a deleted delegate's name with its tags copied", "interleaving": "after the Delete", "outcome": "left alone (createdBy is the person); the genuine late service beside it is removed"}]),
    );
}

/// 8. An Update (image A→B) cut off by its invocation's deadline (the binary as Lambda runs
/// it) while its UpdateService is in flight: it answers FAILED, CloudFormation's rollback
/// Update (the old properties) converges back to A, and when the cut-off call lands
/// afterwards, heal puts A back: B was never committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_cut_off_by_the_deadline_is_never_followed() {
    let i = Installed::new().await;
    let gate = Gate::new();
    let proxy = Proxy::start(vec![Rule::hold("UpdateService", &gate)]).await;
    // The worst case: B's call lands while ECS still accepts a revision the undo deregistered.
    proxy.inactive_revisions_usable();
    let region = i.c.region.clone().unwrap();
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
    cut_off(&proxy.endpoint, &region, &i.rx, update).await;
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

/// 10. A heal that holds the lease while its UpdateService (repairing a delegate scaled to 0) is
/// in flight, and whose invocation is then cut off; the stack's Delete waits for the lease and
/// deletes; the heal's call lands afterwards. ECS refuses an UpdateService of a service that
/// is no longer ACTIVE: nothing comes back, and the next heal restores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heal_cut_off_before_a_delete_brings_nothing_back() {
    let i = Installed::new().await;
    // A genuine drift, repaired by the same kind of heal.
    i.scale_to_zero().await;
    assert_eq!(report_of(&i.heal().await, &i.key())["Outcome"], "Repaired");
    i.scale_to_zero().await;
    let gate = Gate::new();
    let held = Rule::hold("UpdateService", &gate);
    let proxy = Proxy::start(vec![held]).await;
    let region = i.c.region.clone().unwrap();
    let schedule = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    let (_api, mut healing) =
        in_lambda(&proxy.endpoint, &region, schedule, Duration::from_secs(30)).await;
    proxy.wait_for_calls("UpdateService", 1).await;
    assert_eq!(
        proxy.calls("UpdateService"),
        1,
        "the heal's repair is in flight"
    );
    // Lambda ends the invocation; its call is still on its way to ECS.
    healing.start_kill().unwrap();
    healing.wait().await.unwrap();
    let started = std::time::Instant::now();
    let delete = cfn_event("Delete", &i.rx.url("delete"), &i.props, Some(&i.arn), None);
    let deleted = i.cfn(delete).await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    let waited = started.elapsed();
    gate.open();
    let answers = proxy.wait_for_answers("UpdateService", 1).await;
    assert_eq!(
        answers,
        vec![(400, "ServiceNotActiveException".to_string())]
    );
    let s = i.service().await;
    assert_ne!(
        s.status(),
        Some("ACTIVE"),
        "the deleted service stays deleted"
    );
    let family = i.props["TaskDefinitionFamily"].as_str().unwrap();
    assert_eq!(active_revisions(&i.c, family).await, Vec::<String>::new());
    let after = i.heal().await;
    assert_eq!(after, json!({"Status": "SUCCESS", "Delegates": []}));
    record_figures(
        "race-heal-cut-off-before-delete",
        &json!([{"case": "a heal cut off with its UpdateService in flight, then a stack Delete", "interleaving": format!("the Delete waits for the heal's lease ({} s), deletes; then the heal's call lands", waited.as_secs()), "outcome": "ECS refuses it (ServiceNotActiveException); nothing comes back, nothing is healed back"}]),
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
    let (heal, _) = invoke_in(&aws(), "us-east-1", &heal_event).await;
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
    // Deploying the upgraded template is an Update: the delegate gains `RecordTable`, and the
    // function records it from the stack's own properties.
    let mut changed = i.props.clone();
    changed["RecordTable"] = json!(RECORD_TABLE);
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
    // Another stack's table is refused by name, and nothing changes.
    let mut wrong = changed.clone();
    wrong["RecordTable"] = json!("another-stack-delegate-records");
    wrong["DesiredCount"] = json!("3");
    let update = cfn_event(
        "Update",
        &i.rx.url("w"),
        &wrong,
        Some(&i.arn),
        Some(&changed),
    );
    let refused = i.cfn(update).await;
    assert_eq!(refused["Status"], "FAILED", "{refused}");
    let why = refused["Reason"].as_str().unwrap();
    assert!(
        why.contains("RecordTable") && why.contains(RECORD_TABLE),
        "{why}"
    );
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
