//! The interception CA: created once in the state dir, then mints a leaf certificate per
//! host on demand.
//!
//! All leaves share one ECDSA P-256 key generated at start (minting is then one signature,
//! not a key generation), and each host's TLS server config is cached so a host is minted
//! once even when many connections for it arrive together.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::state::{self, StateDir, StateError};

/// Common name of the CA we mint; shown in clients' certificate errors.
const CA_COMMON_NAME: &str = "AgentGate Interception CA";
/// Leaves are back-dated to tolerate clock skew on the agent's machine.
const LEAF_BACKDATE: Duration = Duration::from_secs(3600);

/// Failure to create, load or use the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("CA certificate {path} is unusable: {reason}; move it away to have a new CA created")]
    BadCa { path: String, reason: String },
    #[error("cannot mint a certificate for {host}: {reason}")]
    Mint { host: String, reason: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// The CA and its leaf cache.
pub struct Ca {
    issuer: rcgen::Certificate,
    issuer_key: KeyPair,
    cert_pem: String,
    leaf_key: KeyPair,
    leaf_signer: Arc<dyn rustls::sign::SigningKey>,
    provider: Arc<CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
    validity: Duration,
    cache: Cache<String, Arc<ServerConfig>>,
    /// Leaf cache hits and misses (for `/metrics`).
    stats: Arc<crate::metrics::CacheStats>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// Creates the CA in the state dir if it does not exist yet; returns whether it was created.
pub fn ensure_ca(state: &StateDir) -> Result<bool, CaError> {
    let (crt, key) = (state.ca_cert(), state.ca_key());
    match (crt.exists(), key.exists()) {
        (true, true) => return Ok(false),
        (false, false) => {}
        _ => {
            return Err(CaError::BadCa {
                path: state.root().display().to_string(),
                reason: "only one of ca.crt and ca.key exists".into(),
            });
        }
    }
    let key_pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(tls)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "AgentGate");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - LEAF_BACKDATE;
    params.not_after = now + Duration::from_secs(10 * 365 * 24 * 3600);
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key_pair).map_err(tls)?;
    // Key first: a crash in between leaves a key without a cert, which ensure_ca reports.
    state::write_private(&key, key_pair.serialize_pem().as_bytes())?;
    state::write_public(&crt, cert.pem().as_bytes())?;
    Ok(true)
}

impl Ca {
    /// Loads the CA from the state dir (refusing a key readable by others).
    pub fn load(
        state: &StateDir,
        validity: Duration,
        cache_size: u64,
        provider: Arc<CryptoProvider>,
    ) -> Result<Ca, CaError> {
        let crt_path = state.ca_cert();
        let bad = |reason: String| CaError::BadCa {
            path: crt_path.display().to_string(),
            reason,
        };
        let key_pem = String::from_utf8(state::read_private(&state.ca_key())?)
            .map_err(|_| bad("ca.key is not PEM text".into()))?;
        let cert_pem = std::fs::read_to_string(&crt_path).map_err(|e| bad(e.to_string()))?;
        let issuer_key = KeyPair::from_pem(&key_pem).map_err(|e| bad(format!("ca.key: {e}")))?;
        let params =
            CertificateParams::from_ca_cert_pem(&cert_pem).map_err(|e| bad(e.to_string()))?;
        // Re-signing the parsed params yields an issuer with the same name and key id, which
        // is all that chaining needs; ca.crt on disk stays the trust anchor.
        let issuer = params
            .self_signed(&issuer_key)
            .map_err(|e| bad(e.to_string()))?;

        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(tls)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let leaf_signer = provider
            .key_provider
            .load_private_key(der)
            .map_err(|e| CaError::Tls(e.to_string()))?;
        let cache = Cache::builder()
            .max_capacity(cache_size)
            // Re-mint well before a leaf expires.
            .time_to_live(validity / 2)
            .build();
        Ok(Ca {
            issuer,
            issuer_key,
            cert_pem,
            leaf_key,
            leaf_signer,
            provider,
            sessions: rustls::server::ServerSessionMemoryCache::new(4096),
            validity,
            cache,
            stats: Arc::default(),
        })
    }

    /// The leaf cache's hit and miss counters.
    pub fn cache_stats(&self) -> Arc<crate::metrics::CacheStats> {
        self.stats.clone()
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// TLS server config presenting a leaf for `host` (a DNS name or IP literal);
    /// minted on first use and cached.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        if let Some(cfg) = self.cache.get(host) {
            self.stats.hit();
            return Ok(cfg);
        }
        self.stats.miss();
        self.cache
            .try_get_with(host.to_owned(), || self.mint(host).map(Arc::new))
            .map_err(|e: Arc<CaError>| CaError::Mint {
                host: host.to_owned(),
                reason: e.to_string(),
            })
    }

    fn mint(&self, host: &str) -> Result<ServerConfig, CaError> {
        let mint_err = |e: rcgen::Error| CaError::Mint {
            host: host.to_owned(),
            reason: e.to_string(),
        };
        let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(mint_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - LEAF_BACKDATE;
        params.not_after = now + self.validity;
        params.serial_number = Some(random_serial());
        let leaf = params
            .signed_by(&self.leaf_key, &self.issuer, &self.issuer_key)
            .map_err(mint_err)?;
        let chain = vec![CertificateDer::from(leaf.der().to_vec())];
        let certified = Arc::new(CertifiedKey::new(chain, self.leaf_signer.clone()));

        let mut cfg = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| CaError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(FixedCert(certified)));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg.session_storage = self.sessions.clone();
        Ok(cfg)
    }
}

#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive INTEGER
    SerialNumber::from_slice(&bytes)
}

fn tls(e: rcgen::Error) -> CaError {
    CaError::Tls(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    #[test]
    fn creates_once_and_mints_cached_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path()).unwrap();
        assert!(ensure_ca(&state).unwrap());
        let pem = std::fs::read_to_string(state.ca_cert()).unwrap();
        assert!(!ensure_ca(&state).unwrap());
        assert_eq!(std::fs::read_to_string(state.ca_cert()).unwrap(), pem);

        let ca = Ca::load(&state, Duration::from_secs(86400), 100, provider()).unwrap();
        let a = ca.server_config("api.github.com").unwrap();
        let b = ca.server_config("api.github.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(ca.server_config("127.0.0.1").is_ok());
    }

    #[test]
    fn concurrent_first_requests_mint_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path()).unwrap();
        ensure_ca(&state).unwrap();
        let ca = Arc::new(Ca::load(&state, Duration::from_secs(86400), 100, provider()).unwrap());
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (ca, barrier) = (ca.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    ca.server_config("slack.com").unwrap()
                })
            })
            .collect();
        let configs: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(configs.iter().all(|c| Arc::ptr_eq(c, &configs[0])));
    }

    #[test]
    fn refuses_half_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path()).unwrap();
        std::fs::write(state.ca_cert(), "x").unwrap();
        assert!(ensure_ca(&state).is_err());
    }
}
