//! Client-facing listeners: accept with a connection limit (excess connections get a 503 and a
//! FIN, never a reset), every request head watched by [`crate::framing`] (deadline: 408;
//! Content-Length/Transfer-Encoding ambiguity: 400), then hyper (HTTP/1.1 and HTTP/2) serving
//! the gateway; graceful drain on shutdown. Listeners in `server.tls_listen` shake hands first
//! ([`crate::tls_listen`]) and then serve the decrypted stream the same way.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use holdfast_core::{CallExtra, CallRecord, ResetClass};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::framing::Watched;
use crate::gateway::Gateway;
use crate::hygiene::Peer;
use crate::observe::count_unrouted;
use crate::responses;
use crate::tls_listen::{self, TlsAcceptor, TlsIo};

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
async fn answer_and_close<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    raw: &[u8],
    written: impl FnOnce(bool),
) {
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

/// A client listener: its address as configured (it may name port 0) and whether clients
/// speak TLS on it (`server.tls_listen`).
pub struct Listener {
    pub addr: SocketAddr,
    pub socket: TcpListener,
    pub tls: bool,
}

/// A change to the client listeners while serving (a reload with new `server.listen` or
/// `server.tls_listen`, or a certificate read again).
pub enum ListenerChange {
    /// Start accepting on a bound listener.
    Add(Listener),
    /// Stop accepting on the listener configured as `addr` (a TLS one if `tls`); its
    /// connections carry on.
    Remove { addr: SocketAddr, tls: bool },
    /// New connection limits for connections accepted from now on.
    Limits(Limits),
    /// The certificate of the TLS listeners, for handshakes from now on.
    Tls(TlsAcceptor),
    /// A new drain timeout, for the stop to come.
    Drain(Duration),
}

/// An accepted connection: the socket, the client, and whether it came to a TLS listener.
type Accepted = (TcpStream, SocketAddr, bool);

/// Accept on `listener` into `tx` until `stop` turns true or `quit` is dropped.
fn spawn_accept_loop(
    listener: Listener,
    tx: tokio::sync::mpsc::Sender<Accepted>,
    mut stop: watch::Receiver<bool>,
    mut quit: tokio::sync::oneshot::Receiver<()>,
) {
    tokio::spawn(async move {
        let Listener { socket, tls, .. } = listener;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = &mut quit => return,
                accepted = socket.accept() => match accepted {
                    Ok((stream, client)) => {
                        if tx.send((stream, client, tls)).await.is_err() { return; }
                    }
                    // EMFILE and friends: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                },
            }
        }
    });
}

/// Serve `listeners` until `stop` turns true, then drain for up to `drain`. `changes` adds and
/// removes listeners meanwhile; `tls` is the certificate of the TLS listeners (if any).
pub async fn serve(
    listeners: Vec<Listener>,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<ListenerChange>,
    gateway: Arc<Gateway>,
    limits: Limits,
    mut tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
    mut drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    // Every connection task, and the signal that cuts them when the drain runs out (so that
    // their responses still streaming end, and are logged, while the process still runs).
    let tasks = tokio_util::task::TaskTracker::new();
    let cut = tokio_util::sync::CancellationToken::new();
    let active = Arc::new(AtomicUsize::new(0));
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel::<Accepted>(1024);
    // Dropping an accept loop's sender stops it (its listener closes; accepted connections
    // are not affected). Keyed by the configured address and whether it is a TLS listener
    // (`127.0.0.1:0` may be both).
    let mut accepting: std::collections::HashMap<
        (SocketAddr, bool),
        tokio::sync::oneshot::Sender<()>,
    > = std::collections::HashMap::new();
    for listener in listeners {
        let (quit_tx, quit_rx) = tokio::sync::oneshot::channel();
        let key = (listener.addr, listener.tls);
        spawn_accept_loop(listener, conn_tx.clone(), stop.clone(), quit_rx);
        accepting.insert(key, quit_tx);
    }
    let mut changes_open = true;
    let mut limits = limits;

    let mut builder = connection_builder(&limits);
    loop {
        let (stream, client, over_tls) = tokio::select! {
            _ = stop.changed() => break,
            change = changes.recv(), if changes_open => {
                match change {
                    Some(ListenerChange::Add(listener)) => {
                        let (quit_tx, quit_rx) = tokio::sync::oneshot::channel();
                        let key = (listener.addr, listener.tls);
                        spawn_accept_loop(listener, conn_tx.clone(), stop.clone(), quit_rx);
                        accepting.insert(key, quit_tx);
                    }
                    Some(ListenerChange::Remove { addr, tls }) => {
                        accepting.remove(&(addr, tls));
                    }
                    Some(ListenerChange::Limits(new)) => {
                        builder = connection_builder(&new);
                        limits = new;
                    }
                    Some(ListenerChange::Tls(acceptor)) => tls = Some(acceptor),
                    Some(ListenerChange::Drain(new)) => drain = new,
                    None => changes_open = false,
                }
                continue;
            }
            next = conn_rx.recv() => match next { Some(p) => p, None => break },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = match (over_tls, &tls) {
            (false, _) => None,
            (true, Some(acceptor)) => Some(acceptor.clone()),
            (true, None) => {
                // Not reachable: a config with TLS listeners has a certificate.
                tracing::warn!(%client, "a TLS listener has no certificate; connection closed");
                tokio::spawn(close_quietly(stream));
                continue;
            }
        };
        if active.load(Ordering::Acquire) >= limits.max_connections {
            metrics::counter!("holdfast_rejected_connections_total").increment(1);
            tokio::spawn(refuse(
                stream,
                client,
                acceptor,
                gateway.clone(),
                limits.header_timeout,
            ));
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let count = CountGuard(active.clone());
        let conn = Connection {
            gateway: gateway.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            limits: limits.clone(),
            cut: cut.clone(),
            client,
        };
        tasks.spawn(async move {
            // A second handle on the socket outlives hyper's: when hyper is done, the socket is
            // drained before it closes (see `linger`).
            let (stream, lingerer) = match split_for_linger(stream) {
                Ok(pair) => pair,
                Err(_) => return,
            };
            let ended = match acceptor {
                None => conn.serve(stream, false).await,
                Some(acceptor) => {
                    let within = conn.limits.header_timeout;
                    match tls_listen::handshake(&acceptor, stream, client, within).await {
                        Some(tls) => {
                            let (io, returned) = TlsIo::new(tls);
                            let ended = conn.serve(io, true).await;
                            returned
                                .finish(ended == Ended::Clean, CLOSE_NOTIFY_GRACE)
                                .await;
                            ended
                        }
                        // A failed handshake closes like any other connection: a FIN, and
                        // what the client still sends is read and dropped. The drain does
                        // not wait for that (the watcher goes now).
                        None => {
                            drop(conn);
                            Ended::Failed
                        }
                    }
                }
            };
            match ended {
                Ended::Cut => {
                    // The drain ran out: the connection (and a response still streaming on
                    // it, which is recorded as it drops) ends here, with a FIN.
                    let _ = lingerer.shutdown(std::net::Shutdown::Write);
                }
                // A tunnel owns the socket now; it closes it when either side is done.
                Ended::Upgraded => {}
                // A lingering socket still counts toward `max_connections`: clients that
                // trickle bytes after an early answer cannot hold more sockets than that.
                Ended::Clean | Ended::Failed => linger(lingerer).await,
            }
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

/// How hyper's work on a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// hyper closed it gracefully, or it idled out between requests.
    Clean,
    /// An error (a reset, a broken-off exchange) or a failed TLS handshake.
    Failed,
    /// The drain ran out and cut it.
    Cut,
    /// A tunnel (an upgrade such as WebSocket) owns the socket now.
    Upgraded,
}

/// Everything one accepted connection is served with.
struct Connection {
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    limits: Limits,
    cut: tokio_util::sync::CancellationToken,
    client: SocketAddr,
}

impl Connection {
    /// Serve `stream` (a plain socket, or the decrypted stream of a TLS one) with hyper, every
    /// request head watched by [`Watched`], until hyper is done, the drain cuts it or a tunnel
    /// takes it over.
    async fn serve<S>(self, stream: S, tls: bool) -> Ended
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(Watched::new(
            stream,
            self.limits.header_timeout,
            self.limits.max_header_bytes,
        ));
        let peer = Arc::new(Peer::new(self.client, tls));
        let tunnel_check = peer.clone();
        let gateway = self.gateway;
        let service = service_fn(move |req| {
            let gateway = gateway.clone();
            // Started now, so a request dropped before its first poll is logged.
            let pending = gateway.begin(&req, &peer);
            async move { Ok::<_, std::convert::Infallible>(gateway.handle(req, pending).await) }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        // The connection (and its stream) is dropped by the end of this statement.
        let result = tokio::select! {
            result = self.watcher.watch(conn) => Some(result),
            _ = self.cut.cancelled() => None,
        };
        match result {
            None => Ended::Cut,
            Some(_) if tunnel_check.upgraded.load(Ordering::Acquire) => Ended::Upgraded,
            Some(Ok(())) => Ended::Clean,
            // hyper's idle timer (`client_idle_timeout_ms`) closed a keep-alive connection
            // between requests: nothing was cut short.
            Some(Err(e))
                if e.downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_timeout) =>
            {
                Ended::Clean
            }
            Some(Err(_)) => Ended::Failed,
        }
    }
}

/// A connection beyond `max_connections`: `503` + `Retry-After`, a FIN, and a drain before the
/// close (over TLS after a handshake of at most [`REFUSE_HANDSHAKE`]).
async fn refuse(
    stream: TcpStream,
    client: SocketAddr,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    header_timeout: Duration,
) {
    let started = (Instant::now(), SystemTime::now());
    let answer = responses::raw_overloaded();
    let written = |written: bool| {
        record_refused(&gateway, client, started, written.then_some(answer.len()));
    };
    let Some(acceptor) = tls else {
        return answer_and_close(read_a_little(stream).await, &answer, written).await;
    };
    let Ok((stream, lingerer)) = split_for_linger(stream) else {
        return;
    };
    let within = header_timeout.min(REFUSE_HANDSHAKE);
    match tls_listen::handshake(&acceptor, stream, client, within).await {
        Some(tls) => answer_and_close(read_a_little(tls).await, &answer, written).await,
        None => {
            if let Ok(stream) = TcpStream::from_std(lingerer) {
                close_quietly(stream).await;
            }
        }
    }
}

/// Give a refused client up to 500 ms to send its request, and read (a first part of) it.
async fn read_a_little<S: AsyncRead + Unpin>(mut stream: S) -> S {
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let mut chunk = [0u8; 4096];
        let _ = stream.read(&mut chunk).await;
    })
    .await;
    stream
}

/// Close without an answer: a FIN, then what the client still sends is read for up to 2 s.
async fn close_quietly(stream: TcpStream) {
    answer_and_close(stream, b"", |_| {}).await;
}

/// The longest handshake a refused TLS connection gets (its `503` goes over TLS).
const REFUSE_HANDSHAKE: Duration = Duration::from_secs(2);

/// How long the `close_notify` of a TLS connection that ended cleanly may take to go out.
const CLOSE_NOTIFY_GRACE: Duration = Duration::from_secs(1);

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
