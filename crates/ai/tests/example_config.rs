//! `examples/ai-gateway.toml`'s `[ai]` section is valid, defaults to the real endpoints when
//! the base-URL variables are unset, and `smart` falls back from OpenAI to the other two.

use holdfast_core::config::ai::{validate, Provider, RawAiConfig};

fn load(vars: &[(&str, &str)]) -> holdfast_core::config::ai::AiConfig {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/ai-gateway.toml"
    );
    let mut text = std::fs::read_to_string(path).unwrap();
    for name in [
        "OPENAI_BASE_URL",
        "ANTHROPIC_BASE_URL",
        "GEMINI_BASE_URL",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
    ] {
        let value = vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .unwrap_or("");
        text = text.replace(&format!("${{{name}}}"), value);
    }
    let file: toml::Table = toml::from_str(&text).unwrap();
    let raw: RawAiConfig = file["ai"].clone().try_into().unwrap();
    validate(&raw).unwrap()
}

#[test]
fn unset_variables_mean_public_endpoints() {
    let cfg = load(&[]);
    let d = |m: &str| cfg.models[m].deployments[0].clone();
    assert_eq!(d("gpt-4o-mini").base_url, "https://api.openai.com/v1");
    assert_eq!(d("claude-3-5-haiku").base_url, "https://api.anthropic.com");
    assert_eq!(d("claude-3-5-haiku").provider, Provider::Anthropic);
    assert_eq!(
        d("gemini-1.5-flash").base_url,
        "https://generativelanguage.googleapis.com"
    );
    assert_eq!(
        cfg.models["smart"].fallbacks,
        vec!["claude-3-5-haiku", "gemini-1.5-flash"]
    );
    assert_eq!(cfg.prompts["sentiment"].variables, vec!["text"]);
}

#[test]
fn variables_set_base_urls_and_keys() {
    let cfg = load(&[
        ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/"),
        ("OPENAI_API_KEY", "sk-1"),
    ]);
    let d = &cfg.models["smart"].deployments[0];
    assert_eq!(d.base_url, "http://127.0.0.1:9/v1");
    assert_eq!(d.api_key, "sk-1");
}
