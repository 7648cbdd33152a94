//! MCP (Model Context Protocol) over HTTP as intent: a request to a configured MCP server
//! (`[[mcp.servers]]`), or one that declares itself MCP (`Mcp-Method`, or a POST with
//! `Mcp-Protocol-Version`), is judged by the JSON-RPC message it carries rather than by
//! its path. `tools/call` of `create_issue` on server `github` is the action
//! `mcp.github.tools.call.create_issue`; the resource comes from the arguments the way the
//! server's vendor names things (`github.repo acme/web`), so one policy covers the REST
//! and the MCP path; the arguments go into `context.mcp` with secrets redacted.

pub mod listing;
pub(crate) mod message;
pub mod pins;

use std::sync::Arc;

use http::Method;
use serde_json::{Map, Value};

use super::body::BodyPrefix;
use super::class::Class;
use super::context;
use super::error::IntentError;
use super::extract::error::invalid;
use super::request::Target;
use crate::vendors;
use message::Message;

/// The server name of MCP traffic to an origin no `[[mcp.servers]]` entry names.
pub const UNKNOWN_SERVER: &str = "unknown";

/// One remote MCP server (`[[mcp.servers]]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// The name in actions: `mcp.<name>.tools.call.<tool>` (letters, digits, `_`, `-`).
    pub name: String,
    /// Its endpoint, e.g. `https://api.githubcopilot.com/mcp/`: every request to this host
    /// at this path or below it is MCP.
    pub url: String,
    /// Whose REST resource names its tools' arguments map to (`github`, `slack`, `gmail`);
    /// default: the name, when it is one of those.
    #[serde(default)]
    pub vendor: Option<String>,
}

impl McpServer {
    /// Checks the entry; the error says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok || self.name == UNKNOWN_SERVER {
            return Err(format!(
                "name {:?} must be 1-64 lowercase letters, digits, _ or - (and not \"unknown\")",
                self.name
            ));
        }
        let (host, _) = self.host_and_path()?;
        if host.is_empty() {
            return Err(format!("url {:?} needs a host", self.url));
        }
        if let Some(v) = &self.vendor {
            if vendors::by_service(v).is_none() {
                return Err(format!(
                    "vendor {v:?} is not one AgentGate knows (github, gmail, slack)"
                ));
            }
        }
        Ok(())
    }

    /// Lowercase host and the path prefix (no trailing `/`).
    fn host_and_path(&self) -> Result<(String, String), String> {
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|e| format!("url {:?} is not a URL: {e}", self.url))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!(
                "url {:?} must be https:// (AgentGate judges what it can read)",
                self.url
            ));
        }
        if uri.query().is_some() {
            return Err(format!("url {:?} must not have a query", self.url));
        }
        let host = uri.host().unwrap_or_default().to_ascii_lowercase();
        let path = uri.path().trim_end_matches('/').to_owned();
        Ok((host, path))
    }
}

/// The configured servers, ready for matching, and the tool pins.
#[derive(Debug, Default)]
pub struct Servers(Vec<Compiled>, Option<Arc<pins::Pins>>);

#[derive(Debug)]
struct Compiled {
    name: Arc<str>,
    host: String,
    path: String,
    vendor: Option<&'static vendors::Vendor>,
}

impl Servers {
    /// Compiles validated entries (an invalid one is skipped; config validation refuses it).
    pub fn new(servers: &[McpServer]) -> Servers {
        Servers(
            servers
                .iter()
                .filter_map(|s| {
                    let (host, path) = s.host_and_path().ok()?;
                    let vendor = vendors::by_service(s.vendor.as_deref().unwrap_or(&s.name));
                    Some(Compiled {
                        name: s.name.as_str().into(),
                        host,
                        path,
                        vendor,
                    })
                })
                .collect(),
            None,
        )
    }

    /// The tool pins, when kept.
    pub fn pins(&self) -> Option<&Arc<pins::Pins>> {
        self.1.as_ref()
    }

    /// Pins tools and judges calls by their pins.
    pub fn with_pins(mut self, pins: Arc<pins::Pins>) -> Servers {
        self.1 = Some(pins);
        self
    }
}

/// An MCP request: which server it goes to.
#[derive(Debug, Clone)]
pub(super) struct McpTarget {
    server: Arc<str>,
    vendor: Option<&'static vendors::Vendor>,
    pins: Option<Arc<pins::Pins>>,
}

/// Whether the request is MCP: to a configured server, or declaring itself.
pub(super) fn find(servers: &Servers, t: &Target<'_>, path: &str) -> Option<McpTarget> {
    let configured = servers.0.iter().find(|s| {
        s.host.eq_ignore_ascii_case(t.host)
            && (s.path.is_empty()
                || path == s.path
                || path
                    .strip_prefix(&*s.path)
                    .is_some_and(|r| r.starts_with('/')))
    });
    if let Some(s) = configured {
        return Some(McpTarget {
            server: s.name.clone(),
            vendor: s.vendor,
            pins: servers.1.clone(),
        });
    }
    let declared = t.headers.contains_key("mcp-method")
        || t.headers.contains_key("mcp-name")
        || (*t.method == Method::POST && t.headers.contains_key("mcp-protocol-version"));
    declared.then(|| McpTarget {
        server: UNKNOWN_SERVER.into(),
        vendor: None,
        pins: None,
    })
}

/// What intent makes of an MCP request, before the tuple is assembled.
pub(super) struct Meaning {
    pub action: Arc<str>,
    pub class: Class,
    pub resource_type: Arc<str>,
    pub resource_id: String,
    pub resource_props: Map<String, Value>,
    /// Added to the tuple's context (`mcp`, and `body` when the vendor read one).
    pub context: Map<String, Value>,
    /// `context.body`, as the vendor's REST path records it.
    body: Map<String, Value>,
    /// `context.tool`: what the pins say of the called tool.
    tool: Option<Value>,
    /// The JSON-RPC id of a single request (not a batch, not a notification).
    pub rpc_id: Option<Value>,
}

/// Reads an MCP request: its message (POST) or what a GET or DELETE does to the session.
pub(super) fn read(
    m: &McpTarget,
    t: &Target<'_>,
    body: BodyPrefix<'_>,
    tenant: Option<&str>,
) -> Result<Meaning, IntentError> {
    let mut ctx = Map::new();
    ctx.insert("server".into(), (*m.server).into());
    for (key, header) in [
        ("session_id", "mcp-session-id"),
        ("protocol_version", "mcp-protocol-version"),
    ] {
        if let Some(v) = message::single(t.headers, header)? {
            ctx.insert(key.into(), v.into());
        }
    }
    let server_resource = |ctx: Map<String, Value>, action: String, class| Meaning {
        action: action.into(),
        class,
        resource_type: "mcp.server".into(),
        resource_id: m.server.to_string(),
        resource_props: Map::new(),
        context: mcp_context(ctx),
        body: Map::new(),
        tool: None,
        rpc_id: None,
    };
    match *t.method {
        // The server's stream (and the older HTTP+SSE transport's event stream).
        Method::GET => {
            return Ok(server_resource(
                ctx,
                format!("mcp.{}.stream", m.server),
                Class::Read,
            ));
        }
        // Ending the session.
        Method::DELETE => {
            return Ok(server_resource(
                ctx,
                format!("mcp.{}.session.end", m.server),
                Class::Read,
            ));
        }
        Method::POST => {}
        _ => {
            return Err(IntentError::Ambiguous(format!(
                "MCP over HTTP uses POST, GET and DELETE, not {}",
                t.method
            )));
        }
    }
    if body.truncated {
        return Err(IntentError::Body(invalid(
            "the MCP message is longer than intent.max_body: it cannot be judged whole; raise intent.max_body",
        )));
    }
    let messages = message::read(body.bytes)?;
    message::check_headers(t.headers, &messages)?;
    // A batch is judged by its most dangerous message; all are listed.
    let judged = messages
        .iter()
        .map(|msg| one(m, msg, tenant))
        .collect::<Result<Vec<Meaning>, IntentError>>()?;
    let batch: Vec<Value> = judged.iter().map(|j| (*j.action).into()).collect();
    // The first of the most dangerous (a batch is never empty: `read` refuses that).
    let mut meaning = judged
        .into_iter()
        .reduce(|worst, next| {
            if next.class.danger() > worst.class.danger() {
                next
            } else {
                worst
            }
        })
        .ok_or_else(|| IntentError::Body(invalid("an empty JSON-RPC batch")))?;
    if batch.len() > 1 {
        ctx.insert("batch".into(), batch.into());
        meaning.rpc_id = None;
    }
    for (k, v) in std::mem::take(&mut meaning.context) {
        ctx.entry(k).or_insert(v);
    }
    meaning.context = mcp_context(ctx);
    if !meaning.body.is_empty() {
        let body = std::mem::take(&mut meaning.body);
        meaning.context.insert("body".into(), Value::Object(body));
    }
    if let Some(tool) = meaning.tool.take() {
        meaning.context.insert("tool".into(), tool);
    }
    Ok(meaning)
}

/// `context.mcp`.
fn mcp_context(ctx: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("mcp".into(), Value::Object(ctx));
    out
}

/// One message's action, class and resource.
fn one(m: &McpTarget, msg: &Message, tenant: Option<&str>) -> Result<Meaning, IntentError> {
    let server = &*m.server;
    let mut ctx = Map::new();
    let mut tool_ctx = None;
    ctx.insert("method".into(), msg.method.as_str().into());
    let dotted = msg.method.replace('/', ".");
    let (action, class, resource_type, resource_id) = match msg.method.as_str() {
        "tools/call" => {
            let tool = msg.name.as_deref().unwrap_or_default();
            ctx.insert("tool".into(), tool.into());
            ctx.insert(
                "arguments".into(),
                Value::Object(context::redact_secrets(&msg.arguments)),
            );
            // What the pins say of the tool: its pinned annotations decide its class, and a
            // change since pinning is for the policy to see.
            let pinned = m.pins.as_ref().map(|p| p.context(tenant, server, tool));
            let class = pinned
                .as_ref()
                .and_then(|p| annotated_class(&p["annotations"]))
                .unwrap_or_else(|| tool_class(tool));
            if let Some(p) = pinned {
                tool_ctx = Some(p);
            }
            (
                format!("mcp.{server}.tools.call.{tool}"),
                class,
                "mcp.tool".to_owned(),
                format!("{server}/{tool}"),
            )
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            let uri = msg.name.clone().unwrap_or_default();
            ctx.insert("uri".into(), uri.as_str().into());
            (
                format!("mcp.{server}.{dotted}"),
                Class::Read,
                "mcp.resource".into(),
                uri,
            )
        }
        "prompts/get" => {
            let name = msg.name.as_deref().unwrap_or_default();
            ctx.insert("prompt".into(), name.into());
            ctx.insert(
                "arguments".into(),
                Value::Object(context::redact_secrets(&msg.arguments)),
            );
            (
                format!("mcp.{server}.prompts.get"),
                Class::Read,
                "mcp.prompt".into(),
                format!("{server}/{name}"),
            )
        }
        method => (
            format!("mcp.{server}.{dotted}"),
            method_class(method),
            "mcp.server".into(),
            server.to_owned(),
        ),
    };
    let mut meaning = Meaning {
        action: action.into(),
        class,
        resource_type: resource_type.into(),
        resource_id,
        resource_props: Map::new(),
        context: ctx,
        body: Map::new(),
        tool: tool_ctx,
        rpc_id: msg.id.clone(),
    };
    // The vendor names the resource its REST API would: one policy for both paths.
    if msg.method == "tools/call" {
        if let Some(read) = m.vendor.and_then(|v| v.mcp_arguments) {
            let r = read(&msg.arguments).map_err(IntentError::Ambiguous)?;
            if let Some((kind, id, props)) = r.resource {
                meaning.resource_type = kind.into();
                meaning.resource_id = id;
                meaning.resource_props = props;
            }
            meaning.body = r.body;
        }
    }
    Ok(meaning)
}

/// A tool's class from its (pinned) annotations: `readOnlyHint` reads, `destructiveHint`
/// deletes; `None` when they say neither.
fn annotated_class(annotations: &Value) -> Option<Class> {
    if annotations["readOnlyHint"] == true {
        Some(Class::Read)
    } else if annotations["destructiveHint"] == true {
        Some(Class::Delete)
    } else {
        None
    }
}

/// Methods that only read or set up the session; anything else is unknown.
fn method_class(method: &str) -> Class {
    const READS: [&str; 11] = [
        "initialize",
        "server/discover",
        "ping",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
        "completion/complete",
        "logging/setLevel",
        "response",
        "tasks/get",
    ];
    if READS.contains(&method) || method.starts_with("notifications/") {
        Class::Read
    } else {
        Class::Unknown
    }
}

/// A tool's class by its name until its listed annotations say more: `get_`, `list_`,
/// `search_`… read; `delete_`, `remove_`… delete; anything else writes.
pub fn tool_class(tool: &str) -> Class {
    const READ: [&str; 9] = [
        "get", "list", "search", "read", "fetch", "query", "describe", "show", "find",
    ];
    const DELETE: [&str; 7] = [
        "delete", "remove", "destroy", "drop", "purge", "revoke", "erase",
    ];
    let first = tool
        .split(['_', '-', '.'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if READ.contains(&first.as_str()) {
        Class::Read
    } else if DELETE.contains(&first.as_str()) {
        Class::Delete
    } else {
        Class::Write
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use serde_json::json;

    use super::McpServer;
    use crate::intent::testing::{intent, tuple_of};
    use crate::intent::{Intent, IntentError, Tuple};

    fn gate() -> Intent {
        intent().with_mcp(&[
            McpServer {
                name: "github".into(),
                url: "https://api.githubcopilot.com/mcp/".into(),
                vendor: None,
            },
            McpServer {
                name: "mail".into(),
                url: "https://mail-mcp.example.com".into(),
                vendor: Some("gmail".into()),
            },
        ])
    }

    fn post(host: &str, path: &str, body: serde_json::Value) -> Result<Tuple, IntentError> {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        tuple_of(&gate(), "POST", host, path, &h, body.to_string().as_bytes())
    }

    fn call(tool: &str, args: serde_json::Value) -> serde_json::Value {
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
               "params": {"name": tool, "arguments": args}})
    }

    #[test]
    fn a_tool_call_is_the_vendors_resource_and_its_arguments() {
        let t = post(
            "api.githubcopilot.com",
            "/mcp",
            call(
                "create_issue",
                json!({"owner": "Acme", "repo": "Web", "title": "x", "github_token": "ghp_x"}),
            ),
        )
        .unwrap();
        assert_eq!(&*t.action, "mcp.github.tools.call.create_issue");
        assert_eq!(t.json["action"]["properties"]["class"], "write");
        assert_eq!(t.json["resource"]["type"], "github.repo");
        // Named as the REST path names it: GitHub matches owner and repo without case.
        assert_eq!(t.json["resource"]["id"], "acme/web");
        let mcp = &t.json["context"]["mcp"];
        assert_eq!(mcp["server"], "github");
        assert_eq!(mcp["tool"], "create_issue");
        assert_eq!(mcp["arguments"]["title"], "x");
        assert_eq!(mcp["arguments"]["github_token"], "[redacted]");
    }

    #[test]
    fn tools_are_classed_by_name_and_other_methods_are_actions() {
        let read = post(
            "api.githubcopilot.com",
            "/mcp/",
            call("list_issues", json!({})),
        )
        .unwrap();
        assert_eq!(read.json["action"]["properties"]["class"], "read");
        assert_eq!(read.json["resource"]["type"], "mcp.tool");
        assert_eq!(read.json["resource"]["id"], "github/list_issues");
        let del = post(
            "api.githubcopilot.com",
            "/mcp",
            call("delete_repository", json!({"owner": "a", "repo": "b"})),
        )
        .unwrap();
        assert_eq!(del.json["action"]["properties"]["class"], "delete");
        let list = post(
            "api.githubcopilot.com",
            "/mcp",
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        )
        .unwrap();
        assert_eq!(&*list.action, "mcp.github.tools.list");
        assert_eq!(list.json["action"]["properties"]["class"], "read");
        let odd = post(
            "api.githubcopilot.com",
            "/mcp",
            json!({"jsonrpc": "2.0", "id": 1, "method": "sampling/createMessage"}),
        )
        .unwrap();
        assert_eq!(odd.json["action"]["properties"]["class"], "unknown");
        let read_res = post("api.githubcopilot.com", "/mcp", json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "repo://acme/web/README.md"}})).unwrap();
        assert_eq!(
            read_res.json["resource"],
            json!({"type": "mcp.resource", "id": "repo://acme/web/README.md", "properties": {}})
        );
    }

    #[test]
    fn a_batch_is_judged_by_its_most_dangerous_message() {
        let batch = json!([
            {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            call("delete_repository", json!({"owner": "acme", "repo": "web"})),
            call("create_issue", json!({"owner": "acme", "repo": "web"})),
        ]);
        let t = post("api.githubcopilot.com", "/mcp", batch).unwrap();
        assert_eq!(&*t.action, "mcp.github.tools.call.delete_repository");
        assert_eq!(
            t.json["context"]["mcp"]["batch"].as_array().unwrap().len(),
            3
        );
    }

    #[test]
    fn mail_recipients_are_read_like_the_rest_path() {
        let t = post(
            "mail-mcp.example.com",
            "/",
            call(
                "send_email",
                json!({"to": ["Bob@Partner.io"], "cc": "eve@acme.com"}),
            ),
        )
        .unwrap();
        let email = &t.json["context"]["body"]["email"];
        assert_eq!(email["domains"], json!(["acme.com", "partner.io"]));
        assert_eq!(email["recipient_count"], 2);
    }

    #[test]
    fn undeclared_and_unconfigured_traffic() {
        // A path outside the server's URL on the same host is not MCP.
        let rest = post(
            "api.githubcopilot.com",
            "/mcpx",
            call("list_issues", json!({})),
        );
        assert!(rest.is_ok_and(|t| !t.action.starts_with("mcp.")));
        // Declared MCP to an unconfigured host: server "unknown".
        let mut h = HeaderMap::new();
        h.insert("mcp-protocol-version", "2025-11-25".parse().unwrap());
        let body = call("list_issues", json!({})).to_string();
        let t = tuple_of(
            &gate(),
            "POST",
            "mcp.evil.example",
            "/x",
            &h,
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(&*t.action, "mcp.unknown.tools.call.list_issues");
        // A header that disagrees with the body is refused.
        h.insert("mcp-method", "tools/list".parse().unwrap());
        let e = tuple_of(
            &gate(),
            "POST",
            "api.githubcopilot.com",
            "/mcp",
            &h,
            body.as_bytes(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("Mcp-Method"), "{e}");
        // A cut-off message cannot be judged whole.
        let routed = gate();
        let method = http::Method::POST;
        let none = HeaderMap::new();
        let r = routed
            .route(crate::intent::Target {
                method: &method,
                host: "api.githubcopilot.com",
                path: "/mcp",
                query: None,
                headers: &none,
            })
            .unwrap();
        let e = r
            .tuple(
                crate::intent::testing::subject(),
                Some(crate::intent::BodyPrefix {
                    bytes: b"{",
                    truncated: true,
                }),
            )
            .unwrap_err();
        assert!(e.to_string().contains("intent.max_body"), "{e}");
    }
}
