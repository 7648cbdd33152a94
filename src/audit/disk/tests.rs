use std::cell::Cell;
use std::io::Write;

use super::*;

const MIB: u64 = 1024 * 1024;

/// The log lines written while `f` runs.
fn logged(f: impl FnOnce()) -> Vec<String> {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_owned).collect()
}

/// A watch of one `log` directory whose readings come from `space` (a `Cell` the test sets).
fn fake(threshold: &str) -> DiskWatch {
    DiskWatch::with_dirs(
        threshold.parse().unwrap(),
        vec![("log", PathBuf::from("/var/lib/agentgate"))],
    )
}

fn space(free: u64, total: u64) -> Result<Space, Errno> {
    Ok(Space { free, total })
}

#[test]
fn percent_and_bytes_thresholds() {
    assert_eq!(FreeSpace::Percent(10).bytes_of(1000 * MIB), 100 * MIB);
    assert_eq!(FreeSpace::Percent(50).bytes_of(4 * MIB), 2 * MIB);
    assert_eq!(FreeSpace::Percent(0).bytes_of(4 * MIB), 0);
    assert_eq!(FreeSpace::Percent(100).bytes_of(4 * MIB), 4 * MIB);
    // No rounding loss, no overflow on the largest sizes.
    assert_eq!(FreeSpace::Percent(10).bytes_of(1001), 100);
    assert_eq!(FreeSpace::Percent(100).bytes_of(u64::MAX), u64::MAX);
    assert_eq!(FreeSpace::Percent(50).bytes_of(u64::MAX), u64::MAX / 2);
    assert_eq!(
        "512MiB".parse::<FreeSpace>().unwrap().bytes_of(4 * MIB),
        512 * MIB
    );

    // Strictly below is low; exactly at the threshold is not.
    let w = fake("50%");
    w.check_with(|_| space(2 * MIB, 4 * MIB));
    assert_eq!(w.warning(), None);
    assert!(!w.readings()[0].low());
    w.check_with(|_| space(2 * MIB - 1, 4 * MIB));
    assert!(w.readings()[0].low());
    assert_eq!(w.readings()[0].threshold, 2 * MIB);

    // A size larger than the file system: always low.
    let w = fake("512MiB");
    w.check_with(|_| space(4 * MIB, 4 * MIB));
    assert!(w.readings()[0].low());
    // "0%" never warns, not even on a full disk.
    let w = fake("0%");
    w.check_with(|_| space(0, 4 * MIB));
    assert_eq!(w.warning(), None);
    // A file system reporting no size (some virtual ones) does not warn on a percentage.
    let w = fake("10%");
    w.check_with(|_| space(0, 0));
    assert_eq!(w.warning(), None);
}

#[test]
fn warning_says_free_total_and_threshold() {
    let w = fake("50%");
    w.check_with(|_| space(MIB + MIB / 2, 4 * MIB));
    assert_eq!(
        w.warning().unwrap(),
        "audit disk: 1.5 MiB free of 4.0 MiB at /var/lib/agentgate, below audit.disk_free_warning (50%)"
    );
    let w = fake("1GiB");
    w.check_with(|_| space(512 * MIB, 100 * 1024 * MIB));
    assert!(
        w.warning()
            .unwrap()
            .ends_with("below audit.disk_free_warning (1.0 GiB)"),
        "{:?}",
        w.warning()
    );
}

#[test]
fn unreadable_is_a_warning() {
    let w = fake("10%");
    w.check_with(|_| Err(Errno::ACCESS));
    let warning = w.warning().unwrap();
    assert!(
        warning.starts_with("cannot read free space of /var/lib/agentgate: "),
        "{warning}"
    );
    assert!(w.readings()[0].low());
}

#[test]
fn logs_once_per_crossing_either_way() {
    let w = fake("50%");
    let free = Cell::new(3 * MIB);
    let tick = || w.check_with(|_| space(free.get(), 4 * MIB));
    let lines = logged(|| {
        tick(); // fine from the start: nothing to say
        free.set(MIB);
        tick(); // crossed down: one warning
        tick();
        free.set(MIB / 2);
        tick(); // lower still: already said
    });
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    for part in [
        "audit disk: 1.0 MiB free of 4.0 MiB at /var/lib/agentgate",
        "below audit.disk_free_warning (50%)",
        "audit.retention",
        "audit.archive_dir",
        "grow the volume",
        "free=1048576",
        "total=4194304",
    ] {
        assert!(lines[0].contains(part), "{part:?} not in {}", lines[0]);
    }

    let lines = logged(|| {
        // Just above the threshold: the warning goes, the log waits for the margin
        // (a twentieth of the threshold) so a hovering level does not repeat itself.
        free.set(2 * MIB + 1);
        tick();
        assert_eq!(w.warning(), None);
        free.set(2 * MIB - 1);
        tick();
        assert!(w.warning().is_some());
        free.set(2 * MIB + 2 * MIB / 20);
        tick(); // recovered: one info line
        tick();
    });
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("INFO"), "{}", lines[0]);
    assert!(lines[0].contains("audit disk recovered"), "{}", lines[0]);

    let lines = logged(|| {
        w.check_with(|_| Err(Errno::IO));
        w.check_with(|_| Err(Errno::IO));
        free.set(MIB);
        tick(); // from unreadable to low: said again
        free.set(3 * MIB);
        tick();
    });
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[0].contains("cannot read free space of /var/lib/agentgate"));
    assert!(lines[1].contains("WARN") && lines[1].contains("below"));
    assert!(lines[2].contains("INFO") && lines[2].contains("recovered"));
}

#[test]
fn low_from_the_start_is_said_at_once() {
    let w = fake("10%");
    let lines = logged(|| w.check_with(|_| space(MIB, 100 * MIB)));
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("WARN"));
}

#[test]
fn log_and_archive_are_watched_apart() {
    let w = DiskWatch::with_dirs(
        FreeSpace::Percent(10),
        vec![
            ("log", PathBuf::from("/state")),
            ("archive", PathBuf::from("/archive")),
        ],
    );
    w.check_with(|dir| match dir.to_str() {
        Some("/archive") => space(MIB, 100 * MIB),
        _ => space(50 * MIB, 100 * MIB),
    });
    let warnings = w.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("audit archive disk: 1.0 MiB free of 100.0 MiB at /archive"),
        "{}",
        warnings[0]
    );
    let labels: Vec<_> = w.readings().iter().map(|r| r.label).collect();
    assert_eq!(labels, ["log", "archive"]);
    let lines = logged(|| w.check_with(|_| space(MIB, 100 * MIB)));
    assert_eq!(lines.len(), 1, "only the log's disk crossed: {lines:#?}");
    assert!(lines[0].contains("at /state"));
    assert_eq!(w.warnings().len(), 2);
}

#[test]
fn reads_the_real_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let s = read_space(dir.path()).unwrap();
    assert!(s.total > 0 && s.free <= s.total, "{s:?}");
    // A directory not made yet is read where it would be made.
    let later = read_space(&dir.path().join("archive/not/yet")).unwrap();
    assert_eq!(later.total, s.total);

    let state = StateDir::open_or_create(dir.path().join("state")).unwrap();
    let config = AuditConfig {
        archive_dir: dir.path().join("archive"),
        disk_free_warning: FreeSpace::Percent(0),
        ..AuditConfig::default()
    };
    let w = DiskWatch::new(&config, &state);
    let readings = w.readings();
    assert_eq!(readings.len(), 2);
    assert_eq!(readings[0].dir, state.root());
    assert_eq!(readings[1].dir, dir.path().join("archive"));
    assert!(readings.iter().all(|r| r.space.is_ok()), "{readings:?}");
    assert_eq!(w.warning(), None);

    // Everything is below "100%" but a full disk.
    let config = AuditConfig {
        disk_free_warning: FreeSpace::Percent(100),
        ..AuditConfig::default()
    };
    let w = DiskWatch::new(&config, &state);
    assert!(w.warning().unwrap().starts_with("audit disk: "));
}

#[test]
fn stops_with_the_shutdown_signal() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open_or_create(dir.path()).unwrap();
    let (stop, rx) = watch::channel(false);
    let w = DiskWatch::start(&AuditConfig::default(), &state, rx).unwrap();
    assert_eq!(Arc::strong_count(&w.inner), 2, "the thread holds one");
    stop.send(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&w.inner) > 1 {
        assert!(std::time::Instant::now() < deadline, "thread still running");
        std::thread::sleep(Duration::from_millis(50));
    }
}
