//! `agentgate k8s`: rewrite Kubernetes manifests to run AgentGate beside the agent.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use agentgate::k8s::inject::{self, DEFAULT_IMAGE, Mode, Options};

use super::iptables::{self, IptablesArgs};

/// `agentgate k8s`.
#[derive(Subcommand)]
pub(crate) enum K8sCommand {
    /// Add the AgentGate sidecar to every workload of a manifest stream (stdout, for
    /// `| kubectl apply -f -`). Workloads annotated agentgate.dev/inject: "false" are left
    /// alone; injecting twice changes nothing.
    Inject(InjectArgs),
    /// Remove exactly what `inject` added.
    Uninject(UninjectArgs),
    /// Print (or with --apply install) the iptables rules of enforced mode.
    Iptables(IptablesArgs),
}

/// How the agent's traffic reaches the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum ModeArg {
    /// Proxy variables in the agent containers (the agent can bypass them).
    Env,
    /// An init container redirects all of the pod's outbound TCP with iptables.
    #[default]
    Enforced,
}

/// `agentgate k8s inject`.
#[derive(Args)]
pub(crate) struct InjectArgs {
    /// Manifests (multi-document YAML); `-` for standard input.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    file: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    mode: ModeArg,
    /// Mount the SPIFFE CSI driver's Workload API socket (csi.spiffe.io) into the sidecar.
    #[arg(long)]
    spire: bool,
    /// The agentgate image.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// The iptables init image (default: --image with `-init` after the repository name).
    #[arg(long)]
    init_image: Option<String>,
    /// ConfigMap with agentgate.toml.
    #[arg(long, default_value = "agentgate-config")]
    config_map: String,
    /// ConfigMap with the policies.
    #[arg(long, default_value = "agentgate-policies")]
    policies_config_map: String,
    /// Secret with admin-token and vault-key.
    #[arg(long, default_value = "agentgate-secrets")]
    secret: String,
}

/// `agentgate k8s uninject`.
#[derive(Args)]
pub(crate) struct UninjectArgs {
    /// Manifests (multi-document YAML); `-` for standard input.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    file: PathBuf,
}

/// Runs `agentgate k8s …`.
pub(crate) fn run(command: K8sCommand) -> Result<()> {
    let out = match command {
        K8sCommand::Inject(args) => {
            let input = read(&args.file)?;
            let opts = Options {
                mode: match args.mode {
                    ModeArg::Env => Mode::Env,
                    ModeArg::Enforced => Mode::Enforced,
                },
                spire: args.spire,
                image: args.image,
                init_image: args.init_image,
                config_map: args.config_map,
                policies_config_map: args.policies_config_map,
                secret: args.secret,
            };
            inject::inject(&input, &opts)?
        }
        K8sCommand::Uninject(args) => inject::uninject(&read(&args.file)?)?,
        K8sCommand::Iptables(args) => return iptables::run(args),
    };
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
    out!("{}", out.text);
    Ok(())
}

fn read(file: &PathBuf) -> Result<String> {
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading manifests from standard input")?;
    } else {
        text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    }
    Ok(text)
}
