//! Holdfast's data plane: listeners, HTTP/1.1 and HTTP/2, upstream pools, load balancing,
//! health checks, retries, timeouts and drain. Extensions (the AI gateway, API management)
//! plug in through the traits in [`plugin`].
//!
//! The path of a request: [`server`] accepts (connection limit; [`tls_listen`] shakes hands on
//! TLS listeners) and [`framing`] watches every
//! request head (deadline, Content-Length/Transfer-Encoding ambiguity) -> [`gateway`] matches a route, applies the route's concurrency limit and the guards, then
//! calls a handler or [`forward`]s to a pool ([`balance`] picks targets, [`conns`] pools
//! connections, [`h1`] speaks HTTP/1.1 to upstreams) -> the response body is [`body::Tracked`] so the call record is written by
//! [`observe`] when it ends.

pub mod access_log;
pub mod balance;
pub mod body;
pub mod budget;
pub mod conns;
pub mod demo;
pub mod dial;
pub mod forward;
pub mod framing;
pub mod gateway;
pub mod h1;
pub mod health;
pub mod histograms;
pub mod hygiene;
pub mod limiter;
pub mod observe;
pub mod paths;
pub mod plugin;
pub mod responses;
pub mod server;
pub mod tls_listen;

pub use gateway::{Gateway, State};
