//! GraphQL over HTTP: every operation of the document and every top-level field, each
//! classified by the service's schema. A protocol, not a vendor: any service whose catalog
//! has a GraphQL file is read this way.

use std::collections::{HashMap, HashSet};

use apollo_parser::cst;
use serde_json::{Map, Value, json};

use super::budget::Budget;
use super::error::{BodyError, ambiguous, invalid};
use super::json;
use crate::intent::class::Class;

/// The root fields of a GraphQL schema, classified.
#[derive(Debug, Default)]
pub struct GraphqlSchema {
    /// Where the endpoint is (`/graphql`).
    pub path: String,
    /// Root field name → class, by operation type (`query`, `mutation`, `subscription`).
    pub fields: HashMap<String, HashMap<String, Class>>,
}

/// Most operations and fields listed in `context`; the action still weighs all of them.
const GRAPHQL_LIST_MAX: usize = 100;
const GRAPHQL_RECURSION_LIMIT: usize = 64;
const GRAPHQL_TOKEN_LIMIT: usize = 50_000;

/// One top-level field of a GraphQL document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphqlField {
    /// `query`, `mutation` or `subscription`.
    pub operation: &'static str,
    /// The field's name in the schema.
    pub field: String,
    /// The name the document gives its result, if any.
    pub alias: Option<String>,
    /// What the schema says the field does.
    pub class: Class,
}

/// What a GraphQL document does: every operation and every top-level field.
#[derive(Debug, Clone)]
pub struct GraphqlSummary {
    /// Each operation's type and name, in document order.
    pub operations: Vec<(&'static str, Option<String>)>,
    /// Each top-level field of each operation, through fragments.
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
