//! `agentgate env` and `agentgate exec`: point an agent at AgentGate in one line.

use std::os::unix::process::CommandExt;

use anyhow::{Result, bail};

use agentgate::agent_env::{self, shell_quote};
use agentgate::clock::now;
use agentgate::config::Config;
use agentgate::state::StateDir;

use super::Output;

/// Prints the agent's environment as shell exports (or JSON).
pub(crate) fn print(state: &StateDir, config: &Config, agent: &str, output: Output) -> Result<()> {
    let env = agent_env::for_agent(state, config, agent, now())?;
    warn_if_not_running(state, &env);
    match output {
        Output::Json => {
            let map: serde_json::Map<String, serde_json::Value> = env
                .vars
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into()))
                .collect();
            outln!("{}", serde_json::to_string_pretty(&map)?);
        }
        Output::Text => {
            for (k, v) in env.vars {
                outln!("export {k}={}", shell_quote(&v));
            }
        }
    }
    Ok(())
}

/// Replaces this process with `cmd`, run in the agent's environment; its exit code is ours.
pub(crate) fn exec(state: &StateDir, config: &Config, agent: &str, cmd: &[String]) -> Result<()> {
    let Some((program, args)) = cmd.split_first() else {
        bail!("nothing to run: agentgate exec --agent NAME -- CMD ARGS…");
    };
    let env = agent_env::for_agent(state, config, agent, now())?;
    warn_if_not_running(state, &env);
    let err = std::process::Command::new(program)
        .args(args)
        .envs(env.vars.iter().map(|(k, v)| (*k, v.as_str())))
        .exec();
    bail!("cannot run {program}: {err}")
}

fn warn_if_not_running(state: &StateDir, env: &agent_env::AgentEnv) {
    if !env.running {
        eprintln!(
            "warning: no AgentGate is running on {} (expected at {}); start it with `agentgate run`",
            state.root().display(),
            env.proxy
        );
    }
}
