//! Gate 2's machinery: what a request means. The request's host, method and path find an
//! operation in the service catalog; path parameters and, for a few operations, the body
//! fill in the resource and context. The result is an OpenID AuthZEN tuple — the policy
//! input, the audit record's description of the request, and what `explain` prints.

pub mod catalog;
pub mod extract;
mod path;
mod refine;

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, Method};
use serde_json::{Map, Value, json};

pub use catalog::{BodyKind, Catalog, CatalogError, Class};
pub use extract::BodyError;
pub use path::PathError;

use crate::identity::Caller;

/// Request headers that ask the server to act as another method (Google's APIs honour
/// them). A request that carries one means two things at once, so it is refused: nothing
/// in the catalog needs them, and judging one method while the vendor acts on another is
/// exactly the bypass a gate exists to stop.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Headers that change what a request body means at the vendor: one value each, or the
/// request is refused as ambiguous (a second parser may read the other one).
pub const MEANING_HEADERS: [http::header::HeaderName; 6] = [
    http::header::CONTENT_TYPE,
    http::header::CONTENT_ENCODING,
    http::header::CONTENT_LANGUAGE,
    http::header::CONTENT_RANGE,
    http::header::CONTENT_DISPOSITION,
    // Which version of the REST API (and so of each operation's semantics) GitHub applies.
    http::header::HeaderName::from_static("x-github-api-version"),
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
    #[error(
        "the request carries {0}, which asks the server to act as another method; send the real method instead"
    )]
    MethodOverride(&'static str),
    #[error("{0}")]
    Ambiguous(String),
    #[error(
        "{host}{path} does not accept protocol upgrades (Upgrade: {protocol}); list it under intent.upgrades if the vendor documents one"
    )]
    UpgradeNotAllowed {
        host: String,
        path: String,
        protocol: String,
    },
}

/// The compiled catalog and the inspection bound.
#[derive(Debug)]
pub struct Intent {
    catalog: Catalog,
    /// Bodies are read up to this many bytes for intent; the rest streams uninspected.
    pub max_body: usize,
    /// Where a protocol upgrade (WebSocket) is documented, so allowed (`intent.upgrades`).
    upgrades: Vec<UpgradeRoute>,
}

/// One place where a vendor documents a protocol upgrade.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeRoute {
    /// Host, as in the CONNECT target.
    pub host: String,
    /// Exact path (no query).
    pub path: String,
    /// Protocols allowed in `Upgrade`, e.g. `["websocket"]`.
    pub protocols: Vec<String>,
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
        Ok(Intent::new(Catalog::embedded()?, max_body))
    }

    /// An intent gate over a given catalog (tests, benches).
    pub fn new(catalog: Catalog, max_body: usize) -> Intent {
        Intent {
            catalog,
            max_body,
            upgrades: Vec::new(),
        }
    }

    /// Allows protocol upgrades at these places (`intent.upgrades`).
    pub fn with_upgrades(mut self, upgrades: Vec<UpgradeRoute>) -> Intent {
        self.upgrades = upgrades;
        self
    }

    /// The catalog in use.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Routes a request to its catalog operation; cheap, no body needed.
    pub fn route<'c, 'a>(&'c self, target: Target<'a>) -> Result<Routed<'c, 'a>, IntentError> {
        if let Some(name) = METHOD_OVERRIDES
            .into_iter()
            .find(|name| target.headers.contains_key(*name))
        {
            return Err(IntentError::MethodOverride(name));
        }
        for name in &MEANING_HEADERS {
            let mut values = target.headers.get_all(name).iter();
            if values.next().is_some() && values.next().is_some() {
                return Err(IntentError::Ambiguous(format!(
                    "the request has more than one {name} header; send one"
                )));
            }
        }
        let path = path::normalize(target.path)?;
        let found = match self.catalog.host(target.host) {
            None => Found::UnknownHost,
            Some(host) => match host.find(target.method, &path) {
                Some(m) => Found::Operation(
                    refine::refine(m, &path, target.query)
                        .map_err(|e| IntentError::Ambiguous(e.to_string()))?,
                ),
                None => Found::UnknownPath(&host.service),
            },
        };
        let routed = Routed {
            target,
            path,
            found,
        };
        if routed.needs_body() {
            body_headers(target.headers)?;
        }
        Ok(routed)
    }

    /// Refuses an `Upgrade` unless `intent.upgrades` lists the host, path and protocol.
    pub fn check_upgrade(
        &self,
        host: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<(), IntentError> {
        let protocols = headers
            .get_all(http::header::UPGRADE)
            .iter()
            .map(|v| v.to_str().unwrap_or("\u{fffd}"))
            .flat_map(|v| v.split(','))
            .map(str::trim);
        let mut any = false;
        for protocol in protocols {
            any = true;
            let allowed = self.upgrades.iter().any(|u| {
                u.host.eq_ignore_ascii_case(host)
                    && u.path == path
                    && u.protocols.iter().any(|p| p.eq_ignore_ascii_case(protocol))
            });
            if !allowed {
                return Err(IntentError::UpgradeNotAllowed {
                    host: host.to_owned(),
                    path: path.to_owned(),
                    protocol: protocol.chars().take(64).collect(),
                });
            }
        }
        if any {
            Ok(())
        } else {
            Err(IntentError::Ambiguous(
                "Upgrade header without a protocol".into(),
            ))
        }
    }
}

/// For a body intent reads: it must be read as the vendor reads it, so no content coding
/// (the bytes judged would not be the bytes meant) and no character set but UTF-8.
fn body_headers(headers: &HeaderMap) -> Result<(), IntentError> {
    if let Some(coding) = headers.get(http::header::CONTENT_ENCODING) {
        if !coding.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(IntentError::Ambiguous(
                "this operation's body is inspected, and a Content-Encoding body cannot be; send it uncompressed".into(),
            ));
        }
    }
    let Some(ct) = headers.get(http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct
        .to_str()
        .map_err(|_| IntentError::Ambiguous("the Content-Type header is not ASCII".into()))?;
    for param in ct.split(';').skip(1) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if name.trim().eq_ignore_ascii_case("charset") {
            let value = value.trim().trim_matches('"');
            if !value.eq_ignore_ascii_case("utf-8") && !value.eq_ignore_ascii_case("us-ascii") {
                return Err(IntentError::Ambiguous(format!(
                    "this operation's body is inspected as UTF-8, and its Content-Type names charset {value}"
                )));
            }
        }
    }
    Ok(())
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
        let mut resource_props = Map::new();
        let (action, class, service, resource_type, mut resource_id): (
            Arc<str>,
            Class,
            Option<&str>,
            Arc<str>,
            String,
        ) = match &self.found {
            Found::UnknownHost => (
                format!("http.{}", t.method.as_str().to_ascii_lowercase()).into(),
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
                let mut values: Vec<String> = m
                    .spans
                    .iter()
                    .map(|&(s, e)| path::decode(&self.path[s..e]))
                    .collect();
                for (name, value) in r.params.iter().zip(&mut values) {
                    if &*r.service.name == "github" && GITHUB_NAMES.contains(&&**name) {
                        github_name(name, value)?;
                        // GitHub matches these names without case: `ACME/Web` is `acme/web`,
                        // so a policy rule on one cannot be sidestepped with the other.
                        value.make_ascii_lowercase();
                    }
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
                        // One `uploadType`, spelt exactly so, or the request is refused.
                        let upload_type = extract::gmail_upload_type(t.query)?;
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
                    "method": t.method.as_str(),
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

/// GitHub path parameters that name accounts and repositories: ASCII by GitHub's own rules,
/// so anything else (a `ß` that policies and GitHub would fold differently) is refused.
const GITHUB_NAMES: [&str; 7] = [
    "owner",
    "repo",
    "org",
    "username",
    "enterprise",
    "team_slug",
    "gist_id",
];

fn github_name(param: &str, value: &str) -> Result<(), IntentError> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(IntentError::Ambiguous(format!(
            "GitHub {param} names are ASCII letters, digits, '-', '_' and '.'; this one is not"
        )))
    }
}

/// The [`MEANING_HEADERS`] a request carries, by lowercase name (for the tuple and the
/// decision record's `sent`).
pub fn meaning_headers(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for name in &MEANING_HEADERS {
        if let Some(v) = headers.get(name) {
            out.insert(
                name.as_str().into(),
                String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
            );
        }
    }
    out
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

#[cfg(test)]
mod tests;
