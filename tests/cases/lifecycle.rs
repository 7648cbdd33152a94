//! Connection bounds and process lifecycle: max connections, idle timeout, SIGTERM.

use crate::support::raw::{self, read_response, read_until_closed};
use crate::support::{TestEnv, assert_denied, assert_serves};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_get_503_and_slots_are_freed() {
    let env = TestEnv::new().await;
    let proxy = env.start(env.config().set("proxy", "max_connections", "2"));
    // Two open tunnels hold both slots.
    let a = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let (b, resp) = raw::connect(proxy.proxy_addr, "slack.com:443").await;
    assert_eq!(resp.status, 200);

    let mut third = raw::tcp(proxy.proxy_addr).await;
    let resp = read_response(&mut third)
        .await
        .expect("a refused connection gets an answer before it closes");
    let body = assert_denied(&resp, 503, "limits");
    assert_eq!(body["error"], "too_many_connections");
    read_until_closed(&mut third, "refused connection").await;

    // Closing the tunnels frees their slots.
    drop((a, b));
    let mut served = false;
    for _ in 0..100 {
        let (_s, resp) = raw::connect(proxy.proxy_addr, "api.github.com:443").await;
        if resp.status == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(served, "slots were not released after the tunnels closed");
    assert_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let env = TestEnv::new().await;
    let proxy = env.start(env.config().set("limits", "idle_timeout", "\"1s\""));
    // An idle tunnel after one request, and a proxy connection that never sent anything.
    let tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let mut tls = tls;
    let resp = raw::exchange(
        &mut tls,
        b"GET /echo HTTP/1.1\r\nHost: api.github.com\r\n\r\n",
    )
    .await
    .expect("response before the idle close");
    assert_eq!(resp.status, 200);
    let mut silent = raw::tcp(proxy.proxy_addr).await;
    read_until_closed(&mut tls, "idle tunnel").await;
    read_until_closed(&mut silent, "silent proxy connection").await;
    assert_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly() {
    let env = TestEnv::new().await;
    let mut proxy = env.start_default();
    assert_serves(&proxy).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &proxy.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = proxy.wait_exit().await;
    assert!(
        exit.success(),
        "proxy exited with {exit:?}: {}",
        proxy.stderr()
    );
    assert!(
        proxy.stderr().contains("shutting down"),
        "{}",
        proxy.stderr()
    );
}
