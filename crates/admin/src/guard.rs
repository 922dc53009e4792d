//! The request path: API-key authentication, service and version lookup, tenant isolation,
//! subscription check, rate limits and token budgets. Reads only the in-memory index.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use holdfast_core::config::route::ServiceSpec;
use holdfast_core::CallExtra;
use holdfast_proxy::plugin::{Body, GuardHeaders, RequestContext};
use holdfast_store::{Lifecycle, SubscriptionState};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::cache::{ConsumerEntry, Index, KeyHash, Scope, ServiceEntry};
use crate::jwt::{JwtError, Verifier};
use crate::limiter::{Allowance, Bucket, Refusal, TOKEN_WINDOWS};
use crate::runtime::{Live, Management};

/// A JSON error response of the gateway.
/// Log why a service's JWKS could not be loaded, at most once per 10 s (an outage of the IdP
/// fails every request of the service).
fn warn_keys_unavailable(service: &str, detail: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_S: AtomicU64 = AtomicU64::new(0);
    let now_s = (holdfast_store::now_ms() / 1000).max(0) as u64;
    let last = LAST_S.load(Ordering::Relaxed);
    if now_s >= last + 10
        && LAST_S
            .compare_exchange(last, now_s, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(service, error = %detail, "JWT signing keys unavailable: answering 503");
    }
}

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

const RATELIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: http::HeaderName = http::HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: http::HeaderName = http::HeaderName::from_static("ratelimit-reset");
const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");

/// Header values of small numbers, built once: cloning one copies no bytes.
fn number(n: u64) -> HeaderValue {
    const CACHED: usize = 1024;
    static SMALL: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let small = SMALL.get_or_init(|| {
        let text: &'static str = (0..CACHED)
            .fold(String::new(), |mut t, i| {
                t.push_str(&i.to_string());
                t
            })
            .leak();
        let mut at = 0;
        (0..CACHED)
            .map(|i| {
                let len = i.to_string().len();
                let v = HeaderValue::from_static(&text[at..at + len]);
                at += len;
                v
            })
            .collect()
    });
    match usize::try_from(n).ok().and_then(|i| small.get(i)) {
        Some(v) => v.clone(),
        None => HeaderValue::from(n),
    }
}

/// The `RateLimit-*` headers of a request that passed: the tightest bucket it was counted in.
fn ratelimit_headers(a: &Allowance, bucket: &Bucket) -> Vec<(HeaderName, HeaderValue)> {
    vec![
        (RATELIMIT_LIMIT, bucket.limit_value.clone()),
        (RATELIMIT_REMAINING, number(a.remaining)),
        (RATELIMIT_RESET, number(a.reset_s)),
        (RATELIMIT_POLICY, bucket.policy.clone()),
    ]
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
    h.insert(RATELIMIT_LIMIT, num(r.limit));
    h.insert(RATELIMIT_REMAINING, HeaderValue::from_static("0"));
    h.insert(RATELIMIT_RESET, num(r.reset_s));
    if let Ok(v) = HeaderValue::from_str(&format!("{};w={}", r.limit, r.window_s)) {
        h.insert(RATELIMIT_POLICY, v);
    }
    resp
}

const BEARER_CHALLENGE: HeaderValue = HeaderValue::from_static("Bearer realm=\"holdfast\"");

/// 401 with `challenge` as `WWW-Authenticate`.
fn unauthorized_with(challenge: HeaderValue, message: &str) -> Response<Body> {
    let mut resp = refuse(StatusCode::UNAUTHORIZED, message);
    resp.headers_mut()
        .insert(http::header::WWW_AUTHENTICATE, challenge);
    resp
}

/// 401 for a bearer token (a JWT service).
fn unauthorized(message: &str) -> Response<Body> {
    unauthorized_with(BEARER_CHALLENGE, message)
}

/// The `WWW-Authenticate` challenge for API keys: `Bearer` when keys come in `Authorization`,
/// else `ApiKey header="NAME"` naming the configured header.
pub(crate) fn key_challenge(key_header: &http::HeaderName) -> HeaderValue {
    if *key_header == http::header::AUTHORIZATION {
        return BEARER_CHALLENGE;
    }
    HeaderValue::from_str(&format!(
        "ApiKey realm=\"holdfast\", header=\"{}\"",
        key_header.as_str()
    ))
    .unwrap_or(BEARER_CHALLENGE)
}

/// `Authorization: Bearer KEY` (any case of `Bearer`), or the configured header's value.
fn presented_key<'a>(live: &Live, req: &'a http::request::Parts) -> Option<&'a str> {
    let value = req.headers.get(&live.key_header)?.to_str().ok()?;
    if live.key_header == http::header::AUTHORIZATION {
        crate::auth::bearer(value)
    } else {
        Some(value.trim()).filter(|v| !v.is_empty())
    }
}

/// Who is calling, from an API key or a JWT: its consumer in the index, and its key.
struct Identity<'i> {
    consumer: &'i ConsumerEntry,
    /// The key prefix, or `jwt` for a token.
    prefix: &'i str,
    /// The key's own scope (`None` for a JWT).
    key_scope: Option<&'i Scope>,
}

/// The JWT in `Authorization: Bearer JWT`.
fn presented_jwt(req: &http::request::Parts) -> Option<&str> {
    let value = req
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    crate::auth::bearer(value)
}

/// The scopes whose limits apply to a request: global, service, consumer, key.
type Scopes<'i> = [Option<&'i Scope>; 4];

/// A caller let through to its service's version: the scopes whose limits apply, and when
/// the version was deprecated, if it is.
struct Admitted<'i> {
    scopes: Scopes<'i>,
    deprecated_since_ms: Option<i64>,
    /// When the version is planned to go away, if its owner said.
    sunset_ms: Option<i64>,
}

/// The headers of a request that passed: the tightest bucket's `RateLimit-*`; for a
/// deprecated version `Deprecation: @SECONDS` (RFC 9745: when it was deprecated); for a version
/// with a planned end `Sunset: HTTP-DATE` (RFC 8594).
fn passing_headers(
    tightest: Option<(Allowance, &Bucket)>,
    admitted: &Admitted<'_>,
) -> GuardHeaders {
    let mut headers = tightest.map(|(a, bucket)| ratelimit_headers(&a, bucket));
    if let Some(ms) = admitted.deprecated_since_ms {
        if let Ok(value) = HeaderValue::from_str(&format!("@{}", ms.div_euclid(1000))) {
            headers
                .get_or_insert_with(Vec::new)
                .push((HeaderName::from_static("deprecation"), value));
        }
    }
    if let Some(value) = admitted.sunset_ms.and_then(sunset_value) {
        headers
            .get_or_insert_with(Vec::new)
            .push((HeaderName::from_static("sunset"), value));
    }
    headers
}

/// `Sunset`'s value: the time as an IMF-fixdate (`Tue, 30 Jun 2026 00:00:00 GMT`).
fn sunset_value(ms: i64) -> Option<HeaderValue> {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).ok()?);
    HeaderValue::from_str(&httpdate::fmt_http_date(at)).ok()
}

/// The service name of a route's `service = "NAME"` or `"NAME@VERSION"`.
/// The service name of a route's `service` (`[TENANT/]NAME[@VERSION]`).
fn service_of(spec: &str) -> &str {
    ServiceSpec::parse(spec).name
}

fn keep_tightest<'s>(
    tightest: &mut Option<(Allowance, &'s Bucket)>,
    a: Allowance,
    bucket: &'s Bucket,
) {
    if tightest.as_ref().is_none_or(|(t, _)| a.tighter_than(t)) {
        *tightest = Some((a, bucket));
    }
}

/// A scope's token budgets: (budget, window name, window ms).
fn budgets(scope: &Scope) -> impl Iterator<Item = (u64, &'static str, i64)> {
    let l = &scope.limits;
    [l.tokens_per_min, l.tokens_per_day, l.tokens_per_month]
        .into_iter()
        .zip(TOKEN_WINDOWS)
        .filter_map(|(budget, (name, window_ms))| Some((budget?, name, window_ms)))
}

/// `Err` when `used` tokens exhaust `budget` in the current window.
fn budget_left(
    scope: &Scope,
    budget: u64,
    name: &str,
    window_ms: i64,
    used: u64,
    now: i64,
) -> Result<(), Refusal> {
    if used < budget {
        return Ok(());
    }
    let end = now - now.rem_euclid(window_ms) + window_ms;
    Err(Refusal {
        what: format!(
            "{}: token budget of {budget} per {name} used up ({used})",
            scope.label
        ),
        limit: budget,
        window_s: (window_ms / 1000) as u64,
        retry_after_s: ((end - now) as u64).div_ceil(1000).max(1),
        // The whole budget comes back when the window ends.
        reset_s: ((end - now) as u64).div_ceil(1000).max(1),
    })
}

/// A caller refused before it was known (no key, an unknown key, a bad JWT): its call goes
/// to the call log under the route's service, and that service's tenant when it is defined.
/// The service a route's `service` spec names: the one of that name, if the spec pins no
/// tenant or pins the tenant that owns it (another tenant that creates a service of the same
/// name does not get the route).
fn route_service<'i>(index: &'i Index, spec: &str) -> Option<&'i ServiceEntry> {
    let ServiceSpec { tenant, name, .. } = ServiceSpec::parse(spec);
    index
        .services
        .get(name)
        .filter(|svc| tenant.is_none_or(|t| svc.service.tenant == t))
}

fn unknown_caller(index: &Index, spec: &str, ctx: &RequestContext) {
    if let Ok(mut e) = ctx.extra.lock() {
        e.service = Some(service_of(spec).to_string());
        e.tenant = route_service(index, spec).map(|s| s.service.tenant.clone());
    }
}

fn not_in_management(service_name: &str) -> Response<Body> {
    refuse(
        StatusCode::NOT_FOUND,
        &format!("service `{service_name}` is not defined in API management"),
    )
}

impl Management {
    /// Authenticate by API key (the index only).
    // The refusal is the guard's own answer type, built once per refused request.
    #[allow(clippy::result_large_err)]
    fn identify_key<'i>(
        &self,
        live: &Live,
        index: &'i Index,
        req: &http::request::Parts,
        ctx: &RequestContext,
        spec: &str,
        now: i64,
    ) -> Result<Identity<'i>, Response<Body>> {
        let service_name = service_of(spec);
        let refused = |message: &str| unauthorized_with(live.key_challenge.clone(), message);
        let Some(key) = presented_key(live, req) else {
            unknown_caller(index, spec, ctx);
            let how = if live.key_header == http::header::AUTHORIZATION {
                "send `Authorization: Bearer KEY`".to_string()
            } else {
                format!("send the key in the `{}` header", live.key_header)
            };
            return Err(refused(&format!("an API key is required: {how}")));
        };
        let Some(k) = index.keys.get(&KeyHash(self.key_hasher.hash(key))) else {
            unknown_caller(index, spec, ctx);
            return Err(refused("the API key is not valid"));
        };
        let usable = k.key.usable_at(now);
        let consumer = k.consumer.and_then(|i| index.consumers.get(i));
        if !usable || consumer.is_none() {
            // A known key that may not call: its calls go to its tenant's call log.
            if let Ok(mut e) = ctx.extra.lock() {
                e.tenant = Some(k.key.tenant.clone());
                e.consumer = Some(k.key.consumer.clone());
                e.key_prefix = Some(k.key.prefix.clone());
                e.service = Some(service_name.to_string());
            }
        }
        if k.key.revoked_ms.is_some() {
            return Err(refused(&format!(
                "the API key {} was revoked",
                k.key.prefix
            )));
        }
        if !usable {
            return Err(refused(&format!(
                "the API key {} has expired",
                k.key.prefix
            )));
        }
        let Some(consumer) = consumer else {
            return Err(refused(&format!(
                "the API key {} belongs to consumer `{}`, which no longer exists",
                k.key.prefix, k.key.consumer
            )));
        };
        Ok(Identity {
            consumer,
            prefix: &k.key.prefix,
            key_scope: Some(&k.scope),
        })
    }

    /// Authenticate by the JWT the service requires; its claim names a consumer of the
    /// service's tenant.
    async fn identify_jwt<'i>(
        &self,
        index: &'i Index,
        verifier: &Verifier,
        spec: &str,
        req: &http::request::Parts,
        ctx: &RequestContext,
    ) -> Result<Identity<'i>, Response<Body>> {
        let service_name = service_of(spec);
        let Some(token) = presented_jwt(req) else {
            unknown_caller(index, spec, ctx);
            return Err(unauthorized(
                &JwtError::Missing(service_name.to_string()).to_string(),
            ));
        };
        let consumer = verifier.verify(token).await.map_err(|e| {
            unknown_caller(index, spec, ctx);
            match e {
                JwtError::KeysUnavailable(detail) => {
                    // The detail names the IdP's URL and how it failed: the gateway log's
                    // business, not the API client's.
                    warn_keys_unavailable(service_name, &detail);
                    let mut resp = refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("the signing keys of service `{service_name}` could not be loaded, so the token cannot be verified right now; try again later"),
                    );
                    resp.headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
                    resp
                }
                _ => unauthorized(&e.to_string()),
            }
        })?;
        let Some(svc) = route_service(index, spec) else {
            return Err(not_in_management(spec));
        };
        let tenant = &svc.service.tenant;
        let Some(entry) = index.consumer(tenant, &consumer) else {
            unknown_caller(index, spec, ctx);
            return Err(unauthorized(&format!(
                "the JWT names consumer `{consumer}`, which tenant `{tenant}` does not have"
            )));
        };
        Ok(Identity {
            consumer: entry,
            prefix: "jwt",
            key_scope: None,
        })
    }

    /// Decide one request; fills `ctx.extra` when the caller is known, and answers the
    /// `RateLimit-*` headers of the tightest request-rate bucket when it passes.
    pub(crate) async fn check_request(
        &self,
        live: &Live,
        req: &http::request::Parts,
        ctx: &RequestContext,
    ) -> Result<GuardHeaders, Response<Body>> {
        let Some(spec) = ctx.service.as_deref() else {
            return Ok(None); // not a managed route
        };
        let service_name = service_of(spec);
        let now = holdfast_store::now_ms();
        // One reference to the index for the whole check (scopes are borrowed from it).
        let index: Arc<Index> = self.index_full();
        let id = match live.jwt.get(service_name) {
            Some(verifier) => self.identify_jwt(&index, verifier, spec, req, ctx).await?,
            None => self.identify_key(live, &index, req, ctx, spec, now)?,
        };
        let admitted = self.admit(live, &index, id, spec, ctx)?;
        let tightest = self
            .enforce_limits(&admitted.scopes, now)
            .await
            .map_err(|r| too_many(&r))?;
        Ok(passing_headers(tightest, &admitted))
    }

    /// [`Management::check_request`] without a future, when nothing in it waits: an API-key
    /// service with node-local limits (no Redis). `None` when the check must await.
    pub(crate) fn check_request_now(
        &self,
        live: &Live,
        req: &http::request::Parts,
        ctx: &RequestContext,
    ) -> Option<Result<GuardHeaders, Response<Body>>> {
        let Some(spec) = ctx.service.as_deref() else {
            return Some(Ok(None));
        };
        if self.limiter.is_shared() || live.jwt.get(service_of(spec)).is_some() {
            return None;
        }
        let now = holdfast_store::now_ms();
        let index = self.index();
        // The refusal is the guard's own answer type, built once per refused request.
        #[allow(clippy::result_large_err)]
        let decide = || {
            let id = self.identify_key(live, &index, req, ctx, spec, now)?;
            let admitted = self.admit(live, &index, id, spec, ctx)?;
            let tightest = self
                .enforce_limits_now(&admitted.scopes, now)
                .map_err(|r| too_many(&r))?;
            Ok(passing_headers(tightest, &admitted))
        };
        Some(decide())
    }

    /// Everything but the limits: the service, tenant isolation, the version's lifecycle and
    /// the subscription. Fills `ctx.extra`; answers the scopes whose limits apply.
    // The refusal is the guard's own answer type, built once per refused request.
    #[allow(clippy::result_large_err)]
    fn admit<'i>(
        &self,
        live: &'i Live,
        index: &'i Index,
        id: Identity<'i>,
        spec: &str,
        ctx: &RequestContext,
    ) -> Result<Admitted<'i>, Response<Body>> {
        let ServiceSpec {
            name: service_name,
            version,
            ..
        } = ServiceSpec::parse(spec);
        let tenant = id.consumer.tenant.as_str();
        // Known caller: its calls (refused ones too) go to its tenant's call log.
        let known = |service: Option<&str>, version: Option<&str>| {
            if let Ok(mut e) = ctx.extra.lock() {
                e.tenant = Some(tenant.to_string());
                e.consumer = Some(id.consumer.name.clone());
                e.key_prefix = Some(id.prefix.to_string());
                e.service = service.map(str::to_string);
                e.service_version = version.map(str::to_string);
            }
        };
        let Some(svc) = route_service(index, spec) else {
            known(None, None);
            return Err(not_in_management(spec));
        };
        let service = &svc.service;
        if service.tenant != tenant {
            // Logged for the service's owner, who should see the attempts on its service;
            // without the caller's consumer and key, which belong to another tenant.
            if let Ok(mut e) = ctx.extra.lock() {
                e.tenant = Some(service.tenant.clone());
                e.consumer = None;
                e.key_prefix = None;
                e.service = Some(service.name.clone());
                e.service_version = None;
            }
            return Err(refuse(
                StatusCode::FORBIDDEN,
                &format!(
                    "the key or token {} belongs to another tenant and may not call service `{service_name}`",
                    id.prefix
                ),
            ));
        }
        let chosen = match version {
            Some(v) => service.versions.iter().find(|sv| sv.version == v),
            None => service
                .versions
                .iter()
                .filter(|sv| sv.state.callable())
                .max_by(|a, b| holdfast_store::compare_versions(&a.version, &b.version)),
        };
        let Some(chosen) = chosen else {
            known(Some(&service.name), version);
            // Every version retired: the API is gone (410, as for a pinned retired version),
            // not "not there yet" (404, no version published so far).
            let all_retired = !service.versions.is_empty()
                && service
                    .versions
                    .iter()
                    .all(|sv| sv.state == Lifecycle::Retired);
            let (status, message) = match version {
                Some(v) => (
                    StatusCode::NOT_FOUND,
                    format!(
                        "service `{service_name}` has no version `{v}` (the route pins `{spec}`)"
                    ),
                ),
                None if all_retired => (
                    StatusCode::GONE,
                    format!("every version of service `{service_name}` is retired"),
                ),
                None => (
                    StatusCode::NOT_FOUND,
                    format!("service `{spec}` has no published version"),
                ),
            };
            return Err(refuse(status, &message));
        };
        known(Some(&service.name), Some(&chosen.version));
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
        let consumer = &id.consumer.name;
        match id.consumer.subscriptions.get(service.name.as_str()) {
            Some(SubscriptionState::Active) => {}
            Some(SubscriptionState::Pending) => {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "the subscription of consumer `{consumer}` to service `{service_name}` is waiting for approval by a tenant admin"
                    ),
                ))
            }
            Some(SubscriptionState::Rejected) => {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "the subscription of consumer `{consumer}` to service `{service_name}` was rejected"
                    ),
                ))
            }
            None => {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "consumer `{consumer}` has no subscription to service `{service_name}`: ask the API's owner for a subscription"
                    ),
                ))
            }
        }
        Ok(Admitted {
            scopes: [
                live.global.as_ref(),
                Some(&svc.scope),
                Some(&id.consumer.scope),
                id.key_scope,
            ],
            deprecated_since_ms: match chosen.state {
                Lifecycle::Deprecated => chosen.since_ms.or(Some(0)),
                _ => None,
            },
            sunset_ms: chosen.sunset_ms,
        })
    }

    /// Check every scope's buckets and budgets in order (global, service, consumer, key);
    /// returns the tightest request-rate bucket passed, if any applied.
    async fn enforce_limits<'s>(
        &self,
        scopes: &Scopes<'s>,
        now: i64,
    ) -> Result<Option<(Allowance, &'s Bucket)>, Refusal> {
        let mut tightest: Option<(Allowance, &Bucket)> = None;
        for scope in scopes.iter().flatten() {
            for bucket in &scope.buckets {
                let a = self.limiter.check(bucket, &scope.label).await?;
                keep_tightest(&mut tightest, a, bucket);
            }
            for (budget, name, window_ms) in budgets(scope) {
                let used = self.limiter.tokens_used(&scope.name, window_ms, now).await;
                budget_left(scope, budget, name, window_ms, used, now)?;
            }
        }
        Ok(tightest)
    }

    /// [`Management::enforce_limits`] on the node-local limiter only (no Redis).
    fn enforce_limits_now<'s>(
        &self,
        scopes: &Scopes<'s>,
        now: i64,
    ) -> Result<Option<(Allowance, &'s Bucket)>, Refusal> {
        let mut tightest: Option<(Allowance, &Bucket)> = None;
        for scope in scopes.iter().flatten() {
            for bucket in &scope.buckets {
                let a = self.limiter.check_local(bucket, &scope.label)?;
                keep_tightest(&mut tightest, a, bucket);
            }
            for (budget, name, window_ms) in budgets(scope) {
                let used = self.limiter.tokens_used_local(&scope.name, window_ms, now);
                budget_left(scope, budget, name, window_ms, used, now)?;
            }
        }
        Ok(tightest)
    }

    /// The token-budget scopes an AI call's tokens count for (empty when none has a budget).
    pub(crate) fn token_scopes(&self, extra: &CallExtra) -> Vec<Box<str>> {
        let (Some(tenant), Some(consumer), Some(prefix)) =
            (&extra.tenant, &extra.consumer, &extra.key_prefix)
        else {
            return Vec::new();
        };
        let index = self.index();
        let mut s = Vec::new();
        if let Some(svc) = extra.service.as_ref().and_then(|n| index.services.get(n)) {
            if svc.scope.has_budget() {
                s.push(svc.scope.name.clone());
            }
        }
        if let Some(c) = index.consumer(tenant, consumer) {
            if c.scope.has_budget() {
                s.push(c.scope.name.clone());
            }
        }
        if index.key_budgets.get(prefix).copied().unwrap_or(false) {
            s.push(format!("key:{prefix}").into());
        }
        s
    }

    /// Count an AI call's tokens for `scopes` (from [`Management::token_scopes`]).
    pub(crate) async fn count_tokens(&self, scopes: &[Box<str>], tokens: u64, now: i64) {
        for scope in scopes {
            self.limiter.add_tokens(scope, tokens, now).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_numbers() {
        for n in [0, 1, 9, 10, 99, 1023, 1024, 123_456_789] {
            assert_eq!(number(n), n.to_string().as_str());
        }
    }

    #[test]
    fn service_names() {
        assert_eq!(service_of("pay"), "pay");
        assert_eq!(service_of("pay@v2"), "pay");
    }
}
