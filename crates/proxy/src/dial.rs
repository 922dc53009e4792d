//! Opening connections to a pool's targets: plain TCP for `http://` targets, TLS (rustls, with
//! the target's host as the server name) for `https://` targets. Trust comes from the bundled
//! Mozilla roots, or only from the pool's `tls_ca_file`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use holdfast_core::config::{Target, Upstream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The TLS setup of a pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("upstreams.{pool}.tls_ca_file: cannot read `{path}`: {message} (give a PEM file with the CA certificates to trust)")]
    CaFile {
        pool: String,
        path: String,
        message: String,
    },
    #[error("upstreams.{pool}.tls_ca_file: `{path}` holds no usable CA certificate (it must be PEM: -----BEGIN CERTIFICATE-----)")]
    NoCertificates { pool: String, path: String },
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connection refused by {0}")]
    Refused(String),
    #[error("connect to {0} timed out")]
    Timeout(String),
    #[error("connect to {0} failed: {1}")]
    Other(String, io::Error),
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(String, io::Error),
}

/// Opens connections for one pool.
pub struct Dialer {
    tls: Option<TlsConnector>,
}

impl Dialer {
    /// A dialer for plain-HTTP targets only.
    pub fn plain() -> Dialer {
        Dialer { tls: None }
    }

    /// Build the TLS client for the pool's `https://` targets (reads `tls_ca_file`).
    pub fn new(up: &Upstream) -> Result<Dialer, TlsSetupError> {
        if !up.targets.iter().any(|t| t.tls) {
            return Ok(Dialer { tls: None });
        }
        let mut roots = rustls::RootCertStore::empty();
        match &up.tls_ca_file {
            Some(path) => {
                let certs =
                    CertificateDer::pem_file_iter(path).map_err(|e| TlsSetupError::CaFile {
                        pool: up.name.clone(),
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                for cert in certs.flatten() {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(TlsSetupError::NoCertificates {
                        pool: up.name.clone(),
                        path: path.clone(),
                    });
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::CaFile {
                pool: up.name.clone(),
                path: String::new(),
                message: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // The upstream side speaks HTTP/1.1 (see docs/ARCHITECTURE.md).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Dialer {
            tls: Some(TlsConnector::from(Arc::new(config))),
        })
    }

    /// Connect to `target` (and shake hands for TLS) within `timeout`.
    pub async fn dial(&self, target: &Target, timeout: Duration) -> Result<UpstreamIo, DialError> {
        let authority = &target.authority;
        let attempt = async {
            let stream = match TcpStream::connect(authority.as_str()).await {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(DialError::Refused(authority.clone()))
                }
                Err(e) => return Err(DialError::Other(authority.clone(), e)),
            };
            let _ = stream.set_nodelay(true);
            match (&self.tls, target.tls) {
                (Some(tls), true) => {
                    let name = ServerName::try_from(target.host.clone()).map_err(|e| {
                        DialError::Tls(
                            authority.clone(),
                            io::Error::new(io::ErrorKind::InvalidInput, e),
                        )
                    })?;
                    let stream = tls
                        .connect(name, stream)
                        .await
                        .map_err(|e| DialError::Tls(authority.clone(), e))?;
                    Ok(UpstreamIo::Tls(Box::new(stream)))
                }
                _ => Ok(UpstreamIo::Plain(stream)),
            }
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(DialError::Timeout(authority.clone())))
    }
}

/// A connection to an upstream target.
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }
}
