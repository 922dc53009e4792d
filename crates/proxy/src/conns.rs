//! Pooled HTTP/1.1 connections to upstream targets ([`H1Conn`], driven by [`crate::h1`]),
//! with keep-alive hygiene: each pooled connection carries a deadline (the pool's idle
//! timeout, shortened to stay ahead of the upstream's own `Keep-Alive: timeout=N`), is
//! retired before the upstream would close it, and is checked at checkout for a close or
//! reset that came while it was idle.
//!
//! A pool with `protocol = "http2"` keeps one multiplexed HTTP/2 connection per target
//! instead: every exchange shares it (a handle clone) until it closes, then the next exchange
//! dials a new one. Requests that need hyper's HTTP/1 client (streamed uploads, protocol
//! upgrades) get a connection of their own ([`ConnPool::connect`]), used once.

use rustc_hash::FxHashMap as HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use holdfast_core::config::Target;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::dial::{DialError, Dialer};
use crate::h1::H1Conn;
use crate::plugin::Body;

/// The sending half of an upstream connection.
pub enum Sender {
    Http1(http1::SendRequest<Body>),
    /// A handle on a shared, multiplexed connection.
    Http2(http2::SendRequest<Body>),
}

impl Sender {
    pub fn is_ready(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_ready(),
            Sender::Http2(s) => s.is_ready(),
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }

    pub async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::Http1(s) => s.ready().await,
            Sender::Http2(s) => s.ready().await,
        }
    }

    /// Queue `req` at once (as hyper does); the future yields the response head, or hands the
    /// request back when it was never written.
    #[allow(clippy::result_large_err)]
    pub fn try_send_request(
        &mut self,
        req: http::Request<Body>,
    ) -> impl std::future::Future<
        Output = Result<http::Response<Incoming>, TrySendError<http::Request<Body>>>,
    > {
        match self {
            Sender::Http1(s) => Either::Left(s.try_send_request(req)),
            Sender::Http2(s) => Either::Right(s.try_send_request(req)),
        }
    }
}

/// A hyper connection (or HTTP/2 handle) for one exchange.
pub struct Conn {
    pub sender: Sender,
    /// It served an earlier exchange (so a failure before any response byte is the idle race).
    pub reused: bool,
    pub target: usize,
}

struct Idle {
    conn: H1Conn,
    deadline: Instant,
}

/// Why a new connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("HTTP handshake with {0} failed: {1}")]
    Handshake(String, hyper::Error),
}

/// Idle connections of one pool, per target index.
pub struct ConnPool {
    dialer: Dialer,
    idle: Mutex<HashMap<usize, Vec<Idle>>>,
    idle_timeout: Duration,
    max_idle: usize,
    /// Learned `Keep-Alive: timeout=N` per target.
    learned: Mutex<HashMap<usize, Duration>>,
    /// HTTP/2 pools: the shared connection of each target.
    shared: Mutex<HashMap<usize, http2::SendRequest<Body>>>,
    /// How long the last new connection to each target took (about one round trip, more
    /// with TLS): the bound of the idle race (see [`ConnPool::idle_race_window`]).
    dial_time: Mutex<HashMap<usize, Duration>>,
}

/// The idle race's window is a few round trips to the target, within these bounds.
const IDLE_RACE_MIN: Duration = Duration::from_millis(10);
const IDLE_RACE_MAX: Duration = Duration::from_secs(1);

impl ConnPool {
    pub fn new(dialer: Dialer, idle_timeout: Duration, max_idle: usize) -> ConnPool {
        ConnPool {
            dialer,
            idle: Mutex::new(HashMap::default()),
            idle_timeout,
            max_idle,
            learned: Mutex::new(HashMap::default()),
            shared: Mutex::new(HashMap::default()),
            dial_time: Mutex::new(HashMap::default()),
        }
    }

    /// How soon after a request went out on a reused connection a failure with no response
    /// byte is the idle keep-alive race (the upstream had closed the connection as the
    /// request went out: its reset or FIN comes back within about a round trip). A failure
    /// later than this came from an upstream that read the request and worked on it, so it
    /// may have processed it.
    pub fn idle_race_window(&self, target: usize) -> Duration {
        let dial = self
            .dial_time
            .lock()
            .ok()
            .and_then(|m| m.get(&target).copied())
            .unwrap_or(IDLE_RACE_MIN);
        (dial * 4).clamp(IDLE_RACE_MIN, IDLE_RACE_MAX)
    }

    fn record_dial(&self, target: usize, took: Duration) {
        if let Ok(mut m) = self.dial_time.lock() {
            m.insert(target, took);
        }
    }

    /// The shared HTTP/2 connection to `target`, if it is open (the caller still awaits
    /// `ready()`).
    pub fn checkout_shared(&self, target: usize) -> Option<Conn> {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let sender = shared.get(&target)?;
        if sender.is_closed() {
            shared.remove(&target);
            return None;
        }
        Some(Conn {
            sender: Sender::Http2(sender.clone()),
            reused: true,
            target,
        })
    }

    /// The most recently used idle HTTP/1.1 connection to `target` that is still open.
    pub fn checkout(&self, target: usize) -> Option<H1Conn> {
        let now = Instant::now();
        loop {
            let idle = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.get_mut(&target)?.pop()?
            };
            if idle.deadline <= now {
                // The rest of the list is older still.
                self.idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&target);
                return None;
            }
            let mut conn = idle.conn;
            if !conn.is_stale() {
                conn.reused = true;
                return Some(conn);
            }
        }
    }

    /// Open a new HTTP/1.1 connection to `spec` (index `target`) for [`crate::h1`].
    pub async fn dial(
        &self,
        target: usize,
        spec: &Target,
        timeout: Duration,
    ) -> Result<H1Conn, DialError> {
        let started = Instant::now();
        let stream = self.dialer.dial(spec, timeout).await?;
        self.record_dial(target, started.elapsed());
        Ok(H1Conn::new(stream, target))
    }

    /// How this pool opens connections (also used by health checks).
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// Open a new hyper connection to `spec` (index `target`): the shared one of an HTTP/2
    /// pool, or an HTTP/1.1 one for a single exchange.
    pub async fn connect(
        &self,
        target: usize,
        spec: &Target,
        timeout: Duration,
    ) -> Result<Conn, ConnectError> {
        let started = Instant::now();
        let stream = self.dialer.dial(spec, timeout).await?;
        self.record_dial(target, started.elapsed());
        if self.dialer.http2() {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ConnectError::Handshake(spec.authority.clone(), e))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(target, sender.clone());
            return Ok(Conn {
                sender: Sender::Http2(sender),
                reused: false,
                target,
            });
        }
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Handshake(spec.authority.clone(), e))?;
        tokio::spawn(async move {
            // With upgrades: after a `101` the socket goes to the tunnel (see the gateway).
            let _ = conn.with_upgrades().await;
        });
        Ok(Conn {
            sender: Sender::Http1(sender),
            reused: false,
            target,
        })
    }

    /// Record the upstream's `Keep-Alive: timeout=N` for `target`.
    pub fn learn_keep_alive(&self, target: usize, header: Option<&http::HeaderValue>) {
        let Some(secs) = header
            .and_then(|v| v.to_str().ok())
            .and_then(parse_keep_alive_timeout)
        else {
            return;
        };
        self.learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(target, Duration::from_secs(secs));
    }

    /// How long a connection to `target` may stay idle in the pool.
    pub fn idle_limit(&self, target: usize) -> Duration {
        let learned = self
            .learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&target)
            .copied();
        match learned {
            // Retire a second early (half the time for very short timeouts) to stay ahead of
            // the upstream's close.
            Some(t) if t >= Duration::from_secs(2) => {
                self.idle_timeout.min(t - Duration::from_secs(1))
            }
            Some(t) => self.idle_timeout.min(t / 2),
            None => self.idle_timeout,
        }
    }

    /// Return an HTTP/1.1 connection after a complete exchange.
    pub fn checkin(&self, conn: H1Conn) {
        let limit = self.idle_limit(conn.target);
        if limit.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(conn.target).or_default();
        // Oldest first: drop the expired ones at the front.
        let expired = list.iter().take_while(|c| c.deadline <= now).count();
        list.drain(..expired);
        if list.len() < self.max_idle {
            list.push(Idle {
                conn,
                deadline: now + limit,
            });
        }
    }
}

/// `timeout=5, max=100` -> 5.
pub fn parse_keep_alive_timeout(value: &str) -> Option<u64> {
    value.split(',').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("timeout")
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

/// Shared handle.
pub type SharedPool = Arc<ConnPool>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keep_alive() {
        assert_eq!(parse_keep_alive_timeout("timeout=5, max=100"), Some(5));
        assert_eq!(parse_keep_alive_timeout("max=10,Timeout=75"), Some(75));
        assert_eq!(parse_keep_alive_timeout("max=10"), None);
    }

    #[test]
    fn learned_timeout_shortens_the_idle_limit() {
        let pool = ConnPool::new(Dialer::plain(), Duration::from_secs(30), 8);
        assert_eq!(pool.idle_limit(0), Duration::from_secs(30));
        pool.learn_keep_alive(0, Some(&http::HeaderValue::from_static("timeout=5")));
        assert_eq!(pool.idle_limit(0), Duration::from_secs(4));
        pool.learn_keep_alive(1, Some(&http::HeaderValue::from_static("timeout=1")));
        assert_eq!(pool.idle_limit(1), Duration::from_millis(500));
    }
}
