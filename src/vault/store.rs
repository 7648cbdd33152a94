//! The local vault: connections and their secrets in SQLite (`vault.db`, 0600), each secret
//! sealed with AES-256-GCM under the vault key (`vault.key`, 0600). The ciphertext is bound
//! to its row id (AEAD associated data), so secrets cannot be swapped between connections,
//! and a key check value makes a wrong key fail at open instead of at first use.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rusqlite::{Connection as Db, OptionalExtension, params};

use super::connection::{Connection, Kind, Settings};
use super::error::VaultError;
use crate::secret::Secret;
use crate::sqlite::{self, Durability, OpenError};
use crate::state::{StateDir, read_private, write_private};

/// File name of the vault database in the state dir.
pub const FILE: &str = "vault.db";
/// Default file name of the vault key in the state dir.
pub const KEY_FILE: &str = "vault.key";

const KEY_CHECK: &[u8] = b"agentgate vault key check v1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS connections (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    service TEXT NOT NULL,
    user TEXT NOT NULL,
    kind TEXT NOT NULL,
    origin TEXT NOT NULL,
    settings TEXT NOT NULL,
    secret BLOB NOT NULL,
    fingerprint TEXT NOT NULL,
    expires INTEGER,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    revoked INTEGER,
    revoke_reason TEXT,
    UNIQUE (tenant, service, user)
);
";

/// A new connection, as `vault set` describes it.
#[derive(Debug, Clone)]
pub struct NewConnection {
    pub tenant: String,
    pub service: String,
    pub user: String,
    pub kind: Kind,
    pub origin: String,
    pub settings: Settings,
    pub expires: Option<i64>,
}

/// The sealing key and what is derived from it.
struct Keys {
    aead: LessSafeKey,
    fingerprint: hmac::Key,
    /// Tags the fleet's KV entries (`fleet/entry.rs`).
    fleet: hmac::Key,
}

/// An open vault database with its key.
pub struct Store {
    db: Db,
    path: PathBuf,
    keys: Keys,
}

impl Store {
    /// Opens `vault.db` in `state` with the key at `key_file` (default `vault.key` there).
    /// A missing key is created only while the vault holds no secret; otherwise opening
    /// fails, naming the file, rather than leaving secrets undecryptable.
    pub fn open(state: &StateDir, key_file: Option<&Path>) -> Result<Store, VaultError> {
        let key_path = key_file.map_or_else(|| state.path(KEY_FILE), Path::to_owned);
        Self::open_paths(&state.path(FILE), &key_path)
    }

    /// Opens the vault at `path` with the key at `key_path`.
    pub fn open_paths(path: &Path, key_path: &Path) -> Result<Store, VaultError> {
        let db = sqlite::open(path, Durability::Full).map_err(|e| match e {
            OpenError::Create(e) => VaultError::State(e),
            OpenError::Db(e) => db_err(path)(e),
        })?;
        db.execute_batch(SCHEMA).map_err(db_err(path))?;
        let check: Option<Vec<u8>> = db
            .query_row("SELECT value FROM meta WHERE name = 'key_check'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err(path))?;
        let secrets: i64 = db
            .query_row("SELECT COUNT(*) FROM connections", [], |r| r.get(0))
            .map_err(db_err(path))?;
        let raw = if key_path.exists() {
            let text = read_private(key_path)?;
            decode_key(&text).ok_or_else(|| VaultError::BadKey {
                path: key_path.to_owned(),
                reason: "it must hold 32 bytes, base64-encoded".into(),
            })?
        } else if check.is_some() || secrets > 0 {
            return Err(VaultError::MissingKey {
                key: key_path.to_owned(),
                db: path.to_owned(),
                secrets,
            });
        } else {
            let mut raw = [0u8; 32];
            aws_lc_rs::rand::fill(&mut raw).map_err(|_| VaultError::Crypto)?;
            let mut text = STANDARD.encode(raw);
            text.push('\n');
            write_private(key_path, text.as_bytes())?;
            raw
        };
        let keys = Keys::new(&raw)?;
        let store = Store {
            db,
            path: path.to_owned(),
            keys,
        };
        match check {
            Some(sealed) => {
                if store.open_sealed(b"key_check", &sealed).as_deref() != Some(KEY_CHECK) {
                    return Err(VaultError::WrongKey {
                        key: key_path.to_owned(),
                        db: path.to_owned(),
                    });
                }
            }
            None => {
                let sealed = store.seal(b"key_check", KEY_CHECK)?;
                store
                    .db
                    .execute(
                        "INSERT INTO meta (name, value) VALUES ('key_check', ?1)",
                        params![sealed],
                    )
                    .map_err(db_err(path))?;
            }
        }
        Ok(store)
    }

    /// A change counter: differs after another process committed to the vault.
    pub fn data_version(&self) -> Result<i64, VaultError> {
        self.db
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(db_err(&self.path))
    }

    /// Stores a connection, replacing one with the same (tenant, service, user).
    pub fn put(
        &mut self,
        new: NewConnection,
        secret: &Secret,
        now: i64,
    ) -> Result<Connection, VaultError> {
        let id = format!("cred_{}", hex(&random::<8>()?));
        let sealed = self.seal(id.as_bytes(), secret.expose().as_bytes())?;
        let fingerprint = self.fingerprint(secret.expose());
        let settings = serde_json::to_string(&new.settings).map_err(|_| VaultError::Crypto)?;
        let path = self.path.clone();
        let tx = self.db.transaction().map_err(db_err(&path))?;
        tx.execute(
            "DELETE FROM connections WHERE tenant = ?1 AND service = ?2 AND user = ?3",
            params![new.tenant, new.service, new.user],
        )
        .map_err(db_err(&path))?;
        tx.execute(
            "INSERT INTO connections (id, tenant, service, user, kind, origin, settings, secret,
                 fingerprint, expires, created, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
            params![
                id,
                new.tenant,
                new.service,
                new.user,
                new.kind.as_str(),
                new.origin,
                settings,
                sealed,
                fingerprint,
                new.expires,
                now
            ],
        )
        .map_err(db_err(&path))?;
        tx.commit().map_err(db_err(&path))?;
        Ok(Connection {
            id,
            tenant: new.tenant,
            service: new.service,
            user: new.user,
            kind: new.kind,
            origin: new.origin,
            settings: new.settings,
            fingerprint,
            expires: new.expires,
            created: now,
            updated: now,
            revoked: None,
        })
    }

    /// Every connection, without secrets.
    pub fn list(&self) -> Result<Vec<Connection>, VaultError> {
        let mut stmt = self
            .db
            .prepare(
                "SELECT id, tenant, service, user, kind, origin, settings, fingerprint, expires,
                        created, updated, revoked
                 FROM connections ORDER BY tenant, service, user",
            )
            .map_err(db_err(&self.path))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                    r.get::<_, i64>(9)?,
                    r.get::<_, i64>(10)?,
                    r.get::<_, Option<i64>>(11)?,
                ))
            })
            .map_err(db_err(&self.path))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, tenant, service, user, kind, origin, settings, fingerprint, expires, c, u, r) =
                row.map_err(db_err(&self.path))?;
            let kind = Kind::parse(&kind).ok_or_else(|| VaultError::Corrupt {
                id: id.clone(),
                reason: format!("unknown kind {kind}"),
            })?;
            let settings = serde_json::from_str(&settings).map_err(|e| VaultError::Corrupt {
                id: id.clone(),
                reason: e.to_string(),
            })?;
            out.push(Connection {
                id,
                tenant,
                service,
                user,
                kind,
                origin,
                settings,
                fingerprint,
                expires,
                created: c,
                updated: u,
                revoked: r,
            });
        }
        Ok(out)
    }

    /// Removes connections by id, or by service (with tenant and user). Returns how many.
    pub fn remove(&self, target: &str, tenant: &str, user: &str) -> Result<usize, VaultError> {
        self.db
            .execute(
                "DELETE FROM connections
                 WHERE id = ?1 OR (service = ?1 AND tenant = ?2 AND user = ?3)",
                params![target, tenant, user],
            )
            .map_err(db_err(&self.path))
    }

    /// The decrypted secret of connection `id`.
    pub fn secret(&self, id: &str) -> Result<Secret, VaultError> {
        let sealed: Vec<u8> = self
            .db
            .query_row(
                "SELECT secret FROM connections WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err(&self.path))?
            .ok_or_else(|| VaultError::Gone(id.to_owned()))?;
        self.unseal(id, &sealed)
    }

    /// The secret of connection `id` from its sealed form (a row another instance wrote).
    pub fn unseal(&self, id: &str, sealed: &[u8]) -> Result<Secret, VaultError> {
        let plain = self
            .open_sealed(id.as_bytes(), sealed)
            .ok_or_else(|| VaultError::Corrupt {
                id: id.to_owned(),
                reason: "the secret does not decrypt under the vault key".into(),
            })?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| VaultError::Corrupt {
                id: id.to_owned(),
                reason: "the secret is not UTF-8".into(),
            })
    }

    /// `secret` sealed for connection `id`, with its fingerprint.
    pub fn seal_secret(&self, id: &str, secret: &Secret) -> Result<(Vec<u8>, String), VaultError> {
        let sealed = self.seal(id.as_bytes(), secret.expose().as_bytes())?;
        Ok((sealed, self.fingerprint(secret.expose())))
    }

    /// Runs `write` on the database (a whole row from the fleet, see `vault::fleet`).
    pub fn write_with<T>(
        &mut self,
        write: impl FnOnce(&mut Db) -> rusqlite::Result<T>,
    ) -> Result<T, VaultError> {
        write(&mut self.db).map_err(db_err(&self.path))
    }

    /// Replaces the secret of `id` (a rotated refresh token), in one statement.
    pub fn set_secret(&self, id: &str, secret: &Secret, now: i64) -> Result<(), VaultError> {
        let sealed = self.seal(id.as_bytes(), secret.expose().as_bytes())?;
        let n = self
            .db
            .execute(
                "UPDATE connections SET secret = ?2, fingerprint = ?3, updated = ?4 WHERE id = ?1",
                params![id, sealed, self.fingerprint(secret.expose()), now],
            )
            .map_err(db_err(&self.path))?;
        if n == 0 {
            return Err(VaultError::Gone(id.to_owned()));
        }
        Ok(())
    }

    /// Marks connection `id` revoked (its secret was revoked upstream by PANIC).
    pub fn mark_revoked(&self, id: &str, reason: &str, now: i64) -> Result<(), VaultError> {
        self.db
            .execute(
                "UPDATE connections SET revoked = COALESCE(revoked, ?2), revoke_reason = ?3
                 WHERE id = ?1",
                params![id, now, reason],
            )
            .map(drop)
            .map_err(db_err(&self.path))
    }

    /// A stable, keyed fingerprint of a secret: identifies it in logs and the audit log
    /// without letting anyone holding the log test guesses against it.
    pub fn fingerprint(&self, secret: &str) -> String {
        fingerprint_with(&self.keys.fingerprint, secret)
    }

    /// A fingerprint function that outlives the store's lock.
    pub fn fingerprinter(&self) -> hmac::Key {
        self.keys.fingerprint.clone()
    }

    /// The key a fleet's KV entries are tagged with: derived from the vault key, which every
    /// instance of a fleet holds.
    pub fn fleet_key(&self) -> hmac::Key {
        self.keys.fleet.clone()
    }

    fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, VaultError> {
        let nonce_bytes = random::<NONCE_LEN>()?;
        let mut out = plain.to_vec();
        self.keys
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad),
                &mut out,
            )
            .map_err(|_| VaultError::Crypto)?;
        let mut sealed = nonce_bytes.to_vec();
        sealed.extend_from_slice(&out);
        Ok(sealed)
    }

    fn open_sealed(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ct.to_vec();
        let plain = self
            .keys
            .aead
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

impl Keys {
    fn new(raw: &[u8; 32]) -> Result<Keys, VaultError> {
        let aead =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, raw).map_err(|_| VaultError::Crypto)?);
        // A separate key for fingerprints, so a fingerprint says nothing about the sealing key.
        let derive = hmac::Key::new(hmac::HMAC_SHA256, raw);
        let fp = hmac::sign(&derive, b"agentgate vault fingerprint v1");
        let fleet = hmac::sign(&derive, b"agentgate fleet entries v1");
        Ok(Keys {
            aead,
            fingerprint: hmac::Key::new(hmac::HMAC_SHA256, fp.as_ref()),
            fleet: hmac::Key::new(hmac::HMAC_SHA256, fleet.as_ref()),
        })
    }
}

/// The keyed fingerprint of `secret` under `key` (see [`Store::fingerprint`]).
pub fn fingerprint_with(key: &hmac::Key, secret: &str) -> String {
    let tag = hmac::sign(key, secret.as_bytes());
    format!("hmac-sha256:{}", hex(&tag.as_ref()[..8]))
}

fn decode_key(text: &[u8]) -> Option<[u8; 32]> {
    let text = std::str::from_utf8(text).ok()?.trim();
    STANDARD.decode(text).ok()?.try_into().ok()
}

/// `N` random bytes from the system generator.
pub fn random<const N: usize>() -> Result<[u8; N], VaultError> {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| VaultError::Crypto)?;
    Ok(b)
}

pub use crate::digest::hex;

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> VaultError + '_ {
    move |source| VaultError::Db {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests;
