//! Task definition documents to and from the ECS SDK's types: the register call for a document
//! (apply), and a described revision as a document (observe). The only place that knows both
//! the document's shape and the SDK's.

use aws_sdk_ecs::error::BuildError;
use aws_sdk_ecs::types as ecs;
use serde_json::{json, Map, Value};

use crate::document::{drop_empty, int_value};

fn s(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
fn i(v: &Value) -> Option<i32> {
    int_value(v)
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
    BuildError,
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

fn container_to_sdk(c: &Value) -> Result<ecs::ContainerDefinition, BuildError> {
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
    b_ = with_lists(b_, c)?;
    with_settings(b_, c)
}

type ContainerBuilder = ecs::builders::ContainerDefinitionBuilder;

/// The container's lists: ports, environment, secrets, ulimits.
fn with_lists(mut b_: ContainerBuilder, c: &Value) -> Result<ContainerBuilder, BuildError> {
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
                .build()?,
        );
    }
    for u in objs(&c["ulimits"]) {
        b_ = b_.ulimits(
            ecs::Ulimit::builder()
                .set_name(s(&u["name"]).map(|n| ecs::UlimitName::from(n.as_str())))
                .set_soft_limit(i(&u["softLimit"]))
                .set_hard_limit(i(&u["hardLimit"]))
                .build()?,
        );
    }
    Ok(b_)
}

/// The container's health check, log configuration and Linux parameters.
fn with_settings(
    mut b_: ContainerBuilder,
    c: &Value,
) -> Result<ecs::ContainerDefinition, BuildError> {
    let hc = &c["healthCheck"];
    if hc.is_object() {
        b_ = b_.health_check(
            ecs::HealthCheck::builder()
                .set_command(strs(&hc["command"]))
                .set_interval(i(&hc["interval"]))
                .set_timeout(i(&hc["timeout"]))
                .set_retries(i(&hc["retries"]))
                .set_start_period(i(&hc["startPeriod"]))
                .build()?,
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
        b_ = b_.log_configuration(l.build()?);
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
