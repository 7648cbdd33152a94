//! Gate 2's machinery: what a request means. The request's host, method and path find an
//! operation in the service catalog; path parameters and, for a few operations, the body
//! fill in the resource and context. The result is an OpenID AuthZEN tuple — the policy
//! input, the audit record's description of the request, and what `explain` prints.

pub mod catalog;
pub mod extract;
mod path;

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, Method};
use serde_json::{Map, Value, json};

pub use catalog::{BodyKind, Catalog, CatalogError, Class};
pub use extract::BodyError;
pub use path::PathError;

use crate::identity::Caller;

/// Request headers that ask the server to treat a `POST` as another method (Google's APIs
/// honour them), so the intent follows the method the server will act on.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

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

/// Why a request's meaning could not be worked out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IntentError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("{0} header has an invalid method")]
    BadOverride(&'static str),
}

/// The compiled catalog and the inspection bound.
#[derive(Debug)]
pub struct Intent {
    catalog: Catalog,
    /// Bodies are read up to this many bytes for intent; the rest streams uninspected.
    pub max_body: usize,
}

/// The agent a tuple is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub tenant: Option<&'a str>,
    pub owner: Option<&'a str>,
    pub trust_domain: &'a str,
}

impl<'a> From<&'a Caller> for Subject<'a> {
    fn from(c: &'a Caller) -> Self {
        Subject {
            id: &c.spiffe_id,
            name: &c.agent,
            tenant: c.tenant.as_deref(),
            owner: c.owner.as_deref(),
            trust_domain: &c.trust_domain,
        }
    }
}

/// A request as intent sees it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub method: &'a Method,
    /// Lowercase host, no port.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// A request after routing, before its body: says whether the body is needed.
#[derive(Debug)]
pub struct Routed<'c, 'a> {
    target: Target<'a>,
    method: Method,
    overridden: bool,
    path: Cow<'a, str>,
    found: Found<'c>,
}

#[derive(Debug)]
enum Found<'c> {
    Operation(catalog::Match<'c>),
    UnknownPath(&'c Arc<catalog::Service>),
    UnknownHost,
}

/// The body as far as it was read for intent.
#[derive(Debug, Clone, Copy)]
pub struct BodyPrefix<'b> {
    pub bytes: &'b [u8],
    /// More followed beyond `bytes`.
    pub truncated: bool,
}

/// What a request means: the AuthZEN tuple plus the few fields logs and policy use directly.
#[derive(Debug, Clone)]
pub struct Tuple {
    pub action: Arc<str>,
    pub class: Class,
    pub resource_type: Arc<str>,
    pub resource_id: String,
    /// `{subject, action, resource, context}` as JSON: the policy input.
    pub json: Value,
}

impl Intent {
    /// The catalog compiled into the binary.
    pub fn embedded(max_body: usize) -> Result<Intent, CatalogError> {
        Ok(Intent {
            catalog: Catalog::embedded()?,
            max_body,
        })
    }

    /// An intent gate over a given catalog (tests, benches).
    pub fn new(catalog: Catalog, max_body: usize) -> Intent {
        Intent { catalog, max_body }
    }

    /// The catalog in use.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Routes a request to its catalog operation; cheap, no body needed.
    pub fn route<'c, 'a>(&'c self, target: Target<'a>) -> Result<Routed<'c, 'a>, IntentError> {
        let mut method = target.method.clone();
        let mut overridden = false;
        for name in METHOD_OVERRIDES {
            if let Some(v) = target.headers.get(name) {
                let m =
                    Method::from_bytes(v.as_bytes()).map_err(|_| IntentError::BadOverride(name))?;
                let m = Method::from_bytes(m.as_str().to_ascii_uppercase().as_bytes())
                    .map_err(|_| IntentError::BadOverride(name))?;
                if m != method {
                    method = m;
                    overridden = true;
                }
            }
        }
        let path = path::normalize(target.path)?;
        let found = match self.catalog.host(target.host) {
            None => Found::UnknownHost,
            Some(host) => match host.find(&method, &path) {
                Some(m) => Found::Operation(m),
                None => Found::UnknownPath(&host.service),
            },
        };
        Ok(Routed {
            target,
            method,
            overridden,
            path,
            found,
        })
    }
}

impl Routed<'_, '_> {
    /// The body extractor this request needs, if any.
    pub fn body_kind(&self) -> Option<BodyKind> {
        match &self.found {
            Found::Operation(m) => m.route.body,
            Found::UnknownPath(service) => service.unknown_body,
            Found::UnknownHost => None,
        }
    }

    /// Whether the body must be read before deciding.
    pub fn needs_body(&self) -> bool {
        self.body_kind().is_some()
            && self.target.method != Method::GET
            && self.target.method != Method::HEAD
    }

    /// Builds the tuple; `body` is what was read of the body when `needs_body()`.
    pub fn tuple(
        &self,
        subject: Subject<'_>,
        body: Option<BodyPrefix<'_>>,
    ) -> Result<Tuple, IntentError> {
        let t = &self.target;
        let mut context = Map::new();
        context.insert("time".into(), now_rfc3339().into());
        context.insert("host".into(), t.host.into());
        context.insert("path".into(), t.path.into());
        if let Some(q) = t.query.filter(|q| !q.is_empty()) {
            context.insert("query".into(), query_json(q));
        }
        if self.overridden {
            context.insert("method_override".into(), self.method.as_str().into());
        }
        let mut resource_props = Map::new();
        let (action, class, service, resource_type, mut resource_id): (
            Arc<str>,
            Class,
            Option<&str>,
            Arc<str>,
            String,
        ) = match &self.found {
            Found::UnknownHost => (
                format!("http.{}", self.method.as_str().to_ascii_lowercase()).into(),
                Class::Unknown,
                None,
                Arc::from("host"),
                t.host.to_owned(),
            ),
            Found::UnknownPath(service) => (
                service.unknown_action.clone(),
                Class::Unknown,
                Some(&*service.name),
                service.default_resource.0.clone(),
                service.default_resource.1.to_string(),
            ),
            Found::Operation(m) => {
                let r = m.route;
                let values: Vec<String> = m
                    .spans
                    .iter()
                    .map(|&(s, e)| path::decode(&self.path[s..e]))
                    .collect();
                for (name, value) in r.params.iter().zip(&values) {
                    resource_props.insert(name.to_string(), value.clone().into());
                }
                let mut id = String::new();
                for piece in &r.resource_id {
                    match piece {
                        catalog::Piece::Text(s) => id.push_str(s),
                        catalog::Piece::Param(i) => {
                            id.push_str(values.get(*i).map_or("", String::as_str))
                        }
                    }
                }
                (
                    r.action.clone(),
                    r.class,
                    Some(&*r.service.name),
                    r.resource_type.clone(),
                    id,
                )
            }
        };
        let mut action = action;
        let mut class = class;
        let mut resource_type = resource_type;
        if let (Found::UnknownPath(_), Some(BodyKind::Slack)) = (&self.found, self.body_kind()) {
            // An unknown Slack method is still judged unknown, but never carries a token out.
            let bytes = body.filter(|b| !b.truncated).map_or(&[][..], |b| b.bytes);
            extract::slack(
                t.query,
                header_str(t.headers, http::header::CONTENT_TYPE),
                bytes,
            )?;
        }
        if let Found::Operation(m) = &self.found {
            if let Some(kind) = m.route.body {
                let prefix = body.unwrap_or(BodyPrefix {
                    bytes: &[],
                    truncated: false,
                });
                if self.needs_body() {
                    context.insert("body_truncated".into(), prefix.truncated.into());
                }
                let mut selected = Map::new();
                match kind {
                    BodyKind::Graphql => match &m.route.service.graphql {
                        Some(schema) if !prefix.truncated => {
                            let summary = extract::graphql(prefix.bytes, schema)?;
                            if let Some(f) = summary.decisive() {
                                action = format!(
                                    "{}.graphql.{}.{}",
                                    m.route.service.name, f.operation, f.field
                                )
                                .into();
                                class = f.class;
                            }
                            selected.insert("graphql".into(), summary.to_json());
                        }
                        // Cut off: the document cannot be read, so nothing is known.
                        _ => {}
                    },
                    BodyKind::GmailMessage => {
                        if let Some(email) = extract::gmail_json(prefix.bytes, prefix.truncated)? {
                            selected.insert("email".into(), email.to_json());
                        }
                    }
                    BodyKind::GmailUpload => {
                        let upload_type = t.query.and_then(|q| {
                            form_urlencoded::parse(q.as_bytes())
                                .find(|(k, _)| k == "uploadType")
                                .map(|(_, v)| v.into_owned())
                        });
                        let email = extract::gmail_upload(
                            header_str(t.headers, http::header::CONTENT_TYPE),
                            upload_type.as_deref(),
                            prefix.bytes,
                            prefix.truncated,
                        )?;
                        selected.insert("email".into(), email.to_json());
                    }
                    BodyKind::Slack => {
                        let bytes = if prefix.truncated {
                            &[][..]
                        } else {
                            prefix.bytes
                        };
                        let args = extract::slack(
                            t.query,
                            header_str(t.headers, http::header::CONTENT_TYPE),
                            bytes,
                        )?;
                        if !args.channels.is_empty() {
                            resource_type = Arc::from("slack.channel");
                            resource_id = args.channels.join(",");
                            if let [one] = args.channels.as_slice() {
                                selected.insert("channel".into(), one.as_str().into());
                            }
                            selected.insert("channels".into(), args.channels.clone().into());
                        }
                    }
                }
                context.insert("body".into(), Value::Object(selected));
            }
        }
        let known = class != Class::Unknown;
        let json = json!({
            "subject": {
                "type": "agent",
                "id": subject.id,
                "properties": {
                    "name": subject.name,
                    "tenant": subject.tenant,
                    "owner": subject.owner,
                    "trust_domain": subject.trust_domain,
                },
            },
            "action": {
                "name": &*action,
                "properties": {
                    "method": self.method.as_str(),
                    "service": service,
                    "class": class.as_str(),
                    "known": known,
                },
            },
            "resource": {
                "type": &*resource_type,
                "id": resource_id,
                "properties": Value::Object(resource_props),
            },
            "context": Value::Object(context),
        });
        Ok(Tuple {
            action,
            class,
            resource_type,
            resource_id,
            json,
        })
    }
}

fn header_str(headers: &HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
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

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "intent_tests.rs"]
mod tests;
