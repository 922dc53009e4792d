//! Client-facing listeners: accept with a connection limit (excess connections get a 503 and a
//! FIN, never a reset), the first request head read under a deadline (408) and checked for
//! Content-Length/Transfer-Encoding ambiguity (400), then hyper (HTTP/1.1 and HTTP/2) serving
//! the gateway; graceful drain on shutdown.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::gateway::Gateway;
use crate::hygiene::Peer;
use crate::responses;

/// A stream with bytes already read in front of it.
struct Prefixed {
    prefix: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Limits read from the config at start (they need a restart to change).
#[derive(Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub client_idle_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Answer `raw` (a complete response), send a FIN, and read what the client still sends so
/// that closing does not turn into a reset.
async fn answer_and_close(mut stream: TcpStream, raw: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(raw).await;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Read the request head so far (up to `max` bytes) within `deadline`.
enum Head {
    Ready(Vec<u8>),
    Closed,
    TimedOut(bool),
}

async fn read_head(stream: &mut TcpStream, deadline: Duration, max: usize) -> Head {
    let mut buf = Vec::with_capacity(1024);
    let result = tokio::time::timeout(deadline, async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > max {
                return true;
            }
        }
    })
    .await;
    match result {
        Ok(true) => Head::Ready(buf),
        Ok(false) if buf.is_empty() => Head::Closed,
        Ok(false) => Head::Ready(buf),
        Err(_) => Head::TimedOut(!buf.is_empty()),
    }
}

/// True when the head has both Content-Length and Transfer-Encoding (request smuggling risk).
fn ambiguous_framing(head: &[u8]) -> bool {
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(head.len());
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    let mut cl = false;
    let mut te = false;
    for line in text.split("\r\n").skip(1) {
        let name = line.split(':').next().unwrap_or("").trim_end();
        cl |= name == "content-length";
        te |= name == "transfer-encoding";
    }
    cl && te
}

/// Serve `listeners` until `stop` turns true, then drain for up to `drain`.
pub async fn serve(
    listeners: Vec<TcpListener>,
    gateway: Arc<Gateway>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let active = Arc::new(AtomicUsize::new(0));
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel::<(TcpStream, SocketAddr)>(1024);
    for listener in listeners {
        let tx = conn_tx.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => { if tx.send(pair).await.is_err() { return; } }
                        // EMFILE and friends: back off instead of spinning.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    },
                }
            }
        });
    }
    drop(conn_tx);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.client_idle_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024);
    let builder = Arc::new(builder);
    loop {
        let (mut stream, client) = tokio::select! {
            _ = stop.changed() => break,
            next = conn_rx.recv() => match next { Some(p) => p, None => break },
        };
        let _ = stream.set_nodelay(true);
        if active.load(Ordering::Acquire) >= limits.max_connections {
            metrics::counter!("holdfast_rejected_connections_total").increment(1);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    let mut chunk = [0u8; 4096];
                    let _ = stream.read(&mut chunk).await;
                })
                .await;
                answer_and_close(stream, &responses::raw_overloaded()).await;
            });
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let gateway = gateway.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let active = active.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _count = CountGuard(active);
            let prefix = match read_head(
                &mut stream,
                limits.header_timeout,
                limits.max_header_bytes,
            )
            .await
            {
                Head::Ready(buf) => buf,
                Head::Closed | Head::TimedOut(false) => return,
                Head::TimedOut(true) => {
                    return answer_and_close(stream, &responses::raw_timeout()).await
                }
            };
            if ambiguous_framing(&prefix) {
                metrics::counter!("holdfast_failed_exchanges_total", "route" => "", "class" => "bad_request").increment(1);
                return answer_and_close(
                    stream,
                    &responses::raw_bad_request(
                        "the request has both Content-Length and Transfer-Encoding",
                    ),
                )
                .await;
            }
            let io = TokioIo::new(Prefixed {
                prefix: Bytes::from(prefix),
                stream,
            });
            let peer = Arc::new(Peer::new(client));
            let service = service_fn(move |req| {
                let gateway = gateway.clone();
                let peer = peer.clone();
                async move { Ok::<_, std::convert::Infallible>(gateway.handle(req, &peer).await) }
            });
            let conn = builder.serve_connection(io, service).into_owned();
            let _ = watcher.watch(conn).await;
        });
    }
    // Stop: accept loops are ending; let in-flight requests finish, close idle connections.
    let _ = stop.borrow_and_update();
    let _ = tokio::time::timeout(drain, graceful.shutdown()).await;
}

struct CountGuard(Arc<AtomicUsize>);

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_ambiguous_framing() {
        assert!(ambiguous_framing(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!ambiguous_framing(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        ));
    }
}
