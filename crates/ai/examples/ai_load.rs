//! A small HTTP load generator for `bench/ai.sh`: POSTs one chat completion body to a URL.
//!
//! `ai_load URL --rate N --secs S [--conns C] [--model M]`: open loop at N requests/s;
//! latency is measured from each request's scheduled send time (no coordinated omission).
//! `ai_load URL --closed C --secs S`: C workers back to back (maximum throughput).
//! Prints one JSON line: sent, ok, errors, achieved rps, p50/p90/p99/max in ms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

struct Args {
    url: String,
    rate: Option<u64>,
    closed: Option<u64>,
    secs: u64,
    conns: usize,
    model: String,
    key: String,
}

fn parse() -> Args {
    let mut a = Args {
        url: String::new(),
        rate: None,
        closed: None,
        secs: 10,
        conns: 256,
        model: "bench".into(),
        key: "sk-bench".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = || it.next().unwrap_or_default();
        match x.as_str() {
            "--rate" => a.rate = val().parse().ok(),
            "--closed" => a.closed = val().parse().ok(),
            "--secs" => a.secs = val().parse().unwrap_or(10),
            "--conns" => a.conns = val().parse().unwrap_or(256),
            "--model" => a.model = val(),
            "--key" => a.key = val(),
            _ => a.url = x,
        }
    }
    if a.url.is_empty() || (a.rate.is_none() && a.closed.is_none()) {
        eprintln!("usage: ai_load URL (--rate N | --closed C) [--secs S] [--conns C] [--model M]");
        std::process::exit(2);
    }
    a
}

#[tokio::main]
async fn main() {
    let args = parse();
    let body = Bytes::from(
        serde_json::json!({"model": args.model, "max_tokens": 16,
            "messages": [{"role": "user", "content": "Say hello in five words."}]})
        .to_string(),
    );
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.conns)
        .build_http();
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let inflight = Arc::new(tokio::sync::Semaphore::new(args.conns));
    let start = Instant::now();
    let end = start + Duration::from_secs(args.secs);

    let one = {
        let (client, url, body, key) = (
            client.clone(),
            args.url.clone(),
            body.clone(),
            args.key.clone(),
        );
        let (hist, ok, errors) = (hist.clone(), ok.clone(), errors.clone());
        move |scheduled: Instant| {
            let (client, url, body, key) = (client.clone(), url.clone(), body.clone(), key.clone());
            let (hist, ok, errors) = (hist.clone(), ok.clone(), errors.clone());
            async move {
                let req = http::Request::post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {key}"))
                    .body(Full::new(body))
                    .unwrap();
                let good = match tokio::time::timeout(Duration::from_secs(30), client.request(req))
                    .await
                {
                    Ok(Ok(resp)) => {
                        let status = resp.status();
                        resp.into_body().collect().await.is_ok() && status.is_success()
                    }
                    _ => false,
                };
                if good {
                    ok.fetch_add(1, Ordering::Relaxed);
                    let us = scheduled.elapsed().as_micros() as u64;
                    hist.lock().unwrap().record(us.max(1)).ok();
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };

    if let Some(rate) = args.rate {
        let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
        let mut next = start;
        let mut tasks = Vec::new();
        while next < end {
            tokio::time::sleep_until(next.into()).await;
            let permit = match inflight.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    // More than `conns` outstanding: the target cannot keep up; count it.
                    errors.fetch_add(1, Ordering::Relaxed);
                    next += interval;
                    continue;
                }
            };
            sent.fetch_add(1, Ordering::Relaxed);
            let f = one(next);
            tasks.push(tokio::spawn(async move {
                f.await;
                drop(permit);
            }));
            next += interval;
        }
        for t in tasks {
            let _ = t.await;
        }
    } else if let Some(c) = args.closed {
        let mut workers = Vec::new();
        for _ in 0..c {
            let one = one.clone();
            let sent = sent.clone();
            workers.push(tokio::spawn(async move {
                while Instant::now() < end {
                    sent.fetch_add(1, Ordering::Relaxed);
                    one(Instant::now()).await;
                }
            }));
        }
        for w in workers {
            let _ = w.await;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let h = hist.lock().unwrap();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "sent": sent.load(Ordering::Relaxed), "ok": ok.load(Ordering::Relaxed),
            "errors": errors.load(Ordering::Relaxed),
            "rps": (ok.load(Ordering::Relaxed) as f64 / elapsed * 10.0).round() / 10.0,
            "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "max_ms": h.max() as f64 / 1000.0,
        })
    );
}
