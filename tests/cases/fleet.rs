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
use crate::support::proxy::{self, Proxy, toml_str};
use crate::support::raw;

/// One instance of the fleet with its own state dir.
fn instance(env: &TestEnv, nats: &Nats, name: &str) -> Proxy {
    let home = env.dir.path().join(name);
    std::fs::create_dir_all(&home).expect("instance home");
    let cfg = env
        .config()
        .set("fleet", "url", &toml_str(&nats.url()))
        .set("fleet", "name", &toml_str("e2e"))
        .set("fleet", "max_staleness", &toml_str("2s"));
    let path = home.join("agentgate.toml");
    std::fs::write(&path, cfg.render()).expect("write config");
    proxy::start(&home, &path, &[])
}

async fn readyz(proxy: &Proxy) -> u16 {
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
async fn until<F, Fut>(what: &str, secs: u64, want: u16, mut probe: F) -> Duration
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
