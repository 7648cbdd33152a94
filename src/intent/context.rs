//! The tuple's `context`: when and where the request goes, its query with secrets
//! redacted, and the headers that change what its body means.

use serde_json::{Map, Value};

use super::headers::meaning_headers;
use super::request::Target;

/// Query keys whose values are secrets: kept out of the tuple, the log and the audit.
const SECRET_KEYS: [&str; 20] = [
    "auth",
    "authorization",
    "credential",
    "credentials",
    "jwt",
    "session",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "password",
    "passwd",
    "secret",
    "api_key",
    "apikey",
    "key",
    "sig",
    "signature",
    "code",
];

/// `context` before the body is read: `time`, `host`, `path`, `query`, `headers`.
pub(super) fn of(t: &Target<'_>) -> Map<String, Value> {
    let mut context = Map::new();
    context.insert("time".into(), crate::clock::now_rfc3339().into());
    context.insert("host".into(), t.host.into());
    context.insert("path".into(), t.path.into());
    if let Some(q) = t.query.filter(|q| !q.is_empty()) {
        context.insert("query".into(), query_json(q));
    }
    // The headers that change what the body means are judged with it.
    let meaning = meaning_headers(t.headers);
    if !meaning.is_empty() {
        context.insert("headers".into(), Value::Object(meaning));
    }
    context
}

/// The query as a JSON object: repeated keys become arrays, secrets are redacted.
fn query_json(query: &str) -> Value {
    let mut out = Map::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let v: Value = if SECRET_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s)) {
            "[redacted]".into()
        } else {
            v.into_owned().into()
        };
        match out.get_mut(k.as_ref()) {
            None => {
                out.insert(k.into_owned(), v);
            }
            Some(Value::Array(list)) => list.push(v),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, v]);
            }
        }
    }
    Value::Object(out)
}

/// Parts of key names that mark a secret in structured arguments (`github_token`,
/// `client_secret`, `Authorization`).
const SECRET_PARTS: [&str; 9] = [
    "token",
    "secret",
    "password",
    "passwd",
    "authorization",
    "api_key",
    "apikey",
    "credential",
    "private_key",
];

/// `args` with the values of secret-looking keys replaced by `"[redacted]"`, at any depth.
pub(super) fn redact_secrets(args: &Map<String, Value>) -> Map<String, Value> {
    args.iter()
        .map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            let secret = SECRET_KEYS.contains(&lower.as_str())
                || SECRET_PARTS.iter().any(|p| lower.contains(p));
            let v = match v {
                _ if secret => "[redacted]".into(),
                Value::Object(o) => Value::Object(redact_secrets(o)),
                Value::Array(list) => Value::Array(
                    list.iter()
                        .map(|item| match item {
                            Value::Object(o) => Value::Object(redact_secrets(o)),
                            other => other.clone(),
                        })
                        .collect(),
                ),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}
