//! Test support: serve the `ai` handler on 127.0.0.1:0 with a tiny hyper server, and a
//! client that reads streams frame by frame (so a broken stream's bytes are kept).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast_ai::AiPluginFactory;
use holdfast_core::config::ai::{validate, RawAiConfig};
use holdfast_core::CallExtra;
use holdfast_proxy::plugin::{BoxError, RequestContext, RouteHandler};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub struct Gateway {
    pub addr: SocketAddr,
    /// The `extra` of every request, in arrival order.
    pub extras: Arc<Mutex<Vec<Arc<Mutex<CallExtra>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Gateway {
    /// The extra of the last request, once its stream (if any) has ended.
    pub async fn last_extra(&self) -> CallExtra {
        for _ in 0..200 {
            let e = self.extras.lock().unwrap().last().cloned();
            if let Some(e) = e {
                let v = e.lock().unwrap().clone();
                if v.ai.as_ref().is_some_and(|a| a.outcome != "started") {
                    return v;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no finished AI call was recorded");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The `ai` handler for an `[ai]` section written in TOML (without the `[ai]` header).
pub fn handler(ai_toml: &str) -> Arc<dyn RouteHandler> {
    let raw: RawAiConfig = toml::from_str(ai_toml).expect("test config parses");
    let config = validate(&raw).unwrap_or_else(|e| panic!("test config is valid: {e:?}"));
    Arc::new(AiPluginFactory::new().handler(config))
}

/// A request context whose `extra` the test keeps.
pub fn context() -> (RequestContext, Arc<Mutex<CallExtra>>) {
    let extra: Arc<Mutex<CallExtra>> = Arc::default();
    let ctx = RequestContext {
        route: Arc::from("test"),
        service: None,
        client_addr: "127.0.0.1:1".parse().unwrap(),
        start: Instant::now(),
        extra: extra.clone(),
    };
    (ctx, extra)
}

/// A JSON POST request for calling a handler directly.
pub fn request(path: &str, body: &Value) -> http::Request<holdfast_proxy::plugin::Body> {
    http::Request::post(path)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| -> BoxError { match never {} })
                .boxed(),
        )
        .unwrap()
}

/// Start the handler with an `[ai]` section written in TOML (without the `[ai]` header).
pub async fn start(ai_toml: &str) -> Gateway {
    serve(handler(ai_toml)).await
}

/// Start the handler for a validated `[ai]` config.
pub async fn start_config(config: holdfast_core::config::ai::AiConfig) -> Gateway {
    serve(Arc::new(AiPluginFactory::new().handler(config))).await
}

async fn serve(handler: Arc<dyn RouteHandler>) -> Gateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let extras: Arc<Mutex<Vec<Arc<Mutex<CallExtra>>>>> = Arc::default();
    let ex = extras.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, client)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            let ex = ex.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    let extra: Arc<Mutex<CallExtra>> = Arc::default();
                    ex.lock().unwrap().push(extra.clone());
                    let ctx = RequestContext {
                        route: Arc::from("test"),
                        service: None,
                        client_addr: client,
                        start: Instant::now(),
                        extra,
                    };
                    async move {
                        let req = req.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed());
                        Ok::<_, std::convert::Infallible>(handler.handle(req, ctx).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Gateway { addr, extras, task }
}

/// A response read frame by frame.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
    /// True when the body ended with an error (connection broken), not a clean end.
    pub broken: bool,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// `data:` payloads of an SSE body, with their event names.
    pub fn events(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for block in self.body.split("\n\n") {
            let mut event = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if !data.is_empty() {
                out.push((event, data));
            }
        }
        out
    }

    /// OpenAI stream: the chunks (without `[DONE]`), and whether `[DONE]` came.
    pub fn chunks(&self) -> (Vec<Value>, bool) {
        let mut done = false;
        let mut chunks = Vec::new();
        for (event, data) in self.events() {
            if data == "[DONE]" {
                done = true;
            } else if event.is_empty() {
                chunks.push(serde_json::from_str(&data).unwrap());
            }
        }
        (chunks, done)
    }

    /// `/v1/messages` stream: the text of its `content_block_delta` events, joined.
    pub fn message_text(&self) -> String {
        self.events()
            .iter()
            .filter(|(e, _)| e == "content_block_delta")
            .filter_map(|(_, d)| {
                serde_json::from_str::<Value>(d).unwrap()["delta"]["text"]
                    .as_str()
                    .map(String::from)
            })
            .collect()
    }

    /// `/v1/messages` stream: the data of its first `name` event.
    pub fn message_event(&self, name: &str) -> Value {
        let (_, d) = self
            .events()
            .into_iter()
            .find(|(e, _)| e == name)
            .unwrap_or_else(|| panic!("no {name} event: {}", self.body));
        serde_json::from_str(&d).unwrap()
    }
}

pub async fn send(method: &str, url: &str, body: Option<Value>) -> Reply {
    let uri: http::Uri = url.parse().unwrap();
    let host = uri.authority().unwrap().to_string();
    let stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().unwrap().as_str())
        .header("host", host)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
        .await
        .expect("response head within 60 s")
        .expect("response head");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut text = Vec::new();
    let mut broken = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(60), body.frame()).await {
            Err(_) => panic!("body stalled for 60 s"),
            Ok(None) => break,
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    text.extend_from_slice(&d);
                }
            }
            Ok(Some(Err(_))) => {
                broken = true;
                break;
            }
        }
    }
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&text).into_owned(),
        broken,
    }
}

pub async fn post(gw: &Gateway, path: &str, body: Value) -> Reply {
    send("POST", &gw.url(path), Some(body)).await
}

/// A streamed `/v1/messages` request to model `m` (at most 100 tokens) with one user message.
pub async fn stream_message(gw: &Gateway, content: &str) -> Reply {
    post(
        gw,
        "/v1/messages",
        serde_json::json!({"model": "m", "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": content}]}),
    )
    .await
}

/// The text content of an OpenAI stream, and the assembled tool call (name, arguments).
pub fn stream_text(chunks: &[Value]) -> (String, Option<(String, String)>) {
    let mut text = String::new();
    let mut name = None;
    let mut args = String::new();
    for c in chunks {
        let d = &c["choices"][0]["delta"];
        if let Some(t) = d["content"].as_str() {
            text.push_str(t);
        }
        for call in d["tool_calls"].as_array().into_iter().flatten() {
            if let Some(n) = call["function"]["name"].as_str() {
                name = Some(n.to_string());
            }
            args.push_str(call["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    (text, name.map(|n| (n, args)))
}

/// One `[ai.models.NAME]` with one deployment.
pub fn model(name: &str, provider: &str, upstream_model: &str, base_url: &str) -> String {
    format!(
        "[models.{name}]\n[[models.{name}.deployments]]\nprovider = \"{provider}\"\nmodel = \"{upstream_model}\"\nbase_url = \"{base_url}\"\napi_key = \"k-{provider}\"\n"
    )
}

/// The base URL each provider's adapter expects for a mock at `url`.
pub fn base(provider: &str, url: &str) -> String {
    match provider {
        "openai" => format!("{url}/v1"),
        _ => url.to_string(),
    }
}

/// Every provider kind the adapters speak.
pub const PROVIDERS: [&str; 5] = ["openai", "azure", "anthropic", "gemini", "ollama"];

/// The provider-side model name each provider kind answers with in the tests.
pub fn upstream_model(p: &str) -> &'static str {
    match p {
        "openai" => "gpt-4o-mini",
        "azure" => "my-gpt4o-deployment",
        "anthropic" => "claude-3-5-haiku-20241022",
        "gemini" => "gemini-1.5-flash",
        _ => "llama3.2",
    }
}

/// A mock provider of kind `p` and a gateway with one model `m` on it.
pub async fn setup(p: &str) -> (holdfast_mock_providers::MockProvider, Gateway) {
    let mock = holdfast_mock_providers::MockProvider::start()
        .await
        .unwrap();
    let gw = start(&model("m", p, upstream_model(p), &base(p, &mock.url()))).await;
    (mock, gw)
}
