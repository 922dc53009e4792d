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
        "post",
        "/admin/tenants/{tenant}/subscriptions/{id}/approve",
        "Approve a pending subscription",
        "",
        "200",
    ),
    (
        "post",
        "/admin/tenants/{tenant}/subscriptions/{id}/reject",
        "Reject a pending subscription",
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
        "Call-log writer counters (queued, written, overflow)",
        "",
        "200",
    ),
    (
        "post",
        "/admin/calllog/prune",
        "Delete calls older than the retention (super admin)",
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
        "NewSubscription": { "type": "object", "additionalProperties": false, "required": ["consumer", "service"],
            "properties": { "consumer": name, "service": name } },
        "Error": { "type": "object", "required": ["error"],
            "properties": { "error": { "type": "string" }, "field": { "type": "string" } } }
    })
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, body, status) in OPERATIONS {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let err = json!({ "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
        let mut op = json!({
            "summary": summary,
            "parameters": params,
            "responses": {
                *status: { "description": "success" },
                "400": { "description": "bad input; `field` names the field", "content": err["content"] },
                "401": { "description": "missing or unknown admin token" },
                "403": { "description": "the token's role or tenant does not allow this" },
                "404": { "description": "not found (or another tenant's)" }
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
