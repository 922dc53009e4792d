//! Token accounting: usage from the provider when it reports it, else counted locally with
//! `tiktoken-rs` (marked as estimated); cost from the configured price table.

use std::collections::HashSet;
use std::sync::Mutex;

use holdfast_core::config::ai::{AiConfig, Deployment, Price};
use serde_json::Value;

/// Input and output tokens of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
}

/// Count tokens of `text` with the tokenizer that fits `model` (o200k for gpt-4o / o-series,
/// cl100k otherwise: a fair estimate for other providers too).
pub fn count_tokens(model: &str, text: &str) -> u64 {
    let bpe =
        if model.starts_with("gpt-4o") || model.starts_with("gpt-4.1") || model.starts_with('o') {
            tiktoken_rs::o200k_base_singleton()
        } else {
            tiktoken_rs::cl100k_base_singleton()
        };
    bpe.encode_with_special_tokens(text).len() as u64
}

/// All the text of an OpenAI chat request's messages (and tool definitions), for estimates.
pub fn request_text(body: &Value) -> String {
    let mut out = String::new();
    if let Some(msgs) = body["messages"].as_array() {
        for m in msgs {
            match &m["content"] {
                Value::String(s) => out.push_str(s),
                Value::Array(parts) => {
                    for p in parts {
                        if let Some(t) = p["text"].as_str() {
                            out.push_str(t);
                        }
                    }
                }
                _ => {}
            }
            out.push('\n');
        }
    }
    if let Some(tools) = body.get("tools") {
        out.push_str(&tools.to_string());
    }
    out
}

/// Estimate usage of a call whose provider reported none.
pub fn estimate(model: &str, request: &Value, output_text: &str) -> Usage {
    Usage {
        input: estimate_input(model, request),
        output: count_tokens(model, output_text),
    }
}

/// Estimated input tokens of a chat request.
pub fn estimate_input(model: &str, request: &Value) -> u64 {
    // OpenAI's documented overhead: about 3 tokens per message plus 3 for the reply.
    let messages = body_messages(request) as u64;
    count_tokens(model, &request_text(request)) + 3 * messages + 3
}

fn body_messages(body: &Value) -> usize {
    body["messages"].as_array().map(Vec::len).unwrap_or(0)
}

/// Cost in USD of `usage` on the provider model `model`; 0 when the price is unknown (with
/// a one-time warning for that model, so a missing price is not silent).
pub fn cost(config: &AiConfig, model: &str, usage: Usage) -> f64 {
    match config.price(model) {
        Some(p) => priced(p, usage),
        None => {
            warn_unpriced(model, model);
            0.0
        }
    }
}

/// Cost in USD of a call served by deployment `d`: priced by the model the provider's
/// answer names (`served`, e.g. Azure's `gpt-4o-2024-08-06`), else by the deployment's
/// configured `model` (for Azure that is the Azure deployment name, which rarely has a
/// price). 0, with a one-time warning per deployment, when neither has a price.
pub fn deployment_cost(
    config: &AiConfig,
    d: &Deployment,
    served: Option<&str>,
    usage: Usage,
) -> f64 {
    let price = served
        .filter(|m| !m.is_empty())
        .and_then(|m| config.price(m))
        .or_else(|| config.price(&d.model));
    match price {
        Some(p) => priced(p, usage),
        None => {
            warn_unpriced(&d.name, served.unwrap_or(&d.model));
            0.0
        }
    }
}

fn priced(p: Price, usage: Usage) -> f64 {
    (usage.input as f64 * p.input_per_mtok + usage.output as f64 * p.output_per_mtok) / 1_000_000.0
}

/// Warn once per `key` (a model or deployment) that its calls are counted as $0.
fn warn_unpriced(key: &str, model: &str) {
    static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if warned
        .get_or_insert_with(HashSet::new)
        .insert(key.to_string())
    {
        tracing::warn!(
            key,
            model,
            "no price for this model: its calls are recorded with cost 0; add it to [ai.prices]"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_known_text() {
        // "hello world" is two tokens in both cl100k and o200k.
        assert_eq!(count_tokens("gpt-4o-mini", "hello world"), 2);
        assert_eq!(count_tokens("claude-3-5-haiku", "hello world"), 2);
        assert!(count_tokens("x", "a much longer sentence with several words") > 5);
    }

    #[test]
    fn cost_uses_prefix_price() {
        let raw: holdfast_core::config::ai::RawAiConfig = Default::default();
        let cfg = holdfast_core::config::ai::validate(&raw).unwrap();
        let c = cost(
            &cfg,
            "gpt-4o-mini-2024-07-18",
            Usage {
                input: 1_000_000,
                output: 1_000_000,
            },
        );
        assert!((c - 0.75).abs() < 1e-9, "{c}");
        assert_eq!(
            cost(
                &cfg,
                "unknown-model",
                Usage {
                    input: 5,
                    output: 5
                }
            ),
            0.0
        );
    }
}
