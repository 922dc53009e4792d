//! How long the server keeps an idle keep-alive connection, how it closes it (FIN or RST)
//! and what it advertised in `Keep-Alive`.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::live::http::{self, Conn, Outcome};

/// How an idle connection ended.
#[derive(Debug, Clone, PartialEq)]
pub enum IdleEnd {
    /// The server closed it with a FIN after this long.
    Fin(Duration),
    /// The server (or a device) reset it after this long.
    Rst(Duration),
    /// It stayed open for the whole wait and still answered a request.
    Open(Duration),
    /// It stayed silent, but a request after the wait failed: the state was dropped
    /// somewhere between `low` (worked) and `high` (failed), found by binary search.
    Dropped {
        /// Longest idle time that still worked (0: a second request right away worked).
        low: Duration,
        /// Shortest idle time that failed.
        high: Duration,
        /// Whether a failed request got an RST back (not a silent drop: someone reset it).
        reset: bool,
    },
    /// A second request on a connection fails even without idle time: the server does not
    /// serve more than one request per connection, whatever it says about keep-alive.
    NoSecondRequest {
        /// The second request got an RST back.
        reset: bool,
    },
}

/// The advertised idle timeout in seconds, from `Keep-Alive: timeout=N`.
pub fn advertised(keep_alive: Option<&str>) -> Option<f64> {
    keep_alive?
        .split(',')
        .filter_map(|p| p.trim().strip_prefix("timeout="))
        .find_map(|v| v.trim().parse().ok())
}

/// Waits on `conn` (idle after a response) up to `max_idle`, then, if it is still open,
/// sends `request` on it. `open` makes fresh connections for the binary search.
pub fn measure(
    mut conn: Conn,
    request: &[u8],
    max_idle: Duration,
    timeout: Duration,
    open: &dyn Fn() -> Option<Conn>,
) -> IdleEnd {
    let started = Instant::now();
    let _ = conn.tcp().set_read_timeout(Some(max_idle));
    let mut byte = [0u8; 1];
    match conn.read(&mut byte) {
        Ok(0) => return IdleEnd::Fin(started.elapsed()),
        Err(e) if http::is_reset(&e) => return IdleEnd::Rst(started.elapsed()),
        // Timed out (still open) or stray data: try it.
        _ => {}
    }
    let first = http::exchange(&mut conn, request, timeout);
    if matches!(first, Outcome::Response(_)) {
        return IdleEnd::Open(started.elapsed());
    }
    let mut reset = matches!(first, Outcome::Reset(_));
    // Before searching for an idle time, test a second request with no idle time at all:
    // a server that answers only one request per connection has no idle timeout to find.
    if let Some(mut fresh) = open() {
        if matches!(
            http::exchange(&mut fresh, request, timeout),
            Outcome::Response(_)
        ) {
            match http::exchange(&mut fresh, request, timeout) {
                Outcome::Response(_) => {}
                other => {
                    return IdleEnd::NoSecondRequest {
                        reset: matches!(other, Outcome::Reset(_)),
                    }
                }
            }
        }
    }
    // The state was dropped (or reset) while idle: binary search on fresh connections,
    // four rounds. `low` = 0 was just tested, `high` = `max_idle` failed above.
    let (mut low, mut high) = (Duration::ZERO, max_idle);
    for _ in 0..4 {
        let mid = (low + high) / 2;
        let Some(mut fresh) = open() else { break };
        if !matches!(
            http::exchange(&mut fresh, request, timeout),
            Outcome::Response(_)
        ) {
            break;
        }
        std::thread::sleep(mid);
        match http::exchange(&mut fresh, request, timeout) {
            Outcome::Response(_) => low = mid,
            other => {
                reset |= matches!(other, Outcome::Reset(_));
                high = mid;
            }
        }
    }
    IdleEnd::Dropped { low, high, reset }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_header_timeout_parses() {
        assert_eq!(advertised(Some("timeout=5, max=100")), Some(5.0));
        assert_eq!(advertised(Some("max=100")), None);
        assert_eq!(advertised(None), None);
    }

    /// A loopback server that answers the first request of each connection and then
    /// neither answers nor closes (audit D4).
    fn one_request_server() -> std::net::SocketAddr {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    if matches!(stream.read(&mut buf), Ok(n) if n > 0) {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    }
                    // Hold the connection open, ignoring further requests.
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        });
        addr
    }

    #[test]
    fn a_server_ignoring_a_second_request_is_not_an_idle_close() {
        let addr = one_request_server();
        let timeout = Duration::from_millis(500);
        let open = || {
            std::net::TcpStream::connect(addr)
                .ok()
                .map(crate::live::http::Conn::plain)
        };
        let request = http::request("/", &addr.to_string());
        let mut conn = open().unwrap();
        assert!(matches!(
            http::exchange(&mut conn, &request, timeout),
            Outcome::Response(_)
        ));
        let end = measure(conn, &request, Duration::from_millis(300), timeout, &open);
        assert_eq!(end, IdleEnd::NoSecondRequest { reset: false });
    }
}
