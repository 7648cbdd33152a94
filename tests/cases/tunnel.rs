//! Refusals inside an established tunnel: SNI / Host / :authority that disagree
//! with the CONNECT target (421), upstream certificate failures (502), an
//! upstream that never answers (504), oversize bodies (413), proxy loops (508).

use crate::support::certs::Leaf;
use crate::support::proxy::Proxy;
use crate::support::raw::{self, RawResponse};
use crate::support::upstream::{Mode, Upstream};
use crate::support::{TestEnv, assert_denied, assert_request_id, assert_serves};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::AsyncWriteExt;

fn post(uri: &str, host: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    let mut req = Request::post(uri);
    if uri.starts_with('/') {
        req = req.header("host", host);
    }
    req.header("content-length", body.len())
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn h1_get(proxy: &Proxy, connect: &str, sni: &str, target: &str, host: &str) -> RawResponse {
    let tls = raw::tunnel(
        proxy.proxy_addr,
        connect,
        sni,
        &proxy.ca_path,
        &[b"http/1.1"],
    )
    .await;
    let mut h1 = raw::h1_client(tls).await;
    raw::send_h1(&mut h1, raw::get(target, host)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_disagreeing_with_connect_host_is_421() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    // h1: every request in the tunnel is refused, even one whose Host matches CONNECT.
    let tls = raw::tunnel(
        proxy.proxy_addr,
        "api.github.com:443",
        "slack.com",
        &proxy.ca_path,
        &[b"http/1.1"],
    )
    .await;
    let mut h1 = raw::h1_client(tls).await;
    let first = raw::send_h1(&mut h1, raw::get("/echo?m=sni-1", "api.github.com")).await;
    assert_denied(&first, 421, "ingress");
    let closing = first
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    if !closing {
        let second = raw::send_h1(&mut h1, raw::get("/echo?m=sni-2", "api.github.com")).await;
        assert_denied(&second, 421, "ingress");
    }
    // h2
    let tls = raw::tunnel(
        proxy.proxy_addr,
        "api.github.com:443",
        "gmail.googleapis.com",
        &proxy.ca_path,
        &[b"h2"],
    )
    .await;
    let mut h2 = raw::h2_client(tls).await;
    for i in 0..2 {
        let uri = format!("https://api.github.com/echo?m=sni-h2-{i}");
        let resp = raw::send_h2(&mut h2, raw::get(&uri, "api.github.com")).await;
        assert_denied(&resp, 421, "ingress");
    }
    assert!(
        !env.upstream.saw("m=sni"),
        "a misdirected request reached the upstream"
    );
    assert_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_or_authority_disagreeing_with_connect_host_is_421() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let resp = h1_get(
        &proxy,
        "api.github.com:443",
        "api.github.com",
        "/echo?m=host-1",
        "slack.com",
    )
    .await;
    assert_denied(&resp, 421, "ingress");
    // Absolute-form target naming another host inside the tunnel.
    let tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let req = Request::get("https://slack.com/echo?m=host-2")
        .header("host", "slack.com")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = raw::send_h1(&mut h1, req).await;
    assert_denied(&resp, 421, "ingress");

    let tls = raw::tunnel_to(&proxy, "api.github.com", b"h2").await;
    let mut h2 = raw::h2_client(tls).await;
    let resp = raw::send_h2(
        &mut h2,
        raw::get("https://slack.com/echo?m=host-h2", "slack.com"),
    )
    .await;
    assert_denied(&resp, 421, "ingress");
    // The same h2 connection still serves a matching :authority.
    let resp = raw::send_h2(
        &mut h2,
        raw::get("https://api.github.com/echo?ok=1", "api.github.com"),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(
        !env.upstream.saw("m=host"),
        "a misdirected request reached the upstream"
    );
    assert_serves(&proxy).await;
}

async fn assert_bad_upstream_cert(leaf: Leaf, what: &str) {
    let env = TestEnv::new().await;
    let bad = Upstream::start(vec![("api.github.com".to_owned(), leaf)], Mode::Tls).await;
    let proxy = env.start(env.config().resolve("api.github.com:443", bad.addr));
    let resp = h1_get(
        &proxy,
        "api.github.com:443",
        "api.github.com",
        "/echo?m=badcert",
        "api.github.com",
    )
    .await;
    let body = assert_denied(&resp, 502, "upstream");
    let reason = body["reason"].as_str().unwrap().to_ascii_lowercase();
    assert!(
        reason.contains("certificate"),
        "{what}: reason should mention the certificate: {body}"
    );
    assert!(
        !bad.saw("m=badcert"),
        "{what}: request sent over an unverified connection"
    );
    // Other upstreams are unaffected.
    let resp = h1_get(&proxy, "slack.com:443", "slack.com", "/echo", "slack.com").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cert_from_untrusted_ca_is_502() {
    let env = TestEnv::new().await;
    assert_bad_upstream_cert(
        env.pki.rogue_ca.leaf(&["api.github.com"], false),
        "untrusted CA",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cert_expired_is_502() {
    let env = TestEnv::new().await;
    assert_bad_upstream_cert(
        env.pki.upstream_ca.leaf(&["api.github.com"], true),
        "expired",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cert_for_other_name_is_502() {
    let env = TestEnv::new().await;
    assert_bad_upstream_cert(
        env.pki.upstream_ca.leaf(&["slack.com"], false),
        "wrong name",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_never_answers_is_504() {
    let env = TestEnv::new().await;
    let proxy = env.start(env.config().set("upstream", "response_timeout", "\"2s\""));
    let resp = h1_get(
        &proxy,
        "api.github.com:443",
        "api.github.com",
        "/hang",
        "api.github.com",
    )
    .await;
    assert_denied(&resp, 504, "upstream");
    let tls = raw::tunnel_to(&proxy, "slack.com", b"h2").await;
    let mut h2 = raw::h2_client(tls).await;
    let resp = raw::send_h2(&mut h2, raw::get("https://slack.com/hang", "slack.com")).await;
    assert_denied(&resp, 504, "upstream");
    assert!(env.upstream.saw("GET /hang"));
    assert_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_over_limit_is_413() {
    let env = TestEnv::new().await;
    let proxy = env.start(env.config().set("limits", "max_request_body", "1024"));
    let tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let resp = raw::send_h1(
        &mut h1,
        post("/echo?m=small", "api.github.com", vec![b'a'; 1000]),
    )
    .await;
    assert_eq!(
        resp.status,
        200,
        "a body under the limit passes: {}",
        resp.text()
    );
    assert_eq!(resp.json()["body_len"], 1000);

    let tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let resp = raw::send_h1(
        &mut h1,
        post("/echo?m=big-h1", "api.github.com", vec![b'a'; 4096]),
    )
    .await;
    assert_denied(&resp, 413, "limits");

    let tls = raw::tunnel_to(&proxy, "api.github.com", b"h2").await;
    let mut h2 = raw::h2_client(tls).await;
    let req = post(
        "https://api.github.com/echo?m=big-h2",
        "api.github.com",
        vec![b'a'; 4096],
    );
    let resp = raw::send_h2(&mut h2, req).await;
    assert_denied(&resp, 413, "limits");
    assert!(!env.upstream.saw("m=big"), "an oversize body was forwarded");
    assert_serves(&proxy).await;
}

/// A request that already carries this proxy's Via (it came back to us) is
/// refused with 508 instead of being forwarded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_looping_back_to_proxy_is_508() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let resp = h1_get(
        &proxy,
        "api.github.com:443",
        "api.github.com",
        "/echo",
        "api.github.com",
    )
    .await;
    assert_eq!(resp.status, 200);
    let via = resp.json()["headers"]["via"]
        .as_str()
        .unwrap_or_else(|| panic!("the proxy adds no Via header upstream: {}", resp.text()))
        .to_owned();

    let tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let req = Request::get("/echo?m=loop")
        .header("host", "api.github.com")
        .header("via", via.as_str())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = raw::send_h1(&mut h1, req).await;
    assert_eq!(
        resp.status,
        508,
        "Via {via:?} replayed: {} {}",
        resp.status,
        resp.text()
    );
    assert_request_id(&resp);
    let gate = resp
        .header("x-agentgate-denied-by")
        .unwrap_or_else(|| panic!("508 without X-AgentGate-Denied-By: {:?}", resp.headers))
        .to_owned();
    assert_denied(&resp, 508, &gate);
    assert!(!env.upstream.saw("m=loop"), "looping request was forwarded");
    assert_serves(&proxy).await;
}

/// `response_timeout` bounds the wait for the upstream's answer, not the time
/// the client takes to send its body: an upload that keeps making progress
/// for longer than the timeout must still get the upstream's response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upload_is_not_cut_by_response_timeout() {
    let env = TestEnv::new().await;
    let proxy = env.start(env.config().set("upstream", "response_timeout", "\"2s\""));
    let mut tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let head = "POST /upload?m=slow-upload HTTP/1.1\r\nHost: api.github.com\r\nTransfer-Encoding: chunked\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("3e8\r\n{}\r\n", "u".repeat(1000));
    let mut cut_off = false;
    for _ in 0..5 {
        if tls.write_all(chunk.as_bytes()).await.is_err() || tls.flush().await.is_err() {
            cut_off = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let resp = if cut_off {
        raw::read_response(&mut tls).await
    } else {
        raw::exchange(&mut tls, b"0\r\n\r\n").await
    };
    let resp = resp.expect("an answer to the slow upload");
    assert_eq!(
        resp.status,
        200,
        "a body still arriving after response_timeout was cut off: {} {}",
        resp.status,
        resp.text()
    );
    assert_eq!(resp.json()["body_len"], 5000);
    assert_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upload_is_408() {
    let env = TestEnv::new().await;
    let proxy = env.start(env.config().set("limits", "body_read_timeout", "\"1s\""));
    let mut tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    // Promise 100 bytes, send 10, then go quiet.
    let req = "POST /upload?m=stalled HTTP/1.1\r\nHost: api.github.com\r\nContent-Length: 100\r\n\r\n0123456789";
    let resp = raw::exchange(&mut tls, req.as_bytes())
        .await
        .expect("an answer to the stalled upload");
    let body = assert_denied(&resp, 408, "limits");
    assert_eq!(body["error"], "request_body_timeout");
    assert_serves(&proxy).await;
}

/// A streamed (chunked) body is cut off once it passes the limit; the upstream request is
/// aborted and the agent gets 413, also when the upstream speaks h2 (where the cause would
/// otherwise be lost in a stream reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_limit_is_413() {
    let env = TestEnv::new().await;
    let proxy = env.start(env.config().set("limits", "max_request_body", "1024"));
    let mut tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let chunk = format!("3e8\r\n{}\r\n", "b".repeat(1000));
    let req = format!(
        "POST /upload?m=chunked-big HTTP/1.1\r\nHost: api.github.com\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n"
    );
    let resp = raw::exchange(&mut tls, req.as_bytes())
        .await
        .expect("an answer to the oversize upload");
    let body = assert_denied(&resp, 413, "limits");
    assert_eq!(body["error"], "body_too_large");
    assert_serves(&proxy).await;
}
