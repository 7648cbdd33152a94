//! Fleet mode on a real NATS JetStream server: five instances share one registry and one
//! PANIC — an agent registered on one is accepted by another, a revocation on one refuses
//! it on all, PANIC on one closes the agent's tunnels on the others — and an instance cut
//! off from the bus for longer than `fleet.max_staleness` refuses everything until it is
//! back.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::support::TestEnv;
use crate::support::cli::{Registered, agentgate, ok, register};
use crate::support::nats::Nats;
use crate::support::proxy::{self, ConfigBuilder, Proxy, toml_str};
use crate::support::raw;

/// One instance of the fleet with its own state dir.
fn instance(env: &TestEnv, nats: &Nats, name: &str) -> Proxy {
    let cfg = env.config().set("fleet", "max_staleness", &toml_str("2s"));
    instance_with(env, nats, name, cfg)
}

/// [`instance`] on top of `cfg`.
pub(super) fn instance_with(env: &TestEnv, nats: &Nats, name: &str, cfg: ConfigBuilder) -> Proxy {
    let home = env.dir.path().join(name);
    std::fs::create_dir_all(&home).expect("instance home");
    let cfg =
        cfg.set("fleet", "url", &toml_str(&nats.url()))
            .set("fleet", "name", &toml_str("e2e"));
    let path = home.join("agentgate.toml");
    std::fs::write(&path, cfg.render()).expect("write config");
    proxy::start(&home, &path, &[])
}

pub(super) async fn readyz(proxy: &Proxy) -> u16 {
    let mut s = raw::tcp(proxy.admin_addr).await;
    let req = b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    raw::exchange(&mut s, req).await.map_or(0, |r| r.status)
}

/// The answer to a CONNECT by `agent` through `proxy`.
async fn connect(proxy: &Proxy, agent: &Registered) -> u16 {
    raw::connect_as(
        proxy.proxy_addr,
        "api.github.com:443",
        Some(&agent.bearer()),
    )
    .await
    .1
    .status
}

/// Polls `probe` until it gives `want`, for up to `secs`; returns how long it took.
pub(super) async fn until<F, Fut>(what: &str, secs: u64, want: u16, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let started = Instant::now();
    let mut last = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        last = probe().await;
        if last == want {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: still {last} after {secs} s, want {want}");
}

/// Waits until `agents list` on `proxy` shows `name` (registered on another instance).
async fn listed(proxy: &Proxy, name: &str) {
    let needle = format!("\"name\": \"{name}\"");
    let what = format!("{name} listed on {}", proxy.home.display());
    until(&what, 10, 1, || async {
        let out = agentgate(&proxy.home, &["agents", "list", "-o", "json"], &[]).await;
        let text = String::from_utf8_lossy(&out.stdout).replace("\":\"", "\": \"");
        u16::from(text.contains(&needle))
    })
    .await;
}

fn cli_ok(out: &std::process::Output, what: &str) {
    let _ = ok(out, what);
}

async fn run(home: &Path, args: &[&str]) {
    cli_ok(&agentgate(home, args, &[]).await, &args.join(" "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_registrations_revocations_and_panic_and_fail_closed_without_the_bus() {
    let env = TestEnv::new().await;
    let mut nats = Nats::start(env.dir.path());
    let fleet: Vec<Proxy> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| instance(&env, &nats, n))
        .collect();
    let [a, b, c, d, e] = &fleet[..] else {
        unreachable!()
    };
    for p in &fleet {
        until("ready after the first sync", 20, 200, || readyz(p)).await;
    }

    // Registered on A, accepted by B (A's issuer key and the agent reached it).
    let bot = register(a, "bot", "alice", &[]).await;
    let took = until("B accepts a token A issued", 10, 200, || connect(b, &bot)).await;
    eprintln!("registration A -> B: {took:?}");

    // Listed on C, revoked there, refused by D.
    listed(c, "bot").await;
    run(&c.home, &["agents", "revoke", "bot"]).await;
    let took = until("D refuses what C revoked", 10, 403, || connect(d, &bot)).await;
    eprintln!("revocation C -> D: {took:?}");

    // PANIC on E closes the agent's open tunnel on D and refuses it on A and B.
    let bot2 = register(c, "bot2", "alice", &[]).await;
    until("D accepts bot2", 10, 200, || connect(d, &bot2)).await;
    // An established tunnel (TLS done, idle between requests), as an agent holds one.
    let (stream, answer) =
        raw::connect_as(d.proxy_addr, "api.github.com:443", Some(&bot2.bearer())).await;
    assert_eq!(answer.status, 200);
    let mut tunnel = raw::tls_over(stream, "api.github.com", &d.ca_path, &[b"http/1.1"]).await;
    listed(e, "bot2").await;
    let started = Instant::now();
    run(
        &e.home,
        &["panic", "--agent", "bot2", "--reason", "fleet e2e"],
    )
    .await;
    let mut buf = [0u8; 64];
    // Well inside limits.tls_handshake_timeout and idle_timeout: only PANIC closes it.
    let closed = tokio::time::timeout(Duration::from_secs(5), tunnel.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "D's tunnel of bot2 still open 5 s after PANIC on E: {closed:?}"
    );
    eprintln!("PANIC E -> tunnel closed on D: {:?}", started.elapsed());
    for p in [a, b] {
        until("refused after PANIC on E", 10, 403, || connect(p, &bot2)).await;
    }
    assert!(
        d.stderr().contains("fleet: revocation applied here"),
        "D did not run the local cut-off"
    );

    // Without the bus for longer than max_staleness: refuse everything; back: serve.
    let bot3 = register(a, "bot3", "alice", &[]).await;
    until("A accepts bot3", 10, 200, || connect(a, &bot3)).await;
    nats.kill();
    until("A fails closed without the bus", 15, 503, || {
        connect(a, &bot3)
    })
    .await;
    nats.restart();
    until("A serves again once the bus is back", 30, 200, || {
        connect(a, &bot3)
    })
    .await;
}

/// Lines of `audit export` on an instance: its local record count.
async fn local_records(proxy: &Proxy) -> usize {
    let out = agentgate(&proxy.home, &["audit", "export"], &[]).await;
    ok(&out, "audit export").lines().count()
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
            let in_stream = logs
                .iter()
                .find(|l| l["log_id"] == id)
                .and_then(|l| l["records"].as_u64())
                .unwrap_or(0) as usize;
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
        let in_stream = logs
            .iter()
            .find(|l| l["log_id"] == id)
            .and_then(|l| l["records"].as_u64())
            .unwrap_or(0) as usize;
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

/// One GET of https://api.github.com/repos/acme/web through `proxy` as the test agent;
/// returns the Authorization the upstream saw (the vault's credential, if any).
async fn injected(env: &TestEnv, proxy: &Proxy) -> Option<String> {
    use bytes::Bytes;
    use http_body_util::Full;
    let tls = raw::tunnel_to(proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let req = http::Request::get("/repos/acme/web")
        .header("host", "api.github.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = raw::send_h1(&mut h1, req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    env.upstream
        .seen()
        .last()
        .and_then(|s| s.authorization.clone())
}

/// `vault set` on one instance serves every instance (the secret travels sealed under the
/// fleet's vault key); `vault rm` on another removes it everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_connection_set_on_one_instance_serves_all_and_rm_removes_it_everywhere() {
    let env = TestEnv::new().await;
    let nats = Nats::start(env.dir.path());
    // Every instance of a fleet holds the same vault key (in Kubernetes, one Secret).
    let key = "ZmxlZXQtdmF1bHQta2V5LWZvci10aGUtZTJlLXRlc3Q=";
    for name in ["a", "b"] {
        let home = env.dir.path().join(name);
        std::fs::create_dir_all(&home).expect("home");
        crate::support::cli::write_private(&home.join("vault.key"), format!("{key}\n").as_bytes());
    }
    let (a, b) = (instance(&env, &nats, "a"), instance(&env, &nats, "b"));
    for p in [&a, &b] {
        until("ready", 20, 200, || readyz(p)).await;
    }
    assert_eq!(injected(&env, &b).await, None, "no connection yet");

    let token = format!("ghp_fleet_{}", std::process::id());
    let file = crate::support::cli::secret_file(env.dir.path(), "gh.token", &format!("{token}\n"));
    let config = a.home.join("agentgate.toml").display().to_string();
    let file = file.display().to_string();
    let args = [
        "vault",
        "set",
        "github",
        "--kind",
        "static",
        "--secret-file",
        &file,
    ];
    cli_ok(
        &agentgate(&a.home, &args, &[("AGENTGATE_CONFIG", &config)]).await,
        "vault set",
    );
    let want = format!("Bearer {token}");
    until("B injects the credential set on A", 10, 1, || async {
        u16::from(injected(&env, &b).await.as_deref() == Some(want.as_str()))
    })
    .await;

    let config = b.home.join("agentgate.toml").display().to_string();
    cli_ok(
        &agentgate(
            &b.home,
            &["vault", "rm", "github"],
            &[("AGENTGATE_CONFIG", &config)],
        )
        .await,
        "vault rm",
    );
    until("A stops injecting what B removed", 10, 1, || async {
        u16::from(injected(&env, &a).await.is_none())
    })
    .await;
}

/// A request held on A for consent is answered through B (the CLI on B's state dir, its
/// API) and completes on A; B never spends A's once-approval: the same request through B
/// asks B's own consent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_held_on_one_instance_is_answered_on_another() {
    use crate::support::cli::consent_list;
    use crate::support::held;
    let env = TestEnv::new().await;
    let mut nats = Nats::start(env.dir.path());
    let cfg = || {
        env.with_default_policy()
            .set("policy", "eval_timeout", &toml_str("5s"))
            .set("consent", "mode", &toml_str("hold"))
            .set("consent", "timeout", &toml_str("30s"))
    };
    let (a, b) = (
        instance_with(&env, &nats, "a", cfg()),
        instance_with(&env, &nats, "b", cfg()),
    );
    for p in [&a, &b] {
        until("ready", 20, 200, || readyz(p)).await;
    }
    let bot = register(&a, "bot", "alice", &[]).await;
    let url = "https://api.github.com/repos/acme/web/issues";
    let body = r#"{"title":"asked on A, approved on B"}"#;
    let held = held::post_json(bot.proxy_url(&a), a.ca_path.clone(), url, body, 30, &[]);
    until("B lists the consent A asked", 10, 1, || async {
        u16::from(!consent_list(&b, false).await.is_empty())
    })
    .await;
    let pending = consent_list(&b, false).await;
    let id = pending[0]["id"].as_str().expect("id").to_owned();
    let out = agentgate(&b.home, &["consent", "approve", &id], &[("USER", "ops")]).await;
    cli_ok(&out, "consent approve on B");
    let got = held::finish(held, 10).await;
    assert_eq!(
        got.status,
        200,
        "held on A, approved on B: {}",
        String::from_utf8_lossy(&got.body)
    );

    // The same request through B: A's approval is not B's to spend.
    let other = held::post_json(bot.proxy_url(&b), b.ca_path.clone(), url, body, 2, &[]);
    let _ = held::finish(other, 10).await;
    let on_b = consent_list(&b, true).await;
    assert!(
        on_b.iter()
            .any(|c| c["id"] != id.as_str() && c["agent"] == bot.spiffe_id),
        "B did not ask its own consent: {on_b:#?}"
    );
    let spent: Vec<_> = env
        .upstream
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path.ends_with("/issues"))
        .collect();
    assert_eq!(
        spent.len(),
        1,
        "the once-approval was spent twice: {spent:?}"
    );

    // The bus gone (well within max_staleness, so identity still serves): an escalation is
    // refused at once instead of held where only A could answer it.
    nats.kill();
    // An escalation sent before A has noticed would be held: give it the moment it needs.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut n = 0;
    let refused = until("A refuses escalations without the bus", 60, 503, || {
        n += 1;
        let body = format!(r#"{{"title":"without the bus {n}"}}"#);
        let held = held::post_json(bot.proxy_url(&a), a.ca_path.clone(), url, &body, 5, &[]);
        async move { held::finish(held, 10).await.status }
    })
    .await;
    let last = held::finish(
        held::post_json(
            bot.proxy_url(&a),
            a.ca_path.clone(),
            url,
            r#"{"title":"x"}"#,
            20,
            &[],
        ),
        25,
    )
    .await;
    let text = String::from_utf8_lossy(&last.body);
    assert_eq!(last.status, 503, "{text}");
    assert!(
        text.contains("consent_unavailable") && text.contains("bus is unreachable"),
        "{text}"
    );
    eprintln!("escalations refused {refused:?} after the first probe");
    // Back: an escalation is held again (curl gives up waiting for the answer).
    nats.restart();
    until("A holds an escalation again", 60, 1, || {
        n += 1;
        let body = format!(r#"{{"title":"bus is back {n}"}}"#);
        let held = held::post_json(bot.proxy_url(&a), a.ca_path.clone(), url, &body, 2, &[]);
        async move { u16::from(held::finish(held, 10).await.exit == Some(28)) }
    })
    .await;
}

/// A tenant's own consent store is shared as well: a request of tenant acme's agent held on
/// A (in acme's store) is listed and approved on B, and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_consent_held_on_one_instance_is_answered_on_another() {
    use crate::support::cli::consent_list;
    use crate::support::held;
    let env = TestEnv::new().await;
    let nats = Nats::start(env.dir.path());
    let cfg = || {
        // Tenant acme gets the shipped policy (writes escalate) in its own directory.
        env.with_default_policy()
            .set("policy", "eval_timeout", &toml_str("5s"))
            .set("consent", "mode", &toml_str("hold"))
            .set("consent", "timeout", &toml_str("30s"))
            .set("tenants.acme", "webhooks", "[]")
    };
    let (a, b) = (
        instance_with(&env, &nats, "a", cfg()),
        instance_with(&env, &nats, "b", cfg()),
    );
    for p in [&a, &b] {
        until("ready", 20, 200, || readyz(p)).await;
    }
    let out = agentgate(
        &a.home,
        &[
            "agents", "register", "acme-bot", "--tenant", "acme", "-o", "json",
        ],
        &[],
    )
    .await;
    let doc: serde_json::Value =
        serde_json::from_str(&ok(&out, "register acme-bot")).expect("register JSON");
    let token = doc["token"].as_str().expect("token");
    let url = "https://api.github.com/repos/acme/web/issues";
    let held = held::post_json(
        format!("http://acme-bot:{token}@{}", a.proxy_addr),
        a.ca_path.clone(),
        url,
        r#"{"title":"acme asks on A"}"#,
        30,
        &[],
    );
    until("B lists acme's consent asked on A", 15, 1, || async {
        let pending = consent_list(&b, false).await;
        u16::from(pending.iter().any(|c| c["tenant"] == "acme"))
    })
    .await;
    let pending = consent_list(&b, false).await;
    let consent = pending
        .iter()
        .find(|c| c["tenant"] == "acme")
        .expect("acme's consent");
    let id = consent["id"].as_str().expect("id").to_owned();
    let out = agentgate(&b.home, &["consent", "approve", &id], &[("USER", "ops")]).await;
    cli_ok(&out, "consent approve on B");
    let got = held::finish(held, 15).await;
    assert_eq!(
        got.status,
        200,
        "acme's request held on A, approved on B: {}",
        String::from_utf8_lossy(&got.body)
    );
}

/// A 3-node JetStream cluster (buckets and stream with 3 replicas): with the node A uses
/// killed, the rest of the fleet keeps working (a revocation on B reaches C); A, cut off,
/// fails closed after max_staleness; when its node comes back, A replays what it missed —
/// the revocation — before it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_instance_fails_closed_and_catches_up_on_revocations() {
    let env = TestEnv::new().await;
    let mut nodes = Nats::cluster(env.dir.path(), 3);
    let fleet_cfg = |node: &Nats| {
        // Longer than a JetStream leader election after a node dies (a few seconds), so
        // the instances on live nodes ride it out.
        env.config()
            .set("fleet", "url", &toml_str(&node.url()))
            .set("fleet", "replicas", "3")
            .set("fleet", "max_staleness", &toml_str("10s"))
    };
    // A on node 2 alone; B and C on node 0.
    let a = instance_with(&env, &nodes[2], "a", fleet_cfg(&nodes[2]));
    let b = instance_with(&env, &nodes[0], "b", fleet_cfg(&nodes[0]));
    let c = instance_with(&env, &nodes[0], "c", fleet_cfg(&nodes[0]));
    for p in [&a, &b, &c] {
        until("ready on the cluster", 40, 200, || readyz(p)).await;
    }
    let (stays, goes) = (
        register(&b, "stays", "alice", &[]).await,
        register(&b, "goes", "alice", &[]).await,
    );
    for p in [&a, &c] {
        listed(p, "goes").await;
        until("accepted everywhere", 10, 200, || connect(p, &goes)).await;
    }

    nodes[2].kill();
    run(&b.home, &["agents", "revoke", "goes"]).await;
    until("C, on a live node, refuses what B revoked", 30, 403, || {
        connect(&c, &goes)
    })
    .await;
    until("A, cut off, fails closed", 40, 503, || connect(&a, &stays)).await;

    nodes[2].restart();
    until("A serves again after its node is back", 40, 200, || {
        connect(&a, &stays)
    })
    .await;
    assert_eq!(
        connect(&a, &goes).await,
        403,
        "A forgot the revocation it missed"
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
