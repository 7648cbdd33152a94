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

/// Writes command output (and a newline when `line`) to stdout. When the reader has gone
/// (`agentgate audit tail -f | head`), the command has done all anyone wanted: it exits 0
/// at once, as filters do. Any other write error (a full disk behind `>`) exits 1 with the
/// reason, instead of the panic `println!` would give.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>, line: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| if line { out.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| out.flush());
    if let Err(e) = stdout_written(written) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The outcome of writing command output: a reader that has gone ends the command at once
/// with exit 0; any other failure is an error.
pub(crate) fn stdout_written(written: std::io::Result<()>) -> anyhow::Result<()> {
    use anyhow::Context;
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => r.context("writing standard output"),
    }
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
