//! A throwaway PKI for TLS tests: a CA and a `localhost` certificate it signed, made fresh
//! for each test (nothing secret is checked in).

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA and a `localhost` leaf certificate it signed.
pub struct TestPki {
    /// The CA certificate, DER: what a client trusts.
    pub ca_der: Vec<u8>,
    /// The leaf's chain (leaf, then CA), PEM: a server's certificate file.
    pub chain_pem: String,
    /// The leaf's private key (PKCS#8), PEM: a server's key file.
    pub key_pem: String,
}

impl TestPki {
    /// A new CA named after `name` (so two PKIs of one test are told apart) and its leaf.
    pub fn new(name: &str) -> TestPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("holdfast test CA {name}"));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .expect("leaf parameters")
            .signed_by(&key, &ca)
            .expect("leaf certificate");
        TestPki {
            ca_der: ca.der().to_vec(),
            chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
            key_pem: key.serialize_pem(),
        }
    }
}
