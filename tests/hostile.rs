//! Hostile and malformed input, generated: event classification and spec parsing never panic,
//! every CloudFormation-shaped event gets exactly one answer, and an invalid spec makes no AWS
//! call at all. The inputs come from a seeded generator, so a failure repeats; the seed and the
//! input are in the failure message.

mod support;

use harness_ecs_delegate_bootstrap::{classify, spec};
use serde_json::{json, Map, Value};
use support::*;

/// A seeded generator of hostile JSON (SplitMix64: no crate needed, same values every run).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix64(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Names the function knows, near-misses, and noise with unicode and control characters.
    fn key(&mut self) -> String {
        const KNOWN: &[&str] = &[
            "ClusterName",
            "LaunchType",
            "NetworkMode",
            "AccountId",
            "DelegateToken",
            "DelegateTokenSecretArn",
            "Cpu",
            "Memory",
            "DesiredCount",
            "SubnetIds",
            "SecurityGroupIds",
            "Tags",
            "Environment",
            "TaskDefinitionOverrides",
            "VpcId",
            "RequestType",
            "ResponseURL",
            "StackId",
            "RequestId",
            "LogicalResourceId",
            "ResourceProperties",
            "PhysicalResourceId",
            "Action",
            "Targets",
            "source",
            "detail-type",
            "detail",
        ];
        match self.below(3) {
            0 => KNOWN[self.below(KNOWN.len() as u64) as usize].to_string(),
            1 => format!("{}x", KNOWN[self.below(KNOWN.len() as u64) as usize]),
            _ => self.text(12),
        }
    }

    fn text(&mut self, max: u64) -> String {
        const ODD: &[&str] = &[
            "\u{0}",
            "\n",
            "\t",
            "\u{7f}",
            "é",
            "日本",
            "🦀",
            "\u{202e}",
            "'",
            "\"",
            "\\",
            "arn:aws:ecs:us-east-1:1:cluster/x",
            "https://",
            "http://127.0.0.1/",
            "-1",
            "1e308",
            "FARGATE",
            "awsvpc",
            "",
        ];
        (0..self.below(max + 1))
            .map(|_| match self.below(3) {
                0 => ODD[self.below(ODD.len() as u64) as usize].to_string(),
                _ => char::from(b' ' + self.below(95) as u8).to_string(),
            })
            .collect()
    }

    fn value(&mut self, depth: u32) -> Value {
        match self.below(if depth == 0 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => Value::Bool(self.below(2) == 0),
            2 => match self.below(3) {
                0 => json!(self.next() as i64),
                1 => json!(f64::from_bits(self.next()).clamp(-1e300, 1e300)),
                _ => json!(self.below(20_000)),
            },
            3 | 4 => Value::String(self.text(40)),
            5 => Value::Array((0..self.below(5)).map(|_| self.value(depth - 1)).collect()),
            _ => Value::Object(self.object(depth - 1)),
        }
    }

    fn object(&mut self, depth: u32) -> Map<String, Value> {
        (0..self.below(8))
            .map(|_| (self.key(), self.value(depth)))
            .collect()
    }
}

/// How many generated inputs a run tries (more with HOSTILE_INPUTS for a longer run).
fn inputs() -> u64 {
    std::env::var("HOSTILE_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

#[test]
fn classification_and_spec_parsing_never_panic() {
    let n = inputs();
    let mut g = Gen(0x5eed);
    let (mut cloudformation, mut invalid) = (0, 0);
    for i in 0..n {
        // Half the inputs are CloudFormation-shaped, so parsing is reached often.
        let event = if i % 2 == 0 {
            let request_type = ["Create", "Update", "Delete", "Nope"][g.below(4) as usize];
            json!({
                "RequestType": request_type,
                "ResponseURL": "https://bucket.s3.amazonaws.com/x",
                "StackId": "arn:aws:cloudformation:us-east-1:1:stack/s/g",
                "RequestId": g.text(8),
                "LogicalResourceId": "Delegate",
                "ResourceProperties": g.value(4),
            })
        } else {
            g.value(5)
        };
        let shown = event.to_string();
        let outcome = std::panic::catch_unwind(|| {
            if let Ok(classify::Trigger::CloudFormation(req)) = classify::classify(&event) {
                Some(spec::parse(&req.properties).is_err())
            } else {
                None
            }
        })
        .unwrap_or_else(|_| panic!("input {i} of seed 0x5eed panicked: {shown}"));
        if let Some(bad) = outcome {
            cloudformation += 1;
            invalid += u32::from(bad);
        }
    }
    println!("hostile inputs: {n} tried, {cloudformation} CloudFormation-shaped, {invalid} rejected by the spec, 0 panics");
    assert!(
        cloudformation as u64 >= n / 3,
        "the generator rarely reached CloudFormation: {cloudformation} of {n}"
    );
}

#[tokio::test]
async fn every_invalid_request_is_answered_failed_without_an_aws_call() {
    let proxy = Proxy::start(vec![]).await;
    let h = handler(proxy.clients().await);
    let rx = Receiver::start(0).await;
    let mut g = Gen(0xbad);
    let n = (inputs() / 10).max(100);
    let mut tried = 0;
    for i in 0..n {
        let mut props = g.object(3);
        // Valid-looking identity half the time, so later properties are what is wrong.
        if i % 2 == 0 {
            props.insert("ClusterName".into(), json!("c"));
            props.insert("AccountId".into(), json!("a"));
        }
        let props = Value::Object(props);
        if spec::parse(&props).is_ok() {
            continue;
        }
        tried += 1;
        let before = rx.count();
        let event = cfn_event("Create", &rx.url(&format!("h{i}")), &props, None, None);
        let _ = h.handle(event, deadline_in(30)).await;
        let bodies = rx.bodies();
        assert_eq!(
            bodies.len(),
            before + 1,
            "input {i}: one answer for {props}"
        );
        assert_eq!(bodies[before]["Status"], "FAILED", "input {i}: {props}");
    }
    assert_eq!(proxy.total_calls(), 0, "an invalid spec reached AWS");
    assert!(
        tried >= n / 2,
        "only {tried} of {n} generated specs were invalid"
    );
    println!(
        "invalid CloudFormation requests: {tried} tried, each answered FAILED once, 0 AWS calls"
    );
}
