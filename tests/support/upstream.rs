//! Real HTTPS (and plain HTTP) upstream servers, in-process, on 127.0.0.1:0.
//!
//! Endpoints: `/echo` and `/echo/<anything>` (JSON description of the request; body
//! hashed while streaming), `/upload` (same, for big bodies), `/bytes?n=N` (N pattern bytes,
//! streamed in chunks), `/hang` (never answers), `/ws` (WebSocket echo). GitHub-, Gmail- and
//! Slack-style API paths (`/repos/…`, `/graphql`, `/gmail/…`, `/upload/…`, `/api/…`) answer
//! like `/echo`, so tests can check what a forwarded API call carried. `/redirect?to=URL`
//! answers 302 to URL. GitHub App routes: `POST /app/installations/{id}/access_tokens`
//! mints `ghs_…` installation tokens (the request's bearer JWT and JSON body are kept), and
//! `DELETE /installation/token` revokes one. Every request's credentials (Authorization,
//! Cookie) are kept per server name for [`Upstream::seen`].
//!
//! Every request is also recorded whole for [`Upstream::received`] and the judged-as-sent
//! check (`judged.rs`): method, target, every header in order, the body's length and
//! SHA-256 (hashed while it streams, read to its end before any endpoint answers), and any
//! trailer fields.

use super::certs::Leaf;
use super::pattern::{PatternBody, Sha256Stream};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

pub type Body = BoxBody<Bytes, Infallible>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// TLS, ALPN h2 + http/1.1, serves both.
    Tls,
    /// TLS, ALPN http/1.1 only, HTTP/1.1 server only.
    TlsH1Only,
    /// Cleartext HTTP/1.1 (for absolute-form `http://` requests).
    Plain,
}

/// What one request that reached the upstream carried.
#[derive(Clone, Debug)]
pub struct Seen {
    /// TLS server name (None over cleartext).
    pub sni: Option<String>,
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub cookie: Option<String>,
    /// Body of GitHub App token requests (JSON), empty otherwise.
    pub body: String,
}

/// Most body bytes kept in [`Received::body_prefix`] (the hash covers the whole body).
pub const BODY_KEPT: usize = 1 << 20;

/// Everything one request that reached an upstream carried, as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// The upstream server that received it.
    pub upstream: SocketAddr,
    /// TLS server name (None over cleartext).
    pub sni: Option<String>,
    /// "HTTP/1.1" or "HTTP/2.0".
    pub version: String,
    pub method: String,
    /// The path and query as received (origin-form).
    pub target: String,
    /// Every header (lowercase name, value bytes), values of one name in order.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: ReceivedBody,
    /// The first [`BODY_KEPT`] bytes of the body.
    pub body_prefix: Vec<u8>,
    /// Trailer fields that came after the body (chunked HTTP/1.1, or HTTP/2).
    pub trailers: Vec<(String, Vec<u8>)>,
}

/// How far the upstream got with a request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceivedBody {
    /// Still arriving (or abandoned mid-way); `len` bytes so far.
    Reading { len: u64 },
    /// Read to its end.
    Complete { len: u64, sha256: String },
    /// The stream failed after `len` bytes.
    Failed { len: u64, error: String },
}

impl Received {
    /// A request that a server other than [`Upstream`] (the git server) read whole.
    pub fn whole(
        upstream: SocketAddr,
        sni: Option<&str>,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Received {
        Received {
            upstream,
            sni: sni.map(str::to_owned),
            version: format!("{:?}", parts.version),
            method: parts.method.as_str().to_owned(),
            target: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body: ReceivedBody::Complete {
                len: body.len() as u64,
                sha256: super::pattern::sha256_hex(body),
            },
            body_prefix: body[..body.len().min(BODY_KEPT)].to_vec(),
            trailers: Vec::new(),
        }
    }

    /// The values of header `name`, in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// Header `name` (several values joined with ", "), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let values = self.header_values(name);
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// The instance id of the last AgentGate that forwarded this request (from its
    /// `Via: 1.1 agentgate-<instance>` entry); `None` when no AgentGate did.
    pub fn via_instance(&self) -> Option<String> {
        self.header_values("via")
            .iter()
            .flat_map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>())
            .filter_map(|entry| {
                entry
                    .split_whitespace()
                    .nth(1)
                    .and_then(|t| t.strip_prefix("agentgate-"))
                    .map(str::to_owned)
            })
            .next_back()
    }

    /// The whole body, when it was complete and small enough to keep.
    pub fn body_bytes(&self) -> Option<&[u8]> {
        match &self.body {
            ReceivedBody::Complete { len, .. } if *len as usize == self.body_prefix.len() => {
                Some(&self.body_prefix)
            }
            _ => None,
        }
    }

    /// One line: "METHOD target (n headers, body …)".
    pub fn summary(&self) -> String {
        format!(
            "{} {} {} on {} (sni {:?}), body {:?}",
            self.method, self.target, self.version, self.upstream, self.sni, self.body
        )
    }
}

/// The requests one upstream received, shared with the judged-as-sent check.
pub type ReceivedLog = Arc<Mutex<Vec<Received>>>;

#[derive(Clone, Default)]
struct Logs {
    /// "METHOD /path?query" of every request that reached this server.
    lines: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Installation tokens minted and not revoked.
    installation_tokens: Arc<Mutex<Vec<String>>>,
    /// Every request, whole (see [`Received`]).
    received: ReceivedLog,
}

impl Logs {
    /// Records a request as it arrives; returns its index for [`Logs::update_body`].
    fn arrive(&self, r: Received) -> usize {
        let mut all = self.received.lock().expect("upstream received");
        all.push(r);
        all.len() - 1
    }

    fn update_body(&self, i: usize, body: ReceivedBody, read: &BodyRead) {
        let mut all = self.received.lock().expect("upstream received");
        if let Some(r) = all.get_mut(i) {
            r.body = body;
            r.body_prefix = read.kept.clone();
            r.trailers = read.trailers.clone();
        }
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    logs: Logs,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(leaves: Vec<(String, Leaf)>, mode: Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let logs = Logs::default();
        super::judged::register_upstream(logs.received.clone());
        let acceptor = (mode != Mode::Plain).then(|| tls_acceptor(leaves, mode));
        let task = tokio::spawn(accept_loop(listener, acceptor, mode, logs.clone(), addr));
        Upstream { addr, logs, task }
    }

    /// The credentials and targets of every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.logs.seen.lock().expect("upstream seen").clone()
    }

    /// Every request that reached this upstream so far, whole, in order of arrival.
    pub fn received(&self) -> Vec<Received> {
        self.logs
            .received
            .lock()
            .expect("upstream received")
            .clone()
    }

    /// GitHub App installation tokens minted here and not yet revoked.
    pub fn live_installation_tokens(&self) -> Vec<String> {
        self.logs
            .installation_tokens
            .lock()
            .expect("installation tokens")
            .clone()
    }

    /// Whether any request whose target contains `marker` reached this upstream.
    pub fn saw(&self, marker: &str) -> bool {
        self.logs
            .lines
            .lock()
            .expect("upstream log")
            .iter()
            .any(|l| l.contains(marker))
    }

    /// Every request that reached this upstream so far, as "METHOD /path?query", in order.
    pub fn requests(&self) -> Vec<String> {
        self.logs.lines.lock().expect("upstream log").clone()
    }
}

fn tls_acceptor(leaves: Vec<(String, Leaf)>, mode: Mode) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut certs = HashMap::new();
    for (name, leaf) in leaves {
        let key = provider
            .key_provider
            .load_private_key(leaf.key())
            .expect("load leaf key");
        certs.insert(name, Arc::new(CertifiedKey::new(leaf.chain.clone(), key)));
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certs }));
    config.alpn_protocols = match mode {
        Mode::TlsH1Only => vec![b"http/1.1".to_vec()],
        _ => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    TlsAcceptor::from(Arc::new(config))
}

/// Picks the certificate by SNI; without SNI (or an unknown name) the first
/// certificate in name order, so a mismatch shows up as a verification error.
#[derive(Debug)]
struct SniResolver {
    certs: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(ck) = hello.server_name().and_then(|n| self.certs.get(n)) {
            return Some(ck.clone());
        }
        let mut names: Vec<&String> = self.certs.keys().collect();
        names.sort();
        names.first().and_then(|n| self.certs.get(*n)).cloned()
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    mode: Mode,
    log: Logs,
    addr: SocketAddr,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let log = log.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve(TokioIo::new(tcp), mode, None, log, addr).await,
                Some(acceptor) => {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().map(str::to_owned);
                    serve(TokioIo::new(tls), mode, sni, log, addr).await;
                }
            }
        });
    }
}

async fn serve<IO>(io: TokioIo<IO>, mode: Mode, sni: Option<String>, log: Logs, addr: SocketAddr)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let sni = Arc::new(sni);
    let svc = service_fn(move |req| handle(req, sni.clone(), log.clone(), addr));
    // Connection errors (peer reset, proxy gave up) are part of several tests.
    let _ = match mode {
        Mode::Tls => {
            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(io, svc)
                .await
        }
        Mode::TlsH1Only | Mode::Plain => hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .with_upgrades()
            .await
            .map_err(Into::into),
    };
}

/// A request body read to its end: length, SHA-256 (or the error that cut it), and the
/// first [`BODY_KEPT`] bytes.
struct BodyRead {
    len: u64,
    sha256: Result<String, String>,
    kept: Vec<u8>,
    trailers: Vec<(String, Vec<u8>)>,
}

async fn read_body(mut body: Incoming) -> BodyRead {
    let mut hasher = Sha256Stream::new();
    let mut kept = Vec::new();
    let mut len = 0u64;
    let mut trailers = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    hasher.update(data);
                    len += data.len() as u64;
                    let room = BODY_KEPT.saturating_sub(kept.len());
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                } else if let Some(t) = frame.trailers_ref() {
                    trailers.extend(
                        t.iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec())),
                    );
                }
            }
            Err(e) => {
                return BodyRead {
                    len,
                    sha256: Err(e.to_string()),
                    kept,
                    trailers,
                };
            }
        }
    }
    BodyRead {
        len,
        sha256: Ok(hasher.finish().1),
        kept,
        trailers,
    }
}

async fn handle(
    req: Request<Incoming>,
    sni: Arc<Option<String>>,
    log: Logs,
    addr: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    log.lines
        .lock()
        .expect("upstream log")
        .push(format!("{} {target}", parts.method));
    let index = log.arrive(Received {
        upstream: addr,
        sni: (*sni).clone(),
        version: format!("{:?}", parts.version),
        method: parts.method.as_str().to_owned(),
        target,
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body: ReceivedBody::Reading { len: 0 },
        body_prefix: Vec::new(),
        trailers: Vec::new(),
    });
    // Every endpoint reads the whole body (hashing it) before it answers, so what was
    // received is known whatever the endpoint.
    let read = read_body(body).await;
    let state = match &read.sha256 {
        Ok(sha) => ReceivedBody::Complete {
            len: read.len,
            sha256: sha.clone(),
        },
        Err(e) => ReceivedBody::Failed {
            len: read.len,
            error: e.clone(),
        },
    };
    log.update_body(index, state, &read);
    let mut req = Request::from_parts(parts, ());

    let path = req.uri().path().to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut seen = Seen {
        sni: (*sni).clone(),
        method: req.method().as_str().to_owned(),
        path: path.clone(),
        authorization: header("authorization"),
        cookie: header("cookie"),
        body: String::new(),
    };
    if req.method() == http::Method::POST
        && path.starts_with("/app/installations/")
        && path.ends_with("/access_tokens")
    {
        seen.body = String::from_utf8_lossy(&read.kept).into_owned();
        log.seen.lock().expect("upstream seen").push(seen);
        return Ok(installation_token(&log));
    }
    if req.method() == http::Method::DELETE && path == "/installation/token" {
        let token = seen
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned();
        log.seen.lock().expect("upstream seen").push(seen);
        let mut live = log.installation_tokens.lock().expect("installation tokens");
        let before = live.len();
        live.retain(|t| *t != token);
        let status = if live.len() < before {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::UNAUTHORIZED
        };
        return Ok(text(status, ""));
    }
    log.seen.lock().expect("upstream seen").push(seen);
    let resp = match path.as_str() {
        "/redirect" => {
            let to = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("to="))
                .unwrap_or("/")
                .to_owned();
            Response::builder()
                .status(StatusCode::FOUND)
                .header("location", to)
                .body(Full::new(Bytes::new()).boxed())
                .expect("redirect response")
        }
        "/echo" | "/upload" => echo(&req, &sni, &read),
        p if p.starts_with("/echo/") || is_api_path(p) => echo(&req, &sni, &read),
        "/bytes" => {
            let n = query_param(req.uri().query(), "n").unwrap_or(0);
            Response::builder()
                .header("content-type", "application/octet-stream")
                .body(PatternBody::new(n).boxed())
                .expect("bytes response")
        }
        "/hang" => std::future::pending().await,
        "/ws" => websocket(&mut req),
        "/repo.git/info/refs" => git_refs(),
        _ => text(StatusCode::NOT_FOUND, "no such test endpoint"),
    };
    Ok(resp)
}

/// A new installation token, valid for an hour.
fn installation_token(log: &Logs) -> Response<Body> {
    let token = format!("ghs_{:032x}", rand_u128());
    log.installation_tokens
        .lock()
        .expect("installation tokens")
        .push(token.clone());
    let expires = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let expires = expires
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format time");
    let body = serde_json::json!({"token": token, "expires_at": expires});
    Response::builder()
        .status(StatusCode::CREATED)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("token response")
}

fn rand_u128() -> u128 {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).expect("random");
    u128::from_be_bytes(b)
}

/// Paths shaped like the GitHub, Gmail and Slack APIs the service catalog knows.
fn is_api_path(path: &str) -> bool {
    path == "/graphql"
        || ["/repos/", "/gmail/", "/upload/", "/api/"]
            .iter()
            .any(|p| path.starts_with(p))
}

/// The commit every test repository's `main` points at.
pub const GIT_HEAD: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// Git smart-HTTP ref advertisement (what `git ls-remote` reads): HEAD and main.
fn git_refs() -> Response<Body> {
    fn pkt(line: &str) -> String {
        format!("{:04x}{line}", line.len() + 4)
    }
    let body = format!(
        "{}0000{}{}0000",
        pkt("# service=git-upload-pack\n"),
        pkt(&format!(
            "{GIT_HEAD} HEAD\0symref=HEAD:refs/heads/main agent=agentgate-test\n"
        )),
        pkt(&format!("{GIT_HEAD} refs/heads/main\n")),
    );
    Response::builder()
        .header(
            "content-type",
            "application/x-git-upload-pack-advertisement",
        )
        .header("cache-control", "no-cache")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("git refs response")
}

fn query_param(query: Option<&str>, name: &str) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(msg.to_owned())).boxed())
        .expect("text response")
}

/// Describes the request (its body was hashed while it streamed).
fn echo(req: &Request<()>, sni: &Option<String>, read: &BodyRead) -> Response<Body> {
    let sha = match &read.sha256 {
        Ok(sha) => sha.clone(),
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("body error: {e}")),
    };
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let entry = headers
            .entry(name.as_str().to_owned())
            .or_insert_with(|| serde_json::Value::String(String::new()));
        if let serde_json::Value::String(s) = entry {
            if !s.is_empty() {
                s.push_str(", ");
            }
            s.push_str(&value);
        }
    }
    let json = serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query().unwrap_or(""),
        "authority": req.uri().authority().map(|a| a.as_str().to_owned()),
        "headers": headers,
        "body_len": read.len,
        "body_sha256": sha,
        "version": format!("{:?}", req.version()),
        "sni": sni,
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json.to_string())).boxed())
        .expect("echo response")
}

/// HTTP/1.1 Upgrade to a WebSocket that echoes text and binary messages.
fn websocket(req: &mut Request<()>) -> Response<Body> {
    let upgrade_ok = req
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return text(StatusCode::BAD_REQUEST, "missing sec-websocket-key");
    };
    if !upgrade_ok {
        return text(StatusCode::BAD_REQUEST, "missing Upgrade: websocket");
    }
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .body(Full::new(Bytes::new()).boxed())
        .expect("101 response")
}
