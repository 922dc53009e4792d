//! Run a mock provider from the command line (for the Python SDK tests and benchmarks).
//!
//! `holdfast-mock-providers [--listen 127.0.0.1:0] [--delay-ms N] [--chunk-delay-ms N]`
//! prints `listening http://127.0.0.1:PORT` on stdout once ready, then serves until killed.

use std::time::Duration;

use holdfast_mock_providers::{MockOptions, MockProvider};

fn main() {
    let mut listen = "127.0.0.1:0".to_string();
    let mut options = MockOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let ms = || value.parse::<u64>().map(Duration::from_millis);
        match flag.as_str() {
            "--listen" => listen = value.clone(),
            "--delay-ms" => match ms() {
                Ok(d) => options.delay = d,
                Err(_) => usage(&format!("--delay-ms wants milliseconds, got `{value}`")),
            },
            "--chunk-delay-ms" => match ms() {
                Ok(d) => options.chunk_delay = d,
                Err(_) => usage(&format!(
                    "--chunk-delay-ms wants milliseconds, got `{value}`"
                )),
            },
            _ => usage(&format!("unknown flag `{flag}`")),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => usage(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let mock = match MockProvider::start_with(&listen, options, false).await {
            Ok(m) => m,
            Err(e) => usage(&e.to_string()),
        };
        println!("listening {}", mock.url());
        let _ = tokio::signal::ctrl_c().await;
        drop(mock);
    });
}

fn usage(problem: &str) -> ! {
    eprintln!("holdfast-mock-providers: {problem}");
    eprintln!("usage: holdfast-mock-providers [--listen ADDR] [--delay-ms N] [--chunk-delay-ms N]");
    std::process::exit(2);
}
