//! The exact bytes of one record of every kind, as the call sites build them. The format is
//! a contract with outside verifiers: these strings change only with `docs/audit-format.md`.

use serde_json::{Map, Value, json};

use crate::audit::chain;
use crate::digest::{hex, sha256};

const INSTANCE: &str = "0a1b2c3d";
const SEQ: u64 = 42;
const TS: i64 = 1_795_654_648_428_610;

/// What `Audit::record` starts every record with.
fn record(kind: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("kind".into(), kind.into());
    m.insert("instance".into(), INSTANCE.to_owned().into());
    m
}

/// What the writer adds before hashing.
fn seal(mut m: Map<String, Value>) -> String {
    m.insert("seq".into(), SEQ.into());
    m.insert("ts".into(), TS.into());
    chain::canonical(&Value::Object(m))
}

fn tuple_json() -> Value {
    json!({
        "action": {"name": "create_issue", "properties": {}},
        "resource": {"type": "repo", "id": "acme/widgets", "properties": {"owner": "acme"}},
        "context": {
            "host": "api.github.com",
            "path": "/repos/acme/widgets/issues",
            "query": {"token": "[redacted]", "x": "1"},
            "body": {"title": "ünïcödé \"quoted\"\n\t<tag>"},
            "body_truncated": false
        }
    })
}

fn decision_allowed() -> Map<String, Value> {
    let mut r = record("decision");
    r.insert("request_id".into(), "0a1b2c3d-1f".into());
    r.insert("agent".into(), "spiffe://example.org/agent/ci".into());
    r.insert("tenant".into(), "acme".into());
    r.insert("jti".into(), "jti-1".into());
    r.insert("method".into(), "POST".into());
    r.insert("host".into(), "api.github.com".into());
    r.insert("path".into(), "/repos/acme/widgets/issues".into());
    let mut headers = Map::new();
    headers.insert("content-type".into(), "application/json".into());
    r.insert(
        "sent".into(),
        json!({
            "method": "POST",
            "target_sha256": hex(&sha256(b"/repos/acme/widgets/issues?x=1")),
            "headers_sha256": hex(&sha256(b"headers")),
            "headers": headers,
            "body_sha256": Some(hex(&sha256(b"{}"))),
            "body_bytes": Some(2usize),
        }),
    );
    let t = tuple_json();
    r.insert("action".into(), t["action"].clone());
    r.insert("resource".into(), t["resource"].clone());
    r.insert("context".into(), t["context"].clone());
    let mut reasons: Vec<Value> = Vec::new();
    r.insert("policy_effect".into(), "allow".into());
    r.insert("policy_hash".into(), "ab12cd".into());
    r.insert("mode".into(), "enforce".into());
    r.insert("scopes".into(), vec!["repo".to_owned()].into());
    reasons.push("owners may open issues".into());
    let (by, how) = (Some("alice"), Some("cli"));
    r.insert(
        "consent".into(),
        json!({"id": "cns_00000000000000a1", "status": "approved", "scope": "once", "by": by, "how": how}),
    );
    let expires: Option<i64> = Some(1_795_658_000);
    r.insert(
        "credential".into(),
        json!({
            "id": "gh-acme",
            "kind": "github-app",
            "fingerprint": "hmac-sha256:ffee",
            "expires": expires,
            "grant_expires": 1_795_657_000i64,
        }),
    );
    r.insert("reference".into(), true.into());
    r.insert("effect".into(), "allow".into());
    r.insert("gate".into(), Value::Null);
    r.insert("reasons".into(), Value::Array(reasons));
    r
}

/// Refused at the consent gate, with the consent's id; no `sent`, no credential.
fn decision_consent_refused() -> Map<String, Value> {
    let mut r = record("decision");
    r.insert("request_id".into(), "0a1b2c3d-20".into());
    r.insert("agent".into(), "spiffe://example.org/agent/ci".into());
    r.insert("tenant".into(), Value::Null);
    r.insert("jti".into(), Value::Null);
    r.insert("method".into(), "DELETE".into());
    r.insert("host".into(), "api.github.com".into());
    r.insert("path".into(), "/repos/acme/widgets".into());
    let t = tuple_json();
    r.insert("action".into(), t["action"].clone());
    r.insert("resource".into(), t["resource"].clone());
    r.insert("context".into(), t["context"].clone());
    let mut reasons: Vec<Value> = Vec::new();
    r.insert("policy_effect".into(), "escalate".into());
    r.insert("policy_hash".into(), "ab12cd".into());
    r.insert("mode".into(), "enforce".into());
    reasons.push("deleting a repository needs a person".into());
    let id: Option<Value> = Some("cns_00000000000000a2".into());
    r.insert(
        "consent".into(),
        json!({"id": id, "error": "consent_denied"}),
    );
    r.insert("effect".into(), "deny".into());
    r.insert("gate".into(), "consent".into());
    r.insert("status".into(), 403u16.into());
    r.insert("error".into(), "consent_denied".into());
    reasons.push("alice denied it".to_string().into());
    r.insert("reasons".into(), Value::Array(reasons));
    r
}

/// Refused at the consent gate before a consent existed (`id` null), in observe mode.
fn decision_consent_unavailable() -> Map<String, Value> {
    let mut r = record("decision");
    r.insert("request_id".into(), "0a1b2c3d-21".into());
    r.insert("agent".into(), "spiffe://example.org/agent/ci".into());
    r.insert("tenant".into(), "acme".into());
    r.insert("jti".into(), Value::Null);
    r.insert("method".into(), "PUT".into());
    r.insert("host".into(), "slack.com".into());
    r.insert("path".into(), "/api/chat.postMessage".into());
    let mut reasons: Vec<Value> = Vec::new();
    r.insert("policy_effect".into(), "escalate".into());
    r.insert("policy_hash".into(), "".into());
    r.insert("mode".into(), "observe".into());
    r.insert(
        "scopes".into(),
        vec!["chat:write".to_owned(), "x".to_owned()].into(),
    );
    let id: Option<Value> = None;
    r.insert(
        "consent".into(),
        json!({"id": id, "error": "consent_unavailable"}),
    );
    r.insert("effect".into(), "deny".into());
    r.insert("gate".into(), "consent".into());
    r.insert("status".into(), 503u16.into());
    r.insert("error".into(), "consent_unavailable".into());
    reasons.push("no approver".to_string().into());
    r.insert("reasons".into(), Value::Array(reasons));
    r
}

/// The policy's own denial: its reasons only.
fn decision_policy_denied() -> Map<String, Value> {
    let mut r = record("decision");
    r.insert("request_id".into(), "0a1b2c3d-22".into());
    r.insert("agent".into(), "spiffe://example.org/agent/ci".into());
    r.insert("tenant".into(), Value::Null);
    r.insert("jti".into(), "j".into());
    r.insert("method".into(), "GET".into());
    r.insert("host".into(), "api.github.com".into());
    r.insert("path".into(), "/user".into());
    let mut reasons: Vec<Value> = Vec::new();
    r.insert("policy_effect".into(), "deny".into());
    r.insert("policy_hash".into(), "ab12cd".into());
    r.insert("mode".into(), "enforce".into());
    reasons.push("nobody reads /user".into());
    reasons.push("second reason".into());
    r.insert("effect".into(), "deny".into());
    r.insert("gate".into(), "policy".into());
    r.insert("status".into(), 403u16.into());
    r.insert("error".into(), "policy_denied".into());
    r.insert("reasons".into(), Value::Array(reasons));
    r
}

/// Refused by the HTTP parser: nothing known but the host.
fn decision_parse_refusal() -> Map<String, Value> {
    let mut r = record("decision");
    r.insert("request_id".into(), "0a1b2c3d-23".into());
    r.insert("agent".into(), Value::Null);
    r.insert("tenant".into(), Value::Null);
    r.insert("jti".into(), Value::Null);
    r.insert("method".into(), Value::Null);
    r.insert("host".into(), "".into());
    r.insert("path".into(), "".into());
    let mut reasons: Vec<Value> = Vec::new();
    r.insert("effect".into(), "deny".into());
    r.insert("gate".into(), "ingress".into());
    r.insert("status".into(), 431u16.into());
    r.insert("error".into(), "headers_too_large".into());
    reasons.push("message head is too large".to_string().into());
    r.insert("reasons".into(), Value::Array(reasons));
    r
}

/// A streamed-body forward: `sent` without the body's digest.
fn decision_streamed() -> Map<String, Value> {
    let mut r = record("decision");
    r.insert("request_id".into(), "0a1b2c3d-24".into());
    r.insert("agent".into(), "spiffe://example.org/agent/ci".into());
    r.insert("tenant".into(), Value::Null);
    r.insert("jti".into(), Value::Null);
    r.insert("method".into(), "POST".into());
    r.insert("host".into(), "uploads.github.com".into());
    r.insert("path".into(), "/upload".into());
    r.insert(
        "sent".into(),
        json!({
            "method": "POST",
            "target_sha256": hex(&sha256(b"/upload")),
            "headers_sha256": hex(&sha256(b"")),
            "headers": Map::new(),
            "body_sha256": None::<String>,
            "body_bytes": None::<usize>,
        }),
    );
    let mut reasons: Vec<Value> = Vec::new();
    r.insert("policy_effect".into(), "allow".into());
    r.insert("policy_hash".into(), "ab12cd".into());
    r.insert("mode".into(), "enforce".into());
    reasons.push("uploads allowed".into());
    let expires: Option<i64> = None;
    r.insert(
        "credential".into(),
        json!({
            "id": "gh-static",
            "kind": "static",
            "fingerprint": "hmac-sha256:00",
            "expires": expires,
            "grant_expires": 1_795_657_000i64,
        }),
    );
    r.insert("effect".into(), "allow".into());
    r.insert("gate".into(), Value::Null);
    r.insert("reasons".into(), Value::Array(reasons));
    r
}

fn outcome_full() -> Map<String, Value> {
    let mut r = record("outcome");
    r.insert("request_id".into(), "0a1b2c3d-1f".to_owned().into());
    r.insert("tenant".into(), "acme".to_owned().into());
    r.insert("status".into(), 201u16.into());
    r.insert("bytes_up".into(), 2u64.into());
    r.insert("body_sha256".into(), hex(&sha256(b"{}")).into());
    r.insert("bytes_down".into(), 5120u64.into());
    r.insert("duration_us".into(), 183_004u64.into());
    r.insert("complete".into(), true.into());
    r.insert("redacted".into(), 2u64.into());
    r.insert(
        "unscanned".into(),
        "content-encoding gzip".to_owned().into(),
    );
    r
}

fn outcome_cut_short() -> Map<String, Value> {
    let mut r = record("outcome");
    r.insert("request_id".into(), "0a1b2c3d-24".to_owned().into());
    r.insert("status".into(), 200u16.into());
    r.insert("bytes_up".into(), 0u64.into());
    r.insert("body_sha256".into(), Value::Null);
    r.insert("bytes_down".into(), 0u64.into());
    r.insert("duration_us".into(), 7u64.into());
    r.insert("complete".into(), false.into());
    r
}

fn upgrade_closed() -> Map<String, Value> {
    let mut r = record("upgrade");
    r.insert("request_id".into(), "0a1b2c3d-30".into());
    r.insert("tenant".into(), "acme".into());
    r.insert("bytes_up".into(), 1234u64.into());
    r.insert("bytes_down".into(), 56789u64.into());
    r.insert("ended".into(), "closed".into());
    r
}

fn upgrade_failed() -> Map<String, Value> {
    let mut r = record("upgrade");
    r.insert("request_id".into(), "0a1b2c3d-31".into());
    r.insert("ended".into(), "failed".into());
    r
}

fn upgrade_panic() -> Map<String, Value> {
    let mut r = record("upgrade");
    r.insert("request_id".into(), "0a1b2c3d-32".into());
    r.insert("bytes_up".into(), 0u64.into());
    r.insert("bytes_down".into(), 0u64.into());
    r.insert("ended".into(), "panic".into());
    r
}

/// `Audit::tenant_event`, as the admin API, the CLI and startup use it.
fn admin_event(tenant: Option<&str>, event: &str, detail: Value) -> Map<String, Value> {
    let mut m = record("admin");
    m.insert("event".into(), event.into());
    if let Some(t) = tenant {
        m.insert("tenant".into(), t.into());
    }
    m.insert("detail".into(), detail);
    m
}

fn config_loaded() -> Map<String, Value> {
    let mut tenants = Map::new();
    tenants.insert(
        "acme".into(),
        json!({"policy_dir": "/var/lib/agentgate/tenants/acme/policies", "policy_hash": "99"}),
    );
    let mut loaded = record("admin");
    loaded.insert("event".into(), "config_loaded".into());
    loaded.insert(
        "detail".into(),
        json!({
            "proxy": "127.0.0.1:8080",
            "admin": "127.0.0.1:8081",
            "durability": "fsync",
            "trust_domain": "example.org",
            "workload_api": false,
            "policy_dir": "/var/lib/agentgate/policies",
            "policy_hash": "ab12cd",
            "policy_mode": "enforce",
            "tenants": tenants,
            "catalog_operations": 1234usize,
        }),
    );
    loaded
}

fn panic_step(event: &str, tenant: Option<&str>) -> Map<String, Value> {
    let mut r = record("admin");
    r.insert("event".into(), event.into());
    if let Some(t) = tenant {
        r.insert("tenant".into(), t.into());
    }
    let owned = [
        "spiffe://example.org/tenant/acme/a".to_owned(),
        "spiffe://example.org/tenant/acme/b".to_owned(),
    ];
    let agents: Vec<&String> = owned.iter().collect();
    let detail = json!({"step": "identity", "count": 2u64, "detail": "revoked", "ms": 3u64});
    r.insert(
        "detail".into(),
        json!({
            "panic_id": "panic_0102030405ab",
            "reason": "leaked token",
            "agents": agents,
            "step": detail,
        }),
    );
    r
}

fn credential_issued() -> Map<String, Value> {
    let expires: Option<i64> = Some(1_795_658_000);
    let mut r = record("admin");
    r.insert("event".into(), "credential_issued".into());
    r.insert(
        "detail".into(),
        json!({
            "connection": "gh-acme",
            "service": "github",
            "kind": "github-app",
            "fingerprint": "hmac-sha256:ffee",
            "expires": expires,
        }),
    );
    r
}

fn policy_reload(tenant: Option<String>, failed: bool) -> Map<String, Value> {
    let dir = std::path::PathBuf::from("/etc/agentgate/policies");
    let (event, detail) = if failed {
        let error = "policy.cedar:3: unexpected token".to_owned();
        (
            "policy_reload_failed",
            json!({"dir": dir.display().to_string(), "error": error, "in_force": "ab12cd", "tenant": tenant}),
        )
    } else {
        let hash: std::sync::Arc<str> = "cd34".into();
        (
            "policy_reloaded",
            json!({"dir": dir.display().to_string(), "hash": &*hash, "tenant": tenant}),
        )
    };
    let mut r = record("admin");
    r.insert("event".into(), event.into());
    if let Some(t) = &tenant {
        r.insert("tenant".into(), t.as_str().into());
    }
    r.insert("detail".into(), detail);
    r
}

/// A consent's life event (`announce`), with every optional field set or every one unset.
fn consent_change(event: &str, full: bool) -> Map<String, Value> {
    let some = |s: &str| full.then(|| s.to_owned());
    let tenant = some("acme");
    let mut r = record("admin");
    r.insert("event".into(), event.into());
    if let Some(t) = &tenant {
        r.insert("tenant".into(), t.as_str().into());
    }
    let window_until: Option<i64> = full.then_some(1_795_659_000);
    r.insert(
        "detail".into(),
        json!({
            "consent_id": "cns_00000000000000a1",
            "agent": "spiffe://example.org/agent/ci",
            "action": "delete_repo",
            "resource": {"type": "repo", "id": "acme/widgets"},
            "digest": "d1g35t",
            "status": if full { "approved" } else { "pending" },
            "by": some("alice"),
            "how": some("ciba"),
            "reason": some("looks fine"),
            "window_until": window_until,
            "backend": "ciba",
            "auth_req_id": some("auth-req-1"),
        }),
    );
    r
}

fn consent_late_answer() -> Map<String, Value> {
    let mut r = record("admin");
    r.insert("event".into(), "consent_late_answer".into());
    r.insert("tenant".into(), "acme".into());
    r.insert(
        "detail".into(),
        json!({"consent_id": "cns_00000000000000a1", "agent": "spiffe://example.org/agent/ci", "answer": "approved", "by": "bob", "how": "api"}),
    );
    r
}

fn consent_approvals_ended() -> Map<String, Value> {
    let a = "spiffe://example.org/agent/ci".to_owned();
    let agents: Vec<&String> = vec![&a];
    let mut r = record("admin");
    r.insert("event".into(), "consent_approvals_ended".into());
    r.insert(
        "detail".into(),
        json!({"count": 3usize, "reason": "leaked token", "agents": agents}),
    );
    r
}

/// Every kind and shape, in a fixed order, with the bytes each must encode to.
fn cases() -> Vec<(&'static str, Map<String, Value>)> {
    vec![
        ("decision allowed", decision_allowed()),
        ("decision consent refused", decision_consent_refused()),
        (
            "decision consent unavailable",
            decision_consent_unavailable(),
        ),
        ("decision policy denied", decision_policy_denied()),
        ("decision parse refusal", decision_parse_refusal()),
        ("decision streamed", decision_streamed()),
        ("outcome full", outcome_full()),
        ("outcome cut short", outcome_cut_short()),
        ("upgrade closed", upgrade_closed()),
        ("upgrade failed", upgrade_failed()),
        ("upgrade panic", upgrade_panic()),
        ("config loaded", config_loaded()),
        (
            "tenant event",
            admin_event(
                Some("acme"),
                "agent_registered",
                json!({"subject": "spiffe://example.org/tenant/acme/a"}),
            ),
        ),
        (
            "admin event",
            admin_event(None, "key_rotated", json!({"kid": "k2"})),
        ),
        ("panic", panic_step("panic", Some("acme"))),
        ("credential revoked", panic_step("credential_revoked", None)),
        ("credential issued", credential_issued()),
        ("policy reloaded", policy_reload(None, false)),
        (
            "policy reload failed",
            policy_reload(Some("acme".into()), true),
        ),
        ("consent approved", consent_change("consent_approved", true)),
        (
            "consent requested",
            consent_change("consent_requested", false),
        ),
        ("consent late answer", consent_late_answer()),
        ("consent approvals ended", consent_approvals_ended()),
    ]
}

/// The recorded bytes, by case name (seq 42, ts fixed).
const GOLDEN: &[(&str, &str)] = &[
    (
        "decision allowed",
        r#"{"action":{"name":"create_issue","properties":{}},"agent":"spiffe://example.org/agent/ci","consent":{"by":"alice","how":"cli","id":"cns_00000000000000a1","scope":"once","status":"approved"},"context":{"body":{"title":"ünïcödé \"quoted\"\n\t<tag>"},"body_truncated":false,"host":"api.github.com","path":"/repos/acme/widgets/issues","query":{"token":"[redacted]","x":"1"}},"credential":{"expires":1795658000,"fingerprint":"hmac-sha256:ffee","grant_expires":1795657000,"id":"gh-acme","kind":"github-app"},"effect":"allow","gate":null,"host":"api.github.com","instance":"0a1b2c3d","jti":"jti-1","kind":"decision","method":"POST","mode":"enforce","path":"/repos/acme/widgets/issues","policy_effect":"allow","policy_hash":"ab12cd","reasons":["owners may open issues"],"reference":true,"request_id":"0a1b2c3d-1f","resource":{"id":"acme/widgets","properties":{"owner":"acme"},"type":"repo"},"scopes":["repo"],"sent":{"body_bytes":2,"body_sha256":"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","headers":{"content-type":"application/json"},"headers_sha256":"378f37b1fb33fa4dafba6519a48e06447ecaa58af290729cc3d357bcadd9926c","method":"POST","target_sha256":"c003e5bd2f05a7af88910b318be96f45cb5990b4b837aaed522c9ba587d4f7c3"},"seq":42,"tenant":"acme","ts":1795654648428610}"#,
    ),
    (
        "decision consent refused",
        r#"{"action":{"name":"create_issue","properties":{}},"agent":"spiffe://example.org/agent/ci","consent":{"error":"consent_denied","id":"cns_00000000000000a2"},"context":{"body":{"title":"ünïcödé \"quoted\"\n\t<tag>"},"body_truncated":false,"host":"api.github.com","path":"/repos/acme/widgets/issues","query":{"token":"[redacted]","x":"1"}},"effect":"deny","error":"consent_denied","gate":"consent","host":"api.github.com","instance":"0a1b2c3d","jti":null,"kind":"decision","method":"DELETE","mode":"enforce","path":"/repos/acme/widgets","policy_effect":"escalate","policy_hash":"ab12cd","reasons":["deleting a repository needs a person","alice denied it"],"request_id":"0a1b2c3d-20","resource":{"id":"acme/widgets","properties":{"owner":"acme"},"type":"repo"},"seq":42,"status":403,"tenant":null,"ts":1795654648428610}"#,
    ),
    (
        "decision consent unavailable",
        r#"{"agent":"spiffe://example.org/agent/ci","consent":{"error":"consent_unavailable","id":null},"effect":"deny","error":"consent_unavailable","gate":"consent","host":"slack.com","instance":"0a1b2c3d","jti":null,"kind":"decision","method":"PUT","mode":"observe","path":"/api/chat.postMessage","policy_effect":"escalate","policy_hash":"","reasons":["no approver"],"request_id":"0a1b2c3d-21","scopes":["chat:write","x"],"seq":42,"status":503,"tenant":"acme","ts":1795654648428610}"#,
    ),
    (
        "decision policy denied",
        r#"{"agent":"spiffe://example.org/agent/ci","effect":"deny","error":"policy_denied","gate":"policy","host":"api.github.com","instance":"0a1b2c3d","jti":"j","kind":"decision","method":"GET","mode":"enforce","path":"/user","policy_effect":"deny","policy_hash":"ab12cd","reasons":["nobody reads /user","second reason"],"request_id":"0a1b2c3d-22","seq":42,"status":403,"tenant":null,"ts":1795654648428610}"#,
    ),
    (
        "decision parse refusal",
        r#"{"agent":null,"effect":"deny","error":"headers_too_large","gate":"ingress","host":"","instance":"0a1b2c3d","jti":null,"kind":"decision","method":null,"path":"","reasons":["message head is too large"],"request_id":"0a1b2c3d-23","seq":42,"status":431,"tenant":null,"ts":1795654648428610}"#,
    ),
    (
        "decision streamed",
        r#"{"agent":"spiffe://example.org/agent/ci","credential":{"expires":null,"fingerprint":"hmac-sha256:00","grant_expires":1795657000,"id":"gh-static","kind":"static"},"effect":"allow","gate":null,"host":"uploads.github.com","instance":"0a1b2c3d","jti":null,"kind":"decision","method":"POST","mode":"enforce","path":"/upload","policy_effect":"allow","policy_hash":"ab12cd","reasons":["uploads allowed"],"request_id":"0a1b2c3d-24","sent":{"body_bytes":null,"body_sha256":null,"headers":{},"headers_sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","method":"POST","target_sha256":"9a5ea6ccd4dc13823617991b0dda4e3070a1cfd6b7d773ea8809175c1ee118b3"},"seq":42,"tenant":null,"ts":1795654648428610}"#,
    ),
    (
        "outcome full",
        r#"{"body_sha256":"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","bytes_down":5120,"bytes_up":2,"complete":true,"duration_us":183004,"instance":"0a1b2c3d","kind":"outcome","redacted":2,"request_id":"0a1b2c3d-1f","seq":42,"status":201,"tenant":"acme","ts":1795654648428610,"unscanned":"content-encoding gzip"}"#,
    ),
    (
        "outcome cut short",
        r#"{"body_sha256":null,"bytes_down":0,"bytes_up":0,"complete":false,"duration_us":7,"instance":"0a1b2c3d","kind":"outcome","request_id":"0a1b2c3d-24","seq":42,"status":200,"ts":1795654648428610}"#,
    ),
    (
        "upgrade closed",
        r#"{"bytes_down":56789,"bytes_up":1234,"ended":"closed","instance":"0a1b2c3d","kind":"upgrade","request_id":"0a1b2c3d-30","seq":42,"tenant":"acme","ts":1795654648428610}"#,
    ),
    (
        "upgrade failed",
        r#"{"ended":"failed","instance":"0a1b2c3d","kind":"upgrade","request_id":"0a1b2c3d-31","seq":42,"ts":1795654648428610}"#,
    ),
    (
        "upgrade panic",
        r#"{"bytes_down":0,"bytes_up":0,"ended":"panic","instance":"0a1b2c3d","kind":"upgrade","request_id":"0a1b2c3d-32","seq":42,"ts":1795654648428610}"#,
    ),
    (
        "config loaded",
        r#"{"detail":{"admin":"127.0.0.1:8081","catalog_operations":1234,"durability":"fsync","policy_dir":"/var/lib/agentgate/policies","policy_hash":"ab12cd","policy_mode":"enforce","proxy":"127.0.0.1:8080","tenants":{"acme":{"policy_dir":"/var/lib/agentgate/tenants/acme/policies","policy_hash":"99"}},"trust_domain":"example.org","workload_api":false},"event":"config_loaded","instance":"0a1b2c3d","kind":"admin","seq":42,"ts":1795654648428610}"#,
    ),
    (
        "tenant event",
        r#"{"detail":{"subject":"spiffe://example.org/tenant/acme/a"},"event":"agent_registered","instance":"0a1b2c3d","kind":"admin","seq":42,"tenant":"acme","ts":1795654648428610}"#,
    ),
    (
        "admin event",
        r#"{"detail":{"kid":"k2"},"event":"key_rotated","instance":"0a1b2c3d","kind":"admin","seq":42,"ts":1795654648428610}"#,
    ),
    (
        "panic",
        r#"{"detail":{"agents":["spiffe://example.org/tenant/acme/a","spiffe://example.org/tenant/acme/b"],"panic_id":"panic_0102030405ab","reason":"leaked token","step":{"count":2,"detail":"revoked","ms":3,"step":"identity"}},"event":"panic","instance":"0a1b2c3d","kind":"admin","seq":42,"tenant":"acme","ts":1795654648428610}"#,
    ),
    (
        "credential revoked",
        r#"{"detail":{"agents":["spiffe://example.org/tenant/acme/a","spiffe://example.org/tenant/acme/b"],"panic_id":"panic_0102030405ab","reason":"leaked token","step":{"count":2,"detail":"revoked","ms":3,"step":"identity"}},"event":"credential_revoked","instance":"0a1b2c3d","kind":"admin","seq":42,"ts":1795654648428610}"#,
    ),
    (
        "credential issued",
        r#"{"detail":{"connection":"gh-acme","expires":1795658000,"fingerprint":"hmac-sha256:ffee","kind":"github-app","service":"github"},"event":"credential_issued","instance":"0a1b2c3d","kind":"admin","seq":42,"ts":1795654648428610}"#,
    ),
    (
        "policy reloaded",
        r#"{"detail":{"dir":"/etc/agentgate/policies","hash":"cd34","tenant":null},"event":"policy_reloaded","instance":"0a1b2c3d","kind":"admin","seq":42,"ts":1795654648428610}"#,
    ),
    (
        "policy reload failed",
        r#"{"detail":{"dir":"/etc/agentgate/policies","error":"policy.cedar:3: unexpected token","in_force":"ab12cd","tenant":"acme"},"event":"policy_reload_failed","instance":"0a1b2c3d","kind":"admin","seq":42,"tenant":"acme","ts":1795654648428610}"#,
    ),
    (
        "consent approved",
        r#"{"detail":{"action":"delete_repo","agent":"spiffe://example.org/agent/ci","auth_req_id":"auth-req-1","backend":"ciba","by":"alice","consent_id":"cns_00000000000000a1","digest":"d1g35t","how":"ciba","reason":"looks fine","resource":{"id":"acme/widgets","type":"repo"},"status":"approved","window_until":1795659000},"event":"consent_approved","instance":"0a1b2c3d","kind":"admin","seq":42,"tenant":"acme","ts":1795654648428610}"#,
    ),
    (
        "consent requested",
        r#"{"detail":{"action":"delete_repo","agent":"spiffe://example.org/agent/ci","auth_req_id":null,"backend":"ciba","by":null,"consent_id":"cns_00000000000000a1","digest":"d1g35t","how":null,"reason":null,"resource":{"id":"acme/widgets","type":"repo"},"status":"pending","window_until":null},"event":"consent_requested","instance":"0a1b2c3d","kind":"admin","seq":42,"ts":1795654648428610}"#,
    ),
    (
        "consent late answer",
        r#"{"detail":{"agent":"spiffe://example.org/agent/ci","answer":"approved","by":"bob","consent_id":"cns_00000000000000a1","how":"api"},"event":"consent_late_answer","instance":"0a1b2c3d","kind":"admin","seq":42,"tenant":"acme","ts":1795654648428610}"#,
    ),
    (
        "consent approvals ended",
        r#"{"detail":{"agents":["spiffe://example.org/agent/ci"],"count":3,"reason":"leaked token"},"event":"consent_approvals_ended","instance":"0a1b2c3d","kind":"admin","seq":42,"ts":1795654648428610}"#,
    ),
];

#[test]
fn every_kind_encodes_to_its_recorded_bytes() {
    let cases = cases();
    assert_eq!(cases.len(), GOLDEN.len());
    for ((name, record), (golden_name, golden)) in cases.into_iter().zip(GOLDEN) {
        assert_eq!(name, *golden_name);
        assert_eq!(seal(record), *golden, "{name}");
    }
}
