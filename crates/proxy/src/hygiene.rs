//! HTTP hygiene between client and upstream: hop-by-hop headers, `X-Forwarded-*`,
//! `Forwarded`, `Via`.

use std::net::SocketAddr;
use std::sync::Mutex;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Hop-by-hop headers (RFC 9110 section 7.6.1 and the usual extras). `Transfer-Encoding` is
/// among them: hyper re-frames the body. `HTTP2-Settings` belongs to an `h2c` upgrade, which
/// is never passed on (RFC 9113 section 3.2.1: connection-specific).
fn hop_by_hop_names() -> [&'static HeaderName; 10] {
    [
        &header::CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::UPGRADE,
        &header::TRANSFER_ENCODING,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &HTTP2_SETTINGS,
    ]
}

/// The position of `name` in [`hop_by_hop_names`] (one string match, not nine comparisons).
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "proxy-authenticate" => Some(1),
        "proxy-authorization" => Some(2),
        "te" => Some(3),
        "trailer" => Some(4),
        "upgrade" => Some(5),
        "transfer-encoding" => Some(6),
        "keep-alive" => Some(7),
        "proxy-connection" => Some(8),
        "http2-settings" => Some(9),
        _ => None,
    }
}

/// The header names a `Connection` header lists, other than `keep-alive` and `close`.
fn named_in_connection(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case("keep-alive")
                && !t.eq_ignore_ascii_case("close")
        })
}

/// Whether `token` (one entry of an `Upgrade` list, e.g. `h2c` or `websocket/13`) names h2c:
/// HTTP/2 over cleartext, which the gateway never asks an upstream to switch to.
fn is_h2c(token: &[u8]) -> bool {
    let protocol = token.split(|b| *b == b'/').next().unwrap_or_default();
    protocol.trim_ascii().eq_ignore_ascii_case(b"h2c")
}

/// Whether an `Upgrade` value lists only `h2c` (with at least one entry).
pub fn only_h2c(upgrade: &[u8]) -> bool {
    let mut entries = upgrade
        .split(|b| *b == b',')
        .filter(|t| !t.trim_ascii().is_empty())
        .peekable();
    entries.peek().is_some() && entries.all(is_h2c)
}

/// The protocol an HTTP/1.1 request asks to switch to (`Upgrade`, named in `Connection`), if any.
/// `h2c` is left out (h2c smuggling: an upstream that switched to HTTP/2 would take requests
/// the gateway never sees): a request that asks only for it goes as a plain HTTP/1.1 request,
/// its `Upgrade` and `HTTP2-Settings` removed with the other hop-by-hop headers.
pub fn upgrade_requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(header::UPGRADE)?;
    let named = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !named {
        return None;
    }
    let bytes = upgrade.as_bytes();
    if !bytes.split(|b| *b == b',').any(is_h2c) {
        return Some(upgrade.clone());
    }
    // `h2c` among others (rare): ask for the others only.
    let others: Vec<&[u8]> = bytes
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty() && !is_h2c(t))
        .collect();
    if others.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&others.join(&b", "[..])).ok()
}

/// Put the upgrade headers back after [`strip_hop_by_hop`] (they are hop-by-hop, but an
/// upgrade is passed on hop by hop: the gateway asks its upstream for the same switch).
pub fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Remove hop-by-hop headers, including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let names = hop_by_hop_names();
    // One pass over the names, no lookups: most messages carry none or only `Connection`.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // Names listed in `Connection` (other than the usual tokens) are hop-by-hop too. Most
        // messages list only `keep-alive` or `close`: no list is built for them.
        if named_in_connection(headers).next().is_some() {
            let named: Vec<HeaderName> = named_in_connection(headers)
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect();
            for name in named {
                headers.remove(name);
            }
        }
    }
    for (i, name) in names.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
}

/// The client of one connection, with its address already rendered for the forwarding
/// headers (once per connection, not once per request).
#[derive(Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// `addr` as text (`203.0.113.9:51234`), for call records: formatted once per connection.
    pub addr_text: String,
    /// The connection came to a TLS listener (`server.tls_listen`): the forwarding headers
    /// say `https`.
    pub tls: bool,
    /// `203.0.113.9` or `2001:db8::1`.
    ip: HeaderValue,
    /// `for=203.0.113.9;proto=http` or `for="[2001:db8::1]";proto=https`.
    forwarded: String,
    /// The header values for the last `Host` this client sent (a connection nearly always
    /// sends the same one): `(host, X-Forwarded-Host, Forwarded)`.
    last_host: Mutex<Option<(String, HeaderValue, HeaderValue)>>,
    /// The connection was handed to a tunnel (an upgrade such as WebSocket): the tunnel owns
    /// the socket now, so it must not be lingered and closed when hyper is done with it.
    pub upgraded: std::sync::atomic::AtomicBool,
}

impl Peer {
    /// The client at `addr`; `tls`: on a TLS listener.
    pub fn new(addr: SocketAddr, tls: bool) -> Peer {
        let ip = addr.ip().to_string();
        let proto = if tls { "https" } else { "http" };
        let forwarded = if addr.is_ipv6() {
            format!("for=\"[{ip}]\";proto={proto}")
        } else {
            format!("for={ip};proto={proto}")
        };
        Peer {
            addr,
            tls,
            addr_text: addr.to_string(),
            // An IP address is always a valid header value.
            ip: HeaderValue::from_str(&ip).unwrap_or(HeaderValue::from_static("unknown")),
            forwarded,
            last_host: Mutex::new(None),
            upgraded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// `X-Forwarded-Host` and `Forwarded` for a request to `host` (`None` when `host` cannot go
    /// into a `Forwarded` quoted string).
    fn host_values(&self, host: &str) -> Option<(HeaderValue, HeaderValue)> {
        let mut last = self.last_host.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((h, xfh, fwd)) = last.as_ref() {
            if h == host {
                return Some((xfh.clone(), fwd.clone()));
            }
        }
        let safe = host
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b';' && b != b',');
        if !safe {
            return None;
        }
        let xfh = HeaderValue::from_str(host).ok()?;
        let mut f = String::with_capacity(self.forwarded.len() + host.len() + 8);
        f.push_str(&self.forwarded);
        f.push_str(";host=\"");
        f.push_str(host);
        f.push('"');
        let fwd = HeaderValue::from_str(&f).ok()?;
        *last = Some((host.to_string(), xfh.clone(), fwd.clone()));
        Some((xfh, fwd))
    }
}

/// Add `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded` and
/// `Via` to a request going upstream.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    peer: &Peer,
    host: Option<&str>,
    version: http::Version,
) {
    // One growth of the map for the five headers, not one per insert.
    headers.reserve(5);
    let xff = match headers.get(&X_FORWARDED_FOR).map(|v| v.as_bytes()) {
        Some(prev) if !prev.is_empty() => {
            let mut joined = Vec::with_capacity(prev.len() + 2 + peer.ip.len());
            joined.extend_from_slice(prev);
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(peer.ip.as_bytes());
            HeaderValue::from_bytes(&joined).ok()
        }
        _ => Some(peer.ip.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    let proto = if peer.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    // `X-Forwarded-Host` is ours, like `X-Forwarded-Proto`: a client's own value (which it
    // could set to anything) is replaced, or removed when the host cannot be passed on.
    let forwarded = match host.and_then(|h| peer.host_values(h)) {
        Some((xfh, fwd)) => {
            headers.insert(X_FORWARDED_HOST.clone(), xfh);
            Some(fwd)
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
            HeaderValue::from_str(&peer.forwarded).ok()
        }
    };
    if let Some(v) = forwarded {
        headers.append(header::FORWARDED, v);
    }
    add_via(headers, version);
}

/// Append our `Via` entry.
pub fn add_via(headers: &mut HeaderMap, version: http::Version) {
    let v = match version {
        http::Version::HTTP_10 => "1.0 holdfast",
        http::Version::HTTP_2 => "2 holdfast",
        _ => "1.1 holdfast",
    };
    headers.append(header::VIA, HeaderValue::from_static(v));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn appends_forwarding_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        add_forwarding(
            &mut h,
            &Peer::new("127.0.0.1:5000".parse().unwrap(), false),
            Some("example.com"),
            http::Version::HTTP_11,
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.1;proto=http;host=\"example.com\""
        );
        assert_eq!(h["via"], "1.1 holdfast");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn ipv6_peer_is_quoted_in_forwarded() {
        let mut h = HeaderMap::new();
        add_forwarding(
            &mut h,
            &Peer::new("[2001:db8::1]:443".parse().unwrap(), false),
            None,
            http::Version::HTTP_11,
        );
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["forwarded"], "for=\"[2001:db8::1]\";proto=http");
    }

    #[test]
    fn a_tls_client_is_forwarded_as_https() {
        for (addr, forwarded) in [
            (
                "127.0.0.1:5000",
                "for=127.0.0.1;proto=https;host=\"example.com\"",
            ),
            (
                "[2001:db8::1]:443",
                "for=\"[2001:db8::1]\";proto=https;host=\"example.com\"",
            ),
        ] {
            let mut h = HeaderMap::new();
            let peer = Peer::new(addr.parse().unwrap(), true);
            add_forwarding(&mut h, &peer, Some("example.com"), http::Version::HTTP_2);
            assert_eq!(h["x-forwarded-proto"], "https");
            assert_eq!(h["forwarded"], forwarded);
        }
        let mut h = HeaderMap::new();
        let peer = Peer::new("127.0.0.1:5000".parse().unwrap(), true);
        add_forwarding(&mut h, &peer, None, http::Version::HTTP_11);
        assert_eq!(h["forwarded"], "for=127.0.0.1;proto=https");
    }

    #[test]
    fn strips_every_hop_by_hop_header_and_keeps_the_rest() {
        let mut h = HeaderMap::new();
        for name in [
            "te",
            "trailer",
            "upgrade",
            "proxy-connection",
            "proxy-authorization",
            "transfer-encoding",
            "x-end-to-end",
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-end-to-end"));
    }

    #[test]
    fn a_client_s_own_forwarded_host_is_replaced() {
        let peer = Peer::new("127.0.0.1:5000".parse().unwrap(), false);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        add_forwarding(
            &mut h,
            &peer,
            Some("real.example:8080"),
            http::Version::HTTP_11,
        );
        assert_eq!(h.get_all("x-forwarded-host").iter().count(), 1);
        assert_eq!(h["x-forwarded-host"], "real.example:8080");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        add_forwarding(&mut h, &peer, None, http::Version::HTTP_11);
        assert!(!h.contains_key("x-forwarded-host"), "{h:?}");
    }

    #[test]
    fn a_new_host_on_the_same_connection_gets_its_own_forwarded_values() {
        let peer = Peer::new("127.0.0.1:5000".parse().unwrap(), false);
        for host in ["a.example", "a.example", "b.example", "a.example"] {
            let mut h = HeaderMap::new();
            add_forwarding(&mut h, &peer, Some(host), http::Version::HTTP_11);
            assert_eq!(h["x-forwarded-host"], host);
            assert_eq!(
                h["forwarded"],
                format!("for=127.0.0.1;proto=http;host=\"{host}\"").as_str()
            );
        }
        // A host that cannot be quoted: no host parameter, no X-Forwarded-Host.
        let mut h = HeaderMap::new();
        add_forwarding(&mut h, &peer, Some("bad\"host"), http::Version::HTTP_11);
        assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http");
        assert!(!h.contains_key("x-forwarded-host"));
    }

    #[test]
    fn an_h2c_upgrade_is_never_passed_on() {
        let request = |upgrade: &'static str, connection: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::UPGRADE, HeaderValue::from_static(upgrade));
            h.insert(header::CONNECTION, HeaderValue::from_static(connection));
            h.insert(
                &HTTP2_SETTINGS,
                HeaderValue::from_static("AAMAAABkAAQAAP__"),
            );
            h
        };
        let h = request("h2c", "Upgrade, HTTP2-Settings");
        assert_eq!(upgrade_requested(&h), None);
        assert_eq!(upgrade_requested(&request("H2C", "upgrade")), None);
        assert_eq!(
            upgrade_requested(&request("h2c, websocket", "upgrade")).unwrap(),
            "websocket"
        );
        assert_eq!(
            upgrade_requested(&request("websocket", "upgrade")).unwrap(),
            "websocket"
        );
        // Not named in `Connection`: HTTP2-Settings goes all the same.
        let mut h = request("h2c", "upgrade");
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
        assert!(only_h2c(b"h2c") && only_h2c(b" h2c , H2C") && !only_h2c(b"h2c, websocket"));
        assert!(!only_h2c(b"") && !only_h2c(b"websocket"));
    }

    #[test]
    fn hop_by_hop_index_matches_the_name_list() {
        for (i, name) in hop_by_hop_names().iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index(&header::HOST), None);
        assert_eq!(hop_by_hop_index(&HeaderName::from_static("x-te")), None);
    }
}
