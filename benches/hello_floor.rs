//! The floor for `make bench`'s init figure: a lambda_runtime function that only echoes its
//! event. Whatever the delegate function's start costs beyond this is its own.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|e: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(e.payload)
    }))
    .await
}
