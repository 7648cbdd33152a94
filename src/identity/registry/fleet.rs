//! The registry as a fleet shares it: each entry a key and a JSON value in a NATS KV
//! bucket. [`Registry::fleet_entries`] lists this registry's state under those keys;
//! [`Registry::fleet_apply`] writes an entry another instance published. Agents are whole
//! rows (the last writer wins), revocations of SPIFFE IDs come and go (a lift deletes the
//! key), revoked token ids only ever accumulate, and issuer keys are public JWKs: each
//! instance publishes its own and trusts the others'.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{IssuerKey, Registry, RegistryError};
use crate::digest::hex;
use crate::replica::{Applied, FleetEntryError, Replica};

/// `agent.<name>`: an agent's row.
pub const AGENT: &str = "agent.";
/// `revoked.<hex of the SPIFFE ID>`: a revoked SPIFFE ID (`*` for PANIC --all).
pub const REVOKED: &str = "revoked.";
/// `jti.<jti>`: a revoked token.
pub const JTI: &str = "jti.";
/// `issuer.<kid>`: an instance's issuer public key.
pub const ISSUER: &str = "issuer.";

#[derive(Debug, Serialize, Deserialize)]
struct AgentEntry {
    spiffe_id: String,
    owner: Option<String>,
    tenant: Option<String>,
    created: i64,
    revoked: Option<i64>,
    revoke_reason: Option<String>,
    reference_tokens: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct RevokedEntry {
    spiffe_id: String,
    revoked: i64,
    reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct JtiEntry {
    expires: i64,
    revoked: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct IssuerEntry {
    public_jwk: String,
    created: i64,
    valid_until: Option<i64>,
}

impl From<RegistryError> for FleetEntryError {
    fn from(e: RegistryError) -> Self {
        FleetEntryError::Store(e.to_string())
    }
}

/// The registry as a mirror's replica.
pub struct RegistryReplica(pub Registry);

impl Replica for RegistryReplica {
    fn version(&self) -> Result<i64, FleetEntryError> {
        Ok(self.0.data_version()?)
    }

    fn entries(&self, now: i64) -> Result<BTreeMap<String, Vec<u8>>, FleetEntryError> {
        Ok(self.0.fleet_entries(now)?)
    }

    fn apply(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        now: i64,
    ) -> Result<Applied, FleetEntryError> {
        self.0.fleet_apply(key, value, now)
    }

    fn deletes(&self, key: &str) -> bool {
        // A revocation lifted here (re-registration, `panic --lift`) is deleted for all.
        key.starts_with(REVOKED)
    }
}

impl Registry {
    /// Every entry this registry publishes: its agents, revoked SPIFFE IDs, the unexpired
    /// revoked tokens it issued, and its own issuer keys.
    pub fn fleet_entries(&self, now: i64) -> Result<BTreeMap<String, Vec<u8>>, RegistryError> {
        let mut out = BTreeMap::new();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, spiffe_id, owner, tenant, created, revoked, revoke_reason, reference_tokens FROM agents",
            )
            .map_err(self.db())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    AgentEntry {
                        spiffe_id: r.get(1)?,
                        owner: r.get(2)?,
                        tenant: r.get(3)?,
                        created: r.get(4)?,
                        revoked: r.get(5)?,
                        revoke_reason: r.get(6)?,
                        reference_tokens: r.get::<_, i64>(7)? != 0,
                    },
                ))
            })
            .map_err(self.db())?;
        for row in rows {
            let (name, entry) = row.map_err(self.db())?;
            out.insert(format!("{AGENT}{name}"), json(&entry));
        }
        let mut stmt = self
            .conn
            .prepare("SELECT spiffe_id, revoked, reason FROM revoked_ids")
            .map_err(self.db())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RevokedEntry {
                    spiffe_id: r.get(0)?,
                    revoked: r.get(1)?,
                    reason: r.get(2)?,
                })
            })
            .map_err(self.db())?;
        for row in rows {
            let entry = row.map_err(self.db())?;
            out.insert(
                format!("{REVOKED}{}", hex(entry.spiffe_id.as_bytes())),
                json(&entry),
            );
        }
        let mut stmt = self
            .conn
            .prepare("SELECT jti, expires, revoked FROM tokens WHERE revoked IS NOT NULL AND expires >= ?1")
            .map_err(self.db())?;
        let rows = stmt
            .query_map(params![now], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    JtiEntry {
                        expires: r.get(1)?,
                        revoked: r.get(2)?,
                    },
                ))
            })
            .map_err(self.db())?;
        for row in rows {
            let (jti, entry) = row.map_err(self.db())?;
            out.insert(format!("{JTI}{jti}"), json(&entry));
        }
        for key in self.issuer_keys()? {
            let entry = IssuerEntry {
                public_jwk: key.public_jwk,
                created: key.created,
                valid_until: key.valid_until,
            };
            out.insert(format!("{ISSUER}{}", key.kid), json(&entry));
        }
        Ok(out)
    }

    /// Writes one entry another instance published (`None`: the key was deleted).
    pub fn fleet_apply(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        now: i64,
    ) -> Result<Applied, FleetEntryError> {
        let bad = |reason: String| FleetEntryError::Bad {
            key: key.to_owned(),
            reason,
        };
        let parse = |v: Option<&[u8]>| -> Result<Option<serde_json::Value>, FleetEntryError> {
            v.map(|b| serde_json::from_slice(b).map_err(|e| bad(e.to_string())))
                .transpose()
        };
        let value = parse(value)?;
        let db = self.db();
        if let Some(name) = key.strip_prefix(AGENT) {
            let Some(value) = value else {
                // Agents are never deleted; a purged key changes nothing here.
                return Ok(Applied::default());
            };
            let entry: AgentEntry =
                serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
            let before: Option<Option<i64>> = self
                .conn
                .query_row(
                    "SELECT revoked FROM agents WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(&db)?;
            // A row of a registration older than a revocation made here (while the bus was
            // away, say) never lifts it: the revocation stands and is published instead.
            // A re-registration stamps a new `created`, so one made after it does lift it.
            if let Some(Some(revoked_here)) = before
                && entry.revoked.is_none()
                && entry.created <= revoked_here
            {
                return Ok(Applied::default());
            }
            self.conn
                .execute(
                    "INSERT INTO agents (name, spiffe_id, owner, tenant, created, revoked, revoke_reason, reference_tokens)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(name) DO UPDATE SET spiffe_id = ?2, owner = ?3, tenant = ?4,
                         created = ?5, revoked = ?6, revoke_reason = ?7, reference_tokens = ?8
                     WHERE (spiffe_id, owner, tenant, created, revoked, revoke_reason, reference_tokens)
                         IS NOT (?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        name,
                        entry.spiffe_id,
                        entry.owner,
                        entry.tenant,
                        entry.created,
                        entry.revoked,
                        entry.revoke_reason,
                        entry.reference_tokens as i64
                    ],
                )
                .map_err(&db)?;
            let id_revoked: bool = self
                .conn
                .query_row(
                    "SELECT COUNT(*) FROM revoked_ids WHERE spiffe_id = ?1",
                    params![entry.spiffe_id],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(&db)?
                > 0;
            let was_revoked = matches!(before, Some(Some(_))) || id_revoked;
            let mut applied = Applied {
                changed: self.conn.changes() > 0,
                ..Applied::default()
            };
            if entry.revoked.is_some() && !was_revoked {
                // Tokens issued here to an agent revoked elsewhere go with it.
                self.conn
                    .execute(
                        "UPDATE tokens SET revoked = COALESCE(revoked, ?2) WHERE agent = ?1",
                        params![name, now],
                    )
                    .map_err(&db)?;
                applied.newly_revoked.push(entry.spiffe_id);
            }
            return Ok(applied);
        }
        if let Some(id_hex) = key.strip_prefix(REVOKED) {
            let Some(value) = value else {
                let id = unhex(id_hex).ok_or_else(|| bad("not a hex SPIFFE ID".into()))?;
                let n = self
                    .conn
                    .execute("DELETE FROM revoked_ids WHERE spiffe_id = ?1", params![id])
                    .map_err(&db)?;
                return Ok(Applied {
                    changed: n > 0,
                    ..Applied::default()
                });
            };
            let entry: RevokedEntry =
                serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
            // Already refused as a revoked agent: nothing new to cut off.
            let agent_revoked: bool = self
                .conn
                .query_row(
                    "SELECT COUNT(*) FROM agents WHERE spiffe_id = ?1 AND revoked IS NOT NULL",
                    params![entry.spiffe_id],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(&db)?
                > 0;
            let n = self
                .conn
                .execute(
                    "INSERT OR IGNORE INTO revoked_ids (spiffe_id, revoked, reason) VALUES (?1, ?2, ?3)",
                    params![entry.spiffe_id, entry.revoked, entry.reason],
                )
                .map_err(&db)?;
            let newly = n > 0 && !agent_revoked;
            return Ok(Applied {
                changed: n > 0,
                newly_revoked: if newly { vec![entry.spiffe_id] } else { vec![] },
                ..Applied::default()
            });
        }
        if let Some(jti) = key.strip_prefix(JTI) {
            let Some(value) = value else {
                return Ok(Applied::default());
            };
            let entry: JtiEntry = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
            let own = self
                .conn
                .execute(
                    "UPDATE tokens SET revoked = ?2 WHERE jti = ?1 AND revoked IS NULL",
                    params![jti, entry.revoked],
                )
                .map_err(&db)?;
            let other = self
                .conn
                .execute(
                    "INSERT OR IGNORE INTO fleet_revoked_jtis (jti, expires, revoked) VALUES (?1, ?2, ?3)",
                    params![jti, entry.expires, entry.revoked],
                )
                .map_err(&db)?;
            return Ok(Applied {
                changed: own + other > 0,
                ..Applied::default()
            });
        }
        if let Some(kid) = key.strip_prefix(ISSUER) {
            let own: bool = self
                .conn
                .query_row(
                    "SELECT COUNT(*) FROM issuer_keys WHERE kid = ?1",
                    params![kid],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(&db)?
                > 0;
            if own {
                return Ok(Applied::default());
            }
            let n = match value {
                None => self
                    .conn
                    .execute("DELETE FROM fleet_issuer_keys WHERE kid = ?1", params![kid])
                    .map_err(&db)?,
                Some(value) => {
                    let entry: IssuerEntry =
                        serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
                    self.conn
                        .execute(
                            "INSERT INTO fleet_issuer_keys (kid, public_jwk, created, valid_until) VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT(kid) DO UPDATE SET public_jwk = ?2, created = ?3, valid_until = ?4
                             WHERE (public_jwk, created, valid_until) IS NOT (?2, ?3, ?4)",
                            params![kid, entry.public_jwk, entry.created, entry.valid_until],
                        )
                        .map_err(&db)?
                }
            };
            return Ok(Applied {
                changed: n > 0,
                ..Applied::default()
            });
        }
        Err(bad("unknown kind of entry".into()))
    }

    /// The issuer keys other instances of the fleet published.
    pub fn fleet_issuer_keys(&self) -> Result<Vec<IssuerKey>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare("SELECT kid, public_jwk, created, valid_until FROM fleet_issuer_keys")
            .map_err(self.db())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(IssuerKey {
                    kid: r.get(0)?,
                    public_jwk: r.get(1)?,
                    created: r.get(2)?,
                    retired: None,
                    valid_until: r.get(3)?,
                })
            })
            .map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }
}

fn unhex(s: &str) -> Option<String> {
    if s.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// An entry's value: its JSON.
fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateDir;

    fn registry(dir: &tempfile::TempDir, name: &str) -> Registry {
        let state = StateDir::open_or_create(dir.path().join(name)).unwrap();
        Registry::open(&state).unwrap()
    }

    /// Everything one registry publishes, applied to another.
    fn sync(from: &Registry, to: &mut Registry, now: i64) -> Vec<String> {
        let mut revoked = Vec::new();
        for (key, value) in from.fleet_entries(now).unwrap() {
            revoked.extend(
                to.fleet_apply(&key, Some(&value), now)
                    .unwrap()
                    .newly_revoked,
            );
        }
        revoked
    }

    #[test]
    fn agents_revocations_and_lifts_travel_between_registries() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b) = (registry(&dir, "a"), registry(&dir, "b"));
        a.upsert_agent("bot", "spiffe://t/agent/bot", Some("alice"), None, 100)
            .unwrap();
        assert!(sync(&a, &mut b, 100).is_empty());
        assert_eq!(b.agent("bot").unwrap().owner.as_deref(), Some("alice"));
        // Applying the same state again changes nothing.
        for (key, value) in a.fleet_entries(100).unwrap() {
            assert!(!b.fleet_apply(&key, Some(&value), 100).unwrap().changed);
        }

        a.revoke_agent("bot", "panic", 200).unwrap();
        let revoked = sync(&a, &mut b, 200);
        assert!(
            revoked.contains(&"spiffe://t/agent/bot".to_owned()),
            "{revoked:?}"
        );
        assert!(b.agent("bot").unwrap().revoked.is_some());
        assert!(
            b.snapshot(200)
                .unwrap()
                .revoked_ids
                .contains("spiffe://t/agent/bot")
        );

        // A lift (re-registration) deletes the revocation key.
        a.upsert_agent("bot", "spiffe://t/agent/bot", Some("alice"), None, 300)
            .unwrap();
        sync(&a, &mut b, 300);
        let key = format!("{REVOKED}{}", hex(b"spiffe://t/agent/bot"));
        assert!(b.fleet_apply(&key, None, 300).unwrap().changed);
        let snap = b.snapshot(300).unwrap();
        assert!(!snap.revoked_ids.contains("spiffe://t/agent/bot"));
        assert!(b.agent("bot").unwrap().revoked.is_none());
    }

    #[test]
    fn a_revocation_made_here_is_not_lifted_by_an_older_row_from_the_bus() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b) = (registry(&dir, "a"), registry(&dir, "b"));
        a.upsert_agent("bot", "spiffe://t/agent/bot", Some("alice"), None, 100)
            .unwrap();
        sync(&a, &mut b, 100);
        // B, cut off from the bus, revokes; then the bus replays A's row of the same
        // registration.
        b.revoke_agent("bot", "offline", 150).unwrap();
        sync(&a, &mut b, 160);
        assert_eq!(
            b.agent("bot").unwrap().revoked,
            Some(150),
            "the revocation was lifted"
        );
        let published = &b.fleet_entries(160).unwrap()[&format!("{AGENT}bot")];
        let entry: AgentEntry = serde_json::from_slice(published).unwrap();
        assert_eq!(entry.revoked, Some(150), "B publishes its revocation");
        // A re-registration made after the revocation does lift it.
        a.upsert_agent("bot", "spiffe://t/agent/bot", Some("alice"), None, 300)
            .unwrap();
        sync(&a, &mut b, 300);
        assert!(b.agent("bot").unwrap().revoked.is_none());
    }

    #[test]
    fn issuer_keys_and_revoked_tokens_of_others_are_trusted_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = registry(&dir, "b");
        let jwk = r#"{"kty":"EC","crv":"P-256","x":"x","y":"y","kid":"k-a"}"#;
        let issuer = serde_json::to_vec(&IssuerEntry {
            public_jwk: jwk.into(),
            created: 1,
            valid_until: None,
        })
        .unwrap();
        assert!(
            b.fleet_apply("issuer.k-a", Some(&issuer), 10)
                .unwrap()
                .changed
        );
        let jti = serde_json::to_vec(&JtiEntry {
            expires: 1000,
            revoked: 5,
        })
        .unwrap();
        b.fleet_apply("jti.abc", Some(&jti), 10).unwrap();
        let snap = b.snapshot(10).unwrap();
        assert!(snap.issuer_keys.iter().any(|k| k.kid == "k-a"));
        assert!(snap.revoked_jtis.contains("abc"));
        // Never re-published as this instance's own.
        assert!(!b.fleet_entries(10).unwrap().contains_key("issuer.k-a"));
        assert!(matches!(
            b.fleet_apply("bogus.x", Some(b"{}"), 10),
            Err(FleetEntryError::Bad { .. })
        ));
    }
}
