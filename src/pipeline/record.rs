//! What is written about each request: its decision record (audit log) and its log line.

use std::net::SocketAddr;
use std::time::Instant;

use http::{Method, StatusCode};

use super::assembly::Pipeline;
use super::trail::Trail;
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
    ) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let caller = trail.caller.as_deref();
        let mut r = self.c.audit.record("decision");
        r.insert("request_id".into(), request_id.into());
        r.insert(
            "agent".into(),
            caller.map_or(Value::Null, |c| c.spiffe_id.clone().into()),
        );
        r.insert(
            "tenant".into(),
            caller
                .and_then(|c| c.tenant.clone())
                .map_or(Value::Null, Value::from),
        );
        r.insert(
            "jti".into(),
            caller
                .and_then(|c| c.jti.clone())
                .map_or(Value::Null, Value::from),
        );
        r.insert(
            "method".into(),
            method.map_or(Value::Null, |m| m.as_str().into()),
        );
        r.insert("host".into(), host.into());
        // Path only: query strings carry secrets (Slack's `token=`).
        r.insert("path".into(), path.into());
        if let Some(sent) = &trail.sent {
            r.insert("sent".into(), sent.to_json());
        }
        if let Some(t) = &trail.tuple {
            r.insert("action".into(), t.json["action"].clone());
            r.insert("resource".into(), t.json["resource"].clone());
            r.insert("context".into(), t.json["context"].clone());
        }
        let mut reasons: Vec<Value> = Vec::new();
        if let Some(d) = &trail.decision {
            r.insert("policy_effect".into(), d.effect.as_str().into());
            r.insert("policy_hash".into(), (&*d.policy_hash).into());
            r.insert("mode".into(), self.c.policies.mode().as_str().into());
            if !d.scopes.is_empty() {
                r.insert("scopes".into(), d.scopes.clone().into());
            }
            reasons.extend(d.reasons.iter().map(|s| Value::from(s.as_str())));
        }
        match (&trail.consent, denial) {
            (Some(g), _) => {
                r.insert(
                    "consent".into(),
                    serde_json::json!({"id": g.id, "status": "approved", "scope": g.scope, "by": g.answered_by, "how": g.how}),
                );
            }
            // The consent store's refusal (a body too long to bind never reached it).
            (None, Some(d)) if d.gate == Gate::Consent && d.error != BODY_TOO_LARGE => {
                let id = d
                    .extra
                    .as_ref()
                    .and_then(|e| e.fields.get("consent_id").cloned());
                r.insert(
                    "consent".into(),
                    serde_json::json!({"id": id, "error": d.error}),
                );
            }
            _ => {}
        }
        if let Some(i) = trail.injection.as_ref().and_then(|i| i.issued()) {
            let c = &i.grant.credential;
            r.insert(
                "credential".into(),
                serde_json::json!({
                    "id": c.connection.id,
                    "kind": c.connection.kind.as_str(),
                    "fingerprint": c.fingerprint,
                    "expires": c.expires,
                    "grant_expires": i.grant.expires,
                }),
            );
            if i.reference {
                r.insert("reference".into(), true.into());
            }
        }
        match denial {
            None => {
                r.insert("effect".into(), "allow".into());
                r.insert("gate".into(), Value::Null);
            }
            Some(d) => {
                r.insert("effect".into(), "deny".into());
                r.insert("gate".into(), d.gate.as_str().into());
                r.insert("status".into(), d.status.as_u16().into());
                r.insert("error".into(), d.error.into());
                // A policy denial's reasons are the policy's own, already listed.
                if d.gate != Gate::Policy {
                    reasons.push(d.reason.to_string().into());
                }
            }
        }
        r.insert("reasons".into(), Value::Array(reasons));
        r
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
    pub(super) async fn record_refusal(&self, record: serde_json::Map<String, serde_json::Value>) {
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
        policy = trail.decision.as_ref().map(|d| d.effect.as_str()),
        credential = trail.injection.as_ref().and_then(|i| i.issued()).map(|i| i.grant.credential.fingerprint.as_str()),
        status = status.as_u16(),
        denied_by = denied.map(|d| d.gate.as_str()),
        error = denied.map(|d| d.error),
        reason = denied.map(|d| &*d.reason),
        duration_us = started.elapsed().as_micros() as u64,
    );
}
