//! How CLI commands find the instance running on a state dir: `instance.json` (written at
//! start, removed at shutdown) names its addresses, and `admin.token` (0600) is the bearer
//! token for its admin API.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::state::{StateDir, StateError, read_private, write_private};

const INSTANCE_FILE: &str = "instance.json";
/// The admin token's file name (in the state dir, or a tenant's directory).
pub const TOKEN_FILE: &str = "admin.token";

/// A running instance, as it describes itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceFile {
    pub pid: u32,
    pub instance: String,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// The admin listener's TLS certificate (PEM), when it serves TLS; the CLI trusts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_tls: Option<std::path::PathBuf>,
}

/// Records this process as the instance running on `state`.
pub fn write(state: &StateDir, info: &InstanceFile) -> Result<(), StateError> {
    let text = serde_json::to_string_pretty(info).unwrap_or_default();
    write_private(&state.path(INSTANCE_FILE), text.as_bytes())
}

/// The instance running on `state`, if its process is alive.
pub fn read(state: &StateDir) -> Option<InstanceFile> {
    let text = std::fs::read(state.path(INSTANCE_FILE)).ok()?;
    let info: InstanceFile = serde_json::from_slice(&text).ok()?;
    Path::new(&format!("/proc/{}", info.pid))
        .exists()
        .then_some(info)
}

/// Removes the instance file if it still names this process.
pub fn remove(state: &StateDir) {
    if read(state).is_some_and(|i| i.pid == std::process::id()) {
        let _ = std::fs::remove_file(state.path(INSTANCE_FILE));
    }
}

/// The admin token, created (0600) on first use.
pub fn admin_token(state: &StateDir) -> Result<String, StateError> {
    admin_token_at(&state.path(TOKEN_FILE))
}

/// The admin token in `path`, created (0600) with a new random token when missing or empty.
pub fn admin_token_at(path: &Path) -> Result<String, StateError> {
    if path.exists() {
        let bytes = read_private(path)?;
        let token = String::from_utf8_lossy(&bytes).trim().to_owned();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    let token = format!(
        "agt_{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    write_private(path, format!("{token}\n").as_bytes())?;
    Ok(token)
}
