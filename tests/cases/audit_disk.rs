//! The audit disk watchdog on a small file system: with `audit.disk_free_warning = "50%"`,
//! `/readyz` warns and `agentgate_audit_disk_low` turns 1 while requests still pass; only
//! later, once the disk is full, is a request refused 503 by the audit gate (and never
//! forwarded), and the proxy keeps answering.
//!
//! The log's directory is a small tmpfs that only the proxy sees: it runs in a mount
//! namespace of its own (`unshare --mount --map-root-user`), so the test needs no host
//! privilege and leaves nothing mounted. The test reads the log through
//! `/proc/<pid>/root`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::admin;
use crate::support::proxy::{Launch, launch_in, toml_str};
use crate::support::raw;
use crate::support::{TestEnv, assert_denied};

/// The log's file system: small, so it fills in seconds.
const FS_BYTES: u64 = 4 * 1024 * 1024;
/// Give up after this long without a full-disk refusal.
const FILL_FOR: Duration = Duration::from_secs(30);
/// Requests per second at most while filling: the watchdog reads once a second, and half
/// the disk must take several of its readings to fill.
const PACE: u32 = 100;
/// A long query (agents search): ~4 KiB of log per request, the disk full in ~10 s.
const PAD: usize = 1500;

/// `name{labels}` → value for every sample of a `/metrics` scrape.
async fn scrape(addr: SocketAddr, token: &str) -> std::collections::HashMap<String, f64> {
    let resp = admin::call(addr, "GET", "/metrics", Some(token), None).await;
    assert_eq!(resp.status, 200, "/metrics: {}", resp.text());
    resp.text()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// `/readyz`: status and JSON body.
async fn readyz(addr: SocketAddr) -> (u16, serde_json::Value) {
    let resp = admin::call(addr, "GET", "/readyz", None, None).await;
    (resp.status, resp.json())
}

const LOW: &str = r#"agentgate_audit_disk_low{dir="log"}"#;
const FREE: &str = r#"agentgate_audit_disk_free_bytes{dir="log"}"#;
const TOTAL: &str = r#"agentgate_audit_disk_total_bytes{dir="log"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_watchdog_warns_before_a_full_disk_refuses() {
    let env = TestEnv::new().await;
    let fs = env.dir.path().join("auditfs");
    std::fs::create_dir_all(&fs).unwrap();
    let db = fs.join("audit.db");
    let cfg = env
        .config()
        .set("audit", "path", &toml_str(&db.display().to_string()))
        .set("audit", "disk_free_warning", &toml_str("50%"))
        .set("audit", "commit_timeout", &toml_str("1s"));
    let config = env.write_config(&cfg);
    let script =
        format!("mount -t tmpfs -o size={FS_BYTES} tmpfs \"$AUDIT_FS\" && exec \"$0\" \"$@\"");
    let wrapper = [
        "unshare",
        "--mount",
        "--map-root-user",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ];
    let envs = [("AUDIT_FS", fs.to_str().unwrap())];
    let proxy = match launch_in(&wrapper, &env.home(), &config, &envs) {
        Launch::Ready(p) => p,
        Launch::Exited { status, stderr } => panic!(
            "agentgate in a mount namespace with a tmpfs (unshare --mount --map-root-user) \
             exited before READY ({status}):\n{stderr}"
        ),
    };
    // The log is on the proxy's tmpfs, not in the directory the test sees.
    let inside = |p: &Path| -> PathBuf {
        Path::new(&format!("/proc/{}/root", proxy.pid())).join(p.strip_prefix("/").unwrap())
    };
    assert!(
        inside(&db).exists(),
        "no {} in the proxy's namespace",
        db.display()
    );
    assert!(!db.exists(), "the audit log is not on the private tmpfs");

    let token = proxy.admin_token();
    let (status, body) = readyz(proxy.admin_addr).await;
    assert_eq!(
        (status, &body),
        (200, &serde_json::json!({"status": "ready"}))
    );
    let m = scrape(proxy.admin_addr, &token).await;
    assert_eq!(m[TOTAL], FS_BYTES as f64, "{m:?}");
    assert_eq!(m[LOW], 0.0);

    // One agent's keep-alive tunnel, used until the disk is full.
    let tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let started = Instant::now();
    let gap = Duration::from_secs(1) / PACE;
    let mut warned: Option<(usize, String)> = None;
    let mut refused = None;
    let mut n = 0usize;
    while started.elapsed() < FILL_FOR {
        let tick = Instant::now();
        let target = format!("/echo?fill={n}&q={}", "x".repeat(PAD));
        let resp = raw::send_h1(&mut h1, raw::get(&target, "api.github.com")).await;
        if resp.status != 200 {
            let body = assert_denied(&resp, 503, "audit");
            assert_eq!(body["error"], "audit_unavailable", "{body}");
            refused = Some((n, target));
            break;
        }
        if warned.is_none() && n % 10 == 0 {
            let (status, body) = readyz(proxy.admin_addr).await;
            assert_eq!(
                status, 200,
                "a low disk must not make the proxy unready: {body}"
            );
            if let Some(w) = body["warnings"].as_array() {
                assert_eq!(body["status"], "ready", "{body}");
                let text = w[0].as_str().unwrap().to_owned();
                warned = Some((n, text));
                let m = scrape(proxy.admin_addr, &token).await;
                assert_eq!(m[LOW], 1.0, "readyz warns but the gauge is not 1: {m:?}");
                assert!(m[FREE] < m[TOTAL] / 2.0, "{m:?}");
            }
        }
        n += 1;
        if let Some(rest) = gap.checked_sub(tick.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    let (refused_n, refused_target) = refused.unwrap_or_else(|| {
        panic!(
            "no full-disk refusal after {n} requests in {FILL_FOR:?}; warned: {warned:?}\n{}",
            proxy.stderr()
        )
    });
    let (warned_n, warning) =
        warned.unwrap_or_else(|| panic!("refused at request {refused_n} without a warning first"));
    eprintln!(
        "warned at {warned_n}, refused at {refused_n}, {:?}",
        started.elapsed()
    );
    assert!(warned_n < refused_n);
    assert!(
        warning.starts_with("audit disk: ")
            && warning.contains(&format!(
                " at {}, below audit.disk_free_warning (50%)",
                fs.display()
            )),
        "{warning}"
    );
    let seen = env.upstream.requests();
    let last_passed = format!("/echo?fill={}&q={}", refused_n - 1, "x".repeat(PAD));
    assert!(seen.contains(&format!("GET {last_passed}")));
    assert!(
        !seen.contains(&format!("GET {refused_target}")),
        "request {refused_n} was forwarded without a committed record"
    );

    // Still alive: the proxy still answers a new tunnel, allowed or refused 503 by the audit
    // (whether the log has room again for its record depends on what SQLite freed when the
    // failed commit rolled back), and so does the admin API, still "ready" with the warning
    // and counting the refusal.
    drop(h1);
    let (s, head) = raw::connect(proxy.proxy_addr, "api.github.com:443").await;
    if head.status == 200 {
        let tls = raw::tls_over(s, "api.github.com", &proxy.ca_path, &[b"http/1.1"]).await;
        let mut h1 = raw::h1_client(tls).await;
        let again = raw::send_h1(&mut h1, raw::get("/echo?after=full", "api.github.com")).await;
        if again.status != 200 {
            assert_denied(&again, 503, "audit");
        }
    } else {
        assert_denied(&head, 503, "audit");
    }
    let health = admin::call(proxy.admin_addr, "GET", "/healthz", None, None).await;
    assert_eq!(health.status, 200, "{}", health.text());
    let (status, body) = readyz(proxy.admin_addr).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["warnings"].as_array().is_some_and(|w| !w.is_empty()),
        "{body}"
    );
    let m = scrape(proxy.admin_addr, &token).await;
    assert_eq!(m[LOW], 1.0);
    assert!(m[r#"agentgate_requests_total{effect="deny",gate="audit"}"#] >= 1.0);
    assert!(m["agentgate_audit_commit_failures_total"] >= 1.0);
    let stderr = proxy.stderr();
    assert_eq!(
        stderr.matches("below audit.disk_free_warning").count(),
        1,
        "the low disk is logged once:\n{stderr}"
    );

    // The judged-as-sent check (when `env` drops) reads the log at `audit.path`, which only
    // the proxy sees: once nothing more lands in it, copy it there (the copy goes to the
    // directory under the proxy's tmpfs, which the proxy cannot see).
    let mut seq = -1.0;
    for _ in 0..50 {
        let now = scrape(proxy.admin_addr, &token).await["agentgate_audit_seq"];
        if now == seq {
            break;
        }
        seq = now;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for suffix in ["", "-wal"] {
        let name = format!("audit.db{suffix}");
        std::fs::copy(inside(&fs.join(&name)), fs.join(&name)).unwrap();
    }
    drop(proxy);
}
