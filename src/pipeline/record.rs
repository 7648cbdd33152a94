//! What is written about each request: its decision record (audit log) and its log line.

use std::net::SocketAddr;
use std::time::Instant;

use http::{Method, StatusCode};

use super::{Facts, Pipeline};
use crate::audit::record::{self, Record};
use crate::error::{Denial, Gate};

impl Pipeline {
    /// The decision record of one request; `denial` is `None` for an allowed one.
    pub(super) fn decision(
        &self,
        request_id: &str,
        facts: &Facts,
        // `None` when the request never parsed far enough to have one.
        method: Option<&Method>,
        host: &str,
        path: &str,
        denial: Option<&Denial>,
    ) -> Record {
        let caller = facts.caller.as_deref();
        let mut reasons: Vec<String> = Vec::new();
        let policy = facts.decision.as_ref().map(|d| {
            reasons.extend(d.reasons.iter().cloned());
            record::PolicyNote {
                policy_effect: d.effect.as_str().into(),
                policy_hash: d.policy_hash.to_string(),
                mode: self.policies.mode().as_str().into(),
                scopes: d.scopes.clone(),
            }
        });
        let consent = facts.consent.as_ref().map(|c| match c {
            Ok(g) => record::ConsentNote::Approved {
                id: g.id.clone(),
                scope: g.scope.into(),
                by: g.answered_by.clone(),
                how: g.how.clone(),
            },
            Err(d) => record::ConsentNote::Refused {
                id: d
                    .extra
                    .as_ref()
                    .and_then(|e| e.fields.get("consent_id"))
                    .and_then(|id| id.as_str())
                    .map(str::to_owned),
                error: d.error.into(),
            },
        });
        let credential = facts.injection.as_ref().map(|i| {
            let c = &i.grant.credential;
            record::CredentialNote {
                expires: c.expires,
                fingerprint: c.fingerprint.clone(),
                grant_expires: i.grant.expires,
                id: c.connection.id.clone(),
                kind: c.connection.kind.as_str().into(),
            }
        });
        let verdict = match denial {
            None => record::Verdict::Allow,
            Some(d) => {
                // A policy denial's reasons are the policy's own, already listed.
                if d.gate != Gate::Policy {
                    reasons.push(d.reason.to_string());
                }
                record::Verdict::Deny {
                    gate: d.gate.as_str().into(),
                    status: d.status.as_u16(),
                    error: d.error.into(),
                }
            }
        };
        Record::from(record::Decision {
            request_id: request_id.to_owned(),
            agent: caller.map(|c| c.spiffe_id.clone()),
            tenant: caller.and_then(|c| c.tenant.clone()),
            jti: caller.and_then(|c| c.jti.clone()),
            method: method.map(|m| m.as_str().to_owned()),
            host: host.to_owned(),
            // Path only: query strings carry secrets (Slack's `token=`).
            path: path.to_owned(),
            sent: facts.sent.as_ref().map(Sent::to_record),
            tuple: facts.tuple.as_ref().map(|t| record::Tuple {
                action: t.json["action"].clone(),
                resource: t.json["resource"].clone(),
                context: t.json["context"].clone(),
            }),
            policy,
            consent,
            credential,
            reference: facts.injection.as_ref().is_some_and(|i| i.reference),
            verdict,
            reasons,
        })
    }

    /// Records a request that the HTTP parser refused before it reached the flow (hyper
    /// answered it `400`/`431`), so that refusal has its decision record like every other.
    /// Connections merely closed or timed out are not requests and leave no record.
    pub async fn record_parse_refusal(&self, client: SocketAddr, host: &str, error: &hyper::Error) {
        let (status, code) = if error.is_parse_too_large() {
            (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            )
        } else if error.is_parse() {
            (StatusCode::BAD_REQUEST, "bad_request")
        } else {
            return;
        };
        let started = Instant::now();
        let request_id = self.request_id();
        let denial = Denial::new(Gate::Ingress, status, code, error.to_string());
        let record = self.decision(
            &request_id,
            &Facts::default(),
            None,
            host,
            "",
            Some(&denial),
        );
        tracing::info!(target: "agentgate::request", %request_id, client = %client, host, status = status.as_u16(), denied_by = "ingress", error = code, reason = %error);
        self.record_refusal(record).await;
        self.metrics.request(Some(Gate::Ingress), started.elapsed());
    }

    /// Commits a refusal's record; a failure is logged (nothing was forwarded anyway).
    pub(super) async fn record_refusal(&self, record: Record) {
        if let Err(e) = self.audit.commit(record).await {
            tracing::error!(error = %e, "refusal not recorded in the audit log");
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn log_request(
    request_id: &str,
    client: SocketAddr,
    facts: &Facts,
    method: &Method,
    host: &str,
    path: &str,
    status: StatusCode,
    denied: Option<&Denial>,
    started: Instant,
) {
    tracing::info!(
        target: "agentgate::request",
        request_id,
        client = %client,
        agent = facts.caller.as_deref().map(|c| c.spiffe_id.as_str()),
        method = %method,
        host,
        path,
        action = facts.tuple.as_ref().map(|t| &*t.action),
        resource = facts.tuple.as_ref().map(|t| t.resource_id.as_str()),
        policy = facts.decision.as_ref().map(|d| d.effect.as_str()),
        credential = facts.injection.as_ref().map(|i| i.grant.credential.fingerprint.as_str()),
        status = status.as_u16(),
        denied_by = denied.map(|d| d.gate.as_str()),
        error = denied.map(|d| d.error),
        reason = denied.map(|d| &*d.reason),
        duration_us = started.elapsed().as_micros() as u64,
    );
}

/// What a forwarded request sends upstream, as its decision record says (`sent`), so the
/// record can be held against what the upstream received.
pub(super) struct Sent {
    method: http::Method,
    target_sha256: [u8; 32],
    headers_sha256: [u8; 32],
    headers: serde_json::Map<String, serde_json::Value>,
    body_sha256: Option<[u8; 32]>,
    body_bytes: Option<usize>,
}

impl Sent {
    /// `injected`: the token gate adds a credential (and replaces `Accept-Encoding`);
    /// `body`: the whole body's digest and length, when it was read before deciding.
    pub(super) fn new(
        parts: &http::request::Parts,
        injected: bool,
        body_sha256: Option<[u8; 32]>,
        read: Option<usize>,
    ) -> Sent {
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        Sent {
            method: parts.method.clone(),
            target_sha256: crate::digest::sha256(target.as_bytes()),
            headers_sha256: crate::headers::forwarded_digest(&parts.headers, injected),
            headers: crate::intent::meaning_headers(&parts.headers),
            body_bytes: body_sha256.map(|_| read.unwrap_or(0)),
            body_sha256,
        }
    }

    fn to_record(&self) -> record::Sent {
        record::Sent {
            body_bytes: self.body_bytes.map(|n| n as u64),
            body_sha256: self.body_sha256.map(record::Sha256),
            headers: self.headers.clone(),
            headers_sha256: record::Sha256(self.headers_sha256),
            method: self.method.as_str().to_owned(),
            target_sha256: record::Sha256(self.target_sha256),
        }
    }
}
