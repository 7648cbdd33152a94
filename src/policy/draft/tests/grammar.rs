//! The parser alone: each example as meant, variations that read the same, and sentences
//! it refuses with what it expected.

use super::super::grammar::parse;
use super::super::ir::{Object, Reach, Rule, Scope, Verb, Who};
use super::{EXAMPLES, err, strings};
use crate::policy::decision::Effect;

#[test]
fn the_examples_of_the_brief_parse_as_meant() {
    let Rule::Decide {
        who,
        effect,
        action,
    } = parse(EXAMPLES[0]).unwrap()
    else {
        panic!()
    };
    assert_eq!((who, effect), (Who::All, Effect::Allow));
    assert_eq!(
        (action.verb, action.object),
        (Verb::Read, Object::Repositories)
    );
    assert_eq!(action.scope, Some(Scope::Org("acme".into())));

    let Rule::Decide { effect, action, .. } = parse(EXAMPLES[1]).unwrap() else {
        panic!()
    };
    assert_eq!(
        (effect, action.verb, action.object),
        (Effect::Escalate, Verb::Create, Object::Issues)
    );

    let Rule::Decide { effect, action, .. } = parse(EXAMPLES[2]).unwrap() else {
        panic!()
    };
    assert_eq!(
        (effect, action.verb, action.object),
        (Effect::Deny, Verb::Delete, Object::Anything)
    );

    let Rule::Decide { effect, action, .. } = parse(EXAMPLES[3]).unwrap() else {
        panic!()
    };
    assert_eq!(
        (effect, action.verb, action.object),
        (Effect::Escalate, Verb::Send, Object::Mail)
    );
    assert_eq!(action.reach, Some(Reach::Outside(vec!["acme.com".into()])));

    let Rule::Budget {
        action,
        limit,
        window,
        over,
        ..
    } = parse(EXAMPLES[4]).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (action.verb, action.object, action.reach),
        (Verb::Send, Object::Mail, Some(Reach::External))
    );
    assert_eq!(
        (limit, window.text(), over),
        (20, "1h".to_owned(), Effect::Deny)
    );

    let Rule::Only { names, action } = parse(EXAMPLES[5]).unwrap() else {
        panic!()
    };
    assert_eq!(names, vec!["ci-bot".to_owned()]);
    assert_eq!(
        (action.verb, action.object),
        (Verb::Merge, Object::PullRequests)
    );

    let Rule::Budget {
        action,
        limit,
        window,
        ..
    } = parse("no agent posts more than 5 slack messages per minute").unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (action.verb, action.object, limit, window.text()),
        (Verb::Post, Object::SlackMessages, 5, "1m".to_owned())
    );
}

#[test]
fn variations_read_the_same() {
    let same = [
        (EXAMPLES[0], "Agents may read any repository in ACME."),
        (EXAMPLES[0], "an agent may read repos in acme"),
        (
            EXAMPLES[0],
            "every agent can read all repositories in the acme org",
        ),
        (
            EXAMPLES[0],
            "all agents are allowed to read the repo in organization acme",
        ),
        (EXAMPLES[1], "Always ask before opening an issue."),
        (EXAMPLES[1], "agents must ask before opening issues"),
        (EXAMPLES[1], "agents need approval to open issues"),
        (EXAMPLES[1], "opening issues needs approval"),
        (
            EXAMPLES[1],
            "an agent needs approval before creating issues",
        ),
        (EXAMPLES[2], "NEVER DELETE ANYTHING!"),
        (EXAMPLES[2], "agents must not delete anything"),
        (EXAMPLES[2], "no agent deletes anything"),
        (EXAMPLES[2], "no agent may remove everything"),
        (EXAMPLES[2], "do not delete anything"),
        (EXAMPLES[2], "deleting anything is forbidden"),
        (EXAMPLES[3], "Mail to outside acme.com needs approval."),
        (
            EXAMPLES[3],
            "emails to anyone outside acme.com need approval",
        ),
        (
            EXAMPLES[3],
            "sending e-mail outside acme.com requires approval",
        ),
        (
            EXAMPLES[3],
            "agents must ask before sending mail to outside acme.com",
        ),
        (
            EXAMPLES[4],
            "No agent sends more than 20 external e-mails per hour.",
        ),
        (
            EXAMPLES[4],
            "no agent may send more than 20 external emails an hour",
        ),
        (
            EXAMPLES[4],
            "no agents send more than 20 external mails every 1 hour",
        ),
        (EXAMPLES[5], "Only ci-bot may merge pull requests."),
        (EXAMPLES[5], "only ci-bot may merge PRs"),
        (EXAMPLES[5], "only ci-bot can merge a pull request"),
    ];
    for (a, b) in same {
        assert_eq!(parse(a).unwrap(), parse(b).unwrap(), "{a:?} vs {b:?}");
    }
    let Rule::Only { names, .. } =
        parse("only ci-bot, release-bot and Deploy_Bot may merge pull requests").unwrap()
    else {
        panic!()
    };
    assert_eq!(names, ["ci-bot", "release-bot", "Deploy_Bot"]);
    let Rule::Decide { who, .. } = parse("agent ci-bot must not merge pull requests").unwrap()
    else {
        panic!()
    };
    assert_eq!(who, Who::Agents(vec!["ci-bot".into()]));
    let Rule::Budget {
        over,
        window,
        action,
        ..
    } = parse("no agent opens more than 10 issues in acme per 2 days without approval").unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (over, window.text(), action.scope),
        (
            Effect::Escalate,
            "2d".to_owned(),
            Some(Scope::Org("acme".into()))
        )
    );
    let Rule::Decide { action, .. } =
        parse("never send mail outside acme.com, acme.org and acme.co.uk").unwrap()
    else {
        panic!()
    };
    assert_eq!(
        action.reach,
        Some(Reach::Outside(strings(&[
            "acme.co.uk",
            "acme.com",
            "acme.org"
        ])))
    );
    let Rule::Decide { action, .. } =
        parse("agents may write to repositories in acme/web").unwrap()
    else {
        panic!()
    };
    assert_eq!(action.scope, Some(Scope::Repo("acme/web".into())));
}

#[test]
fn sentences_outside_the_grammar_say_what_was_expected() {
    let cases = [
        ("", "the sentence is empty"),
        ("   .", "the sentence is empty"),
        (
            "asdf",
            "expected a subject (agents, an agent, no agent, agent NAME, only NAME), \"never\", \"ask before\", or what the rule is about (e.g. \"mail\", \"opening issues\") at the start, found \"asdf\"",
        ),
        (
            "agents may",
            "expected a verb (read, write, create, open, merge, delete, send, post) after \"may\", found the end of the sentence",
        ),
        (
            "agents may frobnicate repos",
            "expected a verb (read, write, create, open, merge, delete, send, post) after \"may\", found \"frobnicate\"",
        ),
        (
            "agents must not",
            "expected a verb (read, write, create, open, merge, delete, send, post) after \"must not\", found the end of the sentence",
        ),
        (
            "agents",
            "expected a modal (may, must not, never, ask before, needs approval to) after \"agents\", found the end of the sentence",
        ),
        (
            "agents may read",
            "expected what to read (anything, github, repositories, issues, pull requests, mail, slack messages, slack) after \"read\", found the end of the sentence",
        ),
        (
            "agents may read the",
            "expected what the rule is about (anything, repositories, issues, pull requests, mail, slack messages, github, slack) after \"the\", found the end of the sentence",
        ),
        (
            "agents may send messages",
            "\"messages\" is ambiguous: say \"slack messages\" or \"mail\"",
        ),
        (
            "agents may merge mail",
            "\"merge\" cannot be done to mail: they can be send, read, write, delete",
        ),
        (
            "agents may read any repository in acme.com",
            "expected a GitHub organization (letters, digits, hyphens) or owner/repository after \"in\", found \"acme.com\"",
        ),
        (
            "agents may read any repository in",
            "expected a GitHub organization (letters, digits, hyphens) or owner/repository after \"in\", found the end of the sentence",
        ),
        (
            "mail to outside acme needs approval",
            "expected a mail domain such as acme.com after \"to outside\", found \"acme\"",
        ),
        (
            "agents may read mail in acme",
            "\"in <organization>\" narrows GitHub objects (anything, github, repositories, issues, pull requests), not mail",
        ),
        (
            "never read repositories outside acme.com",
            "\"external\" and \"outside <domain>\" are about mail recipients: they go with sending mail, not reading repositories",
        ),
        (
            "agents may post slack messages to public channels",
            "a Slack request does not show whether its channel is public, so \"public channels\" can only restrict (never, ask before, a budget), not allow",
        ),
        (
            "never read slack messages in public channels",
            "\"public channels\" goes with posting slack messages, not reading slack messages",
        ),
        (
            "agents may create repositories in acme/web",
            "\"in acme/web\" names a repository, and repositories are created in an organization (\"in acme\")",
        ),
        (
            "issues need approval",
            "expected a verb before \"issues\" (e.g. \"opening issues needs approval\"): only mail and slack messages go without one",
        ),
        (
            "agents may read repos and write issues",
            "expected the end of the sentence (one rule per sentence) after \"repos\", found \"and\"",
        ),
        (
            "mail to outside acme.com",
            "expected \"needs approval\", \"is allowed\" or \"is not allowed\" after \"acme.com\", found the end of the sentence",
        ),
        (
            "agent may read repos",
            "expected an agent name after \"agent\", found \"may\"",
        ),
        (
            "only may merge pull requests",
            "expected an agent name after \"only\", found \"may\"",
        ),
        (
            "only ci-bot must not merge pull requests",
            "\"only\" goes with \"may\" (\"only ci-bot may merge pull requests\"), found \"must\"",
        ),
        (
            "no agent must not delete anything",
            "\"no agent\" goes with \"may\" or a verb (\"no agent may delete repositories\", \"no agent sends more than 20 emails per hour\"), found \"must\"",
        ),
        (
            "no agent sends more than 20 external emails",
            "expected \"per\" and a unit of time (per hour, per 10 minutes) after \"emails\", found the end of the sentence",
        ),
        (
            "no agent sends more than twenty emails per hour",
            "expected a number after \"more than\", found \"twenty\"",
        ),
        (
            "no agent sends more than 20 emails per fortnight",
            "expected a unit of time (second, minute, hour, day, week) after \"per\", found \"fortnight\"",
        ),
        (
            "no agent sends more than 20 emails per 5 weeks",
            "a budget's window is from 1 second to 31 days, not 5 weeks",
        ),
        (
            "no agent sends more than 200000 emails per hour",
            "\"200000\" is more than the largest limit, 100000",
        ),
        (
            "never delete issues in acme in beta",
            "it says where on GitHub twice: one qualifier of each kind",
        ),
    ];
    for (sentence, want) in cases {
        assert_eq!(err(sentence), want, "{sentence:?}");
    }
}

#[test]
fn two_modals_are_ambiguous_never_a_guess() {
    for (sentence, first, second) in [
        ("agents may never delete anything", "may", "never"),
        (
            "an agent may not ask before merging pull requests",
            "may not",
            "ask before",
        ),
        ("agents must not may delete anything", "must not", "may"),
        ("agents may delete anything, never", "may", "never"),
        ("never delete anything is allowed", "never", "is allowed"),
        ("no agent may never delete repos", "may", "never"),
    ] {
        assert_eq!(
            err(sentence),
            format!(
                "it has two modals, \"{first}\" and \"{second}\": a sentence says one thing (split it in two)"
            ),
            "{sentence:?}"
        );
    }
}
