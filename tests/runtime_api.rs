//! The built binary under the Lambda Runtime API contract: a local Runtime API endpoint hands it
//! events (GET /next with the Lambda-Runtime-* headers) and records what it posts back
//! (/response or /error), while moto stands in for AWS and a receiver for CloudFormation.
//!
//! The same contract is run twice: by the host's test build, and by the arm64 package that
//! ships (`make package`: bootstrap.zip, as Lambda receives it) under qemu-aarch64.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn the_binary_serves_events_from_the_runtime_api() {
    let bin = env!("CARGO_BIN_EXE_harness-ecs-delegate-bootstrap");
    serves_events_from_the_runtime_api(tokio::process::Command::new(bin), &[]).await;
}

/// The deployable that `make package` leaves, as Lambda receives it.
const PACKAGE: &str = "target/lambda/harness-ecs-delegate-bootstrap/bootstrap.zip";

/// `bootstrap.zip` unpacked into a fresh directory: the path of its `bootstrap`.
fn unpack_package() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let zip = root.join(PACKAGE);
    assert!(
        zip.exists(),
        "{PACKAGE} is missing: run `make package` (make test does) before cargo test"
    );
    // Not a package of older code: it must be newer than every source it is built from.
    let modified = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    for source in &package_sources() {
        assert!(
            modified(&zip) >= modified(source),
            "{PACKAGE} is older than {}: run `make package`",
            source.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("bootstrap-{}", unique("pkg")));
    std::fs::create_dir_all(&dir).unwrap();
    let listing = std::process::Command::new("unzip")
        .arg("-Z1")
        .arg(&zip)
        .output()
        .expect("unzip");
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout).trim(),
        "bootstrap",
        "the zip holds exactly one file, bootstrap, at its root"
    );
    let st = std::process::Command::new("unzip")
        .args(["-q", "-o"])
        .arg(&zip)
        .arg("-d")
        .arg(&dir)
        .status()
        .expect("unzip");
    assert!(st.success());
    dir.join("bootstrap")
}

/// (ELF machine, has a program interpreter), read from the ELF header of a 64-bit binary.
fn elf_machine_and_interpreter(bytes: &[u8]) -> (u16, bool) {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
    const PT_INTERP: u32 = 3;
    let interp = (0..phnum as usize).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP);
    (u16_at(18), interp)
}

#[tokio::test]
async fn the_arm64_package_serves_events_under_qemu() {
    let bootstrap = unpack_package();
    let bytes = std::fs::read(&bootstrap).unwrap();
    const EM_AARCH64: u16 = 183;
    assert_eq!(
        elf_machine_and_interpreter(&bytes),
        (EM_AARCH64, false),
        "bootstrap must be a static arm64 executable"
    );
    // Built without the tests' hooks (feature test-hooks): no way to make it panic on purpose.
    assert!(
        !bytes.windows(10).any(|w| w == b"test hook:"),
        "the package contains the test hooks"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&bootstrap).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "bootstrap is not executable in the zip");
    // With a quarter of its usual stacks: tokio's worker threads, which run a stack request's
    // work, get 2 MiB, and the main thread, which runs heals, Linux's default 8 MiB. The
    // release build needs well under a quarter of each (docs/release-profile.md: Stack), so
    // a path grown several times deeper fails here before it can on Lambda.
    let mut cmd = tokio::process::Command::new("qemu-aarch64");
    cmd.args(["-s", "2M"]).arg(&bootstrap);
    serves_events_from_the_runtime_api(cmd, &[("RUST_MIN_STACK", "524288")]).await;
}

/// Run the binary against `api` at TRACE (as a user chasing a problem would) until it has
/// answered `n` invocations: what it posted, and everything it logged.
/// AWS as the binary sees it here: moto, a region, dummy credentials, and the loopback
/// ResponseURLs of the test receiver.
fn emulator_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", aws()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("RESPONSE_URL_ALLOW_LOOPBACK", "true".into()),
        ("RECORD_TABLE", RECORD_TABLE.into()),
        (READY_POLL_ENV.0, READY_POLL_ENV.1.into()),
    ]
}

/// The function's LoggingConfig as template.yaml sets it (JSON).
const JSON_LOGS: &[(&str, &str)] = &[("AWS_LAMBDA_LOG_FORMAT", "JSON")];

/// Run the binary against `api` until it has posted `n` answers, with Lambda's environment and
/// `extra` (none: Lambda's default log format, text).
async fn run_binary(
    mut cmd: tokio::process::Command,
    api: &RuntimeApi,
    n: usize,
    extra: &[(&str, &str)],
) -> (Vec<Posted>, String) {
    cmd.env_clear();
    cmd.envs(extra.iter().copied());
    let mut child = cmd
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(api.lambda_env())
        .envs(emulator_env())
        // Even at the most verbose level, neither the ResponseURL nor the token may be logged.
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the binary");

    // Drain the output while the binary runs: trace logs would fill a pipe and block it.
    let drain = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut r, &mut buf).await;
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let posted = wait_for(&api.posted, n).await;
    // A figure for the template's MemorySize, printed rather than asserted (under qemu it
    // includes the emulator's own memory).
    if let Some(pid) = child.id() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(peak) = status.lines().find(|l| l.starts_with("VmHWM:")) {
            eprintln!(
                "peak RSS after {} invocations: {}",
                n,
                peak.trim_start_matches("VmHWM:").trim()
            );
        }
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout.await.unwrap()),
        String::from_utf8_lossy(&stderr.await.unwrap())
    );
    assert!(
        !logs.contains("has overflowed its stack"),
        "the binary ran out of stack: some path got deeper (docs/release-profile.md: Stack)\n{logs}"
    );
    // Under qemu a main thread that overflows dies without Rust's message.
    assert!(
        !logs.contains("uncaught target signal 11"),
        "the package died of a segmentation fault under qemu, most likely its main thread out of \
         stack: some path got deeper (docs/release-profile.md: Stack)\n{logs}"
    );
    (posted, logs)
}

/// A Create, a refused Create, an unknown event, a Plan and a Heal, each answered in order to
/// its own request id; `env` is added to Lambda's environment.
async fn serves_events_from_the_runtime_api(cmd: tokio::process::Command, env: &[(&str, &str)]) {
    let c = clients().await;
    let w = seed(&c, false).await;
    let rx = Receiver::start(0).await;
    let api = runtime_api().await;

    let mut good = w.fargate_props();
    good.as_object_mut()
        .unwrap()
        .remove("DelegateTokenSecretArn");
    good["DelegateToken"] = json!("runtime-plain-token-77");
    let bad = json!({"ClusterName": w.cluster, "AccountId": "a", "DelegateToken": "runtime-plain-token-77", "Cpu": "lots"});
    let events = vec![
        (
            "inv-create",
            cfn_event("Create", &rx.url("create"), &good, None, None),
        ),
        (
            "inv-bad",
            cfn_event("Create", &rx.url("bad"), &bad, None, None),
        ),
        ("inv-unknown", json!({"hello": "world"})),
        (
            "inv-plan",
            json!({"Action": "Plan", "ResourceProperties": good}),
        ),
        (
            "inv-heal",
            json!({"Action": "Heal", "Targets": [{"ClusterName": w.cluster}]}),
        ),
    ];
    for (id, e) in &events {
        api.events
            .lock()
            .unwrap()
            .push_back((id.to_string(), e.clone()));
    }

    let env: Vec<(&str, &str)> = JSON_LOGS.iter().chain(env).copied().collect();
    let (posted, logs) = run_binary(cmd, &api, events.len(), &env).await;
    assert_eq!(
        posted.len(),
        events.len(),
        "not every invocation was answered: {posted:?}\nlogs:\n{logs}"
    );

    let by_id = |id: &str| {
        posted
            .iter()
            .find(|p| p.request_id == id)
            .unwrap_or_else(|| panic!("no answer for {id}: {posted:?}"))
            .clone()
    };
    // One answer per invocation, in order, each to its own request id.
    assert_eq!(
        posted
            .iter()
            .map(|p| p.request_id.as_str())
            .collect::<Vec<_>>(),
        vec![
            "inv-create",
            "inv-bad",
            "inv-unknown",
            "inv-plan",
            "inv-heal"
        ]
    );

    let create = by_id("inv-create");
    assert_eq!(create.kind, "response");
    assert_eq!(create.body["Status"], "SUCCESS", "{:?}", create.body);
    let bad = by_id("inv-bad");
    assert_eq!(
        bad.kind, "response",
        "a bad request is answered to CloudFormation, so the invocation succeeds"
    );
    assert_eq!(bad.body["Status"], "FAILED");
    let unknown = by_id("inv-unknown");
    assert_eq!(unknown.kind, "error");
    assert_eq!(unknown.body["errorType"], "UnrecognisedEvent");
    assert!(
        unknown.body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("unrecognised event"),
        "{:?}",
        unknown.body
    );
    let plan = by_id("inv-plan");
    assert_eq!(plan.kind, "response");
    assert_eq!(
        plan.body["Actions"],
        json!([]),
        "the Create converged, so the plan is empty"
    );

    let heal = by_id("inv-heal");
    assert_eq!(heal.kind, "response");
    assert_eq!(heal.body["Status"], "SUCCESS", "{:?}", heal.body);
    let key = format!("{}/harness-delegate", w.cluster);
    assert_eq!(heal.body["Delegates"][0]["Delegate"], key.as_str());
    assert_eq!(heal.body["Delegates"][0]["Outcome"], "Converged");
    // One structured (JSON) log line per healed delegate, readable in CloudWatch Logs.
    let heal_lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "delegate heal")
        .collect();
    assert_eq!(heal_lines.len(), 1, "{logs}");
    let f = &heal_lines[0];
    // And one metrics record (Embedded Metric Format) for the delegate, in the namespace and
    // dimension the template's alarms read.
    let records: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some() && v["Delegate"] == key.as_str())
        .collect();
    let heals: Vec<&Value> = records
        .iter()
        .filter(|r| r.get("Repaired").is_some())
        .collect();
    assert_eq!(heals.len(), 1, "{logs}");
    // The stack Create wrote one too.
    assert!(
        records.iter().any(|r| r["ConvergeFailed"] == 0),
        "no converge record: {records:?}"
    );
    let m = heals[0];
    assert_eq!(
        m["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "HarnessDelegate"
    );
    assert_eq!(
        (
            m["Repaired"].as_i64(),
            m["HealFailed"].as_i64(),
            m["DesiredTasks"].as_i64()
        ),
        (Some(0), Some(0), Some(1)),
        "{m}"
    );
    assert_eq!(
        (
            f["trigger"].as_str(),
            f["delegate"].as_str(),
            f["outcome"].as_str()
        ),
        (Some("Heal"), Some(key.as_str()), Some("Converged")),
        "{f}"
    );

    // CloudFormation got one answer per CloudFormation request.
    let bodies = rx.bodies();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0]["Status"], "SUCCESS");
    assert_eq!(bodies[1]["Status"], "FAILED");
    assert!(
        bodies[1]["Reason"]
            .as_str()
            .unwrap()
            .contains("Cpu: \"lots\" is not a number"),
        "{}",
        bodies[1]
    );

    assert!(
        logs.contains("custom resource request handled"),
        "the binary logged nothing useful: {logs}"
    );
    // JSON lines as Lambda's JSON log format expects: timestamp and level at the top level of
    // every line, the message beside them (the SDK's TRACE events may carry fields alone), and
    // fields meant for queries as plain values.
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v.get("_aws").is_some() {
            continue; // a metrics record (Embedded Metric Format)
        }
        for key in ["timestamp", "level"] {
            assert!(v[key].is_string(), "no top-level {key}: {line}");
        }
        assert!(
            v.get("fields").is_none(),
            "fields nested, not at the top: {line}"
        );
    }
    let handled: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "custom resource request handled")
        .collect();
    assert!(
        handled
            .iter()
            .any(|v| v["request_type"] == "Create" && v["status"] == "SUCCESS"),
        "{handled:?}"
    );
    assert!(
        !logs.contains("d3adb33f"),
        "the ResponseURL reached the logs"
    );
    assert!(
        !logs.contains("runtime-plain-token-77"),
        "the token reached the logs"
    );
    let raw = serde_json::to_string(&posted.iter().map(|p| &p.body).collect::<Vec<_>>()).unwrap();
    assert!(
        !raw.contains("runtime-plain-token-77"),
        "the token reached an invocation result"
    );
}

/// Scenario "secrets": the binary at TRACE runs every kind of request for a delegate with a
/// plain token and for one with a secret ARN, including a request that fails. Neither the
/// token nor the ResponseURL's presigned query reaches a log line, an invocation result (the
/// plan included) or a body CloudFormation receives.
#[tokio::test]
async fn no_secret_reaches_a_log_a_result_or_cloudformation() {
    const TOKEN: &str = "tok-5ecret-Value-0419";
    let c = clients().await;
    let rx = Receiver::start(0).await;
    let api = runtime_api().await;
    let mut events: Vec<Value> = Vec::new();
    for with_secret in [false, true] {
        let w = seed(&c, false).await;
        let mut props = w.fargate_props();
        if !with_secret {
            props
                .as_object_mut()
                .unwrap()
                .remove("DelegateTokenSecretArn");
            props["DelegateToken"] = json!(TOKEN);
        }
        let arn = format!(
            "arn:aws:ecs:us-east-1:123456789012:service/{}/harness-delegate",
            w.cluster
        );
        let mut changed = props.clone();
        changed["DesiredCount"] = json!("2");
        let mut bad = props.clone();
        // Fails with the token among the properties.
        bad["Cpu"] = json!("lots");
        events.extend([
            cfn_event("Create", &rx.url("create"), &props, None, None),
            json!({"Action": "Plan", "ResourceProperties": changed}),
            cfn_event(
                "Update",
                &rx.url("update"),
                &changed,
                Some(&arn),
                Some(&props),
            ),
            cfn_event("Update", &rx.url("bad"), &bad, Some(&arn), Some(&changed)),
            json!({"Action": "Heal", "Targets": [{"ClusterName": w.cluster}]}),
            json!({"Action": "Reconcile", "ResourceProperties": changed, "Force": true}),
            cfn_event("Delete", &rx.url("delete"), &changed, Some(&arn), None),
        ]);
    }
    // A ResponseURL that is not S3's: refused, and its query must not be logged either.
    events.push(cfn_event(
        "Create",
        "https://evil.example.com/cfn?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=d3adb33f",
        &json!({"ClusterName": "c", "AccountId": "a", "DelegateToken": TOKEN}),
        None,
        None,
    ));
    for (i, e) in events.iter().enumerate() {
        api.events
            .lock()
            .unwrap()
            .push_back((format!("inv-{i}"), e.clone()));
    }
    let bin = env!("CARGO_BIN_EXE_harness-ecs-delegate-bootstrap");
    let (posted, logs) = run_binary(
        tokio::process::Command::new(bin),
        &api,
        events.len(),
        JSON_LOGS,
    )
    .await;
    assert_eq!(posted.len(), events.len(), "{posted:?}\n{logs}");
    let refused = posted.last().unwrap();
    assert_eq!(refused.kind, "error", "{refused:?}");
    assert_eq!(refused.body["errorType"], "CloudFormationNotAnswered");
    let bodies = rx.bodies();
    assert_eq!(bodies.len(), 8, "four stack requests each: {bodies:?}");
    let failed: Vec<&Value> = bodies.iter().filter(|b| b["Status"] == "FAILED").collect();
    assert_eq!(failed.len(), 2, "only the bad Updates fail: {bodies:?}");

    let secrets = [
        TOKEN,
        "X-Amz-Signature",
        "d3adb33f",
        "X-Amz-Algorithm",
        "cfn-responses",
    ];
    let results: Vec<String> = posted.iter().map(|p| p.body.to_string()).collect();
    let answers: Vec<String> = bodies.iter().map(Value::to_string).collect();
    let lines: Vec<&str> = logs.lines().collect();
    assert!(lines.len() > 100, "TRACE logged little: {logs}");
    let mut leaks = Vec::new();
    for (what, texts) in [
        (
            "log line",
            lines.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        ),
        ("invocation result", results.clone()),
        ("CloudFormation body", answers.clone()),
    ] {
        for t in &texts {
            for s in secrets {
                if t.contains(s) {
                    leaks.push(format!("{what} holds {s}: {t}"));
                }
            }
        }
    }
    record_figures(
        "secrets",
        &json!({
            "requests at TRACE": events.len(),
            "log lines scanned": lines.len(),
            "invocation results scanned": results.len(),
            "CloudFormation bodies scanned": answers.len(),
            "leaks": leaks.len(),
        }),
    );
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

/// Behind an HTTP proxy that takes credentials (`HTTP_PROXY=http://user:pass@host`), the SDK's
/// HTTP client logs each plain-HTTP request's URL at DEBUG as it adds the proxy's credentials;
/// for the response PUT that URL carries the presigned query. At TRACE, the answer still
/// reaches CloudFormation through the proxy, and neither the query nor the proxy's password is
/// logged.
#[tokio::test]
async fn a_response_through_an_authenticated_proxy_logs_no_signature() {
    const PASSWORD: &str = "pr0xy-Pass-0419";
    let api = runtime_api().await;
    // The receiver plays the proxy too: it answers the absolute-form request itself.
    let rx = Receiver::start(0).await;
    let proxy = format!("http://proxy-user:{PASSWORD}@{}", rx.addr);
    // Refused before any AWS call: the only request the binary makes is the answer's PUT.
    let bad = json!({"ClusterName": "c", "AccountId": "a", "DelegateToken": "t", "Cpu": "lots"});
    api.events.lock().unwrap().push_back((
        "inv-proxied".into(),
        cfn_event("Create", &rx.url("proxied"), &bad, None, None),
    ));
    let bin = env!("CARGO_BIN_EXE_harness-ecs-delegate-bootstrap");
    let (posted, logs) = run_binary(
        tokio::process::Command::new(bin),
        &api,
        1,
        &[("HTTP_PROXY", proxy.as_str())],
    )
    .await;
    assert_eq!(posted.len(), 1, "{posted:?}\n{logs}");
    let requests = rx.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}\n{logs}");
    let put = &requests[0];
    // Sent as to a proxy: the whole URL as the target, with the proxy's credentials.
    assert!(put.path.starts_with("http://"), "not proxied: {}", put.path);
    assert!(
        put.header("proxy-authorization")
            .is_some_and(|v| v.starts_with("Basic ")),
        "no proxy credentials: {:?}",
        put.headers
    );
    let body: Value = serde_json::from_slice(&put.body).unwrap();
    assert_eq!(body["Status"], "FAILED", "{body}");
    for secret in ["X-Amz-Signature", "d3adb33f", PASSWORD] {
        let leaked: Vec<&str> = logs.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaked.is_empty(), "a log line holds {secret}: {leaked:?}");
    }
}

/// Events nested deeper than serde_json's limit of 128, or very large (1 MB), get an invocation
/// error, and the binary goes on serving; a CloudFormation request among them is still answered,
/// once, FAILED, naming what could not be read.
#[tokio::test]
async fn the_binary_survives_events_it_cannot_parse() {
    let api = runtime_api().await;
    let rx = Receiver::start(0).await;
    let mut deep = json!(1);
    for _ in 0..1000 {
        deep = json!([deep]);
    }
    let deep_create = cfn_event(
        "Create",
        &rx.url("deep"),
        &json!({"ClusterName": "c", "Tags": {"t": deep.clone()}}),
        None,
        None,
    );
    let huge = json!({"Action": "Plan", "ResourceProperties": {"ClusterName": "c", "AccountId": "a",
        "DelegateToken": "t", "DelegateName": "n".repeat(1 << 20)}});
    let events = [
        ("inv-deep", deep),
        ("inv-deep-create", deep_create),
        ("inv-huge", huge),
        (
            "inv-after",
            json!({"Action": "Heal", "Targets": [{"ClusterName": unique("none")}]}),
        ),
    ];
    for (id, e) in &events {
        api.events
            .lock()
            .unwrap()
            .push_back((id.to_string(), e.clone()));
    }
    let bin = env!("CARGO_BIN_EXE_harness-ecs-delegate-bootstrap");
    let (posted, logs) =
        run_binary(tokio::process::Command::new(bin), &api, events.len(), &[]).await;
    let ids: Vec<(&str, &str)> = posted
        .iter()
        .map(|p| (p.request_id.as_str(), p.kind.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            ("inv-deep", "error"),
            ("inv-deep-create", "response"),
            ("inv-huge", "error"),
            ("inv-after", "response")
        ],
        "{posted:?}\n{}",
        logs.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    // Without AWS_LAMBDA_LOG_FORMAT (Lambda's default, text), the lines are text.
    assert!(
        logs.lines()
            .any(|l| l.contains(" INFO ") || l.contains(" WARN ")),
        "no text log line: {logs}"
    );
    assert!(
        !logs.trim_start().starts_with('{'),
        "JSON without the JSON format: {logs}"
    );
    let answers = rx.bodies();
    assert_eq!(
        answers.len(),
        1,
        "one answer to the deep Create: {answers:?}"
    );
    assert_eq!(answers[0]["Status"], "FAILED");
    let reason = answers[0]["Reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("ResourceProperties nested deeper"),
        "{reason}"
    );
    let huge_error = posted[2].body["errorMessage"].as_str().unwrap_or_default();
    assert!(huge_error.contains("DelegateName"), "{huge_error}");
    assert!(
        huge_error.len() < 4096,
        "the error repeats the input: {} bytes",
        huge_error.len()
    );
}

/// Without a Runtime API (run by hand, not by Lambda) the binary says how to run it, and does
/// not panic.
#[tokio::test]
async fn the_binary_outside_lambda_prints_its_usage() {
    let bin = env!("CARGO_BIN_EXE_harness-ecs-delegate-bootstrap");
    let out = tokio::process::Command::new(bin)
        .env_clear()
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("usage:") && stderr.contains("AWS_LAMBDA_RUNTIME_API"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// cargo-lambda's emulator sends `Lambda-Runtime-Deadline-Ms: 600000`, long past as an epoch
/// time: the function treats it as unknown, uses a local deadline, and installs the delegate.
#[tokio::test]
async fn an_emulators_implausible_deadline_is_replaced_by_a_local_one() {
    let c = clients().await;
    let w = seed(&c, false).await;
    let rx = Receiver::start(0).await;
    let api = runtime_api_with_deadline(Deadline::Header("600000")).await;
    let create = cfn_event("Create", &rx.url("create"), &w.fargate_props(), None, None);
    api.events
        .lock()
        .unwrap()
        .push_back(("inv-create".to_string(), create));
    let bin = env!("CARGO_BIN_EXE_harness-ecs-delegate-bootstrap");
    // AWS_LAMBDA_LOG_LEVEL (the LoggingConfig's application level) wins over RUST_LOG, as in
    // the runtime's own subscriber.
    let env = [
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("AWS_LAMBDA_LOG_LEVEL", "WARN"),
    ];
    let (posted, logs) = run_binary(tokio::process::Command::new(bin), &api, 1, &env).await;
    assert_eq!(posted[0].kind, "response", "{:?}", posted[0].body);
    let answer = rx.bodies().pop().expect("CloudFormation was answered");
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert!(
        logs.contains("not a plausible Lambda deadline"),
        "no warning logged"
    );
    let levels: std::collections::BTreeSet<String> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["level"].as_str().map(String::from))
        .collect();
    assert!(
        levels.iter().all(|l| l == "WARN" || l == "ERROR"),
        "AWS_LAMBDA_LOG_LEVEL=WARN let through {levels:?}"
    );
}

/// Under cargo-lambda's own Runtime API (`cargo lambda watch --only-lambda-apis`, then
/// `cargo lambda invoke`), as a Rust Lambda developer runs a function locally, a stack Create
/// installs the delegate on moto and answers SUCCESS. Its emulator's deadline is not an epoch
/// time: the function must not take it for one.
#[tokio::test]
async fn a_create_through_cargo_lambdas_runtime_api_installs_the_delegate() {
    let c = clients().await;
    let w = seed(&c, false).await;
    let rx = Receiver::start(0).await;
    let cargo_lambda = venv_bin("cargo-lambda");
    let port = free_port();
    let mut watch = tokio::process::Command::new(&cargo_lambda)
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "--invoke-address",
            "127.0.0.1",
        ])
        .args(["--invoke-port", &port.to_string()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("cargo lambda watch starts");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut function =
        tokio::process::Command::new(env!("CARGO_BIN_EXE_harness-ecs-delegate-bootstrap"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // What `cargo lambda watch --only-lambda-apis` says to set.
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "4096")
            .envs(emulator_env())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the function starts");
    let event = cfn_event("Create", &rx.url("create"), &w.fargate_props(), None, None);
    let file = std::env::temp_dir().join(format!("{}.json", unique("cargo-lambda-create")));
    std::fs::write(&file, event.to_string()).unwrap();
    let invoked = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(&cargo_lambda)
            .args(["lambda", "invoke", "--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string(), "--data-file"])
            .arg(&file)
            .arg("_")
            .output(),
    )
    .await
    .expect("cargo lambda invoke answers within two minutes")
    .unwrap();
    let _ = std::fs::remove_file(&file);
    let _ = function.start_kill();
    let _ = watch.start_kill();
    let result = String::from_utf8_lossy(&invoked.stdout).to_string();
    assert!(
        invoked.status.success(),
        "{result}\n{}",
        String::from_utf8_lossy(&invoked.stderr)
    );
    let result: Value =
        serde_json::from_str(result.trim()).unwrap_or_else(|e| panic!("{e}: {result}"));
    assert_eq!(result["Status"], "SUCCESS", "{result}");
    let answer = rx.bodies().pop().expect("CloudFormation was answered");
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    let s = service(&c, &w.cluster, "harness-delegate").await.unwrap();
    assert_eq!(s.status(), Some("ACTIVE"));
}
