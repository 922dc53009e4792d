//! A network-namespace lab for tests that stage TCP faults for real.
//!
//! [`Lab::new`] builds three namespaces joined by veth pairs:
//!
//! ```text
//!   client  c0 ----- r0  router  r1 ----- s0  server
//!   10.66.1.2   10.66.1.1       10.66.2.1   10.66.2.2
//!   fd66:1::2   fd66:1::1       fd66:2::1   fd66:2::2
//! ```
//!
//! The router forwards IPv4 and IPv6, offloads are off on every veth (captures show wire-sized
//! segments), and `iptables`/`ip6tables` can be used inside the router through [`Netns::run`].
//! Names carry the process id and a per-process counter, so concurrent labs never collide.
//! Dropping the [`Lab`] kills every process still running in its namespaces and deletes them.
//!
//! [`Lab::available`] says whether this machine can build a lab (root, `ip netns`), so tests can
//! skip with a printed reason instead of failing. [`Netns::record`] starts `tcpdump` inside a
//! namespace and returns a [`Recording`] that stops it cleanly.

mod capture;
mod error;
mod lab;
mod netns;

pub use capture::Recording;
pub use error::LabError;
pub use lab::{Lab, Topology};
pub use netns::Netns;
