//! Gate 5 from a warm cache: find the connection for the origin, reuse the decision's grant,
//! strip the agent's credentials and inject the vault's. Baseline in the same run: the
//! header map every request builds anyway (cloned per iteration in both cases).
//!
//! `cargo bench --bench token`   (target: injection adds ≤ 10 µs per request)

#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method};

use agentgate::audit::Audit;
use agentgate::config::Config;
use agentgate::gates::consent::Consent;
use agentgate::gates::policy::Verdict;
use agentgate::gates::token;
use agentgate::identity::Caller;
use agentgate::intent::{Intent, Subject, Target};
use agentgate::policy::{Decision, Effect};
use agentgate::secret::Secret;
use agentgate::state::StateDir;
use agentgate::vault::store::{NewConnection, Store};
use agentgate::vault::{Kind, Settings, Vault};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::open_or_create(dir.path().join("home")).expect("state");
    let mut store = Store::open(&state, None).expect("vault");
    store
        .put(
            NewConnection {
                tenant: String::new(),
                service: "github".into(),
                user: String::new(),
                kind: Kind::Static,
                origin: "api.github.com".into(),
                settings: Settings::default(),
                expires: None,
            },
            &Secret::new("github_pat_bench_0123456789abcdef0123456789abcdef".into()),
            0,
        )
        .expect("put");
    drop(store);
    let mut config = Config::default();
    config.audit.durability = agentgate::audit::Durability::Commit;
    let (vault, audit) = rt.block_on(async {
        let audit = Arc::new(
            Audit::open(&config.audit, &state, "bench", Default::default()).expect("audit"),
        );
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let guard = Arc::new(agentgate::egress::guard::Guard::new(
            &config.egress,
            &config.upstream.resolve,
        ));
        let tls = agentgate::egress::upstream::Upstream::new(&config.upstream, guard, provider)
            .and_then(|u| u.client_config())
            .expect("tls");
        let vault = Arc::new(
            Vault::open(
                &config.vault,
                &config.upstream.resolve,
                &state,
                tls,
                audit.clone(),
            )
            .expect("vault"),
        );
        (vault, audit)
    });

    let caller = Caller {
        spiffe_id: "spiffe://agentgate.local/agent/bench".into(),
        trust_domain: "agentgate.local".into(),
        tenant: None,
        agent: "bench".into(),
        owner: Some("alice".into()),
        jti: None,
        expires: i64::MAX,
    };
    let intent = Intent::embedded(1 << 20).expect("catalog");
    let mut headers = HeaderMap::new();
    headers.insert(
        "accept",
        HeaderValue::from_static("application/vnd.github+json"),
    );
    headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    headers.insert("authorization", HeaderValue::from_static("token agent-own"));
    let routed = intent
        .route(Target {
            method: &Method::GET,
            host: "api.github.com",
            path: "/repos/acme/web/issues",
            query: None,
            headers: &headers,
        })
        .expect("route");
    let tuple = routed
        .tuple(
            Subject {
                id: &caller.spiffe_id,
                name: "bench",
                tenant: None,
                owner: Some("alice"),
                trust_domain: "agentgate.local",
            },
            None,
        )
        .expect("tuple");
    let verdict = Verdict {
        decision: Arc::new(Decision {
            effect: Effect::Allow,
            reasons: Vec::new(),
            scopes: Vec::new(),
            consent: None,
            budgets: Vec::new(),
            policy_hash: Arc::from(""),
        }),
        escalate: false,
    };
    let consent = Consent::NotNeeded;
    // Warm the cache and the grant.
    let warm = rt.block_on(token::issue(
        &vault,
        &caller,
        Some("api.github.com"),
        &tuple,
        &verdict,
        &consent,
        &headers,
    ));
    assert!(
        warm.expect("issue").issued().is_some(),
        "a connection serves the origin"
    );

    let mut g = c.benchmark_group("token");
    g.bench_function("baseline_clone_headers", |b| {
        b.iter(|| black_box(headers.clone()))
    });
    g.bench_function("warm_obtain_and_inject", |b| {
        b.iter(|| {
            let mut h = headers.clone();
            // A warm grant never waits: polled once, it is ready.
            let origin = Some("api.github.com");
            let injection = token::issue(&vault, &caller, origin, &tuple, &verdict, &consent, &h)
                .now_or_never()
                .expect("the warm path never waits")
                .expect("issue");
            injection.apply(&mut h);
            black_box(h)
        })
    });
    g.finish();
    drop(vault);
    rt.block_on(audit.close());
}

criterion_group!(benches, bench);
criterion_main!(benches);
