//! The internet side: a pooled hyper client whose connector passes every dial through the
//! egress guard and verifies every upstream certificate (system roots + `upstream.extra_roots`).
//!
//! Takes a prepared outbound request; returns the upstream response or a [`Denial`] that says
//! whether the failure was the guard (403), the connection or certificate (502) or a timeout (504).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::body::{BodyDone, BodyFault, RequestBody};
use crate::config::sections::UpstreamConfig;
use crate::egress::guard::Guard;
use crate::error::{Denial, Gate};

/// Failure to build the upstream client (bad root files).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream.extra_roots: cannot read {path}: {reason}")]
    Roots { path: String, reason: String },
    #[error("TLS client setup failed: {0}")]
    Tls(String),
}

/// Pooled upstream clients: one that may negotiate HTTP/2, one HTTP/1.1-only for upgrades.
pub struct Upstream {
    client: Client<Connector, RequestBody>,
    upgrade_client: Client<Connector, RequestBody>,
    response_timeout: Duration,
    /// System roots plus `upstream.extra_roots`, loaded once and shared.
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl Upstream {
    /// Builds the clients: root store, ALPN, pool settings.
    pub fn new(
        config: &UpstreamConfig,
        guard: Arc<Guard>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Upstream, UpstreamError> {
        let roots = Arc::new(root_store(&config.extra_roots)?);
        let tls = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, UpstreamError> {
            let mut c = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| UpstreamError::Tls(e.to_string()))?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(c))
        };
        let connector = |tls| Connector {
            guard: guard.clone(),
            tls: TlsConnector::from(tls),
            connect_timeout: config.connect_timeout,
        };
        let build = |c: Connector| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(config.pool_idle_timeout)
                .pool_max_idle_per_host(config.pool_max_idle_per_host)
                // Host comes from the URI, which the tunnel already checked.
                .set_host(true)
                .http1_writev(false)
                .build(c)
        };
        Ok(Upstream {
            client: build(connector(tls(&[b"h2", b"http/1.1"])?)),
            upgrade_client: build(connector(tls(&[b"http/1.1"])?)),
            response_timeout: config.response_timeout,
            roots,
            provider,
        })
    }

    /// A TLS client configuration with the same roots, for AgentGate's own calls to the
    /// same servers (token endpoints, CIBA, webhooks).
    pub fn client_config(&self) -> Result<ClientConfig, UpstreamError> {
        Ok(ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| UpstreamError::Tls(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth())
    }

    /// [`Upstream::client_config`] with `extra` roots trusted too (a collector's own CA).
    pub fn client_config_adding(
        &self,
        extra: &[CertificateDer<'static>],
    ) -> Result<ClientConfig, UpstreamError> {
        let mut roots = (*self.roots).clone();
        for cert in extra {
            roots
                .add(cert.clone())
                .map_err(|e| UpstreamError::Tls(e.to_string()))?;
        }
        Ok(ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| UpstreamError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }

    /// Sends `req` (absolute URI) and waits for the response head. The response timeout
    /// runs from the moment the agent's whole body has been sent, so a slow upload is not
    /// mistaken for a slow upstream; a body AgentGate cut off is reported as such.
    pub async fn send(
        &self,
        req: Request<RequestBody>,
        body_done: BodyDone,
        upgrade: bool,
    ) -> Result<Response<Incoming>, Denial> {
        let client = if upgrade {
            &self.upgrade_client
        } else {
            &self.client
        };
        // A Uri clone shares its bytes; the host is only formatted on the error path.
        let uri = req.uri().clone();
        let host = uri.host().unwrap_or_default();
        let deadline = async {
            body_done.await.map_err(|fault| fault.denial())?;
            tokio::time::sleep(self.response_timeout).await;
            Err(Denial::new(
                Gate::Upstream,
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!(
                    "{host} did not answer within {:?} (upstream.response_timeout)",
                    self.response_timeout
                ),
            ))
        };
        tokio::select! {
            // Deadline first: a body fault is recorded before the upstream request fails
            // because of it (over h2 the cause is lost in a stream reset).
            biased;
            denial = deadline => denial,
            res = client.request(req) => res.map_err(|e| classify(host, &e)),
        }
    }
}

/// Maps a client error to the denial the agent sees, using the typed cause where there is one.
fn classify(host: &str, err: &hyper_util::client::legacy::Error) -> Denial {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return c.to_denial(host);
        }
        if let Some(fault) = e.downcast_ref::<BodyFault>() {
            return fault.denial();
        }
        source = e.source();
    }
    Denial::new(
        Gate::Upstream,
        StatusCode::BAD_GATEWAY,
        "upstream_failed",
        format!("request to {host} failed: {}", error_chain(err)),
    )
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

fn root_store(extra: &[std::path::PathBuf]) -> Result<rustls::RootCertStore, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A malformed system root is skipped, as browsers do; our own files must be valid.
        let _ = roots.add(cert);
    }
    for path in extra {
        let err = |reason: String| UpstreamError::Roots {
            path: path.display().to_string(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no PEM certificates in the file".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| err(e.to_string()))?;
        }
    }
    Ok(roots)
}

/// Why a connection to the upstream could not be made.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{0}")]
    Guard(Denial),
    #[error("connect timed out")]
    Timeout,
    #[error("connect to {addr} failed: {source}")]
    Tcp { addr: SocketAddr, source: io::Error },
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error("invalid upstream URI: {0}")]
    Uri(String),
}

impl ConnectError {
    fn to_denial(&self, host: &str) -> Denial {
        let up = |status, code, reason: String| Denial::new(Gate::Upstream, status, code, reason);
        match self {
            ConnectError::Guard(d) => d.clone(),
            ConnectError::Timeout => up(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_connect_timeout",
                format!("connecting to {host} timed out (upstream.connect_timeout)"),
            ),
            ConnectError::Tcp { addr, source } => up(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                format!("cannot connect to {host} at {addr}: {source}"),
            ),
            ConnectError::Tls(e) => {
                let rustls_err = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>());
                match rustls_err {
                    Some(rustls::Error::InvalidCertificate(c)) => up(
                        StatusCode::BAD_GATEWAY,
                        "upstream_certificate_invalid",
                        format!(
                            "the certificate presented by {host} is not valid ({c:?}); the request was not sent"
                        ),
                    ),
                    _ => up(
                        StatusCode::BAD_GATEWAY,
                        "upstream_tls_failed",
                        format!("TLS handshake with {host} failed: {e}"),
                    ),
                }
            }
            ConnectError::Uri(m) => up(StatusCode::BAD_GATEWAY, "upstream_failed", m.clone()),
        }
    }
}

/// Dials through the guard, sets `TCP_NODELAY`, and does verified TLS for `https`.
#[derive(Clone)]
struct Connector {
    guard: Arc<Guard>,
    tls: TlsConnector,
    connect_timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamIo>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await.map(TokioIo::new) })
    }
}

impl Connector {
    async fn connect(self, uri: Uri) -> Result<UpstreamIo, ConnectError> {
        let tls = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .ok_or_else(|| ConnectError::Uri(format!("{uri} has no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let addrs = self
            .guard
            .check(host, port)
            .await
            .map_err(ConnectError::Guard)?;
        let tcp = tokio::time::timeout(self.connect_timeout, dial(&addrs))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        if !tls {
            return Ok(UpstreamIo::Plain(tcp));
        }
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| ConnectError::Uri(format!("{host} is not a valid TLS server name")))?;
        let stream = tokio::time::timeout(self.connect_timeout, self.tls.connect(name, tcp))
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(ConnectError::Tls)?;
        Ok(UpstreamIo::Tls(Box::new(stream)))
    }
}

/// Tries each checked address in order; returns the first connection made.
async fn dial(addrs: &[SocketAddr]) -> Result<TcpStream, ConnectError> {
    let mut last = None;
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(source) => last = Some(ConnectError::Tcp { addr, source }),
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::Uri("no address to dial".into())))
}

/// A connection to an upstream, plain or TLS.
enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self {
            UpstreamIo::Plain(_) => Connected::new(),
            UpstreamIo::Tls(s) if s.get_ref().1.alpn_protocol() == Some(b"h2") => {
                Connected::new().negotiated_h2()
            }
            UpstreamIo::Tls(_) => Connected::new(),
        }
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, b),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
