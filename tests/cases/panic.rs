//! Gate 5 — `agw_` reference tokens and PANIC, through the real CLI and admin API: references
//! swapped only for their agent and service, PANIC of one agent (identity, tunnels with
//! in-flight requests, cached credentials, upstream revocation at a real OAuth provider),
//! PANIC of every agent and its lifting, the admin route, and GitHub App installation
//! tokens minted per repository, cached, and revoked by PANIC.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::support::cli::{failed, ok, register};
use crate::support::oidc::{CLIENT_ID, CLIENT_SECRET, OidcProvider};
use crate::support::proxy::{Proxy, toml_str};
use crate::support::raw::{self, H1, RawResponse};
use crate::support::upstream::Seen;
use crate::support::{TestEnv, agent, assert_denied, audit_decisions, read_records};

/// `agentgate ARGS` against the proxy's state dir.
async fn agentgate(proxy: &Proxy, args: &[&str]) -> Output {
    crate::support::cli::agentgate(&proxy.home, args, &[]).await
}

/// `content` in a 0600 file of the test dir.
fn secret_file(env: &TestEnv, name: &str, content: &str) -> PathBuf {
    crate::support::cli::secret_file(env.dir.path(), name, content)
}

/// `vault set SERVICE ARGS --secret-file F`; returns the connection id it printed.
async fn vault_set(
    env: &TestEnv,
    proxy: &Proxy,
    service: &str,
    args: &[&str],
    secret: &str,
) -> String {
    let file = secret_file(env, &format!("secret-{service}-{}", args.join("-")), secret);
    let file = file.display().to_string();
    let mut all = vec!["vault", "set", service];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--secret-file", &file]);
    let out = agentgate(proxy, &all).await;
    let stdout = ok(&out, "vault set");
    assert!(
        stdout.starts_with("stored cred_") && stdout.contains(&format!(" for {service} ")),
        "{stdout}"
    );
    assert!(!stdout.contains(secret), "vault set printed the secret");
    let id = stdout
        .strip_prefix("stored ")
        .and_then(|s| s.split_whitespace().next())
        .expect("connection id");
    id.to_owned()
}

/// A CONNECT tunnel to `host:443` as the agent with this `Proxy-Authorization`, with TLS and
/// an HTTP/1.1 client on top.
async fn open(proxy: &Proxy, bearer: &str, host: &str) -> H1 {
    let (s, head) = raw::connect_as(proxy.proxy_addr, &format!("{host}:443"), Some(bearer)).await;
    assert_eq!(
        head.status,
        200,
        "CONNECT {host} refused: {:?} {}",
        head.headers,
        head.text()
    );
    let tls = raw::tls_over(s, host, &proxy.ca_path, &[b"http/1.1"]).await;
    raw::h1_client(tls).await
}

/// A CONNECT that must be refused; returns the refusal.
async fn refused_connect(proxy: &Proxy, bearer: &str, host: &str) -> RawResponse {
    let (_, head) = raw::connect_as(proxy.proxy_addr, &format!("{host}:443"), Some(bearer)).await;
    head
}

/// An origin-form request with an optional `Authorization` and JSON body.
fn request(
    method: &str,
    path: &str,
    host: &str,
    authorization: Option<&str>,
    body: &str,
) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    req.body(Full::new(Bytes::from(body.to_owned())))
        .expect("request")
}

async fn get(h1: &mut H1, path: &str, host: &str, authorization: Option<&str>) -> RawResponse {
    raw::send_h1(h1, request("GET", path, host, authorization, "")).await
}

/// `POST path` on the admin port with a JSON body and an optional bearer token.
async fn admin_post(proxy: &Proxy, path: &str, bearer: Option<&str>, body: &str) -> RawResponse {
    admin_post_typed(proxy, path, bearer, "application/json", body).await
}

async fn admin_post_typed(
    proxy: &Proxy,
    path: &str,
    bearer: Option<&str>,
    content_type: &str,
    body: &str,
) -> RawResponse {
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n{auth}\r\n{body}",
        addr = proxy.admin_addr,
        len = body.len(),
    );
    let mut s = raw::tcp(proxy.admin_addr).await;
    raw::exchange(&mut s, req.as_bytes())
        .await
        .unwrap_or_else(|| panic!("admin port closed without answering POST {path}"))
}

/// The requests the upstream saw on `path`, in order.
fn seen_on(env: &TestEnv, path: &str) -> Vec<Seen> {
    env.upstream
        .seen()
        .into_iter()
        .filter(|s| s.path == path)
        .collect()
}

/// The one request the upstream saw on `path`; its `Authorization`.
fn authorization_on(env: &TestEnv, path: &str) -> String {
    let seen = seen_on(env, path);
    assert_eq!(seen.len(), 1, "requests on {path}: {seen:?}");
    seen[0]
        .authorization
        .clone()
        .unwrap_or_else(|| panic!("no Authorization reached the upstream on {path}"))
}

/// Polls `cond` for up to 5 s.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not reached within 5 s");
}

/// A step of a PANIC report by name.
fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name:?} in {report:#}"))
}

/// Checks the fields every PANIC report has.
fn assert_report_shape(report: &Value, scope: &str, reason: &str) {
    assert!(
        report["panic_id"]
            .as_str()
            .is_some_and(|p| p.starts_with("panic_") && p.len() > 6),
        "{report:#}"
    );
    assert_eq!(report["scope"], scope, "{report:#}");
    assert_eq!(report["reason"], reason, "{report:#}");
    assert!(report["local_ms"].is_u64(), "{report:#}");
    assert_eq!(report["ok"], true, "{report:#}");
    let mut names: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["step"].as_str().expect("step name"))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "connections",
            "consents",
            "credentials",
            "identity",
            "references"
        ],
        "{report:#}"
    );
    for s in report["steps"].as_array().expect("steps") {
        assert!(s["count"].is_u64(), "{s}");
        assert!(s["detail"].as_str().is_some_and(|d| !d.is_empty()), "{s}");
    }
    assert!(report["upstream"].is_array(), "{report:#}");
}

/// `agentgate panic ARGS -o json`, which must succeed; the report.
async fn panic_cli(proxy: &Proxy, args: &[&str]) -> Value {
    let mut all = vec!["panic"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = agentgate(proxy, &all).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "agentgate panic {args:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "panic -o json printed non-JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Expects 403 `reference_invalid` from the token gate, with `why` in the reason.
fn assert_reference_refused(resp: &RawResponse, why: &str) {
    let body = assert_denied(resp, 403, "token");
    assert_eq!(body["error"], "reference_invalid", "{body}");
    assert!(
        body["reason"].as_str().is_some_and(|r| r.contains(why)),
        "{body}"
    );
}

/// Expects the agent's identity refused: it was revoked (by PANIC).
fn assert_identity_revoked(resp: &RawResponse) {
    let body = assert_denied(resp, 403, "identity");
    assert_eq!(body["error"], "identity_revoked", "{body}");
}

/// References: `agents reference` mints an `agw_` reference that the proxy swaps for the
/// stored static credential on a request of that agent to that service's origin (the
/// decision record says `"reference": true`); another agent's use, another service's origin,
/// a forged reference and an origin without a connection are refused 403
/// `reference_invalid` before anything reaches the upstream. `agents reference` refuses an
/// agent not in reference mode; an agent can mint its own with its JWT-SVID at
/// `POST /api/v1/references`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_are_swapped_only_for_their_agent_and_service() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let refbot = register(&proxy, "refbot", "alice", &["--reference-tokens"]).await;
    let plain = register(&proxy, "plain", "alice", &[]).await;
    let canary = "ghp_refcanary_5a1e0c9d7f3b42e8a6";
    let slack_canary = "xoxb-slack-canary-77d1f0";
    let github_id = vault_set(&env, &proxy, "github", &["--kind", "static"], canary).await;
    vault_set(&env, &proxy, "slack", &["--kind", "static"], slack_canary).await;

    let out = agentgate(&proxy, &["agents", "reference", "refbot", "github"]).await;
    let reference = ok(&out, "agents reference").trim().to_owned();
    assert!(
        reference.starts_with("agw_") && reference.len() > 40,
        "{reference:?}"
    );
    let out = agentgate(
        &proxy,
        &["agents", "reference", "refbot", "github", "-o", "json"],
    )
    .await;
    let doc: Value = serde_json::from_str(&ok(&out, "agents reference -o json")).expect("JSON");
    assert_eq!(doc["agent"], refbot.spiffe_id.as_str(), "{doc}");
    assert_eq!(doc["service"], "github", "{doc}");
    let expires_in = doc["expires_in"].as_i64().expect("expires_in");
    assert!((55..=60).contains(&expires_in), "{doc}");
    let second = doc["reference"].as_str().expect("reference").to_owned();
    assert!(second.starts_with("agw_") && second != reference, "{doc}");

    // Swapped on refbot's request to api.github.com.
    let mut h1 = open(&proxy, &refbot.bearer(), "api.github.com").await;
    let resp = get(
        &mut h1,
        "/repos/acme/web",
        "api.github.com",
        Some(&format!("Bearer {reference}")),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        authorization_on(&env, "/repos/acme/web"),
        format!("Bearer {canary}")
    );
    // The echo of the credential comes back masked, same length.
    assert_eq!(
        resp.json()["headers"]["authorization"],
        format!("Bearer {}", "*".repeat(canary.len())),
        "{}",
        resp.text()
    );
    let decisions = audit_decisions(&proxy, |d| {
        d.iter()
            .any(|r| r["path"] == "/repos/acme/web" && r["agent"] == refbot.spiffe_id.as_str())
    })
    .await;
    let d = decisions
        .iter()
        .find(|r| r["path"] == "/repos/acme/web" && r["agent"] == refbot.spiffe_id.as_str())
        .unwrap_or_else(|| panic!("no decision record for the reference request: {decisions:#?}"));
    assert_eq!(d["effect"], "allow", "{d:#}");
    assert_eq!(d["reference"], true, "{d:#}");
    assert_eq!(d["credential"]["id"], github_id.as_str(), "{d:#}");
    assert_eq!(d["credential"]["kind"], "static", "{d:#}");
    assert!(
        d["credential"]["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("hmac-sha256:") && f.len() == 12 + 16),
        "{d:#}"
    );
    assert!(
        !d.to_string().contains(canary),
        "the record holds the token"
    );
    // The `token agw_…` form works too (the injected scheme stays the connection's).
    let resp = get(
        &mut h1,
        "/repos/acme/web/issues",
        "api.github.com",
        Some(&format!("token {second}")),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        authorization_on(&env, "/repos/acme/web/issues"),
        format!("Bearer {canary}")
    );

    // Another agent presenting refbot's reference.
    let mut plain_h1 = open(&proxy, &plain.bearer(), "api.github.com").await;
    let resp = get(
        &mut plain_h1,
        "/repos/acme/web?by=plain",
        "api.github.com",
        Some(&format!("Bearer {reference}")),
    )
    .await;
    assert_reference_refused(&resp, "another agent");
    // refbot's github reference sent to slack.com (which has a connection of its own).
    let mut slack = open(&proxy, &refbot.bearer(), "slack.com").await;
    let resp = get(
        &mut slack,
        "/api/chat.postMessage?by=wrong-service",
        "slack.com",
        Some(&format!("Bearer {reference}")),
    )
    .await;
    assert_reference_refused(&resp, "for service github");
    // A forged reference.
    let resp = get(
        &mut h1,
        "/repos/acme/web?by=forged",
        "api.github.com",
        Some("Bearer agw_x"),
    )
    .await;
    assert_reference_refused(&resp, "unknown");
    // An origin no connection serves: nothing to swap it for.
    let mut gmail = open(&proxy, &refbot.bearer(), "gmail.googleapis.com").await;
    let resp = get(
        &mut gmail,
        "/gmail/v1/users/me/messages?by=no-connection",
        "gmail.googleapis.com",
        Some(&format!("Bearer {reference}")),
    )
    .await;
    assert_reference_refused(&resp, "");
    for marker in [
        "by=plain",
        "by=wrong-service",
        "by=forged",
        "by=no-connection",
    ] {
        assert!(
            !env.upstream.saw(marker),
            "a refused reference request reached the upstream ({marker})"
        );
    }
    // None of the refusals burned the reference: refbot still gets it swapped.
    let resp = get(
        &mut h1,
        "/repos/acme/web/pulls",
        "api.github.com",
        Some(&format!("Bearer {reference}")),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        authorization_on(&env, "/repos/acme/web/pulls"),
        format!("Bearer {canary}")
    );

    // Only agents in reference mode get references.
    let out = agentgate(&proxy, &["agents", "reference", "plain", "github"]).await;
    let err = failed(&out, "agents reference plain github");
    assert!(err.contains("--reference-tokens"), "{err}");
    assert!(out.stdout.is_empty(), "printed something: {:?}", out.stdout);

    // An agent mints its own with its JWT-SVID.
    let resp = admin_post(
        &proxy,
        "/api/v1/references",
        Some(&refbot.token),
        r#"{"service":"github"}"#,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let own = resp.json();
    assert_eq!(own["agent"], refbot.spiffe_id.as_str(), "{own}");
    assert_eq!(own["service"], "github", "{own}");
    let own = own["reference"].as_str().expect("reference").to_owned();
    assert!(own.starts_with("agw_"), "{own}");
    let resp = get(
        &mut h1,
        "/repos/acme/web/branches",
        "api.github.com",
        Some(&format!("Bearer {own}")),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        authorization_on(&env, "/repos/acme/web/branches"),
        format!("Bearer {canary}")
    );
    // An agent cannot name another agent, nor mint when not in reference mode; no bearer: 401.
    let resp = admin_post(
        &proxy,
        "/api/v1/references",
        Some(&refbot.token),
        r#"{"agent":"plain","service":"github"}"#,
    )
    .await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    let resp = admin_post(
        &proxy,
        "/api/v1/references",
        Some(&plain.token),
        r#"{"service":"github"}"#,
    )
    .await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(resp.json()["error"], "reference_tokens_off");
    let resp = admin_post(
        &proxy,
        "/api/v1/references",
        None,
        r#"{"service":"github"}"#,
    )
    .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    let resp = admin_post(
        &proxy,
        "/api/v1/references",
        Some("not-a-jwt"),
        r#"{"service":"github"}"#,
    )
    .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    // A service with no connection: 404.
    let resp = admin_post(
        &proxy,
        "/api/v1/references",
        Some(&refbot.token),
        r#"{"service":"gmail"}"#,
    )
    .await;
    assert_eq!(resp.status, 404, "{}", resp.text());
    assert_eq!(resp.json()["error"], "no_connection");
    assert!(
        !proxy.stderr().contains(canary),
        "the static token leaked into the log"
    );
}

/// A reference lives `vault.reference_ttl`: swapped while fresh, refused 403
/// `reference_invalid` once it expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_references_are_refused() {
    let env = TestEnv::new().await;
    let proxy = env.start(env.config().set("vault", "reference_ttl", &toml_str("3s")));
    let refbot = register(&proxy, "refbot", "alice", &["--reference-tokens"]).await;
    let canary = "ghp_ttlcanary_0b8e44c1d2";
    vault_set(&env, &proxy, "github", &["--kind", "static"], canary).await;
    let out = agentgate(
        &proxy,
        &["agents", "reference", "refbot", "github", "-o", "json"],
    )
    .await;
    let doc: Value = serde_json::from_str(&ok(&out, "agents reference")).expect("JSON");
    assert!(
        (2..=3).contains(&doc["expires_in"].as_i64().unwrap_or(-1)),
        "{doc}"
    );
    let reference = doc["reference"].as_str().expect("reference").to_owned();
    let minted = Instant::now();
    let mut h1 = open(&proxy, &refbot.bearer(), "api.github.com").await;
    let resp = get(
        &mut h1,
        "/repos/acme/web",
        "api.github.com",
        Some(&format!("Bearer {reference}")),
    )
    .await;
    assert!(
        minted.elapsed() < Duration::from_millis(1800),
        "too slow to check the fresh reference"
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        authorization_on(&env, "/repos/acme/web"),
        format!("Bearer {canary}")
    );

    tokio::time::sleep(Duration::from_secs(4)).await;
    let resp = get(
        &mut h1,
        "/repos/acme/web/issues",
        "api.github.com",
        Some(&format!("Bearer {reference}")),
    )
    .await;
    assert_reference_refused(&resp, "expired");
    assert!(seen_on(&env, "/repos/acme/web/issues").is_empty());
}

/// PANIC of one agent, end to end with a real OAuth provider: agent `a` (owner alice) and
/// `b` (owner bob) each get an access token from their owner's refresh token; `a` also has a
/// request in flight. `agentgate panic --agent a` cuts `a` off (identity, its tunnel with
/// the in-flight request, its cached credential), revokes `a`'s access token at the
/// provider (RFC 7009) and leaves `b` working; every step is in the audit log; a second
/// PANIC is harmless and revokes nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_of_one_agent_cuts_it_off_and_revokes_its_tokens_upstream() {
    let env = TestEnv::new().await;
    let op = OidcProvider::start(600).await;
    let rt_alice = op.refresh_token("alice", CLIENT_ID).await;
    let rt_bob = op.refresh_token("bob", CLIENT_ID).await;
    let cfg = env
        .config()
        // The in-flight request must die by PANIC, not by the response timeout.
        .set("upstream", "response_timeout", &toml_str("60s"))
        .set(
            "vault.providers.test",
            "token_url",
            &toml_str(&op.token_url()),
        )
        .set(
            "vault.providers.test",
            "revoke_url",
            &toml_str(&op.revoke_url()),
        )
        .set("vault.providers.test", "client_id", &toml_str(CLIENT_ID))
        .set(
            "vault.providers.test",
            "client_secret_env",
            &toml_str("OIDC_CLIENT_SECRET"),
        );
    let proxy = env.start_with_env(cfg, &[("OIDC_CLIENT_SECRET", CLIENT_SECRET)]);
    let a = register(&proxy, "a", "alice", &[]).await;
    let b = register(&proxy, "b", "bob", &[]).await;
    let oauth = ["--kind", "oauth", "--provider", "test"];
    let alice_conn = vault_set(
        &env,
        &proxy,
        "gmail",
        &[&oauth[..], &["--user", "alice"]].concat(),
        &rt_alice,
    )
    .await;
    let bob_conn = vault_set(
        &env,
        &proxy,
        "gmail",
        &[&oauth[..], &["--user", "bob"]].concat(),
        &rt_bob,
    )
    .await;
    assert_ne!(alice_conn, bob_conn);

    let host = "gmail.googleapis.com";
    let mut a_h1 = open(&proxy, &a.bearer(), host).await;
    let resp = get(&mut a_h1, "/gmail/v1/users/me/messages/a1", host, None).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let ta = authorization_on(&env, "/gmail/v1/users/me/messages/a1")
        .strip_prefix("Bearer ")
        .expect("Bearer token")
        .to_owned();
    let mut b_h1 = open(&proxy, &b.bearer(), host).await;
    let resp = get(&mut b_h1, "/gmail/v1/users/me/messages/b1", host, None).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let tb = authorization_on(&env, "/gmail/v1/users/me/messages/b1")
        .strip_prefix("Bearer ")
        .expect("Bearer token")
        .to_owned();
    assert_ne!(ta, tb, "alice's and bob's agents got the same token");
    let issued = op.stats().await["issued_access_tokens"].clone();
    assert_eq!(issued, json!([ta, tb]), "tokens the provider issued");
    assert!(op.active(&ta).await && op.active(&tb).await);

    // a's request in flight on its open tunnel.
    let hang = tokio::spawn(async move {
        let req = request("GET", "/hang", host, None, "");
        raw::within("h1 ready", a_h1.ready())
            .await
            .expect("h1 ready");
        tokio::time::timeout(Duration::from_secs(60), a_h1.send_request(req)).await
    });
    eventually("the /hang request reaches the upstream", || {
        env.upstream.saw("GET /hang")
    })
    .await;

    let report = panic_cli(&proxy, &["--agent", "a", "--reason", "test"]).await;
    let after_panic = Instant::now();
    assert_report_shape(&report, "agent", "test");
    assert_eq!(report["agents"], json!([a.spiffe_id]), "{report:#}");
    assert_eq!(step(&report, "identity")["count"], 1, "{report:#}");
    assert_eq!(step(&report, "connections")["count"], 1, "{report:#}");
    assert_eq!(step(&report, "credentials")["count"], 1, "{report:#}");
    assert_eq!(step(&report, "references")["count"], 0, "{report:#}");
    let upstream = report["upstream"].as_array().expect("upstream");
    assert_eq!(upstream.len(), 1, "{report:#}");
    let u = &upstream[0];
    assert_eq!(u["result"], "revoked", "{report:#}");
    assert_eq!(u["service"], "gmail", "{report:#}");
    assert_eq!(u["kind"], "oauth", "{report:#}");
    assert_eq!(u["credential"], alice_conn.as_str(), "{report:#}");
    assert!(
        u["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("hmac-sha256:")),
        "{report:#}"
    );
    let until = u["deny_listed_until"].as_i64().expect("deny_listed_until");
    assert!(
        (agent::now() + 500..=agent::now() + 601).contains(&until),
        "deny-listed until {until}, expected about now + 600"
    );
    assert!(
        !report.to_string().contains(&ta),
        "the report holds a token"
    );

    // At the provider: a's token revoked (RFC 7009, as an access token); b's untouched.
    assert!(!op.active(&ta).await, "a's access token is still active");
    assert!(op.active(&tb).await, "b's access token was revoked too");
    let stats = op.stats().await;
    assert_eq!(
        stats["revocations"],
        json!([{"token": ta, "token_type_hint": "access_token"}]),
        "{stats}"
    );

    // The in-flight request died with its tunnel, without an answer.
    let outcome = tokio::time::timeout(Duration::from_secs(3), hang)
        .await
        .expect("the in-flight request outlived PANIC by 3 s")
        .expect("hang task");
    match outcome {
        Ok(Err(_closed)) => {}
        Ok(Ok(resp)) => panic!("the in-flight request got an answer: {}", resp.status()),
        Err(_) => panic!("the in-flight request is still waiting"),
    }
    assert!(after_panic.elapsed() < Duration::from_secs(3));

    // a is refused from now on; b goes on.
    assert_identity_revoked(&refused_connect(&proxy, &a.bearer(), host).await);
    let resp = get(&mut b_h1, "/gmail/v1/users/me/messages/b2", host, None).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let tb2 = authorization_on(&env, "/gmail/v1/users/me/messages/b2");
    assert_ne!(tb2, format!("Bearer {ta}"));
    assert!(op.active(tb2.strip_prefix("Bearer ").unwrap()).await);
    let mut b_again = open(&proxy, &b.bearer(), host).await;
    let resp = get(&mut b_again, "/gmail/v1/users/me/messages/b3", host, None).await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    // The audit log: one "panic" record per step, one "credential_revoked".
    let admin = read_records(&proxy.home.join("audit.db"), "admin");
    let panic_id = report["panic_id"].as_str().unwrap();
    let ours: Vec<&Value> = admin
        .iter()
        .filter(|r| r["detail"]["panic_id"] == panic_id)
        .collect();
    let mut steps: Vec<&str> = ours
        .iter()
        .filter(|r| r["event"] == "panic")
        .map(|r| r["detail"]["step"]["step"].as_str().expect("step"))
        .collect();
    steps.sort_unstable();
    assert_eq!(
        steps,
        [
            "connections",
            "consents",
            "credentials",
            "identity",
            "references"
        ],
        "{ours:#?}"
    );
    let revoked: Vec<&&Value> = ours
        .iter()
        .filter(|r| r["event"] == "credential_revoked")
        .collect();
    assert_eq!(revoked.len(), 1, "{ours:#?}");
    assert_eq!(revoked[0]["detail"]["step"]["result"], "revoked");
    assert_eq!(revoked[0]["detail"]["reason"], "test");
    assert_eq!(revoked[0]["detail"]["agents"], json!([a.spiffe_id]));
    let log = serde_json::to_string(&admin).unwrap();
    for secret in [&ta, &tb, &rt_alice, &rt_bob] {
        assert!(!log.contains(secret.as_str()), "a secret in the audit log");
    }

    // Again: harmless, nothing newly revoked upstream.
    let again = panic_cli(&proxy, &["--agent", "a", "--reason", "test"]).await;
    assert_report_shape(&again, "agent", "test");
    assert_eq!(again["agents"], json!([a.spiffe_id]));
    assert_eq!(step(&again, "connections")["count"], 0, "{again:#}");
    let results: Vec<&Value> = again["upstream"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| &u["result"])
        .collect();
    assert!(
        results.iter().all(|r| *r == "already_revoked"),
        "second PANIC revoked something anew: {again:#}"
    );
    assert_eq!(
        op.stats().await["revocations"].as_array().map(Vec::len),
        Some(1),
        "the second PANIC called the provider again"
    );
    assert!(op.active(&tb).await);
}

/// `agentgate panic --all` refuses every agent, registered or only trusted through a bundle
/// (the test agent); `panic --lift` lets unrevoked callers in again, while the agents it
/// revoked need registering anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_all_refuses_every_agent_until_lifted() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let x = register(&proxy, "x", "alice", &[]).await;
    let y = register(&proxy, "y", "bob", &[]).await;
    let bundle_bot = agent::bearer();
    let host = "api.github.com";
    for who in [&x.bearer(), &y.bearer(), &bundle_bot] {
        let mut h1 = open(&proxy, who, host).await;
        assert_eq!(get(&mut h1, "/echo", host, None).await.status, 200);
    }
    // An open tunnel of the bundle agent, cut by PANIC --all.
    let (s, head) =
        raw::connect_as(proxy.proxy_addr, "api.github.com:443", Some(&bundle_bot)).await;
    assert_eq!(head.status, 200);
    let mut tls = raw::tls_over(s, host, &proxy.ca_path, &[b"http/1.1"]).await;

    let report = panic_cli(&proxy, &["--all", "--reason", "drill"]).await;
    assert_report_shape(&report, "all", "drill");
    let agents: Vec<&str> = report["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a.as_str().expect("agent"))
        .collect();
    let bundle_id = format!("spiffe://{}/agent/{}", agent::TRUST_DOMAIN, agent::NAME);
    let mut want = vec![
        x.spiffe_id.as_str(),
        y.spiffe_id.as_str(),
        bundle_id.as_str(),
    ];
    want.sort_unstable();
    assert_eq!(agents, want, "{report:#}");
    assert_eq!(step(&report, "identity")["count"], 2, "{report:#}");
    assert!(
        step(&report, "connections")["count"].as_u64().unwrap() >= 1,
        "{report:#}"
    );
    raw::read_until_closed(&mut tls, "the bundle agent's tunnel after PANIC --all").await;

    for who in [&x.bearer(), &y.bearer(), &bundle_bot] {
        assert_identity_revoked(&refused_connect(&proxy, who, host).await);
    }

    let out = agentgate(&proxy, &["panic", "--lift"]).await;
    ok(&out, "panic --lift");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lifted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The bundle agent was never revoked one by one: back in.
    let mut h1 = open(&proxy, &bundle_bot, host).await;
    let resp = get(&mut h1, "/echo?after=lift", host, None).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // x's old token stays dead; a new registration works.
    assert_identity_revoked(&refused_connect(&proxy, &x.bearer(), host).await);
    let x2 = register(&proxy, "x", "alice", &[]).await;
    let mut h1 = open(&proxy, &x2.bearer(), host).await;
    let resp = get(&mut h1, "/echo?after=reregister", host, None).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_identity_revoked(&refused_connect(&proxy, &y.bearer(), host).await);

    // Lifting twice is harmless.
    let out = agentgate(&proxy, &["panic", "--lift"]).await;
    ok(&out, "panic --lift again");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not in force"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `POST /api/v1/panic`: admin token required (401 without or with a wrong one), 404 for an
/// unknown agent, 400 for a body naming no target (or both, or not JSON); with
/// `{"agent": NAME}` the same report as the CLI, and the agent is refused; a SPIFFE ID that is
/// not registered (the bundle-trusted test agent) can be PANICked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_admin_api_checks_the_token_and_the_body() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let n1 = register(&proxy, "n1", "alice", &[]).await;
    let token = proxy.admin_token();
    let path = "/api/v1/panic";

    let resp = admin_post(&proxy, path, None, r#"{"agent":"n1"}"#).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_eq!(resp.json()["error"], "unauthorized");
    let resp = admin_post(&proxy, path, Some("wrong"), r#"{"agent":"n1"}"#).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    // An agent's own JWT-SVID is no admin token here.
    let resp = admin_post(&proxy, path, Some(&n1.token), r#"{"agent":"n1"}"#).await;
    assert_eq!(resp.status, 401, "{}", resp.text());

    let resp = admin_post(&proxy, path, Some(&token), r#"{"agent":"nope"}"#).await;
    assert_eq!(resp.status, 404, "{}", resp.text());
    assert_eq!(resp.json()["error"], "unknown_agent");
    for bad in [
        "{}",
        r#"{"agent":"n1","all":true}"#,
        r#"{"agent":""}"#,
        r#"{"all":false}"#,
        "not json",
    ] {
        let resp = admin_post(&proxy, path, Some(&token), bad).await;
        assert_eq!(resp.status, 400, "{bad}: {}", resp.text());
    }
    let resp = admin_post_typed(
        &proxy,
        path,
        Some(&token),
        "text/plain",
        r#"{"agent":"n1"}"#,
    )
    .await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    // None of that touched n1.
    let mut h1 = open(&proxy, &n1.bearer(), "api.github.com").await;
    assert_eq!(
        get(&mut h1, "/echo", "api.github.com", None).await.status,
        200
    );

    let resp = admin_post(
        &proxy,
        path,
        Some(&token),
        r#"{"agent":"n1","reason":"api drill"}"#,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let report = resp.json();
    assert_report_shape(&report, "agent", "api drill");
    assert_eq!(report["agents"], json!([n1.spiffe_id]), "{report:#}");
    assert_eq!(step(&report, "identity")["count"], 1, "{report:#}");
    assert_eq!(step(&report, "connections")["count"], 1, "{report:#}");
    assert_eq!(report["upstream"], json!([]), "{report:#}");
    assert_identity_revoked(&refused_connect(&proxy, &n1.bearer(), "api.github.com").await);

    // By SPIFFE ID, for a caller trusted through a bundle and never registered.
    let bundle_id = format!("spiffe://{}/agent/{}", agent::TRUST_DOMAIN, agent::NAME);
    let body = json!({ "agent": bundle_id }).to_string();
    let resp = admin_post(&proxy, path, Some(&token), &body).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let report = resp.json();
    assert_report_shape(&report, "agent", "PANIC from the admin API");
    assert_eq!(report["agents"], json!([bundle_id]), "{report:#}");
    assert_identity_revoked(&refused_connect(&proxy, &agent::bearer(), "api.github.com").await);
}

/// A GitHub App connection: the proxy signs an RS256 App JWT (iss = app id, verified here
/// with the key's public half), asks for an installation token limited to the request's
/// repository and the policy's scopes, injects it, reuses it for the same repository, asks
/// anew for another repository, and PANIC revokes both tokens
/// (`DELETE /installation/token`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_app_tokens_are_scoped_cached_and_revoked_by_panic() {
    let env = TestEnv::new().await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
    let pem_file = secret_file(&env, "app-key.pem", &key.serialize_pem());
    let policy_dir = env.dir.path().join("scoped-policy");
    std::fs::create_dir_all(&policy_dir).expect("policy dir");
    std::fs::write(
        policy_dir.join("scoped.rego"),
        "package agentgate\n\ndecision := {\"effect\": \"allow\", \"reasons\": [\"t\"], \"scopes\": [\"issues:write\"]}\n",
    )
    .expect("write policy");
    let cfg = env.config().set(
        "policy",
        "dir",
        &toml_str(&policy_dir.display().to_string()),
    );
    let proxy = env.start(cfg);
    let gh = register(&proxy, "gh", "alice", &[]).await;
    let pem = pem_file.display().to_string();
    let out = agentgate(
        &proxy,
        &[
            "vault",
            "set",
            "github",
            "--kind",
            "github-app",
            "--app-id",
            "123",
            "--installation-id",
            "456",
            "--secret-file",
            &pem,
        ],
    )
    .await;
    let stdout = ok(&out, "vault set github-app");
    let conn_id = stdout
        .strip_prefix("stored ")
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_owned();

    let host = "api.github.com";
    let mut h1 = open(&proxy, &gh.bearer(), host).await;
    let issue = r#"{"title":"from the agent"}"#;
    let resp = raw::send_h1(
        &mut h1,
        request(
            "POST",
            "/repos/acme/web/issues",
            host,
            Some("Bearer agent-own-token"),
            issue,
        ),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = env.upstream.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let mint = &seen[0];
    assert_eq!(
        (mint.method.as_str(), mint.path.as_str()),
        ("POST", "/app/installations/456/access_tokens"),
        "{seen:#?}"
    );
    assert_eq!(mint.sni.as_deref(), Some(host));
    let body: Value = serde_json::from_str(&mint.body).expect("access_tokens body is JSON");
    assert_eq!(
        body,
        json!({"repositories": ["web"], "permissions": {"issues": "write"}})
    );
    let jwt = mint
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .expect("Bearer App JWT");
    check_app_jwt(jwt, &key);

    let live = env.upstream.live_installation_tokens();
    assert_eq!(live.len(), 1, "{live:?}");
    let ghs = live[0].clone();
    assert!(ghs.starts_with("ghs_"));
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("POST", "/repos/acme/web/issues")
    );
    assert_eq!(seen[1].authorization, Some(format!("Bearer {ghs}")));
    let decisions = audit_decisions(&proxy, |d| {
        d.iter().any(|r| r["path"] == "/repos/acme/web/issues")
    })
    .await;
    let d = decisions
        .iter()
        .find(|r| r["path"] == "/repos/acme/web/issues")
        .expect("decision record");
    assert_eq!(d["scopes"], json!(["issues:write"]), "{d:#}");
    assert_eq!(d["credential"]["kind"], "github-app", "{d:#}");
    assert_eq!(d["credential"]["id"], conn_id.as_str(), "{d:#}");
    assert!(d.get("reference").is_none(), "{d:#}");

    // Same repository: the cached installation token, no new access_tokens call.
    let resp = raw::send_h1(
        &mut h1,
        request("POST", "/repos/acme/web/issues", host, None, issue),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = get(&mut h1, "/repos/acme/web", host, None).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = env.upstream.seen();
    assert_eq!(seen.len(), 4, "{seen:#?}");
    for s in &seen[2..] {
        assert_eq!(s.authorization, Some(format!("Bearer {ghs}")), "{s:?}");
    }
    // Another repository: a token of its own.
    let resp = get(&mut h1, "/repos/acme/api", host, None).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = env.upstream.seen();
    assert_eq!(seen.len(), 6, "{seen:#?}");
    assert_eq!(seen[4].path, "/app/installations/456/access_tokens");
    let body: Value = serde_json::from_str(&seen[4].body).expect("JSON");
    assert_eq!(
        body,
        json!({"repositories": ["api"], "permissions": {"issues": "write"}})
    );
    let live = env.upstream.live_installation_tokens();
    assert_eq!(live.len(), 2, "{live:?}");
    let ghs_api = live[1].clone();
    assert_ne!(ghs_api, ghs);
    assert_eq!(seen[5].authorization, Some(format!("Bearer {ghs_api}")));

    // PANIC: both installation tokens revoked at GitHub.
    let report = panic_cli(&proxy, &["--agent", "gh", "--reason", "app"]).await;
    assert_report_shape(&report, "agent", "app");
    assert_eq!(step(&report, "credentials")["count"], 2, "{report:#}");
    let upstream = report["upstream"].as_array().expect("upstream");
    assert_eq!(upstream.len(), 2, "{report:#}");
    for u in upstream {
        assert_eq!(u["result"], "revoked", "{report:#}");
        assert_eq!(u["service"], "github", "{report:#}");
        assert_eq!(u["kind"], "github-app", "{report:#}");
        assert_eq!(u["credential"], conn_id.as_str(), "{report:#}");
        assert!(u["deny_listed_until"].is_i64(), "{report:#}");
    }
    assert_eq!(
        env.upstream.live_installation_tokens(),
        Vec::<String>::new(),
        "installation tokens still live after PANIC"
    );
    let mut deletes: Vec<String> = env
        .upstream
        .seen()
        .into_iter()
        .filter(|s| s.method == "DELETE" && s.path == "/installation/token")
        .map(|s| s.authorization.unwrap_or_default())
        .collect();
    deletes.sort();
    let mut want = vec![format!("Bearer {ghs}"), format!("Bearer {ghs_api}")];
    want.sort();
    assert_eq!(deletes, want);
    assert!(
        !proxy.stderr().contains(&ghs),
        "installation token in the log"
    );
}

/// The App JWT: RS256 over header.payload verifies with the key's public half; `iss` is the
/// app id, issued a minute back, at most ten minutes long, not expired.
fn check_app_jwt(jwt: &str, key: &rcgen::KeyPair) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let decode = |p: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("base64url")).expect("JSON")
    };
    let header = decode(parts[0]);
    assert_eq!(header["alg"], "RS256", "{header}");
    let claims = decode(parts[1]);
    assert_eq!(claims["iss"], "123", "{claims}");
    let (iat, exp) = (
        claims["iat"].as_i64().expect("iat"),
        claims["exp"].as_i64().expect("exp"),
    );
    let now = agent::now();
    assert!(exp - iat <= 600, "{claims}");
    assert!(iat <= now && iat >= now - 120, "iat {iat}, now {now}");
    assert!(exp > now, "{claims}");

    // aws-lc-rs verifies RSA against the RSAPublicKey inside the SPKI.
    let pair =
        aws_lc_rs::signature::RsaKeyPair::from_pkcs8(key.serialized_der()).expect("RSA key pair");
    let public = aws_lc_rs::signature::KeyPair::public_key(&pair);
    let sig = URL_SAFE_NO_PAD
        .decode(parts[2])
        .expect("signature base64url");
    let input = format!("{}.{}", parts[0], parts[1]);
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        public.as_ref(),
    )
    .verify(input.as_bytes(), &sig)
    .expect("the App JWT's signature does not verify with the App key");
    // And not with another key.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
    let other =
        aws_lc_rs::signature::RsaKeyPair::from_pkcs8(other.serialized_der()).expect("RSA key pair");
    assert!(
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            aws_lc_rs::signature::KeyPair::public_key(&other).as_ref(),
        )
        .verify(input.as_bytes(), &sig)
        .is_err()
    );
}

/// PANIC with an Auth0 Token Vault connection: the federated access token cannot be revoked
/// at Auth0 (reported `not_revocable`, deny-listed), so the user's Auth0 refresh token behind
/// it is revoked at `/oauth/revoke` and the connection is disabled: the provider no longer
/// accepts that refresh token, `vault list` shows it revoked, and another agent's request to
/// that origin is refused 503 `credential_revoked` instead of going out without a credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_revokes_the_auth0_refresh_token_and_disables_the_connection() {
    let env = TestEnv::new().await;
    let op = OidcProvider::start(600).await;
    let refresh = op
        .refresh_token("alice", crate::support::oidc::POST_CLIENT_ID)
        .await;
    let cfg = env
        .config()
        .set("vault.auth0", "token_url", &toml_str(&op.token_url()))
        .set("vault.auth0", "revoke_url", &toml_str(&op.revoke_url()))
        .set(
            "vault.auth0",
            "client_id",
            &toml_str(crate::support::oidc::POST_CLIENT_ID),
        )
        .set(
            "vault.auth0",
            "client_secret_env",
            &toml_str("OIDC_CLIENT_SECRET"),
        )
        .set(
            "vault.auth0",
            "client_auth",
            &toml_str("client_secret_post"),
        );
    let proxy = env.start_with_env(cfg, &[("OIDC_CLIENT_SECRET", CLIENT_SECRET)]);
    let a = register(&proxy, "a", "alice", &[]).await;
    let b = register(&proxy, "b", "alice", &[]).await;
    let conn = vault_set(
        &env,
        &proxy,
        "github",
        &["--kind", "auth0", "--connection", "github"],
        &refresh,
    )
    .await;

    let host = "api.github.com";
    let mut a_h1 = open(&proxy, &a.bearer(), host).await;
    let resp = get(&mut a_h1, "/repos/acme/web/issues", host, None).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let fed = authorization_on(&env, "/repos/acme/web/issues");
    assert!(fed.starts_with("Bearer fed_github_"), "{fed}");
    assert!(op.active(&refresh).await);

    let report = panic_cli(&proxy, &["--agent", "a", "--reason", "auth0 test"]).await;
    assert_report_shape(&report, "agent", "auth0 test");
    let upstream = report["upstream"].as_array().expect("upstream");
    let results: Vec<(&str, &str)> = upstream
        .iter()
        .map(|u| {
            assert_eq!(u["credential"], conn.as_str(), "{u}");
            assert_eq!(u["kind"], "auth0", "{u}");
            (
                u["result"].as_str().expect("result"),
                u["detail"].as_str().expect("detail"),
            )
        })
        .collect();
    assert_eq!(results.len(), 2, "{report:#}");
    assert_eq!(results[0].0, "not_revocable", "{report:#}");
    assert!(upstream[0]["deny_listed_until"].is_i64(), "{report:#}");
    assert_eq!(results[1].0, "revoked", "{report:#}");
    assert!(results[1].1.contains("refresh token"), "{report:#}");

    // At the provider: exactly the refresh token was revoked, as a refresh token.
    let stats = op.stats().await;
    assert_eq!(
        stats["revocations"],
        json!([{"token": refresh, "token_type_hint": "refresh_token"}]),
        "{stats:#}"
    );
    assert!(
        !op.active(&refresh).await,
        "the Auth0 refresh token is still active"
    );

    // The connection is disabled: b (same owner) is refused, nothing goes out.
    let before = env.upstream.seen().len();
    let mut b_h1 = open(&proxy, &b.bearer(), host).await;
    let resp = get(&mut b_h1, "/repos/acme/web/pulls", host, None).await;
    let body = assert_denied(&resp, 503, "token");
    assert_eq!(body["error"], "credential_revoked", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("vault set")),
        "{body}"
    );
    assert_eq!(env.upstream.seen().len(), before, "a request went out");
    let list: Value = serde_json::from_str(&ok(
        &agentgate(&proxy, &["vault", "list", "-o", "json"]).await,
        "vault list",
    ))
    .expect("vault list JSON");
    assert!(list[0]["revoked"].is_i64(), "{list:#}");
}
