//! Routes served by a handler (the AI gateway) get the server's request-body limits like
//! proxied routes: a body over `max_body_bytes` is a `413`, a body that stalls for
//! `body_timeout_ms` a `408`, and a body within them is served.

mod proxy_support;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use holdfast_mock_providers::MockProvider;
use proxy_support::{read_answer, Holdfast};

fn config(mock: &MockProvider) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nmax_body_bytes = 2000\nbody_timeout_ms = 500\n\n\
         [[routes]]\nname = \"ai\"\npath_prefix = \"/v1\"\nhandler = \"ai\"\n\n\
         [ai]\n[ai.models.fast]\n[[ai.models.fast.deployments]]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\nbase_url = \"{}/v1\"\n",
        mock.url()
    )
}

fn chat(content: &str) -> String {
    serde_json::json!({"model": "fast", "messages": [{"role": "user", "content": content}]})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_routes_get_the_servers_body_limits() {
    let mock = MockProvider::start().await.unwrap();
    let hf = Holdfast::start(&config(&mock));
    let addr = hf.addr;
    tokio::task::spawn_blocking(move || {
        let post = |body: &str, chunked: bool| {
            let mut client = proxy_support::Client::new(addr);
            let headers: &[(&str, &str)] = if chunked {
                &[("content-type", "application/json"), ("transfer-encoding", "chunked")]
            } else {
                &[("content-type", "application/json")]
            };
            client.request("POST", "/v1/chat/completions", headers, body.as_bytes())
        };
        let small = post(&chat("hello"), false).expect("an answer");
        assert_eq!(small.status, 200, "{}", small.text());
        let big = post(&chat(&"x".repeat(5000)), false).expect("an answer");
        assert_eq!(big.status, 413, "{}", big.text());

        // A body that stops coming: 408 after body_timeout_ms, not a wait for ever.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":")
            .unwrap();
        let started = Instant::now();
        let answer = read_answer(&mut BufReader::new(s), false).expect("an answer");
        assert_eq!(answer.status, 408, "{}", answer.text());
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await
    .unwrap();
    let records = hf.records_eventually(3);
    let statuses: Vec<u64> = records
        .iter()
        .filter_map(|r| r["status"].as_u64())
        .collect();
    assert_eq!(statuses, [200, 413, 408], "{records:?}");
}
