//! The admin API (axum, `/api/v1`): every documented route refuses a missing or wrong
//! token without leaking data; agents register, list (with last activity) and revoke;
//! the audit pages, per-record view and verification; the live event stream (tickets,
//! `Last-Event-ID` resume, backlog); the dashboard's sign-in link; bad bodies; and the
//! listener's refusal to leave loopback without TLS.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::admin::{self, call, sse};
use crate::support::certs::Ca;
use crate::support::cli::{agentgate, ok, write_private};
use crate::support::clients::curl;
use crate::support::proxy::{self, Launch, Proxy, toml_str};
use crate::support::{TestEnv, audit_decisions};

/// Routes that answer without a bearer token (they hold no data or check their own).
const PUBLIC: &[&str] = &[
    "/healthz",
    "/readyz",
    "/.well-known/spiffe-bundle",
    "/.well-known/authzen-configuration",
    "/api/v1/dashboard/exchange",
    "/api/v1/ciba/notify",
    "/api/v1/ciba/notify/{tenant}",
    "/api/v1/references",
    "/api/v1/events",
];

/// Every route the contract names (DESIGN.md §6 and the issue).
const EXPECTED: &[&str] = &[
    "/api/v1/agents",
    "/api/v1/agents/{name}/revoke",
    "/api/v1/consents",
    "/api/v1/consents/{id}",
    "/api/v1/consents/{id}/approve",
    "/api/v1/consents/{id}/deny",
    "/api/v1/audit",
    "/api/v1/audit/{seq}",
    "/api/v1/audit/verify",
    "/api/v1/events",
    "/api/v1/events/ticket",
    "/api/v1/panic",
    "/api/v1/policy",
    "/api/v1/policy/explain",
    "/api/v1/vault",
    "/api/v1/whoami",
    "/api/v1/dashboard/link",
    "/api/v1/dashboard/exchange",
    "/metrics",
    "/healthz",
    "/readyz",
    "/access/v1/evaluation",
    "/access/v1/evaluations",
];

fn token(proxy: &Proxy) -> String {
    proxy.admin_token()
}

#[tokio::test]
async fn every_documented_route_refuses_a_missing_or_wrong_token() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let addr = proxy.admin_addr;

    let doc = call(addr, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(
        doc.status,
        200,
        "the OpenAPI document is public: {}",
        doc.text()
    );
    let doc = doc.json();
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.")
    );
    let paths = doc["paths"].as_object().expect("paths");
    for p in EXPECTED {
        assert!(paths.contains_key(*p), "{p} is missing from openapi.json");
    }
    assert!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer",
        "bearer scheme documented"
    );

    let mut checked = 0;
    for (path, item) in paths {
        if PUBLIC.contains(&path.as_str()) {
            continue;
        }
        let concrete = path
            .replace("{id}", "consent_x")
            .replace("{seq}", "1")
            .replace("{name}", "nobody");
        for method in item.as_object().unwrap().keys() {
            let m = method.to_uppercase();
            let body = (m == "POST").then_some("{}");
            for bad in [None, Some("wrong-token"), Some("")] {
                let resp = call(addr, &m, &concrete, bad, body).await;
                assert_eq!(resp.status, 401, "{m} {path} with {bad:?}: {}", resp.text());
                assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
                let v = resp.json();
                assert_eq!(v["error"], "unauthorized", "{m} {path}");
                assert_eq!(
                    v.as_object().unwrap().len(),
                    2,
                    "{m} {path}: a refusal carries only error and reason: {v}"
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "only {checked} protected routes were documented"
    );

    // The event stream refuses without a token or ticket, and with a wrong ticket.
    let (status, _, _) = sse(addr, "/api/v1/events", &[]).await;
    assert_eq!(status, 401);
    let (status, _, _) = sse(addr, "/api/v1/events?ticket=agt_forged", &[]).await;
    assert_eq!(status, 401);

    // Unknown routes are 404 JSON, never the dashboard.
    let resp = call(addr, "GET", "/api/v1/nope", Some(&token(&proxy)), None).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json()["error"], "not_found");
}

#[tokio::test]
async fn agents_register_list_and_revoke_through_the_api() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let (addr, admin) = (proxy.admin_addr, token(&proxy));

    let reg = admin::json(
        addr,
        "POST",
        "/api/v1/agents",
        &admin,
        Some(r#"{"name":"api-bot","owner":"alice","ttl":"1h"}"#),
        201,
    )
    .await;
    let agent = &reg["agent"];
    assert_eq!(agent["name"], "api-bot");
    assert_eq!(agent["owner"], "alice");
    assert!(
        agent["spiffe_id"]
            .as_str()
            .unwrap()
            .ends_with("/agent/api-bot")
    );
    let svid = reg["token"].as_str().expect("token").to_owned();
    assert!(reg["expires"].as_i64().unwrap() > 0);

    // The new identity works through the proxy at once, and shows up as last activity.
    let url = format!("http://api-bot:{svid}@{}", proxy.proxy_addr);
    let out = curl(&proxy, &["-x", &url, "https://api.github.com/echo?q=api"]).await;
    assert_eq!(out.status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = admin::json(addr, "GET", "/api/v1/agents", &admin, None, 200).await;
        let bot = list["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "api-bot")
            .cloned()
            .expect("api-bot listed");
        assert_eq!(bot["active_tokens"], 1);
        assert!(bot["revoked"].is_null());
        if bot["last_seen"].as_i64().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "last_seen never set: {bot}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bad bodies: 400 with the reason, nothing registered.
    for (body, needle) in [
        ("{not json", "expected"),
        (r#"{"name":"x","colour":"red"}"#, "unknown field"),
        (r#"{"owner":"x"}"#, "missing field `name`"),
        (r#"{"name":"bad name!"}"#, "agent name"),
        (r#"{"name":"x","ttl":"soon"}"#, "ttl"),
    ] {
        let resp = call(addr, "POST", "/api/v1/agents", Some(&admin), Some(body)).await;
        assert_eq!(resp.status, 400, "{body}: {}", resp.text());
        let reason = resp.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            reason.contains(needle),
            "{body}: reason {reason:?} lacks {needle:?}"
        );
    }
    let big = format!(r#"{{"name":"{}"}}"#, "a".repeat(2 << 20));
    let resp = {
        let head = format!(
            "POST /api/v1/agents HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            big.len()
        );
        let mut s = crate::support::raw::tcp(addr).await;
        crate::support::raw::exchange_oversize(&mut s, (head + &big).as_bytes())
            .await
            .expect("an answer to the oversized body")
    };
    assert_eq!(resp.status, 400, "oversized body: {}", resp.text());
    assert_eq!(resp.json()["error"], "body_too_large");
    let raw = format!(
        "POST /api/v1/agents HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {admin}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let mut s = crate::support::raw::tcp(addr).await;
    let resp = crate::support::raw::exchange(&mut s, raw.as_bytes())
        .await
        .unwrap();
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("application/json"));

    // Revoke: refused through the proxy from now on; a second agent is untouched.
    let gone = admin::json(
        addr,
        "POST",
        "/api/v1/agents/api-bot/revoke",
        &admin,
        Some(r#"{"reason":"test"}"#),
        200,
    )
    .await;
    assert_eq!(gone["revoked"], "api-bot");
    assert_eq!(gone["tokens"], 1);
    let refused = tokio::process::Command::new("curl")
        .args(["-sS", "-x", &url, "--cacert"])
        .arg(&proxy.ca_path)
        .arg("https://api.github.com/echo?q=after")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("403"),
        "a revoked agent's CONNECT is refused: {stderr}"
    );
    let last = audit_decisions(&proxy, |d| {
        d.iter().any(|r| r["error"] == "identity_revoked")
    })
    .await;
    assert!(
        last.iter().any(|r| r["error"] == "identity_revoked"),
        "{last:?}"
    );
    let resp = call(
        addr,
        "POST",
        "/api/v1/agents/nobody/revoke",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(resp.status, 404);
    let events: Vec<String> = crate::support::read_records(&proxy.home.join("audit.db"), "admin")
        .iter()
        .map(|r| r["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        events.contains(&"agent_registered".to_owned()),
        "{events:?}"
    );
    assert!(events.contains(&"agent_revoked".to_owned()), "{events:?}");

    // The CLI goes through the same API when the instance runs.
    let out = agentgate(
        &proxy.home,
        &["agents", "register", "cli-bot", "-o", "json"],
        &[],
    )
    .await;
    let v: Value = serde_json::from_str(&ok(&out, "agents register")).unwrap();
    assert_eq!(v["name"], "cli-bot");
    let out = agentgate(&proxy.home, &["agents", "revoke", "cli-bot"], &[]).await;
    ok(&out, "agents revoke");
    let list = admin::json(addr, "GET", "/api/v1/agents", &admin, None, 200).await;
    let cli_bot = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "cli-bot")
        .cloned()
        .unwrap();
    assert!(cli_bot["revoked"].is_i64(), "{cli_bot}");
}

#[tokio::test]
async fn event_stream_shows_requests_live_and_resumes_from_last_event_id() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let (addr, admin) = (proxy.admin_addr, token(&proxy));

    // A ticket opens the stream once.
    let ticket = admin::json(addr, "POST", "/api/v1/events/ticket", &admin, None, 200).await;
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    let (status, stream, content_type) =
        sse(addr, &format!("/api/v1/events?ticket={ticket}"), &[]).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut stream = stream.unwrap();
    let (status, _, _) = sse(addr, &format!("/api/v1/events?ticket={ticket}"), &[]).await;
    assert_eq!(status, 401, "a ticket works once");

    let out = curl(&proxy, &["https://api.github.com/echo?q=live-event"]).await;
    assert_eq!(out.status, 200);
    let decision = stream
        .until(|r| r["kind"] == "decision" && r["path"] == "/echo")
        .await;
    let record = &decision["record"];
    assert_eq!(record["effect"], "allow");
    assert_eq!(record["host"], "api.github.com");
    assert!(record["action"]["name"].is_string(), "{record}");
    assert!(decision["hash"].as_str().unwrap().len() == 64);
    let seq = decision["seq"].as_u64().unwrap();
    let outcome = stream
        .until(|r| r["kind"] == "outcome" && r["request_id"] == record["request_id"])
        .await;
    assert!(outcome["record"]["duration_us"].is_u64());

    // Resume with Last-Event-ID (header auth): replay starts right after that seq.
    let bearer = format!("Bearer {admin}");
    let last = (seq - 1).to_string();
    let (status, resumed, _) = sse(
        addr,
        "/api/v1/events",
        &[("authorization", &bearer), ("last-event-id", &last)],
    )
    .await;
    assert_eq!(status, 200);
    let mut resumed = resumed.unwrap();
    let first = resumed.next().await.expect("replayed event");
    assert_eq!(first.id.as_deref(), Some(seq.to_string().as_str()));
    assert_eq!(first.json()["record"]["request_id"], record["request_id"]);

    // Backlog replays at most N of the newest, oldest first, then goes live.
    let (status, backlog, _) = sse(
        addr,
        "/api/v1/events?backlog=2",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 200);
    let mut backlog = backlog.unwrap();
    let a = backlog.next().await.unwrap().json()["seq"]
        .as_u64()
        .unwrap();
    let b = backlog.next().await.unwrap().json()["seq"]
        .as_u64()
        .unwrap();
    assert_eq!(b, a + 1);
    let out = curl(&proxy, &["https://api.github.com/echo?q=after-backlog"]).await;
    assert_eq!(out.status, 200);
    backlog
        .until(|r| r["kind"] == "decision" && r["request_id"] != record["request_id"])
        .await;

    // Bad resume ids are refused with a reason.
    for q in [
        "/api/v1/events?last_event_id=abc",
        "/api/v1/events?backlog=9999",
    ] {
        let (status, _, body) = sse(addr, q, &[("authorization", &bearer)]).await;
        assert_eq!(status, 400, "{q}: {body}");
    }
}

#[tokio::test]
async fn audit_pages_records_and_verification() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let (addr, admin) = (proxy.admin_addr, token(&proxy));
    for i in 0..3 {
        let out = curl(&proxy, &[&format!("https://api.github.com/echo?q={i}")]).await;
        assert_eq!(out.status, 200);
    }
    // Each curl is a CONNECT record and a GET record.
    assert_eq!(audit_decisions(&proxy, |d| d.len() >= 6).await.len(), 6);

    let page = admin::json(
        addr,
        "GET",
        "/api/v1/audit?after=0&limit=2",
        &admin,
        None,
        200,
    )
    .await;
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["record"]["seq"], 1);
    assert_eq!(page["next_after"], 2);
    let newest = admin::json(
        addr,
        "GET",
        "/api/v1/audit?before=1000000&limit=3",
        &admin,
        None,
        200,
    )
    .await;
    let newest = newest["records"].as_array().unwrap();
    assert_eq!(newest.len(), 3);
    let s0 = newest[0]["record"]["seq"].as_u64().unwrap();
    assert!(
        newest[1]["record"]["seq"].as_u64().unwrap() < s0,
        "newest first"
    );

    let one = admin::json(addr, "GET", "/api/v1/audit/2", &admin, None, 200).await;
    assert_eq!(one["record"]["seq"], 2);
    assert_eq!(
        one["prev_hash"], records[0]["hash"],
        "prev_hash is record 1's hash"
    );
    assert_eq!(one["hash"], records[1]["hash"]);
    let resp = call(addr, "GET", "/api/v1/audit/99999", Some(&admin), None).await;
    assert_eq!(resp.status, 404);
    let resp = call(addr, "GET", "/api/v1/audit?after=x", Some(&admin), None).await;
    assert_eq!(resp.status, 400);

    let verify = admin::json(addr, "GET", "/api/v1/audit/verify", &admin, None, 200).await;
    assert_eq!(verify["intact"], true, "{verify}");
    assert_eq!(verify["verified_to"], verify["records"], "{verify}");
    assert!(verify["verified_to"].as_u64().unwrap() >= 6, "{verify}");

    // Explain: the tuple and decision for a request that is not sent.
    let ex = admin::json(
        addr,
        "POST",
        "/api/v1/policy/explain",
        &admin,
        Some(r#"{"method":"GET","url":"https://api.github.com/repos/acme/web/issues"}"#),
        200,
    )
    .await;
    assert_eq!(ex["tuple"]["action"]["name"], "github.issues.list-for-repo");
    assert_eq!(ex["decision"]["effect"], "allow");
    let policy = admin::json(addr, "GET", "/api/v1/policy", &admin, None, 200).await;
    assert!(
        policy["hash"].is_string() && policy["files"].is_array(),
        "{policy}"
    );
    let vault = admin::json(addr, "GET", "/api/v1/vault", &admin, None, 200).await;
    assert!(vault["connections"].is_array());
}

#[tokio::test]
async fn dashboard_page_is_public_and_its_link_signs_in_once() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let (addr, admin) = (proxy.admin_addr, token(&proxy));

    let page = call(addr, "GET", "/", None, None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!page.text().contains(&admin), "the page holds no secret");
    for asset in ["/dashboard.js", "/dashboard.css"] {
        assert_eq!(
            call(addr, "GET", asset, None, None).await.status,
            200,
            "{asset}"
        );
    }

    // `agentgate dashboard --no-open` prints a one-time link.
    let out = agentgate(&proxy.home, &["dashboard", "--no-open"], &[]).await;
    let url = ok(&out, "agentgate dashboard").trim().to_owned();
    assert!(url.starts_with(&format!("http://{addr}/#code=")), "{url}");
    let code = url.split("#code=").nth(1).unwrap();
    let body = json!({ "code": code }).to_string();
    let session = call(
        addr,
        "POST",
        "/api/v1/dashboard/exchange",
        None,
        Some(&body),
    )
    .await;
    assert_eq!(session.status, 200, "{}", session.text());
    let session = session.json();
    assert_eq!(session["scope"], "instance");
    let st = session["token"].as_str().unwrap();
    let me = admin::json(addr, "GET", "/api/v1/whoami", st, None, 200).await;
    assert_eq!(me["scope"], "instance");
    assert!(me["instance"].is_string());
    let again = call(
        addr,
        "POST",
        "/api/v1/dashboard/exchange",
        None,
        Some(&body),
    )
    .await;
    assert_eq!(again.status, 401, "a link works once");
    let resp = call(
        addr,
        "POST",
        "/api/v1/dashboard/link",
        Some(&admin),
        Some(r#"{"tenant":"nope"}"#),
    )
    .await;
    assert_eq!(resp.status, 404, "{}", resp.text());
}

#[tokio::test]
async fn admin_listener_stays_on_loopback_unless_remote_is_allowed_with_tls() {
    let env = TestEnv::new().await;
    let home = env.home();
    let refused = |cfg, needle: &'static str| {
        let path = env.write_config(&cfg);
        match proxy::launch(&home, &path, &[]) {
            Launch::Ready(_) => panic!("started with an unsafe admin listener"),
            Launch::Exited { status, stderr } => {
                assert!(!status.success());
                assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
            }
        }
    };
    refused(
        env.config().set("admin", "listen", &toml_str("0.0.0.0:0")),
        "admin.allow_remote",
    );
    refused(
        env.config()
            .set("admin", "listen", &toml_str("0.0.0.0:0"))
            .set("admin", "allow_remote", "true"),
        "needs TLS",
    );

    // With TLS: curl (trusting the CA) and the CLI both reach it over HTTPS.
    let ca = Ca::new("admin test CA");
    let leaf = ca.leaf(&["127.0.0.1", "localhost"], false);
    let dir = env.dir.path();
    std::fs::write(dir.join("admin-ca.pem"), ca.pem()).unwrap();
    let cert_pem = leaf
        .chain
        .iter()
        .map(|c| pem_block("CERTIFICATE", c.as_ref()))
        .collect::<String>()
        + &ca.pem();
    std::fs::write(dir.join("admin.crt"), cert_pem).unwrap();
    write_private(
        &dir.join("admin.key"),
        pem_block("PRIVATE KEY", leaf.key().secret_der()).as_bytes(),
    );
    // Tests bind loopback only: TLS with allow_remote is exercised on 127.0.0.1 (the two
    // refusals above happen before anything is bound).
    let cfg = env.config().set("admin", "allow_remote", "true").set(
        "admin",
        "tls",
        &format!(
            "{{ cert = {}, key = {} }}",
            toml_str(&dir.join("admin.crt").display().to_string()),
            toml_str(&dir.join("admin.key").display().to_string())
        ),
    );
    let proxy = env.start(cfg);
    let port = proxy.admin_addr.port();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(dir.join("admin-ca.pem"))
        .arg(format!("https://127.0.0.1:{port}/api/v1/whoami"))
        .args([
            "-H",
            &format!("Authorization: Bearer {}", proxy.admin_token()),
        ])
        .output()
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("\"scope\":\"instance\""),
        "curl over TLS: {body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut s = crate::support::raw::tcp(proxy.admin_addr).await;
    tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let plain =
        crate::support::raw::read_until_closed(&mut s, "plain HTTP to the TLS listener").await;
    assert!(
        !plain.starts_with(b"HTTP/"),
        "plain HTTP is not served on a TLS listener"
    );
    let out = agentgate(&proxy.home, &["dashboard", "--no-open"], &[]).await;
    let url = ok(&out, "agentgate dashboard over TLS");
    assert!(url.trim().starts_with("https://"), "{url}");
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out + &format!("-----END {label}-----\n")
}
