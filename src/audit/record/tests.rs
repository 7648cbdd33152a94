//! The exact bytes of one record of every kind and shape. The format is a contract with
//! outside verifiers: these strings change only with `docs/audit-format.md`. They were
//! recorded from the hand-built JSON maps the call sites wrote before records were typed.
#![allow(clippy::unwrap_used)]

mod cases;

use serde_json::{Value, json};

use super::*;
use crate::audit::chain;
use cases::*;

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
        "decision budget and shadow",
        r#"{"agent":"spiffe://example.org/agent/ci","budgets":[{"exceeded":true,"key":["external-mail","spiffe://example.org/agent/ci"],"limit":20,"used":20,"window":"1h"}],"effect":"deny","error":"budget_exceeded","gate":"policy","host":"gmail.googleapis.com","instance":"0a1b2c3d","jti":null,"kind":"decision","method":"POST","mode":"enforce","path":"/send","policy_effect":"allow","policy_hash":"ab12cd","reasons":["budget external-mail used up"],"request_id":"0a1b2c3d-24","seq":42,"shadow":{"effect":"deny","policy_hash":"ef34","reasons":["candidate says no"]},"status":403,"tenant":null,"ts":1795654648428610}"#,
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
        r#"{"detail":{"dir":"/etc/agentgate/policies","error":"policy.cedar:3: unexpected token","in_force":"ab12cd","shadow":true,"tenant":"acme"},"event":"policy_reload_failed","instance":"0a1b2c3d","kind":"admin","seq":42,"tenant":"acme","ts":1795654648428610}"#,
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
        let text = record.seal(INSTANCE, SEQ, TS).unwrap();
        assert_eq!(text, *golden, "{name}");
        // What Python's json.dumps(sort_keys=True) would write for the same record.
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(chain::canonical(&parsed), text, "{name} is not canonical");
    }
}

#[test]
fn readers_decode_what_the_writer_encoded() {
    for (name, record) in cases() {
        let text = record.seal(INSTANCE, SEQ, TS).unwrap();
        let stored = Stored::decode(&text)
            .map_err(|e| format!("{name}: {e}"))
            .unwrap();
        assert_eq!((stored.seq, stored.ts), (SEQ, TS), "{name}");
        assert_eq!(stored.instance, INSTANCE, "{name}");
        assert_eq!(stored.record, record, "{name}");
        assert_eq!(
            stored.record.seal(INSTANCE, SEQ, TS).unwrap(),
            text,
            "{name}"
        );
        assert_eq!(serde_json::from_str::<Head>(&text).unwrap().seq, SEQ);
    }
}

#[test]
fn a_detail_of_another_shape_stays_open() {
    // The admin API takes any event name; one that happens to be a typed event's keeps
    // its own detail.
    let posted = admin("panic", None, Detail::Other(json!({"subject": "x"})));
    let text = posted.seal(INSTANCE, SEQ, TS).unwrap();
    assert_eq!(Stored::decode(&text).unwrap().record, posted);
}

#[test]
fn tenant_and_agent_come_from_the_record() {
    let d = decision_allowed();
    assert_eq!(d.tenant(), Some("acme"));
    assert_eq!(d.decided_by(), Some(AGENT));
    assert_eq!(outcome_full().decided_by(), None);
    assert_eq!(consent_late_answer().tenant(), Some("acme"));
    assert_eq!(config_loaded().tenant(), None);
}

#[tokio::test]
async fn the_writer_stores_the_encoded_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let state = crate::state::StateDir::open_or_create(dir.path().to_owned()).unwrap();
    let config = crate::audit::AuditConfig::default();
    let audit = crate::audit::Audit::open(&config, &state, INSTANCE, Default::default()).unwrap();
    let mut live = audit.subscribe();
    let seq = audit.commit(decision_allowed()).await.unwrap();
    audit.close().await;
    let committed = live.recv().await.unwrap();
    assert_eq!(committed.seq, seq);
    assert_eq!(committed.tenant.as_deref(), Some("acme"));
    assert!(
        audit.last_seen().get(AGENT).is_some(),
        "the decision's agent was noted"
    );
    let conn = rusqlite::Connection::open(config.db_path(&state)).unwrap();
    let text: String = conn
        .query_row(
            "SELECT record FROM records WHERE seq = ?1",
            [seq as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(text, committed.record);
    let expected = decision_allowed()
        .seal(INSTANCE, seq, committed.ts)
        .unwrap();
    assert_eq!(text, expected);
}
