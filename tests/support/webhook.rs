//! A webhook receiver for the consent-gate tests: a real HTTPS server on 127.0.0.1:0
//! with a certificate for IP 127.0.0.1 from the test PKI's upstream CA (the CA the
//! proxy trusts through `upstream.extra_roots`), or plain HTTP. It records every
//! request (method, path, headers, body) and answers a configurable status after a
//! configurable delay. [`verify_standard_webhook`] checks a Standard Webhooks
//! signature (<https://www.standardwebhooks.com/>).

use super::certs::Pki;
use aws_lc_rs::hmac;
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Path the tests give the proxy (any path is accepted and recorded).
pub const HOOK_PATH: &str = "/hook";
/// Largest accepted `webhook-timestamp` distance from now (the Standard Webhooks
/// libraries' default).
pub const TIMESTAMP_TOLERANCE_SECS: u64 = 5 * 60;

/// One request that reached the receiver.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names lowercase, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the request head arrived.
    pub at: Instant,
    /// Whether it came over TLS.
    pub tls: bool,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("webhook body is not JSON ({e}): {:?}", self.text()))
    }

    /// [`verify_standard_webhook`] on this request.
    pub fn verify(&self, secret_whsec: &str) -> Result<(), String> {
        verify_standard_webhook(secret_whsec, &self.headers, &self.body)
    }
}

struct State {
    received: Mutex<Vec<Received>>,
    status: AtomicU16,
    delay_ms: AtomicU64,
    arrived: Notify,
}

/// A running receiver; stops on drop.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    /// `https://127.0.0.1:<port>/hook` (or `http://…`).
    pub url: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebhookReceiver {
    /// HTTPS (h2 and http/1.1) with a leaf for IP 127.0.0.1 signed by `pki.upstream_ca`.
    pub async fn start(pki: &Pki) -> WebhookReceiver {
        let leaf = pki.upstream_ca.leaf(&["127.0.0.1"], false);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(leaf.chain.clone(), leaf.key())
            .expect("webhook receiver certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::listen(Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    /// Plain HTTP (like the proxy's own loopback admin endpoint).
    pub async fn start_plain() -> WebhookReceiver {
        Self::listen(None).await
    }

    async fn listen(acceptor: Option<TlsAcceptor>) -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind webhook receiver");
        let addr = listener.local_addr().expect("webhook receiver addr");
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{addr}{HOOK_PATH}");
        let state = Arc::new(State {
            received: Mutex::new(Vec::new()),
            status: AtomicU16::new(200),
            delay_ms: AtomicU64::new(0),
            arrived: Notify::new(),
        });
        let task = tokio::spawn(accept_loop(listener, acceptor, state.clone()));
        WebhookReceiver {
            addr,
            url,
            state,
            task,
        }
    }

    /// The status every request is answered with from now on (200 at start).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// How long each answer waits from now on (0 at start; recorded on arrival anyway).
    pub fn set_delay(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("webhook log").clone()
    }

    /// Waits until at least `n` requests arrived (panics after `timeout`); returns all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.state.arrived.notified();
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let received = self.received();
                assert!(
                    received.len() >= n,
                    "webhook receiver: {} of {n} requests within {timeout:?}: {received:#?}",
                    received.len()
                );
                return received;
            }
        }
    }

    /// The received webhooks whose JSON `type` is `event`.
    pub fn events(&self, event: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| {
                serde_json::from_slice::<serde_json::Value>(&r.body)
                    .is_ok_and(|v| v["type"] == event)
            })
            .collect()
    }
}

async fn accept_loop(listener: TcpListener, acceptor: Option<TlsAcceptor>, state: Arc<State>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match acceptor {
                None => {
                    let svc = service_fn(move |req| handle(req, false, state.clone()));
                    let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                }
                Some(acceptor) => {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req| handle(req, true, state.clone()));
                    let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                }
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    tls: bool,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let received = Received {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        at,
        tls,
    };
    state.received.lock().expect("webhook log").push(received);
    state.arrived.notify_waiters();

    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = StatusCode::from_u16(state.status.load(Ordering::SeqCst))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    Ok(resp)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The Standard Webhooks check, with the timestamp within
/// [`TIMESTAMP_TOLERANCE_SECS`] of now.
pub fn verify_standard_webhook(
    secret_whsec: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    verify_standard_webhook_at(secret_whsec, headers, body, Some(now))
}

/// The Standard Webhooks check: `webhook-id`, `webhook-timestamp` (unix seconds; within
/// [`TIMESTAMP_TOLERANCE_SECS`] of `now` unless `now` is None) and `webhook-signature`
/// — space-separated `v1,<base64>` entries, one of which must be the base64
/// HMAC-SHA256 of `"{id}.{timestamp}.{body}"` keyed with the base64-decoded secret
/// (the part after `whsec_`).
pub fn verify_standard_webhook_at(
    secret_whsec: &str,
    headers: &[(String, String)],
    body: &[u8],
    now: Option<u64>,
) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(secret_whsec.strip_prefix("whsec_").unwrap_or(secret_whsec))
        .map_err(|e| format!("secret is not whsec_<base64>: {e}"))?;
    let id = header(headers, "webhook-id")
        .filter(|v| !v.is_empty())
        .ok_or("missing webhook-id")?;
    let timestamp = header(headers, "webhook-timestamp").ok_or("missing webhook-timestamp")?;
    let seconds: u64 = timestamp
        .parse()
        .map_err(|_| format!("webhook-timestamp {timestamp:?} is not unix seconds"))?;
    if let Some(now) = now {
        if now.abs_diff(seconds) > TIMESTAMP_TOLERANCE_SECS {
            return Err(format!(
                "webhook-timestamp {seconds} is {} s away from now ({now})",
                now.abs_diff(seconds)
            ));
        }
    }
    let signatures = header(headers, "webhook-signature").ok_or("missing webhook-signature")?;

    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    for entry in signatures.split(' ').filter(|e| !e.is_empty()) {
        let Some(sig) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(sig) = b64.decode(sig) else {
            continue;
        };
        if hmac::verify(&key, &signed, &sig).is_ok() {
            return Ok(());
        }
    }
    Err(format!(
        "no v1 signature in {signatures:?} matches HMAC-SHA256 of \"{id}.{timestamp}.<{} body bytes>\"",
        body.len()
    ))
}

/// A Standard Webhooks signature header value (`v1,<base64>`), for tests that sign.
pub fn sign_standard_webhook(secret_whsec: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(secret_whsec.strip_prefix("whsec_").unwrap_or(secret_whsec))
        .expect("secret is whsec_<base64>");
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!("v1,{}", b64.encode(hmac::sign(&key, &signed).as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks spec (also the reference libraries' test).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: u64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(id: &str, timestamp: &str, signature: &str) -> Vec<(String, String)> {
        vec![
            ("Webhook-Id".to_owned(), id.to_owned()),
            ("webhook-timestamp".to_owned(), timestamp.to_owned()),
            ("webhook-signature".to_owned(), signature.to_owned()),
        ]
    }

    #[test]
    fn standard_webhooks_spec_vector() {
        let ts = TIMESTAMP.to_string();
        assert_eq!(
            sign_standard_webhook(SECRET, ID, TIMESTAMP, BODY),
            SIGNATURE
        );
        assert_eq!(
            verify_standard_webhook_at(SECRET, &headers(ID, &ts, SIGNATURE), BODY, Some(TIMESTAMP)),
            Ok(())
        );
        // One good entry among several is enough (key rotation).
        let several = format!("v1,AAAA v1a,xyz {SIGNATURE}");
        assert!(
            verify_standard_webhook_at(SECRET, &headers(ID, &ts, &several), BODY, None).is_ok()
        );
        // Anything changed fails.
        let bad = [
            verify_standard_webhook_at(
                SECRET,
                &headers(ID, &ts, SIGNATURE),
                b"{\"test\":2432232314}",
                None,
            ),
            verify_standard_webhook_at(SECRET, &headers("msg_other", &ts, SIGNATURE), BODY, None),
            verify_standard_webhook_at(SECRET, &headers(ID, "1614265331", SIGNATURE), BODY, None),
            verify_standard_webhook_at(
                "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                &headers(ID, &ts, SIGNATURE),
                BODY,
                None,
            ),
            verify_standard_webhook_at(
                SECRET,
                &headers(ID, &ts, "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
                BODY,
                None,
            ),
            verify_standard_webhook_at(SECRET, &headers("", &ts, SIGNATURE), BODY, None),
            // Too old for "now".
            verify_standard_webhook_at(
                SECRET,
                &headers(ID, &ts, SIGNATURE),
                BODY,
                Some(TIMESTAMP + 301),
            ),
            verify_standard_webhook(SECRET, &headers(ID, &ts, SIGNATURE), BODY),
        ];
        for (i, result) in bad.iter().enumerate() {
            assert!(result.is_err(), "case {i} verified");
        }
    }
}
