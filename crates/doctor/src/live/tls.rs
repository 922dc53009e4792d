//! TLS handshakes with rustls: the real server name and a control name, with the failure
//! classified (reset, close, timeout, certificate or protocol error).

use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{AlertDescription, CertificateError};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};
use rustls_pki_types::pem::PemObject;

use crate::live::http::{is_reset, Timed};
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
    /// The TCP connect before the handshake failed.
    Connect(crate::live::tcp::ConnectFailure),
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::Reset => f.write_str("reset during the handshake"),
            TlsFailure::Closed => f.write_str("closed during the handshake"),
            TlsFailure::Timeout => f.write_str("no complete answer to the ClientHello in time"),
            TlsFailure::Refused(e) => write!(f, "handshake error: {e}"),
            TlsFailure::Connect(e) => write!(f, "connect: {e}"),
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

/// Verifies against the roots of `--ca-file`, and also accepts a server certificate that is
/// byte for byte one of the file's certificates and valid for the name (pinning): a
/// self-signed certificate with `CA:TRUE`, given as its own CA, works as with
/// `curl --cacert`.
#[derive(Debug)]
struct RootsOrPinned {
    roots: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for RootsOrPinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .roots
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(verified) => Ok(verified),
            Err(e)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                // Pinned: the certificate itself is trusted; its name must still match.
                let parsed = ParsedCertificate::try_from(end_entity).map_err(|_| e)?;
                verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.roots.supported_verify_schemes()
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
    } else if let Some(path) = ca_file {
        let bad = |reason: String| DoctorError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let mut roots = RootCertStore::empty();
        let mut pinned = Vec::new();
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert.clone()).map_err(|e| bad(e.to_string()))?;
            pinned.push(cert);
        }
        if roots.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        let roots = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| bad(e.to_string()))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(RootsOrPinned { roots, pinned }))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The config of the control handshake.
pub fn control_config() -> Result<Arc<ClientConfig>, DoctorError> {
    client_config(true, None)
}

/// Runs a handshake with `sni` over `tcp`, all within `timeout` (one deadline for the whole
/// handshake, however the server spreads its bytes).
pub fn handshake(
    tcp: TcpStream,
    sni: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<StreamOwned<ClientConnection, Timed>, TlsFailure> {
    let name = ServerName::try_from(sni.to_string())
        .map_err(|e| TlsFailure::Refused(format!("bad server name {sni:?}: {e}")))?;
    let mut conn =
        ClientConnection::new(config, name).map_err(|e| TlsFailure::Refused(e.to_string()))?;
    let mut io = Timed::new(tcp);
    io.set_deadline(Some(Instant::now() + timeout));
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut io) {
            return Err(classify(&e));
        }
    }
    io.set_deadline(None);
    Ok(StreamOwned::new(conn, io))
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
        let text = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(human)
            .unwrap_or_else(|| err.to_string());
        TlsFailure::Refused(text)
    }
}

/// A rustls error in words.
pub fn human(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => {
                "the server's certificate is not signed by a trusted CA (UnknownIssuer)".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate is not valid for this name (NotValidForName)".into()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired (Expired)".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet: check the clocks (NotValidYet)".into()
            }
            CertificateError::Revoked => "the server's certificate is revoked (Revoked)".into(),
            CertificateError::BadSignature => {
                "the server's certificate has a bad signature (BadSignature)".into()
            }
            CertificateError::BadEncoding => {
                "the server's certificate cannot be parsed (BadEncoding)".into()
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "the server's certificate is not meant for TLS servers (InvalidPurpose)".into()
            }
            other => {
                let name = format!("{other:?}");
                if name.contains("CaUsedAsEndEntity") {
                    "the server's certificate is a CA certificate (CA:TRUE), and a CA cannot be a server's own certificate unless that very certificate is trusted as is (CaUsedAsEndEntity)".into()
                } else {
                    format!("the server's certificate is not accepted ({name})")
                }
            }
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::HandshakeFailure => {
                "the server refused the handshake: no protocol version or cipher in common, or it wants a client certificate (alert HandshakeFailure)".into()
            }
            AlertDescription::UnrecognisedName => {
                "the server does not serve this name (alert UnrecognisedName)".into()
            }
            AlertDescription::ProtocolVersion => {
                "the server does not speak TLS 1.2 or 1.3 (alert ProtocolVersion)".into()
            }
            AlertDescription::CertificateRequired => {
                "the server wants a client certificate (alert CertificateRequired)".into()
            }
            other => format!("the server sent the TLS alert {other:?}"),
        },
        rustls::Error::InvalidMessage(m) => format!(
            "the server's answer is not TLS: is the port plain HTTP? (InvalidMessage {m:?})"
        ),
        rustls::Error::PeerIncompatible(p) => {
            format!("the server's TLS is incompatible with this client ({p:?})")
        }
        rustls::Error::PeerMisbehaved(p) => format!("the server broke the TLS protocol ({p:?})"),
        other => other.to_string(),
    }
}
