//! Audit 9 fixes, end to end through the `ai` handler against the mock providers:
//! Gemini tool schemas in `parametersJsonSchema`, provider error `code`/`param`/`type`
//! passed through without deployment names, Azure cost by the served model, and multi-part
//! text kept apart.

mod common;

use common::*;
use holdfast_ai::engine::{Attempts, Gateway as Engine};
use holdfast_ai::usage::{self, Usage};
use holdfast_core::config::ai::{validate, RawAiConfig};
use holdfast_mock_providers::{Behavior, MockOptions, MockProvider};
use serde_json::{json, Value};

/// A tool schema as OpenAI clients (and Pydantic / Zod) write it: keywords Gemini's
/// OpenAPI-subset `parameters` refuses.
fn strict_schema() -> Value {
    json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"const": "celsius"},
            "tags": {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}}},
        "required": ["location"], "additionalProperties": false})
}

fn strict_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": strict_schema()}}])
}

#[tokio::test]
async fn gemini_tools_send_full_json_schema_as_parameters_json_schema() {
    for stream in [false, true] {
        let (mock, gw) = setup("gemini").await;
        let r = post(
            &gw,
            "/v1/chat/completions",
            json!({"model": "m", "stream": stream, "tools": strict_tool(),
                "messages": [{"role": "user", "content": "weather in Paris?"}]}),
        )
        .await;
        assert_eq!(r.status, 200, "stream={stream}: {}", r.body);
        if !stream {
            let call = &r.json()["choices"][0]["message"]["tool_calls"][0];
            assert_eq!(call["function"]["name"], "get_weather", "{}", r.body);
        }
        let sent = &mock.requests()[0].body;
        let decl = &sent["tools"][0]["functionDeclarations"][0];
        assert_eq!(decl["parametersJsonSchema"], strict_schema(), "{decl}");
        assert!(decl.get("parameters").is_none(), "{decl}");
    }
}

#[tokio::test]
async fn mock_gemini_refuses_json_schema_keywords_in_parameters() {
    let mock = MockProvider::start().await.unwrap();
    let url = format!(
        "{}/v1beta/models/gemini-1.5-flash:generateContent",
        mock.url()
    );
    let contents = json!([{"role": "user", "parts": [{"text": "hi"}]}]);
    let decl = |d: Value| json!({"contents": contents, "tools": [{"functionDeclarations": [d]}]});
    let r = send(
        "POST",
        &url,
        Some(decl(json!({"name": "f", "parameters": strict_schema()}))),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    assert!(r.body.contains("Unknown name"), "{}", r.body);
    let both = json!({"name": "f", "parameters": {"type": "object"},
        "parametersJsonSchema": {"type": "object"}});
    let r = send("POST", &url, Some(decl(both))).await;
    assert_eq!(r.status, 400, "{}", r.body);
    // A property *named* like a keyword is fine, and so is the OpenAPI subset.
    let ok = json!({"name": "f", "parameters": {"type": "object",
        "properties": {"const": {"type": "string"}}}});
    let r = send("POST", &url, Some(decl(ok))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = send(
        "POST",
        &url,
        Some(decl(
            json!({"name": "f", "parametersJsonSchema": strict_schema()}),
        )),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// One provider error through the gateway (non-streaming and streaming): the client's
/// OpenAI error object.
async fn provider_error(p: &str, status: u16, body: Value) -> Vec<Value> {
    let mut out = Vec::new();
    for stream in [false, true] {
        let (mock, gw) = setup(p).await;
        mock.push([Behavior::ErrorBody {
            status,
            body: body.clone(),
        }]);
        let r = post(
            &gw,
            "/v1/chat/completions",
            json!({"model": "m", "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(r.status, status, "{p} stream={stream}: {}", r.body);
        let e = r.json()["error"].clone();
        let msg = e["message"].as_str().unwrap_or_default();
        assert!(!msg.contains(upstream_model(p)), "{p}: {msg}");
        assert!(!msg.contains("deployment"), "{p}: {msg}");
        out.push(e);
    }
    out
}

#[tokio::test]
async fn openai_error_code_and_param_reach_the_client() {
    let body = json!({"error": {"message": "max ctx", "type": "invalid_request_error",
        "param": "messages", "code": "context_length_exceeded"}});
    for e in provider_error("openai", 400, body).await {
        assert_eq!(
            e,
            json!({"message": "max ctx", "type": "invalid_request_error",
                "param": "messages", "code": "context_length_exceeded"})
        );
    }
}

#[tokio::test]
async fn azure_content_filter_code_reaches_the_client() {
    let body = json!({"error": {"message": "The response was filtered", "type": null,
        "param": "prompt", "code": "content_filter", "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation"}}});
    for e in provider_error("azure", 400, body).await {
        assert_eq!(e["code"], "content_filter", "{e}");
        assert_eq!(e["param"], "prompt", "{e}");
        assert_eq!(e["type"], "invalid_request_error", "{e}");
        assert_eq!(e["message"], "The response was filtered", "{e}");
    }
    let (mock, gw) = setup("azure").await;
    mock.push([Behavior::ErrorBody {
        status: 400,
        body: json!({"error": {"message": "filtered", "code": "content_filter"}}),
    }]);
    post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(gw.last_extra().await.ai.unwrap().outcome, "content_filter");
}

#[tokio::test]
async fn anthropic_and_gemini_errors_map_to_openai_codes() {
    let body = json!({"type": "error", "error": {"type": "invalid_request_error",
        "message": "prompt is too long: 210000 tokens > 200000 maximum"}});
    for e in provider_error("anthropic", 400, body).await {
        assert_eq!(e["code"], "context_length_exceeded", "{e}");
        assert_eq!(e["type"], "invalid_request_error", "{e}");
    }
    let body = json!({"error": {"code": 400, "message": "bad field", "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "contents[0].parts", "description": "x"}]}]}});
    for e in provider_error("gemini", 400, body).await {
        assert_eq!(e["code"], "invalid_argument", "{e}");
        assert_eq!(e["param"], "contents[0].parts", "{e}");
        assert_eq!(e["message"], "bad field", "{e}");
    }
}

#[tokio::test]
async fn refused_gateway_key_does_not_pass_the_provider_code_on() {
    let body = json!({"error": {"message": "bad key", "type": "invalid_request_error",
        "param": null, "code": "invalid_api_key"}});
    let (mock, gw) = setup("openai").await;
    mock.push([Behavior::ErrorBody { status: 401, body }]);
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], Value::Null, "{}", r.body);
    assert!(!r.body.contains(upstream_model("openai")), "{}", r.body);
}

fn config(toml_text: &str) -> holdfast_core::config::ai::AiConfig {
    let raw: RawAiConfig = toml::from_str(toml_text).unwrap();
    validate(&raw).unwrap()
}

#[tokio::test]
async fn azure_calls_are_priced_by_the_model_the_answer_names() {
    let mock = MockProvider::start_with(
        "127.0.0.1:0",
        MockOptions {
            azure_model: Some("gpt-4o-mini-2024-07-18".to_string()),
            ..MockOptions::default()
        },
        true,
    )
    .await
    .unwrap();
    let cfg = config(&model("m", "azure", "prod-chat", &mock.url()));
    let engine = Engine::new(cfg.clone(), holdfast_ai::client::Upstream::new());
    let req = json!({"model": "m", "messages": [{"role": "user", "content": "hi there"}]});
    let mut attempts = Attempts::default();
    let done = engine.chat("m", &req, &mut attempts).await.unwrap();
    assert_eq!(done.body["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(
        attempts.served_model.as_deref(),
        Some("gpt-4o-mini-2024-07-18")
    );
    let u = Usage {
        input: 1_000_000,
        output: 1_000_000,
    };
    // gpt-4o-mini: $0.15 + $0.60 per million tokens.
    assert!((attempts.cost(&cfg, u) - 0.75).abs() < 1e-9);

    let mut streamed = Attempts::default();
    let open = engine
        .chat_stream(
            "m",
            &json!({"stream": true, "messages": req["messages"]}),
            &mut streamed,
        )
        .await
        .unwrap();
    drop(open);
    assert_eq!(
        streamed.served_model.as_deref(),
        Some("gpt-4o-mini-2024-07-18")
    );
}

/// The call record's cost. Needs `handler::finish_call` to price by `Attempts::cost`
/// (handler.rs is being changed elsewhere): un-ignore once it does.
#[tokio::test]
async fn azure_call_record_has_the_served_models_cost() {
    for stream in [false, true] {
        let mock = MockProvider::start_with(
            "127.0.0.1:0",
            MockOptions {
                azure_model: Some("gpt-4o-mini-2024-07-18".to_string()),
                ..MockOptions::default()
            },
            true,
        )
        .await
        .unwrap();
        let gw = start(&model("m", "azure", "prod-chat", &mock.url())).await;
        let r = post(
            &gw,
            "/v1/chat/completions",
            json!({"model": "m", "stream": stream,
                "messages": [{"role": "user", "content": "hi there"}]}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let ai = gw.last_extra().await.ai.unwrap();
        assert!(ai.cost_usd > 0.0, "stream={stream}: {ai:?}");
    }
}

#[test]
fn deployment_cost_falls_back_to_the_configured_model() {
    let cfg = config(&model(
        "m",
        "azure",
        "gpt-4o-mini",
        "https://x.openai.azure.com",
    ));
    let d = &cfg.models["m"].deployments[0];
    let u = Usage {
        input: 1_000_000,
        output: 0,
    };
    assert!((usage::deployment_cost(&cfg, d, None, u) - 0.15).abs() < 1e-9);
    // The served model wins over the deployment's name.
    assert!((usage::deployment_cost(&cfg, d, Some("gpt-4o"), u) - 2.50).abs() < 1e-9);
    // An unpriced served model falls back to the configured one.
    assert!((usage::deployment_cost(&cfg, d, Some("mystery"), u) - 0.15).abs() < 1e-9);
    let cfg = config(&model(
        "m",
        "azure",
        "prod-chat",
        "https://x.openai.azure.com",
    ));
    let d = &cfg.models["m"].deployments[0];
    assert_eq!(usage::deployment_cost(&cfg, d, None, u), 0.0);
}

/// Multi-part text to `p`: what the mock received.
async fn sent_body(p: &str, path: &str, body: Value) -> Value {
    let (mock, gw) = setup(p).await;
    let r = post(&gw, path, body).await;
    assert_eq!(r.status, 200, "{p}: {}", r.body);
    mock.requests()[0].body.clone()
}

fn two_parts(a: &str, b: &str) -> Value {
    json!([{"type": "text", "text": a}, {"type": "text", "text": b}])
}

fn tool_turns() -> Value {
    json!([
        {"role": "system", "content": two_parts("Be brief.", "Answer in French.")},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": two_parts("r1", "r2")},
    ])
}

#[tokio::test]
async fn multi_part_text_is_not_run_together() {
    let req = json!({"model": "m", "messages": tool_turns()});
    let sent = sent_body("anthropic", "/v1/chat/completions", req.clone()).await;
    assert_eq!(sent["system"], "Be brief.\nAnswer in French.", "{sent}");
    let result = &sent["messages"][2]["content"][0];
    assert_eq!(result["type"], "tool_result", "{sent}");
    assert_eq!(result["content"], "r1\nr2", "{sent}");

    let sent = sent_body("gemini", "/v1/chat/completions", req.clone()).await;
    assert_eq!(
        sent["systemInstruction"]["parts"],
        json!([{"text": "Be brief."}, {"text": "Answer in French."}]),
        "{sent}"
    );
    let resp = &sent["contents"][2]["parts"][0]["functionResponse"]["response"];
    assert_eq!(resp["content"], "r1\nr2", "{sent}");

    let sent = sent_body("ollama", "/v1/chat/completions", req).await;
    assert_eq!(
        sent["messages"][0]["content"],
        "Be brief.\nAnswer in French."
    );
    assert_eq!(sent["messages"][3]["content"], "r1\nr2", "{sent}");

    // `/v1/messages` system blocks and multi-block tool results, to an OpenAI deployment.
    let sent = sent_body(
        "openai",
        "/v1/messages",
        json!({"model": "m", "max_tokens": 50,
            "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1",
                    "name": "get_weather", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                    "content": [{"type": "text", "text": "r1"}, {"type": "text", "text": "r2"}]}]}]}),
    )
    .await;
    assert_eq!(sent["messages"][0]["content"], "A\nB", "{sent}");
    assert_eq!(sent["messages"][3]["content"], "r1\nr2", "{sent}");
}
