//! The plans of an image upgrade, pure like the rest of `plan`: move a steady delegate's
//! committed revision to a new image, and move the service back to the committed revision when
//! the new image does not become ready.

use serde_json::Value;

use super::{check_service_is_ours, record_step, Action, Desired, Plan};
use crate::harness::DelegateVersion;
use crate::model;
use crate::observed::{ObservedService, ObservedTaskDefinition};
use crate::record::Record;
use crate::task_definition::CONTAINER_NAME;

/// Register a copy of the committed revision with `image` in the delegate's container, and
/// deploy it. `Err`: why the delegate is not upgraded now (it is not steady on its committed
/// revision, which heal restores first; or the revision is not one the function rendered).
pub fn plan_upgrade(
    r: &Record,
    revision: &ObservedTaskDefinition,
    service: Option<&ObservedService>,
    image: &str,
    to: &DelegateVersion,
) -> Result<Plan, String> {
    let s = service
        .filter(|s| s.is_active())
        .ok_or("the service is missing or not ACTIVE: heal restores it first; the next upgrade run looks again")?;
    check_service_is_ours(r, s).map_err(|e| e.to_string())?;
    let on_committed = model::revision_name(&s.task_definition) == r.task_definition;
    let rolled_out = s.deployment.as_ref().is_some_and(|d| d.rolled_out());
    if !on_committed || !rolled_out || s.running_count < s.desired_count {
        return Err(format!(
            "the delegate is not steady on its committed revision {} ({} of {} running, on {}): an upgrade starts only from a delegate that works; the next upgrade run looks again",
            r.task_definition,
            s.running_count,
            s.desired_count,
            model::revision_name(&s.task_definition)
        ));
    }
    let doc = with_image(&revision.doc, image).ok_or_else(|| {
        format!(
            "the committed revision {} has no container named {CONTAINER_NAME}: it was not rendered by this function, so its image is not changed",
            r.task_definition
        )
    })?;
    let from = r.follow.as_ref().map(|f| f.image.as_str()).unwrap_or("?");
    let reason = format!(
        "Harness's latest supported version is {to}: the delegate moves from {from} to {image}"
    );
    let mut record = r.clone();
    if let Some(f) = record.follow.as_mut() {
        f.image = image.to_string();
    }
    let mut actions = vec![Action::RegisterTaskDefinition {
        family: doc["family"].as_str().unwrap_or_default().to_string(),
        reason: reason.clone(),
    }];
    actions.extend(record_step(Some(s), None, "record the upgraded revision"));
    actions.push(Action::UpdateService {
        service: s.name.clone(),
        desired_count: None,
        task_definition: true,
        network: false,
        reason,
        mark_redeployed: false,
    });
    Ok(Plan {
        actions,
        desired: Desired {
            task_definition: doc,
            task_definition_arn: None,
            network: None,
            vpc_id: None,
            record,
            registered_after: revision.revision,
        },
    })
}

/// Deploy the committed revision again, after `failed` did not become ready, and put the
/// committed record back on the service's labels.
pub fn plan_rollback(r: &Record, committed_arn: &str, service: &str, failed: &str) -> Plan {
    Plan {
        actions: vec![
            Action::RecordSpec {
                on_service: true,
                on_revision: false,
                reason: "record the committed revision again".into(),
                previous_service: Default::default(),
                previous_revision: Default::default(),
            },
            Action::UpdateService {
                service: service.to_string(),
                desired_count: None,
                task_definition: true,
                network: false,
                reason: format!(
                "{failed} did not become ready: the service goes back to the committed revision {}",
                r.task_definition
            ),
                mark_redeployed: false,
            },
        ],
        desired: Desired {
            task_definition: Value::Null,
            task_definition_arn: Some(committed_arn.to_string()),
            network: None,
            vpc_id: None,
            record: r.clone(),
            registered_after: 0,
        },
    }
}

/// `doc` with the delegate container's image set to `image`; `None` without that container.
fn with_image(doc: &Value, image: &str) -> Option<Value> {
    let mut doc = doc.clone();
    let container = doc["containerDefinitions"]
        .as_array_mut()?
        .iter_mut()
        .find(|c| c["name"] == CONTAINER_NAME)?;
    container["image"] = Value::String(image.to_string());
    Some(doc)
}
