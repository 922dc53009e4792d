//! TLS on client listeners (`server.tls_listen`): the certificate and key (read at start, on
//! every reload and by `holdfast check`), the handshake with its deadline, and the stream
//! hyper serves. A handshake that fails or times out ends with a FIN (the caller lingers, as
//! for a plain connection), is counted in `holdfast_tls_handshake_failures_total{reason}` and
//! logged; a client that speaks plain HTTP to the port gets a `400` in plain text first.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use holdfast_core::config::server::ListenerTls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
pub use tokio_rustls::TlsAcceptor;

/// The certificate or key of the TLS listeners could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsListenError {
    #[error("server.tls_cert_file: cannot read `{path}`: {source} (fix: give a readable PEM file with the certificate chain)")]
    ReadCert { path: String, source: io::Error },
    #[error("server.tls_cert_file: `{path}` holds no certificate{detail} (fix: give the PEM certificate chain, `-----BEGIN CERTIFICATE-----`, the server's own certificate first)")]
    NoCert { path: String, detail: String },
    #[error("server.tls_cert_file: `{path}`: the certificate is not usable: {message} (fix: give the PEM certificate chain, the server's own certificate first)")]
    BadCert { path: String, message: String },
    #[error("server.tls_key_file: cannot read `{path}`: {source} (fix: give a readable PEM file with the private key)")]
    ReadKey { path: String, source: io::Error },
    #[error("server.tls_key_file: `{path}` holds no usable private key: {message} (fix: give a PEM private key: `BEGIN PRIVATE KEY` (PKCS#8), `BEGIN RSA PRIVATE KEY` (PKCS#1) or `BEGIN EC PRIVATE KEY` (SEC1))")]
    BadKey { path: String, message: String },
    #[error("server.tls_key_file: `{key_path}` is not the private key of the certificate in `{cert_path}` (fix: give the key the certificate was issued for, or the certificate of this key)")]
    Mismatch { key_path: String, cert_path: String },
}

impl TlsListenError {
    /// The config key at fault.
    pub fn key(&self) -> &'static str {
        match self {
            TlsListenError::ReadCert { .. }
            | TlsListenError::NoCert { .. }
            | TlsListenError::BadCert { .. } => "server.tls_cert_file",
            TlsListenError::ReadKey { .. }
            | TlsListenError::BadKey { .. }
            | TlsListenError::Mismatch { .. } => "server.tls_key_file",
        }
    }
}

/// Read the certificate chain and key of `files` and build the TLS server: TLS 1.2 and 1.3,
/// ALPN `h2` (preferred) and `http/1.1`.
pub fn load(files: &ListenerTls) -> Result<TlsAcceptor, TlsListenError> {
    let chain = certificates(&files.cert_file)?;
    let key = private_key(&files.key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    if let Err(e) = provider.key_provider.load_private_key(key.clone_key()) {
        return Err(TlsListenError::BadKey {
            path: files.key_file.clone(),
            message: e.to_string(),
        });
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsListenError::BadCert {
            path: files.cert_file.clone(),
            message: e.to_string(),
        })?
        .with_no_client_auth();
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsListenError::Mismatch {
                key_path: files.key_file.clone(),
                cert_path: files.cert_file.clone(),
            }
        }
        other => TlsListenError::BadCert {
            path: files.cert_file.clone(),
            message: other.to_string(),
        },
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsListenError> {
    let pem = std::fs::read(path).map_err(|source| TlsListenError::ReadCert {
        path: path.to_string(),
        source,
    })?;
    let chain: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match chain {
        Ok(chain) if !chain.is_empty() => Ok(chain),
        Ok(_) => Err(TlsListenError::NoCert {
            path: path.to_string(),
            detail: String::new(),
        }),
        Err(e) => Err(TlsListenError::NoCert {
            path: path.to_string(),
            detail: format!(" (bad PEM: {e})"),
        }),
    }
}

fn private_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsListenError> {
    let pem = std::fs::read(path).map_err(|source| TlsListenError::ReadKey {
        path: path.to_string(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsListenError::BadKey {
        path: path.to_string(),
        message: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key in it".into(),
            other => other.to_string(),
        },
    })
}

/// The answer to a client that sends plain HTTP to a TLS port (nginx answers the same case
/// with its `400 The plain HTTP request was sent to HTTPS port`).
fn plain_http_answer() -> Vec<u8> {
    let body = r#"{"error":"bad_request","message":"this port speaks HTTPS: send the request to https://"}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Why a handshake did not complete.
enum Failure {
    /// The client closed (or reset) before its first byte: nothing to report, as on a plain
    /// listener (a TCP health check, a port probe).
    Quiet,
    /// The client spoke plain HTTP; it was answered `400`.
    PlainHttp,
    /// The handshake itself failed (no common protocol or cipher, the client refused our
    /// certificate, garbage, a close in the middle).
    Tls(io::Error),
}

/// Shake hands with a client within `within` of now. `None`: it failed (counted and logged
/// here); the caller closes the connection with a FIN and lingers, as for a plain one.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    client: SocketAddr,
    within: Duration,
) -> Option<TlsStream<TcpStream>> {
    let attempt = async {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) | Err(_) => return Err(Failure::Quiet),
            Ok(_) => {}
        }
        // Every TLS record starts with its content type (22: handshake); a letter is the
        // method of a plain HTTP request.
        if first[0].is_ascii_alphabetic() {
            let mut stream = stream;
            let _ = stream.write_all(&plain_http_answer()).await;
            return Err(Failure::PlainHttp);
        }
        acceptor.accept(stream).await.map_err(Failure::Tls)
    };
    let failure = match tokio::time::timeout(within, attempt).await {
        Ok(Ok(tls)) => return Some(tls),
        Ok(Err(failure)) => failure,
        Err(_) => {
            report(
                client,
                "timeout",
                &format!("no handshake within {} ms", within.as_millis()),
            );
            return None;
        }
    };
    match failure {
        Failure::Quiet => {}
        Failure::PlainHttp => report(
            client,
            "plain_http",
            "plain HTTP on a TLS port (answered 400)",
        ),
        Failure::Tls(e) => report(client, "error", &e.to_string()),
    }
    None
}

fn report(client: SocketAddr, reason: &'static str, detail: &str) {
    metrics::counter!("holdfast_tls_handshake_failures_total", "reason" => reason).increment(1);
    static WARNINGS: WarnBudget = WarnBudget::new();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if let Some(suppressed) = WARNINGS.allow(now_ms) {
        tracing::warn!(
            %client,
            reason,
            suppressed_since_last = suppressed,
            "TLS handshake failed: {detail}"
        );
    }
}

/// At most [`WarnBudget::BURST`] warnings per [`WarnBudget::WINDOW_MS`]: a scanner or a
/// misconfigured client fails its handshake over and over, and one line each would flood the
/// log (the metric still counts every one).
struct WarnBudget {
    window_start_ms: std::sync::atomic::AtomicU64,
    in_window: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl WarnBudget {
    const BURST: u64 = 5;
    const WINDOW_MS: u64 = 10_000;

    const fn new() -> WarnBudget {
        use std::sync::atomic::AtomicU64;
        WarnBudget {
            window_start_ms: AtomicU64::new(0),
            in_window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log this one, and say `n` were left out since the last line logged.
    fn allow(&self, now_ms: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let start = self.window_start_ms.load(Relaxed);
        if now_ms.saturating_sub(start) >= Self::WINDOW_MS
            && self
                .window_start_ms
                .compare_exchange(start, now_ms, Relaxed, Relaxed)
                .is_ok()
        {
            self.in_window.store(0, Relaxed);
        }
        if self.in_window.fetch_add(1, Relaxed) < Self::BURST {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// Where a [`TlsIo`]'s stream goes when hyper drops it.
type Slot = Arc<Mutex<Option<TlsStream<TcpStream>>>>;

/// A client's TLS stream, for hyper. When hyper drops it, the stream is handed back to the
/// connection's task ([`Returned`]), which sends a `close_notify` on a connection that ended
/// cleanly (hyper shuts a stream down itself only when it closes gracefully; an idle
/// keep-alive connection that times out ends without one otherwise).
pub struct TlsIo {
    stream: Option<TlsStream<TcpStream>>,
    back: Slot,
}

/// The stream of a [`TlsIo`] once hyper is done with it.
pub struct Returned(Slot);

impl TlsIo {
    pub fn new(stream: TlsStream<TcpStream>) -> (TlsIo, Returned) {
        let back = Slot::default();
        let io = TlsIo {
            stream: Some(stream),
            back: back.clone(),
        };
        (io, Returned(back))
    }
}

impl Drop for TlsIo {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            *self.back.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream);
        }
    }
}

impl Returned {
    /// `clean`: send a `close_notify` (and a FIN) within `within`, unless hyper did. Otherwise
    /// (an error, an answer cut short) send none: the FIN alone tells the client the stream
    /// broke off, which is what TLS means by a close without `close_notify`.
    pub async fn finish(self, clean: bool, within: Duration) {
        let stream = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (Some(mut stream), true) = (stream, clean) {
            let _ = tokio::time::timeout(within, stream.shutdown()).await;
        }
    }
}

fn gone() -> io::Error {
    io::Error::from(io::ErrorKind::NotConnected)
}

impl AsyncRead for TlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().stream.as_mut() {
            Some(s) => Pin::new(s).poll_read(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream.as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Err(gone())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream.as_mut() {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Err(gone())),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream.as_mut() {
            Some(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(gone())),
        }
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_answer_is_framed_right() {
        let answer = plain_http_answer();
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{text}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }

    #[test]
    fn handshake_warnings_come_in_bursts_with_the_count_left_out() {
        let budget = WarnBudget::new();
        let t0 = 1_000_000;
        for i in 0..WarnBudget::BURST {
            assert_eq!(budget.allow(t0 + i), Some(0), "warning {i} of the burst");
        }
        for i in 0..7 {
            assert_eq!(budget.allow(t0 + 100 + i), None, "over the burst");
        }
        // A new window: logged again, with the seven left out.
        assert_eq!(budget.allow(t0 + WarnBudget::WINDOW_MS), Some(7));
        assert_eq!(budget.allow(t0 + WarnBudget::WINDOW_MS + 1), Some(0));
    }

    #[test]
    fn missing_files_name_the_key_and_the_path() {
        let files = ListenerTls {
            cert_file: "/nonexistent/holdfast-cert.pem".into(),
            key_file: "/nonexistent/holdfast-key.pem".into(),
        };
        let e = load(&files).err().expect("an error");
        assert_eq!(e.key(), "server.tls_cert_file");
        let text = e.to_string();
        assert!(
            text.contains("/nonexistent/holdfast-cert.pem") && text.contains("fix:"),
            "{text}"
        );
    }
}
