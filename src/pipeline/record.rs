//! What is written about each request: its decision record (audit log) and its log line.

use std::net::SocketAddr;
use std::time::Instant;

use http::{Method, StatusCode};

use super::assembly::Pipeline;
use super::sent::Sent;
use super::trail::Trail;
use crate::audit::record::{self, Record};
use crate::error::{Denial, Gate};
use crate::gates::consent::BODY_TOO_LARGE;

impl Pipeline {
    /// The decision record of one request; `denial` is `None` for an allowed one.
    pub(super) fn decision(
        &self,
        request_id: &str,
        trail: &Trail,
        // `None` when the request never parsed far enough to have one.
        method: Option<&Method>,
        host: &str,
        path: &str,
        denial: Option<&Denial>,
    ) -> Record {
        let caller = trail.caller.as_deref();
        let mut reasons: Vec<String> = Vec::new();
        let policy = trail.policy.active.as_ref().map(|d| {
            reasons.extend(d.reasons.iter().cloned());
            record::PolicyNote {
                policy_effect: d.effect.as_str().into(),
                policy_hash: d.policy_hash.to_string(),
                mode: self.c.policies.mode().as_str().into(),
                scopes: d.scopes.clone(),
            }
        });
        let consent = match (&trail.consent, denial) {
            (Some(g), _) => Some(record::ConsentNote::Approved {
                id: g.id.clone(),
                scope: g.scope.into(),
                by: g.answered_by.clone(),
                how: g.how.clone(),
            }),
            // The consent store's refusal (a body too long to bind never reached it).
            (None, Some(d)) if d.gate == Gate::Consent && d.error != BODY_TOO_LARGE => {
                Some(record::ConsentNote::Refused {
                    id: d
                        .extra
                        .as_ref()
                        .and_then(|e| e.fields.get("consent_id"))
                        .and_then(|id| id.as_str())
                        .map(str::to_owned),
                    error: d.error.into(),
                })
            }
            _ => None,
        };
        let issued = trail.injection.as_ref().and_then(|i| i.issued());
        let credential = issued.map(|i| {
            let c = &i.grant.credential;
            record::CredentialNote {
                expires: c.expires,
                fingerprint: c.fingerprint.clone(),
                grant_expires: i.grant.expires,
                id: c.connection.id.clone(),
                kind: c.connection.kind.as_str().into(),
            }
        });
        reasons.extend(trail.budgets.reason.iter().cloned());
        reasons.extend(trail.redirected.iter().cloned());
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
            sent: trail.sent.as_ref().map(Sent::to_record),
            tuple: trail.tuple.as_ref().map(|t| record::Tuple {
                action: t.json["action"].clone(),
                resource: t.json["resource"].clone(),
                context: t.json["context"].clone(),
            }),
            policy,
            shadow: trail.policy.shadow.as_ref().map(|d| record::ShadowNote {
                effect: d.effect.as_str().into(),
                policy_hash: d.policy_hash.to_string(),
                reasons: d.reasons.clone(),
            }),
            budgets: (trail.budgets.notes.iter())
                .map(|u| record::BudgetNote {
                    exceeded: u.exceeded,
                    key: u.budget.key.clone(),
                    limit: u.budget.limit,
                    used: u.used,
                    window: crate::policy::budget::window_text(u.budget.window),
                })
                .collect(),
            consent,
            credential,
            reference: issued.is_some_and(|i| i.reference),
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
            &Trail::default(),
            None,
            host,
            "",
            Some(&denial),
        );
        tracing::info!(target: "agentgate::request", %request_id, client = %client, host, status = status.as_u16(), denied_by = "ingress", error = code, reason = %error);
        self.record_refusal(record).await;
        self.c
            .metrics
            .request(Some(Gate::Ingress), started.elapsed());
    }

    /// Commits a refusal's record; a failure is logged (nothing was forwarded anyway).
    pub(super) async fn record_refusal(&self, record: Record) {
        if let Err(e) = self.c.audit.commit(record).await {
            tracing::error!(error = %e, "refusal not recorded in the audit log");
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn log_request(
    request_id: &str,
    client: SocketAddr,
    trail: &Trail,
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
        agent = trail.caller.as_deref().map(|c| c.spiffe_id.as_str()),
        method = %method,
        host,
        path,
        action = trail.tuple.as_ref().map(|t| &*t.action),
        resource = trail.tuple.as_ref().map(|t| t.resource_id.as_str()),
        policy = trail.policy.active.as_ref().map(|d| d.effect.as_str()),
        credential = trail.injection.as_ref().and_then(|i| i.issued()).map(|i| i.grant.credential.fingerprint.as_str()),
        status = status.as_u16(),
        denied_by = denied.map(|d| d.gate.as_str()),
        error = denied.map(|d| d.error),
        reason = denied.map(|d| &*d.reason),
        duration_us = started.elapsed().as_micros() as u64,
    );
}
