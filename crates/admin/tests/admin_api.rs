//! The admin API and the guard on a real SQLite file: the whole workflow, bad input, roles,
//! tenant isolation, approval, rate limits and the call log on graceful stop.

mod common;

use common::*;
use holdfast_admin::ManagementFactory;
use holdfast_core::config::management::StoreUrl;
use holdfast_core::config::Config;
use holdfast_core::{CallExtra, CallRecord};
use holdfast_proxy::plugin::PluginFactory;

#[tokio::test]
async fn bad_admin_input_gets_400_naming_the_field() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let cases = [
        (
            "/admin/tenants",
            SUPER,
            r#"{"name":"x","colour":"red"}"#,
            "colour",
        ),
        (
            "/admin/tenants",
            SUPER,
            &format!(r#"{{"name":"{}"}}"#, "n".repeat(65)),
            "name",
        ),
        ("/admin/tenants", SUPER, r#"{"name":"has space"}"#, "name"),
        ("/admin/tenants", SUPER, r#"{}"#, "name"),
        (
            "/admin/tenants/acme/services",
            ADMIN_A,
            r#"{"name":"s","limits":{"rps":0}}"#,
            "limits.rps",
        ),
        (
            "/admin/tenants/acme/services",
            ADMIN_A,
            r#"{"name":"s","limits":{"rps":-5}}"#,
            "limits.rps",
        ),
        (
            "/admin/tenants/acme/services",
            ADMIN_A,
            r#"{"name":"s","limits":{"rpz":5}}"#,
            "limits.rpz",
        ),
        (
            "/admin/tenants/acme/services",
            ADMIN_A,
            r#"{"name":"s","versions":[{"version":"v1","state":"live"}]}"#,
            "versions[0].state",
        ),
        (
            "/admin/tenants/acme/consumers",
            ADMIN_A,
            r#"{"name":"c","limits":{"tokens_per_day":0}}"#,
            "limits.tokens_per_day",
        ),
        (
            "/admin/tenants/acme/subscriptions",
            ADMIN_A,
            r#"{"consumer":"c"}"#,
            "service",
        ),
    ];
    for (path, token, body, field) in cases {
        let (s, v) = node.api("POST", path, token, Some(body)).await;
        assert_eq!(s, 400, "{path} {body}: {v}");
        assert_eq!(v["field"], field, "{path} {body}: {v}");
        assert!(v["error"].as_str().unwrap_or("").contains(field), "{v}");
    }
    let (s, v) = node
        .api(
            "GET",
            "/admin/tenants/acme/stats?since=forever",
            ADMIN_A,
            None,
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("since")), "{v}");
}

#[tokio::test]
async fn roles_and_tenant_isolation() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let key_a = provision(&node, ADMIN_A, "acme", "pay", r#"{"name":"pay"}"#).await;
    let key_b = provision(&node, ADMIN_B, "beta", "maps", r#"{"name":"maps"}"#).await;
    // No token, wrong token.
    assert_eq!(
        node.api("GET", "/admin/tenants", "nope-nope-nope-nope", None)
            .await
            .0,
        401
    );
    // Admin of B cannot read or write A.
    assert_eq!(
        node.api("GET", "/admin/tenants/acme/services", ADMIN_B, None)
            .await
            .0,
        403
    );
    assert_eq!(
        node.api("GET", "/admin/tenants/acme/keys", ADMIN_B, None)
            .await
            .0,
        403
    );
    assert_eq!(
        node.api("GET", "/admin/tenants/acme/stats", ADMIN_B, None)
            .await
            .0,
        403
    );
    assert_eq!(
        node.api(
            "POST",
            "/admin/tenants/acme/consumers",
            ADMIN_B,
            Some(r#"{"name":"evil"}"#)
        )
        .await
        .0,
        403
    );
    // Tenant listing shows only the caller's tenant.
    let (_, v) = node.api("GET", "/admin/tenants", ADMIN_B, None).await;
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v[0]["name"], "beta");
    // Only super admins create tenants and see all stats.
    assert_eq!(
        node.api("POST", "/admin/tenants", ADMIN_A, Some(r#"{"name":"z"}"#))
            .await
            .0,
        403
    );
    assert_eq!(node.api("GET", "/admin/stats", ADMIN_A, None).await.0, 403);
    // A viewer reads but cannot write.
    assert_eq!(
        node.api("GET", "/admin/tenants/acme/services", VIEWER_A, None)
            .await
            .0,
        200
    );
    assert_eq!(
        node.api(
            "POST",
            "/admin/tenants/acme/consumers",
            VIEWER_A,
            Some(r#"{"name":"v"}"#)
        )
        .await
        .0,
        403
    );
    // Keys list never shows the key or its hash.
    let (_, keys) = node
        .api("GET", "/admin/tenants/acme/keys", ADMIN_A, None)
        .await;
    let text = keys.to_string();
    assert!(!text.contains(&key_a) && !text.contains("hash"), "{text}");

    for t in ["acme", "beta"] {
        node.api(
            "POST",
            &format!("/admin/tenants/{t}/subscriptions"),
            SUPER,
            Some(&format!(
                r#"{{"consumer":"c1","service":"{}"}}"#,
                if t == "acme" { "pay" } else { "maps" }
            )),
        )
        .await;
    }
    // Data plane: each key reaches its own tenant's service only.
    assert_eq!(node.call("pay", Some(&key_a)).await.0, 200);
    assert_eq!(node.call("maps", Some(&key_b)).await.0, 200);
    let (s, _, body, extra) = node.call("pay", Some(&key_b)).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("another tenant"), "{body}");
    // Logged for the owner of `pay` (acme sees the attempt on its service), without beta's
    // consumer or key, which acme may not see.
    assert_eq!(extra.tenant.as_deref(), Some("acme"), "{extra:?}");
    assert_eq!(extra.service.as_deref(), Some("pay"), "{extra:?}");
    assert_eq!((extra.consumer, extra.key_prefix), (None, None));
    // B's admin cannot revoke A's key.
    let prefix = &key_a[..11];
    assert_eq!(
        node.api(
            "POST",
            &format!("/admin/tenants/beta/keys/{prefix}/revoke"),
            ADMIN_B,
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(node.call("pay", Some(&key_a)).await.0, 200);
}

#[tokio::test]
async fn approval_workflow_end_to_end() {
    let (_dir, node, key) = acme_pay_node(r#"{"name":"pay","require_approval":true}"#).await;
    // Missing key, unknown key.
    let (s, h, _, _) = node.call("pay", None).await;
    assert_eq!(s, 401);
    assert!(h.contains_key("www-authenticate"));
    assert_eq!(node.call("pay", Some("hf_00000000_0000")).await.0, 401);
    // No subscription.
    let (s, _, body, _) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 403);
    assert!(body.contains("no subscription"), "{body}");
    // Subscribe: pending until approved.
    let (s, sub) = node
        .api(
            "POST",
            "/admin/tenants/acme/subscriptions",
            ADMIN_A,
            Some(r#"{"consumer":"c1","service":"pay"}"#),
        )
        .await;
    assert_eq!((s, sub["state"].as_str()), (201, Some("pending")), "{sub}");
    let (s, _, body, _) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 403);
    assert!(body.contains("waiting for approval"), "{body}");
    // A viewer cannot approve; the tenant admin can.
    let id = sub["id"].as_i64().expect("id");
    assert_eq!(
        node.api(
            "POST",
            &format!("/admin/tenants/acme/subscriptions/{id}/approve"),
            VIEWER_A,
            None
        )
        .await
        .0,
        403
    );
    let (s, v) = node
        .api(
            "POST",
            &format!("/admin/tenants/acme/subscriptions/{id}/approve"),
            ADMIN_A,
            None,
        )
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("active")), "{v}");
    let (s, _, body, extra) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(extra.tenant.as_deref(), Some("acme"));
    assert_eq!(extra.service_version.as_deref(), Some("v1"));
    assert_eq!(extra.key_prefix.as_deref(), Some(&key[..11]));
    // Retire v1: 410. Revoke the key: 401.
    let (s, _) = node
        .api(
            "PUT",
            "/admin/tenants/acme/services/pay/versions/v1",
            ADMIN_A,
            Some(r#"{"state":"retired"}"#),
        )
        .await;
    assert_eq!(s, 200);
    node.mgmt.refresh().await.expect("refresh");
    assert_eq!(node.call("pay@v1", Some(&key)).await.0, 410);
    node.api(
        "PUT",
        "/admin/tenants/acme/services/pay/versions/v2",
        ADMIN_A,
        Some(r#"{"state":"published"}"#),
    )
    .await;
    node.mgmt.refresh().await.expect("refresh");
    let (s, _, _, extra) = node.call("pay", Some(&key)).await;
    assert_eq!((s, extra.service_version.as_deref()), (200, Some("v2")));
    let (s, _) = node
        .api(
            "POST",
            &format!("/admin/tenants/acme/keys/{}/revoke", &key[..11]),
            ADMIN_A,
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _, body, _) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 401);
    assert!(body.contains("revoked"), "{body}");
}

#[tokio::test]
async fn rate_limit_answers_429_with_headers() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let key = provision(
        &node,
        ADMIN_A,
        "acme",
        "pay",
        r#"{"name":"pay","limits":{"rpm":5}}"#,
    )
    .await;
    node.api(
        "POST",
        "/admin/tenants/acme/subscriptions",
        ADMIN_A,
        Some(r#"{"consumer":"c1","service":"pay"}"#),
    )
    .await;
    let mut ok = 0;
    let mut refused = None;
    for _ in 0..8 {
        let (s, h, body, _) = node.call("pay", Some(&key)).await;
        match s {
            200 => ok += 1,
            429 => refused = Some((h, body)),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok, 5);
    let (h, body) = refused.expect("refused");
    let retry: u64 = h["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    assert!((1..=13).contains(&retry), "retry-after {retry}");
    assert_eq!(h["ratelimit-limit"], "5");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert!(body.contains("service pay"), "{body}");
}

/// A passed request carries the `RateLimit-*` headers of its tightest bucket, and the remaining
/// count goes down request by request (local GCRA path; the Redis path is in multinode.rs).
#[tokio::test]
async fn passed_requests_carry_ratelimit_headers_of_the_tightest_bucket() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    // Service: 100/s and 50/min; the consumer: 6/min (the tightest); the key: none.
    let key = provision(
        &node,
        ADMIN_A,
        "acme",
        "pay",
        r#"{"name":"pay","limits":{"rps":100,"rpm":50}}"#,
    )
    .await;
    let (s, v) = node
        .api(
            "POST",
            "/admin/tenants/acme/consumers",
            ADMIN_A,
            Some(r#"{"name":"c2","limits":{"rpm":6}}"#),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = node
        .api(
            "POST",
            "/admin/tenants/acme/consumers/c2/keys",
            ADMIN_A,
            Some("{}"),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let key2 = v["key"].as_str().expect("key").to_string();
    for consumer in ["c1", "c2"] {
        let (s, v) = node
            .api(
                "POST",
                "/admin/tenants/acme/subscriptions",
                ADMIN_A,
                Some(&format!(r#"{{"consumer":"{consumer}","service":"pay"}}"#)),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let num = |h: &http::HeaderMap, name: &str| -> u64 {
        h.get(name)
            .unwrap_or_else(|| panic!("{name} missing from {h:?}"))
            .to_str()
            .expect("ascii")
            .parse()
            .expect("number")
    };
    let mut remaining = Vec::new();
    for _ in 0..6 {
        let (s, h, body, _) = node.call("pay", Some(&key2)).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(
            num(&h, "ratelimit-limit"),
            6,
            "the consumer's 6/min is tightest"
        );
        assert_eq!(h["ratelimit-policy"], "6;w=60");
        let reset = num(&h, "ratelimit-reset");
        assert!((1..=60).contains(&reset), "reset {reset}");
        remaining.push(num(&h, "ratelimit-remaining"));
    }
    assert_eq!(remaining, vec![5, 4, 3, 2, 1, 0]);
    let (s, h, _, _) = node.call("pay", Some(&key2)).await;
    assert_eq!(s, 429);
    assert_eq!(num(&h, "ratelimit-remaining"), 0);
    assert_eq!(num(&h, "ratelimit-limit"), 6);
    assert!(num(&h, "retry-after") >= 1);

    // c1 has no limits of its own: the service's rpm (50) leaves fewer than its rps (100).
    let (s, h, _, _) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 200);
    assert_eq!(num(&h, "ratelimit-limit"), 50);
    // 6 requests of c2 were counted by the service's buckets too (and one refused by c2's).
    assert_eq!(num(&h, "ratelimit-remaining"), 50 - 8);
    assert_eq!(h["ratelimit-policy"], "50;w=60");
}

/// No limit applies: no `RateLimit-*` headers.
#[tokio::test]
async fn unlimited_requests_carry_no_ratelimit_headers() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let key = provision(&node, ADMIN_A, "acme", "pay", r#"{"name":"pay"}"#).await;
    node.api(
        "POST",
        "/admin/tenants/acme/subscriptions",
        ADMIN_A,
        Some(r#"{"consumer":"c1","service":"pay"}"#),
    )
    .await;
    let (s, h, body, extra) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 200, "{body}");
    assert!(h.get("ratelimit-limit").is_none(), "{h:?}");
    assert_eq!(extra.consumer.as_deref(), Some("c1"));
    assert_eq!(extra.service.as_deref(), Some("pay"));
}

/// A reload (the factory building plugins from a new config) changes the key header, global
/// limits and admin tokens; guards built before keep the settings they were built with.
#[tokio::test]
async fn reload_applies_management_settings() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = sqlite_node(&dir).await;
    let key = provision(&node, ADMIN_A, "acme", "pay", r#"{"name":"pay"}"#).await;
    let (s, v) = node
        .api(
            "POST",
            "/admin/tenants/acme/subscriptions",
            ADMIN_A,
            Some(r#"{"consumer":"c1","service":"pay"}"#),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(node.call("pay", Some(&key)).await.0, 200);

    let mut cfg = node.mgmt.config();
    cfg.key_header = "x-api-key".into();
    cfg.global_rps = Some(2);
    cfg.admin_tokens.retain(|t| t.token == SUPER);
    // Needs a restart: logged, and the running store stays.
    cfg.store = StoreUrl::Sqlite(dir.path().join("other.db").to_string_lossy().into_owned());
    let reloaded = ManagementFactory(node.mgmt.clone())
        .build(&Config {
            management: Some(cfg),
            ..Config::default()
        })
        .expect("reload accepted");
    let before = std::mem::replace(&mut node.plugins, reloaded);

    let (s, _, body, _) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("`x-api-key`"), "{body}");
    let header = || Some(("x-api-key", key.clone()));
    assert_eq!(node.call_with("pay", header()).await.0, 200);
    assert_eq!(node.call_with("pay", header()).await.0, 200);
    let (s, _, body, _) = node.call_with("pay", header()).await;
    assert_eq!(s, 429, "{body}");
    assert!(
        body.contains("global limit: 2 requests per second"),
        "{body}"
    );
    // The admin API follows the reload; the store did not change.
    assert_eq!(
        node.api("GET", "/admin/tenants/acme/keys", ADMIN_A, None)
            .await
            .0,
        401
    );
    let (s, v) = node
        .api("GET", "/admin/tenants/acme/keys", SUPER, None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    assert!(!dir.path().join("other.db").exists());

    // A guard built before the reload still works with its own settings.
    node.plugins = before;
    assert_eq!(node.call("pay", Some(&key)).await.0, 200);

    // Removing [management] on reload is refused (it would open every `service` route).
    let refused = ManagementFactory(node.mgmt.clone()).build(&Config::default());
    assert!(refused.err().is_some_and(|e| e.contains("restart")));
}

#[tokio::test]
async fn graceful_stop_writes_every_call_and_stats_see_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let now = holdfast_store::now_ms();
    for i in 0..3000 {
        let rec = CallRecord {
            ts_ms: now,
            route: "r1".into(),
            method: "GET".into(),
            path: "/x".into(),
            status: if i % 4 == 0 { 503 } else { 200 },
            total_ms: 2.0,
            extra: CallExtra {
                tenant: Some("acme".into()),
                consumer: Some(format!("c{}", i % 3)),
                ..CallExtra::default()
            },
            ..CallRecord::default()
        };
        for o in &node.plugins.observers {
            o.on_call(&rec);
        }
    }
    node.mgmt.shutdown().await;
    let stats = node.mgmt.call_log_stats();
    assert_eq!((stats.written, stats.overflow), (3000, 0), "{stats:?}");
    let (s, v) = node
        .api(
            "GET",
            "/admin/tenants/acme/stats?since=1h&bucket=1m",
            VIEWER_A,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["calls"], 3000);
    assert_eq!(v["errors"], 750);
    assert_eq!(v["top_consumers"].as_array().map(Vec::len), Some(3));
    let (_, v) = node
        .api("GET", "/admin/tenants/beta/stats", ADMIN_B, None)
        .await;
    assert_eq!(v["calls"], 0, "tenant B sees none of A's calls");
}

#[tokio::test]
async fn openapi_document_lists_every_operation() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let resp = reqwest::get(format!("{}/admin/openapi.json", node.admin))
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    let doc: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/admin/tenants",
        "/admin/tenants/{tenant}/subscriptions/{id}/approve",
        "/admin/tenants/{tenant}/stats",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
}

fn ai_call(key_prefix: &str, tokens: u64) -> CallRecord {
    CallRecord {
        ts_ms: holdfast_store::now_ms(),
        route: "r1".into(),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        status: 200,
        total_ms: 5.0,
        extra: CallExtra {
            tenant: Some("acme".into()),
            service: Some("chat".into()),
            consumer: Some("c1".into()),
            key_prefix: Some(key_prefix.into()),
            ai: Some(holdfast_core::AiUsage {
                model_requested: "smart".into(),
                input_tokens: tokens / 2,
                output_tokens: tokens - tokens / 2,
                cost_usd: 0.001,
                ..holdfast_core::AiUsage::default()
            }),
            ..CallExtra::default()
        },
        ..CallRecord::default()
    }
}

#[tokio::test]
async fn token_budget_refuses_once_used_up() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let (s, v) = node
        .api(
            "POST",
            "/admin/tenants/acme/services",
            ADMIN_A,
            Some(r#"{"name":"chat"}"#),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    node.api(
        "POST",
        "/admin/tenants/acme/consumers",
        ADMIN_A,
        Some(r#"{"name":"c1"}"#),
    )
    .await;
    let (s, v) = node
        .api(
            "POST",
            "/admin/tenants/acme/consumers/c1/keys",
            ADMIN_A,
            Some(r#"{"limits":{"tokens_per_min":1000}}"#),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let key = v["key"].as_str().expect("key").to_string();
    node.api(
        "POST",
        "/admin/tenants/acme/subscriptions",
        ADMIN_A,
        Some(r#"{"consumer":"c1","service":"chat"}"#),
    )
    .await;
    assert_eq!(node.call("chat", Some(&key)).await.0, 200);
    for o in &node.plugins.observers {
        o.on_call(&ai_call(&key[..11], 600));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    // 600 of 1000 used: still allowed. The counting is asynchronous; wait for it.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(node.call("chat", Some(&key)).await.0, 200);
    for o in &node.plugins.observers {
        o.on_call(&ai_call(&key[..11], 500));
    }
    loop {
        let (s, h, body, _) = node.call("chat", Some(&key)).await;
        if s == 429 {
            assert!(body.contains("token budget"), "{body}");
            assert!(h.contains_key("retry-after"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "budget never enforced"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    node.mgmt.shutdown().await;
    let (_, v) = node
        .api("GET", "/admin/tenants/acme/stats", ADMIN_A, None)
        .await;
    assert_eq!(v["usage"][0]["tokens"], 1100, "{v}");
    assert_eq!(v["usage"][0]["model"], "smart", "{v}");
}

#[tokio::test]
async fn expired_key_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    provision(&node, ADMIN_A, "acme", "pay", r#"{"name":"pay"}"#).await;
    let (s, v) = node
        .api(
            "POST",
            "/admin/tenants/acme/consumers/c1/keys",
            ADMIN_A,
            Some(r#"{"expires_in_s":1}"#),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let key = v["key"].as_str().expect("key").to_string();
    node.api(
        "POST",
        "/admin/tenants/acme/subscriptions",
        ADMIN_A,
        Some(r#"{"consumer":"c1","service":"pay"}"#),
    )
    .await;
    assert_eq!(node.call("pay", Some(&key)).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (s, _, body, _) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 401);
    assert!(body.contains("expired"), "{body}");
}

#[tokio::test]
async fn call_log_overflow_is_counted_not_silent() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("m.db").to_string_lossy().into_owned();
    let mut cfg = config(StoreUrl::Sqlite(path), "acme", "beta");
    cfg.call_log_buffer = 16;
    cfg.flush_interval_ms = 60_000;
    let node = Node::start(cfg).await;
    let rec = CallRecord {
        extra: CallExtra {
            tenant: Some("acme".into()),
            ..CallExtra::default()
        },
        ..CallRecord::default()
    };
    for _ in 0..1000 {
        for o in &node.plugins.observers {
            o.on_call(&rec);
        }
    }
    node.mgmt.shutdown().await;
    let stats = node.mgmt.call_log_stats();
    assert!(stats.overflow > 0, "{stats:?}");
    assert_eq!(stats.written + stats.overflow, 1000, "{stats:?}");
    let (_, v) = node.api("GET", "/admin/calllog", SUPER, None).await;
    assert_eq!(v["writer"]["overflow"], stats.overflow, "{v}");
}
