//! `holdfast`: the API and AI gateway that never hangs up on its clients, and the doctor
//! that tells who sent a TCP reset and why.

mod admin;
mod audit;
mod check;
mod doctor;
mod pcap;
mod plugins;
mod reload;
mod serve;

use clap::{Parser, Subcommand};

/// mimalloc: the data plane allocates per request (headers, futures, buffers); glibc's malloc
/// cost about 15% of the proxy's user-space instructions (callgrind), mimalloc much less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Holdfast: an API and AI gateway that never resets its clients, and a doctor for resets.
#[derive(Parser)]
#[command(name = "holdfast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (from --config FILE, quick-mode flags, or --demo).
    Serve(serve::ServeArgs),
    /// Validate a config file: errors name file, line, key and fix; warns on reset-prone timeouts.
    Check(check::CheckArgs),
    /// Read a capture and say who sent each TCP reset and why.
    Pcap(pcap::PcapArgs),
    /// Check this host for what makes it reset connections.
    Audit(audit::AuditArgs),
    /// API management: tenants, services, consumers, keys, approvals, stats (via the admin API).
    Admin(admin::AdminArgs),
    /// Probe a URL layer by layer and say who resets it and why.
    Doctor(doctor::DoctorArgs),
}

/// Log warnings and notices (a full call-log buffer, a store or Redis outage, a setting that
/// needs a restart) to stderr. `RUST_LOG` overrides the level (`RUST_LOG=debug`); the default
/// is `info` for `serve` and `warn` for the other commands.
fn init_logging(serving: bool) {
    // tokio-postgres logs the server's notices at info ("relation ... already exists,
    // skipping" from every node's `CREATE TABLE IF NOT EXISTS` at start): warnings only.
    let default = if serving {
        "info,tokio_postgres=warn"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Commands that print to a pipe end quietly when the reader goes away (`| head`), as other
/// command-line tools do, instead of panicking on the broken pipe. `serve` keeps the ignored
/// SIGPIPE: its sockets report EPIPE as an error.
fn die_quietly_on_broken_pipe() {
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    if let Err(e) = run() {
        // One line with the whole cause chain; no Debug dump (or backtrace) of the error.
        eprintln!("holdfast: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_));
    init_logging(serving);
    if !serving {
        die_quietly_on_broken_pipe();
    }
    match cli.command {
        Command::Admin(args) => {
            let status = admin::run(args)?;
            if status != 0 {
                std::process::exit(i32::from(status));
            }
            Ok(())
        }
        Command::Serve(args) => serve::run(args),
        Command::Check(args) => {
            let status = check::run(args);
            if status != 0 {
                std::process::exit(i32::from(status));
            }
            Ok(())
        }
        Command::Doctor(args) => {
            let status = doctor::run(args)?;
            if status != 0 {
                std::process::exit(i32::from(status));
            }
            Ok(())
        }
        Command::Audit(args) => {
            let status = audit::run(args)?;
            if status != 0 {
                std::process::exit(i32::from(status));
            }
            Ok(())
        }
        Command::Pcap(args) => {
            let status = pcap::run(args)?;
            if status != 0 {
                std::process::exit(i32::from(status));
            }
            Ok(())
        }
    }
}
