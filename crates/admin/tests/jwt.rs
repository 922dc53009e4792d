//! Per-service JWT validation on the request guard: HS256 with a shared secret (valid,
//! expired, tampered, wrong audience, unknown consumer, no subscription) and ES256 with keys
//! from a JWKS served by a local HTTP server on 127.0.0.1.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine;
use common::*;
use holdfast_core::config::management::{JwtAlgorithm, JwtConfig, JwtKeys, StoreUrl};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const HS_SECRET: &str = "jwt-shared-secret-0123456789abcdef";

fn jwt_entry(service: &str, algorithm: JwtAlgorithm, keys: JwtKeys) -> JwtConfig {
    JwtConfig {
        service: service.into(),
        algorithm,
        keys,
        issuer: Some("https://idp.test".into()),
        audience: Some(format!("{service}-api")),
        consumer_claim: "sub".into(),
        leeway_s: 5,
        jwks_refresh_s: 300,
        jwks_ca_file: None,
    }
}

fn now_s() -> i64 {
    holdfast_store::now_ms() / 1000
}

fn claims(sub: &str, aud: &str, exp_in_s: i64) -> serde_json::Value {
    json!({ "sub": sub, "aud": aud, "iss": "https://idp.test", "exp": now_s() + exp_in_s, "iat": now_s() })
}

fn hs_token(claims: &serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .expect("sign")
}

async fn node_with(dir: &tempfile::TempDir, jwt: Vec<JwtConfig>) -> Node {
    let path = dir.path().join("m.db").to_string_lossy().into_owned();
    let mut cfg = config(StoreUrl::Sqlite(path), "acme", "beta");
    cfg.jwt = jwt;
    let node = Node::start(cfg).await;
    let (s, v) = node
        .api("POST", "/admin/tenants", SUPER, Some(r#"{"name":"acme"}"#))
        .await;
    assert_eq!(s, 201, "{v}");
    node
}

/// Subscribe `consumer` to `service`; an existing subscription (200) is fine too.
async fn subscribe(node: &Node, consumer: &str, service: &str) {
    let (s, v) = subscription(node, consumer, service).await;
    assert!(s == 201 || s == 200, "{s} {v}");
}

#[tokio::test]
async fn hs256_token_passes_and_bad_tokens_get_401() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = node_with(
        &dir,
        vec![jwt_entry(
            "pay",
            JwtAlgorithm::Hs256,
            JwtKeys::Secret(HS_SECRET.into()),
        )],
    )
    .await;
    let key = provision(&node, ADMIN_A, "acme", "pay", r#"{"name":"pay"}"#).await;

    let good = hs_token(&claims("c1", "pay-api", 300));
    // A valid token, but consumer c1 is not subscribed yet.
    let (s, _, body, _) = node.call("pay", Some(&good)).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("no subscription"), "{body}");
    subscribe(&node, "c1", "pay").await;

    let (s, _, body, extra) = node.call("pay", Some(&good)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(extra.consumer.as_deref(), Some("c1"));
    assert_eq!(extra.tenant.as_deref(), Some("acme"));
    assert_eq!(extra.key_prefix.as_deref(), Some("jwt"));

    // The service takes JWTs: an API key is not a JWT.
    let (s, _, body, _) = node.call("pay", Some(&key)).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("malformed"), "{body}");

    let (s, h, body, _) = node.call("pay", None).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("a JWT is required"), "{body}");
    assert!(h.contains_key("www-authenticate"));

    let expired = hs_token(&claims("c1", "pay-api", -120));
    let (s, _, body, _) = node.call("pay", Some(&expired)).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("expired"), "{body}");

    let not_yet = {
        let mut c = claims("c1", "pay-api", 600);
        c["nbf"] = json!(now_s() + 300);
        hs_token(&c)
    };
    let (s, _, body, _) = node.call("pay", Some(&not_yet)).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("not valid yet"), "{body}");

    // Tampered: another payload under the original signature.
    let other = hs_token(&claims("admin", "pay-api", 300));
    let mut parts: Vec<&str> = good.split('.').collect();
    let other_payload = other.split('.').nth(1).expect("payload");
    parts[1] = other_payload;
    let tampered = parts.join(".");
    let (s, _, body, _) = node.call("pay", Some(&tampered)).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("signature"), "{body}");

    let wrong_aud = hs_token(&claims("c1", "maps-api", 300));
    let (s, _, body, _) = node.call("pay", Some(&wrong_aud)).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("audience"), "{body}");

    let wrong_iss = {
        let mut c = claims("c1", "pay-api", 300);
        c["iss"] = json!("https://evil.test");
        hs_token(&c)
    };
    let (s, _, body, _) = node.call("pay", Some(&wrong_iss)).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("issuer"), "{body}");

    let stranger = hs_token(&claims("nobody", "pay-api", 300));
    let (s, _, body, _) = node.call("pay", Some(&stranger)).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("consumer `nobody`"), "{body}");

    // Still passes after all that.
    assert_eq!(node.call("pay", Some(&good)).await.0, 200);
}

/// A configured `audience` / `issuer` makes the claim required: leaving it out is not a way
/// past the check (RFC 7519: `aud` is a string or an array of strings). A service that
/// configures neither still takes tokens without them.
#[tokio::test]
async fn configured_audience_and_issuer_must_be_present() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut open = jwt_entry(
        "maps",
        JwtAlgorithm::Hs256,
        JwtKeys::Secret(HS_SECRET.into()),
    );
    open.audience = None;
    open.issuer = None;
    let node = node_with(
        &dir,
        vec![
            jwt_entry(
                "pay",
                JwtAlgorithm::Hs256,
                JwtKeys::Secret(HS_SECRET.into()),
            ),
            open,
        ],
    )
    .await;
    provision(&node, ADMIN_A, "acme", "pay", r#"{"name":"pay"}"#).await;
    let (s, v) = node
        .api(
            "POST",
            "/admin/tenants/acme/services",
            ADMIN_A,
            Some(r#"{"name":"maps"}"#),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    subscribe(&node, "c1", "pay").await;
    subscribe(&node, "c1", "maps").await;
    let without = |drop: &[&str]| {
        let mut c = claims("c1", "pay-api", 300);
        for k in drop {
            c.as_object_mut().expect("object").remove(*k);
        }
        hs_token(&c)
    };

    let no_aud = without(&["aud"]);
    let (s, _, body, _) = node.call("pay", Some(&no_aud)).await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body.contains("lacks the required audience (aud) claim") && body.contains("`pay-api`"),
        "{body}"
    );
    let no_iss = without(&["iss"]);
    let (s, _, body, _) = node.call("pay", Some(&no_iss)).await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body.contains("lacks the required issuer (iss) claim")
            && body.contains("`https://idp.test`"),
        "{body}"
    );
    let neither = without(&["aud", "iss"]);
    let (s, _, body, _) = node.call("pay", Some(&neither)).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("lacks the required"), "{body}");
    // An `aud` that is neither a string nor an array of strings does not count as one.
    let numeric = {
        let mut c = claims("c1", "pay-api", 300);
        c["aud"] = json!(42);
        hs_token(&c)
    };
    let (s, _, body, _) = node.call("pay", Some(&numeric)).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("audience (aud)"), "{body}");

    // `aud` as an array: accepted when it holds the service's audience.
    let array = |aud: serde_json::Value| {
        let mut c = claims("c1", "pay-api", 300);
        c["aud"] = aud;
        hs_token(&c)
    };
    let (s, _, body, _) = node
        .call("pay", Some(&array(json!(["other-api", "pay-api"]))))
        .await;
    assert_eq!(s, 200, "{body}");
    for wrong in [json!(["other-api"]), json!([])] {
        let (s, _, body, _) = node.call("pay", Some(&array(wrong.clone()))).await;
        assert_eq!(s, 401, "{wrong}: {body}");
        assert!(body.contains("audience (aud) is wrong"), "{wrong}: {body}");
    }

    // No audience / issuer configured: neither claim is required.
    let (s, _, body, _) = node.call("maps", Some(&neither)).await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test]
async fn jwt_callers_still_get_rate_limited() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = node_with(
        &dir,
        vec![jwt_entry(
            "pay",
            JwtAlgorithm::Hs256,
            JwtKeys::Secret(HS_SECRET.into()),
        )],
    )
    .await;
    provision(
        &node,
        ADMIN_A,
        "acme",
        "pay",
        r#"{"name":"pay","limits":{"rpm":2}}"#,
    )
    .await;
    subscribe(&node, "c1", "pay").await;
    let good = hs_token(&claims("c1", "pay-api", 300));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(node.call("pay", Some(&good)).await.0);
    }
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert_eq!(statuses[3], 429, "{statuses:?}");
}

/// A JWKS server on 127.0.0.1:0 that counts its fetches.
async fn jwks_server(jwks: serde_json::Value) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let h = h.clone();
            let body = jwks.to_string();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                ([("content-type", "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/jwks.json"), hits)
}

/// A fresh P-256 key: (private PKCS#8 PEM, public JWK with `kid`).
fn es256_key(kid: &str) -> (String, serde_json::Value) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let raw = pair.public_key_raw(); // 0x04 || x || y
    assert_eq!(raw.len(), 65);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
    });
    (pair.serialize_pem(), jwk)
}

fn es_token(pem: &str, kid: &str, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(pem.as_bytes()).expect("ec key"),
    )
    .expect("sign")
}

#[tokio::test]
async fn es256_with_keys_from_a_jwks_url() {
    let (pem_a, jwk_a) = es256_key("key-a");
    let (pem_b, jwk_b) = es256_key("key-b");
    let (pem_unpublished, _) = es256_key("key-c");
    let (url, hits) = jwks_server(json!({ "keys": [jwk_a, jwk_b] })).await;
    let dir = tempfile::tempdir().expect("tmp");
    let node = node_with(
        &dir,
        vec![jwt_entry(
            "maps",
            JwtAlgorithm::Es256,
            JwtKeys::JwksUrl(url),
        )],
    )
    .await;
    provision(&node, ADMIN_A, "acme", "maps", r#"{"name":"maps"}"#).await;
    subscribe(&node, "c1", "maps").await;

    for (pem, kid) in [(&pem_a, "key-a"), (&pem_b, "key-b")] {
        let t = es_token(pem, kid, &claims("c1", "maps-api", 300));
        let (s, _, body, extra) = node.call("maps", Some(&t)).await;
        assert_eq!(s, 200, "{kid}: {body}");
        assert_eq!(extra.consumer.as_deref(), Some("c1"));
    }
    assert!(hits.load(Ordering::SeqCst) >= 1, "the JWKS was fetched");

    // Signed by key b but claiming to be key a.
    let forged = es_token(&pem_b, "key-a", &claims("c1", "maps-api", 300));
    let (s, _, body, _) = node.call("maps", Some(&forged)).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("signature"), "{body}");

    let unknown = es_token(&pem_unpublished, "key-c", &claims("c1", "maps-api", 300));
    let (s, _, body, _) = node.call("maps", Some(&unknown)).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("kid") && body.contains("key-c"), "{body}");

    let expired = es_token(&pem_a, "key-a", &claims("c1", "maps-api", -120));
    let (s, _, body, _) = node.call("maps", Some(&expired)).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("expired"), "{body}");

    // An HS256 token (algorithm confusion) is refused.
    let hs = hs_token(&claims("c1", "maps-api", 300));
    let (s, _, body, _) = node.call("maps", Some(&hs)).await;
    assert_eq!(s, 401, "{body}");
}

#[tokio::test]
async fn unreachable_jwks_answers_503_not_a_pass() {
    // A port that was bound then released: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (pem, _) = es256_key("k");
    let dir = tempfile::tempdir().expect("tmp");
    let node = node_with(
        &dir,
        vec![jwt_entry(
            "maps",
            JwtAlgorithm::Es256,
            JwtKeys::JwksUrl(format!("http://127.0.0.1:{port}/jwks.json")),
        )],
    )
    .await;
    provision(&node, ADMIN_A, "acme", "maps", r#"{"name":"maps"}"#).await;
    subscribe(&node, "c1", "maps").await;
    let t = es_token(&pem, "k", &claims("c1", "maps-api", 300));
    let (s, _, body, _) = node.call("maps", Some(&t)).await;
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("could not be loaded"), "{body}");
    assert!(body.contains("cannot be verified right now"), "{body}");
    // The IdP's address and the failure stay in the gateway log.
    assert!(
        !body.contains("127.0.0.1") && !body.contains("jwks.json") && !body.contains("GET "),
        "{body}"
    );
}
