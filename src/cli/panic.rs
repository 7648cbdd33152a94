//! `agentgate panic`: revoke an agent (or all) and everything it obtained, through the
//! running instance, and print its report.

use anyhow::{Result, bail};
use http::Method;

use agentgate::admin::client::call;
use agentgate::clock::now;
use agentgate::identity::registry::Registry;
use agentgate::state::StateDir;

use super::{Output, block_on};

/// Runs PANIC; returns whether every local step succeeded.
pub(crate) fn run(
    state: &StateDir,
    agent: Option<String>,
    all: bool,
    lift: bool,
    reason: Option<String>,
    output: Output,
) -> Result<bool> {
    if lift {
        let lifted = Registry::open(state)?.lift_all()?;
        let _ = block_on(agentgate::admin::client::reload_identity(
            state,
            Some(("panic_lifted", "all")),
        ))?;
        eprintln!(
            "{}",
            if lifted {
                "PANIC --all lifted: registered agents that are not revoked may connect again (re-register revoked ones)"
            } else {
                "PANIC --all was not in force"
            }
        );
        return Ok(true);
    }
    let mut body =
        serde_json::json!({ "reason": reason.unwrap_or_else(|| "PANIC from the CLI".into()) });
    match (agent, all) {
        (Some(a), false) => body["agent"] = a.into(),
        (None, true) => body["all"] = true.into(),
        _ => bail!("give --agent NAME or --all"),
    }
    let Some(answer) = block_on(call(state, Method::POST, "/api/v1/panic", Some(&body)))?? else {
        // No proxy: nothing is cached, connected or held; revoke in the registry so the
        // next start refuses the agent, and say that nothing else could be done.
        let mut registry = Registry::open(state)?;
        let reason = format!("PANIC: {}", body["reason"].as_str().unwrap_or_default());
        match body["agent"].as_str() {
            Some(id) if id.starts_with("spiffe://") => registry.revoke_id(id, &reason, now())?,
            Some(name) => drop(registry.revoke_agent(name, &reason, now())?),
            None => {
                for a in registry.agents(None, now())? {
                    registry.revoke_agent(&a.name, &reason, now())?;
                }
                registry.revoke_id(agentgate::identity::registry::ALL_AGENTS, &reason, now())?;
            }
        }
        eprintln!(
            "no proxy is running: revoked in the registry only (no credentials are cached, no tunnels open); upstream tokens obtained before the last stop expire on their own"
        );
        return Ok(true);
    };
    if !answer.status.is_success() {
        bail!(
            "PANIC failed ({}): {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&answer.body)?;
    match output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => print_report(&report),
    }
    Ok(report["ok"].as_bool().unwrap_or(false))
}

fn print_report(r: &serde_json::Value) {
    let agents: Vec<&str> = r["agents"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    outln!(
        "PANIC {} ({}): {} — local cut-off in {} ms",
        r["panic_id"].as_str().unwrap_or("?"),
        r["scope"].as_str().unwrap_or("?"),
        if agents.is_empty() {
            "-".to_owned()
        } else {
            agents.join(", ")
        },
        r["local_ms"]
    );
    for s in r["steps"].as_array().into_iter().flatten() {
        outln!(
            "  {:<12} {:>4}  {}",
            s["step"].as_str().unwrap_or(""),
            s["count"],
            s["detail"].as_str().unwrap_or("")
        );
    }
    let upstream = r["upstream"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if upstream.is_empty() {
        outln!("  upstream: nothing the agents received needs revoking");
    }
    for u in upstream {
        outln!(
            "  upstream {:<16} {:<10} {:<8} {}  {}",
            u["result"].as_str().unwrap_or(""),
            u["service"].as_str().unwrap_or(""),
            u["kind"].as_str().unwrap_or(""),
            u["fingerprint"].as_str().unwrap_or(""),
            u["detail"].as_str().unwrap_or("")
        );
    }
}
