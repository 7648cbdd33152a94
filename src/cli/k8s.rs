//! `agentgate k8s ...`: running beside agents in Kubernetes.

use anyhow::Result;
use clap::Subcommand;

use super::iptables::{self, IptablesArgs};

/// `agentgate k8s` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum K8sCommand {
    /// Print (or with --apply install) the iptables rules of enforced mode.
    Iptables(IptablesArgs),
}

/// Runs one `k8s` subcommand.
pub(crate) fn run(command: K8sCommand) -> Result<()> {
    match command {
        K8sCommand::Iptables(args) => iptables::run(args),
    }
}
