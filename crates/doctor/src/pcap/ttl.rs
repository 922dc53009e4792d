//! TTL arithmetic: usual initial TTLs and hop distances. The same arithmetic applies to an
//! IPv6 packet's hop limit; [`Field`] names the one a sentence talks about.

/// Initial TTLs in common use (the smallest one at or above an observed TTL is assumed).
const INITIAL_TTLS: [u8; 4] = [32, 64, 128, 255];

/// The initial TTL a packet that arrived with `ttl` most likely started with.
pub fn initial(ttl: u8) -> u8 {
    INITIAL_TTLS
        .iter()
        .copied()
        .find(|&start| start >= ttl)
        .unwrap_or(255)
}

/// Routers passed between sender and capture point.
pub fn routers_passed(ttl: u8) -> u8 {
    initial(ttl) - ttl
}

/// Distance from the capture point in hops, counting the sender itself as one hop past the
/// last router (a device on the first router answers from hop 1).
pub fn hop_distance(ttl: u8) -> u8 {
    routers_passed(ttl).saturating_add(1)
}

/// The IP header field a hop count comes from: an IPv4 packet's TTL or an IPv6 packet's hop
/// limit, as evidence sentences name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    ipv6: bool,
}

impl Field {
    /// The field of an IPv6 (`ipv6`) or IPv4 packet.
    pub fn of(ipv6: bool) -> Self {
        Self { ipv6 }
    }

    /// "TTL" (IPv4) or "hop limit" (IPv6).
    pub fn name(self) -> &'static str {
        if self.ipv6 {
            "hop limit"
        } else {
            "TTL"
        }
    }

    /// Probes sent with a low value of the field: "TTL-limited" or "hop-limited".
    pub fn limited(self) -> &'static str {
        if self.ipv6 {
            "hop-limited"
        } else {
            "TTL-limited"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_ttl_is_the_next_common_start() {
        assert_eq!(initial(63), 64);
        assert_eq!(initial(64), 64);
        assert_eq!(initial(65), 128);
        assert_eq!(initial(250), 255);
        assert_eq!(initial(1), 32);
        assert_eq!(hop_distance(64), 1);
        assert_eq!(hop_distance(62), 3);
    }

    #[test]
    fn the_field_is_named_by_ip_version() {
        assert_eq!(Field::of(false).name(), "TTL");
        assert_eq!(Field::of(true).name(), "hop limit");
        assert_eq!(Field::of(true).limited(), "hop-limited");
    }
}
