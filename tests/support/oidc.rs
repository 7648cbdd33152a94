//! A real OAuth 2.0 / OpenID Connect provider for the token-gate tests:
//! `tests/support/oidc_provider.mjs`, built on the `oidc-provider` npm package
//! (installed in tests/clients/node_modules by scripts/test). Rotating refresh
//! tokens with reuse detection, RFC 7009 revocation, the Auth0 federated
//! token exchange, and test hooks (`/test/...`) to mint refresh tokens, read
//! counters, ask whether a token is still active and inject token-endpoint faults.

use super::clients::{clean_command, clients_dir};
use super::raw::{RawResponse, within};
use base64::Engine;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin};
use tokio::task::JoinHandle;

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The `client_secret_basic` client.
pub const CLIENT_ID: &str = "agentgate";
/// The `client_secret_post` client.
pub const POST_CLIENT_ID: &str = "agentgate-post";
/// Both clients' secret.
pub const CLIENT_SECRET: &str = "agentgate-secret";
/// Scope of the refresh tokens [`OidcProvider::refresh_token`] mints.
pub const DEFAULT_SCOPE: &str = "openid offline_access";

pub const GRANT_EXCHANGE: &str =
    "urn:auth0:params:oauth:grant-type:token-exchange:federated-connection-access-token";
pub const TOKEN_TYPE_REFRESH: &str = "urn:ietf:params:oauth:token-type:refresh_token";
pub const TOKEN_TYPE_FEDERATED: &str =
    "http://auth0.com/oauth/token-type/federated-connection-access-token";

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/oidc_provider.mjs")
}

/// A running `oidc_provider.mjs`; killed on drop (its stdin closing stops it too),
/// printing its stderr when the test failed.
pub struct OidcProvider {
    /// The issuer, `http://127.0.0.1:<port>`.
    pub url: String,
    pub addr: SocketAddr,
    child: Child,
    _stdin: ChildStdin,
    stderr: Arc<Mutex<String>>,
}

impl OidcProvider {
    /// Starts the provider with access tokens living `access_ttl_secs` and waits
    /// for its READY line.
    pub async fn start(access_ttl_secs: u64) -> OidcProvider {
        assert!(
            clients_dir().join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed in tests/clients/node_modules; run scripts/test \
             (or `npm ci` in tests/clients)"
        );
        let mut cmd = clean_command("node");
        cmd.arg(script())
            .arg("--access-ttl")
            .arg(access_ttl_secs.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("oidc_provider.mjs: cannot start node ({e}); run scripts/test to install it")
        });
        let stdin = child.stdin.take().expect("oidc_provider.mjs stdin");
        let stderr = Arc::new(Mutex::new(String::new()));
        let drain_err = drain(child.stderr.take().expect("stderr"), stderr.clone());
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();

        let line = tokio::time::timeout(READY_TIMEOUT, stdout.next_line()).await;
        let url = match &line {
            Ok(Ok(Some(l))) => l.strip_prefix("READY ").map(str::to_owned),
            _ => None,
        };
        let Some(url) = url else {
            let _ = child.kill().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), drain_err).await;
            panic!(
                "oidc_provider.mjs: no READY line within {READY_TIMEOUT:?} (got {line:?}); \
                 stderr:\n{}",
                stderr.lock().expect("stderr buffer")
            );
        };
        // Anything printed later goes with stderr (nothing is expected; an unread
        // pipe would eventually block the process).
        drain(stdout.into_inner(), stderr.clone());

        let addr: SocketAddr = url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("oidc_provider.mjs: bad READY url {url:?}"));
        OidcProvider {
            url,
            addr,
            child,
            _stdin: stdin,
            stderr,
        }
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.url)
    }

    pub fn revoke_url(&self) -> String {
        format!("{}/token/revocation", self.url)
    }

    /// A fresh refresh token (scope [`DEFAULT_SCOPE`]) for `account`, issued to `client_id`.
    pub async fn refresh_token(&self, account: &str, client_id: &str) -> String {
        self.refresh_token_scoped(account, client_id, DEFAULT_SCOPE)
            .await
    }

    /// A fresh refresh token with `scope` (space-separated; a refresh may ask for a subset).
    pub async fn refresh_token_scoped(
        &self,
        account: &str,
        client_id: &str,
        scope: &str,
    ) -> String {
        let body = json!({ "account": account, "scope": scope, "client_id": client_id });
        let reply = self.hook("POST", "/test/refresh-token", &body).await;
        reply["refresh_token"]
            .as_str()
            .unwrap_or_else(|| panic!("/test/refresh-token: {reply}"))
            .to_owned()
    }

    /// `{refresh_grants, refresh_failures, exchanges, exchange_requests: [{connection,
    /// scope, login_hint, ok}], issued_access_tokens, revocations: [{token,
    /// token_type_hint}], token_requests}`.
    pub async fn stats(&self) -> Value {
        self.hook("GET", "/test/stats", &Value::Null).await
    }

    /// Whether `token` (access, refresh or `fed_` token) is still valid.
    pub async fn active(&self, token: &str) -> bool {
        let reply = self
            .hook("POST", "/test/active", &json!({ "token": token }))
            .await;
        reply["active"]
            .as_bool()
            .unwrap_or_else(|| panic!("/test/active: {reply}"))
    }

    /// How `POST /token` misbehaves: `None` (normal), "down" (503, empty body),
    /// "slow" (answers after `delay_ms`), "garbage" (200 `not json{`), "expired"
    /// (200 with `expires_in: 0`, storage untouched).
    pub async fn fault(&self, mode: Option<&str>, delay_ms: u64) {
        self.hook(
            "POST",
            "/test/fault",
            &json!({ "mode": mode, "delay_ms": delay_ms }),
        )
        .await;
    }

    /// POST of a form to `path`, with HTTP Basic client authentication when `basic`
    /// is given (`client_secret_post` callers put the credentials in `form`).
    pub async fn post_form(
        &self,
        path: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> RawResponse {
        let authorization = basic.map(|(id, secret)| {
            // RFC 6749 §2.3.1: each part form-encoded before base64.
            let pair = format!("{}:{}", form_encode_part(id), form_encode_part(secret));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(a) = &authorization {
            headers.push(("authorization", a));
        }
        self.request("POST", path, &headers, form_encode(form).into_bytes())
            .await
    }

    /// One HTTP/1.1 request on a fresh connection.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> RawResponse {
        let tcp = within("connect to oidc provider", TcpStream::connect(self.addr))
            .await
            .unwrap_or_else(|e| panic!("connect to oidc provider {}: {e}", self.addr));
        let (mut sender, conn) = within(
            "oidc provider handshake",
            http1::handshake(TokioIo::new(tcp)),
        )
        .await
        .expect("h1 handshake with oidc provider");
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::from(body))).expect("request");
        let resp = within("oidc provider response", sender.send_request(req))
            .await
            .unwrap_or_else(|e| panic!("{method} {path} to oidc provider: {e}"));
        RawResponse::from_hyper(resp).await
    }

    /// A test hook call; panics unless it answers 200 with JSON.
    async fn hook(&self, method: &str, path: &str, body: &Value) -> Value {
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let resp = self
            .request(method, path, &[("content-type", "application/json")], body)
            .await;
        assert_eq!(resp.status, 200, "{method} {path}: {}", resp.text());
        resp.json()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!(
                "---- oidc_provider.mjs stderr ----\n{}---- end of oidc_provider.mjs stderr ----",
                self.stderr()
            );
        }
    }
}

/// Copies `src` line by line into `buf` until EOF.
fn drain(src: impl AsyncRead + Unpin + Send + 'static, buf: Arc<Mutex<String>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(src).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut buf = buf.lock().expect("stderr buffer");
            buf.push_str(&line);
            buf.push('\n');
        }
    })
}

/// `application/x-www-form-urlencoded` body from name/value pairs.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode_part(k), form_encode_part(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_encode_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
