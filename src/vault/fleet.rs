//! The vault's connections as a fleet shares them: each row, with its secret still sealed
//! (AES-256-GCM under the vault key, the connection id as associated data), is one entry
//! `conn.<id>` of a KV bucket. Every instance of a fleet holds the same vault key, so a row
//! written by one opens on all; `vault set` on one serves every instance and `vault rm` takes
//! effect everywhere. Nothing here decrypts.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::store::FILE;
use crate::replica::{Applied, FleetEntryError, Replica, StoreFile};
use crate::state::StateDir;

/// `conn.<id>`: one connection.
pub const CONN: &str = "conn.";

#[derive(Debug, Serialize, Deserialize)]
struct Row {
    tenant: String,
    service: String,
    user: String,
    kind: String,
    origin: String,
    settings: String,
    /// Base64 of the sealed secret.
    secret: String,
    fingerprint: String,
    expires: Option<i64>,
    created: i64,
    updated: i64,
    revoked: Option<i64>,
    revoke_reason: Option<String>,
}

/// The vault database as a mirror's replica.
pub struct VaultReplica(StoreFile);

impl VaultReplica {
    /// Opens `vault.db` in `state` (its schema is the vault's; it must exist).
    pub fn open(state: &StateDir) -> Result<VaultReplica, FleetEntryError> {
        StoreFile::open(&state.path(FILE)).map(VaultReplica)
    }
}

impl Replica for VaultReplica {
    fn version(&self) -> Result<i64, FleetEntryError> {
        self.0.version()
    }

    fn deletes(&self, key: &str) -> bool {
        // `vault rm` here removes the connection everywhere.
        key.starts_with(CONN)
    }

    /// Every connection, by key.
    fn entries(&self, _now: i64) -> Result<BTreeMap<String, Vec<u8>>, FleetEntryError> {
        let mut stmt = self
            .0
            .db
            .prepare(
                "SELECT id, tenant, service, user, kind, origin, settings, secret, fingerprint,
                        expires, created, updated, revoked, revoke_reason FROM connections",
            )
            .map_err(self.0.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Row {
                        tenant: r.get(1)?,
                        service: r.get(2)?,
                        user: r.get(3)?,
                        kind: r.get(4)?,
                        origin: r.get(5)?,
                        settings: r.get(6)?,
                        secret: STANDARD.encode(r.get::<_, Vec<u8>>(7)?),
                        fingerprint: r.get(8)?,
                        expires: r.get(9)?,
                        created: r.get(10)?,
                        updated: r.get(11)?,
                        revoked: r.get(12)?,
                        revoke_reason: r.get(13)?,
                    },
                ))
            })
            .map_err(self.0.err())?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (id, row) = row.map_err(self.0.err())?;
            out.insert(
                format!("{CONN}{id}"),
                serde_json::to_vec(&row).unwrap_or_default(),
            );
        }
        Ok(out)
    }

    /// Writes a connection another instance published, or removes one it removed.
    fn apply(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        _now: i64,
    ) -> Result<Applied, FleetEntryError> {
        let Some(id) = key.strip_prefix(CONN) else {
            return Err(bad_key(key, "unknown kind of entry"));
        };
        let Some(value) = value else {
            let n = self
                .0
                .db
                .execute("DELETE FROM connections WHERE id = ?1", params![id])
                .map_err(self.0.err())?;
            return Ok(Applied {
                changed: n > 0,
                ..Applied::default()
            });
        };
        let row: Row = serde_json::from_slice(value).map_err(|e| bad_key(key, &e.to_string()))?;
        let secret = STANDARD
            .decode(&row.secret)
            .map_err(|e| bad_key(key, &e.to_string()))?;
        let err = |e: rusqlite::Error| FleetEntryError::Store(format!("{FILE}: {e}"));
        let tx = self.0.db.transaction().map_err(err)?;
        // `vault set` replaces a (tenant, service, user): the row it replaced goes here too.
        let replaced = tx
            .execute(
                "DELETE FROM connections WHERE tenant = ?1 AND service = ?2 AND user = ?3 AND id != ?4",
                params![row.tenant, row.service, row.user, id],
            )
            .map_err(err)?;
        let written = tx
            .execute(
                "INSERT INTO connections (id, tenant, service, user, kind, origin, settings, secret,
                     fingerprint, expires, created, updated, revoked, revoke_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT(id) DO UPDATE SET tenant = ?2, service = ?3, user = ?4, kind = ?5,
                     origin = ?6, settings = ?7, secret = ?8, fingerprint = ?9, expires = ?10,
                     created = ?11, updated = ?12, revoked = ?13, revoke_reason = ?14
                 WHERE (tenant, service, user, kind, origin, settings, secret, fingerprint, expires,
                        created, updated, revoked, revoke_reason)
                     IS NOT (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    id,
                    row.tenant,
                    row.service,
                    row.user,
                    row.kind,
                    row.origin,
                    row.settings,
                    secret,
                    row.fingerprint,
                    row.expires,
                    row.created,
                    row.updated,
                    row.revoked,
                    row.revoke_reason
                ],
            )
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Applied {
            changed: replaced + written > 0,
            ..Applied::default()
        })
    }
}

fn bad_key(key: &str, reason: &str) -> FleetEntryError {
    FleetEntryError::Bad {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}
