//! Installed means running: stack requests through the built binary, as Lambda runs it (the
//! Runtime API, a deadline per invocation, its asynchronous invocations of itself delivered),
//! against the ECS simulator (tests/support/ecs_sim.rs), which plays what ECS does with the
//! delegate's tasks. Each scenario checks the one answer CloudFormation received: SUCCESS once
//! the delegate is up, or FAILED fast with ECS's own words and the one thing to check.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::ecs_sim::{self, Fate, Script, NO_CAPACITY};
use support::*;

const SERVICE: &str = "harness-delegate";

fn reason(body: &Value) -> &str {
    body["Reason"].as_str().unwrap_or_default()
}

/// A stack's Create of the delegate in `w`, with `extra` properties.
fn create(rx: &Receiver, w: &World, extra: Value) -> Value {
    let mut props = w.fargate_props();
    for (k, v) in extra.as_object().unwrap() {
        props[k] = v.clone();
    }
    cfn_event("Create", &rx.url("create"), &props, None, None)
}

/// A scenario: a world whose delegate's tasks go as `script` says, and the binary in Lambda
/// with invocations of `timeout`.
struct Scenario {
    w: World,
    proxy: Proxy,
    region: String,
    lambda: Lambda,
    rx: Receiver,
}

impl Scenario {
    async fn new(script: Script, timeout: Duration) -> Scenario {
        Self::with_rules(script, timeout, vec![]).await
    }

    /// A scenario whose AWS also plays `rules`.
    async fn with_rules(script: Script, timeout: Duration, rules: Vec<Rule>) -> Scenario {
        Self::logged(script, timeout, rules, "info").await
    }

    /// A scenario whose function logs at `level`.
    async fn logged(script: Script, timeout: Duration, rules: Vec<Rule>, level: &str) -> Scenario {
        let region = fresh_region();
        let c = clients_at(&aws(), region).await;
        let w = seed(&c, false).await;
        ecs_sim::script(&w.cluster, SERVICE, script);
        let proxy = Proxy::start(rules).await;
        let region = region.to_string();
        let lambda = Lambda::start(&proxy, &region, timeout, level).await;
        Scenario {
            w,
            proxy,
            region,
            lambda,
            rx: Receiver::start(0).await,
        }
    }

    async fn create(&self, extra: Value) -> Value {
        self.lambda
            .request(&self.rx, create(&self.rx, &self.w, extra))
            .await
    }

    /// CloudFormation's rollback of a failed Create: a Delete of the id its answer gave.
    async fn roll_back(&self, failed: &Value) {
        let physical = failed["PhysicalResourceId"].as_str().unwrap();
        let props = failed_props(failed, &self.w);
        let deleted = self
            .lambda
            .request(
                &self.rx,
                cfn_event(
                    "Delete",
                    &self.rx.url("rollback"),
                    &props,
                    Some(physical),
                    None,
                ),
            )
            .await;
        assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
        assert_eq!(self.service_status().await.as_deref(), Some("INACTIVE"));
    }

    async fn service_status(&self) -> Option<String> {
        let c = clients_at(&aws(), &self.region).await;
        service(&c, &self.w.cluster, SERVICE)
            .await
            .and_then(|s| s.status().map(String::from))
    }
}

fn failed_props(_failed: &Value, w: &World) -> Value {
    w.fargate_props()
}

/// The case's row in docs/reliability.md: the answer CloudFormation got and from how many
/// invocations, with the start of its reason.
fn record(name: &str, scenario: &str, body: &Value, lambda: &Lambda) {
    let said = match body["Status"].as_str() {
        Some("SUCCESS") => format!(
            "RunningCount {}",
            body["Data"]["RunningCount"].as_str().unwrap_or("?")
        ),
        _ => model_within(reason(body), 160),
    };
    record_figures(
        &format!("readiness-{name}"),
        &json!([{
            "scenario": scenario,
            "answer": body["Status"].as_str().unwrap_or_default(),
            "invocations": lambda.results().len().to_string(),
            "said": said.replace('|', "/"),
        }]),
    );
}

/// The first `max` characters of `text`, marked when cut.
fn model_within(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

fn assert_says(body: &Value, words: &[&str]) {
    let why = reason(body);
    for w in words {
        assert!(why.contains(w), "{w:?} not in: {why}");
    }
}

#[tokio::test]
async fn a_create_answers_once_the_delegate_is_healthy() {
    let s = Scenario::new(
        Script::of(vec![Fate::Up { ticks: 4 }]),
        Duration::from_secs(60),
    )
    .await;
    let body = s.create(json!({})).await;
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    assert_eq!(body["Data"]["RunningCount"], "1", "{body}");
    let log = s.lambda.log();
    record(
        "healthy",
        "tasks pending, then running, then healthy",
        &body,
        &s.lambda,
    );
    for said in [
        "waiting for the delegate: 0/1 running, 0/1 healthy",
        "waiting for the delegate: 1/1 running, 0/1 healthy",
        "the delegate is ready",
    ] {
        assert!(log.contains(said), "{said:?} not in the log:\n{log}");
    }
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_the_create_and_its_rollback_removes_it() {
    let image = "harness/delegate:26.99.1";
    let s = Scenario::new(
        Script::of(vec![ecs_sim::pull_error(image)]),
        Duration::from_secs(60),
    )
    .await;
    let body = s.create(json!({"Image": image})).await;
    assert_eq!(body["Status"], "FAILED", "{body}");
    assert_says(
        &body,
        &[
            "the delegate's tasks keep stopping (2 in a row)",
            "CannotPullContainerError",
            "docker.io/harness/delegate:26.99.1: not found (×2)",
            "Check: that the image harness/delegate:26.99.1 exists",
        ],
    );
    record(
        "image",
        "the image cannot be pulled (CannotPullContainerError)",
        &body,
        &s.lambda,
    );
    s.roll_back(&body).await;
}

#[tokio::test]
async fn a_secret_the_execution_role_cannot_read_fails_naming_both() {
    let secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:harness/token";
    let s = Scenario::new(
        Script::of(vec![ecs_sim::secret_error(secret)]),
        Duration::from_secs(60),
    )
    .await;
    let body = s.create(json!({})).await;
    assert_eq!(body["Status"], "FAILED", "{body}");
    let role = s.w.exec_role.clone();
    assert_says(
        &body,
        &[
            "ResourceInitializationError: unable to pull secrets",
            &format!("Check: that the execution role {role} can read the secret {secret}"),
        ],
    );
    record(
        "secret",
        "the execution role cannot read the token's secret",
        &body,
        &s.lambda,
    );
    s.roll_back(&body).await;
}

#[tokio::test]
async fn a_delegate_that_never_reports_healthy_fails_saying_it_did_not_reach_harness() {
    let s = Scenario::new(
        Script::of(vec![Fate::Unhealthy { ticks: 3 }]),
        Duration::from_secs(60),
    )
    .await;
    let body = s.create(json!({})).await;
    assert_eq!(body["Status"], "FAILED", "{body}");
    assert_says(
        &body,
        &[
            "Task failed container health checks (×2)",
            "Check: that the delegate can reach Harness at https://app.harness.io",
        ],
    );
    record(
        "unhealthy",
        "the health check never passes (tasks replaced)",
        &body,
        &s.lambda,
    );
}

#[tokio::test]
async fn no_capacity_fails_with_the_placement_event() {
    let region = fresh_region();
    let c = clients_at(&aws(), region).await;
    let w = seed(&c, true).await;
    ecs_sim::script(
        &w.cluster,
        SERVICE,
        Script::of(vec![Fate::Unplaceable(NO_CAPACITY)]),
    );
    let proxy = Proxy::start(vec![]).await;
    let lambda = Lambda::start(&proxy, region, Duration::from_secs(60), "info").await;
    let rx = Receiver::start(0).await;
    let event = cfn_event("Create", &rx.url("create"), &w.ec2_props(), None, None);
    let body = lambda.request(&rx, event).await;
    assert_eq!(body["Status"], "FAILED", "{body}");
    assert_says(
        &body,
        &[
            "ECS cannot start the delegate's task",
            "unable to place a task because no container instance met all of its requirements",
            "Check: the cluster's capacity",
        ],
    );
    record(
        "placement",
        "no container instance can fit the task",
        &body,
        &lambda,
    );
}

#[tokio::test]
async fn the_circuit_breaker_failing_the_deployment_fails_the_create() {
    let script = Script {
        circuit_breaker: Some(1),
        ..Script::of(vec![ecs_sim::pull_error("harness/delegate:latest")])
    };
    let s = Scenario::new(script, Duration::from_secs(60)).await;
    let body = s.create(json!({})).await;
    assert_eq!(body["Status"], "FAILED", "{body}");
    assert_says(
        &body,
        &[
            "ECS failed the deployment: ECS deployment circuit breaker",
            "CannotPullContainerError",
        ],
    );
    record(
        "circuit-breaker",
        "the deployment circuit breaker fails the deployment",
        &body,
        &s.lambda,
    );
}

#[tokio::test]
async fn a_first_task_failing_and_the_second_coming_up_is_ready() {
    let script = Script::of(vec![
        ecs_sim::pull_error("harness/delegate:latest"),
        Fate::Up { ticks: 2 },
    ]);
    let s = Scenario::new(script, Duration::from_secs(60)).await;
    let body = s.create(json!({})).await;
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    assert_eq!(body["Data"]["RunningCount"], "1");
    record(
        "first-fails",
        "the first task cannot pull its image, the second comes up",
        &body,
        &s.lambda,
    );
}

#[tokio::test]
async fn a_wait_longer_than_an_invocation_goes_on_in_another_and_answers_once() {
    // Each invocation may wait a few seconds; the delegate needs many looks. At TRACE, as a
    // user chasing a problem would run it: the ResponseURL travels in the payload.
    let s = Scenario::logged(
        Script::of(vec![Fate::Up { ticks: 40 }]),
        Duration::from_secs(30),
        vec![],
        "trace",
    )
    .await;
    let body = s.create(json!({})).await;
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    assert_eq!(body["Data"]["RunningCount"], "1");
    let invoked = s.proxy.invocations();
    assert!(!invoked.is_empty(), "the wait was handed on");
    record(
        "across-invocations",
        "the delegate takes longer than an invocation (30 s timeout)",
        &body,
        &s.lambda,
    );
    let results = s.lambda.results();
    assert_eq!(results.len(), 1 + invoked.len());
    assert!(
        results[..results.len() - 1]
            .iter()
            .all(|r| r["Status"] == "WAITING"),
        "{results:?}"
    );
    // The continuation is the function's own: it names the operation, not the wait's state.
    assert_eq!(invoked[0]["HarnessDelegateBootstrap"], "ContinueWait");
    assert!(invoked[0].get("Wait").is_none());
    let url = s.rx.url("create");
    let log = s.lambda.log();
    assert!(log.contains("TRACE"), "not at TRACE");
    assert!(!log.contains(&url), "the ResponseURL reached the log");
    assert!(
        !log.contains("cfn-responses"),
        "the ResponseURL's path reached the log"
    );

    // Lambda delivers the same continuation again: the request was answered, nothing happens.
    s.proxy.reset_counts();
    let again = s.lambda.silent(&s.rx, invoked[0].clone()).await;
    assert_eq!(again["Status"], "WAITING", "{again}");
    assert!(s.proxy.writes().is_empty(), "{:?}", s.proxy.writes());

    // Anyone may invoke the function with a continuation of their own making: it names no
    // operation the record holds, so it stands down, answering FAILED and writing nothing.
    let mut forged = invoked[0].clone();
    forged["Operation"] = json!("create-0000-0");
    forged["Request"]["RequestId"] = json!("forged-request");
    forged["Request"]["ResponseURL"] = json!(s.rx.url("forged"));
    forged["Request"]["ResourceProperties"]["Image"] = json!("attacker/image:1");
    let stood_down = s.lambda.request(&s.rx, forged).await;
    assert_eq!(stood_down["Status"], "FAILED", "{stood_down}");
    assert_says(&stood_down, &["nothing more was changed"]);
    assert!(s.proxy.writes().is_empty(), "{:?}", s.proxy.writes());
    let c = clients_at(&aws(), &s.region).await;
    let svc = service(&c, &s.w.cluster, SERVICE).await.unwrap();
    let running = revision(&c, svc.task_definition().unwrap()).await;
    assert_eq!(
        running.container_definitions()[0].image(),
        Some("harness/delegate:latest")
    );
}

/// A Create whose delegate is not ready within an invocation, every Invoke of the function
/// going as `invoke` says: the scenario and the FAILED answer, which says the wait could not go
/// on.
async fn handed_on_through(invoke: Rule) -> (Scenario, Value) {
    let s = Scenario::with_rules(
        Script::of(vec![Fate::Up { ticks: 400 }]),
        Duration::from_secs(30),
        vec![invoke],
    )
    .await;
    let body = s.create(json!({})).await;
    assert_eq!(body["Status"], "FAILED", "{body}");
    assert_says(&body, &["the wait could not go on in a new invocation"]);
    (s, body)
}

#[tokio::test]
async fn a_self_invocation_lambda_refuses_fails_the_request_with_the_reason() {
    let refused = Rule {
        operation: "Invoke",
        fault: Fault::Reject(
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/stack-BootstrapFunctionRole-1A2B/bootstrap is not authorized to perform: lambda:InvokeFunction",
        ),
        times: u32::MAX,
    };
    let (s, body) = handed_on_through(refused).await;
    assert_says(&body, &["AccessDeniedException", "lambda:InvokeFunction"]);
    record(
        "invoke-refused",
        "Lambda refuses the function's invocation of itself",
        &body,
        &s.lambda,
    );
    // Nothing waits on: the record keeps nothing of the Create, and its rollback removes it.
    s.roll_back(&body).await;
}

#[tokio::test]
async fn a_self_invocation_that_fails_once_is_tried_again() {
    let once = Rule {
        operation: "Invoke",
        fault: Fault::ServerError,
        times: 1,
    };
    let s = Scenario::with_rules(
        Script::of(vec![Fate::Up { ticks: 40 }]),
        Duration::from_secs(30),
        vec![once],
    )
    .await;
    let body = s.create(json!({})).await;
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    assert_eq!(s.proxy.injected("Invoke"), 1);
}

#[tokio::test]
async fn a_failed_update_is_rolled_back_to_the_old_revision_which_becomes_ready() {
    let s = Scenario::new(Script::up(), Duration::from_secs(60)).await;
    let created = s.create(json!({"Image": "harness/delegate:26.01.1"})).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let physical = created["PhysicalResourceId"].as_str().unwrap();
    let old_revision = created["Data"]["TaskDefinitionArn"]
        .as_str()
        .unwrap()
        .to_string();
    let mut old = s.w.fargate_props();
    old["Image"] = json!("harness/delegate:26.01.1");
    let mut new = old.clone();
    new["Image"] = json!("harness/delegate:26.99.1");

    ecs_sim::script(
        &s.w.cluster,
        SERVICE,
        Script::of(vec![ecs_sim::pull_error("harness/delegate:26.99.1")]),
    );
    let update = cfn_event(
        "Update",
        &s.rx.url("update"),
        &new,
        Some(physical),
        Some(&old),
    );
    let failed = s.lambda.request(&s.rx, update).await;
    assert_eq!(failed["Status"], "FAILED", "{failed}");
    assert_says(
        &failed,
        &[
            "CannotPullContainerError",
            "harness/delegate:26.99.1 exists",
        ],
    );

    // CloudFormation rolls back with the old properties; the old image comes up again.
    ecs_sim::script(
        &s.w.cluster,
        SERVICE,
        Script::of(vec![Fate::Up { ticks: 2 }]),
    );
    let rollback = cfn_event(
        "Update",
        &s.rx.url("rollback"),
        &old,
        Some(physical),
        Some(&new),
    );
    let back = s.lambda.request(&s.rx, rollback).await;
    assert_eq!(back["Status"], "SUCCESS", "{back}");
    record("update-rolled-back", "an Update to an image that cannot be pulled, then CloudFormation's rollback (the rollback's answer)", &back, &s.lambda);
    assert_eq!(back["Data"]["RunningCount"], "1");
    let c = clients_at(&aws(), &s.region).await;
    let svc = service(&c, &s.w.cluster, SERVICE).await.unwrap();
    let running = revision(&c, svc.task_definition().unwrap()).await;
    assert_eq!(
        running.container_definitions()[0].image(),
        Some("harness/delegate:26.01.1")
    );
    // The old configuration, in a revision of the same family: ECS reuses nothing once the
    // service ran a newer one, and the plan reuses only the service's or the latest revision.
    let old_doc = revision(&c, &old_revision).await;
    assert_eq!(running.family(), old_doc.family());
    assert_eq!(
        running.container_definitions(),
        old_doc.container_definitions()
    );
}

/// A continuation acts only on the record as the function left it: when the record shows that
/// a newer request took the delegate over, or that it was deleted, while the wait was queued,
/// the continuation answers FAILED and writes nothing.
#[tokio::test]
async fn a_continuation_stands_down_when_the_record_moved_on() {
    for (what, says) in [
        (
            "taken over",
            "a newer request took the delegate over while this one waited",
        ),
        (
            "deleted",
            "the delegate was deleted while this request waited",
        ),
    ] {
        let s = Scenario::new(
            Script::of(vec![Fate::Up { ticks: 400 }]),
            Duration::from_secs(30),
        )
        .await;
        s.lambda
            .hold
            .store(true, std::sync::atomic::Ordering::SeqCst);
        s.lambda.send(create(&s.rx, &s.w, json!({})));
        while s.proxy.invocations().is_empty() || !s.lambda.all_ended() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(s.lambda.results()[0]["Status"], "WAITING", "{what}");
        assert_eq!(s.rx.count(), 0, "{what}: not answered yet");

        // Meanwhile another invocation of the function moved the record on.
        let c = clients_at(&aws(), &s.region).await;
        let key = harness_ecs_delegate_bootstrap::model::DelegateKey::new(&s.w.cluster, SERVICE);
        let item = c.store.get(&key).await.unwrap();
        let moved = match what {
            "taken over" => item.begin("update-newer-request-0", u64::MAX),
            _ => item.tombstone(0, None),
        };
        c.store.put(&moved).await.unwrap();

        s.proxy.reset_counts();
        s.lambda
            .hold
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while s.rx.count() == 0 || !s.lambda.all_ended() {
            assert!(std::time::Instant::now() < deadline, "{what}: no answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let body = s.rx.bodies().pop().unwrap();
        assert_eq!(body["Status"], "FAILED", "{what}: {body}");
        assert_says(&body, &[says, "nothing more was changed"]);
        assert!(
            s.proxy.writes().is_empty(),
            "{what}: {:?}",
            s.proxy.writes()
        );
        assert_eq!(
            c.store.get(&key).await.unwrap(),
            moved,
            "{what}: the record as it was"
        );
    }
}

/// Lambda may deliver CloudFormation's request again while its wait goes on in a
/// continuation: the second delivery does nothing and answers nothing, and the continuation
/// answers, once.
#[tokio::test]
async fn a_request_delivered_again_while_it_waits_is_answered_once() {
    let s = Scenario::new(
        Script::of(vec![Fate::Up { ticks: 60 }]),
        Duration::from_secs(30),
    )
    .await;
    s.lambda
        .hold
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let event = create(&s.rx, &s.w, json!({}));
    s.lambda.send(event.clone());
    while s.proxy.invocations().is_empty() || !s.lambda.all_ended() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.proxy.reset_counts();
    let again = s.lambda.silent(&s.rx, event).await;
    assert_eq!(again["Status"], "WAITING", "{again}");
    assert!(s.proxy.writes().is_empty(), "{:?}", s.proxy.writes());
    s.lambda
        .hold
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while s.rx.count() == 0 || !s.lambda.all_ended() {
        assert!(std::time::Instant::now() < deadline, "no answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(s.rx.count(), 1, "one answer");
    assert_eq!(s.rx.bodies()[0]["Status"], "SUCCESS", "{:?}", s.rx.bodies());
}

/// An Invoke that Lambda is slow to take: the function gives up on it in time and answers
/// FAILED, and when Lambda does start the continuation after all, the record already holds
/// that answer, so the continuation stays silent. CloudFormation gets one answer.
#[tokio::test]
async fn a_self_invocation_lambda_takes_too_late_is_answered_failed_once() {
    let slow = Rule {
        operation: "Invoke",
        fault: Fault::Delay(Duration::from_secs(3)),
        times: u32::MAX,
    };
    let (s, body) = handed_on_through(slow).await;
    assert_says(&body, &["did not accept the Invoke"]);
    let started = s.proxy.invocations().len();
    assert!(started >= 1, "Lambda took the Invoke in the end");
    let results = s.lambda.results();
    assert_eq!(results.len(), 1 + started, "{results:?}");
    assert!(
        results[1..].iter().all(|r| r["Status"] == "WAITING"),
        "the late continuations stayed silent: {results:?}"
    );
}
