//! Every vendor AgentGate knows, each in one module: its generated catalog files, the body
//! readers they name, its default origin, the origins its connections also serve, the
//! headers that change a request's meaning there, and how it names resources. Adding a
//! vendor is one module here, listed in [`ALL`], plus its generated catalog under
//! `config/services/`.

pub mod github;
pub mod gmail;
pub mod slack;
pub mod vendor;

use http::HeaderName;

pub use vendor::{Form, Sibling, Vendor};

use crate::intent::body::BodyReader;

/// Every vendor, in the order their catalog files are compiled.
pub static ALL: &[&Vendor] = &[&github::VENDOR, &gmail::VENDOR, &slack::VENDOR];

/// Every vendor's catalog files, `(name, json)`.
pub fn catalog_files() -> impl Iterator<Item = (&'static str, &'static str)> {
    ALL.iter().flat_map(|v| v.catalog.iter().copied())
}

/// The vendor behind a catalog service.
pub fn by_service(service: &str) -> Option<&'static Vendor> {
    ALL.iter().copied().find(|v| v.service == service)
}

/// The vendor body reader a catalog file names.
pub fn body_reader(name: &str) -> Option<&'static BodyReader> {
    ALL.iter()
        .flat_map(|v| v.bodies.iter())
        .find(|r| r.name == name)
}

/// Every vendor's meaning headers (see [`Vendor::meaning_headers`]).
pub fn meaning_headers() -> impl Iterator<Item = &'static HeaderName> {
    ALL.iter().flat_map(|v| v.meaning_headers.iter())
}

/// The default origin of a well-known service.
pub fn default_origin(service: &str) -> Option<&'static str> {
    by_service(service).map(|v| v.origin)
}

fn sibling(origin: &str) -> Option<&'static Sibling> {
    ALL.iter()
        .flat_map(|v| v.siblings.iter())
        .find(|s| s.origin == origin)
}

/// The origin (key) whose connection serves `origin` when it has none of its own.
pub fn served_by(origin: &str) -> Option<&'static str> {
    sibling(origin).map(|s| s.served_by)
}

/// The form the credential takes at `origin` (an origin key).
pub fn form_at(origin: &str) -> Form {
    sibling(origin).map_or(Form::Scheme, |s| s.form)
}
