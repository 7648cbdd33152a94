//! What is judged is what leaves (issue 15): regressions for the bypasses a hostile review
//! found, each through the real binary, each asserting what the upstream received and what
//! the audit recorded.
//!
//! - Method overrides (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`) are
//!   refused `400 ambiguous_method` by intent, whatever their value; a header named in
//!   `Connection` is removed before intent, so the request is judged as the method it is.
//! - Consent binds every forwarded header and what intent read from the body: two Gmail
//!   multipart uploads with the same bytes but different boundaries (so different
//!   recipients) are two consents, in hold and async mode; a body longer than
//!   `intent.max_body` cannot be bound and is refused `413 body_too_large_for_consent`.
//! - Upgrades only where `intent.upgrades` lists them (`403 upgrade_not_allowed`
//!   elsewhere); an allowed WebSocket is audited (`upgrade` record with byte counts) and
//!   closed by PANIC.
//!
//! Every test here also runs the judged-as-sent check (`support/judged.rs`) at its end.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::cli::{Registered, consent_list, ok, register};
use crate::support::clients::{clean_command, curl, from_curl, output};
use crate::support::held::{Curl, Spawned, finish};
use crate::support::pattern::sha256_hex;
use crate::support::proxy::{ConfigBuilder, Proxy, toml_str};
use crate::support::raw::{self, RawResponse, within};
use crate::support::upstream::Received;
use crate::support::{TestEnv, assert_denied, audit_decisions, read_records};

// ---------------------------------------------------------------------------------------
// Helpers

const ISSUES_URL: &str = "https://api.github.com/repos/acme/web/issues";
/// Who answers consents through the CLI.
const APPROVER: &str = "carol";
/// The one upgrade these tests allow.
const WS_UPGRADES: &str =
    r#"[{ host = "api.github.com", path = "/ws", protocols = ["websocket"] }]"#;

/// The shipped policy (generous evaluation bound, as in `intent_policy`) with the consent
/// gate in `mode`.
fn default_policy(env: &TestEnv, mode: &str) -> ConfigBuilder {
    env.with_default_policy()
        .set("policy", "eval_timeout", &toml_str("5s"))
        .set("consent", "mode", &toml_str(mode))
        .set("consent", "timeout", &toml_str("30s"))
}

/// `agentgate ARGS` on the proxy's state dir as [`APPROVER`].
async fn agentgate(proxy: &Proxy, args: &[&str]) -> Output {
    crate::support::cli::agentgate(&proxy.home, args, &[("USER", APPROVER)]).await
}

/// curl through the proxy (as the test agent); the answer.
async fn curl_raw(proxy: &Proxy, args: &[&str]) -> RawResponse {
    from_curl(&curl(proxy, args).await)
}

/// The decision record of request `id` (waits for it to land).
async fn decision(proxy: &Proxy, id: &str) -> Value {
    let records = audit_decisions(proxy, |rs| rs.iter().any(|r| r["request_id"] == id)).await;
    records
        .into_iter()
        .find(|r| r["request_id"] == id)
        .unwrap_or_else(|| panic!("no decision record for request {id}"))
}

/// The refusal's decision record: denied by `gate` with `status` and `error`, for `method`,
/// and no `sent` (nothing left).
async fn assert_refusal_recorded(
    proxy: &Proxy,
    body: &Value,
    method: &str,
    status: u16,
    gate: &str,
    error: &str,
) -> Value {
    let r = decision(proxy, body["request_id"].as_str().expect("request_id")).await;
    assert_eq!(r["effect"], "deny", "{r:#}");
    assert_eq!(r["gate"], gate, "{r:#}");
    assert_eq!(r["status"], status, "{r:#}");
    assert_eq!(r["error"], error, "{r:#}");
    assert_eq!(r["method"], method, "{r:#}");
    assert!(
        r.get("sent").is_none_or(Value::is_null),
        "a refused request's record describes something sent: {r:#}"
    );
    r
}

/// Every record of `kind` in the proxy's audit log.
fn records(proxy: &Proxy, kind: &str) -> Vec<Value> {
    read_records(&proxy.home.join("audit.db"), kind)
}

fn write_file(env: &TestEnv, name: &str, bytes: &[u8]) -> PathBuf {
    let path = env.dir.path().join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

/// What the upstreams received, one line per request, for failure messages.
fn lines(received: &[Received]) -> Vec<String> {
    received.iter().map(Received::summary).collect()
}

/// Asserts no request reached any upstream of the test.
fn assert_nothing_received(env: &TestEnv, what: &str) {
    let got = env.received();
    assert!(
        got.is_empty(),
        "{what}: the upstream received {:#?}",
        lines(&got)
    );
}

/// A background `curl -sS --max-time T -x PROXY --cacert CA -D … -o … -w %{http_code} ARGS`
/// as the test agent; never asserts (a held request may be cut off on purpose).
fn spawn_curl(proxy: &Proxy, args: Vec<String>, max_time: u64) -> Spawned {
    let proxy_url = proxy.proxy_url();
    let ca = proxy.ca_path.clone();
    tokio::spawn(async move {
        let tmp = tempfile::tempdir().expect("tempdir");
        let head_file = tmp.path().join("headers");
        let body_file = tmp.path().join("body");
        let mut cmd = clean_command("curl");
        cmd.args(["-sS", "--max-time", &max_time.to_string(), "-x", &proxy_url])
            .arg("--cacert")
            .arg(&ca)
            .arg("-D")
            .arg(&head_file)
            .arg("-o")
            .arg(&body_file)
            .args(["-w", "%{http_code}"])
            .args(&args);
        let out = output(cmd, "curl").await;
        let head = std::fs::read_to_string(&head_file).unwrap_or_default();
        // The -D file holds the CONNECT answer first; the last block is the response.
        let last = head
            .split("\r\n\r\n")
            .filter(|b| b.trim_start().starts_with("HTTP/"))
            .last()
            .unwrap_or_default()
            .to_owned();
        Curl {
            exit: out.status.code(),
            status: String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0),
            headers: last
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
            body: std::fs::read(&body_file).unwrap_or_default(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            done: Instant::now(),
        }
    })
}

/// Polls `consent list -o json` (10 s at most) until `n` consents are pending.
async fn wait_pending(proxy: &Proxy, n: usize, what: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = consent_list(proxy, false).await;
        if list.len() >= n {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {n} pending consent(s) did not show within 10 s: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The async-mode answer to an escalated request: 403 `consent_pending`; its consent id.
fn pending_id(resp: &RawResponse) -> String {
    let b = assert_denied(resp, 403, "consent");
    assert_eq!(b["error"], "consent_pending", "{b}");
    b["consent_id"].as_str().expect("consent_id").to_owned()
}

// ---------------------------------------------------------------------------------------
// B. Method overrides

/// A Gmail API send body (`{"raw": base64url(message)}`) to `to`.
fn gmail_send_json(to: &str) -> String {
    use base64::Engine;
    let msg = format!(
        "From: bot@example.com\r\nTo: {to}\r\nSubject: quarterly numbers\r\n\r\nsee attached\r\n"
    );
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(msg);
    json!({ "raw": raw }).to_string()
}

/// Each method-override header, alone, in pairs that conflict, and naming the method the
/// request already has, on writes the default policy would deny or escalate (and on a
/// read), over HTTP/1.1 and HTTP/2: `400 ambiguous_method` from intent, recorded as the
/// real method with nothing sent; the upstream receives nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_override_headers_are_refused_as_ambiguous() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env, "async"));
    let issue = r#"{"title":"hello"}"#;
    let collaborator = r#"{"permission":"admin"}"#;
    let mail = gmail_send_json("outsider@evil.example");
    let gmail = "https://gmail.googleapis.com/gmail/v1/users/me";
    // (what, method, url, headers, body)
    type Case<'a> = (&'a str, &'a str, String, Vec<&'a str>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "repository DELETE overridden to GET",
            "DELETE",
            "https://api.github.com/repos/acme/web".into(),
            vec!["X-HTTP-Method-Override: GET"],
            None,
        ),
        (
            "collaborator PUT overridden to GET",
            "PUT",
            "https://api.github.com/repos/acme/web/collaborators/mallory".into(),
            vec![
                "X-HTTP-Method-Override: GET",
                "Content-Type: application/json",
            ],
            Some(collaborator),
        ),
        (
            "issue POST with X-Method-Override: GET",
            "POST",
            ISSUES_URL.into(),
            vec!["X-Method-Override: GET", "Content-Type: application/json"],
            Some(issue),
        ),
        (
            "Gmail messages/send overridden to GET",
            "POST",
            format!("{gmail}/messages/send"),
            vec![
                "X-HTTP-Method-Override: GET",
                "Content-Type: application/json",
            ],
            Some(&mail),
        ),
        (
            "Gmail message DELETE with X-HTTP-Method: GET",
            "DELETE",
            format!("{gmail}/messages/m1"),
            vec!["X-HTTP-Method: GET"],
            None,
        ),
        (
            "two conflicting overrides",
            "POST",
            ISSUES_URL.into(),
            vec![
                "X-HTTP-Method-Override: GET",
                "X-HTTP-Method: DELETE",
                "Content-Type: application/json",
            ],
            Some(issue),
        ),
        (
            "all three overrides agreeing on GET",
            "DELETE",
            "https://api.github.com/repos/acme/web".into(),
            vec![
                "X-HTTP-Method-Override: GET",
                "X-HTTP-Method: GET",
                "X-Method-Override: GET",
            ],
            None,
        ),
        (
            "an override naming the method the request has",
            "GET",
            ISSUES_URL.into(),
            vec!["X-HTTP-Method-Override: GET"],
            None,
        ),
    ];
    for version in ["--http1.1", "--http2"] {
        for (what, method, url, headers, body) in &cases {
            let what = format!("{what} ({version})");
            let mut args: Vec<&str> = vec![version, "-X", method];
            for h in headers {
                args.extend(["-H", h]);
            }
            if let Some(b) = body {
                args.extend(["--data-binary", b]);
            }
            args.push(url);
            let resp = curl_raw(&proxy, &args).await;
            let b = assert_denied(&resp, 400, "intent");
            assert_eq!(b["error"], "ambiguous_method", "{what}: {b}");
            assert_refusal_recorded(&proxy, &b, method, 400, "intent", "ambiguous_method").await;
            assert_nothing_received(&env, &what);
        }
    }
}

/// What curl cannot send: one override header twice with different values, an empty
/// value, odd spelling and spacing. Each is refused the same way, on a raw HTTP/1.1
/// connection inside the tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_overrides_curl_cannot_express_are_refused_too() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env, "async"));
    let cases = [
        (
            "the same override twice",
            "x-http-method-override: GET\r\nX-HTTP-Method-Override: HEAD\r\n",
        ),
        ("an empty override", "X-HTTP-Method-Override: \r\n"),
        ("odd case, no space", "x-HtTp-MeThOd-OvErRiDe:GET\r\n"),
        ("tab before the value", "X-Method-Override:\tGET\r\n"),
    ];
    for (what, header) in cases {
        let mut tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
        let req = format!(
            "DELETE /repos/acme/web HTTP/1.1\r\nHost: api.github.com\r\n{header}Content-Length: 0\r\n\r\n"
        );
        let resp = raw::exchange(&mut tls, req.as_bytes())
            .await
            .unwrap_or_else(|| panic!("{what}: the proxy closed without answering"));
        let b = assert_denied(&resp, 400, "intent");
        assert_eq!(b["error"], "ambiguous_method", "{what}: {b}");
        assert_refusal_recorded(&proxy, &b, "DELETE", 400, "intent", "ambiguous_method").await;
    }
    assert_nothing_received(&env, "raw overrides");
}

/// A header named in `Connection` is hop-by-hop and removed before intent: `DELETE` of a
/// repository with `X-HTTP-Method-Override: GET` named in `Connection` is judged as the
/// DELETE it is (default policy: 403 from policy, recorded as `github.repos.delete`), and a
/// read with a `Connection`-named override is allowed as the read it is and leaves without
/// the override.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_named_in_connection_is_removed_before_intent() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env, "async"));

    let resp = curl_raw(
        &proxy,
        &[
            "--http1.1",
            "-X",
            "DELETE",
            "-H",
            "X-HTTP-Method-Override: GET",
            "-H",
            "Connection: X-HTTP-Method-Override",
            "https://api.github.com/repos/acme/web",
        ],
    )
    .await;
    let b = assert_denied(&resp, 403, "policy");
    let r =
        assert_refusal_recorded(&proxy, &b, "DELETE", 403, "policy", &str_of(&b["error"])).await;
    assert_eq!(r["action"]["name"], "github.repos.delete", "{r:#}");
    assert_eq!(r["policy_effect"], "deny", "{r:#}");
    assert_nothing_received(&env, "DELETE with a Connection-named override");

    // The same shape on a read: judged and sent as the GET it is.
    let out = curl(
        &proxy,
        &[
            "--http1.1",
            "-H",
            "X-HTTP-Method-Override: DELETE",
            "-H",
            "Connection: keep-alive, X-HTTP-Method-Override",
            ISSUES_URL,
        ],
    )
    .await;
    assert_eq!(out.status, 200, "{}", String::from_utf8_lossy(&out.body));
    let id = out
        .header("x-agentgate-request-id")
        .expect("request id")
        .to_owned();
    let r = decision(&proxy, &id).await;
    assert_eq!(r["effect"], "allow", "{r:#}");
    assert_eq!(r["method"], "GET", "{r:#}");
    assert_eq!(r["action"]["properties"]["class"], "read", "{r:#}");
    assert_eq!(r["sent"]["method"], "GET", "{r:#}");
    let got = env.forwarded();
    assert_eq!(got.len(), 1, "{:#?}", lines(&got));
    assert_eq!(got[0].method, "GET");
    assert_eq!(got[0].target, "/repos/acme/web/issues");
    for name in crate::support::judged::OVERRIDES {
        assert_eq!(
            got[0].header(name),
            None,
            "{name} reached the upstream: {:?}",
            got[0].headers
        );
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// The decision record of a forwarded request lists the meaning-bearing headers it sent
/// (`sent.headers`) and a digest of all of them; the upstream received exactly those
/// (checked again by the judged-as-sent check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meaning_bearing_headers_are_listed_in_the_record() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env, "async"));
    let out = curl(
        &proxy,
        &[
            "-H",
            "X-GitHub-Api-Version: 2022-11-28",
            "-H",
            "Content-Language: de",
            "-H",
            "Accept: application/vnd.github+json",
            ISSUES_URL,
        ],
    )
    .await;
    assert_eq!(out.status, 200, "{}", String::from_utf8_lossy(&out.body));
    let r = decision(&proxy, out.header("x-agentgate-request-id").unwrap()).await;
    let sent = &r["sent"];
    assert_eq!(sent["method"], "GET", "{r:#}");
    assert_eq!(
        sent["target_sha256"],
        sha256_hex(b"/repos/acme/web/issues"),
        "{r:#}"
    );
    assert_eq!(sent["headers"]["content-language"], "de", "{r:#}");
    assert_eq!(
        sent["headers"]["x-github-api-version"], "2022-11-28",
        "{r:#}"
    );
    assert_eq!(sent["body_sha256"], sha256_hex(b""), "{r:#}");
    assert_eq!(sent["body_bytes"], 0, "{r:#}");
    let got = env.forwarded();
    assert_eq!(got.len(), 1, "{:#?}", lines(&got));
    let credential = r.get("credential").is_some_and(|c| !c.is_null());
    assert_eq!(
        sent["headers_sha256"],
        crate::support::judged::headers_sha256(&got[0].headers, credential),
        "{r:#}"
    );
}

/// Trailer fields are headers that arrive after the decision: a chunked request whose
/// trailer section names a method override and another `Content-Type` is either refused or
/// forwarded without them (here: the upstream receives the body and no trailer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailer_fields_never_reach_the_upstream() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let mut tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let req = "POST /echo?trailers=1 HTTP/1.1\r\nHost: api.github.com\r\n\
               Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
               Trailer: X-HTTP-Method-Override, Content-Type\r\n\r\n\
               7\r\n{\"a\":1}\r\n0\r\nX-HTTP-Method-Override: DELETE\r\n\
               Content-Type: text/evil\r\n\r\n";
    let resp = raw::exchange(&mut tls, req.as_bytes())
        .await
        .expect("an answer");
    let got = env.forwarded();
    if resp.status == 200 {
        assert_eq!(got.len(), 1, "{:#?}", lines(&got));
        assert_eq!(got[0].body_bytes(), Some(&b"{\"a\":1}"[..]));
        assert!(
            got[0].trailers.is_empty(),
            "trailers reached the upstream: {:?}",
            got[0].trailers
        );
        assert_eq!(
            got[0].header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(got[0].header("trailer"), None, "{:?}", got[0].headers);
    } else {
        let b = assert_denied(
            &resp,
            400,
            resp.header("x-agentgate-denied-by").unwrap_or("?"),
        );
        eprintln!("a request with trailers was refused: {b}");
        assert!(got.is_empty(), "{:#?}", lines(&got));
    }
}

// ---------------------------------------------------------------------------------------
// C. Consent binds every forwarded header and the body-derived context

const GMAIL_UPLOAD_URL: &str =
    "https://gmail.googleapis.com/upload/gmail/v1/users/me/messages/send?uploadType=multipart";
const PARTNER_BOUNDARY: &str = "partner_boundary_1";
const OUTSIDER_BOUNDARY: &str = "outsider_boundary_2";

/// One multipart/related body that is two different uploads (the review's attack): read
/// with [`PARTNER_BOUNDARY`] its message part is to partner@example.com (everything of the
/// other framing is preamble and epilogue); read with [`OUTSIDER_BOUNDARY`] it is to
/// outsider@evil.example (the partner framing is text inside that message's body).
fn two_faced_upload() -> Vec<u8> {
    let (a, b) = (PARTNER_BOUNDARY, OUTSIDER_BOUNDARY);
    [
        format!("--{b}"),
        "Content-Type: application/json; charset=UTF-8".into(),
        String::new(),
        "{}".into(),
        format!("--{b}"),
        "Content-Type: message/rfc822".into(),
        String::new(),
        "From: bot@example.com".into(),
        "To: outsider@evil.example".into(),
        "Subject: quarterly numbers".into(),
        String::new(),
        format!("--{a}"),
        "Content-Type: application/json; charset=UTF-8".into(),
        String::new(),
        "{}".into(),
        format!("--{a}"),
        "Content-Type: message/rfc822".into(),
        String::new(),
        "From: bot@example.com".into(),
        "To: partner@example.com".into(),
        "Subject: quarterly numbers".into(),
        String::new(),
        "see attached".into(),
        format!("--{a}--"),
        String::new(),
        format!("--{b}--"),
        String::new(),
    ]
    .join("\r\n")
    .into_bytes()
}

/// A plain multipart upload (metadata, then the message) to partner@example.com, framed
/// with [`PARTNER_BOUNDARY`].
fn partner_upload() -> Vec<u8> {
    let a = PARTNER_BOUNDARY;
    format!(
        "--{a}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{{}}\r\n\
         --{a}\r\nContent-Type: message/rfc822\r\n\r\nFrom: bot@example.com\r\n\
         To: partner@example.com\r\nSubject: quarterly numbers\r\n\r\nsee attached\r\n--{a}--\r\n"
    )
    .into_bytes()
}

/// curl arguments for a multipart upload of `file` with this `Content-Type` and more
/// headers.
fn upload_args(file: &std::path::Path, content_type: &str, headers: &[&str]) -> Vec<String> {
    let mut args = vec![
        "-X".into(),
        "POST".into(),
        "-H".into(),
        format!("Content-Type: {content_type}"),
    ];
    for h in headers {
        args.extend(["-H".to_owned(), (*h).to_owned()]);
    }
    args.extend([
        "--data-binary".into(),
        format!("@{}", file.display()),
        GMAIL_UPLOAD_URL.into(),
    ]);
    args
}

fn related(boundary: &str) -> String {
    format!("multipart/related; boundary={boundary}")
}

fn as_args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The recipients intent read from the upload, from its decision record.
fn recipients(r: &Value) -> Vec<String> {
    let email = &r["context"]["body"]["email"];
    let list = if email["recipients"].is_array() {
        &email["recipients"]
    } else {
        &email["to"]
    };
    list.as_array()
        .unwrap_or_else(|| panic!("no recipients in the record's context: {r:#}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The requests forwarded to the Gmail upload path.
fn uploads(env: &TestEnv) -> Vec<Received> {
    env.forwarded()
        .into_iter()
        .filter(|r| r.target.starts_with("/upload/gmail/"))
        .collect()
}

/// Asserts the one upload that left carried exactly `content_type` and `body`, and none
/// of `absent`.
fn assert_only_upload_left(env: &TestEnv, content_type: &str, absent: &str, body: &[u8]) {
    let got = uploads(env);
    assert_eq!(
        got.len(),
        1,
        "uploads that reached Gmail: {:#?}",
        lines(&got)
    );
    assert_eq!(
        got[0].header("content-type").as_deref(),
        Some(content_type),
        "the upload that left is not the approved one: {:?}",
        got[0].headers
    );
    assert_eq!(got[0].header(absent), None, "{:?}", got[0].headers);
    assert_eq!(got[0].body_bytes(), Some(body), "{}", got[0].summary());
}

/// The review's attack, async mode: one body, two boundaries, two recipients. Read with
/// the outsider boundary it is an upload to outsider@evil.example that waits for its own
/// consent; read with the partner boundary it needs a preamble, so it is either refused as
/// ambiguous by intent (nothing to approve) or asks a consent of its own — never the
/// outsider's. Approving the partner request (if it was asked) does not release the
/// outsider one; nothing reaches Gmail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_body_with_two_boundaries_never_shares_a_consent() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env, "async"));
    let body = two_faced_upload();
    let file = write_file(&env, "two-faced.eml", &body);
    let outsider = upload_args(&file, &related(OUTSIDER_BOUNDARY), &[]);
    let partner = upload_args(&file, &related(PARTNER_BOUNDARY), &[]);

    let first = curl_raw(&proxy, &as_args(&outsider)).await;
    let id_outsider = pending_id(&first);
    let r = decision(&proxy, first.header("x-agentgate-request-id").unwrap()).await;
    assert_eq!(recipients(&r), ["outsider@evil.example"], "{r:#}");

    let second = curl_raw(&proxy, &as_args(&partner)).await;
    if second.status == 400 {
        let b = assert_denied(&second, 400, "intent");
        assert!(
            b["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("ambiguous")),
            "{b}"
        );
        assert_refusal_recorded(
            &proxy,
            &b,
            "POST",
            400,
            "intent",
            b["error"].as_str().unwrap(),
        )
        .await;
        eprintln!("the partner framing was refused: {}", b["reason"]);
    } else {
        let id_partner = pending_id(&second);
        assert_ne!(
            id_partner, id_outsider,
            "the partner framing joined the outsider upload's consent"
        );
        let r = decision(&proxy, second.header("x-agentgate-request-id").unwrap()).await;
        assert_eq!(recipients(&r), ["partner@example.com"], "{r:#}");
        ok(
            &agentgate(&proxy, &["consent", "approve", &id_partner]).await,
            "consent approve",
        );
    }
    let retry = curl_raw(&proxy, &as_args(&outsider)).await;
    assert_eq!(
        pending_id(&retry),
        id_outsider,
        "the outsider upload should still wait for its own consent"
    );
    assert!(uploads(&env).is_empty(), "{:#?}", lines(&uploads(&env)));
}

/// Async mode: the same upload bytes under headers that differ — the boundary parameter
/// quoted, or one more end-to-end header — are different requests, so each asks its own
/// consent. Approving the first lets exactly the first through (once): the others stay
/// pending on their own consents, and the upstream receives the approved headers and bytes
/// only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_consent_binds_every_forwarded_header() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env, "async"));
    let body = partner_upload();
    let file = write_file(&env, "upload.eml", &body);
    let plain = related(PARTNER_BOUNDARY);
    let quoted = format!("multipart/related; boundary=\"{PARTNER_BOUNDARY}\"");
    let variants = [
        upload_args(&file, &plain, &[]),
        upload_args(&file, &quoted, &[]),
        upload_args(&file, &plain, &["X-Upload-Note: second"]),
    ];
    let mut ids = Vec::new();
    for v in &variants {
        let resp = curl_raw(&proxy, &as_args(v)).await;
        let id = pending_id(&resp);
        let r = decision(&proxy, resp.header("x-agentgate-request-id").unwrap()).await;
        assert_eq!(recipients(&r), ["partner@example.com"], "{r:#}");
        assert!(
            !ids.contains(&id),
            "{v:?} joined another request's consent {id}"
        );
        ids.push(id);
    }
    assert_eq!(consent_list(&proxy, false).await.len(), 3);

    ok(
        &agentgate(&proxy, &["consent", "approve", &ids[0]]).await,
        "consent approve",
    );
    for (v, id) in variants.iter().zip(&ids).skip(1) {
        let resp = curl_raw(&proxy, &as_args(v)).await;
        assert_eq!(
            &pending_id(&resp),
            id,
            "{v:?} should still wait for its own consent"
        );
    }
    assert!(uploads(&env).is_empty(), "{:#?}", lines(&uploads(&env)));

    let passed = curl(&proxy, &as_args(&variants[0])).await;
    assert_eq!(
        passed.status,
        200,
        "{}",
        String::from_utf8_lossy(&passed.body)
    );
    assert_eq!(passed.json()["body_sha256"], sha256_hex(&body));
    let r = decision(&proxy, passed.header("x-agentgate-request-id").unwrap()).await;
    assert_eq!(r["effect"], "allow", "{r:#}");
    assert_eq!(r["consent"]["id"], ids[0].as_str(), "{r:#}");
    assert_eq!(r["sent"]["headers"]["content-type"], plain, "{r:#}");
    assert_eq!(r["sent"]["body_sha256"], sha256_hex(&body), "{r:#}");
    for (v, id) in variants.iter().zip(&ids).skip(1) {
        let resp = curl_raw(&proxy, &as_args(v)).await;
        assert_eq!(
            &pending_id(&resp),
            id,
            "{v:?} after the approved one passed"
        );
    }
    assert_only_upload_left(&env, &plain, "x-upload-note", &body);
}

/// Hold mode: an upload held next to an identical one whose `Content-Type` differs only
/// in quoting the boundary gets a consent of its own; approving the first releases only
/// the first (200, its headers and bytes upstream); the other stays held until its own
/// consent is denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_consent_binds_every_forwarded_header() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env, "hold"));
    let body = partner_upload();
    let file = write_file(&env, "upload.eml", &body);
    let plain = related(PARTNER_BOUNDARY);
    let quoted = format!("multipart/related; boundary=\"{PARTNER_BOUNDARY}\"");

    let first = spawn_curl(&proxy, upload_args(&file, &plain, &[]), 30);
    let list = wait_pending(&proxy, 1, "the first upload").await;
    let id_first = list[0]["id"].as_str().expect("id").to_owned();

    let second = spawn_curl(&proxy, upload_args(&file, &quoted, &[]), 30);
    let list = wait_pending(
        &proxy,
        2,
        "the second upload (did it join the first one's consent?)",
    )
    .await;
    assert_eq!(list.len(), 2, "{list:#?}");
    let id_second = list
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .find(|id| *id != id_first)
        .expect("a second consent");
    assert!(!first.is_finished() && !second.is_finished());
    assert!(uploads(&env).is_empty(), "{:#?}", lines(&uploads(&env)));

    ok(
        &agentgate(&proxy, &["consent", "approve", &id_first]).await,
        "consent approve",
    );
    let got = finish(first, 10).await;
    got.answered();
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let r = decision(&proxy, &got.request_id()).await;
    assert_eq!(r["consent"]["id"], id_first.as_str(), "{r:#}");
    assert_eq!(recipients(&r), ["partner@example.com"], "{r:#}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "approving the first upload released the second"
    );
    assert_only_upload_left(&env, &plain, "x-upload-note", &body);

    ok(
        &agentgate(
            &proxy,
            &["consent", "deny", &id_second, "--reason", "not this one"],
        )
        .await,
        "consent deny",
    );
    let got = finish(second, 10).await;
    got.answered();
    let b = assert_denied(&got.raw(), 403, "consent");
    assert_eq!(b["error"], "consent_denied", "{b}");
    assert_only_upload_left(&env, &plain, "x-upload-note", &body);
}

/// With `intent.max_body = 1024`, an escalated write whose body is longer cannot be bound
/// to an approval: `413 body_too_large_for_consent` from the consent gate at once (no
/// consent asked, nothing held), whether the length is declared, chunked or sent over
/// HTTP/2, in async and in hold mode; nothing reaches the upstream. A body within the
/// bound still asks as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalated_bodies_longer_than_intent_reads_are_refused() {
    let big = json!({ "title": "big", "body": "x".repeat(4096) }).to_string();
    let small = json!({ "title": "small", "body": "y".repeat(512) }).to_string();
    for mode in ["async", "hold"] {
        let env = TestEnv::new().await;
        let proxy = env.start(default_policy(&env, mode).set("intent", "max_body", "1024"));
        let file = write_file(&env, "big.json", big.as_bytes());
        let data = format!("@{}", file.display());
        for (what, extra) in [
            ("Content-Length", vec!["--http1.1"]),
            (
                "chunked",
                vec!["--http1.1", "-H", "Transfer-Encoding: chunked"],
            ),
            ("HTTP/2", vec!["--http2"]),
        ] {
            let what = format!("{mode}, {what}");
            let started = Instant::now();
            let mut args = extra.clone();
            args.extend([
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &data,
                ISSUES_URL,
            ]);
            let resp = curl_raw(&proxy, &args).await;
            let b = assert_denied(&resp, 413, "consent");
            assert_eq!(b["error"], "body_too_large_for_consent", "{what}: {b}");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{what}: the refusal took {:?}",
                started.elapsed()
            );
            let r = assert_refusal_recorded(
                &proxy,
                &b,
                "POST",
                413,
                "consent",
                "body_too_large_for_consent",
            )
            .await;
            assert_eq!(r["policy_effect"], "escalate", "{what}: {r:#}");
        }
        let all = consent_list(&proxy, true).await;
        assert!(all.is_empty(), "{mode}: consents were asked: {all:#?}");
        assert_nothing_received(&env, mode);

        if mode == "async" {
            let resp = curl_raw(
                &proxy,
                &[
                    "-X",
                    "POST",
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    &small,
                    ISSUES_URL,
                ],
            )
            .await;
            pending_id(&resp);
            assert_nothing_received(&env, "the small body");
        }
    }
}

// ---------------------------------------------------------------------------------------
// D. Upgrades

/// `GET path` with `Connection: Upgrade` and `Upgrade: proto` on a fresh tunnel to `host`.
async fn raw_upgrade(proxy: &Proxy, host: &str, path: &str, proto: &str) -> RawResponse {
    let mut tls = raw::tunnel_to(proxy, host, b"http/1.1").await;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {proto}\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    raw::exchange(&mut tls, req.as_bytes())
        .await
        .unwrap_or_else(|| panic!("upgrade of {host}{path} to {proto}: no answer"))
}

/// Waits (5 s at most) for the `upgrade` record of request `id`.
async fn upgrade_record(proxy: &Proxy, id: &str) -> Value {
    for _ in 0..100 {
        if let Some(r) = records(proxy, "upgrade")
            .into_iter()
            .find(|r| r["request_id"] == id)
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no upgrade record for {id} within 5 s; upgrade records: {:#?}",
        records(proxy, "upgrade")
    );
}

/// Without `intent.upgrades`, a WebSocket handshake is refused `403 upgrade_not_allowed`
/// by intent; with the list, anything it does not name is refused the same way (another
/// path, another protocol, another host, an `h2c` upgrade of an ordinary request). The
/// upstream receives none of them, and each is recorded as refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_are_refused_unless_listed() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let resp = raw_upgrade(&proxy, "api.github.com", "/ws", "websocket").await;
    let b = assert_denied(&resp, 403, "intent");
    assert_eq!(b["error"], "upgrade_not_allowed", "{b}");
    assert_refusal_recorded(&proxy, &b, "GET", 403, "intent", "upgrade_not_allowed").await;
    proxy.stop();

    let proxy = env.start(env.config().set("intent", "upgrades", WS_UPGRADES));
    for (what, host, path, proto) in [
        ("another path", "api.github.com", "/echo", "websocket"),
        ("a longer path", "api.github.com", "/ws/other", "websocket"),
        ("another protocol", "api.github.com", "/ws", "h2c"),
        ("another host", "slack.com", "/ws", "websocket"),
        (
            "h2c on an ordinary request",
            "api.github.com",
            "/echo?x=1",
            "h2c",
        ),
    ] {
        let resp = raw_upgrade(&proxy, host, path, proto).await;
        let b = assert_denied(&resp, 403, "intent");
        assert_eq!(b["error"], "upgrade_not_allowed", "{what}: {b}");
        assert_refusal_recorded(&proxy, &b, "GET", 403, "intent", "upgrade_not_allowed").await;
    }
    assert_nothing_received(&env, "refused upgrades");
    assert!(
        records(&proxy, "upgrade").is_empty(),
        "{:#?}",
        records(&proxy, "upgrade")
    );
    crate::support::assert_serves(&proxy).await;
}

/// A WebSocket over a CONNECT tunnel as `bearer`; the stream and the 101's request id.
async fn open_websocket(
    proxy: &Proxy,
    bearer: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    String,
) {
    let (s, head) = raw::connect_as(proxy.proxy_addr, "api.github.com:443", Some(bearer)).await;
    assert_eq!(head.status, 200, "CONNECT refused: {}", head.text());
    let tls = raw::tls_over(s, "api.github.com", &proxy.ca_path, &[b"http/1.1"]).await;
    let (ws, resp) = within(
        "websocket handshake",
        tokio_tungstenite::client_async("wss://api.github.com/ws", tls),
    )
    .await
    .unwrap_or_else(|e| panic!("websocket handshake through the proxy failed: {e}"));
    assert_eq!(resp.status().as_u16(), 101);
    let id = resp
        .headers()
        .get("x-agentgate-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("101 with X-AgentGate-Request-Id")
        .to_owned();
    (ws, id)
}

/// A listed WebSocket works; its handshake left as recorded (the judged-as-sent check),
/// and when it closes an `upgrade` record gives its byte counts both ways and
/// `ended: "closed"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_websocket_is_audited_with_its_byte_counts() {
    let env = TestEnv::new().await;
    let proxy = env.start(env.config().set("intent", "upgrades", WS_UPGRADES));
    let (mut ws, id) = open_websocket(&proxy, &crate::support::agent::bearer()).await;
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for i in 0..3 {
        let text = format!("hello {i}");
        within("ws send", ws.send(Message::text(text.clone())))
            .await
            .expect("ws send");
        let got = within("ws echo", ws.next())
            .await
            .expect("open")
            .expect("frame");
        assert_eq!(got, Message::text(text));
    }
    within("ws send", ws.send(Message::binary(blob.clone())))
        .await
        .expect("ws send binary");
    let got = within("ws echo", ws.next())
        .await
        .expect("open")
        .expect("frame");
    assert_eq!(got, Message::binary(blob));
    let _ = within("ws close", ws.close(None)).await;
    drop(ws);

    let r = decision(&proxy, &id).await;
    assert_eq!(r["effect"], "allow", "{r:#}");
    assert_eq!(r["sent"]["method"], "GET", "{r:#}");
    let got = env.forwarded();
    assert_eq!(got.len(), 1, "{:#?}", lines(&got));
    assert_eq!(got[0].target, "/ws");
    assert_eq!(got[0].header("upgrade").as_deref(), Some("websocket"));

    let u = upgrade_record(&proxy, &id).await;
    assert_eq!(u["ended"], "closed", "{u:#}");
    let up = u["bytes_up"]
        .as_u64()
        .unwrap_or_else(|| panic!("bytes_up: {u:#}"));
    let down = u["bytes_down"]
        .as_u64()
        .unwrap_or_else(|| panic!("bytes_down: {u:#}"));
    // 100 000 payload bytes each way plus framing (client frames are masked).
    assert!((100_000..110_000).contains(&up), "bytes_up {up}: {u:#}");
    assert!(
        (100_000..110_000).contains(&down),
        "bytes_down {down}: {u:#}"
    );
}

/// PANIC of the agent closes its open WebSocket at once (the stream ends within seconds,
/// sending fails after) and the `upgrade` record says `ended: "panic"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_closes_an_open_websocket() {
    let env = TestEnv::new().await;
    let proxy = env.start(env.config().set("intent", "upgrades", WS_UPGRADES));
    let bot: Registered = register(&proxy, "ws-bot", "alice", &[]).await;
    let (mut ws, id) = open_websocket(&proxy, &bot.bearer()).await;
    within("ws send", ws.send(Message::text("before")))
        .await
        .expect("ws send");
    let got = within("ws echo", ws.next())
        .await
        .expect("open")
        .expect("frame");
    assert_eq!(got, Message::text("before"));

    let out = agentgate(
        &proxy,
        &[
            "panic", "--agent", "ws-bot", "--reason", "test", "-o", "json",
        ],
    )
    .await;
    ok(&out, "agentgate panic --agent ws-bot");
    let panicked = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return "ended",
                Some(Ok(Message::Close(_))) => return "closed",
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        end.is_ok(),
        "the WebSocket was still open 5 s after PANIC of its agent"
    );
    eprintln!(
        "websocket {} {:?} after PANIC",
        end.unwrap_or_default(),
        panicked.elapsed()
    );

    let u = upgrade_record(&proxy, &id).await;
    assert_eq!(u["ended"], "panic", "{u:#}");
    assert!(u["bytes_up"].as_u64().is_some_and(|n| n > 0), "{u:#}");
    assert!(u["bytes_down"].as_u64().is_some_and(|n| n > 0), "{u:#}");
    let got = env.forwarded();
    assert_eq!(got.len(), 1, "{:#?}", lines(&got));
}

// ---------------------------------------------------------------------------------------
// The judged-as-sent check itself

/// The check that runs at the end of every test (support/judged.rs) catches what it is
/// for: a request that reached the upstream with an AgentGate's `Via` but differs from
/// every decision record (here one more header than the proxy forwarded), and a request
/// that reached it with no `Via` at all. Both are forged straight to the upstream, so this
/// test then turns the final check off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_judged_as_sent_check_catches_undescribed_requests() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    crate::support::assert_serves(&proxy).await;
    assert_eq!(env.check_sent(Duration::from_secs(5)), Ok(1));
    let r = audit_decisions(&proxy, |rs| rs.iter().any(|r| r["path"] == "/echo")).await;
    let instance = r
        .iter()
        .find(|r| r["path"] == "/echo")
        .and_then(|r| r["instance"].as_str())
        .expect("instance of the /echo record")
        .to_owned();
    let via = env.forwarded()[0].header("via").expect("Via");
    assert_eq!(via, format!("1.1 agentgate-{instance}"));

    // Straight to the upstream: the same request plus a header, with the proxy's Via.
    let forged = [
        format!(
            "GET /echo?still=alive HTTP/1.1\r\nHost: api.github.com\r\nVia: {via}\r\nX-Smuggled: 1\r\n\r\n"
        ),
        "GET /echo?no=via HTTP/1.1\r\nHost: api.github.com\r\n\r\n".to_owned(),
        // Declared as sent straight to the upstream: not reported.
        "GET /echo?declared=1 HTTP/1.1\r\nHost: api.github.com\r\n\r\n".to_owned(),
    ];
    env.sent_directly("GET", "/echo?declared=1");
    for req in forged {
        let tcp = raw::tcp(env.upstream.addr).await;
        let mut tls = raw::tls_over(
            tcp,
            "api.github.com",
            &env.pki.upstream_ca_path,
            &[b"http/1.1"],
        )
        .await;
        let resp = raw::exchange(&mut tls, req.as_bytes())
            .await
            .expect("answer");
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let report = env
        .check_sent(Duration::ZERO)
        .expect_err("the check passed with forged requests");
    eprintln!("the report, as a failing test would show it:\n{report}");
    assert!(
        report.contains(&format!("no decision record of instance {instance}"))
            && report.contains("x-smuggled")
            && report.contains("sent.headers_sha256"),
        "{report}"
    );
    assert!(report.contains("without AgentGate's Via"), "{report}");
    assert!(report.contains("/echo?no=via"), "{report}");
    assert!(!report.contains("declared=1"), "{report}");
    env.skip_sent_check("this test forges requests straight to the upstream on purpose");
}
