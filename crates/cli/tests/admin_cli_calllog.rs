//! `holdfast admin calllog` / `prune` and readable tables (`stats` costs, times and sub-ms
//! latencies; `key issue` limits), errors without a backtrace under `RUST_BACKTRACE=1`; and
//! `holdfast check` on management mistakes (duplicate admin tokens, bad `service` values, a
//! `service` route without `[management]`).

mod admin_support;

use holdfast_core::config::management::ManagementConfig;
use holdfast_core::config::Config;
use holdfast_core::{AiUsage, CallExtra, CallRecord};
use holdfast_proxy::plugin::PluginFactory;
use serde_json::Value;
use std::process::Command;

const TOKEN: &str = "cli-calllog-super-token-0123456789abcdef";

fn holdfast(url: &str, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    admin_support::admin(url, TOKEN, env, args)
}

#[test]
fn admin_cli_call_log_prune_and_readable_tables() {
    let dir = admin_support::TempDir::new("cli-calllog");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cfg = ManagementConfig {
        flush_interval_ms: 50,
        ..admin_support::super_admin_config(&dir, TOKEN)
    };
    let (url, mgmt, plugins) = rt.block_on(async {
        let (url, m) = admin_support::start_admin(&cfg).await;
        let config = Config {
            management: Some(cfg.clone()),
            ..Config::default()
        };
        let plugins = holdfast_admin::ManagementFactory(m.clone())
            .build(&config)
            .expect("plugins");
        (url, m, plugins)
    });
    let acme = [("HOLDFAST_TENANT", "acme")];
    let run = |args: &[&str]| {
        let (ok, out, err) = holdfast(&url, &acme, args);
        assert!(ok, "holdfast admin {args:?} failed: {err}");
        out
    };
    let json = |args: &[&str]| -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&run(&all)).expect("json")
    };
    run(&["tenant", "create", "acme"]);
    run(&["service", "create", "pay"]);
    run(&["consumer", "create", "c1"]);

    // `key issue` shows the key's limits.
    let out = run(&["key", "issue", "--consumer", "c1", "--rpm", "7"]);
    let head = out.lines().next().unwrap_or("");
    assert!(head.contains("LIMITS"), "{out}");
    assert!(out.contains("rpm=7") && !out.contains('{'), "{out}");

    // Calls with sub-ms latencies and a cost that is not round in binary.
    let now = holdfast_store::now_ms();
    let old = now - 3 * 86_400_000;
    for (i, ts) in [(0, now), (1, now), (2, now), (3, old), (4, old)] {
        let rec = CallRecord {
            ts_ms: ts,
            route: "r1".into(),
            method: "GET".into(),
            path: format!("/{i}"),
            status: 200,
            total_ms: 0.042,
            extra: CallExtra {
                tenant: Some("acme".into()),
                service: Some("pay".into()),
                consumer: Some("c1".into()),
                ai: Some(AiUsage {
                    model_requested: "smart".into(),
                    input_tokens: 1,
                    output_tokens: 2,
                    cost_usd: 0.0002,
                    ..AiUsage::default()
                }),
                ..CallExtra::default()
            },
            ..CallRecord::default()
        };
        for o in &plugins.observers {
            o.on_call(&rec);
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while mgmt.call_log_stats().written < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "records never written"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // `calllog`: stored count and writer counters, as a table or the API's JSON.
    let out = run(&["calllog"]);
    assert!(out.contains("stored calls 5"), "{out}");
    assert!(out.contains("QUEUED") && out.contains("OVERFLOW"), "{out}");
    assert!(out.contains("LISTENING"), "{out}");
    let v = json(&["calllog"]);
    assert_eq!(v["stored"], 5, "{v}");
    assert_eq!(v["writer"]["written"], 5, "{v}");

    // `stats`: costs to 6 significant digits, bucket starts in RFC 3339, sub-ms p50.
    let out = run(&["stats", "--since", "1h", "--bucket", "1h"]);
    assert!(out.contains("p50 0.042 ms"), "{out}");
    assert!(!out.contains("0.0006000000000000001"), "{out}");
    assert!(out.contains("COST_USD") && out.contains("0.0006"), "{out}");
    assert!(out.contains("START ") && !out.contains("START_MS"), "{out}");
    // Count maps are tables too, with no raw JSON anywhere.
    assert!(
        out.contains("NODE") && out.contains("CLASS") | out.contains("(none)"),
        "{out}"
    );
    assert!(!out.contains('{') && !out.contains('}'), "{out}");
    let year = out
        .lines()
        .find(|l| l.contains("T") && l.contains("Z "))
        .unwrap_or_default()
        .to_string();
    assert!(
        year.starts_with("20") && year.as_bytes().get(4) == Some(&b'-'),
        "RFC 3339 start: {out}"
    );
    // --json keeps the raw values.
    let v = json(&["stats", "--since", "1h", "--bucket", "1h"]);
    assert!(v["buckets"][0]["start_ms"].as_i64().is_some(), "{v}");

    // `prune --older-than`: the two old calls go.
    let v = json(&["prune", "--older-than", "1d"]);
    assert_eq!(v["pruned"], 2, "{v}");
    let out = run(&["prune", "--older-than", "1d"]);
    assert!(out.contains("PRUNED") && out.contains("BEFORE"), "{out}");
    assert_eq!(json(&["calllog"])["writer"]["pruned"], 2);
    assert_eq!(json(&["calllog"])["stored"], 3);
    let (ok, _, err) = holdfast(&url, &acme, &["prune", "--older-than", "soon"]);
    assert!(!ok);
    assert!(err.contains("older_than"), "{err}");

    // Errors are one line with the API's message, no backtrace even with RUST_BACKTRACE=1.
    let (ok, _, err) = holdfast(
        &url,
        &[("HOLDFAST_TENANT", "nope"), ("RUST_BACKTRACE", "1")],
        &["consumer", "list"],
    );
    assert!(!ok);
    assert!(err.contains("not found: tenant nope"), "{err}");
    assert!(
        !err.contains("backtrace") && !err.contains("Stack backtrace"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    rt.block_on(mgmt.shutdown());
}

fn check(dir: &std::path::Path, text: &str) -> (Option<i32>, String) {
    let path = dir.join("c.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .arg("check")
        .arg(&path)
        .output()
        .expect("holdfast check runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn check_refuses_duplicate_admin_tokens_and_bad_service_values() {
    let dir = admin_support::TempDir::new("check-mgmt");
    let base = |service: &str, management: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n{management}\n[upstreams.u]\ntargets = [\"http://127.0.0.1:9\"]\n\n[[routes]]\nupstream = \"u\"\n{service}\n"
        )
    };
    let mgmt = |tokens: &str| {
        format!(
            "[management]\nstore = \"sqlite://{}\"\nsecret = \"check-secret-0123456789abcdef\"\n{tokens}\n",
            dir.0.join("m.db").display()
        )
    };
    let (code, out) = check(&dir.0, &base("service = \"pay@v1\"", &mgmt("")));
    assert_eq!(code, Some(0), "{out}");

    let token = "dup-admin-token-0123456789";
    let tokens = format!(
        "[[management.admin_tokens]]\ntoken = \"{token}\"\nrole = \"super_admin\"\n[[management.admin_tokens]]\ntoken = \"{token}\"\nrole = \"viewer\"\ntenant = \"a\"\n"
    );
    let (code, out) = check(&dir.0, &base("", &mgmt(&tokens)));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("management.admin_tokens[1].token"), "{out}");
    assert!(out.contains("admin_tokens[0]"), "{out}");
    assert!(!out.contains(token), "the token is not printed: {out}");

    for bad in ["", "bad name", "@v1", "pay@", "a@b@c"] {
        let (code, out) = check(&dir.0, &base(&format!("service = \"{bad}\""), &mgmt("")));
        assert_eq!(code, Some(1), "service = {bad:?} accepted: {out}");
        assert!(out.contains("routes[0].service"), "{bad:?}: {out}");
    }
    let (code, out) = check(&dir.0, &base("service = \"pay\"", ""));
    assert_eq!(code, Some(1), "a service route without [management]: {out}");
    assert!(out.contains("[management]"), "{out}");
}
