//! The client-facing surface: answer ids and `model`, request validation, `/v1/models/{id}`,
//! the `estimated` usage marker, error texts, and accounting of prompt APIs.

mod common;

use std::collections::HashSet;

use common::*;
use holdfast_mock_providers::{Behavior, MockProvider};
use serde_json::{json, Value};

fn hi(stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn answers_have_unique_chatcmpl_ids_and_the_same_model_streamed_or_not() {
    for p in PROVIDERS {
        let (_mock, gw) = setup(p).await;
        let mut ids = HashSet::new();
        for _ in 0..2 {
            let r = post(&gw, "/v1/chat/completions", hi(false)).await;
            assert_eq!(r.status, 200, "{p}: {}", r.body);
            let id = r.json()["id"].as_str().unwrap().to_string();
            assert!(id.starts_with("chatcmpl-") && id.len() > 12, "{p}: id {id}");
            ids.insert(id);
        }
        let whole = post(&gw, "/v1/chat/completions", hi(false)).await.json();
        let streamed = post(&gw, "/v1/chat/completions", hi(true)).await;
        let (chunks, done) = streamed.chunks();
        assert!(done, "{p}");
        // One rule for both: the provider model that served the answer.
        assert_eq!(whole["model"], upstream_model(p), "{p}");
        for c in &chunks {
            assert_eq!(c["model"], whole["model"], "{p}: {c}");
        }
        if p != "openai" && p != "azure" {
            // The mock's OpenAI answers carry a fixed id; our own ids must be unique.
            assert_eq!(ids.len(), 2, "{p}: ids repeat: {ids:?}");
        }

        // The Anthropic entry follows the same rule.
        let m = json!({"model": "m", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}]});
        let r = post(&gw, "/v1/messages", m.clone()).await;
        assert_eq!(r.json()["model"], upstream_model(p), "{p}");
        assert!(r.json()["id"].as_str().unwrap().starts_with("msg_"));
        let mut s = m;
        s["stream"] = json!(true);
        let r = post(&gw, "/v1/messages", s).await;
        let start = r
            .events()
            .into_iter()
            .find(|(e, _)| e == "message_start")
            .unwrap();
        let start: Value = serde_json::from_str(&start.1).unwrap();
        assert_eq!(start["message"]["model"], upstream_model(p), "{p}");
    }
}

#[tokio::test]
async fn tool_call_ids_are_unique_across_turns() {
    for p in ["gemini", "ollama"] {
        let (_mock, gw) = setup(p).await;
        let tools = json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]);
        let mut ids = HashSet::new();
        for stream in [false, false, true, true] {
            let r = post(
                &gw,
                "/v1/chat/completions",
                json!({"model": "m", "stream": stream, "tools": tools,
                    "messages": [{"role": "user", "content": "weather?"}]}),
            )
            .await;
            assert_eq!(r.status, 200, "{p}: {}", r.body);
            let id = if stream {
                r.chunks()
                    .0
                    .iter()
                    .find_map(|c| {
                        c["choices"][0]["delta"]["tool_calls"][0]["id"]
                            .as_str()
                            .map(String::from)
                    })
                    .unwrap()
            } else {
                r.json()["choices"][0]["message"]["tool_calls"][0]["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            };
            assert!(id.starts_with("call_") && id.len() > 10, "{p}: {id}");
            ids.insert(id);
        }
        assert_eq!(ids.len(), 4, "{p}: {ids:?}");
    }
}

async fn bad(gw: &Gateway, body: Value) -> Value {
    let r = post(gw, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let e = r.json()["error"].clone();
    assert_eq!(e["type"], "invalid_request_error", "{e}");
    e
}

#[tokio::test]
async fn invalid_requests_get_a_400_naming_the_field() {
    for p in ["anthropic", "openai", "gemini"] {
        let (mock, gw) = setup(p).await;
        let user = json!([{"role": "user", "content": "hi"}]);
        for bad_max in [json!(-5), json!(0), json!("abc"), json!(1.5)] {
            let e = bad(
                &gw,
                json!({"model": "m", "max_tokens": bad_max, "messages": user}),
            )
            .await;
            assert_eq!(e["param"], "max_tokens", "{p}: {e}");
            assert!(e["message"].as_str().unwrap().contains("max_tokens"));
        }
        let e = bad(
            &gw,
            json!({"model": "m", "max_completion_tokens": -1, "messages": user}),
        )
        .await;
        assert_eq!(e["param"], "max_completion_tokens");
        let e = bad(&gw, json!({"model": "m", "messages": []})).await;
        assert_eq!(e["param"], "messages");
        assert_eq!(e["code"], "empty_array");
        let e = bad(
            &gw,
            json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}]}),
        )
        .await;
        assert_eq!(e["param"], "messages[1].role");
        assert!(e["message"].as_str().unwrap().contains("'wizard'"), "{e}");
        let e = bad(&gw, json!({"model": "m", "messages": [{"content": "b"}]})).await;
        assert_eq!(e["param"], "messages[0].role");
        let e = bad(
            &gw,
            json!({"model": "m", "stream": "yes", "messages": user}),
        )
        .await;
        assert_eq!(e["param"], "stream");
        assert_eq!(mock.request_count(), 0, "{p}: nothing bad was forwarded");
    }
    // The Anthropic entry names its fields too.
    let (mock, gw) = setup("openai").await;
    for (body, param) in [
        (
            json!({"model": "m", "max_tokens": -5, "messages": [{"role": "user", "content": "a"}]}),
            "max_tokens",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": []}),
            "messages",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "a"}]}),
            "messages.0.role",
        ),
    ] {
        let r = post(&gw, "/v1/messages", body).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(param),
            "{}",
            r.body
        );
    }
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn unsupported_content_parts_are_named_without_debug_text() {
    for p in ["anthropic", "gemini"] {
        let (_mock, gw) = setup(p).await;
        let r = post(
            &gw,
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}),
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.body);
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains("`input_audio`"), "{msg}");
        assert!(!msg.contains("Some("), "{msg}");
    }
}

#[tokio::test]
async fn get_one_model() {
    let (_mock, gw) = setup("openai").await;
    let r = send("GET", &gw.url("/v1/models/m"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"id": "m", "object": "model", "created": 0, "owned_by": "holdfast"})
    );
    let r = send("GET", &gw.url("/v1/models/nope"), None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "model_not_found");
    assert_eq!(e["type"], "invalid_request_error");
    assert!(e["message"].as_str().unwrap().contains("nope"));
}

#[tokio::test]
async fn estimated_usage_is_marked_streamed_or_not() {
    // (Anthropic always reports usage, in its stream too.)
    for p in ["openai", "gemini", "ollama"] {
        let (mock, gw) = setup(p).await;
        mock.push([Behavior::NoUsage, Behavior::NoUsage, Behavior::Ok]);
        let whole = post(&gw, "/v1/chat/completions", hi(false)).await.json();
        assert_eq!(whole["usage"]["estimated"], true, "{p}: {whole}");
        let mut req = hi(true);
        req["stream_options"] = json!({"include_usage": true});
        let (chunks, _) = post(&gw, "/v1/chat/completions", req.clone())
            .await
            .chunks();
        let usage = chunks.iter().find(|c| c["usage"].is_object()).unwrap();
        assert_eq!(usage["usage"]["estimated"], true, "{p}: {usage}");
        assert_eq!(
            usage["usage"]["prompt_tokens"], whole["usage"]["prompt_tokens"],
            "{p}"
        );
        // Usage from the provider is not marked.
        let (chunks, _) = post(&gw, "/v1/chat/completions", req).await.chunks();
        let usage = chunks.iter().find(|c| c["usage"].is_object()).unwrap();
        assert!(usage["usage"].get("estimated").is_none(), "{p}: {usage}");
    }
}

#[tokio::test]
async fn a_prompt_api_answer_that_is_not_json_still_records_tokens_and_cost() {
    let mock = MockProvider::start().await.unwrap();
    let mut cfg = model(
        "fast",
        "openai",
        "gpt-4o-mini",
        &format!("{}/v1", mock.url()),
    );
    cfg.push_str("[prompts.sentiment]\nmodel = \"fast\"\ntemplate = \"Sentiment of {{text}}\"\n");
    let gw = start(&cfg).await;
    mock.push([Behavior::Text("I think it is positive".into())]);
    let r = post(&gw, "/apis/sentiment", json!({"text": "great"})).await;
    assert_eq!(r.status, 502, "{}", r.body);
    let ai = gw.last_extra().await.ai.unwrap();
    assert_eq!(ai.outcome, "bad_upstream_response");
    // The mock reports prompt tokens = words + 5 and completion tokens = words answered.
    assert_eq!((ai.input_tokens, ai.output_tokens), (8, 1), "{ai:?}");
    assert!(!ai.tokens_estimated);
    assert!(ai.cost_usd > 0.0, "{ai:?}");
    assert_eq!(ai.deployment.as_deref(), Some("openai/gpt-4o-mini"));
}

/// The handler tells the data plane when its first provider request started, so the call
/// record's `upstream_ms` is the provider's time (not gateway overhead); a request refused
/// before any provider was asked has none.
#[tokio::test]
async fn provider_time_starts_at_the_first_provider_request() {
    let mock = MockProvider::start().await.unwrap();
    let mut cfg = model("m", "openai", "gpt-4o-mini", &format!("{}/v1", mock.url()));
    cfg.push_str("[prompts.sentiment]\nmodel = \"m\"\ntemplate = \"Sentiment of {{text}}\"\n");
    let gw = start(&cfg).await;
    let last = || {
        gw.extras
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    };

    for (path, body) in [
        ("/v1/chat/completions", hi(false)),
        ("/v1/chat/completions", hi(true)),
        (
            "/v1/embeddings",
            json!({"model": "m", "input": "hello world"}),
        ),
        ("/apis/sentiment", json!({"text": "great"})),
    ] {
        let before = std::time::Instant::now();
        let r = post(&gw, path, body).await;
        assert!(
            r.status == 200 || path == "/apis/sentiment",
            "{path}: {}",
            r.body
        );
        let extra = gw.last_extra().await;
        let started = extra.upstream_started.expect(path);
        assert!(
            started >= before && started <= std::time::Instant::now(),
            "{path}"
        );
    }

    // Retried: the time runs from the first attempt.
    mock.push([Behavior::ServerError]);
    let before = std::time::Instant::now();
    let r = post(&gw, "/v1/chat/completions", hi(false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let extra = gw.last_extra().await;
    assert_eq!(extra.ai.as_ref().map(|a| a.attempts), Some(2), "{extra:?}");
    let started = extra.upstream_started.expect("started");
    assert!(started >= before, "{extra:?}");

    // Refused before any provider request: no provider time.
    for body in [
        json!({"model": "m", "messages": []}),
        json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
    ] {
        let r = post(&gw, "/v1/chat/completions", body).await;
        assert!(r.status >= 400, "{}", r.body);
        let extra = last().lock().unwrap().clone();
        assert_eq!(extra.upstream_started, None, "{}: {extra:?}", r.body);
    }
}
