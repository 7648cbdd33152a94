//! Multi-tenant core: `[tenants.<t>]` in the config. Two tenants, `acme` (its own policy
//! directory, which allows everything) and `globex` (the shipped policy seeded into
//! `tenants/globex/policies`, async consents of its own, its own webhook): agents
//! registered with the real CLI (`agents register NAME --tenant T`; agent names are
//! instance-unique, since the registry is keyed by name, so each tenant's agent has its own
//! name) are decided by their own tenant's policy, ask their own tenant's consents (stored in
//! `tenants/<t>/consents.db`), and their events reach their tenant's webhook plus the
//! instance's, never another tenant's. An agent of an unconfigured tenant is refused even in
//! observe mode; a tenant's vault connection is injected only for that tenant's agents.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::support::cli::{failed, ok, write_private};
use crate::support::held;
use crate::support::proxy::{self, Proxy, toml_str};
use crate::support::raw::{self, RawResponse};
use crate::support::webhook::{Received, WebhookReceiver};
use crate::support::{TestEnv, agent, assert_denied, audit_decisions, read_records};

const ISSUES_URL: &str = "https://api.github.com/repos/acme/web/issues";
const HOOK_SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const HOOK_SECRET_ENV: &str = "HOOK_SECRET";

/// A registered agent: name, SPIFFE ID, token.
struct Agent {
    name: String,
    spiffe_id: String,
    token: String,
}

impl Agent {
    fn proxy_url(&self, proxy: &Proxy) -> String {
        format!("http://{}:{}@{}", self.name, self.token, proxy.proxy_addr)
    }
}

/// A policy directory that allows everything, with `reason`.
fn allow_dir(env: &TestEnv, name: &str, reason: &str) -> PathBuf {
    let dir = env.dir.path().join(name);
    std::fs::create_dir_all(&dir).expect("policy dir");
    std::fs::write(
        dir.join("allow.rego"),
        format!("package agentgate\n\ndecision := {{\"effect\": \"allow\", \"reasons\": [{reason:?}]}}\n"),
    )
    .expect("write policy");
    dir
}

/// `[{ url = …, secret_env = … }]`: one webhook entry as an inline TOML array.
fn hooks(url: &str) -> String {
    format!(
        "[{{ url = {}, secret_env = {} }}]",
        toml_str(url),
        toml_str(HOOK_SECRET_ENV)
    )
}

/// Writes `text` as the config and starts the proxy on it (with the webhook secret).
fn start(env: &TestEnv, text: &str) -> Proxy {
    let path = config_path(env);
    std::fs::write(&path, text).expect("write config");
    proxy::start(&env.home(), &path, &[(HOOK_SECRET_ENV, HOOK_SECRET)])
}

fn config_path(env: &TestEnv) -> PathBuf {
    env.dir.path().join("agentgate.toml")
}

/// `agentgate ARGS` on the state dir, with the test's config file.
async fn agentgate(env: &TestEnv, args: &[&str]) -> Output {
    let config = config_path(env).display().to_string();
    crate::support::cli::agentgate(&env.home(), args, &[("AGENTGATE_CONFIG", &config)]).await
}

/// `agents register NAME --tenant TENANT -o json`.
async fn register(env: &TestEnv, name: &str, tenant: &str) -> Agent {
    let out = agentgate(
        env,
        &[
            "agents", "register", name, "--tenant", tenant, "--owner", "olive", "-o", "json",
        ],
    )
    .await;
    let doc: Value = serde_json::from_str(&ok(&out, "agents register --tenant")).expect("JSON");
    let spiffe_id = doc["spiffe_id"].as_str().expect("spiffe_id").to_owned();
    assert_eq!(
        spiffe_id,
        format!("spiffe://agentgate.local/tenant/{tenant}/agent/{name}"),
        "{doc}"
    );
    Agent {
        name: name.to_owned(),
        spiffe_id,
        token: doc["token"].as_str().expect("token").to_owned(),
    }
}

/// `GET https://api.github.com/echo` through the proxy with this `Proxy-Authorization`.
async fn get_echo(proxy: &Proxy, bearer: &str) -> RawResponse {
    let (s, head) = raw::connect_as(proxy.proxy_addr, "api.github.com:443", Some(bearer)).await;
    assert_eq!(head.status, 200, "CONNECT refused: {}", head.text());
    let tls = raw::tls_over(s, "api.github.com", &proxy.ca_path, &[b"http/1.1"]).await;
    let mut h1 = raw::h1_client(tls).await;
    let req = http::Request::get("/echo")
        .header("host", "api.github.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    raw::send_h1(&mut h1, req).await
}

/// POST an issue through the proxy as `who` (real curl); the answer.
async fn post_issue(proxy: &Proxy, who: &Agent) -> held::Curl {
    let c = held::finish(
        held::post_json(
            who.proxy_url(proxy),
            proxy.ca_path.clone(),
            ISSUES_URL,
            r#"{"title":"tenant"}"#,
            20,
            &[],
        ),
        30,
    )
    .await;
    c.answered();
    c
}

/// The decision record of `request_id`.
async fn decision(proxy: &Proxy, request_id: &str) -> Value {
    audit_decisions(proxy, |rs| rs.iter().any(|r| r["request_id"] == request_id))
        .await
        .into_iter()
        .find(|r| r["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no decision record for {request_id}"))
}

/// Waits (10 s) for a webhook of `kind` whose data satisfies `want`.
async fn wait_hook(hook: &WebhookReceiver, kind: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(body) = hook
            .events(kind)
            .iter()
            .map(Received::json)
            .find(|b| want(&b["data"]))
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} webhook matching within 10 s at {}: {:#?}",
            hook.url,
            hook.received()
                .iter()
                .map(Received::text)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(id, tenant, status)` of every consent in a consents.db.
fn consents_in(db: &Path) -> Vec<(String, Option<String>, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let mut stmt = conn
        .prepare("SELECT id, tenant, status FROM consents")
        .expect("query consents");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("read consents")
        .map(|r| r.expect("row"))
        .collect()
}

/// Each tenant decides with its own policy, asks its own consents (own settings, own
/// store) and sends its events to its own webhook and the instance's, never another's;
/// PANIC of a tenant's agent reaches both its tenant's webhook and the instance's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_decide_ask_and_notify_each_on_their_own() {
    let env = TestEnv::new().await;
    let instance_hook = WebhookReceiver::start(&env.pki).await;
    let acme_hook = WebhookReceiver::start(&env.pki).await;
    let globex_hook = WebhookReceiver::start(&env.pki).await;
    let acme_policy = allow_dir(&env, "acme-policy", "acme allows every request");
    let cfg = env
        .with_default_policy()
        .set("policy", "eval_timeout", &toml_str("5s"))
        // The instance's consents hold; globex's own section answers at once.
        .set("consent", "mode", &toml_str("hold"))
        .set(
            "tenants.acme",
            "policy_dir",
            &toml_str(&acme_policy.display().to_string()),
        )
        .set("tenants.acme", "webhooks", &hooks(&acme_hook.url))
        .set("tenants.globex", "webhooks", &hooks(&globex_hook.url))
        .set("tenants.globex.consent", "mode", &toml_str("async"));
    let text = format!(
        "{}[[webhooks]]\nurl = {}\nsecret_env = {}\n",
        cfg.render(),
        toml_str(&instance_hook.url),
        toml_str(HOOK_SECRET_ENV)
    );
    let proxy = start(&env, &text);
    let home = env.home();

    // Per-tenant state: admin tokens (0600, distinct) and the seeded policy directory.
    let instance_token = proxy.admin_token();
    let mut tokens = Vec::new();
    for t in ["acme", "globex"] {
        let path = home.join("tenants").join(t).join("admin.token");
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        let token = std::fs::read_to_string(&path).expect("token");
        let token = token.trim().to_owned();
        assert!(token.starts_with("agt_") && token != instance_token);
        tokens.push(token);
    }
    assert_ne!(tokens[0], tokens[1]);
    let seeded = std::fs::read_dir(home.join("tenants/globex/policies"))
        .expect("globex's policy directory is seeded")
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().ends_with(".rego"));
    assert!(seeded, "globex's policy directory holds the shipped policy");
    assert!(
        !home.join("tenants/acme/policies").exists(),
        "acme has its own policy_dir"
    );

    let acme = register(&env, "acme-bot", "acme").await;
    let globex = register(&env, "globex-bot", "globex").await;

    // acme's policy allows the write; globex's (the shipped one) escalates it, and globex's
    // own consent section answers at once (async), where the instance's would hold.
    let a = post_issue(&proxy, &acme).await;
    assert!(
        a.status < 300,
        "acme's policy allows it: {} {}",
        a.status,
        String::from_utf8_lossy(&a.body)
    );
    let g = post_issue(&proxy, &globex).await;
    let body = assert_denied(&g.raw(), 403, "consent");
    assert_eq!(body["error"], "consent_pending", "{body}");
    let consent_id = body["consent_id"].as_str().expect("consent_id").to_owned();

    let da = decision(&proxy, &a.request_id()).await;
    let dg = decision(&proxy, &g.request_id()).await;
    assert_eq!(
        (&da["tenant"], &da["effect"]),
        (&json!("acme"), &json!("allow")),
        "{da}"
    );
    assert!(
        da["reasons"]
            .to_string()
            .contains("acme allows every request"),
        "{da}"
    );
    assert_eq!(
        (&dg["tenant"], &dg["policy_effect"]),
        (&json!("globex"), &json!("escalate")),
        "{dg}"
    );
    assert_ne!(da["policy_hash"], dg["policy_hash"], "{da}\n{dg}");
    let loaded = read_records(&home.join("audit.db"), "admin")
        .into_iter()
        .find(|r| r["event"] == "config_loaded")
        .expect("config_loaded record");
    assert_eq!(
        loaded["detail"]["tenants"]["acme"]["policy_hash"], da["policy_hash"],
        "{loaded}"
    );
    assert_eq!(
        loaded["detail"]["tenants"]["globex"]["policy_hash"], dg["policy_hash"],
        "{loaded}"
    );

    // The consent lives in globex's own store, not the instance's.
    let in_globex = consents_in(&home.join("tenants/globex/consents.db"));
    assert_eq!(
        in_globex,
        vec![(
            consent_id.clone(),
            Some("globex".to_owned()),
            "pending".to_owned()
        )]
    );
    assert!(consents_in(&home.join("consents.db")).is_empty());
    assert!(consents_in(&home.join("tenants/acme/consents.db")).is_empty());

    // Webhooks: globex's and the instance's get the consent; the instance's names the tenant.
    let is_it = |d: &Value| d["consent_id"] == consent_id.as_str();
    let got = wait_hook(&globex_hook, "consent.requested", is_it).await;
    assert_eq!(got["data"]["tenant"], "globex", "{got}");
    let got = wait_hook(&instance_hook, "consent.requested", is_it).await;
    assert_eq!(got["data"]["tenant"], "globex", "{got}");
    for r in globex_hook.received() {
        r.verify(HOOK_SECRET).expect("signed");
    }

    // PANIC of acme's agent: acme's webhook and the instance's hear it.
    let panic_acme = ok(
        &agentgate(&env, &["panic", "--agent", "acme-bot", "--reason", "t1"]).await,
        "panic acme-bot",
    );
    let has = |id: &str| {
        let id = id.to_owned();
        move |d: &Value| {
            d["agents"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == id.as_str()))
        }
    };
    let got = wait_hook(&acme_hook, "agent.panic", has(&acme.spiffe_id)).await;
    assert_eq!(
        got["data"]["tenant"], "acme",
        "{got}; panic said {panic_acme}"
    );
    wait_hook(&instance_hook, "agent.panic", has(&acme.spiffe_id)).await;
    // PANIC of globex's agent denies its pending consent (in globex's store).
    ok(
        &agentgate(&env, &["panic", "--agent", "globex-bot", "--reason", "t2"]).await,
        "panic globex-bot",
    );
    wait_hook(&globex_hook, "agent.panic", has(&globex.spiffe_id)).await;
    wait_hook(&globex_hook, "consent.denied", is_it).await;
    wait_hook(&instance_hook, "agent.panic", has(&globex.spiffe_id)).await;
    let in_globex = consents_in(&home.join("tenants/globex/consents.db"));
    assert_eq!(in_globex[0].2, "denied", "{in_globex:?}");

    // No tenant heard the other's events (each was sent before the last one waited on).
    let mentioning = |hook: &WebhookReceiver, what: &str| -> Vec<String> {
        hook.received()
            .iter()
            .map(Received::text)
            .filter(|t| t.contains(what))
            .collect()
    };
    for foreign in [globex.spiffe_id.as_str(), consent_id.as_str()] {
        let heard = mentioning(&acme_hook, foreign);
        assert!(
            heard.is_empty(),
            "acme's webhook heard globex's events: {heard:?}"
        );
    }
    let heard = mentioning(&globex_hook, &acme.spiffe_id);
    assert!(
        heard.is_empty(),
        "globex's webhook heard acme's events: {heard:?}"
    );
    assert_eq!(acme_hook.events("agent.panic").len(), 1);
    assert_eq!(globex_hook.events("agent.panic").len(), 1);
    assert_eq!(instance_hook.events("agent.panic").len(), 2);
}

/// An agent whose SPIFFE ID names a tenant that is not configured is refused at the policy
/// gate, even in observe mode; the CLI refuses to register agents or store vault
/// connections for such a tenant, and says which tenants exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfigured_tenant_is_refused() {
    let env = TestEnv::new().await;
    let acme_policy = allow_dir(&env, "acme-policy", "acme allows");
    let cfg = env
        .config()
        .set("policy", "mode", &toml_str("observe"))
        .set(
            "tenants.acme",
            "policy_dir",
            &toml_str(&acme_policy.display().to_string()),
        );
    let proxy = start(&env, &cfg.render());

    // A valid token of the trusted test trust domain, tenant "initech".
    let rogue = agent::signer()
        .sign(&json!({
            "sub": format!("spiffe://{}/tenant/initech/agent/rogue", agent::TRUST_DOMAIN),
            "aud": ["agentgate"],
            "exp": agent::now() + 3600,
            "iat": agent::now(),
            "jti": "jti-rogue",
        }))
        .expect("sign");
    let resp = get_echo(&proxy, &format!("Bearer {rogue}")).await;
    let body = assert_denied(&resp, 403, "policy");
    assert_eq!(
        body["reason"], "tenant initech is not configured in [tenants]",
        "{body}"
    );
    let id = resp
        .header("x-agentgate-request-id")
        .expect("request id")
        .to_owned();
    let d = decision(&proxy, &id).await;
    assert_eq!(
        (&d["tenant"], &d["effect"]),
        (&json!("initech"), &json!("deny")),
        "{d}"
    );
    assert!(
        !env.upstream.requests().iter().any(|l| l.contains("/echo")),
        "nothing reached the upstream"
    );

    // acme's agent passes (its policy allows), and so does the tenant-less test agent.
    let acme = register(&env, "acme-bot", "acme").await;
    assert_eq!(
        get_echo(&proxy, &format!("Bearer {}", acme.token))
            .await
            .status,
        200
    );
    assert_eq!(get_echo(&proxy, &agent::bearer()).await.status, 200);

    let err = failed(
        &agentgate(
            &env,
            &["agents", "register", "rogue", "--tenant", "initech"],
        )
        .await,
        "register for an unconfigured tenant",
    );
    assert!(
        err.contains("initech") && err.contains("acme") && err.contains("[tenants.initech]"),
        "{err}"
    );
    let secret = env.dir.path().join("tok");
    write_private(&secret, b"ghp_notused\n");
    let secret = secret.display().to_string();
    let err = failed(
        &agentgate(
            &env,
            &[
                "vault",
                "set",
                "github",
                "--kind",
                "static",
                "--tenant",
                "initech",
                "--secret-file",
                &secret,
            ],
        )
        .await,
        "vault set for an unconfigured tenant",
    );
    assert!(err.contains("initech") && err.contains("acme"), "{err}");
}

/// A vault connection of tenant acme is injected for acme's agent only: globex's agent and
/// the tenant-less agent reach the same origin without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_vault_connection_serves_only_its_agents() {
    let env = TestEnv::new().await;
    let allow = allow_dir(&env, "tenant-policy", "allowed");
    let dir = toml_str(&allow.display().to_string());
    let cfg = env.config().set("tenants.acme", "policy_dir", &dir).set(
        "tenants.globex",
        "policy_dir",
        &dir,
    );
    let proxy = start(&env, &cfg.render());
    let acme = register(&env, "acme-bot", "acme").await;
    let globex = register(&env, "globex-bot", "globex").await;

    let token = "ghp_acmeonly0123456789abcdef";
    let secret = env.dir.path().join("acme-token");
    write_private(&secret, format!("{token}\n").as_bytes());
    let secret = secret.display().to_string();
    let out = ok(
        &agentgate(
            &env,
            &[
                "vault",
                "set",
                "github",
                "--kind",
                "static",
                "--tenant",
                "acme",
                "--secret-file",
                &secret,
            ],
        )
        .await,
        "vault set --tenant acme",
    );
    assert!(out.starts_with("stored cred_"), "{out}");

    // The running proxy picks up the CLI's change within a second or so.
    let masked = format!("Bearer {}", "*".repeat(token.len()));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = get_echo(&proxy, &format!("Bearer {}", acme.token)).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        if resp.json()["headers"]["authorization"] == masked.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acme's connection was never injected: {}",
            resp.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen_before = env.upstream.seen().len();
    for bearer in [format!("Bearer {}", globex.token), agent::bearer()] {
        let resp = get_echo(&proxy, &bearer).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert!(
            resp.json()["headers"]["authorization"].is_null(),
            "{}",
            resp.text()
        );
        let d = decision(&proxy, resp.header("x-agentgate-request-id").expect("id")).await;
        assert!(d.get("credential").is_none(), "{d}");
    }
    let seen = env.upstream.seen();
    assert_eq!(seen.len(), seen_before + 2);
    assert!(
        seen[seen_before..]
            .iter()
            .all(|s| s.authorization.is_none()),
        "{seen:?}"
    );
}
