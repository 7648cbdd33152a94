//! The second step of routing, for what the path alone does not say. git's smart HTTP names
//! two operations on one path — `GET /{owner}/{repo}/info/refs?service=git-upload-pack` is a
//! fetch, `?service=git-receive-pack` a push — and names a repository with or without `.git`.
//! The catalog marks such routes (`query`, `strip_suffix`, compiled into
//! [`Route::by_query`] and [`Route::strip_suffix`]); [`refine`] picks the operation from the
//! query, refusing one that another parser could read differently, and trims the suffix
//! from the parameter's span so the resource names the repository itself.

use std::sync::Arc;

use super::catalog::{Match, Route};

/// A query that does not name exactly one of a route's operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
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
pub fn refine<'c>(m: Match<'c>, path: &str, query: Option<&str>) -> Result<Match<'c>, QueryError> {
    let mut m = m;
    if let Some(by) = &m.route.by_query {
        let template_param = || (m.route.template.to_string(), by.param.to_string());
        let value = match super::extract::query_once(query, &by.param) {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use crate::intent::{Class, Intent, IntentError, Subject, Target, Tuple};
    use http::{HeaderMap, Method};
    use serde_json::json;

    fn git(method: &str, path_and_query: &str) -> Result<Tuple, IntentError> {
        let intent = Intent::embedded(1 << 20).unwrap();
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let headers = HeaderMap::new();
        let target = Target {
            method: &method,
            host: "github.com",
            path,
            query,
            headers: &headers,
        };
        let subject = Subject {
            id: "spiffe://agentgate.local/agent/bot",
            name: "bot",
            tenant: None,
            owner: None,
            trust_domain: "agentgate.local",
        };
        intent.route(target)?.tuple(subject, None)
    }

    #[test]
    fn git_smart_http_is_fetch_or_push_on_the_repository() {
        for (method, path, action, class) in [
            (
                "GET",
                "/acme/web/info/refs?service=git-upload-pack",
                "github.git.fetch",
                Class::Read,
            ),
            (
                "HEAD",
                "/acme/web.git/info/refs?service=git-upload-pack",
                "github.git.fetch",
                Class::Read,
            ),
            (
                "POST",
                "/acme/web.git/git-upload-pack",
                "github.git.fetch",
                Class::Read,
            ),
            (
                "GET",
                "/acme/web.GIT/info/refs?service=git-receive-pack",
                "github.git.push",
                Class::Write,
            ),
            (
                "POST",
                "/acme/web/git-receive-pack",
                "github.git.push",
                Class::Write,
            ),
        ] {
            let t = git(method, path).unwrap();
            assert_eq!((&*t.action, t.class), (action, class), "{method} {path}");
            assert_eq!(
                t.json["resource"],
                json!({"type": "github.repo", "id": "acme/web", "properties": {"owner": "acme", "repo": "web"}}),
                "{method} {path}"
            );
        }
        // Nothing but the suffix goes; a name that is only the suffix stays.
        assert_eq!(
            git("POST", "/acme/web.git.git/git-upload-pack")
                .unwrap()
                .resource_id,
            "acme/web.git"
        );
        assert_eq!(
            git("POST", "/acme/.git/git-upload-pack")
                .unwrap()
                .resource_id,
            "acme/.git"
        );
        // The wrong method, or any other path on github.com, is unknown there.
        for (method, path) in [
            ("POST", "/acme/web/info/refs?service=git-upload-pack"),
            ("GET", "/acme/web/git-upload-pack"),
            ("GET", "/acme/web"),
            ("POST", "/acme/web.git/info/lfs/objects/batch"),
        ] {
            let t = git(method, path).unwrap();
            assert_eq!(
                (&*t.action, t.class),
                ("github.unknown", Class::Unknown),
                "{method} {path}"
            );
            assert_eq!(
                (&*t.resource_type, &*t.resource_id),
                ("github.web", "github.com")
            );
        }
    }

    #[test]
    fn info_refs_without_exactly_one_known_service_is_refused() {
        for query in [
            "",
            "?",
            "?x=1",
            "?service=git-upload-pack&service=git-upload-pack",
            "?service=git-upload-pack&service=git-receive-pack",
            "?service=git-upload-pack&Service=git-receive-pack",
            "?service=git-upload-pack&%20service=git-receive-pack",
            "?SERVICE=git-upload-pack",
            "?service=",
            "?service=git-upload-archive",
            "?service=GIT-UPLOAD-PACK",
            "?service=git-upload-pack;service=git-receive-pack",
        ] {
            let e = git("GET", &format!("/acme/web/info/refs{query}"));
            assert!(
                matches!(e, Err(IntentError::Ambiguous(_))),
                "{query}: {e:?}"
            );
        }
        let Err(IntentError::Ambiguous(reason)) = git("GET", "/acme/web/info/refs?service=x")
        else {
            panic!("not refused");
        };
        assert!(
            reason.contains("git-upload-pack, git-receive-pack")
                || reason.contains("git-receive-pack, git-upload-pack"),
            "{reason}"
        );
    }

    #[test]
    fn a_query_parameter_counts_once_in_any_spelling() {
        use crate::intent::extract::query_once;
        let q = |s| query_once(Some(s), "service");
        assert_eq!(
            q("service=git-upload-pack"),
            Ok(Some("git-upload-pack".into()))
        );
        assert_eq!(
            q("a=1&service=git%2Dupload-pack"),
            Ok(Some("git-upload-pack".into()))
        );
        assert_eq!(query_once(None, "service"), Ok(None));
        assert_eq!(q("services=x"), Ok(None));
        for repeated in [
            "service=a&service=b",
            "service=a&Service=b",
            "service=a&+service=b",
            "SERVICE=a",
        ] {
            assert!(q(repeated).is_err(), "{repeated}");
        }
        // `;` is no separator here: the whole rest is one (unknown) value.
        assert_eq!(
            q("service=git-upload-pack;service=git-receive-pack"),
            Ok(Some("git-upload-pack;service=git-receive-pack".into()))
        );
    }
}
