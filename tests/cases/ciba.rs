//! Gate 4 with an OpenID CIBA backend, against a real CIBA provider (`oidc-provider`,
//! tests/support/oidc_provider.mjs): escalated writes under the shipped default policy are
//! held while the agent's owner is asked on their "device"; the end-user's answer (through
//! oidc-provider's own `backchannelResult`) reaches the proxy by polling (honouring
//! `interval` and `slow_down`) or by ping, and the held request is forwarded or refused.
//! Also: the login hint (iss_sub / plain, owner mapping), the binding message and the
//! authorization details the provider receives, both client authentication methods,
//! unknown users, an unreachable provider, timeouts, and an agent that hangs up.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::cli::{Registered, consent_list};
use crate::support::held::{self, Curl, Spawned, finish};
use crate::support::oidc::{CIBA_CLIENT_ID, CIBA_POST_CLIENT_ID, CLIENT_SECRET, OidcProvider};
use crate::support::proxy::{ConfigBuilder, Proxy, toml_str};
use crate::support::raw::{self, RawResponse};
use crate::support::{TestEnv, assert_denied, audit_decisions, read_records};

/// The env var carrying the CIBA client secret to the proxy.
const SECRET_ENV: &str = "CIBA_SECRET";
/// The write every test makes: the default policy escalates it.
const ISSUES_URL: &str = "https://api.github.com/repos/acme/web/issues";
const ISSUES_PATH: &str = "/repos/acme/web/issues";
const ISSUE_BODY: &str = r#"{"title":"Flaky test","body":"seen twice today"}"#;
/// What Auth0 (and the fixture) accept in a binding_message, besides ASCII alphanumerics.
const BINDING_EXTRA: &str = "+-_.,:#";

// ---------------------------------------------------------------------------------------
// Helpers

/// The shipped default policy (writes escalate) with a generous evaluation bound, consent
/// through CIBA in hold mode, and `[consent.ciba]` pointing at `op` (poll delivery,
/// `agentgate-ciba` with client_secret_basic, the secret from [`SECRET_ENV`]).
fn ciba_config(env: &TestEnv, op: &OidcProvider, timeout: &str) -> ConfigBuilder {
    env.with_default_policy()
        .set("policy", "eval_timeout", &toml_str("5s"))
        .set("consent", "backend", &toml_str("ciba"))
        .set("consent", "mode", &toml_str("hold"))
        .set("consent", "timeout", &toml_str(timeout))
        .set("consent.ciba", "issuer", &toml_str(op.issuer()))
        .set("consent.ciba", "client_id", &toml_str(CIBA_CLIENT_ID))
        .set("consent.ciba", "client_secret_env", &toml_str(SECRET_ENV))
        .set(
            "consent.ciba",
            "client_auth",
            &toml_str("client_secret_basic"),
        )
        .set("consent.ciba", "delivery", &toml_str("poll"))
}

/// `agents register NAME --owner OWNER`.
async fn register(proxy: &Proxy, name: &str, owner: &str) -> Registered {
    crate::support::cli::register(proxy, name, owner, &[]).await
}

fn start(env: &TestEnv, cfg: ConfigBuilder) -> Proxy {
    env.start_with_env(cfg, &[(SECRET_ENV, CLIENT_SECRET)])
}

/// The one consent `consent list --all` shows with `id`.
async fn consent_by_id(proxy: &Proxy, id: &str) -> Value {
    consent_list(proxy, true)
        .await
        .into_iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("consent {id} not in `consent list --all`"))
}

/// Starts curl as `agent` (its token in the proxy URL, as `agents register` prints it):
/// `POST` of [`ISSUE_BODY`] to [`ISSUES_URL`], giving up after `max_time` seconds.
fn post_issue(proxy: &Proxy, agent: &Registered, max_time: u64) -> Spawned {
    held::post_json(
        agent.proxy_url(proxy),
        proxy.ca_path.clone(),
        ISSUES_URL,
        ISSUE_BODY,
        max_time,
        &[],
    )
}

/// Asserts a consent-gate refusal with `error` whose reason mentions every one of `has`.
fn consent_refusal(res: &Curl, error: &str, has: &[&str]) -> Value {
    assert_eq!(res.exit, Some(0), "curl: {res:?}");
    let body = assert_denied(&res.raw(), 403, "consent");
    assert_eq!(body["error"], error, "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    for h in has {
        assert!(reason.contains(h), "reason should mention {h:?}: {body}");
    }
    body
}

/// The one pending CIBA request the provider received.
async fn pending_request(op: &OidcProvider) -> Value {
    let r = op.wait_ciba_request(|r| r["status"] == "pending").await;
    let all = op.ciba_requests().await;
    assert_eq!(all.len(), 1, "one CIBA request per consent: {all:#?}");
    r
}

/// The provider's current view of CIBA request `id`.
async fn ciba_request(op: &OidcProvider, id: &Value) -> Value {
    op.ciba_requests()
        .await
        .into_iter()
        .find(|r| r["auth_req_id"] == *id)
        .unwrap_or_else(|| panic!("no CIBA request {id}"))
}

/// Asserts the provider is no longer polled for `id`: the poll count stays put for 2.5 s
/// (more than two intervals). Returns the final record.
async fn polling_stopped(op: &OidcProvider, id: &Value) -> Value {
    let before = ciba_request(op, id).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = ciba_request(op, id).await;
    assert_eq!(
        after["polls"], before["polls"],
        "the proxy kept polling a closed consent: {after:#}"
    );
    after
}

/// The (last) decision record of the POST, waiting for it to land.
async fn post_decision(proxy: &Proxy) -> Value {
    let matches = |r: &&Value| r["method"] == "POST" && r["path"] == ISSUES_PATH;
    let records = audit_decisions(proxy, |rs| rs.iter().any(|r| matches(&r))).await;
    records.iter().rfind(matches).cloned().unwrap_or_else(|| {
        panic!(
            "no decision record for POST {ISSUES_PATH}; records:\n{}",
            serde_json::to_string_pretty(&records).unwrap()
        )
    })
}

/// The admin audit record `event` of consent `id`, waiting (5 s) for it to land.
async fn consent_event(proxy: &Proxy, event: &str, id: &str) -> Value {
    let db = proxy.home.join("audit.db");
    for _ in 0..50 {
        if let Some(r) = read_records(&db, "admin")
            .into_iter()
            .find(|r| r["event"] == event && r["detail"]["consent_id"] == id)
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no {event} audit record for consent {id}; admin records:\n{:#?}",
        read_records(&db, "admin")
    );
}

/// How many times the upstream saw the escalated POST.
fn upstream_posts(env: &TestEnv) -> usize {
    env.upstream
        .requests()
        .iter()
        .filter(|l| l.starts_with(&format!("POST {ISSUES_PATH}")))
        .count()
}

/// Whether `s` is a binding_message the provider accepts.
fn allowed_binding_message(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || BINDING_EXTRA.contains(c))
}

/// The answers of a CIBA request, as strings.
fn answers(r: &Value) -> Vec<String> {
    r["answers"]
        .as_array()
        .unwrap_or_else(|| panic!("no answers: {r}"))
        .iter()
        .map(|a| a.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Gaps (ms) between consecutive polls of a CIBA request.
fn poll_gaps(r: &Value) -> Vec<i64> {
    let at: Vec<i64> = r["poll_at_ms"]
        .as_array()
        .unwrap_or_else(|| panic!("no poll_at_ms: {r}"))
        .iter()
        .map(|v| v.as_i64().expect("poll_at_ms entry"))
        .collect();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

/// `POST /api/v1/ciba/notify` on the admin port with `authorization` (raw header value).
async fn notify(proxy: &Proxy, authorization: Option<&str>, body: &str) -> RawResponse {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST /api/v1/ciba/notify HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n{auth}\r\n{body}",
        addr = proxy.admin_addr,
        len = body.len(),
    );
    let mut s = raw::tcp(proxy.admin_addr).await;
    raw::exchange(&mut s, req.as_bytes())
        .await
        .expect("admin port closed without answering the notification")
}

// ---------------------------------------------------------------------------------------
// Poll delivery

/// The whole poll flow: the held write becomes one CIBA request for the agent's owner (an
/// iss_sub login hint, a binding message starting with the consent's code in the
/// characters Auth0 accepts, the requested expiry capped at the consent timeout, the
/// AuthZEN tuple as `agentgate_action` authorization details); the owner approves on the
/// provider, the proxy learns it by polling at the provider's interval (never a
/// slow_down), and the request reaches the upstream exactly once. The decision record
/// and the audit name the CIBA user and how it was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciba_poll_approve_forwards_the_held_request_once() {
    let op = OidcProvider::start_ciba("poll", None).await;
    let env = TestEnv::new().await;
    let cfg = ciba_config(&env, &op, "20s")
        .set(
            "consent.ciba",
            "authorization_details_type",
            &toml_str("agentgate_action"),
        )
        .set("consent.ciba", "requested_expiry", &toml_str("60s"));
    let proxy = start(&env, cfg);
    let bot = register(&proxy, "bot", "alice").await;

    let held = post_issue(&proxy, &bot, 60);
    let req = pending_request(&op).await;

    // What the owner's device was asked.
    assert_eq!(req["client_id"], CIBA_CLIENT_ID, "{req:#}");
    assert_eq!(req["client_auth"], "client_secret_basic", "{req:#}");
    assert_eq!(req["account"], "alice", "{req:#}");
    assert_eq!(req["scope"], "openid", "{req:#}");
    assert_eq!(req["audience"], Value::Null, "{req:#}");
    assert_eq!(req["client_notification_token"], Value::Null, "{req:#}");
    let hint: Value = serde_json::from_str(req["login_hint"].as_str().expect("login_hint"))
        .unwrap_or_else(|e| panic!("login_hint is not JSON ({e}): {req:#}"));
    assert_eq!(
        hint,
        json!({"format": "iss_sub", "iss": format!("{}/", op.issuer()), "sub": "alice"}),
        "{req:#}"
    );
    let expiry: u64 = req["requested_expiry"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("requested_expiry not an integer string: {req:#}"));
    assert!(
        (15..=20).contains(&expiry),
        "requested_expiry {expiry} should be capped at consent.timeout (20 s): {req:#}"
    );

    // The same consent, listed by the local CLI.
    let pending = consent_list(&proxy, false).await;
    assert_eq!(pending.len(), 1, "{pending:#?}");
    let consent = &pending[0];
    let consent_id = consent["id"].as_str().expect("consent id").to_owned();
    let code = consent["binding_code"]
        .as_str()
        .expect("binding_code")
        .to_owned();
    assert!(consent_id.starts_with("cns_"), "{consent:#}");
    assert!(
        (4..=6).contains(&code.len())
            && code
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
        "binding code {code:?}"
    );
    assert_eq!(consent["status"], "pending", "{consent:#}");
    assert_eq!(consent["backend"], "ciba", "{consent:#}");
    assert_eq!(consent["agent"], bot.spiffe_id.as_str(), "{consent:#}");
    assert_eq!(consent["owner"], "alice", "{consent:#}");
    assert_eq!(consent["action"], "github.issues.create", "{consent:#}");
    assert_eq!(consent["resource"]["id"], "acme/web", "{consent:#}");

    // The binding message: the code first, then the (sanitized) policy text, in Auth0's
    // characters — the policy's text has spaces and '/', which the proxy must not send.
    let message = req["binding_message"]
        .as_str()
        .expect("binding_message")
        .to_owned();
    assert!(
        message.starts_with(&format!("{code}:")),
        "binding_message {message:?} should start with the code {code}"
    );
    assert!(
        allowed_binding_message(&message),
        "binding_message {message:?} has characters CIBA providers refuse"
    );
    assert!(
        message.contains("github.issues.create"),
        "binding_message {message:?} should name the action"
    );
    let after_action = &message[message.find("github.issues.create").unwrap()..];
    assert!(
        after_action.contains("acme") && after_action.contains("web"),
        "binding_message {message:?} should name the repository"
    );

    // The AuthZEN tuple as Rich Authorization Request details.
    let details = req["authorization_details"]
        .as_array()
        .unwrap_or_else(|| panic!("authorization_details is not a list: {req:#}"));
    assert_eq!(details.len(), 1, "{req:#}");
    let d = &details[0];
    assert_eq!(d["type"], "agentgate_action", "{d:#}");
    assert_eq!(d["action"]["name"], "github.issues.create", "{d:#}");
    assert_eq!(d["resource"]["id"], "acme/web", "{d:#}");
    assert_eq!(d["subject"]["id"], bot.spiffe_id.as_str(), "{d:#}");
    assert_eq!(d["context"]["binding_code"], code.as_str(), "{d:#}");
    assert_eq!(d["context"]["host"], "api.github.com", "{d:#}");
    assert_eq!(d["context"]["path"], ISSUES_PATH, "{d:#}");

    // Held, not forwarded, until the owner answers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !held.is_finished(),
        "the request was answered before consent"
    );
    assert_eq!(upstream_posts(&env), 0, "{:?}", env.upstream.requests());

    let reply = op.ciba_approve(&code).await;
    assert_eq!(reply["auth_req_id"], req["auth_req_id"], "{reply}");
    let res = finish(held, 10).await;
    assert_eq!(res.exit, Some(0), "curl: {res:?}");
    assert_eq!(res.status, 200, "{res:?}");
    let echo = res.json();
    assert_eq!(echo["method"], "POST", "{echo}");
    assert_eq!(echo["path"], ISSUES_PATH, "{echo}");
    assert_eq!(upstream_posts(&env), 1, "{:?}", env.upstream.requests());

    // Decision record and audit.
    let r = post_decision(&proxy).await;
    assert_eq!(r["policy_effect"], "escalate", "{r:#}");
    assert_eq!(r["effect"], "allow", "{r:#}");
    assert_eq!(r["consent"]["id"], consent_id.as_str(), "{r:#}");
    assert_eq!(r["consent"]["status"], "approved", "{r:#}");
    assert_eq!(r["consent"]["by"], "alice", "{r:#}");
    assert_eq!(r["consent"]["how"], "ciba", "{r:#}");
    let requested = consent_event(&proxy, "consent_requested", &consent_id).await;
    assert_eq!(requested["detail"]["backend"], "ciba", "{requested:#}");
    let approved = consent_event(&proxy, "consent_approved", &consent_id).await;
    assert_eq!(approved["detail"]["how"], "ciba", "{approved:#}");
    assert_eq!(approved["detail"]["by"], "alice", "{approved:#}");
    assert_eq!(approved["detail"]["status"], "approved", "{approved:#}");
    assert_eq!(
        approved["detail"]["auth_req_id"], req["auth_req_id"],
        "{approved:#}"
    );
    let c = consent_by_id(&proxy, &consent_id).await;
    assert_eq!(c["status"], "approved", "{c:#}");
    assert_eq!(c["how"], "ciba", "{c:#}");
    assert_eq!(c["answered_by"], "alice", "{c:#}");

    // The proxy polled at the provider's interval: pending answers, then the tokens.
    let done = ciba_request(&op, &req["auth_req_id"]).await;
    assert_eq!(done["status"], "approved", "{done:#}");
    assert_eq!(done["slow_downs"], 0, "the proxy polled too fast: {done:#}");
    let a = answers(&done);
    assert!(
        a.len() >= 2,
        "expected pending polls before the answer: {done:#}"
    );
    assert_eq!(a.last().map(String::as_str), Some("tokens"), "{done:#}");
    assert!(
        a[..a.len() - 1]
            .iter()
            .all(|x| x == "authorization_pending"),
        "{done:#}"
    );
    assert!(
        poll_gaps(&done).iter().all(|g| *g >= 800),
        "polls closer than the 1 s interval: {done:#}"
    );
    polling_stopped(&op, &req["auth_req_id"]).await;
}

/// The owner denies on the provider: the held request is refused 403 `consent_denied`
/// naming who (the CIBA user) and why (`access_denied`); it never reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciba_poll_deny_refuses_the_held_request() {
    let op = OidcProvider::start_ciba("poll", None).await;
    let env = TestEnv::new().await;
    let proxy = start(&env, ciba_config(&env, &op, "20s"));
    let bot = register(&proxy, "bot", "alice").await;

    let held = post_issue(&proxy, &bot, 60);
    let req = pending_request(&op).await;
    let code = req["binding_message"]
        .as_str()
        .and_then(|m| m.split(':').next())
        .expect("binding code")
        .to_owned();
    let reply = op.ciba_deny(&code, Some("not today")).await;
    assert_eq!(reply["status"], "denied", "{reply}");

    let res = finish(held, 10).await;
    let body = consent_refusal(&res, "consent_denied", &["access_denied", "alice"]);
    assert_eq!(upstream_posts(&env), 0, "{:?}", env.upstream.requests());

    let consents = consent_list(&proxy, true).await;
    assert_eq!(consents.len(), 1, "{consents:#?}");
    let c = &consents[0];
    assert_eq!(c["binding_code"], code.as_str(), "{c:#}");
    assert_eq!(c["status"], "denied", "{c:#}");
    assert_eq!(c["how"], "ciba", "{c:#}");
    assert_eq!(c["answered_by"], "alice", "{c:#}");
    let id = c["id"].as_str().expect("id");
    assert!(
        body["reason"].as_str().unwrap().contains(id),
        "the refusal should name the consent: {body}"
    );
    let denied = consent_event(&proxy, "consent_denied", id).await;
    assert_eq!(denied["detail"]["how"], "ciba", "{denied:#}");
    assert_eq!(denied["detail"]["by"], "alice", "{denied:#}");
    assert!(
        denied["detail"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("access_denied")),
        "{denied:#}"
    );
    let r = post_decision(&proxy).await;
    assert_eq!(r["effect"], "deny", "{r:#}");
    assert_eq!(r["gate"], "consent", "{r:#}");
    assert_eq!(r["error"], "consent_denied", "{r:#}");
    assert_eq!(r["consent"]["id"], id, "{r:#}");

    let done = ciba_request(&op, &req["auth_req_id"]).await;
    assert_eq!(done["status"], "denied", "{done:#}");
    assert_eq!(
        answers(&done).last().map(String::as_str),
        Some("access_denied"),
        "{done:#}"
    );
    polling_stopped(&op, &req["auth_req_id"]).await;
}

/// `login_hint_format = "plain"` sends the user id as is, and `users` maps the agent's
/// owner to the provider's subject (`alice` → `auth0|alice`), who is then the approver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciba_plain_login_hint_with_the_users_mapping() {
    let op = OidcProvider::start_ciba("poll", None).await;
    let env = TestEnv::new().await;
    let cfg = ciba_config(&env, &op, "20s")
        .set("consent.ciba", "login_hint_format", &toml_str("plain"))
        .set("consent.ciba", "users", r#"{ alice = "auth0|alice" }"#);
    let proxy = start(&env, cfg);
    let bot = register(&proxy, "bot", "alice").await;

    let held = post_issue(&proxy, &bot, 60);
    let req = pending_request(&op).await;
    assert_eq!(req["login_hint"], "auth0|alice", "{req:#}");
    assert_eq!(req["account"], "auth0|alice", "{req:#}");
    // Without authorization_details_type, no authorization_details are sent.
    assert_eq!(req["authorization_details"], Value::Null, "{req:#}");

    op.ciba_approve(req["auth_req_id"].as_str().unwrap()).await;
    let res = finish(held, 10).await;
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(upstream_posts(&env), 1, "{:?}", env.upstream.requests());
    let r = post_decision(&proxy).await;
    assert_eq!(r["consent"]["by"], "auth0|alice", "{r:#}");
    let consents = consent_list(&proxy, true).await;
    assert_eq!(consents[0]["answered_by"], "auth0|alice", "{consents:#?}");
    assert_eq!(consents[0]["owner"], "alice", "{consents:#?}");
}

/// An owner the provider does not know: the backchannel request is refused
/// `unknown_user_id`, and the held request is denied at once (no waiting for the timeout)
/// with a reason naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciba_unknown_user_is_denied_at_once() {
    let op = OidcProvider::start_ciba("poll", None).await;
    let env = TestEnv::new().await;
    let proxy = start(&env, ciba_config(&env, &op, "20s"));
    let bot = register(&proxy, "bot", "mallory").await;

    let started = Instant::now();
    let res = finish(post_issue(&proxy, &bot, 60), 10).await;
    let elapsed = started.elapsed();
    consent_refusal(&res, "consent_denied", &["unknown_user_id", "mallory"]);
    assert!(
        elapsed < Duration::from_secs(5),
        "an unknown user should be refused at once, took {elapsed:?}"
    );
    assert_eq!(upstream_posts(&env), 0, "{:?}", env.upstream.requests());
    assert!(
        op.ciba_requests().await.is_empty(),
        "the provider should have refused the request"
    );
    let consents = consent_list(&proxy, true).await;
    assert_eq!(consents.len(), 1, "{consents:#?}");
    assert_eq!(consents[0]["status"], "denied", "{consents:#?}");
    assert_eq!(consents[0]["how"], "ciba", "{consents:#?}");
    let id = consents[0]["id"].as_str().unwrap();
    let denied = consent_event(&proxy, "consent_denied", id).await;
    assert!(
        denied["detail"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unknown_user_id")),
        "{denied:#}"
    );
}

/// `slow_down` answers make the proxy back off (each raises its interval by 5 s, as CIBA
/// §11 says); after the two injected ones it polls at the raised interval, never earning
/// a slow_down of its own, and the approval still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciba_slow_down_makes_the_proxy_back_off() {
    let op = OidcProvider::start_ciba("poll", None).await;
    let env = TestEnv::new().await;
    let proxy = start(&env, ciba_config(&env, &op, "60s"));
    let bot = register(&proxy, "bot", "alice").await;
    // The next two CIBA polls (this test's first two) are slow_down.
    op.fault_slow_down(2).await;

    let held = post_issue(&proxy, &bot, 90);
    let req = pending_request(&op).await;
    let id = req["auth_req_id"].clone();
    // Wait for both slow_downs to be served, then approve: the next poll gets the tokens.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = ciba_request(&op, &id).await;
        if r["slow_downs"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no second slow_down: {r:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    op.ciba_approve(id.as_str().unwrap()).await;
    let res = finish(held, 20).await;
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(upstream_posts(&env), 1, "{:?}", env.upstream.requests());

    let done = ciba_request(&op, &id).await;
    assert_eq!(
        answers(&done),
        ["slow_down", "slow_down", "tokens"],
        "{done:#}"
    );
    assert_eq!(
        done["slow_downs"], 2,
        "only the injected slow_downs: {done:#}"
    );
    let gaps = poll_gaps(&done);
    assert!(
        gaps[0] >= 5800 && gaps[1] >= 10800,
        "each slow_down should add 5 s to the 1 s interval (gaps {gaps:?}): {done:#}"
    );
    assert!(
        gaps[1] > gaps[0],
        "the interval should grow (gaps {gaps:?})"
    );
}

/// Ping delivery: the proxy sends a fresh `client_notification_token` and waits for the
/// provider's notification at `/api/v1/ciba/notify` on the admin listener (no polling);
/// a forged notification (wrong or missing bearer) is 401 and changes nothing; on
/// approval the provider pings (204), the proxy fetches the tokens once, and the held
/// request goes through. A replayed ping afterwards is 401 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciba_ping_delivery_wakes_the_held_request() {
    let op = OidcProvider::start_ciba("poll", None).await;
    let env = TestEnv::new().await;
    let cfg = ciba_config(&env, &op, "20s").set("consent.ciba", "delivery", &toml_str("ping"));
    let proxy = start(&env, cfg);
    let notify_url = format!("http://{}/api/v1/ciba/notify", proxy.admin_addr);
    op.ciba_set_client("ping", Some(&notify_url)).await;
    let bot = register(&proxy, "bot", "alice").await;

    let held = post_issue(&proxy, &bot, 60);
    let req = pending_request(&op).await;
    let id = req["auth_req_id"].as_str().expect("auth_req_id").to_owned();
    let token = req["client_notification_token"]
        .as_str()
        .unwrap_or_else(|| panic!("ping needs a client_notification_token: {req:#}"))
        .to_owned();
    assert!(token.len() >= 32, "a weak notification token: {token:?}");

    // Forged notifications.
    let ping_body = json!({ "auth_req_id": id }).to_string();
    let resp = notify(&proxy, Some("Bearer not-the-token"), &ping_body).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_eq!(resp.json()["error"], "unauthorized", "{}", resp.text());
    let resp = notify(&proxy, None, &ping_body).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    let resp = notify(
        &proxy,
        Some(&format!("Bearer {token}")),
        &json!({ "auth_req_id": "someone-else" }).to_string(),
    )
    .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let now = ciba_request(&op, &json!(id)).await;
    assert_eq!(now["polls"], 0, "ping mode must not poll: {now:#}");
    assert_eq!(now["status"], "pending", "{now:#}");
    assert!(!held.is_finished(), "a forged ping released the request");
    let pending = consent_list(&proxy, false).await;
    assert_eq!(pending.len(), 1, "{pending:#?}");
    assert_eq!(pending[0]["status"], "pending", "{pending:#?}");

    let reply = op.ciba_approve(&id).await;
    assert!(
        reply.get("ping_error").is_none(),
        "the ping failed: {reply}"
    );
    let res = finish(held, 10).await;
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(upstream_posts(&env), 1, "{:?}", env.upstream.requests());

    let pings = op.ciba_pings().await;
    assert_eq!(pings.len(), 1, "{pings:#?}");
    assert_eq!(pings[0]["url"], notify_url.as_str(), "{pings:#?}");
    assert_eq!(
        pings[0]["authorization"],
        format!("Bearer {token}"),
        "{pings:#?}"
    );
    assert_eq!(pings[0]["status"], 204, "{pings:#?}");
    let done = ciba_request(&op, &json!(id)).await;
    assert_eq!(
        answers(&done),
        ["tokens"],
        "one token call after the ping: {done:#}"
    );
    let r = post_decision(&proxy).await;
    assert_eq!(r["consent"]["by"], "alice", "{r:#}");

    // The ticket is gone: the same (genuine) notification again is refused.
    let resp = notify(&proxy, Some(&format!("Bearer {token}")), &ping_body).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
}

/// A `client_secret_post` client (the fixture refuses it any other way) works end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciba_client_secret_post_client() {
    let op = OidcProvider::start_ciba("poll", None).await;
    let env = TestEnv::new().await;
    let cfg = ciba_config(&env, &op, "20s")
        .set("consent.ciba", "client_id", &toml_str(CIBA_POST_CLIENT_ID))
        .set(
            "consent.ciba",
            "client_auth",
            &toml_str("client_secret_post"),
        );
    let proxy = start(&env, cfg);
    let bot = register(&proxy, "bot", "bob").await;

    let held = post_issue(&proxy, &bot, 60);
    let req = pending_request(&op).await;
    assert_eq!(req["client_id"], CIBA_POST_CLIENT_ID, "{req:#}");
    assert_eq!(req["client_auth"], "client_secret_post", "{req:#}");
    assert_eq!(req["account"], "bob", "{req:#}");
    // Let at least one poll through before answering: polls authenticate the same way.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ciba_request(&op, &req["auth_req_id"]).await["polls"] == 0 {
        assert!(Instant::now() < deadline, "no poll within 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    op.ciba_approve(req["auth_req_id"].as_str().unwrap()).await;
    let res = finish(held, 10).await;
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(upstream_posts(&env), 1, "{:?}", env.upstream.requests());
    let done = ciba_request(&op, &req["auth_req_id"]).await;
    let a = answers(&done);
    assert_eq!(a.last().map(String::as_str), Some("tokens"), "{done:#}");
    assert!(
        a[..a.len() - 1]
            .iter()
            .all(|x| x == "authorization_pending"),
        "{done:#}"
    );
}

// ---------------------------------------------------------------------------------------
// Faults and ends

/// The provider goes down while the proxy polls: after a bounded number of failed polls
/// (not the whole consent timeout) the held request is refused `consent_denied`, saying
/// the provider could not be reached; polling stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciba_provider_down_while_polling_denies_after_bounded_retries() {
    let op = OidcProvider::start_ciba("poll", None).await;
    let env = TestEnv::new().await;
    let proxy = start(&env, ciba_config(&env, &op, "20s"));
    let bot = register(&proxy, "bot", "alice").await;

    let held = post_issue(&proxy, &bot, 60);
    let req = pending_request(&op).await;
    op.fault(Some("down"), 0).await;
    let started = Instant::now();
    let res = finish(held, 15).await;
    let elapsed = started.elapsed();
    consent_refusal(&res, "consent_denied", &["could not be reached"]);
    assert!(
        elapsed < Duration::from_secs(8),
        "the proxy should give up after a few failed polls, took {elapsed:?}"
    );
    assert_eq!(upstream_posts(&env), 0, "{:?}", env.upstream.requests());

    let done = polling_stopped(&op, &req["auth_req_id"]).await;
    let a = answers(&done);
    let downs = a.iter().filter(|x| *x == "fault:down").count();
    assert_eq!(downs, 3, "bounded retries: {done:#}");
    assert!(
        a.iter()
            .all(|x| x == "fault:down" || x == "authorization_pending"),
        "{done:#}"
    );
    let consents = consent_list(&proxy, true).await;
    assert_eq!(consents[0]["status"], "denied", "{consents:#?}");
    assert_eq!(consents[0]["how"], "ciba", "{consents:#?}");
}

/// Nobody answers: the held request is refused 403 `consent_timeout` after
/// `consent.timeout` (3 s), the consent is expired, and the CIBA request stops being
/// polled (and is not asked again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciba_timeout_refuses_and_stops_polling() {
    let op = OidcProvider::start_ciba("poll", None).await;
    let env = TestEnv::new().await;
    let proxy = start(&env, ciba_config(&env, &op, "3s"));
    let bot = register(&proxy, "bot", "alice").await;

    let started = Instant::now();
    let held = post_issue(&proxy, &bot, 60);
    let req = pending_request(&op).await;
    let expiry: u64 = req["requested_expiry"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("requested_expiry: {req:#}"));
    assert!(
        (1..=3).contains(&expiry),
        "requested_expiry capped at 3 s: {req:#}"
    );
    let res = finish(held, 15).await;
    let elapsed = started.elapsed();
    consent_refusal(&res, "consent_timeout", &["consent timed out after 3s"]);
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(8),
        "timed out after {elapsed:?}"
    );
    assert_eq!(upstream_posts(&env), 0, "{:?}", env.upstream.requests());

    let done = polling_stopped(&op, &req["auth_req_id"]).await;
    // Every poll was told to wait; the last may instead land just past the provider's own
    // expiry (the same 3 s) on a loaded machine, and hear `expired_token`.
    let said = answers(&done);
    let (last, before) = said.split_last().expect("polled at least once");
    assert!(
        before.iter().all(|x| x == "authorization_pending")
            && (last == "authorization_pending" || last == "expired_token"),
        "{done:#}"
    );
    assert_eq!(
        op.ciba_requests().await.len(),
        1,
        "an expired consent is not asked again"
    );
    let consents = consent_list(&proxy, true).await;
    assert_eq!(consents[0]["status"], "expired", "{consents:#?}");
    let id = consents[0]["id"].as_str().unwrap();
    let expired = consent_event(&proxy, "consent_expired", id).await;
    assert_eq!(expired["detail"]["how"], "timeout", "{expired:#}");
    // A late answer on the provider changes nothing for the proxy.
    let late = op
        .ciba_answer(true, req["auth_req_id"].as_str().unwrap(), None)
        .await;
    assert_eq!(late.status, 409, "{}", late.text());
    assert_eq!(upstream_posts(&env), 0);
}

/// The agent hangs up while held (curl --max-time 2): the consent is cancelled and the
/// proxy stops polling the provider for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciba_agent_disconnect_cancels_and_stops_polling() {
    let op = OidcProvider::start_ciba("poll", None).await;
    let env = TestEnv::new().await;
    let proxy = start(&env, ciba_config(&env, &op, "20s"));
    let bot = register(&proxy, "bot", "alice").await;

    let held = post_issue(&proxy, &bot, 2);
    let req = pending_request(&op).await;
    let res = finish(held, 10).await;
    assert_eq!(res.exit, Some(28), "curl should time out: {res:?}");

    let deadline = Instant::now() + Duration::from_secs(5);
    let consent = loop {
        let consents = consent_list(&proxy, true).await;
        assert_eq!(consents.len(), 1, "{consents:#?}");
        if consents[0]["status"] != "pending" {
            break consents[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "consent still pending 5 s after the agent left: {consents:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(consent["status"], "cancelled", "{consent:#}");
    assert_eq!(consent["how"], "disconnect", "{consent:#}");
    let id = consent["id"].as_str().unwrap();
    consent_event(&proxy, "consent_cancelled", id).await;

    let done = polling_stopped(&op, &req["auth_req_id"]).await;
    assert_eq!(done["status"], "pending", "{done:#}");
    // Approving on the provider now releases nothing.
    op.ciba_approve(req["auth_req_id"].as_str().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(upstream_posts(&env), 0, "{:?}", env.upstream.requests());
    assert_eq!(consent_by_id(&proxy, id).await["status"], "cancelled");
}
