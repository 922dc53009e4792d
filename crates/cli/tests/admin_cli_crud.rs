//! `holdfast admin` update and delete commands against a real admin API (SQLite file,
//! loopback listener), and a clear refusal of an empty `HOLDFAST_TENANT`.

mod admin_support;

use serde_json::Value;

const TOKEN: &str = "cli-crud-super-token-0123456789abcdef";

fn holdfast(url: &str, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    admin_support::admin(url, TOKEN, env, args)
}

#[test]
fn admin_cli_updates_and_deletes() {
    let dir = admin_support::TempDir::new("cli-crud");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cfg = admin_support::super_admin_config(&dir, TOKEN);
    let url = admin_support::serve_admin(&rt, &cfg);
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

    // An empty tenant is refused before any request, with a clear message.
    let (ok, _, err) = holdfast(&url, &[("HOLDFAST_TENANT", "")], &["consumer", "list"]);
    assert!(!ok);
    assert!(err.contains("tenant is empty"), "{err}");
    // A tenant that does not exist: 404 naming it.
    let (ok, _, err) = holdfast(&url, &[("HOLDFAST_TENANT", "nope")], &["consumer", "list"]);
    assert!(!ok);
    assert!(err.contains("not found: tenant nope"), "{err}");

    run(&["tenant", "create", "acme"]);
    run(&["service", "create", "pay", "--rpm", "100"]);
    let v = json(&[
        "service",
        "update",
        "pay",
        "--require-approval",
        "true",
        "--rps",
        "5",
    ]);
    assert_eq!(v["require_approval"], true, "{v}");
    assert_eq!(v["limits"], serde_json::json!({"rps": 5}), "{v}");
    let v = json(&["service", "update", "pay", "--no-limits"]);
    assert_eq!(v["limits"], serde_json::json!({}), "{v}");
    assert_eq!(v["require_approval"], true, "{v}");
    let v = json(&["service", "show", "pay"]);
    assert_eq!(v["name"], "pay");
    assert_eq!(
        v["versions"],
        serde_json::json!([{"version": "v1", "state": "published", "since_ms": v["created_ms"]}]),
        "the default first version, in its state since the service was created"
    );
    // A service can start as a draft (not callable until published).
    let v = json(&[
        "service",
        "create",
        "beta",
        "--version",
        "v0",
        "--state",
        "draft",
    ]);
    assert_eq!(
        v["versions"],
        serde_json::json!([{"version": "v0", "state": "draft", "since_ms": v["created_ms"]}]),
        "{v}"
    );
    run(&["service", "delete", "beta"]);

    run(&["consumer", "create", "c1"]);
    let v = json(&["consumer", "update", "c1", "--tokens-per-day", "1000"]);
    assert_eq!(v["limits"]["tokens_per_day"], 1000, "{v}");
    let v = json(&["consumer", "show", "c1"]);
    assert_eq!(v["limits"]["tokens_per_day"], 1000, "{v}");

    let key = json(&["key", "issue", "--consumer", "c1"]);
    let prefix = key["prefix"].as_str().expect("prefix").to_string();
    let v = json(&[
        "key",
        "update",
        &prefix,
        "--expires-in-s",
        "600",
        "--rpm",
        "7",
    ]);
    assert!(v["expires_ms"].as_i64().is_some(), "{v}");
    assert_eq!(v["limits"]["rpm"], 7, "{v}");
    let v = json(&["key", "update", &prefix, "--no-expiry"]);
    assert!(v["expires_ms"].is_null(), "{v}");

    let sub = json(&["subscribe", "--consumer", "c1", "--service", "pay"]);
    let id = sub["id"].to_string();
    run(&["reject", &id]);
    let (ok, _, err) = holdfast(&url, &acme, &["approve", &id]);
    assert!(!ok);
    assert!(
        err.contains("409") && err.contains("already rejected"),
        "{err}"
    );
    run(&["unsubscribe", &id]);
    let subs = json(&["subscriptions"]);
    assert_eq!(subs, serde_json::json!([]));

    // A tenant with services and consumers needs --force.
    let (ok, _, err) = holdfast(&url, &acme, &["tenant", "delete", "acme"]);
    assert!(!ok);
    assert!(
        err.contains("--force") || err.contains("force=true"),
        "{err}"
    );
    run(&["consumer", "delete", "c1"]);
    assert_eq!(json(&["key", "list"]), serde_json::json!([]));
    run(&["service", "delete", "pay"]);
    assert_eq!(json(&["service", "list"]), serde_json::json!([]));
    run(&["tenant", "create", "beta"]);
    run(&["consumer", "create", "--tenant", "beta", "b1"]);
    run(&["tenant", "delete", "beta", "--force"]);
    run(&["tenant", "delete", "acme"]);
    assert_eq!(json(&["tenant", "list"]), serde_json::json!([]));
}
