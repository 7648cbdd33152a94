//! Where a request goes: the tunnel it came through (fixed at `CONNECT`) and its target,
//! checked against that tunnel.

use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::{Authority, Scheme};
use http::{Method, Request, header};
use hyper::body::Incoming;

use super::refusal::{bad_request, misdirected};
use crate::authority::{normalize_host, split_authority};
use crate::error::Denial;
use crate::identity::Caller;

/// The destination a client connection is bound to, fixed at CONNECT time.
#[derive(Debug, Clone)]
pub struct Tunnel {
    /// `https`, or `http` for plain HTTP the transparent listener took.
    pub scheme: Scheme,
    /// Lowercased CONNECT host (DNS name or IP literal).
    pub host: String,
    pub port: u16,
    /// `host[:port]` as sent upstream (port omitted when 443), built once per tunnel.
    pub authority: Authority,
    /// Set when the TLS SNI disagreed with the CONNECT target: every request is refused.
    pub misdirected: Option<String>,
    /// The agent's address.
    pub client: SocketAddr,
    /// Who opened the tunnel (verified at CONNECT).
    pub caller: Arc<Caller>,
}

/// Where one request goes.
pub(super) struct Target {
    pub(super) scheme: Scheme,
    pub(super) authority: Authority,
}

impl Target {
    /// `scheme://authority`, as consent binds it.
    pub(super) fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// The origin a credential may be issued for: only `https` ones get one.
    pub(super) fn tls_origin(&self) -> Option<&str> {
        (self.scheme == Scheme::HTTPS).then(|| self.authority.as_str())
    }

    /// The host, lowercase, without brackets or port (what the catalog is keyed by).
    pub(super) fn host(&self) -> &str {
        let h = self.authority.host();
        h.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h)
    }
}

/// Works out where a request goes, and refuses it if that disagrees with its tunnel.
pub(super) fn target_of(
    tunnel: Option<&Tunnel>,
    req: &Request<Incoming>,
) -> Result<Target, Denial> {
    let Some(tunnel) = tunnel else {
        return plain_target(req);
    };
    if let Some(reason) = &tunnel.misdirected {
        return Err(misdirected(reason.clone()));
    }
    // h2 carries :authority in the URI; h1 carries Host (or, rarely, an absolute URI).
    let authority = match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    };
    let Some(authority) = authority else {
        return Err(bad_request("request has no Host header"));
    };
    let (host, port) = split_authority(authority).ok_or_else(|| bad_request("invalid Host"))?;
    let agrees = same_host(host, &tunnel.host) && port.is_none_or(|p| p == tunnel.port);
    if !agrees {
        return Err(misdirected(format!(
            "Host {authority} does not match the CONNECT target {}:{}",
            tunnel.host, tunnel.port
        )));
    }
    Ok(Target {
        scheme: tunnel.scheme.clone(),
        authority: tunnel.authority.clone(),
    })
}

/// A request outside a tunnel must be an absolute-form `http://` request.
fn plain_target(req: &Request<Incoming>) -> Result<Target, Denial> {
    let uri = req.uri();
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad_request(
                "https:// requests must use CONNECT; set HTTPS_PROXY to this proxy",
            ));
        }
        Some(other) => {
            return Err(bad_request(format!("unsupported scheme {other}")));
        }
        None => {
            return Err(bad_request(
                "this is a forward proxy: send an absolute-form http:// request or CONNECT",
            ));
        }
    }
    if req.method() == Method::CONNECT {
        return Err(bad_request("CONNECT handled elsewhere"));
    }
    let host = uri
        .host()
        .and_then(normalize_host)
        .ok_or_else(|| bad_request("request URI has no valid host"))?;
    let authority = upstream_authority(&host, uri.port_u16().unwrap_or(80), 80)?;
    Ok(Target {
        scheme: Scheme::HTTP,
        authority,
    })
}

/// The authority sent upstream: brackets for IPv6, port only when not the default.
pub(super) fn upstream_authority(
    host: &str,
    port: u16,
    default_port: u16,
) -> Result<Authority, Denial> {
    let bracketed = host.contains(':');
    let text = match (bracketed, port == default_port) {
        (false, true) => host.to_owned(),
        (false, false) => format!("{host}:{port}"),
        (true, true) => format!("[{host}]"),
        (true, false) => format!("[{host}]:{port}"),
    };
    Authority::try_from(text).map_err(|_| bad_request("invalid host"))
}

/// Whether a Host value names `tunnel_host` (already normalized), without allocating:
/// case-insensitive, brackets and one trailing dot ignored.
fn same_host(host: &str, tunnel_host: &str) -> bool {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    host.eq_ignore_ascii_case(tunnel_host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_hosts_like_the_tunnel() {
        assert!(same_host("API.GitHub.com", "api.github.com"));
        assert!(same_host("api.github.com.", "api.github.com"));
        assert!(same_host("[::1]", "::1"));
        assert!(!same_host("api.github.com.evil", "api.github.com"));
        assert!(!same_host("", "api.github.com"));
    }
}
