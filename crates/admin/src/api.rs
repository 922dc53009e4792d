//! The admin REST API (mounted under `/admin`). Every request but the OpenAPI document needs
//! `Authorization: Bearer ADMIN_TOKEN`; bodies are strict JSON (unknown fields are refused) and
//! every 400 names the field. See `openapi.rs` for the full list of operations.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use holdfast_store::{
    analyse, CallLogStore, Consumer, EntityStore, KeyStore, Lifecycle, Limits, Service,
    ServiceVersion, StatsQuery,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{authenticate, Principal};
use crate::error::{parse_body, ApiError};
use crate::runtime::Management;

type S = State<Arc<Management>>;
type R = Result<(StatusCode, Json<Value>), ApiError>;

fn ok<T: serde::Serialize>(status: StatusCode, v: T) -> R {
    Ok((
        status,
        Json(serde_json::to_value(v).map_err(|e| ApiError::Internal(e.to_string()))?),
    ))
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
            "/admin/tenants/{tenant}/services",
            get(list_services).post(create_service),
        )
        .route(
            "/admin/tenants/{tenant}/services/{service}",
            get(get_service),
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
            "/admin/tenants/{tenant}/consumers/{consumer}/keys",
            post(issue_key),
        )
        .route("/admin/tenants/{tenant}/keys", get(list_keys))
        .route(
            "/admin/tenants/{tenant}/keys/{prefix}/revoke",
            post(revoke_key),
        )
        .route(
            "/admin/tenants/{tenant}/subscriptions",
            get(list_subscriptions).post(subscribe),
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
        .with_state(m)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
}

async fn create_tenant(State(m): S, h: HeaderMap, body: Bytes) -> R {
    who(&m, &h)?.super_admin()?;
    let b: NewTenant = parse_body(&body)?;
    let t = m.store.create_tenant(&b.name).await?;
    m.refresh().await?;
    ok(StatusCode::CREATED, t)
}

async fn list_tenants(State(m): S, h: HeaderMap) -> R {
    let p = who(&m, &h)?;
    let all = m.store.list_tenants().await?;
    let visible: Vec<_> = all
        .into_iter()
        .filter(|t| p.can_read(&t.name).is_ok())
        .collect();
    ok(StatusCode::OK, visible)
}

fn default_versions() -> Vec<ServiceVersion> {
    vec![ServiceVersion {
        version: "v1".into(),
        state: Lifecycle::Published,
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

async fn create_service(State(m): S, h: HeaderMap, Path(tenant): Path<String>, body: Bytes) -> R {
    who(&m, &h)?.can_write(&tenant)?;
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

async fn list_services(State(m): S, h: HeaderMap, Path(tenant): Path<String>) -> R {
    who(&m, &h)?.can_read(&tenant)?;
    ok(StatusCode::OK, m.store.list_services(Some(&tenant)).await?)
}

async fn get_service(
    State(m): S,
    h: HeaderMap,
    Path((tenant, service)): Path<(String, String)>,
) -> R {
    who(&m, &h)?.can_read(&tenant)?;
    ok(
        StatusCode::OK,
        m.store.get_service(&tenant, &service).await?,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionState {
    state: Lifecycle,
}

async fn set_version(
    State(m): S,
    h: HeaderMap,
    Path((tenant, service, version)): Path<(String, String, String)>,
    body: Bytes,
) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    let b: VersionState = parse_body(&body)?;
    let out = m
        .store
        .set_version_state(&tenant, &service, &version, b.state)
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

async fn create_consumer(State(m): S, h: HeaderMap, Path(tenant): Path<String>, body: Bytes) -> R {
    who(&m, &h)?.can_write(&tenant)?;
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

async fn list_consumers(State(m): S, h: HeaderMap, Path(tenant): Path<String>) -> R {
    who(&m, &h)?.can_read(&tenant)?;
    ok(StatusCode::OK, m.store.list_consumers(Some(&tenant)).await?)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default)]
    limits: Limits,
    expires_in_s: Option<u64>,
}

async fn issue_key(
    State(m): S,
    h: HeaderMap,
    Path((tenant, consumer)): Path<(String, String)>,
    body: Bytes,
) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    let b: NewKey = if body.is_empty() {
        NewKey::default()
    } else {
        parse_body(&body)?
    };
    let expires_ms = match b.expires_in_s {
        Some(0) => {
            return Err(ApiError::bad(
                "expires_in_s",
                "`expires_in_s` must be at least 1",
            ))
        }
        Some(s) if s > 100 * 365 * 86_400 => {
            return Err(ApiError::bad(
                "expires_in_s",
                "`expires_in_s` is more than 100 years",
            ))
        }
        Some(s) => Some(holdfast_store::now_ms() + (s as i64) * 1000),
        None => None,
    };
    let out = m
        .store
        .issue_key(&tenant, &consumer, &b.limits, expires_ms)
        .await?;
    m.refresh().await?;
    ok(StatusCode::CREATED, out)
}

async fn list_keys(State(m): S, h: HeaderMap, Path(tenant): Path<String>) -> R {
    who(&m, &h)?.can_read(&tenant)?;
    ok(StatusCode::OK, m.store.list_keys(Some(&tenant)).await?)
}

async fn revoke_key(
    State(m): S,
    h: HeaderMap,
    Path((tenant, prefix)): Path<(String, String)>,
) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    let key = m.store.revoke_key(&tenant, &prefix).await?;
    // This node stops accepting the key at once; the others within `cache_refresh_ms`.
    m.refresh().await?;
    ok(StatusCode::OK, key)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    consumer: String,
    service: String,
}

async fn subscribe(State(m): S, h: HeaderMap, Path(tenant): Path<String>, body: Bytes) -> R {
    who(&m, &h)?.can_write(&tenant)?;
    let b: NewSubscription = parse_body(&body)?;
    let out = m.store.subscribe(&tenant, &b.consumer, &b.service).await?;
    m.refresh().await?;
    ok(StatusCode::CREATED, out)
}

async fn list_subscriptions(State(m): S, h: HeaderMap, Path(tenant): Path<String>) -> R {
    who(&m, &h)?.can_read(&tenant)?;
    ok(
        StatusCode::OK,
        m.store.list_subscriptions(Some(&tenant)).await?,
    )
}

async fn decide(m: &Management, h: &HeaderMap, tenant: &str, id: &str, approve: bool) -> R {
    who(m, h)?.can_write(tenant)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad("id", format!("`id`: `{id}` is not a subscription number")))?;
    let sub = m.store.decide_subscription(tenant, id, approve).await?;
    m.refresh().await?;
    ok(StatusCode::OK, sub)
}

async fn approve(State(m): S, h: HeaderMap, Path((tenant, id)): Path<(String, String)>) -> R {
    decide(&m, &h, &tenant, &id, true).await
}

async fn reject(State(m): S, h: HeaderMap, Path((tenant, id)): Path<(String, String)>) -> R {
    decide(&m, &h, &tenant, &id, false).await
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

async fn run_stats(m: &Management, q: StatsQuery) -> R {
    let rows = m.store.fetch_calls(&q).await?;
    let mut v =
        serde_json::to_value(analyse(&q, &rows)).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["call_log"] = serde_json::to_value(m.call_log_stats()).unwrap_or(Value::Null);
    Ok((StatusCode::OK, Json(v)))
}

async fn tenant_stats(
    State(m): S,
    h: HeaderMap,
    Path(tenant): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> R {
    who(&m, &h)?.can_read(&tenant)?;
    let q = stats_query(&params, Some(tenant))?;
    run_stats(&m, q).await
}

async fn all_stats(State(m): S, h: HeaderMap, Query(params): Query<HashMap<String, String>>) -> R {
    who(&m, &h)?.super_admin()?;
    let q = stats_query(&params, None)?;
    run_stats(&m, q).await
}

async fn calllog_status(State(m): S, h: HeaderMap) -> R {
    who(&m, &h)?;
    let count = m.store.count_calls(None).await?;
    ok(
        StatusCode::OK,
        json!({ "node": m.node(), "stored": count, "writer": m.call_log_stats(), "cache": m.cache_status() }),
    )
}

async fn prune(State(m): S, h: HeaderMap) -> R {
    who(&m, &h)?.super_admin()?;
    let before = holdfast_store::now_ms() - i64::from(m.live().config.retention_days) * 86_400_000;
    let n = m.store.prune_calls(before).await?;
    ok(StatusCode::OK, json!({ "pruned": n, "before_ms": before }))
}
