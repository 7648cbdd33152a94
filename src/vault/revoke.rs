//! PANIC's side of the vault: cut off locally first (deny-list what the agents received,
//! drop every cached credential and grant), then revoke upstream what can be revoked.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::connection::{Connection, Kind};
use super::credentials::Vault;
use super::grant::Credential;
use crate::clock::now;
use crate::outbound::FetchError;

/// The outcome of revoking one credential upstream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Upstream {
    pub credential: String,
    pub service: String,
    pub kind: &'static str,
    pub fingerprint: String,
    /// `revoked`, `failed`, `not_revocable` or `already_revoked`.
    pub result: &'static str,
    pub detail: String,
    pub deny_listed_until: Option<i64>,
}

/// What the local cut-off found.
pub struct CutOff {
    /// Credentials the agents received, newly deny-listed.
    pub fresh: Vec<Arc<Credential>>,
    /// Credentials an earlier PANIC already revoked.
    pub already: Vec<Arc<Credential>>,
    pub cached_dropped: u64,
    pub grants_dropped: u64,
}

impl Vault {
    /// Deny-lists every credential `agents` received (all when `None`) and drops every
    /// cached credential and grant. Instant; nothing leaves the process.
    pub fn cut_off(&self, agents: Option<&HashSet<String>>) -> CutOff {
        let ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let (mut fresh, mut already) = (Vec::new(), Vec::new());
        for c in ledger.values() {
            let theirs = agents.is_none_or(|a| {
                c.users
                    .lock()
                    .map_or(true, |u| u.iter().any(|x| a.contains(x)))
            });
            if !theirs {
                continue;
            }
            if c.connection.kind == Kind::Static {
                // The user's own token: other agents keep using it; PANIC cannot
                // revoke it upstream (reported), and the agent never held it.
                fresh.push(c.clone());
            } else if c.revoked.swap(true, Ordering::Relaxed) {
                already.push(c.clone());
            } else {
                fresh.push(c.clone());
            }
        }
        drop(ledger);
        let (cached_dropped, grants_dropped) = self.forget_all();
        CutOff {
            fresh,
            already,
            cached_dropped,
            grants_dropped,
        }
    }

    /// Revokes upstream what can be revoked, all at once, each call bounded by
    /// `vault.fetch_timeout`.
    pub async fn revoke_upstream(&self, cut: &CutOff, reason: &str) -> Vec<Upstream> {
        let mut out: Vec<Upstream> = cut
            .already
            .iter()
            .map(|c| entry(c, "already_revoked", "revoked by an earlier PANIC".into()))
            .collect();
        let calls = cut.fresh.iter().map(|c| self.revoke_one(c));
        out.extend(futures_util::future::join_all(calls).await);
        // Auth0: the user's refresh token, once per connection the agents used.
        let mut seen = HashSet::new();
        for c in cut
            .fresh
            .iter()
            .filter(|c| c.connection.kind == Kind::Auth0)
        {
            if seen.insert(c.connection.id.clone()) {
                out.push(self.revoke_auth0_refresh(&c.connection, reason).await);
            }
        }
        out
    }

    async fn revoke_one(&self, c: &Arc<Credential>) -> Upstream {
        let conn = &c.connection;
        let result = match conn.kind {
            Kind::Static => {
                return entry(
                    c,
                    "not_revocable",
                    "a static credential is the user's own and never reached the agent; rotate it at the provider if it may have leaked".into(),
                );
            }
            Kind::Oauth => {
                let provider = conn.settings.provider.as_deref().unwrap_or(&conn.service);
                self.fetcher
                    .revoke(Some(provider), &c.token, "access_token")
                    .await
                    .map(|done| {
                        (!done).then(|| format!("[vault.providers.{provider}] has no revoke_url"))
                    })
            }
            Kind::GithubApp => {
                let api = conn.settings.api_url.as_deref().unwrap_or(crate::vendors::github::API_URL);
                self.fetcher
                    .revoke_github_installation(api, &c.token)
                    .await
                    .map(|()| None)
            }
            Kind::Auth0 => Ok(Some(
                "Auth0 cannot revoke an issued provider access token; the Auth0 refresh token behind it is revoked below".into(),
            )),
        };
        match result {
            Ok(None) => entry(c, "revoked", "revoked at the provider".into()),
            Ok(Some(why)) => entry(c, "not_revocable", why),
            Err(e) => entry(c, "failed", e.to_string()),
        }
    }

    async fn revoke_auth0_refresh(&self, conn: &Arc<Connection>, reason: &str) -> Upstream {
        let mut e = Upstream {
            credential: conn.id.clone(),
            service: conn.service.clone(),
            kind: conn.kind.as_str(),
            fingerprint: conn.fingerprint.clone(),
            result: "revoked",
            detail: "Auth0 refresh token revoked (/oauth/revoke); the connection is disabled until `agentgate vault set` stores a new one".into(),
            deny_listed_until: None,
        };
        let secret = self.lock_store().secret(&conn.id);
        let revoked = match secret {
            Ok(s) => self.fetcher.revoke(None, &s, "refresh_token").await,
            Err(err) => Err(FetchError::Setup(err.to_string())),
        };
        match revoked {
            Ok(true) => {}
            Ok(false) => {
                e.result = "not_revocable";
                e.detail =
                    "[vault.auth0] has no revocation endpoint; the connection is disabled here"
                        .into();
            }
            Err(err) => {
                e.result = "failed";
                e.detail = format!("{err}; the connection is disabled here anyway");
            }
        }
        // Disabled either way: the next request gets 503 credential_revoked.
        let marked = self
            .lock_store()
            .mark_revoked(&conn.id, &format!("PANIC: {reason}"), now());
        if let Err(err) = marked
            .map_err(|e| e.to_string())
            .and_then(|()| self.reload().map(drop).map_err(|e| e.to_string()))
        {
            e.detail = format!("{}; marking it revoked failed: {err}", e.detail);
        }
        e
    }
}

fn entry(c: &Credential, result: &'static str, detail: String) -> Upstream {
    Upstream {
        credential: c.connection.id.clone(),
        service: c.connection.service.clone(),
        kind: c.connection.kind.as_str(),
        fingerprint: c.fingerprint.clone(),
        result,
        detail,
        deny_listed_until: (c.connection.kind != Kind::Static)
            .then_some(c.expires)
            .flatten(),
    }
}
