//! Audit segments end to end, with tiny segments and real requests through the proxy:
//! segments roll while requests flow (none refused, none unaudited), `kill -9` while seals
//! are under way leaves a log that verifies, readers page seamlessly across segment
//! boundaries, retention removes only archived segments, and the archive verifies from the
//! first record.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::audit::{agentgate, load_client, text};
use crate::support::TestEnv;
use crate::support::proxy::{ConfigBuilder, Proxy};

const LOAD_CLIENTS: usize = 4;

/// Segments of 4 KiB (about ten records) archived to `archive`.
fn tiny_segments(env: &TestEnv, archive: &Path) -> ConfigBuilder {
    env.config()
        .set("audit", "segment_max_bytes", "\"4KiB\"")
        .set(
            "audit",
            "archive_dir",
            &format!("{:?}", archive.display().to_string()),
        )
}

fn sealed(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".db"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn local_segments(env: &TestEnv) -> Vec<String> {
    sealed(&env.home().join("audit.segments"))
}

/// The archive's one log directory (the log id).
fn archived_segments(archive: &Path) -> Vec<String> {
    let Some(log) = std::fs::read_dir(archive)
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
    else {
        return Vec::new();
    };
    sealed(&log.path())
}

/// `agentgate audit verify -o json [--archive DIR]`: the report, and whether it exited 0.
async fn verify(env: &TestEnv, archive: Option<&Path>) -> (bool, Value) {
    let home = env.home();
    let archive = archive.map(|a| a.display().to_string());
    let mut args = vec!["audit", "verify", "-o", "json"];
    if let Some(a) = &archive {
        args.extend(["--archive", a]);
    }
    let out = agentgate(&home, &args).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// Every record, as `audit export` (reading every segment) writes them.
async fn export(env: &TestEnv, archive: &Path) -> Vec<Value> {
    let archive = archive.display().to_string();
    let out = agentgate(&env.home(), &["audit", "export", "--archive", &archive]).await;
    assert!(out.status.success(), "export: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("export line")["record"].clone())
        .collect()
}

/// Load clients on their own tunnels until `deadline` (or the proxy goes away).
type Clients = Vec<tokio::task::JoinHandle<super::audit::Load>>;

fn start_load(proxy: &Proxy, tag: &str, deadline: Instant) -> Clients {
    (0..LOAD_CLIENTS)
        .map(|c| {
            tokio::spawn(load_client(
                proxy.proxy_addr,
                proxy.ca_path.clone(),
                format!("{tag}-{c}"),
                deadline,
            ))
        })
        .collect()
}

/// Waits for the clients; every answer they got must have been a 200.
async fn finish_load(clients: Clients, tag: &str) -> usize {
    let mut ok = 0;
    for c in clients {
        let load = tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("load client stuck")
            .expect("load client task");
        assert!(
            load.unexpected.is_empty(),
            "{tag}: refused while segments rolled: {:?}",
            load.unexpected
        );
        ok += load.ok;
    }
    ok
}

/// Load for at most `for_at_most`; every answer must be 200.
async fn load(proxy: &Proxy, tag: &str, for_at_most: Duration) -> usize {
    let clients = start_load(proxy, tag, Instant::now() + for_at_most);
    finish_load(clients, tag).await
}

/// Every request the upstream received has its committed `allow` decision somewhere in
/// the log's segments.
fn every_forwarded_request_is_audited(env: &TestEnv, records: &[Value], what: &str) {
    let allowed: std::collections::BTreeSet<&str> = records
        .iter()
        .filter(|r| r["kind"] == "decision" && r["effect"] == "allow")
        .filter_map(|r| r["path"].as_str())
        .collect();
    let missing: Vec<String> = env
        .upstream
        .requests()
        .into_iter()
        .filter(|line| {
            let target = line.split_once(' ').map_or("", |(_, t)| t);
            !allowed.contains(target.split('?').next().unwrap_or_default())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: {} requests reached the upstream without a decision in any segment: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// The `seq`s of a `GET /api/v1/audit` page, in its order.
fn page_seqs(body: &Value) -> Vec<u64> {
    body["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["record"]["seq"].as_u64())
        .collect()
}

/// After a crash or a stop: the whole log (archive included) verifies from the first
/// record, and every forwarded request has its decision in some segment.
async fn check_log(env: &TestEnv, archive: &Path, what: &str) -> Vec<Value> {
    let (intact, report) = verify(env, Some(archive)).await;
    assert!(intact, "{what}: audit verify --archive: {report}");
    assert_eq!(report["from_seq"], 1, "{what}: {report}");
    let records = export(env, archive).await;
    let seqs: Vec<u64> = records.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (1..=records.len() as u64).collect::<Vec<_>>(),
        "{what}: export skipped or repeated a record"
    );
    assert_eq!(
        report["records"].as_u64(),
        Some(records.len() as u64),
        "{what}"
    );
    every_forwarded_request_is_audited(env, &records, what);
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_roll_under_load_and_survive_kill_9_mid_seal() {
    let env = TestEnv::new().await;
    let archive = env.dir.path().join("archive");
    let cfg = tiny_segments(&env, &archive);

    // Segments roll while requests flow: nothing refused.
    let proxy = env.start(cfg.clone());
    let served = load(&proxy, "steady", Duration::from_secs(3)).await;
    assert!(served > 40, "only {served} requests in 3 s");
    let settled = Instant::now() + Duration::from_secs(10);
    while local_segments(&env).len() < 3 {
        assert!(Instant::now() < settled, "segments never rolled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(proxy);
    check_log(&env, &archive, "after steady load").await;

    // kill -9 while seals are under way (one every ten records or so).
    for round in 0..3 {
        let proxy = env.start(cfg.clone());
        let before = env.upstream.requests().len();
        let tag = format!("kill{round}");
        let clients = start_load(&proxy, &tag, Instant::now() + Duration::from_secs(20));
        let flowing = Instant::now() + Duration::from_secs(20);
        while env.upstream.requests().len() < before + 40 {
            assert!(Instant::now() < flowing, "round {round}: no requests flow");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 200)).await;
        proxy.stop();
        finish_load(clients, &tag).await;
        // What the kill interrupted, for the log of this test.
        let conn = rusqlite::Connection::open_with_flags(
            env.home().join("audit.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open audit.db");
        let sealing: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'sealing'", [], |r| {
                r.get(0)
            })
            .ok();
        eprintln!("kill {round}: a seal was under way: {}", sealing.is_some());
        drop(conn);
        check_log(&env, &archive, &format!("after kill {round}")).await;
    }

    // Started again, the log goes on; readers page across segment boundaries.
    let proxy = env.start(cfg);
    load(&proxy, "after", Duration::from_millis(500)).await;
    let token = proxy.admin_token();
    let page = |path: String| {
        let token = token.clone();
        async move {
            let resp =
                crate::support::admin::call(proxy.admin_addr, "GET", &path, Some(&token), None)
                    .await;
            assert_eq!(resp.status, 200, "{path}: {}", resp.text());
            resp.json()
        }
    };
    let last = page("/api/v1/audit?before=100000000&limit=1".into()).await["records"][0]["record"]
        ["seq"]
        .as_u64()
        .expect("a newest record");
    let mut seen = Vec::new();
    let mut after = 0;
    while after < last {
        let body = page(format!("/api/v1/audit?after={after}&limit=7")).await;
        let got = page_seqs(&body);
        assert!(!got.is_empty(), "an empty page after {after} (last {last})");
        after = body["next_after"].as_u64().expect("next_after");
        seen.extend(got);
    }
    assert_eq!(seen[..last as usize], (1..=last).collect::<Vec<_>>()[..]);
    // Newest first, across boundaries too.
    let mut back = Vec::new();
    let mut before = last + 1;
    while before > 1 && back.len() < 60 {
        let body = page(format!("/api/v1/audit?before={before}&limit=9")).await;
        let got = page_seqs(&body);
        before = *got.last().expect("a page");
        back.extend(got);
    }
    assert_eq!(
        back,
        (last + 1 - back.len() as u64..=last)
            .rev()
            .collect::<Vec<_>>()
    );
    // One record by seq at a segment's first seq: its prev_hash is the segment before's last.
    let first_of_second = local_segments(&env)
        .get(1)
        .and_then(|n| n.split('-').next()?.parse::<u64>().ok())
        .expect("a second segment");
    let one = page(format!("/api/v1/audit/{first_of_second}")).await;
    let prev = page(format!("/api/v1/audit/{}", first_of_second - 1)).await;
    assert_eq!(one["prev_hash"], prev["hash"], "{one}");
    // The seals and archive copies since this start are counted.
    let metrics =
        crate::support::admin::call(proxy.admin_addr, "GET", "/metrics", Some(&token), None)
            .await
            .text();
    for event in ["sealed", "archived"] {
        let line = format!("agentgate_audit_segments_total{{event=\"{event}\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line)?.parse().ok())
            .unwrap_or_else(|| panic!("no {line} in /metrics"));
        assert!(n > 0, "{line}{n}");
    }
    // `audit tail` reads across the boundary too.
    let out = agentgate(&env.home(), &["audit", "tail", "-n", "30", "-o", "json"]).await;
    assert!(out.status.success(), "tail: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 30);
    drop(proxy);
    let records = check_log(&env, &archive, "at the end").await;
    // An independent verifier (Python, stdlib) walks the same segments, archive included.
    let python = std::env::var("AGENTGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = crate::support::clients::clean_command(&python);
    cmd.arg(crate::support::clients::clients_dir().join("verify_audit.py"))
        .arg(env.home().join("audit.db"))
        .arg("--archive")
        .arg(&archive)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = crate::support::clients::output(cmd, "verify_audit.py").await;
    assert_eq!(
        text(&out.stdout).trim(),
        format!("ok {}", records.len()),
        "{}",
        text(&out.stderr)
    );
    let archived = archived_segments(&archive);
    assert!(archived.len() >= 6, "{archived:?}");
    eprintln!(
        "{} records in {} segments, {} archived",
        records.len(),
        local_segments(&env).len(),
        archived.len()
    );
}

/// Retention removes a sealed segment from the state dir only once it is in the archive:
/// with the archive unwritable nothing goes; once it is writable again the archive catches
/// up and retention removes the old segments, and the whole history still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_only_archived_segments() {
    let env = TestEnv::new().await;
    // The archive's parent is a file: nothing can be archived until it is replaced.
    let blocked = env.dir.path().join("volume");
    std::fs::write(&blocked, b"not a directory").expect("write");
    let archive = blocked.join("archive");
    let cfg = tiny_segments(&env, &archive).set("audit.retention", "max_bytes", "\"8KiB\"");
    let proxy = env.start(cfg);
    load(&proxy, "unarchived", Duration::from_secs(2)).await;
    let rolled = Instant::now() + Duration::from_secs(10);
    while local_segments(&env).len() < 6 {
        assert!(Instant::now() < rolled, "segments never rolled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Retention's limit is long passed, but nothing was archived, so nothing went.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kept = local_segments(&env);
    assert_eq!(
        kept[0].split('-').next(),
        Some("00000000000000000001"),
        "{kept:?}"
    );
    assert!(
        proxy.stderr().contains("archiving"),
        "the archive failure is not reported: {}",
        proxy.stderr()
    );
    // The volume comes back.
    std::fs::remove_file(&blocked).expect("rm");
    std::fs::create_dir_all(&archive).expect("mkdir");
    let caught_up = Instant::now() + Duration::from_secs(20);
    loop {
        let local = local_segments(&env);
        let archived = archived_segments(&archive);
        let bytes: u64 = local
            .iter()
            .map(|n| {
                std::fs::metadata(env.home().join("audit.segments").join(n)).map_or(0, |m| m.len())
            })
            .sum();
        // Every local one archived, and the local ones within the limit (the newest one
        // may pass it alone).
        if local.iter().all(|n| archived.contains(n)) && (bytes <= 8192 || local.len() == 1) {
            assert!(archived.len() >= kept.len(), "{archived:?}");
            assert!(
                !local.contains(&kept[0]),
                "the oldest segment stayed: {local:?}"
            );
            break;
        }
        assert!(
            Instant::now() < caught_up,
            "local {local:?}, archived {archived:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Without the archive, verify starts where the state dir does, vouched for by a
    // signed checkpoint; with it, from the first record.
    let (intact, alone) = verify(&env, None).await;
    assert!(intact, "{alone}");
    assert!(alone["from_seq"].as_u64() > Some(1), "{alone}");
    drop(proxy);
    check_log(&env, &archive, "after retention").await;
}
