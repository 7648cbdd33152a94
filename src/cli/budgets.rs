//! `agentgate budgets`: each action budget's use against its limit, as the proxy counts it
//! (read from the state directory, or from the fleet's bucket in fleet mode, so it works
//! whether or not the proxy runs).

use anyhow::Result;

use agentgate::config::Config;
use agentgate::fleet::budgets::FleetBudgets;
use agentgate::identity::registry::Registry;
use agentgate::policy::budget::{LocalBudgets, Usage};
use agentgate::state::StateDir;

use super::Output;

/// Prints the budgets in use, optionally only those naming `agent`.
pub(crate) fn run(
    state: &StateDir,
    config: &Config,
    agent: Option<String>,
    output: Output,
) -> Result<()> {
    let now_ms = agentgate::clock::now_micros() / 1000;
    // A registered name stands for its SPIFFE ID, which is what keys hold.
    let part = agent.map(|a| match Registry::open(state).and_then(|r| r.agent(&a)) {
        Ok(found) => found.spiffe_id,
        Err(_) => a,
    });
    let usage = if config.fleet.enabled() {
        let fleet = FleetBudgets::new(config.fleet.clone());
        super::block_on(fleet.usage_or_error(now_ms, part.as_deref()))??
    } else {
        LocalBudgets::in_state(state, now_ms)?.usage_now(now_ms, part.as_deref())
    };
    match output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&usage)?),
        Output::Text => out!("{}", render(&usage, now_ms)),
    }
    Ok(())
}

fn render(usage: &[Usage], now_ms: i64) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    if usage.is_empty() {
        o.push_str("No budget has been used in its window.\n");
        return o;
    }
    let width = usage
        .iter()
        .map(|u| u.key.join("/").len())
        .max()
        .unwrap_or(3)
        .max(3);
    let _ = writeln!(
        o,
        "{:<width$} {:>6} {:>6} {:>8}  NEXT FREE",
        "KEY", "USED", "LIMIT", "WINDOW"
    );
    for u in usage {
        let window = humantime::format_duration(std::time::Duration::from_secs(u.window_secs));
        let frees = u.frees_at_ms.map_or_else(String::new, |t| {
            let secs = ((t - now_ms).max(0) / 1000) as u64;
            format!(
                "in {}",
                humantime::format_duration(std::time::Duration::from_secs(secs))
            )
        });
        let full = if u.used >= u.limit { " (used up)" } else { "" };
        let _ = writeln!(
            o,
            "{:<width$} {:>6} {:>6} {:>8}  {frees}{full}",
            u.key.join("/"),
            u.used,
            u.limit,
            window.to_string()
        );
    }
    o
}
