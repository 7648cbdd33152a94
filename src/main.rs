//! The `agentgate` command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use agentgate::config::{Config, LogFormat};
use agentgate::state::{self, StateDir};

/// `print!` for command output: a closed pipe (`agentgate … | head`) ends the command
/// quietly instead of panicking (`cli::write_stdout`).
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!($($arg)*), false) };
}

/// `println!` for command output; see `out!`.
macro_rules! outln {
    () => { $crate::cli::write_stdout(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!($($arg)*), true) };
}

mod cli;
use cli::Output;
use cli::agents::{AgentsCommand, IdentityCommand};

/// jemalloc for Rust's allocations: a proxied request allocates and frees many short-lived
/// buffers, futures and headers across threads, and glibc's malloc spent ~20% of the
/// process's CPU on them (same memory with 1,000 idle tunnels; see `scripts/bench --idle`).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// AgentGate: an egress security gate for AI agents.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// State directory (CA, keys, audit log).
    #[arg(long, global = true, env = "AGENTGATE_HOME", default_value = state::DEFAULT_HOME)]
    home: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the proxy and the admin listener (creates the state dir and CA on first run).
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        /// Only check the configuration, report problems, and exit (non-zero if invalid).
        #[arg(long)]
        check: bool,
        /// Log line format (overrides log.format).
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Check a configuration and exit (non-zero if invalid).
    Validate {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Create the state directory: CA, issuer key, admin token and a commented config file.
    Init,
    /// Register, list and revoke agent identities.
    Agents {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Print shell exports that point an agent at AgentGate (proxy URL with its
    /// credentials, CA trust for curl, Python, Node, git): eval "$(agentgate env --agent NAME)".
    Env {
        #[command(flatten)]
        config: ConfigArgs,
        /// The registered agent.
        #[arg(long)]
        agent: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Run CMD with the agent's environment (see `env`); exits with CMD's exit code.
    Exec {
        #[command(flatten)]
        config: ConfigArgs,
        /// The registered agent.
        #[arg(long)]
        agent: String,
        /// The command and its arguments, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Verify, follow and export the audit log.
    Audit {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        command: cli::audit::AuditCommand,
    },
    /// Test policies: `agentgate policy test [DIR]`.
    Policy {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        command: cli::policy::PolicyCommand,
    },
    /// Show what a request means (its AuthZEN tuple) and what policy decides; sends nothing.
    Explain {
        #[command(flatten)]
        config: ConfigArgs,
        /// HTTP method, e.g. GET or POST.
        method: String,
        /// Full URL, e.g. https://api.github.com/repos/acme/web/issues.
        url: String,
        /// Request body from this file (`-` for standard input).
        #[arg(long)]
        body: Option<PathBuf>,
        /// A request header, `NAME:VALUE` (repeatable), e.g. --header content-type:application/json.
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Decide as this registered agent (owner and tenant from the registry).
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Answer escalated requests: list, approve (once or --for a window), deny.
    Consent {
        #[command(subcommand)]
        command: cli::consent::ConsentCommand,
    },
    /// MCP tools AgentGate pinned (tools), and re-pinning one a server changed (accept).
    Mcp {
        #[command(subcommand)]
        command: cli::mcp::McpCommand,
    },
    /// Store, list and remove the credentials AgentGate injects (secrets never on argv).
    Vault {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        command: cli::vault::VaultCommand,
    },
    /// Show each action budget's use against its limit (counted by the proxy).
    Budgets {
        #[command(flatten)]
        config: ConfigArgs,
        /// Only budgets whose key names this agent (name or SPIFFE ID).
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Revoke an agent (or every agent) and every credential it obtained, at once.
    Panic {
        /// The agent: a registered name or a SPIFFE ID.
        #[arg(long, conflicts_with_all = ["all", "lift"])]
        agent: Option<String>,
        /// Every agent.
        #[arg(long, conflicts_with = "lift")]
        all: bool,
        /// Lift a PANIC --all (agents revoked one by one stay revoked).
        #[arg(long)]
        lift: bool,
        /// Why (kept in the audit log and the registry).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// The built-in identity issuer: key rotation, bundle.
    Identity {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Kubernetes: add the AgentGate sidecar to workload manifests (`inject`, `uninject`) and
    /// install enforced mode's iptables rules (`iptables`).
    K8s {
        #[command(subcommand)]
        command: cli::k8s::K8sCommand,
    },
    /// Work with the interception CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Print a one-time sign-in link to the running instance's dashboard (and open it).
    Dashboard {
        /// A link to one tenant's view.
        #[arg(long)]
        tenant: Option<String>,
        /// Only print the link.
        #[arg(long)]
        no_open: bool,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Print the CA certificate (PEM) that agents must trust.
    Export {
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ConfigArgs {
    /// Config file (TOML); default: $AGENTGATE_HOME/agentgate.toml if it exists.
    #[arg(long, short, env = "AGENTGATE_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            config,
            check,
            log_format,
        } => {
            let config = load_config(&cli.home, &config)?;
            if check {
                return validate(&config);
            }
            run(&cli.home, config, log_format)
        }
        Command::Validate { config } => validate(&load_config(&cli.home, &config)?),
        Command::Init => init(&cli.home),
        Command::Agents { config, command } => {
            let config = load_config(&cli.home, &config)?;
            cli::agents::agents(&StateDir::open_or_create(&cli.home)?, &config, command)
        }
        Command::Env {
            config,
            agent,
            output,
        } => {
            let config = load_config(&cli.home, &config)?;
            cli::env::print(
                &StateDir::open_or_create(&cli.home)?,
                &config,
                &agent,
                output,
            )
        }
        Command::Exec { config, agent, cmd } => {
            let config = load_config(&cli.home, &config)?;
            cli::env::exec(&StateDir::open_or_create(&cli.home)?, &config, &agent, &cmd)
        }
        Command::Audit { config, command } => {
            let config = load_config(&cli.home, &config)?;
            let intact = cli::audit::run(&StateDir::open_or_create(&cli.home)?, &config, command)?;
            exit_unless(intact)
        }
        Command::Policy { config, command } => {
            let config = load_config(&cli.home, &config)?;
            let passed = cli::policy::run(&StateDir::open_or_create(&cli.home)?, &config, command)?;
            exit_unless(passed)
        }
        Command::Explain {
            config,
            method,
            url,
            body,
            headers,
            agent,
            output,
        } => {
            let config = load_config(&cli.home, &config)?;
            cli::policy::explain(
                &StateDir::open_or_create(&cli.home)?,
                &config,
                cli::policy::ExplainArgs {
                    method,
                    url,
                    body,
                    headers,
                    agent,
                    output,
                },
            )
        }
        Command::Consent { command } => {
            cli::consent::run(&StateDir::open_or_create(&cli.home)?, command)
        }
        Command::Mcp { command } => cli::mcp::run(&StateDir::open_or_create(&cli.home)?, command),
        Command::Vault { config, command } => {
            let config = load_config(&cli.home, &config)?;
            cli::vault::run(&StateDir::open_or_create(&cli.home)?, &config, command)
        }
        Command::Budgets {
            config,
            agent,
            output,
        } => {
            let config = load_config(&cli.home, &config)?;
            cli::budgets::run(
                &StateDir::open_or_create(&cli.home)?,
                &config,
                agent,
                output,
            )
        }
        Command::Panic {
            agent,
            all,
            lift,
            reason,
            output,
        } => {
            let state = StateDir::open_or_create(&cli.home)?;
            exit_unless(cli::panic::run(&state, agent, all, lift, reason, output)?)
        }
        Command::Dashboard { tenant, no_open } => {
            cli::dashboard::run(&StateDir::open_or_create(&cli.home)?, tenant, !no_open)
        }
        Command::Identity { config, command } => {
            let config = load_config(&cli.home, &config)?;
            cli::agents::identity(&StateDir::open_or_create(&cli.home)?, &config, command)
        }
        Command::K8s { command } => cli::k8s::run(command),
        Command::Ca {
            command: CaCommand::Export { out },
        } => {
            let state = StateDir::open_or_create(&cli.home)?;
            agentgate::ca::ensure_ca(&state)?;
            let pem = std::fs::read_to_string(state.ca_cert())
                .with_context(|| format!("reading {}", state.ca_cert().display()))?;
            match out {
                Some(path) => std::fs::write(&path, pem)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => out!("{pem}"),
            }
            Ok(())
        }
    }
}

/// A check command's answer: exit 1 when it found a problem (already reported).
fn exit_unless(ok: bool) -> Result<()> {
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

fn load_config(home: &Path, args: &ConfigArgs) -> Result<Config> {
    let default_file = home.join("agentgate.toml");
    let file = match &args.config {
        Some(path) => Some(path.clone()),
        None => default_file.exists().then_some(default_file),
    };
    Ok(Config::load(file.as_deref(), std::env::vars())?)
}

fn validate(config: &Config) -> Result<()> {
    agentgate::check(config)?;
    eprintln!("config ok");
    Ok(())
}

fn init(home: &Path) -> Result<()> {
    let state = StateDir::open_or_create(home)?;
    let created = agentgate::ca::ensure_ca(&state)?;
    let registry = agentgate::identity::registry::Registry::open(&state)?;
    agentgate::identity::issuer::ensure_key(&state, &registry, agentgate::clock::now())?;
    agentgate::instance::admin_token(&state)?;
    let audit_key = agentgate::audit::checkpoint::Signer::ensure(&state)?;
    let policies = state.path("policies");
    let seeded = agentgate::policy::seed(&policies)
        .with_context(|| format!("writing the default policy to {}", policies.display()))?;
    let config_path = state.path("agentgate.toml");
    if !config_path.exists() {
        state::write_public(
            &config_path,
            include_str!("../config/agentgate.example.toml").as_bytes(),
        )?;
    }
    eprintln!("state dir:  {}", state.root().display());
    eprintln!(
        "CA:         {} ({})",
        state.ca_cert().display(),
        if created { "created" } else { "existing" }
    );
    eprintln!("config:     {}", config_path.display());
    eprintln!(
        "policy:     {} ({})",
        policies.display(),
        if seeded {
            "default policy written"
        } else {
            "existing"
        }
    );
    eprintln!(
        "audit key:  {} (public key {}; keep a copy elsewhere)",
        state.path(agentgate::audit::checkpoint::PUB_FILE).display(),
        audit_key.public_hex()
    );
    eprintln!("next:       agentgate agents register my-bot");
    Ok(())
}

fn run(home: &Path, config: Config, log_format: Option<LogFormat>) -> Result<()> {
    init_logging(log_format.unwrap_or(config.log.format), &config.log.level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.proxy.worker_threads())
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let state = StateDir::open_or_create(home)?;
        let key_file = Some(config.vault.key_file.as_path()).filter(|p| !p.as_os_str().is_empty());
        for var in agentgate::seed::from_env(&state, key_file, |v| std::env::var(v).ok())? {
            tracing::info!(var, "secret taken from the environment into the state dir");
        }
        let running = agentgate::start(config, &state).await?;
        eprintln!("AgentGate {}", env!("CARGO_PKG_VERSION"));
        eprintln!("  state dir  {}", state.root().display());
        eprintln!(
            "  CA         {}{}",
            running.ca_cert.display(),
            if running.ca_created { " (new)" } else { "" }
        );
        eprintln!("  proxy      http://{}", running.proxy_addr);
        eprintln!("  admin      {}", running.admin_url);
        eprintln!("  dashboard  agentgate dashboard   (prints a one-time sign-in link)");
        eprintln!("  policy     {}", running.policy_dir.display());
        eprintln!("  agents     agentgate agents register my-bot");
        eprintln!("             agentgate exec --agent my-bot -- curl https://api.github.com/repos/rust-lang/rust");
        // Optional fields go before `ca=`, which runs to the end of the line.
        let mut extra = String::new();
        for addr in &running.transparent_addrs {
            extra.push_str(&format!(" transparent={addr}"));
        }
        if let Some(addr) = running.health_addr {
            extra.push_str(&format!(" health={addr}"));
        }
        // Not through `outln!`: a supervisor that stopped reading must not stop the proxy.
        let ready = writeln!(
            std::io::stdout(),
            "READY proxy={} admin={}{extra} ca={}",
            running.proxy_addr,
            running.admin_addr,
            running.ca_cert.display()
        );
        if let Err(e) = ready {
            tracing::warn!(error = %e, "could not print the READY line to stdout");
        }
        wait_for_signal().await;
        tracing::info!("shutting down");
        running.shutdown(Duration::from_secs(10)).await;
        Ok(())
    })
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_logging(format: LogFormat, level: &str) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("AGENTGATE_LOG") {
        Ok(f) => EnvFilter::try_new(f).context("AGENTGATE_LOG is not a valid log filter")?,
        Err(_) => EnvFilter::try_new(level)
            .with_context(|| format!("log.level `{level}` is not a valid log filter"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.compact().init(),
    }
    Ok(())
}
