//! Fleet audit on a real NATS JetStream server: every instance's records shipped once to
//! the fleet's stream (across a server killed under load), verified by `audit verify
//! --fleet` (a forged record, a deleted one and a tail cut off after a shipped checkpoint are
//! named), and read through any instance's admin API with `scope=fleet`.

use std::time::{Duration, Instant};

use super::fleet::{connect, instance, instance_with, readyz, until};
use crate::support::TestEnv;
use crate::support::cli::{Registered, agentgate, ok, register};
use crate::support::nats::Nats;
use crate::support::proxy::{Proxy, toml_str};
use crate::support::raw;

/// Lines of `audit export` on an instance: its local record count.
async fn local_records(proxy: &Proxy) -> usize {
    let out = agentgate(&proxy.home, &["audit", "export"], &[]).await;
    ok(&out, "audit export").lines().count()
}

/// How many records of log `id` the stream holds, per `audit verify --fleet`'s report.
fn in_stream(logs: &[serde_json::Value], id: &str) -> usize {
    logs.iter()
        .find(|l| l["log_id"] == id)
        .and_then(|l| l["records"].as_u64())
        .unwrap_or(0) as usize
}

/// `audit verify --fleet -o json` from `proxy`'s config: (exit ok, per-log reports).
async fn verify_fleet(proxy: &Proxy) -> (bool, Vec<serde_json::Value>) {
    let config = proxy.home.join("agentgate.toml").display().to_string();
    let out = agentgate(
        &proxy.home,
        &["audit", "verify", "--fleet", "-o", "json"],
        &[("AGENTGATE_CONFIG", &config)],
    )
    .await;
    let logs = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "audit verify --fleet printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), logs)
}

/// Waits until the stream holds as many records of each instance as its local log.
async fn shipped(fleet: &[&Proxy]) {
    let started = Instant::now();
    loop {
        let (_, logs) = verify_fleet(fleet[0]).await;
        let mut all = true;
        for p in fleet {
            let local = local_records(p).await;
            let id = local_log_id(p).await;
            let in_stream = in_stream(&logs, &id);
            all &= in_stream >= local;
        }
        if all {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "records not shipped in 30 s: {logs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn local_log_id(proxy: &Proxy) -> String {
    let out = agentgate(&proxy.home, &["audit", "verify", "-o", "json"], &[]).await;
    let report: serde_json::Value = serde_json::from_str(&ok(&out, "audit verify")).expect("JSON");
    report["log_id"].as_str().expect("log_id").to_owned()
}

/// Every instance's records reach the stream once, across a server restart, and
/// `audit verify --fleet` checks each chain; a forged or a missing record is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_are_shipped_once_and_verified_across_the_fleet() {
    let env = TestEnv::new().await;
    let mut nats = Nats::start(env.dir.path());
    let (a, b) = (instance(&env, &nats, "a"), instance(&env, &nats, "b"));
    for p in [&a, &b] {
        until("ready", 20, 200, || readyz(p)).await;
    }
    let bot = register(&a, "bot", "alice", &[]).await;
    for _ in 0..5 {
        for p in [&a, &b] {
            until("accepted", 10, 200, || connect(p, &bot)).await;
        }
    }
    shipped(&[&a, &b]).await;
    let (intact, logs) = verify_fleet(&a).await;
    assert!(intact && logs.len() == 2, "{logs:?}");

    // Under load on both instances, the server is killed and restarted: every record is
    // committed locally meanwhile, and once it is back the backlog is shipped, nothing lost
    // or doubled.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = [a.proxy_addr, b.proxy_addr]
        .into_iter()
        .flat_map(|addr| (0..3).map(move |_| addr))
        .map(|addr| {
            let (bearer, stop) = (bot.bearer(), stop.clone());
            tokio::spawn(async move {
                let (mut sent, mut accepted) = (0, 0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (_s, head) =
                        raw::connect_as(addr, "api.github.com:443", Some(&bearer)).await;
                    sent += 1;
                    accepted += usize::from(head.status == 200);
                }
                (sent, accepted)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    nats.restart();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut sent, mut accepted) = (0, 0);
    for task in load {
        let (s, a) = task.await.expect("load task");
        sent += s;
        accepted += a;
    }
    // max_staleness (2 s) outlasts the outage: every request went through.
    assert_eq!(accepted, sent, "requests refused during the outage");
    eprintln!("{sent} requests under load across the outage");
    shipped(&[&a, &b]).await;
    let (intact, logs) = verify_fleet(&b).await;
    assert!(intact, "after the restart: {logs:?}");
    for p in [&a, &b] {
        let id = local_log_id(p).await;
        let in_stream = in_stream(&logs, &id);
        // Each seq once (verify names a duplicate that differs; an identical resend is
        // dropped by the server's duplicate window, so the count is exact).
        assert_eq!(in_stream, local_records(p).await, "{logs:?}");
    }
    let stream_total = {
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("e2e-audit").await.expect("stream");
        let last = stream.info().await.expect("info").state.last_sequence;
        let mut records = 0;
        for n in 1..=last {
            let m = stream.get_raw_message(n).await.expect("message");
            records += usize::from(!m.subject.as_str().ends_with(".signed"));
        }
        records
    };
    let local_total = local_records(&a).await + local_records(&b).await;
    assert_eq!(
        stream_total as usize, local_total,
        "the stream holds a record twice, or one is missing"
    );

    // A forged copy of one of A's records, and one of B's records deleted from the stream.
    let (id_a, id_b) = (local_log_id(&a).await, local_log_id(&b).await);
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let forged = serde_json::json!({
        "log_id": id_a, "seq": 2, "hash": "00".repeat(32),
        "record": {"kind": "decision", "seq": 2, "effect": "allow"},
    });
    js.publish(format!("e2e.audit._.{id_a}"), forged.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let stream = js.get_stream("e2e-audit").await.expect("stream");
    let mut victim = None;
    for n in 1.. {
        let m = stream.get_raw_message(n).await.expect("message");
        let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("json");
        if v["log_id"] == id_b && v["seq"] == 3 {
            victim = Some(n);
            break;
        }
    }
    assert!(
        stream
            .delete_message(victim.expect("B's seq 3"))
            .await
            .expect("delete")
    );
    let (intact, logs) = verify_fleet(&a).await;
    assert!(
        !intact,
        "a forged and a missing record went unnoticed: {logs:?}"
    );
    let problem = |id: &str| {
        logs.iter()
            .find(|l| l["log_id"] == id)
            .and_then(|l| l["problem"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        problem(&id_a).starts_with("seq 2: two different records"),
        "{logs:?}"
    );
    assert!(problem(&id_b).starts_with("seq 3: missing"), "{logs:?}");
}

/// A log's signed checkpoints travel with its records: a tail cut off in the stream (the
/// newest records deleted, leaving a chain that is whole but shorter) is named, because a
/// shipped checkpoint vouches for records the stream no longer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_cut_off_in_the_stream_is_named_by_a_shipped_checkpoint() {
    let env = TestEnv::new().await;
    let nats = Nats::start(env.dir.path());
    let cfg = env
        .config()
        .set("fleet", "max_staleness", &toml_str("10s"))
        .set("audit", "checkpoint_every", "4");
    let a = instance_with(&env, &nats, "a", cfg);
    until("ready", 20, 200, || readyz(&a)).await;
    let bot = register(&a, "bot", "alice", &[]).await;
    for _ in 0..6 {
        until("accepted", 10, 200, || connect(&a, &bot)).await;
    }
    let id = local_log_id(&a).await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("e2e-audit").await.expect("stream");
    // Wait for the records and at least one checkpoint beyond seq 4 to be shipped.
    let (mut records, mut newest) = (Vec::new(), 0);
    let started = Instant::now();
    while newest < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no checkpoint was shipped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        records.clear();
        let last = stream.info().await.expect("info").state.last_sequence;
        for n in 1..=last {
            let m = stream.get_raw_message(n).await.expect("message");
            let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("json");
            if v["checkpoint"].is_object() {
                newest = newest.max(v["checkpoint"]["checkpoint"]["size"].as_u64().unwrap_or(0));
            } else {
                records.push((n, v["seq"].as_u64().expect("seq")));
            }
        }
    }
    let (intact, logs) = verify_fleet(&a).await;
    assert!(intact, "{logs:?}");
    assert!(logs[0]["checkpoints"].as_u64() >= Some(1), "{logs:?}");

    // Cut the tail from the newest checkpoint's record on.
    for (n, seq) in &records {
        if *seq >= newest {
            assert!(stream.delete_message(*n).await.expect("delete"));
        }
    }
    let (intact, logs) = verify_fleet(&a).await;
    assert!(!intact, "a cut-off tail went unnoticed: {logs:?}");
    let problem = logs
        .iter()
        .find(|l| l["log_id"] == id)
        .and_then(|l| l["problem"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        problem.starts_with(&format!("seq {newest}: missing from the stream"))
            && problem.contains("tail was cut off"),
        "{problem}"
    );
}

/// `scope=fleet` on the admin API: instance A pages through, opens and follows records that
/// instance B committed, through the fleet's stream; a tenant's token sees only its tenant's
/// records there too; an instance not in a fleet says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_reads_every_instances_records_through_the_fleet() {
    use crate::support::admin::{call, json, sse};
    let env = TestEnv::new().await;
    let nats = Nats::start(env.dir.path());
    let allow = env.dir.path().join("allow");
    std::fs::create_dir_all(&allow).expect("policy dir");
    std::fs::write(
        allow.join("allow.rego"),
        "package agentgate\n\ndecision := {\"effect\": \"allow\", \"reasons\": [\"ok\"]}\n",
    )
    .expect("policy");
    let cfg = || {
        env.with_default_policy().set(
            "tenants.acme",
            "policy_dir",
            &toml_str(&allow.display().to_string()),
        )
    };
    let (a, b) = (
        instance_with(&env, &nats, "a", cfg()),
        instance_with(&env, &nats, "b", cfg()),
    );
    for p in [&a, &b] {
        until("ready", 20, 200, || readyz(p)).await;
    }
    let root = a.admin_token().trim().to_owned();
    let acme_token = std::fs::read_to_string(a.home.join("tenants/acme/admin.token"))
        .expect("acme token")
        .trim()
        .to_owned();

    // Live on A before anything happens on B.
    let (status, live, _) = sse(
        a.admin_addr,
        "/api/v1/events?scope=fleet",
        &[("authorization", &format!("Bearer {root}"))],
    )
    .await;
    assert_eq!(status, 200);
    let mut live = live.expect("stream");

    // B: one request of the instance's agent, one of acme's.
    let bot = register(&b, "bot", "alice", &[]).await;
    let out = agentgate(
        &b.home,
        &[
            "agents", "register", "acme-bot", "--tenant", "acme", "-o", "json",
        ],
        &[],
    )
    .await;
    let doc: serde_json::Value =
        serde_json::from_str(&ok(&out, "register acme-bot")).expect("register JSON");
    let acme = Registered {
        name: "acme-bot".into(),
        spiffe_id: doc["spiffe_id"].as_str().expect("spiffe_id").into(),
        token: doc["token"].as_str().expect("token").into(),
    };
    for agent in [&bot, &acme] {
        assert_eq!(connect(&b, agent).await, 200);
    }
    let b_log = crate::support::read_records(&b.home.join("audit.db"), "decision");
    let b_instance = b_log[0]["instance"].clone();

    // A's stream shows B's decisions as they are shipped.
    let got = within_secs(20, async {
        loop {
            let ev = live.next().await.expect("the fleet stream ended");
            if ev.event.as_deref() != Some("record") {
                continue;
            }
            let v = ev.json();
            assert_eq!(
                ev.id,
                Some(v["stream_seq"].to_string()),
                "id is the stream seq"
            );
            if v["record"]["kind"] == "decision" && v["record"]["instance"] == b_instance {
                return v;
            }
        }
    })
    .await;
    assert!(got["log_id"].is_string() && got["seq"].is_u64(), "{got}");

    // Pages: every record of both instances, in stream order, each once.
    let mut after = 0;
    let mut all = Vec::new();
    loop {
        let page = json(
            a.admin_addr,
            "GET",
            &format!("/api/v1/audit?scope=fleet&after={after}&limit=3"),
            &root,
            None,
            200,
        )
        .await;
        let records = page["records"].as_array().expect("records").clone();
        if records.is_empty() {
            break;
        }
        after = page["next_after"].as_u64().expect("next_after");
        all.extend(records);
    }
    let instances: std::collections::BTreeSet<String> = all
        .iter()
        .map(|r| {
            r["record"]["instance"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(instances.len(), 2, "both instances' records: {instances:?}");
    let seqs: Vec<u64> = all
        .iter()
        .map(|r| r["stream_seq"].as_u64().unwrap_or(0))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(all.iter().any(|r| r["record"]["agent"] == acme.spiffe_id));

    // One record by its stream sequence; acme's token sees only acme's.
    let one = json(
        a.admin_addr,
        "GET",
        &format!("/api/v1/audit/{}?scope=fleet", got["stream_seq"]),
        &root,
        None,
        200,
    )
    .await;
    assert_eq!(one["record"], got["record"]);
    let theirs = json(
        a.admin_addr,
        "GET",
        "/api/v1/audit?scope=fleet&limit=1000",
        &acme_token,
        None,
        200,
    )
    .await;
    let theirs = theirs["records"].as_array().expect("records");
    assert!(!theirs.is_empty());
    assert!(
        theirs.iter().all(|r| r["record"]["tenant"] == "acme"),
        "{theirs:#?}"
    );
    let not_theirs = all
        .iter()
        .find(|r| r["record"]["tenant"].is_null())
        .expect("an instance record");
    let resp = call(
        a.admin_addr,
        "GET",
        &format!("/api/v1/audit/{}?scope=fleet", not_theirs["stream_seq"]),
        Some(&acme_token),
        None,
    )
    .await;
    assert_eq!(resp.status, 404, "{}", resp.text());
    let resp = call(
        a.admin_addr,
        "GET",
        "/api/v1/audit?scope=galaxy",
        Some(&root),
        None,
    )
    .await;
    assert_eq!(resp.status, 400, "{}", resp.text());

    // Not in a fleet: said so.
    let alone = env.start(env.config());
    let resp = call(
        alone.admin_addr,
        "GET",
        "/api/v1/audit?scope=fleet",
        Some(alone.admin_token().trim()),
        None,
    )
    .await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(resp.text().contains("not_in_a_fleet"), "{}", resp.text());
}

async fn within_secs<T>(secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("not within {secs} s"))
}
