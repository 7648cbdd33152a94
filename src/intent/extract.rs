//! What the request body says, for the operations whose meaning lives there: the GraphQL
//! document, the Gmail message's recipients, Slack's `channel`. Each extractor is strict:
//! what it cannot read is an error, never a guess.

use std::collections::HashSet;

use apollo_parser::cst;
use base64::Engine as _;
use mail_parser::MimeHeaders;
use serde_json::{Map, Value, json};

use super::catalog::{Class, GraphqlSchema};

/// Why a body could not be read; becomes the intent gate's refusal reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body does not parse as what the API expects.
    #[error("{0}")]
    Invalid(String),
    /// A Slack `token` argument: credentials are AgentGate's job, never the agent's.
    #[error(
        "the request carries a Slack token argument ({0}); AgentGate injects credentials, remove the token"
    )]
    SlackToken(&'static str),
}

fn invalid(reason: impl Into<String>) -> BodyError {
    BodyError::Invalid(reason.into())
}

// ---------------------------------------------------------------------------------------
// GraphQL

/// Most operations and fields listed in `context`; the action still weighs all of them.
const GRAPHQL_LIST_MAX: usize = 100;
const GRAPHQL_RECURSION_LIMIT: usize = 64;
const GRAPHQL_TOKEN_LIMIT: usize = 50_000;

/// One top-level field of a GraphQL document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphqlField {
    pub operation: &'static str,
    pub field: String,
    pub alias: Option<String>,
    pub class: Class,
}

/// What a GraphQL document does: every operation and every top-level field.
#[derive(Debug, Clone)]
pub struct GraphqlSummary {
    pub operations: Vec<(&'static str, Option<String>)>,
    pub fields: Vec<GraphqlField>,
}

impl GraphqlSummary {
    /// The field that decides the action: the most dangerous one, first on ties.
    pub fn decisive(&self) -> Option<&GraphqlField> {
        self.fields
            .iter()
            .rev()
            .max_by_key(|f| f.class.danger())
            .map(|f| f as _)
    }

    /// `context.body.graphql`.
    pub fn to_json(&self) -> Value {
        let ops: Vec<Value> = self
            .operations
            .iter()
            .take(GRAPHQL_LIST_MAX)
            .map(|(t, n)| json!({"type": t, "name": n}))
            .collect();
        let fields: Vec<Value> = self
            .fields
            .iter()
            .take(GRAPHQL_LIST_MAX)
            .map(|f| {
                json!({"operation": f.operation, "field": f.field, "alias": f.alias, "class": f.class.as_str()})
            })
            .collect();
        let mut m = Map::new();
        m.insert("operations".into(), ops.into());
        m.insert("fields".into(), fields.into());
        m.insert("field_count".into(), self.fields.len().into());
        if self.fields.len() > GRAPHQL_LIST_MAX || self.operations.len() > GRAPHQL_LIST_MAX {
            m.insert("list_truncated".into(), true.into());
        }
        Value::Object(m)
    }
}

/// Reads a GraphQL-over-HTTP JSON body and classifies every top-level field of every
/// operation in the document (not only `operationName`'s: a document that hides a mutation
/// beside a query is judged by the mutation).
pub fn graphql(body: &[u8], schema: &GraphqlSchema) -> Result<GraphqlSummary, BodyError> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("GraphQL request body is not valid JSON: {e}")))?;
    let query = match &request {
        Value::Object(o) => o.get("query"),
        Value::Array(_) => return Err(invalid("batched GraphQL requests are not supported")),
        _ => None,
    };
    let Some(Value::String(query)) = query else {
        return Err(invalid("GraphQL request body has no \"query\" string"));
    };
    let tree = apollo_parser::Parser::new(query)
        .recursion_limit(GRAPHQL_RECURSION_LIMIT)
        .token_limit(GRAPHQL_TOKEN_LIMIT)
        .parse();
    if let Some(e) = tree.errors().next() {
        return Err(invalid(format!(
            "GraphQL document does not parse: {}",
            e.message()
        )));
    }
    let doc = tree.document();
    let mut fragments = std::collections::HashMap::new();
    for def in doc.definitions() {
        if let cst::Definition::FragmentDefinition(f) = def {
            if let Some(name) = f.fragment_name().and_then(|n| n.name()) {
                fragments.insert(name.text().to_string(), f);
            }
        }
    }
    let mut summary = GraphqlSummary {
        operations: Vec::new(),
        fields: Vec::new(),
    };
    for def in doc.definitions() {
        match def {
            cst::Definition::OperationDefinition(op) => {
                let kind = match op.operation_type() {
                    None => "query",
                    Some(t) if t.mutation_token().is_some() => "mutation",
                    Some(t) if t.subscription_token().is_some() => "subscription",
                    Some(_) => "query",
                };
                summary
                    .operations
                    .push((kind, op.name().map(|n| n.text().to_string())));
                let roots = schema.fields.get(kind);
                let mut seen = HashSet::new();
                if let Some(set) = op.selection_set() {
                    top_fields(
                        &set,
                        kind,
                        roots,
                        &fragments,
                        &mut seen,
                        &mut summary.fields,
                    )?;
                }
            }
            cst::Definition::FragmentDefinition(_) => {}
            other => {
                return Err(invalid(format!(
                    "GraphQL request contains a {} definition",
                    other.kind()
                )));
            }
        }
    }
    if summary.fields.is_empty() {
        return Err(invalid("GraphQL document selects no field"));
    }
    Ok(summary)
}

fn top_fields(
    set: &cst::SelectionSet,
    kind: &'static str,
    roots: Option<&std::collections::HashMap<String, Class>>,
    fragments: &std::collections::HashMap<String, cst::FragmentDefinition>,
    seen: &mut HashSet<String>,
    out: &mut Vec<GraphqlField>,
) -> Result<(), BodyError> {
    for selection in set.selections() {
        match selection {
            cst::Selection::Field(f) => {
                let Some(name) = f.name() else { continue };
                let name = name.text().to_string();
                let class = if name == "__typename" {
                    Class::Read
                } else {
                    roots
                        .and_then(|r| r.get(&name))
                        .copied()
                        .unwrap_or(Class::Unknown)
                };
                out.push(GraphqlField {
                    operation: kind,
                    field: name,
                    alias: f
                        .alias()
                        .and_then(|a| a.name())
                        .map(|n| n.text().to_string()),
                    class,
                });
            }
            cst::Selection::InlineFragment(inline) => {
                if let Some(inner) = inline.selection_set() {
                    top_fields(&inner, kind, roots, fragments, seen, out)?;
                }
            }
            cst::Selection::FragmentSpread(spread) => {
                let Some(name) = spread.fragment_name().and_then(|n| n.name()) else {
                    continue;
                };
                let name = name.text().to_string();
                let fragment = fragments
                    .get(&name)
                    .ok_or_else(|| invalid(format!("GraphQL fragment {name} is not defined")))?;
                // A fragment spread twice selects the same fields; a cycle is invalid GraphQL.
                if !seen.insert(name) {
                    continue;
                }
                if let Some(inner) = fragment.selection_set() {
                    top_fields(&inner, kind, roots, fragments, seen, out)?;
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Gmail

/// Recipients and attachments of an outgoing message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Email {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    /// `None` when the body was cut off before the end of the message.
    pub attachments: Option<usize>,
}

impl Email {
    /// `context.body.email`.
    pub fn to_json(&self) -> Value {
        let mut all: Vec<&String> = self.to.iter().chain(&self.cc).chain(&self.bcc).collect();
        all.sort();
        all.dedup();
        let mut domains: Vec<&str> = all
            .iter()
            .filter_map(|a| a.rsplit_once('@').map(|(_, d)| d))
            .collect();
        domains.sort_unstable();
        domains.dedup();
        json!({
            "to": self.to, "cc": self.cc, "bcc": self.bcc,
            "recipients": all, "domains": domains,
            "recipient_count": all.len(),
            "attachment_count": self.attachments,
        })
    }
}

/// Gmail's JSON forms: `{"raw": …}` (messages) or `{"message": {"raw": …}}` (drafts).
/// A cut-off body is scanned for the `raw` string's start, which holds the headers.
/// `None` for a body that names a stored draft by `id` and carries no message
/// (`drafts.send`): its recipients are not in the request.
pub fn gmail_json(body: &[u8], truncated: bool) -> Result<Option<Email>, BodyError> {
    let raw = if truncated {
        truncated_raw(body).ok_or_else(|| {
            invalid("Gmail request body is too large to inspect and its \"raw\" message was not found at its start")
        })?
    } else {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("Gmail request body is not valid JSON: {e}")))?;
        let raw = v
            .get("raw")
            .or_else(|| v.get("message").and_then(|m| m.get("raw")));
        match raw {
            Some(Value::String(s)) => s.as_bytes().to_vec(),
            None if v.get("id").is_some_and(Value::is_string) => return Ok(None),
            _ => return Err(invalid("Gmail request body has no \"raw\" message")),
        }
    };
    let message = decode_base64url(&raw, truncated)?;
    rfc822(&message, truncated).map(Some)
}

/// Reads an RFC 5322 message's recipients (every To/Cc/Bcc header, not only the first).
pub fn rfc822(message: &[u8], truncated: bool) -> Result<Email, BodyError> {
    use mail_parser::{HeaderName, HeaderValue};
    let parsed = mail_parser::MessageParser::default()
        .parse(message)
        .ok_or_else(|| invalid("the e-mail message does not parse"))?;
    let mut email = Email {
        attachments: (!truncated).then(|| parsed.attachment_count()),
        ..Email::default()
    };
    for header in parsed.headers() {
        let list = match header.name {
            HeaderName::To => &mut email.to,
            HeaderName::Cc => &mut email.cc,
            HeaderName::Bcc => &mut email.bcc,
            _ => continue,
        };
        match &header.value {
            HeaderValue::Address(addresses) => {
                for addr in addresses.iter() {
                    let a = addr.address().filter(|a| a.contains('@')).ok_or_else(|| {
                        invalid(format!(
                            "unreadable address in the {} header",
                            header.name.as_str()
                        ))
                    })?;
                    list.push(a.trim().to_ascii_lowercase());
                }
            }
            HeaderValue::Empty => {}
            _ => {
                return Err(invalid(format!(
                    "unreadable {} header",
                    header.name.as_str()
                )));
            }
        }
    }
    if email.to.is_empty() && email.cc.is_empty() && email.bcc.is_empty() && truncated {
        return Err(invalid(
            "the e-mail message is too large to inspect and no recipient was found in its first part",
        ));
    }
    Ok(email)
}

/// A Gmail media upload: the message itself, or multipart/related whose second part is it.
pub fn gmail_upload(
    content_type: Option<&str>,
    upload_type: Option<&str>,
    body: &[u8],
    truncated: bool,
) -> Result<Email, BodyError> {
    match upload_type {
        Some("media") => rfc822(body, truncated),
        Some("multipart") => {
            let ct =
                content_type.ok_or_else(|| invalid("multipart upload without Content-Type"))?;
            let mut wrapped = format!("Content-Type: {ct}\r\n\r\n").into_bytes();
            wrapped.extend_from_slice(body);
            let parsed = mail_parser::MessageParser::default()
                .parse(&wrapped)
                .ok_or_else(|| invalid("multipart upload does not parse"))?;
            // Part 0 is the container, part 1 the JSON metadata, part 2 the message.
            let part = parsed
                .parts
                .get(2)
                .ok_or_else(|| invalid("multipart upload has no message part"))?;
            rfc822(part.contents(), truncated)
        }
        Some("resumable") => Err(invalid(
            "resumable Gmail uploads cannot be inspected; send the message with uploadType=media or multipart, or as JSON \"raw\"",
        )),
        _ => Err(invalid("Gmail upload needs uploadType=media or multipart")),
    }
}

fn decode_base64url(raw: &[u8], truncated: bool) -> Result<Vec<u8>, BodyError> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let url = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    let std = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    // A cut-off value decodes up to its last whole quantum.
    let raw = if truncated {
        &raw[..raw.len() - raw.len() % 4]
    } else {
        raw
    };
    url.decode(raw)
        .or_else(|_| std.decode(raw))
        .map_err(|_| invalid("Gmail \"raw\" is not base64url"))
}

/// In a JSON prefix, the characters of the first `"raw"` string value (top level or under
/// `message`), up to its end or the end of the prefix. A tiny tokenizer, not a search, so a
/// `"raw"` inside another string does not count.
fn truncated_raw(body: &[u8]) -> Option<Vec<u8>> {
    let mut i = 0;
    let mut depth = 0usize;
    let skip_ws = |i: &mut usize| {
        while *i < body.len() && body[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    while i < body.len() {
        match body[i] {
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < body.len() && body[j] != b'"' {
                    j += if body[j] == b'\\' { 2 } else { 1 };
                }
                let end = j.min(body.len());
                i = end + 1;
                let mut k = i;
                skip_ws(&mut k);
                if k < body.len() && body[k] == b':' {
                    i = k + 1;
                    let key = &body[start..end];
                    if key == b"raw" && depth <= 2 {
                        let mut v = i;
                        skip_ws(&mut v);
                        if v < body.len() && body[v] == b'"' {
                            let s = v + 1;
                            let e = body[s..]
                                .iter()
                                .position(|&c| c == b'"')
                                .map_or(body.len(), |p| s + p);
                            return Some(body[s..e].to_vec());
                        }
                    }
                }
            }
            _ => i += 1,
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Slack

/// Slack arguments that matter for intent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlackArgs {
    /// Channels named by `channel`, `channel_id` or `channels` (comma-separated).
    pub channels: Vec<String>,
}

const SLACK_CHANNEL_KEYS: [&str; 3] = ["channel", "channel_id", "channels"];

/// Reads Slack Web API arguments from the query and the body (form, JSON or multipart).
pub fn slack(
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<SlackArgs, BodyError> {
    let mut args = SlackArgs::default();
    if let Some(q) = query {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            slack_arg(&mut args, &k, Some(&v), "query")?;
        }
    }
    if !body.is_empty() {
        let mime = content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        match mime.as_str() {
            "application/x-www-form-urlencoded" | "" => {
                for (k, v) in form_urlencoded::parse(body) {
                    slack_arg(&mut args, &k, Some(&v), "body")?;
                }
            }
            "application/json" => {
                let v: Value = serde_json::from_slice(body)
                    .map_err(|e| invalid(format!("Slack request body is not valid JSON: {e}")))?;
                let Value::Object(o) = v else {
                    return Err(invalid("Slack JSON body must be an object"));
                };
                for (k, v) in &o {
                    let text = match v {
                        Value::String(s) => Some(s.as_str()),
                        _ => None,
                    };
                    if text.is_none() && SLACK_CHANNEL_KEYS.contains(&k.as_str()) {
                        return Err(invalid(format!("Slack argument {k} must be a string")));
                    }
                    slack_arg(&mut args, k, text, "body")?;
                }
            }
            "multipart/form-data" => {
                let ct = content_type.unwrap_or_default();
                let mut wrapped = format!("Content-Type: {ct}\r\n\r\n").into_bytes();
                wrapped.extend_from_slice(body);
                let parsed = mail_parser::MessageParser::default()
                    .parse(&wrapped)
                    .ok_or_else(|| invalid("Slack multipart body does not parse"))?;
                for part in parsed.parts.iter().skip(1) {
                    let name = part
                        .content_disposition()
                        .and_then(|d| d.attribute("name"))
                        .unwrap_or("");
                    let value = std::str::from_utf8(part.contents()).ok();
                    slack_arg(&mut args, name, value, "body")?;
                }
            }
            other => {
                return Err(invalid(format!(
                    "Slack request body has an unsupported Content-Type {other}; use JSON or form encoding"
                )));
            }
        }
    }
    Ok(args)
}

fn slack_arg(
    args: &mut SlackArgs,
    key: &str,
    value: Option<&str>,
    place: &'static str,
) -> Result<(), BodyError> {
    if key.eq_ignore_ascii_case("token") {
        return Err(BodyError::SlackToken(place));
    }
    if !SLACK_CHANNEL_KEYS.contains(&key) {
        return Ok(());
    }
    for channel in value.unwrap_or("").split(',') {
        let channel = channel.trim();
        if !channel.is_empty() && !args.channels.iter().any(|c| c == channel) {
            args.channels.push(channel.to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "extract_tests.rs"]
mod tests;
