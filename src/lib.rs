//! AgentGate: an egress security gate for AI agents.
//!
//! A forward proxy that intercepts an agent's HTTPS (CONNECT + TLS with its own CA) and
//! forwards each request to the real, certificate-verified upstream once the flow in
//! [`pipeline`] lets it through. [`start`] runs an instance from a [`config::Config`].

// First: its macro is used by the modules below.
#[macro_use]
pub mod stream;

pub mod admin;
pub mod agent_env;
pub mod audit;
pub mod authority;
pub mod body;
pub mod ca;
pub mod clock;
pub mod config;
pub mod consent;
pub mod digest;
pub mod egress;
pub mod error;
pub mod fleet;
pub mod gates;
pub mod headers;
pub mod identity;
pub mod ingress;
pub mod instance;
pub mod intent;
pub mod k8s;
pub mod listen;
pub mod metrics;
pub mod otel;
pub mod outbound;
pub mod panic;
pub mod pipeline;
pub mod policy;
pub mod replica;
pub mod secret;
pub mod seed;
pub mod server;
pub mod sessions;
pub mod sidecar;
pub mod sqlite;
pub mod state;
pub mod tenants;
pub mod vault;
pub mod vendors;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::admin::state::{Admin, Health};
use crate::ca::{Ca, CaError};
use crate::config::Config;
use crate::egress::guard::Guard;
use crate::egress::upstream::{Upstream, UpstreamError};
use crate::identity::Identity;
use crate::listen::bind;
use crate::pipeline::Pipeline;
use crate::state::StateDir;

/// Why an instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Identity(#[from] identity::LoadError),
    #[error("{0}")]
    Workload(String),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    #[error(transparent)]
    Disk(#[from] audit::disk::DiskError),
    #[error(transparent)]
    Catalog(#[from] intent::CatalogError),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Budgets(#[from] policy::budget::BudgetError),
    #[error(transparent)]
    Vault(#[from] vault::VaultError),
    #[error(transparent)]
    Consent(#[from] consent::ConsentError),
    #[error(transparent)]
    Admin(#[from] admin::AdminSetupError),
    #[error("cannot start the admin API's runtime: {0}")]
    AdminRuntime(std::io::Error),
    #[error("webhooks: {0}")]
    Webhooks(String),
    #[error(transparent)]
    Sidecar(#[from] sidecar::SidecarError),
    #[error(transparent)]
    Bind(#[from] listen::BindError),
    #[error(transparent)]
    Otel(#[from] otel::OtelError),
    #[error("MCP tool pins: {0}")]
    McpPins(String),
}

/// A running instance.
pub struct Running {
    /// Where the proxy listens (the real port when configured with port 0).
    pub proxy_addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    /// Where redirected connections are taken (`transparent.listen`).
    pub transparent_addrs: Vec<SocketAddr>,
    /// Where the probe listener is (`health.listen`).
    pub health_addr: Option<SocketAddr>,
    /// The admin API's URL (`https://` when it serves TLS).
    pub admin_url: String,
    /// The CA certificate agents must trust.
    pub ca_cert: PathBuf,
    /// Whether this start created a new CA.
    pub ca_created: bool,
    /// This process's instance id.
    pub instance: String,
    /// The policy directory in force.
    pub policy_dir: PathBuf,
    state: StateDir,
    audit: Arc<audit::Audit>,
    shutdown: watch::Sender<bool>,
    slots: Arc<Semaphore>,
    max_connections: usize,
    health: Arc<Health>,
    tasks: Vec<JoinHandle<()>>,
}

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Checks what a config refers to (root files) without starting anything.
pub fn check(config: &Config) -> Result<(), StartError> {
    Upstream::new(
        &config.upstream,
        Arc::new(Guard::new(&config.egress, &config.upstream.resolve)),
        crypto_provider(),
    )?;
    for (td, path) in &config.identity.bundles {
        let bytes = std::fs::read(path).map_err(|e| e.to_string());
        bytes
            .and_then(|b| identity::bundle::parse_jwks(&b).map_err(|e| e.to_string()))
            .map_err(|reason| identity::LoadError::BundleFile {
                trust_domain: td.clone(),
                path: path.clone(),
                reason,
            })?;
    }
    identity::workload::endpoint(
        config.identity.workload_api,
        &config.identity.workload_api_socket,
    )
    .map_err(StartError::Workload)?;
    Ok(())
}

/// Starts the proxy and admin listeners; the CA is created in `state` on first run.
pub async fn start(config: Config, state: &StateDir) -> Result<Running, StartError> {
    let provider = crypto_provider();
    let ca_created = ca::ensure_ca(state)?;
    let ca = Ca::load(
        state,
        config.ca.leaf_validity,
        config.ca.leaf_cache_size,
        provider.clone(),
    )?;
    // A file size limit (RLIMIT_FSIZE) or a full disk must fail the audit write, which
    // refuses requests 503, not kill the process with SIGXFSZ.
    let xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25));
    if let Err(e) = xfsz {
        tracing::warn!(error = %e, "cannot catch SIGXFSZ; a file size limit would stop the process");
    }
    let workload_endpoint = identity::workload::endpoint(
        config.identity.workload_api,
        &config.identity.workload_api_socket,
    )
    .map_err(StartError::Workload)?;
    let identity = Arc::new(Identity::load(&config.identity, state)?);
    let pod_source = sidecar::prepare(&config, state, &identity, workload_endpoint.as_deref())?;
    let intent = Arc::new(
        intent::Intent::embedded(config.intent.max_body)?
            .with_upgrades(config.intent.upgrades.clone())
            .with_mcp(&config.mcp.servers)
            .with_mcp_pins(Arc::new(
                intent::mcp::pins::Pins::load(state).map_err(StartError::McpPins)?,
            )),
    );
    // Gate 3: the instance's policy, and each tenant's.
    let policies = Arc::new(policy::Policies::load(
        &config.policy,
        config.tenant_policy_dirs(),
        state,
    )?);
    let policy = policies.instance().clone();
    // Gate 3's budgets: uses counted per key, by the fleet when there is one, otherwise
    // kept in the state directory.
    let budgets: Arc<dyn policy::budget::Budgets> = if config.fleet.enabled() {
        Arc::new(fleet::budgets::FleetBudgets::new(config.fleet.clone()))
    } else {
        Arc::new(policy::budget::LocalBudgets::in_state(
            state,
            clock::now_micros() / 1000,
        )?)
    };
    let policy_dir = policy.dir().to_owned();
    let instance_id = format!("{:08x}", rand::random::<u32>());
    // `/metrics`: one set of counters for the instance, handed to everything that counts;
    // the admin server renders it.
    let metrics = Arc::new(metrics::Metrics::default());
    let audit = Arc::new(audit::Audit::open(
        &config.audit,
        state,
        &instance_id,
        metrics.clone(),
    )?);
    let admin_token = instance::admin_token(state)?;
    let config = Arc::new(config);
    let guard = Arc::new(Guard::new(&config.egress, &config.upstream.resolve));
    let upstream = Upstream::new(&config.upstream, guard.clone(), provider)?;
    // AgentGate's own HTTPS calls (token endpoints, CIBA, webhooks) trust the same roots.
    let own_tls = upstream.client_config()?;
    // `[otel]`: the exporters are built (and their files read) before anything is served.
    let otel = match config.otel.enabled() {
        true => Some(otel::Exporters::new(
            &config.otel,
            &instance_id,
            config.fleet.enabled().then_some(config.fleet.name.as_str()),
            &upstream,
        )?),
        false => None,
    };
    let vault = vault::Vault::open(
        &config.vault,
        &config.upstream.resolve,
        state,
        own_tls.clone(),
        audit.clone(),
    )?;
    // In a fleet, OAuth refreshes take the fleet's lease on the connection first.
    let leases = config
        .fleet
        .enabled()
        .then(|| fleet::refresh::RefreshLeases::new(instance_id.clone()));
    let vault = Arc::new(match &leases {
        Some(l) => vault.with_refresh_coordinator(l.clone()),
        None => vault,
    });
    let (proxy_addr, proxy) = bind(
        config.proxy.listen,
        "proxy.listen",
        "AGENTGATE_PROXY_LISTEN",
    )
    .await?;
    let admin_tls = admin::tls_acceptor(&config.admin)?;
    let (admin_addr, admin) = bind(
        config.admin.listen,
        "admin.listen",
        "AGENTGATE_ADMIN_LISTEN",
    )
    .await?;
    let pod_listeners = sidecar::bind_listeners(&config).await?;
    let transparent_addrs: Vec<SocketAddr> =
        pod_listeners.transparent.iter().map(|(a, _)| *a).collect();
    let health_addr = pod_listeners.probes.as_ref().map(|(a, _)| *a);

    // Gate 4: consents, asked of the CIBA provider (which pings the admin listener) or of
    // the local approver; events go out as webhooks.
    let webhooks = Arc::new(
        webhooks::Webhooks::start(&config.webhooks, own_tls.clone())
            .map_err(StartError::Webhooks)?,
    );
    // Each tenant's consents have their own store, CIBA client (pinged at
    // /api/v1/ciba/notify/<tenant>) and webhooks (which forward to the instance's).
    let admin_base = format!(
        "{}://{}",
        if admin_tls.is_some() { "https" } else { "http" },
        admin_addr
    );
    let tenant_consents = consent::TenantConsents::open(
        &config.consent,
        &config.tenants,
        consent::tenants::Setup {
            state,
            audit: audit.clone(),
            metrics: metrics.clone(),
            webhooks: webhooks.clone(),
            tls: own_tls.clone(),
            admin_base: &admin_base,
        },
    )?;
    metrics.track_cache(metrics::Cache::LeafCert, ca.cache_stats());
    metrics.track_cache(metrics::Cache::Identity, identity.cache_stats());
    metrics.track_cache(metrics::Cache::Vault, vault.cache_stats());
    metrics.track_webhooks(webhooks.stats.clone());
    if policies.shadowed() {
        metrics.track_shadow(policies.shadow_stats().clone());
    }
    let pipeline = Arc::new(Pipeline::new(pipeline::Components {
        instance: instance_id,
        limits: config.limits.clone(),
        identity: identity.clone(),
        intent: intent.clone(),
        policies: policies.clone(),
        budgets: budgets.clone(),
        consents: tenant_consents.clone(),
        vault: vault.clone(),
        audit: audit.clone(),
        metrics: metrics.clone(),
        guard,
        upstream,
        ca,
        loopback_is_pod: config.pod.loopback_is_pod,
    }));

    let (shutdown, shutdown_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(config.proxy.max_connections));
    let health = Arc::new(Health::default());
    // Warns (metrics, `/readyz`, log) well before a full disk refuses every request.
    let disk = audit::disk::DiskWatch::start(&config.audit, state, shutdown_rx.clone())?;
    let instance = pipeline.instance().to_owned();
    let panic = Arc::new(panic::Panic {
        identity: identity.clone(),
        vault: vault.clone(),
        sessions: pipeline.sessions.clone(),
        consents: tenant_consents.clone(),
        webhooks: webhooks.clone(),
        audit: audit.clone(),
        metrics: metrics.clone(),
        state: state.clone(),
    });
    // Fleet mode: one registry and one PANIC with the other instances.
    let fleet = leases.map(|leases| fleet::Member {
        config: config.fleet.clone(),
        instance: instance.clone(),
        identity: identity.clone(),
        panic: panic.clone(),
        vault: vault.clone(),
        consents: tenant_consents.clone(),
        audit: audit.clone(),
        state: state.clone(),
        leases,
        pins: intent.mcp_pins().cloned(),
    });
    // Each tenant's admin token (created 0600 when missing): scope "tenant" t.
    let tenant_tokens = tenants::admin_tokens(state, &config.tenants)?;
    let tenant_names: Vec<String> = config.tenants.keys().cloned().collect();
    admin::check_distinct(&admin_token, &tenant_tokens)?;
    let admin_url = admin::base_url(&config.admin, admin_addr);
    let admin_state = Arc::new(Admin {
        health: health.clone(),
        identity: identity.clone(),
        intent: intent.clone(),
        policies: policies.clone(),
        audit: audit.clone(),
        disk,
        metrics: metrics.clone(),
        vault: vault.clone(),
        consents: tenant_consents.clone(),
        panic,
        state: state.clone(),
        config: config.clone(),
        auth: admin::auth::Auth::new(&admin_token, &tenant_tokens),
        instance: instance.clone(),
        base_url: admin_url.clone(),
        tenants: tenant_names,
        streams: admin::state::Streams::new(shutdown_rx.clone()),
        slots: slots.clone(),
        max_connections: config.proxy.max_connections,
        access_requests: Default::default(),
        budgets: budgets.clone(),
        fleet: config
            .fleet
            .enabled()
            .then(|| Arc::new(fleet::view::View::new(config.fleet.clone()))),
    });
    let mut tasks = sidecar::spawn(
        pod_listeners.transparent,
        pod_source,
        (&pipeline, &slots, &shutdown_rx),
        &identity,
        state,
        &config,
    );
    tasks.extend([
        tokio::spawn(ingress::listener::serve(
            proxy,
            pipeline,
            slots.clone(),
            shutdown_rx.clone(),
        )),
        tokio::spawn(admin::agents::seed_last_seen(admin_state.clone())),
        spawn_admin(
            (admin, pod_listeners.probes.map(|(_, l)| l)),
            admin_state,
            admin_tls,
            config.limits.clone(),
            shutdown_rx.clone(),
        )?,
        tokio::spawn(
            identity
                .clone()
                .watch(Duration::from_secs(1), shutdown_rx.clone()),
        ),
        tokio::spawn(watch_vault(vault.clone(), shutdown_rx.clone())),
    ]);
    tasks.extend(tenant_consents.sweep(&shutdown_rx));
    if let Some(exporters) = otel {
        let stats = Arc::new(otel::Stats::default());
        metrics.track_otel(stats.clone());
        tasks.push(tokio::spawn(otel::run(
            config.otel.clone(),
            exporters,
            audit.clone(),
            state.clone(),
            stats,
            shutdown_rx.clone(),
        )));
    }
    if let Some(member) = fleet {
        tracing::info!(fleet = %config.fleet.name, servers = %config.fleet.url.join(", "), "joining the fleet");
        tasks.push(tokio::spawn(fleet::run(member, shutdown_rx.clone())));
    }
    tasks.extend(policies.watch(
        &audit,
        &metrics,
        config.policy.reload_interval,
        &shutdown_rx,
    ));
    let workload_api = workload_endpoint.is_some();
    if let Some(endpoint) = workload_endpoint {
        identity.expect_workload_bundles();
        tracing::info!(%endpoint, "trusting JWT bundles from the SPIFFE Workload API");
        tasks.push(tokio::spawn(identity::workload::follow(
            identity.clone(),
            endpoint,
            shutdown_rx,
        )));
    }
    let tenant_policies: serde_json::Map<String, serde_json::Value> = policies
        .tenants()
        .map(|(t, p)| {
            let mut detail = serde_json::json!({"policy_dir": p.dir(), "policy_hash": &*p.hash()});
            if let Some(s) = p.shadow() {
                detail["shadow"] = serde_json::json!({"dir": s.dir(), "hash": &*s.hash()});
            }
            (t.to_owned(), detail)
        })
        .collect();
    let mut loaded = serde_json::json!({
        "proxy": proxy_addr.to_string(),
        "admin": admin_addr.to_string(),
        "durability": config.audit.durability,
        "trust_domain": config.identity.trust_domain,
        "workload_api": workload_api,
        "policy_dir": policy.dir().display().to_string(),
        "policy_hash": &*policy.hash(),
        "policy_mode": config.policy.mode,
        "tenants": tenant_policies,
        "catalog_operations": intent.catalog().operations(),
    });
    if let Some(s) = policy.shadow() {
        loaded["policy_shadow"] = serde_json::json!({"dir": s.dir(), "hash": &*s.hash()});
    }
    audit.admin_event("config_loaded", loaded).await?;
    instance::write(
        state,
        &instance::InstanceFile {
            pid: std::process::id(),
            instance: instance.clone(),
            proxy: proxy_addr,
            admin: admin_addr,
            admin_tls: config.admin.tls.as_ref().map(|t| t.cert.clone()),
        },
    )?;
    health.set_ready(true);
    Ok(Running {
        proxy_addr,
        admin_addr,
        transparent_addrs,
        health_addr,
        admin_url,
        ca_cert: state.ca_cert(),
        ca_created,
        instance,
        policy_dir,
        state: state.clone(),
        audit,
        shutdown,
        slots,
        max_connections: config.proxy.max_connections,
        health,
        tasks,
    })
}

/// Serves the admin API on a runtime and thread of its own, so PANIC, approvals and the
/// dashboard answer while the proxy's workers are saturated.
fn spawn_admin(
    (listener, probes): (TcpListener, Option<TcpListener>),
    admin: Arc<Admin>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: config::LimitsConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, StartError> {
    let listener = listener.into_std().map_err(StartError::AdminRuntime)?;
    let probes = probes
        .map(TcpListener::into_std)
        .transpose()
        .map_err(StartError::AdminRuntime)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("agentgate-admin")
        .enable_all()
        .build()
        .map_err(StartError::AdminRuntime)?;
    let mut stop = shutdown.clone();
    let probe_admin = admin.clone();
    let (probe_limits, probe_shutdown) = (limits.clone(), shutdown.clone());
    let served = runtime.spawn(async move {
        if let Some(probes) = probes.map(TcpListener::from_std) {
            match probes {
                Ok(l) => {
                    let serve = admin::serve_probes(l, probe_admin, probe_limits, probe_shutdown);
                    tokio::spawn(serve);
                }
                Err(e) => tracing::error!(error = %e, "probe listener could not be served"),
            }
        }
        match TcpListener::from_std(listener) {
            Ok(listener) => admin::serve(listener, admin, tls, limits, shutdown).await,
            Err(e) => tracing::error!(error = %e, "admin listener could not be served"),
        }
    });
    // The runtime lives until shutdown; it is dropped on a thread of its own, where
    // blocking is allowed.
    std::thread::Builder::new()
        .name("agentgate-admin-rt".into())
        .spawn(move || {
            runtime.block_on(async move {
                let _ = stop.changed().await;
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        })
        .map_err(StartError::AdminRuntime)?;
    Ok(served)
}

/// Applies CLI changes to the vault (`vault set`/`rm`) even when the instance was not told.
async fn watch_vault(vault: Arc<vault::Vault>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        let v = vault.clone();
        match tokio::task::spawn_blocking(move || v.reload_if_changed()).await {
            Ok(Ok(true)) => tracing::info!("vault connections reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "vault reload failed; keeping the connections loaded")
            }
            Err(_) => {}
        }
    }
}

impl Running {
    /// Stops accepting, asks every connection to finish, and waits up to `grace` for them.
    pub async fn shutdown(self, grace: Duration) {
        self.health.set_ready(false);
        instance::remove(&self.state);
        let _ = self.shutdown.send(true);
        for task in &self.tasks {
            task.abort();
        }
        let drained = async {
            while self.slots.available_permits() < self.max_connections {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            let open = self.max_connections - self.slots.available_permits();
            tracing::warn!(
                open,
                "shutdown grace period over; closing remaining connections"
            );
        }
        // Last: the final signed checkpoint covers every record written above.
        self.audit.close().await;
    }
}
