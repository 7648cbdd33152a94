//! What intent is given: the request ([`Target`]) and the agent it is about ([`Subject`]).

use http::{HeaderMap, Method};

/// The agent a tuple is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Its SPIFFE ID.
    pub id: &'a str,
    /// Its agent name (`/agent/<name>` of the SPIFFE ID).
    pub name: &'a str,
    /// Its tenant, when multi-tenant.
    pub tenant: Option<&'a str>,
    /// The human responsible, from the registry.
    pub owner: Option<&'a str>,
    /// Its trust domain.
    pub trust_domain: &'a str,
}

/// A request as intent sees it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The request's method.
    pub method: &'a Method,
    /// Lowercase host, no port.
    pub host: &'a str,
    /// The path as sent (not yet normalized).
    pub path: &'a str,
    /// The query, without `?`.
    pub query: Option<&'a str>,
    /// The request's headers (hop-by-hop ones already removed).
    pub headers: &'a HeaderMap,
}
