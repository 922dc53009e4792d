//! Synthetic captures built in code: raw IPv4/IPv6 TCP packets, link-layer wrappers and pcap /
//! pcapng / gzip writers, for the edge cases the lab cannot easily stage.

use std::io::Write;
use std::net::IpAddr;

/// TCP flag bits.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// One TCP segment to build.
#[derive(Debug, Clone)]
pub struct Tcp {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub ttl: u8,
    pub ip_id: u16,
    pub df: bool,
    pub window: u16,
    pub payload: Vec<u8>,
}

impl Tcp {
    /// The IP packet (v4 or v6 by address family), checksums left zero.
    pub fn ip(&self) -> Vec<u8> {
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&self.sport.to_be_bytes());
        tcp.extend_from_slice(&self.dport.to_be_bytes());
        tcp.extend_from_slice(&self.seq.to_be_bytes());
        tcp.extend_from_slice(&self.ack.to_be_bytes());
        tcp.push(5 << 4);
        tcp.push(self.flags);
        tcp.extend_from_slice(&self.window.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        tcp.extend_from_slice(&self.payload);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut ip = vec![0x45, 0];
                ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&self.ip_id.to_be_bytes());
                ip.extend_from_slice(&(if self.df { 0x4000u16 } else { 0 }).to_be_bytes());
                ip.extend_from_slice(&[self.ttl, 6, 0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                ip.extend_from_slice(&tcp);
                ip
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut ip = vec![0x60, 0, 0, 0];
                ip.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
                ip.extend_from_slice(&[6, self.ttl]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                ip.extend_from_slice(&tcp);
                ip
            }
            _ => panic!("mixed address families"),
        }
    }
}

/// A UDP/IPv4 packet (to check non-TCP counting).
pub fn udp_v4() -> Vec<u8> {
    let mut ip = vec![
        0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    ip.extend_from_slice(&[0, 53, 0, 53, 0, 8, 0, 0]);
    ip
}

/// Link-layer framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    Vlan,
    Sll,
    Sll2,
    Raw,
    Null,
}

impl Link {
    /// The pcap LINKTYPE value.
    pub fn linktype(self) -> u32 {
        match self {
            Link::Ethernet | Link::Vlan => 1,
            Link::Sll => 113,
            Link::Sll2 => 276,
            Link::Raw => 101,
            Link::Null => 0,
        }
    }

    /// Wraps an IP packet.
    pub fn wrap(self, ip: &[u8]) -> Vec<u8> {
        let v6 = ip.first().is_some_and(|b| b >> 4 == 6);
        let ether_type: u16 = if v6 { 0x86dd } else { 0x0800 };
        let mut out = Vec::new();
        match self {
            Link::Ethernet => {
                out.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
                out.extend_from_slice(&ether_type.to_be_bytes());
            }
            Link::Vlan => {
                out.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
                out.extend_from_slice(&0x8100u16.to_be_bytes());
                out.extend_from_slice(&42u16.to_be_bytes());
                out.extend_from_slice(&ether_type.to_be_bytes());
            }
            Link::Sll => {
                out.extend_from_slice(&[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
                out.extend_from_slice(&ether_type.to_be_bytes());
            }
            Link::Sll2 => {
                out.extend_from_slice(&ether_type.to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6]);
                out.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
            }
            Link::Raw => {}
            Link::Null => {
                let family: u32 = if v6 { 30 } else { 2 };
                out.extend_from_slice(&family.to_le_bytes());
            }
        }
        out.extend_from_slice(ip);
        out
    }
}

/// One record to write: time (ns since epoch), captured bytes, original length.
#[derive(Debug, Clone)]
pub struct Record {
    pub time_ns: i64,
    pub data: Vec<u8>,
    pub orig_len: u32,
}

/// Classic pcap; `big_endian` and `nanos` pick the variant; `snaplen` cuts packets.
pub fn pcap(
    link: Link,
    records: &[Record],
    big_endian: bool,
    nanos: bool,
    snaplen: u32,
) -> Vec<u8> {
    let u32b = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u16b = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut out = Vec::new();
    out.extend_from_slice(&u32b(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
    out.extend_from_slice(&u16b(2));
    out.extend_from_slice(&u16b(4));
    out.extend_from_slice(&u32b(0));
    out.extend_from_slice(&u32b(0));
    out.extend_from_slice(&u32b(snaplen));
    out.extend_from_slice(&u32b(link.linktype()));
    for r in records {
        let cut = &r.data[..r.data.len().min(snaplen as usize)];
        let secs = (r.time_ns / 1_000_000_000) as u32;
        let frac = (r.time_ns % 1_000_000_000) as u32;
        out.extend_from_slice(&u32b(secs));
        out.extend_from_slice(&u32b(if nanos { frac } else { frac / 1000 }));
        out.extend_from_slice(&u32b(cut.len() as u32));
        out.extend_from_slice(&u32b(r.orig_len));
        out.extend_from_slice(cut);
    }
    out
}

fn ng_block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
    let padded = body.len().div_ceil(4) * 4;
    let total = (12 + padded) as u32;
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(body);
    out.resize(out.len() + padded - body.len(), 0);
    out.extend_from_slice(&total.to_le_bytes());
}

/// A pcapng section header block.
pub fn ng_section(out: &mut Vec<u8>) {
    let mut body = Vec::new();
    body.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&(-1i64).to_le_bytes());
    ng_block(out, 0x0A0D_0D0A, &body);
}

/// A pcapng interface; `tsresol` as in if_tsresol (6 = µs, 9 = ns).
pub fn ng_interface(out: &mut Vec<u8>, link: Link, tsresol: u8) {
    let mut body = Vec::new();
    body.extend_from_slice(&(link.linktype() as u16).to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    // if_tsresol option, then end of options.
    body.extend_from_slice(&9u16.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&[tsresol, 0, 0, 0]);
    body.extend_from_slice(&[0, 0, 0, 0]);
    ng_block(out, 1, &body);
}

/// A pcapng enhanced packet on interface `iface` with resolution 10^-`tsresol`.
pub fn ng_packet(out: &mut Vec<u8>, iface: u32, tsresol: u8, record: &Record) {
    let ticks = (record.time_ns as u128 * 10u128.pow(u32::from(tsresol)) / 1_000_000_000) as u64;
    let mut body = Vec::new();
    body.extend_from_slice(&iface.to_le_bytes());
    body.extend_from_slice(&((ticks >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(ticks as u32).to_le_bytes());
    body.extend_from_slice(&(record.data.len() as u32).to_le_bytes());
    body.extend_from_slice(&record.orig_len.to_le_bytes());
    body.extend_from_slice(&record.data);
    ng_block(out, 6, &body);
}

/// Ticks of `time_ns` at an `if_tsresol` resolution: a negative power of ten, or with the
/// high bit set a negative power of two (0x8A = 2^-10 s).
pub fn ticks(time_ns: i64, tsresol: u8) -> u64 {
    let exponent = u32::from(tsresol & 0x7f);
    let units = if tsresol & 0x80 == 0 {
        10u128.pow(exponent)
    } else {
        1u128 << exponent
    };
    (time_ns as u128 * units / 1_000_000_000) as u64
}

/// A pcapng writer in either byte order, for the blocks and options the little-endian
/// `ng_*` helpers above do not write (if_tsoffset, the obsolete Packet Block).
#[derive(Debug, Clone, Default)]
pub struct Ng {
    pub big_endian: bool,
    pub bytes: Vec<u8>,
}

impl Ng {
    pub fn new(big_endian: bool) -> Self {
        Self {
            big_endian,
            bytes: Vec::new(),
        }
    }

    pub fn u16(&self, v: u16) -> [u8; 2] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    pub fn u32(&self, v: u32) -> [u8; 4] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    /// A block of any type, padded to 4 bytes.
    pub fn block(&mut self, kind: u32, body: &[u8]) -> &mut Self {
        let padded = body.len().div_ceil(4) * 4;
        let total = self.u32((12 + padded) as u32);
        let kind = self.u32(kind);
        self.bytes.extend_from_slice(&kind);
        self.bytes.extend_from_slice(&total);
        self.bytes.extend_from_slice(body);
        self.bytes.resize(self.bytes.len() + padded - body.len(), 0);
        self.bytes.extend_from_slice(&total);
        self
    }

    pub fn section(&mut self) -> &mut Self {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u32(0x1A2B_3C4D));
        body.extend_from_slice(&self.u16(1));
        body.extend_from_slice(&self.u16(0));
        body.extend_from_slice(&[0xff; 8]);
        self.block(0x0A0D_0D0A, &body)
    }

    /// An interface with an if_tsresol byte and, when given, an if_tsoffset (seconds).
    pub fn interface(&mut self, link: Link, tsresol: u8, tsoffset: Option<i64>) -> &mut Self {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u16(link.linktype() as u16));
        body.extend_from_slice(&self.u16(0));
        body.extend_from_slice(&self.u32(0));
        body.extend_from_slice(&self.u16(9));
        body.extend_from_slice(&self.u16(1));
        body.extend_from_slice(&[tsresol, 0, 0, 0]);
        if let Some(offset) = tsoffset {
            body.extend_from_slice(&self.u16(14));
            body.extend_from_slice(&self.u16(8));
            body.extend_from_slice(&if self.big_endian {
                offset.to_be_bytes()
            } else {
                offset.to_le_bytes()
            });
        }
        body.extend_from_slice(&[0, 0, 0, 0]);
        self.block(1, &body)
    }

    /// An Enhanced Packet Block (type 6) with a timestamp of `ticks`.
    pub fn enhanced_packet(&mut self, iface: u32, ticks: u64, record: &Record) -> &mut Self {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u32(iface));
        body.extend_from_slice(&self.u32((ticks >> 32) as u32));
        body.extend_from_slice(&self.u32(ticks as u32));
        body.extend_from_slice(&self.u32(record.data.len() as u32));
        body.extend_from_slice(&self.u32(record.orig_len));
        body.extend_from_slice(&record.data);
        self.block(6, &body)
    }

    /// The obsolete Packet Block (type 2): a 16-bit interface ID, a 16-bit drops count, then
    /// as an Enhanced Packet Block.
    pub fn packet_block(
        &mut self,
        iface: u16,
        drops: u16,
        ticks: u64,
        record: &Record,
    ) -> &mut Self {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u16(iface));
        body.extend_from_slice(&self.u16(drops));
        body.extend_from_slice(&self.u32((ticks >> 32) as u32));
        body.extend_from_slice(&self.u32(ticks as u32));
        body.extend_from_slice(&self.u32(record.data.len() as u32));
        body.extend_from_slice(&self.u32(record.orig_len));
        body.extend_from_slice(&record.data);
        self.block(2, &body)
    }
}

/// Gzip-compresses a capture.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Builds a conversation packet by packet with a running clock.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub client: (IpAddr, u16),
    pub server: (IpAddr, u16),
    pub client_ttl: u8,
    pub server_ttl: u8,
    pub now_ns: i64,
    pub packets: Vec<(i64, Tcp)>,
    pub client_seq: u32,
    pub server_seq: u32,
    ip_id: u16,
}

impl Conversation {
    pub fn new(client: &str, server: &str) -> Self {
        let split = |s: &str| {
            let addr: std::net::SocketAddr = s.parse().unwrap();
            (addr.ip(), addr.port())
        };
        Self {
            client: split(client),
            server: split(server),
            client_ttl: 64,
            server_ttl: 61,
            now_ns: 1_700_000_000_000_000_000,
            packets: Vec::new(),
            client_seq: 1000,
            server_seq: 5000,
            ip_id: 100,
        }
    }

    /// Advances the clock.
    pub fn wait_ms(&mut self, ms: i64) -> &mut Self {
        self.now_ns += ms * 1_000_000;
        self
    }

    /// A segment from the client (`from_client`) or server with the current sequence state.
    pub fn send(&mut self, from_client: bool, flags: u8, payload: &[u8]) -> &mut Self {
        self.ip_id = self.ip_id.wrapping_add(1);
        let (src, dst, ttl) = if from_client {
            (self.client, self.server, self.client_ttl)
        } else {
            (self.server, self.client, self.server_ttl)
        };
        let (seq, ack) = if from_client {
            (self.client_seq, self.server_seq)
        } else {
            (self.server_seq, self.client_seq)
        };
        let consumed = payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0);
        if from_client {
            self.client_seq = self.client_seq.wrapping_add(consumed);
        } else {
            self.server_seq = self.server_seq.wrapping_add(consumed);
        }
        let tcp = Tcp {
            src: src.0,
            dst: dst.0,
            sport: src.1,
            dport: dst.1,
            seq,
            ack: if flags & ACK != 0 { ack } else { 0 },
            flags,
            ttl,
            ip_id: self.ip_id,
            df: true,
            window: 502,
            payload: payload.to_vec(),
        };
        self.packets.push((self.now_ns, tcp));
        self.now_ns += 100_000;
        self
    }

    /// A raw segment with everything chosen by the caller.
    pub fn push(&mut self, tcp: Tcp) -> &mut Self {
        self.packets.push((self.now_ns, tcp));
        self.now_ns += 100_000;
        self
    }

    /// A reset from the server's address with a chosen TTL and ACK flag.
    pub fn server_rst(&mut self, ttl: u8, with_ack: bool, ip_id: u16) -> &mut Self {
        let tcp = Tcp {
            src: self.server.0,
            dst: self.client.0,
            sport: self.server.1,
            dport: self.client.1,
            seq: self.server_seq,
            ack: if with_ack { self.client_seq } else { 0 },
            flags: if with_ack { RST | ACK } else { RST },
            ttl,
            ip_id,
            df: true,
            window: 0,
            payload: Vec::new(),
        };
        self.push(tcp)
    }

    pub fn handshake(&mut self) -> &mut Self {
        self.send(true, SYN, b"")
            .send(false, SYN | ACK, b"")
            .send(true, ACK, b"")
    }

    /// The records of this conversation, wrapped for `link`.
    pub fn records(&self, link: Link) -> Vec<Record> {
        self.packets
            .iter()
            .map(|(time_ns, tcp)| {
                let data = link.wrap(&tcp.ip());
                Record {
                    time_ns: *time_ns,
                    orig_len: data.len() as u32,
                    data,
                }
            })
            .collect()
    }
}
