//! `holdfast audit` follows nginx `include` and Apache `Include`/`IncludeOptional` (globs,
//! relative to the config's directory), with loop protection.

use std::path::PathBuf;

use holdfast_doctor::audit::{self, AuditOptions, Severity};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn staged(tag: &str) -> Dir {
    let dir = std::env::temp_dir().join(format!("holdfast-audit-inc-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    Dir(dir)
}

fn run(configs: Vec<PathBuf>, root: &std::path::Path) -> audit::AuditReport {
    audit::run(&AuditOptions {
        proc_root: root.to_path_buf(),
        configs,
        logs: vec![],
        rulesets: vec![],
        watch: None,
        system_tools: false,
    })
}

#[test]
fn nginx_includes_are_followed_with_globs_and_loops_stopped() {
    let dir = staged("nginx");
    std::fs::write(
        dir.0.join("nginx.conf"),
        "events { worker_connections 4096; }\nhttp {\n  include conf.d/*.conf;\n  server { listen 80; }\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.0.join("conf.d/up.conf"),
        "upstream app {\n  server 10.0.0.9:8080;\n  keepalive 8;\n}\ninclude conf.d/*.conf;\n",
    )
    .unwrap();
    std::fs::write(
        dir.0.join("apache.conf"),
        "KeepAliveTimeout 5\nIncludeOptional conf.d/*.load\n",
    )
    .unwrap();
    let report = run(
        vec![dir.0.join("nginx.conf"), dir.0.join("apache.conf")],
        &dir.0,
    );
    let config: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.check == "config")
        .collect();
    // The upstream's keepalive without keepalive_timeout is in the included file.
    assert!(
        config
            .iter()
            .any(|f| f.severity == Severity::Warn && f.subject.contains("upstream app")),
        "{config:#?}"
    );
    // Its 60 s default reuse races Apache's 5 s close: critical.
    assert!(
        config.iter().any(|f| f.severity == Severity::Critical),
        "{config:#?}"
    );
    assert!(
        config.iter().any(|f| f.value.contains("loop")),
        "the self-include is reported: {config:#?}"
    );
}
