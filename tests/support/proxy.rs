//! A fault-injecting proxy between the function and moto: per operation (ECS's X-Amz-Target,
//! or the Action of EC2/IAM/tagging form bodies) it throttles, fails, delays, resets the
//! connection, rejects, answers in moto's place or patches moto's answer, for the first N calls
//! or a seeded fraction of them; and it records every call, so tests can assert what was asked
//! of AWS and that nothing was written.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness_ecs_delegate_bootstrap::Clients;
use serde_json::{json, Value};

use super::*;

#[derive(Clone, Debug)]
pub enum Fault {
    /// ECS's JSON throttling error, or EC2's RequestLimitExceeded.
    Throttle,
    /// An HTML 500, as moto and load balancers give.
    ServerError,
    Delay(Duration),
    /// A successful answer with this JSON body instead of moto's (states moto never reaches).
    Respond(Value),
    /// An AWS rejection: HTTP 400 with this `__type` and message (ECS JSON protocol).
    Reject(&'static str, &'static str),
    /// moto's answer, changed by this function (ECS JSON): states moto never reaches, on top
    /// of the real state.
    Patch(fn(&mut Value)),
    /// The connection reset before any answer (the request never reaches moto).
    Reset,
    /// moto does the call, but its answer arrives only after this long: past the SDK's attempt
    /// timeout, the call is sent again although AWS already did it.
    SlowAnswer(Duration),
    /// Wait this long, then `fault` (an AWS rejection that comes after another call's effect).
    Later(Duration, Box<Fault>),
    /// Hold the call until the test opens the gate (`Gate::open`), then forward it.
    Held(Gate),
    /// `fault` for about `per_mille`/1000 of the matching calls, chosen by `seed`, the operation
    /// and the call's number: the same calls each run.
    Fraction {
        per_mille: u64,
        seed: u64,
        fault: Box<Fault>,
    },
}

impl Fault {
    /// The fault for the `n`th call of `op` (`Fraction` decides; others always apply).
    pub fn for_call(self, op: &str, n: u32) -> Option<Fault> {
        match self {
            Fault::Fraction {
                per_mille,
                seed,
                fault,
            } => {
                let op_hash = op.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
                (splitmix64(seed ^ op_hash ^ u64::from(n)) % 1000 < per_mille)
                    .then_some(*fault)
                    .and_then(|f| f.for_call(op, n))
            }
            Fault::Later(d, fault) => (*fault)
                .for_call(op, n)
                .map(|f| Fault::Later(d, Box::new(f))),
            other => Some(other),
        }
    }
}

/// A well-mixed hash of one number (SplitMix64), for reproducible choices without a crate.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A gate a held call waits at until the test opens it.
#[derive(Clone, Debug)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }

    pub fn open(&self) {
        self.0.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }

    async fn pass(&self) {
        let _ = self.0.acquire().await;
    }
}

#[derive(Clone, Debug)]
pub struct Rule {
    /// The operation the rule applies to; `*`: every operation.
    pub operation: &'static str,
    pub fault: Fault,
    /// How many matching calls get the fault; `u32::MAX` for all.
    pub times: u32,
}

impl Rule {
    /// The first call of `operation` waits at `gate` until the test opens it.
    pub fn hold(operation: &'static str, gate: &Gate) -> Rule {
        Rule {
            operation,
            fault: Fault::Held(gate.clone()),
            times: 1,
        }
    }
}

/// The role the function runs as, as ECS names it in `createdBy` (and `FUNCTION_ROLE_ARN`).
pub const FUNCTION_ROLE: &str = "arn:aws:iam::123456789012:role/stack-BootstrapFunctionRole-1A2B";

/// Whoever else creates services (a test calling moto directly).
pub const PERSON: &str = "arn:aws:iam::123456789012:user/someone";

/// What the proxy remembers of ECS's state that moto does not keep.
#[derive(Default)]
struct Ecs {
    /// Services created through the proxy (by ARN).
    created_here: BTreeSet<String>,
    /// Deregistered revisions stay usable, as during the up-to-10-minute window after
    /// deregistration in which ECS's restrictions "have not yet taken effect".
    inactive_usable: bool,
    /// The payloads of asynchronous Lambda invocations Lambda accepted, in order.
    invoked: Vec<Value>,
}

#[derive(Clone)]
pub struct Proxy {
    pub endpoint: String,
    ecs: Arc<Mutex<Ecs>>,
    /// Every answer given, in order: the operation, the HTTP status and the error's `__type`.
    answered: Arc<Mutex<Vec<(String, u16, String)>>>,
    calls: Arc<Mutex<BTreeMap<String, u32>>>,
    /// The JSON bodies of ECS calls, by operation, to check what was asked of AWS.
    bodies: Arc<Mutex<Vec<(String, Value)>>>,
    /// Every operation called, in order.
    order: Arc<Mutex<Vec<String>>>,
    /// The faults injected so far, by operation.
    injected: Arc<Mutex<BTreeMap<String, u32>>>,
    /// Time spent waiting for moto's answers to calls forwarded without a fault: moto's own
    /// latency, which the benchmark reports apart from the function's.
    upstream: Arc<Mutex<Duration>>,
}

/// The operation a request calls: ECS names it in X-Amz-Target, EC2 and IAM in the form body.
pub fn operation(req: &Request) -> String {
    if req.path.starts_with("/2015-03-31/functions/") && req.path.ends_with("/invocations") {
        return "Invoke".into();
    }
    if let Some(t) = req.header("x-amz-target") {
        return t.rsplit('.').next().unwrap_or(t).to_string();
    }
    let body = String::from_utf8_lossy(&req.body);
    body.split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .unwrap_or("")
        .to_string()
}

impl Proxy {
    pub async fn start(rules: Vec<Rule>) -> Proxy {
        Self::start_at("127.0.0.1:0", rules).await
    }

    /// A proxy listening on `addr`.
    pub async fn start_at(addr: &str, rules: Vec<Rule>) -> Proxy {
        let upstream = moto();
        let rules = Arc::new(Mutex::new(rules));
        let calls: Arc<Mutex<BTreeMap<String, u32>>> = Default::default();
        let bodies: Arc<Mutex<Vec<(String, Value)>>> = Default::default();
        let order: Arc<Mutex<Vec<String>>> = Default::default();
        let injected: Arc<Mutex<BTreeMap<String, u32>>> = Default::default();
        let upstream_time: Arc<Mutex<Duration>> = Default::default();
        let ecs_state: Arc<Mutex<Ecs>> = Default::default();
        let e = ecs_state.clone();
        let answered: Arc<Mutex<Vec<(String, u16, String)>>> = Default::default();
        let a = answered.clone();
        let (r, c, b, o, i, u) = (
            rules.clone(),
            calls.clone(),
            bodies.clone(),
            order.clone(),
            injected.clone(),
            upstream_time.clone(),
        );
        let http = reqwest::Client::new();
        let addr = serve_at(addr, Arc::new(move |req: Request| {
            let ecs_state = e.clone();
            let answered = a.clone();
            let (rules, calls, bodies, order, injected, upstream_time, http, upstream) = (
                r.clone(),
                c.clone(),
                b.clone(),
                o.clone(),
                i.clone(),
                u.clone(),
                http.clone(),
                upstream.clone(),
            );
            Box::pin(async move {
                let op = operation(&req);
                let resp = async move {
                    let op = operation(&req);
                    let n = {
                        let mut calls = calls.lock().unwrap();
                        let n = calls.entry(op.clone()).or_default();
                        *n += 1;
                        *n
                    };
                    order.lock().unwrap().push(op.clone());
                    if let Ok(v) = serde_json::from_slice::<Value>(&req.body) {
                        bodies.lock().unwrap().push((op.clone(), v));
                    }
                    let fault = {
                        let mut rules = rules.lock().unwrap();
                        rules
                            .iter_mut()
                            .find(|r| (r.operation == op || r.operation == "*") && r.times > 0)
                            .map(|r| {
                            r.times = r.times.saturating_sub(1);
                            r.fault.clone()
                        })
                    }
                    .and_then(|f| f.for_call(&op, n));
                    if fault.is_some() {
                        *injected.lock().unwrap().entry(op.clone()).or_default() += 1;
                    }
                    let ecs = req.header("x-amz-target").is_some();
                    let fault = match fault {
                        Some(Fault::Later(d, f)) => {
                            tokio::time::sleep(d).await;
                            Some(*f)
                        }
                        other => other,
                    };
                    match fault {
                        Some(Fault::Throttle) if ecs => {
                            return json_error(400, "ThrottlingException", "Rate exceeded");
                        }
                        Some(Fault::Throttle) => {
                            return Response {
                                status: 503,
                                headers: vec![("Content-Type".into(), "text/xml".into())],
                                body: b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>1</RequestID></Response>".to_vec(),
                            };
                        }
                        Some(Fault::ServerError) => {
                            return Response {
                                status: 500,
                                headers: vec![("Content-Type".into(), "text/html".into())],
                                body: b"<html><body>Internal Server Error</body></html>".to_vec(),
                            };
                        }
                        Some(Fault::Reject(kind, message)) => return json_error(400, kind, message),
                        Some(Fault::Respond(body)) => return ecs_json(body),
                        Some(Fault::Reset) => return Response::dropped(),
                        Some(Fault::Fraction { .. }) => unreachable!("for_call resolves fractions"),
                        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
                        Some(Fault::Held(gate)) => gate.pass().await,
                        Some(Fault::SlowAnswer(d)) => {
                            let resp = land(&ecs_state, &http, &upstream, &op, req).await;
                            tokio::time::sleep(d).await;
                            return resp;
                        }
                        Some(Fault::Later(..)) => unreachable!("unwrapped above"),
                        Some(Fault::Patch(change)) => {
                            let mut resp = land(&ecs_state, &http, &upstream, &op, req).await;
                            let mut v: Value = serde_json::from_slice(&resp.body).expect("an ECS JSON answer");
                            change(&mut v);
                            resp.body = v.to_string().into_bytes();
                            return resp;
                        }
                        None => {}
                    }
                    let started = std::time::Instant::now();
                    let resp = land(&ecs_state, &http, &upstream, &op, req).await;
                    *upstream_time.lock().unwrap() += started.elapsed();
                    resp
                }
                .await;
                let kind = serde_json::from_slice::<Value>(&resp.body)
                    .ok()
                    .and_then(|v| v["__type"].as_str().map(String::from))
                    .unwrap_or_default();
                answered.lock().unwrap().push((op, resp.status, kind));
                resp
            })
        }))
        .await;
        Proxy {
            endpoint: format!("http://{addr}"),
            ecs: ecs_state,
            answered,
            calls,
            bodies,
            order,
            injected,
            upstream: upstream_time,
        }
    }

    /// From now on, calls may name deregistered revisions, as ECS allows for up to 10 minutes
    /// after a deregistration.
    pub fn inactive_revisions_usable(&self) {
        self.ecs.lock().unwrap().inactive_usable = true;
    }

    /// The payloads of the asynchronous invocations Lambda accepted so far.
    pub fn invocations(&self) -> Vec<Value> {
        self.ecs.lock().unwrap().invoked.clone()
    }

    /// The answers given to `op` so far: HTTP status and error type (empty on success).
    pub fn answers(&self, op: &str) -> Vec<(u16, String)> {
        let answered = self.answered.lock().unwrap();
        answered
            .iter()
            .filter(|(o, ..)| o == op)
            .map(|(_, status, kind)| (*status, kind.clone()))
            .collect()
    }

    /// The answers to `op`, once there are `n` of them (a held call lands when its gate opens).
    pub async fn wait_for_answers(&self, op: &str, n: usize) -> Vec<(u16, String)> {
        within_10s(
            || self.answers(op).len() >= n,
            || format!("{op} answered {n} times"),
        )
        .await;
        self.answers(op)
    }

    /// Once `op` has been called `n` times (a held call counts when it arrives).
    pub async fn wait_for_calls(&self, op: &str, n: u32) {
        within_10s(|| self.calls(op) >= n, || format!("{op} called {n} times")).await;
    }

    /// How many faults were injected into this operation's calls.
    pub fn injected(&self, op: &str) -> u32 {
        self.injected.lock().unwrap().get(op).copied().unwrap_or(0)
    }

    /// The operations called so far, each once, in the order first called.
    pub fn operations(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for op in self.order.lock().unwrap().iter() {
            if !seen.contains(op) {
                seen.push(op.clone());
            }
        }
        seen
    }

    /// Every call so far, in order, an operation as often as it was called.
    pub fn sequence(&self) -> Vec<String> {
        self.order.lock().unwrap().clone()
    }

    /// How many calls reached the proxy, of any operation.
    pub fn total_calls(&self) -> usize {
        self.order.lock().unwrap().len()
    }

    /// How many faults were injected in all.
    pub fn injected_total(&self) -> u32 {
        self.injected.lock().unwrap().values().sum()
    }

    pub fn last_body(&self, op: &str) -> Value {
        let bodies = self.bodies.lock().unwrap();
        bodies
            .iter()
            .rev()
            .find(|(o, _)| o == op)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {op} call"))
    }

    pub fn calls(&self, op: &str) -> u32 {
        self.calls.lock().unwrap().get(op).copied().unwrap_or(0)
    }

    /// The bodies of every call of `op` so far.
    pub fn bodies(&self, op: &str) -> Vec<Value> {
        let bodies = self.bodies.lock().unwrap();
        bodies
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The operations that change something (anything but Describe*, List*, Get*, Scan,
    /// Query), in order.
    pub fn writes(&self) -> Vec<String> {
        let order = self.order.lock().unwrap();
        order
            .iter()
            .filter(|op| {
                !["Describe", "List", "Get", "Scan", "Query"]
                    .iter()
                    .any(|p| op.starts_with(p))
            })
            .cloned()
            .collect()
    }

    /// How long moto took to answer the calls forwarded since the counts were reset.
    pub fn upstream_time(&self) -> Duration {
        *self.upstream.lock().unwrap()
    }

    /// Forget the calls counted so far.
    pub fn reset_counts(&self) {
        *self.upstream.lock().unwrap() = Duration::ZERO;
        self.calls.lock().unwrap().clear();
        self.order.lock().unwrap().clear();
        self.bodies.lock().unwrap().clear();
    }

    pub async fn clients(&self) -> Clients {
        clients_for(&self.endpoint).await
    }

    /// Clients that reach moto through this proxy in `region`.
    pub async fn clients_in(&self, region: &str) -> Clients {
        clients_at(&self.endpoint, region).await
    }
}

/// Wait until `done`, looking every 20 ms; panic naming `what` after 10 s.
async fn within_10s(done: impl Fn() -> bool, what: impl Fn() -> String) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not within 10 s: {}", what())
}

/// A successful ECS answer.
fn ecs_json(body: Value) -> Response {
    Response {
        status: 200,
        headers: vec![("Content-Type".into(), "application/x-amz-json-1.1".into())],
        body: body.to_string().into_bytes(),
    }
}

pub fn json_error(status: u16, kind: &str, message: &str) -> Response {
    Response {
        status,
        headers: vec![("Content-Type".into(), "application/x-amz-json-1.1".into())],
        body: json!({"__type": kind, "message": message})
            .to_string()
            .into_bytes(),
    }
}

/// The call lands at ECS: refused as ECS would refuse it in moto's current state, or forwarded
/// to moto, with `createdBy` in the services it describes.
async fn land(
    ecs: &Mutex<Ecs>,
    http: &reqwest::Client,
    upstream: &str,
    op: &str,
    req: Request,
) -> Response {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    // The proxy's own reads go to the caller's region, which moto takes from the signature.
    let moto = Moto {
        http,
        upstream,
        auth: req.header("authorization").unwrap_or_default().to_string(),
    };
    if let Some(refusal) = refusal(ecs, &moto, op, &body).await {
        return refusal;
    }
    match op {
        // Lambda queues an asynchronous invocation; the test delivers it (`invocations`).
        "Invoke" => {
            ecs.lock().unwrap().invoked.push(body);
            return Response::status(202, "");
        }
        "ListTasks" => return ecs_json(super::ecs_sim::SIM.lock().unwrap().list_tasks(&body)),
        "DescribeTasks" => {
            return ecs_json(super::ecs_sim::SIM.lock().unwrap().describe_tasks(&body))
        }
        _ => {}
    }
    let mut resp = forward(moto.http, moto.upstream, req).await;
    if resp.status != 200 {
        return resp;
    }
    let Ok(mut answer) = serde_json::from_slice::<Value>(&resp.body) else {
        return resp;
    };
    let mut state = ecs.lock().unwrap();
    match op {
        "CreateService" => {
            if let Some(arn) = answer["service"]["serviceArn"].as_str() {
                state.created_here.insert(arn.to_string());
            }
            return resp;
        }
        "DescribeServices" => {
            for s in answer["services"].as_array_mut().into_iter().flatten() {
                let arn = s["serviceArn"].as_str().unwrap_or_default();
                let by = if state.created_here.contains(arn) {
                    FUNCTION_ROLE
                } else {
                    PERSON
                };
                s["createdBy"] = json!(by);
                super::ecs_sim::SIM.lock().unwrap().on_describe(s);
            }
        }
        _ => return resp,
    }
    resp.body = answer.to_string().into_bytes();
    resp
}

/// The refusal real ECS gives `op` with `body` now, where moto would accept it.
async fn refusal(ecs: &Mutex<Ecs>, moto: &Moto<'_>, op: &str, body: &Value) -> Option<Response> {
    if !matches!(op, "CreateService" | "UpdateService") {
        return None;
    }
    let cluster = body["cluster"].as_str().unwrap_or("default");
    let name = body[if op == "CreateService" {
        "serviceName"
    } else {
        "service"
    }]
    .as_str()
    .unwrap_or_default();
    let status = moto
        .ecs(
            "DescribeServices",
            json!({"cluster": cluster, "services": [name]}),
        )
        .await["services"][0]["status"]
        .as_str()
        .map(String::from);
    match (op, status.as_deref()) {
        ("CreateService", Some("ACTIVE")) => {
            return Some(json_error(
                400,
                "InvalidParameterException",
                "Creation of service was not idempotent.",
            ))
        }
        ("CreateService", Some("DRAINING")) => {
            return Some(json_error(
                400,
                "InvalidParameterException",
                "Unable to Start a service that is still Draining.",
            ))
        }
        ("UpdateService", Some(s)) if s != "ACTIVE" => {
            return Some(json_error(
                400,
                "ServiceNotActiveException",
                "Service was not ACTIVE.",
            ))
        }
        _ => {}
    }
    let revision = body["taskDefinition"].as_str()?;
    let inactive = moto
        .ecs(
            "DescribeTaskDefinition",
            json!({"taskDefinition": revision}),
        )
        .await["taskDefinition"]["status"]
        == "INACTIVE";
    (inactive && !ecs.lock().unwrap().inactive_usable)
        .then(|| json_error(400, "ClientException", "TaskDefinition is inactive"))
}

/// moto, as the caller of a call being simulated reaches it.
struct Moto<'a> {
    http: &'a reqwest::Client,
    upstream: &'a str,
    auth: String,
}

impl Moto<'_> {
    /// One ECS call straight to moto, not counted: the proxy reading the state it simulates on.
    async fn ecs(&self, op: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(self.upstream)
            .header(
                "x-amz-target",
                format!("AmazonEC2ContainerServiceV20141113.{op}"),
            )
            .header("content-type", "application/x-amz-json-1.1")
            .header("authorization", &self.auth)
            .body(body.to_string())
            .send()
            .await
            .expect("moto answers");
        let bytes = resp.bytes().await.unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }
}

pub async fn forward(http: &reqwest::Client, upstream: &str, req: Request) -> Response {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
    let mut r = http.request(method, format!("{upstream}{}", req.path));
    for (k, v) in &req.headers {
        if !["host", "content-length", "connection", "transfer-encoding"]
            .contains(&k.to_ascii_lowercase().as_str())
        {
            r = r.header(k, v);
        }
    }
    let resp = r.body(req.body).send().await.expect("moto answers");
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter(|(k, _)| {
            k.as_str().eq_ignore_ascii_case("content-type") || k.as_str().starts_with("x-amz")
        })
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    Response {
        status,
        headers,
        body: resp.bytes().await.unwrap().to_vec(),
    }
}
