//! An AWS call that failed: which operation (as IAM names it, `ecs:CreateService`), what kind of
//! failure callers may branch on, and the SDK's error kept as the cause. The message a person
//! reads (the service's code and message) is made here, once.

use std::error::Error as StdError;
use std::fmt;

use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};

/// What went wrong, as far as a caller's decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsErrorKind {
    NotFound,
    AccessDenied,
    Throttled,
    InvalidRequest,
    Other,
}

#[derive(Debug)]
pub struct AwsError {
    pub operation: &'static str,
    pub kind: AwsErrorKind,
    /// Boxed: errors travel in `Result`s through every layer.
    inner: Box<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The service's error code, when it gave one.
    code: Option<String>,
    detail: String,
    source: Box<dyn StdError + Send + Sync + 'static>,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.operation, self.inner.detail)
    }
}

impl StdError for AwsError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.inner.source.as_ref())
    }
}

/// The SDK's answer type, the same for every AWS SDK.
pub type HttpResponse = aws_sdk_ecs::config::http::HttpResponse;

impl AwsError {
    /// Convert an SDK error of `operation` (every AWS SDK shares this error type).
    pub fn new<E>(operation: &'static str, e: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let code = e
            .as_service_error()
            .and_then(|se| se.code())
            .map(String::from);
        let detail = match (e.as_service_error(), &code) {
            (Some(se), Some(code)) => format!("{code}: {}", se.message().unwrap_or("no message")),
            // An answer AWS's error format does not describe (an HTML 500 from a proxy, say).
            (Some(_), None) => match e.raw_response().map(|r| r.status().as_u16()) {
                Some(status) => format!("HTTP {status} without an AWS error"),
                None => "an error without a code".to_string(),
            },
            (None, _) => crate::http::chain(&e),
        };
        AwsError {
            operation,
            kind: code.as_deref().map_or(AwsErrorKind::Other, kind_of),
            inner: Box::new(Inner {
                code,
                detail,
                source: Box::new(e),
            }),
        }
    }

    pub fn is(&self, kind: AwsErrorKind) -> bool {
        self.kind == kind
    }

    /// Whether the service answered with this error code.
    pub fn has_code(&self, code: &str) -> bool {
        self.inner.code.as_deref() == Some(code)
    }
}

/// The kind an AWS error code means, across ECS, EC2, IAM and the tagging API.
fn kind_of(code: &str) -> AwsErrorKind {
    if code.starts_with("AccessDenied") || code == "UnauthorizedOperation" {
        AwsErrorKind::AccessDenied
    } else if code.starts_with("Throttling")
        || code == "RequestLimitExceeded"
        || code == "TooManyRequestsException"
    {
        AwsErrorKind::Throttled
    } else if code.contains("NotFound") || code == "NoSuchEntity" {
        AwsErrorKind::NotFound
    } else if code.starts_with("Invalid") || code == "ValidationException" {
        AwsErrorKind::InvalidRequest
    } else {
        AwsErrorKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_give_kinds() {
        for (code, kind) in [
            ("AccessDeniedException", AwsErrorKind::AccessDenied),
            ("UnauthorizedOperation", AwsErrorKind::AccessDenied),
            ("ThrottlingException", AwsErrorKind::Throttled),
            ("RequestLimitExceeded", AwsErrorKind::Throttled),
            ("ServiceNotFoundException", AwsErrorKind::NotFound),
            ("InvalidGroup.NotFound", AwsErrorKind::NotFound),
            ("NoSuchEntity", AwsErrorKind::NotFound),
            ("InvalidParameterException", AwsErrorKind::InvalidRequest),
            ("ServerException", AwsErrorKind::Other),
        ] {
            assert_eq!(kind_of(code), kind, "{code}");
        }
    }
}
