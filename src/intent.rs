//! Gate 2's machinery: what a request means. The request's host, method and path find an
//! operation in the service catalog; path parameters and, for a few operations, the body
//! fill in the resource and context. The result is an OpenID AuthZEN tuple — the policy
//! input, the audit record's description of the request, and what `explain` prints.
//!
//! Nothing here names a vendor: what differs per vendor (catalog files, body readers,
//! naming rules, extra meaning headers) is declared in [`crate::vendors`].

pub mod body;
mod caller;
pub mod catalog;
mod class;
mod context;
mod error;
pub mod extract;
mod headers;
pub mod mcp;
mod path;
mod refine;
mod request;
mod routed;
mod tuple;
mod upgrade;

#[cfg(test)]
pub(crate) mod testing;

use http::HeaderMap;

pub use body::{BodyKind, BodyPrefix};
pub use catalog::{Catalog, CatalogError};
pub use class::Class;
pub use error::IntentError;
pub use extract::error::BodyError;
pub use headers::meaning_headers;
pub use path::PathError;
pub use request::{Subject, Target};
pub use routed::Routed;
pub use tuple::Tuple;
pub use upgrade::UpgradeRoute;

use routed::Found;

/// The compiled catalog and the inspection bound.
#[derive(Debug)]
pub struct Intent {
    catalog: Catalog,
    /// Bodies are read up to this many bytes for intent; the rest streams uninspected.
    pub max_body: usize,
    /// Where a protocol upgrade (WebSocket) is documented, so allowed (`intent.upgrades`).
    upgrades: Vec<UpgradeRoute>,
    /// The remote MCP servers (`[[mcp.servers]]`).
    mcp: mcp::Servers,
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
            mcp: mcp::Servers::default(),
        }
    }

    /// Judges requests to these MCP servers by their messages (`[[mcp.servers]]`).
    pub fn with_mcp(mut self, servers: &[mcp::McpServer]) -> Intent {
        self.mcp = mcp::Servers::new(servers);
        self
    }

    /// Pins MCP tool definitions here and judges calls by them.
    pub fn with_mcp_pins(mut self, pins: std::sync::Arc<mcp::pins::Pins>) -> Intent {
        self.mcp = std::mem::take(&mut self.mcp).with_pins(pins);
        self
    }

    /// The MCP tool pins, when kept.
    pub fn mcp_pins(&self) -> Option<&std::sync::Arc<mcp::pins::Pins>> {
        self.mcp.pins()
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
        headers::check(target.headers)?;
        let path = path::normalize(target.path)?;
        let found = if let Some(m) = mcp::find(&self.mcp, &target, &path) {
            Found::Mcp(m)
        } else {
            match self.catalog.host(target.host) {
                None => Found::UnknownHost,
                Some(host) => match host.find(target.method, &path) {
                    Some(m) => Found::Operation(
                        refine::refine(m, &path, target.query)
                            .map_err(|e| IntentError::Ambiguous(e.to_string()))?,
                    ),
                    None => Found::UnknownPath(&host.service),
                },
            }
        };
        let routed = Routed {
            target,
            path,
            found,
        };
        if routed.needs_body() {
            headers::body_headers(target.headers)?;
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
        upgrade::check(&self.upgrades, host, path, headers)
    }
}

#[cfg(test)]
mod tests;
