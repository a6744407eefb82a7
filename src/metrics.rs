//! The function's CloudWatch metrics: one Embedded Metric Format record per delegate a heal or
//! an upgrade run covers, and one per converge, written as a line of its own to the log.
//! CloudWatch Logs turns each record into metrics, with no API call and no permission. Written
//! by hand: one record shape, a few lines of JSON, nothing added to the binary or its cold start.

use serde_json::{json, Map, Value};

/// The namespace every metric is in.
pub const NAMESPACE: &str = "HarnessDelegate";
/// The one dimension: the delegate, `<cluster>/<service>`.
pub const DIMENSION: &str = "Delegate";

/// 1 when the delegate's service runs what it should (see [`Tasks::ready`]), else 0.
pub const READY: &str = "Ready";
pub const RUNNING_TASKS: &str = "RunningTasks";
pub const DESIRED_TASKS: &str = "DesiredTasks";
/// 1 when the heal repaired the delegate, else 0.
pub const REPAIRED: &str = "Repaired";
/// 1 when the heal failed (an AWS call) or could not heal (the cluster is gone…), else 0.
pub const HEAL_FAILED: &str = "HealFailed";

/// 1 when a stack request (Create, Update) or a direct Reconcile failed, else 0.
pub const CONVERGE_FAILED: &str = "ConvergeFailed";
/// Per upgrade run: 1 when the delegate runs an older version than Harness's latest supported
/// one after the run (pinned, skipped, rolled back), 0 when it runs that one or newer; absent
/// when Harness's answer is unknown.
pub const BEHIND_LATEST_SUPPORTED: &str = "BehindLatestSupported";
/// Per upgrade run: 1 when the delegate's upgrade was rolled back or failed, else 0.
pub const UPGRADE_FAILED: &str = "UpgradeFailed";

/// Every metric a record may carry, with its unit.
pub const METRICS: &[(&str, &str)] = &[
    (READY, "Count"),
    (RUNNING_TASKS, "Count"),
    (DESIRED_TASKS, "Count"),
    (REPAIRED, "Count"),
    (HEAL_FAILED, "Count"),
    (CONVERGE_FAILED, "Count"),
    (BEHIND_LATEST_SUPPORTED, "Count"),
    (UPGRADE_FAILED, "Count"),
];

/// What the service showed of its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tasks {
    pub running: i32,
    pub desired: i32,
    /// The service runs what it should: nothing is desired, or the current deployment has
    /// finished rolling out with every desired task running. (Connected to Harness is the
    /// readiness work's to add, through the container health check.)
    pub ready: bool,
}

/// The record for one delegate: its outcome as 0/1 figures, and its tasks when the service was
/// seen. `now_ms`: the record's time.
pub fn heal_record(
    delegate: &str,
    repaired: bool,
    failed: bool,
    tasks: Option<Tasks>,
    now_ms: u64,
) -> Value {
    let mut figures: Vec<(&str, i64)> = vec![
        (REPAIRED, i64::from(repaired)),
        (HEAL_FAILED, i64::from(failed)),
    ];
    if let Some(t) = tasks {
        figures.push((READY, i64::from(t.ready)));
        figures.push((RUNNING_TASKS, i64::from(t.running)));
        figures.push((DESIRED_TASKS, i64::from(t.desired)));
    }
    emf(delegate, &figures, now_ms)
}

/// The record for one converge (a stack request or a direct Reconcile): whether it failed, and
/// the task count it asked for.
pub fn converge_record(delegate: &str, failed: bool, desired: i32, now_ms: u64) -> Value {
    let figures = [
        (CONVERGE_FAILED, i64::from(failed)),
        (DESIRED_TASKS, i64::from(desired)),
    ];
    emf(delegate, &figures, now_ms)
}

/// An Embedded Metric Format record of `figures` for one delegate.
/// The record of one delegate's upgrade run.
pub fn upgrade_record(delegate: &str, behind: Option<bool>, failed: bool, now_ms: u64) -> Value {
    let mut figures = vec![(UPGRADE_FAILED, i64::from(failed))];
    if let Some(b) = behind {
        figures.push((BEHIND_LATEST_SUPPORTED, i64::from(b)));
    }
    emf(delegate, &figures, now_ms)
}

fn emf(delegate: &str, figures: &[(&str, i64)], now_ms: u64) -> Value {
    let unit = |name: &str| {
        METRICS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("None", |(_, u)| *u)
    };
    let definitions: Vec<Value> = figures
        .iter()
        .map(|(name, _)| json!({"Name": name, "Unit": unit(name)}))
        .collect();
    let mut record = Map::new();
    record.insert(
        "_aws".into(),
        json!({
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[DIMENSION]],
                "Metrics": definitions,
            }],
        }),
    );
    record.insert(DIMENSION.into(), json!(delegate));
    for (name, value) in figures {
        record.insert((*name).into(), json!(value));
    }
    Value::Object(record)
}

/// Write a record as a log line of its own (stderr, with the other logs), under Lambda only: a
/// local run (`invoke`) feeds no CloudWatch, and its output is read by people.
pub fn emit(record: &Value) {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        eprintln!("{record}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_declares_every_figure_it_carries() {
        let tasks = Tasks {
            running: 1,
            desired: 2,
            ready: false,
        };
        let r = heal_record(
            "prod/harness-delegate",
            true,
            false,
            Some(tasks),
            1_764_000_000_000,
        );
        let declared = &r["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], NAMESPACE);
        assert_eq!(declared["Dimensions"], json!([[DIMENSION]]));
        assert_eq!(r[DIMENSION], "prod/harness-delegate");
        let names: Vec<&str> = declared["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [REPAIRED, HEAL_FAILED, READY, RUNNING_TASKS, DESIRED_TASKS]
        );
        for name in names {
            assert!(r[name].is_i64(), "{name} has no value");
        }
        assert_eq!(
            (
                r[REPAIRED].as_i64(),
                r[READY].as_i64(),
                r[DESIRED_TASKS].as_i64()
            ),
            (Some(1), Some(0), Some(2))
        );
        let c = converge_record("prod/x", true, 2, 1);
        assert_eq!(
            (c[CONVERGE_FAILED].as_i64(), c[DESIRED_TASKS].as_i64()),
            (Some(1), Some(2))
        );
        // Without a service seen, only the outcome.
        let r = heal_record("prod/x", false, true, None, 1);
        assert_eq!(
            r["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(r[HEAL_FAILED], 1);
    }
}
