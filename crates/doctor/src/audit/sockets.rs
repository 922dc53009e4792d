//! Listening sockets whose accept queue is full or near full (from `/proc/net/tcp{,6}`, with
//! the backlog from `ss` when it can run), their owning processes (found through the
//! `/proc/PID/fd` socket inodes) and those processes' descriptor limits.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;

use super::{AuditOptions, Finding, Severity};

/// A listening socket as `/proc/net/tcp{,6}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The local address.
    pub ip: IpAddr,
    /// The local port.
    pub port: u16,
    /// Connections waiting in the accept queue.
    pub queued: u64,
    /// The socket inode (to find the owner).
    pub inode: u64,
}

/// TCP state code for LISTEN in `/proc/net/tcp`.
const LISTEN: &str = "0A";

/// Parses the hex address of `/proc/net/tcp{,6}` (32-bit words in host byte order).
fn parse_addr(hex: &str) -> Option<(IpAddr, u16)> {
    let (ip_hex, port_hex) = hex.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..ip_hex.len()).step_by(8) {
        let word = u32::from_str_radix(ip_hex.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => {
            let arr: [u8; 16] = bytes.try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(arr))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// The listening sockets in one `/proc/net/tcp{,6}` text.
pub fn parse_listeners(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != LISTEN {
                return None;
            }
            let (ip, port) = parse_addr(fields[1])?;
            let (_, rx) = fields[4].split_once(':')?;
            Some(Listener {
                ip,
                port,
                queued: u64::from_str_radix(rx, 16).ok()?,
                inode: fields[9].parse().ok()?,
            })
        })
        .collect()
}

/// Maps socket inodes to owning pids by reading every `/proc/PID/fd` link.
fn socket_owners(proc_root: &Path) -> HashMap<u64, u32> {
    let mut owners = HashMap::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return owners;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse().ok())
            {
                owners.entry(inode).or_insert(pid);
            }
        }
    }
    owners
}

/// Backlogs by (port, address) from `ss -Hltn` (Send-Q of a listener is its backlog).
fn ss_backlogs() -> HashMap<(u16, IpAddr), u64> {
    let mut backlogs = HashMap::new();
    let Ok(output) = Command::new("ss").args(["-Hltn"]).output() else {
        return backlogs;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 {
            continue;
        }
        let Ok(backlog) = fields[2].parse::<u64>() else {
            continue;
        };
        let Some((host, port)) = fields[3].rsplit_once(':') else {
            continue;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.split('%').next().unwrap_or(host);
        let ip = match host {
            "*" => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            other => match other.parse() {
                Ok(ip) => ip,
                Err(_) => continue,
            },
        };
        if let Ok(port) = port.parse() {
            backlogs.insert((port, ip), backlog);
        }
    }
    backlogs
}

fn process_name(proc_root: &Path, pid: u32) -> String {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// Adds findings for full accept queues and for descriptor limits of listening processes.
pub fn check(options: &AuditOptions, findings: &mut Vec<Finding>) {
    let root = options.proc_root.as_path();
    let mut listeners = Vec::new();
    let mut read_any = false;
    for file in ["net/tcp", "net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(root.join(file)) {
            read_any = true;
            listeners.extend(parse_listeners(&text));
        }
    }
    if !read_any {
        findings.push(Finding::skip(
            "sockets",
            "listening sockets",
            format!("cannot read {}/net/tcp or tcp6", root.display()),
        ));
        findings.push(Finding::skip(
            "limits",
            "descriptor limits",
            "no listening sockets could be read",
        ));
        return;
    }
    let somaxconn = std::fs::read_to_string(root.join("sys/net/core/somaxconn"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let backlogs = if options.system_tools {
        ss_backlogs()
    } else {
        HashMap::new()
    };
    let owners = socket_owners(root);
    let mut flagged = 0;
    for listener in &listeners {
        let exact = backlogs.get(&(listener.port, listener.ip)).copied();
        let (backlog, bound_note) = match (exact, somaxconn) {
            (Some(b), _) => (b, ""),
            (None, Some(max)) => (max, " (backlog unknown; somaxconn is its upper bound)"),
            (None, None) => continue,
        };
        if listener.queued == 0 || listener.queued * 100 < backlog.max(1) * 80 {
            continue;
        }
        flagged += 1;
        let owner = owners
            .get(&listener.inode)
            .map(|pid| format!(" owned by pid {pid} ({})", process_name(root, *pid)))
            .unwrap_or_default();
        let full = listener.queued >= backlog;
        findings.push(Finding::new(
            "sockets",
            format!("listener {}{owner}", fmt_addr(listener.ip, listener.port)),
            if full {
                Severity::Critical
            } else {
                Severity::Warn
            },
            format!("accept queue {} of {backlog}{bound_note}", listener.queued),
            "the application is not accepting fast enough; when the queue is full new \
             handshakes are dropped, or reset with tcp_abort_on_overflow=1",
            "accept faster (more workers or threads), raise the listen() backlog and \
             net.core.somaxconn",
        ));
    }
    if flagged == 0 {
        findings.push(Finding::ok(
            "sockets",
            "listening sockets",
            format!(
                "{} listening, none with a full accept queue",
                listeners.len()
            ),
        ));
    }
    limits(root, &listeners, &owners, findings);
}

fn fmt_addr(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// The soft "Max open files" limit from `/proc/PID/limits`.
pub fn parse_open_files_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn limits(
    root: &Path,
    listeners: &[Listener],
    owners: &HashMap<u64, u32>,
    findings: &mut Vec<Finding>,
) {
    let mut pids: Vec<u32> = listeners
        .iter()
        .filter_map(|l| owners.get(&l.inode).copied())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    if pids.is_empty() {
        findings.push(Finding::skip(
            "limits",
            "descriptor limits",
            if crate::running_as_root() {
                "no owner of a listening socket is visible, although the audit runs as root: \
                 the owners may be in another PID namespace (a container) or have exited"
            } else {
                "no owner of a listening socket is visible (run as root to see other users' \
                 processes)"
            },
        ));
        return;
    }
    for pid in pids {
        let dir = root.join(pid.to_string());
        let name = process_name(root, pid);
        let subject = format!("pid {pid} ({name}) open files");
        let limit = std::fs::read_to_string(dir.join("limits"))
            .ok()
            .and_then(|t| parse_open_files_limit(&t));
        let open = std::fs::read_dir(dir.join("fd")).map(|d| d.count() as u64);
        let (Some(limit), Ok(open)) = (limit, open) else {
            findings.push(Finding::skip(
                "limits",
                subject,
                "cannot read its limits or fd directory",
            ));
            continue;
        };
        let value = format!("{open} open of {limit}");
        let severity = if open * 100 >= limit.max(1) * 95 {
            Severity::Critical
        } else if open * 100 >= limit.max(1) * 80 {
            Severity::Warn
        } else {
            Severity::Ok
        };
        findings.push(if severity == Severity::Ok {
            Finding::ok("limits", subject, value)
        } else {
            Finding::new(
                "limits",
                subject,
                severity,
                value,
                "at the limit accept() fails with EMFILE, the accept queue fills and clients \
                 are dropped or reset",
                "raise LimitNOFILE= in the service unit (or ulimit -n) and look for descriptor leaks",
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_listeners_parse() {
        let v4 = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: {}:1F90 00000000:0000 0A 00000000:00000080 00:00000000 00000000     0        0 4242 1\n   1: 0100007F:0050 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 99 1\n",
            hex::v4_local()
        );
        let found = parse_listeners(&v4);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(found[0].port, 8080);
        assert_eq!(found[0].queued, 128);
        assert_eq!(found[0].inode, 4242);
    }

    mod hex {
        /// 127.0.0.1 as this host writes it in /proc/net/tcp.
        pub fn v4_local() -> String {
            format!("{:08X}", u32::from_ne_bytes([127, 0, 0, 1]))
        }
    }

    #[test]
    fn open_files_limit_parses() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_open_files_limit(text), Some(1024));
    }
}
