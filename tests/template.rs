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
