//! Fairness under hostile load: four agents send worst-case bodies (a 540 KB Slack form
//! naming ~60k channels) while a fifth agent reads and an operator PANICs one of the four.
//! Timings are printed for the closing note, never asserted; what is asserted is that every
//! read and the PANIC are answered correctly while the attack runs.

use crate::support::raw::{self, H1};
use crate::support::{TestEnv, admin, agent};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::time::{Duration, Instant};

/// A tunnel to `host` as agent `name`, with an HTTP/1.1 client on it.
async fn client_as(proxy: &crate::support::proxy::Proxy, name: &str, host: &str) -> H1 {
    let token = agent::signer()
        .sign(&agent::claims(name))
        .expect("sign token");
    let (s, head) = raw::connect_as(
        proxy.proxy_addr,
        &format!("{host}:443"),
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(head.status, 200, "CONNECT as {name}: {}", head.text());
    let tls = raw::tls_over(s, host, &proxy.ca_path, &[b"http/1.1"]).await;
    raw::h1_client(tls).await
}

/// `channel=C0000000,C0000001,…`: ~60k channel ids in one 540 KB form body.
fn worst_case_slack_form() -> Bytes {
    let mut body = String::from("text=hi&channel=");
    for i in 0..60_000u32 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!("C{i:07}"));
    }
    Bytes::from(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worst_case_bodies_do_not_stall_other_agents_or_panic() {
    let env = TestEnv::new().await;
    let proxy = env.start(env.config().set("limits", "max_request_body", "4194304"));
    let body = worst_case_slack_form();
    let attack_for = Duration::from_secs(6);

    let mut attackers = Vec::new();
    for i in 0..4 {
        let mut h1 = client_as(&proxy, &format!("attacker-{i}"), "slack.com").await;
        let body = body.clone();
        attackers.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut statuses = Vec::new();
            let mut slowest = Duration::ZERO;
            // Bounded in time and count; a refused connection ends the loop.
            while started.elapsed() < attack_for && statuses.len() < 200 {
                let req = Request::post("/api/chat.postMessage")
                    .header("host", "slack.com")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(body.clone()))
                    .expect("request");
                if h1.ready().await.is_err() {
                    break;
                }
                let t = Instant::now();
                let Ok(resp) = h1.send_request(req).await else {
                    break;
                };
                let resp = raw::RawResponse::from_hyper(resp).await;
                slowest = slowest.max(t.elapsed());
                statuses.push(resp.status);
            }
            (i, statuses, slowest)
        }));
    }

    // The fifth agent reads throughout.
    let mut reader = client_as(&proxy, "reader", "api.github.com").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut reads = Vec::new();
    let mut panic_took = None;
    let started = Instant::now();
    while started.elapsed() < attack_for - Duration::from_secs(1) {
        let t = Instant::now();
        let resp = raw::send_h1(&mut reader, raw::get("/repos/acme/web", "api.github.com")).await;
        assert_eq!(
            resp.status,
            200,
            "a read during the attack: {}",
            resp.text()
        );
        reads.push(t.elapsed());
        if panic_took.is_none() && started.elapsed() > Duration::from_secs(2) {
            let t = Instant::now();
            let resp = admin::call(
                proxy.admin_addr,
                "POST",
                "/api/v1/panic",
                Some(&proxy.admin_token()),
                Some(&format!(
                    r#"{{"agent":"spiffe://{}/agent/attacker-0","reason":"load test"}}"#,
                    agent::TRUST_DOMAIN
                )),
            )
            .await;
            assert_eq!(resp.status, 200, "PANIC during the attack: {}", resp.text());
            panic_took = Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut attack_statuses = Vec::new();
    let mut slowest_attack = Duration::ZERO;
    for a in attackers {
        let (i, statuses, slowest) = a.await.expect("attacker task");
        slowest_attack = slowest_attack.max(slowest);
        // The PANICked attacker's requests after its PANIC are refused by identity (403).
        let refused = |s: &u16| *s == 413 || (i == 0 && *s == 403);
        assert!(
            statuses.iter().all(refused),
            "attacker-{i}: every worst-case body is refused as too complex to judge: {:?}",
            statuses.iter().find(|s| !refused(s))
        );
        attack_statuses.extend(statuses);
    }
    assert!(
        !attack_statuses.is_empty(),
        "no attack request was answered"
    );
    assert!(
        env.received()
            .iter()
            .all(|r| !r.target.starts_with("/api/chat.postMessage")),
        "a worst-case body reached the upstream"
    );
    reads.sort();
    let p50 = reads[reads.len() / 2];
    let max = reads[reads.len() - 1];
    eprintln!(
        "load: {} attack requests answered (slowest {slowest_attack:?}); {} reads, p50 {p50:?}, max {max:?}; PANIC answered in {:?}",
        attack_statuses.len(),
        reads.len(),
        panic_took.expect("PANIC was sent"),
    );
}
