//! Asking: the consent gate's side of the lifecycle. A request is let through on an open
//! approval window or on its own approval; otherwise its consent is created (or joined,
//! for the identical request) and the request is held until answered, or refused at once
//! in async mode.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::approvals::{Consents, Live};
use super::config::{Backend, Mode};
use super::error::Refused;
use super::record::{Consent, Status};
use super::store::Store;
use crate::clock::now;
use crate::identity::Caller;
use crate::intent::Tuple;

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

/// A consent to open: who asks, for what, and what binds an answer to it.
pub struct NewConsent {
    /// The agent's SPIFFE ID (an access request's subject id).
    pub agent: String,
    pub owner: Option<String>,
    pub tenant: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    /// The AuthZEN tuple, as shown to the approver.
    pub tuple: serde_json::Value,
    /// Binds an answer to one exact request.
    pub digest: String,
    /// What an approval window covers.
    pub tuple_key: String,
    /// For the approver (the CIBA binding message).
    pub message: Option<String>,
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

impl Consents {
    /// Gate 4: lets the request through on an approval that covers it, or asks a person
    /// (holding the request, or answering at once in async mode).
    pub async fn ask(self: &Arc<Self>, ask: Ask<'_>) -> Result<Granted, Refused> {
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
            None if !self.can_open() => {
                return Err(Refused::Unavailable(
                    "this request needs a person's approval, and the fleet's bus is unreachable: a consent opened now could be seen and answered only here; retry when the bus is back".into(),
                ));
            }
            None => {
                let t = ask.tuple;
                let new = NewConsent {
                    agent: ask.caller.spiffe_id.clone(),
                    owner: ask.caller.owner.clone(),
                    tenant: ask.caller.tenant.clone(),
                    action: t.action.to_string(),
                    resource_type: t.resource_type.to_string(),
                    resource_id: t.resource_id.clone(),
                    tuple: t.json.clone(),
                    digest: ask.digest.clone(),
                    tuple_key,
                    message: ask.message.map(str::to_owned),
                };
                self.create(new, now)?
            }
        };
        match self.config.mode {
            Mode::Async => Err(Refused::Pending {
                id: consent.id,
                binding_code: consent.binding_code,
                expires: consent.expires,
                why: ask.why,
                retry_after: self.config.retry_after,
            }),
            Mode::Hold => self.hold(&consent).await,
        }
    }

    /// Waits for the answer, up to the consent's expiry. Dropped (the agent went away),
    /// the last waiter cancels the consent.
    async fn hold(self: &Arc<Self>, consent: &Consent) -> Result<Granted, Refused> {
        let live = self.track(&consent.id);
        let mut rx = live.tx.subscribe();
        if live.waiters.load(Ordering::Relaxed) >= MAX_WAITERS {
            return Err(Refused::TooManyWaiters {
                id: consent.id.clone(),
                waiters: MAX_WAITERS,
            });
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
            .ok_or_else(|| Refused::Unavailable("the consent vanished from the store".into()))?;
        match c.status {
            Status::Approved if c.window_until.is_some() => Ok(granted(&c, "window")),
            Status::Approved => self.use_once(&c),
            Status::Denied => Err(denied(&c)),
            Status::Expired => Err(Refused::TimedOut {
                id: c.id,
                binding_code: c.binding_code,
                timeout: self.config.timeout,
            }),
            Status::Cancelled | Status::Pending => Err(Refused::Cancelled { id: c.id }),
        }
    }

    fn use_once(&self, c: &Consent) -> Result<Granted, Refused> {
        if self.with_store(|s| s.use_once(&c.id))? {
            Ok(granted(c, "once"))
        } else {
            Err(Refused::Used { id: c.id.clone() })
        }
    }

    /// Opens a consent within the bounds: per agent per minute, pending in all and per agent.
    pub(super) fn create(self: &Arc<Self>, new: NewConsent, now: i64) -> Result<Consent, Refused> {
        // Asked-for per minute is bounded too: an agent that disconnects and retries must
        // not page its owner without end.
        let recent = self.with_store(|s| s.created_since(&new.agent, now - 60))?;
        if recent >= ASKED_PER_MINUTE * self.config.max_pending_per_agent {
            return Err(Refused::AskedTooOften {
                recent,
                per_minute: ASKED_PER_MINUTE,
                per_agent: self.config.max_pending_per_agent,
                retry_after: 60,
            });
        }
        let (total, mine) = self.with_store(|s| s.pending_counts(&new.agent))?;
        if total >= self.config.max_pending || mine >= self.config.max_pending_per_agent {
            return Err(Refused::TooManyPending {
                total,
                mine,
                max_pending: self.config.max_pending,
                per_agent: self.config.max_pending_per_agent,
            });
        }
        let taken = self.with_store(Store::pending_codes)?;
        let code = loop {
            let c = binding_code();
            if !taken.contains(&c) {
                break c;
            }
        };
        let consent = Consent {
            id: format!("cns_{}", crate::digest::hex(&rand::random::<[u8; 16]>())),
            agent: new.agent,
            owner: new.owner,
            tenant: new.tenant,
            action: new.action,
            resource_type: new.resource_type,
            resource_id: new.resource_id,
            tuple: new.tuple,
            digest: new.digest,
            tuple_key: new.tuple_key,
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
            c.reason = new.message;
            ciba.clone().ask(self.clone(), c);
        }
        Ok(consent)
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

fn granted(c: &Consent, scope: &'static str) -> Granted {
    Granted {
        id: c.id.clone(),
        scope,
        answered_by: c.answered_by.clone(),
        how: c.how.clone(),
    }
}

fn denied(c: &Consent) -> Refused {
    Refused::Denied {
        id: c.id.clone(),
        by: c.answered_by.clone(),
        how: c.how.clone(),
        reason: c.reason.clone(),
    }
}

/// Agent + action + resource.
fn tuple_key(agent: &str, t: &Tuple) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [agent, &t.action, &t.resource_type, &t.resource_id] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    crate::digest::hex(&ctx.finish().as_ref()[..16])
}

fn binding_code() -> String {
    rand::random::<[u8; 6]>()
        .iter()
        .map(|b| CODE_ALPHABET[(*b as usize) % CODE_ALPHABET.len()] as char)
        .collect()
}
