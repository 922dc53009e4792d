//! `holdfast check FILE`: validate a config; print every error (file, line, key, fix) and the
//! warnings (file, line, key, fix) about timeouts ordered so that resets follow and routes that
//! can never match.

use std::path::PathBuf;

use holdfast_core::config;

/// Arguments of `holdfast check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// The config file to check.
    pub file: PathBuf,
}

/// Returns the exit status: 0 valid, 1 invalid.
pub fn run(args: CheckArgs) -> u8 {
    match config::load_file_with_warnings(&args.file) {
        Ok((cfg, warnings)) => {
            // Files the config points at (CA bundles, the TLS listeners' certificate and key,
            // `sslrootcert`) are read here too, as `serve` would.
            let mut file_errors = 0;
            let lines = std::fs::read_to_string(&args.file)
                .map(|text| config::locate::LineIndex::new(&text))
                .ok();
            for up in cfg.upstreams.values() {
                if let Err(e) = holdfast_proxy::dial::Dialer::new(up) {
                    let at = match lines.as_ref().and_then(|l| l.line_of(&e.key())) {
                        Some(line) => format!("{}:{line}", args.file.display()),
                        None => args.file.display().to_string(),
                    };
                    eprintln!("{at}: {e}");
                    file_errors += 1;
                }
            }
            if let Some(files) = &cfg.server.tls {
                if let Err(e) = holdfast_proxy::tls_listen::load(files) {
                    let at = match lines.as_ref().and_then(|l| l.line_of(e.key())) {
                        Some(line) => format!("{}:{line}", args.file.display()),
                        None => args.file.display().to_string(),
                    };
                    eprintln!("{at}: {e}");
                    file_errors += 1;
                }
            }
            if let config::AccessLog::File(path) = &cfg.server.access_log {
                if let Err(problem) = access_log_problem(std::path::Path::new(path)) {
                    let at = match lines.as_ref().and_then(|l| l.line_of("server.access_log")) {
                        Some(line) => format!("{}:{line}", args.file.display()),
                        None => args.file.display().to_string(),
                    };
                    eprintln!(
                        "{at}: `server.access_log`: cannot append to `{path}`: {problem} (fix: give a writable file path, or \"stdout\" or \"off\")"
                    );
                    file_errors += 1;
                }
            }
            if let Some(m) = &cfg.management {
                for jwt in &m.jwt {
                    if let Err(e) = holdfast_admin::check_jwt_config(jwt) {
                        eprintln!("{}: {e}", args.file.display());
                        file_errors += 1;
                    }
                }
                if let config::management::StoreUrl::Postgres(url) = &m.store {
                    if let Err(e) = holdfast_store::check_postgres_url(url) {
                        eprintln!("{}: management.store: {e}", args.file.display());
                        file_errors += 1;
                    }
                }
            }
            if file_errors > 0 {
                eprintln!("{}: {file_errors} error(s)", args.file.display());
                return 1;
            }
            for w in &warnings {
                eprintln!("{w}");
            }
            println!(
                "{}: OK ({} listener(s), {} route(s), {} upstream pool(s), {} warning(s))",
                args.file.display(),
                cfg.server.listen.len(),
                cfg.routes.len(),
                cfg.upstreams.len(),
                warnings.len()
            );
            0
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", args.file.display(), errors.0.len());
            1
        }
    }
}

/// Why `serve` could not append to the access log at `path`, checked without creating it: an
/// existing file is opened for appending; for a new one, its directory must exist.
fn access_log_problem(path: &std::path::Path) -> Result<(), String> {
    if path.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| e.to_string());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            if m.permissions().readonly() {
                Err(format!("its directory `{}` is read-only", dir.display()))
            } else {
                Ok(())
            }
        }
        Ok(_) => Err(format!("`{}` is not a directory", dir.display())),
        Err(e) => Err(format!("its directory `{}`: {e}", dir.display())),
    }
}
