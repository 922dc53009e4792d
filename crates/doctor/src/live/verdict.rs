//! The live doctor's verdict: the vocabulary of `holdfast pcap` ([`crate::pcap::verdict`])
//! extended with the layers a capture cannot see (`proxy`, `dns`, `timeout`, `tls`,
//! `sni_filter`) and with `none` for a URL that works.

use std::fmt;

use serde::Serialize;

use crate::pcap::verdict::{Cause, Resetter};

/// Who reset (or failed) the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveResetter {
    /// This machine.
    Client,
    /// The server.
    Server,
    /// A device on the path.
    Middlebox,
    /// The configured HTTP proxy.
    Proxy,
    /// Nobody: the URL works, or the failure was not a reset.
    None,
    /// Not enough evidence.
    Unknown,
}

/// Why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveCause {
    /// Nothing listens on the port (RST to SYN from the server).
    Refused,
    /// A device refused the connection for the server.
    FirewallReject,
    /// The server's application aborted the connection.
    AppAbort,
    /// The server closes idle keep-alive connections in a way that races clients.
    IdleKeepaliveClose,
    /// The server's accept queue is full (listen backlog overflow): its kernel drops (or,
    /// with `tcp_abort_on_overflow`, resets) new SYNs and handshakes.
    AcceptQueueOverflow,
    /// A device on the path (NAT, firewall, load balancer) forgets idle connections and
    /// resets them when they are used again.
    IdleTimeoutMiddlebox,
    /// A device on the path resets this request (path, Host or content).
    ContentFilter,
    /// A device resets the TLS handshake for this server name.
    SniFilter,
    /// A forged reset raced real traffic.
    Injected,
    /// The configured proxy fails.
    Proxy,
    /// The name does not resolve.
    Dns,
    /// No answer in time.
    Timeout,
    /// The TLS handshake fails: a certificate or protocol error, or the server itself
    /// rejecting it (its own reset, e.g. for a server name it does not serve).
    Tls,
    /// The server closed the connection with a FIN (no reset) before a complete answer.
    EarlyClose,
    /// The URL works.
    None,
    /// The evidence does not single out a cause.
    Unknown,
}

impl From<Resetter> for LiveResetter {
    fn from(r: Resetter) -> Self {
        match r {
            Resetter::Client => LiveResetter::Client,
            Resetter::Server => LiveResetter::Server,
            Resetter::Middlebox => LiveResetter::Middlebox,
            Resetter::Unknown => LiveResetter::Unknown,
        }
    }
}

impl From<Cause> for LiveCause {
    fn from(c: Cause) -> Self {
        match c {
            Cause::Refused => LiveCause::Refused,
            Cause::FirewallReject => LiveCause::FirewallReject,
            Cause::AppAbort => LiveCause::AppAbort,
            Cause::IdleKeepaliveClose => LiveCause::IdleKeepaliveClose,
            Cause::AcceptQueueOverflow => LiveCause::AcceptQueueOverflow,
            Cause::ContentFilter => LiveCause::ContentFilter,
            Cause::Injected => LiveCause::Injected,
            Cause::IdleTimeoutMiddlebox => LiveCause::IdleTimeoutMiddlebox,
            Cause::ClientAbort | Cause::Unknown => LiveCause::Unknown,
        }
    }
}

impl LiveCause {
    /// Concrete next steps for this cause.
    pub fn advice(self) -> Vec<&'static str> {
        match self {
            LiveCause::Refused => vec![
                "check that the service is running and listening on this port (ss -ltnp on the server)",
                "check the URL's port; a load balancer may point at a stopped backend",
            ],
            LiveCause::FirewallReject => vec![
                "a firewall on the path answers for the server: look for `REJECT --reject-with tcp-reset` rules (holdfast audit on the firewall host)",
                "ask the network's administrator to allow this port, or use another network to confirm",
            ],
            LiveCause::AppAbort => vec![
                "look at the server application's logs at this time for crashes, panics or aborted handlers",
                "avoid SO_LINGER 0 and closing sockets with unread request data",
            ],
            LiveCause::IdleKeepaliveClose => vec![
                "make clients (proxies, pools) drop idle connections before the server's idle timeout",
                "have the server advertise `Keep-Alive: timeout=N` and close with FIN, or raise its idle timeout",
                "retry idempotent requests once when a reused connection fails",
            ],
            LiveCause::AcceptQueueOverflow => vec![
                "raise the listen backlog on the server (the listen() backlog, e.g. nginx `listen ... backlog=N`) together with net.core.somaxconn, which caps it, and net.ipv4.tcp_max_syn_backlog",
                "make the application accept faster: more workers or threads, nothing blocking its accept loop; a stuck or overloaded application leaves connections waiting",
                "run `holdfast audit` on the server to see ListenOverflows and the full queue with its owner",
            ],
            LiveCause::IdleTimeoutMiddlebox => vec![
                "a NAT, firewall or load balancer on the path drops idle connections from its state table and resets them on reuse: raise its idle (conntrack) timeout",
                "or keep connections busy with TCP keep-alive or shorter client idle timeouts (pools, proxies) than the device's",
            ],
            LiveCause::ContentFilter => vec![
                "a device on the path resets this request: try another network or a VPN to confirm",
                "if the device is yours (IDS, WAF, firewall), look for a string-match rule on the path or Host",
            ],
            LiveCause::SniFilter => vec![
                "a device filters by TLS server name: try another network, a VPN, or Encrypted Client Hello",
                "if the server is yours, check that it serves this name (a certificate and a virtual host for it): a server that rejects an unknown name by resetting looks the same without the reset's TTL",
            ],
            LiveCause::Injected => vec![
                "an on-path device forges resets: compare from another network, and capture with `holdfast pcap`",
            ],
            LiveCause::Proxy => vec![
                "fix or remove the proxy in HTTP_PROXY/HTTPS_PROXY/ALL_PROXY, or add this host to NO_PROXY",
            ],
            LiveCause::Dns => vec![
                "check the name for typos; try another resolver with --resolver to compare",
                "check /etc/resolv.conf and that the resolver is reachable",
            ],
            LiveCause::Timeout => vec![
                "packets are dropped silently: check firewalls (DROP rules), routes and whether the server is up",
            ],
            LiveCause::Tls => vec![
                "check the server's TLS set-up (versions, ciphers, certificate): openssl s_client -connect HOST:PORT -servername NAME",
            ],
            LiveCause::EarlyClose => vec![
                "check that the port speaks what the URL says: http:// to a TLS port (or https:// to a plain one) is closed this way",
                "look at the server's logs for the request: it closed the connection without answering",
            ],
            LiveCause::None => vec![],
            LiveCause::Unknown if crate::running_as_root() => vec![
                "capture the failure (the doctor captures unless --no-capture is given, or tcpdump) and run `holdfast pcap` on it",
            ],
            LiveCause::Unknown => vec![
                "capture the failure (run the doctor as root, or tcpdump) and run `holdfast pcap` on it",
            ],
        }
    }
}

/// The doctor's conclusion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveVerdict {
    /// Who.
    pub resetter: LiveResetter,
    /// Why.
    pub cause: LiveCause,
    /// The hop of a middlebox, when located.
    pub hop: Option<u8>,
    /// One sentence.
    pub summary: String,
    /// Concrete next steps, from the cause.
    pub advice: Vec<String>,
}

impl LiveVerdict {
    /// A verdict with the advice of its cause.
    pub fn new(
        resetter: LiveResetter,
        cause: LiveCause,
        hop: Option<u8>,
        summary: impl Into<String>,
    ) -> Self {
        Self {
            resetter,
            cause,
            hop,
            summary: summary.into(),
            advice: cause.advice().into_iter().map(str::to_string).collect(),
        }
    }

    /// The URL works.
    pub fn healthy(summary: impl Into<String>) -> Self {
        Self::new(LiveResetter::None, LiveCause::None, None, summary)
    }

    /// Whether this verdict reports a problem.
    pub fn is_failure(&self) -> bool {
        self.cause != LiveCause::None
    }
}

/// The snake_case name a value serializes to (as in JSON).
fn snake_name(value: &impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

impl fmt::Display for LiveResetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&snake_name(self))
    }
}

impl fmt::Display for LiveCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&snake_name(self))
    }
}
