//! TLS handshakes with rustls: the real server name and a control name, with the failure
//! classified (reset, close, timeout, certificate or protocol error).

use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};
use rustls_pki_types::pem::PemObject;

use crate::live::http::is_reset;
use crate::live::DoctorError;

/// How a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// A TCP reset during the handshake.
    Reset,
    /// The server closed the connection during the handshake.
    Closed,
    /// No answer in time.
    Timeout,
    /// A certificate or protocol error (the handshake got an answer).
    Refused(String),
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::Reset => f.write_str("reset during the handshake"),
            TlsFailure::Closed => f.write_str("closed during the handshake"),
            TlsFailure::Timeout => f.write_str("no answer to the ClientHello"),
            TlsFailure::Refused(e) => write!(f, "handshake error: {e}"),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate (for `--insecure` and the control handshake, which only asks
/// whether the server answers at all).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client config: any certificate (`insecure`), a private CA file, or the web roots.
pub fn client_config(
    insecure: bool,
    ca_file: Option<&Path>,
) -> Result<Arc<ClientConfig>, DoctorError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| DoctorError::Tls(e.to_string()))?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let bad = |reason: String| DoctorError::CaFile {
                    path: path.display().to_string(),
                    reason,
                };
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
                    roots
                        .add(cert.map_err(|e| bad(e.to_string()))?)
                        .map_err(|e| bad(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(bad("no PEM certificate in it".into()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The config of the control handshake.
pub fn control_config() -> Result<Arc<ClientConfig>, DoctorError> {
    client_config(true, None)
}

/// Runs a handshake with `sni` over `tcp`.
pub fn handshake(
    tcp: TcpStream,
    sni: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<StreamOwned<ClientConnection, TcpStream>, TlsFailure> {
    let name = ServerName::try_from(sni.to_string())
        .map_err(|e| TlsFailure::Refused(format!("bad server name {sni:?}: {e}")))?;
    let mut conn =
        ClientConnection::new(config, name).map_err(|e| TlsFailure::Refused(e.to_string()))?;
    let mut tcp = tcp;
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            return Err(classify(&e));
        }
    }
    Ok(StreamOwned::new(conn, tcp))
}

fn classify(err: &io::Error) -> TlsFailure {
    if is_reset(err) {
        TlsFailure::Reset
    } else if matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        TlsFailure::Timeout
    } else if err.kind() == io::ErrorKind::UnexpectedEof {
        TlsFailure::Closed
    } else {
        TlsFailure::Refused(err.to_string())
    }
}
