//! The `[ai]` section: providers, deployments, model names and aliases, prices, prompt APIs.
//! Owned by the AI gateway work; see `crates/ai`.

use serde::Deserialize;

/// `[ai]` as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAiConfig {}

/// `[ai]` after validation.
#[derive(Debug, Clone, Default)]
pub struct AiConfig {}

/// Validate `[ai]`. Key paths in errors start with `ai.` (e.g. `ai.models.smart.deployments[1]`).
pub fn validate(raw: &RawAiConfig) -> Result<AiConfig, Vec<super::ConfigError>> {
    let RawAiConfig {} = raw;
    Ok(AiConfig {})
}
