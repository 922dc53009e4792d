//! TCP connects with a classified failure (refused, timeout, unreachable) and TTL-limited
//! connects that measure the hop distance.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// How a connect failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// An RST answered the SYN (or an ICMP port unreachable).
    Refused,
    /// No answer within the timeout.
    Timeout,
    /// An ICMP error: host or network unreachable, or the TTL expired on the way.
    Unreachable(String),
    /// Anything else.
    Other(String),
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::Refused => {
                f.write_str("refused (an RST or an ICMP unreachable answered the SYN)")
            }
            ConnectFailure::Timeout => f.write_str("timed out (no answer)"),
            ConnectFailure::Unreachable(e) => write!(f, "unreachable ({e})"),
            ConnectFailure::Other(e) => write!(f, "failed ({e})"),
        }
    }
}

/// Classifies a connect error.
pub fn classify(err: &io::Error) -> ConnectFailure {
    match err.raw_os_error() {
        Some(libc::ECONNREFUSED) => return ConnectFailure::Refused,
        Some(libc::ETIMEDOUT) => return ConnectFailure::Timeout,
        Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => {
            return ConnectFailure::Unreachable(err.to_string())
        }
        _ => {}
    }
    match err.kind() {
        io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ConnectFailure::Timeout,
        _ => ConnectFailure::Other(err.to_string()),
    }
}

/// Connects with an optional IP TTL (hop limit for IPv6) on the socket.
pub fn connect(
    addr: SocketAddr,
    ttl: Option<u32>,
    timeout: Duration,
) -> Result<TcpStream, ConnectFailure> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| ConnectFailure::Other(e.to_string()))?;
    if let Some(ttl) = ttl {
        set_ttl(&socket, addr, ttl).map_err(|e| ConnectFailure::Other(e.to_string()))?;
    }
    // Bind the local port before the SYN leaves, so the capture can tell this probe's
    // packets from every other connection to the same server.
    let any: SocketAddr = match addr {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    socket
        .bind(&any.into())
        .map_err(|e| ConnectFailure::Other(e.to_string()))?;
    if let Some(local) = socket.local_addr().ok().and_then(|a| a.as_socket()) {
        super::capture::register(local.port(), addr);
    }
    socket
        .connect_timeout(&addr.into(), timeout)
        .map_err(|e| classify(&e))?;
    Ok(socket.into())
}

/// Sets the TTL (IPv4) or unicast hop limit (IPv6) of later segments.
pub fn set_ttl(socket: &Socket, addr: SocketAddr, ttl: u32) -> io::Result<()> {
    match addr {
        SocketAddr::V4(_) => socket.set_ttl_v4(ttl),
        SocketAddr::V6(_) => socket.set_unicast_hops_v6(ttl),
    }
}

/// Sets the TTL of an established stream.
pub fn set_stream_ttl(stream: &TcpStream, ttl: u32) -> io::Result<()> {
    match stream.peer_addr()? {
        SocketAddr::V4(_) => stream.set_ttl(ttl),
        SocketAddr::V6(_) => socket2::SockRef::from(stream).set_unicast_hops_v6(ttl),
    }
}

/// The first TTL at which a connect got an answer, and that answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distance {
    /// The TTL.
    pub ttl: u8,
    /// True when the answer was a handshake, false when it was a refusal.
    pub connected: bool,
}

/// Connects with TTL 1, 2, 3... until something answers (a handshake or a refusal): the hop
/// distance of whatever answers for the address. TTL expiries come back as ICMP time
/// exceeded (unreachable) or nothing (timeout); both mean "further".
pub fn distance(addr: SocketAddr, max_hops: u8, budget: Duration) -> Option<Distance> {
    let started = Instant::now();
    let per_probe = Duration::from_millis(1500);
    for ttl in 1..=max_hops {
        if started.elapsed() > budget {
            return None;
        }
        match connect(addr, Some(u32::from(ttl)), per_probe) {
            Ok(_) => {
                return Some(Distance {
                    ttl,
                    connected: true,
                })
            }
            Err(ConnectFailure::Refused) => {
                return Some(Distance {
                    ttl,
                    connected: false,
                })
            }
            Err(_) => continue,
        }
    }
    None
}
