//! Who an admin request speaks for: the instance admin token sees everything, a tenant's
//! token only its tenant. The dashboard gets the same scopes through short-lived secrets:
//! a one-time link code (printed by `agentgate dashboard`), the session token it is
//! exchanged for, and single-use tickets for `EventSource`, which cannot send headers.
//!
//! Tokens are looked up by their SHA-256, so a lookup's timing says nothing about the token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

/// What a caller may see and act on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The instance admin: every tenant, and instance-wide routes.
    Instance,
    /// One tenant's admin.
    Tenant(Arc<str>),
}

impl Scope {
    /// The tenant this scope is limited to, if any.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::Instance => None,
            Scope::Tenant(t) => Some(t),
        }
    }

    /// Whether data of `tenant` (None: tenant-less) is visible in this scope.
    pub fn sees(&self, tenant: Option<&str>) -> bool {
        match self {
            Scope::Instance => true,
            Scope::Tenant(t) => tenant == Some(&**t),
        }
    }

    /// `"instance"` or `"tenant"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Instance => "instance",
            Scope::Tenant(_) => "tenant",
        }
    }
}

/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a one-time link code stays usable.
pub const CODE_TTL: Duration = Duration::from_secs(300);
/// How long an event-stream ticket stays usable.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

// Per scope, so one tenant cannot use up another's (or the instance admin's) share.
const MAX_SESSIONS: usize = 32;
const MAX_CODES: usize = 16;
const MAX_TICKETS: usize = 64;

/// Every secret issued would be outstanding at once beyond its bound.
#[derive(Debug, thiserror::Error)]
#[error("too many outstanding {0}; wait for some to expire (or restart the instance)")]
pub struct Full(&'static str);

type Key = [u8; 32];

struct Grant {
    scope: Scope,
    expires: Instant,
}

/// A set of expiring secrets of one kind, bounded per scope.
struct Issued {
    what: &'static str,
    max: usize,
    ttl: Duration,
    /// At the bound, the scope's oldest is dropped instead of refusing (sessions: a new
    /// sign-in always works; the oldest session of that scope ends).
    evict: bool,
    map: Mutex<HashMap<Key, Grant>>,
}

impl Issued {
    fn new(what: &'static str, max: usize, ttl: Duration, evict: bool) -> Self {
        Self {
            what,
            max,
            ttl,
            evict,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn issue(&self, prefix: &str, scope: &Scope) -> Result<String, Full> {
        let secret = format!("{prefix}{}", random_token());
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, g| g.expires > now);
        let mine = || map.iter().filter(|(_, g)| g.scope == *scope);
        if mine().count() >= self.max {
            if !self.evict {
                return Err(Full(self.what));
            }
            if let Some(oldest) = mine().min_by_key(|(_, g)| g.expires).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            key(&secret),
            Grant {
                scope: scope.clone(),
                expires: now + self.ttl,
            },
        );
        Ok(secret)
    }

    fn check(&self, secret: &str, once: bool) -> Option<Scope> {
        let k = key(secret);
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if once {
            let grant = map.remove(&k)?;
            return (grant.expires > now).then_some(grant.scope);
        }
        match map.get(&k) {
            Some(g) if g.expires > now => Some(g.scope.clone()),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    fn revoke(&self, secret: &str) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&key(secret)).is_some()
    }
}

/// The admin listener's token table.
pub struct Auth {
    fixed: HashMap<Key, Scope>,
    sessions: Issued,
    codes: Issued,
    tickets: Issued,
}

impl Auth {
    /// The instance token plus one token per tenant.
    pub fn new(admin_token: &str, tenant_tokens: &[(String, String)]) -> Self {
        let mut fixed = HashMap::new();
        fixed.insert(key(admin_token), Scope::Instance);
        for (tenant, token) in tenant_tokens {
            fixed.insert(key(token), Scope::Tenant(tenant.as_str().into()));
        }
        Self {
            fixed,
            sessions: Issued::new("dashboard sessions", MAX_SESSIONS, SESSION_TTL, true),
            codes: Issued::new("dashboard links", MAX_CODES, CODE_TTL, false),
            tickets: Issued::new("event-stream tickets", MAX_TICKETS, TICKET_TTL, false),
        }
    }

    /// The scope of a bearer token: an admin or tenant token, or a dashboard session.
    pub fn bearer(&self, token: &str) -> Option<Scope> {
        if let Some(scope) = self.fixed.get(&key(token)) {
            return Some(scope.clone());
        }
        token
            .starts_with("ags_")
            .then(|| self.sessions.check(token, false))
            .flatten()
    }

    /// A one-time dashboard link code for `scope`.
    pub fn link_code(&self, scope: &Scope) -> Result<String, Full> {
        self.codes.issue("", scope)
    }

    /// Swaps a link code (once) for a session token.
    pub fn exchange(&self, code: &str) -> Option<Result<(String, Scope), Full>> {
        let scope = self.codes.check(code, true)?;
        Some(self.sessions.issue("ags_", &scope).map(|s| (s, scope)))
    }

    /// A single-use ticket for the event stream.
    pub fn ticket(&self, scope: &Scope) -> Result<String, Full> {
        self.tickets.issue("agt_", scope)
    }

    /// Redeems an event-stream ticket.
    pub fn redeem(&self, ticket: &str) -> Option<Scope> {
        self.tickets.check(ticket, true)
    }

    /// Ends a dashboard session (sign-out); false when it was not one.
    pub fn end_session(&self, token: &str) -> bool {
        self.sessions.revoke(token)
    }
}

fn key(secret: &str) -> Key {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_their_scope() {
        let auth = Auth::new("admin-secret", &[("acme".into(), "acme-secret".into())]);
        assert_eq!(auth.bearer("admin-secret"), Some(Scope::Instance));
        assert_eq!(
            auth.bearer("acme-secret"),
            Some(Scope::Tenant("acme".into()))
        );
        assert_eq!(auth.bearer("nope"), None);
        assert_eq!(auth.bearer(""), None);
    }

    #[test]
    fn link_codes_and_tickets_work_once() {
        let auth = Auth::new("a", &[]);
        let scope = Scope::Tenant("acme".into());
        let code = auth.link_code(&scope).unwrap();
        let (session, got) = auth.exchange(&code).unwrap().unwrap();
        assert_eq!(got, scope);
        assert!(auth.exchange(&code).is_none(), "a code works once");
        assert_eq!(auth.bearer(&session), Some(scope.clone()));
        assert_eq!(
            auth.bearer(&session),
            Some(scope.clone()),
            "sessions persist"
        );
        let ticket = auth.ticket(&scope).unwrap();
        assert!(
            auth.bearer(&ticket).is_none(),
            "a ticket is not a bearer token"
        );
        assert_eq!(auth.redeem(&ticket), Some(scope));
        assert_eq!(auth.redeem(&ticket), None);
        assert!(auth.end_session(&session));
        assert_eq!(auth.bearer(&session), None);
    }

    #[test]
    fn issued_secrets_are_bounded_per_scope() {
        let auth = Auth::new("a", &[]);
        let acme = Scope::Tenant("acme".into());
        for _ in 0..MAX_CODES {
            auth.link_code(&acme).unwrap();
        }
        assert!(auth.link_code(&acme).is_err(), "acme's links are bounded");
        assert!(
            auth.link_code(&Scope::Instance).is_ok(),
            "another scope is not affected"
        );
        // Sessions: the scope's oldest gives way, so sign-in always works.
        let mut sessions = Vec::new();
        for _ in 0..=MAX_SESSIONS {
            let code = auth.link_code(&Scope::Instance).unwrap();
            sessions.push(auth.exchange(&code).unwrap().unwrap().0);
            // Codes are used up by the exchange, so they never hit their own bound here.
        }
        assert_eq!(auth.bearer(&sessions[0]), None, "the oldest session ended");
        assert!(auth.bearer(&sessions[MAX_SESSIONS]).is_some());
    }

    #[test]
    fn scopes_see_their_tenant_only() {
        let t = Scope::Tenant("acme".into());
        assert!(t.sees(Some("acme")));
        assert!(!t.sees(Some("globex")));
        assert!(!t.sees(None));
        assert!(Scope::Instance.sees(None));
    }
}
