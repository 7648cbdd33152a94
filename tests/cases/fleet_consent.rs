//! Fleet consents on a real NATS JetStream server: a request held on one instance is
//! answered on another (the instance's store and a tenant's own), a once-approval is never
//! spent twice, and without the bus an escalation is refused rather than held.

use std::time::Duration;

use super::fleet::{cli_ok, instance_with, readyz, until};
use crate::support::TestEnv;
use crate::support::cli::{agentgate, ok, register};
use crate::support::nats::Nats;
use crate::support::proxy::toml_str;

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
