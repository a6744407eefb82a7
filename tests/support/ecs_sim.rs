//! What ECS does that moto does not: start a service's tasks, report their health, stop the ones
//! that fail, roll a deployment out (or fail it) and say so in the service's events. moto keeps
//! every service at 0 running tasks with no deployment history; the proxy hands each
//! DescribeServices answer for a service to [`Sim::on_describe`], which moves the simulation one
//! tick on from moto's state and rewrites the answer, and answers ListTasks and DescribeTasks
//! from the same state, so the three calls agree as ECS's would.
//!
//! By default a deployment's tasks are up and healthy at the first look ([`Script::up`]); a test
//! scripts a service ([`script`]) for the fates of its tasks. ECS is one for a test binary, so
//! the simulation is too: every proxy of the binary answers from the same [`SIM`].

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// What happens to one task of a deployment.
#[derive(Clone, Debug, PartialEq)]
pub enum Fate {
    /// Starts, and reports healthy after this many ticks (0: at once).
    Up { ticks: u32 },
    /// Starts running but never reports healthy; ECS replaces it after `ticks` ticks.
    Unhealthy { ticks: u32 },
    /// Stops at the next tick with this stop code and reason (and container reason, exit code).
    Stop {
        code: &'static str,
        reason: &'static str,
        container_reason: Option<&'static str>,
        exit_code: Option<i32>,
    },
    /// Never placed: the service says why in an event.
    Unplaceable(&'static str),
}

/// The image cannot be pulled.
pub fn pull_error(image: &str) -> Fate {
    Fate::Stop {
        code: "TaskFailedToStart",
        reason: Box::leak(
            format!("CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref docker.io/{image}: docker.io/{image}: not found")
                .into_boxed_str(),
        ),
        container_reason: None,
        exit_code: None,
    }
}

/// The execution role cannot read the token's secret.
pub fn secret_error(secret: &str) -> Fate {
    Fate::Stop {
        code: "TaskFailedToStart",
        reason: Box::leak(
            format!("ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: unable to retrieve secret from asm: service call has been retried 1 time(s): failed to fetch secret {secret} from secrets manager: operation error Secrets Manager: GetSecretValue, AccessDeniedException: User is not authorized to perform: secretsmanager:GetSecretValue")
                .into_boxed_str(),
        ),
        container_reason: None,
        exit_code: None,
    }
}

/// No container instance can fit the task.
pub const NO_CAPACITY: &str = "was unable to place a task because no container instance met all of its requirements. The closest matching container-instance has insufficient memory available. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.";

/// The fates of a deployment's tasks in the order they start; the last repeats. Ticks are
/// DescribeServices answers of the service.
#[derive(Clone, Debug, PartialEq)]
pub struct Script {
    pub fates: Vec<Fate>,
    /// After this many failed tasks the deployment circuit breaker fails the deployment.
    pub circuit_breaker: Option<u32>,
}

impl Script {
    /// Every task up and healthy at once: ECS when everything works.
    pub fn up() -> Script {
        Script::of(vec![Fate::Up { ticks: 0 }])
    }

    pub fn of(fates: Vec<Fate>) -> Script {
        Script {
            fates,
            circuit_breaker: None,
        }
    }
}

#[derive(Clone, Debug)]
struct Task {
    arn: String,
    revision: String,
    fate: Fate,
    age: u32,
    created_s: f64,
    stopped: Option<(f64, String, String)>,
}

impl Task {
    fn running(&self) -> bool {
        self.stopped.is_none()
            && match self.fate {
                Fate::Up { ticks } => ticks == 0 || self.age >= 1,
                Fate::Unhealthy { .. } => self.age >= 1,
                _ => false,
            }
    }

    fn healthy(&self) -> bool {
        match self.fate {
            Fate::Up { ticks } => self.running() && self.age >= ticks,
            _ => false,
        }
    }
}

#[derive(Clone, Debug)]
struct Deployment {
    id: String,
    revision: String,
    created_s: f64,
    script: Script,
    started: usize,
    failed: u32,
    failed_rollout: bool,
}

#[derive(Clone, Debug, Default)]
struct Service {
    deployment: Option<Deployment>,
    moto_deployment: String,
    tasks: Vec<Task>,
    /// (epoch seconds, message), oldest first.
    events: Vec<(f64, String)>,
}

/// The simulation of every service the proxies of this test binary have answered for.
pub static SIM: std::sync::LazyLock<std::sync::Mutex<Sim>> =
    std::sync::LazyLock::new(Default::default);

/// From now on, new deployments of the service `cluster`/`service` go as `script` says.
pub fn script(cluster: &str, service: &str, script: Script) {
    SIM.lock()
        .unwrap()
        .scripts
        .insert(format!("{cluster}/{service}"), script);
}

/// Deployments of `revision` (`family:N`) of the service go as `script` says, whatever its
/// other deployments do: a new image that fails, next to the one it replaces that works.
pub fn script_revision(cluster: &str, service: &str, revision: &str, script: Script) {
    SIM.lock()
        .unwrap()
        .scripts
        .insert(format!("{cluster}/{service}@{revision}"), script);
}

/// The service's running tasks crash (their container exits), and the tasks ECS starts in their
/// place take a few looks to come up: the service is not steady for a while.
pub fn crash_tasks(cluster: &str, service: &str) {
    let mut sim = SIM.lock().unwrap();
    let suffix = format!("/{cluster}/{service}");
    let slow = Script::of(vec![Fate::Up { ticks: 3 }]);
    sim.scripts
        .insert(format!("{cluster}/{service}"), slow.clone());
    for (_, svc) in sim
        .services
        .iter_mut()
        .filter(|(arn, _)| arn.ends_with(&suffix))
    {
        if let Some(d) = svc.deployment.as_mut() {
            d.script = slow.clone();
        }
        for t in svc.tasks.iter_mut().filter(|t| t.stopped.is_none()) {
            t.stopped = Some((
                now_s(),
                "EssentialContainerExited".into(),
                "Essential container in task exited".into(),
            ));
        }
    }
}

#[derive(Default)]
pub struct Sim {
    services: BTreeMap<String, Service>,
    scripts: BTreeMap<String, Script>,
    n: u64,
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

impl Sim {
    /// One tick of the service moto describes as `s`, and `s` rewritten as ECS would answer.
    pub fn on_describe(&mut self, s: &mut Value) {
        let Some(arn) = s["serviceArn"].as_str().map(String::from) else {
            return;
        };
        let name = s["serviceName"].as_str().unwrap_or_default().to_string();
        let cluster = s["clusterArn"]
            .as_str()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let revision_name = s["taskDefinition"]
            .as_str()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let script = self
            .scripts
            .get(&format!("{cluster}/{name}@{revision_name}"))
            .or_else(|| self.scripts.get(&format!("{cluster}/{name}")))
            .cloned()
            .unwrap_or_else(Script::up);
        self.n += 1;
        let n = self.n;
        let svc = self.services.entry(arn.clone()).or_default();
        let status = s["status"].as_str().unwrap_or("ACTIVE");
        let desired = if status == "ACTIVE" {
            s["desiredCount"].as_i64().unwrap_or(0) as usize
        } else {
            0
        };
        let revision = s["taskDefinition"].as_str().unwrap_or_default().to_string();
        let moto_id = s["deployments"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let redeploy = svc
            .deployment
            .as_ref()
            .is_none_or(|d| d.revision != revision)
            || moto_id != svc.moto_deployment;
        if redeploy {
            svc.moto_deployment = moto_id;
            svc.deployment = Some(Deployment {
                id: format!("ecs-svc/{n:016}"),
                revision: revision.clone(),
                created_s: now_s(),
                script,
                started: 0,
                failed: 0,
                failed_rollout: false,
            });
            // The old deployment's tasks are replaced.
            for t in svc.tasks.iter_mut().filter(|t| t.stopped.is_none()) {
                t.stopped = Some((
                    now_s(),
                    "ServiceSchedulerInitiated".into(),
                    "Scaling activity initiated by (deployment)".into(),
                ));
            }
        } else {
            for t in svc.tasks.iter_mut() {
                t.age += 1;
            }
        }
        tick(svc, &arn, &name, desired);
        answer(svc, s, desired);
    }

    /// ListTasks for a service, as ECS answers it.
    pub fn list_tasks(&self, body: &Value) -> Value {
        let service = body["serviceName"].as_str().unwrap_or_default();
        let cluster = body["cluster"]
            .as_str()
            .unwrap_or("default")
            .rsplit('/')
            .next()
            .unwrap_or_default();
        let stopped = body["desiredStatus"] == "STOPPED";
        let arns: Vec<&str> = self
            .services
            .iter()
            .filter(|(arn, _)| arn.ends_with(&format!("/{cluster}/{service}")))
            .flat_map(|(_, s)| &s.tasks)
            .filter(|t| t.stopped.is_some() == stopped)
            .map(|t| t.arn.as_str())
            .collect();
        json!({"taskArns": arns})
    }

    /// DescribeTasks, as ECS answers it.
    pub fn describe_tasks(&self, body: &Value) -> Value {
        let wanted: Vec<&str> = body["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let tasks: Vec<Value> = self
            .services
            .values()
            .flat_map(|s| &s.tasks)
            .filter(|t| wanted.contains(&t.arn.as_str()))
            .map(task_json)
            .collect();
        json!({"tasks": tasks, "failures": []})
    }
}

/// Start what the deployment lacks, stop what failed, and roll out.
fn tick(svc: &mut Service, arn: &str, name: &str, desired: usize) {
    let Some(d) = svc.deployment.as_mut() else {
        return;
    };
    // Tasks that fail stop at their first tick; unhealthy ones once ECS gives up on them.
    for t in svc.tasks.iter_mut().filter(|t| t.stopped.is_none()) {
        let stop = match &t.fate {
            Fate::Stop { code, reason, .. } if t.age >= 1 => {
                Some((code.to_string(), reason.to_string()))
            }
            Fate::Unhealthy { ticks } if t.age >= *ticks => Some((
                "ServiceSchedulerInitiated".to_string(),
                "Task failed container health checks".to_string(),
            )),
            _ => None,
        };
        if let Some((code, reason)) = stop {
            t.stopped = Some((now_s(), code, reason));
            d.failed += 1;
        }
    }
    if d.script.circuit_breaker.is_some_and(|n| d.failed >= n) {
        d.failed_rollout = true;
        return;
    }
    let live = svc
        .tasks
        .iter()
        .filter(|t| t.stopped.is_none() && t.revision == d.revision)
        .count();
    for _ in live..desired {
        let fate = d
            .script
            .fates
            .get(d.started)
            .or(d.script.fates.last())
            .cloned()
            .unwrap_or(Fate::Up { ticks: 0 });
        if let Fate::Unplaceable(why) = fate {
            let message = format!("(service {name}) {why}");
            if svc.events.last().is_none_or(|(_, m)| m != &message) {
                svc.events.push((now_s(), message));
            }
            return;
        }
        d.started += 1;
        let id = format!(
            "{:032x}",
            super::splitmix64(d.started as u64 ^ now_s().to_bits())
        );
        let cluster = arn.split('/').nth(1).unwrap_or("default");
        svc.tasks.push(Task {
            arn: format!(
                "{}:task/{cluster}/{id}",
                arn.split(":service/").next().unwrap_or("")
            ),
            revision: d.revision.clone(),
            fate,
            age: 0,
            created_s: now_s(),
            stopped: None,
        });
    }
    // Scale-in: the newest tasks stop first.
    let mut extra = live.saturating_sub(desired);
    for t in svc.tasks.iter_mut().rev().filter(|t| t.stopped.is_none()) {
        if extra == 0 {
            break;
        }
        t.stopped = Some((
            now_s(),
            "ServiceSchedulerInitiated".into(),
            "Scaling activity initiated by (service)".into(),
        ));
        extra -= 1;
    }
}

/// The service `s` as ECS would describe it now.
fn answer(svc: &mut Service, s: &mut Value, desired: usize) {
    let Some(d) = &svc.deployment else { return };
    let ours = || {
        svc.tasks
            .iter()
            .filter(|t| t.stopped.is_none() && t.revision == d.revision)
    };
    let running = ours().filter(|t| t.running()).count();
    let healthy = ours().filter(|t| t.healthy()).count();
    let pending = ours().count() - running;
    let (state, reason) = if d.failed_rollout {
        (
            "FAILED",
            "ECS deployment circuit breaker: tasks failed to start.".to_string(),
        )
    } else if healthy >= desired {
        ("COMPLETED", format!("ECS deployment {} completed.", d.id))
    } else {
        (
            "IN_PROGRESS",
            format!("ECS deployment {} in progress.", d.id),
        )
    };
    if state == "COMPLETED" {
        let name = s["serviceName"].as_str().unwrap_or_default();
        let message = format!("(service {name}) has reached a steady state.");
        if svc.events.last().is_none_or(|(_, m)| m != &message) {
            svc.events.push((now_s(), message));
        }
    }
    let mut deployment = s["deployments"][0].clone();
    for (k, v) in [
        ("id", json!(d.id)),
        ("status", json!("PRIMARY")),
        ("taskDefinition", json!(d.revision)),
        ("desiredCount", json!(desired)),
        ("runningCount", json!(running)),
        ("pendingCount", json!(pending)),
        ("failedTasks", json!(d.failed)),
        ("rolloutState", json!(state)),
        ("rolloutStateReason", json!(reason)),
        ("createdAt", json!(d.created_s)),
        ("updatedAt", json!(now_s())),
    ] {
        deployment[k] = v;
    }
    s["deployments"] = json!([deployment]);
    s["runningCount"] = json!(svc.tasks.iter().filter(|t| t.running()).count());
    s["pendingCount"] = json!(pending);
    s["events"] = svc
        .events
        .iter()
        .rev()
        .enumerate()
        .map(|(i, (at, m))| json!({"id": format!("e{i}"), "createdAt": at, "message": m}))
        .collect();
}

fn task_json(t: &Task) -> Value {
    let running = t.running();
    let health = if t.healthy() {
        "HEALTHY"
    } else if running && matches!(t.fate, Fate::Unhealthy { .. }) && t.age > 0 {
        "UNHEALTHY"
    } else {
        "UNKNOWN"
    };
    let last = match (&t.stopped, running) {
        (Some(_), _) => "STOPPED",
        (None, true) => "RUNNING",
        (None, false) => "PENDING",
    };
    let mut v = json!({
        "taskArn": t.arn,
        "taskDefinitionArn": t.revision,
        "lastStatus": last,
        "desiredStatus": if t.stopped.is_some() { "STOPPED" } else { "RUNNING" },
        "healthStatus": health,
        "createdAt": t.created_s,
        "containers": [{"name": "ecs-delegate", "lastStatus": last, "healthStatus": health}],
    });
    if let Some((at, code, reason)) = &t.stopped {
        v["stoppedAt"] = json!(at);
        v["stopCode"] = json!(code);
        v["stoppedReason"] = json!(reason);
        if let Fate::Stop {
            container_reason,
            exit_code,
            ..
        } = &t.fate
        {
            if let Some(r) = container_reason {
                v["containers"][0]["reason"] = json!(r);
            }
            if let Some(x) = exit_code {
                v["containers"][0]["exitCode"] = json!(x);
            }
        }
    }
    v
}
