//! Local fake LLM providers that speak each provider's real wire format and fail on request.
//!
//! One [`MockProvider`] listens on `127.0.0.1` and answers every provider's paths at once:
//!
//! | provider | path |
//! |---|---|
//! | OpenAI (and compatible) | `POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models` |
//! | Azure OpenAI | `POST /openai/deployments/{d}/chat/completions?api-version=…`, `…/embeddings` |
//! | Anthropic | `POST /v1/messages` |
//! | Gemini | `POST /v1beta/models/{m}:generateContent`, `:streamGenerateContent?alt=sse`, `:batchEmbedContents` |
//! | Ollama | `POST /api/chat` (NDJSON streaming), `POST /api/embed` |
//!
//! The answer text is `Hello from PROVIDER: LAST USER TEXT`; when the request offers tools and
//! the last message is from the user, the answer is a call of the first tool with
//! `{"location":"Paris"}`. Streams send one word per chunk. An Anthropic request with
//! `thinking` enabled gets a signed thinking block first (streamed with `thinking_delta` and
//! `signature_delta`).
//!
//! Like the real APIs, it refuses (400, in the provider's error format) an OpenAI or Azure
//! request in JSON mode (`response_format: {"type": "json_object"}`) whose messages never say
//! "json", an Anthropic `thinking` budget under 1024 or not under `max_tokens`, and JSON
//! Schema keywords in Gemini's `functionDeclarations[].parameters`.
//!
//! Tests queue [`Behavior`]s (429 with Retry-After in seconds, as an HTTP-date, absent, or
//! in a Gemini `RetryInfo` body; 500 or any status; reset before the response, reset
//! mid-stream, slow first token, stalled stream; a fixed answer text; an OpenAI refusal; an
//! error event mid-stream); each request takes the next one, and
//! when the queue is empty, the upstream model name decides (`…reset-mid-stream…` resets
//! after 3 frames, `…server-error…` answers 500), else [`Behavior::Ok`] applies. Every request is recorded so tests can
//! check the translated upstream request.

mod formats;
mod http1;
mod server;

pub use server::{Behavior, MockOptions, MockProvider, RecordedRequest};

/// Errors starting a mock provider.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}
