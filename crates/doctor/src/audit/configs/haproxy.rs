//! haproxy: timeouts, idle server-connection reuse and `maxconn`.

use super::{parse_duration, ConfigFacts, Endpoint, IdleTime, CHECK};
use crate::audit::{Finding, Severity};

/// haproxy's default `pool-purge-delay`: how long idle server connections stay for reuse.
const DEFAULT_POOL_PURGE: f64 = 5.0;

/// One section (`global`, `defaults`, `frontend x`...) with its lines.
struct Section {
    name: String,
    lines: Vec<Vec<String>>,
}

fn sections(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let Some(first) = words.first() else { continue };
        let starts_section = !line.starts_with(char::is_whitespace)
            && matches!(
                first.as_str(),
                "global" | "defaults" | "frontend" | "backend" | "listen" | "resolvers" | "peers"
            );
        if starts_section {
            out.push(Section {
                name: words.join(" "),
                lines: Vec::new(),
            });
        } else if let Some(section) = out.last_mut() {
            section.lines.push(words);
        }
    }
    out
}

fn value<'a>(section: &'a Section, key: &[&str]) -> Option<&'a str> {
    section
        .lines
        .iter()
        .find(|l| l.len() > key.len() && l.iter().zip(key).all(|(a, b)| a == b))
        .map(|l| l[key.len()].as_str())
}

/// Reads a haproxy config.
pub fn facts(file: &str, text: &str) -> ConfigFacts {
    let all = sections(text);
    let mut facts = ConfigFacts::default();
    let global = all.iter().find(|s| s.name == "global");
    let maxconn = global.and_then(|g| value(g, &["maxconn"]));
    let label = format!("{file} haproxy global maxconn");
    facts.findings.push(match maxconn.map(str::parse::<u64>) {
        None => Finding::new(
            CHECK,
            label,
            Severity::Info,
            "not set (derived from the descriptor limit)",
            "past maxconn haproxy stops accepting; new connections wait in the kernel queue and \
             overflow it",
            "set `maxconn` in the global section to what the host can serve",
        ),
        Some(Ok(n)) if n < 1000 => Finding::new(
            CHECK,
            label,
            Severity::Warn,
            n.to_string(),
            "a low maxconn makes bursts queue in the kernel, where the accept queue overflows",
            "raise `maxconn` in the global section (and the descriptor limit with it)",
        ),
        Some(Ok(n)) => Finding::ok(CHECK, label, n.to_string()),
        Some(Err(_)) => Finding::new(
            CHECK,
            label,
            Severity::Warn,
            maxconn.unwrap_or_default(),
            "not a number; haproxy will refuse this config",
            "maxconn <number>",
        ),
    });
    let proxies: Vec<&Section> = all
        .iter()
        .filter(|s| {
            s.name != "global" && !s.name.starts_with("resolvers") && !s.name.starts_with("peers")
        })
        .collect();
    let defaults = all.iter().find(|s| s.name.starts_with("defaults"));
    let timeout = |s: &Section, which: &str| {
        value(s, &["timeout", which])
            .or_else(|| defaults.and_then(|d| value(d, &["timeout", which])))
            .and_then(|v| parse_duration(v, 0.001))
    };
    for section in &proxies {
        for which in ["client", "server"] {
            let applies = match which {
                "client" => !section.name.starts_with("backend"),
                _ => !section.name.starts_with("frontend"),
            };
            if applies && !section.name.starts_with("defaults") && timeout(section, which).is_none()
            {
                facts.findings.push(Finding::new(
                    CHECK,
                    format!("{file} haproxy {} timeout {which}", section.name),
                    Severity::Warn,
                    "not set (infinite)",
                    "idle connections are never closed by haproxy, so a NAT or load balancer \
                     in between drops or resets them instead",
                    format!("timeout {which} 60s (in defaults)"),
                ));
            }
        }
        if section.name.starts_with("frontend") || section.name.starts_with("listen") {
            let idle = value(section, &["timeout", "http-keep-alive"])
                .or_else(|| defaults.and_then(|d| value(d, &["timeout", "http-keep-alive"])))
                .and_then(|v| parse_duration(v, 0.001))
                .or_else(|| timeout(section, "client"));
            if let Some(seconds) = idle {
                // `bind ADDR[,ADDR...] [options]`; a `listen` section may also give its
                // address on its header line.
                let header = section.name.split_whitespace().nth(2).map(str::to_string);
                let binds = section
                    .lines
                    .iter()
                    .filter(|l| l.first().map(String::as_str) == Some("bind"))
                    .filter_map(|l| l.get(1).cloned())
                    .chain(header)
                    .flat_map(|a| {
                        a.split(',')
                            .filter_map(|one| Endpoint::parse(one, None))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                facts.closes.push(
                    IdleTime::new(
                        file,
                        format!("{file} haproxy {} timeout http-keep-alive", section.name),
                        seconds,
                    )
                    .at(binds),
                );
            }
        }
        if section.name.starts_with("backend") || section.name.starts_with("listen") {
            if let Some(seconds) = timeout(section, "server").filter(|s| *s < 30.0) {
                facts.findings.push(Finding::new(
                    CHECK,
                    format!("{file} haproxy {} timeout server", section.name),
                    Severity::Warn,
                    super::secs(seconds),
                    "answers slower than this are cut off and the connection closed mid-request",
                    "raise `timeout server` above the slowest legitimate request",
                ));
            }
            let reuse = value(section, &["http-reuse"])
                .or_else(|| defaults.and_then(|d| value(d, &["http-reuse"])));
            if reuse != Some("never") {
                let purge = global
                    .and_then(|g| value(g, &["pool-purge-delay"]))
                    .or_else(|| value(section, &["pool-purge-delay"]))
                    .and_then(|v| parse_duration(v, 0.001))
                    .unwrap_or(DEFAULT_POOL_PURGE);
                // `server NAME ADDR[:PORT] [options]` (no port: the client's, not known here).
                let servers = section
                    .lines
                    .iter()
                    .filter(|l| l.first().map(String::as_str) == Some("server"))
                    .filter_map(|l| l.get(2))
                    .filter_map(|a| Endpoint::parse(a, None))
                    .collect();
                facts.reuse.push(
                    IdleTime::new(
                        file,
                        format!("{file} haproxy {} pool-purge-delay", section.name),
                        purge,
                    )
                    .at(servers),
                );
            }
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_sections_give_timeouts_and_limits() {
        let cfg = "global\n    maxconn 256\ndefaults\n    timeout client 30s\n    timeout http-keep-alive 4000\nfrontend web\n    bind :80\nbackend app\n    timeout server 10s\n";
        let f = facts("h.cfg", cfg);
        assert!(f
            .findings
            .iter()
            .any(|x| x.subject.contains("maxconn") && x.severity == Severity::Warn));
        assert!(f
            .findings
            .iter()
            .any(|x| x.subject.contains("timeout server") && x.value == "10s"));
        assert_eq!(f.closes[0].seconds, 4.0);
        assert_eq!(f.reuse[0].seconds, 5.0);
    }
}
