//! Test support: a Management instance on a real store, its admin API on a real loopback
//! listener, and direct calls of its request guard.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_admin::{Management, ManagementFactory};
use holdfast_core::config::management::{AdminRole, AdminToken, ManagementConfig, StoreUrl};
use holdfast_core::config::Config;
use holdfast_core::{CallExtra, CallRecord};
use holdfast_proxy::plugin::{PluginFactory, Plugins, RequestContext};
use serde_json::Value;

pub const SUPER: &str = "super-token-0123456789abcdef";
pub const ADMIN_A: &str = "admin-a-token-0123456789abcdef";
pub const VIEWER_A: &str = "viewer-a-token-0123456789abcdef";
pub const ADMIN_B: &str = "admin-b-token-0123456789abcdef";

pub fn config(store: StoreUrl, tenant_a: &str, tenant_b: &str) -> ManagementConfig {
    let tok = |token: &str, role, tenant: Option<&str>| AdminToken {
        token: token.into(),
        role,
        tenant: tenant.map(str::to_string),
    };
    ManagementConfig {
        store,
        secret: "test-secret-0123456789abcdef".into(),
        flush_interval_ms: 100,
        cache_refresh_ms: 200,
        admin_tokens: vec![
            tok(SUPER, AdminRole::SuperAdmin, None),
            tok(ADMIN_A, AdminRole::TenantAdmin, Some(tenant_a)),
            tok(VIEWER_A, AdminRole::Viewer, Some(tenant_a)),
            tok(ADMIN_B, AdminRole::TenantAdmin, Some(tenant_b)),
        ],
        ..ManagementConfig::default()
    }
}

/// A running node: management, its admin API address, and its plugins.
pub struct Node {
    pub mgmt: Arc<Management>,
    pub admin: String,
    pub plugins: Plugins,
    pub http: reqwest::Client,
}

impl Node {
    pub async fn start(cfg: ManagementConfig) -> Node {
        Node::start_as(cfg, "node-1").await
    }

    pub async fn start_as(cfg: ManagementConfig, name: &str) -> Node {
        let mgmt = Management::start_as(&cfg, name)
            .await
            .expect("management starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = mgmt.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let config = Config {
            management: Some(cfg),
            ..Config::default()
        };
        let plugins = ManagementFactory(mgmt.clone())
            .build(&config)
            .expect("plugins");
        Node {
            mgmt,
            admin: format!("http://{addr}"),
            plugins,
            http: reqwest::Client::new(),
        }
    }

    /// Call the admin API; returns (status, JSON body).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("admin API answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Run the guard for a request to a route of `service` with API key `key`.
    /// Returns the status (200 when let through), headers, body and the filled extra.
    pub async fn call(
        &self,
        service: &str,
        key: Option<&str>,
    ) -> (u16, http::HeaderMap, String, CallExtra) {
        let header = key.map(|k| ("authorization", format!("Bearer {k}")));
        self.call_with(service, header).await
    }

    /// [`Node::call`] with the key in any header (`None`: no key).
    pub async fn call_with(
        &self,
        service: &str,
        header: Option<(&str, String)>,
    ) -> (u16, http::HeaderMap, String, CallExtra) {
        let mut b = http::Request::builder().uri("/x");
        if let Some((name, value)) = header {
            b = b.header(name, value);
        }
        let (parts, ()) = b.body(()).expect("request").into_parts();
        let ctx = RequestContext {
            route: "r1".into(),
            service: Some(service.into()),
            client_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            start: Instant::now(),
            extra: Arc::new(Mutex::new(CallExtra::default())),
        };
        let mut added = http::HeaderMap::new();
        for g in &self.plugins.guards {
            match g.check(&parts, &ctx).await {
                Ok(headers) => added.extend(headers.unwrap_or_default()),
                Err(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    let body = http_body_util::BodyExt::collect(resp.into_body())
                        .await
                        .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
                        .unwrap_or_default();
                    // The extra a refusal filled (what the call log records).
                    let extra = ctx.extra.lock().expect("extra").clone();
                    return (status, headers, body, extra);
                }
            }
        }
        let extra = ctx.extra.lock().expect("extra").clone();
        // 200 stands for "let through"; the headers are those the gateway adds to its answer.
        (200, added, String::new(), extra)
    }
}

/// Set up tenant `t` with service `svc`, consumer `c1` and a key; returns the key.
pub async fn provision(node: &Node, token: &str, t: &str, svc: &str, service_body: &str) -> String {
    let (s, v) = node
        .api(
            "POST",
            &format!("/admin/tenants/{t}/services"),
            token,
            Some(service_body),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let _ = svc;
    let (s, v) = node
        .api(
            "POST",
            &format!("/admin/tenants/{t}/consumers"),
            token,
            Some(r#"{"name":"c1"}"#),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = node
        .api(
            "POST",
            &format!("/admin/tenants/{t}/consumers/c1/keys"),
            token,
            Some("{}"),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v["key"].as_str().expect("key shown once").to_string()
}

/// A SQLite node (see [`sqlite_node`]) with service `pay` of tenant `acme` made from
/// `service_body` and a key of consumer `c1`: (the directory to keep, the node, the key).
pub async fn acme_pay_node(service_body: &str) -> (tempfile::TempDir, Node, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let node = sqlite_node(&dir).await;
    let key = provision(&node, ADMIN_A, "acme", "pay", service_body).await;
    (dir, node, key)
}

/// Ask to subscribe `consumer` of tenant `acme` to `service`: the answer (status, body).
pub async fn subscription(node: &Node, consumer: &str, service: &str) -> (u16, Value) {
    node.api(
        "POST",
        "/admin/tenants/acme/subscriptions",
        ADMIN_A,
        Some(&format!(
            r#"{{"consumer":"{consumer}","service":"{service}"}}"#
        )),
    )
    .await
}

/// Subscribe `consumer` of tenant `acme` to `service` (201 expected); returns the subscription.
pub async fn subscribe(node: &Node, consumer: &str, service: &str) -> Value {
    let (s, v) = subscription(node, consumer, service).await;
    assert_eq!(s, 201, "{v}");
    v
}

/// Put `version` of tenant `acme`'s `service` in `state` (200 expected).
pub async fn set_version_state(node: &Node, service: &str, version: &str, state: &str) {
    let (s, v) = node
        .api(
            "PUT",
            &format!("/admin/tenants/acme/services/{service}/versions/{version}"),
            ADMIN_A,
            Some(&format!(r#"{{"state":"{state}"}}"#)),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

/// A node on a SQLite file in `dir`, with tenants `acme` and `beta` created.
pub async fn sqlite_node(dir: &tempfile::TempDir) -> Node {
    let path = dir.path().join("m.db").to_string_lossy().into_owned();
    let node = Node::start(config(StoreUrl::Sqlite(path), "acme", "beta")).await;
    for t in ["acme", "beta"] {
        let (s, v) = node
            .api(
                "POST",
                "/admin/tenants",
                SUPER,
                Some(&format!(r#"{{"name":"{t}"}}"#)),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    node
}

/// A successful call record of consumer `c1` to `svc`, now.
pub fn record(tenant: &str, svc: &str) -> CallRecord {
    CallRecord {
        ts_ms: holdfast_store::now_ms(),
        route: "r1".into(),
        method: "GET".into(),
        path: "/".into(),
        status: 200,
        total_ms: 1.0,
        extra: CallExtra {
            tenant: Some(tenant.into()),
            service: Some(svc.into()),
            consumer: Some("c1".into()),
            ..CallExtra::default()
        },
        ..CallRecord::default()
    }
}

/// Hand `rec` to every call observer of `node`, `n` times.
pub fn push(node: &Node, rec: &CallRecord, n: usize) {
    for _ in 0..n {
        for o in &node.plugins.observers {
            o.on_call(rec);
        }
    }
}

/// Wait (up to 5 s) until `node` accepts `key` on `svc`: it learned of the key.
pub async fn wait_until_accepted(node: &Node, svc: &str, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.call(svc, Some(key)).await.0 != 200 {
        assert!(Instant::now() < deadline, "node 2 never learned the key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
