//! Happy paths with real clients: GET and POST through the MITM with curl
//! (h1, h2), Python requests and httpx (h1, h2), Node fetch; plain http://;
//! upstream protocol selection; admin health endpoints.

use crate::support::clients::{curl, node_fetch, python};
use crate::support::pattern::sha256_hex;
use crate::support::upstream::Mode;
use crate::support::{TestEnv, assert_request_id, raw};
use serde_json::Value;

/// The host the upstream saw: `Host` (h1) or `:authority` (h2).
fn echo_host(echo: &Value) -> String {
    echo["headers"]["host"]
        .as_str()
        .or_else(|| echo["authority"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn assert_echo_get(echo: &Value, host: &str, query: &str) {
    assert_eq!(echo["method"], "GET", "{echo}");
    assert_eq!(echo["path"], "/echo", "{echo}");
    assert_eq!(echo["query"], query, "{echo}");
    assert_eq!(echo["sni"], host, "upstream SNI: {echo}");
    assert_eq!(echo_host(echo), host, "upstream host: {echo}");
    assert_eq!(echo["body_len"], 0, "{echo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http1_get() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let out = curl(
        &proxy,
        &["--http1.1", "https://api.github.com/echo?q=curl1"],
    )
    .await;
    assert_eq!(out.status, 200, "{:?}", String::from_utf8_lossy(&out.body));
    assert_eq!(out.http_version, "1.1");
    assert!(
        out.header("x-agentgate-request-id").is_some(),
        "{:?}",
        out.headers
    );
    assert_echo_get(&out.json(), "api.github.com", "q=curl1");
    // Logs go to stderr: stdout holds exactly the READY line.
    let stdout = proxy.stdout_lines();
    assert!(
        stdout.len() == 1 && stdout[0].starts_with("READY "),
        "stdout should be exactly one READY line: {stdout:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2_get() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let out = curl(&proxy, &["--http2", "https://slack.com/echo?q=curl2"]).await;
    assert_eq!(out.status, 200, "{:?}", String::from_utf8_lossy(&out.body));
    assert_eq!(
        out.http_version, "2",
        "the MITM side should negotiate h2 via ALPN"
    );
    assert!(
        out.header("x-agentgate-request-id").is_some(),
        "{:?}",
        out.headers
    );
    assert_echo_get(&out.json(), "slack.com", "q=curl2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_get() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let out = python(
        "requests",
        "https://api.github.com/echo?q=requests",
        &proxy,
        &[],
    )
    .await;
    assert_eq!(out["status"], 200, "{out}");
    assert!(
        out["headers"]["x-agentgate-request-id"].is_string(),
        "{out}"
    );
    let echo: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_echo_get(&echo, "api.github.com", "q=requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_httpx_http1_get() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let out = python(
        "httpx",
        "https://gmail.googleapis.com/echo?q=httpx",
        &proxy,
        &[],
    )
    .await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["http_version"], "HTTP/1.1", "{out}");
    assert!(
        out["headers"]["x-agentgate-request-id"].is_string(),
        "{out}"
    );
    let echo: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_echo_get(&echo, "gmail.googleapis.com", "q=httpx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_httpx_http2_get() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let out = python(
        "httpx-h2",
        "https://api.github.com/echo?q=httpx2",
        &proxy,
        &[],
    )
    .await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(
        out["http_version"], "HTTP/2",
        "httpx http2=True should get h2: {out}"
    );
    assert!(
        out["headers"]["x-agentgate-request-id"].is_string(),
        "{out}"
    );
    let echo: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_echo_get(&echo, "api.github.com", "q=httpx2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_fetch_get() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let out = node_fetch("https://slack.com/echo?q=node", &proxy, &[]).await;
    assert_eq!(out["status"], 200, "{out}");
    assert!(
        out["headers"]["x-agentgate-request-id"].is_string(),
        "{out}"
    );
    let echo: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_echo_get(&echo, "slack.com", "q=node");
}

/// A POST body arrives intact (length and SHA-256) from every client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_body_echo_sha256() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let body: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = env.dir.path().join("post-body.bin");
    std::fs::write(&file, &body).unwrap();
    let want_sha = sha256_hex(&body);
    let data_arg = format!("@{}", file.display());
    let file_arg = file.display().to_string();
    let url = "https://api.github.com/echo";

    let check = |who: &str, echo: &Value| {
        assert_eq!(echo["method"], "POST", "{who}: {echo}");
        assert_eq!(echo["body_len"], body.len(), "{who}: {echo}");
        assert_eq!(
            echo["body_sha256"],
            want_sha.as_str(),
            "{who}: body altered"
        );
    };
    for version in ["--http1.1", "--http2"] {
        let out = curl(&proxy, &[version, "--data-binary", &data_arg, url]).await;
        assert_eq!(out.status, 200, "curl {version}");
        check(&format!("curl {version}"), &out.json());
    }
    for lib in ["requests", "httpx", "httpx-h2"] {
        let out = python(
            lib,
            url,
            &proxy,
            &["--method", "POST", "--data-file", &file_arg],
        )
        .await;
        assert_eq!(out["status"], 200, "{lib}: {out}");
        check(
            lib,
            &serde_json::from_str(out["body"].as_str().unwrap()).unwrap(),
        );
    }
    let out = node_fetch(url, &proxy, &["--method", "POST", "--data-file", &file_arg]).await;
    assert_eq!(out["status"], 200, "node: {out}");
    check(
        "node",
        &serde_json::from_str(out["body"].as_str().unwrap()).unwrap(),
    );
}

/// Absolute-form `http://` through the proxy, to a port allowed by config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_absolute_form() {
    let env = TestEnv::new().await;
    let plain = env.extra_upstream(Mode::Plain).await;
    let cfg = env
        .config()
        .set("egress", "allow_ports", "[443, 80]")
        .resolve("api.github.com:80", plain.addr);
    let proxy = env.start(cfg);
    let out = curl(&proxy, &["http://api.github.com/echo?q=plain"]).await;
    assert_eq!(out.status, 200, "{:?}", String::from_utf8_lossy(&out.body));
    assert!(
        out.header("x-agentgate-request-id").is_some(),
        "{:?}",
        out.headers
    );
    let echo = out.json();
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["query"], "q=plain");
    assert_eq!(echo_host(&echo), "api.github.com");
    assert!(plain.saw("q=plain"));
}

/// The proxy speaks h2 upstream when the upstream offers it, whatever the
/// client spoke on the MITM side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_http2_used_when_offered() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let resp = raw::send_h1(&mut h1, raw::get("/echo?via=h1", "api.github.com")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_request_id(&resp);
    assert_eq!(
        resp.json()["version"],
        "HTTP/2.0",
        "upstream offers h2: {}",
        resp.text()
    );

    let tls = raw::tunnel_to(&proxy, "api.github.com", b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h2 = raw::h2_client(tls).await;
    let resp = raw::send_h2(
        &mut h2,
        raw::get("https://api.github.com/echo?via=h2", "api.github.com"),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_request_id(&resp);
    assert_eq!(resp.json()["version"], "HTTP/2.0");
}

/// An upstream that only speaks HTTP/1.1 still works, also for h2 clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_only_upstream() {
    let env = TestEnv::new().await;
    let h1_only = env.extra_upstream(Mode::TlsH1Only).await;
    let proxy = env.start(env.config().resolve("slack.com:443", h1_only.addr));
    for version in ["--http1.1", "--http2"] {
        let out = curl(&proxy, &[version, "https://slack.com/echo?q=h1only"]).await;
        assert_eq!(
            out.status,
            200,
            "curl {version}: {:?}",
            String::from_utf8_lossy(&out.body)
        );
        let echo = out.json();
        assert_eq!(echo["version"], "HTTP/1.1", "curl {version}: {echo}");
        assert_eq!(echo_host(&echo), "slack.com");
    }
    assert!(h1_only.saw("q=h1only"));
    assert!(!env.upstream.saw("q=h1only"), "resolve override ignored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_healthz_and_readyz() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    for path in ["/healthz", "/readyz"] {
        let mut s = raw::tcp(proxy.admin_addr).await;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            proxy.admin_addr
        );
        let resp = raw::exchange(&mut s, req.as_bytes())
            .await
            .expect("admin answered");
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    }
}
