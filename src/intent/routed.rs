//! A request after routing: whether its body is needed, and then its tuple. The tuple takes
//! the operation's action and resource from the catalog, the resource's name from the path
//! (as its vendor names things), and whatever the body adds from the operation's reader.

use std::borrow::Cow;
use std::sync::Arc;

use http::Method;
use serde_json::{Map, Value};

use super::body::{BodyInput, BodyKind, BodyPrefix};
use super::catalog::route::{Match, Piece, Service};
use super::class::Class;
use super::error::IntentError;
use super::headers::header_str;
use super::request::{Subject, Target};
use super::tuple::{Parts, Tuple};
use super::{context, path};

/// A request after routing, before its body: says whether the body is needed.
#[derive(Debug)]
pub struct Routed<'c, 'a> {
    pub(super) target: Target<'a>,
    /// The normalized path.
    pub(super) path: Cow<'a, str>,
    pub(super) found: Found<'c>,
}

/// What the catalog knows of the request.
#[derive(Debug)]
pub(super) enum Found<'c> {
    Operation(Match<'c>),
    UnknownPath(&'c Arc<Service>),
    UnknownHost,
    /// MCP: judged by its JSON-RPC message.
    Mcp(super::mcp::McpTarget),
}

impl Routed<'_, '_> {
    /// The body extractor this request needs, if any.
    pub fn body_kind(&self) -> Option<BodyKind> {
        match &self.found {
            Found::Operation(m) => m.route.body,
            Found::UnknownPath(service) => service.unknown_body,
            Found::UnknownHost | Found::Mcp(_) => None,
        }
    }

    /// Whether a body would go unjudged: an inspected operation (or MCP) sent as GET or
    /// HEAD is judged without one, so it must not carry one.
    pub fn judged_without_body(&self) -> bool {
        (self.body_kind().is_some() || matches!(self.found, Found::Mcp(_))) && !self.needs_body()
    }

    /// Whether the body must be read before deciding.
    pub fn needs_body(&self) -> bool {
        if let Found::Mcp(_) = self.found {
            return self.target.method == Method::POST;
        }
        self.body_kind().is_some()
            && self.target.method != Method::GET
            && self.target.method != Method::HEAD
    }

    /// Builds the tuple; `body` is what was read of the body when `needs_body()`.
    pub fn tuple(
        &self,
        subject: Subject<'_>,
        body: Option<BodyPrefix<'_>>,
    ) -> Result<Tuple, IntentError> {
        let t = &self.target;
        let mut context = context::of(t);
        let mut resource_props = Map::new();
        let (mut action, mut class, service, mut resource_type, mut resource_id) = match &self.found
        {
            Found::Mcp(m) => return self.mcp_tuple(m, subject, body, context),
            Found::UnknownHost => (
                format!("http.{}", t.method.as_str().to_ascii_lowercase()).into(),
                Class::Unknown,
                None,
                Arc::from("host"),
                t.host.to_owned(),
            ),
            Found::UnknownPath(service) => (
                service.unknown_action.clone(),
                Class::Unknown,
                Some(&*service.name),
                service.default_resource.0.clone(),
                service.default_resource.1.to_string(),
            ),
            Found::Operation(m) => {
                let r = m.route;
                let id = self.resource_id(m, &mut resource_props)?;
                (
                    r.action.clone(),
                    r.class,
                    Some(&*r.service.name),
                    r.resource_type.clone(),
                    id,
                )
            }
        };
        let prefix = body.unwrap_or(BodyPrefix {
            bytes: &[],
            truncated: false,
        });
        match &self.found {
            // An unknown method of a service whose operations all read their body one way
            // is still judged unknown, but its body is still checked (Slack: no token).
            Found::UnknownPath(service) => {
                if let Some(kind) = service.unknown_body.filter(|k| k.guards_unknown_paths()) {
                    kind.read(&self.body_input(service, prefix))?;
                }
            }
            Found::Operation(m) => {
                if let Some(kind) = m.route.body {
                    if self.needs_body() {
                        context.insert("body_truncated".into(), prefix.truncated.into());
                    }
                    let reading = kind.read(&self.body_input(&m.route.service, prefix))?;
                    if let Some((a, c)) = reading.action {
                        (action, class) = (a, c);
                    }
                    if let Some((rt, id)) = reading.resource {
                        (resource_type, resource_id) = (rt, id);
                    }
                    context.insert("body".into(), Value::Object(reading.selected));
                }
            }
            Found::UnknownHost | Found::Mcp(_) => {}
        }
        Ok(Tuple::new(Parts {
            subject,
            method: t.method,
            service,
            action,
            class,
            resource_type,
            resource_id,
            resource_props,
            context,
        }))
    }

    /// The tuple of an MCP request, from its message.
    fn mcp_tuple(
        &self,
        m: &super::mcp::McpTarget,
        subject: Subject<'_>,
        body: Option<BodyPrefix<'_>>,
        mut context: Map<String, Value>,
    ) -> Result<Tuple, IntentError> {
        let t = &self.target;
        let prefix = body.unwrap_or(BodyPrefix {
            bytes: &[],
            truncated: false,
        });
        let meaning = super::mcp::read(m, t, prefix, subject.tenant)?;
        context.extend(meaning.context);
        let mut tuple = Tuple::new(Parts {
            subject,
            method: t.method,
            service: Some("mcp"),
            action: meaning.action,
            class: meaning.class,
            resource_type: meaning.resource_type,
            resource_id: meaning.resource_id,
            resource_props: meaning.resource_props,
            context,
        });
        tuple.mcp_request_id = meaning.rpc_id;
        Ok(tuple)
    }

    /// The operation's resource id from its template, with each path parameter named as
    /// its vendor names things and recorded in `props`.
    fn resource_id(
        &self,
        m: &Match<'_>,
        props: &mut Map<String, Value>,
    ) -> Result<String, IntentError> {
        let r = m.route;
        let mut values: Vec<String> = m
            .spans
            .iter()
            .map(|&(s, e)| path::decode(&self.path[s..e]))
            .collect();
        let names = r.service.vendor.and_then(|v| v.names);
        for (name, value) in r.params.iter().zip(&mut values) {
            if let Some(names) = names {
                names(name, value).map_err(IntentError::Ambiguous)?;
            }
            props.insert(name.to_string(), value.clone().into());
        }
        let mut id = String::new();
        for piece in &r.resource_id {
            match piece {
                Piece::Text(s) => id.push_str(s),
                Piece::Param(i) => id.push_str(values.get(*i).map_or("", String::as_str)),
            }
        }
        Ok(id)
    }

    /// What the body reader of `service` is given.
    fn body_input<'s>(&'s self, service: &'s Service, body: BodyPrefix<'s>) -> BodyInput<'s> {
        let t = &self.target;
        BodyInput {
            service: &service.name,
            query: t.query,
            content_type: header_str(t.headers, http::header::CONTENT_TYPE),
            body,
            graphql: service.graphql.as_ref(),
        }
    }
}
