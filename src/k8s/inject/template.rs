//! What inject adds, built from the options: the sidecar and iptables containers (each from
//! one embedded YAML template), the volumes and the agent containers' variables.

use yaml_serde::{Mapping, Sequence, Value};

use super::error::InjectError;
use super::options::{Mode, Options};

/// The `agentgate` sidecar container; the kustomize overlay in deploy/ follows the same contract.
const SIDECAR: &str = include_str!("sidecar.yaml");
/// The `agentgate-iptables` init container (enforced mode).
const IPTABLES: &str = include_str!("iptables.yaml");

/// Where the agent containers (read-only) and the sidecar (read-write) mount `agentgate-ca`.
pub(super) const CA_DIR: &str = "/var/run/agentgate";
const CA_BUNDLE: &str = "/var/run/agentgate/ca-bundle.pem";
const PROXY_URL: &str = "http://127.0.0.1:8080";
const NO_PROXY: &str = "localhost,127.0.0.1,::1";
const SPIRE_DIR: &str = "/run/spire/sockets";
const SPIRE_SOCKET: &str = "unix:///run/spire/sockets/agent.sock";

/// The names of the containers inject adds.
pub(super) const CONTAINERS: [&str; 2] = ["agentgate-iptables", "agentgate"];
/// The names of the volumes inject may add.
pub(super) const VOLUMES: [&str; 6] = [
    "agentgate-state",
    "agentgate-ca",
    "agentgate-config",
    "agentgate-policies",
    "agentgate-xtables",
    "agentgate-spire",
];
/// The volume shared with the agent containers.
pub(super) const CA_VOLUME: &str = "agentgate-ca";

/// Everything one run adds to each pod, built once.
pub(super) struct Prepared {
    pub(super) mode: Mode,
    /// In initContainers order.
    pub(super) init_containers: Vec<Value>,
    pub(super) volumes: Vec<Value>,
    pub(super) env: Vec<(&'static str, &'static str)>,
}

pub(super) fn prepare(opts: &Options) -> Result<Prepared, InjectError> {
    let mut init_containers = Vec::new();
    let mut volumes = vec![
        // State (CA, audit.db, vault.db) lives as long as the pod.
        volume(
            "agentgate-state",
            "emptyDir",
            map([("sizeLimit", s("1Gi"))]),
        ),
        volume("agentgate-ca", "emptyDir", in_memory("4Mi")),
        volume(
            "agentgate-config",
            "configMap",
            map([("name", s(&opts.config_map))]),
        ),
        volume(
            "agentgate-policies",
            "configMap",
            map([("name", s(&opts.policies_config_map))]),
        ),
    ];
    if opts.mode == Mode::Enforced {
        let init_image = match &opts.init_image {
            Some(image) => image.clone(),
            None => init_image_for(&opts.image)?,
        };
        let mut iptables = parse(IPTABLES, "iptables.yaml")?;
        iptables.insert(s("image"), s(&init_image));
        init_containers.push(Value::Mapping(iptables));
        volumes.push(volume("agentgate-xtables", "emptyDir", in_memory("1Mi")));
    }
    if opts.spire {
        let csi = map([
            ("driver", s("csi.spiffe.io")),
            ("readOnly", Value::Bool(true)),
        ]);
        volumes.push(volume("agentgate-spire", "csi", csi));
    }
    init_containers.push(sidecar(opts)?);
    Ok(Prepared {
        mode: opts.mode,
        init_containers,
        volumes,
        env: app_env(opts.mode),
    })
}

/// An `emptyDir` in memory, bounded.
fn in_memory(size: &str) -> Value {
    map([("medium", s("Memory")), ("sizeLimit", s(size))])
}

/// The `agentgate` sidecar container inject adds for `opts`.
pub fn sidecar(opts: &Options) -> Result<Value, InjectError> {
    let mut c = parse(SIDECAR, "sidecar.yaml")?;
    c.insert(s("image"), s(&opts.image));
    for var in seq_mut(&mut c, "env") {
        if let Some(Value::Mapping(r)) = var
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("secretKeyRef"))
        {
            r.insert(s("name"), s(&opts.secret));
        }
    }
    if opts.spire {
        seq_mut(&mut c, "env").push(env_var("SPIFFE_ENDPOINT_SOCKET", SPIRE_SOCKET));
        seq_mut(&mut c, "volumeMounts").push(map([
            ("name", s("agentgate-spire")),
            ("mountPath", s(SPIRE_DIR)),
            ("readOnly", Value::Bool(true)),
        ]));
    }
    Ok(Value::Mapping(c))
}

/// The variables every agent container gets in `mode` (what `agentgate env` sets, minus the
/// credentials: the pod is the caller).
pub fn app_env(mode: Mode) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![
        ("SSL_CERT_FILE", CA_BUNDLE),
        ("REQUESTS_CA_BUNDLE", CA_BUNDLE),
        ("CURL_CA_BUNDLE", CA_BUNDLE),
        ("NODE_EXTRA_CA_CERTS", CA_BUNDLE),
        ("GIT_SSL_CAINFO", CA_BUNDLE),
        ("HTTPLIB2_CA_CERTS", CA_BUNDLE),
    ];
    if mode == Mode::Env {
        env.extend([
            ("HTTPS_PROXY", PROXY_URL),
            ("https_proxy", PROXY_URL),
            ("HTTP_PROXY", PROXY_URL),
            ("http_proxy", PROXY_URL),
            ("NO_PROXY", NO_PROXY),
            ("no_proxy", NO_PROXY),
            ("NODE_USE_ENV_PROXY", "1"),
        ]);
    }
    env
}

/// The read-only CA mount every agent container gets.
pub(super) fn ca_mount() -> Value {
    map([
        ("name", s(CA_VOLUME)),
        ("mountPath", s(CA_DIR)),
        ("readOnly", Value::Bool(true)),
    ])
}

/// `image` with `-init` after its repository name (tag kept): the init image built with it.
pub fn init_image_for(image: &str) -> Result<String, InjectError> {
    if image.contains('@') {
        return Err(InjectError::InitImageFromDigest {
            image: image.to_owned(),
        });
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    let end = image[slash..].find(':').map_or(image.len(), |i| slash + i);
    Ok(format!("{}-init{}", &image[..end], &image[end..]))
}

/// `{name: NAME, value: VALUE}`.
pub(super) fn env_var(name: &str, value: &str) -> Value {
    map([("name", s(name)), ("value", s(value))])
}

fn volume(name: &str, kind: &str, source: Value) -> Value {
    map([("name", s(name)), (kind, source)])
}

fn parse(template: &str, file: &str) -> Result<Mapping, InjectError> {
    match yaml_serde::from_str(template) {
        Ok(Value::Mapping(m)) => Ok(m),
        Ok(_) => Err(InjectError::Template(format!("{file} is not a mapping"))),
        Err(e) => Err(InjectError::Template(format!("{file}: {e}"))),
    }
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Mapping(pairs.into_iter().map(|(k, v)| (s(k), v)).collect())
}

/// `c[key]` as a list, made one if it is not.
fn seq_mut<'a>(c: &'a mut Mapping, key: &str) -> &'a mut Sequence {
    let v = c.entry(s(key)).or_insert(Value::Null);
    if !v.is_sequence() {
        *v = Value::Sequence(Vec::new());
    }
    match v {
        Value::Sequence(seq) => seq,
        _ => unreachable!("{key} was just made a list"),
    }
}
