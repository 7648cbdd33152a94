use std::collections::HashMap;

use super::*;

/// The sample lines of a rendering: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or((l, "x"));
            let value = value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("not a number in {l:?}"));
            (series.to_owned(), value)
        })
        .collect()
}

fn bucket_values(text: &str, name: &str, labels: &str) -> Vec<(String, f64)> {
    let prefix = format!("{name}_bucket{{{labels}le=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let (le, value) = rest.split_once("\"} ").unwrap_or_else(|| panic!("{rest}"));
            (
                le.to_owned(),
                value.parse().unwrap_or_else(|_| panic!("{rest}")),
            )
        })
        .collect()
}

#[test]
fn counts_requests_per_effect_and_gate() {
    let m = Metrics::default();
    m.request(None, Duration::from_micros(30));
    m.request(None, Duration::from_micros(30));
    m.request(Some(Gate::Policy), Duration::from_micros(30));
    m.tunnel(Some(Gate::Identity), Duration::from_micros(5));
    m.tunnel(None, Duration::from_micros(5));
    assert_eq!(m.requests(None), 3);
    assert_eq!(m.requests(Some(Gate::Policy)), 1);
    assert_eq!(m.requests(Some(Gate::Identity)), 1);
    assert_eq!(m.requests(Some(Gate::Upstream)), 0);

    let s = samples(&m.render(&Gauges::default()));
    assert_eq!(
        s[r#"agentgate_requests_total{effect="allow",gate="none"}"#],
        3.0
    );
    assert_eq!(
        s[r#"agentgate_requests_total{effect="deny",gate="policy"}"#],
        1.0
    );
    assert_eq!(
        s[r#"agentgate_requests_total{effect="deny",gate="identity"}"#],
        1.0
    );
    // Every gate has its series, zero or not, so rates work from the first scrape.
    for g in GATES {
        let key = format!(
            r#"agentgate_requests_total{{effect="deny",gate="{}"}}"#,
            g.as_str()
        );
        assert!(s.contains_key(&key), "{key} missing");
    }
    assert_eq!(s[r#"agentgate_tunnels_total{effect="allow"}"#], 1.0);
    assert_eq!(s[r#"agentgate_tunnels_total{effect="deny"}"#], 1.0);
    assert_eq!(
        s[r#"agentgate_decision_duration_seconds_count{effect="allow"}"#],
        3.0
    );
    assert_eq!(
        s[r#"agentgate_decision_duration_seconds_count{effect="deny"}"#],
        2.0
    );
}

#[test]
fn histogram_buckets_are_cumulative_and_end_with_the_count() {
    let m = Metrics::default();
    // On a bound (le is inclusive), between bounds, past every bound.
    for us in [10, 11, 50, 999, 1_000, 1_001, 20_000_000] {
        m.audit_committed(Duration::from_micros(us));
    }
    let text = m.render(&Gauges::default());
    let buckets = bucket_values(&text, "agentgate_audit_commit_duration_seconds", "");
    assert_eq!(buckets.len(), BOUNDS.len() + 1);
    assert_eq!(buckets[0], ("0.00001".to_owned(), 1.0));
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    let le = |x: &str| buckets.iter().find(|(l, _)| l == x).map(|(_, v)| *v);
    assert_eq!(le("0.000025"), Some(2.0));
    assert_eq!(le("0.00005"), Some(3.0));
    assert_eq!(le("0.001"), Some(5.0));
    assert_eq!(le("0.0025"), Some(6.0));
    assert_eq!(le("10"), Some(6.0));
    assert_eq!(le("+Inf"), Some(7.0));
    // The bounds parse as seconds and increase.
    let bounds: Vec<f64> = buckets[..BOUNDS.len()]
        .iter()
        .map(|(l, _)| l.parse().unwrap_or(f64::NAN))
        .collect();
    assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");

    let s = samples(&text);
    assert_eq!(s["agentgate_audit_commit_duration_seconds_count"], 7.0);
    let sum = s["agentgate_audit_commit_duration_seconds_sum"];
    let want = (10 + 11 + 50 + 999 + 1_000 + 1_001 + 20_000_000) as f64 / 1e6;
    assert!((sum - want).abs() < 1e-9, "sum {sum} != {want}");
    // Nothing else observed.
    assert_eq!(s["agentgate_request_duration_seconds_count"], 0.0);
    assert_eq!(
        s[r#"agentgate_request_duration_seconds_bucket{le="+Inf"}"#],
        0.0
    );
}

#[test]
fn every_family_has_help_and_type_before_its_samples() {
    let m = Metrics::default();
    m.forwarded(Duration::from_millis(3));
    let text = m.render(&Gauges {
        pending_consents: 2,
        open_connections: 5,
        agents_active: 7,
        audit_seq: 42,
        audit_disk: vec![
            DiskGauge {
                dir: "log",
                space: Some((1_000, 4_000)),
                low: true,
            },
            DiskGauge {
                dir: "archive",
                space: None,
                low: true,
            },
        ],
    });
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut helped = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(!help.is_empty(), "empty help: {line}");
            assert!(helped.insert(name.to_owned()), "HELP twice: {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(helped.contains(name), "TYPE before HELP: {name}");
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice: {name}"
            );
        } else {
            let series = line.split([' ', '{']).next().unwrap_or("");
            assert!(series.starts_with("agentgate_"), "{line}");
            let family = match typed.get(series) {
                Some(_) => series,
                None => ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| series.strip_suffix(s))
                    .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                    .unwrap_or_else(|| panic!("sample before its TYPE: {line}")),
            };
            assert!(typed.contains_key(family));
            if typed[family] == "counter" {
                assert!(
                    family.ends_with("_total"),
                    "counter without _total: {family}"
                );
            }
        }
    }
    let s = samples(&text);
    assert_eq!(s["agentgate_pending_consents"], 2.0);
    assert_eq!(s["agentgate_open_connections"], 5.0);
    assert_eq!(s["agentgate_agents_active"], 7.0);
    assert_eq!(s["agentgate_audit_seq"], 42.0);
    assert_eq!(s[r#"agentgate_audit_disk_free_bytes{dir="log"}"#], 1000.0);
    assert_eq!(s[r#"agentgate_audit_disk_total_bytes{dir="log"}"#], 4000.0);
    assert_eq!(s[r#"agentgate_audit_disk_low{dir="log"}"#], 1.0);
    // An unreadable file system: no sizes, but low.
    assert!(!s.contains_key(r#"agentgate_audit_disk_free_bytes{dir="archive"}"#));
    assert_eq!(s[r#"agentgate_audit_disk_low{dir="archive"}"#], 1.0);
    assert_eq!(s["agentgate_request_duration_seconds_count"], 1.0);
    assert_eq!(
        s[r#"agentgate_request_duration_seconds_bucket{le="0.0025"}"#],
        0.0
    );
    assert_eq!(
        s[r#"agentgate_request_duration_seconds_bucket{le="0.005"}"#],
        1.0
    );
    assert!(text.ends_with('\n'));
}

#[test]
fn caches_consents_webhooks_and_events_are_rendered() {
    let m = Metrics::default();
    let leaf = Arc::new(CacheStats::default());
    leaf.miss();
    leaf.hit();
    leaf.hit();
    m.track_cache(Cache::LeafCert, leaf.clone());
    let vault = Arc::new(CacheStats::default());
    vault.miss();
    m.track_cache(Cache::Vault, vault);
    let hooks = Arc::new(crate::webhooks::Stats::default());
    hooks.delivered.fetch_add(4, Relaxed);
    hooks.failed.fetch_add(1, Relaxed);
    m.track_webhooks(hooks);
    m.consent(Status::Pending);
    m.consent(Status::Pending);
    m.consent(Status::Approved);
    m.consent(Status::Expired);
    m.panic();
    m.policy_reload(true);
    m.policy_reload(false);
    m.policy_reload(false);
    m.audit_failed();
    assert_eq!(m.audit_dropped(), 1);
    // Counted after registration too: the cache owns the counters.
    leaf.hit();

    let s = samples(&m.render(&Gauges::default()));
    let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("{k} missing"));
    assert_eq!(
        get(r#"agentgate_cache_requests_total{cache="leaf_cert",result="hit"}"#),
        3.0
    );
    assert_eq!(
        get(r#"agentgate_cache_requests_total{cache="leaf_cert",result="miss"}"#),
        1.0
    );
    assert_eq!(
        get(r#"agentgate_cache_requests_total{cache="vault",result="miss"}"#),
        1.0
    );
    // Not registered: present, zero.
    assert_eq!(
        get(r#"agentgate_cache_requests_total{cache="identity",result="hit"}"#),
        0.0
    );
    assert_eq!(get(r#"agentgate_consents_total{outcome="requested"}"#), 2.0);
    assert_eq!(get(r#"agentgate_consents_total{outcome="approved"}"#), 1.0);
    assert_eq!(get(r#"agentgate_consents_total{outcome="denied"}"#), 0.0);
    assert_eq!(get(r#"agentgate_consents_total{outcome="expired"}"#), 1.0);
    assert_eq!(get(r#"agentgate_webhooks_total{result="delivered"}"#), 4.0);
    assert_eq!(get(r#"agentgate_webhooks_total{result="failed"}"#), 1.0);
    assert_eq!(get(r#"agentgate_webhooks_total{result="dropped"}"#), 0.0);
    assert_eq!(get("agentgate_panics_total"), 1.0);
    assert_eq!(
        get(r#"agentgate_policy_reloads_total{result="loaded"}"#),
        1.0
    );
    assert_eq!(
        get(r#"agentgate_policy_reloads_total{result="failed"}"#),
        2.0
    );
    assert_eq!(get("agentgate_audit_commit_failures_total"), 1.0);
    assert_eq!(get("agentgate_audit_dropped_total"), 1.0);
    assert_eq!(
        get(&format!(
            "agentgate_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
}
