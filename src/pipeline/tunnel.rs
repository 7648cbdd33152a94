//! Whether a connection may open a tunnel to a destination: a `CONNECT`, or a connection
//! the kernel redirected to the transparent listener. Identity is checked here once per
//! tunnel (from `Proxy-Authorization`, or the pod's own token), then the egress guard; the
//! tunnel is a decision like any request, committed to the audit log before the agent
//! hears `200` (or, redirected, before its handshake is answered).

use std::net::SocketAddr;
use std::time::Instant;

use http::uri::Scheme;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::assembly::Pipeline;
use super::record::log_request;
use super::refusal::{audit_unavailable, bad_request, loop_detected, misdirected};
use super::target::{Tunnel, upstream_authority};
use super::trail::Trail;
use crate::authority::{normalize_host, split_authority};
use crate::body::ProxyBody;
use crate::error::Denial;
use crate::gates;
use crate::gates::identity::Claim;
use crate::headers;

/// What the transparent listener learned of a redirected connection before any gate.
pub struct Redirect {
    /// The destination the agent dialed (`SO_ORIGINAL_DST`).
    pub original: SocketAddr,
    /// The name it asked for (TLS SNI or `Host`, else the original IP) and its scheme, or
    /// why the connection cannot be attributed to a destination.
    pub name: Result<(String, Scheme), Denial>,
}

impl Pipeline {
    /// Decides whether a `CONNECT` may open a tunnel to its target; refusals come back as
    /// the response to send. Logged like every other request.
    pub async fn open_tunnel(
        &self,
        req: &Request<Incoming>,
        client: SocketAddr,
    ) -> Result<Tunnel, Response<ProxyBody>> {
        let started = Instant::now();
        let request_id = self.request_id();
        let target = req.uri().authority().map(|a| a.as_str()).unwrap_or("");
        let mut trail = Trail::default();
        let result = self.admit_tunnel(req, client, &mut trail).await;
        let method = Some(&Method::CONNECT);
        self.conclude(&request_id, &trail, method, target, client, started, result)
            .await
            .map_err(|d| d.into_response(&request_id))
    }

    /// Decides whether a redirected connection may be served: the pod is the caller, and
    /// the name it asked for must resolve to the address it dialed. The record's method is
    /// empty (nothing was sent yet) and its reasons name the original destination.
    pub async fn open_redirect(
        &self,
        redirect: Redirect,
        client: SocketAddr,
    ) -> Result<Tunnel, (Denial, String)> {
        let started = Instant::now();
        let request_id = self.request_id();
        let mut trail = Trail {
            redirected: Some(format!(
                "transparent: original destination {}",
                redirect.original
            )),
            ..Trail::default()
        };
        let target = match &redirect.name {
            Ok((host, _)) => format_target(host, redirect.original.port()),
            Err(_) => redirect.original.to_string(),
        };
        let result = self.admit_redirect(redirect, client, &mut trail).await;
        self.conclude(&request_id, &trail, None, &target, client, started, result)
            .await
            .map_err(|d| (d, request_id))
    }

    /// Records a tunnel's decision (committed before it is used), counts and logs it.
    #[allow(clippy::too_many_arguments)]
    async fn conclude(
        &self,
        request_id: &str,
        trail: &Trail,
        method: Option<&Method>,
        target: &str,
        client: SocketAddr,
        started: Instant,
        mut result: Result<Tunnel, Denial>,
    ) -> Result<Tunnel, Denial> {
        let record = self.decision(request_id, trail, method, target, "", result.as_ref().err());
        if result.is_ok() {
            if let Err(e) = self.c.audit.commit(record).await {
                result = Err(audit_unavailable(e));
            }
        } else {
            self.record_refusal(record).await;
        }
        let (status, denied) = match &result {
            Ok(_) => (StatusCode::OK, None),
            Err(d) => (d.status, Some(d)),
        };
        self.c
            .metrics
            .tunnel(denied.map(|d| d.gate), started.elapsed());
        log_request(
            request_id,
            client,
            trail,
            method.unwrap_or(&Method::CONNECT),
            target,
            "",
            status,
            denied,
            started,
        );
        result
    }

    async fn admit_tunnel(
        &self,
        req: &Request<Incoming>,
        client: SocketAddr,
        trail: &mut Trail,
    ) -> Result<Tunnel, Denial> {
        let authority = req
            .uri()
            .authority()
            .ok_or_else(|| bad_request("CONNECT needs a host:port target"))?;
        let (host, port) = match split_authority(authority.as_str()) {
            Some((host, Some(port))) if port != 0 => (host, port),
            _ => return Err(bad_request("CONNECT target must be host:port")),
        };
        let host = normalize_host(host).ok_or_else(|| {
            bad_request(format!("CONNECT target {authority} is not a valid host"))
        })?;
        if headers::has_looped(req.headers(), &self.via_token) {
            return Err(loop_detected());
        }
        // Identity before the guard: an anonymous CONNECT costs no DNS lookup.
        let claim = Claim::of_request(
            req.headers(),
            client.ip().is_loopback(),
            self.c.loopback_is_pod,
        );
        let caller = gates::identity::verify(&self.c.identity, claim)?;
        trail.caller = Some(caller.clone());
        self.c.guard.check(&host, port).await?;
        Ok(Tunnel {
            scheme: Scheme::HTTPS,
            authority: upstream_authority(&host, port, 443)?,
            host,
            port,
            misdirected: None,
            client,
            caller,
        })
    }

    async fn admit_redirect(
        &self,
        redirect: Redirect,
        client: SocketAddr,
        trail: &mut Trail,
    ) -> Result<Tunnel, Denial> {
        let (host, scheme) = redirect.name?;
        let original = redirect.original;
        let caller = gates::identity::verify(&self.c.identity, Claim::Pod)?;
        trail.caller = Some(caller.clone());
        // The name must be where the agent was going: otherwise a connection to one host
        // could be judged as a request to another (SNI or Host set to an allowed name).
        let addrs = self.c.guard.check(&host, original.port()).await?;
        if !addrs.iter().any(|a| a.ip() == original.ip()) {
            return Err(misdirected(format!(
                "{host} does not resolve to {}, the address this connection was made to",
                original.ip()
            )));
        }
        let default_port = if scheme == Scheme::HTTP { 80 } else { 443 };
        Ok(Tunnel {
            authority: upstream_authority(&host, original.port(), default_port)?,
            scheme,
            host,
            port: original.port(),
            misdirected: None,
            client,
            caller,
        })
    }
}

/// `host:port`, with brackets for an IPv6 literal.
fn format_target(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
