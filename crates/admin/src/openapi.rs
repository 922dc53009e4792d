//! The OpenAPI 3.1 document of the admin API, served at `/admin/openapi.json`.

use serde_json::{json, Map, Value};

/// (method, path, summary, request body schema name or "", success status, success body schema
/// name: `Name`, or `[Name]` for an array of them)
const OPERATIONS: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "get",
        "/admin/tenants",
        "List the tenants the token may see",
        "",
        "200",
        "[Tenant]",
    ),
    (
        "post",
        "/admin/tenants",
        "Create a tenant (super admin)",
        "NewTenant",
        "201",
        "Tenant",
    ),
    (
        "get",
        "/admin/tenants/{tenant}",
        "Show a tenant",
        "",
        "200",
        "Tenant",
    ),
    (
        "delete",
        "/admin/tenants/{tenant}",
        "Delete a tenant (super admin); 409 while it has services or consumers unless ?force=true, which deletes them with their keys and subscriptions",
        "",
        "200",
        "DeletedTenant",
    ),
    (
        "get",
        "/admin/tenants/{tenant}/services",
        "List services",
        "",
        "200",
        "[Service]",
    ),
    (
        "post",
        "/admin/tenants/{tenant}/services",
        "Create a service",
        "NewService",
        "201",
        "Service",
    ),
    (
        "get",
        "/admin/tenants/{tenant}/services/{service}",
        "Show a service",
        "",
        "200",
        "Service",
    ),
    (
        "patch",
        "/admin/tenants/{tenant}/services/{service}",
        "Change require_approval and/or the limits (limits are replaced as a whole)",
        "ServicePatch",
        "200",
        "Service",
    ),
    (
        "delete",
        "/admin/tenants/{tenant}/services/{service}",
        "Delete a service with its versions and the subscriptions to it",
        "",
        "200",
        "DeletedService",
    ),
    (
        "put",
        "/admin/tenants/{tenant}/services/{service}/versions/{version}",
        "Add a version or set its lifecycle state",
        "VersionState",
        "200",
        "Service",
    ),
    (
        "get",
        "/admin/tenants/{tenant}/consumers",
        "List consumers",
        "",
        "200",
        "[Consumer]",
    ),
    (
        "post",
        "/admin/tenants/{tenant}/consumers",
        "Create a consumer",
        "NewConsumer",
        "201",
        "Consumer",
    ),
    (
        "get",
        "/admin/tenants/{tenant}/consumers/{consumer}",
        "Show a consumer",
        "",
        "200",
        "Consumer",
    ),
    (
        "patch",
        "/admin/tenants/{tenant}/consumers/{consumer}",
        "Replace a consumer's limits",
        "ConsumerPatch",
        "200",
        "Consumer",
    ),
    (
        "delete",
        "/admin/tenants/{tenant}/consumers/{consumer}",
        "Delete a consumer with its API keys and subscriptions",
        "",
        "200",
        "DeletedConsumer",
    ),
    (
        "post",
        "/admin/tenants/{tenant}/consumers/{consumer}/keys",
        "Issue an API key (shown once)",
        "NewKey",
        "201",
        "IssuedKey",
    ),
    (
        "get",
        "/admin/tenants/{tenant}/keys",
        "List API keys (prefixes only)",
        "",
        "200",
        "[ApiKey]",
    ),
    (
        "patch",
        "/admin/tenants/{tenant}/keys/{prefix}",
        "Change a key's limits (replaced as a whole) and/or expiry (expires_in_s; null: none)",
        "KeyPatch",
        "200",
        "ApiKey",
    ),
    (
        "post",
        "/admin/tenants/{tenant}/keys/{prefix}/revoke",
        "Revoke an API key",
        "",
        "200",
        "ApiKey",
    ),
    (
        "get",
        "/admin/tenants/{tenant}/subscriptions",
        "List subscriptions",
        "",
        "200",
        "[Subscription]",
    ),
    (
        "post",
        "/admin/tenants/{tenant}/subscriptions",
        "Subscribe a consumer to a service",
        "NewSubscription",
        "201",
        "Subscription",
    ),
    (
        "delete",
        "/admin/tenants/{tenant}/subscriptions/{id}",
        "Delete a subscription (to re-request a decided one: delete, then subscribe again)",
        "",
        "200",
        "DeletedSubscription",
    ),
    (
        "post",
        "/admin/tenants/{tenant}/subscriptions/{id}/approve",
        "Approve a pending subscription (409 once decided)",
        "",
        "200",
        "Subscription",
    ),
    (
        "post",
        "/admin/tenants/{tenant}/subscriptions/{id}/reject",
        "Reject a pending subscription (409 once decided)",
        "",
        "200",
        "Subscription",
    ),
    (
        "get",
        "/admin/tenants/{tenant}/stats",
        "Analytics of one tenant (query: since, bucket, top)",
        "",
        "200",
        "TenantStats",
    ),
    (
        "get",
        "/admin/stats",
        "Analytics of all tenants (super admin)",
        "",
        "200",
        "Stats",
    ),
    (
        "get",
        "/admin/calllog",
        "Call-log writer and cache counters (super admin)",
        "",
        "200",
        "CallLogStatus",
    ),
    (
        "post",
        "/admin/calllog/prune",
        "Delete calls older than the retention, or than ?older_than=DURATION (super admin)",
        "",
        "200",
        "PruneResult",
    ),
];

fn limits_schema() -> Value {
    let n = json!({ "type": "integer", "minimum": 1, "maximum": 1_000_000_000 });
    json!({ "type": "object", "additionalProperties": false, "properties": {
        "rps": n, "rpm": n, "tokens_per_min": n, "tokens_per_day": n, "tokens_per_month": n } })
}

/// A reference to a component schema.
fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// An object of a response: every property is always present (`required`) and there are no
/// others.
/// [`object`] whose `optional` properties may be absent.
fn object_optional(props: Value, optional: &[&str]) -> Value {
    let mut schema = object(props);
    if let Some(required) = schema["required"].as_array_mut() {
        required.retain(|k| !optional.iter().any(|o| k == o));
    }
    schema
}

fn object(props: Value) -> Value {
    let required: Vec<&String> = props.as_object().expect("properties").keys().collect();
    json!({ "type": "object", "additionalProperties": false, "required": required,
        "properties": props })
}

/// What the `buckets` of the stats hold.
fn buckets_about() -> String {
    format!("every bucket from the one holding `since` (start rounded down to a multiple of the width) to the one holding now, oldest first, empty ones included (0 calls, null percentiles); a window of more than {} buckets is refused (400, field `bucket`)", holdfast_store::MAX_BUCKETS)
}

/// The schemas of the success responses, as the handlers serialize them (`holdfast-store`'s
/// model and analytics types, the admin crate's counters).
fn response_schemas() -> Map<String, Value> {
    let s = json!({ "type": "string" });
    let ms =
        json!({ "type": "integer", "format": "int64", "description": "ms since the Unix epoch" });
    let ms_or_null = json!({ "type": ["integer", "null"], "format": "int64",
        "description": "ms since the Unix epoch, or null" });
    let count = json!({ "type": "integer", "minimum": 0 });
    let millis = json!({ "type": "number", "minimum": 0 });
    let rate = json!({ "type": "number", "minimum": 0, "maximum": 1 });
    let millis_or_null = json!({ "type": ["number", "null"], "minimum": 0,
        "description": "null when the bucket holds no calls" });
    let counts = json!({ "type": "object", "additionalProperties": count });
    let array = |name: &str| json!({ "type": "array", "items": r(name) });

    let api_key = object(json!({
        "prefix": { "type": "string", "description": "the recognisable, non-secret start of the key" },
        "tenant": s, "consumer": s, "limits": r("Limits"), "created_ms": ms,
        "expires_ms": ms_or_null, "revoked_ms": ms_or_null }));
    let mut issued_key = api_key.clone();
    issued_key["properties"]["key"] =
        json!({ "type": "string", "description": "the full key, shown only this once" });
    issued_key["required"]
        .as_array_mut()
        .expect("required")
        .insert(0, json!("key"));

    let mut tenant_stats = object(json!({
        "since_ms": ms, "calls": count, "errors": count, "error_rate": rate,
        "p50_ms": millis, "p95_ms": millis, "p99_ms": millis,
        "buckets": array("Bucket"),
        "top_consumers": array("TopEntry"), "top_services": array("TopEntry"),
        "top_routes": array("TopEntry"),
        "resets_by_class": counts, "usage": array("UsageEntry"), "calls_by_node": counts,
        "call_log": r("CallLogStats") }));
    // The node's call-log writer counters are shown to a super admin only.
    let mut stats = tenant_stats.clone();
    tenant_stats["required"]
        .as_array_mut()
        .expect("required")
        .retain(|k| k != "call_log");
    tenant_stats["description"] =
        json!("`call_log` (the node's writer counters) only for a super admin token");
    stats["description"] = json!("analytics of every tenant's calls");
    // Consumer names are unique only within a tenant: across tenants they are qualified.
    stats["properties"]["top_consumers"]["description"] =
        json!("consumers named `tenant/consumer`, counted per tenant");
    stats["properties"]["usage"]["description"] =
        json!("`consumer` is `tenant/consumer`, counted per tenant");
    tenant_stats["properties"]["top_consumers"]["description"] =
        json!("consumers of the tenant, by bare name");
    tenant_stats["properties"]["buckets"]["description"] = json!(buckets_about());
    stats["properties"]["buckets"]["description"] = json!(buckets_about());

    let deleted = |what: Value| object(json!({ "deleted": object(what) }));
    let out = json!({
        "Lifecycle": { "type": "string", "enum": ["draft", "published", "deprecated", "retired"] },
        "SubscriptionState": { "type": "string", "enum": ["pending", "active", "rejected"] },
        "Tenant": object(json!({ "name": s, "created_ms": ms })),
        "ServiceVersion": object_optional(json!({ "version": s, "state": r("Lifecycle"),
            "since_ms": { "type": ["integer", "null"], "format": "int64",
                "description": "when the version entered its current state (ms since the Unix epoch); set by the gateway" },
            "sunset_ms": { "type": "integer", "format": "int64",
                "description": "when the version is planned to go away (ms since the Unix epoch); its answers carry `Sunset` (RFC 8594); absent when there is none" } }),
            &["sunset_ms"]),
        "Service": object(json!({ "name": s, "tenant": s, "require_approval": { "type": "boolean" },
            "limits": r("Limits"), "versions": array("ServiceVersion"), "created_ms": ms })),
        "Consumer": object(json!({ "tenant": s, "name": s, "limits": r("Limits"), "created_ms": ms })),
        "ApiKey": api_key,
        "IssuedKey": issued_key,
        "Subscription": object(json!({ "id": { "type": "integer", "format": "int64" },
            "tenant": s, "consumer": s, "service": s, "state": r("SubscriptionState"),
            "created_ms": ms, "decided_ms": ms_or_null })),
        "DeletedTenant": deleted(json!({ "tenant": s })),
        "DeletedService": deleted(json!({ "tenant": s, "service": s })),
        "DeletedConsumer": deleted(json!({ "tenant": s, "consumer": s })),
        "DeletedSubscription": deleted(json!({ "tenant": s,
            "subscription": { "type": "integer", "format": "int64" } })),
        "Bucket": object(json!({ "start_ms": ms, "calls": count, "errors": count, "error_rate": rate,
            "p50_ms": millis_or_null, "p95_ms": millis_or_null, "p99_ms": millis_or_null })),
        "TopEntry": object(json!({ "name": s, "calls": count })),
        "UsageEntry": object(json!({ "consumer": s, "model": s, "calls": count, "tokens": count,
            "cost_usd": { "type": "number", "minimum": 0 } })),
        "TenantStats": tenant_stats,
        "Stats": stats,
        "CallLogStats": object(json!({ "queued": count, "written": count, "overflow": count,
            "write_failures": count, "pruned": count,
            "backlog": { "type": "integer", "minimum": 0,
                "description": "records queued and not written yet" },
            "backlog_ms": { "type": "integer", "minimum": 0,
                "description": "how long (ms) the oldest of them has waited" },
            "last_write_ms": { "type": "integer", "minimum": 0,
                "description": "how long the last batch write took (ms)" },
            "behind": { "type": "integer", "minimum": 0,
                "description": "flush intervals at which the writer was behind (a batch slower than the interval, or a backlog older than two intervals)" } })),
        "CacheStatus": object(json!({ "generation": { "type": "integer", "format": "int64" },
            "listening": { "type": "boolean" }, "notified_reloads": count,
            "polled_reloads": count, "listener_restarts": count })),
        "CallLogStatus": object(json!({ "node": s, "stored": count, "writer": r("CallLogStats"),
            "cache": r("CacheStatus") })),
        "PruneResult": object(json!({ "pruned": count, "before_ms": ms }))
    });
    match out {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn schemas() -> Value {
    let name = json!({ "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" });
    let state = r("Lifecycle");
    let sunset = json!({ "type": ["integer", "null"], "format": "int64", "minimum": 0,
        "maximum": holdfast_store::MAX_SUNSET_MS,
        "description": "when the version is planned to go away (ms since the Unix epoch): its answers carry `Sunset` (RFC 8594); the version is not retired by itself" });
    let mut out = json!({
        "Limits": limits_schema(),
        "NewTenant": { "type": "object", "additionalProperties": false, "required": ["name"],
            "properties": { "name": name } },
        "NewService": { "type": "object", "additionalProperties": false, "required": ["name"],
            "properties": { "name": name, "require_approval": { "type": "boolean" },
                "limits": { "$ref": "#/components/schemas/Limits" },
                "versions": { "type": "array", "items": { "type": "object", "additionalProperties": false,
                    "required": ["version", "state"], "properties": { "version": name, "state": state, "sunset_ms": sunset } } } } },
        "VersionState": { "type": "object", "additionalProperties": false, "required": ["state"],
            "properties": { "state": state, "sunset_ms": sunset } },
        "NewConsumer": { "type": "object", "additionalProperties": false, "required": ["name"],
            "properties": { "name": name, "limits": { "$ref": "#/components/schemas/Limits" } } },
        "NewKey": { "type": "object", "additionalProperties": false,
            "properties": { "limits": { "$ref": "#/components/schemas/Limits" },
                "expires_in_s": { "type": "integer", "minimum": 1 } } },
        "ServicePatch": { "type": "object", "additionalProperties": false,
            "properties": { "require_approval": { "type": "boolean" },
                "limits": { "$ref": "#/components/schemas/Limits" } } },
        "ConsumerPatch": { "type": "object", "additionalProperties": false,
            "properties": { "limits": { "$ref": "#/components/schemas/Limits" } } },
        "KeyPatch": { "type": "object", "additionalProperties": false,
            "properties": { "limits": { "$ref": "#/components/schemas/Limits" },
                "expires_in_s": { "type": ["integer", "null"], "minimum": 1 } } },
        "NewSubscription": { "type": "object", "additionalProperties": false, "required": ["consumer", "service"],
            "properties": { "consumer": name, "service": name } },
        "Error": { "type": "object", "required": ["error"],
            "properties": { "error": { "type": "string" }, "field": { "type": "string" } } }
    });
    out.as_object_mut()
        .expect("schemas")
        .extend(response_schemas());
    out
}

/// The query parameters of an operation.
fn query_params(method: &str, path: &str, summary: &str) -> Vec<Value> {
    let q = |name: &str, schema: Value, about: &str| json!({ "name": name, "in": "query", "required": false, "schema": schema, "description": about });
    let duration = json!({ "type": "string", "pattern": "^[0-9]+[smhd]$" });
    match (method, path) {
        ("get", p) if p.ends_with("/stats") => vec![
            q("since", duration.clone(), "window, e.g. 1h (default 1h)"),
            q(
                "bucket",
                duration,
                &format!(
                    "bucket width, e.g. 1m (default 1m); since / bucket may make at most {} buckets",
                    holdfast_store::MAX_BUCKETS
                ),
            ),
            q(
                "top",
                json!({ "type": "integer", "minimum": 1, "maximum": 1000 }),
                "top-list length (default 10)",
            ),
        ],
        ("get", _) if summary.starts_with("List") => vec![
            q(
                "limit",
                json!({ "type": "integer", "minimum": 1, "maximum": 10_000, "default": 1000 }),
                "at most this many items",
            ),
            q(
                "offset",
                json!({ "type": "integer", "minimum": 0, "default": 0 }),
                "skip this many items",
            ),
        ],
        ("delete", "/admin/tenants/{tenant}") => vec![q(
            "force",
            json!({ "type": "boolean", "default": false }),
            "also delete the tenant's services, consumers, keys and subscriptions",
        )],
        ("post", "/admin/calllog/prune") => vec![q(
            "older_than",
            duration,
            "delete calls older than this (default: retention_days)",
        )],
        _ => Vec::new(),
    }
}

/// The schema of a success body: `Name` or `[Name]` (an array of them).
fn success_schema(answer: &str) -> Value {
    match answer.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        Some(item) => json!({ "type": "array", "items": r(item) }),
        None => r(answer),
    }
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, body, status, answer) in OPERATIONS {
        let mut params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        params.extend(query_params(method, path, summary));
        let err = json!({ "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
        let mut op = json!({
            "summary": summary,
            "parameters": params,
            "responses": {
                *status: { "description": "success", "content": { "application/json": {
                    "schema": success_schema(answer) } } },
                "400": { "description": "bad input; `field` names the field", "content": err["content"] },
                "401": { "description": "missing or unknown admin token", "content": err["content"] },
                "403": { "description": "the token's role or tenant does not allow this", "content": err["content"] },
                "404": { "description": "not found (or another tenant's)", "content": err["content"] },
                "405": { "description": "method not allowed on this path (`Allow` lists the methods)", "content": err["content"] },
                "409": { "description": "conflict (exists already, already decided, tenant not empty)", "content": err["content"] },
                "413": { "description": "body over 2 MiB", "content": err["content"] }
            }
        });
        if !body.is_empty() {
            op["requestBody"] = json!({ "required": true, "content": { "application/json": {
                "schema": { "$ref": format!("#/components/schemas/{body}") } } } });
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Holdfast admin API", "version": env!("CARGO_PKG_VERSION") },
        "security": [{ "adminToken": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "adminToken": { "type": "http", "scheme": "bearer",
                "description": "An admin token from [[management.admin_tokens]] (super_admin, tenant_admin or viewer)" } },
            "schemas": schemas()
        }
    })
}
