//! The OpenAPI 3.1 document of the admin API, served at `/admin/openapi.json`.

use serde_json::{json, Map, Value};

/// (method, path, summary, request body schema name or "", success status)
const OPERATIONS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "get",
        "/admin/tenants",
        "List the tenants the token may see",
        "",
        "200",
    ),
    (
        "post",
        "/admin/tenants",
        "Create a tenant (super admin)",
        "NewTenant",
        "201",
    ),
    (
        "get",
        "/admin/tenants/{tenant}",
        "Show a tenant",
        "",
        "200",
    ),
    (
        "delete",
        "/admin/tenants/{tenant}",
        "Delete a tenant (super admin); 409 while it has services or consumers unless ?force=true, which deletes them with their keys and subscriptions",
        "",
        "200",
    ),
    (
        "get",
        "/admin/tenants/{tenant}/services",
        "List services",
        "",
        "200",
    ),
    (
        "post",
        "/admin/tenants/{tenant}/services",
        "Create a service",
        "NewService",
        "201",
    ),
    (
        "get",
        "/admin/tenants/{tenant}/services/{service}",
        "Show a service",
        "",
        "200",
    ),
    (
        "patch",
        "/admin/tenants/{tenant}/services/{service}",
        "Change require_approval and/or the limits (limits are replaced as a whole)",
        "ServicePatch",
        "200",
    ),
    (
        "delete",
        "/admin/tenants/{tenant}/services/{service}",
        "Delete a service with its versions and the subscriptions to it",
        "",
        "200",
    ),
    (
        "put",
        "/admin/tenants/{tenant}/services/{service}/versions/{version}",
        "Add a version or set its lifecycle state",
        "VersionState",
        "200",
    ),
    (
        "get",
        "/admin/tenants/{tenant}/consumers",
        "List consumers",
        "",
        "200",
    ),
    (
        "post",
        "/admin/tenants/{tenant}/consumers",
        "Create a consumer",
        "NewConsumer",
        "201",
    ),
    (
        "get",
        "/admin/tenants/{tenant}/consumers/{consumer}",
        "Show a consumer",
        "",
        "200",
    ),
    (
        "patch",
        "/admin/tenants/{tenant}/consumers/{consumer}",
        "Replace a consumer's limits",
        "ConsumerPatch",
        "200",
    ),
    (
        "delete",
        "/admin/tenants/{tenant}/consumers/{consumer}",
        "Delete a consumer with its API keys and subscriptions",
        "",
        "200",
    ),
    (
        "post",
        "/admin/tenants/{tenant}/consumers/{consumer}/keys",
        "Issue an API key (shown once)",
        "NewKey",
        "201",
    ),
    (
        "get",
        "/admin/tenants/{tenant}/keys",
        "List API keys (prefixes only)",
        "",
        "200",
    ),
    (
        "patch",
        "/admin/tenants/{tenant}/keys/{prefix}",
        "Change a key's limits (replaced as a whole) and/or expiry (expires_in_s; null: none)",
        "KeyPatch",
        "200",
    ),
    (
        "post",
        "/admin/tenants/{tenant}/keys/{prefix}/revoke",
        "Revoke an API key",
        "",
        "200",
    ),
    (
        "get",
        "/admin/tenants/{tenant}/subscriptions",
        "List subscriptions",
        "",
        "200",
    ),
    (
        "post",
        "/admin/tenants/{tenant}/subscriptions",
        "Subscribe a consumer to a service",
        "NewSubscription",
        "201",
    ),
    (
        "delete",
        "/admin/tenants/{tenant}/subscriptions/{id}",
        "Delete a subscription (to re-request a decided one: delete, then subscribe again)",
        "",
        "200",
    ),
    (
        "post",
        "/admin/tenants/{tenant}/subscriptions/{id}/approve",
        "Approve a pending subscription (409 once decided)",
        "",
        "200",
    ),
    (
        "post",
        "/admin/tenants/{tenant}/subscriptions/{id}/reject",
        "Reject a pending subscription (409 once decided)",
        "",
        "200",
    ),
    (
        "get",
        "/admin/tenants/{tenant}/stats",
        "Analytics of one tenant (query: since, bucket, top)",
        "",
        "200",
    ),
    (
        "get",
        "/admin/stats",
        "Analytics of all tenants (super admin)",
        "",
        "200",
    ),
    (
        "get",
        "/admin/calllog",
        "Call-log writer and cache counters (super admin)",
        "",
        "200",
    ),
    (
        "post",
        "/admin/calllog/prune",
        "Delete calls older than the retention, or than ?older_than=DURATION (super admin)",
        "",
        "200",
    ),
];

fn limits_schema() -> Value {
    let n = json!({ "type": "integer", "minimum": 1, "maximum": 1_000_000_000 });
    json!({ "type": "object", "additionalProperties": false, "properties": {
        "rps": n, "rpm": n, "tokens_per_min": n, "tokens_per_day": n, "tokens_per_month": n } })
}

fn schemas() -> Value {
    let name = json!({ "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" });
    let state =
        json!({ "type": "string", "enum": ["draft", "published", "deprecated", "retired"] });
    json!({
        "Limits": limits_schema(),
        "NewTenant": { "type": "object", "additionalProperties": false, "required": ["name"],
            "properties": { "name": name } },
        "NewService": { "type": "object", "additionalProperties": false, "required": ["name"],
            "properties": { "name": name, "require_approval": { "type": "boolean" },
                "limits": { "$ref": "#/components/schemas/Limits" },
                "versions": { "type": "array", "items": { "type": "object", "additionalProperties": false,
                    "required": ["version", "state"], "properties": { "version": name, "state": state } } } } },
        "VersionState": { "type": "object", "additionalProperties": false, "required": ["state"],
            "properties": { "state": state } },
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
    })
}

/// The query parameters of an operation.
fn query_params(method: &str, path: &str, summary: &str) -> Vec<Value> {
    let q = |name: &str, schema: Value, about: &str| json!({ "name": name, "in": "query", "required": false, "schema": schema, "description": about });
    let duration = json!({ "type": "string", "pattern": "^[0-9]+[smhd]$" });
    match (method, path) {
        ("get", p) if p.ends_with("/stats") => vec![
            q("since", duration.clone(), "window, e.g. 1h (default 1h)"),
            q("bucket", duration, "bucket width, e.g. 1m (default 1m)"),
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

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, body, status) in OPERATIONS {
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
                *status: { "description": "success" },
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
