//! The options of inject, its annotations and the image names.

/// The agentgate image inject uses unless told otherwise.
pub const DEFAULT_IMAGE: &str = "ghcr.io/agentgate/agentgate:0.1.0";
/// Opt-out annotation (value `"false"`) on a workload or its pod template.
pub const OPT_OUT: &str = "agentgate.dev/inject";
/// Marker annotation on an injected pod template; its value is the mode.
pub const INJECTED: &str = "agentgate.dev/injected";
/// The keys inject created (comma-separated), which uninject removes again.
pub const CREATED: &str = "agentgate.dev/injected-created";
/// Agent variables that already had inject's value (comma-separated), which uninject keeps.
pub const KEPT: &str = "agentgate.dev/injected-kept";
/// The UID the sidecar runs as; the iptables rules let its traffic out unredirected.
pub const PROXY_UID: i64 = 65532;

/// How the agent's traffic reaches the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Proxy variables (HTTPS_PROXY, …): the agent can bypass them.
    Env,
    /// iptables redirects every outbound TCP connection of the pod (but the proxy's own).
    #[default]
    Enforced,
}

impl Mode {
    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Env => "env",
            Mode::Enforced => "enforced",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Mode> {
        match s {
            "env" => Some(Mode::Env),
            "enforced" => Some(Mode::Enforced),
            _ => None,
        }
    }
}

/// What inject adds and from which images and objects.
#[derive(Debug, Clone)]
pub struct Options {
    /// env or enforced.
    pub mode: Mode,
    /// Mount the SPIFFE CSI driver's Workload API socket into the sidecar.
    pub spire: bool,
    /// The agentgate image.
    pub image: String,
    /// The iptables init image; default: `image` with `-init` after the repository name.
    pub init_image: Option<String>,
    /// ConfigMap holding `agentgate.toml`.
    pub config_map: String,
    /// ConfigMap holding the policies.
    pub policies_config_map: String,
    /// Secret holding `admin-token` and `vault-key`.
    pub secret: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Enforced,
            spire: false,
            image: DEFAULT_IMAGE.to_owned(),
            init_image: None,
            config_map: "agentgate-config".to_owned(),
            policies_config_map: "agentgate-policies".to_owned(),
            secret: "agentgate-secrets".to_owned(),
        }
    }
}
