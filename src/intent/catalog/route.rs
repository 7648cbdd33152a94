//! What the catalog compiles to: services and their operations (routes), and what a match
//! hands back.

use std::sync::Arc;

use crate::intent::body::BodyKind;
use crate::intent::class::Class;
use crate::intent::extract::graphql::GraphqlSchema;
use crate::vendors::vendor::Vendor;

/// A service: its name (the action prefix) and what it falls back to.
#[derive(Debug)]
pub struct Service {
    /// The action prefix (`github`).
    pub name: Arc<str>,
    /// Resource `(type, id)` of operations that name none, and of unknown paths.
    pub default_resource: (Arc<str>, Arc<str>),
    /// Action of a path this service does not know: `<service>.unknown`.
    pub unknown_action: Arc<str>,
    /// GraphQL root fields by operation type, when the service has a GraphQL endpoint.
    pub graphql: Option<GraphqlSchema>,
    /// The body extractor every operation of the service shares, applied to its unknown
    /// paths too (Slack: a `token` argument is refused even on a method the catalog lacks).
    pub unknown_body: Option<BodyKind>,
    /// The vendor behind the service, when AgentGate knows it (how it names resources).
    pub vendor: Option<&'static Vendor>,
}

/// One operation of the catalog.
#[derive(Debug, Clone)]
pub struct Route {
    /// The action name (`github.issues.create`).
    pub action: Arc<str>,
    /// What the operation does.
    pub class: Class,
    /// The service it belongs to.
    pub service: Arc<Service>,
    /// Names of the path parameters, in path order; the last may be a rest parameter.
    pub params: Vec<Arc<str>>,
    /// The resource type (`github.repo`).
    pub resource_type: Arc<str>,
    /// Resource id template: literal pieces and parameter indexes.
    pub resource_id: Vec<Piece>,
    /// How the body contributes to the tuple, when it does.
    pub body: Option<BodyKind>,
    /// The path template (debug output and test failures).
    pub template: Arc<str>,
    /// Set when several operations share this method and path and one query parameter
    /// names which (git's `info/refs?service=`): this route then stands for none of them
    /// (`<service>.unknown`) until `intent::refine` picks one.
    pub by_query: Option<ByQuery>,
    /// Suffixes dropped from parameter values (by parameter index): `{repo}` of `web.git`
    /// is `web`.
    pub strip_suffix: Vec<(usize, Arc<str>)>,
}

/// Operations at one method and path, told apart by one query parameter.
#[derive(Debug, Clone)]
pub struct ByQuery {
    /// The query parameter that names the operation.
    pub param: Arc<str>,
    /// `(value, operation)`.
    pub operations: Vec<(Arc<str>, Arc<Route>)>,
}

/// A piece of a resource id template.
#[derive(Debug, Clone)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// The value of the path parameter at this index.
    Param(usize),
}

/// A successful match: the route and where its parameters sit in the path.
#[derive(Debug)]
pub struct Match<'c> {
    /// The operation matched.
    pub route: &'c Arc<Route>,
    /// Byte ranges of the parameter values in the matched path, in `route.params` order.
    pub spans: Vec<(usize, usize)>,
}
