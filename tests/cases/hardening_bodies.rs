//! Bodies that cost or confuse (issue 15, findings 3 and 4), through the real binary: each
//! attack is refused by the intent gate before anything leaves, the upstream receives
//! nothing, and the audit holds a deny decision by gate "intent" with the refusal's code.
//!
//! - A message that made the old mail parser overflow a worker's stack is read in one pass.
//! - Gmail recipients another reader would see differently: a bare CR between headers
//!   (`Bcc: x@evil.example\rTo: a@example.com`), two addresses without a comma, a duplicated
//!   (or re-spelt) `uploadType`, a multipart upload whose first part is itself multipart →
//!   `400 ambiguous_body`.
//! - Slack: the 540 KB form naming 60,000 channels that cost seconds of CPU → `413
//!   body_too_complex` at once (more than 1,000 channels); a channel given twice, two
//!   channel keys, a key other parsers read as `channel`, a non-ASCII channel → `400
//!   ambiguous_body`.

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::support::proxy::{ConfigBuilder, Proxy, toml_str};
use crate::support::raw::{self, RawResponse};
use crate::support::{TestEnv, assert_denied, audit_decisions};

// ---------------------------------------------------------------------------------------
// Helpers

/// The shipped policy, with a generous evaluation bound (debug builds) and escalations
/// answered at once.
fn default_policy(env: &TestEnv) -> ConfigBuilder {
    env.with_default_policy()
        .set("policy", "eval_timeout", &toml_str("5s"))
        .set("consent", "mode", &toml_str("async"))
}

/// `POST target` to `host` over a fresh tunnel, the body bytes exactly as given; the answer
/// and how long it took.
async fn post(
    proxy: &Proxy,
    host: &str,
    target: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (RawResponse, Duration) {
    let tls = raw::tunnel_to(proxy, host, b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let req = Request::post(target)
        .header("host", host)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let t = Instant::now();
    let resp = raw::send_h1(&mut h1, req).await;
    (resp, t.elapsed())
}

/// Asserts the answer is a refusal by intent with `status`, `error` and a reason that
/// mentions `reason_has`, and that its decision record says the same; returns the record.
async fn refused(
    proxy: &Proxy,
    resp: &RawResponse,
    status: u16,
    error: &str,
    reason_has: &str,
) -> Value {
    let b = assert_denied(resp, status, "intent");
    assert_eq!(b["error"], error, "{b}");
    let reason = b["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(reason_has),
        "the reason should mention {reason_has:?}: {b}"
    );
    let id = b["request_id"].as_str().expect("request_id").to_owned();
    let records = audit_decisions(proxy, |rs| rs.iter().any(|r| r["request_id"] == id)).await;
    let r = records
        .into_iter()
        .find(|r| r["request_id"] == id)
        .unwrap_or_else(|| panic!("no decision record for request {id}"));
    assert_eq!(r["effect"], "deny", "{r:#}");
    assert_eq!(r["gate"], "intent", "{r:#}");
    assert_eq!(r["error"], error, "{r:#}");
    assert_eq!(r["status"], status, "{r:#}");
    assert_eq!(r["method"], "POST", "{r:#}");
    r
}

fn assert_nothing_received(env: &TestEnv, what: &str) {
    let got: Vec<String> = env.received().iter().map(|r| r.summary()).collect();
    assert!(got.is_empty(), "{what}: the upstream received {got:#?}");
}

/// `{"raw": base64url(message)}`.
fn gmail_json(message: &str) -> Vec<u8> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(message);
    json!({ "raw": raw }).to_string().into_bytes()
}

/// A multipart/related upload (boundary `b`): JSON metadata, then `message`.
fn gmail_multipart(message: &str) -> Vec<u8> {
    format!(
        "--b\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n{message}\r\n--b--\r\n"
    )
    .into_bytes()
}

const SEND: &str = "/gmail/v1/users/me/messages/send";
const UPLOAD: &str = "/upload/gmail/v1/users/me/messages/send";
const GMAIL: &str = "gmail.googleapis.com";
const SLACK: &str = "slack.com";

/// A GitHub read the default policy allows: the proxy still serves.
async fn assert_still_serves(proxy: &Proxy) {
    let tls = raw::tunnel_to(proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let resp = raw::send_h1(
        &mut h1,
        raw::get("/repos/acme/web/issues", "api.github.com"),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

// ---------------------------------------------------------------------------------------
// Finding 4: Gmail recipients

/// Each way of hiding an outside recipient from the policy is refused as ambiguous, and a
/// well-formed upload to the same outsider still reaches the policy (and escalates) with
/// exactly that recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gmail_recipient_tricks_are_refused_before_anything_leaves() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env));

    // A bare CR between two headers: one reader sees a Bcc, another only the To.
    let (resp, _) = post(
        &proxy,
        GMAIL,
        SEND,
        "application/json",
        gmail_json(
            "From: bot@example.com\r\nBcc: x@evil.example\rTo: a@example.com\r\nSubject: hi\r\n\r\nhi\r\n",
        ),
    )
    .await;
    refused(&proxy, &resp, 400, "ambiguous_body", "bare CR").await;

    // A bare LF in a CRLF header section.
    let (resp, _) = post(
        &proxy,
        GMAIL,
        SEND,
        "application/json",
        gmail_json("To: a@example.com\r\nBcc: x@evil.example\nSubject: hi\r\n\r\nhi\r\n"),
    )
    .await;
    refused(&proxy, &resp, 400, "ambiguous_body", "bare LF").await;

    // Two addresses in one To without a comma.
    let (resp, _) = post(
        &proxy,
        GMAIL,
        SEND,
        "application/json",
        gmail_json("To: a@example.com b@evil.example\r\nSubject: hi\r\n\r\nhi\r\n"),
    )
    .await;
    refused(&proxy, &resp, 400, "ambiguous_body", "without a comma").await;

    // A duplicated uploadType (the first value used to be taken), and one spelt in
    // another case.
    for query in [
        "uploadType=media&uploadType=multipart",
        "uploadType=multipart&uploadtype=media",
    ] {
        let (resp, _) = post(
            &proxy,
            GMAIL,
            &format!("{UPLOAD}?{query}"),
            "multipart/related; boundary=b",
            gmail_multipart("To: a@example.com\r\n\r\nhi"),
        )
        .await;
        refused(&proxy, &resp, 400, "ambiguous_body", "uploadType").await;
    }

    // A multipart upload whose first part is itself multipart, holding a harmless message,
    // while the real message part goes outside.
    let nested = "--b\r\nContent-Type: multipart/related; boundary=i\r\n\r\n--i\r\nContent-Type: application/json\r\n\r\n{}\r\n--i\r\nContent-Type: message/rfc822\r\n\r\nTo: a@example.com\r\n\r\nhi\r\n--i--\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nTo: x@evil.example\r\n\r\nhi\r\n--b--\r\n";
    let (resp, _) = post(
        &proxy,
        GMAIL,
        &format!("{UPLOAD}?uploadType=multipart"),
        "multipart/related; boundary=b",
        nested.as_bytes().to_vec(),
    )
    .await;
    refused(&proxy, &resp, 400, "ambiguous_body", "multipart/related").await;

    assert_nothing_received(&env, "refused Gmail requests");

    // The same outsider in a well-formed upload: read, judged, escalated.
    let (resp, _) = post(
        &proxy,
        GMAIL,
        &format!("{UPLOAD}?uploadType=multipart"),
        "multipart/related; boundary=b",
        gmail_multipart("To: Alice <a@example.com>\r\nBcc: x@evil.example\r\n\r\nhi"),
    )
    .await;
    let b = assert_denied(&resp, 403, "consent");
    assert_eq!(b["error"], "consent_pending", "{b}");
    assert!(
        b["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("evil.example"),
        "{b}"
    );
    let id = b["request_id"].as_str().expect("request_id").to_owned();
    let records = audit_decisions(&proxy, |rs| rs.iter().any(|r| r["request_id"] == id)).await;
    let r = records
        .iter()
        .find(|r| r["request_id"] == id)
        .expect("decision record");
    let email = &r["context"]["body"]["email"];
    assert_eq!(email["to"], json!(["a@example.com"]), "{r:#}");
    assert_eq!(email["bcc"], json!(["x@evil.example"]), "{r:#}");
    assert_nothing_received(&env, "an escalated upload");

    // ~1000 KiB of nested "message/rfc822" header blocks: the mail parser used before
    // overflowed a worker's stack on it (aborting the proxy); now it is one message with
    // one recipient, judged like any other.
    let mut deep = String::from("To: x@evil.example\r\n");
    while deep.len() < 1000 << 10 {
        deep.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    let (resp, took) = post(
        &proxy,
        GMAIL,
        &format!("{UPLOAD}?uploadType=media"),
        "message/rfc822",
        deep.into_bytes(),
    )
    .await;
    eprintln!("a 1000 KiB message of nested message/rfc822 headers answered in {took:?}");
    let b = assert_denied(&resp, 403, "consent");
    assert_eq!(b["error"], "consent_pending", "{b}");
    assert_nothing_received(&env, "an escalated upload");

    assert_still_serves(&proxy).await;
}

// ---------------------------------------------------------------------------------------
// Finding 3 (and Slack ambiguity)

/// The 540 KB form naming 60,000 channels is refused at once (it cost 5–7 s of CPU per
/// request before); channel arguments that parsers could read differently are refused as
/// ambiguous. None reaches Slack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_bodies_that_cost_or_confuse_are_refused() {
    let env = TestEnv::new().await;
    let proxy = env.start(default_policy(&env));
    let form = "application/x-www-form-urlencoded";

    let ids: Vec<String> = (0..60_000).map(|i| format!("C{i:07}")).collect();
    let body = format!("channels={}", ids.join(","));
    let len = body.len();
    let (resp, took) = post(&proxy, SLACK, "/api/files.upload", form, body.into_bytes()).await;
    // Measured, not asserted: before the fix the pairwise de-duplication alone took ~4 s
    // (release) / ~14 s (debug) on this body.
    eprintln!("Slack form of {len} bytes naming 60000 channels answered in {took:?}");
    refused(
        &proxy,
        &resp,
        413,
        "body_too_complex",
        "more than 1000 channels",
    )
    .await;

    // The same body many times in a row stays cheap: the proxy answers each at once.
    let t = Instant::now();
    for _ in 0..4 {
        let body = format!("channels={}", ids.join(","));
        let (resp, _) = post(
            &proxy,
            SLACK,
            "/api/chat.postMessage",
            form,
            body.into_bytes(),
        )
        .await;
        assert_eq!(resp.status, 413, "{}", resp.text());
    }
    eprintln!("four more such requests answered in {:?}", t.elapsed());

    for (target, ct, body, reason) in [
        (
            "/api/chat.postMessage?channel=C1",
            form,
            "channel=C2&text=hi",
            "more than once",
        ),
        (
            "/api/chat.postMessage",
            form,
            "channel=C1&channel=C2&text=hi",
            "more than once",
        ),
        (
            "/api/chat.postMessage",
            form,
            "channel=C1&channel_id=C2&text=hi",
            "both name channels",
        ),
        (
            "/api/chat.postMessage",
            form,
            "+channel=C2&text=hi",
            "reads as channel",
        ),
        (
            "/api/chat.postMessage",
            form,
            "channel=C%C3%A9&text=hi",
            "printable ASCII",
        ),
        (
            "/api/chat.postMessage",
            "application/json",
            r#"{"channel": "C1", "text": "hi", "channel": "C2"}"#,
            "twice",
        ),
        (
            "/api/chat.postMessage",
            "multipart/form-data; boundary=z",
            "--z\r\nContent-Disposition: form-data; name=\"text\"; name=\"channel\"\r\n\r\nC2\r\n--z--\r\n",
            "twice",
        ),
    ] {
        let (resp, _) = post(&proxy, SLACK, target, ct, body.as_bytes().to_vec()).await;
        refused(&proxy, &resp, 400, "ambiguous_body", reason).await;
    }

    assert_nothing_received(&env, "refused Slack requests");
    assert_still_serves(&proxy).await;
}
