//! Who is calling: JWT-SVID verification against trusted SPIFFE bundles, with the agent
//! registry's revocations applied on every request. The gate itself (header parsing,
//! refusals) is `gates::identity`; this module keeps the keys and the verified-token cache.
//!
//! Keys come from three sources, merged into one immutable snapshot that requests read
//! without locking: the built-in issuer (registry), bundle files, and the Workload API.

pub mod bundle;
pub mod freshness;
pub mod issuer;
pub mod jwt;
pub mod pod;
pub mod pod_token;
pub mod registry;
pub mod workload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;

use self::bundle::{Authorities, BundleError};
use self::issuer::IssuerError;
use self::jwt::{JwtError, Rules, VerifyKey};
use self::registry::{Registry, RegistryError};
use crate::clock::now;
use crate::config::sections::IdentityConfig;
use crate::state::StateDir;

/// A verified caller, passed down the pipeline and into every log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub spiffe_id: String,
    pub trust_domain: String,
    /// From `/tenant/<t>/…` in the SPIFFE ID path.
    pub tenant: Option<String>,
    /// From `/agent/<name>` in the path; otherwise the whole path.
    pub agent: String,
    /// The human responsible, from the registry.
    pub owner: Option<String>,
    pub jti: Option<String>,
    /// Unix seconds.
    pub expires: i64,
}

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Invalid(#[from] JwtError),
    #[error("agent {0} has been revoked")]
    AgentRevoked(String),
    #[error("this token (jti {0}) has been revoked")]
    TokenRevoked(String),
}

/// Why the identity sources could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    #[error("bundle file {path} for trust domain \"{trust_domain}\": {reason}")]
    BundleFile {
        trust_domain: String,
        path: PathBuf,
        reason: String,
    },
    #[error("issuer key {kid} in the registry is unusable: {reason}")]
    IssuerKey { kid: String, reason: String },
}

/// The trust and revocation state one request reads.
struct Snapshot {
    generation: u64,
    trust: HashMap<String, Authorities>,
    registry: registry::Snapshot,
    /// `/.well-known/spiffe-bundle`, rendered once per change.
    issuer_jwks: Bytes,
}

struct BundleFile {
    path: PathBuf,
    modified: Option<SystemTime>,
    keys: Authorities,
}

/// Everything the snapshot is built from; touched only on reloads.
struct Sources {
    registry: Registry,
    data_version: i64,
    registry_snapshot: registry::Snapshot,
    issuer: Authorities,
    files: HashMap<String, BundleFile>,
    workload: HashMap<String, Authorities>,
}

struct Verified {
    generation: u64,
    caller: Arc<Caller>,
}

/// The identity gate's state: trusted keys, revocations, verified-token cache.
pub struct Identity {
    rules: Rules,
    trust_domain: String,
    snapshot: ArcSwap<Snapshot>,
    cache: moka::sync::Cache<[u8; 32], Arc<Verified>>,
    /// Verified-token cache hits and misses (for `/metrics`).
    stats: Arc<crate::metrics::CacheStats>,
    sources: Mutex<Sources>,
    generation: AtomicU64,
    /// Set when bundles are expected from the Workload API; cleared by the first one.
    awaiting_workload: std::sync::atomic::AtomicBool,
    /// The token presented for the pod's own traffic (see [`pod`]).
    pod: pod_token::PodToken,
    /// How current the fleet's registry is here (see [`freshness`]).
    fleet: freshness::Freshness,
}

impl Identity {
    /// Opens the registry (creating the issuer key on first use) and reads bundle files.
    pub fn load(config: &IdentityConfig, state: &StateDir) -> Result<Identity, LoadError> {
        let registry = Registry::open(state)?;
        issuer::ensure_key(state, &registry, now())?;
        let mut files = HashMap::new();
        for (td, path) in &config.bundles {
            files.insert(td.clone(), read_bundle_file(td, path)?);
        }
        let mut sources = Sources {
            data_version: registry.data_version()?,
            registry,
            registry_snapshot: registry::Snapshot::default(),
            issuer: Authorities::new(),
            files,
            workload: HashMap::new(),
        };
        load_registry(&mut sources)?;
        let identity = Identity {
            rules: Rules {
                audience: config.audience.clone(),
                leeway: config.leeway,
                max_token_bytes: config.max_token_bytes,
            },
            trust_domain: config.trust_domain.clone(),
            snapshot: ArcSwap::from_pointee(Snapshot {
                generation: 0,
                trust: HashMap::new(),
                registry: registry::Snapshot::default(),
                issuer_jwks: Bytes::new(),
            }),
            cache: moka::sync::Cache::builder()
                .max_capacity(config.cache_size)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            stats: Arc::default(),
            sources: Mutex::new(sources),
            generation: AtomicU64::new(0),
            awaiting_workload: std::sync::atomic::AtomicBool::new(false),
            pod: pod_token::PodToken::default(),
            fleet: freshness::Freshness::default(),
        };
        identity.publish(&identity.lock_sources());
        Ok(identity)
    }

    fn lock_sources(&self) -> std::sync::MutexGuard<'_, Sources> {
        // A panic while reloading cannot leave Sources half-written in a way that matters:
        // the next reload rebuilds everything from the registry and files.
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Verifies `token` (cached by its SHA-256 until the trust state changes) and applies
    /// revocations; the answer is always current even when the signature check is cached.
    pub fn authenticate(&self, token: &str) -> Result<Arc<Caller>, IdentityError> {
        let snap = self.snapshot.load();
        let now = now();
        let key = token_hash(token);
        let caller = match self.cache.get(&key) {
            Some(v) if v.generation == snap.generation => {
                self.stats.hit();
                v.caller.clone()
            }
            _ => {
                self.stats.miss();
                let caller = Arc::new(self.verify(&snap, token, now)?);
                self.cache.insert(
                    key,
                    Arc::new(Verified {
                        generation: snap.generation,
                        caller: caller.clone(),
                    }),
                );
                caller
            }
        };
        check_live(&snap.registry, &caller, now, &self.rules)?;
        Ok(caller)
    }

    /// The verified-token cache's hit and miss counters.
    pub fn cache_stats(&self) -> Arc<crate::metrics::CacheStats> {
        self.stats.clone()
    }

    /// Checks that a caller verified earlier (at CONNECT) is still unexpired and unrevoked.
    pub fn recheck(&self, caller: &Caller) -> Result<(), IdentityError> {
        check_live(&self.snapshot.load().registry, caller, now(), &self.rules)
    }

    fn verify(&self, snap: &Snapshot, token: &str, now: i64) -> Result<Caller, IdentityError> {
        let claims = jwt::verify(token, &self.rules, now, |td, kid| {
            let keys = snap
                .trust
                .get(td)
                .ok_or_else(|| JwtError::UntrustedDomain(td.to_owned()))?;
            keys.get(kid)
                .map(|k| &**k)
                .ok_or_else(|| JwtError::UnknownKey {
                    trust_domain: td.to_owned(),
                    kid: kid.chars().take(64).collect(),
                })
        })?;
        let spiffe_id = claims.sub.to_string();
        let (tenant, agent) = split_path(claims.sub.path());
        Ok(Caller {
            owner: snap
                .registry
                .agents
                .get(&spiffe_id)
                .and_then(|a| a.owner.clone()),
            trust_domain: claims.sub.trust_domain_name().to_owned(),
            spiffe_id,
            tenant,
            agent,
            jti: claims.jti,
            expires: claims.exp,
        })
    }

    /// The built-in issuer's public keys as a SPIFFE JWT bundle.
    pub fn bundle_jwks(&self) -> Bytes {
        self.snapshot.load().issuer_jwks.clone()
    }

    /// The trust domain of the built-in issuer.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Re-reads the registry and bundle files if they changed (or always, with `force`).
    /// Blocking: call from a blocking thread. Returns whether anything changed.
    pub fn refresh(&self, force: bool) -> Result<bool, LoadError> {
        let mut sources = self.lock_sources();
        let mut changed = force;
        let version = sources.registry.data_version()?;
        if force || version != sources.data_version {
            load_registry(&mut sources)?;
            sources.data_version = version;
            changed = true;
        }
        for (td, file) in sources.files.iter_mut() {
            let modified = std::fs::metadata(&file.path)
                .and_then(|m| m.modified())
                .ok();
            if !force && modified == file.modified {
                continue;
            }
            // A broken file keeps its previous keys (reported once per change);
            // revocations must still apply.
            match read_bundle_file(td, &file.path) {
                Ok(new) => {
                    tracing::info!(trust_domain = %td, path = %new.path.display(), keys = new.keys.len(), "bundle file reloaded");
                    *file = new;
                    changed = true;
                }
                Err(e) => {
                    file.modified = modified;
                    tracing::error!(error = %e, "bundle file not reloaded; keeping its previous keys");
                }
            }
        }
        if changed {
            self.publish(&sources);
        }
        Ok(changed)
    }

    /// Replaces the bundles learned from the Workload API.
    pub fn set_workload_bundles(&self, bundles: HashMap<String, Authorities>) {
        let mut sources = self.lock_sources();
        sources.workload = bundles;
        self.publish(&sources);
        self.awaiting_workload.store(false, Ordering::Release);
    }

    /// Marks that SPIRE callers cannot be verified until the Workload API's first bundles.
    pub fn expect_workload_bundles(&self) {
        self.awaiting_workload.store(true, Ordering::Release);
    }

    /// Why the identity gate is not ready yet, if it is not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.awaiting_workload.load(Ordering::Acquire) {
            return Some("waiting for the first JWT bundles from the SPIFFE Workload API");
        }
        if self.fleet.waiting() {
            return Some("waiting for the first sync of the fleet's registry (fleet.url)");
        }
        if self.fleet.stale() {
            return Some(
                "the fleet's bus has been unreachable for longer than fleet.max_staleness",
            );
        }
        self.pod
            .waiting()
            .then_some("waiting for the pod's own identity token (pod.agent or the Workload API)")
    }

    /// The fleet registry's freshness, which the fleet's sync keeps.
    pub fn fleet(&self) -> &freshness::Freshness {
        &self.fleet
    }

    /// Marks that readiness waits for the pod's first token.
    pub fn expect_pod_token(&self) {
        self.pod.expect();
    }

    /// Replaces the token presented for the pod's own traffic.
    pub fn set_pod_token(&self, token: String) {
        self.pod.set(token);
    }

    /// The pod's current token, if any.
    pub fn pod_token(&self) -> Option<Arc<String>> {
        self.pod.current()
    }

    /// Verifies the pod's own token, for traffic that carries no credential (the
    /// transparent listener, `pod.loopback_is_pod`); `None` when no pod token exists yet.
    pub fn authenticate_pod(&self) -> Option<Result<Arc<Caller>, IdentityError>> {
        self.pod.current().map(|token| self.authenticate(&token))
    }

    /// Builds a new snapshot from `sources` and makes it current.
    fn publish(&self, sources: &Sources) {
        let mut trust: HashMap<String, Authorities> = HashMap::new();
        // Later sources never override a key id an earlier one already provides.
        let layers = std::iter::once((&self.trust_domain, &sources.issuer))
            .chain(sources.files.iter().map(|(td, f)| (td, &f.keys)))
            .chain(sources.workload.iter());
        for (td, keys) in layers {
            let entry = trust.entry(td.clone()).or_default();
            for (kid, key) in keys {
                entry.entry(kid.clone()).or_insert_with(|| key.clone());
            }
        }
        let jwks = bundle::to_jwks(sources.issuer.iter().map(|(k, v)| (k.as_str(), &**v)));
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.snapshot.store(Arc::new(Snapshot {
            generation,
            trust,
            registry: sources.registry_snapshot.clone(),
            issuer_jwks: Bytes::from(jwks.to_string()),
        }));
    }

    /// Reloads on changes every `every` until `shutdown` fires; also drops issuer keys
    /// whose tokens have all expired, as time passes.
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            ticks += 1;
            let this = self.clone();
            let force = ticks % 60 == 0;
            match tokio::task::spawn_blocking(move || this.refresh(force)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "identity reload failed; keeping the previous keys and revocations")
                }
                Err(e) => tracing::error!(error = %e, "identity reload panicked"),
            }
        }
    }
}

fn load_registry(sources: &mut Sources) -> Result<(), LoadError> {
    let snap = sources.registry.snapshot(now())?;
    let mut issuer = Authorities::new();
    for key in &snap.issuer_keys {
        let parsed = serde_json::from_str(&key.public_jwk)
            .map_err(|e| e.to_string())
            .and_then(|jwk| VerifyKey::from_jwk(&jwk).map_err(|e| e.0))
            .map_err(|reason| LoadError::IssuerKey {
                kid: key.kid.clone(),
                reason,
            })?;
        issuer.insert(key.kid.clone(), Arc::new(parsed));
    }
    sources.issuer = issuer;
    sources.registry_snapshot = snap;
    Ok(())
}

fn read_bundle_file(td: &str, path: &std::path::Path) -> Result<BundleFile, LoadError> {
    let err = |reason: String| LoadError::BundleFile {
        trust_domain: td.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let keys = bundle::parse_jwks(&bytes).map_err(|e: BundleError| err(e.to_string()))?;
    Ok(BundleFile {
        path: path.to_owned(),
        modified,
        keys,
    })
}

fn check_live(
    registry: &registry::Snapshot,
    caller: &Caller,
    now: i64,
    rules: &Rules,
) -> Result<(), IdentityError> {
    if now > caller.expires.saturating_add(rules.leeway.as_secs() as i64) {
        return Err(JwtError::Expired(now - caller.expires).into());
    }
    if registry.all_revoked || registry.revoked_ids.contains(&caller.spiffe_id) {
        return Err(IdentityError::AgentRevoked(caller.spiffe_id.clone()));
    }
    if let Some(jti) = &caller.jti {
        if registry.revoked_jtis.contains(jti) {
            return Err(IdentityError::TokenRevoked(jti.clone()));
        }
    }
    Ok(())
}

fn token_hash(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Reads tenant and agent name from a SPIFFE ID path.
/// A SPIFFE ID's trust domain, tenant and agent name, as a caller's are derived (`None`
/// when it is not a SPIFFE ID).
pub fn subject_parts(spiffe_id: &str) -> Option<(String, Option<String>, String)> {
    let rest = spiffe_id.strip_prefix("spiffe://")?;
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (tenant, name) = split_path(path);
    Some((domain.to_owned(), tenant, name))
}

fn split_path(path: &str) -> (Option<String>, String) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["tenant", t, "agent", name] => (Some((*t).to_owned()), (*name).to_owned()),
        ["agent", name] => (None, (*name).to_owned()),
        _ => (None, path.trim_start_matches('/').to_owned()),
    }
}

#[cfg(test)]
mod tests;
