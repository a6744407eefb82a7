//! A fake Harness API on loopback: it answers the latest supported delegate version for the
//! accounts and keys it knows, as Harness documents it, and plays its failures (a refused key,
//! a 5xx, a slow or malformed answer) when a test says so.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::*;

/// What the fake answers next.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The versions it holds (regular; the minimal one is derived).
    Versions,
    Status(u16),
    /// The versions, after this long.
    Slow(Duration),
    /// A 200 with this body.
    Body(&'static str),
}

/// A request received: its path with the query, and the x-api-key it carried.
pub type Asked = Vec<(String, Option<String>)>;

#[derive(Clone)]
pub struct HarnessApi {
    /// `http://127.0.0.1:PORT/<path>`: what a stack's ManagerHostAndPort would be.
    pub manager: String,
    pub account: String,
    pub key: String,
    pub latest: Arc<Mutex<String>>,
    pub answer: Arc<Mutex<Answer>>,
    /// The requests it received (path with query, and the x-api-key it was sent).
    pub asked: Arc<Mutex<Asked>>,
}

impl HarnessApi {
    /// A Harness for `account` and `key`, serving under `path` (e.g. `/gratis`), whose latest
    /// supported version is `latest`.
    pub async fn start(path: &str, account: &str, key: &str, latest: &str) -> HarnessApi {
        let latest = Arc::new(Mutex::new(latest.to_string()));
        let answer = Arc::new(Mutex::new(Answer::Versions));
        let asked: Arc<Mutex<Asked>> = Default::default();
        let (l, a, k, p) = (
            latest.clone(),
            answer.clone(),
            asked.clone(),
            path.to_string(),
        );
        let (account_, key_) = (account.to_string(), key.to_string());
        let addr = serve(Arc::new(move |req: Request| {
            let (l, a, k, p) = (l.clone(), a.clone(), k.clone(), p.clone());
            let (account, key) = (account_.clone(), key_.clone());
            Box::pin(async move {
                let sent_key = req.header("x-api-key").map(String::from);
                k.lock().unwrap().push((req.path.clone(), sent_key.clone()));
                let endpoint = format!("{p}/ng/api/delegate-setup/latest-supported-version");
                let (route, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
                if req.method != "GET" || route != endpoint {
                    return Response::status(404, "{\"code\":\"RESOURCE_NOT_FOUND\"}");
                }
                if sent_key.as_deref() != Some(key.as_str()) {
                    return Response::status(401, "{\"code\":\"INVALID_TOKEN\",\"message\":\"Token is not valid.\"}");
                }
                if query != format!("accountIdentifier={account}") {
                    return Response::status(403, "{\"code\":\"ACCESS_DENIED\"}");
                }
                let answer = a.lock().unwrap().clone();
                let versions = || {
                    let v = l.lock().unwrap().clone();
                    json!({"metaData": {}, "resource": {"latestSupportedVersion": v, "latestSupportedMinimalVersion": format!("{v}.minimal")}, "responseMessages": []}).to_string()
                };
                match answer {
                    Answer::Versions => Response::status(200, &versions()),
                    Answer::Status(s) => Response::status(s, "{\"code\":\"INTERNAL_SERVER_ERROR\"}"),
                    Answer::Slow(d) => {
                        tokio::time::sleep(d).await;
                        Response::status(200, &versions())
                    }
                    Answer::Body(b) => Response::status(200, b),
                }
            })
        }))
        .await;
        HarnessApi {
            manager: format!("http://{addr}{path}"),
            account: account.to_string(),
            key: key.to_string(),
            latest,
            answer,
            asked,
        }
    }

    pub fn answer(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }
}

/// A Secrets Manager secret in `region` of the emulator holding `value` (a Harness API key, as
/// a user would store it): its ARN. moto does not check signatures; the credential scope
/// names the region.
pub async fn put_secret(region: &str, name: &str, value: &str) -> String {
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=testing/20261201/{region}/secretsmanager/aws4_request, SignedHeaders=host, Signature=0"
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/", aws()))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "secretsmanager.CreateSecret")
        .header("authorization", auth)
        .body(json!({"Name": name, "SecretString": value}).to_string())
        .send()
        .await
        .expect("CreateSecret");
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    assert!(status.is_success(), "CreateSecret: {status} {body}");
    body["ARN"].as_str().expect("the secret's ARN").to_string()
}
