//! The consent lifecycle after asking: answer, expire, cancel, end (PANIC), list. State
//! lives in the store; this process keeps a watch channel per pending consent so held
//! requests wake the moment an answer lands, from whichever approver. Asking is in
//! [`super::ask`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::ciba::{Answers, Ciba};
use super::config::ConsentConfig;
use super::error::{AnswerError, ConsentError, Refused};
use super::record::{Answer, Consent, Status};
use super::store::Store;
use crate::audit::{Audit, Record, record};
use crate::clock::now;
use crate::webhooks::Webhooks;

/// A pending consent in this process.
pub(super) struct Live {
    pub(super) tx: watch::Sender<Status>,
    /// Held requests waiting on it; the last one to leave cancels it.
    pub(super) waiters: AtomicUsize,
}

/// All consents.
pub struct Consents {
    pub(super) config: ConsentConfig,
    store: Mutex<Store>,
    live: Mutex<HashMap<String, Arc<Live>>>,
    audit: Arc<Audit>,
    /// Counts each consent's outcome.
    metrics: Arc<crate::metrics::Metrics>,
    webhooks: Arc<Webhooks>,
    pub(super) ciba: Option<Arc<Ciba>>,
    /// In fleet mode: whether the bus is reachable (`BUS_*`).
    bus: AtomicU8,
}

/// No fleet: consents are local.
const BUS_NONE: u8 = 0;
/// In a fleet, the bus reachable: a consent asked here is seen and answerable everywhere.
const BUS_UP: u8 = 1;
/// In a fleet, the bus unreachable: no consent is opened (nobody else could answer it).
const BUS_DOWN: u8 = 2;

impl Consents {
    /// Opens the store; consents pending from an earlier run stay pending (and are asked
    /// again through CIBA, whose tickets did not survive).
    pub fn open(
        config: &ConsentConfig,
        state: &crate::state::StateDir,
        audit: Arc<Audit>,
        metrics: Arc<crate::metrics::Metrics>,
        webhooks: Arc<Webhooks>,
        ciba: Option<Arc<Ciba>>,
    ) -> Result<Arc<Consents>, ConsentError> {
        let store = Store::open(state)?;
        // Closed consents are kept 30 days (their audit records stay for good).
        let pruned = store.prune(now() - 30 * 24 * 3600)?;
        if pruned > 0 {
            tracing::info!(pruned, "old closed consents removed from consents.db");
        }
        let pending = store.list(true, u32::MAX)?;
        // Another instance's consents are its to ask (again); this one only answers them.
        let remote = store.remote_ids()?;
        let consents = Arc::new(Consents {
            config: config.clone(),
            store: Mutex::new(store),
            live: Mutex::default(),
            audit,
            metrics,
            webhooks,
            ciba,
            bus: AtomicU8::new(BUS_NONE),
        });
        for c in pending.into_iter().filter(|c| !remote.contains(&c.id)) {
            consents.track(&c.id);
            if let Some(ciba) = &consents.ciba {
                ciba.clone().ask(consents.clone(), c);
            }
        }
        Ok(consents)
    }

    /// In fleet mode: records whether the bus is reachable. While it is not, an escalation
    /// that needs a new consent is refused at once rather than held where only this
    /// instance could answer it.
    pub fn fleet_bus(&self, up: bool) {
        self.bus
            .store(if up { BUS_UP } else { BUS_DOWN }, Ordering::Relaxed);
    }

    /// Whether a new consent may be opened (not while a fleet's bus is unreachable).
    pub(super) fn can_open(&self) -> bool {
        self.bus.load(Ordering::Relaxed) != BUS_DOWN
    }

    /// Makes a used once-approval usable again (its request was refused before leaving).
    pub fn release_once(&self, id: &str) {
        if let Err(e) = self.with_store(|s| s.release_once(id)) {
            tracing::error!(consent = id, error = %e, "a one-time approval could not be given back");
        }
    }

    /// Approves a pending consent, once or for a window.
    pub fn approve(
        &self,
        id: &str,
        by: &str,
        how: &str,
        window: Option<Duration>,
    ) -> Result<Consent, AnswerError> {
        if let Some(w) = window.filter(|w| *w > self.config.max_window) {
            return Err(AnswerError::WindowTooLong(w));
        }
        let window = window.or_else(|| self.default_window(id));
        let until = window.map(|w| now() + w.as_secs() as i64);
        self.answer(
            id,
            Answer {
                status: Status::Approved,
                by,
                how,
                reason: None,
                window_until: until,
            },
        )
    }

    /// Denies a pending consent.
    pub fn deny(
        &self,
        id: &str,
        by: &str,
        how: &str,
        reason: Option<&str>,
    ) -> Result<Consent, AnswerError> {
        self.answer(
            id,
            Answer {
                status: Status::Denied,
                by,
                how,
                reason,
                window_until: None,
            },
        )
    }

    fn answer(&self, id: &str, a: Answer<'_>) -> Result<Consent, AnswerError> {
        let now = now();
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let current = store
            .get(id)?
            .ok_or_else(|| AnswerError::NotFound(id.to_owned()))?;
        if current.status == Status::Pending && current.expires <= now {
            drop(store);
            self.expire(id);
            return Err(self.late(&current, &a));
        }
        if !store.answer(id, &a, now)? {
            let c = store.get(id)?.unwrap_or(current);
            if c.status == Status::Expired {
                return Err(self.late(&c, &a));
            }
            return Err(AnswerError::AlreadyAnswered {
                id: id.to_owned(),
                status: c.status.as_str(),
                how: c.how.unwrap_or_default(),
            });
        }
        let c = store
            .get(id)?
            .ok_or_else(|| AnswerError::NotFound(id.to_owned()))?;
        drop(store);
        let (event, hook) = match a.status {
            Status::Approved => ("consent_approved", "consent.approved"),
            _ => ("consent_denied", "consent.denied"),
        };
        self.announce(event, hook, &c);
        self.settle(id, c.status);
        Ok(c)
    }

    /// Records an answer that came after the consent expired.
    fn late(&self, c: &Consent, a: &Answer<'_>) -> AnswerError {
        let late = record::LateAnswer {
            agent: c.agent.clone(),
            answer: a.status.as_str().to_owned(),
            by: a.by.to_owned(),
            consent_id: c.id.clone(),
            how: a.how.to_owned(),
        };
        self.commit(record::Admin {
            event: "consent_late_answer".into(),
            tenant: c.tenant.clone(),
            detail: record::Detail::LateAnswer(late),
        });
        AnswerError::Expired(c.id.clone())
    }

    /// Marks a pending consent expired (its time is up).
    pub fn expire(&self, id: &str) {
        self.close(id, Status::Expired, "timeout", None);
    }

    /// Cancels a pending consent (the held agent went away).
    pub(super) fn cancel(&self, id: &str) {
        self.close(
            id,
            Status::Cancelled,
            "disconnect",
            Some("the agent disconnected while held"),
        );
    }

    /// Closes a pending consent without a person's answer; false when it was not pending.
    pub(super) fn close(&self, id: &str, status: Status, how: &str, reason: Option<&str>) -> bool {
        let closed = self.with_store(|s| {
            let a = Answer {
                status,
                by: "agentgate",
                how,
                reason,
                window_until: None,
            };
            if s.answer(id, &a, now())? {
                s.get(id)
            } else {
                Ok(None)
            }
        });
        match closed {
            Ok(Some(c)) => {
                let (event, hook) = match status {
                    Status::Expired => ("consent_expired", "consent.expired"),
                    _ => ("consent_cancelled", "consent.cancelled"),
                };
                self.announce(event, hook, &c);
                self.settle(id, status);
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!(consent = id, error = %e, "consent could not be closed");
                false
            }
        }
    }

    /// PANIC: denies every pending consent of `agents` (all when `None`) and ends their
    /// approvals still in force (open windows, unused once-approvals), so nothing a person
    /// approved before comes back with the agent. Returns how many consents it touched.
    pub fn deny_agents(&self, agents: Option<&HashSet<String>>, reason: &str) -> usize {
        let pending = self
            .with_store(|s| s.list(true, u32::MAX))
            .unwrap_or_default();
        // Another instance's consents are denied by it, when the revocation reaches it.
        let remote = self.with_store(|s| s.remote_ids()).unwrap_or_default();
        let denied = pending
            .iter()
            .filter(|c| !remote.contains(&c.id))
            .filter(|c| agents.is_none_or(|a| a.contains(&c.agent)))
            .filter(|c| self.deny(&c.id, "agentgate", "panic", Some(reason)).is_ok())
            .count();
        let now = now();
        let ended: usize = match agents {
            None => self.with_store(|s| s.end_approvals(None, now)).unwrap_or(0),
            Some(set) => set
                .iter()
                .map(|a| {
                    self.with_store(|s| s.end_approvals(Some(a), now))
                        .unwrap_or(0)
                })
                .sum(),
        };
        if ended > 0 {
            let mut agents: Vec<String> = agents
                .map(|a| a.iter().cloned().collect())
                .unwrap_or_default();
            agents.sort();
            let detail = record::ApprovalsEnded {
                agents,
                count: ended as u64,
                reason: reason.to_owned(),
            };
            self.commit(record::Admin {
                event: "consent_approvals_ended".into(),
                tenant: None,
                detail: record::Detail::ApprovalsEnded(detail),
            });
        }
        denied + ended
    }

    /// Expires overdue consents every second until `shutdown`.
    pub async fn sweep(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
            let overdue = self.with_store(|s| s.overdue(now())).unwrap_or_default();
            for id in overdue {
                self.expire(&id);
            }
        }
    }

    /// Consents for the API and CLI.
    pub fn list(&self, pending_only: bool) -> Result<Vec<Consent>, ConsentError> {
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .list(pending_only, 500)
    }

    /// How many consents wait for an answer (one SQL count).
    pub fn pending_count(&self) -> Result<usize, ConsentError> {
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        store.pending_counts("").map(|(total, _)| total)
    }

    /// One consent.
    pub fn get(&self, id: &str) -> Result<Option<Consent>, ConsentError> {
        self.store.lock().unwrap_or_else(|p| p.into_inner()).get(id)
    }

    /// An answer to `id` that reached the store from elsewhere (another instance of the
    /// fleet): requests held on it here wake with it.
    pub fn answered_elsewhere(&self, id: &str) {
        let _ = self.still_pending(id);
    }

    /// Whether `id` is pending in the store; if not, its channel is settled (and dropped),
    /// so nobody waits on an answer that already came.
    pub(super) fn still_pending(&self, id: &str) -> bool {
        match self.with_store(|s| s.get(id)) {
            Ok(Some(c)) if c.status == Status::Pending => true,
            Ok(Some(c)) => {
                self.settle(id, c.status);
                false
            }
            _ => {
                self.settle(id, Status::Cancelled);
                false
            }
        }
    }

    pub(super) fn track(&self, id: &str) -> Arc<Live> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.entry(id.to_owned())
            .or_insert_with(|| {
                Arc::new(Live {
                    tx: watch::channel(Status::Pending).0,
                    waiters: AtomicUsize::new(0),
                })
            })
            .clone()
    }

    /// Wakes everyone waiting on `id` and forgets it.
    fn settle(&self, id: &str, status: Status) {
        let live = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(l) = live {
            l.tx.send_replace(status);
        }
    }

    pub(super) fn announce(&self, event: &str, hook: &'static str, c: &Consent) {
        let change = record::ConsentChange {
            action: c.action.clone(),
            agent: c.agent.clone(),
            auth_req_id: c.auth_req_id.clone(),
            backend: c.backend.clone(),
            by: c.answered_by.clone(),
            consent_id: c.id.clone(),
            digest: c.digest.clone(),
            how: c.how.clone(),
            reason: c.reason.clone(),
            resource: record::ResourceRef {
                id: c.resource_id.clone(),
                kind: c.resource_type.clone(),
            },
            status: c.status.as_str().to_owned(),
            window_until: c.window_until,
        };
        self.commit(record::Admin {
            event: event.to_owned().into(),
            // Its tenant's admin scope sees it.
            tenant: c.tenant.clone(),
            detail: record::Detail::Consent(change),
        });
        self.metrics.consent(c.status);
        tracing::info!(consent = %c.id, agent = %c.agent, action = %c.action, resource = %c.resource_id, status = c.status.as_str(), how = c.how.as_deref(), code = %c.binding_code, "{event}");
        self.webhooks.emit(hook, public(c));
    }

    /// Commits an audit record in the background: durable (consents are evidence), without
    /// making an answer wait for the log.
    fn commit(&self, r: impl Into<Record>) {
        let (audit, r) = (self.audit.clone(), r.into());
        tokio::spawn(async move {
            if let Err(e) = audit.commit(r).await {
                tracing::error!(error = %e, "a consent record could not be committed to the audit log");
            }
        });
    }

    /// Runs `f` on the store; a store failure is [`Refused::Unavailable`].
    pub(super) fn with_store<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, ConsentError>,
    ) -> Result<T, Refused> {
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        f(&store).map_err(Refused::from)
    }
}

impl Answers for Consents {
    fn watch(&self, id: &str) -> Option<watch::Receiver<Status>> {
        let rx = self.track(id).tx.subscribe();
        self.still_pending(id).then_some(rx)
    }

    fn set_auth_req_id(&self, id: &str, auth_req_id: &str) {
        if let Err(e) = self.with_store(|s| s.set_auth_req_id(id, auth_req_id)) {
            tracing::error!(consent = id, error = %e, "CIBA ticket not recorded");
        }
    }

    fn approved(&self, id: &str, by: &str, how: &str) {
        let _ = self.approve(id, by, how, None);
    }

    fn denied(&self, id: &str, by: &str, how: &str, reason: &str) {
        let _ = self.deny(id, by, how, Some(reason));
    }
}

/// What webhooks and listings show of a consent (no digest, no tuple context).
pub fn public(c: &Consent) -> serde_json::Value {
    serde_json::json!({
        "consent_id": c.id,
        "agent": c.agent,
        "owner": c.owner,
        "tenant": c.tenant,
        "action": c.action,
        "resource": {"type": c.resource_type, "id": c.resource_id},
        "status": c.status.as_str(),
        "binding_code": c.binding_code,
        "expires": c.expires,
        "answered_by": c.answered_by,
        "how": c.how,
        "reason": c.reason,
    })
}
