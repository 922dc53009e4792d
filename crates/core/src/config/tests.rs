//! Tests of loading and validating whole files.

use super::*;

fn env(name: &str) -> Option<String> {
    (name == "UP_PORT").then(|| "9000".to_string())
}

const GOOD: &str = r#"
[server]
listen = ["127.0.0.1:8080"]
admin = "127.0.0.1:9901"

[upstreams.api]
targets = [{ url = "http://127.0.0.1:${UP_PORT}", weight = 2 }, "http://127.0.0.1:9001"]
balance = "consistent_hash"
hash_on = "header:X-User"

[[routes]]
name = "api"
host = "API.example.com"
path_prefix = "/v1/"
methods = ["get", "POST"]
upstream = "api"
service = "orders"

[[routes]]
path_prefix = "/ai/"
handler = "ai"
"#;

#[test]
fn good_file_validates() {
    let c = parse(GOOD, "x.toml", env).unwrap();
    assert_eq!(
        c.upstreams["api"].targets[0],
        Target {
            authority: "127.0.0.1:9000".into(),
            weight: 2,
            tls: false,
            host: "127.0.0.1".into(),
        }
    );
    assert_eq!(c.upstreams["api"].targets[1].weight, 1);
    assert_eq!(
        c.upstreams["api"].balance,
        Balance::ConsistentHash(HashOn::Header("x-user".into()))
    );
    assert_eq!(c.routes[0].methods, vec!["GET", "POST"]);
    assert_eq!(c.routes[0].host.as_deref(), Some("api.example.com"));
    assert_eq!(c.routes[0].service.as_deref(), Some("orders"));
    assert_eq!(c.routes[1].name, "route-1");
    assert_eq!(c.routes[1].target, RouteTarget::Handler("ai".into()));
}

#[test]
fn errors_name_file_line_key_and_fix() {
    let bad = GOOD.replace("upstream = \"api\"", "upstream = \"nope\"");
    let errs = parse(&bad, "x.toml", env).unwrap_err().0;
    assert_eq!(errs.len(), 1);
    let e = &errs[0];
    assert_eq!(e.key, "routes[0].upstream");
    assert_eq!(e.file, "x.toml");
    assert_eq!(
        e.line,
        Some(bad.lines().position(|l| l.contains("nope")).unwrap() + 1)
    );
    assert!(e.fix.contains("[upstreams.nope]"), "{e}");
}

#[test]
fn unknown_keys_are_refused_with_a_line() {
    let bad = GOOD.replace("service = \"orders\"", "servise = \"orders\"");
    let errs = parse(&bad, "x.toml", env).unwrap_err().0;
    assert!(errs[0].message.contains("servise"), "{}", errs[0]);
    assert_eq!(
        errs[0].line,
        Some(bad.lines().position(|l| l.contains("servise")).unwrap() + 1)
    );
}

#[test]
fn every_problem_is_reported() {
    let bad = "[server]\nlisten = [\"nope\"]\n[upstreams.a]\ntargets = [\"tcp://x\"]\nbalance = \"random\"\n[[routes]]\nupstream = \"a\"\nmax_attempts = 0\n";
    let errs = parse(bad, "x.toml", env).unwrap_err().0;
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.listen[0]",
            "upstreams.a.targets[0]",
            "upstreams.a.balance",
            "routes[0].max_attempts"
        ]
    );
}

#[test]
fn quick_mode_builds_a_catch_all() {
    let c = quick(
        "127.0.0.1:8080",
        &[
            "http://127.0.0.1:9000".into(),
            "http://localhost:9001/".into(),
        ],
    )
    .unwrap();
    assert_eq!(c.upstreams["default"].targets.len(), 2);
    assert_eq!(
        c.upstreams["default"].targets[1].authority,
        "localhost:9001"
    );
    assert!(quick("127.0.0.1:8080", &[]).is_err());
    assert!(quick("127.0.0.1:8080", &["ftp://x".into()]).is_err());
}

#[test]
fn check_warns_on_reset_prone_timeouts() {
    let text = "[server]\nclient_idle_timeout_ms = 30000\nfront_idle_timeout_ms = 60000\n[upstreams.a]\ntargets = [\"http://127.0.0.1:1\"]\nidle_timeout_ms = 10000\nserver_keepalive_timeout_ms = 5000\n[[routes]]\nupstream = \"a\"\n";
    let c = parse(text, "x.toml", env).unwrap();
    let keys: Vec<String> = warnings(&c).into_iter().map(|w| w.key).collect();
    assert!(
        keys.contains(&"upstreams.a.idle_timeout_ms".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"server.client_idle_timeout_ms".to_string()),
        "{keys:?}"
    );
    let fixed = text.replace("10000", "4000").replace("30000", "75000");
    assert!(warnings(&parse(&fixed, "x.toml", env).unwrap()).is_empty());
}

#[test]
fn https_targets_default_to_443_and_keep_the_host_for_sni() {
    let text = "[upstreams.s]\ntargets = [\"https://api.example.com\", \"https://[::1]:8443\", \"http://h\"]\ntls_ca_file = \"/etc/ca.pem\"\n[[routes]]\nupstream = \"s\"\n";
    let c = parse(text, "x.toml", env).unwrap();
    let t = &c.upstreams["s"].targets;
    assert_eq!(
        (t[0].authority.as_str(), t[0].tls, t[0].host.as_str()),
        ("api.example.com:443", true, "api.example.com")
    );
    assert_eq!(
        (t[1].authority.as_str(), t[1].tls, t[1].host.as_str()),
        ("[::1]:8443", true, "::1")
    );
    assert_eq!((t[2].authority.as_str(), t[2].tls), ("h:80", false));
    assert_eq!(c.upstreams["s"].tls_ca_file.as_deref(), Some("/etc/ca.pem"));
    let plain = "[upstreams.s]\ntargets = [\"http://h:1\"]\ntls_ca_file = \"/ca.pem\"\n[[routes]]\nupstream = \"s\"\n";
    let err = parse(plain, "x.toml", env).unwrap_err().to_string();
    assert!(err.contains("upstreams.s.tls_ca_file"), "{err}");
    let bad = "[upstreams.s]\ntargets = [\"ftp://h:1\"]\n[[routes]]\nupstream = \"s\"\n";
    let err = parse(bad, "x.toml", env).unwrap_err().to_string();
    assert!(err.contains("https://"), "{err}");
}

#[test]
fn client_certificates_need_both_files_and_an_https_target() {
    let both = "[upstreams.s]\ntargets = [\"https://h\"]\ntls_client_cert = \"/c.pem\"\ntls_client_key = \"/c.key\"\n[[routes]]\nupstream = \"s\"\n";
    let c = parse(both, "x.toml", env).unwrap();
    assert_eq!(
        c.upstreams["s"].tls_client_auth,
        Some(("/c.pem".to_string(), "/c.key".to_string()))
    );
    let only_cert = both.replace("tls_client_key = \"/c.key\"\n", "");
    let err = parse(&only_cert, "x.toml", env).unwrap_err().to_string();
    assert!(err.contains("upstreams.s.tls_client_key"), "{err}");
    let only_key = both.replace("tls_client_cert = \"/c.pem\"\n", "");
    let err = parse(&only_key, "x.toml", env).unwrap_err().to_string();
    assert!(err.contains("upstreams.s.tls_client_cert"), "{err}");
    let plain = both.replace("https://h", "http://h");
    let err = parse(&plain, "x.toml", env).unwrap_err().to_string();
    assert!(err.contains("upstreams.s.tls_client_cert"), "{err}");
}
