//! What a vendor module declares. Each field is one thing AgentGate treats differently at
//! that vendor; the rest of the code reads them through [`crate::vendors`], never by name.

use std::fmt;

use http::HeaderName;

use crate::intent::body::BodyReader;

/// Everything AgentGate knows about one vendor.
pub struct Vendor {
    /// The service: action prefix, catalog `service` and vault service name (`github`).
    pub service: &'static str,
    /// The generated catalog files, `(name, json)`, compiled into the binary.
    pub catalog: &'static [(&'static str, &'static str)],
    /// The origin `agentgate vault set <service>` stores a credential for by default.
    pub origin: &'static str,
    /// Origins without a connection of their own that another origin's connection serves.
    pub siblings: &'static [Sibling],
    /// Request headers that change what a request means at the vendor: one value each, or
    /// the request is refused as ambiguous, and recorded in the tuple like `Content-Type`.
    pub meaning_headers: &'static [HeaderName],
    /// The body readers its catalog files name.
    pub bodies: &'static [BodyReader],
    /// Checks a path parameter's value and rewrites it the way the vendor names things;
    /// the error is the refusal reason. `None`: values are taken as they come.
    pub names: Option<NameRule>,
    /// Reads an MCP tool call's arguments the way its REST API names things (the resource,
    /// mail recipients); the error is the refusal reason. `None`: tools keep their own
    /// resource (`mcp.tool`).
    pub mcp_arguments: Option<McpArguments>,
}

/// See [`Vendor::mcp_arguments`].
pub type McpArguments =
    fn(args: &serde_json::Map<String, serde_json::Value>) -> Result<McpReading, String>;

/// Checks a path parameter's value (`param` names it) and rewrites it in place; the error
/// is the refusal reason.
pub type NameRule = fn(param: &str, value: &mut str) -> Result<(), String>;

impl fmt::Debug for Vendor {
    // The catalog files are large: the service names the vendor well enough.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vendor")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// An origin served by another origin's connection, and the form the credential takes there.
#[derive(Debug, Clone, Copy)]
pub struct Sibling {
    /// The origin key without a connection of its own (`github.com`).
    pub origin: &'static str,
    /// The origin key whose connection serves it (`api.github.com`).
    pub served_by: &'static str,
    /// How the credential is written there.
    pub form: Form,
}

/// How a credential is written into `Authorization` at an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `<scheme> <token>` with the connection's scheme (`Bearer` or `token`).
    Scheme,
    /// `Basic base64(<user>:<token>)`: what git sends over HTTPS.
    Basic {
        /// The user name sent with the token as password.
        user: &'static str,
    },
}

/// What a vendor reads from an MCP tool call's arguments.
#[derive(Debug, Default)]
pub struct McpReading {
    /// The resource its REST API would name: type, id, properties.
    pub resource: Option<(
        &'static str,
        String,
        serde_json::Map<String, serde_json::Value>,
    )>,
    /// Added as `context.body` (mail: the recipients, as the REST path records them).
    pub body: serde_json::Map<String, serde_json::Value>,
}
