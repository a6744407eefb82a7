//! Keeping the delegate current, through the built binary as Lambda runs it: a stack's Create
//! installs Harness's latest supported version (asked of the fake Harness API under a path, with
//! the API key read from moto's Secrets Manager); the upgrade run (`{"Action": "Upgrade"}`, the
//! upgrade schedule's input) moves the delegate when Harness names a newer version, waits until
//! it is ready (the ECS simulator), keeps it, and rolls back a version that does not come up and
//! does not try it again; Harness's faults change nothing. The key appears in no log line (at
//! TRACE) and no result.

mod support;

use std::time::Duration;

use harness_ecs_delegate_bootstrap::model::DelegateKey;
use harness_ecs_delegate_bootstrap::store::Store;
use serde_json::{json, Value};
use support::ecs_sim::{self, Script};
use support::harness_api::{put_secret, Answer, HarnessApi};
use support::*;

const SERVICE: &str = "harness-delegate";
const KEY: &str = "pat.acct-123.Zk3yUpgrade0Key.s3cr3tV4lu3";
const ACCOUNT: &str = "acct-123";

/// A world with a delegate's cluster, the fake Harness (under `/gratis`), the key in a secret,
/// and the binary in Lambda.
struct Upgrades {
    w: World,
    region: String,
    harness: HarnessApi,
    secret: String,
    lambda: Lambda,
    rx: Receiver,
    _proxy: Proxy,
}

impl Upgrades {
    async fn new(latest: &str, log_level: &str) -> Upgrades {
        Self::pinned(latest, log_level, false).await
    }

    /// With `pinned`, the function's environment names the key and Manager it may use, as
    /// template.yaml sets them.
    async fn pinned(latest: &str, log_level: &str, pinned: bool) -> Upgrades {
        Self::behind(latest, log_level, pinned, vec![]).await
    }

    /// With the function's AWS calls through a proxy that applies `rules`.
    async fn behind(latest: &str, log_level: &str, pinned: bool, rules: Vec<Rule>) -> Upgrades {
        let region = fresh_region();
        let c = clients_at(&aws(), region).await;
        let w = seed(&c, false).await;
        ecs_sim::script(&w.cluster, SERVICE, Script::up());
        let harness = HarnessApi::start("/gratis", ACCOUNT, KEY, latest).await;
        let secret = put_secret(region, &unique("harness-api-key"), KEY).await;
        let proxy = Proxy::start(rules).await;
        let env = [
            ("HARNESS_API_KEY_SECRET_ARN", secret.as_str()),
            ("HARNESS_MANAGER", harness.manager.as_str()),
        ];
        let env = if pinned { &env[..] } else { &[] };
        let timeout = Duration::from_secs(600);
        let lambda = Lambda::start_with(&proxy, region, timeout, log_level, env).await;
        Upgrades {
            w,
            region: region.to_string(),
            harness,
            secret,
            lambda,
            rx: Receiver::start(0).await,
            _proxy: proxy,
        }
    }

    fn props(&self, extra: Value) -> Value {
        let mut p = self.w.fargate_props();
        p["ManagerHostAndPort"] = json!(self.harness.manager);
        p["AccountId"] = json!(ACCOUNT);
        p["HarnessApiKeySecretArn"] = json!(self.secret);
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    }

    async fn create(&self, extra: Value) -> Value {
        let event = cfn_event(
            "Create",
            &self.rx.url("create"),
            &self.props(extra),
            None,
            None,
        );
        self.lambda.request(&self.rx, event).await
    }

    /// One upgrade run (the schedule's input, events/upgrade.json): the invocation's result,
    /// and this delegate's entry.
    async fn upgrade(&self) -> (Value, Value) {
        let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/events/upgrade.json");
        let event: Value = serde_json::from_str(&std::fs::read_to_string(sample).unwrap()).unwrap();
        let result = self.lambda.silent(&self.rx, event).await;
        let mine = result["Delegates"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["Delegate"] == format!("{}/{SERVICE}", self.w.cluster))
            .cloned()
            .unwrap_or_else(|| panic!("no entry for the delegate: {result}"));
        (result, mine)
    }

    async fn clients(&self) -> harness_ecs_delegate_bootstrap::Clients {
        with_table(clients_at(&aws(), &self.region).await, &self.region).await
    }

    /// The image of the revision the service runs, and that revision (`family:N`).
    async fn running_image(&self) -> (String, String) {
        let c = self.clients().await;
        let s = service(&c, &self.w.cluster, SERVICE)
            .await
            .expect("the service");
        let td = s.task_definition().unwrap().to_string();
        let r = revision(&c, &td).await;
        let image = r.container_definitions()[0].image().unwrap().to_string();
        (image, td.rsplit('/').next().unwrap().to_string())
    }

    /// The committed revision and image in the record table, and the failed version.
    async fn committed(&self) -> (String, String, Option<String>) {
        let c = self.clients().await;
        let store: &Store = &c.store;
        let item = store
            .get(&DelegateKey::new(&self.w.cluster, SERVICE))
            .await
            .unwrap();
        let r = item.committed.expect("a committed record");
        let image = r.follow.expect("the image it follows").image;
        (r.task_definition, image, item.failed_version)
    }

    fn family(&self) -> String {
        format!("{}-family", self.w.name)
    }

    /// The values of `metric` in the EMF records the function wrote for the delegate.
    fn metric(&self, metric: &str) -> Vec<i64> {
        let delegate = format!("{}/{SERVICE}", self.w.cluster);
        self.lambda
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["_aws"].is_object() && r["Delegate"] == delegate.as_str())
            .filter_map(|r| r[metric].as_i64())
            .collect()
    }
}

fn assert_reason(entry: &Value, words: &[&str]) {
    let why = entry["Reason"].as_str().unwrap_or_default();
    for w in words {
        assert!(why.contains(w), "{w:?} not in: {why}");
    }
}

#[tokio::test]
async fn the_delegate_follows_harness_upgraded_only_forward_and_kept_by_heal_and_updates() {
    let u = Upgrades::new("25.10.87100", "info").await;
    let created = u.create(json!({})).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let family = u.family();
    assert_eq!(
        u.running_image().await,
        ("harness/delegate:25.10.87100".into(), format!("{family}:1")),
        "a Create installs Harness's latest supported version"
    );

    let (result, same) = u.upgrade().await;
    assert_eq!(result["Status"], "SUCCESS", "{result}");
    assert_eq!(same["Outcome"], "UpToDate", "{same}");
    assert_eq!(same["RunningVersion"], "25.10.87100");
    assert_eq!(same["LatestSupportedVersion"], "25.10.87100");
    assert_eq!(u.metric("BehindLatestSupported"), [0]);

    *u.harness.latest.lock().unwrap() = "25.11.87300".into();
    // A Plan shows what a stack Update would install now, and why.
    let plan = json!({"Action": "Plan", "ResourceProperties": u.props(json!({}))});
    let planned = u.lambda.silent(&u.rx, plan).await;
    assert_eq!(
        planned["Image"]["Image"], "harness/delegate:25.11.87300",
        "{planned}"
    );
    assert_eq!(planned["Image"]["ImageUpgrade"], "LatestSupported");
    let because = planned["Image"]["Because"].as_str().unwrap_or_default();
    assert!(
        because.contains("latest supported version is 25.11.87300"),
        "{because}"
    );
    let (result, upgraded) = u.upgrade().await;
    assert_eq!(result["Status"], "SUCCESS", "{result}");
    assert_eq!(upgraded["Outcome"], "Upgraded", "{upgraded}");
    assert_eq!(upgraded["RunningVersion"], "25.11.87300");
    println!("upgraded: {upgraded:#}");
    let names = action_names(&upgraded);
    assert_eq!(
        names,
        ["RegisterTaskDefinition", "RecordSpec", "UpdateService"],
        "{upgraded}"
    );
    let now = (
        "harness/delegate:25.11.87300".to_string(),
        format!("{family}:2"),
    );
    assert_eq!(u.running_image().await, now);
    let (td, image, _) = u.committed().await;
    assert_eq!((td, image), (now.1.clone(), now.0.clone()), "committed");

    // Heal keeps the upgrade: it is the committed configuration.
    let healed = u.lambda.silent(&u.rx, json!({"Action": "Heal"})).await;
    assert_eq!(healed["Delegates"][0]["Outcome"], "Converged", "{healed}");
    assert_eq!(u.running_image().await, now);

    // A stack Update while Harness is down keeps the upgraded image, not the one the stack
    // was created with.
    u.harness.answer(Answer::Status(500));
    let props = u.props(json!({"Tags": {"team": "platform", "cost": "7"}}));
    let physical = created["PhysicalResourceId"].as_str().unwrap();
    let old = u.props(json!({}));
    let event = cfn_event(
        "Update",
        &u.rx.url("update"),
        &props,
        Some(physical),
        Some(&old),
    );
    let updated = u.lambda.request(&u.rx, event).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(
        u.running_image().await.0,
        now.0,
        "the Update kept the upgraded image"
    );
    u.harness.answer(Answer::Versions);

    // Never downgraded: Harness naming an older version changes nothing.
    *u.harness.latest.lock().unwrap() = "25.09.86900".into();
    let (_, older) = u.upgrade().await;
    assert_eq!(older["Outcome"], "UpToDate", "{older}");
    assert_eq!(older["RunningVersion"], "25.11.87300");
    assert_eq!(u.running_image().await.0, now.0);
}

#[tokio::test]
async fn a_version_that_does_not_come_up_is_rolled_back_and_not_tried_again() {
    let u = Upgrades::new("25.10.87100", "info").await;
    let created = u.create(json!({})).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let family = u.family();
    let bad = "harness/delegate:25.11.87300";
    ecs_sim::script_revision(
        &u.w.cluster,
        SERVICE,
        &format!("{family}:2"),
        Script::of(vec![ecs_sim::pull_error(bad)]),
    );
    *u.harness.latest.lock().unwrap() = "25.11.87300".into();
    let (result, rolled) = u.upgrade().await;
    assert_eq!(result["Status"], "FAILED", "someone should look: {result}");
    assert_eq!(rolled["Outcome"], "RolledBack", "{rolled}");
    assert_eq!(rolled["RunningVersion"], "25.10.87100", "{rolled}");
    println!("rolled back: {rolled:#}");
    assert_reason(
        &rolled,
        &[
            "25.11.87300 did not become ready",
            "CannotPullContainerError",
            "rolled back",
            "not tried again",
        ],
    );
    assert_eq!(
        u.running_image().await,
        ("harness/delegate:25.10.87100".into(), format!("{family}:1")),
        "the service runs the committed revision again"
    );
    let c = u.clients().await;
    let labels = service(&c, &u.w.cluster, SERVICE).await.unwrap();
    let label = labels
        .tags()
        .iter()
        .find(|t| t.key() == Some("harness-delegate:task-definition"))
        .and_then(|t| t.value());
    assert_eq!(
        label,
        Some(format!("{family}:1").as_str()),
        "the service's label is put back"
    );
    let (td, image, failed) = u.committed().await;
    assert_eq!(td, format!("{family}:1"));
    assert_eq!(image, "harness/delegate:25.10.87100");
    assert_eq!(failed.as_deref(), Some("25.11.87300"));
    assert_eq!(u.metric("UpgradeFailed"), [1], "the metric an alarm reads");
    assert_eq!(u.metric("BehindLatestSupported"), [1]);
    let active = active_revisions(&c, &family).await;
    assert!(
        !active.iter().any(|a| a.ends_with(&format!("{family}:2"))),
        "the failed version's revision is deregistered: {active:?}"
    );

    let (result, skipped) = u.upgrade().await;
    assert_eq!(result["Status"], "SUCCESS", "{result}");
    assert_eq!(skipped["Outcome"], "Skipped", "{skipped}");
    assert_reason(
        &skipped,
        &[
            "25.11.87300",
            "not tried again until Harness publishes a newer version",
        ],
    );
    assert_eq!(
        u.running_image().await.1,
        format!("{family}:1"),
        "nothing changed"
    );

    *u.harness.latest.lock().unwrap() = "25.12.87500".into();
    let (_, upgraded) = u.upgrade().await;
    assert_eq!(
        upgraded["Outcome"], "Upgraded",
        "a newer version is tried: {upgraded}"
    );
    assert_eq!(u.running_image().await.0, "harness/delegate:25.12.87500");
}

#[tokio::test]
async fn harness_faults_change_nothing_and_the_key_is_never_shown() {
    let u = Upgrades::new("25.10.87100", "trace").await;
    let created = u.create(json!({"MinimalImage": "true"})).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let family = u.family();
    let before = (
        "harness/delegate:25.10.87100.minimal".to_string(),
        format!("{family}:1"),
    );
    assert_eq!(u.running_image().await, before, "the minimal variant");
    *u.harness.latest.lock().unwrap() = "25.11.87300".into();
    let faults = [
        ("HTTP 401 (a revoked key)", Answer::Status(401), "Harness refused the API key (HTTP 401)"),
        ("HTTP 403 (a key without the permission)", Answer::Status(403), "core_delegate_edit"),
        ("HTTP 500", Answer::Status(500), "Harness did not answer (HTTP 500)"),
        ("an answer after 7 s (past the 5 s timeout)", Answer::Slow(Duration::from_secs(7)), "Harness did not answer"),
        ("cut-off JSON", Answer::Body("{\"resource\": {"), "not JSON"),
        ("\"latest\" instead of a version", Answer::Body("{\"resource\":{\"latestSupportedVersion\":\"latest\",\"latestSupportedMinimalVersion\":\"latest.minimal\"}}"), "is not yy.mm.build"),
    ];
    let mut rows = vec![];
    for (name, fault, says) in faults {
        u.harness.answer(fault.clone());
        let (_, entry) = u.upgrade().await;
        assert_eq!(entry["Outcome"], "Skipped", "{fault:?}: {entry}");
        assert_reason(&entry, &[says]);
        assert_eq!(
            u.running_image().await,
            before,
            "{fault:?} changed the delegate"
        );
        rows.push(json!({
            "fault": name,
            "outcome": "Skipped, nothing changed; the next run upgraded",
        }));
    }
    record_figures("upgrade-harness-faults", &Value::Array(rows));
    u.harness.answer(Answer::Versions);
    let (_, upgraded) = u.upgrade().await;
    assert_eq!(upgraded["Outcome"], "Upgraded", "{upgraded}");
    assert_eq!(
        u.running_image().await.0,
        "harness/delegate:25.11.87300.minimal"
    );

    let sent: Vec<_> = u
        .harness
        .asked
        .lock()
        .unwrap()
        .iter()
        .map(|(_, k)| k.clone())
        .collect();
    assert!(
        sent.iter().all(|k| k.as_deref() == Some(KEY)),
        "the key went only as x-api-key"
    );
    let log = u.lambda.log();
    assert!(
        log.contains("TRACE") || log.contains("\"level\":\"TRACE\""),
        "the log is at TRACE"
    );
    // The key's secret part, and its id (a key travels whole, JSON-escaped or not).
    let leaked = |text: &str| text.contains("s3cr3tV4lu3") || text.contains("Zk3yUpgrade0Key");
    let results = u.lambda.results();
    let bodies = u.rx.bodies();
    let leaks = log.lines().filter(|l| leaked(l)).count()
        + results.iter().filter(|r| leaked(&r.to_string())).count()
        + bodies.iter().filter(|b| leaked(&b.to_string())).count();
    record_figures(
        "upgrade-key-scan",
        &json!({
            "log lines scanned": log.lines().count().to_string(),
            "invocation results scanned": results.len().to_string(),
            "CloudFormation bodies scanned": bodies.len().to_string(),
            "leaks": leaks.to_string(),
        }),
    );
    assert_eq!(leaks, 0, "the API key is in the log, a result or an answer");
}

#[tokio::test]
async fn a_pinned_delegate_behind_harness_gets_a_warning_and_is_left_alone() {
    let u = Upgrades::new("25.11.87300", "info").await;
    let created = u
        .create(json!({"Image": "harness/delegate:25.10.87100"}))
        .await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let (result, entry) = u.upgrade().await;
    assert_eq!(result["Status"], "SUCCESS", "{result}");
    assert_eq!(entry["Outcome"], "Skipped", "{entry}");
    assert_eq!(entry["RunningVersion"], "25.10.87100");
    assert_eq!(entry["LatestSupportedVersion"], "25.11.87300");
    assert_reason(&entry, &["ImageUpgrade is Off", "pinned"]);
    let warn = u
        .lambda
        .log()
        .lines()
        .find(|l| l.contains("WARN") && l.contains("behind"))
        .map(String::from)
        .expect("a WARN line for the delegate behind");
    assert!(
        warn.contains("25.10.87100") && warn.contains("25.11.87300"),
        "{warn}"
    );
    assert_eq!(u.running_image().await.0, "harness/delegate:25.10.87100");
}

#[tokio::test]
async fn a_create_harness_refuses_fails_with_the_permission_and_creates_nothing() {
    let u = Upgrades::new("25.10.87100", "info").await;
    u.harness.answer(Answer::Status(403));
    let failed = u.create(json!({})).await;
    assert_eq!(failed["Status"], "FAILED", "{failed}");
    let why = failed["Reason"].as_str().unwrap();
    assert!(
        why.contains("ImageUpgrade") && why.contains("core_delegate_edit"),
        "{why}"
    );
    let c = u.clients().await;
    assert!(
        service(&c, &u.w.cluster, SERVICE).await.is_none(),
        "nothing created"
    );
    assert!(active_revisions(&c, &u.family()).await.is_empty());

    let pinned = u
        .create(json!({"Image": "harness/delegate:25.10.87100", "ImageUpgrade": "LatestSupported"}))
        .await;
    assert_eq!(pinned["Status"], "FAILED", "{pinned}");
    let why = pinned["Reason"].as_str().unwrap();
    assert!(
        why.contains("ImageUpgrade: LatestSupported") && why.contains("Image pins"),
        "{why}"
    );
    assert!(active_revisions(&c, &u.family()).await.is_empty());
}

/// The record table or Harness failing while the image is chosen is not a problem with the
/// properties, which a caller would fix, but a failure it retries: a direct request reports
/// `RecordStoreFailed` or `HarnessUnavailable`, naming the call; a stack's Create fails without
/// blaming a property; nothing is created and no record is written. The same requests succeed
/// once both answer.
#[tokio::test]
async fn a_store_or_harness_failure_is_not_blamed_on_the_properties() {
    let refused = Rule {
        operation: "GetItem",
        fault: Fault::Reject("AccessDeniedException", "User is not authorized"),
        times: 2,
    };
    let u = Upgrades::behind("25.10.87100", "info", false, vec![refused]).await;
    let plan = json!({"Action": "Plan", "ResourceProperties": u.props(json!({}))});
    let failed = u.lambda.silent(&u.rx, plan.clone()).await;
    assert_eq!(failed["errorType"], "RecordStoreFailed", "{failed}");
    let why = failed["errorMessage"].as_str().unwrap();
    assert!(
        why.starts_with("the record store: dynamodb:GetItem") && !why.contains("properties"),
        "{why}"
    );

    let create = u.create(json!({})).await;
    assert_eq!(create["Status"], "FAILED", "{create}");
    let why = create["Reason"].as_str().unwrap();
    assert!(
        why.contains("the record store: dynamodb:GetItem") && !why.contains("ImageUpgrade"),
        "{why}"
    );
    let c = u.clients().await;
    assert!(service(&c, &u.w.cluster, SERVICE).await.is_none());
    assert!(active_revisions(&c, &u.family()).await.is_empty());
    let key = DelegateKey::new(&u.w.cluster, SERVICE);
    assert_eq!(c.store.get(&key).await.unwrap().version, 0, "no record");

    // Harness down, and no image of the delegate's own to keep.
    u.harness.answer(Answer::Status(503));
    let failed = u.lambda.silent(&u.rx, plan.clone()).await;
    assert_eq!(failed["errorType"], "HarnessUnavailable", "{failed}");
    let why = failed["errorMessage"].as_str().unwrap();
    assert!(
        why.contains("Harness did not answer (HTTP 503)") && why.contains("retry, or pin Image"),
        "{why}"
    );
    let create = u.create(json!({})).await;
    assert_eq!(create["Status"], "FAILED", "{create}");
    assert!(service(&c, &u.w.cluster, SERVICE).await.is_none());
    // A key Harness refuses is still the properties' (the secret they name).
    u.harness.answer(Answer::Status(401));
    let failed = u.lambda.silent(&u.rx, plan.clone()).await;
    assert_eq!(failed["errorType"], "InvalidProperties", "{failed}");

    u.harness.answer(Answer::Versions);
    let planned = u.lambda.silent(&u.rx, plan).await;
    assert_eq!(
        planned["Image"]["Image"], "harness/delegate:25.10.87100",
        "{planned}"
    );
    let created = u.create(json!({})).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
}

/// Secrets Manager not answering for the API key is not Harness's fault, nor the properties':
/// the request fails as `HarnessUnavailable`, naming Secrets Manager.
#[tokio::test]
async fn secrets_manager_not_answering_for_the_key_is_retried_not_fixed() {
    let down = Rule {
        operation: "GetSecretValue",
        fault: Fault::ServerError,
        times: u32::MAX,
    };
    let u = Upgrades::behind("25.10.87100", "info", false, vec![down]).await;
    let plan = json!({"Action": "Plan", "ResourceProperties": u.props(json!({}))});
    let failed = u.lambda.silent(&u.rx, plan).await;
    assert_eq!(failed["errorType"], "HarnessUnavailable", "{failed}");
    let why = failed["errorMessage"].as_str().unwrap();
    assert!(
        why.starts_with("HarnessApiKeySecretArn")
            && why.contains("Secrets Manager did not answer (HTTP 500):"),
        "{why}"
    );
    assert!(!why.contains("Harness did not answer"), "{why}");
    assert!(
        u.harness.asked.lock().unwrap().is_empty(),
        "Harness was asked without its key"
    );
}

#[tokio::test]
async fn a_version_that_fails_on_one_delegate_is_not_tried_on_the_clusters_others() {
    let u = Upgrades::new("25.10.87100", "info").await;
    let second = "second-delegate";
    ecs_sim::script(&u.w.cluster, second, Script::up());
    let first = u.create(json!({})).await;
    assert_eq!(first["Status"], "SUCCESS", "{first}");
    let other = json!({
        "ServiceName": second,
        "TaskDefinitionFamily": format!("{}-second", u.w.name),
    });
    let mut event = cfn_event("Create", &u.rx.url("second"), &u.props(other), None, None);
    event["LogicalResourceId"] = json!("SecondDelegate");
    let created = u.lambda.request(&u.rx, event).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    // The new version cannot start on either; the first delegate (in name order) tries it.
    for (service, family) in [
        (SERVICE.to_string(), u.family()),
        (second.to_string(), format!("{}-second", u.w.name)),
    ] {
        ecs_sim::script_revision(
            &u.w.cluster,
            &service,
            &format!("{family}:2"),
            Script::of(vec![ecs_sim::pull_error("harness/delegate:25.11.87300")]),
        );
    }
    *u.harness.latest.lock().unwrap() = "25.11.87300".into();
    let result = u.lambda.silent(&u.rx, json!({"Action": "Upgrade"})).await;
    let outcomes: Vec<(String, String)> = result["Delegates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["Delegate"].as_str().unwrap().to_string(),
                d["Outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (
                format!("{}/{SERVICE}", u.w.cluster),
                "RolledBack".to_string()
            ),
            (format!("{}/{second}", u.w.cluster), "Skipped".to_string()),
        ],
        "{result}"
    );
    let skipped = &result["Delegates"][1];
    assert_reason(
        skipped,
        &["25.11.87300 failed on another delegate of this cluster in this run"],
    );
    let c = u.clients().await;
    let s = service(&c, &u.w.cluster, second).await.unwrap();
    assert!(
        s.task_definition().unwrap().ends_with("-second:1"),
        "the other delegate was not touched: {:?}",
        s.task_definition()
    );
}

#[tokio::test]
async fn the_key_goes_only_to_the_stacks_manager_whatever_a_request_names() {
    let u = Upgrades::pinned("25.10.87100", "info", true).await;
    let elsewhere = HarnessApi::start("", ACCOUNT, KEY, "25.10.87100").await;
    let plan = |manager: &str| {
        let props = u.props(json!({"ManagerHostAndPort": manager}));
        json!({"Action": "Plan", "ResourceProperties": props})
    };
    let refused = u.lambda.silent(&u.rx, plan(&elsewhere.manager)).await;
    let said = refused.to_string();
    assert!(
        said.contains("sends its stack's API key") && said.contains(&u.harness.manager),
        "{refused}"
    );
    assert!(
        elsewhere.asked.lock().unwrap().is_empty(),
        "the key went elsewhere"
    );
    let other_secret = put_secret(&u.region, &unique("another-key"), KEY).await;
    let mut props = u.props(json!({}));
    props["HarnessApiKeySecretArn"] = json!(other_secret);
    let refused = u
        .lambda
        .silent(
            &u.rx,
            json!({"Action": "Plan", "ResourceProperties": props}),
        )
        .await;
    assert!(
        refused.to_string().contains("sends its stack's API key"),
        "{refused}"
    );
    // The stack's own key and Manager work (a trailing slash is the same Manager).
    let planned = u
        .lambda
        .silent(&u.rx, plan(&format!("{}/", u.harness.manager)))
        .await;
    assert_eq!(
        planned["Image"]["Image"], "harness/delegate:25.10.87100",
        "{planned}"
    );
    assert_eq!(u.harness.asked.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_failure_that_is_not_the_versions_own_rolls_back_without_holding_the_version_back() {
    let u = Upgrades::new("25.10.87100", "info").await;
    let created = u.create(json!({})).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let family = u.family();
    ecs_sim::script_revision(
        &u.w.cluster,
        SERVICE,
        &format!("{family}:2"),
        Script::of(vec![ecs_sim::Fate::Unplaceable(ecs_sim::NO_CAPACITY)]),
    );
    *u.harness.latest.lock().unwrap() = "25.11.87300".into();
    let (_, rolled) = u.upgrade().await;
    assert_eq!(rolled["Outcome"], "RolledBack", "{rolled}");
    assert_reason(
        &rolled,
        &[
            "ECS cannot start the delegate's task",
            "not 25.11.87300's own",
            "tries it again",
        ],
    );
    let (td, _, failed) = u.committed().await;
    assert_eq!(td, format!("{family}:1"));
    assert_eq!(
        failed, None,
        "a capacity problem is not the version's fault"
    );
    let (_, upgraded) = u.upgrade().await;
    assert_eq!(upgraded["Outcome"], "Upgraded", "tried again: {upgraded}");
}
