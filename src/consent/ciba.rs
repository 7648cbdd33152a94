//! OpenID CIBA: ask the agent's owner on their own device (Auth0 Guardian push, or any CIBA
//! provider found by its discovery document), then learn the answer by polling (honouring
//! `interval`, `slow_down` and `Retry-After`) or by ping (the provider POSTs to the admin
//! listener with the bearer `client_notification_token`, and the token endpoint is called
//! once). An `auth_req_id` is only a ticket: if it expires while our consent is still open,
//! the owner is asked again.

mod provider;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::{Notify, watch};

use self::provider::{Outcome, Poll, Provider, Ticket};
use super::config::{CibaConfig, Delivery};
use super::error::ConsentError;
use super::record::{Consent, Status};
use crate::clock::now;

/// Consecutive transport failures while polling before the consent is denied.
const MAX_FAILURES: u32 = 3;

/// What the CIBA client needs of the consents it asks for: to follow one, and to answer it.
pub trait Answers: Send + Sync {
    /// A receiver that changes when consent `id` is answered; `None` when it already was.
    fn watch(&self, id: &str) -> Option<watch::Receiver<Status>>;
    /// Records the CIBA ticket asking for consent `id`.
    fn set_auth_req_id(&self, id: &str, auth_req_id: &str);
    /// Approves consent `id` (once), answered by `by` through `how`.
    fn approved(&self, id: &str, by: &str, how: &str);
    /// Denies consent `id`, answered by `by` through `how`, for `reason`.
    fn denied(&self, id: &str, by: &str, how: &str, reason: &str);
}

/// A CIBA client.
pub struct Ciba {
    provider: Provider,
    notification_url: String,
    /// Ping mode: tickets waiting for the provider's notification, with its bearer token.
    pings: Mutex<HashMap<String, (String, Arc<Notify>)>>,
}

impl Ciba {
    /// Builds the client; `default_notification_url` is its ping endpoint on the admin
    /// listener, used unless `notification_url` is configured.
    pub fn new(
        config: &CibaConfig,
        tls: rustls::ClientConfig,
        default_notification_url: String,
    ) -> Result<Ciba, ConsentError> {
        let provider = Provider::new(config, tls)?;
        let notification_url = if config.notification_url.is_empty() {
            default_notification_url
        } else {
            config.notification_url.clone()
        };
        Ok(Ciba {
            provider,
            notification_url,
            pings: Mutex::default(),
        })
    }

    /// Where the provider must send pings: register it as the client's
    /// `backchannel_client_notification_endpoint`.
    pub fn notification_url(&self) -> &str {
        &self.notification_url
    }

    /// The configured delivery mode.
    pub fn delivery(&self) -> Delivery {
        self.provider.config.delivery
    }

    /// Asks for consent `c` in the background until it is answered or closed.
    pub fn ask(self: Arc<Self>, consents: Arc<dyn Answers>, c: Consent) {
        tokio::spawn(async move { self.run(&*consents, c).await });
    }

    /// The ping endpoint: wakes the ticket `auth_req_id` if `bearer` is its notification
    /// token. Returns whether it was.
    pub fn notify(&self, auth_req_id: &str, bearer: &str) -> bool {
        let pings = self.pings.lock().unwrap_or_else(|p| p.into_inner());
        match pings.get(auth_req_id) {
            Some((token, wake))
                if aws_lc_rs::constant_time::verify_slices_are_equal(
                    token.as_bytes(),
                    bearer.as_bytes(),
                )
                .is_ok() =>
            {
                wake.notify_one();
                true
            }
            _ => false,
        }
    }

    async fn run(&self, consents: &dyn Answers, c: Consent) {
        let user = self.user(&c);
        let Some(mut status) = consents.watch(&c.id) else {
            return;
        };
        loop {
            if *status.borrow() != Status::Pending {
                return;
            }
            let remaining = c.expires - now();
            if remaining <= 0 {
                return;
            }
            let ping_token = (self.provider.config.delivery == Delivery::Ping)
                .then(|| URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
            let ticket = match self
                .provider
                .backchannel(&c, &user, remaining as u64, ping_token.as_deref())
                .await
            {
                Ok(t) => t,
                Err(reason) => {
                    consents.denied(&c.id, "agentgate", "ciba", &reason);
                    return;
                }
            };
            consents.set_auth_req_id(&c.id, &ticket.auth_req_id);
            tracing::info!(consent = %c.id, auth_req_id = %ticket.auth_req_id, user = %user, "CIBA request sent");
            let outcome = match &ping_token {
                None => self.poll(&ticket, &mut status).await,
                Some(token) => self.await_ping(&ticket, token, &mut status).await,
            };
            match outcome {
                Outcome::Approved => {
                    consents.approved(&c.id, &user, "ciba");
                    return;
                }
                Outcome::Denied(reason) => {
                    consents.denied(&c.id, &user, "ciba", &reason);
                    return;
                }
                Outcome::Failed(reason) => {
                    consents.denied(&c.id, "agentgate", "ciba", &reason);
                    return;
                }
                Outcome::Closed => return,
                Outcome::Expired => {
                    tracing::info!(consent = %c.id, "CIBA request expired; asking again while the consent is open");
                }
            }
        }
    }

    /// The provider's user id for the consent's owner.
    fn user(&self, c: &Consent) -> String {
        let owner = c.owner.clone().unwrap_or_default();
        self.provider
            .config
            .users
            .get(&owner)
            .cloned()
            .unwrap_or(owner)
    }

    /// Polls the token endpoint until the ticket resolves.
    async fn poll(&self, t: &Ticket, status: &mut watch::Receiver<Status>) -> Outcome {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(t.expires_in);
        let mut interval = t.interval;
        let mut failures = 0;
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(interval)) => {}
                _ = status.changed() => return Outcome::Closed,
                () = tokio::time::sleep_until(deadline) => return Outcome::Expired,
            }
            match self.provider.token(&t.auth_req_id).await {
                Poll::Done(outcome) => return outcome,
                Poll::Pending => failures = 0,
                Poll::SlowDown(next) => {
                    failures = 0;
                    interval = next.unwrap_or(interval + 5).max(interval + 1);
                }
                Poll::Transport(reason) => {
                    failures += 1;
                    if failures >= MAX_FAILURES {
                        return Outcome::Failed(format!(
                            "the CIBA provider could not be reached {failures} times in a row: {reason}"
                        ));
                    }
                }
            }
        }
    }

    /// Waits for the provider's ping, then asks the token endpoint once.
    async fn await_ping(
        &self,
        t: &Ticket,
        token: &str,
        status: &mut watch::Receiver<Status>,
    ) -> Outcome {
        let wake = Arc::new(Notify::new());
        self.pings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(t.auth_req_id.clone(), (token.to_owned(), wake.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(t.expires_in);
        let outcome = loop {
            tokio::select! {
                () = wake.notified() => {}
                _ = status.changed() => break Outcome::Closed,
                () = tokio::time::sleep_until(deadline) => {
                    // A lost ping must not lose the answer: ask once more before re-asking.
                    break match self.provider.token(&t.auth_req_id).await {
                        Poll::Done(o) => o,
                        _ => Outcome::Expired,
                    };
                }
            }
            // After a ping the answer is there: retry a failed call a few times, briefly.
            let mut failures = 0;
            let polled = loop {
                match self.provider.token(&t.auth_req_id).await {
                    Poll::Transport(reason) if failures + 1 < MAX_FAILURES => {
                        failures += 1;
                        tracing::warn!(auth_req_id = %t.auth_req_id, error = %reason, "CIBA token call after a ping failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    other => break other,
                }
            };
            match polled {
                Poll::Done(o) => break o,
                Poll::Pending | Poll::SlowDown(_) => {}
                Poll::Transport(reason) => {
                    break Outcome::Failed(format!(
                        "the CIBA provider could not be reached {MAX_FAILURES} times in a row: {reason}"
                    ));
                }
            }
        };
        self.pings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&t.auth_req_id);
        outcome
    }
}
