//! harness-ecs-delegate-bootstrap: installs the Harness ECS Delegate into an ECS cluster and keeps
//! it installed, driven by CloudFormation custom-resource events, EventBridge (a schedule, ECS
//! events) or direct invocations.
//!
//! The flow, one module per step: [`classify`] the event → parse the [`spec`] → [`observe`] AWS →
//! [`preflight`] checks → [`plan`] (pure) → [`apply`] → [`respond`]. [`handler`] dispatches each
//! trigger and answers CloudFormation exactly once; [`pipeline`] runs the steps in order for a
//! converge or a delete. [`model`] holds the vocabulary every module shares, [`observed`] what
//! observe saw, [`task_definition`] renders the delegate's task definition and [`document`]
//! compares and redacts such documents ([`ecs_convert`] turns them into SDK calls).
//! Self-healing runs the same steps from the [`record`] a converge commits to the delegate's item
//! of the record table ([`store`]) instead of a spec; [`heal`] finds the delegates and reports
//! per delegate.

pub mod apply;
pub mod aws_error;
pub mod classify;
pub mod continuation;
pub mod custom_resource;
pub mod document;
pub mod ecs_convert;
pub mod handler;
pub mod harness;
pub mod heal;
pub mod http;
pub mod image;
pub mod invoke;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod observed;
pub mod operation;
pub mod pipeline;
pub mod plan;
pub mod preflight;
pub mod ready;
pub mod record;
pub mod respond;
pub mod secrets;
pub mod spec;
pub mod store;
pub mod task_definition;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
pub mod upgrade;
pub mod wait;

pub use model::{MANAGED_BY_TAG, MANAGED_BY_VALUE, MANAGED_TAG_PREFIX, OWNER_TAG, RESOURCE_TAG};

/// The AWS clients, built once per process and shared by every invocation.
#[derive(Clone, Debug)]
pub struct Clients {
    pub ecs: aws_sdk_ecs::Client,
    /// Built at first use: a heal of a steady delegate never calls EC2 or IAM.
    pub ec2: LazyClient<aws_sdk_ec2::Client>,
    pub iam: LazyClient<aws_sdk_iam::Client>,
    /// The record store (a DynamoDB table): the only record heal trusts.
    pub store: store::Store,
    /// Lambda, for the one call the function makes to it: invoking itself.
    pub invoker: invoke::SelfInvoker,
    /// Harness's API (and the API key's secret), for the image's latest supported version.
    pub harness: harness::Harness,
    /// The region the clients call: where the delegate's logs go, too.
    pub region: Option<String>,
}

impl Clients {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Clients {
            ecs: aws_sdk_ecs::Client::new(config),
            ec2: LazyClient::new(config, aws_sdk_ec2::Client::new),
            iam: LazyClient::new(config, aws_sdk_iam::Client::new),
            store: store::Store::new(config, store::Store::table_from_env()),
            invoker: invoke::SelfInvoker::new(config),
            harness: harness::Harness::new(config),
            region: config.region().map(|r| r.to_string()),
        }
    }

    /// Builds the clients that are built at first use. A request (stack, direct or continued)
    /// calls them all, so it builds them here, at the top of the handler, rather than deep in
    /// its work: building an SDK client takes a lot of stack in a debug build, and a test
    /// thread's stack is 2 MiB.
    pub fn build_all(&self) {
        let _ = (&*self.ec2, &*self.iam);
    }

    /// Clients configured from the environment (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials).
    /// A hung AWS call is cut off and retried rather than eating the invocation's time.
    ///
    /// Credentials in the environment (Lambda always sets them) are what the SDK's default chain
    /// would answer with every time, as its first provider: they are used alone, which spares
    /// init the rest of the chain (an STS client among it). Without them, the default chain.
    pub async fn from_env() -> Self {
        let connect = std::time::Duration::from_secs(5);
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(connect)
            .operation_attempt_timeout(std::time::Duration::from_secs(30))
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http::sdk_client(connect))
            .timeout_config(timeouts);
        if credentials_in_env() {
            loader = loader.credentials_provider(
                aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
            );
        }
        Self::new(&loader.load().await)
    }
}

/// Whether the environment holds what the SDK's environment provider needs: a key and its secret.
fn credentials_in_env() -> bool {
    let set = |name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY")
}

/// An SDK client built the first time it is used, then shared by every clone. Building a
/// client is most of init after the root certificates (each parses its crate's endpoint
/// partitions), and most invocations are heals, which need only ECS and DynamoDB.
#[derive(Clone)]
pub struct LazyClient<C> {
    config: aws_config::SdkConfig,
    make: fn(&aws_config::SdkConfig) -> C,
    built: std::sync::Arc<std::sync::OnceLock<C>>,
}

impl<C> LazyClient<C> {
    pub fn new(config: &aws_config::SdkConfig, make: fn(&aws_config::SdkConfig) -> C) -> Self {
        LazyClient {
            config: config.clone(),
            make,
            built: Default::default(),
        }
    }

    /// Whether the client has been built (by a call through it).
    pub fn is_built(&self) -> bool {
        self.built.get().is_some()
    }
}

impl<C> std::ops::Deref for LazyClient<C> {
    type Target = C;

    fn deref(&self) -> &C {
        self.built.get_or_init(|| (self.make)(&self.config))
    }
}

impl<C> std::fmt::Debug for LazyClient<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyClient")
            .field("built", &self.is_built())
            .finish()
    }
}
