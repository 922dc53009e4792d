//! Is the server's listen queue full? For a server on this machine (loopback, or an address
//! of this host), the listening socket's accept queue as `ss -ltn` shows it (sock_diag: the
//! connections waiting for `accept()` and the backlog), and the kernel's `ListenOverflows` /
//! `ListenDrops` counters. For any server, what the kernel knows of one connection
//! (`TCP_INFO`): whether the server's side acknowledged the request.
//!
//! A full accept queue makes the server's kernel drop new SYNs (they go unanswered, or are
//! answered after retransmissions) and drop the handshake's last ACK (the client thinks it is
//! connected, but its request is never acknowledged), or, with `tcp_abort_on_overflow`, reset
//! the connection. From outside that looks like a firewall dropping packets.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A listening socket of this host and its accept queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenQueue {
    /// The address it listens on.
    pub local: SocketAddr,
    /// Connections waiting to be accepted.
    pub queued: u32,
    /// Its backlog (the most that may wait, as the kernel sees it), when known.
    pub backlog: Option<u32>,
}

impl ListenQueue {
    /// Whether the queue is full: the kernel then drops new SYNs and handshakes (it counts
    /// the queue full when more than the backlog wait).
    pub fn is_full(&self) -> bool {
        self.backlog.is_some_and(|b| self.queued > b)
    }

    /// The queue in words.
    pub fn describe(&self) -> String {
        let full = if self.is_full() { ": full" } else { "" };
        match self.backlog {
            Some(b) => format!(
                "the listener on {} has {} connections waiting to be accepted with a backlog of {b}{full}",
                self.local, self.queued
            ),
            None => format!(
                "the listener on {} has {} connections waiting to be accepted (backlog not known)",
                self.local, self.queued
            ),
        }
    }
}

/// The kernel's listen-queue counters (`TcpExtListenOverflows`, `TcpExtListenDrops`) of
/// this network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overflows {
    /// Handshakes dropped because an accept queue was full.
    pub overflows: u64,
    /// SYNs and handshakes dropped by listeners for any reason (overflows included).
    pub drops: u64,
}

impl Overflows {
    /// The counters now.
    pub fn read() -> Option<Self> {
        let text = ["/proc/thread-self/net/netstat", "/proc/net/netstat"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())?;
        let pairs = crate::audit::counters::parse_pairs(&text);
        let get = |key: &str| pairs.get(&("TcpExt".to_string(), key.to_string())).copied();
        Some(Self {
            overflows: get("ListenOverflows")?,
            drops: get("ListenDrops").unwrap_or(0),
        })
    }

    /// The growth since `earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            overflows: self.overflows.saturating_sub(earlier.overflows),
            drops: self.drops.saturating_sub(earlier.drops),
        }
    }
}

/// Whether `addr` is an address of this host (in this network namespace): loopback, or one
/// a socket can bind to.
pub fn is_local(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    if ip.is_loopback() {
        return true;
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    let mut probe = addr;
    probe.set_port(0);
    UdpSocket::bind(probe).is_ok()
}

/// The accept queue of the listener that serves `addr`, when `addr` is on this host.
pub fn queue(addr: SocketAddr) -> Option<ListenQueue> {
    if !is_local(addr) {
        return None;
    }
    let listeners = diag_listeners().unwrap_or_else(proc_listeners);
    listeners
        .into_iter()
        .filter(|l| l.local.port() == addr.port())
        .filter_map(|l| serves(l.local.ip(), addr.ip()).map(|score| (score, l)))
        .max_by_key(|(score, _)| *score)
        .map(|(_, l)| l)
}

/// How well a listener on `listen` matches connections to `to` (None: it does not serve
/// them): the same address beats a wildcard.
fn serves(listen: IpAddr, to: IpAddr) -> Option<u8> {
    let to = match to {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(to, IpAddr::V4),
        v4 => v4,
    };
    let listen_v4 = match listen {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(listen, IpAddr::V4),
        v4 => v4,
    };
    if listen_v4 == to {
        return Some(3);
    }
    match (listen, to) {
        (IpAddr::V4(l), IpAddr::V4(_)) if l.is_unspecified() => Some(2),
        (IpAddr::V6(l), IpAddr::V6(_)) if l.is_unspecified() => Some(2),
        // A dual-stack [::] listener takes IPv4 connections too.
        (IpAddr::V6(l), IpAddr::V4(_)) if l.is_unspecified() => Some(1),
        _ => None,
    }
}

/// Listeners from `/proc/net/tcp{,6}`: the queue without the backlog.
fn proc_listeners() -> Vec<ListenQueue> {
    let mut out = Vec::new();
    for file in ["tcp", "tcp6"] {
        let text = [
            format!("/proc/thread-self/net/{file}"),
            format!("/proc/net/{file}"),
        ]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
        for l in crate::audit::sockets::parse_listeners(&text) {
            out.push(ListenQueue {
                local: SocketAddr::new(l.ip, l.port),
                queued: u32::try_from(l.queued).unwrap_or(u32::MAX),
                backlog: None,
            });
        }
    }
    out
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;
/// `struct nlmsghdr`.
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_msg`.
const DIAG_MSG: usize = 72;

/// Every TCP listener of this network namespace with its queue and backlog, as `ss -ltn`
/// reads them (NETLINK_SOCK_DIAG). None when netlink cannot be used.
fn diag_listeners() -> Option<Vec<ListenQueue>> {
    let mut out = diag_dump(libc::AF_INET as u8)?;
    // IPv6 may be off; its listeners are then simply none.
    out.extend(diag_dump(libc::AF_INET6 as u8).unwrap_or_default());
    Some(out)
}

fn diag_dump(family: u8) -> Option<Vec<ListenQueue>> {
    // SAFETY: plain socket(2); the result is checked and owned below.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a valid timeval of the given size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    // nlmsghdr, then inet_diag_req_v2 (family, protocol, ext, pad, states, an empty
    // inet_diag_sockid of 48 bytes).
    let mut req = Vec::with_capacity(NLMSG_HDR + 56);
    req.extend_from_slice(&((NLMSG_HDR + 56) as u32).to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    req.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    req.extend_from_slice(&[0u8; 48]);
    // SAFETY: sockaddr_nl is plain data; zeroed is valid, then the family is set.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: the buffer and address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // A dump comes in several datagrams; a host has a bounded number of listeners, and a
    // bounded number of reads keeps this from looping on a misbehaving kernel.
    for _ in 0..4096 {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return None;
        }
        let data = &buf[..n as usize];
        let mut at = 0;
        while at + NLMSG_HDR <= data.len() {
            let len = u32::from_ne_bytes(data[at..at + 4].try_into().ok()?) as usize;
            let kind = u16::from_ne_bytes(data[at + 4..at + 6].try_into().ok()?);
            if len < NLMSG_HDR || at + len > data.len() {
                break;
            }
            match kind {
                NLMSG_DONE => return Some(out),
                NLMSG_ERROR => return None,
                _ => {
                    if let Some(q) = parse_diag(&data[at + NLMSG_HDR..at + len]) {
                        out.push(q);
                    }
                }
            }
            at += (len + 3) & !3;
        }
    }
    Some(out)
}

/// One `inet_diag_msg`: for a listener, `idiag_rqueue` is the accept queue's length and
/// `idiag_wqueue` its backlog.
fn parse_diag(p: &[u8]) -> Option<ListenQueue> {
    if p.len() < DIAG_MSG || u32::from(p[1]) != TCP_LISTEN {
        return None;
    }
    let port = u16::from_be_bytes([p[4], p[5]]);
    let ip = match i32::from(p[0]) {
        libc::AF_INET => IpAddr::from(<[u8; 4]>::try_from(&p[8..12]).ok()?),
        libc::AF_INET6 => IpAddr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?),
        _ => return None,
    };
    let queued = u32::from_ne_bytes(p[56..60].try_into().ok()?);
    let backlog = u32::from_ne_bytes(p[60..64].try_into().ok()?);
    Some(ListenQueue {
        local: SocketAddr::new(ip, port),
        queued,
        backlog: Some(backlog),
    })
}

/// What the kernel knows of a connection (`TCP_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// Segments sent and not acknowledged.
    pub unacked: u32,
    /// Retransmissions over the connection's life.
    pub total_retrans: u32,
    /// Bytes the peer acknowledged (without the SYN).
    pub bytes_acked: u64,
}

/// `TCP_INFO` of a socket.
pub fn info(socket: &impl AsRawFd) -> Option<Info> {
    // SAFETY: tcp_info is plain data; zeroed is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: info is valid for len bytes.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(Info {
        unacked: info.tcpi_unacked,
        total_retrans: info.tcpi_total_retrans,
        bytes_acked: info.tcpi_bytes_acked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_listener_s_queue_and_backlog_are_read() {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind");
        socket.listen(3).expect("listen");
        let local = socket.local_addr().unwrap().as_socket().unwrap();
        let waiting = std::net::TcpStream::connect(local).expect("connect");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let q = queue(local).expect("a local listener");
        assert_eq!(q.local, local);
        assert_eq!(q.queued, 1);
        assert_eq!(q.backlog, Some(3));
        assert!(!q.is_full());
        drop(waiting);
        assert!(queue(SocketAddr::from(([192, 0, 2, 1], local.port()))).is_none());
    }

    #[test]
    fn wildcards_serve_their_family_and_dual_stack() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(serves(v4, v4), Some(3));
        assert_eq!(serves("0.0.0.0".parse().unwrap(), v4), Some(2));
        assert_eq!(serves("::".parse().unwrap(), v4), Some(1));
        assert_eq!(serves("10.0.0.1".parse().unwrap(), v4), None);
        assert!(parse_diag(&[0u8; 10]).is_none());
    }
}
