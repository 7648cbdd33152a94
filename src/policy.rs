//! Gate 3's machinery: Rego policies evaluated in-process by regorus.
//!
//! A policy directory (`*.rego` plus `*.json` data files) is compiled once per load into a
//! [`regorus::CompiledPolicy`] for the entry point `data.agentgate.decision`, then shared by
//! every request through an `ArcSwap` (no lock on the request path). Evaluation has a time
//! bound. Anything but a well-formed decision denies: undefined, malformed, timed out,
//! erroring. A reload that fails keeps the last good policy and says why.

mod embedded;
pub mod runner;
mod tenants;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::{Audit, record};
use crate::metrics::Metrics;

pub use embedded::{DEFAULT_FILES, default_sources, seed};
pub use tenants::{Policies, resolve_tenant_dir};

/// The rule every policy must define.
pub const ENTRYPOINT: &str = "data.agentgate.decision";

/// What policy says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Escalate,
    Deny,
}

impl Effect {
    /// The effect's name in records and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Escalate => "escalate",
            Effect::Deny => "deny",
        }
    }
}

/// Enforce decisions, or only record them (for rolling a policy out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Observe,
}

impl Mode {
    /// The mode's name in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Observe => "observe",
        }
    }
}

/// `[policy]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Policy directory; empty means `<state dir>/policies`, seeded with the default policy
    /// on first run.
    pub dir: PathBuf,
    /// `enforce`, or `observe`: decide and audit, but let every request through.
    pub mode: Mode,
    /// Longest one evaluation may run before the request is denied.
    #[serde(with = "humantime_serde")]
    pub eval_timeout: Duration,
    /// How often the directory is checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            mode: Mode::Enforce,
            eval_timeout: Duration::from_millis(100),
            reload_interval: Duration::from_secs(1),
        }
    }
}

/// A decision with everything the audit record and the consent gate need.
#[derive(Debug, Clone)]
pub struct Decision {
    pub effect: Effect,
    pub reasons: Vec<String>,
    pub scopes: Vec<String>,
    pub consent: Option<Value>,
    /// Hash of the policy files that decided (empty when none was loaded).
    pub policy_hash: Arc<str>,
}

impl Decision {
    /// A denial with one reason (no policy, or none that may decide).
    pub fn deny(reason: impl Into<String>, policy_hash: Arc<str>) -> Decision {
        Decision {
            effect: Effect::Deny,
            reasons: vec![reason.into()],
            scopes: Vec::new(),
            consent: None,
            policy_hash,
        }
    }

    /// The reasons as one line.
    pub fn reason_line(&self) -> String {
        if self.reasons.is_empty() {
            format!("policy decided {}", self.effect.as_str())
        } else {
            self.reasons.join("; ")
        }
    }
}

/// A policy directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy {file}: {reason}")]
    Compile { file: String, reason: String },
    #[error("policy data file {file}: {reason}")]
    Data { file: String, reason: String },
    #[error(
        "the policies in {0} do not define {ENTRYPOINT}; add `package agentgate` with a `decision` rule"
    )]
    NoEntrypoint(PathBuf),
}

/// One successfully compiled policy directory.
pub struct Loaded {
    compiled: Option<regorus::CompiledPolicy>,
    /// SHA-256 over file names and contents, hex; recorded with every decision.
    pub hash: Arc<str>,
    pub files: Vec<String>,
    pub loaded_at: SystemTime,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("hash", &self.hash)
            .field("files", &self.files)
            .finish()
    }
}

/// The sources of a policy directory, read once.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub rego: Vec<(String, String)>,
    pub data: Vec<(String, String)>,
    /// Test-only files (`*_test.rego`, `*_test.yaml`, `*_test.json`).
    pub tests: Vec<(String, String)>,
}

impl Sources {
    /// Reads a directory (not recursive; `templates/` and other folders are ignored).
    pub fn read_dir(dir: &Path) -> Result<Sources, PolicyError> {
        let io = |source| PolicyError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        let mut sources = Sources::default();
        for path in names {
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            let kind = classify(&name);
            if kind == FileKind::Other {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Io {
                path: path.clone(),
                source,
            })?;
            match kind {
                FileKind::Rego => sources.rego.push((name, text)),
                FileKind::Data => sources.data.push((name, text)),
                FileKind::Test => sources.tests.push((name, text)),
                FileKind::Other => {}
            }
        }
        Ok(sources)
    }

    /// SHA-256 over the policy and data files (not tests), hex.
    pub fn hash(&self) -> String {
        let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for (name, text) in self.rego.iter().chain(&self.data) {
            h.update(&(name.len() as u64).to_be_bytes());
            h.update(name.as_bytes());
            h.update(&(text.len() as u64).to_be_bytes());
            h.update(text.as_bytes());
        }
        crate::audit::chain::hex(h.finish().as_ref())
    }

    /// Builds a regorus engine with these policies and data (and tests when asked).
    pub fn engine(&self, with_tests: bool) -> Result<regorus::Engine, PolicyError> {
        let mut engine = regorus::Engine::new();
        engine.set_strict_builtin_errors(true);
        let tests = self
            .tests
            .iter()
            .filter(|(n, _)| with_tests && n.ends_with(".rego"));
        for (name, text) in self.rego.iter().chain(tests) {
            engine
                .add_policy(name.clone(), text.clone())
                .map_err(|e| PolicyError::Compile {
                    file: name.clone(),
                    reason: e.to_string(),
                })?;
        }
        for (name, text) in &self.data {
            let value = regorus::Value::from_json_str(text).map_err(|e| PolicyError::Data {
                file: name.clone(),
                reason: e.to_string(),
            })?;
            if value.as_object().is_err() {
                return Err(PolicyError::Data {
                    file: name.clone(),
                    reason: "must be a JSON object (it is merged at the root of data)".into(),
                });
            }
            engine.add_data(value).map_err(|e| PolicyError::Data {
                file: name.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(engine)
    }

    /// Compiles the policy for [`ENTRYPOINT`].
    pub fn compile(&self, dir: &Path) -> Result<Loaded, PolicyError> {
        let hash: Arc<str> = self.hash().into();
        let files = self
            .rego
            .iter()
            .chain(&self.data)
            .map(|(n, _)| n.clone())
            .collect();
        if self.rego.is_empty() {
            return Ok(Loaded {
                compiled: None,
                hash,
                files,
                loaded_at: SystemTime::now(),
            });
        }
        let mut engine = self.engine(false)?;
        let compiled = engine
            .compile_with_entrypoint(&ENTRYPOINT.into())
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("not found") || text.contains("undefined") {
                    PolicyError::NoEntrypoint(dir.to_owned())
                } else {
                    PolicyError::Compile {
                        file: dir.display().to_string(),
                        reason: text,
                    }
                }
            })?;
        Ok(Loaded {
            compiled: Some(compiled),
            hash,
            files,
            loaded_at: SystemTime::now(),
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum FileKind {
    Rego,
    Data,
    Test,
    Other,
}

fn classify(name: &str) -> FileKind {
    if name.starts_with('.') {
        FileKind::Other
    } else if name.ends_with("_test.rego")
        || name.ends_with("_test.yaml")
        || name.ends_with("_test.yml")
        || name.ends_with("_test.json")
    {
        FileKind::Test
    } else if name.ends_with(".rego") {
        FileKind::Rego
    } else if name.ends_with(".json") {
        FileKind::Data
    } else {
        FileKind::Other
    }
}

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
        })
    }

    /// Marks this as `tenant`'s policy (named in its reload records).
    pub fn with_tenant(mut self, tenant: &str) -> Policy {
        self.tenant = Some(tenant.to_owned());
        self
    }

    /// The tenant this policy decides for; `None` for the instance's.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The policy directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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
            mode: self.mode.as_str(),
            last_error: (**self.last_error.load()).clone(),
        }
    }

    /// Decides on one AuthZEN tuple; never fails (every failure is a deny with its reason).
    pub fn evaluate(&self, input: &Value) -> Decision {
        let current = self.current.load();
        let hash = current.hash.clone();
        let Some(compiled) = &current.compiled else {
            return Decision::deny(
                format!(
                    "no policy is loaded (no .rego file in {}); every request is denied",
                    self.dir.display()
                ),
                hash,
            );
        };
        let started = std::time::Instant::now();
        match compiled.eval_with_input(to_rego(input)) {
            Ok(v) => parse_decision(&v, hash),
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
                Decision::deny(reason, hash)
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
                tracing::info!(dir = %self.dir.display(), %hash, tenant = self.tenant(), "policy reloaded");
                let hash = hash.to_string();
                let detail = record::PolicyReloaded { dir, hash, tenant };
                ("policy_reloaded", record::Detail::PolicyReloaded(detail))
            }
            Reload::Failed(error) => {
                tracing::error!(dir = %self.dir.display(), %error, tenant = self.tenant(), "policy not reloaded; the previous policy stays in force");
                let (error, in_force) = (error.clone(), self.hash().to_string());
                let detail = record::PolicyReloadFailed {
                    dir,
                    error,
                    in_force,
                    tenant,
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
            let meta = e.metadata().ok()?;
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
fn to_rego(v: &Value) -> regorus::Value {
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

/// Checks a policy's answer against the decision contract.
fn parse_decision(v: &regorus::Value, hash: Arc<str>) -> Decision {
    if *v == regorus::Value::Undefined {
        return Decision::deny(
            format!("the policy did not decide: {ENTRYPOINT} is undefined for this request"),
            hash,
        );
    }
    let json: Value = match serde_json::to_value(v) {
        Ok(j) => j,
        Err(e) => return Decision::deny(format!("policy decision is not JSON: {e}"), hash),
    };
    let malformed = |why: &str| {
        Decision::deny(
            format!("the policy returned a malformed decision ({why}); denied"),
            hash.clone(),
        )
    };
    let Value::Object(obj) = &json else {
        return malformed("not an object");
    };
    let effect = match obj.get("effect").and_then(Value::as_str) {
        Some("allow") => Effect::Allow,
        Some("escalate") => Effect::Escalate,
        Some("deny") => Effect::Deny,
        _ => return malformed("effect must be \"allow\", \"escalate\" or \"deny\""),
    };
    let strings = |key: &str| -> Result<Vec<String>, ()> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).ok_or(()))
                .collect(),
            // Rego sets come out as arrays; a lone string is accepted as one reason.
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            _ => Err(()),
        }
    };
    let Ok(reasons) = strings("reasons") else {
        return malformed("reasons must be a list of strings");
    };
    let Ok(scopes) = strings("scopes") else {
        return malformed("scopes must be a list of strings");
    };
    let consent = match obj.get("consent") {
        None | Some(Value::Null) => None,
        Some(c @ Value::Object(_)) => Some(c.clone()),
        Some(_) => return malformed("consent must be an object"),
    };
    Decision {
        effect,
        reasons,
        scopes,
        consent,
        policy_hash: hash,
    }
}

#[cfg(test)]
mod tests;
