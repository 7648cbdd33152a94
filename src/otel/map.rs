//! What one committed audit record becomes in OpenTelemetry: a log record (the canonical
//! record as its body, the fields a query filters on as attributes) and, for a request, a
//! span whose events are the gates that ran. Trace and span ids are derived from the log id
//! and request id, so a record exported twice yields the same ids.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::logs::{AnyValue, LogRecord, Severity};
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::audit::outbox::Row;
use crate::audit::record::{ConsentNote, Decision, Outcome, Record, Stored, Verdict};

/// A record's commit time (`ts`, Unix microseconds) as a clock time.
fn at(ts: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(ts.max(0) as u64)
}

/// Fills `log` from a record that did not decode: its text and place in the chain.
pub fn raw(log: &mut impl LogRecord, row: &Row, log_id: &str) {
    log.set_observed_timestamp(SystemTime::now());
    log.set_severity_number(Severity::Warn);
    log.set_severity_text("WARN");
    log.set_body(AnyValue::from(row.record.clone()));
    log.add_attribute("agentgate.audit.seq", row.seq as i64);
    log.add_attribute("agentgate.audit.hash", row.hash.clone());
    log.add_attribute("agentgate.audit.log_id", log_id.to_owned());
}

/// Fills `log` from one committed record.
pub fn log(log: &mut impl LogRecord, row: &Row, stored: &Stored, log_id: &str) {
    log.set_timestamp(at(stored.ts));
    log.set_observed_timestamp(SystemTime::now());
    let (kind, warn) = match &stored.record {
        Record::Decision(d) => ("decision", !matches!(d.verdict, Verdict::Allow)),
        Record::Outcome(_) => ("outcome", false),
        Record::Upgrade(_) => ("upgrade", false),
        Record::Admin(_) => ("admin", true),
    };
    let (number, text) = if warn {
        (Severity::Warn, "WARN")
    } else {
        (Severity::Info, "INFO")
    };
    log.set_severity_number(number);
    log.set_severity_text(text);
    log.set_event_name(match kind {
        "decision" => "agentgate.audit.decision",
        "outcome" => "agentgate.audit.outcome",
        "upgrade" => "agentgate.audit.upgrade",
        _ => "agentgate.audit.admin",
    });
    log.set_body(AnyValue::from(row.record.clone()));
    log.add_attribute("agentgate.audit.kind", kind);
    log.add_attribute("agentgate.audit.seq", row.seq as i64);
    log.add_attribute("agentgate.audit.hash", row.hash.clone());
    log.add_attribute("agentgate.audit.log_id", log_id.to_owned());
    if let Some(tenant) = stored.record.tenant() {
        log.add_attribute("agentgate.tenant", tenant.to_owned());
    }
    match &stored.record {
        Record::Decision(d) => {
            let (trace, span) = ids(log_id, &d.request_id);
            log.set_trace_context(trace, span, Some(TraceFlags::SAMPLED));
            for KeyValue { key, value, .. } in decision_attributes(d) {
                log.add_attribute(key, any(value));
            }
        }
        Record::Outcome(o) => {
            let (trace, span) = ids(log_id, &o.request_id);
            log.set_trace_context(trace, span, Some(TraceFlags::SAMPLED));
            log.add_attribute("agentgate.request_id", o.request_id.clone());
            log.add_attribute("http.response.status_code", i64::from(o.status));
        }
        Record::Upgrade(u) => {
            log.add_attribute("agentgate.request_id", u.request_id.clone());
        }
        Record::Admin(_) => {}
    }
}

/// The attributes a decision is found by.
fn decision_attributes(d: &Decision) -> Vec<KeyValue> {
    let mut out = vec![
        KeyValue::new("agentgate.request_id", d.request_id.clone()),
        KeyValue::new("server.address", d.host.clone()),
        KeyValue::new("url.path", d.path.clone()),
    ];
    let effect = match &d.verdict {
        Verdict::Allow => "allow",
        Verdict::Deny { .. } => "deny",
    };
    out.push(KeyValue::new("agentgate.effect", effect));
    if let Verdict::Deny {
        gate,
        status,
        error,
    } = &d.verdict
    {
        out.push(KeyValue::new("agentgate.gate", gate.to_string()));
        out.push(KeyValue::new("agentgate.error", error.to_string()));
        out.push(KeyValue::new("agentgate.status", i64::from(*status)));
    }
    if let Some(agent) = &d.agent {
        out.push(KeyValue::new("agentgate.agent", agent.clone()));
    }
    if let Some(method) = &d.method {
        out.push(KeyValue::new("http.request.method", method.clone()));
    }
    if let Some(tuple) = &d.tuple {
        if let Some(name) = tuple.action.get("name").and_then(|n| n.as_str()) {
            out.push(KeyValue::new("agentgate.action", name.to_owned()));
        }
        out.push(KeyValue::new(
            "agentgate.resource",
            resource(&tuple.resource),
        ));
    }
    out
}

/// A span attribute's value as a log attribute's.
fn any(value: opentelemetry::Value) -> AnyValue {
    match value {
        opentelemetry::Value::I64(n) => AnyValue::Int(n),
        opentelemetry::Value::Bool(b) => AnyValue::Boolean(b),
        opentelemetry::Value::F64(f) => AnyValue::Double(f),
        other => AnyValue::from(other.to_string()),
    }
}

/// `type:id` of an AuthZEN resource.
fn resource(r: &serde_json::Value) -> String {
    let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    format!("{}:{}", s("type"), s("id"))
}

/// The trace and span ids of one request: from a digest of the log and request ids.
fn ids(log_id: &str, request_id: &str) -> (TraceId, SpanId) {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(log_id.as_bytes());
    ctx.update(&[0]);
    ctx.update(request_id.as_bytes());
    let digest = ctx.finish();
    let digest = digest.as_ref();
    let mut trace = [0u8; 16];
    let mut span = [0u8; 8];
    trace.copy_from_slice(&digest[..16]);
    span.copy_from_slice(&digest[16..24]);
    (TraceId::from_bytes(trace), SpanId::from_bytes(span))
}

/// One span for a request: from its decision to its outcome (when there was one), with an
/// event for each gate that ran, in order.
pub fn span(
    decided: &Stored,
    outcome: Option<(&Outcome, i64)>,
    log_id: &str,
    scope: &InstrumentationScope,
) -> Option<SpanData> {
    let Record::Decision(d) = &decided.record else {
        return None;
    };
    let (trace, span_id) = ids(log_id, &d.request_id);
    let start = at(decided.ts);
    let end = outcome.map_or(start, |(_, ts)| at(ts).max(start));
    let mut attributes = decision_attributes(d);
    attributes.push(KeyValue::new("agentgate.audit.seq", decided.seq as i64));
    if let Some(tenant) = &d.tenant {
        attributes.push(KeyValue::new("agentgate.tenant", tenant.clone()));
    }
    if let Some((o, _)) = outcome {
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(o.status),
        ));
        attributes.push(KeyValue::new("agentgate.bytes_up", o.bytes_up as i64));
        attributes.push(KeyValue::new("agentgate.bytes_down", o.bytes_down as i64));
    }
    let event = |name: &'static str, attrs: Vec<KeyValue>| Event::new(name, start, attrs, 0);
    let mut events = Vec::with_capacity(6);
    if let Some(agent) = &d.agent {
        events.push(event(
            "identity",
            vec![KeyValue::new("agentgate.agent", agent.clone())],
        ));
    }
    if let Some(tuple) = &d.tuple {
        let name = tuple.action.get("name").and_then(|n| n.as_str());
        events.push(event(
            "intent",
            vec![
                KeyValue::new("agentgate.action", name.unwrap_or_default().to_owned()),
                KeyValue::new("agentgate.resource", resource(&tuple.resource)),
            ],
        ));
    }
    if let Some(p) = &d.policy {
        events.push(event(
            "policy",
            vec![
                KeyValue::new("agentgate.policy.effect", p.policy_effect.to_string()),
                KeyValue::new("agentgate.policy.hash", p.policy_hash.clone()),
                KeyValue::new("agentgate.policy.mode", p.mode.to_string()),
            ],
        ));
    }
    match &d.consent {
        Some(ConsentNote::Approved { id, scope, by, .. }) => events.push(event(
            "consent",
            vec![
                KeyValue::new("agentgate.consent.id", id.clone()),
                KeyValue::new("agentgate.consent.status", "approved"),
                KeyValue::new("agentgate.consent.scope", scope.to_string()),
                KeyValue::new("agentgate.consent.by", by.clone().unwrap_or_default()),
            ],
        )),
        Some(ConsentNote::Refused { id, error }) => events.push(event(
            "consent",
            vec![
                KeyValue::new("agentgate.consent.id", id.clone().unwrap_or_default()),
                KeyValue::new("agentgate.consent.status", "refused"),
                KeyValue::new("agentgate.error", error.to_string()),
            ],
        )),
        None => {}
    }
    if let Some(c) = &d.credential {
        events.push(event(
            "token",
            vec![
                KeyValue::new("agentgate.credential.id", c.id.clone()),
                KeyValue::new("agentgate.credential.kind", c.kind.to_string()),
            ],
        ));
    }
    let status = match &d.verdict {
        Verdict::Allow => Status::Ok,
        Verdict::Deny { gate, error, .. } => Status::error(format!("{gate}: {error}")),
    };
    Some(SpanData {
        span_context: SpanContext::new(
            trace,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: match d
            .tuple
            .as_ref()
            .and_then(|t| t.action.get("name")?.as_str())
        {
            Some(action) => Cow::Owned(action.to_owned()),
            None => Cow::Borrowed("agentgate.request"),
        },
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: 0,
        events: {
            let mut all = SpanEvents::default();
            all.events = events;
            all
        },
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use opentelemetry::logs::Logger as _;
    use opentelemetry::logs::LoggerProvider as _;
    use opentelemetry_sdk::logs::SdkLoggerProvider;

    use super::*;

    const ALLOWED: &str = r#"{"action":{"name":"create_issue","properties":{}},"agent":"spiffe://example.org/agent/ci","consent":{"by":"alice","how":"cli","id":"cns_00000000000000a1","scope":"once","status":"approved"},"context":{},"credential":{"expires":1795658000,"fingerprint":"hmac-sha256:ffee","grant_expires":1795657000,"id":"gh-acme","kind":"github-app"},"effect":"allow","gate":null,"host":"api.github.com","instance":"0a1b2c3d","jti":"jti-1","kind":"decision","method":"POST","mode":"enforce","path":"/repos/acme/widgets/issues","policy_effect":"allow","policy_hash":"ab12cd","reasons":["owners may open issues"],"reference":false,"request_id":"0a1b2c3d-1f","resource":{"id":"acme/widgets","properties":{},"type":"repo"},"seq":42,"tenant":"acme","ts":1795654648428610}"#;
    const REFUSED: &str = r#"{"agent":"spiffe://example.org/agent/ci","effect":"deny","error":"policy_denied","gate":"policy","host":"api.github.com","instance":"0a1b2c3d","jti":"j","kind":"decision","method":"GET","mode":"enforce","path":"/user","policy_effect":"deny","policy_hash":"ab12cd","reasons":["nobody reads /user"],"request_id":"0a1b2c3d-22","seq":43,"status":403,"tenant":null,"ts":1795654648428610}"#;
    const OUTCOME: &str = r#"{"body_sha256":null,"bytes_down":5120,"bytes_up":2,"complete":true,"duration_us":183004,"instance":"0a1b2c3d","kind":"outcome","redacted":0,"request_id":"0a1b2c3d-1f","seq":44,"status":201,"tenant":"acme","ts":1795654648611614}"#;

    fn scope() -> InstrumentationScope {
        InstrumentationScope::builder("agentgate").build()
    }

    fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a opentelemetry::Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn an_allowed_request_is_one_span_with_an_event_per_gate() {
        let decided = Stored::decode(ALLOWED).unwrap();
        let outcome = Stored::decode(OUTCOME).unwrap();
        let Record::Outcome(o) = &outcome.record else {
            panic!("not an outcome")
        };
        let span = span(&decided, Some((o, outcome.ts)), "log-1", &scope()).unwrap();
        assert_eq!(span.name, "create_issue");
        let names: Vec<&str> = span.events.iter().map(|e| e.name.as_ref()).collect();
        assert_eq!(names, ["identity", "intent", "policy", "consent", "token"]);
        assert_eq!(span.status, Status::Ok);
        assert_eq!(
            span.end_time.duration_since(span.start_time).unwrap(),
            Duration::from_micros(183_004)
        );
        assert_eq!(
            attr(&span, "http.response.status_code"),
            Some(&opentelemetry::Value::I64(201))
        );
        assert_eq!(
            attr(&span, "agentgate.resource").map(|v| v.to_string()),
            Some("repo:acme/widgets".into())
        );
        // The same request always gets the same ids; another log's does not.
        let again = self::span(&decided, None, "log-1", &scope()).unwrap();
        assert_eq!(again.span_context, span.span_context);
        let other = self::span(&decided, None, "log-2", &scope()).unwrap();
        assert_ne!(other.span_context.trace_id(), span.span_context.trace_id());
    }

    #[test]
    fn a_refused_request_is_an_error_span_and_only_decisions_make_spans() {
        let refused = Stored::decode(REFUSED).unwrap();
        let span = span(&refused, None, "log-1", &scope()).unwrap();
        assert_eq!(span.status, Status::error("policy: policy_denied"));
        assert_eq!(span.name, "agentgate.request");
        assert_eq!(span.start_time, span.end_time);
        assert_eq!(
            attr(&span, "agentgate.status"),
            Some(&opentelemetry::Value::I64(403))
        );
        let outcome = Stored::decode(OUTCOME).unwrap();
        assert!(self::span(&outcome, None, "log-1", &scope()).is_none());
    }

    #[test]
    fn a_log_record_carries_the_record_and_its_place_in_the_chain() {
        let provider = SdkLoggerProvider::builder().build();
        let mut log = provider.logger("t").create_log_record();
        let stored = Stored::decode(REFUSED).unwrap();
        let row = Row {
            seq: 43,
            hash: "ab".into(),
            record: REFUSED.into(),
            tenant: None,
        };
        self::log(&mut log, &row, &stored, "log-1");
        assert_eq!(log.body(), Some(&AnyValue::from(REFUSED.to_owned())));
        assert_eq!(log.severity_number(), Some(Severity::Warn));
        assert_eq!(log.event_name(), Some("agentgate.audit.decision"));
        let get = |k: &str| {
            log.attributes_iter()
                .find(|(key, _)| key.as_str() == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("agentgate.audit.seq"), Some(AnyValue::Int(43)));
        assert_eq!(get("agentgate.gate"), Some(AnyValue::from("policy")));
        assert_eq!(get("agentgate.status"), Some(AnyValue::Int(403)));
        assert_eq!(get("agentgate.tenant"), None);
        assert_eq!(
            log.timestamp(),
            Some(UNIX_EPOCH + Duration::from_micros(1_795_654_648_428_610))
        );
        assert!(log.trace_context().is_some());
    }
}
