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
pub(super) fn instance(env: &TestEnv, nats: &Nats, name: &str) -> Proxy {
    let cfg = env.config().set("fleet", "max_staleness", &toml_str("2s"));
    instance_with(env, nats, name, cfg)
}

/// The fleet's vault key: every instance of a fleet holds the same one (in Kubernetes, one
/// Secret); the fleet's entries are tagged under a key derived from it.
pub(super) const FLEET_VAULT_KEY: &str = "ZmxlZXQtdmF1bHQta2V5LWZvci10aGUtZTJlLXRlc3Q=";

/// [`instance`] on top of `cfg`, holding [`FLEET_VAULT_KEY`] (unless its home has a key).
pub(super) fn instance_with(env: &TestEnv, nats: &Nats, name: &str, cfg: ConfigBuilder) -> Proxy {
    let home = env.dir.path().join(name);
    std::fs::create_dir_all(&home).expect("instance home");
    let key = home.join("vault.key");
    if !key.exists() {
        crate::support::cli::write_private(&key, format!("{FLEET_VAULT_KEY}\n").as_bytes());
    }
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
pub(super) async fn connect(proxy: &Proxy, agent: &Registered) -> u16 {
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

pub(super) fn cli_ok(out: &std::process::Output, what: &str) {
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

    // A revocation made on E's state dir while E was not running (the CLI writes the
    // registry itself) stands when E starts and replays the bus, whose row of bot3 is older,
    // and reaches the others.
    listed(e, "bot3").await;
    let e_home = e.home.clone();
    let mut fleet = fleet;
    fleet.pop().expect("e").stop();
    run(&e_home, &["agents", "revoke", "bot3"]).await;
    let e = instance(&env, &nats, "e");
    until("E ready again", 20, 200, || readyz(&e)).await;
    until("B refuses what E revoked while stopped", 15, 403, || {
        connect(&fleet[1], &bot3)
    })
    .await;
    assert_eq!(connect(&e, &bot3).await, 403, "E lifted its own revocation");
    // The agent itself is revoked everywhere, not only the token it had.
    for p in [&e, &fleet[1]] {
        until("bot3 listed as revoked", 15, 1, || async {
            let out = agentgate(&p.home, &["agents", "list", "-o", "json"], &[]).await;
            let agents: serde_json::Value =
                serde_json::from_str(&ok(&out, "agents list")).expect("agents JSON");
            let revoked = agents
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == "bot3"))
                .is_some_and(|x| x["revoked"].is_i64());
            u16::from(revoked)
        })
        .await;
    }
}

/// One GET of https://api.github.com/repos/acme/web through `proxy` as the test agent;
/// returns the Authorization the upstream saw (the vault's credential, if any). A refusal
/// is returned as its status line instead: a request racing a `vault rm` may find the
/// connection gone between lookup and read (`503 token_unavailable`), which callers that
/// poll treat as "not yet".
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
    if resp.status != 200 {
        return Some(format!("HTTP {}: {}", resp.status, resp.text()));
    }
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
    // Both hold the fleet's vault key (`instance_with`).
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

/// A server that wants credentials: an instance with the right token, or the right NKey
/// seed, joins (ready); one with a wrong token or none stays out, not ready, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_credentials_token_and_nkey_are_used() {
    // A test-only user NKey pair (seed, public key).
    const SEED: &str = "SUAABXOMTMT53ATVKT6IZ2TC7SPW2GMYBDZHFLW5C3BDCTSFW2TMGEE3Y4";
    const PUBLIC: &str = "UBWEUGUWTU6CLAPJ2UORJFL5JH77NTXG3C6CWQMLSZPZRSGS6NXOIXYO";
    let env = TestEnv::new().await;
    let dir = env.dir.path();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        crate::support::cli::write_private(&path, text.as_bytes());
        toml_str(&path.display().to_string())
    };
    let by_token = Nats::start_with(dir, &["--auth", "s3cret-bus-token"]);
    let conf = dir.join("nkey.conf");
    std::fs::write(
        &conf,
        format!("authorization {{ users = [ {{ nkey: \"{PUBLIC}\" }} ] }}\n"),
    )
    .expect("nats config");
    let by_nkey = Nats::start_with(dir, &["-c", &conf.display().to_string()]);
    let join = |nats: &Nats, name: &str, key: &str, value: Option<String>| {
        let mut cfg = env.config().set("fleet", "max_staleness", &toml_str("30s"));
        if let Some(v) = value {
            cfg = cfg.set("fleet", key, &v);
        }
        instance_with(&env, nats, name, cfg)
    };
    let good = [
        join(
            &by_token,
            "token-ok",
            "token_file",
            Some(file("t", "s3cret-bus-token\n")),
        ),
        join(
            &by_nkey,
            "nkey-ok",
            "nkey_file",
            Some(file("n", &format!("{SEED}\n"))),
        ),
    ];
    let bad = [
        join(
            &by_token,
            "token-bad",
            "token_file",
            Some(file("w", "not-the-token\n")),
        ),
        join(&by_nkey, "nkey-none", "token_file", None),
    ];
    for p in &good {
        until("ready with the right credentials", 20, 200, || readyz(p)).await;
    }
    for p in &bad {
        until("the refusal is explained", 20, 1, || async {
            let err = p.stderr().to_lowercase();
            u16::from(err.contains("cannot connect") && err.contains("authoriz"))
        })
        .await;
        assert_eq!(readyz(p).await, 503, "joined without the right credentials");
        let err = p.stderr();
        assert!(
            !err.contains("s3cret-bus-token") && !err.contains(SEED),
            "{err}"
        );
    }
    for p in &good {
        let err = p.stderr();
        assert!(
            !err.contains("s3cret-bus-token") && !err.contains(SEED),
            "{err}"
        );
    }
}

/// Someone who can write to the bus but does not hold the fleet's vault key cannot steer the
/// fleet: an untagged issuer key or agent row, or one that lifts a revocation, is ignored
/// (and logged); a bare delete of a revoked agent's row is answered by publishing it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_planted_on_the_bus_without_the_fleet_key_are_ignored() {
    let env = TestEnv::new().await;
    let nats = Nats::start(env.dir.path());
    let (a, b) = (instance(&env, &nats, "a"), instance(&env, &nats, "b"));
    for p in [&a, &b] {
        until("ready", 20, 200, || readyz(p)).await;
    }
    let bot = register(&a, "bot", "alice", &[]).await;
    until("B accepts bot", 10, 200, || connect(&b, &bot)).await;
    run(&a.home, &["agents", "revoke", "bot"]).await;
    until("B refuses bot", 10, 403, || connect(&b, &bot)).await;

    let client = async_nats::connect(nats.url()).await.expect("connect");
    let kv = async_nats::jetstream::new(client)
        .get_key_value("e2e-registry")
        .await
        .expect("registry bucket");
    let plant = |key: &str, value: serde_json::Value| {
        let (kv, key) = (kv.clone(), key.to_owned());
        async move {
            kv.put(&key, value.to_string().into()).await.expect("put");
        }
    };
    // A forged issuer key, a new agent, and bot's row without its revocation.
    plant(
        "issuer.evil",
        serde_json::json!({"public_jwk": r#"{"kty":"EC","crv":"P-256","x":"x","y":"y","kid":"evil"}"#,
            "created": 1, "valid_until": null}),
    )
    .await;
    plant(
        "agent.mallory",
        serde_json::json!({"spiffe_id": "spiffe://agentgate.local/agent/mallory", "owner": "m",
            "tenant": null, "created": 1, "revoked": null, "revoke_reason": null,
            "reference_tokens": false}),
    )
    .await;
    plant(
        "agent.bot",
        serde_json::json!({"spiffe_id": bot.spiffe_id, "owner": "alice", "tenant": null,
            "created": 4_000_000_000i64, "revoked": null, "revoke_reason": null,
            "reference_tokens": false}),
    )
    .await;
    until("B logs the planted entries as ignored", 10, 1, || async {
        let err = b.stderr();
        u16::from(
            ["issuer.evil", "agent.mallory", "agent.bot"]
                .iter()
                .all(|k| err.contains(&format!("\"key\":\"{k}\"")) && err.contains("not tagged")),
        )
    })
    .await;
    assert_eq!(
        connect(&b, &bot).await,
        403,
        "a planted row lifted the revocation"
    );
    // The planted row of bot does not stay on the bus: the fleet's own row replaces it.
    until("bot's own row replaces the planted one", 10, 1, || async {
        let value = kv.get("agent.bot").await.ok().flatten().unwrap_or_default();
        u16::from(tagged(&value))
    })
    .await;
    let out = agentgate(&b.home, &["agents", "list", "-o", "json"], &[]).await;
    assert!(
        !ok(&out, "agents list").contains("mallory"),
        "a planted agent was taken"
    );

    // A bare delete of bot's row: an instance that holds it publishes it again (tagged).
    kv.delete("agent.bot").await.expect("delete");
    until("bot's row is back on the bus", 10, 1, || async {
        let value = kv.get("agent.bot").await.ok().flatten().unwrap_or_default();
        let text = String::from_utf8_lossy(&value).into_owned();
        u16::from(
            tagged(&value) && text.contains("\"revoked\":") && !text.contains("\"revoked\":null"),
        )
    })
    .await;
    // And an instance that joins now learns the revocation.
    let c = instance(&env, &nats, "c");
    until("C ready", 20, 200, || readyz(&c)).await;
    assert_eq!(connect(&c, &bot).await, 403, "C accepted a revoked agent");
}

/// Whether a KV value has the fleet's framing: 64 hex digits of a tag, then `.`.
fn tagged(value: &[u8]) -> bool {
    value.len() > 65 && value[..64].iter().all(u8::is_ascii_hexdigit) && value[64] == b'.'
}
