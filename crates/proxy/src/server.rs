//! Client-facing listeners: accept with a connection limit (excess connections get a 503 and a
//! FIN, never a reset), every request head watched by [`crate::framing`] (deadline: 408;
//! Content-Length/Transfer-Encoding ambiguity: 400), then hyper (HTTP/1.1 and HTTP/2) serving
//! the gateway; graceful drain on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use holdfast_core::{CallExtra, CallRecord, ResetClass};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::framing::Watched;
use crate::gateway::Gateway;
use crate::hygiene::Peer;
use crate::observe::count_unrouted;
use crate::responses;

/// Connection limits from `[server]`. A reload may change them
/// ([`ListenerChange::Limits`]); connections already open keep the ones they started with.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub client_idle_timeout: Duration,
    pub max_header_bytes: usize,
    /// Answer clients that half-close (see `ServerConfig::ignore_client_abort`).
    pub ignore_client_abort: bool,
}

/// Answer `raw` (a complete response), send a FIN, and read what the client still sends so
/// that closing does not turn into a reset. `written` learns whether the answer went out
/// (before the wait for the client's close).
async fn answer_and_close(mut stream: TcpStream, raw: &[u8], written: impl FnOnce(bool)) {
    let mut written = Some(written);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let sent = stream.write_all(raw).await.is_ok();
        if let Some(f) = written.take() {
            f(sent);
        }
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    if let Some(f) = written {
        // The write itself ran out of time.
        f(false);
    }
}

/// Log and count a connection refused for `server.max_connections`: one access-log record
/// (class `overloaded`, status 503, no route; the request was never read, so no method or
/// path) and `holdfast_failed_exchanges_total{class="overloaded"}`, like any refused call.
/// `bytes_out` is the answer's size, `None` when it could not be written.
fn record_refused(
    gateway: &Gateway,
    client: SocketAddr,
    (started, at): (Instant, SystemTime),
    bytes_out: Option<usize>,
) {
    let status = 503;
    let total_ms = started.elapsed().as_secs_f64() * 1000.0;
    let class = Some(ResetClass::Overloaded);
    count_unrouted(status, total_ms, class);
    let state = gateway.state.load();
    let observers = &state.plugins.observers;
    if !gateway.observers.logs() && observers.is_empty() {
        return;
    }
    let record = CallRecord {
        ts_ms: at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        client: client.to_string(),
        status,
        reset_class: class,
        total_ms,
        bytes_out: bytes_out.unwrap_or(0) as u64,
        extra: CallExtra {
            reset_class: class,
            ..CallExtra::default()
        },
        ..CallRecord::default()
    };
    gateway.observers.log(&record);
    for o in observers {
        o.on_call(&record);
    }
}

/// A change to the client listeners while serving (a reload with new `server.listen`).
pub enum ListenerChange {
    /// Start accepting on a bound listener; the address is as configured (it may name port 0).
    Add(SocketAddr, TcpListener),
    /// Stop accepting on the listener configured as this address; its connections carry on.
    Remove(SocketAddr),
    /// New connection limits for connections accepted from now on.
    Limits(Limits),
}

/// Accept on `listener` into `tx` until `stop` turns true or `quit` is dropped.
fn spawn_accept_loop(
    listener: TcpListener,
    tx: tokio::sync::mpsc::Sender<(TcpStream, SocketAddr)>,
    mut stop: watch::Receiver<bool>,
    mut quit: tokio::sync::oneshot::Receiver<()>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = &mut quit => return,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => { if tx.send(pair).await.is_err() { return; } }
                    // EMFILE and friends: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                },
            }
        }
    });
}

/// Serve `listeners` (each with its configured address) until `stop` turns true, then drain
/// for up to `drain`. `changes` adds and removes listeners meanwhile.
pub async fn serve(
    listeners: Vec<(SocketAddr, TcpListener)>,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<ListenerChange>,
    gateway: Arc<Gateway>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    // Every connection task, and the signal that cuts them when the drain runs out (so that
    // their responses still streaming end, and are logged, while the process still runs).
    let tasks = tokio_util::task::TaskTracker::new();
    let cut = tokio_util::sync::CancellationToken::new();
    let active = Arc::new(AtomicUsize::new(0));
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel::<(TcpStream, SocketAddr)>(1024);
    // Dropping an accept loop's sender stops it (its listener closes; accepted connections
    // are not affected).
    let mut accepting: std::collections::HashMap<SocketAddr, tokio::sync::oneshot::Sender<()>> =
        std::collections::HashMap::new();
    for (addr, listener) in listeners {
        let (quit_tx, quit_rx) = tokio::sync::oneshot::channel();
        spawn_accept_loop(listener, conn_tx.clone(), stop.clone(), quit_rx);
        accepting.insert(addr, quit_tx);
    }
    let mut changes_open = true;
    let mut limits = limits;
    let mut builder = connection_builder(&limits);
    loop {
        let (mut stream, client) = tokio::select! {
            _ = stop.changed() => break,
            change = changes.recv(), if changes_open => {
                match change {
                    Some(ListenerChange::Add(addr, listener)) => {
                        let (quit_tx, quit_rx) = tokio::sync::oneshot::channel();
                        spawn_accept_loop(listener, conn_tx.clone(), stop.clone(), quit_rx);
                        accepting.insert(addr, quit_tx);
                    }
                    Some(ListenerChange::Remove(addr)) => {
                        accepting.remove(&addr);
                    }
                    Some(ListenerChange::Limits(new)) => {
                        builder = connection_builder(&new);
                        limits = new;
                    }
                    None => changes_open = false,
                }
                continue;
            }
            next = conn_rx.recv() => match next { Some(p) => p, None => break },
        };
        let _ = stream.set_nodelay(true);
        if active.load(Ordering::Acquire) >= limits.max_connections {
            metrics::counter!("holdfast_rejected_connections_total").increment(1);
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let started = (Instant::now(), SystemTime::now());
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    let mut chunk = [0u8; 4096];
                    let _ = stream.read(&mut chunk).await;
                })
                .await;
                let answer = responses::raw_overloaded();
                answer_and_close(stream, &answer, |written| {
                    record_refused(&gateway, client, started, written.then_some(answer.len()));
                })
                .await;
            });
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let gateway = gateway.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let active = active.clone();
        let limits = limits.clone();
        let cut = cut.clone();
        tasks.spawn(async move {
            let count = CountGuard(active);
            // A second handle on the socket outlives hyper's: when hyper is done, the socket is
            // drained before it closes (see `linger`).
            let (stream, lingerer) = match split_for_linger(stream) {
                Ok(pair) => pair,
                Err(_) => return,
            };
            let io = TokioIo::new(Watched::new(
                stream,
                limits.header_timeout,
                limits.max_header_bytes,
            ));
            let peer = Arc::new(Peer::new(client));
            let tunnel_check = peer.clone();
            let service = service_fn(move |req| {
                let gateway = gateway.clone();
                // Started now, so a request dropped before its first poll is logged.
                let pending = gateway.begin(&req, &peer);
                async move { Ok::<_, std::convert::Infallible>(gateway.handle(req, pending).await) }
            });
            let conn = builder
                .serve_connection_with_upgrades(io, service)
                .into_owned();
            tokio::select! {
                _ = watcher.watch(conn) => {}
                _ = cut.cancelled() => {
                    // The drain ran out: the connection (and a response still streaming on
                    // it, which is recorded as it drops) ends here, with a FIN.
                    let _ = lingerer.shutdown(std::net::Shutdown::Write);
                    drop(count);
                    return;
                }
            }
            if tunnel_check.upgraded.load(Ordering::Acquire) {
                // A tunnel owns the socket now; it closes it when either side is done.
                return;
            }
            // A lingering socket still counts toward `max_connections`: clients that trickle
            // bytes after an early answer cannot hold more sockets than that.
            linger(lingerer).await;
            drop(count);
        });
    }
    // Stop: accept loops are ending; let in-flight requests finish, close idle connections.
    let _ = stop.borrow_and_update();
    gateway.start_draining();
    let shutdown = graceful.shutdown();
    tokio::pin!(shutdown);
    if tokio::time::timeout(drain, &mut shutdown).await.is_err() {
        // Out of time: requests still waiting on an upstream get a 503 (with
        // `Connection: close`) instead of a cut connection; give those answers a moment.
        gateway.give_up_waiting();
        if tokio::time::timeout(GIVE_UP_GRACE, &mut shutdown)
            .await
            .is_err()
        {
            // Responses still streaming (a long download) are cut now, while the process
            // runs, so that each is logged and counted (`upstream_timeout`: the drain's
            // deadline ended it) instead of vanishing with the runtime.
            gateway.cut_streams();
            cut.cancel();
            tasks.close();
            let _ = tokio::time::timeout(CUT_GRACE, tasks.wait()).await;
        }
    }
}

/// After the drain's connections were cut, how long their tasks get to end and record.
const CUT_GRACE: Duration = Duration::from_secs(1);

/// hyper's connection settings for `limits`.
fn connection_builder(limits: &Limits) -> Arc<auto::Builder<TokioExecutor>> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Off (the default): a FIN from the client while its request is in flight ends the
        // exchange (hyper drops the request future; it is logged `client_aborted`). On: the
        // client may have only shut down its sending side, and still gets the answer.
        .half_close(limits.ignore_client_abort)
        .header_read_timeout(limits.client_idle_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024)
        // hyper's own default is 16 KiB whatever the config says. Twice the limit here: the
        // gateway measures the headers itself and answers a JSON 431 (h2 would send a bare
        // one); only heads over twice the limit get h2's own refusal.
        .max_header_list_size(
            u32::try_from(limits.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
        );
    Arc::new(builder)
}

/// The stream for hyper, and a duplicate handle of the same socket for [`linger`].
fn split_for_linger(stream: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let lingerer = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, lingerer))
}

/// After a drain timeout, how long the `503`s to requests still waiting may take to go out.
const GIVE_UP_GRACE: Duration = Duration::from_secs(2);

/// How long a closing connection may keep sending before it is closed anyway (nginx's
/// `lingering_time`): an upload still under way after an early answer has this long to end.
const LINGER_TOTAL: Duration = Duration::from_secs(30);

/// The longest pause in what a closing connection sends (nginx's `lingering_timeout`).
const LINGER_GAP: Duration = Duration::from_secs(5);

/// Close a connection hyper is done with without a reset: send a FIN (if hyper did not), then
/// read and discard what the client still sends (an unread upload after an early 413, 401 or
/// 404, or the rest of a stalled head) until it closes, pauses for `LINGER_GAP` or `LINGER_TOTAL` passes. Closing a
/// socket with unread bytes makes the kernel send an RST, which can destroy the answer the
/// client has not read yet (nginx's `lingering_close` for the same reason).
async fn linger(socket: std::net::TcpStream) {
    let Ok(mut stream) = TcpStream::from_std(socket) else {
        return;
    };
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(LINGER_TOTAL, async {
        let mut sink = [0u8; 16 * 1024];
        while let Ok(Ok(n)) = tokio::time::timeout(LINGER_GAP, stream.read(&mut sink)).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

struct CountGuard(Arc<AtomicUsize>);

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
