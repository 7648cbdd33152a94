//! Every value this fleet writes to its KV buckets carries an HMAC-SHA256 tag under a key
//! derived from the vault key, which every instance of a fleet holds (and nothing else on
//! the bus does). Whoever can write to the bus without that key — a leaked NATS credential,
//! a misconfigured account — cannot plant an issuer key, an agent, a lifted revocation, a
//! vault row or an answered consent: an entry whose tag does not verify is ignored. A
//! deletion is a tagged tombstone, never a bare KV delete, which anyone could send.
//!
//! Framing: `<64 hex of the tag> "." <value>`, the tag over `bucket \0 key \0 value`; a
//! tombstone's value is `TOMBSTONE` (no JSON value starts with a NUL byte).

use aws_lc_rs::hmac;
use bytes::Bytes;

use crate::digest::hex;

/// The value of a deleted entry.
const TOMBSTONE: &[u8] = b"\0deleted";
/// Hex digits of a tag.
const TAG_HEX: usize = 64;

/// Tags and checks the entries of a fleet's buckets.
pub struct Sealer(hmac::Key);

/// Why an entry from the bus was not taken.
#[derive(Debug, thiserror::Error)]
pub enum Unsealed {
    #[error("not tagged: written without the fleet key (or by an AgentGate older than tagging)")]
    Untagged,
    #[error(
        "its tag does not verify under the fleet key: forged, altered, or written by an instance with another vault key (every instance of a fleet must hold the same one)"
    )]
    BadTag,
}

impl Sealer {
    /// A sealer under `key` (see `Vault::fleet_key`).
    pub fn new(key: hmac::Key) -> Sealer {
        Sealer(key)
    }

    fn signed(bucket: &str, key: &str, value: &[u8]) -> Vec<u8> {
        let mut msg = Vec::with_capacity(bucket.len() + key.len() + value.len() + 2);
        msg.extend_from_slice(bucket.as_bytes());
        msg.push(0);
        msg.extend_from_slice(key.as_bytes());
        msg.push(0);
        msg.extend_from_slice(value);
        msg
    }

    /// The bytes to write for `value` of `key` in `bucket` (`None`: a tombstone).
    pub fn seal(&self, bucket: &str, key: &str, value: Option<&[u8]>) -> Bytes {
        let value = value.unwrap_or(TOMBSTONE);
        let tag = hmac::sign(&self.0, &Sealer::signed(bucket, key, value));
        let mut out = Vec::with_capacity(TAG_HEX + 1 + value.len());
        out.extend_from_slice(hex(tag.as_ref()).as_bytes());
        out.push(b'.');
        out.extend_from_slice(value);
        Bytes::from(out)
    }

    /// The value in `bytes` read from `key` of `bucket`, once its tag verifies (`None`: a
    /// tombstone).
    pub fn open<'a>(
        &self,
        bucket: &str,
        key: &str,
        bytes: &'a [u8],
    ) -> Result<Option<&'a [u8]>, Unsealed> {
        if bytes.len() <= TAG_HEX || bytes[TAG_HEX] != b'.' {
            return Err(Unsealed::Untagged);
        }
        let (tag_hex, value) = (&bytes[..TAG_HEX], &bytes[TAG_HEX + 1..]);
        let tag = unhex(tag_hex).ok_or(Unsealed::Untagged)?;
        hmac::verify(&self.0, &Sealer::signed(bucket, key, value), &tag)
            .map_err(|_| Unsealed::BadTag)?;
        Ok((value != TOMBSTONE).then_some(value))
    }
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(*p.get(1)?)?))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sealer(k: &[u8]) -> Sealer {
        Sealer::new(hmac::Key::new(hmac::HMAC_SHA256, k))
    }

    #[test]
    fn a_sealed_entry_opens_only_under_its_key_bucket_and_name() {
        let s = sealer(b"fleet key");
        let sealed = s.seal("e2e-registry", "agent.bot", Some(br#"{"a":1}"#));
        assert_eq!(
            s.open("e2e-registry", "agent.bot", &sealed).unwrap(),
            Some(&br#"{"a":1}"#[..])
        );
        // Another key, another bucket, another name, an altered value: refused.
        assert!(matches!(
            sealer(b"other").open("e2e-registry", "agent.bot", &sealed),
            Err(Unsealed::BadTag)
        ));
        assert!(s.open("e2e-vault", "agent.bot", &sealed).is_err());
        assert!(s.open("e2e-registry", "agent.eve", &sealed).is_err());
        let mut altered = sealed.to_vec();
        *altered.last_mut().unwrap() = b'2';
        assert!(s.open("e2e-registry", "agent.bot", &altered).is_err());
        // A bare value, as an attacker without the key (or an older instance) writes it.
        assert!(matches!(
            s.open("e2e-registry", "agent.bot", br#"{"a":1}"#),
            Err(Unsealed::Untagged)
        ));
    }

    #[test]
    fn a_tombstone_is_sealed_too() {
        let s = sealer(b"k");
        let t = s.seal("b", "revoked.00", None);
        assert_eq!(s.open("b", "revoked.00", &t).unwrap(), None);
        assert!(s.open("b", "revoked.01", &t).is_err());
    }
}
