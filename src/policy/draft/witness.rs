//! Realistic requests for the test table: one per verb and object of the grammar, moved
//! to another organization, repository, mail domain or channel when a probe asks.

use serde_json::{Value, json};

use super::ir::{Action, Object, Reach, Scope, Verb};

/// Where a probe moves the witness: another organization or repository, mail to a
/// domain, a direct message.
#[derive(Clone)]
pub(super) enum Boundary {
    Org(String),
    Repo(String),
    Inside(String),
    Private,
}

/// A realistic request that `action` names (moved across `boundary` when given).
pub(super) fn witness(action: &Action, boundary: Option<&Boundary>) -> Value {
    let repo = match (boundary, &action.scope) {
        (Some(Boundary::Org(o)), _) => format!("{o}/web"),
        (Some(Boundary::Repo(r)), _) => r.clone(),
        (_, Some(Scope::Org(o))) => format!("{o}/web"),
        (_, Some(Scope::Repo(r))) => r.clone(),
        (_, None) => "acme/web".to_owned(),
    };
    let org = repo.split('/').next().unwrap_or("acme").to_owned();
    let gh = |method: &str, path: &str, body: Option<Value>| {
        let mut r =
            json!({"method": method, "url": format!("https://api.github.com/repos/{repo}{path}")});
        if let Some(b) = body {
            r["body_json"] = b;
        }
        r
    };
    let channel = match boundary {
        Some(Boundary::Private) => "D0123ABCD",
        _ => "C0123ABCD",
    };
    let gmail = |method: &str, path: &str| json!({"method": method, "url": format!("https://gmail.googleapis.com/gmail/v1/users/me{path}")});
    match (action.verb, action.object) {
        (Verb::Read, Object::Anything | Object::Github | Object::Repositories) => {
            gh("GET", "", None)
        }
        (Verb::Write, Object::Anything | Object::Github | Object::Repositories) => gh(
            "PUT",
            "/contents/docs/README.md",
            Some(json!({"message": "docs: typo", "content": "aGVsbG8=", "branch": "docs"})),
        ),
        (Verb::Delete, Object::Anything | Object::Github | Object::Repositories) => {
            gh("DELETE", "", None)
        }
        (Verb::Create, Object::Repositories) => json!({
            "method": "POST",
            "url": format!("https://api.github.com/orgs/{org}/repos"),
            "body_json": {"name": "new-service"},
        }),
        (Verb::Read, Object::Issues) => gh("GET", "/issues", None),
        (Verb::Write, Object::Issues) => gh("PATCH", "/issues/1", Some(json!({"state": "closed"}))),
        (Verb::Create, Object::Issues) => gh(
            "POST",
            "/issues",
            Some(json!({"title": "Flaky test", "body": "seen twice today"})),
        ),
        (Verb::Delete, Object::Issues) => gh("DELETE", "/issues/comments/1", None),
        (Verb::Read, Object::PullRequests) => gh("GET", "/pulls", None),
        (Verb::Write, Object::PullRequests) => gh(
            "PATCH",
            "/pulls/1",
            Some(json!({"title": "Fix the flaky test"})),
        ),
        (Verb::Create, Object::PullRequests) => gh(
            "POST",
            "/pulls",
            Some(json!({"title": "Fix the flaky test", "head": "fix", "base": "main"})),
        ),
        (Verb::Merge, Object::PullRequests) => gh(
            "PUT",
            "/pulls/1/merge",
            Some(json!({"merge_method": "squash"})),
        ),
        (Verb::Delete, Object::PullRequests) => gh("DELETE", "/pulls/comments/1", None),
        (Verb::Send, Object::Mail) => {
            let to = recipient(action, boundary);
            json!({
                "method": "POST",
                "url": "https://gmail.googleapis.com/gmail/v1/users/me/messages/send",
                "body_email": {"to": [to], "subject": "Quote"},
            })
        }
        (Verb::Read, Object::Mail) => gmail("GET", "/messages?q=is:unread"),
        (Verb::Write, Object::Mail) => {
            let mut r = gmail("POST", "/messages/18c0ffee/modify");
            r["body_json"] = json!({"addLabelIds": ["STARRED"]});
            r
        }
        (Verb::Delete, Object::Mail) => gmail("DELETE", "/messages/18c0ffee"),
        (Verb::Read, Object::Slack | Object::SlackMessages) => json!({
            "method": "POST",
            "url": "https://slack.com/api/conversations.history",
            "headers": {"content-type": "application/x-www-form-urlencoded"},
            "body": format!("channel={channel}&limit=20"),
        }),
        (Verb::Delete, Object::Slack | Object::SlackMessages) => json!({
            "method": "POST",
            "url": "https://slack.com/api/chat.delete",
            "body_json": {"channel": channel, "ts": "1700000000.000100"},
        }),
        // Posting, and any other Slack write.
        _ => json!({
            "method": "POST",
            "url": "https://slack.com/api/chat.postMessage",
            "body_json": {"channel": channel, "text": "deploy finished"},
        }),
    }
}

/// A recipient outside the sentence's domains, or inside them for a boundary probe.
fn recipient(action: &Action, boundary: Option<&Boundary>) -> String {
    let inside: &[String] = match &action.reach {
        Some(Reach::Outside(d)) => d,
        _ => &[],
    };
    if let Some(Boundary::Inside(domain)) = boundary {
        return format!("bob@{domain}");
    }
    ["partner.example", "elsewhere.example", "outside.example"]
        .into_iter()
        .find(|d| {
            !inside
                .iter()
                .any(|i| d == i || d.ends_with(&format!(".{i}")))
        })
        .map_or_else(|| "carol@example.org".to_owned(), |d| format!("carol@{d}"))
}
