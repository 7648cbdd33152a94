//! `agentgate policy draft`, the real binary: the README's sentences draft a policy whose
//! generated tests pass (PASS lines), `--write` writes files that `policy test` passes on
//! its own, a sentence outside the grammar exits 1 with what was expected, and
//! `[policy.assistant]` against a real local chat-completions server: a good answer is
//! accepted, a policy that does not compile or fails its tests is refused naming the
//! check, and an error or a timeout is reported plainly. The server records what it was
//! sent (model, messages, the API key from `api_key_file`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::cli::{agentgate, failed, ok, secret_file};

/// The example sentences of the README's "Drafting a policy in plain English".
fn readme_examples() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("<!-- draft-examples:start -->")
        .expect("README draft-examples marker");
    let end = readme[start..]
        .find("<!-- draft-examples:end -->")
        .expect("end marker")
        + start;
    readme[start..end]
        .lines()
        .filter(|l| !l.starts_with("<!--") && !l.starts_with("```") && !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_examples_draft_a_policy_whose_tests_pass() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let sentences = readme_examples();
    assert!(sentences.len() >= 6, "{sentences:?}");
    let mut args = vec!["policy", "draft"];
    args.extend(sentences.iter().map(String::as_str));
    let text = ok(
        &agentgate(&home, &args, &[]).await,
        "policy draft (README examples)",
    );
    assert!(text.contains("package agentgate\n"), "{text}");
    assert!(
        text.contains("\ndecision := {\"effect\": \"deny\""),
        "{text}"
    );
    for (i, s) in sentences.iter().enumerate() {
        let n = i + 1;
        assert!(
            text.contains(&format!("#   {n}. {s}\n")),
            "sentence {n} not in the header:\n{text}"
        );
        assert!(
            text.contains(&format!("PASS  policy_test.yaml: sentence {n}: ")),
            "no PASS line for sentence {n} ({s}):\n{text}"
        );
    }
    assert!(!text.contains("FAIL"), "{text}");
    assert!(text.contains(" passed, 0 failed\n"), "{text}");
    assert!(text.contains("\"budgets\": budgets"), "{text}");
    assert!(text.contains("\"key\": [\"external-mail\", object.get(input, [\"subject\", \"id\"], \"\")], \"limit\": 20, \"window\": \"1h\", \"over\": \"deny\""), "{text}");

    // The same sentences from a rules file, with comments and blank lines, as JSON.
    let rules = dir.path().join("rules.txt");
    std::fs::write(
        &rules,
        format!("# acme's agents\n\n{}\n", sentences.join("\n")),
    )
    .unwrap();
    let rules = rules.display().to_string();
    let out = agentgate(&home, &["policy", "draft", "-f", &rules, "-o", "json"], &[]).await;
    let doc: Value = serde_json::from_str(&ok(&out, "policy draft -f -o json")).unwrap();
    assert_eq!(doc["failed"], 0, "{doc}");
    assert_eq!(doc["origin"]["by"], "grammar");
    assert_eq!(doc["sentences"].as_array().unwrap().len(), sentences.len());
    assert!(
        doc["passed"].as_u64().unwrap() >= sentences.len() as u64,
        "{doc}"
    );
    assert_eq!(doc["written"], json!([]));
    assert!(doc["rego"].as_str().unwrap().contains("package agentgate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_makes_a_directory_that_policy_test_passes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let target = dir.path().join("drafted/acme");
    let target_s = target.display().to_string();
    let sentences = readme_examples();
    let mut args = vec!["policy", "draft", "--write", &target_s];
    args.extend(sentences.iter().map(String::as_str));
    let text = ok(&agentgate(&home, &args, &[]).await, "policy draft --write");
    let rego = std::fs::read_to_string(target.join("policy.rego")).unwrap();
    let tests = std::fs::read_to_string(target.join("policy_test.yaml")).unwrap();
    assert!(
        rego.contains("package agentgate") && tests.starts_with("# Drafted by"),
        "{rego}\n{tests}"
    );
    assert!(
        text.contains(&format!("wrote {}", target.join("policy.rego").display())),
        "{text}"
    );

    let out = agentgate(&home, &["policy", "test", &target_s], &[]).await;
    let tested = ok(&out, "policy test on the written draft");
    assert!(
        tested.contains(" passed, 0 failed (1 directories)"),
        "{tested}"
    );
    for n in 1..=sentences.len() {
        assert!(
            tested.contains(&format!("policy_test.yaml: sentence {n}: ")),
            "{tested}"
        );
    }

    // Existing files are not replaced without --force, and nothing else is done.
    let again = agentgate(
        &home,
        &[
            "policy",
            "draft",
            "--write",
            &target_s,
            "never delete anything",
        ],
        &[],
    )
    .await;
    let err = failed(&again, "policy draft --write over existing files");
    assert!(
        err.contains("policy.rego exists: nothing drafted or written (--force replaces it)"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("policy.rego")).unwrap(),
        rego
    );
    let forced = agentgate(
        &home,
        &[
            "policy",
            "draft",
            "--write",
            &target_s,
            "--force",
            "never delete anything",
        ],
        &[],
    )
    .await;
    ok(&forced, "policy draft --write --force");
    let replaced = std::fs::read_to_string(target.join("policy.rego")).unwrap();
    assert!(
        replaced.contains("#   1. never delete anything\n"),
        "{replaced}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentence_outside_the_grammar_exits_1_saying_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let target = dir.path().join("out");
    let target_s = target.display().to_string();
    let out = agentgate(
        &home,
        &[
            "policy",
            "draft",
            "--write",
            &target_s,
            "never delete anything",
            "agents may frobnicate repos",
        ],
        &[],
    )
    .await;
    let err = failed(&out, "policy draft with a garbage sentence");
    assert!(
        err.contains("error: sentence 2: \"agents may frobnicate repos\": expected a verb (read, write, create, open, merge, delete, send, post) after \"may\", found \"frobnicate\""),
        "{err}"
    );
    assert!(
        err.contains("with [policy.assistant] configured, a model drafts sentences outside it"),
        "{err}"
    );
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(!target.exists(), "nothing may be written");

    let rules = dir.path().join("rules.txt");
    std::fs::write(&rules, "# rules\nagents may read any repository in acme\nagents may frobnicate repos\nagents may never delete anything\n").unwrap();
    let out = agentgate(
        &home,
        &["policy", "draft", "-f", &rules.display().to_string()],
        &[],
    )
    .await;
    let err = failed(&out, "policy draft -f with garbage lines");
    assert!(
        err.contains("error: line 3: \"agents may frobnicate repos\": expected a verb"),
        "{err}"
    );
    assert!(
        err.contains("\nline 4: \"agents may never delete anything\": it has two modals, \"may\" and \"never\""),
        "{err}"
    );
    let out = agentgate(&home, &["policy", "draft", "asdf"], &[]).await;
    let err = failed(&out, "policy draft asdf");
    assert!(err.contains("\"asdf\": expected a subject"), "{err}");
}

// ---------------------------------------------------------------------------------------
// [policy.assistant] against a real chat-completions server.

/// What the server answers for a sentence holding `word`.
const STAR: &str = r#"package agentgate

import rego.v1

decision := {"effect": "allow", "reasons": ["starring is allowed (sentence 2: \"agents may star repositories\")"]} if {
	input.action.name == "github.activity.star-repo-for-authenticated-user"
} else := {"effect": "deny", "reasons": ["deleting is denied (sentence 1: \"never delete anything\")"]} if {
	input.action.properties.class == "delete"
} else := {"effect": "deny", "reasons": ["allowed by no sentence"]}
"#;

const STAR_TESTS: &str = r#"cases:
  - name: starring a repository is allowed
    request: {method: PUT, url: "https://api.github.com/user/starred/acme/web"}
    agent: {name: bot}
    expect: allow
    reason: "sentence 2"
  - name: reading a repository is denied
    request: {method: GET, url: "https://api.github.com/repos/acme/web"}
    expect: deny
"#;

fn canned(user: &str) -> (StatusCode, String, Duration) {
    let fenced = |rego: &str, tests: &str| {
        format!("Here it is.\n\n```rego\n{rego}```\n\n```yaml\n{tests}```\n")
    };
    if user.contains("star repositories") {
        (StatusCode::OK, fenced(STAR, STAR_TESTS), Duration::ZERO)
    } else if user.contains("polish repositories") {
        let broken =
            "package agentgate\n\nimport rego.v1\n\ndecision := {\"effect\": \"allow\" if {\n";
        (StatusCode::OK, fenced(broken, STAR_TESTS), Duration::ZERO)
    } else if user.contains("juggle repositories") {
        let wrong = STAR_TESTS
            .replace(
                "name: reading a repository is denied",
                "name: reading a repository is allowed",
            )
            .replace("expect: deny", "expect: allow");
        (StatusCode::OK, fenced(STAR, &wrong), Duration::ZERO)
    } else if user.contains("sleep on repositories") {
        (
            StatusCode::OK,
            fenced(STAR, STAR_TESTS),
            Duration::from_secs(10),
        )
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "{\"error\": {\"message\": \"model overloaded\"}}".into(),
            Duration::ZERO,
        )
    }
}

/// One request the server received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    authorization: Option<String>,
    body: Value,
}

/// A chat-completions server on 127.0.0.1:0 that answers by the user message.
async fn chat_server() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move { Ok::<_, Infallible>(answer(req, &log).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn answer(req: Request<Incoming>, log: &Mutex<Vec<Seen>>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let user = body["messages"][1]["content"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    log.lock().unwrap().push(Seen {
        path,
        authorization,
        body,
    });
    let (status, content, delay) = canned(&user);
    tokio::time::sleep(delay).await;
    let text = if status == StatusCode::OK {
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "test-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        })
        .to_string()
    } else {
        content
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .unwrap()
}

/// A config file with `[policy.assistant]` pointing at `addr`.
fn assistant_config(dir: &Path, addr: SocketAddr, timeout: &str) -> String {
    let key = secret_file(dir, "assistant.key", "sk-test-0123456789\n");
    let path = dir.join(format!("agentgate-{timeout}.toml"));
    std::fs::write(
        &path,
        format!(
            "[policy.assistant]\nurl = \"http://{addr}/v1\"\nmodel = \"test-model\"\napi_key_file = \"{}\"\ntimeout = \"{timeout}\"\n",
            key.display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assistant_drafts_what_the_grammar_cannot_read_under_the_same_checks() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (addr, seen) = chat_server().await;
    let config = assistant_config(dir.path(), addr, "30s");
    let target = dir.path().join("starred");
    let target_s = target.display().to_string();

    // (a) A policy that compiles, with tests that pass: accepted, marked, written.
    let out = agentgate(
        &home,
        &[
            "policy",
            "-c",
            &config,
            "draft",
            "--write",
            &target_s,
            "never delete anything",
            "agents may star repositories",
        ],
        &[],
    )
    .await;
    let text = ok(&out, "policy draft with the assistant (good answer)");
    assert!(
        text.contains(&format!(
            "# ---- policy.rego (drafted by the model test-model at http://{addr}/v1) ----"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "# DRAFTED BY A MODEL (test-model at http://{addr}/v1)"
        )),
        "{text}"
    );
    assert!(
        text.contains("#   2. agents may star repositories  (not read by the grammar)"),
        "{text}"
    );
    assert!(
        text.contains("PASS  policy_test.yaml: starring a repository is allowed"),
        "{text}"
    );
    // The grammar's case for the sentence it read holds the model's policy to it.
    assert!(
        text.contains(
            "PASS  policy_test.yaml: sentence 1: github.repos.delete on acme/web by bot is denied"
        ),
        "{text}"
    );
    assert!(text.contains(" passed, 0 failed\n"), "{text}");
    let tested = ok(
        &agentgate(&home, &["policy", "test", &target_s], &[]).await,
        "policy test on the model's draft",
    );
    assert!(tested.contains(" passed, 0 failed"), "{tested}");

    let first = seen.lock().unwrap()[0].clone();
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(
        first.authorization.as_deref(),
        Some("Bearer sk-test-0123456789")
    );
    assert_eq!(first.body["model"], "test-model");
    assert_eq!(first.body["temperature"], 0);
    assert_eq!(first.body["messages"][0]["role"], "system");
    assert!(
        first.body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("data.agentgate.decision")
    );
    assert_eq!(first.body["messages"][1]["role"], "user");
    let user = first.body["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.contains("1. never delete anything\n2. agents may star repositories\n"),
        "{user}"
    );
    assert!(
        user.contains("# sentence 1: \"never delete anything\""),
        "the grammar's Rego goes along: {user}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("sk-test"),
        "the key is never printed"
    );

    // (b) Rego that does not compile: refused with the compiler's message.
    let out = agentgate(
        &home,
        &[
            "policy",
            "-c",
            &config,
            "draft",
            "agents may polish repositories",
        ],
        &[],
    )
    .await;
    let err = failed(&out, "policy draft with the assistant (broken Rego)");
    eprintln!("{err}");
    assert!(
        err.contains("the model's draft is refused: the model's Rego does not compile:"),
        "{err}"
    );
    assert!(
        err.contains("--> policy.rego:"),
        "the compiler's location: {err}"
    );

    // (c) Rego that compiles but fails its own tests: refused naming the failing test.
    let out = agentgate(
        &home,
        &[
            "policy",
            "-c",
            &config,
            "draft",
            "agents may juggle repositories",
        ],
        &[],
    )
    .await;
    let err = failed(&out, "policy draft with the assistant (failing tests)");
    eprintln!("{err}");
    assert!(
        err.contains("the model's draft is refused: the model's policy fails 1 of 2 tests:"),
        "{err}"
    );
    assert!(
        err.contains("FAIL reading a repository is allowed: expected allow, got deny"),
        "{err}"
    );

    // (d) The server fails, or does not answer in time: a plain error.
    let out = agentgate(
        &home,
        &[
            "policy",
            "-c",
            &config,
            "draft",
            "agents may overload the model",
        ],
        &[],
    )
    .await;
    let err = failed(&out, "policy draft with the assistant (HTTP 500)");
    eprintln!("{err}");
    assert!(
        err.contains(&format!(
            "the assistant at http://{addr}/v1/chat/completions answered HTTP 500: "
        )),
        "{err}"
    );
    assert!(err.contains("model overloaded"), "{err}");
    let slow = assistant_config(dir.path(), addr, "1s");
    let out = agentgate(
        &home,
        &[
            "policy",
            "-c",
            &slow,
            "draft",
            "agents may sleep on repositories",
        ],
        &[],
    )
    .await;
    let err = failed(&out, "policy draft with the assistant (timeout)");
    eprintln!("{err}");
    assert!(
        err.contains(&format!("the assistant at http://{addr}/v1/chat/completions did not answer within 1s ([policy.assistant] timeout)")),
        "{err}"
    );

    // Nobody to ask: a sentence the grammar can read never reaches the model.
    let before = seen.lock().unwrap().len();
    ok(
        &agentgate(
            &home,
            &["policy", "-c", &config, "draft", "never delete anything"],
            &[],
        )
        .await,
        "policy draft, grammar only",
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "the model was asked about a sentence the grammar reads"
    );
}
