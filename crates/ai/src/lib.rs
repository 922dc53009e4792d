//! The AI gateway: one OpenAI-compatible API over many LLM providers (adapters, SSE translation, token and cost accounting).
//!
//! [`AiPluginFactory`] registers the route handler `ai` when the config has an `[ai]`
//! section; routes with `handler = "ai"` then serve `/v1/chat/completions`, `/v1/messages`,
//! `/v1/embeddings`, `/v1/models` and `/apis/NAME`. See `docs/AI.md`.

pub mod adapters;
pub mod balancer;
pub mod client;
pub mod engine;
pub mod error;
pub mod handler;
pub mod messages;
pub mod prompts;
pub mod retry_after;
pub mod standalone;
pub mod stream;
pub mod stream_out;
pub mod usage;

use std::sync::Arc;

use holdfast_core::config::{ai::AiConfig, Config};
use holdfast_proxy::plugin::{PluginFactory, Plugins};

pub use engine::Gateway;
pub use error::AiError;
pub use handler::AiHandler;

/// The handler name routes use: `handler = "ai"`.
pub const HANDLER_NAME: &str = "ai";

/// Builds the `ai` handler from `[ai]`. The outbound connection pool is shared across
/// reloads; deployment state (cooldowns, latency) starts fresh with each config.
#[derive(Clone, Default)]
pub struct AiPluginFactory {
    upstream: client::Upstream,
}

impl AiPluginFactory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The handler for one validated `[ai]` section.
    pub fn handler(&self, config: AiConfig) -> AiHandler {
        AiHandler {
            gateway: Arc::new(Gateway::new(config, self.upstream.clone())),
        }
    }
}

impl PluginFactory for AiPluginFactory {
    fn build(&self, config: &Config) -> Result<Plugins, String> {
        let mut plugins = Plugins::default();
        if let Some(ai) = &config.ai {
            plugins
                .handlers
                .insert(HANDLER_NAME.to_string(), Arc::new(self.handler(ai.clone())));
        }
        Ok(plugins)
    }
}

/// A fresh random id: `prefix` and 24 letters and digits (`chatcmpl-…`, `msg_…`, `call_…`).
pub(crate) fn new_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    id.extend(std::iter::repeat_with(fastrand::alphanumeric).take(24));
    id
}

/// Seconds since the Unix epoch (for `created` fields).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
