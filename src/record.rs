//! The record: what heal needs to put a delegate's service back without the stack's properties
//! ([`Record`]), and its encoding as `harness-delegate:*` keys and values.
//!
//! The record heal trusts is the one committed in the delegate's item of the record table
//! (`store.rs` stores it in this encoding), which only the function writes. Create, Update
//! and Reconcile also write it as tags on the service and on the revision it runs: labels for
//! people, which heal never acts on. Earlier versions kept the record there; a service labelled
//! so but without an item is only reported (heal).
//!
//! Secrets are never recorded: the task definition part of the record is the revision itself
//! (its `secrets` or environment), which the record only points at. Tag values hold letters,
//! digits, spaces and `+ - = . _ : / @`, at most 256 characters; longer values are split over
//! numbered keys (`…:subnets`, `…:subnets.2`).

use std::collections::BTreeMap;

use crate::model::{
    self, AssignPublicIp, DelegateKey, LaunchType, NetworkMode, MANAGED_TAG_PREFIX, RESOURCE_TAG,
};

/// `launch=FARGATE network=awsvpc desired=1`.
pub const SERVICE_TAG: &str = "harness-delegate:service";
/// `vpc=vpc-1 public-ip=DISABLED security-groups=managed managed-group=sg-9` (or
/// `security-groups=sg-1+sg-2`). The group's id is a field of its own, which earlier versions
/// (a stack rolled back to one) ignore; their records have no id.
pub const NETWORK_TAG: &str = "harness-delegate:network";
/// Space-separated subnet ids.
pub const SUBNETS_TAG: &str = "harness-delegate:subnets";
/// `family:revision` of the revision the service runs (on the service only: a revision's own
/// record is about itself).
pub const TASK_DEFINITION_TAG: &str = "harness-delegate:task-definition";
/// Milliseconds since the epoch of the Create/Update/Reconcile that wrote the record. Its
/// presence is what makes a set of tags a record.
pub const APPLIED_AT_TAG: &str = "harness-delegate:applied-at";

/// The keys a record is written under (split keys are found by prefix).
pub const RECORD_KEYS: &[&str] = &[
    SERVICE_TAG,
    NETWORK_TAG,
    SUBNETS_TAG,
    TASK_DEFINITION_TAG,
    APPLIED_AT_TAG,
];

const MAX_VALUE: usize = 256;

/// The security groups of a recorded awsvpc configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedGroups {
    /// The egress-only group the function creates for the delegate (found by its tags, recreated
    /// when deleted).
    Managed,
    Given(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedNetwork {
    pub vpc_id: String,
    pub subnets: Vec<String>,
    pub security_groups: RecordedGroups,
    /// The id of the managed group when it was recorded: while the service's tasks run in it,
    /// it exists (AWS does not delete a group network interfaces use), so heal need not read it.
    pub managed_group: Option<String>,
    pub assign_public_ip: AssignPublicIp,
}

/// Which resource a record is written on: the service (with the revision it runs) or a
/// revision (without: the revision is the one meant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Service,
    Revision,
}

/// Everything heal needs to put the delegate's service back, secrets excluded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub key: DelegateKey,
    pub owner: Option<model::OwnerLabel>,
    /// The owning stack's StackId, when a stack's request wrote the record.
    pub owner_stack_id: Option<String>,
    pub launch_type: LaunchType,
    pub network_mode: NetworkMode,
    pub desired_count: i32,
    /// `family:revision` the service should run.
    pub task_definition: String,
    /// The awsvpc configuration; `None` for bridge.
    pub network: Option<RecordedNetwork>,
    pub applied_at: u64,
    /// The user's tags (everything not under `harness-delegate:` or `aws:`).
    pub user_tags: BTreeMap<String, String>,
    /// What the image follows, when the stack gave an API key. Kept in the record table only,
    /// never in tags: resources carry few tags, and this names the key's secret.
    pub follow: Option<crate::image::Follow>,
}

/// Why a set of tags that claims to be a record cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the recorded configuration is unreadable ({0}): run a stack Update (or a Reconcile) to record it again")]
pub struct UnreadableRecord(pub String);

impl Record {
    /// The service's name.
    pub fn service(&self) -> &str {
        self.key.service()
    }

    /// The tags that identify the delegate and its owner, plus the user's.
    pub fn resource_tags(&self) -> BTreeMap<String, String> {
        model::identity_tags(
            &self.user_tags,
            &self.key,
            self.owner.as_ref(),
            self.owner_stack_id.as_deref(),
        )
    }

    /// The record's own tags on the service or on a revision.
    pub fn tags(&self, on: On) -> BTreeMap<String, String> {
        let mut t = BTreeMap::new();
        t.insert(
            SERVICE_TAG.to_string(),
            format!(
                "launch={} network={} desired={}",
                self.launch_type.as_str(),
                self.network_mode.as_str(),
                self.desired_count
            ),
        );
        if let Some(n) = &self.network {
            let groups = match &n.security_groups {
                RecordedGroups::Managed => match &n.managed_group {
                    Some(id) => format!("managed managed-group={id}"),
                    None => "managed".to_string(),
                },
                RecordedGroups::Given(ids) => ids.join("+"),
            };
            t.insert(
                NETWORK_TAG.to_string(),
                format!(
                    "vpc={} public-ip={} security-groups={groups}",
                    n.vpc_id,
                    n.assign_public_ip.as_str()
                ),
            );
            split_into(&mut t, SUBNETS_TAG, &n.subnets.join(" "));
        }
        if on == On::Service {
            split_into(&mut t, TASK_DEFINITION_TAG, &self.task_definition);
        }
        t.insert(APPLIED_AT_TAG.to_string(), self.applied_at.to_string());
        t
    }

    /// All tags the resource should carry: identity, the user's, and the record.
    pub fn all_tags(&self, on: On) -> BTreeMap<String, String> {
        let mut t = self.resource_tags();
        t.extend(self.tags(on));
        t
    }

    /// Whether two records ask for the same service: the recorded keys alone, not when they were
    /// written, nor the identity and user tags (those are added, never removed, by tagging).
    pub fn same_as(&self, other: &Record) -> bool {
        let mut a = self.tags(On::Service);
        let mut b = other.tags(On::Service);
        a.remove(APPLIED_AT_TAG);
        b.remove(APPLIED_AT_TAG);
        a == b
    }

    /// Read a record from a resource's tags. `None`: the resource carries no record. `revision`
    /// is `family:revision` when the tags are a revision's own.
    pub fn from_tags(
        tags: &BTreeMap<String, String>,
        revision: Option<&str>,
    ) -> Option<Result<Record, UnreadableRecord>> {
        let applied_at = tags.get(APPLIED_AT_TAG)?;
        Some(parse(tags, applied_at, revision))
    }
}

fn parse(
    tags: &BTreeMap<String, String>,
    applied_at: &str,
    revision: Option<&str>,
) -> Result<Record, UnreadableRecord> {
    let bad = |what: &str| UnreadableRecord(what.to_string());
    let applied_at = applied_at
        .parse::<u64>()
        .map_err(|_| bad("applied-at is not a number"))?;
    let key = tags
        .get(RESOURCE_TAG)
        .and_then(|k| DelegateKey::parse(k))
        .ok_or_else(|| bad("no harness-delegate:resource tag"))?;
    let svc = fields(tags, SERVICE_TAG);
    let launch_type = svc
        .get("launch")
        .and_then(|v| LaunchType::parse(v))
        .ok_or_else(|| bad("no launch type"))?;
    let network_mode = svc
        .get("network")
        .and_then(|v| NetworkMode::parse(v))
        .ok_or_else(|| bad("no network mode"))?;
    let desired_count = svc
        .get("desired")
        .and_then(|d| d.parse::<i32>().ok())
        .ok_or_else(|| bad("no desired count"))?;
    let task_definition = match revision {
        Some(r) => r.to_string(),
        None => joined(tags, TASK_DEFINITION_TAG).ok_or_else(|| bad("no task definition"))?,
    };
    let network = match network_mode {
        NetworkMode::Bridge => None,
        NetworkMode::Awsvpc => Some(parse_network(tags)?),
    };
    Ok(Record {
        key,
        owner: model::owner_of(tags),
        owner_stack_id: tags.get(model::OWNER_STACK_TAG).cloned(),
        launch_type,
        network_mode,
        desired_count,
        task_definition,
        network,
        applied_at,
        user_tags: tags
            .iter()
            .filter(|(k, _)| !k.starts_with(MANAGED_TAG_PREFIX) && !k.starts_with("aws:"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        follow: None,
    })
}

/// `k=v k=v` fields of one tag.
fn fields(tags: &BTreeMap<String, String>, key: &str) -> BTreeMap<String, String> {
    tags.get(key)
        .map(|v| {
            v.split(' ')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The recorded awsvpc configuration.
fn parse_network(tags: &BTreeMap<String, String>) -> Result<RecordedNetwork, UnreadableRecord> {
    let bad = |what: &str| UnreadableRecord(what.to_string());
    let n = fields(tags, NETWORK_TAG);
    let assign_public_ip = n
        .get("public-ip")
        .and_then(|v| AssignPublicIp::parse(v))
        .ok_or_else(|| bad("no public IP setting"))?;
    let managed_group = n.get("managed-group").filter(|id| !id.is_empty()).cloned();
    let security_groups = match n.get("security-groups").map(String::as_str) {
        Some("managed") => RecordedGroups::Managed,
        Some(ids) if !ids.is_empty() => {
            RecordedGroups::Given(ids.split('+').map(String::from).collect())
        }
        _ => return Err(bad("no security groups")),
    };
    let subnets: Vec<String> = joined(tags, SUBNETS_TAG)
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if subnets.is_empty() {
        return Err(bad("no subnets"));
    }
    Ok(RecordedNetwork {
        vpc_id: n.get("vpc").cloned().ok_or_else(|| bad("no VPC"))?,
        subnets,
        security_groups,
        managed_group,
        assign_public_ip,
    })
}

/// Put `value` under `key`, `key.2`, … in pieces of at most 256 characters.
fn split_into(tags: &mut BTreeMap<String, String>, key: &str, value: &str) {
    let chars: Vec<char> = value.chars().collect();
    for (i, piece) in chars.chunks(MAX_VALUE).enumerate() {
        let k = if i == 0 {
            key.to_string()
        } else {
            format!("{key}.{}", i + 1)
        };
        tags.insert(k, piece.iter().collect());
    }
}

/// The value `split_into` spread over `key`, `key.2`, ….
pub fn joined(tags: &BTreeMap<String, String>, key: &str) -> Option<String> {
    let mut out = tags.get(key)?.clone();
    for i in 2.. {
        match tags.get(&format!("{key}.{i}")) {
            Some(piece) => out.push_str(piece),
            None => break,
        }
    }
    Some(out)
}

/// The keys of `tags` that belong to a record (split pieces included).
pub fn record_keys(tags: &BTreeMap<String, String>) -> Vec<String> {
    tags.keys()
        .filter(|k| {
            RECORD_KEYS
                .iter()
                .any(|r| k.as_str() == *r || k.strip_prefix(r).is_some_and(|s| s.starts_with('.')))
        })
        .cloned()
        .collect()
}

/// The record part of a resource's tags, keys and values (what a failed run puts back).
pub fn recorded_tags(tags: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    record_keys(tags)
        .into_iter()
        .map(|k| {
            let v = tags[&k].clone();
            (k, v)
        })
        .collect()
}

/// Milliseconds since the epoch: when a record is written.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fargate() -> Record {
        Record {
            key: DelegateKey::new("prod", "harness-delegate"),
            owner: Some(crate::model::OwnerLabel::from_tag("stack/Delegate")),
            owner_stack_id: Some("arn:aws:cloudformation:us-east-1:1:stack/stack/guid".into()),
            launch_type: LaunchType::Fargate,
            network_mode: NetworkMode::Awsvpc,
            desired_count: 2,
            task_definition: "harness-delegate-task-spec:7".into(),
            network: Some(RecordedNetwork {
                vpc_id: "vpc-1".into(),
                subnets: vec!["subnet-a".into(), "subnet-b".into()],
                security_groups: RecordedGroups::Managed,
                managed_group: Some("sg-9".into()),
                assign_public_ip: AssignPublicIp::Disabled,
            }),
            applied_at: 1_764_250_000_123,
            user_tags: BTreeMap::from([("team".into(), "platform".into())]),
            follow: None,
        }
    }

    fn allowed(s: &str) -> bool {
        s.chars()
            .all(|c| c.is_alphanumeric() || c == ' ' || "+-=._:/@".contains(c))
    }

    #[test]
    fn a_record_survives_its_tags() {
        let r = fargate();
        let tags = r.all_tags(On::Service);
        assert_eq!(Record::from_tags(&tags, None), Some(Ok(r.clone())));
        // A revision's record names the revision itself.
        let on_revision = r.all_tags(On::Revision);
        assert!(!on_revision.contains_key(TASK_DEFINITION_TAG));
        assert_eq!(
            Record::from_tags(&on_revision, Some("harness-delegate-task-spec:7")),
            Some(Ok(r.clone()))
        );
        // A record written before the group's id was recorded still reads, without it.
        let mut old = r.all_tags(On::Service);
        old.insert(
            NETWORK_TAG.into(),
            "vpc=vpc-1 public-ip=DISABLED security-groups=managed".into(),
        );
        let read = Record::from_tags(&old, None).unwrap().unwrap();
        let n = read.network.unwrap();
        assert_eq!(
            (n.security_groups, n.managed_group),
            (RecordedGroups::Managed, None)
        );
        let mut given = r.clone();
        given.network.as_mut().unwrap().security_groups =
            RecordedGroups::Given(vec!["sg-1".into(), "sg-2".into()]);
        given.network.as_mut().unwrap().managed_group = None;
        given.network_mode = NetworkMode::Awsvpc;
        let tags = given.all_tags(On::Service);
        assert_eq!(Record::from_tags(&tags, None), Some(Ok(given)));
        let bridge = Record {
            launch_type: LaunchType::Ec2,
            network_mode: NetworkMode::Bridge,
            network: None,
            ..r
        };
        let tags = bridge.all_tags(On::Service);
        assert!(!tags.contains_key(NETWORK_TAG));
        assert_eq!(Record::from_tags(&tags, None), Some(Ok(bridge)));
    }

    #[test]
    fn tags_stay_within_ecs_limits() {
        let mut r = fargate();
        // 16 subnets (the awsvpc maximum) and a 255-character family.
        r.network.as_mut().unwrap().subnets =
            (0..16).map(|i| format!("subnet-0{i:016x}")).collect();
        r.task_definition = format!("{}:12", "f".repeat(255));
        let tags = r.all_tags(On::Service);
        for (k, v) in &tags {
            assert!(v.chars().count() <= 256, "{k} is {} long", v.len());
            assert!(k.chars().count() <= 128, "{k}");
            assert!(allowed(k) && allowed(v), "{k}={v}");
        }
        assert!(tags.contains_key("harness-delegate:subnets.2"));
        assert_eq!(Record::from_tags(&tags, None), Some(Ok(r.clone())));
        // With the most user tags the spec allows, the service stays within ECS's 50 even in
        // this extreme case.
        let ours = tags.len() - r.user_tags.len();
        assert!(
            ours + crate::spec::MAX_USER_TAGS <= 50,
            "{ours} tags of ours"
        );
    }

    #[test]
    fn tags_without_a_record_or_with_a_broken_one() {
        let mut tags = fargate().all_tags(On::Service);
        assert_eq!(record_keys(&tags).len(), 5);
        tags.remove(APPLIED_AT_TAG);
        assert_eq!(Record::from_tags(&tags, None), None);
        let mut tags = fargate().all_tags(On::Service);
        tags.insert(SERVICE_TAG.into(), "launch=SPOT".into());
        let err = Record::from_tags(&tags, None).unwrap().unwrap_err();
        assert!(err.to_string().contains("run a stack Update"), "{err}");
    }

    #[test]
    fn records_compare_without_their_time() {
        let a = fargate();
        let mut b = a.clone();
        b.applied_at += 5;
        b.user_tags
            .insert("added-in-the-console".into(), "x".into());
        assert!(a.same_as(&b));
        b.desired_count = 0;
        assert!(!a.same_as(&b));
    }
}
