//! Streams from OpenAI-compatible providers pass through (audit 9, D2 and D3): each choice
//! of `n > 1` keeps its `index`; `refusal`, `logprobs`, `system_fingerprint`, usage details
//! and the provider's id survive; `/v1/messages` clients get a refusal as text with the
//! `refusal` stop reason.
//!
//! The upstream is a tiny fake that answers every request with fixed SSE frames, so the
//! tests control exactly what the provider streams.

mod common;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serve `frames` (each a `data:` payload) as an SSE answer to every request; returns the
/// base URL (`…/v1`).
async fn fake_openai(frames: Vec<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body: String = frames.iter().map(|f| format!("data: {f}\n\n")).collect();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                // Read the head and the body (Content-Length), then answer and close.
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let head_end = loop {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}/v1")
}

fn chunk(choices: Value) -> String {
    json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1700000000,
        "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_up", "choices": choices})
    .to_string()
}

fn choice(index: u64, delta: Value, finish: Value) -> Value {
    json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish})
}

fn usage_chunk() -> String {
    json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1700000000,
        "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_up", "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2}}})
    .to_string()
}

async fn gateway(provider: &str, frames: Vec<String>) -> Gateway {
    let base = fake_openai(frames).await;
    let base = match provider {
        // Azure's URLs hang off the resource, not `/v1`.
        "azure" => base.trim_end_matches("/v1").to_string(),
        _ => base,
    };
    start(&model("m", provider, "gpt-4o", &base)).await
}

/// The text and finish reasons of each choice index.
fn per_choice(chunks: &[Value]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for c in chunks {
        for ch in c["choices"].as_array().into_iter().flatten() {
            let i = ch["index"].as_u64().unwrap() as usize;
            while out.len() <= i {
                out.push(Default::default());
            }
            if let Some(t) = ch["delta"]["content"].as_str() {
                out[i].0.push_str(t);
            }
            if let Some(f) = ch["finish_reason"].as_str() {
                out[i].1.push(f.to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn n2_stream_keeps_each_choice_index() {
    let frames = vec![
        chunk(json!([choice(
            0,
            json!({"role": "assistant", "content": ""}),
            Value::Null
        )])),
        chunk(json!([choice(
            1,
            json!({"role": "assistant", "content": ""}),
            Value::Null
        )])),
        chunk(json!([choice(0, json!({"content": "AAA"}), Value::Null)])),
        chunk(json!([choice(1, json!({"content": "BBB"}), Value::Null)])),
        chunk(json!([choice(0, json!({}), json!("stop"))])),
        chunk(json!([choice(1, json!({}), json!("length"))])),
        usage_chunk(),
        "[DONE]".to_string(),
    ];
    for provider in ["openai", "azure"] {
        let gw = gateway(provider, frames.clone()).await;
        let r = post(
            &gw,
            "/v1/chat/completions",
            json!({"model": "m", "stream": true, "n": 2,
                "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(r.status, 200, "{provider}: {}", r.body);
        let (chunks, done) = r.chunks();
        assert!(done, "{provider}: {}", r.body);
        assert_eq!(
            per_choice(&chunks),
            vec![
                ("AAA".to_string(), vec!["stop".to_string()]),
                ("BBB".to_string(), vec!["length".to_string()]),
            ],
            "{provider}: {}",
            r.body
        );
        // Both role chunks arrive, each under its own index.
        let roles: Vec<u64> = chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
            .filter(|ch| ch["delta"]["role"] == "assistant")
            .map(|ch| ch["index"].as_u64().unwrap())
            .collect();
        assert_eq!(roles, vec![0, 1], "{provider}: {}", r.body);
        // The client did not ask for usage: no usage chunk.
        assert!(
            chunks.iter().all(|c| c.get("usage").is_none()),
            "{provider}: {}",
            r.body
        );
        let ai = gw.last_extra().await.ai.unwrap();
        assert_eq!((ai.input_tokens, ai.output_tokens), (9, 6), "{provider}");
        assert!(!ai.tokens_estimated);
    }
}

#[tokio::test]
async fn stream_passes_refusal_logprobs_fingerprint_usage_details_and_id() {
    let logprobs = json!({"content": [{"token": "I", "logprob": -0.01, "bytes": [73],
        "top_logprobs": []}], "refusal": null});
    let frames = vec![
        chunk(json!([choice(
            0,
            json!({"role": "assistant", "content": null, "refusal": null}),
            Value::Null
        )])),
        chunk(
            json!([{"index": 0, "delta": {"refusal": "I can't help with that."},
            "logprobs": logprobs, "finish_reason": null}]),
        ),
        chunk(json!([choice(0, json!({}), json!("stop"))])),
        usage_chunk(),
        "[DONE]".to_string(),
    ];
    let gw = gateway("openai", frames.clone()).await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m", "stream": true, "logprobs": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (chunks, done) = r.chunks();
    assert!(done, "{}", r.body);
    // The provider's id, created and fingerprint are kept on every chunk.
    for c in &chunks {
        assert_eq!(c["id"], "chatcmpl-up", "{}", r.body);
        assert_eq!(c["created"], 1700000000, "{}", r.body);
        assert_eq!(c["system_fingerprint"], "fp_up", "{}", r.body);
        assert_eq!(c["model"], "gpt-4o-2024-08-06", "{}", r.body);
    }
    let refusal: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["refusal"].as_str())
        .collect();
    assert_eq!(refusal, "I can't help with that.", "{}", r.body);
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["logprobs"] == logprobs),
        "{}",
        r.body
    );
    // Exactly one usage chunk, the provider's, with its details.
    let usage: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["usage"].is_object())
        .map(|c| &c["usage"])
        .collect();
    assert_eq!(usage.len(), 1, "{}", r.body);
    assert_eq!(usage[0]["prompt_tokens_details"]["cached_tokens"], 4);
    assert_eq!(usage[0]["completion_tokens_details"]["reasoning_tokens"], 2);
    assert!(usage[0].get("estimated").is_none());

    // Without include_usage the usage chunk (and any `usage` field) is dropped.
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let (chunks, done) = r.chunks();
    assert!(done);
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "{}",
        r.body
    );
    assert!(chunks
        .iter()
        .all(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())));
}

#[tokio::test]
async fn no_provider_usage_gets_one_estimated_chunk_under_the_provider_id() {
    let frames = vec![
        chunk(json!([choice(
            0,
            json!({"role": "assistant", "content": "Hi there"}),
            Value::Null
        )])),
        chunk(json!([choice(0, json!({}), json!("stop"))])),
        "[DONE]".to_string(),
    ];
    let gw = gateway("openai", frames).await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let (chunks, done) = r.chunks();
    assert!(done, "{}", r.body);
    let (text, _) = stream_text(&chunks);
    assert_eq!(text, "Hi there");
    let last = chunks.last().unwrap();
    assert_eq!(last["id"], "chatcmpl-up");
    assert_eq!(last["usage"]["estimated"], true, "{}", r.body);
    assert_eq!(chunks.iter().filter(|c| c["usage"].is_object()).count(), 1);
}

#[tokio::test]
async fn messages_stream_turns_a_refusal_into_text_with_the_refusal_stop_reason() {
    let frames = vec![
        chunk(json!([choice(
            0,
            json!({"role": "assistant", "content": null, "refusal": null}),
            Value::Null
        )])),
        chunk(json!([choice(
            0,
            json!({"refusal": "I can't help with that."}),
            Value::Null
        )])),
        chunk(json!([choice(0, json!({}), json!("stop"))])),
        usage_chunk(),
        "[DONE]".to_string(),
    ];
    let gw = gateway("openai", frames).await;
    let r = stream_message(&gw, "hi").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.message_text(), "I can't help with that.", "{}", r.body);
    let delta = r.message_event("message_delta");
    assert_eq!(delta["delta"]["stop_reason"], "refusal", "{}", r.body);
    assert_eq!(delta["usage"]["output_tokens"], 6);
}
