//! template.yaml and the function can never disagree: the custom resource passes only
//! properties the function accepts, parameters allow exactly the values the function accepts,
//! the function's role grants exactly the AWS operations the code calls and scopes each one as
//! far as IAM allows, and the requests the template produces install a delegate on moto (with
//! the execution role the template creates, when none is given).

mod support;

use std::collections::BTreeSet;

use harness_ecs_delegate_bootstrap::spec;
use serde_json::Value;
use support::*;

fn template() -> Value {
    template_json()
}

#[test]
fn the_custom_resource_passes_only_properties_the_function_accepts() {
    let t = template();
    let props = t["Resources"]["HarnessDelegate"]["Properties"]
        .as_object()
        .expect("HarnessDelegate has properties");
    for name in props
        .keys()
        .filter(|k| !spec::CLOUDFORMATION_PROPERTIES.contains(&k.as_str()))
    {
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
        let mut allowed: BTreeSet<&str> = t["Parameters"][parameter]["AllowedValues"]
            .as_array()
            .unwrap_or_else(|| panic!("parameter {parameter} has no AllowedValues"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        // An empty choice is the property left out (the condition's other branch: NoValue).
        if allowed.remove("") {
            assert_eq!(
                value["Fn::If"][2]["Ref"], "AWS::NoValue",
                "{parameter}: {value}"
            );
        }
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
/// ecs_convert.rs receives as `client`.
fn operations_called() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for path in files_under(&src) {
        let text = std::fs::read_to_string(&path).unwrap();
        // Code only: the tests at the bottom of a module call nothing.
        let code = text.split("#[cfg(test)]").next().unwrap();
        let compact: String = code.split_whitespace().collect();
        for (client, service) in [
            (".ecs.", "ecs"),
            (".ec2.", "ec2"),
            (".iam.", "iam"),
            ("client.", "ecs"),
            ("client.", "dynamodb"),
        ] {
            // A bare `client.` is the ECS client in ecs_convert, the record table's in store.
            let bare_here = match service {
                "ecs" => path.ends_with("ecs_convert.rs"),
                _ => path.ends_with("store.rs"),
            };
            if client == "client." && !bare_here {
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
        // Lambda's one call, made without the SDK's client (invoke.rs).
        if compact.contains(".invoker.invoke_async(") {
            out.insert("lambda:InvokeFunction".into());
        }
        // The Harness API key's secret, read without the SDK's client (secrets.rs).
        if compact.contains("\"secretsmanager.GetSecretValue\"") {
            out.insert("secretsmanager:GetSecretValue".into());
        }
    }
    out
}

/// The statements of the function's role (the template's own role, not SAM's `Policies`).
fn role_statements(t: &Value) -> Vec<Value> {
    let f = &t["Resources"]["BootstrapFunction"]["Properties"];
    assert!(
        f.get("Policies").is_none(),
        "SAM Policies would add AWSLambdaBasicExecutionRole: keep the role's grants in BootstrapFunctionRole"
    );
    assert_eq!(f["Role"]["Fn::GetAtt"][0], "BootstrapFunctionRole");
    let mut documents: Vec<&Value> = t["Resources"]["BootstrapFunctionRole"]["Properties"]
        ["Policies"]
        .as_array()
        .expect("the function role's policies")
        .iter()
        .map(|p| &p["PolicyDocument"])
        .collect();
    // Policies of their own on the role: the ones that name the function cannot be inline.
    for r in t["Resources"].as_object().unwrap().values() {
        if r["Type"] == "AWS::IAM::RolePolicy"
            && r["Properties"]["RoleName"]["Ref"] == "BootstrapFunctionRole"
        {
            documents.push(&r["Properties"]["PolicyDocument"]);
        }
    }
    let mut out = Vec::new();
    for document in documents {
        for statement in document["Statement"].as_array().unwrap() {
            // A grant that exists only under a condition (the API key's secret, when given).
            let statement = match statement.get("Fn::If") {
                Some(branches) => {
                    assert_eq!(branches[2]["Ref"], "AWS::NoValue", "{statement}");
                    &branches[1]
                }
                None => statement,
            };
            assert_eq!(statement["Effect"], "Allow", "{statement}");
            out.push(statement.clone());
        }
    }
    out
}

fn actions_of(statement: &Value) -> Vec<String> {
    match &statement["Action"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
        other => panic!("unexpected Action {other}"),
    }
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
        "dynamodb:PutItem",
    ] {
        assert!(called.contains(op), "the scan missed {op}: {called:?}");
    }
    let t = template();
    let granted: BTreeSet<String> = role_statements(&t).iter().flat_map(actions_of).collect();
    // Not calls of the code: ECS checks PassRole when a task definition names a role, and the
    // Lambda service writes the function's logs with the function's role.
    let implied: BTreeSet<String> = ["iam:PassRole", "logs:CreateLogStream", "logs:PutLogEvents"]
        .map(String::from)
        .into();
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

/// The actions IAM cannot narrow to a resource (the Service Authorization Reference lists no
/// resource type for them), so only these may be granted on `*`. ListServices is narrowed by
/// its `ecs:cluster` condition instead.
const UNSCOPABLE: &[&str] = &[
    "ecs:ListTaskDefinitions",
    "ecs:DescribeTaskDefinition",
    "ecs:DeregisterTaskDefinition",
    "ec2:DescribeVpcs",
    "ec2:DescribeSubnets",
    "ec2:DescribeRouteTables",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeInstances",
];

/// What each scoped action may be granted on: the resource type the Service Authorization
/// Reference gives it (or the template's own role, log group).
const RESOURCE_TYPES: &[(&str, &[&str])] = &[
    ("ecs:DescribeClusters", &[":cluster/"]),
    ("ecs:ListContainerInstances", &[":cluster/"]),
    ("ecs:DescribeContainerInstances", &[":container-instance/"]),
    ("ecs:DescribeServices", &[":service/"]),
    ("ecs:DescribeTasks", &[":task/"]),
    ("lambda:InvokeFunction", &["BootstrapFunction"]),
    ("secretsmanager:GetSecretValue", &["HarnessApiKeySecretArn"]),
    ("ecs:CreateService", &[":service/"]),
    ("ecs:UpdateService", &[":service/"]),
    ("ecs:DeleteService", &[":service/"]),
    ("ecs:RegisterTaskDefinition", &[":task-definition/"]),
    ("ecs:TagResource", &[":service/", ":task-definition/"]),
    ("ecs:UntagResource", &[":service/", ":task-definition/"]),
    ("ec2:CreateSecurityGroup", &[":vpc/", ":security-group/"]),
    ("ec2:CreateTags", &[":security-group/"]),
    ("ec2:DeleteSecurityGroup", &[":security-group/"]),
    ("iam:GetRole", &["RoleArn", "DelegateExecutionRole"]),
    (
        "dynamodb:GetItem",
        &[":table/${AWS::StackName}-delegate-records"],
    ),
    (
        "dynamodb:PutItem",
        &[":table/${AWS::StackName}-delegate-records"],
    ),
    (
        "dynamodb:Scan",
        &[":table/${AWS::StackName}-delegate-records"],
    ),
    ("iam:PassRole", &["RoleArn", "DelegateExecutionRole"]),
    ("logs:CreateLogStream", &["BootstrapFunctionLogGroup"]),
    ("logs:PutLogEvents", &["BootstrapFunctionLogGroup"]),
];

#[test]
fn every_grant_is_scoped_as_far_as_iam_allows() {
    let t = template();
    let arn = |r: &Value| r.to_string();
    for st in role_statements(&t) {
        let resources = match &st["Resource"] {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        let wildcard = resources.iter().any(|r| r == "*");
        for action in actions_of(&st) {
            if !wildcard {
                let (_, types) = RESOURCE_TYPES
                    .iter()
                    .find(|(a, _)| *a == action)
                    .unwrap_or_else(|| {
                        panic!("{action}: add the resource type it takes to RESOURCE_TYPES")
                    });
                for r in &resources {
                    assert!(
                        types.iter().any(|ty| arn(r).contains(ty)),
                        "{action} is granted on {r}, which is not one of its resource types {types:?}"
                    );
                }
                continue;
            }
            let by_condition = ["ecs:ListServices", "ecs:ListTasks"].contains(&action.as_str())
                && st["Condition"]["ArnEquals"]["ecs:cluster"].is_object();
            assert!(
                UNSCOPABLE.contains(&action.as_str()) || by_condition,
                "{action} is granted on every resource: scope it ({st})"
            );
        }
        // ECS grants name the delegate's cluster or family, never every one, unless they
        // hold only for resources that carry the function's tag.
        let own_only = st["Condition"]["StringEquals"]
            ["aws:ResourceTag/harness-delegate:managed-by"]
            == harness_ecs_delegate_bootstrap::MANAGED_BY_VALUE;
        for r in &resources {
            let r = arn(r);
            if r.contains(":ecs:") && !own_only {
                assert!(
                    r.contains("${ClusterName}") || r.contains("${TaskDefinitionFamily}"),
                    "an ECS grant on {r} is not limited to the delegate's cluster or family"
                );
            }
        }
    }
    let by_sid = |sid: &str| {
        role_statements(&t)
            .into_iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no statement {sid}"))
    };
    // Roles are passed to ECS tasks only, and only the delegate's.
    let pass = by_sid("PassDelegateRoles");
    assert_eq!(
        pass["Condition"]["StringEquals"]["iam:PassedToService"],
        "ecs-tasks.amazonaws.com"
    );
    assert!(pass["Resource"]["Fn::If"].is_array(), "{pass}");
    // Security groups are deleted or re-tagged only while they carry the function's tag.
    let own = by_sid("TagOrDeleteOwnGroup");
    assert_eq!(
        own["Condition"]["StringEquals"]["aws:ResourceTag/harness-delegate:managed-by"],
        harness_ecs_delegate_bootstrap::MANAGED_BY_VALUE
    );
    let create = by_sid("CreateOwnGroup");
    assert_eq!(
        create["Condition"]["StringEquals"]["aws:RequestTag/harness-delegate:managed-by"],
        harness_ecs_delegate_bootstrap::MANAGED_BY_VALUE
    );
    // The function invokes itself alone.
    assert_eq!(
        by_sid("InvokeItself")["Resource"],
        serde_json::json!({"Fn::GetAtt": ["BootstrapFunction", "Arn"]})
    );
    // Logs go to the function's own group only.
    assert_eq!(
        by_sid("OwnLogs")["Resource"]["Fn::GetAtt"][0],
        "BootstrapFunctionLogGroup"
    );
}

#[test]
fn the_function_is_the_tested_arm64_package_with_its_own_json_logs() {
    let t = template();
    let f = &t["Resources"]["BootstrapFunction"];
    // sam build runs the Makefile's target for the function (see sam_builds_the_tested_package).
    assert_eq!(f["Metadata"]["BuildMethod"], "makefile");
    let p = &f["Properties"];
    assert_eq!(p["Architectures"], serde_json::json!(["arm64"]));
    assert_eq!(p["Runtime"], "provided.al2023");
    assert_eq!(p["Handler"], "bootstrap");
    assert_eq!(p["LoggingConfig"]["LogFormat"], "JSON");
    let group = p["LoggingConfig"]["LogGroup"]["Ref"].as_str().unwrap();
    let g = &t["Resources"][group];
    assert_eq!(g["Type"], "AWS::Logs::LogGroup");
    assert_eq!(
        g["Properties"]["RetentionInDays"]["Ref"],
        "LogRetentionInDays"
    );
    // The schedule heals this stack's delegate (its owner: stack name / logical id), whose
    // cluster and family the role covers, and no other stack's.
    let owner = p["Environment"]["Variables"]["HEAL_OWNER"]["Fn::Sub"]
        .as_str()
        .unwrap();
    let logical_id = owner.strip_prefix("${AWS::StackName}/").unwrap();
    assert_eq!(
        t["Resources"][logical_id]["Type"], "Custom::HarnessDelegate",
        "HEAL_OWNER {owner} names no delegate of this template"
    );
    // The timeout leaves room for the function's own deadline margin and Lambda's maximum.
    let timeout = p["Timeout"].as_u64().unwrap();
    assert!((60..=900).contains(&timeout), "Timeout {timeout}");
    // cargo-lambda (cargo lambda watch, a build of one's own) sets panic = "abort" unless the
    // manifest says otherwise: a panic must still answer CloudFormation, so Cargo.toml says
    // unwind.
    let manifest =
        std::fs::read_to_string(format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let release = manifest
        .split("[profile.release]")
        .nth(1)
        .expect("Cargo.toml has a release profile");
    let release = release.split("\n[").next().unwrap();
    assert!(
        release.lines().any(|l| l.trim() == "panic = \"unwind\""),
        "[profile.release] must set panic = \"unwind\" explicitly: {release}"
    );
    // Plain `sam build` builds in place (cargo's build directory reused, no scratch copy of
    // it), and `sam deploy` allows the roles.
    let samconfig =
        std::fs::read_to_string(format!("{}/samconfig.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert!(
        samconfig.contains("[default.build.parameters]\nbuild_in_source = true"),
        "samconfig.toml does not build in place: {samconfig}"
    );
    assert!(
        samconfig.contains("capabilities = \"CAPABILITY_IAM\""),
        "{samconfig}"
    );
    // SAM CLI's `sam build` crashes on an output named like a list parameter.
    for output in t["Outputs"].as_object().unwrap().keys() {
        assert!(
            t["Parameters"].get(output).is_none(),
            "output {output} is named like a parameter: sam build fails on it"
        );
    }
    // The rules that invoke the function exist only while the delegate does: each depends on
    // it, by DependsOn or by an attribute of it in its pattern.
    for rule in ["HealScheduleRule", "EcsEventsRule", "TaskStoppedRule"] {
        let r = &t["Resources"][rule];
        let by_attribute = r["Properties"]["EventPattern"]
            .to_string()
            .contains("HarnessDelegate");
        assert!(
            r["DependsOn"] == "HarnessDelegate" || by_attribute,
            "{rule} does not depend on the delegate"
        );
    }
}

/// The record heal trusts lives in a table of the stack's own that only the function writes,
/// and the function is told its name; concurrency is not what keeps records right, so it is
/// not reserved unless asked (an account still at the default limit of 10 cannot reserve).
#[test]
fn the_record_table_is_the_functions_alone() {
    use harness_ecs_delegate_bootstrap::store::{EXPIRES_AT, TABLE_ENV};
    let t = template();
    let table = &t["Resources"]["RecordTable"];
    assert_eq!(table["Type"], "AWS::DynamoDB::Table");
    let p = &table["Properties"];
    assert_eq!(p["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        p["KeySchema"],
        serde_json::json!([{"AttributeName": "delegate", "KeyType": "HASH"}])
    );
    assert_eq!(p["TimeToLiveSpecification"]["AttributeName"], EXPIRES_AT);
    assert_eq!(p["TimeToLiveSpecification"]["Enabled"], true);
    // No SSESpecification that turns encryption off.
    assert!(p["SSESpecification"]["SSEEnabled"] != false);
    let name = p["TableName"]["Fn::Sub"].as_str().unwrap();
    let f = &t["Resources"]["BootstrapFunction"]["Properties"];
    assert_eq!(
        f["Environment"]["Variables"][TABLE_ENV]["Ref"],
        "RecordTable"
    );
    // ECS's createdBy of the function's services is this role: heal's proof of what it made.
    assert_eq!(
        f["Environment"]["Variables"]["FUNCTION_ROLE_ARN"]["Fn::GetAtt"],
        serde_json::json!(["BootstrapFunctionRole", "Arn"]),
        "{}",
        f["Environment"]
    );
    // The role reaches this table alone (every_grant_is_scoped checks the resource type).
    for st in role_statements(&t) {
        if actions_of(&st).iter().any(|a| a.starts_with("dynamodb:")) {
            assert_eq!(
                st["Resource"]["Fn::Sub"].as_str().unwrap(),
                format!("arn:${{AWS::Partition}}:dynamodb:${{AWS::Region}}:${{AWS::AccountId}}:table/{name}")
            );
        }
    }
    // Anyone but the function's role is denied every write, whatever their own policy says.
    let deny = &p["ResourcePolicy"]["PolicyDocument"]["Statement"][0];
    assert_eq!(deny["Effect"], "Deny");
    assert_eq!(deny["Principal"], "*");
    let writes = actions_of(deny);
    for w in [
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:PartiQLInsert",
        "dynamodb:PartiQLUpdate",
        "dynamodb:PartiQLDelete",
    ] {
        assert!(writes.iter().any(|a| a == w), "{w} is not denied to others");
    }
    assert_eq!(
        deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]["Fn::GetAtt"][0],
        "BootstrapFunctionRole"
    );
    assert!(deny["Resource"]["Fn::Sub"]
        .as_str()
        .unwrap()
        .ends_with(&format!("table/{name}")));
    // Reserved concurrency: a parameter, empty (none) by default.
    let reserved = &f["ReservedConcurrentExecutions"]["Fn::If"];
    assert_eq!(reserved[1]["Ref"], "ReservedConcurrency");
    assert_eq!(reserved[2]["Ref"], "AWS::NoValue");
    assert_eq!(t["Parameters"]["ReservedConcurrency"]["Default"], "");
    let cond = &t["Conditions"][reserved[0].as_str().unwrap()];
    assert_eq!(
        cond["Fn::Not"][0]["Fn::Equals"][0]["Ref"],
        "ReservedConcurrency"
    );
}

/// A setting has one default: a parameter's is the function's own for its property.
#[test]
fn parameters_default_to_what_the_function_defaults_to() {
    let t = template();
    let s = spec::parse(&serde_json::json!({
        "ClusterName": "c", "AccountId": "a", "DelegateToken": "t"
    }))
    .unwrap();
    for (parameter, function_default) in [
        ("LaunchType", s.launch_type.as_str().to_string()),
        ("ManagerHostAndPort", s.manager_host_and_port.clone()),
        ("DelegateName", s.delegate_name.clone()),
        ("TaskDefinitionFamily", s.family.clone()),
        ("Cpu", s.cpu.to_string()),
        ("Memory", s.memory.to_string()),
        ("DesiredCount", s.desired_count.to_string()),
        ("WaitForReady", s.wait_for_ready.to_string()),
        ("ReadyTimeoutSeconds", s.ready_timeout_seconds.to_string()),
        ("MinimalImage", s.minimal_image.to_string()),
    ] {
        let default = &t["Parameters"][parameter]["Default"];
        let default = default
            .as_str()
            .map(String::from)
            .unwrap_or(default.to_string());
        assert_eq!(default, function_default, "parameter {parameter}");
    }
}

#[test]
fn every_choice_a_user_makes_is_a_parameter_that_reaches_the_function() {
    let t = template();
    let props = &t["Resources"]["HarnessDelegate"]["Properties"];
    for name in [
        "ClusterName",
        "LaunchType",
        "AccountId",
        "ManagerHostAndPort",
        "DelegateTokenSecretArn",
        "DelegateName",
        "DelegateGroupName",
        "DelegateTags",
        "Image",
        "Cpu",
        "Memory",
        "DesiredCount",
        "VpcId",
        "SubnetIds",
        "SecurityGroupIds",
        "TaskRoleArn",
        "ExecutionRoleArn",
        "WaitForReady",
        "ReadyTimeoutSeconds",
        "HarnessApiKeySecretArn",
        "ImageUpgrade",
        "ImageRepository",
        "MinimalImage",
    ] {
        let p = &t["Parameters"][name];
        assert!(p.is_object(), "no parameter {name}");
        assert!(
            p["Description"].as_str().is_some_and(|d| !d.is_empty()),
            "parameter {name} has no description"
        );
        // Passed as is, or as one branch of a condition (the other: NoValue or a created role).
        let v = &props[name];
        let refs = [&v["Ref"], &v["Fn::If"][1]["Ref"], &v["Fn::If"][2]["Ref"]];
        assert!(
            refs.iter().any(|r| *r == name),
            "parameter {name} does not reach the property {name}: {v}"
        );
        // An optional parameter is really optional: its empty default sends no value.
        if p["Default"] == "" && name != "ExecutionRoleArn" {
            assert_eq!(v["Fn::If"][2]["Ref"], "AWS::NoValue", "{name}: {v}");
        }
    }
    assert_eq!(
        t["Parameters"]["HealSchedule"]["Default"],
        "rate(5 minutes)"
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
            // An attribute of a resource, or a resource, known only once deployed.
            attribute if attribute.contains('.') => Value::from(format!("<{attribute}>")),
            resource if t["Resources"].get(resource).is_some() => {
                Value::from(format!("<{resource}>"))
            }
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
                "Fn::FindInMap" => {
                    let key = |i: usize| {
                        let v = resolve(t, &arg[i], params)?;
                        Some(v.as_str().map(String::from).unwrap_or(v.to_string()))
                    };
                    let found = &t["Mappings"][arg[0].as_str()?][key(1)?][key(2)?];
                    // Every scalar reaches the function as a string.
                    Some(Value::from(found.to_string()))
                }
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
    let mut params = required_params(&w);
    params.insert("ExecutionRoleArn".into(), w.exec_role.clone().into());
    params.insert("TaskRoleArn".into(), w.task_role.clone().into());
    params.insert("DesiredCount".into(), 1.into());
    install_and_remove(&c, &params).await;
}

#[tokio::test]
async fn the_fargate_quick_path_needs_no_pre_made_role() {
    let c = clients().await;
    let w = seed(&c, false).await;
    // What a user must give, and the VPC (moto's region holds many): no roles, no subnets, no
    // security groups.
    install_and_remove(&c, &required_params(&w)).await;
}

/// The parameters a user must give, the VPC, and a family of the test's own.
fn required_params(w: &World) -> serde_json::Map<String, Value> {
    let params = serde_json::json!({
        "ClusterName": w.cluster,
        "AccountId": "acct-123",
        "DelegateTokenSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:harness/token",
        "VpcId": w.vpc,
        "TaskDefinitionFamily": format!("{}-family", w.name),
        // The Fargate path: the seeded cluster has no container instance.
        "LaunchType": "FARGATE",
    });
    params.as_object().unwrap().clone()
}

/// The custom resource's properties as CloudFormation sends them for these parameters; the
/// execution role the template creates (when none is given) is created in moto first, as the
/// template defines it.
async fn install_and_remove(
    c: &harness_ecs_delegate_bootstrap::Clients,
    params: &serde_json::Map<String, Value>,
) {
    let t = template();
    let mut props =
        resolve(&t, &t["Resources"]["HarnessDelegate"]["Properties"], params).expect("properties");
    props.as_object_mut().unwrap().remove("ServiceToken");
    if props["LogGroupName"] == "<DelegateLogGroup>" {
        props["LogGroupName"] = Value::from(DEPLOYED_LOG_GROUP);
    }
    // The stack's own table: the one the function records in.
    assert_eq!(props["RecordTable"], "<RecordTable>");
    props["RecordTable"] = Value::from(RECORD_TABLE);
    if props["ExecutionRoleArn"] == "<DelegateExecutionRole>" {
        let arn = create_role_as_the_template_does(c, &t, params).await;
        props["ExecutionRoleArn"] = Value::from(arn);
    }
    // CloudFormation sends every scalar as a string, lists as lists of strings.
    let text = props.to_string();
    assert!(
        !text.contains("\"Ref\"") && !text.contains("Fn::") && !text.contains('<'),
        "unresolved: {text}"
    );
    assert_eq!(props["DesiredCount"], "1", "numbers arrive as strings");

    let rx = Receiver::start(0).await;
    let created = create_ok(c, &rx, "c", &props).await;
    let arn = created["PhysicalResourceId"].as_str().unwrap().to_string();
    for output in t["Outputs"].as_object().unwrap().values() {
        // Every output of the delegate reads an attribute the function returns.
        if output["Value"]["Ref"] == "BootstrapFunction" {
            continue;
        }
        let attr = output["Value"]["Fn::GetAtt"][1].as_str().unwrap();
        assert!(
            created["Data"][attr]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "output {attr} missing from Data: {created}"
        );
    }
    // The delegate's output goes to the group the stack made for it.
    assert_eq!(created["Data"]["LogGroupName"], DEPLOYED_LOG_GROUP);
    let td = c
        .ecs
        .describe_task_definition()
        .task_definition(created["Data"]["TaskDefinitionArn"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let lc = td.task_definition().unwrap().container_definitions()[0]
        .log_configuration()
        .expect("a log configuration")
        .clone();
    assert_eq!(lc.log_driver().as_str(), "awslogs");
    assert_eq!(
        lc.options()
            .unwrap()
            .get("awslogs-group")
            .map(String::as_str),
        Some(DEPLOYED_LOG_GROUP)
    );
    let deleted = run_cfn(
        c,
        &rx,
        cfn_event("Delete", &rx.url("d"), &props, Some(&arn), None),
    )
    .await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
}

/// The name and ARN the log group the stack creates gets, as CloudFormation would name it.
const DEPLOYED_LOG_GROUP: &str = "test-DelegateLogGroup-AbC123";
const DEPLOYED_LOG_GROUP_ARN: &str =
    "arn:aws:logs:us-east-1:123456789012:log-group:test-DelegateLogGroup-AbC123:*";

/// The delegate logs to the group the stack creates by default, to a given one, or nowhere; the
/// execution role the stack creates may write to that group alone.
#[test]
fn the_delegate_logs_to_its_own_group_and_the_role_writes_there_alone() {
    let t = template();
    let p = &t["Parameters"]["DelegateLogGroupName"];
    assert!(p["Description"].as_str().is_some_and(|d| !d.is_empty()));
    let given = format!(
        "arn:aws:logs:us-east-1:123456789012:log-group:{}:*",
        "team/delegates"
    );
    for (setting, property, resource) in [
        (
            "",
            "<DelegateLogGroup>",
            Some("<DelegateLogGroup>".to_string()),
        ),
        ("team/delegates", "team/delegates", Some(given)),
        ("none", "none", None),
    ] {
        let mut params = serde_json::Map::new();
        params.insert("ClusterName".into(), Value::from("c"));
        params.insert("AccountId".into(), Value::from("a"));
        params.insert(
            "DelegateTokenSecretArn".into(),
            Value::from("arn:aws:secretsmanager:us-east-1:1:secret:t"),
        );
        params.insert("DelegateLogGroupName".into(), Value::from(setting));
        let props = resolve(
            &t,
            &t["Resources"]["HarnessDelegate"]["Properties"],
            &params,
        )
        .unwrap();
        assert_eq!(props["LogGroupName"], property, "{setting:?}");
        let role = resolve(
            &t,
            &t["Resources"]["DelegateExecutionRole"]["Properties"],
            &params,
        );
        let statements: Vec<Value> = role.unwrap()["Policies"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["PolicyDocument"]["Statement"].as_array().unwrap().clone())
            .collect();
        let logs: Vec<&Value> = statements
            .iter()
            .filter(|s| s.to_string().contains("logs:"))
            .collect();
        match resource {
            None => assert!(logs.is_empty(), "{setting:?}: {logs:?}"),
            Some(r) => {
                assert_eq!(logs.len(), 1, "{setting:?}: {logs:?}");
                assert_eq!(logs[0]["Resource"], Value::from(r), "{setting:?}");
            }
        }
    }
    let group = &t["Resources"]["DelegateLogGroup"];
    assert_eq!(group["Condition"], "CreateDelegateLogGroup");
    assert_eq!(
        group["Properties"]["RetentionInDays"]["Ref"],
        "DelegateLogRetentionInDays"
    );
    assert_eq!(t["Parameters"]["DelegateLogRetentionInDays"]["Default"], 30);
}

/// DelegateExecutionRole as the template defines it: trusted by ECS tasks, the AWS managed
/// execution policy, and read access to the token secret. Created in moto (without the managed
/// policy, which this moto does not load) and returned as an ARN.
async fn create_role_as_the_template_does(
    c: &harness_ecs_delegate_bootstrap::Clients,
    t: &Value,
    params: &serde_json::Map<String, Value>,
) -> String {
    let resource = &t["Resources"]["DelegateExecutionRole"];
    assert_eq!(resource["Condition"], "CreateExecutionRole");
    let role = resolve(t, &resource["Properties"], params).unwrap();
    let trust = &role["AssumeRolePolicyDocument"];
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "ecs-tasks.amazonaws.com"
    );
    // No managed policy: AmazonECSTaskExecutionRolePolicy may write to any log group.
    assert!(role.get("ManagedPolicyArns").is_none(), "{role}");
    let secret = &role["Policies"][0]["PolicyDocument"]["Statement"][0];
    assert_eq!(secret["Action"], "secretsmanager:GetSecretValue");
    assert_eq!(secret["Resource"], params["DelegateTokenSecretArn"]);
    // The group the stack creates stands in for its ARN once deployed.
    let role: Value = serde_json::from_str(
        &role
            .to_string()
            .replace("<DelegateLogGroup>", DEPLOYED_LOG_GROUP_ARN),
    )
    .unwrap();

    let name = unique("exec");
    let out = c
        .iam
        .create_role()
        .role_name(&name)
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .unwrap();
    for p in role["Policies"].as_array().unwrap() {
        c.iam
            .put_role_policy()
            .role_name(&name)
            .policy_name(p["PolicyName"].as_str().unwrap())
            .policy_document(p["PolicyDocument"].to_string())
            .send()
            .await
            .unwrap();
    }
    out.role().unwrap().arn().to_string()
}

/// EventBridge's matching, for the parts of patterns the template uses: a list of accepted
/// values (exact, or `{"prefix": …}`) per field, objects matched field by field.
fn pattern_matches(pattern: &Value, event: &Value) -> bool {
    pattern.as_object().unwrap().iter().all(|(k, p)| match p {
        Value::Array(accepted) => accepted.iter().any(|a| {
            let value = &event[k];
            match a.get("prefix").and_then(Value::as_str) {
                Some(prefix) => value.as_str().is_some_and(|v| v.starts_with(prefix)),
                // A list in the event matches when any of its items is accepted.
                None => value == a || value.as_array().is_some_and(|items| items.contains(a)),
            }
        }),
        Value::Object(_) => pattern_matches(p, &event[k]),
        _ => false,
    })
}

/// The ECS event rules match the delegate's own service and tasks, not the other services of
/// a shared cluster.
#[test]
fn the_ecs_rules_match_only_the_delegates_own_events() {
    let t = template();
    let params = serde_json::Map::from_iter([
        ("ClusterName".to_string(), Value::from("harness-demo")),
        ("AccountId".to_string(), Value::from("a")),
        (
            "DelegateTokenSecretArn".to_string(),
            Value::from("arn:aws:secretsmanager:us-east-1:1:secret:t"),
        ),
    ]);
    let service_arn = "arn:aws:ecs:us-east-1:123456789012:service/harness-demo/harness-delegate";
    let rule = |name: &str| {
        let pattern = resolve(
            &t,
            &t["Resources"][name]["Properties"]["EventPattern"],
            &params,
        );
        // The attributes the delegate's resource answers with (its Data).
        let text = pattern.unwrap().to_string();
        let text = text
            .replace("<HarnessDelegate.ServiceName>", "harness-delegate")
            .replace("<HarnessDelegate>", service_arn);
        serde_json::from_str::<Value>(&text).unwrap()
    };
    let load = |name: &str| -> Value {
        let path = format!("{}/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let stopped = load("ecs-task-stopped");
    let mut other_task = stopped.clone();
    other_task["detail"]["group"] = Value::from("service:other-team");
    let mut standalone = stopped.clone();
    standalone["detail"]["group"] = Value::from("family:batch-job");
    let tasks = rule("TaskStoppedRule");
    assert!(pattern_matches(&tasks, &stopped), "{tasks}");
    assert!(
        !pattern_matches(&tasks, &other_task),
        "another service's task: {tasks}"
    );
    assert!(
        !pattern_matches(&tasks, &standalone),
        "a task of no service: {tasks}"
    );

    let action = load("ecs-service-action");
    let mut other_service = action.clone();
    other_service["resources"][0] =
        Value::from(service_arn.replace("harness-delegate", "other-team"));
    let services = rule("EcsEventsRule");
    assert!(pattern_matches(&services, &action), "{services}");
    assert!(
        !pattern_matches(&services, &other_service),
        "another service: {services}"
    );
}

#[test]
fn every_sample_event_is_exercised_by_a_test() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut sources = String::new();
    for dir in ["tests", "src"] {
        for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
            let path = entry.unwrap().path();
            // This file is left out: no other test here loads an event, and this one's patterns
            // must not count as uses.
            if dir == "tests" && path.file_name().is_some_and(|f| f == "template.rs") {
                continue;
            }
            if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&without_line_comments(
                    &std::fs::read_to_string(path).unwrap(),
                ));
            }
        }
    }
    for entry in std::fs::read_dir(format!("{root}/events")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        // A sample is used when code (not a comment) loads it by name, through the engine tests'
        // loader or the heal tests' event builder, or names its file under the events folder.
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

/// `source` without `//` comments: whole comment lines (doc comments included) and trailing ones
/// after whitespace. A `//` inside a string after a space is cut too, which can only hide a use.
fn without_line_comments(source: &str) -> String {
    let mut code = String::new();
    for line in source.lines() {
        let line = line.trim_start();
        let end = if line.starts_with("//") {
            0
        } else {
            line.find(" //").unwrap_or(line.len())
        };
        code.push_str(&line[..end]);
        code.push('\n');
    }
    code
}

/// Each alarm reads a metric the function writes, in its namespace and with its dimension, and
/// mails only when AlarmEmail is given.
#[test]
fn the_alarms_read_metrics_the_function_writes() {
    use harness_ecs_delegate_bootstrap::metrics;
    let t = template();
    let mut alarms = 0;
    for (name, r) in t["Resources"].as_object().unwrap() {
        if r["Type"] != "AWS::CloudWatch::Alarm" {
            continue;
        }
        alarms += 1;
        let p = &r["Properties"];
        assert_eq!(p["Namespace"], metrics::NAMESPACE, "{name}");
        let metric = p["MetricName"].as_str().unwrap();
        assert!(
            metrics::METRICS.iter().any(|(m, _)| *m == metric),
            "{name} reads {metric}, which the function does not write"
        );
        let dims = p["Dimensions"].as_array().unwrap();
        assert_eq!(dims.len(), 1, "{name}");
        assert_eq!(dims[0]["Name"], metrics::DIMENSION, "{name}");
        // The dimension's value is the delegate's key, as the function writes it.
        assert_eq!(
            dims[0]["Value"]["Fn::Sub"], "${ClusterName}/${HarnessDelegate.ServiceName}",
            "{name}"
        );
        assert_eq!(p["AlarmActions"]["Fn::If"][0], "HasAlarmEmail", "{name}");
    }
    assert_eq!(
        alarms, 3,
        "the not-ready, failed-heal and behind-Harness alarms"
    );
    let behind = &t["Resources"]["DelegateBehindAlarm"];
    assert_eq!(
        behind["Condition"], "HasApiKey",
        "only when the run can ask Harness"
    );
    assert_eq!(
        behind["Properties"]["MetricName"],
        metrics::BEHIND_LATEST_SUPPORTED
    );
    assert_eq!(t["Resources"]["AlarmTopic"]["Condition"], "HasAlarmEmail");
    assert_eq!(
        t["Resources"]["AlarmSubscription"]["Condition"],
        "HasAlarmEmail"
    );
    assert_eq!(t["Parameters"]["AlarmEmail"]["Default"], "");
    // Every choice of minutes has its number of 5-minute periods.
    for minutes in t["Parameters"]["NotReadyAlarmMinutes"]["AllowedValues"]
        .as_array()
        .unwrap()
    {
        let key = minutes.to_string().trim_matches('"').to_string();
        let periods = &t["Mappings"]["FivesIn"][key.as_str()]["Periods"];
        assert_eq!(
            periods.as_i64().map(|p| p * 5).map(|m| m.to_string()),
            Some(key.clone()),
            "{key} minutes"
        );
    }
}

/// The template for StackSets (`make stackset-template`): SAM translated, no transform, the
/// same parameters plus the code's S3 location, lint-clean.
#[test]
fn the_stackset_template_is_transform_free_with_the_same_parameters() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::env::temp_dir().join(format!("{}.json", unique("stackset")));
    let translated = std::process::Command::new(venv_bin("python"))
        .args(["scripts/sam_translate.py", "template.yaml", "--stackset"])
        .arg(&out)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        translated.status.success(),
        "{}",
        String::from_utf8_lossy(&translated.stderr)
    );
    let stackset: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(stackset.get("Transform").is_none(), "a transform is left");
    let names = |t: &Value| -> BTreeSet<String> {
        t["Parameters"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let mut expected = names(&template());
    expected.extend(["CodeS3Bucket".to_string(), "CodeS3Key".to_string()]);
    assert_eq!(names(&stackset), expected);
    let code = &stackset["Resources"]["BootstrapFunction"]["Properties"]["Code"];
    assert_eq!(code["S3Bucket"]["Ref"], "CodeS3Bucket");
    assert_eq!(code["S3Key"]["Ref"], "CodeS3Key");
    let lint = std::process::Command::new(venv_bin("cfn-lint"))
        .arg(&out)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&out);
    assert!(
        lint.status.success(),
        "cfn-lint: {}",
        String::from_utf8_lossy(&lint.stdout)
    );
}

/// CloudFormation waits for the custom resource's answer `ServiceTimeout` seconds: longer than
/// any wait the stack allows, by the time the change itself and the answer take, and within
/// CloudFormation's limit; so a lost answer fails the stack in bounded time.
#[test]
fn the_custom_resource_times_out_a_margin_after_the_longest_wait() {
    let t = template();
    let cr = &t["Resources"]["HarnessDelegate"];
    assert_eq!(
        cr["Properties"]["ServiceTimeout"]["Fn::FindInMap"],
        serde_json::json!(["ServiceTimeoutFor", {"Ref": "ReadyTimeoutSeconds"}, "Seconds"])
    );
    assert_eq!(cr["DependsOn"], "BootstrapFunctionInvokesItself");
    let allowed = t["Parameters"]["ReadyTimeoutSeconds"]["AllowedValues"]
        .as_array()
        .unwrap();
    for ready in allowed {
        let ready = ready.as_u64().unwrap();
        let timeout = t["Mappings"]["ServiceTimeoutFor"][ready.to_string()]["Seconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("no ServiceTimeout for {ready}"));
        assert!(
            (ready + 300..=3600).contains(&timeout),
            "ReadyTimeoutSeconds {ready}: ServiceTimeout {timeout}"
        );
        assert!(
            spec::READY_TIMEOUT_RANGE.contains(&(ready as u32)),
            "{ready} is a timeout the function accepts"
        );
    }
}

#[test]
fn the_api_key_is_readable_only_when_given_and_only_that_secret() {
    let t = template();
    let statements = t["Resources"]["BootstrapFunctionRole"]["Properties"]["Policies"][0]
        ["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap()
        .clone();
    let conditional: Vec<&Value> = statements.iter().filter_map(|s| s.get("Fn::If")).collect();
    assert_eq!(
        conditional.len(),
        1,
        "one conditional grant: {conditional:?}"
    );
    let (condition, grant) = (&conditional[0][0], &conditional[0][1]);
    assert_eq!(condition, "HasApiKey");
    assert_eq!(
        t["Conditions"]["HasApiKey"],
        serde_json::json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "HarnessApiKeySecretArn"}, ""]}]})
    );
    assert_eq!(grant["Action"], "secretsmanager:GetSecretValue", "{grant}");
    assert_eq!(
        grant["Resource"],
        serde_json::json!({"Ref": "HarnessApiKeySecretArn"})
    );
    // No other statement names Secrets Manager: the delegate token is read by ECS, with the
    // execution role, never by the function.
    let others = statements.iter().filter(|s| s.get("Fn::If").is_none());
    for s in others {
        assert!(!s.to_string().contains("secretsmanager:"), "{s}");
    }
}

#[test]
fn the_upgrade_schedule_runs_the_upgrade_only_with_an_api_key() {
    let t = template();
    assert_eq!(t["Parameters"]["UpgradeSchedule"]["Default"], "rate(1 day)");
    let rule = &t["Resources"]["UpgradeScheduleRule"];
    assert_eq!(rule["Type"], "AWS::Events::Rule");
    assert_eq!(rule["Condition"], "HasApiKey");
    assert_eq!(
        rule["DependsOn"], "HarnessDelegate",
        "created after the delegate"
    );
    let p = &rule["Properties"];
    assert_eq!(p["ScheduleExpression"]["Ref"], "UpgradeSchedule");
    let target = &p["Targets"][0];
    assert_eq!(target["Arn"]["Fn::GetAtt"][0], "BootstrapFunction");
    let input: Value = serde_json::from_str(target["Input"].as_str().unwrap()).unwrap();
    let trigger = harness_ecs_delegate_bootstrap::classify::classify(&input).unwrap();
    assert_eq!(
        trigger,
        harness_ecs_delegate_bootstrap::classify::Trigger::Upgrade { targets: None },
        "the input is the upgrade run"
    );
    // The key goes only to the stack's Manager, whatever a request names.
    let env = &t["Resources"]["BootstrapFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(
        env["HARNESS_API_KEY_SECRET_ARN"]["Ref"],
        "HarnessApiKeySecretArn"
    );
    assert_eq!(env["HARNESS_MANAGER"]["Ref"], "ManagerHostAndPort");
    let permission = &t["Resources"]["UpgradeSchedulePermission"];
    assert_eq!(permission["Condition"], "HasApiKey");
    assert_eq!(
        permission["Properties"]["Principal"],
        "events.amazonaws.com"
    );
    assert_eq!(
        permission["Properties"]["SourceArn"]["Fn::GetAtt"][0],
        "UpgradeScheduleRule"
    );
}

/// What `sam build` does for a `BuildMethod: makefile` function (aws-lambda-builders'
/// custom_make workflow): `make --makefile <CodeUri>/Makefile build-<LogicalId>` in CodeUri
/// (build_in_source), with ARTIFACTS_DIR the directory it zips. Done here, the binary it hands
/// SAM must be the package the Runtime API test boots under qemu, byte for byte, for the
/// runtime and architecture the template declares.
#[test]
fn sam_builds_the_tested_package() {
    let root = env!("CARGO_MANIFEST_DIR");
    let t = template();
    let f = &t["Resources"]["BootstrapFunction"]["Properties"];
    assert_eq!(f["CodeUri"], ".", "the Makefile is CodeUri's");
    assert_eq!(
        f["Runtime"], "provided.al2023",
        "a custom runtime runs ./bootstrap"
    );
    assert_eq!(f["Architectures"], serde_json::json!(["arm64"]));
    let makefile = std::fs::read_to_string(format!("{root}/Makefile")).unwrap();
    assert!(
        makefile.contains("ARM64_TARGET := aarch64-unknown-linux-musl"),
        "the package is built for arm64, statically (no glibc of the runtime's image needed)"
    );
    let package =
        std::path::Path::new(root).join("target/lambda/harness-ecs-delegate-bootstrap/bootstrap");
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).unwrap();
    assert!(
        package.exists(),
        "{} is missing: run `make package` (make test does) before cargo test",
        package.display()
    );
    for source in package_sources() {
        assert!(
            modified(&package) >= modified(&source),
            "the package is older than {}: run `make package` (make test does) before cargo test",
            source.display()
        );
    }
    let artifacts = std::env::temp_dir().join(format!("sam-artifacts-{}", std::process::id()));
    std::fs::create_dir_all(&artifacts).unwrap();
    let out = std::process::Command::new("make")
        .args([
            "--no-print-directory",
            "--makefile",
            &format!("{root}/Makefile"),
        ])
        .arg("build-BootstrapFunction")
        .env("ARTIFACTS_DIR", &artifacts)
        .current_dir(root)
        .output()
        .expect("make runs");
    assert!(
        out.status.success(),
        "sam build's make target failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let built = std::fs::read(artifacts.join("bootstrap")).unwrap();
    let tested = std::fs::read(&package).unwrap();
    std::fs::remove_dir_all(&artifacts).unwrap();
    assert!(
        built == tested,
        "SAM would deploy another binary than the tested package"
    );
}

/// On macOS (no Debian cross gcc), the package's C is compiled by Zig through scripts/zig-cc:
/// the Makefile picks it there, installs the pinned Zig, and the wrapper compiles C for arm64
/// musl when called as cc-rs calls it (with clang's spelling of the target, which zig refuses).
#[test]
fn on_macos_the_package_is_built_with_zig() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("make")
        .args(["-n", "--no-print-directory", "package", "UNAME_S=Darwin"])
        .current_dir(root)
        .output()
        .expect("make runs");
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{plan}");
    assert!(
        plan.contains(&format!(
            "CC_aarch64_unknown_linux_musl={root}/scripts/zig-cc"
        )),
        "{plan}"
    );
    assert!(!plan.contains("apt-get"), "no apt-get on macOS: {plan}");
    let makefile = std::fs::read_to_string(format!("{root}/Makefile")).unwrap();
    let requirements = std::fs::read_to_string(format!("{root}/tests/requirements.txt")).unwrap();
    let pinned = makefile
        .lines()
        .find_map(|l| l.strip_prefix("ZIG_VERSION := "))
        .expect("the Makefile pins Zig");
    assert!(
        plan.contains(&format!("ziglang=={pinned}"))
            && requirements
                .lines()
                .any(|l| l == format!("ziglang=={pinned}")),
        "the tests compile with the Zig the Makefile installs ({pinned})"
    );
    let dir = std::env::temp_dir().join(format!("zig-cc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("probe.c"), "int probe(int x) { return x * 3; }\n").unwrap();
    let cc = std::process::Command::new(format!("{root}/scripts/zig-cc"))
        .args([
            "-Os",
            "-fPIC",
            "--target=aarch64-unknown-linux-musl",
            "-c",
            "-o",
        ])
        .arg(dir.join("probe.o"))
        .arg(dir.join("probe.c"))
        .output()
        .expect("scripts/zig-cc runs");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let object = std::fs::read(dir.join("probe.o")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(&object[..4], b"\x7fELF", "an ELF object");
    assert_eq!(object[18..20], [0xb7, 0x00], "for aarch64 (EM_AARCH64)");
}

/// A secret's ARN becomes a role's Resource (the execution role reads the token, the function
/// the API key): a wildcard there would grant every secret, so the parameters refuse one.
/// CloudFormation matches an AllowedPattern against the whole value; Python's re.fullmatch does
/// the same (no regex crate here for one test).
#[test]
fn secret_parameters_take_one_secret_not_a_wildcard() {
    let t = template();
    let ok = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:harness/token-AbC123";
    let bad = [
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:*",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:harness/*",
        "arn:aws:secretsmanager:*:123456789012:secret:harness/token",
    ];
    for name in ["DelegateTokenSecretArn", "HarnessApiKeySecretArn"] {
        let pattern = t["Parameters"][name]["AllowedPattern"].as_str().unwrap();
        let matches = |value: &str| {
            let out = std::process::Command::new("python3")
                .args([
                    "-c",
                    "import re, sys; sys.exit(0 if re.fullmatch(sys.argv[1], sys.argv[2]) else 1)",
                ])
                .args([pattern, value])
                .status()
                .expect("python3 runs");
            out.success()
        };
        assert!(matches(ok), "{name} refuses {ok}");
        for b in bad {
            assert!(!matches(b), "{name} accepts {b}");
        }
    }
}
