//! The connection to the fleet's NATS server, and what can go wrong with it.

use std::time::Duration;

use crate::config::FleetConfig;
use crate::replica::FleetEntryError;

/// Why joining the fleet failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleet.{key} {path}: {source}")]
    File {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("fleet: {0}")]
    Bus(String),
    #[error(transparent)]
    Entry(#[from] FleetEntryError),
}

/// A bus failure, as text.
pub fn bus(e: impl std::fmt::Display) -> FleetError {
    FleetError::Bus(e.to_string())
}

/// Connects to the fleet's servers with its credentials.
pub async fn connect(config: &FleetConfig) -> Result<async_nats::Client, FleetError> {
    let mut options = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .name("agentgate");
    if let Some(path) = &config.token_file {
        let token = std::fs::read_to_string(path).map_err(|source| FleetError::File {
            key: "token_file",
            path: path.display().to_string(),
            source,
        })?;
        options = options.token(token.trim().to_owned());
    }
    if let Some(path) = &config.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|source| FleetError::File {
                key: "creds_file",
                path: path.display().to_string(),
                source,
            })?;
    }
    if let Some(path) = &config.nkey_file {
        let seed = std::fs::read_to_string(path).map_err(|source| FleetError::File {
            key: "nkey_file",
            path: path.display().to_string(),
            source,
        })?;
        options = options.nkey(seed.trim().to_owned());
    }
    if let Some(path) = &config.tls_ca {
        options = options.add_root_certificates(path.clone());
    }
    options
        .connect(config.url.join(","))
        .await
        .map_err(|e| bus(format!("cannot connect to {}: {e}", config.url.join(", "))))
}
