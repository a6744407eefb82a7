//! Classify: which of the accepted payloads an event is, from its raw JSON.
//!
//! The handler takes `serde_json::Value` rather than a typed event so that a CloudFormation
//! request with odd or missing fields still reaches us and still gets its answer.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    Create,
    Update,
    Delete,
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

#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    CloudFormation(Box<CfnRequest>),
    Direct {
        action: DirectAction,
        properties: Value,
    },
    /// EventBridge scheduled event (`source: aws.events`).
    Schedule,
    /// EventBridge ECS event (`source: aws.ecs`).
    EcsEvent {
        detail_type: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    #[error("this looks like a CloudFormation request but lacks {0}, so it cannot be answered; CloudFormation always sends RequestType, ResponseURL, StackId, RequestId and LogicalResourceId")]
    IncompleteCloudFormation(String),
    #[error("unknown Action \"{0}\": use Reconcile, Plan or Delete, e.g. {{\"Action\": \"Plan\", \"ResourceProperties\": {{…}}}}")]
    UnknownAction(String),
    #[error("a direct {0} invocation needs ResourceProperties: {{\"Action\": \"{0}\", \"ResourceProperties\": {{\"ClusterName\": …}}}}")]
    MissingProperties(String),
    #[error("unrecognised event: expected a CloudFormation custom resource request (RequestType, ResponseURL, StackId…), an EventBridge scheduled event (source aws.events), an EventBridge ECS event (source aws.ecs), or a direct invocation {{\"Action\": \"Reconcile\" | \"Plan\" | \"Delete\", \"ResourceProperties\": {{…}}}}")]
    Unrecognised,
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(String::from)
}

pub fn classify(event: &Value) -> Result<Trigger, ClassifyError> {
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
        let request_type = match raw_type.as_str() {
            "Create" => Ok(RequestType::Create),
            "Update" => Ok(RequestType::Update),
            "Delete" => Ok(RequestType::Delete),
            _ => Err(raw_type),
        };
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
        Some("aws.ecs") => {
            return Ok(Trigger::EcsEvent {
                detail_type: str_field(event, "detail-type").unwrap_or_default(),
            })
        }
        _ => {}
    }
    if let Some(action) = event.get("Action") {
        let raw = action.as_str().unwrap_or_default();
        let action = match raw {
            "Reconcile" => DirectAction::Reconcile,
            "Plan" => DirectAction::Plan,
            "Delete" => DirectAction::Delete,
            other => return Err(ClassifyError::UnknownAction(other.to_string())),
        };
        let Some(properties) = event.get("ResourceProperties").cloned() else {
            return Err(ClassifyError::MissingProperties(raw.to_string()));
        };
        return Ok(Trigger::Direct { action, properties });
    }
    Err(ClassifyError::Unrecognised)
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
        assert_eq!(
            classify(
                &json!({"source": "aws.ecs", "detail-type": "ECS Service Action", "detail": {}})
            )
            .unwrap(),
            Trigger::EcsEvent {
                detail_type: "ECS Service Action".into()
            }
        );
        assert_eq!(
            classify(&json!({"Action": "Plan", "ResourceProperties": {"a": 1}})).unwrap(),
            Trigger::Direct {
                action: DirectAction::Plan,
                properties: json!({"a": 1})
            }
        );
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
}
