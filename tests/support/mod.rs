//! Shared test support: the moto emulator (started once per test binary), SDK clients pointed at
//! it, a tiny HTTP/1.1 server (CloudFormation response receiver, Lambda Runtime API, fault
//! proxy), and seeding of the AWS state a platform team already has.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use harness_ecs_delegate_bootstrap::handler::Handler;
use harness_ecs_delegate_bootstrap::respond::RetryPolicy;
use harness_ecs_delegate_bootstrap::Clients;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub mod ecs_sim;
pub mod front;
pub mod harness_api;
pub mod lambda;
pub mod proxy;
#[allow(unused_imports)] // not every test binary uses these
pub use lambda::*;
#[allow(unused_imports)]
pub use proxy::*;

// ---- moto -------------------------------------------------------------------------------------

static MOTO: OnceLock<String> = OnceLock::new();

/// The endpoint of a moto server for this test binary. Uses `MOTO_ENDPOINT` if set, else starts
/// `moto_server` (from `MOTO_SERVER`, or the repo's `.venv`). Panics, never skips, if it cannot.
#[allow(clippy::zombie_processes)] // the watchdog below is deliberately not waited for
pub fn moto() -> String {
    MOTO.get_or_init(|| {
        if let Ok(e) = std::env::var("MOTO_ENDPOINT") {
            return e;
        }
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| {
            format!("{}/.venv/bin/moto_server", env!("CARGO_MANIFEST_DIR"))
        });
        assert!(
            std::path::Path::new(&bin).exists(),
            "moto_server not found at {bin}: run `make test` (it installs moto in .venv), or set MOTO_SERVER"
        );
        let port = free_port();
        // The watchdog ends moto when this test process exits, so no server outlives the run;
        // it is not waited for because it lives exactly as long as this process.
        let script = format!(
            "\"{bin}\" -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill $m",
            pid = std::process::id()
        );
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "false")
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "moto_server did not start on port {port} within 60 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        endpoint
    })
    .clone()
}

/// A program of the test venv (`.venv/bin/NAME`, or beside `MOTO_SERVER`).
pub fn venv_bin(name: &str) -> std::path::PathBuf {
    let dir = match std::env::var("MOTO_SERVER") {
        Ok(m) => std::path::Path::new(&m)
            .parent()
            .expect("MOTO_SERVER is a path")
            .to_path_buf(),
        Err(_) => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin"),
    };
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} not found: run `make test` (it installs the test venv)",
        bin.display()
    );
    bin
}

/// template.yaml as JSON, read by cfn-lint's own YAML loader from the test venv (it knows
/// `!Ref`, `!Sub`, …).
pub fn template_json() -> Value {
    let path = format!("{}/template.yaml", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(venv_bin("python"))
        .args([
            "-c",
            "import json, sys\nfrom cfnlint.decode.cfn_yaml import load\nprint(json.dumps(load(sys.argv[1]), default=str))",
            &path,
        ])
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the template as JSON")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A name no other test (or earlier run against the same moto) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
        % 1_000_000_000;
    format!("{prefix}-{t}-{n}")
}

pub async fn clients_for(endpoint: &str) -> Clients {
    clients_at(endpoint, "us-east-1").await
}

/// Clients for `region` of the AWS at `endpoint`. moto keeps regions apart, so a test that heals
/// "every delegate in the region" gets a region of its own.
pub async fn clients_at(endpoint: &str, region: &str) -> Clients {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(region.to_string()))
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await;
    with_table(Clients::new(&config), region).await
}

/// The record table tests use, in every region (template.yaml names its own).
pub const RECORD_TABLE: &str = "harness-delegate-records";

/// `c` with the record table, made in `region` of moto (not through `c`'s endpoint, which may
/// be a proxy that fails on purpose) if it is not there yet.
pub async fn with_table(mut c: Clients, region: &str) -> Clients {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto())
        .region(aws_config::Region::new(region.to_string()))
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await;
    let made = aws_sdk_dynamodb::Client::new(&config)
        .create_table()
        .table_name(RECORD_TABLE)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("delegate")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("delegate")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await;
    if let Err(e) = made {
        let in_use = e
            .as_service_error()
            .is_some_and(|se| se.is_resource_in_use_exception());
        assert!(in_use, "creating the record table: {e:?}");
    }
    c.store.table = Some(RECORD_TABLE.to_string());
    c
}

/// Clients whose calls time out after `attempt` and are tried again: a slow answer then costs
/// seconds, not the 30 s of the function's own setting.
pub async fn clients_with_attempt_timeout(
    endpoint: &str,
    region: &str,
    attempt: Duration,
) -> Clients {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(region.to_string()))
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(attempt)
                .build(),
        )
        .load()
        .await;
    with_table(Clients::new(&config), region).await
}

/// Record figures for docs/reliability.md: `scripts/reliability_report.py` gathers what every
/// test of the run wrote (under cargo's target dir) into that page.
pub fn record_figures(name: &str, figures: &Value) {
    let dir = std::path::Path::new(option_env!("CARGO_TARGET_TMPDIR").unwrap_or("target/tmp"))
        .join("reliability");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(figures).unwrap(),
    )
    .unwrap();
    println!("figures {name}: {figures}");
}

pub async fn clients() -> Clients {
    clients_for(&aws()).await
}

static AWS: OnceLock<String> = OnceLock::new();

/// AWS as the function meets it: moto behind a proxy that injects no fault but simulates what
/// ECS does and moto does not (refusals, tasks, deployments, events; see [`ecs_sim`]). One per
/// test binary, on a runtime of its own, since each test's runtime ends with the test.
pub fn aws() -> String {
    AWS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let proxy = Proxy::start(vec![]).await;
                tx.send(proxy.endpoint.clone()).unwrap();
                std::future::pending::<()>().await
            });
        });
        rx.recv().expect("the simulated AWS starts")
    })
    .clone()
}

/// A region no other test of this binary uses (moto knows these).
pub fn fresh_region() -> &'static str {
    const REGIONS: &[&str] = &[
        "us-west-2",
        "us-west-1",
        "us-east-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "eu-central-1",
        "eu-north-1",
        "ap-south-1",
        "ap-south-2",
        "eu-central-2",
        "il-central-1",
        "ap-northeast-2",
        "ap-southeast-1",
        "ap-southeast-2",
        "ca-central-1",
        "sa-east-1",
        "ap-northeast-3",
        "eu-south-1",
        "me-south-1",
        "af-south-1",
        "ap-east-1",
    ];
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst) as usize;
    REGIONS
        .get(n)
        .expect("more region-isolated tests than regions: add regions to fresh_region")
}

pub fn handler(clients: Clients) -> Handler {
    Handler {
        clients,
        allow_loopback: true,
        retry: RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(50),
        },
        heal: Default::default(),
        home: Default::default(),
        poll: READY_POLL,
        function_arn: Default::default(),
    }
}

/// How often the tests' function looks at a rollout: the simulator moves on each look, and a
/// test has no wall time to spare.
pub const READY_POLL: Duration = Duration::from_millis(200);
/// The same for the built binary (`READY_POLL_SECONDS`).
pub const READY_POLL_ENV: (&str, &str) = ("READY_POLL_SECONDS", "0.2");

// ---- reading AWS state back ------------------------------------------------------------------

/// The ACTIVE revisions of exactly this family.
pub async fn active_revisions(c: &Clients, family: &str) -> Vec<String> {
    let out = c
        .ecs
        .list_task_definitions()
        .family_prefix(family)
        .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
        .send()
        .await
        .unwrap();
    out.task_definition_arns()
        .iter()
        .filter(|a| a.rsplit('/').next().unwrap().rsplit_once(':').unwrap().0 == family)
        .cloned()
        .collect()
}

/// A task definition revision as ECS describes it.
pub async fn revision(c: &Clients, arn: &str) -> aws_sdk_ecs::types::TaskDefinition {
    c.ecs
        .describe_task_definition()
        .task_definition(arn)
        .send()
        .await
        .unwrap()
        .task_definition()
        .unwrap()
        .clone()
}

/// A revision the function never registered, of a family of its own: one container running
/// `image`, with `tags`. Its ARN.
pub async fn register_foreign(
    c: &Clients,
    family: &str,
    image: &str,
    tags: Vec<aws_sdk_ecs::types::Tag>,
) -> String {
    c.ecs
        .register_task_definition()
        .family(unique(family))
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name(family)
                .image(image)
                .memory(256)
                .build(),
        )
        .set_tags(Some(tags))
        .send()
        .await
        .unwrap()
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_string()
}

/// The service as ECS describes it, with tags.
pub async fn service(
    c: &Clients,
    cluster: &str,
    name: &str,
) -> Option<aws_sdk_ecs::types::Service> {
    let out = c
        .ecs
        .describe_services()
        .cluster(cluster)
        .services(name)
        .include(aws_sdk_ecs::types::ServiceField::Tags)
        .send()
        .await
        .unwrap();
    out.services().first().cloned()
}

/// Security groups of this name in the VPC.
pub async fn groups_named(c: &Clients, vpc: &str, name: &str) -> Vec<String> {
    let out = c
        .ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(vpc)
                .build(),
        )
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values(name)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.security_groups()
        .iter()
        .map(|g| g.group_id().unwrap().to_string())
        .collect()
}

/// The `Action` names of a plan or result.
pub fn action_names(result: &Value) -> Vec<String> {
    result["Actions"]
        .as_array()
        .expect("a list of actions")
        .iter()
        .map(|a| a["Action"].as_str().unwrap().to_string())
        .collect()
}

// ---- a tiny HTTP server -----------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn ok() -> Self {
        Response {
            status: 200,
            headers: vec![],
            body: vec![],
        }
    }
    pub fn status(status: u16, body: &str) -> Self {
        Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }
    /// No answer at all: the server resets the connection after reading the request.
    pub fn dropped() -> Self {
        Response {
            status: 0,
            headers: vec![],
            body: vec![],
        }
    }
}

pub type BoxFut = Pin<Box<dyn Future<Output = Response> + Send>>;
pub type Service = Arc<dyn Fn(Request) -> BoxFut + Send + Sync>;

/// Serve HTTP/1.1 on a free loopback port, one request per connection.
pub async fn serve(service: Service) -> SocketAddr {
    serve_at("127.0.0.1:0", service).await
}

/// [`serve`] on a given address (the ECS simulator of `make emulator` listens on a known port).
pub async fn serve_at(addr: &str, service: Service) -> SocketAddr {
    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let Some(req) = read_request(&mut sock).await else {
                    return;
                };
                let resp = service(req).await;
                if resp.status == 0 {
                    // Linger 0: closing sends a reset, as a dropped connection does.
                    let _ = sock.set_zero_linger();
                    return;
                }
                let mut out = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    resp.status,
                    resp.body.len()
                );
                for (k, v) in &resp.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let _ = sock.write_all(out.as_bytes()).await;
                let _ = sock.write_all(&resp.body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}

/// One HTTP/1.1 request from `sock`, its body whole (a chunked one decoded); `None` at the
/// end of the connection.
pub async fn read_request<S: tokio::io::AsyncRead + Unpin>(sock: &mut S) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if let Some(len) = get("content-length").and_then(|l| l.parse::<usize>().ok()) {
        while body.len() < len {
            let n = sock.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        while !body.ends_with(b"0\r\n\r\n") {
            let n = sock.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body = dechunk(&body);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + size]);
        b = &b[i + 2 + size + 2..];
    }
    out
}

/// Stands in for CloudFormation's presigned S3 URL: records every request it receives. Answers
/// the first `fail_first` requests with HTTP 503, to exercise the PUT retry.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    pub async fn start(fail_first: u32) -> Receiver {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicU32::new(fail_first));
        let recorded = requests.clone();
        let addr = serve(Arc::new(move |req: Request| {
            let recorded = recorded.clone();
            let failures = failures.clone();
            Box::pin(async move {
                recorded.lock().unwrap().push(req);
                if failures.load(Ordering::SeqCst) > 0 {
                    failures.fetch_sub(1, Ordering::SeqCst);
                    return Response::status(503, "SlowDown");
                }
                Response::ok()
            })
        }))
        .await;
        Receiver { addr, requests }
    }

    /// A receiver that gives these answers to the first requests (a 5xx, `Response::dropped()`
    /// for a reset), then 200.
    pub async fn scripted(first: Vec<Response>) -> Receiver {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(first)));
        let recorded = requests.clone();
        let addr = serve(Arc::new(move |req: Request| {
            let (recorded, script) = (recorded.clone(), script.clone());
            Box::pin(async move {
                recorded.lock().unwrap().push(req);
                let next = script.lock().unwrap().pop_front();
                next.unwrap_or_else(Response::ok)
            })
        }))
        .await;
        Receiver { addr, requests }
    }

    pub fn url(&self, name: &str) -> String {
        format!(
            "http://{}/cfn-responses/{name}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=d3adb33f",
            self.addr
        )
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.json())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

// ---- the AWS state a platform team already has ------------------------------------------------

#[derive(Clone)]
pub struct World {
    pub name: String,
    pub vpc: String,
    pub private: Vec<String>,
    pub public: String,
    pub cluster: String,
    pub exec_role: String,
    pub task_role: String,
    /// A role that trusts only ec2.amazonaws.com.
    pub ec2_only_role: String,
    pub instance: Option<String>,
}

/// A VPC with two private subnets and one public one (routed to an internet gateway), an ECS
/// cluster, roles, and (optionally) one EC2 container instance in the first private subnet.
pub async fn seed(c: &Clients, with_instance: bool) -> World {
    let name = unique("t");
    let region = c.ecs.config().region().expect("a region").to_string();
    let az = |x: &str| format!("{region}{x}");
    let vpc = c
        .ec2
        .create_vpc()
        .cidr_block("10.7.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let mut private = Vec::new();
    for (cidr, zone) in [("10.7.1.0/24", az("a")), ("10.7.2.0/24", az("b"))] {
        let s = c
            .ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(cidr)
            .availability_zone(zone)
            .send()
            .await
            .unwrap();
        private.push(s.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    let public = c
        .ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.7.100.0/24")
        .availability_zone(az("a"))
        .send()
        .await
        .unwrap();
    let public = public.subnet().unwrap().subnet_id().unwrap().to_string();
    let igw = c.ec2.create_internet_gateway().send().await.unwrap();
    let igw = igw
        .internet_gateway()
        .unwrap()
        .internet_gateway_id()
        .unwrap()
        .to_string();
    c.ec2
        .attach_internet_gateway()
        .internet_gateway_id(&igw)
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap();
    let rt = c
        .ec2
        .create_route_table()
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap();
    let rt = rt
        .route_table()
        .unwrap()
        .route_table_id()
        .unwrap()
        .to_string();
    c.ec2
        .create_route()
        .route_table_id(&rt)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&igw)
        .send()
        .await
        .unwrap();
    c.ec2
        .associate_route_table()
        .route_table_id(&rt)
        .subnet_id(&public)
        .send()
        .await
        .unwrap();

    let cluster = format!("{name}-cluster");
    c.ecs
        .create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .unwrap();
    let instance = if with_instance {
        let images = c.ec2.describe_images().send().await.unwrap();
        let ami = images.images()[0].image_id().unwrap().to_string();
        let run = c
            .ec2
            .run_instances()
            .image_id(ami)
            .min_count(1)
            .max_count(1)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Large)
            .subnet_id(&private[0])
            .send()
            .await
            .unwrap();
        let id = run.instances()[0].instance_id().unwrap().to_string();
        c.ecs
            .register_container_instance()
            .cluster(&cluster)
            .instance_identity_document(json!({"instanceId": id}).to_string())
            .send()
            .await
            .unwrap();
        Some(id)
    } else {
        None
    };

    let trust = |service: &str| {
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})
        .to_string()
    };
    let mut roles = Vec::new();
    for (suffix, principal) in [
        ("exec", "ecs-tasks.amazonaws.com"),
        ("task", "ecs-tasks.amazonaws.com"),
        ("ec2", "ec2.amazonaws.com"),
    ] {
        let r = c
            .iam
            .create_role()
            .role_name(format!("{name}-{suffix}"))
            .assume_role_policy_document(trust(principal))
            .send()
            .await
            .unwrap();
        roles.push(r.role().unwrap().arn().to_string());
    }
    World {
        name,
        vpc,
        private,
        public,
        cluster,
        exec_role: roles[0].clone(),
        task_role: roles[1].clone(),
        ec2_only_role: roles[2].clone(),
        instance,
    }
}

impl World {
    /// Properties of a Fargate delegate in this world, with a family of its own.
    pub fn fargate_props(&self) -> Value {
        json!({
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:bootstrap",
            "ClusterName": self.cluster,
            "LaunchType": "FARGATE",
            "AccountId": "acct-123",
            "DelegateTokenSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:harness/token",
            "ExecutionRoleArn": self.exec_role,
            "TaskRoleArn": self.task_role,
            "VpcId": self.vpc,
            "TaskDefinitionFamily": format!("{}-family", self.name),
            "Tags": {"team": "platform"},
        })
    }

    /// Properties of an EC2/bridge delegate (needs a world seeded with an instance).
    pub fn ec2_props(&self) -> Value {
        json!({
            "ClusterName": self.cluster,
            "AccountId": "acct-123",
            "DelegateToken": "plain-token-value-42",
            "DelegateGeneration": "FirstGen",
            "TaskDefinitionFamily": format!("{}-family", self.name),
            "Memory": "4096",
        })
    }
}

/// A CloudFormation request as the service sends it (every scalar a string).
pub fn cfn_event(
    request_type: &str,
    url: &str,
    props: &Value,
    physical: Option<&str>,
    old: Option<&Value>,
) -> Value {
    let mut e = json!({
        "RequestType": request_type,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:bootstrap",
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/test/guid",
        "RequestId": unique("req"),
        "LogicalResourceId": "Delegate",
        "ResourceType": "Custom::HarnessDelegate",
        "ResourceProperties": props,
    });
    if let Some(p) = physical {
        e["PhysicalResourceId"] = json!(p);
    }
    if let Some(o) = old {
        e["OldResourceProperties"] = o.clone();
    }
    e
}

/// Run one CloudFormation request through the handler; return the body CloudFormation received.
/// A stack Create of `props` (its answer sent to `rx.url(name)`) that must succeed: the body
/// CloudFormation received.
pub async fn create_ok(c: &Clients, rx: &Receiver, name: &str, props: &Value) -> Value {
    let body = run_cfn(c, rx, cfn_event("Create", &rx.url(name), props, None, None)).await;
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    body
}

pub async fn run_cfn(c: &Clients, rx: &Receiver, event: Value) -> Value {
    let before = rx.count();
    let request_id = event["RequestId"].clone();
    let h = handler(c.clone());
    h.handle(event, deadline_in(120))
        .await
        .expect("handler answers CloudFormation");
    assert_eq!(rx.count(), before + 1, "exactly one response per request");
    let req = rx.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(req.method, "PUT");
    assert_eq!(
        req.header("content-type").unwrap_or(""),
        "",
        "Content-Type must be empty"
    );
    assert!(req.body.len() <= 4096);
    let body = req.json();
    assert_eq!(
        body["RequestId"], request_id,
        "the response answers this request"
    );
    body
}

/// Delete the delegate's service out of band, as a person in the console would.
/// An UpdateService of the delegate's service straight to AWS, as a person or another tool
/// would make it: the drift heal is to repair.
pub fn update_out_of_band(
    c: &Clients,
    cluster: &str,
) -> aws_sdk_ecs::operation::update_service::builders::UpdateServiceFluentBuilder {
    c.ecs
        .update_service()
        .cluster(cluster)
        .service("harness-delegate")
}

/// What a heal result reports of the delegate `key`.
pub fn report_of(result: &Value, key: &str) -> Value {
    result["Delegates"]
        .as_array()
        .unwrap_or_else(|| panic!("a heal report: {result}"))
        .iter()
        .find(|d| d["Delegate"] == key)
        .cloned()
        .unwrap_or_else(|| panic!("{key} not in {result}"))
}

pub async fn delete_service_out_of_band(c: &Clients, cluster: &str) {
    c.ecs
        .delete_service()
        .cluster(cluster)
        .service("harness-delegate")
        .force(true)
        .send()
        .await
        .unwrap();
}

pub fn deadline_in(secs: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(secs)
}

/// Events served in order; `None` when the queue is empty.
pub type EventQueue = Arc<Mutex<VecDeque<Value>>>;
