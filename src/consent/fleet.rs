//! The instance's consents as a fleet shares them: each row of `consents.db` is an entry
//! `consent.<id>` of a KV bucket, so any instance lists and answers any pending consent and
//! the instance holding the request wakes with the answer. A row another instance asked is
//! kept with `remote = 1`: answerable and listed here, but never used here — a once-approval
//! is spent only where it was asked, so it cannot be spent twice across the fleet. Rows only
//! ever narrow: a pending row takes an answer, an answered one only the end of its window or
//! its use; an answer never changes once given.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params, types::Value as Sql};

use super::store::FILE;
use crate::replica::{Applied, FleetEntryError, Replica, StoreFile};
use crate::state::StateDir;

/// `consent.<id>`: one consent.
pub const CONSENT: &str = "consent.";

/// The shared columns, in order (everything but `remote`).
const COLUMNS: [&str; 22] = [
    "id",
    "agent",
    "owner",
    "tenant",
    "action",
    "resource_type",
    "resource_id",
    "tuple",
    "digest",
    "tuple_key",
    "binding_code",
    "backend",
    "created",
    "expires",
    "status",
    "answered_by",
    "how",
    "reason",
    "answered",
    "window_until",
    "used",
    "auth_req_id",
];

/// `consents.db` as a mirror's replica.
pub struct ConsentReplica(StoreFile);

impl ConsentReplica {
    /// Opens the instance's `consents.db` in `state`; the consent store made its schema
    /// (with `remote`) when the instance started.
    pub fn open(state: &StateDir) -> Result<ConsentReplica, FleetEntryError> {
        StoreFile::open(&state.path(FILE)).map(ConsentReplica)
    }
}

impl Replica for ConsentReplica {
    fn version(&self) -> Result<i64, FleetEntryError> {
        self.0.version()
    }

    fn deletes(&self, key: &str) -> bool {
        // Pruned here after 30 days: the bucket need not keep it either.
        key.starts_with(CONSENT)
    }

    /// Every consent, by key, as a JSON object of its shared columns.
    fn entries(&self, _now: i64) -> Result<BTreeMap<String, Vec<u8>>, FleetEntryError> {
        let mut stmt = self
            .0
            .db
            .prepare(&format!("SELECT {} FROM consents", COLUMNS.join(", ")))
            .map_err(self.0.err())?;
        let mut rows = stmt.query([]).map_err(self.0.err())?;
        let mut out = BTreeMap::new();
        while let Some(r) = rows.next().map_err(self.0.err())? {
            let mut obj = serde_json::Map::new();
            for (i, col) in COLUMNS.iter().enumerate() {
                let v: Sql = r.get(i).map_err(self.0.err())?;
                obj.insert((*col).to_owned(), to_json(v));
            }
            let id = obj["id"].as_str().unwrap_or_default().to_owned();
            out.insert(
                format!("{CONSENT}{id}"),
                serde_json::to_vec(&obj).unwrap_or_default(),
            );
        }
        Ok(out)
    }

    /// Writes a consent another instance published, under the narrowing rules above.
    fn apply(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        _now: i64,
    ) -> Result<Applied, FleetEntryError> {
        let bad = |reason: String| FleetEntryError::Bad {
            key: key.to_owned(),
            reason,
        };
        let Some(id) = key.strip_prefix(CONSENT) else {
            return Err(bad("unknown kind of entry".into()));
        };
        let Some(value) = value else {
            // Pruned elsewhere; each instance prunes its own copy on its own schedule.
            return Ok(Applied::default());
        };
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(value).map_err(|e| bad(e.to_string()))?;
        if obj.get("id").and_then(|v| v.as_str()) != Some(id) {
            return Err(bad("the id does not match the key".into()));
        }
        let values: Vec<Sql> = COLUMNS
            .iter()
            .map(|c| from_json(obj.get(*c).unwrap_or(&serde_json::Value::Null)))
            .collect();
        let local: Option<(String, Option<i64>, i64)> = self
            .0
            .db
            .query_row(
                "SELECT status, window_until, used FROM consents WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.0.err())?;
        let status = obj.get("status").and_then(|v| v.as_str()).unwrap_or("");
        let window = obj.get("window_until").and_then(|v| v.as_i64());
        let used = obj.get("used").and_then(|v| v.as_i64()).unwrap_or(0);
        let mut applied = Applied::default();
        match local {
            None => {
                let cols = COLUMNS.join(", ");
                let marks: Vec<String> = (1..=COLUMNS.len()).map(|i| format!("?{i}")).collect();
                let sql = format!(
                    "INSERT INTO consents ({cols}, remote) VALUES ({}, 1)",
                    marks.join(", ")
                );
                self.0
                    .db
                    .execute(&sql, rusqlite::params_from_iter(values))
                    .map_err(self.0.err())?;
                applied.changed = true;
            }
            Some((local_status, _, _)) if local_status == "pending" && status != "pending" => {
                let sets: Vec<String> = COLUMNS
                    .iter()
                    .enumerate()
                    .skip(1)
                    .map(|(i, c)| format!("{c} = ?{}", i + 1))
                    .collect();
                let sql = format!(
                    "UPDATE consents SET {} WHERE id = ?1 AND status = 'pending'",
                    sets.join(", ")
                );
                let n = self
                    .0
                    .db
                    .execute(&sql, rusqlite::params_from_iter(values))
                    .map_err(self.0.err())?;
                applied.changed = n > 0;
                if n > 0 {
                    applied.answered.push(id.to_owned());
                }
            }
            Some((local_status, local_window, local_used)) if local_status == status => {
                // Narrowing only: a window that ended, a once-approval that was used.
                let shorter = window.is_some_and(|w| local_window.is_none_or(|l| w < l));
                let n = self
                    .0
                    .db
                    .execute(
                        "UPDATE consents SET window_until = CASE WHEN ?2 THEN ?3 ELSE window_until END,
                             used = MAX(used, ?4)
                         WHERE id = ?1 AND (?2 OR used < ?4)",
                        params![id, shorter, window, used],
                    )
                    .map_err(self.0.err())?;
                applied.changed = n > 0 && (shorter || used > local_used);
            }
            Some(_) => {}
        }
        Ok(applied)
    }
}

fn to_json(v: Sql) -> serde_json::Value {
    match v {
        Sql::Null => serde_json::Value::Null,
        Sql::Integer(i) => i.into(),
        Sql::Real(f) => f.into(),
        Sql::Text(t) => t.into(),
        Sql::Blob(b) => String::from_utf8_lossy(&b).into_owned().into(),
    }
}

fn from_json(v: &serde_json::Value) -> Sql {
    match v {
        serde_json::Value::Null => Sql::Null,
        serde_json::Value::Bool(b) => Sql::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map_or_else(|| Sql::Real(n.as_f64().unwrap_or(0.0)), Sql::Integer),
        serde_json::Value::String(s) => Sql::Text(s.clone()),
        other => Sql::Text(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::store::Store;

    fn row(id: &str, status: &str) -> Vec<u8> {
        let mut obj = serde_json::Map::new();
        for c in COLUMNS {
            obj.insert(c.to_owned(), serde_json::Value::Null);
        }
        for (k, v) in [
            ("id", serde_json::json!(id)),
            ("agent", serde_json::json!("spiffe://t/agent/bot")),
            ("action", serde_json::json!("github.issues.create")),
            ("resource_type", serde_json::json!("github.repo")),
            ("resource_id", serde_json::json!("acme/web")),
            ("tuple", serde_json::json!("{}")),
            ("digest", serde_json::json!("d")),
            ("tuple_key", serde_json::json!("k")),
            ("binding_code", serde_json::json!("ABCD")),
            ("backend", serde_json::json!("local")),
            ("created", serde_json::json!(100)),
            ("expires", serde_json::json!(130)),
            ("status", serde_json::json!(status)),
            ("used", serde_json::json!(0)),
        ] {
            obj.insert(k.to_owned(), v);
        }
        serde_json::to_vec(&obj).unwrap()
    }

    #[test]
    fn remote_consents_are_answered_not_used_expired_or_reopened_here() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path().join("h")).unwrap();
        let store = Store::open(&state).unwrap();
        let mut replica = ConsentReplica::open(&state).unwrap();
        let key = format!("{CONSENT}c1");
        assert!(
            replica
                .apply(&key, Some(&row("c1", "pending")), 0)
                .unwrap()
                .changed
        );
        // Listed here, but never used, expired or re-asked here: its instance does that.
        assert!(store.remote_ids().unwrap().contains("c1"));
        assert!(store.overdue(1000).unwrap().is_empty());
        assert!(
            store
                .for_request("spiffe://t/agent/bot", "d", 110)
                .unwrap()
                .is_none()
        );
        // The first answer is taken and wakes the held request; a later one changes nothing.
        let answered = replica
            .apply(&key, Some(&row("c1", "approved")), 0)
            .unwrap();
        assert_eq!(answered.answered, ["c1"]);
        let again = replica.apply(&key, Some(&row("c1", "denied")), 0).unwrap();
        assert!(!again.changed && again.answered.is_empty());
        let back = replica.apply(&key, Some(&row("c1", "pending")), 0).unwrap();
        assert!(!back.changed, "an answer never reopens");
        assert_eq!(
            store.get("c1").unwrap().unwrap().status.as_str(),
            "approved"
        );
        assert!(
            replica
                .apply("consent.other", Some(&row("c1", "pending")), 0)
                .is_err()
        );
    }
}
