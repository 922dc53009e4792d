//! Errors of the AI gateway, and how each one reaches the client: OpenAI's error JSON shape
//! (`{"error": {"message", "type", "param", "code"}}`) with the right status and `Retry-After`.

use std::time::Duration;

use holdfast_core::ResetClass;
use serde_json::json;

/// One failed request (or one failed attempt, before the retry logic decides).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AiError {
    pub status: u16,
    /// OpenAI error `type` (`invalid_request_error`, `rate_limit_error`, `api_error`…).
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// True when another attempt (same or next deployment) may succeed.
    pub retryable: bool,
    /// How the failure is classified in the call log.
    pub reset_class: Option<ResetClass>,
    /// Short outcome name for the call log (`upstream_429`, `timeout`, …).
    pub outcome: &'static str,
}

impl AiError {
    /// The client's request is wrong (400), not retried.
    pub fn bad_request(message: impl Into<String>) -> AiError {
        AiError {
            status: 400,
            kind: "invalid_request_error",
            code: None,
            message: message.into(),
            retry_after: None,
            retryable: false,
            reset_class: Some(ResetClass::BadRequest),
            outcome: "bad_request",
        }
    }

    pub fn not_found(message: impl Into<String>, code: &'static str) -> AiError {
        AiError {
            status: 404,
            code: Some(code),
            ..AiError::bad_request(message)
        }
    }

    /// A connection to the provider failed before any response (retryable).
    pub fn connect(deployment: &str, detail: impl std::fmt::Display) -> AiError {
        AiError {
            status: 502,
            kind: "api_error",
            code: Some("upstream_connect_failed"),
            message: format!("cannot reach deployment {deployment}: {detail}"),
            retry_after: None,
            retryable: true,
            reset_class: Some(ResetClass::UpstreamRefused),
            outcome: "connect_error",
        }
    }

    /// The provider reset or closed the connection before the response was complete.
    pub fn reset(deployment: &str, detail: impl std::fmt::Display, mid: bool) -> AiError {
        AiError {
            status: 502,
            kind: "api_error",
            code: Some("upstream_reset"),
            message: format!("deployment {deployment} broke the connection: {detail}"),
            retry_after: None,
            retryable: true,
            reset_class: Some(if mid {
                ResetClass::UpstreamResetMidResponse
            } else {
                ResetClass::UpstreamResetBeforeResponse
            }),
            outcome: "upstream_reset",
        }
    }

    pub fn timeout(deployment: &str, what: &str, after: Duration) -> AiError {
        AiError {
            status: 504,
            kind: "api_error",
            code: Some("upstream_timeout"),
            message: format!(
                "deployment {deployment}: {what} took longer than {} ms",
                after.as_millis()
            ),
            retry_after: None,
            retryable: true,
            reset_class: Some(ResetClass::UpstreamTimeout),
            outcome: "timeout",
        }
    }

    /// The provider answered with something that is not its documented format.
    pub fn bad_upstream(deployment: &str, detail: impl std::fmt::Display) -> AiError {
        AiError {
            status: 502,
            kind: "api_error",
            code: Some("bad_upstream_response"),
            message: format!("deployment {deployment} sent an unreadable answer: {detail}"),
            retry_after: None,
            retryable: true,
            reset_class: None,
            outcome: "bad_upstream_response",
        }
    }

    /// An error status from the provider; 429 and 5xx are retryable, other 4xx are not.
    pub fn upstream_status(
        deployment: &str,
        status: u16,
        message: &str,
        retry_after: Option<Duration>,
    ) -> AiError {
        let (kind, outcome, retryable) = match status {
            429 => ("rate_limit_error", "upstream_429", true),
            500..=599 => ("api_error", "upstream_5xx", true),
            401 | 403 => ("authentication_error", "upstream_auth", false),
            404 => ("invalid_request_error", "upstream_404", false),
            _ => ("invalid_request_error", "upstream_4xx", false),
        };
        // A provider's 5xx reaches the client as 502 (the gateway is fine, the provider is not).
        let client_status = if (500..=599).contains(&status) {
            502
        } else if status == 401 || status == 403 {
            // The provider refused the gateway's key: a gateway configuration problem.
            502
        } else {
            status
        };
        AiError {
            status: client_status,
            kind,
            code: None,
            message: format!("deployment {deployment} answered {status}: {message}"),
            retry_after,
            retryable,
            reset_class: None,
            outcome,
        }
    }

    /// No deployment could be tried (all cooling down).
    pub fn no_deployment(model: &str, retry_after: Option<Duration>) -> AiError {
        AiError {
            status: 503,
            kind: "api_error",
            code: Some("no_healthy_deployment"),
            message: format!(
                "every deployment of model `{model}` (and its fallbacks) is cooling down after failures"
            ),
            retry_after,
            retryable: false,
            reset_class: Some(ResetClass::NoHealthyUpstream),
            outcome: "no_healthy_deployment",
        }
    }

    /// The provider refused the content (e.g. Gemini's safety filter).
    pub fn content_filter(deployment: &str, reason: &str) -> AiError {
        AiError {
            status: 400,
            kind: "invalid_request_error",
            code: Some("content_filter"),
            message: format!("deployment {deployment} blocked the request: {reason}"),
            retry_after: None,
            retryable: false,
            reset_class: None,
            outcome: "content_filter",
        }
    }

    /// The OpenAI error body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.code}})
    }

    /// The Anthropic error body (for `/v1/messages`).
    pub fn anthropic_body(&self) -> serde_json::Value {
        let ty = match self.status {
            400 | 404 => "invalid_request_error",
            401 => "authentication_error",
            429 => "rate_limit_error",
            503 => "overloaded_error",
            _ => "api_error",
        };
        json!({"type": "error", "error": {"type": ty, "message": self.message}})
    }

    /// Seconds for a `Retry-After` header, rounded up.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
            .map(|d| d.as_millis().div_ceil(1000).max(1) as u64)
    }
}
