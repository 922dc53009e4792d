//! OpenAI chat completions and every compatible server; Azure OpenAI differs only in the URL
//! (`/openai/deployments/{deployment}/…?api-version=`) and the `api-key` header.

use holdfast_core::config::ai::{Deployment, Provider};
use serde_json::{json, Value};

use super::{Decoder, Delta, UpstreamRequest};
use crate::error::AiError;
use crate::usage::Usage;

fn url(d: &Deployment, op: &str) -> String {
    match d.provider {
        Provider::Azure => format!(
            "{}/openai/deployments/{}/{op}?api-version={}",
            d.base_url, d.model, d.api_version
        ),
        _ => format!("{}/{op}", d.base_url),
    }
}

fn headers(d: &Deployment) -> Vec<(&'static str, String)> {
    if d.api_key.is_empty() {
        return Vec::new();
    }
    match d.provider {
        Provider::Azure => vec![("api-key", d.api_key.clone())],
        _ => vec![("authorization", format!("Bearer {}", d.api_key))],
    }
}

pub fn chat_request(d: &Deployment, req: &Value, stream: bool) -> UpstreamRequest {
    let mut body = req.clone();
    body["model"] = json!(d.model);
    if let Some(o) = body.as_object_mut() {
        o.remove(super::NATIVE_ANTHROPIC);
    }
    if stream {
        body["stream"] = json!(true);
        // Always ask for usage; the gateway drops the usage chunk if the client did not ask.
        body["stream_options"] = json!({"include_usage": true});
    } else if let Some(o) = body.as_object_mut() {
        o.remove("stream");
        o.remove("stream_options");
    }
    UpstreamRequest {
        url: url(d, "chat/completions"),
        headers: headers(d),
        body,
    }
}

pub fn parse_chat(d: &Deployment, v: Value) -> Result<(Value, Option<Usage>), AiError> {
    if v["choices"].as_array().is_none() {
        return Err(AiError::bad_upstream(
            &d.name,
            "no `choices` in the response",
        ));
    }
    let usage = usage_of(&v["usage"]);
    let mut v = v;
    if !v["model"].is_string() {
        v["model"] = json!(d.model);
    }
    if v["id"].as_str().is_none_or(|id| id.is_empty()) {
        v["id"] = json!(crate::new_id("chatcmpl-"));
    }
    Ok((v, usage))
}

pub fn embed_request(d: &Deployment, req: &Value) -> UpstreamRequest {
    let mut body = req.clone();
    body["model"] = json!(d.model);
    UpstreamRequest {
        url: url(d, "embeddings"),
        headers: headers(d),
        body,
    }
}

fn usage_of(u: &Value) -> Option<Usage> {
    Some(Usage {
        input: u["prompt_tokens"].as_u64()?,
        output: u["completion_tokens"].as_u64().unwrap_or(0),
    })
}

/// `data: {chunk}` frames, ended by `data: [DONE]`.
///
/// Every chunk is also handed on whole ([`Delta::Chunk`]), so an OpenAI client gets the
/// provider's stream as it is: each choice of `n > 1` keeps its `index`, and `refusal`,
/// `logprobs`, `system_fingerprint`, usage details and the id survive. The canonical deltas
/// (for other client formats and the accounting) describe choice 0 only.
pub struct StreamDecoder {
    deployment: String,
    done: bool,
    finished: bool,
    model: Option<String>,
    /// Chunks without content (the role chunk) held back until the first chunk with content,
    /// so the stream still commits (and stops failing over) only once content arrived.
    pending: Vec<Value>,
    started: bool,
    /// Choice 0 refused: its finish is `content_filter` for other client formats.
    refused: bool,
}

impl StreamDecoder {
    pub fn new(deployment: &str) -> Self {
        StreamDecoder {
            deployment: deployment.to_string(),
            done: false,
            finished: false,
            model: None,
            pending: Vec::new(),
            started: false,
            refused: false,
        }
    }

    /// The held-back chunks, then `v`, as [`Delta::Chunk`]s.
    fn chunks(&mut self, v: Option<Value>) -> Vec<Delta> {
        self.pending
            .drain(..)
            .chain(v)
            .map(|c| Delta::Chunk(Box::new(c)))
            .collect()
    }
}

/// True when a chunk's choice carries anything beyond its role.
fn has_content(choice: &Value) -> bool {
    let delta = &choice["delta"];
    delta["content"].as_str().is_some_and(|t| !t.is_empty())
        || delta["refusal"].as_str().is_some_and(|t| !t.is_empty())
        || delta["tool_calls"].is_array()
        || choice["finish_reason"].is_string()
}

impl Decoder for StreamDecoder {
    fn feed(&mut self, _event: &str, data: &str) -> Result<Vec<Delta>, AiError> {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let v: Value =
            serde_json::from_str(data).map_err(|e| AiError::bad_upstream(&self.deployment, e))?;
        if v.get("error").is_some_and(|e| !e.is_null()) {
            return Err(super::stream_error(Provider::OpenAi, &self.deployment, &v));
        }
        if self.model.is_none() {
            if let Some(m) = v["model"].as_str().filter(|m| !m.is_empty()) {
                self.model = Some(m.to_string());
            }
        }
        let mut out = Vec::new();
        let choices = v["choices"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let content = choices.iter().any(has_content) || v["usage"].is_object();
        // Any choice's finish counts as the provider's end marker.
        if choices.iter().any(|c| c["finish_reason"].is_string()) {
            self.finished = true;
        }
        let first = choices
            .iter()
            .find(|c| c["index"].as_u64().unwrap_or(0) == 0);
        if let Some(choice) = first {
            let delta = &choice["delta"];
            if let Some(t) = delta["content"].as_str() {
                if !t.is_empty() {
                    out.push(Delta::Text(t.to_string()));
                }
            }
            // A refusal is text for formats without a refusal field (and ends as
            // `content_filter`, Anthropic's `refusal` stop reason).
            if let Some(t) = delta["refusal"].as_str() {
                if !t.is_empty() {
                    self.refused = true;
                    out.push(Delta::Text(t.to_string()));
                }
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let index = call["index"].as_u64().unwrap_or(0) as u32;
                if let Some(name) = call["function"]["name"].as_str() {
                    out.push(Delta::ToolStart {
                        index,
                        id: call["id"].as_str().unwrap_or_default().to_string(),
                        name: name.to_string(),
                    });
                }
                if let Some(args) = call["function"]["arguments"].as_str() {
                    if !args.is_empty() {
                        out.push(Delta::ToolArgs {
                            index,
                            args: args.to_string(),
                        });
                    }
                }
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                let f = if self.refused && f == "stop" {
                    "content_filter"
                } else {
                    f
                };
                out.push(Delta::Finish(f.to_string()));
            }
        }
        if let Some(u) = usage_of(&v["usage"]) {
            out.push(Delta::Usage(u));
        }
        if !(content || self.started) {
            self.pending.push(v);
            return Ok(Vec::new());
        }
        self.started = true;
        let mut all = self.chunks(Some(v));
        all.append(&mut out);
        Ok(all)
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn end(&mut self) -> Result<Vec<Delta>, AiError> {
        if self.done || self.finished {
            Ok(self.chunks(None))
        } else {
            Err(AiError::reset(
                &self.deployment,
                "the stream ended without a finish_reason or [DONE]",
                true,
            ))
        }
    }
}
