//! `agentgate mcp …`: the MCP tools AgentGate pinned, and re-pinning a changed one, through
//! the running instance's admin API (which holds the pins).

use anyhow::Result;
use clap::Subcommand;
use http::Method;

use agentgate::clock::rfc3339;
use agentgate::state::StateDir;

use super::Output;
use super::consent::request;

/// `agentgate mcp`.
#[derive(Subcommand)]
pub(crate) enum McpCommand {
    /// The pinned tools of each MCP server, and the changes waiting for `accept`.
    Tools {
        /// Only this server's.
        #[arg(long)]
        server: Option<String>,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Pin a tool's changed definition: calls to it are judged normally again.
    Accept {
        server: String,
        tool: String,
        /// The tenant whose pin it is (the instance admin only; default: the instance's).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Runs an `mcp` subcommand.
pub(crate) fn run(state: &StateDir, cmd: McpCommand) -> Result<()> {
    match cmd {
        McpCommand::Tools { server, output } => {
            let path = match &server {
                Some(s) => format!("/api/v1/mcp/tools?server={}", encode(s)),
                None => "/api/v1/mcp/tools".to_owned(),
            };
            let doc = request(state, Method::GET, &path, None)?;
            if let Output::Json = output {
                outln!("{}", serde_json::to_string_pretty(&doc)?);
                return Ok(());
            }
            let servers = doc["servers"].as_array().cloned().unwrap_or_default();
            if servers.is_empty() {
                eprintln!(
                    "no MCP tools pinned yet: tools are pinned from the first tools/list answer AgentGate sees"
                );
            }
            for s in servers {
                let tenant = s["tenant"]
                    .as_str()
                    .map(|t| format!(" (tenant {t})"))
                    .unwrap_or_default();
                outln!("{}{tenant}", s["server"].as_str().unwrap_or("?"));
                for (name, t) in s["tools"].as_object().into_iter().flatten() {
                    let state = if t["changed"] == true {
                        format!(
                            "CHANGED ({}): agentgate mcp accept {} {name}",
                            t["diff"]["fields"]
                                .as_array()
                                .map(|f| f
                                    .iter()
                                    .filter_map(|x| x.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", "))
                                .unwrap_or_default(),
                            s["server"].as_str().unwrap_or("?"),
                        )
                    } else {
                        "pinned".to_owned()
                    };
                    outln!(
                        "  {name:<32} {:<20} {state}",
                        t["pinned"].as_i64().map(rfc3339).unwrap_or_default()
                    );
                }
            }
        }
        McpCommand::Accept {
            server,
            tool,
            tenant,
        } => {
            let mut path = format!(
                "/api/v1/mcp/tools/{}/{}/accept",
                encode(&server),
                encode(&tool)
            );
            if let Some(t) = tenant {
                path.push_str(&format!("?tenant={}", encode(&t)));
            }
            request(state, Method::POST, &path, None)?;
            outln!("pinned the new definition of {tool} on {server}");
        }
    }
    Ok(())
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
