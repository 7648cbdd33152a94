//! The environment an agent runs with (`agentgate env` / `agentgate exec`): the proxy URL
//! with the agent's credentials, `NO_PROXY` for loopback, and CA trust for every common
//! client pointing at one bundle of the system roots plus our CA.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use crate::config::Config;
use crate::digest::pem_encode;
use crate::identity::registry::{Registry, RegistryError};
use crate::state::{StateDir, StateError, write_public};
use crate::{ca, instance};

/// File name of the CA bundle in the state dir.
pub const CA_BUNDLE: &str = "ca-bundle.pem";

/// Why the environment could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error(
        "agent \"{0}\" is revoked; register it again to issue a new token: agentgate agents register {0}"
    )]
    Revoked(String),
    #[error("agent \"{0}\" has no valid token; issue one with: agentgate agents register {0}")]
    NoToken(String),
    #[error(
        "the token of agent \"{name}\" expired {ago} s ago; issue a new one with: agentgate agents register {name}"
    )]
    Expired { name: String, ago: i64 },
    #[error(
        "proxy.listen has port 0 and no running instance was found in the state dir: start `agentgate run` first"
    )]
    NoProxyAddress,
}

/// The variables, in a stable order, and whether a running proxy was found.
#[derive(Debug, Clone)]
pub struct AgentEnv {
    pub vars: Vec<(&'static str, String)>,
    pub proxy: SocketAddr,
    pub running: bool,
}

/// Builds the environment for agent `name`.
pub fn for_agent(
    state: &StateDir,
    config: &Config,
    name: &str,
    now: i64,
) -> Result<AgentEnv, EnvError> {
    let registry = Registry::open(state)?;
    let agent = registry.agent(name)?;
    if agent.revoked.is_some() {
        return Err(EnvError::Revoked(name.to_owned()));
    }
    let token = registry
        .latest_token(name)?
        .ok_or_else(|| EnvError::NoToken(name.to_owned()))?;
    if token.expires <= now {
        return Err(EnvError::Expired {
            name: name.to_owned(),
            ago: now - token.expires,
        });
    }
    let running = instance::read(state);
    let proxy = match &running {
        Some(i) => i.proxy,
        None => config.proxy.listen,
    };
    let proxy = reachable(proxy).ok_or(EnvError::NoProxyAddress)?;
    let bundle = write_ca_bundle(state)?.display().to_string();
    // Names are [A-Za-z0-9._-] and tokens base64url with dots: nothing to percent-encode.
    let url = format!("http://{name}:{}@{proxy}", token.token);
    let no_proxy = "localhost,127.0.0.1,::1".to_owned();
    let vars = vec![
        ("HTTPS_PROXY", url.clone()),
        ("https_proxy", url.clone()),
        ("HTTP_PROXY", url.clone()),
        ("http_proxy", url),
        ("NO_PROXY", no_proxy.clone()),
        ("no_proxy", no_proxy),
        ("NODE_USE_ENV_PROXY", "1".to_owned()),
        ("SSL_CERT_FILE", bundle.clone()),
        ("REQUESTS_CA_BUNDLE", bundle.clone()),
        ("CURL_CA_BUNDLE", bundle.clone()),
        ("NODE_EXTRA_CA_CERTS", bundle.clone()),
        ("GIT_SSL_CAINFO", bundle.clone()),
        // httplib2 (Google's API client for Python, e.g. Gmail) trusts only this one.
        ("HTTPLIB2_CA_CERTS", bundle),
    ];
    Ok(AgentEnv {
        vars,
        proxy,
        running: running.is_some(),
    })
}

/// The address an agent on this machine dials: wildcard listeners become loopback.
fn reachable(addr: SocketAddr) -> Option<SocketAddr> {
    if addr.port() == 0 {
        return None;
    }
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Some(SocketAddr::new(ip, addr.port()))
}

/// Writes the system roots plus our CA to `ca-bundle.pem`; clients given this one file
/// trust both the real internet (NO_PROXY hosts) and the proxy's interception.
pub fn write_ca_bundle(state: &StateDir) -> Result<PathBuf, EnvError> {
    let path = state.path(CA_BUNDLE);
    export_ca_bundle(state, &path)?;
    Ok(path)
}

/// Writes the same bundle to `path` (`ca.export_bundle`: a volume the agent's container
/// mounts), creating its directory.
pub fn export_ca_bundle(state: &StateDir, path: &std::path::Path) -> Result<(), EnvError> {
    ca::ensure_ca(state)?;
    let ours = std::fs::read_to_string(state.ca_cert()).map_err(|source| StateError::Io {
        action: "read",
        path: state.ca_cert(),
        source,
    })?;
    let mut pem = String::new();
    let system = rustls_native_certs::load_native_certs();
    for cert in &system.certs {
        pem.push_str(&pem_encode("CERTIFICATE", cert.as_ref()));
    }
    pem.push_str("# AgentGate interception CA\n");
    pem.push_str(&ours);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            action: "create directory",
            path: dir.to_owned(),
            source,
        })?;
    }
    write_public(path, pem.as_bytes())?;
    Ok(())
}

/// Quotes `value` for a POSIX shell.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_become_loopback() {
        let v4: SocketAddr = ([0, 0, 0, 0], 8080).into();
        assert_eq!(reachable(v4), Some(([127, 0, 0, 1], 8080).into()));
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 9);
        assert_eq!(
            reachable(v6).map(|a| a.ip()),
            Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(reachable(([127, 0, 0, 1], 0).into()), None);
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
