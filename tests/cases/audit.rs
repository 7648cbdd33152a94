//! The audit log end to end: a real log written by the proxy, tampered with in every way
//! an attacker on the log's host could (edit, delete, swap, truncate, roll back, rewrite
//! with recomputed hashes, forge checkpoints) and `agentgate audit verify` naming the first
//! bad `seq`; `kill -9` under load never leaving a forwarded request without its committed
//! decision; and an independent Python verifier recomputing the same chain.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{Context, SHA256};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rusqlite::{Connection, OpenFlags, params};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::clients::{clean_command, clients_dir, output};
use crate::support::proxy::{ConfigBuilder, Proxy, cli};
use crate::support::raw;
use crate::support::{TestEnv, agent};

const DB: &str = "audit.db";
const JSONL: &str = "checkpoints.jsonl";
const PUBKEY: &str = "audit.pub";

// ---------------------------------------------------------------------------------------
// CLI, files, SQLite

/// `agentgate ARGS` with `AGENTGATE_HOME=home`, off the async workers.
pub(super) async fn agentgate(home: &Path, args: &[&str]) -> Output {
    let home = home.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&home, &args, &[])
    })
    .await
    .expect("cli task")
}

pub(super) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What `agentgate audit verify` said about one state dir (run in both output modes).
struct Verdict {
    intact: bool,
    report: Value,
    text: String,
}

impl Verdict {
    fn problem_seq(&self) -> Option<u64> {
        self.report["problem"]["seq"].as_u64()
    }
}

/// `agentgate audit verify --db DIR/audit.db --checkpoint DIR/checkpoints.jsonl --pubkey
/// DIR/audit.pub`, as text and as `-o json`; both must agree.
async fn verify(dir: &Path) -> Verdict {
    let db = dir.join(DB).display().to_string();
    let cp = dir.join(JSONL).display().to_string();
    let key = dir.join(PUBKEY).display().to_string();
    let mut args = vec!["audit", "verify", "--db", &db, "--pubkey", &key];
    // A named checkpoint file must exist (verify refuses a missing one); cases that
    // removed it verify against the log's own checkpoints.
    if dir.join(JSONL).exists() {
        args.extend(["--checkpoint", &cp]);
    }
    let json_out = agentgate(dir, &[&args[..], &["-o", "json"]].concat()).await;
    let text_out = agentgate(dir, &args).await;
    let report: Value = serde_json::from_slice(&json_out.stdout).unwrap_or_else(|e| {
        panic!(
            "audit verify -o json printed no JSON ({e}); exit {}\nstdout: {}\nstderr: {}",
            json_out.status,
            text(&json_out.stdout),
            text(&json_out.stderr)
        )
    });
    let verdict = Verdict {
        intact: json_out.status.success(),
        report,
        text: text(&text_out.stdout),
    };
    assert_eq!(
        verdict.intact,
        text_out.status.success(),
        "text and JSON verify disagree on the exit status: {}\n{}",
        verdict.report,
        verdict.text
    );
    assert_eq!(
        verdict.intact,
        verdict.report["problem"].is_null(),
        "exit status {} but report {}",
        json_out.status,
        verdict.report
    );
    verdict
}

async fn expect_intact(dir: &Path, what: &str) -> Value {
    let v = verify(dir).await;
    assert!(
        v.intact && v.text.lines().any(|l| l == "intact"),
        "{what}: verify should pass on an untouched log, got {}\n{}",
        v.report,
        v.text
    );
    v.report
}

/// Verification fails; returns the problem's seq after checking the text form names it.
async fn expect_broken(dir: &Path, what: &str) -> (u64, String) {
    let v = verify(dir).await;
    assert!(
        !v.intact,
        "{what}: verify exited 0 on a tampered log: {}\n{}",
        v.report, v.text
    );
    let seq = v
        .problem_seq()
        .unwrap_or_else(|| panic!("{what}: no problem.seq in {}", v.report));
    assert!(
        v.text.contains(&format!("NOT INTACT at seq {seq}: ")),
        "{what}: text output does not name seq {seq}: {}",
        v.text
    );
    let why = v.report["problem"]["why"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (seq, why)
}

async fn expect_broken_at(dir: &Path, what: &str, want: u64) -> String {
    let (seq, why) = expect_broken(dir, what).await;
    assert_eq!(seq, want, "{what}: wrong seq named ({why})");
    why
}

/// Copies the regular files of a state dir (the db with any -wal/-shm, the jsonl, keys).
fn copy_state(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy dir");
    for entry in std::fs::read_dir(from).expect("read state dir") {
        let entry = entry.expect("dir entry");
        if entry.file_type().expect("file type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy state file");
        }
    }
}

/// A fresh copy of `pristine` for one tampering case.
fn case_dir(log: &Log, name: &str) -> PathBuf {
    let dir = log.env.dir.path().join("cases").join(name);
    copy_state(&log.pristine, &dir);
    dir
}

fn open_rw(dir: &Path) -> Connection {
    Connection::open(dir.join(DB)).expect("open audit.db")
}

fn open_ro(dir: &Path) -> Connection {
    Connection::open_with_flags(dir.join(DB), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open audit.db read-only")
}

/// `(seq, record, hash)` of every record, in order.
fn rows(dir: &Path) -> Vec<(u64, String, String)> {
    let conn = open_ro(dir);
    let mut stmt = conn
        .prepare("SELECT seq, record, hash FROM records ORDER BY seq")
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
    })
    .expect("query records")
    .map(|r| r.expect("record row"))
    .collect()
}

fn records(dir: &Path) -> Vec<Value> {
    rows(dir)
        .iter()
        .map(|(_, r, _)| serde_json::from_str(r).expect("record JSON"))
        .collect()
}

fn log_id(dir: &Path) -> String {
    open_ro(dir)
        .query_row("SELECT value FROM meta WHERE key = 'log_id'", [], |r| {
            r.get(0)
        })
        .expect("log_id")
}

/// Sizes of the checkpoints stored in the log itself.
fn db_checkpoints(dir: &Path) -> Vec<u64> {
    let conn = open_ro(dir);
    let mut stmt = conn
        .prepare("SELECT size FROM checkpoints ORDER BY size")
        .expect("prepare");
    stmt.query_map([], |r| r.get::<_, i64>(0))
        .expect("query checkpoints")
        .map(|r| r.expect("checkpoint row") as u64)
        .collect()
}

/// The lines of `checkpoints.jsonl`, parsed.
fn jsonl_checkpoints(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join(JSONL))
        .expect("read checkpoints.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("checkpoint line JSON"))
        .collect()
}

fn append_jsonl(dir: &Path, line: &Value) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(JSONL))
        .expect("open checkpoints.jsonl");
    writeln!(f, "{line}").expect("append checkpoint line");
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> [u8; 32] {
    assert_eq!(s.len(), 64, "not a hex SHA-256: {s:?}");
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex digit");
    }
    out
}

// ---------------------------------------------------------------------------------------
// A real log

/// A proxy that writes a checkpoint every 5 records.
fn audit_config(env: &TestEnv) -> ConfigBuilder {
    env.config().set("audit", "checkpoint_every", "5")
}

/// `n` GETs of `/echo?run=RUN&i=…` on one tunnel, then an anonymous CONNECT (refused).
async fn traffic(proxy: &Proxy, run: &str, n: usize) {
    let tls = raw::tunnel_to(proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    for i in 0..n {
        let resp = raw::send_h1(
            &mut h1,
            raw::get(&format!("/echo?run={run}&i={i}"), "api.github.com"),
        )
        .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    drop(h1);
    let (_s, refused) = raw::connect_as(proxy.proxy_addr, "api.github.com:443", None).await;
    assert_ne!(refused.status, 200, "an anonymous CONNECT was let through");
}

/// SIGTERM, and the proxy exits 0 (having written its final checkpoint).
async fn stop_gracefully(mut proxy: Proxy) {
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
}

/// After a graceful stop the last checkpoint, in the log and in the jsonl, covers every
/// record, signed over the real head.
fn assert_final_checkpoint(dir: &Path, what: &str) {
    let rows = rows(dir);
    let (last_seq, _, last_hash) = rows.last().expect("records");
    assert_eq!(
        db_checkpoints(dir).last(),
        Some(last_seq),
        "{what}: the log's last checkpoint does not cover all {last_seq} records"
    );
    let line = jsonl_checkpoints(dir).pop().expect("a checkpoint line");
    assert_eq!(
        line["checkpoint"]["size"].as_u64(),
        Some(*last_seq),
        "{what}: last line of checkpoints.jsonl: {line}"
    );
    assert_eq!(
        line["checkpoint"]["head"].as_str(),
        Some(last_hash.as_str()),
        "{what}: last checkpoint's head: {line}"
    );
    let key = std::fs::read_to_string(dir.join(PUBKEY)).expect("audit.pub");
    assert_eq!(line["key"].as_str(), Some(key.trim()), "{what}: {line}");
}

struct Log {
    env: TestEnv,
    /// The state dir after both runs, untouched.
    pristine: PathBuf,
    /// The state dir after the first run (for the rollback case).
    early: PathBuf,
    early_size: u64,
}

impl Log {
    fn size(&self) -> u64 {
        rows(&self.pristine).len() as u64
    }

    /// The allowed decision record nearest the middle of the log.
    fn middle_decision(&self) -> u64 {
        let records = records(&self.pristine);
        let mid = records.len() as u64 / 2;
        records
            .iter()
            .filter(|r| r["kind"] == "decision" && r["effect"] == "allow" && r["method"] == "GET")
            .filter_map(|r| r["seq"].as_u64())
            .min_by_key(|s| s.abs_diff(mid))
            .expect("an allowed GET decision")
    }
}

/// Two proxy runs on one state dir (SIGTERM after each), 10 requests and a refusal each;
/// copies of the state dir after the first run and after the second.
async fn build_log() -> Log {
    let env = TestEnv::new().await;
    let proxy = env.start(audit_config(&env));
    traffic(&proxy, "first", 10).await;
    stop_gracefully(proxy).await;
    assert_final_checkpoint(&env.home(), "first run");
    let early = env.dir.path().join("early");
    copy_state(&env.home(), &early);
    let early_size = rows(&early).len() as u64;

    let proxy = env.start(audit_config(&env));
    traffic(&proxy, "second", 10).await;
    stop_gracefully(proxy).await;
    assert_final_checkpoint(&env.home(), "second run");
    let pristine = env.dir.path().join("pristine");
    copy_state(&env.home(), &pristine);

    let log = Log {
        env,
        pristine,
        early,
        early_size,
    };
    let report = expect_intact(&log.pristine, "pristine log").await;
    assert_eq!(report["records"].as_u64(), Some(log.size()), "{report}");
    expect_intact(&log.early, "log after the first run").await;

    // What the log says: both runs' loads, every request allowed and forwarded, the
    // refused CONNECTs, the tunnels, and outcomes; checkpoints inside the log, not only at
    // the end.
    let records = records(&log.pristine);
    let count = |f: &dyn Fn(&Value) -> bool| records.iter().filter(|r| f(r)).count();
    assert_eq!(
        count(&|r| r["kind"] == "admin" && r["event"] == "config_loaded"),
        2
    );
    assert_eq!(
        count(&|r| r["kind"] == "decision"
            && r["effect"] == "allow"
            && r["method"] == "GET"
            && r["path"] == "/echo"
            && r["host"] == "api.github.com"),
        20,
        "allowed GET decisions"
    );
    assert_eq!(
        count(&|r| r["kind"] == "decision"
            && r["effect"] == "deny"
            && r["method"] == "CONNECT"
            && r["gate"] == "identity"),
        2,
        "refused CONNECT decisions"
    );
    assert_eq!(count(&|r| r["kind"] == "outcome"), 20, "outcome records");
    assert!(
        records
            .iter()
            .all(|r| r["path"].as_str().is_none_or(|p| !p.contains('?'))),
        "a query string reached the log"
    );
    let sizes = db_checkpoints(&log.pristine);
    assert!(
        sizes.len() >= 6 && sizes[0] <= 10,
        "expected a checkpoint every ~5 records, got sizes {sizes:?} for {} records",
        log.size()
    );
    let jsonl: BTreeSet<u64> = jsonl_checkpoints(&log.pristine)
        .iter()
        .map(|c| c["checkpoint"]["size"].as_u64().expect("size"))
        .collect();
    assert_eq!(
        jsonl,
        sizes.iter().copied().collect::<BTreeSet<u64>>(),
        "checkpoints.jsonl and the log's checkpoints table differ"
    );
    log
}

// ---------------------------------------------------------------------------------------
// Tampering

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tamper_modified_record_is_named() {
    let log = build_log().await;
    let m = log.middle_decision();
    let dir = case_dir(&log, "modified");
    let conn = open_rw(&dir);
    let old: String = conn
        .query_row(
            "SELECT record FROM records WHERE seq = ?1",
            [m as i64],
            |r| r.get(0),
        )
        .expect("record");
    let mut v: Value = serde_json::from_str(&old).expect("record JSON");
    v["effect"] = "deny".into();
    v["gate"] = "policy".into();
    conn.execute(
        "UPDATE records SET record = ?1 WHERE seq = ?2",
        params![v.to_string(), m as i64],
    )
    .expect("update record");
    drop(conn);
    let why = expect_broken_at(&dir, "modified record", m).await;
    assert!(why.contains("hash"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tamper_deleted_record_is_named() {
    let log = build_log().await;
    let m = log.middle_decision();
    let dir = case_dir(&log, "deleted");
    open_rw(&dir)
        .execute("DELETE FROM records WHERE seq = ?1", [m as i64])
        .expect("delete record");
    let why = expect_broken_at(&dir, "deleted record", m).await;
    assert!(why.contains("missing"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tamper_swapped_records_are_named() {
    let log = build_log().await;
    let a = log.middle_decision();
    let b = a + 3;
    let dir = case_dir(&log, "swapped");
    let conn = open_rw(&dir);
    let get = |seq: u64| -> String {
        conn.query_row(
            "SELECT record FROM records WHERE seq = ?1",
            [seq as i64],
            |r| r.get(0),
        )
        .expect("record")
    };
    let (ra, rb) = (get(a), get(b));
    for (seq, record) in [(a, &rb), (b, &ra)] {
        conn.execute(
            "UPDATE records SET record = ?1 WHERE seq = ?2",
            params![record, seq as i64],
        )
        .expect("swap");
    }
    drop(conn);
    expect_broken_at(&dir, "swapped records", a).await;

    // Swapping whole rows (record and hash) is a reordering: still named at the first.
    let dir = case_dir(&log, "swapped-rows");
    let rows = rows(&dir);
    let row = |seq: u64| rows[seq as usize - 1].clone();
    let (ra, rb) = (row(a), row(b));
    let conn = open_rw(&dir);
    for (seq, (_, record, hash)) in [(a, &rb), (b, &ra)] {
        conn.execute(
            "UPDATE records SET record = ?1, hash = ?2 WHERE seq = ?3",
            params![record, hash, seq as i64],
        )
        .expect("swap rows");
    }
    drop(conn);
    expect_broken_at(&dir, "swapped rows", a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tamper_truncated_tail_is_caught_by_the_shipped_checkpoints() {
    let log = build_log().await;
    let size = log.size();
    let new_end = size - 7;
    let dir = case_dir(&log, "truncated");
    let conn = open_rw(&dir);
    conn.execute("DELETE FROM records WHERE seq > ?1", [new_end as i64])
        .expect("truncate records");
    // An attacker drops the log's own later checkpoints too; checkpoints.jsonl was
    // shipped elsewhere and still has them.
    conn.execute("DELETE FROM checkpoints WHERE size > ?1", [new_end as i64])
        .expect("drop checkpoints");
    drop(conn);
    assert!(
        jsonl_checkpoints(&dir)
            .iter()
            .any(|c| c["checkpoint"]["size"].as_u64() > Some(new_end)),
        "no shipped checkpoint beyond the new end"
    );
    let why = expect_broken_at(&dir, "truncated tail", new_end + 1).await;
    assert!(why.contains("truncated"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tamper_rollback_to_an_older_copy_is_caught() {
    let log = build_log().await;
    assert!(log.early_size < log.size());
    let dir = case_dir(&log, "rolled-back");
    // Put back the database as it was after the first run; the shipped checkpoints.jsonl
    // is the newer one.
    for entry in std::fs::read_dir(&dir).expect("read case dir") {
        let entry = entry.expect("entry");
        if entry.file_name().to_string_lossy().starts_with(DB) {
            std::fs::remove_file(entry.path()).expect("remove db file");
        }
    }
    for entry in std::fs::read_dir(&log.early).expect("read early dir") {
        let entry = entry.expect("entry");
        if entry.file_name().to_string_lossy().starts_with(DB) {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("restore old db");
        }
    }
    assert_eq!(rows(&dir).len() as u64, log.early_size);
    let why = expect_broken_at(&dir, "rolled back db", log.early_size + 1).await;
    assert!(why.contains("rolled back"), "{why}");
}

/// Rewrites records from `m` on with `edit` applied to record `m` and every hash after it
/// recomputed, as someone without the signing key could.
fn rewrite_chain(dir: &Path, m: u64, edit: impl Fn(&mut Value)) {
    let rows = rows(dir);
    let mut prev = if m == 1 {
        sha256(&[b"agentgate-audit-v1:", log_id(dir).as_bytes()])
    } else {
        unhex(&rows[m as usize - 2].2)
    };
    let conn = open_rw(dir);
    for (seq, record, _) in &rows[m as usize - 1..] {
        let record = if *seq == m {
            let mut v: Value = serde_json::from_str(record).expect("record JSON");
            edit(&mut v);
            v.to_string()
        } else {
            record.clone()
        };
        let hash = sha256(&[&prev, record.as_bytes()]);
        conn.execute(
            "UPDATE records SET record = ?1, hash = ?2 WHERE seq = ?3",
            params![record, hex(&hash), *seq as i64],
        )
        .expect("rewrite record");
        prev = hash;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tamper_rewritten_chain_is_caught_by_a_checkpoint() {
    let log = build_log().await;
    let m = log.middle_decision();
    let first_cp = *db_checkpoints(&log.pristine)
        .iter()
        .find(|&&s| s >= m)
        .expect("a checkpoint at or after the change");

    // Recomputed hashes, checkpoints left as they were.
    let dir = case_dir(&log, "rewritten");
    rewrite_chain(&dir, m, |v| v["path"] = "/innocent".into());
    let (seq, why) = expect_broken(&dir, "rewritten chain").await;
    assert!(
        (m..=first_cp).contains(&seq),
        "rewritten chain: named seq {seq}, expected between the change ({m}) and the first checkpoint after it ({first_cp}): {why}"
    );
    assert!(why.contains("checkpoint"), "{why}");

    // Same, and the log's own checkpoints dropped: the shipped ones still catch it.
    let dir = case_dir(&log, "rewritten-no-db-checkpoints");
    rewrite_chain(&dir, m, |v| v["path"] = "/innocent".into());
    open_rw(&dir)
        .execute("DELETE FROM checkpoints", [])
        .expect("drop checkpoints");
    let (seq, why) = expect_broken(&dir, "rewritten chain, no db checkpoints").await;
    assert!(
        (m..=first_cp).contains(&seq),
        "rewritten chain without db checkpoints: named seq {seq}, expected {m}..={first_cp}: {why}"
    );

    // Sanity: the rewritten chain is self-consistent (only a checkpoint can tell).
    let dir = case_dir(&log, "rewritten-no-checkpoints");
    rewrite_chain(&dir, m, |v| v["path"] = "/innocent".into());
    open_rw(&dir)
        .execute("DELETE FROM checkpoints", [])
        .expect("drop checkpoints");
    std::fs::remove_file(dir.join(JSONL)).expect("remove jsonl");
    expect_intact(&dir, "rewritten chain with every checkpoint gone").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tamper_forged_checkpoints_are_refused() {
    let log = build_log().await;
    let size = log.size();
    let rows = rows(&log.pristine);
    let last = jsonl_checkpoints(&log.pristine)
        .pop()
        .expect("a checkpoint line");
    assert_eq!(last["checkpoint"]["size"].as_u64(), Some(size));

    // The old signature over a changed size.
    let dir = case_dir(&log, "forged-size");
    let mut forged = last.clone();
    forged["checkpoint"]["size"] = (size + 3).into();
    append_jsonl(&dir, &forged);
    let why = expect_broken_at(&dir, "checkpoint with a changed size", size + 3).await;
    assert!(why.contains("signature"), "{why}");

    // The old signature over a changed head.
    let dir = case_dir(&log, "forged-head");
    let mut forged = last.clone();
    forged["checkpoint"]["head"] = rows[size as usize - 2].2.clone().into();
    append_jsonl(&dir, &forged);
    let why = expect_broken_at(&dir, "checkpoint with a changed head", size).await;
    assert!(why.contains("signature"), "{why}");

    // Properly signed, by a key that is not the log's: once naming its own key, once
    // claiming the log's.
    let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
        .expect("generate key");
    let key = Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("parse key");
    let real_key = std::fs::read_to_string(log.pristine.join(PUBKEY)).expect("audit.pub");
    let at = size - 2;
    let checkpoint = json!({
        "head": rows[at as usize - 1].2,
        "log_id": log_id(&log.pristine),
        "size": at,
        "time": last["checkpoint"]["time"],
    });
    let sig = key.sign(checkpoint.to_string().as_bytes());
    for (name, claimed) in [
        ("forged-fresh-key", hex(key.public_key().as_ref())),
        ("forged-claims-log-key", real_key.trim().to_owned()),
    ] {
        let dir = case_dir(&log, name);
        append_jsonl(
            &dir,
            &json!({
                "checkpoint": checkpoint,
                "sig": base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
                "key": claimed,
            }),
        );
        let why = expect_broken_at(&dir, name, at).await;
        assert!(why.contains("signature"), "{name}: {why}");
    }
}

// ---------------------------------------------------------------------------------------
// kill -9 under load

/// Most requests one load client sends in one iteration (the kill ends it long before).
const MAX_REQUESTS: usize = 5_000;
const LOAD_CLIENTS: usize = 4;
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What one load client saw before the proxy died.
#[derive(Default, Debug)]
pub(super) struct Load {
    pub(super) ok: usize,
    /// Answers other than 200 (CONNECT or GET): none are expected.
    pub(super) unexpected: Vec<String>,
}

/// CONNECT + TLS + HTTP/1.1 handshake without panicking: the proxy may die at any step.
async fn open_h1(proxy: SocketAddr, ca: &Path) -> Result<raw::H1, Option<String>> {
    let mut tcp = TcpStream::connect(proxy).await.map_err(|_| None)?;
    let _ = tcp.set_nodelay(true);
    let req = format!(
        "CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\nProxy-Authorization: {}\r\n\r\n",
        agent::bearer()
    );
    tcp.write_all(req.as_bytes()).await.map_err(|_| None)?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte).await {
            Ok(1) if head.len() < 64 * 1024 => head.push(byte[0]),
            _ => return Err(None),
        }
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(Some(format!("CONNECT answered {:?}", text(&head))));
    }
    let tls = raw::client_tls(ca, &[b"http/1.1"])
        .connect(
            rustls_pki_types::ServerName::try_from("api.github.com").expect("name"),
            tcp,
        )
        .await
        .map_err(|_| None)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|_| None)?;
    tokio::spawn(conn);
    Ok(sender)
}

/// GETs `/echo/PREFIX-n` on one tunnel until the proxy goes away (or the bounds are hit).
pub(super) async fn load_client(
    proxy: SocketAddr,
    ca: PathBuf,
    prefix: String,
    deadline: Instant,
) -> Load {
    let mut load = Load::default();
    let mut sender = match tokio::time::timeout(STEP_TIMEOUT, open_h1(proxy, &ca)).await {
        Ok(Ok(s)) => s,
        Ok(Err(Some(why))) => {
            load.unexpected.push(why);
            return load;
        }
        _ => return load,
    };
    for n in 0..MAX_REQUESTS {
        if Instant::now() > deadline {
            break;
        }
        let req = raw::get(&format!("/echo/{prefix}-{n}"), "api.github.com");
        let step = async {
            sender.ready().await.ok()?;
            let resp = sender.send_request(req).await.ok()?;
            let status = resp.status();
            resp.into_body().collect().await.ok()?;
            Some(status)
        };
        match tokio::time::timeout(STEP_TIMEOUT, step).await {
            Ok(Some(status)) if status == 200 => load.ok += 1,
            Ok(Some(status)) => {
                load.unexpected
                    .push(format!("GET /echo/{prefix}-{n}: {status}"));
                break;
            }
            _ => break,
        }
    }
    load
}

/// After a crash: SQLite is consistent, the chain verifies, and every request the upstream
/// received has its committed `allow` decision.
async fn check_after_crash(env: &TestEnv, what: &str) -> usize {
    let home = env.home();
    let conn = open_ro(&home);
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok", "{what}: PRAGMA integrity_check");
    drop(conn);

    // The default paths: audit.db, checkpoints.jsonl and audit.pub in AGENTGATE_HOME.
    let out = agentgate(&home, &["audit", "verify", "-o", "json"]).await;
    assert!(
        out.status.success(),
        "{what}: audit verify failed after kill -9 ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );

    let mut allowed: BTreeMap<String, usize> = BTreeMap::new();
    for r in records(&home) {
        if r["kind"] == "decision" && r["effect"] == "allow" && r["method"] != "CONNECT" {
            if let Some(p) = r["path"].as_str() {
                *allowed.entry(p.to_owned()).or_default() += 1;
            }
        }
    }
    let received = env.upstream.requests();
    let mut missing = Vec::new();
    for line in &received {
        let target = line.split_once(' ').map_or("", |(_, t)| t);
        let path = target.split('?').next().unwrap_or_default();
        assert!(
            path.starts_with('/'),
            "unexpected upstream log line {line:?}"
        );
        if !allowed.contains_key(path) {
            missing.push(line.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{what}: {} of {} requests reached the upstream without a committed decision: {:?}",
        missing.len(),
        received.len(),
        &missing[..missing.len().min(10)]
    );
    received.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_never_forwards_an_unlogged_request() {
    const ITERATIONS: usize = 5;
    let env = TestEnv::new().await;
    let started = Instant::now();
    // Checkpoints now and then, so kills also land between and around them.
    let cfg = env.config().set("audit", "checkpoint_every", "16");
    let mut seen = 0;
    for iter in 0..ITERATIONS {
        let proxy = env.start(cfg.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        let clients: Vec<_> = (0..LOAD_CLIENTS)
            .map(|c| {
                tokio::spawn(load_client(
                    proxy.proxy_addr,
                    proxy.ca_path.clone(),
                    format!("{iter}-{c}"),
                    deadline,
                ))
            })
            .collect();
        // Mid-load: once requests are flowing, after a random extra 0-400 ms.
        let flowing = Instant::now() + Duration::from_secs(20);
        while env.upstream.requests().len() < seen + LOAD_CLIENTS * 2 {
            assert!(
                Instant::now() < flowing,
                "iteration {iter}: requests are not reaching the upstream"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let delay = Duration::from_millis(rand::random::<u64>() % 400);
        tokio::time::sleep(delay).await;
        // SIGKILL mid-load, and reap it.
        proxy.stop();
        let mut served = 0;
        for c in clients {
            let load = tokio::time::timeout(Duration::from_secs(30), c)
                .await
                .expect("load client did not stop after the kill")
                .expect("load client task");
            assert!(
                load.unexpected.is_empty(),
                "iteration {iter}: unexpected answers before the kill: {:?}",
                load.unexpected
            );
            served += load.ok;
        }
        let received = check_after_crash(&env, &format!("after kill {iter}")).await;
        eprintln!(
            "kill {iter} ({delay:?} into the load): {served} answered, {} reached the upstream",
            received - seen
        );
        seen = received;
    }

    // The log goes on after the crashes and closes with a checkpoint over everything.
    let proxy = env.start(cfg);
    traffic(&proxy, "after-crashes", 3).await;
    stop_gracefully(proxy).await;
    check_after_crash(&env, "after the final graceful stop").await;
    assert_final_checkpoint(&env.home(), "after the crashes");
    let loads = records(&env.home())
        .iter()
        .filter(|r| r["event"] == "config_loaded")
        .count();
    assert_eq!(loads, ITERATIONS + 1, "one config_loaded record per start");
    eprintln!("crash test took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------
// An independent verifier

async fn python_verify(db: &Path, export: Option<&Path>) -> (bool, String) {
    let python = std::env::var("AGENTGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = clean_command(&python);
    cmd.arg(clients_dir().join("verify_audit.py"))
        .arg(db)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    if let Some(export) = export {
        cmd.arg("--export").arg(export);
    }
    let out = output(cmd, "python3 verify_audit.py").await;
    assert!(
        out.stderr.is_empty(),
        "verify_audit.py wrote to stderr: {}",
        text(&out.stderr)
    );
    (out.status.success(), text(&out.stdout).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_recomputes_the_same_chain() {
    let log = build_log().await;
    let report = expect_intact(&log.pristine, "pristine").await;

    let db = log.pristine.join(DB).display().to_string();
    let out = agentgate(&log.pristine, &["audit", "export", "--db", &db]).await;
    assert!(out.status.success(), "export: {}", text(&out.stderr));
    let export = log.env.dir.path().join("export.jsonl");
    std::fs::write(&export, &out.stdout).expect("write export");
    let lines = text(&out.stdout).lines().count() as u64;
    assert_eq!(Some(lines), report["records"].as_u64(), "export lines");

    let (ok, said) = python_verify(&log.pristine.join(DB), Some(&export)).await;
    assert!(ok, "python verifier: {said}");
    assert_eq!(
        said,
        format!("ok {}", report["records"]),
        "python and Rust disagree on the record count"
    );

    // `export --since` starts after the given seq.
    let since = (lines - 4).to_string();
    let out = agentgate(
        &log.pristine,
        &["audit", "export", "--db", &db, "--since", &since],
    )
    .await;
    let first: Value = serde_json::from_str(text(&out.stdout).lines().next().expect("a line"))
        .expect("export JSON line");
    assert_eq!(first["record"]["seq"].as_u64(), Some(lines - 3));
    assert_eq!(text(&out.stdout).lines().count(), 4);

    // Both name the same record when one is edited.
    let m = log.middle_decision();
    let dir = case_dir(&log, "python-modified");
    open_rw(&dir)
        .execute(
            "UPDATE records SET record = replace(record, '\"GET\"', '\"PUT\"') WHERE seq = ?1",
            [m as i64],
        )
        .expect("edit record");
    assert!(
        rows(&dir)[m as usize - 1].1.contains("\"PUT\""),
        "record {m} not edited"
    );
    let (ok, said) = python_verify(&dir.join(DB), None).await;
    assert!(!ok, "python missed an edited record: {said}");
    assert!(said.starts_with(&format!("BAD seq {m}:")), "{said}");
    expect_broken_at(&dir, "edited record (python case)", m).await;

    // And when one is deleted.
    let dir = case_dir(&log, "python-deleted");
    open_rw(&dir)
        .execute("DELETE FROM records WHERE seq = ?1", [m as i64])
        .expect("delete record");
    let (ok, said) = python_verify(&dir.join(DB), None).await;
    assert!(!ok && said.starts_with(&format!("BAD seq {m}:")), "{said}");
    expect_broken_at(&dir, "deleted record (python case)", m).await;
}

/// GET on the admin port; `token` goes in `Authorization: Bearer`.
async fn admin_get(addr: SocketAddr, path: &str, token: Option<&str>) -> raw::RawResponse {
    crate::support::admin::call(addr, "GET", path, token, None).await
}

/// The admin API pages through records and verifies the live log; `audit tail` and
/// `audit export` read it from the CLI while the proxy runs; outcome records carry the
/// bytes that really moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_and_cli_read_the_live_log() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let resp = raw::send_h1(&mut h1, raw::get("/bytes?n=12345", "api.github.com")).await;
    assert_eq!(resp.status, 200);
    drop(h1);

    let token = std::fs::read_to_string(proxy.home.join("admin.token")).unwrap();
    let denied = admin_get(proxy.admin_addr, "/api/v1/audit", None).await;
    assert_eq!(denied.status, 401);
    assert_eq!(
        admin_get(proxy.admin_addr, "/api/v1/audit", Some("wrong"))
            .await
            .status,
        401
    );
    // The outcome lands when the response body ends: wait for it.
    let mut page = Value::Null;
    for _ in 0..50 {
        page = admin_get(
            proxy.admin_addr,
            "/api/v1/audit?after=0&limit=1000",
            Some(token.trim()),
        )
        .await
        .json();
        let has_outcome = page["records"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["record"]["kind"] == "outcome"));
        if has_outcome {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records = page["records"].as_array().expect("records");
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["record"]["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        ["admin", "decision", "decision", "outcome"],
        "{page:#}"
    );
    let outcome = &records[3]["record"];
    assert_eq!(outcome["status"], 200);
    assert_eq!(outcome["bytes_down"], 12345);
    assert_eq!(outcome["request_id"], records[2]["record"]["request_id"]);
    assert_eq!(records[1]["record"]["method"], "CONNECT");
    assert_eq!(page["next_after"], 4);
    let next = admin_get(
        proxy.admin_addr,
        "/api/v1/audit?after=2&limit=1",
        Some(token.trim()),
    )
    .await
    .json();
    assert_eq!(next["records"][0]["record"]["seq"], 3);

    let verify = admin_get(proxy.admin_addr, "/api/v1/audit/verify", Some(token.trim()))
        .await
        .json();
    assert_eq!(verify["intact"], true, "{verify}");
    assert_eq!(verify["records"], 4);

    let tail = agentgate(&proxy.home, &["audit", "tail", "-n", "2", "-o", "json"]).await;
    let lines: Vec<Value> = text(&tail.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("tail -o json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["kind"], "outcome");
    let export = agentgate(&proxy.home, &["audit", "export", "--since", "3"]).await;
    let exported: Vec<Value> = text(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("export line"))
        .collect();
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0]["record"]["seq"], 4);
    assert_eq!(exported[0]["hash"], records[3]["hash"]);
}

/// `agentgate audit export | head`: when the reader closes the pipe, export stops quietly and
/// succeeds, like any filter, instead of failing with "Broken pipe".
#[test]
fn export_into_a_closed_pipe_stops_quietly() {
    stops_quietly_into_a_closed_pipe(&["audit", "export"], b"{\"hash\":");
}

/// `agentgate audit tail -f | head`: the same for a command that prints line by line and
/// would otherwise follow the log forever.
#[test]
fn tail_into_a_closed_pipe_stops_quietly() {
    stops_quietly_into_a_closed_pipe(
        &["audit", "tail", "-n", "500", "--follow", "--output", "json"],
        b"{\"",
    );
}

/// Runs `args` (with `--db` of a log far larger than a pipe holds), reads its first 4 KiB
/// (which must start with `first`), closes the pipe and expects a quiet exit 0.
fn stops_quietly_into_a_closed_pipe(args: &[&str], first: &[u8]) {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join(DB);
    let conn = Connection::open(&db).expect("create audit.db");
    conn.execute_batch(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE records (seq INTEGER PRIMARY KEY, record TEXT NOT NULL, hash TEXT NOT NULL);
         CREATE TABLE checkpoints (size INTEGER PRIMARY KEY, signed TEXT NOT NULL);
         INSERT INTO meta VALUES ('log_id', '0123456789abcdef0123456789abcdef');",
    )
    .expect("schema");
    // Far more than a pipe holds (64 KiB), so the command must write after the reader is gone.
    let pad = "x".repeat(1000);
    for seq in 1..=500i64 {
        let record = json!({"kind": "admin", "event": "test", "pad": pad, "seq": seq});
        conn.execute(
            "INSERT INTO records VALUES (?1, ?2, ?3)",
            params![seq, record.to_string(), "00".repeat(32)],
        )
        .expect("insert");
    }
    drop(conn);

    let db = db.display().to_string();
    let mut cmd: Vec<&str> = args.to_vec();
    cmd.extend(["--db", &db]);
    let mut child = crate::support::proxy::spawn(&[], dir.path(), &cmd, &[]);
    let mut stdout = child.stdout.take().expect("stdout");
    let mut head = [0u8; 4096];
    if let Err(e) = stdout.read_exact(&mut head) {
        let out = child.wait_with_output().expect("wait for agentgate");
        panic!(
            "{args:?} wrote less than 4 KiB ({e}): {}",
            text(&out.stderr)
        );
    }
    assert!(
        head.starts_with(first),
        "{args:?} output: {:?}",
        String::from_utf8_lossy(&head[..200])
    );
    drop(stdout);
    let out = child.wait_with_output().expect("wait for agentgate");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{args:?} into a closed pipe: {:?}, stderr {:?}",
        out.status,
        text(&out.stderr)
    );
}

/// An audit commit syncs its WAL with `fdatasync`, not `fsync`: `fsync` also writes the
/// inode back for the mtime every write moves, one more synchronous I/O per commit (SQLite
/// only uses `fdatasync` when built with `HAVE_FDATASYNC`, see `.cargo/config.toml`). The
/// CLI appends to the log itself while no proxy runs, through the same writer.
#[test]
fn audit_commits_sync_the_data_not_the_inode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let trace = dir.path().join("syncs.txt");
    let trace_arg = trace.display().to_string();
    let strace = [
        "strace",
        "-f",
        "-qq",
        "-y",
        "-e",
        "trace=fsync,fdatasync",
        "-o",
        &trace_arg,
    ];
    let register = ["agents", "register", "syncs", "--owner", "ops@example.com"];
    let out = crate::support::proxy::cli_in(&strace, &home, &register, &[]);
    assert!(
        out.status.success(),
        "agents register under strace failed ({}); scripts/test installs strace:\n{}",
        out.status,
        text(&out.stderr)
    );
    let syncs = std::fs::read_to_string(&trace).expect("strace output");
    let wal: Vec<&str> = syncs
        .lines()
        .filter(|l| l.contains(&format!("{DB}-wal>")))
        .collect();
    assert!(
        wal.iter().any(|l| l.contains("fdatasync(")),
        "no fdatasync of the audit WAL; every sync seen:\n{syncs}"
    );
    assert!(
        !wal.iter()
            .any(|l| l.contains(" fsync(") || l.starts_with("fsync(")),
        "the audit WAL was synced with fsync:\n{syncs}"
    );
}
