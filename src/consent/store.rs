//! Consents in SQLite (`consents.db` in the state dir, 0600), so a restart loses neither a
//! pending consent nor an answer. Every transition is one conditional `UPDATE`, so two
//! answers racing (CLI and CIBA) cannot both win.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::error::ConsentError;
use super::record::{Answer, Consent, Status};
use crate::sqlite::{self, Durability, OpenError};
use crate::state::StateDir;

/// File name of the consent database in the state dir.
pub const FILE: &str = "consents.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS consents (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    owner TEXT,
    tenant TEXT,
    action TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    tuple TEXT NOT NULL,
    digest TEXT NOT NULL,
    tuple_key TEXT NOT NULL,
    binding_code TEXT NOT NULL,
    backend TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    status TEXT NOT NULL,
    answered_by TEXT,
    how TEXT,
    reason TEXT,
    answered INTEGER,
    window_until INTEGER,
    used INTEGER NOT NULL DEFAULT 0,
    auth_req_id TEXT
);
CREATE INDEX IF NOT EXISTS consents_by_request ON consents(agent, digest, status);
CREATE INDEX IF NOT EXISTS consents_by_tuple ON consents(agent, tuple_key, window_until);
CREATE INDEX IF NOT EXISTS consents_by_status ON consents(status, expires);
";

const COLUMNS: &str = "id, agent, owner, tenant, action, resource_type, resource_id, tuple, digest,
    tuple_key, binding_code, backend, created, expires, status, answered_by, how, reason,
    answered, window_until, used, auth_req_id";

/// The open consent database.
pub struct Store {
    db: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating, 0600) `consents.db` in `state`.
    pub fn open(state: &StateDir) -> Result<Store, ConsentError> {
        Self::open_path(&state.path(FILE))
    }

    /// Opens the database at `path`.
    pub fn open_path(path: &Path) -> Result<Store, ConsentError> {
        let err = |e: rusqlite::Error| ConsentError::Store(format!("{}: {e}", path.display()));
        let db = sqlite::open(path, Durability::Full).map_err(|e| match e {
            OpenError::Create(e) => ConsentError::Store(e.to_string()),
            OpenError::Db(e) => err(e),
        })?;
        db.execute_batch(SCHEMA).map_err(err)?;
        // Added with fleet mode: rows another instance asked (answerable here, never used).
        let has_remote: bool = db
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('consents') WHERE name = 'remote'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(err)?;
        if !has_remote {
            db.execute_batch("ALTER TABLE consents ADD COLUMN remote INTEGER NOT NULL DEFAULT 0")
                .map_err(err)?;
        }
        Ok(Store {
            db,
            path: path.to_owned(),
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> ConsentError + '_ {
        |e| ConsentError::Store(format!("{}: {e}", self.path.display()))
    }

    /// Stores a new (pending) consent.
    pub fn insert(&self, c: &Consent) -> Result<(), ConsentError> {
        self.db
            .execute(
                &format!("INSERT INTO consents ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"),
                params![
                    c.id,
                    c.agent,
                    c.owner,
                    c.tenant,
                    c.action,
                    c.resource_type,
                    c.resource_id,
                    c.tuple.to_string(),
                    c.digest,
                    c.tuple_key,
                    c.binding_code,
                    c.backend,
                    c.created,
                    c.expires,
                    c.status.as_str(),
                    c.answered_by,
                    c.how,
                    c.reason,
                    c.answered,
                    c.window_until,
                    c.used as i64,
                    c.auth_req_id,
                ],
            )
            .map(drop)
            .map_err(self.err())
    }

    /// One consent by id.
    pub fn get(&self, id: &str) -> Result<Option<Consent>, ConsentError> {
        self.db
            .query_row(
                &format!("SELECT {COLUMNS} FROM consents WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()
            .map_err(self.err())
    }

    /// Consents, newest first: pending only, or all (at most `limit`).
    pub fn list(&self, pending_only: bool, limit: u32) -> Result<Vec<Consent>, ConsentError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM consents WHERE (?1 = 0 OR status = 'pending')
             ORDER BY created DESC, id LIMIT ?2"
        );
        let mut stmt = self.db.prepare(&sql).map_err(self.err())?;
        let rows = stmt
            .query_map(params![pending_only as i64, limit], row)
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The newest consent of `agent` for this exact request that still matters: pending,
    /// approved once and unused, or denied, and not expired.
    pub fn for_request(
        &self,
        agent: &str,
        digest: &str,
        now: i64,
    ) -> Result<Option<Consent>, ConsentError> {
        self.db
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM consents
                     WHERE agent = ?1 AND digest = ?2 AND expires > ?3 AND remote = 0 AND (
                        status IN ('pending', 'denied')
                        OR (status = 'approved' AND window_until IS NULL AND used = 0))
                     ORDER BY created DESC LIMIT 1"
                ),
                params![agent, digest, now],
                row,
            )
            .optional()
            .map_err(self.err())
    }

    /// The consents another instance of the fleet asked (answerable here, never used).
    pub fn remote_ids(&self) -> Result<std::collections::HashSet<String>, ConsentError> {
        let mut stmt = self
            .db
            .prepare("SELECT id FROM consents WHERE remote = 1 AND status = 'pending'")
            .map_err(self.err())?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// An approval window of `agent` covering this action and resource, if one is open.
    pub fn window(
        &self,
        agent: &str,
        tuple_key: &str,
        now: i64,
    ) -> Result<Option<Consent>, ConsentError> {
        self.db
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM consents
                     WHERE agent = ?1 AND tuple_key = ?2 AND status = 'approved'
                       AND window_until > ?3
                     ORDER BY window_until DESC LIMIT 1"
                ),
                params![agent, tuple_key, now],
                row,
            )
            .optional()
            .map_err(self.err())
    }

    /// Answers a pending consent; `Ok(false)` when it was no longer pending.
    pub fn answer(&self, id: &str, a: &Answer<'_>, now: i64) -> Result<bool, ConsentError> {
        self.db
            .execute(
                "UPDATE consents SET status = ?2, answered_by = ?3, how = ?4, reason = ?5,
                     window_until = ?6, answered = ?7
                 WHERE id = ?1 AND status = 'pending'",
                params![
                    id,
                    a.status.as_str(),
                    a.by,
                    a.how,
                    a.reason,
                    a.window_until,
                    now
                ],
            )
            .map(|n| n == 1)
            .map_err(self.err())
    }

    /// Uses a once-approval; `Ok(false)` when another request used it first.
    pub fn use_once(&self, id: &str) -> Result<bool, ConsentError> {
        self.db
            .execute(
                "UPDATE consents SET used = 1
                 WHERE id = ?1 AND status = 'approved' AND window_until IS NULL AND used = 0",
                params![id],
            )
            .map(|n| n == 1)
            .map_err(self.err())
    }

    /// Ends every approval still in force for `agent` (all agents when `None`): open
    /// windows close now, unused once-approvals count as used. Returns how many.
    pub fn end_approvals(&self, agent: Option<&str>, now: i64) -> Result<usize, ConsentError> {
        self.db
            .execute(
                "UPDATE consents
                 SET window_until = CASE WHEN window_until > ?2 THEN ?2 ELSE window_until END,
                     used = 1
                 WHERE status = 'approved' AND (?1 IS NULL OR agent = ?1)
                   AND (window_until > ?2 OR (window_until IS NULL AND used = 0))",
                params![agent, now],
            )
            .map_err(self.err())
    }

    /// Closed consents older than `before` are deleted; returns how many.
    pub fn prune(&self, before: i64) -> Result<usize, ConsentError> {
        self.db
            .execute(
                "DELETE FROM consents WHERE status != 'pending' AND expires < ?1
                   AND (window_until IS NULL OR window_until < ?1)",
                params![before],
            )
            .map_err(self.err())
    }

    /// Pending consents: overall, and of `agent`.
    pub fn pending_counts(&self, agent: &str) -> Result<(usize, usize), ConsentError> {
        self.db
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(agent = ?1), 0) FROM consents WHERE status = 'pending'",
                params![agent],
                |r| Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize)),
            )
            .map_err(self.err())
    }

    /// How many consents `agent` asked for since `since`.
    pub fn created_since(&self, agent: &str, since: i64) -> Result<usize, ConsentError> {
        self.db
            .query_row(
                "SELECT COUNT(*) FROM consents WHERE agent = ?1 AND created >= ?2",
                params![agent, since],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(self.err())
    }

    /// Gives back a used once-approval.
    pub fn release_once(&self, id: &str) -> Result<(), ConsentError> {
        self.db
            .execute(
                "UPDATE consents SET used = 0
                 WHERE id = ?1 AND status = 'approved' AND window_until IS NULL",
                params![id],
            )
            .map(drop)
            .map_err(self.err())
    }

    /// Records the CIBA request that asks for this consent.
    pub fn set_auth_req_id(&self, id: &str, auth_req_id: &str) -> Result<(), ConsentError> {
        self.db
            .execute(
                "UPDATE consents SET auth_req_id = ?2 WHERE id = ?1",
                params![id, auth_req_id],
            )
            .map(drop)
            .map_err(self.err())
    }

    /// Pending consents whose time is up.
    pub fn overdue(&self, now: i64) -> Result<Vec<String>, ConsentError> {
        let mut stmt = self
            .db
            // Another instance's consents are expired by it (one webhook, one record).
            .prepare(
                "SELECT id FROM consents WHERE status = 'pending' AND expires <= ?1 AND remote = 0",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![now], |r| r.get(0))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Binding codes of pending consents (each new code must differ from these).
    pub fn pending_codes(&self) -> Result<Vec<String>, ConsentError> {
        let mut stmt = self
            .db
            .prepare("SELECT binding_code FROM consents WHERE status = 'pending'")
            .map_err(self.err())?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }
}

fn row(r: &Row<'_>) -> rusqlite::Result<Consent> {
    let tuple: String = r.get(7)?;
    let status: String = r.get(14)?;
    Ok(Consent {
        id: r.get(0)?,
        agent: r.get(1)?,
        owner: r.get(2)?,
        tenant: r.get(3)?,
        action: r.get(4)?,
        resource_type: r.get(5)?,
        resource_id: r.get(6)?,
        tuple: serde_json::from_str(&tuple).unwrap_or(serde_json::Value::Null),
        digest: r.get(8)?,
        tuple_key: r.get(9)?,
        binding_code: r.get(10)?,
        backend: r.get(11)?,
        created: r.get(12)?,
        expires: r.get(13)?,
        status: Status::parse(&status).unwrap_or(Status::Cancelled),
        answered_by: r.get(15)?,
        how: r.get(16)?,
        reason: r.get(17)?,
        answered: r.get(18)?,
        window_until: r.get(19)?,
        used: r.get::<_, i64>(20)? != 0,
        auth_req_id: r.get(21)?,
    })
}
