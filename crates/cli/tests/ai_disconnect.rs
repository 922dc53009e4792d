//! Clients that leave an AI call early, through the real binary (`holdfast serve`): the
//! access log must say `client_aborted` with the deployment, attempts and tokens so far, and
//! the provider's stream must be let go.

mod proxy_support;

use std::time::{Duration, Instant};

use holdfast_mock_providers::{Behavior, MockProvider};
use proxy_support::Holdfast;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `holdfast serve` with one `ai` route and the `[ai]` section `ai`, access log on stdout.
fn serve(ai: &str) -> Holdfast {
    Holdfast::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\naccess_log = \"stdout\"\n\n\
         [[routes]]\nname = \"ai\"\npath_prefix = \"/v1\"\nhandler = \"ai\"\n\n{ai}"
    ))
}

/// The first access-log record with AI usage, waiting up to `wait`.
fn next_ai_record(hf: &Holdfast, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some(r) = hf
            .records()
            .into_iter()
            .find(|v| v.get("ai").is_some_and(|a| !a.is_null()))
        {
            return Some(r);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Send a POST on a raw connection and return the socket once `want` bytes of the
/// response (head included) have arrived.
async fn start_call(addr: &str, body: Value, want: usize) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("response bytes")
            .unwrap();
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_is_logged_as_client_aborted() {
    let mock = MockProvider::start().await.unwrap();
    let hf = serve(&format!(
        "[ai]\nidle_timeout_ms = 20000\n\
         [ai.models.fast]\n[[ai.models.fast.deployments]]\nprovider = \"openai\"\n\
         model = \"gpt-4o-mini\"\nbase_url = \"{}/v1\"\n",
        mock.url()
    ));
    mock.push([Behavior::Stall { after_chunks: 3 }]);
    let s = start_call(
        &hf.addr.to_string(),
        json!({"model": "fast", "stream": true,
            "messages": [{"role": "user", "content": "tell me a long story"}]}),
        300,
    )
    .await;
    let left = Instant::now();
    drop(s);

    let rec = next_ai_record(&hf, Duration::from_secs(30)).expect("the call is logged");
    let ai = &rec["ai"];
    assert_eq!(ai["outcome"], "client_aborted", "{rec}");
    assert_eq!(ai["deployment"], "openai/gpt-4o-mini", "{rec}");
    assert_eq!(ai["attempts"], 1, "{rec}");
    assert!(ai["input_tokens"].as_u64().unwrap() > 0, "{rec}");
    assert!(ai["output_tokens"].as_u64().unwrap() > 0, "{rec}");
    assert_eq!(ai["tokens_estimated"], true, "{rec}");
    assert_eq!(rec["reset_class"], "client_aborted", "{rec}");
    eprintln!(
        "logged {:?} after the client left; provider closed: {}",
        left.elapsed(),
        mock.stalls_closed()
    );
    // The provider's stream was let go when the call ended, not at the 20 s idle timeout.
    let deadline = Instant::now() + Duration::from_secs(3);
    while mock.stalls_closed() == 0 {
        assert!(Instant::now() < deadline, "provider stream still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        left.elapsed() < Duration::from_secs(15),
        "took {:?}",
        left.elapsed()
    );
}

/// A non-streaming call whose client leaves during the first attempt. On HTTP/1.1 the data
/// plane does not watch the client's socket while the handler works (half-close is on), so
/// today it does not drop the handler future: the call goes on (failover included) and is
/// logged with its own outcome. Either way the record names its deployment and attempts;
/// if the future is dropped, nothing more may be tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_a_non_streaming_call_is_logged_with_its_attempts() {
    let (a, b) = (
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
    );
    let hf = serve(&format!(
        "[ai]\ntotal_timeout_ms = 1500\nretry_backoff_ms = 10\n\
         [ai.models.fast]\n\
         [[ai.models.fast.deployments]]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\nname = \"a\"\nbase_url = \"{}/v1\"\n\
         [[ai.models.fast.deployments]]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\nname = \"b\"\nbase_url = \"{}/v1\"\n",
        a.url(),
        b.url()
    ));
    a.push([
        Behavior::SlowFirstToken(Duration::from_secs(5)),
        Behavior::SlowFirstToken(Duration::from_secs(5)),
    ]);
    let s = start_call(
        &hf.addr.to_string(),
        json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}),
        0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left = Instant::now();
    drop(s);
    let rec = next_ai_record(&hf, Duration::from_secs(30)).expect("the call is logged");
    eprintln!(
        "non-streaming: logged after {:?}: status {} outcome {} attempts {} deployment {}; \
         provider requests a={} b={}",
        left.elapsed(),
        rec["status"],
        rec["ai"]["outcome"],
        rec["ai"]["attempts"],
        rec["ai"]["deployment"],
        a.request_count(),
        b.request_count()
    );
    // Whatever the data plane does, the record names the call's deployment and attempts.
    assert!(rec["ai"]["attempts"].as_u64().unwrap() >= 1, "{rec}");
    assert!(rec["ai"]["deployment"].is_string(), "{rec}");
    if rec["ai"]["outcome"] == "client_aborted" {
        // The handler future was dropped: nothing more was tried.
        assert_eq!(b.request_count(), 0, "{rec}");
    }
}
