//! The segment trie of one host: static segments, one parameter child and rest parameters
//! per node, so a match costs a few hash lookups whatever the number of operations.

use std::collections::HashMap;
use std::sync::Arc;

use super::route::{ByQuery, Match, Route};
use crate::intent::class::Class;

#[derive(Debug, Default)]
pub(super) struct Node {
    statics: HashMap<Box<str>, Node>,
    param: Option<Box<Node>>,
    /// Routes whose last segment is `{+name}`: they take the rest of the path from here.
    rest: Vec<(MethodKey, Arc<Route>)>,
    routes: Vec<(MethodKey, Arc<Route>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MethodKey {
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

/// Finds the route for `method` on a normalized `path` below `root`.
pub(super) fn find<'n>(root: &'n Node, method: &http::Method, path: &str) -> Option<Match<'n>> {
    let mut spans = Vec::new();
    // The root path has no segment at all.
    let start = if path == "/" { 2 } else { 1 };
    let route = walk(root, method, path, start, &mut spans)?;
    spans.reverse();
    Some(Match { route, spans })
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

pub(super) fn insert(
    root: &mut Node,
    path: &str,
    method: MethodKey,
    route: Arc<Route>,
) -> Result<(), String> {
    let list = slot(root, path)?;
    if list.iter().any(|(m, _)| *m == method) {
        return Err("duplicate operation".into());
    }
    list.push((method, route));
    Ok(())
}

/// Adds one of several operations at the same method and path that a query parameter
/// tells apart: the trie holds one route standing for all of them.
pub(super) fn insert_by_query(
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
