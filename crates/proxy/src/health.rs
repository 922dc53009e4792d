//! Active health checks: HTTP (`GET path`, 2xx/3xx healthy) or TCP connect, at an interval,
//! with healthy/unhealthy thresholds. A checker stops when its pool is replaced (reload).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use holdfast_core::config::Target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dial::Dialer;
use crate::forward::UpstreamRt;

/// Start the checker of `up`, if it has one.
pub fn spawn(up: &Arc<UpstreamRt>) {
    let Some(check) = up.balancer.upstream.health_check.clone() else {
        return;
    };
    let weak: Weak<UpstreamRt> = Arc::downgrade(up);
    tokio::spawn(async move {
        let n = weak
            .upgrade()
            .map(|u| u.balancer.targets.len())
            .unwrap_or(0);
        let mut ok_streak = vec![0u32; n];
        let mut fail_streak = vec![0u32; n];
        let mut ticker = tokio::time::interval(check.interval);
        loop {
            ticker.tick().await;
            let Some(up) = weak.upgrade() else { return };
            for (i, t) in up.balancer.targets.iter().enumerate() {
                let spec = &up.balancer.upstream.targets[i];
                let ok = probe(
                    up.conns.dialer(),
                    spec,
                    check.http_path.as_deref(),
                    check.timeout,
                )
                .await;
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
