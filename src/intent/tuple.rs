//! The AuthZEN tuple: what a request means, as policy, the audit record and `explain` see it.

use std::sync::Arc;

use http::Method;
use serde_json::{Map, Value, json};

use super::class::Class;
use super::request::Subject;

/// What a request means: the AuthZEN tuple plus the few fields logs and policy use directly.
#[derive(Debug, Clone)]
pub struct Tuple {
    /// The action name (`github.issues.create`, `http.get` on an unknown host).
    pub action: Arc<str>,
    /// What the action does.
    pub class: Class,
    /// The resource type (`github.repo`).
    pub resource_type: Arc<str>,
    /// The resource id (`acme/web`).
    pub resource_id: String,
    /// `{subject, action, resource, context}` as JSON: the policy input.
    pub json: Value,
    /// For a single MCP request: its JSON-RPC id, so a refusal can answer it in kind.
    pub mcp_request_id: Option<Value>,
}

/// What a tuple is made of, before its JSON.
pub(super) struct Parts<'a> {
    pub(super) subject: Subject<'a>,
    pub(super) method: &'a Method,
    /// The catalog service, when the host is known.
    pub(super) service: Option<&'a str>,
    pub(super) action: Arc<str>,
    pub(super) class: Class,
    pub(super) resource_type: Arc<str>,
    pub(super) resource_id: String,
    /// The named path parameters.
    pub(super) resource_props: Map<String, Value>,
    pub(super) context: Map<String, Value>,
}

impl Tuple {
    /// The tuple of these parts.
    pub(super) fn new(p: Parts<'_>) -> Tuple {
        let known = p.class != Class::Unknown;
        let json = json!({
            "subject": {
                "type": "agent",
                "id": p.subject.id,
                "properties": {
                    "name": p.subject.name,
                    "tenant": p.subject.tenant,
                    "owner": p.subject.owner,
                    "trust_domain": p.subject.trust_domain,
                },
            },
            "action": {
                "name": &*p.action,
                "properties": {
                    "method": p.method.as_str(),
                    "service": p.service,
                    "class": p.class.as_str(),
                    "known": known,
                },
            },
            "resource": {
                "type": &*p.resource_type,
                "id": p.resource_id,
                "properties": Value::Object(p.resource_props),
            },
            "context": Value::Object(p.context),
        });
        Tuple {
            action: p.action,
            class: p.class,
            resource_type: p.resource_type,
            resource_id: p.resource_id,
            json,
            mcp_request_id: None,
        }
    }
}
