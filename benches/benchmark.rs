//! `make bench`: what the function costs, each figure beside an anchor measured in the same run
//! on the same machine. The release binary runs under a local Lambda Runtime API; its AWS calls
//! go through the counting proxy to moto, whose own latency is reported apart. Prints one table
//! and writes it to docs/benchmarks.md. Nothing here is asserted: it reports.
//!
//! Binaries come from the Makefile (`bench` target) through the environment:
//! FUNCTION_BIN (the release build), DEFAULT_BIN (the same code, `cargo build --release` with no
//! profile settings of ours), HELLO_BIN (benches/hello_floor.rs, the floor), AWS_CLI (the aws
//! command from PyPI), PACKAGE_ZIP (what Lambda receives), STATIC_BIN and STATIC_HELLO_BIN (the
//! function and the floor built as the package is, static musl, for this machine).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{json, Value};
use support::*;
use tokio::sync::{mpsc, oneshot};

/// Starts measured for the init figure, per binary.
const STARTS: usize = 60;
/// The region the benchmark has to itself (a scheduled heal covers a whole region).
const REGION: &str = "ap-southeast-2";

fn env_path(name: &str) -> String {
    let p = std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run `make bench`"));
    assert!(
        std::path::Path::new(&p).exists(),
        "{name}={p} does not exist: run `make bench`"
    );
    p
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The environment Lambda gives a function, pointed at `runtime_api` and, for AWS, `endpoint`.
fn lambda_env(cmd: &mut tokio::process::Command, runtime_api: &str, endpoint: &str) {
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "bootstrap")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/27/[$LATEST]0123")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bootstrap")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_SESSION_TOKEN", "testing")
        .env("RESPONSE_URL_ALLOW_LOOPBACK", "true")
        .env("RECORD_TABLE", RECORD_TABLE)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
}

// ---- init duration -----------------------------------------------------------------------------

/// Process start → its first GET /next, `STARTS` times, alternating the binaries so that the
/// machine's drift spreads evenly: the median per binary.
async fn init_durations(bins: &[(String, Vec<(&str, &str)>)], endpoint: &str) -> Vec<Duration> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let tx = Arc::new(tx);
    let addr = serve(Arc::new(move |req: Request| {
        let tx = tx.clone();
        Box::pin(async move {
            if req.path.ends_with("/invocation/next") {
                let _ = tx.send(Instant::now());
                // Never answered: the process is ended once its start is measured.
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Response::status(404, "")
        })
    }))
    .await;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); bins.len()];
    for round in 0..STARTS + 1 {
        for (i, (bin, extra)) in bins.iter().enumerate() {
            let mut cmd = tokio::process::Command::new(bin);
            lambda_env(&mut cmd, &addr.to_string(), endpoint);
            cmd.envs(extra.iter().copied());
            let started = Instant::now();
            let mut child = cmd.spawn().expect("start the binary");
            let at = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("the binary asked for an event within 10 s")
                .unwrap();
            child.start_kill().unwrap();
            child.wait().await.unwrap();
            // The first round warms the page cache: not counted.
            if round > 0 {
                times[i].push(at - started);
            }
        }
    }
    times.into_iter().map(median).collect()
}

// ---- the function under a Runtime API, one invocation at a time --------------------------------

/// Where an invocation's result goes: the body posted, and when.
type Reply = oneshot::Sender<(Value, Instant)>;
/// Events waiting for the function's next GET /next.
type Queue = Arc<Mutex<VecDeque<(Value, Reply)>>>;

struct Function {
    child: tokio::process::Child,
    events: Queue,
    served: Arc<Mutex<Option<Instant>>>,
    /// When the process was started.
    spawned: Instant,
    /// Each GET /next's arrival: the first ends init.
    asked: Arc<Mutex<Vec<Instant>>>,
}

impl Function {
    /// The function the install, heal and scaling figures are measured on; its log goes to
    /// bench-function.log in the temporary directory.
    async fn start(bin: &str, endpoint: &str) -> Function {
        let log = std::env::temp_dir().join("bench-function.log");
        let f = Function::start_with(
            bin,
            endpoint,
            &[("BENCH_LOG".into(), log.display().to_string())],
        )
        .await;
        eprintln!("  (the function's log: {})", log.display());
        f
    }

    /// Started with `extra` added to Lambda's environment.
    async fn start_with(bin: &str, endpoint: &str, extra: &[(String, String)]) -> Function {
        let asked: Arc<Mutex<Vec<Instant>>> = Default::default();
        let ak = asked.clone();
        let events: Queue = Default::default();
        let served: Arc<Mutex<Option<Instant>>> = Default::default();
        let pending: Arc<Mutex<Option<Reply>>> = Default::default();
        let (ev, sv, pe) = (events.clone(), served.clone(), pending.clone());
        let addr = serve(Arc::new(move |req: Request| {
            let (ev, sv, pe, ak) = (ev.clone(), sv.clone(), pe.clone(), ak.clone());
            Box::pin(async move {
                if req.method == "GET" && req.path.ends_with("/invocation/next") {
                    ak.lock().unwrap().push(Instant::now());
                    loop {
                        let next = ev.lock().unwrap().pop_front();
                        if let Some((event, reply)) = next {
                            *pe.lock().unwrap() = Some(reply);
                            let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
                                + Duration::from_secs(600);
                            *sv.lock().unwrap() = Some(Instant::now());
                            return Response {
                                status: 200,
                                headers: vec![
                                    ("Content-Type".into(), "application/json".into()),
                                    ("Lambda-Runtime-Aws-Request-Id".into(), unique("inv")),
                                    ("Lambda-Runtime-Deadline-Ms".into(), deadline.as_millis().to_string()),
                                    ("Lambda-Runtime-Invoked-Function-Arn".into(), "arn:aws:lambda:ap-southeast-2:123456789012:function:bootstrap".into()),
                                ],
                                body: event.to_string().into_bytes(),
                            };
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                if req.method == "POST" {
                    let at = Instant::now();
                    let body = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                    if let Some(reply) = pe.lock().unwrap().take() {
                        let _ = reply.send((body, at));
                    }
                    return Response::status(202, "{}");
                }
                Response::status(404, "")
            })
        }))
        .await;
        let mut cmd = tokio::process::Command::new(bin);
        lambda_env(&mut cmd, &addr.to_string(), endpoint);
        cmd.envs(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some((_, log)) = extra.iter().find(|(k, _)| k == "BENCH_LOG") {
            cmd.stderr(std::fs::File::create(log).expect("the function's log file"));
        }
        let spawned = Instant::now();
        Function {
            child: cmd.spawn().expect("start the function"),
            events,
            served,
            spawned,
            asked,
        }
    }

    /// Start → the first GET /next.
    fn init(&self) -> Duration {
        self.asked.lock().unwrap()[0] - self.spawned
    }

    /// One invocation: its result, and the time from handing out the event to the result.
    async fn invoke(&self, event: Value) -> (Value, Duration) {
        let (tx, rx) = oneshot::channel();
        self.events.lock().unwrap().push_back((event, tx));
        let (body, at) = tokio::time::timeout(Duration::from_secs(600), rx)
            .await
            .expect("the function answered within 600 s")
            .unwrap();
        let served = self.served.lock().unwrap().expect("served");
        (body, at - served)
    }

    /// The process's peak resident memory so far, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

/// What one measured invocation cost, as the proxy saw it.
#[derive(Clone, Copy)]
struct Cost {
    wall: Duration,
    moto: Duration,
    calls: usize,
    writes: usize,
}

impl Cost {
    /// The median wall and moto times of runs that made the same calls.
    fn median_of(runs: &[Cost]) -> Cost {
        Cost {
            wall: median(runs.iter().map(|c| c.wall).collect()),
            moto: median(runs.iter().map(|c| c.moto).collect()),
            ..runs[0]
        }
    }

    fn of(proxy: &Proxy, wall: Duration) -> Cost {
        Cost {
            wall,
            moto: proxy.upstream_time(),
            calls: proxy.total_calls(),
            writes: proxy.writes().len(),
        }
    }

    fn reads(&self) -> usize {
        self.calls - self.writes
    }

    fn text(&self) -> String {
        format!(
            "{:.0} ms (moto {:.0} ms, summed over concurrent calls), {} AWS calls ({} reads, {} writes)",
            ms(self.wall),
            ms(self.moto),
            self.calls,
            self.reads(),
            self.writes
        )
    }
}

/// A first install's calls by what they serve: installing the delegate, its record in the
/// table, and the wait for its tasks once the service exists (as many polls as ECS takes).
#[derive(Default)]
struct InstallCalls {
    install: usize,
    record: usize,
    wait: usize,
}

impl InstallCalls {
    fn of(sequence: &[String]) -> InstallCalls {
        const RECORD: [&str; 2] = ["GetItem", "PutItem"];
        const WAIT: [&str; 3] = ["DescribeServices", "ListTasks", "DescribeTasks"];
        let created = sequence
            .iter()
            .position(|op| op == "CreateService")
            .unwrap_or(sequence.len());
        let mut c = InstallCalls::default();
        for (i, op) in sequence.iter().enumerate() {
            if RECORD.contains(&op.as_str()) {
                c.record += 1;
            } else if i > created && WAIT.contains(&op.as_str()) {
                c.wait += 1;
            } else {
                c.install += 1;
            }
        }
        c
    }
}

async fn measured(f: &Function, proxy: &Proxy, event: Value) -> (Value, Cost) {
    proxy.reset_counts();
    let (body, wall) = f.invoke(event).await;
    (body, Cost::of(proxy, wall))
}

fn heal_event(cluster: &str, service: &str) -> Value {
    json!({"Action": "Heal", "Targets": [{"ClusterName": cluster, "ServiceName": service}]})
}

fn schedule_event() -> Value {
    let path = format!("{}/events/heal-schedule.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

// ---- cold start as Lambda pays it --------------------------------------------------------------

/// Cold starts measured per configuration for the TLS figures.
const COLD_ROUNDS: usize = 10;

/// One cold start's parts: start → the first GET /next, the first event (its connections, and
/// over TLS its handshakes), the second (connections kept), and start → the first answer.
#[derive(Clone, Copy)]
struct Cold {
    init: Duration,
    first: Duration,
    second: Duration,
    to_first: Duration,
}

/// A process started with `env`, given two read-only Plans.
async fn cold_start(bin: &str, env: &[(String, String)], plan: &Value) -> Cold {
    let f = Function::start_with(bin, "http://127.0.0.1:9", env).await;
    let (a, first) = f.invoke(plan.clone()).await;
    assert!(a.get("errorType").is_none(), "the Plan failed: {a}");
    let (b, second) = f.invoke(plan.clone()).await;
    assert!(b.get("errorType").is_none(), "the Plan failed: {b}");
    let init = f.init();
    Cold {
        init,
        first,
        second,
        to_first: init + first,
    }
}

/// [`COLD_ROUNDS`] cold starts of each configuration, alternating so that the machine's drift
/// spreads evenly (a first round, not counted, warms the page cache): each part's median.
async fn cold_starts(bin: &str, configs: &[Vec<(String, String)>], plan: &Value) -> Vec<Cold> {
    let mut runs: Vec<Vec<Cold>> = vec![Vec::new(); configs.len()];
    for round in 0..COLD_ROUNDS + 1 {
        for (i, env) in configs.iter().enumerate() {
            let c = cold_start(bin, env, plan).await;
            if round > 0 {
                runs[i].push(c);
            }
        }
    }
    let part = |r: &[Cold], f: fn(&Cold) -> Duration| median(r.iter().map(f).collect());
    runs.iter()
        .map(|r| Cold {
            init: part(r, |c| c.init),
            first: part(r, |c| c.first),
            second: part(r, |c| c.second),
            to_first: part(r, |c| c.to_first),
        })
        .collect()
}

/// Handshakes timed for [`handshake_crypto_rows`], alternating between the kinds.
const HANDSHAKES: usize = 200;

/// The client's public-key crypto of one handshake on P-256 and on P-384 throughout (an ECDSA
/// chain and an ECDH key exchange: what aws-lc's size-optimised build slows), each beside the
/// bench's RSA chain with the post-quantum exchange the SDK prefers. Medians of [`HANDSHAKES`].
fn handshake_crypto_rows(rsa: &front::Certificates, dir: &std::path::Path) -> Vec<[String; 5]> {
    use front::{HandshakeCrypto, Key};
    use tokio_rustls::rustls::crypto::aws_lc_rs::kx_group;
    use tokio_rustls::rustls::SignatureScheme as Scheme;
    let p256 = front::Certificates::make(&dir.join("p256"), Key::P256);
    let p384 = front::Certificates::make(&dir.join("p384"), Key::P384);
    let kinds = [
        HandshakeCrypto::new(rsa, Scheme::RSA_PSS_SHA256, kx_group::X25519MLKEM768),
        HandshakeCrypto::new(&p256, Scheme::ECDSA_NISTP256_SHA256, kx_group::SECP256R1),
        HandshakeCrypto::new(&p384, Scheme::ECDSA_NISTP384_SHA384, kx_group::SECP384R1),
    ];
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..HANDSHAKES {
        for (kind, t) in kinds.iter().zip(&mut times) {
            t.push(kind.client_time());
        }
    }
    let [rsa, p256, p384] = times.map(median);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    [("P-256", p256), ("P-384", p384)]
        .into_iter()
        .map(|(curve, time)| {
            [
                format!(
                    "a handshake's public-key crypto, client side, {curve} throughout (ECDSA \
                     chain, ECDH; median of {HANDSHAKES})"
                ),
                format!("{:.0} µs", us(time)),
                format!(
                    "RSA 2048 chain with X25519MLKEM768, as the front doors: {:.0} µs ({:.2}×)",
                    us(rsa),
                    us(time) / us(rsa)
                ),
                "—".into(),
                "report".into(),
            ]
        })
        .collect()
}

/// The environment variable that makes this binary build one root store from the bundle it
/// names, print the time and the number of roots, and exit.
const PARSE_ROOTS: &str = "BENCH_PARSE_ROOTS_ONCE";

/// Reads and parses `bundle` into a root store, as rustls-native-certs and rustls do.
fn root_store(bundle: &std::path::Path) -> (Duration, usize) {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let t = Instant::now();
    let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(bundle)
        .unwrap()
        .filter_map(Result::ok)
        .collect();
    let mut store = tokio_rustls::rustls::RootCertStore::empty();
    store.add_parsable_certificates(ders);
    (t.elapsed(), store.len())
}

/// One root store built in a fresh process, `STARTS` times: the median. A fresh process, as in
/// the function's init, pays its first reads of the file and its first allocations, which a
/// loop in a warm process would not.
fn one_root_store(bundle: &std::path::Path) -> (Duration, usize) {
    let me = std::env::current_exe().unwrap();
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..STARTS {
        let out = std::process::Command::new(&me)
            .env(PARSE_ROOTS, bundle)
            .output()
            .expect("run the benchmark to build one root store");
        let text = String::from_utf8_lossy(&out.stdout);
        let (nanos, roots) = text.trim().split_once(' ').expect("nanoseconds and roots");
        times.push(Duration::from_nanos(nanos.parse().unwrap()));
        n = roots.parse().unwrap();
    }
    (median(times), n)
}

// ---- the install guide's procedure with the aws CLI ---------------------------------------------

/// The install guide's steps, as a person runs them: find the VPC's subnets and security
/// groups, register the task spec, check it, create the service, check it.
fn manual_install(aws: &str, endpoint: &str, w: &World, dir: &std::path::Path) -> Duration {
    let family = format!("{}-manual", w.name);
    let task_spec = json!({
        "family": family,
        "requiresCompatibilities": ["FARGATE"],
        "networkMode": "awsvpc",
        "cpu": "1024",
        "memory": "6144",
        "executionRoleArn": w.exec_role,
        "containerDefinitions": [{
            "name": "ecs-delegate",
            "image": "harness/delegate:latest",
            "essential": true,
            "environment": [
                {"name": "ACCOUNT_ID", "value": "acct-123"},
                {"name": "DELEGATE_TOKEN", "value": "token"},
                {"name": "MANAGER_HOST_AND_PORT", "value": "https://app.harness.io"},
                {"name": "DELEGATE_NAME", "value": "ecs-delegate"},
            ]
        }]
    });
    std::fs::write(dir.join("ecs-task-spec.json"), task_spec.to_string()).unwrap();
    let started = Instant::now();
    let run = |args: &[&str]| -> Value {
        let out = std::process::Command::new(aws)
            .args(args)
            .args([
                "--endpoint-url",
                endpoint,
                "--region",
                REGION,
                "--output",
                "json",
            ])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_PAGER", "")
            .current_dir(dir)
            .output()
            .expect("run aws");
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let vpc_filter = format!("Name=vpc-id,Values={}", w.vpc);
    let subnets = run(&["ec2", "describe-subnets", "--filters", &vpc_filter]);
    let groups = run(&["ec2", "describe-security-groups", "--filters", &vpc_filter]);
    run(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        "file://ecs-task-spec.json",
    ]);
    run(&["ecs", "list-task-definitions"]);
    let subnet_ids: Vec<&str> = subnets["Subnets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["SubnetId"].as_str())
        .collect();
    let group_id = groups["SecurityGroups"][0]["GroupId"].as_str().unwrap();
    let service_spec = json!({
        "cluster": w.cluster,
        "serviceName": "ecs-delegate-manual",
        "taskDefinition": family,
        "desiredCount": 1,
        "launchType": "FARGATE",
        "networkConfiguration": {"awsvpcConfiguration": {
            "subnets": subnet_ids, "securityGroups": [group_id], "assignPublicIp": "DISABLED"}}
    });
    std::fs::write(
        dir.join("service-spec-for-awsvpc-mode.json"),
        service_spec.to_string(),
    )
    .unwrap();
    run(&[
        "ecs",
        "create-service",
        "--cli-input-json",
        "file://service-spec-for-awsvpc-mode.json",
    ]);
    run(&["ecs", "list-services", "--cluster", &w.cluster]);
    started.elapsed()
}

// ---- sizes ---------------------------------------------------------------------------------------

fn zipped_size(bin: &str) -> u64 {
    let dir = std::env::temp_dir().join(unique("zip"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(bin, dir.join("bootstrap")).unwrap();
    let st = std::process::Command::new("zip")
        .args(["-q", "-X", "bootstrap.zip", "bootstrap"])
        .current_dir(&dir)
        .status()
        .expect("zip");
    assert!(st.success());
    let size = std::fs::metadata(dir.join("bootstrap.zip")).unwrap().len();
    let _ = std::fs::remove_dir_all(&dir);
    size
}

/// The rows measured since the last call, printed as they come: a run that stops midway still
/// shows what it measured.
fn show(rows: &[[String; 5]], shown: &mut usize) {
    for r in &rows[*shown..] {
        eprintln!("  | {} |", r.join(" | "));
    }
    *shown = rows.len();
}

fn met(ok: bool) -> String {
    if ok { "met" } else { "missed" }.into()
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1_000_000.0)
}

// ---- the run --------------------------------------------------------------------------------------

#[tokio::main]
async fn main() {
    if let Some(bundle) = std::env::var_os(PARSE_ROOTS) {
        let (took, roots) = root_store(std::path::Path::new(&bundle));
        println!("{} {roots}", took.as_nanos());
        return;
    }
    let run_started = Instant::now();
    let function_bin = env_path("FUNCTION_BIN");
    let default_bin = env_path("DEFAULT_BIN");
    let hello_bin = env_path("HELLO_BIN");
    let static_bin = env_path("STATIC_BIN");
    let static_hello_bin = env_path("STATIC_HELLO_BIN");
    let aws = env_path("AWS_CLI");
    let package_zip = env_path("PACKAGE_ZIP");
    // moto of its own, reporting the delegates' tasks as running (MOTO_ECS_SERVICE_RUNNING):
    // the steady state of an account, which heal is measured in.
    let port = free_port();
    let _moto = tokio::process::Command::new(env_path("MOTO_SERVER"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_ECS_SERVICE_RUNNING", "1")
        .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start moto_server");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::env::set_var("MOTO_ENDPOINT", format!("http://127.0.0.1:{port}"));
    let endpoint = moto();
    let proxy = Proxy::start(vec![]).await;
    let direct = clients_at(&endpoint, REGION).await;
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut shown = 0;

    // Lambda's certificate layout: one bundle file (provided.al2023's ca-bundle.crt), here
    // Debian's bundle with the bench's CA added. rustls-native-certs reads only SSL_CERT_FILE
    // when it is set, instead of the bundle and the directory it finds (292 files on Debian).
    let tmp = std::env::temp_dir().join(unique("bench-tls"));
    let certs = front::Certificates::make(&tmp, front::Key::Rsa2048);
    let lambda_bundle = certs.bundle_with(
        "/etc/ssl/certs/ca-certificates.crt",
        &tmp.join("ca-bundle.crt"),
    );
    let lambda_bundle = lambda_bundle.to_string_lossy().to_string();
    let lambda_layout = ("SSL_CERT_FILE", lambda_bundle.as_str());
    let ca_only = certs.ca.to_string_lossy().to_string();

    // Init.
    eprintln!("init: {STARTS} starts of each binary…");
    let inits = init_durations(
        &[
            (hello_bin.clone(), vec![lambda_layout]),
            (function_bin.clone(), vec![lambda_layout]),
            (function_bin.clone(), vec![]),
            (default_bin.clone(), vec![lambda_layout]),
            (
                function_bin.clone(),
                vec![("SSL_CERT_FILE", ca_only.as_str())],
            ),
            (static_hello_bin.clone(), vec![lambda_layout]),
            (static_bin.clone(), vec![lambda_layout]),
        ],
        &proxy.endpoint,
    )
    .await;
    let [floor, init, init_debian, init_default, init_one_root, static_floor, init_static] =
        inits[..]
    else {
        unreachable!("one median per binary")
    };
    let of_floor = |d: Duration| d.as_secs_f64() / floor.as_secs_f64();
    rows.push([
        format!("init, Lambda's certificate layout (one bundle file; median of {STARTS})"),
        format!("{:.1} ms", ms(init)),
        format!(
            "hello-world lambda_runtime: {:.1} ms ({:.2}×)",
            ms(floor),
            of_floor(init)
        ),
        "≤ 2× the floor".into(),
        met(of_floor(init) <= 2.0),
    ]);
    let static_ratio = init_static.as_secs_f64() / static_floor.as_secs_f64();
    rows.push([
        "init, built as the package is (static musl, not PIE, mimalloc), for this machine".into(),
        format!("{:.1} ms", ms(init_static)),
        format!(
            "hello-world built the same way: {:.1} ms ({static_ratio:.2}×)",
            ms(static_floor)
        ),
        "≤ 2× the floor".into(),
        met(static_ratio <= 2.0),
    ]);
    notes.push(
        "Init is taken on two builds, each beside a hello-world built the same way: the host's \
         (glibc, dynamically linked, position-independent: the loader maps its libraries and \
         applies its relocations) and the package's recipe for this machine (static musl, \
         rust-lld, mimalloc, linked without PIE as the arm64 package is: no loader, no \
         relocations). The arm64 package itself runs here only under qemu, which is not timed."
            .to_string(),
    );
    rows.push([
        "init, Debian's layout (the bundle and /etc/ssl/certs)".into(),
        format!("{:.1} ms", ms(init_debian)),
        format!("{:.2}× the floor", of_floor(init_debian)),
        "—".into(),
        "report".into(),
    ]);
    rows.push([
        "init, the same code with cargo's default release profile".into(),
        format!("{:.1} ms", ms(init_default)),
        format!("{:.2}× the floor", of_floor(init_default)),
        "—".into(),
        "report".into(),
    ]);

    // Cold start to the first answer, AWS over TLS as Lambda reaches it, against the same over
    // plain HTTP: the same keep-alive front doors before the counting proxy, one per service.
    show(&rows, &mut shown);
    eprintln!("cold starts over TLS and plain HTTP…");
    let seeded = seed(&direct, false).await;
    let plan = json!({"Action": "Plan", "ResourceProperties": seeded.fargate_props()});
    let upstream: std::net::SocketAddr = proxy
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let plain_front = front::Front::start(upstream, None).await;
    let tls_front = front::Front::start(upstream, Some(&certs)).await;
    let with_roots = |front: &front::Front, roots: &str| {
        let mut env = front.endpoints();
        env.push(("SSL_CERT_FILE".into(), roots.to_string()));
        env
    };
    let colds = cold_starts(
        &function_bin,
        &[
            with_roots(&plain_front, &lambda_bundle),
            with_roots(&tls_front, &lambda_bundle),
        ],
        &plan,
    )
    .await;
    let (plain, tls) = (colds[0], colds[1]);
    let tls_ratio = tls.to_first.as_secs_f64() / plain.to_first.as_secs_f64();
    let parts = |c: &Cold| {
        format!(
            "{:.1} ms (init {:.1} + first event {:.1})",
            ms(c.to_first),
            ms(c.init),
            ms(c.first)
        )
    };
    rows.push([
        format!("cold start to the first answer, AWS over TLS (a read-only Plan; median of {COLD_ROUNDS})"),
        parts(&tls),
        format!("the same over plain HTTP: {} ({tls_ratio:.2}×)", parts(&plain)),
        "≤ 1.2× plain HTTP".into(),
        met(tls_ratio <= 1.2),
    ]);
    rows.push([
        "the second event, connections kept".into(),
        format!("{:.1} ms over TLS", ms(tls.second)),
        format!("plain HTTP: {:.1} ms", ms(plain.second)),
        "report".into(),
        "report".into(),
    ]);
    // Counted in init, where the SDK loads them and the connector the first requests take is
    // built (src/http.rs): 25 starts give a steadier difference than 10 cold starts of 60 ms.
    let (store_once, roots) = one_root_store(std::path::Path::new(&lambda_bundle));
    let roots_cost = init.saturating_sub(init_one_root);
    rows.push([
        format!(
            "root certificates: what the bundle's {roots} roots add to init (against the bench \
             CA alone; medians of {STARTS})"
        ),
        format!(
            "{:.1} ms (init with one root: {:.1} ms, {:.2}× the floor)",
            ms(roots_cost),
            ms(init_one_root),
            of_floor(init_one_root)
        ),
        format!(
            "reading and parsing them once, in a fresh process: {:.1} ms (median of {STARTS})",
            ms(store_once)
        ),
        "built once per process (≤ 1.5× one build)".into(),
        met(roots_cost.as_secs_f64() <= 1.5 * store_once.as_secs_f64()),
    ]);
    notes.push(format!(
        "TLS: the front doors (tests/support/front.rs) terminate TLS with a certificate of a CA \
         of the bench's own (RSA 2048), trusted through one bundle file as on Lambda, and keep \
         connections open as AWS does; there is one per service (ECS, EC2, IAM, DynamoDB), so a \
         cold start pays a handshake per service host. Plain HTTP goes through the same doors \
         without TLS. aws-lc is built without its CPU-jitter entropy source \
         (.cargo/config.toml: AWS_LC_SYS_NO_JITTER_ENTROPY). The SDK's clients share one HTTP \
         client and one TLS connector, built during init (src/http.rs): the {roots} roots are \
         read and parsed once for all of them. Credentials come from the environment alone, \
         without the rest of the SDK's default chain (its STS client among it)."
    ));

    show(&rows, &mut shown);
    rows.extend(handshake_crypto_rows(&certs, &tmp));
    notes.push(
        "A handshake's public-key crypto (tests/support/front.rs, HandshakeCrypto): what the \
         client computes, with rustls and aws-lc as the function uses them and built with the \
         same settings (.cargo/config.toml), in the bench's own process: the chain's check, the \
         server's signature, and the client's half of the key exchange. The rest of a handshake \
         does not depend on the curve. A NIST curve throughout is the most a server can ask of \
         that code: an ECDSA chain, and an exchange on the curve, which rustls offers after \
         X25519MLKEM768 and X25519, so that a server takes it only if it prefers it or supports \
         neither."
            .to_string(),
    );

    let f = Function::start(&function_bin, &proxy.endpoint).await;
    let rx = Receiver::start(0).await;

    // First install: a Fargate delegate, its network discovered.
    show(&rows, &mut shown);
    eprintln!("first install…");
    let w = seed(&direct, false).await;
    let props = w.fargate_props();
    let (created, install) = measured(
        &f,
        &proxy,
        cfn_event("Create", &rx.url("install"), &props, None, None),
    )
    .await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let sent = rx.bodies();
    assert_eq!(sent.last().unwrap()["Status"], "SUCCESS", "{sent:?}");
    let split = InstallCalls::of(&proxy.sequence());
    proxy.reset_counts();
    let dir = std::env::temp_dir().join(unique("manual"));
    std::fs::create_dir_all(&dir).unwrap();
    // The aws CLI blocks: off the runtime's workers, which serve the proxy.
    let (aws_cli, endpoint_url, world, workdir) =
        (aws.clone(), proxy.endpoint.clone(), w.clone(), dir.clone());
    let manual_wall = tokio::task::spawn_blocking(move || {
        manual_install(&aws_cli, &endpoint_url, &world, &workdir)
    })
    .await
    .unwrap();
    let manual = Cost::of(&proxy, manual_wall);
    let speedup = manual.wall.as_secs_f64() / install.wall.as_secs_f64();
    notes.push(
        "First install: most of the aws CLI's time is six Python start-ups, one a command, as a \
         person running the guide pays them; the function's AWS calls are its own. The budget \
         of 15 calls is for installing; the delegate's record (DynamoDB) and the wait for its \
         tasks, which the guide has no step for, are counted apart: the wait polls for as long \
         as ECS takes to start the tasks."
            .to_string(),
    );
    rows.push([
        "first install (Fargate, subnets found, group made)".into(),
        format!(
            "{}: {} installing, {} on the record, {} waiting for the delegate",
            install.text(),
            split.install,
            split.record,
            split.wait
        ),
        format!(
            "the install guide's aws CLI steps: {} ({speedup:.1}× slower)",
            manual.text()
        ),
        "≥ 10× faster; ≤ 15 AWS calls installing".into(),
        if speedup >= 10.0 && split.install <= 15 {
            "met"
        } else {
            "missed"
        }
        .into(),
    ]);

    // Steady state: nothing drifted.
    show(&rows, &mut shown);
    eprintln!("steady-state heal…");
    let mut steady = Vec::new();
    for _ in 0..5 {
        let (r, cost) = measured(&f, &proxy, heal_event(&w.cluster, "harness-delegate")).await;
        assert_eq!(r["Delegates"][0]["Outcome"], "Converged", "{r}");
        steady.push(cost);
    }
    let steady_cost = Cost::median_of(&steady);
    rows.push([
        "steady-state heal of one delegate in a group the function made (targeted; median of 5)"
            .into(),
        steady_cost.text(),
        "the minimum: the delegate's record (GetItem) + DescribeServices".into(),
        "≤ 2 reads, 0 writes".into(),
        if steady_cost.reads() <= 2 && steady_cost.writes == 0 {
            "met"
        } else {
            "missed"
        }
        .into(),
    ]);

    // Repair: the service deleted out of band.
    show(&rows, &mut shown);
    eprintln!("repair…");
    delete_service_out_of_band(&direct, &w.cluster).await;
    let (r, repair) = measured(&f, &proxy, heal_event(&w.cluster, "harness-delegate")).await;
    assert_eq!(r["Delegates"][0]["Outcome"], "Repaired", "{r}");
    rows.push([
        "repair: recreate a deleted service".into(),
        repair.text(),
        "—".into(),
        "report".into(),
        "report".into(),
    ]);

    // Heal everything: 1, 10, 100 delegates over 10 clusters.
    show(&rows, &mut shown);
    eprintln!("scaling: seeding 10 clusters…");
    let mut worlds = vec![w.clone()];
    for _ in 1..10 {
        worlds.push(seed(&direct, false).await);
    }
    // Through the proxy, whose ECS simulator starts the delegates' tasks (moto starts none): a
    // Create answers once its delegate runs.
    let via = proxy.clients_in(REGION).await;
    let install_one = |w: &World, i: usize| {
        let mut p = w.fargate_props();
        if i > 0 {
            p["ServiceName"] = json!(format!("harness-delegate-{i}"));
        }
        let rx = rx.clone();
        let via = via.clone();
        async move {
            let mut e = cfn_event("Create", &rx.url("seed"), &p, None, None);
            e["LogicalResourceId"] = json!(format!("Delegate{i}"));
            let answer = handler(via).handle(e, deadline_in(120)).await.unwrap();
            assert_eq!(answer["Status"], "SUCCESS", "{answer}");
        }
    };
    let mut installed = 1;
    let mut scale_rows = Vec::new();
    for n in [1usize, 10, 100] {
        // Round-robin over the clusters: delegate k goes to cluster k % 10.
        let todo: Vec<(usize, usize)> = (installed..n).map(|k| (k % 10, k / 10)).collect();
        // Four at a time: seeding is not what is measured.
        futures::stream::iter(todo)
            .map(|(cluster, i)| install_one(&worlds[cluster], i))
            .buffer_unordered(4)
            .collect::<Vec<()>>()
            .await;
        installed = n;
        show(&rows, &mut shown);
        eprintln!("scaling: heal of {n}…");
        // The 1-delegate run is the anchor of the others: the median of 5, as one run of about
        // 10 ms is noise enough to flip their verdicts.
        let rounds = if n == 1 { 5 } else { 1 };
        let mut runs = Vec::new();
        for _ in 0..rounds {
            let (r, cost) = measured(&f, &proxy, schedule_event()).await;
            let healed = r["Delegates"].as_array().map_or(0, Vec::len);
            assert_eq!(healed, n, "{r}");
            runs.push(cost);
        }
        let cost = Cost::median_of(&runs);
        let clusters = n.min(10);
        // The record table (one Scan page holds them all) and each cluster's services ten at
        // a time: neither a steady revision nor a group in use is read.
        let budget = 1 + clusters * n.div_ceil(clusters).div_ceil(10);
        let aws_calls = cost.calls;
        let single = scale_rows
            .first()
            .map_or(cost.wall, |(_, c): &(usize, Cost)| c.wall);
        scale_rows.push((n, cost));
        // Judged against n × the 1-delegate run of the same kind (a scheduled heal of the whole
        // region); n = 1 is that run itself.
        let growth_ok = n == 1 || cost.wall * 2 <= single * n as u32;
        rows.push([
            format!("heal everything: {n} delegates, {clusters} clusters"),
            cost.text(),
            format!(
                "linear: {n} × one targeted heal = {:.0} ms, {} calls; {n} × the 1-delegate run (median of 5) = {:.0} ms",
                ms(steady_cost.wall * n as u32),
                n * steady_cost.calls,
                ms(single * n as u32),
            ),
            format!("reads ≤ {budget}, 0 writes; wall ≤ half of linear"),
            match (n, aws_calls <= budget && cost.writes == 0 && growth_ok) {
                (1, true) => "met (calls)",
                (_, true) => "met",
                _ => "missed",
            }
            .into(),
        ]);
    }
    let (_, c1) = scale_rows[0];
    let (_, c100) = scale_rows[2];
    notes.push(
        "Heal everything: the budget is 1 + DescribeServices in batches of 10 a cluster: one \
         Scan of the record table (a page holds up to 1 MB of items, thousands of delegates), \
         no revision read for a delegate whose service runs its committed revision steadily, and \
         no group read for a delegate whose tasks run in the group the function made (AWS does \
         not delete a group in use): the region's groups are read once, only when a delegate \
         is not steady or a group it no longer uses is to be deleted."
            .to_string(),
    );
    notes.push(format!(
        "Heal everything from 1 to 100 delegates: wall time × {:.1} for 100× the delegates.",
        c100.wall.as_secs_f64() / c1.wall.as_secs_f64()
    ));

    // Memory, over everything the function did above.
    let peak = f.peak_rss_kib();
    rows.push([
        "peak memory (max RSS over the whole run)".into(),
        format!("{:.1} MB", peak as f64 / 1024.0),
        "Lambda's minimum, 128 MB".into(),
        "≤ 32 MB".into(),
        if peak <= 32 * 1024 { "met" } else { "missed" }.into(),
    ]);

    // Sizes.
    let size = |p: &str| std::fs::metadata(p).unwrap().len();
    // A binary's size, and its size zipped as Lambda receives it.
    let sizes = |bin: &str| format!("{} binary, {} zipped", mb(size(bin)), mb(zipped_size(bin)));
    let package_bin = format!(
        "{}/bootstrap",
        std::path::Path::new(&package_zip)
            .parent()
            .unwrap()
            .display()
    );
    rows.push([
        "binary size: the arm64 package Lambda receives".into(),
        format!(
            "{} binary, {} zipped",
            mb(size(&package_bin)),
            mb(size(&package_zip))
        ),
        "the host binary below, same profile".into(),
        "as small as the profile allows, init kept".into(),
        "report".into(),
    ]);
    rows.push([
        format!(
            "binary size: {}, stripped, this release profile",
            std::env::consts::ARCH
        ),
        sizes(&function_bin),
        format!("default `cargo build --release`: {}", sizes(&default_bin)),
        "≤ 10 MB".into(),
        met(size(&function_bin) <= 10_000_000),
    ]);
    rows.push([
        format!(
            "binary size: {}, static musl, not PIE, as the package is built",
            std::env::consts::ARCH
        ),
        sizes(&static_bin),
        "the glibc build above".into(),
        "report".into(),
        "report".into(),
    ]);

    let took = run_started.elapsed();
    let mut table = String::from(
        "| figure | measured | anchor, same run | target | |\n|---|---|---|---|---|\n",
    );
    for r in &rows {
        table.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    println!("\n{table}");
    for n in &notes {
        println!("{n}");
    }
    println!("benchmark run: {:.0} s", took.as_secs_f64());

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let doc = format!(
        "# Benchmarks\n\nWritten by `make bench` on {date}, commit {commit}, on {cores} × {cpu} \
         (the run took {secs:.0} s). AWS is moto {moto} on the same machine; every AWS call goes \
         through the counting proxy of tests/support/proxy.rs, and \"in moto\" is the time moto \
         took to answer. Times are wall clock, so ratios to the anchors matter more than the \
         absolute values. Do not edit by hand.\n\n{table}\n{notes}\n",
        date = support_date(),
        secs = took.as_secs_f64(),
        moto = std::env::var("MOTO_VERSION").unwrap_or_default(),
        notes = notes.iter().map(|n| format!("- {n}\n")).collect::<String>(),
    );
    std::fs::write(
        format!("{}/docs/benchmarks.md", env!("CARGO_MANIFEST_DIR")),
        doc,
    )
    .unwrap();
}

/// Today's date (UTC) without a date crate.
fn support_date() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
