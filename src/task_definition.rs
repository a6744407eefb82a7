//! The delegate's task definition as a JSON document in the shape of `register-task-definition`'s
//! input: rendered from a [`DelegateSpec`], patched by `TaskDefinitionOverrides` (RFC 7396),
//! normalized for comparison with what ECS returns, and converted to and from the SDK's types.
//!
//! Only the fields listed in [`SCHEMA`] are supported: an override naming any other field is a
//! validation error rather than being silently dropped, and the comparison that decides whether to
//! register a new revision looks at exactly these fields.

use aws_sdk_ecs::types as ecs;
use serde_json::{json, Map, Value};

use crate::spec::{
    DelegateGeneration, DelegateSpec, DelegateToken, LaunchType, NetworkMode, Problem,
};

/// The container the delegate runs in (the Harness template's name).
pub const CONTAINER_NAME: &str = "ecs-delegate";

/// Environment variables whose values are secrets: redacted wherever a document is shown.
pub const SECRET_ENVIRONMENT: &[&str] = &["DELEGATE_TOKEN", "ACCOUNT_SECRET"];

/// Render the task definition document for a spec, overrides applied.
pub fn render(spec: &DelegateSpec) -> Value {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: &str| env.push((k.to_string(), v.to_string()));
    let manager = spec.manager_host_and_port.trim_end_matches('/');
    let token_var = spec.generation.token_variable();
    push("ACCOUNT_ID", &spec.account_id);
    push("MANAGER_HOST_AND_PORT", manager);
    if let DelegateToken::Plain(t) = &spec.token {
        push(token_var, t);
    }
    match spec.generation {
        DelegateGeneration::NextGen => {
            push(
                "LOG_STREAMING_SERVICE_URL",
                &format!("{manager}/log-service/"),
            );
            push("DELEGATE_NAME", &spec.delegate_name);
            push("DELEGATE_TYPE", "DOCKER");
            push("DEPLOY_MODE", "KUBERNETES");
            push("NEXT_GEN", "true");
            if let Some(t) = &spec.delegate_tags {
                push("DELEGATE_TAGS", t);
            }
            if let Some(d) = &spec.delegate_description {
                push("DELEGATE_DESCRIPTION", d);
            }
        }
        DelegateGeneration::FirstGen => {
            push(
                "WATCHER_STORAGE_URL",
                "https://app.harness.io/public/prod/premium/watchers",
            );
            push("WATCHER_CHECK_LOCATION", "current.version");
            push("DELEGATE_STORAGE_URL", "https://app.harness.io");
            push("DELEGATE_CHECK_LOCATION", "delegateprod.txt");
            push("DELEGATE_TYPE", "ECS");
            push("DEPLOY_MODE", "KUBERNETES");
            push("POLL_FOR_TASKS", "false");
        }
    }
    // Empty values are left out: ECS drops them when it stores a definition, so rendering them
    // would make every comparison differ. Harness' templates send INIT_SCRIPT="" to mean unset.
    if let Some(g) = &spec.delegate_group_name {
        push("DELEGATE_GROUP_NAME", g);
    }
    if let Some(p) = &spec.delegate_profile {
        push("DELEGATE_PROFILE", p);
    }
    for (k, v) in &spec.environment {
        push(k, v);
    }

    let mut container = json!({
        "name": CONTAINER_NAME,
        "image": spec.image,
        "essential": true,
        "environment": env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
    });
    if let DelegateToken::SecretArn(arn) = &spec.token {
        container["secrets"] = json!([{"name": token_var, "valueFrom": arn}]);
    }
    if let Some(h) = &spec.hostname {
        container["hostname"] = json!(h);
    }
    if spec.generation == DelegateGeneration::FirstGen {
        container["portMappings"] =
            json!([{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}]);
    }

    let mut doc = json!({
        "family": spec.family,
        "containerDefinitions": [container],
        "cpu": spec.cpu.to_string(),
        "memory": spec.memory.to_string(),
        "requiresCompatibilities": [spec.launch_type.as_str()],
    });
    if spec.network_mode == NetworkMode::Awsvpc {
        doc["networkMode"] = json!("awsvpc");
    }
    if let Some(r) = &spec.task_role_arn {
        doc["taskRoleArn"] = json!(r);
    }
    if let Some(r) = &spec.execution_role_arn {
        doc["executionRoleArn"] = json!(r);
    }
    if spec.launch_type == LaunchType::Fargate {
        doc["requiresCompatibilities"] = json!(["FARGATE"]);
    }
    if let Some(patch) = &spec.task_definition_overrides {
        merge_patch(&mut doc, patch);
        // CloudFormation hands nested scalars over as strings ("30", "true").
        coerce(&mut doc, SCHEMA);
    }
    doc
}

/// Give every supported field the JSON type ECS uses for it (numbers, booleans, strings).
fn coerce(v: &mut Value, schema: &[(&str, Field)]) {
    let Some(obj) = v.as_object_mut() else { return };
    for (k, x) in obj.iter_mut() {
        let Some((_, field)) = schema.iter().find(|(name, _)| name == k) else {
            continue;
        };
        match field {
            Int => {
                if let Some(n) = x.as_str().and_then(|s| s.trim().parse::<i64>().ok()) {
                    *x = json!(n);
                }
            }
            Bool => {
                if let Some(b) = x.as_str().and_then(|s| s.trim().parse::<bool>().ok()) {
                    *x = json!(b);
                }
            }
            Str => {
                if let Some(n) = x.as_number() {
                    *x = json!(n.to_string());
                }
            }
            Object(inner) => coerce(x, inner),
            ObjectList(inner) => {
                for item in x.as_array_mut().into_iter().flatten() {
                    coerce(item, inner);
                }
            }
            StrList | StrMap => {}
        }
    }
}

/// Problems with a rendered document that only overrides can cause. A merge patch replaces
/// arrays whole, so an override of `containerDefinitions` must bring the delegate's own settings
/// along; without this check AWS would accept a delegate that cannot log in to Harness.
pub fn check_rendered(spec: &DelegateSpec, doc: &Value) -> Vec<Problem> {
    if spec
        .task_definition_overrides
        .as_ref()
        .is_none_or(|o| o.get("containerDefinitions").is_none())
    {
        return vec![];
    }
    let token_var = spec.generation.token_variable();
    let containers = doc["containerDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let prop = "TaskDefinitionOverrides";
    let Some(c) = containers.iter().find(|c| c["name"] == CONTAINER_NAME) else {
        return vec![Problem::new(
            prop,
            format!("containerDefinitions replaces the whole list (RFC 7396 merge patch) and has no container named {CONTAINER_NAME}: name the delegate's container {CONTAINER_NAME}"),
        )];
    };
    let mut p = Vec::new();
    if !c["image"].is_string() {
        p.push(Problem::new(
            prop,
            format!("container {CONTAINER_NAME} has no image: add \"image\""),
        ));
    }
    let named = |list: &str, name: &str| {
        c[list]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == name)
    };
    if !named("environment", token_var) && !named("secrets", token_var) {
        p.push(Problem::new(
            prop,
            format!("container {CONTAINER_NAME} no longer receives {token_var} (containerDefinitions replaces the whole list): include the delegate's environment and secrets, or override other fields only"),
        ));
    }
    if !named("environment", "ACCOUNT_ID") {
        p.push(Problem::new(
            prop,
            format!("container {CONTAINER_NAME} no longer receives ACCOUNT_ID (containerDefinitions replaces the whole list): include the delegate's environment"),
        ));
    }
    p
}

/// RFC 7396 JSON merge patch: objects merge, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in patch {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// What a field of the supported document holds.
pub(crate) enum Field {
    Str,
    Int,
    Bool,
    StrList,
    StrMap,
    Object(&'static [(&'static str, Field)]),
    ObjectList(&'static [(&'static str, Field)]),
}

use Field::*;

const CONTAINER: &[(&str, Field)] = &[
    ("name", Str),
    ("image", Str),
    ("essential", Bool),
    ("cpu", Int),
    ("memory", Int),
    ("memoryReservation", Int),
    ("hostname", Str),
    ("command", StrList),
    ("entryPoint", StrList),
    ("workingDirectory", Str),
    ("user", Str),
    ("stopTimeout", Int),
    ("startTimeout", Int),
    ("readonlyRootFilesystem", Bool),
    ("privileged", Bool),
    ("dockerLabels", StrMap),
    (
        "portMappings",
        ObjectList(&[("containerPort", Int), ("hostPort", Int), ("protocol", Str)]),
    ),
    ("environment", ObjectList(&[("name", Str), ("value", Str)])),
    ("secrets", ObjectList(&[("name", Str), ("valueFrom", Str)])),
    (
        "ulimits",
        ObjectList(&[("name", Str), ("softLimit", Int), ("hardLimit", Int)]),
    ),
    (
        "healthCheck",
        Object(&[
            ("command", StrList),
            ("interval", Int),
            ("timeout", Int),
            ("retries", Int),
            ("startPeriod", Int),
        ]),
    ),
    (
        "logConfiguration",
        Object(&[("logDriver", Str), ("options", StrMap)]),
    ),
    ("linuxParameters", Object(&[("initProcessEnabled", Bool)])),
];

/// The fields of the task definition document this function supports.
pub(crate) const SCHEMA: &[(&str, Field)] = &[
    ("family", Str),
    ("taskRoleArn", Str),
    ("executionRoleArn", Str),
    ("networkMode", Str),
    ("cpu", Str),
    ("memory", Str),
    ("requiresCompatibilities", StrList),
    ("pidMode", Str),
    ("ipcMode", Str),
    ("containerDefinitions", ObjectList(CONTAINER)),
    (
        "runtimePlatform",
        Object(&[("cpuArchitecture", Str), ("operatingSystemFamily", Str)]),
    ),
    ("ephemeralStorage", Object(&[("sizeInGiB", Int)])),
];

fn check_fields(path: &str, v: &Value, schema: &[(&str, Field)], out: &mut Vec<String>) {
    let Some(obj) = v.as_object() else {
        out.push(format!("{path} must be an object"));
        return;
    };
    for (k, v) in obj {
        let p = format!("{path}.{k}");
        let Some((_, field)) = schema.iter().find(|(name, _)| name == k) else {
            let known: Vec<&str> = schema.iter().map(|(n, _)| *n).collect();
            out.push(format!(
                "{p} is not supported by this function (supported here: {})",
                known.join(", ")
            ));
            continue;
        };
        if v.is_null() {
            continue; // a merge patch removing the field
        }
        check_field(&p, v, field, out);
    }
}

fn check_field(p: &str, v: &Value, field: &Field, out: &mut Vec<String>) {
    let ok = match field {
        Str => v.is_string() || v.is_number(),
        Int => v.as_i64().is_some() || v.as_str().is_some_and(|s| s.parse::<i64>().is_ok()),
        Bool => v.is_boolean() || v.as_str().is_some_and(|s| s == "true" || s == "false"),
        StrList => v
            .as_array()
            .is_some_and(|a| a.iter().all(|i| i.is_string())),
        StrMap => v
            .as_object()
            .is_some_and(|o| o.values().all(|i| i.is_string())),
        Object(inner) => {
            check_fields(p, v, inner, out);
            true
        }
        ObjectList(inner) => match v.as_array() {
            Some(a) => {
                for (i, item) in a.iter().enumerate() {
                    check_fields(&format!("{p}[{i}]"), item, inner, out);
                }
                true
            }
            None => false,
        },
    };
    if !ok {
        let what = match field {
            Str => "a string",
            Int => "a whole number",
            Bool => "true or false",
            StrList => "a list of strings",
            StrMap => "an object of string values",
            Object(_) => "an object",
            ObjectList(_) => "a list of objects",
        };
        out.push(format!("{p} must be {what}"));
    }
}

/// Check `TaskDefinitionOverrides` against the supported fields; add one problem per bad field.
pub fn check_overrides(patch: &Value, problems: &mut Vec<Problem>) {
    let mut out = Vec::new();
    check_fields("TaskDefinitionOverrides", patch, SCHEMA, &mut out);
    for k in ["cpu", "memory"] {
        // ECS accepts "1 vCPU" or "8 GB" but stores units: the comparison would never match.
        let v = &patch[k];
        if !v.is_null()
            && v.as_u64().is_none()
            && v.as_str().is_none_or(|s| s.parse::<u32>().is_err())
        {
            out.push(format!("TaskDefinitionOverrides.{k} must be a whole number of {} (e.g. \"2048\"); better, set {}", if k == "cpu" { "cpu units" } else { "MiB" }, if k == "cpu" { "Cpu" } else { "Memory" }));
        }
    }
    if patch.get("family").is_some() {
        out.push("TaskDefinitionOverrides.family: set TaskDefinitionFamily instead".to_string());
    }
    problems.extend(
        out.into_iter()
            .map(|m| Problem::new("TaskDefinitionOverrides", m)),
    );
}

/// The comparable form of a document: defaults filled in, empties dropped, name-keyed lists
/// sorted, numbers as ECS returns them. Two documents that ECS would treat as the same
/// definition normalize to equal values.
pub fn normalize(doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(o) = d.as_object_mut() {
        o.remove("family");
        if !o.contains_key("networkMode") {
            o.insert("networkMode".into(), json!("bridge"));
        }
        for k in ["cpu", "memory"] {
            if let Some(v) = o.get(k).cloned() {
                if let Some(n) = v.as_u64() {
                    o.insert(k.into(), json!(n.to_string()));
                }
            }
        }
        let awsvpc = o.get("networkMode") == Some(&json!("awsvpc"));
        if let Some(Value::Array(cs)) = o.get_mut("containerDefinitions") {
            for c in cs.iter_mut() {
                normalize_container(c, awsvpc);
            }
            cs.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        }
        if let Some(Value::Array(rc)) = o.get_mut("requiresCompatibilities") {
            rc.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        }
    }
    drop_empty(&mut d);
    d
}

fn normalize_container(c: &mut Value, awsvpc: bool) {
    let Some(o) = c.as_object_mut() else { return };
    o.entry("essential").or_insert(json!(true));
    if o.get("cpu") == Some(&json!(0)) {
        o.remove("cpu");
    }
    // ECS does not store environment variables with an empty value.
    if let Some(Value::Array(env)) = o.get_mut("environment") {
        env.retain(|e| e["value"].as_str().is_some_and(|v| !v.is_empty()));
    }
    for k in ["environment", "secrets"] {
        if let Some(Value::Array(a)) = o.get_mut(k) {
            a.sort_by(|x, y| x["name"].as_str().cmp(&y["name"].as_str()));
        }
    }
    if let Some(Value::Array(pm)) = o.get_mut("portMappings") {
        for m in pm.iter_mut() {
            let cp = m["containerPort"].clone();
            if let Some(mo) = m.as_object_mut() {
                mo.entry("protocol").or_insert(json!("tcp"));
                // ECS fills in the host port: the container port under awsvpc, 0 (dynamic) else.
                mo.entry("hostPort")
                    .or_insert(if awsvpc { cp } else { json!(0) });
            }
        }
    }
    // ECS fills in the health check's defaults.
    if let Some(hc) = o.get_mut("healthCheck").and_then(Value::as_object_mut) {
        hc.entry("interval").or_insert(json!(30));
        hc.entry("timeout").or_insert(json!(5));
        hc.entry("retries").or_insert(json!(3));
    }
}

fn drop_empty(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (_, x) in o.iter_mut() {
                drop_empty(x);
            }
            o.retain(|_, x| {
                !(x.is_null()
                    || x.as_array().is_some_and(|a| a.is_empty())
                    || x.as_object().is_some_and(|m| m.is_empty()))
            });
        }
        Value::Array(a) => a.iter_mut().for_each(drop_empty),
        _ => {}
    }
}

/// A copy safe to show in a plan or a log: secret environment values replaced.
pub fn redacted(doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(Value::Array(cs)) = d.get_mut("containerDefinitions") {
        for c in cs {
            if let Some(Value::Array(env)) = c.get_mut("environment") {
                for e in env {
                    let secret = e["name"]
                        .as_str()
                        .is_some_and(|n| SECRET_ENVIRONMENT.contains(&n));
                    if secret {
                        e["value"] = json!("<redacted>");
                    }
                }
            }
        }
    }
    d
}

// ---- SDK conversions -------------------------------------------------------------------------

fn s(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
fn i(v: &Value) -> Option<i32> {
    v.as_i64()
        .map(|n| n as i32)
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}
fn b(v: &Value) -> Option<bool> {
    v.as_bool()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}
fn strs(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    })
}
fn objs(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The register-task-definition call for a (validated) document, with tags.
pub fn register_request(
    client: &aws_sdk_ecs::Client,
    doc: &Value,
    tags: &std::collections::BTreeMap<String, String>,
) -> Result<
    aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionFluentBuilder,
    String,
> {
    let mut r = client
        .register_task_definition()
        .family(s(&doc["family"]).unwrap_or_default())
        .set_task_role_arn(s(&doc["taskRoleArn"]))
        .set_execution_role_arn(s(&doc["executionRoleArn"]))
        .set_network_mode(s(&doc["networkMode"]).map(|m| ecs::NetworkMode::from(m.as_str())))
        .set_cpu(s(&doc["cpu"]))
        .set_memory(s(&doc["memory"]))
        .set_pid_mode(s(&doc["pidMode"]).map(|m| ecs::PidMode::from(m.as_str())))
        .set_ipc_mode(s(&doc["ipcMode"]).map(|m| ecs::IpcMode::from(m.as_str())));
    for c in strs(&doc["requiresCompatibilities"]).unwrap_or_default() {
        r = r.requires_compatibilities(ecs::Compatibility::from(c.as_str()));
    }
    if doc["runtimePlatform"].is_object() {
        let rp = &doc["runtimePlatform"];
        r = r.runtime_platform(
            ecs::RuntimePlatform::builder()
                .set_cpu_architecture(
                    s(&rp["cpuArchitecture"]).map(|x| ecs::CpuArchitecture::from(x.as_str())),
                )
                .set_operating_system_family(
                    s(&rp["operatingSystemFamily"]).map(|x| ecs::OsFamily::from(x.as_str())),
                )
                .build(),
        );
    }
    if let Some(size) = i(&doc["ephemeralStorage"]["sizeInGiB"]) {
        r = r.ephemeral_storage(ecs::EphemeralStorage::builder().size_in_gib(size).build());
    }
    for c in objs(&doc["containerDefinitions"]) {
        r = r.container_definitions(container_to_sdk(c)?);
    }
    for (k, v) in tags {
        r = r.tags(ecs::Tag::builder().key(k).value(v).build());
    }
    Ok(r)
}

fn container_to_sdk(c: &Value) -> Result<ecs::ContainerDefinition, String> {
    let mut b_ = ecs::ContainerDefinition::builder()
        .set_name(s(&c["name"]))
        .set_image(s(&c["image"]))
        .set_essential(b(&c["essential"]))
        .set_cpu(i(&c["cpu"]))
        .set_memory(i(&c["memory"]))
        .set_memory_reservation(i(&c["memoryReservation"]))
        .set_hostname(s(&c["hostname"]))
        .set_command(strs(&c["command"]))
        .set_entry_point(strs(&c["entryPoint"]))
        .set_working_directory(s(&c["workingDirectory"]))
        .set_user(s(&c["user"]))
        .set_stop_timeout(i(&c["stopTimeout"]))
        .set_start_timeout(i(&c["startTimeout"]))
        .set_readonly_root_filesystem(b(&c["readonlyRootFilesystem"]))
        .set_privileged(b(&c["privileged"]));
    if let Some(labels) = c["dockerLabels"].as_object() {
        for (k, v) in labels {
            b_ = b_.docker_labels(k, v.as_str().unwrap_or_default());
        }
    }
    for m in objs(&c["portMappings"]) {
        b_ = b_.port_mappings(
            ecs::PortMapping::builder()
                .set_container_port(i(&m["containerPort"]))
                .set_host_port(i(&m["hostPort"]))
                .set_protocol(s(&m["protocol"]).map(|p| ecs::TransportProtocol::from(p.as_str())))
                .build(),
        );
    }
    for e in objs(&c["environment"]) {
        b_ = b_.environment(
            ecs::KeyValuePair::builder()
                .set_name(s(&e["name"]))
                .set_value(s(&e["value"]))
                .build(),
        );
    }
    for e in objs(&c["secrets"]) {
        b_ = b_.secrets(
            ecs::Secret::builder()
                .set_name(s(&e["name"]))
                .set_value_from(s(&e["valueFrom"]))
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    for u in objs(&c["ulimits"]) {
        b_ = b_.ulimits(
            ecs::Ulimit::builder()
                .set_name(s(&u["name"]).map(|n| ecs::UlimitName::from(n.as_str())))
                .set_soft_limit(i(&u["softLimit"]))
                .set_hard_limit(i(&u["hardLimit"]))
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    let hc = &c["healthCheck"];
    if hc.is_object() {
        b_ = b_.health_check(
            ecs::HealthCheck::builder()
                .set_command(strs(&hc["command"]))
                .set_interval(i(&hc["interval"]))
                .set_timeout(i(&hc["timeout"]))
                .set_retries(i(&hc["retries"]))
                .set_start_period(i(&hc["startPeriod"]))
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    let lc = &c["logConfiguration"];
    if lc.is_object() {
        let mut l = ecs::LogConfiguration::builder()
            .set_log_driver(s(&lc["logDriver"]).map(|d| ecs::LogDriver::from(d.as_str())));
        if let Some(opts) = lc["options"].as_object() {
            for (k, v) in opts {
                l = l.options(k, v.as_str().unwrap_or_default());
            }
        }
        b_ = b_.log_configuration(l.build().map_err(|e| e.to_string())?);
    }
    if let Some(init) = b(&c["linuxParameters"]["initProcessEnabled"]) {
        b_ = b_.linux_parameters(
            ecs::LinuxParameters::builder()
                .init_process_enabled(init)
                .build(),
        );
    }
    Ok(b_.build())
}

/// A described task definition as a document of the supported fields.
pub fn from_sdk(td: &ecs::TaskDefinition) -> Value {
    let mut d = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            d.insert(k.to_string(), v);
        }
    };
    put("family", json!(td.family()));
    put("taskRoleArn", json!(td.task_role_arn()));
    put("executionRoleArn", json!(td.execution_role_arn()));
    put(
        "networkMode",
        json!(td.network_mode().map(|m| m.as_str().to_string())),
    );
    put("cpu", json!(td.cpu()));
    put("memory", json!(td.memory()));
    put("pidMode", json!(td.pid_mode().map(|m| m.as_str())));
    put("ipcMode", json!(td.ipc_mode().map(|m| m.as_str())));
    put(
        "requiresCompatibilities",
        json!(td
            .requires_compatibilities()
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()),
    );
    if let Some(rp) = td.runtime_platform() {
        put(
            "runtimePlatform",
            json!({
                "cpuArchitecture": rp.cpu_architecture().map(|x| x.as_str()),
                "operatingSystemFamily": rp.operating_system_family().map(|x| x.as_str()),
            }),
        );
    }
    if let Some(es) = td.ephemeral_storage() {
        put("ephemeralStorage", json!({"sizeInGiB": es.size_in_gib()}));
    }
    put(
        "containerDefinitions",
        Value::Array(
            td.container_definitions()
                .iter()
                .map(container_from_sdk)
                .collect(),
        ),
    );
    Value::Object(d)
}

fn container_from_sdk(c: &ecs::ContainerDefinition) -> Value {
    let mut o = json!({
        "name": c.name(),
        "image": c.image(),
        "essential": c.essential(),
        "cpu": if c.cpu() == 0 { Value::Null } else { json!(c.cpu()) },
        "memory": c.memory(),
        "memoryReservation": c.memory_reservation(),
        "hostname": c.hostname(),
        "command": c.command(),
        "entryPoint": c.entry_point(),
        "workingDirectory": c.working_directory(),
        "user": c.user(),
        "stopTimeout": c.stop_timeout(),
        "startTimeout": c.start_timeout(),
        "readonlyRootFilesystem": c.readonly_root_filesystem(),
        "privileged": c.privileged(),
        "dockerLabels": c.docker_labels(),
        "portMappings": c.port_mappings().iter().map(|m| json!({
            "containerPort": m.container_port(),
            "hostPort": m.host_port(),
            "protocol": m.protocol().map(|p| p.as_str()),
        })).collect::<Vec<_>>(),
        "environment": c.environment().iter().map(|e| json!({"name": e.name(), "value": e.value()})).collect::<Vec<_>>(),
        "secrets": c.secrets().iter().map(|e| json!({"name": e.name(), "valueFrom": e.value_from()})).collect::<Vec<_>>(),
        "ulimits": c.ulimits().iter().map(|u| json!({"name": u.name().as_str(), "softLimit": u.soft_limit(), "hardLimit": u.hard_limit()})).collect::<Vec<_>>(),
    });
    if let Some(hc) = c.health_check() {
        o["healthCheck"] = json!({
            "command": hc.command(), "interval": hc.interval(), "timeout": hc.timeout(),
            "retries": hc.retries(), "startPeriod": hc.start_period(),
        });
    }
    if let Some(lc) = c.log_configuration() {
        o["logConfiguration"] =
            json!({"logDriver": lc.log_driver().as_str(), "options": lc.options()});
    }
    if let Some(init) = c.linux_parameters().and_then(|l| l.init_process_enabled()) {
        o["linuxParameters"] = json!({"initProcessEnabled": init});
    }
    drop_empty(&mut o);
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;

    fn spec_of(extra: Value) -> DelegateSpec {
        let mut v = json!({
            "ClusterName": "prod",
            "AccountId": "acct123",
            "DelegateToken": "tok-value",
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        spec::parse(&v).unwrap()
    }

    fn env(doc: &Value) -> Map<String, Value> {
        doc["containerDefinitions"][0]["environment"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].clone()))
            .collect()
    }

    #[test]
    fn ec2_bridge_has_hostname_and_no_network_mode() {
        let d = render(&spec_of(json!({})));
        assert_eq!(d["family"], "harness-delegate-task-spec");
        assert!(d.get("networkMode").is_none());
        assert_eq!(d["requiresCompatibilities"], json!(["EC2"]));
        assert_eq!(
            (d["cpu"].as_str(), d["memory"].as_str()),
            (Some("1024"), Some("6144"))
        );
        let c = &d["containerDefinitions"][0];
        assert_eq!(c["name"], "ecs-delegate");
        assert_eq!(c["hostname"], "Harness-ECS-Delegate");
        assert_eq!(c["essential"], true);
        let e = env(&d);
        assert_eq!(e["DELEGATE_TOKEN"], "tok-value");
        assert_eq!(e["NEXT_GEN"], "true");
        assert_eq!(
            e["LOG_STREAMING_SERVICE_URL"],
            "https://app.harness.io/log-service/"
        );
        assert_eq!(e["DELEGATE_NAME"], "harness-delegate");
    }

    #[test]
    fn ec2_awsvpc_has_network_mode_and_no_hostname() {
        let d = render(&spec_of(json!({"NetworkMode": "awsvpc"})));
        assert_eq!(d["networkMode"], "awsvpc");
        assert_eq!(d["requiresCompatibilities"], json!(["EC2"]));
        assert!(d["containerDefinitions"][0].get("hostname").is_none());
    }

    #[test]
    fn fargate_uses_secret_and_execution_role() {
        let mut v = json!({
            "ClusterName": "prod", "AccountId": "a", "LaunchType": "FARGATE",
            "DelegateTokenSecretArn": "arn:aws:secretsmanager:us-east-1:1:secret:tok",
            "ExecutionRoleArn": "arn:aws:iam::1:role/exec",
        });
        v["TaskRoleArn"] = json!("arn:aws:iam::1:role/task");
        let d = render(&spec::parse(&v).unwrap());
        assert_eq!(d["networkMode"], "awsvpc");
        assert_eq!(d["requiresCompatibilities"], json!(["FARGATE"]));
        assert_eq!(d["executionRoleArn"], "arn:aws:iam::1:role/exec");
        assert_eq!(d["taskRoleArn"], "arn:aws:iam::1:role/task");
        let c = &d["containerDefinitions"][0];
        assert!(c.get("hostname").is_none());
        assert_eq!(
            c["secrets"],
            json!([{"name": "DELEGATE_TOKEN", "valueFrom": "arn:aws:secretsmanager:us-east-1:1:secret:tok"}])
        );
        assert!(!env(&d).contains_key("DELEGATE_TOKEN"));
    }

    #[test]
    fn first_gen_gets_its_variable_set_and_port() {
        let d = render(&spec_of(
            json!({"DelegateGeneration": "FirstGen", "DelegateProfile": "p1"}),
        ));
        let e = env(&d);
        assert_eq!(e["ACCOUNT_SECRET"], "tok-value");
        assert_eq!(e["DELEGATE_TYPE"], "ECS");
        assert_eq!(e["DELEGATE_PROFILE"], "p1");
        assert!(!e.contains_key("NEXT_GEN"));
        assert_eq!(
            d["containerDefinitions"][0]["portMappings"][0]["containerPort"],
            8080
        );
    }

    #[test]
    fn overrides_are_a_merge_patch() {
        let d = render(&spec_of(json!({
            "TaskDefinitionOverrides": {"pidMode": "task", "cpu": "2048", "executionRoleArn": null}
        })));
        assert_eq!(d["pidMode"], "task");
        assert_eq!(d["cpu"], "2048");
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut t, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(t, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn unsupported_override_is_an_error_naming_the_field() {
        let v = json!({
            "ClusterName": "prod", "AccountId": "a", "DelegateToken": "t",
            "TaskDefinitionOverrides": {"containerDefinitions": [{"name": "x", "gpuCount": 1}], "cpu": "1024"}
        });
        let p = spec::parse(&v).unwrap_err().0;
        assert_eq!(p.len(), 1);
        assert!(
            p[0].message.contains("containerDefinitions[0].gpuCount"),
            "{}",
            p[0]
        );
    }

    #[test]
    fn normalize_ignores_order_defaults_and_empties() {
        let a = json!({
            "family": "f", "cpu": 1024, "memory": "2048", "requiresCompatibilities": ["EC2"],
            "containerDefinitions": [{"name": "c", "image": "i",
                "environment": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}],
                "portMappings": [{"containerPort": 80, "hostPort": 80}], "secrets": []}]
        });
        let b = json!({
            "family": "f", "cpu": "1024", "memory": "2048", "networkMode": "bridge",
            "requiresCompatibilities": ["EC2"], "volumes": [],
            "containerDefinitions": [{"name": "c", "image": "i", "essential": true, "cpu": 0,
                "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "portMappings": [{"containerPort": 80, "hostPort": 80, "protocol": "tcp"}]}]
        });
        assert_eq!(normalize(&a), normalize(&b));
        let mut c = b.clone();
        c["containerDefinitions"][0]["image"] = json!("other");
        assert_ne!(normalize(&a), normalize(&c));
    }

    #[test]
    fn overrides_from_cloudformation_compare_equal_to_what_ecs_returns() {
        // CloudFormation turns nested scalars into strings; ECS answers with typed values and
        // fills in defaults. Both must normalize to the same document.
        let s = spec_of(json!({
            "TaskDefinitionOverrides": {
                "ephemeralStorage": {"sizeInGiB": "30"},
                "containerDefinitions": [{
                    "name": "ecs-delegate", "image": "harness/delegate:1", "essential": "true",
                    "environment": [{"name": "ACCOUNT_ID", "value": "a"}, {"name": "DELEGATE_TOKEN", "value": "tok-value"}, {"name": "INIT_SCRIPT", "value": ""}],
                    "portMappings": [{"containerPort": "8080"}],
                    "healthCheck": {"command": ["CMD-SHELL", "curl -f localhost:3460/api/health"]}
                }]
            }
        }));
        let rendered = render(&s);
        assert_eq!(rendered["ephemeralStorage"]["sizeInGiB"], json!(30));
        assert_eq!(
            rendered["containerDefinitions"][0]["essential"],
            json!(true)
        );
        let from_ecs = json!({
            "family": "harness-delegate-task-spec", "cpu": "1024", "memory": "6144",
            "networkMode": "bridge", "requiresCompatibilities": ["EC2"],
            "ephemeralStorage": {"sizeInGiB": 30},
            "containerDefinitions": [{
                "name": "ecs-delegate", "image": "harness/delegate:1", "essential": true, "cpu": 0,
                "environment": [{"name": "DELEGATE_TOKEN", "value": "tok-value"}, {"name": "ACCOUNT_ID", "value": "a"}],
                "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}],
                "healthCheck": {"command": ["CMD-SHELL", "curl -f localhost:3460/api/health"], "interval": 30, "timeout": 5, "retries": 3}
            }]
        });
        assert_eq!(normalize(&rendered), normalize(&from_ecs));
    }

    #[test]
    fn a_container_override_must_keep_the_delegate_working() {
        let v = json!({
            "ClusterName": "prod", "AccountId": "a", "DelegateToken": "t",
            "TaskDefinitionOverrides": {"containerDefinitions": [{"name": "ecs-delegate", "image": "i", "healthCheck": {"command": ["CMD", "true"]}}]}
        });
        let p = spec::parse(&v).unwrap_err();
        assert!(
            p.to_string().contains("no longer receives DELEGATE_TOKEN"),
            "{p}"
        );
        assert!(
            p.to_string().contains("no longer receives ACCOUNT_ID"),
            "{p}"
        );
        let v = json!({
            "ClusterName": "prod", "AccountId": "a", "DelegateToken": "t",
            "TaskDefinitionOverrides": {"containerDefinitions": [{"name": "other", "image": "i"}]}
        });
        assert!(spec::parse(&v)
            .unwrap_err()
            .to_string()
            .contains("no container named ecs-delegate"));
    }

    #[test]
    fn no_empty_environment_values_are_rendered() {
        for generation in ["NextGen", "FirstGen"] {
            let d = render(&spec_of(json!({"DelegateGeneration": generation})));
            let empty: Vec<_> = env(&d).into_iter().filter(|(_, v)| v == "").collect();
            assert!(empty.is_empty(), "{generation}: {empty:?}");
        }
    }

    #[test]
    fn redaction_hides_the_token() {
        let d = render(&spec_of(json!({})));
        let shown = redacted(&d).to_string();
        assert!(!shown.contains("tok-value"));
        assert!(shown.contains("<redacted>"));
    }
}
