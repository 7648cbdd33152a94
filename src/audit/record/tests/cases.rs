//! One record of every kind and shape, built as the call sites build them.

use serde_json::{Map, json};

use crate::audit::record::*;
use crate::digest::sha256;

pub(super) const INSTANCE: &str = "0a1b2c3d";
pub(super) const SEQ: u64 = 42;
pub(super) const TS: i64 = 1_795_654_648_428_610;
pub(super) const AGENT: &str = "spiffe://example.org/agent/ci";

fn s(text: &str) -> String {
    text.to_owned()
}

fn tuple() -> Option<Tuple> {
    Some(Tuple {
        action: json!({"name": "create_issue", "properties": {}}),
        resource: json!({"type": "repo", "id": "acme/widgets", "properties": {"owner": "acme"}}),
        context: json!({
            "host": "api.github.com",
            "path": "/repos/acme/widgets/issues",
            "query": {"token": "[redacted]", "x": "1"},
            "body": {"title": "ünïcödé \"quoted\"\n\t<tag>"},
            "body_truncated": false
        }),
    })
}

fn policy(effect: &'static str, hash: &str, mode: &'static str, scopes: &[&str]) -> PolicyNote {
    PolicyNote {
        policy_effect: effect.into(),
        policy_hash: s(hash),
        mode: mode.into(),
        scopes: scopes.iter().map(|x| s(x)).collect(),
    }
}

fn deny(gate: &'static str, status: u16, error: &'static str) -> Verdict {
    Verdict::Deny {
        gate: gate.into(),
        status,
        error: error.into(),
    }
}

/// A decision with nothing known beyond the request line; cases fill in the rest.
fn decision(request_id: &str, method: Option<&str>, host: &str, path: &str) -> Decision {
    Decision {
        request_id: s(request_id),
        agent: Some(s(AGENT)),
        tenant: None,
        jti: None,
        method: method.map(s),
        host: s(host),
        path: s(path),
        sent: None,
        tuple: None,
        policy: None,
        shadow: None,
        budgets: Vec::new(),
        consent: None,
        credential: None,
        reference: false,
        verdict: Verdict::Allow,
        reasons: Vec::new(),
    }
}

pub(super) fn decision_allowed() -> Record {
    let mut headers = Map::new();
    headers.insert("content-type".into(), "application/json".into());
    Record::from(Decision {
        tenant: Some(s("acme")),
        jti: Some(s("jti-1")),
        sent: Some(Sent {
            body_bytes: Some(2),
            body_sha256: Some(Sha256(sha256(b"{}"))),
            headers,
            headers_sha256: Sha256(sha256(b"headers")),
            method: s("POST"),
            target_sha256: Sha256(sha256(b"/repos/acme/widgets/issues?x=1")),
        }),
        tuple: tuple(),
        policy: Some(policy("allow", "ab12cd", "enforce", &["repo"])),
        consent: Some(ConsentNote::Approved {
            id: s("cns_00000000000000a1"),
            scope: "once".into(),
            by: Some(s("alice")),
            how: Some(s("cli")),
        }),
        credential: Some(CredentialNote {
            expires: Some(1_795_658_000),
            fingerprint: s("hmac-sha256:ffee"),
            grant_expires: 1_795_657_000,
            id: s("gh-acme"),
            kind: "github-app".into(),
        }),
        reference: true,
        reasons: vec![s("owners may open issues")],
        ..decision(
            "0a1b2c3d-1f",
            Some("POST"),
            "api.github.com",
            "/repos/acme/widgets/issues",
        )
    })
}

/// Refused at the consent gate, with the consent's id; no `sent`, no credential.
fn decision_consent_refused() -> Record {
    Record::from(Decision {
        tuple: tuple(),
        policy: Some(policy("escalate", "ab12cd", "enforce", &[])),
        consent: Some(ConsentNote::Refused {
            id: Some(s("cns_00000000000000a2")),
            error: "consent_denied".into(),
        }),
        verdict: deny("consent", 403, "consent_denied"),
        reasons: vec![
            s("deleting a repository needs a person"),
            s("alice denied it"),
        ],
        ..decision(
            "0a1b2c3d-20",
            Some("DELETE"),
            "api.github.com",
            "/repos/acme/widgets",
        )
    })
}

/// Refused at the consent gate before a consent existed (`id` null), in observe mode.
fn decision_consent_unavailable() -> Record {
    Record::from(Decision {
        tenant: Some(s("acme")),
        policy: Some(policy("escalate", "", "observe", &["chat:write", "x"])),
        consent: Some(ConsentNote::Refused {
            id: None,
            error: "consent_unavailable".into(),
        }),
        verdict: deny("consent", 503, "consent_unavailable"),
        reasons: vec![s("no approver")],
        ..decision(
            "0a1b2c3d-21",
            Some("PUT"),
            "slack.com",
            "/api/chat.postMessage",
        )
    })
}

/// The policy's own denial: its reasons only.
fn decision_policy_denied() -> Record {
    Record::from(Decision {
        jti: Some(s("j")),
        policy: Some(policy("deny", "ab12cd", "enforce", &[])),
        verdict: deny("policy", 403, "policy_denied"),
        reasons: vec![s("nobody reads /user"), s("second reason")],
        ..decision("0a1b2c3d-22", Some("GET"), "api.github.com", "/user")
    })
}

/// Over its budget, with a shadow policy that would have denied.
fn decision_budget_shadow() -> Record {
    Record::from(Decision {
        policy: Some(policy("allow", "ab12cd", "enforce", &[])),
        shadow: Some(ShadowNote {
            effect: "deny".into(),
            policy_hash: s("ef34"),
            reasons: vec![s("candidate says no")],
        }),
        budgets: vec![BudgetNote {
            exceeded: true,
            key: vec![s("external-mail"), s(AGENT)],
            limit: 20,
            used: 20,
            window: s("1h"),
        }],
        verdict: deny("policy", 403, "budget_exceeded"),
        reasons: vec![s("budget external-mail used up")],
        ..decision("0a1b2c3d-24", Some("POST"), "gmail.googleapis.com", "/send")
    })
}

/// Refused by the HTTP parser: nothing known but the host.
fn decision_parse_refusal() -> Record {
    Record::from(Decision {
        agent: None,
        verdict: deny("ingress", 431, "headers_too_large"),
        reasons: vec![s("message head is too large")],
        ..decision("0a1b2c3d-23", None, "", "")
    })
}

/// A streamed-body forward: `sent` without the body's digest.
fn decision_streamed() -> Record {
    Record::from(Decision {
        sent: Some(Sent {
            body_bytes: None,
            body_sha256: None,
            headers: Map::new(),
            headers_sha256: Sha256(sha256(b"")),
            method: s("POST"),
            target_sha256: Sha256(sha256(b"/upload")),
        }),
        policy: Some(policy("allow", "ab12cd", "enforce", &[])),
        credential: Some(CredentialNote {
            expires: None,
            fingerprint: s("hmac-sha256:00"),
            grant_expires: 1_795_657_000,
            id: s("gh-static"),
            kind: "static".into(),
        }),
        reasons: vec![s("uploads allowed")],
        ..decision("0a1b2c3d-24", Some("POST"), "uploads.github.com", "/upload")
    })
}

pub(super) fn outcome_full() -> Record {
    Record::Outcome(Outcome {
        request_id: s("0a1b2c3d-1f"),
        tenant: Some(s("acme")),
        status: 201,
        bytes_up: 2,
        body_sha256: Some(Sha256(sha256(b"{}"))),
        bytes_down: 5120,
        duration_us: 183_004,
        complete: true,
        redacted: 2,
        unscanned: Some(s("content-encoding gzip")),
    })
}

fn outcome_cut_short() -> Record {
    Record::Outcome(Outcome {
        request_id: s("0a1b2c3d-24"),
        tenant: None,
        status: 200,
        bytes_up: 0,
        body_sha256: None,
        bytes_down: 0,
        duration_us: 7,
        complete: false,
        redacted: 0,
        unscanned: None,
    })
}

fn upgrade(id: &str, tenant: Option<&str>, bytes: Option<(u64, u64)>, ended: Ended) -> Record {
    Record::Upgrade(Upgrade {
        request_id: s(id),
        tenant: tenant.map(s),
        bytes_up: bytes.map(|b| b.0),
        bytes_down: bytes.map(|b| b.1),
        ended,
    })
}

pub(super) fn admin(event: &'static str, tenant: Option<&str>, detail: Detail) -> Record {
    Record::from(Admin {
        event: event.into(),
        tenant: tenant.map(s),
        detail,
    })
}

pub(super) fn config_loaded() -> Record {
    let detail = json!({
        "proxy": "127.0.0.1:8080",
        "admin": "127.0.0.1:8081",
        "durability": "fsync",
        "trust_domain": "example.org",
        "workload_api": false,
        "policy_dir": "/var/lib/agentgate/policies",
        "policy_hash": "ab12cd",
        "policy_mode": "enforce",
        "tenants": {"acme": {"policy_dir": "/var/lib/agentgate/tenants/acme/policies", "policy_hash": "99"}},
        "catalog_operations": 1234,
    });
    admin("config_loaded", None, Detail::Other(detail))
}

fn panic_step(event: &'static str, tenant: Option<&str>) -> Record {
    let step = PanicStep {
        agents: vec![
            s("spiffe://example.org/tenant/acme/a"),
            s("spiffe://example.org/tenant/acme/b"),
        ],
        panic_id: s("panic_0102030405ab"),
        reason: s("leaked token"),
        step: json!({"step": "identity", "count": 2, "detail": "revoked", "ms": 3}),
    };
    admin(event, tenant, Detail::Panic(step))
}

fn credential_issued() -> Record {
    let issued = CredentialIssued {
        connection: s("gh-acme"),
        expires: Some(1_795_658_000),
        fingerprint: s("hmac-sha256:ffee"),
        kind: "github-app".into(),
        service: s("github"),
    };
    admin("credential_issued", None, Detail::CredentialIssued(issued))
}

fn policy_reload(tenant: Option<&str>, failed: bool) -> Record {
    let (dir, tenant_) = (s("/etc/agentgate/policies"), tenant.map(s));
    if failed {
        let detail = PolicyReloadFailed {
            dir,
            error: s("policy.cedar:3: unexpected token"),
            in_force: s("ab12cd"),
            shadow: true,
            tenant: tenant_,
        };
        admin(
            "policy_reload_failed",
            tenant,
            Detail::PolicyReloadFailed(detail),
        )
    } else {
        let detail = PolicyReloaded {
            dir,
            hash: s("cd34"),
            shadow: false,
            tenant: tenant_,
        };
        admin("policy_reloaded", tenant, Detail::PolicyReloaded(detail))
    }
}

/// A consent's life event, with every optional field set or every one unset.
fn consent_change(event: &'static str, full: bool) -> Record {
    let some = |x: &str| full.then(|| s(x));
    let change = ConsentChange {
        action: s("delete_repo"),
        agent: s(AGENT),
        auth_req_id: some("auth-req-1"),
        backend: s("ciba"),
        by: some("alice"),
        consent_id: s("cns_00000000000000a1"),
        digest: s("d1g35t"),
        how: some("ciba"),
        reason: some("looks fine"),
        resource: ResourceRef {
            id: s("acme/widgets"),
            kind: s("repo"),
        },
        status: s(if full { "approved" } else { "pending" }),
        window_until: full.then_some(1_795_659_000),
    };
    admin(event, full.then_some("acme"), Detail::Consent(change))
}

pub(super) fn consent_late_answer() -> Record {
    let late = LateAnswer {
        agent: s(AGENT),
        answer: s("approved"),
        by: s("bob"),
        consent_id: s("cns_00000000000000a1"),
        how: s("api"),
    };
    admin(
        "consent_late_answer",
        Some("acme"),
        Detail::LateAnswer(late),
    )
}

fn consent_approvals_ended() -> Record {
    let ended = ApprovalsEnded {
        agents: vec![s(AGENT)],
        count: 3,
        reason: s("leaked token"),
    };
    admin(
        "consent_approvals_ended",
        None,
        Detail::ApprovalsEnded(ended),
    )
}

/// Every kind and shape, in the order of the recorded bytes.
pub(super) fn cases() -> Vec<(&'static str, Record)> {
    let closed = upgrade(
        "0a1b2c3d-30",
        Some("acme"),
        Some((1234, 56789)),
        Ended::Closed,
    );
    let tenant_event = json!({"subject": "spiffe://example.org/tenant/acme/a"});
    vec![
        ("decision allowed", decision_allowed()),
        ("decision consent refused", decision_consent_refused()),
        (
            "decision consent unavailable",
            decision_consent_unavailable(),
        ),
        ("decision policy denied", decision_policy_denied()),
        ("decision parse refusal", decision_parse_refusal()),
        ("decision budget and shadow", decision_budget_shadow()),
        ("decision streamed", decision_streamed()),
        ("outcome full", outcome_full()),
        ("outcome cut short", outcome_cut_short()),
        ("upgrade closed", closed),
        (
            "upgrade failed",
            upgrade("0a1b2c3d-31", None, None, Ended::Failed),
        ),
        (
            "upgrade panic",
            upgrade("0a1b2c3d-32", None, Some((0, 0)), Ended::Panic),
        ),
        ("config loaded", config_loaded()),
        (
            "tenant event",
            admin(
                "agent_registered",
                Some("acme"),
                Detail::Other(tenant_event),
            ),
        ),
        (
            "admin event",
            admin("key_rotated", None, Detail::Other(json!({"kid": "k2"}))),
        ),
        ("panic", panic_step("panic", Some("acme"))),
        ("credential revoked", panic_step("credential_revoked", None)),
        ("credential issued", credential_issued()),
        ("policy reloaded", policy_reload(None, false)),
        ("policy reload failed", policy_reload(Some("acme"), true)),
        ("consent approved", consent_change("consent_approved", true)),
        (
            "consent requested",
            consent_change("consent_requested", false),
        ),
        ("consent late answer", consent_late_answer()),
        ("consent approvals ended", consent_approvals_ended()),
    ]
}
