//! Per-service JWT validation (`[[management.jwt]]`): HS256 with a shared secret, RS256 and
//! ES256 with public keys from a JWKS URL (fetched over HTTP, cached, refreshed in the
//! background and re-fetched on an unknown `kid`), an inline JWKS or an inline PEM. Checks the
//! signature, `exp`/`nbf` with a leeway, and optionally `iss` and `aud`; the configured claim
//! (default `sub`) names the consumer. The request path never touches the database.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast_core::config::management::{JwtAlgorithm, JwtConfig, JwtKeys};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls::pki_types::CertificateDer;

/// Least time between two fetches of a JWKS URL triggered by unknown `kid`s.
const MIN_REFETCH: Duration = Duration::from_secs(10);
/// Time limit of one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// An error with its causes (hyper's client errors name the cause only in `source`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Why a JWT was refused; the text is the JSON message of the answer.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("a JWT is required for service `{0}`: send `Authorization: Bearer <jwt>`")]
    Missing(String),
    #[error("the JWT has expired (exp)")]
    Expired,
    #[error("the JWT is not valid yet (nbf)")]
    NotYetValid,
    #[error("the JWT signature is not valid")]
    BadSignature,
    #[error("the JWT audience (aud) is wrong: expected `{0}`")]
    WrongAudience(String),
    #[error("the JWT issuer (iss) is wrong: expected `{0}`")]
    WrongIssuer(String),
    #[error("the JWT algorithm is not accepted: this service takes {0:?}")]
    WrongAlgorithm(Algorithm),
    #[error("the JWT lacks the required `{claim}` claim ({kind})", claim = .0, kind = claim_kind(.0))]
    MissingClaim(String),
    #[error("the JWT lacks the required audience (aud) claim: expected `{0}` (a string or an array of strings)")]
    MissingAudience(String),
    #[error("the JWT lacks the required issuer (iss) claim: expected `{0}`")]
    MissingIssuer(String),
    #[error("the JWT's `{claim}` claim is not {kind}", claim = .0, kind = claim_kind(.0))]
    BadClaim(String),
    #[error("the JWT key id (kid) `{0}` is not in the service's key set")]
    UnknownKid(String),
    #[error("the JWT has no key id (kid) and the service's key set holds {0} keys")]
    NoKid(usize),
    #[error("the JWT is malformed: {0}")]
    Malformed(String),
    #[error("the signing keys of this service could not be loaded: {0}")]
    KeysUnavailable(String),
}

/// What a claim must hold: a number of seconds for the time claims, else a string.
fn claim_kind(claim: &str) -> &'static str {
    match claim {
        "exp" | "nbf" | "iat" => "a number: seconds since the Unix epoch",
        _ => "a string",
    }
}

/// Keys by `kid`, plus the keys that have none.
#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, DecodingKey>,
    unnamed: Vec<DecodingKey>,
    loaded: bool,
}

impl KeySet {
    fn parse(json: &str) -> Result<KeySet, String> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| format!("bad JWKS: {e}"))?;
        let mut keys = KeySet {
            loaded: true,
            ..KeySet::default()
        };
        for jwk in &set.keys {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("bad JWK: {e}"))?;
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid.clone(), key);
                }
                None => keys.unnamed.push(key),
            }
        }
        Ok(keys)
    }

    fn len(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }

    fn pick(&self, kid: Option<&str>) -> Result<DecodingKey, JwtError> {
        match kid {
            Some(kid) => self
                .by_kid
                .get(kid)
                .cloned()
                .ok_or_else(|| JwtError::UnknownKid(kid.to_string())),
            None if self.len() == 1 => Ok(self
                .by_kid
                .values()
                .chain(&self.unnamed)
                .next()
                .cloned()
                .ok_or(JwtError::NoKid(0))?),
            None => Err(JwtError::NoKid(self.len())),
        }
    }
}

/// The client JWKS documents are fetched with: http, or https verified against the webpki
/// roots, or only against `ca_file` (PEM) when the config names one (plus `extra_root`, for
/// tests), with an explicit rustls crypto provider so it never depends on which rustls
/// features other crates of the binary enable.
type JwksClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn jwks_client(
    ca_file: Option<&str>,
    extra_root: Option<CertificateDer<'static>>,
) -> Result<JwksClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read jwks_ca_file {path}: {e}"))?;
            for cert in certs.flatten() {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(format!("jwks_ca_file {path} holds no PEM certificate"));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    if let Some(cert) = extra_root {
        roots
            .add(cert)
            .map_err(|e| format!("extra root certificate: {e}"))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(FETCH_TIMEOUT));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// A JWKS document at a URL, cached.
struct RemoteKeys {
    url: String,
    http: JwksClient,
    keys: RwLock<Arc<KeySet>>,
    /// Serialises fetches; holds the time of the last attempt.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl RemoteKeys {
    fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Fetch the document now, unless another fetch ran less than `min_gap` ago.
    async fn fetch(&self, min_gap: Duration) -> Result<(), String> {
        let mut last = self.fetching.lock().await;
        if last.is_some_and(|t| t.elapsed() < min_gap) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let get = async {
            let req = http::Request::get(self.url.as_str())
                .header(http::header::ACCEPT, "application/json")
                .header(http::header::USER_AGENT, "holdfast")
                .body(Empty::new())
                .map_err(|e| format!("GET {}: {e}", self.url))?;
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| format!("GET {}: {}", self.url, error_chain(&e)))?;
            if !resp.status().is_success() {
                return Err(format!("GET {}: status {}", self.url, resp.status()));
            }
            let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("GET {}: {e}", self.url))?
                .to_bytes();
            String::from_utf8(body.to_vec()).map_err(|_| format!("GET {}: not UTF-8", self.url))
        };
        let body = tokio::time::timeout(FETCH_TIMEOUT, get)
            .await
            .map_err(|_| format!("GET {}: no answer within 5 s", self.url))??;
        let set = KeySet::parse(&body)?;
        if let Ok(mut k) = self.keys.write() {
            *k = Arc::new(set);
        }
        Ok(())
    }
}

enum Keys {
    Fixed(KeySet),
    Remote(Arc<RemoteKeys>),
}

/// The JWT check of one service.
pub struct Verifier {
    config: JwtConfig,
    validation: Validation,
    keys: Keys,
}

impl Verifier {
    /// Build from config; inline keys are parsed now (errors name the key).
    pub fn new(config: &JwtConfig) -> Result<Verifier, String> {
        Verifier::with_root(config, None)
    }

    /// [`Verifier::new`], trusting `extra_root` too for an https JWKS URL (tests).
    pub fn with_root(
        config: &JwtConfig,
        extra_root: Option<CertificateDer<'static>>,
    ) -> Result<Verifier, String> {
        let at =
            |what: &str, e: String| format!("management.jwt `{}`: {what}: {e}", config.service);
        let algorithm = match config.algorithm {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
            JwtAlgorithm::Es256 => Algorithm::ES256,
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_s;
        validation.validate_nbf = true;
        // jsonwebtoken checks `aud` / `iss` only when the token carries them, unless they are
        // required: a configured audience or issuer must be present, not just not wrong.
        let mut required = vec!["exp"];
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let keys = match &config.keys {
            JwtKeys::Secret(s) => Keys::Fixed(KeySet {
                unnamed: vec![DecodingKey::from_secret(s.as_bytes())],
                loaded: true,
                ..KeySet::default()
            }),
            JwtKeys::Jwks(json) => Keys::Fixed(KeySet::parse(json).map_err(|e| at("jwks", e))?),
            JwtKeys::PublicKeyPem(pem) => {
                let key = match config.algorithm {
                    JwtAlgorithm::Es256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                    _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
                }
                .map_err(|e| at("public_key_pem", e.to_string()))?;
                Keys::Fixed(KeySet {
                    unnamed: vec![key],
                    loaded: true,
                    ..KeySet::default()
                })
            }
            JwtKeys::JwksUrl(url) => Keys::Remote(Arc::new(RemoteKeys {
                url: url.clone(),
                http: jwks_client(config.jwks_ca_file.as_deref(), extra_root)
                    .map_err(|e| at("jwks_url", e))?,
                keys: RwLock::new(Arc::new(KeySet::default())),
                fetching: tokio::sync::Mutex::new(None),
            })),
        };
        Ok(Verifier {
            config: config.clone(),
            validation,
            keys,
        })
    }

    /// Start the background refresh of a JWKS URL (first fetch now). Needs a Tokio runtime.
    fn start_refresh(&self) {
        if let Keys::Remote(remote) = &self.keys {
            let every = Duration::from_secs(self.config.jwks_refresh_s);
            tokio::spawn(refresh_loop(Arc::downgrade(remote), every));
        }
    }

    /// Check `token`; returns the consumer name it carries.
    pub async fn verify(&self, token: &str) -> Result<String, JwtError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
        let key = match &self.keys {
            Keys::Fixed(set) => set.pick(header.kid.as_deref())?,
            Keys::Remote(remote) => {
                let set = remote.current();
                match set.pick(header.kid.as_deref()) {
                    Ok(key) => key,
                    Err(first) => {
                        // Not loaded yet, or keys rotated: fetch again (rate limited).
                        let gap = if set.loaded {
                            MIN_REFETCH
                        } else {
                            Duration::ZERO
                        };
                        if let Err(e) = remote.fetch(gap).await {
                            if !set.loaded {
                                return Err(JwtError::KeysUnavailable(e));
                            }
                            tracing::warn!(error = %e, "JWKS re-fetch failed");
                        }
                        let set = remote.current();
                        if !set.loaded {
                            return Err(JwtError::KeysUnavailable(
                                "the key set was not fetched yet".into(),
                            ));
                        }
                        set.pick(header.kid.as_deref()).map_err(|_| first)?
                    }
                }
            }
        };
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &self.validation,
        )
        .map_err(|e| self.explain(e.into_kind()))?;
        let claim = &self.config.consumer_claim;
        data.claims
            .get(claim)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| JwtError::MissingClaim(claim.clone()))
    }

    fn explain(&self, kind: ErrorKind) -> JwtError {
        match kind {
            ErrorKind::ExpiredSignature => JwtError::Expired,
            ErrorKind::ImmatureSignature => JwtError::NotYetValid,
            ErrorKind::InvalidSignature => JwtError::BadSignature,
            ErrorKind::InvalidAudience => {
                JwtError::WrongAudience(self.config.audience.clone().unwrap_or_default())
            }
            ErrorKind::InvalidIssuer => {
                JwtError::WrongIssuer(self.config.issuer.clone().unwrap_or_default())
            }
            ErrorKind::InvalidAlgorithm => JwtError::WrongAlgorithm(self.validation.algorithms[0]),
            // Also when the claim is there but is neither a string nor an array of strings.
            ErrorKind::MissingRequiredClaim(c) if c == "aud" => {
                JwtError::MissingAudience(self.config.audience.clone().unwrap_or_default())
            }
            ErrorKind::MissingRequiredClaim(c) if c == "iss" => {
                JwtError::MissingIssuer(self.config.issuer.clone().unwrap_or_default())
            }
            ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(c),
            ErrorKind::InvalidClaimFormat(c) => JwtError::BadClaim(c),
            other => JwtError::Malformed(format!("{other:?}")),
        }
    }
}

async fn refresh_loop(remote: Weak<RemoteKeys>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(remote) = remote.upgrade() else {
            return;
        };
        if let Err(e) = remote.fetch(Duration::ZERO).await {
            tracing::warn!(error = %e, "JWKS refresh failed; keeping the last key set");
        }
    }
}

/// The JWT verifiers of every service that has one.
#[derive(Default)]
pub struct Verifiers(HashMap<String, Verifier>);

impl Verifiers {
    /// Build every `[[management.jwt]]` entry and start the JWKS refreshes.
    pub fn start(configs: &[JwtConfig]) -> Result<Verifiers, String> {
        let mut map = HashMap::new();
        for c in configs {
            let v = Verifier::new(c)?;
            v.start_refresh();
            map.insert(c.service.clone(), v);
        }
        Ok(Verifiers(map))
    }

    /// The verifier of `service`, if it requires a JWT.
    pub fn get(&self, service: &str) -> Option<&Verifier> {
        self.0.get(service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An https server on 127.0.0.1 answering every request with `body`, with a fresh
    /// self-signed certificate for `localhost`: (port, certificate).
    async fn https_server(body: String) -> (u16, CertificateDer<'static>) {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        let cert = certified.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, cert)
    }

    fn es256_config(url: String) -> JwtConfig {
        JwtConfig {
            service: "maps".into(),
            algorithm: JwtAlgorithm::Es256,
            keys: JwtKeys::JwksUrl(url),
            issuer: None,
            audience: None,
            consumer_claim: "sub".into(),
            leeway_s: 30,
            jwks_refresh_s: 300,
            jwks_ca_file: None,
        }
    }

    #[tokio::test]
    async fn jwks_over_https() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let raw = pair.public_key_raw(); // 0x04 || x || y
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "k1",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }]});
        let (port, cert) = https_server(jwks.to_string()).await;
        let url = format!("https://localhost:{port}/jwks.json");
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        let exp = holdfast_store::now_ms() / 1000 + 300;
        let token = encode(
            &header,
            &serde_json::json!({"sub": "c1", "exp": exp}),
            &EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("ec key"),
        )
        .expect("sign");

        // Trusting the server's certificate: the keys load over TLS and the token verifies.
        let trusted =
            Verifier::with_root(&es256_config(url.clone()), Some(cert.clone())).expect("ok");
        assert_eq!(trusted.verify(&token).await.expect("verified"), "c1");

        // The same certificate as `jwks_ca_file` (PEM on disk): trusted from the config.
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode(cert.as_ref())
        );
        let ca_path = std::env::temp_dir().join(format!("holdfast-jwks-ca-{port}.pem"));
        std::fs::write(&ca_path, pem).expect("write CA");
        let mut from_file = es256_config(url.clone());
        from_file.jwks_ca_file = Some(ca_path.to_string_lossy().into_owned());
        let via_file = Verifier::new(&from_file).expect("ok");
        assert_eq!(via_file.verify(&token).await.expect("verified"), "c1");
        let _ = std::fs::remove_file(&ca_path);
        // A CA file that is not there is a clear setup error.
        from_file.jwks_ca_file = Some("/nonexistent/idp-ca.pem".into());
        let err = Verifier::new(&from_file).err().expect("missing CA file");
        assert!(
            err.contains("jwks_ca_file /nonexistent/idp-ca.pem"),
            "{err}"
        );

        // The webpki roots alone do not trust a self-signed certificate: no keys, no pass.
        let untrusted = Verifier::new(&es256_config(url)).expect("ok");
        match untrusted.verify(&token).await {
            Err(JwtError::KeysUnavailable(why)) => {
                assert!(why.contains("certificate"), "{why}")
            }
            other => panic!("expected KeysUnavailable, got {other:?}"),
        }
    }
}
