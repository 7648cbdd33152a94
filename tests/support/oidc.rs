//! A real OAuth 2.0 / OpenID Connect provider for the token-gate and consent-gate
//! tests: `tests/support/oidc_provider.mjs`, built on the `oidc-provider` npm package
//! (installed in tests/clients/node_modules by scripts/test). Rotating refresh
//! tokens with reuse detection, RFC 7009 revocation, the Auth0 federated token
//! exchange, OpenID CIBA (poll and ping, started with [`OidcProvider::start_ciba`]),
//! and test hooks (`/test/...`) to mint refresh tokens, read counters, ask whether a
//! token is still active, inject token-endpoint faults, and play the end-user
//! approving or denying CIBA requests (through oidc-provider's own
//! `backchannelResult`, so the client sees exactly what a real provider sends).

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

/// The CIBA `client_secret_basic` client (started with [`OidcProvider::start_ciba`]).
pub const CIBA_CLIENT_ID: &str = "agentgate-ciba";
/// The CIBA `client_secret_post` client. Both CIBA clients are held to their
/// registered method: the other one is 401 `invalid_client` (Auth0 does the same;
/// stock oidc-provider accepts either).
pub const CIBA_POST_CLIENT_ID: &str = "agentgate-ciba-post";
pub const GRANT_CIBA: &str = "urn:openid:params:grant-type:ciba";
/// Path of the backchannel authentication endpoint (Auth0's; also in discovery).
pub const BACKCHANNEL_PATH: &str = "/bc-authorize";
/// The end-users CIBA knows by default; any other login_hint is `unknown_user_id`.
pub const CIBA_USERS: [&str; 6] = [
    "alice",
    "bob",
    "carol",
    "auth0|alice",
    "auth0|bob",
    "auth0|carol",
];

pub const GRANT_EXCHANGE: &str =
    "urn:auth0:params:oauth:grant-type:token-exchange:federated-connection-access-token";
pub const TOKEN_TYPE_REFRESH: &str = "urn:ietf:params:oauth:token-type:refresh_token";
pub const TOKEN_TYPE_FEDERATED: &str =
    "http://auth0.com/oauth/token-type/federated-connection-access-token";

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/oidc_provider.mjs")
}

/// How [`OidcProvider::start_with`] runs the CIBA part.
#[derive(Clone, Debug)]
pub struct CibaOptions {
    /// "poll" or "ping": both CIBA clients' `backchannel_token_delivery_mode`.
    pub delivery: String,
    /// Ping: the clients' `backchannel_client_notification_endpoint` (http allowed,
    /// loopback allowed). Changeable later with [`OidcProvider::ciba_set_client`].
    pub notify_url: Option<String>,
    /// The `interval` added to backchannel authentication responses and enforced
    /// (a poll sooner than `interval - 200 ms` after the previous one for the same
    /// request is `slow_down`, which raises that request's interval by 5 s). 0 = stock
    /// oidc-provider: no `interval` sent (clients assume 5 s), nothing enforced.
    pub interval_secs: u64,
    /// Known end-users (login_hint subjects); default [`CIBA_USERS`].
    pub users: Vec<String>,
    /// Access-token lifetime (also of CIBA-issued tokens).
    pub access_ttl_secs: u64,
    /// A PEM file node trusts for https notification endpoints (NODE_EXTRA_CA_CERTS),
    /// e.g. the test PKI's upstream CA for a [`super::webhook::WebhookReceiver`].
    pub extra_ca: Option<PathBuf>,
}

impl Default for CibaOptions {
    fn default() -> Self {
        CibaOptions {
            delivery: "poll".to_owned(),
            notify_url: None,
            interval_secs: 1,
            users: CIBA_USERS.iter().map(|u| (*u).to_owned()).collect(),
            access_ttl_secs: 3600,
            extra_ca: None,
        }
    }
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
    /// for its READY line. No CIBA.
    pub async fn start(access_ttl_secs: u64) -> OidcProvider {
        Self::spawn(
            &["--access-ttl".to_owned(), access_ttl_secs.to_string()],
            None,
        )
        .await
    }

    /// Starts the provider with CIBA on: `delivery` "poll" or "ping", `notify_url` the
    /// ping notification endpoint (or None, to set later with [`Self::ciba_set_client`]
    /// once the proxy's admin address is known). Interval 1 s, default users.
    pub async fn start_ciba(delivery: &str, notify_url: Option<&str>) -> OidcProvider {
        Self::start_with(CibaOptions {
            delivery: delivery.to_owned(),
            notify_url: notify_url.map(str::to_owned),
            ..CibaOptions::default()
        })
        .await
    }

    /// Starts the provider with CIBA on, configured by `opts`.
    pub async fn start_with(opts: CibaOptions) -> OidcProvider {
        let mut args = vec![
            "--access-ttl".to_owned(),
            opts.access_ttl_secs.to_string(),
            "--ciba".to_owned(),
            "--ciba-delivery".to_owned(),
            opts.delivery.clone(),
            "--ciba-interval".to_owned(),
            opts.interval_secs.to_string(),
            "--ciba-users".to_owned(),
            opts.users.join(","),
        ];
        if let Some(url) = &opts.notify_url {
            args.push("--ciba-notify".to_owned());
            args.push(url.clone());
        }
        Self::spawn(&args, opts.extra_ca.as_deref()).await
    }

    async fn spawn(args: &[String], extra_ca: Option<&Path>) -> OidcProvider {
        assert!(
            clients_dir().join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed in tests/clients/node_modules; run scripts/test \
             (or `npm ci` in tests/clients)"
        );
        let mut cmd = clean_command("node");
        cmd.arg(script())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ca) = extra_ca {
            cmd.env("NODE_EXTRA_CA_CERTS", ca);
        }
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

    /// The issuer identifier, `http://127.0.0.1:<port>` (no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.url
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.url)
    }

    /// The CIBA backchannel authentication endpoint (as in discovery).
    pub fn backchannel_url(&self) -> String {
        format!("{}{BACKCHANNEL_PATH}", self.url)
    }

    /// Every CIBA request the provider accepted, in order: `{auth_req_id, client_id,
    /// client_auth, account, login_hint, binding_message, requested_expiry (string as
    /// sent, or null), expires_in, scope, audience, authorization_details (parsed JSON),
    /// client_notification_token, status: "pending"|"approved"|"denied"|"expired",
    /// polls (token endpoint calls for it, faults included), poll_at_ms (ms after the
    /// request), answers (per poll: "tokens", the error code, or "fault:<mode>"),
    /// slow_downs, interval (s; +5 per slow_down), pings: [{status}|{error}],
    /// created_ms, expires_ms, answered_by_hook}`.
    pub async fn ciba_requests(&self) -> Vec<Value> {
        match self.hook("GET", "/test/ciba/requests", &Value::Null).await {
            Value::Array(items) => items,
            other => panic!("/test/ciba/requests: {other}"),
        }
    }

    /// Waits (up to 10 s) for a CIBA request matching `want`, and returns it.
    pub async fn wait_ciba_request(&self, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let requests = self.ciba_requests().await;
            if let Some(found) = requests.iter().find(|r| want(r)) {
                return found.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no matching CIBA request within 10 s; requests: {requests:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The end-user approves: `code_or_id` is a binding code (matched against the
    /// binding_message before its first ':'; the pending request if several) or an
    /// auth_req_id. Goes through `provider.backchannelResult(request, Grant)`; in ping
    /// mode the provider notifies before this returns. Panics unless 200; returns
    /// `{ok, auth_req_id, status, ping_error?}`.
    pub async fn ciba_approve(&self, code_or_id: &str) -> Value {
        let resp = self.ciba_answer(true, code_or_id, None).await;
        assert_eq!(resp.status, 200, "approve {code_or_id}: {}", resp.text());
        resp.json()
    }

    /// The end-user denies (`backchannelResult(request, AccessDenied(reason))`).
    pub async fn ciba_deny(&self, code_or_id: &str, reason: Option<&str>) -> Value {
        let resp = self.ciba_answer(false, code_or_id, reason).await;
        assert_eq!(resp.status, 200, "deny {code_or_id}: {}", resp.text());
        resp.json()
    }

    /// The raw approve/deny hook answer: 200, 404 `{error}` (no such request), 409
    /// `{error: "already_answered"|"expired", status}`.
    pub async fn ciba_answer(
        &self,
        approve: bool,
        code_or_id: &str,
        reason: Option<&str>,
    ) -> RawResponse {
        let mut body = if is_binding_code(code_or_id) {
            json!({ "binding_code": code_or_id })
        } else {
            json!({ "auth_req_id": code_or_id })
        };
        if let Some(reason) = reason {
            body["reason"] = json!(reason);
        }
        let path = if approve {
            "/test/ciba/approve"
        } else {
            "/test/ciba/deny"
        };
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.to_string().into_bytes(),
        )
        .await
    }

    /// Changes both CIBA clients: delivery "poll"/"ping" and the ping notification
    /// endpoint (None leaves it as it is).
    pub async fn ciba_set_client(&self, delivery: &str, notify_url: Option<&str>) {
        let mut body = json!({ "delivery": delivery });
        if let Some(url) = notify_url {
            body["notification_endpoint"] = json!(url);
        }
        self.hook("POST", "/test/ciba/client", &body).await;
    }

    /// Every ping the provider sent: `{url, authorization, body, status | error}`.
    pub async fn ciba_pings(&self) -> Vec<Value> {
        match self.hook("GET", "/test/ciba/pings", &Value::Null).await {
            Value::Array(items) => items,
            other => panic!("/test/ciba/pings: {other}"),
        }
    }

    /// The next `count` CIBA polls are answered 400 `slow_down` (each also raising that
    /// request's enforced interval by 5 s); other grants are unaffected. Ends by itself.
    pub async fn fault_slow_down(&self, count: u32) {
        self.hook(
            "POST",
            "/test/fault",
            &json!({ "mode": "slow_down", "count": count }),
        )
        .await;
    }

    /// A backchannel authentication request as CIBA client `client_id`, authenticated
    /// the way that client is registered (Basic for [`CIBA_CLIENT_ID`], form fields for
    /// [`CIBA_POST_CLIENT_ID`]).
    pub async fn backchannel_authorize(
        &self,
        client_id: &str,
        form: &[(&str, &str)],
    ) -> RawResponse {
        self.as_ciba_client(BACKCHANNEL_PATH, client_id, form).await
    }

    /// One CIBA token poll for `auth_req_id` as `client_id`.
    pub async fn ciba_poll(&self, client_id: &str, auth_req_id: &str) -> RawResponse {
        self.as_ciba_client(
            "/token",
            client_id,
            &[("grant_type", GRANT_CIBA), ("auth_req_id", auth_req_id)],
        )
        .await
    }

    async fn as_ciba_client(
        &self,
        path: &str,
        client_id: &str,
        form: &[(&str, &str)],
    ) -> RawResponse {
        if client_id == CIBA_POST_CLIENT_ID {
            let mut form = form.to_vec();
            form.push(("client_id", client_id));
            form.push(("client_secret", CLIENT_SECRET));
            self.post_form(path, None, &form).await
        } else {
            self.post_form(path, Some((client_id, CLIENT_SECRET)), form)
                .await
        }
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
    /// (200 with `expires_in: 0`, storage untouched). CIBA polls included; see also
    /// [`Self::fault_slow_down`].
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

/// A binding code (4-8 uppercase letters/digits) rather than an auth_req_id.
fn is_binding_code(s: &str) -> bool {
    (4..=8).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
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
