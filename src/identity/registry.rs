//! The agent registry: agents, the tokens issued to them, revocations, and the built-in
//! issuer's keys, in SQLite (`identity.db` in the state dir, 0600). The CLI writes it; a
//! running proxy reads a [`Snapshot`] of it and reloads when it changes.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::sqlite::{self, Durability, OpenError};
use crate::state::StateDir;

pub mod fleet;
mod model;
#[cfg(test)]
mod tests;

pub use model::{ALL_AGENTS, Agent, AgentInfo, IssuerKey, RegistryError, Snapshot, Token};

/// File name of the registry in the state dir.
pub const FILE: &str = "identity.db";

/// An open registry.
pub struct Registry {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agents (
    name TEXT PRIMARY KEY,
    spiffe_id TEXT NOT NULL UNIQUE,
    owner TEXT,
    tenant TEXT,
    created INTEGER NOT NULL,
    revoked INTEGER,
    revoke_reason TEXT
);
CREATE TABLE IF NOT EXISTS tokens (
    jti TEXT PRIMARY KEY,
    agent TEXT NOT NULL REFERENCES agents(name),
    kid TEXT NOT NULL,
    issued INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    revoked INTEGER,
    token TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_by_agent ON tokens(agent, issued);
CREATE TABLE IF NOT EXISTS revoked_ids (
    spiffe_id TEXT PRIMARY KEY,
    revoked INTEGER NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS issuer_keys (
    kid TEXT PRIMARY KEY,
    public_jwk TEXT NOT NULL,
    created INTEGER NOT NULL,
    retired INTEGER,
    valid_until INTEGER
);
CREATE TABLE IF NOT EXISTS fleet_issuer_keys (
    kid TEXT PRIMARY KEY,
    public_jwk TEXT NOT NULL,
    created INTEGER NOT NULL,
    valid_until INTEGER
);
CREATE TABLE IF NOT EXISTS fleet_revoked_jtis (
    jti TEXT PRIMARY KEY,
    expires INTEGER NOT NULL,
    revoked INTEGER NOT NULL
);
";

impl Registry {
    /// Opens (creating, 0600) the registry in `state`.
    pub fn open(state: &StateDir) -> Result<Registry, RegistryError> {
        Self::open_path(&state.path(FILE))
    }

    /// Opens the registry at `path`.
    pub fn open_path(path: &Path) -> Result<Registry, RegistryError> {
        let db = |source| RegistryError::Db {
            path: path.to_owned(),
            source,
        };
        let conn = sqlite::open(path, Durability::Full).map_err(|e| match e {
            OpenError::Create(e) => RegistryError::State(e),
            OpenError::Db(e) => db(e),
        })?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        // Added with reference tokens; older registries gain the column in place.
        let has_refs: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('agents') WHERE name = 'reference_tokens'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(db)?;
        if !has_refs {
            conn.execute_batch(
                "ALTER TABLE agents ADD COLUMN reference_tokens INTEGER NOT NULL DEFAULT 0",
            )
            .map_err(db)?;
        }
        Ok(Registry {
            conn,
            path: path.to_owned(),
        })
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> RegistryError + '_ {
        |source| RegistryError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// A number that changes whenever another connection commits a change.
    pub fn data_version(&self) -> Result<i64, RegistryError> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(self.db())
    }

    /// Adds `name` or updates its owner/tenant/SPIFFE ID; a revoked agent becomes active
    /// again (its old tokens stay revoked).
    pub fn upsert_agent(
        &mut self,
        name: &str,
        spiffe_id: &str,
        owner: Option<&str>,
        tenant: Option<&str>,
        now: i64,
    ) -> Result<(), RegistryError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|source| RegistryError::Db {
                path: self.path.clone(),
                source,
            })?;
        tx.execute(
            "INSERT INTO agents (name, spiffe_id, owner, tenant, created) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET spiffe_id = ?2, owner = ?3, tenant = ?4,
                 created = ?5, revoked = NULL, revoke_reason = NULL",
            params![name, spiffe_id, owner, tenant, now],
        )
        .and_then(|_| {
            tx.execute(
                "DELETE FROM revoked_ids WHERE spiffe_id = ?1",
                params![spiffe_id],
            )
        })
        .and_then(|_| tx.commit())
        .map_err(|source| RegistryError::Db {
            path: self.path.clone(),
            source,
        })
    }

    /// Records a token issued to `agent`.
    pub fn add_token(&self, agent: &str, token: &Token) -> Result<(), RegistryError> {
        self.conn
            .execute(
                "INSERT INTO tokens (jti, agent, kid, issued, expires, token) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![token.jti, agent, token.kid, token.issued, token.expires, token.token],
            )
            .map(drop)
            .map_err(self.db())
    }

    /// The newest unrevoked token of `name` (for `env`/`exec`), if any.
    pub fn latest_token(&self, name: &str) -> Result<Option<Token>, RegistryError> {
        self.agent(name)?;
        self.conn
            .query_row(
                "SELECT jti, kid, issued, expires, token FROM tokens
                 WHERE agent = ?1 AND revoked IS NULL ORDER BY issued DESC, rowid DESC LIMIT 1",
                params![name],
                |r| {
                    Ok(Token {
                        jti: r.get(0)?,
                        kid: r.get(1)?,
                        issued: r.get(2)?,
                        expires: r.get(3)?,
                        token: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(self.db())
    }

    /// One agent by name.
    pub fn agent(&self, name: &str) -> Result<Agent, RegistryError> {
        self.agents(Some(name), 0)?
            .pop()
            .ok_or_else(|| RegistryError::UnknownAgent(name.to_owned()))
    }

    /// Every agent (or just `name`), with token counts as of `now`.
    pub fn agents(&self, name: Option<&str>, now: i64) -> Result<Vec<Agent>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT a.name, a.spiffe_id, a.owner, a.tenant, a.created, a.revoked,
                    (SELECT COUNT(*) FROM tokens t WHERE t.agent = a.name AND t.revoked IS NULL AND t.expires > ?2),
                    (SELECT MAX(expires) FROM tokens t WHERE t.agent = a.name),
                    a.reference_tokens
                 FROM agents a WHERE ?1 IS NULL OR a.name = ?1 ORDER BY a.name",
            )
            .map_err(self.db())?;
        let rows = stmt
            .query_map(params![name, now], |r| {
                Ok(Agent {
                    name: r.get(0)?,
                    spiffe_id: r.get(1)?,
                    owner: r.get(2)?,
                    tenant: r.get(3)?,
                    created: r.get(4)?,
                    revoked: r.get(5)?,
                    active_tokens: r.get(6)?,
                    token_expires: r.get(7)?,
                    reference_tokens: r.get::<_, i64>(8)? != 0,
                })
            })
            .map_err(self.db())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.db())
    }

    /// Sets whether `name` gets `agw_` reference tokens.
    pub fn set_reference_tokens(&self, name: &str, on: bool) -> Result<(), RegistryError> {
        let n = self
            .conn
            .execute(
                "UPDATE agents SET reference_tokens = ?2 WHERE name = ?1",
                params![name, on as i64],
            )
            .map_err(self.db())?;
        if n == 0 {
            return Err(RegistryError::UnknownAgent(name.to_owned()));
        }
        Ok(())
    }

    /// Revokes an agent and every token it holds. Returns how many tokens were revoked.
    pub fn revoke_agent(
        &mut self,
        name: &str,
        reason: &str,
        now: i64,
    ) -> Result<usize, RegistryError> {
        let agent = self.agent(name)?;
        let path = self.path.clone();
        let db = |source| RegistryError::Db {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(db)?;
        tx.execute(
            "UPDATE agents SET revoked = ?2, revoke_reason = ?3 WHERE name = ?1",
            params![name, now, reason],
        )
        .map_err(db)?;
        tx.execute(
            "INSERT OR REPLACE INTO revoked_ids (spiffe_id, revoked, reason) VALUES (?1, ?2, ?3)",
            params![agent.spiffe_id, now, reason],
        )
        .map_err(db)?;
        let tokens = tx
            .execute(
                "UPDATE tokens SET revoked = ?2 WHERE agent = ?1 AND revoked IS NULL",
                params![name, now],
            )
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(tokens)
    }

    /// Revokes a SPIFFE ID that is not registered here (e.g. a workload from SPIRE).
    pub fn revoke_id(&self, spiffe_id: &str, reason: &str, now: i64) -> Result<(), RegistryError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO revoked_ids (spiffe_id, revoked, reason) VALUES (?1, ?2, ?3)",
                params![spiffe_id, now, reason],
            )
            .map(drop)
            .map_err(self.db())
    }

    /// Lifts `PANIC --all` (agents revoked one by one stay revoked). Returns whether it was
    /// in force.
    pub fn lift_all(&self) -> Result<bool, RegistryError> {
        self.conn
            .execute(
                "DELETE FROM revoked_ids WHERE spiffe_id = ?1",
                params![ALL_AGENTS],
            )
            .map(|n| n > 0)
            .map_err(self.db())
    }

    /// Revokes one token of `name` by `jti`.
    pub fn revoke_token(&self, name: &str, jti: &str, now: i64) -> Result<(), RegistryError> {
        let n = self
            .conn
            .execute(
                "UPDATE tokens SET revoked = COALESCE(revoked, ?3) WHERE agent = ?1 AND jti = ?2",
                params![name, jti, now],
            )
            .map_err(self.db())?;
        if n == 0 {
            return Err(RegistryError::UnknownToken(name.to_owned()));
        }
        Ok(())
    }

    /// Adds an issuer key as the current one.
    pub fn add_issuer_key(
        &self,
        kid: &str,
        public_jwk: &str,
        now: i64,
    ) -> Result<(), RegistryError> {
        self.conn
            .execute(
                "INSERT INTO issuer_keys (kid, public_jwk, created) VALUES (?1, ?2, ?3)",
                params![kid, public_jwk, now],
            )
            .map(drop)
            .map_err(self.db())
    }

    /// The newest unretired issuer key.
    pub fn current_issuer_key(&self) -> Result<Option<IssuerKey>, RegistryError> {
        Ok(self
            .issuer_keys()?
            .into_iter()
            .filter(|k| k.retired.is_none())
            .max_by_key(|k| k.created))
    }

    /// Every issuer key on record.
    pub fn issuer_keys(&self) -> Result<Vec<IssuerKey>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare("SELECT kid, public_jwk, created, retired, valid_until FROM issuer_keys ORDER BY created, rowid")
            .map_err(self.db())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(IssuerKey {
                    kid: r.get(0)?,
                    public_jwk: r.get(1)?,
                    created: r.get(2)?,
                    retired: r.get(3)?,
                    valid_until: r.get(4)?,
                })
            })
            .map_err(self.db())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.db())
    }

    /// Retires `kid`: it stays trusted until the last token it signed expires.
    pub fn retire_issuer_key(&self, kid: &str, now: i64) -> Result<i64, RegistryError> {
        let valid_until: Option<i64> = self
            .conn
            .query_row(
                "SELECT MAX(expires) FROM tokens WHERE kid = ?1",
                params![kid],
                |r| r.get(0),
            )
            .map_err(self.db())?;
        let valid_until = valid_until.unwrap_or(now).max(now);
        self.conn
            .execute(
                "UPDATE issuer_keys SET retired = ?2, valid_until = ?3 WHERE kid = ?1",
                params![kid, now, valid_until],
            )
            .map_err(self.db())?;
        Ok(valid_until)
    }

    /// Forgets issuer keys whose tokens have all expired; returns their kids.
    pub fn drop_expired_issuer_keys(&self, now: i64) -> Result<Vec<String>, RegistryError> {
        let gone: Vec<String> = self
            .issuer_keys()?
            .into_iter()
            .filter(|k| k.valid_until.is_some_and(|v| v < now))
            .map(|k| k.kid)
            .collect();
        for kid in &gone {
            self.conn
                .execute("DELETE FROM issuer_keys WHERE kid = ?1", params![kid])
                .map_err(self.db())?;
        }
        Ok(gone)
    }

    /// Loads what the proxy checks on every request.
    pub fn snapshot(&self, now: i64) -> Result<Snapshot, RegistryError> {
        let mut snap = Snapshot::default();
        let mut stmt = self
            .conn
            .prepare("SELECT spiffe_id, name, owner FROM agents")
            .map_err(self.db())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    AgentInfo {
                        name: r.get(1)?,
                        owner: r.get(2)?,
                    },
                ))
            })
            .map_err(self.db())?;
        for row in rows {
            let (id, info) = row.map_err(self.db())?;
            snap.agents.insert(id, info);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT spiffe_id FROM revoked_ids")
            .map_err(self.db())?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(self.db())?;
        snap.revoked_ids = rows.collect::<Result<_, _>>().map_err(self.db())?;
        snap.all_revoked = snap.revoked_ids.contains(ALL_AGENTS);
        // Expired tokens are refused by their `exp`; only live ones need listing.
        let mut stmt = self
            .conn
            .prepare(
                "SELECT jti FROM tokens WHERE revoked IS NOT NULL AND expires >= ?1
                 UNION SELECT jti FROM fleet_revoked_jtis WHERE expires >= ?1",
            )
            .map_err(self.db())?;
        let rows = stmt
            .query_map(params![now - 3600], |r| r.get(0))
            .map_err(self.db())?;
        snap.revoked_jtis = rows.collect::<Result<_, _>>().map_err(self.db())?;
        snap.issuer_keys = self
            .issuer_keys()?
            .into_iter()
            .chain(self.fleet_issuer_keys()?)
            .filter(|k| k.valid_until.is_none_or(|v| v >= now))
            .collect();
        Ok(snap)
    }
}
