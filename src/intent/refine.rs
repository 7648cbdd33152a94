//! The second step of routing, for what the path alone does not say. git's smart HTTP names
//! two operations on one path — `GET /{owner}/{repo}/info/refs?service=git-upload-pack` is a
//! fetch, `?service=git-receive-pack` a push — and names a repository with or without `.git`.
//! The catalog marks such routes (`query`, `strip_suffix`, compiled into
//! [`Route::by_query`] and [`Route::strip_suffix`]); [`refine`] picks the operation from the
//! query, refusing one that another parser could read differently, and trims the suffix
//! from the parameter's span so the resource names the repository itself.

use std::sync::Arc;

use super::catalog::route::{Match, Route};
use super::extract::query::query_once;

/// A query that does not name exactly one of a route's operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum QueryError {
    #[error(
        "{template} names its operation by the query parameter {param}, and the request has none"
    )]
    Missing { template: String, param: String },
    #[error(
        "{template} names its operation by the query parameter {param}, and the request has it more than once (or in another spelling): which one the server reads is not known"
    )]
    Repeated { template: String, param: String },
    #[error("{template}: {param}={value:?} is none of {known}")]
    Unknown {
        template: String,
        param: String,
        value: String,
        known: String,
    },
}

/// The operation a match names once the query is read, with suffixes trimmed from its
/// parameters. A route without `by_query` or `strip_suffix` comes back as it was.
pub(super) fn refine<'c>(
    m: Match<'c>,
    path: &str,
    query: Option<&str>,
) -> Result<Match<'c>, QueryError> {
    let mut m = m;
    if let Some(by) = &m.route.by_query {
        let template_param = || (m.route.template.to_string(), by.param.to_string());
        let value = match query_once(query, &by.param) {
            Ok(Some(value)) => value,
            Ok(None) => {
                let (template, param) = template_param();
                return Err(QueryError::Missing { template, param });
            }
            Err(_) => {
                let (template, param) = template_param();
                return Err(QueryError::Repeated { template, param });
            }
        };
        let route = by
            .operations
            .iter()
            .find(|(v, _)| **v == *value)
            .map(|(_, r)| r)
            .ok_or_else(|| QueryError::Unknown {
                template: m.route.template.to_string(),
                param: by.param.to_string(),
                value: value.chars().take(64).collect(),
                known: by
                    .operations
                    .iter()
                    .map(|(v, _)| &**v)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        m.route = route;
    }
    strip_suffixes(m.route, path, &mut m.spans);
    Ok(m)
}

/// Shortens the spans of parameters ending in their route's suffix (ASCII, any case), unless
/// nothing would be left.
fn strip_suffixes(route: &Arc<Route>, path: &str, spans: &mut [(usize, usize)]) {
    for (i, suffix) in &route.strip_suffix {
        let Some((start, end)) = spans.get_mut(*i) else {
            continue;
        };
        let value = path.as_bytes().get(*start..*end).unwrap_or_default();
        let n = suffix.len();
        if value.len() > n && value[value.len() - n..].eq_ignore_ascii_case(suffix.as_bytes()) {
            *end -= n;
        }
    }
}
