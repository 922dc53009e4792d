//! The OpenAPI document's success schemas match what the admin API really answers: every
//! operation is called on a real node (SQLite store, loopback listener) and each JSON body is
//! checked against the schema the document declares for that operation and status.
//!
//! The checker below covers the subset of JSON Schema the document uses (`$ref`, `type` with
//! `null` in a type list, `properties`, `required`, `additionalProperties`, `items`, `enum`,
//! `minimum`, `maximum`); a keyword it does not know fails the test rather than being skipped.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use holdfast_core::config::management::StoreUrl;
use holdfast_core::{AiUsage, CallExtra, CallRecord, ResetClass};
use serde_json::{json, Value};

/// Keywords that only annotate (or constrain strings the responses do not use): not checked.
const ANNOTATIONS: &[&str] = &["description", "format", "title", "default", "pattern"];

/// The schema `$ref` points to (`#/components/schemas/NAME`).
fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let name = reference
        .strip_prefix("#/components/schemas/")
        .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
    let s = &doc["components"]["schemas"][name];
    assert!(s.is_object(), "$ref {reference} does not resolve");
    s
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unknown type {other}"),
    }
}

/// Check `v` against `schema`; every disagreement is pushed to `errors` with its JSON path.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => return errors.push(format!("{at}: not allowed here")),
            other => panic!("{at}: schema {other} is not an object"),
        }
    };
    for (keyword, arg) in schema {
        match keyword.as_str() {
            "$ref" => validate(doc, resolve(doc, arg.as_str().unwrap()), v, at, errors),
            "type" => {
                let types: Vec<&str> = match arg {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
                    other => panic!("{at}: bad type {other}"),
                };
                if !types.iter().any(|t| type_matches(t, v)) {
                    errors.push(format!("{at}: {v} is not of type {arg}"));
                }
            }
            "enum" => {
                if !arg.as_array().unwrap().contains(v) {
                    errors.push(format!("{at}: {v} is not one of {arg}"));
                }
            }
            "minimum" | "maximum" => {
                if let (Some(x), Some(bound)) = (v.as_f64(), arg.as_f64()) {
                    let bad = if keyword == "minimum" {
                        x < bound
                    } else {
                        x > bound
                    };
                    if bad {
                        errors.push(format!("{at}: {v} is outside {keyword} {bound}"));
                    }
                }
            }
            "required" => {
                if let Some(o) = v.as_object() {
                    for k in arg.as_array().unwrap() {
                        let k = k.as_str().unwrap();
                        if !o.contains_key(k) {
                            errors.push(format!("{at}: required `{k}` is missing"));
                        }
                    }
                }
            }
            "properties" => {
                if let Some(o) = v.as_object() {
                    for (k, sub) in arg.as_object().unwrap() {
                        if let Some(x) = o.get(k) {
                            validate(doc, sub, x, &format!("{at}.{k}"), errors);
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(o) = v.as_object() {
                    let known = schema.get("properties").and_then(Value::as_object);
                    for (k, x) in o {
                        if !known.is_some_and(|p| p.contains_key(k)) {
                            validate(doc, arg, x, &format!("{at}.{k}"), errors);
                        }
                    }
                }
            }
            "items" => {
                if let Some(a) = v.as_array() {
                    for (i, x) in a.iter().enumerate() {
                        validate(doc, arg, x, &format!("{at}[{i}]"), errors);
                    }
                }
            }
            k if ANNOTATIONS.contains(&k) => {}
            other => panic!("{at}: the checker does not know the keyword `{other}`"),
        }
    }
}

fn errors_of(doc: &Value, schema: &Value, v: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    validate(doc, schema, v, "$", &mut errors);
    errors
}

/// Every `$ref` in `v` resolves, and no 3.0-only `nullable` is left (3.1 says `"type": [.., "null"]`).
fn check_refs(doc: &Value, v: &Value, refs: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            assert!(!o.contains_key("nullable"), "`nullable` is not OpenAPI 3.1");
            for (k, x) in o {
                if k == "$ref" {
                    let r = x.as_str().expect("$ref is a string");
                    resolve(doc, r);
                    refs.insert(r.to_string());
                } else {
                    check_refs(doc, x, refs);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| check_refs(doc, x, refs)),
        _ => {}
    }
}

/// The checked calls of one test, and which operations of the document they covered.
struct Checker<'a> {
    node: &'a Node,
    doc: Value,
    covered: BTreeSet<(String, String)>,
}

impl Checker<'_> {
    /// The success status and schema the document declares for an operation.
    fn success(&self, method: &str, template: &str) -> (u16, Value) {
        let op = &self.doc["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not in the document");
        let ok: Vec<(&String, &Value)> = op["responses"]
            .as_object()
            .expect("responses")
            .iter()
            .filter(|(s, _)| s.starts_with('2'))
            .collect();
        assert_eq!(ok.len(), 1, "{method} {template}: one success response");
        let (status, resp) = ok[0];
        let schema = resp["content"]["application/json"]["schema"].clone();
        assert!(
            schema.is_object(),
            "{method} {template}: the success response has no JSON schema"
        );
        (status.parse().expect("status"), schema)
    }

    /// Call `method path` (an instance of `template`) and check the answer's status and body
    /// against the document; returns the body.
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        token: &str,
        body: Option<&str>,
    ) -> Value {
        let (status, schema) = self.success(method, template);
        let (s, v) = self
            .node
            .api(&method.to_uppercase(), path, token, body)
            .await;
        assert_eq!(s, status, "{method} {path}: {v}");
        let errors = errors_of(&self.doc, &schema, &v);
        assert!(
            errors.is_empty(),
            "{method} {path} answers what its schema ({schema}) does not describe:\n  {}\nbody: {v}",
            errors.join("\n  ")
        );
        self.covered.insert((method.into(), template.into()));
        v
    }
}

fn call_record(consumer: &str, service: &str, status: u16, ai: Option<(&str, u64)>) -> CallRecord {
    CallRecord {
        ts_ms: holdfast_store::now_ms(),
        route: format!("r-{service}"),
        method: "POST".into(),
        path: "/v1/x".into(),
        status,
        total_ms: 3.5,
        reset_class: (status == 0).then_some(ResetClass::UpstreamTimeout),
        extra: CallExtra {
            tenant: Some("acme".into()),
            service: Some(service.into()),
            consumer: Some(consumer.into()),
            ai: ai.map(|(model, tokens)| AiUsage {
                model_requested: model.into(),
                input_tokens: tokens / 2,
                output_tokens: tokens - tokens / 2,
                cost_usd: 0.002,
                ..AiUsage::default()
            }),
            ..CallExtra::default()
        },
        ..CallRecord::default()
    }
}

#[tokio::test]
async fn every_success_answer_matches_its_declared_schema() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("m.db").to_string_lossy().into_owned();
    let node = Node::start(config(StoreUrl::Sqlite(path), "acme", "beta")).await;
    let doc: Value = reqwest::get(format!("{}/admin/openapi.json", node.admin))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");

    // The document itself: 3.1, every $ref resolves, every component schema is used.
    assert_eq!(doc["openapi"], "3.1.0");
    let mut refs = BTreeSet::new();
    check_refs(&doc, &doc, &mut refs);
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            refs.contains(&format!("#/components/schemas/{name}")),
            "component schema {name} is never used"
        );
    }

    let mut c = Checker {
        node: &node,
        doc: doc.clone(),
        covered: BTreeSet::new(),
    };
    let tenant = "/admin/tenants/{tenant}";

    // Tenants.
    c.call(
        "post",
        "/admin/tenants",
        "/admin/tenants",
        SUPER,
        Some(r#"{"name":"acme"}"#),
    )
    .await;
    let v = c
        .call("get", "/admin/tenants", "/admin/tenants", SUPER, None)
        .await;
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    c.call("get", tenant, "/admin/tenants/acme", VIEWER_A, None)
        .await;

    // Services: with limits, approval and several versions; and one with the defaults.
    let services = "/admin/tenants/{tenant}/services";
    let service = "/admin/tenants/{tenant}/services/{service}";
    let v = c
        .call(
            "post",
            services,
            "/admin/tenants/acme/services",
            ADMIN_A,
            Some(
                r#"{"name":"pay","require_approval":true,"limits":{"rps":5,"tokens_per_day":1000},
                    "versions":[{"version":"v1","state":"published"},{"version":"v2","state":"draft"}]}"#,
            ),
        )
        .await;
    assert_eq!(v["versions"].as_array().map(Vec::len), Some(2), "{v}");
    c.call(
        "post",
        services,
        "/admin/tenants/acme/services",
        ADMIN_A,
        Some(r#"{"name":"open"}"#),
    )
    .await;
    let v = c
        .call(
            "get",
            services,
            "/admin/tenants/acme/services",
            VIEWER_A,
            None,
        )
        .await;
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    c.call(
        "get",
        service,
        "/admin/tenants/acme/services/pay",
        VIEWER_A,
        None,
    )
    .await;
    c.call(
        "patch",
        service,
        "/admin/tenants/acme/services/pay",
        ADMIN_A,
        Some(r#"{"limits":{"rpm":100}}"#),
    )
    .await;
    let v = c
        .call(
            "put",
            "/admin/tenants/{tenant}/services/{service}/versions/{version}",
            "/admin/tenants/acme/services/pay/versions/v3",
            ADMIN_A,
            Some(r#"{"state":"deprecated"}"#),
        )
        .await;
    assert_eq!(v["versions"].as_array().map(Vec::len), Some(3), "{v}");

    // Consumers.
    let consumers = "/admin/tenants/{tenant}/consumers";
    let consumer = "/admin/tenants/{tenant}/consumers/{consumer}";
    for body in [r#"{"name":"c1","limits":{"rps":2}}"#, r#"{"name":"c2"}"#] {
        c.call(
            "post",
            consumers,
            "/admin/tenants/acme/consumers",
            ADMIN_A,
            Some(body),
        )
        .await;
    }
    c.call(
        "get",
        consumers,
        "/admin/tenants/acme/consumers",
        VIEWER_A,
        None,
    )
    .await;
    c.call(
        "get",
        consumer,
        "/admin/tenants/acme/consumers/c1",
        VIEWER_A,
        None,
    )
    .await;
    c.call(
        "patch",
        consumer,
        "/admin/tenants/acme/consumers/c1",
        ADMIN_A,
        Some(r#"{"limits":{"tokens_per_month":5000,"tokens_per_min":10}}"#),
    )
    .await;

    // Keys: without and with an expiry, changed, revoked.
    let issue = "/admin/tenants/{tenant}/consumers/{consumer}/keys";
    let plain = c
        .call(
            "post",
            issue,
            "/admin/tenants/acme/consumers/c1/keys",
            ADMIN_A,
            Some("{}"),
        )
        .await;
    assert!(plain["expires_ms"].is_null(), "{plain}");
    let expiring = c
        .call(
            "post",
            issue,
            "/admin/tenants/acme/consumers/c1/keys",
            ADMIN_A,
            Some(r#"{"expires_in_s":3600,"limits":{"rps":1}}"#),
        )
        .await;
    assert!(expiring["expires_ms"].is_i64(), "{expiring}");
    let prefix = plain["prefix"].as_str().expect("prefix").to_string();
    let key = "/admin/tenants/{tenant}/keys/{prefix}";
    let v = c
        .call(
            "patch",
            key,
            &format!("/admin/tenants/acme/keys/{prefix}"),
            ADMIN_A,
            Some(r#"{"expires_in_s":60,"limits":{"rpm":7}}"#),
        )
        .await;
    assert!(v["expires_ms"].is_i64(), "{v}");
    let v = c
        .call(
            "patch",
            key,
            &format!("/admin/tenants/acme/keys/{prefix}"),
            ADMIN_A,
            Some(r#"{"expires_in_s":null}"#),
        )
        .await;
    assert!(v["expires_ms"].is_null(), "{v}");
    let revoked = c
        .call(
            "post",
            "/admin/tenants/{tenant}/keys/{prefix}/revoke",
            &format!("/admin/tenants/acme/keys/{prefix}/revoke"),
            ADMIN_A,
            None,
        )
        .await;
    assert!(revoked["revoked_ms"].is_i64(), "{revoked}");
    let v = c
        .call(
            "get",
            "/admin/tenants/{tenant}/keys",
            "/admin/tenants/acme/keys",
            VIEWER_A,
            None,
        )
        .await;
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");

    // Subscriptions: pending ones approved and rejected, an active one deleted.
    let subs = "/admin/tenants/{tenant}/subscriptions";
    let mut ids = Vec::new();
    for (who, svc) in [("c1", "pay"), ("c2", "pay"), ("c1", "open")] {
        let v = c
            .call(
                "post",
                subs,
                "/admin/tenants/acme/subscriptions",
                ADMIN_A,
                Some(&format!(r#"{{"consumer":"{who}","service":"{svc}"}}"#)),
            )
            .await;
        ids.push(v["id"].as_i64().expect("id"));
    }
    let v = c
        .call(
            "post",
            "/admin/tenants/{tenant}/subscriptions/{id}/approve",
            &format!("/admin/tenants/acme/subscriptions/{}/approve", ids[0]),
            ADMIN_A,
            None,
        )
        .await;
    assert_eq!(
        (v["state"].as_str(), v["decided_ms"].is_i64()),
        (Some("active"), true),
        "{v}"
    );
    c.call(
        "post",
        "/admin/tenants/{tenant}/subscriptions/{id}/reject",
        &format!("/admin/tenants/acme/subscriptions/{}/reject", ids[1]),
        ADMIN_A,
        None,
    )
    .await;
    let v = c
        .call(
            "get",
            subs,
            "/admin/tenants/acme/subscriptions",
            VIEWER_A,
            None,
        )
        .await;
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{v}");

    // Calls in the log, so that every list of the analytics has entries; beta has a `c1` too.
    let mut beta_c1 = call_record("c1", "maps", 200, Some(("smart", 50)));
    beta_c1.extra.tenant = Some("beta".into());
    let records = [
        call_record("c1", "pay", 200, Some(("smart", 600))),
        call_record("c1", "pay", 503, Some(("fast", 100))),
        call_record("c2", "open", 0, None),
        call_record("c2", "open", 200, None),
        beta_c1,
    ];
    for rec in &records {
        for o in &node.plugins.observers {
            o.on_call(rec);
        }
    }
    let mut written = 0;
    for _ in 0..100 {
        let v = c
            .call("get", "/admin/calllog", "/admin/calllog", SUPER, None)
            .await;
        written = v["writer"]["written"].as_u64().unwrap_or(0);
        if written >= records.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(written, records.len() as u64, "the call log is written");

    let stats = "/admin/tenants/{tenant}/stats";
    let v = c
        .call("get", stats, "/admin/tenants/acme/stats", VIEWER_A, None)
        .await;
    assert!(v.get("call_log").is_none(), "{v}");
    for list in [
        "buckets",
        "top_consumers",
        "top_services",
        "top_routes",
        "usage",
    ] {
        assert!(!v[list].as_array().unwrap().is_empty(), "{list}: {v}");
    }
    assert!(!v["resets_by_class"].as_object().unwrap().is_empty(), "{v}");
    assert!(!v["calls_by_node"].as_object().unwrap().is_empty(), "{v}");
    let v = c
        .call(
            "get",
            stats,
            "/admin/tenants/acme/stats?since=1d&bucket=1h&top=3",
            SUPER,
            None,
        )
        .await;
    assert!(v["call_log"].is_object(), "{v}");
    // Every bucket of the window, the empty ones with null percentiles (the schema allows it).
    let buckets = v["buckets"].as_array().expect("buckets");
    assert!((24..=26).contains(&buckets.len()), "{v}");
    let starts: Vec<i64> = buckets
        .iter()
        .map(|b| b["start_ms"].as_i64().unwrap())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] == 3_600_000),
        "{starts:?}"
    );
    let empty = &buckets[0];
    assert_eq!(
        (&empty["calls"], &empty["errors"]),
        (&json!(0), &json!(0)),
        "{v}"
    );
    assert!(
        empty["p50_ms"].is_null() && empty["p99_ms"].is_null(),
        "{v}"
    );
    let busy: Vec<&Value> = buckets.iter().filter(|b| b["calls"] != 0).collect();
    let calls: u64 = busy.iter().map(|b| b["calls"].as_u64().unwrap()).sum();
    assert_eq!(calls, 4, "{v}");
    assert!(busy.iter().all(|b| b["p50_ms"] == 3.5), "{v}");
    // One tenant's stats name consumers bare.
    let names: Vec<&str> = v["top_consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c1", "c2"], "{v}");

    // Stats of every tenant: acme's c1 and beta's c1 are two consumers, `tenant/consumer`.
    let v = c
        .call("get", "/admin/stats", "/admin/stats", SUPER, None)
        .await;
    let top: Vec<(&str, u64)> = v["top_consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["calls"].as_u64().unwrap()))
        .collect();
    assert_eq!(top, [("acme/c1", 2), ("acme/c2", 2), ("beta/c1", 1)], "{v}");
    let usage: Vec<(&str, &str, u64)> = v["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["consumer"].as_str().unwrap(),
                u["model"].as_str().unwrap(),
                u["tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        usage,
        [
            ("acme/c1", "fast", 100),
            ("acme/c1", "smart", 600),
            ("beta/c1", "smart", 50)
        ],
        "{v}"
    );
    // 1 h in 1 m buckets: 61 (the first and the last are partial; 62 if a minute began
    // between the query and the answer).
    let n = v["buckets"].as_array().map_or(0, Vec::len);
    assert!(n == 61 || n == 62, "{n} buckets: {v}");
    // A window of too many buckets is a clear 400 naming the field.
    let (s, v) = node
        .api("GET", "/admin/stats?since=7d&bucket=1s", SUPER, None)
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["field"], "bucket", "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("since 7d with bucket 1s makes 6048") && msg.contains("at least 31s"),
        "{v}"
    );
    let (s, v) = node
        .api(
            "GET",
            "/admin/tenants/acme/stats?since=7d&bucket=1m",
            VIEWER_A,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    c.call(
        "post",
        "/admin/calllog/prune",
        "/admin/calllog/prune?older_than=1d",
        SUPER,
        None,
    )
    .await;

    // Deletions, the tenant last (forced: it still has services and consumers).
    c.call(
        "delete",
        "/admin/tenants/{tenant}/subscriptions/{id}",
        &format!("/admin/tenants/acme/subscriptions/{}", ids[2]),
        ADMIN_A,
        None,
    )
    .await;
    c.call(
        "delete",
        service,
        "/admin/tenants/acme/services/open",
        ADMIN_A,
        None,
    )
    .await;
    c.call(
        "delete",
        consumer,
        "/admin/tenants/acme/consumers/c2",
        ADMIN_A,
        None,
    )
    .await;
    c.call(
        "delete",
        tenant,
        "/admin/tenants/acme?force=true",
        SUPER,
        None,
    )
    .await;

    // Every operation of the document was called and checked.
    let mut missing = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            if !c.covered.contains(&(method.clone(), path.clone())) {
                missing.push(format!("{method} {path}"));
            }
        }
    }
    assert!(missing.is_empty(), "not checked: {missing:?}");

    // The checker does catch a body its schema does not describe.
    let (_, key_schema) = c.success("post", issue);
    assert!(errors_of(&doc, &key_schema, &expiring).is_empty());
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut v = expiring.clone();
        edit(&mut v);
        errors_of(&doc, &key_schema, &v)
    };
    for (what, edit) in [
        (
            "missing field",
            &(|v: &mut Value| {
                v.as_object_mut().unwrap().remove("created_ms");
            }) as &dyn Fn(&mut Value),
        ),
        ("extra field", &|v: &mut Value| v["colour"] = json!("red")),
        ("wrong type", &|v: &mut Value| {
            v["expires_ms"] = json!("soon")
        }),
        ("null key", &|v: &mut Value| v["key"] = Value::Null),
        ("bad limit", &|v: &mut Value| v["limits"]["rps"] = json!(0)),
        ("unknown limit", &|v: &mut Value| {
            v["limits"]["rph"] = json!(5)
        }),
        ("float", &|v: &mut Value| v["created_ms"] = json!(1.5)),
    ] {
        assert!(!broken(edit).is_empty(), "{what} is not caught");
    }
    let (_, sub_schema) = c.success("get", subs);
    let bad_state = json!([{ "id": 1, "tenant": "acme", "consumer": "c1", "service": "pay",
        "state": "approved", "created_ms": 1, "decided_ms": null }]);
    assert_eq!(errors_of(&doc, &sub_schema, &bad_state).len(), 1);
}
