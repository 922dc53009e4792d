//! Shared support for the `doctor_*` loopback tests: servers on 127.0.0.1, a certificate for
//! `localhost`, the doctor's options for one quick probe, and lookups in its report.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use holdfast_doctor::live::{self, Check, DoctorOptions, DoctorReport, Silent};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

/// Whether the test runs as root (the capture needs AF_PACKET).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A listener on 127.0.0.1 handing each connection to `handle` on its own thread; returns
/// its port.
pub fn serve_each<F>(handle: F) -> u16
where
    F: Fn(TcpStream) + Clone + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handle = handle.clone();
            std::thread::spawn(move || handle(stream));
        }
    });
    port
}

/// A TLS server configuration (ring) for one DER certificate and its PKCS#8 DER key.
pub fn tls_config(cert_der: Vec<u8>, key_der: Vec<u8>) -> Arc<ServerConfig> {
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert_der)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
            )
            .unwrap();
    Arc::new(config)
}

/// A self-signed certificate for `localhost`: its PEM and a server configuration with it.
pub fn localhost_cert() -> (String, Arc<ServerConfig>) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let config = tls_config(key.cert.der().to_vec(), key.signing_key.serialize_der());
    (key.cert.pem(), config)
}

/// Options for one quick probe on loopback: one repeat, two hops, no capture, no proxy from
/// the environment, `timeout` per step.
pub fn quick_options(url: &str, timeout: Duration) -> DoctorOptions {
    let mut options = DoctorOptions::new(url);
    options.timeout = timeout;
    options.max_idle = Duration::from_secs(1);
    options.repeat = 1;
    options.max_hops = 2;
    options.capture = false;
    options.proxy_env = Some(Vec::new());
    options
}

/// Runs the doctor and prints its report (seen when the test fails).
pub fn run_doctor(options: &DoctorOptions) -> DoctorReport {
    let report = live::run(options, &mut Silent).expect("the doctor runs");
    print_report(&report);
    report
}

/// Prints a report as JSON to stderr.
pub fn print_report(report: &DoctorReport) {
    eprintln!("{}", serde_json::to_string_pretty(report).unwrap());
}

/// The (first) check called `name`.
pub fn check<'a>(report: &'a DoctorReport, name: &str) -> &'a Check {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} check"))
}

/// The `capture` check at the end of the report.
pub fn end_capture(report: &DoctorReport) -> &Check {
    report
        .checks
        .iter()
        .rev()
        .find(|c| c.name == "capture")
        .expect("the end capture check")
}

/// Writes and flushes `bytes`, ignoring errors (the peer may be gone).
pub fn send(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes).and_then(|_| stream.flush());
}

/// Writes `bytes` every `every` until the peer is gone.
pub fn trickle(stream: &mut TcpStream, bytes: &[u8], every: Duration) {
    loop {
        std::thread::sleep(every);
        if stream.write_all(bytes).is_err() {
            return;
        }
    }
}
