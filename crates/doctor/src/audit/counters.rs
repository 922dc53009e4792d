//! Reset-related kernel counters from `/proc/net/snmp` and `/proc/net/netstat`, as totals
//! and, with a watch interval, as deltas.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::{AuditOptions, Finding, Severity};

/// A counter we report: its `nstat` name, the file group and key, and what it means.
struct CounterSpec {
    name: &'static str,
    group: &'static str,
    key: &'static str,
    why: &'static str,
    fix: &'static str,
    /// Whether a non-zero value (or delta) is a warning by itself.
    alarming: bool,
}

const SPECS: [CounterSpec; 9] = [
    CounterSpec {
        name: "TcpOutRsts",
        group: "Tcp",
        key: "OutRsts",
        why: "resets this host sent; every one broke or refused a connection",
        fix: "look at the other counters and the listening sockets to see which kind",
        alarming: false,
    },
    CounterSpec {
        name: "TcpEstabResets",
        group: "Tcp",
        key: "EstabResets",
        why: "established connections that ended in a reset (sent or received)",
        fix: "run `holdfast pcap` on a capture to see who sent them",
        alarming: false,
    },
    CounterSpec {
        name: "TcpExtListenOverflows",
        group: "TcpExt",
        key: "ListenOverflows",
        why: "a listener's accept queue was full; with tcp_abort_on_overflow=1 each one is a reset",
        fix: "raise the listen backlog and net.core.somaxconn, and accept faster (more workers)",
        alarming: true,
    },
    CounterSpec {
        name: "TcpExtListenDrops",
        group: "TcpExt",
        key: "ListenDrops",
        why: "connection attempts dropped at a listener (queue full or no memory)",
        fix: "raise the listen backlog and net.core.somaxconn; check the accept loop",
        alarming: true,
    },
    CounterSpec {
        name: "TcpExtTCPAbortOnData",
        group: "TcpExt",
        key: "TCPAbortOnData",
        why: "an application closed a socket with unread data, which sends a reset",
        fix: "read the request fully (or shut down the write side and drain) before close()",
        alarming: false,
    },
    CounterSpec {
        name: "TcpExtTCPAbortOnClose",
        group: "TcpExt",
        key: "TCPAbortOnClose",
        why: "an application closed a socket while data was still arriving, which sends a reset",
        fix: "drain the connection before close(); avoid SO_LINGER 0",
        alarming: false,
    },
    CounterSpec {
        name: "TcpExtTCPAbortOnMemory",
        group: "TcpExt",
        key: "TCPAbortOnMemory",
        why: "the kernel ran out of TCP memory and reset connections",
        fix: "raise net.ipv4.tcp_mem or reduce per-connection buffers; find the socket leak",
        alarming: true,
    },
    CounterSpec {
        name: "TcpExtTCPAbortOnTimeout",
        group: "TcpExt",
        key: "TCPAbortOnTimeout",
        why: "connections given up after retransmission or keepalive timeouts",
        fix: "look for packet loss or a dead peer; check middlebox idle timeouts",
        alarming: false,
    },
    CounterSpec {
        name: "TcpExtTCPAbortOnLinger",
        group: "TcpExt",
        key: "TCPAbortOnLinger",
        why: "connections reset because of SO_LINGER/linger2 timeouts",
        fix: "avoid SO_LINGER with a zero or short timeout in the application",
        alarming: false,
    },
];

/// One counter: its total and, when watched, its change over the interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CounterReading {
    /// The `nstat` name, e.g. `TcpExtListenOverflows`.
    pub name: &'static str,
    /// The total since boot.
    pub total: u64,
    /// The change over the watch interval.
    pub delta: Option<u64>,
}

/// Parses the "Group: key key..." / "Group: value value..." line pairs of snmp/netstat.
pub fn parse_pairs(text: &str) -> HashMap<(String, String), u64> {
    let mut values = HashMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [header, data] = pair else { continue };
        let (Some((group, keys)), Some((group2, nums))) =
            (header.split_once(':'), data.split_once(':'))
        else {
            continue;
        };
        if group != group2 {
            continue;
        }
        for (key, num) in keys.split_whitespace().zip(nums.split_whitespace()) {
            // Some snmp values (MaxConn) are -1; those are not counters we report.
            if let Ok(n) = num.parse::<u64>() {
                values.insert((group.to_string(), key.to_string()), n);
            }
        }
    }
    values
}

fn read_all(proc_root: &Path) -> Result<HashMap<(String, String), u64>, String> {
    let mut all = HashMap::new();
    for file in ["net/snmp", "net/netstat"] {
        let path = proc_root.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        all.extend(parse_pairs(&text));
    }
    Ok(all)
}

/// Reads the counters (twice with a watch interval) and adds one finding per counter.
pub fn check(options: &AuditOptions, findings: &mut Vec<Finding>) -> Vec<CounterReading> {
    let first = match read_all(&options.proc_root) {
        Ok(values) => values,
        Err(reason) => {
            findings.push(Finding::skip("counters", "kernel TCP counters", reason));
            return Vec::new();
        }
    };
    let second = options.watch.map(|interval| {
        std::thread::sleep(interval);
        read_all(&options.proc_root).unwrap_or_else(|_| first.clone())
    });
    let mut readings = Vec::new();
    for spec in &SPECS {
        let key = (spec.group.to_string(), spec.key.to_string());
        let Some(&start) = first.get(&key) else {
            findings.push(Finding::skip(
                "counters",
                spec.name,
                "not reported by this kernel",
            ));
            continue;
        };
        let end = second
            .as_ref()
            .and_then(|s| s.get(&key).copied())
            .unwrap_or(start);
        let delta = second.as_ref().map(|_| end.saturating_sub(start));
        readings.push(CounterReading {
            name: spec.name,
            total: end,
            delta,
        });
        findings.push(judge(spec, end, delta, options));
    }
    readings
}

fn judge(spec: &CounterSpec, total: u64, delta: Option<u64>, options: &AuditOptions) -> Finding {
    let value = match (delta, options.watch) {
        (Some(d), Some(w)) => format!("{total} total, +{d} in {:.1}s", w.as_secs_f64()),
        _ => format!("{total} total since boot"),
    };
    // With a watch, judge what is happening now; without, judge the totals.
    let recent = delta.unwrap_or(total);
    let severity = match (recent, spec.alarming, delta.is_some()) {
        (0, _, _) => Severity::Ok,
        (_, true, true) => Severity::Critical,
        (_, true, false) => Severity::Warn,
        (_, false, _) => Severity::Info,
    };
    if severity == Severity::Ok {
        return Finding::ok("counters", spec.name, value);
    }
    Finding::new("counters", spec.name, severity, value, spec.why, spec.fix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_by_group_and_key() {
        let text = "Tcp: RtoAlgorithm MaxConn OutRsts\nTcp: 1 -1 42\nUdp: InDatagrams\nUdp: 7\n";
        let v = parse_pairs(text);
        assert_eq!(v[&("Tcp".into(), "OutRsts".into())], 42);
        assert_eq!(v[&("Udp".into(), "InDatagrams".into())], 7);
        assert!(!v.contains_key(&("Tcp".into(), "MaxConn".into())));
    }
}
