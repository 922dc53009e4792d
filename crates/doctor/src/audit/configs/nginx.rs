//! nginx: upstream keepalive, client keep-alive, proxy timeouts and worker limits.

use super::{parse_duration, ConfigFacts, Endpoint, IdleTime, CHECK};
use crate::audit::{Finding, Severity};

/// nginx's default upstream `keepalive_timeout` (when `keepalive N` is set).
const DEFAULT_UPSTREAM_KEEPALIVE: f64 = 60.0;
/// nginx's default client `keepalive_timeout`.
const DEFAULT_CLIENT_KEEPALIVE: f64 = 75.0;

/// One directive with the blocks it sits in (e.g. `["http", "upstream app"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Enclosing blocks, outermost first.
    pub blocks: Vec<String>,
    /// The directive name.
    pub name: String,
    /// Its arguments.
    pub args: Vec<String>,
}

/// Splits an nginx config into directives (comments removed; quotes kept as is).
pub fn directives(text: &str) -> Vec<Directive> {
    let mut out = Vec::new();
    let mut blocks: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        for ch in line.chars().chain(std::iter::once(' ')) {
            match ch {
                '{' => {
                    blocks.push(current.split_whitespace().collect::<Vec<_>>().join(" "));
                    current.clear();
                }
                '}' => {
                    blocks.pop();
                    current.clear();
                }
                ';' => {
                    let mut words = current.split_whitespace().map(str::to_string);
                    if let Some(name) = words.next() {
                        out.push(Directive {
                            blocks: blocks.clone(),
                            name,
                            args: words.collect(),
                        });
                    }
                    current.clear();
                }
                c => current.push(c),
            }
        }
    }
    out
}

/// Reads an nginx config.
pub fn facts(file: &str, text: &str) -> ConfigFacts {
    let all = directives(text);
    let mut facts = ConfigFacts::default();
    let in_upstream = |d: &Directive| d.blocks.last().is_some_and(|b| b.starts_with("upstream"));
    // Upstream keepalive: reuse of idle upstream connections.
    for upstream in all
        .iter()
        .filter(|d| in_upstream(d) && d.name == "keepalive")
    {
        let block = upstream.blocks.last().cloned().unwrap_or_default();
        let timeout = all
            .iter()
            .find(|d| d.blocks.last() == Some(&block) && d.name == "keepalive_timeout")
            .and_then(|d| d.args.first())
            .and_then(|a| parse_duration(a, 1.0));
        let seconds = timeout.unwrap_or(DEFAULT_UPSTREAM_KEEPALIVE);
        let label = format!("{file} nginx {block} keepalive_timeout");
        let servers = all
            .iter()
            .filter(|d| d.blocks.last() == Some(&block) && d.name == "server")
            .filter_map(|d| d.args.first())
            .filter_map(|a| Endpoint::parse(a, Some(80)))
            .collect();
        facts
            .reuse
            .push(IdleTime::new(file, label.clone(), seconds).at(servers));
        if timeout.is_none() {
            facts.findings.push(Finding::new(
                CHECK,
                label,
                Severity::Warn,
                format!("{DEFAULT_UPSTREAM_KEEPALIVE}s (nginx default, not set)"),
                "nginx keeps idle upstream connections 60 s by default, longer than many \
                 backends keep them (Node.js 5 s, Apache 5 s, gunicorn 2 s): the idle \
                 keep-alive race",
                "set `keepalive_timeout` in the upstream block below the backend's idle timeout",
            ));
        }
        let http11 = all.iter().any(|d| {
            d.name == "proxy_http_version" && d.args.first().map(String::as_str) == Some("1.1")
        });
        if !http11 {
            facts.findings.push(Finding::new(
                CHECK,
                format!("{file} nginx proxy_http_version"),
                Severity::Info,
                "not 1.1",
                "upstream `keepalive` has no effect without HTTP/1.1 to the upstream",
                "proxy_http_version 1.1; proxy_set_header Connection \"\";",
            ));
        }
    }
    // Client-facing keep-alive: how long nginx keeps idle client connections.
    let client = all
        .iter()
        .find(|d| d.name == "keepalive_timeout" && !in_upstream(d))
        .and_then(|d| d.args.first())
        .and_then(|a| parse_duration(a, 1.0));
    let listens = all
        .iter()
        .filter(|d| d.name == "listen" && !in_upstream(d))
        .filter_map(|d| d.args.first())
        .filter_map(|a| Endpoint::parse(a, Some(80)))
        .collect();
    facts.closes.push(
        IdleTime::new(
            file,
            format!("{file} nginx keepalive_timeout"),
            client.unwrap_or(DEFAULT_CLIENT_KEEPALIVE),
        )
        .at(listens),
    );
    for read in all.iter().filter(|d| d.name == "proxy_read_timeout") {
        let Some(seconds) = read.args.first().and_then(|a| parse_duration(a, 1.0)) else {
            continue;
        };
        let label = format!("{file} nginx proxy_read_timeout");
        facts.findings.push(if seconds < 30.0 {
            Finding::new(
                CHECK,
                label,
                Severity::Warn,
                super::secs(seconds),
                "a request whose answer takes longer is cut off: nginx closes the upstream \
                 connection mid-request and the client gets an error or a reset",
                "raise proxy_read_timeout above the slowest legitimate request (e.g. 120s)",
            )
        } else {
            Finding::ok(CHECK, label, super::secs(seconds))
        });
    }
    limits(file, &all, &mut facts);
    facts
}

fn limits(file: &str, all: &[Directive], facts: &mut ConfigFacts) {
    let workers = all
        .iter()
        .find(|d| d.name == "worker_connections")
        .and_then(|d| d.args.first())
        .and_then(|a| a.parse::<u64>().ok());
    let rlimit = all
        .iter()
        .find(|d| d.name == "worker_rlimit_nofile")
        .and_then(|d| d.args.first())
        .and_then(|a| a.parse::<u64>().ok());
    let label = format!("{file} nginx worker_connections");
    let connections = workers.unwrap_or(512);
    let shown = match workers {
        Some(w) => w.to_string(),
        None => "512 (nginx default, not set)".to_string(),
    };
    facts.findings.push(match rlimit {
        Some(limit) if limit < connections * 2 => Finding::new(
            CHECK,
            label,
            Severity::Warn,
            format!("{shown}, worker_rlimit_nofile {limit}"),
            "a proxied connection uses two descriptors; workers run out of descriptors before \
             reaching worker_connections and drop connections",
            format!("worker_rlimit_nofile {};", connections * 2),
        ),
        _ if connections < 1024 => Finding::new(
            CHECK,
            label,
            Severity::Info,
            shown,
            "when every worker is at worker_connections, new connections wait in the accept \
             queue and overflow it under load",
            "worker_connections 4096; (and worker_rlimit_nofile 8192;)",
        ),
        _ => Finding::ok(CHECK, label, shown),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_keep_their_blocks() {
        let conf = "events { worker_connections 64; }\nhttp {\n upstream app { server 10.0.0.1:80; keepalive 16; } # pool\n keepalive_timeout 30s;\n}\n";
        let d = directives(conf);
        let ka = d.iter().find(|d| d.name == "keepalive").unwrap();
        assert_eq!(ka.blocks, vec!["http", "upstream app"]);
        assert_eq!(ka.args, vec!["16"]);
        let facts = facts("n.conf", conf);
        assert_eq!(facts.reuse[0].seconds, 60.0);
        assert_eq!(facts.closes[0].seconds, 30.0);
    }
}
