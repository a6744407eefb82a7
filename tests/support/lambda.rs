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
