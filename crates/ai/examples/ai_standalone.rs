//! Serve only the AI gateway handler, from the `[ai]` section of a Holdfast config file.
//!
//! `cargo run -p holdfast-ai --release --example ai_standalone -- CONFIG.toml 127.0.0.1:8080`
//!
//! `${VAR}` in the file is replaced by the environment variable (empty when unset). Used by
//! `scripts/test-python` and `bench/ai.sh`; production uses `holdfast serve`.

use std::sync::Arc;

use holdfast_ai::AiPluginFactory;
use holdfast_core::config::ai::{validate, RawAiConfig};

fn interpolate(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                out.push_str(&std::env::var(&after[..end]).unwrap_or_default());
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn fail(msg: &str) -> ! {
    eprintln!("ai_standalone: {msg}");
    std::process::exit(2);
}

#[derive(serde::Deserialize)]
struct File {
    ai: Option<toml::Value>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(listen)) = (args.next(), args.next()) else {
        fail("usage: ai_standalone CONFIG.toml LISTEN_ADDR");
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    let file: File =
        toml::from_str(&interpolate(&text)).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    let raw: RawAiConfig = file
        .ai
        .unwrap_or_else(|| fail(&format!("{path}: no [ai] section")))
        .try_into()
        .unwrap_or_else(|e| fail(&format!("{path}: [ai]: {e}")));
    let config = validate(&raw).unwrap_or_else(|errs| {
        for e in errs {
            eprintln!("{e}");
        }
        fail("invalid [ai] section")
    });
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
