//! Rules the real providers enforce, and what the gateway makes of them: Ollama's
//! `/api/chat` takes no file or audio parts (a clear 400, not a silent drop); OpenAI's JSON
//! mode wants the word "json" in a message (the prompt APIs say it, and the mock refuses
//! without it, as OpenAI does); an error event in the middle of a stream reaches OpenAI and
//! Anthropic clients with the provider's `code` and `type`.

mod common;

use common::*;
use holdfast_mock_providers::{Behavior, MockProvider};
use serde_json::{json, Value};

#[tokio::test]
async fn ollama_refuses_file_and_audio_parts() {
    let parts = [
        (
            "file",
            json!({"type": "file", "file": {"filename": "a.pdf",
                "file_data": "data:application/pdf;base64,JVBERi0="}}),
        ),
        (
            "input_audio",
            json!({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}),
        ),
    ];
    for (name, part) in parts {
        for stream in [false, true] {
            let (mock, gw) = setup("ollama").await;
            let r = post(
                &gw,
                "/v1/chat/completions",
                json!({"model": "m", "stream": stream, "messages": [{"role": "user",
                    "content": [{"type": "text", "text": "listen"}, part.clone()]}]}),
            )
            .await;
            assert_eq!(r.status, 400, "{name}: {}", r.body);
            let e = &r.json()["error"];
            assert_eq!(e["type"], "invalid_request_error");
            let msg = e["message"].as_str().unwrap();
            assert!(msg.contains(name) && msg.contains("Ollama"), "{msg}");
            assert_eq!(mock.request_count(), 0, "{name}: nothing sent");
        }
    }
    // Images keep working.
    let (mock, gw) = setup("ollama").await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "see"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}}]}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        mock.requests()[0].body["messages"][0]["images"],
        json!(["QUJD"])
    );
}

#[tokio::test]
async fn mock_openai_refuses_json_mode_without_the_word_json() {
    let mock = MockProvider::start().await.unwrap();
    for path in [
        "/v1/chat/completions",
        "/openai/deployments/d/chat/completions?api-version=2024-10-21",
    ] {
        let url = format!("{}{path}", mock.url());
        let body = |text: &str| {
            json!({"model": "gpt-4o-mini", "response_format": {"type": "json_object"},
                "messages": [{"role": "user", "content": text}]})
        };
        let r = send("POST", &url, Some(body("Sentiment of great"))).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        let e = &r.json()["error"];
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["param"], "messages");
        assert!(e["message"]
            .as_str()
            .unwrap()
            .contains("must contain the word 'json'"));
        let r = send(
            "POST",
            &url,
            Some(body("Answer in JSON: sentiment of great")),
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
}

#[tokio::test]
async fn prompt_apis_say_json_when_they_ask_for_it() {
    for p in ["openai", "azure"] {
        let mock = MockProvider::start().await.unwrap();
        let mut cfg = model("m", p, upstream_model(p), &base(p, &mock.url()));
        cfg.push_str("[prompts.sentiment]\nmodel = \"m\"\ntemplate = \"Sentiment of {{text}}\"\n");
        cfg.push_str(
            "[prompts.styled]\nmodel = \"m\"\nsystem = \"Be terse.\"\ntemplate = \"Mood of {{text}}\"\n",
        );
        let gw = start(&cfg).await;
        for (api, user) in [
            ("sentiment", "Sentiment of great"),
            ("styled", "Mood of great"),
        ] {
            let r = post(&gw, &format!("/apis/{api}"), json!({"text": "great"})).await;
            assert_eq!(r.status, 200, "{p} {api}: {}", r.body);
            assert_eq!(
                r.json(),
                json!({"answer": format!("Hello from {p}: {user}")})
            );
            let sent = mock.requests().last().unwrap().body.clone();
            assert_eq!(sent["response_format"], json!({"type": "json_object"}));
            let system = sent["messages"][0]["content"].as_str().unwrap_or_default();
            assert_eq!(sent["messages"][0]["role"], "system", "{sent}");
            assert!(system.contains("JSON"), "{sent}");
            if api == "styled" {
                assert!(system.starts_with("Be terse."), "{system}");
            }
        }
    }
}

/// The last SSE event of a stream to `path`, whose provider breaks with an error event.
async fn stream_error(p: &str, path: &str, body: Option<Value>) -> (String, Value, bool) {
    let (mock, gw) = setup(p).await;
    mock.push([Behavior::ErrorMidStream {
        after_chunks: 4,
        body,
    }]);
    let req = json!({"model": "m", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "one two three four five six"}]});
    let r = post(&gw, path, req).await;
    assert_eq!(r.status, 200, "{p}: {}", r.body);
    assert!(r.broken, "{p}: the body ends abnormally");
    let (event, data) = r.events().last().unwrap().clone();
    let extra = gw.last_extra().await;
    assert_eq!(extra.ai.unwrap().outcome, "stream_broken");
    (
        event,
        serde_json::from_str(&data).unwrap(),
        r.body.contains("[DONE]"),
    )
}

#[tokio::test]
async fn mid_stream_errors_keep_the_provider_code_and_type() {
    // OpenAI's own error event: code and type reach OpenAI clients as they came.
    let (event, v, done) = stream_error("openai", "/v1/chat/completions", None).await;
    assert_eq!(event, "error");
    assert!(!done);
    assert_eq!(v["error"]["code"], "server_error", "{v}");
    assert_eq!(v["error"]["type"], "server_error", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("The server had an error"));
    // ... and to Anthropic clients, in Anthropic's shape.
    let (event, v, _) = stream_error("openai", "/v1/messages", None).await;
    assert_eq!(event, "error");
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "api_error", "{v}");
    assert_eq!(v["error"]["code"], "server_error", "{v}");

    // A rate limit in the stream keeps its kind too.
    let limited = json!({"error": {"message": "Rate limit reached", "type": "requests",
        "param": null, "code": "rate_limit_exceeded"}});
    let (_, v, _) = stream_error("azure", "/v1/chat/completions", Some(limited.clone())).await;
    assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
    assert_eq!(v["error"]["type"], "requests", "{v}");
    let (_, v, _) = stream_error("azure", "/v1/messages", Some(limited)).await;
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");

    // Anthropic's `overloaded_error`: Anthropic clients get that type, OpenAI clients the
    // same word as the code.
    let (_, v, _) = stream_error("anthropic", "/v1/messages", None).await;
    assert_eq!(v["error"]["type"], "overloaded_error", "{v}");
    assert_eq!(v["error"]["message"], "Overloaded");
    let (_, v, _) = stream_error("anthropic", "/v1/chat/completions", None).await;
    assert_eq!(v["error"]["code"], "overloaded_error", "{v}");
    assert_eq!(v["error"]["type"], "api_error", "{v}");

    // Gemini's status becomes the code, as on the non-stream path.
    let (_, v, _) = stream_error("gemini", "/v1/chat/completions", None).await;
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    let (_, v, _) = stream_error("gemini", "/v1/messages", None).await;
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
}

#[tokio::test]
async fn openai_file_parts_reach_anthropic_and_gemini_as_documents() {
    let url = "data:application/pdf;base64,JVBERi0=";
    let req = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": url}},
        {"type": "text", "text": "summarise"}]}]});
    let (mock, gw) = setup("anthropic").await;
    let r = post(&gw, "/v1/chat/completions", req.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        mock.requests()[0].body["messages"][0]["content"][0],
        json!({"type": "document", "title": "a.pdf",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}})
    );
    let (mock, gw) = setup("gemini").await;
    let r = post(&gw, "/v1/chat/completions", req).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        mock.requests()[0].body["contents"][0]["parts"][0],
        json!({"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}})
    );
}
