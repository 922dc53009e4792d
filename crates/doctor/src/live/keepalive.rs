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
        /// Longest idle time that still worked.
        low: Duration,
        /// Shortest idle time that failed.
        high: Duration,
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
    if matches!(
        http::exchange(&mut conn, request, timeout),
        Outcome::Response(_)
    ) {
        return IdleEnd::Open(started.elapsed());
    }
    // Silent drop: binary search on fresh connections, four rounds.
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
        if matches!(
            http::exchange(&mut fresh, request, timeout),
            Outcome::Response(_)
        ) {
            low = mid;
        } else {
            high = mid;
        }
    }
    IdleEnd::Dropped { low, high }
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
}
