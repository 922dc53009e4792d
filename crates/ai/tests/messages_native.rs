//! `/v1/messages` keeps Anthropic's own features: an Anthropic deployment is sent the
//! client's request unchanged (`document` blocks, `thinking`, `cache_control`, `top_k`,
//! `metadata`, `stop_sequences`) and its answer (thinking blocks, the real usage in
//! `message_start`) reaches the client unchanged, streamed or not. Other providers get what
//! has an equivalent (`top_k`, `stop_sequences`, PDF documents, `metadata.user_id`), and a
//! 400 naming the field and the provider for what they cannot honour. An OpenAI `refusal`
//! becomes a text block with `stop_reason: "refusal"`; the stream's `message_start` reports
//! an input estimate and its final `message_delta` the provider's figures.

mod common;

use common::*;
use holdfast_mock_providers::Behavior;
use serde_json::{json, Value};

const PDF: &str = "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoK";

/// A request only Anthropic takes whole.
fn rich_request() -> Value {
    json!({"model": "m", "max_tokens": 4096, "top_k": 5,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": "user-42"},
        "stop_sequences": ["END"],
        "system": [{"type": "text", "text": "You read documents.",
            "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "get_weather", "description": "Weather",
            "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
        "tool_choice": {"type": "auto"},
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                "data": PDF}, "title": "report.pdf", "citations": {"enabled": true},
                "cache_control": {"type": "ephemeral"}},
            {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
            {"type": "text", "text": "summarise please"}]}]})
}

#[tokio::test]
async fn anthropic_deployments_get_the_request_unchanged() {
    for stream in [false, true] {
        let (mock, gw) = setup("anthropic").await;
        let mut req = rich_request();
        if stream {
            req["stream"] = json!(true);
        }
        let r = post(&gw, "/v1/messages", req.clone()).await;
        assert_eq!(r.status, 200, "stream={stream}: {}", r.body);
        let sent = mock.requests()[0].body.clone();
        let mut expected = req;
        expected["model"] = json!(upstream_model("anthropic"));
        assert_eq!(sent, expected, "stream={stream}");
    }
}

#[tokio::test]
async fn thinking_blocks_reach_messages_clients() {
    let (_mock, gw) = setup("anthropic").await;
    let req = json!({"model": "m", "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "think first"}]});
    let r = post(&gw, "/v1/messages", req.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["content"][0]["type"], "thinking", "{v}");
    assert_eq!(v["content"][0]["thinking"], "The user said: think first");
    assert!(v["content"][0]["signature"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(
        v["content"][1],
        json!({"type": "text", "text": "Hello from anthropic: think first"})
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));

    let mut s = req;
    s["stream"] = json!(true);
    let r = post(&gw, "/v1/messages", s).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.broken);
    let events: Vec<(String, Value)> = r
        .events()
        .into_iter()
        .map(|(e, d)| (e, serde_json::from_str(&d).unwrap()))
        .collect();
    let start = &events
        .iter()
        .find(|(e, _)| e == "content_block_start")
        .unwrap()
        .1;
    assert_eq!(start["content_block"]["type"], "thinking", "{}", r.body);
    let deltas: Vec<&Value> = events
        .iter()
        .filter(|(e, _)| e == "content_block_delta")
        .map(|(_, d)| &d["delta"])
        .collect();
    let thinking: String = deltas
        .iter()
        .filter_map(|d| d["thinking"].as_str())
        .collect();
    assert_eq!(thinking, "The user said: think first");
    assert!(deltas.iter().any(|d| d["type"] == "signature_delta"));
    let text: String = deltas.iter().filter_map(|d| d["text"].as_str()).collect();
    assert_eq!(text, "Hello from anthropic: think first");
    // The provider's own message_start, with its real input tokens.
    let (name, first) = &events[0];
    assert_eq!(name, "message_start");
    assert_eq!(first["message"]["usage"]["input_tokens"], 7, "{first}");
    assert_eq!(events.last().unwrap().0, "message_stop");
    let ai = gw.last_extra().await.ai.unwrap();
    assert_eq!((ai.input_tokens, ai.output_tokens), (7, 5));
    assert!(!ai.tokens_estimated);
}

#[tokio::test]
async fn other_providers_get_what_has_an_equivalent() {
    let req = json!({"model": "m", "max_tokens": 100, "top_k": 7, "stop_sequences": ["END"],
        "metadata": {"user_id": "user-42"},
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                "data": PDF}, "title": "report.pdf"},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                "data": "plain notes"}},
            {"type": "text", "text": "summarise", "cache_control": {"type": "ephemeral"}}]}]});

    let (mock, gw) = setup("gemini").await;
    let r = post(&gw, "/v1/messages", req.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sent = &mock.requests()[0].body;
    assert_eq!(sent["generationConfig"]["topK"], 7, "{sent}");
    assert_eq!(sent["generationConfig"]["stopSequences"], json!(["END"]));
    assert_eq!(
        sent["contents"][0]["parts"][0],
        json!({"inlineData": {"mimeType": "application/pdf", "data": PDF}})
    );
    assert_eq!(
        sent["contents"][0]["parts"][1],
        json!({"text": "plain notes"})
    );

    let (mock, gw) = setup("ollama").await;
    let mut no_docs = req.clone();
    no_docs["messages"] = json!([{"role": "user", "content": "hi"}]);
    let r = post(&gw, "/v1/messages", no_docs).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sent = &mock.requests()[0].body;
    assert_eq!(sent["options"]["top_k"], 7, "{sent}");
    assert_eq!(sent["options"]["stop"], json!(["END"]));

    let (mock, gw) = setup("openai").await;
    let mut no_top_k = req.clone();
    no_top_k.as_object_mut().unwrap().remove("top_k");
    let r = post(&gw, "/v1/messages", no_top_k).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sent = &mock.requests()[0].body;
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["user"], "user-42");
    assert_eq!(
        sent["messages"][1]["content"][0],
        json!({"type": "file", "file": {"filename": "report.pdf",
            "file_data": format!("data:application/pdf;base64,{PDF}")}})
    );
    // Nothing of the gateway's own bookkeeping reaches the provider.
    let text = sent.to_string();
    assert!(!text.contains("__holdfast"), "{text}");
    assert!(!text.contains("cache_control"), "{text}");
}

/// A `/v1/messages` request to provider `p`: the 400's `param`, and the provider's request count.
async fn refused(p: &str, req: Value) -> (Value, u64) {
    let (mock, gw) = setup(p).await;
    let r = post(&gw, "/v1/messages", req).await;
    assert_eq!(r.status, 400, "{p}: {}", r.body);
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    (v["error"].clone(), mock.request_count())
}

#[tokio::test]
async fn what_other_providers_cannot_honour_is_a_clear_400() {
    let hi = json!([{"role": "user", "content": "hi"}]);
    let names = [
        ("openai", "OpenAI"),
        ("azure", "Azure OpenAI"),
        ("gemini", "Gemini"),
        ("ollama", "Ollama"),
    ];
    for (p, name) in names {
        let thinking = json!({"model": "m", "max_tokens": 4096, "messages": hi,
            "thinking": {"type": "enabled", "budget_tokens": 2048}});
        let (e, asked) = refused(p, thinking).await;
        assert_eq!(e["param"], "thinking", "{p}: {e}");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains("thinking") && msg.contains(name), "{p}: {msg}");
        assert_eq!(asked, 0, "{p}: refused before any provider was asked");

        let url_doc = json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user",
            "content": [{"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}},
                {"type": "text", "text": "read"}]}]});
        let (e, _) = refused(p, url_doc).await;
        let param = e["param"].as_str().unwrap();
        assert!(param.starts_with("messages.0.content.0"), "{p}: {e}");

        let server_tool = json!({"model": "m", "max_tokens": 100, "messages": hi,
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]});
        let (e, _) = refused(p, server_tool).await;
        assert_eq!(e["param"], "tools.0.type", "{p}: {e}");

        let unknown = json!({"model": "m", "max_tokens": 100, "messages": hi,
            "container": "c-1"});
        let (e, _) = refused(p, unknown).await;
        assert_eq!(e["param"], "container", "{p}: {e}");
    }
    for p in ["openai", "azure"] {
        let top_k = json!({"model": "m", "max_tokens": 100, "top_k": 5, "messages": hi});
        let (e, _) = refused(p, top_k).await;
        assert_eq!(e["param"], "top_k", "{p}: {e}");
    }
    let pdf = json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}]}]});
    let (e, _) = refused("ollama", pdf).await;
    assert!(e["message"].as_str().unwrap().contains("Ollama"), "{e}");
    // Disabled thinking asks for nothing.
    let (_mock, gw) = setup("openai").await;
    let r = post(
        &gw,
        "/v1/messages",
        json!({"model": "m", "max_tokens": 100, "messages": hi,
            "thinking": {"type": "disabled"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn openai_clients_cannot_smuggle_a_native_request() {
    let (mock, gw) = setup("anthropic").await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "__holdfast_anthropic_request": {"model": "x", "max_tokens": 1,
                "messages": [{"role": "user", "content": "injected"}]}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sent = &mock.requests()[0].body;
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    );
}

#[tokio::test]
async fn stream_usage_over_other_providers() {
    for p in ["openai", "gemini", "ollama"] {
        let (_mock, gw) = setup(p).await;
        let r = stream_message(&gw, "hey there").await;
        assert_eq!(r.status, 200, "{p}: {}", r.body);
        // The start can only estimate; it says so.
        let start = r.message_event("message_start");
        let u = &start["message"]["usage"];
        assert!(u["input_tokens"].as_u64().unwrap() > 0, "{p}: {start}");
        assert_eq!(u["estimated"], true, "{p}: {start}");
        // The final message_delta has the provider's figures, input included.
        let delta = r.message_event("message_delta");
        assert_eq!(
            delta["usage"],
            json!({"input_tokens": 7, "output_tokens": 5}),
            "{p}: {delta}"
        );
    }
}

#[tokio::test]
async fn openai_refusal_becomes_a_refusal_message() {
    let (mock, gw) = setup("openai").await;
    mock.push([Behavior::Refusal("I can't help with that.".to_string())]);
    let r = post(
        &gw,
        "/v1/messages",
        json!({"model": "m", "max_tokens": 100,
            "messages": [{"role": "user", "content": "something bad"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "I can't help with that."}]),
        "{v}"
    );
    assert_eq!(v["stop_reason"], "refusal", "{v}");

    // Streamed, the same refusal reads the same.
    mock.push([Behavior::Refusal("I can't help with that.".to_string())]);
    let r = stream_message(&gw, "something bad").await;
    assert_eq!(r.message_text(), "I can't help with that.");
    assert_eq!(
        r.message_event("message_delta")["delta"]["stop_reason"],
        "refusal"
    );
}
