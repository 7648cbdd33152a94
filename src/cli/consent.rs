//! `agentgate consent …`: the local approver, through the running instance's admin API
//! (which holds the waiting requests).

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use http::Method;

use agentgate::admin::client::call;
use agentgate::state::StateDir;

use super::{Output, block_on};
use agentgate::clock::rfc3339;

/// `agentgate consent`.
#[derive(Subcommand)]
pub(crate) enum ConsentCommand {
    /// Pending consents (or recent ones in every state with --all).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Approve a pending consent: once (default) or for a window of identical actions.
    Approve {
        id: String,
        /// Let the same agent, action and resource through for this long, e.g. 10m.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        window: Option<std::time::Duration>,
    },
    /// Deny a pending consent.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs a `consent` subcommand.
pub(crate) fn run(state: &StateDir, cmd: ConsentCommand) -> Result<()> {
    let by = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    match cmd {
        ConsentCommand::List { all, output } => {
            let path = if all {
                "/api/v1/consents?status=all"
            } else {
                "/api/v1/consents"
            };
            let doc = request(state, Method::GET, path, None)?;
            let list = doc["consents"].as_array().cloned().unwrap_or_default();
            match output {
                Output::Json => outln!("{}", serde_json::to_string_pretty(&doc["consents"])?),
                Output::Text if list.is_empty() => eprintln!(
                    "{}",
                    if all {
                        "no consents yet"
                    } else {
                        "no pending consents"
                    }
                ),
                Output::Text => {
                    outln!(
                        "{:<22} {:<8} {:<9} {:<36} {:<28} {:<20} AGENT",
                        "ID",
                        "CODE",
                        "STATUS",
                        "ACTION",
                        "RESOURCE",
                        "EXPIRES"
                    );
                    for c in list {
                        let s = |k: &str| c[k].as_str().unwrap_or("-").to_owned();
                        outln!(
                            "{:<22} {:<8} {:<9} {:<36} {:<28} {:<20} {}",
                            s("id"),
                            s("binding_code"),
                            s("status"),
                            s("action"),
                            c["resource"]["id"].as_str().unwrap_or("-"),
                            c["expires"].as_i64().map(rfc3339).unwrap_or_default(),
                            s("agent")
                        );
                    }
                }
            }
        }
        ConsentCommand::Approve { id, window } => {
            let mut body = serde_json::json!({"by": by, "via": "cli"});
            if let Some(w) = window {
                body["for"] = humantime::format_duration(w).to_string().into();
            }
            let c = request(
                state,
                Method::POST,
                &format!("/api/v1/consents/{id}/approve"),
                Some(&body),
            )?;
            match window {
                Some(w) => outln!(
                    "approved {id} for {} ({} on {})",
                    humantime::format_duration(w),
                    c["action"].as_str().unwrap_or("?"),
                    c["resource"]["id"].as_str().unwrap_or("?")
                ),
                None => outln!(
                    "approved {id} once ({} on {})",
                    c["action"].as_str().unwrap_or("?"),
                    c["resource"]["id"].as_str().unwrap_or("?")
                ),
            }
        }
        ConsentCommand::Deny { id, reason } => {
            let mut body = serde_json::json!({"by": by, "via": "cli"});
            if let Some(r) = reason {
                body["reason"] = r.into();
            }
            request(
                state,
                Method::POST,
                &format!("/api/v1/consents/{id}/deny"),
                Some(&body),
            )?;
            outln!("denied {id}");
        }
    }
    Ok(())
}

/// One admin API call on the running proxy; a refusal is the error, with its reason.
pub(crate) fn request(
    state: &StateDir,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value> {
    let answer = block_on(call(state, method, path, body))??
        .context("no proxy is running; consents are answered on the running proxy")?;
    let doc: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    if !answer.status.is_success() {
        bail!(
            "{}",
            doc["reason"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("the proxy answered {}", answer.status))
        );
    }
    Ok(doc)
}
