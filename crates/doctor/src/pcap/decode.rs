//! Decodes a captured frame down to the TCP header fields the analysis needs.
//! Link types: Ethernet (with VLAN tags), Linux SLL and SLL2, raw IP, BSD null/loopback.

use std::net::IpAddr;

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

/// TCP flag bits as in the header.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// The fields of one TCP segment and its IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful with the ACK flag).
    pub ack: u32,
    /// Flag bits (see [`flags`]).
    pub flags: u8,
    /// Advertised window (unscaled).
    pub window: u16,
    /// TCP payload length on the wire (from the IP header, not the captured bytes).
    pub payload_len: u32,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IPv4 identification (None for IPv6).
    pub ip_id: Option<u16>,
    /// IPv4 don't-fragment bit.
    pub df: bool,
    /// TOS / traffic class.
    pub tos: u8,
    /// Whether the TCP header carries options.
    pub has_options: bool,
}

impl Segment {
    /// Whether flag `bit` is set.
    pub fn has(&self, bit: u8) -> bool {
        self.flags & bit != 0
    }
}

/// What a frame turned out to be.
#[derive(Debug, Clone, Copy)]
pub enum Decoded {
    /// A TCP segment.
    Tcp(Segment),
    /// IP, but not TCP (or a non-first fragment).
    OtherIp,
    /// Not IP at all (ARP, unknown link type, ...).
    NotIp,
    /// Cut off or malformed before the TCP header ended.
    Malformed,
}

/// Linux cooked capture v1 (DLT 113) header length.
const SLL_LEN: usize = 16;
/// Linux cooked capture v2 (DLT 276) header length.
const SLL2_LEN: usize = 20;

/// Whether frames of `linktype` can be decoded (see [`decode`]).
pub fn supported_linktype(linktype: i32) -> bool {
    matches!(
        linktype,
        0 | 1 | 12 | 14 | 101 | 108 | 113 | 228 | 229 | 276
    )
}

/// Decodes one frame of `linktype`.
pub fn decode(linktype: i32, data: &[u8]) -> Decoded {
    let sliced = match linktype {
        1 => LaxSlicedPacket::from_ethernet(data).ok(),
        // Raw IP: 101 (LINKTYPE_RAW), 12 and 14 (old BSD DLT_RAW), 228/229 (IPv4/IPv6).
        101 | 12 | 14 | 228 | 229 => LaxSlicedPacket::from_ip(data).ok(),
        // BSD null / OpenBSD loopback: 4-byte address family, then IP.
        0 | 108 => data
            .get(4..)
            .and_then(|ip| LaxSlicedPacket::from_ip(ip).ok()),
        113 => ether_type_at(data, 14, SLL_LEN),
        276 => ether_type_at(data, 0, SLL2_LEN),
        _ => return Decoded::NotIp,
    };
    let Some(sliced) = sliced else {
        return Decoded::Malformed;
    };
    segment_of(&sliced)
}

/// A cooked-capture header: the EtherType at `at`, IP after `header_len`.
fn ether_type_at(data: &[u8], at: usize, header_len: usize) -> Option<LaxSlicedPacket<'_>> {
    let kind = data.get(at..at + 2)?;
    let payload = data.get(header_len..)?;
    Some(LaxSlicedPacket::from_ether_type(
        EtherType(u16::from_be_bytes([kind[0], kind[1]])),
        payload,
    ))
}

fn segment_of(sliced: &LaxSlicedPacket<'_>) -> Decoded {
    let Some(net) = &sliced.net else {
        return if sliced.stop_err.is_some() {
            Decoded::Malformed
        } else {
            Decoded::NotIp
        };
    };
    let (src, dst, ttl, ip_id, df, tos, declared) = match net {
        LaxNetSlice::Ipv4(v4) => {
            let h = v4.header();
            let header_len = usize::from(h.ihl()) * 4;
            let total = usize::from(h.total_len());
            let declared = (total > 0).then(|| total.saturating_sub(header_len));
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                h.ttl(),
                Some(h.identification()),
                h.dont_fragment(),
                (h.dcp().value() << 2) | h.ecn().value(),
                declared,
            )
        }
        LaxNetSlice::Ipv6(v6) => {
            let h = v6.header();
            let ext = v6.extensions().slice().len();
            let total = usize::from(h.payload_length());
            let declared = (total > 0).then(|| total.saturating_sub(ext));
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                h.hop_limit(),
                None,
                false,
                h.traffic_class(),
                declared,
            )
        }
        LaxNetSlice::Arp(_) => return Decoded::NotIp,
    };
    match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let header_len = usize::from(tcp.data_offset()) * 4;
            let payload_len = match declared {
                Some(ip_payload) => ip_payload.saturating_sub(header_len),
                // TSO / zero length field: trust what was captured.
                None => tcp.payload().len(),
            };
            let raw = tcp.slice();
            Decoded::Tcp(Segment {
                src,
                dst,
                sport: tcp.source_port(),
                dport: tcp.destination_port(),
                seq: tcp.sequence_number(),
                ack: tcp.acknowledgment_number(),
                flags: raw.get(13).copied().unwrap_or(0),
                window: tcp.window_size(),
                payload_len: u32::try_from(payload_len).unwrap_or(u32::MAX),
                ttl,
                ip_id,
                df,
                tos,
                has_options: header_len > 20,
            })
        }
        Some(_) => Decoded::OtherIp,
        None => {
            let is_tcp = match net {
                LaxNetSlice::Ipv4(v4) => v4.payload().ip_number == etherparse::IpNumber::TCP,
                LaxNetSlice::Ipv6(v6) => v6.payload().ip_number == etherparse::IpNumber::TCP,
                LaxNetSlice::Arp(_) => false,
            };
            let fragmented = match net {
                LaxNetSlice::Ipv4(v4) => v4.is_payload_fragmented(),
                LaxNetSlice::Ipv6(v6) => v6.is_payload_fragmented(),
                LaxNetSlice::Arp(_) => false,
            };
            if !is_tcp || fragmented {
                return Decoded::OtherIp;
            }
            // A snap length that cuts the TCP options (`tcpdump -s 54`) leaves the fixed
            // 20 bytes: ports, sequence numbers, flags and window. Only the options are lost.
            let captured = match net {
                LaxNetSlice::Ipv4(v4) => v4.payload().payload,
                LaxNetSlice::Ipv6(v6) => v6.payload().payload,
                LaxNetSlice::Arp(_) => &[],
            };
            let Some(fixed) = captured.get(..20) else {
                return Decoded::Malformed;
            };
            let field32 = |at: usize| {
                u32::from_be_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]])
            };
            let header_len = usize::from(fixed[12] >> 4) * 4;
            if header_len < 20 {
                return Decoded::Malformed;
            }
            let payload_len =
                declared.map_or(0, |ip_payload| ip_payload.saturating_sub(header_len));
            Decoded::Tcp(Segment {
                src,
                dst,
                sport: u16::from_be_bytes([fixed[0], fixed[1]]),
                dport: u16::from_be_bytes([fixed[2], fixed[3]]),
                seq: field32(4),
                ack: field32(8),
                flags: fixed[13],
                window: u16::from_be_bytes([fixed[14], fixed[15]]),
                payload_len: u32::try_from(payload_len).unwrap_or(u32::MAX),
                ttl,
                ip_id,
                df,
                tos,
                has_options: header_len > 20,
            })
        }
    }
}
