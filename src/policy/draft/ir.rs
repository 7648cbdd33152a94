//! What a sentence means once parsed: who, which effect, which operations, and the
//! conditions that pick those operations out of a request.

use crate::policy::decision::Effect;

/// A verb of the grammar, after its forms (`opens`, `opening`, `open`) are read as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
    Read,
    Write,
    Create,
    Merge,
    Delete,
    Send,
    Post,
}

impl Verb {
    /// The verb in reasons: "reading repositories in acme".
    pub(super) fn gerund(self) -> &'static str {
        match self {
            Verb::Read => "reading",
            Verb::Write => "writing",
            Verb::Create => "creating",
            Verb::Merge => "merging",
            Verb::Delete => "deleting",
            Verb::Send => "sending",
            Verb::Post => "posting",
        }
    }

    /// The verb's base form (budget names, error messages).
    pub(super) fn word(self) -> &'static str {
        match self {
            Verb::Read => "read",
            Verb::Write => "write",
            Verb::Create => "create",
            Verb::Merge => "merge",
            Verb::Delete => "delete",
            Verb::Send => "send",
            Verb::Post => "post",
        }
    }
}

/// What a sentence is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Object {
    Anything,
    Github,
    Repositories,
    Issues,
    PullRequests,
    Mail,
    Slack,
    SlackMessages,
}

impl Object {
    /// The object's name in reasons and errors.
    pub(super) fn name(self) -> &'static str {
        match self {
            Object::Anything => "anything",
            Object::Github => "github",
            Object::Repositories => "repositories",
            Object::Issues => "issues",
            Object::PullRequests => "pull requests",
            Object::Mail => "mail",
            Object::Slack => "slack",
            Object::SlackMessages => "slack messages",
        }
    }

    /// Objects that live on GitHub, so "in <org>" can narrow them.
    pub(super) fn on_github(self) -> bool {
        matches!(
            self,
            Object::Anything
                | Object::Github
                | Object::Repositories
                | Object::Issues
                | Object::PullRequests
        )
    }
}

/// Where on GitHub: `in acme` or `in acme/web`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scope {
    Org(String),
    Repo(String),
}

/// Whom a message reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reach {
    /// Mail with a recipient outside these domains (or their subdomains).
    Outside(Vec<String>),
    /// "external" mail: outside every domain the sentences name with "outside"; resolved
    /// into [`Reach::Outside`] once all sentences are read.
    External,
    /// Slack posts to a channel that may be public.
    Public,
}

/// How a verb on an object picks a request's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ops {
    /// These action names exactly: REST operations and the GraphQL mutations that do the same.
    Names(&'static [&'static str]),
    /// Every operation of `class` whose name starts with `prefix` and whose resource has
    /// type `resource` (each when given).
    Class {
        class: &'static str,
        prefix: Option<&'static str>,
        resource: Option<&'static str>,
    },
}

/// Which operations a sentence is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Action {
    pub(super) verb: Verb,
    pub(super) object: Object,
    pub(super) ops: Ops,
    pub(super) scope: Option<Scope>,
    pub(super) reach: Option<Reach>,
}

impl Action {
    /// "reading repositories in acme", "sending mail to outside acme.com".
    pub(super) fn describe(&self) -> String {
        let mut s = format!("{} {}", self.verb.gerund(), self.object.name());
        match &self.scope {
            Some(Scope::Org(o)) => s.push_str(&format!(" in {o}")),
            Some(Scope::Repo(r)) => s.push_str(&format!(" in {r}")),
            None => {}
        }
        match &self.reach {
            Some(Reach::Outside(d)) => s.push_str(&format!(" to outside {}", d.join(", "))),
            Some(Reach::External) => s.push_str(" to outside the named domains"),
            Some(Reach::Public) => s.push_str(" to public channels"),
            None => {}
        }
        s
    }
}

/// Which agents a sentence speaks of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Who {
    All,
    Agents(Vec<String>),
}

/// A budget's window: `per hour`, `per 10 minutes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Window {
    pub(super) count: u64,
    /// Seconds in one unit.
    pub(super) unit: u64,
}

impl Window {
    /// The window as the decision contract writes it ("1h", "10m", "7d").
    pub(super) fn text(self) -> String {
        let (n, suffix) = match self.unit {
            1 => (self.count, "s"),
            60 => (self.count, "m"),
            3600 => (self.count, "h"),
            _ => (self.count * self.unit / 86_400, "d"),
        };
        format!("{n}{suffix}")
    }

    /// The window in words: "hour", "10 minutes".
    pub(super) fn describe(self) -> String {
        let unit = match self.unit {
            1 => "second",
            60 => "minute",
            3600 => "hour",
            86_400 => "day",
            _ => "week",
        };
        match self.count {
            1 => unit.to_owned(),
            n => format!("{n} {unit}s"),
        }
    }

    pub(super) fn seconds(self) -> u64 {
        self.count.saturating_mul(self.unit)
    }
}

/// What one sentence says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rule {
    /// `agents may …`, `never …`, `… needs approval`.
    Decide {
        who: Who,
        effect: Effect,
        action: Action,
    },
    /// `only ci-bot may …`: allowed for them, denied for everyone else.
    Only { names: Vec<String>, action: Action },
    /// `no agent sends more than 20 … per hour`: a budget attached to the decision.
    Budget {
        action: Action,
        limit: u64,
        window: Window,
        over: Effect,
        /// The budget's name, the first part of its key (unique among the sentences).
        name: String,
    },
}

impl Rule {
    pub(super) fn action(&self) -> &Action {
        match self {
            Rule::Decide { action, .. }
            | Rule::Only { action, .. }
            | Rule::Budget { action, .. } => action,
        }
    }

    pub(super) fn action_mut(&mut self) -> &mut Action {
        match self {
            Rule::Decide { action, .. }
            | Rule::Only { action, .. }
            | Rule::Budget { action, .. } => action,
        }
    }
}

/// A sentence the grammar understood.
#[derive(Debug, Clone)]
pub(super) struct Parsed {
    /// Its number among the sentences (1-based), which reasons name.
    pub(super) number: usize,
    pub(super) text: String,
    pub(super) rule: Rule,
}

impl Parsed {
    /// How reasons and tests name it: `sentence 2: "ask before opening issues"`.
    pub(super) fn tag(&self) -> String {
        format!("sentence {}: \"{}\"", self.number, self.text)
    }
}
