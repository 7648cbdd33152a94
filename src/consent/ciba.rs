//! OpenID CIBA: ask the agent's owner on their own device (Auth0 Guardian push, or any CIBA
//! provider found by its discovery document), then learn the answer by polling (honouring
//! `interval`, `slow_down` and `Retry-After`) or by ping (the provider POSTs to the admin
//! listener with the bearer `client_notification_token`, and the token endpoint is called
//! once). An `auth_req_id` is only a ticket: if it expires while our consent is still open,
//! the owner is asked again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::{Notify, watch};

use super::approvals::Consents;
use super::{CibaConfig, Consent, ConsentError, Delivery, HintFormat, Status};
use crate::clock::now;
use crate::vault::Secret;
use crate::vault::fetch::{FetchError, client_auth, load_secret, refused, unreachable};

/// The CIBA grant type.
const CIBA_GRANT: &str = "urn:openid:params:grant-type:ciba";
/// Poll interval when the provider names none (CIBA Core §7.3).
const DEFAULT_INTERVAL: u64 = 5;
/// Bound on one call to the provider.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Consecutive transport failures while polling before the consent is denied.
const MAX_FAILURES: u32 = 3;
/// Largest answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// The provider's endpoints, from discovery.
#[derive(Clone)]
struct Endpoints {
    backchannel: String,
    token: String,
}

/// One backchannel authentication request the provider accepted.
struct Ticket {
    auth_req_id: String,
    expires_in: u64,
    interval: u64,
}

/// How one ticket ended.
enum Outcome {
    Approved,
    /// The owner said no (or let it lapse at the provider).
    Denied(String),
    /// No answer can be had: the provider refused or could not be reached.
    Failed(String),
    /// The ticket expired; ask again if the consent is still open.
    Expired,
    /// The consent was answered or closed elsewhere.
    Closed,
}

/// A CIBA client.
pub struct Ciba {
    config: CibaConfig,
    http: reqwest::Client,
    secret: Secret,
    notification_url: String,
    endpoints: Mutex<Option<Endpoints>>,
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
        let secret = load_secret(&config.client_secret_env, &config.client_secret_file)
            .map_err(ConsentError::Setup)?;
        // No idle connections kept: polls come seconds apart, often just as the provider
        // closes an idle keep-alive connection, and a POST lost that way is not retried.
        let http = crate::vault::fetch::http_client(tls, CALL_TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| ConsentError::Setup(e.to_string()))?;
        let notification_url = if config.notification_url.is_empty() {
            default_notification_url
        } else {
            config.notification_url.clone()
        };
        Ok(Ciba {
            config: config.clone(),
            http,
            secret,
            notification_url,
            endpoints: Mutex::default(),
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
        self.config.delivery
    }

    /// Asks for consent `c` in the background until it is answered or closed.
    pub fn ask(self: Arc<Self>, consents: Arc<Consents>, c: Consent) {
        tokio::spawn(async move { self.run(&consents, c).await });
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

    async fn run(&self, consents: &Consents, c: Consent) {
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
            let ping_token = (self.config.delivery == Delivery::Ping)
                .then(|| URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
            let ticket = match self
                .backchannel(&c, &user, remaining as u64, ping_token.as_deref())
                .await
            {
                Ok(t) => t,
                Err(reason) => {
                    let _ = consents.deny(&c.id, "agentgate", "ciba", Some(&reason));
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
                    let _ = consents.approve(&c.id, &user, "ciba", None);
                    return;
                }
                Outcome::Denied(reason) => {
                    let _ = consents.deny(&c.id, &user, "ciba", Some(&reason));
                    return;
                }
                Outcome::Failed(reason) => {
                    let _ = consents.deny(&c.id, "agentgate", "ciba", Some(&reason));
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
        self.config.users.get(&owner).cloned().unwrap_or(owner)
    }

    /// Sends the backchannel authentication request.
    async fn backchannel(
        &self,
        c: &Consent,
        user: &str,
        remaining: u64,
        ping_token: Option<&str>,
    ) -> Result<Ticket, String> {
        if user.is_empty() {
            return Err(format!(
                "agent {} has no owner to ask; register it with --owner or map it in consent.ciba.users",
                c.agent
            ));
        }
        let endpoints = self.endpoints().await?;
        let hint = match self.config.login_hint_format {
            HintFormat::Plain => user.to_owned(),
            HintFormat::IssSub => {
                let iss = if self.config.login_hint_iss.is_empty() {
                    format!("{}/", self.config.issuer.trim_end_matches('/'))
                } else {
                    self.config.login_hint_iss.clone()
                };
                serde_json::json!({"format": "iss_sub", "iss": iss, "sub": user}).to_string()
            }
        };
        let text = c
            .reason
            .clone()
            .unwrap_or_else(|| format!("{} {}", c.action, c.resource_id));
        let message = super::binding_message(&c.binding_code, &text);
        let expiry = self
            .config
            .requested_expiry
            .as_secs()
            .min(remaining)
            .max(1)
            .to_string();
        let details = (!self.config.authorization_details_type.is_empty()).then(|| {
            let t = &c.tuple;
            serde_json::json!([{
                "type": self.config.authorization_details_type,
                "subject": t["subject"],
                "action": t["action"],
                "resource": t["resource"],
                "context": {"host": t["context"]["host"], "path": t["context"]["path"], "binding_code": c.binding_code},
            }])
            .to_string()
        });
        let mut form = vec![
            ("scope", self.config.scope.as_str()),
            ("login_hint", hint.as_str()),
            ("binding_message", message.as_str()),
            ("requested_expiry", expiry.as_str()),
        ];
        if !self.config.audience.is_empty() {
            form.push(("audience", &self.config.audience));
        }
        if let Some(d) = &details {
            form.push(("authorization_details", d));
        }
        if let Some(t) = ping_token {
            form.push(("client_notification_token", t));
        }
        let url = &endpoints.backchannel;
        let (status, _, answer) = self
            .send(url, self.post_form(url, form))
            .await
            .map_err(|e| e.to_string())?;
        if status != 200 {
            let e = refused(url, status, &answer).to_string();
            return Err(if e.contains("unknown_user_id") {
                format!(
                    "the CIBA provider does not know user {user} (unknown_user_id); map the owner in consent.ciba.users"
                )
            } else {
                format!("the CIBA request was refused: {e}")
            });
        }
        let v: serde_json::Value = serde_json::from_slice(&answer)
            .map_err(|e| format!("{url} answered something that is not JSON: {e}"))?;
        let auth_req_id = v["auth_req_id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{url} answered without an auth_req_id"))?;
        Ok(Ticket {
            auth_req_id: auth_req_id.to_owned(),
            // Bounded by what we asked for: a provider's number never outlives our consent.
            expires_in: v["expires_in"]
                .as_u64()
                .unwrap_or(remaining)
                .clamp(1, remaining.max(1)),
            interval: v["interval"]
                .as_u64()
                .unwrap_or(DEFAULT_INTERVAL)
                .clamp(1, 60),
        })
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
            match self.token(&t.auth_req_id).await {
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
                    break match self.token(&t.auth_req_id).await {
                        Poll::Done(o) => o,
                        _ => Outcome::Expired,
                    };
                }
            }
            // After a ping the answer is there: retry a failed call a few times, briefly.
            let mut failures = 0;
            let polled = loop {
                match self.token(&t.auth_req_id).await {
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

    /// One token request for the ticket.
    async fn token(&self, auth_req_id: &str) -> Poll {
        let endpoints = match self.endpoints().await {
            Ok(e) => e,
            Err(e) => return Poll::Transport(e),
        };
        let url = &endpoints.token;
        let form = vec![("grant_type", CIBA_GRANT), ("auth_req_id", auth_req_id)];
        let (status, retry_after, answer) = match self.send(url, self.post_form(url, form)).await {
            Ok(r) => r,
            Err(e) => return Poll::Transport(e.to_string()),
        };
        if status == 200 {
            return Poll::Done(Outcome::Approved);
        }
        let v: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
        match v["error"].as_str() {
            Some("authorization_pending") => Poll::Pending,
            Some("slow_down") => Poll::SlowDown(v["interval"].as_u64().or(retry_after)),
            Some("expired_token") => Poll::Done(Outcome::Expired),
            Some("access_denied") => {
                let said = v["error_description"]
                    .as_str()
                    .map(|d| format!(": {}", d.chars().take(200).collect::<String>()))
                    .unwrap_or_default();
                Poll::Done(Outcome::Denied(format!(
                    "the owner denied it at the CIBA provider, or let it expire there (access_denied){said}"
                )))
            }
            _ if status >= 500 => Poll::Transport(refused(url, status, &answer).to_string()),
            _ => Poll::Done(Outcome::Failed(format!(
                "the CIBA provider refused the poll: {}",
                refused(url, status, &answer)
            ))),
        }
    }

    /// A form POST to `url`, authenticated as our client.
    fn post_form<'a>(
        &'a self,
        url: &str,
        form: Vec<(&'a str, &'a str)>,
    ) -> reqwest::RequestBuilder {
        client_auth(
            self.http.post(url),
            self.config.client_auth,
            &self.config.client_id,
            &self.secret,
            form,
        )
    }

    /// The provider's endpoints, discovered once (retried on the next use if it failed).
    async fn endpoints(&self) -> Result<Endpoints, String> {
        if let Some(e) = self
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(e);
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let (status, _, body) = self
            .send(&url, self.http.get(&url))
            .await
            .map_err(|e| format!("CIBA discovery failed: {e}"))?;
        if status != 200 {
            return Err(format!("CIBA discovery: {url} answered {status}"));
        }
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("CIBA discovery: {url} is not JSON: {e}"))?;
        let field = |k: &str| {
            doc[k].as_str().map(str::to_owned).ok_or_else(|| {
                format!("CIBA discovery: {url} has no {k} (is CIBA enabled for this issuer?)")
            })
        };
        let endpoints = Endpoints {
            backchannel: field("backchannel_authentication_endpoint")?,
            token: field("token_endpoint")?,
        };
        for u in [&endpoints.backchannel, &endpoints.token] {
            crate::vault::fetch::check_endpoint(u)?;
        }
        let wanted = match self.config.delivery {
            Delivery::Poll => "poll",
            Delivery::Ping => "ping",
        };
        let modes = doc["backchannel_token_delivery_modes_supported"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !modes.is_empty() && !modes.iter().any(|m| m == wanted) {
            return Err(format!(
                "the CIBA provider does not support {wanted} delivery (it offers {}); set consent.ciba.delivery",
                serde_json::Value::Array(modes)
            ));
        }
        *self.endpoints.lock().unwrap_or_else(|p| p.into_inner()) = Some(endpoints.clone());
        Ok(endpoints)
    }

    /// Sends `req`; returns status, `Retry-After` seconds and at most [`MAX_ANSWER`] bytes.
    async fn send(
        &self,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Option<u64>, Vec<u8>), FetchError> {
        let mut resp = req
            .send()
            .await
            .map_err(|e| unreachable(url, &e, CALL_TIMEOUT))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| unreachable(url, &e, CALL_TIMEOUT))?
        {
            if body.len() + chunk.len() > MAX_ANSWER {
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, retry_after, body))
    }
}

/// One poll's result.
enum Poll {
    Done(Outcome),
    Pending,
    SlowDown(Option<u64>),
    Transport(String),
}
