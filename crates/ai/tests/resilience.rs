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

/// Model `m` with three ordered deployments `a` (OpenAI), `b` (Anthropic), `c` (Gemini).
async fn three(a: &MockProvider, b: &MockProvider, c: &MockProvider, extra: &str) -> Gateway {
    let cfg = format!(
        "{extra}\n[models.m]\n\
         [[models.m.deployments]]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\nname = \"a\"\nbase_url = \"{}/v1\"\n\
         [[models.m.deployments]]\nprovider = \"anthropic\"\nmodel = \"claude-3-5-haiku\"\nname = \"b\"\nbase_url = \"{}\"\n\
         [[models.m.deployments]]\nprovider = \"gemini\"\nmodel = \"gemini-1.5-flash\"\nname = \"c\"\nbase_url = \"{}\"\n",
        a.url(),
        b.url(),
        c.url()
    );
    start(&cfg).await
}

/// Three models chained by `fallbacks`, one deployment each (the shape of the example's
/// `smart`).
async fn chained(a: &MockProvider, b: &MockProvider, c: &MockProvider, extra: &str) -> Gateway {
    let cfg = format!(
        "{extra}\n{}{}{}",
        model("m", "openai", "gpt-4o-mini", &format!("{}/v1", a.url())).replace(
            "[models.m]\n",
            "[models.m]\nfallbacks = [\"second\", \"third\"]\n"
        ),
        model("second", "anthropic", "claude-3-5-haiku", &b.url()),
        model("third", "gemini", "gemini-1.5-flash", &c.url()),
    );
    start(&cfg).await
}

fn failures(kind: &str) -> Vec<Behavior> {
    let one = match kind {
        "5xx" => Behavior::ServerError,
        "503" => Behavior::Status(503),
        "reset" => Behavior::ResetBeforeResponse,
        _ => Behavior::SlowFirstToken(Duration::from_secs(3)),
    };
    vec![one; 4]
}

#[tokio::test]
async fn a_chain_of_three_reaches_the_third_when_the_first_two_fail() {
    for shape in ["deployments", "fallbacks"] {
        for (fa, fb) in [("5xx", "503"), ("reset", "5xx"), ("timeout", "reset")] {
            for stream in [false, true] {
                let (a, b, c) = (
                    MockProvider::start().await.unwrap(),
                    MockProvider::start().await.unwrap(),
                    MockProvider::start().await.unwrap(),
                );
                a.push(failures(fa));
                b.push(failures(fb));
                // Default max_attempts (4); short timeouts so the test is quick.
                let extra = "retry_backoff_ms = 10\ntotal_timeout_ms = 300\nttft_timeout_ms = 300";
                let gw = if shape == "deployments" {
                    three(&a, &b, &c, extra).await
                } else {
                    chained(&a, &b, &c, extra).await
                };
                let what = format!("{shape}, {fa}/{fb}, stream={stream}");
                let r = post(&gw, "/v1/chat/completions", chat(stream)).await;
                assert_eq!(r.status, 200, "{what}: {}", r.body);
                assert!(!r.broken, "{what}");
                assert!(r.body.contains("gemini"), "{what}: {}", r.body);
                assert_eq!(c.request_count(), 1, "{what}");
                let ai = gw.last_extra().await.ai.unwrap();
                assert!(ai.attempts <= 4, "{what}: {} attempts", ai.attempts);
                assert_eq!(ai.outcome, "ok", "{what}");
            }
        }
    }
}

#[tokio::test]
async fn every_model_of_the_chain_gets_a_try_even_past_max_attempts() {
    let (a, b, c) = (
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
    );
    a.push(failures("5xx"));
    b.push(failures("5xx"));
    let gw = chained(&a, &b, &c, "max_attempts = 1").await;
    let r = post(&gw, "/v1/chat/completions", chat(false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // No retries of the same deployment with max_attempts = 1, but each model one try.
    assert_eq!(
        (a.request_count(), b.request_count(), c.request_count()),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn provider_auth_failures_fall_back_without_asking_again() {
    for status in [401, 403] {
        for stream in [false, true] {
            let (a, b) = (
                MockProvider::start().await.unwrap(),
                MockProvider::start().await.unwrap(),
            );
            a.push([Behavior::Status(status), Behavior::Status(status)]);
            let gw = two(&a, &b, "retry_backoff_ms = 10").await;
            let r = post(&gw, "/v1/chat/completions", chat(stream)).await;
            assert_eq!(r.status, 200, "{status} stream={stream}: {}", r.body);
            assert_eq!(r.headers["x-holdfast-deployment"], "b");
            assert_eq!(
                (a.request_count(), b.request_count()),
                (1, 1),
                "{status}: the refused key is not tried twice"
            );
        }
    }
    // With nothing to fall back to, the client still gets a 502 naming the cause.
    let a = MockProvider::start().await.unwrap();
    a.push([Behavior::Status(401)]);
    let gw = start(&model(
        "m",
        "openai",
        "gpt-4o-mini",
        &format!("{}/v1", a.url()),
    ))
    .await;
    let r = post(&gw, "/v1/chat/completions", chat(false)).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    assert_eq!(a.request_count(), 1);
}

fn retry_after_secs(r: &Reply) -> u64 {
    r.headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After on {}: {}", r.status, r.body))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn gemini_retry_info_gives_retry_after_and_cooling_429s_stay_429() {
    let g = MockProvider::start().await.unwrap();
    g.push([
        Behavior::RateLimitedRetryInfo {
            retry_delay: "30s".into(),
        },
        Behavior::RateLimitedRetryInfo {
            retry_delay: "30s".into(),
        },
    ]);
    let gw = start(&model("m", "gemini", "gemini-1.5-flash", &g.url())).await;
    let r = post(&gw, "/v1/chat/completions", chat(false)).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!((25..=30).contains(&retry_after_secs(&r)), "{:?}", r.headers);
    assert_eq!(g.request_count(), 1, "a 30 s wait is not waited for");
    // The deployment now cools down for the 30 s Gemini asked for: the next call is still a
    // 429 with the time left, not a 503, and reaches no provider.
    let r = post(&gw, "/v1/chat/completions", chat(true)).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert!((25..=30).contains(&retry_after_secs(&r)), "{:?}", r.headers);
    assert_eq!(g.request_count(), 1);
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let a = MockProvider::start().await.unwrap();
    let at = std::time::SystemTime::now() + Duration::from_secs(40);
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    a.push([Behavior::RateLimitedRaw {
        retry_after: Some(http_date(secs)),
    }]);
    let gw = start(&model(
        "m",
        "openai",
        "gpt-4o-mini",
        &format!("{}/v1", a.url()),
    ))
    .await;
    let r = post(&gw, "/v1/chat/completions", chat(false)).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!((35..=41).contains(&retry_after_secs(&r)), "{:?}", r.headers);
    assert_eq!(a.request_count(), 1, "not retried after 100 ms");
}

#[tokio::test]
async fn a_429_without_any_delay_still_carries_retry_after() {
    let a = MockProvider::start().await.unwrap();
    a.push(vec![Behavior::RateLimitedRaw { retry_after: None }; 2]);
    let gw = start(&format!(
        "retry_backoff_ms = 10\n{}",
        model("m", "openai", "gpt-4o-mini", &format!("{}/v1", a.url()))
    ))
    .await;
    let r = post(&gw, "/v1/chat/completions", chat(false)).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(retry_after_secs(&r), 1);
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for seconds since the epoch.
fn http_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_recorded_and_the_provider_let_go() {
    let a = MockProvider::start().await.unwrap();
    a.push([Behavior::Stall { after_chunks: 3 }]);
    let gw = start(&format!(
        "idle_timeout_ms = 20000\n{}",
        model("m", "openai", "gpt-4o-mini", &format!("{}/v1", a.url()))
    ))
    .await;
    // Read the first bytes of the stream, then hang up.
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::post("/v1/chat/completions")
        .header("host", gw.addr.to_string())
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            chat(true).to_string(),
        )))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = http_body_util::BodyExt::frame(&mut body)
        .await
        .unwrap()
        .unwrap();
    assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
    let left = Instant::now();
    drop(body);
    drop(sender);
    conn.abort();

    // The gateway lets the provider go at once, not after the 20 s idle timeout.
    while a.stalls_closed() == 0 {
        assert!(
            left.elapsed() < Duration::from_secs(3),
            "the provider's stream is still read after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let extra = gw.last_extra().await;
    let ai = extra.ai.unwrap();
    assert_eq!(ai.outcome, "client_aborted");
    assert_eq!(ai.deployment.as_deref(), Some("openai/gpt-4o-mini"));
    assert_eq!(ai.attempts, 1);
    assert!(ai.input_tokens > 0 && ai.output_tokens > 0, "{ai:?}");
    assert!(ai.tokens_estimated);
    assert!(ai.cost_usd > 0.0);
    assert_eq!(extra.reset_class, Some(ResetClass::ClientAborted));
}

#[tokio::test]
async fn a_stream_whose_client_left_is_already_recorded_as_aborted() {
    // The data plane writes the call record the moment the client's side of the body is
    // dropped: the record must already say what happened, before the stream task notices.
    let a = MockProvider::start().await.unwrap();
    a.push([Behavior::Stall { after_chunks: 3 }]);
    let h = handler(&format!(
        "idle_timeout_ms = 20000\n{}",
        model("m", "openai", "gpt-4o-mini", &format!("{}/v1", a.url()))
    ));
    let (ctx, extra) = context();
    let resp = h
        .handle(request("/v1/chat/completions", &chat(true)), ctx)
        .await;
    let mut body = resp.into_body();
    let first = http_body_util::BodyExt::frame(&mut body)
        .await
        .unwrap()
        .unwrap();
    assert!(first.data_ref().is_some());
    // Give the task time to send what it got (the mock sent 3 frames).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = extra.lock().unwrap().clone();
    let ai = seen.ai.unwrap();
    assert_eq!(ai.outcome, "client_aborted", "{ai:?}");
    assert_eq!(ai.deployment.as_deref(), Some("openai/gpt-4o-mini"));
    assert_eq!(ai.attempts, 1);
    assert!(ai.input_tokens > 0, "{ai:?}");
    assert!(ai.output_tokens > 0, "{ai:?}");
    drop(body);
}

#[tokio::test]
async fn dropping_a_non_streaming_call_stops_its_retries_and_records_it() {
    let (a, b) = (
        MockProvider::start().await.unwrap(),
        MockProvider::start().await.unwrap(),
    );
    a.push([Behavior::SlowFirstToken(Duration::from_secs(5))]);
    let h = handler(&format!(
        "total_timeout_ms = 400\nretry_backoff_ms = 10\n\
         [models.m]\n\
         [[models.m.deployments]]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\nname = \"a\"\nbase_url = \"{}/v1\"\n\
         [[models.m.deployments]]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\nname = \"b\"\nbase_url = \"{}/v1\"\n",
        a.url(),
        b.url()
    ));
    let (ctx, extra) = context();
    let call = tokio::spawn(h.handle(request("/v1/chat/completions", &chat(false)), ctx));
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The client went away: the data plane drops the handler future.
    call.abort();
    let _ = call.await;
    // Without the drop, `a` would time out at 400 ms and `b` would be asked.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!((a.request_count(), b.request_count()), (1, 0));
    let seen = extra.lock().unwrap().clone();
    let ai = seen.ai.unwrap();
    assert_eq!(ai.outcome, "client_aborted");
    assert_eq!(ai.attempts, 1);
    assert_eq!(ai.deployment.as_deref(), Some("a"));
    assert_eq!(seen.reset_class, Some(ResetClass::ClientAborted));
}

#[tokio::test]
async fn total_timeout_reports_the_configured_limit() {
    use holdfast_mock_providers::MockOptions;
    let a = MockProvider::start_with(
        "127.0.0.1:0",
        MockOptions {
            chunk_delay: Duration::from_millis(150),
            ..MockOptions::default()
        },
        true,
    )
    .await
    .unwrap();
    let gw = start(&format!(
        "total_timeout_ms = 500\n{}",
        model("m", "openai", "gpt-4o-mini", &format!("{}/v1", a.url()))
    ))
    .await;
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m", "stream": true,
            "messages": [{"role": "user", "content": "one two three four five six seven"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let (event, data) = r.events().last().unwrap().clone();
    assert_eq!(event, "error", "{}", r.body);
    assert!(
        data.contains("the whole stream took longer than 500 ms"),
        "{data}"
    );
}
