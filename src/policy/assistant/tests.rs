//! The gate a model's answer must pass, without a model: canned answers accepted or refused
//! with the check that failed.

use super::*;
use crate::policy::draft::{Source, understand};

fn intent() -> Intent {
    Intent::embedded(1 << 20).unwrap()
}

fn config() -> PolicyConfig {
    PolicyConfig {
        eval_timeout: Duration::from_secs(5),
        ..PolicyConfig::default()
    }
}

const STAR: &str = r#"package agentgate

import rego.v1

decision := {"effect": "allow", "reasons": ["starring is allowed (sentence 2: \"agents may star repositories\")"]} if {
	input.action.name == "github.activity.star-repo-for-authenticated-user"
} else := {"effect": "deny", "reasons": ["github.repos.delete is denied (sentence 1: \"never delete anything\")"]} if {
	input.action.properties.class == "delete"
} else := {"effect": "deny", "reasons": ["allowed by no sentence"]}
"#;

const STAR_TESTS: &str = r#"cases:
  - name: starring a repository is allowed
    request: {method: PUT, url: "https://api.github.com/user/starred/acme/web"}
    expect: allow
  - name: reading a repository is not
    request: {method: GET, url: "https://api.github.com/repos/acme/web"}
    expect: deny
"#;

fn answer(rego: &str, tests: &str) -> String {
    format!("Here is the policy.\n\n```rego\n{rego}```\n\nAnd its tests:\n\n```yaml\n{tests}```\n")
}

/// Asks the gate about `answer` for "never delete anything" (read by the grammar) and
/// "agents may star repositories" (not).
fn gate(answer: &str) -> Result<(Draft, Vec<CaseResult>), Refusal> {
    let sentences = vec![
        "never delete anything".to_owned(),
        "agents may star repositories".to_owned(),
    ];
    let intent = intent();
    let understood = understand(&Source::from_args(&sentences), &intent).unwrap();
    assert_eq!(understood.errors.len(), 1, "{:?}", understood.errors);
    let q = Question {
        sentences: &sentences,
        not_understood: &understood.errors,
        grammar_rego: understood.draft.as_ref().map(|d| d.rego.as_str()),
    };
    let by = Drafter {
        model: "test-model",
        url: "http://127.0.0.1:9/v1",
    };
    accept(
        answer,
        &q,
        understood.draft.as_ref(),
        by,
        &intent,
        &config(),
    )
}

#[test]
fn a_policy_that_compiles_and_passes_is_accepted_and_marked() {
    let (draft, results) = gate(&answer(STAR, STAR_TESTS)).unwrap();
    assert!(results.iter().all(|r| r.passed), "{results:?}");
    // The model's two cases, and the grammar's case for sentence 1.
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(
        results
            .iter()
            .any(|r| r.name.starts_with("sentence 1: github.repos.delete"))
    );
    assert!(
        draft
            .rego
            .starts_with("# DRAFTED BY A MODEL (test-model at http://127.0.0.1:9/v1)"),
        "{}",
        draft.rego
    );
    assert!(
        draft
            .rego
            .contains("#   2. agents may star repositories  (not read by the grammar)\n"),
        "{}",
        draft.rego
    );
    assert!(
        draft.rego.contains("#   1. never delete anything\n"),
        "{}",
        draft.rego
    );
    assert_eq!(
        draft.origin,
        Origin::Model {
            model: "test-model".into(),
            url: "http://127.0.0.1:9/v1".into()
        }
    );
}

#[test]
fn each_failed_check_is_named() {
    let e = gate(&answer("package agentgate\n\ndecision := {\n", STAR_TESTS)).unwrap_err();
    assert!(matches!(e, Refusal::Compile(_)), "{e}");
    assert!(
        e.to_string()
            .starts_with("the model's Rego does not compile:\n--> policy.rego:"),
        "{e}"
    );

    let e = gate(&answer("package other\n\nx := 1\n", STAR_TESTS)).unwrap_err();
    assert!(matches!(e, Refusal::NoDecision), "{e}");

    let e = gate(&format!("```rego\n{STAR}```\n")).unwrap_err();
    assert!(matches!(e, Refusal::NoTests), "{e}");
    let e = gate(&answer(STAR, "cases: []\n")).unwrap_err();
    assert!(matches!(e, Refusal::NoTests), "{e}");
    let e = gate(&answer(STAR, "cases: [1, 2]\n")).unwrap_err();
    assert!(matches!(e, Refusal::BadTests(_)), "{e}");

    let e = gate("I cannot help with that.").unwrap_err();
    assert!(matches!(e, Refusal::NoRego), "{e}");

    let wrong = STAR_TESTS.replace("expect: deny", "expect: allow");
    let e = gate(&answer(STAR, &wrong)).unwrap_err().to_string();
    assert!(e.starts_with("the model's policy fails 1 of 3 tests:\n  FAIL reading a repository is not: expected allow, got deny"), "{e}");

    // The grammar's reading of sentence 1 holds the model to it.
    let lax = STAR.replace("input.action.properties.class == \"delete\"", "false");
    let lax = lax.replace(
        "} else := {\"effect\": \"deny\", \"reasons\": [\"allowed by no sentence\"]}",
        "} else := {\"effect\": \"allow\", \"reasons\": [\"anything goes\"]}",
    );
    let e = gate(&answer(
        &lax,
        &STAR_TESTS.replace("expect: deny", "expect: allow"),
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("FAIL sentence 1: github.repos.delete on acme/web by bot is denied: expected deny, got allow"), "{e}");
}

#[test]
fn extract_takes_fenced_blocks_or_the_whole_answer() {
    let (rego, yaml) = extract(&answer("package agentgate\n", "cases: []\n"));
    assert_eq!(
        (rego.as_deref(), yaml.as_deref()),
        (Some("package agentgate\n"), Some("cases: []\n"))
    );
    let (rego, yaml) = extract("package agentgate\n\ndecision := 1\n");
    assert_eq!(
        (rego.as_deref(), yaml),
        (Some("package agentgate\n\ndecision := 1\n"), None)
    );
    let (rego, _) = extract("```python\npackage agentgate\n```\n");
    assert_eq!(rego, None);
    let (_, yaml) = extract("```YML\ncases: []\n```");
    assert_eq!(yaml.as_deref(), Some("cases: []\n"));
}

#[test]
fn config_reads_strictly_with_a_default_timeout() {
    let c: PolicyConfig =
        toml::from_str("[assistant]\nurl = \"http://127.0.0.1:8080/v1\"\nmodel = \"m\"\n").unwrap();
    let a = c.assistant.unwrap();
    assert_eq!((a.timeout, a.api_key_file), (Duration::from_secs(60), None));
    let e = toml::from_str::<PolicyConfig>(
        "[assistant]\nurl = \"u\"\nmodel = \"m\"\napi_key = \"k\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("unknown field `api_key`"), "{e}");
    assert!(PolicyConfig::default().assistant.is_none());
}

#[test]
fn the_request_is_a_plain_chat_completion() {
    let config: AssistantConfig =
        toml::from_str("url = \"http://127.0.0.1:8080/v1\"\nmodel = \"m\"\n").unwrap();
    let sentences = vec!["agents may star repositories".to_owned()];
    let errors = understand(&Source::from_args(&sentences), &intent())
        .unwrap()
        .errors;
    let q = Question {
        sentences: &sentences,
        not_understood: &errors,
        grammar_rego: None,
    };
    let body = request_body(&config, &q);
    assert_eq!(body["model"], "m");
    assert_eq!(body["temperature"], 0);
    assert_eq!(body["messages"][0]["role"], "system");
    assert!(
        body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("data.agentgate.decision")
    );
    assert_eq!(body["messages"][1]["role"], "user");
    let user = body["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.starts_with("Sentences:\n1. agents may star repositories\n"),
        "{user}"
    );
    assert!(
        user.contains("- sentence 1: \"agents may star repositories\": expected a verb"),
        "{user}"
    );
}
