//! The hash chain: `hash = SHA-256(prev_hash ‖ canonical record bytes)`, with the genesis
//! `prev_hash` derived from the log id. The canonical encoding is compact JSON with object
//! keys sorted, integers only, UTF-8 (what `serde_json` writes for a `Value`, and what
//! Python's `json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
//! writes); records are encoded to it by `record`. `docs/audit-format.md` is the outside
//! reader's version of this file.

use aws_lc_rs::digest::{Context, SHA256};

/// 32-byte SHA-256 output.
pub type Hash = [u8; 32];

/// The domain-separation prefix of the genesis hash.
pub const GENESIS_PREFIX: &str = "agentgate-audit-v1:";

/// The `prev_hash` of record 1.
pub fn genesis(log_id: &str) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(GENESIS_PREFIX.as_bytes());
    ctx.update(log_id.as_bytes());
    finish(ctx)
}

/// The hash of a record given the previous one.
pub fn link(prev: &Hash, canonical: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(prev);
    ctx.update(canonical);
    finish(ctx)
}

fn finish(ctx: Context) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

pub use crate::digest::hex;

/// Whether `stored` is the lowercase hex of `hash` (no allocation).
pub fn hex_matches(hash: &Hash, stored: &str) -> bool {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let stored = stored.as_bytes();
    stored.len() == 64
        && hash.iter().enumerate().all(|(i, b)| {
            stored[2 * i] == DIGITS[(b >> 4) as usize]
                && stored[2 * i + 1] == DIGITS[(b & 15) as usize]
        })
}

/// Parses lowercase or uppercase hex of a 32-byte hash.
pub fn parse_hash(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// The canonical bytes of a record (sorted keys, compact).
pub fn canonical(record: &serde_json::Value) -> String {
    // serde_json's Map is a BTreeMap (no `preserve_order`): keys come out sorted.
    record.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_is_stable_and_hex_round_trips() {
        let g = genesis("log-1");
        let rec = serde_json::json!({"seq": 1, "b": "x", "a": [1, 2]});
        assert_eq!(canonical(&rec), r#"{"a":[1,2],"b":"x","seq":1}"#);
        let h = link(&g, canonical(&rec).as_bytes());
        assert_eq!(parse_hash(&hex(&h)), Some(h));
        assert!(hex_matches(&h, &hex(&h)));
        assert!(!hex_matches(&h, &hex(&g)));
        assert!(
            !hex_matches(&h, &hex(&h).to_uppercase()),
            "stored hex is lowercase"
        );
        assert!(!hex_matches(&h, "00"));
        assert_ne!(genesis("log-2"), g);
        // Known answer: SHA-256("agentgate-audit-v1:log-1").
        assert_eq!(
            hex(&g),
            hex(aws_lc_rs::digest::digest(&SHA256, b"agentgate-audit-v1:log-1").as_ref())
        );
    }
}
