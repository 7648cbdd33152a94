//! GitHub: the REST API (`api.github.com`, `uploads.github.com`), GraphQL (`POST /graphql`,
//! read by the generic GraphQL reader) and git over HTTPS on `github.com` (whose fetch and
//! push the catalog tells apart by `info/refs?service=`). Account and repository names are
//! ASCII and matched without case; one `vault set github` serves the API and git.

use http::HeaderName;

use super::vendor::{Form, Sibling, Vendor};

/// GitHub's REST API: the default origin of its credentials, and where GitHub App
/// installation tokens are minted unless a connection names another.
pub const API_URL: &str = "https://api.github.com";

/// GitHub, as AgentGate knows it.
pub static VENDOR: Vendor = Vendor {
    service: "github",
    catalog: &[
        (
            "github.json",
            include_str!("../../config/services/github.json"),
        ),
        (
            "github-graphql.json",
            include_str!("../../config/services/github-graphql.json"),
        ),
        (
            "github-git.json",
            include_str!("../../config/services/github-git.json"),
        ),
    ],
    origin: API_URL,
    // github.com is where git talks to GitHub over HTTPS; a GitHub token (PAT, OAuth, App
    // installation token) works there as it does at the API, sent the way GitHub documents
    // for git: user `x-access-token`, the token as password. So one `vault set github`
    // serves both hosts. A connection stored for github.com itself wins, and still gets the
    // git form.
    siblings: &[Sibling {
        origin: "github.com",
        served_by: "api.github.com",
        form: Form::Basic {
            user: "x-access-token",
        },
    }],
    meaning_headers: &MEANING_HEADERS,
    bodies: &[],
    names: Some(names),
    mcp_arguments: Some(mcp_arguments),
};

/// A GitHub MCP tool's `owner` and `repo` name the repository its REST path would.
fn mcp_arguments(
    args: &serde_json::Map<String, serde_json::Value>,
) -> Result<super::vendor::McpReading, String> {
    let mut reading = super::vendor::McpReading::default();
    let text = |k: &str| args.get(k).and_then(serde_json::Value::as_str);
    if let (Some(owner), Some(repo)) = (text("owner"), text("repo")) {
        let (mut owner, mut repo) = (owner.to_owned(), repo.to_owned());
        names("owner", &mut owner)?;
        names("repo", &mut repo)?;
        let mut props = serde_json::Map::new();
        props.insert("owner".into(), owner.clone().into());
        props.insert("repo".into(), repo.clone().into());
        reading.resource = Some(("github.repo", format!("{owner}/{repo}"), props));
    }
    Ok(reading)
}

/// Which version of the REST API (and so of each operation's semantics) GitHub applies.
static MEANING_HEADERS: [HeaderName; 1] = [HeaderName::from_static("x-github-api-version")];

/// Path parameters that name accounts and repositories: ASCII by GitHub's own rules, so
/// anything else (a `ß` that policies and GitHub would fold differently) is refused.
const NAMES: [&str; 7] = [
    "owner",
    "repo",
    "org",
    "username",
    "enterprise",
    "team_slug",
    "gist_id",
];

fn names(param: &str, value: &mut str) -> Result<(), String> {
    if !NAMES.contains(&param) {
        return Ok(());
    }
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(format!(
            "GitHub {param} names are ASCII letters, digits, '-', '_' and '.'; this one is not"
        ));
    }
    // GitHub matches these names without case: `ACME/Web` is `acme/web`, so a policy rule
    // on one cannot be sidestepped with the other.
    value.make_ascii_lowercase();
    Ok(())
}

/// GitHub App installation-token permissions from policy scopes such as `issues:write`, `contents:read`.
pub fn app_permissions(scopes: &[String]) -> serde_json::Map<String, serde_json::Value> {
    scopes
        .iter()
        .filter_map(|s| s.split_once(':'))
        .filter(|(_, level)| matches!(*level, "read" | "write" | "admin"))
        .map(|(name, level)| (name.to_owned(), level.into()))
        .collect()
}

#[cfg(test)]
mod tests;
