//! The consent lifecycle: ask (or reuse an approval), wait, answer, expire, cancel. State
//! lives in the store; this process keeps a watch channel per pending consent so held
//! requests wake the moment an answer lands, from whichever approver.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use tokio::sync::watch;

use super::ciba::Ciba;
use super::store::Store;
use super::{Answer, AnswerError, Backend, Consent, ConsentConfig, ConsentError, Mode, Status};
use crate::audit::{Audit, Record, record};
use crate::clock::now;
use crate::error::{Denial, Gate};
use crate::identity::Caller;
use crate::intent::Tuple;
use crate::webhooks::Webhooks;

/// New consents per agent per minute, as a multiple of `consent.max_pending_per_agent`.
const ASKED_PER_MINUTE: usize = 3;
/// Requests held on one consent at most (identical retries share it; each holds its body).
const MAX_WAITERS: usize = 8;
/// Alphabet of binding codes: no 0/O, 1/I.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// What the consent gate is asked about.
pub struct Ask<'a> {
    pub caller: &'a Caller,
    pub tuple: &'a Tuple,
    /// Digest of the exact request (method, URL, body, tuple).
    pub digest: String,
    /// The policy's `consent.binding_message`, if it gave one.
    pub message: Option<&'a str>,
    /// Why policy escalated (its reasons), for the agent.
    pub why: String,
}

/// A consent that lets this request through.
#[derive(Debug, Clone)]
pub struct Granted {
    pub id: String,
    /// `once` or `window`.
    pub scope: &'static str,
    pub answered_by: Option<String>,
    /// How it was answered: `cli`, `api`, `ciba`.
    pub how: Option<String>,
}

/// A pending consent in this process.
struct Live {
    tx: watch::Sender<Status>,
    /// Held requests waiting on it; the last one to leave cancels it.
    waiters: AtomicUsize,
}

/// All consents.
pub struct Consents {
    config: ConsentConfig,
    store: Mutex<Store>,
    live: Mutex<HashMap<String, Arc<Live>>>,
    audit: Arc<Audit>,
    /// Counts each consent's outcome.
    metrics: Arc<crate::metrics::Metrics>,
    webhooks: Arc<Webhooks>,
    ciba: Option<Arc<Ciba>>,
}

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
        let consents = Arc::new(Consents {
            config: config.clone(),
            store: Mutex::new(store),
            live: Mutex::default(),
            audit,
            metrics,
            webhooks,
            ciba,
        });
        for c in pending {
            consents.track(&c.id);
            if let Some(ciba) = &consents.ciba {
                ciba.clone().ask(consents.clone(), c);
            }
        }
        Ok(consents)
    }

    /// Gate 4: lets the request through on an approval that covers it, or asks a person
    /// (holding the request, or answering at once in async mode).
    pub async fn ask(self: &Arc<Self>, ask: Ask<'_>) -> Result<Granted, Denial> {
        let now = now();
        let agent = &ask.caller.spiffe_id;
        let tuple_key = tuple_key(agent, ask.tuple);
        // An open window for this agent, action and resource.
        if let Some(c) = self.with_store(|s| s.window(agent, &tuple_key, now))? {
            return Ok(granted(&c, "window"));
        }
        let existing = self.with_store(|s| s.for_request(agent, &ask.digest, now))?;
        let consent = match existing {
            Some(c) if c.status == Status::Approved => return self.use_once(&c),
            Some(c) if c.status == Status::Denied => return Err(denied(&c)),
            // The identical request again while its consent is open: the same consent.
            Some(c) => c,
            None => self.create(&ask, tuple_key, now)?,
        };
        match self.config.mode {
            Mode::Async => Err(pending(&consent, &ask.why, self.config.retry_after)),
            Mode::Hold => self.hold(&consent).await,
        }
    }

    /// Waits for the answer, up to the consent's expiry. Dropped (the agent went away),
    /// the last waiter cancels the consent.
    async fn hold(self: &Arc<Self>, consent: &Consent) -> Result<Granted, Denial> {
        let live = self.track(&consent.id);
        let mut rx = live.tx.subscribe();
        if live.waiters.load(Ordering::Relaxed) >= MAX_WAITERS {
            return Err(Denial::new(
                Gate::Consent,
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_pending",
                format!(
                    "{MAX_WAITERS} identical requests already wait on consent {}; wait for its answer",
                    consent.id
                ),
            ));
        }
        // Subscribed first, then checked: an answer that landed in between is not missed.
        if !self.still_pending(&consent.id) {
            rx.mark_changed();
        }
        live.waiters.fetch_add(1, Ordering::Relaxed);
        let mut leave = Leave {
            consents: self.clone(),
            live: live.clone(),
            id: consent.id.clone(),
            armed: true,
        };
        let wait = consent.expires.saturating_sub(now()).max(0) as u64;
        let answered = tokio::time::timeout(
            Duration::from_secs(wait),
            rx.wait_for(|s| *s != Status::Pending),
        )
        .await
        .map(|s| s.map(|s| *s));
        leave.armed = false;
        drop(leave);
        live.waiters.fetch_sub(1, Ordering::Relaxed);
        match answered {
            Ok(Ok(_)) | Ok(Err(_)) => {}
            Err(_) => self.expire(&consent.id),
        }
        let c = self
            .with_store(|s| s.get(&consent.id))?
            .ok_or_else(|| unavailable("the consent vanished from the store"))?;
        match c.status {
            Status::Approved if c.window_until.is_some() => Ok(granted(&c, "window")),
            Status::Approved => self.use_once(&c),
            Status::Denied => Err(denied(&c)),
            Status::Expired => Err(about(
                &c,
                Denial::new(
                    Gate::Consent,
                    StatusCode::FORBIDDEN,
                    "consent_timeout",
                    format!(
                        "consent timed out after {}s with no answer (consent {}, code {})",
                        self.config.timeout.as_secs(),
                        c.id,
                        c.binding_code
                    ),
                ),
            )),
            Status::Cancelled | Status::Pending => Err(about(
                &c,
                Denial::new(
                    Gate::Consent,
                    StatusCode::FORBIDDEN,
                    "consent_cancelled",
                    format!("consent {} was cancelled", c.id),
                ),
            )),
        }
    }

    fn use_once(&self, c: &Consent) -> Result<Granted, Denial> {
        if self.with_store(|s| s.use_once(&c.id))? {
            Ok(granted(c, "once"))
        } else {
            Err(about(
                c,
                Denial::new(
                    Gate::Consent,
                    StatusCode::FORBIDDEN,
                    "consent_used",
                    format!(
                        "the one-time approval of consent {} was used by an identical request; retry to ask again",
                        c.id
                    ),
                ),
            ))
        }
    }

    fn create(
        self: &Arc<Self>,
        ask: &Ask<'_>,
        tuple_key: String,
        now: i64,
    ) -> Result<Consent, Denial> {
        // Asked-for per minute is bounded too: an agent that disconnects and retries must
        // not page its owner without end.
        let recent = self.with_store(|s| s.created_since(&ask.caller.spiffe_id, now - 60))?;
        if recent >= ASKED_PER_MINUTE * self.config.max_pending_per_agent {
            return Err(Denial::new(
                Gate::Consent,
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_pending",
                format!(
                    "this agent asked for {recent} consents in the last minute (limit {ASKED_PER_MINUTE} × consent.max_pending_per_agent {}); wait before asking again",
                    self.config.max_pending_per_agent
                ),
            )
            .with_extra(serde_json::Map::new(), Some(60)));
        }
        let (total, mine) = self.with_store(|s| s.pending_counts(&ask.caller.spiffe_id))?;
        if total >= self.config.max_pending || mine >= self.config.max_pending_per_agent {
            return Err(Denial::new(
                Gate::Consent,
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_pending",
                format!(
                    "{} consents are pending ({} of this agent; limits consent.max_pending {} and max_pending_per_agent {}); wait for answers",
                    total, mine, self.config.max_pending, self.config.max_pending_per_agent
                ),
            ));
        }
        let taken = self.with_store(Store::pending_codes)?;
        let code = loop {
            let c = binding_code();
            if !taken.contains(&c) {
                break c;
            }
        };
        let t = ask.tuple;
        let consent = Consent {
            id: format!(
                "cns_{}",
                crate::vault::store::hex(&rand::random::<[u8; 8]>())
            ),
            agent: ask.caller.spiffe_id.clone(),
            owner: ask.caller.owner.clone(),
            tenant: ask.caller.tenant.clone(),
            action: t.action.to_string(),
            resource_type: t.resource_type.to_string(),
            resource_id: t.resource_id.clone(),
            tuple: t.json.clone(),
            digest: ask.digest.clone(),
            tuple_key,
            binding_code: code,
            backend: match self.config.backend {
                Backend::Local => "local".into(),
                Backend::Ciba => "ciba".into(),
            },
            created: now,
            expires: now + self.config.timeout.as_secs() as i64,
            status: Status::Pending,
            answered_by: None,
            how: None,
            reason: None,
            answered: None,
            window_until: None,
            used: false,
            auth_req_id: None,
        };
        self.with_store(|s| s.insert(&consent))?;
        self.track(&consent.id);
        self.announce("consent_requested", "consent.requested", &consent);
        if let Some(ciba) = &self.ciba {
            let mut c = consent.clone();
            c.reason = ask.message.map(str::to_owned);
            ciba.clone().ask(self.clone(), c);
        }
        Ok(consent)
    }

    /// Makes a used once-approval usable again (its request was refused before leaving).
    pub fn release_once(&self, id: &str) {
        if let Err(e) = self.with_store(|s| s.release_once(id)) {
            tracing::error!(consent = id, error = %e.reason, "a one-time approval could not be given back");
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
    fn cancel(&self, id: &str) {
        self.close(
            id,
            Status::Cancelled,
            "disconnect",
            Some("the agent disconnected while held"),
        );
    }

    fn close(&self, id: &str, status: Status, how: &str, reason: Option<&str>) {
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
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(consent = id, error = %e.reason, "consent could not be closed")
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
        let denied = pending
            .iter()
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

    /// Records the CIBA ticket asking for consent `id`.
    pub(super) fn set_auth_req_id(&self, id: &str, auth_req_id: &str) {
        if let Err(e) = self.with_store(|s| s.set_auth_req_id(id, auth_req_id)) {
            tracing::error!(consent = id, error = %e.reason, "CIBA ticket not recorded");
        }
    }

    /// A receiver that changes when consent `id` is answered; `None` when it already was.
    pub(super) fn watch(&self, id: &str) -> Option<watch::Receiver<Status>> {
        let rx = self.track(id).tx.subscribe();
        self.still_pending(id).then_some(rx)
    }

    /// Whether `id` is pending in the store; if not, its channel is settled (and dropped),
    /// so nobody waits on an answer that already came.
    fn still_pending(&self, id: &str) -> bool {
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

    fn track(&self, id: &str) -> Arc<Live> {
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

    fn announce(&self, event: &str, hook: &'static str, c: &Consent) {
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

    fn with_store<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, ConsentError>,
    ) -> Result<T, Denial> {
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        f(&store).map_err(|e| unavailable(&e.to_string()))
    }
}

/// Cancels the consent when the last held request waiting on it goes away unanswered.
struct Leave {
    consents: Arc<Consents>,
    live: Arc<Live>,
    id: String,
    armed: bool,
}

impl Drop for Leave {
    fn drop(&mut self) {
        if self.armed && self.live.waiters.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.consents.cancel(&self.id);
        }
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

fn granted(c: &Consent, scope: &'static str) -> Granted {
    Granted {
        id: c.id.clone(),
        scope,
        answered_by: c.answered_by.clone(),
        how: c.how.clone(),
    }
}

/// Names the consent in a refusal's body (and so in its decision record).
fn about(c: &Consent, d: Denial) -> Denial {
    let mut fields = serde_json::Map::new();
    fields.insert("consent_id".into(), c.id.clone().into());
    d.with_extra(fields, None)
}

fn denied(c: &Consent) -> Denial {
    about(
        c,
        Denial::new(
            Gate::Consent,
            StatusCode::FORBIDDEN,
            "consent_denied",
            format!(
                "consent {} was denied by {} ({}){}",
                c.id,
                c.answered_by.as_deref().unwrap_or("?"),
                c.how.as_deref().unwrap_or("?"),
                c.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        ),
    )
}

fn pending(c: &Consent, why: &str, retry_after: Duration) -> Denial {
    let mut fields = serde_json::Map::new();
    fields.insert("consent_id".into(), c.id.clone().into());
    fields.insert("status".into(), "pending".into());
    fields.insert("binding_code".into(), c.binding_code.clone().into());
    fields.insert("expires".into(), c.expires.into());
    Denial::new(
        Gate::Consent,
        StatusCode::FORBIDDEN,
        "consent_pending",
        format!(
            "{why}: a person must approve this request (consent {}, code {}); retry the identical request after approval",
            c.id, c.binding_code
        ),
    )
    .with_extra(fields, Some(retry_after.as_secs().max(1)))
}

fn unavailable(reason: &str) -> Denial {
    Denial::new(
        Gate::Consent,
        StatusCode::SERVICE_UNAVAILABLE,
        "consent_unavailable",
        format!("consent could not be asked: {reason}"),
    )
}

/// Agent + action + resource.
fn tuple_key(agent: &str, t: &Tuple) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [agent, &t.action, &t.resource_type, &t.resource_id] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    crate::vault::store::hex(&ctx.finish().as_ref()[..16])
}

fn binding_code() -> String {
    rand::random::<[u8; 6]>()
        .iter()
        .map(|b| CODE_ALPHABET[(*b as usize) % CODE_ALPHABET.len()] as char)
        .collect()
}
