//! Hostile and malformed input, generated: event classification and spec parsing never panic,
//! every CloudFormation-shaped event gets exactly one answer, and an invalid spec makes no AWS
//! call at all. The inputs come from a seeded generator, so a failure repeats; the seed and the
//! input are in the failure message.

mod support;

use harness_ecs_delegate_bootstrap::handler::HandlerError;
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
    record_figures(
        "hostile-generated",
        &json!({"generated inputs": n, "CloudFormation-shaped": cloudformation,
            "rejected by the spec": invalid, "panics": 0}),
    );
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
    record_figures(
        "hostile-invalid-requests",
        &json!({"invalid requests": tried, "answered FAILED once": tried,
            "AWS calls": proxy.total_calls()}),
    );
}

/// Hand-written hostile requests, each through the handler with a proxy that counts AWS calls:
/// the answer FAILED (or an invocation error when there is no one to answer), once, fitting
/// CloudFormation's 4 KB, naming the property; and no AWS call at all.
#[tokio::test]
async fn hand_written_hostile_requests_are_refused_without_an_aws_call() {
    let proxy = Proxy::start(vec![]).await;
    let h = handler(proxy.clients().await);
    let rx = Receiver::start(0).await;
    let base = json!({"ClusterName": "c", "AccountId": "a", "DelegateToken": "t"});
    let with = |key: &str, value: Value| {
        let mut p = base.clone();
        p[key] = value;
        (key.to_string(), p)
    };
    let mut cases: Vec<(String, Value)> = Vec::new();
    // Every property with every JSON type it does not take (strings are what CloudFormation
    // sends; a number or a bool is read as its text where that makes sense, so only the
    // types no property accepts are certain to fail).
    for key in spec::KNOWN_PROPERTIES {
        for wrong in [json!([1, 2]), json!({"a": {"b": 1}}), json!([{"x": null}])] {
            if *key == "Tags"
                || *key == "TaskDefinitionOverrides"
                || *key == "SubnetIds"
                || *key == "SecurityGroupIds"
            {
                continue;
            }
            cases.push(with(key, wrong));
        }
    }
    // Names with control characters, bidi overrides, emoji, NUL, and over-long ones.
    for name in [
        "clu\u{0}ster",
        "a\u{202e}b",
        "🚀",
        "a b",
        "tab\there",
        &"x".repeat(300),
        "../etc",
    ] {
        cases.push(with("ClusterName", json!(name)));
        cases.push(with("ServiceName", json!(name)));
        cases.push(with("TaskDefinitionFamily", json!(name)));
    }
    // 1 MB in one property, and in an unknown one.
    cases.push(with("DelegateName", json!("n".repeat(1 << 20))));
    cases.push(with("Unexpected", json!("u".repeat(1 << 20))));
    // Nesting as deep as a JSON parser allows (serde_json stops at 128).
    let mut deep = json!("bottom");
    for _ in 0..120 {
        deep = json!({ "d": deep });
    }
    cases.push(with("Tags", deep.clone()));
    cases.push(with("TaskDefinitionOverrides", deep));

    let mut answered = 0;
    for (i, (key, props)) in cases.iter().enumerate() {
        let before = rx.count();
        let event = cfn_event("Create", &rx.url(&format!("w{i}")), props, None, None);
        h.handle(event, deadline_in(30)).await.unwrap();
        let requests = rx.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), before + 1, "case {i} ({key}): one answer");
        let sent = &requests[before].body;
        assert!(
            sent.len() <= 4096,
            "case {i} ({key}): a {} byte answer",
            sent.len()
        );
        let body: Value = serde_json::from_slice(sent).unwrap();
        assert_eq!(body["Status"], "FAILED", "case {i} ({key})");
        let reason = body["Reason"].as_str().unwrap();
        assert!(
            reason.contains(key.as_str()),
            "case {i}: the reason does not name {key}: {reason}"
        );
        answered += 1;
    }

    // Not objects at all, and objects that are nothing the function knows: an invocation
    // error (there is no CloudFormation to answer), nothing else.
    let not_requests = [
        json!(null),
        json!(1),
        json!("Create"),
        json!([]),
        json!(true),
        json!({}),
        json!({"RequestType": "Create"}),
        json!({"Action": 7}),
        json!({"RequestType": ["Create"], "ResponseURL": 5}),
    ];
    for e in &not_requests {
        let err = h
            .handle(e.clone(), deadline_in(30))
            .await
            .expect_err("refused");
        assert!(matches!(err, HandlerError::Classify(_)), "{e}: {err}");
    }

    assert_eq!(proxy.total_calls(), 0, "a hostile request reached AWS");
    record_figures(
        "hostile-hand-written",
        &json!({"hand-written requests": cases.len(), "answered FAILED naming the property": answered,
            "non-requests refused": not_requests.len(), "AWS calls": proxy.total_calls()}),
    );
}

/// A ResponseURL that is not https to an S3 host is refused before any work, without a
/// request to it and without the URL in the error; plain http to loopback only when
/// RESPONSE_URL_ALLOW_LOOPBACK=true (`allow_loopback`).
#[tokio::test]
async fn a_response_url_that_is_not_s3_is_refused_without_a_request() {
    let proxy = Proxy::start(vec![]).await;
    let rx = Receiver::start(0).await;
    let mut strict = handler(proxy.clients().await);
    strict.allow_loopback = false;
    let props = json!({"ClusterName": "c", "AccountId": "a", "DelegateToken": "t"});
    let loopback = rx.url("strict");
    let refused = [
        loopback.clone(),
        loopback.replace("http://", "https://"),
        "https://evil.example.com/x?X-Amz-Signature=d3adb33f".to_string(),
        "https://s3.amazonaws.com.evil.example/x?X-Amz-Signature=d3adb33f".to_string(),
        "ftp://bucket.s3.amazonaws.com/x?X-Amz-Signature=d3adb33f".to_string(),
        "http://bucket.s3.amazonaws.com/x?X-Amz-Signature=d3adb33f".to_string(),
        "not a url d3adb33f".to_string(),
        String::new(),
    ];
    for url in &refused {
        let event = cfn_event("Create", url, &props, None, None);
        let err = strict
            .handle(event, deadline_in(30))
            .await
            .expect_err("refused");
        let text = format!("{err} {err:?}");
        // An empty URL is not even a CloudFormation request; the others are refused URLs.
        assert!(
            matches!(err, HandlerError::Respond(_) | HandlerError::Classify(_)),
            "{url}: {text}"
        );
        assert!(
            !text.contains("d3adb33f") && !text.contains("X-Amz"),
            "{url}: the error shows the URL: {text}"
        );
    }
    assert_eq!(rx.count(), 0, "a refused URL was requested");
    assert_eq!(
        proxy.total_calls(),
        0,
        "work started for a request no one can be told about"
    );

    // The same loopback URL with the switch on is answered.
    let h = handler(proxy.clients().await);
    assert!(h.allow_loopback);
    h.handle(
        cfn_event(
            "Create",
            &loopback,
            &json!({"ClusterName": "c"}),
            None,
            None,
        ),
        deadline_in(30),
    )
    .await
    .unwrap();
    assert_eq!(rx.count(), 1);
    record_figures(
        "response-urls",
        &json!({"ResponseURLs refused without a request": refused.len()}),
    );
}
