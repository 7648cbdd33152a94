//! Why inject or uninject refuses a stream: each error says where and what to do.

use super::options::{INJECTED, OPT_OUT, PROXY_UID};

/// Why a stream cannot be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// A document is not YAML.
    #[error(
        "document {doc} is not valid YAML ({source}); fix it (`kubectl apply --dry-run=client -f FILE` shows where)"
    )]
    Parse {
        /// 1-based, counting non-empty documents.
        doc: usize,
        /// The parser's message.
        source: yaml_serde::Error,
    },
    /// A changed document could not be serialized.
    #[error("{at}: cannot serialize the injected document ({source}); please report this")]
    Serialize {
        /// Document and workload.
        at: String,
        /// The serializer's message.
        source: yaml_serde::Error,
    },
    /// A workload is not shaped as Kubernetes expects.
    #[error("{at}: {what} must be {expected}; fix the manifest")]
    Shape {
        /// Document and workload.
        at: String,
        /// The key.
        what: String,
        /// What it should be.
        expected: &'static str,
    },
    /// An agent container sets one of inject's variables to another value.
    #[error(
        "{at}: container {container} sets {var} to {have}, but inject sets it to {want:?}; remove it from the container, or opt the workload out with annotation {OPT_OUT}: \"false\""
    )]
    EnvConflict {
        /// Document and workload.
        at: String,
        /// The container.
        container: String,
        /// The variable.
        var: String,
        /// Its value in the manifest.
        have: String,
        /// Inject's value.
        want: String,
    },
    /// An agent container already mounts something where the CA bundle goes.
    #[error(
        "{at}: container {container} already mounts volume {volume} at /var/run/agentgate, where inject mounts the CA bundle; move that mount elsewhere"
    )]
    MountConflict {
        /// Document and workload.
        at: String,
        /// The container.
        container: String,
        /// The volume mounted there.
        volume: String,
    },
    /// A container or volume has one of inject's names but the pod is not marked injected.
    #[error(
        "{at}: a {what} named {name} exists but the pod template has no {INJECTED} annotation; rename it (agentgate-* names are inject's), or remove it if it is a hand-made injection"
    )]
    NameTaken {
        /// Document and workload.
        at: String,
        /// `container` or `volume`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// Enforced mode, and an agent container would run as the proxy's UID.
    #[error(
        "{at}: container {container} runs as UID {PROXY_UID} ({source_of}), the sidecar's UID, whose traffic the iptables rules let out unredirected; pick another runAsUser for the agent, or use --mode env"
    )]
    ProxyUid {
        /// Document and workload.
        at: String,
        /// The container.
        container: String,
        /// Which securityContext sets it.
        source_of: &'static str,
    },
    /// The marker annotation has a value inject never writes.
    #[error(
        "{at}: annotation {INJECTED} is {value:?}, expected env or enforced; remove the annotation (and anything it injected) by hand"
    )]
    BadMarker {
        /// Document and workload.
        at: String,
        /// The value.
        value: String,
    },
    /// The init image cannot be derived from a digest reference.
    #[error(
        "cannot derive the init image from {image} (a digest names one image); pass --init-image"
    )]
    InitImageFromDigest {
        /// The agentgate image.
        image: String,
    },
    /// An embedded template is broken (a bug).
    #[error("embedded template {0}; please report this")]
    Template(String),
}
