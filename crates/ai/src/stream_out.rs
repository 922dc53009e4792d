//! Client-side stream encoders: OpenAI `chat.completion.chunk` SSE (ended by `[DONE]`) and
//! Anthropic Messages events (ended by `message_stop`). A stream that breaks after bytes
//! reached the client ends with an SSE `error` event and no normal end.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::adapters::Delta;
use crate::error::AiError;
use crate::usage::Usage;

/// Encodes deltas for the client.
pub trait StreamWriter: Send {
    /// The first bytes (sent when the stream is committed), given the first deltas (which
    /// [`StreamWriter::delta`] gets next).
    fn start(&mut self, first: &[Delta]) -> Bytes;
    fn delta(&mut self, d: &Delta) -> Option<Bytes>;
    /// The normal end, with the final usage (`estimated` when counted locally).
    fn finish(&mut self, usage: Usage, estimated: bool) -> Bytes;
    /// The abnormal end.
    fn error(&mut self, e: &AiError) -> Bytes;
    /// Sent while the provider is silent: clients ignore it, and writing it is how the data
    /// plane notices a client that went away.
    fn heartbeat(&self) -> Bytes;
    /// True when [`StreamWriter::start`] reports input tokens that only an estimate can give
    /// yet (the provider tells its figure at the end): the estimate then comes first through
    /// [`StreamWriter::set_input_estimate`].
    fn wants_input_estimate(&self, _first: &[Delta]) -> bool {
        false
    }
    fn set_input_estimate(&mut self, _tokens: u64) {}
}

/// OpenAI's `usage` object; `estimated: true` marks tokens counted by the gateway.
pub fn openai_usage(u: Usage, estimated: bool) -> Value {
    let mut v = json!({"prompt_tokens": u.input, "completion_tokens": u.output,
        "total_tokens": u.input + u.output});
    if estimated {
        v["estimated"] = json!(true);
    }
    v
}

/// Anthropic's `usage` object, marked like [`openai_usage`].
pub fn anthropic_usage(u: Usage, estimated: bool) -> Value {
    let mut v = json!({"input_tokens": u.input, "output_tokens": u.output});
    if estimated {
        v["estimated"] = json!(true);
    }
    v
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn sse_event(name: &str, v: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

/// OpenAI chat completion chunks.
///
/// From an OpenAI-compatible provider (the deltas carry [`Delta::Chunk`]) the provider's
/// chunks pass through as they are: every choice `index` of `n > 1`, `refusal`, `logprobs`,
/// `system_fingerprint`, usage details and the provider's id. Only the usage chunk is dropped
/// when the client did not ask for it (the gateway always asks the provider). From any other
/// provider the chunks are written from the canonical deltas, as one choice.
pub struct OpenAiWriter {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub include_usage: bool,
    passthrough: bool,
    /// The provider's own usage chunk went out (passthrough).
    usage_sent: bool,
}

impl OpenAiWriter {
    pub fn new(id: String, model: String, created: u64, include_usage: bool) -> Self {
        OpenAiWriter {
            id,
            model,
            created,
            include_usage,
            passthrough: false,
            usage_sent: false,
        }
    }

    /// A provider chunk for the client, or `None` when nothing of it is for the client.
    fn pass(&mut self, chunk: &Value) -> Option<Bytes> {
        let mut c = chunk.clone();
        let o = c.as_object_mut()?;
        if o.get("id")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            o.insert("id".into(), json!(self.id));
        }
        if !o.get("object").is_some_and(Value::is_string) {
            o.insert("object".into(), json!("chat.completion.chunk"));
        }
        if !o.get("created").is_some_and(Value::is_u64) {
            o.insert("created".into(), json!(self.created));
        }
        if o.get("model")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            o.insert("model".into(), json!(self.model));
        }
        if !o.contains_key("choices") {
            o.insert("choices".into(), json!([]));
        }
        let no_choices = o["choices"].as_array().is_some_and(Vec::is_empty);
        if self.include_usage {
            if o.get("usage").is_some_and(Value::is_object) {
                self.usage_sent = true;
            }
        } else {
            o.remove("usage");
            if no_choices {
                return None;
            }
        }
        Some(sse(&c))
    }

    fn chunk(&self, delta: Value, finish: Value) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    }
}

impl StreamWriter for OpenAiWriter {
    fn start(&mut self, first: &[Delta]) -> Bytes {
        let upstream = first.iter().find_map(|d| match d {
            Delta::Chunk(c) => Some(c),
            _ => None,
        });
        if let Some(c) = upstream {
            // The provider's chunks (its role chunk first) go out as they are, and its id
            // is the stream's (also for a usage chunk the gateway has to add).
            self.passthrough = true;
            if let Some(id) = c["id"].as_str().filter(|id| !id.is_empty()) {
                self.id = id.to_string();
            }
            if let Some(created) = c["created"].as_u64() {
                self.created = created;
            }
            return Bytes::new();
        }
        sse(&self.chunk(json!({"role": "assistant", "content": ""}), Value::Null))
    }

    fn delta(&mut self, d: &Delta) -> Option<Bytes> {
        if self.passthrough {
            return match d {
                Delta::Chunk(c) => self.pass(c),
                _ => None,
            };
        }
        let v = match d {
            Delta::Text(t) => self.chunk(json!({"content": t}), Value::Null),
            Delta::ToolStart { index, id, name } => self.chunk(
                json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ),
            Delta::ToolArgs { index, args } => self.chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": args}}]}),
                Value::Null,
            ),
            Delta::Finish(reason) => self.chunk(json!({}), json!(reason)),
            Delta::Usage(_) | Delta::Chunk(_) | Delta::Event(_) => return None,
        };
        Some(sse(&v))
    }

    fn finish(&mut self, usage: Usage, estimated: bool) -> Bytes {
        let mut out = String::new();
        if self.include_usage && !self.usage_sent {
            let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [],
                "usage": openai_usage(usage, estimated)});
            out.push_str(&format!("data: {v}\n\n"));
        }
        out.push_str("data: [DONE]\n\n");
        Bytes::from(out)
    }

    fn error(&mut self, e: &AiError) -> Bytes {
        sse_event("error", &e.body())
    }

    fn heartbeat(&self) -> Bytes {
        // An SSE comment: every SSE parser skips it (the OpenAI SDKs included).
        Bytes::from_static(b": keep-alive\n\n")
    }
}

#[derive(PartialEq)]
enum Block {
    None,
    Text,
    Tool,
}

/// Anthropic Messages stream events.
///
/// From an Anthropic provider (the deltas carry [`Delta::Event`]) the provider's events pass
/// through as they are: its `message_start` with the real input tokens, `thinking` blocks
/// with their signatures, citations, and its own `message_delta` and `message_stop`. From any
/// other provider the events are written from the canonical deltas: `message_start` reports
/// the gateway's estimate of the input tokens (marked `estimated`), and the final
/// `message_delta` the provider's figures for input and output (Anthropic's `message_delta`
/// usage is cumulative and may carry `input_tokens`).
pub struct AnthropicWriter {
    pub id: String,
    pub model: String,
    block: Block,
    index: i64,
    stop_reason: &'static str,
    passthrough: bool,
    /// The provider's `message_stop` went out (passthrough).
    stopped: bool,
    input_estimate: Option<u64>,
}

impl AnthropicWriter {
    pub fn new(id: String, model: String) -> Self {
        AnthropicWriter {
            id,
            model,
            block: Block::None,
            index: -1,
            stop_reason: "end_turn",
            passthrough: false,
            stopped: false,
            input_estimate: None,
        }
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if self.block != Block::None {
            out.extend_from_slice(&sse_event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.index}),
            ));
            self.block = Block::None;
        }
    }
}

/// OpenAI finish reason → Anthropic stop reason.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

fn is_event(d: &Delta) -> bool {
    matches!(d, Delta::Event(_))
}

impl StreamWriter for AnthropicWriter {
    fn start(&mut self, first: &[Delta]) -> Bytes {
        if first.iter().any(is_event) {
            // The provider's own events follow, its `message_start` first.
            self.passthrough = true;
            return Bytes::new();
        }
        let usage = match self.input_estimate {
            Some(n) => json!({"input_tokens": n, "output_tokens": 0, "estimated": true}),
            None => json!({"input_tokens": 0, "output_tokens": 0}),
        };
        sse_event(
            "message_start",
            &json!({"type": "message_start", "message": {"id": self.id, "type": "message",
                "role": "assistant", "model": self.model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": usage}}),
        )
    }

    fn wants_input_estimate(&self, first: &[Delta]) -> bool {
        !first.iter().any(is_event)
    }

    fn set_input_estimate(&mut self, tokens: u64) {
        self.input_estimate = Some(tokens);
    }

    fn delta(&mut self, d: &Delta) -> Option<Bytes> {
        if self.passthrough {
            let Delta::Event(e) = d else {
                return None;
            };
            let name = e["type"].as_str()?;
            if name == "message_stop" {
                self.stopped = true;
            }
            return Some(sse_event(name, e));
        }
        let mut out = Vec::new();
        match d {
            Delta::Text(t) => {
                if self.block != Block::Text {
                    self.close_block(&mut out);
                    self.index += 1;
                    self.block = Block::Text;
                    out.extend_from_slice(&sse_event(
                        "content_block_start",
                        &json!({
                        "type": "content_block_start", "index": self.index,
                        "content_block": {"type": "text", "text": ""}}),
                    ));
                }
                out.extend_from_slice(&sse_event(
                    "content_block_delta",
                    &json!({
                    "type": "content_block_delta", "index": self.index,
                    "delta": {"type": "text_delta", "text": t}}),
                ));
            }
            Delta::ToolStart { id, name, .. } => {
                self.close_block(&mut out);
                self.index += 1;
                self.block = Block::Tool;
                out.extend_from_slice(&sse_event(
                    "content_block_start",
                    &json!({
                    "type": "content_block_start", "index": self.index,
                    "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                ));
            }
            Delta::ToolArgs { args, .. } => {
                out.extend_from_slice(&sse_event(
                    "content_block_delta",
                    &json!({
                    "type": "content_block_delta", "index": self.index,
                    "delta": {"type": "input_json_delta", "partial_json": args}}),
                ));
            }
            Delta::Finish(reason) => self.stop_reason = stop_reason(reason),
            Delta::Usage(_) | Delta::Chunk(_) | Delta::Event(_) => {}
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    fn finish(&mut self, usage: Usage, estimated: bool) -> Bytes {
        if self.passthrough {
            // The provider's `message_delta` and `message_stop` went out as they came.
            return if self.stopped {
                Bytes::new()
            } else {
                sse_event("message_stop", &json!({"type": "message_stop"}))
            };
        }
        let mut out = Vec::new();
        self.close_block(&mut out);
        out.extend_from_slice(&sse_event(
            "message_delta",
            &json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
            "usage": anthropic_usage(usage, estimated)}),
        ));
        out.extend_from_slice(&sse_event("message_stop", &json!({"type": "message_stop"})));
        Bytes::from(out)
    }

    fn error(&mut self, e: &AiError) -> Bytes {
        sse_event("error", &e.anthropic_body())
    }

    fn heartbeat(&self) -> Bytes {
        // Anthropic's own keep-alive event.
        Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n")
    }
}
