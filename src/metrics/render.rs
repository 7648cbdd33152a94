//! `/metrics`: everything, in the Prometheus text exposition format.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use super::*;

impl Metrics {
    /// Everything, in the Prometheus text exposition format 0.0.4
    /// (`Content-Type: text/plain; version=0.0.4; charset=utf-8`).
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let o = &mut out;

        head(
            o,
            "agentgate_build_info",
            "gauge",
            "Always 1; the version as a label.",
        );
        let _ = writeln!(
            o,
            "agentgate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        head(
            o,
            "agentgate_start_time_seconds",
            "gauge",
            "When this instance started, in Unix seconds.",
        );
        let _ = writeln!(o, "agentgate_start_time_seconds {}", self.started);

        head(
            o,
            "agentgate_requests_total",
            "counter",
            "Requests decided, one per decision record (CONNECT included), by effect and the gate that refused (none when allowed).",
        );
        let _ = writeln!(
            o,
            "agentgate_requests_total{{effect=\"allow\",gate=\"none\"}} {}",
            self.requests[0].load(Relaxed)
        );
        for g in GATES {
            let _ = writeln!(
                o,
                "agentgate_requests_total{{effect=\"deny\",gate=\"{}\"}} {}",
                g.as_str(),
                self.requests[request_slot(Some(g))].load(Relaxed)
            );
        }
        head(
            o,
            "agentgate_tunnels_total",
            "counter",
            "CONNECT requests decided (a subset of agentgate_requests_total), by effect.",
        );
        for (i, effect) in ["allow", "deny"].iter().enumerate() {
            let _ = writeln!(
                o,
                "agentgate_tunnels_total{{effect=\"{effect}\"}} {}",
                self.tunnels[i].load(Relaxed)
            );
        }

        head(
            o,
            "agentgate_decision_duration_seconds",
            "histogram",
            "From a request's start until its decision record was committed (allowed: before forwarding; refused: before the answer), by effect.",
        );
        self.decision[0].render(
            o,
            "agentgate_decision_duration_seconds",
            "effect=\"allow\",",
        );
        self.decision[1].render(o, "agentgate_decision_duration_seconds", "effect=\"deny\",");
        head(
            o,
            "agentgate_request_duration_seconds",
            "histogram",
            "Forwarded requests, from their start until the response body was done (as in their outcome records).",
        );
        self.forwarded
            .render(o, "agentgate_request_duration_seconds", "");

        head(
            o,
            "agentgate_audit_commit_duration_seconds",
            "histogram",
            "From submitting an audit record until its group commit was durable.",
        );
        self.audit_commit
            .render(o, "agentgate_audit_commit_duration_seconds", "");
        counter(
            o,
            "agentgate_audit_commit_failures_total",
            "Audit commits that failed or timed out (their requests were refused).",
            self.audit_failed.load(Relaxed),
        );
        counter(
            o,
            "agentgate_audit_dropped_total",
            "Outcome records dropped because the audit queue was full.",
            self.audit_dropped.load(Relaxed),
        );
        head(
            o,
            "agentgate_audit_segments_total",
            "counter",
            "Audit segments by event: sealed, archived, removed from the state dir by retention, failed (a housekeeping round that failed; it is retried).",
        );
        for (event, n) in super::SEGMENT_EVENTS.iter().zip(&self.segments) {
            let _ = writeln!(
                o,
                "agentgate_audit_segments_total{{event=\"{event}\"}} {}",
                n.load(Relaxed)
            );
        }
        gauge(
            o,
            "agentgate_audit_seq",
            "The highest committed audit record seq.",
            gauges.audit_seq,
        );
        audit_disk(o, &gauges.audit_disk);

        head(
            o,
            "agentgate_cache_requests_total",
            "counter",
            "Cache lookups by cache and result (hit, or miss: minted, verified or fetched).",
        );
        for (i, (_, name)) in CACHES.iter().enumerate() {
            let (hits, misses) = self.caches[i].get().map_or((0, 0), |s| s.get());
            let _ = writeln!(
                o,
                "agentgate_cache_requests_total{{cache=\"{name}\",result=\"hit\"}} {hits}"
            );
            let _ = writeln!(
                o,
                "agentgate_cache_requests_total{{cache=\"{name}\",result=\"miss\"}} {misses}"
            );
        }

        head(
            o,
            "agentgate_consents_total",
            "counter",
            "Consents by outcome (requested when asked; then approved, denied, expired or cancelled).",
        );
        for (i, (_, name)) in CONSENTS.iter().enumerate() {
            let _ = writeln!(
                o,
                "agentgate_consents_total{{outcome=\"{name}\"}} {}",
                self.consents[i].load(Relaxed)
            );
        }
        gauge(
            o,
            "agentgate_pending_consents",
            "Consents waiting for an answer.",
            gauges.pending_consents,
        );
        counter(
            o,
            "agentgate_panics_total",
            "PANIC runs (agent or all).",
            self.panics.load(Relaxed),
        );

        head(
            o,
            "agentgate_webhooks_total",
            "counter",
            "Webhook events by result: delivered, failed after every retry, dropped on a full queue.",
        );
        let hooks = self.webhooks.get();
        let load =
            |f: fn(&crate::webhooks::Stats) -> &AtomicU64| hooks.map_or(0, |s| f(s).load(Relaxed));
        for (result, n) in [
            ("delivered", load(|s| &s.delivered)),
            ("failed", load(|s| &s.failed)),
            ("dropped", load(|s| &s.dropped)),
        ] {
            let _ = writeln!(o, "agentgate_webhooks_total{{result=\"{result}\"}} {n}");
        }

        if let Some(shadow) = self.shadow.get() {
            head(
                o,
                "agentgate_policy_shadow_total",
                "counter",
                "Requests the shadow policy also decided, by the active policy's effect and the shadow's (equal: they agreed).",
            );
            for (a, t, n) in shadow.snapshot() {
                let _ = writeln!(
                    o,
                    "agentgate_policy_shadow_total{{active=\"{a}\",shadow=\"{t}\"}} {n}"
                );
            }
        }

        if let Some(otel) = self.otel.get() {
            head(
                o,
                "agentgate_otel_exported_total",
                "counter",
                "Audit records exported over OTLP, by signal.",
            );
            for (signal, n) in [("logs", &otel.logs), ("spans", &otel.spans)] {
                let n = n.load(Relaxed);
                let _ = writeln!(
                    o,
                    "agentgate_otel_exported_total{{signal=\"{signal}\"}} {n}"
                );
            }
            counter(
                o,
                "agentgate_otel_export_failures_total",
                "OTLP export calls that failed or timed out (each is retried with backoff).",
                otel.failures.load(Relaxed),
            );
            head(
                o,
                "agentgate_otel_behind",
                "gauge",
                "Committed audit records not exported over OTLP yet.",
            );
            let _ = writeln!(o, "agentgate_otel_behind {}", otel.behind.load(Relaxed));
        }

        head(
            o,
            "agentgate_policy_reloads_total",
            "counter",
            "Policy directory changes by result: loaded, or failed (the previous policy stays).",
        );
        for (i, result) in ["loaded", "failed"].iter().enumerate() {
            let _ = writeln!(
                o,
                "agentgate_policy_reloads_total{{result=\"{result}\"}} {}",
                self.policy_reloads[i].load(Relaxed)
            );
        }

        gauge(
            o,
            "agentgate_open_connections",
            "Client connections open on the proxy listener.",
            gauges.open_connections,
        );
        gauge(
            o,
            "agentgate_agents_active",
            "Registered agents neither revoked nor expired.",
            gauges.agents_active,
        );
        out
    }
}

/// The audit disk watchdog's gauges, one series per watched file system.
fn audit_disk(o: &mut String, disks: &[DiskGauge]) {
    if disks.is_empty() {
        return;
    }
    head(
        o,
        "agentgate_audit_disk_free_bytes",
        "gauge",
        "Bytes the proxy may still write on the file system of the audit log (dir=log) or its archive (dir=archive).",
    );
    for d in disks {
        if let Some((free, _)) = d.space {
            let _ = writeln!(
                o,
                "agentgate_audit_disk_free_bytes{{dir=\"{}\"}} {free}",
                d.dir
            );
        }
    }
    head(
        o,
        "agentgate_audit_disk_total_bytes",
        "gauge",
        "Size of the file system of the audit log (dir=log) or its archive (dir=archive).",
    );
    for d in disks {
        if let Some((_, total)) = d.space {
            let _ = writeln!(
                o,
                "agentgate_audit_disk_total_bytes{{dir=\"{}\"}} {total}",
                d.dir
            );
        }
    }
    head(
        o,
        "agentgate_audit_disk_low",
        "gauge",
        "1 while free space is below audit.disk_free_warning (or cannot be read), else 0.",
    );
    for d in disks {
        let _ = writeln!(
            o,
            "agentgate_audit_disk_low{{dir=\"{}\"}} {}",
            d.dir,
            u8::from(d.low)
        );
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    head(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    head(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}
