//! The record of one call through the gateway, shared by the access log, the metrics, the
//! call log (store) and analytics.

use serde::{Deserialize, Serialize};

/// Why an exchange failed, as seen by the gateway. Every failed exchange gets exactly one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetClass {
    ClientAborted,
    UpstreamRefused,
    UpstreamResetBeforeResponse,
    UpstreamClosedIdleRace,
    UpstreamResetMidResponse,
    UpstreamTimeout,
    NoHealthyUpstream,
    Overloaded,
    BadRequest,
}

impl ResetClass {
    /// Every class, in a stable order (for metrics pre-registration and docs).
    pub const ALL: [ResetClass; 9] = [
        ResetClass::ClientAborted,
        ResetClass::UpstreamRefused,
        ResetClass::UpstreamResetBeforeResponse,
        ResetClass::UpstreamClosedIdleRace,
        ResetClass::UpstreamResetMidResponse,
        ResetClass::UpstreamTimeout,
        ResetClass::NoHealthyUpstream,
        ResetClass::Overloaded,
        ResetClass::BadRequest,
    ];

    /// The stable snake_case name used in logs, metrics and the call log.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetClass::ClientAborted => "client_aborted",
            ResetClass::UpstreamRefused => "upstream_refused",
            ResetClass::UpstreamResetBeforeResponse => "upstream_reset_before_response",
            ResetClass::UpstreamClosedIdleRace => "upstream_closed_idle_race",
            ResetClass::UpstreamResetMidResponse => "upstream_reset_mid_response",
            ResetClass::UpstreamTimeout => "upstream_timeout",
            ResetClass::NoHealthyUpstream => "no_healthy_upstream",
            ResetClass::Overloaded => "overloaded",
            ResetClass::BadRequest => "bad_request",
        }
    }

    /// Parse the snake_case name back.
    pub fn parse(name: &str) -> Option<ResetClass> {
        ResetClass::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl std::fmt::Display for ResetClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Token usage and cost of one AI call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AiUsage {
    /// The model name the client asked for (e.g. `smart`).
    pub model_requested: String,
    /// The deployment that answered (e.g. `anthropic/claude-3-5-haiku`).
    pub deployment: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// True when tokens were counted locally because the provider reported no usage.
    pub tokens_estimated: bool,
    pub cost_usd: f64,
    pub attempts: u32,
    pub ttft_ms: Option<f64>,
    /// `ok`, or the failure (e.g. `stream_broken`, `all_deployments_failed`).
    pub outcome: String,
}

/// Fields that extensions (API management, AI gateway) fill in while a request is handled.
/// The data plane merges them into the final [`CallRecord`] when the response body ends,
/// so a streaming handler can still set usage after its handler returned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallExtra {
    pub tenant: Option<String>,
    pub service: Option<String>,
    pub service_version: Option<String>,
    pub consumer: Option<String>,
    pub key_prefix: Option<String>,
    pub ai: Option<AiUsage>,
    /// A handler may classify its own failure (e.g. an AI stream that broke mid-way). The data
    /// plane copies it into [`CallRecord::reset_class`]; it is not serialized here, so the
    /// flattened record has exactly one `reset_class` key.
    #[serde(skip)]
    pub reset_class: Option<ResetClass>,
    /// When a handler that calls a provider itself (the AI gateway) sent its first provider
    /// request. Calls without an upstream attempt of the data plane's own get their
    /// [`CallRecord::upstream_ms`] from it: this moment to the response's end, like a proxied
    /// call's first attempt. Not serialized (the record has its own `upstream_ms`).
    #[serde(skip)]
    pub upstream_started: Option<std::time::Instant>,
}

/// One call through the gateway. Written to the JSON access log, counted in metrics, and
/// stored in the call log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Start of the request, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub route: String,
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub client: String,
    /// The status sent to the client (0 when none could be sent).
    pub status: u16,
    pub reset_class: Option<ResetClass>,
    /// The upstream target of the last attempt (`host:port`), if any.
    pub target: Option<String>,
    pub attempts: u32,
    pub total_ms: f64,
    pub upstream_connect_ms: Option<f64>,
    pub upstream_first_byte_ms: Option<f64>,
    /// Time spent upstream (first attempt start to response end); for a handler route, from
    /// its first provider request ([`CallExtra::upstream_started`]) to the response end.
    pub upstream_ms: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    #[serde(flatten)]
    pub extra: CallExtra,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serialized_record_has_exactly_one_reset_class_key() {
        let record = CallRecord {
            reset_class: Some(ResetClass::UpstreamTimeout),
            extra: CallExtra {
                reset_class: Some(ResetClass::UpstreamTimeout),
                ..CallExtra::default()
            },
            ..CallRecord::default()
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(json.matches("\"reset_class\"").count(), 1, "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["reset_class"], "upstream_timeout");
    }

    #[test]
    fn class_names_round_trip() {
        for class in ResetClass::ALL {
            assert_eq!(ResetClass::parse(class.as_str()), Some(class));
        }
        assert_eq!(ResetClass::parse("nope"), None);
    }
}
