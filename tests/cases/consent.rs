//! Gate 4 — consent with the local approver: the shipped policy escalates writes
//! (`POST /repos/acme/web/issues`), and a person answers through the real CLI
//! (`agentgate consent list|approve|deny`) or the admin API. Held requests (real `curl`)
//! wait for the answer, time out, or are cancelled when the agent goes away or PANICs;
//! async mode answers at once and lets the identical retry through after approval (once,
//! or for a window). Bounds, restarts, the audit trail and signed webhooks
//! (Standard Webhooks) are checked end to end.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::cli::{Registered as Agent, consent_list, failed, ok};
use crate::support::held::{self, Curl, Spawned, finish};
use crate::support::pattern::sha256_hex;
use crate::support::proxy::{self, ConfigBuilder, Proxy, toml_str};
use crate::support::raw::RawResponse;
use crate::support::webhook::WebhookReceiver;
use crate::support::{TestEnv, agent, assert_denied, audit_decisions, read_records};

// ---------------------------------------------------------------------------------------
// Helpers

/// The write the shipped policy escalates, and its tuple.
const ISSUES_URL: &str = "https://api.github.com/repos/acme/web/issues";
const ISSUES_PATH: &str = "/repos/acme/web/issues";
const ACTION: &str = "github.issues.create";
const RESOURCE_TYPE: &str = "github.repo";
const RESOURCE_ID: &str = "acme/web";
/// Who answers through the CLI (`$USER` of the `agentgate consent` process).
const APPROVER: &str = "carol";
/// A Standard Webhooks secret (`whsec_` + base64 of 32 bytes).
const HOOK_SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
/// The environment variable that carries it (not `AGENTGATE_*`).
const HOOK_SECRET_ENV: &str = "HOOK_SECRET";

/// The shipped policy (with a generous evaluation bound, as in `intent_policy`) and the
/// consent gate in `mode` with consents lasting `timeout`.
fn config(env: &TestEnv, mode: &str, timeout: &str) -> ConfigBuilder {
    env.with_default_policy()
        .set("policy", "eval_timeout", &toml_str("5s"))
        .set("consent", "mode", &toml_str(mode))
        .set("consent", "timeout", &toml_str(timeout))
}

/// `agentgate ARGS` against the proxy's state dir as user [`APPROVER`].
async fn agentgate(proxy: &Proxy, args: &[&str]) -> Output {
    crate::support::cli::agentgate(&proxy.home, args, &[("USER", APPROVER)]).await
}

/// `agents register NAME --owner OWNER`.
async fn register(proxy: &Proxy, name: &str, owner: &str) -> Agent {
    crate::support::cli::register(proxy, name, owner, &[]).await
}

/// The test agent (token from the test trust domain, no owner).
fn e2e_agent() -> Agent {
    Agent {
        name: agent::NAME.to_owned(),
        spiffe_id: format!("spiffe://{}/agent/{}", agent::TRUST_DOMAIN, agent::NAME),
        token: agent::token().to_owned(),
    }
}

/// Polls `consent list -o json` (up to 10 s) until `n` consents are pending.
async fn wait_pending(proxy: &Proxy, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = consent_list(proxy, false).await;
        if list.len() >= n {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{n} pending consent(s) did not show within 10 s: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `consent list --all -o json` (up to 10 s) until consent `id` has `status`.
async fn wait_status(proxy: &Proxy, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = consent_list(proxy, true).await;
        if let Some(c) = list.iter().find(|c| c["id"] == id && c["status"] == status) {
            return c.clone();
        }
        assert!(
            Instant::now() < deadline,
            "consent {id} did not become {status} within 10 s: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `curl -X POST --data-binary BODY URL` through the proxy as `agent`, bounded by
/// `max_time` seconds; never asserts (a held request may be cut off on purpose).
fn post_json(proxy: &Proxy, who: &Agent, url: &str, body: &str, max_time: u32) -> Spawned {
    post_json_with(proxy, who, url, body, max_time, &[])
}

/// [`post_json`] with more curl flags (e.g. `--http1.1`).
fn post_json_with(
    proxy: &Proxy,
    who: &Agent,
    url: &str,
    body: &str,
    max_time: u32,
    extra: &[&str],
) -> Spawned {
    held::post_json(
        who.proxy_url(proxy),
        proxy.ca_path.clone(),
        url,
        body,
        u64::from(max_time),
        extra,
    )
}

/// A POST to the issues of acme/web that completes (async mode, or an approved hold).
async fn post_issue(proxy: &Proxy, who: &Agent, body: &str) -> Curl {
    let c = post_json(proxy, who, ISSUES_URL, body, 30)
        .await
        .expect("curl task");
    c.answered();
    c
}

/// How many `POST /repos/acme/web/issues` reached the upstream.
fn upstream_posts(env: &TestEnv, path: &str) -> usize {
    let line = format!("POST {path}");
    env.upstream
        .requests()
        .iter()
        .filter(|l| **l == line)
        .count()
}

/// Asserts the async-mode answer: 403 gate consent `consent_pending` with `Retry-After: 5`
/// and the consent's id and code; returns (consent_id, binding_code).
fn assert_pending(c: &Curl) -> (String, String) {
    c.answered();
    let body = assert_denied(&c.raw(), 403, "consent");
    assert_eq!(body["error"], "consent_pending", "{body}");
    assert_eq!(body["status"], "pending", "{body}");
    assert_eq!(c.header("retry-after"), Some("5"), "{:?}", c.headers);
    let id = body["consent_id"].as_str().expect("consent_id").to_owned();
    assert_consent_id(&id);
    let code = body["binding_code"]
        .as_str()
        .expect("binding_code")
        .to_owned();
    assert_binding_code(&code);
    assert!(
        body["reason"].as_str().unwrap().contains(&id)
            && body["reason"].as_str().unwrap().contains(&code),
        "the reason should name the consent and its code: {body}"
    );
    (id, code)
}

fn assert_consent_id(id: &str) {
    assert!(
        id.starts_with("cns_") && id.len() > 8 && id[4..].bytes().all(|b| b.is_ascii_hexdigit()),
        "consent id {id:?}"
    );
}

/// 4–6 uppercase letters or digits.
fn assert_binding_code(code: &str) {
    assert!(
        (4..=6).contains(&code.len())
            && code
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
        "binding code {code:?}"
    );
}

/// The decision record of the request with this id (waits up to 5 s for it).
async fn decision(proxy: &Proxy, request_id: &str) -> Value {
    let records =
        audit_decisions(proxy, |rs| rs.iter().any(|r| r["request_id"] == request_id)).await;
    records
        .into_iter()
        .find(|r| r["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no decision record for request {request_id}"))
}

/// Admin records of `event` about consent `id`, waiting up to 5 s for at least `n`.
async fn admin_events(proxy: &Proxy, event: &str, id: &str, n: usize) -> Vec<Value> {
    let db = proxy.home.join("audit.db");
    let mut found = Vec::new();
    for _ in 0..100 {
        found = read_records(&db, "admin")
            .into_iter()
            .filter(|r| r["event"] == event && r["detail"]["consent_id"] == id)
            .collect();
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{} admin record(s) {event} for {id} within 5 s, expected {n}: {found:#?}",
        found.len()
    );
}

/// One request to the admin port, optionally with a bearer token and a JSON body.
async fn admin(
    proxy: &Proxy,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> RawResponse {
    crate::support::admin::call(proxy.admin_addr, method, path, token, body).await
}

/// Asserts a consent listing has the fields the contract names, the tuple of the issue
/// write, and no request digest.
fn assert_listed(c: &Value, who: &Agent, owner: Option<&str>) {
    for field in [
        "id",
        "agent",
        "owner",
        "tenant",
        "action",
        "resource",
        "status",
        "binding_code",
        "created",
        "expires",
        "answered_by",
        "how",
        "reason",
        "window_until",
        "backend",
    ] {
        assert!(c.get(field).is_some(), "consent lacks {field:?}: {c:#}");
    }
    assert!(
        c.get("digest").is_none(),
        "a listing shows the digest: {c:#}"
    );
    assert_consent_id(c["id"].as_str().expect("id"));
    assert_binding_code(c["binding_code"].as_str().expect("binding_code"));
    assert_eq!(c["agent"], who.spiffe_id.as_str(), "{c:#}");
    assert_eq!(c["owner"], json!(owner), "{c:#}");
    assert_eq!(c["action"], ACTION, "{c:#}");
    assert_eq!(
        c["resource"],
        json!({"type": RESOURCE_TYPE, "id": RESOURCE_ID}),
        "{c:#}"
    );
    assert_eq!(c["backend"], "local", "{c:#}");
}

/// Starts the proxy with `cfg` plus raw `[[webhooks]]` tables (the config builder only
/// renders plain tables) and `envs`.
fn start_with_webhooks(
    env: &TestEnv,
    cfg: &ConfigBuilder,
    hooks: &[String],
    envs: &[(&str, &str)],
) -> Proxy {
    let mut text = cfg.render();
    for h in hooks {
        text.push_str(h);
    }
    let path = env.dir.path().join("agentgate.toml");
    std::fs::write(&path, text).expect("write config");
    let proxy = proxy::start(&env.home(), &path, envs);
    assert_eq!(proxy.ca_path, env.home().join("ca.crt"));
    proxy
}

/// A `[[webhooks]]` table for `url` signed with [`HOOK_SECRET`]; `events` as raw TOML
/// (None: the key is left out, i.e. all events).
fn hook(url: &str, events: Option<&str>) -> String {
    let mut t = format!(
        "[[webhooks]]\nurl = {}\nsecret_env = {}\n",
        toml_str(url),
        toml_str(HOOK_SECRET_ENV)
    );
    if let Some(e) = events {
        t.push_str(&format!("events = {e}\n"));
    }
    t.push('\n');
    t
}

/// Checks a delivered webhook: POST over TLS to the hook path, JSON, Standard Webhooks
/// headers with a valid signature, `{type, timestamp, data}`; returns the body.
fn assert_webhook(r: &crate::support::webhook::Received, kind: &str) -> Value {
    assert_eq!(r.method, "POST", "{r:?}");
    assert_eq!(r.path, "/hook", "{r:?}");
    assert!(r.tls, "the webhook was not sent over TLS");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    assert!(
        r.header("webhook-id")
            .is_some_and(|id| id.starts_with("msg_")
                && id.len() > 4
                && id[4..].bytes().all(|b| b.is_ascii_hexdigit())),
        "webhook-id {:?}",
        r.header("webhook-id")
    );
    r.verify(HOOK_SECRET)
        .unwrap_or_else(|e| panic!("{kind}: bad Standard Webhooks signature: {e}"));
    let v = r.json();
    assert_eq!(v["type"], kind, "{v:#}");
    let obj = v.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["data", "timestamp", "type"], "{v:#}");
    // RFC 3339 in UTC, today (or yesterday, right after midnight).
    let ts = v["timestamp"].as_str().expect("timestamp");
    let today = time::OffsetDateTime::now_utc().date();
    let yesterday = today.previous_day().expect("yesterday");
    assert!(
        (ts.starts_with(&format!("{today}T")) || ts.starts_with(&format!("{yesterday}T")))
            && ts.ends_with('Z'),
        "timestamp {ts:?}"
    );
    v
}

/// Checks a consent event's data against the consent.
fn assert_consent_data(data: &Value, id: &str, who: &Agent, owner: &str, status: &str) {
    assert_eq!(data["consent_id"], id, "{data:#}");
    assert_eq!(data["agent"], who.spiffe_id.as_str(), "{data:#}");
    assert_eq!(data["owner"], owner, "{data:#}");
    assert_eq!(data["action"], ACTION, "{data:#}");
    assert_eq!(
        data["resource"],
        json!({"type": RESOURCE_TYPE, "id": RESOURCE_ID}),
        "{data:#}"
    );
    assert_eq!(data["status"], status, "{data:#}");
    assert_binding_code(data["binding_code"].as_str().expect("binding_code"));
    assert!(data["expires"].is_i64(), "{data:#}");
    let mut keys: Vec<&str> = data
        .as_object()
        .expect("data object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "action",
            "agent",
            "answered_by",
            "binding_code",
            "consent_id",
            "expires",
            "how",
            "owner",
            "reason",
            "resource",
            "status",
            "tenant"
        ],
        "{data:#}"
    );
}

// ---------------------------------------------------------------------------------------
// 1-3: hold mode with the local approver

/// Hold mode: a real `curl` POSTing an issue waits while `agentgate consent list -o json`
/// shows the pending consent (id, binding code, agent and owner, action, resource);
/// `agentgate consent approve ID` releases it with the upstream's 200 echo of exactly that
/// body, which reached the upstream once. The decision record says policy escalated and
/// the request was allowed by consent {id, approved, once, by the approver}; the admin
/// audit has consent_requested and consent_approved. A second answer fails: the CLI exits
/// 1, the API answers 409 already_answered with the status, for approve and deny alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_request_is_released_by_cli_approval() {
    let env = TestEnv::new().await;
    let proxy = env.start(config(&env, "hold", "30s"));
    let bot = register(&proxy, "bot", "alice").await;
    let body = r#"{"title":"Flaky test","body":"seen twice today"}"#;

    let held = post_json(&proxy, &bot, ISSUES_URL, body, 30);
    let list = wait_pending(&proxy, 1).await;
    assert_eq!(list.len(), 1, "{list:#?}");
    let c = &list[0];
    assert_listed(c, &bot, Some("alice"));
    assert_eq!(c["status"], "pending", "{c:#}");
    assert_eq!(c["answered_by"], Value::Null, "{c:#}");
    assert_eq!(c["window_until"], Value::Null, "{c:#}");
    let created = c["created"].as_i64().expect("created");
    assert_eq!(c["expires"].as_i64(), Some(created + 30), "{c:#}");
    assert!((agent::now() - created).abs() <= 5, "{c:#}");
    let id = c["id"].as_str().unwrap().to_owned();
    let code = c["binding_code"].as_str().unwrap().to_owned();
    // The text listing names it too.
    let text = ok(
        &agentgate(&proxy, &["consent", "list"]).await,
        "consent list",
    );
    assert!(
        text.contains(&id) && text.contains(&code) && text.contains(ACTION),
        "{text}"
    );

    // Still held: nothing reached the upstream.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "the escalated request was not held");
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 0);

    let out = agentgate(&proxy, &["consent", "approve", &id]).await;
    let stdout = ok(&out, "consent approve");
    assert!(
        stdout.starts_with(&format!("approved {id} once")),
        "{stdout:?}"
    );
    let approved_at = Instant::now();
    let got = finish(held, 10).await;
    got.answered();
    assert!(
        got.done.duration_since(approved_at) < Duration::from_secs(3),
        "the held request took {:?} after the approval",
        got.done.duration_since(approved_at)
    );
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let echo = got.json();
    assert_eq!(echo["method"], "POST", "{echo}");
    assert_eq!(echo["path"], ISSUES_PATH, "{echo}");
    assert_eq!(echo["body_len"], body.len(), "{echo}");
    assert_eq!(echo["body_sha256"], sha256_hex(body.as_bytes()), "{echo}");
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 1);

    let r = decision(&proxy, &got.request_id()).await;
    assert_eq!(r["policy_effect"], "escalate", "{r:#}");
    assert_eq!(r["effect"], "allow", "{r:#}");
    assert_eq!(r["gate"], Value::Null, "{r:#}");
    assert_eq!(r["agent"], bot.spiffe_id.as_str(), "{r:#}");
    assert_eq!(r["action"]["name"], ACTION, "{r:#}");
    assert_eq!(r["consent"]["id"], id.as_str(), "{r:#}");
    assert_eq!(r["consent"]["status"], "approved", "{r:#}");
    assert_eq!(r["consent"]["scope"], "once", "{r:#}");
    assert_eq!(r["consent"]["by"], APPROVER, "{r:#}");

    let requested = admin_events(&proxy, "consent_requested", &id, 1).await;
    assert_eq!(requested.len(), 1, "{requested:#?}");
    let d = &requested[0]["detail"];
    assert_eq!(d["agent"], bot.spiffe_id.as_str(), "{d:#}");
    assert_eq!(d["action"], ACTION, "{d:#}");
    assert_eq!(
        d["resource"],
        json!({"type": RESOURCE_TYPE, "id": RESOURCE_ID}),
        "{d:#}"
    );
    assert_eq!(d["status"], "pending", "{d:#}");
    assert_eq!(d["backend"], "local", "{d:#}");
    assert!(
        d["digest"]
            .as_str()
            .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())),
        "{d:#}"
    );
    let approved = admin_events(&proxy, "consent_approved", &id, 1).await;
    assert_eq!(approved.len(), 1, "{approved:#?}");
    let d = &approved[0]["detail"];
    assert_eq!(d["status"], "approved", "{d:#}");
    assert_eq!(d["by"], APPROVER, "{d:#}");
    assert_eq!(d["how"], "cli", "{d:#}");
    assert_eq!(d["window_until"], Value::Null, "{d:#}");
    assert_eq!(d["digest"], requested[0]["detail"]["digest"], "{d:#}");

    let all = consent_list(&proxy, true).await;
    let c = all.iter().find(|c| c["id"] == id.as_str()).expect("listed");
    assert_eq!(c["status"], "approved", "{c:#}");
    assert_eq!(c["answered_by"], APPROVER, "{c:#}");
    assert_eq!(c["how"], "cli", "{c:#}");
    assert!(consent_list(&proxy, false).await.is_empty());

    // A second answer is refused.
    let err = failed(
        &agentgate(&proxy, &["consent", "approve", &id]).await,
        "approve twice",
    );
    assert!(err.contains("already approved"), "{err}");
    let err = failed(
        &agentgate(&proxy, &["consent", "deny", &id]).await,
        "deny after approve",
    );
    assert!(err.contains("already approved"), "{err}");
    let token = proxy.admin_token();
    for verb in ["approve", "deny"] {
        let resp = admin(
            &proxy,
            "POST",
            &format!("/api/v1/consents/{id}/{verb}"),
            Some(&token),
            Some("{}"),
        )
        .await;
        assert_eq!(resp.status, 409, "{verb}: {}", resp.text());
        let b = resp.json();
        assert_eq!(b["error"], "already_answered", "{verb}: {b}");
        assert_eq!(b["status"], "approved", "{verb}: {b}");
    }
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 1);
    assert_eq!(
        admin_events(&proxy, "consent_approved", &id, 1).await.len(),
        1
    );
}

/// Hold mode: `agentgate consent deny ID --reason "not today"` answers the held `curl`
/// 403 gate consent `consent_denied` naming who denied and why; nothing reached the
/// upstream; the decision record and the admin audit (consent_denied) say so. The
/// identical request again is refused at once on that denial, without a new consent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_request_is_refused_by_cli_denial() {
    let env = TestEnv::new().await;
    let proxy = env.start(config(&env, "hold", "30s"));
    let bot = e2e_agent();
    let body = r#"{"title":"Drop the prod table"}"#;

    let held = post_json(&proxy, &bot, ISSUES_URL, body, 30);
    let list = wait_pending(&proxy, 1).await;
    assert_listed(&list[0], &bot, None);
    let id = list[0]["id"].as_str().unwrap().to_owned();

    let out = agentgate(&proxy, &["consent", "deny", &id, "--reason", "not today"]).await;
    assert_eq!(ok(&out, "consent deny").trim(), format!("denied {id}"));
    let got = finish(held, 10).await;
    got.answered();
    let b = assert_denied(&got.raw(), 403, "consent");
    assert_eq!(b["error"], "consent_denied", "{b}");
    let reason = b["reason"].as_str().unwrap();
    assert!(
        reason.contains("not today") && reason.contains(APPROVER) && reason.contains(&id),
        "{b}"
    );
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 0);

    let r = decision(&proxy, &got.request_id()).await;
    assert_eq!(r["policy_effect"], "escalate", "{r:#}");
    assert_eq!(r["effect"], "deny", "{r:#}");
    assert_eq!(r["gate"], "consent", "{r:#}");
    assert_eq!(r["error"], "consent_denied", "{r:#}");
    assert_eq!(r["status"], 403, "{r:#}");
    let denied = admin_events(&proxy, "consent_denied", &id, 1).await;
    let d = &denied[0]["detail"];
    assert_eq!(d["status"], "denied", "{d:#}");
    assert_eq!(d["by"], APPROVER, "{d:#}");
    assert_eq!(d["how"], "cli", "{d:#}");
    assert_eq!(d["reason"], "not today", "{d:#}");

    // The identical request is refused on that denial at once.
    let started = Instant::now();
    let again = post_json(&proxy, &bot, ISSUES_URL, body, 30)
        .await
        .expect("curl task");
    again.answered();
    assert!(started.elapsed() < Duration::from_secs(10));
    let b = assert_denied(&again.raw(), 403, "consent");
    assert_eq!(b["error"], "consent_denied", "{b}");
    assert!(b["reason"].as_str().unwrap().contains(&id), "{b}");
    let all = consent_list(&proxy, true).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["status"], "denied", "{:#}", all[0]);
    assert_eq!(all[0]["reason"], "not today", "{:#}", all[0]);
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 0);
}

/// Hold mode: identical requests held at once share one consent; one of them giving up
/// does not cancel it while another still waits. Approved once, exactly one of the
/// waiting requests passes (upstream 200, once) and the other is refused 403
/// `consent_used`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_held_requests_share_one_consent_and_once_passes_one() {
    let env = TestEnv::new().await;
    let proxy = env.start(config(&env, "hold", "30s"));
    let bot = e2e_agent();
    let body = r#"{"title":"twice"}"#;

    let first = post_json(&proxy, &bot, ISSUES_URL, body, 30);
    let id = wait_pending(&proxy, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A second identical request that gives up after 2 s.
    let quitter = post_json(&proxy, &bot, ISSUES_URL, body, 2);
    let second = post_json(&proxy, &bot, ISSUES_URL, body, 30);
    let quit = finish(quitter, 10).await;
    assert_eq!(quit.exit, Some(28), "{quit:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = consent_list(&proxy, true).await;
    assert_eq!(all.len(), 1, "identical requests asked twice: {all:#?}");
    assert_eq!(all[0]["id"], id.as_str());
    assert_eq!(
        all[0]["status"], "pending",
        "one waiter leaving cancelled the consent: {:#}",
        all[0]
    );
    assert!(!first.is_finished() && !second.is_finished());

    ok(
        &agentgate(&proxy, &["consent", "approve", &id]).await,
        "consent approve",
    );
    let a = finish(first, 10).await;
    let b = finish(second, 10).await;
    a.answered();
    b.answered();
    let (passed, refused) = if a.status == 200 { (a, b) } else { (b, a) };
    assert_eq!(
        passed.status,
        200,
        "{}",
        String::from_utf8_lossy(&passed.body)
    );
    let r = assert_denied(&refused.raw(), 403, "consent");
    assert_eq!(r["error"], "consent_used", "{r}");
    assert!(r["reason"].as_str().unwrap().contains(&id), "{r}");
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 1);
    let d = decision(&proxy, &passed.request_id()).await;
    assert_eq!(d["consent"]["id"], id.as_str(), "{d:#}");
    assert_eq!(d["consent"]["scope"], "once", "{d:#}");
}

/// Hold mode with `consent.timeout = "2s"`: unanswered, the held `curl` gets 403
/// `consent_timeout` ("consent timed out after 2s …") after about two seconds; the consent
/// is expired (admin consent_expired). Approving it then fails (CLI exit 1 naming the
/// expiry; API 409 `expired`), and each late answer is recorded (consent_late_answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_held_request_times_out() {
    let env = TestEnv::new().await;
    let proxy = env.start(config(&env, "hold", "2s"));
    let bot = e2e_agent();

    let started = Instant::now();
    let held = post_json(&proxy, &bot, ISSUES_URL, r#"{"title":"late"}"#, 30);
    let got = finish(held, 15).await;
    let took = started.elapsed();
    got.answered();
    let b = assert_denied(&got.raw(), 403, "consent");
    assert_eq!(b["error"], "consent_timeout", "{b}");
    let reason = b["reason"].as_str().unwrap();
    assert!(reason.starts_with("consent timed out after 2s"), "{reason}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "timed out after {took:?}"
    );
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 0);
    let r = decision(&proxy, &got.request_id()).await;
    assert_eq!(r["error"], "consent_timeout", "{r:#}");
    assert_eq!(r["policy_effect"], "escalate", "{r:#}");

    let all = consent_list(&proxy, true).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    let c = &all[0];
    let id = c["id"].as_str().unwrap().to_owned();
    assert!(reason.contains(&id), "{reason}");
    assert_eq!(c["status"], "expired", "{c:#}");
    assert_eq!(c["how"], "timeout", "{c:#}");
    let expired = admin_events(&proxy, "consent_expired", &id, 1).await;
    assert_eq!(expired.len(), 1, "{expired:#?}");
    assert_eq!(expired[0]["detail"]["status"], "expired");

    let err = failed(
        &agentgate(&proxy, &["consent", "approve", &id]).await,
        "approve after expiry",
    );
    assert!(err.contains("expired"), "{err}");
    let late = admin_events(&proxy, "consent_late_answer", &id, 1).await;
    let d = &late[0]["detail"];
    assert_eq!(d["answer"], "approved", "{d:#}");
    assert_eq!(d["by"], APPROVER, "{d:#}");
    assert_eq!(d["how"], "cli", "{d:#}");

    let resp = admin(
        &proxy,
        "POST",
        &format!("/api/v1/consents/{id}/deny"),
        Some(&proxy.admin_token()),
        Some(r#"{"reason":"too late"}"#),
    )
    .await;
    assert_eq!(resp.status, 409, "{}", resp.text());
    let b = resp.json();
    assert_eq!(b["error"], "expired", "{b}");
    assert_eq!(b["status"], "expired", "{b}");
    let late = admin_events(&proxy, "consent_late_answer", &id, 2).await;
    assert_eq!(late.len(), 2, "{late:#?}");
    assert_eq!(late[1]["detail"]["answer"], "denied");
    // Still expired, and nothing went out.
    let all = consent_list(&proxy, true).await;
    assert_eq!(all[0]["status"], "expired", "{:#}", all[0]);
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 0);
}

// ---------------------------------------------------------------------------------------
// 4-5: async mode

/// Async mode: a write is answered at once 403 `consent_pending` with `Retry-After: 5`,
/// `consent_id` and `binding_code`; the identical retry while pending gets the same
/// consent; once approved the identical retry passes (upstream 200, once) and a further
/// identical retry asks anew (once = one request); a different body is a different
/// consent; a denied one stays refused. `approve --for 10m` opens a window: identical and
/// different-body writes to the same repository pass without new consents (scope
/// "window" in their records), while another repository still asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_consents_are_bound_to_the_request_and_windows_cover_the_tuple() {
    let env = TestEnv::new().await;
    let proxy = env.start(config(&env, "async", "60s"));
    let bot = e2e_agent();
    let a = r#"{"title":"A"}"#;
    let b = r#"{"title":"B"}"#;

    let first = post_issue(&proxy, &bot, a).await;
    let (id1, code1) = assert_pending(&first);
    let r = decision(&proxy, &first.request_id()).await;
    assert_eq!(r["error"], "consent_pending", "{r:#}");
    assert_eq!(r["policy_effect"], "escalate", "{r:#}");
    let listed = consent_list(&proxy, false).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["id"], id1.as_str());
    assert_eq!(listed[0]["binding_code"], code1.as_str());
    assert_listed(&listed[0], &bot, None);

    // The identical retry while pending: the same consent.
    let retry = post_issue(&proxy, &bot, a).await;
    assert_eq!(assert_pending(&retry), (id1.clone(), code1.clone()));
    assert_eq!(consent_list(&proxy, true).await.len(), 1);
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 0);

    // Approved once: the identical retry passes, once.
    ok(
        &agentgate(&proxy, &["consent", "approve", &id1]).await,
        "consent approve",
    );
    let passed = post_issue(&proxy, &bot, a).await;
    assert_eq!(
        passed.status,
        200,
        "{}",
        String::from_utf8_lossy(&passed.body)
    );
    assert_eq!(passed.json()["body_sha256"], sha256_hex(a.as_bytes()));
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 1);
    let r = decision(&proxy, &passed.request_id()).await;
    assert_eq!(r["effect"], "allow", "{r:#}");
    assert_eq!(r["consent"]["id"], id1.as_str(), "{r:#}");
    assert_eq!(r["consent"]["scope"], "once", "{r:#}");
    let all = consent_list(&proxy, true).await;
    let c1 = all.iter().find(|c| c["id"] == id1.as_str()).unwrap();
    assert_eq!(c1["used"], true, "{c1:#}");

    // Once means one request: the next identical one asks again.
    let again = post_issue(&proxy, &bot, a).await;
    let (id2, _) = assert_pending(&again);
    assert_ne!(id2, id1);
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 1);

    // Another body: another consent.
    let other = post_issue(&proxy, &bot, b).await;
    let (id3, _) = assert_pending(&other);
    assert!(id3 != id1 && id3 != id2, "{id3}");
    assert_eq!(consent_list(&proxy, true).await.len(), 3);

    // Denied: the identical retry is refused with the denial.
    let d = r#"{"title":"D"}"#;
    let (id4, _) = assert_pending(&post_issue(&proxy, &bot, d).await);
    ok(
        &agentgate(&proxy, &["consent", "deny", &id4, "--reason", "no D"]).await,
        "consent deny",
    );
    let refused = post_issue(&proxy, &bot, d).await;
    let body = assert_denied(&refused.raw(), 403, "consent");
    assert_eq!(body["error"], "consent_denied", "{body}");
    assert!(body["reason"].as_str().unwrap().contains("no D"), "{body}");
    assert_eq!(consent_list(&proxy, true).await.len(), 4);

    // A window on B's consent covers the agent's writes to acme/web issues.
    let out = agentgate(&proxy, &["consent", "approve", &id3, "--for", "10m"]).await;
    let stdout = ok(&out, "consent approve --for 10m");
    assert!(
        stdout.starts_with(&format!("approved {id3} for 10m")),
        "{stdout:?}"
    );
    let listed = consent_list(&proxy, true).await;
    let c3 = listed.iter().find(|c| c["id"] == id3.as_str()).unwrap();
    let until = c3["window_until"].as_i64().expect("window_until");
    assert!(
        (agent::now() + 590..=agent::now() + 601).contains(&until),
        "{c3:#}"
    );
    let c_body = r#"{"title":"C, never seen before"}"#;
    for (i, body) in [b, b, a, c_body].iter().enumerate() {
        let got = post_issue(&proxy, &bot, body).await;
        assert_eq!(
            got.status,
            200,
            "request {i} under the window: {}",
            String::from_utf8_lossy(&got.body)
        );
        assert_eq!(got.json()["body_sha256"], sha256_hex(body.as_bytes()));
        let r = decision(&proxy, &got.request_id()).await;
        assert_eq!(r["effect"], "allow", "{r:#}");
        assert_eq!(r["consent"]["id"], id3.as_str(), "{r:#}");
        assert_eq!(r["consent"]["scope"], "window", "{r:#}");
    }
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 5);
    assert_eq!(
        consent_list(&proxy, true).await.len(),
        4,
        "the window asked for new consents"
    );

    // Another repository is not covered.
    let api = post_json(
        &proxy,
        &bot,
        "https://api.github.com/repos/acme/api/issues",
        a,
        30,
    )
    .await
    .expect("curl task");
    let (id5, _) = assert_pending(&api);
    assert!(![&id1, &id2, &id3, &id4].contains(&&id5));
    assert_eq!(upstream_posts(&env, "/repos/acme/api/issues"), 0);
}

/// Bounds: with `consent.max_pending_per_agent = 1` and `max_pending = 2`, an agent's
/// second different write is refused 429 gate consent `too_many_pending` (its identical
/// retry still gets its consent); another agent still gets one, and beyond two pending in
/// all a third agent is refused too. Nothing refused creates a consent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_consents_are_bounded_per_agent_and_overall() {
    let env = TestEnv::new().await;
    let cfg = config(&env, "async", "60s")
        .set("consent", "max_pending_per_agent", "1")
        .set("consent", "max_pending", "2");
    let proxy = env.start(cfg);
    let bot = e2e_agent();
    let second = register(&proxy, "second", "alice").await;
    let third = register(&proxy, "third", "bob").await;

    let (id, _) = assert_pending(&post_issue(&proxy, &bot, r#"{"title":"one"}"#).await);
    let over = post_issue(&proxy, &bot, r#"{"title":"two"}"#).await;
    let b = assert_denied(&over.raw(), 429, "consent");
    assert_eq!(b["error"], "too_many_pending", "{b}");
    assert!(
        b["reason"].as_str().unwrap().starts_with(
            "1 consents are pending (1 of this agent; limits consent.max_pending 2 and max_pending_per_agent 1)"
        ),
        "{b}"
    );
    assert_eq!(
        assert_pending(&post_issue(&proxy, &bot, r#"{"title":"one"}"#).await).0,
        id
    );

    let (id2, _) = assert_pending(&post_issue(&proxy, &second, r#"{"title":"one"}"#).await);
    assert_ne!(id2, id);
    let over = post_issue(&proxy, &third, r#"{"title":"one"}"#).await;
    let b = assert_denied(&over.raw(), 429, "consent");
    assert_eq!(b["error"], "too_many_pending", "{b}");
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .starts_with("2 consents are pending (0 of this agent;"),
        "{b}"
    );
    assert_eq!(consent_list(&proxy, true).await.len(), 2);
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 0);

    // An answer frees a slot.
    ok(
        &agentgate(&proxy, &["consent", "deny", &id]).await,
        "consent deny",
    );
    assert_pending(&post_issue(&proxy, &third, r#"{"title":"one"}"#).await);
}

// ---------------------------------------------------------------------------------------
// 6-8: the agent goes away, PANIC, restart

/// Hold mode: the agent gives up (`curl --max-time 2`, over HTTP/2 and over HTTP/1.1)
/// while its request is held; each consent becomes cancelled (how "disconnect",
/// `consent list --all -o json`) with an admin consent_cancelled record, is no longer
/// pending, and can no longer be approved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_disconnect_cancels_the_held_consent() {
    let env = TestEnv::new().await;
    let proxy = env.start(config(&env, "hold", "30s"));
    let bot = e2e_agent();

    for (flags, body) in [
        (&[][..], r#"{"title":"impatient over h2"}"#),
        (&["--http1.1"][..], r#"{"title":"impatient over h1"}"#),
    ] {
        let held = post_json_with(&proxy, &bot, ISSUES_URL, body, 2, flags);
        let id = wait_pending(&proxy, 1).await[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let got = finish(held, 10).await;
        assert_eq!(
            got.exit,
            Some(28),
            "curl {flags:?} should time out: {got:?}"
        );

        let c = wait_status(&proxy, &id, "cancelled").await;
        assert_eq!(c["how"], "disconnect", "{flags:?}: {c:#}");
        assert_eq!(c["answered_by"], "agentgate", "{flags:?}: {c:#}");
        assert_eq!(c["reason"], "the agent disconnected while held", "{c:#}");
        let cancelled = admin_events(&proxy, "consent_cancelled", &id, 1).await;
        assert_eq!(cancelled[0]["detail"]["status"], "cancelled");
        assert_eq!(cancelled[0]["detail"]["how"], "disconnect");
        assert!(consent_list(&proxy, false).await.is_empty());
        // An answer now is refused.
        let err = failed(
            &agentgate(&proxy, &["consent", "approve", &id]).await,
            "approve a cancelled consent",
        );
        assert!(err.contains("cancelled"), "{err}");
    }
    assert_eq!(consent_list(&proxy, true).await.len(), 2);
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 0);
}

/// Hold mode: PANIC of the agent while its request is held answers that request (it
/// does not pass), the consent is denied by agentgate with how "panic" and the PANIC
/// reason, and the report's consents step counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_denies_the_agents_held_consents() {
    let env = TestEnv::new().await;
    let proxy = env.start(config(&env, "hold", "30s"));
    let bot = register(&proxy, "bot", "alice").await;

    let held = post_json(&proxy, &bot, ISSUES_URL, r#"{"title":"rogue"}"#, 30);
    let id = wait_pending(&proxy, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = agentgate(
        &proxy,
        &["panic", "--agent", "bot", "--reason", "drill", "-o", "json"],
    )
    .await;
    let report: Value = serde_json::from_str(&ok(&out, "panic")).expect("report JSON");
    let step = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == "consents")
        .unwrap_or_else(|| panic!("no consents step: {report:#}"))
        .clone();
    assert_eq!(step["count"], 1, "{report:#}");

    let got = finish(held, 10).await;
    assert_ne!(
        got.status, 200,
        "the held request passed after PANIC: {got:?}"
    );
    if got.exit == Some(0) {
        let b = assert_denied(&got.raw(), 403, "consent");
        assert_eq!(b["error"], "consent_denied", "{b}");
    }
    let all = consent_list(&proxy, true).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    let c = &all[0];
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["status"], "denied", "{c:#}");
    assert_eq!(c["how"], "panic", "{c:#}");
    assert_eq!(c["answered_by"], "agentgate", "{c:#}");
    assert_eq!(c["reason"], "PANIC: drill", "{c:#}");
    let denied = admin_events(&proxy, "consent_denied", &id, 1).await;
    assert_eq!(denied[0]["detail"]["how"], "panic");
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 0);
}

/// Async mode: a consent pending when the proxy is killed survives the restart on the
/// same home; approved on the new instance, the identical retry passes (once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_consents_survive_a_restart() {
    let env = TestEnv::new().await;
    let cfg = config(&env, "async", "60s");
    let proxy = env.start(cfg.clone());
    let bot = e2e_agent();
    let body = r#"{"title":"across restarts"}"#;
    let (id, code) = assert_pending(&post_issue(&proxy, &bot, body).await);
    proxy.stop();

    let proxy = env.start(cfg);
    let list = consent_list(&proxy, false).await;
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["binding_code"], code.as_str());
    assert_eq!(list[0]["status"], "pending");
    // Still the same consent for the identical retry.
    assert_eq!(assert_pending(&post_issue(&proxy, &bot, body).await).0, id);
    ok(
        &agentgate(&proxy, &["consent", "approve", &id]).await,
        "consent approve",
    );
    let got = post_issue(&proxy, &bot, body).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 1);
    let r = decision(&proxy, &got.request_id()).await;
    assert_eq!(r["consent"]["id"], id.as_str(), "{r:#}");
    assert_eq!(r["consent"]["scope"], "once", "{r:#}");
}

// ---------------------------------------------------------------------------------------
// 9: webhooks

/// Webhooks (hold mode, three HTTPS receivers trusted through the test PKI): the one
/// subscribed to every event receives consent.requested and consent.approved (then
/// consent.requested and consent.denied, then agent.panic) as signed Standard Webhooks
/// POSTs with `{type, timestamp, data}` describing the consent; the one filtered to
/// `["consent.denied"]` receives only that; a receiver that hangs 20 s on every delivery
/// does not slow the held request, which completes promptly on approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_filtered_and_never_block_requests() {
    let env = TestEnv::new().await;
    let all = WebhookReceiver::start(&env.pki).await;
    let denied_only = WebhookReceiver::start(&env.pki).await;
    let hanging = WebhookReceiver::start(&env.pki).await;
    hanging.set_delay(20_000);
    let proxy = start_with_webhooks(
        &env,
        &config(&env, "hold", "30s"),
        &[
            hook(&all.url, None),
            hook(&denied_only.url, Some(r#"["consent.denied"]"#)),
            hook(&hanging.url, Some("[]")),
        ],
        &[(HOOK_SECRET_ENV, HOOK_SECRET)],
    );
    let bot = register(&proxy, "bot", "alice").await;

    // Requested, then approved.
    let held = post_json(&proxy, &bot, ISSUES_URL, r#"{"title":"hooked"}"#, 30);
    let pending = wait_pending(&proxy, 1).await;
    let id = pending[0]["id"].as_str().unwrap().to_owned();
    let code = pending[0]["binding_code"].as_str().unwrap().to_owned();
    let got = all.wait_for(1, Duration::from_secs(10)).await;
    let v = assert_webhook(&got[0], "consent.requested");
    assert_consent_data(&v["data"], &id, &bot, "alice", "pending");
    assert_eq!(v["data"]["binding_code"], code.as_str(), "{v:#}");
    assert_eq!(v["data"]["answered_by"], Value::Null, "{v:#}");
    assert_eq!(v["data"]["expires"], pending[0]["expires"], "{v:#}");
    // The hanging receiver got it too (and is now holding the delivery).
    let h = hanging.wait_for(1, Duration::from_secs(10)).await;
    assert_webhook(&h[0], "consent.requested");

    ok(
        &agentgate(&proxy, &["consent", "approve", &id]).await,
        "consent approve",
    );
    let approved_at = Instant::now();
    let done = finish(held, 10).await;
    done.answered();
    assert_eq!(done.status, 200);
    let took = done.done.duration_since(approved_at);
    assert!(
        took < Duration::from_secs(3),
        "the held request took {took:?} after approval (a hanging webhook blocked it?)"
    );
    let got = all.wait_for(2, Duration::from_secs(10)).await;
    let v = assert_webhook(&got[1], "consent.approved");
    assert_consent_data(&v["data"], &id, &bot, "alice", "approved");
    assert_eq!(v["data"]["answered_by"], APPROVER, "{v:#}");
    assert_eq!(v["data"]["how"], "cli", "{v:#}");
    assert_ne!(
        got[0].header("webhook-id"),
        got[1].header("webhook-id"),
        "two events share a webhook-id"
    );

    // Requested, then denied: the filtered receiver gets only the denial.
    let held = post_json(&proxy, &bot, ISSUES_URL, r#"{"title":"hooked, no"}"#, 30);
    let id2 = wait_pending(&proxy, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Its consent.requested first, so the order below is the order of events.
    all.wait_for(3, Duration::from_secs(10)).await;
    ok(
        &agentgate(&proxy, &["consent", "deny", &id2, "--reason", "nope"]).await,
        "consent deny",
    );
    let refused = finish(held, 10).await;
    assert_eq!(refused.status, 403);
    let d = denied_only.wait_for(1, Duration::from_secs(10)).await;
    let v = assert_webhook(&d[0], "consent.denied");
    assert_consent_data(&v["data"], &id2, &bot, "alice", "denied");
    assert_eq!(v["data"]["reason"], "nope", "{v:#}");
    let got = all.wait_for(4, Duration::from_secs(10)).await;
    let kinds: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "consent.requested",
            "consent.approved",
            "consent.requested",
            "consent.denied"
        ]
    );
    let v = assert_webhook(&got[3], "consent.denied");
    assert_eq!(v["data"]["consent_id"], id2.as_str());

    // The agent gives up on a held request: consent.cancelled.
    let held = post_json(&proxy, &bot, ISSUES_URL, r#"{"title":"hooked, gone"}"#, 1);
    let id3 = wait_pending(&proxy, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(finish(held, 10).await.exit, Some(28));
    let got = all.wait_for(6, Duration::from_secs(10)).await;
    let v = assert_webhook(&got[4], "consent.requested");
    assert_eq!(v["data"]["consent_id"], id3.as_str());
    let v = assert_webhook(&got[5], "consent.cancelled");
    assert_consent_data(&v["data"], &id3, &bot, "alice", "cancelled");
    assert_eq!(v["data"]["how"], "disconnect", "{v:#}");

    // PANIC: agent.panic.
    let out = agentgate(
        &proxy,
        &["panic", "--agent", "bot", "--reason", "drill", "-o", "json"],
    )
    .await;
    let report: Value = serde_json::from_str(&ok(&out, "panic")).expect("report JSON");
    let got = all.wait_for(7, Duration::from_secs(10)).await;
    let v = assert_webhook(&got[6], "agent.panic");
    assert_eq!(
        v["data"],
        json!({
            "panic_id": report["panic_id"],
            "scope": "agent",
            "agents": [bot.spiffe_id],
            "tenant": null,
            "reason": "drill",
        }),
        "{v:#}"
    );
    assert!(
        v["data"]["panic_id"]
            .as_str()
            .is_some_and(|p| p.starts_with("panic_")),
        "{v:#}"
    );
    // Nothing but the denial reached the filtered receiver.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = denied_only.received();
    assert_eq!(d.len(), 1, "the filtered receiver got more: {d:#?}");
}

/// A receiver that answers 503 gets the event again after the backoff (0.5 s), with the
/// same `webhook-id` and body and a valid signature each time; once it answers 200 the
/// delivery stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_webhook_deliveries_are_retried_with_the_same_id() {
    let env = TestEnv::new().await;
    let receiver = WebhookReceiver::start(&env.pki).await;
    receiver.set_status(503);
    // Each answer is decided 300 ms after arrival, so switching to 200 after the second
    // arrival reliably answers the second attempt 200 and the first 503.
    receiver.set_delay(300);
    let proxy = start_with_webhooks(
        &env,
        &config(&env, "async", "60s"),
        &[hook(&receiver.url, None)],
        &[(HOOK_SECRET_ENV, HOOK_SECRET)],
    );
    let bot = e2e_agent();
    let (id, _) = assert_pending(&post_issue(&proxy, &bot, r#"{"title":"retry"}"#).await);

    receiver.wait_for(1, Duration::from_secs(10)).await;
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    receiver.set_status(200);
    for r in &got[..2] {
        let v = assert_webhook(r, "consent.requested");
        assert_eq!(v["data"]["consent_id"], id.as_str(), "{v:#}");
    }
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(got[0].body, got[1].body);
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(750),
        "the retry came {gap:?} after the first attempt (300 ms answer + 500 ms backoff)"
    );
    // Delivered on the second attempt: no third (it would come 1 s after the second answer).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let all = receiver.received();
    assert_eq!(all.len(), 2, "delivery went on after a 200: {all:#?}");
}

// ---------------------------------------------------------------------------------------
// 10: the admin API

/// The consent API: no (or a wrong) admin token → 401; the listing and one consent have
/// the contract's fields; an unknown id → 404 (and the CLI exits 1 "no consent ID"); a
/// window that is no duration or longer than `consent.max_window` → 400, leaving the
/// consent pending; `{"for":"10m"}` approves for a window (how "api").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_admin_api_authenticates_and_validates() {
    let env = TestEnv::new().await;
    let proxy = env.start(config(&env, "async", "60s"));
    let bot = e2e_agent();
    let (id, code) = assert_pending(&post_issue(&proxy, &bot, r#"{"title":"api"}"#).await);
    let token = proxy.admin_token();

    for bearer in [None, Some("not-the-token")] {
        let resp = admin(&proxy, "GET", "/api/v1/consents", bearer, None).await;
        assert_eq!(resp.status, 401, "{}", resp.text());
        assert_eq!(resp.json()["error"], "unauthorized");
        let resp = admin(
            &proxy,
            "POST",
            &format!("/api/v1/consents/{id}/approve"),
            bearer,
            Some("{}"),
        )
        .await;
        assert_eq!(resp.status, 401, "{}", resp.text());
    }

    let resp = admin(&proxy, "GET", "/api/v1/consents", Some(&token), None).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let list = resp.json()["consents"]
        .as_array()
        .expect("consents")
        .clone();
    assert_eq!(list.len(), 1, "{list:#?}");
    let c = &list[0];
    assert_listed(c, &bot, None);
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["binding_code"], code.as_str());
    assert_eq!(c["status"], "pending");
    assert_eq!(c["tenant"], Value::Null);
    assert_eq!(
        c["expires"].as_i64(),
        Some(c["created"].as_i64().unwrap() + 60),
        "{c:#}"
    );
    let resp = admin(
        &proxy,
        "GET",
        &format!("/api/v1/consents/{id}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["id"], id.as_str());

    // Unknown ids.
    let unknown = "cns_00000000deadbeef";
    let resp = admin(
        &proxy,
        "GET",
        &format!("/api/v1/consents/{unknown}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(resp.status, 404, "{}", resp.text());
    assert_eq!(resp.json()["error"], "not_found");
    for verb in ["approve", "deny"] {
        let resp = admin(
            &proxy,
            "POST",
            &format!("/api/v1/consents/{unknown}/{verb}"),
            Some(&token),
            Some("{}"),
        )
        .await;
        assert_eq!(resp.status, 404, "{verb}: {}", resp.text());
    }
    let err = failed(
        &agentgate(&proxy, &["consent", "approve", unknown]).await,
        "approve an unknown consent",
    );
    assert!(err.contains(&format!("no consent {unknown}")), "{err}");

    // Bad windows.
    for body in [r#"{"for":"bogus"}"#, r#"{"for":"48h"}"#, r#"{"for":"0s"}"#] {
        let resp = admin(
            &proxy,
            "POST",
            &format!("/api/v1/consents/{id}/approve"),
            Some(&token),
            Some(body),
        )
        .await;
        assert_eq!(resp.status, 400, "{body}: {}", resp.text());
    }
    let pending = consent_list(&proxy, false).await;
    assert_eq!(pending.len(), 1, "a refused answer changed the consent");
    assert_eq!(pending[0]["status"], "pending");

    let resp = admin(
        &proxy,
        "POST",
        &format!("/api/v1/consents/{id}/approve"),
        Some(&token),
        Some(r#"{"for":"10m"}"#),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let c = resp.json();
    assert_eq!(c["id"], id.as_str(), "{c:#}");
    assert_eq!(c["status"], "approved", "{c:#}");
    assert_eq!(c["how"], "api", "{c:#}");
    let until = c["window_until"].as_i64().expect("window_until");
    assert!(
        (agent::now() + 590..=agent::now() + 601).contains(&until),
        "{c:#}"
    );
    let resp = admin(
        &proxy,
        "GET",
        "/api/v1/consents?status=all",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(resp.json()["consents"][0]["status"], "approved");
    let resp = admin(&proxy, "GET", "/api/v1/consents", Some(&token), None).await;
    assert_eq!(resp.json()["consents"], json!([]));
    let approved = admin_events(&proxy, "consent_approved", &id, 1).await;
    assert_eq!(approved[0]["detail"]["how"], "api");
    assert_eq!(approved[0]["detail"]["window_until"], until);
}

/// A one-time approval is spent only when its request leaves: approved, the identical retry
/// is refused by the token gate (a vault connection whose OAuth provider is not configured
/// answers 503), and the approval is given back; once the connection is removed, the next
/// identical retry passes on the same consent, without asking anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_once_approval_survives_a_refusal_after_consent() {
    let env = TestEnv::new().await;
    let proxy = env.start(config(&env, "async", "60s"));
    let bot = e2e_agent();
    let body = r#"{"title":"kept"}"#;
    let secret = env.dir.path().join("refresh-token");
    std::fs::write(&secret, "rt-for-an-unconfigured-provider").expect("write secret");
    ok(
        &agentgate(
            &proxy,
            &[
                "vault",
                "set",
                "github",
                "--kind",
                "oauth",
                "--provider",
                "nowhere",
                "--secret-file",
                &secret.display().to_string(),
            ],
        )
        .await,
        "vault set",
    );

    let (id, _) = assert_pending(&post_issue(&proxy, &bot, body).await);
    ok(
        &agentgate(&proxy, &["consent", "approve", &id]).await,
        "consent approve",
    );
    let refused = post_issue(&proxy, &bot, body).await;
    assert_eq!(
        refused.status,
        503,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let v = refused.json();
    assert_eq!(v["gate"], "token", "{v}");
    assert_eq!(v["error"], "token_unavailable", "{v}");
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 0);
    let listed = consent_list(&proxy, true).await;
    let c = listed
        .iter()
        .find(|c| c["id"] == id.as_str())
        .expect("consent listed");
    assert_eq!(
        c["used"], false,
        "the approval was spent on a refused request: {c:#}"
    );

    ok(
        &agentgate(&proxy, &["vault", "rm", "github"]).await,
        "vault rm",
    );
    let passed = post_issue(&proxy, &bot, body).await;
    assert_eq!(
        passed.status,
        200,
        "{}",
        String::from_utf8_lossy(&passed.body)
    );
    let r = decision(&proxy, &passed.request_id()).await;
    assert_eq!(r["consent"]["id"], id.as_str(), "{r:#}");
    assert_eq!(upstream_posts(&env, ISSUES_PATH), 1);
    assert_eq!(
        consent_list(&proxy, true).await.len(),
        1,
        "a new consent was asked for"
    );
}
