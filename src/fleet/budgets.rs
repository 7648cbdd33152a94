//! Action budgets shared by the fleet: one KV entry per budget key in `<fleet>-budgets`,
//! holding the times of the uses in its window. A use is taken with compare-and-set on the
//! entry's revision, so instances taking at once cannot overshoot the limit together: the
//! loser reads the winner's entry and tries again. A bus that cannot be reached refuses
//! the request (the gate fails closed).

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::bus::connect;
use crate::config::FleetConfig;
use crate::policy::Budget;
use crate::policy::budget::{BoxFuture, BudgetError, Budgets, Take, Usage};

/// Tries at one take before the bus is called too busy (each loser re-reads and retries).
const ATTEMPTS: usize = 32;
/// Longest one bus call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One key's window as stored.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    key: Vec<String>,
    limit: u64,
    window_ms: i64,
    uses: Vec<i64>,
}

impl Stored {
    fn expire(&mut self, now_ms: i64) {
        let cutoff = now_ms - self.window_ms;
        self.uses.retain(|t| *t > cutoff);
    }

    fn usage(&self) -> Usage {
        Usage::of(
            &self.key,
            self.uses.len(),
            self.limit,
            self.window_ms,
            self.uses.first(),
        )
    }
}

/// The fleet's budget counter.
pub struct FleetBudgets {
    config: FleetConfig,
    store: Mutex<Option<kv::Store>>,
}

fn unavailable(e: impl std::fmt::Display) -> BudgetError {
    BudgetError::Db("the fleet's budgets bucket".into(), e.to_string())
}

/// The bucket key of a budget key: a digest, as KV keys allow few characters.
fn entry_key(key: &[String]) -> String {
    let joined = serde_json::to_vec(key).unwrap_or_default();
    let digest = crate::digest::sha256(&joined);
    format!("b{}", crate::digest::hex(&digest[..16]))
}

impl FleetBudgets {
    /// A counter on the fleet of `config`; the bus is reached on first use.
    pub fn new(config: FleetConfig) -> FleetBudgets {
        FleetBudgets {
            config,
            store: Mutex::new(None),
        }
    }

    /// The bucket, connecting (and creating it) when not yet done.
    async fn store(&self) -> Result<kv::Store, BudgetError> {
        let mut held = self.store.lock().await;
        if let Some(s) = held.as_ref() {
            return Ok(s.clone());
        }
        let client = connect(&self.config).await.map_err(unavailable)?;
        let js = jetstream::new(client);
        let name = format!("{}-budgets", self.config.name);
        let store = match js.get_key_value(&name).await {
            Ok(s) => s,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: name.clone(),
                    history: 1,
                    // A key untouched for longer than the longest window holds nothing.
                    max_age: crate::policy::MAX_BUDGET_WINDOW + Duration::from_secs(86_400),
                    num_replicas: self.config.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| unavailable(format!("cannot create KV bucket {name}: {e}")))?,
        };
        *held = Some(store.clone());
        Ok(store)
    }

    /// The entry of `key` with its revision (`None`: no entry yet).
    async fn read(store: &kv::Store, key: &str) -> Result<(Stored, Option<u64>), BudgetError> {
        let entry = tokio::time::timeout(CALL_TIMEOUT, store.entry(key))
            .await
            .map_err(|_| unavailable("timed out"))?
            .map_err(unavailable)?;
        match entry {
            Some(e) if matches!(e.operation, kv::Operation::Put) => {
                let stored = serde_json::from_slice(&e.value).map_err(unavailable)?;
                Ok((stored, Some(e.revision)))
            }
            _ => Ok((Stored::default(), None)),
        }
    }

    /// Writes `stored` over `revision`; `Ok(false)` when another instance wrote first.
    async fn write(
        store: &kv::Store,
        key: &str,
        stored: &Stored,
        revision: Option<u64>,
    ) -> Result<bool, BudgetError> {
        let bytes = Bytes::from(serde_json::to_vec(stored).map_err(unavailable)?);
        match revision {
            None => tokio::time::timeout(CALL_TIMEOUT, store.create(key, bytes))
                .await
                .map_err(|_| unavailable("timed out"))?
                .map(|_| true)
                .or_else(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => Ok(false),
                    _ => Err(unavailable(e)),
                }),
            Some(r) => tokio::time::timeout(CALL_TIMEOUT, store.update(key, bytes, r))
                .await
                .map_err(|_| unavailable("timed out"))?
                .map(|_| true)
                .or_else(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                    _ => Err(unavailable(e)),
                }),
        }
    }

    async fn take_on_bus(&self, budget: &Budget, now_ms: i64) -> Result<Take, BudgetError> {
        let store = self.store().await?;
        let key = entry_key(&budget.key);
        let window_ms = i64::try_from(budget.window.as_millis()).unwrap_or(i64::MAX);
        for _ in 0..ATTEMPTS {
            let (mut stored, revision) = Self::read(&store, &key).await?;
            (stored.key, stored.limit, stored.window_ms) =
                (budget.key.clone(), budget.limit, window_ms);
            stored.expire(now_ms);
            let used = stored.uses.len() as u64;
            if used >= budget.limit {
                return Ok(Take::Exceeded { used });
            }
            let at = stored
                .uses
                .last()
                .map_or(now_ms, |last| now_ms.max(last + 1));
            stored.uses.push(at);
            if Self::write(&store, &key, &stored, revision).await? {
                return Ok(Take::Taken { used: used + 1, at });
            }
        }
        Err(unavailable(format!(
            "{ATTEMPTS} instances' writes in a row won over this one"
        )))
    }

    async fn give_back_on_bus(&self, key: &[String], at: i64) -> Result<(), BudgetError> {
        let store = self.store().await?;
        let entry = entry_key(key);
        for _ in 0..ATTEMPTS {
            let (mut stored, revision) = Self::read(&store, &entry).await?;
            let Some(i) = stored.uses.iter().position(|t| *t == at) else {
                return Ok(());
            };
            stored.uses.remove(i);
            if Self::write(&store, &entry, &stored, revision).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn usage_on_bus(
        &self,
        now_ms: i64,
        part: Option<&str>,
    ) -> Result<Vec<Usage>, BudgetError> {
        let store = self.store().await?;
        let mut keys = store.keys().await.map_err(unavailable)?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(unavailable)?;
            let (mut stored, _) = Self::read(&store, &key).await?;
            stored.expire(now_ms);
            if stored.uses.is_empty() || part.is_some_and(|p| !stored.key.iter().any(|k| k == p)) {
                continue;
            }
            out.push(stored.usage());
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

impl Budgets for FleetBudgets {
    fn take<'a>(
        &'a self,
        budget: &'a Budget,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Take, BudgetError>> {
        Box::pin(self.take_on_bus(budget, now_ms))
    }

    fn give_back<'a>(&'a self, key: &'a [String], at: i64) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self.give_back_on_bus(key, at).await {
                tracing::warn!(error = %e, "fleet: a budget use of a refused request could not be given back; it stays counted until its window passes");
            }
        })
    }

    fn usage<'a>(&'a self, now_ms: i64, part: Option<&'a str>) -> BoxFuture<'a, Vec<Usage>> {
        Box::pin(async move {
            self.usage_on_bus(now_ms, part).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "fleet: budgets could not be read");
                Vec::new()
            })
        })
    }
}

impl FleetBudgets {
    /// [`Budgets::usage`], with the error instead of an empty list (for the CLI).
    pub async fn usage_or_error(
        &self,
        now_ms: i64,
        part: Option<&str>,
    ) -> Result<Vec<Usage>, BudgetError> {
        self.usage_on_bus(now_ms, part).await
    }
}
