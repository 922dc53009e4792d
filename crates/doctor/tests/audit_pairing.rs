//! The cross-file keep-alive comparison pairs a proxy with a backend only when the proxy's
//! upstream address reaches the backend's listen address (or one of them is not known, which
//! the finding calls assumed); an invalid Holdfast TOML names its line and column.

use std::path::{Path, PathBuf};

use holdfast_doctor::audit::{self, AuditOptions, Severity};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn proxies_are_paired_only_with_the_backends_they_reach() {
    let dir = std::env::temp_dir().join(format!("holdfast-audit-pairing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let proc_root = dir.join("proc");
    std::fs::create_dir_all(proc_root.join("net")).unwrap();
    std::fs::write(proc_root.join("net/snmp"), "").unwrap();
    let nginx = write(
        &dir,
        "nginx.conf",
        "events { worker_connections 4096; }\nhttp {\n  upstream api {\n    server 127.0.0.1:24600;\n    \
         keepalive 16;\n    keepalive_timeout 120s;\n  }\n  server {\n    listen 127.0.0.1:24601;\n    \
         keepalive_timeout 30s;\n    location / { proxy_pass http://api; proxy_http_version 1.1; }\n  }\n}\n",
    );
    let haproxy = write(
        &dir,
        "haproxy.cfg",
        "global\n    maxconn 5000\ndefaults\n    timeout client 30s\n    timeout server 60s\n    \
         timeout http-keep-alive 2s\nfrontend fe\n    bind 127.0.0.1:24602\n    default_backend be\n\
         backend be\n    server s1 127.0.0.1:24601\n",
    );
    let apache = write(
        &dir,
        "apache.conf",
        "KeepAliveTimeout 5\nMaxRequestWorkers 400\n",
    );
    let bad = write(&dir, "bad.toml", "[server]\nthis is = not toml [[[\n");
    let report = audit::run(&AuditOptions {
        proc_root,
        configs: vec![nginx, haproxy, apache, bad],
        logs: vec![],
        rulesets: vec![],
        watch: None,
        system_tools: false,
    });
    let pair = |proxy: &str, backend: &str| {
        report.findings.iter().find(|f| {
            f.check == "config"
                && f.subject.split(" vs ").next().unwrap().contains(proxy)
                && f.subject
                    .split(" vs ")
                    .nth(1)
                    .is_some_and(|b| b.contains(backend))
        })
    };
    // nginx's upstream 127.0.0.1:24600 is not haproxy's frontend 127.0.0.1:24602: no
    // comparison, so no false critical.
    assert!(
        pair("nginx upstream api", "haproxy").is_none(),
        "{:#?}",
        report.findings
    );
    // haproxy's server 127.0.0.1:24601 is nginx's listener: compared, and matched.
    let matched = pair("haproxy backend be", "nginx keepalive_timeout").expect("haproxy vs nginx");
    assert_eq!(matched.severity, Severity::Ok);
    assert!(
        matched
            .value
            .contains("127.0.0.1:24601 is this backend's listener"),
        "{matched:?}"
    );
    // Apache has no Listen line: paired by assumption, and the finding says so.
    let assumed = pair("nginx upstream api", "apache").expect("nginx vs apache");
    assert_eq!(assumed.severity, Severity::Critical);
    assert!(assumed.value.contains("assumed"), "{assumed:?}");
    // The invalid TOML names the place.
    let toml = report
        .findings
        .iter()
        .find(|f| f.subject.ends_with("bad.toml holdfast"))
        .expect("bad.toml finding");
    assert!(toml.value.contains("line 2, column 6"), "{toml:?}");
    assert!(toml.fix.contains("line 2, column 6"), "{toml:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
