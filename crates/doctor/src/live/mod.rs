//! Live probes of a URL, layer by layer, ending in a verdict (`holdfast doctor URL`).
//!
//! The layers run in order and the first one that fails decides the verdict:
//! [`env_proxy`] (proxy variables, the proxy tested by itself), [`dns`] (system resolver and
//! `--resolver`), [`tcp`] (every address; refused / timeout / unreachable; hop distance by
//! TTL-limited connects), [`tls`] (real SNI against a control SNI), [`http`] (the real request;
//! on a reset, control requests and the TTL replay of [`locate`]), [`keepalive`] (idle close
//! time, FIN or RST, advertised `Keep-Alive`) and stability (`--repeat`). With the privilege
//! to capture, [`capture`] records the probe packets and runs the capture analyser on them.

pub mod capture;
pub mod check;
pub mod dns;
pub mod env_proxy;
pub mod http;
pub mod keepalive;
pub mod listen;
pub mod locate;
mod run;
pub mod target;
pub mod tcp;
pub mod tls;
pub mod verdict;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use check::{Check, Progress, Silent, Status};
pub use run::run;
pub use target::Target;
pub use verdict::{LiveCause, LiveResetter, LiveVerdict};

/// A problem with the doctor's own input (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// The URL cannot be parsed.
    #[error(
        "cannot use URL {url:?}: {reason} (write it as http://HOST[:PORT]/PATH or https://...)"
    )]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The `--ca-file` cannot be used.
    #[error("--ca-file {path}: {reason} (give a PEM file with the CA certificate)")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The TLS configuration cannot be built.
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    /// An option is out of range.
    #[error("--{name}: {reason}")]
    BadOption {
        /// The option.
        name: &'static str,
        /// What is wrong, and the fix.
        reason: String,
    },
}

/// What to probe and how.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The URL.
    pub url: String,
    /// A resolver (address and port, usually 53) to compare with the system's.
    pub resolver: Option<SocketAddr>,
    /// The control server name for the TLS comparison.
    pub control_sni: String,
    /// Longest idle time the keep-alive measurement waits.
    pub max_idle: Duration,
    /// Requests of the stability check.
    pub repeat: u32,
    /// Accept any certificate.
    pub insecure: bool,
    /// A PEM CA file to verify the server with.
    pub ca_file: Option<PathBuf>,
    /// Deadline of each step of a probe, as a whole: one TCP connect, one TLS handshake, one
    /// HTTP exchange (the request written and the whole answer read). A server that
    /// trickles bytes cannot stretch a step beyond it.
    pub timeout: Duration,
    /// Highest TTL of the hop probes.
    pub max_hops: u8,
    /// Record the probe packets when allowed.
    pub capture: bool,
    /// Proxy variables to use instead of the process environment (name, value).
    pub proxy_env: Option<Vec<(String, String)>>,
}

impl DoctorOptions {
    /// Defaults for a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            resolver: None,
            control_sni: "example.com".into(),
            max_idle: Duration::from_secs(15),
            repeat: 3,
            insecure: false,
            ca_file: None,
            timeout: Duration::from_secs(5),
            max_hops: 16,
            capture: true,
            proxy_env: None,
        }
    }

    fn validate(&self) -> Result<(), DoctorError> {
        if !HOPS.contains(&self.max_hops) {
            return Err(DoctorError::BadOption {
                name: "max-hops",
                reason: format!("{} is out of range; {}", self.max_hops, HOPS_HINT),
            });
        }
        if !REPEATS.contains(&self.repeat) {
            return Err(DoctorError::BadOption {
                name: "repeat",
                reason: format!("{} is out of range; {}", self.repeat, REPEAT_HINT),
            });
        }
        for (name, value) in [("max-idle", self.max_idle), ("timeout", self.timeout)] {
            if value.is_zero() || value > MAX_SECONDS {
                return Err(DoctorError::BadOption {
                    name,
                    reason: format!("{} s is out of range; {SECONDS_HINT}", value.as_secs_f64()),
                });
            }
        }
        if self.insecure && self.ca_file.is_some() {
            return Err(DoctorError::BadOption {
                name: "insecure",
                reason: "cannot be used with --ca-file: give one or the other".into(),
            });
        }
        Ok(())
    }
}

/// Valid `--max-hops`.
pub const HOPS: std::ops::RangeInclusive<u8> = 1..=64;
/// How to give `--max-hops`.
pub const HOPS_HINT: &str = "give a number of hops from 1 to 64";
/// Valid `--repeat`.
pub const REPEATS: std::ops::RangeInclusive<u32> = 1..=1000;
/// How to give `--repeat`.
pub const REPEAT_HINT: &str = "give a number of requests from 1 to 1000";
/// Longest `--timeout` and `--max-idle`.
pub const MAX_SECONDS: Duration = Duration::from_secs(3600);
/// How to give `--timeout` and `--max-idle`.
pub const SECONDS_HINT: &str = "give seconds greater than 0 and at most 3600 (e.g. 0.5 or 15)";

/// The doctor's report (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// The URL probed.
    pub url: String,
    /// The conclusion.
    pub verdict: LiveVerdict,
    /// Every check, in order.
    pub checks: Vec<Check>,
}
