//! `holdfast audit` against files staged in a temporary directory: a proc tree (counters,
//! sysctls, sockets, a listening process with its descriptors), proxy configs, logs and a
//! saved firewall ruleset. Every check group must report what the staged files hold.

use std::path::{Path, PathBuf};
use std::time::Duration;

use holdfast_doctor::audit::{self, AuditOptions, AuditReport, Finding, Severity};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/audit");

/// A staged directory removed on drop.
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Copies the fixture proc tree and adds pid 4242 ("app") holding 1000 descriptors of a 1024
/// limit, one of them the listening socket with inode 424242.
fn stage(tag: &str) -> Staged {
    let dir = std::env::temp_dir().join(format!("holdfast-audit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_tree(&Path::new(FIXTURES).join("proc"), &dir);
    let pid = dir.join("4242");
    std::fs::create_dir_all(pid.join("fd")).unwrap();
    std::fs::write(pid.join("comm"), "app\n").unwrap();
    std::fs::write(
        pid.join("limits"),
        "Limit                     Soft Limit           Hard Limit           Units     \n\
         Max open files            1024                 4096                 files     \n",
    )
    .unwrap();
    for fd in 0..1000 {
        let target = if fd == 3 {
            "socket:[424242]".to_string()
        } else {
            format!("/dev/null-{fd}")
        };
        std::os::unix::fs::symlink(target, pid.join("fd").join(fd.to_string())).unwrap();
    }
    Staged(dir)
}

fn options(root: &Path) -> AuditOptions {
    let fixture = |name: &str| Path::new(FIXTURES).join(name);
    AuditOptions {
        proc_root: root.to_path_buf(),
        configs: vec![
            fixture("nginx.conf"),
            fixture("apache.conf"),
            fixture("haproxy.cfg"),
            fixture("holdfast.toml"),
        ],
        logs: vec![fixture("error.log"), fixture("kern.log")],
        rulesets: vec![fixture("iptables.rules")],
        watch: None,
        system_tools: false,
    }
}

fn find<'a>(report: &'a AuditReport, check: &str, subject_part: &str) -> &'a Finding {
    report
        .findings
        .iter()
        .find(|f| f.check == check && f.subject.contains(subject_part))
        .unwrap_or_else(|| panic!("no {check} finding about {subject_part:?}: {report:#?}"))
}

#[test]
fn staged_counters_sysctls_and_sockets_are_judged() {
    let staged = stage("host");
    let report = audit::run(&options(&staged.0));

    let overflows = find(&report, "counters", "TcpExtListenOverflows");
    assert_eq!(overflows.severity, Severity::Warn);
    assert!(overflows.value.starts_with("17 total"), "{overflows:?}");
    let out_rsts = report
        .counters
        .iter()
        .find(|c| c.name == "TcpOutRsts")
        .unwrap();
    assert_eq!(out_rsts.total, 1234);
    assert_eq!(out_rsts.delta, None);
    assert_eq!(
        find(&report, "counters", "TCPAbortOnMemory").severity,
        Severity::Ok
    );

    for (key, severity) in [
        ("net.core.somaxconn", Severity::Warn),
        ("tcp_abort_on_overflow", Severity::Warn),
        ("tcp_syncookies", Severity::Warn),
        ("nf_conntrack_count", Severity::Warn),
        ("ip_local_port_range", Severity::Warn),
        ("tcp_keepalive", Severity::Info),
    ] {
        assert_eq!(find(&report, "sysctl", key).severity, severity, "{key}");
    }
    assert_eq!(
        find(&report, "sysctl", "ip_local_port_range").value,
        "32768-33767 (1000 ports)"
    );

    let full = find(&report, "sockets", "127.0.0.1:8080");
    assert_eq!(full.severity, Severity::Critical);
    assert!(full.subject.contains("pid 4242 (app)"), "{full:?}");
    assert!(
        full.value.starts_with("accept queue 128 of 128"),
        "{full:?}"
    );
    let near = find(&report, "sockets", "[::]:443");
    assert_eq!(near.severity, Severity::Warn);
    assert!(
        !report.findings.iter().any(|f| f.subject.contains(":22")),
        "an empty queue is not a finding"
    );

    let fds = find(&report, "limits", "pid 4242");
    assert_eq!(fds.severity, Severity::Critical);
    assert_eq!(fds.value, "1000 open of 1024");
}

#[test]
fn staged_configs_logs_and_rules_are_judged() {
    let staged = stage("files");
    let report = audit::run(&options(&staged.0));

    // nginx reuses idle upstream connections 30 s; Apache closes its idle ones after 5 s.
    let race = find(&report, "config", "nginx upstream app keepalive_timeout vs");
    let race_apache = report
        .findings
        .iter()
        .find(|f| {
            f.subject.contains("upstream app keepalive_timeout vs") && f.subject.contains("apache")
        })
        .expect("nginx vs apache comparison");
    assert_eq!(race_apache.severity, Severity::Critical);
    assert!(race_apache.value.contains("up to 30s") && race_apache.value.contains("after 5s"));
    assert!(race.fix.contains("keepalive_timeout"));
    // Apache gives no listen address: the pairing is assumed, and the finding says so.
    assert!(race_apache.value.contains("assumed"), "{race_apache:?}");
    // Holdfast's 1 s pool is below the idle time of haproxy, which listens on its target's
    // port (*:3000 for 127.0.0.1:3000).
    let holdfast_vs_haproxy = report
        .findings
        .iter()
        .find(|f| {
            f.subject.contains("upstreams.api.idle_timeout_ms vs") && f.subject.contains("haproxy")
        })
        .expect("holdfast vs haproxy comparison");
    assert_eq!(holdfast_vs_haproxy.severity, Severity::Ok);
    assert!(
        holdfast_vs_haproxy
            .value
            .contains("the proxy's upstream 127.0.0.1:3000 is this backend's listener"),
        "{holdfast_vs_haproxy:?}"
    );
    // nginx listens on port 80 only, where neither Holdfast's target (127.0.0.1:3000) nor
    // haproxy's server (127.0.0.1:3001) is: those pairs are not compared.
    for proxy in [
        "upstreams.api.idle_timeout_ms vs",
        "haproxy backend app pool-purge-delay vs",
    ] {
        assert!(
            !report
                .findings
                .iter()
                .any(|f| f.subject.contains(proxy) && f.subject.contains("nginx keepalive_timeout")),
            "{proxy} paired with nginx although the addresses differ: {:#?}",
            report.findings
        );
    }
    // Within the Holdfast file, the api pool races its own upstream's 1.2 s close.
    let own = find(&report, "config", "holdfast upstreams.api.idle_timeout_ms");
    assert_eq!(own.severity, Severity::Critical);
    assert_eq!(own.fix, "idle_timeout_ms = 700");
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.subject.contains("ai.idle_timeout_ms")),
        "the AI stream idle timeout is not a pool idle time"
    );
    assert_eq!(
        find(&report, "config", "proxy_read_timeout").severity,
        Severity::Warn
    );
    let workers = find(&report, "config", "worker_connections");
    assert_eq!(workers.severity, Severity::Warn);
    assert!(
        workers.fix.contains("worker_rlimit_nofile 8192"),
        "{workers:?}"
    );
    assert_eq!(
        find(&report, "config", "haproxy global maxconn").severity,
        Severity::Warn
    );
    assert_eq!(
        find(&report, "config", "backend app timeout server").severity,
        Severity::Warn
    );
    assert_eq!(
        find(&report, "config", "MaxRequestWorkers").severity,
        Severity::Warn
    );

    let upstream = find(&report, "logs", "upstream prematurely closed");
    assert_eq!(
        upstream.value,
        "3 lines (2026-11-24 10:00: 2, 2026-11-24 11:00: 1)"
    );
    assert_eq!(
        find(&report, "logs", "recv() failed").value,
        "1 lines (2026-11-24 10:00: 1)"
    );
    let oom = find(&report, "logs", "OOM kills");
    assert_eq!(oom.severity, Severity::Critical);
    assert_eq!(oom.value, "1 lines (2026-11-24 10:00: 1)");
    assert_eq!(
        find(&report, "logs", "Connection reset by peer").value,
        "1 lines (2026-11-24 12:00: 1)"
    );

    let rules: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.check == "firewall")
        .collect();
    assert_eq!(rules.len(), 2, "{rules:#?}");
    assert_eq!(rules[0].severity, Severity::Warn);
    assert_eq!(rules[0].value, "42 packets matched");
    assert!(rules[0].subject.contains("--dport 8082"));
    assert_eq!(rules[1].severity, Severity::Info);
    assert_eq!(report.worst(), Severity::Critical);
}

#[test]
fn watch_reports_counter_deltas() {
    let staged = stage("watch");
    let netstat = staged.0.join("net/netstat");
    let before = std::fs::read_to_string(&netstat).unwrap();
    let keys: Vec<&str> = before.lines().next().unwrap().split_whitespace().collect();
    let index = keys.iter().position(|k| *k == "ListenOverflows").unwrap();
    let mut values: Vec<String> = before
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    values[index] = "20".to_string();
    let after = format!("{}\n{}\n", before.lines().next().unwrap(), values.join(" "));
    let writer = {
        let netstat = netstat.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            std::fs::write(netstat, after).unwrap();
        })
    };
    let mut opts = options(&staged.0);
    opts.watch = Some(Duration::from_millis(1500));
    let report = audit::run(&opts);
    writer.join().unwrap();
    let overflows = report
        .counters
        .iter()
        .find(|c| c.name == "TcpExtListenOverflows")
        .unwrap();
    assert_eq!((overflows.total, overflows.delta), (20, Some(3)));
    assert_eq!(
        find(&report, "counters", "TcpExtListenOverflows").severity,
        Severity::Critical
    );
    let rsts = report
        .counters
        .iter()
        .find(|c| c.name == "TcpOutRsts")
        .unwrap();
    assert_eq!(rsts.delta, Some(0));
    assert_eq!(
        find(&report, "counters", "TcpOutRsts").severity,
        Severity::Ok
    );
}

#[test]
fn unreadable_sources_are_skips_not_crashes() {
    let empty = std::env::temp_dir().join(format!("holdfast-audit-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let staged = Staged(empty);
    let report = audit::run(&AuditOptions {
        proc_root: staged.0.clone(),
        configs: vec![staged.0.join("missing.conf")],
        logs: vec![staged.0.join("missing.log")],
        rulesets: vec![],
        watch: None,
        system_tools: false,
    });
    for check in [
        "counters", "sysctl", "sockets", "limits", "firewall", "config", "logs",
    ] {
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.check == check && f.severity == Severity::Skip),
            "{check} should be skipped: {report:#?}"
        );
    }
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["findings"][0]["severity"], "skip");
}

/// Runs `f` on a thread and fails the test if it takes longer than `secs` (a reader that
/// never ends must fail the test, not hang it).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("the audit of these logs did not finish in time")
}

fn logs_only(dir: &Path, logs: Vec<PathBuf>) -> AuditOptions {
    AuditOptions {
        proc_root: dir.to_path_buf(),
        configs: vec![],
        logs,
        rulesets: vec![],
        watch: None,
        system_tools: false,
    }
}

fn log_findings(report: &AuditReport) -> Vec<&Finding> {
    report
        .findings
        .iter()
        .filter(|f| f.check == "logs")
        .collect()
}

#[test]
fn devices_fifos_and_directories_given_as_logs_are_skipped_with_a_reason() {
    let dir = std::env::temp_dir().join(format!("holdfast-audit-special-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("logdir")).unwrap();
    let staged = Staged(dir.clone());
    let fifo = dir.join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let logs = vec![PathBuf::from("/dev/zero"), fifo, dir.join("logdir")];
    let opts = logs_only(&staged.0, logs);
    let report = within(20, move || audit::run(&opts));
    let logs = log_findings(&report);
    for (subject, reason) in [
        ("/dev/zero", "character device"),
        ("fifo", "FIFO"),
        ("logdir", "directory"),
    ] {
        let finding = logs
            .iter()
            .find(|f| f.subject.ends_with(subject))
            .unwrap_or_else(|| panic!("no finding for {subject}: {logs:#?}"));
        assert_eq!(finding.severity, Severity::Skip, "{finding:?}");
        assert!(finding.value.contains(reason), "{finding:?}");
    }
    assert!(
        !logs.iter().any(|f| f.severity == Severity::Ok),
        "nothing was read, so nothing is ok: {logs:#?}"
    );
}

#[test]
fn binary_logs_are_skipped_and_gzip_logs_are_read_decompressed() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("holdfast-audit-gz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let staged = Staged(dir.clone());
    let binary = dir.join("core.bin");
    let mut bytes = vec![0u8; 4096];
    bytes.extend_from_slice(
        b"\n2026/11/24 10:00:00 recv() failed (104: Connection reset by peer)\n",
    );
    std::fs::write(&binary, bytes).unwrap();
    let gz = dir.join("error.log.1.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 0..5 {
        writeln!(
            encoder,
            "2026/11/23 09:0{i}:00 [error] 7#7: *{i} upstream prematurely closed connection while reading"
        )
        .unwrap();
    }
    writeln!(
        encoder,
        "2026/11/23 09:30:00 [notice] 7#7: signal process started"
    )
    .unwrap();
    std::fs::write(&gz, encoder.finish().unwrap()).unwrap();
    let report = audit::run(&logs_only(&staged.0, vec![binary, gz]));
    let logs = log_findings(&report);
    let bin = logs
        .iter()
        .find(|f| f.subject.ends_with("core.bin"))
        .unwrap();
    assert_eq!(bin.severity, Severity::Skip, "{bin:?}");
    assert!(bin.value.contains("binary"), "{bin:?}");
    let gz = logs.iter().find(|f| f.subject.ends_with(".gz")).unwrap();
    assert_eq!(gz.severity, Severity::Ok, "{gz:?}");
    assert!(gz.value.contains("6 lines read (gzip"), "{gz:?}");
    let upstream = find(&report, "logs", "upstream prematurely closed");
    assert_eq!(upstream.value, "5 lines (2026-11-23 09:00: 5)");
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.subject.contains("recv() failed")),
        "the binary file's lines are not counted"
    );
}

#[test]
fn overlong_lines_are_cut_and_the_next_line_still_counts() {
    let dir = std::env::temp_dir().join(format!("holdfast-audit-long-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let staged = Staged(dir.clone());
    let path = dir.join("long.log");
    let mut text = "a".repeat(5 * 1024 * 1024);
    // A pattern past the 64 KiB cut is not seen; the next line is.
    text.push_str(" upstream prematurely closed\n");
    text.push_str("2026/11/24 10:00:00 upstream prematurely closed connection\n");
    text.push_str(&"b".repeat(200 * 1024));
    std::fs::write(&path, text).unwrap();
    let report = audit::run(&logs_only(&staged.0, vec![path]));
    let file = find(&report, "logs", "long.log");
    assert_eq!(file.severity, Severity::Ok);
    assert!(file.value.starts_with("3 lines read"), "{file:?}");
    assert!(file.value.contains("2 line(s) over 64 KiB"), "{file:?}");
    assert_eq!(
        find(&report, "logs", "upstream prematurely closed").value,
        "1 lines (2026-11-24 10:00: 1)"
    );
}

#[test]
fn only_the_tail_of_a_big_log_is_read() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("holdfast-audit-tail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let staged = Staged(dir.clone());
    let path = dir.join("big.log");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(
        file,
        "2026/11/20 08:00:00 upstream prematurely closed (old, outside the tail)"
    )
    .unwrap();
    let filler = format!("{}\n", "x".repeat(1023));
    let limit = holdfast_doctor::audit::logs::MAX_TAIL_BYTES;
    for _ in 0..(limit / 1024 + 16) {
        file.write_all(filler.as_bytes()).unwrap();
    }
    writeln!(
        file,
        "2026/11/24 10:00:00 upstream prematurely closed (recent)"
    )
    .unwrap();
    drop(file);
    let report = audit::run(&logs_only(&staged.0, vec![path]));
    let file = find(&report, "logs", "big.log");
    assert!(file.value.contains("only the last 64.0 MiB"), "{file:?}");
    assert_eq!(
        find(&report, "logs", "upstream prematurely closed").value,
        "1 lines (2026-11-24 10:00: 1)"
    );
}

#[test]
fn scan_lines_bounds_lines_and_total() {
    use holdfast_doctor::audit::logs::{scan_lines, MAX_LINE_BYTES};
    let mut input = vec![b'z'; MAX_LINE_BYTES * 3];
    input.extend_from_slice(b"\nshort\npartial");
    let mut seen = Vec::new();
    let stats = scan_lines(&input[..], u64::MAX, false, |l| seen.push(l.len())).unwrap();
    assert_eq!(seen, vec![MAX_LINE_BYTES, 5, 7]);
    assert_eq!((stats.lines, stats.overlong), (3, 1));
    // Skipping the partial first line of a tail, and stopping at the byte limit.
    let mut seen = Vec::new();
    let stats = scan_lines(&b"tail of a line\none\ntwo\nthree\n"[..], 23, true, |l| {
        seen.push(l.to_string())
    })
    .unwrap();
    assert_eq!(seen, vec!["one", "two"]);
    assert!(stats.limited);
}

#[test]
fn keepalive_fixes_are_whole_seconds_or_milliseconds_in_each_daemons_syntax() {
    let staged = stage("fixes");
    let report = audit::run(&options(&staged.0));
    let nginx_vs_haproxy = report
        .findings
        .iter()
        .find(|f| {
            f.subject.contains("upstream app keepalive_timeout vs") && f.subject.contains("haproxy")
        })
        .expect("nginx vs haproxy comparison");
    assert_eq!(nginx_vs_haproxy.severity, Severity::Critical);
    assert!(
        nginx_vs_haproxy
            .fix
            .ends_with("e.g. keepalive_timeout 1600ms;"),
        "{nginx_vs_haproxy:?}"
    );
    let dir = staged.0.join("configs");
    std::fs::create_dir_all(&dir).unwrap();
    let haproxy = dir.join("haproxy.cfg");
    std::fs::write(
        &haproxy,
        "global\n    maxconn 5000\n    pool-purge-delay 10s\ndefaults\n    timeout client 30s\n    \
         timeout server 60s\n    timeout http-keep-alive 3s\nfrontend web\n    bind 127.0.0.1:3000\n    \
         default_backend app\nbackend app\n    server a 127.0.0.1:3001\n",
    )
    .unwrap();
    let apache = dir.join("apache.conf");
    std::fs::write(
        &apache,
        "KeepAlive On\nKeepAliveTimeout 3\nMaxRequestWorkers 400\n",
    )
    .unwrap();
    let holdfast = dir.join("holdfast.toml");
    std::fs::write(
        &holdfast,
        "[upstreams.api]\ntargets = [\"http://127.0.0.1:3000\"]\nidle_timeout_ms = 9000\n",
    )
    .unwrap();
    let mut opts = options(&staged.0);
    opts.configs = vec![
        Path::new(FIXTURES).join("nginx.conf"),
        haproxy,
        apache,
        holdfast,
    ];
    let report = audit::run(&opts);
    let fix_of = |proxy: &str, backend: &str| {
        report
            .findings
            .iter()
            .find(|f| {
                f.check == "config"
                    && f.subject.contains(proxy)
                    && f.subject.contains(" vs ")
                    && f.subject.split(" vs ").nth(1).unwrap().contains(backend)
            })
            .unwrap_or_else(|| panic!("no {proxy} vs {backend}: {:#?}", report.findings))
            .fix
            .clone()
    };
    assert!(
        fix_of("upstream app keepalive_timeout", "haproxy").ends_with("keepalive_timeout 2400ms;"),
        "{}",
        fix_of("upstream app keepalive_timeout", "haproxy")
    );
    assert!(fix_of("pool-purge-delay", "apache").ends_with("pool-purge-delay 2400ms"));
    assert!(
        fix_of("upstreams.api.idle_timeout_ms", "apache")
            .ends_with("idle_timeout_ms = 2400 (in [upstreams.api])"),
        "{}",
        fix_of("upstreams.api.idle_timeout_ms", "apache")
    );
    for finding in report.findings.iter().filter(|f| f.check == "config") {
        for text in [&finding.value, &finding.fix] {
            assert!(
                !text.contains("0000000") && !text.contains(".6s") && !text.contains(".4s"),
                "float noise or fractional seconds: {finding:?}"
            );
        }
    }
}
