//! `[otel]`: the committed audit trail exported over OTLP to a real receiver built from the
//! official OTLP protobuf definitions (Python `opentelemetry-proto` + `grpcio`), over gRPC and
//! over HTTP/protobuf. Every audit record arrives once, as a log record carrying its seq,
//! hash and fields, under resource attributes naming the service, the instance and the
//! tenant; with `otel.spans` each request is one span with its gates as events. A collector
//! that refuses exports gets them again (retried with backoff, counted on `/metrics`); one
//! that is slow or down does not hold up requests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::support::cli::{agentgate, ok};
use crate::support::clients::curl;
use crate::support::otlp::Otlp;
use crate::support::proxy::{ConfigBuilder, Proxy, toml_str};
use crate::support::{TestEnv, read_records};

const ISSUES_URL: &str = "https://api.github.com/repos/acme/web/issues";

/// A policy directory that allows everything.
fn allow_dir(env: &TestEnv) -> PathBuf {
    let dir = env.dir.path().join("allow-policy");
    std::fs::create_dir_all(&dir).expect("policy dir");
    std::fs::write(
        dir.join("allow.rego"),
        "package agentgate\n\ndecision := {\"effect\": \"allow\", \"reasons\": [\"ok\"]}\n",
    )
    .expect("write policy");
    dir
}

/// The default policy, tenant `acme` allowing everything, and export to `endpoint`.
fn config(env: &TestEnv, endpoint: &str, protocol: &str) -> ConfigBuilder {
    let allow = toml_str(&allow_dir(env).display().to_string());
    env.with_default_policy()
        .set("tenants.acme", "policy_dir", &allow)
        .set("otel", "endpoint", &toml_str(endpoint))
        .set("otel", "protocol", &toml_str(protocol))
        .set("otel", "spans", "true")
        .set("otel", "timeout", &toml_str("2s"))
        .set("otel", "max_backoff", &toml_str("500ms"))
        .set(
            "otel",
            "resource",
            "{ \"deployment.environment\" = \"e2e\" }",
        )
}

/// `agents register NAME --tenant acme`: its proxy URL.
async fn tenant_agent(env: &TestEnv, proxy: &Proxy) -> String {
    let config = env.dir.path().join("agentgate.toml").display().to_string();
    let out = agentgate(
        &proxy.home,
        &[
            "agents", "register", "acme-bot", "--tenant", "acme", "--owner", "olive", "-o", "json",
        ],
        &[("AGENTGATE_CONFIG", &config)],
    )
    .await;
    let doc: Value = serde_json::from_str(&ok(&out, "agents register")).expect("register JSON");
    let token = doc["token"].as_str().expect("token");
    format!("http://acme-bot:{token}@{}", proxy.proxy_addr)
}

/// Every audit record in the proxy's log, by seq.
fn audit_by_seq(proxy: &Proxy) -> BTreeMap<i64, Value> {
    let db = proxy.home.join("audit.db");
    ["decision", "outcome", "upgrade", "admin"]
        .iter()
        .flat_map(|kind| read_records(&db, kind))
        .map(|r| (r["seq"].as_i64().expect("seq"), r))
        .collect()
}

/// The log records the receiver holds, by `agentgate.audit.seq` (each seq once).
fn logs_by_seq(records: &[Value]) -> BTreeMap<i64, Value> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r["signal"] == "log") {
        let seq = r["attributes"]["agentgate.audit.seq"]
            .as_i64()
            .unwrap_or_else(|| panic!("log record without a seq: {r}"));
        assert!(out.insert(seq, r.clone()).is_none(), "seq {seq} twice");
    }
    out
}

/// Waits until the receiver holds a log record for every record in the audit log.
async fn all_exported(otlp: &Otlp, proxy: &Proxy) -> (BTreeMap<i64, Value>, Vec<Value>) {
    let mut last = Vec::new();
    for _ in 0..300 {
        let audit = audit_by_seq(proxy);
        last = otlp.records();
        let logs = logs_by_seq(&last);
        if !audit.is_empty() && logs.keys().eq(audit.keys()) {
            return (audit, last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "not every audit record was exported: audit seqs {:?}, exported {:?}\n{}",
        audit_by_seq(proxy).keys().collect::<Vec<_>>(),
        logs_by_seq(&last).keys().collect::<Vec<_>>(),
        proxy.stderr()
    );
}

/// Sends one allowed read as the instance's agent, one refused request, and one allowed read
/// as tenant acme's agent.
async fn traffic(env: &TestEnv, proxy: &Proxy) {
    let read = curl(proxy, &[ISSUES_URL]).await;
    assert_eq!(read.status, 200, "{}", String::from_utf8_lossy(&read.body));
    let refused = curl(proxy, &["https://api.github.com/definitely/not/an-api"]).await;
    assert_eq!(
        refused.status,
        403,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let acme = tenant_agent(env, proxy).await;
    let read = curl(proxy, &["-x", &acme, ISSUES_URL]).await;
    assert_eq!(read.status, 200, "{}", String::from_utf8_lossy(&read.body));
}

async fn exports_everything(protocol: &str) {
    let env = TestEnv::new().await;
    let otlp = Otlp::start(env.dir.path(), &[]);
    let endpoint = match protocol {
        "grpc" => otlp.grpc_url(),
        _ => otlp.http_url(),
    };
    let proxy = env.start(config(&env, &endpoint, protocol));
    traffic(&env, &proxy).await;
    let (audit, records) = all_exported(&otlp, &proxy).await;
    let logs = logs_by_seq(&records);
    let transport = if protocol == "grpc" { "grpc" } else { "http" };

    for (seq, record) in &audit {
        let log = &logs[seq];
        assert_eq!(log["transport"], transport);
        // The body is the canonical record, exactly as the chain hashes it.
        let body: Value = serde_json::from_str(log["body"].as_str().expect("body text"))
            .unwrap_or_else(|e| panic!("seq {seq}: body is not the record: {e}"));
        assert_eq!(&body, record, "seq {seq}");
        let attrs = &log["attributes"];
        assert_eq!(attrs["agentgate.audit.kind"], record["kind"], "seq {seq}");
        assert_eq!(
            attrs["agentgate.audit.hash"].as_str().map(str::len),
            Some(64)
        );
        assert_eq!(
            log["time_unix_nano"].as_i64(),
            record["ts"].as_i64().map(|us| us * 1000),
            "seq {seq}"
        );
        let resource = &log["resource"];
        assert_eq!(resource["service.name"], "agentgate");
        assert_eq!(resource["service.instance.id"], record["instance"]);
        assert_eq!(resource["deployment.environment"], "e2e");
        assert_eq!(resource["agentgate.tenant"], record["tenant"], "seq {seq}");
        assert_eq!(attrs["agentgate.tenant"], record["tenant"], "seq {seq}");
        if record["kind"] == "decision" {
            assert_eq!(attrs["agentgate.request_id"], record["request_id"]);
            assert_eq!(attrs["agentgate.effect"], record["effect"]);
            assert_eq!(attrs["server.address"], record["host"]);
            assert_eq!(
                log["severity_text"],
                if record["effect"] == "allow" {
                    "INFO"
                } else {
                    "WARN"
                }
            );
            assert_eq!(log["trace_id"].as_str().map(str::len), Some(32));
        }
    }

    // One span per request: the CONNECTs, the reads and the refusal.
    let decisions: Vec<&Value> = audit.values().filter(|r| r["kind"] == "decision").collect();
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = otlp
            .records()
            .into_iter()
            .filter(|r| r["signal"] == "span")
            .collect::<Vec<_>>();
        if spans.len() >= decisions.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        spans.len(),
        decisions.len(),
        "spans: {spans:#?}\nreceiver: {} {:?} audit {}\n{}",
        otlp.status(),
        otlp.records()
            .iter()
            .map(|r| r["signal"].to_string())
            .collect::<Vec<_>>(),
        audit.len(),
        proxy.stderr()
    );
    for d in decisions {
        let span = spans
            .iter()
            .find(|s| s["attributes"]["agentgate.request_id"] == d["request_id"])
            .unwrap_or_else(|| panic!("no span for {d}"));
        assert_eq!(span["resource"]["agentgate.tenant"], d["tenant"]);
        let log = &logs[&d["seq"].as_i64().expect("seq")];
        assert_eq!(
            span["trace_id"], log["trace_id"],
            "the log and span share a trace"
        );
        let events: Vec<&str> = span["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["name"].as_str().expect("event name"))
            .collect();
        if d["effect"] == "allow" {
            assert_eq!(span["status"]["code"], 1, "{span}");
            let gates: &[&str] = match d["method"].as_str() {
                // A tunnel is judged on who asks; the requests in it on all the gates.
                Some("CONNECT") => &["identity"],
                _ => &["identity", "intent", "policy"],
            };
            assert!(events.starts_with(gates), "{span}");
        } else {
            assert_eq!(span["status"]["code"], 2, "{span}");
            assert!(
                span["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(d["gate"].as_str().unwrap_or("?"))),
                "{span}"
            );
        }
        if d["method"] == "GET" && d["effect"] == "allow" {
            assert_eq!(span["name"], d["action"]["name"], "{span}");
            assert_eq!(
                span["attributes"]["http.response.status_code"], 200,
                "{span}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_exports_every_audit_record_over_grpc() {
    exports_everything("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_exports_every_audit_record_over_http_protobuf() {
    exports_everything("http/protobuf").await;
}

/// `agentgate_otel_export_failures_total` from `/metrics`.
async fn export_failures(proxy: &Proxy) -> u64 {
    let token = proxy.admin_token();
    let resp = crate::support::admin::call(
        proxy.admin_addr,
        "GET",
        "/metrics",
        Some(token.trim()),
        None,
    )
    .await;
    resp.text()
        .lines()
        .find_map(|l| l.strip_prefix("agentgate_otel_export_failures_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no export failures metric:\n{}", resp.text()))
}

/// A collector that refuses its first exports gets every record later, once; a collector
/// that does not answer, or is not there at all, holds up no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_retries_a_refusing_collector_and_a_dead_or_slow_one_holds_up_nothing() {
    let env = TestEnv::new().await;
    let refusing = Otlp::start(env.dir.path(), &["--fail-first", "3"]);
    let proxy = env.start(config(&env, &refusing.grpc_url(), "grpc"));
    traffic(&env, &proxy).await;
    let (audit, records) = all_exported(&refusing, &proxy).await;
    assert_eq!(logs_by_seq(&records).len(), audit.len());
    // The exporter retried past the three refusals (the crate's own retry, then ours).
    assert_eq!(refusing.status()["failed"], 3);
    proxy.stop();

    // Slow: every export waits 60 s for its answer (the exporter gives up after 2 s and
    // retries); dead: nothing listens. Requests go through meanwhile, and their records
    // are committed.
    let slow = Otlp::start(env.dir.path(), &["--delay-ms", "60000"]);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    for (what, endpoint) in [("slow", slow.grpc_url()), ("dead", dead)] {
        let env = TestEnv::new().await;
        let proxy = env.start(config(&env, &endpoint, "grpc"));
        for _ in 0..20 {
            let read = curl(&proxy, &[ISSUES_URL]).await;
            assert_eq!(
                read.status,
                200,
                "{what}: {}",
                String::from_utf8_lossy(&read.body)
            );
        }
        assert!(
            audit_by_seq(&proxy).len() >= 40,
            "{what}: the records are committed"
        );
        let mut failures = 0;
        for _ in 0..100 {
            failures = export_failures(&proxy).await;
            if failures > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(failures > 0, "{what}: the failed export is counted");
    }
}

/// Secret headers (`otel.headers_file`) go only over TLS or to loopback: a plain-http collector
/// elsewhere is refused at start, naming the file and why, never the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_refuses_to_send_secret_headers_over_plain_http() {
    use crate::support::proxy::{Launch, launch};
    let env = TestEnv::new().await;
    let headers = env.dir.path().join("otel-headers");
    crate::support::cli::write_private(&headers, b"x-api-key: s3cr3t-collector-key\n");
    let cfg = env
        .config()
        .set(
            "otel",
            "endpoint",
            &toml_str("http://collector.example:4317"),
        )
        .set(
            "otel",
            "headers_file",
            &toml_str(&headers.display().to_string()),
        );
    let path = env.write_config(&cfg);
    match launch(&env.home(), &path, &[]) {
        Launch::Ready(_) => panic!("started sending secret headers over plain http"),
        Launch::Exited { status, stderr } => {
            assert!(!status.success());
            assert!(
                stderr.contains("otel.headers_file") && stderr.contains("https"),
                "{stderr}"
            );
            assert!(!stderr.contains("s3cr3t-collector-key"), "{stderr}");
        }
    }
}
