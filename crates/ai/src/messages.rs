//! The Anthropic-compatible entry `POST /v1/messages`: an Anthropic request becomes a
//! canonical (OpenAI) request routed to any provider, and the canonical answer becomes an
//! Anthropic message.

use serde_json::{json, Value};

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
                Some("image") => {
                    let src = &b["source"];
                    let url = match src["type"].as_str() {
                        Some("base64") => format!(
                            "data:{};base64,{}",
                            src["media_type"].as_str().unwrap_or("image/png"),
                            src["data"].as_str().unwrap_or_default()
                        ),
                        _ => src["url"].as_str().unwrap_or_default().to_string(),
                    };
                    parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                }
                Some("tool_use") => calls.push(json!({"id": b["id"], "type": "function",
                    "function": {"name": b["name"], "arguments": b["input"].to_string()}})),
                Some("tool_result") => out.push(json!({"role": "tool",
                    "tool_call_id": b["tool_use_id"], "content": block_text(&b["content"])})),
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
    for key in ["temperature", "top_p", "stream"] {
        if let Some(v) = req.get(key).filter(|v| !v.is_null()) {
            body[key] = v.clone();
        }
    }
    if let Some(stop) = req.get("stop_sequences").filter(|v| v.is_array()) {
        body["stop"] = stop.clone();
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
    Ok(body)
}

/// Canonical `chat.completion` → Anthropic message.
pub fn from_openai(completion: &Value, model: &str) -> Value {
    let msg = &completion["choices"][0]["message"];
    let mut content = Vec::new();
    if let Some(t) = msg["content"].as_str().filter(|t| !t.is_empty()) {
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
        "stop_reason": stop_reason(finish), "stop_sequence": null,
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
