//! The Anthropic-compatible entry `POST /v1/messages`: an Anthropic request becomes a
//! canonical (OpenAI) request routed to any provider, and the canonical answer becomes an
//! Anthropic message.
//!
//! The client's own request travels along ([`crate::adapters::NATIVE_ANTHROPIC`]): an
//! Anthropic deployment is sent it unchanged, and answers unchanged. For other providers,
//! [`check_native`] refuses (400, naming the field and the provider) what the translation
//! cannot honour, so nothing the client asked for is dropped silently.

use holdfast_core::config::ai::Provider;
use serde_json::{json, Value};

use crate::adapters::{provider_name, NATIVE_ANTHROPIC};
use crate::error::AiError;
use crate::stream_out::{anthropic_usage, stop_reason};
use crate::usage::Usage;

fn block_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Anthropic Messages request → OpenAI chat request.
pub fn to_openai(req: &Value) -> Result<Value, AiError> {
    let model = req["model"]
        .as_str()
        .ok_or_else(|| AiError::bad_request("`model` is required"))?;
    let max_tokens = match &req["max_tokens"] {
        Value::Null => {
            return Err(AiError::invalid_field(
                "max_tokens",
                "missing_required_parameter",
                "`max_tokens` is required (Anthropic Messages format)",
            ))
        }
        v => crate::handler::positive_int("max_tokens", v)?,
    };
    let Some(msgs) = req["messages"].as_array() else {
        return Err(AiError::invalid_field(
            "messages",
            "invalid_type",
            "`messages` must be an array",
        ));
    };
    if msgs.is_empty() {
        return Err(AiError::invalid_field(
            "messages",
            "empty_array",
            "`messages` must hold at least one message",
        ));
    }
    let mut out = Vec::new();
    let system = block_text(&req["system"]);
    if !system.is_empty() {
        out.push(json!({"role": "system", "content": system}));
    }
    for (i, m) in msgs.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(AiError::invalid_field(
                format!("messages.{i}.role"),
                "invalid_value",
                format!("messages.{i}.role: `{role}` must be user or assistant"),
            ));
        }
        let blocks = match &m["content"] {
            Value::String(s) => {
                out.push(json!({"role": role, "content": s}));
                continue;
            }
            Value::Array(b) => b,
            _ => {
                return Err(AiError::bad_request(
                    "message `content` must be a string or an array",
                ))
            }
        };
        let mut parts = Vec::new();
        let mut calls = Vec::new();
        for b in blocks {
            match b["type"].as_str() {
                Some("text") => parts.push(json!({"type": "text", "text": b["text"]})),
                Some("image") => parts.push(image_part(&b["source"])),
                Some("document") => parts.extend(document_parts(b)),
                Some("tool_use") => calls.push(json!({"id": b["id"], "type": "function",
                    "function": {"name": b["name"], "arguments": b["input"].to_string()}})),
                Some("tool_result") => out.push(json!({"role": "tool",
                    "tool_call_id": b["tool_use_id"], "content": block_text(&b["content"])})),
                // Earlier turns' thinking: Anthropic itself leaves it out of the context of
                // a new turn, and other providers never made it. Whatever else a provider
                // other than Anthropic cannot take is refused by `check_native`.
                _ => {}
            }
        }
        if parts.is_empty() && calls.is_empty() {
            continue;
        }
        let mut msg = json!({"role": role, "content": if parts.is_empty() { Value::Null } else { json!(parts) }});
        if !calls.is_empty() {
            msg["tool_calls"] = json!(calls);
        }
        out.push(msg);
    }
    let mut body = json!({"model": model, "messages": out, "max_tokens": max_tokens});
    // `top_k` is not OpenAI's, but Gemini (`topK`) and Ollama (`options.top_k`) take it;
    // `check_native` refuses it for OpenAI and Azure deployments.
    for key in ["temperature", "top_p", "top_k", "stream"] {
        if let Some(v) = req.get(key).filter(|v| !v.is_null()) {
            body[key] = v.clone();
        }
    }
    if let Some(stop) = req.get("stop_sequences").filter(|v| v.is_array()) {
        body["stop"] = stop.clone();
    }
    // Anthropic's end-user id is OpenAI's `user` (other providers have no such field).
    if let Some(user) = req["metadata"]["user_id"].as_str() {
        body["user"] = json!(user);
    }
    if req["tool_choice"]["disable_parallel_tool_use"] == json!(true) {
        body["parallel_tool_calls"] = json!(false);
    }
    if let Some(tools) = req["tools"].as_array() {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {"name": t["name"],
                "description": t["description"], "parameters": t["input_schema"]}})
            })
            .collect();
        body["tools"] = json!(tools);
    }
    match req["tool_choice"]["type"].as_str() {
        Some("auto") => body["tool_choice"] = json!("auto"),
        Some("any") => body["tool_choice"] = json!("required"),
        Some("none") => body["tool_choice"] = json!("none"),
        Some("tool") => {
            body["tool_choice"] =
                json!({"type": "function", "function": {"name": req["tool_choice"]["name"]}})
        }
        _ => {}
    }
    body[NATIVE_ANTHROPIC] = req.clone();
    Ok(body)
}

/// A `document` block as canonical parts: a base64 PDF as OpenAI's `file` part, plain
/// text (or a content list) as text and image parts, and its `context` as a text part
/// before it. URL and Files API sources have no canonical form (`check_native` refuses
/// them for providers other than Anthropic).
fn document_parts(b: &Value) -> Vec<Value> {
    let mut parts = Vec::new();
    if let Some(context) = b["context"].as_str().filter(|c| !c.is_empty()) {
        parts.push(json!({"type": "text", "text": context}));
    }
    let src = &b["source"];
    match src["type"].as_str() {
        Some("base64") => {
            let mime = src["media_type"].as_str().unwrap_or("application/pdf");
            let data = src["data"].as_str().unwrap_or_default();
            let name = b["title"].as_str().unwrap_or("document.pdf");
            parts.push(json!({"type": "file", "file": {"filename": name,
                "file_data": format!("data:{mime};base64,{data}")}}));
        }
        Some("text") => {
            let text = src["data"].as_str().unwrap_or_default();
            let text = match b["title"].as_str() {
                Some(title) => format!("{title}\n\n{text}"),
                None => text.to_string(),
            };
            parts.push(json!({"type": "text", "text": text}));
        }
        Some("content") => match &src["content"] {
            Value::String(text) => parts.push(json!({"type": "text", "text": text})),
            Value::Array(blocks) => {
                for c in blocks {
                    match c["type"].as_str() {
                        Some("text") => parts.push(json!({"type": "text", "text": c["text"]})),
                        Some("image") => parts.push(image_part(&c["source"])),
                        _ => {}
                    }
                }
            }
            _ => {}
        },
        _ => {}
    }
    parts
}

/// An Anthropic image `source` as OpenAI's `image_url` part.
fn image_part(src: &Value) -> Value {
    let url = match src["type"].as_str() {
        Some("base64") => format!(
            "data:{};base64,{}",
            src["media_type"].as_str().unwrap_or("image/png"),
            src["data"].as_str().unwrap_or_default()
        ),
        _ => src["url"].as_str().unwrap_or_default().to_string(),
    };
    json!({"type": "image_url", "image_url": {"url": url}})
}

/// Top-level fields of an Anthropic request the translation carries to every provider.
const TRANSLATED: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
];

/// Content block types the translation understands.
const BLOCKS: &[&str] = &[
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
];

/// The 400 for a `/v1/messages` feature a provider other than Anthropic cannot honour.
fn not_supported(param: String, what: &str, provider: Provider) -> AiError {
    AiError::invalid_field(
        param,
        "unsupported_parameter",
        format!(
            "{what} is not supported for {} deployments (only Anthropic deployments take it); \
             route this request to a model on Anthropic, or leave it out",
            provider_name(provider)
        ),
    )
}

/// Refuse (400 `invalid_request_error`, naming the field and the provider) what a
/// `/v1/messages` request asks for and a provider other than Anthropic cannot honour:
/// `thinking`, `top_k` on OpenAI and Azure, `document` blocks from a URL or the Files API
/// or with citations (and PDF documents on Ollama), image sources other than base64 and
/// URLs, non-text blocks in tool results, server tools, `disable_parallel_tool_use` on
/// Gemini and Ollama, `metadata` other than `user_id`, and fields or block types the
/// translation does not know.
///
/// Accepted without a field to send, as they cannot change the answer: `cache_control`
/// (OpenAI, Azure and Gemini cache prompt prefixes by themselves) and `metadata.user_id`
/// on Gemini and Ollama (an end-user label; OpenAI and Azure get it as `user`). Earlier
/// turns' `thinking` blocks are left out, as Anthropic itself leaves them out.
pub(crate) fn check_native(req: &Value, provider: Provider) -> Result<(), AiError> {
    let refuse = |param: String, what: &str| Err(not_supported(param, what, provider));
    if let Some(key) = req
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .find(|k| !TRANSLATED.contains(&k.as_str()))
    {
        return refuse(key.clone(), &format!("`{key}`"));
    }
    if !req["top_k"].is_null() && matches!(provider, Provider::OpenAi | Provider::Azure) {
        return refuse("top_k".into(), "`top_k`");
    }
    match &req["thinking"] {
        Value::Null => {}
        t if t["type"] == "disabled" => {}
        _ => return refuse("thinking".into(), "extended thinking (`thinking`)"),
    }
    if let Some(key) = req["metadata"]
        .as_object()
        .and_then(|m| m.keys().find(|k| *k != "user_id"))
    {
        return refuse(format!("metadata.{key}"), &format!("`metadata.{key}`"));
    }
    if req["tool_choice"]["disable_parallel_tool_use"] == json!(true)
        && matches!(provider, Provider::Gemini | Provider::Ollama)
    {
        return refuse(
            "tool_choice.disable_parallel_tool_use".into(),
            "`tool_choice.disable_parallel_tool_use`",
        );
    }
    for (i, t) in req["tools"].as_array().into_iter().flatten().enumerate() {
        if let Some(ty) = t["type"].as_str().filter(|ty| *ty != "custom") {
            return refuse(
                format!("tools.{i}.type"),
                &format!("the server tool `{ty}`"),
            );
        }
    }
    for (i, m) in req["messages"].as_array().into_iter().flatten().enumerate() {
        for (j, b) in m["content"].as_array().into_iter().flatten().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            let ty = b["type"].as_str().unwrap_or_default();
            if !BLOCKS.contains(&ty) {
                return refuse(
                    format!("{at}.type"),
                    &format!("the content block type `{ty}`"),
                );
            }
            let source = b["source"]["type"].as_str().unwrap_or_default();
            match ty {
                "image" if !matches!(source, "base64" | "url") => {
                    return refuse(
                        format!("{at}.source.type"),
                        &format!("an image with a `{source}` source"),
                    )
                }
                "document" if provider == Provider::Ollama && source == "base64" => {
                    return refuse(at, "a PDF `document` block");
                }
                "document" if !matches!(source, "base64" | "text" | "content") => {
                    return refuse(
                        format!("{at}.source.type"),
                        &format!("a `document` with a `{source}` source"),
                    )
                }
                "document" if b["citations"]["enabled"] == json!(true) => {
                    return refuse(format!("{at}.citations"), "`citations` on a document");
                }
                "tool_result" => {
                    let inner = b["content"].as_array().into_iter().flatten().enumerate();
                    if let Some((k, c)) = inner.clone().find(|(_, c)| c["type"] != "text") {
                        let kind = c["type"].as_str().unwrap_or_default();
                        return refuse(
                            format!("{at}.content.{k}.type"),
                            &format!("a `{kind}` block in a tool_result"),
                        );
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// An Anthropic deployment's answer for a `/v1/messages` client: as it came, with an id
/// made when it has none.
pub fn native_message(mut message: Value) -> Value {
    if message.is_object() && message["id"].as_str().is_none_or(str::is_empty) {
        message["id"] = json!(crate::new_id("msg_"));
    }
    message
}

/// Canonical `chat.completion` → Anthropic message.
pub fn from_openai(completion: &Value, model: &str) -> Value {
    let msg = &completion["choices"][0]["message"];
    let mut content = Vec::new();
    if let Some(t) = msg["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    // OpenAI's `refusal` is text for Anthropic clients, ending with Anthropic's own
    // `stop_reason: "refusal"`.
    let refusal = msg["refusal"].as_str().filter(|t| !t.is_empty());
    if let Some(t) = refusal {
        content.push(json!({"type": "text", "text": t}));
    }
    for call in msg["tool_calls"].as_array().into_iter().flatten() {
        let input = call["function"]["arguments"]
            .as_str()
            .and_then(|a| serde_json::from_str::<Value>(a).ok())
            .unwrap_or_else(|| json!({}));
        content.push(json!({"type": "tool_use", "id": call["id"],
            "name": call["function"]["name"], "input": input}));
    }
    let finish = completion["choices"][0]["finish_reason"]
        .as_str()
        .unwrap_or("stop");
    let u = &completion["usage"];
    let usage = Usage {
        input: u["prompt_tokens"].as_u64().unwrap_or(0),
        output: u["completion_tokens"].as_u64().unwrap_or(0),
    };
    json!({
        "id": crate::new_id("msg_"),
        "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": if refusal.is_some() { "refusal" } else { stop_reason(finish) },
        "stop_sequence": null,
        "usage": anthropic_usage(usage, u["estimated"] == json!(true)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_tools_and_system() {
        let req = json!({"model": "smart", "max_tokens": 100, "system": "be brief",
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "w", "input": {"c": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]}],
            "tools": [{"name": "w", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"}});
        let o = to_openai(&req).unwrap();
        assert_eq!(
            o["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            o["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"c\":1}"
        );
        assert_eq!(o["messages"][3]["role"], "tool");
        assert_eq!(o["messages"][3]["content"], "sunny");
        assert_eq!(o["tool_choice"], "required");
        assert!(to_openai(&json!({"model": "m", "messages": []})).is_err());
    }
}
