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
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
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
    #[error("upstreams.{pool}.{key}: `{path}`: {message}")]
    ClientAuth {
        pool: String,
        key: &'static str,
        path: String,
        message: String,
    },
}

impl TlsSetupError {
    /// The config key at fault (`upstreams.POOL.KEY`).
    pub fn key(&self) -> String {
        match self {
            TlsSetupError::CaFile { pool, .. } | TlsSetupError::NoCertificates { pool, .. } => {
                format!("upstreams.{pool}.tls_ca_file")
            }
            TlsSetupError::ClientAuth { pool, key, .. } => format!("upstreams.{pool}.{key}"),
        }
    }
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
    /// TLS targets must agree to HTTP/2 by ALPN.
    http2: bool,
}

/// The certificate chain and private key of `[upstreams.NAME]`'s mutual TLS (PEM files).
fn client_identity(
    pool: &str,
    cert_file: &str,
    key_file: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsSetupError> {
    let err = |key: &'static str, path: &str, message: String| TlsSetupError::ClientAuth {
        pool: pool.to_string(),
        key,
        path: path.to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| err("tls_client_cert", cert_file, format!("cannot read it: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| err("tls_client_cert", cert_file, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(err(
            "tls_client_cert",
            cert_file,
            "holds no certificate (it must be PEM: -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        err(
            "tls_client_key",
            key_file,
            format!("no usable PEM private key: {e}"),
        )
    })?;
    Ok((chain, key))
}

impl Dialer {
    /// A dialer for plain-HTTP targets only.
    pub fn plain() -> Dialer {
        Dialer {
            tls: None,
            http2: false,
        }
    }

    /// Whether connections speak HTTP/2 (`protocol = "http2"`).
    pub fn http2(&self) -> bool {
        self.http2
    }

    /// Build the TLS client for the pool's `https://` targets (reads `tls_ca_file`).
    pub fn new(up: &Upstream) -> Result<Dialer, TlsSetupError> {
        let http2 = up.protocol == holdfast_core::config::UpstreamProtocol::Http2;
        if !up.targets.iter().any(|t| t.tls) {
            return Ok(Dialer { tls: None, http2 });
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
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::CaFile {
                pool: up.name.clone(),
                path: String::new(),
                message: e.to_string(),
            })?
            .with_root_certificates(roots);
        let mut config = match &up.tls_client_auth {
            None => config.with_no_client_auth(),
            Some((cert_file, key_file)) => {
                let (chain, key) = client_identity(&up.name, cert_file, key_file)?;
                config
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsSetupError::ClientAuth {
                        pool: up.name.clone(),
                        key: "tls_client_key",
                        path: key_file.clone(),
                        message: format!("does not go with the certificate: {e}"),
                    })?
            }
        };
        // The pool's protocol, agreed by ALPN (see docs/ARCHITECTURE.md).
        config.alpn_protocols = if http2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(Dialer {
            tls: Some(TlsConnector::from(Arc::new(config))),
            http2,
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
                    if self.http2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                        return Err(DialError::Tls(
                            authority.clone(),
                            io::Error::other(
                                "the target did not agree to HTTP/2 (ALPN h2); use protocol = \"http1\" for it",
                            ),
                        ));
                    }
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
