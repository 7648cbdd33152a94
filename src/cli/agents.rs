//! `agentgate agents …` and `agentgate identity …`: the registry and the built-in issuer.
//! Every change is written to the registry first, then the running proxy (if any) is told
//! to reload, so the change is in force when the command returns.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use agentgate::admin::client::{call, reload_identity};
use agentgate::agent_env;
use agentgate::audit::Audit;
use agentgate::clock::now;
use agentgate::config::Config;
use agentgate::identity::bundle;
use agentgate::identity::issuer::{self, Registration};
use agentgate::identity::registry::Registry;
use agentgate::state::StateDir;
use http::Method;

use super::{Output, block_on};
use agentgate::clock::rfc3339;

/// `agentgate agents`.
#[derive(Subcommand)]
pub(crate) enum AgentsCommand {
    /// Register an agent (or re-register it) and issue it a token.
    Register {
        /// Agent name: letters, digits, '.', '_' or '-'.
        name: String,
        /// The human responsible for this agent (default: $USER).
        #[arg(long)]
        owner: Option<String>,
        /// Tenant, for multi-tenant setups: spiffe://<td>/tenant/<T>/agent/<NAME>.
        #[arg(long)]
        tenant: Option<String>,
        /// Token lifetime, e.g. 1h, 24h, 30d (default: identity.token_ttl).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// The agent sends an `agw_…` reference in Authorization (for SDKs that insist on a
        /// token); get one with `agentgate agents reference NAME SERVICE`.
        #[arg(long)]
        reference_tokens: bool,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Get a short-lived `agw_…` reference for an agent in reference-token mode (needs the
    /// running proxy, which alone can swap it for the real credential).
    Reference {
        name: String,
        /// The vault service it is for, e.g. github.
        service: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// List registered agents.
    List {
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Revoke an agent and every token it holds, or one token with --jti. NAME may also
    /// be a SPIFFE ID that is not registered here (e.g. a workload from SPIRE).
    Revoke {
        name: String,
        /// Revoke only this token.
        #[arg(long)]
        jti: Option<String>,
        /// Why (kept in the registry).
        #[arg(long, default_value = "revoked by operator")]
        reason: String,
    },
}

/// `agentgate identity`.
#[derive(Subcommand)]
pub(crate) enum IdentityCommand {
    /// Make a new issuer key current; the old key stays trusted until its tokens expire.
    Rotate,
    /// Print the built-in issuer's SPIFFE JWT bundle (JWKS).
    Bundle,
}

/// Runs an `agents` subcommand.
pub(crate) fn agents(state: &StateDir, config: &Config, cmd: AgentsCommand) -> Result<()> {
    match cmd {
        AgentsCommand::Register {
            name,
            owner,
            tenant,
            ttl,
            reference_tokens,
            output,
        } => register(
            state,
            config,
            &name,
            (owner, tenant, ttl, reference_tokens),
            output,
        ),
        AgentsCommand::Reference {
            name,
            service,
            output,
        } => reference(state, &name, &service, output),
        AgentsCommand::List { output } => list(state, output),
        AgentsCommand::Revoke { name, jti, reason } => revoke(state, config, &name, jti, &reason),
    }
}

fn register(
    state: &StateDir,
    config: &Config,
    name: &str,
    (owner, tenant, ttl, reference_tokens): (
        Option<String>,
        Option<String>,
        Option<Duration>,
        bool,
    ),
    output: Output,
) -> Result<()> {
    // Once tenants are configured, an agent of any other tenant would be refused anyway.
    config.check_tenant(tenant.as_deref())?;
    let owner = owner.or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()));
    let ttl = ttl.unwrap_or(config.identity.token_ttl);
    // A running instance registers through its API (one place for the change, its audit
    // record and the reload); otherwise the registry is written here.
    let body = serde_json::json!({
        "name": name,
        "owner": owner,
        "tenant": tenant,
        "ttl": humantime::format_duration(ttl).to_string(),
        "reference_tokens": reference_tokens,
    });
    let (reg, notified) = match block_on(call(state, Method::POST, "/api/v1/agents", Some(&body)))??
    {
        Some(answer) if answer.status.is_success() => {
            let v: serde_json::Value = serde_json::from_slice(&answer.body)?;
            let agent = &v["agent"];
            let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
            let reg = issuer::Registered {
                name: name.to_owned(),
                spiffe_id: text(&agent["spiffe_id"]).context("no spiffe_id in the answer")?,
                owner: text(&agent["owner"]),
                tenant: text(&agent["tenant"]),
                jti: text(&v["jti"]).unwrap_or_default(),
                expires: v["expires"].as_i64().unwrap_or_default(),
                token: text(&v["token"]).context("no token in the answer")?,
            };
            (reg, Some(answer.addr))
        }
        Some(answer) => bail!(
            "the running proxy refused ({}): {}",
            answer.status,
            api_reason(&answer.body)
        ),
        None => {
            let mut registry = Registry::open(state)?;
            let req = Registration {
                name,
                owner: owner.as_deref(),
                tenant: tenant.as_deref(),
                ttl,
            };
            let reg = issuer::register(state, &mut registry, &config.identity, &req, now())?;
            registry.set_reference_tokens(name, reference_tokens)?;
            let notified = announce(state, config, "agent_registered", &reg.spiffe_id)?;
            (reg, notified)
        }
    };
    let env = agent_env::for_agent(state, config, name, now()).ok();
    let proxy_url = env
        .as_ref()
        .map(|e| format!("http://{name}:{}@{}", reg.token, e.proxy));
    match output {
        Output::Json => {
            let mut doc = serde_json::to_value(&reg)?;
            doc["expires_at"] = rfc3339(reg.expires).into();
            doc["proxy_url"] = proxy_url.into();
            outln!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Output::Text => {
            outln!("registered agent {name}");
            outln!("  SPIFFE ID  {}", reg.spiffe_id);
            if let Some(owner) = &reg.owner {
                outln!("  owner      {owner}");
            }
            outln!("  jti        {}", reg.jti);
            outln!("  expires    {}", rfc3339(reg.expires));
            outln!("  token      {}", reg.token);
            if let Some(url) = proxy_url {
                outln!("  proxy URL  {url}");
            }
            outln!();
            outln!(
                "Run the agent through AgentGate with: agentgate exec --agent {name} -- CMD ARGS…"
            );
            if notified.is_none() {
                eprintln!("note: no running proxy found; start one with `agentgate run`");
            }
        }
    }
    Ok(())
}

fn reference(state: &StateDir, name: &str, service: &str, output: Output) -> Result<()> {
    let body = serde_json::json!({ "agent": name, "service": service });
    let answer = block_on(agentgate::admin::client::call(
        state,
        http::Method::POST,
        "/api/v1/references",
        Some(&body),
    ))??
    .context("no proxy is running; references are issued (and swapped) by the running proxy")?;
    if !answer.status.is_success() {
        bail!(
            "the proxy refused ({}): {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    let doc: serde_json::Value = serde_json::from_slice(&answer.body)?;
    match output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&doc)?),
        Output::Text => outln!("{}", doc["reference"].as_str().unwrap_or_default()),
    }
    Ok(())
}

fn list(state: &StateDir, output: Output) -> Result<()> {
    let registry = Registry::open(state)?;
    let agents = registry.agents(None, now())?;
    match output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&agents)?),
        Output::Text if agents.is_empty() => {
            eprintln!("no agents registered; add one with `agentgate agents register NAME`")
        }
        Output::Text => {
            outln!(
                "{:<20} {:<8} {:<12} {:>6}  {:<20}  SPIFFE ID",
                "NAME",
                "STATUS",
                "OWNER",
                "TOKENS",
                "EXPIRES"
            );
            for a in agents {
                let status = if a.revoked.is_some() {
                    "revoked"
                } else if a.active_tokens == 0 {
                    "expired"
                } else {
                    "active"
                };
                outln!(
                    "{:<20} {:<8} {:<12} {:>6}  {:<20}  {}",
                    a.name,
                    status,
                    a.owner.as_deref().unwrap_or("-"),
                    a.active_tokens,
                    a.token_expires.map(rfc3339).unwrap_or_else(|| "-".into()),
                    a.spiffe_id
                );
            }
        }
    }
    Ok(())
}

/// The `reason` of an admin API error body (or the body itself).
fn api_reason(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// Tells the running proxy (reload + audit record), or, when none runs, writes the admin
/// record to the audit log directly.
fn announce(
    state: &StateDir,
    config: &Config,
    event: &str,
    subject: &str,
) -> Result<Option<std::net::SocketAddr>> {
    if let Some(addr) = block_on(reload_identity(state, Some((event, subject))))?? {
        return Ok(Some(addr));
    }
    block_on(async {
        let audit = Audit::open(&config.audit, state, "cli", Default::default())?;
        let result = audit
            .admin_event(event, serde_json::json!({ "subject": subject }))
            .await;
        audit.close().await;
        result.map(drop)
    })??;
    Ok(None)
}

fn revoke(
    state: &StateDir,
    config: &Config,
    name: &str,
    jti: Option<String>,
    reason: &str,
) -> Result<()> {
    let path = format!(
        "/api/v1/agents/{}/revoke",
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
    );
    let body = serde_json::json!({ "reason": reason, "jti": jti });
    match block_on(call(state, Method::POST, &path, Some(&body)))?? {
        Some(answer) if answer.status.is_success() => {
            let what = match &jti {
                Some(jti) => format!("token {jti} of agent {name}"),
                None => format!("agent {name}"),
            };
            eprintln!(
                "revoked {what}; the running proxy (admin {}) refuses it now",
                answer.addr
            );
            return Ok(());
        }
        Some(answer) => bail!(
            "the running proxy refused ({}): {}",
            answer.status,
            api_reason(&answer.body)
        ),
        None => {}
    }
    let mut registry = Registry::open(state)?;
    let (what, event, subject) = match (&jti, name.starts_with("spiffe://")) {
        (Some(jti), false) => {
            registry.revoke_token(name, jti, now())?;
            (
                format!("token {jti} of agent {name}"),
                "token_revoked",
                format!("{name}:{jti}"),
            )
        }
        (Some(_), true) => bail!("--jti takes an agent name, not a SPIFFE ID"),
        (None, true) => {
            spiffe::SpiffeId::new(name).context("not a valid SPIFFE ID")?;
            registry.revoke_id(name, reason, now())?;
            (name.to_owned(), "agent_revoked", name.to_owned())
        }
        (None, false) => {
            let tokens = registry.revoke_agent(name, reason, now())?;
            let id = registry.agent(name)?.spiffe_id;
            (
                format!("agent {name} and its {tokens} live token(s)"),
                "agent_revoked",
                id,
            )
        }
    };
    match announce(state, config, event, &subject)? {
        Some(addr) => eprintln!("revoked {what}; the running proxy (admin {addr}) refuses it now"),
        None => eprintln!("revoked {what}; no proxy is running, it is refused from the next start"),
    }
    Ok(())
}

/// Runs an `identity` subcommand.
pub(crate) fn identity(state: &StateDir, config: &Config, cmd: IdentityCommand) -> Result<()> {
    let registry = Registry::open(state)?;
    match cmd {
        IdentityCommand::Rotate => {
            let r = issuer::rotate(state, &registry, now())?;
            let notified = announce(state, config, "key_rotated", &r.new_kid)?;
            outln!("new issuer key {}", r.new_kid);
            if let (Some(kid), Some(until)) = (&r.retired_kid, r.retired_valid_until) {
                outln!(
                    "retired key {kid}: trusted until {} (its last token expires)",
                    rfc3339(until)
                );
            }
            for kid in &r.dropped {
                outln!("dropped key {kid} (all its tokens had expired)");
            }
            if notified.is_some() {
                eprintln!("the running proxy serves the new bundle now");
            }
            outln!(
                "tokens issued from now on use the new key: re-register agents to move them over"
            );
        }
        IdentityCommand::Bundle => {
            issuer::ensure_key(state, &registry, now())?;
            let snap = registry.snapshot(now())?;
            let keys: Vec<(String, agentgate::identity::jwt::VerifyKey)> = snap
                .issuer_keys
                .iter()
                .map(|k| {
                    let jwk: serde_json::Value = serde_json::from_str(&k.public_jwk)?;
                    Ok((
                        k.kid.clone(),
                        agentgate::identity::jwt::VerifyKey::from_jwk(&jwk)?,
                    ))
                })
                .collect::<Result<_>>()?;
            let doc = bundle::to_jwks(keys.iter().map(|(k, v)| (k.as_str(), v)));
            outln!("{}", serde_json::to_string_pretty(&doc)?);
        }
    }
    Ok(())
}
