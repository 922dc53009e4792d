//! The attribution vocabulary shared by `holdfast pcap` and the live doctor: who reset a
//! connection ([`Resetter`]), why ([`Cause`]), and the [`Verdict`] that combines them with a
//! hop distance, a confidence and evidence sentences.
//!
//! The names and their serialized forms (snake_case strings) are a stable interface: they are
//! the values of the `resetter` and `cause` keys in `holdfast pcap --json` (see `docs/PCAP.md`).

use std::fmt;

use serde::Serialize;

/// Who sent the reset that ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resetter {
    /// The side that opened the connection (or the capture point on its side).
    Client,
    /// The side that accepted the connection.
    Server,
    /// A device on the path that forged an endpoint's address (firewall, proxy, censor, NAT).
    Middlebox,
    /// Not enough evidence to say.
    Unknown,
}

impl Resetter {
    /// Every value, in a fixed order (for summaries).
    pub const ALL: [Resetter; 4] = [
        Resetter::Client,
        Resetter::Server,
        Resetter::Middlebox,
        Resetter::Unknown,
    ];

    /// The stable snake_case name (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Resetter::Client => "client",
            Resetter::Server => "server",
            Resetter::Middlebox => "middlebox",
            Resetter::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Resetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the connection was reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// RST answering a SYN, from the server: nothing listening on the port.
    Refused,
    /// RST answering a SYN, sent by a device that is not the server.
    FirewallReject,
    /// The server's application aborted (SO_LINGER 0, crash, close with unread data).
    AppAbort,
    /// The server closed an idle keep-alive connection and the client's next request crossed
    /// its FIN.
    IdleKeepaliveClose,
    /// The handshake completed but the server's accept queue overflowed.
    AcceptQueueOverflow,
    /// A device on the path dropped the client's request and answered it with an RST.
    ContentFilter,
    /// A forged RST raced genuine traffic.
    Injected,
    /// A load balancer or NAT reset the connection after a long silence.
    IdleTimeoutMiddlebox,
    /// The client side reset the connection.
    ClientAbort,
    /// None of the above with enough evidence.
    Unknown,
}

impl Cause {
    /// Every value, in a fixed order (for summaries and docs).
    pub const ALL: [Cause; 10] = [
        Cause::Refused,
        Cause::FirewallReject,
        Cause::AppAbort,
        Cause::IdleKeepaliveClose,
        Cause::AcceptQueueOverflow,
        Cause::ContentFilter,
        Cause::Injected,
        Cause::IdleTimeoutMiddlebox,
        Cause::ClientAbort,
        Cause::Unknown,
    ];

    /// The stable snake_case code (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Refused => "refused",
            Cause::FirewallReject => "firewall_reject",
            Cause::AppAbort => "app_abort",
            Cause::IdleKeepaliveClose => "idle_keepalive_close",
            Cause::AcceptQueueOverflow => "accept_queue_overflow",
            Cause::ContentFilter => "content_filter",
            Cause::Injected => "injected",
            Cause::IdleTimeoutMiddlebox => "idle_timeout_middlebox",
            Cause::ClientAbort => "client_abort",
            Cause::Unknown => "unknown",
        }
    }

    /// One line for a person: what this cause means.
    pub fn meaning(self) -> &'static str {
        match self {
            Cause::Refused => "nothing was listening on the server's port",
            Cause::FirewallReject => "a firewall refused the connection for the server",
            Cause::AppAbort => "the server's application aborted the connection",
            Cause::IdleKeepaliveClose => {
                "the server closed an idle keep-alive connection as the client reused it"
            }
            Cause::AcceptQueueOverflow => "the server's accept queue overflowed",
            Cause::ContentFilter => "a device on the path blocked the request",
            Cause::Injected => "a forged reset raced the real traffic",
            Cause::IdleTimeoutMiddlebox => "a load balancer or NAT dropped the idle connection",
            Cause::ClientAbort => "the client side aborted the connection",
            Cause::Unknown => "the evidence does not single out a cause",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One evidence sentence and the frames (1-based capture frame numbers) it rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The sentence, already naming its frames (e.g. "frame 7: ...").
    pub text: String,
    /// The frames the sentence rests on.
    pub frames: Vec<u64>,
}

impl Evidence {
    /// Builds an evidence sentence resting on `frames`.
    pub fn new(text: impl Into<String>, frames: impl Into<Vec<u64>>) -> Self {
        Self {
            text: text.into(),
            frames: frames.into(),
        }
    }
}

impl Serialize for Evidence {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// The attribution of one reset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Who sent it.
    pub resetter: Resetter,
    /// Why.
    pub cause: Cause,
    /// For a middlebox: its distance in hops from the capture point, when TTLs allow it.
    pub hop: Option<u8>,
    /// 0 to 1.
    pub confidence: f64,
    /// Human sentences, each naming the frames it rests on.
    pub evidence: Vec<Evidence>,
}

impl Verdict {
    /// A verdict that admits it does not know, with the reason as evidence.
    pub fn unknown(reason: Evidence) -> Self {
        Self {
            resetter: Resetter::Unknown,
            cause: Cause::Unknown,
            hop: None,
            confidence: 0.2,
            evidence: vec![reason],
        }
    }
}
