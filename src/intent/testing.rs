//! Test helpers: the embedded catalog, one agent, and a request's tuple in one call.

use http::{HeaderMap, Method};

use super::{BodyPrefix, Intent, IntentError, Subject, Target, Tuple};

/// The intent gate over the embedded catalog.
pub(crate) fn intent() -> Intent {
    Intent::embedded(1 << 20).unwrap()
}

/// The agent every test tuple is about.
pub(crate) fn subject() -> Subject<'static> {
    Subject {
        id: "spiffe://agentgate.local/agent/bot",
        name: "bot",
        tenant: None,
        owner: Some("alice"),
        trust_domain: "agentgate.local",
    }
}

/// Routes a request and builds its tuple, with `body` whole when the operation reads it.
pub(crate) fn tuple_of(
    intent: &Intent,
    method: &str,
    host: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Tuple, IntentError> {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let routed = intent.route(Target {
        method: &method,
        host,
        path,
        query,
        headers,
    })?;
    let prefix = routed.needs_body().then_some(BodyPrefix {
        bytes: body,
        truncated: false,
    });
    routed.tuple(subject(), prefix)
}

/// The tuple of a plain GET.
pub(crate) fn get(intent: &Intent, host: &str, path: &str) -> Tuple {
    tuple_of(intent, "GET", host, path, &HeaderMap::new(), b"").unwrap()
}
