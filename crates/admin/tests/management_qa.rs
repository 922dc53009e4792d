//! Regression tests for the API-management QA pass: version order, atomic writes, update and
//! delete (and their effect on the request path), call records for 401s, name rules, 404 for
//! missing tenants, roles of the call-log endpoints, auth-scheme case, strict no-body
//! endpoints, JSON errors, JWT claim messages, prune counters, decided subscriptions, the
//! API-key challenge and pagination. All on a real SQLite file and a real admin listener.

mod common;

use common::*;
use holdfast_admin::ManagementFactory;
use holdfast_core::config::management::{JwtAlgorithm, JwtConfig, JwtKeys, StoreUrl};
use holdfast_core::config::Config;
use holdfast_core::CallRecord;
use holdfast_proxy::plugin::PluginFactory;
use serde_json::{json, Value};

fn versions(v: &Value) -> Vec<String> {
    v["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|x| x["version"].as_str().expect("version").to_string())
        .collect()
}

#[tokio::test]
async fn highest_version_is_chosen_by_number_not_string_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let body = json!({
        "name": "pay",
        "versions": (1..=10).map(|i| json!({"version": format!("v{i}"), "state": "published"})).collect::<Vec<_>>(),
    });
    let key = provision(&node, ADMIN_A, "acme", "pay", &body.to_string()).await;
    subscribe(&node, "c1", "pay").await;
    let (s, _, b, extra) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(extra.service_version.as_deref(), Some("v10"));

    let (s, v) = node
        .api("GET", "/admin/tenants/acme/services/pay", VIEWER_A, None)
        .await;
    assert_eq!(s, 200, "{v}");
    let want: Vec<String> = (1..=10).map(|i| format!("v{i}")).collect();
    assert_eq!(versions(&v), want);

    // v1.10 beats v1.2; retiring v10 makes v9 the highest callable.
    for (ver, state) in [("v1.2", "published"), ("v1.10", "published")] {
        set_version_state(&node, "pay", ver, state).await;
    }
    let (_, v) = node
        .api("GET", "/admin/tenants/acme/services", VIEWER_A, None)
        .await;
    let listed = versions(&v[0]);
    let pos = |x: &str| listed.iter().position(|y| y == x).expect(x);
    assert!(pos("v1") < pos("v1.2") && pos("v1.2") < pos("v1.10") && pos("v1.10") < pos("v2"));
    node.api(
        "PUT",
        "/admin/tenants/acme/services/pay/versions/v10",
        ADMIN_A,
        Some(r#"{"state":"retired"}"#),
    )
    .await;
    let (_, _, _, extra) = node.call("pay", Some(&key)).await;
    assert_eq!(extra.service_version.as_deref(), Some("v9"));
}

#[tokio::test]
async fn duplicate_version_is_400_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let (s, v) = node
        .api(
            "POST",
            "/admin/tenants/acme/services",
            ADMIN_A,
            Some(r#"{"name":"pay","versions":[{"version":"v1","state":"published"},{"version":"v2","state":"draft"},{"version":"v1","state":"draft"}]}"#),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["field"], "versions[2].version", "{v}");
    let (s, v) = node
        .api("GET", "/admin/tenants/acme/services/pay", ADMIN_A, None)
        .await;
    assert_eq!(s, 404, "{v}");
    let (_, v) = node
        .api("GET", "/admin/tenants/acme/services", ADMIN_A, None)
        .await;
    assert_eq!(v, json!([]));
    // The name is still free.
    let (s, v) = node
        .api(
            "POST",
            "/admin/tenants/acme/services",
            ADMIN_A,
            Some(r#"{"name":"pay"}"#),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn update_and_delete_reach_the_request_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let key = provision(&node, ADMIN_A, "acme", "pay", r#"{"name":"pay"}"#).await;
    let sub = subscribe(&node, "c1", "pay").await;
    assert_eq!(node.call("pay", Some(&key)).await.0, 200);

    // Single consumer.
    let (s, v) = node
        .api("GET", "/admin/tenants/acme/consumers/c1", VIEWER_A, None)
        .await;
    assert_eq!((s, v["name"].clone()), (200, json!("c1")), "{v}");
    let (s, _) = node
        .api("GET", "/admin/tenants/acme/consumers/nope", VIEWER_A, None)
        .await;
    assert_eq!(s, 404);

    // Roles: a viewer may not change anything; another tenant's admin gets 403.
    for (token, want) in [(VIEWER_A, 403), (ADMIN_B, 403)] {
        let (s, v) = node
            .api(
                "PATCH",
                "/admin/tenants/acme/services/pay",
                token,
                Some(r#"{"limits":{"rpm":1}}"#),
            )
            .await;
        assert_eq!(s, want, "{v}");
        let (s, v) = node
            .api("DELETE", "/admin/tenants/acme/consumers/c1", token, None)
            .await;
        assert_eq!(s, want, "{v}");
    }
    let (s, v) = node
        .api("DELETE", "/admin/tenants/acme", ADMIN_A, None)
        .await;
    assert_eq!(s, 403, "tenant deletion is for super admins: {v}");

    // Service limits: the next call is counted against rpm = 1.
    let (s, v) = node
        .api(
            "PATCH",
            "/admin/tenants/acme/services/pay",
            ADMIN_A,
            Some(r#"{"limits":{"rpm":1}}"#),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["limits"], json!({"rpm": 1}));
    assert_eq!(node.call("pay", Some(&key)).await.0, 200);
    assert_eq!(node.call("pay", Some(&key)).await.0, 429);
    let (s, v) = node
        .api(
            "PATCH",
            "/admin/tenants/acme/services/pay",
            ADMIN_A,
            Some(r#"{"limits":{},"require_approval":true}"#),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["require_approval"], true);
    assert_eq!(node.call("pay", Some(&key)).await.0, 200);
    let (s, v) = node
        .api(
            "PATCH",
            "/admin/tenants/acme/services/pay",
            ADMIN_A,
            Some(r#"{"limits":{"rps":0}}"#),
        )
        .await;
    assert_eq!((s, v["field"].clone()), (400, json!("limits.rps")), "{v}");
    let (s, v) = node
        .api(
            "PATCH",
            "/admin/tenants/acme/services/pay",
            ADMIN_A,
            Some(r#"{"description":"x"}"#),
        )
        .await;
    assert_eq!((s, v["field"].clone()), (400, json!("description")), "{v}");

    // Consumer limits.
    let (s, v) = node
        .api(
            "PATCH",
            "/admin/tenants/acme/consumers/c1",
            ADMIN_A,
            Some(r#"{"limits":{"rpm":1}}"#),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(node.call("pay", Some(&key)).await.0, 200);
    let (s, _, body, _) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 429, "{body}");
    assert!(body.contains("consumer c1"), "{body}");
    node.api(
        "PATCH",
        "/admin/tenants/acme/consumers/c1",
        ADMIN_A,
        Some(r#"{"limits":{}}"#),
    )
    .await;

    // Key limits and expiry.
    let prefix = &key[..11];
    let (s, v) = node
        .api(
            "PATCH",
            &format!("/admin/tenants/acme/keys/{prefix}"),
            ADMIN_A,
            Some(r#"{"limits":{"rpm":1},"expires_in_s":3600}"#),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["expires_ms"].as_i64().is_some(), "{v}");
    assert_eq!(node.call("pay", Some(&key)).await.0, 200);
    let (s, _, body, _) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 429, "{body}");
    let (s, v) = node
        .api(
            "PATCH",
            &format!("/admin/tenants/acme/keys/{prefix}"),
            ADMIN_A,
            Some(r#"{"limits":{},"expires_in_s":null}"#),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["expires_ms"].is_null(), "{v}");
    assert_eq!(node.call("pay", Some(&key)).await.0, 200);

    // Deleting the subscription: the consumer is refused until it subscribes again.
    let id = sub["id"].as_i64().expect("id");
    let (s, v) = node
        .api(
            "DELETE",
            &format!("/admin/tenants/acme/subscriptions/{id}"),
            ADMIN_A,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _, body, _) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("no subscription"), "{body}");
    let (s, _) = node
        .api(
            "DELETE",
            &format!("/admin/tenants/acme/subscriptions/{id}"),
            ADMIN_A,
            None,
        )
        .await;
    assert_eq!(s, 404);
    subscribe(&node, "c1", "pay").await; // pending now: the service requires approval

    // Deleting the consumer deletes its keys and subscriptions.
    let (s, v) = node
        .api("DELETE", "/admin/tenants/acme/consumers/c1", ADMIN_A, None)
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _, body, _) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 401, "{body}");
    let (_, v) = node
        .api("GET", "/admin/tenants/acme/keys", ADMIN_A, None)
        .await;
    assert_eq!(v, json!([]));
    let (_, v) = node
        .api("GET", "/admin/tenants/acme/subscriptions", ADMIN_A, None)
        .await;
    assert_eq!(v, json!([]));

    // Deleting a service: routes to it answer 404 (not in management).
    let key2 = {
        node.api(
            "POST",
            "/admin/tenants/acme/consumers",
            ADMIN_A,
            Some(r#"{"name":"c2"}"#),
        )
        .await;
        let (_, v) = node
            .api(
                "POST",
                "/admin/tenants/acme/consumers/c2/keys",
                ADMIN_A,
                None,
            )
            .await;
        v["key"].as_str().expect("key").to_string()
    };
    node.api(
        "PATCH",
        "/admin/tenants/acme/services/pay",
        ADMIN_A,
        Some(r#"{"require_approval":false}"#),
    )
    .await;
    subscribe(&node, "c2", "pay").await;
    assert_eq!(node.call("pay", Some(&key2)).await.0, 200);
    let (s, v) = node
        .api("DELETE", "/admin/tenants/acme/services/pay", ADMIN_A, None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(node.call("pay", Some(&key2)).await.0, 404);
    let (_, v) = node
        .api("GET", "/admin/tenants/acme/subscriptions", ADMIN_A, None)
        .await;
    assert_eq!(v, json!([]));

    // A tenant with consumers: 409 unless forced.
    let (s, v) = node.api("DELETE", "/admin/tenants/acme", SUPER, None).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("force=true"), "{v}");
    let (s, v) = node
        .api("DELETE", "/admin/tenants/acme?force=yes", SUPER, None)
        .await;
    assert_eq!((s, v["field"].clone()), (400, json!("force")), "{v}");
    let (s, v) = node
        .api("DELETE", "/admin/tenants/acme?force=true", SUPER, None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(node.call("pay", Some(&key2)).await.0, 401);
    let (s, _) = node
        .api("GET", "/admin/tenants/acme/consumers", SUPER, None)
        .await;
    assert_eq!(s, 404);
    // An empty tenant goes without force.
    let (s, v) = node.api("DELETE", "/admin/tenants/beta", SUPER, None).await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = node.api("GET", "/admin/tenants", SUPER, None).await;
    assert_eq!(v, json!([]));
}

#[tokio::test]
async fn refused_authentication_reaches_the_call_log() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let key = provision(&node, ADMIN_A, "acme", "pay", r#"{"name":"pay"}"#).await;
    subscribe(&node, "c1", "pay").await;

    let mut records = Vec::new();
    // No key, and an unknown key: the route's service and its tenant.
    for k in [
        None,
        Some("hf_00000000_0000000000000000000000000000000000000000"),
    ] {
        let (s, _, _, extra) = node.call("pay", k).await;
        assert_eq!(s, 401);
        assert_eq!(extra.service.as_deref(), Some("pay"));
        assert_eq!(extra.tenant.as_deref(), Some("acme"));
        assert_eq!(extra.consumer, None);
        records.push(extra);
    }
    // Unknown key on a service management does not know: the service name only.
    let (s, _, _, extra) = node.call("ghost", Some("nope")).await;
    assert_eq!(s, 401);
    assert_eq!(extra.service.as_deref(), Some("ghost"));
    assert_eq!(extra.tenant, None);
    records.push(extra);
    // A revoked key: its tenant, consumer and prefix.
    let prefix = key[..11].to_string();
    node.api(
        "POST",
        &format!("/admin/tenants/acme/keys/{prefix}/revoke"),
        ADMIN_A,
        None,
    )
    .await;
    let (s, _, _, extra) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 401);
    assert_eq!(extra.tenant.as_deref(), Some("acme"));
    assert_eq!(extra.consumer.as_deref(), Some("c1"));
    assert_eq!(extra.key_prefix.as_deref(), Some(prefix.as_str()));
    records.push(extra);

    // Each becomes a stored call record.
    for extra in records {
        let rec = CallRecord {
            ts_ms: holdfast_store::now_ms(),
            route: "r1".into(),
            method: "GET".into(),
            path: "/x".into(),
            status: 401,
            extra,
            ..CallRecord::default()
        };
        for o in &node.plugins.observers {
            o.on_call(&rec);
        }
    }
    node.mgmt.shutdown().await;
    let (_, v) = node.api("GET", "/admin/calllog", SUPER, None).await;
    assert_eq!(v["stored"], 4, "{v}");
    let (_, v) = node
        .api("GET", "/admin/tenants/acme/stats", ADMIN_A, None)
        .await;
    assert_eq!(v["calls"], 3, "{v}");
}

#[tokio::test]
async fn names_of_dots_only_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    for name in [".", "..", "..."] {
        let (s, v) = node
            .api(
                "POST",
                "/admin/tenants",
                SUPER,
                Some(&format!(r#"{{"name":"{name}"}}"#)),
            )
            .await;
        assert_eq!((s, v["field"].clone()), (400, json!("name")), "{v}");
        let (s, v) = node
            .api(
                "POST",
                "/admin/tenants/acme/consumers",
                ADMIN_A,
                Some(&format!(r#"{{"name":"{name}"}}"#)),
            )
            .await;
        assert_eq!((s, v["field"].clone()), (400, json!("name")), "{v}");
    }
    let (s, v) = node
        .api(
            "POST",
            "/admin/tenants/acme/services",
            ADMIN_A,
            Some(r#"{"name":"pay","versions":[{"version":"..","state":"draft"}]}"#),
        )
        .await;
    assert_eq!(
        (s, v["field"].clone()),
        (400, json!("versions[0].version")),
        "{v}"
    );
}

#[tokio::test]
async fn reads_of_a_missing_tenant_are_404() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    for what in ["services", "keys", "subscriptions", "consumers", "stats"] {
        let (s, v) = node
            .api("GET", &format!("/admin/tenants/nope/{what}"), SUPER, None)
            .await;
        assert_eq!(s, 404, "{what}: {v}");
        assert_eq!(v["error"], "not found: tenant nope", "{what}");
    }
    let (s, _) = node.api("GET", "/admin/tenants/nope", SUPER, None).await;
    assert_eq!(s, 404);
    // An existing, empty tenant still lists [].
    let (s, v) = node
        .api("GET", "/admin/tenants/acme/services", VIEWER_A, None)
        .await;
    assert_eq!((s, v), (200, json!([])));
}

#[tokio::test]
async fn call_log_status_is_for_super_admins_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    for token in [VIEWER_A, ADMIN_A] {
        let (s, v) = node.api("GET", "/admin/calllog", token, None).await;
        assert_eq!(s, 403, "{v}");
        let (s, v) = node
            .api("GET", "/admin/tenants/acme/stats", token, None)
            .await;
        assert_eq!(s, 200, "{v}");
        assert!(v.get("call_log").is_none(), "{v}");
    }
    let (s, v) = node.api("GET", "/admin/calllog", SUPER, None).await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = node
        .api("GET", "/admin/tenants/acme/stats", SUPER, None)
        .await;
    assert!(v.get("call_log").is_some(), "{v}");
}

#[tokio::test]
async fn auth_scheme_is_case_insensitive() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let key = provision(&node, ADMIN_A, "acme", "pay", r#"{"name":"pay"}"#).await;
    subscribe(&node, "c1", "pay").await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let (s, _, body, _) = node
            .call_with("pay", Some(("authorization", format!("{scheme} {key}"))))
            .await;
        assert_eq!(s, 200, "{scheme}: {body}");
        let resp = node
            .http
            .get(format!("{}/admin/tenants", node.admin))
            .header("authorization", format!("{scheme} {SUPER}"))
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status(), 200, "{scheme}");
    }
    let (s, _, _, _) = node
        .call_with("pay", Some(("authorization", format!("Basic {key}"))))
        .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn operations_without_a_body_refuse_unknown_fields_and_params() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    provision(
        &node,
        ADMIN_A,
        "acme",
        "pay",
        r#"{"name":"pay","require_approval":true}"#,
    )
    .await;
    let id = subscribe(&node, "c1", "pay").await["id"].as_i64().unwrap();
    let approve = format!("/admin/tenants/acme/subscriptions/{id}/approve");
    let (s, v) = node
        .api("POST", &approve, ADMIN_A, Some(r#"{"reason":"ok"}"#))
        .await;
    assert_eq!((s, v["field"].clone()), (400, json!("reason")), "{v}");
    let (s, v) = node
        .api("POST", &format!("{approve}?force=1"), ADMIN_A, None)
        .await;
    assert_eq!((s, v["field"].clone()), (400, json!("force")), "{v}");
    let (s, v) = node
        .api(
            "POST",
            &format!("/admin/tenants/acme/subscriptions/{id}/reject"),
            ADMIN_A,
            Some("[1]"),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    // Still pending: nothing happened.
    let (_, v) = node
        .api("GET", "/admin/tenants/acme/subscriptions", ADMIN_A, None)
        .await;
    assert_eq!(v[0]["state"], "pending", "{v}");
    let (s, v) = node.api("POST", &approve, ADMIN_A, Some("{}")).await;
    assert_eq!(s, 200, "{v}");

    let (s, v) = node
        .api("POST", "/admin/calllog/prune?days=3", SUPER, None)
        .await;
    assert_eq!((s, v["field"].clone()), (400, json!("days")), "{v}");
    let (s, v) = node
        .api("POST", "/admin/calllog/prune", SUPER, Some(r#"{"x":1}"#))
        .await;
    assert_eq!((s, v["field"].clone()), (400, json!("x")), "{v}");
    let (s, v) = node
        .api("POST", "/admin/calllog/prune?older_than=soon", SUPER, None)
        .await;
    assert_eq!((s, v["field"].clone()), (400, json!("older_than")), "{v}");
    let (s, v) = node
        .api("POST", "/admin/calllog/prune?older_than=7d", SUPER, None)
        .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn every_admin_error_is_json() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let (s, v) = node.api("GET", "/admin/nope", SUPER, None).await;
    assert_eq!(s, 404);
    assert!(v["error"].as_str().unwrap().contains("/admin/nope"), "{v}");
    let (s, v) = node.api("GET", "/elsewhere", SUPER, None).await;
    assert_eq!(s, 404);
    assert!(v["error"].is_string(), "{v}");
    let resp = node
        .http
        .delete(format!("{}/admin/stats", node.admin))
        .bearer_auth(SUPER)
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 405);
    assert!(resp.headers().contains_key("allow"));
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.expect("json");
    assert!(v["error"].as_str().unwrap().contains("DELETE"), "{v}");
    let big = format!(r#"{{"name":"{}"}}"#, "a".repeat(3 * 1024 * 1024));
    let (s, v) = node.api("POST", "/admin/tenants", SUPER, Some(&big)).await;
    assert_eq!(s, 413);
    assert!(v["error"].as_str().unwrap().contains("limit"), "{v}");
    let (s, v) = node
        .api("GET", "/admin/tenants/acme/services?limit=%ZZ", SUPER, None)
        .await;
    assert_eq!(s, 400);
    assert!(v["error"].is_string(), "{v}");
}

#[tokio::test]
async fn jwt_without_a_numeric_exp_is_explained() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    const SECRET: &str = "jwt-shared-secret-0123456789abcdef";
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("m.db").to_string_lossy().into_owned();
    let mut cfg = config(StoreUrl::Sqlite(path), "acme", "beta");
    cfg.jwt = vec![JwtConfig {
        service: "pay".into(),
        algorithm: JwtAlgorithm::Hs256,
        keys: JwtKeys::Secret(SECRET.into()),
        issuer: None,
        audience: None,
        consumer_claim: "sub".into(),
        leeway_s: 5,
        jwks_refresh_s: 300,
        jwks_ca_file: None,
    }];
    let node = Node::start(cfg).await;
    let token = |claims: Value| {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("sign")
    };
    let (s, _, body, _) = node.call("pay", Some(&token(json!({"sub": "c1"})))).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("`exp`"), "{body}");
    assert!(body.contains("a number"), "{body}");
    assert!(!body.contains("a string"), "{body}");
    let (s, _, body, _) = node
        .call("pay", Some(&token(json!({"sub": "c1", "exp": "tomorrow"}))))
        .await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body.contains("`exp`") && body.contains("a number"),
        "{body}"
    );
    let exp = holdfast_store::now_ms() / 1000 + 300;
    let (s, _, body, _) = node.call("pay", Some(&token(json!({"exp": exp})))).await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body.contains("`sub`") && body.contains("a string"),
        "{body}"
    );
}

#[tokio::test]
async fn manual_prune_is_counted() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let old = CallRecord {
        ts_ms: holdfast_store::now_ms() - 40 * 86_400_000,
        route: "r1".into(),
        method: "GET".into(),
        path: "/x".into(),
        status: 200,
        extra: holdfast_core::CallExtra {
            tenant: Some("acme".into()),
            ..Default::default()
        },
        ..CallRecord::default()
    };
    for _ in 0..3 {
        for o in &node.plugins.observers {
            o.on_call(&old);
        }
    }
    // Wait for the writer (flush interval 100 ms).
    for _ in 0..50 {
        if node.mgmt.call_log_stats().written == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (s, v) = node.api("POST", "/admin/calllog/prune", SUPER, None).await;
    assert_eq!((s, v["pruned"].clone()), (200, json!(3)), "{v}");
    let (_, v) = node.api("GET", "/admin/calllog", SUPER, None).await;
    assert_eq!(v["writer"]["pruned"], 3, "{v}");
    assert_eq!(v["stored"], 0, "{v}");
}

#[tokio::test]
async fn decided_subscriptions_cannot_be_decided_again() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let key = provision(
        &node,
        ADMIN_A,
        "acme",
        "pay",
        r#"{"name":"pay","require_approval":true}"#,
    )
    .await;
    let id = subscribe(&node, "c1", "pay").await["id"].as_i64().unwrap();
    let at = |what: &str| format!("/admin/tenants/acme/subscriptions/{id}/{what}");
    let (s, v) = node.api("POST", &at("reject"), ADMIN_A, None).await;
    assert_eq!(s, 200, "{v}");
    let decided = v["decided_ms"].clone();
    for what in ["approve", "reject"] {
        let (s, v) = node.api("POST", &at(what), ADMIN_A, None).await;
        assert_eq!(s, 409, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains("already rejected"), "{msg}");
        assert!(msg.contains("subscribe again"), "{msg}");
    }
    let (s, _, body, _) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("rejected"), "{body}");
    let (_, v) = node
        .api("GET", "/admin/tenants/acme/subscriptions", ADMIN_A, None)
        .await;
    assert_eq!(v[0]["decided_ms"], decided, "{v}");
    // Subscribing again while rejected: 409 naming the subscription and how to ask again.
    let (s, v) = subscription(&node, "c1", "pay").await;
    assert_eq!(s, 409, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "(id {id}) was rejected: delete subscription {id} to ask again"
        )) && msg.contains(&format!("holdfast admin unsubscribe {id}")),
        "{msg}"
    );

    // Re-request: delete and subscribe again; then approval works once.
    node.api(
        "DELETE",
        &format!("/admin/tenants/acme/subscriptions/{id}"),
        ADMIN_A,
        None,
    )
    .await;
    let id = subscribe(&node, "c1", "pay").await["id"].as_i64().unwrap();
    let at = |what: &str| format!("/admin/tenants/acme/subscriptions/{id}/{what}");
    assert_eq!(node.api("POST", &at("approve"), ADMIN_A, None).await.0, 200);
    let (s, v) = node.api("POST", &at("approve"), ADMIN_A, None).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("already active"),
        "{v}"
    );
    assert_eq!(node.call("pay", Some(&key)).await.0, 200);
}

#[tokio::test]
async fn custom_key_header_gets_an_api_key_challenge() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = sqlite_node(&dir).await;
    let key = provision(&node, ADMIN_A, "acme", "pay", r#"{"name":"pay"}"#).await;
    subscribe(&node, "c1", "pay").await;
    let (s, h, _, _) = node.call("pay", None).await;
    assert_eq!(s, 401);
    assert_eq!(h["www-authenticate"], "Bearer realm=\"holdfast\"");

    let mut cfg = node.mgmt.config();
    cfg.key_header = "x-api-key".into();
    node.plugins = ManagementFactory(node.mgmt.clone())
        .build(&Config {
            management: Some(cfg),
            ..Config::default()
        })
        .expect("reload");
    for header in [None, Some(("x-api-key", "wrong".to_string()))] {
        let (s, h, body, _) = node.call_with("pay", header).await;
        assert_eq!(s, 401, "{body}");
        let challenge = h["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("ApiKey "), "{challenge}");
        assert!(challenge.contains("header=\"x-api-key\""), "{challenge}");
    }
    assert_eq!(node.call_with("pay", Some(("x-api-key", key))).await.0, 200);
}

#[tokio::test]
async fn lists_are_paginated() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    for i in 0..5 {
        let (s, v) = node
            .api(
                "POST",
                "/admin/tenants/acme/consumers",
                ADMIN_A,
                Some(&format!(r#"{{"name":"c{i}"}}"#)),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, v) = node
        .api("GET", "/admin/tenants/acme/consumers", VIEWER_A, None)
        .await;
    assert_eq!(names(&v).len(), 5);
    let (s, v) = node
        .api(
            "GET",
            "/admin/tenants/acme/consumers?limit=2&offset=1",
            VIEWER_A,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(names(&v), ["c1", "c2"]);
    let (_, v) = node
        .api(
            "GET",
            "/admin/tenants/acme/consumers?offset=10",
            VIEWER_A,
            None,
        )
        .await;
    assert_eq!(v, json!([]));
    let (_, v) = node.api("GET", "/admin/tenants?limit=1", SUPER, None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=x", "limit"),
        ("offset=-1", "offset"),
        ("sort=name", "sort"),
    ] {
        for path in ["consumers", "services", "keys", "subscriptions"] {
            let (s, v) = node
                .api(
                    "GET",
                    &format!("/admin/tenants/acme/{path}?{q}"),
                    VIEWER_A,
                    None,
                )
                .await;
            assert_eq!(
                (s, v["field"].clone()),
                (400, json!(field)),
                "{path}?{q}: {v}"
            );
        }
    }
}

#[tokio::test]
async fn openapi_lists_update_and_delete_operations() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let doc: Value = reqwest::get(format!("{}/admin/openapi.json", node.admin))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    for (method, path) in [
        ("get", "/admin/tenants/{tenant}"),
        ("delete", "/admin/tenants/{tenant}"),
        ("patch", "/admin/tenants/{tenant}/services/{service}"),
        ("delete", "/admin/tenants/{tenant}/services/{service}"),
        ("get", "/admin/tenants/{tenant}/consumers/{consumer}"),
        ("patch", "/admin/tenants/{tenant}/consumers/{consumer}"),
        ("delete", "/admin/tenants/{tenant}/consumers/{consumer}"),
        ("patch", "/admin/tenants/{tenant}/keys/{prefix}"),
        ("delete", "/admin/tenants/{tenant}/subscriptions/{id}"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    let names = |method: &str, path: &str| -> Vec<String> {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(names("get", "/admin/tenants/{tenant}/consumers").contains(&"limit".to_string()));
    assert!(names("delete", "/admin/tenants/{tenant}").contains(&"force".to_string()));
    assert!(names("post", "/admin/calllog/prune").contains(&"older_than".to_string()));
    // Every operation the document lists answers something other than 404/405.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let url = path
                .replace("{tenant}", "acme")
                .replace("{service}", "x")
                .replace("{consumer}", "x")
                .replace("{prefix}", "x")
                .replace("{version}", "v1")
                .replace("{id}", "1");
            let (s, v) = node.api(&method.to_uppercase(), &url, VIEWER_A, None).await;
            assert!(s != 405, "{method} {url}: {v}");
            if s == 404 {
                assert!(
                    v["error"].as_str().unwrap().starts_with("not found"),
                    "{method} {url}: {v}"
                );
            }
        }
    }
}

#[tokio::test]
async fn bodies_are_one_json_object_and_parameters_come_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    for body in [
        r#"{"name":"trail1"} garbage"#,
        r#"{"name":"trail2"}{"name":"x"}"#,
        r#"["arr1"]"#,
        r#""arr2""#,
    ] {
        let (s, v) = node.api("POST", "/admin/tenants", SUPER, Some(body)).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains("the body"), "{v}");
    }
    let (_, tenants) = node.api("GET", "/admin/tenants", SUPER, None).await;
    let names: Vec<&str> = tenants
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("trail") || n.starts_with("arr")),
        "{names:?}"
    );
    let (s, _) = node
        .api("POST", "/admin/tenants", SUPER, Some(r#"{"name":"dup"}"#))
        .await;
    assert_eq!(s, 201);
    let (s, v) = node
        .api(
            "DELETE",
            "/admin/tenants/dup?force=false&force=true",
            SUPER,
            None,
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["field"], "force", "{v}");
    let (s, _) = node.api("GET", "/admin/tenants/dup", SUPER, None).await;
    assert_eq!(s, 200, "the tenant is still there");
}

#[tokio::test]
async fn duplicate_json_fields_are_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let (s, v) = node
        .api(
            "POST",
            "/admin/tenants/acme/consumers",
            ADMIN_A,
            Some(r#"{"name":"c1","name":"c2"}"#),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["field"], "name", "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("duplicate"),
        "{v}"
    );
    let (s, v) = node
        .api(
            "POST",
            "/admin/tenants/acme/services",
            ADMIN_A,
            Some(r#"{"name":"pay","limits":{"rps":1,"rps":2}}"#),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["field"], "limits.rps", "{v}");
}

/// A route pinned to a version the service does not have: 404 saying so; an unpinned route
/// of a service with nothing published keeps "no published version".
#[tokio::test]
async fn a_pinned_version_that_does_not_exist_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let key = provision(&node, ADMIN_A, "acme", "maps", r#"{"name":"maps"}"#).await;
    subscribe(&node, "c1", "maps").await;
    assert_eq!(node.call("maps@v1", Some(&key)).await.0, 200);
    let (s, _, body, _) = node.call("maps@v99", Some(&key)).await;
    assert_eq!(s, 404, "{body}");
    assert!(
        body.contains("has no version `v99`") && !body.contains("no published version"),
        "{body}"
    );
    // Nothing published: the unpinned route says so.
    let (s, v) = node
        .api(
            "PUT",
            "/admin/tenants/acme/services/maps/versions/v1",
            ADMIN_A,
            Some(r#"{"state":"draft"}"#),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _, body, _) = node.call("maps", Some(&key)).await;
    assert_eq!(s, 404, "{body}");
    assert!(body.contains("no published version"), "{body}");
}

#[tokio::test]
async fn a_route_pinned_to_a_tenant_is_not_taken_over_by_another_tenants_service() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let key_a = provision(&node, ADMIN_A, "acme", "echo", r#"{"name":"echo"}"#).await;
    let (s, v) = node
        .api(
            "POST",
            "/admin/tenants/acme/subscriptions",
            ADMIN_A,
            Some(r#"{"consumer":"c1","service":"echo"}"#),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    node.mgmt.refresh().await.expect("refresh");
    assert_eq!(node.call("acme/echo", Some(&key_a)).await.0, 200);
    assert_eq!(node.call("acme/echo@v1", Some(&key_a)).await.0, 200);
    // acme drops its service; beta creates one of the same name and subscribes to it.
    let (s, v) = node
        .api("DELETE", "/admin/tenants/acme/services/echo", ADMIN_A, None)
        .await;
    assert_eq!(s, 200, "{v}");
    let key_b = provision(&node, ADMIN_B, "beta", "echo", r#"{"name":"echo"}"#).await;
    let (s, v) = node
        .api(
            "POST",
            "/admin/tenants/beta/subscriptions",
            ADMIN_B,
            Some(r#"{"consumer":"c1","service":"echo"}"#),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    node.mgmt.refresh().await.expect("refresh");
    // The route pinned to acme's `echo` does not serve beta's.
    let (s, _, body, extra) = node.call("acme/echo", Some(&key_b)).await;
    assert_eq!(s, 404, "{body}");
    assert!(body.contains("acme/echo"), "{body}");
    assert_eq!(extra.tenant.as_deref(), Some("beta"), "the caller's log");
    // An unpinned route serves whichever tenant owns the name now (check warns about it).
    assert_eq!(node.call("echo", Some(&key_b)).await.0, 200);
}
