//! Test PKI minted at test time with rcgen: the "upstream CA" the proxy is told
//! to trust (`upstream.extra_roots`), a rogue CA it is not told about, and leaf
//! certificates for the real service names (plus an expired one).

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The hosts our in-process upstreams impersonate.
pub const HOSTS: [&str; 3] = ["api.github.com", "slack.com", "gmail.googleapis.com"];

pub struct Ca {
    cert: Certificate,
    key: KeyPair,
}

/// A server certificate chain and its private key, ready for rustls.
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Writes the chain and the key as PEM files, for servers that are not rustls.
    pub fn write_pem(&self, cert: &Path, key: &Path) {
        let chain: String = self.chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
        std::fs::write(cert, chain).expect("write leaf chain");
        std::fs::write(key, pem("PRIVATE KEY", &self.key_der)).expect("write leaf key");
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

impl Ca {
    pub fn new(common_name: &str) -> Self {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "AgentGate e2e tests");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(2);
        params.not_after = now + Duration::days(30);
        let cert = params.self_signed(&key).expect("self-sign CA");
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `names` (DNS names or IP literals). `expired` puts its validity
    /// window entirely in the past.
    pub fn leaf(&self, names: &[&str], expired: bool) -> Leaf {
        let key = KeyPair::generate().expect("generate leaf key");
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        if expired {
            params.not_before = now - Duration::days(60);
            params.not_after = now - Duration::days(1);
        } else {
            params.not_before = now - Duration::days(1);
            params.not_after = now + Duration::days(7);
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        Leaf {
            chain: vec![cert.der().clone()],
            key_der: key.serialize_der(),
        }
    }
}

/// Everything certificate-related one test needs.
pub struct Pki {
    /// Trusted by the proxy through `upstream.extra_roots`.
    pub upstream_ca: Ca,
    /// Trusted by nobody.
    pub rogue_ca: Ca,
    /// PEM file of `upstream_ca`.
    pub upstream_ca_path: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        let upstream_ca = Ca::new("AgentGate e2e upstream CA");
        let rogue_ca = Ca::new("Rogue CA nobody trusts");
        let upstream_ca_path = dir.join("test-upstream-ca.pem");
        std::fs::write(&upstream_ca_path, upstream_ca.pem()).expect("write upstream CA");
        Pki {
            upstream_ca,
            rogue_ca,
            upstream_ca_path,
        }
    }

    /// One valid leaf per real service name, signed by the trusted upstream CA.
    pub fn service_leaves(&self) -> Vec<(String, Leaf)> {
        HOSTS
            .iter()
            .map(|h| ((*h).to_owned(), self.upstream_ca.leaf(&[h], false)))
            .collect()
    }
}

/// A rustls root store holding exactly the certificates in a PEM file.
pub fn root_store_from_pem(path: &Path) -> rustls::RootCertStore {
    let pem =
        std::fs::read(path).unwrap_or_else(|e| panic!("read CA file {}: {e}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    let mut reader = std::io::BufReader::new(pem.as_slice());
    for cert in rustls_pemfile_certs(&mut reader) {
        roots.add(cert).expect("add root");
    }
    assert!(!roots.is_empty(), "no certificate in {}", path.display());
    roots
}

fn rustls_pemfile_certs(reader: &mut dyn std::io::BufRead) -> Vec<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_reader_iter(reader)
        .collect::<Result<Vec<_>, _>>()
        .expect("parse PEM certificates")
}
