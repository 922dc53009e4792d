//! The admin REST API (mounted under `/admin`). Every request but the OpenAPI document needs
//! `Authorization: Bearer ADMIN_TOKEN`; bodies are strict JSON (unknown fields are refused) and
//! every 400 names the field. See `openapi.rs` for the full list of operations.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use holdfast_store::{
    analyse, CallLogStore, Consumer, EntityStore, KeyStore, Lifecycle, Limits, Service,
    ServiceVersion, StatsQuery,
};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::auth::{authenticate, Principal};
use crate::error::{parse_body, ApiError};
use crate::runtime::Management;

type S = State<Arc<Management>>;
type R = Result<(StatusCode, Json<Value>), ApiError>;
type Params = UniqueQuery;

/// The query parameters, each at most once: a repeated parameter (`?force=false&force=true`)
/// is a 400 naming it rather than "the last one wins".
struct UniqueQuery(HashMap<String, String>);

impl<St: Send + Sync> axum::extract::FromRequestParts<St> for UniqueQuery {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &St,
    ) -> Result<Self, Self::Rejection> {
        let mut out = HashMap::new();
        for (k, v) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
            let k = k.into_owned();
            if out.contains_key(&k) {
                return Err(ApiError::bad(
                    &k,
                    format!("`{k}` is given more than once; give it once"),
                ));
            }
            out.insert(k, v.into_owned());
        }
        Ok(UniqueQuery(out))
    }
}

/// Largest request body the admin API reads (axum's default limit); larger ones get 413.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Default and largest `limit` of a list.
pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;

fn ok<T: serde::Serialize>(status: StatusCode, v: T) -> R {
    Ok((
        status,
        Json(serde_json::to_value(v).map_err(|e| ApiError::Internal(e.to_string()))?),
    ))
}

fn deleted(what: Value) -> R {
    Ok((StatusCode::OK, Json(json!({ "deleted": what }))))
}

fn who(m: &Management, h: &HeaderMap) -> Result<Principal, ApiError> {
    authenticate(&m.live().config.admin_tokens, h)
}

/// The admin API router.
pub fn router(m: Arc<Management>) -> Router {
    Router::new()
        .route(
            "/admin/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .route("/admin/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/admin/tenants/{tenant}",
            get(get_tenant).delete(delete_tenant),
        )
        .route(
            "/admin/tenants/{tenant}/services",
            get(list_services).post(create_service),
        )
        .route(
            "/admin/tenants/{tenant}/services/{service}",
            get(get_service)
                .patch(update_service)
                .delete(delete_service),
        )
        .route(
            "/admin/tenants/{tenant}/services/{service}/versions/{version}",
            put(set_version),
        )
        .route(
            "/admin/tenants/{tenant}/consumers",
            get(list_consumers).post(create_consumer),
        )
        .route(
            "/admin/tenants/{tenant}/consumers/{consumer}",
            get(get_consumer)
                .patch(update_consumer)
                .delete(delete_consumer),
        )
        .route(
            "/admin/tenants/{tenant}/consumers/{consumer}/keys",
            post(issue_key),
        )
        .route("/admin/tenants/{tenant}/keys", get(list_keys))
        .route(
            "/admin/tenants/{tenant}/keys/{prefix}",
            axum::routing::patch(update_key),
        )
        .route(
            "/admin/tenants/{tenant}/keys/{prefix}/revoke",
            post(revoke_key),
        )
        .route(
            "/admin/tenants/{tenant}/subscriptions",
            get(list_subscriptions).post(subscribe),
        )
        .route(
            "/admin/tenants/{tenant}/subscriptions/{id}",
            axum::routing::delete(delete_subscription),
        )
        .route(
            "/admin/tenants/{tenant}/subscriptions/{id}/approve",
            post(approve),
        )
        .route(
            "/admin/tenants/{tenant}/subscriptions/{id}/reject",
            post(reject),
        )
        .route("/admin/tenants/{tenant}/stats", get(tenant_stats))
        .route("/admin/stats", get(all_stats))
        .route("/admin/calllog", get(calllog_status))
        .route("/admin/calllog/prune", post(prune))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .method_not_allowed_fallback(|| async { StatusCode::METHOD_NOT_ALLOWED })
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(m)
}

/// Every error the admin API answers is `{"error": ...}` JSON, also those axum produces
/// itself: an unknown path (404), a wrong method (405, `Allow` kept), a body over
/// [`MAX_BODY_BYTES`] (413) and extractor rejections.
async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match status {
        StatusCode::NOT_FOUND => {
            format!(
                "no such admin path: {path} (the operations are listed at GET /admin/openapi.json)"
            )
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if allow.is_empty() {
                format!("method {method} is not allowed on {path} (the Allow header lists the methods that are)")
            } else {
                format!("method {method} is not allowed on {path} (allowed: {allow})")
            }
        }
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body is larger than the admin API's limit of {MAX_BODY_BYTES} bytes"
        ),
        _ if !text.is_empty() => text,
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = json!({ "error": message }).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Refuse every query parameter but `allowed`; the 400 names the first unknown one.
fn only_params(params: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    let mut keys: Vec<&String> = params.keys().collect();
    keys.sort();
    for k in keys {
        if !allowed.contains(&k.as_str()) {
            let hint = if allowed.is_empty() {
                "this operation takes no query parameters".to_string()
            } else {
                format!("use {}", allowed.join(", "))
            };
            return Err(ApiError::bad(
                k,
                format!("`{k}` is not a parameter of this operation ({hint})"),
            ));
        }
    }
    Ok(())
}

/// An operation that takes no body: empty, or an empty JSON object; anything else is a 400
/// naming the unknown field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoBody {}

fn no_body(body: &Bytes) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let _: NoBody = parse_body(body)?;
    Ok(())
}

/// `?limit=&offset=` of a list (limit 1..=10000, default 1000; offset >= 0, default 0).
fn page<T>(params: &HashMap<String, String>, items: Vec<T>) -> Result<Vec<T>, ApiError> {
    only_params(params, &["limit", "offset"])?;
    let limit = match params.get("limit") {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad(
                    "limit",
                    format!("`limit`: `{v}` is not a number from 1 to {MAX_LIMIT}"),
                )
            })?,
        None => DEFAULT_LIMIT,
    };
    let offset = match params.get("offset") {
        Some(v) => v.parse::<usize>().map_err(|_| {
            ApiError::bad(
                "offset",
                format!("`offset`: `{v}` is not a number of 0 or more"),
            )
        })?,
        None => 0,
    };
    Ok(items.into_iter().skip(offset).take(limit).collect())
}

/// `?force=true|false` of a tenant deletion.
fn force_param(params: &HashMap<String, String>) -> Result<bool, ApiError> {
    only_params(params, &["force"])?;
    match params.get("force").map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(ApiError::bad(
            "force",
            format!("`force`: `{v}` is not true or false"),
        )),
    }
}

/// A JSON field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
}

async fn create_tenant(State(m): S, h: HeaderMap, UniqueQuery(q): Params, body: Bytes) -> R {
    who(&m, &h)?.super_admin()?;
    only_params(&q, &[])?;
    let b: NewTenant = parse_body(&body)?;
    let t = m.store.create_tenant(&b.name).await?;
    m.refresh().await?;
    ok(StatusCode::CREATED, t)
}

async fn list_tenants(State(m): S, h: HeaderMap, UniqueQuery(q): Params) -> R {
    let p = who(&m, &h)?;
    let all = m.store.list_tenants().await?;
    let visible: Vec<_> = all
        .into_iter()
        .filter(|t| p.can_read(&t.name).is_ok())
        .collect();
    ok(StatusCode::OK, page(&q, visible)?)
}

async fn get_tenant(
    State(m): S,
    h: HeaderMap,
    Path(tenant): Path<String>,
    UniqueQuery(q): Params,
) -> R {
    who(&m, &h)?.can_read(&tenant)?;
    only_params(&q, &[])?;
    ok(StatusCode::OK, m.store.get_tenant(&tenant).await?)
}

async fn delete_tenant(
    State(m): S,
    h: HeaderMap,
    Path(tenant): Path<String>,
    UniqueQuery(q): Params,
    body: Bytes,
) -> R {
    who(&m, &h)?.super_admin()?;
    let force = force_param(&q)?;
    no_body(&body)?;
    m.store.delete_tenant(&tenant, force).await?;
    m.refresh().await?;
    deleted(json!({ "tenant": tenant }))
}

/// 404 `not found: tenant T` when the tenant does not exist (reads answer it like writes).
async fn require_tenant(m: &Management, tenant: &str) -> Result<(), ApiError> {
    m.store.get_tenant(tenant).await?;
    Ok(())
}

fn default_versions() -> Vec<ServiceVersion> {
    vec![ServiceVersion {
        version: "v1".into(),
        state: Lifecycle::Published,
        since_ms: None,
        sunset_ms: None,
    }]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewService {
    name: String,
    #[serde(default)]
    require_approval: bool,
    #[serde(default)]
    limits: Limits,
    #[serde(default = "default_versions")]
    versions: Vec<ServiceVersion>,
}

async fn create_service(
    State(m): S,
    h: HeaderMap,
    Path(tenant): Path<String>,
    UniqueQuery(q): Params,
    body: Bytes,
) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    only_params(&q, &[])?;
    let b: NewService = parse_body(&body)?;
    let svc = Service {
        name: b.name,
        tenant,
        require_approval: b.require_approval,
        limits: b.limits,
        versions: b.versions,
        created_ms: 0,
    };
    let svc = m.store.create_service(&svc).await?;
    m.refresh().await?;
    ok(StatusCode::CREATED, svc)
}

async fn list_services(
    State(m): S,
    h: HeaderMap,
    Path(tenant): Path<String>,
    UniqueQuery(q): Params,
) -> R {
    who(&m, &h)?.can_read(&tenant)?;
    require_tenant(&m, &tenant).await?;
    let all = m.store.list_services(Some(&tenant)).await?;
    ok(StatusCode::OK, page(&q, all)?)
}

async fn get_service(
    State(m): S,
    h: HeaderMap,
    Path((tenant, service)): Path<(String, String)>,
    UniqueQuery(q): Params,
) -> R {
    who(&m, &h)?.can_read(&tenant)?;
    only_params(&q, &[])?;
    require_tenant(&m, &tenant).await?;
    ok(
        StatusCode::OK,
        m.store.get_service(&tenant, &service).await?,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicePatch {
    require_approval: Option<bool>,
    limits: Option<Limits>,
}

async fn update_service(
    State(m): S,
    h: HeaderMap,
    Path((tenant, service)): Path<(String, String)>,
    UniqueQuery(q): Params,
    body: Bytes,
) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    only_params(&q, &[])?;
    let b: ServicePatch = parse_body(&body)?;
    require_tenant(&m, &tenant).await?;
    let out = m
        .store
        .update_service(&tenant, &service, b.require_approval, b.limits.as_ref())
        .await?;
    m.refresh().await?;
    ok(StatusCode::OK, out)
}

async fn delete_service(
    State(m): S,
    h: HeaderMap,
    Path((tenant, service)): Path<(String, String)>,
    UniqueQuery(q): Params,
    body: Bytes,
) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    only_params(&q, &[])?;
    no_body(&body)?;
    require_tenant(&m, &tenant).await?;
    m.store.delete_service(&tenant, &service).await?;
    m.refresh().await?;
    deleted(json!({ "tenant": tenant, "service": service }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionState {
    state: Lifecycle,
    /// The planned end (ms since the Unix epoch); absent or `null`: none (a PUT replaces it).
    #[serde(default)]
    sunset_ms: Option<i64>,
}

async fn set_version(
    State(m): S,
    h: HeaderMap,
    Path((tenant, service, version)): Path<(String, String, String)>,
    UniqueQuery(q): Params,
    body: Bytes,
) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    only_params(&q, &[])?;
    let b: VersionState = parse_body(&body)?;
    require_tenant(&m, &tenant).await?;
    let out = m
        .store
        .set_version_state(&tenant, &service, &version, b.state, b.sunset_ms)
        .await?;
    m.refresh().await?;
    ok(StatusCode::OK, out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewConsumer {
    name: String,
    #[serde(default)]
    limits: Limits,
}

async fn create_consumer(
    State(m): S,
    h: HeaderMap,
    Path(tenant): Path<String>,
    UniqueQuery(q): Params,
    body: Bytes,
) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    only_params(&q, &[])?;
    let b: NewConsumer = parse_body(&body)?;
    let c = Consumer {
        tenant,
        name: b.name,
        limits: b.limits,
        created_ms: 0,
    };
    let c = m.store.create_consumer(&c).await?;
    m.refresh().await?;
    ok(StatusCode::CREATED, c)
}

async fn list_consumers(
    State(m): S,
    h: HeaderMap,
    Path(tenant): Path<String>,
    UniqueQuery(q): Params,
) -> R {
    who(&m, &h)?.can_read(&tenant)?;
    require_tenant(&m, &tenant).await?;
    let all = m.store.list_consumers(Some(&tenant)).await?;
    ok(StatusCode::OK, page(&q, all)?)
}

async fn get_consumer(
    State(m): S,
    h: HeaderMap,
    Path((tenant, consumer)): Path<(String, String)>,
    UniqueQuery(q): Params,
) -> R {
    who(&m, &h)?.can_read(&tenant)?;
    only_params(&q, &[])?;
    require_tenant(&m, &tenant).await?;
    ok(
        StatusCode::OK,
        m.store.get_consumer(&tenant, &consumer).await?,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumerPatch {
    limits: Option<Limits>,
}

async fn update_consumer(
    State(m): S,
    h: HeaderMap,
    Path((tenant, consumer)): Path<(String, String)>,
    UniqueQuery(q): Params,
    body: Bytes,
) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    only_params(&q, &[])?;
    let b: ConsumerPatch = parse_body(&body)?;
    require_tenant(&m, &tenant).await?;
    let out = match b.limits {
        Some(l) => m.store.update_consumer(&tenant, &consumer, &l).await?,
        None => m.store.get_consumer(&tenant, &consumer).await?,
    };
    m.refresh().await?;
    ok(StatusCode::OK, out)
}

async fn delete_consumer(
    State(m): S,
    h: HeaderMap,
    Path((tenant, consumer)): Path<(String, String)>,
    UniqueQuery(q): Params,
    body: Bytes,
) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    only_params(&q, &[])?;
    no_body(&body)?;
    require_tenant(&m, &tenant).await?;
    m.store.delete_consumer(&tenant, &consumer).await?;
    m.refresh().await?;
    deleted(json!({ "tenant": tenant, "consumer": consumer }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default)]
    limits: Limits,
    expires_in_s: Option<u64>,
}

/// `expires_in_s` from now, as an absolute expiry in ms.
fn expiry_ms(expires_in_s: u64) -> Result<i64, ApiError> {
    match expires_in_s {
        0 => Err(ApiError::bad(
            "expires_in_s",
            "`expires_in_s` must be at least 1",
        )),
        s if s > 100 * 365 * 86_400 => Err(ApiError::bad(
            "expires_in_s",
            "`expires_in_s` is more than 100 years",
        )),
        s => Ok(holdfast_store::now_ms() + (s as i64) * 1000),
    }
}

async fn issue_key(
    State(m): S,
    h: HeaderMap,
    Path((tenant, consumer)): Path<(String, String)>,
    UniqueQuery(q): Params,
    body: Bytes,
) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    only_params(&q, &[])?;
    let b: NewKey = if body.is_empty() {
        NewKey::default()
    } else {
        parse_body(&body)?
    };
    let expires_ms = b.expires_in_s.map(expiry_ms).transpose()?;
    require_tenant(&m, &tenant).await?;
    let out = m
        .store
        .issue_key(&tenant, &consumer, &b.limits, expires_ms)
        .await?;
    m.refresh().await?;
    ok(StatusCode::CREATED, out)
}

async fn list_keys(
    State(m): S,
    h: HeaderMap,
    Path(tenant): Path<String>,
    UniqueQuery(q): Params,
) -> R {
    who(&m, &h)?.can_read(&tenant)?;
    require_tenant(&m, &tenant).await?;
    let all = m.store.list_keys(Some(&tenant)).await?;
    ok(StatusCode::OK, page(&q, all)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyPatch {
    limits: Option<Limits>,
    /// Seconds from now; `null` removes the expiry.
    #[serde(default, deserialize_with = "nullable")]
    expires_in_s: Option<Option<u64>>,
}

/// The key prefix of a `{prefix}` path parameter: the prefix, or a whole key given instead
/// (`hf_XXXXXXXX_...`, what a user holding a leaked key has at hand): its first 11
/// characters, so the secret part is never looked up nor echoed in an answer.
fn key_prefix(given: &str) -> &str {
    let b = given.as_bytes();
    let whole_key = b.len() > 12
        && given.starts_with("hf_")
        && b[3..11].iter().all(u8::is_ascii_hexdigit)
        && b[11] == b'_';
    if whole_key {
        &given[..11]
    } else {
        given
    }
}

async fn update_key(
    State(m): S,
    h: HeaderMap,
    Path((tenant, prefix)): Path<(String, String)>,
    UniqueQuery(q): Params,
    body: Bytes,
) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    only_params(&q, &[])?;
    let b: KeyPatch = parse_body(&body)?;
    let expires = match b.expires_in_s {
        Some(Some(s)) => Some(Some(expiry_ms(s)?)),
        Some(None) => Some(None),
        None => None,
    };
    require_tenant(&m, &tenant).await?;
    let out = m
        .store
        .update_key(&tenant, key_prefix(&prefix), b.limits.as_ref(), expires)
        .await?;
    m.refresh().await?;
    ok(StatusCode::OK, out)
}

async fn revoke_key(
    State(m): S,
    h: HeaderMap,
    Path((tenant, prefix)): Path<(String, String)>,
    UniqueQuery(q): Params,
    body: Bytes,
) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    only_params(&q, &[])?;
    no_body(&body)?;
    require_tenant(&m, &tenant).await?;
    let key = m.store.revoke_key(&tenant, key_prefix(&prefix)).await?;
    // This node stops accepting the key at once; the others when notified (or polling).
    m.refresh().await?;
    ok(StatusCode::OK, key)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    consumer: String,
    service: String,
}

async fn subscribe(
    State(m): S,
    h: HeaderMap,
    Path(tenant): Path<String>,
    UniqueQuery(q): Params,
    body: Bytes,
) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    only_params(&q, &[])?;
    let b: NewSubscription = parse_body(&body)?;
    require_tenant(&m, &tenant).await?;
    let out = m.store.subscribe(&tenant, &b.consumer, &b.service).await?;
    m.refresh().await?;
    ok(StatusCode::CREATED, out)
}

async fn list_subscriptions(
    State(m): S,
    h: HeaderMap,
    Path(tenant): Path<String>,
    UniqueQuery(q): Params,
) -> R {
    who(&m, &h)?.can_read(&tenant)?;
    require_tenant(&m, &tenant).await?;
    let all = m.store.list_subscriptions(Some(&tenant)).await?;
    ok(StatusCode::OK, page(&q, all)?)
}

fn subscription_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad("id", format!("`id`: `{id}` is not a subscription number")))
}

async fn decide(
    m: &Management,
    h: &HeaderMap,
    (tenant, id): (String, String),
    q: &HashMap<String, String>,
    body: &Bytes,
    approve: bool,
) -> R {
    who(m, h)?.can_write(&tenant)?;
    let id = subscription_id(&id)?;
    only_params(q, &[])?;
    no_body(body)?;
    require_tenant(m, &tenant).await?;
    let sub = m.store.decide_subscription(&tenant, id, approve).await?;
    m.refresh().await?;
    ok(StatusCode::OK, sub)
}

async fn approve(
    State(m): S,
    h: HeaderMap,
    Path(p): Path<(String, String)>,
    UniqueQuery(q): Params,
    body: Bytes,
) -> R {
    decide(&m, &h, p, &q, &body, true).await
}

async fn reject(
    State(m): S,
    h: HeaderMap,
    Path(p): Path<(String, String)>,
    UniqueQuery(q): Params,
    body: Bytes,
) -> R {
    decide(&m, &h, p, &q, &body, false).await
}

async fn delete_subscription(
    State(m): S,
    h: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
    UniqueQuery(q): Params,
    body: Bytes,
) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    let id = subscription_id(&id)?;
    only_params(&q, &[])?;
    no_body(&body)?;
    require_tenant(&m, &tenant).await?;
    m.store.delete_subscription(&tenant, id).await?;
    m.refresh().await?;
    deleted(json!({ "tenant": tenant, "subscription": id }))
}

/// Parse `90s`, `15m`, `1h`, `7d` into milliseconds.
pub fn parse_duration_ms(field: &str, s: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad(
            field,
            format!("`{field}`: `{s}` is not a duration such as 30s, 15m, 1h or 7d"),
        )
    };
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    if n == 0 || n > 3650 * 86_400 {
        return Err(bad());
    }
    Ok(n * ms)
}

fn stats_query(
    params: &HashMap<String, String>,
    tenant: Option<String>,
) -> Result<StatsQuery, ApiError> {
    for k in params.keys() {
        if !matches!(k.as_str(), "since" | "bucket" | "top") {
            return Err(ApiError::bad(
                k,
                format!("`{k}` is not a stats parameter (use since, bucket, top)"),
            ));
        }
    }
    let since = parse_duration_ms("since", params.get("since").map_or("1h", |s| s.as_str()))?;
    let bucket = parse_duration_ms("bucket", params.get("bucket").map_or("1m", |s| s.as_str()))?;
    let top = match params.get("top") {
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::bad("top", "`top` must be a number from 1 to 1000"))?,
        None => 10,
    };
    Ok(StatsQuery {
        since_ms: holdfast_store::now_ms() - since,
        tenant,
        bucket_ms: bucket,
        top,
    })
}

/// Analytics; the call-log writer's counters (node-wide, all tenants) only for a super admin.
async fn run_stats(m: &Management, q: StatsQuery, with_writer: bool) -> R {
    let rows = m.store.fetch_calls(&q).await?;
    let mut v =
        serde_json::to_value(analyse(&q, &rows)).map_err(|e| ApiError::Internal(e.to_string()))?;
    if with_writer {
        v["call_log"] = serde_json::to_value(m.call_log_stats()).unwrap_or(Value::Null);
    }
    Ok((StatusCode::OK, Json(v)))
}

async fn tenant_stats(
    State(m): S,
    h: HeaderMap,
    Path(tenant): Path<String>,
    UniqueQuery(params): Params,
) -> R {
    let p = who(&m, &h)?;
    p.can_read(&tenant)?;
    let q = stats_query(&params, Some(tenant.clone()))?;
    require_tenant(&m, &tenant).await?;
    run_stats(&m, q, p.super_admin().is_ok()).await
}

async fn all_stats(State(m): S, h: HeaderMap, UniqueQuery(params): Params) -> R {
    who(&m, &h)?.super_admin()?;
    let q = stats_query(&params, None)?;
    run_stats(&m, q, true).await
}

async fn calllog_status(State(m): S, h: HeaderMap, UniqueQuery(q): Params) -> R {
    who(&m, &h)?.super_admin()?;
    only_params(&q, &[])?;
    let count = m.store.count_calls(None).await?;
    ok(
        StatusCode::OK,
        json!({ "node": m.node(), "stored": count, "writer": m.call_log_stats(), "cache": m.cache_status() }),
    )
}

/// Delete calls older than the retention, or than `?older_than=DURATION` (e.g. `7d`).
async fn prune(State(m): S, h: HeaderMap, UniqueQuery(q): Params, body: Bytes) -> R {
    who(&m, &h)?.super_admin()?;
    only_params(&q, &["older_than"])?;
    no_body(&body)?;
    let age_ms = match q.get("older_than") {
        Some(v) => parse_duration_ms("older_than", v)?,
        None => i64::from(m.live().config.retention_days) * 86_400_000,
    };
    let before = holdfast_store::now_ms() - age_ms;
    let n = m.store.prune_calls(before).await?;
    m.calllog.count_pruned(n);
    ok(StatusCode::OK, json!({ "pruned": n, "before_ms": before }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pages() {
        let items: Vec<u32> = (0..20).collect();
        assert_eq!(page(&params(&[]), items.clone()).unwrap().len(), 20);
        assert_eq!(
            page(&params(&[("limit", "3"), ("offset", "18")]), items.clone()).unwrap(),
            vec![18, 19]
        );
        for (k, v) in [
            ("limit", "0"),
            ("limit", "10001"),
            ("limit", "x"),
            ("offset", "-1"),
        ] {
            match page(&params(&[(k, v)]), items.clone()) {
                Err(ApiError::BadRequest { field, .. }) => assert_eq!(field.as_deref(), Some(k)),
                other => panic!("{k}={v}: {other:?}"),
            }
        }
        match page(&params(&[("sort", "name")]), items) {
            Err(ApiError::BadRequest { field, .. }) => assert_eq!(field.as_deref(), Some("sort")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_body_takes_nothing_or_an_empty_object() {
        assert!(no_body(&Bytes::from_static(b"")).is_ok());
        assert!(no_body(&Bytes::from_static(b" {} ")).is_ok());
        match no_body(&Bytes::from_static(br#"{"reason":"x"}"#)) {
            Err(ApiError::BadRequest { field, .. }) => assert_eq!(field.as_deref(), Some("reason")),
            other => panic!("{other:?}"),
        }
    }
}
