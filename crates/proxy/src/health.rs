//! Active health checks: HTTP (`GET path`, 2xx/3xx healthy) or TCP connect, at an interval,
//! with healthy/unhealthy thresholds. A checker stops when its pool is replaced (reload).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use holdfast_core::config::Target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dial::Dialer;
use crate::forward::UpstreamRt;

/// Start the checker of `up`, if it has one. Each round probes every target at once (each
/// probe bounded by the check's timeout), so a target that hangs delays no other's check.
pub fn spawn(up: &Arc<UpstreamRt>) {
    let Some(check) = up.balancer.upstream.health_check.clone() else {
        return;
    };
    let check = Arc::new(check);
    let weak: Weak<UpstreamRt> = Arc::downgrade(up);
    tokio::spawn(async move {
        let n = weak
            .upgrade()
            .map(|u| u.balancer.targets.len())
            .unwrap_or(0);
        let mut ok_streak = vec![0u32; n];
        let mut fail_streak = vec![0u32; n];
        let mut ticker = tokio::time::interval(check.interval);
        // A round that took longer than the interval (a hanging target) is not made up for
        // with a burst of rounds.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut round = tokio::task::JoinSet::new();
        loop {
            ticker.tick().await;
            let Some(up) = weak.upgrade() else { return };
            for i in 0..up.balancer.targets.len() {
                let up = up.clone();
                let check = check.clone();
                round.spawn(async move {
                    let spec = &up.balancer.upstream.targets[i];
                    let ok = probe(
                        up.conns.dialer(),
                        spec,
                        check.http_path.as_deref(),
                        check.timeout,
                    )
                    .await;
                    (i, ok)
                });
            }
            drop(up);
            while let Some(done) = round.join_next().await {
                let Ok((i, ok)) = done else { continue };
                // The pool may be gone meanwhile (a reload): its verdicts no longer matter.
                let Some(up) = weak.upgrade() else { return };
                let t = &up.balancer.targets[i];
                if ok {
                    ok_streak[i] += 1;
                    fail_streak[i] = 0;
                    if ok_streak[i] >= check.healthy_threshold {
                        t.active_healthy.store(true, Ordering::Relaxed);
                    }
                } else {
                    fail_streak[i] += 1;
                    ok_streak[i] = 0;
                    if fail_streak[i] >= check.unhealthy_threshold {
                        t.active_healthy.store(false, Ordering::Relaxed);
                    }
                }
            }
        }
    });
}

/// One probe, bounded by `timeout`.
pub async fn probe(
    dialer: &Dialer,
    target: &Target,
    http_path: Option<&str>,
    timeout: Duration,
) -> bool {
    let authority = &target.authority;
    let attempt = async {
        let mut stream = dialer.dial(target, timeout).await.ok()?;
        let Some(path) = http_path else {
            return Some(true);
        };
        if dialer.http2() {
            return probe_http2(stream, target, path).await;
        }
        let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: holdfast-health\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.ok()?;
        // Read the head, then the announced body, so closing leaves nothing unread (a close
        // with unread bytes would reset the upstream); servers may ignore `Connection: close`.
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            if buf.len() > 64 * 1024 {
                return Some(false);
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return Some(false);
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let code: u16 = head.get(9..12)?.parse().ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
            .min(64 * 1024);
        let mut have = buf.len() - head_end;
        while have < length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            have += n;
        }
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// An HTTP/2 health probe on a dialed connection: `GET path`, 2xx/3xx healthy.
async fn probe_http2(stream: crate::dial::UpstreamIo, target: &Target, path: &str) -> Option<bool> {
    use http_body_util::BodyExt;
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(
                stream,
            ))
            .await
            .ok()?;
    let driver = tokio::spawn(conn);
    let scheme = if target.tls { "https" } else { "http" };
    let req = http::Request::get(format!("{scheme}://{}{path}", target.authority))
        .header(http::header::USER_AGENT, "holdfast-health")
        .body(http_body_util::Empty::new())
        .ok()?;
    let resp = sender.send_request(req).await.ok();
    let healthy = match resp {
        Some(resp) => {
            let code = resp.status().as_u16();
            // Read the body so the stream ends cleanly.
            let _ = resp.into_body().collect().await;
            (200..400).contains(&code)
        }
        None => false,
    };
    drop(sender);
    driver.abort();
    Some(healthy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_core::config::{Upstream, UpstreamProtocol};

    /// An h2c server: `/ok` answers 200, anything else 503.
    async fn h2c_server() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        |req: http::Request<hyper::body::Incoming>| async move {
                            let status = if req.uri().path() == "/ok" { 200 } else { 503 };
                            let mut resp =
                                http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_hanging_target_does_not_delay_the_checks_of_the_others() {
        use holdfast_core::config::upstream::HealthCheck;
        // Target 0 accepts and never answers; target 1 answers every check 503.
        let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hang_addr = hang.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = hang.accept().await {
                held.push(s);
            }
        });
        let bad = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bad_addr = bad.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = bad.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        let targets = vec![
            Target::plain(&hang_addr.to_string()),
            Target::plain(&bad_addr.to_string()),
        ];
        let mut config = Upstream::with_defaults("p", targets);
        config.health_check = Some(HealthCheck {
            http_path: Some("/health".into()),
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        });
        let up = Arc::new(UpstreamRt::new(config).unwrap());
        spawn(&up);
        let started = std::time::Instant::now();
        while up.balancer.targets[1]
            .active_healthy
            .load(Ordering::Relaxed)
        {
            // One after another, the 503 target was checked only once the hanging one's probe
            // had timed out (5 s).
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "the failing target's check waited for the hanging one"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The hanging target's own probe is still running (it fails at its timeout).
        assert!(up.balancer.targets[0]
            .active_healthy
            .load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn http2_pools_are_probed_over_http2() {
        let addr = h2c_server().await;
        let target = Target::plain(&addr.to_string());
        let mut up = Upstream::with_defaults("p", vec![target.clone()]);
        up.protocol = UpstreamProtocol::Http2;
        let h2 = Dialer::new(&up).unwrap();
        let t = Duration::from_secs(2);
        assert!(probe(&h2, &target, Some("/ok"), t).await);
        assert!(!probe(&h2, &target, Some("/bad"), t).await);
        // An HTTP/1.1 probe of the same h2c-only server fails: the protocol matters.
        assert!(!probe(&Dialer::plain(), &target, Some("/ok"), t).await);
    }
}
