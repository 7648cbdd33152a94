//! Webhooks: consent and PANIC events POSTed to configured endpoints, signed per the
//! Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`, `webhook-signature:
//! v1,<base64 HMAC-SHA256>`). Delivery runs in the background from a bounded queue with
//! retries and backoff; a full queue or a dead endpoint is logged and counted, and never
//! slows a request.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

/// Events a webhook can subscribe to.
pub const EVENTS: [&str; 6] = [
    "consent.requested",
    "consent.approved",
    "consent.denied",
    "consent.expired",
    "consent.cancelled",
    "agent.panic",
];
/// Events waiting for delivery per endpoint; beyond it its new events are dropped (and
/// counted), so a dead endpoint never holds up another.
const QUEUE: usize = 1000;
/// Deliveries in flight at once per endpoint.
const IN_FLIGHT: usize = 4;
/// Delays before the 2nd, 3rd, … attempt.
const BACKOFF_MS: [u64; 5] = [500, 1000, 2000, 4000, 8000];
/// Bound on one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// https, or http on loopback.
    pub url: String,
    /// Environment variable holding the `whsec_…` secret.
    pub secret_env: String,
    /// File (0600) holding the `whsec_…` secret.
    pub secret_file: PathBuf,
    /// Events to send; empty means all.
    pub events: Vec<String>,
}

impl WebhookConfig {
    /// Checks the entry; `Err` is the message.
    pub fn check(&self) -> Result<(), String> {
        crate::outbound::check_endpoint(&self.url)?;
        if self.secret_env.is_empty() == self.secret_file.as_os_str().is_empty() {
            return Err(format!(
                "{}: set exactly one of secret_env and secret_file",
                self.url
            ));
        }
        if let Some(e) = self.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
            return Err(format!("unknown event {e:?}; one of {}", EVENTS.join(", ")));
        }
        Ok(())
    }
}

/// Delivery counters (for logs now, `/metrics` later).
#[derive(Debug, Default)]
pub struct Stats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

/// An endpoint with its signing key.
struct Endpoint {
    url: String,
    key: hmac::Key,
}

struct Event {
    kind: &'static str,
    body: Arc<str>,
    id: String,
}

/// An endpoint's subscribed events (empty: all) and its delivery queue.
type Queue = (Vec<String>, mpsc::Sender<Arc<Event>>);

/// The webhook sender: one queue per endpoint.
pub struct Webhooks {
    queues: Vec<Queue>,
    pub stats: Arc<Stats>,
    /// A tenant's webhooks: the instance's, which get every tenant's events too.
    parent: Option<Arc<Webhooks>>,
}

impl Webhooks {
    /// No endpoints: events go nowhere.
    pub fn none() -> Webhooks {
        Webhooks {
            queues: Vec::new(),
            stats: Arc::default(),
            parent: None,
        }
    }

    /// Loads every endpoint's secret and starts the dispatcher. A missing secret is a
    /// startup error naming the variable or file.
    pub fn start(configs: &[WebhookConfig], tls: rustls::ClientConfig) -> Result<Webhooks, String> {
        if configs.is_empty() {
            return Ok(Webhooks::none());
        }
        let stats = Arc::new(Stats::default());
        Ok(Webhooks {
            queues: Self::spawn(configs, tls, &stats)?,
            stats,
            parent: None,
        })
    }

    /// A tenant's webhooks: its own `configs`, and every event also goes to `instance`
    /// (whose delivery counters it shares).
    pub fn start_tenant(
        configs: &[WebhookConfig],
        tls: rustls::ClientConfig,
        instance: Arc<Webhooks>,
    ) -> Result<Webhooks, String> {
        let queues = if configs.is_empty() {
            Vec::new()
        } else {
            Self::spawn(configs, tls, &instance.stats)?
        };
        Ok(Webhooks {
            queues,
            stats: instance.stats.clone(),
            parent: Some(instance),
        })
    }

    /// One delivery task and queue per endpoint.
    fn spawn(
        configs: &[WebhookConfig],
        tls: rustls::ClientConfig,
        stats: &Arc<Stats>,
    ) -> Result<Vec<Queue>, String> {
        let http = crate::outbound::http_client(tls, ATTEMPT_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let mut queues = Vec::new();
        for c in configs {
            c.check()?;
            let endpoint = Endpoint {
                url: c.url.clone(),
                key: hmac::Key::new(hmac::HMAC_SHA256, &secret(c)?),
            };
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(serve(rx, Arc::new(endpoint), http.clone(), stats.clone()));
            queues.push((c.events.clone(), tx));
        }
        Ok(queues)
    }

    /// Queues `kind` with `data` for every subscribed endpoint (a tenant's, and then the
    /// instance's); never waits.
    pub fn emit(&self, kind: &'static str, data: serde_json::Value) {
        let Some(event) = self.event(kind, data, true) else {
            return;
        };
        self.push(&event);
        if let Some(parent) = &self.parent {
            parent.push(&event);
        }
    }

    /// Like [`emit`](Self::emit), but only to this value's own endpoints (not the
    /// instance's): for an event the instance's endpoints get in another form.
    pub fn emit_own(&self, kind: &'static str, data: serde_json::Value) {
        if let Some(event) = self.event(kind, data, false) {
            self.push(&event);
        }
    }

    /// The event to send, or `None` when nobody would get it.
    fn event(
        &self,
        kind: &'static str,
        data: serde_json::Value,
        with_parent: bool,
    ) -> Option<Arc<Event>> {
        let parent_listens =
            with_parent && self.parent.as_ref().is_some_and(|p| !p.queues.is_empty());
        if self.queues.is_empty() && !parent_listens {
            return None;
        }
        let now = time::OffsetDateTime::now_utc();
        let timestamp = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let body = serde_json::json!({"type": kind, "timestamp": timestamp, "data": data});
        let id = format!("msg_{}", crate::digest::hex(&rand::random::<[u8; 12]>()));
        Some(Arc::new(Event {
            kind,
            body: body.to_string().into(),
            id,
        }))
    }

    /// Queues `event` for this value's subscribed endpoints.
    fn push(&self, event: &Arc<Event>) {
        let kind = event.kind;
        for (events, tx) in &self.queues {
            if !(events.is_empty() || events.iter().any(|k| k == kind)) {
                continue;
            }
            if tx.try_send(event.clone()).is_err() {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    event = kind,
                    "webhook queue full (endpoint not keeping up); event dropped"
                );
            }
        }
    }
}

/// Delivers one endpoint's events, at most [`IN_FLIGHT`] at a time.
async fn serve(
    mut rx: mpsc::Receiver<Arc<Event>>,
    endpoint: Arc<Endpoint>,
    http: reqwest::Client,
    stats: Arc<Stats>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(event) = rx.recv().await else {
            return;
        };
        let (endpoint, http, stats) = (endpoint.clone(), http.clone(), stats.clone());
        tokio::spawn(async move {
            deliver(&endpoint, &http, &event, &stats).await;
            drop(slot);
        });
    }
}

/// Sends one event to one endpoint, retrying with backoff.
async fn deliver(e: &Endpoint, http: &reqwest::Client, event: &Event, stats: &Stats) {
    let mut last = String::new();
    for attempt in 0..=BACKOFF_MS.len() {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(BACKOFF_MS[attempt - 1])).await;
        }
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
        let signature = sign(&e.key, &event.id, &timestamp, &event.body);
        let sent = http
            .post(&e.url)
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", &timestamp)
            .header("webhook-signature", signature)
            .body(event.body.to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(r) => last = format!("answered {}", r.status()),
            Err(err) => last = err.to_string(),
        }
        tracing::warn!(url = %e.url, event = event.kind, id = %event.id, attempt = attempt + 1, error = %last, "webhook delivery failed");
    }
    stats.failed.fetch_add(1, Ordering::Relaxed);
    tracing::error!(url = %e.url, event = event.kind, id = %event.id, error = %last, "webhook not delivered; giving up");
}

/// The Standard Webhooks signature header value.
pub fn sign(key: &hmac::Key, id: &str, timestamp: &str, body: &str) -> String {
    let tag = hmac::sign(key, format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(tag.as_ref()))
}

/// The signing key from a `whsec_<base64>` secret.
fn secret(c: &WebhookConfig) -> Result<Vec<u8>, String> {
    let text = if !c.secret_env.is_empty() {
        std::env::var(&c.secret_env).map_err(|_| {
            format!(
                "webhook {}: secret_env names {}, which is not set",
                c.url, c.secret_env
            )
        })?
    } else {
        let bytes = crate::state::read_private(&c.secret_file)
            .map_err(|e| format!("webhook {}: {e}", c.url))?;
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let text = text.trim();
    let b64 = text.strip_prefix("whsec_").unwrap_or(text);
    STANDARD
        .decode(b64)
        .ok()
        .filter(|k| k.len() >= 16)
        .ok_or_else(|| {
            format!(
                "webhook {}: the secret must be whsec_<base64 of at least 16 bytes>",
                c.url
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn checks_entries() {
        let mut c = WebhookConfig {
            url: "https://hooks.example/x".into(),
            secret_env: "S".into(),
            ..WebhookConfig::default()
        };
        c.check().unwrap();
        c.events = vec!["consent.approved".into(), "nope".into()];
        assert!(c.check().unwrap_err().contains("nope"));
        c.events.clear();
        c.url = "http://hooks.example/x".into();
        assert!(c.check().is_err());
    }
}
