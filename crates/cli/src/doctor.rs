//! `holdfast doctor URL`: probes a URL layer by layer and says who resets it and why.

use std::io::{self, IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use holdfast_doctor::live::{self, Check, DoctorOptions, DoctorReport, Progress, Silent, Status};
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `holdfast doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The URL to diagnose (http:// or https://).
    pub url: String,
    /// Print one JSON object (schema in docs/DOCTOR.md) instead of the human report.
    #[arg(long)]
    pub json: bool,
    /// Also resolve through this resolver (IP, or IP:PORT) and compare with the system's answer.
    #[arg(long, value_name = "IP", value_parser = parse_resolver)]
    pub resolver: Option<SocketAddr>,
    /// Server name of the control TLS handshake.
    #[arg(long, value_name = "NAME", default_value = "example.com")]
    pub control_sni: String,
    /// Longest idle time (seconds, above 0, at most 3600) of the keep-alive measurement.
    #[arg(long, value_name = "SECONDS", default_value = "15", value_parser = parse_seconds)]
    pub max_idle: Duration,
    /// Requests of the stability check (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = parse_repeat)]
    pub repeat: u32,
    /// Accept any TLS certificate (not with --ca-file).
    #[arg(long, conflicts_with = "ca_file")]
    pub insecure: bool,
    /// Verify the server with this PEM CA file instead of the web roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Deadline of each probe step as a whole, in seconds (above 0, at most 3600): one TCP
    /// connect, one TLS handshake, one HTTP exchange (request written to the last byte of the
    /// answer), however slowly the server sends. Not the keep-alive idle wait (--max-idle).
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub timeout: Duration,
    /// Highest TTL of the hop probes (1 to 64).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = parse_hops)]
    pub max_hops: u8,
    /// Do not record the probe packets even when allowed.
    #[arg(long)]
    pub no_capture: bool,
}

/// `IP` (port 53) or `IP:PORT` / `[IPv6]:PORT`.
fn parse_resolver(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| {
            format!("{text:?} is not an address; give an IP like 9.9.9.9 or 127.0.0.1:5353")
        })
}

/// Seconds above 0, at most 3600 (fractions allowed).
fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .map(Duration::from_secs_f64)
        .filter(|d| *d <= live::MAX_SECONDS)
        .ok_or_else(|| format!("{text:?} is out of range; {}", live::SECONDS_HINT))
}

/// Hops from 1 to 64.
fn parse_hops(text: &str) -> Result<u8, String> {
    text.trim()
        .parse::<u8>()
        .ok()
        .filter(|n| live::HOPS.contains(n))
        .ok_or_else(|| format!("{text:?} is out of range; {}", live::HOPS_HINT))
}

/// Requests from 1 to 1000.
fn parse_repeat(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| live::REPEATS.contains(n))
        .ok_or_else(|| format!("{text:?} is out of range; {}", live::REPEAT_HINT))
}

/// Exit status for bad usage.
const BAD_USAGE: u8 = 2;

/// Progress lines: a spinner per layer on a terminal, plain lines otherwise.
struct Lines {
    bar: Option<ProgressBar>,
    tty: bool,
}

impl Progress for Lines {
    fn start(&mut self, name: &'static str, what: &str) {
        if self.tty {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(format!("{name}: {what}"));
            bar.enable_steady_tick(Duration::from_millis(100));
            self.bar = Some(bar);
        }
    }

    fn finish(&mut self, check: &Check) {
        let line = format!(
            "[{:>4}] {:<11} {} ({} ms)",
            mark(check.status),
            check.name,
            check.detail,
            check.ms
        );
        match self.bar.take() {
            Some(bar) => bar.finish_with_message(line),
            None => eprintln!("{line}"),
        }
    }
}

fn mark(status: Status) -> &'static str {
    match status {
        Status::Pass => "pass",
        Status::Fail => "FAIL",
        Status::Warn => "warn",
        Status::Skip => "skip",
    }
}

/// Runs the doctor and returns the exit status: 0 works, 1 failure found, 2 bad usage.
pub fn run(args: DoctorArgs) -> anyhow::Result<u8> {
    let options = DoctorOptions {
        url: args.url.clone(),
        resolver: args.resolver,
        control_sni: args.control_sni,
        max_idle: args.max_idle,
        repeat: args.repeat,
        insecure: args.insecure,
        ca_file: args.ca_file,
        timeout: args.timeout,
        max_hops: args.max_hops,
        capture: !args.no_capture,
        proxy_env: None,
    };
    let result = if args.json {
        live::run(&options, &mut Silent)
    } else {
        let mut lines = Lines {
            bar: None,
            tty: io::stderr().is_terminal(),
        };
        live::run(&options, &mut lines)
    };
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("holdfast doctor: {e}");
            return Ok(BAD_USAGE);
        }
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_verdict(&mut out, &report)?;
    }
    out.flush()?;
    Ok(u8::from(report.verdict.is_failure()))
}

fn print_verdict(out: &mut impl Write, report: &DoctorReport) -> io::Result<()> {
    let v = &report.verdict;
    writeln!(out, "\n{}", report.url)?;
    let hop = v.hop.map(|h| format!(", hop {h}")).unwrap_or_default();
    writeln!(
        out,
        "verdict: resetter {}, cause {}{hop}",
        v.resetter, v.cause,
    )?;
    writeln!(out, "{}", v.summary)?;
    for step in &v.advice {
        writeln!(out, "  - {step}")?;
    }
    Ok(())
}
