//! The vault's connections as a fleet shares them: each row, with its secret still sealed
//! (AES-256-GCM under the vault key, the connection id as associated data), is one entry
//! `conn.<id>` of a KV bucket. Every instance of a fleet holds the same vault key, so a row
//! written by one opens on all; `vault set` on one serves every instance and `vault rm` takes
//! effect everywhere. Nothing here decrypts. A row's `revoked` only narrows: a revocation
//! made here is kept when a row without it arrives, so it is published rather than lost.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use super::store::FILE;
use crate::replica::{Applied, FleetEntryError, Replica, StoreFile};
use crate::state::StateDir;

/// `conn.<id>`: one connection.
pub const CONN: &str = "conn.";

/// One connection as the fleet shares it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Row {
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
            out.insert(format!("{CONN}{id}"), row.to_bytes());
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
        let row = Row::parse(value).map_err(|reason| bad_key(key, &reason))?;
        let sealed = row.sealed().map_err(|reason| bad_key(key, &reason))?;
        let err = |e: rusqlite::Error| FleetEntryError::Store(format!("{FILE}: {e}"));
        let changed = write(&mut self.0.db, id, row, &sealed).map_err(err)?;
        Ok(Applied {
            changed,
            ..Applied::default()
        })
    }

    fn conditional(&self, key: &str) -> bool {
        // A connection's row is only written over the row last seen: a rotated refresh
        // token written elsewhere meanwhile must never be replaced by an older one.
        key.starts_with(CONN)
    }
}

impl Row {
    /// The row in an entry's bytes.
    pub fn parse(value: &[u8]) -> Result<Row, String> {
        serde_json::from_slice(value).map_err(|e| e.to_string())
    }

    /// The entry's bytes, as the mirror publishes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The sealed secret.
    pub fn sealed(&self) -> Result<Vec<u8>, String> {
        STANDARD.decode(&self.secret).map_err(|e| e.to_string())
    }

    /// Whether PANIC revoked the connection.
    pub fn revoked(&self) -> bool {
        self.revoked.is_some()
    }

    /// Replaces the secret (a rotated refresh token, sealed) and its fingerprint.
    pub fn rotate(&mut self, sealed: &[u8], fingerprint: String, now: i64) {
        self.secret = STANDARD.encode(sealed);
        self.fingerprint = fingerprint;
        self.updated = now;
    }
}

/// Writes connection `id` as `row` (its secret `sealed`, decoded) into the vault database,
/// replacing the row of the same (tenant, service, user) that `vault set` replaced;
/// returns whether anything changed.
pub fn write(
    db: &mut rusqlite::Connection,
    id: &str,
    mut row: Row,
    sealed: &[u8],
) -> rusqlite::Result<bool> {
    // Writing from the start: a read that later upgrades fails at once (not after the busy
    // timeout) when another connection wrote meanwhile.
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let local: Option<(Option<i64>, Option<String>)> = tx
        .query_row(
            "SELECT revoked, revoke_reason FROM connections WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((Some(at), reason)) = local {
        if row.revoked.is_none() {
            // Revoked here and not yet published: the revocation stands.
            row.revoked = Some(at);
            row.revoke_reason = reason;
        }
    }
    // `vault set` replaces a (tenant, service, user): the row it replaced goes here too.
    let replaced = tx.execute(
        "DELETE FROM connections WHERE tenant = ?1 AND service = ?2 AND user = ?3 AND id != ?4",
        params![row.tenant, row.service, row.user, id],
    )?;
    let written = tx.execute(
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
            sealed,
            row.fingerprint,
            row.expires,
            row.created,
            row.updated,
            row.revoked,
            row.revoke_reason
        ],
    )?;
    tx.commit()?;
    Ok(replaced + written > 0)
}

fn bad_key(key: &str, reason: &str) -> FleetEntryError {
    FleetEntryError::Bad {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::vault::store::{NewConnection, Store};
    use crate::vault::{Kind, Settings};

    /// A vault in `state` holding one OAuth connection (refresh token `rt-0`).
    fn gmail(state: &StateDir) -> (Store, crate::vault::Connection) {
        let mut store = Store::open(state, None).unwrap();
        let new = NewConnection {
            tenant: String::new(),
            service: "gmail".into(),
            user: String::new(),
            kind: Kind::Oauth,
            origin: "gmail.googleapis.com".into(),
            settings: Settings::default(),
            expires: None,
        };
        let c = store.put(new, &Secret::new("rt-0".into()), 1).unwrap();
        (store, c)
    }

    #[test]
    fn a_row_applied_again_changes_nothing_and_a_revocation_here_stands() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path().join("home")).unwrap();
        let (store, c) = gmail(&state);
        let key = format!("{CONN}{}", c.id);
        let mut replica = VaultReplica::open(&state).unwrap();
        let row = replica.entries(0).unwrap()[&key].clone();
        assert!(!replica.apply(&key, Some(&row), 0).unwrap().changed);

        // Rotated elsewhere while PANIC revoked it here: the new token, still revoked.
        store.mark_revoked(&c.id, "PANIC: test", 5).unwrap();
        let mut rotated = Row::parse(&row).unwrap();
        let (sealed, fp) = store
            .seal_secret(&c.id, &Secret::new("rt-1".into()))
            .unwrap();
        rotated.rotate(&sealed, fp, 6);
        let applied = replica.apply(&key, Some(&rotated.to_bytes()), 0).unwrap();
        assert!(applied.changed);
        assert_eq!(store.secret(&c.id).unwrap().expose(), "rt-1");
        let here = Row::parse(&replica.entries(0).unwrap()[&key]).unwrap();
        assert!(here.revoked(), "the revocation made here was lost");
        assert!(replica.conditional(&key));
    }

    #[test]
    fn a_row_written_while_another_connection_writes_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path().join("home")).unwrap();
        let (_store, c) = gmail(&state);
        let key = format!("{CONN}{}", c.id);
        let mut replica = VaultReplica::open(&state).unwrap();
        let row = Row::parse(&replica.entries(0).unwrap()[&key]).unwrap();
        let sealed = row.sealed().unwrap();

        // Another connection (the vault's own) holds the write lock for a moment.
        let (held, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let path = state.path(FILE);
        let writer = std::thread::spawn(move || {
            let mut db = crate::sqlite::open(&path, crate::sqlite::Durability::Full).unwrap();
            let tx = db
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .unwrap();
            tx.execute("UPDATE connections SET updated = 9", [])
                .unwrap();
            held.0.send(()).unwrap();
            release.1.recv().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
            tx.commit().unwrap();
        });
        held.1.recv().unwrap();
        release.0.send(()).unwrap();
        // Had it read first and upgraded, it would fail at once, not wait.
        write(&mut replica.0.db, &c.id, row, &sealed).unwrap();
        writer.join().unwrap();
    }
}
