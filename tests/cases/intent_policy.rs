//! Gates 2 and 3 — intent and policy: real clients (curl, Python requests/httpx, Node fetch)
//! through the proxy with the shipped default policy, the AuthZEN tuple and decision in the
//! audit record, refusals the intent gate makes when a request's meaning is ambiguous or
//! unreadable, observe mode, hot reload (a broken policy keeps the last good one), the
//! `policy test` and `explain` CLIs, and the AuthZEN PDP on the admin port.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::support::admin::{AdminResp, curl as admin};
use crate::support::clients::{curl, from_client, from_curl, node_fetch, python};
use crate::support::pattern::sha256_hex;
use crate::support::proxy::{Proxy, cli, toml_str};
use crate::support::raw::{self, RawResponse};
use crate::support::{TestEnv, assert_denied, audit_decisions};

// ---------------------------------------------------------------------------------------
// Helpers

/// The shipped default policy, with a generous evaluation bound: the default 100 ms is
/// ample for a release build, but the debug build's regorus on a loaded 2-core machine
/// (every test's proxy and clients in parallel) can pass it, and a timed-out evaluation is
/// a deny with another reason. The time bound is not what these tests are about.
fn default_policy(env: &TestEnv) -> crate::support::proxy::ConfigBuilder {
    env.with_default_policy()
        .set("policy", "eval_timeout", &toml_str("5s"))
        // Escalations answer at once (pending) instead of holding the request.
        .set("consent", "mode", &toml_str("async"))
}

fn is_hex64(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The reasons of a record or decision, as one string for substring checks.
fn reasons(v: &Value) -> String {
    v.as_array()
        .unwrap_or_else(|| panic!("reasons is not a list: {v}"))
        .iter()
        .map(|r| {
            r.as_str()
                .unwrap_or_else(|| panic!("reason not a string: {r}"))
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The (last) decision record of `method path`, waiting for it to land.
async fn decision_for(proxy: &Proxy, method: &str, path: &str) -> Value {
    let matches = |r: &&Value| r["method"] == method && r["path"] == path;
    let records = audit_decisions(proxy, |rs| rs.iter().any(|r| matches(&r))).await;
    records.iter().rfind(matches).cloned().unwrap_or_else(|| {
        panic!(
            "no decision record for {method} {path}; records:\n{}",
            serde_json::to_string_pretty(&records).unwrap()
        )
    })
}

/// Asserts a refusal by `gate` with `status`, error code `error` and a reason mentioning
/// `reason_has`; returns the JSON body.
fn refused(resp: &RawResponse, status: u16, gate: &str, error: &str, reason_has: &str) -> Value {
    let b = assert_denied(resp, status, gate);
    assert_eq!(b["error"], error, "{b}");
    assert!(
        b["reason"].as_str().unwrap_or("").contains(reason_has),
        "reason should mention {reason_has:?}: {b}"
    );
    b
}

/// Every record of `kind` in the proxy's audit log (read-only, works while it runs).
fn audit_records(proxy: &Proxy, kind: &str) -> Vec<Value> {
    crate::support::read_records(&proxy.home.join("audit.db"), kind)
}

/// Writes `name` in `dir` atomically (a temp name the policy loader ignores, then rename),
/// so the reloader never sees half a file.
fn write_atomic(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!("{name}.partial"));
    std::fs::write(&tmp, text).expect("write temp policy file");
    std::fs::rename(&tmp, dir.join(name)).expect("rename policy file");
}

fn write_file(env: &TestEnv, name: &str, bytes: &[u8]) -> PathBuf {
    let path = env.dir.path().join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

/// A GitHub read the default policy allows, over a fresh tunnel: the equivalent of
/// `assert_serves` for proxies under the default policy (where `/echo` is not an operation).
async fn get_issues(proxy: &Proxy) -> RawResponse {
    let tls = raw::tunnel_to(proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    raw::send_h1(
        &mut h1,
        raw::get("/repos/acme/web/issues", "api.github.com"),
    )
    .await
}

async fn assert_still_serves(proxy: &Proxy) {
    let resp = get_issues(proxy).await;
    assert_eq!(
        resp.status,
        200,
        "proxy stopped serving an allowed read: {}",
        resp.text()
    );
    assert_eq!(resp.json()["path"], "/repos/acme/web/issues");
}

/// Polls `probe` (100 ms apart, 15 s at most) until `done` holds; returns the last value.
async fn poll<T, F, Fut>(what: &str, mut probe: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
    T: std::fmt::Debug,
{
    let mut last = probe().await;
    for _ in 0..150 {
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = probe().await;
    }
    assert!(
        done(&last),
        "{what}: not reached within 15 s; last {last:?}"
    );
    last
}

/// `agentgate ARGS` with `AGENTGATE_HOME=home`.
fn agentgate(home: &Path, args: &[&str]) -> Output {
    // Debug builds evaluate policies far slower than release; the bound is not under test.
    cli(home, args, &[("AGENTGATE_POLICY_EVAL_TIMEOUT", "5s")])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A Gmail API send body: `{"raw": base64url(RFC 5322 message)}`.
fn gmail_send_body(to: &str, cc: &str) -> Vec<u8> {
    let msg = format!(
        "From: bot@example.com\r\nTo: {to}\r\nCc: {cc}\r\nSubject: quarterly numbers\r\n\r\nsee attached\r\n"
    );
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(msg);
    json!({ "raw": raw }).to_string().into_bytes()
}

// ---------------------------------------------------------------------------------------
// 1-3: allow, deny, escalate under the default policy

/// A GitHub read goes through under the shipped default policy, and its decision record
/// carries the AuthZEN tuple and the decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_allows_a_github_read_and_records_the_tuple() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env));
    assert!(
        proxy.home.join("policies/default.rego").is_file(),
        "the default policy was not seeded into <state>/policies"
    );

    let out = curl(
        &proxy,
        &["https://api.github.com/repos/acme/web/issues?state=open"],
    )
    .await;
    assert_eq!(out.status, 200, "{:?}", String::from_utf8_lossy(&out.body));
    let echo = out.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/repos/acme/web/issues");
    assert_eq!(echo["query"], "state=open");
    assert_eq!(out.header("x-agentgate-denied-by"), None);

    let r = decision_for(&proxy, "GET", "/repos/acme/web/issues").await;
    assert_eq!(r["action"]["name"], "github.issues.list-for-repo", "{r:#}");
    assert_eq!(r["action"]["properties"]["class"], "read", "{r:#}");
    assert_eq!(r["action"]["properties"]["service"], "github", "{r:#}");
    assert_eq!(r["action"]["properties"]["known"], true, "{r:#}");
    assert_eq!(r["resource"]["type"], "github.repo", "{r:#}");
    assert_eq!(r["resource"]["id"], "acme/web", "{r:#}");
    assert_eq!(
        r["resource"]["properties"],
        json!({"owner": "acme", "repo": "web"}),
        "{r:#}"
    );
    assert_eq!(r["context"]["host"], "api.github.com", "{r:#}");
    assert_eq!(r["context"]["path"], "/repos/acme/web/issues", "{r:#}");
    assert_eq!(r["context"]["query"], json!({"state": "open"}), "{r:#}");
    assert!(r["context"]["time"].is_string(), "{r:#}");
    assert_eq!(r["policy_effect"], "allow", "{r:#}");
    assert_eq!(r["mode"], "enforce", "{r:#}");
    assert_eq!(r["effect"], "allow", "{r:#}");
    assert!(r["gate"].is_null(), "{r:#}");
    assert!(is_hex64(&r["policy_hash"]), "policy_hash: {r:#}");
    assert!(
        reasons(&r["reasons"]).contains("read-allowed"),
        "reasons should name the rule: {r:#}"
    );
    assert_eq!(
        r["agent"],
        format!(
            "spiffe://{}/agent/{}",
            crate::support::agent::TRUST_DOMAIN,
            crate::support::agent::NAME
        )
    );

    // The hash recorded is the hash of the policy in force.
    let status = admin(
        &proxy,
        "GET",
        "/api/v1/policy",
        Some(&proxy.admin_token()),
        None,
        None,
    )
    .await;
    assert_eq!(status.status, 200, "{:?}", status);
    assert_eq!(status.body["hash"], r["policy_hash"], "{:?}", status);
    assert_eq!(status.body["mode"], "enforce");
    assert!(status.body["last_error"].is_null(), "{:?}", status);
    let files = status.body["files"].to_string();
    assert!(
        files.contains("default.rego") && files.contains("settings.json"),
        "{files}"
    );
}

/// Deleting a repository is refused by policy with a JSON reason; nothing reaches GitHub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_denies_deleting_a_repository() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env));

    let out = python(
        "requests",
        "https://api.github.com/repos/acme/web",
        &proxy,
        &["--method", "DELETE"],
    )
    .await;
    let body = assert_denied(&from_client(&out), 403, "policy");
    assert_eq!(body["error"], "policy_denied", "{body}");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("github.repos.delete") && reason.contains("delete-class"),
        "reason should say what was denied and by which rule: {reason}"
    );
    assert!(
        env.upstream.requests().is_empty(),
        "a denied request reached the upstream: {:?}",
        env.upstream.requests()
    );

    let r = decision_for(&proxy, "DELETE", "/repos/acme/web").await;
    assert_eq!(r["effect"], "deny", "{r:#}");
    assert_eq!(r["gate"], "policy", "{r:#}");
    assert_eq!(r["status"], 403, "{r:#}");
    assert_eq!(r["error"], "policy_denied", "{r:#}");
    assert_eq!(r["policy_effect"], "deny", "{r:#}");
    assert_eq!(r["action"]["name"], "github.repos.delete", "{r:#}");
    assert_eq!(r["action"]["properties"]["class"], "delete", "{r:#}");
    assert_eq!(r["resource"]["id"], "acme/web", "{r:#}");
    assert!(is_hex64(&r["policy_hash"]), "{r:#}");
    assert!(
        reasons(&r["reasons"]).contains("delete-class"),
        "the record keeps the policy's reasons: {r:#}"
    );
}

/// A write needs a person's approval: in async mode the consent gate answers at once with
/// a pending consent (and the policy's reason), and the record says policy escalated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_escalate_to_a_pending_consent() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env));

    let out = curl(
        &proxy,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"title":"Flaky test","body":"seen twice today"}"#,
            "https://api.github.com/repos/acme/web/issues",
        ],
    )
    .await;
    let body = assert_denied(&from_curl(&out), 403, "consent");
    assert_eq!(body["error"], "consent_pending", "{body}");
    assert!(
        body["consent_id"]
            .as_str()
            .is_some_and(|c| c.starts_with("cns_")),
        "{body}"
    );
    assert_eq!(body["status"], "pending", "{body}");
    assert_eq!(out.header("retry-after"), Some("5"), "{:?}", out.headers);
    assert!(
        body["reason"].as_str().unwrap().contains("write-escalates"),
        "the refusal should carry the policy's reason: {body}"
    );
    assert!(
        env.upstream.requests().is_empty(),
        "an escalated request reached the upstream: {:?}",
        env.upstream.requests()
    );

    let r = decision_for(&proxy, "POST", "/repos/acme/web/issues").await;
    assert_eq!(r["policy_effect"], "escalate", "{r:#}");
    assert_eq!(r["effect"], "deny", "{r:#}");
    assert_eq!(r["gate"], "consent", "{r:#}");
    assert_eq!(r["error"], "consent_pending", "{r:#}");
    assert_eq!(r["action"]["name"], "github.issues.create", "{r:#}");
    assert_eq!(r["action"]["properties"]["class"], "write", "{r:#}");
    assert!(reasons(&r["reasons"]).contains("write-escalates"), "{r:#}");
}

// ---------------------------------------------------------------------------------------
// 4: requests whose meaning is hidden, ambiguous or unreadable

/// Each gets a decision with a reason — never an allow, never a crash — and none reaches
/// the upstream; afterwards the proxy still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_and_unreadable_requests_are_refused_with_reasons() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env));

    // Encoded slash: which repository is meant depends on who decodes it.
    let out = curl(&proxy, &["https://api.github.com/repos/acme%2Fweb/issues"]).await;
    refused(&from_curl(&out), 400, "intent", "ambiguous_path", "%2F");

    // Dot segments (curl would resolve them itself without --path-as-is).
    let out = curl(
        &proxy,
        &[
            "--path-as-is",
            "https://api.github.com/repos/acme/web/../other/issues",
        ],
    )
    .await;
    refused(
        &from_curl(&out),
        400,
        "intent",
        "ambiguous_path",
        "dot segment",
    );

    // A Slack token in the query and in a form body: credentials are AgentGate's job.
    let out = curl(
        &proxy,
        &["https://slack.com/api/chat.postMessage?channel=C1&text=hi&token=xoxb-e2e-secret-query"],
    )
    .await;
    refused(
        &from_curl(&out),
        403,
        "intent",
        "credential_in_request",
        "query",
    );
    let out = curl(
        &proxy,
        &[
            "-d",
            "channel=C1&token=xoxb-e2e-secret-body&text=hi",
            "https://slack.com/api/chat.postMessage",
        ],
    )
    .await;
    refused(
        &from_curl(&out),
        403,
        "intent",
        "credential_in_request",
        "body",
    );

    // A GraphQL document hiding a deleting mutation between two queries (httpx).
    let hidden = write_file(
        &env,
        "hidden.json",
        json!({
            "query": "query A { viewer { login } }\nmutation B { deleteRef(input: {refId: \"R_1\"}) { clientMutationId } }\nquery C { repository(owner: \"acme\", name: \"web\") { id } }",
            "operationName": "A",
        })
        .to_string()
        .as_bytes(),
    );
    let graphql = |file: PathBuf| {
        let proxy = &proxy;
        async move {
            let file = file.display().to_string();
            python(
                "httpx",
                "https://api.github.com/graphql",
                proxy,
                &[
                    "--method",
                    "POST",
                    "--header",
                    "Content-Type:application/json",
                    "--data-file",
                    &file,
                ],
            )
            .await
        }
    };
    let b = assert_denied(&from_client(&graphql(hidden).await), 403, "policy");
    assert_eq!(b["error"], "policy_denied", "{b}");
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("github.graphql.mutation.deleteRef"),
        "{b}"
    );

    // A GraphQL document that does not parse.
    let broken = write_file(
        &env,
        "broken.json",
        json!({"query": "query { viewer { "}).to_string().as_bytes(),
    );
    refused(
        &from_client(&graphql(broken).await),
        400,
        "intent",
        "unreadable_body",
        "GraphQL",
    );

    // A request that asks to be treated as another method is refused as ambiguous
    // (Python requests), whatever the override says.
    let out = python(
        "requests",
        "https://api.github.com/repos/acme/web",
        &proxy,
        &[
            "--method",
            "POST",
            "--header",
            "X-HTTP-Method-Override:DELETE",
        ],
    )
    .await;
    let b = assert_denied(&from_client(&out), 400, "intent");
    assert_eq!(b["error"], "ambiguous_method", "{b}");
    let out = curl(
        &proxy,
        &[
            "-X",
            "POST",
            "-H",
            "X-HTTP-Method-Override: DEL ETE",
            "https://api.github.com/repos/acme/web",
        ],
    )
    .await;
    let b = assert_denied(&from_curl(&out), 400, "intent");
    assert_eq!(b["error"], "ambiguous_method", "{b}");

    // A path that is no GitHub operation.
    let out = curl(&proxy, &["https://api.github.com/definitely/not/an-api"]).await;
    let b = assert_denied(&from_curl(&out), 403, "policy");
    assert!(
        b["reason"].as_str().unwrap().contains("github.unknown"),
        "{b}"
    );

    // The records: one refusal each, with its reason, none allowed.
    let records = audit_decisions(&proxy, |rs| {
        rs.iter().filter(|r| r["method"] != "CONNECT").count() >= 9
    })
    .await;
    let requests: Vec<&Value> = records
        .iter()
        .filter(|r| r["method"] != "CONNECT")
        .collect();
    assert_eq!(requests.len(), 9, "{records:#?}");
    for r in &requests {
        assert_eq!(r["effect"], "deny", "{r:#}");
        assert!(
            !reasons(&r["reasons"]).is_empty(),
            "a refusal without a reason: {r:#}"
        );
    }
    let by_path = |method: &str, path: &str| -> Vec<&Value> {
        requests
            .iter()
            .copied()
            .filter(|r| r["method"] == method && r["path"] == path)
            .collect()
    };
    let gql = by_path("POST", "/graphql");
    assert_eq!(gql.len(), 2, "{gql:#?}");
    assert_eq!(gql[0]["gate"], "policy");
    assert_eq!(
        gql[0]["action"]["name"], "github.graphql.mutation.deleteRef",
        "{:#}",
        gql[0]
    );
    let fields = gql[0]["context"]["body"]["graphql"]["fields"]
        .as_array()
        .expect("graphql fields");
    let named: Vec<(&str, &str)> = fields
        .iter()
        .map(|f| (f["field"].as_str().unwrap(), f["class"].as_str().unwrap()))
        .collect();
    assert_eq!(
        named,
        [
            ("viewer", "read"),
            ("deleteRef", "delete"),
            ("repository", "read")
        ]
    );
    assert_eq!(gql[1]["gate"], "intent");
    assert_eq!(gql[1]["error"], "unreadable_body");
    let overrides = by_path("POST", "/repos/acme/web");
    assert_eq!(overrides.len(), 2, "{overrides:#?}");
    for r in &overrides {
        assert_eq!(
            (&r["gate"], &r["error"]),
            (&json!("intent"), &json!("ambiguous_method"))
        );
        assert!(
            r.get("action").is_none(),
            "no tuple for an ambiguous request: {r:#}"
        );
    }
    let unknown = by_path("GET", "/definitely/not/an-api");
    assert_eq!(unknown[0]["action"]["name"], "github.unknown");
    assert_eq!(unknown[0]["action"]["properties"]["class"], "unknown");
    for (path, code) in [
        ("/repos/acme%2Fweb/issues", "ambiguous_path"),
        ("/repos/acme/web/../other/issues", "ambiguous_path"),
    ] {
        let r = by_path("GET", path);
        assert_eq!(r.len(), 1, "{path}: {records:#?}");
        assert_eq!(
            (&r[0]["gate"], &r[0]["error"]),
            (&json!("intent"), &json!(code))
        );
    }
    let slack = by_path("GET", "/api/chat.postMessage");
    assert_eq!(slack[0]["error"], "credential_in_request");
    let slack = by_path("POST", "/api/chat.postMessage");
    assert_eq!(slack[0]["error"], "credential_in_request");

    // The Slack tokens are in no record and no log line; nothing reached the upstream.
    let all = serde_json::to_string(&audit_records(&proxy, "decision")).unwrap();
    assert!(
        !all.contains("xoxb-e2e-secret"),
        "a token reached the audit log"
    );
    assert!(
        !proxy.stderr().contains("xoxb-e2e-secret"),
        "a token reached the proxy log"
    );
    assert!(
        env.upstream.requests().is_empty(),
        "a refused request reached the upstream: {:?}",
        env.upstream.requests()
    );

    assert_still_serves(&proxy).await;
}

// ---------------------------------------------------------------------------------------
// 5: mail

/// Mail to outside domains needs approval; the record lists the recipients' domains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gmail_send_to_outside_domains_escalates_with_the_domains() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env));
    let msg = write_file(
        &env,
        "send.json",
        &gmail_send_body("alice@example.com, bob@outside.org", "carol@partner.net"),
    );
    let out = node_fetch(
        "https://gmail.googleapis.com/gmail/v1/users/me/messages/send",
        &proxy,
        &[
            "--method",
            "POST",
            "--header",
            "content-type:application/json",
            "--data-file",
            &msg.display().to_string(),
        ],
    )
    .await;
    let b = assert_denied(&from_client(&out), 403, "consent");
    assert_eq!(b["error"], "consent_pending", "{b}");
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("outside.org, partner.net"),
        "the reason should name the outside domains: {b}"
    );
    assert!(
        env.upstream.requests().is_empty(),
        "{:?}",
        env.upstream.requests()
    );

    let r = decision_for(&proxy, "POST", "/gmail/v1/users/me/messages/send").await;
    assert_eq!(r["policy_effect"], "escalate", "{r:#}");
    assert_eq!(r["gate"], "consent", "{r:#}");
    assert_eq!(r["action"]["name"], "gmail.users.messages.send", "{r:#}");
    assert_eq!(r["resource"]["type"], "gmail.mailbox", "{r:#}");
    assert_eq!(r["resource"]["id"], "me", "{r:#}");
    let email = &r["context"]["body"]["email"];
    let mut domains: Vec<&str> = email["domains"]
        .as_array()
        .unwrap_or_else(|| panic!("no context.body.email.domains: {r:#}"))
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    domains.sort();
    assert_eq!(
        domains,
        ["example.com", "outside.org", "partner.net"],
        "{r:#}"
    );
    assert_eq!(email["recipient_count"], 3, "{r:#}");
    assert_eq!(email["cc"], json!(["carol@partner.net"]), "{r:#}");
    assert_eq!(r["context"]["body_truncated"], false, "{r:#}");
}

// ---------------------------------------------------------------------------------------
// 6: large bodies

/// Bodies larger than intent reads stream through whole; the record says the body was cut
/// off for inspection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_through_whole_and_are_marked_truncated() {
    let env = TestEnv::new().await;
    let proxy = env.start_default(); // allow-all
    let mut form = b"channel=C1&text=".to_vec();
    form.extend(std::iter::repeat_n(b'x', 3 << 20));
    let file = write_file(&env, "upload.form", &form);
    let data = format!("@{}", file.display());
    for (path, catalogued) in [
        ("/api/files.upload", false),
        ("/api/chat.postMessage", true),
    ] {
        let url = format!("https://slack.com{path}");
        let out = curl(
            &proxy,
            &[
                "-H",
                "Content-Type: application/x-www-form-urlencoded",
                "--data-binary",
                &data,
                &url,
            ],
        )
        .await;
        assert_eq!(
            out.status,
            200,
            "{path}: {:?}",
            String::from_utf8_lossy(&out.body)
        );
        let echo = out.json();
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["path"], path);
        assert_eq!(echo["body_len"], form.len() as u64, "{path}: bytes lost");
        assert_eq!(
            echo["body_sha256"],
            sha256_hex(&form),
            "{path}: bytes changed"
        );

        let r = decision_for(&proxy, "POST", path).await;
        assert_eq!(r["effect"], "allow", "{r:#}");
        assert_eq!(r["policy_effect"], "allow", "{r:#}");
        if catalogued {
            // The catalog reads Slack bodies for the channel: the first MiB was inspected,
            // replayed upstream, and the rest streamed uninspected.
            assert_eq!(r["action"]["name"], "slack.chat.postMessage", "{r:#}");
            assert_eq!(r["context"]["body_truncated"], true, "{r:#}");
        }
    }
}

/// A GraphQL document larger than intent reads cannot be judged: the default policy denies
/// it, and none of it reaches GitHub. The refusal comes while the agent is still uploading:
/// over HTTP/1.1 (curl) and HTTP/2 (hyper) the agent still gets the 403 with its reason.
/// (curl 7.88 and Python's h2 over HTTP/2 report a stream error instead of reading it; see
/// the report.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_graphql_is_denied_by_the_default_policy() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env));
    let doc = json!({
        "query": "query { viewer { login } }",
        "variables": {"pad": "x".repeat(2 << 20)},
    })
    .to_string();
    let file = write_file(&env, "big.json", doc.as_bytes());
    let out = curl(
        &proxy,
        &[
            "--http1.1",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", file.display()),
            "https://api.github.com/graphql",
        ],
    )
    .await;
    let b = assert_denied(&from_curl(&out), 403, "policy");
    assert_eq!(b["error"], "policy_denied", "{b}");
    // Over HTTP/2 too: the proxy reads the rest of the upload before answering, so curl
    // hears the refusal instead of a stream reset in the middle of its upload.
    let out = curl(
        &proxy,
        &[
            "--http2",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", file.display()),
            "https://api.github.com/graphql",
        ],
    )
    .await;
    let b = assert_denied(&from_curl(&out), 403, "policy");
    assert_eq!(b["error"], "policy_denied", "{b}");

    let tls = raw::tunnel_to(&proxy, "api.github.com", b"h2").await;
    let mut h2 = raw::h2_client(tls).await;
    let req = http::Request::post("https://api.github.com/graphql")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(doc)))
        .unwrap();
    let resp = raw::send_h2(&mut h2, req).await;
    assert_denied(&resp, 403, "policy");

    assert!(
        env.upstream.requests().is_empty(),
        "{:?}",
        env.upstream.requests()
    );
    let records = audit_decisions(&proxy, |rs| {
        rs.iter().filter(|r| r["path"] == "/graphql").count() >= 3
    })
    .await;
    let graphql: Vec<&Value> = records.iter().filter(|r| r["path"] == "/graphql").collect();
    assert_eq!(graphql.len(), 3, "{records:#?}");
    for r in graphql {
        assert_eq!(r["policy_effect"], "deny", "{r:#}");
        assert_eq!(r["gate"], "policy", "{r:#}");
        assert_eq!(r["context"]["body_truncated"], true, "{r:#}");
        // Nothing of the document was parsed, so no field is claimed.
        assert!(r["context"]["body"].get("graphql").is_none(), "{r:#}");
    }
}

/// A GraphQL document larger than AgentGate inspects (action `github.graphql`, cut off) is
/// denied by the rule that says so, `graphql-uninspectable`, so the agent learns why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_graphql_is_denied_as_uninspectable() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env));
    let doc =
        json!({"query": "query { viewer { login } }", "variables": {"pad": "x".repeat(2 << 20)}});
    let file = write_file(&env, "big.json", doc.to_string().as_bytes());
    let out = curl(
        &proxy,
        &[
            "--http1.1",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", file.display()),
            "https://api.github.com/graphql",
        ],
    )
    .await;
    let b = assert_denied(&from_curl(&out), 403, "policy");
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("graphql-uninspectable"),
        "{b}"
    );
}

// ---------------------------------------------------------------------------------------
// 7: observe mode

/// In observe mode a request policy denies is forwarded; the record keeps what policy said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_mode_forwards_and_records_the_denial() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env).set("policy", "mode", &toml_str("observe")));
    let out = python(
        "requests",
        "https://api.github.com/repos/acme/web",
        &proxy,
        &["--method", "DELETE"],
    )
    .await;
    assert_eq!(out["status"], 200, "{out}");
    let echo: Value = serde_json::from_str(out["body"].as_str().unwrap()).expect("echo JSON");
    assert_eq!(echo["method"], "DELETE");
    assert_eq!(echo["path"], "/repos/acme/web");
    assert_eq!(env.upstream.requests(), ["DELETE /repos/acme/web"]);

    let r = decision_for(&proxy, "DELETE", "/repos/acme/web").await;
    assert_eq!(r["effect"], "allow", "{r:#}");
    assert!(r["gate"].is_null(), "{r:#}");
    assert_eq!(r["policy_effect"], "deny", "{r:#}");
    assert_eq!(r["mode"], "observe", "{r:#}");
    assert_eq!(r["action"]["name"], "github.repos.delete", "{r:#}");
    assert!(reasons(&r["reasons"]).contains("delete-class"), "{r:#}");
}

// ---------------------------------------------------------------------------------------
// 8: hot reload

const ALLOW_REGO: &str =
    "package agentgate\n\ndecision := {\"effect\": \"allow\", \"reasons\": [\"e2e live allow\"]}\n";
const DENY_REGO: &str = "package agentgate\n\ndecision := {\"effect\": \"deny\", \"reasons\": [\"e2e live deny-all\"]}\n";
const ALLOW_AGAIN_REGO: &str = "package agentgate\n\ndecision := {\"effect\": \"allow\", \"reasons\": [\"e2e live allow again\"]}\n";

/// A changed policy directory is picked up while the proxy runs; a broken one is refused,
/// audited, shown by the admin API, and the last good policy stays in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_reload_and_a_broken_policy_keeps_the_last_good_one() {
    let env = TestEnv::new().await;
    let dir = env.dir.path().join("live-policy");
    std::fs::create_dir_all(&dir).unwrap();
    write_atomic(&dir, "policy.rego", ALLOW_REGO);
    let proxy = env.start(
        env.config()
            .set("policy", "dir", &toml_str(&dir.display().to_string())),
    );
    let token = proxy.admin_token();
    let policy_status = || async {
        let s = admin(&proxy, "GET", "/api/v1/policy", Some(&token), None, None).await;
        assert_eq!(s.status, 200, "{s:?}");
        s.body
    };
    let reloads = |event: &str| -> Vec<Value> {
        audit_records(&proxy, "admin")
            .into_iter()
            .filter(|r| r["event"] == event)
            .collect()
    };

    assert_eq!(get_issues(&proxy).await.status, 200);
    let first = policy_status().await;
    assert!(is_hex64(&first["hash"]), "{first}");

    // allow -> deny
    write_atomic(&dir, "policy.rego", DENY_REGO);
    let denied = poll(
        "deny-all in force",
        || get_issues(&proxy),
        |r| r.status != 200,
    )
    .await;
    let b = assert_denied(&denied, 403, "policy");
    assert!(
        b["reason"].as_str().unwrap().contains("e2e live deny-all"),
        "{b}"
    );
    let deny_hash = policy_status().await["hash"].clone();
    assert_ne!(deny_hash, first["hash"]);
    let loaded = reloads("policy_reloaded");
    assert!(
        loaded.iter().any(|r| r["detail"]["hash"] == deny_hash),
        "no policy_reloaded record for the new hash: {loaded:#?}"
    );

    // deny -> allow again
    write_atomic(&dir, "policy.rego", ALLOW_AGAIN_REGO);
    poll(
        "allow in force again",
        || get_issues(&proxy),
        |r| r.status == 200,
    )
    .await;
    let good = policy_status().await;
    let good_hash = good["hash"].clone();
    assert_ne!(good_hash, deny_hash);
    assert!(
        reloads("policy_reload_failed").is_empty(),
        "a clean reload was reported as failed: {:#?}",
        reloads("policy_reload_failed")
    );

    // A syntactically broken file next to the good one: refused, the good policy stays.
    write_atomic(
        &dir,
        "broken.rego",
        "package agentgate\n\ndecision := {\"effect\": \n",
    );
    let failed = poll(
        "policy_reload_failed record",
        || async { reloads("policy_reload_failed") },
        |f| !f.is_empty(),
    )
    .await;
    let detail = &failed[0]["detail"];
    assert!(
        detail["error"]
            .as_str()
            .unwrap_or_default()
            .contains("broken.rego"),
        "the failure should name the broken file: {detail}"
    );
    assert_eq!(detail["in_force"], good_hash, "{detail}");
    for _ in 0..3 {
        let resp = get_issues(&proxy).await;
        assert_eq!(
            resp.status,
            200,
            "the last good policy was dropped: {}",
            resp.text()
        );
    }
    let r = decision_for(&proxy, "GET", "/repos/acme/web/issues").await;
    assert_eq!(r["policy_hash"], good_hash, "{r:#}");
    assert!(
        reasons(&r["reasons"]).contains("e2e live allow again"),
        "{r:#}"
    );
    let status = policy_status().await;
    assert_eq!(status["hash"], good_hash, "{status}");
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("broken.rego")),
        "GET /api/v1/policy should show last_error: {status}"
    );

    // Removing the broken file clears the error.
    std::fs::remove_file(dir.join("broken.rego")).unwrap();
    let cleared = poll("last_error cleared", policy_status, |s| {
        s["last_error"].is_null()
    })
    .await;
    assert_eq!(cleared["hash"], good_hash);
}

// ---------------------------------------------------------------------------------------
// 9: CLI

fn repo_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// `agentgate policy test -r policies` passes on the shipped policies and templates; a
/// failing case exits 1 and is named.
#[test]
fn policy_test_cli_passes_shipped_policies_and_names_failures() {
    let home = tempfile::tempdir().unwrap();
    let dir = repo_policies().display().to_string();
    let out = agentgate(home.path(), &["policy", "test", "-r", &dir]);
    assert!(
        out.status.success(),
        "policy test -r policies failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains(" 0 failed"), "{text}");
    assert!(
        text.contains("templates/github-readonly"),
        "-r should test the templates too: {text}"
    );

    let bad = home.path().join("bad-policy");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("policy.rego"), ALLOW_REGO).unwrap();
    std::fs::write(
        bad.join("policy_test.yaml"),
        "cases:\n  - name: reading issues is allowed\n    request: {method: GET, url: \"https://api.github.com/repos/acme/web/issues\"}\n    expect: allow\n  - name: deleting the repository must be denied\n    request: {method: DELETE, url: \"https://api.github.com/repos/acme/web\"}\n    expect: deny\n",
    )
    .unwrap();
    let bad_dir = bad.display().to_string();
    let out = agentgate(home.path(), &["policy", "test", &bad_dir]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("deleting the repository must be denied")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("PASS") && l.contains("reading issues is allowed")),
        "{text}"
    );
    assert!(text.contains("1 passed, 1 failed"), "{text}");

    let out = agentgate(home.path(), &["policy", "test", &bad_dir, "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("policy test -o json");
    assert_eq!(
        (doc["passed"].clone(), doc["failed"].clone()),
        (json!(1), json!(1)),
        "{doc}"
    );
    let failed: Vec<&Value> = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{doc}");
    assert_eq!(failed[0]["name"], "deleting the repository must be denied");
}

/// `agentgate explain` shows the tuple and the decision with no proxy running, using the
/// default policy seeded into a fresh state dir.
#[test]
fn explain_cli_decides_without_a_proxy() {
    let home = tempfile::tempdir().unwrap();
    let out = agentgate(
        home.path(),
        &[
            "explain",
            "DELETE",
            "https://api.github.com/repos/acme/web",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("explain -o json");
    assert_eq!(doc["decision"]["effect"], "deny", "{doc:#}");
    assert!(
        reasons(&doc["decision"]["reasons"]).contains("delete-class"),
        "{doc:#}"
    );
    assert!(is_hex64(&doc["decision"]["policy_hash"]), "{doc:#}");
    assert_eq!(
        doc["tuple"]["action"]["name"], "github.repos.delete",
        "{doc:#}"
    );
    assert_eq!(doc["tuple"]["resource"]["id"], "acme/web", "{doc:#}");
    assert_eq!(doc["mode"], "enforce");
    assert!(home.path().join("policies/default.rego").is_file());

    // With a body and a header: the Gmail extractor runs as in the proxy.
    let body = home.path().join("send.json");
    std::fs::write(
        &body,
        gmail_send_body("dave@example.com", "erin@elsewhere.io"),
    )
    .unwrap();
    let out = agentgate(
        home.path(),
        &[
            "explain",
            "POST",
            "https://gmail.googleapis.com/gmail/v1/users/me/messages/send",
            "--body",
            &body.display().to_string(),
            "-H",
            "Content-Type: application/json",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("explain -o json");
    assert_eq!(doc["decision"]["effect"], "escalate", "{doc:#}");
    assert_eq!(
        doc["tuple"]["context"]["body"]["email"]["recipients"],
        json!(["dave@example.com", "erin@elsewhere.io"]),
        "{doc:#}"
    );
    assert!(
        reasons(&doc["decision"]["reasons"]).contains("elsewhere.io"),
        "{doc:#}"
    );

    // A request the intent gate refuses is an error, not a decision.
    let out = agentgate(
        home.path(),
        &["explain", "GET", "https://api.github.com/repos/acme%2Fweb"],
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("encoded slash"), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------
// 10: the AuthZEN PDP on the admin port

fn evaluation(action: &str, class: &str) -> Value {
    json!({
        "subject": {"type": "agent", "id": "spiffe://agentgate.local/agent/bot",
                    "properties": {"name": "bot", "owner": "alice"}},
        "action": {"name": action, "properties": {"class": class, "known": true}},
        "resource": {"type": "github.repo", "id": "acme/web",
                     "properties": {"owner": "acme", "repo": "web"}},
        "context": {"host": "api.github.com"},
    })
}

fn action(name: &str, class: &str) -> Value {
    json!({"action": {"name": name, "properties": {"class": class, "known": true}}})
}

/// Other gateways ask the same policy through OpenID AuthZEN: discovery, single and batch
/// evaluations with each semantic, and every malformed shape refused with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authzen_pdp_answers_with_the_policy_in_force() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env));
    let token = proxy.admin_token();
    let t = Some(token.as_str());
    let json_ct = Some("application/json");
    let post = |path: &'static str, body: Value| {
        let proxy = &proxy;
        async move { admin(proxy, "POST", path, t, json_ct, Some(&body.to_string())).await }
    };

    // Discovery is public.
    let d = admin(
        &proxy,
        "GET",
        "/.well-known/authzen-configuration",
        None,
        None,
        None,
    )
    .await;
    assert_eq!(d.status, 200, "{d:?}");
    let base = format!("http://{}", proxy.admin_addr);
    assert_eq!(d.body["policy_decision_point"], base, "{d:?}");
    assert_eq!(
        d.body["access_evaluation_endpoint"],
        format!("{base}/access/v1/evaluation")
    );
    assert_eq!(
        d.body["access_evaluations_endpoint"],
        format!("{base}/access/v1/evaluations")
    );

    // Single evaluations: read, delete, write.
    let read = post(
        "/access/v1/evaluation",
        evaluation("github.issues.list-for-repo", "read"),
    )
    .await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.body["decision"], true, "{read:?}");
    assert_eq!(read.body["context"]["agentgate"]["effect"], "allow");
    assert!(
        is_hex64(&read.body["context"]["agentgate"]["policy_hash"]),
        "{read:?}"
    );
    let delete = post(
        "/access/v1/evaluation",
        evaluation("github.repos.delete", "delete"),
    )
    .await;
    assert_eq!(delete.body["decision"], false, "{delete:?}");
    assert_eq!(delete.body["context"]["agentgate"]["effect"], "deny");
    assert!(
        delete.body["context"]["reason_admin"]["en"]
            .as_str()
            .is_some_and(|r| r.contains("delete-class")),
        "{delete:?}"
    );
    let write = post(
        "/access/v1/evaluation",
        evaluation("github.issues.create", "write"),
    )
    .await;
    assert_eq!(write.body["decision"], false, "{write:?}");
    assert_eq!(
        write.body["context"]["agentgate"]["effect"], "escalate",
        "{write:?}"
    );

    // Batches: top-level fields are defaults for each item.
    let mut defaults = evaluation("ignored", "read");
    defaults.as_object_mut().unwrap().remove("action");
    let batch = |semantic: Option<&str>, items: Vec<Value>| {
        let mut b = defaults.clone();
        b["evaluations"] = Value::Array(items);
        if let Some(s) = semantic {
            b["options"] = json!({"evaluations_semantic": s});
        }
        b
    };
    let decisions = |r: &AdminResp| -> Vec<Value> {
        assert_eq!(r.status, 200, "{r:?}");
        r.body["evaluations"]
            .as_array()
            .unwrap_or_else(|| panic!("no evaluations: {r:?}"))
            .iter()
            .map(|e| e["decision"].clone())
            .collect()
    };
    let (rd, del, wr) = (
        action("github.issues.list-for-repo", "read"),
        action("github.repos.delete", "delete"),
        action("github.issues.create", "write"),
    );
    let all = post(
        "/access/v1/evaluations",
        batch(None, vec![rd.clone(), del.clone(), wr.clone()]),
    )
    .await;
    assert_eq!(decisions(&all), [true, false, false], "{all:?}");
    assert_eq!(
        all.body["evaluations"][2]["context"]["agentgate"]["effect"],
        "escalate"
    );
    let explicit = post(
        "/access/v1/evaluations",
        batch(
            Some("execute_all"),
            vec![del.clone(), del.clone(), rd.clone()],
        ),
    )
    .await;
    assert_eq!(decisions(&explicit), [false, false, true], "{explicit:?}");
    let dofd = post(
        "/access/v1/evaluations",
        batch(
            Some("deny_on_first_deny"),
            vec![rd.clone(), del.clone(), rd.clone()],
        ),
    )
    .await;
    assert_eq!(decisions(&dofd), [true, false], "{dofd:?}");
    let pofp = post(
        "/access/v1/evaluations",
        batch(
            Some("permit_on_first_permit"),
            vec![del.clone(), rd.clone(), del.clone()],
        ),
    )
    .await;
    assert_eq!(decisions(&pofp), [false, true], "{pofp:?}");
    // An item may override a default.
    let mut other = rd.clone();
    other["resource"] = json!({"type": "host", "id": "evil.example"});
    let over = post("/access/v1/evaluations", batch(None, vec![other])).await;
    assert_eq!(decisions(&over), [false], "{over:?}");
    // A malformed item is that item's `false`, with why; the others are still evaluated.
    let bad_item = json!({"action": {"name": "x"}, "resource": "acme/web"});
    let mixed = post(
        "/access/v1/evaluations",
        batch(None, vec![rd.clone(), bad_item, rd.clone()]),
    )
    .await;
    assert_eq!(decisions(&mixed), [true, false, true], "{mixed:?}");
    assert!(
        mixed.body["evaluations"][1]["context"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("evaluations[1]: resource")),
        "{mixed:?}"
    );

    // Malformed requests: 400 with a reason.
    let mut no_subject_id = evaluation("github.issues.list-for-repo", "read");
    no_subject_id["subject"]
        .as_object_mut()
        .unwrap()
        .remove("id");
    let mut not_array = defaults.clone();
    not_array["evaluations"] = json!({"action": {"name": "x"}});
    let mut unknown_semantic = batch(None, vec![rd.clone()]);
    unknown_semantic["options"] = json!({"evaluations_semantic": "first_wins"});
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "/access/v1/evaluation",
            "not JSON",
            "{not json".into(),
            "not valid JSON",
        ),
        (
            "/access/v1/evaluation",
            "missing subject.id",
            no_subject_id.to_string(),
            "subject.id",
        ),
        (
            "/access/v1/evaluations",
            "evaluations not an array",
            not_array.to_string(),
            "evaluations must be an array",
        ),
        (
            "/access/v1/evaluations",
            "unknown semantic",
            unknown_semantic.to_string(),
            "first_wins",
        ),
    ];
    for (path, what, body, says) in cases {
        let r = admin(&proxy, "POST", path, t, json_ct, Some(&body)).await;
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert_eq!(r.body["error"], "bad_request", "{what}: {r:?}");
        assert!(
            r.body["reason"].as_str().is_some_and(|s| s.contains(says)),
            "{what}: reason should mention {says:?}: {r:?}"
        );
    }
    let body = evaluation("github.issues.list-for-repo", "read").to_string();
    let r = admin(
        &proxy,
        "POST",
        "/access/v1/evaluation",
        t,
        Some("text/plain"),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.body["reason"]
            .as_str()
            .is_some_and(|s| s.contains("application/json")),
        "{r:?}"
    );

    // The evaluation routes need the admin token.
    for token in [None, Some("wrong-token")] {
        for path in ["/access/v1/evaluation", "/access/v1/evaluations"] {
            let r = admin(&proxy, "POST", path, token, json_ct, Some(&body)).await;
            assert_eq!(r.status, 401, "{path} with {token:?}: {r:?}");
            assert_eq!(r.body["error"], "unauthorized");
            assert!(
                r.headers
                    .to_ascii_lowercase()
                    .contains("www-authenticate: bearer"),
                "{r:?}"
            );
        }
    }
    // Decisions are not requests: the PDP writes no decision records.
    assert!(
        audit_decisions(&proxy, |_| true).await.is_empty(),
        "PDP evaluations showed up as proxy decisions"
    );
}
