//! `CONNECT`: whether an agent may open a tunnel to a destination. Identity is checked here
//! once per tunnel (where clients send `Proxy-Authorization`), then the egress guard; the
//! tunnel is a decision like any request, committed to the audit log before the agent hears
//! `200`.

use std::net::SocketAddr;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::assembly::Pipeline;
use super::record::log_request;
use super::refusal::{audit_unavailable, bad_request, loop_detected};
use super::target::{Tunnel, upstream_authority};
use super::trail::Trail;
use crate::authority::{normalize_host, split_authority};
use crate::body::ProxyBody;
use crate::error::Denial;
use crate::gates;
use crate::gates::identity::Claim;
use crate::headers;

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
        let mut result = self.admit_tunnel(req, client, &mut trail).await;
        let record = self.decision(
            &request_id,
            &trail,
            Some(&Method::CONNECT),
            target,
            "",
            result.as_ref().err(),
        );
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
            &request_id,
            client,
            &trail,
            &Method::CONNECT,
            target,
            "",
            status,
            denied,
            started,
        );
        result.map_err(|d| d.into_response(&request_id))
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
        let caller = gates::identity::verify(&self.c.identity, Claim::Credential(req.headers()))?;
        trail.caller = Some(caller.clone());
        self.c.guard.check(&host, port).await?;
        Ok(Tunnel {
            authority: upstream_authority(&host, port, 443)?,
            host,
            port,
            misdirected: None,
            client,
            caller,
        })
    }
}
