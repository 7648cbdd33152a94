//! Malformed and hostile input, on the proxy listener and inside a MITM
//! tunnel: bad request lines and headers, smuggling shapes (CL+TE, differing
//! Content-Length), oversize headers, TLS garbage, slowloris. After each, the
//! proxy must still serve a normal request.

use crate::support::proxy::Proxy;
use crate::support::raw::{self, IO_TIMEOUT, read_until_closed};
use crate::support::upstream::{Mode, Upstream};
use crate::support::{TestEnv, assert_serves};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, split};

/// (name, request bytes). `{T}` is the request target, `{H}` the host.
const MALFORMED: &[(&str, &str)] = &[
    ("garbage request line", "GARBAGE\r\n\r\n"),
    (
        "bad version",
        "GET {T}?m=badversion HTTP/9.9\r\nHost: {H}\r\n\r\n",
    ),
    (
        "junk after version",
        "GET {T}?m=junkline HTTP/1.1 extra\r\nHost: {H}\r\n\r\n",
    ),
    (
        "space in header name",
        "GET {T}?m=hdrspace HTTP/1.1\r\nHost: {H}\r\nBad Header: x\r\n\r\n",
    ),
    (
        "header without colon",
        "GET {T}?m=nocolon HTTP/1.1\r\nHost: {H}\r\nNoColonHere\r\n\r\n",
    ),
    (
        "NUL in header value",
        "GET {T}?m=nul HTTP/1.1\r\nHost: {H}\r\nX-Nul: a\0b\r\n\r\n",
    ),
    (
        "Content-Length and Transfer-Encoding",
        "POST {T}?m=clte HTTP/1.1\r\nHost: {H}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
    ),
    (
        "Transfer-Encoding and Content-Length",
        "POST {T}?m=tecl HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX",
    ),
    (
        "duplicate differing Content-Length",
        "POST {T}?m=dupcl HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ),
];

fn render(template: &str, target: &str, host: &str) -> Vec<u8> {
    template
        .replace("{T}", target)
        .replace("{H}", host)
        .into_bytes()
}

/// None if the answer is a 400; otherwise what went wrong.
fn check_400(resp: Option<raw::RawResponse>, what: &str) -> Option<String> {
    match resp {
        None => Some(format!("{what}: connection closed without a 400")),
        Some(r) if r.status == 400 => None,
        Some(r) => Some(format!(
            "{what}: got {} {:?} {}",
            r.status,
            r.headers,
            r.text()
        )),
    }
}

/// Fails listing every case that went wrong, not just the first.
fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_inside_tunnel_is_400() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let mut failures = Vec::new();
    for (name, template) in MALFORMED {
        let mut tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
        let resp = raw::exchange(&mut tls, &render(template, "/echo", "api.github.com")).await;
        failures.extend(check_400(resp, &format!("in tunnel: {name}")));
    }
    if env.upstream.saw("m=") {
        failures.push("a malformed request reached the upstream".to_owned());
    }
    assert_no_failures(&failures);
    // Every refusal has its decision record, whichever layer refused it.
    let refused = |rs: &[serde_json::Value]| {
        rs.iter()
            .filter(|r| r["effect"] == "deny" && r["gate"] == "ingress")
            .count()
    };
    let records =
        crate::support::audit_decisions(&proxy, |rs| refused(rs) >= MALFORMED.len()).await;
    assert_eq!(refused(&records), MALFORMED.len(), "{records:#?}");
    assert_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_on_proxy_listener_is_400() {
    let env = TestEnv::new().await;
    // Port 80 allowed and resolved, so a well-formed request would be served:
    // only the malformation can explain a refusal.
    let plain = Upstream::start(Vec::new(), Mode::Plain).await;
    let cfg = env
        .config()
        .set("egress", "allow_ports", "[443, 80]")
        .resolve("api.github.com:80", plain.addr);
    let proxy = env.start(cfg);
    let mut failures = Vec::new();
    for (name, template) in MALFORMED {
        let mut s = raw::tcp(proxy.proxy_addr).await;
        let bytes = render(template, "http://api.github.com/echo", "api.github.com");
        failures.extend(check_400(
            raw::exchange(&mut s, &bytes).await,
            &format!("listener: {name}"),
        ));
    }
    for (name, bytes) in [
        (
            "CONNECT without port",
            "CONNECT api.github.com HTTP/1.1\r\nHost: api.github.com\r\n\r\n",
        ),
        (
            "CONNECT with CL and TE",
            "CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
    ] {
        let mut s = raw::tcp(proxy.proxy_addr).await;
        s.write_all(bytes.as_bytes()).await.unwrap();
        // Head only: a (wrong) 200 to CONNECT has no body to wait for.
        match raw::read_head(&mut s).await {
            None => failures.push(format!("{name}: closed without answer")),
            Some(r) if (400..500).contains(&r.status) => {}
            Some(r) => failures.push(format!("{name}: got {} {}", r.status, r.text())),
        }
    }
    if plain.saw("m=") {
        failures.push("a malformed request reached the upstream".to_owned());
    }
    assert_no_failures(&failures);
    let mut s = raw::tcp(proxy.proxy_addr).await;
    let ok = raw::plain_get("http://api.github.com/echo?m2=ok", "api.github.com");
    let resp = raw::exchange(&mut s, &ok).await.expect("answer");
    assert_eq!(
        resp.status,
        200,
        "well-formed control request: {}",
        resp.text()
    );
    assert_serves(&proxy).await;
}

fn big_header_request(target: &str, host: &str, header_bytes: usize) -> Vec<u8> {
    format!(
        "GET {target}?m=bighdr HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(header_bytes)
    )
    .into_bytes()
}

fn many_headers_request(target: &str, host: &str, count: usize) -> Vec<u8> {
    let mut req = format!("GET {target}?m=manyhdr HTTP/1.1\r\nHost: {host}\r\n");
    for i in 0..count {
        req.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(40)));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_headers_are_431() {
    let env = TestEnv::new().await;
    let proxy = env.start(env.config().set("limits", "max_header_bytes", "65536"));
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "100 KB header",
            big_header_request("/echo", "api.github.com", 100_000),
        ),
        (
            "1 MB header",
            big_header_request("/echo", "api.github.com", 1_000_000),
        ),
        (
            "2000 headers",
            many_headers_request("/echo", "api.github.com", 2000),
        ),
    ];
    for (name, bytes) in &cases {
        let mut tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
        let resp = raw::exchange_oversize(&mut tls, bytes).await;
        let resp = resp.unwrap_or_else(|| panic!("in tunnel, {name}: closed without a 431"));
        assert_eq!(resp.status, 431, "in tunnel, {name}: {}", resp.text());
    }
    // On the listener, in the CONNECT request itself.
    let mut s = raw::tcp(proxy.proxy_addr).await;
    let connect = format!(
        "CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\nX-Big: {}\r\n\r\n",
        "b".repeat(100_000)
    );
    let resp = raw::exchange_oversize(&mut s, connect.as_bytes())
        .await
        .expect("answer to big CONNECT");
    assert_eq!(resp.status, 431, "oversize CONNECT: {}", resp.text());
    assert!(
        !env.upstream.saw("hdr"),
        "an oversize request reached the upstream"
    );
    // Refused by the parser, yet each has its decision record.
    let too_large = |rs: &[serde_json::Value]| {
        rs.iter()
            .filter(|r| r["effect"] == "deny" && r["error"] == "headers_too_large")
            .count()
    };
    let records = crate::support::audit_decisions(&proxy, |rs| too_large(rs) >= 4).await;
    assert_eq!(too_large(&records), 4, "{records:#?}");
    assert_serves(&proxy).await;
}

async fn garbage_after_connect(proxy: &Proxy, bytes: &[u8], what: &str) {
    let (mut s, head) = raw::connect(proxy.proxy_addr, "api.github.com:443").await;
    assert_eq!(head.status, 200);
    let _ = s.write_all(bytes).await;
    let seen = read_until_closed(&mut s, what).await;
    let ok = seen.is_empty()
        || seen[0] == 0x15 // a TLS alert record
        || seen.starts_with(b"HTTP/1.1 400")
        || seen.starts_with(b"HTTP/1.0 400");
    assert!(
        ok,
        "{what}: unexpected answer {:?}",
        String::from_utf8_lossy(&seen[..seen.len().min(200)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_garbage_after_connect_closes_connection() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let mut fake_hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
    fake_hello.extend((0..508u32).map(|i| (i * 7) as u8));
    garbage_after_connect(&proxy, &fake_hello, "TLS record with a bogus ClientHello").await;
    garbage_after_connect(&proxy, &[0xff; 512], "binary junk").await;
    garbage_after_connect(
        &proxy,
        b"GET /echo?m=plain-in-tunnel HTTP/1.1\r\nHost: api.github.com\r\n\r\n",
        "plaintext HTTP instead of TLS",
    )
    .await;
    assert!(!env.upstream.saw("m=plain-in-tunnel"));
    assert_serves(&proxy).await;
}

/// Writes `head` at once, then one more header byte per second, while reading;
/// the proxy must close (optionally after a 408) well within IO_TIMEOUT.
async fn slowloris<S>(stream: S, head: &[u8], what: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = split(stream);
    let head = head.to_vec();
    let writer = tokio::spawn(async move {
        if wr.write_all(&head).await.is_err() {
            return;
        }
        for _ in 0..IO_TIMEOUT.as_secs() + 5 {
            if wr.write_all(b"a").await.is_err() || wr.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let seen = read_until_closed(&mut rd, what).await;
    writer.abort();
    assert!(
        seen.is_empty() || seen.starts_with(b"HTTP/1.1 408") || seen.starts_with(b"HTTP/1.0 408"),
        "{what}: unexpected answer {:?}",
        String::from_utf8_lossy(&seen[..seen.len().min(200)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off() {
    let env = TestEnv::new().await;
    let proxy = env.start(env.config().set("limits", "header_read_timeout", "\"2s\""));
    let s = raw::tcp(proxy.proxy_addr).await;
    slowloris(
        s,
        b"CONNECT api.github.com:443 HTTP/1.1\r\nX-Slow: ",
        "slow CONNECT headers",
    )
    .await;
    let tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    slowloris(
        tls,
        b"GET /echo?m=slow HTTP/1.1\r\nHost: api.github.com\r\nX-Slow: ",
        "slow headers in tunnel",
    )
    .await;
    assert!(!env.upstream.saw("m=slow"));
    assert_serves(&proxy).await;
}
