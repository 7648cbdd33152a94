//! Sealing, reading and verifying across segments, on a real log with tiny segments.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::audit::segment::{self, Sealed};
use crate::audit::verify::{Report, Sources, verify_all, verify_visiting};
use crate::audit::view::View;
use crate::audit::{Audit, AuditConfig, Durability};
use crate::state::StateDir;

struct Log {
    _dir: tempfile::TempDir,
    state: StateDir,
    config: AuditConfig,
    archive: PathBuf,
}

impl Log {
    fn new(retention: bool) -> Log {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path().join("home")).unwrap();
        let archive = dir.path().join("archive");
        let mut config = AuditConfig {
            durability: Durability::Commit,
            segment_max_bytes: bytesize::ByteSize::b(4096),
            archive_dir: archive.clone(),
            ..AuditConfig::default()
        };
        if retention {
            config.retention.max_bytes = Some(bytesize::ByteSize::b(1));
        }
        Log {
            _dir: dir,
            state,
            config,
            archive,
        }
    }

    fn db(&self) -> PathBuf {
        self.config.db_path(&self.state)
    }

    fn open(&self) -> Audit {
        Audit::open(&self.config, &self.state, "test", Default::default()).unwrap()
    }

    /// Writes `n` records, ten at a time, waiting after each ten until the sealer has
    /// sealed, archived and trimmed (a segment is sealed at the writer's next tick, so a
    /// burst would make one big segment).
    async fn write(&self, audit: &Audit, n: usize) {
        for i in 0..n {
            audit
                .admin_event(
                    "config_loaded",
                    serde_json::json!({ "i": i, "pad": "x".repeat(200) }),
                )
                .await
                .unwrap();
            if i % 10 == 9 || i + 1 == n {
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while self.settling() {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the sealer never caught up"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Whether a seal, a trim or an archive copy is still to come.
    fn settling(&self) -> bool {
        let conn = rusqlite::Connection::open(self.db()).unwrap();
        let pending = crate::audit::seal::pending(&conn).unwrap();
        let (base, _) = segment::base(&conn, &log_id(&conn)).unwrap();
        let untrimmed: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM records WHERE seq <= ?1",
                [base as i64],
                |r| r.get(0),
            )
            .unwrap();
        let local = self.local();
        let unarchived = local
            .iter()
            .any(|s| !self.archived().iter().any(|a| a.name() == s.name()));
        // A full active segment is sealed at the writer's next tick.
        let (bytes, _) = crate::audit::seal::active_stats(&conn, base).unwrap();
        let full = bytes >= self.config.segment_max_bytes.as_u64();
        pending > 0 || untrimmed > 0 || unarchived || full
    }

    fn local(&self) -> Vec<Sealed> {
        segment::list(&segment::local_dir(&self.db())).unwrap()
    }

    fn archived(&self) -> Vec<Sealed> {
        let conn = rusqlite::Connection::open(self.db()).unwrap();
        segment::list(&segment::archive_dir(&self.archive, &log_id(&conn))).unwrap()
    }

    fn verify(&self, archive: bool) -> Report {
        let key =
            std::fs::read_to_string(self.state.path(crate::audit::checkpoint::PUB_FILE)).unwrap();
        let jsonl = self
            .db()
            .with_file_name(crate::audit::checkpoint::JSONL_FILE);
        let sources = Sources {
            archive: archive.then_some(self.archive.as_path()),
            checkpoint_file: Some(jsonl.as_path()),
            public_hex: Some(key.trim()),
        };
        // In order, and with sealed segments hashed in parallel: the same verdict.
        let in_order = verify_visiting(&self.db(), &sources, |_, _| {}).unwrap();
        let parallel = verify_all(&self.db(), &sources).unwrap();
        assert_eq!(in_order.problem, parallel.problem);
        assert_eq!(
            (in_order.from_seq, in_order.records, in_order.segments),
            (parallel.from_seq, parallel.records, parallel.segments)
        );
        parallel
    }
}

fn log_id(conn: &rusqlite::Connection) -> String {
    segment::meta(conn, "log_id").unwrap().unwrap()
}

fn seqs(view: &View, after: u64, limit: usize) -> Vec<u64> {
    view.page_after(after, limit, |part, left| {
        let mut stmt = part
            .conn
            .prepare("SELECT seq FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2")
            .unwrap();
        let rows = stmt.query_map([part.lower as i64, left as i64], |r| {
            r.get::<_, i64>(0).map(|s| s as u64)
        })?;
        rows.collect()
    })
    .unwrap()
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_roll_link_and_read_as_one_log() {
    let log = Log::new(false);
    let audit = log.open();
    log.write(&audit, 60).await;
    let local = log.local();
    assert!(local.len() >= 3, "{local:?}");
    // Contiguous ranges, each sealed file read-only, each archived byte for byte.
    for pair in local.windows(2) {
        assert_eq!(pair[0].last + 1, pair[1].first);
    }
    assert_eq!(local[0].first, 1);
    for s in &local {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&s.path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o400, "{}", s.name());
        let copy = segment::archive_dir(&log.archive, audit.log_id()).join(s.name());
        assert_eq!(
            std::fs::read(&s.path).unwrap(),
            std::fs::read(copy).unwrap()
        );
    }
    // Pages cross segment boundaries with no gap and no repeat, both ways.
    let view = View::open(&log.db(), None).unwrap();
    assert_eq!(view.last_seq().unwrap(), 60);
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = seqs(&view, after, 7);
        let Some(&last) = page.last() else { break };
        all.extend(page);
        after = last;
    }
    assert_eq!(all, (1..=60).collect::<Vec<_>>());
    let newest = view
        .page_before(u64::MAX, 25, |part, left| {
            let mut stmt = part
                .conn
                .prepare("SELECT seq FROM records WHERE seq > ?1 ORDER BY seq DESC LIMIT ?2")?;
            let rows = stmt.query_map([part.lower as i64, left as i64], |r| {
                r.get::<_, i64>(0).map(|s| s as u64)
            })?;
            rows.collect::<rusqlite::Result<Vec<u64>>>()
        })
        .unwrap();
    assert_eq!(newest, (36..=60).rev().collect::<Vec<_>>());
    let report = log.verify(true);
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert_eq!((report.from_seq, report.records), (1, 60));
    assert_eq!(report.segments, local.len());
    drop(view);
    audit.close().await;
    // Reopened, the chain and seq go on from where they were.
    let audit = log.open();
    log.write(&audit, 10).await;
    audit.close().await;
    let report = log.verify(true);
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert_eq!(report.records, 70);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_only_archived_segments_and_verify_needs_the_archive_for_them() {
    let log = Log::new(true);
    let audit = log.open();
    log.write(&audit, 60).await;
    // One more in the active segment, too few to seal.
    audit
        .admin_event("config_loaded", serde_json::json!({}))
        .await
        .unwrap();
    // Every sealed segment is archived, so retention (1 byte) removed them all locally.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !log.local().is_empty() {
        assert!(std::time::Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(log.archived().len() >= 3);
    // Without the archive: the active segment alone, its start vouched for by a signature.
    let alone = log.verify(false);
    assert!(alone.problem.is_none(), "{:?}", alone.problem);
    assert!(alone.from_seq > 1);
    // With it: the whole history.
    let whole = log.verify(true);
    assert!(whole.problem.is_none(), "{:?}", whole.problem);
    assert_eq!((whole.from_seq, whole.records), (1, 61));
    // Readers find archived records when told where the archive is.
    let view = View::open(&log.db(), Some(&log.archive)).unwrap();
    assert_eq!(seqs(&view, 0, 3), [1, 2, 3]);
    let without = View::open(&log.db(), None).unwrap();
    assert_eq!(seqs(&without, 0, 1), [alone.from_seq]);
    // A view holds a read snapshot, which the final WAL checkpoint would wait for.
    drop((view, without));
    audit.close().await;
}

/// A log with several archived segments and none left locally, for tampering.
async fn archived_log() -> (Log, Vec<Sealed>) {
    let log = Log::new(true);
    let audit = log.open();
    log.write(&audit, 80).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !log.local().is_empty() {
        assert!(std::time::Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    audit.close().await;
    let archived = log.archived();
    assert!(archived.len() >= 4, "{archived:?}");
    assert!(log.verify(true).problem.is_none());
    (log, archived)
}

fn problem(report: &Report) -> (u64, String, String) {
    let p = report.problem.clone().expect("the tamper was not detected");
    (p.seq, p.segment.unwrap_or_default(), p.why)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_middle_segment_is_named() {
    let (log, archived) = archived_log().await;
    std::fs::remove_file(&archived[1].path).unwrap();
    let (seq, segment, why) = problem(&log.verify(true));
    assert_eq!(seq, archived[1].first, "{why}");
    assert_eq!(segment, archived[2].name());
    assert!(why.contains("a segment is missing"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reordered_segment_is_named() {
    let (log, archived) = archived_log().await;
    // Swap two segments' files under each other's names.
    let tmp = archived[1].path.with_extension("swap");
    std::fs::rename(&archived[1].path, &tmp).unwrap();
    std::fs::rename(&archived[2].path, &archived[1].path).unwrap();
    std::fs::rename(&tmp, &archived[2].path).unwrap();
    let (seq, segment, why) = problem(&log.verify(true));
    assert_eq!(segment, archived[1].name(), "{why}");
    assert_eq!(seq, archived[1].first);
    assert!(why.contains("renamed or reordered"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_from_another_log_is_named() {
    let (log, archived) = archived_log().await;
    let (other, other_archived) = archived_log().await;
    let _ = other;
    // The other log's segment with the same range, dropped in place.
    let same = &other_archived[1];
    make_writable(&archived[1].path);
    std::fs::copy(&same.path, &archived[1].path).unwrap();
    let (seq, segment, why) = problem(&log.verify(true));
    assert_eq!(
        (seq, segment.as_str()),
        (archived[1].first, archived[1].name()),
        "{why}"
    );
    assert!(why.contains("belongs to log"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_archive_is_detected() {
    let (log, archived) = archived_log().await;
    // The newest archived segment is gone: the active segment no longer links back.
    let newest = archived.last().unwrap();
    std::fs::remove_file(&newest.path).unwrap();
    let (seq, segment, why) = problem(&log.verify(true));
    assert_eq!((seq, segment.as_str()), (newest.first, "active"), "{why}");
    assert!(why.contains("a segment is missing"), "{why}");
    // A segment file cut short.
    let (log, archived) = archived_log().await;
    let victim = &archived[2].path;
    make_writable(victim);
    let len = std::fs::metadata(victim).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(victim)
        .unwrap();
    file.set_len(len / 2).unwrap();
    let (_, segment, why) = problem(&log.verify(true));
    assert_eq!(segment, archived[2].name(), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_record_in_a_sealed_segment_is_named() {
    let (log, archived) = archived_log().await;
    let victim = &archived[2];
    make_writable(&victim.path);
    let conn = rusqlite::Connection::open(&victim.path).unwrap();
    conn.execute(
        "UPDATE records SET record = replace(record, 'config_loaded', 'config_LOADED') WHERE seq = ?1",
        [victim.first as i64 + 1],
    )
    .unwrap();
    drop(conn);
    let (seq, segment, why) = problem(&log.verify(true));
    assert_eq!(
        (seq, segment.as_str()),
        (victim.first + 1, victim.name()),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_waits_for_a_shipper_to_ship_a_segment() {
    let log = Log::new(true);
    let audit = log.open();
    let progress = log.state.path("shipped");
    std::fs::write(&progress, format!("{} 0\n", audit.log_id())).unwrap();
    audit.hold_until_shipped(progress.clone());
    log.write(&audit, 40).await;
    // Archived, past the limit, but not shipped: every segment stays.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let local = log.local();
    assert!(local.len() >= 2 && local[0].first == 1, "{local:?}");
    // Shipped up to the end of the first: only that one goes.
    std::fs::write(&progress, format!("{} {}\n", audit.log_id(), local[0].last)).unwrap();
    // The next seal prompts a retention pass (without one it comes within 30 s).
    log.write(&audit, 20).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.local().first() == local.first() {
        assert!(std::time::Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(log.local().first(), local.get(1));
    audit.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_archived_file_cannot_hide_records_from_readers() {
    let (log, archived) = archived_log().await;
    let dir = archived[0].path.parent().unwrap().to_owned();
    // A file claiming a range far past the log's end, and one overlapping the middle.
    std::fs::copy(
        &archived[0].path,
        dir.join(segment::file_name(1, 1_000_000)),
    )
    .unwrap();
    std::fs::copy(
        &archived[1].path,
        dir.join(segment::file_name(2, archived[2].last)),
    )
    .unwrap();
    let view = View::open(&log.db(), Some(&log.archive)).unwrap();
    let last = view.last_seq().unwrap();
    assert_eq!(last, 80);
    assert_eq!(seqs(&view, 0, 1000), (1..=80).collect::<Vec<_>>());
    drop(view);
    assert!(
        log.verify(true).problem.is_some(),
        "verify must name the stray files"
    );
}
