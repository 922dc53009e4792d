//! End to end through the real binary: `holdfast serve --config` with routes `handler = "ai"`
//! in front of the mock providers. Checks answers, streaming, failover, the mid-stream
//! failure rule, and that the access log carries the AI usage (tokens, cost, outcome).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use holdfast_mock_providers::{Behavior, MockProvider};
use serde_json::{json, Value};

struct Holdfast {
    child: Child,
    url: String,
    log: mpsc::Receiver<String>,
    _dir: tempdir::Dir,
}

impl Drop for Holdfast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod tempdir {
    /// A temporary directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!(
                "holdfast-ai-e2e-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn serve(ai: &str) -> Holdfast {
    let dir = tempdir::Dir::new();
    let path = dir.0.join("holdfast.toml");
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\naccess_log = \"stdout\"\n\n\
         [[routes]]\nname = \"ai\"\npath_prefix = \"/v1\"\nhandler = \"ai\"\n\n{ai}"
    );
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("holdfast starts");
    let (tx, log) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (addr_tx, addr_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("holdfast: listening on ") {
                let _ = addr_tx.send(url.trim().to_string());
            }
        }
    });
    let url = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("holdfast prints its listening address");
    Holdfast {
        child,
        url,
        log,
        _dir: dir,
    }
}

impl Holdfast {
    /// The next access-log record with AI usage (waits up to 10 s).
    fn next_ai_record(&self) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Ok(line) = self.log.recv_timeout(left) else {
                break;
            };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v.get("ai").is_some_and(|a| !a.is_null()) {
                    return v;
                }
            }
        }
        panic!("no access-log record with `ai` usage");
    }
}

/// POST and read the body chunk by chunk; returns (status, body, broken).
async fn post(url: &str, body: Value) -> (u16, String, bool) {
    let client = reqwest::Client::new();
    let mut resp = client
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("response head");
    let status = resp.status().as_u16();
    let mut text = Vec::new();
    let mut broken = false;
    loop {
        match resp.chunk().await {
            Ok(Some(b)) => text.extend_from_slice(&b),
            Ok(None) => break,
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    (status, String::from_utf8_lossy(&text).into_owned(), broken)
}

fn models(mock: &MockProvider) -> String {
    let url = mock.url();
    format!(
        "[ai]\nretry_backoff_ms = 10\n\
         [ai.models.fast]\nfallbacks = [\"claude\"]\n\
         [[ai.models.fast.deployments]]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\nbase_url = \"{url}/v1\"\n\
         [ai.models.claude]\n\
         [[ai.models.claude.deployments]]\nprovider = \"anthropic\"\nmodel = \"claude-3-5-haiku\"\nbase_url = \"{url}\"\n"
    )
}

#[tokio::test]
async fn chat_and_stream_through_serve_with_usage_in_the_access_log() {
    let mock = MockProvider::start().await.unwrap();
    let hf = serve(&models(&mock));
    let url = format!("{}/v1/chat/completions", hf.url);

    let (status, body, _) = post(
        &url,
        json!({"model": "fast",
        "messages": [{"role": "user", "content": "hi there"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from openai: hi there"
    );
    let rec = hf.next_ai_record();
    assert_eq!(rec["ai"]["model_requested"], "fast");
    // The request body the handler read is counted, as on upstream routes.
    let sent = json!({"model": "fast",
        "messages": [{"role": "user", "content": "hi there"}]})
    .to_string()
    .len() as u64;
    assert_eq!(rec["bytes_in"].as_u64(), Some(sent), "{rec}");
    assert_eq!(rec["ai"]["input_tokens"], 7);
    assert_eq!(rec["ai"]["output_tokens"], 5);
    assert!(rec["ai"]["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(rec["ai"]["outcome"], "ok");

    let (status, body, broken) = post(
        &url,
        json!({"model": "claude", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "stream it"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!broken);
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let rec = hf.next_ai_record();
    assert_eq!(rec["ai"]["deployment"], "anthropic/claude-3-5-haiku");
    assert_eq!(rec["ai"]["output_tokens"], 5);
}

#[tokio::test]
async fn failover_and_mid_stream_failure_through_serve() {
    let mock = MockProvider::start().await.unwrap();
    let hf = serve(&models(&mock));
    let url = format!("{}/v1/chat/completions", hf.url);

    // Two 500s on the OpenAI deployment: the fallback model answers.
    mock.push([Behavior::ServerError, Behavior::ServerError]);
    let (status, body, _) = post(
        &url,
        json!({"model": "fast",
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello from anthropic: hi"), "{body}");
    let rec = hf.next_ai_record();
    assert_eq!(rec["ai"]["attempts"], 3);

    // A stream that breaks after bytes reached the client: error event, no [DONE].
    mock.push([Behavior::ResetMidStream { after_chunks: 3 }]);
    let (status, body, broken) = post(
        &url,
        json!({"model": "fast", "stream": true,
        "messages": [{"role": "user", "content": "break"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("Hello"), "{body}");
    assert!(body.contains("event: error"), "{body}");
    assert!(!body.contains("[DONE]"), "{body}");
    assert!(broken, "the body must not end cleanly");
    let rec = hf.next_ai_record();
    assert_eq!(rec["ai"]["outcome"], "stream_broken");
    assert_eq!(rec["reset_class"], "upstream_reset_mid_response");
}

/// The provider's time is the record's `upstream_ms`, not gateway overhead: a provider that
/// takes 300 ms before answering shows as at least 300 ms upstream, streamed or not, with
/// `total_ms - upstream_ms` (the gateway's own share) well below it.
#[tokio::test]
async fn provider_latency_is_upstream_time_in_the_call_record() {
    let mock = MockProvider::start().await.unwrap();
    let hf = serve(&models(&mock));
    let url = format!("{}/v1/chat/completions", hf.url);
    let slow = Duration::from_millis(300);
    for stream in [false, true] {
        mock.push([Behavior::SlowFirstToken(slow)]);
        let (status, body, _) = post(
            &url,
            json!({"model": "fast", "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let rec = hf.next_ai_record();
        let total = rec["total_ms"].as_f64().unwrap();
        let upstream = rec["upstream_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("stream {stream}: no upstream_ms: {rec}"));
        assert!(
            upstream >= 300.0 && upstream <= total,
            "stream {stream}: {rec}"
        );
        assert!(total - upstream < 150.0, "stream {stream}: overhead: {rec}");
    }
}
