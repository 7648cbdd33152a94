//! Shared harness for the end-to-end tests: each test builds its own
//! [`TestEnv`] (temp dir, test PKI, upstream servers) and its own proxy, so tests
//! are independent and run in parallel.
#![allow(dead_code)] // not every test uses every helper

pub mod admin;
pub mod agent;
pub mod certs;
pub mod cli;
pub mod clients;
pub mod git_server;
pub mod held;
pub mod judged;
pub mod mcp;
pub mod nats;
pub mod oidc;
pub mod otlp;
pub mod pattern;
pub mod proxy;
pub mod raw;
pub mod upstream;
pub mod webhook;
pub mod workload;

use certs::{HOSTS, Pki};
use proxy::{ConfigBuilder, Proxy, toml_str};
use raw::RawResponse;
use std::path::PathBuf;
use tempfile::TempDir;
use upstream::{Mode, Upstream};

/// One test's world. When it is dropped at the end of a test that has not failed, every
/// request an AgentGate forwarded to its upstreams must be described by a decision record
/// (see [`judged`]); the temp dir (and the proxies' state in it) outlives that check.
pub struct TestEnv {
    pub dir: TempDir,
    pub pki: Pki,
    /// h2 + http/1.1 upstream answering for every name in [`HOSTS`].
    pub upstream: Upstream,
    /// The upstreams and audit logs of this test, for the judged-as-sent check.
    judged: std::sync::Arc<judged::Recorder>,
}

impl TestEnv {
    pub async fn new() -> Self {
        // Installed first: upstreams and proxies started from here on join it.
        let judged = judged::install();
        let dir = tempfile::Builder::new()
            .prefix("agentgate-e2e-")
            .tempdir()
            .expect("tempdir");
        let pki = Pki::new(dir.path());
        let upstream = Upstream::start(pki.service_leaves(), Mode::Tls).await;
        TestEnv {
            dir,
            pki,
            upstream,
            judged,
        }
    }

    /// Turns the judged-as-sent check off for this test; only for tests that bypass
    /// AgentGate on purpose or damage its audit log. `reason` says which.
    pub fn skip_sent_check(&self, reason: &str) {
        self.judged.skip(reason);
    }

    /// Declares that the test itself sends `method target` straight to an upstream (to
    /// show what the upstream does without AgentGate); the judged-as-sent check then does
    /// not report those requests.
    pub fn sent_directly(&self, method: &str, target: &str) {
        self.judged.allow_direct(method, target);
    }

    /// Runs the judged-as-sent check now (it also runs when the env is dropped), retrying
    /// for up to `within` while records land: the number of forwarded requests matched, or
    /// the report of those no record describes.
    pub fn check_sent(&self, within: std::time::Duration) -> Result<usize, String> {
        self.judged.settle(within)
    }

    /// Every request that any upstream of this test received, whole.
    pub fn received(&self) -> Vec<upstream::Received> {
        self.judged.received()
    }

    /// The requests an AgentGate forwarded (they carry its `Via`) to any upstream of this test.
    pub fn forwarded(&self) -> Vec<upstream::Received> {
        self.received()
            .into_iter()
            .filter(|r| r.via_instance().is_some())
            .collect()
    }

    /// The proxy's state dir; not created here (the proxy must create it).
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Another upstream serving the real names with valid certificates.
    pub async fn extra_upstream(&self, mode: Mode) -> Upstream {
        Upstream::start(self.pki.service_leaves(), mode).await
    }

    /// Base config: loopback listeners, our upstream CA trusted, every service
    /// name on :443 resolved to the in-process upstream, and a policy that allows
    /// everything (the proxy-core tests are not about policy; `with_default_policy`
    /// switches to the shipped one).
    pub fn config(&self) -> ConfigBuilder {
        let allow_all = self.dir.path().join("allow-all-policy");
        std::fs::create_dir_all(&allow_all).expect("policy dir");
        std::fs::write(
            allow_all.join("allow.rego"),
            "package agentgate\n\ndecision := {\"effect\": \"allow\", \"reasons\": [\"e2e allow-all policy\"]}\n",
        )
        .expect("write policy");
        let mut cfg = ConfigBuilder::new()
            .set("policy", "dir", &toml_str(&allow_all.display().to_string()))
            .set(
                "upstream",
                "extra_roots",
                &format!(
                    "[{}]",
                    toml_str(&self.pki.upstream_ca_path.display().to_string())
                ),
            )
            .set("upstream", "connect_timeout", &toml_str("5s"))
            .set("upstream", "response_timeout", &toml_str("3s"))
            .set(
                "identity",
                "bundles",
                &format!(
                    "{{ {} = {} }}",
                    toml_str(agent::TRUST_DOMAIN),
                    toml_str(&agent::write_bundle(self.dir.path()).display().to_string())
                ),
            );
        for host in HOSTS {
            cfg = cfg.resolve(&format!("{host}:443"), self.upstream.addr);
        }
        cfg
    }

    /// The base config with the policy the proxy ships (seeded into the state dir).
    pub fn with_default_policy(&self) -> ConfigBuilder {
        self.config().set("policy", "dir", "\"\"")
    }

    pub fn write_config(&self, cfg: &ConfigBuilder) -> PathBuf {
        let path = self.dir.path().join("agentgate.toml");
        std::fs::write(&path, cfg.render()).expect("write config");
        path
    }

    pub fn start(&self, cfg: ConfigBuilder) -> Proxy {
        self.start_with_env(cfg, &[])
    }

    pub fn start_with_env(&self, cfg: ConfigBuilder, envs: &[(&str, &str)]) -> Proxy {
        let path = self.write_config(&cfg);
        let proxy = proxy::start(&self.home(), &path, envs);
        assert_eq!(
            proxy.ca_path,
            self.home().join("ca.crt"),
            "READY ca= should be <AGENTGATE_HOME>/ca.crt"
        );
        proxy
    }

    pub fn start_default(&self) -> Proxy {
        self.start(self.config())
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        judged::uninstall(&self.judged);
        if std::thread::panicking() {
            return;
        }
        if let Some(reason) = self.judged.skipped() {
            eprintln!("judged-as-sent check skipped: {reason}");
            return;
        }
        // Proxies still running may be finishing their outcome records.
        match self.judged.settle(std::time::Duration::from_secs(5)) {
            Ok(n) => eprintln!(
                "judged-as-sent: {n} forwarded request(s), each described by its decision record"
            ),
            Err(report) => panic!("{report}"),
        }
    }
}

/// A normal request still works: CONNECT api.github.com:443, TLS, GET /echo.
/// Called after every bad-input test.
pub async fn assert_serves(proxy: &Proxy) {
    let tls = raw::tunnel_to(proxy, "api.github.com", b"http/1.1").await;
    let mut h1 = raw::h1_client(tls).await;
    let resp = raw::send_h1(&mut h1, raw::get("/echo?still=alive", "api.github.com")).await;
    assert_eq!(
        resp.status,
        200,
        "proxy stopped serving normal requests: {}",
        resp.text()
    );
    assert_eq!(resp.json()["query"], "still=alive");
    assert_request_id(&resp);
}

/// Every response carries `X-AgentGate-Request-Id`.
pub fn assert_request_id(resp: &RawResponse) -> String {
    let id = resp
        .header("x-agentgate-request-id")
        .unwrap_or_else(|| panic!("no X-AgentGate-Request-Id in {:?}", resp.headers));
    assert!(!id.trim().is_empty(), "empty X-AgentGate-Request-Id");
    id.to_owned()
}

/// A refusal by the proxy: status, `X-AgentGate-Denied-By: gate`, and the JSON
/// body `{error, gate, reason, request_id}`. Returns the body.
pub fn assert_denied(resp: &RawResponse, status: u16, gate: &str) -> serde_json::Value {
    assert_eq!(
        resp.status,
        status,
        "expected {status} from gate {gate}; got {} {:?} {}",
        resp.status,
        resp.headers,
        resp.text()
    );
    assert_eq!(
        resp.header("x-agentgate-denied-by"),
        Some(gate),
        "X-AgentGate-Denied-By; headers {:?}",
        resp.headers
    );
    let id = assert_request_id(resp);
    let body = resp.json();
    assert_eq!(body["gate"], gate, "gate in body {body}");
    for field in ["error", "reason", "request_id"] {
        assert!(
            body[field].as_str().is_some_and(|s| !s.is_empty()),
            "refusal body lacks a non-empty {field:?}: {body}"
        );
    }
    assert_eq!(
        body["request_id"], id,
        "body request_id should equal X-AgentGate-Request-Id"
    );
    body
}

/// Decision records in the proxy's audit log (read-only; works while it runs), waiting up
/// to 5 s until `want` says they are complete (records land just after the response).
pub async fn audit_decisions(
    proxy: &Proxy,
    want: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let db = proxy.home.join("audit.db");
    let mut records = Vec::new();
    for _ in 0..50 {
        records = read_decisions(&db);
        if want(&records) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    records
}

fn read_decisions(db: &std::path::Path) -> Vec<serde_json::Value> {
    read_records(db, "decision")
}

/// Every record of `kind` in an audit log (read-only, works while the proxy writes).
pub fn read_records(db: &std::path::Path, kind: &str) -> Vec<serde_json::Value> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open audit.db");
    let mut stmt = conn
        .prepare("SELECT record FROM records ORDER BY seq")
        .expect("query audit.db");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("read audit.db")
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.expect("row")).expect("record JSON"))
        .filter(|r| r["kind"] == kind)
        .collect()
}
