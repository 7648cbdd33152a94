//! Big streamed bodies (with a memory bound on the proxy), many requests on one
//! tunnel (h1 keep-alive, h2 multiplexing), and WebSocket upgrades.

use crate::support::clients::{CLIENT_TIMEOUT, clean_command, curl_proxy_args, output};
use crate::support::pattern::{CHUNK, Sha256Stream, chunk_at, pattern_sha256};
use crate::support::proxy::Proxy;
use crate::support::raw::{self, within};
use crate::support::upstream::Mode;
use crate::support::{TestEnv, assert_request_id, assert_serves};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::Full;
use std::collections::HashSet;
use std::process::Stdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const BIG: u64 = 100 * 1024 * 1024;
/// Peak RSS growth allowed while moving BIG bytes: the proxy must stream.
const RSS_BOUND_KIB: u64 = 100 * 1024;

fn assert_rss_flat(proxy: &Proxy, baseline_kib: u64, what: &str) {
    let peak = proxy.mem_kib("VmHWM");
    let growth = peak.saturating_sub(baseline_kib);
    eprintln!("{what}: proxy RSS baseline {baseline_kib} KiB, peak {peak} KiB (+{growth} KiB)");
    assert!(
        growth < RSS_BOUND_KIB,
        "{what}: proxy peak RSS grew by {growth} KiB (baseline {baseline_kib} KiB, peak {peak} KiB); \
         a {BIG}-byte body must be streamed, not buffered"
    );
}

/// curl downloads BIG pattern bytes to stdout; we hash them as they arrive.
async fn download(proxy: &Proxy, version: &str) {
    let mut cmd = clean_command("curl");
    cmd.args(curl_proxy_args(proxy))
        .args([version, "-o", "-"])
        .arg(format!("https://api.github.com/bytes?n={BIG}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn curl");
    let mut stdout = child.stdout.take().expect("curl stdout");
    let mut hasher = Sha256Stream::new();
    let mut buf = vec![0u8; CHUNK];
    tokio::time::timeout(CLIENT_TIMEOUT, async {
        loop {
            let n = stdout.read(&mut buf).await.expect("read curl stdout");
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    })
    .await
    .expect("100 MiB download did not finish in time");
    let out = child.wait_with_output().await.expect("curl exit");
    assert!(
        out.status.success(),
        "curl {version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (len, sha) = hasher.finish();
    assert_eq!(len, BIG, "curl {version}: downloaded byte count");
    assert_eq!(
        sha,
        pattern_sha256(BIG),
        "curl {version}: downloaded bytes differ from what the upstream sent"
    );
}

/// curl uploads BIG pattern bytes fed through its stdin; `-T -` streams them
/// with no length known in advance (chunked on h1).
async fn upload(proxy: &Proxy, version: &str) {
    let mut cmd = clean_command("curl");
    cmd.args(curl_proxy_args(proxy))
        .args([version, "-X", "POST", "-T", "-"])
        .arg("https://api.github.com/upload")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn curl");
    let mut stdin = child.stdin.take().expect("curl stdin");
    let feeder = tokio::spawn(async move {
        let mut off = 0u64;
        while off < BIG {
            let len = (BIG - off).min(CHUNK as u64) as usize;
            stdin
                .write_all(&chunk_at(off, len))
                .await
                .expect("feed curl");
            off += len as u64;
        }
        stdin.shutdown().await.expect("close curl stdin");
    });
    let out = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .expect("100 MiB upload did not finish in time")
        .expect("curl exit");
    feeder.await.expect("feeder");
    assert!(
        out.status.success(),
        "curl {version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let echo: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "curl {version}: upload answer not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(
        echo["body_len"], BIG,
        "curl {version}: upstream received byte count: {echo}"
    );
    assert_eq!(
        echo["body_sha256"],
        pattern_sha256(BIG),
        "curl {version}: uploaded bytes altered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_streams_with_flat_rss() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    assert_serves(&proxy).await;
    let baseline = proxy.mem_kib("VmRSS");
    for version in ["--http1.1", "--http2"] {
        download(&proxy, version).await;
        assert_rss_flat(&proxy, baseline, &format!("download {version}"));
    }
    assert_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_streams_with_flat_rss() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    assert_serves(&proxy).await;
    let baseline = proxy.mem_kib("VmRSS");
    for version in ["--http1.1", "--http2"] {
        upload(&proxy, version).await;
        assert_rss_flat(&proxy, baseline, &format!("upload {version}"));
    }
    assert_serves(&proxy).await;
}

/// Many requests in sequence on one kept-alive HTTP/1.1 tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keepalive_many_requests_one_tunnel() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let mut ids = HashSet::new();
    for i in 0..25 {
        let body = vec![b'k'; i * 100];
        let req = Request::post(format!("/echo?seq={i}"))
            .header("host", "api.github.com")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = raw::send_h1(&mut h1, req).await;
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
        assert!(ids.insert(assert_request_id(&resp)), "request id reused");
        let echo = resp.json();
        assert_eq!(echo["query"], format!("seq={i}"));
        assert_eq!(echo["body_len"], i * 100);
    }
}

/// 50 concurrent h2 streams on one MITM connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_multiplexes_50_streams_one_connection() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let tls = raw::tunnel_to(&proxy, "api.github.com", b"h2").await;
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "MITM must offer h2"
    );
    let h2 = raw::h2_client(tls).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let mut h2 = h2.clone();
            tokio::spawn(async move {
                let uri = format!("https://api.github.com/echo?stream={i}");
                let resp = raw::send_h2(&mut h2, raw::get(&uri, "api.github.com")).await;
                (i, resp)
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        let (i, resp) = within("h2 stream", t).await.expect("stream task");
        assert_eq!(resp.status, 200, "stream {i}: {}", resp.text());
        assert!(ids.insert(assert_request_id(&resp)), "request id reused");
        assert_eq!(resp.json()["query"], format!("stream={i}"));
    }
    assert_eq!(ids.len(), 50);
}

/// curl --http2 --parallel: 50 transfers multiplexed by a real client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2_parallel_50() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let mut cmd = clean_command("curl");
    cmd.args(curl_proxy_args(&proxy)).args([
        "--http2",
        "--parallel",
        "--parallel-max",
        "50",
        "-w",
        "%{http_code} %{http_version}\\n",
    ]);
    for i in 0..50 {
        cmd.args(["-o", "/dev/null"])
            .arg(format!("https://slack.com/echo?p={i}"));
    }
    let out = output(cmd, "curl --parallel").await;
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ok = stdout.lines().filter(|l| l.trim() == "200 2").count();
    assert_eq!(ok, 50, "every transfer should be 200 over h2:\n{stdout}");
    for i in 0..50 {
        assert!(
            env.upstream.saw(&format!("p={i}")),
            "transfer {i} never reached upstream"
        );
    }
}

/// `intent.upgrades` allowing WebSocket on `host`'s `/ws` (anything else is refused).
fn websocket_allowed(env: &TestEnv, host: &str) -> crate::support::proxy::ConfigBuilder {
    env.config().set(
        "intent",
        "upgrades",
        &format!(r#"[{{ host = "{host}", path = "/ws", protocols = ["websocket"] }}]"#),
    )
}

async fn websocket_echo(proxy: &Proxy, host: &str) {
    let tls = raw::tunnel(
        proxy.proxy_addr,
        &format!("{host}:443"),
        host,
        &proxy.ca_path,
        &[b"http/1.1"],
    )
    .await;
    let (mut ws, resp) = within(
        "websocket handshake",
        tokio_tungstenite::client_async(format!("wss://{host}/ws"), tls),
    )
    .await
    .unwrap_or_else(|e| panic!("websocket handshake through the proxy failed: {e}"));
    assert_eq!(resp.status().as_u16(), 101);
    assert!(
        resp.headers().contains_key("x-agentgate-request-id"),
        "101 lacks X-AgentGate-Request-Id: {:?}",
        resp.headers()
    );
    for i in 0..5 {
        let text = format!("hello {i}");
        within("ws send", ws.send(Message::text(text.clone())))
            .await
            .expect("ws send");
        let got = within("ws echo", ws.next())
            .await
            .expect("ws open")
            .expect("ws frame");
        assert_eq!(got, Message::text(text));
    }
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    within("ws send", ws.send(Message::binary(blob.clone())))
        .await
        .expect("ws send binary");
    let got = within("ws echo", ws.next())
        .await
        .expect("ws open")
        .expect("ws frame");
    assert_eq!(got, Message::binary(blob));
    let _ = within("ws close", ws.close(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_tunnel() {
    let env = TestEnv::new().await;
    let proxy = env.start(websocket_allowed(&env, "api.github.com"));
    websocket_echo(&proxy, "api.github.com").await;
    assert_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_http1_only_upstream() {
    let env = TestEnv::new().await;
    let h1_only = env.extra_upstream(Mode::TlsH1Only).await;
    let proxy =
        env.start(websocket_allowed(&env, "slack.com").resolve("slack.com:443", h1_only.addr));
    websocket_echo(&proxy, "slack.com").await;
    assert_serves(&proxy).await;
}
