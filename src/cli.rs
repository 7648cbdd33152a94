//! Subcommands beyond `run`: agent identities and the agent environment.

pub(crate) mod agents;
pub(crate) mod audit;
pub(crate) mod budgets;
pub(crate) mod consent;
pub(crate) mod dashboard;
pub(crate) mod draft;
pub(crate) mod env;
pub(crate) mod iptables;
pub(crate) mod k8s;
pub(crate) mod mcp;
pub(crate) mod panic;
pub(crate) mod policy;
pub(crate) mod replay;
pub(crate) mod vault;

use clap::ValueEnum;

/// Output format of read commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum Output {
    /// For people.
    #[default]
    Text,
    /// For scripts.
    Json,
}

/// A small current-thread runtime for commands that talk to a running instance.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    use anyhow::Context;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(rt.block_on(f))
}
