//! `agentgate policy draft`: a policy from sentences of a controlled English.
//!
//! [`compile`] reads each sentence with a small grammar (`draft/grammar.rs`; the README's
//! "Drafting a policy in plain English" lists its forms), and writes a complete Rego policy
//! for `data.agentgate.decision` — deny beats escalate beats allow, anything no sentence
//! allows is denied — and a `policy test` table with, for each sentence, a request it
//! decides and, where it has one, a request just outside it. [`check`] compiles the policy
//! and runs the table with the real intent gate. A sentence outside the grammar is an
//! error that names it and what was expected where reading stopped; nothing is guessed.

mod cases;
mod cond;
mod error;
mod grammar;
mod ir;
mod rego;
mod vocab;
mod witness;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use serde_json::Value;

use super::config::{ENTRYPOINT, PolicyConfig};
use super::error::PolicyError;
use super::runner::{self, CaseResult};
use super::sources::Sources;
use crate::intent::Intent;

pub use error::{CheckError, DraftError, Location, SentenceError};
use ir::{Parsed, Reach, Rule};

/// One sentence to draft from, and where it came from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The sentence as written.
    pub text: String,
    /// Its argument or line number, for errors.
    pub location: Location,
}

impl Source {
    /// Sentences given one per argument.
    pub fn from_args(args: &[String]) -> Vec<Source> {
        args.iter()
            .enumerate()
            .map(|(i, t)| Source {
                text: t.clone(),
                location: Location::Sentence(i + 1),
            })
            .collect()
    }

    /// A rules file: one sentence per line; blank lines and `#` comments are skipped.
    pub fn from_file(text: &str) -> Vec<Source> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|(i, l)| Source {
                text: l.to_owned(),
                location: Location::Line(i + 1),
            })
            .collect()
    }
}

/// Who wrote a draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The grammar, from sentences it understood.
    Grammar,
    /// A model behind `[policy.assistant]`.
    Model {
        /// `[policy.assistant] model`.
        model: String,
        /// `[policy.assistant] url`.
        url: String,
    },
}

/// A drafted policy and its tests, not yet checked.
#[derive(Debug, Clone)]
pub struct Draft {
    /// `policy.rego`.
    pub rego: String,
    /// `policy_test.yaml`.
    pub tests: String,
    /// The grammar, or a model.
    pub origin: Origin,
    /// The sentences, numbered as the reasons name them.
    pub sentences: Vec<String>,
    /// Sentences that never decide their own example (another decides it first), and
    /// budgets on requests nothing allows.
    pub warnings: Vec<String>,
    cases: Vec<cases::Case>,
}

impl Draft {
    /// A draft written elsewhere (a model's, once checked).
    pub(in crate::policy) fn drafted_by(
        rego: String,
        tests: String,
        origin: Origin,
        sentences: Vec<String>,
    ) -> Draft {
        Draft {
            rego,
            tests,
            origin,
            sentences,
            warnings: Vec::new(),
            cases: Vec::new(),
        }
    }

    /// The table's cases without their `reason:` (to hold another policy to the same
    /// effects).
    pub fn effect_cases(&self) -> Vec<Value> {
        self.cases.iter().map(|c| c.json(false)).collect()
    }
}

/// What the grammar made of a set of sentences: a draft of those it read, and the others.
#[derive(Debug)]
pub struct Understood {
    /// The draft of the sentences the grammar read (none if it read none).
    pub draft: Option<Draft>,
    /// The sentences it could not read.
    pub errors: Vec<SentenceError>,
}

/// Drafts a policy from sentences (with the embedded service catalog).
pub fn compile(sentences: &[String]) -> Result<Draft, DraftError> {
    let intent = Intent::embedded(1 << 20).map_err(|e| DraftError::Catalog(e.to_string()))?;
    compile_sources(&Source::from_args(sentences), &intent)
}

/// Drafts a policy from a rules file's text (errors name line numbers).
pub fn compile_file(text: &str) -> Result<Draft, DraftError> {
    let intent = Intent::embedded(1 << 20).map_err(|e| DraftError::Catalog(e.to_string()))?;
    compile_sources(&Source::from_file(text), &intent)
}

/// Drafts a policy; any sentence the grammar cannot read is an error.
pub fn compile_sources(sources: &[Source], intent: &Intent) -> Result<Draft, DraftError> {
    let understood = understand(sources, intent)?;
    if !understood.errors.is_empty() {
        return Err(DraftError::Unparsed(understood.errors));
    }
    understood.draft.ok_or(DraftError::Empty)
}

/// Drafts a policy from the sentences the grammar reads, and lists those it cannot.
pub fn understand(sources: &[Source], intent: &Intent) -> Result<Understood, DraftError> {
    if sources.is_empty() {
        return Err(DraftError::Empty);
    }
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let text = source.text.split_whitespace().collect::<Vec<_>>().join(" ");
        match grammar::parse(&text) {
            Ok(rule) => parsed.push((
                source.location,
                Parsed {
                    number: i + 1,
                    text,
                    rule,
                },
            )),
            Err(message) => errors.push(SentenceError {
                location: source.location,
                sentence: text,
                message,
            }),
        }
    }
    let parsed = resolve(parsed, &mut errors);
    let all: Vec<String> = sources
        .iter()
        .map(|s| s.text.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    if parsed.is_empty() {
        return Ok(Understood {
            draft: None,
            errors,
        });
    }
    let (cases, warnings) = cases::generate(&parsed, intent)?;
    let rows: Vec<Value> = cases.iter().map(|c| c.json(true)).collect();
    let draft = Draft {
        rego: rego::policy(&parsed),
        tests: table(TABLE_HEADER, &rows),
        origin: Origin::Grammar,
        sentences: all,
        warnings,
        cases,
    };
    Ok(Understood {
        draft: Some(draft),
        errors,
    })
}

const TABLE_HEADER: &str = "Drafted by `agentgate policy draft`: for each sentence, a request it decides and, where\n\
it has a boundary, one just outside it. `agentgate policy test DIR` runs them.";

/// Settles what one sentence leaves to the others: "external" means outside every domain
/// the sentences name with "outside", and each budget gets a name of its own.
fn resolve(parsed: Vec<(Location, Parsed)>, errors: &mut Vec<SentenceError>) -> Vec<Parsed> {
    let named: Vec<String> = parsed
        .iter()
        .filter_map(|(_, p)| match &p.rule.action().reach {
            Some(Reach::Outside(d)) => Some(d.clone()),
            _ => None,
        })
        .flatten()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (location, mut p) in parsed {
        if p.rule.action().reach == Some(Reach::External) {
            if named.is_empty() {
                errors.push(SentenceError {
                    location,
                    sentence: p.text.clone(),
                    message: "\"external\" means outside the domains the sentences name with \"outside <domain>\", and none does: add one (\"mail to outside acme.com needs approval\") or say \"emails to outside acme.com\"".into(),
                });
                continue;
            }
            p.rule.action_mut().reach = Some(Reach::Outside(named.clone()));
        }
        if let Rule::Budget { action, name, .. } = &mut p.rule {
            let mut slug = budget_slug(action);
            if !names.insert(slug.clone()) {
                slug = format!("{slug}-{}", p.number);
                names.insert(slug.clone());
            }
            *name = slug;
        }
        out.push(p);
    }
    out.sort_by_key(|p| p.number);
    out
}

/// "external-mail", "slack-messages", "merge-pull-requests-in-acme".
fn budget_slug(action: &ir::Action) -> String {
    let mut s = String::new();
    match action.reach {
        Some(Reach::Outside(_) | Reach::External) => s.push_str("external-"),
        Some(Reach::Public) => s.push_str("public-"),
        None => {}
    }
    if vocab::counted_verb(action.object) != Some(action.verb) {
        s.push_str(action.verb.word());
        s.push('-');
    }
    s.push_str(&action.object.name().replace(' ', "-"));
    match &action.scope {
        Some(ir::Scope::Org(o)) => s.push_str(&format!("-in-{o}")),
        Some(ir::Scope::Repo(r)) => s.push_str(&format!("-in-{}", r.replace('/', "-"))),
        None => {}
    }
    s
}

/// Compiles `rego` and runs the `tests` table against it with the real intent gate.
pub fn check(
    rego: &str,
    tests: &str,
    intent: &Intent,
    config: &PolicyConfig,
) -> Result<Vec<CaseResult>, CheckError> {
    let sources = Sources {
        rego: vec![("policy.rego".into(), rego.into())],
        data: Vec::new(),
        tests: vec![("policy_test.yaml".into(), tests.into())],
    };
    // Compiled here first for the compiler's own words: the policy loader reads some of
    // them (an unsafe variable's "undefined", say) as a missing entry point.
    let mut engine = sources.engine(false).map_err(|e| match e {
        PolicyError::Compile { reason, .. } => {
            CheckError::Compile(reason.trim_start_matches('\n').to_owned())
        }
        other => CheckError::Compile(other.to_string()),
    })?;
    if let Err(e) = engine.compile_with_entrypoint(&ENTRYPOINT.into()) {
        let text = e.to_string().trim_start_matches('\n').to_owned();
        return Err(if text.contains("not a valid rule path") {
            CheckError::NoDecision
        } else {
            CheckError::Compile(text)
        });
    }
    let results = runner::run_sources(&sources, intent, config).map_err(|e| match e {
        PolicyError::NoEntrypoint(_) => CheckError::NoDecision,
        PolicyError::Compile { reason, .. } => CheckError::Compile(reason),
        other => CheckError::Compile(other.to_string()),
    })?;
    if results.is_empty() {
        return Err(CheckError::NoTests);
    }
    Ok(results)
}

/// A `policy test` table: `header` as comments, then `cases:` with one entry per case
/// (strings quoted, structures in flow style, so any value is valid YAML).
pub fn table(header: &str, cases: &[Value]) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
    }
    out.push_str("cases:\n");
    for case in cases {
        let Value::Object(map) = case else { continue };
        for (i, k) in ordered_keys(map).into_iter().enumerate() {
            let lead = if i == 0 { "  - " } else { "    " };
            let v = match (k.as_str(), &map[k]) {
                ("expect", Value::String(e))
                    if matches!(e.as_str(), "allow" | "escalate" | "deny") =>
                {
                    e.clone()
                }
                (_, v) => flow(v),
            };
            out.push_str(&format!("{lead}{}: {v}\n", yaml_key(k)));
        }
    }
    out
}

/// Keys in the order people read a case and a request, then the rest sorted.
fn ordered_keys(map: &serde_json::Map<String, Value>) -> Vec<&String> {
    const ORDER: &[&str] = &[
        "name",
        "request",
        "input",
        "agent",
        "expect",
        "reason",
        "method",
        "url",
        "headers",
        "body",
        "body_json",
        "body_email",
    ];
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by_key(|k| (ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len()), *k));
    keys
}

fn yaml_key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && k.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    if plain {
        k.to_owned()
    } else {
        serde_json::to_string(k).unwrap_or_default()
    }
}

/// A value in YAML flow style: `{method: "GET", url: "…"}`.
fn flow(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let items: Vec<String> = ordered_keys(map)
                .into_iter()
                .map(|k| format!("{}: {}", yaml_key(k), flow(&map[k])))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", items.join(", "))
        }
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}
