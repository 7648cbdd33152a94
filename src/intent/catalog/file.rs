//! A catalog file as generated (`config/services/*.json`), and how each of its operations
//! compiles to a [`Route`].

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::route::{Piece, Route, Service};
use crate::intent::body::{BodyKind, GRAPHQL};
use crate::intent::class::Class;
use crate::vendors;

/// One generated file: a service's REST operations, or its GraphQL root fields.
#[derive(Deserialize)]
pub(super) struct File {
    pub(super) service: String,
    pub(super) hosts: Vec<String>,
    #[serde(default)]
    pub(super) kind: Option<String>,
    #[serde(default)]
    pub(super) default_resource: Option<ResourceSpec>,
    #[serde(default)]
    pub(super) operations: Vec<Operation>,
    #[serde(default)]
    pub(super) path: Option<String>,
    #[serde(default)]
    pub(super) fields: HashMap<String, HashMap<String, Class>>,
}

/// A resource as a file names it: type and id template (`{owner}/{repo}`).
#[derive(Deserialize)]
pub(super) struct ResourceSpec {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) id: String,
}

/// One operation of a file.
#[derive(Deserialize)]
pub(super) struct Operation {
    pub(super) action: String,
    pub(super) method: String,
    pub(super) path: String,
    pub(super) class: Class,
    #[serde(default)]
    pub(super) resource: Option<ResourceSpec>,
    #[serde(default)]
    pub(super) host: Option<String>,
    #[serde(default)]
    pub(super) body: Option<String>,
    /// `{param: value}`: the operation is the one at this method and path whose value the
    /// request's query carries.
    #[serde(default)]
    pub(super) query: Option<HashMap<String, String>>,
    #[serde(default)]
    pub(super) strip_suffix: HashMap<String, String>,
}

/// The body kind all `operations` have, if they agree and have one.
pub(super) fn shared_body(operations: &[Operation]) -> Option<BodyKind> {
    let first = operations.first()?.body.as_deref()?;
    operations
        .iter()
        .all(|op| op.body.as_deref() == Some(first))
        .then(|| body_kind(first))
        .flatten()
}

/// The body reader a catalog file names: GraphQL, or one of a vendor's.
fn body_kind(name: &str) -> Option<BodyKind> {
    if name == GRAPHQL.name {
        return Some(BodyKind::of(&GRAPHQL));
    }
    vendors::body_reader(name).map(BodyKind::of)
}

/// The route of one operation of `service`.
pub(super) fn compile_route(op: &Operation, service: &Arc<Service>) -> Result<Route, String> {
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
        body: op
            .body
            .as_deref()
            .map(|name| body_kind(name).ok_or_else(|| format!("unknown body kind {name}")))
            .transpose()?,
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
