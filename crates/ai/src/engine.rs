//! The attempt loop: pick deployments by strategy, skip those cooling down, retry on connect
//! errors, resets, 429, 5xx and timeouts with backoff that honours `Retry-After`, then fall
//! back to the next deployment and the next model. Streams fail over only until the first
//! byte is committed to the client.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast_core::config::ai::{AiConfig, Deployment};
use holdfast_core::CallExtra;
use serde_json::Value;

use crate::adapters::{self, Decoder, Delta, UpstreamRequest};
use crate::balancer::{DeploymentState, ModelState};
use crate::client::{self, Frames, Upstream};
use crate::error::AiError;
use crate::retry_after;
use crate::usage::Usage;

/// Everything the AI handler needs, built once per config.
pub struct Gateway {
    pub config: Arc<AiConfig>,
    pub models: BTreeMap<String, ModelState>,
    pub upstream: Upstream,
}

/// How a request's attempts went. When it tracks a call's [`CallExtra`], every attempt
/// is written there as it starts, so a call that ends early (the client went away and the
/// handler future was dropped) is still recorded with its deployment and attempts.
#[derive(Debug, Clone, Default)]
pub struct Attempts {
    pub count: u32,
    pub deployment: Option<Arc<DeploymentState>>,
    /// The model the provider's answer names (e.g. Azure's `gpt-4o-2024-08-06` behind a
    /// deployment name): what the call is priced by, see [`Attempts::cost`].
    pub served_model: Option<String>,
    progress: Option<Arc<Mutex<CallExtra>>>,
}

impl Attempts {
    /// Attempts that keep `extra.ai` (when present) up to date, and set
    /// `extra.upstream_started` when the first provider request starts (the call record's
    /// `upstream_ms` runs from there to the response's end).
    pub fn tracking(extra: Arc<Mutex<CallExtra>>) -> Attempts {
        Attempts {
            progress: Some(extra),
            ..Attempts::default()
        }
    }

    /// Cost in USD of `usage` on the deployment that answered, priced by the model its
    /// answer named, else by the deployment's configured model (0 when neither is priced).
    pub fn cost(&self, config: &AiConfig, usage: Usage) -> f64 {
        match &self.deployment {
            Some(d) => crate::usage::deployment_cost(
                config,
                &d.config,
                self.served_model.as_deref(),
                usage,
            ),
            None => 0.0,
        }
    }

    fn begin(&mut self, dep: &Arc<DeploymentState>) {
        self.count += 1;
        self.deployment = Some(dep.clone());
        if let Some(extra) = &self.progress {
            let mut extra = extra.lock().unwrap_or_else(|p| p.into_inner());
            extra.upstream_started.get_or_insert_with(Instant::now);
            if let Some(ai) = extra.ai.as_mut() {
                ai.attempts = self.count;
                ai.deployment = Some(dep.config.name.clone());
            }
        }
    }
}

/// A successful non-streaming call.
pub struct Completed {
    pub body: Value,
    pub usage: Option<Usage>,
    pub deployment: Arc<DeploymentState>,
    /// The provider's own answer when it is already an Anthropic message (an Anthropic
    /// deployment): what `/v1/messages` clients get, thinking blocks and all.
    pub native: Option<Value>,
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
    ///
    /// The plan is every deployment of every model of the chain, in order. The attempt
    /// budget (`max_attempts`) never starves the chain:
    /// - each model of the chain always gets one attempt (its first deployment that is not
    ///   cooling down), even past `max_attempts`;
    /// - the other deployments of a model are tried while attempts are left;
    /// - a deployment is asked again (once, after its backoff) only when the budget still
    ///   leaves one attempt for every deployment not tried yet, so retries never take the
    ///   place of a fallback.
    ///
    /// Errors that are not `failover` (the request's own fault) end the run at once; errors
    /// that are `failover` but not `retryable` (the provider refused the key) move on
    /// without asking the same deployment again.
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
        let chain = self.chain(model);
        let plan: Vec<(usize, Arc<DeploymentState>)> = chain
            .iter()
            .enumerate()
            .filter_map(|(i, name)| self.models.get(*name).map(|m| (i, m)))
            .flat_map(|(i, m)| m.order().into_iter().map(move |d| (i, d)))
            .collect();
        let mut model_tried = vec![false; chain.len()];
        let mut last_error: Option<AiError> = None;
        let mut cooling = Cooling::default();
        for (pos, (model_index, dep)) in plan.iter().enumerate() {
            if let Some(left) = dep.cooling(Instant::now()) {
                cooling.note(left, dep.cooling_for_rate_limit());
                continue;
            }
            if attempts.count >= cfg.max_attempts && model_tried[*model_index] {
                continue;
            }
            model_tried[*model_index] = true;
            let mut asked_again = false;
            loop {
                attempts.begin(dep);
                let started = Instant::now();
                let e = match attempt(dep.clone()).await {
                    Ok(v) => {
                        dep.record_success(started.elapsed());
                        return Ok(v);
                    }
                    Err(e) if !e.failover => return Err(e),
                    Err(e) => e,
                };
                let wait = e.retry_after;
                let too_long = wait.is_some_and(|w| w > cfg.max_retry_wait);
                dep.record_failure(
                    cfg.cooldown_failures,
                    cfg.cooldown,
                    wait.filter(|_| too_long),
                    e.status == 429,
                );
                tracing::debug!(deployment = %dep.config.name, error = %e, "ai attempt failed");
                last_error = Some(e);
                let untried = plan[pos + 1..]
                    .iter()
                    .filter(|(_, d)| d.cooling(Instant::now()).is_none())
                    .count() as u32;
                let ask_again = last_error.as_ref().is_some_and(|e| e.retryable)
                    && !asked_again
                    && !too_long
                    && dep.cooling(Instant::now()).is_none()
                    && attempts.count + 1 + untried <= cfg.max_attempts;
                if !ask_again {
                    break;
                }
                asked_again = true;
                tokio::time::sleep(wait.unwrap_or(cfg.retry_backoff)).await;
            }
        }
        Err(match last_error {
            Some(mut e) => {
                if e.retry_after.is_none() {
                    e.retry_after = cooling.soonest;
                }
                e
            }
            None if cooling.all_rate_limited() => AiError::all_rate_limited(model, cooling.soonest),
            None => AiError::no_deployment(model, cooling.soonest),
        })
    }

    /// A non-streaming chat completion.
    pub async fn chat(
        &self,
        model: &str,
        req: &Value,
        attempts: &mut Attempts,
    ) -> Result<Completed, AiError> {
        let done = self
            .unary(
                model,
                attempts,
                |d| adapters::chat_request(d, req, false),
                adapters::parse_chat_native,
            )
            .await?;
        attempts.served_model = done.body["model"].as_str().map(String::from);
        Ok(done)
    }

    /// Start a stream: fails over until the first frame with content arrives.
    pub async fn chat_stream(
        &self,
        model: &str,
        req: &Value,
        attempts: &mut Attempts,
    ) -> Result<OpenStream, AiError> {
        let open = self
            .run(model, attempts, |dep| async move {
                let guard = dep.begin();
                let attempt_start = Instant::now();
                let d = &dep.config;
                let upstream_req = adapters::chat_request(d, req, true)?;
                let ttft = self.config.ttft_timeout;
                let resp = self.upstream.send(&d.name, &upstream_req, ttft).await?;
                let status = resp.status();
                if !status.is_success() {
                    let headers = resp.headers().clone();
                    let body = client::read_body(&d.name, resp.into_body(), ttft)
                        .await
                        .unwrap_or_else(|_| Bytes::new());
                    return Err(adapters::upstream_error(
                        d,
                        status.as_u16(),
                        &body,
                        retry_after::from_response(&headers, &body),
                    ));
                }
                let mut frames = client::frames(resp.into_body(), adapters::framing(d.provider));
                let mut decoder = adapters::decoder(d);
                let deadline = attempt_start + ttft;
                // Read until the first delta (content, tool call or finish).
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let next =
                        tokio::time::timeout(left, futures_util::StreamExt::next(&mut frames))
                            .await;
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
            .await?;
        attempts.served_model = open.decoder.model().map(String::from);
        Ok(open)
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
            |d, body| adapters::parse_embed(d, body).map(|(v, u)| (v, u, None)),
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
            let headers = (!status.is_success()).then(|| resp.headers().clone());
            let body = client::read_body(
                &d.name,
                resp.into_body(),
                total.saturating_sub(started.elapsed()),
            )
            .await?;
            if let Some(headers) = headers {
                return Err(adapters::upstream_error(
                    d,
                    status.as_u16(),
                    &body,
                    retry_after::from_response(&headers, &body),
                ));
            }
            let (body, usage, native) = parse(d, &body)?;
            Ok(Completed {
                body,
                usage,
                deployment: dep.clone(),
                native,
            })
        })
        .await
    }
}

/// The deployments skipped because they were cooling down.
#[derive(Default)]
struct Cooling {
    soonest: Option<Duration>,
    count: u32,
    rate_limited: u32,
}

impl Cooling {
    fn note(&mut self, left: Duration, rate_limited: bool) {
        self.soonest = Some(self.soonest.map_or(left, |s| s.min(left)));
        self.count += 1;
        if rate_limited {
            self.rate_limited += 1;
        }
    }

    /// Every skipped deployment cools down because its provider answered 429.
    fn all_rate_limited(&self) -> bool {
        self.count > 0 && self.rate_limited == self.count
    }
}

/// Parses a whole upstream answer into the client's body, the usage it reported, and the
/// provider's own answer when `/v1/messages` clients take it as it is.
type ParseWhole = fn(&Deployment, &[u8]) -> Result<(Value, Option<Usage>, Option<Value>), AiError>;
