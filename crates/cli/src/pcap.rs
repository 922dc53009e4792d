//! `holdfast pcap FILE`: who sent each TCP reset in a capture, and why.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use holdfast_doctor::pcap::{self, Filter, PcapError, ResetReport};

/// Arguments of `holdfast pcap`.
#[derive(Debug, Args)]
pub struct PcapArgs {
    /// Capture file (pcap or pcapng, optionally gzip-compressed); `-` reads stdin.
    pub file: PathBuf,
    /// Print one JSON object (schema in docs/PCAP.md) instead of the human report.
    #[arg(long)]
    pub json: bool,
    /// Only connections with this address at either end.
    #[arg(long)]
    pub host: Option<String>,
    /// Only connections with this port at either end.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only this connection: `IP:PORT,IP:PORT` (IPv6 as `[ADDR]:PORT`).
    #[arg(long)]
    pub flow: Option<String>,
}

/// Exit status when the input cannot be read.
const UNREADABLE: u8 = 2;

/// Runs the analysis and returns the exit status: 0 when it ran, 2 when the input cannot be read or is damaged.
pub fn run(args: PcapArgs) -> anyhow::Result<u8> {
    let filter = match Filter::parse(args.host.as_deref(), args.port, args.flow.as_deref()) {
        Ok(filter) => filter,
        Err(err) => {
            eprintln!("holdfast pcap: {err}");
            return Ok(UNREADABLE);
        }
    };
    let input: Box<dyn io::Read + Send> = if args.file.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        match File::open(&args.file) {
            Ok(file) => Box::new(file),
            Err(source) => {
                let err = PcapError::Io {
                    what: args.file.display().to_string(),
                    source,
                };
                eprintln!("holdfast pcap: {err}");
                return Ok(UNREADABLE);
            }
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut write_error: Option<io::Error> = None;
    let mut first = true;
    if args.json {
        write!(out, "{{\"resets\":[")?;
    }
    let result = pcap::analyze(input, &filter, |report: ResetReport| {
        if write_error.is_some() {
            return;
        }
        let written = if args.json {
            let sep = if first { "" } else { "," };
            serde_json::to_string(&report.json())
                .map_err(io::Error::other)
                .and_then(|text| write!(out, "{sep}\n  {text}"))
        } else {
            writeln!(out, "{}", report.human())
        };
        first = false;
        if let Err(err) = written {
            write_error = Some(err);
        }
    });
    if let Some(err) = write_error {
        return Err(err).context("writing the report");
    }
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(err) => {
            if args.json {
                writeln!(out, "]}}")?;
            }
            out.flush()?;
            eprintln!("holdfast pcap: {}: {err}", args.file.display());
            return Ok(UNREADABLE);
        }
    };
    let summary = &outcome.summary;
    if args.json {
        let tail = serde_json::json!({
            "packets": summary.packets,
            "connections": summary.connections,
            "summary": summary,
            "damage": outcome.damage.as_ref().map(|d| d.to_string()),
        });
        let tail = serde_json::to_string(&tail)?;
        // Splice the remaining keys after the streamed "resets" array.
        writeln!(out, "\n],{}", &tail[1..])?;
    } else {
        if summary.reset_connections == 0 {
            writeln!(out, "no connection in this capture ended in a reset")?;
        }
        write!(out, "{}", summary.human())?;
    }
    out.flush()?;
    if let Some(damage) = outcome.damage {
        eprintln!(
            "holdfast pcap: {}: {damage}; the report covers the frames before it",
            args.file.display()
        );
        return Ok(UNREADABLE);
    }
    for warning in &summary.warnings {
        eprintln!("holdfast pcap: warning: {warning}");
    }
    Ok(0)
}
