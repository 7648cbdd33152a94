//! Admin API clients for tests: one-shot JSON calls over raw HTTP/1.1, and a server-sent
//! events reader on a hyper connection.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use super::raw::{self, RawResponse, within};

/// One request to the admin port, optionally with a bearer token and a JSON body.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> RawResponse {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body_head = body
        .map(|b| {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )
        })
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}{body_head}\r\n{}",
        body.unwrap_or(""),
    );
    let mut s = raw::tcp(addr).await;
    raw::exchange(&mut s, req.as_bytes())
        .await
        .unwrap_or_else(|| panic!("admin port closed without answering {method} {path}"))
}

/// `call` that expects `status` and returns the JSON body.
pub async fn json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
    status: u16,
) -> Value {
    let resp = call(addr, method, path, Some(token), body).await;
    assert_eq!(
        resp.status,
        status,
        "{method} {path}: expected {status}, got {}: {}",
        resp.status,
        resp.text()
    );
    resp.json()
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl Event {
    /// `data` as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data {:?}: {e}", self.data))
    }
}

/// An open event stream.
pub struct Sse {
    body: Incoming,
    buf: String,
    /// Set when the server ended the stream.
    pub ended: bool,
}

/// Opens `GET path` with `headers`; returns the status and, on 200, the stream.
pub async fn sse(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<Sse>, String) {
    let stream = within("connect to admin", TcpStream::connect(addr))
        .await
        .expect("connect to admin");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = within(
        "event stream answer",
        sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()),
    )
    .await
    .expect("event stream request");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if status != 200 {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return (status, None, String::from_utf8_lossy(&body).into_owned());
    }
    let sse = Sse {
        body: resp.into_body(),
        buf: String::new(),
        ended: false,
    };
    (status, Some(sse), content_type)
}

impl Sse {
    /// The next event (comments skipped), or None when the stream ended.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = Event {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim().to_owned());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        ev.event = Some(v.trim().to_owned());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !ev.data.is_empty() {
                            ev.data.push('\n');
                        }
                        ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        any = true;
                    }
                }
                if any {
                    return Some(ev);
                }
                continue;
            }
            match within("next server-sent event", self.body.frame()).await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                _ => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    /// The next `record` event whose record matches `pred`, skipping others.
    pub async fn until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let ev = self.next().await.expect("the event stream ended early");
            if ev.event.as_deref() != Some("record") {
                continue;
            }
            let v = ev.json();
            assert_eq!(
                ev.id.as_deref(),
                Some(v["seq"].to_string().as_str()),
                "event id is the seq"
            );
            if pred(&v["record"]) {
                return v;
            }
        }
    }
}

/// An admin-port answer read with curl: status, raw head and JSON body.
#[derive(Debug)]
pub struct AdminResp {
    pub status: u16,
    pub headers: String,
    pub body: Value,
}

impl AdminResp {
    /// The value of response header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// One request to the admin port with curl (no proxy): `token` as the bearer, `body` sent
/// with `content_type`.
pub async fn curl(
    proxy: &super::proxy::Proxy,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Option<&str>,
) -> AdminResp {
    curl_with(proxy, method, path, token, content_type, body, &[]).await
}

/// [`curl`] with extra request headers.
pub async fn curl_with(
    proxy: &super::proxy::Proxy,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> AdminResp {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (head, out) = (tmp.path().join("head"), tmp.path().join("body"));
    let mut cmd = super::clients::clean_command("curl");
    cmd.args(["-sS", "--noproxy", "*", "--max-time", "30", "-X", method])
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&out)
        .args(["-w", "%{http_code}"]);
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    if let Some(ct) = content_type {
        cmd.arg("-H").arg(format!("Content-Type: {ct}"));
    }
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    if let Some(b) = body {
        let file = tmp.path().join("req");
        std::fs::write(&file, b).expect("write request body");
        cmd.arg("--data-binary").arg(format!("@{}", file.display()));
    }
    cmd.arg(format!("http://{}{path}", proxy.admin_addr));
    let o = super::clients::output(cmd, "curl (admin)").await;
    assert!(
        o.status.success(),
        "curl {method} {path} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    AdminResp {
        status: String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .expect("status"),
        headers: std::fs::read_to_string(&head).unwrap_or_default(),
        body: serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("admin {method} {path}: body is not JSON ({e}): {text:?}")),
    }
}
