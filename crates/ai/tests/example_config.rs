//! `examples/ai-gateway.toml` loads through the real config loader: the base URLs default to
//! the public endpoints when their variables are unset, follow them when set, `smart` falls
//! back from OpenAI to the other two, and the `ai` routes are there.

use std::collections::HashMap;

use holdfast_core::config::ai::Provider;
use holdfast_core::config::{parse, Config, RouteTarget};

fn load(vars: &[(&str, &str)]) -> Config {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/ai-gateway.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse(&text, path, |name| env.get(name).cloned()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn unset_variables_mean_public_endpoints() {
    let config = load(&[]);
    let cfg = config.ai.as_ref().expect("[ai] present");
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
    let handlers: Vec<(&str, bool)> = config
        .routes
        .iter()
        .map(|r| {
            (
                r.path_prefix.as_str(),
                matches!(&r.target, RouteTarget::Handler(h) if h == "ai"),
            )
        })
        .collect();
    assert_eq!(handlers, vec![("/v1", true), ("/apis", true)]);
}

#[test]
fn variables_set_base_urls_and_keys() {
    let config = load(&[
        ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/"),
        ("OPENAI_API_KEY", "sk-1"),
    ]);
    let d = &config.ai.as_ref().unwrap().models["smart"].deployments[0];
    assert_eq!(d.base_url, "http://127.0.0.1:9/v1");
    assert_eq!(d.api_key, "sk-1");
}

mod common;

use holdfast_mock_providers::{Behavior, MockProvider};

/// The issue's `smart`: with OpenAI answering 500 and Anthropic 503, Gemini answers.
#[tokio::test]
async fn smart_falls_back_from_openai_to_anthropic_to_gemini() {
    for stream in [false, true] {
        let (o, a, g) = (
            MockProvider::start().await.unwrap(),
            MockProvider::start().await.unwrap(),
            MockProvider::start().await.unwrap(),
        );
        o.push(vec![Behavior::ServerError; 4]);
        a.push(vec![Behavior::Status(503); 4]);
        let (ou, au, gu) = (format!("{}/v1", o.url()), a.url(), g.url());
        let config = load(&[
            ("OPENAI_BASE_URL", &ou),
            ("ANTHROPIC_BASE_URL", &au),
            ("GEMINI_BASE_URL", &gu),
        ]);
        let gw = common::start_config(config.ai.unwrap()).await;
        let r = common::post(
            &gw,
            "/v1/chat/completions",
            serde_json::json!({"model": "smart", "stream": stream,
                "messages": [{"role": "user", "content": "Hello"}]}),
        )
        .await;
        assert_eq!(r.status, 200, "stream={stream}: {}", r.body);
        assert!(r.body.contains("gemini"), "{}", r.body);
        assert_eq!(
            r.headers["x-holdfast-deployment"],
            "gemini/gemini-1.5-flash"
        );
        assert!(o.request_count() >= 1 && a.request_count() >= 1);
        assert_eq!(g.request_count(), 1);
        let ai = gw.last_extra().await.ai.unwrap();
        assert!(ai.attempts <= 4, "{} attempts", ai.attempts);
    }
}
