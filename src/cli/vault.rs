//! `agentgate vault …`: connections in the local vault. Secrets come from stdin or a file,
//! never from the command line (where `ps` and shell history would show them), and are
//! never printed: `list` shows id, kind and a keyed fingerprint.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};

use agentgate::admin::client::reload_vault;
use agentgate::clock::now;
use agentgate::config::Config;
use agentgate::secret::Secret;
use agentgate::state::StateDir;
use agentgate::vault::store::{NewConnection, Store};
use agentgate::vault::{Kind, Settings, default_origin, fetch, origin_key};

use super::{Output, block_on};
use agentgate::clock::rfc3339;

/// `agentgate vault`.
// Parsed once per process; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(crate) enum VaultCommand {
    /// Store (or replace) the credential for SERVICE; the secret is read from stdin or --secret-file.
    Set {
        /// Service name, e.g. github, gmail, slack (or any name with --origin).
        service: String,
        #[arg(long, value_enum)]
        kind: KindArg,
        /// Tenant the connection belongs to.
        #[arg(long, default_value = "")]
        tenant: String,
        /// Only for agents owned by this user (default: any owner).
        #[arg(long, default_value = "")]
        user: String,
        /// The only origin the credential is sent to, https://host[:port] (default for
        /// github, gmail and slack: their API origin).
        #[arg(long)]
        origin: Option<String>,
        /// Authorization scheme: Bearer or token.
        #[arg(long, default_value = "Bearer")]
        scheme: String,
        /// Read the secret from this file instead of stdin.
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// When a static token expires: RFC 3339 time or a duration from now (30d).
        #[arg(long)]
        expires: Option<String>,
        /// oauth: the [vault.providers.NAME] client that refreshes it (default: SERVICE).
        #[arg(long)]
        provider: Option<String>,
        /// oauth/auth0: scope to request when policy names none (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// github-app: the App id.
        #[arg(long)]
        app_id: Option<u64>,
        /// github-app: the installation id.
        #[arg(long)]
        installation_id: Option<u64>,
        /// github-app: API base URL (GitHub Enterprise).
        #[arg(long)]
        api_url: Option<String>,
        /// auth0: the Auth0 connection, e.g. github or google-oauth2 (default: SERVICE).
        #[arg(long)]
        connection: Option<String>,
    },
    /// List connections (never a secret).
    List {
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Remove a connection by id, or by SERVICE (with --tenant/--user).
    Rm {
        target: String,
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, default_value = "")]
        user: String,
    },
}

/// `--kind`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum KindArg {
    Static,
    Oauth,
    GithubApp,
    Auth0,
}

/// Runs a `vault` subcommand.
pub(crate) fn run(state: &StateDir, config: &Config, cmd: VaultCommand) -> Result<()> {
    let key_file =
        (!config.vault.key_file.as_os_str().is_empty()).then_some(config.vault.key_file.as_path());
    let mut store = Store::open(state, key_file)?;
    match cmd {
        VaultCommand::Set {
            service,
            kind,
            tenant,
            user,
            origin,
            scheme,
            secret_file,
            expires,
            provider,
            scopes,
            app_id,
            installation_id,
            api_url,
            connection,
        } => {
            config.check_tenant((!tenant.is_empty()).then_some(tenant.as_str()))?;
            let kind = match kind {
                KindArg::Static => Kind::Static,
                KindArg::Oauth => Kind::Oauth,
                KindArg::GithubApp => Kind::GithubApp,
                KindArg::Auth0 => Kind::Auth0,
            };
            let origin = match origin.as_deref().or(default_origin(&service)) {
                Some(o) => origin_key(o).map_err(anyhow::Error::msg)?,
                None => bail!(
                    "--origin https://host is required for service {service} (github, gmail and slack have defaults)"
                ),
            };
            if !matches!(scheme.as_str(), "Bearer" | "token") {
                bail!("--scheme must be Bearer or token");
            }
            if kind == Kind::GithubApp && (app_id.is_none() || installation_id.is_none()) {
                bail!("--kind github-app needs --app-id and --installation-id");
            }
            if kind == Kind::Oauth {
                let p = provider.as_deref().unwrap_or(&service);
                if !config.vault.providers.contains_key(p) {
                    eprintln!(
                        "warning: no [vault.providers.{p}] in the config yet; add token_url, client_id and the client secret before the proxy can refresh this token"
                    );
                }
            }
            if kind == Kind::Auth0 && config.vault.auth0.is_none() {
                eprintln!(
                    "warning: no [vault.auth0] in the config yet; add domain, client_id and the client secret before the proxy can exchange this token"
                );
            }
            let expires = expires.map(|e| parse_expiry(&e)).transpose()?;
            if expires.is_some() && kind != Kind::Static {
                bail!(
                    "--expires applies to static tokens; other kinds expire as their provider says"
                );
            }
            let secret = read_secret(secret_file.as_deref())?;
            if kind == Kind::Static
                && http::HeaderValue::from_str(&format!("{scheme} {}", secret.expose())).is_err()
            {
                bail!(
                    "the token holds characters an HTTP header cannot carry (a newline or control character?); check the file or what was piped in"
                );
            }
            if kind == Kind::GithubApp {
                fetch::check_github_app_key(&secret).map_err(anyhow::Error::msg)?;
            }
            let settings = Settings {
                scheme,
                provider,
                scopes,
                app_id,
                installation_id,
                api_url,
                connection,
            };
            let c = store.put(
                NewConnection {
                    tenant,
                    service: service.clone(),
                    user,
                    kind,
                    origin,
                    settings,
                    expires,
                },
                &secret,
                now(),
            )?;
            outln!(
                "stored {} for {service} (kind {}, origin {}, fingerprint {})",
                c.id,
                kind.as_str(),
                c.origin,
                c.fingerprint
            );
            tell(state, &format!("set {} {service}", c.id))
        }
        VaultCommand::List { output } => {
            let list = store.list()?;
            match output {
                Output::Json => outln!("{}", serde_json::to_string_pretty(&list)?),
                Output::Text if list.is_empty() => {
                    eprintln!(
                        "the vault is empty; add a credential with `agentgate vault set SERVICE --kind static < token.txt`"
                    )
                }
                Output::Text => {
                    outln!(
                        "{:<22} {:<8} {:<10} {:<10} {:<10} {:<24} {:<28} EXPIRES",
                        "ID",
                        "TENANT",
                        "SERVICE",
                        "USER",
                        "KIND",
                        "ORIGIN",
                        "FINGERPRINT"
                    );
                    for c in list {
                        let dash = |s: &str| {
                            if s.is_empty() {
                                "-".to_owned()
                            } else {
                                s.to_owned()
                            }
                        };
                        let expires = match (c.revoked, c.expires) {
                            (Some(at), _) => format!("revoked {}", rfc3339(at)),
                            (None, Some(e)) => rfc3339(e),
                            (None, None) => "-".into(),
                        };
                        outln!(
                            "{:<22} {:<8} {:<10} {:<10} {:<10} {:<24} {:<28} {expires}",
                            c.id,
                            dash(&c.tenant),
                            c.service,
                            dash(&c.user),
                            c.kind.as_str(),
                            c.origin,
                            c.fingerprint
                        );
                    }
                }
            }
            Ok(())
        }
        VaultCommand::Rm {
            target,
            tenant,
            user,
        } => {
            let n = store.remove(&target, &tenant, &user)?;
            if n == 0 {
                bail!("no connection {target} (see `agentgate vault list`)");
            }
            outln!("removed {n} connection(s)");
            tell(state, &format!("rm {target}"))
        }
    }
}

/// Tells a running proxy, so the change is in force when the command returns.
fn tell(state: &StateDir, subject: &str) -> Result<()> {
    match block_on(reload_vault(state, subject))? {
        Ok(Some(addr)) => eprintln!("the running proxy (admin {addr}) uses it now"),
        Ok(None) => eprintln!("no proxy is running; it is used from the next start"),
        Err(e) => eprintln!("warning: {e}"),
    }
    Ok(())
}

/// The secret from `file` or stdin, without its trailing newline.
fn read_secret(file: Option<&std::path::Path>) -> Result<Secret> {
    let mut text = String::new();
    match file {
        Some(path) => {
            text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the secret from {}", path.display()))?;
        }
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!("paste the secret, then press Ctrl-D:");
            }
            std::io::stdin()
                .take(1 << 20)
                .read_to_string(&mut text)
                .context("reading the secret from stdin")?;
        }
    }
    let trimmed = text.trim_end_matches(['\r', '\n']);
    if trimmed.trim().is_empty() {
        bail!(
            "the secret is empty; pipe it in (`agentgate vault set … < token.txt`) or use --secret-file"
        );
    }
    Ok(Secret::new(trimmed.to_owned()))
}

fn parse_expiry(s: &str) -> Result<i64> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let d = humantime::parse_duration(s).with_context(|| {
        format!("--expires {s}: give an RFC 3339 time or a duration such as 30d")
    })?;
    Ok(now() + d.as_secs() as i64)
}
