//! Enforced mode: connections the kernel redirected here (`agentgate k8s iptables`) from an
//! agent that never asked for a proxy. The original destination comes from
//! `SO_ORIGINAL_DST`; the name from the TLS ClientHello's SNI, or the `Host` of plain HTTP.
//! The pod is the caller, the name must resolve to the address dialed, and from then on a
//! connection is served exactly like a `CONNECT` tunnel: our leaf, the five gates, the audit
//! log and a verified upstream. Anything else is refused and recorded.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::uri::Scheme;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::LazyConfigAcceptor;

use super::listener::accept_loop;
use super::mitm::{Prefixed, TLS_HANDSHAKE, serve_requests};
use crate::authority::{normalize_host, split_authority};
use crate::error::{Denial, Gate};
use crate::pipeline::{Pipeline, Redirect, Tunnel};

/// Accepts redirected connections until `shutdown` flips; each holds one of `slots`
/// (shared with the proxy listener).
pub async fn serve(
    listener: TcpListener,
    pipeline: Arc<Pipeline>,
    slots: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(listener, pipeline, slots, shutdown, serve_redirected).await;
}

/// What the first bytes of a redirected connection say it is.
enum Opening {
    /// Boxed: the handshake state is 1.4 KiB, a request head's prefix 32 bytes.
    Tls(Box<tokio_rustls::StartHandshake<Prefixed<TcpStream>>>),
    Http(Bytes),
}

async fn serve_redirected(
    pipeline: Arc<Pipeline>,
    mut stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    shutdown: watch::Receiver<bool>,
) {
    let limits = pipeline.limits().clone();
    let original = match original_destination(&stream) {
        Ok(original) => original,
        Err(local) => {
            let denial = Denial::new(
                Gate::Ingress,
                StatusCode::BAD_REQUEST,
                "not_redirected",
                "the transparent listener takes only connections redirected by the pod's iptables rules (agentgate k8s iptables); an agent that sets HTTPS_PROXY uses proxy.listen",
            );
            let redirect = Redirect {
                original: local,
                name: Err(denial),
            };
            if let Err((denial, id)) = pipeline.open_redirect(redirect, peer).await {
                let _ = stream.write_all(&denial.to_http1_bytes(&id)).await;
            }
            return;
        }
    };
    let opened = tokio::time::timeout(
        limits.tls_handshake_timeout,
        opening(stream, limits.max_header_bytes),
    )
    .await;
    let (opening, mut stream) = match opened {
        Ok(Ok(Some(pair))) => pair,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::info!(client = %peer, %original, error = %e, "redirected connection failed before it named a destination");
            return;
        }
        Err(_) => {
            tracing::info!(client = %peer, %original, "redirected connection sent no ClientHello or request head in time (limits.tls_handshake_timeout)");
            return;
        }
    };
    let name = match &opening {
        Ok(Opening::Tls(start)) => {
            let sni = start.client_hello().server_name().and_then(normalize_host);
            Ok((sni.unwrap_or_else(|| ip_host(original.ip())), Scheme::HTTPS))
        }
        Ok(Opening::Http(head)) => host_of(head, original).map(|h| (h, Scheme::HTTP)),
        Err(()) => Err(Denial::new(
            Gate::Ingress,
            StatusCode::BAD_REQUEST,
            "protocol_not_supported",
            "only TLS and HTTP leave the pod through AgentGate; this connection sent neither",
        )),
    };
    let tunnel = match pipeline
        .open_redirect(Redirect { original, name }, peer)
        .await
    {
        Ok(tunnel) => tunnel,
        Err((denial, id)) => {
            // Plain HTTP can read why; a TLS client only sees the connection close.
            if let (Ok(Opening::Http(_)), Some(s)) = (&opening, stream.as_mut()) {
                let _ = s.write_all(&denial.to_http1_bytes(&id)).await;
                let _ = s.shutdown().await;
            }
            return;
        }
    };
    match opening {
        Ok(Opening::Tls(start)) => serve_tls(pipeline, *start, tunnel, shutdown).await,
        Ok(Opening::Http(head)) => {
            if let Some(inner) = stream {
                let io = Prefixed {
                    prefix: head,
                    inner,
                };
                serve_requests(pipeline, Box::new(io), false, tunnel, shutdown).await;
            }
        }
        Err(()) => {}
    }
    drop(permit);
}

/// Reads enough to tell TLS from HTTP: a ClientHello (parsed up to its SNI), or a whole
/// request head (bounded by `max_head`). `Err(())` inside: neither. The stream comes back
/// where it was not handed to the TLS acceptor.
async fn opening(
    mut stream: TcpStream,
    max_head: usize,
) -> io::Result<Option<(Result<Opening, ()>, Option<TcpStream>)>> {
    let mut buf = BytesMut::with_capacity(1024);
    if stream.read_buf(&mut buf).await? == 0 {
        return Ok(None);
    }
    if buf[0] == TLS_HANDSHAKE {
        let io = Prefixed {
            prefix: buf.freeze(),
            inner: stream,
        };
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        return Ok(Some((Ok(Opening::Tls(Box::new(start))), None)));
    }
    if !buf[0].is_ascii_uppercase() {
        return Ok(Some((Err(()), Some(stream))));
    }
    while memchr::memmem::find(&buf, b"\r\n\r\n").is_none() {
        if buf.len() >= max_head {
            // Judged by the HTTP parser later: too large, refused there with its record.
            break;
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(None);
        }
    }
    Ok(Some((Ok(Opening::Http(buf.freeze())), Some(stream))))
}

/// Finishes the handshake with a leaf for the tunnel's host and serves its requests.
async fn serve_tls(
    pipeline: Arc<Pipeline>,
    start: tokio_rustls::StartHandshake<Prefixed<TcpStream>>,
    tunnel: Tunnel,
    shutdown: watch::Receiver<bool>,
) {
    let limits = pipeline.limits().clone();
    let config = match pipeline.ca().server_config(&tunnel.host) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(host = %tunnel.host, error = %e, "cannot mint a leaf certificate");
            return;
        }
    };
    let tls = match tokio::time::timeout(limits.tls_handshake_timeout, start.into_stream(config))
        .await
    {
        Ok(Ok(tls)) => Box::new(tls),
        Ok(Err(e)) => {
            tracing::info!(client = %tunnel.client, host = %tunnel.host, error = %e, "TLS handshake with agent failed");
            return;
        }
        Err(_) => return,
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    serve_requests(pipeline, tls, h2, tunnel, shutdown).await;
}

/// The destination the agent dialed before the kernel redirected it here, or, when the
/// connection was not redirected (made to this listener directly), `Err` with our address.
fn original_destination(stream: &TcpStream) -> Result<SocketAddr, SocketAddr> {
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let local = stream.local_addr().map_err(|_| unspecified)?;
    let sock = socket2::SockRef::from(stream);
    let v4 = match local.ip() {
        IpAddr::V4(_) => true,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().is_some(),
    };
    let original = if v4 {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    match original.ok().and_then(|a| a.as_socket()) {
        Some(original) if original != local => Ok(original),
        _ => Err(local),
    }
}

/// The single `Host` of a plain HTTP request head, lowercased, without its port.
fn host_of(head: &[u8], original: SocketAddr) -> Result<String, Denial> {
    let bad = |reason: &'static str| {
        Denial::new(
            Gate::Ingress,
            StatusCode::BAD_REQUEST,
            "bad_request",
            reason,
        )
    };
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    // Incomplete or malformed heads are left to the HTTP parser, which records them; only
    // the Host matters here.
    let _ = req.parse(head);
    let mut hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => h.value,
        (None, _) => return Ok(ip_host(original.ip())),
        (Some(_), Some(_)) => return Err(bad("more than one Host header")),
    };
    let host = std::str::from_utf8(host).map_err(|_| bad("Host is not ASCII"))?;
    let (name, _) = split_authority(host).ok_or_else(|| bad("invalid Host"))?;
    normalize_host(name).ok_or_else(|| bad("invalid Host"))
}

/// An address as a tunnel host (IPv6 without brackets, IPv4-mapped as IPv4).
fn ip_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        v4 => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_one_host_of_a_request_head() {
        let original = SocketAddr::from(([10, 0, 0, 1], 80));
        let host = |head: &str| host_of(head.as_bytes(), original);
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: Example.COM:80\r\n\r\n").unwrap(),
            "example.com"
        );
        assert_eq!(host("GET / HTTP/1.1\r\n\r\n").unwrap(), "10.0.0.1");
        let twice = host("GET / HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n").unwrap_err();
        assert_eq!(twice.reason, "more than one Host header");
        assert!(host("GET / HTTP/1.1\r\nHost: a b\r\n\r\n").is_err());
        assert_eq!(ip_host("::ffff:1.2.3.4".parse().unwrap()), "1.2.3.4");
        assert_eq!(ip_host("2001:db8::1".parse().unwrap()), "2001:db8::1");
    }
}
