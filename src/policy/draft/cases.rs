//! The test table of a draft: for each sentence, a realistic request it decides (and where
//! it has a boundary, one just outside it), built into a tuple by the real intent gate;
//! the expected effect is predicted from the sentences with the conditions' Rust side,
//! so running the table checks the Rego against an independent reading of the sentences.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::intent::Intent;
use crate::policy::decision::Effect;
use crate::policy::runner;

use super::cond;
use super::error::DraftError;
use super::ir::{Object, Parsed, Reach, Rule, Scope, Who};
use super::rego;
use super::witness::{Boundary, witness};

/// One case of the table.
#[derive(Debug, Clone)]
pub(super) struct Case {
    pub(super) name: String,
    pub(super) request: Value,
    pub(super) agent: String,
    pub(super) expect: Effect,
    /// A substring of one reason: the sentence that decides.
    pub(super) reason: Option<String>,
}

impl Case {
    /// The case as a table entry (without `reason:` when `reasons` is false).
    pub(super) fn json(&self, reasons: bool) -> Value {
        let mut v = json!({
            "name": self.name,
            "request": self.request,
            "agent": {"name": self.agent},
            "expect": self.expect.as_str(),
        });
        if let (true, Some(r)) = (reasons, &self.reason) {
            v["reason"] = r.clone().into();
        }
        v
    }
}

/// A request to try, and what it shows.
struct Probe {
    request: Value,
    agent: String,
    /// `None`: the sentence should decide it; `Some(why)`: just outside the sentence.
    outside: Option<String>,
}

/// What the drafted policy should answer for a tuple.
struct Prediction {
    effect: Effect,
    /// The sentences whose reasons the decision carries (decisive rules and budgets).
    by: BTreeSet<usize>,
    /// No sentence decided: the request is denied as allowed by none.
    fail_closed: bool,
}

/// The cases for `sentences`, and warnings about sentences that never decide.
pub(super) fn generate(
    sentences: &[Parsed],
    intent: &Intent,
) -> Result<(Vec<Case>, Vec<String>), DraftError> {
    let default_agent = fresh_agent(sentences);
    let named_domains: Vec<String> = sentences
        .iter()
        .filter_map(|s| match &s.rule.action().reach {
            Some(Reach::Outside(d)) => Some(d.clone()),
            _ => None,
        })
        .flatten()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut cases = Vec::new();
    let mut warnings = Vec::new();
    for s in sentences {
        let (candidates, rest) = probes(s, &default_agent, &named_domains);
        let mut tried = Vec::new();
        for probe in candidates {
            let tried_one = run(s, probe, sentences, intent)?;
            let shows = tried_one.1.by.contains(&s.number);
            tried.push(tried_one);
            if shows {
                break;
            }
        }
        // The first candidate stands for the sentence when none shows it.
        let (case, p, what) = match tried.pop() {
            Some(last) if last.1.by.contains(&s.number) => last,
            _ => tried.swap_remove(0),
        };
        if !p.by.contains(&s.number) {
            let others: Vec<String> = p.by.iter().map(ToString::to_string).collect();
            let decider = match others.len() {
                0 => "nothing decides it".to_owned(),
                1 => format!("sentence {} decides it", others[0]),
                _ => format!("sentences {} decide it", others.join(", ")),
            };
            warnings.push(format!(
                "{} never decides its example ({what}): {decider}",
                s.tag()
            ));
        } else if matches!(s.rule, Rule::Budget { .. }) && p.fail_closed {
            warnings.push(format!(
                "{} counts nothing on its own: no sentence allows or asks for {}, so it is denied",
                s.tag(),
                s.rule.action().describe()
            ));
        }
        cases.push(case);
        for probe in rest {
            cases.push(run(s, probe, sentences, intent)?.0);
        }
    }
    Ok((cases, warnings))
}

/// The case for one probe of sentence `s`, what the policy should answer, and what the
/// request is in words.
fn run(
    s: &Parsed,
    probe: Probe,
    sentences: &[Parsed],
    intent: &Intent,
) -> Result<(Case, Prediction, String), DraftError> {
    let agent = json!({"name": probe.agent});
    let tuple = runner::tuple_for(&probe.request, Some(&agent), intent).map_err(|reason| {
        DraftError::Witness {
            sentence: s.tag(),
            reason,
        }
    })?;
    let p = predict(sentences, &tuple);
    let reason = if p.by.contains(&s.number) {
        Some(s.tag())
    } else if p.fail_closed {
        Some("allowed by no sentence".to_owned())
    } else {
        p.by.iter()
            .next()
            .and_then(|n| sentences.iter().find(|x| x.number == *n))
            .map(Parsed::tag)
    };
    let what = format!(
        "{} on {} by {}",
        tuple["action"]["name"].as_str().unwrap_or("?"),
        tuple["resource"]["id"].as_str().unwrap_or("?"),
        probe.agent
    );
    let verdict = match p.effect {
        Effect::Allow => "allowed",
        Effect::Escalate => "held for approval",
        Effect::Deny => "denied",
    };
    let name = match &probe.outside {
        None => format!("sentence {}: {what} is {verdict}", s.number),
        Some(why) => format!("sentence {}, {why}: {what} is {verdict}", s.number),
    };
    let case = Case {
        name,
        request: probe.request,
        agent: probe.agent,
        expect: p.effect,
        reason,
    };
    Ok((case, p, what))
}

/// An agent name no sentence names.
fn fresh_agent(sentences: &[Parsed]) -> String {
    let named: BTreeSet<&str> = sentences
        .iter()
        .flat_map(|s| match &s.rule {
            Rule::Decide {
                who: Who::Agents(n),
                ..
            }
            | Rule::Only { names: n, .. } => n.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        })
        .collect();
    ["bot", "helper", "assistant"]
        .into_iter()
        .map(str::to_owned)
        .chain((1..).map(|i| format!("agent-{i}")))
        .find(|n| !named.contains(n.as_str()))
        .unwrap_or_default()
}

/// The probes of sentence `s`: first the candidates for a request it decides (the first
/// that it does decide is kept), then those just outside it.
fn probes(s: &Parsed, default_agent: &str, named_domains: &[String]) -> (Vec<Probe>, Vec<Probe>) {
    let action = s.rule.action();
    let (agent, other_agent) = match &s.rule {
        Rule::Decide {
            who: Who::Agents(names),
            ..
        }
        | Rule::Only { names, .. } => (names[0].clone(), Some(default_agent.to_owned())),
        _ => (default_agent.to_owned(), None),
    };
    let mut out = vec![Probe {
        request: witness(action, None),
        agent: agent.clone(),
        outside: None,
    }];
    // Other requests the sentence covers too, tried when another sentence decides the first.
    let mut alternatives: Vec<Boundary> = Vec::new();
    if action.scope.is_none() && action.object.on_github() {
        alternatives.push(Boundary::Org("other-org".into()));
    }
    if action.reach.is_none() && action.object == Object::Mail {
        alternatives.extend(named_domains.iter().map(|d| Boundary::Inside(d.clone())));
    }
    if action.reach.is_none() && matches!(action.object, Object::Slack | Object::SlackMessages) {
        alternatives.push(Boundary::Private);
    }
    let alternatives = alternatives.into_iter().map(|b| Probe {
        request: witness(action, Some(&b)),
        agent: agent.clone(),
        outside: None,
    });
    out.extend(alternatives);
    let mut rest = Vec::new();
    if let Some(other) = other_agent {
        // For "only", the other agent's denial is the sentence at work too.
        let outside = match s.rule {
            Rule::Only { .. } => None,
            _ => Some("another agent".to_owned()),
        };
        rest.push(Probe {
            request: witness(action, None),
            agent: other,
            outside,
        });
    }
    let boundary = match (&action.scope, &action.reach) {
        (Some(Scope::Org(org)), _) => {
            let other = if org == "other-org" {
                "another-org"
            } else {
                "other-org"
            };
            Some((Boundary::Org(other.to_owned()), format!("outside {org}")))
        }
        (Some(Scope::Repo(repo)), _) => {
            let owner = repo.split('/').next().unwrap_or("acme");
            let other = format!(
                "{owner}/{}",
                if repo.ends_with("/other") {
                    "another"
                } else {
                    "other"
                }
            );
            Some((Boundary::Repo(other), format!("outside {repo}")))
        }
        (_, Some(Reach::Outside(inside))) => Some((
            Boundary::Inside(inside.first().cloned().unwrap_or_default()),
            format!("mail inside {}", inside.join(", ")),
        )),
        (_, Some(Reach::Public)) => Some((Boundary::Private, "a direct message".to_owned())),
        _ => None,
    };
    if let Some((b, why)) = boundary {
        rest.push(Probe {
            request: witness(action, Some(&b)),
            agent,
            outside: Some(why),
        });
    }
    (out, rest)
}

/// The drafted policy's answer for `tuple`, from the sentences' conditions.
fn predict(sentences: &[Parsed], tuple: &Value) -> Prediction {
    let ops = cond::ops(tuple);
    let mut deny = BTreeSet::new();
    let mut escalate = BTreeSet::new();
    let mut budgets = BTreeSet::new();
    let mut allowed: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); ops.len()];
    // The frame's own rules (rego.rs): an uninspectable GraphQL document, an MCP server
    // not configured, an MCP tool redefined since it was pinned.
    let fixed_deny = tuple["context"]["body"]["graphql"]["list_truncated"] == json!(true)
        || tuple["context"]["mcp"]["server"] == json!("unknown");
    let fixed_escalate = tuple["context"]["tool"]["changed"] == json!(true);
    for s in sentences {
        for r in rego::rules(s) {
            for (i, op) in ops.iter().enumerate() {
                if !r.conds.iter().all(|c| c.holds(op, tuple)) {
                    continue;
                }
                match r.set {
                    "deny" => deny.insert(s.number),
                    "escalate" => escalate.insert(s.number),
                    "budget" => budgets.insert(s.number),
                    _ => allowed[i].insert(s.number),
                };
            }
        }
    }
    // Operations that share a name share their permissions, as `unallowed` compares names.
    let names: Vec<&str> = ops.iter().map(|o| o.name.as_str()).collect();
    let allowed_name = |n: &str| {
        names
            .iter()
            .zip(&allowed)
            .any(|(m, a)| *m == n && !a.is_empty())
    };
    let (effect, mut by, fail_closed) = if !deny.is_empty() || fixed_deny {
        (Effect::Deny, deny, false)
    } else if !escalate.is_empty() || fixed_escalate {
        (Effect::Escalate, escalate, false)
    } else if tuple["action"]["name"].is_string() && names.iter().all(|n| allowed_name(n)) {
        (
            Effect::Allow,
            allowed.into_iter().flatten().collect(),
            false,
        )
    } else {
        (Effect::Deny, BTreeSet::new(), true)
    };
    by.extend(budgets);
    Prediction {
        effect,
        by,
        fail_closed,
    }
}
