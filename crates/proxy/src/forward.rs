//! One request to an upstream pool: target choice, attempts, retries and the reset class of
//! every failed exchange.
//!
//! Retry rules (see docs/ARCHITECTURE.md for why):
//! - connect failure or refusal: retry on another target, any method;
//! - failure on a *reused* pooled connection before any response byte (the idle keep-alive
//!   race), or a request that was never written: retry, any method;
//! - after the upstream may have processed the request (timeout, reset after the request went
//!   out on a fresh connection, 502/503/504 answer): only idempotent methods, unless the route
//!   says `retry_non_idempotent = true`;
//! - never once response bytes have reached the client (the response is returned here before
//!   any byte is sent, so later failures cannot be retried by construction).
//!
//! HTTP/1.1 pools exchange in the request's own task ([`crate::h1`]) when the body is
//! buffered; streamed uploads and protocol upgrades go through hyper's client on a connection
//! of their own, and HTTP/2 pools through hyper's shared connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast_core::config::{Route, Target};
use holdfast_core::ResetClass;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::balance::Balancer;
use crate::budget::Budget;
use crate::conns::{Conn, ConnPool, ConnectError, Sender};
use crate::dial::{DialError, Dialer, TlsSetupError};
use crate::h1::{self, H1Conn};
use crate::plugin::Body;
use crate::responses::full;

/// An upstream pool at run time.
pub struct UpstreamRt {
    pub balancer: Balancer,
    pub conns: ConnPool,
}

impl UpstreamRt {
    /// The pool at run time (reads `tls_ca_file` for `https://` targets).
    pub fn new(upstream: holdfast_core::config::Upstream) -> Result<UpstreamRt, TlsSetupError> {
        let dialer = Dialer::new(&upstream)?;
        let conns = ConnPool::new(dialer, upstream.idle_timeout, upstream.max_idle_per_target);
        Ok(UpstreamRt {
            balancer: Balancer::new(upstream),
            conns,
        })
    }
}

impl h1::body::Return for UpstreamRt {
    fn checkin(&self, conn: H1Conn) {
        self.conns.checkin(conn);
    }
}

/// What went out upstream, reused for every attempt.
pub struct Outgoing {
    pub method: Method,
    /// Origin form (`/path?query`).
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: OutBody,
    pub hash: Option<u64>,
    /// The request asks to switch protocols (WebSocket…): it goes out on a connection of its
    /// own, never a pooled one, since a `101` hands the connection to the tunnel.
    pub upgrade: bool,
    /// The client accepts trailers (`TE: trailers`): passed on to HTTP/2 upstreams, where gRPC
    /// servers look for it (`TE` is hop-by-hop, so it is stripped from `headers`).
    pub te_trailers: bool,
}

/// The request body going upstream.
pub enum OutBody {
    /// Kept whole: every attempt sends it again.
    Buffered(Bytes),
    /// Streams from the client: usable until an attempt got as far as writing it.
    Streaming(Mutex<Option<Body>>),
}

impl Outgoing {
    /// The body for the next attempt (`None` once a streaming body went out).
    fn take_body(&self) -> Option<Body> {
        match &self.body {
            OutBody::Buffered(b) => Some(full(b.clone())),
            OutBody::Streaming(slot) => slot.lock().ok()?.take(),
        }
    }

    /// Put back the body of a request hyper handed back unsent.
    fn restore_body(&self, body: Body) {
        if let OutBody::Streaming(slot) = &self.body {
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(body);
            }
        }
    }

    /// Whether another attempt could still send the body.
    pub fn can_resend(&self) -> bool {
        match &self.body {
            OutBody::Buffered(_) => true,
            OutBody::Streaming(slot) => slot.lock().map(|b| b.is_some()).unwrap_or(false),
        }
    }
}

/// Timings and attempts, for the call record.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    pub attempts: u32,
    pub target: Option<usize>,
    pub connect_ms: Option<f64>,
    pub first_byte_ms: Option<f64>,
    pub started: Option<Instant>,
    /// Classes of failed attempts that were retried.
    pub retried: Vec<ResetClass>,
}

/// A response head from the upstream, its body still to come. An HTTP/1.1 body returns its
/// connection to the pool itself; hyper's connection task finishes a body on its own.
pub type Answer = Response<Body>;

/// The request could not be served.
pub struct Failure {
    pub class: ResetClass,
    pub status: StatusCode,
    pub message: String,
}

/// One request counted in a target's in-flight count (least-request balancing) until dropped,
/// also when the request is (its client left).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn count(counter: &'a AtomicUsize) -> InFlight<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

enum AttemptError {
    /// Nothing reached the upstream's application.
    NotSent(ResetClass, String),
    /// The idle race on a reused connection.
    IdleRace(String),
    /// The upstream may have processed the request.
    MaybeProcessed(ResetClass, String),
}

/// Send `out` to the pool, retrying by the rules above.
pub async fn forward(
    up: &Arc<UpstreamRt>,
    route: &Route,
    budget: &Budget,
    out: &Outgoing,
    trace: &mut Trace,
) -> Result<Answer, Failure> {
    let may_repeat = idempotent(&out.method) || route.retry_non_idempotent;
    let healthy_at_start = up.balancer.healthy_count() > 0;
    let mut tried: Vec<usize> = Vec::new();
    let mut retries = 0u32;
    // After the idle race the next attempt dials a fresh connection: the other pooled
    // connections to that target are as old as the one that just failed.
    let mut fresh = false;
    let mut errors: Vec<(String, u32)> = Vec::new();
    trace.started = Some(Instant::now());
    budget.on_request();
    loop {
        trace.attempts += 1;
        // The timings logged are the last attempt's: a connect of a failed one is not it.
        trace.connect_ms = None;
        // Every request keeps away from targets that just failed while another is usable: one
        // that cannot go again must not find out for itself, and one that can would spend the
        // retry budget on it (with many bad targets, the panic threshold spreads requests over
        // ejected ones too).
        let Some(i) = up.balancer.pick_for(out.hash, &tried, true) else {
            return Err(Failure {
                class: ResetClass::NoHealthyUpstream,
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!("upstream `{}` has no targets", up.balancer.upstream.name),
            });
        };
        trace.target = Some(i);
        let target = &up.balancer.targets[i];
        let in_flight = InFlight::count(&target.inflight);
        let result = attempt(up, i, route.timeout, out, trace, fresh || out.upgrade).await;
        drop(in_flight);
        let error = match result {
            Ok(answer) => {
                let status = answer.status();
                let retryable_status = matches!(status.as_u16(), 502..=504);
                // A success is counted when the body ends (`crate::body::BodyOutcome`): one
                // that breaks off mid-body is a failure.
                if status.is_server_error() {
                    up.balancer.on_failure(i);
                }
                if retryable_status
                    && may_repeat
                    && out.can_resend()
                    && trace.attempts < route.max_attempts
                    && budget.try_retry()
                {
                    tried.push(i);
                    retries += 1;
                    tokio::time::sleep(budget.backoff(retries)).await;
                    continue;
                }
                return Ok(answer);
            }
            Err(e) => e,
        };
        let (class, message, retryable, charge) = match error {
            AttemptError::NotSent(class, msg) => {
                up.balancer.on_failure(i);
                tried.push(i);
                // A refused connect costs the upstream nothing: no budget, no backoff.
                let charge = class != ResetClass::UpstreamRefused;
                (class, msg, true, charge)
            }
            AttemptError::IdleRace(msg) => {
                fresh = true;
                (ResetClass::UpstreamClosedIdleRace, msg, true, false)
            }
            AttemptError::MaybeProcessed(class, msg) => {
                up.balancer.on_failure(i);
                tried.push(i);
                (class, msg, may_repeat, true)
            }
        };
        // Each failure once, with how many attempts met it.
        match errors.iter_mut().find(|(m, _)| *m == message) {
            Some((_, n)) => *n += 1,
            None => errors.push((message.clone(), 1)),
        }
        // Only a retryable failure may spend the budget.
        let more = retryable
            && out.can_resend()
            && trace.attempts < route.max_attempts
            && (!charge || budget.try_retry());
        if !more {
            let message = match errors.as_slice() {
                [] | [(_, 1)] => message,
                _ => errors
                    .iter()
                    .map(|(m, n)| match n {
                        1 => m.clone(),
                        n => format!("{m} ({n} attempts)"),
                    })
                    .collect::<Vec<_>>()
                    .join("; then "),
            };
            return Err(final_failure(up, class, message, healthy_at_start));
        }
        trace.retried.push(class);
        if charge {
            retries += 1;
            tokio::time::sleep(budget.backoff(retries)).await;
        }
    }
}

fn final_failure(
    up: &UpstreamRt,
    class: ResetClass,
    message: String,
    healthy_at_start: bool,
) -> Failure {
    let name = &up.balancer.upstream.name;
    if !healthy_at_start {
        return Failure {
            class: ResetClass::NoHealthyUpstream,
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("every target of upstream `{name}` is down; last error: {message}"),
        };
    }
    let status = if class == ResetClass::UpstreamTimeout {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    Failure {
        class,
        status,
        message: format!("upstream `{name}`: {message}"),
    }
}

/// A connection for hyper's client: the shared HTTP/2 one, or a new HTTP/1.1 one.
async fn get_conn(
    up: &UpstreamRt,
    i: usize,
    trace: &mut Trace,
    fresh: bool,
) -> Result<Conn, AttemptError> {
    while let Some(mut conn) = (!fresh && up.conns.dialer().http2())
        .then(|| up.conns.checkout_shared(i))
        .flatten()
    {
        if conn.sender.is_ready() {
            return Ok(conn);
        }
        // A pooled connection the upstream closed meanwhile fails `ready()`: skip it.
        if let Ok(Ok(())) =
            tokio::time::timeout(Duration::from_millis(50), conn.sender.ready()).await
        {
            return Ok(conn);
        }
    }
    let started = Instant::now();
    let result = up
        .conns
        .connect(
            i,
            &up.balancer.upstream.targets[i],
            up.balancer.upstream.connect_timeout,
        )
        .await;
    trace.connect_ms = Some(ms(started.elapsed()));
    result.map_err(|e| match e {
        ConnectError::Dial(d) => dial_failure(d),
        ConnectError::Handshake(..) => {
            AttemptError::NotSent(ResetClass::UpstreamResetBeforeResponse, e.to_string())
        }
    })
}

fn dial_failure(e: DialError) -> AttemptError {
    match e {
        DialError::Timeout(_) => AttemptError::NotSent(ResetClass::UpstreamTimeout, e.to_string()),
        // Refused, unreachable, or a TLS handshake (certificate) failure: nothing was sent.
        _ => AttemptError::NotSent(ResetClass::UpstreamRefused, e.to_string()),
    }
}

/// One exchange: in this task for a buffered body to an HTTP/1.1 pool, else through hyper.
async fn attempt(
    up: &Arc<UpstreamRt>,
    i: usize,
    timeout: Duration,
    out: &Outgoing,
    trace: &mut Trace,
    fresh: bool,
) -> Result<Answer, AttemptError> {
    match &out.body {
        OutBody::Buffered(body) if !up.conns.dialer().http2() && !out.upgrade => {
            attempt_h1(up, i, timeout, out, body, trace, fresh).await
        }
        _ => attempt_hyper(up, i, timeout, out, trace, fresh).await,
    }
}

async fn attempt_h1(
    up: &Arc<UpstreamRt>,
    i: usize,
    timeout: Duration,
    out: &Outgoing,
    body: &Bytes,
    trace: &mut Trace,
    fresh: bool,
) -> Result<Answer, AttemptError> {
    let mut conn = match (!fresh).then(|| up.conns.checkout(i)).flatten() {
        Some(conn) => conn,
        None => {
            let started = Instant::now();
            let spec = &up.balancer.upstream.targets[i];
            let dialed = up
                .conns
                .dial(i, spec, up.balancer.upstream.connect_timeout)
                .await;
            trace.connect_ms = Some(ms(started.elapsed()));
            dialed.map_err(dial_failure)?
        }
    };
    let started = trace.started.unwrap_or_else(Instant::now);
    let authority = &up.balancer.targets[i].authority;
    let request = h1::RequestParts {
        method: &out.method,
        uri: &out.uri,
        headers: &out.headers,
        body,
        authority,
    };
    let sent_at = Instant::now();
    let result = tokio::time::timeout(timeout, conn.exchange(&request)).await;
    match result {
        Ok(Ok(head)) => {
            trace.first_byte_ms = Some(ms(started.elapsed()));
            up.conns.learn_keep_alive(i, head.headers.get("keep-alive"));
            let home: Arc<dyn h1::body::Return> = up.clone();
            h1::body::into_response(head, conn, home).map_err(|e| {
                AttemptError::MaybeProcessed(
                    ResetClass::UpstreamResetBeforeResponse,
                    format!(
                        "the response broke off right after its response head: {e} ({authority})"
                    ),
                )
            })
        }
        Ok(Err(e)) => {
            let msg = format!("{e} ({authority})");
            let soon = sent_at.elapsed() <= up.conns.idle_race_window(i);
            Err(
                if conn.reused && !e.got_response_bytes() && (e.unsent() || soon) {
                    // Nothing came back on a pooled connection, at once: the idle race. A
                    // response that broke off or does not parse came from an upstream that read
                    // the request; so did a close or reset that came only after it worked on it.
                    AttemptError::IdleRace(msg)
                } else if e.unsent() {
                    AttemptError::NotSent(ResetClass::UpstreamResetBeforeResponse, msg)
                } else {
                    AttemptError::MaybeProcessed(ResetClass::UpstreamResetBeforeResponse, msg)
                },
            )
        }
        Err(_) => Err(timed_out(up, i, timeout)),
    }
}

fn timed_out(up: &UpstreamRt, i: usize, timeout: Duration) -> AttemptError {
    AttemptError::MaybeProcessed(
        ResetClass::UpstreamTimeout,
        format!(
            "no response from {} within {} ms",
            up.balancer.targets[i].authority,
            timeout.as_millis()
        ),
    )
}

async fn attempt_hyper(
    up: &Arc<UpstreamRt>,
    i: usize,
    timeout: Duration,
    out: &Outgoing,
    trace: &mut Trace,
    fresh: bool,
) -> Result<Answer, AttemptError> {
    let mut conn = get_conn(up, i, trace, fresh).await?;
    let Some(body) = out.take_body() else {
        return Err(AttemptError::MaybeProcessed(
            ResetClass::UpstreamResetBeforeResponse,
            "the streamed request body already went out on an earlier attempt".into(),
        ));
    };
    let mut req = Request::new(body);
    *req.method_mut() = out.method.clone();
    *req.uri_mut() = out.uri.clone();
    *req.headers_mut() = out.headers.clone();
    if matches!(conn.sender, Sender::Http2(_)) {
        as_http2(&mut req, &up.balancer.upstream.targets[i], out.te_trailers);
    } else if !req.headers().contains_key(http::header::HOST) {
        // HTTP/1.1 requires a Host; a request that came without one (HTTP/1.0) names the
        // target.
        if let Ok(host) = http::HeaderValue::from_str(&up.balancer.targets[i].authority) {
            req.headers_mut().insert(http::header::HOST, host);
        }
    }
    let sent_at = Instant::now();
    let started = trace.started.unwrap_or(sent_at);
    match tokio::time::timeout(timeout, conn.sender.try_send_request(req)).await {
        Ok(Ok(response)) => {
            trace.first_byte_ms = Some(ms(started.elapsed()));
            up.conns
                .learn_keep_alive(i, response.headers().get("keep-alive"));
            let status = response.status();
            Ok(response.map(|b| crate::body::Reported::new(b, status, up.clone(), i).boxed()))
        }
        Ok(Err(mut unsent)) => {
            let recovered = unsent.take_message();
            let e = unsent.into_error();
            let msg = format!("{} ({})", describe(&e), up.balancer.targets[i].authority);
            if let Some(req) = recovered {
                // hyper never wrote it: the body (even a streaming one) can go again.
                out.restore_body(req.into_body());
                if conn.reused {
                    Err(AttemptError::IdleRace(msg))
                } else {
                    Err(AttemptError::NotSent(
                        ResetClass::UpstreamResetBeforeResponse,
                        msg,
                    ))
                }
            } else if e.is_canceled() {
                Err(AttemptError::NotSent(
                    ResetClass::UpstreamResetBeforeResponse,
                    msg,
                ))
            } else if conn.reused
                && !e.is_parse()
                && sent_at.elapsed() <= up.conns.idle_race_window(i)
            {
                // Nothing (or a cut-short head) came back on a pooled connection, at once: the
                // idle race. An answer that does not parse, or a failure that came only after
                // the upstream worked on the request, came from an upstream that read it, so
                // it is retried only when the method allows (below).
                Err(AttemptError::IdleRace(msg))
            } else {
                Err(AttemptError::MaybeProcessed(
                    ResetClass::UpstreamResetBeforeResponse,
                    msg,
                ))
            }
        }
        Err(_) => Err(timed_out(up, i, timeout)),
    }
}

/// Turn an origin-form request into an HTTP/2 one: `:scheme` from the target, `:authority`
/// from the Host the client asked for (else the target), no `Host` header.
fn as_http2(req: &mut Request<Body>, target: &Target, te_trailers: bool) {
    let scheme = if target.tls { "https" } else { "http" };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let host = req
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_string));
    let build = |authority: &str| {
        http::Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path.as_str())
            .build()
            .ok()
    };
    let uri = host
        .as_deref()
        .and_then(build)
        .or_else(|| build(&target.authority));
    if let Some(uri) = uri {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = http::Version::HTTP_2;
    if te_trailers {
        req.headers_mut()
            .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    }
}

fn describe(e: &hyper::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

/// Milliseconds as f64.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
