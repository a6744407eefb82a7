//! The desired delegate: `ResourceProperties` parsed into a typed, validated [`DelegateSpec`].
//!
//! CloudFormation hands every scalar over as a string and lists either as JSON arrays or as
//! comma-separated strings, so parsing is lenient about shape and strict about meaning. Parsing
//! reads every property ([`Reader`]), then checks the rules that tie properties together, then
//! builds the spec; every problem is collected and reported at once, each naming the property
//! and the fix. Nothing here calls AWS (rules that need AWS state live in `preflight`), and the
//! rendered task definition is checked by the pipeline, after parsing.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

pub use crate::image::ImageUpgrade;
use crate::image::{Follow, ImageProperties};
use crate::model::{self, string_enum, DelegateKey};
pub use crate::model::{AssignPublicIp, LaunchType, NetworkMode, DEFAULT_SERVICE_NAME};

/// The properties a `Custom::HarnessDelegate` accepts (and CloudFormation's own, ignored).
pub const KNOWN_PROPERTIES: &[&str] = &[
    "ClusterName",
    "ServiceName",
    "LaunchType",
    "NetworkMode",
    "AccountId",
    "ManagerHostAndPort",
    "DelegateTokenSecretArn",
    "DelegateToken",
    "DelegateGeneration",
    "DelegateName",
    "DelegateGroupName",
    "DelegateProfile",
    "DelegateTags",
    "DelegateDescription",
    "Image",
    "Hostname",
    "Cpu",
    "Memory",
    "DesiredCount",
    "TaskDefinitionFamily",
    "TaskRoleArn",
    "ExecutionRoleArn",
    "VpcId",
    "SubnetIds",
    "SecurityGroupIds",
    "AssignPublicIp",
    "Environment",
    "TaskDefinitionOverrides",
    "Tags",
    "LogGroupName",
    "TakeOverFromStackId",
    "RecordTable",
    "WaitForReady",
    "ReadyTimeoutSeconds",
    "HarnessApiKeySecretArn",
    "ImageUpgrade",
    "ImageRepository",
    "MinimalImage",
];

/// What CloudFormation itself reads of a custom resource and passes on: accepted, ignored.
pub const CLOUDFORMATION_PROPERTIES: &[&str] = &["ServiceToken", "ServiceTimeout"];

/// The values a property with a fixed set of choices accepts (matched case-insensitively).
pub fn allowed_values(property: &str) -> Option<Vec<&'static str>> {
    fn names<T>(choices: &[(&'static str, T)]) -> Vec<&'static str> {
        choices.iter().map(|(n, _)| *n).collect()
    }
    Some(match property {
        "LaunchType" => names(LaunchType::CHOICES),
        "NetworkMode" => names(NetworkMode::CHOICES),
        "DelegateGeneration" => names(DelegateGeneration::CHOICES),
        "AssignPublicIp" => names(AssignPublicIp::CHOICES),
        "ImageUpgrade" => names(ImageUpgrade::CHOICES),
        _ => return None,
    })
}

pub const DEFAULT_FAMILY: &str = "harness-delegate-task-spec";
pub const DEFAULT_IMAGE: &str = "harness/delegate:latest";
pub const DEFAULT_MANAGER: &str = "https://app.harness.io";
/// How long a request waits for the delegate to be ready by default, and the bounds a stack may
/// choose within (a Lambda invocation lasts at most 900 s; the wait goes on in another).
pub const DEFAULT_READY_TIMEOUT_SECONDS: u32 = 1800;
pub const READY_TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 60..=3600;
pub const DEFAULT_BRIDGE_HOSTNAME: &str = "Harness-ECS-Delegate";
/// ECS allows 50 tags a resource; the function's own (identity, owner and the record's labels)
/// take up to 12.
pub const MAX_USER_TAGS: usize = 38;
/// The largest Cpu or Memory ECS stores (an i32).
const MAX_TASK_SIZE: u32 = i32::MAX as u32;

/// A property that may carry secrets: used as the value it holds, shown by `Debug` as
/// `<withheld>`, so that a spec printed whole prints none of them.
#[derive(Clone, PartialEq, Default)]
pub struct Withheld<T>(pub T);

impl<T> std::ops::Deref for Withheld<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Withheld<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<withheld>")
    }
}

string_enum! {
    /// Which environment variables the delegate's container gets.
    pub enum DelegateGeneration { FirstGen = "FirstGen", NextGen = "NextGen" }
}

impl DelegateGeneration {
    /// The environment variable the delegate reads its token from.
    pub fn token_variable(self) -> &'static str {
        match self {
            DelegateGeneration::NextGen => "DELEGATE_TOKEN",
            DelegateGeneration::FirstGen => "ACCOUNT_SECRET",
        }
    }
}

/// How the delegate token reaches the container.
#[derive(Clone, PartialEq, Eq)]
pub enum DelegateToken {
    /// A Secrets Manager ARN, passed through the task definition's `secrets` (preferred).
    SecretArn(String),
    /// The token itself. Its `Debug` is redacted so it can never reach a log line.
    Plain(String),
}

impl fmt::Debug for DelegateToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DelegateToken::SecretArn(arn) => f.debug_tuple("SecretArn").field(arn).finish(),
            DelegateToken::Plain(_) => f.write_str("Plain(<redacted>)"),
        }
    }
}

/// Everything the function needs to install one delegate, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DelegateSpec {
    pub cluster: String,
    pub service_name: String,
    pub launch_type: LaunchType,
    pub network_mode: NetworkMode,
    pub account_id: String,
    pub manager_host_and_port: String,
    pub token: DelegateToken,
    pub generation: DelegateGeneration,
    pub delegate_name: String,
    pub delegate_group_name: Option<String>,
    pub delegate_profile: Option<String>,
    pub delegate_tags: Option<String>,
    pub delegate_description: Option<String>,
    /// The image the task definition names. With `ImageUpgrade: LatestSupported` the pipeline
    /// sets it to the version Harness names before anything is rendered for AWS.
    pub image: String,
    /// Whether the function keeps the image current, and where from (see [`crate::image`]).
    pub image_upgrade: ImageUpgrade,
    pub image_repository: String,
    pub minimal_image: bool,
    /// The Secrets Manager secret holding the Harness API key (never the key).
    pub api_key_secret: Option<String>,
    /// Why the pipeline chose `image`, when it asked Harness: not a property.
    pub image_chosen_because: Option<String>,
    pub hostname: Option<String>,
    pub cpu: u32,
    pub memory: u32,
    pub desired_count: i32,
    pub family: String,
    pub task_role_arn: Option<String>,
    pub execution_role_arn: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_ids: Option<Vec<String>>,
    pub security_group_ids: Option<Vec<String>>,
    pub assign_public_ip: Option<AssignPublicIp>,
    /// May hold secrets of the user's (a proxy's password): withheld from `Debug`.
    pub environment: Withheld<BTreeMap<String, String>>,
    /// May repeat the delegate's token in a container's environment: withheld from `Debug`.
    pub task_definition_overrides: Withheld<Option<Value>>,
    pub tags: BTreeMap<String, String>,
    /// The CloudWatch log group the delegate's container writes to (awslogs); `None`: none.
    pub log_group: Option<String>,
    /// The region the function runs in, where the log group is: not a property, set by the
    /// pipeline before the task definition is rendered.
    pub region: Option<String>,
    /// The StackId of the stack that owned the delegate before, when this stack takes it over on
    /// purpose (that stack was deleted with the delegate retained).
    pub take_over_from: Option<String>,
    /// The record table the stack gives its delegate (template.yaml: its own `RecordTable`);
    /// it must be the function's. The property is new with the table: a stack upgraded from a
    /// version that kept the record in tags gains it, so CloudFormation sends the Update that
    /// records the delegate in the table.
    pub record_table: Option<String>,
    /// Whether a Create, Update or Reconcile answers only once the delegate is ready (its
    /// tasks running, and healthy where they have a health check), or right after applying.
    pub wait_for_ready: bool,
    /// How long that wait may take in all, in seconds.
    pub ready_timeout_seconds: u32,
    /// The full StackId of the stack asking, if any: not a property.
    pub owner_stack_id: Option<String>,
    /// The CloudFormation resource (`<stack name>/<logical id>`) asking, if any: not a property.
    /// Two stacks declaring the same cluster and service must not take each other's delegate.
    pub owner: Option<model::OwnerLabel>,
}

impl DelegateSpec {
    /// The cluster's short name, whether the property held a name or an ARN.
    pub fn cluster_name(&self) -> &str {
        model::cluster_short_name(&self.cluster)
    }

    /// Which delegate this is.
    pub fn key(&self) -> DelegateKey {
        DelegateKey::new(&self.cluster, &self.service_name)
    }

    /// What the image follows, for the record: only when an API key lets the function ask.
    pub fn follow(&self) -> Option<Follow> {
        Some(Follow {
            upgrade: self.image_upgrade,
            api_key_secret: self.api_key_secret.clone()?,
            manager: self.manager_host_and_port.clone(),
            account_id: self.account_id.clone(),
            repository: self.image_repository.clone(),
            minimal: self.minimal_image,
            image: self.image.clone(),
        })
    }

    /// The tags put on everything the function creates: the user's plus its own markers.
    pub fn resource_tags(&self) -> BTreeMap<String, String> {
        model::identity_tags(
            &self.tags,
            &self.key(),
            self.owner.as_ref(),
            self.owner_stack_id.as_deref(),
        )
    }
}

/// One problem with the input, tied to the property that causes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub property: String,
    pub message: String,
}

impl Problem {
    pub fn new(property: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            property: property.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.property, self.message)
    }
}

/// All problems found, reported together so one fix round is enough.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} with the delegate properties, nothing was changed: {}",
            if n == 1 { "" } else { "s" },
            self.listed()
        )
    }
}

impl Problems {
    /// The problems alone, each with its property, without saying what they are problems with.
    pub fn listed(&self) -> String {
        let each: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        each.join("; ")
    }
}

/// Reads property values in CloudFormation's loose shapes, recording problems as it goes.
struct Reader<'a> {
    props: &'a Map<String, Value>,
    problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    fn raw(&self, name: &str) -> Option<&'a Value> {
        match self.props.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(v) => Some(v),
        }
    }

    fn string(&mut self, name: &str) -> Option<String> {
        match self.raw(name)? {
            Value::String(s) if s.chars().count() > MAX_VALUE_CHARS => {
                self.problems.push(Problem::new(
                    name,
                    format!(
                        "is {} characters long; no delegate property takes more than {MAX_VALUE_CHARS}: check what was pasted here",
                        s.chars().count()
                    ),
                ));
                None
            }
            Value::String(s) => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                self.problems.push(Problem::new(
                    name,
                    "expected a single value (a string), got a list or object",
                ));
                None
            }
        }
    }

    fn required(&mut self, name: &str, hint: &str) -> Option<String> {
        let v = self.string(name);
        if v.is_none() && !self.problems.iter().any(|p| p.property == name) {
            self.problems
                .push(Problem::new(name, format!("is required: {hint}")));
        }
        v
    }

    /// A string property, or its default.
    fn or(&mut self, name: &str, default: &str) -> String {
        self.string(name).unwrap_or_else(|| default.to_string())
    }

    fn number<T: std::str::FromStr>(&mut self, name: &str, what: &str) -> Option<T> {
        let s = self.string(name)?;
        match s.parse::<T>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.problems.push(Problem::new(
                    name,
                    format!("\"{s}\" is not {what}: pass a whole number, e.g. \"1024\""),
                ));
                None
            }
        }
    }

    /// `true` or `false` (CloudFormation passes them as strings), in any case.
    fn flag(&mut self, name: &str) -> Option<bool> {
        let s = self.string(name)?;
        match s.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.problems
                    .push(Problem::new(name, format!("\"{s}\" is not true or false")));
                None
            }
        }
    }

    fn choice<T: Copy>(&mut self, name: &str, options: &[(&str, T)]) -> Option<T> {
        let s = self.string(name)?;
        if let Some((_, v)) = options.iter().find(|(k, _)| k.eq_ignore_ascii_case(&s)) {
            return Some(*v);
        }
        let names: Vec<&str> = options.iter().map(|(k, _)| *k).collect();
        self.problems.push(Problem::new(
            name,
            format!("\"{s}\" is not allowed: use one of {}", names.join(", ")),
        ));
        None
    }

    /// A list given as a JSON array, a JSON array in a string, or a comma-separated string.
    fn list(&mut self, name: &str) -> Option<Vec<String>> {
        let items: Vec<String> = match self.raw(name)? {
            Value::Array(a) => {
                let mut out = Vec::new();
                for item in a {
                    match item {
                        Value::String(s) => out.push(s.trim().to_string()),
                        Value::Number(n) => out.push(n.to_string()),
                        _ => {
                            self.problems.push(Problem::new(
                                name,
                                "list items must be strings, e.g. [\"subnet-0abc\"]",
                            ));
                            return None;
                        }
                    }
                }
                out
            }
            Value::String(s) if s.trim_start().starts_with('[') => {
                match serde_json::from_str::<Vec<String>>(s) {
                    Ok(v) => v.into_iter().map(|s| s.trim().to_string()).collect(),
                    Err(_) => {
                        self.problems.push(Problem::new(
                            name,
                            "looks like a JSON array but does not parse: pass [\"a\",\"b\"] or a,b",
                        ));
                        return None;
                    }
                }
            }
            Value::String(s) => s.split(',').map(|s| s.trim().to_string()).collect(),
            _ => {
                self.problems.push(Problem::new(
                    name,
                    "expected a list: a JSON array or a comma-separated string",
                ));
                return None;
            }
        };
        let items: Vec<String> = items.into_iter().filter(|s| !s.is_empty()).collect();
        if items.is_empty() {
            None
        } else {
            Some(items)
        }
    }

    /// A map given as a JSON object or a JSON object in a string; values become strings.
    fn map(&mut self, name: &str) -> BTreeMap<String, String> {
        let Some(obj) = self.object(name) else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (k, v) in obj {
            let v = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    self.problems.push(Problem::new(
                        format!("{name}.{k}"),
                        "values must be strings",
                    ));
                    continue;
                }
            };
            out.insert(k, v);
        }
        out
    }

    fn object(&mut self, name: &str) -> Option<Map<String, Value>> {
        match self.raw(name)? {
            Value::Object(o) => Some(o.clone()),
            Value::String(s) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(o)) => Some(o),
                _ => {
                    self.problems.push(Problem::new(
                        name,
                        "expected a JSON object, e.g. {\"KEY\": \"value\"}",
                    ));
                    None
                }
            },
            _ => {
                self.problems.push(Problem::new(
                    name,
                    "expected a JSON object, e.g. {\"KEY\": \"value\"}",
                ));
                None
            }
        }
    }
}

/// The longest single value a property takes (an ARN's limit): anything longer is a mistake,
/// and is refused before it reaches a log or AWS.
pub const MAX_VALUE_CHARS: usize = 2048;

/// The properties as read, defaults applied, before the rules that tie them together.
struct Raw {
    cluster: Option<String>,
    service_name: String,
    launch_type: LaunchType,
    network_mode: NetworkMode,
    account_id: Option<String>,
    manager: String,
    secret_arn: Option<String>,
    plain_token: Option<String>,
    generation: DelegateGeneration,
    delegate_name: Option<String>,
    delegate_group_name: Option<String>,
    delegate_profile: Option<String>,
    delegate_tags: Option<String>,
    delegate_description: Option<String>,
    image: ImageProperties,
    hostname: Option<String>,
    cpu: u32,
    memory: u32,
    desired_count: i32,
    family: String,
    task_role_arn: Option<String>,
    execution_role_arn: Option<String>,
    vpc_id: Option<String>,
    subnet_ids: Option<Vec<String>>,
    security_group_ids: Option<Vec<String>>,
    assign_public_ip: Option<AssignPublicIp>,
    environment: BTreeMap<String, String>,
    overrides: Option<Value>,
    tags: BTreeMap<String, String>,
    log_group: Option<String>,
    take_over_from: Option<String>,
    record_table: Option<String>,
    wait_for_ready: bool,
    ready_timeout_seconds: u32,
}

/// Parse and validate `ResourceProperties`. Every problem is reported, not just the first.
pub fn parse(props: &Value) -> Result<DelegateSpec, Problems> {
    let Some(props) = props.as_object() else {
        return Err(Problems(vec![Problem::new(
            "ResourceProperties",
            "must be a JSON object of delegate properties, e.g. {\"ClusterName\": \"prod\", \"AccountId\": \"…\"}",
        )]));
    };
    let (raw, mut p) = read(props);
    let token = check_token(&raw, &mut p);
    check_names(&raw, &mut p);
    check_sizes(&raw, &mut p);
    check_network_mode(&raw, &mut p);
    check_roles(&raw, token.as_ref(), &mut p);
    check_ids(&raw, &mut p);
    let mut image_problems = vec![];
    let image = crate::image::check(&raw.image, &mut image_problems);
    p.extend(image_problems.into_iter().map(|(k, m)| Problem::new(k, m)));
    for key in raw.environment.keys() {
        if RESERVED_ENVIRONMENT.contains(&key.as_str()) {
            p.push(Problem::new(
                format!("Environment.{key}"),
                "is set by the function from the delegate properties: use the matching property instead",
            ));
        }
    }
    if let Some(o) = &raw.overrides {
        let bad = crate::document::check_overrides(o);
        p.extend(
            bad.into_iter()
                .map(|m| Problem::new("TaskDefinitionOverrides", m)),
        );
    }
    validate_tags(&mut p, &raw.tags);
    if let Some(g) = raw.log_group.as_deref().filter(|g| !is_none(g)) {
        validate_log_group(&mut p, g);
    }
    if let Some(id) = raw.take_over_from.as_deref() {
        validate_stack_id(&mut p, id);
    }
    if let Some(t) = raw.record_table.as_deref() {
        validate_table_name(&mut p, t);
    }
    if !READY_TIMEOUT_RANGE.contains(&raw.ready_timeout_seconds) {
        p.push(Problem::new(
            "ReadyTimeoutSeconds",
            format!(
                "{} s is outside {}–{} s: choose how long a stack may wait for the delegate to be ready within that range (default {DEFAULT_READY_TIMEOUT_SECONDS}), or set WaitForReady to false not to wait",
                raw.ready_timeout_seconds,
                READY_TIMEOUT_RANGE.start(),
                READY_TIMEOUT_RANGE.end()
            ),
        ));
    }
    if !p.is_empty() {
        return Err(Problems(p));
    }
    Ok(build(raw, token, image))
}

/// Every property read, with the problems of each one alone.
fn read(props: &Map<String, Value>) -> (Raw, Vec<Problem>) {
    let mut r = Reader {
        props,
        problems: unknown_properties(props),
    };
    let cluster = r.required(
        "ClusterName",
        "the name or ARN of the ECS cluster to run the delegate in",
    );
    let launch_type = r
        .choice("LaunchType", LaunchType::CHOICES)
        .unwrap_or_default();
    let raw = Raw {
        cluster,
        service_name: r.or("ServiceName", DEFAULT_SERVICE_NAME),
        launch_type,
        network_mode: r
            .choice("NetworkMode", NetworkMode::CHOICES)
            .unwrap_or(match launch_type {
                LaunchType::Ec2 => NetworkMode::Bridge,
                LaunchType::Fargate => NetworkMode::Awsvpc,
            }),
        account_id: r.required(
            "AccountId",
            "your Harness account id (Account Settings → Overview in Harness)",
        ),
        manager: r.or("ManagerHostAndPort", DEFAULT_MANAGER),
        secret_arn: r.string("DelegateTokenSecretArn"),
        plain_token: r.string("DelegateToken"),
        generation: r
            .choice("DelegateGeneration", DelegateGeneration::CHOICES)
            .unwrap_or(DelegateGeneration::NextGen),
        delegate_name: r.string("DelegateName"),
        delegate_group_name: r.string("DelegateGroupName"),
        delegate_profile: r.string("DelegateProfile"),
        delegate_tags: r.string("DelegateTags"),
        delegate_description: r.string("DelegateDescription"),
        image: ImageProperties {
            image: r.string("Image"),
            upgrade: r.choice("ImageUpgrade", ImageUpgrade::CHOICES),
            repository: r.string("ImageRepository"),
            minimal: r.flag("MinimalImage"),
            api_key_secret: r.string("HarnessApiKeySecretArn"),
        },
        hostname: r.string("Hostname"),
        cpu: r.number("Cpu", "a number of cpu units").unwrap_or(1024),
        memory: r.number("Memory", "a number of MiB").unwrap_or(6144),
        desired_count: r.number("DesiredCount", "a task count").unwrap_or(1),
        family: r.or("TaskDefinitionFamily", DEFAULT_FAMILY),
        task_role_arn: r.string("TaskRoleArn"),
        execution_role_arn: r.string("ExecutionRoleArn"),
        vpc_id: r.string("VpcId"),
        subnet_ids: r.list("SubnetIds"),
        security_group_ids: r.list("SecurityGroupIds"),
        assign_public_ip: r.choice("AssignPublicIp", AssignPublicIp::CHOICES),
        environment: r.map("Environment"),
        overrides: r.object("TaskDefinitionOverrides").map(Value::Object),
        tags: r.map("Tags"),
        log_group: r.string("LogGroupName"),
        take_over_from: r.string("TakeOverFromStackId"),
        record_table: r.string("RecordTable"),
        wait_for_ready: r.flag("WaitForReady").unwrap_or(true),
        ready_timeout_seconds: r
            .number("ReadyTimeoutSeconds", "a number of seconds")
            .unwrap_or(DEFAULT_READY_TIMEOUT_SECONDS),
    };
    (raw, r.problems)
}

fn unknown_properties(props: &Map<String, Value>) -> Vec<Problem> {
    props
        .keys()
        .filter(|k| !CLOUDFORMATION_PROPERTIES.contains(&k.as_str()))
        .filter(|k| !KNOWN_PROPERTIES.contains(&k.as_str()))
        .map(|k| {
            let hint = match closest_property(k) {
                Some(close) => format!("did you mean {close}?"),
                None => "the README's table \"Properties of Custom::HarnessDelegate\" lists the known ones".into(),
            };
            Problem::new(k.clone(), format!("is not a known property: {hint}"))
        })
        .collect()
}

/// Exactly one way to pass the token.
fn check_token(raw: &Raw, p: &mut Vec<Problem>) -> Option<DelegateToken> {
    match (&raw.secret_arn, &raw.plain_token) {
        (Some(arn), None) => {
            if !arn.starts_with("arn:") || !arn.contains(":secretsmanager:") {
                p.push(Problem::new(
                    "DelegateTokenSecretArn",
                    "must be a Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>)",
                ));
            }
            Some(DelegateToken::SecretArn(arn.clone()))
        }
        (None, Some(token)) => Some(DelegateToken::Plain(token.clone())),
        (Some(_), Some(_)) => {
            p.push(Problem::new(
                "DelegateToken",
                "give exactly one of DelegateTokenSecretArn and DelegateToken: remove DelegateToken and keep the secret ARN",
            ));
            None
        }
        (None, None) => {
            p.push(Problem::new(
                "DelegateTokenSecretArn",
                "is required (or DelegateToken): the ARN of a Secrets Manager secret that holds the delegate token",
            ));
            None
        }
    }
}

fn check_names(raw: &Raw, p: &mut Vec<Problem>) {
    validate_name(p, "ServiceName", &raw.service_name, 255);
    validate_name(p, "TaskDefinitionFamily", &raw.family, 255);
    if let Some(c) = &raw.cluster {
        if !c.starts_with("arn:") {
            validate_name(p, "ClusterName", c, 255);
        } else if !c.contains(":ecs:") || !c.contains(":cluster/") {
            p.push(Problem::new(
                "ClusterName",
                "is an ARN but not an ECS cluster ARN (arn:aws:ecs:<region>:<account>:cluster/<name>)",
            ));
        }
    }
    let manager = &raw.manager;
    if !(manager.starts_with("https://") || manager.starts_with("http://")) {
        p.push(Problem::new(
            "ManagerHostAndPort",
            format!("\"{manager}\" must be a URL such as https://app.harness.io"),
        ));
    }
}

fn check_sizes(raw: &Raw, p: &mut Vec<Problem>) {
    let (cpu, memory) = (raw.cpu, raw.memory);
    if raw.desired_count < 0 {
        p.push(Problem::new(
            "DesiredCount",
            "must be 0 or more (0 keeps the service but runs no delegate)",
        ));
    }
    if cpu < 128 {
        p.push(Problem::new(
            "Cpu",
            format!("{cpu} cpu units is too small: use at least 128 (1024 = one vCPU)"),
        ));
    }
    if memory < 128 {
        p.push(Problem::new(
            "Memory",
            format!("{memory} MiB is too small: the delegate needs a few GiB, e.g. 6144"),
        ));
    }
    for (prop, v) in [("Cpu", cpu), ("Memory", memory)] {
        if v > MAX_TASK_SIZE {
            p.push(Problem::new(
                prop,
                format!(
                    "{v} is more than ECS stores ({MAX_TASK_SIZE}): pass a task size ECS offers"
                ),
            ));
        }
    }
    if raw.launch_type == LaunchType::Fargate {
        if let Err(msg) = fargate_cpu_memory(cpu, memory) {
            p.push(Problem::new("Memory", msg));
        }
    }
}

/// Network mode rules that AWS enforces but the emulator does not.
fn check_network_mode(raw: &Raw, p: &mut Vec<Problem>) {
    if raw.launch_type == LaunchType::Fargate && raw.network_mode != NetworkMode::Awsvpc {
        p.push(Problem::new(
            "NetworkMode",
            "FARGATE only runs awsvpc tasks: set NetworkMode to awsvpc or remove it",
        ));
    }
    if raw.network_mode == NetworkMode::Awsvpc && raw.hostname.is_some() {
        p.push(Problem::new(
            "Hostname",
            "hostname is not supported on container when networkMode=awsvpc: remove Hostname, or use NetworkMode bridge on EC2",
        ));
    }
    if raw.network_mode == NetworkMode::Bridge {
        for (prop, given) in [
            ("SubnetIds", raw.subnet_ids.is_some()),
            ("SecurityGroupIds", raw.security_group_ids.is_some()),
            ("AssignPublicIp", raw.assign_public_ip.is_some()),
        ] {
            if given {
                p.push(Problem::new(
                    prop,
                    "only applies to awsvpc: set NetworkMode to awsvpc, or remove it",
                ));
            }
        }
    }
}

fn check_roles(raw: &Raw, token: Option<&DelegateToken>, p: &mut Vec<Problem>) {
    let execution_role = raw.execution_role_arn.is_some();
    if raw.launch_type == LaunchType::Fargate && !execution_role {
        p.push(Problem::new(
            "ExecutionRoleArn",
            "FARGATE needs a task execution role: pass the ARN of a role that trusts ecs-tasks.amazonaws.com (e.g. with AmazonECSTaskExecutionRolePolicy)",
        ));
    } else if matches!(token, Some(DelegateToken::SecretArn(_))) && !execution_role {
        p.push(Problem::new(
            "ExecutionRoleArn",
            "a DelegateTokenSecretArn is read by ECS with the task execution role: pass ExecutionRoleArn of a role allowed secretsmanager:GetSecretValue on the secret",
        ));
    }
    for (prop, arn) in [
        ("TaskRoleArn", &raw.task_role_arn),
        ("ExecutionRoleArn", &raw.execution_role_arn),
    ] {
        if let Some(arn) = arn {
            if !arn.starts_with("arn:") || !arn.contains(":iam::") || !arn.contains(":role/") {
                p.push(Problem::new(
                    prop,
                    format!(
                        "\"{arn}\" is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
                    ),
                ));
            }
        }
    }
}

/// VPC, subnet and security group ids have the form AWS gives them.
fn check_ids(raw: &Raw, p: &mut Vec<Problem>) {
    let single = raw.vpc_id.iter().map(|v| ("VpcId", v, "vpc-"));
    let subnets = raw
        .subnet_ids
        .iter()
        .flatten()
        .map(|v| ("SubnetIds", v, "subnet-"));
    let groups = raw
        .security_group_ids
        .iter()
        .flatten()
        .map(|v| ("SecurityGroupIds", v, "sg-"));
    for (prop, id, prefix) in single.chain(subnets).chain(groups) {
        if !id.starts_with(prefix) {
            p.push(Problem::new(
                prop,
                format!("\"{id}\" is not an id of the form {prefix}…"),
            ));
        }
    }
}

/// The spec from properties that passed every check.
fn build(raw: Raw, token: Option<DelegateToken>, image: (ImageUpgrade, String)) -> DelegateSpec {
    let (image_upgrade, image_repository) = image;
    // Every `None` here was reported as a problem, and parse stopped.
    let (Some(cluster), Some(account_id), Some(token)) = (raw.cluster, raw.account_id, token)
    else {
        unreachable!("missing required properties are always reported");
    };
    let hostname = match raw.network_mode {
        NetworkMode::Bridge => Some(
            raw.hostname
                .unwrap_or_else(|| DEFAULT_BRIDGE_HOSTNAME.to_string()),
        ),
        NetworkMode::Awsvpc => None,
    };
    DelegateSpec {
        delegate_name: raw
            .delegate_name
            .unwrap_or_else(|| raw.service_name.clone()),
        cluster,
        service_name: raw.service_name,
        launch_type: raw.launch_type,
        network_mode: raw.network_mode,
        account_id,
        manager_host_and_port: raw.manager,
        token,
        generation: raw.generation,
        delegate_group_name: raw.delegate_group_name,
        delegate_profile: raw.delegate_profile,
        delegate_tags: raw.delegate_tags,
        delegate_description: raw.delegate_description,
        // Until the pipeline asks Harness, a followed image is its repository's latest tag.
        image: raw
            .image
            .image
            .unwrap_or_else(|| format!("{image_repository}:latest")),
        image_upgrade,
        minimal_image: raw.image.minimal.unwrap_or(false),
        api_key_secret: raw.image.api_key_secret,
        image_chosen_because: None,
        image_repository,
        hostname,
        cpu: raw.cpu,
        memory: raw.memory,
        desired_count: raw.desired_count,
        family: raw.family,
        task_role_arn: raw.task_role_arn,
        execution_role_arn: raw.execution_role_arn,
        vpc_id: raw.vpc_id,
        subnet_ids: raw.subnet_ids,
        security_group_ids: raw.security_group_ids,
        assign_public_ip: raw.assign_public_ip,
        environment: Withheld(raw.environment),
        task_definition_overrides: Withheld(raw.overrides),
        tags: raw.tags,
        log_group: raw.log_group.filter(|g| !is_none(g)),
        take_over_from: raw.take_over_from,
        record_table: raw.record_table,
        wait_for_ready: raw.wait_for_ready,
        ready_timeout_seconds: raw.ready_timeout_seconds,
        owner_stack_id: None,
        region: None,
        owner: None,
    }
}

/// Variables the function derives itself; setting them through `Environment` would fight it.
const RESERVED_ENVIRONMENT: &[&str] = &[
    "ACCOUNT_ID",
    "ACCOUNT_SECRET",
    "DELEGATE_TOKEN",
    "MANAGER_HOST_AND_PORT",
];

fn validate_name(p: &mut Vec<Problem>, prop: &str, name: &str, max: usize) {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if name.is_empty() || name.len() > max || !ok_chars {
        p.push(Problem::new(
            prop,
            format!("\"{name}\" must be 1-{max} letters, digits, hyphens or underscores"),
        ));
    }
}

/// `LogGroupName: none` turns the delegate's logs off.
fn is_none(log_group: &str) -> bool {
    log_group.eq_ignore_ascii_case("none")
}

/// A StackId: `arn:<partition>:cloudformation:<region>:<account>:stack/<name>/<guid>`.
fn validate_stack_id(p: &mut Vec<Problem>, id: &str) {
    let parts: Vec<&str> = id.splitn(6, ':').collect();
    let ok = matches!(parts.as_slice(), ["arn", _, "cloudformation", _, _, rest]
        if rest.split('/').count() == 3 && rest.starts_with("stack/"));
    if !ok {
        p.push(Problem::new(
            "TakeOverFromStackId",
            format!("\"{id}\" is not a StackId: copy the full id (arn:aws:cloudformation:REGION:ACCOUNT:stack/NAME/GUID) from the refusal that named the previous owner"),
        ));
    }
}

/// DynamoDB's rule for table names.
fn validate_table_name(p: &mut Vec<Problem>, table: &str) {
    let ok = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    if !(3..=255).contains(&table.len()) || !table.chars().all(ok) {
        p.push(Problem::new(
            "RecordTable",
            format!("\"{table}\" is not a DynamoDB table name: pass the stack's own table (!Ref RecordTable)"),
        ));
    }
}

/// CloudWatch Logs' rule for group names.
fn validate_log_group(p: &mut Vec<Problem>, group: &str) {
    let ok = |c: char| c.is_ascii_alphanumeric() || "_-/.#".contains(c);
    if group.len() > 512 || !group.chars().all(ok) {
        p.push(Problem::new(
            "LogGroupName",
            format!("\"{group}\" is not a log group name: use 1-512 letters, digits and _ - / . #, or none for no logs"),
        ));
    }
}

fn validate_tags(p: &mut Vec<Problem>, tags: &BTreeMap<String, String>) {
    if tags.len() > MAX_USER_TAGS {
        p.push(Problem::new(
            "Tags",
            format!(
                "{} tags is too many: at most {MAX_USER_TAGS} (ECS allows 50 and the function adds its own, including the record's labels)",
                tags.len()
            ),
        ));
    }
    for (k, v) in tags {
        if k.starts_with("aws:") || k.starts_with(model::MANAGED_TAG_PREFIX) {
            p.push(Problem::new(
                format!("Tags.{k}"),
                format!(
                    "tag keys starting with aws: or {} are reserved: rename the tag",
                    model::MANAGED_TAG_PREFIX
                ),
            ));
        }
        if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
            p.push(Problem::new(
                format!("Tags.{k}"),
                "tag keys must be 1-128 and values at most 256 characters",
            ));
        }
        // ECS and EC2 reject other characters only after earlier resources were created.
        let allowed = |c: char| c.is_alphanumeric() || c == ' ' || "+-=._:/@".contains(c);
        if let Some(bad) = k.chars().chain(v.chars()).find(|c| !allowed(*c)) {
            p.push(Problem::new(
                format!("Tags.{k}"),
                format!("'{bad}' is not allowed in tags: use letters, digits, spaces and + - = . _ : / @"),
            ));
        }
    }
}

/// The cpu/memory pairs Fargate accepts (AWS task size table).
pub fn fargate_cpu_memory(cpu: u32, memory: u32) -> Result<(), String> {
    let (lo, hi, step): (u32, u32, u32) = match cpu {
        256 => {
            if [512, 1024, 2048].contains(&memory) {
                return Ok(());
            }
            return Err(format!(
                "FARGATE with Cpu 256 takes Memory 512, 1024 or 2048, not {memory}"
            ));
        }
        512 => (1024, 4096, 1024),
        1024 => (2048, 8192, 1024),
        2048 => (4096, 16384, 1024),
        4096 => (8192, 30720, 1024),
        8192 => (16384, 61440, 4096),
        16384 => (32768, 122880, 8192),
        _ => {
            return Err(format!(
                "FARGATE takes Cpu 256, 512, 1024, 2048, 4096, 8192 or 16384, not {cpu}: set Cpu to one of them"
            ))
        }
    };
    if memory >= lo && memory <= hi && (memory - lo).is_multiple_of(step) {
        Ok(())
    } else {
        Err(format!(
            "FARGATE with Cpu {cpu} takes Memory {lo}..{hi} in steps of {step} MiB, not {memory}"
        ))
    }
}

/// The known property within a few edits of an unknown one (case aside, a swap of two letters
/// counting as one edit), for "did you mean" hints; `None` when none is that close.
pub fn closest_property(unknown: &str) -> Option<&'static str> {
    let lower = unknown.to_ascii_lowercase();
    let allowed = if lower.chars().count() >= 12 { 3 } else { 2 };
    KNOWN_PROPERTIES
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, _)| *d <= allowed)
        .min()
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbouring characters, each one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:x",
            "ClusterName": "prod",
            "AccountId": "acct123",
            "DelegateToken": "s3cr3t-token",
        })
    }

    fn with(mut base: Value, extra: Value) -> Value {
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    fn problems(v: Value) -> Vec<Problem> {
        parse(&v).expect_err("expected problems").0
    }

    #[test]
    fn defaults_follow_the_harness_template() {
        let s = parse(&minimal()).unwrap();
        assert_eq!(s.service_name, "harness-delegate");
        assert_eq!(s.delegate_name, "harness-delegate");
        assert_eq!(s.launch_type, LaunchType::Ec2);
        assert_eq!(s.network_mode, NetworkMode::Bridge);
        assert_eq!(s.hostname.as_deref(), Some("Harness-ECS-Delegate"));
        assert_eq!((s.cpu, s.memory, s.desired_count), (1024, 6144, 1));
        assert_eq!(s.family, "harness-delegate-task-spec");
        assert_eq!(s.image, "harness/delegate:latest");
        assert_eq!(s.manager_host_and_port, "https://app.harness.io");
        assert_eq!(s.generation, DelegateGeneration::NextGen);
    }

    #[test]
    fn fargate_defaults_to_awsvpc_without_hostname() {
        let s = parse(&with(
            minimal(),
            json!({"LaunchType": "FARGATE", "ExecutionRoleArn": "arn:aws:iam::1:role/exec"}),
        ))
        .unwrap();
        assert_eq!(s.network_mode, NetworkMode::Awsvpc);
        assert_eq!(s.hostname, None);
    }

    #[test]
    fn scalars_arrive_as_strings() {
        let s = parse(&with(
            minimal(),
            json!({"Cpu": "2048", "Memory": "8192", "DesiredCount": "3"}),
        ))
        .unwrap();
        assert_eq!((s.cpu, s.memory, s.desired_count), (2048, 8192, 3));
        let s = parse(&with(minimal(), json!({"Cpu": 512, "DesiredCount": 0}))).unwrap();
        assert_eq!((s.cpu, s.desired_count), (512, 0));
    }

    #[test]
    fn lists_arrive_both_ways() {
        let base = with(minimal(), json!({"NetworkMode": "awsvpc"}));
        for subnets in [
            json!(["subnet-a", "subnet-b"]),
            json!("subnet-a, subnet-b"),
            json!("[\"subnet-a\",\"subnet-b\"]"),
        ] {
            let s = parse(&with(base.clone(), json!({ "SubnetIds": subnets }))).unwrap();
            assert_eq!(
                s.subnet_ids,
                Some(vec!["subnet-a".to_string(), "subnet-b".to_string()])
            );
        }
        let s = parse(&with(base, json!({"SecurityGroupIds": ""}))).unwrap();
        assert_eq!(s.security_group_ids, None);
    }

    #[test]
    fn maps_arrive_as_objects_or_json_strings() {
        let s = parse(&with(
            minimal(),
            json!({"Tags": {"team": "platform", "cost": 42}, "Environment": "{\"HTTP_PROXY\":\"http://p:3128\"}"}),
        ))
        .unwrap();
        assert_eq!(s.tags.get("cost").map(String::as_str), Some("42"));
        assert_eq!(
            s.environment.get("HTTP_PROXY").map(String::as_str),
            Some("http://p:3128")
        );
    }

    #[test]
    fn unknown_property_names_the_closest_known_one() {
        let p = problems(with(minimal(), json!({"ClusterNmae": "x"})));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].property, "ClusterNmae");
        assert!(
            p[0].message.contains("did you mean ClusterName?"),
            "{}",
            p[0]
        );
        let p = problems(with(minimal(), json!({"subnetids": "subnet-1"})));
        assert!(p[0].message.contains("SubnetIds"), "{}", p[0]);
        // A swap of two letters is one edit; nothing close gets no guess.
        assert_eq!(closest_property("DesriedCount"), Some("DesiredCount"));
        assert_eq!(closest_property("Subnets"), Some("SubnetIds"));
        let p = problems(with(minimal(), json!({"Colour": "blue"})));
        assert!(!p[0].message.contains("did you mean"), "{}", p[0]);
        assert!(
            p[0].message
                .contains("Properties of Custom::HarnessDelegate"),
            "{}",
            p[0]
        );
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let p = problems(json!({
            "LaunchType": "FARGATE",
            "NetworkMode": "bridge",
            "Hostname": "h",
            "Cpu": "1024",
            "Memory": "1000",
            "DesiredCount": "many",
        }));
        let props: Vec<&str> = p.iter().map(|p| p.property.as_str()).collect();
        for expected in [
            "ClusterName",
            "AccountId",
            "DelegateTokenSecretArn",
            "NetworkMode",
            "ExecutionRoleArn",
            "Memory",
            "DesiredCount",
        ] {
            assert!(
                props.contains(&expected),
                "{expected} missing from {props:?}"
            );
        }
    }

    #[test]
    fn awsvpc_rejects_a_hostname() {
        let p = problems(with(
            minimal(),
            json!({"NetworkMode": "awsvpc", "Hostname": "my-host"}),
        ));
        assert_eq!(p[0].property, "Hostname");
        assert!(p[0].message.contains("networkMode=awsvpc"));
    }

    #[test]
    fn the_wait_for_ready_is_on_by_default_and_bounded() {
        let s = parse(&minimal()).unwrap();
        assert!(s.wait_for_ready);
        assert_eq!(s.ready_timeout_seconds, DEFAULT_READY_TIMEOUT_SECONDS);
        let s = parse(&with(
            minimal(),
            json!({"WaitForReady": "False", "ReadyTimeoutSeconds": "60"}),
        ))
        .unwrap();
        assert!(!s.wait_for_ready);
        assert_eq!(s.ready_timeout_seconds, 60);
        assert!(
            parse(&with(minimal(), json!({"ServiceTimeout": "2100"}))).is_ok(),
            "CloudFormation's own property passes through"
        );
        for (extra, property, says) in [
            (
                json!({"ReadyTimeoutSeconds": "59"}),
                "ReadyTimeoutSeconds",
                "60–3600",
            ),
            (
                json!({"ReadyTimeoutSeconds": "3601"}),
                "ReadyTimeoutSeconds",
                "WaitForReady",
            ),
            (
                json!({"ReadyTimeoutSeconds": "soon"}),
                "ReadyTimeoutSeconds",
                "whole number",
            ),
            (
                json!({"WaitForReady": "yes"}),
                "WaitForReady",
                "not true or false",
            ),
        ] {
            let p = problems(with(minimal(), extra.clone()));
            assert_eq!(p.len(), 1, "{extra}: {p:?}");
            assert_eq!(p[0].property, property, "{extra}");
            assert!(p[0].message.contains(says), "{extra}: {}", p[0]);
        }
    }

    #[test]
    fn record_table_is_a_dynamodb_table_name() {
        for bad in ["ab", "my table", "t/1"] {
            let p = problems(with(minimal(), json!({ "RecordTable": bad })));
            assert_eq!(p[0].property, "RecordTable", "{bad}");
            assert!(p[0].message.contains("!Ref RecordTable"), "{}", p[0]);
        }
        let s = parse(&with(
            minimal(),
            json!({"RecordTable": "stack-delegate-records"}),
        ))
        .unwrap();
        assert_eq!(s.record_table.as_deref(), Some("stack-delegate-records"));
    }

    #[test]
    fn exactly_one_token() {
        let p = problems(with(
            minimal(),
            json!({"DelegateTokenSecretArn": "arn:aws:secretsmanager:us-east-1:1:secret:t", "ExecutionRoleArn": "arn:aws:iam::1:role/e"}),
        ));
        assert_eq!(p[0].property, "DelegateToken");
        // The token itself is never echoed in an error.
        assert!(!format!("{}", Problems(p)).contains("s3cr3t-token"));
    }

    #[test]
    fn secret_token_needs_an_execution_role() {
        let mut v = minimal();
        v.as_object_mut().unwrap().remove("DelegateToken");
        v["DelegateTokenSecretArn"] = json!("arn:aws:secretsmanager:us-east-1:1:secret:t");
        let p = problems(v);
        assert_eq!(p[0].property, "ExecutionRoleArn");
    }

    #[test]
    fn token_is_redacted_in_debug() {
        let s = parse(&minimal()).unwrap();
        assert!(!format!("{s:?}").contains("s3cr3t-token"));
        // Nor where overrides repeat it, or the environment holds a password.
        let mut v = minimal();
        v["Environment"] = json!({"HTTP_PROXY": "http://u:proxy-pw@p:3128"});
        v["TaskDefinitionOverrides"] = json!({"containerDefinitions": [{"name": "ecs-delegate",
            "environment": [{"name": "DELEGATE_TOKEN", "value": "s3cr3t-token"}]}]});
        let s = parse(&v).unwrap();
        assert_eq!(s.environment.get("HTTP_PROXY").map(String::len), Some(24));
        let shown = format!("{s:?}");
        assert!(shown.contains("environment: <withheld>"), "{shown}");
        assert!(
            !shown.contains("s3cr3t-token") && !shown.contains("proxy-pw"),
            "{shown}"
        );
    }

    #[test]
    fn sizes_beyond_what_ecs_stores_are_refused() {
        let p = problems(with(minimal(), json!({"Memory": "3000000000"})));
        assert_eq!(p[0].property, "Memory");
        assert!(p[0].message.contains("more than ECS stores"), "{}", p[0]);
    }

    #[test]
    fn fargate_cpu_memory_table() {
        for (cpu, mem, ok) in [
            (256, 512, true),
            (256, 3072, false),
            (1024, 6144, true),
            (1024, 1024, false),
            (1024, 9216, false),
            (2048, 16384, true),
            (4096, 30720, true),
            (8192, 20480, true),
            (8192, 18432, false),
            (16384, 122880, true),
            (3000, 6144, false),
        ] {
            assert_eq!(fargate_cpu_memory(cpu, mem).is_ok(), ok, "{cpu}/{mem}");
        }
    }

    #[test]
    fn bridge_rejects_awsvpc_only_properties() {
        let p = problems(with(minimal(), json!({"SubnetIds": "subnet-1"})));
        assert_eq!(p[0].property, "SubnetIds");
    }

    #[test]
    fn reserved_environment_and_tags_are_refused() {
        let p = problems(with(
            minimal(),
            json!({"Environment": {"DELEGATE_TOKEN": "x"}, "Tags": {"aws:foo": "x"}}),
        ));
        let props: Vec<&str> = p.iter().map(|p| p.property.as_str()).collect();
        assert_eq!(props, vec!["Environment.DELEGATE_TOKEN", "Tags.aws:foo"]);
    }

    #[test]
    fn tag_characters_are_checked() {
        let p = problems(with(
            minimal(),
            json!({"Tags": {"owner": "platform!", "ok": "a b+c=d.e_f:g/h@i"}}),
        ));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].property, "Tags.owner");
        assert!(p[0].message.contains("'!'"), "{}", p[0]);
    }

    #[test]
    fn cluster_arn_gives_short_name() {
        let s = parse(&with(
            minimal(),
            json!({"ClusterName": "arn:aws:ecs:us-east-1:123456789012:cluster/prod"}),
        ))
        .unwrap();
        assert_eq!(s.cluster_name(), "prod");
        assert_eq!(s.key().to_string(), "prod/harness-delegate");
    }
}
