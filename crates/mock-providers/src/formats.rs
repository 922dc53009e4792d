//! The wire formats of each provider: what the mock reads from a request and what it sends
//! back (complete responses, stream frames, errors).

use serde_json::{json, Value};

/// Which provider a request path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OpenAi,
    Azure,
    Anthropic,
    Gemini,
    Ollama,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::OpenAi => "openai",
            Kind::Azure => "azure",
            Kind::Anthropic => "anthropic",
            Kind::Gemini => "gemini",
            Kind::Ollama => "ollama",
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Chat { stream: bool },
    Embed,
    Models,
}

/// Recognise the provider and operation from the method, path and body.
pub fn route(method: &str, target: &str, body: &Value) -> Option<(Kind, Op, String)> {
    let path = target.split('?').next().unwrap_or("");
    let stream_flag = body.get("stream").and_then(Value::as_bool);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match (method, path) {
        ("GET", "/v1/models") => Some((Kind::OpenAi, Op::Models, model)),
        ("POST", "/v1/chat/completions") => Some((
            Kind::OpenAi,
            Op::Chat {
                stream: stream_flag.unwrap_or(false),
            },
            model,
        )),
        ("POST", "/v1/embeddings") => Some((Kind::OpenAi, Op::Embed, model)),
        ("POST", "/v1/messages") => Some((
            Kind::Anthropic,
            Op::Chat {
                stream: stream_flag.unwrap_or(false),
            },
            model,
        )),
        ("POST", "/api/chat") => Some((
            Kind::Ollama,
            // Ollama streams unless told not to.
            Op::Chat {
                stream: stream_flag.unwrap_or(true),
            },
            model,
        )),
        ("POST", "/api/embed") => Some((Kind::Ollama, Op::Embed, model)),
        ("POST", p) if p.starts_with("/openai/deployments/") => {
            let rest = &p["/openai/deployments/".len()..];
            let (deployment, op) = rest.split_once('/')?;
            let op = match op {
                "chat/completions" => Op::Chat {
                    stream: stream_flag.unwrap_or(false),
                },
                "embeddings" => Op::Embed,
                _ => return None,
            };
            Some((Kind::Azure, op, deployment.to_string()))
        }
        ("POST", p) if p.starts_with("/v1beta/models/") => {
            let (m, action) = p["/v1beta/models/".len()..].split_once(':')?;
            let op = match action {
                "generateContent" => Op::Chat { stream: false },
                "streamGenerateContent" => Op::Chat { stream: true },
                "batchEmbedContents" => Op::Embed,
                _ => return None,
            };
            Some((Kind::Gemini, op, m.to_string()))
        }
        _ => None,
    }
}

/// The answer the mock gives.
#[derive(Debug, Clone)]
pub struct Answer {
    pub words: Vec<String>,
    /// Name of the tool to call instead of answering with text.
    pub tool: Option<String>,
    pub prompt_tokens: u64,
    /// Anthropic with `thinking` enabled: the thinking block's text (before the answer).
    pub thinking: Option<String>,
    /// OpenAI and Azure: the model refuses with this text instead of answering.
    pub refusal: Option<String>,
}

/// The signature the mock gives its Anthropic thinking blocks.
pub const THINKING_SIGNATURE: &str = "mock-signature-EqQBCgIYAhIM";

pub const TOOL_ARGS: &str = r#"{"location":"Paris"}"#;

impl Answer {
    pub fn completion_tokens(&self) -> u64 {
        if self.tool.is_some() {
            5
        } else {
            self.words.len() as u64
        }
    }

    pub fn text(&self) -> String {
        self.words.concat()
    }
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Whether the request asks for a JSON answer (each provider has its own switch).
fn wants_json(kind: Kind, body: &Value) -> bool {
    match kind {
        Kind::OpenAi | Kind::Azure => body["response_format"]["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("json")),
        Kind::Anthropic => body["system"]
            .as_str()
            .is_some_and(|s| s.contains("JSON object")),
        Kind::Gemini => body["generationConfig"]["responseMimeType"] == "application/json",
        Kind::Ollama => !body["format"].is_null(),
    }
}

/// Work out the answer from a chat request in `kind`'s format.
pub fn answer(kind: Kind, body: &Value) -> Answer {
    let (last_user, last_is_user, tool) = match kind {
        Kind::OpenAi | Kind::Azure | Kind::Ollama => {
            let msgs = body["messages"].as_array().cloned().unwrap_or_default();
            let last_user = msgs
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .map(|m| text_of(&m["content"]))
                .unwrap_or_default();
            let last_is_user = msgs.last().map(|m| m["role"] == "user").unwrap_or(false);
            let tool = body["tools"][0]["function"]["name"]
                .as_str()
                .map(String::from);
            (last_user, last_is_user, tool)
        }
        Kind::Anthropic => {
            let msgs = body["messages"].as_array().cloned().unwrap_or_default();
            // A user turn that carries only tool results is not a new question.
            let is_tool_result = |m: &Value| {
                m["content"]
                    .as_array()
                    .map(|b| b.iter().all(|b| b["type"] == "tool_result"))
                    .unwrap_or(false)
            };
            let last_user = msgs
                .iter()
                .rev()
                .find(|m| m["role"] == "user" && !is_tool_result(m))
                .map(|m| text_of(&m["content"]))
                .unwrap_or_default();
            let last_is_user = msgs
                .last()
                .map(|m| m["role"] == "user" && !is_tool_result(m))
                .unwrap_or(false);
            let tool = body["tools"][0]["name"].as_str().map(String::from);
            (last_user, last_is_user, tool)
        }
        Kind::Gemini => {
            let contents = body["contents"].as_array().cloned().unwrap_or_default();
            let is_fn_response = |c: &Value| {
                c["parts"]
                    .as_array()
                    .map(|p| p.iter().all(|p| p.get("functionResponse").is_some()))
                    .unwrap_or(false)
            };
            let last_user = contents
                .iter()
                .rev()
                .find(|c| c["role"] == "user" && !is_fn_response(c))
                .map(|c| text_of(&c["parts"]))
                .unwrap_or_default();
            let last_is_user = contents
                .last()
                .map(|c| c["role"] == "user" && !is_fn_response(c))
                .unwrap_or(false);
            let tool = body["tools"][0]["functionDeclarations"][0]["name"]
                .as_str()
                .map(String::from);
            (last_user, last_is_user, tool)
        }
    };
    let mut sentence = format!("Hello from {}: {}", kind.name(), last_user.trim());
    if wants_json(kind, body) {
        sentence = json!({ "answer": sentence }).to_string();
    }
    let mut words: Vec<String> = sentence.split(' ').map(|w| format!("{w} ")).collect();
    if let Some(last) = words.last_mut() {
        *last = last.trim_end().to_string();
    }
    let thinking = (kind == Kind::Anthropic && body["thinking"]["type"] == "enabled")
        .then(|| format!("The user said: {}", last_user.trim()));
    Answer {
        words,
        tool: if last_is_user { tool } else { None },
        prompt_tokens: last_user.split_whitespace().count() as u64 + 5,
        thinking,
        refusal: None,
    }
}

/// Why the real OpenAI (or Azure) API would refuse this chat body: JSON mode
/// (`response_format: {"type": "json_object"}`) when no message says "json" in any case.
/// The error body is OpenAI's.
pub fn openai_request_error(body: &Value) -> Option<Value> {
    if body["response_format"]["type"] != "json_object" {
        return None;
    }
    let says_json = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| text_of(&m["content"]).to_ascii_lowercase().contains("json"));
    (!says_json).then(|| {
        json!({"error": {"message": "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
            "type": "invalid_request_error", "param": "messages", "code": null}})
    })
}

/// Why the real Anthropic API would refuse this Messages body: `thinking` enabled with a
/// `budget_tokens` under 1024 or not under `max_tokens`. The error body is Anthropic's.
pub fn anthropic_request_error(body: &Value) -> Option<Value> {
    let thinking = &body["thinking"];
    if thinking["type"] != "enabled" {
        return None;
    }
    let budget = thinking["budget_tokens"].as_u64().unwrap_or(0);
    let max = body["max_tokens"].as_u64().unwrap_or(0);
    let message = if budget < 1024 {
        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
    } else if budget >= max {
        "`max_tokens` must be greater than `thinking.budget_tokens`"
    } else {
        return None;
    };
    Some(json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}}))
}

/// An error event in the middle of a stream, framed for the wire in `kind`'s format.
pub fn stream_error_frame(kind: Kind, body: Option<&Value>) -> String {
    let default = match kind {
        Kind::OpenAi | Kind::Azure => json!({"error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error", "param": null, "code": "server_error"}}),
        Kind::Anthropic => {
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        }
        Kind::Gemini => {
            json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
            "status": "UNAVAILABLE"}})
        }
        Kind::Ollama => json!({"error": "an error was encountered while running the model"}),
    };
    let v = body.cloned().unwrap_or(default);
    match kind {
        Kind::Anthropic => format!("event: error\ndata: {v}\n\n"),
        Kind::Ollama => format!("{v}\n"),
        Kind::Gemini => format!("data: {v}\r\n\r\n"),
        Kind::OpenAi | Kind::Azure => format!("data: {v}\n\n"),
    }
}

/// A complete (non-streaming) chat response body.
pub fn chat_response(kind: Kind, model: &str, a: &Answer, usage: bool) -> Value {
    let (p, c) = (a.prompt_tokens, a.completion_tokens());
    match kind {
        Kind::OpenAi | Kind::Azure => {
            let message = match (&a.refusal, &a.tool) {
                (Some(r), _) => json!({"role": "assistant", "content": null, "refusal": r}),
                (None, Some(name)) => json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_mock1", "type": "function",
                     "function": {"name": name, "arguments": TOOL_ARGS}}]}),
                (None, None) => json!({"role": "assistant", "content": a.text(), "refusal": null}),
            };
            let mut v = json!({
                "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000,
                "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": null,
                    "finish_reason": if a.tool.is_some() { "tool_calls" } else { "stop" }}],
            });
            if usage {
                v["usage"] =
                    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c});
            }
            v
        }
        Kind::Anthropic => {
            let mut content = match &a.tool {
                Some(name) => json!([{"type": "tool_use", "id": "toolu_mock1", "name": name,
                    "input": serde_json::from_str::<Value>(TOOL_ARGS).unwrap_or_default()}]),
                None => json!([{"type": "text", "text": a.text()}]),
            };
            if let (Some(t), Some(blocks)) = (&a.thinking, content.as_array_mut()) {
                blocks.insert(
                    0,
                    json!({"type": "thinking", "thinking": t, "signature": THINKING_SIGNATURE}),
                );
            }
            json!({
                "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                "content": content,
                "stop_reason": if a.tool.is_some() { "tool_use" } else { "end_turn" },
                "stop_sequence": null,
                "usage": {"input_tokens": p, "output_tokens": c},
            })
        }
        Kind::Gemini => {
            let parts = match &a.tool {
                Some(name) => json!([{"functionCall": {"name": name,
                    "args": serde_json::from_str::<Value>(TOOL_ARGS).unwrap_or_default()}}]),
                None => json!([{"text": a.text()}]),
            };
            let mut v = json!({
                "candidates": [{"content": {"parts": parts, "role": "model"},
                    "finishReason": "STOP", "index": 0}],
                "modelVersion": model,
            });
            if usage {
                v["usageMetadata"] = json!({"promptTokenCount": p, "candidatesTokenCount": c,
                    "totalTokenCount": p + c});
            }
            v
        }
        Kind::Ollama => {
            let message = match &a.tool {
                Some(name) => json!({"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": name,
                     "arguments": serde_json::from_str::<Value>(TOOL_ARGS).unwrap_or_default()}}]}),
                None => json!({"role": "assistant", "content": a.text()}),
            };
            let mut v = json!({
                "model": model, "created_at": "2024-01-01T00:00:00Z", "message": message,
                "done": true, "done_reason": "stop", "total_duration": 1000,
            });
            if usage {
                v["prompt_eval_count"] = json!(p);
                v["eval_count"] = json!(c);
            }
            v
        }
    }
}

/// The frames of a streamed chat response, each already framed for the wire (SSE or NDJSON).
pub fn chat_stream(kind: Kind, model: &str, a: &Answer, usage: bool, body: &Value) -> Vec<String> {
    let (p, c) = (a.prompt_tokens, a.completion_tokens());
    let sse = |v: Value| format!("data: {v}\n\n");
    let mut out = Vec::new();
    match kind {
        Kind::OpenAi | Kind::Azure => {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
                    "created": 1_700_000_000, "model": model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
            };
            out.push(sse(chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            )));
            match &a.tool {
                _ if a.refusal.is_some() => {
                    let r = a.refusal.clone().unwrap_or_default();
                    for w in r.split_inclusive(' ') {
                        out.push(sse(chunk(json!({"refusal": w}), Value::Null)));
                    }
                    out.push(sse(chunk(json!({}), json!("stop"))));
                }
                Some(name) => {
                    out.push(sse(chunk(
                        json!({"tool_calls": [{"index": 0, "id": "call_mock1",
                        "type": "function", "function": {"name": name, "arguments": ""}}]}),
                        Value::Null,
                    )));
                    let (x, y) = TOOL_ARGS.split_at(TOOL_ARGS.len() / 2);
                    for part in [x, y] {
                        out.push(sse(chunk(
                            json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                            Value::Null,
                        )));
                    }
                    out.push(sse(chunk(json!({}), json!("tool_calls"))));
                }
                None => {
                    for w in &a.words {
                        out.push(sse(chunk(json!({"content": w}), Value::Null)));
                    }
                    out.push(sse(chunk(json!({}), json!("stop"))));
                }
            }
            let asked = body["stream_options"]["include_usage"]
                .as_bool()
                .unwrap_or(false);
            if usage && asked {
                out.push(sse(
                    json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
                    "created": 1_700_000_000, "model": model, "choices": [],
                    "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}),
                ));
            }
            out.push("data: [DONE]\n\n".to_string());
        }
        Kind::Anthropic => {
            let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
            out.push(ev(
                "message_start",
                json!({"type": "message_start", "message": {
                "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": p, "output_tokens": 1}}}),
            ));
            // With `thinking` on, block 0 is the thinking block and the answer is block 1.
            let first = u64::from(a.thinking.is_some());
            if let Some(t) = &a.thinking {
                out.push(ev(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
                ));
                for piece in t.split_inclusive(' ') {
                    out.push(ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "thinking_delta", "thinking": piece}}),
                    ));
                }
                out.push(ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "signature_delta", "signature": THINKING_SIGNATURE}}),
                ));
                out.push(ev(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ));
            }
            match &a.tool {
                Some(name) => {
                    out.push(ev("content_block_start", json!({"type": "content_block_start", "index": first,
                        "content_block": {"type": "tool_use", "id": "toolu_mock1", "name": name, "input": {}}})));
                    let (x, y) = TOOL_ARGS.split_at(TOOL_ARGS.len() / 2);
                    for part in [x, y] {
                        out.push(ev(
                            "content_block_delta",
                            json!({"type": "content_block_delta", "index": first,
                            "delta": {"type": "input_json_delta", "partial_json": part}}),
                        ));
                    }
                }
                None => {
                    out.push(ev(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": first,
                        "content_block": {"type": "text", "text": ""}}),
                    ));
                    out.push(ev("ping", json!({"type": "ping"})));
                    for w in &a.words {
                        out.push(ev(
                            "content_block_delta",
                            json!({"type": "content_block_delta", "index": first,
                            "delta": {"type": "text_delta", "text": w}}),
                        ));
                    }
                }
            }
            out.push(ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": first}),
            ));
            let stop = if a.tool.is_some() {
                "tool_use"
            } else {
                "end_turn"
            };
            out.push(ev("message_delta", json!({"type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": c}})));
            out.push(ev("message_stop", json!({"type": "message_stop"})));
        }
        Kind::Gemini => {
            let meta = |n: u64| json!({"promptTokenCount": p, "candidatesTokenCount": n, "totalTokenCount": p + n});
            match &a.tool {
                Some(name) => {
                    let mut v = json!({"candidates": [{"content": {"role": "model", "parts": [
                        {"functionCall": {"name": name,
                         "args": serde_json::from_str::<Value>(TOOL_ARGS).unwrap_or_default()}}]},
                        "finishReason": "STOP", "index": 0}], "modelVersion": model});
                    if usage {
                        v["usageMetadata"] = meta(c);
                    }
                    out.push(format!("data: {v}\r\n\r\n"));
                }
                None => {
                    let n = a.words.len();
                    for (i, w) in a.words.iter().enumerate() {
                        let mut cand = json!({"content": {"role": "model", "parts": [{"text": w}]}, "index": 0});
                        if i + 1 == n {
                            cand["finishReason"] = json!("STOP");
                        }
                        let mut v = json!({"candidates": [cand], "modelVersion": model});
                        if usage {
                            v["usageMetadata"] = meta(i as u64 + 1);
                        }
                        out.push(format!("data: {v}\r\n\r\n"));
                    }
                }
            }
        }
        Kind::Ollama => {
            match &a.tool {
                Some(name) => out.push(format!("{}\n", json!({"model": model,
                    "created_at": "2024-01-01T00:00:00Z", "message": {"role": "assistant", "content": "",
                    "tool_calls": [{"function": {"name": name,
                     "arguments": serde_json::from_str::<Value>(TOOL_ARGS).unwrap_or_default()}}]},
                    "done": false}))),
                None => {
                    for w in &a.words {
                        out.push(format!("{}\n", json!({"model": model,
                            "created_at": "2024-01-01T00:00:00Z",
                            "message": {"role": "assistant", "content": w}, "done": false})));
                    }
                }
            }
            let mut last = json!({"model": model, "created_at": "2024-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop"});
            if usage {
                last["prompt_eval_count"] = json!(p);
                last["eval_count"] = json!(c);
            }
            out.push(format!("{last}\n"));
        }
    }
    out
}

/// JSON Schema keywords Gemini's OpenAPI-subset `Schema` (`functionDeclarations[].parameters`)
/// does not know: the real API answers 400 `Invalid JSON payload received. Unknown name`.
const GEMINI_SCHEMA_UNKNOWN: &[&str] = &[
    "additionalProperties",
    "$schema",
    "$ref",
    "$defs",
    "const",
    "propertyNames",
    "patternProperties",
    "unevaluatedProperties",
];

/// Why the real Gemini API would refuse this `generateContent` body (as the mock checks
/// it): a function declaration with both `parameters` and `parametersJsonSchema` (they are
/// exclusive), or a JSON Schema keyword inside `parameters`. `parametersJsonSchema` takes
/// full JSON Schema.
pub fn gemini_request_error(body: &Value) -> Option<String> {
    fn unknown_in(v: &Value, path: &str) -> Option<String> {
        match v {
            Value::Object(m) => m.iter().find_map(|(k, v)| {
                if GEMINI_SCHEMA_UNKNOWN.contains(&k.as_str()) {
                    return Some(format!(
                        "Invalid JSON payload received. Unknown name \"{k}\" at '{path}': Cannot find field."
                    ));
                }
                // Under `properties` the keys are parameter names, not keywords.
                let child = format!("{path}.{k}");
                if k == "properties" {
                    return v.as_object().and_then(|props| {
                        props
                            .iter()
                            .find_map(|(name, s)| unknown_in(s, &format!("{child}[{name:?}]")))
                    });
                }
                unknown_in(v, &child)
            }),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .find_map(|(i, v)| unknown_in(v, &format!("{path}[{i}]"))),
            _ => None,
        }
    }
    for (t, tool) in body["tools"].as_array().into_iter().flatten().enumerate() {
        let decls = tool["functionDeclarations"]
            .as_array()
            .into_iter()
            .flatten();
        for (i, decl) in decls.enumerate() {
            let path = format!("tools[{t}].function_declarations[{i}]");
            if decl.get("parameters").is_some() && decl.get("parametersJsonSchema").is_some() {
                return Some(format!(
                    "{path}: parameters and parameters_json_schema are mutually exclusive"
                ));
            }
            if let Some(e) = unknown_in(&decl["parameters"], &format!("{path}.parameters")) {
                return Some(e);
            }
        }
    }
    None
}

/// A Gemini answer blocked by its safety filter.
pub fn gemini_blocked() -> Value {
    json!({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]},
        "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}})
}

/// An embeddings response for `n` inputs.
pub fn embed_response(kind: Kind, model: &str, n: usize) -> Value {
    let vector = |i: usize| json!([0.1 * (i as f64 + 1.0), 0.2, 0.3]);
    match kind {
        Kind::OpenAi | Kind::Azure | Kind::Anthropic => json!({
            "object": "list",
            "data": (0..n).map(|i| json!({"object": "embedding", "index": i, "embedding": vector(i)})).collect::<Vec<_>>(),
            "model": model, "usage": {"prompt_tokens": 4 * n, "total_tokens": 4 * n},
        }),
        Kind::Gemini => json!({
            "embeddings": (0..n).map(|i| json!({"values": vector(i)})).collect::<Vec<_>>(),
        }),
        Kind::Ollama => json!({
            "model": model, "embeddings": (0..n).map(vector).collect::<Vec<_>>(),
            "prompt_eval_count": 4 * n,
        }),
    }
}

/// Number of inputs of an embeddings request.
pub fn embed_inputs(kind: Kind, body: &Value) -> usize {
    match kind {
        Kind::Gemini => body["requests"].as_array().map(Vec::len).unwrap_or(0),
        _ => match &body["input"] {
            Value::Array(a) => a.len(),
            Value::Null => 0,
            _ => 1,
        },
    }
}

/// An error body in `kind`'s format.
/// Gemini's 429 (`RESOURCE_EXHAUSTED`) with the delay in a `google.rpc.RetryInfo` detail.
pub fn gemini_rate_limited(retry_delay: &str) -> Value {
    json!({"error": {"code": 429, "message": "mock: quota exceeded", "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}]}})
}

pub fn error_body(kind: Kind, status: u16, message: &str) -> Value {
    match kind {
        Kind::OpenAi | Kind::Azure => {
            let ty = match status {
                429 => "rate_limit_exceeded",
                401 => "invalid_request_error",
                400 => "invalid_request_error",
                _ => "server_error",
            };
            json!({"error": {"message": message, "type": ty, "param": null, "code": null}})
        }
        Kind::Anthropic => {
            let ty = match status {
                429 => "rate_limit_error",
                401 => "authentication_error",
                400 => "invalid_request_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": ty, "message": message}})
        }
        Kind::Gemini => {
            let st = match status {
                429 => "RESOURCE_EXHAUSTED",
                401 | 403 => "PERMISSION_DENIED",
                400 => "INVALID_ARGUMENT",
                _ => "INTERNAL",
            };
            json!({"error": {"code": status, "message": message, "status": st}})
        }
        Kind::Ollama => json!({"error": message}),
    }
}

/// The API key a request carries, in `kind`'s header.
pub fn api_key(kind: Kind, req: &crate::http1::Request) -> Option<String> {
    match kind {
        Kind::OpenAi | Kind::Ollama => req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(String::from),
        Kind::Azure => req.header("api-key").map(String::from),
        Kind::Anthropic => req.header("x-api-key").map(String::from),
        Kind::Gemini => req.header("x-goog-api-key").map(String::from),
    }
}
