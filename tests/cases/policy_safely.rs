//! Changing policy safely: a shadow policy evaluated beside the active one (records, metrics,
//! the live event stream), action budgets counted per key in a sliding window, and
//! `policy replay` of recorded traffic against a candidate.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::admin::{self, sse};
use crate::support::clients::curl;
use crate::support::proxy::{Launch, launch, toml_str};
use crate::support::{TestEnv, audit_decisions};

const DENY_ALL: &str = "package agentgate\n\ndecision := {\"effect\": \"deny\", \"reasons\": [\"the candidate denies everything\"]}\n";
const ALLOW_ALL: &str = "package agentgate\n\ndecision := {\"effect\": \"allow\", \"reasons\": [\"candidate allows\"]}\n";

fn write_policy(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join("policy.rego.partial");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("policy.rego")).unwrap();
}

/// The value of one series in `/metrics` text (0 when absent).
fn series(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A shadow that denies what the active policy allows changes nothing for the agent; the
/// record, `/metrics` and the live stream show the disagreement, and an edited shadow is
/// reloaded like any policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_policy_is_recorded_and_counted_but_never_enforced() {
    let env = TestEnv::new().await;
    let shadow = env.dir.path().join("candidate");
    write_policy(&shadow, DENY_ALL);
    let proxy = env.start(
        env.with_default_policy()
            .set("policy", "eval_timeout", &toml_str("5s"))
            .set("policy", "shadow", &toml_str(&shadow.display().to_string())),
    );
    let (addr, token) = (proxy.admin_addr, proxy.admin_token());
    let ticket = admin::json(addr, "POST", "/api/v1/events/ticket", &token, None, 200).await;
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    let (status, stream, _) = sse(addr, &format!("/api/v1/events?ticket={ticket}"), &[]).await;
    assert_eq!(status, 200);
    let mut stream = stream.unwrap();

    // Allowed by the active policy: it goes through, whatever the shadow says.
    let out = curl(&proxy, &["https://api.github.com/repos/acme/web/issues"]).await;
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(env.upstream.requests(), ["GET /repos/acme/web/issues"]);
    let live = stream
        .until(|r| r["kind"] == "decision" && r["path"] == "/repos/acme/web/issues")
        .await;
    let r = &live["record"];
    assert_eq!(r["effect"], "allow", "{r:#}");
    assert_eq!(r["policy_effect"], "allow", "{r:#}");
    assert_eq!(r["shadow"]["effect"], "deny", "{r:#}");
    assert_eq!(
        r["shadow"]["reasons"][0], "the candidate denies everything",
        "{r:#}"
    );
    let status = admin::json(addr, "GET", "/api/v1/policy", &token, None, 200).await;
    assert_eq!(
        r["shadow"]["policy_hash"], status["shadow"]["hash"],
        "{status:#}"
    );
    assert_eq!(status["shadow"]["mode"], "shadow", "{status:#}");

    // Denied by both: they agree, and the record carries no shadow.
    let out = curl(
        &proxy,
        &["-X", "DELETE", "https://api.github.com/repos/acme/web"],
    )
    .await;
    assert_eq!(out.status, 403, "{out:?}");
    let r = stream
        .until(|r| r["kind"] == "decision" && r["method"] == "DELETE")
        .await;
    assert!(r["record"].get("shadow").is_none(), "{r:#}");

    let metrics = admin::call(addr, "GET", "/metrics", Some(&token), None)
        .await
        .text();
    let count = |a: &str, s: &str| {
        series(
            &metrics,
            &format!("agentgate_policy_shadow_total{{active=\"{a}\",shadow=\"{s}\"}}"),
        )
    };
    assert_eq!(count("allow", "deny"), 1, "{metrics}");
    assert_eq!(count("deny", "deny"), 1, "{metrics}");
    assert_eq!(count("allow", "allow"), 0, "{metrics}");

    // The shadow is watched like the active policy: now it agrees on reads.
    write_policy(&shadow, ALLOW_ALL);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = admin::json(addr, "GET", "/api/v1/policy", &token, None, 200).await;
        if s["shadow"]["hash"] != status["shadow"]["hash"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "shadow never reloaded: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = curl(&proxy, &["https://api.github.com/repos/acme/web/pulls"]).await;
    assert_eq!(out.status, 200, "{out:?}");
    let records = audit_decisions(&proxy, |rs| {
        rs.iter().any(|r| r["path"] == "/repos/acme/web/pulls")
    })
    .await;
    let r = records
        .iter()
        .find(|r| r["path"] == "/repos/acme/web/pulls")
        .unwrap();
    assert!(r.get("shadow").is_none(), "{r:#}");
    let reloads: Vec<Value> = crate::support::read_records(&proxy.home.join("audit.db"), "admin")
        .into_iter()
        .filter(|r| r["event"] == "policy_reloaded" && r["detail"]["shadow"] == true)
        .collect();
    assert_eq!(reloads.len(), 1, "{reloads:#?}");
}

/// A shadow directory that does not exist stops the start with the setting's name.
#[tokio::test]
async fn a_missing_shadow_directory_is_a_start_error() {
    let env = TestEnv::new().await;
    let missing = env.dir.path().join("nope");
    let cfg = env.config().set(
        "policy",
        "shadow",
        &toml_str(&missing.display().to_string()),
    );
    let path = env.write_config(&cfg);
    match launch(&env.home(), &path, &[]) {
        Launch::Ready(_) => panic!("started with a missing shadow directory"),
        Launch::Exited { status, stderr } => {
            assert!(!status.success());
            assert!(stderr.contains("policy.shadow"), "{stderr}");
        }
    }
}
