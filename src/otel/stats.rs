//! The OTLP exporter's counters, shown on `/metrics`. A leaf, so the metrics module can
//! read them without depending on the exporter.

use std::sync::atomic::AtomicU64;

/// Export counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Log records exported.
    pub logs: AtomicU64,
    /// Spans exported.
    pub spans: AtomicU64,
    /// Export calls that failed or timed out.
    pub failures: AtomicU64,
    /// Committed records not exported yet.
    pub behind: AtomicU64,
}
