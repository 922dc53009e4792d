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
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, Parseable, NLMSG_ALIGNTO, NLMSG_DONE,
    NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags,
};
use netlink_packet_sock_diag::{self as sock_diag, SockDiagMessage};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

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

/// The most datagrams one dump may take. A dump comes in several; a host has a bounded
/// number of listeners, and a bounded number of reads keeps this from looping on a
/// misbehaving kernel.
const DIAG_READS: usize = 4096;

/// Every TCP listener of this network namespace with its queue and backlog, as `ss -ltn`
/// reads them (NETLINK_SOCK_DIAG). None when netlink cannot be used.
fn diag_listeners() -> Option<Vec<ListenQueue>> {
    let mut out = diag_dump(sock_diag::AF_INET)?;
    // IPv6 may be off; its listeners are then simply none.
    out.extend(diag_dump(sock_diag::AF_INET6).unwrap_or_default());
    Some(out)
}

/// The `SOCK_DIAG_BY_FAMILY` dump request for the TCP listeners of `family`.
fn diag_request(family: u8) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let socket_id = if family == sock_diag::AF_INET6 {
        SocketId::new_v6()
    } else {
        SocketId::new_v4()
    };
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: sock_diag::IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN,
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    // Sized by the packet itself, so `serialize` has the room it needs.
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

fn diag_dump(family: u8) -> Option<Vec<ListenQueue>> {
    let socket = netlink_sys::Socket::new(NETLINK_SOCK_DIAG).ok()?;
    // Bounded time: a kernel that stops answering ends the dump after 1 s.
    socket2::SockRef::from(&socket)
        .set_read_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    // To the kernel (port 0); the socket is bound by the kernel on this first send.
    let kernel = netlink_sys::SocketAddr::new(0, 0);
    socket.send_to(&diag_request(family), &kernel, 0).ok()?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..DIAG_READS {
        let n = socket.recv(&mut &mut buf[..], 0).ok()?;
        if n == 0 {
            return None;
        }
        match diag_datagram(&buf[..n.min(buf.len())], &mut out) {
            Dump::More => {}
            Dump::Done => return Some(out),
            Dump::Failed => return None,
        }
    }
    Some(out)
}

/// Where a dump stands after one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dump {
    /// More datagrams follow.
    More,
    /// The dump is complete (`NLMSG_DONE`).
    Done,
    /// The kernel refused it (`NLMSG_ERROR`).
    Failed,
}

/// The netlink messages of one datagram of a dump: the listeners go to `out`. A message
/// that is not a TCP listener's is skipped; a truncated one ends the datagram.
fn diag_datagram(data: &[u8], out: &mut Vec<ListenQueue>) -> Dump {
    let mut at = 0;
    while let Some(rest) = data.get(at..) {
        let Ok(message) = NetlinkBuffer::new_checked(rest) else {
            break;
        };
        match message.message_type() {
            NLMSG_DONE => return Dump::Done,
            NLMSG_ERROR => return Dump::Failed,
            sock_diag::SOCK_DIAG_BY_FAMILY => out.extend(parse_diag(message.payload())),
            _ => {}
        }
        let align = usize::from(NLMSG_ALIGNTO);
        at += (message.length() as usize).div_ceil(align) * align;
    }
    Dump::More
}

/// One `inet_diag_msg`: for a listener, `idiag_rqueue` is the accept queue's length and
/// `idiag_wqueue` its backlog. Only its fixed part is read: the attributes after it are not
/// asked for and not needed.
fn parse_diag(payload: &[u8]) -> Option<ListenQueue> {
    let header = InetResponseHeader::parse(payload).ok()?;
    if header.state != sock_diag::TCP_LISTEN {
        return None;
    }
    Some(ListenQueue {
        local: SocketAddr::new(
            header.socket_id.source_address,
            header.socket_id.source_port,
        ),
        queued: header.recv_queue,
        backlog: Some(header.send_queue),
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
    use netlink_packet_core::{DoneMessage, ErrorMessage, NetlinkPayload};

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
    fn an_ipv6_listener_s_backlog_is_read_when_ipv6_is_on() {
        let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
            return; // no IPv6 here
        };
        let local = listener.local_addr().unwrap();
        let q = diag_listeners()
            .expect("netlink answers")
            .into_iter()
            .find(|l| l.local == local)
            .expect("the [::1] listener is in the dump");
        assert_eq!(q.queued, 0);
        assert!(q.backlog.is_some_and(|b| b > 0), "{q:?}");
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

    /// A `SOCK_DIAG_BY_FAMILY` answer for one socket, as the kernel sends it.
    fn diag_answer(local: SocketAddr, state: u8, rqueue: u32, wqueue: u32) -> Vec<u8> {
        let mut socket_id = match local {
            SocketAddr::V4(_) => SocketId::new_v4(),
            SocketAddr::V6(_) => SocketId::new_v6(),
        };
        socket_id.source_address = local.ip();
        socket_id.source_port = local.port();
        let family = match local {
            SocketAddr::V4(_) => sock_diag::AF_INET,
            SocketAddr::V6(_) => sock_diag::AF_INET6,
        };
        let response = sock_diag::inet::InetResponse {
            header: InetResponseHeader {
                family,
                state,
                timer: None,
                socket_id,
                recv_queue: rqueue,
                send_queue: wqueue,
                uid: 0,
                inode: 7,
            },
            nlas: Default::default(),
        };
        serialized(SockDiagMessage::InetResponse(Box::new(response)).into())
    }

    fn serialized(payload: NetlinkPayload<SockDiagMessage>) -> Vec<u8> {
        let mut message = NetlinkMessage::new(NetlinkHeader::default(), payload);
        message.finalize();
        let mut buf = vec![0u8; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    #[test]
    fn the_dump_request_is_the_kernel_s_inet_diag_req_v2() {
        let req = diag_request(sock_diag::AF_INET6);
        // nlmsghdr (16 bytes), then inet_diag_req_v2 (56 bytes).
        assert_eq!(req.len(), 72);
        assert_eq!(u32::from_ne_bytes(req[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(req[4..6].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes(req[6..8].try_into().unwrap()), 0x301);
        assert_eq!(u32::from_ne_bytes(req[8..12].try_into().unwrap()), 1);
        assert_eq!(
            &req[16..20],
            &[libc::AF_INET6 as u8, libc::IPPROTO_TCP as u8, 0, 0]
        );
        assert_eq!(u32::from_ne_bytes(req[20..24].try_into().unwrap()), 1 << 10);
        assert!(req[24..].iter().all(|b| *b == 0));
    }

    #[test]
    fn a_dump_datagram_yields_its_listeners_and_ends_on_done_or_error() {
        let v4 = SocketAddr::from(([127, 0, 0, 1], 8080));
        let v6: SocketAddr = "[::]:443".parse().unwrap();
        let mut data = diag_answer(v4, sock_diag::TCP_LISTEN, 2, 128);
        // An established socket is not a listener.
        data.extend(diag_answer(v4, sock_diag::TCP_ESTABLISHED, 9, 9));
        data.extend(diag_answer(v6, sock_diag::TCP_LISTEN, 0, 4096));
        let mut out = Vec::new();
        assert_eq!(diag_datagram(&data, &mut out), Dump::More);
        let want = vec![
            ListenQueue {
                local: v4,
                queued: 2,
                backlog: Some(128),
            },
            ListenQueue {
                local: v6,
                queued: 0,
                backlog: Some(4096),
            },
        ];
        assert_eq!(out, want);

        // The end of the dump.
        data.extend(serialized(NetlinkPayload::Done(DoneMessage::default())));
        data.extend(diag_answer(v4, sock_diag::TCP_LISTEN, 5, 5));
        out.clear();
        assert_eq!(diag_datagram(&data, &mut out), Dump::Done);
        assert_eq!(out, want);

        // A refusal.
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(-libc::EPERM);
        let refused = serialized(NetlinkPayload::Error(error));
        assert_eq!(diag_datagram(&refused, &mut Vec::new()), Dump::Failed);

        // A truncated message ends the datagram; nothing half-read is taken.
        let whole = diag_answer(v4, sock_diag::TCP_LISTEN, 1, 1);
        for cut in 0..whole.len() {
            let mut out = Vec::new();
            assert_eq!(diag_datagram(&whole[..cut], &mut out), Dump::More);
            assert!(out.is_empty(), "cut at {cut}");
        }
        // A length field that lies.
        let mut lying = whole.clone();
        lying[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(diag_datagram(&lying, &mut Vec::new()), Dump::More);
        lying[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(diag_datagram(&lying, &mut Vec::new()), Dump::More);
    }
}
