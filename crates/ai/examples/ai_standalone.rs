//! Serve only the AI gateway handler, from the `[ai]` section of a Holdfast config file.
//!
//! `cargo run -p holdfast-ai --release --example ai_standalone -- CONFIG.toml 127.0.0.1:8080`
//!
//! The file is loaded like `holdfast serve` loads it (`${VAR}` / `${VAR:-default}`). Used by
//! `scripts/test-python` and `bench/ai.sh`; production uses `holdfast serve`.

use std::sync::Arc;

use holdfast_ai::AiPluginFactory;

fn fail(msg: &str) -> ! {
    eprintln!("ai_standalone: {msg}");
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(listen)) = (args.next(), args.next()) else {
        fail("usage: ai_standalone CONFIG.toml LISTEN_ADDR");
    };
    let config = holdfast_core::config::load_file(std::path::Path::new(&path))
        .unwrap_or_else(|errs| fail(&errs.to_string()));
    let config = config
        .ai
        .unwrap_or_else(|| fail(&format!("{path}: no [ai] section")));
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| fail(&e.to_string()));
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .unwrap_or_else(|e| fail(&format!("listen {listen}: {e}")));
        println!(
            "listening http://{}",
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or(listen)
        );
        let handler = Arc::new(AiPluginFactory::new().handler(config));
        holdfast_ai::standalone::serve(listener, handler).await;
    });
}
