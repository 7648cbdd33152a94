//! Replay against a log written by the real audit writer: the report agrees with deciding
//! every recorded tuple one by one, identical inputs are evaluated once, filters select,
//! and a tampered log is refused.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::*;
use crate::audit::record::{self, Record};
use crate::audit::{Audit, AuditConfig, Durability};
use crate::intent::Intent;
use crate::policy::{PolicyConfig, Sources, runner};
use crate::state::StateDir;

const CANDIDATE: &str = r#"package agentgate
import rego.v1
decision := {"effect": "allow", "reasons": ["acme reads"]} if {
    input.action.properties.class == "read"
    startswith(input.resource.id, "acme/")
} else := {"effect": "escalate", "reasons": ["bot writes need a person"]} if {
    input.subject.properties.owner == "alice"
} else := {"effect": "deny", "reasons": ["candidate denies"]}
"#;

fn policy(rego: &str) -> Policy {
    let mut sources = Sources::default();
    sources.rego.push(("p.rego".into(), rego.into()));
    Policy::from_sources(&sources, &PolicyConfig::default()).unwrap()
}

fn default_policy() -> Policy {
    Policy::from_sources(&crate::policy::default_sources(), &PolicyConfig::default()).unwrap()
}

/// A decision record as the pipeline writes it for `input`, decided by `active`.
fn recorded(input: &Value, active: &Policy, n: usize) -> Record {
    let d = active.evaluate(input);
    Record::from(record::Decision {
        request_id: format!("r-{n}"),
        agent: input["subject"]["id"].as_str().map(str::to_owned),
        tenant: None,
        jti: None,
        method: Some("GET".into()),
        host: "api.github.com".into(),
        path: "/x".into(),
        sent: None,
        tuple: Some(record::Tuple {
            action: input["action"].clone(),
            resource: input["resource"].clone(),
            context: input["context"].clone(),
        }),
        policy: Some(record::PolicyNote {
            policy_effect: d.effect.as_str().into(),
            policy_hash: d.policy_hash.to_string(),
            mode: "enforce".into(),
            scopes: Vec::new(),
        }),
        shadow: None,
        budgets: Vec::new(),
        consent: None,
        credential: None,
        reference: false,
        verdict: record::Verdict::Allow,
        reasons: d.reasons,
    })
}

/// Inputs of a few kinds of request by two agents, `n` in all, with repeats.
fn inputs(n: usize) -> Vec<Value> {
    let intent = Intent::embedded(1 << 20).unwrap();
    let requests = [
        json!({"method": "GET", "url": "https://api.github.com/repos/acme/web/issues"}),
        json!({"method": "GET", "url": "https://api.github.com/repos/other/web/issues"}),
        json!({"method": "POST", "url": "https://api.github.com/repos/acme/web/issues", "body_json": {"title": "t"}}),
        json!({"method": "DELETE", "url": "https://api.github.com/repos/acme/web"}),
        json!({"method": "GET", "url": "https://gmail.googleapis.com/gmail/v1/users/me/messages"}),
    ];
    let agents = [
        json!({"name": "bot", "owner": "alice"}),
        json!({"name": "ci"}),
    ];
    (0..n)
        .map(|i| {
            let agent = &agents[i % agents.len()];
            let mut input =
                runner::tuple_for(&requests[i % requests.len()], Some(agent), &intent).unwrap();
            // Repeats within one second are identical inputs.
            input["context"]["time"] = format!("2026-12-07T10:00:{:02}Z", (i / 20) % 60).into();
            input
        })
        .collect()
}

async fn write_log(dir: &std::path::Path, inputs: &[Value]) -> (StateDir, Log) {
    let state = StateDir::open_or_create(dir.join("home")).unwrap();
    let config = AuditConfig {
        durability: Durability::Commit,
        ..AuditConfig::default()
    };
    let audit = Audit::open(&config, &state, "t", Default::default()).unwrap();
    let active = default_policy();
    for (n, input) in inputs.iter().enumerate() {
        audit.commit(recorded(input, &active, n)).await.unwrap();
    }
    // One refused before intent: no tuple.
    let mut refused = recorded(&inputs[0], &active, 9999);
    if let Record::Decision(d) = &mut refused {
        d.tuple = None;
        d.policy = None;
    }
    audit.commit(refused).await.unwrap();
    audit.close().await;
    let db = config.db_path(&state);
    let log = Log {
        checkpoints: None,
        public_key: None,
        archive: None,
        db,
    };
    (state, log)
}

fn owners() -> HashMap<String, String> {
    HashMap::from([(
        "spiffe://agentgate.local/agent/bot".to_owned(),
        "alice".to_owned(),
    )])
}

#[tokio::test]
async fn agrees_with_deciding_each_recorded_tuple_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = inputs(400);
    let (_state, log) = write_log(dir.path(), &inputs).await;
    let candidate = policy(CANDIDATE);
    let report = replay(&log, &candidate, &Filter::default(), &owners(), &|_, _| {}).unwrap();

    // One by one, from the same inputs (and the recorded effects).
    let active = default_policy();
    let mut expect: HashMap<(Effect, Effect, String), u64> = HashMap::new();
    let mut changed = 0;
    for input in &inputs {
        let (before, after) = (
            active.evaluate(input).effect,
            candidate.evaluate(input).effect,
        );
        if before != after {
            changed += 1;
            let action = input["action"]["name"].as_str().unwrap().to_owned();
            *expect.entry((before, after, action)).or_default() += 1;
        }
    }
    assert!(
        changed > 0 && changed < inputs.len() as u64,
        "a candidate that changes some"
    );
    let got: HashMap<(Effect, Effect, String), u64> = report
        .transitions
        .iter()
        .map(|t| ((t.from, t.to, t.action.clone()), t.count))
        .collect();
    assert_eq!(got, expect);
    assert_eq!(report.changed, changed);
    assert_eq!(report.replayed, inputs.len() as u64);
    assert_eq!(report.unchanged + report.changed, report.replayed);
    assert_eq!(report.skipped_no_tuple, 1);
    // 10 (request, agent) pairs in each of 20 seconds: 400 records, 10 distinct inputs to a
    // candidate that cannot read the time, 200 to one that can.
    assert!(candidate.clockless());
    assert_eq!(report.distinct, 10);
    let timed = policy(&CANDIDATE.replace(
        "} else := {\"effect\": \"deny\"",
        "    input.context.time != \"\"\n} else := {\"effect\": \"deny\"",
    ));
    assert!(!timed.clockless());
    let by_second = replay(&log, &timed, &Filter::default(), &owners(), &|_, _| {}).unwrap();
    assert_eq!(by_second.distinct, 200);
    assert_eq!(by_second.changed, report.changed);
    // Every example is a record of its transition.
    for t in &report.transitions {
        assert!(!t.examples.is_empty() && t.examples.len() <= EXAMPLES);
        assert!(!t.reasons.is_empty());
    }
    let total: u64 = report.totals.iter().map(|(_, _, n)| n).sum();
    assert_eq!(total, report.replayed);

    // The active policy itself changes nothing: the rebuilt inputs are the ones decided.
    let same = replay(&log, &active, &Filter::default(), &owners(), &|_, _| {}).unwrap();
    assert_eq!(same.changed, 0, "{:?}", same.transitions);
}

#[tokio::test]
async fn filters_select_by_agent_tenant_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let (_state, log) = write_log(dir.path(), &inputs(50)).await;
    let candidate = policy(CANDIDATE);
    let run = |f: Filter| replay(&log, &candidate, &f, &owners(), &|_, _| {}).unwrap();
    let bot = run(Filter {
        agent: Some("bot".into()),
        ..Filter::default()
    });
    assert_eq!(bot.replayed, 25);
    let by_id = run(Filter {
        agent: Some("spiffe://agentgate.local/agent/ci".into()),
        ..Filter::default()
    });
    assert_eq!(by_id.replayed, 25);
    assert_eq!(
        run(Filter {
            tenant: Some("acme".into()),
            ..Filter::default()
        })
        .replayed,
        0
    );
    let future = i64::MAX;
    assert_eq!(
        run(Filter {
            since_us: Some(future),
            ..Filter::default()
        })
        .replayed,
        0
    );
    assert_eq!(
        run(Filter {
            since_us: Some(0),
            ..Filter::default()
        })
        .replayed,
        50
    );
}

#[tokio::test]
async fn a_tampered_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_state, log) = write_log(dir.path(), &inputs(30)).await;
    let conn = rusqlite::Connection::open(&log.db).unwrap();
    conn.execute(
        "UPDATE records SET record = replace(record, 'acme', 'acmx') WHERE seq = 1",
        [],
    )
    .unwrap();
    drop(conn);
    let err = replay(
        &log,
        &policy(CANDIDATE),
        &Filter::default(),
        &owners(),
        &|_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("does not verify"), "{err}");
}

#[tokio::test]
async fn a_replay_past_its_time_stops_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_state, log) = write_log(dir.path(), &inputs(50)).await;
    let limits = Limits {
        workers: 1,
        within: Some(std::time::Duration::ZERO),
    };
    let err = replay_within(
        &log,
        &policy(CANDIDATE),
        &Filter::default(),
        &owners(),
        &|_, _| {},
        &limits,
    )
    .unwrap_err();
    assert!(matches!(err, ReplayError::TooLong { .. }), "{err}");
    let ample = Limits {
        workers: 1,
        within: Some(std::time::Duration::from_secs(600)),
    };
    let r = replay_within(
        &log,
        &policy(CANDIDATE),
        &Filter::default(),
        &owners(),
        &|_, _| {},
        &ample,
    )
    .unwrap();
    assert_eq!(r.replayed, 50);
}
