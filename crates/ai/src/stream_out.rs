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
    /// The first bytes (sent when the stream is committed).
    fn start(&mut self) -> Bytes;
    fn delta(&mut self, d: &Delta) -> Option<Bytes>;
    /// The normal end, with the final usage (`estimated` when counted locally).
    fn finish(&mut self, usage: Usage, estimated: bool) -> Bytes;
    /// The abnormal end.
    fn error(&mut self, e: &AiError) -> Bytes;
    /// Sent while the provider is silent: clients ignore it, and writing it is how the data
    /// plane notices a client that went away.
    fn heartbeat(&self) -> Bytes;
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
pub struct OpenAiWriter {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub include_usage: bool,
}

impl OpenAiWriter {
    fn chunk(&self, delta: Value, finish: Value) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    }
}

impl StreamWriter for OpenAiWriter {
    fn start(&mut self) -> Bytes {
        sse(&self.chunk(json!({"role": "assistant", "content": ""}), Value::Null))
    }

    fn delta(&mut self, d: &Delta) -> Option<Bytes> {
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
            Delta::Usage(_) => return None,
        };
        Some(sse(&v))
    }

    fn finish(&mut self, usage: Usage, estimated: bool) -> Bytes {
        let mut out = String::new();
        if self.include_usage {
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
pub struct AnthropicWriter {
    pub id: String,
    pub model: String,
    block: Block,
    index: i64,
    stop_reason: &'static str,
}

impl AnthropicWriter {
    pub fn new(id: String, model: String) -> Self {
        AnthropicWriter {
            id,
            model,
            block: Block::None,
            index: -1,
            stop_reason: "end_turn",
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

impl StreamWriter for AnthropicWriter {
    fn start(&mut self) -> Bytes {
        sse_event(
            "message_start",
            &json!({"type": "message_start", "message": {"id": self.id, "type": "message",
                "role": "assistant", "model": self.model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        )
    }

    fn delta(&mut self, d: &Delta) -> Option<Bytes> {
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
            Delta::Usage(_) => {}
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    fn finish(&mut self, usage: Usage, estimated: bool) -> Bytes {
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
