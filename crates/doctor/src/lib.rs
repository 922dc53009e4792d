//! The doctor: tells a person who sent a TCP reset and why, with evidence.
//!
//! - [`pcap`]: reads packet captures and attributes every reset (`holdfast pcap`).
//! - [`live`]: probes a URL layer by layer (`holdfast doctor URL`).
//! - [`audit`]: audits this host for what makes it reset connections (`holdfast audit`).

pub mod audit;
pub mod live;
pub mod pcap;

/// Whether the process runs with effective uid 0 (advice to "run as root" is then pointless).
pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
