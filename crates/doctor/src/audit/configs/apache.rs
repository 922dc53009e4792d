//! Apache httpd: `KeepAlive`, `KeepAliveTimeout` and `MaxRequestWorkers`.

use super::{parse_duration, ConfigFacts, Endpoint, IdleTime, CHECK};
use crate::audit::{Finding, Severity};

/// Apache's default `KeepAliveTimeout` in seconds.
const DEFAULT_KEEPALIVE_TIMEOUT: f64 = 5.0;

fn directive<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, rest) = l.split_once(char::is_whitespace)?;
            key.eq_ignore_ascii_case(name).then(|| rest.trim())
        })
}

/// The addresses of `Listen [IP:]PORT [protocol]` and `<VirtualHost ADDR:PORT ...>` lines
/// (a VirtualHost address without a port, or `_default_`/`*` without one, is left out: it
/// takes the `Listen` ports, which are listed anyway).
fn listens(text: &str) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if first.eq_ignore_ascii_case("Listen") {
            out.extend(words.next().and_then(|a| Endpoint::parse(a, None)));
        } else if first.len() > 1 && first[1..].eq_ignore_ascii_case("VirtualHost") {
            for addr in words {
                let addr = addr.trim_end_matches('>').replace("_default_", "*");
                out.extend(Endpoint::parse(&addr, None));
            }
        }
    }
    out
}

/// Reads an Apache config.
pub fn facts(file: &str, text: &str) -> ConfigFacts {
    let mut facts = ConfigFacts::default();
    let keepalive_off = directive(text, "KeepAlive").is_some_and(|v| v.eq_ignore_ascii_case("off"));
    if !keepalive_off {
        let set = directive(text, "KeepAliveTimeout").and_then(|v| parse_duration(v, 1.0));
        facts.closes.push(
            IdleTime::new(
                file,
                format!("{file} apache KeepAliveTimeout"),
                set.unwrap_or(DEFAULT_KEEPALIVE_TIMEOUT),
            )
            .at(listens(text)),
        );
    }
    let label = format!("{file} apache MaxRequestWorkers");
    let workers = directive(text, "MaxRequestWorkers").or_else(|| directive(text, "MaxClients"));
    facts
        .findings
        .push(match workers.and_then(|w| w.parse::<u64>().ok()) {
        Some(n) if n < 150 => Finding::new(
            CHECK,
            label,
            Severity::Warn,
            n.to_string(),
            "when every worker is busy new connections wait in the accept queue and overflow it",
            "raise MaxRequestWorkers (and ServerLimit) to what memory allows",
        ),
        Some(n) => Finding::ok(CHECK, label, n.to_string()),
        None => Finding::ok(CHECK, label, "not set (MPM default)"),
    });
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apache_keepalive_and_workers() {
        let f = facts(
            "a.conf",
            "KeepAlive On\nKeepAliveTimeout 3\nMaxRequestWorkers 50\n",
        );
        assert_eq!(f.closes[0].seconds, 3.0);
        assert_eq!(f.findings[0].severity, Severity::Warn);
        assert!(facts("b.conf", "KeepAlive Off\n").closes.is_empty());
    }
}
