//! How a request body contributes to the tuple. A catalog operation names a body reader
//! (`"body": "gmail.message"`); the reader turns what was read of the body into the fields
//! policy reads and, where the body says more than the path, a sharper action or resource.
//! GraphQL is read here (a protocol any service may speak); each vendor's own readers live
//! in its module under [`crate::vendors`].

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::class::Class;
use super::extract::error::BodyError;
use super::extract::graphql::{GraphqlSchema, graphql};

/// The body as far as it was read for intent.
#[derive(Debug, Clone, Copy)]
pub struct BodyPrefix<'b> {
    /// The bytes read.
    pub bytes: &'b [u8],
    /// More followed beyond `bytes`.
    pub truncated: bool,
}

/// What a body reader is given: the body and the parts of the request that say how to read it.
#[derive(Debug, Clone, Copy)]
pub struct BodyInput<'a> {
    /// The operation's service (the action prefix).
    pub service: &'a str,
    /// The request's query, if any.
    pub query: Option<&'a str>,
    /// The request's `Content-Type`, when it is text.
    pub content_type: Option<&'a str>,
    /// The body as far as it was read (empty for a request judged without one).
    pub body: BodyPrefix<'a>,
    /// The service's GraphQL schema, when it has one.
    pub graphql: Option<&'a GraphqlSchema>,
}

/// What a body says, for the tuple.
#[derive(Debug, Default)]
pub struct BodyReading {
    /// Replaces the operation's action and class (GraphQL: the decisive field).
    pub action: Option<(Arc<str>, Class)>,
    /// Replaces the operation's resource type and id (Slack: the channels named).
    pub resource: Option<(Arc<str>, String)>,
    /// `context.body`: the fields policy reads.
    pub selected: Map<String, Value>,
}

/// One way of reading bodies, as the module that owns it declares it.
#[derive(Debug)]
pub struct BodyReader {
    /// The name catalog files give it (`"body": "slack"`).
    pub name: &'static str,
    /// Reads the body; an error refuses the request.
    pub read: fn(&BodyInput<'_>) -> Result<BodyReading, BodyError>,
    /// Also read on the paths of its service the catalog lacks, when every operation of the
    /// service has this reader; only a refusal counts there (Slack: a `token` argument is
    /// refused even on a method the catalog does not know).
    pub guards_unknown_paths: bool,
}

/// How the request body contributes to the tuple: the reader a catalog operation names.
#[derive(Clone, Copy)]
pub struct BodyKind(&'static BodyReader);

impl BodyKind {
    /// The kind read by `reader`.
    pub fn of(reader: &'static BodyReader) -> BodyKind {
        BodyKind(reader)
    }

    /// The name catalog files give it.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// Reads a body of this kind.
    pub fn read(self, input: &BodyInput<'_>) -> Result<BodyReading, BodyError> {
        (self.0.read)(input)
    }

    /// Whether the service's unknown paths are read too (see [`BodyReader`]).
    pub fn guards_unknown_paths(self) -> bool {
        self.0.guards_unknown_paths
    }
}

impl PartialEq for BodyKind {
    fn eq(&self, other: &BodyKind) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for BodyKind {}

impl fmt::Debug for BodyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BodyKind").field(&self.0.name).finish()
    }
}

/// A GraphQL request: the action from the document's most dangerous top-level field.
pub static GRAPHQL: BodyReader = BodyReader {
    name: "graphql",
    read: read_graphql,
    guards_unknown_paths: false,
};

fn read_graphql(input: &BodyInput<'_>) -> Result<BodyReading, BodyError> {
    let mut reading = BodyReading::default();
    // Cut off: the document cannot be read, so nothing is known.
    let Some(schema) = input.graphql.filter(|_| !input.body.truncated) else {
        return Ok(reading);
    };
    let summary = graphql(input.body.bytes, schema)?;
    if let Some(f) = summary.decisive() {
        let action = format!("{}.graphql.{}.{}", input.service, f.operation, f.field);
        reading.action = Some((action.into(), f.class));
    }
    reading.selected.insert("graphql".into(), summary.to_json());
    Ok(reading)
}
