//! The request path: API-key authentication, service and version lookup, tenant isolation,
//! subscription check, rate limits and token budgets. Reads only the in-memory index.

use bytes::Bytes;
use holdfast_core::CallExtra;
use holdfast_proxy::plugin::{Body, RequestContext};
use holdfast_store::{hash_key, Lifecycle, Limits, SubscriptionState};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::limiter::{Refusal, TOKEN_WINDOWS};
use crate::runtime::Management;

/// A JSON error response of the gateway.
pub fn refuse(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn too_many(r: &Refusal) -> Response<Body> {
    let mut resp = refuse(
        StatusCode::TOO_MANY_REQUESTS,
        &format!(
            "rate limit exceeded ({}); retry after {} s",
            r.what, r.retry_after_s
        ),
    );
    let h = resp.headers_mut();
    let num =
        |n: u64| HeaderValue::from_str(&n.to_string()).unwrap_or(HeaderValue::from_static("0"));
    h.insert(http::header::RETRY_AFTER, num(r.retry_after_s));
    h.insert("ratelimit-limit", num(r.limit));
    h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
    h.insert("ratelimit-reset", num(r.retry_after_s));
    if let Ok(v) = HeaderValue::from_str(&format!("{};w={}", r.limit, r.window_s)) {
        h.insert("ratelimit-policy", v);
    }
    resp
}

fn unauthorized(message: &str) -> Response<Body> {
    let mut resp = refuse(StatusCode::UNAUTHORIZED, message);
    resp.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"holdfast\""),
    );
    resp
}

/// `Authorization: Bearer KEY`, or the configured header's value.
fn presented_key<'a>(m: &Management, req: &'a http::request::Parts) -> Option<&'a str> {
    let value = req
        .headers
        .get(m.config().key_header.as_str())?
        .to_str()
        .ok()?;
    if m.config().key_header == "authorization" {
        value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
    } else {
        Some(value.trim())
    }
}

/// A scope whose limits apply to this request: (bucket name, label, limits).
type Scope = (String, String, Limits);

impl Management {
    /// Decide one request; fills `ctx.extra` when it passes.
    pub(crate) async fn check_request(
        &self,
        req: &http::request::Parts,
        ctx: &RequestContext,
    ) -> Result<(), Response<Body>> {
        let Some(spec) = ctx.service.as_deref() else {
            return Ok(()); // not a managed route
        };
        let (service_name, version) = match spec.split_once('@') {
            Some((s, v)) => (s, Some(v)),
            None => (spec, None),
        };
        let Some(key) = presented_key(self, req) else {
            let how = if self.config().key_header == "authorization" {
                "send `Authorization: Bearer KEY`".to_string()
            } else {
                format!("send the key in the `{}` header", self.config().key_header)
            };
            return Err(unauthorized(&format!("an API key is required: {how}")));
        };
        let hash = hash_key(&self.secret, key);
        let now = holdfast_store::now_ms();
        let (scopes, extra) = {
            let index = self.index();
            let Some(k) = index.keys_by_hash.get(&hash) else {
                return Err(unauthorized("the API key is not valid"));
            };
            // Known key: its calls (refused ones too) go to its tenant's call log.
            if let Ok(mut e) = ctx.extra.lock() {
                e.tenant = Some(k.tenant.clone());
                e.consumer = Some(k.consumer.clone());
                e.key_prefix = Some(k.prefix.clone());
            }
            if k.revoked_ms.is_some() {
                return Err(unauthorized(&format!(
                    "the API key {} was revoked",
                    k.prefix
                )));
            }
            if !k.usable_at(now) {
                return Err(unauthorized(&format!(
                    "the API key {} has expired",
                    k.prefix
                )));
            }
            let Some(svc) = index.services.get(service_name) else {
                return Err(refuse(
                    StatusCode::NOT_FOUND,
                    &format!("service `{service_name}` is not defined in API management"),
                ));
            };
            if svc.tenant == k.tenant {
                if let Ok(mut e) = ctx.extra.lock() {
                    e.service = Some(svc.name.clone());
                }
            } else {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "the API key {} belongs to another tenant and may not call service `{service_name}`",
                        k.prefix
                    ),
                ));
            }
            let chosen = match version {
                Some(v) => svc.versions.iter().find(|sv| sv.version == v),
                None => svc
                    .versions
                    .iter()
                    .filter(|sv| sv.state.callable())
                    .max_by(|a, b| a.version.cmp(&b.version)),
            };
            let Some(chosen) = chosen else {
                return Err(refuse(
                    StatusCode::NOT_FOUND,
                    &format!("service `{spec}` has no published version"),
                ));
            };
            match chosen.state {
                Lifecycle::Retired => {
                    return Err(refuse(
                        StatusCode::GONE,
                        &format!(
                            "version {} of service `{service_name}` is retired",
                            chosen.version
                        ),
                    ))
                }
                Lifecycle::Draft => {
                    return Err(refuse(
                        StatusCode::NOT_FOUND,
                        &format!(
                            "version {} of service `{service_name}` is not published",
                            chosen.version
                        ),
                    ))
                }
                Lifecycle::Published | Lifecycle::Deprecated => {}
            }
            let sub =
                index
                    .subscriptions
                    .get(&(k.tenant.clone(), k.consumer.clone(), svc.name.clone()));
            match sub {
                Some(SubscriptionState::Active) => {}
                Some(SubscriptionState::Pending) => {
                    return Err(refuse(
                        StatusCode::FORBIDDEN,
                        &format!(
                            "the subscription of consumer `{}` to service `{service_name}` is waiting for approval by a tenant admin",
                            k.consumer
                        ),
                    ))
                }
                Some(SubscriptionState::Rejected) => {
                    return Err(refuse(
                        StatusCode::FORBIDDEN,
                        &format!(
                            "the subscription of consumer `{}` to service `{service_name}` was rejected",
                            k.consumer
                        ),
                    ))
                }
                None => {
                    return Err(refuse(
                        StatusCode::FORBIDDEN,
                        &format!(
                            "consumer `{}` has no subscription to service `{service_name}`: subscribe first (POST /admin/tenants/{}/subscriptions)",
                            k.consumer, k.tenant
                        ),
                    ))
                }
            }
            let consumer_limits = index
                .consumer_limits
                .get(&(k.tenant.clone(), k.consumer.clone()))
                .cloned()
                .unwrap_or_default();
            let scopes: Vec<Scope> = vec![
                (
                    format!("svc:{}", svc.name),
                    format!("service {}", svc.name),
                    svc.limits.clone(),
                ),
                (
                    format!("con:{}/{}", k.tenant, k.consumer),
                    format!("consumer {}", k.consumer),
                    consumer_limits,
                ),
                (
                    format!("key:{}", k.prefix),
                    format!("key {}", k.prefix),
                    k.limits.clone(),
                ),
            ];
            let extra = CallExtra {
                tenant: Some(k.tenant.clone()),
                service: Some(svc.name.clone()),
                service_version: Some(chosen.version.clone()),
                consumer: Some(k.consumer.clone()),
                key_prefix: Some(k.prefix.clone()),
                ..CallExtra::default()
            };
            (scopes, extra)
        };
        if let Ok(mut e) = ctx.extra.lock() {
            e.tenant = extra.tenant;
            e.service = extra.service;
            e.service_version = extra.service_version;
            e.consumer = extra.consumer;
            e.key_prefix = extra.key_prefix;
        }
        self.enforce_limits(&scopes, now)
            .await
            .map_err(|r| too_many(&r))
    }

    async fn enforce_limits(&self, scopes: &[Scope], now: i64) -> Result<(), Refusal> {
        let cfg = self.config();
        for (limit, window) in [(cfg.global_rps, 1000), (cfg.global_rpm, 60_000)] {
            if let Some(limit) = limit {
                self.limiter
                    .check("global", "global limit", limit, window)
                    .await?;
            }
        }
        for (scope, label, limits) in scopes {
            for (limit, window) in [(limits.rps, 1000), (limits.rpm, 60_000)] {
                if let Some(limit) = limit {
                    self.limiter.check(scope, label, limit, window).await?;
                }
            }
            let budgets = [
                limits.tokens_per_min,
                limits.tokens_per_day,
                limits.tokens_per_month,
            ];
            for (budget, (name, window_ms)) in budgets.into_iter().zip(TOKEN_WINDOWS) {
                let Some(budget) = budget else { continue };
                let used = self.limiter.tokens_used(scope, window_ms, now).await;
                if used >= budget {
                    let end = now - now.rem_euclid(window_ms) + window_ms;
                    return Err(Refusal {
                        what: format!(
                            "{label}: token budget of {budget} per {name} used up ({used})"
                        ),
                        limit: budget,
                        window_s: (window_ms / 1000) as u64,
                        retry_after_s: ((end - now) as u64).div_ceil(1000).max(1),
                    });
                }
            }
        }
        Ok(())
    }

    /// Count an AI call's tokens for the scopes that have token budgets.
    pub(crate) async fn count_tokens(&self, extra: &CallExtra, now: i64) {
        let Some(ai) = &extra.ai else { return };
        let tokens = ai.input_tokens + ai.output_tokens;
        if tokens == 0 {
            return;
        }
        let (Some(tenant), Some(consumer), Some(prefix)) =
            (&extra.tenant, &extra.consumer, &extra.key_prefix)
        else {
            return;
        };
        let has_budget = |l: &Limits| {
            l.tokens_per_min.is_some() || l.tokens_per_day.is_some() || l.tokens_per_month.is_some()
        };
        let scopes: Vec<String> = {
            let index = self.index();
            let mut s = Vec::new();
            if let Some(svc) = extra.service.as_ref().and_then(|n| index.services.get(n)) {
                if has_budget(&svc.limits) {
                    s.push(format!("svc:{}", svc.name));
                }
            }
            if index
                .consumer_limits
                .get(&(tenant.clone(), consumer.clone()))
                .is_some_and(has_budget)
            {
                s.push(format!("con:{tenant}/{consumer}"));
            }
            if index
                .keys_by_hash
                .values()
                .any(|k| &k.prefix == prefix && has_budget(&k.limits))
            {
                s.push(format!("key:{prefix}"));
            }
            s
        };
        for scope in scopes {
            self.limiter.add_tokens(&scope, tokens, now).await;
        }
    }
}
