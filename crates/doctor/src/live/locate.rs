//! Locating the device that resets a request, as CenTrace does: replay the trigger on fresh
//! connections whose segments after the handshake carry IP TTL 1, 2, 3... The first TTL
//! that draws a reset is where the reset comes from; a TTL that reaches the server draws
//! its answer instead.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use crate::live::http::{self, Conn, Outcome};
use crate::live::tcp;

/// What one TTL drew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Nothing in time (the segment expired on the way, or was dropped).
    Silence,
    /// A reset.
    Reset,
    /// Data: the server answered.
    Server,
    /// The probe could not be made.
    Failed,
}

/// The replay's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// What each TTL drew, from 1 up.
    pub answers: Vec<Answer>,
}

impl Trace {
    /// The first TTL that drew a reset.
    pub fn reset_at(&self) -> Option<u8> {
        self.answers
            .iter()
            .position(|a| *a == Answer::Reset)
            .map(|i| i as u8 + 1)
    }

    /// The answers as text ("1:silence 2:RST").
    pub fn describe(&self) -> String {
        self.answers
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let word = match a {
                    Answer::Silence => "silence",
                    Answer::Reset => "RST",
                    Answer::Server => "server",
                    Answer::Failed => "failed",
                };
                format!("{}:{word}", i + 1)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Replays `request` with TTL 1..=`max_ttl`, stopping at the first reset or server answer.
/// `open` makes a fresh connection (TCP, and TLS for https) with the normal TTL.
pub fn replay(
    addr: SocketAddr,
    request: &[u8],
    max_ttl: u8,
    wait: Duration,
    open: &dyn Fn() -> Option<Conn>,
) -> Trace {
    let mut answers = Vec::new();
    for ttl in 1..=max_ttl {
        let answer = probe(addr, request, ttl, wait, open);
        answers.push(answer);
        if matches!(answer, Answer::Reset | Answer::Server) {
            break;
        }
    }
    Trace { answers }
}

fn probe(
    addr: SocketAddr,
    request: &[u8],
    ttl: u8,
    wait: Duration,
    open: &dyn Fn() -> Option<Conn>,
) -> Answer {
    let Some(mut conn) = open() else {
        return Answer::Failed;
    };
    if tcp::set_stream_ttl(conn.tcp(), u32::from(ttl)).is_err() {
        return Answer::Failed;
    }
    let deadline = std::time::Instant::now() + wait;
    conn.set_deadline(Some(deadline));
    let answer = match conn.write_all(request).and_then(|_| conn.flush()) {
        Err(e) if http::is_reset(&e) => Answer::Reset,
        Err(_) => Answer::Failed,
        Ok(()) => match http::read_response(&mut conn, deadline) {
            Outcome::Reset(_) => Answer::Reset,
            Outcome::Response(_) => Answer::Server,
            Outcome::Closed(n) | Outcome::Timeout(n) if n > 0 => Answer::Server,
            Outcome::Closed(_) => Answer::Server,
            Outcome::Timeout(_) | Outcome::Error(_) => Answer::Silence,
        },
    };
    // Let the unanswered request reach nobody: restore the TTL and abort, so the server (if
    // the segment expired) is not left waiting.
    let _ = tcp::set_stream_ttl(conn.tcp(), 64);
    let _ = socket2::SockRef::from(conn.tcp()).set_linger(Some(Duration::ZERO));
    let _ = addr;
    answer
}
