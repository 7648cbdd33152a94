//! Tenant isolation in the admin API: a tenant's token sees and acts on its own tenant
//! only — agents, consents, audit records, the event stream, vault connections, PANIC and
//! the dashboard link — and gets 403 on instance-wide routes; objects of another tenant
//! answer 404 as missing ones do. The instance admin token sees both.

use serde_json::Value;

use crate::support::TestEnv;
use crate::support::admin::{self, call, sse};
use crate::support::cli::{agentgate, ok};
use crate::support::proxy::{Proxy, toml_str};

const ISSUES: &str = "https://api.github.com/repos/acme/web/issues";

fn tenant_token(proxy: &Proxy, t: &str) -> String {
    std::fs::read_to_string(proxy.home.join("tenants").join(t).join("admin.token"))
        .unwrap_or_else(|e| panic!("tenants/{t}/admin.token: {e}"))
        .trim()
        .to_owned()
}

/// Registers `name` in `tenant` through the API with `token`; returns its proxy URL.
async fn register(proxy: &Proxy, token: &str, name: &str, tenant: Option<&str>) -> String {
    let body = match tenant {
        Some(t) => format!(r#"{{"name":"{name}","tenant":"{t}","owner":"o-{name}"}}"#),
        None => format!(r#"{{"name":"{name}","owner":"o-{name}"}}"#),
    };
    let v = admin::json(
        proxy.admin_addr,
        "POST",
        "/api/v1/agents",
        token,
        Some(&body),
        201,
    )
    .await;
    format!(
        "http://{name}:{}@{}",
        v["token"].as_str().unwrap(),
        proxy.proxy_addr
    )
}

/// curl through the proxy as the agent behind `url`; returns (status, body).
async fn as_agent(proxy: &Proxy, url: &str, args: &[&str]) -> (u16, Value) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", "-x", url, "--cacert"])
        .arg(&proxy.ca_path)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn names(list: &Value, key: &str, field: &str) -> Vec<String> {
    let mut v: Vec<String> = list[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {list}"))
        .iter()
        .map(|a| a[field].as_str().unwrap_or_default().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_tenant_token_sees_and_acts_on_its_tenant_only() {
    let env = TestEnv::new().await;
    let cfg = env
        .with_default_policy()
        .set("policy", "eval_timeout", &toml_str("5s"))
        .set("consent", "mode", &toml_str("async"))
        .set("tenants", "acme", "{}")
        .set("tenants", "globex", "{}");
    let proxy = env.start(cfg);
    let addr = proxy.admin_addr;
    let root = proxy.admin_token();
    let (acme, globex) = (tenant_token(&proxy, "acme"), tenant_token(&proxy, "globex"));
    assert_ne!(acme, globex);
    assert_ne!(acme, root);

    let me = admin::json(addr, "GET", "/api/v1/whoami", &acme, None, 200).await;
    assert_eq!(me["scope"], "tenant");
    assert_eq!(me["tenant"], "acme");
    assert_eq!(
        me["tenants"],
        serde_json::json!([]),
        "a tenant does not learn the others"
    );
    let me = admin::json(addr, "GET", "/api/v1/whoami", &root, None, 200).await;
    assert_eq!(me["tenants"], serde_json::json!(["acme", "globex"]));

    // Registration: a tenant token registers into its tenant (by default), never another.
    let acme_bot = register(&proxy, &acme, "acme-bot", None).await;
    let globex_bot = register(&proxy, &root, "globex-bot", Some("globex")).await;
    let resp = call(
        addr,
        "POST",
        "/api/v1/agents",
        Some(&acme),
        Some(r#"{"name":"sneaky","tenant":"globex"}"#),
    )
    .await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    let resp = call(
        addr,
        "POST",
        "/api/v1/agents",
        Some(&root),
        Some(r#"{"name":"x","tenant":"initech"}"#),
    )
    .await;
    assert_eq!(resp.status, 400, "unknown tenant: {}", resp.text());
    assert!(resp.text().contains("acme, globex"), "{}", resp.text());

    // Names are instance-wide: a tenant cannot take over another tenant's agent by
    // registering its name, nor mint references for it.
    let resp = call(
        addr,
        "POST",
        "/api/v1/agents",
        Some(&acme),
        Some(r#"{"name":"globex-bot"}"#),
    )
    .await;
    assert_eq!(resp.status, 409, "{}", resp.text());
    assert_eq!(resp.json()["error"], "name_taken");
    let resp = call(
        addr,
        "POST",
        "/api/v1/references",
        Some(&acme),
        Some(r#"{"agent":"globex-bot","service":"github"}"#),
    )
    .await;
    assert_eq!(resp.status, 404, "{}", resp.text());
    let missing = call(
        addr,
        "POST",
        "/api/v1/references",
        Some(&acme),
        Some(r#"{"agent":"nobody-at-all","service":"github"}"#),
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        resp.json()["error"],
        missing.json()["error"],
        "same answer as a missing agent"
    );

    // Traffic from both: a read each, and a write each (escalated: a pending consent).
    for url in [&globex_bot, &acme_bot] {
        let (status, _) = as_agent(&proxy, url, &[ISSUES]).await;
        assert_eq!(status, 200);
    }
    let mut consent_of = std::collections::HashMap::new();
    for (who, url) in [("globex", &globex_bot), ("acme", &acme_bot)] {
        let (status, body) = as_agent(
            &proxy,
            url,
            &[
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                r#"{"title":"t"}"#,
                ISSUES,
            ],
        )
        .await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"], "consent_pending", "{body}");
        consent_of.insert(who, body["consent_id"].as_str().unwrap().to_owned());
    }

    // Lists: each tenant its own; the instance both.
    let list = admin::json(addr, "GET", "/api/v1/agents", &acme, None, 200).await;
    assert_eq!(names(&list, "agents", "name"), ["acme-bot"]);
    let list = admin::json(addr, "GET", "/api/v1/agents", &root, None, 200).await;
    assert_eq!(names(&list, "agents", "name"), ["acme-bot", "globex-bot"]);
    let list = admin::json(addr, "GET", "/api/v1/consents", &acme, None, 200).await;
    assert_eq!(names(&list, "consents", "id"), [consent_of["acme"].clone()]);
    let list = admin::json(addr, "GET", "/api/v1/consents", &root, None, 200).await;
    assert_eq!(list["consents"].as_array().unwrap().len(), 2);

    // Another tenant's objects are 404, exactly like missing ones.
    let theirs = &consent_of["globex"];
    for (m, path) in [
        ("GET", format!("/api/v1/consents/{theirs}")),
        ("POST", format!("/api/v1/consents/{theirs}/approve")),
        ("POST", format!("/api/v1/consents/{theirs}/deny")),
        ("POST", "/api/v1/agents/globex-bot/revoke".to_owned()),
    ] {
        let resp = call(addr, m, &path, Some(&acme), None).await;
        assert_eq!(resp.status, 404, "{m} {path}: {}", resp.text());
        // The answer names nothing but what was asked (no owner, tenant, SPIFFE ID).
        for secret in ["o-globex-bot", "tenant/globex", "spiffe://"] {
            assert!(
                !resp.text().contains(secret),
                "{m} {path} leaks {secret}: {}",
                resp.text()
            );
        }
    }
    let missing = call(
        addr,
        "GET",
        "/api/v1/consents/cns_missing",
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(missing.status, 404);
    // …and its own it can answer.
    let own = &consent_of["acme"];
    let approved = admin::json(
        addr,
        "POST",
        &format!("/api/v1/consents/{own}/approve"),
        &acme,
        None,
        200,
    )
    .await;
    assert_eq!(approved["status"], "approved");

    // Audit: only the tenant's records, and no record of another by seq.
    let page = admin::json(addr, "GET", "/api/v1/audit?limit=1000", &acme, None, 200).await;
    let records = page["records"].as_array().unwrap();
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| r["record"]["tenant"] == "acme"),
        "{page}"
    );
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["record"]["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"outcome"),
        "its outcome records are its own: {kinds:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["record"]["event"] == "agent_registered"),
        "its own admin actions are in its view"
    );
    let all = admin::json(addr, "GET", "/api/v1/audit?limit=1000", &root, None, 200).await;
    let foreign = all["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["record"]["tenant"] == "globex")
        .expect("a globex record")["record"]["seq"]
        .clone();
    let resp = call(
        addr,
        "GET",
        &format!("/api/v1/audit/{foreign}"),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(resp.status, 404);
    for path in ["/api/v1/audit/verify", "/metrics"] {
        let resp = call(addr, "GET", path, Some(&acme), None).await;
        assert_eq!(resp.status, 403, "{path}: {}", resp.text());
    }
    let policy = admin::json(addr, "GET", "/api/v1/policy", &acme, None, 200).await;
    assert!(
        policy["dir"].as_str().unwrap().contains("tenants/acme"),
        "{policy}"
    );

    // The event stream: globex's traffic never reaches acme's stream.
    let ticket = admin::json(addr, "POST", "/api/v1/events/ticket", &acme, None, 200).await;
    let path = format!(
        "/api/v1/events?ticket={}&backlog=500",
        ticket["ticket"].as_str().unwrap()
    );
    let (status, stream, _) = sse(addr, &path, &[]).await;
    assert_eq!(status, 200);
    let mut stream = stream.unwrap();
    let (status, _) = as_agent(
        &proxy,
        &globex_bot,
        &["https://api.github.com/repos/globex/x/issues"],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = as_agent(
        &proxy,
        &acme_bot,
        &["https://api.github.com/repos/acme/last/issues"],
    )
    .await;
    assert_eq!(status, 200);
    let mut seen = Vec::new();
    loop {
        let ev = stream.next().await.expect("stream open");
        let v = ev.json();
        seen.push(v["record"]["tenant"].clone());
        if v["record"]["path"] == "/repos/acme/last/issues" {
            break;
        }
    }
    assert!(
        seen.iter().all(|t| t == "acme"),
        "acme's stream carried {seen:?}"
    );

    // The dashboard link for a tenant view signs in with the tenant's scope.
    let link = admin::json(
        addr,
        "POST",
        "/api/v1/dashboard/link",
        &root,
        Some(r#"{"tenant":"acme"}"#),
        200,
    )
    .await;
    let body = serde_json::json!({ "code": link["code"] }).to_string();
    let session = call(
        addr,
        "POST",
        "/api/v1/dashboard/exchange",
        None,
        Some(&body),
    )
    .await
    .json();
    assert_eq!(session["tenant"], "acme");
    let list = admin::json(
        addr,
        "GET",
        "/api/v1/agents",
        session["token"].as_str().unwrap(),
        None,
        200,
    )
    .await;
    assert_eq!(names(&list, "agents", "name"), ["acme-bot"]);
    let st = session["token"].as_str().unwrap();
    let resp = call(addr, "DELETE", "/api/v1/dashboard/session", Some(st), None).await;
    assert_eq!(resp.status, 204, "sign-out");
    let resp = call(addr, "GET", "/api/v1/whoami", Some(st), None).await;
    assert_eq!(resp.status, 401, "the session ended on the server");
    let resp = call(addr, "GET", "/api/v1/whoami", Some(&acme), None).await;
    assert_eq!(
        resp.status, 200,
        "signing out a session leaves the tenant token alone"
    );
    let resp = call(
        addr,
        "POST",
        "/api/v1/dashboard/link",
        Some(&acme),
        Some(r#"{"tenant":"globex"}"#),
    )
    .await;
    assert_eq!(resp.status, 403);
    let out = agentgate(
        &proxy.home,
        &["dashboard", "--tenant", "globex", "--no-open"],
        &[],
    )
    .await;
    assert!(ok(&out, "dashboard --tenant").contains("#code="));

    // PANIC: a tenant's "all" is its own agents; another tenant's agent is unknown to it.
    let resp = call(
        addr,
        "POST",
        "/api/v1/panic",
        Some(&acme),
        Some(r#"{"agent":"globex-bot"}"#),
    )
    .await;
    assert_eq!(resp.status, 404, "{}", resp.text());
    let report = admin::json(
        addr,
        "POST",
        "/api/v1/panic",
        &acme,
        Some(r#"{"all":true,"reason":"tenant test"}"#),
        200,
    )
    .await;
    let agents = report["agents"].to_string();
    assert!(
        agents.contains("acme-bot") && !agents.contains("globex-bot"),
        "{report}"
    );
    let (status, body) = as_agent(&proxy, &acme_bot, &[ISSUES]).await;
    assert_ne!(status, 200, "acme-bot is cut off: {body}");
    let (status, _) = as_agent(&proxy, &globex_bot, &[ISSUES]).await;
    assert_eq!(status, 200, "globex-bot keeps working");
    let list = admin::json(addr, "GET", "/api/v1/agents", &root, None, 200).await;
    let revoked: Vec<&str> = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["revoked"].is_i64())
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(revoked, ["acme-bot"]);
    let page = admin::json(addr, "GET", "/api/v1/audit?limit=1000", &acme, None, 200).await;
    assert!(
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["record"]["event"] == "panic"),
        "the tenant's PANIC is in its own audit view"
    );
}

#[tokio::test]
async fn a_tenant_token_file_shared_with_another_scope_is_refused() {
    let env = TestEnv::new().await;
    let shared = env.home().join("admin.token");
    let cfg = env.config().set(
        "tenants",
        "acme",
        &format!(
            "{{ admin_token_file = {} }}",
            toml_str(&shared.display().to_string())
        ),
    );
    let path = env.write_config(&cfg);
    match crate::support::proxy::launch(&env.home(), &path, &[]) {
        crate::support::proxy::Launch::Ready(_) => {
            panic!("started with a tenant sharing the instance admin token")
        }
        crate::support::proxy::Launch::Exited { status, stderr } => {
            assert!(!status.success());
            assert!(stderr.contains("same admin token"), "{stderr}");
        }
    }
}
