//! The conditions a rule puts on a request, each written twice side by side: as a line of
//! the drafted Rego, and as Rust that the test generator uses to predict that Rego's answer
//! (two implementations that must agree, checked by running the generated tests).
//!
//! A condition is *restrictive* in deny, escalate and budget rules and *permissive* in allow
//! rules. Where a request does not show enough to tell (a GraphQL field names no
//! repository, a draft being sent shows no recipients, a Slack channel id does not say
//! whether it is public), a restrictive condition holds and a permissive one does not: a
//! restriction is never escaped, nor a permission stretched, by what the request hides.

use std::collections::BTreeSet;

use serde_json::Value;

use super::ir::{Action, Ops, Reach, Scope, Who};

/// One condition of a rule body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cond {
    NameIn(&'static [&'static str]),
    Class(&'static str),
    NamePrefix(&'static str),
    OnResource { kind: &'static str, maybe: bool },
    InOrg { org: String, maybe: bool },
    InRepo { repo: String, maybe: bool },
    MailOutside { inside: Vec<String>, maybe: bool },
    MaybePublicChannel,
    AgentIn(Vec<String>),
    AgentNotIn(Vec<String>),
}

/// One operation of a request: the action, or a top-level field of a GraphQL document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Op {
    pub(super) name: String,
    pub(super) class: String,
}

/// The operations of a tuple, as the drafted Rego's `ops` lists them.
pub(super) fn ops(tuple: &Value) -> Vec<Op> {
    let mut out = vec![Op {
        name: tuple["action"]["name"].as_str().unwrap_or("").to_owned(),
        class: tuple["action"]["properties"]["class"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned(),
    }];
    if let Some(fields) = tuple["context"]["body"]["graphql"]["fields"].as_array() {
        for f in fields {
            out.push(Op {
                name: format!(
                    "github.graphql.{}.{}",
                    f["operation"].as_str().unwrap_or(""),
                    f["field"].as_str().unwrap_or("")
                ),
                class: f["class"].as_str().unwrap_or("").to_owned(),
            });
        }
    }
    out
}

/// The conditions that pick `action`'s operations for `who`.
pub(super) fn for_action(action: &Action, restrictive: bool) -> Vec<Cond> {
    let maybe = restrictive;
    let mut out = Vec::new();
    match action.ops {
        Ops::Names(names) => out.push(Cond::NameIn(names)),
        Ops::Class {
            class,
            prefix,
            resource,
        } => {
            out.push(Cond::Class(class));
            if let Some(p) = prefix {
                out.push(Cond::NamePrefix(p));
            }
            if let Some(kind) = resource {
                out.push(Cond::OnResource { kind, maybe });
            }
        }
    }
    match &action.scope {
        Some(Scope::Org(org)) => out.push(Cond::InOrg {
            org: org.clone(),
            maybe,
        }),
        Some(Scope::Repo(repo)) => out.push(Cond::InRepo {
            repo: repo.clone(),
            maybe,
        }),
        None => {}
    }
    match &action.reach {
        Some(Reach::Outside(inside)) => out.push(Cond::MailOutside {
            inside: inside.clone(),
            maybe,
        }),
        // The parser refuses "public" in permissive rules, and "external" is resolved
        // before conditions are built.
        Some(Reach::Public) => out.push(Cond::MaybePublicChannel),
        Some(Reach::External) | None => {}
    }
    out
}

/// The condition on the agent for `who`.
pub(super) fn for_who(who: &Who) -> Option<Cond> {
    match who {
        Who::All => None,
        Who::Agents(names) => Some(Cond::AgentIn(names.clone())),
    }
}

fn string_set(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| rego_string(s)).collect();
    format!("{{{}}}", quoted.join(", "))
}

/// A Rego string literal (JSON's escapes are Rego's).
pub(super) fn rego_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

impl Cond {
    /// The condition as a line of a Rego rule body (`op` is the operation judged).
    pub(super) fn rego(&self) -> String {
        let q = |s: &str| rego_string(s);
        match self {
            Cond::NameIn(names) => {
                let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
                format!("op.name in {}", string_set(&names))
            }
            Cond::Class(c) => format!("op.class == {}", q(c)),
            Cond::NamePrefix(p) => format!("startswith(op.name, {})", q(p)),
            Cond::OnResource { kind, maybe: false } => {
                format!("input.resource.type == {}", q(kind))
            }
            Cond::OnResource { kind, maybe: true } => {
                format!("maybe_on_resource(op, {})", q(kind))
            }
            Cond::InOrg { org, maybe: false } => format!("in_org({})", q(org)),
            Cond::InOrg { org, maybe: true } => format!("maybe_in_org(op, {})", q(org)),
            Cond::InRepo { repo, maybe: false } => format!("in_repo({})", q(repo)),
            Cond::InRepo { repo, maybe: true } => format!("maybe_in_repo(op, {})", q(repo)),
            Cond::MailOutside {
                inside,
                maybe: false,
            } => format!("mail_outside({})", string_set(inside)),
            Cond::MailOutside {
                inside,
                maybe: true,
            } => {
                format!("maybe_mail_outside({})", string_set(inside))
            }
            Cond::MaybePublicChannel => "maybe_public_channel".to_owned(),
            Cond::AgentIn(names) => format!("subject_name in {}", string_set(names)),
            Cond::AgentNotIn(names) => format!("not subject_name in {}", string_set(names)),
        }
    }

    /// The Rego helper rules this condition calls (emitted once each).
    pub(super) fn helpers(&self, out: &mut BTreeSet<Helper>) {
        match self {
            Cond::OnResource { maybe: true, .. } => {
                out.insert(Helper::Graphql);
                out.insert(Helper::MaybeOnResource);
            }
            Cond::InOrg { maybe, .. } => {
                out.insert(Helper::InOrg);
                if *maybe {
                    out.insert(Helper::Graphql);
                    out.insert(Helper::MaybeInOrg);
                }
            }
            Cond::InRepo { maybe, .. } => {
                out.insert(Helper::InRepo);
                if *maybe {
                    out.insert(Helper::Graphql);
                    out.insert(Helper::MaybeInRepo);
                }
            }
            Cond::MailOutside { maybe, .. } => {
                out.insert(Helper::MailOutside);
                if *maybe {
                    out.insert(Helper::MaybeMailOutside);
                }
            }
            Cond::MaybePublicChannel => {
                out.insert(Helper::MaybePublicChannel);
            }
            Cond::AgentIn(_) | Cond::AgentNotIn(_) => {
                out.insert(Helper::SubjectName);
            }
            Cond::NameIn(_)
            | Cond::Class(_)
            | Cond::NamePrefix(_)
            | Cond::OnResource { maybe: false, .. } => {}
        }
    }

    /// Whether the condition holds for `op` of `tuple`, as the Rego line would say.
    pub(super) fn holds(&self, op: &Op, tuple: &Value) -> bool {
        let resource_type = tuple["resource"]["type"].as_str().unwrap_or("");
        let resource_id = tuple["resource"]["id"].as_str().unwrap_or("");
        let graphql = op.name.starts_with("github.graphql");
        match self {
            Cond::NameIn(names) => names.contains(&op.name.as_str()),
            Cond::Class(c) => op.class == *c,
            Cond::NamePrefix(p) => op.name.starts_with(p),
            Cond::OnResource { kind, maybe } => resource_type == *kind || (*maybe && graphql),
            Cond::InOrg { org, maybe } => {
                let inside = (resource_type == "github.repo"
                    && resource_id.starts_with(&format!("{org}/")))
                    || (resource_type == "github.org" && resource_id == org);
                inside || (*maybe && graphql)
            }
            Cond::InRepo { repo, maybe } => {
                (resource_type == "github.repo" && resource_id == repo) || (*maybe && graphql)
            }
            Cond::MailOutside { inside, maybe } => {
                let domains: Vec<&str> = tuple["context"]["body"]["email"]["domains"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let outside = domains.iter().any(|d| {
                    let d = d.to_lowercase();
                    !inside
                        .iter()
                        .any(|i| d == *i || d.ends_with(&format!(".{i}")))
                });
                outside || (*maybe && domains.is_empty())
            }
            Cond::MaybePublicChannel => {
                let channels: Vec<&str> = tuple["context"]["body"]["channels"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                channels.is_empty() || channels.iter().any(|c| !private_channel_id(c))
            }
            Cond::AgentIn(names) => subject_name(tuple).is_some_and(|n| names.contains(&n)),
            Cond::AgentNotIn(names) => !subject_name(tuple).is_some_and(|n| names.contains(&n)),
        }
    }
}

fn subject_name(tuple: &Value) -> Option<String> {
    tuple["subject"]["properties"]["name"]
        .as_str()
        .map(str::to_owned)
}

/// A direct message (D…) or group conversation (G…) id: `^[DG][A-Z0-9]+$`.
fn private_channel_id(c: &str) -> bool {
    let mut chars = c.chars();
    matches!(chars.next(), Some('D' | 'G'))
        && c.len() > 1
        && chars.all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit())
}

/// Rego helper rules a drafted policy may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Helper {
    SubjectName,
    Graphql,
    MaybeOnResource,
    InOrg,
    MaybeInOrg,
    InRepo,
    MaybeInRepo,
    MailOutside,
    MaybeMailOutside,
    MaybePublicChannel,
}

impl Helper {
    /// The helper's Rego text.
    pub(super) fn rego(self) -> &'static str {
        match self {
            Helper::SubjectName => {
                "subject_name := object.get(input, [\"subject\", \"properties\", \"name\"], \"\")\n"
            }
            Helper::Graphql => {
                "# A GitHub GraphQL field does not say which repository it touches.\n\
                 graphql(op) if startswith(op.name, \"github.graphql\")\n"
            }
            Helper::MaybeOnResource => {
                "# Restrictions hold where the request cannot show the resource (GraphQL).\n\
                 maybe_on_resource(_, kind) if input.resource.type == kind\n\n\
                 maybe_on_resource(op, _) if graphql(op)\n"
            }
            Helper::InOrg => {
                "# The resource is GitHub organization `org` or one of its repositories.\n\
                 in_org(org) if {\n\
                 \tinput.resource.type == \"github.repo\"\n\
                 \tstartswith(input.resource.id, concat(\"\", [org, \"/\"]))\n\
                 }\n\n\
                 in_org(org) if {\n\
                 \tinput.resource.type == \"github.org\"\n\
                 \tinput.resource.id == org\n\
                 }\n"
            }
            Helper::MaybeInOrg => {
                "maybe_in_org(_, org) if in_org(org)\n\n\
                 maybe_in_org(op, _) if graphql(op)\n"
            }
            Helper::InRepo => {
                "in_repo(repo) if {\n\
                 \tinput.resource.type == \"github.repo\"\n\
                 \tinput.resource.id == repo\n\
                 }\n"
            }
            Helper::MaybeInRepo => {
                "maybe_in_repo(_, repo) if in_repo(repo)\n\n\
                 maybe_in_repo(op, _) if graphql(op)\n"
            }
            Helper::MailOutside => {
                "# Recipient domains, as the intent gate read them from the message.\n\
                 recipient_domains := object.get(input, [\"context\", \"body\", \"email\", \"domains\"], [])\n\n\
                 # A recipient's domain is neither one of `inside` nor a subdomain of one.\n\
                 mail_outside(inside) if {\n\
                 \tsome d in recipient_domains\n\
                 \tnot inside_domain(lower(d), inside)\n\
                 }\n\n\
                 inside_domain(d, inside) if d in inside\n\n\
                 inside_domain(d, inside) if {\n\
                 \tsome i in inside\n\
                 \tendswith(d, concat(\"\", [\".\", i]))\n\
                 }\n"
            }
            Helper::MaybeMailOutside => {
                "# ... or no recipient is visible (a draft sent by id): it may go anywhere.\n\
                 maybe_mail_outside(inside) if mail_outside(inside)\n\n\
                 maybe_mail_outside(_) if count(recipient_domains) == 0\n"
            }
            Helper::MaybePublicChannel => {
                "# Slack ids do not say whether a channel is public: any channel but a direct\n\
                 # message (D...) or group conversation (G...) may be, and so may a request\n\
                 # that names none.\n\
                 slack_channels := object.get(input, [\"context\", \"body\", \"channels\"], [])\n\n\
                 maybe_public_channel if count(slack_channels) == 0\n\n\
                 maybe_public_channel if {\n\
                 \tsome c in slack_channels\n\
                 \tnot regex.match(`^[DG][A-Z0-9]+$`, c)\n\
                 }\n"
            }
        }
    }
}
