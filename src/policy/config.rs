//! `[policy]`: where the policy lives and how it is enforced.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The rule every policy must define.
pub const ENTRYPOINT: &str = "data.agentgate.decision";

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
    /// A candidate policy directory evaluated beside the active one on every request,
    /// never affecting it; empty means none.
    pub shadow: PathBuf,
    /// `enforce`, or `observe`: decide and audit, but let every request through.
    pub mode: Mode,
    /// Longest one evaluation may run before the request is denied.
    #[serde(with = "humantime_serde")]
    pub eval_timeout: Duration,
    /// How often the directory is checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// `[policy.assistant]`: a model that `policy draft` asks about sentences its grammar
    /// cannot read (unset: such a sentence is an error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assistant: Option<AssistantConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            shadow: PathBuf::new(),
            mode: Mode::Enforce,
            eval_timeout: Duration::from_millis(100),
            reload_interval: Duration::from_secs(1),
            assistant: None,
        }
    }
}

/// `[policy.assistant]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistantConfig {
    /// OpenAI-compatible base URL, e.g. `http://127.0.0.1:8080/v1` (https, or http on
    /// loopback: the API key travels to it).
    pub url: String,
    /// The model to ask, e.g. `qwen2.5-coder-7b-instruct`.
    pub model: String,
    /// A file (mode 0600) holding the API key, sent as `Authorization: Bearer`; never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// Longest the model may take to answer.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
