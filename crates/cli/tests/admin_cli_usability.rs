//! `holdfast admin` flags where users put them: `--url`, `--token`, `--tenant` and `--json`
//! before or after the command; a key revoked by the whole key (its secret never sent nor
//! echoed); names and query values that would change the URL sent as they are.

mod admin_support;

use serde_json::Value;

const TOKEN: &str = "cli-usability-super-token-0123456789";

fn raw(env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    admin_support::admin_raw(env, args)
}

#[test]
fn admin_cli_flags_anywhere_whole_keys_and_odd_names() {
    let dir = admin_support::TempDir::new("cli-usability");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cfg = admin_support::super_admin_config(&dir, TOKEN);
    let url = admin_support::serve_admin(&rt, &cfg);
    let ok = |args: &[&str]| -> String {
        let (ok, out, err) = raw(&[], args);
        assert!(ok, "holdfast admin {args:?} failed: {err}");
        out
    };
    ok(&["--url", &url, "--token", TOKEN, "tenant", "create", "acme"]);
    // `--tenant` before the command, like `--url` and `--token`.
    ok(&[
        "--url", &url, "--token", TOKEN, "--tenant", "acme", "consumer", "create", "c1",
    ]);
    // `--url` and `--token` after it, like `--tenant` and `--json`.
    let out = ok(&[
        "consumer", "list", "--tenant", "acme", "--url", &url, "--token", TOKEN, "--json",
    ]);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v[0]["name"], "c1", "{v}");
    // Mixed, with the token and tenant from the environment.
    let env = [("HOLDFAST_ADMIN_TOKEN", TOKEN), ("HOLDFAST_TENANT", "acme")];
    let (done, _, err) = raw(&env, &["service", "create", "pay", "--url", &url]);
    assert!(done, "{err}");

    // A command about a tenant without one, and no token at all: one clear line each.
    let (done, _, err) = raw(
        &[("HOLDFAST_ADMIN_TOKEN", TOKEN)],
        &["--url", &url, "consumer", "list"],
    );
    assert!(!done);
    assert!(
        err.contains("this command needs a tenant: pass --tenant NAME"),
        "{err}"
    );
    let (done, _, err) = raw(&[], &["--url", &url, "tenant", "list"]);
    assert!(!done);
    assert!(err.contains("no admin token: pass --token"), "{err}");
    // `stats` without a tenant is every tenant's (super admin).
    let (done, out, err) = raw(
        &[("HOLDFAST_ADMIN_TOKEN", TOKEN)],
        &["--url", &url, "stats", "--json"],
    );
    assert!(done, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert!(v["call_log"].is_object(), "{v}");

    // Revoking by the whole key (what a user holding a leaked key has): the key's prefix is
    // revoked, and the secret part is neither sent nor echoed.
    let (done, out, err) = raw(
        &env,
        &["--url", &url, "--json", "key", "issue", "--consumer", "c1"],
    );
    assert!(done, "{err}");
    let issued: Value = serde_json::from_str(&out).expect("json");
    let key = issued["key"].as_str().expect("key").to_string();
    let prefix = issued["prefix"].as_str().expect("prefix").to_string();
    let (done, out, err) = raw(&env, &["--url", &url, "--json", "key", "revoke", &key]);
    assert!(done, "revoking by the whole key: {err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["prefix"], prefix.as_str(), "{v}");
    assert!(v["revoked_ms"].is_i64(), "{v}");
    let secret = &key[12..];
    let (done, out, err) = raw(
        &env,
        &[
            "--url",
            &url,
            "key",
            "update",
            &format!("hf_00000000_{secret}"),
            "--no-expiry",
        ],
    );
    assert!(!done);
    assert!(!out.contains(secret) && !err.contains(secret), "{out}{err}");
    assert!(err.contains("hf_00000000"), "{err}");

    // A name holding `/` or `?` is one path segment: the API answers about that name, not
    // about another path or a query parameter.
    let (done, _, err) = raw(&env, &["--url", &url, "service", "show", "pay/v1"]);
    assert!(!done);
    assert!(err.contains("not found: service `pay/v1`"), "{err}");
    let (done, _, err) = raw(&env, &["--url", &url, "consumer", "show", "c1?x=1"]);
    assert!(!done);
    assert!(err.contains("not found: consumer `c1?x=1`"), "{err}");
    // A query value holding `&` stays that value (a 400 naming it, not `top=2` slipped in).
    let (done, _, err) = raw(&env, &["--url", &url, "stats", "--since", "1h&top=2"]);
    assert!(!done);
    assert!(
        err.contains("`since`: `1h&top=2` is not a duration"),
        "{err}"
    );
}
