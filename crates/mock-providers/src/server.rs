//! The mock server: accepts connections, takes the next queued [`Behavior`] for each request
//! and answers in the provider's format.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::formats::{self, Kind, Op};
use crate::http1;
use crate::MockError;

/// What the mock does with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Behavior {
    /// Answer normally.
    Ok,
    /// Answer normally but leave out every usage field.
    NoUsage,
    /// 429 with `Retry-After: SECS`.
    RateLimited { retry_after_secs: u64 },
    /// 429 with this raw `Retry-After` value (e.g. an HTTP-date), or with none.
    RateLimitedRaw { retry_after: Option<String> },
    /// 429 without a `Retry-After` header, the delay given the way Gemini gives it: a
    /// `google.rpc.RetryInfo` detail with `retryDelay` (e.g. `"30s"`) in the error body.
    RateLimitedRetryInfo { retry_delay: String },
    /// 500 with an error body in the provider's format.
    ServerError,
    /// Any status with an error body in the provider's format (e.g. 401, 400).
    Status(u16),
    /// Read the request, then close with a TCP RST before any response byte.
    ResetBeforeResponse,
    /// Send the head and this many stream frames (or half the body), then RST.
    ResetMidStream { after_chunks: usize },
    /// Wait this long before the first byte, then answer normally.
    SlowFirstToken(Duration),
    /// Send the head and this many stream frames, then send nothing more (up to 2 minutes).
    Stall { after_chunks: usize },
    /// Gemini only: the prompt is blocked by the safety filter.
    SafetyBlock,
    /// Answer normally (usage included) with exactly this text.
    Text(String),
    /// Answer with this status and exactly this JSON error body (e.g. OpenAI's
    /// `context_length_exceeded` or Azure's `content_filter` with their `code` and `param`).
    ErrorBody { status: u16, body: Value },
    /// OpenAI and Azure: refuse with this text (`message.refusal`, or `delta.refusal`
    /// chunks when streaming) and no content. Other providers answer normally.
    Refusal(String),
    /// Stream this many frames, then the provider's error event (its own default, or exactly
    /// `body`: OpenAI `data: {"error": …}`, Anthropic `event: error`, Gemini `data:
    /// {"error": …}`, Ollama `{"error": …}`), then end the body.
    ErrorMidStream {
        after_chunks: usize,
        body: Option<Value>,
    },
}

/// Settings for a whole mock server.
#[derive(Debug, Clone, Default)]
pub struct MockOptions {
    /// Added before every answer (for benchmarks).
    pub delay: Duration,
    /// Between stream frames.
    pub chunk_delay: Duration,
    /// When set, requests must carry this key in the provider's header (else 401).
    pub require_key: Option<String>,
    /// The model Azure answers name. Real Azure names the model behind the deployment
    /// (`gpt-4o-2024-08-06`), not the deployment; unset, the mock answers with the
    /// deployment name.
    pub azure_model: Option<String>,
}

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    options: MockOptions,
    queue: Mutex<VecDeque<Behavior>>,
    requests: Mutex<Vec<RecordedRequest>>,
    count: AtomicU64,
    /// Stalled streams whose client (the gateway) closed the connection.
    stalls_closed: AtomicU64,
    record: bool,
}

/// A running mock provider on `127.0.0.1`. Stops when dropped.
pub struct MockProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockProvider {
    /// Start on `127.0.0.1:0` with default options.
    pub async fn start() -> Result<MockProvider, MockError> {
        Self::start_with("127.0.0.1:0", MockOptions::default(), true).await
    }

    /// Start on `addr`. `record` keeps every request (turn off for long benchmarks).
    pub async fn start_with(
        addr: &str,
        options: MockOptions,
        record: bool,
    ) -> Result<MockProvider, MockError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MockError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| MockError::Listen {
            addr: addr.to_string(),
            source,
        })?;
        let shared = Arc::new(Shared {
            options,
            queue: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            count: AtomicU64::new(0),
            stalls_closed: AtomicU64::new(0),
            record,
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(stream, s.clone()));
            }
        });
        Ok(MockProvider {
            addr: local,
            shared,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queue behaviours for the next requests, in order.
    pub fn push(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.extend(behaviors);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stalled streams ([`Behavior::Stall`]) whose client closed the connection, so far.
    pub fn stalls_closed(&self) -> u64 {
        self.shared.stalls_closed.load(Ordering::SeqCst)
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> u64 {
        self.shared.count.load(Ordering::SeqCst)
    }
}

async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::with_capacity(8192);
    loop {
        let req = match http1::read_request(&mut stream, &mut buf).await {
            Ok(Some(r)) => r,
            _ => return,
        };
        let body: Value = if req.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&req.body).unwrap_or(Value::Null)
        };
        shared.count.fetch_add(1, Ordering::SeqCst);
        if shared.record {
            let mut r = shared.requests.lock().unwrap_or_else(|e| e.into_inner());
            r.push(RecordedRequest {
                method: req.method.clone(),
                target: req.target.clone(),
                headers: req.headers.clone(),
                body: body.clone(),
            });
        }
        let behavior = shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
            .unwrap_or_else(|| behavior_from_model(&req.target, &body));
        match answer(&mut stream, &req, &body, behavior, &shared.options).await {
            Ok(Next::KeepAlive) => continue,
            Ok(Next::Reset) => {
                http1::reset(stream);
                return;
            }
            Ok(Next::Stall) => {
                // Hold the connection open, silent, until the client gives up (bounded).
                let mut scratch = [0u8; 1024];
                let closed = tokio::time::timeout(Duration::from_secs(120), async {
                    while let Ok(n) = stream.read(&mut scratch).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
                if closed.is_ok() {
                    shared.stalls_closed.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
            Err(_) => return,
        }
    }
}

/// Out-of-process control (the command-line mock has no queue): an upstream model name
/// containing `reset-mid-stream` gets [`Behavior::ResetMidStream`] after 3 frames, and one
/// containing `server-error` gets [`Behavior::ServerError`].
fn behavior_from_model(target: &str, body: &Value) -> Behavior {
    let model = body["model"].as_str().unwrap_or_default();
    let says = |marker: &str| target.contains(marker) || model.contains(marker);
    if says("reset-mid-stream") {
        Behavior::ResetMidStream { after_chunks: 3 }
    } else if says("server-error") {
        Behavior::ServerError
    } else {
        Behavior::Ok
    }
}

enum Next {
    KeepAlive,
    Reset,
    Stall,
}

async fn answer(
    stream: &mut TcpStream,
    req: &http1::Request,
    body: &Value,
    behavior: Behavior,
    options: &MockOptions,
) -> std::io::Result<Next> {
    let json_ct = "application/json";
    let Some((kind, op, model)) = formats::route(&req.method, &req.target, body) else {
        let b = json!({"error": {"message": format!("mock: no route for {} {}", req.method, req.target),
            "type": "invalid_request_error"}});
        http1::write_full(stream, 404, json_ct, &[], b.to_string().as_bytes()).await?;
        return Ok(Next::KeepAlive);
    };
    if let Some(key) = &options.require_key {
        if formats::api_key(kind, req).as_deref() != Some(key.as_str()) {
            let b = formats::error_body(kind, 401, "mock: wrong or missing API key");
            http1::write_full(stream, 401, json_ct, &[], b.to_string().as_bytes()).await?;
            return Ok(Next::KeepAlive);
        }
    }
    let chat = matches!(op, Op::Chat { .. });
    let refused = match kind {
        Kind::OpenAi | Kind::Azure if chat => formats::openai_request_error(body),
        Kind::Anthropic if chat => formats::anthropic_request_error(body),
        _ => None,
    };
    if let Some(b) = refused {
        http1::write_full(stream, 400, json_ct, &[], b.to_string().as_bytes()).await?;
        return Ok(Next::KeepAlive);
    }
    if kind == formats::Kind::Gemini && matches!(op, Op::Chat { .. }) {
        if let Some(message) = formats::gemini_request_error(body) {
            let b =
                json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}});
            http1::write_full(stream, 400, json_ct, &[], b.to_string().as_bytes()).await?;
            return Ok(Next::KeepAlive);
        }
    }
    let model = match (&options.azure_model, kind) {
        (Some(m), formats::Kind::Azure) => m.clone(),
        _ => model,
    };
    if !options.delay.is_zero() {
        tokio::time::sleep(options.delay).await;
    }
    let mut usage = true;
    let text = match &behavior {
        Behavior::Text(t) => Some(t.clone()),
        _ => None,
    };
    let refusal = match &behavior {
        Behavior::Refusal(r) if matches!(kind, Kind::OpenAi | Kind::Azure) => Some(r.clone()),
        _ => None,
    };
    match behavior.clone() {
        Behavior::Ok | Behavior::Stall { .. } | Behavior::ResetMidStream { .. } => {}
        Behavior::Text(_) | Behavior::Refusal(_) | Behavior::ErrorMidStream { .. } => {}
        Behavior::NoUsage => usage = false,
        Behavior::SlowFirstToken(d) => tokio::time::sleep(d).await,
        Behavior::RateLimited { retry_after_secs } => {
            let b = formats::error_body(kind, 429, "mock: rate limited");
            let h = [("retry-after".to_string(), retry_after_secs.to_string())];
            http1::write_full(stream, 429, json_ct, &h, b.to_string().as_bytes()).await?;
            return Ok(Next::KeepAlive);
        }
        Behavior::RateLimitedRaw { retry_after } => {
            let b = formats::error_body(kind, 429, "mock: rate limited");
            let h: Vec<(String, String)> = retry_after
                .map(|v| ("retry-after".to_string(), v))
                .into_iter()
                .collect();
            http1::write_full(stream, 429, json_ct, &h, b.to_string().as_bytes()).await?;
            return Ok(Next::KeepAlive);
        }
        Behavior::RateLimitedRetryInfo { retry_delay } => {
            let b = formats::gemini_rate_limited(&retry_delay);
            http1::write_full(stream, 429, json_ct, &[], b.to_string().as_bytes()).await?;
            return Ok(Next::KeepAlive);
        }
        Behavior::ServerError => {
            let b = formats::error_body(kind, 500, "mock: internal error");
            http1::write_full(stream, 500, json_ct, &[], b.to_string().as_bytes()).await?;
            return Ok(Next::KeepAlive);
        }
        Behavior::Status(code) => {
            let b = formats::error_body(kind, code, &format!("mock: status {code}"));
            http1::write_full(stream, code, json_ct, &[], b.to_string().as_bytes()).await?;
            return Ok(Next::KeepAlive);
        }
        Behavior::ErrorBody { status, body } => {
            http1::write_full(stream, status, json_ct, &[], body.to_string().as_bytes()).await?;
            return Ok(Next::KeepAlive);
        }
        Behavior::ResetBeforeResponse => return Ok(Next::Reset),
        Behavior::SafetyBlock => {
            let b = formats::gemini_blocked();
            http1::write_full(stream, 200, json_ct, &[], b.to_string().as_bytes()).await?;
            return Ok(Next::KeepAlive);
        }
    }
    let error_event = match &behavior {
        Behavior::ErrorMidStream { after_chunks, body } => Some((*after_chunks, body.clone())),
        _ => None,
    };
    let cut = match behavior {
        Behavior::ResetMidStream { after_chunks } => Some((after_chunks, Next::Reset)),
        Behavior::Stall { after_chunks } => Some((after_chunks, Next::Stall)),
        _ => None,
    };
    match op {
        Op::Models => {
            let b = json!({"object": "list", "data": [
                {"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]});
            http1::write_full(stream, 200, json_ct, &[], b.to_string().as_bytes()).await?;
            Ok(Next::KeepAlive)
        }
        Op::Embed => {
            let n = formats::embed_inputs(kind, body);
            let b = formats::embed_response(kind, &model, n).to_string();
            write_maybe_cut(stream, b.as_bytes(), cut).await
        }
        Op::Chat { stream: false } => {
            let mut a = formats::answer(kind, body);
            if let Some(t) = text {
                a.words = vec![t];
                a.tool = None;
            }
            if refusal.is_some() {
                a.refusal = refusal;
                a.tool = None;
            }
            let b = formats::chat_response(kind, &model, &a, usage).to_string();
            write_maybe_cut(stream, b.as_bytes(), cut).await
        }
        Op::Chat { stream: true } => {
            let mut a = formats::answer(kind, body);
            if let Some(t) = text {
                a.words = vec![t];
                a.tool = None;
            }
            if refusal.is_some() {
                a.refusal = refusal;
                a.tool = None;
            }
            let mut frames = formats::chat_stream(kind, &model, &a, usage, body);
            if let Some((after, error_body)) = error_event {
                frames.truncate(after);
                frames.push(formats::stream_error_frame(kind, error_body.as_ref()));
            }
            let ct = if kind == Kind::Ollama {
                "application/x-ndjson"
            } else {
                "text/event-stream"
            };
            http1::write_chunked_head(stream, ct).await?;
            for (i, frame) in frames.iter().enumerate() {
                if let Some((after, _)) = &cut {
                    if i == *after {
                        break;
                    }
                }
                if !options.chunk_delay.is_zero() {
                    tokio::time::sleep(options.chunk_delay).await;
                }
                http1::write_chunk(stream, frame.as_bytes()).await?;
            }
            match cut {
                Some((_, next)) => Ok(next),
                None => {
                    http1::write_last_chunk(stream).await?;
                    Ok(Next::KeepAlive)
                }
            }
        }
    }
}

async fn write_maybe_cut(
    stream: &mut TcpStream,
    body: &[u8],
    cut: Option<(usize, Next)>,
) -> std::io::Result<Next> {
    match cut {
        None => {
            http1::write_full(stream, 200, "application/json", &[], body).await?;
            Ok(Next::KeepAlive)
        }
        Some((_, next)) => {
            // Promise the whole body, send half of it.
            use tokio::io::AsyncWriteExt;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body[..body.len() / 2]).await?;
            Ok(next)
        }
    }
}
