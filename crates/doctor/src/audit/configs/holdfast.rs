//! Holdfast's own TOML config: its upstream pool idle time (reuse) and its client keep-alive
//! idle time (closes), wherever they appear in the file's tables.
//!
//! Keys read: `upstreams.NAME.idle_timeout_ms`, `pool_idle_timeout_ms` and
//! `upstream_keepalive_ms` (how long idle upstream connections are kept for reuse);
//! `client_idle_timeout_ms` and `keepalive_timeout_ms` (how long an idle client connection is
//! kept). Within one upstream, an `idle_timeout_ms` that is not at least 500 ms below its
//! `server_keepalive_timeout_ms` (the backend's own idle timeout) is the idle keep-alive race.
//! A file that does not parse is a warning.

use super::{ConfigFacts, Endpoint, IdleTime, CHECK};
use crate::audit::{Finding, Severity};

const REUSE_KEYS: [&str; 2] = ["pool_idle_timeout_ms", "upstream_keepalive_ms"];
const CLOSE_KEYS: [&str; 2] = ["keepalive_timeout_ms", "client_idle_timeout_ms"];

/// The addresses in a string or an array of strings (or of tables with a `key` string).
fn addresses(value: Option<&toml::Value>, key: &str) -> Vec<Endpoint> {
    let one = |v: &toml::Value| {
        let text = v
            .as_str()
            .or_else(|| v.get(key).and_then(toml::Value::as_str))?;
        Endpoint::parse(text, Some(80))
    };
    match value {
        Some(toml::Value::Array(items)) => items.iter().filter_map(one).collect(),
        Some(v) => one(v).into_iter().collect(),
        None => Vec::new(),
    }
}

fn walk(file: &str, root: &toml::Table, path: &str, table: &toml::Table, facts: &mut ConfigFacts) {
    for (key, value) in table {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match value {
            toml::Value::Table(inner) => {
                if path == "upstreams" {
                    upstream_race(file, &here, inner, facts);
                }
                walk(file, root, &here, inner, facts)
            }
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(inner) = item {
                        walk(file, root, &format!("{here}[{i}]"), inner, facts);
                    }
                }
            }
            toml::Value::Integer(ms) if *ms >= 0 => {
                let idle =
                    IdleTime::new(file, format!("{file} holdfast {here}"), *ms as f64 / 1000.0);
                let pooled = key == "idle_timeout_ms" && path.starts_with("upstreams.");
                if pooled || REUSE_KEYS.contains(&key.as_str()) {
                    // The pool's targets (`"http://HOST:PORT"` or `{ url = ... }`).
                    facts
                        .reuse
                        .push(idle.at(addresses(table.get("targets"), "url")));
                } else if CLOSE_KEYS.contains(&key.as_str()) {
                    // The listeners of the table that sets it (`[server] listen`), else
                    // the top-level `server.listen`.
                    let here = addresses(table.get("listen"), "addr");
                    let listens = if here.is_empty() {
                        addresses(root.get("server").and_then(|s| s.get("listen")), "addr")
                    } else {
                        here
                    };
                    facts.closes.push(idle.at(listens));
                }
            }
            _ => {}
        }
    }
}

/// One upstream's pool idle time against the backend's own idle timeout.
fn upstream_race(file: &str, path: &str, table: &toml::Table, facts: &mut ConfigFacts) {
    let ms = |key: &str| table.get(key).and_then(toml::Value::as_integer);
    let (Some(idle), Some(server)) = (ms("idle_timeout_ms"), ms("server_keepalive_timeout_ms"))
    else {
        return;
    };
    let subject = format!("{file} holdfast {path}.idle_timeout_ms");
    let value = format!("{idle} ms, the upstream closes idle connections after {server} ms");
    facts.findings.push(if idle + 500 > server {
        Finding::new(
            CHECK,
            subject,
            Severity::Critical,
            value,
            "pooled connections are reused while the upstream is closing them: the idle \
             keep-alive race, answered with a reset",
            format!("idle_timeout_ms = {}", (server - 500).max(0)),
        )
    } else {
        Finding::ok(CHECK, subject, value)
    });
}

/// Reads a Holdfast TOML config.
pub fn facts(file: &str, text: &str) -> ConfigFacts {
    let mut facts = ConfigFacts::default();
    match text.parse::<toml::Table>() {
        Ok(table) => {
            walk(file, &table, "", &table, &mut facts);
            facts.findings.push(Finding::ok(
                CHECK,
                format!("{file} holdfast"),
                format!(
                    "parsed; {} upstream idle time(s), {} client idle time(s)",
                    facts.reuse.len(),
                    facts.closes.len()
                ),
            ));
        }
        Err(e) => {
            // Where: line and column (1-based, in characters) of the error's span.
            let place = e.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                (line, column)
            });
            let (value, fix) = match place {
                Some((line, column)) => (
                    format!(
                        "does not parse at line {line}, column {column}: {}",
                        e.message()
                    ),
                    format!("fix the TOML syntax at line {line}, column {column} of {file}"),
                ),
                None => (
                    format!("does not parse: {}", e.message()),
                    format!("fix the TOML syntax of {file} (`holdfast check` shows the place)"),
                ),
            };
            facts.findings.push(Finding::new(
                CHECK,
                format!("{file} holdfast"),
                Severity::Warn,
                value,
                "Holdfast will refuse to start with this config",
                fix,
            ))
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdfast_idle_keys_are_found_in_nested_tables() {
        let f = facts(
            "h.toml",
            "[routes.api]\npool_idle_timeout_ms = 90000\n[listen]\nkeepalive_timeout_ms = 5000\n",
        );
        assert_eq!(f.reuse[0].seconds, 90.0);
        assert_eq!(f.closes[0].seconds, 5.0);
        assert_eq!(
            facts("bad.toml", "x = [").findings[0].severity,
            Severity::Warn
        );
        let bad = &facts("bad.toml", "[a]\nb = 1\nthis is = not toml [[[\n").findings[0];
        assert!(bad.value.contains("line 3, column 6"), "{bad:?}");
        assert!(bad.fix.contains("line 3, column 6"), "{bad:?}");
    }

    #[test]
    fn holdfast_listen_and_targets_are_the_addresses_of_its_idle_times() {
        let f = facts(
            "h.toml",
            "[server]\nlisten = [\"127.0.0.1:24700\"]\nclient_idle_timeout_ms = 75000\n\
             [upstreams.api]\ntargets = [\"http://127.0.0.1:24601\", { url = \"https://b:8443\" }]\n\
             idle_timeout_ms = 29800\n",
        );
        let shown = |v: &[Endpoint]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(shown(&f.closes[0].addrs), ["127.0.0.1:24700"]);
        assert_eq!(shown(&f.reuse[0].addrs), ["127.0.0.1:24601", "b:8443"]);
    }
}
