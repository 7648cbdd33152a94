//! `GET /metrics` (Prometheus text format 0.0.4) on the admin listener: the counters move by
//! exactly the requests sent through the proxy (allowed, refused by policy, refused by
//! identity), the histograms count them, the caches count their lookups, and the route
//! wants the instance admin token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::proxy::toml_str;
use crate::support::{TestEnv, assert_denied, raw};

/// `GET path` on the admin listener, with `Authorization: Bearer token` when given.
async fn admin_get(addr: SocketAddr, path: &str, token: Option<&str>) -> raw::RawResponse {
    crate::support::admin::call(addr, "GET", path, token, None).await
}

/// One scrape: series (`name{labels}`) → value, checking the exposition format on the way.
struct Scrape {
    text: String,
    samples: HashMap<String, f64>,
}

impl Scrape {
    async fn take(addr: SocketAddr, token: &str) -> Scrape {
        let resp = admin_get(addr, "/metrics", Some(token)).await;
        assert_eq!(resp.status, 200, "/metrics: {}", resp.text());
        let ctype = resp.header("content-type").unwrap_or_default();
        assert!(
            ctype.starts_with("text/plain; version=0.0.4"),
            "content-type {ctype:?}"
        );
        let text = resp.text();
        let mut samples = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line:?}"));
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "series twice: {series}"
            );
        }
        Scrape { text, samples }
    }

    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("{series} not in /metrics:\n{}", self.text))
    }

    /// The `_bucket` values of a histogram series in order, checking they are cumulative
    /// and that `+Inf` equals `_count`. Returns the count.
    fn histogram(&self, name: &str, labels: &str) -> f64 {
        let prefix = format!("{name}_bucket{{{labels}le=\"");
        let buckets: Vec<(&str, f64)> = self
            .text
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|rest| {
                let (le, value) = rest.split_once("\"} ").expect("bucket line");
                (le, value.parse().expect("bucket value"))
            })
            .collect();
        assert!(buckets.len() > 2, "{name} {labels}: buckets {buckets:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name} {labels}: buckets not cumulative: {buckets:?}"
        );
        let (last_le, inf) = buckets[buckets.len() - 1];
        assert_eq!(last_le, "+Inf");
        let labels = labels.trim_end_matches(',');
        let count = if labels.is_empty() {
            self.get(&format!("{name}_count"))
        } else {
            self.get(&format!("{name}_count{{{labels}}}"))
        };
        assert_eq!(inf, count, "{name} {labels}: +Inf bucket != _count");
        count
    }
}

const ALLOWED: &str = r#"agentgate_requests_total{effect="allow",gate="none"}"#;
const BY_POLICY: &str = r#"agentgate_requests_total{effect="deny",gate="policy"}"#;
const BY_IDENTITY: &str = r#"agentgate_requests_total{effect="deny",gate="identity"}"#;
const FORWARDED: &str = "agentgate_request_duration_seconds";
const DECISION: &str = "agentgate_decision_duration_seconds";
const AUDIT: &str = "agentgate_audit_commit_duration_seconds";

fn cache(name: &str, result: &str) -> String {
    format!(r#"agentgate_cache_requests_total{{cache="{name}",result="{result}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_the_requests_sent() {
    let env = TestEnv::new().await;
    // The shipped policy: reads of known GitHub operations pass, unknown paths are refused.
    let proxy = env.start(
        env.with_default_policy()
            .set("policy", "eval_timeout", &toml_str("5s")),
    );
    let token = proxy.admin_token();
    let token = token.trim();

    // The route wants the instance admin token.
    let anonymous = admin_get(proxy.admin_addr, "/metrics", None).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert_eq!(
        admin_get(proxy.admin_addr, "/metrics", Some("not-the-token"))
            .await
            .status,
        401
    );

    let before = Scrape::take(proxy.admin_addr, token).await;

    // One tunnel (an allowed CONNECT) carrying one allowed read and one refused request.
    let tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let read = raw::send_h1(
        &mut h1,
        raw::get("/repos/acme/web/issues", "api.github.com"),
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.text());
    let refused = raw::send_h1(
        &mut h1,
        raw::get("/definitely/not/an-api", "api.github.com"),
    )
    .await;
    assert_denied(&refused, 403, "policy");
    drop(h1);
    // And a CONNECT without a credential.
    let (_s, anonymous) = raw::connect_as(proxy.proxy_addr, "api.github.com:443", None).await;
    assert_denied(&anonymous, 407, "identity");

    // The forwarded request is counted when its response body is done (its outcome).
    let mut after = Scrape::take(proxy.admin_addr, token).await;
    for _ in 0..50 {
        if after.get(&format!("{FORWARDED}_count")) > before.get(&format!("{FORWARDED}_count")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = Scrape::take(proxy.admin_addr, token).await;
    }
    let delta = |series: &str| after.get(series) - before.get(series);

    // CONNECT + the read; one refusal by policy; one by identity; nothing else.
    assert_eq!(delta(ALLOWED), 2.0, "allowed");
    assert_eq!(delta(BY_POLICY), 1.0, "refused by policy");
    assert_eq!(delta(BY_IDENTITY), 1.0, "refused by identity");
    for gate in [
        "ingress", "intent", "consent", "token", "audit", "guard", "limits", "upstream",
    ] {
        let series = format!(r#"agentgate_requests_total{{effect="deny",gate="{gate}"}}"#);
        assert_eq!(delta(&series), 0.0, "{series}");
    }
    assert_eq!(delta(r#"agentgate_tunnels_total{effect="allow"}"#), 1.0);
    assert_eq!(delta(r#"agentgate_tunnels_total{effect="deny"}"#), 1.0);

    // Every decision has its latency; the one forwarded request its total duration.
    for (scrape, name) in [(&before, "before"), (&after, "after")] {
        let allow = scrape.histogram(DECISION, r#"effect="allow","#);
        let deny = scrape.histogram(DECISION, r#"effect="deny","#);
        assert_eq!(
            allow,
            scrape.get(ALLOWED),
            "{name}: allowed decisions vs their histogram"
        );
        let denied: f64 = scrape
            .samples
            .iter()
            .filter(|(k, _)| k.starts_with(r#"agentgate_requests_total{effect="deny""#))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(deny, denied, "{name}: refusals vs their histogram");
        scrape.histogram(FORWARDED, "");
        scrape.histogram(AUDIT, "");
    }
    assert_eq!(
        after.histogram(DECISION, r#"effect="allow","#)
            - before.histogram(DECISION, r#"effect="allow","#),
        2.0
    );
    assert_eq!(
        after.histogram(DECISION, r#"effect="deny","#)
            - before.histogram(DECISION, r#"effect="deny","#),
        2.0
    );
    assert_eq!(
        after.histogram(FORWARDED, "") - before.histogram(FORWARDED, ""),
        1.0
    );
    // Four decision records were committed (the outcome is not awaited).
    let commits = after.histogram(AUDIT, "") - before.histogram(AUDIT, "");
    assert!(commits >= 4.0, "audit commits counted: {commits}");
    assert!(after.get("agentgate_audit_seq") >= before.get("agentgate_audit_seq") + 4.0);

    // One TLS handshake for api.github.com: one leaf lookup. One credential verified.
    let leaf = delta(&cache("leaf_cert", "hit")) + delta(&cache("leaf_cert", "miss"));
    assert_eq!(leaf, 1.0, "leaf certificate lookups");
    let identity = delta(&cache("identity", "hit")) + delta(&cache("identity", "miss"));
    assert_eq!(identity, 1.0, "verified-token lookups");
    // No credential was injected.
    assert_eq!(
        delta(&cache("vault", "hit")) + delta(&cache("vault", "miss")),
        0.0
    );

    // A second tunnel with the same token and host: both caches answer.
    let tls = raw::tunnel_to(&proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let read = raw::send_h1(
        &mut h1,
        raw::get("/repos/acme/web/issues", "api.github.com"),
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.text());
    drop(h1);
    let again = Scrape::take(proxy.admin_addr, token).await;
    let grew = |series: &str| again.get(series) - after.get(series);
    assert_eq!(grew(&cache("leaf_cert", "hit")), 1.0);
    assert_eq!(grew(&cache("leaf_cert", "miss")), 0.0);
    assert_eq!(grew(&cache("identity", "hit")), 1.0);
    assert_eq!(grew(&cache("identity", "miss")), 0.0);
    assert_eq!(grew(ALLOWED), 2.0);
}
