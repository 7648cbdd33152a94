//! `[fleet]`: joining other instances through NATS JetStream (one registry and one PANIC
//! for all of them). A leaf: it imports nothing from the crate but its sibling.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::pod::one_or_many;

/// How long a fleet-wide lease on refreshing one OAuth connection lives when its holder
/// does not give it up (it stopped mid-refresh).
pub const REFRESH_LEASE: Duration = Duration::from_secs(60);
/// The longest `vault.fetch_timeout` in a fleet: a lease holder's token-endpoint call and
/// its bus round trips end well inside [`REFRESH_LEASE`].
pub const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// `[fleet]`; off while `url` is empty.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// NATS server URLs (one or a list), e.g. "nats://nats.agentgate.svc:4222".
    #[serde(deserialize_with = "one_or_many")]
    pub url: Vec<String>,
    /// The fleet's name: instances with the same name share one registry.
    pub name: String,
    /// A file holding the NATS token.
    pub token_file: Option<PathBuf>,
    /// A NATS credentials file (JWT + NKey seed).
    pub creds_file: Option<PathBuf>,
    /// A file holding a user NKey seed (`SU…`), for a server that authorizes NKeys.
    pub nkey_file: Option<PathBuf>,
    /// Extra PEM roots for a TLS (`tls://`) server.
    pub tls_ca: Option<PathBuf>,
    /// Copies the server cluster keeps of each bucket and of the audit stream (1 for a single
    /// server; 3 in a 3-node cluster, so losing a node loses nothing).
    pub replicas: usize,
    /// How long to keep serving on the last known registry while the bus is unreachable;
    /// after that every request is refused `503 fleet_unavailable` until it is back.
    #[serde(with = "humantime_serde")]
    pub max_staleness: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            url: Vec::new(),
            name: "agentgate".into(),
            token_file: None,
            creds_file: None,
            nkey_file: None,
            tls_ca: None,
            replicas: 1,
            max_staleness: Duration::from_secs(30),
        }
    }
}

impl FleetConfig {
    /// Whether the instance joins a fleet.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// Checks what types cannot: `Err((key, message))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 32
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err((
                "fleet.name",
                "must be 1-32 letters, digits, '-' or '_' (it names the fleet's KV buckets)".into(),
            ));
        }
        let credentials = [&self.token_file, &self.creds_file, &self.nkey_file]
            .iter()
            .filter(|c| c.is_some())
            .count();
        if credentials > 1 {
            return Err((
                "fleet.token_file",
                "set one of token_file, creds_file and nkey_file".into(),
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err((
                "fleet.replicas",
                "must be 1 to 5 (JetStream's limit)".into(),
            ));
        }
        if self.max_staleness.is_zero() {
            return Err((
                "fleet.max_staleness",
                "must be greater than zero, e.g. \"30s\"".into(),
            ));
        }
        for url in &self.url {
            if !(url.starts_with("nats://") || url.starts_with("tls://")) {
                return Err((
                    "fleet.url",
                    format!("`{url}` must start with nats:// or tls://"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_kind_of_bus_credential_at_most() {
        let with = |token: bool, creds: bool, nkey: bool| FleetConfig {
            url: vec!["nats://127.0.0.1:4222".into()],
            token_file: token.then(|| "t".into()),
            creds_file: creds.then(|| "c".into()),
            nkey_file: nkey.then(|| "n".into()),
            ..FleetConfig::default()
        };
        for (t, c, n) in [
            (false, false, false),
            (true, false, false),
            (false, false, true),
        ] {
            assert!(with(t, c, n).validate().is_ok(), "{t} {c} {n}");
        }
        for (t, c, n) in [
            (true, true, false),
            (true, false, true),
            (false, true, true),
        ] {
            let (key, msg) = with(t, c, n).validate().unwrap_err();
            assert_eq!(key, "fleet.token_file");
            assert!(msg.contains("nkey_file"), "{msg}");
        }
    }
}
