//! The built-in issuer: mints ES256 JWT-SVIDs for registered agents so AgentGate works on a
//! laptop with no SPIRE. Private keys live in `identity/<kid>.key` (0600) in the state dir;
//! their public halves and rotation state live in the registry.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use super::jwt::{Es256Signer, JwkError};
use super::registry::{Registry, RegistryError, Token};
use crate::config::sections::IdentityConfig;
use crate::state::{StateDir, StateError, read_private, write_private};

/// Why the issuer could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("issuer key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error(
        "invalid {what} \"{value}\": use 1-64 letters, digits, '.', '_' or '-' (not '.' or '..')"
    )]
    BadName { what: &'static str, value: String },
    #[error("token lifetime must be between 1 minute and 366 days, not {0:?}")]
    BadTtl(Duration),
}

/// A token issued by [`register`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Registered {
    pub name: String,
    pub spiffe_id: String,
    pub owner: Option<String>,
    pub tenant: Option<String>,
    pub jti: String,
    pub expires: i64,
    pub token: String,
}

/// What `agents register` asks for.
#[derive(Debug, Clone)]
pub struct Registration<'a> {
    pub name: &'a str,
    pub owner: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub ttl: Duration,
}

/// The result of a key rotation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rotation {
    pub new_kid: String,
    /// The previous key and when its last token expires (it stays trusted until then).
    pub retired_kid: Option<String>,
    pub retired_valid_until: Option<i64>,
    /// Keys whose tokens had all expired, now deleted.
    pub dropped: Vec<String>,
}

fn key_dir(state: &StateDir) -> Result<PathBuf, IssuerError> {
    let dir = state.path("identity");
    if !dir.exists() {
        let io = |source| StateError::Io {
            action: "create directory",
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(dir)
}

fn key_path(state: &StateDir, kid: &str) -> Result<PathBuf, IssuerError> {
    Ok(key_dir(state)?.join(format!("{kid}.key")))
}

/// Creates the first issuer key if there is none; returns whether it did.
pub fn ensure_key(state: &StateDir, registry: &Registry, now: i64) -> Result<bool, IssuerError> {
    if registry.current_issuer_key()?.is_some() {
        return Ok(false);
    }
    new_key(state, registry, now)?;
    Ok(true)
}

fn new_key(state: &StateDir, registry: &Registry, now: i64) -> Result<String, IssuerError> {
    let date = time::OffsetDateTime::from_unix_timestamp(now)
        .map(|t| format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day()))
        .unwrap_or_default();
    let kid = format!("ag-{date}-{:08x}", rand::random::<u32>());
    let path = key_path(state, &kid)?;
    let key_err = |e: JwkError| IssuerError::Key {
        path: path.clone(),
        reason: e.0,
    };
    let pkcs8 = Es256Signer::generate_pkcs8().map_err(key_err)?;
    let signer = Es256Signer::from_pkcs8(kid.clone(), &pkcs8).map_err(key_err)?;
    let pem = crate::digest::pem_encode("PRIVATE KEY", &pkcs8);
    // Key file first: a registry row must never name a key that does not exist.
    write_private(&path, pem.as_bytes())?;
    registry.add_issuer_key(&kid, &signer.public_key().to_jwk().to_string(), now)?;
    Ok(kid)
}

/// The signer for the current key.
pub fn signer(state: &StateDir, registry: &Registry, now: i64) -> Result<Es256Signer, IssuerError> {
    ensure_key(state, registry, now)?;
    let key = registry
        .current_issuer_key()?
        .ok_or_else(|| IssuerError::Key {
            path: state.path("identity"),
            reason: "no current key".into(),
        })?;
    let path = key_path(state, &key.kid)?;
    let pem = read_private(&path)?;
    let der = pem_decode(&pem).ok_or_else(|| IssuerError::Key {
        path: path.clone(),
        reason: "not a PEM private key".into(),
    })?;
    Es256Signer::from_pkcs8(key.kid, &der).map_err(|e| IssuerError::Key { path, reason: e.0 })
}

/// Makes a new current key; the old one stays trusted until its last token expires.
pub fn rotate(state: &StateDir, registry: &Registry, now: i64) -> Result<Rotation, IssuerError> {
    let old = registry.current_issuer_key()?;
    let new_kid = new_key(state, registry, now)?;
    let (retired_kid, retired_valid_until) = match old {
        Some(old) => {
            let until = registry.retire_issuer_key(&old.kid, now)?;
            (Some(old.kid), Some(until))
        }
        None => (None, None),
    };
    let dropped = registry.drop_expired_issuer_keys(now)?;
    for kid in &dropped {
        let _ = fs::remove_file(key_path(state, kid)?);
    }
    Ok(Rotation {
        new_kid,
        retired_kid,
        retired_valid_until,
        dropped,
    })
}

/// Checks a name used as a SPIFFE ID path segment.
pub fn check_name(what: &'static str, value: &str) -> Result<(), IssuerError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IssuerError::BadName {
            what,
            value: value.chars().take(80).collect(),
        })
    }
}

/// The SPIFFE ID the built-in issuer gives an agent.
pub fn spiffe_id_for(trust_domain: &str, tenant: Option<&str>, name: &str) -> String {
    match tenant {
        Some(t) => format!("spiffe://{trust_domain}/tenant/{t}/agent/{name}"),
        None => format!("spiffe://{trust_domain}/agent/{name}"),
    }
}

/// Registers (or re-registers) an agent and issues it a new token.
pub fn register(
    state: &StateDir,
    registry: &mut Registry,
    config: &IdentityConfig,
    req: &Registration<'_>,
    now: i64,
) -> Result<Registered, IssuerError> {
    check_name("agent name", req.name)?;
    if let Some(t) = req.tenant {
        check_name("tenant", t)?;
    }
    if req.ttl < Duration::from_secs(60) || req.ttl > Duration::from_secs(366 * 86400) {
        return Err(IssuerError::BadTtl(req.ttl));
    }
    let signer = signer(state, registry, now)?;
    let spiffe_id = spiffe_id_for(&config.trust_domain, req.tenant, req.name);
    let jti = format!("{:032x}", rand::random::<u128>());
    let expires = now + req.ttl.as_secs() as i64;
    let claims = serde_json::json!({
        "sub": spiffe_id,
        "aud": [config.audience],
        "exp": expires,
        "iat": now,
        "jti": jti,
    });
    let token = signer.sign(&claims).map_err(|e| IssuerError::Key {
        path: state.path("identity"),
        reason: e.0,
    })?;
    registry.upsert_agent(req.name, &spiffe_id, req.owner, req.tenant, now)?;
    registry.add_token(
        req.name,
        &Token {
            jti: jti.clone(),
            kid: signer.kid().to_owned(),
            issued: now,
            expires,
            token: token.clone(),
        },
    )?;
    Ok(Registered {
        name: req.name.to_owned(),
        spiffe_id,
        owner: req.owner.map(str::to_owned),
        tenant: req.tenant.map(str::to_owned),
        jti,
        expires,
        token,
    })
}

fn pem_decode(pem: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::jwt::{Rules, verify};

    #[test]
    fn registers_rotates_and_old_tokens_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path().join("h")).unwrap();
        let mut reg = Registry::open(&state).unwrap();
        let cfg = IdentityConfig::default();
        let req = Registration {
            name: "bot",
            owner: Some("alice"),
            tenant: None,
            ttl: Duration::from_secs(3600),
        };
        let first = register(&state, &mut reg, &cfg, &req, 1000).unwrap();
        assert_eq!(first.spiffe_id, "spiffe://agentgate.local/agent/bot");
        let rotation = rotate(&state, &reg, 2000).unwrap();
        assert_eq!(rotation.retired_valid_until, Some(first.expires));
        let second = register(&state, &mut reg, &cfg, &req, 2000).unwrap();

        let snap = reg.snapshot(2000).unwrap();
        assert_eq!(snap.issuer_keys.len(), 2);
        let keys: Vec<_> = snap
            .issuer_keys
            .iter()
            .map(|k| {
                let jwk: serde_json::Value = serde_json::from_str(&k.public_jwk).unwrap();
                (
                    k.kid.clone(),
                    crate::identity::jwt::VerifyKey::from_jwk(&jwk).unwrap(),
                )
            })
            .collect();
        let rules = Rules {
            audience: "agentgate".into(),
            leeway: Duration::from_secs(0),
            max_token_bytes: 8192,
        };
        for tok in [&first.token, &second.token] {
            let claims = verify(tok, &rules, 2500, |_, kid| {
                Ok(&keys.iter().find(|(k, _)| k == kid).unwrap().1)
            })
            .unwrap();
            assert_eq!(claims.sub.to_string(), first.spiffe_id);
        }
        let mode = fs::metadata(key_path(&state, &rotation.new_kid).unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(check_name("agent name", "../x").is_err());
        assert!(check_name("agent name", "..").is_err());
        assert!(check_name("agent name", "my-bot_1.v2").is_ok());
    }
}
