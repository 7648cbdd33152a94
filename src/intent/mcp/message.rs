//! One MCP message as sent over HTTP: a JSON-RPC 2.0 request, notification or response (or a
//! batch of them), read the way no two parsers disagree on, and checked against the
//! `Mcp-Method`/`Mcp-Name` headers that mirror it.

use http::HeaderMap;
use serde_json::{Map, Value};

use crate::intent::extract::error::{BodyError, ambiguous, invalid, shown};
use crate::intent::extract::json;

/// Most messages in one JSON-RPC batch.
pub(crate) const MAX_BATCH: usize = 100;
/// Longest method, tool or prompt name taken (MCP tool names are at most 128 characters).
const MAX_NAME: usize = 128;

/// One JSON-RPC message of an MCP POST.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Message {
    /// The JSON-RPC method (`tools/call`), or `response` for a client's answer to a server
    /// request (sampling, elicitation).
    pub method: String,
    /// `params.name` (tool, prompt) or `params.uri` (resource), where the method has one.
    pub name: Option<String>,
    /// `params.arguments` of a call (an object), else empty.
    pub arguments: Map<String, Value>,
    /// Whether it expects an answer (has an `id`).
    pub request: bool,
    /// Its JSON-RPC `id`, for a request (a refusal answers it as a JSON-RPC error).
    pub id: Option<Value>,
}

/// Reads an MCP POST body: one message, or a batch of at most [`MAX_BATCH`].
pub(crate) fn read(body: &[u8]) -> Result<Vec<Message>, BodyError> {
    match json::parse(body, "the MCP message")? {
        Value::Array(items) => {
            if items.is_empty() || items.len() > MAX_BATCH {
                return Err(invalid(format!(
                    "a JSON-RPC batch must hold 1 to {MAX_BATCH} messages, this one holds {}",
                    items.len()
                )));
            }
            items.iter().map(message).collect()
        }
        v @ Value::Object(_) => Ok(vec![message(&v)?]),
        _ => Err(invalid(
            "an MCP message must be a JSON-RPC 2.0 object (or a batch of them)",
        )),
    }
}

fn message(v: &Value) -> Result<Message, BodyError> {
    let Value::Object(o) = v else {
        return Err(invalid(
            "every message of a JSON-RPC batch must be an object",
        ));
    };
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(r#"an MCP message must say "jsonrpc": "2.0""#));
    }
    let request = o.get("id").is_some_and(|id| !id.is_null());
    let Some(method) = o.get("method") else {
        // A response: the client answering the server (sampling, elicitation, roots).
        if !o.contains_key("result") && !o.contains_key("error") {
            return Err(invalid(
                "a JSON-RPC message needs a method (a request) or a result or error (a response)",
            ));
        }
        if o.contains_key("params") {
            return Err(ambiguous("a JSON-RPC response cannot carry params"));
        }
        return Ok(Message {
            method: "response".into(),
            name: None,
            arguments: Map::new(),
            request: false,
            id: None,
        });
    };
    let Some(method) = method.as_str().filter(|m| valid_method(m)) else {
        return Err(invalid(format!(
            "the JSON-RPC method must be a name of letters, digits and _-./ (at most {MAX_NAME}), not {}",
            shown(&method.to_string())
        )));
    };
    if o.contains_key("result") || o.contains_key("error") {
        return Err(ambiguous(
            "a JSON-RPC message is a request or a response, not both",
        ));
    }
    let params = match o.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return Err(invalid("MCP params must be an object")),
    };
    let name = match method {
        "tools/call" | "prompts/get" => Some(required_name(&params, "name", method)?),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            Some(required(&params, "uri", method)?)
        }
        _ => None,
    };
    if let Some(n) = name.as_deref().filter(|_| method != "resources/read") {
        if method == "tools/call" && !valid_tool(n) {
            return Err(invalid(format!(
                "tool name {} is not an MCP tool name (1-{MAX_NAME} letters, digits and _-.)",
                shown(n)
            )));
        }
    }
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => return Err(invalid("params.arguments must be an object")),
    };
    Ok(Message {
        method: method.to_owned(),
        name,
        arguments,
        request,
        id: o
            .get("id")
            .filter(|id| id.is_string() || id.is_number())
            .cloned(),
    })
}

fn required(params: &Map<String, Value>, key: &str, method: &str) -> Result<String, BodyError> {
    match params.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(invalid(format!(
            "{method} needs params.{key} as a non-empty string"
        ))),
    }
}

fn required_name(
    params: &Map<String, Value>,
    key: &str,
    method: &str,
) -> Result<String, BodyError> {
    let n = required(params, key, method)?;
    if n.len() > MAX_NAME || n.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{method}'s params.{key} must be at most {MAX_NAME} characters without control characters"
        )));
    }
    Ok(n)
}

fn valid_method(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= MAX_NAME
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b))
}

fn valid_tool(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_NAME
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// Checks `Mcp-Method` and `Mcp-Name` (each at most once) against the body they mirror: a
/// header that disagrees is refused, since a router reading the header and a server
/// reading the body would act on different things.
pub(crate) fn check_headers(headers: &HeaderMap, messages: &[Message]) -> Result<(), BodyError> {
    let method = single(headers, "mcp-method")?;
    let name = single(headers, "mcp-name")?;
    if method.is_none() && name.is_none() {
        return Ok(());
    }
    let [m] = messages else {
        return Err(ambiguous(
            "Mcp-Method and Mcp-Name describe one message, and this body is a batch; send them without the headers",
        ));
    };
    if let Some(h) = method {
        if h != m.method {
            return Err(ambiguous(format!(
                "Mcp-Method says {} and the body's method is {}; send headers that match the body",
                shown(h),
                shown(&m.method)
            )));
        }
    }
    if let Some(h) = name {
        if m.name.as_deref() != Some(h) {
            return Err(ambiguous(format!(
                "Mcp-Name says {} and the body names {}; send headers that match the body",
                shown(h),
                m.name.as_deref().map_or("nothing".into(), shown)
            )));
        }
    }
    Ok(())
}

/// A header's one value; twice is refused.
pub(crate) fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, BodyError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ambiguous(format!(
            "the request has more than one {name} header; send one"
        )));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| invalid(format!("the {name} header is not visible ASCII")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> Result<Message, BodyError> {
        read(body.as_bytes()).map(|mut m| m.remove(0))
    }

    #[test]
    fn a_tool_call_names_its_tool_and_arguments() {
        let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_issue","arguments":{"owner":"acme","repo":"web"}}}"#).unwrap();
        assert_eq!(m.method, "tools/call");
        assert_eq!(m.name.as_deref(), Some("create_issue"));
        assert_eq!(m.arguments["repo"], "web");
        assert!(m.request);
    }

    #[test]
    fn bad_messages_are_refused() {
        for (body, says) in [
            (r#"{"id":1,"method":"tools/list"}"#, "jsonrpc"),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#,
                "jsonrpc",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
                "params.name",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a b"}}"#,
                "tool name",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1]}"#,
                "params must be an object",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[]}}"#,
                "arguments",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","result":{}}"#,
                "not both",
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, "needs a method"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#,
                "twice",
            ),
            (r#"[]"#, "batch"),
            (r#""tools/list""#, "JSON-RPC 2.0 object"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":""}}"#,
                "params.uri",
            ),
        ] {
            let e = read(body.as_bytes()).expect_err(body).to_string();
            assert!(e.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn headers_must_mirror_the_body() {
        let call = read(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repository"}}"#).unwrap();
        let mut h = HeaderMap::new();
        h.insert("mcp-method", "tools/call".parse().unwrap());
        h.insert("mcp-name", "delete_repository".parse().unwrap());
        check_headers(&h, &call).unwrap();
        h.insert("mcp-method", "tools/list".parse().unwrap());
        assert!(
            check_headers(&h, &call)
                .unwrap_err()
                .to_string()
                .contains("Mcp-Method")
        );
        h.insert("mcp-method", "tools/call".parse().unwrap());
        h.insert("mcp-name", "list_issues".parse().unwrap());
        assert!(
            check_headers(&h, &call)
                .unwrap_err()
                .to_string()
                .contains("Mcp-Name")
        );
        h.remove("mcp-name");
        h.append("mcp-method", "tools/call".parse().unwrap());
        assert!(
            check_headers(&h, &call)
                .unwrap_err()
                .to_string()
                .contains("more than one")
        );
        let batch = read(br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#).unwrap();
        assert_eq!(batch.len(), 2);
        let mut h = HeaderMap::new();
        h.insert("mcp-method", "tools/list".parse().unwrap());
        assert!(
            check_headers(&h, &batch)
                .unwrap_err()
                .to_string()
                .contains("batch")
        );
    }
}
