//! The audit log on a full disk: a request whose decision cannot be committed is refused
//! 503 and never forwarded, and the proxy recovers by itself when space returns. The log
//! lives on a small tmpfs that the test fills up and frees again (needs root, as CI is).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::proxy::{cli, toml_str};
use crate::support::raw;
use crate::support::{TestEnv, assert_denied, assert_serves};

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs for the full-disk test failed (it needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_owned())
    }

    /// Writes a filler file until the filesystem is full.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_503_and_recovers() {
    let env = TestEnv::new().await;
    let fs = Tmpfs::mount(&env.dir.path().join("auditfs"), "4m");
    let db = fs.0.join("audit.db");
    let cfg = env
        .config()
        .set("audit", "path", &toml_str(&db.display().to_string()))
        .set("audit", "commit_timeout", &toml_str("1s"));
    let proxy = env.start(cfg);
    assert_serves(&proxy).await;

    // An agent's open tunnel when the disk fills up.
    let tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let filler = fs.fill();
    // Once the log cannot grow, a request is refused; which one depends on how much room
    // the WAL still had, so keep asking.
    let mut refused = None;
    for n in 0..3000 {
        let resp = raw::send_h1(
            &mut h1,
            raw::get(&format!("/echo?full={n}"), "api.github.com"),
        )
        .await;
        if resp.status != 200 {
            let body = assert_denied(&resp, 503, "audit");
            assert_eq!(body["error"], "audit_unavailable");
            let reason = body["reason"].as_str().unwrap_or_default();
            assert!(reason.contains("not forwarded"), "{reason}");
            refused = Some(n);
            break;
        }
    }
    let n = refused.expect("3000 requests on a full disk and none refused");
    let refused_line = format!("GET /echo?full={n}");
    assert!(
        !env.upstream.requests().contains(&refused_line),
        "request {n} was forwarded without a committed record"
    );
    // A new tunnel is a decision too.
    let (_s, head) = raw::connect(proxy.proxy_addr, "slack.com:443").await;
    assert_denied(&head, 503, "audit");

    std::fs::remove_file(&filler).unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        if let Some(tls) = raw::tunnel_to_any(&proxy, "api.github.com").await {
            let mut h1 = raw::h1_client(tls).await;
            let resp = raw::send_h1(&mut h1, raw::get("/echo?back=1", "api.github.com")).await;
            if resp.status == 200 {
                recovered = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "no recovery after space returned:\n{}",
        proxy.stderr()
    );

    // The records around the outage form an intact chain.
    let home = proxy.home.clone();
    proxy.stop();
    let db_arg = db.display().to_string();
    let out =
        tokio::task::spawn_blocking(move || cli(&home, &["audit", "verify", "--db", &db_arg], &[]))
            .await
            .unwrap();
    assert!(
        out.status.success(),
        "audit verify after the outage: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The judged-as-sent check reads the log, which goes away with the tmpfs: run it now.
    if let Err(report) = env.check_sent(Duration::from_secs(5)) {
        panic!("{report}");
    }
    env.skip_sent_check("checked before the tmpfs holding the audit log was unmounted");
    drop(fs);
}
