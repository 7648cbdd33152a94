//! SPIFFE JWT bundles: a JWKS per trust domain whose keys carry `use: "jwt-svid"` and a
//! `kid`. Parsed from files, the Workload API and the built-in issuer; served by the admin
//! port at `/.well-known/spiffe-bundle`.

use std::collections::HashMap;
use std::sync::Arc;

use super::jwt::VerifyKey;

/// The keys of one trust domain, by `kid`.
pub type Authorities = HashMap<String, Arc<VerifyKey>>;

/// Why a bundle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a JWKS: {0}")]
    NotJwks(String),
    #[error("key \"{kid}\": {reason}")]
    BadKey { kid: String, reason: String },
}

/// Reads the JWT authorities of a SPIFFE bundle. Keys for other uses (`x509-svid`) are
/// skipped; a JWT key that cannot be used is an error, so a broken bundle is noticed.
pub fn parse_jwks(bytes: &[u8]) -> Result<Authorities, BundleError> {
    let doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| BundleError::NotJwks(e.to_string()))?;
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| BundleError::NotJwks("no \"keys\" array".into()))?;
    let mut out = Authorities::new();
    for key in keys {
        match key.get("use").and_then(|u| u.as_str()) {
            None | Some("jwt-svid") => {}
            Some(_) => continue,
        }
        let kid = match key.get("kid").and_then(|k| k.as_str()) {
            Some(kid) if !kid.is_empty() => kid.to_owned(),
            _ => {
                return Err(BundleError::BadKey {
                    kid: String::new(),
                    reason: "a jwt-svid key needs a \"kid\"".into(),
                });
            }
        };
        let parsed = VerifyKey::from_jwk(key).map_err(|e| BundleError::BadKey {
            kid: kid.clone(),
            reason: e.0,
        })?;
        out.insert(kid, Arc::new(parsed));
    }
    Ok(out)
}

/// A SPIFFE JWT bundle document for `keys`, sorted by `kid` so the output is stable.
pub fn to_jwks<'a>(keys: impl IntoIterator<Item = (&'a str, &'a VerifyKey)>) -> serde_json::Value {
    let mut keys: Vec<_> = keys.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    let keys: Vec<serde_json::Value> = keys
        .into_iter()
        .map(|(kid, key)| {
            let mut jwk = key.to_jwk();
            if let Some(obj) = jwk.as_object_mut() {
                obj.insert("kid".into(), kid.into());
                obj.insert("use".into(), "jwt-svid".into());
            }
            jwk
        })
        .collect();
    serde_json::json!({ "keys": keys })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::jwt::Es256Signer;

    #[test]
    fn round_trips_and_skips_x509_keys() {
        let signer =
            Es256Signer::from_pkcs8("k1".into(), &Es256Signer::generate_pkcs8().unwrap()).unwrap();
        let key = signer.public_key();
        let mut doc = to_jwks([("k1", &key)]);
        assert_eq!(doc["keys"][0]["use"], "jwt-svid");
        doc["keys"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"use": "x509-svid", "kty": "EC", "x5c": ["..."]}));
        let parsed = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(*parsed["k1"], key);
    }

    #[test]
    fn refuses_broken_bundles() {
        assert!(parse_jwks(b"[]").is_err());
        assert!(parse_jwks(br#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#).is_err());
        let err =
            parse_jwks(br#"{"keys":[{"kid":"a","kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("32 bytes"), "{err}");
        let err = parse_jwks(br#"{"keys":[{"kid":"a","kty":"oct","k":"c2VjcmV0"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported key type"), "{err}");
    }
}
