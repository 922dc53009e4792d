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
pub struct StreamDecoder {
    deployment: String,
    done: bool,
    finished: bool,
    model: Option<String>,
}

impl StreamDecoder {
    pub fn new(deployment: &str) -> Self {
        StreamDecoder {
            deployment: deployment.to_string(),
            done: false,
            finished: false,
            model: None,
        }
    }
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
        if v.get("error").is_some() {
            return Err(AiError::upstream_status(
                &self.deployment,
                502,
                &super::error_message(data.as_bytes()),
                None,
            ));
        }
        if self.model.is_none() {
            if let Some(m) = v["model"].as_str().filter(|m| !m.is_empty()) {
                self.model = Some(m.to_string());
            }
        }
        let mut out = Vec::new();
        if let Some(choice) = v["choices"].get(0) {
            let delta = &choice["delta"];
            if let Some(t) = delta["content"].as_str() {
                if !t.is_empty() {
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
                self.finished = true;
                out.push(Delta::Finish(f.to_string()));
            }
        }
        if let Some(u) = usage_of(&v["usage"]) {
            out.push(Delta::Usage(u));
        }
        Ok(out)
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn end(&mut self) -> Result<Vec<Delta>, AiError> {
        if self.done || self.finished {
            Ok(Vec::new())
        } else {
            Err(AiError::reset(
                &self.deployment,
                "the stream ended without a finish_reason or [DONE]",
                true,
            ))
        }
    }
}
