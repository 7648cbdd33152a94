//! Gate 5 — token: credentials stored with the real CLI (`vault set/list/rm`) and injected by
//! a running proxy. Static tokens with curl, Python requests and Node fetch (the agent's own
//! Authorization and Cookie never travel, echoes of the token are masked, and the token is in
//! no log, audit record, state file or CLI output); no credential for other origins, for
//! redirects elsewhere or in cleartext; OAuth refresh with rotation and single-flight and the
//! Auth0 Token Vault exchange against a real oidc-provider; token-endpoint faults; vault-key
//! faults at startup; and removal while running.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures_util::future::join_all;
use http_body_util::Full;
use serde_json::Value;

use crate::support::cli::{ok, write_private};
use crate::support::clients::{curl, from_client, from_curl, node_fetch, python};
use crate::support::oidc::{CLIENT_ID, CLIENT_SECRET, OidcProvider, POST_CLIENT_ID};
use crate::support::proxy::{self, ConfigBuilder, Launch, Proxy, toml_str};
use crate::support::raw::{self, RawResponse};
use crate::support::upstream::Seen;
use crate::support::{TestEnv, assert_denied, audit_decisions, read_records};

// ---------------------------------------------------------------------------------------
// Helpers

/// The variable the proxy reads the OAuth client secret from (`client_secret_env`).
const SECRET_ENV: &str = "OIDC_CLIENT_SECRET";
const GMAIL: &str = "gmail.googleapis.com";
const GMAIL_PATH: &str = "/gmail/v1/users/me/messages";
const ISSUES: &str = "/repos/acme/web/issues";

/// A token no test produces by accident: `prefix` and 32 random hex digits.
fn canary(prefix: &str) -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).expect("random");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{hex}")
}

/// `secret` with a trailing newline (as editors leave it) in a 0600 file of the test dir.
fn secret_file(env: &TestEnv, name: &str, secret: &str) -> PathBuf {
    let path = env.dir.path().join(name);
    write_private(&path, format!("{secret}\n").as_bytes());
    path
}

/// `agentgate ARGS` on the env's state dir, with the env's config once it is written, off
/// the async workers.
async fn agentgate(env: &TestEnv, args: &[&str]) -> Output {
    let config = env.dir.path().join("agentgate.toml");
    let config = config.display().to_string();
    let envs: &[(&str, &str)] = if Path::new(&config).exists() {
        &[("AGENTGATE_CONFIG", &config)]
    } else {
        &[]
    };
    crate::support::cli::agentgate(&env.home(), args, envs).await
}

/// A static GitHub token (`vault set github --kind static`); returns the connection id.
async fn set_github_static(env: &TestEnv, token: &str) -> String {
    vault_set(env, "github", "static", &secret_file(env, "t", token), &[]).await
}

/// `vault set SERVICE --kind KIND --secret-file FILE EXTRA…`; returns the connection id.
async fn vault_set(
    env: &TestEnv,
    service: &str,
    kind: &str,
    file: &Path,
    extra: &[&str],
) -> String {
    let file = file.display().to_string();
    let mut args = vec![
        "vault",
        "set",
        service,
        "--kind",
        kind,
        "--secret-file",
        &file,
    ];
    args.extend_from_slice(extra);
    let stdout = ok(&agentgate(env, &args).await, "vault set");
    let id = stdout
        .strip_prefix("stored ")
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("vault set printed {stdout:?}"))
        .to_owned();
    assert!(
        id.starts_with("cred_") && id.len() > 5,
        "vault set printed {stdout:?}"
    );
    assert!(
        stdout.contains(&format!("for {service} (kind {kind},"))
            && stdout.contains("fingerprint hmac-sha256:"),
        "vault set printed {stdout:?}"
    );
    id
}

/// `vault list -o json`.
async fn vault_list(env: &TestEnv) -> Vec<Value> {
    let out = ok(
        &agentgate(env, &["vault", "list", "-o", "json"]).await,
        "vault list",
    );
    serde_json::from_str::<Value>(&out)
        .unwrap_or_else(|e| panic!("vault list -o json is not JSON ({e}): {out}"))
        .as_array()
        .unwrap_or_else(|| panic!("vault list -o json is not a list: {out}"))
        .clone()
}

/// GET https://HOST PATH through the proxy as the test agent, on a fresh tunnel
/// (HTTP/1.1), with extra request headers.
async fn get(proxy: &Proxy, host: &str, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let tls = raw::tunnel_to(proxy, host, b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let mut req = http::Request::get(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    raw::send_h1(&mut h1, req.body(Full::new(Bytes::new())).expect("request")).await
}

/// `n` GETs of https://HOST PATH at once: every tunnel is set up first, then all the
/// requests go out together.
async fn burst(proxy: &Proxy, host: &str, path: &str, n: usize) -> Vec<RawResponse> {
    let senders =
        join_all((0..n).map(|_| async {
            raw::h1_client(raw::tunnel_to(proxy, host, b"http/1.1").await).await
        }))
        .await;
    join_all(
        senders
            .into_iter()
            .map(|mut h1| async move { raw::send_h1(&mut h1, raw::get(path, host)).await }),
    )
    .await
}

/// What the upstream saw for `host` (by SNI), in order.
fn seen_at(env: &TestEnv, host: &str) -> Vec<Seen> {
    env.upstream
        .seen()
        .into_iter()
        .filter(|s| s.sni.as_deref() == Some(host))
        .collect()
}

/// The echo's `headers.authorization` (a JSON string or null).
fn echoed_authorization(resp: &RawResponse) -> Value {
    assert_eq!(resp.status, 200, "{:?} {}", resp.headers, resp.text());
    resp.json()["headers"]["authorization"].clone()
}

/// `Bearer ****…`: how the agent sees the echo of an injected `token`.
fn masked(scheme: &str, token: &str) -> String {
    format!("{scheme} {}", "*".repeat(token.len()))
}

/// The decision record with `request_id`, waiting for it to land.
async fn decision(proxy: &Proxy, request_id: &str) -> Value {
    let records =
        audit_decisions(proxy, |rs| rs.iter().any(|r| r["request_id"] == request_id)).await;
    records
        .into_iter()
        .find(|r| r["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no decision record for request {request_id}"))
}

/// The outcome record of `request_id` (written once the response body is done), waiting
/// up to 5 s for it.
async fn outcome(proxy: &Proxy, request_id: &str) -> Value {
    let db = proxy.home.join("audit.db");
    for _ in 0..50 {
        if let Some(r) = read_records(&db, "outcome")
            .into_iter()
            .find(|r| r["request_id"] == request_id)
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no outcome record for request {request_id}")
}

/// A refusal by the token gate: 503, `error`, and a reason mentioning `reason_has`.
fn token_refusal(resp: &RawResponse, error: &str, reason_has: &str) -> String {
    let body = assert_denied(resp, 503, "token");
    assert_eq!(body["error"], error, "{body}");
    let reason = body["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains(reason_has),
        "reason should mention {reason_has:?}: {body}"
    );
    reason
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read state dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            hits.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(path);
            }
        }
    }
    hits
}

/// The base config with `[vault.providers.test]` at `op` (client `agentgate`,
/// client_secret_basic, secret from [`SECRET_ENV`]).
fn with_provider(env: &TestEnv, op: &OidcProvider) -> ConfigBuilder {
    let p = "vault.providers.test";
    env.config()
        .set(p, "token_url", &toml_str(&op.token_url()))
        .set(p, "revoke_url", &toml_str(&op.revoke_url()))
        .set(p, "client_id", &toml_str(CLIENT_ID))
        .set(p, "client_secret_env", &toml_str(SECRET_ENV))
}

/// Writes `cfg`, stores a gmail `oauth` connection holding a fresh refresh token from `op`,
/// and starts the proxy. Returns it with that refresh token.
async fn start_with_gmail(env: &TestEnv, op: &OidcProvider, cfg: ConfigBuilder) -> (Proxy, String) {
    env.write_config(&cfg);
    let rt = op.refresh_token("alice", CLIENT_ID).await;
    let file = secret_file(env, "gmail.refresh", &rt);
    vault_set(env, "gmail", "oauth", &file, &["--provider", "test"]).await;
    let proxy = env.start_with_env(cfg, &[(SECRET_ENV, CLIENT_SECRET)]);
    (proxy, rt)
}

/// Writes `cfg` plus `[vault.auth0]` at `op` (client `agentgate-post`, client_secret_post),
/// stores an `auth0` github connection with a refresh token of alice's, and starts.
async fn start_with_auth0(env: &TestEnv, op: &OidcProvider, cfg: ConfigBuilder) -> Proxy {
    let a = "vault.auth0";
    let cfg = cfg
        .set(a, "token_url", &toml_str(&op.token_url()))
        .set(a, "revoke_url", &toml_str(&op.revoke_url()))
        .set(a, "client_id", &toml_str(POST_CLIENT_ID))
        .set(a, "client_secret_env", &toml_str(SECRET_ENV))
        .set(a, "client_auth", &toml_str("client_secret_post"));
    env.write_config(&cfg);
    let rt = op.refresh_token("alice", POST_CLIENT_ID).await;
    let file = secret_file(env, "auth0.refresh", &rt);
    vault_set(env, "github", "auth0", &file, &["--connection", "github"]).await;
    env.start_with_env(cfg, &[(SECRET_ENV, CLIENT_SECRET)])
}

fn request_id(resp: &RawResponse) -> String {
    resp.header("x-agentgate-request-id")
        .unwrap_or_else(|| panic!("no X-AgentGate-Request-Id in {:?}", resp.headers))
        .to_owned()
}

// ---------------------------------------------------------------------------------------
// Static tokens

/// A static token stored with `vault set` reaches api.github.com as `Bearer <token>` from
/// curl, Python requests and Node fetch, in place of the agent's own Authorization and Cookie
/// (curl also sends `Connection: authorization`, which must not strip the injected header).
/// The echo the agent reads has the token masked (counted as `redacted` in the outcome
/// record), the decision record names the credential by id and keyed fingerprint, and the
/// token appears in no proxy log line, no file of the state dir (audit.db and its WAL,
/// vault.db), no `vault list` output and no `agentgate env` output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_token_is_injected_for_real_clients_and_never_shown() {
    let env = TestEnv::new().await;
    let token = canary("ghp_e2eCanary");
    let file = secret_file(&env, "github.token", &token);
    // Before the first start: the CLI creates the state dir and the vault key.
    let id = vault_set(&env, "github", "static", &file, &[]).await;
    let proxy = env.start(env.config().set("log", "level", &toml_str("debug")));

    let agent_headers = [
        ("Authorization", "token agent-own"),
        ("Cookie", "session=agent-cookie"),
    ];
    let url = |client: &str| format!("https://api.github.com{ISSUES}?client={client}");
    let by_curl = from_curl(
        &curl(
            &proxy,
            &[
                "--http1.1",
                "-H",
                "Authorization: token agent-own",
                "-H",
                "Cookie: session=agent-cookie",
                "-H",
                "Connection: authorization",
                &url("curl"),
            ],
        )
        .await,
    );
    let header_args: Vec<String> = agent_headers
        .iter()
        .flat_map(|(k, v)| ["--header".to_owned(), format!("{k}:{v}")])
        .collect();
    let header_args: Vec<&str> = header_args.iter().map(String::as_str).collect();
    let by_requests =
        from_client(&python("requests", &url("requests"), &proxy, &header_args).await);
    let by_node = from_client(&node_fetch(&url("node"), &proxy, &header_args).await);

    let expected = format!("Bearer {token}");
    let seen = seen_at(&env, "api.github.com");
    assert_eq!(seen.len(), 3, "{seen:?}");
    for s in &seen {
        assert_eq!(s.authorization.as_deref(), Some(expected.as_str()), "{s:?}");
        assert_eq!(
            s.cookie, None,
            "the agent's Cookie reached the upstream: {s:?}"
        );
    }

    let mut fingerprint = String::new();
    for (client, resp) in [
        ("curl", &by_curl),
        ("requests", &by_requests),
        ("node", &by_node),
    ] {
        assert_eq!(
            echoed_authorization(resp),
            masked("Bearer", &token),
            "{client}"
        );
        let echo = resp.json();
        assert_eq!(echo["query"], format!("client={client}"));
        assert!(echo["headers"]["cookie"].is_null(), "{client}: {echo}");
        assert!(
            !resp.text().contains(&token),
            "{client} saw the token: {}",
            resp.text()
        );
        let rid = request_id(resp);
        let out = outcome(&proxy, &rid).await;
        assert_eq!(out["redacted"], 1, "{client}: {out}");
        let d = decision(&proxy, &rid).await;
        let cred = &d["credential"];
        assert_eq!(cred["id"], id.as_str(), "{client}: {d}");
        assert_eq!(cred["kind"], "static", "{client}: {d}");
        assert!(cred["expires"].is_null(), "{client}: {d}");
        let fp = cred["fingerprint"].as_str().unwrap_or_default();
        let hex = fp.strip_prefix("hmac-sha256:").unwrap_or_default();
        assert!(
            hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{client}: fingerprint {fp:?}"
        );
        fingerprint = fp.to_owned();
    }

    let list = vault_list(&env).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["service"], "github");
    assert_eq!(list[0]["kind"], "static");
    assert_eq!(list[0]["origin"], "api.github.com");
    assert_eq!(list[0]["fingerprint"], fingerprint.as_str());

    // Where the token must not be: CLI output, the agent's environment, logs, state files.
    let json_list = ok(
        &agentgate(&env, &["vault", "list", "-o", "json"]).await,
        "vault list",
    );
    let text_list = ok(&agentgate(&env, &["vault", "list"]).await, "vault list");
    assert!(
        text_list.contains(&id) && text_list.contains(&fingerprint),
        "{text_list}"
    );
    ok(
        &agentgate(&env, &["agents", "register", "bot", "--owner", "alice"]).await,
        "agents register",
    );
    let agent_env = ok(&agentgate(&env, &["env", "--agent", "bot"]).await, "env");
    assert!(agent_env.contains("HTTPS_PROXY"), "{agent_env}");
    for (what, text) in [
        ("vault list -o json", &json_list),
        ("vault list", &text_list),
        ("agentgate env", &agent_env),
        ("proxy stderr", &proxy.stderr()),
        ("proxy stdout", &proxy.stdout_lines().join("\n")),
    ] {
        assert!(
            !text.contains(&token),
            "the token appears in {what}:\n{text}"
        );
    }
    let audit_db = proxy.home.join("audit.db");
    assert!(
        !files_containing(&proxy.home, fingerprint.as_bytes()).is_empty(),
        "the credential's fingerprint is in no state file (is the audit log readable?)"
    );
    assert!(audit_db.exists() && proxy.home.join("vault.db").exists());
    let leaks = files_containing(&proxy.home, token.as_bytes());
    assert!(
        leaks.is_empty(),
        "the token is stored in clear in {leaks:?}"
    );
}

/// `--scheme token` injects `Authorization: token <token>` (GitHub's classic form), and the
/// echo is masked as `token ****…`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheme_token_is_injected_as_token() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let token = canary("ghp_scheme");
    let file = secret_file(&env, "github.token", &token);
    // While running: in force when the command returns.
    vault_set(&env, "github", "static", &file, &["--scheme", "token"]).await;

    let resp = get(&proxy, "api.github.com", ISSUES, &[]).await;
    assert_eq!(echoed_authorization(&resp), masked("token", &token));
    let seen = seen_at(&env, "api.github.com");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].authorization, Some(format!("token {token}")));
}

/// With a github connection stored, a request to slack.com (no connection) goes out with no
/// Authorization and no Cookie at all, though the agent sent both; so does a cleartext
/// `http://api.github.com` request, which never gets a credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_connection_for_the_origin_means_no_authorization() {
    let env = TestEnv::new().await;
    let plain = env
        .extra_upstream(crate::support::upstream::Mode::Plain)
        .await;
    let cfg = env
        .config()
        .set("egress", "allow_ports", "[443, 80]")
        .resolve("api.github.com:80", plain.addr);
    let proxy = env.start(cfg);
    let token = canary("ghp_other");
    set_github_static(&env, &token).await;

    let agent_headers = [
        ("authorization", "Bearer xoxb-agent-own"),
        ("cookie", "d=agent-cookie"),
    ];
    let resp = get(&proxy, "slack.com", "/echo?to=slack", &agent_headers).await;
    assert!(echoed_authorization(&resp).is_null(), "{}", resp.text());
    assert!(
        resp.json()["headers"]["cookie"].is_null(),
        "{}",
        resp.text()
    );
    let seen = seen_at(&env, "slack.com");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].authorization, None);
    assert_eq!(seen[0].cookie, None);
    let d = decision(&proxy, &request_id(&resp)).await;
    assert_eq!(d["effect"], "allow", "{d}");
    assert!(d.get("credential").is_none(), "{d}");

    // Cleartext to the github host: the connection's origin is https only.
    let mut s = raw::tcp(proxy.proxy_addr).await;
    let req = format!(
        "GET http://api.github.com/echo?plain=1 HTTP/1.1\r\nHost: api.github.com\r\n\
         Proxy-Authorization: {}\r\nAuthorization: token agent-own\r\n\r\n",
        crate::support::agent::bearer()
    );
    let resp = raw::exchange(&mut s, req.as_bytes())
        .await
        .expect("answer to the cleartext request");
    assert!(echoed_authorization(&resp).is_null(), "{}", resp.text());
    let plain_seen = plain.seen();
    assert_eq!(plain_seen.len(), 1, "{plain_seen:?}");
    assert_eq!(plain_seen[0].authorization, None);
    assert!(seen_at(&env, "api.github.com").is_empty());
}

/// `curl -L` through a redirect from api.github.com to slack.com: the api.github.com request
/// carries the github credential, the slack.com one carries nothing (curl is even told to
/// resend the agent's own Authorization to the new host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_to_another_origin_carries_no_credential() {
    let env = TestEnv::new().await;
    let token = canary("ghp_redirect");
    set_github_static(&env, &token).await;
    let proxy = env.start_default();

    let out = curl(
        &proxy,
        &[
            "-L",
            "--location-trusted",
            "-H",
            "Authorization: token agent-own",
            "https://api.github.com/redirect?to=https://slack.com/echo",
        ],
    )
    .await;
    let resp = from_curl(&out);
    assert!(echoed_authorization(&resp).is_null(), "{}", resp.text());
    assert_eq!(resp.json()["sni"], "slack.com");

    let github = seen_at(&env, "api.github.com");
    assert_eq!(github.len(), 1, "{github:?}");
    assert_eq!(github[0].path, "/redirect");
    assert_eq!(github[0].authorization, Some(format!("Bearer {token}")));
    let slack = seen_at(&env, "slack.com");
    assert_eq!(slack.len(), 1, "{slack:?}");
    assert_eq!(slack[0].path, "/echo");
    assert_eq!(slack[0].authorization, None, "{slack:?}");
}

/// `vault rm github` while the proxy runs: the very next request carries no credential, and
/// the change is in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_rm_while_running_stops_injection() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let token = canary("ghp_rm");
    let id = set_github_static(&env, &token).await;

    let before = get(&proxy, "api.github.com", ISSUES, &[]).await;
    assert_eq!(echoed_authorization(&before), masked("Bearer", &token));

    let out = ok(
        &agentgate(&env, &["vault", "rm", "github"]).await,
        "vault rm",
    );
    assert!(out.contains("removed 1"), "{out}");
    let after = get(
        &proxy,
        "api.github.com",
        ISSUES,
        &[("authorization", "token agent-own")],
    )
    .await;
    assert!(echoed_authorization(&after).is_null(), "{}", after.text());

    let seen = seen_at(&env, "api.github.com");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].authorization, Some(format!("Bearer {token}")));
    assert_eq!(seen[1].authorization, None);
    assert!(vault_list(&env).await.is_empty());
    let d = decision(&proxy, &request_id(&after)).await;
    assert!(d.get("credential").is_none(), "{d}");
    let changes: Vec<Value> = read_records(&proxy.home.join("audit.db"), "admin")
        .into_iter()
        .filter(|r| r["event"] == "vault_changed")
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0]["detail"]["subject"], format!("set {id} github"));
    assert_eq!(changes[0]["detail"]["connections"], 1, "{changes:?}");
    assert_eq!(changes[1]["detail"]["subject"], "rm github", "{changes:?}");
    assert_eq!(changes[1]["detail"]["connections"], 0, "{changes:?}");
}

// ---------------------------------------------------------------------------------------
// OAuth refresh and Auth0 Token Vault

/// An `oauth` connection: 16 concurrent requests share one refresh (single-flight), so the
/// provider sees one refresh grant and every request the same access token. Once it expires
/// (3 s, refresh_skew 1 s), 16 more share exactly one more refresh, made with the rotated
/// refresh token the vault stored (a reuse of the first would fail at the provider and revoke
/// the grant), and carry a new access token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_refresh_is_single_flight_and_stores_the_rotated_token() {
    let env = TestEnv::new().await;
    let op = OidcProvider::start(3).await;
    let cfg = with_provider(&env, &op).set("vault", "refresh_skew", &toml_str("1s"));
    let (proxy, rt) = start_with_gmail(&env, &op, cfg).await;
    let stored_fp = vault_list(&env).await[0]["fingerprint"].clone();

    let first = burst(&proxy, GMAIL, GMAIL_PATH, 16).await;
    let stats = op.stats().await;
    assert_eq!(stats["refresh_grants"], 1, "{stats}");
    assert_eq!(stats["refresh_failures"], 0, "{stats}");
    assert_eq!(stats["token_requests"], 1, "{stats}");
    let access1 = stats["issued_access_tokens"][0]
        .as_str()
        .expect("issued access token")
        .to_owned();
    for r in &first {
        assert_eq!(echoed_authorization(r), masked("Bearer", &access1));
    }
    let seen = seen_at(&env, GMAIL);
    assert_eq!(seen.len(), 16);
    for s in &seen {
        assert_eq!(s.authorization, Some(format!("Bearer {access1}")), "{s:?}");
    }
    assert!(
        !op.active(&rt).await,
        "the first refresh did not consume the stored token"
    );
    let rotated_fp = vault_list(&env).await[0]["fingerprint"].clone();
    assert_ne!(
        rotated_fp, stored_fp,
        "the rotated refresh token was not stored"
    );

    let d = decision(&proxy, &request_id(&first[0])).await;
    assert_eq!(d["credential"]["kind"], "oauth", "{d}");
    assert!(d["credential"]["expires"].as_i64().is_some(), "{d}");

    // Past expiry (3 s): one more refresh, with the rotated refresh token.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let second = burst(&proxy, GMAIL, GMAIL_PATH, 16).await;
    let stats = op.stats().await;
    assert_eq!(stats["refresh_grants"], 2, "{stats}");
    assert_eq!(stats["refresh_failures"], 0, "{stats}");
    assert_eq!(stats["token_requests"], 2, "{stats}");
    let access2 = stats["issued_access_tokens"][1]
        .as_str()
        .expect("second access token")
        .to_owned();
    assert_ne!(access2, access1);
    for r in &second {
        assert_eq!(echoed_authorization(r), masked("Bearer", &access2));
    }
    let seen = seen_at(&env, GMAIL);
    assert_eq!(seen.len(), 32);
    for s in &seen[16..] {
        assert_eq!(s.authorization, Some(format!("Bearer {access2}")), "{s:?}");
    }
    assert_ne!(vault_list(&env).await[0]["fingerprint"], rotated_fp);
}

/// `[vault.auth0]` with client_secret_post: an `auth0` connection for the `github` Auth0
/// connection exchanges the user's refresh token at Token Vault, and api.github.com receives
/// the federated access token (`fed_github_…`). With no scope from policy, none is asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth0_token_vault_exchange_injects_the_federated_token() {
    let env = TestEnv::new().await;
    let op = OidcProvider::start(3600).await;
    let proxy = start_with_auth0(&env, &op, env.config()).await;

    let resp = get(&proxy, "api.github.com", ISSUES, &[]).await;
    let stats = op.stats().await;
    assert_eq!(stats["exchanges"], 1, "{stats}");
    let requests = stats["exchange_requests"]
        .as_array()
        .expect("exchange_requests");
    assert_eq!(requests.len(), 1, "{stats}");
    assert_eq!(requests[0]["connection"], "github", "{stats}");
    assert!(requests[0]["scope"].is_null(), "{stats}");
    let fed = stats["issued_access_tokens"][0]
        .as_str()
        .expect("fed token");
    assert!(fed.starts_with("fed_github_"), "{stats}");
    assert_eq!(echoed_authorization(&resp), masked("Bearer", fed));
    let seen = seen_at(&env, "api.github.com");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].authorization, Some(format!("Bearer {fed}")));
    let d = decision(&proxy, &request_id(&resp)).await;
    assert_eq!(d["credential"]["kind"], "auth0", "{d}");
}

/// Scopes named by the policy decision down-scope the Auth0 exchange: `scope=repo`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_scopes_are_requested_in_the_auth0_exchange() {
    let env = TestEnv::new().await;
    let op = OidcProvider::start(3600).await;
    let policy = env.dir.path().join("scopes-policy");
    std::fs::create_dir_all(&policy).expect("policy dir");
    std::fs::write(
        policy.join("allow.rego"),
        "package agentgate\n\ndecision := {\"effect\": \"allow\", \"reasons\": [\"t\"], \"scopes\": [\"repo\"]}\n",
    )
    .expect("write policy");
    let cfg = env
        .config()
        .set("policy", "dir", &toml_str(&policy.display().to_string()));
    let proxy = start_with_auth0(&env, &op, cfg).await;

    let resp = get(&proxy, "api.github.com", ISSUES, &[]).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let stats = op.stats().await;
    assert_eq!(stats["exchanges"], 1, "{stats}");
    assert_eq!(
        stats["exchange_requests"][0]["connection"], "github",
        "{stats}"
    );
    assert_eq!(stats["exchange_requests"][0]["scope"], "repo", "{stats}");
    let d = decision(&proxy, &request_id(&resp)).await;
    assert_eq!(d["scopes"], serde_json::json!(["repo"]), "{d}");
}

// ---------------------------------------------------------------------------------------
// Token-endpoint faults

/// The token endpoint down (503): the request gets 503 `token_unavailable` from the token
/// gate; a second request within `vault.failure_backoff` (2 s) gets the same answer without
/// calling the endpoint again; after the backoff, with the endpoint back, the request goes
/// through with a fresh access token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_is_503_backed_off_then_recovers() {
    let env = TestEnv::new().await;
    let op = OidcProvider::start(3600).await;
    let cfg = with_provider(&env, &op).set("vault", "failure_backoff", &toml_str("2s"));
    let (proxy, _) = start_with_gmail(&env, &op, cfg).await;

    op.fault(Some("down"), 0).await;
    let failed_at = Instant::now();
    let first = get(&proxy, GMAIL, GMAIL_PATH, &[]).await;
    let reason = token_refusal(&first, "token_unavailable", "503");
    assert_eq!(op.stats().await["token_requests"], 1);
    let second = get(&proxy, GMAIL, GMAIL_PATH, &[]).await;
    assert!(
        failed_at.elapsed() < Duration::from_secs(2),
        "the second request came after the backoff ({:?}); the test proves nothing",
        failed_at.elapsed()
    );
    assert_eq!(token_refusal(&second, "token_unavailable", "503"), reason);
    assert_eq!(
        op.stats().await["token_requests"],
        1,
        "a request within failure_backoff called the token endpoint again"
    );
    assert!(
        seen_at(&env, GMAIL).is_empty(),
        "a refused request reached the upstream"
    );

    op.fault(None, 0).await;
    tokio::time::sleep(Duration::from_millis(2300).saturating_sub(failed_at.elapsed())).await;
    let third = get(&proxy, GMAIL, GMAIL_PATH, &[]).await;
    let stats = op.stats().await;
    assert_eq!(stats["token_requests"], 2, "{stats}");
    assert_eq!(stats["refresh_grants"], 1, "{stats}");
    let access = stats["issued_access_tokens"][0]
        .as_str()
        .expect("access token");
    assert_eq!(echoed_authorization(&third), masked("Bearer", access));
    let seen = seen_at(&env, GMAIL);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].authorization, Some(format!("Bearer {access}")));
}

/// A token endpoint slower than `vault.fetch_timeout` (1 s; it answers after 3 s): the
/// request gets 503 `token_unavailable` well before the endpoint would have answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_token_endpoint_is_cut_off_at_fetch_timeout() {
    let env = TestEnv::new().await;
    let op = OidcProvider::start(3600).await;
    let cfg = with_provider(&env, &op).set("vault", "fetch_timeout", &toml_str("1s"));
    let (proxy, _) = start_with_gmail(&env, &op, cfg).await;

    op.fault(Some("slow"), 3000).await;
    let started = Instant::now();
    let resp = get(&proxy, GMAIL, GMAIL_PATH, &[]).await;
    let took = started.elapsed();
    token_refusal(&resp, "token_unavailable", "did not answer within 1s");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "the refusal came after {took:?}; fetch_timeout is 1s, the endpoint answers after 3s"
    );
    assert!(seen_at(&env, GMAIL).is_empty());
}

/// A token endpoint answering garbage (200 `not json{`), then one handing out an already
/// expired token (`expires_in: 0`): each request gets 503 `token_unavailable` saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_expired_token_answers_are_503() {
    let env = TestEnv::new().await;
    let op = OidcProvider::start(3600).await;
    let cfg = with_provider(&env, &op).set("vault", "failure_backoff", &toml_str("1s"));
    let (proxy, _) = start_with_gmail(&env, &op, cfg).await;

    op.fault(Some("garbage"), 0).await;
    let resp = get(&proxy, GMAIL, GMAIL_PATH, &[]).await;
    token_refusal(&resp, "token_unavailable", "not a token response");

    tokio::time::sleep(Duration::from_millis(1200)).await;
    op.fault(Some("expired"), 0).await;
    let resp = get(&proxy, GMAIL, GMAIL_PATH, &[]).await;
    token_refusal(&resp, "token_unavailable", "expired");
    let stats = op.stats().await;
    assert_eq!(stats["token_requests"], 2, "{stats}");
    assert!(
        seen_at(&env, GMAIL).is_empty(),
        "a refused request reached the upstream"
    );
    let expired = stats["issued_access_tokens"].as_array().expect("issued");
    assert!(expired.is_empty(), "{stats}");
}

// ---------------------------------------------------------------------------------------
// Vault key

/// vault.db holds a secret: started with another (valid) vault key, the proxy refuses to
/// start ("does not match"); with the key file gone it refuses naming the file, and does not
/// quietly make a new key. With the right key back, it starts and injects the credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_vault_key_stops_startup() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let token = canary("ghp_key");
    set_github_static(&env, &token).await;
    let resp = get(&proxy, "api.github.com", ISSUES, &[]).await;
    assert_eq!(echoed_authorization(&resp), masked("Bearer", &token));
    proxy.stop();

    let key_path = env.home().join("vault.key");
    let original = std::fs::read(&key_path).expect("vault.key");
    let config = env.write_config(&env.config());
    let launch = || proxy::launch(&env.home(), &config, &[]);

    // (a) another valid key.
    let mut other = [0u8; 32];
    aws_lc_rs::rand::fill(&mut other).expect("random");
    let other = format!(
        "{}\n",
        base64::engine::general_purpose::STANDARD.encode(other)
    );
    write_private(&key_path, other.as_bytes());
    match launch() {
        Launch::Ready(_) => {
            panic!("the proxy started with a vault key that does not match vault.db")
        }
        Launch::Exited { status, stderr } => {
            assert!(!status.success(), "{status}");
            assert!(stderr.contains("does not match"), "stderr:\n{stderr}");
        }
    }
    assert_eq!(
        std::fs::read(&key_path).expect("vault.key"),
        other.as_bytes()
    );

    // (b) no key at all.
    std::fs::remove_file(&key_path).expect("remove vault.key");
    match launch() {
        Launch::Ready(_) => panic!("the proxy started without the vault key of a non-empty vault"),
        Launch::Exited { status, stderr } => {
            assert!(!status.success(), "{status}");
            assert!(
                stderr.contains(&key_path.display().to_string()),
                "stderr should name {}:\n{stderr}",
                key_path.display()
            );
        }
    }
    assert!(
        !key_path.exists(),
        "a new vault.key was made while vault.db holds secrets"
    );

    // The right key again: nothing was lost.
    write_private(&key_path, &original);
    let proxy = env.start_default();
    let resp = get(&proxy, "api.github.com", ISSUES, &[]).await;
    assert_eq!(echoed_authorization(&resp), masked("Bearer", &token));
    let seen = seen_at(&env, "api.github.com");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| s.authorization == Some(format!("Bearer {token}")))
    );
}
