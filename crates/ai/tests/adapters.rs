//! Every provider adapter end to end through the `ai` handler against the mock providers:
//! request translation, answers, streaming, tool calls, usage and cost.

mod common;

use common::*;
use holdfast_mock_providers::{Behavior, MockProvider};
use serde_json::{json, Value};

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}])
}

#[tokio::test]
async fn non_streaming_text_and_usage_for_every_provider() {
    for p in PROVIDERS {
        let (mock, gw) = setup(p).await;
        let r = post(&gw, "/v1/chat/completions", json!({"model": "m",
            "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi there"}]})).await;
        assert_eq!(r.status, 200, "{p}: {}", r.body);
        let v = r.json();
        assert_eq!(v["object"], "chat.completion", "{p}");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            format!("Hello from {p}: hi there"),
            "{p}"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{p}");
        // The mock reports prompt tokens = words + 5 and completion tokens = words answered.
        assert_eq!(v["usage"]["prompt_tokens"], 7, "{p}");
        assert_eq!(v["usage"]["completion_tokens"], 5, "{p}");
        let extra = gw.last_extra().await;
        let ai = extra.ai.unwrap();
        assert_eq!(ai.model_requested, "m");
        assert_eq!(
            ai.deployment.as_deref(),
            Some(format!("{p}/{}", upstream_model(p)).as_str())
        );
        assert_eq!(
            (ai.input_tokens, ai.output_tokens, ai.tokens_estimated),
            (7, 5, false),
            "{p}"
        );
        assert_eq!(ai.attempts, 1);
        assert_eq!(ai.outcome, "ok");
        if p != "ollama" && p != "azure" {
            assert!(ai.cost_usd > 0.0, "{p}: priced model has a cost");
        }
        assert_eq!(mock.request_count(), 1);
    }
}

#[tokio::test]
async fn streaming_text_with_usage_for_every_provider() {
    for p in PROVIDERS {
        let (_mock, gw) = setup(p).await;
        let r = post(
            &gw,
            "/v1/chat/completions",
            json!({"model": "m", "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "stream please"}]}),
        )
        .await;
        assert_eq!(r.status, 200, "{p}: {}", r.body);
        assert_eq!(r.headers["content-type"], "text/event-stream");
        assert!(!r.broken, "{p}: clean end");
        let (chunks, done) = r.chunks();
        assert!(done, "{p}: [DONE] sent");
        let (text, tool) = stream_text(&chunks);
        assert_eq!(text, format!("Hello from {p}: stream please"), "{p}");
        assert!(tool.is_none());
        assert!(
            chunks.len() >= 5,
            "{p}: streamed in pieces, got {}",
            chunks.len()
        );
        let finish: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0].get("finish_reason"))
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, vec![&json!("stop")], "{p}");
        let usage = &chunks.last().unwrap()["usage"];
        assert_eq!(usage["prompt_tokens"], 7, "{p}");
        assert_eq!(usage["completion_tokens"], 5, "{p}");
        let ai = gw.last_extra().await.ai.unwrap();
        assert_eq!(
            (ai.input_tokens, ai.output_tokens, ai.tokens_estimated),
            (7, 5, false),
            "{p}"
        );
        assert!(ai.ttft_ms.is_some());
        assert_eq!(ai.outcome, "ok");
    }
}

#[tokio::test]
async fn usage_chunk_only_when_asked() {
    let (mock, gw) = setup("openai").await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    let (chunks, done) = r.chunks();
    assert!(done);
    assert!(chunks
        .iter()
        .all(|c| c.get("usage").is_none_or(Value::is_null)));
    // The gateway still asked the provider for usage, and recorded it.
    assert_eq!(
        mock.requests()[0].body["stream_options"]["include_usage"],
        true
    );
    let ai = gw.last_extra().await.ai.unwrap();
    assert!(!ai.tokens_estimated);
    assert_eq!(ai.input_tokens, 6);
}

#[tokio::test]
async fn tool_calls_for_every_provider() {
    for p in PROVIDERS {
        for stream in [false, true] {
            let (_mock, gw) = setup(p).await;
            let r = post(
                &gw,
                "/v1/chat/completions",
                json!({"model": "m", "stream": stream,
                "tools": weather_tool(), "tool_choice": "auto",
                "messages": [{"role": "user", "content": "weather in Paris?"}]}),
            )
            .await;
            assert_eq!(r.status, 200, "{p}: {}", r.body);
            let (name, args, finish) = if stream {
                let (chunks, done) = r.chunks();
                assert!(done);
                let (_, tool) = stream_text(&chunks);
                let finish = chunks
                    .iter()
                    .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
                    .next_back()
                    .unwrap()
                    .to_string();
                let (n, a) = tool.unwrap_or_else(|| panic!("{p}: no tool call in {chunks:?}"));
                (n, a, finish)
            } else {
                let v = r.json();
                let call = &v["choices"][0]["message"]["tool_calls"][0];
                assert_eq!(call["type"], "function");
                assert!(call["id"].as_str().is_some_and(|s| !s.is_empty()));
                (
                    call["function"]["name"].as_str().unwrap().to_string(),
                    call["function"]["arguments"].as_str().unwrap().to_string(),
                    v["choices"][0]["finish_reason"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            };
            assert_eq!(name, "get_weather", "{p} stream={stream}");
            let args: Value = serde_json::from_str(&args).unwrap();
            assert_eq!(args, json!({"location": "Paris"}), "{p} stream={stream}");
            assert_eq!(finish, "tool_calls", "{p} stream={stream}");
        }
    }
}

#[tokio::test]
async fn anthropic_translation() {
    let (mock, gw) = setup("anthropic").await;
    let img = "data:image/png;base64,iVBORw0KGgo=";
    let r = post(&gw, "/v1/chat/completions", json!({"model": "m", "stop": "END", "temperature": 0.2,
        "tools": weather_tool(), "tool_choice": "required",
        "messages": [{"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": img}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let req = &mock.requests()[0];
    assert_eq!(req.target, "/v1/messages");
    assert_eq!(req.header("x-api-key"), Some("k-anthropic"));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    let b = &req.body;
    assert_eq!(b["system"], "sys");
    assert_eq!(b["max_tokens"], 4096, "default max_tokens");
    assert_eq!(b["stop_sequences"], json!(["END"]));
    assert_eq!(b["tool_choice"], json!({"type": "any"}));
    assert_eq!(
        b["tools"][0]["input_schema"]["properties"]["location"]["type"],
        "string"
    );
    assert_eq!(
        b["messages"][0]["content"][1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
    );
    assert_eq!(b["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(
        b["messages"][1]["content"][0]["input"],
        json!({"location": "Rome"})
    );
    assert_eq!(
        b["messages"][2],
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "sunny"}]})
    );
}

#[tokio::test]
async fn gemini_translation() {
    let (mock, gw) = setup("gemini").await;
    let r = post(&gw, "/v1/chat/completions", json!({"model": "m", "stream": true, "max_tokens": 50,
        "response_format": {"type": "json_object"}, "tools": weather_tool(),
        "messages": [{"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAA="}}, {"type": "text", "text": "hi"}]},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "{\"t\": 20}"},
            {"role": "user", "content": "thanks"}]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let req = &mock.requests()[0];
    assert_eq!(
        req.target,
        "/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(req.header("x-goog-api-key"), Some("k-gemini"));
    let b = &req.body;
    assert_eq!(b["systemInstruction"], json!({"parts": [{"text": "sys"}]}));
    assert_eq!(b["generationConfig"]["maxOutputTokens"], 50);
    assert_eq!(
        b["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert_eq!(
        b["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );
    assert_eq!(
        b["contents"][0]["parts"][0],
        json!({"inlineData": {"mimeType": "image/jpeg", "data": "AAA="}})
    );
    assert_eq!(b["contents"][1]["role"], "model");
    assert_eq!(
        b["contents"][2]["parts"][0],
        json!({"functionResponse": {"name": "get_weather", "response": {"t": 20}}})
    );
    let (chunks, done) = r.chunks();
    assert!(done);
    let (_, tool) = stream_text(&chunks);
    assert_eq!(
        tool.unwrap().0,
        "get_weather",
        "the mock calls the offered tool"
    );
    // JSON mode without tools: the answer text is JSON.
    let r = post(&gw, "/v1/chat/completions", json!({"model": "m",
        "response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "thanks"}]})).await;
    let text = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let answer: Value = serde_json::from_str(&text).expect("JSON mode answer is JSON");
    assert_eq!(answer["answer"], "Hello from gemini: thanks");
}

#[tokio::test]
async fn gemini_safety_block_is_a_clear_error() {
    let (mock, gw) = setup("gemini").await;
    mock.push([Behavior::SafetyBlock]);
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "bad"}]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let v = r.json();
    assert_eq!(v["error"]["code"], "content_filter");
    assert!(v["error"]["message"].as_str().unwrap().contains("SAFETY"));
    assert_eq!(mock.request_count(), 1, "a safety block is not retried");
}

#[tokio::test]
async fn azure_and_ollama_translation() {
    let (mock, gw) = setup("azure").await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "a"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let req = &mock.requests()[0];
    assert_eq!(
        req.target,
        "/openai/deployments/my-gpt4o-deployment/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(req.header("api-key"), Some("k-azure"));
    assert!(req.header("authorization").is_none());

    let (mock, gw) = setup("ollama").await;
    let r = post(&gw, "/v1/chat/completions", json!({"model": "m", "max_tokens": 9, "temperature": 0.5,
        "response_format": {"type": "json_object"},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}}]}]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let req = &mock.requests()[0];
    assert_eq!(req.target, "/api/chat");
    let b = &req.body;
    assert_eq!(b["stream"], false);
    assert_eq!(b["format"], "json");
    assert_eq!(b["options"], json!({"num_predict": 9, "temperature": 0.5}));
    assert_eq!(
        b["messages"][0],
        json!({"role": "user", "content": "see", "images": ["QUJD"]})
    );
}

#[tokio::test]
async fn missing_usage_is_estimated_with_tiktoken() {
    for stream in [false, true] {
        let (mock, gw) = setup("openai").await;
        mock.push([Behavior::NoUsage]);
        let r = post(
            &gw,
            "/v1/chat/completions",
            json!({"model": "m", "stream": stream,
            "messages": [{"role": "user", "content": "count these words please"}]}),
        )
        .await;
        assert_eq!(r.status, 200);
        let ai = gw.last_extra().await.ai.unwrap();
        assert!(ai.tokens_estimated, "stream={stream}");
        // "Hello from openai: count these words please" is 8+ tokens; the prompt 4 + overhead.
        assert!(
            ai.output_tokens >= 7 && ai.output_tokens <= 12,
            "stream={stream}: {}",
            ai.output_tokens
        );
        assert!(ai.input_tokens >= 8, "stream={stream}: {}", ai.input_tokens);
    }
}

#[tokio::test]
async fn embeddings_on_openai_gemini_ollama_and_refused_on_anthropic() {
    for p in ["openai", "gemini", "ollama", "anthropic"] {
        let (_mock, gw) = setup(p).await;
        let r = post(
            &gw,
            "/v1/embeddings",
            json!({"model": "m", "input": ["a", "b"]}),
        )
        .await;
        if p == "anthropic" {
            assert_eq!(r.status, 400, "{}", r.body);
            assert!(r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no embeddings"));
            continue;
        }
        assert_eq!(r.status, 200, "{p}: {}", r.body);
        let v = r.json();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"].as_array().unwrap().len(), 2, "{p}");
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 3);
        assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{p}");
    }
}

#[tokio::test]
async fn anthropic_entry_routes_to_any_provider() {
    for p in ["openai", "gemini"] {
        let (_mock, gw) = setup(p).await;
        let r = post(
            &gw,
            "/v1/messages",
            json!({"model": "m", "max_tokens": 100, "system": "s",
            "messages": [{"role": "user", "content": "hey"}]}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["type"], "message");
        assert_eq!(
            v["content"][0],
            json!({"type": "text", "text": format!("Hello from {p}: hey")})
        );
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["usage"]["input_tokens"], 6);

        let r = post(
            &gw,
            "/v1/messages",
            json!({"model": "m", "max_tokens": 100, "stream": true,
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "weather?"}]}),
        )
        .await;
        assert_eq!(r.status, 200);
        let events = r.events();
        let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(names.first(), Some(&"message_start"));
        assert_eq!(names.last(), Some(&"message_stop"));
        assert!(names.contains(&"content_block_start"));
        let json_parts: String = events
            .iter()
            .filter(|(e, _)| e == "content_block_delta")
            .map(|(_, d)| {
                serde_json::from_str::<Value>(d).unwrap()["delta"]["partial_json"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&json_parts).unwrap(),
            json!({"location": "Paris"})
        );
        let delta: Value =
            serde_json::from_str(&events.iter().find(|(e, _)| e == "message_delta").unwrap().1)
                .unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    }
}

#[tokio::test]
async fn models_errors_and_prompt_apis() {
    let mock = MockProvider::start().await.unwrap();
    let mut cfg = model(
        "fast",
        "openai",
        "gpt-4o-mini",
        &format!("{}/v1", mock.url()),
    );
    cfg.push_str(
        "[prompts.sentiment]\nmodel = \"fast\"\ntemplate = \"Sentiment of {{text}} in {{lang}}\"\n",
    );
    cfg.push_str("[prompts.plain]\nmodel = \"fast\"\njson = false\ntemplate = \"Say {{what}}\"\n");
    let gw = start(&cfg).await;

    let r = send("GET", &gw.url("/v1/models"), None).await;
    assert_eq!(r.json()["data"][0]["id"], "fast");

    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "nope", "messages": []}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    let r = send("POST", &gw.url("/v1/chat/completions"), None).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let r = post(&gw, "/apis/sentiment", json!({"text": "great"})).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("missing variables: lang"));

    let r = post(
        &gw,
        "/apis/sentiment",
        json!({"text": "great", "lang": "en"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"answer": "Hello from openai: Sentiment of great in en"})
    );
    let last = mock.requests().last().unwrap().clone();
    assert_eq!(last.body["response_format"], json!({"type": "json_object"}));

    let r = post(&gw, "/apis/plain", json!({"what": "hi"})).await;
    assert_eq!(r.json(), json!({"text": "Hello from openai: Say hi"}));
    let r = post(&gw, "/apis/unknown", json!({})).await;
    assert_eq!(r.status, 404);
}
