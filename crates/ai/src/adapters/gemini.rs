//! Google Gemini `models/{model}:generateContent` and `:streamGenerateContent?alt=sse`
//! (key in `x-goog-api-key`): `contents` with `parts`, `systemInstruction`,
//! `tools.functionDeclarations`, `usageMetadata`; safety blocks become a clear 400 error.

use std::collections::HashMap;

use holdfast_core::config::ai::Deployment;
use serde_json::{json, Value};

use super::{
    completion, content_text, json_mode, max_tokens, parse_args, parse_data_url, push_turn,
    stop_list, tool_call_id, turns_json, unknown_role, unsupported_part, Decoder, Delta,
    UpstreamRequest,
};
use crate::error::AiError;
use crate::usage::Usage;

fn headers(d: &Deployment) -> Vec<(&'static str, String)> {
    if d.api_key.is_empty() {
        Vec::new()
    } else {
        vec![("x-goog-api-key", d.api_key.clone())]
    }
}

pub fn chat_request(d: &Deployment, req: &Value, stream: bool) -> Result<UpstreamRequest, AiError> {
    let mut body = json!({"contents": contents(req)?});
    let system = system_parts(req);
    if !system.is_empty() {
        body["systemInstruction"] = json!({ "parts": system });
    }
    let mut gen = serde_json::Map::new();
    if let Some(t) = req.get("temperature").filter(|v| !v.is_null()) {
        gen.insert("temperature".into(), t.clone());
    }
    if let Some(t) = req.get("top_p").filter(|v| !v.is_null()) {
        gen.insert("topP".into(), t.clone());
    }
    if let Some(k) = req.get("top_k").filter(|v| !v.is_null()) {
        gen.insert("topK".into(), k.clone());
    }
    if let Some(n) = max_tokens(req) {
        gen.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(stop) = stop_list(req) {
        gen.insert("stopSequences".into(), json!(stop));
    }
    if let Some(schema) = json_mode(req) {
        gen.insert("responseMimeType".into(), json!("application/json"));
        if let Some(s) = schema.filter(|s| s.is_object()) {
            gen.insert("responseJsonSchema".into(), s);
        }
    }
    if !gen.is_empty() {
        body["generationConfig"] = Value::Object(gen);
    }
    if let Some(tools) = req["tools"].as_array() {
        let decls: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                let mut decl = json!({"name": f["name"]});
                if let Some(desc) = f["description"].as_str() {
                    decl["description"] = json!(desc);
                }
                // Full JSON Schema (`additionalProperties`, `$schema`, `const`…) goes in
                // `parametersJsonSchema`: `parameters` takes only Gemini's OpenAPI-subset
                // `Schema` and refuses those keywords with a 400 (the two are exclusive).
                if f["parameters"].is_object() {
                    decl["parametersJsonSchema"] = f["parameters"].clone();
                }
                decl
            })
            .collect();
        body["tools"] = json!([{"functionDeclarations": decls}]);
    }
    let mode = match &req["tool_choice"] {
        Value::String(s) if s == "auto" => Some(json!({"mode": "AUTO"})),
        Value::String(s) if s == "required" => Some(json!({"mode": "ANY"})),
        Value::String(s) if s == "none" => Some(json!({"mode": "NONE"})),
        Value::Object(_) => Some(
            json!({"mode": "ANY", "allowedFunctionNames": [req["tool_choice"]["function"]["name"]]}),
        ),
        _ => None,
    };
    if let Some(m) = mode {
        body["toolConfig"] = json!({"functionCallingConfig": m});
    }
    let url = if stream {
        format!(
            "{}/v1beta/models/{}:streamGenerateContent?alt=sse",
            d.base_url, d.model
        )
    } else {
        format!("{}/v1beta/models/{}:generateContent", d.base_url, d.model)
    };
    Ok(UpstreamRequest {
        url,
        headers: headers(d),
        body,
    })
}

/// System and developer messages as `systemInstruction` parts: each text part of each
/// message stays its own part (Gemini takes several), so none run together.
fn system_parts(req: &Value) -> Vec<Value> {
    req["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "system" || m["role"] == "developer")
        .flat_map(|m| match &m["content"] {
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .map(String::from)
                .collect(),
            other => vec![content_text(other)],
        })
        .filter(|t| !t.is_empty())
        .map(|t| json!({ "text": t }))
        .collect()
}

fn parts_of_user(content: &Value) -> Result<Vec<Value>, AiError> {
    match content {
        Value::String(s) => Ok(vec![json!({"text": s})]),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p["type"].as_str() {
                Some("text") => Ok(json!({"text": p["text"]})),
                Some("image_url") => {
                    let url = p["image_url"]["url"]
                        .as_str()
                        .ok_or_else(|| AiError::bad_request("an image_url part has no url"))?;
                    Ok(match parse_data_url(url) {
                        Some((mime, data)) => {
                            json!({"inlineData": {"mimeType": mime, "data": data}})
                        }
                        None => json!({"fileData": {"mimeType": guess_mime(url), "fileUri": url}}),
                    })
                }
                Some("file") => {
                    // OpenAI's file part (a PDF as a data: URL) is inline data for Gemini.
                    let parsed = p["file"]["file_data"].as_str().and_then(parse_data_url);
                    match parsed {
                        Some((mime, data)) => Ok(json!({"inlineData": {"mimeType": mime, "data": data}})),
                        None => Err(AiError::bad_request(
                            "a `file` part needs `file_data` (a base64 data: URL) for Gemini deployments; \
                             `file_id` refers to OpenAI's file store",
                        )),
                    }
                }
                other => Err(unsupported_part(other, "Gemini")),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(AiError::bad_request(
            "message `content` must be a string or an array",
        )),
    }
}

fn guess_mime(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".webp") {
        "image/webp"
    } else if lower.ends_with(".gif") {
        "image/gif"
    } else {
        "image/jpeg"
    }
}

fn contents(req: &Value) -> Result<Vec<Value>, AiError> {
    let Some(msgs) = req["messages"].as_array() else {
        return Err(AiError::bad_request("`messages` must be an array"));
    };
    // Gemini's functionResponse needs the function's name; OpenAI tool messages carry the id.
    let mut names: HashMap<String, String> = HashMap::new();
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for m in msgs {
        let (role, parts) = match m["role"].as_str() {
            Some("system") | Some("developer") => continue,
            Some("user") => ("user", parts_of_user(&m["content"])?),
            Some("assistant") => {
                let mut parts = Vec::new();
                let text = content_text(&m["content"]);
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for call in m["tool_calls"].as_array().into_iter().flatten() {
                    let name = call["function"]["name"].as_str().unwrap_or_default();
                    if let Some(id) = call["id"].as_str() {
                        names.insert(id.to_string(), name.to_string());
                    }
                    parts.push(json!({"functionCall": {"name": name,
                        "args": parse_args(&call["function"]["arguments"])}}));
                }
                ("model", parts)
            }
            Some("tool") => {
                let id = m["tool_call_id"].as_str().unwrap_or_default();
                let name = names
                    .get(id)
                    .cloned()
                    .or_else(|| m["name"].as_str().map(String::from))
                    .ok_or_else(|| {
                        AiError::bad_request(format!(
                            "tool message for `{id}` matches no earlier assistant tool call"
                        ))
                    })?;
                let text = content_text(&m["content"]);
                let response = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"content": text}));
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
            other => return Err(unknown_role(other)),
        };
        push_turn(&mut out, role, parts);
    }
    Ok(turns_json(out, "parts"))
}

fn usage_of(u: &Value) -> Option<Usage> {
    Some(Usage {
        input: u["promptTokenCount"].as_u64()?,
        output: u["candidatesTokenCount"].as_u64().unwrap_or(0)
            + u["thoughtsTokenCount"].as_u64().unwrap_or(0),
    })
}

const BLOCK_REASONS: &[&str] = &[
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
];

/// A safety block in a response (prompt blocked, or a candidate stopped for safety).
fn blocked(v: &Value) -> Option<String> {
    if let Some(r) = v["promptFeedback"]["blockReason"].as_str() {
        return Some(format!("Gemini blocked the prompt (blockReason {r})"));
    }
    let reason = v["candidates"][0]["finishReason"].as_str()?;
    BLOCK_REASONS
        .contains(&reason)
        .then(|| format!("Gemini stopped the answer (finishReason {reason})"))
}

fn finish_reason(reason: &str, tool_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        _ if tool_calls => "tool_calls",
        r if BLOCK_REASONS.contains(&r) => "content_filter",
        _ => "stop",
    }
}

pub fn parse_chat(d: &Deployment, v: Value) -> Result<(Value, Option<Usage>), AiError> {
    if let Some(reason) = blocked(&v) {
        return Err(AiError::content_filter(&d.name, &reason));
    }
    let Some(parts) = v["candidates"][0]["content"]["parts"].as_array() else {
        return Err(AiError::bad_upstream(
            &d.name,
            "no candidates[0].content.parts",
        ));
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in parts {
        if let Some(t) = p["text"].as_str() {
            if p["thought"] != json!(true) {
                text.push_str(t);
            }
        }
        if let Some(f) = p.get("functionCall") {
            let id = f["id"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(tool_call_id);
            calls.push(json!({"id": id, "type": "function",
                "function": {"name": f["name"], "arguments": f["args"].to_string()}}));
        }
    }
    let usage = usage_of(&v["usageMetadata"]);
    let finish = finish_reason(
        v["candidates"][0]["finishReason"]
            .as_str()
            .unwrap_or("STOP"),
        !calls.is_empty(),
    );
    let model = v["modelVersion"].as_str().unwrap_or(&d.model);
    let id = crate::new_id("chatcmpl-");
    let text = (!text.is_empty() || calls.is_empty()).then_some(text);
    Ok((completion(&id, model, text, calls, finish, usage), usage))
}

pub fn embed_request(d: &Deployment, inputs: &[String]) -> UpstreamRequest {
    let requests: Vec<Value> = inputs
        .iter()
        .map(|t| json!({"model": format!("models/{}", d.model), "content": {"parts": [{"text": t}]}}))
        .collect();
    UpstreamRequest {
        url: format!(
            "{}/v1beta/models/{}:batchEmbedContents",
            d.base_url, d.model
        ),
        headers: headers(d),
        body: json!({"requests": requests}),
    }
}

/// `data: GenerateContentResponse` frames; the body's end is the stream's end.
pub struct StreamDecoder {
    deployment: String,
    usage: Option<Usage>,
    tools: u32,
    finished: bool,
    model: Option<String>,
}

impl StreamDecoder {
    pub fn new(deployment: &str) -> Self {
        StreamDecoder {
            deployment: deployment.to_string(),
            usage: None,
            tools: 0,
            finished: false,
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
        if v.get("error").is_some_and(|e| !e.is_null()) {
            return Err(super::stream_error(
                holdfast_core::config::ai::Provider::Gemini,
                &self.deployment,
                &v,
            ));
        }
        if let Some(reason) = blocked(&v) {
            return Err(AiError::content_filter(&self.deployment, &reason));
        }
        if let Some(u) = usage_of(&v["usageMetadata"]) {
            self.usage = Some(u);
        }
        if let Some(m) = v["modelVersion"].as_str() {
            self.model = Some(m.to_string());
        }
        let mut out = Vec::new();
        let cand = &v["candidates"][0];
        for p in cand["content"]["parts"].as_array().into_iter().flatten() {
            if let Some(t) = p["text"].as_str() {
                if p["thought"] != json!(true) && !t.is_empty() {
                    out.push(Delta::Text(t.to_string()));
                }
            }
            if let Some(f) = p.get("functionCall") {
                let index = self.tools;
                self.tools += 1;
                let id = f["id"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(tool_call_id);
                out.push(Delta::ToolStart {
                    index,
                    id,
                    name: f["name"].as_str().unwrap_or_default().to_string(),
                });
                out.push(Delta::ToolArgs {
                    index,
                    args: f["args"].to_string(),
                });
            }
        }
        if let Some(reason) = cand["finishReason"].as_str() {
            self.finished = true;
            out.push(Delta::Finish(
                finish_reason(reason, self.tools > 0).to_string(),
            ));
        }
        Ok(out)
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn end(&mut self) -> Result<Vec<Delta>, AiError> {
        if !self.finished {
            return Err(AiError::reset(
                &self.deployment,
                "the stream ended without a finishReason",
                true,
            ));
        }
        Ok(self.usage.map(Delta::Usage).into_iter().collect())
    }
}
