//! Hand-driven clients: raw bytes over TCP (for malformed input), CONNECT
//! tunnels, TLS over a tunnel trusting the proxy's CA, and hyper h1/h2 clients
//! on top of that tunnel.

use super::certs::root_store_from_pem;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::proxy::Proxy;

/// Bound on any single network step of a test; a hang is a failure, not a timing claim.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the test if it takes longer than [`IO_TIMEOUT`].
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {IO_TIMEOUT:?}"))
}

/// A parsed HTTP/1.x response (or a hyper response collected into one).
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    pub async fn from_hyper(resp: Response<Incoming>) -> RawResponse {
        let (parts, body) = resp.into_parts();
        let body = within("read response body", body.collect())
            .await
            .expect("response body")
            .to_bytes()
            .to_vec();
        RawResponse {
            status: parts.status.as_u16(),
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
        }
    }
}

/// Reads a status line and headers, one byte at a time so nothing past the
/// blank line is consumed (the tunnel's TLS bytes follow a CONNECT 200).
/// Returns None if the peer closed before sending anything.
pub async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match within("read response head", r.read(&mut byte)).await {
            Ok(0) | Err(_) if buf.is_empty() => return None,
            Ok(0) | Err(_) => panic!(
                "connection closed mid-head: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(_) => buf.push(byte[0]),
        }
        assert!(buf.len() < 1 << 20, "response head over 1 MiB");
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let proto = parts.next().unwrap_or_default();
    assert!(
        proto.starts_with("HTTP/1."),
        "bad status line {status_line:?}"
    );
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some(RawResponse {
        status,
        headers,
        body: Vec::new(),
    })
}

/// Reads a whole response: head, then a body by Content-Length, chunked, or
/// until close. None if the peer closed without answering.
pub async fn read_response<R: AsyncRead + Unpin>(r: &mut R) -> Option<RawResponse> {
    let mut resp = read_head(r).await?;
    let no_body = resp.status < 200 || resp.status == 204 || resp.status == 304;
    if no_body {
        return Some(resp);
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        resp.body = read_chunked(r).await;
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().expect("content-length");
        let mut body = vec![0u8; len];
        within("read body", r.read_exact(&mut body))
            .await
            .expect("read body");
        resp.body = body;
    } else {
        let mut body = Vec::new();
        let _ = within("read body to close", r.read_to_end(&mut body)).await;
        resp.body = body;
    }
    Some(resp)
}

async fn read_line<R: AsyncRead + Unpin>(r: &mut R) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        let n = within("read chunk line", r.read(&mut byte))
            .await
            .expect("read chunk line");
        assert!(n == 1, "closed inside chunked body");
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line[..line.len() - 2]).into_owned()
}

async fn read_chunked<R: AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(r).await;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).expect("chunk size");
        if size == 0 {
            while !read_line(r).await.is_empty() {}
            return body;
        }
        let start = body.len();
        body.resize(start + size, 0);
        within("read chunk", r.read_exact(&mut body[start..]))
            .await
            .expect("read chunk");
        read_line(r).await;
    }
}

pub async fn tcp(addr: SocketAddr) -> TcpStream {
    let s = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect to proxy");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// An absolute-form `GET url` for the proxy listener, as the test agent.
pub fn plain_get(url: &str, host: &str) -> Vec<u8> {
    format!(
        "GET {url} HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: {}\r\n\r\n",
        super::agent::bearer()
    )
    .into_bytes()
}

/// Sends `CONNECT authority` as the test agent and reads the proxy's answer head (and
/// body if it refused). The stream is positioned right after the head.
pub async fn connect(proxy: SocketAddr, authority: &str) -> (TcpStream, RawResponse) {
    connect_as(proxy, authority, Some(&super::agent::bearer())).await
}

/// Like [`connect`], with this `Proxy-Authorization` value (or none).
pub async fn connect_as(
    proxy: SocketAddr,
    authority: &str,
    auth: Option<&str>,
) -> (TcpStream, RawResponse) {
    let mut s = tcp(proxy).await;
    let auth = auth
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n");
    within("send CONNECT", s.write_all(req.as_bytes()))
        .await
        .expect("write CONNECT");
    let mut head = read_head(&mut s)
        .await
        .unwrap_or_else(|| panic!("proxy closed without answering CONNECT {authority}"));
    if head.status != 200 {
        if let Some(len) = head.header("content-length") {
            let mut body = vec![0u8; len.parse().expect("content-length")];
            within("read refusal", s.read_exact(&mut body))
                .await
                .expect("read refusal body");
            head.body = body;
        } else if head.header("transfer-encoding").is_some() {
            head.body = read_chunked(&mut s).await;
        }
    }
    (s, head)
}

/// TLS client config trusting only the CA in `ca_pem`, with the given ALPN list.
pub fn client_tls(ca_pem: &Path, alpn: &[&[u8]]) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_root_certificates(root_store_from_pem(ca_pem))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

pub async fn tls_over<S>(stream: S, sni: &str, ca_pem: &Path, alpn: &[&[u8]]) -> TlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    within(
        "TLS handshake with the proxy",
        client_tls(ca_pem, alpn).connect(name, stream),
    )
    .await
    .unwrap_or_else(|e| panic!("TLS handshake with the proxy (SNI {sni}) failed: {e}"))
}

/// CONNECT `host:443`, expect 200, then TLS with SNI `sni` trusting `ca_pem`.
pub async fn tunnel(
    proxy: SocketAddr,
    authority: &str,
    sni: &str,
    ca_pem: &Path,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let (s, head) = connect(proxy, authority).await;
    assert_eq!(
        head.status,
        200,
        "CONNECT {authority} refused: {:?} {}",
        head.headers,
        head.text()
    );
    tls_over(s, sni, ca_pem, alpn).await
}

/// A TLS tunnel to `host:443` through `proxy`, with SNI `host` and one ALPN protocol.
pub async fn tunnel_to(proxy: &Proxy, host: &str, alpn: &[u8]) -> TlsStream<TcpStream> {
    let authority = format!("{host}:443");
    tunnel(proxy.proxy_addr, &authority, host, &proxy.ca_path, &[alpn]).await
}

/// Like [`tunnel_to`], but `None` when the proxy refuses the CONNECT.
pub async fn tunnel_to_any(proxy: &Proxy, host: &str) -> Option<TlsStream<TcpStream>> {
    let (s, head) = connect(proxy.proxy_addr, &format!("{host}:443")).await;
    if head.status != 200 {
        return None;
    }
    Some(tls_over(s, host, &proxy.ca_path, &[b"http/1.1"]).await)
}

pub type H1 = http1::SendRequest<Full<Bytes>>;
pub type H2 = http2::SendRequest<Full<Bytes>>;

pub async fn h1_client<S>(io: S) -> H1
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = within("h1 handshake", http1::handshake(TokioIo::new(io)))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn.with_upgrades());
    sender
}

pub async fn h2_client<S>(io: S) -> H2
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = within(
        "h2 handshake",
        http2::handshake(TokioExecutor::new(), TokioIo::new(io)),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

/// A GET. An origin-form `uri` gets `Host: host` (h1); an absolute `uri` carries
/// its own authority (h2 `:authority`, or an absolute-form h1 target) and gets
/// `Host` only for h1 use, where hyper writes the URI as given.
pub fn get(uri: &str, host: &str) -> Request<Full<Bytes>> {
    let mut req = Request::get(uri);
    if uri.starts_with('/') {
        req = req.header("host", host);
    }
    req.body(Full::new(Bytes::new())).expect("request")
}

pub async fn send_h1(sender: &mut H1, req: Request<Full<Bytes>>) -> RawResponse {
    within("h1 ready", sender.ready()).await.expect("h1 ready");
    let resp = within("h1 response", sender.send_request(req))
        .await
        .expect("h1 request");
    RawResponse::from_hyper(resp).await
}

pub async fn send_h2(sender: &mut H2, req: Request<Full<Bytes>>) -> RawResponse {
    within("h2 ready", sender.ready()).await.expect("h2 ready");
    let resp = within("h2 response", sender.send_request(req))
        .await
        .expect("h2 request");
    RawResponse::from_hyper(resp).await
}

/// Writes `bytes` raw on the stream and reads one response (None: closed).
pub async fn exchange<S>(stream: &mut S, bytes: &[u8]) -> Option<RawResponse>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within("write raw request", stream.write_all(bytes))
        .await
        .expect("write raw request");
    within("flush", stream.flush()).await.expect("flush");
    read_response(stream).await
}

/// Like [`exchange`], for requests the proxy may refuse before it has read them whole:
/// a write cut off by the proxy closing is expected; the answer is still read.
pub async fn exchange_oversize<S>(stream: &mut S, bytes: &[u8]) -> Option<RawResponse>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = within("write raw request", stream.write_all(bytes)).await;
    let _ = within("flush", stream.flush()).await;
    read_response(stream).await
}

/// Reads until EOF or a read error; fails the test if that takes longer than
/// [`IO_TIMEOUT`]. Returns the bytes seen before the end.
pub async fn read_until_closed<R: AsyncRead + Unpin>(r: &mut R, what: &str) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let res = tokio::time::timeout(IO_TIMEOUT, async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        res.is_ok(),
        "{what}: connection still open after {IO_TIMEOUT:?} (seen {} bytes: {:?})",
        seen.len(),
        String::from_utf8_lossy(&seen[..seen.len().min(200)])
    );
    seen
}
