//! The real `agentgate` CLI from async tests: run off the async workers, check the outcome,
//! register agents, write secret files.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use super::proxy::{Proxy, cli};

/// SPIFFE ID prefix of agents the built-in issuer registers.
pub const LOCAL_TD: &str = "spiffe://agentgate.local/agent";

/// `agentgate ARGS` with `AGENTGATE_HOME=home` and `envs`, off the async workers.
pub async fn agentgate(home: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let home = home.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        cli(&home, &args, &envs)
    })
    .await
    .expect("cli task")
}

/// Asserts success; returns stdout.
pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts the command failed with exit code 1 (an error, not a usage mistake); returns
/// stderr.
pub fn failed(out: &Output, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what} should have failed with exit 1:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An agent the proxy knows: name, SPIFFE ID, JWT-SVID.
#[derive(Clone, Debug)]
pub struct Registered {
    pub name: String,
    pub spiffe_id: String,
    pub token: String,
}

impl Registered {
    /// The `Proxy-Authorization` value it sends.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// The proxy URL with its credentials (`http://<name>:<jwt>@addr`).
    pub fn proxy_url(&self, proxy: &Proxy) -> String {
        format!("http://{}:{}@{}", self.name, self.token, proxy.proxy_addr)
    }
}

/// `agents register NAME --owner OWNER [extra] -o json` on the proxy's state dir.
pub async fn register(proxy: &Proxy, name: &str, owner: &str, extra: &[&str]) -> Registered {
    let mut args = vec!["agents", "register", name, "--owner", owner, "-o", "json"];
    args.extend_from_slice(extra);
    let out = agentgate(&proxy.home, &args, &[]).await;
    let doc: Value = serde_json::from_str(&ok(&out, "agents register")).expect("register JSON");
    assert_eq!(doc["spiffe_id"], format!("{LOCAL_TD}/{name}"), "{doc}");
    Registered {
        name: name.to_owned(),
        spiffe_id: doc["spiffe_id"].as_str().expect("spiffe_id").to_owned(),
        token: doc["token"].as_str().expect("token").to_owned(),
    }
}

/// `consent list [--all] -o json`: the consents.
pub async fn consent_list(proxy: &Proxy, all: bool) -> Vec<Value> {
    let mut args = vec!["consent", "list", "-o", "json"];
    if all {
        args.push("--all");
    }
    let out = agentgate(&proxy.home, &args, &[]).await;
    let doc: Value = serde_json::from_str(&ok(&out, "consent list -o json"))
        .unwrap_or_else(|e| panic!("consent list -o json printed non-JSON: {e}"));
    doc.as_array()
        .unwrap_or_else(|| panic!("consent list -o json is not a list: {doc}"))
        .clone()
}

/// Writes `bytes` to a new file with mode 0600 (replacing one that exists).
pub fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(bytes).expect("write 0600 file");
}

/// `content` in a 0600 file named `name` in `dir`.
pub fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    write_private(&path, content.as_bytes());
    path
}
