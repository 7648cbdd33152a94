//! A real git smart-HTTP server: `git http-backend` run as a CGI program behind a small
//! HTTPS server (hyper + rustls, HTTP/1.1) on 127.0.0.1, serving the bare repositories under
//! a directory as `https://github.com/<owner>/<repo>[.git]`. Like github.com for a private
//! repository, it wants credentials: a request without `Authorization: Basic
//! base64("x-access-token:<token>")` gets `401` with `WWW-Authenticate: Basic realm="GitHub"`.
//! Every request is logged with the credential it carried.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::certs::Leaf;
use super::upstream::{Received, ReceivedLog};

/// The user name GitHub wants with a token over git (the token is the password).
pub const GIT_USER: &str = "x-access-token";

/// One request the server received.
#[derive(Clone, Debug)]
pub struct GitRequest {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub authorization: Option<String>,
    pub status: u16,
}

pub struct GitServer {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<GitRequest>>>,
    task: JoinHandle<()>,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `Basic base64("x-access-token:<token>")`: what git sends, and what the server wants.
pub fn basic(token: &str) -> String {
    let pair = format!("{GIT_USER}:{token}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

impl GitServer {
    /// Serves the bare repositories under `root` with `leaf`'s certificate, wanting `token`.
    pub async fn start(leaf: Leaf, root: PathBuf, token: &str) -> GitServer {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(leaf.chain.clone(), leaf.key())
            .expect("git server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind git");
        let addr = listener.local_addr().expect("git addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        // Every request, whole, for the judged-as-sent check (support/judged.rs).
        let received = ReceivedLog::default();
        super::judged::register_upstream(received.clone());
        let site = Arc::new(Site {
            root,
            want: basic(token),
            log: log.clone(),
            received,
            addr,
        });
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, site) = (acceptor.clone(), site.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| {
                        let site = site.clone();
                        async move { Ok::<_, Infallible>(site.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        GitServer { addr, log, task }
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<GitRequest> {
        self.log.lock().expect("git log").clone()
    }
}

struct Site {
    root: PathBuf,
    want: String,
    log: Arc<Mutex<Vec<GitRequest>>>,
    received: ReceivedLog,
    addr: SocketAddr,
}

impl Site {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let authorization = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        self.received
            .lock()
            .expect("git received")
            .push(Received::whole(
                self.addr,
                Some("github.com"),
                &parts,
                &body,
            ));
        let resp = if authorization.as_deref() == Some(self.want.as_str()) {
            self.cgi(&parts, body).await
        } else {
            Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header("www-authenticate", r#"Basic realm="GitHub""#)
                .body(Full::new(Bytes::from_static(b"Authentication required\n")))
                .expect("401")
        };
        self.log.lock().expect("git log").push(GitRequest {
            method: parts.method.to_string(),
            target: parts
                .uri
                .path_and_query()
                .map(ToString::to_string)
                .unwrap_or_default(),
            authorization,
            status: resp.status().as_u16(),
        });
        resp
    }

    /// Runs `git http-backend` for one request (RFC 3875 variables, the body on stdin) and
    /// turns its CGI answer into a response.
    async fn cgi(&self, parts: &http::request::Parts, body: Bytes) -> Response<Full<Bytes>> {
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("http-backend")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.root)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_PROJECT_ROOT", &self.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", parts.method.as_str())
            .env("PATH_INFO", parts.uri.path())
            .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("REMOTE_ADDR", "127.0.0.1")
            // An authenticated user: http-backend then accepts pushes (receive-pack).
            .env("REMOTE_USER", GIT_USER);
        for (header, var) in [
            ("content-type", "CONTENT_TYPE"),
            ("content-encoding", "HTTP_CONTENT_ENCODING"),
            ("git-protocol", "HTTP_GIT_PROTOCOL"),
        ] {
            if let Some(v) = parts.headers.get(header).and_then(|v| v.to_str().ok()) {
                cmd.env(var, v);
            }
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn git http-backend");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = tokio::spawn(async move {
            let _ = stdin.write_all(&body).await;
        });
        let out = child.wait_with_output().await.expect("git http-backend");
        let _ = writer.await;
        cgi_response(&out.stdout).unwrap_or_else(|| {
            Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(Full::new(Bytes::from(format!(
                    "git http-backend gave no CGI answer ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ))))
                .expect("500")
        })
    }
}

/// A CGI answer: header lines (`Status: 404 Not Found` sets the status), a blank line,
/// the body.
fn cgi_response(out: &[u8]) -> Option<Response<Full<Bytes>>> {
    let (head, body) = ["\r\n\r\n", "\n\n"].iter().find_map(|sep| {
        let i = out.windows(sep.len()).position(|w| w == sep.as_bytes())?;
        Some((&out[..i], &out[i + sep.len()..]))
    })?;
    let mut resp = Response::builder();
    for line in String::from_utf8_lossy(head).lines() {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next()?.parse::<u16>().ok()?;
            resp = resp.status(code);
        } else {
            resp = resp.header(name.trim(), value);
        }
    }
    resp.body(Full::new(Bytes::copy_from_slice(body))).ok()
}

/// `git ARGS` in `dir` with no system, global or user configuration and no proxy; panics
/// unless it succeeds; returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("git {args:?}: cannot start ({e}); run scripts/test"));
    assert!(
        out.status.success(),
        "git {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates the bare repository `root/<owner>/<name>.git` with one commit on `main` holding
/// `README.md` = `readme`; returns the commit id.
pub fn bare_repo(root: &Path, owner: &str, name: &str, readme: &str) -> String {
    let bare = root.join(owner).join(format!("{name}.git"));
    std::fs::create_dir_all(&bare).expect("bare repo dir");
    git(
        &bare,
        &["init", "--quiet", "--bare", "--initial-branch=main"],
    );
    let tmp = tempfile::tempdir().expect("work dir");
    let work = tmp.path();
    git(work, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(work.join("README.md"), readme).expect("README.md");
    git(work, &["add", "README.md"]);
    git(work, &["commit", "--quiet", "-m", "first"]);
    let bare = bare.display().to_string();
    git(work, &["push", "--quiet", &bare, "main"]);
    git(work, &["rev-parse", "HEAD"]).trim().to_owned()
}
