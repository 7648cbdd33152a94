//! Action budgets: how many requests a policy lets through per key in a sliding window.
//! A policy attaches a [`Budget`] to its decision; the policy gate asks a [`Budgets`]
//! counter to take one use before the request goes on. Taking is atomic per key, so
//! concurrent requests cannot overshoot a limit; a request refused later gives its use
//! back. The counter is one interface: [`LocalBudgets`] keeps the windows in memory and
//! every use in `<state>/budgets.db`, so counts survive a restart.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, params};
use serde::Serialize;

use super::decision::Budget;

/// Most budget keys counted at once; a new key beyond it is refused (fail closed).
pub const MAX_KEYS: usize = 100_000;
/// The budgets' database in the state directory.
pub const FILE: &str = "budgets.db";

/// The result of taking one use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Counted: `used` uses in the window now, this one included; `at` identifies it for
    /// giving it back.
    Taken { used: u64, at: i64 },
    /// The limit was already reached: `used` uses in the window; nothing was counted.
    Exceeded { used: u64 },
}

/// One key's use against its limit, for `agentgate budgets` and the admin API.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub key: Vec<String>,
    pub used: u64,
    pub limit: u64,
    /// The window in seconds.
    pub window_secs: u64,
    /// When the oldest counted use leaves the window (Unix ms), if any is counted.
    pub frees_at_ms: Option<i64>,
}

impl Usage {
    /// The use of `key`: `used` uses in a window of `window_ms`, the oldest at `oldest`.
    pub fn of(
        key: &[String],
        used: usize,
        limit: u64,
        window_ms: i64,
        oldest: Option<&i64>,
    ) -> Usage {
        Usage {
            key: key.to_vec(),
            used: used as u64,
            limit,
            window_secs: (window_ms / 1000) as u64,
            frees_at_ms: oldest.map(|t| t + window_ms),
        }
    }
}

/// Why a budget could not be counted (the request is refused: fail closed).
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "budgets: more than {MAX_KEYS} budget keys are counted at once; refusing rather than forgetting one"
    )]
    Full,
    #[error("budgets database {0}: {1}")]
    Db(String, String),
}

/// A budget counter: one instance's ([`LocalBudgets`]) or a fleet's (`fleet::budgets`),
/// behind the same calls.
pub trait Budgets: Send + Sync {
    /// Counts one use of `budget` at `now_ms` unless its limit is already reached.
    fn take<'a>(
        &'a self,
        budget: &'a Budget,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Take, BudgetError>>;
    /// Gives back a use taken at `at` (the request was refused after all).
    fn give_back<'a>(&'a self, key: &'a [String], at: i64) -> BoxFuture<'a, ()>;
    /// Every key's use at `now_ms`, optionally only keys naming `part`.
    fn usage<'a>(&'a self, now_ms: i64, part: Option<&'a str>) -> BoxFuture<'a, Vec<Usage>>;
}

/// What a counter's calls return.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// One key's window: the times of the uses still in it, oldest first.
struct Window {
    key: Vec<String>,
    limit: u64,
    window_ms: i64,
    uses: VecDeque<i64>,
}

impl Window {
    fn expire(&mut self, now_ms: i64) -> Option<i64> {
        let cutoff = now_ms - self.window_ms;
        let mut dropped = None;
        while self.uses.front().is_some_and(|t| *t <= cutoff) {
            dropped = self.uses.pop_front();
        }
        dropped
    }

    fn usage(&self) -> Usage {
        Usage::of(
            &self.key,
            self.uses.len(),
            self.limit,
            self.window_ms,
            self.uses.front(),
        )
    }
}

/// Budgets counted by this instance, every use kept in SQLite.
pub struct LocalBudgets {
    inner: Mutex<Inner>,
}

struct Inner {
    windows: HashMap<String, Window>,
    db: Connection,
}

/// A key as one string (parts joined by a separator no key part may hold unnoticed).
fn joined(key: &[String]) -> String {
    serde_json::to_string(key).unwrap_or_default()
}

impl LocalBudgets {
    /// Opens (creating) `path` and loads the uses still inside their windows.
    pub fn open(path: &Path, now_ms: i64) -> Result<LocalBudgets, BudgetError> {
        let err =
            |e: &dyn std::fmt::Display| BudgetError::Db(path.display().to_string(), e.to_string());
        let db =
            crate::sqlite::open(path, crate::sqlite::Durability::Normal).map_err(|e| err(&e))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS uses (
                key TEXT NOT NULL, at INTEGER NOT NULL, limit_ INTEGER NOT NULL, window_ms INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS uses_key ON uses (key, at);",
        )
        .map_err(|e| err(&e))?;
        db.execute("DELETE FROM uses WHERE at <= ?1 - window_ms", [now_ms])
            .map_err(|e| err(&e))?;
        let mut windows: HashMap<String, Window> = HashMap::new();
        {
            let mut stmt = db
                .prepare("SELECT key, at, limit_, window_ms FROM uses ORDER BY at")
                .map_err(|e| err(&e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(|e| err(&e))?;
            for row in rows {
                let (key, at, limit, window_ms) = row.map_err(|e| err(&e))?;
                if at <= now_ms - window_ms {
                    continue;
                }
                let parts: Vec<String> = serde_json::from_str(&key).unwrap_or_default();
                let w = windows.entry(key).or_insert_with(|| Window {
                    key: parts,
                    limit: limit as u64,
                    window_ms,
                    uses: VecDeque::new(),
                });
                w.uses.push_back(at);
            }
        }
        Ok(LocalBudgets {
            inner: Mutex::new(Inner { windows, db }),
        })
    }

    /// The budgets of the state directory `dir`.
    pub fn in_state(
        dir: &crate::state::StateDir,
        now_ms: i64,
    ) -> Result<LocalBudgets, BudgetError> {
        LocalBudgets::open(&dir.path(FILE), now_ms)
    }
}

impl Budgets for LocalBudgets {
    fn take<'a>(
        &'a self,
        budget: &'a Budget,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Take, BudgetError>> {
        Box::pin(std::future::ready(self.take_now(budget, now_ms)))
    }

    fn give_back<'a>(&'a self, key: &'a [String], at: i64) -> BoxFuture<'a, ()> {
        self.give_back_now(key, at);
        Box::pin(std::future::ready(()))
    }

    fn usage<'a>(&'a self, now_ms: i64, part: Option<&'a str>) -> BoxFuture<'a, Vec<Usage>> {
        Box::pin(std::future::ready(self.usage_now(now_ms, part)))
    }
}

impl LocalBudgets {
    /// [`Budgets::take`], on this thread (a few microseconds: one SQLite insert).
    pub fn take_now(&self, budget: &Budget, now_ms: i64) -> Result<Take, BudgetError> {
        let key = joined(&budget.key);
        let window_ms = i64::try_from(budget.window.as_millis()).unwrap_or(i64::MAX);
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| BudgetError::Db(FILE.into(), "lock poisoned".into()))?;
        let Inner { windows, db } = &mut *inner;
        if !windows.contains_key(&key) && windows.len() >= MAX_KEYS {
            // Drop windows with nothing left in them before refusing.
            windows.retain(|_, w| {
                w.expire(now_ms);
                !w.uses.is_empty()
            });
            if windows.len() >= MAX_KEYS {
                return Err(BudgetError::Full);
            }
        }
        let w = windows.entry(key.clone()).or_insert_with(|| Window {
            key: budget.key.clone(),
            limit: budget.limit,
            window_ms,
            uses: VecDeque::new(),
        });
        // The policy in force says what the limit and window are now.
        (w.limit, w.window_ms) = (budget.limit, window_ms);
        if let Some(last) = w.expire(now_ms) {
            let _ = db.execute(
                "DELETE FROM uses WHERE key = ?1 AND at <= ?2",
                params![key, last],
            );
        }
        let used = w.uses.len() as u64;
        if used >= budget.limit {
            return Ok(Take::Exceeded { used });
        }
        // Strictly increasing per key, so a use can be given back by its time.
        let at = w.uses.back().map_or(now_ms, |last| now_ms.max(last + 1));
        db.execute(
            "INSERT INTO uses (key, at, limit_, window_ms) VALUES (?1, ?2, ?3, ?4)",
            params![key, at, budget.limit as i64, window_ms],
        )
        .map_err(|e| BudgetError::Db(FILE.into(), e.to_string()))?;
        w.uses.push_back(at);
        Ok(Take::Taken { used: used + 1, at })
    }

    /// [`Budgets::give_back`], on this thread.
    pub fn give_back_now(&self, key: &[String], at: i64) {
        let joined = joined(key);
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let Inner { windows, db } = &mut *inner;
        if let Some(w) = windows.get_mut(&joined) {
            if let Some(i) = w.uses.iter().position(|t| *t == at) {
                w.uses.remove(i);
            }
        }
        let _ = db.execute(
            "DELETE FROM uses WHERE key = ?1 AND at = ?2",
            params![joined, at],
        );
    }

    /// [`Budgets::usage`], on this thread.
    pub fn usage_now(&self, now_ms: i64, part: Option<&str>) -> Vec<Usage> {
        let Ok(mut inner) = self.inner.lock() else {
            return Vec::new();
        };
        let mut out: Vec<Usage> = inner
            .windows
            .values_mut()
            .filter(|w| part.is_none_or(|p| w.key.iter().any(|k| k == p)))
            .map(|w| {
                w.expire(now_ms);
                w.usage()
            })
            .filter(|u| u.used > 0)
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

/// A window as people write it (`1h`, `30m`).
pub fn window_text(window: Duration) -> String {
    humantime::format_duration(window).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Effect;

    fn budget(limit: u64, window: u64) -> Budget {
        Budget {
            key: vec!["external-mail".into(), "spiffe://t/agent/a".into()],
            limit,
            window: Duration::from_secs(window),
            over: Effect::Escalate,
        }
    }

    #[test]
    fn the_window_slides_and_counts_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let b = budget(3, 60);
        let counter = LocalBudgets::open(&path, 0).unwrap();
        let t0 = 1_000_000;
        for i in 1..=3 {
            assert!(
                matches!(counter.take_now(&b, t0 + i), Ok(Take::Taken { used, .. }) if used == i as u64)
            );
        }
        assert_eq!(
            counter.take_now(&b, t0 + 10).unwrap(),
            Take::Exceeded { used: 3 }
        );
        drop(counter);
        // Restarted: the same three uses are still in the window.
        let counter = LocalBudgets::open(&path, t0 + 20).unwrap();
        assert_eq!(
            counter.take_now(&b, t0 + 20).unwrap(),
            Take::Exceeded { used: 3 }
        );
        let usage = counter.usage_now(t0 + 20, Some("external-mail"));
        assert_eq!(usage.len(), 1);
        assert_eq!(
            (usage[0].used, usage[0].limit, usage[0].window_secs),
            (3, 3, 60)
        );
        assert_eq!(usage[0].frees_at_ms, Some(t0 + 1 + 60_000));
        // The first use leaves the window one minute after it was taken.
        assert!(matches!(
            counter.take_now(&b, t0 + 1 + 60_000),
            Ok(Take::Taken { used: 3, .. })
        ));
        assert_eq!(
            counter.take_now(&b, t0 + 2 + 59_999).unwrap(),
            Take::Exceeded { used: 3 }
        );
    }

    #[test]
    fn a_use_given_back_frees_its_place_and_concurrent_takes_never_overshoot() {
        let dir = tempfile::tempdir().unwrap();
        let counter = std::sync::Arc::new(LocalBudgets::open(&dir.path().join(FILE), 0).unwrap());
        let b = budget(20, 3600);
        let taken: Vec<Take> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (0..10)
                            .map(|_| counter.take_now(&b, 5_000).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let ok: Vec<i64> = taken
            .iter()
            .filter_map(|t| match t {
                Take::Taken { at, .. } => Some(*at),
                Take::Exceeded { .. } => None,
            })
            .collect();
        assert_eq!(
            ok.len(),
            20,
            "exactly the limit was counted out of 80 tries"
        );
        counter.give_back_now(&b.key, ok[0]);
        assert!(matches!(
            counter.take_now(&b, 5_001),
            Ok(Take::Taken { used: 20, .. })
        ));
        assert!(matches!(
            counter.take_now(&b, 5_002),
            Ok(Take::Exceeded { used: 20 })
        ));
    }
}
