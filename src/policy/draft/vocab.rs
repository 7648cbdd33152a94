//! The words of the controlled English and what they name: verb forms, object nouns, and
//! the one table from (verb, object) to the operations of the service catalog.

use super::ir::{Object, Ops, Verb};

const fn class(class: &'static str) -> Ops {
    Ops::Class {
        class,
        prefix: None,
        resource: None,
    }
}

const fn class_under(class: &'static str, prefix: &'static str) -> Ops {
    Ops::Class {
        class,
        prefix: Some(prefix),
        resource: None,
    }
}

const fn class_on(class: &'static str, resource: &'static str) -> Ops {
    Ops::Class {
        class,
        prefix: None,
        resource: Some(resource),
    }
}

/// Slack methods that put a message into a conversation.
pub(super) const SLACK_POSTING: &[&str] = &[
    "slack.chat.postMessage",
    "slack.chat.postEphemeral",
    "slack.chat.scheduleMessage",
    "slack.chat.meMessage",
];

/// Gmail methods that send mail (a draft's recipients are not in the request).
pub(super) const MAIL_SENDING: &[&str] = &["gmail.users.messages.send", "gmail.users.drafts.send"];

/// (verb, object) → operations. A pair missing here is a sentence the grammar refuses.
pub(super) const MEANINGS: &[(Verb, Object, Ops)] = &[
    (Verb::Read, Object::Anything, class("read")),
    (Verb::Write, Object::Anything, class("write")),
    (Verb::Delete, Object::Anything, class("delete")),
    (Verb::Read, Object::Github, class_under("read", "github.")),
    (Verb::Write, Object::Github, class_under("write", "github.")),
    (
        Verb::Delete,
        Object::Github,
        class_under("delete", "github."),
    ),
    (
        Verb::Read,
        Object::Repositories,
        class_on("read", "github.repo"),
    ),
    (
        Verb::Write,
        Object::Repositories,
        class_on("write", "github.repo"),
    ),
    (
        Verb::Create,
        Object::Repositories,
        Ops::Names(&[
            "github.repos.create-in-org",
            "github.repos.create-for-authenticated-user",
            "github.graphql.mutation.createRepository",
        ]),
    ),
    (
        Verb::Delete,
        Object::Repositories,
        Ops::Names(&["github.repos.delete"]),
    ),
    (
        Verb::Read,
        Object::Issues,
        class_under("read", "github.issues."),
    ),
    (
        Verb::Write,
        Object::Issues,
        class_under("write", "github.issues."),
    ),
    (
        Verb::Create,
        Object::Issues,
        Ops::Names(&[
            "github.issues.create",
            "github.graphql.mutation.createIssue",
        ]),
    ),
    (
        Verb::Delete,
        Object::Issues,
        class_under("delete", "github.issues."),
    ),
    (
        Verb::Read,
        Object::PullRequests,
        class_under("read", "github.pulls."),
    ),
    (
        Verb::Write,
        Object::PullRequests,
        class_under("write", "github.pulls."),
    ),
    (
        Verb::Create,
        Object::PullRequests,
        Ops::Names(&[
            "github.pulls.create",
            "github.graphql.mutation.createPullRequest",
        ]),
    ),
    (
        Verb::Merge,
        Object::PullRequests,
        Ops::Names(&[
            "github.pulls.merge",
            "github.pulls.merge-async",
            "github.graphql.mutation.mergePullRequest",
            "github.graphql.mutation.enablePullRequestAutoMerge",
        ]),
    ),
    (
        Verb::Delete,
        Object::PullRequests,
        class_under("delete", "github.pulls."),
    ),
    (Verb::Send, Object::Mail, Ops::Names(MAIL_SENDING)),
    (Verb::Read, Object::Mail, class_under("read", "gmail.")),
    (Verb::Write, Object::Mail, class_under("write", "gmail.")),
    (Verb::Delete, Object::Mail, class_under("delete", "gmail.")),
    (Verb::Post, Object::SlackMessages, Ops::Names(SLACK_POSTING)),
    (Verb::Send, Object::SlackMessages, Ops::Names(SLACK_POSTING)),
    (
        Verb::Read,
        Object::SlackMessages,
        Ops::Names(&[
            "slack.conversations.history",
            "slack.conversations.replies",
            "slack.search.messages",
        ]),
    ),
    (
        Verb::Delete,
        Object::SlackMessages,
        Ops::Names(&["slack.chat.delete", "slack.chat.deleteScheduledMessage"]),
    ),
    (Verb::Post, Object::Slack, Ops::Names(SLACK_POSTING)),
    (Verb::Send, Object::Slack, Ops::Names(SLACK_POSTING)),
    (Verb::Read, Object::Slack, class_under("read", "slack.")),
    (Verb::Write, Object::Slack, class_under("write", "slack.")),
    (Verb::Delete, Object::Slack, class_under("delete", "slack.")),
];

/// The operations `verb` names on `object`, if the pair means anything.
pub(super) fn meaning(verb: Verb, object: Object) -> Option<Ops> {
    MEANINGS
        .iter()
        .find(|(v, o, _)| *v == verb && *o == object)
        .map(|(_, _, ops)| *ops)
}

/// The verbs that go with `object`, for an error message.
pub(super) fn verbs_for(object: Object) -> Vec<&'static str> {
    let mut out: Vec<&str> = MEANINGS
        .iter()
        .filter(|(_, o, _)| *o == object)
        .map(|(v, _, _)| v.word())
        .collect();
    out.dedup();
    out
}

/// The objects that go with `verb`, for an error message.
pub(super) fn objects_for(verb: Verb) -> Vec<&'static str> {
    MEANINGS
        .iter()
        .filter(|(v, _, _)| *v == verb)
        .map(|(_, o, _)| o.name())
        .collect()
}

/// Every form of every verb.
pub(super) const VERBS: &[(Verb, &[&str])] = &[
    (Verb::Read, &["read", "reads", "reading"]),
    (
        Verb::Write,
        &[
            "write",
            "writes",
            "writing",
            "change",
            "changes",
            "changing",
            "modify",
            "modifies",
            "modifying",
            "edit",
            "edits",
            "editing",
            "update",
            "updates",
            "updating",
        ],
    ),
    (
        Verb::Create,
        &[
            "create", "creates", "creating", "open", "opens", "opening", "file", "files", "filing",
        ],
    ),
    (Verb::Merge, &["merge", "merges", "merging"]),
    (
        Verb::Delete,
        &[
            "delete", "deletes", "deleting", "remove", "removes", "removing",
        ],
    ),
    (Verb::Send, &["send", "sends", "sending"]),
    (Verb::Post, &["post", "posts", "posting"]),
];

/// The verbs named in "expected a verb (…)".
pub(super) const VERB_LIST: &str = "read, write, create, open, merge, delete, send, post";

/// The objects named in "expected what to … (…)".
pub(super) const OBJECT_LIST: &str =
    "anything, repositories, issues, pull requests, mail, slack messages, github, slack";

/// The verb a form belongs to.
pub(super) fn verb(word: &str) -> Option<Verb> {
    VERBS
        .iter()
        .find(|(_, forms)| forms.contains(&word))
        .map(|(v, _)| *v)
}

/// Object nouns, several words long where a word alone would be another object.
pub(super) const NOUNS: &[(&[&str], Object)] = &[
    (&["github", "pull", "requests"], Object::PullRequests),
    (&["github", "pull", "request"], Object::PullRequests),
    (&["github", "repositories"], Object::Repositories),
    (&["github", "repository"], Object::Repositories),
    (&["github", "repos"], Object::Repositories),
    (&["github", "repo"], Object::Repositories),
    (&["github", "issues"], Object::Issues),
    (&["github", "issue"], Object::Issues),
    (&["pull", "requests"], Object::PullRequests),
    (&["pull", "request"], Object::PullRequests),
    (&["slack", "messages"], Object::SlackMessages),
    (&["slack", "message"], Object::SlackMessages),
    (&["slack", "posts"], Object::SlackMessages),
    (&["slack", "post"], Object::SlackMessages),
    (&["gmail", "messages"], Object::Mail),
    (&["gmail", "message"], Object::Mail),
    (&["pull-requests"], Object::PullRequests),
    (&["pull-request"], Object::PullRequests),
    (&["prs"], Object::PullRequests),
    (&["pr"], Object::PullRequests),
    (&["repositories"], Object::Repositories),
    (&["repository"], Object::Repositories),
    (&["repos"], Object::Repositories),
    (&["repo"], Object::Repositories),
    (&["issues"], Object::Issues),
    (&["issue"], Object::Issues),
    (&["anything"], Object::Anything),
    (&["everything"], Object::Anything),
    (&["mail"], Object::Mail),
    (&["mails"], Object::Mail),
    (&["email"], Object::Mail),
    (&["emails"], Object::Mail),
    (&["e-mail"], Object::Mail),
    (&["e-mails"], Object::Mail),
    (&["gmail"], Object::Mail),
    (&["github"], Object::Github),
    (&["slack"], Object::Slack),
];

/// Nouns that could be two objects: refused rather than guessed.
pub(super) const AMBIGUOUS_NOUNS: &[&str] = &["messages", "message", "posts"];

/// The verb an object-first sentence ("mail to outside acme.com needs approval") means.
pub(super) fn implied_verb(object: Object) -> Option<Verb> {
    match object {
        Object::Mail => Some(Verb::Send),
        Object::SlackMessages => Some(Verb::Post),
        _ => None,
    }
}

/// The verb a budget's name leaves out: "issues" counts issues opened.
pub(super) fn counted_verb(object: Object) -> Option<Verb> {
    match object {
        Object::Mail => Some(Verb::Send),
        Object::SlackMessages | Object::Slack => Some(Verb::Post),
        Object::Issues | Object::PullRequests | Object::Repositories => Some(Verb::Create),
        _ => None,
    }
}
