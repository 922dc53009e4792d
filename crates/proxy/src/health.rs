//! Active health checks: HTTP (`GET path`, 2xx/3xx healthy) or TCP connect, at an interval,
//! with healthy/unhealthy thresholds. A checker stops when its pool is replaced (reload).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
                let ok = probe(&t.authority, check.http_path.as_deref(), check.timeout).await;
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
pub async fn probe(authority: &str, http_path: Option<&str>, timeout: Duration) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(authority).await.ok()?;
        let Some(path) = http_path else {
            return Some(true);
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: holdfast-health\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 16];
        let mut got = 0;
        while got < 12 {
            let n = stream.read(&mut buf[got..]).await.ok()?;
            if n == 0 {
                break;
            }
            got += n;
        }
        // Read to the end so closing does not reset the connection.
        let mut sink = [0u8; 4096];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        let line = std::str::from_utf8(&buf[..got]).ok()?;
        let code: u16 = line.get(9..12)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}
