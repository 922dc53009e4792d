//! TLS to PostgreSQL, chosen by the store URL the way libpq users write it.
//!
//! - `sslmode=require`, `verify-ca` or `verify-full`: the connection is encrypted with rustls
//!   and the server certificate is always verified (the host name included, as libpq's
//!   `verify-full` does; an unverified "encrypted" connection is not offered).
//! - `sslrootcert=/path/ca.pem`: trust that PEM file instead of the bundled public roots
//!   (webpki-roots), e.g. for a private CA.
//! - `sslcert=/path/client.pem` and `sslkey=/path/client.key`: present this client certificate
//!   (for `cert` authentication in `pg_hba.conf`).
//! - no `sslmode`, `disable` or `prefer`: plain TCP, as before.
//!
//! Both the URL form (`postgres://u@host/db?sslmode=require&sslrootcert=/ca.pem`) and the
//! key/value form (`host=h user=u sslmode=require sslrootcert=/ca.pem`) are read.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::StoreError;

/// A parsed PostgreSQL target: the driver's config and, when asked for, the TLS connector.
pub(crate) struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: Option<MakeRustlsConnect>,
}

/// What the URL says about TLS, and the URL without the parts the driver does not take.
#[derive(Debug, PartialEq)]
struct TlsOptions {
    /// The URL for the driver (`verify-*` becomes `require`, `sslrootcert` is removed).
    cleaned: String,
    tls: bool,
    root_cert: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
}

fn split_options(url: &str) -> TlsOptions {
    let mut tls = false;
    let mut root_cert = None;
    let mut client_cert = None;
    let mut client_key = None;
    let mut keep = |key: &str, value: &str| -> Option<String> {
        match key {
            "sslrootcert" => {
                root_cert = Some(value.to_string());
                None
            }
            "sslcert" => {
                client_cert = Some(value.to_string());
                None
            }
            "sslkey" => {
                client_key = Some(value.to_string());
                None
            }
            "sslmode" => {
                let mode = match value {
                    "verify-ca" | "verify-full" => "require",
                    other => other,
                };
                tls = mode == "require";
                Some(format!("{key}={mode}"))
            }
            _ => Some(format!("{key}={value}")),
        }
    };
    let cleaned = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let params: Vec<String> = query
                    .split('&')
                    .filter(|p| !p.is_empty())
                    .filter_map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        keep(k, &percent_decode(v))
                    })
                    .collect();
                if params.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", params.join("&"))
                }
            }
            None => url.to_string(),
        }
    } else {
        url.split_whitespace()
            .filter_map(|p| match p.split_once('=') {
                Some((k, v)) => keep(k, v),
                None => Some(p.to_string()),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    TlsOptions {
        cleaned,
        tls,
        root_cert,
        client_cert,
        client_key,
    }
}

/// `%2F` and friends in a query value (a CA path written into a URL).
fn percent_decode(v: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Check a PostgreSQL store URL without connecting: it parses, and the TLS it asks for can be
/// set up (the `sslrootcert` file is read). For `holdfast check`.
pub fn check_postgres_url(url: &str) -> Result<(), StoreError> {
    target(url).map(|_| ())
}

/// Parse a store URL into the driver's config and the TLS it asks for.
pub(crate) fn target(url: &str) -> Result<PgTarget, StoreError> {
    let opts = split_options(url);
    let config: tokio_postgres::Config = opts.cleaned.parse()?;
    if !opts.tls {
        let given = [
            ("sslrootcert", &opts.root_cert),
            ("sslcert", &opts.client_cert),
            ("sslkey", &opts.client_key),
        ];
        if let Some((key, _)) = given.iter().find(|(_, v)| v.is_some()) {
            return Err(StoreError::PgTls(format!(
                "`{key}` is set but `sslmode` is not `require`, `verify-ca` or `verify-full`: \
                 add `sslmode=verify-full` to use TLS"
            )));
        }
        return Ok(PgTarget { config, tls: None });
    }
    let mut roots = rustls::RootCertStore::empty();
    match &opts.root_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| StoreError::PgTls(format!("cannot read sslrootcert {path}: {e}")))?;
            for cert in certs.flatten() {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(StoreError::PgTls(format!(
                    "sslrootcert {path} holds no PEM certificate"
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::PgTls(e.to_string()))?
        .with_root_certificates(roots);
    let tls = match (&opts.client_cert, &opts.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let (chain, key_der) = client_identity(cert, key)?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                StoreError::PgTls(format!("sslkey {key} does not go with sslcert {cert}: {e}"))
            })?
        }
        _ => {
            return Err(StoreError::PgTls(
                "a client certificate needs both `sslcert` and `sslkey`".into(),
            ))
        }
    };
    Ok(PgTarget {
        config,
        tls: Some(MakeRustlsConnect::new(tls)),
    })
}

/// The client certificate chain and key of `sslcert` / `sslkey` (PEM files).
fn client_identity(
    cert: &str,
    key: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), StoreError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| StoreError::PgTls(format!("cannot read sslcert {cert}: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::PgTls(format!("sslcert {cert} is not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(StoreError::PgTls(format!(
            "sslcert {cert} holds no PEM certificate"
        )));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        StoreError::PgTls(format!("sslkey {key} holds no usable PEM private key: {e}"))
    })?;
    Ok((chain, key_der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_form_keeps_driver_options_and_takes_out_the_root_cert() {
        let o = split_options(
            "postgres://u:p@db.example:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5",
        );
        assert_eq!(
            o,
            TlsOptions {
                cleaned: "postgres://u:p@db.example:5432/app?sslmode=require&connect_timeout=5"
                    .into(),
                tls: true,
                root_cert: Some("/etc/ca.pem".into()),
                client_cert: None,
                client_key: None,
            }
        );
        let plain = split_options("postgres://u@localhost/app");
        assert!(!plain.tls);
        assert_eq!(plain.cleaned, "postgres://u@localhost/app");
        assert!(!split_options("postgres://u@h/app?sslmode=prefer").tls);
        assert!(split_options("postgresql://u@h/app?sslmode=require").tls);
    }

    #[test]
    fn key_value_form_is_read_too() {
        let o = split_options(
            "host=db user=u sslmode=verify-ca sslrootcert=/ca.pem sslcert=/c.pem sslkey=/c.key",
        );
        assert_eq!(o.cleaned, "host=db user=u sslmode=require");
        assert_eq!(o.client_cert.as_deref(), Some("/c.pem"));
        assert_eq!(o.client_key.as_deref(), Some("/c.key"));
        assert!(o.tls);
        assert_eq!(o.root_cert.as_deref(), Some("/ca.pem"));
    }

    #[test]
    fn a_root_cert_without_tls_and_a_missing_file_are_clear_errors() {
        let e = target("postgres://u@h/app?sslrootcert=/ca.pem")
            .err()
            .unwrap();
        assert!(e.to_string().contains("sslmode=verify-full"), "{e}");
        let e = target("postgres://u@h/app?sslmode=require&sslrootcert=/nonexistent/ca.pem")
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        assert!(target("postgres://u@h/app?sslmode=require")
            .unwrap()
            .tls
            .is_some());
        assert!(target("postgres://u@h/app").unwrap().tls.is_none());
        let e = target("postgres://u@h/app?sslmode=require&sslcert=/c.pem")
            .err()
            .unwrap();
        assert!(e.to_string().contains("both `sslcert` and `sslkey`"), "{e}");
        let e = target("postgres://u@h/app?sslkey=/c.key").err().unwrap();
        assert!(e.to_string().contains("`sslkey` is set"), "{e}");
    }

    /// Arbitrary text (percent signs, multi-byte characters, stray `=`/`&`) never panics.
    #[test]
    fn odd_urls_never_panic() {
        use rand::{Rng, SeedableRng};
        let pieces = [
            "postgres://",
            "u@h/db",
            "?",
            "&",
            "=",
            "%",
            "%2",
            "%zz",
            "%2F",
            "é",
            "ü%",
            "sslmode",
            "sslrootcert",
            "sslcert",
            "sslkey",
            "verify-full",
            "require",
            " ",
            "host=h",
            "",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let n = rng.random_range(0..12);
            let url: String = (0..n)
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            let _ = split_options(&url);
            let _ = percent_decode(&url);
            let _ = target(&url);
        }
    }
}
