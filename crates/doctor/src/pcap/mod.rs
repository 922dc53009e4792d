//! Capture analysis (`holdfast pcap`): reads pcap/pcapng, follows every TCP connection and,
//! for each one that ended in a reset, says who sent it and why, with evidence.
//!
//! - [`reader`]: streaming pcap/pcapng/gzip reader.
//! - [`decode`]: link, IP and TCP decoding.
//! - [`flow`]: bounded per-connection state.
//! - [`attribute`]: the decision, from signals to a [`verdict::Verdict`].
//! - [`verdict`]: the attribution vocabulary (shared with the live doctor).
//! - [`report`]: per-reset reports, the summary, human and JSON output.
//! - [`analysis`]: the driver tying them together ([`analyze`]).

pub mod analysis;
pub mod attribute;
pub mod decode;
mod distinct;
pub mod error;
pub mod filter;
pub mod flow;
pub mod reader;
pub mod report;
mod ttl;
pub mod verdict;

pub use analysis::{analyze, analyze_with, Limits, Outcome, Work};
pub use error::PcapError;
pub use filter::Filter;
pub use report::{ResetReport, Summary};
pub use verdict::{Cause, Evidence, Resetter, Verdict};
