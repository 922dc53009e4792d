//! Errors of the AI gateway, and how each one reaches the client: OpenAI's error JSON shape
//! (`{"error": {"message", "type", "param", "code"}}`) with the right status and `Retry-After`.

use std::time::Duration;

use holdfast_core::ResetClass;
use serde_json::json;

/// The `Retry-After` sent with a 429 or 503 when neither the provider nor a cooldown says
/// how long to wait.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// One failed request (or one failed attempt, before the retry logic decides).
///
/// `message` is what the client reads: it never names the internal deployment. The
/// deployment (when the error is about one) is kept in `deployment`, and `Display` (used
/// in logs) names it.
#[derive(Debug, Clone)]
pub struct AiError {
    pub status: u16,
    /// OpenAI error `type` (`invalid_request_error`, `rate_limit_error`, `api_error`…).
    pub kind: &'static str,
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
    /// What the provider said and which deployment it is about (boxed: errors travel in
    /// every `Result`).
    pub detail: Option<Box<ErrorDetail>>,
}

/// The parts of an [`AiError`] only provider errors have.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorDetail {
    /// The gateway's OpenAI error `code` (`upstream_timeout`, `model_not_found`…).
    pub code: Option<&'static str>,
    /// The provider's own error `code` (e.g. `context_length_exceeded`, `content_filter`),
    /// sent to the client instead of `code` when set.
    pub provider_code: Option<String>,
    /// The provider's own error `type`, sent to the client instead of `kind` when set.
    pub provider_type: Option<String>,
    /// The error `type` in Anthropic's terms (`overloaded_error`, `not_found_error`…) when an
    /// Anthropic deployment gave it: what `/v1/messages` clients get instead of the type the
    /// gateway derives from the status.
    pub anthropic_type: Option<String>,
    /// The deployment the error is about: for logs, never in the client's message.
    pub deployment: Option<String>,
}

impl std::fmt::Display for AiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.deployment() {
            Some(d) if !self.message.contains(d) => {
                write!(f, "deployment {d}: {}", self.message)
            }
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for AiError {}

impl AiError {
    /// The client's request is wrong (400), not retried.
    pub fn bad_request(message: impl Into<String>) -> AiError {
        AiError {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
            param: None,
            retry_after: None,
            retryable: false,
            failover: false,
            reset_class: Some(ResetClass::BadRequest),
            outcome: "bad_request",
            detail: None,
        }
    }

    pub fn not_found(message: impl Into<String>, code: &'static str) -> AiError {
        AiError {
            status: 404,
            detail: Some(Box::new(ErrorDetail {
                code: Some(code),
                ..ErrorDetail::default()
            })),
            ..AiError::bad_request(message)
        }
    }

    /// A connection to the provider failed before any response (retryable).
    pub fn connect(deployment: &str, detail: impl std::fmt::Display) -> AiError {
        AiError {
            status: 502,
            kind: "api_error",
            message: format!("cannot reach deployment {deployment}: {detail}"),
            param: None,
            retry_after: None,
            retryable: true,
            failover: true,
            reset_class: Some(ResetClass::UpstreamRefused),
            outcome: "connect_error",
            detail: Some(Box::new(ErrorDetail {
                code: Some("upstream_connect_failed"),
                deployment: Some(deployment.to_string()),
                ..ErrorDetail::default()
            })),
        }
    }

    /// The provider reset or closed the connection before the response was complete.
    pub fn reset(deployment: &str, detail: impl std::fmt::Display, mid: bool) -> AiError {
        AiError {
            status: 502,
            kind: "api_error",
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
            detail: Some(Box::new(ErrorDetail {
                code: Some("upstream_reset"),
                deployment: Some(deployment.to_string()),
                ..ErrorDetail::default()
            })),
        }
    }

    pub fn timeout(deployment: &str, what: &str, after: Duration) -> AiError {
        AiError {
            status: 504,
            kind: "api_error",
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
            detail: Some(Box::new(ErrorDetail {
                code: Some("upstream_timeout"),
                deployment: Some(deployment.to_string()),
                ..ErrorDetail::default()
            })),
        }
    }

    /// The provider answered with something that is not its documented format.
    pub fn bad_upstream(deployment: &str, detail: impl std::fmt::Display) -> AiError {
        AiError {
            status: 502,
            kind: "api_error",
            message: format!("deployment {deployment} sent an unreadable answer: {detail}"),
            param: None,
            retry_after: None,
            retryable: true,
            failover: true,
            reset_class: None,
            outcome: "bad_upstream_response",
            detail: Some(Box::new(ErrorDetail {
                code: Some("bad_upstream_response"),
                deployment: Some(deployment.to_string()),
                ..ErrorDetail::default()
            })),
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
            message: message.to_string(),
            param: None,
            retry_after,
            retryable,
            failover,
            reset_class: None,
            outcome,
            detail: Some(Box::new(ErrorDetail {
                deployment: Some(deployment.to_string()),
                ..ErrorDetail::default()
            })),
        }
    }

    /// No deployment could be tried (all cooling down after failures).
    pub fn no_deployment(model: &str, retry_after: Option<Duration>) -> AiError {
        AiError {
            status: 503,
            kind: "api_error",
            message: format!(
                "every deployment of model `{model}` (and its fallbacks) is cooling down after failures"
            ),
            param: None,
            retry_after,
            retryable: false,
            failover: false,
            reset_class: Some(ResetClass::NoHealthyUpstream),
            outcome: "no_healthy_deployment",
            detail: Some(Box::new(ErrorDetail {
                code: Some("no_healthy_deployment"),
                ..ErrorDetail::default()
            })),
        }
    }

    /// No deployment could be tried because every one is cooling down after its provider
    /// rate limited it: a 429 with the time until the first one is usable again.
    pub fn all_rate_limited(model: &str, retry_after: Option<Duration>) -> AiError {
        AiError {
            status: 429,
            kind: "rate_limit_error",
            message: format!(
                "every deployment of model `{model}` (and its fallbacks) is rate limited by its provider"
            ),
            param: None,
            retry_after,
            retryable: false,
            failover: false,
            reset_class: None,
            outcome: "upstream_429",
            detail: Some(Box::new(ErrorDetail {
                code: Some("rate_limit_exceeded"),
                ..ErrorDetail::default()
            })),
        }
    }

    /// A request field is invalid (400, OpenAI's `param` and `code`).
    pub fn invalid_field(
        param: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) -> AiError {
        AiError {
            detail: Some(Box::new(ErrorDetail {
                code: Some(code),
                ..ErrorDetail::default()
            })),
            param: Some(param.into()),
            ..AiError::bad_request(message)
        }
    }

    /// The provider refused the content (e.g. Gemini's safety filter).
    pub fn content_filter(deployment: &str, reason: &str) -> AiError {
        AiError {
            status: 400,
            kind: "invalid_request_error",
            message: format!("the provider blocked the request: {reason}"),
            param: None,
            retry_after: None,
            retryable: false,
            failover: false,
            reset_class: None,
            outcome: "content_filter",
            detail: Some(Box::new(ErrorDetail {
                code: Some("content_filter"),
                deployment: Some(deployment.to_string()),
                ..ErrorDetail::default()
            })),
        }
    }

    /// The provider's own `code`, `param` and `type` (each when it gave one), passed on to
    /// the client instead of the gateway's.
    pub fn with_provider_detail(
        mut self,
        code: Option<String>,
        param: Option<String>,
        kind: Option<String>,
    ) -> AiError {
        let detail = self.detail.get_or_insert_with(Box::default);
        detail.provider_code = code.or(detail.provider_code.take());
        detail.provider_type = kind.or(detail.provider_type.take());
        self.param = param.or(self.param);
        self
    }

    /// The Anthropic error `type` an Anthropic deployment gave, passed on to `/v1/messages`
    /// clients as it is.
    pub fn with_anthropic_type(mut self, ty: Option<String>) -> AiError {
        if ty.is_some() {
            self.detail.get_or_insert_with(Box::default).anthropic_type = ty;
        }
        self
    }

    /// The error `code` the client gets: the provider's, else the gateway's.
    pub fn code(&self) -> Option<&str> {
        self.provider_code().or(self.detail.as_ref()?.code)
    }

    /// The provider's own error `code`, when it gave one.
    pub fn provider_code(&self) -> Option<&str> {
        self.detail.as_ref()?.provider_code.as_deref()
    }

    /// The deployment the error is about (for logs).
    pub fn deployment(&self) -> Option<&str> {
        self.detail.as_ref()?.deployment.as_deref()
    }

    /// The OpenAI error body.
    pub fn body(&self) -> serde_json::Value {
        let code = self.code();
        let kind = self
            .detail
            .as_ref()
            .and_then(|d| d.provider_type.as_deref())
            .unwrap_or(self.kind);
        json!({"error": {"message": self.message, "type": kind, "param": self.param, "code": code}})
    }

    /// The Anthropic error body (for `/v1/messages`): Anthropic's `type` (the provider's own
    /// when an Anthropic deployment gave one, else derived from the status), the message, and
    /// the same `code` (and `param`) an OpenAI client gets, when there is one. Anthropic's
    /// SDKs read `type` and `message` and keep the rest.
    pub fn anthropic_body(&self) -> serde_json::Value {
        let ty = match self.status {
            400 | 404 => "invalid_request_error",
            401 => "authentication_error",
            429 => "rate_limit_error",
            503 => "overloaded_error",
            _ => "api_error",
        };
        let ty = self
            .detail
            .as_ref()
            .and_then(|d| d.anthropic_type.as_deref())
            .unwrap_or(ty);
        let mut error = json!({"type": ty, "message": self.message});
        if let Some(code) = self.code() {
            error["code"] = json!(code);
        }
        if let Some(param) = &self.param {
            error["param"] = json!(param);
        }
        json!({"type": "error", "error": error})
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
