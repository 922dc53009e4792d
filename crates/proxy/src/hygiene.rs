//! HTTP hygiene between client and upstream: hop-by-hop headers, `X-Forwarded-*`,
//! `Forwarded`, `Via`.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Remove hop-by-hop headers, including those named in `Connection`. `Transfer-Encoding` is
/// removed too: hyper re-frames the body.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Add `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded` and
/// `Via` to a request going upstream.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    client: SocketAddr,
    host: Option<&str>,
    version: http::Version,
) {
    let ip = client.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
        _ => ip.clone(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    let for_value = if client.is_ipv6() {
        format!("\"[{ip}]\"")
    } else {
        ip
    };
    let mut forwarded = format!("for={for_value};proto=http");
    if let Some(host) = host.filter(|h| {
        h.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b';' && b != b',')
    }) {
        forwarded.push_str(&format!(";host=\"{host}\""));
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.entry("x-forwarded-host").or_insert(v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
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
            "127.0.0.1:5000".parse().unwrap(),
            Some("example.com"),
            http::Version::HTTP_11,
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.1;proto=http;host=\"example.com\""
        );
        assert_eq!(h["via"], "1.1 holdfast");
    }
}
