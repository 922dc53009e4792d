//! The request path: API-key authentication, service and version lookup, tenant isolation,
//! subscription check, rate limits and token budgets. Reads only the in-memory index.

use bytes::Bytes;
use holdfast_core::CallExtra;
use holdfast_proxy::plugin::{Body, RequestContext};
use holdfast_store::{hash_key, Lifecycle, Limits, SubscriptionState};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::jwt::{JwtError, Verifier};
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

/// Who is calling, from an API key or a JWT.
struct Identity {
    tenant: String,
    consumer: String,
    /// The key prefix, or `jwt` for a token.
    prefix: String,
    /// The key's own limits (`None` for a JWT).
    key_limits: Option<Limits>,
}

/// The JWT in `Authorization: Bearer JWT`.
fn presented_jwt(req: &http::request::Parts) -> Option<&str> {
    let value = req
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

impl Management {
    /// Authenticate by API key (the index only).
    // The refusal is the guard's own answer type, built once per refused request.
    #[allow(clippy::result_large_err)]
    fn identify_key(
        &self,
        req: &http::request::Parts,
        now: i64,
    ) -> Result<Identity, Response<Body>> {
        let Some(key) = presented_key(self, req) else {
            let how = if self.config().key_header == "authorization" {
                "send `Authorization: Bearer KEY`".to_string()
            } else {
                format!("send the key in the `{}` header", self.config().key_header)
            };
            return Err(unauthorized(&format!("an API key is required: {how}")));
        };
        let hash = hash_key(&self.secret, key);
        let index = self.index();
        let Some(k) = index.keys_by_hash.get(&hash) else {
            return Err(unauthorized("the API key is not valid"));
        };
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
        Ok(Identity {
            tenant: k.tenant.clone(),
            consumer: k.consumer.clone(),
            prefix: k.prefix.clone(),
            key_limits: Some(k.limits.clone()),
        })
    }

    /// Authenticate by the JWT the service requires; its claim names a consumer of the
    /// service's tenant.
    async fn identify_jwt(
        &self,
        verifier: &Verifier,
        service_name: &str,
        req: &http::request::Parts,
    ) -> Result<Identity, Response<Body>> {
        let Some(token) = presented_jwt(req) else {
            return Err(unauthorized(
                &JwtError::Missing(service_name.to_string()).to_string(),
            ));
        };
        let consumer = verifier.verify(token).await.map_err(|e| match e {
            JwtError::KeysUnavailable(_) => refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            _ => unauthorized(&e.to_string()),
        })?;
        let index = self.index();
        let Some(svc) = index.services.get(service_name) else {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                &format!("service `{service_name}` is not defined in API management"),
            ));
        };
        if !index
            .consumer_limits
            .contains_key(&(svc.tenant.clone(), consumer.clone()))
        {
            return Err(unauthorized(&format!(
                "the JWT names consumer `{consumer}`, which tenant `{}` does not have",
                svc.tenant
            )));
        }
        Ok(Identity {
            tenant: svc.tenant.clone(),
            consumer,
            prefix: "jwt".into(),
            key_limits: None,
        })
    }

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
        let now = holdfast_store::now_ms();
        let id = match self.jwt.get(service_name) {
            Some(verifier) => self.identify_jwt(verifier, service_name, req).await?,
            None => self.identify_key(req, now)?,
        };
        // Known caller: its calls (refused ones too) go to its tenant's call log.
        if let Ok(mut e) = ctx.extra.lock() {
            e.tenant = Some(id.tenant.clone());
            e.consumer = Some(id.consumer.clone());
            e.key_prefix = Some(id.prefix.clone());
        }
        let (scopes, extra) = {
            let index = self.index();
            let Some(svc) = index.services.get(service_name) else {
                return Err(refuse(
                    StatusCode::NOT_FOUND,
                    &format!("service `{service_name}` is not defined in API management"),
                ));
            };
            if svc.tenant == id.tenant {
                if let Ok(mut e) = ctx.extra.lock() {
                    e.service = Some(svc.name.clone());
                }
            } else {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "the key or token {} belongs to another tenant and may not call service `{service_name}`",
                        id.prefix
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
            let sub = index.subscriptions.get(&(
                id.tenant.clone(),
                id.consumer.clone(),
                svc.name.clone(),
            ));
            match sub {
                Some(SubscriptionState::Active) => {}
                Some(SubscriptionState::Pending) => {
                    return Err(refuse(
                        StatusCode::FORBIDDEN,
                        &format!(
                            "the subscription of consumer `{}` to service `{service_name}` is waiting for approval by a tenant admin",
                            id.consumer
                        ),
                    ))
                }
                Some(SubscriptionState::Rejected) => {
                    return Err(refuse(
                        StatusCode::FORBIDDEN,
                        &format!(
                            "the subscription of consumer `{}` to service `{service_name}` was rejected",
                            id.consumer
                        ),
                    ))
                }
                None => {
                    return Err(refuse(
                        StatusCode::FORBIDDEN,
                        &format!(
                            "consumer `{}` has no subscription to service `{service_name}`: subscribe first (POST /admin/tenants/{}/subscriptions)",
                            id.consumer, id.tenant
                        ),
                    ))
                }
            }
            let consumer_limits = index
                .consumer_limits
                .get(&(id.tenant.clone(), id.consumer.clone()))
                .cloned()
                .unwrap_or_default();
            let mut scopes: Vec<Scope> = vec![
                (
                    format!("svc:{}", svc.name),
                    format!("service {}", svc.name),
                    svc.limits.clone(),
                ),
                (
                    format!("con:{}/{}", id.tenant, id.consumer),
                    format!("consumer {}", id.consumer),
                    consumer_limits,
                ),
            ];
            if let Some(limits) = &id.key_limits {
                scopes.push((
                    format!("key:{}", id.prefix),
                    format!("key {}", id.prefix),
                    limits.clone(),
                ));
            }
            let extra = CallExtra {
                tenant: Some(id.tenant.clone()),
                service: Some(svc.name.clone()),
                service_version: Some(chosen.version.clone()),
                consumer: Some(id.consumer.clone()),
                key_prefix: Some(id.prefix.clone()),
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
