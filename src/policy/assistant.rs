//! `[policy.assistant]`: a model that drafts what the grammar of `policy draft` cannot read.
//!
//! Only when configured, and only for a set of sentences some of which the grammar refused:
//! [`ask`] sends every sentence (with the Rego the grammar wrote for the ones it read) to an
//! OpenAI-compatible `POST {url}/chat/completions`, and [`accept`] puts the answer through
//! the same gate as a grammar draft — the Rego must compile and define
//! `data.agentgate.decision`, the model must write tests, and they must pass, together with
//! the grammar's cases for the sentences it read (their effects). A refused answer says which
//! check failed and why. An accepted one is marked as the model's in a comment header; it is
//! printed, or written with `--write`, never put in force by this module.

use std::time::Duration;

use serde_json::{Value, json};

use super::config::PolicyConfig;
use super::draft::{self, CheckError, Draft, Origin, SentenceError};
use super::runner::CaseResult;
use crate::intent::Intent;
use crate::secret::Secret;

pub use super::config::AssistantConfig;

/// The most of an answer that is read.
const MAX_ANSWER: usize = 4 << 20;

/// Why the model could not be asked, or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum AssistantError {
    #[error("[policy.assistant] url: {0}")]
    Endpoint(String),
    #[error("[policy.assistant] api_key_file: {0}")]
    ApiKey(String),
    #[error("cannot set up the HTTP client for the assistant: {0}")]
    Client(String),
    #[error(
        "the assistant at {url} did not answer within {timeout:?} ([policy.assistant] timeout)"
    )]
    Timeout { url: String, timeout: Duration },
    #[error("cannot reach the assistant at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the assistant at {url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("the assistant at {url} did not answer with a chat completion: {reason}")]
    Garbage { url: String, reason: String },
}

/// Why a model's draft was refused: the check that failed and what it said.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the answer holds no Rego: it needs a ```rego block with the whole policy")]
    NoRego,
    #[error("the model's Rego does not compile:\n{0}")]
    Compile(String),
    #[error("the model's Rego does not define data.agentgate.decision")]
    NoDecision,
    #[error("the model wrote no tests: its answer needs a ```yaml block with a `cases:` list")]
    NoTests,
    #[error("the model's tests are not a test table: {0}")]
    BadTests(String),
    #[error("the model's policy fails {} of {total} tests:\n{}", .failed.len(), failures(.failed))]
    Failed {
        failed: Vec<CaseResult>,
        total: usize,
    },
}

fn failures(failed: &[CaseResult]) -> String {
    failed
        .iter()
        .map(|r| format!("  FAIL {}: {}", r.name, r.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the model is asked about.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    /// Every sentence, numbered from 1 as the reasons must name them.
    pub sentences: &'a [String],
    /// The sentences the grammar could not read, and why.
    pub not_understood: &'a [SentenceError],
    /// The policy the grammar wrote for the others, if any.
    pub grammar_rego: Option<&'a str>,
}

const SYSTEM_PROMPT: &str = r#"You draft Rego policies for AgentGate, an egress proxy that decides every HTTP request an AI agent makes.

Write one policy: `package agentgate`, `import rego.v1`, defining `data.agentgate.decision`:
  {"effect": "allow" | "escalate" | "deny",
   "reasons": [string, ...],
   "consent": {"binding_message": string},            (optional, for escalate)
   "budgets": [{"key": [name, input.subject.id], "limit": N, "window": "1h", "over": "deny" | "escalate"}]   (optional; AgentGate counts them)}
Deny beats escalate beats allow, and anything no sentence allows is denied (fail closed). Each reason ends with the sentence it comes from: (sentence N: "text").

The input is the AuthZEN tuple AgentGate builds for the request:
  subject:  {"type": "agent", "id": "spiffe://<trust domain>/agent/<name>", "properties": {"name", "owner", "tenant"}}
  action:   {"name", "properties": {"class": "read" | "write" | "delete" | "unknown", "method", "service"}}
            names: "github." + the REST operationId with "/" as "." (github.issues.create, github.pulls.merge),
            github.graphql.<query|mutation>.<field>, gmail.users.messages.send, slack.chat.postMessage
  resource: {"type", "id", "properties"}: github.repo (id "owner/repo"), github.org (id "org"),
            gmail.mailbox (id "me"), slack.channel (id the channel id)
  context:  {"host", "path", "query", "body": {"email": {"recipients", "domains", "recipient_count"},
            "channel", "channels", "graphql": {"fields": [{"operation", "field", "class"}]}}}

If a policy written by AgentGate's grammar follows, keep its rules as they are and add rules for the other sentences in the same style.

Answer with exactly two fenced blocks: the whole policy, then its tests.
```rego
package agentgate
...
```
```yaml
cases:
  - name: opening an issue needs approval
    request: {method: POST, url: "https://api.github.com/repos/acme/web/issues", body_json: {title: "x"}}
    agent: {name: bot}
    expect: escalate
    reason: "sentence 2"
```
Each case gives a real request (method, url, and body_json, body_email: {to: [...]}, or body) that AgentGate turns into the input; write at least one case per sentence."#;

/// The chat-completions request body.
pub fn request_body(config: &AssistantConfig, q: &Question<'_>) -> Value {
    let mut user = String::from("Sentences:\n");
    for (i, s) in q.sentences.iter().enumerate() {
        user.push_str(&format!("{}. {s}\n", i + 1));
    }
    if !q.not_understood.is_empty() {
        user.push_str("\nAgentGate's grammar could not read:\n");
        for e in q.not_understood {
            user.push_str(&format!("- {e}\n"));
        }
    }
    if let Some(rego) = q.grammar_rego {
        user.push_str(&format!(
            "\nThe policy AgentGate's grammar wrote for the others:\n```rego\n{rego}```\n"
        ));
    }
    json!({
        "model": config.model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user},
        ],
    })
}

/// Asks the model; returns its answer's text.
pub async fn ask(
    config: &AssistantConfig,
    tls: rustls::ClientConfig,
    q: &Question<'_>,
) -> Result<String, AssistantError> {
    crate::outbound::check_endpoint(&config.url).map_err(AssistantError::Endpoint)?;
    let key = match &config.api_key_file {
        Some(path) => Some(read_key(path)?),
        None => None,
    };
    let client = crate::outbound::http_client(tls, config.timeout)
        .build()
        .map_err(|e| AssistantError::Client(e.to_string()))?;
    let url = format!("{}/chat/completions", config.url.trim_end_matches('/'));
    let mut req = client.post(&url).json(&request_body(config, q));
    if let Some(key) = &key {
        req = req.bearer_auth(key.expose());
    }
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            return AssistantError::Timeout {
                url: url.clone(),
                timeout: config.timeout,
            };
        }
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason.push_str(": ");
            reason.push_str(&s.to_string());
            source = s.source();
        }
        AssistantError::Unreachable {
            url: url.clone(),
            reason,
        }
    };
    let mut resp = req.send().await.map_err(failed)?;
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(failed)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER {
            return Err(AssistantError::Garbage {
                url,
                reason: format!("the answer is larger than {MAX_ANSWER} bytes"),
            });
        }
    }
    if !status.is_success() {
        let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
        return Err(AssistantError::Status {
            url,
            status: status.as_u16(),
            body: text,
        });
    }
    let garbage = |reason: String| AssistantError::Garbage {
        url: url.clone(),
        reason,
    };
    let doc: Value = serde_json::from_slice(&body).map_err(|e| garbage(e.to_string()))?;
    doc["choices"][0]["message"]["content"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| garbage("no choices[0].message.content".into()))
}

fn read_key(path: &std::path::Path) -> Result<Secret, AssistantError> {
    let bytes =
        crate::state::read_private(path).map_err(|e| AssistantError::ApiKey(e.to_string()))?;
    let key = String::from_utf8(bytes)
        .map_err(|_| AssistantError::ApiKey(format!("{} is not UTF-8 text", path.display())))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(AssistantError::ApiKey(format!(
            "{} is empty",
            path.display()
        )));
    }
    Ok(Secret::new(key.to_owned()))
}

/// The first fenced block whose info string is one of `langs`.
fn fenced(content: &str, langs: &[&str]) -> Option<String> {
    let mut lines = content.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        if !langs.contains(&info.trim().to_lowercase().as_str()) {
            continue;
        }
        let mut block = String::new();
        for l in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                return Some(block);
            }
            block.push_str(l);
            block.push('\n');
        }
        return Some(block);
    }
    None
}

/// The Rego and the tests of an answer: its ```rego and ```yaml blocks (the whole answer
/// is the Rego when it has no fences at all).
pub fn extract(content: &str) -> (Option<String>, Option<String>) {
    let rego = fenced(content, &["rego"]).or_else(|| {
        (!content.contains("```") && content.contains("package ")).then(|| content.to_owned())
    });
    (rego, fenced(content, &["yaml", "yml"]))
}

/// Who drafted, for the header and the origin.
#[derive(Debug, Clone, Copy)]
pub struct Drafter<'a> {
    /// `[policy.assistant] model`.
    pub model: &'a str,
    /// `[policy.assistant] url`.
    pub url: &'a str,
}

/// Puts a model's answer through the gate; an accepted draft comes with its test results.
pub fn accept(
    answer: &str,
    q: &Question<'_>,
    grammar: Option<&Draft>,
    by: Drafter<'_>,
    intent: &Intent,
    config: &PolicyConfig,
) -> Result<(Draft, Vec<CaseResult>), Refusal> {
    let (Some(rego), tests) = extract(answer) else {
        return Err(Refusal::NoRego);
    };
    let tests = tests.ok_or(Refusal::NoTests)?;
    let doc = regorus::Value::from_yaml_str(&tests)
        .map_err(|e| e.to_string())
        .and_then(|v| serde_json::to_value(&v).map_err(|e| e.to_string()))
        .map_err(Refusal::BadTests)?;
    let mut cases = match doc.get("cases") {
        Some(Value::Array(c)) if !c.is_empty() => c.clone(),
        _ => return Err(Refusal::NoTests),
    };
    if let Some(bad) = cases.iter().position(|c| !c.is_object()) {
        return Err(Refusal::BadTests(format!(
            "case {} is not a mapping",
            bad + 1
        )));
    }
    // The sentences the grammar read keep the effects it gave them.
    if let Some(g) = grammar {
        cases.extend(g.effect_cases());
    }
    let mut header = format!(
        "DRAFTED BY A MODEL ({} at {}) for `agentgate policy draft`, from the sentences below.\n\
         AgentGate checked that it compiles, defines data.agentgate.decision and passes the\n\
         tests below; a person must read it before putting it in force.\n",
        by.model, by.url
    );
    for (i, s) in q.sentences.iter().enumerate() {
        let unread = q
            .not_understood
            .iter()
            .any(|e| e.sentence == s.split_whitespace().collect::<Vec<_>>().join(" "));
        let note = if unread {
            "  (not read by the grammar)"
        } else {
            ""
        };
        header.push_str(&format!("  {}. {s}{note}\n", i + 1));
    }
    let rego = format!(
        "{}\n{rego}",
        header
            .lines()
            .map(|l| format!("# {l}").trim_end().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let tests = draft::table(
        "Tests written by the model, then (effects only) the grammar's cases for the\n\
         sentences it read.",
        &cases,
    );
    let results = draft::check(&rego, &tests, intent, config).map_err(|e| match e {
        CheckError::Compile(reason) => Refusal::Compile(reason),
        CheckError::NoDecision => Refusal::NoDecision,
        CheckError::NoTests => Refusal::NoTests,
    })?;
    let failed: Vec<CaseResult> = results.iter().filter(|r| !r.passed).cloned().collect();
    if !failed.is_empty() {
        return Err(Refusal::Failed {
            failed,
            total: results.len(),
        });
    }
    let origin = Origin::Model {
        model: by.model.to_owned(),
        url: by.url.to_owned(),
    };
    Ok((
        Draft::drafted_by(rego, tests, origin, q.sentences.to_vec()),
        results,
    ))
}

#[cfg(test)]
mod tests;
