//! Errors of capture analysis: the input could not be read, or is damaged.

use std::io;

/// Why a capture could not be analysed (or not to the end).
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The file could not be opened or read.
    #[error("cannot read {what}: {source}")]
    Io {
        /// What was being read (a path or "stdin").
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// The input is empty.
    #[error("the input is empty: expected a pcap or pcapng capture")]
    Empty,
    /// The input does not start like a capture file.
    #[error(
        "not a capture file: the first bytes are neither a pcap nor a pcapng header ({detail}); \
         save the capture as pcap or pcapng (gzip is fine)"
    )]
    NotACapture {
        /// What was found instead.
        detail: String,
    },
    /// The capture is damaged at a byte offset; frames before it were analysed.
    #[error("capture damaged at byte offset {offset}: {detail}")]
    Damaged {
        /// Offset in the (decompressed) capture stream.
        offset: u64,
        /// What is wrong there.
        detail: String,
    },
    /// A `--host`, `--port` or `--flow` filter is malformed.
    #[error("bad filter {key} {value:?}: {fix}")]
    Filter {
        /// The option (e.g. `--flow`).
        key: &'static str,
        /// The value given.
        value: String,
        /// How to write it.
        fix: &'static str,
    },
}
