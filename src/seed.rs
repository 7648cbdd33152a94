//! Secrets handed in through the environment — in Kubernetes, a Secret given to the
//! AgentGate container only as `env` — written into the state dir (0600) before anything
//! reads them. Env rather than a mounted file: a Secret volume readable by AgentGate's UID
//! would need an `fsGroup`, which every container of the pod (the agent too) is given.

use std::path::Path;

use crate::state::{StateDir, StateError, read_private, write_private};

/// The admin token, as the state dir's `admin.token` would hold it.
pub const ADMIN_TOKEN_ENV: &str = "AGENTGATE_ADMIN_TOKEN";
/// The vault key (32 bytes, base64), as `vault.key` would hold it.
pub const VAULT_KEY_ENV: &str = "AGENTGATE_VAULT_KEY";

/// Why a secret from the environment could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "{var} differs from the vault key in {path}, which seals the secrets already stored; set {var} to that key, or move the state dir's vault.db away to start an empty vault"
    )]
    VaultKeyDiffers { var: &'static str, path: String },
}

/// Writes the secrets set in `env` into `state`; returns the variables used. The admin
/// token replaces whatever the file held (the Secret is the source of truth); a vault key
/// is written only where none exists, since a different one could not open the vault.
pub fn from_env(
    state: &StateDir,
    vault_key_file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<&'static str>, SeedError> {
    let mut used = Vec::new();
    let set = |var| {
        env(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if let Some(token) = set(ADMIN_TOKEN_ENV) {
        write_private(
            &state.path(crate::instance::TOKEN_FILE),
            format!("{token}\n").as_bytes(),
        )?;
        used.push(ADMIN_TOKEN_ENV);
    }
    if let Some(key) = set(VAULT_KEY_ENV) {
        let path = vault_key_file
            .map_or_else(|| state.path(crate::vault::store::KEY_FILE), Path::to_owned);
        if path.exists() {
            let held = read_private(&path)?;
            if String::from_utf8_lossy(&held).trim() != key {
                return Err(SeedError::VaultKeyDiffers {
                    var: VAULT_KEY_ENV,
                    path: path.display().to_string(),
                });
            }
        } else {
            write_private(&path, format!("{key}\n").as_bytes())?;
        }
        used.push(VAULT_KEY_ENV);
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_admin_token_and_a_missing_vault_key_privately() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path().join("h")).unwrap();
        let env = |v: &str| match v {
            ADMIN_TOKEN_ENV => Some("agt_from_secret\n".to_owned()),
            VAULT_KEY_ENV => Some("a2V5".to_owned()),
            _ => None,
        };
        assert_eq!(from_env(&state, None, env).unwrap().len(), 2);
        assert_eq!(
            crate::instance::admin_token(&state).unwrap(),
            "agt_from_secret"
        );
        let key = read_private(&state.path("vault.key")).unwrap();
        assert_eq!(key, b"a2V5\n");
        // The same key again is fine; a different one is refused, naming the file.
        assert!(from_env(&state, None, env).is_ok());
        let other = |v: &str| (v == VAULT_KEY_ENV).then(|| "b3RoZXI=".to_owned());
        let err = from_env(&state, None, other).unwrap_err().to_string();
        assert!(err.contains("vault.key"), "{err}");
        assert!(from_env(&state, None, |_| None).unwrap().is_empty());
    }
}
