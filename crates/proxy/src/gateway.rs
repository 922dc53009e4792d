//! The gateway at run time: the routes, pools and extensions of one config (swapped atomically
//! on reload), and the handling of one request from route match to the call record.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use holdfast_core::config::{Config, HashOn, Route, RouteTarget};
use holdfast_core::{CallExtra, CallRecord, ResetClass};
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::balance::fnv1a;
use crate::body::{Ending, Tracked};
use crate::budget::Budget;
use crate::forward::{forward, ms, Outgoing, Trace, UpstreamRt};
use crate::hygiene;
use crate::limiter::Limiter;
use crate::observe::Observers;
use crate::plugin::{Body, Plugins, RequestContext};
use crate::responses;

/// One route at run time.
pub struct RouteRt {
    pub route: Route,
    pub name: Arc<str>,
    pub service: Option<Arc<str>>,
    pub limiter: Option<Limiter>,
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
    /// Build the run-time state (no I/O).
    pub fn new(config: Arc<Config>, plugins: Plugins) -> State {
        let upstreams = config
            .upstreams
            .iter()
            .map(|(name, u)| (name.clone(), Arc::new(UpstreamRt::new(u.clone()))))
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|r| RouteRt {
                route: r.clone(),
                name: Arc::from(r.name.as_str()),
                service: r.service.as_deref().map(Arc::from),
                limiter: (r.max_concurrent > 0)
                    .then(|| Limiter::new(r.max_concurrent, r.queue_size, r.queue_timeout)),
            })
            .collect();
        State {
            budget: Budget::new(config.retry_budget.clone()),
            config,
            routes,
            upstreams,
            plugins,
        }
    }

    fn find_route(&self, host: Option<&str>, path: &str, method: &str) -> Option<&RouteRt> {
        self.routes.iter().find(|r| {
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
}

/// What the call record needs, carried to the end of the response body.
struct Pending {
    ts_ms: i64,
    start: Instant,
    route: String,
    method: String,
    path: String,
    host: Option<String>,
    client: String,
    bytes_in: u64,
    service: Option<String>,
}

impl Gateway {
    pub fn new(state: State, observers: Observers) -> Gateway {
        Gateway {
            state: ArcSwap::from_pointee(state),
            observers,
        }
    }

    /// Handle one client request; never fails (errors become responses).
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<Body> {
        let start = Instant::now();
        let state = self.state.load_full();
        let host = request_host(&req);
        let pending = Pending {
            ts_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            start,
            route: String::new(),
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            host: host.clone(),
            client: client.to_string(),
            bytes_in: 0,
            service: None,
        };
        let extra = Arc::new(Mutex::new(CallExtra::default()));
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > state.config.server.max_header_bytes {
            let resp = responses::error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "the request headers are larger than the gateway accepts",
            );
            return self.finish(
                resp,
                pending,
                Some(ResetClass::BadRequest),
                Trace::default(),
                None,
                extra,
            );
        }
        let Some(route) =
            state.find_route(host.as_deref(), req.uri().path(), req.method().as_str())
        else {
            let resp = responses::error(
                StatusCode::NOT_FOUND,
                "no_route",
                "no route matches this host, path and method",
            );
            return self.finish(resp, pending, None, Trace::default(), None, extra);
        };
        let pending = Pending {
            route: route.route.name.clone(),
            service: route.route.service.clone(),
            ..pending
        };
        let ctx = RequestContext {
            route: route.name.clone(),
            service: route.service.clone(),
            client_addr: client,
            start,
            extra: extra.clone(),
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
                        Some(ResetClass::Overloaded),
                        Trace::default(),
                        None,
                        extra,
                    );
                }
            },
            None => None,
        };
        let (parts, body) = req.into_parts();
        for guard in &state.plugins.guards {
            if let Err(resp) = guard.check(&parts, &ctx).await {
                return self.finish(resp, pending, None, Trace::default(), None, extra);
            }
        }
        match &route.route.target {
            RouteTarget::Handler(name) => {
                let Some(handler) = state.plugins.handlers.get(name).cloned() else {
                    let resp = responses::error(
                        StatusCode::BAD_GATEWAY,
                        "no_handler",
                        &format!(
                            "handler `{name}` is not registered (is its config section present?)"
                        ),
                    );
                    return self.finish(resp, pending, None, Trace::default(), None, extra);
                };
                let req = Request::from_parts(
                    parts,
                    body.map_err(|e| Box::new(e) as crate::plugin::BoxError)
                        .boxed(),
                );
                let resp = handler.handle(req, ctx).await;
                self.finish(resp, pending, None, Trace::default(), None, extra)
            }
            RouteTarget::Upstream(pool) => {
                let Some(up) = state.upstreams.get(pool).cloned() else {
                    let resp = responses::error(
                        StatusCode::BAD_GATEWAY,
                        "no_upstream",
                        &format!("upstream `{pool}` is not defined"),
                    );
                    return self.finish(resp, pending, None, Trace::default(), None, extra);
                };
                let limit = state.config.server.max_body_bytes as usize;
                let body = match Limited::new(body, limit).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        let too_big = e
                            .downcast_ref::<http_body_util::LengthLimitError>()
                            .is_some();
                        let (resp, class) = if too_big {
                            (
                                responses::error(
                                    StatusCode::PAYLOAD_TOO_LARGE,
                                    "body_too_large",
                                    &format!("the request body is larger than {limit} bytes"),
                                ),
                                ResetClass::BadRequest,
                            )
                        } else {
                            (
                                responses::error(
                                    StatusCode::BAD_REQUEST,
                                    "body_read_failed",
                                    "the request body could not be read",
                                ),
                                ResetClass::ClientAborted,
                            )
                        };
                        return self.finish(
                            resp,
                            pending,
                            Some(class),
                            Trace::default(),
                            None,
                            extra,
                        );
                    }
                };
                let pending = Pending {
                    bytes_in: body.len() as u64,
                    ..pending
                };
                let out = outgoing(parts, body, client, host.as_deref(), &up);
                let mut trace = Trace::default();
                match forward(&up, &route.route, &state.budget, &out, &mut trace).await {
                    Ok(answer) => {
                        let (mut head, incoming) = answer.response.into_parts();
                        let keep = !close_requested(&incoming_close_hint(&head.headers));
                        hygiene::strip_hop_by_hop(&mut head.headers);
                        hygiene::add_via(&mut head.headers, head.version);
                        head.version = http::Version::HTTP_11;
                        let conn = answer.conn;
                        let up2 = up.clone();
                        let body = Tracked::new(
                            incoming
                                .map_err(|e| Box::new(e) as crate::plugin::BoxError)
                                .boxed(),
                            move |ending, _| {
                                if ending == Ending::Complete && keep {
                                    up2.conns.checkin(conn);
                                }
                            },
                        )
                        .boxed();
                        let resp = Response::from_parts(head, body);
                        let target = trace
                            .target
                            .map(|i| up.balancer.targets[i].authority.clone());
                        self.finish(resp, pending, None, trace, target, extra)
                    }
                    Err(failure) => {
                        let code = failure.class.as_str();
                        let mut resp = responses::error(failure.status, code, &failure.message);
                        if failure.status == StatusCode::SERVICE_UNAVAILABLE {
                            resp.headers_mut()
                                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                        }
                        let target = trace
                            .target
                            .map(|i| up.balancer.targets[i].authority.clone());
                        self.finish(resp, pending, Some(failure.class), trace, target, extra)
                    }
                }
            }
        }
    }

    /// Wrap the response body so the call record is written when it ends.
    fn finish(
        self: &Arc<Self>,
        resp: Response<Body>,
        p: Pending,
        class: Option<ResetClass>,
        trace: Trace,
        target: Option<String>,
        extra: Arc<Mutex<CallExtra>>,
    ) -> Response<Body> {
        let (parts, body) = resp.into_parts();
        let status = parts.status.as_u16();
        let me = self.clone();
        let body = Tracked::new(body, move |ending, bytes_out| {
            let mut extra = extra.lock().map(|e| e.clone()).unwrap_or_default();
            if extra.service.is_none() {
                extra.service = p.service.clone();
            }
            let class = class.or(extra.reset_class).or(match ending {
                Ending::Complete => None,
                Ending::Failed => Some(ResetClass::UpstreamResetMidResponse),
                Ending::Dropped => Some(ResetClass::ClientAborted),
            });
            // `CallExtra` carries its own copy of the class (flattened into the same JSON).
            extra.reset_class = class;
            let upstream_ms = trace.started.map(|s| ms(s.elapsed()));
            let record = CallRecord {
                ts_ms: p.ts_ms,
                route: p.route,
                method: p.method,
                path: p.path,
                host: p.host,
                client: p.client,
                status,
                reset_class: class,
                target,
                attempts: trace.attempts,
                total_ms: ms(p.start.elapsed()),
                upstream_connect_ms: trace.connect_ms,
                upstream_first_byte_ms: trace.first_byte_ms,
                upstream_ms,
                bytes_in: p.bytes_in,
                bytes_out,
                extra,
            };
            me.observers.record(&record, &trace.retried);
            for o in &me.state.load().plugins.observers {
                o.on_call(&record);
            }
        });
        Response::from_parts(parts, body.boxed())
    }
}

fn incoming_close_hint(headers: &http::HeaderMap) -> String {
    headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn close_requested(connection: &str) -> bool {
    connection.split(',').any(|t| t.trim() == "close")
}

/// The request's host without port, lower-case.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().host())?;
    let host = match raw.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h,
        _ => raw,
    };
    Some(host.to_ascii_lowercase())
}

fn outgoing(
    parts: http::request::Parts,
    body: Bytes,
    client: SocketAddr,
    host: Option<&str>,
    up: &UpstreamRt,
) -> Outgoing {
    let mut headers = parts.headers;
    hygiene::strip_hop_by_hop(&mut headers);
    let original_host = headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| header::HeaderValue::from_str(a.as_str()).ok())
    });
    hygiene::add_forwarding(&mut headers, client, host, parts.version);
    if let Some(h) = original_host {
        headers.insert(header::HOST, h);
    }
    let hash = match &up.balancer.upstream.balance {
        holdfast_core::config::Balance::ConsistentHash(on) => Some(match on {
            HashOn::ClientIp => fnv1a(client.ip().to_string().as_bytes()),
            HashOn::Header(name) => fnv1a(
                headers
                    .get(name.as_str())
                    .map(|v| v.as_bytes())
                    .unwrap_or_default(),
            ),
            HashOn::Cookie(name) => fnv1a(cookie(&headers, name).unwrap_or_default().as_bytes()),
        }),
        _ => None,
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    Outgoing {
        method: parts.method,
        path_and_query,
        headers,
        body,
        hash,
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
