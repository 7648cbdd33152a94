//! OAuth refresh with refresh-token rotation: one refresh of a connection at a time, and a
//! rotated refresh token stored before the access token is used. Alone, the local vault
//! database is the truth; in a fleet, the shared row is, read and written back under the
//! fleet's lease with compare-and-set (see [`super::coordinator`]), so two instances never
//! spend one refresh token and a rotated token never replaces a newer row.

use std::time::Duration;

use super::connection::Connection;
use super::coordinator::{CoordinationError, RefreshCoordinator};
use super::credentials::Vault;
use super::fetch::Obtained;
use super::fleet::{self, Row};
use super::grant::TokenError;
use crate::clock::now;
use crate::outbound::FetchError;

/// How much longer than one token-endpoint call a refresh waits for another instance's
/// lease: that holder's reads and writes on the bus.
const LEASE_WAIT_SLACK: Duration = Duration::from_secs(5);

impl Vault {
    /// One OAuth refresh. One refresh per connection at a time, whatever the scopes: the
    /// refresh token is read under the lock, after any rotation before us.
    pub(super) async fn refresh(
        &self,
        c: &Connection,
        scopes: &[String],
    ) -> Result<Obtained, TokenError> {
        let lock = self.refresh_lock(&c.id);
        let _held = lock.lock().await;
        match &self.coordinator {
            Some(fleet) => self.refresh_shared(fleet.as_ref(), c, scopes).await,
            None => self.refresh_local(c, scopes).await,
        }
    }

    /// A refresh with the token in the local database.
    async fn refresh_local(
        &self,
        c: &Connection,
        scopes: &[String],
    ) -> Result<Obtained, TokenError> {
        let refresh = self
            .lock_store()
            .secret(&c.id)
            .map_err(|e| TokenError::Store(e.to_string()))?;
        let got = self.call_provider(c, &refresh, scopes).await?;
        if let Some(rotated) = got.refresh_token.as_ref().filter(|r| **r != refresh) {
            self.lock_store()
                .set_secret(&c.id, rotated, now())
                .map_err(|e| {
                    tracing::error!(connection = %c.id, error = %e, "a rotated refresh token could not be stored; the connection needs `vault set` again");
                    TokenError::Store(e.to_string())
                })?;
        }
        Ok(got)
    }

    /// A refresh under the fleet's lease, with the token in the fleet's current row (this
    /// instance's copy may lag behind a rotation elsewhere).
    async fn refresh_shared(
        &self,
        fleet: &dyn RefreshCoordinator,
        c: &Connection,
        scopes: &[String],
    ) -> Result<Obtained, TokenError> {
        let wait = self.config.fetch_timeout + LEASE_WAIT_SLACK;
        let mut lease = fleet.lease(&c.id, wait).await?;
        let Some(shared) = lease.row() else {
            return Err(CoordinationError::Missing(c.id.clone()).into());
        };
        let mut row = Row::parse(shared).map_err(|e| corrupt(c, &e))?;
        if row.revoked() {
            return Err(TokenError::Revoked(c.id.clone()));
        }
        let sealed = row.sealed().map_err(|e| corrupt(c, &e))?;
        let refresh = self
            .lock_store()
            .unseal(&c.id, &sealed)
            .map_err(|e| TokenError::Store(e.to_string()))?;
        let got = self.call_provider(c, &refresh, scopes).await?;
        let Some(rotated) = got.refresh_token.as_ref().filter(|r| **r != refresh) else {
            return Ok(got);
        };
        let (sealed, fingerprint) = self
            .lock_store()
            .seal_secret(&c.id, rotated)
            .map_err(|e| TokenError::Store(e.to_string()))?;
        row.rotate(&sealed, fingerprint, now());
        let on_bus = match lease.write_back(row.to_bytes()).await {
            Ok(()) => true,
            Err(e @ CoordinationError::Changed(_)) => {
                // Replaced, removed or revoked meanwhile: that row stands.
                tracing::error!(connection = %c.id, error = %e, "fleet: a rotated refresh token was not written over a newer row; this refresh is refused");
                return Err(e.into());
            }
            Err(e) => {
                // The provider has already rotated: keep the token here, where the mirror
                // publishes it over the row it last saw once the bus answers again.
                tracing::error!(connection = %c.id, error = %e, "fleet: a rotated refresh token could not be written to the bus; it is kept here and published when the bus is back");
                false
            }
        };
        // The same row here, byte for byte: the mirror then finds nothing new to publish,
        // and the watch nothing new to apply when the write comes back.
        let stored = self
            .lock_store()
            .write_with(|db| fleet::write(db, &c.id, row, &sealed));
        match stored {
            Ok(_) => {}
            Err(e) if on_bus => {
                tracing::warn!(connection = %c.id, error = %e, "a rotated refresh token could not be stored here; the fleet's row has it, and the watch brings it");
            }
            Err(e) => {
                tracing::error!(connection = %c.id, error = %e, "a rotated refresh token was stored nowhere; the connection needs `vault set` again");
                return Err(TokenError::Store(e.to_string()));
            }
        }
        Ok(got)
    }

    async fn call_provider(
        &self,
        c: &Connection,
        refresh: &crate::secret::Secret,
        scopes: &[String],
    ) -> Result<Obtained, TokenError> {
        let provider = c.settings.provider.as_deref().unwrap_or(&c.service);
        self.fetcher
            .refresh(provider, refresh, scopes)
            .await
            .map_err(|e| reauthorize(e, &c.service))
    }
}

fn corrupt(c: &Connection, reason: &str) -> TokenError {
    TokenError::Store(format!(
        "the fleet's row of connection {} is damaged ({reason}); remove it with `agentgate vault rm {}` and set it again",
        c.id, c.id
    ))
}

/// A refused refresh grant: the stored grant is dead, and only the user can mend it.
fn reauthorize(e: FetchError, service: &str) -> TokenError {
    match &e {
        FetchError::Refused { detail, .. }
            if detail.contains("invalid_grant") || detail.contains("unauthorized_client") =>
        {
            TokenError::Reauthorize(format!(
                "{e}; the stored refresh token no longer works: authorize again and store the new one with `agentgate vault set {service} --kind oauth`"
            ))
        }
        _ => TokenError::Fetch(e),
    }
}

#[cfg(test)]
mod tests;
