//! The delegate's task definition rendered from a [`DelegateSpec`]: the Harness template's
//! container and environment for each delegate generation, `TaskDefinitionOverrides` applied as a
//! merge patch (see [`crate::document`]), and the checks on the result that only overrides can
//! fail. The pipeline runs those checks after parsing, before anything is read from AWS.

use serde_json::{json, Value};

use crate::document::{coerce, merge_patch, SCHEMA};
use crate::model::{LaunchType, NetworkMode};
use crate::spec::{DelegateGeneration, DelegateSpec, DelegateToken, Problem, Problems};

/// The container the delegate runs in (the Harness template's name).
pub const CONTAINER_NAME: &str = "ecs-delegate";

/// The delegate's log streams are `delegate/ecs-delegate/<task id>`.
pub const LOG_STREAM_PREFIX: &str = "delegate";

/// Render the task definition document for a spec, overrides applied.
pub fn render(spec: &DelegateSpec) -> Value {
    let mut doc = json!({
        "family": spec.family,
        "containerDefinitions": [container(spec)],
        "cpu": spec.cpu.to_string(),
        "memory": spec.memory.to_string(),
        "requiresCompatibilities": [spec.launch_type.as_str()],
    });
    if spec.network_mode == NetworkMode::Awsvpc {
        doc["networkMode"] = json!(NetworkMode::Awsvpc.as_str());
    }
    if let Some(r) = &spec.task_role_arn {
        doc["taskRoleArn"] = json!(r);
    }
    if let Some(r) = &spec.execution_role_arn {
        doc["executionRoleArn"] = json!(r);
    }
    if spec.launch_type == LaunchType::Fargate {
        doc["requiresCompatibilities"] = json!([LaunchType::Fargate.as_str()]);
    }
    if let Some(patch) = &*spec.task_definition_overrides {
        let patch = crate::document::patch_containers_by_name(&mut doc, patch);
        merge_patch(&mut doc, &patch);
        // CloudFormation hands nested scalars over as strings ("30", "true").
        coerce(&mut doc, SCHEMA);
    }
    doc
}

/// The delegate's container: the image, its environment, the token.
fn container(spec: &DelegateSpec) -> Value {
    let token_var = spec.generation.token_variable();
    let env = environment(spec);
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
    if spec.generation == DelegateGeneration::NextGen {
        container["healthCheck"] = health_check();
    }
    if let (Some(group), Some(region)) = (&spec.log_group, &spec.region) {
        container["logConfiguration"] = json!({
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": group,
                "awslogs-region": region,
                "awslogs-stream-prefix": LOG_STREAM_PREFIX,
            },
        });
    }
    container
}

/// The NextGen delegate's health check: its own endpoint, which answers 500 until the delegate's
/// first heartbeat reached Harness, so a HEALTHY task is a connected delegate. The image's
/// HEALTHCHECK runs the same curl (ECS ignores an image's HEALTHCHECK); the port follows
/// `DELEGATE_HTTP_PORT` as the image's does. The start period is ECS's longest: a delegate
/// takes minutes to start, and a check that passes ends the start period at once.
pub fn health_check() -> Value {
    json!({
        "command": [
            "CMD-SHELL",
            "curl --fail --silent --max-time 4 http://localhost:${DELEGATE_HTTP_PORT:-3460}/api/health || exit 1"
        ],
        "interval": 15,
        "timeout": 5,
        "retries": 4,
        "startPeriod": 300,
    })
}

/// Whether the delegate's container in the rendered document `doc` has a health check.
pub fn has_health_check(doc: &Value) -> bool {
    doc["containerDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"] == CONTAINER_NAME && c.get("healthCheck").is_some_and(|h| !h.is_null()))
}

/// ECS's limits on a container health check's settings.
const HEALTH_CHECK_LIMITS: &[(&str, i64, i64, &str)] = &[
    ("interval", 5, 300, " s"),
    ("timeout", 2, 120, " s"),
    ("retries", 1, 10, ""),
    ("startPeriod", 0, 300, " s"),
];

/// Problems with the delegate container's health check, as overrides left it.
fn check_health_check(hc: &Value) -> Vec<Problem> {
    let prop = "TaskDefinitionOverrides";
    let mut p = Vec::new();
    let command = hc["command"].as_array().cloned().unwrap_or_default();
    let kind = command.first().and_then(Value::as_str);
    if !matches!(kind, Some("CMD" | "CMD-SHELL")) || command.len() < 2 {
        p.push(Problem::new(
            prop,
            format!("container {CONTAINER_NAME}'s healthCheck.command must be [\"CMD-SHELL\", \"<command>\"] or [\"CMD\", \"<program>\", …]"),
        ));
    }
    for (field, min, max, unit) in HEALTH_CHECK_LIMITS {
        if let Some(v) = hc[*field].as_i64().filter(|v| !(min..=max).contains(&v)) {
            p.push(Problem::new(
                prop,
                format!("container {CONTAINER_NAME}'s healthCheck.{field} is {v}: ECS allows {min} to {max}{unit}"),
            ));
        }
    }
    p
}

/// The container's environment, as the Harness template of the spec's generation sets it.
fn environment(spec: &DelegateSpec) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: &str| env.push((k.to_string(), v.to_string()));
    let manager = spec.manager_host_and_port.trim_end_matches('/');
    push("ACCOUNT_ID", &spec.account_id);
    push("MANAGER_HOST_AND_PORT", manager);
    if let DelegateToken::Plain(t) = &spec.token {
        push(spec.generation.token_variable(), t);
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
    let next_gen = spec.generation == DelegateGeneration::NextGen;
    let optional = [
        (
            "DELEGATE_TAGS",
            spec.delegate_tags.as_ref().filter(|_| next_gen),
        ),
        (
            "DELEGATE_DESCRIPTION",
            spec.delegate_description.as_ref().filter(|_| next_gen),
        ),
        ("DELEGATE_GROUP_NAME", spec.delegate_group_name.as_ref()),
        ("DELEGATE_PROFILE", spec.delegate_profile.as_ref()),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            push(k, v);
        }
    }
    for (k, v) in spec.environment.iter() {
        push(k, v);
    }
    env
}

/// Render the spec's task definition and check what overrides may have broken in it.
pub fn check(spec: &DelegateSpec) -> Result<(), Problems> {
    let mut p = check_rendered(spec, &render(spec));
    if spec.log_group.is_some() && spec.region.is_none() {
        p.push(Problem::new(
            "LogGroupName",
            "the function does not know its region, which the delegate's log configuration names: set AWS_REGION",
        ));
    }
    if p.is_empty() {
        Ok(())
    } else {
        Err(Problems(p))
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
    if c.get("healthCheck").is_some_and(|hc| !hc.is_null()) {
        p.extend(check_health_check(&c["healthCheck"]));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{normalize, redacted};
    use crate::spec;
    use serde_json::Map;

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
    fn a_nextgen_delegate_is_healthy_once_connected_and_overrides_may_change_that() {
        let hc = |d: &Value| d["containerDefinitions"][0]["healthCheck"].clone();
        let d = render(&spec_of(json!({})));
        let command = hc(&d)["command"][1].as_str().unwrap().to_string();
        assert_eq!(hc(&d)["command"][0], "CMD-SHELL");
        assert!(
            command.contains("curl --fail")
                && command.contains("localhost:${DELEGATE_HTTP_PORT:-3460}/api/health"),
            "{command}"
        );
        assert_eq!(hc(&d)["startPeriod"], 300, "ECS's longest start period");
        assert!(
            check_health_check(&hc(&d)).is_empty(),
            "within ECS's limits"
        );
        let first_gen = render(&spec_of(json!({"DelegateGeneration": "FirstGen"})));
        assert!(hc(&first_gen).is_null(), "FirstGen has no health endpoint");

        let by_name = |patch: Value| {
            spec_of(
                json!({"TaskDefinitionOverrides": {"containerDefinitions": {CONTAINER_NAME: patch}}}),
            )
        };
        let removed = by_name(json!({"healthCheck": null}));
        assert!(hc(&render(&removed)).is_null());
        assert!(check(&removed).is_ok());
        let shorter = by_name(json!({"healthCheck": {"startPeriod": "120"}}));
        let d = render(&shorter);
        assert_eq!(hc(&d)["startPeriod"], 120, "coerced, the rest kept");
        assert_eq!(hc(&d)["command"][0], "CMD-SHELL");
        assert_eq!(
            env(&d)["ACCOUNT_ID"],
            "acct123",
            "the container keeps its environment"
        );
        let e = check(&by_name(
            json!({"healthCheck": {"interval": 1, "retries": 11}}),
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("healthCheck.interval is 1: ECS allows 5 to 300 s")
                && e.contains("healthCheck.retries is 11: ECS allows 1 to 10"),
            "{e}"
        );
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
        let p = check(&spec::parse(&v).unwrap()).unwrap_err();
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
        assert!(check(&spec::parse(&v).unwrap())
            .unwrap_err()
            .to_string()
            .contains("no container named ecs-delegate"));
    }

    #[test]
    fn a_log_group_gives_the_container_awslogs_in_the_functions_region() {
        let mut s = spec_of(json!({"LogGroupName": "/harness/delegate"}));
        assert!(check(&s).is_err(), "a log group without a region");
        s.region = Some("eu-west-1".into());
        check(&s).unwrap();
        let lc = &render(&s)["containerDefinitions"][0]["logConfiguration"];
        assert_eq!(
            *lc,
            json!({"logDriver": "awslogs", "options": {"awslogs-group": "/harness/delegate",
                "awslogs-region": "eu-west-1", "awslogs-stream-prefix": "delegate"}})
        );
        for off in [json!({"LogGroupName": "none"}), json!({})] {
            let mut s = spec_of(off);
            s.region = Some("eu-west-1".into());
            assert!(render(&s)["containerDefinitions"][0]
                .get("logConfiguration")
                .is_none());
        }
        let bad = json!({"ClusterName": "prod", "AccountId": "a", "DelegateToken": "t",
            "LogGroupName": "no spaces allowed"});
        assert_eq!(spec::parse(&bad).unwrap_err().0[0].property, "LogGroupName");
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
