//! Outbound HTTP to the providers: a pooled hyper-util client with rustls (webpki roots) for
//! https, plain http for local servers; stream bodies are split into SSE events or NDJSON lines.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::adapters::{Framing, UpstreamRequest};
use crate::error::AiError;

/// The shared outbound client.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Upstream {
    pub fn new() -> Upstream {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        // An explicit crypto provider: never depends on which rustls features other crates
        // of the binary happen to enable.
        let builder = match HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "rustls has no safe protocol versions; using defaults");
                HttpsConnectorBuilder::new().with_webpki_roots()
            }
        };
        let https = builder
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(https);
        Upstream { client }
    }

    /// Send `req` and wait for the response head (bounded by `head_timeout`).
    pub async fn send(
        &self,
        deployment: &str,
        req: &UpstreamRequest,
        head_timeout: Duration,
    ) -> Result<http::Response<Incoming>, AiError> {
        let body =
            serde_json::to_vec(&req.body).map_err(|e| AiError::bad_request(e.to_string()))?;
        let mut builder = http::Request::post(&req.url)
            .header("content-type", "application/json")
            .header(
                "accept",
                "application/json, text/event-stream, application/x-ndjson",
            )
            .header("user-agent", "holdfast");
        for (k, v) in &req.headers {
            builder = builder.header(*k, v);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AiError::connect(deployment, format!("bad URL {}: {e}", req.url)))?;
        match tokio::time::timeout(head_timeout, self.client.request(request)).await {
            Err(_) => Err(AiError::timeout(
                deployment,
                "the response head",
                head_timeout,
            )),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => Err(AiError::connect(deployment, error_chain(&e))),
            Ok(Err(e)) => Err(AiError::reset(deployment, error_chain(&e), false)),
        }
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream::new()
    }
}

/// An error with its sources (hyper's top-level messages alone are vague).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Read a whole body, bounded by `timeout`.
pub async fn read_body(
    deployment: &str,
    body: Incoming,
    timeout: Duration,
) -> Result<Bytes, AiError> {
    match tokio::time::timeout(timeout, body.collect()).await {
        Err(_) => Err(AiError::timeout(deployment, "the response body", timeout)),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => Err(AiError::reset(deployment, error_chain(&e), true)),
    }
}

/// One frame of a stream: (SSE event name or empty, data).
pub type Frame = (String, String);

/// Frames of a streamed body; an `Err` means the body broke.
pub type Frames = Pin<Box<dyn Stream<Item = Result<Frame, String>> + Send>>;

/// Split a streamed body into frames.
pub fn frames(body: Incoming, framing: Framing) -> Frames {
    let data = BodyDataStream::new(body);
    match framing {
        Framing::Sse => Box::pin(data.eventsource().map(|r| match r {
            Ok(ev) => Ok((ev.event, ev.data)),
            Err(e) => Err(match e {
                eventsource_stream::EventStreamError::Transport(t) => error_chain(&t),
                other => other.to_string(),
            }),
        })),
        Framing::Ndjson => Box::pin(ndjson_lines(data)),
    }
}

fn ndjson_lines(
    data: BodyDataStream<Incoming>,
) -> impl Stream<Item = Result<Frame, String>> + Send {
    futures_util::stream::unfold(
        (data, Vec::<u8>::new(), false),
        |(mut data, mut buf, mut ended)| async move {
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&line).trim().to_string();
                    if text.is_empty() {
                        continue;
                    }
                    return Some((Ok((String::new(), text)), (data, buf, ended)));
                }
                if ended {
                    if buf.is_empty() {
                        return None;
                    }
                    let text = String::from_utf8_lossy(&buf).trim().to_string();
                    buf.clear();
                    if text.is_empty() {
                        return None;
                    }
                    return Some((Ok((String::new(), text)), (data, buf, ended)));
                }
                match data.next().await {
                    Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
                    Some(Err(e)) => {
                        ended = true;
                        buf.clear();
                        return Some((Err(error_chain(&e)), (data, buf, ended)));
                    }
                    None => ended = true,
                }
            }
        },
    )
}
