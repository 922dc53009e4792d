//! The gateway at run time: the routes, pools and extensions of one config (swapped atomically
//! on reload), and the handling of one request from route match to the call record.

use rustc_hash::FxHashMap as HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use holdfast_core::config::route::ServiceSpec;
use holdfast_core::config::{Config, HashOn, Route, RouteTarget};
use holdfast_core::{CallExtra, CallRecord, ResetClass};
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};

use crate::balance::fnv1a;
use crate::body::{Ending, Tracked, Upload, UploadStats};
use crate::budget::Budget;
use crate::dial::TlsSetupError;
use crate::forward::{forward, ms, Failure, OutBody, Outgoing, Trace, UpstreamRt};
use crate::framing::{
    MARK_AMBIGUOUS, MARK_BAD_HOST, MARK_BAD_LENGTH, MARK_BAD_VERSION, MARK_BARE_LF, MARK_HEADER,
    MARK_HEAD_TIMEOUT, MARK_HUGE_LENGTH, MARK_INVALID_HOST, MARK_TOO_LARGE,
    MARK_UNSUPPORTED_CODING,
};
use crate::hygiene::{self, Peer};
use crate::limiter::Limiter;
use crate::observe::{count_unrouted, CallCounts, Observers, RouteMetrics};
use crate::paths;
use crate::plugin::{Body, GuardHeaders, Plugins, RequestContext};
use crate::responses;

/// One route at run time.
pub struct RouteRt {
    pub route: Route,
    pub name: Arc<str>,
    pub service: Option<Arc<str>>,
    pub limiter: Option<Limiter>,
    pub metrics: RouteMetrics,
}

/// Everything built from one config.
pub struct State {
    pub config: Arc<Config>,
    pub routes: Vec<RouteRt>,
    pub upstreams: HashMap<String, Arc<UpstreamRt>>,
    pub plugins: Plugins,
    pub budget: Budget,
}

impl State {
    /// Build the run-time state (the only I/O: reading pools' `tls_ca_file`).
    pub fn new(config: Arc<Config>, plugins: Plugins) -> Result<State, TlsSetupError> {
        let mut upstreams: HashMap<String, Arc<UpstreamRt>> = HashMap::default();
        for (name, u) in &config.upstreams {
            upstreams.insert(name.clone(), Arc::new(UpstreamRt::new(u.clone())?));
        }
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let targets: Vec<&str> = match &r.target {
                    RouteTarget::Upstream(pool) => upstreams
                        .get(pool)
                        .map(|u| {
                            u.balancer
                                .targets
                                .iter()
                                .map(|t| t.authority.as_str())
                                .collect()
                        })
                        .unwrap_or_default(),
                    RouteTarget::Handler(_) => Vec::new(),
                };
                RouteRt {
                    metrics: RouteMetrics::new(&r.name, &targets),
                    route: r.clone(),
                    name: Arc::from(r.name.as_str()),
                    service: r.service.as_deref().map(Arc::from),
                    limiter: (r.max_concurrent > 0)
                        .then(|| Limiter::new(r.max_concurrent, r.queue_size, r.queue_timeout)),
                }
            })
            .collect();
        Ok(State {
            budget: Budget::new(config.retry_budget.clone()),
            config,
            routes,
            upstreams,
            plugins,
        })
    }

    /// A reload: each pool takes over what the pool of the same name in `old` learned about
    /// the targets they share (health-check verdicts, ejections; see
    /// [`crate::balance::Balancer::inherit`]).
    pub fn inherit_health(&self, old: &State) {
        for (name, up) in &self.upstreams {
            if let Some(before) = old.upstreams.get(name) {
                up.balancer.inherit(&before.balancer);
            }
        }
    }

    fn find_route(&self, host: Option<&str>, path: &str, method: &str) -> Option<usize> {
        self.routes.iter().position(|r| {
            r.route.host.as_deref().is_none_or(|h| host == Some(h))
                && path.starts_with(&r.route.path_prefix)
                && (r.route.methods.is_empty() || r.route.methods.iter().any(|m| m == method))
        })
    }
}

/// The gateway: the current state plus what outlives reloads.
pub struct Gateway {
    pub state: ArcSwap<State>,
    pub observers: Observers,
    /// Cancelled when a drain runs out of time: requests still waiting on an upstream are
    /// answered `503` then, rather than cut off without an answer.
    give_up: tokio_util::sync::CancellationToken,
    /// Set when a drain starts. Only then does a waiting request listen for `give_up` (a
    /// listener per request costs a lock on every request); hyper polls every in-flight
    /// request again when the drain starts, which is when they start listening.
    draining: std::sync::atomic::AtomicBool,
    /// Set when the drain ran out and the connections still open are being cut: a response
    /// body dropped from then on was ended by the gateway's deadline, not by its client.
    cut: std::sync::atomic::AtomicBool,
}

/// What the call record needs, carried to the end of the response body.
pub struct Pending {
    state: Arc<State>,
    ts_ms: i64,
    start: Instant,
    /// Index of the matched route in `state.routes`.
    route: Option<usize>,
    method: http::Method,
    uri: http::Uri,
    host: Option<String>,
    client: Arc<Peer>,
    bytes_in: u64,
    /// A streamed request body's counters (its size is known only at the end).
    upload: Option<Arc<UploadStats>>,
    extra: Arc<Mutex<CallExtra>>,
    /// To record the call if the request is dropped before an answer (see `Drop`).
    gateway: Arc<Gateway>,
    /// The call was recorded (or handed to `finish`, which records it).
    recorded: bool,
    /// The upstream attempts so far: a client that leaves mid-exchange is logged with the
    /// target and attempts that were under way.
    trace: Trace,
}

impl Drop for Pending {
    /// The request future was dropped before it had an answer: the client went away (an
    /// HTTP/2 stream reset, a connection error). The call is still counted and logged, as
    /// `client_aborted` with status 499 (nginx's "client closed request").
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let p = Pending {
            state: self.state.clone(),
            ts_ms: self.ts_ms,
            start: self.start,
            route: self.route,
            method: self.method.clone(),
            uri: self.uri.clone(),
            host: self.host.take(),
            client: self.client.clone(),
            bytes_in: self.bytes_in,
            upload: self.upload.take(),
            extra: self.extra.clone(),
            gateway: self.gateway.clone(),
            recorded: false,
            trace: Trace::default(),
        };
        let trace = std::mem::take(&mut self.trace);
        let closed = StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST);
        let resp = Response::builder()
            .status(closed)
            .body(responses::full(Bytes::new()))
            .unwrap_or_default();
        let gateway = self.gateway.clone();
        drop(gateway.finish(
            resp,
            p,
            Outcome {
                class: Some(ResetClass::ClientAborted),
                trace,
            },
        ));
    }
}

/// How an exchange ended, for the call record.
struct Outcome {
    class: Option<ResetClass>,
    trace: Trace,
}

impl Outcome {
    fn plain(class: Option<ResetClass>) -> Outcome {
        Outcome {
            class,
            trace: Trace::default(),
        }
    }
}

impl Gateway {
    pub fn new(state: State, observers: Observers) -> Gateway {
        Gateway {
            state: ArcSwap::from_pointee(state),
            observers,
            give_up: tokio_util::sync::CancellationToken::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            cut: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The drain ran out of time after [`Gateway::give_up_waiting`] too: the connections still
    /// open are cut, and a response still streaming on one is recorded as `upstream_timeout`
    /// (the drain's deadline ended it) rather than `client_aborted`.
    pub fn cut_streams(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Release);
    }

    /// A drain started: requests waiting on an upstream listen for [`Gateway::give_up_waiting`]
    /// from their next poll on.
    pub fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// `work`, unless the drain runs out of time first. `always_listen`: listen from the
    /// start (an HTTP/2 stream runs as a task of its own, which a drain does not poll again).
    async fn unless_given_up<T>(
        &self,
        work: impl Future<Output = T>,
        always_listen: bool,
    ) -> Option<T> {
        let mut work = std::pin::pin!(work);
        let mut listening: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>> =
            None;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(done));
            }
            if listening.is_none()
                && (always_listen || self.draining.load(std::sync::atomic::Ordering::Acquire))
            {
                listening = Some(Box::pin(self.give_up.clone().cancelled_owned()));
            }
            match listening.as_mut().map(|l| l.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(None),
                _ => Poll::Pending,
            }
        })
        .await
    }

    /// The drain ran out of time: answer every request still waiting on an upstream with a
    /// `503` (`Connection: close`), so that no client is cut off without an answer.
    pub fn give_up_waiting(&self) {
        self.give_up.cancel();
    }

    /// Handle one client request; never fails (errors become responses).
    /// Start the call record of a request, before its future is first polled: a request
    /// that hyper drops unpolled (its client closed the connection right after sending it)
    /// is still logged, as `client_aborted` with status 499.
    pub fn begin(self: &Arc<Self>, req: &Request<Incoming>, client: &Arc<Peer>) -> Pending {
        let start = Instant::now();
        let state = self.state.load_full();
        let host = request_host(req);
        Pending {
            ts_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            start,
            route: None,
            method: req.method().clone(),
            uri: req.uri().clone(),
            host,
            client: client.clone(),
            bytes_in: 0,
            upload: None,
            extra: Arc::new(Mutex::new(CallExtra::default())),
            state: state.clone(),
            gateway: self.clone(),
            recorded: false,
            trace: Trace::default(),
        }
    }

    /// Answer a request whose call record [`Gateway::begin`] started.
    pub async fn handle(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        mut pending: Pending,
    ) -> Response<Body> {
        let start = pending.start;
        let state = pending.state.clone();
        let client = pending.client.clone();
        let client = &client;
        if let Some(mark) = req.headers().get(MARK_HEADER) {
            // Set by the framing watcher (a client may send it too; it only hurts itself).
            let (status, code, message) = framing_refusal(mark.as_bytes());
            if mark != MARK_AMBIGUOUS {
                // A stand-in head: its path is not the client's.
                pending.uri = http::Uri::from_static("/");
            }
            if mark == MARK_HEAD_TIMEOUT {
                // The stand-in came when the deadline passed; the head had started
                // `header_timeout` earlier.
                let waited = state.config.server.header_timeout;
                pending.start = start.checked_sub(waited).unwrap_or(start);
            }
            let mut resp = responses::error(status, code, message);
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return self.finish(resp, pending, Outcome::plain(Some(ResetClass::BadRequest)));
        }
        let header_bytes: usize = if req.version() == http::Version::HTTP_2 {
            req.headers()
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum()
        } else {
            0
        };
        // HTTP/1 heads were measured whole (request line included) by the framing watcher
        // against the connection's own limit; HTTP/2 headers are measured here.
        if req.version() == http::Version::HTTP_2
            && header_bytes > state.config.server.max_header_bytes
        {
            let resp = responses::error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "the request headers are larger than the gateway accepts",
            );
            return self.finish(resp, pending, Outcome::plain(Some(ResetClass::BadRequest)));
        }
        // HTTP/1 Host headers were checked by the framing watcher; HTTP/2 ones are checked
        // here (RFC 9113 section 8.3.1: a Host that names another entity than `:authority`
        // makes the request malformed).
        if req.version() == http::Version::HTTP_2 {
            if let Some(problem) = http2_host_problem(&req) {
                let resp = responses::error(StatusCode::BAD_REQUEST, "bad_request", problem);
                return self.finish(resp, pending, Outcome::plain(Some(ResetClass::BadRequest)));
            }
        }
        // Routes see (and upstreams get) the path with its dot segments resolved.
        match paths::resolve_dots(req.uri().path()) {
            Ok(std::borrow::Cow::Borrowed(_)) => {}
            Ok(std::borrow::Cow::Owned(path)) => {
                if let Some(uri) = with_path(req.uri(), &path) {
                    pending.uri = uri.clone();
                    *req.uri_mut() = uri;
                }
            }
            Err(paths::AboveRoot) => {
                let resp = responses::error(
                    StatusCode::BAD_REQUEST,
                    "bad_path",
                    "the request path climbs above the root with `..` segments",
                );
                return self.finish(resp, pending, Outcome::plain(Some(ResetClass::BadRequest)));
            }
        }
        let Some(index) = state.find_route(
            pending.host.as_deref(),
            req.uri().path(),
            req.method().as_str(),
        ) else {
            let resp = responses::error(
                StatusCode::NOT_FOUND,
                "no_route",
                "no route matches this host, path and method",
            );
            return self.finish(resp, pending, Outcome::plain(None));
        };
        pending.route = Some(index);
        let route = &state.routes[index];
        let ctx = RequestContext {
            route: route.name.clone(),
            service: route.service.clone(),
            client_addr: client.addr,
            start,
            extra: pending.extra.clone(),
        };
        let _permit = match &route.limiter {
            Some(l) => match l.acquire().await {
                Ok(p) => Some(p),
                Err(_) => {
                    let resp = responses::overloaded(
                        &format!("route `{}` is at its concurrency limit", route.route.name),
                        1,
                    );
                    return self.finish(
                        resp,
                        pending,
                        Outcome::plain(Some(ResetClass::Overloaded)),
                    );
                }
            },
            None => None,
        };
        let upgrade = (req.version() == http::Version::HTTP_11)
            .then(|| hygiene::upgrade_requested(req.headers()))
            .flatten()
            .map(|protocol| (protocol, hyper::upgrade::on(&mut req)));
        let (mut parts, body) = req.into_parts();
        let mut added: GuardHeaders = None;
        for guard in &state.plugins.guards {
            let decided = match guard.check_now(&parts, &ctx) {
                Some(decided) => decided,
                None => guard.check(&parts, &ctx).await,
            };
            match decided {
                Ok(None) => {}
                Ok(Some(headers)) => match &mut added {
                    Some(all) => all.extend(headers),
                    None => added = Some(headers),
                },
                Err(resp) => return self.finish(resp, pending, Outcome::plain(None)),
            }
        }
        for guard in &state.plugins.guards {
            if let Some(name) = guard.strip_request_header(&ctx) {
                parts.headers.remove(name);
            }
        }
        let mut resp = self
            .dispatch(route, parts, body, ctx, pending, upgrade)
            .await;
        if let Some(headers) = added {
            let h = resp.headers_mut();
            h.reserve(headers.len());
            for (name, value) in headers {
                h.insert(name, value);
            }
        }
        resp
    }

    /// Send a request that passed the guards to its route's handler or upstream pool.
    async fn dispatch(
        self: &Arc<Self>,
        route: &RouteRt,
        parts: http::request::Parts,
        body: Incoming,
        ctx: RequestContext,
        mut pending: Pending,
        upgrade: Option<(header::HeaderValue, hyper::upgrade::OnUpgrade)>,
    ) -> Response<Body> {
        let state = pending.state.clone();
        let pool = match &route.route.target {
            RouteTarget::Handler(name) => {
                let Some(handler) = state.plugins.handlers.get(name).cloned() else {
                    let resp = responses::error(
                        StatusCode::BAD_GATEWAY,
                        "no_handler",
                        &format!(
                            "handler `{name}` is not registered (is its config section present?)"
                        ),
                    );
                    return self.finish(resp, pending, Outcome::plain(None));
                };
                // The handler reads the body itself, under the server's limits: its size
                // (`413`), its stalls (`408`), and counted for the call record's `bytes_in`.
                let limits = body_limits(&state.config);
                if declared_length(parts.headers.get(header::CONTENT_LENGTH))
                    .is_some_and(|n| n > limits.limit)
                {
                    let problem = BodyProblem::TooLarge;
                    let outcome = Outcome::plain(Some(problem.class()));
                    return self.finish(problem.answer(&limits), pending, outcome);
                }
                let stats = Arc::new(UploadStats::default());
                pending.upload = Some(stats.clone());
                let limited =
                    Upload::new(Vec::new(), body, limits.limit, limits.stall, stats.clone());
                let req = Request::from_parts(parts, limited.boxed());
                let resp = handler.handle(req, ctx).await;
                if let Some(problem) = upload_failure(&stats) {
                    let outcome = Outcome::plain(Some(problem.class()));
                    return self.finish(problem.answer(&limits), pending, outcome);
                }
                return self.finish(resp, pending, Outcome::plain(None));
            }
            RouteTarget::Upstream(pool) => pool,
        };
        let Some(up) = state.upstreams.get(pool).cloned() else {
            let resp = responses::error(
                StatusCode::BAD_GATEWAY,
                "no_upstream",
                &format!("upstream `{pool}` is not defined"),
            );
            return self.finish(resp, pending, Outcome::plain(None));
        };
        let limits = body_limits(&state.config);
        let declared = parts.headers.get(header::CONTENT_LENGTH);
        let body = match read_body(body, declared, &limits, &mut pending.bytes_in).await {
            Ok(b) => b,
            Err(problem) => {
                // `bytes_in`: what arrived before the stall, the excess or the abort.
                return self.finish(
                    problem.answer(&limits),
                    pending,
                    Outcome::plain(Some(problem.class())),
                );
            }
        };
        let upload = match &body {
            ReadBody::Whole(b) => {
                pending.bytes_in = b.len() as u64;
                None
            }
            ReadBody::Streaming(_, stats) => Some(stats.clone()),
        };
        pending.upload = upload.clone();
        let (protocol, client_side) = match upgrade {
            Some((p, on)) => (Some(p), Some(on)),
            None => (None, None),
        };
        let http2_client = parts.version == http::Version::HTTP_2;
        let out = outgoing(parts, body.into_out(), &pending.client, &up, protocol);
        let forwarded = self
            .unless_given_up(
                forward(&up, &route.route, &state.budget, &out, &mut pending.trace),
                http2_client,
            )
            .await
            .unwrap_or_else(|| {
                Err(Failure {
                    class: ResetClass::UpstreamTimeout,
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: "the gateway is shutting down and the upstream did not answer \
                              within the drain timeout"
                        .into(),
                })
            });
        let trace = std::mem::take(&mut pending.trace);
        match forwarded {
            Ok(mut response) => {
                if response.status() == StatusCode::SWITCHING_PROTOCOLS && client_side.is_none() {
                    return self.bad_upstream_response(
                        pending,
                        trace,
                        "the upstream switched protocols (101) for a request that did not ask to",
                    );
                }
                if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_side)) =
                    (response.status(), client_side)
                {
                    let upstream_side = hyper::upgrade::on(&mut response);
                    let (mut head, _) = response.into_parts();
                    let protocol = head.headers.get(header::UPGRADE).cloned();
                    hygiene::strip_hop_by_hop(&mut head.headers);
                    if let Some(p) = protocol {
                        hygiene::keep_upgrade(&mut head.headers, p);
                    }
                    hygiene::add_via(&mut head.headers, head.version);
                    head.version = http::Version::HTTP_11;
                    pending
                        .client
                        .upgraded
                        .store(true, std::sync::atomic::Ordering::Release);
                    tokio::spawn(tunnel(client_side, upstream_side));
                    let resp = Response::from_parts(head, responses::full(Bytes::new()));
                    let outcome = Outcome { class: None, trace };
                    return self.finish(resp, pending, outcome);
                }
                let (mut head, upstream_body) = response.into_parts();
                let Some(chunked) = response_coding(&head.headers) else {
                    return self.bad_upstream_response(
                        pending,
                        trace,
                        "the upstream answered with a transfer coding other than chunked",
                    );
                };
                hygiene::strip_hop_by_hop(&mut head.headers);
                if chunked {
                    // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3): the body was
                    // read as chunked, so a stale length must not reach the client.
                    head.headers.remove(header::CONTENT_LENGTH);
                }
                hygiene::add_via(&mut head.headers, head.version);
                head.version = http::Version::HTTP_11;
                let resp = Response::from_parts(head, upstream_body);
                self.finish(resp, pending, Outcome { class: None, trace })
            }
            Err(failure) => {
                if let Some(problem) = upload.as_deref().and_then(upload_failure) {
                    return self.finish(
                        problem.answer(&limits),
                        pending,
                        Outcome {
                            class: Some(problem.class()),
                            trace,
                        },
                    );
                }
                let code = failure.class.as_str();
                let mut resp = responses::error(failure.status, code, &failure.message);
                if failure.status == StatusCode::SERVICE_UNAVAILABLE {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                }
                self.finish(
                    resp,
                    pending,
                    Outcome {
                        class: Some(failure.class),
                        trace,
                    },
                )
            }
        }
    }

    /// `502` for an upstream answer that breaks HTTP; its connection is not reused.
    fn bad_upstream_response(
        self: &Arc<Self>,
        pending: Pending,
        trace: Trace,
        message: &str,
    ) -> Response<Body> {
        let resp = responses::error(StatusCode::BAD_GATEWAY, "upstream_bad_response", message);
        let outcome = Outcome {
            class: Some(ResetClass::UpstreamResetBeforeResponse),
            trace,
        };
        self.finish(resp, pending, outcome)
    }

    /// Wrap the response body so the call is counted (and recorded, when something reads the
    /// record) when it ends.
    fn finish(
        self: &Arc<Self>,
        resp: Response<Body>,
        p: Pending,
        outcome: Outcome,
    ) -> Response<Body> {
        let (parts, body) = resp.into_parts();
        let status = parts.status.as_u16();
        let me = self.clone();
        let body = Tracked::new(body, move |ending, bytes_out| {
            let mut p = p;
            p.recorded = true;
            let Outcome { class, trace } = outcome;
            // The call is over: nothing fills `extra` any more, so take it rather than copy.
            let mut extra = p
                .extra
                .lock()
                .map(|mut e| std::mem::take(&mut *e))
                .unwrap_or_default();
            let class = class.or(extra.reset_class).or(match ending {
                Ending::Complete => None,
                Ending::Failed => Some(ResetClass::UpstreamResetMidResponse),
                Ending::Dropped if me.cut.load(std::sync::atomic::Ordering::Acquire) => {
                    Some(ResetClass::UpstreamTimeout)
                }
                Ending::Dropped => Some(ResetClass::ClientAborted),
            });
            let total_ms = ms(p.start.elapsed());
            // A handler that called a provider itself (AI) says when it started.
            let upstream_ms = trace
                .started
                .or(extra.upstream_started)
                .map(|s| ms(s.elapsed()));
            let route = p.route.map(|i| &p.state.routes[i]);
            match route {
                Some(r) => r.metrics.count(&CallCounts {
                    status,
                    total_ms,
                    target: trace.target,
                    upstream_ms,
                    class,
                    retried: &trace.retried,
                }),
                None => count_unrouted(status, total_ms, class),
            }
            let observers = &p.state.plugins.observers;
            if !me.observers.logs() && observers.is_empty() {
                return;
            }
            if extra.service.is_none() {
                extra.service = route
                    .and_then(|r| r.route.service.as_deref())
                    .map(|spec| ServiceSpec::parse(spec).name.to_string());
            }
            // `CallExtra` carries its own copy of the class (flattened into the same JSON).
            extra.reset_class = class;
            let target = match (route, trace.target) {
                (Some(r), Some(i)) => match &r.route.target {
                    RouteTarget::Upstream(pool) => p
                        .state
                        .upstreams
                        .get(pool)
                        .and_then(|u| u.balancer.targets.get(i))
                        .map(|t| t.authority.clone()),
                    RouteTarget::Handler(_) => None,
                },
                _ => None,
            };
            let record = CallRecord {
                ts_ms: p.ts_ms,
                route: route.map(|r| r.route.name.clone()).unwrap_or_default(),
                method: p.method.to_string(),
                path: p.uri.path().to_string(),
                host: p.host.take(),
                client: p.client.addr_text.clone(),
                status,
                reset_class: class,
                target,
                attempts: trace.attempts,
                total_ms,
                upstream_connect_ms: trace.connect_ms,
                upstream_first_byte_ms: trace.first_byte_ms,
                upstream_ms,
                bytes_in: p
                    .upload
                    .as_ref()
                    .map(|u| u.bytes.load(std::sync::atomic::Ordering::Relaxed))
                    .unwrap_or(p.bytes_in),
                bytes_out,
                extra,
            };
            me.observers.log(&record);
            for o in observers {
                o.on_call(&record);
            }
        });
        Response::from_parts(parts, body.boxed())
    }
}

/// The answers to heads the framing watcher marked: mark, status, error code, message.
const FRAMING_REFUSALS: &[(&str, StatusCode, &str, &str)] = &[
    (
        MARK_HEAD_TIMEOUT,
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the request head did not arrive in time",
    ),
    (
        MARK_AMBIGUOUS,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "the request has both Content-Length and Transfer-Encoding",
    ),
    (
        MARK_TOO_LARGE,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        "the request head is larger than the gateway accepts: over server.max_header_bytes (request line included) or more than 100 header lines",
    ),
    (
        MARK_BAD_VERSION,
        StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        "http_version_not_supported",
        "only HTTP/1.0, HTTP/1.1 and HTTP/2 are served",
    ),
    (
        MARK_BAD_LENGTH,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "the Content-Length is not a single decimal number",
    ),
    (
        MARK_HUGE_LENGTH,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "the declared Content-Length is larger than the gateway accepts",
    ),
    (
        MARK_UNSUPPORTED_CODING,
        StatusCode::NOT_IMPLEMENTED,
        "unsupported_transfer_coding",
        "only the chunked transfer coding is supported",
    ),
    (
        MARK_BAD_HOST,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "an HTTP/1.1 request needs exactly one Host header",
    ),
    (
        MARK_INVALID_HOST,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "the Host header is not a host name or IP address with an optional port",
    ),
    (
        MARK_BARE_LF,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "a line of the request head ends with a bare LF instead of CRLF",
    ),
];

/// The answer to a head the framing watcher marked (unknown marks: a malformed head).
fn framing_refusal(mark: &[u8]) -> (StatusCode, &'static str, &'static str) {
    FRAMING_REFUSALS
        .iter()
        .find(|(m, ..)| m.as_bytes() == mark)
        .map(|(_, status, code, message)| (*status, *code, *message))
        .unwrap_or((
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request head is not valid HTTP/1.1",
        ))
}

/// Whether a response is chunked (`Some(true)`), has no transfer coding (`Some(false)`), or
/// uses a coding other than chunked (`None`: nginx answers such a response 502 too).
fn response_coding(headers: &http::HeaderMap) -> Option<bool> {
    let mut chunked = false;
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        for coding in value.as_bytes().split(|b| *b == b',') {
            let coding = coding.trim_ascii();
            if coding.eq_ignore_ascii_case(b"chunked") {
                chunked = true;
            } else if !coding.is_empty() {
                return None;
            }
        }
    }
    Some(chunked)
}

/// The request's host without port, lower-case.
/// `uri` with its path replaced by `path` (query, scheme and authority kept).
fn with_path(uri: &http::Uri, path: &str) -> Option<http::Uri> {
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// Why an HTTP/2 request's `Host` header is unacceptable, if it is: more than one, a value
/// that is not a host with an optional port, or one that differs from `:authority`.
fn http2_host_problem<B>(req: &Request<B>) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next()?;
    if hosts.next().is_some() {
        return Some("the request has more than one Host header");
    }
    if !crate::framing::valid_host(host.as_bytes()) {
        return Some("the Host header is not a host name or IP address with an optional port");
    }
    match req.uri().authority() {
        Some(authority)
            if !authority
                .as_str()
                .as_bytes()
                .eq_ignore_ascii_case(host.as_bytes().trim_ascii()) =>
        {
            Some("the Host header names another host than the :authority pseudo-header")
        }
        _ => None,
    }
}

fn request_host(req: &Request<Incoming>) -> Option<String> {
    // An absolute-form target (or HTTP/2's `:authority`) wins over the Host header.
    let raw = req.uri().host().or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
    })?;
    let host = match raw.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h,
        _ => raw,
    };
    Some(host.to_ascii_lowercase())
}

/// A request body as read before forwarding.
enum ReadBody {
    /// Small enough to keep for retries.
    Whole(Bytes),
    /// Larger than the retry buffer: streams on.
    Streaming(Upload, Arc<UploadStats>),
}

impl ReadBody {
    fn into_out(self) -> OutBody {
        match self {
            ReadBody::Whole(b) => OutBody::Buffered(b),
            ReadBody::Streaming(u, _) => OutBody::Streaming(Mutex::new(Some(u.boxed()))),
        }
    }
}

/// How much of a request body is read, kept, and waited for.
struct BodyLimits {
    /// `max_body_bytes`: larger bodies get 413.
    limit: u64,
    /// Bodies up to this are read whole (and can be sent again); larger ones stream.
    keep: u64,
    /// `body_timeout`: the longest wait for the next bytes.
    stall: Duration,
}

/// Why a request body could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyProblem {
    /// Over `max_body_bytes`.
    TooLarge,
    /// The client broke the framing (a malformed chunk).
    Unreadable,
    /// The client went away before the whole body came.
    Aborted,
    /// No bytes for `body_timeout`.
    Stalled,
}

impl BodyProblem {
    fn class(self) -> ResetClass {
        match self {
            BodyProblem::TooLarge | BodyProblem::Stalled => ResetClass::BadRequest,
            BodyProblem::Unreadable => ResetClass::BadRequest,
            BodyProblem::Aborted => ResetClass::ClientAborted,
        }
    }

    /// `413`, `408` (and close: the rest of the body will not be read) or `400`.
    fn answer(self, limits: &BodyLimits) -> Response<Body> {
        match self {
            BodyProblem::TooLarge => responses::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &format!("the request body is larger than {} bytes", limits.limit),
            ),
            BodyProblem::Stalled => {
                let mut resp = responses::error(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    &format!(
                        "the request body stalled: no bytes for {} ms",
                        limits.stall.as_millis()
                    ),
                );
                resp.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
                resp
            }
            BodyProblem::Unreadable => responses::error(
                StatusCode::BAD_REQUEST,
                "body_read_failed",
                "the request body could not be read: its chunked framing is malformed",
            ),
            // Nobody reads it: the status the call log gets (nginx's "client closed request").
            BodyProblem::Aborted => Response::builder()
                .status(StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST))
                .body(responses::full(Bytes::new()))
                .unwrap_or_default(),
        }
    }
}

/// The `[server]` body limits.
fn body_limits(config: &Config) -> BodyLimits {
    let server = &config.server;
    BodyLimits {
        limit: server.max_body_bytes,
        keep: server.retry_buffer_bytes.min(server.max_body_bytes),
        stall: server.body_timeout,
    }
}

/// A `Content-Length` of only digits (too large for u64: `u64::MAX`, over any limit).
fn declared_length(declared: Option<&header::HeaderValue>) -> Option<u64> {
    declared
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .map(|v| v.parse::<u64>().unwrap_or(u64::MAX))
}

/// Read the body into memory up to `keep` bytes; past that, stream it (up to `limit`), each
/// wait for more bytes bounded by `stall`. `received` counts the bytes read here (also when
/// the read fails).
async fn read_body(
    mut body: Incoming,
    declared: Option<&header::HeaderValue>,
    limits: &BodyLimits,
    received: &mut u64,
) -> Result<ReadBody, BodyProblem> {
    if body.is_end_stream() {
        return Ok(ReadBody::Whole(Bytes::new()));
    }
    let declared = declared_length(declared);
    if declared.is_some_and(|n| n > limits.limit) {
        return Err(BodyProblem::TooLarge);
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut seen = 0u64;
    if declared.is_none_or(|n| n <= limits.keep) {
        loop {
            let frame = match tokio::time::timeout(limits.stall, body.frame()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return Err(BodyProblem::Stalled),
            };
            let frame = frame.map_err(|e| body_error(&e))?;
            if let Ok(data) = frame.into_data() {
                seen += data.len() as u64;
                *received = seen;
                if seen > limits.limit {
                    return Err(BodyProblem::TooLarge);
                }
                chunks.push(data);
                if seen > limits.keep {
                    break;
                }
            }
        }
        if seen <= limits.keep {
            return Ok(ReadBody::Whole(match chunks.len() {
                0 => Bytes::new(),
                1 => chunks.pop().unwrap_or_default(),
                _ => chunks.concat().into(),
            }));
        }
    }
    let stats = Arc::new(UploadStats::default());
    let upload = Upload::new(chunks, body, limits.limit, limits.stall, stats.clone());
    Ok(ReadBody::Streaming(upload, stats))
}

/// A failed read of a request body: the client left, or sent a malformed chunk.
fn body_error(e: &hyper::Error) -> BodyProblem {
    use std::io::ErrorKind;
    let gone = |k: ErrorKind| {
        matches!(
            k,
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
        )
    };
    let io_kind = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(|io| io.kind());
    if e.is_incomplete_message() || e.is_canceled() || io_kind.is_some_and(gone) {
        BodyProblem::Aborted
    } else {
        BodyProblem::Unreadable
    }
}

/// The problem of a streamed upload, if it failed.
fn upload_failure(stats: &UploadStats) -> Option<BodyProblem> {
    use std::sync::atomic::Ordering::Relaxed;
    if stats.too_large.load(Relaxed) {
        Some(BodyProblem::TooLarge)
    } else if stats.stalled.load(Relaxed) {
        Some(BodyProblem::Stalled)
    } else if stats.client_failed.load(Relaxed) {
        // Mostly a client that left mid-upload (a malformed chunk is rarer).
        Some(BodyProblem::Aborted)
    } else {
        None
    }
}

/// Carry bytes both ways between a client and an upstream that agreed to switch protocols,
/// until either side closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
        return;
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let mut upstream = hyper_util::rt::TokioIo::new(upstream);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

fn outgoing(
    parts: http::request::Parts,
    body: OutBody,
    client: &Peer,
    up: &UpstreamRt,
    upgrade: Option<header::HeaderValue>,
) -> Outgoing {
    let mut headers = parts.headers;
    // The host as the client sent it: an absolute-form target's (or HTTP/2's `:authority`)
    // wins over the Host header (RFC 9112 §3.2.2). Taken before the hop-by-hop headers go, so
    // a `Connection: host` cannot remove it.
    let original_host = parts
        .uri
        .authority()
        .and_then(|a| header::HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| headers.get(header::HOST).cloned());
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    hygiene::strip_hop_by_hop(&mut headers);
    // HTTP/2 has no `Upgrade`: to an HTTP/2 pool the request goes as a plain one.
    let upgrade = upgrade.filter(|_| !up.conns.dialer().http2());
    let is_upgrade = upgrade.is_some();
    if let Some(protocol) = upgrade {
        hygiene::keep_upgrade(&mut headers, protocol);
    }
    let as_received = original_host.as_ref().and_then(|h| h.to_str().ok());
    hygiene::add_forwarding(&mut headers, client, as_received, parts.version);
    if let Some(h) = original_host {
        headers.insert(header::HOST, h);
    }
    // A request without the hash key (no such header or cookie) is not pinned: it takes the
    // pool's round-robin turn, rather than every such request landing on one target.
    let hash = match &up.balancer.upstream.balance {
        holdfast_core::config::Balance::ConsistentHash(on) => match on {
            HashOn::ClientIp => Some(fnv1a(client.addr.ip().to_string().as_bytes())),
            HashOn::Header(name) => headers.get(name.as_str()).map(|v| fnv1a(v.as_bytes())),
            HashOn::Cookie(name) => cookie(&headers, name).map(|c| fnv1a(c.as_bytes())),
        },
        _ => None,
    };
    let uri = if parts.uri.authority().is_none() && parts.uri.path_and_query().is_some() {
        parts.uri
    } else {
        match parts.uri.path_and_query() {
            Some(pq) => http::Uri::from(pq.clone()),
            None => http::Uri::from_static("/"),
        }
    };
    Outgoing {
        method: parts.method,
        uri,
        headers,
        body,
        hash,
        upgrade: is_upgrade,
        te_trailers,
    }
}

fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}
