//! The grammar (every README example, variations, refusals) and whole drafts: each compiles
//! and passes its own generated table, and decides as the sentences say.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use super::grammar::parse;
use super::*;

mod grammar;
use crate::policy::decision::{Budget, Effect};
use crate::policy::engine::Policy;

fn intent() -> &'static Intent {
    static INTENT: OnceLock<Intent> = OnceLock::new();
    INTENT.get_or_init(|| Intent::embedded(1 << 20).unwrap())
}

fn config() -> PolicyConfig {
    // Debug builds evaluate far slower than release; the bound is not under test here.
    PolicyConfig {
        eval_timeout: Duration::from_secs(5),
        ..PolicyConfig::default()
    }
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}

/// Drafts `sentences`, runs the generated table, and asserts every case passed.
fn drafted(sentences: &[&str]) -> Draft {
    let draft = compile_sources(&Source::from_args(&strings(sentences)), intent())
        .unwrap_or_else(|e| panic!("{sentences:?}: {e}"));
    let results = check(&draft.rego, &draft.tests, intent(), &config())
        .unwrap_or_else(|e| panic!("{sentences:?}: {e}\n{}", draft.rego));
    let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    assert!(
        failed.is_empty(),
        "{sentences:?}: {failed:#?}\n{}\n{}",
        draft.rego,
        draft.tests
    );
    assert!(results.len() >= sentences.len(), "{results:?}");
    draft
}

fn err(sentence: &str) -> String {
    parse(sentence).expect_err(sentence)
}

/// The decision of `draft` for a request (`request:` of a table) by `agent`.
fn decide(draft: &Draft, request: Value, agent: &str) -> crate::policy::decision::Decision {
    let sources = Sources {
        rego: vec![("policy.rego".into(), draft.rego.clone())],
        ..Sources::default()
    };
    let policy = Policy::from_sources(&sources, &config()).unwrap();
    let tuple = runner::tuple_for(&request, Some(&json!({"name": agent})), intent()).unwrap();
    policy.evaluate(&tuple)
}

const EXAMPLES: &[&str] = &[
    "agents may read any repository in acme",
    "ask before opening issues",
    "never delete anything",
    "mail to outside acme.com needs approval",
    "no agent sends more than 20 external emails per hour",
    "only ci-bot may merge pull requests",
];

#[test]
fn errors_name_the_line_or_sentence_and_all_are_reported() {
    let file =
        "# rules\nagents may read any repository in acme\n\nagents may frobnicate repos\nasdf\n";
    let e = compile_sources(&Source::from_file(file), intent())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("line 4: \"agents may frobnicate repos\": expected a verb (read, write, create, open, merge, delete, send, post) after \"may\", found \"frobnicate\"\nline 5: \"asdf\": "), "{e}");
    let e = compile_sources(
        &Source::from_args(&strings(&["never delete anything", "agents may"])),
        intent(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("sentence 2: \"agents may\": expected a verb"),
        "{e}"
    );
    assert!(matches!(
        compile_sources(&[], intent()),
        Err(DraftError::Empty)
    ));
    // "external" needs a domain some sentence names with "outside".
    let e = compile_sources(&Source::from_args(&strings(&[EXAMPLES[4]])), intent())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"external\" means outside the domains the sentences name"),
        "{e}"
    );
}

#[test]
fn every_example_compiles_to_a_policy_whose_tests_pass() {
    let all = drafted(EXAMPLES);
    assert!(all.warnings.is_empty(), "{:?}", all.warnings);
    for (i, s) in EXAMPLES.iter().enumerate() {
        assert!(all.rego.contains(&format!("#   {}. {s}\n", i + 1)), "{s}");
        assert!(
            all.tests
                .contains(&format!("reason: \"sentence {}: \\\"{s}\\\"\"", i + 1)),
            "{s}\n{}",
            all.tests
        );
    }
    for s in EXAMPLES.iter().filter(|s| !s.contains("external")) {
        let one = drafted(&[s]);
        assert!(one.warnings.is_empty(), "{s}: {:?}", one.warnings);
    }
}

/// The README's example sentences (between the draft-examples markers) make one policy
/// whose table passes, and every example of its grammar table drafts on its own.
#[test]
fn readme_examples_compile_and_pass() {
    let readme = include_str!("../../../README.md");
    let section = |name: &str| -> &str {
        let start = readme
            .find(&format!("<!-- {name}:start -->"))
            .unwrap_or_else(|| panic!("README has no {name} markers"));
        let end = readme[start..]
            .find(&format!("<!-- {name}:end -->"))
            .unwrap()
            + start;
        &readme[start..end]
    };
    let examples: Vec<&str> = section("draft-examples")
        .lines()
        .filter(|l| !l.starts_with("<!--") && !l.starts_with("```") && !l.trim().is_empty())
        .collect();
    assert!(examples.len() >= EXAMPLES.len(), "{examples:?}");
    for s in EXAMPLES {
        assert!(examples.contains(s), "the README lacks {s:?}");
    }
    let draft = drafted(&examples);
    assert!(draft.warnings.is_empty(), "{:?}", draft.warnings);
    let forms: Vec<String> = section("draft-forms")
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| Form"))
        .map(|l| {
            l.split('|')
                .nth(2)
                .unwrap()
                .trim()
                .trim_matches('`')
                .to_owned()
        })
        .collect();
    assert!(forms.len() >= 12, "{forms:?}");
    for s in &forms {
        drafted(&[s.as_str()]);
    }
}

/// Every verb the table gives each object, in each kind of sentence, drafts a policy whose
/// example request the sentence decides (so each witness request is what it claims).
#[test]
fn every_verb_and_object_drafts_a_passing_policy() {
    for (verb, object, _) in vocab::MEANINGS {
        let phrase = format!("{} {}", verb.word(), object.name());
        for sentence in [
            format!("agents may {phrase}"),
            format!("never {phrase}"),
            format!("ask before {phrase}"),
            format!("only ci-bot may {phrase}"),
            format!(
                "no agent {}s more than 3 {} per day",
                verb.word(),
                object.name()
            ),
        ] {
            let d = drafted(&[&sentence]);
            let own = d.warnings.iter().find(|w| w.contains("never decides"));
            assert!(own.is_none(), "{sentence}: {:?}", d.warnings);
        }
    }
    for sentence in [
        "agents may read anything in acme",
        "never write github in acme/web",
        "agent ci-bot may open pull requests in acme",
        "never post slack messages to public channels",
        "agents may send mail to outside acme.com",
    ] {
        let d = drafted(&[sentence]);
        assert!(d.warnings.is_empty(), "{sentence}: {:?}", d.warnings);
    }
}

#[test]
fn an_external_mail_send_carries_the_budget() {
    let draft = drafted(&[EXAMPLES[3], EXAMPLES[4], "agents may send mail"]);
    let send = |to: &str| json!({"method": "POST", "url": "https://gmail.googleapis.com/gmail/v1/users/me/messages/send", "body_email": {"to": [to]}});
    let d = decide(&draft, send("carol@partner.example"), "bot");
    assert_eq!(d.effect, Effect::Escalate, "{:?}", d.reasons);
    assert_eq!(
        d.budgets,
        vec![Budget {
            key: vec![
                "external-mail".into(),
                "spiffe://agentgate.local/agent/bot".into()
            ],
            limit: 20,
            window: Duration::from_secs(3600),
            over: Effect::Deny,
        }]
    );
    assert!(d.consent.is_some());
    // Inside acme.com (a subdomain too): allowed, and not counted.
    let d = decide(&draft, send("bob@eu.acme.com"), "bot");
    assert_eq!(
        (d.effect, d.budgets.len()),
        (Effect::Allow, 0),
        "{:?}",
        d.reasons
    );
    // A draft sent by id shows no recipients: it may go outside, so it is asked and counted.
    let by_id = json!({"method": "POST", "url": "https://gmail.googleapis.com/gmail/v1/users/me/drafts/send", "body_json": {"id": "r-1"}});
    let d = decide(&draft, by_id, "bot");
    assert_eq!(
        (d.effect, d.budgets.len()),
        (Effect::Escalate, 1),
        "{:?}",
        d.reasons
    );

    let slack = drafted(&[
        "agents may post slack messages",
        "no agent posts more than 5 slack messages per minute without approval",
    ]);
    let post = json!({"method": "POST", "url": "https://slack.com/api/chat.postMessage", "body_json": {"channel": "C0123ABCD", "text": "hi"}});
    let d = decide(&slack, post, "bot");
    assert_eq!(d.effect, Effect::Allow, "{:?}", d.reasons);
    assert_eq!(d.budgets.len(), 1);
    let b = &d.budgets[0];
    assert_eq!(
        (b.name(), b.limit, b.window, b.over),
        (
            "slack-messages",
            5,
            Duration::from_secs(60),
            Effect::Escalate
        )
    );
}

#[test]
fn conflicts_resolve_deny_over_escalate_over_allow_naming_the_sentence() {
    let draft = drafted(&[
        "agents may write to any repository in acme",
        "ask before opening issues",
        "agents may delete anything",
        "never delete repositories",
    ]);
    let issue = json!({"method": "POST", "url": "https://api.github.com/repos/acme/web/issues", "body_json": {"title": "x"}});
    let d = decide(&draft, issue, "bot");
    assert_eq!(d.effect, Effect::Escalate);
    assert_eq!(
        d.reasons,
        [
            "github.issues.create on acme/web: creating issues needs a person's approval (sentence 2: \"ask before opening issues\")"
        ]
    );
    let file = json!({"method": "PUT", "url": "https://api.github.com/repos/acme/web/contents/a.md", "body_json": {"message": "m", "content": "aGk="}});
    let d = decide(&draft, file, "bot");
    assert_eq!(d.effect, Effect::Allow);
    assert!(
        d.reasons[0].ends_with("(sentence 1: \"agents may write to any repository in acme\")"),
        "{:?}",
        d.reasons
    );
    let delete = json!({"method": "DELETE", "url": "https://api.github.com/repos/acme/web"});
    let d = decide(&draft, delete, "bot");
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(
        d.reasons,
        [
            "github.repos.delete on acme/web: deleting repositories is denied (sentence 4: \"never delete repositories\")"
        ]
    );
    // Nothing allows it: denied, fail closed.
    let d = decide(
        &draft,
        json!({"method": "GET", "url": "https://slack.com/api/conversations.list"}),
        "bot",
    );
    assert_eq!(d.effect, Effect::Deny);
    assert!(
        d.reasons[0].contains("is allowed by no sentence: denied (fail closed)"),
        "{:?}",
        d.reasons
    );

    // A sentence another always overrides is reported.
    let shadowed = drafted(&["never delete anything", "agents may delete repositories"]);
    assert_eq!(shadowed.warnings.len(), 1, "{:?}", shadowed.warnings);
    assert!(shadowed.warnings[0].starts_with("sentence 2: \"agents may delete repositories\" never decides its example (github.repos.delete on acme/web by bot): sentence 1 decides it"), "{:?}", shadowed.warnings);
}

#[test]
fn graphql_fields_are_judged_one_by_one() {
    let draft = drafted(&[
        "agents may write to github",
        "ask before merging pull requests",
        "agents may create issues",
    ]);
    let doc = |q: &str| json!({"method": "POST", "url": "https://api.github.com/graphql", "body_json": {"query": q}});
    let hidden = doc(
        "mutation { a: createIssue(input: {repositoryId: \"R\", title: \"x\"}) { clientMutationId } mergePullRequest(input: {pullRequestId: \"P\"}) { clientMutationId } }",
    );
    let d = decide(&draft, hidden, "bot");
    assert_eq!(d.effect, Effect::Escalate, "{:?}", d.reasons);
    assert!(
        d.reasons[0].contains("github.graphql.mutation.mergePullRequest"),
        "{:?}",
        d.reasons
    );

    let only_issues = drafted(&["agents may create issues"]);
    let mixed = doc(
        "mutation { createIssue(input: {repositoryId: \"R\", title: \"x\"}) { clientMutationId } mergePullRequest(input: {pullRequestId: \"P\"}) { clientMutationId } }",
    );
    let d = decide(&only_issues, mixed, "bot");
    assert_eq!(d.effect, Effect::Deny, "{:?}", d.reasons);
    assert_eq!(
        d.reasons,
        [
            "github.graphql.mutation.mergePullRequest (class write) is allowed by no sentence: denied (fail closed)"
        ]
    );
    // A repository-scoped permission never reaches GraphQL; a restriction always does.
    let scoped = drafted(&[
        "agents may read anything",
        "never read repositories in acme",
    ]);
    let d = decide(&scoped, doc("query { viewer { login } }"), "bot");
    assert_eq!(d.effect, Effect::Deny, "{:?}", d.reasons);
    let d = decide(
        &scoped,
        json!({"method": "GET", "url": "https://api.github.com/repos/other/web"}),
        "bot",
    );
    assert_eq!(d.effect, Effect::Allow, "{:?}", d.reasons);
}

#[test]
fn only_and_named_agents() {
    let draft = drafted(&[
        EXAMPLES[5],
        "agent release-bot may create repositories in acme",
    ]);
    let merge = json!({"method": "PUT", "url": "https://api.github.com/repos/acme/web/pulls/7/merge", "body_json": {}});
    assert_eq!(
        decide(&draft, merge.clone(), "ci-bot").effect,
        Effect::Allow
    );
    let d = decide(&draft, merge, "release-bot");
    assert_eq!(d.effect, Effect::Deny);
    assert!(
        d.reasons[0].contains("allowed only for ci-bot: denied (sentence 1"),
        "{:?}",
        d.reasons
    );
    let create = json!({"method": "POST", "url": "https://api.github.com/orgs/acme/repos", "body_json": {"name": "x"}});
    assert_eq!(
        decide(&draft, create.clone(), "release-bot").effect,
        Effect::Allow
    );
    assert_eq!(decide(&draft, create, "ci-bot").effect, Effect::Deny);
}

#[test]
fn public_channels_restrict_what_may_be_public() {
    let draft = drafted(&[
        "agents may post slack messages",
        "never post slack messages to public channels",
    ]);
    let post = |channel: &str| json!({"method": "POST", "url": "https://slack.com/api/chat.postMessage", "body_json": {"channel": channel, "text": "hi"}});
    assert_eq!(
        decide(&draft, post("C0123ABCD"), "bot").effect,
        Effect::Deny
    );
    assert_eq!(
        decide(&draft, post("D0123ABCD"), "bot").effect,
        Effect::Allow
    );
    assert_eq!(decide(&draft, post("#general"), "bot").effect, Effect::Deny);
}

#[test]
fn the_table_is_yaml_for_any_value() {
    let rows = vec![
        json!({"name": "a \"quoted\" name: with colon", "request": {"method": "GET", "url": "https://x/y?z=1#f", "headers": {"x-odd key": "v"}}, "expect": "allow", "extra": [1, null, true]}),
    ];
    let text = table("line one\n\nline three", &rows);
    assert!(
        text.starts_with("# line one\n#\n# line three\ncases:\n"),
        "{text}"
    );
    let back = regorus::Value::from_yaml_str(&text).unwrap();
    let back = serde_json::to_value(&back).unwrap();
    assert_eq!(back["cases"][0], rows[0]);
}

#[test]
fn mcp_servers_not_configured_and_redefined_tools_are_not_up_to_the_sentences() {
    let draft = drafted(&["agents may read anything"]);
    let sources = Sources {
        rego: vec![("policy.rego".into(), draft.rego.clone())],
        ..Sources::default()
    };
    let policy = Policy::from_sources(&sources, &config()).unwrap();
    let tuple = |context: Value| {
        json!({
            "subject": {"type": "agent", "id": "spiffe://agentgate.local/agent/bot", "properties": {"name": "bot"}},
            "action": {"name": "mcp.github.tools.call.list_issues", "properties": {"method": "POST", "service": "mcp", "class": "read", "known": true}},
            "resource": {"type": "github.repo", "id": "acme/web", "properties": {"owner": "acme", "repo": "web"}},
            "context": context,
        })
    };
    let d = policy.evaluate(&tuple(
        json!({"mcp": {"server": "github", "method": "tools/call"}}),
    ));
    assert_eq!(d.effect, Effect::Allow, "{:?}", d.reasons);
    let d = policy.evaluate(&tuple(
        json!({"mcp": {"server": "unknown", "method": "tools/call"}}),
    ));
    assert_eq!(d.effect, Effect::Deny, "{:?}", d.reasons);
    assert!(
        d.reasons[0].contains("not configured for"),
        "{:?}",
        d.reasons
    );
    let d = policy.evaluate(&tuple(
        json!({"mcp": {"server": "github"}, "tool": {"changed": true}}),
    ));
    assert_eq!(d.effect, Effect::Escalate, "{:?}", d.reasons);
}
