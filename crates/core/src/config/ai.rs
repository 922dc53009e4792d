//! The `[ai]` section: providers, deployments, model names and aliases, prices, prompt APIs.
//! Owned by the AI gateway work; see `crates/ai`.
//!
//! ```toml
//! [ai]
//! ttft_timeout_ms = 30000
//!
//! [ai.models.smart]
//! strategy = "ordered"              # ordered | weighted | least_busy | lowest_latency
//! fallbacks = ["claude-3-5-haiku"]  # other model names tried when every deployment failed
//! [[ai.models.smart.deployments]]
//! provider = "openai"               # openai | azure | anthropic | gemini | ollama
//! model = "gpt-4o-mini"
//! base_url = "${OPENAI_BASE_URL}"   # empty: the provider's public endpoint
//! api_key = "${OPENAI_API_KEY}"
//!
//! [ai.prices.gpt-4o-mini]
//! input_per_mtok = 0.15
//! output_per_mtok = 0.60
//!
//! [ai.prompts.sentiment]
//! model = "smart"
//! template = "Sentiment of: {{text}}"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `[ai]` as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAiConfig {
    /// Whole-call limit for one attempt, in milliseconds (default 120000).
    pub total_timeout_ms: Option<u64>,
    /// Streams: limit until the first token, ms (default 30000). Non-streaming calls are
    /// bounded by `total_timeout_ms` (their head only comes after the whole generation).
    pub ttft_timeout_ms: Option<u64>,
    /// Longest silence between two stream chunks, ms (default 30000).
    pub idle_timeout_ms: Option<u64>,
    /// Attempts per request across retries, deployments and fallbacks (default 4); every
    /// model of a fallback chain still gets one attempt when this runs out.
    pub max_attempts: Option<u32>,
    /// Wait before asking the same deployment again when the provider named no wait, ms
    /// (default 100).
    pub retry_backoff_ms: Option<u64>,
    /// A `Retry-After` longer than this moves on to the next deployment instead, ms
    /// (default 2000).
    pub max_retry_wait_ms: Option<u64>,
    /// Consecutive failures that put a deployment into cooldown (default 3).
    pub cooldown_failures: Option<u32>,
    /// How long a deployment stays in cooldown, ms (default 30000).
    pub cooldown_ms: Option<u64>,
    /// Use the built-in price table for models not listed in `prices` (default true).
    pub default_prices: Option<bool>,
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    #[serde(default)]
    pub prices: BTreeMap<String, RawPrice>,
    #[serde(default)]
    pub prompts: BTreeMap<String, RawPrompt>,
}

/// `[ai.models.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub strategy: Option<String>,
    #[serde(default)]
    pub deployments: Vec<RawDeployment>,
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

/// `[[ai.models.NAME.deployments]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    pub provider: String,
    /// The provider's model name (for Azure: the deployment name).
    pub model: String,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    /// Azure `api-version` (default `2024-10-21`).
    pub api_version: Option<String>,
    pub weight: Option<u32>,
    /// Shown in logs (default `provider/model`).
    pub name: Option<String>,
}

/// `[ai.prices.MODEL]`: USD per million tokens.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// `[ai.prompts.NAME]`: `POST /apis/NAME` fills `template` and calls `model`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrompt {
    pub model: String,
    pub template: String,
    pub system: Option<String>,
    /// Ask for a JSON object and return it parsed (default true).
    pub json: Option<bool>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
}

/// A provider's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// OpenAI and every OpenAI-compatible server (Mistral, Groq, vLLM, Ollama `/v1`…).
    OpenAi,
    Azure,
    Anthropic,
    Gemini,
    /// Ollama's native `/api/chat`.
    Ollama,
}

impl Provider {
    /// Names accepted in `provider = "…"`.
    pub const NAMES: &'static str = "openai, azure, anthropic, gemini, ollama";

    pub fn parse(name: &str) -> Option<Provider> {
        Some(match name {
            "openai" => Provider::OpenAi,
            "azure" => Provider::Azure,
            "anthropic" => Provider::Anthropic,
            "gemini" => Provider::Gemini,
            "ollama" => Provider::Ollama,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Azure => "azure",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::Ollama => "ollama",
        }
    }

    /// The public endpoint used when `base_url` is empty (Azure has none).
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            Provider::OpenAi => Some("https://api.openai.com/v1"),
            Provider::Azure => None,
            Provider::Anthropic => Some("https://api.anthropic.com"),
            Provider::Gemini => Some("https://generativelanguage.googleapis.com"),
            Provider::Ollama => Some("http://127.0.0.1:11434"),
        }
    }
}

/// How a model picks among its deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// In the order written; later ones only when earlier ones fail.
    Ordered,
    /// Random, in proportion to `weight`.
    Weighted,
    /// Fewest requests in flight.
    LeastBusy,
    /// Lowest moving average (EWMA) of latency.
    LowestLatency,
}

impl Strategy {
    pub fn parse(name: &str) -> Option<Strategy> {
        Some(match name {
            "ordered" => Strategy::Ordered,
            "weighted" => Strategy::Weighted,
            "least_busy" => Strategy::LeastBusy,
            "lowest_latency" => Strategy::LowestLatency,
            _ => return None,
        })
    }
}

/// One deployment after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub name: String,
    pub provider: Provider,
    pub model: String,
    /// Without a trailing `/`.
    pub base_url: String,
    pub api_key: String,
    pub api_version: String,
    pub weight: u32,
}

/// A model name after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub strategy: Strategy,
    pub deployments: Vec<Deployment>,
    pub fallbacks: Vec<String>,
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// A prompt API after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptApi {
    pub model: String,
    pub template: String,
    pub system: Option<String>,
    /// Variable names in the template, in order of first use.
    pub variables: Vec<String>,
    pub json: bool,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
}

/// `[ai]` after validation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AiConfig {
    pub total_timeout: Duration,
    pub ttft_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    pub max_retry_wait: Duration,
    pub cooldown_failures: u32,
    pub cooldown: Duration,
    pub models: BTreeMap<String, Model>,
    /// Prices by provider model name; the built-in defaults are merged in unless disabled.
    pub prices: BTreeMap<String, Price>,
    pub prompts: BTreeMap<String, PromptApi>,
}

impl AiConfig {
    /// The price of a provider model: exact name, else the longest listed prefix
    /// (`claude-3-5-haiku-20241022` uses `claude-3-5-haiku`).
    pub fn price(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.prices.get(model) {
            return Some(*p);
        }
        self.prices
            .iter()
            .filter(|(name, _)| model.starts_with(name.as_str()))
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| *p)
    }
}

/// Built-in prices (USD per million tokens, input/output); override in `[ai.prices]`.
pub const DEFAULT_PRICES: &[(&str, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1", 2.00, 8.00),
    ("text-embedding-3-small", 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.0),
    ("claude-3-5-haiku", 0.80, 4.00),
    ("claude-3-5-sonnet", 3.00, 15.00),
    ("claude-sonnet-4", 3.00, 15.00),
    ("gemini-1.5-flash", 0.075, 0.30),
    ("gemini-1.5-pro", 1.25, 5.00),
    ("gemini-2.0-flash", 0.10, 0.40),
];

/// Validate `[ai]`. Key paths in errors start with `ai.` (e.g. `ai.models.smart.deployments[1]`).
pub fn validate(raw: &RawAiConfig) -> Result<AiConfig, Vec<super::ConfigError>> {
    let mut errors = Vec::new();
    let ms = |v: Option<u64>, default: u64, key: &str, errors: &mut Vec<ConfigError>| {
        let v = v.unwrap_or(default);
        if v == 0 {
            errors.push(ConfigError::new(
                format!("ai.{key}"),
                "must be greater than 0",
                format!("remove it to use the default ({default}) or set a positive number"),
            ));
        }
        Duration::from_millis(v)
    };
    let total_timeout = ms(
        raw.total_timeout_ms,
        120_000,
        "total_timeout_ms",
        &mut errors,
    );
    let ttft_timeout = ms(raw.ttft_timeout_ms, 30_000, "ttft_timeout_ms", &mut errors);
    let idle_timeout = ms(raw.idle_timeout_ms, 30_000, "idle_timeout_ms", &mut errors);
    let cooldown = ms(raw.cooldown_ms, 30_000, "cooldown_ms", &mut errors);
    let max_attempts = raw.max_attempts.unwrap_or(4);
    if max_attempts == 0 {
        errors.push(ConfigError::new(
            "ai.max_attempts",
            "must be at least 1",
            "set 1 for no retries",
        ));
    }
    let cooldown_failures = raw.cooldown_failures.unwrap_or(3);
    if cooldown_failures == 0 {
        errors.push(ConfigError::new(
            "ai.cooldown_failures",
            "must be at least 1",
            "set the number of consecutive failures that start a cooldown (default 3)",
        ));
    }

    let mut models = BTreeMap::new();
    for (name, m) in &raw.models {
        if let Some(model) = validate_model(name, m, raw, &mut errors) {
            models.insert(name.clone(), model);
        }
    }

    let mut prices = BTreeMap::new();
    if raw.default_prices.unwrap_or(true) {
        for (name, input, output) in DEFAULT_PRICES {
            prices.insert(
                (*name).to_string(),
                Price {
                    input_per_mtok: *input,
                    output_per_mtok: *output,
                },
            );
        }
    }
    for (name, p) in &raw.prices {
        for (field, v) in [
            ("input_per_mtok", p.input_per_mtok),
            ("output_per_mtok", p.output_per_mtok),
        ] {
            if !v.is_finite() || v < 0.0 {
                errors.push(ConfigError::new(
                    format!("ai.prices.{name}.{field}"),
                    format!("must be a non-negative number of USD per million tokens, got {v}"),
                    "write the provider's list price, e.g. 0.15",
                ));
            }
        }
        prices.insert(
            name.clone(),
            Price {
                input_per_mtok: p.input_per_mtok,
                output_per_mtok: p.output_per_mtok,
            },
        );
    }

    let mut prompts = BTreeMap::new();
    for (name, p) in &raw.prompts {
        let key = format!("ai.prompts.{name}");
        if !raw.models.contains_key(&p.model) {
            errors.push(ConfigError::new(
                format!("{key}.model"),
                format!("names the model `{}`, which is not in [ai.models]", p.model),
                format!("use one of: {}", model_names(raw)),
            ));
        }
        match template_variables(&p.template) {
            Ok(variables) => {
                prompts.insert(
                    name.clone(),
                    PromptApi {
                        model: p.model.clone(),
                        template: p.template.clone(),
                        system: p.system.clone(),
                        variables,
                        json: p.json.unwrap_or(true),
                        max_tokens: p.max_tokens,
                        temperature: p.temperature,
                    },
                );
            }
            Err(message) => errors.push(ConfigError::new(
                format!("{key}.template"),
                message,
                "write variables as {{name}} with letters, digits or _",
            )),
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(AiConfig {
        total_timeout,
        ttft_timeout,
        idle_timeout,
        max_attempts,
        retry_backoff: Duration::from_millis(raw.retry_backoff_ms.unwrap_or(100)),
        max_retry_wait: Duration::from_millis(raw.max_retry_wait_ms.unwrap_or(2_000)),
        cooldown_failures,
        cooldown,
        models,
        prices,
        prompts,
    })
}

fn model_names(raw: &RawAiConfig) -> String {
    let names: Vec<&str> = raw.models.keys().map(String::as_str).collect();
    if names.is_empty() {
        "(none: add an [ai.models.NAME] section)".to_string()
    } else {
        names.join(", ")
    }
}

fn validate_model(
    name: &str,
    m: &RawModel,
    raw: &RawAiConfig,
    errors: &mut Vec<ConfigError>,
) -> Option<Model> {
    let key = format!("ai.models.{name}");
    let before = errors.len();
    let strategy = match m.strategy.as_deref() {
        None => Strategy::Ordered,
        Some(s) => Strategy::parse(s).unwrap_or_else(|| {
            errors.push(ConfigError::new(
                format!("{key}.strategy"),
                format!("unknown strategy `{s}`"),
                "use ordered, weighted, least_busy or lowest_latency",
            ));
            Strategy::Ordered
        }),
    };
    if m.deployments.is_empty() {
        errors.push(ConfigError::new(
            format!("{key}.deployments"),
            "has no deployments",
            format!("add [[{key}.deployments]] with provider and model"),
        ));
    }
    let mut deployments = Vec::new();
    for (i, d) in m.deployments.iter().enumerate() {
        let dkey = format!("{key}.deployments[{i}]");
        let Some(provider) = Provider::parse(&d.provider) else {
            errors.push(ConfigError::new(
                format!("{dkey}.provider"),
                format!("unknown provider `{}`", d.provider),
                format!("use one of: {}", Provider::NAMES),
            ));
            continue;
        };
        if d.model.trim().is_empty() {
            errors.push(ConfigError::new(
                format!("{dkey}.model"),
                "is empty",
                "write the provider's model name (for azure: the deployment name)",
            ));
        }
        let written = d.base_url.as_deref().unwrap_or("").trim();
        let base_url = if written.is_empty() {
            match provider.default_base_url() {
                Some(u) => u.to_string(),
                None => {
                    errors.push(ConfigError::new(
                        format!("{dkey}.base_url"),
                        "is required for azure",
                        "set it to https://RESOURCE.openai.azure.com",
                    ));
                    String::new()
                }
            }
        } else if written.starts_with("http://") || written.starts_with("https://") {
            written.trim_end_matches('/').to_string()
        } else {
            errors.push(ConfigError::new(
                format!("{dkey}.base_url"),
                format!("`{written}` is not an http:// or https:// URL"),
                "write e.g. https://api.openai.com/v1, or leave it empty for the default",
            ));
            String::new()
        };
        let weight = d.weight.unwrap_or(1);
        if weight == 0 {
            errors.push(ConfigError::new(
                format!("{dkey}.weight"),
                "must be at least 1",
                "remove the deployment to stop using it",
            ));
        }
        deployments.push(Deployment {
            name: d
                .name
                .clone()
                .unwrap_or_else(|| format!("{}/{}", provider.as_str(), d.model)),
            provider,
            model: d.model.clone(),
            base_url,
            api_key: d.api_key.clone().unwrap_or_default(),
            api_version: d
                .api_version
                .clone()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "2024-10-21".to_string()),
            weight,
        });
    }
    for (i, f) in m.fallbacks.iter().enumerate() {
        if f == name || !raw.models.contains_key(f) {
            errors.push(ConfigError::new(
                format!("{key}.fallbacks[{i}]"),
                format!("`{f}` is not another model in [ai.models]"),
                format!("use one of: {}", model_names(raw)),
            ));
        }
    }
    (errors.len() == before).then(|| Model {
        strategy,
        deployments,
        fallbacks: m.fallbacks.clone(),
    })
}

/// The `{{name}}` variables of a template, in order of first use.
pub fn template_variables(template: &str) -> Result<Vec<String>, String> {
    let mut vars: Vec<String> = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("has `{{` without a closing `}}`".to_string());
        };
        let name = after[..end].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("has an invalid variable name `{name}`"));
        }
        if !vars.iter().any(|v| v == name) {
            vars.push(name.to_string());
        }
        rest = &after[end + 2..];
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AiConfig, Vec<ConfigError>> {
        let raw: RawAiConfig = toml::from_str(text).expect("toml parses");
        validate(&raw)
    }

    #[test]
    fn empty_base_url_uses_provider_default_and_defaults_apply() {
        let cfg = parse(
            r#"
            [models.a]
            [[models.a.deployments]]
            provider = "anthropic"
            model = "claude-3-5-haiku-20241022"
            base_url = ""
            "#,
        )
        .unwrap();
        let d = &cfg.models["a"].deployments[0];
        assert_eq!(d.base_url, "https://api.anthropic.com");
        assert_eq!(d.name, "anthropic/claude-3-5-haiku-20241022");
        assert_eq!(cfg.max_attempts, 4);
        let p = cfg.price("claude-3-5-haiku-20241022").unwrap();
        assert_eq!(p.input_per_mtok, 0.80);
    }

    #[test]
    fn errors_name_the_key() {
        let errs = parse(
            r#"
            [models.a]
            strategy = "fastest"
            fallbacks = ["nope"]
            [[models.a.deployments]]
            provider = "foo"
            model = "x"
            [[models.a.deployments]]
            provider = "azure"
            model = "x"
            [prompts.p]
            model = "missing"
            template = "{{ bad-name }}"
            "#,
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "ai.models.a.strategy",
            "ai.models.a.deployments[0].provider",
            "ai.models.a.deployments[1].base_url",
            "ai.models.a.fallbacks[0]",
            "ai.prompts.p.model",
            "ai.prompts.p.template",
        ] {
            assert!(keys.contains(&k), "missing {k} in {keys:?}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<RawAiConfig, _> = toml::from_str("[models.a]\nbogus = 1\n");
        assert!(r.is_err());
    }

    #[test]
    fn template_variables_in_order() {
        assert_eq!(
            template_variables("{{a}} and {{ b }} and {{a}}").unwrap(),
            vec!["a", "b"]
        );
        assert!(template_variables("{{a").is_err());
    }
}
