//! The URL under test: scheme, host, port and request path.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use crate::live::DoctorError;

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// True for https.
    pub tls: bool,
    /// The host name or address (without IPv6 brackets).
    pub host: String,
    /// The port (default 80/443).
    pub port: u16,
    /// The IPv6 zone of a link-local literal (`[fe80::1%25eth0]`) as an interface index; 0
    /// when there is none.
    pub scope_id: u32,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Target {
    /// Parses an http or https URL.
    pub fn parse(url: &str) -> Result<Self, DoctorError> {
        let bad = |reason: &str| DoctorError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (port_text, zone) = authority_parts(url).map_err(|r| bad(&r))?;
        let scope_id = match &zone {
            Some(zone) => scope_of(zone).map_err(|r| bad(&r))?,
            None => 0,
        };
        // http::Uri knows nothing of zones: parse the URL without one.
        let without_zone = match &zone {
            Some(zone) => url.replacen(&format!("%25{zone}"), "", 1),
            None => url.to_string(),
        };
        let uri: http::Uri = without_zone
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(bad(&format!("scheme {other:?} is not http or https"))),
            None => return Err(bad("no scheme; write http://HOST/ or https://HOST/")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = match port_text {
            Some(text) => parse_port(&text).map_err(|r| bad(&r))?,
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
        };
        if zone.is_some()
            && !host
                .parse::<std::net::Ipv6Addr>()
                .is_ok_and(|ip| ip.is_unicast_link_local())
        {
            return Err(bad(
                "a zone (%25...) is only allowed on a link-local IPv6 address (fe80::/10)",
            ));
        }
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_string());
        Ok(Self {
            url: url.to_string(),
            tls,
            host,
            port,
            scope_id,
            path,
        })
    }

    /// The socket address of `ip` on the URL's port, with the URL's zone for a link-local
    /// IPv6 literal.
    pub fn socket_addr(&self, ip: IpAddr) -> SocketAddr {
        match ip {
            IpAddr::V6(v6) if self.scope_id != 0 => {
                SocketAddr::V6(SocketAddrV6::new(v6, self.port, 0, self.scope_id))
            }
            _ => SocketAddr::new(ip, self.port),
        }
    }

    /// The host as an address, when it is a literal.
    pub fn literal(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// The port text (None when the URL has none, or an empty one) and the IPv6 zone (decoded,
/// None without one) of the URL's authority.
fn authority_parts(url: &str) -> Result<(Option<String>, Option<String>), String> {
    let Some((_, rest)) = url.split_once("://") else {
        // No scheme: http::Uri explains.
        return Ok((None, None));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Ok((None, None));
        };
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected {after:?} after the IPv6 address")),
        };
        (inside, port)
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let zone = match host.split_once('%') {
        Some((_, zone)) => {
            let zone = zone.strip_prefix("25").unwrap_or(zone);
            if zone.is_empty() {
                return Err("empty IPv6 zone after %25 (write [fe80::1%25eth0])".into());
            }
            Some(zone.to_string())
        }
        None => None,
    };
    Ok((port.filter(|p| !p.is_empty()).map(str::to_string), zone))
}

/// A URL port: 1 to 65535.
fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) && text.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(n as u16)
        }
        _ => Err(format!(
            "port {text:?} is not a port number from 1 to 65535"
        )),
    }
}

/// The interface index of an IPv6 zone: an interface name or a number.
fn scope_of(zone: &str) -> Result<u32, String> {
    if let Ok(n) = zone.parse::<u32>() {
        return Ok(n);
    }
    let name = std::ffi::CString::new(zone)
        .map_err(|_| format!("IPv6 zone {zone:?} is not an interface name"))?;
    // SAFETY: the name is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(format!(
            "IPv6 zone {zone:?} is not an interface of this machine (see `ip link`)"
        ));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults() {
        let t = Target::parse("https://example.org/a?b=1").unwrap();
        assert_eq!((t.tls, t.port, t.path.as_str()), (true, 443, "/a?b=1"));
        let t = Target::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8080, "/")
        );
        assert_eq!(t.host_header(), "[::1]:8080");
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("not a url").is_err());
        assert!(Target::parse("example.org").is_err());
        assert_eq!(Target::parse("http://h:/").unwrap().port, 80);
        assert_eq!(Target::parse("http://u:p@h:8080/").unwrap().port, 8080);
    }

    #[test]
    fn invalid_ports_are_refused_by_name() {
        for (url, port) in [
            ("http://127.0.0.1:99999/", "99999"),
            ("http://127.0.0.1:65536/", "65536"),
            ("http://127.0.0.1:abc/", "abc"),
            ("http://127.0.0.1:-1/", "-1"),
            ("http://127.0.0.1:0/", "0"),
            ("https://example.org:99999/", "99999"),
            ("http://[::1]:70000/", "70000"),
            ("http://h:+80/", "+80"),
        ] {
            let err = Target::parse(url).expect_err(url).to_string();
            assert!(err.contains(&format!("port \"{port}\"")), "{url}: {err}");
            assert!(err.contains("1 to 65535"), "{url}: {err}");
        }
        assert_eq!(Target::parse("http://h:65535/").unwrap().port, 65535);
    }

    #[test]
    fn ipv6_zones_become_scope_ids() {
        let t = Target::parse("http://[fe80::1%25lo]:29011/x").unwrap();
        assert_eq!(t.host, "fe80::1");
        assert_eq!(t.port, 29011);
        assert_ne!(t.scope_id, 0);
        assert_eq!(t.host_header(), "[fe80::1]:29011");
        let addr = t.socket_addr(t.literal().unwrap());
        match addr {
            SocketAddr::V6(v6) => assert_eq!(v6.scope_id(), t.scope_id),
            other => panic!("{other}"),
        }
        assert_eq!(Target::parse("http://[fe80::1%252]/").unwrap().scope_id, 2);
        let err = Target::parse("http://[fe80::1%25nosuchif0]/").unwrap_err();
        assert!(err.to_string().contains("not an interface"), "{err}");
        let err = Target::parse("http://[::1%25lo]/").unwrap_err();
        assert!(err.to_string().contains("link-local"), "{err}");
    }
}
