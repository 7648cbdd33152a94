//! The egress guard: ports, private/loopback/metadata targets (SSRF), and the
//! config knobs that open them.
//!
//! Safety: a correct guard refuses these targets before dialing anything. The
//! targets that would leave this machine if a broken guard dialed them are only
//! tried after every on-machine target (loopback, unspecified, multicast) was
//! refused, so a guard that is missing altogether never sends a packet out.

use crate::support::raw::{self, RawResponse};
use crate::support::{TestEnv, assert_denied, assert_serves};

async fn connect_refused(proxy: &crate::support::proxy::Proxy, authority: &str) -> RawResponse {
    let (_s, resp) = raw::connect(proxy.proxy_addr, authority).await;
    assert_ne!(resp.status, 200, "CONNECT {authority} was allowed");
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_port_not_allowed_is_403() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    for authority in ["api.github.com:8443", "api.github.com:22", "slack.com:80"] {
        let resp = connect_refused(&proxy, authority).await;
        let body = assert_denied(&resp, 403, "guard");
        assert!(!body["reason"].as_str().unwrap().is_empty());
    }
    // Plain http:// to port 80 while allow_ports = [443] (the default).
    let mut s = raw::tcp(proxy.proxy_addr).await;
    let req = raw::plain_get("http://api.github.com/echo", "api.github.com");
    let resp = raw::exchange(&mut s, &req).await.expect("proxy answered");
    assert_denied(&resp, 403, "guard");
    assert!(
        !env.upstream.saw("GET /echo"),
        "refused request reached upstream"
    );
    assert_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_private_and_metadata_targets_is_403() {
    let env = TestEnv::new().await;
    let proxy = env.start(env.config().set("upstream", "connect_timeout", "\"1s\""));
    // Targets that stay on this machine even if dialed (the kernel refuses TCP to
    // multicast and to link-local without a scope).
    for authority in [
        "127.0.0.1:443",
        "127.8.9.10:443",
        "localhost:443",
        "[::1]:443",
        "[::ffff:127.0.0.1]:443",
        "0.0.0.0:443",
        "[::]:443",
        "224.0.0.1:443",
        "[ff02::1]:443",
        "[fe80::1]:443",
    ] {
        let resp = connect_refused(&proxy, authority).await;
        assert_denied(&resp, 403, "guard");
    }
    // Obfuscated loopback spellings (inet_aton forms): refused as loopback (403)
    // or as an invalid host (400), never tunnelled.
    for authority in ["2130706433:443", "0x7f000001:443", "127.1:443"] {
        let resp = connect_refused(&proxy, authority).await;
        assert!(
            resp.status == 403 || resp.status == 400,
            "CONNECT {authority}: {} {}",
            resp.status,
            resp.text()
        );
        assert!(
            resp.header("x-agentgate-denied-by").is_some(),
            "CONNECT {authority}"
        );
    }
    // Off-machine private, link-local (cloud metadata) and CGNAT targets.
    for authority in [
        "169.254.169.254:443",
        "[::ffff:169.254.169.254]:443",
        "10.0.0.1:443",
        "172.16.0.1:443",
        "192.168.1.1:443",
        "100.64.0.1:443",
    ] {
        let resp = connect_refused(&proxy, authority).await;
        assert_denied(&resp, 403, "guard");
    }
    assert_serves(&proxy).await;
}

/// Absolute-form http:// to the metadata address, with port 80 allowed, is
/// refused by the private-address rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_private_targets_is_403() {
    let env = TestEnv::new().await;
    let proxy = env.start(env.config().set("egress", "allow_ports", "[443, 80]"));
    for url in ["http://127.0.0.1/", "http://localhost/", "http://[::1]/"] {
        let mut s = raw::tcp(proxy.proxy_addr).await;
        let host = url.trim_start_matches("http://").trim_end_matches('/');
        let req = raw::plain_get(url, host);
        let resp = raw::exchange(&mut s, &req).await.expect("proxy answered");
        assert_denied(&resp, 403, "guard");
    }
    let mut s = raw::tcp(proxy.proxy_addr).await;
    let req = raw::plain_get(
        "http://169.254.169.254/latest/meta-data/",
        "169.254.169.254",
    );
    let resp = raw::exchange(&mut s, &req).await.expect("proxy answered");
    assert_denied(&resp, 403, "guard");
    assert_serves(&proxy).await;
}

/// `egress.allow_private` opens exactly the listed ranges; `allow_ports` the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_private_opens_listed_cidr_only() {
    let env = TestEnv::new().await;
    let port = env.upstream.addr.port();
    let cfg = env
        .config()
        .set("egress", "allow_ports", &format!("[443, {port}]"))
        .set("egress", "allow_private", "[\"127.0.0.0/8\"]");
    let proxy = env.start(cfg);
    let (_s, resp) = raw::connect(proxy.proxy_addr, &format!("127.0.0.1:{port}")).await;
    assert_eq!(
        resp.status,
        200,
        "allow_private 127.0.0.0/8: {} {}",
        resp.status,
        resp.text()
    );
    let resp = connect_refused(&proxy, &format!("[::1]:{port}")).await;
    assert_denied(&resp, 403, "guard");
    assert_serves(&proxy).await;
}
