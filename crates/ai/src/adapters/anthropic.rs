//! Anthropic Messages API (`POST /v1/messages`, `anthropic-version: 2023-06-01`): system
//! prompt apart, `max_tokens` required, content blocks (`text`, `image`, `tool_use`,
//! `tool_result`), and the stream events `message_start`, `content_block_start`,
//! `content_block_delta`, `content_block_stop`, `message_delta`, `message_stop`, `ping`, `error`.

use std::collections::HashMap;

use holdfast_core::config::ai::Deployment;
use serde_json::{json, Value};

use super::{
    completion, content_text, max_tokens, parse_args, parse_data_url, push_turn, stop_list,
    system_text, turns_json, unknown_role, unsupported_part, Decoder, Delta, UpstreamRequest,
};
use crate::error::AiError;
use crate::usage::Usage;

/// Used when the client gives no `max_tokens` (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

pub fn chat_request(d: &Deployment, req: &Value, stream: bool) -> Result<UpstreamRequest, AiError> {
    let mut body = json!({
        "model": d.model,
        "max_tokens": max_tokens(req).unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": messages(req)?,
    });
    if let Some(system) = system_text(req, true) {
        body["system"] = json!(system);
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
    ] {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            body[to] = v.clone();
        }
    }
    if let Some(stop) = stop_list(req) {
        body["stop_sequences"] = json!(stop);
    }
    if let Some(tools) = req["tools"].as_array() {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                let mut tool = json!({
                    "name": f["name"],
                    "input_schema": if f["parameters"].is_object() { f["parameters"].clone() }
                        else { json!({"type": "object", "properties": {}}) },
                });
                if let Some(desc) = f["description"].as_str() {
                    tool["description"] = json!(desc);
                }
                tool
            })
            .collect();
        body["tools"] = json!(tools);
    }
    match &req["tool_choice"] {
        Value::String(s) if s == "auto" => body["tool_choice"] = json!({"type": "auto"}),
        Value::String(s) if s == "required" => body["tool_choice"] = json!({"type": "any"}),
        Value::String(s) if s == "none" => body["tool_choice"] = json!({"type": "none"}),
        Value::Object(_) => {
            body["tool_choice"] =
                json!({"type": "tool", "name": req["tool_choice"]["function"]["name"]})
        }
        _ => {}
    }
    if stream {
        body["stream"] = json!(true);
    }
    Ok(UpstreamRequest {
        url: format!("{}/v1/messages", d.base_url),
        headers: headers(d),
        body,
    })
}

/// The client's own Anthropic request (from `/v1/messages`), sent unchanged but for the
/// deployment's `model` and the stream flag: `document` blocks, `thinking` (and the
/// thinking blocks of earlier turns, with their signatures), `cache_control`, `top_k`,
/// `metadata`, `stop_sequences`, server tools and whatever else Anthropic takes.
pub fn native_request(d: &Deployment, native: &Value, stream: bool) -> UpstreamRequest {
    let mut body = native.clone();
    body["model"] = json!(d.model);
    if body.get("max_tokens").is_none_or(Value::is_null) {
        body["max_tokens"] = json!(DEFAULT_MAX_TOKENS);
    }
    if stream {
        body["stream"] = json!(true);
    } else if let Some(o) = body.as_object_mut() {
        o.remove("stream");
    }
    UpstreamRequest {
        url: format!("{}/v1/messages", d.base_url),
        headers: headers(d),
        body,
    }
}

fn headers(d: &Deployment) -> Vec<(&'static str, String)> {
    let mut headers = vec![("anthropic-version", "2023-06-01".to_string())];
    if !d.api_key.is_empty() {
        headers.push(("x-api-key", d.api_key.clone()));
    }
    headers
}

/// An OpenAI `file` part (a PDF as a `data:` URL) as an Anthropic `document` block.
fn document_block(p: &Value) -> Result<Value, AiError> {
    let file = &p["file"];
    let Some(url) = file["file_data"].as_str() else {
        return Err(AiError::bad_request(
            "a `file` part needs `file_data` (a base64 data: URL) for Anthropic deployments; \
             `file_id` refers to OpenAI's file store",
        ));
    };
    let Some((mime, data)) = parse_data_url(url) else {
        return Err(AiError::bad_request(
            "a `file` part's `file_data` must be a base64 data: URL",
        ));
    };
    let mut block =
        json!({"type": "document", "source": {"type": "base64", "media_type": mime, "data": data}});
    if let Some(name) = file["filename"].as_str() {
        block["title"] = json!(name);
    }
    Ok(block)
}

fn image_block(url: &str) -> Value {
    match parse_data_url(url) {
        Some((mime, data)) => {
            json!({"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}})
        }
        None => json!({"type": "image", "source": {"type": "url", "url": url}}),
    }
}

fn user_blocks(content: &Value) -> Result<Vec<Value>, AiError> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p["type"].as_str() {
                Some("text") => Ok(json!({"type": "text", "text": p["text"]})),
                Some("image_url") => {
                    let url = p["image_url"]["url"]
                        .as_str()
                        .or_else(|| p["image_url"].as_str());
                    url.map(image_block)
                        .ok_or_else(|| AiError::bad_request("an image_url part has no url"))
                }
                Some("file") => document_block(p),
                other => Err(unsupported_part(other, "Anthropic")),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(AiError::bad_request(
            "message `content` must be a string or an array",
        )),
    }
}

/// OpenAI messages (minus system) → Anthropic messages with alternating roles.
fn messages(req: &Value) -> Result<Vec<Value>, AiError> {
    let Some(msgs) = req["messages"].as_array() else {
        return Err(AiError::bad_request("`messages` must be an array"));
    };
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for m in msgs {
        let (role, blocks) = match m["role"].as_str() {
            Some("system") | Some("developer") => continue,
            Some("user") => ("user", user_blocks(&m["content"])?),
            Some("assistant") => {
                let mut blocks = Vec::new();
                let text = content_text(&m["content"]);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in m["tool_calls"].as_array().into_iter().flatten() {
                    blocks.push(json!({"type": "tool_use", "id": call["id"],
                        "name": call["function"]["name"],
                        "input": parse_args(&call["function"]["arguments"])}));
                }
                ("assistant", blocks)
            }
            Some("tool") => (
                "user",
                vec![
                    json!({"type": "tool_result", "tool_use_id": m["tool_call_id"],
                    "content": content_text(&m["content"])}),
                ],
            ),
            other => return Err(unknown_role(other)),
        };
        push_turn(&mut out, role, blocks);
    }
    Ok(turns_json(out, "content"))
}

pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

fn usage_of(u: &Value) -> Option<Usage> {
    let input = u["input_tokens"].as_u64()?
        + u["cache_creation_input_tokens"].as_u64().unwrap_or(0)
        + u["cache_read_input_tokens"].as_u64().unwrap_or(0);
    Some(Usage {
        input,
        output: u["output_tokens"].as_u64().unwrap_or(0),
    })
}

pub fn parse_chat(d: &Deployment, v: Value) -> Result<(Value, Option<Usage>), AiError> {
    let Some(blocks) = v["content"].as_array() else {
        return Err(AiError::bad_upstream(
            &d.name,
            "no `content` in the message",
        ));
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or_default()),
            Some("tool_use") => calls.push(json!({"id": b["id"], "type": "function",
                "function": {"name": b["name"], "arguments": b["input"].to_string()}})),
            _ => {}
        }
    }
    let usage = usage_of(&v["usage"]);
    let finish = finish_reason(v["stop_reason"].as_str().unwrap_or("end_turn"));
    let id = crate::new_id("chatcmpl-");
    let model = v["model"].as_str().unwrap_or(&d.model);
    let text = (!text.is_empty() || calls.is_empty()).then_some(text);
    Ok((completion(&id, model, text, calls, finish, usage), usage))
}

/// Anthropic stream events → deltas.
///
/// Every event is also handed on whole ([`Delta::Event`]), so a `/v1/messages` client gets
/// the provider's stream as it is: `message_start` with the real usage, `thinking` blocks
/// with their `signature_delta`, citations, cache usage. Events without content
/// (`message_start`, `ping`, an empty text block's start) are held back until the first
/// event with content, so the stream still commits (and stops failing over) only then.
pub struct StreamDecoder {
    deployment: String,
    input: u64,
    output: u64,
    /// Content block index → tool call index.
    tools: HashMap<u64, u32>,
    stopped: bool,
    model: Option<String>,
    pending: Vec<Value>,
    started: bool,
}

impl StreamDecoder {
    pub fn new(deployment: &str) -> Self {
        StreamDecoder {
            deployment: deployment.to_string(),
            input: 0,
            output: 0,
            tools: HashMap::new(),
            stopped: false,
            model: None,
            pending: Vec::new(),
            started: false,
        }
    }

    /// The held-back events, then `v`, as [`Delta::Event`]s.
    fn events(&mut self, v: Option<Value>) -> Vec<Delta> {
        self.pending
            .drain(..)
            .chain(v)
            .map(|e| Delta::Event(Box::new(e)))
            .collect()
    }
}

/// True when an event carries content for the client (anything but the message's start,
/// pings, and the start or end of a block that has no content yet).
fn has_content(v: &Value) -> bool {
    match v["type"].as_str() {
        Some("message_start") | Some("ping") | Some("content_block_stop") => false,
        Some("content_block_start") => {
            let block = &v["content_block"];
            match block["type"].as_str() {
                Some("text") => block["text"].as_str().is_some_and(|t| !t.is_empty()),
                Some("thinking") => block["thinking"].as_str().is_some_and(|t| !t.is_empty()),
                _ => true,
            }
        }
        _ => true,
    }
}

impl Decoder for StreamDecoder {
    fn feed(&mut self, _event: &str, data: &str) -> Result<Vec<Delta>, AiError> {
        if data.trim().is_empty() {
            return Ok(Vec::new());
        }
        let v: Value =
            serde_json::from_str(data).map_err(|e| AiError::bad_upstream(&self.deployment, e))?;
        let mut out = Vec::new();
        match v["type"].as_str() {
            Some("message_start") => {
                if let Some(m) = v["message"]["model"].as_str() {
                    self.model = Some(m.to_string());
                }
                if let Some(u) = usage_of(&v["message"]["usage"]) {
                    self.input = u.input;
                    self.output = u.output;
                }
            }
            Some("content_block_start") => {
                let block = &v["content_block"];
                if block["type"] == "tool_use" {
                    let index = self.tools.len() as u32;
                    self.tools.insert(v["index"].as_u64().unwrap_or(0), index);
                    out.push(Delta::ToolStart {
                        index,
                        id: block["id"].as_str().unwrap_or_default().to_string(),
                        name: block["name"].as_str().unwrap_or_default().to_string(),
                    });
                } else if block["type"] == "text" {
                    if let Some(t) = block["text"].as_str().filter(|t| !t.is_empty()) {
                        out.push(Delta::Text(t.to_string()));
                    }
                }
            }
            Some("content_block_delta") => {
                let delta = &v["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => out.push(Delta::Text(
                        delta["text"].as_str().unwrap_or_default().to_string(),
                    )),
                    Some("input_json_delta") => {
                        let block = v["index"].as_u64().unwrap_or(0);
                        let index = self.tools.get(&block).copied().unwrap_or(0);
                        let args = delta["partial_json"].as_str().unwrap_or_default();
                        if !args.is_empty() {
                            out.push(Delta::ToolArgs {
                                index,
                                args: args.to_string(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                // Cumulative counts; the current API also sends `input_tokens` here.
                let u = &v["usage"];
                if u["input_tokens"].is_u64() {
                    if let Some(u) = usage_of(u) {
                        self.input = u.input;
                    }
                }
                if let Some(o) = u["output_tokens"].as_u64() {
                    self.output = o;
                }
                if let Some(stop) = v["delta"]["stop_reason"].as_str() {
                    out.push(Delta::Finish(finish_reason(stop).to_string()));
                }
            }
            Some("message_stop") => {
                self.stopped = true;
                out.push(Delta::Usage(Usage {
                    input: self.input,
                    output: self.output,
                }));
            }
            Some("error") => {
                return Err(super::stream_error(
                    holdfast_core::config::ai::Provider::Anthropic,
                    &self.deployment,
                    &v,
                ));
            }
            _ => {}
        }
        if !v["type"].is_string() {
            // Not an Anthropic event: nothing to pass on.
            return Ok(out);
        }
        if !(self.started || has_content(&v)) {
            self.pending.push(v);
            return Ok(Vec::new());
        }
        self.started = true;
        let mut all = self.events(Some(v));
        all.append(&mut out);
        Ok(all)
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn end(&mut self) -> Result<Vec<Delta>, AiError> {
        if self.stopped {
            Ok(self.events(None))
        } else {
            Err(AiError::reset(
                &self.deployment,
                "the stream ended without message_stop",
                true,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut StreamDecoder, v: Value) -> Vec<Delta> {
        d.feed("", &v.to_string()).unwrap()
    }

    #[test]
    fn events_are_held_back_until_content() {
        let mut d = StreamDecoder::new("a");
        let start = json!({"type": "message_start", "message": {"model": "claude",
            "usage": {"input_tokens": 10, "output_tokens": 1}}});
        assert!(feed(&mut d, start.clone()).is_empty());
        assert!(feed(&mut d, json!({"type": "ping"})).is_empty());
        let thinking = json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""}});
        assert!(feed(&mut d, thinking).is_empty());
        let delta = json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hmm"}});
        let out = feed(&mut d, delta);
        // The held-back events come first, in order, then the one with content.
        let names: Vec<String> = out
            .iter()
            .filter_map(|d| match d {
                Delta::Event(e) => e["type"].as_str().map(String::from),
                _ => None,
            })
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta"
            ]
        );
        assert_eq!(out[0], Delta::Event(Box::new(start)));
    }

    #[test]
    fn message_delta_input_tokens_count() {
        let mut d = StreamDecoder::new("a");
        let start = json!({"type": "message_start", "message": {"model": "claude",
            "usage": {"input_tokens": 10, "output_tokens": 1}}});
        feed(&mut d, start);
        let text = json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "hi"}});
        feed(&mut d, text);
        // The current API's message_delta carries cumulative input tokens too.
        feed(
            &mut d,
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                "usage": {"input_tokens": 12, "cache_read_input_tokens": 3, "output_tokens": 4}}),
        );
        let out = feed(&mut d, json!({"type": "message_stop"}));
        assert!(out.contains(&Delta::Usage(Usage {
            input: 15,
            output: 4
        })));
        assert!(d.end().is_ok());
    }
}
