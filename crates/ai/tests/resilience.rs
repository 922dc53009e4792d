//! Retries, fallbacks, cooldown, timeouts and the mid-stream failure rule, through the `ai`
//! handler against mock providers told to fail.

mod common;

use std::time::{Duration, Instant};

use common::*;
use holdfast_core::ResetClass;
use holdfast_mock_providers::{Behavior, MockProvider};
use serde_json::json;

/// Model `m` with deployments on `a` then `b` (ordered), both OpenAI-format.
async fn two(a: &MockProvider, b: &MockProvider, extra: &str) -> Gateway {
    let cfg = format!(
        "{extra}\n[models.m]\n\
         [[models.m.deployments]]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\nname = \"a\"\nbase_url = \"{}/v1\"\n\
         [[models.m.deployments]]\nprovider = \"anthropic\"\nmodel = \"claude-3-5-haiku\"\nname = \"b\"\nbase_url = \"{}\"\n",
        a.url(),
        b.url()
    );
    start(&cfg).await
}

fn chat(stream: bool) -> serde_json::Value {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn server_errors_retry_then_fall_back_to_next_deployment() {
    let (a, b) = (
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
    );
    a.push([Behavior::ServerError, Behavior::ServerError]);
    let gw = two(&a, &b, "retry_backoff_ms = 10").await;
    let r = post(&gw, "/v1/chat/completions", chat(false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from anthropic: hi"
    );
    assert_eq!(r.headers["x-holdfast-deployment"], "b");
    assert_eq!((a.request_count(), b.request_count()), (2, 1));
    let ai = gw.last_extra().await.ai.unwrap();
    assert_eq!(ai.attempts, 3);
    assert_eq!(ai.deployment.as_deref(), Some("b"));
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let (a, b) = (
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
    );
    a.push([Behavior::RateLimited {
        retry_after_secs: 1,
    }]);
    let gw = two(&a, &b, "").await;
    let t = Instant::now();
    let r = post(&gw, "/v1/chat/completions", chat(false)).await;
    assert_eq!(r.status, 200);
    // Retried on the same deployment after the Retry-After wait.
    assert_eq!((a.request_count(), b.request_count()), (2, 0));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "waited {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn long_retry_after_moves_on_and_all_limited_gives_429() {
    let (a, b) = (
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
    );
    a.push([Behavior::RateLimited {
        retry_after_secs: 30,
    }]);
    let gw = two(&a, &b, "").await;
    let r = post(&gw, "/v1/chat/completions", chat(false)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (a.request_count(), b.request_count()),
        (1, 1),
        "no 30 s wait: next deployment"
    );
    // `a` is now cooling down for the 30 s it asked for; make `b` limited too.
    b.push([Behavior::RateLimited {
        retry_after_secs: 20,
    }]);
    let r = post(&gw, "/v1/chat/completions", chat(false)).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((15..=30).contains(&secs), "retry-after {secs}");
    assert_eq!(a.request_count(), 1, "cooling deployment not tried");
}

#[tokio::test]
async fn resets_before_response_are_retried() {
    for stream in [false, true] {
        let (a, b) = (
            MockProvider::start().await.unwrap(),
            MockProvider::start().await.unwrap(),
        );
        a.push([Behavior::ResetBeforeResponse]);
        let gw = two(&a, &b, "retry_backoff_ms = 10").await;
        let r = post(&gw, "/v1/chat/completions", chat(stream)).await;
        assert_eq!(r.status, 200, "stream={stream}: {}", r.body);
        assert!(!r.broken);
        assert_eq!(
            (a.request_count(), b.request_count()),
            (2, 0),
            "stream={stream}"
        );
    }
}

#[tokio::test]
async fn cooldown_skips_a_failing_deployment() {
    let (a, b) = (
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
    );
    a.push(std::iter::repeat_n(Behavior::ServerError, 10));
    let gw = two(
        &a,
        &b,
        "retry_backoff_ms = 10\ncooldown_failures = 2\ncooldown_ms = 60000",
    )
    .await;
    let r = post(&gw, "/v1/chat/completions", chat(false)).await;
    assert_eq!(r.status, 200);
    assert_eq!(a.request_count(), 2);
    for _ in 0..3 {
        let r = post(&gw, "/v1/chat/completions", chat(false)).await;
        assert_eq!(r.status, 200);
        assert_eq!(gw.last_extra().await.ai.unwrap().attempts, 1);
    }
    assert_eq!(a.request_count(), 2, "cooling deployment got no traffic");
    assert_eq!(b.request_count(), 4);
}

#[tokio::test]
async fn fallback_model_when_every_deployment_fails() {
    let (a, b) = (
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
    );
    a.push(std::iter::repeat_n(Behavior::ServerError, 4));
    let cfg = format!(
        "retry_backoff_ms = 10\n{}{}",
        model("m", "openai", "gpt-4o-mini", &format!("{}/v1", a.url()))
            .replace("[models.m]\n", "[models.m]\nfallbacks = [\"backup\"]\n"),
        model("backup", "gemini", "gemini-1.5-flash", &b.url())
    );
    let gw = start(&cfg).await;
    let r = post(&gw, "/v1/chat/completions", chat(false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from gemini: hi"
    );
    assert_eq!(
        gw.last_extra().await.ai.unwrap().deployment.as_deref(),
        Some("gemini/gemini-1.5-flash")
    );
}

#[tokio::test]
async fn client_errors_are_not_retried_and_keep_their_status() {
    let (a, b) = (
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
    );
    a.push([Behavior::Status(400)]);
    let gw = two(&a, &b, "").await;
    let r = post(&gw, "/v1/chat/completions", chat(false)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("mock: status 400"));
    assert_eq!((a.request_count(), b.request_count()), (1, 0));
}

#[tokio::test]
async fn all_failing_gives_502_with_the_cause() {
    let (a, b) = (
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
    );
    a.push(std::iter::repeat_n(Behavior::ServerError, 5));
    b.push(std::iter::repeat_n(Behavior::ResetBeforeResponse, 5));
    let gw = two(&a, &b, "retry_backoff_ms = 10").await;
    let r = post(&gw, "/v1/chat/completions", chat(false)).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "upstream_reset");
    let extra = gw.last_extra().await;
    assert_eq!(extra.ai.unwrap().attempts, 4);
    assert_eq!(
        extra.reset_class,
        Some(ResetClass::UpstreamResetBeforeResponse)
    );
}

#[tokio::test]
async fn slow_first_token_fails_over_within_ttft_timeout() {
    let (a, b) = (
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
    );
    a.push([
        Behavior::SlowFirstToken(Duration::from_secs(5)),
        Behavior::SlowFirstToken(Duration::from_secs(5)),
    ]);
    let gw = two(&a, &b, "ttft_timeout_ms = 300\nretry_backoff_ms = 10").await;
    let t = Instant::now();
    let r = post(&gw, "/v1/chat/completions", chat(true)).await;
    assert_eq!(r.status, 200);
    assert!(r.chunks().1, "clean stream from the next deployment");
    assert_eq!(b.request_count(), 1);
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "did not wait for the slow provider"
    );
}

#[tokio::test]
async fn stream_broken_mid_way_ends_with_error_event_and_no_done() {
    let (a, b) = (
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
    );
    a.push([Behavior::ResetMidStream { after_chunks: 3 }]);
    let gw = two(&a, &b, "").await;
    let r = post(&gw, "/v1/chat/completions", chat(true)).await;
    assert_eq!(r.status, 200);
    let events = r.events();
    assert!(
        events.iter().any(|(_, d)| d.contains("Hello")),
        "content reached the client first"
    );
    let (last_event, last_data) = events.last().unwrap();
    assert_eq!(last_event, "error", "{}", r.body);
    assert!(last_data.contains("upstream_reset"));
    assert!(!r.body.contains("[DONE]"));
    assert!(r.broken, "the body ends abnormally");
    assert_eq!(
        b.request_count(),
        0,
        "no failover after bytes reached the client"
    );
    let extra = gw.last_extra().await;
    assert_eq!(extra.ai.as_ref().unwrap().outcome, "stream_broken");
    assert_eq!(
        extra.reset_class,
        Some(ResetClass::UpstreamResetMidResponse)
    );
}

#[tokio::test]
async fn stalled_stream_hits_idle_timeout() {
    let (a, b) = (
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
    );
    a.push([Behavior::Stall { after_chunks: 2 }]);
    let gw = two(&a, &b, "idle_timeout_ms = 300").await;
    let r = post(
        &gw,
        "/v1/messages",
        json!({"model": "m", "max_tokens": 10, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let events = r.events();
    let (last_event, last_data) = events.last().unwrap();
    assert_eq!(last_event, "error", "{}", r.body);
    assert!(last_data.contains("gap between two chunks"), "{last_data}");
    assert!(!events.iter().any(|(e, _)| e == "message_stop"));
    assert!(r.broken);
    let extra = gw.last_extra().await;
    assert_eq!(extra.reset_class, Some(ResetClass::UpstreamTimeout));
}

#[tokio::test]
async fn weighted_and_least_busy_spread_load() {
    let (a, b) = (
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
    );
    let cfg = format!(
        "[models.m]\nstrategy = \"weighted\"\n\
         [[models.m.deployments]]\nprovider = \"openai\"\nmodel = \"x\"\nweight = 3\nbase_url = \"{}/v1\"\n\
         [[models.m.deployments]]\nprovider = \"openai\"\nmodel = \"y\"\nweight = 1\nbase_url = \"{}/v1\"\n",
        a.url(),
        b.url()
    );
    let gw = start(&cfg).await;
    for _ in 0..80 {
        assert_eq!(
            post(&gw, "/v1/chat/completions", chat(false)).await.status,
            200
        );
    }
    let (na, nb) = (a.request_count(), b.request_count());
    assert_eq!(na + nb, 80);
    assert!(na > nb && nb >= 5, "weights 3:1 gave {na}:{nb}");
}

#[tokio::test]
async fn https_deployments_use_tls_and_report_handshake_failures() {
    // The mock speaks plain HTTP: a TLS handshake against it must fail cleanly (no panic,
    // no plaintext fallback) and the client gets a 502 naming the deployment.
    let a = MockProvider::start().await.unwrap();
    let url = format!("https://{}/v1", a.addr());
    let gw = start(&format!(
        "max_attempts = 1\n{}",
        model("m", "openai", "gpt-4o-mini", &url)
    ))
    .await;
    let r = post(&gw, "/v1/chat/completions", chat(false)).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("openai/gpt-4o-mini"));
}

#[tokio::test]
async fn non_streaming_total_timeout_fails_over() {
    let (a, b) = (
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
    );
    a.push([
        Behavior::SlowFirstToken(Duration::from_secs(5)),
        Behavior::SlowFirstToken(Duration::from_secs(5)),
    ]);
    let gw = two(&a, &b, "total_timeout_ms = 300\nretry_backoff_ms = 10").await;
    let r = post(&gw, "/v1/chat/completions", chat(false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["x-holdfast-deployment"], "b");
    let ai = gw.last_extra().await.ai.unwrap();
    assert_eq!(ai.attempts, 3);
}

#[tokio::test]
async fn lowest_latency_and_least_busy_prefer_the_faster_deployment() {
    use holdfast_mock_providers::MockOptions;
    for strategy in ["lowest_latency", "least_busy"] {
        let slow = MockProvider::start_with(
            "127.0.0.1:0",
            MockOptions {
                delay: Duration::from_millis(150),
                ..MockOptions::default()
            },
            true,
        )
        .await
        .unwrap();
        let fast = MockProvider::start().await.unwrap();
        let cfg = format!(
            "[models.m]\nstrategy = \"{strategy}\"\n\
             [[models.m.deployments]]\nprovider = \"openai\"\nmodel = \"x\"\nbase_url = \"{}/v1\"\n\
             [[models.m.deployments]]\nprovider = \"openai\"\nmodel = \"y\"\nbase_url = \"{}/v1\"\n",
            slow.url(),
            fast.url()
        );
        let gw = start(&cfg).await;
        // 8 clients, 5 requests each, back to back: requests to the slow deployment stay in
        // flight longer (least busy) and measure slower (lowest latency).
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let url = gw.url("/v1/chat/completions");
                tokio::spawn(async move {
                    for _ in 0..5 {
                        assert_eq!(send("POST", &url, Some(chat(false))).await.status, 200);
                    }
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
        let (ns, nf) = (slow.request_count(), fast.request_count());
        assert_eq!(ns + nf, 40);
        assert!(nf > 2 * ns, "{strategy}: fast {nf} vs slow {ns}");
    }
}
