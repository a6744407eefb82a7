//! The words every module shares, at the bottom of the tree: which delegate ([`DelegateKey`],
//! [`Target`], [`ServiceArn`]), the AWS states the function reads (service, cluster, task
//! definition, rollout), the choices a delegate is declared with (launch type, network mode,
//! public IP), the revision name `family:N`, the managed security group's name, and the tags
//! that mark what the function made. It depends on no other module of ours.
//!
//! Each enum's spelling is written once, in its string table; observe turns the SDK's strings
//! into these types, so nothing above it compares status strings.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// An enum with one string table: `CHOICES`, `as_str`, exact `parse`, Display and Serialize
/// all come from the same list of spellings.
macro_rules! string_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value with its spelling.
            pub const CHOICES: &'static [(&'static str, $name)] = &[$(($text, $name::$variant)),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value spelled exactly `text`.
            pub fn parse(text: &str) -> Option<Self> {
                Self::CHOICES.iter().find(|(t, _)| *t == text).map(|(_, v)| *v)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}
pub(crate) use string_enum;

string_enum! {
    /// How ECS runs the delegate's tasks.
    #[derive(Default)]
    pub enum LaunchType { #[default] Ec2 = "EC2", Fargate = "FARGATE" }
}

string_enum! {
    #[derive(Default)]
    pub enum NetworkMode { #[default] Bridge = "bridge", Awsvpc = "awsvpc" }
}

string_enum! {
    /// Whether awsvpc tasks get a public IP.
    pub enum AssignPublicIp { Enabled = "ENABLED", Disabled = "DISABLED" }
}

string_enum! {
    /// An ECS service's status.
    pub enum ServiceStatus { Active = "ACTIVE", Draining = "DRAINING", Inactive = "INACTIVE" }
}

string_enum! {
    /// An ECS cluster's status.
    pub enum ClusterStatus {
        Active = "ACTIVE",
        Provisioning = "PROVISIONING",
        Deprovisioning = "DEPROVISIONING",
        Failed = "FAILED",
        Inactive = "INACTIVE",
    }
}

string_enum! {
    /// A task definition revision's status.
    pub enum RevisionStatus {
        Active = "ACTIVE",
        Inactive = "INACTIVE",
        DeleteInProgress = "DELETE_IN_PROGRESS",
    }
}

string_enum! {
    /// A deployment's rollout state.
    pub enum RolloutState { InProgress = "IN_PROGRESS", Completed = "COMPLETED", Failed = "FAILED" }
}

string_enum! {
    /// A task's last status, as far as a wait cares: ECS moves a task through more states
    /// (PROVISIONING, ACTIVATING, DEACTIVATING, …), which all count as not yet (or no longer)
    /// running.
    #[derive(Default)]
    pub enum TaskStatus { #[default] Pending = "PENDING", Running = "RUNNING", Stopped = "STOPPED" }
}

string_enum! {
    /// What an invocation's result says it came to (its `Status`); a CloudFormation request's
    /// result repeats what CloudFormation was told instead (`respond::Status`).
    pub enum InvocationStatus {
        Success = "SUCCESS",
        Failed = "FAILED",
        /// The wait for the delegate goes on in another invocation.
        Waiting = "WAITING",
        /// The event calls for nothing.
        Ignored = "IGNORED",
    }
}

impl InvocationStatus {
    /// FAILED when anything failed, else SUCCESS.
    pub fn of(failed: bool) -> Self {
        if failed {
            InvocationStatus::Failed
        } else {
            InvocationStatus::Success
        }
    }
}

string_enum! {
    /// A task's (or container's) health, from the container health check.
    #[derive(Default)]
    pub enum HealthStatus { Healthy = "HEALTHY", Unhealthy = "UNHEALTHY", #[default] Unknown = "UNKNOWN" }
}

string_enum! {
    /// Why a task stopped, in ECS's categories.
    pub enum StopCode {
        TaskFailedToStart = "TaskFailedToStart",
        EssentialContainerExited = "EssentialContainerExited",
        UserInitiated = "UserInitiated",
        ServiceSchedulerInitiated = "ServiceSchedulerInitiated",
        SpotInterruption = "SpotInterruption",
        TerminationNotice = "TerminationNotice",
    }
}

impl TaskStatus {
    /// From the SDK's string: RUNNING and STOPPED as such, every state between as PENDING.
    pub fn from_aws(text: Option<&str>) -> Self {
        match text.and_then(Self::parse) {
            Some(s) => s,
            None if matches!(text, Some("DEACTIVATING" | "STOPPING" | "DEPROVISIONING")) => {
                TaskStatus::Stopped
            }
            None => TaskStatus::Pending,
        }
    }
}

impl HealthStatus {
    /// From the SDK's string; none (no health check) is UNKNOWN, as ECS reports it.
    pub fn from_aws(text: Option<&str>) -> Self {
        text.and_then(Self::parse).unwrap_or(HealthStatus::Unknown)
    }
}

impl ServiceStatus {
    /// From the SDK's string. ECS documents no other value; an unknown one counts as ACTIVE, so
    /// that the function never plans a create on a name that may be taken.
    pub fn from_aws(text: Option<&str>) -> Self {
        text.and_then(Self::parse).unwrap_or(ServiceStatus::Active)
    }
}

impl ClusterStatus {
    /// From the SDK's string; an unknown one counts as a cluster that cannot be used.
    pub fn from_aws(text: Option<&str>) -> Self {
        text.and_then(Self::parse)
            .unwrap_or(ClusterStatus::Inactive)
    }
}

impl RevisionStatus {
    /// From the SDK's string; an unknown one counts as a revision that cannot be used.
    pub fn from_aws(text: Option<&str>) -> Self {
        text.and_then(Self::parse)
            .unwrap_or(RevisionStatus::Inactive)
    }
}

/// Tag keys this function owns start with this prefix.
pub const MANAGED_TAG_PREFIX: &str = "harness-delegate:";
/// Marks a resource as created and managed by this function.
pub const MANAGED_BY_TAG: &str = "harness-delegate:managed-by";
pub const MANAGED_BY_VALUE: &str = "harness-ecs-delegate-bootstrap";
/// Which delegate (its [`DelegateKey`]) a resource belongs to.
pub const RESOURCE_TAG: &str = "harness-delegate:resource";
/// Which CloudFormation resource (`<stack name>/<logical id>`) owns a delegate's service.
pub const OWNER_TAG: &str = "harness-delegate:owner";
/// The owning stack's full StackId: its name is reused after a deletion, its GUID never. When
/// the record table does not know a delegate (a new stack's table is empty), this label is what
/// stops a stack created again under the same name from adopting the old one's delegate.
pub const OWNER_STACK_TAG: &str = "harness-delegate:owner-stack-id";

/// The default service name, which a Heal target without `ServiceName` means.
pub const DEFAULT_SERVICE_NAME: &str = "harness-delegate";

/// A delegate's identity: its cluster's short name and its service's name. The only place that
/// writes or reads `cluster/service`, the form the resource tag holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DelegateKey {
    cluster: String,
    service: String,
}

impl DelegateKey {
    /// `cluster` may be a name or an ARN: the key holds the short name.
    pub fn new(cluster: &str, service: &str) -> Self {
        DelegateKey {
            cluster: cluster_short_name(cluster).to_string(),
            service: service.to_string(),
        }
    }

    /// Read `cluster/service` (a resource tag's value).
    pub fn parse(text: &str) -> Option<Self> {
        let (cluster, service) = text.split_once('/')?;
        (!cluster.is_empty() && !service.is_empty() && !service.contains('/'))
            .then(|| DelegateKey::new(cluster, service))
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// Whether a resource's tags name this delegate.
    pub fn tagged_on(&self, tags: &BTreeMap<String, String>) -> bool {
        tags.get(RESOURCE_TAG)
            .is_some_and(|v| *v == self.to_string())
    }
}

impl fmt::Display for DelegateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cluster, self.service)
    }
}

/// A delegate as an event or a request names it: the cluster as given (a name or an ARN, what
/// ECS calls take) and the service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub cluster: String,
    pub service: String,
}

impl Target {
    pub fn key(&self) -> DelegateKey {
        DelegateKey::new(&self.cluster, &self.service)
    }

    /// The account and region its cluster ARN names, if it is an ARN.
    pub fn origin(&self) -> Origin {
        Origin::of_arn(&self.cluster)
    }
}

/// An ECS service ARN, `arn:<partition>:ecs:<region>:<account>:service/<cluster>/<service>`.
/// The old format without the cluster (`service/<service>`) has `cluster: None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceArn {
    pub partition: String,
    pub region: String,
    pub account: String,
    pub cluster: Option<String>,
    pub service: String,
}

impl ServiceArn {
    pub fn parse(arn: &str) -> Option<Self> {
        let rest = arn.strip_prefix("arn:")?;
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [partition, "ecs", region, account, resource] = parts.as_slice() else {
            return None;
        };
        let path: Vec<&str> = resource.strip_prefix("service/")?.split('/').collect();
        let (cluster, service) = match path.as_slice() {
            [cluster, service] if !cluster.is_empty() => (Some(cluster.to_string()), *service),
            [service] => (None, *service),
            _ => return None,
        };
        (!service.is_empty()).then(|| ServiceArn {
            partition: partition.to_string(),
            region: region.to_string(),
            account: account.to_string(),
            cluster,
            service: service.to_string(),
        })
    }

    /// The ARN a delegate's service has in this partition, region and account.
    pub fn of(partition: &str, region: &str, account: &str, key: &DelegateKey) -> Self {
        ServiceArn {
            partition: partition.into(),
            region: region.into(),
            account: account.into(),
            cluster: Some(key.cluster().into()),
            service: key.service().into(),
        }
    }
}

impl fmt::Display for ServiceArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p, r, a) = (&self.partition, &self.region, &self.account);
        match &self.cluster {
            Some(c) => write!(f, "arn:{p}:ecs:{r}:{a}:service/{c}/{}", self.service),
            None => write!(f, "arn:{p}:ecs:{r}:{a}:service/{}", self.service),
        }
    }
}

/// The accounts and regions something names, in an event's envelope or in the ARNs it carries.
/// Empty: it names none (a plain cluster name, say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub accounts: BTreeSet<String>,
    pub regions: BTreeSet<String>,
}

impl Origin {
    /// Add an account and a region (either may be absent or empty).
    pub fn add(&mut self, account: Option<&str>, region: Option<&str>) {
        self.accounts
            .extend(account.filter(|a| !a.is_empty()).map(String::from));
        self.regions
            .extend(region.filter(|r| !r.is_empty()).map(String::from));
    }

    /// Add the region and account of `arn:<partition>:<service>:<region>:<account>:…`.
    pub fn add_arn(&mut self, arn: &str) {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        if let ["arn", _, _, region, account, _] = parts.as_slice() {
            self.add(Some(account), Some(region));
        }
    }

    pub fn of_arn(arn: &str) -> Self {
        let mut o = Origin::default();
        o.add_arn(arn);
        o
    }
}

/// The account and region the function runs in: what it may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    pub account: String,
    pub region: String,
}

impl Home {
    /// From the invoked function's ARN, `arn:aws:lambda:<region>:<account>:function:<name>`.
    pub fn from_function_arn(arn: &str) -> Option<Self> {
        let parts: Vec<&str> = arn.splitn(7, ':').collect();
        match parts.as_slice() {
            ["arn", _, "lambda", region, account, "function", ..]
                if !region.is_empty() && !account.is_empty() =>
            {
                Some(Home {
                    account: account.to_string(),
                    region: region.to_string(),
                })
            }
            _ => None,
        }
    }

    /// What of `origin` is elsewhere, said for a log line; `None` when all of it is here.
    pub fn elsewhere(&self, origin: &Origin) -> Option<String> {
        let accounts: Vec<&str> = origin
            .accounts
            .iter()
            .map(String::as_str)
            .filter(|a| *a != self.account)
            .collect();
        let regions: Vec<&str> = origin
            .regions
            .iter()
            .map(String::as_str)
            .filter(|r| *r != self.region)
            .collect();
        if accounts.is_empty() && regions.is_empty() {
            return None;
        }
        let mut said = Vec::new();
        if !accounts.is_empty() {
            said.push(format!("account {}", accounts.join(", ")));
        }
        if !regions.is_empty() {
            said.push(format!("region {}", regions.join(", ")));
        }
        Some(format!(
            "{}, not this function's (account {}, region {})",
            said.join(", "),
            self.account,
            self.region
        ))
    }
}

/// `arn:aws:ecs:region:acct:cluster/name` → `name`; a plain name stays as it is.
pub fn cluster_short_name(cluster: &str) -> &str {
    if cluster.starts_with("arn:") {
        cluster.rsplit('/').next().unwrap_or(cluster)
    } else {
        cluster
    }
}

/// `…:task-definition/family:3` → `family:3`; a `family:3` stays as it is.
pub fn revision_name(task_definition: &str) -> &str {
    task_definition
        .rsplit('/')
        .next()
        .unwrap_or(task_definition)
}

/// `family:3` or its ARN → 3; 0 when it names no number.
pub fn revision_number(task_definition: &str) -> i32 {
    revision_name(task_definition)
        .rsplit_once(':')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// A stable 16-hex-digit hash (FNV-1a) of `text`: a short, deterministic stand-in for a long
/// value that must be cut.
pub fn stable_hash(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Who owns a delegate, as the owner tag on its resources (and `HEAL_OWNER`) shows it:
/// `<stack name>/<logical id>` of the stack resource, within a tag value's 256 characters (long
/// names keep a readable prefix and a stable hash). The record store names the owner by its
/// full StackId; a label is what people read and what the function compares tags with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnerLabel(String);

impl OwnerLabel {
    /// The label of the resource `logical_id` of the stack `stack_id`
    /// (`arn:aws:cloudformation:<region>:<account>:stack/<name>/<guid>`).
    pub fn of(stack_id: &str, logical_id: &str) -> OwnerLabel {
        let mut label = Self::stack_prefix(stack_id);
        label.push_str(logical_id);
        OwnerLabel(within(&label, 256, '@'))
    }

    /// A label as a tag or `HEAL_OWNER` holds it: compared, never trusted for more.
    pub fn from_tag(value: &str) -> OwnerLabel {
        OwnerLabel(value.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it labels a resource of the stack `stack_id`, by the stack's name: how a service
    /// tagged before owners carried their StackId is matched with one.
    pub fn is_of_stack(&self, stack_id: &str) -> bool {
        self.0.starts_with(&Self::stack_prefix(stack_id))
    }

    /// `<stack name>/`.
    fn stack_prefix(stack_id: &str) -> String {
        let mut name = stack_id.split('/').nth(1).unwrap_or(stack_id).to_string();
        name.push('/');
        name
    }
}

impl std::fmt::Display for OwnerLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `text` itself when it is at most `max` bytes; else its beginning, cut on a character
/// boundary, then `sep` and [`stable_hash`] of the whole: at most `max` bytes, readable, and the
/// same for the same text.
pub fn within(text: &str, max: usize, sep: char) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let keep = max - 17;
    let cut = text
        .char_indices()
        .map(|(i, _)| i)
        .take_while(|i| *i <= keep)
        .last()
        .unwrap_or(0);
    format!("{}{sep}{}", &text[..cut], stable_hash(text))
}

/// The name of the egress-only security group the function makes for a delegate's service.
pub fn managed_security_group_name(service: &str) -> String {
    format!("{service}-delegate")
}

/// The user's tags plus the function's marker, the delegate's key and its owner: what
/// everything the function creates for a delegate carries.
pub fn identity_tags(
    user: &BTreeMap<String, String>,
    key: &DelegateKey,
    owner: Option<&OwnerLabel>,
    owner_stack: Option<&str>,
) -> BTreeMap<String, String> {
    let mut t = user.clone();
    t.insert(MANAGED_BY_TAG.into(), MANAGED_BY_VALUE.into());
    t.insert(RESOURCE_TAG.into(), key.to_string());
    if let Some(o) = owner {
        t.insert(OWNER_TAG.into(), o.to_string());
    }
    if let Some(id) = owner_stack {
        t.insert(OWNER_STACK_TAG.into(), within(id, 256, '@'));
    }
    t
}

/// Whether tags mark a resource as made by this function.
pub fn managed_by_us(tags: &BTreeMap<String, String>) -> bool {
    tags.get(MANAGED_BY_TAG).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

/// The owner tag's label, if any.
pub fn owner_of(tags: &BTreeMap<String, String>) -> Option<OwnerLabel> {
    tags.get(OWNER_TAG).map(|v| OwnerLabel::from_tag(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_and_write_one_form() {
        let k = DelegateKey::new("arn:aws:ecs:us-east-1:1:cluster/prod", "harness-delegate");
        assert_eq!(k.to_string(), "prod/harness-delegate");
        assert_eq!(DelegateKey::parse("prod/harness-delegate"), Some(k.clone()));
        for bad in ["prod", "/svc", "prod/", "a/b/c", ""] {
            assert_eq!(DelegateKey::parse(bad), None, "{bad}");
        }
        let owner = OwnerLabel::of(
            "arn:aws:cloudformation:us-east-1:1:stack/stack/guid",
            "Delegate",
        );
        let tags = identity_tags(&BTreeMap::new(), &k, Some(&owner), None);
        assert!(k.tagged_on(&tags) && managed_by_us(&tags));
        assert_eq!(tags[OWNER_TAG], "stack/Delegate");
        assert_eq!(owner_of(&tags), Some(owner));
    }

    #[test]
    fn an_owner_label_is_of_its_stack_by_the_whole_name() {
        let stack = |name: &str| format!("arn:aws:cloudformation:us-east-1:1:stack/{name}/guid");
        let label = OwnerLabel::of(&stack("prod"), "Delegate");
        assert!(label.is_of_stack(&stack("prod")));
        assert!(
            !label.is_of_stack(&stack("pro")),
            "a prefix of the name is another stack"
        );
        assert!(!OwnerLabel::of(&stack("production"), "Delegate").is_of_stack(&stack("prod")));
        assert!(OwnerLabel::from_tag("prod/Other").is_of_stack(&stack("prod")));
    }

    #[test]
    fn service_arns() {
        let new = ServiceArn::parse("arn:aws:ecs:us-east-1:123:service/prod/harness-delegate");
        let new = new.unwrap();
        assert_eq!(
            (
                new.cluster.as_deref(),
                new.service.as_str(),
                new.account.as_str()
            ),
            (Some("prod"), "harness-delegate", "123")
        );
        assert_eq!(
            new.to_string(),
            "arn:aws:ecs:us-east-1:123:service/prod/harness-delegate"
        );
        let old = ServiceArn::parse("arn:aws:ecs:us-east-1:123:service/harness-delegate").unwrap();
        assert_eq!(
            (old.cluster, old.service.as_str()),
            (None, "harness-delegate")
        );
        for id in [
            "not-created:Delegate",
            "",
            "arn:aws:s3:::bucket",
            "arn:aws:ecs:us-east-1:1:cluster/prod",
            "arn:aws:ecs:us-east-1:1:service/prod/",
            "2024/05/01/[$LATEST]abc",
        ] {
            assert_eq!(ServiceArn::parse(id), None, "{id}");
        }
    }

    #[test]
    fn home_and_elsewhere() {
        let home = Home::from_function_arn("arn:aws:lambda:us-east-1:123456789012:function:f");
        let home = home.unwrap();
        assert_eq!(
            (home.account.as_str(), home.region.as_str()),
            ("123456789012", "us-east-1")
        );
        assert_eq!(Home::from_function_arn("arn:aws:s3:::bucket"), None);
        let here = Origin::of_arn("arn:aws:ecs:us-east-1:123456789012:cluster/prod");
        assert_eq!(home.elsewhere(&here), None);
        assert_eq!(home.elsewhere(&Origin::default()), None);
        let mut away = here.clone();
        away.add(Some("999999999999"), Some("eu-west-1"));
        let said = home.elsewhere(&away).unwrap();
        assert!(
            said.contains("account 999999999999") && said.contains("region eu-west-1"),
            "{said}"
        );
    }

    #[test]
    fn one_string_table_per_enum() {
        assert_eq!(LaunchType::parse("FARGATE"), Some(LaunchType::Fargate));
        assert_eq!(LaunchType::parse("fargate"), None);
        assert_eq!(
            ServiceStatus::from_aws(Some("DRAINING")),
            ServiceStatus::Draining
        );
        assert_eq!(ServiceStatus::from_aws(None), ServiceStatus::Active);
        assert_eq!(
            ClusterStatus::from_aws(Some("odd")),
            ClusterStatus::Inactive
        );
        assert_eq!(
            serde_json::to_value(AssignPublicIp::Enabled).unwrap(),
            "ENABLED"
        );
        assert_eq!(revision_name("arn:aws:ecs:r:1:task-definition/f:3"), "f:3");
        assert_eq!(revision_number("f:3"), 3);
        assert_eq!(revision_number("f"), 0);
    }
}
