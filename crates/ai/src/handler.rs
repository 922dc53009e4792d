//! The `ai` route handler: dispatches `/v1/chat/completions`, `/v1/messages`,
//! `/v1/embeddings`, `/v1/models` and `/apis/NAME`, and records the call's AI usage in the
//! shared [`RequestContext::extra`] (also when a stream ends after the handler returned).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast_core::{AiUsage, ResetClass};
use holdfast_proxy::plugin::{Body, BoxError, BoxFuture, RequestContext, RouteHandler};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use crate::engine::{Attempts, Gateway};
use crate::error::AiError;
use crate::stream::{forward, stream_body, StreamJob};
use crate::stream_out::{openai_usage, AnthropicWriter, OpenAiWriter, StreamWriter};
use crate::usage::{self, Usage};
use crate::{messages, prompts};

/// Largest request body accepted (images make chat requests big).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// Which API shape the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFormat {
    OpenAi,
    Anthropic,
}

/// Answers the routes configured with `handler = "ai"`.
pub struct AiHandler {
    pub gateway: Arc<Gateway>,
}

impl RouteHandler for AiHandler {
    fn handle(
        &self,
        req: Request<Body>,
        ctx: RequestContext,
    ) -> BoxFuture<'static, Response<Body>> {
        let gateway = self.gateway.clone();
        Box::pin(async move { handle(gateway, req, ctx).await })
    }
}

/// Marks a call whose handler future is dropped before it finished (the data plane drops
/// it when the client goes away) as `client_aborted`, keeping the deployment and attempts
/// recorded so far. Dropping the future also stops every retry and failover.
struct AbortGuard {
    extra: Arc<std::sync::Mutex<holdfast_core::CallExtra>>,
    armed: bool,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ai) = extra.ai.as_mut() {
            if ai.outcome == "started" {
                ai.outcome = "client_aborted".to_string();
                extra.reset_class = Some(ResetClass::ClientAborted);
            }
        }
    }
}

async fn handle(gateway: Arc<Gateway>, req: Request<Body>, ctx: RequestContext) -> Response<Body> {
    let mut guard = AbortGuard {
        extra: ctx.extra.clone(),
        armed: true,
    };
    let resp = route(gateway, req, &ctx).await;
    guard.armed = false;
    resp
}

async fn route(gateway: Arc<Gateway>, req: Request<Body>, ctx: &RequestContext) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().trim_end_matches('/').to_string();
    let format = if path.ends_with("/messages") {
        ClientFormat::Anthropic
    } else {
        ClientFormat::OpenAi
    };
    let result = match (parts.method.as_str(), path.as_str()) {
        ("GET", p) if p.ends_with("/models") => Ok(models(&gateway)),
        ("GET", p) if p.contains("/models/") && !p.starts_with("/apis/") => {
            let id = &p[p.find("/models/").map_or(0, |i| i + "/models/".len())..];
            model(&gateway, id)
        }
        ("POST", p) if p.ends_with("/chat/completions") || p.ends_with("/messages") => {
            match read_json(body).await {
                Ok(v) => chat(&gateway, v, format, ctx).await,
                Err(e) => Err(e),
            }
        }
        ("POST", p) if p.ends_with("/embeddings") => match read_json(body).await {
            Ok(v) => embeddings(&gateway, v, ctx).await,
            Err(e) => Err(e),
        },
        ("POST", p) if p.starts_with("/apis/") => match read_json(body).await {
            Ok(v) => prompts::call(&gateway, &p["/apis/".len()..], v, ctx).await,
            Err(e) => Err(e),
        },
        (m, p) => Err(AiError::not_found(
            format!(
                "no AI endpoint for {m} {p}; use POST /v1/chat/completions, POST /v1/messages, \
                 POST /v1/embeddings, GET /v1/models or POST /apis/NAME"
            ),
            "unknown_url",
        )),
    };
    match result {
        Ok(resp) => resp,
        Err(e) => {
            {
                let mut extra = ctx.extra.lock().unwrap_or_else(|p| p.into_inner());
                if extra.reset_class.is_none() {
                    extra.reset_class = e.reset_class;
                }
                if let Some(ai) = extra.ai.as_mut() {
                    ai.outcome = e.outcome.to_string();
                }
            }
            error_response(&e, format)
        }
    }
}

async fn read_json(mut body: Body) -> Result<Value, AiError> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| AiError::bad_request(format!("cannot read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_BODY {
                return Err(AiError {
                    status: 413,
                    ..AiError::bad_request(format!("the request body is over {MAX_BODY} bytes"))
                });
            }
            bytes.extend_from_slice(&data);
        }
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| AiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// A complete JSON response.
pub fn json_response(status: StatusCode, v: &Value, deployment: Option<&str>) -> Response<Body> {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(d) = deployment {
        b = b.header("x-holdfast-deployment", d);
    }
    b.body(full(Bytes::from(v.to_string())))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn full(b: Bytes) -> Body {
    Full::new(b)
        .map_err(|never| -> BoxError { match never {} })
        .boxed()
}

/// The error in the client's format, with `Retry-After` when known.
pub fn error_response(e: &AiError, format: ClientFormat) -> Response<Body> {
    let body = match format {
        ClientFormat::OpenAi => e.body(),
        ClientFormat::Anthropic => e.anthropic_body(),
    };
    let mut resp = json_response(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY),
        &body,
        None,
    );
    if let Some(secs) = e.retry_after_secs() {
        if let Ok(v) = http::HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
    }
    resp
}

/// OpenAI's model object for a configured model name.
fn model_object(name: &str) -> Value {
    json!({"id": name, "object": "model", "created": 0, "owned_by": "holdfast"})
}

/// `GET /v1/models/{id}`: the model object, or OpenAI's 404.
fn model(gateway: &Gateway, id: &str) -> Result<Response<Body>, AiError> {
    let id = percent_decode(id);
    if gateway.models.contains_key(&id) {
        return Ok(json_response(StatusCode::OK, &model_object(&id), None));
    }
    Err(AiError {
        param: Some("model".to_string()),
        ..AiError::not_found(
            format!("The model `{id}` does not exist or you do not have access to it."),
            "model_not_found",
        )
    })
}

/// `%XX` escapes in a path segment (model names may hold characters a client escapes).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn models(gateway: &Gateway) -> Response<Body> {
    let data: Vec<Value> = gateway.models.keys().map(|m| model_object(m)).collect();
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data}),
        None,
    )
}

/// Check the model name and note the call in the context.
pub fn begin_call(gateway: &Gateway, req: &Value, ctx: &RequestContext) -> Result<String, AiError> {
    let model = req["model"]
        .as_str()
        .ok_or_else(|| AiError::bad_request("`model` is required"))?
        .to_string();
    if !gateway.models.contains_key(&model) {
        let names: Vec<&str> = gateway.models.keys().map(String::as_str).collect();
        return Err(AiError::not_found(
            format!(
                "model `{model}` does not exist here; configured models: {}",
                names.join(", ")
            ),
            "model_not_found",
        ));
    }
    let mut extra = ctx.extra.lock().unwrap_or_else(|p| p.into_inner());
    extra.ai = Some(AiUsage {
        model_requested: model.clone(),
        outcome: "started".to_string(),
        ..AiUsage::default()
    });
    Ok(model)
}

/// How a call ended, for [`finish_call`].
pub struct CallEnd<'a> {
    pub usage: Option<Usage>,
    pub estimated: bool,
    pub ttft: Option<Duration>,
    pub outcome: &'a str,
    pub reset_class: Option<ResetClass>,
}

impl CallEnd<'static> {
    pub fn ok(usage: Usage, estimated: bool, ttft: Option<Duration>) -> Self {
        CallEnd {
            usage: Some(usage),
            estimated,
            ttft,
            outcome: "ok",
            reset_class: None,
        }
    }

    pub fn failed(e: &AiError) -> Self {
        CallEnd {
            usage: None,
            estimated: false,
            ttft: None,
            outcome: e.outcome,
            reset_class: e.reset_class,
        }
    }
}

/// Write the final AI usage of a call into the context.
pub fn finish_call(gateway: &Gateway, ctx: &RequestContext, attempts: &Attempts, end: CallEnd<'_>) {
    let mut extra = ctx.extra.lock().unwrap_or_else(|p| p.into_inner());
    let ai = extra.ai.get_or_insert_with(AiUsage::default);
    ai.attempts = attempts.count;
    ai.deployment = attempts.deployment.as_ref().map(|d| d.config.name.clone());
    if let (Some(u), Some(_)) = (end.usage, attempts.deployment.as_ref()) {
        ai.input_tokens = u.input;
        ai.output_tokens = u.output;
        ai.tokens_estimated = end.estimated;
        ai.cost_usd = attempts.cost(&gateway.config, u);
    }
    ai.ttft_ms = end.ttft.map(|t| t.as_secs_f64() * 1000.0);
    ai.outcome = end.outcome.to_string();
    extra.reset_class = end.reset_class;
}

/// A positive integer field (`max_tokens` and the like), else OpenAI's 400 naming it.
pub fn positive_int(field: &str, v: &Value) -> Result<u64, AiError> {
    match v {
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(x), _) if x >= 1 => Ok(x),
            (_, Some(_)) => Err(AiError::invalid_field(
                field,
                "integer_below_min_value",
                format!(
                    "Invalid '{field}': integer below minimum value. Expected a value >= 1, but got {n} instead."
                ),
            )),
            _ => Err(AiError::invalid_field(
                field,
                "invalid_type",
                format!(
                    "Invalid type for '{field}': expected an integer, but got a decimal number instead."
                ),
            )),
        },
        other => Err(AiError::invalid_field(
            field,
            "invalid_type",
            format!(
                "Invalid type for '{field}': expected an integer, but got {} instead.",
                json_type(other)
            ),
        )),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Roles a chat message may have.
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

/// Check a canonical chat request before it is routed, as OpenAI does: a 400 naming the
/// field (`param`) for an empty or malformed `messages`, an unknown role, or a bad
/// `max_tokens`/`max_completion_tokens`/`stream`.
pub fn validate_chat(req: &Value) -> Result<(), AiError> {
    let Some(messages) = req["messages"].as_array() else {
        return Err(match &req["messages"] {
            Value::Null => AiError::invalid_field(
                "messages",
                "missing_required_parameter",
                "Missing required parameter: 'messages'.",
            ),
            other => AiError::invalid_field(
                "messages",
                "invalid_type",
                format!(
                    "Invalid type for 'messages': expected an array, but got {} instead.",
                    json_type(other)
                ),
            ),
        });
    };
    if messages.is_empty() {
        return Err(AiError::invalid_field(
            "messages",
            "empty_array",
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        if !m.is_object() {
            return Err(AiError::invalid_field(
                format!("messages[{i}]"),
                "invalid_type",
                format!(
                    "Invalid type for 'messages[{i}]': expected an object, but got {} instead.",
                    json_type(m)
                ),
            ));
        }
        let param = format!("messages[{i}].role");
        match &m["role"] {
            Value::String(r) if ROLES.contains(&r.as_str()) => {}
            Value::String(r) => {
                return Err(AiError::invalid_field(
                    param,
                    "invalid_value",
                    format!(
                        "Invalid value: '{r}'. Supported values are: 'system', 'developer', 'user', 'assistant' and 'tool'."
                    ),
                ))
            }
            Value::Null => {
                return Err(AiError::invalid_field(
                    param.clone(),
                    "missing_required_parameter",
                    format!("Missing required parameter: '{param}'."),
                ))
            }
            other => {
                return Err(AiError::invalid_field(
                    param.clone(),
                    "invalid_type",
                    format!(
                        "Invalid type for '{param}': expected a string, but got {} instead.",
                        json_type(other)
                    ),
                ))
            }
        }
    }
    for field in ["max_tokens", "max_completion_tokens"] {
        match &req[field] {
            Value::Null => {}
            v => {
                positive_int(field, v)?;
            }
        }
    }
    match &req["stream"] {
        Value::Null | Value::Bool(_) => {}
        other => {
            return Err(AiError::invalid_field(
                "stream",
                "invalid_type",
                format!(
                    "Invalid type for 'stream': expected a boolean, but got {} instead.",
                    json_type(other)
                ),
            ))
        }
    }
    Ok(())
}

/// Text and tool arguments of a canonical completion (for token estimates).
pub fn completion_text(v: &Value) -> String {
    let msg = &v["choices"][0]["message"];
    let mut text = msg["content"].as_str().unwrap_or_default().to_string();
    for c in msg["tool_calls"].as_array().into_iter().flatten() {
        text.push_str(c["function"]["name"].as_str().unwrap_or_default());
        text.push_str(c["function"]["arguments"].as_str().unwrap_or_default());
    }
    text
}

async fn chat(
    gateway: &Arc<Gateway>,
    client_req: Value,
    format: ClientFormat,
    ctx: &RequestContext,
) -> Result<Response<Body>, AiError> {
    let req = match format {
        ClientFormat::OpenAi => {
            let mut req = client_req;
            // Only `/v1/messages` may carry a native Anthropic request.
            if let Some(o) = req.as_object_mut() {
                o.remove(crate::adapters::NATIVE_ANTHROPIC);
            }
            req
        }
        ClientFormat::Anthropic => messages::to_openai(&client_req)?,
    };
    let model = begin_call(gateway, &req, ctx)?;
    validate_chat(&req)?;
    let stream = req["stream"].as_bool().unwrap_or(false);
    let mut attempts = Attempts::tracking(ctx.extra.clone());
    let start = Instant::now();
    if !stream {
        let result = gateway.chat(&model, &req, &mut attempts).await;
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                finish_call(gateway, ctx, &attempts, CallEnd::failed(&e));
                return Err(e);
            }
        };
        let (usage, estimated) = match done.usage {
            Some(u) => (u, false),
            None => {
                let m = &done.deployment.config.model;
                (usage::estimate(m, &req, &completion_text(&done.body)), true)
            }
        };
        let ttft = Some(start.elapsed());
        finish_call(gateway, ctx, &attempts, CallEnd::ok(usage, estimated, ttft));
        let mut body = done.body;
        if estimated {
            body["usage"] = openai_usage(usage, true);
        }
        let body = match (format, done.native) {
            (ClientFormat::OpenAi, _) => body,
            // An Anthropic deployment's own message, unchanged (thinking blocks, citations,
            // cache usage).
            (ClientFormat::Anthropic, Some(native)) => messages::native_message(native),
            (ClientFormat::Anthropic, None) => {
                let served = served_model(&body, &done.deployment.config.model);
                messages::from_openai(&body, &served)
            }
        };
        return Ok(json_response(
            StatusCode::OK,
            &body,
            Some(&done.deployment.config.name),
        ));
    }

    let open = match gateway.chat_stream(&model, &req, &mut attempts).await {
        Ok(o) => o,
        Err(e) => {
            finish_call(gateway, ctx, &attempts, CallEnd::failed(&e));
            return Err(e);
        }
    };
    // The model that serves the stream, as the provider named it (else the deployment's).
    let served = open
        .decoder
        .model()
        .unwrap_or(&open.deployment.config.model)
        .to_string();
    let writer: Box<dyn StreamWriter> = match format {
        ClientFormat::OpenAi => Box::new(OpenAiWriter::new(
            crate::new_id("chatcmpl-"),
            served,
            crate::now_secs(),
            req["stream_options"]["include_usage"]
                .as_bool()
                .unwrap_or(false),
        )),
        ClientFormat::Anthropic => Box::new(AnthropicWriter::new(crate::new_id("msg_"), served)),
    };
    let deployment = open.deployment.config.name.clone();
    let ttft = start.elapsed();
    // From here the client has an answer: if it leaves, the call was aborted by the client.
    finish_call(
        gateway,
        ctx,
        &attempts,
        CallEnd {
            usage: Some(Usage::default()),
            estimated: true,
            ttft: Some(ttft),
            outcome: "client_aborted",
            reset_class: None,
        },
    );
    let (tx, body) = stream_body(16);
    let job = StreamJob {
        gateway: gateway.clone(),
        ctx: ctx.clone(),
        attempts,
        request: req,
        ttft,
    };
    tokio::spawn(forward(open, writer, tx, job));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .header("x-holdfast-deployment", deployment)
        .body(body.boxed())
        .map_err(|e| AiError::bad_request(e.to_string()))
}

/// The `model` of an answer: the provider model that served it (as the provider reports
/// it, e.g. `gpt-4o-mini-2024-07-18`), else the deployment's configured model.
pub fn served_model(body: &Value, deployment_model: &str) -> String {
    body["model"]
        .as_str()
        .filter(|m| !m.is_empty())
        .unwrap_or(deployment_model)
        .to_string()
}

async fn embeddings(
    gateway: &Arc<Gateway>,
    req: Value,
    ctx: &RequestContext,
) -> Result<Response<Body>, AiError> {
    let model = begin_call(gateway, &req, ctx)?;
    let mut attempts = Attempts::tracking(ctx.extra.clone());
    let done = match gateway.embed(&model, &req, &mut attempts).await {
        Ok(d) => d,
        Err(e) => {
            finish_call(gateway, ctx, &attempts, CallEnd::failed(&e));
            return Err(e);
        }
    };
    let (usage, estimated) = match done.usage {
        Some(u) => (u, false),
        None => {
            let text = match &req["input"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let input = usage::count_tokens(&done.deployment.config.model, &text);
            (Usage { input, output: 0 }, true)
        }
    };
    finish_call(gateway, ctx, &attempts, CallEnd::ok(usage, estimated, None));
    let mut body = done.body;
    body["model"] = json!(served_model(&body, &done.deployment.config.model));
    if body.get("usage").is_none_or(Value::is_null) {
        body["usage"] = json!({"prompt_tokens": usage.input, "total_tokens": usage.input});
    }
    Ok(json_response(
        StatusCode::OK,
        &body,
        Some(&done.deployment.config.name),
    ))
}
