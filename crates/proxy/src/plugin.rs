//! The contract between the data plane and its extensions.
//!
//! - A [`RouteHandler`] answers the requests of a route whose config says `handler = "NAME"`
//!   instead of `upstream = "POOL"` (the AI gateway registers `ai`).
//! - A [`RequestGuard`] runs before any handler or upstream for every request of a route
//!   (API-key authentication, subscriptions, rate limits). It may refuse with a response.
//! - A [`CallObserver`] sees every finished call (call log, token-based limits, analytics).
//!
//! A [`PluginFactory`] builds all of them from a validated config; the data plane calls it at
//! start and on every reload, and swaps the result in atomically with the routes.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use holdfast_core::{CallExtra, CallRecord};
use http::{Request, Response};
use http_body_util::combinators::BoxBody;

/// Boxed error type for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type used between the data plane and extensions.
pub type Body = BoxBody<Bytes, BoxError>;
/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the data plane knows about a request while extensions look at it.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The route's name (from config; generated as `route-N` when unnamed).
    pub route: Arc<str>,
    /// The managed service the route belongs to (`routes[].service`), if any.
    pub service: Option<Arc<str>>,
    pub client_addr: SocketAddr,
    /// When the request's head was read.
    pub start: Instant,
    /// Filled in by extensions; merged into the [`CallRecord`] when the response body ends,
    /// so a streaming handler may still write to it after it returned the response.
    pub extra: Arc<Mutex<CallExtra>>,
}

/// Answers the requests of routes configured with `handler = "NAME"`.
pub trait RouteHandler: Send + Sync + 'static {
    /// Handle one request. Never panics; failures become HTTP error responses, and a failure
    /// after the response started must end the body with an error (never a clean end).
    fn handle(&self, req: Request<Body>, ctx: RequestContext)
        -> BoxFuture<'static, Response<Body>>;
}

/// Headers a guard adds to the response of a request it let through (each replaces a header
/// of that name in the response). A plain list: a handful of headers per request, cheaper than
/// building and merging a `HeaderMap`.
pub type GuardHeaders = Option<Vec<(http::HeaderName, http::HeaderValue)>>;

/// Runs before the handler or upstream for every request of a route.
pub trait RequestGuard: Send + Sync + 'static {
    /// `Ok(headers)` lets the request through; the headers (if any, e.g. `RateLimit-*`) are
    /// added to its response, whatever answers it. `Err(response)` answers it at once (401,
    /// 403, 429…).
    fn check<'a>(
        &'a self,
        req: &'a http::request::Parts,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<GuardHeaders, Response<Body>>>;

    /// The same decision without a future, when the guard can make it without waiting; `None`
    /// sends the request to [`RequestGuard::check`]. (A boxed future per request costs an
    /// allocation even when it is ready at once.)
    fn check_now(
        &self,
        _req: &http::request::Parts,
        _ctx: &RequestContext,
    ) -> Option<Result<GuardHeaders, Response<Body>>> {
        None
    }

    /// A request header that must not reach the upstream or handler (the credential this guard
    /// checked, e.g. the consumer's API key). Removed after every guard let the request through.
    fn strip_request_header(&self, _ctx: &RequestContext) -> Option<&http::HeaderName> {
        None
    }
}

/// Sees every finished call. Must not block: queue the record and return.
pub trait CallObserver: Send + Sync + 'static {
    fn on_call(&self, record: &CallRecord);
}

/// The extensions built from one config.
#[derive(Default, Clone)]
pub struct Plugins {
    pub handlers: HashMap<String, Arc<dyn RouteHandler>>,
    pub guards: Vec<Arc<dyn RequestGuard>>,
    pub observers: Vec<Arc<dyn CallObserver>>,
}

impl Plugins {
    /// Add everything from `other` (handlers with the same name are replaced).
    pub fn merge(&mut self, other: Plugins) {
        self.handlers.extend(other.handlers);
        self.guards.extend(other.guards);
        self.observers.extend(other.observers);
    }
}

/// Builds the extensions from a config, at start and on every reload. An error refuses the
/// config (on reload, the old config stays in force).
pub trait PluginFactory: Send + Sync + 'static {
    fn build(&self, config: &holdfast_core::config::Config) -> Result<Plugins, String>;
}
