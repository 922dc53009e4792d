//! `holdfast admin ...` against a real admin API (on a real SQLite file, loopback listener):
//! tenant, service, consumer, key issue, subscribe, approve, stats; tables and `--json`;
//! errors exit non-zero with the API's message.

mod admin_support;

use std::process::Command;

const TOKEN: &str = "cli-super-token-0123456789abcdef";

fn holdfast(url: &str, args: &[&str]) -> (bool, String, String) {
    admin_support::admin(url, TOKEN, &[], args)
}

#[test]
fn admin_cli_end_to_end() {
    let dir = admin_support::TempDir::new("mgmt-cli");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cfg = admin_support::super_admin_config(&dir, TOKEN);
    let url = admin_support::serve_admin(&rt, &cfg);
    let run = |args: &[&str]| {
        let (ok, out, err) = holdfast(&url, args);
        assert!(ok, "holdfast admin {args:?} failed: {err}");
        out
    };
    assert!(run(&["tenant", "create", "acme"]).contains("acme"));
    let out = run(&[
        "service",
        "create",
        "--tenant",
        "acme",
        "pay",
        "--require-approval",
        "--rpm",
        "100",
    ]);
    assert!(out.contains("v1:published"), "{out}");
    run(&["consumer", "create", "--tenant", "acme", "c1"]);
    let out = run(&[
        "--json",
        "key",
        "issue",
        "--tenant",
        "acme",
        "--consumer",
        "c1",
    ]);
    let key: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(key["key"].as_str().expect("key").starts_with("hf_"));
    let out = run(&[
        "--json",
        "subscribe",
        "--tenant",
        "acme",
        "--consumer",
        "c1",
        "--service",
        "pay",
    ]);
    let sub: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(sub["state"], "pending");
    let id = sub["id"].to_string();
    let out = run(&["approve", "--tenant", "acme", &id]);
    assert!(out.contains("active"), "{out}");
    let out = run(&["subscriptions", "--tenant", "acme"]);
    assert!(
        out.lines().next().unwrap_or("").contains("STATE") && out.contains("active"),
        "{out}"
    );
    let out = run(&["stats", "--since", "1h"]);
    assert!(out.contains("calls 0") && out.contains("p99"), "{out}");
    // Errors: non-zero exit and the API's message naming the field.
    let (ok, _, err) = holdfast(
        &url,
        &["service", "create", "--tenant", "acme", "x", "--rps", "0"],
    );
    assert!(!ok);
    assert!(err.contains("limits.rps"), "{err}");
    let (ok, _, err) = holdfast(&url, &["consumer", "list", "--tenant", "nope"]);
    assert!(ok || err.contains("nope"), "{err}");
}

/// `holdfast check` reads the PostgreSQL `sslrootcert` a store URL names, as `serve` would.
#[test]
fn check_reads_the_postgres_root_certificate() {
    let dir = admin_support::TempDir::new("check-pg");
    let config = |store: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[management]\nstore = \"{store}\"\nsecret = \"check-secret-0123456789abcdef\"\n\n[upstreams.u]\ntargets = [\"http://127.0.0.1:9\"]\n\n[[routes]]\nupstream = \"u\"\n"
        )
    };
    let check = |store: &str| {
        let path = dir.0.join("c.toml");
        std::fs::write(&path, config(store)).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .arg("check")
            .arg(&path)
            .output()
            .expect("holdfast runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let missing = dir.0.join("missing-ca.pem");
    let (code, stderr) = check(&format!(
        "postgres://u@127.0.0.1/db?sslmode=verify-full&sslrootcert={}",
        missing.display()
    ));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("management.store") && stderr.contains("missing-ca.pem"),
        "{stderr}"
    );
    let not_pem = dir.0.join("not-a-cert.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let (code, stderr) = check(&format!(
        "postgres://u@127.0.0.1/db?sslmode=require&sslrootcert={}",
        not_pem.display()
    ));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no PEM certificate"), "{stderr}");
    let (code, stderr) = check("postgres://u@127.0.0.1/db?sslmode=require");
    assert_eq!(code, Some(0), "{stderr}");
}
