//! Proxy environment variables (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`), whether
//! they apply to the URL, and a test of the proxy by itself.

use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

use crate::live::http::{self, Conn, Outcome};
use crate::live::target::Target;
use crate::live::tcp;

/// The proxy that applies to a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySetting {
    /// The variable it came from.
    pub var: String,
    /// Its value.
    pub url: String,
}

/// What the environment says for a URL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyEnv {
    /// The proxy that applies, if any.
    pub proxy: Option<ProxySetting>,
    /// Variables set (name=value), for the report.
    pub set: Vec<String>,
    /// The NO_PROXY entry that excludes the URL's host, if one does.
    pub excluded_by: Option<String>,
}

/// Reads the proxy variables through `env` (lowercase names win, as in curl).
pub fn read(target: &Target, env: &dyn Fn(&str) -> Option<String>) -> ProxyEnv {
    // The name actually set is the one reported (`http_proxy`, not `HTTP_PROXY`).
    let get = |name: &str| {
        let lower = name.to_ascii_lowercase();
        let found = [lower.as_str(), name].into_iter().find_map(|n| {
            env(n)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (n.to_string(), v))
        });
        found
    };
    let mut out = ProxyEnv::default();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
        if let Some((n, v)) = get(name) {
            out.set.push(format!("{n}={v}"));
        }
    }
    let scheme_var = if target.tls {
        "HTTPS_PROXY"
    } else {
        "HTTP_PROXY"
    };
    let Some((var, url)) = get(scheme_var).or_else(|| get("ALL_PROXY")) else {
        return out;
    };
    if let Some((_, no_proxy)) = get("NO_PROXY") {
        let host = target.host.to_ascii_lowercase();
        let host_ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split('%')
            .next()
            .unwrap_or("")
            .parse::<IpAddr>()
            .ok();
        for entry in no_proxy.split(',').map(|e| e.trim().to_ascii_lowercase()) {
            if entry.is_empty() {
                continue;
            }
            // A CIDR block (`10.77.2.0/24`, `fd00::/8`), as curl accepts: an IP host in it.
            if let Some((net, bits)) = entry.split_once('/') {
                let net = net.trim_start_matches('[').trim_end_matches(']');
                if let (Some(ip), Ok(net), Ok(bits)) = (host_ip, net.parse(), bits.parse()) {
                    if in_cidr(ip, net, bits) {
                        out.excluded_by = Some(entry);
                        return out;
                    }
                }
                continue;
            }
            let bare = entry.trim_start_matches('.').trim_start_matches("*.");
            let bare = if bare.starts_with('[') || bare.parse::<IpAddr>().is_ok() {
                // An IP literal, IPv6 with or without brackets (and a port after `]:`).
                bare.trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap_or(bare)
            } else {
                bare.split(':').next().unwrap_or(bare)
            };
            let same_ip = host_ip.is_some_and(|ip| bare.parse::<IpAddr>() == Ok(ip));
            let matches = entry == "*"
                || same_ip
                || (!bare.is_empty() && (host == bare || host.ends_with(&format!(".{bare}"))));
            if matches {
                out.excluded_by = Some(entry);
                return out;
            }
        }
    }
    out.proxy = Some(ProxySetting { var, url });
    out
}

/// Whether `ip` is in `net/bits` (an IPv4 block holds IPv4 addresses only, IPv6 likewise;
/// an IPv4-mapped IPv6 address counts as its IPv4 address).
fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The scheme of a proxy the doctor cannot test (`socks5`, `https`...), or None for an
/// `http://` proxy or one written without a scheme (taken as http, as curl does).
pub fn untestable_scheme(proxy: &ProxySetting) -> Option<String> {
    let (scheme, _) = proxy.url.split_once("://")?;
    (!scheme.eq_ignore_ascii_case("http")).then(|| scheme.to_ascii_lowercase())
}

/// Tests a proxy by itself: connect to it, then ask it for the URL (GET for http, CONNECT
/// for https). `Ok` carries what it answered; `Err` why it failed.
pub fn test(proxy: &ProxySetting, target: &Target, timeout: Duration) -> Result<String, String> {
    let with_scheme = if proxy.url.contains("://") {
        proxy.url.clone()
    } else {
        format!("http://{}", proxy.url)
    };
    if !with_scheme.starts_with("http://") {
        return Err(format!(
            "{}: only http:// proxies can be tested ({})",
            proxy.var, proxy.url
        ));
    }
    let parsed = Target::parse(&with_scheme)
        .map_err(|e| format!("{}={} cannot be parsed: {e}", proxy.var, proxy.url))?;
    let addr = (parsed.host.as_str(), parsed.port)
        .to_socket_addrs()
        .map_err(|e| format!("proxy host {} does not resolve: {e}", parsed.host))?
        .next()
        .ok_or_else(|| format!("proxy host {} has no address", parsed.host))?;
    let stream = tcp::connect(addr, None, timeout)
        .map_err(|e| format!("connect to the proxy {addr}: {e}"))?;
    let mut conn = Conn::plain(stream);
    let authority = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let request = if target.tls {
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").into_bytes()
    } else {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: holdfast-doctor\r\nConnection: close\r\n\r\n",
            target.url,
            target.host_header()
        )
        .into_bytes()
    };
    if target.tls {
        // A CONNECT answer has no body; read only the head.
        use std::io::{Read, Write};
        let _ = conn.tcp().set_read_timeout(Some(timeout));
        conn.write_all(&request)
            .map_err(|e| format!("proxy {addr}: {e}"))?;
        let mut head = [0u8; 1024];
        let n = conn.read(&mut head).map_err(|e| {
            if http::is_reset(&e) {
                format!("proxy {addr} reset the CONNECT")
            } else {
                format!("proxy {addr}: {e}")
            }
        })?;
        let text = String::from_utf8_lossy(&head[..n]);
        let status = text.split_whitespace().nth(1).unwrap_or("");
        return if status.starts_with('2') {
            Ok(format!(
                "proxy {addr} accepted CONNECT {authority} ({status})"
            ))
        } else {
            Err(format!(
                "proxy {addr} refused CONNECT {authority}: {}",
                text.lines().next().unwrap_or("no answer")
            ))
        };
    }
    match http::exchange(&mut conn, &request, timeout) {
        Outcome::Response(r) if r.status == 502 || r.status == 503 || r.status == 504 => {
            Err(format!(
                "proxy {addr} answered {} (it cannot reach the site)",
                r.status
            ))
        }
        Outcome::Response(r) => Ok(format!("proxy {addr} answered {}", r.status)),
        Outcome::Reset(_) => Err(format!("proxy {addr} reset the request")),
        other => Err(format!("proxy {addr}: {}", other.word())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn scheme_proxy_applies_unless_no_proxy_matches() {
        let target = Target::parse("https://api.example.org/x").unwrap();
        let e = env(&[
            ("HTTPS_PROXY", "http://10.0.0.1:3128"),
            ("no_proxy", "localhost"),
        ]);
        let got = read(&target, &e);
        assert_eq!(got.proxy.unwrap().var, "HTTPS_PROXY");
        let e = env(&[
            ("ALL_PROXY", "http://p:1"),
            ("NO_PROXY", "foo, .example.org"),
        ]);
        let got = read(&target, &e);
        assert!(got.proxy.is_none());
        assert_eq!(got.excluded_by.as_deref(), Some(".example.org"));
        let plain = Target::parse("http://api.example.org/").unwrap();
        assert!(read(&plain, &env(&[("HTTPS_PROXY", "http://p:1")]))
            .proxy
            .is_none());
    }

    #[test]
    fn only_http_proxies_are_testable() {
        let setting = |url: &str| ProxySetting {
            var: "ALL_PROXY".into(),
            url: url.into(),
        };
        assert_eq!(untestable_scheme(&setting("http://p:1")), None);
        assert_eq!(untestable_scheme(&setting("HTTP://p:1")), None);
        assert_eq!(untestable_scheme(&setting("p:3128")), None);
        assert_eq!(
            untestable_scheme(&setting("socks5://127.0.0.1:1080")).as_deref(),
            Some("socks5")
        );
        assert_eq!(
            untestable_scheme(&setting("socks5h://h:1")).as_deref(),
            Some("socks5h")
        );
    }

    #[test]
    fn the_variable_actually_set_is_named() {
        let target = Target::parse("http://10.77.2.2:24080/").unwrap();
        let got = read(&target, &env(&[("http_proxy", "http://127.0.0.1:9")]));
        assert_eq!(got.proxy.unwrap().var, "http_proxy");
        assert_eq!(got.set, ["http_proxy=http://127.0.0.1:9"]);
        let got = read(&target, &env(&[("HTTP_PROXY", "http://127.0.0.1:9")]));
        assert_eq!(got.proxy.unwrap().var, "HTTP_PROXY");
    }

    #[test]
    fn no_proxy_cidr_blocks_and_ip_literals_are_honoured() {
        let v4 = Target::parse("http://10.77.2.2:24080/").unwrap();
        let e = env(&[
            ("http_proxy", "http://127.0.0.1:9"),
            ("no_proxy", "localhost, 10.77.2.0/24"),
        ]);
        let got = read(&v4, &e);
        assert!(got.proxy.is_none(), "{got:?}");
        assert_eq!(got.excluded_by.as_deref(), Some("10.77.2.0/24"));
        let outside = Target::parse("http://10.77.3.2:24080/").unwrap();
        assert!(read(&outside, &e).proxy.is_some());
        let v6 = Target::parse("http://[fd77:2::2]:24080/").unwrap();
        let e6 = env(&[("http_proxy", "http://p:1"), ("no_proxy", "fd77::/16")]);
        assert!(read(&v6, &e6).proxy.is_none());
        let lit = env(&[("http_proxy", "http://p:1"), ("no_proxy", "[fd77:2::2]")]);
        assert!(read(&v6, &lit).proxy.is_none());
        let none = env(&[("http_proxy", "http://p:1"), ("no_proxy", "10.0.0.0/8")]);
        assert!(read(&v6, &none).proxy.is_some());
    }
}
