//! Reliability under AWS faults, as a matrix: every AWS operation a stack Create, Update and
//! Delete or a heal calls gets each kind of fault in turn (transient: the run must still
//! converge; persistent: CloudFormation must hear FAILED naming the operation, in time, and a
//! following Delete must leave nothing behind), and the same request is delivered twice, in
//! sequence and at the same time. The figures go to docs/reliability.md.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use harness_ecs_delegate_bootstrap::Clients;
use serde_json::{json, Value};
use support::*;

/// Runs at the same time in each matrix: moto is one Python process on 2 cores.
const PARALLEL: usize = 4;
/// The SDK attempt timeout the matrix runs with, and a slow answer that overruns it.
const ATTEMPT: Duration = Duration::from_secs(3);
const SLOW: Duration = Duration::from_millis(3500);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Flow {
    Create,
    Update,
    Delete,
    Heal,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Throttle,
    ServerError,
    Slow,
    Reset,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Throttle, Kind::ServerError, Kind::Slow, Kind::Reset];

    fn fault(self) -> Fault {
        match self {
            Kind::Throttle => Fault::Throttle,
            Kind::ServerError => Fault::ServerError,
            Kind::Slow => Fault::SlowAnswer(SLOW),
            Kind::Reset => Fault::Reset,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Throttle => "throttling",
            Kind::ServerError => "HTTP 500",
            Kind::Slow => "answer slower than the attempt timeout",
            Kind::Reset => "connection reset",
        }
    }
}

/// A delegate ready for `flow`: installed already for all but Create, its service deleted out
/// of band for Heal (the repair heal must make).
struct Setup {
    direct: Clients,
    w: World,
    props: Value,
    physical: Option<String>,
}

impl Setup {
    async fn new(flow: Flow) -> Setup {
        let direct = clients().await;
        let w = seed(&direct, false).await;
        let props = w.fargate_props();
        let mut physical = None;
        if flow != Flow::Create {
            let rx = Receiver::start(0).await;
            let body = create_ok(&direct, &rx, "setup", &props).await;
            physical = Some(body["PhysicalResourceId"].as_str().unwrap().to_string());
        }
        if flow == Flow::Heal {
            delete_service_out_of_band(&direct, &w.cluster).await;
        }
        Setup {
            direct,
            w,
            props,
            physical,
        }
    }

    fn family(&self) -> String {
        format!("{}-family", self.w.name)
    }

    /// The event of `flow` for this delegate.
    fn event(&self, flow: Flow, url: &str) -> Value {
        let physical = self.physical.as_deref();
        match flow {
            Flow::Create => cfn_event("Create", url, &self.props, None, None),
            Flow::Update => cfn_event(
                "Update",
                url,
                &updated(&self.props),
                physical,
                Some(&self.props),
            ),
            Flow::Delete => cfn_event("Delete", url, &self.props, physical, None),
            Flow::Heal => json!({"Action": "Heal", "Targets": [
                {"ClusterName": self.w.cluster, "ServiceName": "harness-delegate"}]}),
        }
    }

    /// Run `flow` with `clients`: the CloudFormation answers that arrived (a heal's report for
    /// Heal), and how long it took.
    async fn run(
        &self,
        flow: Flow,
        clients: Clients,
        deadline_secs: u64,
    ) -> (Vec<Value>, Duration) {
        let rx = Receiver::start(0).await;
        let started = Instant::now();
        let out = handler(clients)
            .handle(self.event(flow, &rx.url("run")), deadline_in(deadline_secs))
            .await;
        let took = started.elapsed();
        if flow == Flow::Heal {
            return (vec![out.expect("heal answers")], took);
        }
        (rx.bodies(), took)
    }

    /// What is wrong with the end state `flow` should have reached, if anything.
    async fn check(&self, flow: Flow) -> Result<(), String> {
        let c = &self.direct;
        let services = active_services(c, &self.w.cluster).await;
        let revisions = active_revisions(c, &self.family()).await;
        let groups = groups_named(c, &self.w.vpc, "harness-delegate-delegate").await;
        let expect = |what: &str, got: usize, want: usize| {
            (got == want)
                .then_some(())
                .ok_or(format!("{got} {what}, not {want}"))
        };
        if flow == Flow::Delete {
            expect("ACTIVE services", services.len(), 0)?;
            expect("ACTIVE revisions", revisions.len(), 0)?;
            return expect("security groups", groups.len(), 0);
        }
        expect("ACTIVE services", services.len(), 1)?;
        expect("security groups", groups.len(), 1)?;
        let s = service(c, &self.w.cluster, "harness-delegate")
            .await
            .unwrap();
        match flow {
            // The old revision stays for a rollback; one new one, which the service runs.
            Flow::Update => {
                expect("ACTIVE revisions", revisions.len(), 2)?;
                expect("desired count", s.desired_count() as usize, 2)?;
                if s.task_definition() != revisions.last().map(String::as_str) {
                    return Err(format!(
                        "the service runs {:?}, not the new revision",
                        s.task_definition()
                    ));
                }
                Ok(())
            }
            _ => {
                expect("ACTIVE revisions", revisions.len(), 1)?;
                expect("desired count", s.desired_count() as usize, 1)
            }
        }
    }
}

/// The Update every Update run makes: two tasks, and a rename that needs a new revision.
fn updated(props: &Value) -> Value {
    let mut p = props.clone();
    p["DesiredCount"] = json!("2");
    p["DelegateName"] = json!("renamed-delegate");
    p
}

async fn active_services(c: &Clients, cluster: &str) -> Vec<String> {
    let out = c.ecs.list_services().cluster(cluster).send().await.unwrap();
    let arns = out.service_arns();
    if arns.is_empty() {
        return vec![];
    }
    let d = c
        .ecs
        .describe_services()
        .cluster(cluster)
        .set_services(Some(arns.to_vec()))
        .send()
        .await
        .unwrap();
    d.services()
        .iter()
        .filter(|s| s.status() == Some("ACTIVE"))
        .map(|s| s.service_arn().unwrap_or_default().to_string())
        .collect()
}

/// Did the run answer as a converged one must: CloudFormation one SUCCESS, heal Repaired.
fn succeeded(flow: Flow, answers: &[Value]) -> Result<(), String> {
    match (flow, answers) {
        (Flow::Heal, [report]) => {
            let outcome = &report["Delegates"][0]["Outcome"];
            (report["Status"] == "SUCCESS" && outcome == "Repaired")
                .then_some(())
                .ok_or(format!("heal: {report}"))
        }
        (_, [body]) if body["Status"] == "SUCCESS" => Ok(()),
        _ => Err(format!("answers: {answers:?}")),
    }
}

/// The operations `flow` calls when nothing fails, as the proxy sees them.
async fn operations_of(flow: Flow) -> Vec<String> {
    let setup = Setup::new(flow).await;
    let proxy = Proxy::start(vec![]).await;
    let (answers, _) = setup.run(flow, proxy.clients().await, 120).await;
    succeeded(flow, &answers).unwrap();
    setup.check(flow).await.unwrap();
    proxy.operations()
}

fn leak(op: &str) -> &'static str {
    Box::leak(op.to_string().into_boxed_str())
}

struct Trial {
    op: String,
    kind: Kind,
    injected: u32,
    result: Result<(), String>,
}

/// The trials that did not end as they must, each with its operation and fault.
fn failures(trials: &[Trial]) -> Vec<String> {
    trials
        .iter()
        .filter_map(|t| {
            t.result
                .as_ref()
                .err()
                .map(|e| format!("{} with {}: {e}", t.op, t.kind.name()))
        })
        .collect()
}

/// Each operation of `flow`, with each kind of fault on its first call: the run must converge.
async fn transient_matrix(flow: Flow) {
    let ops = operations_of(flow).await;
    let cases: Vec<(String, Kind)> = ops
        .iter()
        .flat_map(|op| Kind::ALL.map(|k| (op.clone(), k)))
        .collect();
    let trials: Vec<Trial> = futures::stream::iter(cases)
        .map(|(op, kind)| async move {
            let setup = Setup::new(flow).await;
            let proxy = Proxy::start(vec![Rule {
                operation: leak(&op),
                fault: kind.fault(),
                times: 1,
            }])
            .await;
            let clients = clients_with_attempt_timeout(&proxy.endpoint, "us-east-1", ATTEMPT).await;
            let (answers, _) = setup.run(flow, clients, 120).await;
            let result = match succeeded(flow, &answers) {
                Ok(()) => setup.check(flow).await,
                Err(e) => Err(e),
            };
            Trial {
                injected: proxy.injected(&op),
                op,
                kind,
                result,
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;

    let failures = failures(&trials);
    let not_injected: Vec<String> = trials
        .iter()
        .filter(|t| t.injected == 0)
        .map(|t| format!("{} ({})", t.op, t.kind.name()))
        .collect();
    let mut per_kind = BTreeMap::new();
    for kind in Kind::ALL {
        let of: Vec<&Trial> = trials.iter().filter(|t| t.kind == kind).collect();
        per_kind.insert(
            kind.name(),
            json!({
                "runs": of.len(),
                "faults injected": of.iter().map(|t| t.injected).sum::<u32>(),
                "converged": of.iter().filter(|t| t.result.is_ok()).count(),
            }),
        );
    }
    record_figures(
        &format!("transient-{flow:?}").to_lowercase(),
        &json!({"flow": format!("{flow:?}"), "operations": ops, "per kind": per_kind}),
    );
    // Both lists in one message: a run that never reached its faulted operation failed
    // earlier, and its failure says where.
    assert!(
        not_injected.is_empty() && failures.is_empty(),
        "faults never injected (the operation was not called): {not_injected:?}\n\
         did not converge:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_on_every_create_operation_still_converge() {
    transient_matrix(Flow::Create).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_on_every_update_operation_still_converge() {
    transient_matrix(Flow::Update).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_on_every_delete_operation_still_converge() {
    transient_matrix(Flow::Delete).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_on_every_heal_operation_still_converge() {
    transient_matrix(Flow::Heal).await;
}

/// Each operation of `flow` failing on every call: FAILED, naming the operation, well before
/// the deadline; and a Delete afterwards leaves nothing.
async fn persistent_matrix(flow: Flow) {
    // Short, so that "before the deadline" means something: the function answers FAILED
    // 8 s before it, and retrying a persistent fault to the end must fit in what is left.
    const DEADLINE: u64 = 30;
    let ops = operations_of(flow).await;
    let kinds = [Kind::ServerError, Kind::Throttle, Kind::Reset];
    let cases: Vec<(usize, String)> = ops.iter().cloned().enumerate().collect();
    let trials: Vec<Trial> = futures::stream::iter(cases)
        .map(|(i, op)| async move {
            let kind = kinds[i % kinds.len()];
            let setup = Setup::new(flow).await;
            let proxy = Proxy::start(vec![Rule {
                operation: leak(&op),
                fault: kind.fault(),
                times: u32::MAX,
            }])
            .await;
            let (answers, took) = setup.run(flow, proxy.clients().await, DEADLINE).await;
            let result = (|| {
                let [body] = answers.as_slice() else {
                    return Err(format!("answers: {answers:?}"));
                };
                let reason = body["Reason"].as_str().unwrap_or_default();
                if body["Status"] != "FAILED" || !reason.contains(&format!(":{op}:")) {
                    return Err(format!("not FAILED naming {op}: {body}"));
                }
                if took >= Duration::from_secs(DEADLINE) {
                    return Err(format!("answered after the deadline: {took:?}"));
                }
                Ok(body["PhysicalResourceId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string())
            })();
            let result = match result {
                Ok(physical) => clean_up(&setup, &physical).await,
                Err(e) => Err(e),
            };
            Trial {
                injected: proxy.injected(&op),
                op,
                kind,
                result,
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let failures = failures(&trials);
    record_figures(
        &format!("persistent-{flow:?}").to_lowercase(),
        &json!({
            "flow": format!("{flow:?}"),
            "operations": ops.len(),
            "faults injected": trials.iter().map(|t| t.injected).sum::<u32>(),
            "failed in time, naming the operation, and cleaned up by a Delete":
                trials.iter().filter(|t| t.result.is_ok()).count(),
        }),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The Delete CloudFormation sends after a failure, without faults: it must succeed and leave
/// nothing of the delegate.
async fn clean_up(setup: &Setup, physical: &str) -> Result<(), String> {
    let rx = Receiver::start(0).await;
    let event = cfn_event(
        "Delete",
        &rx.url("cleanup"),
        &setup.props,
        Some(physical),
        None,
    );
    handler(setup.direct.clone())
        .handle(event, deadline_in(120))
        .await
        .map_err(|e| e.to_string())?;
    let bodies = rx.bodies();
    if bodies.len() != 1 || bodies[0]["Status"] != "SUCCESS" {
        return Err(format!("the Delete after it: {bodies:?}"));
    }
    setup
        .check(Flow::Delete)
        .await
        .map_err(|e| format!("after the Delete: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_faults_in_a_create_fail_in_time_naming_the_operation() {
    persistent_matrix(Flow::Create).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_faults_in_an_update_fail_in_time_naming_the_operation() {
    persistent_matrix(Flow::Update).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_faults_in_a_delete_fail_in_time_naming_the_operation() {
    persistent_matrix(Flow::Delete).await;
}

/// The same request delivered twice (Lambda's retry of an async invocation), one after the
/// other: both answered SUCCESS with the same physical id, and nothing doubled.
#[tokio::test]
async fn a_request_delivered_twice_in_sequence_is_answered_the_same() {
    let mut tried = 0;
    for flow in [Flow::Create, Flow::Update, Flow::Delete] {
        let setup = Setup::new(flow).await;
        let rx = Receiver::start(0).await;
        let event = setup.event(flow, &rx.url("twice"));
        for _ in 0..2 {
            handler(setup.direct.clone())
                .handle(event.clone(), deadline_in(120))
                .await
                .unwrap();
        }
        let bodies = rx.bodies();
        assert_eq!(bodies.len(), 2, "{flow:?}: {bodies:?}");
        for b in &bodies {
            assert_eq!(b["Status"], "SUCCESS", "{flow:?}: {b}");
        }
        assert_eq!(
            bodies[0]["PhysicalResourceId"], bodies[1]["PhysicalResourceId"],
            "{flow:?}"
        );
        setup
            .check(flow)
            .await
            .unwrap_or_else(|e| panic!("{flow:?}: {e}"));
        tried += 1;
    }
    record_figures(
        "replayed-in-sequence",
        &json!({"requests delivered twice": tried}),
    );
}

/// The same request delivered twice at the same time (two instances of the function:
/// concurrency is not reserved). The first write of each kind is held a second so that, without
/// the lease, both runs would find nothing done and both write (AWS refuses a second
/// CreateService as "not idempotent", which moto would accept, so the proxy does). With it, the
/// second delivery waits for the first and gets the same answer without acting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_delivered_twice_at_the_same_time_converges_once() {
    let mut tried = 0;
    for flow in [Flow::Create, Flow::Update, Flow::Delete] {
        let setup = Setup::new(flow).await;
        // The first run's first write of each kind is held a second, so that the other run has
        // finished looking (nothing done yet) before anything exists.
        let proxy = Proxy::start(vec![
            Rule {
                operation: "CreateSecurityGroup",
                fault: Fault::Delay(Duration::from_secs(1)),
                times: 1,
            },
            Rule {
                operation: "RegisterTaskDefinition",
                fault: Fault::Delay(Duration::from_secs(1)),
                times: 1,
            },
            Rule {
                operation: "DeleteService",
                fault: Fault::Delay(Duration::from_secs(1)),
                times: 1,
            },
            Rule {
                operation: "CreateService",
                fault: Fault::Delay(Duration::ZERO),
                times: 1,
            },
            Rule {
                operation: "CreateService",
                fault: Fault::Later(
                    Duration::from_millis(500),
                    Box::new(Fault::Reject(
                        "InvalidParameterException",
                        "Creation of service was not idempotent.",
                    )),
                ),
                times: 1,
            },
        ])
        .await;
        let rx = Receiver::start(0).await;
        let event = setup.event(flow, &rx.url("twice"));
        let (a, b) = (
            handler(proxy.clients().await),
            handler(proxy.clients().await),
        );
        let (ra, rb) = tokio::join!(
            a.handle(event.clone(), deadline_in(120)),
            b.handle(event.clone(), deadline_in(120))
        );
        ra.unwrap();
        rb.unwrap();
        let bodies = rx.bodies();
        assert_eq!(bodies.len(), 2, "{flow:?}: {bodies:?}");
        for body in &bodies {
            assert_eq!(body["Status"], "SUCCESS", "{flow:?}: {body}");
        }
        assert_eq!(
            bodies[0]["PhysicalResourceId"], bodies[1]["PhysicalResourceId"],
            "{flow:?}"
        );
        // One run wrote; the other waited for its lease and answered what it answered.
        let raced = match flow {
            Flow::Create => [
                "CreateSecurityGroup",
                "RegisterTaskDefinition",
                "CreateService",
            ]
            .as_slice(),
            Flow::Update => ["RegisterTaskDefinition", "UpdateService"].as_slice(),
            _ => ["DeleteService"].as_slice(),
        };
        for op in raced {
            assert_eq!(proxy.calls(op), 1, "{flow:?}: {op}");
        }
        setup
            .check(flow)
            .await
            .unwrap_or_else(|e| panic!("{flow:?}: {e}"));
        // What both runs left is a converged delegate (or none): the next heal has nothing to do.
        if flow != Flow::Delete {
            let heal = handler(setup.direct.clone())
                .handle(setup.event(Flow::Heal, ""), deadline_in(60))
                .await
                .unwrap();
            assert_eq!(
                heal["Delegates"][0]["Outcome"], "Converged",
                "{flow:?}: {heal}"
            );
        }
        tried += 1;
    }
    record_figures(
        "replayed-concurrently",
        &json!({"requests delivered twice at once": tried}),
    );
}

/// A heal (the schedule, or an ECS event) that runs while a stack Delete is half done, at each
/// step of the Delete: it writes nothing, and nothing comes back after the Delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heal_during_a_delete_brings_nothing_back() {
    let steps = [
        "UntagResource",
        "UpdateService",
        "DeleteService",
        "DeregisterTaskDefinition",
        "DeleteSecurityGroup",
    ];
    for step in steps {
        let setup = Setup::new(Flow::Delete).await;
        let gate = Gate::new();
        let held = Proxy::start(vec![Rule::hold(step, &gate)]).await;
        let healing = Proxy::start(vec![]).await;
        let rx = Receiver::start(0).await;
        let delete = handler(held.clients().await);
        let deleting = delete.handle(setup.event(Flow::Delete, &rx.url("d")), deadline_in(120));
        let heal_when_held = async {
            held.wait_for_calls(step, 1).await;
            let report = handler(healing.clients().await)
                .handle(setup.event(Flow::Heal, ""), deadline_in(60))
                .await
                .unwrap();
            // The Delete goes on only once this heal is done: it ran with the step held.
            gate.open();
            report
        };
        let (deleted, during) = tokio::join!(deleting, heal_when_held);
        deleted.unwrap();
        assert_eq!(
            rx.bodies()[0]["Status"],
            "SUCCESS",
            "{step}: {:?}",
            rx.bodies()
        );
        // And once more after it, as the next scheduled heal would.
        let after = handler(healing.clients().await)
            .handle(setup.event(Flow::Heal, ""), deadline_in(60))
            .await
            .unwrap();
        assert!(
            healing.writes().is_empty(),
            "{step}: heal wrote {:?}; during: {during}, after: {after}",
            healing.writes()
        );
        setup
            .check(Flow::Delete)
            .await
            .unwrap_or_else(|e| panic!("{step}: {e}"));
    }
    record_figures(
        "heal-during-delete",
        &json!({"steps of a Delete a heal ran in": steps.len()}),
    );
}

/// A heal during a stack Update, at each of its writes: the end state is the Update's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heal_during_an_update_ends_in_the_update() {
    let steps = ["RegisterTaskDefinition", "TagResource", "UpdateService"];
    for step in steps {
        let setup = Setup::new(Flow::Update).await;
        let gate = Gate::new();
        let held = Proxy::start(vec![Rule::hold(step, &gate)]).await;
        let rx = Receiver::start(0).await;
        let update = handler(held.clients().await);
        let updating = update.handle(setup.event(Flow::Update, &rx.url("u")), deadline_in(120));
        let heal_when_held = async {
            held.wait_for_calls(step, 1).await;
            let report = handler(setup.direct.clone())
                .handle(setup.event(Flow::Heal, ""), deadline_in(60))
                .await
                .unwrap();
            gate.open();
            report
        };
        let (updated, during) = tokio::join!(updating, heal_when_held);
        updated.unwrap();
        assert_eq!(
            rx.bodies()[0]["Status"],
            "SUCCESS",
            "{step}: {:?}",
            rx.bodies()
        );
        let after = handler(setup.direct.clone())
            .handle(setup.event(Flow::Heal, ""), deadline_in(60))
            .await
            .unwrap();
        assert_eq!(
            after["Delegates"][0]["Outcome"], "Converged",
            "{step}: during: {during}, after: {after}"
        );
        setup
            .check(Flow::Update)
            .await
            .unwrap_or_else(|e| panic!("{step}: {e}"));
    }
    record_figures(
        "heal-during-update",
        &json!({"steps of an Update a heal ran in": steps.len()}),
    );
}

/// CloudFormation's S3 answers the response PUT with a 500, then resets the connection, then
/// takes it: the same body is sent each time, and the invocation ends normally.
#[tokio::test]
async fn the_response_put_is_retried_through_a_5xx_and_a_reset() {
    let rx = Receiver::scripted(vec![
        Response::status(500, "InternalError"),
        Response::dropped(),
    ])
    .await;
    // Invalid, so the answer (FAILED) is ready at once and the test is about the PUT alone.
    let props = json!({"ClusterName": "c", "AccountId": "a", "DelegateToken": "t", "Cpu": "lots"});
    handler(clients().await)
        .handle(
            cfn_event("Create", &rx.url("put"), &props, None, None),
            deadline_in(30),
        )
        .await
        .expect("delivered on the third attempt");
    let requests = rx.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "a 500, a reset, then delivered");
    assert!(requests
        .iter()
        .all(|r| r.body == requests[0].body && r.method == "PUT"));
    assert_eq!(requests[2].json()["Status"], "FAILED");
    record_figures(
        "response-put",
        &json!({"PUT faults injected (5xx, reset)": 2, "attempts": requests.len(), "delivered": 1}),
    );
}

/// Two heals at once (two schedules overlapping, or a schedule and an ECS event: concurrency
/// is not reserved), both finding the delegate's revision deregistered: one takes the
/// delegate's lease and registers a copy, the other stands down, and the copy is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_heals_at_once_keep_one_copy_of_a_deregistered_revision() {
    let setup = Setup::new(Flow::Update).await;
    let old = active_revisions(&setup.direct, &setup.family()).await;
    setup
        .direct
        .ecs
        .deregister_task_definition()
        .task_definition(&old[0])
        .send()
        .await
        .unwrap();
    // A deregistered revision goes on running; it matters once ECS must start tasks again.
    ecs_sim::crash_tasks(&setup.w.cluster, "harness-delegate");
    let proxy = Proxy::start(vec![Rule {
        operation: "RegisterTaskDefinition",
        fault: Fault::Delay(Duration::from_secs(1)),
        times: 1,
    }])
    .await;
    let (a, b) = (
        handler(proxy.clients().await),
        handler(proxy.clients().await),
    );
    let (ra, rb) = tokio::join!(
        a.handle(setup.event(Flow::Heal, ""), deadline_in(60)),
        b.handle(setup.event(Flow::Heal, ""), deadline_in(60))
    );
    let mut outcomes: Vec<String> = [ra.unwrap(), rb.unwrap()]
        .iter()
        .map(|r| r["Delegates"][0]["Outcome"].as_str().unwrap().to_string())
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["Repaired", "Superseded"]);
    assert_eq!(
        proxy.calls("RegisterTaskDefinition"),
        1,
        "one heal registered a copy"
    );
    let now = active_revisions(&setup.direct, &setup.family()).await;
    assert_eq!(now.len(), 1, "{now:?}");
    let s = service(&setup.direct, &setup.w.cluster, "harness-delegate")
        .await
        .unwrap();
    assert_eq!(s.task_definition(), Some(now[0].as_str()));
    let after = handler(setup.direct.clone())
        .handle(setup.event(Flow::Heal, ""), deadline_in(60))
        .await
        .unwrap();
    assert_eq!(after["Delegates"][0]["Outcome"], "Converged", "{after}");
    record_figures(
        "heals-at-once",
        &json!({"heals at once": 2, "repaired": 1, "stood down": 1, "copies registered": proxy.calls("RegisterTaskDefinition"), "copies kept": now.len()}),
    );
}
