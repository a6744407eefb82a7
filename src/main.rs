//! Entry point: wires the Lambda runtime (or a local command) to the handler. The AWS clients are
//! built once per process, outside the handler.
//!
//! Usage:
//!   harness-ecs-delegate-bootstrap                  run under the Lambda Runtime API
//!   harness-ecs-delegate-bootstrap invoke EVENT     run one event (a JSON file) and print the result
//!   harness-ecs-delegate-bootstrap plan EVENT       print what the event would change, change nothing

// The runtime's service stack around the handler's futures makes a deep type for the compiler.
#![recursion_limit = "256"]

use std::time::Duration;

use harness_ecs_delegate_bootstrap::classify::{classify, DirectAction, Trigger};
use harness_ecs_delegate_bootstrap::handler::Handler;
use harness_ecs_delegate_bootstrap::model::InvocationStatus;
use harness_ecs_delegate_bootstrap::Clients;
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::time::Instant;

// Static musl (the package): musl's own allocator makes init slower than glibc's does
// (docs/release-profile.md).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: harness-ecs-delegate-bootstrap [invoke EVENT.json | plan EVENT.json]\n\
without arguments it runs under the AWS Lambda Runtime API";

/// A local run has no Lambda deadline; allow as long as the longest Lambda timeout.
const LOCAL_DEADLINE: Duration = Duration::from_secs(900);

/// Logs as Lambda's advanced logging controls ask, as the runtime's own subscriber reads them:
/// the level from `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG` (which may name crates:
/// `info,harness_ecs_delegate_bootstrap=debug`), else INFO; JSON lines with `timestamp`, `level`
/// and `message` at the top level when `AWS_LAMBDA_LOG_FORMAT` is JSON, text otherwise. The
/// filter is by target and level only (tracing-subscriber's `Targets`): its `EnvFilter` would add
/// a regex engine to the binary for span-field filters the function has no use for.
fn init_tracing() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let level = match std::env::var("AWS_LAMBDA_LOG_LEVEL") {
        Ok(l) if l.eq_ignore_ascii_case("FATAL") => Some("error".to_string()),
        Ok(l) if !l.trim().is_empty() => Some(l.trim().to_ascii_lowercase()),
        _ => None,
    };
    let parse = |s: &str| s.parse::<Targets>().ok();
    let mut filter = level
        .as_deref()
        .and_then(parse)
        .or_else(|| std::env::var("RUST_LOG").ok().as_deref().and_then(parse))
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    // At DEBUG and TRACE the runtime logs raw events, whose ResponseURL must never reach a
    // log: cap its crates at INFO (and leave them alone at quieter levels). The same for the
    // signer, which prints what it signs (a continuation holds a ResponseURL), and for the HTTP
    // client, which prints a request's URL (a ResponseURL) at DEBUG when it adds credentials for
    // a proxy.
    let most = filter
        .iter()
        .map(|(_, l)| l)
        .chain(filter.default_level())
        .max()
        .unwrap_or(LevelFilter::OFF);
    if most > LevelFilter::INFO {
        for target in [
            "lambda_runtime",
            "lambda_runtime_api_client",
            "aws_sigv4",
            "aws_smithy_http_client",
        ] {
            filter = filter.with_target(target, LevelFilter::INFO);
        }
    }
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        let fmt = fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false);
        tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .init();
    } else {
        let fmt = fmt.with_ansi(false);
        tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .init();
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag] if flag == "-h" || flag == "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        // Outside Lambda (no Runtime API to poll) the runtime would panic: say how to run it.
        [] if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() => {
            eprintln!(
                "{USAGE}\nAWS_LAMBDA_RUNTIME_API is not set, so this is not a Lambda environment"
            );
            std::process::exit(2);
        }
        [] => {
            init_tracing();
            let handler = Handler::new(Clients::from_env().await);
            serve(&handler).await
        }
        [cmd, path] if cmd == "invoke" || cmd == "plan" => {
            init_tracing();
            let handler = Handler::new(Clients::from_env().await);
            run_local(&handler, cmd == "plan", path).await
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

/// Serve invocations from the Lambda Runtime API.
async fn serve(handler: &Handler) -> Result<(), lambda_runtime::Error> {
    // The event is taken raw: one nested deeper than serde_json reads must still reach the
    // handler, which answers CloudFormation.
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            handler
                .handle_invocation(
                    event.payload.get(),
                    &event.context.invoked_function_arn,
                    invocation_deadline(event.context.deadline()),
                )
                .await
                .map_err(lambda_runtime::Diagnostic::from)
        },
    ))
    .await
}

/// Run one event from a file (as a dry-run Plan when `plan`), print the result.
async fn run_local(handler: &Handler, plan: bool, path: &str) -> Result<(), lambda_runtime::Error> {
    let event = read_event(path)?;
    let event = if plan { as_plan(&event)? } else { event };
    match handler.handle(event, Instant::now() + LOCAL_DEADLINE).await {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            // A request answered FAILED was handled, but what it asked for did not happen.
            if v["Status"] == InvocationStatus::Failed.as_str() {
                std::process::exit(1);
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// Lambda's longest timeout: a deadline further off than this is not Lambda's.
const MAX_LAMBDA_TIMEOUT: Duration = Duration::from_secs(900);

/// The invocation's deadline as the runtime gives it, or a local one when that cannot be a real
/// Lambda deadline: already past, or further off than Lambda allows. cargo-lambda's emulator
/// sends `Lambda-Runtime-Deadline-Ms: 600000`, a duration rather than an epoch time.
fn invocation_deadline(deadline: std::time::SystemTime) -> Instant {
    match deadline.duration_since(std::time::SystemTime::now()) {
        Ok(left) if !left.is_zero() && left <= MAX_LAMBDA_TIMEOUT + Duration::from_secs(5) => {
            Instant::now() + left
        }
        _ => {
            tracing::warn!(
                fallback_seconds = LOCAL_DEADLINE.as_secs(),
                "the runtime's deadline is not a plausible Lambda deadline (an emulator's?): using a local one"
            );
            Instant::now() + LOCAL_DEADLINE
        }
    }
}

fn read_event(path: &str) -> Result<Value, lambda_runtime::Error> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read event file {path}: {e}"))?;
    Ok(serde_json::from_str(&text).map_err(|e| format!("event file {path} is not JSON: {e}"))?)
}

/// Any event that carries delegate properties, turned into a dry-run Plan request.
fn as_plan(event: &Value) -> Result<Value, lambda_runtime::Error> {
    let props = match classify(event)? {
        Trigger::CloudFormation(req) | Trigger::Continuation { request: req, .. } => {
            req.properties
        }
        Trigger::Direct {
            action: DirectAction::Delete,
            ..
        } => {
            return Err(
                "plan shows what a Reconcile would change; a Delete event has no plan to show"
                    .into(),
            )
        }
        Trigger::Direct { properties, .. } => properties.0,
        Trigger::Schedule | Trigger::EcsEvent(_) | Trigger::Heal { .. } | Trigger::Upgrade { .. } => {
            return Err(
                "heal and upgrade events carry no delegate properties to plan: `invoke` runs them and reports per delegate what it found and did"
                    .into(),
            )
        }
    };
    Ok(json!({"Action": "Plan", "ResourceProperties": props}))
}
