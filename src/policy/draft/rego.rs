//! Writes the Rego for parsed sentences: one rule per sentence (two for `only`), under a
//! fixed frame that combines them as the default policy does (deny beats escalate beats
//! allow; nothing allowed is denied).

use std::collections::BTreeSet;

use crate::policy::decision::Effect;

use super::cond::{self, Cond, rego_string};
use super::ir::{Parsed, Rule, Who};

/// The contract and the combination of the sets the sentences fill.
const FRAME: &str = r#"package agentgate

import rego.v1

decision := {"effect": "deny", "reasons": sort(deny | budget_notes), "budgets": budgets} if {
	deny != set()
} else := {
	"effect": "escalate",
	"reasons": sort(escalate | budget_notes),
	"consent": {"binding_message": binding_message},
	"budgets": budgets,
} if {
	escalate != set()
} else := {"effect": "allow", "reasons": sort({p[1] | some p in allow} | budget_notes), "budgets": budgets} if {
	is_string(input.action.name)
	unallowed == set()
} else := {"effect": "deny", "reasons": sort(fail_closed | budget_notes), "budgets": budgets}

# Every operation of the request: its action and, for a GitHub GraphQL document, each
# top-level field (a document may hide a mutation beside a harmless field).
ops contains {
	"name": object.get(input, ["action", "name"], ""),
	"class": object.get(input, ["action", "properties", "class"], "unknown"),
}

ops contains {"name": sprintf("github.graphql.%s.%s", [f.operation, f.field]), "class": f.class} if {
	some f in input.context.body.graphql.fields
}

# Allowed means: a sentence allows each operation. `allow` holds [operation, reason] pairs.
unallowed := {op.name | some op in ops} - {p[0] | some p in allow}

fail_closed contains msg if {
	some op in ops
	op.name in unallowed
	msg := sprintf("%s (class %s) is allowed by no sentence: denied (fail closed)", [op.name, op.class])
}

fail_closed contains "the request has no action name: denied (fail closed)" if not is_string(input.action.name)

# A GraphQL document with more top-level fields than AgentGate lists cannot be judged
# field by field.
deny contains "the GraphQL document has more top-level fields than AgentGate lists: denied (fail closed)" if {
	input.context.body.graphql.list_truncated == true
}

# Two rules of the default policy come with every draft, since no sentence can see past
# them: traffic to an MCP server AgentGate is not configured for is not judged by its
# tools, and a tool the server redefined since AgentGate pinned it needs a person's look.
deny contains msg if {
	input.context.mcp.server == "unknown"
	msg := sprintf("%s goes to an MCP server AgentGate is not configured for (list it under [[mcp.servers]]): denied", [object.get(input, ["action", "name"], "the request")])
}

escalate contains msg if {
	input.context.tool.changed == true
	msg := sprintf("%s: the MCP server changed this tool's definition since AgentGate pinned it; a person must look before it is used (`agentgate mcp accept` pins the new one)", [object.get(input, ["action", "name"], "the request")])
}

# Budgets are counted by AgentGate; the policy only attaches them. `budget` holds
# [budget, note] pairs.
budgets := [p[0] | some p in budget]

budget_notes := {p[1] | some p in budget}

resource_id := object.get(input, ["resource", "id"], "")
"#;

/// Consent text, as in the default policy: "<agent>: <action> <resource>", at most 64
/// characters of the set CIBA providers accept.
const BINDING: &str = r#"# Consent text: "<agent>: <action> <resource>", at most 64 characters of letters, digits,
# space and +-_.,:# (what CIBA providers accept). "/" becomes ":", any other character "_".
binding_message := substring(safe_text(text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 +-_.,:#"), 0, 64) if {
	text := replace(sprintf("%s: %s %s", [agent_name(input.subject), input.action.name, resource_id]), "/", ":")
}

agent_name(subject) := name if {
	name := subject.properties.name
	is_string(name)
	name != ""
} else := last if {
	parts := split(subject.id, "/")
	last := parts[count(parts) - 1]
} else := "agent"

# trim() removes every allowed character from both ends: "" means nothing else is there.
safe_text(s, allowed) := s if {
	trim(s, allowed) == ""
} else := concat("", [safe_char(substring(s, i, 1), allowed) | some i in numbers.range(0, count(s) - 1)])

safe_char(c, allowed) := c if {
	contains(allowed, c)
} else := "_"
"#;

/// The whole policy for `sentences`.
pub(super) fn policy(sentences: &[Parsed]) -> String {
    let mut out = String::new();
    out.push_str(
        "# Drafted by `agentgate policy draft` from these sentences; each reason names the\n",
    );
    out.push_str("# sentence it comes from:\n");
    for s in sentences {
        out.push_str(&format!("#   {}. {}\n", s.number, s.text));
    }
    out.push_str(
        "#\n\
         # data.agentgate.decision = {\"effect\": \"allow\"|\"escalate\"|\"deny\", \"reasons\": [...],\n\
         #   \"consent\"?: {\"binding_message\": ...}, \"budgets\": [...]}\n\
         # Deny beats escalate beats allow. A request is allowed only when a sentence allows each\n\
         # of its operations; anything else is denied (fail closed).\n",
    );
    out.push_str(FRAME);
    let mut helpers = BTreeSet::new();
    let mut filled = BTreeSet::new();
    for s in sentences {
        out.push('\n');
        out.push_str(&format!("# {}\n", s.tag()));
        for (i, r) in rules(s).into_iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            for c in &r.conds {
                c.helpers(&mut helpers);
            }
            filled.insert(r.set);
            out.push_str(&r.rego());
        }
    }
    for set in ["allow", "budget"] {
        if !filled.contains(set) {
            out.push_str(&format!(
                "\n# No sentence adds to `{set}`.\n{set} := set()\n"
            ));
        }
    }
    for h in helpers {
        out.push('\n');
        out.push_str(h.rego());
    }
    out.push('\n');
    out.push_str(BINDING);
    out
}

/// One Rego rule of a sentence.
pub(super) struct RegoRule {
    /// `allow`, `escalate`, `deny` or `budget`.
    pub(super) set: &'static str,
    pub(super) conds: Vec<Cond>,
    /// What the reason says after "<operation> on <resource>: ".
    pub(super) says: String,
    /// For `budget`: the budget object's Rego text.
    pub(super) budget: Option<String>,
}

impl RegoRule {
    fn rego(&self) -> String {
        let body: String = self
            .conds
            .iter()
            .map(|c| format!("\t{}\n", c.rego()))
            .collect();
        let says = rego_string(&self.says);
        match (self.set, &self.budget) {
            ("budget", Some(b)) => {
                format!("budget contains [{b}, {says}] if {{\n\tsome op in ops\n{body}}}\n")
            }
            ("allow", _) => format!(
                "allow contains [op.name, msg] if {{\n\tsome op in ops\n{body}\tmsg := sprintf(\"%s on %s: %s\", [op.name, resource_id, {says}])\n}}\n"
            ),
            (set, _) => format!(
                "{set} contains msg if {{\n\tsome op in ops\n{body}\tmsg := sprintf(\"%s on %s: %s\", [op.name, resource_id, {says}])\n}}\n"
            ),
        }
    }
}

fn set_of(effect: Effect) -> &'static str {
    match effect {
        Effect::Allow => "allow",
        Effect::Escalate => "escalate",
        Effect::Deny => "deny",
    }
}

/// The rules one sentence becomes; the test generator evaluates the same list.
pub(super) fn rules(s: &Parsed) -> Vec<RegoRule> {
    let tag = s.tag();
    match &s.rule {
        Rule::Decide {
            who,
            effect,
            action,
        } => {
            let restrictive = *effect != Effect::Allow;
            let mut conds = cond::for_action(action, restrictive);
            conds.extend(cond::for_who(who));
            let whom = match who {
                Who::All => String::new(),
                Who::Agents(names) => format!(" for {}", names.join(", ")),
            };
            let verdict = match effect {
                Effect::Allow => "is allowed",
                Effect::Escalate => "needs a person's approval",
                Effect::Deny => "is denied",
            };
            vec![RegoRule {
                set: set_of(*effect),
                conds,
                says: format!("{}{whom} {verdict} ({tag})", action.describe()),
                budget: None,
            }]
        }
        Rule::Only { names, action } => {
            let mut allow = cond::for_action(action, false);
            allow.push(Cond::AgentIn(names.clone()));
            let mut deny = cond::for_action(action, true);
            deny.push(Cond::AgentNotIn(names.clone()));
            let names = names.join(", ");
            vec![
                RegoRule {
                    set: "allow",
                    conds: allow,
                    says: format!("{} is allowed for {names} ({tag})", action.describe()),
                    budget: None,
                },
                RegoRule {
                    set: "deny",
                    conds: deny,
                    says: format!(
                        "{} is allowed only for {names}: denied ({tag})",
                        action.describe()
                    ),
                    budget: None,
                },
            ]
        }
        Rule::Budget {
            action,
            limit,
            window,
            over,
            name,
        } => {
            let over_word = if *over == Effect::Escalate {
                "escalate"
            } else {
                "deny"
            };
            let budget = format!(
                "{{\"key\": [{}, object.get(input, [\"subject\", \"id\"], \"\")], \"limit\": {limit}, \"window\": {}, \"over\": \"{over_word}\"}}",
                rego_string(name),
                rego_string(&window.text())
            );
            let then = if *over == Effect::Escalate {
                "then a person must approve"
            } else {
                "then denied"
            };
            vec![RegoRule {
                set: "budget",
                conds: cond::for_action(action, true),
                says: format!(
                    "budget {name}: {} at most {limit} times per {} for each agent, {then} ({tag})",
                    action.describe(),
                    window.describe()
                ),
                budget: Some(budget),
            }]
        }
    }
}
