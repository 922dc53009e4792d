//! Kernel settings that decide whether a busy or idle host resets connections.

use std::path::Path;

use super::{AuditOptions, Finding, Severity};

const CHECK: &str = "sysctl";

/// Reads `/proc/sys/<key with dots as slashes>` as text.
fn read(proc_root: &Path, key: &str) -> Result<String, String> {
    let path = proc_root.join("sys").join(key.replace('.', "/"));
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_num(proc_root: &Path, key: &str) -> Result<u64, String> {
    let text = read(proc_root, key)?;
    text.parse()
        .map_err(|_| format!("{key} is not a number: {text:?}"))
}

/// Adds one finding per setting.
pub fn check(options: &AuditOptions, findings: &mut Vec<Finding>) {
    let root = options.proc_root.as_path();
    let somaxconn = read_num(root, "net.core.somaxconn");
    findings.push(match &somaxconn {
        Err(reason) => Finding::skip(CHECK, "net.core.somaxconn", reason.clone()),
        Ok(v) if *v < 1024 => Finding::new(
            CHECK,
            "net.core.somaxconn",
            Severity::Warn,
            v.to_string(),
            "caps every listen backlog; a short accept queue overflows under bursts (drops or resets)",
            "sysctl -w net.core.somaxconn=4096 (and persist it in /etc/sysctl.d/)",
        ),
        Ok(v) => Finding::ok(CHECK, "net.core.somaxconn", v.to_string()),
    });
    let syn_backlog = read_num(root, "net.ipv4.tcp_max_syn_backlog");
    findings.push(match (&syn_backlog, &somaxconn) {
        (Err(reason), _) => Finding::skip(CHECK, "net.ipv4.tcp_max_syn_backlog", reason.clone()),
        (Ok(v), Ok(max)) if v < max => Finding::new(
            CHECK,
            "net.ipv4.tcp_max_syn_backlog",
            Severity::Info,
            format!("{v} (somaxconn {max})"),
            "half-open connections are capped below the accept queue; SYN floods or bursts hit it first",
            format!("sysctl -w net.ipv4.tcp_max_syn_backlog={max}"),
        ),
        (Ok(v), _) => Finding::ok(CHECK, "net.ipv4.tcp_max_syn_backlog", v.to_string()),
    });
    findings.push(match read_num(root, "net.ipv4.tcp_abort_on_overflow") {
        Err(reason) => Finding::skip(CHECK, "net.ipv4.tcp_abort_on_overflow", reason),
        Ok(0) => Finding::ok(CHECK, "net.ipv4.tcp_abort_on_overflow", "0"),
        Ok(v) => Finding::new(
            CHECK,
            "net.ipv4.tcp_abort_on_overflow",
            Severity::Warn,
            v.to_string(),
            "a full accept queue answers new clients with a reset instead of letting them retry",
            "sysctl -w net.ipv4.tcp_abort_on_overflow=0",
        ),
    });
    findings.push(match read_num(root, "net.ipv4.tcp_syncookies") {
        Err(reason) => Finding::skip(CHECK, "net.ipv4.tcp_syncookies", reason),
        Ok(0) => Finding::new(
            CHECK,
            "net.ipv4.tcp_syncookies",
            Severity::Warn,
            "0",
            "without SYN cookies a full SYN or accept queue drops or resets new connections",
            "sysctl -w net.ipv4.tcp_syncookies=1",
        ),
        Ok(v) => Finding::ok(CHECK, "net.ipv4.tcp_syncookies", v.to_string()),
    });
    keepalive(root, findings);
    conntrack(root, findings);
    port_range(root, findings);
}

fn keepalive(root: &Path, findings: &mut Vec<Finding>) {
    let key = "net.ipv4.tcp_keepalive_time";
    let time = read_num(root, key);
    let intvl = read_num(root, "net.ipv4.tcp_keepalive_intvl");
    let probes = read_num(root, "net.ipv4.tcp_keepalive_probes");
    findings.push(match (time, intvl, probes) {
        (Err(reason), _, _) | (_, Err(reason), _) | (_, _, Err(reason)) => {
            Finding::skip(CHECK, "net.ipv4.tcp_keepalive_*", reason)
        }
        (Ok(t), Ok(i), Ok(p)) => {
            let value = format!("time {t}s, interval {i}s, probes {p}");
            if t > 300 {
                Finding::new(
                    CHECK,
                    "net.ipv4.tcp_keepalive_*",
                    Severity::Info,
                    value,
                    "idle connections send no keepalive before most NAT/load-balancer idle timeouts \
                     (often 350 s or less), which then drop or reset them",
                    "enable SO_KEEPALIVE in long-idle clients and set net.ipv4.tcp_keepalive_time=120",
                )
            } else {
                Finding::ok(CHECK, "net.ipv4.tcp_keepalive_*", value)
            }
        }
    });
}

fn conntrack(root: &Path, findings: &mut Vec<Finding>) {
    let subject = "net.netfilter.nf_conntrack_count";
    let count = read_num(root, subject);
    let max = read_num(root, "net.netfilter.nf_conntrack_max");
    findings.push(match (count, max) {
        (Err(_), _) | (_, Err(_)) => Finding::skip(
            CHECK,
            subject,
            "connection tracking is not loaded here (no nf_conntrack sysctls)",
        ),
        (Ok(c), Ok(m)) => {
            let value = format!("{c} of {m}");
            let severity = if m > 0 && c * 100 >= m * 95 {
                Severity::Critical
            } else if m > 0 && c * 100 >= m * 80 {
                Severity::Warn
            } else {
                Severity::Ok
            };
            if severity == Severity::Ok {
                Finding::ok(CHECK, subject, value)
            } else {
                Finding::new(
                    CHECK,
                    subject,
                    severity,
                    value,
                    "a full conntrack table drops new connections and the packets of evicted ones",
                    format!("sysctl -w net.netfilter.nf_conntrack_max={}", m.max(1) * 2),
                )
            }
        }
    });
}

fn port_range(root: &Path, findings: &mut Vec<Finding>) {
    let key = "net.ipv4.ip_local_port_range";
    findings.push(match read(root, key) {
        Err(reason) => Finding::skip(CHECK, key, reason),
        Ok(text) => {
            let nums: Vec<u64> = text
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            match nums.as_slice() {
                [low, high] if high >= low => {
                    let size = high - low + 1;
                    let value = format!("{low}-{high} ({size} ports)");
                    if size < 10_000 {
                        Finding::new(
                            CHECK,
                            key,
                            Severity::Warn,
                            value,
                            "few ephemeral ports: a busy proxy runs out and reuses ports still \
                             in TIME-WAIT at the peer, which answers with resets",
                            "sysctl -w net.ipv4.ip_local_port_range=\"10240 65535\"",
                        )
                    } else {
                        Finding::ok(CHECK, key, value)
                    }
                }
                _ => Finding::skip(CHECK, key, format!("unreadable value {text:?}")),
            }
        }
    });
}
