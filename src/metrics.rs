//! Counters and latency histograms, rendered for `GET /metrics` in the Prometheus text
//! format 0.0.4.
//!
//! Counting happens on every request's path, so it is a few `Relaxed` atomic adds into
//! fixed arrays indexed by small enums ([`Gate`], effect, consent [`Status`], [`Cache`]):
//! no allocation, no lock, no blocking. Histograms are hand-rolled with fixed bucket bounds
//! for the same reason: `prometheus-client`'s histogram takes a lock per observation, and
//! the `prometheus` crate looks label values up in a locked map. No label value comes from
//! user input: every series is fixed at compile time, so cardinality is bounded.
//!
//! What the process only knows at scrape time (pending consents, open connections…) comes
//! in as [`Gauges`]. Caches and webhook delivery keep their own counters, registered once
//! at start with [`Metrics::track_cache`] and [`Metrics::track_webhooks`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::consent::record::Status;
use crate::error::Gate;

/// Every gate, in the order series are rendered.
const GATES: [Gate; 10] = [
    Gate::Ingress,
    Gate::Identity,
    Gate::Intent,
    Gate::Policy,
    Gate::Consent,
    Gate::Token,
    Gate::Audit,
    Gate::Guard,
    Gate::Limits,
    Gate::Upstream,
];

/// Index of a request series: 0 for allowed, 1 + the gate's index for refused.
fn request_slot(denied: Option<Gate>) -> usize {
    match denied {
        None => 0,
        Some(g) => {
            1 + match g {
                Gate::Ingress => 0,
                Gate::Identity => 1,
                Gate::Intent => 2,
                Gate::Policy => 3,
                Gate::Consent => 4,
                Gate::Token => 5,
                Gate::Audit => 6,
                Gate::Guard => 7,
                Gate::Limits => 8,
                Gate::Upstream => 9,
            }
        }
    }
}

const REQUEST_SERIES: usize = 1 + GATES.len();

/// Consent outcomes, as announced; `Pending` is a new consent request.
const CONSENTS: [(Status, &str); 5] = [
    (Status::Pending, "requested"),
    (Status::Approved, "approved"),
    (Status::Denied, "denied"),
    (Status::Expired, "expired"),
    (Status::Cancelled, "cancelled"),
];

fn consent_slot(s: Status) -> usize {
    match s {
        Status::Pending => 0,
        Status::Approved => 1,
        Status::Denied => 2,
        Status::Expired => 3,
        Status::Cancelled => 4,
    }
}

/// The caches whose hits and misses are counted (in `CACHES` order: the discriminant indexes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// MITM leaf certificates (TLS server configs) by host (`src/ca.rs`).
    LeafCert,
    /// Verified JWT-SVIDs by token hash (`src/identity`).
    Identity,
    /// Vault credentials by (connection, scopes, repository) (`src/vault`).
    Vault,
}

const CACHES: [(Cache, &str); 3] = [
    (Cache::LeafCert, "leaf_cert"),
    (Cache::Identity, "identity"),
    (Cache::Vault, "vault"),
];

/// Hits and misses of one cache, owned by the cache itself.
#[derive(Debug, Default)]
pub struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheStats {
    /// A lookup answered from the cache.
    pub fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }

    /// A lookup that had to compute (mint, verify, fetch) the value.
    pub fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }

    /// `(hits, misses)` so far.
    pub fn get(&self) -> (u64, u64) {
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }
}

/// Upper bounds of the latency buckets, in nanoseconds, with their `le` label in seconds.
/// From 10 µs (a decision with every gate in memory) to 10 s (a held consent, a slow
/// upstream); the last bucket is `+Inf`.
const BOUNDS: [(u64, &str); 19] = [
    (10_000, "0.00001"),
    (25_000, "0.000025"),
    (50_000, "0.00005"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
];

/// A latency histogram: one counter per bucket (not cumulative; summed at render) and the
/// sum. The count is the sum of the buckets, so `+Inf` always equals `_count`.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOUNDS.len() + 1],
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one duration: two atomic adds.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // The first bucket whose bound is >= ns (`le` is inclusive); past all: +Inf.
        let i = BOUNDS.partition_point(|&(b, _)| b < ns);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines; `labels` is `""` or `k="v",`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            let le = BOUNDS.get(i).map_or("+Inf", |(_, le)| le);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let braces = |l: &str| {
            let l = l.trim_end_matches(',');
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

/// What is only known at scrape time; the admin server fills it.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    /// Consents waiting for an answer.
    pub pending_consents: u64,
    /// Client connections open on the proxy listener.
    pub open_connections: u64,
    /// Registered agents neither revoked nor expired.
    pub agents_active: u64,
    /// The highest committed audit `seq`.
    pub audit_seq: u64,
    /// The audit disk watchdog's latest readings, one per watched file system.
    pub audit_disk: Vec<DiskGauge>,
}

/// One file system the audit disk watchdog reads.
#[derive(Debug, Clone)]
pub struct DiskGauge {
    /// The `dir` label: `log` (the audit database's) or `archive` (`audit.archive_dir`).
    pub dir: &'static str,
    /// `(free, total)` bytes; `None` when they could not be read.
    pub space: Option<(u64, u64)>,
    /// Free space is below `audit.disk_free_warning`, or unknown.
    pub low: bool,
}

/// What happened to an audit segment (`agentgate_audit_segments_total{event}`).
#[derive(Debug, Clone, Copy)]
pub enum SegmentEvent {
    Sealed,
    Archived,
    Removed,
    Failed,
}

/// Label values of [`SegmentEvent`], in order.
pub(crate) const SEGMENT_EVENTS: [&str; 4] = ["sealed", "archived", "removed", "failed"];

/// The process's counters; one per instance, shared as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    started: u64,
    /// Decisions by effect and gate: [`request_slot`].
    requests: [AtomicU64; REQUEST_SERIES],
    /// The CONNECT subset of `requests`: allowed, refused.
    tunnels: [AtomicU64; 2],
    /// Request start → decision durable (or refusal recorded), by effect: allow, deny.
    decision: [Histogram; 2],
    /// Forwarded requests, start → response body done (its outcome record).
    forwarded: Histogram,
    /// Audit: submit → durable commit acknowledged.
    audit_commit: Histogram,
    audit_failed: AtomicU64,
    audit_dropped: AtomicU64,
    /// Segments: sealed, archived, removed by retention, failed housekeeping rounds.
    segments: [AtomicU64; SEGMENT_EVENTS.len()],
    consents: [AtomicU64; CONSENTS.len()],
    panics: AtomicU64,
    /// Policy reloads: loaded, failed.
    policy_reloads: [AtomicU64; 2],
    caches: [OnceLock<Arc<CacheStats>>; CACHES.len()],
    webhooks: OnceLock<Arc<crate::webhooks::Stats>>,
    otel: OnceLock<Arc<crate::otel::stats::Stats>>,
    shadow: OnceLock<Arc<ShadowStats>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let zero = || AtomicU64::new(0);
        Metrics {
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            requests: std::array::from_fn(|_| zero()),
            tunnels: std::array::from_fn(|_| zero()),
            decision: Default::default(),
            forwarded: Histogram::default(),
            audit_commit: Histogram::default(),
            audit_failed: zero(),
            audit_dropped: zero(),
            segments: std::array::from_fn(|_| zero()),
            consents: std::array::from_fn(|_| zero()),
            panics: zero(),
            policy_reloads: std::array::from_fn(|_| zero()),
            caches: Default::default(),
            webhooks: OnceLock::new(),
            otel: OnceLock::new(),
            shadow: OnceLock::new(),
        }
    }
}

impl Metrics {
    /// One request decided (its decision record written): allowed when `denied` is `None`.
    /// `latency` runs from the request's start until its decision was durable.
    pub fn request(&self, denied: Option<Gate>, latency: Duration) {
        self.requests[request_slot(denied)].fetch_add(1, Relaxed);
        self.decision[usize::from(denied.is_some())].observe(latency);
    }

    /// One CONNECT decided: counted as a request, and as a tunnel.
    pub fn tunnel(&self, denied: Option<Gate>, latency: Duration) {
        self.request(denied, latency);
        self.tunnels[usize::from(denied.is_some())].fetch_add(1, Relaxed);
    }

    /// A forwarded request finished (response body done or abandoned) after `total`.
    pub fn forwarded(&self, total: Duration) {
        self.forwarded.observe(total);
    }

    /// An audit record became durable `latency` after it was submitted.
    pub fn audit_committed(&self, latency: Duration) {
        self.audit_commit.observe(latency);
    }

    /// An audit commit failed or timed out.
    pub fn audit_failed(&self) {
        self.audit_failed.fetch_add(1, Relaxed);
    }

    /// An unawaited audit record (an outcome) was dropped on a full queue; returns the total.
    pub fn audit_dropped(&self) -> u64 {
        self.audit_dropped.fetch_add(1, Relaxed) + 1
    }

    /// A segment event: `sealed`, `archived`, `removed` or `failed` (a housekeeping round).
    pub fn audit_segment(&self, event: SegmentEvent) {
        self.segments[event as usize].fetch_add(1, Relaxed);
    }

    /// A consent was requested (`Pending`) or reached a final status.
    pub fn consent(&self, status: Status) {
        self.consents[consent_slot(status)].fetch_add(1, Relaxed);
    }

    /// A PANIC ran.
    pub fn panic(&self) {
        self.panics.fetch_add(1, Relaxed);
    }

    /// A changed policy directory was reloaded (`ok`) or refused.
    pub fn policy_reload(&self, ok: bool) {
        self.policy_reloads[usize::from(!ok)].fetch_add(1, Relaxed);
    }

    /// Renders `cache`'s counters from now on (first registration wins).
    pub fn track_cache(&self, cache: Cache, stats: Arc<CacheStats>) {
        let _ = self.caches[cache as usize].set(stats);
    }

    /// Renders the webhook delivery counters from now on (first registration wins).
    pub fn track_webhooks(&self, stats: Arc<crate::webhooks::Stats>) {
        let _ = self.webhooks.set(stats);
    }

    /// Shows the OTLP exporter's counters (`[otel]`).
    pub fn track_otel(&self, stats: Arc<crate::otel::stats::Stats>) {
        let _ = self.otel.set(stats);
    }

    /// Shows how shadow policies compared with the active ones (`policy.shadow`).
    pub fn track_shadow(&self, stats: Arc<ShadowStats>) {
        let _ = self.shadow.set(stats);
    }

    /// Requests decided so far with this outcome (for tests and logs).
    pub fn requests(&self, denied: Option<Gate>) -> u64 {
        self.requests[request_slot(denied)].load(Relaxed)
    }
}

/// Policy effects, in the order [`ShadowStats`] indexes them.
pub const EFFECTS: [&str; 3] = ["allow", "escalate", "deny"];

/// Comparisons of the active policy with its shadow: `counts[active][shadow]`, indexed by
/// [`EFFECTS`].
#[derive(Debug, Default)]
pub struct ShadowStats {
    counts: [[AtomicU64; 3]; 3],
}

impl ShadowStats {
    /// Counts one comparison (indices into [`EFFECTS`]; out of range is ignored).
    pub fn count(&self, active: usize, shadow: usize) {
        if let Some(c) = self.counts.get(active).and_then(|row| row.get(shadow)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Every (active, shadow, count), agreements included.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::with_capacity(9);
        for (a, row) in EFFECTS.iter().zip(&self.counts) {
            for (s, n) in EFFECTS.iter().zip(row) {
                out.push((*a, *s, n.load(Relaxed)));
            }
        }
        out
    }
}

mod render;
#[cfg(test)]
mod tests;
