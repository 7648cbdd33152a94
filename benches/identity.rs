//! What the identity gate costs per request, in-process (no sockets):
//!
//! - `recheck`: a request inside a tunnel (the caller was verified at CONNECT): expiry and
//!   revocation lookups in the current snapshot.
//! - `authenticate`: a CONNECT or plain http:// request with a token seen before: header
//!   parsing (Basic, as clients send it), SHA-256 of the token, cache hit, revocations.
//! - `verify (cold)`: the first time a token is seen: full JWS + ES256 verification.
//!
//! Run: `cargo bench --bench identity` (release profile). Prints ns per operation and
//! the ratio of each to the cold verification measured in the same run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use agentgate::clock::now;
use agentgate::config::IdentityConfig;
use agentgate::gates;
use agentgate::gates::identity::Claim;
use agentgate::identity::Identity;
use agentgate::identity::issuer::{self, Registration};
use agentgate::identity::jwt::{self, Rules};
use agentgate::identity::registry::Registry;
use agentgate::state::StateDir;
use base64::Engine;
use http::{HeaderMap, HeaderValue, header};

/// Runs `f` repeatedly for about `budget` and returns nanoseconds per call (best of 5).
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let mut n = 0u64;
        let start = Instant::now();
        while start.elapsed() < budget / 5 {
            for _ in 0..64 {
                f();
            }
            n += 64;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open_or_create(dir.path().join("home")).unwrap();
    let config = IdentityConfig::default();
    let mut registry = Registry::open(&state).unwrap();
    // A realistic registry: a thousand agents, a few revoked.
    for i in 0..1000 {
        let name = format!("agent-{i}");
        let req = Registration {
            name: &name,
            owner: Some("alice"),
            tenant: None,
            ttl: Duration::from_secs(3600),
        };
        issuer::register(&state, &mut registry, &config, &req, now()).unwrap();
        if i % 100 == 7 {
            registry.revoke_agent(&name, "bench", now()).unwrap();
        }
    }
    let req = Registration {
        name: "bot",
        owner: Some("alice"),
        tenant: None,
        ttl: Duration::from_secs(3600),
    };
    let reg = issuer::register(&state, &mut registry, &config, &req, now()).unwrap();
    let identity = Identity::load(&config, &state).unwrap();

    let mut headers = HeaderMap::new();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("bot:{}", reg.token));
    headers.insert(
        header::PROXY_AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {basic}")).unwrap(),
    );
    let caller = gates::identity::verify(&identity, Claim::Credential(&headers)).unwrap();

    let snapshot = registry.snapshot(now()).unwrap();
    let key_json: serde_json::Value =
        serde_json::from_str(&snapshot.issuer_keys[0].public_jwk).unwrap();
    let key = jwt::VerifyKey::from_jwk(&key_json).unwrap();
    let rules = Rules {
        audience: config.audience.clone(),
        leeway: config.leeway,
        max_token_bytes: config.max_token_bytes,
    };

    let budget = Duration::from_millis(1500);
    let recheck = time(budget, || {
        black_box(gates::identity::verify(
            &identity,
            Claim::Verified(black_box(&caller)),
        ))
        .unwrap();
    });
    let authenticate = time(budget, || {
        black_box(gates::identity::verify(
            &identity,
            Claim::Credential(black_box(&headers)),
        ))
        .unwrap();
    });
    let cold = time(budget, || {
        black_box(jwt::verify(black_box(&reg.token), &rules, now(), |_, _| {
            Ok(&key)
        }))
        .unwrap();
    });
    println!("identity gate, per operation (best of 5; 1000 agents, 10 revoked)");
    for (name, ns) in [
        ("recheck (request in a tunnel)", recheck),
        ("authenticate (cached token)", authenticate),
        ("verify (cold, ES256)", cold),
    ] {
        println!(
            "  {name:<32} {:>9.2} µs   {:>6.3}× cold verify",
            ns / 1000.0,
            ns / cold
        );
    }
}
