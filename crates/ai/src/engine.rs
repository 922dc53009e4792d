//! The attempt loop: pick deployments by strategy, skip those cooling down, retry on connect
//! errors, resets, 429, 5xx and timeouts with backoff that honours `Retry-After`, then fall
//! back to the next deployment and the next model. Streams fail over only until the first
//! byte is committed to the client.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast_core::config::ai::{AiConfig, Deployment};
use serde_json::Value;

use crate::adapters::{self, Decoder, Delta, UpstreamRequest};
use crate::balancer::{DeploymentState, ModelState};
use crate::client::{self, Frames, Upstream};
use crate::error::AiError;
use crate::usage::Usage;

/// Everything the AI handler needs, built once per config.
pub struct Gateway {
    pub config: Arc<AiConfig>,
    pub models: BTreeMap<String, ModelState>,
    pub upstream: Upstream,
}

/// How a request's attempts went.
#[derive(Debug, Clone, Default)]
pub struct Attempts {
    pub count: u32,
    pub deployment: Option<Arc<DeploymentState>>,
}

/// A successful non-streaming call.
pub struct Completed {
    pub body: Value,
    pub usage: Option<Usage>,
    pub deployment: Arc<DeploymentState>,
}

/// A stream whose first frames arrived: from here on it is committed to this deployment.
pub struct OpenStream {
    pub first: Vec<Delta>,
    pub frames: Frames,
    pub decoder: Box<dyn Decoder>,
    pub deployment: Arc<DeploymentState>,
    /// Time from the attempt's start to the first frame.
    pub attempt_start: Instant,
    /// Keeps the in-flight count while the stream runs.
    pub guard: crate::balancer::InflightGuard,
    /// True when the decoder already reached the provider's end (tiny answers).
    pub ended: bool,
}

impl Gateway {
    pub fn new(config: AiConfig, upstream: Upstream) -> Gateway {
        let models = config
            .models
            .iter()
            .map(|(name, m)| (name.clone(), ModelState::new(m)))
            .collect();
        Gateway {
            config: Arc::new(config),
            models,
            upstream,
        }
    }

    /// The model and its fallbacks (recursively, each once), in order.
    fn chain(&self, model: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let mut seen = HashSet::new();
        let mut queue = vec![model];
        while let Some(m) = queue.first().copied() {
            queue.remove(0);
            if !seen.insert(m) {
                continue;
            }
            if let Some((name, state)) = self.models.get_key_value(m) {
                out.push(name.as_str());
                queue.extend(state.fallbacks.iter().map(String::as_str));
            }
        }
        out
    }

    /// Run `attempt` over the deployments of `model` and its fallbacks until one succeeds.
    pub async fn run<T, F, Fut>(
        &self,
        model: &str,
        attempts: &mut Attempts,
        mut attempt: F,
    ) -> Result<T, AiError>
    where
        F: FnMut(Arc<DeploymentState>) -> Fut,
        Fut: Future<Output = Result<T, AiError>>,
    {
        let cfg = &self.config;
        let mut last_error: Option<AiError> = None;
        let mut soonest_free: Option<Duration> = None;
        for name in self.chain(model) {
            let Some(state) = self.models.get(name) else {
                continue;
            };
            for dep in state.order() {
                if let Some(left) = dep.cooling(Instant::now()) {
                    soonest_free = Some(soonest_free.map_or(left, |s: Duration| s.min(left)));
                    continue;
                }
                let mut tries_here = 0u32;
                loop {
                    if attempts.count >= cfg.max_attempts {
                        return Err(
                            last_error.unwrap_or_else(|| AiError::no_deployment(model, None))
                        );
                    }
                    attempts.count += 1;
                    tries_here += 1;
                    attempts.deployment = Some(dep.clone());
                    let started = Instant::now();
                    match attempt(dep.clone()).await {
                        Ok(v) => {
                            dep.record_success(started.elapsed());
                            return Ok(v);
                        }
                        Err(e) if !e.retryable => return Err(e),
                        Err(e) => {
                            let wait = e.retry_after;
                            let too_long = wait.is_some_and(|w| w > cfg.max_retry_wait);
                            dep.record_failure(
                                cfg.cooldown_failures,
                                cfg.cooldown,
                                wait.filter(|_| too_long),
                            );
                            tracing::debug!(deployment = %dep.config.name, error = %e, "ai attempt failed");
                            last_error = Some(e);
                            // One retry on the same deployment, when the wait is short enough.
                            if tries_here >= 2 || too_long || dep.cooling(Instant::now()).is_some()
                            {
                                break;
                            }
                            let backoff = wait.unwrap_or(cfg.retry_backoff);
                            tokio::time::sleep(backoff).await;
                        }
                    }
                }
            }
        }
        Err(match last_error {
            Some(mut e) => {
                if e.retry_after.is_none() {
                    e.retry_after = soonest_free;
                }
                e
            }
            None => AiError::no_deployment(model, soonest_free),
        })
    }

    /// A non-streaming chat completion.
    pub async fn chat(
        &self,
        model: &str,
        req: &Value,
        attempts: &mut Attempts,
    ) -> Result<Completed, AiError> {
        self.unary(
            model,
            attempts,
            |d| adapters::chat_request(d, req, false),
            adapters::parse_chat,
        )
        .await
    }

    /// Start a stream: fails over until the first frame with content arrives.
    pub async fn chat_stream(
        &self,
        model: &str,
        req: &Value,
        attempts: &mut Attempts,
    ) -> Result<OpenStream, AiError> {
        self.run(model, attempts, |dep| async move {
            let guard = dep.begin();
            let attempt_start = Instant::now();
            let d = &dep.config;
            let upstream_req = adapters::chat_request(d, req, true)?;
            let ttft = self.config.ttft_timeout;
            let resp = self.upstream.send(&d.name, &upstream_req, ttft).await?;
            let status = resp.status();
            if !status.is_success() {
                let retry_after = retry_after(resp.headers());
                let body = client::read_body(&d.name, resp.into_body(), ttft)
                    .await
                    .unwrap_or_else(|_| Bytes::new());
                return Err(AiError::upstream_status(
                    &d.name,
                    status.as_u16(),
                    &adapters::error_message(&body),
                    retry_after,
                ));
            }
            let mut frames = client::frames(resp.into_body(), adapters::framing(d.provider));
            let mut decoder = adapters::decoder(d);
            let deadline = attempt_start + ttft;
            // Read until the first delta (content, tool call or finish).
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let next =
                    tokio::time::timeout(left, futures_util::StreamExt::next(&mut frames)).await;
                match next {
                    Err(_) => return Err(AiError::timeout(&d.name, "the first token", ttft)),
                    Ok(None) => {
                        let first = decoder.end()?;
                        return Ok(OpenStream {
                            first,
                            frames,
                            decoder,
                            deployment: dep.clone(),
                            attempt_start,
                            guard,
                            ended: true,
                        });
                    }
                    Ok(Some(Err(e))) => return Err(AiError::reset(&d.name, e, true)),
                    Ok(Some(Ok((event, data)))) => {
                        let deltas = decoder.feed(&event, &data)?;
                        if !deltas.is_empty() {
                            return Ok(OpenStream {
                                first: deltas,
                                frames,
                                decoder,
                                deployment: dep.clone(),
                                attempt_start,
                                guard,
                                ended: false,
                            });
                        }
                    }
                }
            }
        })
        .await
    }

    /// Embeddings.
    pub async fn embed(
        &self,
        model: &str,
        req: &Value,
        attempts: &mut Attempts,
    ) -> Result<Completed, AiError> {
        self.unary(
            model,
            attempts,
            |d| adapters::embed_request(d, req),
            adapters::parse_embed,
        )
        .await
    }

    /// One request answered whole (chat without streaming, embeddings), with failover.
    /// The head comes only after the generation, so the whole call is bounded by the total
    /// timeout (TTFT applies to streams).
    async fn unary(
        &self,
        model: &str,
        attempts: &mut Attempts,
        build: impl Fn(&Deployment) -> Result<UpstreamRequest, AiError>,
        parse: ParseWhole,
    ) -> Result<Completed, AiError> {
        let build = &build;
        self.run(model, attempts, |dep| async move {
            let _guard = dep.begin();
            let d = &dep.config;
            let upstream_req = build(d)?;
            let (started, total) = (Instant::now(), self.config.total_timeout);
            let resp = self.upstream.send(&d.name, &upstream_req, total).await?;
            let status = resp.status();
            let retry_after = retry_after(resp.headers());
            let body = client::read_body(
                &d.name,
                resp.into_body(),
                total.saturating_sub(started.elapsed()),
            )
            .await?;
            if !status.is_success() {
                return Err(AiError::upstream_status(
                    &d.name,
                    status.as_u16(),
                    &adapters::error_message(&body),
                    retry_after,
                ));
            }
            let (body, usage) = parse(d, &body)?;
            Ok(Completed {
                body,
                usage,
                deployment: dep.clone(),
            })
        })
        .await
    }
}

/// Parses a whole upstream answer into the client's body and the usage it reported.
type ParseWhole = fn(&Deployment, &[u8]) -> Result<(Value, Option<Usage>), AiError>;

/// `Retry-After` in seconds (the HTTP-date form is rare from LLM APIs and is ignored), or
/// the `retry-after-ms` header some providers send.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_millis(ms.max(0.0) as u64));
    }
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|s| Duration::from_millis((s.max(0.0) * 1000.0) as u64))
}
