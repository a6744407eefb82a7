//! harness-ecs-delegate-bootstrap: installs the Harness ECS Delegate into an ECS cluster and keeps
//! it installed, driven by CloudFormation custom-resource events, EventBridge (a schedule, ECS
//! events) or direct invocations.
//!
//! The flow, one module per step: [`classify`] the event → parse the [`spec`] → [`observe`] AWS →
//! [`preflight`] checks → [`plan`] (pure) → [`apply`] → [`respond`]. [`handler`] wires the steps
//! together for each kind of trigger; [`task_definition`] renders and compares the delegate's task
//! definition. Self-healing runs the same steps from the [`record`] a converge leaves on the
//! delegate's resources instead of a spec; [`heal`] finds the delegates and reports per delegate.

pub mod apply;
pub mod classify;
pub mod handler;
pub mod heal;
pub mod observe;
pub mod plan;
pub mod preflight;
pub mod record;
pub mod respond;
pub mod spec;
pub mod task_definition;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;

/// Tag keys this function owns start with this prefix.
pub const MANAGED_TAG_PREFIX: &str = "harness-delegate:";
/// Marks a resource as created and managed by this function.
pub const MANAGED_BY_TAG: &str = "harness-delegate:managed-by";
pub const MANAGED_BY_VALUE: &str = "harness-ecs-delegate-bootstrap";
/// Which delegate (`<cluster>/<service>`) a resource belongs to.
pub const RESOURCE_TAG: &str = "harness-delegate:resource";
/// Which CloudFormation resource (`<stack name>/<logical id>`) owns a delegate's service.
pub const OWNER_TAG: &str = "harness-delegate:owner";

/// The AWS clients, built once per process and shared by every invocation.
#[derive(Clone, Debug)]
pub struct Clients {
    pub ecs: aws_sdk_ecs::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub iam: aws_sdk_iam::Client,
    /// The Resource Groups Tagging API: finds every delegate's record by its tags.
    pub tagging: aws_sdk_resourcegroupstagging::Client,
}

impl Clients {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Clients {
            ecs: aws_sdk_ecs::Client::new(config),
            ec2: aws_sdk_ec2::Client::new(config),
            iam: aws_sdk_iam::Client::new(config),
            tagging: aws_sdk_resourcegroupstagging::Client::new(config),
        }
    }

    /// Clients configured from the environment (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials).
    /// A hung AWS call is cut off and retried rather than eating the invocation's time.
    pub async fn from_env() -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .operation_attempt_timeout(std::time::Duration::from_secs(30))
            .build();
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(timeouts)
            .load()
            .await;
        Self::new(&config)
    }
}
