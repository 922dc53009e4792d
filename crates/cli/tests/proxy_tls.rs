//! `https://` upstream targets: TLS with the target host as server name, trust from the pool's
//! `tls_ca_file`; a certificate the pool does not trust is a 502 that says so, never a reset.

mod proxy_support;

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use proxy_support::Holdfast;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tokio_rustls::rustls;

/// A CA, a `localhost` certificate it signed, and the CA's PEM; plus a client certificate
/// (and key) it signed, for mutual TLS.
struct Pki {
    ca_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
    client_cert_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "holdfast test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "holdfast gateway");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_der: leaf.der().to_vec(),
        key_der: leaf_key.serialize_der(),
        client_cert_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// An HTTPS server on loopback answering `tls ok <path>`; runs until the test ends. With
/// `require_client_cert`, only clients with a certificate from the test CA get through.
fn https_server(pki: &Pki, require_client_cert: bool) -> SocketAddr {
    let cert = rustls::pki_types::CertificateDer::from(pki.cert_der.clone());
    let key = rustls::pki_types::PrivateKeyDer::try_from(pki.key_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client_cert {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(vec![cert], key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let text = format!("tls ok {}", req.uri().path());
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            text,
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
    });
    addr
}

fn config(target: &str, ca_file: Option<&std::path::Path>) -> String {
    let ca = ca_file
        .map(|p| format!("tls_ca_file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[upstreams.secure]\ntargets = [\"{target}\"]\n{ca}\n[[routes]]\nupstream = \"secure\"\n"
    )
}

#[test]
fn https_targets_are_reached_over_tls_with_the_pools_ca() {
    let pki = pki();
    let addr = https_server(&pki, false);
    let dir = std::env::temp_dir().join(format!("holdfast-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();

    let target = format!("https://localhost:{}", addr.port());
    let hf = Holdfast::start(&config(&target, Some(&ca_file)));
    let mut client = hf.client();
    for path in ["/a", "/b"] {
        let a = client.get(path).unwrap();
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.text(), format!("tls ok {path}"));
    }

    // Without the CA the certificate is not trusted (bundled public roots only): an honest 502.
    let untrusted = Holdfast::start(&config(&target, None));
    let a = untrusted.client().get("/a").unwrap();
    assert_eq!(a.status, 502, "{}", a.text());
    assert!(a.text().contains("TLS handshake"), "{}", a.text());

    // A CA file that is not PEM stops the start with the key named.
    let bad = dir.join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["serve", "--config"])
        .arg({
            let cfg = dir.join("bad.toml");
            std::fs::write(&cfg, config(&target, Some(&bad))).unwrap();
            cfg
        })
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("upstreams.secure.tls_ca_file"), "{err}");
    // `check` names the line as well.
    let cfg = dir.join("bad.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .arg("check")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("tls_ca_file"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("bad.toml:{line}: upstreams.secure.tls_ca_file")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pool_presents_its_client_certificate_to_targets_that_require_one() {
    let pki = pki();
    let addr = https_server(&pki, true);
    let dir = std::env::temp_dir().join(format!("holdfast-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("client.pem"),
        dir.join("client.key"),
    );
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&cert, &pki.client_cert_pem).unwrap();
    std::fs::write(&key, &pki.client_key_pem).unwrap();
    let target = format!("https://localhost:{}", addr.port());
    let with_identity = config(&target, Some(&ca)).replace(
        "tls_ca_file",
        &format!(
            "tls_client_cert = \"{}\"\ntls_client_key = \"{}\"\ntls_ca_file",
            cert.display(),
            key.display()
        ),
    );
    let hf = Holdfast::start(&with_identity);
    let a = hf.client().get("/m").unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.text(), "tls ok /m");

    // Without a client certificate the target refuses the handshake: a 502, never a reset.
    let anonymous = Holdfast::start(&config(&target, Some(&ca)));
    let a = anonymous.client().get("/m").unwrap();
    assert_eq!(a.status, 502, "{}", a.text());

    // A key file that is not a key stops `check` with the key named.
    let bad_key = dir.join("bad.key");
    std::fs::write(&bad_key, "not a key").unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(
        &cfg,
        with_identity.replace(&key.display().to_string(), &bad_key.display().to_string()),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .arg("check")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("upstreams.secure.tls_client_key"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTPS server that offers only HTTP/2 (ALPN `h2`), answering `tls VERSION <path>`.
fn https_h2_server(pki: &Pki) -> SocketAddr {
    let cert = rustls::pki_types::CertificateDer::from(pki.cert_der.clone());
    let key = rustls::pki_types::PrivateKeyDer::try_from(pki.key_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let text = format!("tls {:?} {}", req.version(), req.uri().path());
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            text,
                        ))))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
                });
            }
        });
    });
    addr
}

#[test]
fn http2_pools_agree_on_h2_by_alpn() {
    let pki = pki();
    let h2 = https_h2_server(&pki);
    let h1 = https_server(&pki, false);
    let dir = std::env::temp_dir().join(format!("holdfast-tls-h2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let with = |port: u16| {
        config(&format!("https://localhost:{port}"), Some(&ca_file))
            .replace("[[routes]]", "protocol = \"http2\"\n\n[[routes]]")
    };
    let hf = Holdfast::start(&with(h2.port()));
    let a = hf.client().get("/a").unwrap();
    assert_eq!((a.status, a.text()), (200, "tls HTTP/2.0 /a".to_string()));
    // A target that does not offer h2 is a failed connect: a 502 that says why.
    let hf = Holdfast::start(&with(h1.port()));
    let a = hf.client().get("/a").unwrap();
    assert_eq!(a.status, 502, "{}", a.text());
    assert!(a.text().contains("did not agree to HTTP/2"), "{}", a.text());
    let _ = std::fs::remove_dir_all(&dir);
}
