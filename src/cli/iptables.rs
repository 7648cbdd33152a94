//! `agentgate k8s iptables`: print, or with `--apply` install, the enforced-mode rules.

use std::net::IpAddr;

use anyhow::{Context, Result};
use clap::Args;

use agentgate::k8s::iptables::{self, Backend, Plan};

/// Arguments of `agentgate k8s iptables`.
#[derive(Debug, Args)]
pub(crate) struct IptablesArgs {
    /// Install the rules (an init container with NET_ADMIN and NET_RAW); without it, print
    /// them for review.
    #[arg(long)]
    apply: bool,
    /// AgentGate's UID, whose own connections are not redirected.
    #[arg(long, default_value_t = 65532)]
    proxy_uid: u32,
    /// The transparent listener's port (transparent.listen) on loopback.
    #[arg(long, default_value_t = 15001)]
    port: u16,
    /// A DNS server left reachable on port 53 (repeatable); default: the nameservers of
    /// /etc/resolv.conf, the cluster DNS in a pod.
    #[arg(long = "dns")]
    dns: Vec<IpAddr>,
    /// Which iptables to drive.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
}

/// Prints or installs the rules.
pub(crate) fn run(args: IptablesArgs) -> Result<()> {
    let dns = if args.dns.is_empty() {
        let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        iptables::nameservers(&conf)
    } else {
        args.dns
    };
    if dns.is_empty() {
        return Err(iptables::IptablesError::NoDns.into());
    }
    if args.proxy_uid == 0 {
        anyhow::bail!(
            "--proxy-uid 0 would exempt every root process of the pod from redirection; run AgentGate as its own UID (the image uses 65532)"
        );
    }
    let plan = Plan {
        proxy_uid: args.proxy_uid,
        port: args.port,
        dns,
    };
    if !args.apply {
        let text = format!(
            "# Dry run: the rules `--apply` installs with iptables-restore --noflush\n\
             # (IPv4; the jumps from OUTPUT are added only where missing). Review, then\n\
             # run again with --apply in an init container with NET_ADMIN and NET_RAW.\n\
             {}# IPv6 (ip6tables-restore), when the kernel has IPv6:\n{}",
            iptables::render(&plan, false, true),
            iptables::render(&plan, true, true)
        );
        out!("{text}");
        return Ok(());
    }
    let applied =
        iptables::apply(&plan, args.backend).context("installing the enforced-mode rules")?;
    for (family, rules) in applied {
        let n = rules.lines().filter(|l| l.starts_with("-A ")).count();
        let listener = if family == "ipv6" {
            "[::1]"
        } else {
            "127.0.0.1"
        };
        eprintln!(
            "installed {n} {family} rules: TCP of every UID but {} goes to {listener}:{} (loopback and DNS exempt), other UDP is dropped",
            plan.proxy_uid, plan.port
        );
    }
    Ok(())
}
