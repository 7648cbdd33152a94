//! OpenTelemetry export of the audit trail (`[otel]`): every committed record becomes an
//! OTLP log record, and with `otel.spans` every request also becomes a span with the gates
//! as its events. The audit log is the outbox: a background task reads committed records in
//! order, exports them in batches and saves how far it got (`otel-exported` in the state
//! dir), so nothing runs on the request path, memory holds one batch, a dead or slow
//! collector only delays export (retried with backoff, counted in
//! `agentgate_otel_export_failures_total`), and a restart resumes where it stopped.
//! Delivery is at least once: a batch the collector took but did not acknowledge is sent
//! again, with the same trace and span ids.

pub mod export;
pub mod map;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::logs::{Logger as _, LoggerProvider as _};
use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLogRecord, SdkLoggerProvider};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::sync::watch;

use crate::audit::Audit;
use crate::audit::outbox::{Outbox, Row};
use crate::audit::record::{Record, Stored};
use crate::config::OtelConfig;
use crate::state::StateDir;
pub use export::{Exporters, OtelError};
pub use stats::Stats;

/// Where export progress is kept in the state dir.
const PROGRESS_FILE: &str = "otel-exported";
/// The most record text one export carries (a single larger record still goes alone).
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Requests whose span waits for its outcome record, at most.
const MAX_OPEN_SPANS: usize = 4096;
/// How long a span waits for its outcome before it is exported without one (µs).
const SPAN_WAIT_US: i64 = 60_000_000;

/// A request's decision, waiting for its outcome to close its span.
struct Open {
    decided: Stored,
    tenant: Option<String>,
}

/// The export task's state.
struct Exporter {
    config: OtelConfig,
    exporters: Exporters,
    provider: SdkLoggerProvider,
    scope: InstrumentationScope,
    stats: Arc<Stats>,
    open: HashMap<String, Open>,
}

/// One tenant's part of a batch.
#[derive(Default)]
struct Part {
    logs: Vec<SdkLogRecord>,
    spans: Vec<SpanData>,
    done: bool,
}

/// A batch, by tenant.
#[derive(Default)]
struct Parts(Vec<(Option<String>, Part)>);

impl Parts {
    /// `tenant`'s part, added when missing.
    fn of(&mut self, tenant: &Option<String>) -> &mut Part {
        let i = match self.0.iter().position(|(t, _)| t == tenant) {
            Some(i) => i,
            None => {
                self.0.push((tenant.clone(), Part::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }
}

/// How many of `rows`, from the first, fit in `max` bytes of record text (at least one).
fn within_bytes(rows: &[Row], max: usize) -> usize {
    let mut total = 0;
    let fit = rows
        .iter()
        .take_while(|r| {
            total += r.record.len();
            total <= max
        })
        .count();
    fit.max(1).min(rows.len())
}

/// Whether a decision's span waits for an outcome record: an allowed request that is not a
/// tunnel (a CONNECT's requests are decided, and spanned, one by one).
fn waits_for_outcome(d: &crate::audit::record::Decision) -> bool {
    matches!(d.verdict, crate::audit::record::Verdict::Allow)
        && d.method.as_deref() != Some("CONNECT")
}

/// Exports committed records until `shutdown`.
pub async fn run(
    config: OtelConfig,
    exporters: Exporters,
    audit: Arc<Audit>,
    state: StateDir,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut outbox = Outbox::open(audit, &state, PROGRESS_FILE);
    let mut exporter = Exporter {
        provider: SdkLoggerProvider::builder().build(),
        scope: InstrumentationScope::builder("agentgate")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
        config,
        exporters,
        stats,
        open: HashMap::new(),
    };
    tracing::info!(endpoint = %exporter.config.endpoint, from_seq = outbox.shipped + 1, "otel: exporting the audit trail");
    loop {
        // Spans that waited too long for their outcome are flushed even when no record comes.
        let flush_after = match exporter.open.is_empty() {
            true => Duration::MAX,
            false => Duration::from_secs(5),
        };
        let rows = tokio::select! {
            rows = outbox.next(exporter.config.batch) => rows,
            () = tokio::time::sleep(flush_after) => Ok(Vec::new()),
            _ = shutdown.changed() => return,
        };
        let mut rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "otel: cannot read the audit log; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Collectors refuse messages over 4 MiB by default (gRPC): a batch of large records
        // is cut at MAX_BATCH_BYTES and the rest goes next round, so no batch is refused
        // for its size again and again.
        rows.truncate(within_bytes(&rows, MAX_BATCH_BYTES));
        let last = rows.last().map(|r| r.seq);
        let mut parts = exporter.prepare(outbox.log_id(), &rows);
        let mut backoff = Duration::from_millis(200);
        while let Err(e) = exporter.send(&mut parts).await {
            let failures = exporter.stats.failures.fetch_add(1, Relaxed) + 1;
            if failures.is_power_of_two() {
                tracing::warn!(error = %e, failures, retry_in_ms = backoff.as_millis() as u64, "otel: export failed; the records stay in the audit log and are retried");
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(exporter.config.max_backoff);
        }
        let Some(last) = last else { continue };
        if let Err(e) = outbox.shipped(last).await {
            tracing::error!(error = %e, "otel: cannot save export progress");
        }
        exporter.stats.behind.store(outbox.behind(), Relaxed);
    }
}

impl Exporter {
    /// Turns rows into each tenant's log records and the spans that are complete.
    fn prepare(&mut self, log_id: &str, rows: &[Row]) -> Parts {
        let logger = self.provider.logger("agentgate");
        let mut parts = Parts::default();
        let mut newest = 0;
        for row in rows {
            let stored = match Stored::decode(&row.record) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(seq = row.seq, error = %e, "otel: an audit record does not decode; exported as text only");
                    let mut log = logger.create_log_record();
                    map::raw(&mut log, row, log_id);
                    parts.of(&row.tenant).logs.push(log);
                    continue;
                }
            };
            newest = stored.ts;
            let mut log = logger.create_log_record();
            map::log(&mut log, row, &stored, log_id);
            parts.of(&row.tenant).logs.push(log);
            if !self.config.spans {
                continue;
            }
            match &stored.record {
                // An allowed request waits for its outcome; a tunnel (CONNECT) has none.
                Record::Decision(d) if waits_for_outcome(d) => {
                    if self.open.len() >= MAX_OPEN_SPANS {
                        self.close_oldest(&mut parts, log_id);
                    }
                    self.open.insert(
                        d.request_id.clone(),
                        Open {
                            tenant: row.tenant.clone(),
                            decided: stored,
                        },
                    );
                }
                // A refused request or a tunnel: its span is complete.
                Record::Decision(_) => {
                    if let Some(span) = map::span(&stored, None, log_id, &self.scope) {
                        parts.of(&row.tenant).spans.push(span);
                    }
                }
                Record::Outcome(o) => {
                    if let Some(open) = self.open.remove(&o.request_id) {
                        let span =
                            map::span(&open.decided, Some((o, stored.ts)), log_id, &self.scope);
                        parts.of(&open.tenant).spans.extend(span);
                    }
                }
                _ => {}
            }
        }
        // Requests whose outcome did not come within SPAN_WAIT_US: exported without one.
        let now = crate::clock::now_micros().max(newest);
        let stale: Vec<String> = self
            .open
            .iter()
            .filter(|(_, o)| now - o.decided.ts > SPAN_WAIT_US)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(open) = self.open.remove(&id) {
                let span = map::span(&open.decided, None, log_id, &self.scope);
                parts.of(&open.tenant).spans.extend(span);
            }
        }
        parts
    }

    /// Exports the span that has waited longest, to make room.
    fn close_oldest(&mut self, parts: &mut Parts, log_id: &str) {
        let Some(id) = self
            .open
            .iter()
            .min_by_key(|(_, o)| o.decided.seq)
            .map(|(id, _)| id.clone())
        else {
            return;
        };
        if let Some(open) = self.open.remove(&id) {
            let span = map::span(&open.decided, None, log_id, &self.scope);
            parts.of(&open.tenant).spans.extend(span);
        }
    }

    /// Sends every part not sent yet; the first failure ends the round.
    async fn send(&mut self, parts: &mut Parts) -> Result<(), String> {
        let deadline = export::deadline(&self.config);
        for (tenant, part) in parts.0.iter_mut().filter(|(_, p)| !p.done) {
            let pair = self
                .exporters
                .for_tenant(tenant.as_deref())
                .map_err(|e| e.to_string())?;
            if !part.logs.is_empty() {
                let batch: Vec<(&SdkLogRecord, &InstrumentationScope)> =
                    part.logs.iter().map(|l| (l, &self.scope)).collect();
                let sent = tokio::time::timeout(deadline, pair.logs.export(LogBatch::new(&batch)))
                    .await
                    .map_err(|_| format!("logs: no answer within {deadline:?}"))?;
                sent.map_err(|e| format!("logs: {e}"))?;
                self.stats.logs.fetch_add(part.logs.len() as u64, Relaxed);
                part.logs.clear();
            }
            if let (Some(spans), false) = (&pair.spans, part.spans.is_empty()) {
                let sent = tokio::time::timeout(deadline, spans.export(part.spans.clone()))
                    .await
                    .map_err(|_| format!("spans: no answer within {deadline:?}"))?;
                sent.map_err(|e| format!("spans: {e}"))?;
                self.stats.spans.fetch_add(part.spans.len() as u64, Relaxed);
            }
            part.done = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(len: usize) -> Row {
        Row {
            seq: 1,
            hash: String::new(),
            record: "x".repeat(len),
            tenant: None,
        }
    }

    #[test]
    fn a_batch_is_cut_at_its_byte_budget_but_never_to_nothing() {
        let rows: Vec<Row> = (0..5).map(|_| row(400)).collect();
        assert_eq!(within_bytes(&rows, 1000), 2);
        assert_eq!(within_bytes(&rows, 10_000), 5);
        assert_eq!(
            within_bytes(&[row(5000)], 1000),
            1,
            "a large record goes alone"
        );
        assert_eq!(within_bytes(&[], 1000), 0);
    }
}
