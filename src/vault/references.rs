//! Reference tokens: opaque `agw_…` values handed to an agent that must send some
//! `Authorization` header. Each is bound to one agent and one service and lives
//! `vault.reference_ttl`; the proxy swaps it for the real credential. Only a SHA-256 of each
//! reference is kept, in memory: a restart (or PANIC) voids them all.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The prefix every reference carries.
pub const PREFIX: &str = "agw_";
/// Most references alive at once.
const MAX_REFERENCES: u64 = 100_000;

/// What a reference is bound to.
#[derive(Debug)]
struct Reference {
    agent: String,
    service: String,
    expires: i64,
}

/// Why a presented reference is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("the agw_ reference is unknown, expired or revoked; ask for a new one")]
    Unknown,
    #[error("the agw_ reference was issued to another agent")]
    OtherAgent,
    #[error("the agw_ reference is for service {0}, not this one")]
    OtherService(String),
}

/// The live references.
pub struct References {
    map: moka::sync::Cache<[u8; 32], Arc<Reference>>,
    ttl: Duration,
}

impl References {
    /// An empty set whose references live `ttl`.
    pub fn new(ttl: Duration) -> References {
        References {
            map: moka::sync::Cache::builder()
                .max_capacity(MAX_REFERENCES)
                .time_to_live(ttl)
                .build(),
            ttl,
        }
    }

    /// A new reference for `agent` (SPIFFE ID) and `service`, with its expiry (unix).
    pub fn mint(
        &self,
        agent: &str,
        service: &str,
    ) -> Result<(String, i64), super::error::VaultError> {
        let value = format!(
            "{PREFIX}{}",
            URL_SAFE_NO_PAD.encode(super::store::random::<32>()?)
        );
        let expires = crate::clock::now() + self.ttl.as_secs() as i64;
        self.map.insert(
            key(&value),
            Arc::new(Reference {
                agent: agent.to_owned(),
                service: service.to_owned(),
                expires,
            }),
        );
        Ok((value, expires))
    }

    /// Checks a presented reference against the caller and the service of the request.
    pub fn check(&self, presented: &str, agent: &str, service: &str) -> Result<(), ReferenceError> {
        let r = self
            .map
            .get(&key(presented))
            .filter(|r| r.expires > crate::clock::now())
            .ok_or(ReferenceError::Unknown)?;
        if r.agent != agent {
            return Err(ReferenceError::OtherAgent);
        }
        if r.service != service {
            return Err(ReferenceError::OtherService(r.service.clone()));
        }
        Ok(())
    }

    /// Voids the references of `agents` (every reference when `None`); returns how many.
    pub fn revoke(&self, agents: Option<&HashSet<String>>) -> usize {
        let doomed: Vec<_> = self
            .map
            .iter()
            .filter(|(_, r)| agents.is_none_or(|a| a.contains(&r.agent)))
            .map(|(k, _)| *k)
            .collect();
        for k in &doomed {
            self.map.invalidate(k);
        }
        doomed.len()
    }
}

fn key(reference: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, reference.as_bytes()).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_references_to_agent_and_service() {
        let refs = References::new(Duration::from_secs(60));
        let (r, _) = refs.mint("spiffe://td/agent/a", "github").unwrap();
        assert!(r.starts_with("agw_") && r.len() > 40);
        refs.check(&r, "spiffe://td/agent/a", "github").unwrap();
        assert_eq!(
            refs.check(&r, "spiffe://td/agent/b", "github"),
            Err(ReferenceError::OtherAgent)
        );
        assert_eq!(
            refs.check(&r, "spiffe://td/agent/a", "slack"),
            Err(ReferenceError::OtherService("github".into()))
        );
        assert_eq!(
            refs.check("agw_forged", "spiffe://td/agent/a", "github"),
            Err(ReferenceError::Unknown)
        );
        let agents = HashSet::from(["spiffe://td/agent/a".to_owned()]);
        assert_eq!(refs.revoke(Some(&agents)), 1);
        assert_eq!(
            refs.check(&r, "spiffe://td/agent/a", "github"),
            Err(ReferenceError::Unknown)
        );
    }
}
