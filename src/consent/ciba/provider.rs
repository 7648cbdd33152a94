//! The CIBA provider's endpoints: discovery, the backchannel authentication request, and
//! the token request that learns the owner's answer. Calls are bounded in time and size,
//! and authenticated as our client.

use std::sync::Mutex;
use std::time::Duration;

use crate::consent::config::{CibaConfig, Delivery, HintFormat};
use crate::consent::error::ConsentError;
use crate::consent::record::Consent;
use crate::outbound::{FetchError, client_auth, http_client, load_secret, refused, unreachable};
use crate::secret::Secret;

/// The CIBA grant type.
const CIBA_GRANT: &str = "urn:openid:params:grant-type:ciba";
/// Poll interval when the provider names none (CIBA Core §7.3).
const DEFAULT_INTERVAL: u64 = 5;
/// Bound on one call to the provider.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// The provider's endpoints, from discovery.
#[derive(Clone)]
struct Endpoints {
    backchannel: String,
    token: String,
}

/// One backchannel authentication request the provider accepted.
pub(super) struct Ticket {
    pub(super) auth_req_id: String,
    pub(super) expires_in: u64,
    pub(super) interval: u64,
}

/// How one ticket ended.
pub(super) enum Outcome {
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

/// A CIBA provider, as our client sees it.
pub(super) struct Provider {
    pub(super) config: CibaConfig,
    http: reqwest::Client,
    secret: Secret,
    endpoints: Mutex<Option<Endpoints>>,
}

impl Provider {
    /// Loads the client secret and builds the HTTP client.
    pub(super) fn new(
        config: &CibaConfig,
        tls: rustls::ClientConfig,
    ) -> Result<Provider, ConsentError> {
        let secret = load_secret(&config.client_secret_env, &config.client_secret_file)
            .map_err(ConsentError::Setup)?;
        // No idle connections kept: polls come seconds apart, often just as the provider
        // closes an idle keep-alive connection, and a POST lost that way is not retried.
        let http = http_client(tls, CALL_TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| ConsentError::Setup(e.to_string()))?;
        Ok(Provider {
            config: config.clone(),
            http,
            secret,
            endpoints: Mutex::default(),
        })
    }

    /// Sends the backchannel authentication request.
    pub(super) async fn backchannel(
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
        let message = binding_message(&c.binding_code, &text);
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

    /// One token request for the ticket.
    pub(super) async fn token(&self, auth_req_id: &str) -> Poll {
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
            crate::outbound::check_endpoint(u)?;
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
pub(super) enum Poll {
    Done(Outcome),
    Pending,
    SlowDown(Option<u64>),
    Transport(String),
}

/// Makes a CIBA `binding_message`: the code, then `text` (the policy's, or action and
/// resource), in the characters Auth0 accepts (others become `.`, spaces `_`), ≤ 64.
fn binding_message(code: &str, text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| match c {
            ' ' => '_',
            c if c.is_ascii_alphanumeric() || "+-_.,:#".contains(c) => c,
            _ => '.',
        })
        .collect();
    let mut msg = format!("{code}:{clean}");
    msg.truncate(64);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_messages_use_only_the_allowed_characters() {
        let m = binding_message("K7Q2XZ", "bot: github.issues.create acme/web ✓");
        assert_eq!(m, "K7Q2XZ:bot:_github.issues.create_acme.web_.");
        let long = binding_message("K7Q2XZ", &"x".repeat(100));
        assert_eq!(long.len(), 64);
        assert!(long.starts_with("K7Q2XZ:"));
    }
}
