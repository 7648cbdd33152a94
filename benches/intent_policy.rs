//! Gates 2 and 3 on typical requests: catalog match alone, intent (route + tuple), the default
//! policy's evaluation, and both together. Baseline in the same run: building the request's
//! header map and JSON subject, which every request pays anyway. An MCP `tools/call`
//! (`mcp_create_issue`, a pinned tool on a configured server) is measured beside the REST
//! call that does the same with a body of the same size (`github_issue_create_same_size`).
//!
//! `cargo bench --bench intent_policy`

#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};

use agentgate::intent::mcp::McpServer;
use agentgate::intent::mcp::pins::Pins;
use agentgate::intent::{BodyPrefix, Intent, Subject, Target};
use agentgate::policy::{Policy, PolicyConfig, default_sources};

struct Case {
    name: &'static str,
    method: Method,
    host: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    body: &'static [u8],
    content_type: Option<&'static str>,
}

/// The MCP call and a REST body of the same length (the REST body is padded).
const MCP_CALL: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_issue","arguments":{"owner":"acme","repo":"web","title":"bug","body":"it broke"}}}"#;
const REST_SAME_SIZE: &[u8] = br#"{"title":"bug","body":"it broke ......................................................................................................................."}"#;

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "mcp_create_issue",
            method: Method::POST,
            host: "api.githubcopilot.com",
            path: "/mcp",
            query: None,
            body: MCP_CALL,
            content_type: Some("application/json"),
        },
        Case {
            name: "github_issue_create_same_size",
            method: Method::POST,
            host: "api.github.com",
            path: "/repos/acme/web/issues",
            query: None,
            body: REST_SAME_SIZE,
            content_type: Some("application/json"),
        },
        Case {
            name: "github_issue_list",
            method: Method::GET,
            host: "api.github.com",
            path: "/repos/acme/web/issues",
            query: Some("state=open&per_page=50"),
            body: b"",
            content_type: None,
        },
        Case {
            name: "github_issue_create",
            method: Method::POST,
            host: "api.github.com",
            path: "/repos/acme/web/issues",
            query: None,
            body: br#"{"title":"bug","body":"it broke"}"#,
            content_type: Some("application/json"),
        },
        Case {
            name: "slack_post_message",
            method: Method::POST,
            host: "slack.com",
            path: "/api/chat.postMessage",
            query: None,
            body: br#"{"channel":"C0123456","text":"deploy finished"}"#,
            content_type: Some("application/json"),
        },
        Case {
            name: "github_repo_delete",
            method: Method::DELETE,
            host: "api.github.com",
            path: "/repos/acme/web",
            query: None,
            body: b"",
            content_type: None,
        },
    ]
}

fn subject() -> Subject<'static> {
    Subject {
        id: "spiffe://agentgate.local/agent/bench",
        name: "bench",
        tenant: None,
        owner: Some("alice"),
        trust_domain: "agentgate.local",
    }
}

fn bench(c: &mut Criterion) {
    assert_eq!(MCP_CALL.len(), REST_SAME_SIZE.len(), "same-size bodies");
    let pins = std::sync::Arc::new(Pins::in_memory());
    pins.observe(
        None,
        "github",
        &[
            serde_json::json!({"name": "create_issue", "description": "Open an issue.",
                             "inputSchema": {"type": "object"}, "annotations": {}}),
        ],
    );
    let intent = Intent::embedded(1 << 20)
        .expect("catalog")
        .with_mcp(&[McpServer {
            name: "github".into(),
            url: "https://api.githubcopilot.com/mcp".into(),
            vendor: None,
        }])
        .with_mcp_pins(pins);
    let policy =
        Policy::from_sources(&default_sources(), &PolicyConfig::default()).expect("policy");
    let mut group = c.benchmark_group("intent_policy");
    group.bench_function("baseline_headers_and_subject", |b| {
        b.iter(|| {
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_static("application/json"));
            black_box(serde_json::json!({"type": "agent", "id": subject().id}));
            black_box(h)
        })
    });
    for case in cases() {
        let mut headers = HeaderMap::new();
        if let Some(ct) = case.content_type {
            headers.insert("content-type", HeaderValue::from_static(ct));
        }
        let target = Target {
            method: &case.method,
            host: case.host,
            path: case.path,
            query: case.query,
            headers: &headers,
        };
        if let Some(host) = intent.catalog().host(case.host) {
            group.bench_function(format!("match/{}", case.name), |b| {
                b.iter(|| black_box(host.find(black_box(&case.method), black_box(case.path))))
            });
        }
        let body = Some(BodyPrefix {
            bytes: case.body,
            truncated: false,
        });
        group.bench_function(format!("intent/{}", case.name), |b| {
            b.iter(|| {
                let routed = intent.route(black_box(target)).expect("route");
                black_box(routed.tuple(subject(), body).expect("tuple"))
            })
        });
        let tuple = intent
            .route(target)
            .expect("route")
            .tuple(subject(), body)
            .expect("tuple");
        group.bench_function(format!("policy/{}", case.name), |b| {
            b.iter(|| black_box(policy.evaluate(black_box(&tuple.json))))
        });
        group.bench_function(format!("intent+policy/{}", case.name), |b| {
            b.iter(|| {
                let routed = intent.route(black_box(target)).expect("route");
                let tuple = routed.tuple(subject(), body).expect("tuple");
                black_box(policy.evaluate(&tuple.json))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
