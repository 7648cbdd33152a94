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

/// The status of a JSON `POST` of `body` to `url` through `proxy` (curl).
async fn post_json(proxy: &crate::support::proxy::Proxy, url: &str, body: &str) -> u16 {
    let args = [
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data-raw",
        body,
        url,
    ];
    curl(proxy, &args).await.status
}

async fn send_mail(proxy: &crate::support::proxy::Proxy) -> u16 {
    let url = "https://gmail.googleapis.com/gmail/v1/users/me/messages/send";
    post_json(proxy, url, &mail_body()).await
}

async fn post_slack(proxy: &crate::support::proxy::Proxy) -> u16 {
    let body = r#"{"channel":"C0123ABCD","text":"build green"}"#;
    post_json(proxy, "https://slack.com/api/chat.postMessage", body).await
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

/// Copies the `*.rego` and `*.json` files of `from` into `to`.
fn copy_policy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".rego") || name.ends_with(".json") {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

fn replay_cli(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["policy", "replay"];
    all.extend_from_slice(args);
    let out = crate::support::proxy::cli(&env.home(), &all, &[]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Traffic recorded from real clients, replayed: the active policy's own files change
/// nothing (the rebuilt inputs are the ones that were decided); a deny-all candidate turns
/// every allow and escalate into deny, by action; the admin API agrees with the CLI; and a
/// tampered log is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_recorded_traffic_shows_what_a_candidate_would_change() {
    let env = TestEnv::new().await;
    let proxy = env.start(
        env.with_default_policy()
            .set("policy", "eval_timeout", &toml_str("5s"))
            .set("consent", "mode", &toml_str("async")),
    );
    for path in ["issues", "pulls", "issues"] {
        let url = format!("https://api.github.com/repos/acme/web/{path}");
        assert_eq!(curl(&proxy, &[&url]).await.status, 200);
    }
    let issue = env.dir.path().join("issue.json");
    std::fs::write(&issue, r#"{"title": "flaky"}"#).unwrap();
    let created = crate::support::clients::python(
        "requests",
        "https://api.github.com/repos/acme/web/issues",
        &proxy,
        &[
            "--method",
            "POST",
            "--header",
            "content-type:application/json",
            "--data-file",
            issue.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(created["status"], 403, "{created}");
    let deleted = crate::support::clients::node_fetch(
        "https://api.github.com/repos/acme/web",
        &proxy,
        &["--method", "DELETE"],
    )
    .await;
    assert_eq!(deleted["status"], 403, "{deleted}");
    audit_decisions(&proxy, |rs| rs.iter().any(|r| r["method"] == "DELETE")).await;

    // The active policy, as a candidate: nothing changes.
    let same = env.dir.path().join("same");
    copy_policy(&env.home().join("policies"), &same);
    let (ok, out, err) = replay_cli(&env, &[same.to_str().unwrap(), "-o", "json"]);
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["changed"], 0, "{r:#}");
    assert_eq!(r["replayed"], 5, "{r:#}");

    // Deny everything: each allow and escalate would change, by action.
    let deny = env.dir.path().join("deny");
    write_policy(&deny, DENY_ALL);
    let (ok, out, err) = replay_cli(&env, &[deny.to_str().unwrap(), "-o", "json"]);
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["changed"].as_u64(), r["unchanged"].as_u64()),
        (Some(4), Some(1)),
        "{r:#}"
    );
    // The two reads of the issues are one input when they fell in the same second.
    assert!(matches!(r["distinct"].as_u64(), Some(4 | 5)), "{r:#}");
    let moves: Vec<(String, String, String, u64)> = r["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["from"].as_str().unwrap().to_owned(),
                t["to"].as_str().unwrap().to_owned(),
                t["action"].as_str().unwrap().to_owned(),
                t["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let has = |from: &str, action: &str, n: u64| {
        moves
            .iter()
            .any(|m| m.0 == from && m.1 == "deny" && m.2 == action && m.3 == n)
    };
    assert!(has("allow", "github.issues.list-for-repo", 2), "{moves:?}");
    assert!(has("allow", "github.pulls.list", 1), "{moves:?}");
    assert!(has("escalate", "github.issues.create", 1), "{moves:?}");
    let examples = &r["transitions"][0]["examples"];
    assert!(examples.as_array().is_some_and(|e| !e.is_empty()), "{r:#}");
    let (ok, text, _) = replay_cli(&env, &[deny.to_str().unwrap(), "--agent", "nobody"]);
    assert!(
        ok && text.contains("Replayed 0 recorded decisions"),
        "{text}"
    );
    let (ok, text, _) = replay_cli(&env, &[deny.to_str().unwrap()]);
    assert!(
        ok && text.contains("allow → deny") && text.contains("github.issues.create"),
        "{text}"
    );

    // The admin API, with the candidate as files: the same answer.
    let body = serde_json::json!({"files": {"policy.rego": DENY_ALL}}).to_string();
    let token = proxy.admin_token();
    let api = admin::json(
        proxy.admin_addr,
        "POST",
        "/api/v1/policy/replay",
        &token,
        Some(&body),
        200,
    )
    .await;
    assert_eq!(
        (api["changed"].clone(), api["replayed"].clone()),
        (r["changed"].clone(), r["replayed"].clone())
    );
    let bad = serde_json::json!({"files": {"policy.rego": "package agentgate\ndecision := {"}})
        .to_string();
    let resp = admin::call(
        proxy.admin_addr,
        "POST",
        "/api/v1/policy/replay",
        Some(&token),
        Some(&bad),
    )
    .await;
    assert_eq!(resp.status, 422, "{}", resp.text());
    let budgets = admin::json(
        proxy.admin_addr,
        "GET",
        "/api/v1/budgets",
        &token,
        None,
        200,
    )
    .await;
    assert!(budgets["budgets"].is_array(), "{budgets}");

    // A record changed after the fact: the chain no longer verifies, and replay refuses.
    proxy.stop();
    let conn = rusqlite::Connection::open(env.home().join("audit.db")).unwrap();
    let n = conn
        .execute(
            "UPDATE records SET record = replace(record, '\"effect\":\"deny\"', '\"effect\":\"allow\"') WHERE record LIKE '%\"method\":\"DELETE\"%'",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let (ok, _, err) = replay_cli(&env, &[deny.to_str().unwrap()]);
    assert!(!ok, "a tampered log was replayed");
    assert!(err.contains("does not verify"), "{err}");
}

/// In a fleet, one budget is counted by every instance: posts sent at once through two
/// instances, three each, against a limit of 4 for the agent: exactly 4 leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_counts_one_budget_across_instances() {
    use super::fleet::{instance_with, readyz, until};
    let env = TestEnv::new().await;
    let nats = crate::support::nats::Nats::start(env.dir.path());
    let dir = env.dir.path().join("fleet-policy");
    write_policy(
        &dir,
        &BUDGET_POLICY.replace(
            r#""key": ["slack-posts", input.subject.id], "limit": 2, "window": "3s""#,
            r#""key": ["slack-posts", input.subject.id], "limit": 4, "window": "1h""#,
        ),
    );
    let cfg = env
        .config()
        .set("policy", "dir", &toml_str(&dir.display().to_string()))
        .set("policy", "eval_timeout", &toml_str("5s"));
    let a = instance_with(&env, &nats, "a", cfg.clone());
    let b = instance_with(&env, &nats, "b", cfg);
    for p in [&a, &b] {
        until("the instance is ready", 20, 200, || readyz(p)).await;
    }
    let posts = [&a, &b, &a, &b, &a, &b].map(post_slack);
    let statuses = futures_util::future::join_all(posts).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 4, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 403).count(),
        2,
        "{statuses:?}"
    );
    let posted = env
        .upstream
        .requests()
        .iter()
        .filter(|r| r.contains("chat.postMessage"))
        .count();
    assert_eq!(posted, 4);

    // The CLI of either instance reads the fleet's count.
    let home = env.dir.path().join("b");
    let config = home.join("agentgate.toml");
    let out = crate::support::proxy::cli(
        &home,
        &["budgets", "-c", config.to_str().unwrap(), "-o", "json"],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let usage: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(usage[0]["key"][0], "slack-posts", "{usage:#}");
    assert_eq!(usage[0]["used"], 4, "{usage:#}");
}
