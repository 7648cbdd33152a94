//! The AuthZEN PDP on the admin listener against the OpenID AuthZEN working group's own
//! material: the Authorization API 1.0 certification scenario (Basic, Batch and Discovery
//! levels, `tests/data/authzen/certification.json`) run by a Python `requests` harness
//! (`tests/support/authzen_cert.py`) over plain HTTP and over the admin listener's TLS, with
//! the scenario's fixture as a Rego policy; the discovery document naming the URL the
//! caller used or `admin.public_url`; and the Todo interop scenario's decisions
//! (`decisions-authorization-api-1_0-02.json`, copied unchanged) replayed as the working
//! group's runner does, with the Todo rules as a Rego policy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::admin::call;
use crate::support::certs::Ca;
use crate::support::cli::{agentgate, ok};
use crate::support::clients::{clean_command, output};
use crate::support::proxy::{ConfigBuilder, Proxy, toml_str};
use crate::support::raw::{self, RawResponse};
use crate::support::{TestEnv, audit_decisions};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/authzen")
}

/// The base config with `policy` in force. The evaluation bound is generous: the debug
/// build's regorus on a loaded 2-core machine can pass the default 100 ms, and a timed-out
/// evaluation is a deny for another reason.
fn with_policy(env: &TestEnv, policy: &Path) -> ConfigBuilder {
    env.config()
        .set("policy", "dir", &toml_str(&policy.display().to_string()))
        .set("policy", "eval_timeout", &toml_str("5s"))
}

/// Runs the certification harness against `base`; panics with its report unless every case
/// and check passed.
async fn certify(base: &str, token: &str, ca: Option<&Path>) {
    let cases = data().join("certification.json");
    let python = std::env::var("AGENTGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = clean_command(&python);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/authzen_cert.py"))
        .arg("--base")
        .arg(base)
        .arg("--cases")
        .arg(&cases)
        // The token in the environment rather than on the command line.
        .env("AUTHZEN_PDP_API_KEY", token)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    if let Some(ca) = ca {
        cmd.arg("--ca").arg(ca);
    }
    let out = output(cmd, "python3 authzen_cert.py (needs requests)").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "AuthZEN certification against {base} failed ({}):\n{stdout}{stderr}",
        out.status
    );
    // Every case of the file ran, and the four checks of the harness's own.
    let listed: Value =
        serde_json::from_str(&std::fs::read_to_string(&cases).expect("read cases")).expect("cases");
    let n = listed["cases"].as_array().expect("cases array").len() + 4;
    assert!(
        stdout.contains(&format!("{n} checks, {n} passed, 0 failed")),
        "expected {n} checks to pass:\n{stdout}{stderr}"
    );
    eprintln!("{stdout}");
}

/// The certification scenario over plain HTTP on the admin listener (and the fixture
/// policy's own test table, rules 1-8 one by one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authzen_certification_scenario_over_http() {
    let env = TestEnv::new().await;
    let fixture = data().join("certification");
    let proxy = env.start(with_policy(&env, &fixture));
    let out = agentgate(
        &proxy.home,
        &["policy", "test", &fixture.display().to_string()],
        &[],
    )
    .await;
    ok(
        &out,
        "agentgate policy test tests/data/authzen/certification",
    );
    certify(
        &format!("http://{}", proxy.admin_addr),
        &proxy.admin_token(),
        None,
    )
    .await;
    assert_no_proxy_decisions(&proxy).await;
}

/// The certification scenario over the admin listener's TLS, verified with the CA that
/// issued its certificate: discovery must advertise `https://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authzen_certification_scenario_over_admin_tls() {
    let env = TestEnv::new().await;
    let dir = env.dir.path();
    let ca = Ca::new("authzen test CA");
    let leaf = ca.leaf(&["127.0.0.1", "localhost"], false);
    let (cert, key, ca_file) = (
        dir.join("admin.crt"),
        dir.join("admin.key"),
        dir.join("admin-ca.pem"),
    );
    leaf.write_pem(&cert, &key);
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    // TLS needs allow_remote; tests bind loopback only.
    let cfg = with_policy(&env, &data().join("certification"))
        .set("admin", "allow_remote", "true")
        .set(
            "admin",
            "tls",
            &format!(
                "{{ cert = {}, key = {} }}",
                toml_str(&cert.display().to_string()),
                toml_str(&key.display().to_string())
            ),
        );
    let proxy = env.start(cfg);
    certify(
        &format!("https://127.0.0.1:{}", proxy.admin_addr.port()),
        &proxy.admin_token(),
        Some(&ca_file),
    )
    .await;
}

/// `GET /.well-known/authzen-configuration` over plain HTTP with `Host: host`.
async fn discovery(addr: SocketAddr, host: &str) -> RawResponse {
    let req = format!(
        "GET /.well-known/authzen-configuration HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let mut s = raw::tcp(addr).await;
    raw::exchange(&mut s, req.as_bytes())
        .await
        .expect("admin port closed without answering discovery")
}

fn assert_advertises(resp: &RawResponse, base: &str) {
    assert_eq!(resp.status, 200, "{}", resp.text());
    let meta = resp.json();
    assert_eq!(
        meta,
        json!({
            "policy_decision_point": base,
            "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
            "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
            "access_request_endpoint": format!("{base}/access/v1/requests"),
            "capabilities": ["urn:openid:authzen:capability:access-request"],
        }),
        "discovery should name {base}"
    );
}

/// Discovery names the URL the caller reached the PDP at (its Host), unless
/// `admin.public_url` says where callers reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authzen_discovery_names_the_host_used_or_the_public_url() {
    let env = TestEnv::new().await;
    let proxy = env.start_default();
    let port = proxy.admin_addr.port();
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let resp = discovery(proxy.admin_addr, &host).await;
        assert_advertises(&resp, &format!("http://{host}"));
    }
    proxy.stop();

    let public = "https://pdp.example.test:9443";
    let proxy = env.start(env.config().set("admin", "public_url", &toml_str(public)));
    let resp = discovery(proxy.admin_addr, &proxy.admin_addr.to_string()).await;
    assert_advertises(&resp, public);
}

// ---------------------------------------------------------------------------------------
// The Todo interop scenario

/// One replayed request and how it differs from the working group's expectation.
struct Replayed {
    endpoint: &'static str,
    request: Value,
    expected: Value,
    got: Value,
}

/// Every evaluation of the Todo interop decisions file (single, then batch, as
/// `interop/authzen-todo-backend/test/runner.ts` sends them) against AgentGate with the Todo
/// policy: every decision must be the expected one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authzen_todo_interop_decisions_replay() {
    let env = TestEnv::new().await;
    let proxy = env.start(with_policy(&env, &data().join("todo/policy")));
    let token = proxy.admin_token();
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(data().join("todo/decisions-authorization-api-1_0-02.json"))
            .expect("read the decisions file"),
    )
    .expect("decisions file is JSON");

    let mut replayed = Vec::new();
    let mut decisions = 0;
    for (endpoint, section) in [("evaluation", "evaluation"), ("evaluations", "evaluations")] {
        for case in file[section].as_array().expect("a list of decisions") {
            let request = &case["request"];
            let path = format!("/access/v1/{endpoint}");
            let resp = call(
                proxy.admin_addr,
                "POST",
                &path,
                Some(&token),
                Some(&request.to_string()),
            )
            .await;
            assert_eq!(resp.status, 200, "{path} {request}: {}", resp.text());
            let body = resp.json();
            // The runner takes `decision` (single) or `evaluations` (batch); AgentGate's
            // items carry a `context` beside the decision, so the decisions are compared.
            let got = if endpoint == "evaluation" {
                decisions += 1;
                body["decision"].clone()
            } else {
                let items = body["evaluations"].as_array().cloned().unwrap_or_default();
                decisions += case["expected"].as_array().map_or(0, Vec::len);
                Value::Array(
                    items
                        .iter()
                        .map(|i| json!({"decision": i["decision"]}))
                        .collect(),
                )
            };
            replayed.push(Replayed {
                endpoint,
                request: request.clone(),
                expected: case["expected"].clone(),
                got,
            });
        }
    }
    let differ: Vec<String> = replayed
        .iter()
        .filter(|r| r.got != r.expected)
        .map(|r| {
            format!(
                "  {} {}\n    expected {} got {}",
                r.endpoint, r.request, r.expected, r.got
            )
        })
        .collect();
    let requests = replayed.len();
    let matched = requests - differ.len();
    eprintln!(
        "Todo interop replay: {matched} of {requests} requests ({decisions} decisions) as expected"
    );
    assert!(
        differ.is_empty(),
        "{} of {requests} Todo interop requests were decided otherwise:\n{}",
        differ.len(),
        differ.join("\n")
    );
    assert_eq!(
        requests, 43,
        "the decisions file holds 40 evaluations and 3 batches"
    );
    assert_eq!(decisions, 46);
    assert_no_proxy_decisions(&proxy).await;
}

/// PDP evaluations are not requests: no decision record is written for them.
async fn assert_no_proxy_decisions(proxy: &Proxy) {
    assert!(
        audit_decisions(proxy, |_| true).await.is_empty(),
        "PDP evaluations showed up as proxy decisions"
    );
}
