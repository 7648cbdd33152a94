//! What the request body says, for the operations whose meaning lives there: the GraphQL
//! document, the Gmail message's recipients, Slack's `channel`. Each extractor is strict:
//! what it cannot read is an error, never a guess; what two parsers could read differently
//! (duplicate keys and parameters, malformed mail headers, odd multipart framing) is refused
//! as ambiguous; and every extractor works in one linear pass under a per-request work
//! budget, so no body shape can make a request expensive.

mod address;
mod gmail;
mod json;
mod mime;
mod slack;

#[cfg(test)]
use gmail::rfc822_in;
pub use gmail::{Email, gmail_json, gmail_upload, gmail_upload_type, rfc822};
#[cfg(test)]
use slack::SLACK_CHANNEL_KEYS;
pub use slack::{SLACK_MAX_CHANNELS, SlackArgs, slack};

use std::collections::{HashMap, HashSet};

use apollo_parser::cst;
use serde_json::{Map, Value, json};

use super::catalog::{Class, GraphqlSchema};

/// Why a body could not be read; becomes the intent gate's refusal reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body does not parse as what the API expects.
    #[error("{0}")]
    Invalid(String),
    /// The body parses, but another reader could take it to mean something else.
    #[error("{0}")]
    Ambiguous(String),
    /// The body needs more work to read than one request may cost.
    #[error("{0}")]
    TooComplex(String),
    /// A Slack `token` argument: credentials are AgentGate's job, never the agent's.
    #[error(
        "the request carries a Slack token argument ({0}); AgentGate injects credentials, remove the token"
    )]
    SlackToken(&'static str),
}

fn invalid(reason: impl Into<String>) -> BodyError {
    BodyError::Invalid(reason.into())
}

fn ambiguous(reason: impl Into<String>) -> BodyError {
    BodyError::Ambiguous(reason.into())
}

/// A piece of the request for a reason: quoted, and cut short when long.
/// The value of query parameter `name` when the query gives it once, spelt exactly;
/// `Ok(None)` when absent. Refused when given twice, or under a name that differs only in
/// case, separators (`_ - .`), spaces or a `$` prefix: which one a vendor's front end reads
/// is not documented.
pub fn query_once(query: Option<&str>, name: &str) -> Result<Option<String>, BodyError> {
    let loose = |k: &str| -> String {
        k.chars()
            .filter(|c| {
                !matches!(c, '_' | '-' | '.' | '$') && !c.is_whitespace() && !c.is_control()
            })
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let wanted = loose(name);
    let mut found = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if loose(&k) != wanted {
            continue;
        }
        if k != name {
            return Err(ambiguous(format!(
                "the query names {name} as {}; send it exactly as {name}",
                shown(&k)
            )));
        }
        if found.is_some() {
            return Err(ambiguous(format!(
                "the query gives {name} more than once; send it once"
            )));
        }
        found = Some(v.into_owned());
    }
    Ok(found)
}

fn shown(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// Units of work (form pairs, JSON keys, header lines, addresses, multipart parts, GraphQL
/// selections) one request's body may cost. Every extractor is linear in its input, and
/// this caps the constant: a legitimate request needs a few hundred at most.
pub const WORK_BUDGET: usize = 100_000;

/// The work left for one request's body.
#[derive(Debug)]
pub struct Budget {
    left: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { left: WORK_BUDGET }
    }
}

impl Budget {
    /// Work spent so far.
    pub fn spent(&self) -> usize {
        WORK_BUDGET - self.left
    }

    fn spend(&mut self, n: usize, what: &str) -> Result<(), BodyError> {
        self.left = self.left.checked_sub(n).ok_or_else(|| {
            BodyError::TooComplex(format!(
                "the request body is too complex to inspect (more than {WORK_BUDGET} {what} and other items); split it into smaller requests"
            ))
        })?;
        Ok(())
    }
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
    let request = json::parse(body, "the GraphQL request body")?;
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
    let mut fragments = HashMap::new();
    for def in doc.definitions() {
        if let cst::Definition::FragmentDefinition(f) = def {
            if let Some(name) = f.fragment_name().and_then(|n| n.name()) {
                let name = name.text().to_string();
                // Servers refuse a document defining a fragment twice; which one a lenient
                // reader would use is anyone's guess.
                if fragments.contains_key(&name) {
                    return Err(ambiguous(format!(
                        "GraphQL fragment {name} is defined twice"
                    )));
                }
                fragments.insert(name, f);
            }
        }
    }
    let mut summary = GraphqlSummary {
        operations: Vec::new(),
        fields: Vec::new(),
    };
    let mut budget = Budget::default();
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
                let mut walk = Walk {
                    kind,
                    roots: schema.fields.get(kind),
                    fragments: &fragments,
                    seen: HashSet::new(),
                    out: &mut summary.fields,
                    budget: &mut budget,
                };
                if let Some(set) = op.selection_set() {
                    walk.top_fields(&set, 0)?;
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

/// One operation's walk over its top-level selections, through fragments. Each fragment is
/// expanded once per operation (`seen`), the nesting of fragments and inline fragments is
/// bounded like the parser's own recursion, and every selection visited costs budget, so a
/// document of many operations spreading one large fragment cannot multiply the work.
struct Walk<'w, 'd> {
    kind: &'static str,
    roots: Option<&'w HashMap<String, Class>>,
    fragments: &'w HashMap<String, cst::FragmentDefinition>,
    seen: HashSet<String>,
    out: &'w mut Vec<GraphqlField>,
    budget: &'d mut Budget,
}

impl Walk<'_, '_> {
    fn top_fields(&mut self, set: &cst::SelectionSet, depth: usize) -> Result<(), BodyError> {
        if depth > GRAPHQL_RECURSION_LIMIT {
            return Err(BodyError::TooComplex(format!(
                "GraphQL fragments nest more than {GRAPHQL_RECURSION_LIMIT} deep"
            )));
        }
        for selection in set.selections() {
            self.budget.spend(1, "GraphQL selections")?;
            match selection {
                cst::Selection::Field(f) => {
                    let Some(name) = f.name() else { continue };
                    let name = name.text().to_string();
                    let class = if name == "__typename" {
                        Class::Read
                    } else {
                        self.roots
                            .and_then(|r| r.get(&name))
                            .copied()
                            .unwrap_or(Class::Unknown)
                    };
                    self.out.push(GraphqlField {
                        operation: self.kind,
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
                        self.top_fields(&inner, depth + 1)?;
                    }
                }
                cst::Selection::FragmentSpread(spread) => {
                    let Some(name) = spread.fragment_name().and_then(|n| n.name()) else {
                        continue;
                    };
                    let name = name.text().to_string();
                    let fragments = self.fragments;
                    let fragment = fragments.get(&name).ok_or_else(|| {
                        invalid(format!("GraphQL fragment {name} is not defined"))
                    })?;
                    // A fragment spread twice selects the same fields; a cycle is invalid
                    // GraphQL.
                    if !self.seen.insert(name) {
                        continue;
                    }
                    if let Some(inner) = fragment.selection_set() {
                        self.top_fields(&inner, depth + 1)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
