//! The running vault: which connection serves a request, the cache of short-lived
//! credentials (single-flight: concurrent requests share one fetch, and refreshes of one
//! connection never overlap, across a fleet too — providers treat a reused refresh token as
//! theft; see `rotation`), per-decision grants, and the ledger of what each agent received,
//! which PANIC revokes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::hmac;
use http::HeaderValue;

use super::config::VaultConfig;
use super::connection::{Connection, Kind};
use super::coordinator::RefreshCoordinator;
use super::error::VaultError;
use super::fetch::{Fetcher, Obtained};
use super::grant::{Credential, Grant, TokenError, Want};
use super::references::References;
use super::store::{Store, fingerprint_with};
use crate::audit::{Audit, record};
use crate::clock::now;
use crate::outbound::FetchError;
use crate::vendors::served_by;

/// Most credentials remembered for PANIC (the oldest expired ones go first).
const MAX_LEDGER: usize = 100_000;
/// Ledger size from which expired entries are swept on each new credential.
const LEDGER_PRUNE_AT: usize = 1024;
/// Most per-decision grants held.
const MAX_GRANTS: u64 = 100_000;

#[derive(Clone, Hash, PartialEq, Eq)]
struct CacheKey {
    connection: String,
    scopes: String,
    repository: String,
}

/// Connections by origin.
#[derive(Default)]
struct Index {
    by_origin: HashMap<String, Vec<Arc<Connection>>>,
    count: usize,
}

/// The vault as the proxy uses it.
pub struct Vault {
    pub(super) config: VaultConfig,
    store: Mutex<Store>,
    fingerprint_key: hmac::Key,
    index: ArcSwap<Index>,
    seen_version: AtomicI64,
    cache: moka::future::Cache<CacheKey, Arc<Credential>>,
    /// Credential cache hits and misses (a miss is a fetch; for `/metrics`).
    stats: Arc<crate::metrics::CacheStats>,
    failures: moka::sync::Cache<CacheKey, Arc<TokenError>>,
    grants: moka::sync::Cache<[u8; 16], Arc<Grant>>,
    refresh_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Fleet mode: keeps refreshes of one connection from overlapping across instances.
    pub(super) coordinator: Option<Arc<dyn RefreshCoordinator>>,
    /// Credentials handed out, by fingerprint, until they expire.
    pub(super) ledger: Mutex<HashMap<String, Arc<Credential>>>,
    pub(super) fetcher: Fetcher,
    audit: Arc<Audit>,
    /// Live `agw_` references.
    pub references: References,
}

struct RenewAt;

impl moka::Expiry<CacheKey, Arc<Credential>> for RenewAt {
    fn expire_after_create(
        &self,
        _: &CacheKey,
        value: &Arc<Credential>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        value.renew_in
    }
}

impl Vault {
    /// Opens the vault (see [`Store::open`]) and loads its connections; token endpoints
    /// are reached through `resolve`'s pinned addresses where given.
    pub fn open(
        v: &VaultConfig,
        resolve: &BTreeMap<String, SocketAddr>,
        state: &crate::state::StateDir,
        tls: rustls::ClientConfig,
        audit: Arc<Audit>,
    ) -> Result<Vault, VaultError> {
        let key_file = (!v.key_file.as_os_str().is_empty()).then_some(v.key_file.as_path());
        let store = Store::open(state, key_file)?;
        let vault = Vault {
            fingerprint_key: store.fingerprinter(),
            seen_version: AtomicI64::new(store.data_version()?),
            store: Mutex::new(store),
            index: ArcSwap::default(),
            cache: moka::future::Cache::builder()
                .max_capacity(v.cache_size)
                .expire_after(RenewAt)
                .build(),
            stats: Arc::default(),
            failures: moka::sync::Cache::builder()
                .max_capacity(v.cache_size)
                .time_to_live(v.failure_backoff)
                .build(),
            grants: moka::sync::Cache::builder()
                .max_capacity(MAX_GRANTS)
                .time_to_live(v.grant_ttl)
                .build(),
            refresh_locks: Mutex::default(),
            coordinator: None,
            ledger: Mutex::default(),
            fetcher: Fetcher::new(v, resolve, tls)?,
            audit,
            references: References::new(v.reference_ttl),
            config: v.clone(),
        };
        vault.reload()?;
        Ok(vault)
    }

    /// Refreshes OAuth connections under `coordinator`'s lease, writing rotated refresh
    /// tokens back with compare-and-set (fleet mode).
    pub fn with_refresh_coordinator(mut self, coordinator: Arc<dyn RefreshCoordinator>) -> Vault {
        self.coordinator = Some(coordinator);
        self
    }

    /// The credential cache's hit and miss counters.
    pub fn cache_stats(&self) -> Arc<crate::metrics::CacheStats> {
        self.stats.clone()
    }

    /// Reloads connections from the database and forgets every cached credential, so a
    /// removed or replaced connection is never used again; when only refresh tokens were
    /// rotated (here or elsewhere in a fleet), the access tokens obtained stay valid and
    /// are kept. Returns how many connections there are.
    pub fn reload(&self) -> Result<usize, VaultError> {
        let list = {
            let store = self.lock_store();
            self.seen_version
                .store(store.data_version()?, Ordering::Relaxed);
            store.list()?
        };
        let mut index = Index {
            count: list.len(),
            ..Index::default()
        };
        for c in list {
            index
                .by_origin
                .entry(c.origin.clone())
                .or_default()
                .push(Arc::new(c));
        }
        let index = Arc::new(index);
        let before = self.index.swap(index.clone());
        if !only_rotated(&before, &index) {
            self.forget_all();
        }
        Ok(index.count)
    }

    /// Drops every cached credential, grant and remembered failure; returns how many
    /// credentials and grants were held.
    pub(super) fn forget_all(&self) -> (u64, u64) {
        let held = (self.cache.entry_count(), self.grants.entry_count());
        self.cache.invalidate_all();
        self.failures.invalidate_all();
        self.grants.invalidate_all();
        held
    }

    /// Reloads when another process (the CLI) changed the database; for a periodic check.
    pub fn reload_if_changed(&self) -> Result<bool, VaultError> {
        let version = self.lock_store().data_version()?;
        if version == self.seen_version.load(Ordering::Relaxed) {
            return Ok(false);
        }
        self.reload().map(|_| true)
    }

    /// Every connection (metadata only).
    pub fn connections(&self) -> Vec<Arc<Connection>> {
        let index = self.index.load();
        let mut all: Vec<_> = index.by_origin.values().flatten().cloned().collect();
        all.sort_by(|a, b| (&a.tenant, &a.service, &a.user).cmp(&(&b.tenant, &b.service, &b.user)));
        all
    }

    /// The connection serving `origin` for a caller: the owner's own first, then the
    /// tenant's shared one; for an origin with neither, those of the origin that serves it
    /// (github.com: api.github.com's, see [`served_by`]).
    pub fn connection_for(
        &self,
        tenant: Option<&str>,
        origin: &str,
        owner: Option<&str>,
    ) -> Option<Arc<Connection>> {
        let index = self.index.load();
        let tenant = tenant.unwrap_or("");
        let owner = owner.unwrap_or("");
        let mine =
            |c: &&Arc<Connection>| c.tenant == tenant && !owner.is_empty() && c.user == owner;
        let shared = |c: &&Arc<Connection>| c.tenant == tenant && c.user.is_empty();
        let at = |origin: &str| {
            let candidates = index.by_origin.get(origin)?;
            candidates
                .iter()
                .find(mine)
                .or_else(|| candidates.iter().find(shared))
                .cloned()
        };
        at(origin).or_else(|| served_by(origin).and_then(at))
    }

    /// The grant for one decision: reused for retries of the same tuple within
    /// `vault.grant_ttl`, otherwise made from a cached or newly fetched credential.
    pub async fn grant(
        self: &Arc<Self>,
        connection: &Arc<Connection>,
        want: &Want<'_>,
    ) -> Result<Arc<Grant>, TokenError> {
        if connection.revoked.is_some() {
            return Err(TokenError::Revoked(connection.id.clone()));
        }
        let now = now();
        if let Some(g) = self.grants.get(&want.digest) {
            if g.expires > now
                && g.credential.usable(now)
                && g.credential.connection.id == connection.id
            {
                return Ok(g);
            }
        }
        let credential = self.credential(connection, want).await?;
        if let Ok(mut users) = credential.users.lock() {
            users.insert(want.agent.to_owned());
        }
        let ttl = self.config.grant_ttl.as_secs() as i64;
        let expires = credential.expires.map_or(now + ttl, |e| e.min(now + ttl));
        let grant = Arc::new(Grant {
            credential,
            expires,
        });
        self.grants.insert(want.digest, grant.clone());
        Ok(grant)
    }

    async fn credential(
        self: &Arc<Self>,
        connection: &Arc<Connection>,
        want: &Want<'_>,
    ) -> Result<Arc<Credential>, TokenError> {
        let mut scopes = want.scopes.to_vec();
        if scopes.is_empty() {
            scopes.clone_from(&connection.settings.scopes);
        }
        scopes.sort();
        scopes.dedup();
        let key = CacheKey {
            connection: connection.id.clone(),
            scopes: scopes.join(" "),
            repository: want.repository.unwrap_or_default().to_owned(),
        };
        if let Some(failed) = self.failures.get(&key) {
            return Err((*failed).clone());
        }
        for _ in 0..2 {
            // Only the caller whose lookup runs the fetch counts a miss (single flight).
            let mut fetching = false;
            let fetched = self
                .cache
                .try_get_with(key.clone(), async {
                    fetching = true;
                    self.obtain(connection.clone(), &scopes, want.repository)
                        .await
                })
                .await;
            if fetching {
                self.stats.miss();
            } else {
                self.stats.hit();
            }
            match fetched {
                Ok(c) if c.usable(now()) => return Ok(c),
                // Revoked or expired while cached: fetch anew, once.
                Ok(_) => self.cache.invalidate(&key).await,
                Err(e) => {
                    self.failures.insert(key, e.clone());
                    return Err((*e).clone());
                }
            }
        }
        Err(TokenError::Fetch(FetchError::Setup(
            "the token endpoint keeps returning unusable credentials".into(),
        )))
    }

    /// Gets a fresh credential from the connection's source.
    async fn obtain(
        self: &Arc<Self>,
        connection: Arc<Connection>,
        scopes: &[String],
        repository: Option<&str>,
    ) -> Result<Arc<Credential>, TokenError> {
        let secret = |id: &str| {
            self.lock_store()
                .secret(id)
                .map_err(|e| TokenError::Store(e.to_string()))
        };
        let c = &connection;
        let obtained = match c.kind {
            Kind::Static => {
                if c.expires.is_some_and(|e| e <= now()) {
                    return Err(TokenError::StaticExpired(c.id.clone()));
                }
                Obtained {
                    token: secret(&c.id)?,
                    expires_in: c.expires.map(|e| e - now()),
                    refresh_token: None,
                }
            }
            Kind::Oauth => {
                // Detached from the waiting request: once the provider has rotated the
                // refresh token, the new one is stored even if every waiter went away.
                let (vault, c, scopes) = (self.clone(), connection.clone(), scopes.to_vec());
                tokio::spawn(async move { vault.refresh(&c, &scopes).await })
                    .await
                    .map_err(|e| TokenError::Store(format!("the refresh task failed: {e}")))??
            }
            Kind::Auth0 => {
                let connection_name = c.settings.connection.as_deref().unwrap_or(&c.service);
                self.fetcher
                    .exchange(connection_name, &secret(&c.id)?, scopes)
                    .await?
            }
            Kind::GithubApp => {
                let (Some(app), Some(installation)) =
                    (c.settings.app_id, c.settings.installation_id)
                else {
                    return Err(TokenError::Store(format!(
                        "{} has no app id or installation id",
                        c.id
                    )));
                };
                let api = c
                    .settings
                    .api_url
                    .as_deref()
                    .unwrap_or(crate::vendors::github::API_URL);
                let repos: Vec<String> = repository
                    .and_then(|r| r.split_once('/'))
                    .map(|(_, name)| vec![name.to_owned()])
                    .unwrap_or_default();
                self.fetcher
                    .github_installation(
                        api,
                        app,
                        installation,
                        &secret(&c.id)?,
                        &repos,
                        &crate::vendors::github::app_permissions(scopes),
                    )
                    .await?
            }
        };
        self.admit(connection, obtained)
    }

    /// Turns a fetched token into a credential, unless PANIC deny-listed it.
    fn admit(
        &self,
        connection: Arc<Connection>,
        obtained: Obtained,
    ) -> Result<Arc<Credential>, TokenError> {
        let fingerprint = fingerprint_with(&self.fingerprint_key, obtained.token.expose());
        let now = now();
        let scheme = match connection.settings.scheme.as_str() {
            "" => "Bearer",
            s => s,
        };
        let mut header = HeaderValue::from_str(&format!("{scheme} {}", obtained.token.expose()))
            .map_err(|_| {
                TokenError::Fetch(FetchError::Setup(
                    "the token holds characters not allowed in a header".into(),
                ))
            })?;
        header.set_sensitive(true);
        let lifetime = obtained.expires_in.map(|s| s.max(1) as u64);
        let renew_in = lifetime.map(|l| {
            let skew = self.config.refresh_skew.as_secs().min(l / 2);
            Duration::from_secs(l - skew)
        });
        let credential = Arc::new(Credential {
            token: obtained.token,
            header,
            expires: lifetime.map(|l| now + l as i64),
            renew_in,
            revoked: AtomicBool::new(false),
            users: Mutex::default(),
            fingerprint,
            connection,
        });
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        if ledger.len() >= LEDGER_PRUNE_AT {
            ledger.retain(|_, c| c.expires.is_none_or(|e| e > now));
        }
        if let Some(known) = ledger.get(&credential.fingerprint) {
            if known.revoked.load(Ordering::Relaxed) {
                if known.expires.is_none_or(|e| e > now) {
                    return Err(TokenError::DenyListed(credential.fingerprint.clone()));
                }
            } else if known.connection.id == credential.connection.id {
                // The same token again (a static one after a reload): one entry, so PANIC
                // sees every agent it reached.
                return Ok(known.clone());
            }
        }
        if ledger.len() >= MAX_LEDGER {
            tracing::warn!(
                "credential ledger full; an entry is forgotten (PANIC can no longer revoke it)"
            );
            if let Some(k) = ledger.keys().next().cloned() {
                ledger.remove(&k);
            }
        }
        ledger.insert(credential.fingerprint.clone(), credential.clone());
        drop(ledger);
        let issued = record::CredentialIssued {
            connection: credential.connection.id.clone(),
            expires: credential.expires,
            fingerprint: credential.fingerprint.clone(),
            kind: credential.connection.kind.as_str().into(),
            service: credential.connection.service.clone(),
        };
        self.audit.submit(
            record::Admin {
                event: "credential_issued".into(),
                tenant: None,
                detail: record::Detail::CredentialIssued(issued),
            }
            .into(),
        );
        Ok(credential)
    }

    pub(super) fn refresh_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.refresh_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_owned()).or_default().clone()
    }

    /// The key the fleet's KV entries are tagged with (see `fleet/entry.rs`).
    pub fn fleet_key(&self) -> aws_lc_rs::hmac::Key {
        self.lock_store().fleet_key()
    }

    pub(super) fn lock_store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `after` holds the same connections as `before`, differing at most in their
/// secrets.
fn only_rotated(before: &Index, after: &Index) -> bool {
    let sorted = |i: &Index| {
        let mut all: Vec<Arc<Connection>> = i.by_origin.values().flatten().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    };
    let (before, after) = (sorted(before), sorted(after));
    before.len() == after.len() && before.iter().zip(&after).all(|(a, b)| a.same_but_secret(b))
}

#[cfg(test)]
mod tests;
