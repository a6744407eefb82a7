//! The CloudFormation custom resource behind a request: who owns the delegate it declares
//! (`<stack name>/<logical id>`), which delegate a physical id names, the physical id a Create
//! answers with, and the [`Outcome`] a request comes to. Nothing here calls AWS.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::classify::CfnRequest;
use crate::model::{cluster_short_name, DelegateKey, ServiceArn, Target, DEFAULT_SERVICE_NAME};
use crate::respond::Status;

/// Physical id of a resource whose Create failed before its service could even be named (the
/// properties are unreadable): deterministic, and recognised by Delete as "nothing was created".
pub const NOT_CREATED_PREFIX: &str = "not-created:";

/// What a CloudFormation request came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub reason: String,
    pub physical_resource_id: String,
    pub data: BTreeMap<String, String>,
}

impl Outcome {
    pub fn success(physical_resource_id: String, data: BTreeMap<String, String>) -> Self {
        Outcome {
            status: Status::Success,
            reason: String::new(),
            physical_resource_id,
            data,
        }
    }

    /// FAILED, with the physical id CloudFormation should keep: the existing one on Update and
    /// Delete, the service's (would-be) ARN on Create.
    pub fn failed(req: &CfnRequest, reason: String) -> Self {
        Outcome {
            status: Status::Failed,
            reason,
            physical_resource_id: req
                .physical_resource_id
                .clone()
                .unwrap_or_else(|| new_physical_id(req)),
            data: BTreeMap::new(),
        }
    }
}

impl Outcome {
    /// The outcome as the record store remembers it, to answer a redelivered request alike.
    pub fn to_answer(&self) -> String {
        serde_json::json!({
            "Status": self.status,
            "Reason": self.reason,
            "PhysicalResourceId": self.physical_resource_id,
            "Data": self.data,
        })
        .to_string()
    }

    /// An outcome [`Outcome::to_answer`] wrote; `None` when the text is not one.
    pub fn from_answer(text: &str) -> Option<Outcome> {
        let v: Value = serde_json::from_str(text).ok()?;
        Some(Outcome {
            status: Status::parse(v.get("Status")?.as_str()?)?,
            reason: v.get("Reason")?.as_str()?.to_string(),
            physical_resource_id: v.get("PhysicalResourceId")?.as_str()?.to_string(),
            data: serde_json::from_value(v.get("Data")?.clone()).ok()?,
        })
    }
}

/// The owner recorded on what a CloudFormation resource creates: `<stack name>/<logical id>`.
pub fn owner_of(req: &CfnRequest) -> crate::model::OwnerLabel {
    crate::model::OwnerLabel::of(&req.stack_id, &req.logical_resource_id)
}

/// The stack resource behind a request, as the record store keeps it: the full StackId.
pub fn stack_owner(req: &CfnRequest) -> crate::store::Owner {
    crate::store::Owner {
        stack_id: req.stack_id.clone(),
        logical_id: req.logical_resource_id.clone(),
    }
}

/// The physical id for a request that has none yet (a Create): the ARN the service has or would
/// have, computed from the stack's region and account and the properties, so that the Delete
/// CloudFormation sends after a failed Create can remove anything this resource did leave (a
/// Create cut off by the deadline, say). Delete only touches what carries this stack's owner tag.
/// Unreadable properties give the not-created marker.
pub fn new_physical_id(req: &CfnRequest) -> String {
    would_be_service_arn(req)
        .map(|arn| arn.to_string())
        .unwrap_or_else(|| format!("{NOT_CREATED_PREFIX}{}", req.logical_resource_id))
}

fn would_be_service_arn(req: &CfnRequest) -> Option<ServiceArn> {
    // arn:<partition>:cloudformation:<region>:<account>:stack/<name>/<guid>
    let parts: Vec<&str> = req.stack_id.splitn(6, ':').collect();
    let [_, partition, _, region, account, _] = parts.as_slice() else {
        return None;
    };
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let props = &req.properties;
    let cluster = cluster_short_name(props.get("ClusterName")?.as_str()?);
    let service = match props.get("ServiceName").and_then(Value::as_str) {
        Some(s) if !s.trim().is_empty() => s.trim(),
        _ => DEFAULT_SERVICE_NAME,
    };
    let key = DelegateKey::new(cluster, service);
    (name_ok(cluster) && name_ok(service) && name_ok(region) && name_ok(account))
        .then(|| ServiceArn::of(partition, region, account, &key))
}

/// The delegate a physical id names, when it is a service ARN. The old ARN format without the
/// cluster takes the cluster from the properties.
pub fn named_delegate(physical_id: &str, props: &Value) -> Option<Target> {
    let arn = ServiceArn::parse(physical_id)?;
    let cluster = match arn.cluster {
        Some(c) => c,
        None => props.get("ClusterName")?.as_str()?.to_string(),
    };
    Some(Target {
        cluster,
        service: arn.service,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(stack: &str, logical: &str) -> CfnRequest {
        let event = json!({"RequestType": "Create", "ResponseURL": "https://x.s3.amazonaws.com/a",
            "StackId": format!("arn:aws:cloudformation:us-east-1:1:stack/{stack}/guid"),
            "RequestId": "r", "LogicalResourceId": logical});
        match crate::classify::classify(&event).unwrap() {
            crate::classify::Trigger::CloudFormation(r) => *r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn owners_fit_in_a_tag_value() {
        assert_eq!(
            owner_of(&request("prod", "Delegate")).as_str(),
            "prod/Delegate"
        );
        let long = owner_of(&request(&"s".repeat(128), &"L".repeat(255)));
        assert_eq!(long.as_str().len(), 256);
        assert_ne!(
            long,
            owner_of(&request(&"s".repeat(128), &format!("{}M", "L".repeat(254))))
        );
        // A multibyte character across the cut is kept whole or left out, never split.
        for shift in 0..4 {
            let logical = format!("{}{}", "L".repeat(100 + shift), "é".repeat(100));
            let owner = owner_of(&request(&"s".repeat(40), &logical)).to_string();
            assert!(
                owner.len() <= 256 && owner.chars().count() <= 256,
                "{owner}"
            );
        }
    }

    #[test]
    fn physical_ids_name_delegates() {
        let props = json!({"ClusterName": "prod"});
        let t = named_delegate(
            "arn:aws:ecs:us-east-1:123:service/prod/harness-delegate",
            &props,
        );
        assert_eq!(
            t.map(|t| t.key().to_string()).as_deref(),
            Some("prod/harness-delegate")
        );
        let old = named_delegate("arn:aws:ecs:us-east-1:123:service/harness-delegate", &props);
        assert_eq!(old.map(|t| t.cluster).as_deref(), Some("prod"));
        for id in [
            "not-created:Delegate",
            "",
            "arn:aws:ecs:us-east-1:1:cluster/prod",
        ] {
            assert_eq!(named_delegate(id, &props), None, "{id}");
        }
        let mut req = request("s", "Delegate");
        req.properties = json!({"ClusterName": "arn:aws:ecs:us-east-1:1:cluster/prod"});
        assert_eq!(
            new_physical_id(&req),
            "arn:aws:ecs:us-east-1:1:service/prod/harness-delegate"
        );
        req.properties = json!({"ClusterName": "bad name"});
        assert_eq!(new_physical_id(&req), "not-created:Delegate");
    }
}
