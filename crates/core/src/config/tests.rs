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

[ai.models.smart]
[[ai.models.smart.deployments]]
provider = "openai"
model = "gpt-4o-mini"

[management]
secret = "0123456789abcdef0123"
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

/// The line (1-based) of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    Some(text.lines().position(|l| l.contains(needle))? + 1)
}

#[test]
fn every_unknown_key_is_reported_with_its_path_line_and_the_closest_key() {
    let text = "[server]\nlistne = [\"127.0.0.1:8080\"]\n\n[upstreams.a]\ntargets = [\"http://127.0.0.1:9000\", { url = \"http://127.0.0.1:9001\", wieght = 2 }]\nbalanse = \"round_robin\"\n\n[[routes]]\nupstream = \"a\"\nfoo = 1\n[sever]\n";
    let errs = parse(text, "c3.toml", env).unwrap_err().0;
    let got: Vec<(&str, Option<usize>)> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        got,
        [
            ("server.listne", Some(2)),
            ("upstreams.a.targets[1].wieght", Some(5)),
            ("upstreams.a.balanse", Some(6)),
            ("routes[0].foo", Some(10)),
            ("sever", Some(11)),
        ]
    );
    assert!(errs.iter().all(|e| e.file == "c3.toml"));
    assert!(
        errs[0].fix.contains("did you mean `listen`?"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].fix.contains("did you mean `weight`?"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].fix.contains("did you mean `balance`?"),
        "{}",
        errs[2]
    );
    assert!(
        errs[4].fix.contains("did you mean `server`?"),
        "{}",
        errs[4]
    );
    // No close match: the valid keys are listed instead.
    assert!(!errs[3].fix.contains("did you mean"), "{}", errs[3]);
    assert!(errs[3].fix.contains("`path_prefix`"), "{}", errs[3]);
    assert!(errs[3].message.contains("unknown key `foo`"), "{}", errs[3]);
    let shown = ConfigErrors(errs).to_string();
    assert!(
        shown.starts_with("c3.toml:2: `server.listne`: unknown key `listne`"),
        "{shown}"
    );
}

#[test]
fn unknown_keys_in_every_section_are_found() {
    let text = "[retry_budget]\npercnt = 1\n[management]\nstroe = \"x.db\"\n[[management.jwt]]\nservice = \"s\"\nsecrte = \"x\"\n[ai]\nttft_timeout = 1\n[ai.models.m]\n[[ai.models.m.deployments]]\nprovider = \"openai\"\nmodel = \"x\"\nbase_ulr = \"http://h\"\n[upstreams.a]\ntargets = [\"http://h:1\"]\nhealth_check = { knd = \"tcp\" }\n[[routes]]\nupstream = \"a\"\n";
    let errs = parse(text, "x.toml", env).unwrap_err().0;
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "retry_budget.percnt",
            "management.stroe",
            "management.jwt[0].secrte",
            "ai.ttft_timeout",
            "ai.models.m.deployments[0].base_ulr",
            "upstreams.a.health_check.knd",
        ]
    );
    let fixes: Vec<&str> = errs.iter().map(|e| e.fix.as_str()).collect();
    for (fix, want) in fixes.iter().zip([
        "percent",
        "store",
        "secret",
        "ttft_timeout_ms",
        "base_url",
        "kind",
    ]) {
        assert!(fix.contains(&format!("did you mean `{want}`?")), "{fix}");
    }
}

#[test]
fn wrong_types_name_the_key_the_expected_type_and_a_fix() {
    let text = "[server]\nclient_idle_timeout_ms = \"abc\"\nlisten = \"127.0.0.1:8080\"\nheader_timeout_ms = \"100\"\nmax_connections = -5\n[upstreams.a]\ntargets = [\"http://h:1\", 7]\n[[routes]]\nupstream = \"a\"\nretry_non_idempotent = \"yes\"\nhost = 5\n";
    let errs = parse(text, "x.toml", env).unwrap_err().0;
    let got: Vec<(&str, Option<usize>)> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        got,
        [
            ("server.client_idle_timeout_ms", Some(2)),
            ("server.listen", Some(3)),
            ("server.header_timeout_ms", Some(4)),
            ("server.max_connections", Some(5)),
            ("upstreams.a.targets[1]", Some(7)),
            ("routes[0].retry_non_idempotent", Some(10)),
            ("routes[0].host", Some(11)),
        ]
    );
    let e = &errs[0];
    assert!(e.message.contains("expected a whole number"), "{e}");
    assert!(e.message.contains("\"abc\""), "{e}");
    assert!(e.fix.contains("`client_idle_timeout_ms = 5000`"), "{e}");
    assert!(
        errs[1].fix.contains("listen = [\"127.0.0.1:8080\"]"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].fix.contains("header_timeout_ms = 100"),
        "{}",
        errs[2]
    );
    assert!(errs[3].message.contains("out of range"), "{}", errs[3]);
    assert!(errs[4].message.contains("`url`, `weight`"), "{}", errs[4]);
    assert!(errs[5].message.contains("`true` or `false`"), "{}", errs[5]);
    assert!(errs[6].fix.contains("host = \"5\""), "{}", errs[6]);
    assert!(errs.iter().all(|e| !e.fix.contains("see docs")), "{errs:?}");
}

#[test]
fn routes_name_only_handlers_services_and_hosts_that_can_work() {
    let cases = [
        (
            "handler = \"ai\"",
            "handler = \"nope\"",
            "routes[1].handler",
            "no handler named",
        ),
        (
            "service = \"orders\"",
            "service = \"a@b@c\"",
            "routes[0].service",
            "more than one",
        ),
        (
            "service = \"orders\"",
            "service = \"pay@\"",
            "routes[0].service",
            "version name",
        ),
        (
            "service = \"orders\"",
            "service = \"\"",
            "routes[0].service",
            "1 to 64",
        ),
        (
            "service = \"orders\"",
            "service = \"bad name\"",
            "routes[0].service",
            "may only hold",
        ),
        (
            "host = \"API.example.com\"",
            "host = \"api.example.com:8080\"",
            "routes[0].host",
            "has a port",
        ),
    ];
    for (from, to, key, message) in cases {
        let bad = GOOD.replace(from, to);
        let errs = parse(&bad, "x.toml", env).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{to}: {errs:?}");
        assert_eq!(errs[0].key, key, "{to}");
        assert!(errs[0].message.contains(message), "{to}: {}", errs[0]);
        assert!(errs[0].line.is_some(), "{to}: {}", errs[0]);
    }
    // The sections a route relies on.
    let no_ai = GOOD.split("[ai.models.smart]").next().unwrap().to_string()
        + "[management]\nsecret = \"0123456789abcdef0123\"\n";
    let errs = parse(&no_ai, "x.toml", env).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].message.contains("needs an [ai] section"),
        "{}",
        errs[0]
    );
    let no_mgmt = GOOD.split("[management]").next().unwrap();
    let errs = parse(no_mgmt, "x.toml", env).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "routes[0].service");
    assert!(
        errs[0].message.contains("no [management] section"),
        "{}",
        errs[0]
    );
    // IPv6 hosts are hosts, not host:port.
    assert!(parse(&GOOD.replace("API.example.com", "::1"), "x.toml", env).is_ok());
}

#[test]
fn a_missing_required_key_names_its_path() {
    let text = "[ai.models.smart]\n[[ai.models.smart.deployments]]\nmodel = \"x\"\n[[routes]]\nhandler = \"ai\"\n";
    let errs = parse(text, "x.toml", env).unwrap_err().0;
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].key, "ai.models.smart.deployments[0].provider");
    assert_eq!(errs[0].line, Some(2));
    assert!(errs[0].fix.contains("add `provider = "), "{}", errs[0]);
}

#[test]
fn syntax_errors_point_at_the_line_to_fix() {
    // A `]` missing on line 2 is only noticed at line 3's key.
    let text = "[server]\nlisten = [\"127.0.0.1:8080\"\nadmin = \"127.0.0.1:9901\"\n\n[[routes]]\nupstream = \"a\"\n";
    let errs = parse(text, "x.toml", env).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].line, Some(2), "{}", errs[0]);
    assert_eq!(errs[0].key, "server.listen");
    assert!(
        errs[0].fix.contains("`]` at the end of line 2"),
        "{}",
        errs[0]
    );
    // An unclosed table header, after a comment.
    let errs = parse("# c\n[server\nlisten = []\n", "x.toml", env)
        .unwrap_err()
        .0;
    assert_eq!((errs[0].line, errs[0].key.as_str()), (Some(2), "server"));
    assert!(errs[0].fix.contains("`]`"), "{}", errs[0]);
    // An unquoted string.
    let errs = parse("[server]\nadmin = 127.0.0.1:9901\n", "x.toml", env)
        .unwrap_err()
        .0;
    assert_eq!(
        (errs[0].line, errs[0].key.as_str()),
        (Some(2), "server.admin")
    );
    assert!(errs[0].fix.contains("quotes"), "{}", errs[0]);
    // A duplicate key stays on its own line.
    let errs = parse("[server]\nadmin = \"a\"\nadmin = \"b\"\n", "x.toml", env)
        .unwrap_err()
        .0;
    assert_eq!(
        (errs[0].line, errs[0].key.as_str()),
        (Some(3), "server.admin")
    );
}

#[test]
fn a_variable_in_a_comment_is_not_needed() {
    let text = "# Set ${QA_NOT_SET} to your port\n[upstreams.a]\ntargets = [\"http://127.0.0.1:${UP_PORT}\"] # not ${QA_NOT_SET}\n[[routes]]\nupstream = \"a\" # \"${QA_NOT_SET}\"\n";
    let c = parse(text, "x.toml", env).unwrap();
    assert_eq!(c.upstreams["a"].targets[0].authority, "127.0.0.1:9000");
    let in_value = "[[routes]]\nname = \"${QA_NOT_SET}\"\nupstream = \"a\"\n";
    let errs = parse(in_value, "x.toml", env).unwrap_err().0;
    assert_eq!(errs[0].line, Some(2));
}

#[test]
fn listeners_must_not_share_an_address() {
    let base =
        "[upstreams.a]\ntargets = [\"http://h:1\"]\n[[routes]]\nupstream = \"a\"\n[server]\n";
    let dup =
        format!("{base}listen = [\"127.0.0.1:8080\", \"127.0.0.1:8081\", \"127.0.0.1:8080\"]\n");
    let errs = parse(&dup, "x.toml", env).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "server.listen[2]");
    assert!(errs[0].message.contains("server.listen[0]"), "{}", errs[0]);
    assert_eq!(errs[0].line, line_of(&dup, "listen ="));
    // 0.0.0.0 covers 127.0.0.1 on the same port; [::] covers both families.
    for listen in [
        "[\"0.0.0.0:8080\", \"127.0.0.1:8080\"]",
        "[\"127.0.0.1:8080\", \"[::]:8080\"]",
    ] {
        let text = format!("{base}listen = {listen}\n");
        let errs = parse(&text, "x.toml", env).unwrap_err().0;
        assert_eq!(errs[0].key, "server.listen[1]", "{listen}");
    }
    let admin = format!("{base}listen = [\"127.0.0.1:8080\"]\nadmin = \"127.0.0.1:8080\"\n");
    let errs = parse(&admin, "x.toml", env).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "server.admin");
    assert_eq!(errs[0].line, line_of(&admin, "admin ="));
    assert!(errs[0].fix.contains("127.0.0.1:8081"), "{}", errs[0]);
    // The default listener counts too.
    let default = format!("{base}admin = \"127.0.0.1:8080\"\n");
    assert_eq!(
        parse(&default, "x.toml", env).unwrap_err().0[0].key,
        "server.admin"
    );
    let demo = format!("{base}admin = \"127.0.0.1:9901\"\ndemo_upstream = \"127.0.0.1:9901\"\n");
    assert_eq!(
        parse(&demo, "x.toml", env).unwrap_err().0[0].key,
        "server.demo_upstream"
    );
    // Port 0 picks a free port each time; other ports and IPs are fine.
    let ok = format!("{base}listen = [\"127.0.0.1:0\", \"127.0.0.1:0\", \"127.0.0.2:8080\", \"127.0.0.1:8080\"]\nadmin = \"127.0.0.1:0\"\n");
    assert_eq!(parse(&ok, "x.toml", env).unwrap().server.listen.len(), 4);
}

#[test]
fn outlier_base_ejection_above_max_is_an_error() {
    let text = "[upstreams.a]\ntargets = [\"http://h:1\"]\noutlier = { base_ejection_ms = 60000, max_ejection_ms = 30000 }\n[[routes]]\nupstream = \"a\"\n";
    let errs = parse(text, "x.toml", env).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "upstreams.a.outlier.base_ejection_ms");
    assert_eq!(errs[0].line, Some(3));
    assert!(errs[0].fix.contains("30000"), "{}", errs[0]);
    // Only base given, above the default max.
    let base_only = text.replace(", max_ejection_ms = 30000", "");
    assert!(parse(&base_only, "x.toml", env).is_err());
    assert!(parse(&text.replace("60000", "30000"), "x.toml", env).is_ok());
}

fn shadow_warnings(routes: &str) -> Vec<ConfigWarning> {
    let text = format!("[upstreams.a]\ntargets = [\"http://h:1\"]\n{routes}");
    let (_, warnings) = parse_with_warnings(&text, "x.toml", env).unwrap();
    warnings
        .into_iter()
        .filter(|w| w.message.contains("can never match"))
        .collect()
}

#[test]
fn a_route_behind_a_catch_all_is_flagged() {
    // First match wins (as the gateway picks routes), so a catch-all hides what follows.
    let routes = "[[routes]]\nname = \"all\"\nupstream = \"a\"\n\n[[routes]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"a\"\n";
    let w = shadow_warnings(routes);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].key, "routes[1]");
    assert_eq!(w[0].line, Some(7), "{}", w[0]);
    assert!(w[0].message.contains("`all`"), "{}", w[0]);
    assert!(
        w[0].fix.contains("move route `api` above route `all`"),
        "{}",
        w[0]
    );
    // The same with a longer earlier prefix, the same host, and a subset of methods.
    let w = shadow_warnings("[[routes]]\nhost = \"h\"\npath_prefix = \"/v1\"\nmethods = [\"GET\", \"POST\"]\nupstream = \"a\"\n[[routes]]\nhost = \"H\"\npath_prefix = \"/v1/x\"\nmethods = [\"get\"]\nupstream = \"a\"\n");
    assert_eq!(w.len(), 1, "{w:?}");
    // Not shadowed: specific first, other host, host-less after a host route, other
    // methods, a method-less route after a method route, a shorter later prefix.
    for routes in [
        "[[routes]]\npath_prefix = \"/api/\"\nupstream = \"a\"\n[[routes]]\nupstream = \"a\"\n",
        "[[routes]]\nhost = \"a\"\nupstream = \"a\"\n[[routes]]\nhost = \"b\"\nupstream = \"a\"\n",
        "[[routes]]\nhost = \"a\"\nupstream = \"a\"\n[[routes]]\nupstream = \"a\"\n",
        "[[routes]]\nmethods = [\"GET\"]\nupstream = \"a\"\n[[routes]]\nmethods = [\"POST\"]\nupstream = \"a\"\n",
        "[[routes]]\nmethods = [\"GET\"]\nupstream = \"a\"\n[[routes]]\nupstream = \"a\"\n",
        "[[routes]]\npath_prefix = \"/v1/\"\nupstream = \"a\"\n[[routes]]\npath_prefix = \"/v1\"\nupstream = \"a\"\n",
    ] {
        assert!(shadow_warnings(routes).is_empty(), "{routes}");
    }
}

#[test]
fn warnings_carry_the_file_and_line_of_their_key() {
    let text = "[server]\nclient_idle_timeout_ms = 30000\nfront_idle_timeout_ms = 60000\nheader_timeout_ms = 40000\ndrain_timeout_ms = 1000\n[upstreams.a]\ntargets = [\"http://127.0.0.1:1\"]\nidle_timeout_ms = 10000\nserver_keepalive_timeout_ms = 5000\n[[routes]]\nname = \"slow\"\nupstream = \"a\"\ntimeout_ms = 5000\n";
    let (_, warnings) = parse_with_warnings(text, "w.toml", env).unwrap();
    let got: Vec<(&str, Option<usize>)> =
        warnings.iter().map(|w| (w.key.as_str(), w.line)).collect();
    assert_eq!(
        got,
        [
            ("upstreams.a.idle_timeout_ms", Some(8)),
            ("server.client_idle_timeout_ms", Some(2)),
            ("server.header_timeout_ms", Some(4)),
            ("routes[0].timeout_ms", Some(13)),
        ]
    );
    assert!(warnings[0]
        .to_string()
        .starts_with("w.toml:8: warning: `upstreams.a.idle_timeout_ms`"));
    assert!(warnings[3].message.contains("`slow`"), "{}", warnings[3]);
}

#[test]
fn the_shape_follows_every_section() {
    let mut shape = shape().clone();
    for path in [
        "server.workers",
        "retry_budget.backoff_max_ms",
        "upstreams.*.outlier.max_ejection_ms",
        "upstreams.*.health_check.unhealthy_threshold",
        "upstreams.*.tls_client_key",
        "routes.[].queue_timeout_ms",
        "ai.models.*.deployments.[].provider",
        "ai.prompts.*.temperature",
        "management.jwt.[].jwks_ca_file",
        "management.admin_tokens.[].role",
    ] {
        let found = shape.at_mut(path).cloned();
        assert!(
            matches!(found, Some(ref s) if *s != schema::Shape::Any),
            "{path}: {found:?}"
        );
    }
}

#[test]
fn cut_or_garbled_files_give_errors_not_panics() {
    let text = format!("# ${{X}} é\n{GOOD}[[ai.models.m.deployments]]\nprovider = \"x\"\n");
    for (cut, _) in text.char_indices() {
        let _ = parse(&text[..cut], "x.toml", env);
        let mut garbled = text.clone();
        garbled.replace_range(
            cut..cut + text[cut..].chars().next().map_or(0, char::len_utf8),
            "\"",
        );
        let _ = parse(&garbled, "x.toml", env);
    }
}

#[test]
fn range_errors_name_the_keys_valid_range_not_the_integer_types() {
    let text = "[server]\nworkers = \"many\"\n[upstreams.a]\ntargets = [\"http://h:1\"]\n[[routes]]\nupstream = \"a\"\nmax_attempts = \"x\"\n[[routes]]\nupstream = \"a\"\nmax_attempts = -1\n";
    let errs = parse(text, "x.toml", env).unwrap_err().0;
    let text_of = |key: &str| {
        errs.iter()
            .find(|e| e.key == key)
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("no error for {key}: {errs:?}"))
    };
    assert!(text_of("server.workers").contains("from 0 to 1024"));
    assert!(text_of("routes[0].max_attempts").contains("from 1 to 10"));
    let negative = text_of("routes[1].max_attempts");
    assert!(negative.contains("from 1 to 10"), "{negative}");
    assert!(!negative.contains("4294967295"), "{negative}");
}

#[test]
fn service_specs_name_an_optional_tenant_and_version() {
    use super::route::{service_spec_problem, ServiceSpec};
    let parts = |s| ServiceSpec::parse(s);
    assert_eq!(
        parts("acme/pay@v2"),
        ServiceSpec {
            tenant: Some("acme"),
            name: "pay",
            version: Some("v2")
        }
    );
    assert_eq!(parts("pay").tenant, None);
    assert_eq!(parts("acme/pay").version, None);
    assert_eq!(parts("pay@v1").name, "pay");
    for good in ["pay", "pay@v1", "acme/pay", "acme/pay@v1.2"] {
        assert!(service_spec_problem(good).is_ok(), "{good}");
    }
    for bad in [
        "a/b/c",
        "pay@v1/acme",
        "/pay",
        "acme/",
        "pay@",
        "p@1@2",
        "ac me/pay",
    ] {
        assert!(service_spec_problem(bad).is_err(), "{bad}");
    }
}

#[test]
fn management_warns_about_unpinned_routes_and_an_unreachable_admin_api() {
    let managed = |server: &str, service: &str, tokens: &str| {
        format!("[server]\n{server}\n[upstreams.a]\ntargets = [\"http://127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\nservice = \"{service}\"\n[management]\nsecret = \"0123456789abcdef0123\"\n{tokens}")
    };
    let tokens =
        "[[management.admin_tokens]]\ntoken = \"super-token-0123456789\"\nrole = \"super_admin\"\n";
    let keys = |text: &str| -> Vec<String> {
        warnings(&parse(text, "x.toml", env).unwrap())
            .into_iter()
            .map(|w| w.key)
            .collect()
    };
    assert_eq!(
        keys(&managed("", "pay@v1", "")),
        ["management", "management.admin_tokens", "routes[0].service"]
    );
    let w = warnings(&parse(&managed("", "pay@v1", ""), "x.toml", env).unwrap());
    assert!(w[2].fix.contains("TENANT/pay@v1"), "{}", w[2]);
    assert!(keys(&managed("admin = \"127.0.0.1:9901\"", "acme/pay", tokens)).is_empty());
}

#[test]
fn api_keys_may_not_ride_in_headers_http_needs() {
    for header in ["Host", "content-length", "Transfer-Encoding", "cookie"] {
        let text =
            format!("[management]\nsecret = \"0123456789abcdef0123\"\nkey_header = \"{header}\"\n");
        let errs = parse(&text, "x.toml", env).unwrap_err().0;
        assert_eq!(errs[0].key, "management.key_header", "{header}");
        assert!(errs[0].fix.contains("x-api-key"), "{}", errs[0]);
    }
    let ok = "[upstreams.a]\ntargets = [\"http://127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n[management]\nsecret = \"0123456789abcdef0123\"\nkey_header = \"X-Api-Key\"\n";
    assert!(parse(ok, "x.toml", env).is_ok());
    let negative = "[management]\nsecret = \"0123456789abcdef0123\"\nretention_days = -1\n";
    let e = &parse(negative, "x.toml", env).unwrap_err().0[0];
    assert!(e.to_string().contains("from 1 to 3650"), "{e}");
}

#[test]
fn a_short_upstream_keep_alive_gets_advice_that_validates() {
    let text = "[upstreams.a]\ntargets = [\"http://127.0.0.1:1\"]\nserver_keepalive_timeout_ms = 400\n[[routes]]\nupstream = \"a\"\n";
    let w = warnings(&parse(text, "x.toml", env).unwrap());
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].fix.contains("set idle_timeout_ms to 200 or less"),
        "{}",
        w[0]
    );
    let fixed = text.replace(
        "server_keepalive",
        "idle_timeout_ms = 200\nserver_keepalive",
    );
    assert!(warnings(&parse(&fixed, "x.toml", env).unwrap()).is_empty());
}

#[test]
fn zero_consecutive_failures_is_refused_not_read_as_one() {
    let bad = GOOD.replace(
        "hash_on = \"header:X-User\"",
        "hash_on = \"header:X-User\"\noutlier = { consecutive_failures = 0 }",
    );
    let errs = parse(&bad, "x.toml", env).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "upstreams.api.outlier.consecutive_failures");
    assert_eq!(
        errs[0].line,
        Some(bad.lines().position(|l| l.contains("outlier")).unwrap() + 1)
    );
    assert!(
        errs[0].fix.contains("consecutive_failures = 5"),
        "{}",
        errs[0]
    );
}

#[test]
fn a_health_check_timeout_longer_than_its_interval_is_a_warning() {
    let text = "[upstreams.a]\ntargets = [\"http://127.0.0.1:1\"]\nhealth_check = { kind = \"tcp\", interval_ms = 1000, timeout_ms = 3000 }\n[[routes]]\nupstream = \"a\"\n";
    let (_, warnings) = parse_with_warnings(text, "h.toml", env).unwrap();
    let w = warnings
        .iter()
        .find(|w| w.key == "upstreams.a.health_check.timeout_ms")
        .expect("a warning about the health-check timeout");
    assert!(
        w.message.contains("3000 ms") && w.message.contains("1000 ms"),
        "{w}"
    );
    assert!(w.fix.contains("1000 or less"), "{w}");
    // Within the interval: no warning.
    let text = text.replace("timeout_ms = 3000", "timeout_ms = 500");
    let (_, warnings) = parse_with_warnings(&text, "h.toml", env).unwrap();
    assert!(
        warnings.iter().all(|w| !w.key.contains("health_check")),
        "{warnings:?}"
    );
}

#[test]
fn an_empty_route_name_is_refused() {
    let text = "[upstreams.a]\ntargets = [\"http://127.0.0.1:1\"]\n[[routes]]\nname = \"\"\nupstream = \"a\"\n";
    let err = parse_with_warnings(text, "r.toml", env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("routes[0].name"), "{err}");
    assert!(err.contains("may not be empty"), "{err}");
}

/// A config with `server` lines and one pool and route.
fn with_server(server: &str) -> String {
    format!("[server]\n{server}\n[upstreams.a]\ntargets = [\"http://127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n")
}

#[test]
fn tls_listeners_take_a_certificate_and_a_key() {
    let text = with_server(
        "tls_listen = [\"127.0.0.1:8443\", \"[::1]:8443\"]\ntls_cert_file = \"/etc/c.pem\"\ntls_key_file = \"/etc/k.pem\"",
    );
    let c = parse(&text, "t.toml", env).unwrap();
    assert_eq!(
        c.server.tls_listen,
        vec![
            "127.0.0.1:8443".parse().unwrap(),
            "[::1]:8443".parse().unwrap()
        ]
    );
    let tls = c.server.tls.expect("tls files");
    assert_eq!(
        (tls.cert_file.as_str(), tls.key_file.as_str()),
        ("/etc/c.pem", "/etc/k.pem")
    );
    // Plain listeners stay as they were.
    assert_eq!(c.server.listen, ServerConfig::default().listen);
    let plain = parse(&with_server(""), "t.toml", env).unwrap();
    assert!(plain.server.tls_listen.is_empty() && plain.server.tls.is_none());
}

#[test]
fn tls_listeners_without_a_certificate_or_a_certificate_without_listeners_are_refused() {
    let one = |server: &str| {
        let text = with_server(server);
        let errs = parse(&text, "t.toml", env).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        (errs[0].clone(), text)
    };
    let (e, text) = one("tls_listen = [\"127.0.0.1:8443\"]");
    assert_eq!(e.key, "server.tls_listen");
    assert_eq!(
        e.line,
        Some(
            text.lines()
                .position(|l| l.starts_with("tls_listen"))
                .unwrap()
                + 1
        )
    );
    assert!(
        e.fix.contains("tls_cert_file") && e.fix.contains("tls_key_file"),
        "{e}"
    );
    let (e, _) = one("tls_listen = [\"127.0.0.1:8443\"]\ntls_cert_file = \"/c.pem\"");
    assert_eq!(e.key, "server.tls_key_file");
    assert!(e.fix.contains("tls_key_file = "), "{e}");
    let (e, _) = one("tls_listen = [\"127.0.0.1:8443\"]\ntls_key_file = \"/k.pem\"");
    assert_eq!(e.key, "server.tls_cert_file");
    let (e, text) = one("tls_cert_file = \"/c.pem\"");
    assert_eq!(e.key, "server.tls_cert_file");
    assert_eq!(e.line, Some(2), "{text}");
    assert!(e.fix.contains("tls_listen = ["), "{e}");
    let (e, _) =
        one("tls_listen = [\"127.0.0.1:8443\"]\ntls_cert_file = \"\"\ntls_key_file = \"/k.pem\"");
    assert_eq!(e.key, "server.tls_cert_file");
    assert!(e.message.contains("empty"), "{e}");
    let (e, _) = one(
        "tls_listen = [\"localhost:8443\"]\ntls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"",
    );
    assert_eq!(e.key, "server.tls_listen[0]");
}

#[test]
fn a_tls_listener_may_not_share_an_address() {
    let files = "tls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"";
    for (server, clash) in [
        (
            "listen = [\"127.0.0.1:8080\"]\ntls_listen = [\"127.0.0.1:8080\"]",
            "server.listen",
        ),
        (
            "listen = [\"0.0.0.0:8080\"]\ntls_listen = [\"127.0.0.1:8080\"]",
            "server.listen",
        ),
        (
            "admin = \"127.0.0.1:9901\"\ntls_listen = [\"127.0.0.1:9901\"]",
            "server.admin",
        ),
        (
            "demo_upstream = \"127.0.0.1:9000\"\ntls_listen = [\"127.0.0.1:9000\"]",
            "server.demo_upstream",
        ),
        (
            "tls_listen = [\"127.0.0.1:8443\", \"127.0.0.1:8443\"]",
            "server.tls_listen[0]",
        ),
    ] {
        let text = with_server(&format!("{server}\n{files}"));
        let errs = parse(&text, "t.toml", env).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{server}: {errs:?}");
        let e = &errs[0];
        assert!(e.key.starts_with("server.tls_listen["), "{e}");
        assert!(e.message.contains(clash), "{server}: {e}");
        assert!(e.fix.contains("its own port"), "{e}");
        assert!(e.line.is_some(), "{e}");
    }
    // Port 0 picks a free port each time: no clash.
    let text = with_server(&format!(
        "listen = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\n{files}"
    ));
    assert!(parse(&text, "t.toml", env).is_ok());
}

#[test]
fn the_tls_listener_keys_are_in_the_shape() {
    let mut shape = shape().clone();
    for path in [
        "server.tls_listen",
        "server.tls_cert_file",
        "server.tls_key_file",
    ] {
        let found = shape.at_mut(path).cloned();
        assert!(
            matches!(found, Some(ref s) if *s != schema::Shape::Any),
            "{path}: {found:?}"
        );
    }
    // A typo gets the closest key.
    let text = with_server("tls_cert_flie = \"/c.pem\"");
    let err = parse(&text, "t.toml", env).unwrap_err().to_string();
    assert!(err.contains("did you mean `tls_cert_file`"), "{err}");
}
