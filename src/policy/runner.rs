//! `agentgate policy test`: Rego `test_*` rules and tables of request → expected effect,
//! run against a policy directory with the real intent gate building each tuple.

use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde::Serialize;
use serde_json::Value;

use super::config::PolicyConfig;
use super::engine::Policy;
use super::error::PolicyError;
use super::sources::Sources;
use crate::intent::{BodyPrefix, Intent, Subject, Target};

/// One test case's result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub file: String,
    pub name: String,
    pub passed: bool,
    /// What happened, for people: the effect and reasons, or the error.
    pub detail: String,
}

/// Runs every test in `dir`: Rego `test_*` rules in `*_test.rego` and the cases in
/// `*_test.yaml` / `*_test.json`, with `config`'s evaluation bound.
pub fn run_dir(
    dir: &Path,
    intent: &Intent,
    config: &PolicyConfig,
) -> Result<Vec<CaseResult>, PolicyError> {
    run_sources(&Sources::read_dir(dir)?, intent, config)
}

/// Runs the tests of policy sources held in memory (a drafted policy before it is written),
/// as [`run_dir`] does for a directory.
pub fn run_sources(
    sources: &Sources,
    intent: &Intent,
    config: &PolicyConfig,
) -> Result<Vec<CaseResult>, PolicyError> {
    let mut results = Vec::new();
    rego_tests(sources, &mut results)?;
    let policy = Policy::from_sources(sources, config)?;
    for (file, text) in &sources.tests {
        if file.ends_with(".rego") {
            continue;
        }
        table_tests(file, text, &policy, intent, &mut results);
    }
    Ok(results)
}

fn rego_tests(sources: &Sources, out: &mut Vec<CaseResult>) -> Result<(), PolicyError> {
    let files: Vec<&(String, String)> = sources
        .tests
        .iter()
        .filter(|(n, _)| n.ends_with(".rego"))
        .collect();
    if files.is_empty() {
        return Ok(());
    }
    let mut engine = sources.engine(true)?;
    for (file, text) in files {
        let mut package = None;
        let mut names = Vec::new();
        for line in text.lines() {
            let line = line.trim_start();
            if let Some(p) = line.strip_prefix("package ") {
                package = Some(p.trim().to_owned());
            } else if line.starts_with("test_") {
                let name: String = line
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let Some(package) = package else { continue };
        for name in names {
            let rule = format!("data.{package}.{name}");
            let (passed, detail) = match engine.eval_rule(rule) {
                Ok(regorus::Value::Bool(true)) => (true, "true".to_owned()),
                Ok(regorus::Value::Undefined) => (false, "undefined".to_owned()),
                Ok(v) => (false, format!("{v}")),
                Err(e) => (false, format!("error: {e}")),
            };
            out.push(CaseResult {
                file: file.clone(),
                name,
                passed,
                detail,
            });
        }
    }
    Ok(())
}

fn table_tests(
    file: &str,
    text: &str,
    policy: &Policy,
    intent: &Intent,
    out: &mut Vec<CaseResult>,
) {
    let result = |name: String, passed: bool, detail: String| CaseResult {
        file: file.to_owned(),
        name,
        passed,
        detail,
    };
    let doc = if file.ends_with(".json") {
        serde_json::from_str::<Value>(text).map_err(|e| e.to_string())
    } else {
        regorus::Value::from_yaml_str(text)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::to_value(&v).map_err(|e| e.to_string()))
    };
    let doc = match doc {
        Ok(d) => d,
        Err(e) => return out.push(result("(file)".into(), false, format!("cannot parse: {e}"))),
    };
    let Some(cases) = doc.get("cases").and_then(Value::as_array) else {
        return out.push(result("(file)".into(), false, "no `cases:` list".into()));
    };
    for (i, case) in cases.iter().enumerate() {
        let name = case
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(|| format!("case {}", i + 1), str::to_owned);
        out.push(match run_case(case, policy, intent) {
            Ok((passed, detail)) => result(name, passed, detail),
            Err(e) => result(name, false, e),
        });
    }
}

fn run_case(case: &Value, policy: &Policy, intent: &Intent) -> Result<(bool, String), String> {
    let expect = case
        .get("expect")
        .and_then(Value::as_str)
        .ok_or("`expect:` must be allow, escalate or deny")?;
    if !matches!(expect, "allow" | "escalate" | "deny") {
        return Err(format!(
            "`expect: {expect}` must be allow, escalate or deny"
        ));
    }
    let input = match (case.get("input"), case.get("request")) {
        (Some(input), None) => input.clone(),
        (None, Some(request)) => tuple_for(request, case.get("agent"), intent)?,
        _ => return Err("a case needs exactly one of `request:` or `input:`".into()),
    };
    let decision = policy.evaluate(&input);
    let got = decision.effect.as_str();
    let reasons = decision.reason_line();
    let mut passed = got == expect;
    // `budget: NAME` (or `budget: none`): the decision carries that budget (or none).
    if let Some(want) = case.get("budget").and_then(Value::as_str) {
        let names: Vec<&str> = decision.budgets.iter().map(|b| b.name()).collect();
        let ok = if want == "none" {
            names.is_empty()
        } else {
            names.contains(&want)
        };
        if !ok {
            return Ok((
                false,
                format!(
                    "expected budget {want:?}, the decision carries {names:?} ({got}: {reasons})"
                ),
            ));
        }
    }
    if let Some(want) = case.get("reason").and_then(Value::as_str) {
        passed &= decision.reasons.iter().any(|r| r.contains(want));
        if passed {
            return Ok((true, format!("{got}: {reasons}")));
        }
        return Ok((
            false,
            format!("expected {expect} with a reason containing {want:?}, got {got}: {reasons}"),
        ));
    }
    let detail = if passed {
        format!("{got}: {reasons}")
    } else {
        format!(
            "expected {expect}, got {got}: {reasons} (action {}, resource {})",
            input["action"]["name"], input["resource"]["id"]
        )
    };
    Ok((passed, detail))
}

/// The AuthZEN tuple the proxy would build for a test request.
pub fn tuple_for(request: &Value, agent: Option<&Value>, intent: &Intent) -> Result<Value, String> {
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("GET");
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .ok_or("`request.url` is required")?;
    let mut headers = HeaderMap::new();
    if let Some(Value::Object(h)) = request.get("headers") {
        for (k, v) in h {
            let v = v
                .as_str()
                .ok_or_else(|| format!("header {k} must be a string"))?;
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k}: {e}"))?,
                HeaderValue::from_str(v).map_err(|e| format!("header {k}: {e}"))?,
            );
        }
    }
    let body: Vec<u8> = match (
        request.get("body"),
        request.get("body_json"),
        request.get("body_email"),
    ) {
        (Some(Value::String(s)), None, None) => s.clone().into_bytes(),
        (None, Some(j), None) => {
            headers
                .entry(http::header::CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("application/json"));
            j.to_string().into_bytes()
        }
        (None, None, Some(e)) => {
            headers
                .entry(http::header::CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("application/json"));
            gmail_body(e)?.into_bytes()
        }
        (None, None, None) => Vec::new(),
        _ => return Err("use one of `body`, `body_json`, `body_email`".into()),
    };
    let (name, owner, tenant) = match agent {
        Some(a) => (
            a.get("name").and_then(Value::as_str).unwrap_or("test"),
            a.get("owner").and_then(Value::as_str),
            a.get("tenant").and_then(Value::as_str),
        ),
        None => ("test", None, None),
    };
    let id = match tenant {
        Some(t) => format!("spiffe://agentgate.local/tenant/{t}/agent/{name}"),
        None => format!("spiffe://agentgate.local/agent/{name}"),
    };
    let subject = Subject {
        id: &id,
        name,
        tenant,
        owner,
        trust_domain: "agentgate.local",
    };
    explain_tuple(intent, method, url, &headers, &body, subject)
}

/// Builds the tuple for a request described by method, URL, headers and body, as the proxy
/// would (shared by `policy test` and `explain`).
pub fn explain_tuple(
    intent: &Intent,
    method: &str,
    url: &str,
    headers: &HeaderMap,
    body: &[u8],
    subject: Subject<'_>,
) -> Result<Value, String> {
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| format!("invalid method {method}"))?;
    let uri: Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("URL {url} has no host"))?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let target = Target {
        method: &method,
        host: &host,
        path: if uri.path().is_empty() {
            "/"
        } else {
            uri.path()
        },
        query: uri.query(),
        headers,
    };
    let routed = intent.route(target).map_err(|e| e.to_string())?;
    let limit = intent.max_body.min(body.len());
    let prefix = routed.needs_body().then_some(BodyPrefix {
        bytes: &body[..limit],
        truncated: body.len() > limit,
    });
    routed
        .tuple(subject, prefix)
        .map(|t| t.json)
        .map_err(|e| e.to_string())
}

/// A Gmail `{"raw": …}` body for a message with these recipients.
fn gmail_body(spec: &Value) -> Result<String, String> {
    use base64::Engine as _;
    let list = |key: &str| -> String {
        match spec.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        }
    };
    let mut msg = String::from("From: agent@example.com\r\n");
    for (header, key) in [("To", "to"), ("Cc", "cc"), ("Bcc", "bcc")] {
        let v = list(key);
        if !v.is_empty() {
            msg.push_str(&format!("{header}: {v}\r\n"));
        }
    }
    let subject = spec
        .get("subject")
        .and_then(Value::as_str)
        .unwrap_or("test");
    msg.push_str(&format!("Subject: {subject}\r\nMIME-Version: 1.0\r\n"));
    let attachments = spec.get("attachments").and_then(Value::as_u64).unwrap_or(0);
    if attachments == 0 {
        msg.push_str("Content-Type: text/plain\r\n\r\nhello\r\n");
    } else {
        msg.push_str("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n");
        for i in 0..attachments {
            msg.push_str(&format!(
                "--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=f{i}.bin\r\n\r\ndata\r\n"
            ));
        }
        msg.push_str("--b--\r\n");
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(msg);
    Ok(serde_json::json!({ "raw": raw }).to_string())
}

/// Directories under `root` (itself included) that hold a policy (`*.rego`), sorted.
pub fn policy_dirs(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut has_rego = false;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rego") {
                has_rego = true;
            }
        }
        if has_rego {
            out.push(dir);
        }
    }
    out.sort();
    out
}
