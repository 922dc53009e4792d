//! Ollama's native `POST /api/chat`: `messages` with `images` (raw base64) and `tool_calls`
//! (arguments as objects), `options`, `format: "json"`, NDJSON streaming ended by
//! `"done": true` with `prompt_eval_count` / `eval_count`.

use holdfast_core::config::ai::Deployment;
use serde_json::{json, Value};

use super::{
    completion, content_text, json_mode, max_tokens, parse_args, parse_data_url, stop_list,
    tool_call_id, unsupported_part, Decoder, Delta, UpstreamRequest,
};
use crate::error::AiError;
use crate::usage::Usage;

fn headers(d: &Deployment) -> Vec<(&'static str, String)> {
    if d.api_key.is_empty() {
        Vec::new()
    } else {
        vec![("authorization", format!("Bearer {}", d.api_key))]
    }
}

pub fn chat_request(d: &Deployment, req: &Value, stream: bool) -> Result<UpstreamRequest, AiError> {
    let Some(msgs) = req["messages"].as_array() else {
        return Err(AiError::bad_request("`messages` must be an array"));
    };
    let mut messages = Vec::new();
    for m in msgs {
        let role = m["role"].as_str().unwrap_or("user");
        let role = if role == "developer" { "system" } else { role };
        let mut msg = json!({"role": role, "content": content_text(&m["content"])});
        let mut images = Vec::new();
        for p in m["content"].as_array().into_iter().flatten() {
            match p["type"].as_str() {
                Some("text") => {}
                // An assistant turn OpenAI refused: its text is the turn's content.
                Some("refusal") if role == "assistant" => {}
                Some("image_url") => {
                    let url = p["image_url"]["url"]
                        .as_str()
                        .or_else(|| p["image_url"].as_str())
                        .unwrap_or_default();
                    match parse_data_url(url) {
                        Some((_, data)) => images.push(json!(data)),
                        None => {
                            return Err(AiError::bad_request(
                                "Ollama deployments take images only as data: URLs (base64)",
                            ))
                        }
                    }
                }
                // `/api/chat` takes text and images only: a file (PDF) or audio part would
                // vanish from the prompt, so it is refused instead.
                other => return Err(unsupported_part(other, "Ollama")),
            }
        }
        if !images.is_empty() {
            msg["images"] = json!(images);
        }
        if let Some(calls) = m["tool_calls"].as_array() {
            let calls: Vec<Value> = calls
                .iter()
                .map(|c| {
                    json!({"function": {"name": c["function"]["name"],
                    "arguments": parse_args(&c["function"]["arguments"])}})
                })
                .collect();
            msg["tool_calls"] = json!(calls);
        }
        messages.push(msg);
    }
    let mut body = json!({"model": d.model, "messages": messages, "stream": stream});
    if let Some(tools) = req.get("tools").filter(|t| t.is_array()) {
        body["tools"] = tools.clone();
    }
    match json_mode(req) {
        Some(Some(schema)) if schema.is_object() => body["format"] = schema,
        Some(_) => body["format"] = json!("json"),
        None => {}
    }
    let mut options = serde_json::Map::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("seed", "seed"),
    ] {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            options.insert(to.into(), v.clone());
        }
    }
    if let Some(n) = max_tokens(req) {
        options.insert("num_predict".into(), json!(n));
    }
    if let Some(stop) = stop_list(req) {
        options.insert("stop".into(), json!(stop));
    }
    if !options.is_empty() {
        body["options"] = Value::Object(options);
    }
    Ok(UpstreamRequest {
        url: format!("{}/api/chat", d.base_url),
        headers: headers(d),
        body,
    })
}

fn usage_of(v: &Value) -> Option<Usage> {
    Some(Usage {
        input: v["prompt_eval_count"].as_u64()?,
        output: v["eval_count"].as_u64().unwrap_or(0),
    })
}

fn finish_reason(v: &Value, tool_calls: bool) -> &'static str {
    match v["done_reason"].as_str() {
        Some("length") => "length",
        _ if tool_calls => "tool_calls",
        _ => "stop",
    }
}

fn tool_calls(message: &Value) -> Vec<(String, String, String)> {
    message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let id = c["id"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(tool_call_id);
            let name = c["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let args = match &c["function"]["arguments"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (id, name, args)
        })
        .collect()
}

pub fn parse_chat(d: &Deployment, v: Value) -> Result<(Value, Option<Usage>), AiError> {
    if let Some(e) = v["error"].as_str() {
        return Err(AiError::bad_upstream(&d.name, e));
    }
    if !v["message"].is_object() {
        return Err(AiError::bad_upstream(
            &d.name,
            "no `message` in the response",
        ));
    }
    let calls: Vec<Value> = tool_calls(&v["message"])
        .into_iter()
        .map(|(id, name, args)| {
            json!({"id": id, "type": "function",
            "function": {"name": name, "arguments": args}})
        })
        .collect();
    let text = v["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let usage = usage_of(&v);
    let finish = finish_reason(&v, !calls.is_empty());
    let text = (!text.is_empty() || calls.is_empty()).then_some(text);
    let model = v["model"].as_str().unwrap_or(&d.model);
    let id = crate::new_id("chatcmpl-");
    Ok((completion(&id, model, text, calls, finish, usage), usage))
}

pub fn embed_request(d: &Deployment, inputs: &[String]) -> UpstreamRequest {
    UpstreamRequest {
        url: format!("{}/api/embed", d.base_url),
        headers: headers(d),
        body: json!({"model": d.model, "input": inputs}),
    }
}

/// NDJSON lines; the one with `"done": true` ends the stream.
pub struct StreamDecoder {
    deployment: String,
    tools: u32,
    done: bool,
    model: Option<String>,
}

impl StreamDecoder {
    pub fn new(deployment: &str) -> Self {
        StreamDecoder {
            deployment: deployment.to_string(),
            tools: 0,
            done: false,
            model: None,
        }
    }
}

impl Decoder for StreamDecoder {
    fn feed(&mut self, _event: &str, data: &str) -> Result<Vec<Delta>, AiError> {
        if data.trim().is_empty() {
            return Ok(Vec::new());
        }
        let v: Value =
            serde_json::from_str(data).map_err(|e| AiError::bad_upstream(&self.deployment, e))?;
        if let Some(e) = v["error"].as_str() {
            return Err(AiError::upstream_status(&self.deployment, 500, e, None));
        }
        if let Some(m) = v["model"].as_str() {
            self.model = Some(m.to_string());
        }
        let mut out = Vec::new();
        if let Some(t) = v["message"]["content"].as_str().filter(|t| !t.is_empty()) {
            out.push(Delta::Text(t.to_string()));
        }
        for (id, name, args) in tool_calls(&v["message"]) {
            let index = self.tools;
            self.tools += 1;
            out.push(Delta::ToolStart { index, id, name });
            out.push(Delta::ToolArgs { index, args });
        }
        if v["done"] == json!(true) {
            self.done = true;
            out.push(Delta::Finish(finish_reason(&v, self.tools > 0).to_string()));
            if let Some(u) = usage_of(&v) {
                out.push(Delta::Usage(u));
            }
        }
        Ok(out)
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn end(&mut self) -> Result<Vec<Delta>, AiError> {
        if self.done {
            Ok(Vec::new())
        } else {
            Err(AiError::reset(
                &self.deployment,
                "the stream ended without \"done\": true",
                true,
            ))
        }
    }
}
