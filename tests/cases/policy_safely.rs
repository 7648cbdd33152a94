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

const BUDGET_POLICY: &str = r#"package agentgate
import rego.v1
decision := {"effect": "allow", "reasons": ["mail within its budget"], "budget": {"key": ["external-mail", input.subject.id], "limit": 20, "window": "1h", "over": "escalate"}} if {
    input.action.name == "gmail.users.messages.send"
} else := {"effect": "allow", "reasons": ["posts within their budget"], "budgets": [{"key": ["slack-posts", input.subject.id], "limit": 2, "window": "3s", "over": "deny"}]} if {
    input.action.name == "slack.chat.postMessage"
} else := {"effect": "allow", "reasons": ["anything else"]}
"#;

fn mail_body() -> String {
    use base64::Engine;
    let msg = "From: bot@example.com\r\nTo: carol@partner.org\r\nSubject: numbers\r\n\r\nhi\r\n";
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(msg);
    serde_json::json!({ "raw": raw }).to_string()
}

async fn send_mail(proxy: &crate::support::proxy::Proxy) -> u16 {
    let body = mail_body();
    let out = curl(
        proxy,
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-raw",
            &body,
            "https://gmail.googleapis.com/gmail/v1/users/me/messages/send",
        ],
    )
    .await;
    out.status
}

async fn post_slack(proxy: &crate::support::proxy::Proxy) -> u16 {
    let out = curl(
        proxy,
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-raw",
            r#"{"channel":"C0123ABCD","text":"build green"}"#,
            "https://slack.com/api/chat.postMessage",
        ],
    )
    .await;
    out.status
}

/// Twenty-five concurrent external mails under a budget of 20 an hour: exactly 20 leave
/// and 5 escalate; `agentgate budgets` shows 20 of 20; a killed and restarted proxy still
/// counts them; a short window slides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_count_allowed_requests_in_a_sliding_window() {
    let env = TestEnv::new().await;
    let dir = env.dir.path().join("budget-policy");
    write_policy(&dir, BUDGET_POLICY);
    let cfg = env
        .config()
        .set("policy", "dir", &toml_str(&dir.display().to_string()))
        .set("policy", "eval_timeout", &toml_str("5s"))
        .set("consent", "mode", &toml_str("async"));
    let proxy = env.start(cfg.clone());

    let sends = (0..25).map(|_| send_mail(&proxy));
    let statuses = futures_util::future::join_all(sends).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let held = statuses.iter().filter(|s| **s == 403).count();
    assert_eq!((ok, held), (20, 5), "{statuses:?}");
    let sent = env
        .upstream
        .requests()
        .iter()
        .filter(|r| r.contains("/send"))
        .count();
    assert_eq!(sent, 20, "{:?}", env.upstream.requests());

    let records = audit_decisions(&proxy, |rs| {
        rs.iter()
            .filter(|r| r["action"]["name"] == "gmail.users.messages.send")
            .count()
            >= 25
    })
    .await;
    let mail: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"]["name"] == "gmail.users.messages.send")
        .collect();
    let mut used: Vec<u64> = mail
        .iter()
        .filter(|r| r["effect"] == "allow")
        .map(|r| r["budgets"][0]["used"].as_u64().unwrap())
        .collect();
    used.sort_unstable();
    assert_eq!(
        used,
        (1..=20).collect::<Vec<u64>>(),
        "each allowed mail counted once"
    );
    let over: Vec<&&Value> = mail.iter().filter(|r| r["effect"] == "deny").collect();
    assert_eq!(over.len(), 5);
    for r in over {
        assert_eq!(r["gate"], "consent", "{r:#}");
        assert_eq!(r["budgets"][0]["exceeded"], true, "{r:#}");
        assert_eq!(r["budgets"][0]["used"], 20, "{r:#}");
        assert_eq!(r["budgets"][0]["window"], "1h", "{r:#}");
        let why = r["reasons"].to_string();
        assert!(
            why.contains("budget external-mail/spiffe://") && why.contains("20 of 20"),
            "{why}"
        );
    }

    let out = crate::support::proxy::cli(&env.home(), &["budgets", "-o", "json"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let usage: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(usage[0]["key"][0], "external-mail", "{usage:#}");
    assert_eq!(
        (usage[0]["used"].as_u64(), usage[0]["limit"].as_u64()),
        (Some(20), Some(20))
    );

    // Killed and started again: the uses are still counted.
    proxy.stop();
    let proxy = env.start(cfg);
    assert_eq!(send_mail(&proxy).await, 403);

    // A 3-second window of 2 posts: the third is denied, and once the window has slid past
    // the first two, posting works again.
    assert_eq!(post_slack(&proxy).await, 200);
    assert_eq!(post_slack(&proxy).await, 200);
    assert_eq!(post_slack(&proxy).await, 403);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(post_slack(&proxy).await, 200);
    let records = audit_decisions(&proxy, |rs| {
        rs.iter()
            .filter(|r| r["action"]["name"] == "slack.chat.postMessage")
            .count()
            >= 4
    })
    .await;
    let denied = records
        .iter()
        .find(|r| r["action"]["name"] == "slack.chat.postMessage" && r["effect"] == "deny")
        .unwrap();
    assert_eq!(denied["error"], "budget_exceeded", "{denied:#}");
    assert_eq!(denied["gate"], "policy", "{denied:#}");
}
