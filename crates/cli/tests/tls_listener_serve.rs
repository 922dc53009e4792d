//! `server.tls_listen` on the binary: HTTPS through `holdfast serve`, the certificate read
//! again on SIGHUP (a rotated one serves new handshakes; one that does not load refuses the
//! reload and the old one stays), handshake failures in the metrics and on stderr, and
//! `holdfast check` reading the certificate and key. (The data-plane behaviour of TLS
//! listeners is tested in crates/proxy/tests/tls_listener.rs.)

mod proxy_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_testkit::pki::TestPki;
use holdfast_testkit::{Behavior, Misbehaving};
use proxy_support::{admin_get, metric_sum, Holdfast};
use tokio_rustls::rustls;

/// A CA (DER) and the PEM chain and key of a `localhost` certificate it signed.
struct Pki {
    ca: rustls::pki_types::CertificateDer<'static>,
    chain_pem: String,
    key_pem: String,
}

fn pki(name: &str) -> Pki {
    let made = TestPki::new(name);
    Pki {
        ca: made.ca_der.into(),
        chain_pem: made.chain_pem,
        key_pem: made.key_pem,
    }
}

/// Where the certificate and key live; `install` (re)writes them.
struct Files {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new(name: &str) -> Files {
        let dir =
            std::env::temp_dir().join(format!("holdfast-tls-serve-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Files {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        }
    }

    fn install(&self, pki: &Pki) {
        std::fs::write(&self.cert, &pki.chain_pem).unwrap();
        std::fs::write(&self.key, &pki.key_pem).unwrap();
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(upstream: &str, files: &Files) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\ntls_cert_file = {:?}\ntls_key_file = {:?}\nadmin = \"127.0.0.1:0\"\n\n[upstreams.pool]\ntargets = [\"{upstream}\"]\n\n[[routes]]\nupstream = \"pool\"\n",
        files.cert.display().to_string(),
        files.key.display().to_string()
    )
}

/// Poll `f` for up to 10 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The address of the TLS listener, from the `listening on https://` line.
fn tls_addr(hf: &Holdfast) -> SocketAddr {
    let mut addr = None;
    eventually("the TLS listener", || {
        addr = hf.stderr.lock().unwrap().iter().find_map(|l| {
            l.strip_prefix("holdfast: listening on https://")?
                .parse()
                .ok()
        });
        addr.is_some()
    });
    addr.unwrap_or_else(|| unreachable!())
}

/// `GET /` over HTTPS trusting only `ca`, `Connection: close`: the whole answer, or why not.
fn https_get(
    addr: SocketAddr,
    ca: &rustls::pki_types::CertificateDer<'static>,
) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn served(answer: &Result<String, String>) -> bool {
    answer
        .as_ref()
        .is_ok_and(|a| a.starts_with("HTTP/1.1 200 OK\r\n"))
}

#[test]
fn a_sighup_serves_a_rotated_certificate_and_refuses_a_broken_one() {
    let up = Misbehaving::start(Behavior::Healthy).unwrap();
    let files = Files::new("rotate");
    let (old, new) = (pki("old"), pki("new"));
    files.install(&old);
    let hf = Holdfast::start(&config(&up.url(), &files));
    let addr = tls_addr(&hf);
    let answer = https_get(addr, &old.ca);
    assert!(served(&answer), "{answer:?}");

    // Rotated in place: new handshakes get the new certificate.
    files.install(&new);
    hf.signal("HUP");
    eventually("the new certificate", || served(&https_get(addr, &new.ca)));
    let stale = https_get(addr, &old.ca);
    assert!(
        stale.is_err(),
        "the old certificate is still served: {stale:?}"
    );

    // A certificate that does not load: the reload is refused and the last one stays.
    std::fs::write(&files.cert, "not a certificate\n").unwrap();
    hf.signal("HUP");
    eventually("the refused reload", || {
        let stderr = hf.stderr.lock().unwrap().join("\n");
        stderr.contains("reload refused, the old config and certificate stay: server.tls_cert_file")
    });
    let answer = https_get(addr, &new.ca);
    assert!(served(&answer), "{answer:?}");
    // So is a key that does not go with the certificate.
    files.install(&new);
    std::fs::write(&files.key, &old.key_pem).unwrap();
    hf.signal("HUP");
    eventually("the refused reload", || {
        let stderr = hf.stderr.lock().unwrap().join("\n");
        stderr.contains("server.tls_key_file") && stderr.contains("is not the private key")
    });
    assert!(served(&https_get(addr, &new.ca)));
    // The plain listener was never touched.
    assert_eq!(hf.client().get("/").unwrap().status, 200);
}

#[test]
fn failed_handshakes_are_counted_and_logged() {
    let up = Misbehaving::start(Behavior::Healthy).unwrap();
    let files = Files::new("failures");
    let ours = pki("ours");
    files.install(&ours);
    let hf = Holdfast::start(&config(&up.url(), &files));
    let addr = tls_addr(&hf);
    // Plain HTTP to the TLS port: a 400 in plain text, then a FIN.
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).expect("a FIN, not a reset");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    // A client that does not trust the certificate.
    let other = pki("other");
    assert!(https_get(addr, &other.ca).is_err());
    assert!(served(&https_get(addr, &ours.ca)));

    let admin = hf.admin.expect("admin listener");
    eventually("the failure counters", || {
        let page = admin_get(admin, "/metrics");
        metric_sum(
            &page,
            "holdfast_tls_handshake_failures_total",
            "reason=\"plain_http\"",
        ) >= 1.0
            && metric_sum(
                &page,
                "holdfast_tls_handshake_failures_total",
                "reason=\"error\"",
            ) >= 1.0
    });
    let stderr = hf.stderr.lock().unwrap().join("\n");
    assert!(stderr.contains("TLS handshake failed"), "{stderr}");
}

#[test]
fn check_reads_the_certificate_and_key() {
    let files = Files::new("check");
    let (a, b) = (pki("a"), pki("b"));
    files.install(&a);
    let path = files.dir.join("holdfast.toml");
    let text = config("http://127.0.0.1:1", &files);
    std::fs::write(&path, &text).unwrap();
    let check = |path: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .arg("check")
            .arg(path)
            .output()
            .unwrap()
    };
    let out = check(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(&files.key, &b.key_pem).unwrap();
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = text
        .lines()
        .position(|l| l.starts_with("tls_key_file"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!("{}:{line}: server.tls_key_file:", path.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&files.key.display().to_string()),
        "{stderr}"
    );

    std::fs::remove_file(&files.cert).unwrap();
    let stderr = String::from_utf8_lossy(&check(&path).stderr).into_owned();
    assert!(
        stderr.contains("server.tls_cert_file: cannot read") && stderr.contains("(fix: "),
        "{stderr}"
    );
}
