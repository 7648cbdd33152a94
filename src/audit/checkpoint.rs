//! Signed checkpoints: Ed25519 over the canonical JSON of `{head, log_id, size, time}`.
//! A plain hash chain cannot see a truncated tail or a log rewritten from scratch; a
//! checkpoint kept elsewhere (`checkpoints.jsonl` is the file to ship) can.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::chain::hex;
use crate::digest::pem_encode;
use crate::state::{StateDir, StateError, read_private, write_private, write_public};

/// File names in the state dir.
pub const KEY_FILE: &str = "audit.key";
pub const PUB_FILE: &str = "audit.pub";
pub const JSONL_FILE: &str = "checkpoints.jsonl";

/// What a checkpoint commits to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub log_id: String,
    /// Number of records (the `seq` of the last one).
    pub size: u64,
    /// Hex hash of record `size`.
    pub head: String,
    /// Unix microseconds.
    pub time: i64,
}

/// A checkpoint with its signature, as stored and shipped (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    pub checkpoint: Checkpoint,
    /// Base64 Ed25519 signature over `canonical(checkpoint)`.
    pub sig: String,
    /// Hex public key that signed it.
    pub key: String,
}

impl Checkpoint {
    /// The signed bytes.
    pub fn canonical(&self) -> String {
        super::chain::canonical(&serde_json::json!({
            "head": self.head,
            "log_id": self.log_id,
            "size": self.size,
            "time": self.time,
        }))
    }
}

/// Why a checkpoint key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{path}: {reason}")]
    Bad { path: String, reason: String },
}

/// The checkpoint signing key.
pub struct Signer {
    key: Ed25519KeyPair,
    public_hex: String,
}

impl Signer {
    /// Loads `audit.key` from the state dir, creating it (0600) and `audit.pub` on first use.
    pub fn ensure(state: &StateDir) -> Result<Signer, KeyError> {
        let path = state.path(KEY_FILE);
        let bad = |reason: &str| KeyError::Bad {
            path: path.display().to_string(),
            reason: reason.to_owned(),
        };
        let der = if path.exists() {
            let pem = read_private(&path)?;
            let text = String::from_utf8_lossy(&pem);
            let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
            STANDARD
                .decode(body)
                .map_err(|_| bad("not a PEM private key"))?
        } else {
            let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                .map_err(|_| bad("cannot generate an Ed25519 key"))?;
            write_private(&path, pem_encode("PRIVATE KEY", doc.as_ref()).as_bytes())?;
            doc.as_ref().to_vec()
        };
        let key = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| bad("not an Ed25519 PKCS#8 key"))?;
        let public_hex = hex(key.public_key().as_ref());
        let pub_path = state.path(PUB_FILE);
        if std::fs::read_to_string(&pub_path)
            .map(|s| s.trim().to_owned())
            .ok()
            .as_deref()
            != Some(public_hex.as_str())
        {
            write_public(&pub_path, format!("{public_hex}\n").as_bytes())?;
        }
        Ok(Signer { key, public_hex })
    }

    /// Hex public key.
    pub fn public_hex(&self) -> &str {
        &self.public_hex
    }

    /// Signs a checkpoint.
    pub fn sign(&self, checkpoint: Checkpoint) -> Signed {
        let sig = self.key.sign(checkpoint.canonical().as_bytes());
        Signed {
            sig: STANDARD.encode(sig.as_ref()),
            key: self.public_hex.clone(),
            checkpoint,
        }
    }
}

/// Checks a signature with the hex public key `public_hex`.
pub fn verify_signature(signed: &Signed, public_hex: &str) -> bool {
    let Some(public) = super::chain::parse_hash(public_hex) else {
        return false;
    };
    let Ok(sig) = STANDARD.decode(&signed.sig) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, public)
        .verify(signed.checkpoint.canonical().as_bytes(), &sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_verifies_and_refuses_forgeries() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path().join("h")).unwrap();
        let signer = Signer::ensure(&state).unwrap();
        let again = Signer::ensure(&state).unwrap();
        assert_eq!(signer.public_hex(), again.public_hex());
        let cp = Checkpoint {
            log_id: "l".into(),
            size: 3,
            head: "00".repeat(32),
            time: 5,
        };
        let signed = signer.sign(cp);
        assert!(verify_signature(&signed, signer.public_hex()));
        let mut forged = signed.clone();
        forged.checkpoint.size = 4;
        assert!(!verify_signature(&forged, signer.public_hex()));
        assert!(!verify_signature(&signed, &"11".repeat(32)));
    }
}
