//! A local Lambda Runtime API: it hands the built binary events (GET /next with the
//! Lambda-Runtime-* headers, a deadline of the test's choosing) and records what the binary
//! posts back (/response or /error).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::*;

#[derive(Debug, Clone)]
pub struct Posted {
    pub request_id: String,
    pub kind: String,
    pub body: Value,
}

pub struct RuntimeApi {
    pub addr: std::net::SocketAddr,
    pub events: Arc<Mutex<VecDeque<(String, Value)>>>,
    pub posted: Arc<Mutex<Vec<Posted>>>,
}

impl RuntimeApi {
    /// The environment Lambda gives a function, with this API as its Runtime API.
    pub fn lambda_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", "bootstrap".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/11/27/[$LATEST]0123".into(),
            ),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bootstrap".into()),
        ]
    }
}

pub async fn runtime_api() -> RuntimeApi {
    runtime_api_with_deadline(Deadline::In(Duration::from_secs(60))).await
}

/// The `Lambda-Runtime-Deadline-Ms` a Runtime API sends with each event.
#[derive(Clone, Copy, Debug)]
pub enum Deadline {
    /// This long after the event is handed out, as Lambda would (its Timeout).
    In(Duration),
    /// This text, whatever the time (an emulator's idea of a deadline).
    Header(&'static str),
}

/// A Runtime API that sends `deadline` with each event.
pub async fn runtime_api_with_deadline(deadline: Deadline) -> RuntimeApi {
    let events: Arc<Mutex<VecDeque<(String, Value)>>> = Default::default();
    let posted: Arc<Mutex<Vec<Posted>>> = Default::default();
    let (ev, po) = (events.clone(), posted.clone());
    let addr = serve(Arc::new(move |req: Request| {
        let (ev, po) = (ev.clone(), po.clone());
        Box::pin(async move {
            if req.method == "GET" && req.path == "/2018-06-01/runtime/invocation/next" {
                loop {
                    let next = ev.lock().unwrap().pop_front();
                    if let Some((id, event)) = next {
                        let deadline = match deadline {
                            Deadline::Header(text) => text.to_string(),
                            Deadline::In(d) => {
                                let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + d;
                                at.as_millis().to_string()
                            }
                        };
                        return Response {
                            status: 200,
                            headers: vec![
                                ("Content-Type".into(), "application/json".into()),
                                ("Lambda-Runtime-Aws-Request-Id".into(), id),
                                ("Lambda-Runtime-Deadline-Ms".into(), deadline),
                                ("Lambda-Runtime-Invoked-Function-Arn".into(), "arn:aws:lambda:us-east-1:123456789012:function:bootstrap".into()),
                                ("Lambda-Runtime-Trace-Id".into(), "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1".into()),
                            ],
                            body: event.to_string().into_bytes(),
                        };
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let parts: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
            if req.method == "POST" && parts.len() == 5 && parts[2] == "invocation" {
                po.lock().unwrap().push(Posted {
                    request_id: parts[3].to_string(),
                    kind: parts[4].to_string(),
                    body: serde_json::from_slice(&req.body).unwrap_or(Value::Null),
                });
                return Response::status(202, "{\"status\":\"OK\"}");
            }
            po.lock().unwrap().push(Posted { request_id: String::new(), kind: req.path.clone(), body: Value::Null });
            Response::status(404, "")
        })
    }))
    .await;
    RuntimeApi {
        addr,
        events,
        posted,
    }
}

/// The answers posted so far, once there are `n` of them (or after 90 s, whatever there is).
pub async fn wait_for(posted: &Arc<Mutex<Vec<Posted>>>, n: usize) -> Vec<Posted> {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let p = posted.lock().unwrap().clone();
        if p.len() >= n || std::time::Instant::now() > deadline {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The built function with the emulator's environment: AWS through `endpoint` (moto, or a
/// proxy in front of it) in `region`, the record table, the role ECS names as the creator of
/// what it creates through the proxy, and the tests' quick look at rollouts.
pub fn function_binary(endpoint: &str, region: &str) -> tokio::process::Command {
    // Integration tests know the built function; the simulator example never starts it.
    let bin = option_env!("CARGO_BIN_EXE_harness-ecs-delegate-bootstrap")
        .unwrap_or("harness-ecs-delegate-bootstrap");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", region)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("RESPONSE_URL_ALLOW_LOOPBACK", "true")
        .env("RECORD_TABLE", RECORD_TABLE)
        .env("FUNCTION_ROLE_ARN", FUNCTION_ROLE)
        .env(READY_POLL_ENV.0, READY_POLL_ENV.1)
        .kill_on_drop(true);
    cmd
}

/// The built binary as Lambda runs it: AWS through `proxy`, each invocation ending `timeout`
/// after it starts, and Lambda's asynchronous invocations of the function (which the proxy
/// queues) delivered to it in turn. Its log is kept (at `log_level`).
pub struct Lambda {
    pub api: RuntimeApi,
    /// Killed when the test ends.
    _child: tokio::process::Child,
    pub log: Arc<Mutex<String>>,
    /// Requests sent, continuations delivered.
    pub requests: Arc<Mutex<usize>>,
    pub delivered: Arc<Mutex<usize>>,
    /// While set, Lambda keeps the function's invocations of itself queued.
    pub hold: Arc<std::sync::atomic::AtomicBool>,
}

impl Lambda {
    pub async fn start(proxy: &Proxy, region: &str, timeout: Duration, log_level: &str) -> Lambda {
        Self::start_with(proxy, region, timeout, log_level, &[]).await
    }

    /// The same, with more of the function's environment (what its stack would set).
    pub async fn start_with(
        proxy: &Proxy,
        region: &str,
        timeout: Duration,
        log_level: &str,
        env: &[(&str, &str)],
    ) -> Lambda {
        let api = runtime_api_with_deadline(Deadline::In(timeout)).await;
        let mut child = function_binary(&proxy.endpoint, region)
            .env("AWS_LAMBDA_LOG_LEVEL", log_level)
            .envs(api.lambda_env())
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the binary");
        let log: Arc<Mutex<String>> = Default::default();
        let mut stderr = child.stderr.take().unwrap();
        let l = log.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                l.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let delivered: Arc<Mutex<usize>> = Default::default();
        let hold: Arc<std::sync::atomic::AtomicBool> = Default::default();
        let (events, d, p, h) = (
            api.events.clone(),
            delivered.clone(),
            proxy.clone(),
            hold.clone(),
        );
        tokio::spawn(async move {
            loop {
                let held = h.load(std::sync::atomic::Ordering::SeqCst);
                let invoked = if held { vec![] } else { p.invocations() };
                {
                    let mut done = d.lock().unwrap();
                    for payload in invoked.iter().skip(*done) {
                        events
                            .lock()
                            .unwrap()
                            .push_back((unique("continuation"), payload.clone()));
                    }
                    *done = (*done).max(invoked.len());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Lambda {
            api,
            _child: child,
            log,
            requests: Default::default(),
            delivered,
            hold,
        }
    }

    /// Send a CloudFormation request and wait until CloudFormation has its answer and every
    /// invocation it led to has ended: the body CloudFormation received, which must be the
    /// only answer.
    pub async fn request(&self, rx: &Receiver, event: Value) -> Value {
        let before = rx.count();
        self.send(event);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !(rx.count() > before && self.all_ended()) {
            assert!(std::time::Instant::now() < deadline, "no answer in 120 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A second answer, or another invocation, would come now.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(self.all_ended(), "an invocation after the answer");
        assert_eq!(rx.count(), before + 1, "one answer to CloudFormation");
        rx.bodies().pop().unwrap()
    }

    /// Hand the binary one invocation.
    pub fn send(&self, event: Value) {
        *self.requests.lock().unwrap() += 1;
        self.api
            .events
            .lock()
            .unwrap()
            .push_back((unique("invocation"), event));
    }

    /// Every invocation handed to the binary (requests and continuations) has ended.
    pub fn all_ended(&self) -> bool {
        let invocations = *self.requests.lock().unwrap() + *self.delivered.lock().unwrap();
        self.api.posted.lock().unwrap().len() >= invocations
    }

    /// Deliver an event that must not answer CloudFormation: what the invocation returned.
    pub async fn silent(&self, rx: &Receiver, event: Value) -> Value {
        let before = rx.count();
        self.send(event);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.all_ended() {
            assert!(std::time::Instant::now() < deadline, "not done in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(rx.count(), before, "CloudFormation was answered again");
        self.results().pop().unwrap()
    }

    /// What the invocations returned to Lambda, in order.
    pub fn results(&self) -> Vec<Value> {
        self.api
            .posted
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.body.clone())
            .collect()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// Every file the package is built from (src/, its folders, Cargo.toml, Cargo.lock): a package
/// older than one of them is not of this code.
pub fn package_sources() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![root.join("Cargo.toml"), root.join("Cargo.lock")];
    out.extend(files_under(&root.join("src")));
    out
}

/// Every file under `dir`, in its folders too.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}
