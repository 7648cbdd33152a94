//! The policy in force for the instance or one tenant: evaluated per request without a lock,
//! reloaded when its directory changes (a failed reload keeps the last good policy), every
//! reload audited.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::Value;

use super::config::{Mode, PolicyConfig};
use super::decision::{Decision, parse_decision};
use super::embedded::seed;
use super::error::PolicyError;
use super::sources::{FileKind, Loaded, Sources, classify};
use crate::audit::{Audit, record};
use crate::metrics::Metrics;

/// The policy directory in use: `policy.dir`, or `<state>/policies` seeded with the embedded
/// policy on first run.
pub fn resolve_dir(config: &PolicyConfig, state_root: &Path) -> Result<PathBuf, PolicyError> {
    if !config.dir.as_os_str().is_empty() {
        if !config.dir.is_dir() {
            return Err(PolicyError::Io {
                path: config.dir.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "policy.dir is not a directory; create it or unset policy.dir to use the default policy",
                ),
            });
        }
        return Ok(config.dir.clone());
    }
    let dir = state_root.join("policies");
    if seed(&dir).map_err(|source| PolicyError::Io {
        path: dir.clone(),
        source,
    })? {
        tracing::info!(dir = %dir.display(), "wrote the default policy; edit it there (reloaded on change)");
    }
    Ok(dir)
}

/// The last reload's result, for status and the admin API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub dir: String,
    pub hash: String,
    pub files: Vec<String>,
    pub mode: &'static str,
    /// Why the newest files were not loaded (the previous policy stays in force).
    pub last_error: Option<String>,
    /// The shadow policy evaluated beside this one, when `policy.shadow` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Box<Status>>,
}

/// The policy gate's state: the policy in force and how to reload it.
pub struct Policy {
    current: ArcSwap<Loaded>,
    dir: PathBuf,
    pub mode: Mode,
    fingerprint: std::sync::Mutex<Fingerprint>,
    last_error: ArcSwap<Option<String>>,
    /// The tenant this policy decides for (`None`: the instance's).
    tenant: Option<String>,
    /// The candidate evaluated beside this policy on every request (`policy.shadow`).
    shadow: Option<Arc<Policy>>,
    /// This is a shadow: it never decides, only records what it would have.
    is_shadow: bool,
}

type Fingerprint = Vec<(String, u64, Option<SystemTime>)>;

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").field("dir", &self.dir).finish()
    }
}

/// What a reload did.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Loaded { hash: Arc<str> },
    Failed(String),
}

impl Policy {
    /// Loads `dir`; a broken policy at start is an error (there is no last good one).
    pub fn load(dir: &Path, config: &PolicyConfig) -> Result<Policy, PolicyError> {
        set_eval_timeout(config.eval_timeout);
        let fingerprint = fingerprint(dir);
        let loaded = Sources::read_dir(dir)?.compile(dir)?;
        Ok(Policy {
            current: ArcSwap::from_pointee(loaded),
            dir: dir.to_owned(),
            mode: config.mode,
            fingerprint: std::sync::Mutex::new(fingerprint),
            last_error: ArcSwap::from_pointee(None),
            tenant: None,
            shadow: None,
            is_shadow: false,
        })
    }

    /// A policy from in-memory sources (tests, `explain` with embedded defaults).
    pub fn from_sources(sources: &Sources, config: &PolicyConfig) -> Result<Policy, PolicyError> {
        set_eval_timeout(config.eval_timeout);
        let loaded = sources.compile(Path::new("<embedded>"))?;
        Ok(Policy {
            current: ArcSwap::from_pointee(loaded),
            dir: PathBuf::from("<embedded>"),
            mode: config.mode,
            fingerprint: std::sync::Mutex::new(Vec::new()),
            last_error: ArcSwap::from_pointee(None),
            tenant: None,
            shadow: None,
            is_shadow: false,
        })
    }

    /// Marks this as `tenant`'s policy (named in its reload records).
    pub fn with_tenant(mut self, tenant: &str) -> Policy {
        self.tenant = Some(tenant.to_owned());
        self
    }

    /// Evaluates `shadow` beside this policy on every request.
    pub fn with_shadow(mut self, mut shadow: Policy) -> Policy {
        shadow.is_shadow = true;
        shadow.tenant = self.tenant.clone();
        self.shadow = Some(Arc::new(shadow));
        self
    }

    /// The candidate policy evaluated beside this one, if any.
    pub fn shadow(&self) -> Option<&Arc<Policy>> {
        self.shadow.as_ref()
    }

    /// Whether this is a shadow policy (evaluated, never enforced).
    pub fn is_shadow(&self) -> bool {
        self.is_shadow
    }

    /// The tenant this policy decides for; `None` for the instance's.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The policy directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the policy in force cannot read the request's time.
    pub fn clockless(&self) -> bool {
        self.current.load().clockless
    }

    /// Hash of the policy in force.
    pub fn hash(&self) -> Arc<str> {
        self.current.load().hash.clone()
    }

    /// Status for the admin API and logs.
    pub fn status(&self) -> Status {
        let current = self.current.load();
        Status {
            dir: self.dir.display().to_string(),
            hash: current.hash.to_string(),
            files: current.files.clone(),
            mode: if self.is_shadow {
                "shadow"
            } else {
                self.mode.as_str()
            },
            last_error: (**self.last_error.load()).clone(),
            shadow: self.shadow.as_ref().map(|s| Box::new(s.status())),
        }
    }

    /// Decides on one AuthZEN tuple; never fails (every failure is a deny with its reason).
    pub fn evaluate(&self, input: &Value) -> Decision {
        self.evaluate_with(&self.current.load(), input).0
    }

    /// Decides on `input` like [`Self::evaluate`], answering a repeated input from the
    /// decisions remembered for the policy in force (see `policy/cache.rs`).
    pub fn decide(&self, input: &Value) -> Arc<Decision> {
        let current = self.current.load();
        let Some(cache) = &current.decisions else {
            return Arc::new(self.evaluate_with(&current, input).0);
        };
        let Ok(key) = super::cache::key(input, current.clockless) else {
            return Arc::new(self.evaluate_with(&current, input).0);
        };
        if let Some(known) = cache.get(&key) {
            return known;
        }
        let (decision, evaluated) = self.evaluate_with(&current, input);
        let decision = Arc::new(decision);
        // An error (a time bound hit, say) is no answer of the policy's: never remembered.
        if evaluated {
            cache.insert(key, decision.clone());
        }
        decision
    }

    /// The decision of the policy `current` on `input`, and whether the policy itself
    /// answered (`false` when evaluation failed and the decision is a made-up denial).
    fn evaluate_with(&self, current: &Loaded, input: &Value) -> (Decision, bool) {
        let hash = current.hash.clone();
        let Some(compiled) = &current.compiled else {
            let reason = format!(
                "no policy is loaded (no .rego file in {}); every request is denied",
                self.dir.display()
            );
            return (Decision::deny(reason, hash), false);
        };
        let started = std::time::Instant::now();
        match compiled.eval_with_input(to_rego(input)) {
            Ok(v) => (parse_decision(&v, hash), true),
            Err(e) => {
                let text = e.to_string();
                let reason = if text.contains("time limit") || text.contains("exceeded") {
                    format!(
                        "policy evaluation exceeded its time bound ({:?} elapsed); denied",
                        started.elapsed()
                    )
                } else {
                    format!("policy evaluation failed: {text}")
                };
                (Decision::deny(reason, hash), false)
            }
        }
    }

    /// Reloads when the directory changed (or always with `force`). A broken policy keeps
    /// the one in force.
    pub fn reload(&self, force: bool) -> Reload {
        let now = fingerprint(&self.dir);
        {
            let Ok(mut last) = self.fingerprint.lock() else {
                return Reload::Failed("policy reload state poisoned".into());
            };
            if !force && *last == now {
                return Reload::Unchanged;
            }
            *last = now;
        }
        match Sources::read_dir(&self.dir).and_then(|s| s.compile(&self.dir)) {
            Ok(loaded) => {
                let hash = loaded.hash.clone();
                self.current.store(Arc::new(loaded));
                self.last_error.store(Arc::new(None));
                Reload::Loaded { hash }
            }
            Err(e) => {
                let text = e.to_string();
                self.last_error.store(Arc::new(Some(text.clone())));
                Reload::Failed(text)
            }
        }
    }

    /// Reloads on change until shutdown; every reload (and every refused one) is audited
    /// and counted.
    pub async fn watch(
        self: Arc<Self>,
        audit: Arc<Audit>,
        metrics: Arc<Metrics>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let this = self.clone();
            let outcome = tokio::task::spawn_blocking(move || this.reload(false)).await;
            let Ok(outcome) = outcome else { continue };
            self.announce(&audit, &metrics, &outcome).await;
        }
    }

    /// Logs, counts and audits a reload's outcome.
    pub async fn announce(&self, audit: &Audit, metrics: &Metrics, outcome: &Reload) {
        let dir = self.dir.display().to_string();
        let tenant = self.tenant.clone();
        let (event, detail) = match outcome {
            Reload::Unchanged => return,
            Reload::Loaded { hash } => {
                tracing::info!(dir = %self.dir.display(), %hash, tenant = self.tenant(), shadow = self.is_shadow, "policy reloaded");
                let hash = hash.to_string();
                let shadow = self.is_shadow;
                let detail = record::PolicyReloaded {
                    dir,
                    hash,
                    tenant,
                    shadow,
                };
                ("policy_reloaded", record::Detail::PolicyReloaded(detail))
            }
            Reload::Failed(error) => {
                tracing::error!(dir = %self.dir.display(), %error, tenant = self.tenant(), shadow = self.is_shadow, "policy not reloaded; the previous policy stays in force");
                let (error, in_force) = (error.clone(), self.hash().to_string());
                let detail = record::PolicyReloadFailed {
                    dir,
                    error,
                    in_force,
                    tenant,
                    shadow: self.is_shadow,
                };
                (
                    "policy_reload_failed",
                    record::Detail::PolicyReloadFailed(detail),
                )
            }
        };
        metrics.policy_reload(matches!(outcome, Reload::Loaded { .. }));
        // A tenant's records carry its name, so its own admin scope sees them.
        let r = record::Admin {
            event: event.into(),
            tenant: self.tenant.clone(),
            detail,
        };
        if let Err(e) = audit.commit(r.into()).await {
            tracing::error!(error = %e, "policy reload not recorded in the audit log");
        }
    }
}

/// What identifies the directory's state without reading every file: names, sizes, mtimes.
fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out: Fingerprint = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            if classify(&name) == FileKind::Other {
                return None;
            }
            // Followed: a Kubernetes ConfigMap volume's files are symlinks into `..data`,
            // which an update swaps, leaving the links themselves unchanged.
            let meta = std::fs::metadata(e.path()).ok()?;
            Some((name, meta.len(), meta.modified().ok()))
        })
        .collect();
    out.sort();
    out
}

fn set_eval_timeout(limit: Duration) {
    regorus::utils::limits::set_fallback_execution_timer_config(Some(
        regorus::utils::limits::ExecutionTimerConfig {
            limit,
            // The clock is read every 64 units of work, not at every one.
            check_interval: std::num::NonZeroU32::new(64).unwrap_or(std::num::NonZeroU32::MIN),
        },
    ));
}

/// The policy input as a regorus value, built directly (regorus's own `From` goes through a
/// clone and serde, which costs several microseconds per request).
pub(super) fn to_rego(v: &Value) -> regorus::Value {
    match v {
        Value::Null => regorus::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into(),
            (None, Some(u)) => u.into(),
            (None, None) => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => items.iter().map(to_rego).collect::<Vec<_>>().into(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (regorus::Value::from(k.as_str()), to_rego(v)))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into(),
    }
}
