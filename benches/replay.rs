//! `policy replay` on a large generated log: how long a million recorded decisions take to
//! verify and decide again, against verifying alone (the floor: every replay reads and
//! checks the whole chain) measured in the same run.
//!
//! `cargo bench --bench replay -- [RECORDS]` (default 1,000,000). The log is written by the
//! real audit writer from tuples the real intent gate builds: 24 kinds of request by 12
//! agents, 100 requests a second. The candidate and the active policy cannot read the
//! time, so a request is one input whatever second it came; a third candidate reads it
//! (the worst case: nearly every record is its own input).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{Value, json};

use agentgate::audit::record::{self, Record};
use agentgate::audit::verify::verify;
use agentgate::audit::{Audit, AuditConfig, Durability};
use agentgate::intent::Intent;
use agentgate::policy::replay::{Filter, Log, replay};
use agentgate::policy::{Policy, PolicyConfig, Sources, default_sources, runner};
use agentgate::state::StateDir;

fn requests() -> Vec<Value> {
    let mut out = Vec::new();
    for repo in ["acme/web", "acme/api", "acme/infra", "other/lib"] {
        let base = format!("https://api.github.com/repos/{repo}");
        out.push(json!({"method": "GET", "url": format!("{base}/issues?state=open")}));
        out.push(json!({"method": "GET", "url": format!("{base}/pulls")}));
        out.push(json!({"method": "GET", "url": format!("{base}/contents/src/main.rs")}));
        out.push(json!({"method": "POST", "url": format!("{base}/issues"), "body_json": {"title": "flaky"}}));
        out.push(json!({"method": "PUT", "url": format!("{base}/pulls/7/merge"), "body_json": {}}));
    }
    out.push(json!({"method": "GET", "url": "https://gmail.googleapis.com/gmail/v1/users/me/messages?q=is:unread"}));
    out.push(json!({"method": "POST", "url": "https://gmail.googleapis.com/gmail/v1/users/me/messages/send",
        "body_email": {"to": ["carol@partner.org"], "subject": "Quote", "attachments": 0}}));
    out.push(json!({"method": "POST", "url": "https://slack.com/api/chat.postMessage",
        "headers": {"content-type": "application/json"}, "body_json": {"channel": "C01", "text": "build green"}}));
    out.push(json!({"method": "DELETE", "url": "https://api.github.com/repos/acme/web"}));
    out
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::open_or_create(dir.path().join("home")).expect("state");
    let config = AuditConfig {
        durability: Durability::Commit,
        ..AuditConfig::default()
    };
    let intent = Intent::embedded(1 << 20).expect("catalog");
    let active =
        Policy::from_sources(&default_sources(), &PolicyConfig::default()).expect("policy");
    let requests = requests();
    let agents: Vec<Value> = (0..12)
        .map(|i| json!({"name": format!("agent-{i}"), "owner": if i % 3 == 0 { "alice" } else { "bob" }}))
        .collect();
    // Each (request, agent) tuple once, and its decision by the active policy.
    let mut kinds = Vec::new();
    for (i, req) in requests.iter().enumerate() {
        for agent in &agents {
            let input = runner::tuple_for(req, Some(agent), &intent).expect("tuple");
            let decision = active.evaluate(&input);
            kinds.push((i, input, decision));
        }
    }

    let started = Instant::now();
    rt.block_on(async {
        let audit = std::sync::Arc::new(
            Audit::open(&config, &state, "bench", Default::default()).expect("audit"),
        );
        let mut pending = tokio::task::JoinSet::new();
        for seq in 0..n {
            // A pseudo-random pick, so neighbours differ as real traffic's do.
            let (_, input, decision) = &kinds[(seq.wrapping_mul(2_654_435_761)) % kinds.len()];
            let second = 1_796_000_000 + (seq / 100) as i64;
            let time = format!(
                "{}",
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(second as u64)
                )
            );
            let mut context = input["context"].clone();
            context["time"] = time.into();
            let rec = Record::from(record::Decision {
                request_id: format!("bench-{seq}"),
                agent: input["subject"]["id"].as_str().map(str::to_owned),
                tenant: None,
                jti: None,
                method: Some("GET".into()),
                host: "api.github.com".into(),
                path: "/".into(),
                sent: None,
                tuple: Some(record::Tuple {
                    action: input["action"].clone(),
                    resource: input["resource"].clone(),
                    context,
                }),
                policy: Some(record::PolicyNote {
                    policy_effect: decision.effect.as_str().into(),
                    policy_hash: decision.policy_hash.to_string(),
                    mode: "enforce".into(),
                    scopes: Vec::new(),
                }),
                shadow: None,
                budgets: Vec::new(),
                consent: None,
                credential: None,
                reference: false,
                verdict: record::Verdict::Allow,
                reasons: decision.reasons.clone(),
            });
            let audit = audit.clone();
            pending.spawn(async move { audit.commit(rec).await.expect("commit") });
            if pending.len() >= 512 {
                pending.join_next().await;
            }
        }
        while pending.join_next().await.is_some() {}
        audit.close().await;
    });
    let written = started.elapsed();
    let log = Log {
        db: config.db_path(&state),
        checkpoints: None,
        public_key: None,
        archive: None,
    };
    let owners: HashMap<String, String> = HashMap::new();

    let started = Instant::now();
    let report = verify(&log.db, None, None).expect("verify");
    let verify_time = started.elapsed();
    assert!(report.problem.is_none(), "{:?}", report.problem);

    // The candidate: the default policy with reads of other owners' repositories denied.
    let mut candidate = default_sources();
    candidate.rego.push((
        "tighter.rego".into(),
        "package agentgate\nimport rego.v1\ndeny contains msg if {\n  input.resource.type == \"github.repo\"\n  not startswith(input.resource.id, \"acme/\")\n  msg := \"only acme repositories (rule acme-only)\"\n}\n".into(),
    ));
    let candidate = Policy::from_sources(&candidate, &PolicyConfig::default()).expect("candidate");
    let started = Instant::now();
    let r = replay(&log, &candidate, &Filter::default(), &owners, &|_, _| {}).expect("replay");
    let replay_time = started.elapsed();
    let started = Instant::now();
    let same = replay(&log, &active, &Filter::default(), &owners, &|_, _| {}).expect("replay");
    let same_time = started.elapsed();
    // The worst case: a candidate that reads the time sees every second's requests apart.
    let mut timed = default_sources();
    timed.rego.push((
        "hours.rego".into(),
        "package agentgate\nimport rego.v1\ndeny contains msg if {\n  input.context.time < \"2000\"\n  msg := \"before 2000\"\n}\n".into(),
    ));
    let timed = Policy::from_sources(&timed, &PolicyConfig::default()).expect("timed");
    assert!(!timed.clockless());
    let started = Instant::now();
    let by_second = replay(&log, &timed, &Filter::default(), &owners, &|_, _| {}).expect("replay");
    let timed_time = started.elapsed();

    println!(
        "log: {n} decision records written in {:.1} s",
        written.as_secs_f64()
    );
    println!(
        "verify alone (baseline):   {:>6.2} s  ({:.0} records/s)",
        verify_time.as_secs_f64(),
        n as f64 / verify_time.as_secs_f64()
    );
    println!(
        "replay, candidate:         {:>6.2} s  ({:.0} records/s, {:.2}x verify)  {} distinct inputs, {} changed",
        replay_time.as_secs_f64(),
        n as f64 / replay_time.as_secs_f64(),
        replay_time.as_secs_f64() / verify_time.as_secs_f64(),
        r.distinct,
        r.changed
    );
    println!(
        "replay, active policy:     {:>6.2} s  ({:.2}x verify)  {} changed (must be 0)",
        same_time.as_secs_f64(),
        same_time.as_secs_f64() / verify_time.as_secs_f64(),
        same.changed
    );
    println!(
        "replay, reading the time:  {:>6.2} s  ({:.0} records/s, {:.2}x verify)  {} distinct inputs, {} changed (must be 0)",
        timed_time.as_secs_f64(),
        n as f64 / timed_time.as_secs_f64(),
        timed_time.as_secs_f64() / verify_time.as_secs_f64(),
        by_second.distinct,
        by_second.changed
    );
    assert_eq!(same.changed, 0);
    assert_eq!(by_second.changed, 0);
    assert!(r.changed > 0);
    let _ = Sources::default();
}
