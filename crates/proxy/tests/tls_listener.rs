//! TLS on client listeners (`server.tls_listen`), served by the data plane itself: HTTPS
//! (HTTP/1.1, and h2 agreed by ALPN) to a plain upstream that sees `X-Forwarded-Proto: https`;
//! plain HTTP, stalled and broken handshakes closed with a FIN while the gateway keeps serving;
//! `close_notify` before the FIN of a clean close; a new certificate for new handshakes; the
//! `503` beyond `max_connections` over TLS; and the checks of the certificate and key files.
//! (SIGHUP, which reads the files again, is tested on the binary: crates/cli/tests.)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_core::config::server::ListenerTls;
use holdfast_core::config::AccessLog;
use holdfast_proxy::observe::Observers;
use holdfast_proxy::plugin::Plugins;
use holdfast_proxy::server::{self, Limits, Listener, ListenerChange};
use holdfast_proxy::tls_listen::{self, TlsListenError};
use holdfast_proxy::{Gateway, State};
use holdfast_testkit::pki::TestPki;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory for one test's files.
fn temp_dir() -> PathBuf {
    let n = DIRS.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("holdfast-tls-listen-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A CA, and a `localhost` certificate it signed in PEM files (the chain, then the key).
struct Pki {
    ca: CertificateDer<'static>,
    files: ListenerTls,
}

fn pki(name: &str) -> Pki {
    let made = TestPki::new(name);
    let dir = temp_dir();
    let cert_file = dir.join(format!("{name}.crt"));
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&cert_file, &made.chain_pem).unwrap();
    std::fs::write(&key_file, &made.key_pem).unwrap();
    Pki {
        ca: made.ca_der.into(),
        files: ListenerTls {
            cert_file: cert_file.display().to_string(),
            key_file: key_file.display().to_string(),
        },
    }
}

/// A plain HTTP/1.1 upstream answering `proto=X-Forwarded-Proto forwarded=Forwarded`.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string()
                    };
                    let text = format!(
                        "proto={} forwarded={}",
                        header("x-forwarded-proto"),
                        header("forwarded")
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// A gateway serving in this test's runtime: one plain and one TLS listener.
struct Gw {
    plain: SocketAddr,
    tls: SocketAddr,
    changes: tokio::sync::mpsc::UnboundedSender<ListenerChange>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// Start a gateway with the certificate of `pki`, in front of `upstream`; `server` adds
/// `[server]` lines.
async fn start(pki: &Pki, upstream: SocketAddr, server: &str) -> Gw {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\ntls_cert_file = {:?}\ntls_key_file = {:?}\naccess_log = \"off\"\n{server}\n[upstreams.up]\ntargets = [\"http://{upstream}\"]\n[[routes]]\nupstream = \"up\"\n",
        pki.files.cert_file, pki.files.key_file
    );
    let cfg = holdfast_core::config::parse(&text, "tls.toml", |_| None).expect("config");
    let s = &cfg.server;
    let limits = Limits {
        max_connections: s.max_connections,
        header_timeout: s.header_timeout,
        client_idle_timeout: s.client_idle_timeout,
        max_header_bytes: s.max_header_bytes,
        ignore_client_abort: s.ignore_client_abort,
    };
    let acceptor = tls_listen::load(s.tls.as_ref().expect("tls files")).expect("certificate");
    let drain = s.drain_timeout;
    let state = State::new(Arc::new(cfg), Plugins::default()).unwrap();
    let gateway = Arc::new(Gateway::new(
        state,
        Observers::new(&AccessLog::Off).unwrap(),
    ));
    let configured: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let plain = TcpListener::bind(configured).await.unwrap();
    let tls = TcpListener::bind(configured).await.unwrap();
    let (plain_addr, tls_addr) = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
    let listeners = vec![
        Listener {
            addr: configured,
            socket: plain,
            tls: false,
        },
        Listener {
            addr: configured,
            socket: tls,
            tls: true,
        },
    ];
    let (changes, changes_rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(server::serve(
        listeners,
        changes_rx,
        gateway,
        limits,
        Some(acceptor),
        stop_rx,
        drain,
    ));
    Gw {
        plain: plain_addr,
        tls: tls_addr,
        changes,
        stop,
    }
}

/// A TLS client trusting only `ca`, offering `alpn`.
fn connector(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        connector(ca, alpn).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// GET `/x` over HTTP/1.1 on `io`: the status and the body.
async fn get_h1<S>(io: S) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/x")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Read until the server closes; `Err` for a reset (or, over TLS, a close without
/// `close_notify`). Gives up after 10 s.
async fn read_to_close(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Ok(out),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other("still open after 10 s")),
    }
}

/// The gateway still answers HTTPS.
async fn still_serving(gw: &Gw, pki: &Pki) {
    let tls = tls_connect(gw.tls, &pki.ca, &[b"http/1.1"]).await.unwrap();
    let (status, body) = get_h1(tls).await;
    assert_eq!(
        (status, body.starts_with("proto=https")),
        (200, true),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_reaches_a_plain_upstream_over_http1_and_h2() {
    let pki = pki("a");
    let gw = start(&pki, upstream().await, "").await;

    // HTTP/1.1, agreed by ALPN.
    let tls = tls_connect(gw.tls, &pki.ca, &[b"http/1.1"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = get_h1(tls).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "proto=https forwarded=for=127.0.0.1;proto=https;host=\"localhost\""
    );

    // A client offering both gets h2.
    let tls = tls_connect(gw.tls, &pki.ca, &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::get("https://localhost/x")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(b"proto=https forwarded=for=127.0.0.1;proto=https"));
    }

    // No ALPN at all: HTTP/1.1.
    let tls = tls_connect(gw.tls, &pki.ca, &[]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    assert_eq!(get_h1(tls).await.0, 200);

    // The plain listener next to it still says http.
    let tcp = TcpStream::connect(gw.plain).await.unwrap();
    let (status, body) = get_h1(tcp).await;
    assert_eq!(status, 200);
    assert!(
        body.starts_with("proto=http forwarded=for=127.0.0.1;proto=http;"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_port_gets_a_400_and_a_fin() {
    let pki = pki("a");
    let gw = start(&pki, upstream().await, "").await;
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(gw.tls).await.unwrap();
        tcp.write_all(b"GET /x HTTP/1.1\r\nhost: localhost\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .unwrap();
        let answer = read_to_close(&mut tcp).await.expect("a FIN, not a reset");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(
            text.contains("connection: close") && text.contains("https://"),
            "{text}"
        );
    }
    still_serving(&gw, &pki).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_closed_after_the_header_timeout() {
    let pki = pki("a");
    let gw = start(&pki, upstream().await, "header_timeout_ms = 400").await;
    // Nothing at all, then the start of a ClientHello that never completes.
    for sent in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]] {
        let started = Instant::now();
        let mut tcp = TcpStream::connect(gw.tls).await.unwrap();
        tcp.write_all(sent).await.unwrap();
        let answer = read_to_close(&mut tcp).await.expect("a FIN, not a reset");
        let waited = started.elapsed();
        assert!(answer.is_empty(), "{answer:?}");
        assert!(
            waited >= Duration::from_millis(350) && waited < Duration::from_secs(3),
            "closed after {waited:?}"
        );
    }
    still_serving(&gw, &pki).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_handshakes_are_closed_and_the_gateway_keeps_serving() {
    let pki = pki("a");
    let gw = start(&pki, upstream().await, "").await;
    // A ClientHello that does not parse: rustls refuses it (an alert), then a FIN.
    let mut tcp = TcpStream::connect(gw.tls).await.unwrap();
    let hello = [
        0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef,
    ];
    tcp.write_all(&hello).await.unwrap();
    let answer = read_to_close(&mut tcp).await.expect("a FIN, not a reset");
    assert_eq!(answer.first(), Some(&0x15), "a TLS alert: {answer:?}");
    // A client that does not trust the certificate gives up in the handshake.
    let other = self::pki("other");
    let e = tls_connect(gw.tls, &other.ca, &[b"http/1.1"])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    // A client that closes before its first byte (a TCP health check).
    drop(TcpStream::connect(gw.tls).await.unwrap());
    still_serving(&gw, &pki).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_close_sends_close_notify_before_the_fin() {
    let pki = pki("a");
    let gw = start(&pki, upstream().await, "client_idle_timeout_ms = 500").await;
    // `Connection: close`: hyper shuts the stream down after the answer.
    let mut tls = tls_connect(gw.tls, &pki.ca, &[b"http/1.1"]).await.unwrap();
    tls.write_all(b"GET /x HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut tls)
        .await
        .expect("close_notify, then a FIN");
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    // A keep-alive connection left idle: closed by the idle timeout, with close_notify too.
    let started = Instant::now();
    let mut tls = tls_connect(gw.tls, &pki.ca, &[b"http/1.1"]).await.unwrap();
    tls.write_all(b"GET /x HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut tls)
        .await
        .expect("close_notify, then a FIN");
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_closes_an_idle_tls_connection_with_close_notify() {
    let pki = pki("a");
    let gw = start(&pki, upstream().await, "").await;
    let mut tls = tls_connect(gw.tls, &pki.ca, &[b"http/1.1"]).await.unwrap();
    tls.write_all(b"GET /x HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 17];
    tls.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK\r\n");
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.stop.send(true).unwrap();
    let started = Instant::now();
    read_to_close(&mut tls)
        .await
        .expect("close_notify, then a FIN");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_serves_new_handshakes() {
    let old = pki("old");
    let gw = start(&old, upstream().await, "").await;
    let kept = tls_connect(gw.tls, &old.ca, &[b"http/1.1"]).await.unwrap();
    let new = pki("new");
    let acceptor = tls_listen::load(&new.files).unwrap();
    gw.changes.send(ListenerChange::Tls(acceptor)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let tls = loop {
        match tls_connect(gw.tls, &new.ca, &[b"http/1.1"]).await {
            Ok(tls) => break tls,
            Err(e) if Instant::now() > deadline => panic!("the new certificate is not served: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert_eq!(get_h1(tls).await.0, 200);
    assert!(tls_connect(gw.tls, &old.ca, &[b"http/1.1"]).await.is_err());
    // A connection made before the change carries on with the old certificate.
    assert_eq!(get_h1(kept).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_the_limit_gets_a_503_over_tls() {
    let pki = pki("a");
    let gw = start(&pki, upstream().await, "max_connections = 1").await;
    let held = tls_connect(gw.tls, &pki.ca, &[b"http/1.1"]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut tls = tls_connect(gw.tls, &pki.ca, &[b"http/1.1"]).await.unwrap();
    tls.write_all(b"GET /x HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut tls)
        .await
        .expect("close_notify, then a FIN");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{text}"
    );
    assert!(text.contains("retry-after: 1"), "{text}");
    drop(held);
}

/// The PEM files in `tests/tls_fixtures` (made with openssl; test keys only).
fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls_fixtures")
        .join(name)
        .display()
        .to_string()
}

fn files(cert_file: &str, key_file: &str) -> ListenerTls {
    ListenerTls {
        cert_file: cert_file.to_string(),
        key_file: key_file.to_string(),
    }
}

#[test]
fn keys_load_as_pkcs8_pkcs1_and_sec1() {
    let rcgen = pki("pkcs8");
    assert!(std::fs::read_to_string(&rcgen.files.key_file)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    tls_listen::load(&rcgen.files).expect("PKCS#8");
    tls_listen::load(&files(&fixture("pkcs1.crt"), &fixture("pkcs1.key"))).expect("PKCS#1");
    tls_listen::load(&files(&fixture("sec1.crt"), &fixture("sec1.key"))).expect("SEC1");
}

#[test]
fn bad_certificate_and_key_files_name_the_key_and_the_path() {
    let dir = temp_dir();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let rsa_cert = fixture("pkcs1.crt");
    let ec_key = fixture("sec1.key");
    let not_pem = write("notes.txt", "not a certificate\n");
    let bad_der = write(
        "bad.crt",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let missing = dir.join("missing.pem").display().to_string();
    let check = |cert: &str, key: &str, expected: &str, path: &str, what: &str| {
        let e = tls_listen::load(&files(cert, key)).err().expect("an error");
        assert_eq!(e.key(), expected, "{e}");
        let text = e.to_string();
        assert!(text.starts_with(expected), "{text}");
        assert!(text.contains(path) && text.contains(what), "{text}");
        assert!(text.contains("(fix: "), "{text}");
        e
    };
    let e = check(
        &rsa_cert,
        &ec_key,
        "server.tls_key_file",
        &ec_key,
        "not the private key",
    );
    assert!(matches!(e, TlsListenError::Mismatch { .. }) && e.to_string().contains(&rsa_cert));
    check(
        &missing,
        &ec_key,
        "server.tls_cert_file",
        &missing,
        "cannot read",
    );
    check(
        &rsa_cert,
        &missing,
        "server.tls_key_file",
        &missing,
        "cannot read",
    );
    check(
        &not_pem,
        &ec_key,
        "server.tls_cert_file",
        &not_pem,
        "holds no certificate",
    );
    check(
        &bad_der,
        &ec_key,
        "server.tls_cert_file",
        &bad_der,
        "not usable",
    );
    // A certificate where the key should be.
    check(
        &rsa_cert,
        &rsa_cert,
        "server.tls_key_file",
        &rsa_cert,
        "no PEM private key",
    );
}
