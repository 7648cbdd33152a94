//! Protocol upgrades (WebSocket): refused unless `intent.upgrades` lists the place, since
//! what flows after an upgrade is no longer HTTP that intent can read.

use http::HeaderMap;

use super::error::IntentError;

/// One place where a vendor documents a protocol upgrade.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeRoute {
    /// Host, as in the CONNECT target.
    pub host: String,
    /// Exact path (no query).
    pub path: String,
    /// Protocols allowed in `Upgrade`, e.g. `["websocket"]`.
    pub protocols: Vec<String>,
}

/// Refuses an `Upgrade` unless `upgrades` lists the host, path and every protocol asked for.
pub(super) fn check(
    upgrades: &[UpgradeRoute],
    host: &str,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), IntentError> {
    let protocols = headers
        .get_all(http::header::UPGRADE)
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        .flat_map(|v| v.split(','))
        .map(str::trim);
    let mut any = false;
    for protocol in protocols {
        any = true;
        let allowed = upgrades.iter().any(|u| {
            u.host.eq_ignore_ascii_case(host)
                && u.path == path
                && u.protocols.iter().any(|p| p.eq_ignore_ascii_case(protocol))
        });
        if !allowed {
            return Err(IntentError::UpgradeNotAllowed {
                host: host.to_owned(),
                path: path.to_owned(),
                protocol: protocol.chars().take(64).collect(),
            });
        }
    }
    if any {
        Ok(())
    } else {
        Err(IntentError::Ambiguous(
            "Upgrade header without a protocol".into(),
        ))
    }
}
