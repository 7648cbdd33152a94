//! The service catalog: `(host, method, path template)` → action, class and resource, compiled
//! from the generated files in `config/services/` into one segment trie per host, so a match
//! costs a few hash lookups whatever the number of operations. Where one query parameter
//! tells operations on the same path apart (git's `info/refs?service=`), the trie holds one
//! route standing for them all, resolved by `intent::refine`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

/// The generated catalog files, compiled into the binary.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "github.json",
        include_str!("../../config/services/github.json"),
    ),
    (
        "github-graphql.json",
        include_str!("../../config/services/github-graphql.json"),
    ),
    (
        "github-git.json",
        include_str!("../../config/services/github-git.json"),
    ),
    (
        "gmail.json",
        include_str!("../../config/services/gmail.json"),
    ),
    (
        "slack.json",
        include_str!("../../config/services/slack.json"),
    ),
];

/// What an operation does, as far as policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Reads only.
    Read,
    /// Creates or changes something.
    Write,
    /// Deletes, destroys or revokes something.
    Delete,
    /// Not in the catalog: nothing is known about it.
    Unknown,
}

impl Class {
    /// The name policies see in `action.properties.class`.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Delete => "delete",
            Class::Unknown => "unknown",
        }
    }

    /// Ordering for "the most dangerous of several": unknown and delete first.
    pub fn danger(self) -> u8 {
        match self {
            Class::Read => 0,
            Class::Write => 1,
            Class::Delete => 2,
            Class::Unknown => 3,
        }
    }
}

/// How the request body contributes to the tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum BodyKind {
    /// A GraphQL request: action from the document.
    #[serde(rename = "graphql")]
    Graphql,
    /// Gmail JSON carrying a base64url RFC 5322 message in `raw`.
    #[serde(rename = "gmail.message")]
    GmailMessage,
    /// Gmail media upload: the message itself, or multipart/related with it.
    #[serde(rename = "gmail.upload")]
    GmailUpload,
    /// Slack Web API arguments (query, form or JSON): `channel`, and no `token`.
    #[serde(rename = "slack")]
    Slack,
}

/// A service: its name (the action prefix) and what it falls back to.
#[derive(Debug)]
pub struct Service {
    pub name: Arc<str>,
    pub default_resource: (Arc<str>, Arc<str>),
    /// Action of a path this service does not know: `<service>.unknown`.
    pub unknown_action: Arc<str>,
    /// GraphQL root fields by operation type, when the service has a GraphQL endpoint.
    pub graphql: Option<GraphqlSchema>,
    /// The body extractor every operation of the service shares, applied to its unknown
    /// paths too (Slack: a `token` argument is refused even on a method the catalog lacks).
    pub unknown_body: Option<BodyKind>,
}

/// The root fields of a GraphQL schema, classified.
#[derive(Debug, Default)]
pub struct GraphqlSchema {
    pub path: String,
    pub fields: HashMap<String, HashMap<String, Class>>,
}

/// One operation of the catalog.
#[derive(Debug, Clone)]
pub struct Route {
    pub action: Arc<str>,
    pub class: Class,
    pub service: Arc<Service>,
    /// Names of the path parameters, in path order; the last may be a rest parameter.
    pub params: Vec<Arc<str>>,
    pub resource_type: Arc<str>,
    /// Resource id template: literal pieces and parameter indexes.
    pub resource_id: Vec<Piece>,
    pub body: Option<BodyKind>,
    /// The path template (debug output and test failures).
    pub template: Arc<str>,
    /// Set when several operations share this method and path and one query parameter
    /// names which (git's `info/refs?service=`): this route then stands for none of them
    /// (`<service>.unknown`) until `intent::refine` picks one.
    pub by_query: Option<ByQuery>,
    /// Suffixes dropped from parameter values (by parameter index): `{repo}` of `web.git`
    /// is `web`.
    pub strip_suffix: Vec<(usize, Arc<str>)>,
}

/// Operations at one method and path, told apart by one query parameter.
#[derive(Debug, Clone)]
pub struct ByQuery {
    pub param: Arc<str>,
    /// `(value, operation)`.
    pub operations: Vec<(Arc<str>, Arc<Route>)>,
}

/// A piece of a resource id template.
#[derive(Debug, Clone)]
pub enum Piece {
    Text(String),
    Param(usize),
}

#[derive(Debug, Default)]
struct Node {
    statics: HashMap<Box<str>, Node>,
    param: Option<Box<Node>>,
    /// Routes whose last segment is `{+name}`: they take the rest of the path from here.
    rest: Vec<(MethodKey, Arc<Route>)>,
    routes: Vec<(MethodKey, Arc<Route>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum MethodKey {
    Any,
    One(http::Method),
}

impl MethodKey {
    fn accepts(&self, m: &http::Method) -> bool {
        match self {
            MethodKey::Any => true,
            MethodKey::One(k) => k == m || (*m == http::Method::HEAD && *k == http::Method::GET),
        }
    }
}

/// Everything one host answers to.
#[derive(Debug)]
pub struct Host {
    pub service: Arc<Service>,
    root: Node,
}

/// The compiled catalog.
#[derive(Debug, Default)]
pub struct Catalog {
    hosts: HashMap<String, Host>,
    operations: usize,
}

/// A catalog file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("service catalog {file}: {reason}")]
pub struct CatalogError {
    pub file: String,
    pub reason: String,
}

#[derive(Deserialize)]
struct File {
    service: String,
    hosts: Vec<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    default_resource: Option<ResourceSpec>,
    #[serde(default)]
    operations: Vec<Operation>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    fields: HashMap<String, HashMap<String, Class>>,
}

#[derive(Deserialize)]
struct ResourceSpec {
    #[serde(rename = "type")]
    kind: String,
    id: String,
}

#[derive(Deserialize)]
struct Operation {
    action: String,
    method: String,
    path: String,
    class: Class,
    #[serde(default)]
    resource: Option<ResourceSpec>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    body: Option<BodyKind>,
    /// `{param: value}`: the operation is the one at this method and path whose value the
    /// request's query carries.
    #[serde(default)]
    query: Option<HashMap<String, String>>,
    #[serde(default)]
    strip_suffix: HashMap<String, String>,
}

/// A successful match: the route and where its parameters sit in the path.
#[derive(Debug)]
pub struct Match<'c> {
    pub route: &'c Arc<Route>,
    /// Byte ranges of the parameter values in the matched path, in `route.params` order.
    pub spans: Vec<(usize, usize)>,
}

impl Catalog {
    /// The catalog compiled into the binary.
    pub fn embedded() -> Result<Catalog, CatalogError> {
        Catalog::from_files(EMBEDDED.iter().copied())
    }

    /// Compiles catalog files given as `(name, json)`.
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::default();
        let mut services: HashMap<String, Arc<Service>> = HashMap::new();
        let mut parsed = Vec::new();
        for (name, text) in files {
            let file: File = serde_json::from_str(text).map_err(|e| CatalogError {
                file: name.into(),
                reason: e.to_string(),
            })?;
            parsed.push((name, file));
        }
        // REST files first: they define the service a GraphQL file attaches to.
        parsed.sort_by_key(|(_, f)| f.kind.is_some());
        // GraphQL files attach to the service of the same name; REST files define it.
        let mut graphql: HashMap<String, GraphqlSchema> = HashMap::new();
        for (_, file) in &mut parsed {
            if file.kind.as_deref() == Some("graphql") {
                graphql.insert(
                    file.service.clone(),
                    GraphqlSchema {
                        path: file.path.clone().unwrap_or_else(|| "/graphql".into()),
                        fields: std::mem::take(&mut file.fields),
                    },
                );
            }
        }
        for (name, file) in &parsed {
            let err = |reason: String| CatalogError {
                file: (*name).into(),
                reason,
            };
            let existing = services.get(&file.service).cloned();
            let service = match existing {
                Some(s) if file.default_resource.is_none() => s,
                // A later file with a default resource of its own (github-git.json for
                // github.com) gets a service of the same name answering its hosts' unknown
                // paths with that resource.
                _ => {
                    let (rt, rid) = file
                        .default_resource
                        .as_ref()
                        .map(|r| (r.kind.as_str(), r.id.as_str()))
                        .unwrap_or((file.service.as_str(), ""));
                    let s = Arc::new(Service {
                        name: file.service.as_str().into(),
                        default_resource: (rt.into(), rid.into()),
                        unknown_action: format!("{}.unknown", file.service).into(),
                        graphql: graphql.remove(&file.service),
                        unknown_body: shared_body(&file.operations),
                    });
                    services.entry(file.service.clone()).or_insert(s.clone());
                    s
                }
            };
            let host_of = |h: &str| h.to_ascii_lowercase();
            for h in &file.hosts {
                catalog.hosts.entry(host_of(h)).or_insert_with(|| Host {
                    service: service.clone(),
                    root: Node::default(),
                });
            }
            // The GraphQL file routes its endpoint; its action comes from the body.
            if let (Some("graphql"), Some(schema)) = (file.kind.as_deref(), &service.graphql) {
                let route = Route {
                    action: format!("{}.graphql", service.name).into(),
                    class: Class::Unknown,
                    service: service.clone(),
                    params: Vec::new(),
                    resource_type: service.default_resource.0.clone(),
                    resource_id: vec![Piece::Text(service.default_resource.1.to_string())],
                    body: Some(BodyKind::Graphql),
                    template: schema.path.as_str().into(),
                    by_query: None,
                    strip_suffix: Vec::new(),
                };
                let host = file.hosts.first().map(|h| host_of(h)).unwrap_or_default();
                if let Some(host) = catalog.hosts.get_mut(&host) {
                    insert(
                        &mut host.root,
                        &schema.path,
                        MethodKey::One(http::Method::POST),
                        Arc::new(route),
                    )
                    .map_err(|r| err(format!("POST {}: {r}", schema.path)))?;
                }
            }
            for op in &file.operations {
                let host = op
                    .host
                    .as_deref()
                    .or(file.hosts.first().map(String::as_str))
                    .ok_or_else(|| err("a file with operations needs hosts".into()))?;
                let route =
                    compile_route(op, &service).map_err(|r| err(format!("{}: {r}", op.action)))?;
                let method = if op.method == "*" {
                    MethodKey::Any
                } else {
                    MethodKey::One(
                        http::Method::from_bytes(op.method.as_bytes())
                            .map_err(|_| err(format!("{}: bad method {}", op.action, op.method)))?,
                    )
                };
                let host = catalog.hosts.entry(host_of(host)).or_insert_with(|| Host {
                    service: service.clone(),
                    root: Node::default(),
                });
                let inserted = match &op.query {
                    None => insert(&mut host.root, &op.path, method, Arc::new(route)),
                    Some(q) => insert_by_query(&mut host.root, &op.path, method, q, route),
                };
                inserted.map_err(|r| err(format!("{} {}: {r}", op.method, op.path)))?;
                catalog.operations += 1;
            }
        }
        // A GraphQL schema needs a REST file defining its service (name, hosts, resource).
        if let Some((service, _)) = graphql.into_iter().next() {
            return Err(CatalogError {
                file: format!("{service} (graphql)"),
                reason: "no REST catalog file defines this service".into(),
            });
        }
        Ok(catalog)
    }

    /// Number of operations compiled.
    pub fn operations(&self) -> usize {
        self.operations
    }

    /// The service answering on `host` (lowercase), if any.
    pub fn host(&self, host: &str) -> Option<&Host> {
        self.hosts.get(host)
    }
}

impl Host {
    /// Finds the operation for `method` on a normalized `path` (no query, no trailing slash
    /// except the root). Static segments win over parameters, parameters over rest parameters.
    pub fn find(&self, method: &http::Method, path: &str) -> Option<Match<'_>> {
        let mut spans = Vec::new();
        // The root path has no segment at all.
        let start = if path == "/" { 2 } else { 1 };
        let route = walk(&self.root, method, path, start, &mut spans)?;
        spans.reverse();
        Some(Match { route, spans })
    }
}

/// Depth-first match with backtracking; `at` is the byte offset of the next segment.
/// Spans are pushed on the way out, so they come back in reverse order.
fn walk<'n>(
    node: &'n Node,
    method: &http::Method,
    path: &str,
    at: usize,
    spans: &mut Vec<(usize, usize)>,
) -> Option<&'n Arc<Route>> {
    if at > path.len() {
        if let Some((_, r)) = node.routes.iter().find(|(m, _)| m.accepts(method)) {
            return Some(r);
        }
        // A rest parameter may be empty: `contents/{+path}` with no path is the root.
        let (_, r) = node.rest.iter().find(|(m, _)| m.accepts(method))?;
        spans.push((path.len(), path.len()));
        return Some(r);
    }
    let end = path[at..].find('/').map_or(path.len(), |i| at + i);
    let segment = &path[at..end];
    if let Some(child) = node.statics.get(segment) {
        if let Some(r) = walk(child, method, path, end + 1, spans) {
            return Some(r);
        }
    }
    if !segment.is_empty() {
        if let Some(child) = &node.param {
            if let Some(r) = walk(child, method, path, end + 1, spans) {
                spans.push((at, end));
                return Some(r);
            }
        }
        if let Some((_, r)) = node.rest.iter().find(|(m, _)| m.accepts(method)) {
            spans.push((at, path.len()));
            return Some(r);
        }
    }
    None
}

/// The body kind all `operations` have, if they agree and have one.
fn shared_body(operations: &[Operation]) -> Option<BodyKind> {
    let first = operations.first()?.body?;
    operations
        .iter()
        .all(|op| op.body == Some(first))
        .then_some(first)
}

fn insert(root: &mut Node, path: &str, method: MethodKey, route: Arc<Route>) -> Result<(), String> {
    let list = slot(root, path)?;
    if list.iter().any(|(m, _)| *m == method) {
        return Err("duplicate operation".into());
    }
    list.push((method, route));
    Ok(())
}

/// Adds one of several operations at the same method and path that a query parameter
/// tells apart: the trie holds one route standing for all of them.
fn insert_by_query(
    root: &mut Node,
    path: &str,
    method: MethodKey,
    query: &HashMap<String, String>,
    route: Route,
) -> Result<(), String> {
    let mut pairs = query.iter();
    let (Some((param, value)), None) = (pairs.next(), pairs.next()) else {
        return Err("`query` must name exactly one parameter".into());
    };
    let list = slot(root, path)?;
    let Some((_, existing)) = list.iter_mut().find(|(m, _)| *m == method) else {
        let mut dispatch = route.clone();
        dispatch.action = route.service.unknown_action.clone();
        dispatch.class = Class::Unknown;
        dispatch.body = None;
        dispatch.by_query = Some(ByQuery {
            param: param.as_str().into(),
            operations: vec![(value.as_str().into(), Arc::new(route))],
        });
        list.push((method, Arc::new(dispatch)));
        return Ok(());
    };
    // Only this compilation holds the route yet.
    let by = Arc::get_mut(existing)
        .and_then(|r| r.by_query.as_mut())
        .filter(|b| &*b.param == param.as_str())
        .ok_or("another operation has this method and path without the same `query` parameter")?;
    if by.operations.iter().any(|(v, _)| &**v == value.as_str()) {
        return Err(format!("duplicate operation for {param}={value}"));
    }
    by.operations.push((value.as_str().into(), Arc::new(route)));
    Ok(())
}

/// The list a route for `path` goes into: the node's routes, or its rest routes when the
/// path ends in `{+name}`.
fn slot<'n>(
    root: &'n mut Node,
    path: &str,
) -> Result<&'n mut Vec<(MethodKey, Arc<Route>)>, String> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| "path must start with /".to_string())?;
    let mut node = root;
    let segments: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    for (i, seg) in segments.iter().enumerate() {
        if seg.starts_with("{+") {
            if i + 1 != segments.len() {
                return Err("a {+rest} parameter must be the last segment".into());
            }
            return Ok(&mut node.rest);
        }
        node = if seg.starts_with('{') {
            node.param.get_or_insert_with(Box::default)
        } else {
            node.statics.entry((*seg).into()).or_default()
        };
    }
    Ok(&mut node.routes)
}

fn compile_route(op: &Operation, service: &Arc<Service>) -> Result<Route, String> {
    let mut params: Vec<Arc<str>> = Vec::new();
    for seg in op.path.split('/').skip(1) {
        if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let name = inner.strip_prefix('+').unwrap_or(inner);
            if name.is_empty() || name.contains(['{', '}', '/']) {
                return Err(format!("bad parameter in {}", op.path));
            }
            params.push(name.into());
        } else if seg.contains(['{', '}']) {
            return Err(format!("parameter must be a whole segment in {}", op.path));
        }
    }
    let (rt, rid) = match &op.resource {
        Some(r) => (Arc::from(r.kind.as_str()), r.id.as_str()),
        None => (
            service.default_resource.0.clone(),
            &*service.default_resource.1,
        ),
    };
    let mut strip_suffix = Vec::new();
    for (name, suffix) in &op.strip_suffix {
        let i = params
            .iter()
            .position(|p| **p == **name)
            .ok_or_else(|| format!("strip_suffix names unknown parameter {name}"))?;
        if suffix.is_empty() || !suffix.is_ascii() {
            return Err(format!("strip_suffix of {name} must be non-empty ASCII"));
        }
        strip_suffix.push((i, suffix.as_str().into()));
    }
    Ok(Route {
        action: op.action.as_str().into(),
        class: op.class,
        service: service.clone(),
        resource_id: template(rid, &params)?,
        params,
        resource_type: rt,
        body: op.body,
        template: op.path.as_str().into(),
        by_query: None,
        strip_suffix,
    })
}

/// Splits `"{owner}/{repo}"` into pieces referring to parameter positions.
fn template(text: &str, params: &[Arc<str>]) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed {{ in resource id {text}"))?
            + open;
        let name = &rest[open + 1..close];
        let idx = params
            .iter()
            .position(|p| &**p == name)
            .ok_or_else(|| format!("resource id names unknown parameter {name}"))?;
        pieces.push(Piece::Param(idx));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    Ok(pieces)
}
