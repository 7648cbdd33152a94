//! The readers bodies are read with, for the operations whose meaning lives there. Each is
//! strict: what it cannot read is an error, never a guess; what two parsers could read
//! differently (duplicate keys and parameters, malformed mail headers, odd multipart
//! framing) is refused as ambiguous; and every one works in one linear pass under a
//! per-request work budget ([`budget`]), so no body shape can make a request expensive.
//! GraphQL is read here; vendors build on the rest (`crate::vendors`).

pub(crate) mod address;
pub mod budget;
pub mod error;
pub mod graphql;
pub(crate) mod json;
pub(crate) mod mime;
pub mod query;
