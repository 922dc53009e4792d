//! Recording the doctor's own probe packets with an AF_PACKET socket (root or CAP_NET_RAW),
//! then reading the resets' TTLs and running the capture analyser on them.

use std::cell::RefCell;
use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

use crate::pcap::{self, Filter, ResetReport};

/// Most packets kept (the probes send far fewer).
const MAX_PACKETS: usize = 50_000;
/// Bytes kept of each packet (headers are enough).
const SNAPLEN: usize = 256;

/// How long [`Capture::finish`] waits for the last packets before it stops recording.
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

/// One recorded IP packet.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Nanoseconds since the epoch.
    pub ts_ns: u128,
    /// The IP packet (truncated to [`SNAPLEN`]).
    pub data: Vec<u8>,
    /// Its length on the wire.
    pub len: usize,
    /// True when it came from the server's side (the server, or a device on the path
    /// answering for it); false when the doctor's own socket sent it. On loopback both
    /// sides have the same address, so this is told from the ports.
    pub from_server: bool,
}

/// One of the doctor's own probe sockets: its local port, the address it connects to, and
/// when it was made (ns since the epoch, before its SYN was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The local port (bound before the connect).
    pub local_port: u16,
    /// The server address and port it connects to.
    pub remote: SocketAddr,
    /// When it was registered (ns since the epoch).
    pub since_ns: u128,
}

/// The doctor's own probe sockets of one run. The capture keeps only their packets, so other
/// applications' connections to the same server (and leftovers of an earlier run) are not
/// taken as evidence.
#[derive(Debug, Clone, Default)]
pub struct Probes(Arc<Mutex<Vec<Probe>>>);

thread_local! {
    /// The probe registry of the run on this thread (the doctor probes from one thread).
    static CURRENT: RefCell<Option<Probes>> = const { RefCell::new(None) };
}

/// While alive, the sockets [`register`]ed on this thread go to its [`Probes`].
pub struct ProbeScope {
    previous: Option<Probes>,
}

impl Drop for ProbeScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
    }
}

impl Probes {
    /// Makes this the registry of the sockets opened on this thread until the scope ends.
    pub fn enter(&self) -> ProbeScope {
        let previous = CURRENT.with(|current| current.borrow_mut().replace(self.clone()));
        ProbeScope { previous }
    }

    /// Adds a probe socket.
    pub fn add(&self, local_port: u16, remote: SocketAddr) {
        if let Ok(mut probes) = self.0.lock() {
            probes.push(Probe {
                local_port,
                remote,
                since_ns: now_ns(),
            });
        }
    }

    /// The probe sockets so far.
    pub fn list(&self) -> Vec<Probe> {
        self.0.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Whether an IP packet recorded at `ts_ns` belongs to one of the probe connections: its
    /// 4-tuple is a probe's (the server's address and port at one end, the probe's local
    /// port at the other) and it came after the probe was made.
    pub fn owns(&self, data: &[u8], ts_ns: u128) -> bool {
        self.direction(data, ts_ns).is_some()
    }

    /// For a packet of one of the probe connections ([`Probes::owns`]): `Some(true)` when it
    /// came from the server's side (source = the server's address and port, destination =
    /// the probe's local port), `Some(false)` when the doctor's socket sent it; None when it
    /// is not a probe's.
    pub fn direction(&self, data: &[u8], ts_ns: u128) -> Option<bool> {
        let ((src, sport), (dst, dport)) = tcp_endpoints(data)?;
        let probes = self.0.lock().ok()?;
        probes
            .iter()
            .filter(|p| ts_ns >= p.since_ns)
            .find_map(|probe| {
                if probe.remote == SocketAddr::new(src, sport) && probe.local_port == dport {
                    Some(true)
                } else if probe.remote == SocketAddr::new(dst, dport) && probe.local_port == sport {
                    Some(false)
                } else {
                    None
                }
            })
    }
}

/// Registers a socket bound to `local_port` that is about to connect to `remote` with the
/// run on this thread, if any.
pub fn register(local_port: u16, remote: SocketAddr) {
    CURRENT.with(|current| {
        if let Some(probes) = current.borrow().as_ref() {
            probes.add(local_port, remote);
        }
    });
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The TCP endpoints (source, destination) of an IP packet. For an ICMP destination
/// unreachable, those of the TCP packet it quotes, reversed (as if the answer came from its
/// destination), so that an ICMP reject of a probe's SYN is kept with the probe's packets.
fn tcp_endpoints(data: &[u8]) -> Option<((IpAddr, u16), (IpAddr, u16))> {
    let sliced = SlicedPacket::from_ip(data).ok()?;
    if let Some((_, quoted)) = unreachable_quote(&sliced) {
        let (src, dst) = quoted_tcp_endpoints(quoted)?;
        return Some((dst, src));
    }
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        return None;
    };
    let (src, dst): (IpAddr, IpAddr) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        ),
        Some(NetSlice::Ipv6(v6)) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        ),
        _ => return None,
    };
    Some(((src, tcp.source_port()), (dst, tcp.destination_port())))
}

/// The ICMP type and quoted packet of an ICMP destination unreachable (ICMPv4 type 3,
/// ICMPv6 type 1).
fn unreachable_quote<'a>(sliced: &SlicedPacket<'a>) -> Option<(u8, &'a [u8])> {
    match &sliced.transport {
        Some(TransportSlice::Icmpv4(icmp)) if icmp.type_u8() == 3 => Some((3, icmp.payload())),
        Some(TransportSlice::Icmpv6(icmp)) if icmp.type_u8() == 1 => Some((1, icmp.payload())),
        _ => None,
    }
}

/// The endpoints of the (truncated) TCP packet an ICMP error quotes.
fn quoted_tcp_endpoints(q: &[u8]) -> Option<((IpAddr, u16), (IpAddr, u16))> {
    let port = |at: usize| Some(u16::from_be_bytes([*q.get(at)?, *q.get(at + 1)?]));
    match q.first()? >> 4 {
        4 => {
            let ihl = usize::from(q[0] & 0x0f) * 4;
            if q.len() < ihl + 4 || ihl < 20 || q[9] != 6 {
                return None;
            }
            let src: [u8; 4] = q[12..16].try_into().ok()?;
            let dst: [u8; 4] = q[16..20].try_into().ok()?;
            Some((
                (IpAddr::from(src), port(ihl)?),
                (IpAddr::from(dst), port(ihl + 2)?),
            ))
        }
        6 => {
            if q.len() < 44 || q[6] != 6 {
                return None;
            }
            let src: [u8; 16] = q[8..24].try_into().ok()?;
            let dst: [u8; 16] = q[24..40].try_into().ok()?;
            Some((
                (IpAddr::from(src), port(40)?),
                (IpAddr::from(dst), port(42)?),
            ))
        }
        _ => None,
    }
}

/// An ICMP destination unreachable that answered a probe to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenUnreachable {
    /// Who sent it.
    pub source: IpAddr,
    /// Its TTL or hop limit.
    pub ttl: u8,
    /// The hop distance of its sender, from the TTL.
    pub hop: u8,
}

/// ICMP destination unreachables about connections to a server address, with their senders.
pub fn unreachables(packets: &[Packet], servers: &[IpAddr]) -> Vec<SeenUnreachable> {
    packets
        .iter()
        .filter_map(|packet| {
            let sliced = SlicedPacket::from_ip(&packet.data).ok()?;
            let (_, quoted) = unreachable_quote(&sliced)?;
            let (_, (dst, _)) = quoted_tcp_endpoints(quoted)?;
            if !servers.contains(&dst) {
                return None;
            }
            let (source, ttl): (IpAddr, u8) = match &sliced.net {
                Some(NetSlice::Ipv4(v4)) => (v4.header().source_addr().into(), v4.header().ttl()),
                Some(NetSlice::Ipv6(v6)) => {
                    (v6.header().source_addr().into(), v6.header().hop_limit())
                }
                _ => return None,
            };
            Some(SeenUnreachable {
                source,
                ttl,
                hop: hop_of(ttl),
            })
        })
        .collect()
}

/// A running capture.
pub struct Capture {
    stop: Arc<AtomicBool>,
    packets: Arc<Mutex<Vec<Packet>>>,
    handle: JoinHandle<()>,
}

/// A reset seen from a server address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenReset {
    /// The local (client) port of the connection.
    pub local_port: u16,
    /// Its TTL or hop limit.
    pub ttl: u8,
    /// Its IP ID (0 for IPv6).
    pub ip_id: u16,
    /// The hop distance of its sender, from the TTL.
    pub hop: u8,
}

/// Hops from us to a sender whose packet arrived with `ttl` (a sender on the first router
/// is hop 1), assuming the usual initial TTLs 64, 128 or 255.
pub fn hop_of(ttl: u8) -> u8 {
    let initial = [32u8, 64, 128, 255]
        .into_iter()
        .find(|&s| s >= ttl)
        .unwrap_or(255);
    initial - ttl + 1
}

struct RawSocket(libc::c_int);

impl Drop for RawSocket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is owned by this struct and closed once.
        unsafe { libc::close(self.0) };
    }
}

/// Starts recording the TCP packets of the doctor's own probe connections (`probes`) to
/// `servers`. Fails (with the reason) without the privilege to open an AF_PACKET socket.
pub fn start(servers: Vec<IpAddr>, probes: Probes) -> Result<Capture, String> {
    let protocol = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, protocol) };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        return Err(if crate::running_as_root() {
            format!("cannot open an AF_PACKET socket ({error}), although the doctor runs as root")
        } else {
            format!("cannot open an AF_PACKET socket ({error}); run as root or with CAP_NET_RAW")
        });
    }
    let socket = RawSocket(fd);
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: setsockopt with a valid timeval of the given size.
    unsafe {
        libc::setsockopt(
            socket.0,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    // SAFETY: the name is a valid NUL-terminated string.
    let loopback = unsafe { libc::if_nametoindex(c"lo".as_ptr()) } as i32;
    let stop = Arc::new(AtomicBool::new(false));
    let packets = Arc::new(Mutex::new(Vec::new()));
    let (flag, sink) = (stop.clone(), packets.clone());
    let handle =
        std::thread::spawn(move || record(&socket, loopback, &servers, &probes, &flag, &sink));
    Ok(Capture {
        stop,
        packets,
        handle,
    })
}

fn record(
    socket: &RawSocket,
    loopback: i32,
    servers: &[IpAddr],
    probes: &Probes,
    stop: &AtomicBool,
    sink: &Mutex<Vec<Packet>>,
) {
    let mut buf = vec![0u8; 65536];
    let mut count = 0;
    let mut drain_since: Option<std::time::Instant> = None;
    while count < MAX_PACKETS {
        // Once told to stop, read what is still queued on the socket without waiting, so a
        // run that ends right after its last packet still has them all (for at most a
        // second, should other traffic keep coming).
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            let since = *drain_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > std::time::Duration::from_secs(1) {
                break;
            }
        }
        let flags = if stopping { libc::MSG_DONTWAIT } else { 0 };
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and from are valid for the lengths given.
        let n = unsafe {
            libc::recvfrom(
                socket.0,
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if n <= 0 {
            if stopping {
                break;
            }
            continue;
        }
        // On loopback every packet shows twice (outgoing and incoming): keep one.
        if from.sll_ifindex == loopback && from.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        let data = &buf[..n as usize];
        if !involves(data, servers) {
            continue;
        }
        let ts_ns = now_ns();
        // Only the doctor's own probe connections: other traffic to the same server (another
        // application, an earlier run's last packets) is not evidence about these probes.
        let Some(from_server) = probes.direction(data, ts_ns) else {
            continue;
        };
        count += 1;
        if let Ok(mut packets) = sink.lock() {
            packets.push(Packet {
                ts_ns,
                data: data[..data.len().min(SNAPLEN)].to_vec(),
                len: data.len(),
                from_server,
            });
        }
    }
}

fn involves(data: &[u8], servers: &[IpAddr]) -> bool {
    tcp_endpoints(data)
        .is_some_and(|((src, _), (dst, _))| servers.contains(&src) || servers.contains(&dst))
}

impl Capture {
    /// Stops recording and returns the packets: it waits [`SETTLE`] for packets still on
    /// their way (a reset or FIN that follows the last probe), then reads everything queued.
    pub fn finish(self) -> Vec<Packet> {
        std::thread::sleep(SETTLE);
        self.stop.store(true, Ordering::Relaxed);
        let Capture {
            packets, handle, ..
        } = self;
        let _ = handle.join();
        let packets = packets.lock().map(|p| p.clone()).unwrap_or_default();
        packets
    }

    /// The packets recorded so far (recording goes on).
    pub fn snapshot(&self) -> Vec<Packet> {
        self.packets.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// Resets that came from the server's side (the server, or a device answering for it), with
/// their TTLs. The doctor's own resets (its aborts and closes) are not among them, on
/// loopback too, where both sides share the address.
pub fn resets(packets: &[Packet], servers: &[IpAddr]) -> Vec<SeenReset> {
    let mut seen = Vec::new();
    for packet in packets.iter().filter(|p| p.from_server) {
        let Ok(sliced) = SlicedPacket::from_ip(&packet.data) else {
            continue;
        };
        let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
            continue;
        };
        if !tcp.rst() {
            continue;
        }
        let (src, ttl, ip_id): (IpAddr, u8, u16) = match &sliced.net {
            Some(NetSlice::Ipv4(v4)) => (
                v4.header().source_addr().into(),
                v4.header().ttl(),
                v4.header().identification(),
            ),
            Some(NetSlice::Ipv6(v6)) => {
                (v6.header().source_addr().into(), v6.header().hop_limit(), 0)
            }
            _ => continue,
        };
        if servers.contains(&src) {
            seen.push(SeenReset {
                local_port: tcp.destination_port(),
                ttl,
                ip_id,
                hop: hop_of(ttl),
            });
        }
    }
    seen
}

/// The local ports of the probe connections the doctor's own socket reset (an abort with
/// `SO_LINGER` 0, a close with unread data, an answer to data after its close), each once.
pub fn own_resets(packets: &[Packet]) -> Vec<u16> {
    let mut ports = Vec::new();
    for packet in packets.iter().filter(|p| !p.from_server) {
        let Ok(sliced) = SlicedPacket::from_ip(&packet.data) else {
            continue;
        };
        if let Some(TransportSlice::Tcp(tcp)) = &sliced.transport {
            if tcp.rst() && !ports.contains(&tcp.source_port()) {
                ports.push(tcp.source_port());
            }
        }
    }
    ports
}

/// The hop distance of the server itself, from its SYN-ACKs (None when none was seen).
pub fn server_hop(packets: &[Packet], servers: &[IpAddr]) -> Option<u8> {
    packets.iter().filter(|p| p.from_server).find_map(|packet| {
        let sliced = SlicedPacket::from_ip(&packet.data).ok()?;
        let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
            return None;
        };
        if !(tcp.syn() && tcp.ack()) {
            return None;
        }
        let (src, ttl): (IpAddr, u8) = match &sliced.net {
            Some(NetSlice::Ipv4(v4)) => (v4.header().source_addr().into(), v4.header().ttl()),
            Some(NetSlice::Ipv6(v6)) => (v6.header().source_addr().into(), v6.header().hop_limit()),
            _ => return None,
        };
        servers.contains(&src).then(|| hop_of(ttl))
    })
}

/// The packets as a pcap file (raw IP link type).
pub fn to_pcap(packets: &[Packet]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + packets.len() * (16 + SNAPLEN));
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&101u32.to_le_bytes()); // LINKTYPE_RAW
    for p in packets {
        let secs = (p.ts_ns / 1_000_000_000) as u32;
        let usecs = ((p.ts_ns % 1_000_000_000) / 1000) as u32;
        out.extend_from_slice(&secs.to_le_bytes());
        out.extend_from_slice(&usecs.to_le_bytes());
        out.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(p.len as u32).to_le_bytes());
        out.extend_from_slice(&p.data);
    }
    out
}

/// Runs the capture analyser on the packets.
pub fn analyze(packets: &[Packet]) -> Result<Vec<ResetReport>, String> {
    let mut reports = Vec::new();
    pcap::analyze(Cursor::new(to_pcap(packets)), &Filter::default(), |r| {
        reports.push(r)
    })
    .map_err(|e| e.to_string())?;
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_from_ttls() {
        assert_eq!(hop_of(64), 1);
        assert_eq!(hop_of(63), 2);
        assert_eq!(hop_of(128), 1);
        assert_eq!(hop_of(250), 6);
    }
}
