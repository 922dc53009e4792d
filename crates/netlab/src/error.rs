//! Errors from building or driving the lab.

use std::io;

/// Something the lab could not do; each variant names the command that failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command could not be started at all (missing binary, no permission).
    #[error("could not start `{command}`: {source} (is it installed and are you root?)")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: io::Error,
    },
    /// A command ran but exited with a failure status.
    #[error("`{command}` failed with {status}: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// The lab cannot run on this machine; the message says why.
    #[error("network lab unavailable: {0}")]
    Unavailable(String),
    /// A recording did not become ready in time.
    #[error("tcpdump in namespace {netns} did not start listening within {seconds} s: {detail}")]
    RecorderNotReady {
        /// The namespace.
        netns: String,
        /// The wait that expired.
        seconds: u64,
        /// What tcpdump printed, if anything.
        detail: String,
    },
}
