//! `agentgate policy test` and `agentgate explain`: the policy gate, run on the command line
//! with the same catalog and Rego the proxy uses, sending nothing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use http::{HeaderMap, HeaderName, HeaderValue};

use agentgate::config::Config;
use agentgate::identity::registry::Registry;
use agentgate::intent::{Intent, Subject};
use agentgate::policy::{self, Policy, runner};
use agentgate::state::StateDir;

use super::Output;

/// `agentgate policy`.
#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Run a policy directory's tests: Rego `test_*` rules in `*_test.rego` and the cases in
    /// `*_test.yaml` / `*_test.json`. Exit 1 if any fails.
    Test {
        /// Policy directory (default: the one in use, `policy.dir` or `<state>/policies`).
        dir: Option<PathBuf>,
        /// Also test every subdirectory holding a policy (e.g. `templates/*`).
        #[arg(long, short)]
        recursive: bool,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Decide the audit log's recorded requests again with a candidate policy and show what
    /// would change (the log's chain must verify). Sends nothing.
    Replay {
        /// The candidate policy directory.
        dir: PathBuf,
        /// Only records this recent, e.g. 7d, 12h, 30m.
        #[arg(long)]
        since: Option<String>,
        /// Only this tenant's records.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this agent's records (name or SPIFFE ID).
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Draft a policy and its tests from plain-English sentences, check them (compile, run
    /// the tests) and print them; `--write DIR` writes them. Exit 1 if a sentence cannot be
    /// read or a check fails.
    Draft {
        #[command(flatten)]
        args: super::draft::DraftArgs,
    },
}

/// Runs `agentgate policy …`; returns false when a test failed.
pub(crate) fn run(state: &StateDir, config: &Config, command: PolicyCommand) -> Result<bool> {
    match command {
        PolicyCommand::Test {
            dir,
            recursive,
            output,
        } => {
            let dir = match dir {
                Some(d) => d,
                None => policy::resolve_dir(&config.policy, state.root())?,
            };
            test(&dir, recursive, config, output)
        }
        PolicyCommand::Replay {
            dir,
            since,
            tenant,
            agent,
            output,
        } => {
            let args = super::replay::ReplayArgs {
                dir: &dir,
                since: since.as_deref(),
                tenant,
                agent,
                output,
            };
            super::replay::run(state, config, args)?;
            Ok(true)
        }
        PolicyCommand::Draft { args } => super::draft::run(state, config, args),
    }
}

fn test(root: &Path, recursive: bool, config: &Config, output: Output) -> Result<bool> {
    let intent = Intent::embedded(config.intent.max_body)?.with_mcp(&config.mcp.servers);
    let dirs = if recursive {
        runner::policy_dirs(root)
    } else {
        vec![root.to_owned()]
    };
    if dirs.is_empty() {
        bail!("no policy (*.rego) under {}", root.display());
    }
    let mut all = Vec::new();
    for dir in &dirs {
        let results = runner::run_dir(dir, &intent, &config.policy)
            .with_context(|| format!("testing {}", dir.display()))?;
        if results.is_empty() {
            bail!(
                "{} has no tests: add *_test.yaml cases or *_test.rego rules",
                dir.display()
            );
        }
        for r in results {
            all.push((dir.display().to_string(), r));
        }
    }
    let failed = all.iter().filter(|(_, r)| !r.passed).count();
    match output {
        Output::Json => {
            let cases: Vec<_> = all
                .iter()
                .map(|(dir, r)| serde_json::json!({"dir": dir, "file": r.file, "name": r.name, "passed": r.passed, "detail": r.detail}))
                .collect();
            let doc =
                serde_json::json!({"passed": all.len() - failed, "failed": failed, "cases": cases});
            outln!("{}", &doc.to_string());
        }
        Output::Text => {
            for (dir, r) in &all {
                let mark = if r.passed { "PASS" } else { "FAIL" };
                outln!("{mark}  {dir}/{}: {}", r.file, r.name);
                if !r.passed {
                    outln!("      {}", r.detail);
                }
            }
            outln!(
                "{} passed, {failed} failed ({} directories)",
                all.len() - failed,
                dirs.len()
            );
        }
    }
    Ok(failed == 0)
}

/// What `explain` was asked about.
pub(crate) struct ExplainArgs {
    pub method: String,
    pub url: String,
    pub body: Option<PathBuf>,
    pub headers: Vec<String>,
    pub agent: Option<String>,
    pub output: Output,
}

/// Prints the tuple and the decision the proxy would make for a request; sends nothing.
pub(crate) fn explain(state: &StateDir, config: &Config, args: ExplainArgs) -> Result<()> {
    let intent = Intent::embedded(config.intent.max_body)?.with_mcp(&config.mcp.servers);
    let mut headers = HeaderMap::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?}: expected NAME:VALUE"))?;
        headers.append(
            HeaderName::from_bytes(k.trim().as_bytes())
                .with_context(|| format!("header name {k:?}"))?,
            HeaderValue::from_str(v.trim()).with_context(|| format!("header value for {k}"))?,
        );
    }
    let body = match &args.body {
        Some(p) if p.as_os_str() == "-" => {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
            b
        }
        Some(p) => std::fs::read(p).with_context(|| format!("reading --body {}", p.display()))?,
        None => Vec::new(),
    };
    let name = args.agent.as_deref().unwrap_or("explain");
    let (id, owner, tenant) = match &args.agent {
        Some(agent) => {
            let registry = Registry::open(state)?;
            let a = registry.agent(agent).with_context(|| {
                format!("agent {agent} is not registered (agentgate agents list shows who is)")
            })?;
            (a.spiffe_id, a.owner, a.tenant)
        }
        None => (
            agentgate::identity::issuer::spiffe_id_for(&config.identity.trust_domain, None, name),
            None,
            None,
        ),
    };
    // The agent's tenant's policy decides, as in the proxy.
    let dir = match tenant.as_deref() {
        Some(t) if !config.tenants.is_empty() => {
            let Some(tc) = config.tenants.get(t) else {
                bail!(
                    "tenant {t} is not configured in [tenants]: the proxy refuses every request of this agent"
                );
            };
            policy::resolve_tenant_dir(t, tc.policy_dir.as_deref(), state)?
        }
        _ => policy::resolve_dir(&config.policy, state.root())?,
    };
    let policy = Policy::load(&dir, &config.policy)?;
    let subject = Subject {
        id: &id,
        name,
        tenant: tenant.as_deref(),
        owner: owner.as_deref(),
        trust_domain: &config.identity.trust_domain,
    };
    let tuple = runner::explain_tuple(&intent, &args.method, &args.url, &headers, &body, subject)
        .map_err(|e| anyhow::anyhow!("intent gate refuses this request: {e}"))?;
    let decision = policy.evaluate(&tuple);
    let enforced = if policy.mode == policy::Mode::Observe {
        "allow (observe mode: recorded, not enforced)"
    } else {
        decision.effect.as_str()
    };
    match args.output {
        Output::Json => {
            let doc = serde_json::json!({
                "tuple": tuple,
                "decision": {
                    "effect": decision.effect,
                    "reasons": decision.reasons,
                    "scopes": decision.scopes,
                    "consent": decision.consent,
                    "policy_hash": &*decision.policy_hash,
                },
                "mode": policy.mode,
                "policy_dir": dir.display().to_string(),
            });
            outln!("{}", &serde_json::to_string_pretty(&doc)?);
        }
        Output::Text => {
            outln!(
                "action    {}",
                tuple["action"]["name"].as_str().unwrap_or("")
            );
            outln!(
                "resource  {} {}",
                tuple["resource"]["type"].as_str().unwrap_or(""),
                tuple["resource"]["id"].as_str().unwrap_or("")
            );
            outln!(
                "class     {}",
                tuple["action"]["properties"]["class"]
                    .as_str()
                    .unwrap_or("")
            );
            outln!("effect    {enforced}");
            for r in &decision.reasons {
                outln!("reason    {r}");
            }
            if !decision.scopes.is_empty() {
                outln!("scopes    {}", decision.scopes.join(" "));
            }
            outln!(
                "policy    {} ({})",
                dir.display(),
                &decision.policy_hash[..12.min(decision.policy_hash.len())]
            );
            outln!("tuple:");
            outln!("{}", &serde_json::to_string_pretty(&tuple)?);
        }
    }
    Ok(())
}
