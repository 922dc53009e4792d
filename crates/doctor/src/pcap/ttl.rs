//! TTL arithmetic: usual initial TTLs and hop distances.

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
}
