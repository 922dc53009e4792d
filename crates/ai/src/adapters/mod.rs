//! Provider adapters. The gateway's canonical format is OpenAI's chat completions: each
//! adapter turns a canonical request into its provider's request, and the provider's
//! response, stream frames, errors and usage back into canonical form.
//!
//! Streams are decoded into [`Delta`]s, which the client-side writers (OpenAI chunks or
//! Anthropic events) re-encode.

mod anthropic;
mod gemini;
mod ollama;
mod openai;

use holdfast_core::config::ai::{Deployment, Provider};
use serde_json::{json, Value};

use crate::error::AiError;
use crate::usage::Usage;

/// One piece of a streamed answer, independent of any provider.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    Text(String),
    /// A tool call starts (`index` counts tool calls of this answer from 0).
    ToolStart {
        index: u32,
        id: String,
        name: String,
    },
    /// More JSON text of a tool call's arguments.
    ToolArgs {
        index: u32,
        args: String,
    },
    /// OpenAI finish reason: `stop`, `length`, `tool_calls`, `content_filter`.
    Finish(String),
    Usage(Usage),
    /// OpenAI-compatible providers only: one upstream chunk as it came (every choice `index`,
    /// `refusal`, `logprobs`, `system_fingerprint`, usage details, the id). OpenAI clients get
    /// it passed through; the canonical deltas above (choice 0) serve every other format.
    Chunk(Box<Value>),
    /// Anthropic providers only: one stream event as it came (`message_start` with the real
    /// usage, `thinking` blocks with their `signature_delta`, citations…). `/v1/messages`
    /// clients get it passed through; the canonical deltas serve OpenAI clients.
    Event(Box<Value>),
}

/// Where a `/v1/messages` request keeps the client's own Anthropic request inside the
/// canonical one: an Anthropic deployment is sent that request unchanged (`document`
/// blocks, `thinking`, `cache_control`, `top_k`, `metadata`…), other providers get the
/// canonical translation, and a 400 for what they cannot honour. Removed from every
/// request a client sends to `/v1/chat/completions`, and never sent to a provider.
pub(crate) const NATIVE_ANTHROPIC: &str = "__holdfast_anthropic_request";

/// The client's own Anthropic request, when the canonical request came from `/v1/messages`.
pub(crate) fn native_anthropic(req: &Value) -> Option<&Value> {
    req.get(NATIVE_ANTHROPIC).filter(|v| v.is_object())
}

/// The provider's name in error messages.
pub(crate) fn provider_name(p: Provider) -> &'static str {
    match p {
        Provider::OpenAi => "OpenAI",
        Provider::Azure => "Azure OpenAI",
        Provider::Anthropic => "Anthropic",
        Provider::Gemini => "Gemini",
        Provider::Ollama => "Ollama",
    }
}

/// Decodes one provider's stream frames into [`Delta`]s.
pub trait Decoder: Send {
    /// One SSE event (`event` name, `data`) or one NDJSON line (`event` empty).
    fn feed(&mut self, event: &str, data: &str) -> Result<Vec<Delta>, AiError>;
    /// The body ended cleanly: final deltas, or an error when the provider's end marker
    /// never came (a cut stream must not pass as complete).
    fn end(&mut self) -> Result<Vec<Delta>, AiError>;
    /// The model the provider says served the stream, once a frame named it.
    fn model(&self) -> Option<&str>;
}

/// How a provider frames its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Sse,
    Ndjson,
}

/// An upstream HTTP request, ready to send.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

/// Build the provider request for a canonical chat request.
pub fn chat_request(d: &Deployment, req: &Value, stream: bool) -> Result<UpstreamRequest, AiError> {
    if let Some(native) = native_anthropic(req) {
        if d.provider == Provider::Anthropic {
            return Ok(anthropic::native_request(d, native, stream));
        }
        crate::messages::check_native(native, d.provider)?;
    }
    match d.provider {
        Provider::OpenAi | Provider::Azure => Ok(openai::chat_request(d, req, stream)),
        Provider::Anthropic => anthropic::chat_request(d, req, stream),
        Provider::Gemini => gemini::chat_request(d, req, stream),
        Provider::Ollama => ollama::chat_request(d, req, stream),
    }
}

/// Turn a provider's complete response into a canonical `chat.completion` and its usage.
pub fn parse_chat(d: &Deployment, body: &[u8]) -> Result<(Value, Option<Usage>), AiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| AiError::bad_upstream(&d.name, e))?;
    match d.provider {
        Provider::OpenAi | Provider::Azure => openai::parse_chat(d, v),
        Provider::Anthropic => anthropic::parse_chat(d, v),
        Provider::Gemini => gemini::parse_chat(d, v),
        Provider::Ollama => ollama::parse_chat(d, v),
    }
}

/// [`parse_chat`], plus the provider's own answer when it is already an Anthropic message
/// (an Anthropic deployment), which `/v1/messages` clients get unchanged (thinking blocks,
/// citations, cache usage).
pub(crate) fn parse_chat_native(
    d: &Deployment,
    body: &[u8],
) -> Result<(Value, Option<Usage>, Option<Value>), AiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| AiError::bad_upstream(&d.name, e))?;
    match d.provider {
        Provider::Anthropic => {
            let native = v.clone();
            let (canonical, usage) = anthropic::parse_chat(d, v)?;
            Ok((canonical, usage, Some(native)))
        }
        Provider::OpenAi | Provider::Azure => openai::parse_chat(d, v).map(|(c, u)| (c, u, None)),
        Provider::Gemini => gemini::parse_chat(d, v).map(|(c, u)| (c, u, None)),
        Provider::Ollama => ollama::parse_chat(d, v).map(|(c, u)| (c, u, None)),
    }
}

/// A stream decoder for the deployment's provider.
pub fn decoder(d: &Deployment) -> Box<dyn Decoder> {
    match d.provider {
        Provider::OpenAi | Provider::Azure => Box::new(openai::StreamDecoder::new(&d.name)),
        Provider::Anthropic => Box::new(anthropic::StreamDecoder::new(&d.name)),
        Provider::Gemini => Box::new(gemini::StreamDecoder::new(&d.name)),
        Provider::Ollama => Box::new(ollama::StreamDecoder::new(&d.name)),
    }
}

pub fn framing(p: Provider) -> Framing {
    match p {
        Provider::Ollama => Framing::Ndjson,
        _ => Framing::Sse,
    }
}

/// Build the provider request for a canonical embeddings request.
pub fn embed_request(d: &Deployment, req: &Value) -> Result<UpstreamRequest, AiError> {
    let inputs: Vec<String> = match &req["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect(),
        Value::Array(_) if matches!(d.provider, Provider::OpenAi | Provider::Azure) => Vec::new(),
        _ => {
            return Err(AiError::bad_request(
                "`input` must be a string or an array of strings",
            ))
        }
    };
    match d.provider {
        Provider::OpenAi | Provider::Azure => Ok(openai::embed_request(d, req)),
        Provider::Gemini => Ok(gemini::embed_request(d, &inputs)),
        Provider::Ollama => Ok(ollama::embed_request(d, &inputs)),
        Provider::Anthropic => Err(AiError::bad_request(format!(
            "deployment {} is on Anthropic, which has no embeddings API; route embeddings to another provider",
            d.name
        ))),
    }
}

/// Turn a provider's embeddings response into OpenAI's shape (`usage` may be estimated later).
pub fn parse_embed(d: &Deployment, body: &[u8]) -> Result<(Value, Option<Usage>), AiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| AiError::bad_upstream(&d.name, e))?;
    let vectors: Vec<Value> = match d.provider {
        Provider::OpenAi | Provider::Azure => {
            let usage = v["usage"]["prompt_tokens"]
                .as_u64()
                .map(|input| Usage { input, output: 0 });
            return Ok((v, usage));
        }
        Provider::Gemini => v["embeddings"]
            .as_array()
            .map(|a| a.iter().map(|e| e["values"].clone()).collect())
            .ok_or_else(|| AiError::bad_upstream(&d.name, "no `embeddings` array"))?,
        Provider::Ollama => v["embeddings"]
            .as_array()
            .cloned()
            .ok_or_else(|| AiError::bad_upstream(&d.name, "no `embeddings` array"))?,
        Provider::Anthropic => return Err(AiError::bad_upstream(&d.name, "no embeddings API")),
    };
    let usage = v["prompt_eval_count"]
        .as_u64()
        .map(|input| Usage { input, output: 0 });
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
        .collect();
    Ok((
        json!({"object": "list", "data": data, "model": d.model}),
        usage,
    ))
}

/// The human message in a provider's error body (each provider nests it differently).
pub fn error_message(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body);
        return text.chars().take(300).collect();
    };
    v["error"]["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
        .or_else(|| v["message"].as_str())
        .map(String::from)
        .unwrap_or_else(|| v.to_string().chars().take(300).collect())
}

/// The error for a provider's error status, with the provider's own `code`, `param` and
/// `type` when it gave them (mapped to OpenAI's terms for Anthropic and Gemini). Those are
/// passed on only for errors that reach the client as the provider's status (4xx but the
/// provider refusing the gateway's key): for 401/403 and 5xx the client gets the gateway's
/// 502, and a provider code like `invalid_api_key` would mislead it.
pub fn upstream_error(
    d: &Deployment,
    status: u16,
    body: &[u8],
    retry_after: Option<std::time::Duration>,
) -> AiError {
    provider_error(d.provider, &d.name, status, body, retry_after)
}

/// [`upstream_error`] for a provider and deployment name (stream decoders know no more).
pub(crate) fn provider_error(
    provider: Provider,
    deployment: &str,
    status: u16,
    body: &[u8],
    retry_after: Option<std::time::Duration>,
) -> AiError {
    let e = AiError::upstream_status(deployment, status, &error_message(body), retry_after);
    if matches!(status, 401 | 403 | 500..=599) {
        return e;
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return e;
    };
    with_detail(provider, e, &v)
}

/// `e` with the provider's `code`, `param` and `type` from its error body `v`.
fn with_detail(provider: Provider, e: AiError, v: &Value) -> AiError {
    let (code, param, kind) = provider_detail(provider, &v["error"], &e.message);
    let anthropic_type = match provider {
        Provider::Anthropic => v["error"]["type"].as_str().map(String::from),
        _ => None,
    };
    let mut e = e
        .with_provider_detail(code, param, kind)
        .with_anthropic_type(anthropic_type);
    if e.provider_code() == Some("content_filter") {
        e.outcome = "content_filter";
    }
    e
}

/// An error event inside a provider's stream, after its 200 (`data: {"error": …}` from
/// OpenAI-compatible servers and Gemini, Anthropic's `event: error`). The client reads this
/// error in an SSE `error` event, not in a status, so the provider's `code`, `param` and
/// `type` always pass on (for 5xx-like errors too), as a 4xx's do on the non-stream path.
/// The status follows the error's kind: 429 for rate limits (retried before the stream is
/// committed), 400 for the request's own fault (not retried), else a 5xx (the client sees 502).
pub(crate) fn stream_error(provider: Provider, deployment: &str, v: &Value) -> AiError {
    let err = &v["error"];
    let message = err["message"]
        .as_str()
        .or_else(|| err.as_str())
        .unwrap_or("the provider sent an error event")
        .to_string();
    let kind = |k: &str| err["type"].as_str() == Some(k) || err["code"].as_str() == Some(k);
    let status = match provider {
        Provider::OpenAi | Provider::Azure => {
            // Some compatible servers (vLLM) give the HTTP status as a numeric `code`.
            let numeric = err["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..=599).contains(c));
            if let Some(status) = numeric {
                status
            } else if kind("rate_limit_exceeded")
                || kind("rate_limit_error")
                || kind("insufficient_quota")
            {
                429
            } else if kind("invalid_request_error") || kind("content_filter") {
                400
            } else {
                500
            }
        }
        Provider::Anthropic => match err["type"].as_str() {
            Some("rate_limit_error") => 429,
            Some("overloaded_error") => 529,
            Some("invalid_request_error") | Some("request_too_large") => 400,
            Some("not_found_error") => 404,
            _ => 500,
        },
        Provider::Gemini => err["code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (400..=599).contains(c))
            .unwrap_or(500),
        Provider::Ollama => 500,
    };
    let e = AiError::upstream_status(deployment, status, &message, None);
    if provider == Provider::Ollama {
        return e;
    }
    let mut e = with_detail(provider, e, v);
    if provider == Provider::Anthropic && e.provider_code().is_none() {
        // OpenAI clients get Anthropic's own type (`overloaded_error`…) as the code.
        let ty = err["type"].as_str().map(String::from);
        e = e.with_provider_detail(ty, None, None);
    }
    e
}

/// `(code, param, type)` of a provider's `error` object.
fn provider_detail(
    provider: Provider,
    err: &Value,
    message: &str,
) -> (Option<String>, Option<String>, Option<String>) {
    let text = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let too_long = |m: &str| {
        let m = m.to_ascii_lowercase();
        m.contains("prompt is too long")
            || m.contains("exceeds the maximum number of tokens")
            || m.contains("context length")
            || m.contains("context window")
    };
    match provider {
        Provider::OpenAi | Provider::Azure => {
            (text(&err["code"]), text(&err["param"]), text(&err["type"]))
        }
        Provider::Anthropic => {
            let code = match err["type"].as_str() {
                _ if too_long(message) => Some("context_length_exceeded".to_string()),
                Some("request_too_large") => Some("request_too_large".to_string()),
                Some("not_found_error") => Some("model_not_found".to_string()),
                _ => None,
            };
            let kind = match err["type"].as_str() {
                Some("rate_limit_error") => Some("rate_limit_error"),
                Some("invalid_request_error" | "request_too_large" | "not_found_error") => {
                    Some("invalid_request_error")
                }
                Some(_) => Some("api_error"),
                None => None,
            };
            (code, None, kind.map(String::from))
        }
        Provider::Gemini => {
            // `{"code": 400, "message", "status": "INVALID_ARGUMENT", "details": [...]}`.
            let code = if too_long(message) {
                Some("context_length_exceeded".to_string())
            } else {
                err["status"].as_str().map(str::to_ascii_lowercase)
            };
            let param = err["details"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|d| d["fieldViolations"][0]["field"].as_str())
                .map(String::from);
            (code, param, None)
        }
        Provider::Ollama => (None, None, None),
    }
}

/// `data:image/png;base64,AAAA` → (`image/png`, `AAAA`).
pub(crate) fn parse_data_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    Some((mime.to_string(), data.to_string()))
}

/// The text of an OpenAI message content (string, or the text parts of an array joined
/// with `\n`, so words at part boundaries do not run together).
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// System (and developer) messages joined, plus a JSON instruction when JSON mode is asked
/// of a provider without a JSON switch.
pub(crate) fn system_text(req: &Value, add_json_instruction: bool) -> Option<String> {
    let mut parts: Vec<String> = req["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "system" || m["role"] == "developer")
        .map(|m| content_text(&m["content"]))
        .collect();
    if add_json_instruction {
        match json_mode(req) {
            Some(Some(schema)) => parts.push(format!(
                "Respond with only a JSON object that follows this JSON schema: {schema}"
            )),
            Some(None) => parts.push("Respond with only a valid JSON object.".to_string()),
            None => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

/// `Some(schema?)` when `response_format` asks for JSON.
pub(crate) fn json_mode(req: &Value) -> Option<Option<Value>> {
    match req["response_format"]["type"].as_str() {
        Some("json_object") => Some(None),
        Some("json_schema") => Some(Some(
            req["response_format"]["json_schema"]["schema"].clone(),
        )),
        _ => None,
    }
}

/// `max_completion_tokens`, else `max_tokens`.
pub(crate) fn max_tokens(req: &Value) -> Option<u64> {
    req["max_completion_tokens"]
        .as_u64()
        .or_else(|| req["max_tokens"].as_u64())
}

/// `stop` as a list.
pub(crate) fn stop_list(req: &Value) -> Option<Vec<String>> {
    match &req["stop"] {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect(),
        ),
        _ => None,
    }
}

/// A canonical `chat.completion` from its parts.
pub(crate) fn completion(
    id: &str,
    model: &str,
    text: Option<String>,
    tool_calls: Vec<Value>,
    finish: &str,
    usage: Option<Usage>,
) -> Value {
    let mut message = json!({"role": "assistant", "content": text});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let mut v = json!({
        "id": id, "object": "chat.completion", "created": crate::now_secs(), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
    });
    if let Some(u) = usage {
        v["usage"] = json!({"prompt_tokens": u.input, "completion_tokens": u.output,
            "total_tokens": u.input + u.output});
    }
    v
}

/// Parse a JSON string of tool arguments (an object), keeping bad JSON as a string value.
pub(crate) fn parse_args(args: &Value) -> Value {
    match args {
        Value::String(s) if s.trim().is_empty() => json!({}),
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| json!({"_raw": s})),
        Value::Object(_) => args.clone(),
        _ => json!({}),
    }
}

/// Append `items` to the last turn when it has the same role, else start a new turn: Anthropic
/// and Gemini both want consecutive messages of one role merged into one turn.
pub(crate) fn push_turn(turns: &mut Vec<(String, Vec<Value>)>, role: &str, items: Vec<Value>) {
    match turns.last_mut() {
        Some((r, existing)) if r == role => existing.extend(items),
        _ => turns.push((role.to_string(), items)),
    }
}

/// The turns as `{"role": ..., "<key>": [...]}` objects.
pub(crate) fn turns_json(turns: Vec<(String, Vec<Value>)>, key: &str) -> Vec<Value> {
    turns
        .into_iter()
        .map(|(role, items)| json!({"role": role, key: items}))
        .collect()
}

/// The error for a chat message whose role no provider understands.
pub(crate) fn unknown_role(role: Option<&str>) -> AiError {
    match role {
        Some(r) => AiError::bad_request(format!(
            "message role `{r}` is not one of system, developer, user, assistant, tool"
        )),
        None => AiError::bad_request("a message has no `role`"),
    }
}

/// The error for a content part the deployment's provider cannot take.
pub(crate) fn unsupported_part(part_type: Option<&str>, provider: &str) -> AiError {
    match part_type {
        Some(t) => AiError::bad_request(format!(
            "content part type `{t}` is not supported for {provider} deployments"
        )),
        None => AiError::bad_request("a content part has no `type`"),
    }
}

/// A tool call id for providers that do not give one (Gemini, Ollama): unique across
/// turns, as clients match tool results to calls by id.
pub(crate) fn tool_call_id() -> String {
    crate::new_id("call_")
}
