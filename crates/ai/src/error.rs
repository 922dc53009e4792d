//! Errors of the AI gateway, and how each one reaches the client: OpenAI's error JSON shape
//! (`{"error": {"message", "type", "param", "code"}}`) with the right status and `Retry-After`.

use std::time::Duration;

use holdfast_core::ResetClass;
use serde_json::json;

/// The `Retry-After` sent with a 429 or 503 when neither the provider nor a cooldown says
/// how long to wait.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// One failed request (or one failed attempt, before the retry logic decides).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AiError {
    pub status: u16,
    /// OpenAI error `type` (`invalid_request_error`, `rate_limit_error`, `api_error`…).
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub message: String,
    /// The request field the error is about (OpenAI's `param`, e.g. `messages[0].role`).
    pub param: Option<String>,
    pub retry_after: Option<Duration>,
    /// True when the same deployment may succeed when asked again (after a backoff).
    pub retryable: bool,
    /// True when another deployment or fallback model may succeed: every retryable error,
    /// and failures of the deployment's own configuration (the provider refused its key).
    pub failover: bool,
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
            param: None,
            retry_after: None,
            retryable: false,
            failover: false,
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
            param: None,
            retry_after: None,
            retryable: true,
            failover: true,
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
            param: None,
            retry_after: None,
            retryable: true,
            failover: true,
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
            param: None,
            retry_after: None,
            retryable: true,
            failover: true,
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
            param: None,
            retry_after: None,
            retryable: true,
            failover: true,
            reset_class: None,
            outcome: "bad_upstream_response",
        }
    }

    /// An error status from the provider. 429 and 5xx are retried (and fail over); 401 and
    /// 403 mean the provider refused this deployment's key, so the gateway fails over to the
    /// next deployment or model without asking the same one again; other 4xx are the
    /// request's fault and end the call with their status.
    pub fn upstream_status(
        deployment: &str,
        status: u16,
        message: &str,
        retry_after: Option<Duration>,
    ) -> AiError {
        let (kind, outcome, retryable, failover) = match status {
            429 => ("rate_limit_error", "upstream_429", true, true),
            500..=599 => ("api_error", "upstream_5xx", true, true),
            401 | 403 => ("authentication_error", "upstream_auth", false, true),
            404 => ("invalid_request_error", "upstream_404", false, false),
            _ => ("invalid_request_error", "upstream_4xx", false, false),
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
            param: None,
            retry_after,
            retryable,
            failover,
            reset_class: None,
            outcome,
        }
    }

    /// No deployment could be tried (all cooling down after failures).
    pub fn no_deployment(model: &str, retry_after: Option<Duration>) -> AiError {
        AiError {
            status: 503,
            kind: "api_error",
            code: Some("no_healthy_deployment"),
            message: format!(
                "every deployment of model `{model}` (and its fallbacks) is cooling down after failures"
            ),
            param: None,
            retry_after,
            retryable: false,
            failover: false,
            reset_class: Some(ResetClass::NoHealthyUpstream),
            outcome: "no_healthy_deployment",
        }
    }

    /// No deployment could be tried because every one is cooling down after its provider
    /// rate limited it: a 429 with the time until the first one is usable again.
    pub fn all_rate_limited(model: &str, retry_after: Option<Duration>) -> AiError {
        AiError {
            status: 429,
            kind: "rate_limit_error",
            code: Some("rate_limit_exceeded"),
            message: format!(
                "every deployment of model `{model}` (and its fallbacks) is rate limited by its provider"
            ),
            param: None,
            retry_after,
            retryable: false,
            failover: false,
            reset_class: None,
            outcome: "upstream_429",
        }
    }

    /// A request field is invalid (400, OpenAI's `param` and `code`).
    pub fn invalid_field(
        param: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) -> AiError {
        AiError {
            code: Some(code),
            param: Some(param.into()),
            ..AiError::bad_request(message)
        }
    }

    /// The provider refused the content (e.g. Gemini's safety filter).
    pub fn content_filter(deployment: &str, reason: &str) -> AiError {
        AiError {
            status: 400,
            kind: "invalid_request_error",
            code: Some("content_filter"),
            message: format!("deployment {deployment} blocked the request: {reason}"),
            param: None,
            retry_after: None,
            retryable: false,
            failover: false,
            reset_class: None,
            outcome: "content_filter",
        }
    }

    /// The OpenAI error body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
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

    /// Seconds for a `Retry-After` header, rounded up. A 429 or 503 always carries one:
    /// [`DEFAULT_RETRY_AFTER`] when nothing better is known.
    pub fn retry_after_secs(&self) -> Option<u64> {
        let wait = match self.retry_after {
            Some(d) => Some(d),
            None if matches!(self.status, 429 | 503) => Some(DEFAULT_RETRY_AFTER),
            None => None,
        };
        wait.map(|d| d.as_millis().div_ceil(1000).max(1) as u64)
    }
}
