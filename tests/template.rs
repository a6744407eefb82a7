//! template.yaml and the function can never disagree: the custom resource passes only
//! properties the function accepts, parameters allow exactly the values the function accepts,
//! and the function's role grants exactly the AWS operations the code calls.

mod support;

use std::collections::BTreeSet;

use harness_ecs_delegate_bootstrap::spec;
use serde_json::Value;
use support::*;

/// template.yaml as JSON, read by cfn-lint's own YAML loader (it knows `!Ref`, `!Sub`, …).
fn template() -> Value {
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

#[test]
fn the_custom_resource_passes_only_properties_the_function_accepts() {
    let t = template();
    let props = t["Resources"]["HarnessDelegate"]["Properties"]
        .as_object()
        .expect("HarnessDelegate has properties");
    for name in props.keys().filter(|k| *k != "ServiceToken") {
        assert!(
            spec::KNOWN_PROPERTIES.contains(&name.as_str()),
            "template.yaml passes {name}, which the function rejects"
        );
    }
    for required in ["ClusterName", "AccountId"] {
        assert!(props.contains_key(required), "{required} is not passed");
    }
}

#[test]
fn parameters_allow_exactly_what_the_function_accepts() {
    let t = template();
    let props = t["Resources"]["HarnessDelegate"]["Properties"]
        .as_object()
        .unwrap();
    let mut checked = 0;
    for (property, value) in props {
        // The parameter a property takes, directly or as one branch of a condition.
        let parameter = value["Ref"]
            .as_str()
            .or_else(|| value["Fn::If"][1]["Ref"].as_str());
        let (Some(parameter), Some(accepted)) = (parameter, spec::allowed_values(property)) else {
            continue;
        };
        let allowed: BTreeSet<&str> = t["Parameters"][parameter]["AllowedValues"]
            .as_array()
            .unwrap_or_else(|| panic!("parameter {parameter} has no AllowedValues"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            allowed,
            accepted.into_iter().collect::<BTreeSet<_>>(),
            "parameter {parameter} (property {property})"
        );
        checked += 1;
    }
    assert!(
        checked >= 1,
        "no parameter with a fixed set of values was checked"
    );
}

/// `describe_services` → `DescribeServices`.
fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Every AWS operation the function's code calls, as IAM actions (`ecs:DescribeServices`):
/// each `.ecs.op()`, `.ec2.op()`, `.iam.op()`, `.tagging.op()` in src/, and the ECS client that
/// task_definition.rs receives as `client`.
fn operations_called() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let dir = format!("{}/src", env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // Code only: the tests at the bottom of a module call nothing.
        let code = text.split("#[cfg(test)]").next().unwrap();
        let compact: String = code.split_whitespace().collect();
        for (client, service) in [
            (".ecs.", "ecs"),
            (".ec2.", "ec2"),
            (".iam.", "iam"),
            (".tagging.", "tag"),
            ("client.", "ecs"),
        ] {
            if client == "client." && !path.ends_with("task_definition.rs") {
                continue;
            }
            for (i, _) in compact.match_indices(client) {
                let rest = &compact[i + client.len()..];
                let op: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !op.is_empty() && rest[op.len()..].starts_with("()") {
                    out.insert(format!("{service}:{}", pascal(&op)));
                }
            }
        }
    }
    out
}

#[test]
fn the_role_grants_exactly_the_operations_the_code_calls() {
    let called = operations_called();
    // A sanity check of the scan itself: these are certainly called.
    for op in [
        "ecs:CreateService",
        "ecs:RegisterTaskDefinition",
        "ec2:CreateSecurityGroup",
        "iam:GetRole",
        "tag:GetResources",
    ] {
        assert!(called.contains(op), "the scan missed {op}: {called:?}");
    }
    let t = template();
    let mut granted = BTreeSet::new();
    for policy in t["Resources"]["BootstrapFunction"]["Properties"]["Policies"]
        .as_array()
        .expect("the function's policies")
    {
        for statement in policy["Statement"].as_array().unwrap() {
            assert_eq!(statement["Effect"], "Allow");
            match &statement["Action"] {
                Value::String(a) => {
                    granted.insert(a.clone());
                }
                Value::Array(a) => {
                    granted.extend(a.iter().map(|x| x.as_str().unwrap().to_string()))
                }
                other => panic!("unexpected Action {other}"),
            }
        }
    }
    // Not a call of its own: ECS checks it when a task definition or service names a role.
    let implied: BTreeSet<String> = ["iam:PassRole".to_string()].into();
    let missing: Vec<&String> = called.difference(&granted).collect();
    assert!(
        missing.is_empty(),
        "the code calls {missing:?}, which the role does not allow"
    );
    let unused: Vec<&String> = granted
        .iter()
        .filter(|a| !called.contains(*a) && !implied.contains(*a))
        .collect();
    assert!(
        unused.is_empty(),
        "the role grants {unused:?}, which the code never calls"
    );
}

/// Evaluate a template value the way CloudFormation does for the custom resource, with these
/// parameter values (and the defaults for the rest): `Ref`, `Fn::If`, `Fn::Not`,
/// `Fn::Equals`, `Fn::Join`, `Fn::Sub` of parameters, `AWS::NoValue`. `None`: no value.
fn resolve(t: &Value, v: &Value, params: &serde_json::Map<String, Value>) -> Option<Value> {
    let param = |name: &str| -> Value {
        match name {
            "AWS::StackName" => Value::from("test"),
            "AWS::Region" => Value::from("us-east-1"),
            "AWS::AccountId" => Value::from("123456789012"),
            "AWS::Partition" => Value::from("aws"),
            _ => {
                let p = &t["Parameters"][name];
                assert!(p.is_object(), "Ref to unknown parameter {name}");
                let raw = params
                    .get(name)
                    .cloned()
                    .or_else(|| p.get("Default").cloned())
                    .unwrap_or_else(|| panic!("parameter {name} needs a value"));
                let text = match raw {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                if p["Type"] == "CommaDelimitedList" {
                    Value::from(
                        text.split(',')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect::<Vec<_>>(),
                    )
                } else {
                    Value::from(text)
                }
            }
        }
    };
    let condition = |name: &str| -> bool {
        resolve(t, &t["Conditions"][name], params)
            .and_then(|v| v.as_bool())
            .unwrap_or_else(|| panic!("condition {name}"))
    };
    match v {
        Value::Object(o) if o.len() == 1 => {
            let (k, arg) = o.iter().next().unwrap();
            match k.as_str() {
                "Ref" if arg == "AWS::NoValue" => None,
                "Ref" => Some(param(arg.as_str().unwrap())),
                "Fn::If" => {
                    let branch = if condition(arg[0].as_str().unwrap()) {
                        1
                    } else {
                        2
                    };
                    resolve(t, &arg[branch], params)
                }
                "Fn::Not" => Some(Value::from(!resolve(t, &arg[0], params)?.as_bool()?)),
                "Fn::Equals" => Some(Value::from(
                    resolve(t, &arg[0], params) == resolve(t, &arg[1], params),
                )),
                "Condition" => Some(Value::from(condition(arg.as_str().unwrap()))),
                "Fn::Join" => {
                    let items = resolve(t, &arg[1], params)?;
                    let parts: Vec<String> = items
                        .as_array()?
                        .iter()
                        .map(|i| i.as_str().unwrap_or_default().to_string())
                        .collect();
                    Some(Value::from(parts.join(arg[0].as_str()?)))
                }
                "Fn::Sub" => {
                    let mut s = arg.as_str()?.to_string();
                    while let Some(start) = s.find("${") {
                        let end = start + s[start..].find('}')?;
                        let value = param(&s[start + 2..end]);
                        s.replace_range(start..=end, value.as_str()?);
                    }
                    Some(Value::from(s))
                }
                "Fn::GetAtt" => Some(Value::from(format!("<{}>", arg[0].as_str()?))),
                _ => Some(Value::Object(
                    o.iter()
                        .filter_map(|(k, v)| Some((k.clone(), resolve(t, v, params)?)))
                        .collect(),
                )),
            }
        }
        Value::Object(o) => Some(Value::Object(
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), resolve(t, v, params)?)))
                .collect(),
        )),
        Value::Array(a) => Some(Value::Array(
            a.iter().filter_map(|v| resolve(t, v, params)).collect(),
        )),
        other => Some(other.clone()),
    }
}

#[tokio::test]
async fn the_request_the_template_produces_installs_and_removes_a_delegate() {
    let c = clients().await;
    let w = seed(&c, false).await;
    let t = template();
    let params = serde_json::json!({
        "ClusterName": w.cluster,
        "AccountId": "acct-123",
        "DelegateTokenSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:harness/token",
        "ExecutionRoleArn": w.exec_role,
        "TaskRoleArn": w.task_role,
        "VpcId": w.vpc,
        "DesiredCount": 1,
    });
    let params = params.as_object().unwrap();
    let mut props =
        resolve(&t, &t["Resources"]["HarnessDelegate"]["Properties"], params).expect("properties");
    props.as_object_mut().unwrap().remove("ServiceToken");
    // CloudFormation sends every scalar as a string, lists as lists of strings.
    let text = props.to_string();
    assert!(
        !text.contains("\"Ref\"") && !text.contains("Fn::"),
        "unresolved: {text}"
    );
    assert_eq!(props["DesiredCount"], "1", "numbers arrive as strings");

    let rx = Receiver::start(0).await;
    let created = run_cfn(
        &c,
        &rx,
        cfn_event("Create", &rx.url("c"), &props, None, None),
    )
    .await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let arn = created["PhysicalResourceId"].as_str().unwrap().to_string();
    for output in t["Outputs"].as_object().unwrap().values() {
        // Every output reads an attribute the function returns.
        let attr = output["Value"]["Fn::GetAtt"][1].as_str().unwrap();
        assert!(
            created["Data"][attr]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "output {attr} missing from Data: {created}"
        );
    }
    let deleted = run_cfn(
        &c,
        &rx,
        cfn_event("Delete", &rx.url("d"), &props, Some(&arn), None),
    )
    .await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
}

#[test]
fn every_sample_event_is_exercised_by_a_test() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut sources = String::new();
    for dir in ["tests", "src"] {
        for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    for entry in std::fs::read_dir(format!("{root}/events")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        // Tests load an event by its name (`load("create")`, `i.event("heal")`) or its path.
        let used = [
            format!("load(\"{name}\")"),
            format!("event(\"{name}\")"),
            format!("events/{name}.json"),
        ]
        .iter()
        .any(|p| sources.contains(p.as_str()));
        assert!(used, "events/{name}.json is not used by any test");
    }
}
