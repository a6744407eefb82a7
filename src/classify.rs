//! Classify: which of the accepted payloads an event is, from its raw JSON.
//!
//! The handler takes `serde_json::Value` rather than a typed event so that a CloudFormation
//! request with odd or missing fields still reaches us and still gets its answer.

use serde_json::Value;

use crate::model::{
    cluster_short_name, Origin, ServiceArn, Target, TaskStatus, DEFAULT_SERVICE_NAME,
};

crate::model::string_enum! {
    /// A CloudFormation custom resource request's type.
    pub enum RequestType { Create = "Create", Update = "Update", Delete = "Delete" }
}

/// A CloudFormation custom resource request. Debug never shows the ResponseURL.
#[derive(Clone, PartialEq)]
pub struct CfnRequest {
    /// `Err(raw)`: a RequestType we do not know; answered FAILED.
    pub request_type: Result<RequestType, String>,
    pub request_id: String,
    pub response_url: String,
    pub stack_id: String,
    pub logical_resource_id: String,
    pub physical_resource_id: Option<String>,
    pub resource_type: String,
    pub properties: Value,
    pub old_properties: Option<Value>,
}

impl CfnRequest {
    /// The request as CloudFormation sent it (the fields the function reads).
    pub fn to_event(&self) -> Value {
        let mut e = serde_json::json!({
            "RequestType": self.request_type_name(),
            "RequestId": self.request_id,
            "ResponseURL": self.response_url,
            "StackId": self.stack_id,
            "LogicalResourceId": self.logical_resource_id,
            "ResourceType": self.resource_type,
            "ResourceProperties": self.properties,
        });
        if let Some(id) = &self.physical_resource_id {
            e["PhysicalResourceId"] = Value::String(id.clone());
        }
        if let Some(old) = &self.old_properties {
            e["OldResourceProperties"] = old.clone();
        }
        e
    }

    /// The RequestType as sent, for logs.
    pub fn request_type_name(&self) -> &str {
        match &self.request_type {
            Ok(t) => t.as_str(),
            Err(raw) => raw,
        }
    }
}

impl std::fmt::Debug for CfnRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CfnRequest")
            .field("request_type", &self.request_type)
            .field("request_id", &self.request_id)
            .field("response_url", &"<redacted>")
            .field("stack_id", &self.stack_id)
            .field("logical_resource_id", &self.logical_resource_id)
            .field("physical_resource_id", &self.physical_resource_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectAction {
    Reconcile,
    Plan,
    Delete,
}

/// A direct request's `ResourceProperties`, as sent. They may carry the delegate's token
/// (`DelegateToken`), so `Debug` shows only their names.
#[derive(Clone, PartialEq)]
pub struct Properties(pub Value);

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_object() {
            Some(o) => f
                .debug_tuple("Properties")
                .field(&o.keys().collect::<Vec<_>>())
                .finish(),
            None => f.write_str("Properties(not an object)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    CloudFormation(Box<CfnRequest>),
    Direct {
        action: DirectAction,
        properties: Properties,
        /// `"Force": true`: act on a delegate that a stack owns (logged at WARN).
        force: bool,
    },
    /// EventBridge scheduled event (`source: aws.events`): heal every delegate.
    Schedule,
    /// EventBridge ECS event (`source: aws.ecs`).
    EcsEvent(EcsEvent),
    /// Direct `{"Action": "Heal", "Targets": […]}`; no targets: every delegate.
    Heal {
        targets: Option<Vec<Target>>,
    },
    /// Direct `{"Action": "Upgrade", "Targets": […]}` (the upgrade schedule's input): move the
    /// delegates that follow Harness to its latest supported version; no targets: every one.
    Upgrade {
        targets: Option<Vec<Target>>,
    },
    /// The function's own hand-on of a wait for the delegate (continuation.rs): internal.
    Continuation {
        request: Box<CfnRequest>,
        operation: String,
    },
}

/// An ECS event: the delegate it calls to heal, or why it calls for nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct EcsEvent {
    pub detail_type: String,
    pub target: Result<Target, String>,
    /// The accounts and regions the event names (its envelope, the ARNs it carries).
    pub origin: Origin,
}

/// The key that marks a continuation's payload (continuation.rs); its value names what
/// continues.
pub const CONTINUATION_MARKER: &str = "HarnessDelegateBootstrap";
pub const CONTINUE_WAIT: &str = "ContinueWait";

/// A continuation: its request must be a CloudFormation request the function can answer.
fn continuation(event: &Value, what: &Value) -> Result<Trigger, ClassifyError> {
    let operation = event
        .get("Operation")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if what != CONTINUE_WAIT || operation.is_empty() {
        return Err(ClassifyError::BadContinuation(
            "it names what continues (ContinueWait) and its Operation",
        ));
    }
    match classify(event.get("Request").unwrap_or(&Value::Null))? {
        Trigger::CloudFormation(request) => Ok(Trigger::Continuation {
            request,
            operation: operation.to_string(),
        }),
        _ => Err(ClassifyError::BadContinuation(
            "it carries the CloudFormation request it answers",
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    #[error("this looks like a CloudFormation request but lacks {0}, so it cannot be answered; CloudFormation always sends RequestType, ResponseURL, StackId, RequestId and LogicalResourceId")]
    IncompleteCloudFormation(String),
    #[error("unknown Action \"{0}\": use Reconcile, Plan, Delete, Heal or Upgrade, e.g. {{\"Action\": \"Plan\", \"ResourceProperties\": {{…}}}} or {{\"Action\": \"Heal\"}}")]
    UnknownAction(String),
    #[error("Targets{0}: pass a list of {{\"ClusterName\": \"…\", \"ServiceName\": \"…\"}} (ServiceName defaults to harness-delegate), or leave Targets out to heal every delegate")]
    BadTargets(String),
    #[error("Force must be true or false: true acts on a delegate that a stack owns, which that stack's next update may undo")]
    BadForce,
    #[error("a direct {0} invocation needs ResourceProperties: {{\"Action\": \"{0}\", \"ResourceProperties\": {{\"ClusterName\": …}}}}")]
    MissingProperties(String),
    #[error("unrecognised event: expected a CloudFormation custom resource request (RequestType, ResponseURL, StackId…), an EventBridge scheduled event (source aws.events), an EventBridge ECS event (source aws.ecs), or a direct invocation {{\"Action\": \"Reconcile\" | \"Plan\" | \"Delete\", \"ResourceProperties\": {{…}}}} or {{\"Action\": \"Heal\" | \"Upgrade\", \"Targets\": […]}}")]
    Unrecognised,
    #[error("a malformed continuation ({0}): continuations are internal, sent by the function to itself; nothing was done")]
    BadContinuation(&'static str),
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(String::from)
}

pub fn classify(event: &Value) -> Result<Trigger, ClassifyError> {
    if let Some(what) = event.get(CONTINUATION_MARKER) {
        return continuation(event, what);
    }
    let is_cfn = ["RequestType", "ResponseURL", "StackId"]
        .iter()
        .any(|k| event.get(k).is_some());
    if is_cfn {
        let mut missing = Vec::new();
        let mut need = |k: &str| {
            let v = str_field(event, k).filter(|s| !s.is_empty());
            if v.is_none() {
                missing.push(k.to_string());
            }
            v.unwrap_or_default()
        };
        let response_url = need("ResponseURL");
        let stack_id = need("StackId");
        let request_id = need("RequestId");
        let logical_resource_id = need("LogicalResourceId");
        if !missing.is_empty() {
            return Err(ClassifyError::IncompleteCloudFormation(missing.join(", ")));
        }
        let raw_type = str_field(event, "RequestType").unwrap_or_default();
        let request_type = RequestType::parse(&raw_type).ok_or(raw_type);
        return Ok(Trigger::CloudFormation(Box::new(CfnRequest {
            request_type,
            request_id,
            response_url,
            stack_id,
            logical_resource_id,
            physical_resource_id: str_field(event, "PhysicalResourceId").filter(|s| !s.is_empty()),
            resource_type: str_field(event, "ResourceType").unwrap_or_default(),
            properties: event
                .get("ResourceProperties")
                .cloned()
                .unwrap_or(Value::Object(Default::default())),
            old_properties: event.get("OldResourceProperties").cloned(),
        })));
    }
    match event.get("source").and_then(Value::as_str) {
        Some("aws.events") => return Ok(Trigger::Schedule),
        Some("aws.ecs") => return Ok(Trigger::EcsEvent(ecs_event(event))),
        _ => {}
    }
    if let Some(action) = event.get("Action") {
        let raw = action.as_str().unwrap_or_default();
        if raw == "Heal" {
            return Ok(Trigger::Heal {
                targets: targets(event.get("Targets"))?,
            });
        }
        if raw == "Upgrade" {
            return Ok(Trigger::Upgrade {
                targets: targets(event.get("Targets"))?,
            });
        }
        let action = match raw {
            "Reconcile" => DirectAction::Reconcile,
            "Plan" => DirectAction::Plan,
            "Delete" => DirectAction::Delete,
            other => return Err(ClassifyError::UnknownAction(other.to_string())),
        };
        let Some(properties) = event.get("ResourceProperties").cloned() else {
            return Err(ClassifyError::MissingProperties(raw.to_string()));
        };
        let force = match event.get("Force") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ClassifyError::BadForce),
        };
        return Ok(Trigger::Direct {
            action,
            properties: Properties(properties),
            force,
        });
    }
    Err(ClassifyError::Unrecognised)
}

/// The `Targets` of a direct Heal. `None` (absent, null or empty): every delegate.
fn targets(v: Option<&Value>) -> Result<Option<Vec<Target>>, ClassifyError> {
    let items = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if a.is_empty() => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ClassifyError::BadTargets(" is not a list".into())),
    };
    let mut out = Vec::new();
    for (i, t) in items.iter().enumerate() {
        let text = |k: &str| {
            t.get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let Some(cluster) = text("ClusterName") else {
            return Err(ClassifyError::BadTargets(format!(
                "[{i}] has no ClusterName"
            )));
        };
        if t.get("ServiceName").is_some_and(|s| !s.is_string()) {
            return Err(ClassifyError::BadTargets(format!(
                "[{i}].ServiceName is not a string"
            )));
        }
        out.push(Target {
            cluster: cluster.to_string(),
            service: text("ServiceName")
                .unwrap_or(DEFAULT_SERVICE_NAME)
                .to_string(),
        });
    }
    Ok(Some(out))
}

/// Which delegate an ECS event is about, if it calls for a heal: a service's warning or error,
/// a FAILED deployment, a service's task that STOPPED. Everything else is ignored (said why).
fn ecs_event(event: &Value) -> EcsEvent {
    let detail_type = str_field(event, "detail-type").unwrap_or_default();
    let detail = &event["detail"];
    let field = |k: &str| detail.get(k).and_then(Value::as_str).unwrap_or_default();
    let service_arn = || -> Option<Target> {
        let arn = event["resources"]
            .as_array()?
            .iter()
            .filter_map(|r| ServiceArn::parse(r.as_str()?))
            .find(|a| a.cluster.is_some())?;
        Some(Target {
            cluster: arn.cluster?,
            service: arn.service,
        })
    };
    let target = match detail_type.as_str() {
        "ECS Service Action" => match field("eventType") {
            "WARN" | "ERROR" => service_arn().ok_or_else(|| "names no service".to_string()),
            other => Err(format!("{} {other}: nothing to heal", field("eventName"))),
        },
        "ECS Deployment State Change" => match field("eventName") {
            "SERVICE_DEPLOYMENT_FAILED" => {
                service_arn().ok_or_else(|| "names no service".to_string())
            }
            other => Err(format!("{other}: nothing to heal")),
        },
        "ECS Task State Change" => {
            let service = field("group").strip_prefix("service:");
            let stopped = TaskStatus::parse(field("lastStatus")) == Some(TaskStatus::Stopped);
            match (stopped, service) {
                (true, Some(service)) if !field("clusterArn").is_empty() => Ok(Target {
                    cluster: cluster_short_name(field("clusterArn")).to_string(),
                    service: service.to_string(),
                }),
                (true, _) => Err("a task that belongs to no service: nothing to heal".into()),
                (false, _) => Err(format!(
                    "a task is {}: nothing to heal",
                    field("lastStatus")
                )),
            }
        }
        other => Err(format!("\"{other}\" events call for no heal")),
    };
    let mut origin = Origin::default();
    origin.add(
        str_field(event, "account").as_deref(),
        str_field(event, "region").as_deref(),
    );
    let arns = event["resources"].as_array().into_iter().flatten();
    for arn in arns.filter_map(Value::as_str).chain([field("clusterArn")]) {
        origin.add_arn(arn);
    }
    EcsEvent {
        detail_type,
        target,
        origin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfn(request_type: &str) -> Value {
        json!({
            "RequestType": request_type,
            "ServiceToken": "arn:aws:lambda:us-east-1:1:function:f",
            "ResponseURL": "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/x?sig=1",
            "StackId": "arn:aws:cloudformation:us-east-1:1:stack/s/guid",
            "RequestId": "r-1",
            "LogicalResourceId": "Delegate",
            "ResourceType": "Custom::HarnessDelegate",
            "ResourceProperties": {"ClusterName": "prod"}
        })
    }

    #[test]
    fn the_four_shapes() {
        let Trigger::CloudFormation(r) = classify(&cfn("Create")).unwrap() else {
            panic!()
        };
        assert_eq!(r.request_type, Ok(RequestType::Create));
        assert_eq!(r.properties["ClusterName"], "prod");
        assert!(
            !format!("{r:?}").contains("s3.amazonaws.com"),
            "Debug shows the ResponseURL"
        );

        assert_eq!(
            classify(
                &json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}})
            )
            .unwrap(),
            Trigger::Schedule
        );
        assert!(matches!(
            classify(
                &json!({"source": "aws.ecs", "detail-type": "ECS Service Action", "detail": {}})
            )
            .unwrap(),
            Trigger::EcsEvent(EcsEvent { target: Err(_), .. })
        ));
        assert_eq!(
            classify(&json!({"Action": "Heal"})).unwrap(),
            Trigger::Heal { targets: None }
        );
        assert_eq!(
            classify(&json!({"Action": "Delete", "ResourceProperties": {"a": 1}, "Force": true}))
                .unwrap(),
            Trigger::Direct {
                action: DirectAction::Delete,
                properties: Properties(json!({"a": 1})),
                force: true,
            }
        );
        assert_eq!(
            classify(&json!({"Action": "Delete", "ResourceProperties": {}, "Force": "yes"})),
            Err(ClassifyError::BadForce)
        );
        assert_eq!(
            classify(&json!({"Action": "Plan", "ResourceProperties": {"a": 1}})).unwrap(),
            Trigger::Direct {
                action: DirectAction::Plan,
                force: false,
                properties: Properties(json!({"a": 1}))
            }
        );
    }

    #[test]
    fn a_direct_requests_debug_names_its_properties_without_their_values() {
        let event = json!({"Action": "Reconcile", "ResourceProperties": {"ClusterName": "prod", "DelegateToken": "s3cr3t-token"}});
        let shown = format!("{:?}", classify(&event).unwrap());
        assert!(shown.contains("\"DelegateToken\""), "{shown}");
        assert!(!shown.contains("s3cr3t-token"), "{shown}");
        assert!(!shown.contains("prod"), "{shown}");
    }

    #[test]
    fn a_continuation_carries_a_cloudformation_request() {
        let ok = json!({"HarnessDelegateBootstrap": "ContinueWait", "Operation": "op-1", "Request": cfn("Create")});
        let Trigger::Continuation { request, operation } = classify(&ok).unwrap() else {
            panic!("not a continuation")
        };
        assert_eq!(
            (operation.as_str(), request.request_id.as_str()),
            ("op-1", "r-1")
        );
        // What the continuation sends on is the request as it came.
        let Ok(Trigger::CloudFormation(again)) = classify(&request.to_event()) else {
            panic!("the request sent on is a CloudFormation request")
        };
        assert_eq!(again.to_event(), request.to_event());
        assert_eq!(again.response_url, request.response_url);
        for bad in [
            json!({"HarnessDelegateBootstrap": "ContinueWait", "Request": cfn("Create")}),
            json!({"HarnessDelegateBootstrap": "Upgrade", "Operation": "op-1", "Request": cfn("Create")}),
            json!({"HarnessDelegateBootstrap": "ContinueWait", "Operation": "op-1", "Request": {"Action": "Heal"}}),
        ] {
            let e = classify(&bad).unwrap_err().to_string();
            assert!(e.contains("continuations are internal"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_request_type_is_still_answerable() {
        let Trigger::CloudFormation(r) = classify(&cfn("Restart")).unwrap() else {
            panic!()
        };
        assert_eq!(r.request_type, Err("Restart".into()));
    }

    #[test]
    fn incomplete_or_unknown_payloads_are_named() {
        let mut e = cfn("Create");
        e.as_object_mut().unwrap().remove("ResponseURL");
        assert_eq!(
            classify(&e),
            Err(ClassifyError::IncompleteCloudFormation(
                "ResponseURL".into()
            ))
        );
        assert!(matches!(
            classify(&json!({"Action": "Heal2"})),
            Err(ClassifyError::UnknownAction(_))
        ));
        assert!(matches!(
            classify(&json!({"Action": "Plan"})),
            Err(ClassifyError::MissingProperties(_))
        ));
        let msg = classify(&json!({"hello": 1})).unwrap_err().to_string();
        assert!(msg.contains("aws.events") && msg.contains("RequestType") && msg.contains("Plan"));
        assert_eq!(
            classify(&json!("just a string")),
            Err(ClassifyError::Unrecognised)
        );
    }

    fn event(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn demo() -> Target {
        Target {
            cluster: "harness-demo".into(),
            service: "harness-delegate".into(),
        }
    }

    #[test]
    fn the_sample_heal_events() {
        assert_eq!(
            classify(&event(include_str!("../events/heal-schedule.json"))),
            Ok(Trigger::Schedule)
        );
        assert_eq!(
            classify(&event(include_str!("../events/heal.json"))),
            Ok(Trigger::Heal {
                targets: Some(vec![demo()])
            })
        );
        for (name, text, kind) in [
            (
                "service action",
                include_str!("../events/ecs-service-action.json"),
                "ECS Service Action",
            ),
            (
                "task stopped",
                include_str!("../events/ecs-task-stopped.json"),
                "ECS Task State Change",
            ),
        ] {
            assert_eq!(
                classify(&event(text)),
                Ok(Trigger::EcsEvent(EcsEvent {
                    detail_type: kind.into(),
                    target: Ok(demo()),
                    origin: Origin::of_arn("arn:aws:ecs:us-east-1:123456789012:cluster/x"),
                })),
                "{name}"
            );
        }
    }

    #[test]
    fn ecs_events_that_call_for_no_heal_say_why() {
        let target = |e: Value| match classify(&e) {
            Ok(Trigger::EcsEvent(e)) => e.target,
            other => panic!("{other:?}"),
        };
        let deployment = |name: &str| {
            json!({"source": "aws.ecs", "detail-type": "ECS Deployment State Change",
                "resources": ["arn:aws:ecs:us-east-1:1:service/prod/harness-delegate"],
                "detail": {"eventType": "ERROR", "eventName": name}})
        };
        assert_eq!(
            target(deployment("SERVICE_DEPLOYMENT_FAILED")),
            Ok(Target {
                cluster: "prod".into(),
                service: "harness-delegate".into()
            })
        );
        assert!(target(deployment("SERVICE_DEPLOYMENT_COMPLETED"))
            .unwrap_err()
            .contains("nothing to heal"));
        let mut running = event(include_str!("../events/ecs-task-stopped.json"));
        running["detail"]["lastStatus"] = json!("RUNNING");
        assert_eq!(
            target(running),
            Err("a task is RUNNING: nothing to heal".into())
        );
        let mut standalone = event(include_str!("../events/ecs-task-stopped.json"));
        standalone["detail"]["group"] = json!("family:batch-job");
        assert!(target(standalone)
            .unwrap_err()
            .contains("belongs to no service"));
        let instance = json!({"source": "aws.ecs", "detail-type": "ECS Container Instance State Change", "detail": {}});
        assert!(target(instance).unwrap_err().contains("call for no heal"));
    }

    #[test]
    fn heal_targets_are_checked() {
        assert_eq!(
            classify(&json!({"Action": "Heal", "Targets": []})),
            Ok(Trigger::Heal { targets: None })
        );
        assert_eq!(
            classify(&json!({"Action": "Upgrade"})),
            Ok(Trigger::Upgrade { targets: None })
        );
        assert_eq!(
            classify(&json!({"Action": "Upgrade", "Targets": [{"ClusterName": "prod"}]})),
            Ok(Trigger::Upgrade {
                targets: Some(vec![Target {
                    cluster: "prod".into(),
                    service: crate::model::DEFAULT_SERVICE_NAME.into()
                }])
            })
        );
        assert_eq!(
            classify(&json!({"Action": "Heal", "Targets": [{"ClusterName": "prod"}]})),
            Ok(Trigger::Heal {
                targets: Some(vec![Target {
                    cluster: "prod".into(),
                    service: "harness-delegate".into()
                }])
            })
        );
        for (bad, says) in [
            (json!("prod"), "Targets is not a list"),
            (
                json!([{"ServiceName": "x"}]),
                "Targets[0] has no ClusterName",
            ),
            (
                json!([{"ClusterName": "prod", "ServiceName": 3}]),
                "Targets[0].ServiceName is not a string",
            ),
        ] {
            let e = classify(&json!({"Action": "Heal", "Targets": bad}))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says) && e.contains("ClusterName"), "{e}");
        }
    }
}
