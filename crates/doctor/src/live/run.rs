//! The layer-by-layer run of the doctor.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use super::capture::{self, Capture};
use super::check::{Progress, Recorder, Status};
use super::http::{self, Conn, Outcome};
use super::keepalive::{self, IdleEnd};
use super::listen;
use super::locate;
use super::tcp::{self, ConnectFailure};
use super::tls::{self, TlsFailure};
use super::verdict::{LiveCause, LiveResetter, LiveVerdict};
use super::{dns, env_proxy, DoctorError, DoctorOptions, DoctorReport, Target};

/// The state of one run.
struct Run<'a> {
    options: &'a DoctorOptions,
    target: Target,
    tls_config: Arc<ClientConfig>,
    rec: Recorder<'a>,
    capture: Option<Capture>,
    /// The doctor's own probe sockets: the capture keeps only their packets.
    probes: capture::Probes,
    servers: Vec<IpAddr>,
    /// The server's hop distance, once the tcp check measured it.
    distance: Option<u8>,
}

/// Probes the URL and returns the report. Fails only on bad input (exit status 2).
pub fn run(
    options: &DoctorOptions,
    progress: &mut dyn Progress,
) -> Result<DoctorReport, DoctorError> {
    options.validate()?;
    let target = Target::parse(&options.url)?;
    let tls_config = tls::client_config(options.insecure, options.ca_file.as_deref())?;
    let mut run = Run {
        options,
        target,
        tls_config,
        rec: Recorder::new(progress),
        capture: None,
        probes: capture::Probes::default(),
        servers: Vec::new(),
        distance: None,
    };
    let scope = run.probes.enter();
    let verdict = run.layers();
    drop(scope);
    run.finish_capture();
    Ok(DoctorReport {
        url: options.url.clone(),
        verdict,
        checks: run.rec.checks,
    })
}

/// How to get the RST's TTL as evidence: capture as root, or, when the doctor already runs
/// as root, let it capture.
fn capture_hint() -> &'static str {
    if crate::running_as_root() {
        "let the doctor capture (leave out --no-capture)"
    } else {
        "capture as root"
    }
}

impl Run<'_> {
    fn layers(&mut self) -> LiveVerdict {
        if let Some(v) = self.environment() {
            return v;
        }
        let addrs = match self.dns() {
            Ok(addrs) => addrs,
            Err(v) => return v,
        };
        self.servers = addrs.iter().map(|a| a.ip()).collect();
        self.start_capture();
        let (addr, distance) = match self.tcp(&addrs) {
            Ok(found) => found,
            Err(v) => return v,
        };
        self.distance = distance;
        if self.target.tls {
            if let Some(v) = self.tls(addr, distance) {
                return v;
            }
        } else {
            self.rec.skip("tls", "http URL: no TLS");
        }
        let (conn, response) = match self.http(addr, distance) {
            Ok(done) => done,
            Err(v) => return v,
        };
        let keepalive = self.keepalive(addr, conn, &response);
        let stability = self.stability(addr);
        keepalive.or(stability).unwrap_or_else(|| {
            if response.status >= 500 {
                // Not a reset, and every layer works: the verdict stays `none` (exit 0), but
                // the answer is an error status and the report says so.
                let mut verdict = LiveVerdict::healthy(format!(
                    "no reset, but {} answered HTTP {} to GET {}: a server error status (the connection works over every layer; the application failed the request)",
                    addr, response.status, self.target.path
                ));
                verdict.advice = vec![
                    format!("the server answered {}: look at the application's (or the proxy's) error log for this request", response.status),
                    "a 502/503/504 from a proxy or load balancer means its backend failed, is down or timed out: check the backend".to_string(),
                ];
                return verdict;
            }
            LiveVerdict::healthy(format!(
                "{} works: {} answered {} over every layer",
                self.target.url, addr, response.status
            ))
        })
    }

    fn environment(&mut self) -> Option<LiveVerdict> {
        self.rec.start("environment", "proxy variables");
        let env = match &self.options.proxy_env {
            Some(vars) => env_proxy::read(&self.target, &|name| {
                vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
            }),
            None => env_proxy::read(&self.target, &|name| std::env::var(name).ok()),
        };
        let Some(proxy) = env.proxy.clone() else {
            let detail = match (&env.excluded_by, env.set.is_empty()) {
                (Some(entry), _) => format!(
                    "no proxy: NO_PROXY entry {entry:?} covers {}",
                    self.target.host
                ),
                (None, true) => "no proxy variables set".to_string(),
                (None, false) => format!("no proxy applies to this URL ({})", env.set.join(", ")),
            };
            self.rec.finish(Status::Pass, detail);
            return None;
        };
        if let Some(scheme) = env_proxy::untestable_scheme(&proxy) {
            self.rec.finish(
                Status::Warn,
                format!(
                    "{}={} applies, but it is a {scheme} proxy and only http:// proxies can be tested: not tested; the next layers test the direct path",
                    proxy.var, proxy.url
                ),
            );
            return None;
        }
        match env_proxy::test(&proxy, &self.target, self.options.timeout) {
            Ok(answer) => {
                self.rec.finish(
                    Status::Warn,
                    format!(
                        "{}={} applies and works ({answer}); the next layers test the direct path",
                        proxy.var, proxy.url
                    ),
                );
                None
            }
            Err(why) => {
                self.rec.finish(
                    Status::Fail,
                    format!("{}={} applies: {why}", proxy.var, proxy.url),
                );
                let mut verdict = LiveVerdict::new(
                    LiveResetter::Proxy,
                    LiveCause::Proxy,
                    None,
                    format!("the proxy in {} ({}) fails: {why}", proxy.var, proxy.url),
                );
                let no_proxy = if proxy.var.chars().any(|c| c.is_ascii_lowercase()) {
                    "no_proxy"
                } else {
                    "NO_PROXY"
                };
                verdict.advice = vec![format!(
                    "fix or remove the proxy in {} (unset {}), or add this host to {no_proxy}",
                    proxy.var, proxy.var
                )];
                Some(verdict)
            }
        }
    }

    fn dns(&mut self) -> Result<Vec<SocketAddr>, LiveVerdict> {
        let host = self.target.host.clone();
        self.rec.start("dns", &host);
        if let Some(ip) = self.target.literal() {
            self.rec
                .finish(Status::Pass, format!("{ip} is an address literal"));
            return Ok(vec![self.target.socket_addr(ip)]);
        }
        let started = Instant::now();
        let system = dns::system(&host, self.target.port);
        let system_ms = started.elapsed().as_millis();
        let chosen = self.options.resolver.map(|server| {
            (
                server,
                dns::with_resolver(&host, server, self.options.timeout),
            )
        });
        match system {
            Err(e) => {
                let also = match &chosen {
                    Some((server, Ok(ips))) => format!("; resolver {server} answers {ips:?}"),
                    Some((server, Err(e2))) => format!("; resolver {server} fails too: {e2}"),
                    None => String::new(),
                };
                self.rec
                    .finish(Status::Fail, format!("system resolver: {e}{also}"));
                Err(LiveVerdict::new(
                    LiveResetter::None,
                    LiveCause::Dns,
                    None,
                    format!("{host} does not resolve through the system resolver: {e}"),
                ))
            }
            Ok(addrs) => {
                let ips: std::collections::BTreeSet<IpAddr> =
                    addrs.iter().map(|a| a.ip()).collect();
                let mut detail = format!("system resolver: {ips:?} in {system_ms} ms");
                let mut status = Status::Pass;
                match chosen {
                    Some((server, Ok(other))) if other != ips => {
                        status = Status::Warn;
                        detail.push_str(&format!(
                            "; resolver {server} answers differently: {other:?}"
                        ));
                    }
                    Some((server, Ok(_))) => {
                        detail.push_str(&format!("; resolver {server} agrees"))
                    }
                    Some((server, Err(e))) => {
                        status = Status::Warn;
                        detail.push_str(&format!("; resolver {server} fails: {e}"));
                    }
                    None => {}
                }
                self.rec.finish(status, detail);
                Ok(addrs)
            }
        }
    }

    fn start_capture(&mut self) {
        if !self.options.capture {
            self.rec.skip("capture", "off (--no-capture)");
            return;
        }
        self.rec.start("capture", "recording probe packets");
        match capture::start(self.servers.clone(), self.probes.clone()) {
            Ok(c) => {
                self.capture = Some(c);
                self.rec
                    .finish(Status::Pass, "recording own probe packets (AF_PACKET)");
            }
            Err(why) => self.rec.finish(
                Status::Skip,
                format!("{why}; lacking the resets' TTL and IP ID as evidence"),
            ),
        }
    }

    /// Stops the capture and adds the analyser's verdicts as a check.
    fn finish_capture(&mut self) {
        let Some(capture) = self.capture.take() else {
            return;
        };
        self.rec.start("capture", "analysing probe packets");
        let packets = capture.finish();
        match capture::analyze(&packets) {
            Ok(reports) if reports.is_empty() => self
                .rec
                .finish(Status::Pass, format!("{} packets, no reset", packets.len())),
            Ok(reports) => {
                // The analyser sees one connection at a time; the doctor also knows the
                // server's distance, so a reset from nearer than the server is not the
                // server's, as in the verdict.
                let distance = self
                    .distance
                    .or_else(|| capture::server_hop(&packets, &self.servers));
                // Resets from the server's side only: those the doctor's own socket sent
                // (its aborts, a close with unread data) are its own doing, not evidence.
                let seen = capture::resets(&packets, &self.servers);
                let own = capture::own_resets(&packets).len();
                let lines: Vec<String> = reports
                    .iter()
                    .filter_map(|r| {
                        let rst = seen
                            .iter()
                            .filter(|s| {
                                s.local_port == r.client.port() || s.local_port == r.server.port()
                            })
                            .min_by_key(|s| s.hop)?;
                        Some(connection_line(r, Some(rst), distance))
                    })
                    .collect();
                let own = own_resets_note(own);
                let detail = if lines.is_empty() {
                    format!(
                        "{} packets, no reset from the server or the path{own}",
                        packets.len()
                    )
                } else {
                    format!(
                        "{} packets, analyser: {}{own}",
                        packets.len(),
                        lines.join("; ")
                    )
                };
                self.rec.finish(Status::Pass, detail);
            }
            Err(e) => self
                .rec
                .finish(Status::Skip, format!("analyser failed: {e}")),
        }
    }

    /// The smallest hop distance of the resets captured so far from the server's address
    /// (None without a capture or without a reset).
    fn captured_reset_hop(&self) -> Option<u8> {
        self.captured_reset().map(|r| r.hop)
    }

    /// The captured reset from nearest the client (smallest hop), if any.
    fn captured_reset(&self) -> Option<capture::SeenReset> {
        let capture = self.capture.as_ref()?;
        // Let the recorder catch up with the packets that just arrived.
        std::thread::sleep(Duration::from_millis(300));
        capture::resets(&capture.snapshot(), &self.servers)
            .into_iter()
            .min_by_key(|r| r.hop)
    }

    /// The captured ICMP destination unreachable from nearest the client, if any.
    fn captured_unreachable(&self) -> Option<capture::SeenUnreachable> {
        let capture = self.capture.as_ref()?;
        std::thread::sleep(Duration::from_millis(300));
        capture::unreachables(&capture.snapshot(), &self.servers)
            .into_iter()
            .min_by_key(|u| u.hop)
    }

    /// The captured reset as evidence: " (captured RST: TTL 64, IP ID 0)".
    fn reset_evidence(&self) -> String {
        match self.captured_reset() {
            Some(r)
                if self.servers.iter().any(|s| s.is_ipv6())
                    && !self.servers.iter().any(|s| s.is_ipv4()) =>
            {
                format!(" (captured RST: hop limit {})", r.ttl)
            }
            Some(r) => format!(" (captured RST: TTL {}, IP ID {})", r.ttl, r.ip_id),
            None if self.capture.is_some() => {
                " (no RST in the running capture: the refusal was an ICMP unreachable)".to_string()
            }
            None if self.servers.iter().all(|s| s.is_ipv6()) && !self.servers.is_empty() => {
                " (no capture: the RST's hop limit is lacking)".to_string()
            }
            None => " (no capture: the RST's TTL and IP ID are lacking)".to_string(),
        }
    }

    fn tcp(&mut self, addrs: &[SocketAddr]) -> Result<(SocketAddr, Option<u8>), LiveVerdict> {
        self.rec.start("tcp", "connect to every address");
        let overflows = listen::Overflows::read();
        let mut results = Vec::new();
        for &addr in addrs {
            let started = Instant::now();
            let outcome = tcp::connect(addr, None, self.options.timeout).map(drop);
            results.push((addr, outcome, started.elapsed()));
        }
        let detail: Vec<String> = results
            .iter()
            .map(|(a, o, t)| match o {
                Ok(()) => format!("{a} connected in {} ms", t.as_millis()),
                Err(e) => format!("{a} {e}"),
            })
            .collect();
        let budget = self.options.timeout * 4;
        if let Some((addr, _, _)) = results.iter().find(|(_, o, _)| o.is_ok()) {
            let addr = *addr;
            let distance = tcp::distance(addr, self.options.max_hops, budget);
            let hops = match &distance {
                Some(d) => format!("; server at hop {}", d.ttl),
                None => "; hop distance not measured (no answer to TTL-limited connects)".into(),
            };
            let status = if results.iter().all(|(_, o, _)| o.is_ok()) {
                Status::Pass
            } else {
                Status::Warn
            };
            self.rec
                .finish(status, format!("{}{hops}", detail.join("; ")));
            return Ok((addr, distance.map(|d| d.ttl)));
        }
        // Every address failed: explain the first.
        let (addr, failure) = match results.into_iter().next() {
            Some((addr, Err(failure), _)) => (addr, failure),
            _ => {
                self.rec.finish(Status::Fail, "no address to connect to");
                return Err(LiveVerdict::new(
                    LiveResetter::Unknown,
                    LiveCause::Unknown,
                    None,
                    "no address",
                ));
            }
        };
        // The captured RST's TTL is evidence for a refusal only (a timeout has no reset).
        let refused = failure == ConnectFailure::Refused;
        let verdict = match failure {
            ConnectFailure::Refused => self.refused(addr, budget),
            ConnectFailure::Timeout => match self.full_accept_queue(addr, overflows) {
                Some(evidence) => accept_queue_verdict(
                    addr,
                    "its SYNs go unanswered",
                    &evidence,
                ),
                None => LiveVerdict::new(
                    LiveResetter::None,
                    LiveCause::Timeout,
                    None,
                    format!("connecting to {addr} timed out: SYNs are dropped on the way, by a firewall, or by the server's kernel when its accept queue is full (listen backlog)"),
                ),
            },
            ConnectFailure::Unreachable(e) => LiveVerdict::new(
                LiveResetter::None,
                LiveCause::Unknown,
                None,
                format!("{addr} is unreachable ({e}): a router has no route or a firewall answers with ICMP"),
            ),
            ConnectFailure::Other(e) => LiveVerdict::new(
                LiveResetter::Client,
                LiveCause::Unknown,
                None,
                format!("connecting to {addr} failed on this machine: {e}"),
            ),
        };
        let evidence = if refused {
            self.reset_evidence()
        } else {
            String::new()
        };
        self.rec.finish(
            Status::Fail,
            format!("{}; {}{evidence}", detail.join("; "), verdict.summary),
        );
        Err(verdict)
    }

    /// A refused connect: the server, or a firewall answering for it?
    fn refused(&mut self, addr: SocketAddr, budget: Duration) -> LiveVerdict {
        let distance = tcp::distance(addr, self.options.max_hops, budget).map(|d| d.ttl);
        // The end `capture` check judges the captured resets against the same distance.
        self.distance = self.distance.or(distance);
        let rst_hop = self.captured_reset_hop();
        let at = distance.map(|d| format!(" at TTL {d}")).unwrap_or_default();
        match (rst_hop, distance) {
            (Some(hop), Some(d)) if hop < d => LiveVerdict::new(
                LiveResetter::Middlebox,
                LiveCause::FirewallReject,
                Some(hop),
                format!(
                    "a firewall at hop {hop} refuses connections to {addr} for the server: its reset has the TTL of hop {hop}, while the refusal first appears{at}"
                ),
            ),
            (Some(hop), _) => LiveVerdict::new(
                LiveResetter::Server,
                LiveCause::Refused,
                None,
                format!("{addr} refuses the connection: nothing listens on the port (the reset comes from hop {hop}, the server's distance{at})"),
            ),
            (None, _) => {
                let icmp = self.captured_unreachable();
                refused_without_rst(addr, distance, self.capture.is_some(), icmp)
            }
        }
    }

    /// Evidence that the accept queue of `addr` is full, when its listener is on this host:
    /// the queue is longer than its backlog, or (backlog unknown) connections wait in it
    /// while the kernel's overflow counter grew since `before`.
    fn full_accept_queue(
        &self,
        addr: SocketAddr,
        before: Option<listen::Overflows>,
    ) -> Option<String> {
        let queue = listen::queue(addr)?;
        let grown = before
            .zip(listen::Overflows::read())
            .map(|(before, now)| now.since(&before));
        let proven = queue.is_full()
            || (queue.backlog.is_none()
                && queue.queued > 0
                && grown.is_some_and(|g| g.overflows > 0));
        if !proven {
            return None;
        }
        let mut text = queue.describe();
        if let Some(g) = grown.filter(|g| g.overflows > 0 || g.drops > 0) {
            text.push_str(&format!(
                "; this host's ListenOverflows counter rose by {} and ListenDrops by {} during the probe",
                g.overflows, g.drops
            ));
        }
        Some(text)
    }

    /// A connect that failed after the tcp check had connected to the same address. A
    /// timeout then is the mark of a full accept queue (its kernel drops new SYNs); proven
    /// when the listener is on this host, likely otherwise.
    fn connect_failed(
        &mut self,
        addr: SocketAddr,
        failure: &ConnectFailure,
        overflows: Option<listen::Overflows>,
    ) -> LiveVerdict {
        if *failure == ConnectFailure::Timeout {
            if let Some(evidence) = self.full_accept_queue(addr, overflows) {
                return accept_queue_verdict(
                    addr,
                    "the tcp check connected, then new SYNs went unanswered",
                    &evidence,
                );
            }
            return LiveVerdict::new(
                LiveResetter::Unknown,
                LiveCause::AcceptQueueOverflow,
                None,
                format!(
                    "{addr} completed a handshake a moment ago (the tcp check) but now leaves SYNs unanswered: most likely its accept queue is full (listen backlog overflow) and its kernel drops new SYNs; a firewall that limits new connections would look the same (run `holdfast audit` on the server: ListenOverflows, accept queues)"
                ),
            );
        }
        LiveVerdict::new(
            LiveResetter::Unknown,
            LiveCause::Unknown,
            None,
            format!("the connection to {addr} failed on retry ({failure}) although the tcp check connected; run again"),
        )
    }
}

/// The verdict for a full accept queue on the server, with what the probe saw (`what`) and
/// the evidence.
fn accept_queue_verdict(addr: SocketAddr, what: &str, evidence: &str) -> LiveVerdict {
    LiveVerdict::new(
        LiveResetter::Server,
        LiveCause::AcceptQueueOverflow,
        None,
        format!(
            "the accept queue of {addr} is full (listen backlog overflow): {what}; {evidence}. Its kernel drops new SYNs and handshakes until the application accepts the connections waiting: the server's cause, not the network's"
        ),
    )
}

/// The end capture check's note on the resets the doctor itself sent.
fn own_resets_note(count: usize) -> String {
    match count {
        0 => String::new(),
        1 => "; 1 RST sent by holdfast doctor (expected: it closed or aborted its own probe connection), not evidence".to_string(),
        n => format!("; {n} RSTs sent by holdfast doctor (expected: it closed or aborted its own probe connections), not evidence"),
    }
}

/// The application layers: TLS, HTTP (with controls and the device location), keep-alive
/// and stability.
impl Run<'_> {
    /// A fresh connection ready for HTTP (TLS done for https).
    fn open(&self, addr: SocketAddr) -> Result<Conn, TlsFailure> {
        open_conn(addr, &self.target, &self.tls_config, self.options.timeout)
    }

    /// Next steps for a TLS error that is not a reset, from what was given.
    fn tls_advice(&self, error: &str) -> Vec<String> {
        let certificate = error.contains("certificate");
        let mut advice = Vec::new();
        match (&self.options.ca_file, self.options.insecure) {
            (_, true) => advice.push(
                "--insecure is on, so the certificate is not the problem: compare the TLS versions and ciphers the server offers (openssl s_client -connect HOST:PORT)".to_string(),
            ),
            (Some(path), false) if certificate => advice.push(format!(
                "the certificate does not verify against --ca-file {}: give the CA that issued the server's certificate, or the server's certificate itself (it is then trusted as is for its names)",
                path.display()
            )),
            (None, false) if certificate => advice.push(
                "check the server's certificate chain and name; for a private CA or a self-signed certificate, pass it with --ca-file (or test with --insecure)".to_string(),
            ),
            _ => {}
        }
        if error.contains("not TLS") {
            advice.push("the port may speak plain HTTP: try http://".to_string());
        }
        if advice.is_empty() {
            advice.push(
                "compare with openssl s_client -connect HOST:PORT -servername NAME".to_string(),
            );
        }
        advice
    }

    fn tls(&mut self, addr: SocketAddr, distance: Option<u8>) -> Option<LiveVerdict> {
        let sni = self.target.host.clone();
        self.rec.start("tls", &format!("handshake with SNI {sni}"));
        let timeout = self.options.timeout;
        let overflows = listen::Overflows::read();
        let real = tcp::connect(addr, None, timeout)
            .map_err(TlsFailure::Connect)
            .and_then(|s| tls::handshake(s, &sni, self.tls_config.clone(), timeout));
        let failure = match real {
            Ok(stream) => {
                let version = stream
                    .conn
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default();
                self.rec.finish(
                    Status::Pass,
                    format!("handshake with SNI {sni} completed ({version})"),
                );
                return None;
            }
            Err(f) => f,
        };
        if let TlsFailure::Connect(e) = &failure {
            let verdict = self.connect_failed(addr, e, overflows);
            self.rec.finish(
                Status::Fail,
                format!("connect before the handshake: {e}; {}", verdict.summary),
            );
            return Some(verdict);
        }
        if let TlsFailure::Refused(e) = &failure {
            self.rec.finish(Status::Fail, format!("SNI {sni}: {e}"));
            let mut verdict = LiveVerdict::new(
                LiveResetter::None,
                LiveCause::Tls,
                None,
                format!("the TLS handshake with {sni} fails: {e}"),
            );
            verdict.advice = self.tls_advice(e);
            return Some(verdict);
        }
        let control_sni = self.options.control_sni.clone();
        let control = tls::control_config()
            .map_err(|e| TlsFailure::Refused(e.to_string()))
            .and_then(|config| {
                tcp::connect(addr, None, timeout)
                    .map_err(TlsFailure::Connect)
                    .and_then(|s| tls::handshake(s, &control_sni, config, timeout))
            });
        let control_answered = !matches!(
            control,
            Err(TlsFailure::Reset
                | TlsFailure::Closed
                | TlsFailure::Timeout
                | TlsFailure::Connect(_))
        );
        let control_text = match &control {
            Ok(_) => "handshake completed".to_string(),
            Err(e) => e.to_string(),
        };
        let reset_seen = failure == TlsFailure::Reset || matches!(control, Err(TlsFailure::Reset));
        let evidence = if reset_seen {
            self.reset_evidence()
        } else {
            String::new()
        };
        self.rec.finish(
            Status::Fail,
            format!("SNI {sni}: {failure}; control SNI {control_sni}: {control_text}{evidence}"),
        );
        // Where the reset comes from, when the capture's TTL puts it before the server.
        let before_server = if failure == TlsFailure::Reset {
            self.captured_reset_hop()
                .filter(|h| distance.is_some_and(|d| *h < d))
        } else {
            None
        };
        if failure == TlsFailure::Reset && control_answered {
            return Some(self.reset_for_the_name(addr, &sni, &control_sni, distance));
        }
        if let (Some(h), Some(d)) = (before_server, distance) {
            return Some(LiveVerdict::new(
                LiveResetter::Middlebox,
                LiveCause::ContentFilter,
                Some(h),
                format!(
                    "a device at hop {h}, before the server at hop {d}, resets the TLS handshake with {sni} (the captured reset's TTL puts its sender at hop {h}); the control SNI {control_sni}: {control_text}"
                ),
            ));
        }
        if failure == TlsFailure::Timeout {
            return Some(LiveVerdict::new(
                LiveResetter::None,
                LiveCause::Timeout,
                None,
                format!("the ClientHello with {sni} gets no complete answer within {timeout:?} (--timeout bounds the whole handshake): it is dropped on the way, the server does not speak TLS on this port, or it answers too slowly"),
            ));
        }
        if failure == TlsFailure::Reset {
            let why = if self.capture.is_some() {
                "the captured reset comes from the server's distance".to_string()
            } else {
                format!("a device at the server's distance cannot be ruled out without a capture ({} to compare the reset's TTL)", capture_hint())
            };
            return Some(self.tls_failure(LiveVerdict::new(
                LiveResetter::Server,
                LiveCause::Tls,
                None,
                format!(
                    "the TLS handshake with {sni} is reset ({why}); the control SNI {control_sni}: {control_text}: the server's TLS set-up refuses the handshake"
                ),
            )));
        }
        Some(self.tls_failure(LiveVerdict::new(
            LiveResetter::None,
            LiveCause::Tls,
            None,
            format!("the TLS handshake with {sni} fails ({failure}); the control SNI {control_sni}: {control_text}"),
        )))
    }

    /// The handshake is reset with the real server name while the control name completes:
    /// the verdict from who sent the reset ([`name_reset_verdict`]).
    fn reset_for_the_name(
        &mut self,
        addr: SocketAddr,
        sni: &str,
        control_sni: &str,
        distance: Option<u8>,
    ) -> LiveVerdict {
        let rst_hop = self.captured_reset_hop();
        let server_hop = self
            .capture
            .as_ref()
            .and_then(|c| capture::server_hop(&c.snapshot(), &self.servers))
            .or(distance);
        name_reset_verdict(
            addr,
            (sni, control_sni),
            listen::is_local(addr),
            rst_hop,
            server_hop,
            self.capture.is_some(),
        )
    }

    /// A TLS failure that is not about certificates (a reset or a closed handshake): with
    /// --insecure, certificates are not checked, so the advice leaves them out.
    fn tls_failure(&self, mut verdict: LiveVerdict) -> LiveVerdict {
        if self.options.insecure {
            verdict.advice = vec![
                "--insecure is on, so certificates are not checked and are not the cause: compare the TLS versions and ciphers the server offers (openssl s_client -connect HOST:PORT -servername NAME) and look at its TLS logs".to_string(),
            ];
        }
        verdict
    }

    fn http(
        &mut self,
        addr: SocketAddr,
        distance: Option<u8>,
    ) -> Result<(Conn, http::Response), LiveVerdict> {
        let request = http::request(&self.target.path, &self.target.host_header());
        self.rec.start("http", &format!("GET {}", self.target.path));
        let overflows = listen::Overflows::read();
        let mut conn = match self.open(addr) {
            Ok(conn) => conn,
            Err(TlsFailure::Connect(e)) => {
                let verdict = self.connect_failed(addr, &e, overflows);
                self.rec
                    .finish(Status::Fail, format!("connect: {e}; {}", verdict.summary));
                return Err(verdict);
            }
            Err(e) => {
                self.rec.finish(
                    Status::Fail,
                    format!("the TLS handshake failed on retry: {e}"),
                );
                return Err(LiveVerdict::new(
                    LiveResetter::Unknown,
                    LiveCause::Unknown,
                    None,
                    format!("the TLS handshake with {addr} failed on retry ({e}) although the tls check passed; run again"),
                ));
            }
        };
        let outcome = http::exchange(&mut conn, &request, self.options.timeout);
        let got = match outcome {
            Outcome::Response(response) => {
                let status = if response.status >= 500 {
                    Status::Warn
                } else {
                    Status::Pass
                };
                self.rec
                    .finish(status, format!("{} {}", addr, response.describe()));
                return Ok((conn, response));
            }
            Outcome::Reset(n) => n,
            Outcome::Closed(n) => {
                let bytes = if n == 0 {
                    "without answering".to_string()
                } else {
                    format!("after {n} bytes, before a complete answer")
                };
                self.rec.finish(
                    Status::Fail,
                    format!("the server closed the connection (FIN, no reset) {bytes}"),
                );
                let hint = if n == 0 && !self.target.tls {
                    ": does the port speak TLS (try https://)?"
                } else {
                    ""
                };
                return Err(LiveVerdict::new(
                    LiveResetter::None,
                    LiveCause::EarlyClose,
                    None,
                    format!(
                        "{addr} closed the connection with a FIN, not a reset, {bytes} to GET {}{hint}",
                        self.target.path
                    ),
                ));
            }
            Outcome::Timeout(n) => {
                let limit = self.options.timeout.as_secs_f64();
                let got = if n == 0 {
                    "did not answer".to_string()
                } else {
                    format!("sent {n} bytes but no complete answer")
                };
                // What the kernel knows: was the request acknowledged at all?
                let info = listen::info(conn.tcp());
                let unacked = info.filter(|i| i.bytes_acked == 0 && i.unacked > 0);
                let tcp_info = match (info, unacked) {
                    (_, Some(i)) => format!(
                        "; the request was never acknowledged (TCP_INFO: {} retransmissions)",
                        i.total_retrans
                    ),
                    (Some(i), None) => {
                        format!(
                            "; the server's kernel acknowledged all {} bytes sent",
                            i.bytes_acked
                        )
                    }
                    (None, None) => String::new(),
                };
                self.rec.finish(
                    Status::Fail,
                    format!(
                        "no complete answer within the --timeout deadline of {limit} s for the whole exchange ({n} bytes){tcp_info}"
                    ),
                );
                if let Some(evidence) = self.full_accept_queue(addr, overflows) {
                    return Err(accept_queue_verdict(
                        addr,
                        &format!("the request's connection {got} within {limit} s: it waits in the queue, not accepted by the application"),
                        &evidence,
                    ));
                }
                if let Some(i) = unacked {
                    let mut verdict = LiveVerdict::new(
                        LiveResetter::None,
                        LiveCause::Timeout,
                        None,
                        format!(
                            "{addr} completed the handshake but never acknowledged the request (GET {}, {} retransmissions) within {limit} s: the server's kernel did not take it (a full accept queue drops the handshake's last ACK), or a device on the path drops it",
                            self.target.path, i.total_retrans
                        ),
                    );
                    verdict.advice = vec![
                        "on the server, look for a full accept queue: `holdfast audit` (ListenOverflows, accept queues), or `ss -ltn` (Recv-Q above Send-Q)".to_string(),
                        "if the server's queue is fine, a firewall on the path drops the request: compare from another network".to_string(),
                    ];
                    return Err(verdict);
                }
                // The connection is up (handshake done, TLS too for https) and the request was
                // written: the server took it and did not answer in time.
                let mut verdict = LiveVerdict::new(
                    LiveResetter::None,
                    LiveCause::Timeout,
                    None,
                    format!(
                        "{addr} accepted the connection and the request (GET {}) but {got} within the timeout of {limit} s (for the whole answer): the server or its application is slow, not the network",
                        self.target.path
                    ),
                );
                verdict.advice = vec![
                    "the application is slow or stuck on this request: look at its logs, its load and what it waits for (database, upstreams)".to_string(),
                    format!("if the answer is just slow, raise --timeout (now {limit} s) to measure how long it takes"),
                ];
                return Err(verdict);
            }
            Outcome::Error(e) => {
                self.rec.finish(Status::Fail, e.clone());
                return Err(LiveVerdict::new(
                    LiveResetter::Unknown,
                    LiveCause::Unknown,
                    None,
                    format!("the exchange failed: {e}"),
                ));
            }
        };
        // A reset: do harmless controls pass?
        let controls = self.controls(addr);
        let control_ok = controls.iter().any(|(_, ok)| *ok);
        let control_text: Vec<String> = controls
            .iter()
            .map(|(what, ok)| format!("{what}: {}", if *ok { "answered" } else { "failed" }))
            .collect();
        let evidence = self.reset_evidence();
        self.rec.finish(
            Status::Fail,
            format!(
                "reset after {got} bytes of answer; controls: {}{evidence}",
                control_text.join(", ")
            ),
        );
        if !control_ok {
            let hop = self.captured_reset_hop();
            return Err(match (hop, distance) {
                (Some(h), Some(d)) if h < d => LiveVerdict::new(
                    LiveResetter::Middlebox,
                    LiveCause::Injected,
                    Some(h),
                    format!("every request to {addr} is reset, harmless ones too, by a device at hop {h} before the server at hop {d}: the captured resets' TTL puts their sender there, so they are not the server's"),
                ),
                (Some(h), _) => LiveVerdict::new(
                    LiveResetter::Server,
                    LiveCause::AppAbort,
                    None,
                    format!("every request to {addr} is reset, harmless ones too: the server aborts connections (the captured reset comes from hop {h}, the server's distance)"),
                ),
                (None, _) => LiveVerdict::new(
                    LiveResetter::Server,
                    LiveCause::AppAbort,
                    None,
                    format!("every request to {addr} is reset, harmless ones too: the server aborts connections{}", if self.capture.is_some() { String::new() } else { format!(" (or a device at its distance: {} to compare the reset's TTL)", capture_hint()) }),
                ),
            });
        }
        Err(self.locate(addr, &request, distance))
    }

    /// Control requests: the root path with the real Host, and the real path with the
    /// control Host. Each gives (description, answered).
    fn controls(&mut self, addr: SocketAddr) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut tries = Vec::new();
        if self.target.path != "/" {
            tries.push((
                format!("GET / Host {}", self.target.host_header()),
                http::request("/", &self.target.host_header()),
            ));
        }
        if !self.target.tls {
            let host = self.options.control_sni.clone();
            tries.push((
                format!("GET {} Host {host}", self.target.path),
                http::request(&self.target.path, &host),
            ));
        }
        for (what, request) in tries {
            let ok = self
                .open(addr)
                .map(|mut c| {
                    matches!(
                        http::exchange(&mut c, &request, self.options.timeout),
                        Outcome::Response(_)
                    )
                })
                .unwrap_or(false);
            out.push((what, ok));
        }
        out
    }

    /// The trigger is reset but controls pass: find where the reset comes from.
    fn locate(&mut self, addr: SocketAddr, request: &[u8], distance: Option<u8>) -> LiveVerdict {
        self.rec
            .start("locate", "replaying the request with TTL 1, 2, 3...");
        let max = distance
            .unwrap_or(self.options.max_hops)
            .min(self.options.max_hops);
        let target = self.target.clone();
        let config = self.tls_config.clone();
        let timeout = self.options.timeout;
        let wait = Duration::from_millis(1500).min(timeout);
        let trace = locate::replay(addr, request, max, wait, &|| {
            open_conn(addr, &target, &config, timeout).ok()
        });
        let rst_hop = self.captured_reset_hop();
        let path = &self.target.path;
        let d = distance
            .map(|d| d.to_string())
            .unwrap_or_else(|| "?".into());
        let (resetter, hop, how) = match (trace.reset_at(), rst_hop, distance) {
            (_, Some(h), Some(d)) if h < d => (LiveResetter::Middlebox, Some(h), format!("the reset's TTL puts its sender at hop {h}, before the server at hop {d}")),
            (Some(t), _, Some(d)) if t < d => (LiveResetter::Middlebox, Some(t), format!("the replay draws a reset at TTL {t}, before the server at hop {d}")),
            (Some(t), None, _) => (LiveResetter::Unknown, None, format!("the replay draws a reset at TTL {t}, the server's distance ({d}): a device on the last router or the server ({} to compare the reset's TTL)", capture_hint())),
            (Some(t), Some(h), _) => (LiveResetter::Unknown, None, format!("the replay draws a reset at TTL {t} and the reset's TTL says hop {h}, the server's distance")),
            (None, _, _) => (LiveResetter::Unknown, None, "the replay drew no reset".to_string()),
        };
        let status = if resetter == LiveResetter::Middlebox {
            Status::Fail
        } else {
            Status::Warn
        };
        let evidence = self.reset_evidence();
        self.rec
            .finish(status, format!("{}; {how}{evidence}", trace.describe()));
        let who = match hop {
            Some(h) => format!("a device at hop {h}"),
            None => "something on the path".to_string(),
        };
        LiveVerdict::new(
            resetter,
            LiveCause::ContentFilter,
            hop,
            format!("{who} resets the request for {path} while harmless requests pass: {how}"),
        )
    }

    fn keepalive(
        &mut self,
        addr: SocketAddr,
        conn: Conn,
        response: &http::Response,
    ) -> Option<LiveVerdict> {
        if response.body_end != http::BodyEnd::Complete {
            self.rec.skip(
                "keepalive",
                format!(
                    "the body was not read to its end ({} bytes read), so the connection cannot be reused",
                    response.body_len
                ),
            );
            return None;
        }
        if !response.keeps_alive() {
            self.rec.skip(
                "keepalive",
                "the server closes after each response (Connection: close or HTTP/1.0)",
            );
            return None;
        }
        let max_idle = self.options.max_idle;
        self.rec.start(
            "keepalive",
            &format!("idle for up to {:.1}s", max_idle.as_secs_f64()),
        );
        let advertised_header = response.header("keep-alive").map(str::to_string);
        let advertised = keepalive::advertised(advertised_header.as_deref());
        let request = http::request(&self.target.path, &self.target.host_header());
        let target = self.target.clone();
        let config = self.tls_config.clone();
        let timeout = self.options.timeout;
        let end = keepalive::measure(conn, &request, max_idle, timeout, &|| {
            open_conn(addr, &target, &config, timeout).ok()
        });
        let adv = match (&advertised_header, advertised) {
            (Some(h), _) => format!("advertised Keep-Alive: {h}"),
            (None, _) => "no Keep-Alive header".to_string(),
        };
        let (status, detail, problem) = match end {
            IdleEnd::Open(t) => (
                Status::Pass,
                format!("still open after {:.1}s idle ({adv})", t.as_secs_f64()),
                None,
            ),
            IdleEnd::Fin(t) => {
                let secs = t.as_secs_f64();
                // Announced (Keep-Alive: timeout=N, N no longer than measured), or a close
                // right after the response, which a client sees before reusing.
                let honest = secs < 0.1 || advertised.is_some_and(|a| a <= secs * 1.05 + 0.5);
                let detail = format!("closed with FIN after {secs:.2}s idle ({adv})");
                if honest {
                    (Status::Pass, detail, None)
                } else {
                    (Status::Warn, detail.clone(), Some(format!(
                        "{addr} closes idle keep-alive connections after {secs:.2}s with a FIN it did not announce ({adv}): a client reusing one then gets a reset"
                    )))
                }
            }
            IdleEnd::Rst(t) => {
                let secs = t.as_secs_f64();
                (
                    Status::Warn,
                    format!("reset after {secs:.2}s idle ({adv})"),
                    Some(format!(
                        "idle keep-alive connections to {addr} are reset after {secs:.2}s ({adv})"
                    )),
                )
            }
            IdleEnd::Dropped { low, high, reset } => {
                let (lo, hi) = (low.as_secs_f64(), high.as_secs_f64());
                let how = if reset {
                    "reset on reuse"
                } else {
                    "silently dropped"
                };
                let worked = if low.is_zero() {
                    "a second request right away worked".to_string()
                } else {
                    format!("a request after {lo:.1}s idle worked")
                };
                let detail = format!("{how}: {worked}, after {hi:.1}s it failed ({adv})");
                let rst_hop = if reset {
                    self.captured_reset_hop()
                } else {
                    None
                };
                self.rec.finish(Status::Warn, detail);
                return Some(idle_verdict(addr, lo, hi, reset, rst_hop, self.distance));
            }
            IdleEnd::NoSecondRequest { reset } => {
                let how = if reset { "reset" } else { "not answered" };
                self.rec.finish(
                    Status::Warn,
                    format!(
                        "a second request on a connection, with no idle time, was {how} ({adv})"
                    ),
                );
                let mut verdict = LiveVerdict::new(
                    LiveResetter::Server,
                    LiveCause::Unknown,
                    None,
                    format!("{addr} does not serve a second request on a keep-alive connection (it was {how} with no idle time): not an idle timeout"),
                );
                verdict.advice = vec![
                    "the server (or a proxy in front of it) handles one request per connection: fix its keep-alive support, or have it send `Connection: close`".to_string(),
                    "until then, make clients (pools, proxies) not reuse connections to it".to_string(),
                ];
                return Some(verdict);
            }
        };
        self.rec.finish(status, detail);
        problem.map(|summary| {
            LiveVerdict::new(
                LiveResetter::Server,
                LiveCause::IdleKeepaliveClose,
                None,
                summary,
            )
        })
    }

    fn stability(&mut self, addr: SocketAddr) -> Option<LiveVerdict> {
        let n = self.options.repeat;
        if n <= 1 {
            self.rec.skip("stability", "--repeat 1");
            return None;
        }
        self.rec.start("stability", &format!("{n} requests"));
        let overflows = listen::Overflows::read();
        let request = http::request(&self.target.path, &self.target.host_header());
        let words: Vec<&'static str> = (0..n)
            .map(|_| match self.open(addr) {
                Ok(mut c) => http::exchange(&mut c, &request, self.options.timeout).word(),
                Err(_) => "connect",
            })
            .collect();
        let failed = words.iter().filter(|w| **w != "ok").count();
        let pattern = words.join(" ");
        if failed == 0 {
            self.rec
                .finish(Status::Pass, format!("{n} of {n} answered"));
            return None;
        }
        self.rec
            .finish(Status::Warn, format!("{failed} of {n} failed: {pattern}"));
        if words.iter().any(|w| *w == "connect" || *w == "timeout") {
            if let Some(evidence) = self.full_accept_queue(addr, overflows) {
                return Some(accept_queue_verdict(
                    addr,
                    &format!("{failed} of {n} requests failed ({pattern})"),
                    &evidence,
                ));
            }
        }
        Some(LiveVerdict::new(
            LiveResetter::Unknown,
            LiveCause::Unknown,
            None,
            format!("{failed} of {n} requests to {addr} failed intermittently ({pattern})"),
        ))
    }
}

/// The TLS handshake is reset with the server name `names.0` while the control name
/// `names.1` completes. Who sent the reset decides: the server itself (`local`: it runs on
/// this machine; or its RST comes from `server_hop`, the hop of its own SYN-ACK) rejects the
/// name; a device before the server filters by SNI; without the RST's hop, nobody is blamed.
fn name_reset_verdict(
    addr: SocketAddr,
    names: (&str, &str),
    local: bool,
    rst_hop: Option<u8>,
    server_hop: Option<u8>,
    capturing: bool,
) -> LiveVerdict {
    let (sni, control_sni) = names;
    let server = |why: String| {
        let mut verdict = LiveVerdict::new(
            LiveResetter::Server,
            LiveCause::Tls,
            None,
            format!(
                "{addr} itself resets the TLS handshake for the server name {sni} and completes one for {control_sni} ({why}): the server rejects this name (no certificate or virtual host for it, or an SNI allow-list), not a device on the path"
            ),
        );
        verdict.advice = vec![
            format!("configure the server for {sni} (a certificate and a virtual host / server block for that name), or use a name it serves"),
            "look at the server's TLS or error log for the handshakes it aborts".to_string(),
        ];
        verdict
    };
    if local {
        return server("the server runs on this machine, so no device sits between".into());
    }
    match (rst_hop, server_hop) {
        (Some(h), Some(d)) if h < d => LiveVerdict::new(
            LiveResetter::Middlebox,
            LiveCause::SniFilter,
            Some(h),
            format!(
                "a device at hop {h}, before the server at hop {d}, resets the handshake with the server name {sni} (the captured reset's TTL puts its sender there) while the control {control_sni} passes: it filters by SNI"
            ),
        ),
        (Some(h), Some(d)) if h == d => server(format!(
            "the reset comes from hop {h}, the hop of the server's own SYN-ACK"
        )),
        (rst, _) => {
            let why = match rst {
                Some(h) => format!("the reset comes from hop {h}, but the server's distance is not known"),
                None if capturing => "no reset from the server's side in the running capture".to_string(),
                None => format!("without the reset's TTL ({} to compare it with the server's), a device filtering by SNI cannot be told from the server rejecting the name", capture_hint()),
            };
            LiveVerdict::new(
                LiveResetter::Unknown,
                LiveCause::SniFilter,
                None,
                format!(
                    "the handshake is reset only with the server name {sni} (control {control_sni} passes): a device filtering by SNI, or the server rejecting the name; {why}"
                ),
            )
        }
    }
}

/// A refused connect with no RST captured. With the capture running, the refusal was not an
/// RST: it was an ICMP unreachable (iptables' default `REJECT`), which a closed port never
/// sends for TCP, so a firewall answers for the server at the hop where refusals start.
/// Without a capture the RST's TTL is lacking, and the server is the likeliest sender.
fn refused_without_rst(
    addr: SocketAddr,
    distance: Option<u8>,
    capturing: bool,
    icmp: Option<capture::SeenUnreachable>,
) -> LiveVerdict {
    let at = distance.map(|d| format!(" at TTL {d}")).unwrap_or_default();
    if let Some(u) = icmp.filter(|u| u.source != addr.ip()) {
        return LiveVerdict::new(
            LiveResetter::Middlebox,
            LiveCause::FirewallReject,
            Some(u.hop),
            format!(
                "a firewall at hop {} ({}) rejects connections to {addr} for the server with an ICMP destination unreachable (TTL {}; no RST came back): a `REJECT` rule, not a closed port",
                u.hop, u.source, u.ttl
            ),
        );
    }
    if let Some(u) = icmp {
        return LiveVerdict::new(
            LiveResetter::Server,
            LiveCause::FirewallReject,
            None,
            format!(
                "the server's host {} rejects connections to {addr} with an ICMP destination unreachable (no RST came back): a `REJECT` rule in its own firewall, not a closed port",
                u.source
            ),
        );
    }
    if capturing {
        return LiveVerdict::new(
            LiveResetter::Unknown,
            LiveCause::FirewallReject,
            None,
            format!(
                "{addr} refuses the connection{at} without an RST in the running capture: an ICMP unreachable from a firewall (`REJECT`), whose sender was not captured"
            ),
        );
    }
    LiveVerdict::new(
        LiveResetter::Server,
        LiveCause::Refused,
        None,
        format!(
            "{addr} refuses the connection{at}: nothing listens on the port, or a firewall at the same distance answers for it ({} to compare the reset's TTL)",
            capture_hint()
        ),
    )
}

/// The verdict for an idle connection whose reuse failed between `lo` and `hi` seconds of
/// idle time. With a reset (`reset`), the captured RST's hop (`rst_hop`) against the server's
/// distance says who sent it: from before the server, a device's idle timeout; from the
/// server, its idle close; without the TTL, nobody is blamed. Without a reset the state was
/// dropped silently.
fn idle_verdict(
    addr: SocketAddr,
    lo: f64,
    hi: f64,
    reset: bool,
    rst_hop: Option<u8>,
    distance: Option<u8>,
) -> LiveVerdict {
    let between = format!("between {lo:.1}s and {hi:.1}s");
    if !reset {
        return LiveVerdict::new(
            LiveResetter::Server,
            LiveCause::IdleKeepaliveClose,
            None,
            format!("idle connections to {addr} are dropped without notice {between}"),
        );
    }
    match (rst_hop, distance) {
        (Some(hop), Some(d)) if hop < d => LiveVerdict::new(
            LiveResetter::Middlebox,
            LiveCause::IdleTimeoutMiddlebox,
            Some(hop),
            format!("a device at hop {hop} forgets idle connections to {addr} {between} and resets them when they are used again (the RST has the TTL of hop {hop}, the server is at hop {d})"),
        ),
        (Some(hop), Some(d)) if hop == d => LiveVerdict::new(
            LiveResetter::Server,
            LiveCause::IdleKeepaliveClose,
            None,
            format!("{addr} resets idle keep-alive connections reused after {between} (the RST comes from hop {hop}, the server's distance)"),
        ),
        _ => LiveVerdict::new(
            LiveResetter::Unknown,
            LiveCause::Unknown,
            None,
            format!("idle connections to {addr} are reset when reused after {between}: the server or a device's idle timeout; the RST's TTL that would tell them apart is lacking"),
        ),
    }
}

/// One reset connection of the end `capture` check. The analyser's verdict stands unless the
/// RST's TTL puts its sender before the server (`distance`): then the sender is a middlebox at
/// that hop, whatever the analyser could tell from the connection alone.
fn connection_line(
    r: &crate::pcap::ResetReport,
    rst: Option<&capture::SeenReset>,
    distance: Option<u8>,
) -> String {
    use crate::pcap::verdict::{Cause, Resetter};
    let conn = format!("{} -> {}", r.client, r.server);
    let v = &r.verdict;
    if let (Some(rst), Some(d)) = (rst, distance) {
        if rst.hop < d && v.resetter != Resetter::Middlebox {
            let cause = match v.cause {
                Cause::Refused => LiveCause::FirewallReject,
                Cause::ContentFilter => LiveCause::ContentFilter,
                _ => LiveCause::Injected,
            };
            return format!(
                "{conn}: middlebox {cause} hop {} (RST TTL {} from hop {}, before the server at hop {d})",
                rst.hop, rst.ttl, rst.hop
            );
        }
    }
    let hop = v.hop.map(|h| format!(" hop {h}")).unwrap_or_default();
    format!("{conn}: {} {}{hop}", v.resetter, v.cause)
}

/// A fresh connection ready for HTTP, or why it could not be made.
fn open_conn(
    addr: SocketAddr,
    target: &Target,
    config: &Arc<ClientConfig>,
    timeout: Duration,
) -> Result<Conn, TlsFailure> {
    let stream = tcp::connect(addr, None, timeout).map_err(TlsFailure::Connect)?;
    if target.tls {
        tls::handshake(stream, &target.host, config.clone(), timeout)
            .map(|s| Conn::Tls(Box::new(s)))
    } else {
        Ok(Conn::plain(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "10.91.2.2:26019".parse().unwrap()
    }

    /// Audit D1: an RST after the idle wait from hop 1, the server at hop 2, is a device's
    /// idle timeout, not the server's silent drop.
    #[test]
    fn a_reset_on_reuse_from_before_the_server_is_a_middlebox_idle_timeout() {
        let v = idle_verdict(addr(), 1.9, 2.2, true, Some(1), Some(2));
        assert_eq!(v.resetter, LiveResetter::Middlebox);
        assert_eq!(v.cause, LiveCause::IdleTimeoutMiddlebox);
        assert_eq!(v.hop, Some(1));
        assert!(!v.summary.contains("without notice"), "{}", v.summary);
        assert!(
            v.advice.iter().any(|a| a.contains("conntrack")),
            "{:?}",
            v.advice
        );
        // A reset without its TTL blames nobody.
        let v = idle_verdict(addr(), 1.9, 2.2, true, None, Some(2));
        assert_eq!(
            (v.resetter, v.cause),
            (LiveResetter::Unknown, LiveCause::Unknown)
        );
        // The server's own RST, and a silent drop, stay the server's idle close.
        let v = idle_verdict(addr(), 1.9, 2.2, true, Some(2), Some(2));
        assert_eq!(
            (v.resetter, v.cause),
            (LiveResetter::Server, LiveCause::IdleKeepaliveClose)
        );
        let v = idle_verdict(addr(), 1.9, 2.2, false, None, Some(2));
        assert_eq!(
            (v.resetter, v.cause),
            (LiveResetter::Server, LiveCause::IdleKeepaliveClose)
        );
    }

    /// A TLS reset for one server name: the server's own (on this machine, or from the hop
    /// of its SYN-ACK) is a server TLS rejection; only one from before the server is a
    /// device's SNI filter; without the RST's hop nobody is blamed.
    #[test]
    fn a_tls_reset_from_the_server_itself_is_not_an_sni_filter() {
        let names = ("blocked.example", "example.com");
        let v = name_reset_verdict(addr(), names, true, None, None, false);
        assert_eq!(
            (v.resetter, v.cause),
            (LiveResetter::Server, LiveCause::Tls)
        );
        assert!(!v.summary.contains("device filters"), "{}", v.summary);
        let v = name_reset_verdict(addr(), names, false, Some(2), Some(2), true);
        assert_eq!(
            (v.resetter, v.cause),
            (LiveResetter::Server, LiveCause::Tls)
        );
        assert!(v.summary.contains("SYN-ACK"), "{}", v.summary);
        let v = name_reset_verdict(addr(), names, false, Some(1), Some(2), true);
        assert_eq!(
            (v.resetter, v.cause, v.hop),
            (LiveResetter::Middlebox, LiveCause::SniFilter, Some(1))
        );
        let v = name_reset_verdict(addr(), names, false, None, Some(2), false);
        assert_eq!(
            (v.resetter, v.cause, v.hop),
            (LiveResetter::Unknown, LiveCause::SniFilter, None)
        );
    }

    /// Audit D2: a refusal with the capture running and no RST in it is an ICMP reject by a
    /// firewall, not the server's RST.
    #[test]
    fn a_refusal_without_a_captured_rst_is_an_icmp_firewall_reject() {
        let router = capture::SeenUnreachable {
            source: "10.91.1.1".parse().unwrap(),
            ttl: 64,
            hop: 1,
        };
        let v = refused_without_rst(addr(), Some(2), true, Some(router));
        assert_eq!(v.resetter, LiveResetter::Middlebox);
        assert_eq!(v.cause, LiveCause::FirewallReject);
        assert_eq!(v.hop, Some(1));
        assert!(
            v.summary.contains("ICMP") && v.summary.contains("10.91.1.1"),
            "{}",
            v.summary
        );
        assert!(!v.summary.contains("no-capture"), "{}", v.summary);
        // Captured, but the ICMP's sender was not: still no RST claimed, no server blamed.
        let v = refused_without_rst(addr(), Some(2), true, None);
        assert_eq!(
            (v.resetter, v.cause),
            (LiveResetter::Unknown, LiveCause::FirewallReject)
        );
        assert!(!v.summary.contains("no-capture"), "{}", v.summary);
        // Without a capture the TTL is lacking: the server is the likeliest sender.
        let v = refused_without_rst(addr(), Some(2), false, None);
        assert_eq!(
            (v.resetter, v.cause),
            (LiveResetter::Server, LiveCause::Refused)
        );
    }
}
