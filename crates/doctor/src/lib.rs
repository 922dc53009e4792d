//! The doctor: tells a person who sent a TCP reset and why, with evidence.
//!
//! - [`pcap`]: reads packet captures and attributes every reset (`holdfast pcap`).
//! - [`live`]: probes a URL layer by layer (`holdfast doctor URL`).
//! - [`audit`]: audits this host for what makes it reset connections (`holdfast audit`).

pub mod audit;
pub mod live;
pub mod pcap;
