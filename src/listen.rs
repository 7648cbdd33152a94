//! Binding a configured listener, with an error that names the key to change. A leaf.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({key}): {source}; choose another address with {key} or {env}")]
pub struct BindError {
    pub key: &'static str,
    pub env: &'static str,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds `addr` (the value of config key `key`, or variable `env`); returns the bound
/// address (the real port when configured with port 0) and the listener.
pub async fn bind(
    addr: SocketAddr,
    key: &'static str,
    env: &'static str,
) -> Result<(SocketAddr, TcpListener), BindError> {
    TcpListener::bind(addr)
        .await
        .and_then(|l| Ok((l.local_addr()?, l)))
        .map_err(|source| BindError {
            key,
            env,
            addr,
            source,
        })
}
