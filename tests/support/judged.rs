//! "What is judged is what leaves" (DESIGN §2), checked as a property of every end-to-end
//! test.
//!
//! Every test upstream records each request it receives whole ([`Received`]: method,
//! target, every header, body length and SHA-256). Every proxy a test starts registers its
//! audit log. When the test's [`super::TestEnv`] is dropped (and the test has not already
//! failed), each request that an AgentGate forwarded — it carries a
//! `Via: 1.1 agentgate-<instance>` entry — must be described by one decision record of that
//! instance, each record describing at most one request:
//!
//! - `instance` is the one named in `Via`, `effect` is `allow`, and the record has `sent`;
//! - `sent.method` is the method received, `sent.target_sha256` the SHA-256 of the
//!   path-and-query received;
//! - `sent.headers_sha256` is [`headers_sha256`] of the headers received (the canonical
//!   digest: hop-by-hop, credential, `Host`, framing and `Via` excluded, and
//!   `Accept-Encoding` too when the record names a `credential`);
//! - `sent.headers` holds exactly the meaning-bearing headers received ([`MEANING`]);
//! - the body: `sent.body_sha256`/`sent.body_bytes` when the decision read it whole, and
//!   the outcome record's `body_sha256`/`bytes_up` (same `request_id`) always when present
//!   and as the only evidence when the decision's is `null`. A body the upstream did not
//!   read to its end is not compared.
//!
//! And no forwarded request carries a method-override header or trailer fields. Requests
//! with no AgentGate `Via` must be ones AgentGate makes itself (GitHub App token minting and
//! revocation) or ones the test declared it sends straight to an upstream
//! ([`super::TestEnv::sent_directly`]); anything else reached an upstream without passing
//! AgentGate.
//!
//! A test that deliberately bypasses AgentGate or damages its audit log opts out with
//! [`super::TestEnv::skip_sent_check`].
//!
//! Registration is per test thread: [`super::TestEnv::new`] installs a [`Recorder`], and
//! upstreams and proxies started on that thread while it is installed join it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::pattern::{Sha256Stream, sha256_hex};
use super::upstream::{Received, ReceivedBody, ReceivedLog};

/// Header names left out of the canonical digest (replaced, framing, or hop-by-hop).
pub const EXCLUDED: [&str; 10] = [
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "content-length",
    "transfer-encoding",
    "via",
    "connection",
    "keep-alive",
    "te",
];

/// Method-override headers: never forwarded.
pub const OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Headers that change a request's meaning at the vendor; `sent.headers` lists those present.
pub const MEANING: [&str; 5] = [
    "content-type",
    "content-encoding",
    "content-range",
    "content-language",
    "x-github-api-version",
];

/// The canonical digest of forwarded end-to-end headers: names lowercased, [`EXCLUDED`]
/// ones (and `accept-encoding` when a credential was injected) left out, stable-sorted by
/// name bytes; SHA-256 over `u64be(len name) ‖ name ‖ u64be(len value) ‖ value` per entry.
pub fn headers_sha256(headers: &[(String, Vec<u8>)], credential: bool) -> String {
    let mut entries: Vec<(String, &[u8])> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_slice()))
        .filter(|(k, _)| {
            let replaced = credential && k == "accept-encoding";
            !replaced && !EXCLUDED.contains(&k.as_str())
        })
        .collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut h = Sha256Stream::new();
    for (k, v) in entries {
        h.update(&(k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update(&(v.len() as u64).to_be_bytes());
        h.update(v);
    }
    h.finish().1
}

/// Requests AgentGate itself sends to the test upstream (no `Via`).
fn own_request(r: &Received) -> bool {
    let path = r.target.split('?').next().unwrap_or_default();
    (r.method == "POST"
        && path.starts_with("/app/installations/")
        && path.ends_with("/access_tokens"))
        || (r.method == "DELETE" && path == "/installation/token")
}

/// The upstreams and audit logs of one test.
#[derive(Default)]
pub struct Recorder {
    upstreams: Mutex<Vec<ReceivedLog>>,
    dbs: Mutex<Vec<PathBuf>>,
    /// A log's `audit.archive_dir`, where its older segments may be.
    archives: Mutex<HashMap<PathBuf, PathBuf>>,
    skip: Mutex<Option<String>>,
    /// (method, target) the test sends straight to an upstream on purpose.
    direct: Mutex<Vec<(String, String)>>,
}

thread_local! {
    static CURRENT: RefCell<Vec<Arc<Recorder>>> = const { RefCell::new(Vec::new()) };
}

/// A new recorder, current on this thread until [`uninstall`].
pub fn install() -> Arc<Recorder> {
    let r = Arc::new(Recorder::default());
    CURRENT.with(|c| c.borrow_mut().push(r.clone()));
    r
}

pub fn uninstall(r: &Arc<Recorder>) {
    CURRENT.with(|c| c.borrow_mut().retain(|x| !Arc::ptr_eq(x, r)));
}

fn current() -> Option<Arc<Recorder>> {
    CURRENT.with(|c| c.borrow().last().cloned())
}

/// An upstream joins the current test's recorder (if any).
pub fn register_upstream(log: ReceivedLog) {
    if let Some(r) = current() {
        r.upstreams.lock().expect("recorder").push(log);
    }
}

/// A proxy started with `config` on `home` joins the current test's recorder (if any):
/// its audit log is `audit.path` from the config, else `<home>/audit.db`.
pub fn register_proxy(home: &Path, config: &Path) -> Option<Arc<Recorder>> {
    let r = current()?;
    let db = audit_key(config, "path").unwrap_or_else(|| home.join("audit.db"));
    if let Some(archive) = audit_key(config, "archive_dir") {
        r.archives
            .lock()
            .expect("recorder")
            .insert(db.clone(), archive);
    }
    let mut dbs = r.dbs.lock().expect("recorder");
    if !dbs.contains(&db) {
        dbs.push(db);
    }
    drop(dbs);
    Some(r)
}

/// A non-empty path key of the config's `[audit]`.
fn audit_key(config: &Path, key: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(config).ok()?;
    let doc: toml::Table = text.parse().ok()?;
    let path = doc.get("audit")?.get(key)?.as_str()?;
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// Every record in an audit log, in order, across its segments.
fn read_log(db: &Path, archive: Option<&Path>) -> Result<Vec<Value>, String> {
    let view = agentgate::audit::view::View::open(db, archive)
        .map_err(|e| format!("open {}: {e}", db.display()))?;
    let texts = view
        .page_after(0, usize::MAX, |part, _| {
            let mut stmt = part
                .conn
                .prepare("SELECT record FROM records WHERE seq > ?1 ORDER BY seq")?;
            let rows = stmt.query_map([part.lower as i64], |r| r.get::<_, String>(0))?;
            rows.collect()
        })
        .map_err(|e| format!("read {}: {e}", db.display()))?;
    let mut out = Vec::new();
    for text in texts {
        out.push(
            serde_json::from_str(&text)
                .map_err(|e| format!("record of {} is not JSON: {e}", db.display()))?,
        );
    }
    Ok(out)
}

/// The audit logs' decision records of forwarded requests and their outcomes.
struct Logs {
    decisions: Vec<Value>,
    /// (instance, request_id) → outcome record.
    outcomes: HashMap<(String, String), Value>,
    errors: Vec<String>,
}

impl Logs {
    fn read(dbs: &[PathBuf], archives: &HashMap<PathBuf, PathBuf>) -> Logs {
        let mut logs = Logs {
            decisions: Vec::new(),
            outcomes: HashMap::new(),
            errors: Vec::new(),
        };
        for db in dbs {
            match read_log(db, archives.get(db).map(PathBuf::as_path)) {
                Ok(records) => {
                    for r in records {
                        match r["kind"].as_str() {
                            Some("decision") if r["method"] != "CONNECT" => logs.decisions.push(r),
                            Some("outcome") => {
                                let key = (str_of(&r["instance"]), str_of(&r["request_id"]));
                                logs.outcomes.insert(key, r);
                            }
                            _ => {}
                        }
                    }
                }
                Err(e) => logs.errors.push(e),
            }
        }
        logs
    }

    fn outcome(&self, decision: &Value) -> Option<&Value> {
        self.outcomes.get(&(
            str_of(&decision["instance"]),
            str_of(&decision["request_id"]),
        ))
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// Why decision `d` does not describe request `r` (empty: it does).
fn mismatches(r: &Received, instance: &str, d: &Value, logs: &Logs) -> Vec<String> {
    let mut why = Vec::new();
    if d["instance"] != instance {
        why.push(format!("instance {} ≠ Via's {instance}", d["instance"]));
    }
    if d["effect"] != "allow" {
        why.push(format!("effect {} (not allow)", d["effect"]));
    }
    let sent = &d["sent"];
    if !sent.is_object() {
        why.push("no `sent` object".to_owned());
        return why;
    }
    if sent["method"] != r.method.as_str() {
        why.push(format!(
            "sent.method {} ≠ received {}",
            sent["method"], r.method
        ));
    }
    let target_sha = sha256_hex(r.target.as_bytes());
    if sent["target_sha256"] != target_sha.as_str() {
        why.push(format!(
            "sent.target_sha256 {} ≠ SHA-256 of received target {:?} ({target_sha})",
            sent["target_sha256"], r.target
        ));
    }
    let credential = d.get("credential").is_some_and(|c| !c.is_null());
    let headers_sha = headers_sha256(&r.headers, credential);
    if sent["headers_sha256"] != headers_sha.as_str() {
        let other = headers_sha256(&r.headers, !credential);
        let hint = if sent["headers_sha256"] == other.as_str() {
            format!(
                " (it equals the digest {} accept-encoding: the credential rule is off)",
                if credential { "with" } else { "without" }
            )
        } else {
            String::new()
        };
        why.push(format!(
            "sent.headers_sha256 {} ≠ canonical digest of received headers {headers_sha}{hint}",
            sent["headers_sha256"]
        ));
    }
    why.extend(meaning_mismatches(r, &sent["headers"]));
    why.extend(body_mismatches(r, d, logs.outcome(d)));
    why
}

/// `sent.headers` against the meaning-bearing headers received, both ways.
fn meaning_mismatches(r: &Received, listed: &Value) -> Vec<String> {
    let mut why = Vec::new();
    let Some(listed) = listed.as_object() else {
        return vec![format!("sent.headers is not an object: {listed}")];
    };
    for (name, value) in listed {
        let got = r.header_values(name);
        let same = match value {
            Value::String(s) => got.join(", ") == *s || (got.len() == 1 && got[0] == *s),
            Value::Array(a) => {
                a.len() == got.len()
                    && a.iter()
                        .zip(&got)
                        .all(|(x, y)| x.as_str() == Some(y.as_str()))
            }
            _ => false,
        };
        if !same {
            why.push(format!(
                "sent.headers[{name:?}] = {value} but the upstream received {got:?}"
            ));
        }
    }
    for name in MEANING {
        if r.header(name).is_some() && !listed.keys().any(|k| k.eq_ignore_ascii_case(name)) {
            why.push(format!(
                "the upstream received {name}: {:?}, which sent.headers does not list",
                r.header(name).unwrap_or_default()
            ));
        }
    }
    why
}

fn body_mismatches(r: &Received, d: &Value, outcome: Option<&Value>) -> Vec<String> {
    let ReceivedBody::Complete { len, sha256 } = &r.body else {
        // Not read to its end by the upstream: nothing to compare.
        return Vec::new();
    };
    let mut why = Vec::new();
    let sent = &d["sent"];
    match sent["body_sha256"].as_str() {
        Some(sha) => {
            if sha != sha256 || sent["body_bytes"].as_u64() != Some(*len) {
                why.push(format!(
                    "sent.body_sha256/body_bytes {sha}/{} ≠ received {sha256}/{len}",
                    sent["body_bytes"]
                ));
            }
        }
        None if sent["body_sha256"].is_null() => {
            if outcome.is_none() {
                why.push(
                    "sent.body_sha256 is null (streamed) and there is no outcome record to \
                     vouch for the body"
                        .to_owned(),
                );
            }
        }
        None => why.push(format!(
            "sent.body_sha256 is neither a string nor null: {}",
            sent["body_sha256"]
        )),
    }
    if let Some(o) = outcome {
        if o["body_sha256"] != sha256.as_str() || o["bytes_up"].as_u64() != Some(*len) {
            why.push(format!(
                "outcome body_sha256/bytes_up {}/{} ≠ received {sha256}/{len}",
                o["body_sha256"], o["bytes_up"]
            ));
        }
    }
    why
}

/// A received request for a failure message; credential values are not shown.
fn describe(r: &Received) -> String {
    let mut s = format!("  {}\n  headers:\n", r.summary());
    for (k, v) in &r.headers {
        let shown = if ["authorization", "cookie", "proxy-authorization"].contains(&k.as_str()) {
            format!("<{} bytes>", v.len())
        } else {
            let text = String::from_utf8_lossy(v);
            text.chars().take(200).collect()
        };
        let _ = writeln!(s, "    {k}: {shown}");
    }
    let _ = writeln!(
        s,
        "  target_sha256 {}; headers_sha256 {} (with a credential: {})",
        sha256_hex(r.target.as_bytes()),
        headers_sha256(&r.headers, false),
        headers_sha256(&r.headers, true)
    );
    s
}

impl Recorder {
    /// Turns the check off for this test, with the reason (printed).
    pub fn skip(&self, reason: &str) {
        *self.skip.lock().expect("recorder") = Some(reason.to_owned());
    }

    pub fn skipped(&self) -> Option<String> {
        self.skip.lock().expect("recorder").clone()
    }

    /// Declares that the test sends `method target` straight to an upstream (no AgentGate,
    /// no `Via`) on purpose; such requests are not reported.
    pub fn allow_direct(&self, method: &str, target: &str) {
        self.direct
            .lock()
            .expect("recorder")
            .push((method.to_owned(), target.to_owned()));
    }

    fn declared_direct(&self, r: &Received) -> bool {
        self.direct
            .lock()
            .expect("recorder")
            .iter()
            .any(|(m, t)| *m == r.method && *t == r.target)
    }

    /// Every request every upstream of this test received, upstream by upstream.
    pub fn received(&self) -> Vec<Received> {
        self.upstreams
            .lock()
            .expect("recorder")
            .iter()
            .flat_map(|u| u.lock().expect("upstream received").clone())
            .collect()
    }

    /// The registered audit logs.
    pub fn dbs(&self) -> Vec<PathBuf> {
        self.dbs.lock().expect("recorder").clone()
    }

    /// Runs the check once: `Ok(n)` with the number of forwarded requests matched, or the
    /// failure report.
    pub fn check(&self) -> Result<usize, String> {
        let received = self.received();
        let dbs = self.dbs();
        let archives = self.archives.lock().expect("recorder").clone();
        let logs = Logs::read(&dbs, &archives);
        let mut failures = Vec::new();
        let mut forwarded: Vec<(&Received, String)> = Vec::new();
        for r in &received {
            match r.via_instance() {
                Some(instance) => forwarded.push((r, instance)),
                None if own_request(r) || self.declared_direct(r) => {}
                None => failures.push(format!(
                    "a request reached an upstream without AgentGate's Via (it bypassed \
                     AgentGate, or AgentGate forwarded it without Via):\n{}",
                    describe(r)
                )),
            }
        }
        // Requests whose bodies can be compared first, so a request the upstream never read
        // whole cannot take the record another needs.
        forwarded.sort_by_key(|(r, _)| !matches!(r.body, ReceivedBody::Complete { .. }));
        let mut used = vec![false; logs.decisions.len()];
        // (instance, sent.method, sent.target_sha256) → decision records.
        let mut index: HashMap<(String, String, String), Vec<usize>> = HashMap::new();
        for (i, d) in logs.decisions.iter().enumerate() {
            let key = (
                str_of(&d["instance"]),
                str_of(&d["sent"]["method"]),
                str_of(&d["sent"]["target_sha256"]),
            );
            index.entry(key).or_default().push(i);
        }
        for (r, instance) in &forwarded {
            if !r.trailers.is_empty() {
                let names: Vec<&str> = r.trailers.iter().map(|(k, _)| k.as_str()).collect();
                failures.push(format!(
                    "a forwarded request carried trailer fields {names:?}, which no decision \
                     record describes (headers that arrive after the decision):\n{}",
                    describe(r)
                ));
            }
            for name in OVERRIDES {
                if let Some(v) = r.header(name) {
                    failures.push(format!(
                        "a forwarded request carried the method override {name}: {v:?}:\n{}",
                        describe(r)
                    ));
                }
            }
            let key = (
                instance.clone(),
                r.method.clone(),
                sha256_hex(r.target.as_bytes()),
            );
            let found = index.get(&key).and_then(|candidates| {
                candidates.iter().copied().find(|i| {
                    !used[*i] && mismatches(r, instance, &logs.decisions[*i], &logs).is_empty()
                })
            });
            if let Some(i) = found {
                used[i] = true;
                continue;
            }
            failures.push(self.unmatched(r, instance, &logs, &used, &dbs));
        }
        if failures.is_empty() {
            Ok(forwarded.len())
        } else {
            let mut report = format!(
                "judged-as-sent check: {} problem(s) among {} forwarded request(s) (audit logs: \
                 {dbs:?}{}):\n",
                failures.len(),
                forwarded.len(),
                if logs.errors.is_empty() {
                    String::new()
                } else {
                    format!("; unreadable: {:?}", logs.errors)
                }
            );
            for f in failures {
                let _ = writeln!(report, "\n{f}");
            }
            Err(report)
        }
    }

    /// The message for a forwarded request no decision record describes.
    fn unmatched(
        &self,
        r: &Received,
        instance: &str,
        logs: &Logs,
        used: &[bool],
        dbs: &[PathBuf],
    ) -> String {
        let mut msg = format!(
            "no decision record of instance {instance} describes this forwarded request:\n{}",
            describe(r)
        );
        let target_sha = sha256_hex(r.target.as_bytes());
        let closest = logs
            .decisions
            .iter()
            .enumerate()
            .filter(|(_, d)| d["instance"] == instance)
            .map(|(i, d)| {
                let why = mismatches(r, instance, d, logs);
                // Prefer a record of the same method and target.
                let near = usize::from(d["method"] != r.method.as_str())
                    + usize::from(d["sent"]["target_sha256"] != target_sha.as_str());
                (near, why.len(), i, d, why)
            })
            .min_by_key(|(near, n, ..)| (*near, *n));
        match closest {
            Some((_, _, i, d, why)) => {
                let _ = writeln!(
                    msg,
                    "  closest record{}: {}\n  its outcome: {}\n  differences:",
                    if used[i] {
                        " (already matched to another request)"
                    } else {
                        ""
                    },
                    d,
                    logs.outcome(d).map_or("none".to_owned(), Value::to_string)
                );
                for w in why {
                    let _ = writeln!(msg, "    - {w}");
                }
            }
            None => {
                let _ = writeln!(
                    msg,
                    "  the audit logs {dbs:?} hold no decision record of instance {instance}"
                );
            }
        }
        msg
    }

    /// Runs [`Recorder::check`] until it passes or `within` has passed (records land
    /// just after responses); the last result.
    pub fn settle(&self, within: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + within;
        loop {
            let result = self.check();
            if result.is_ok() || Instant::now() >= deadline {
                return result;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
