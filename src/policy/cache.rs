//! Decisions remembered for inputs seen a moment ago. Agents repeat themselves (the same
//! action on the same resource, many times a second), and a policy is a pure function of its
//! input and its files, so a repeated input gets the decision already made instead of a new
//! evaluation. The key is the whole input, byte for byte: its `context.time` included (in
//! whole seconds, so an entry only ever answers within the second it was made), unless the
//! policy cannot read the time (`policy/clockless.rs`), when an entry answers the same
//! request for as long as it lives. The cache lives and dies with one compiled policy, so a
//! reload starts empty. A policy that calls a
//! builtin whose answer is not a function of its input (the clock, randomness, the network)
//! gets no cache at all.

use std::sync::Arc;
use std::time::Duration;

use super::decision::Decision;

/// Builtins whose result is not a function of the input: a policy naming any of them is
/// evaluated every time. A mention anywhere (even in a comment) counts: better a missed
/// cache than a stale decision.
const VOLATILE_BUILTINS: [&str; 8] = [
    "time.now_ns",
    "rand.intn",
    "uuid.rfc4122",
    "uuid.parse",
    "http.send",
    "opa.runtime",
    "net.lookup_ip_addr",
    "io.jwt.decode_verify",
];

/// Most bytes of remembered inputs (an input is a few hundred bytes to a few KiB, more with
/// what intent read from a body); entries older than a few seconds can no longer match anyway.
const MAX_BYTES: u64 = 8 << 20;
const TTL: Duration = Duration::from_secs(3);
/// What an entry costs beside its input: the decision and the cache's own bookkeeping.
const ENTRY_OVERHEAD: usize = 256;

/// Remembered decisions of one compiled policy, keyed by the serialized input.
pub(super) struct DecisionCache {
    entries: moka::sync::Cache<Box<[u8]>, Arc<Decision>>,
}

impl DecisionCache {
    /// A cache for a policy made of `rego` sources, or `None` when one of them may decide
    /// differently on the same input.
    pub(super) fn for_policy<'a>(mut rego: impl Iterator<Item = &'a str>) -> Option<Self> {
        if rego.any(|text| VOLATILE_BUILTINS.iter().any(|b| text.contains(b))) {
            return None;
        }
        Some(DecisionCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(MAX_BYTES)
                .weigher(weight)
                .time_to_live(TTL)
                .build(),
        })
    }

    /// The decision made on exactly this input, if it is still remembered.
    pub(super) fn get(&self, input: &[u8]) -> Option<Arc<Decision>> {
        self.entries.get(input)
    }

    /// Remembers a decision made by evaluating the policy (never one made up for an error).
    pub(super) fn insert(&self, input: Vec<u8>, decision: Arc<Decision>) {
        self.entries.insert(input.into_boxed_slice(), decision);
    }
}

/// The key of `input`: its JSON, without `context.time` when `clockless` (the policy
/// cannot read it, so inputs differing only there are decided alike).
pub(super) fn key(
    input: &serde_json::Value,
    clockless: bool,
) -> Result<Vec<u8>, serde_json::Error> {
    use serde_json::Value;
    let Value::Object(top) = input else {
        return serde_json::to_vec(input);
    };
    if !clockless || top.get("context").is_none_or(|c| c.get("time").is_none()) {
        return serde_json::to_vec(input);
    }
    let mut out = Vec::with_capacity(1024);
    out.push(b'{');
    for (i, (k, v)) in top.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, k)?;
        out.push(b':');
        match (k.as_str(), v) {
            ("context", Value::Object(context)) => {
                out.push(b'{');
                let members = context.iter().filter(|(name, _)| *name != "time");
                for (j, (name, value)) in members.enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut out, name)?;
                    out.push(b':');
                    serde_json::to_writer(&mut out, value)?;
                }
                out.push(b'}');
            }
            _ => serde_json::to_writer(&mut out, v)?,
        }
    }
    out.push(b'}');
    Ok(out)
}

/// An entry's weight against [`MAX_BYTES`]: its input's length and a fixed overhead.
#[allow(clippy::borrowed_box)] // moka hands the key as stored
fn weight(input: &Box<[u8]>, _: &Arc<Decision>) -> u32 {
    u32::try_from(input.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::key;

    #[test]
    fn a_clockless_key_leaves_out_only_the_time() {
        let a = json!({"action": {"name": "x"}, "context": {"host": "h", "time": "2026-12-07T10:00:00Z"}});
        let b = json!({"action": {"name": "x"}, "context": {"host": "h", "time": "2026-12-07T10:00:01Z"}});
        let c = json!({"action": {"name": "x"}, "context": {"host": "g", "time": "2026-12-07T10:00:01Z"}});
        assert_ne!(key(&a, false).unwrap(), key(&b, false).unwrap());
        assert_eq!(key(&a, true).unwrap(), key(&b, true).unwrap());
        assert_ne!(key(&b, true).unwrap(), key(&c, true).unwrap());
        let parsed: serde_json::Value = serde_json::from_slice(&key(&a, true).unwrap()).unwrap();
        assert_eq!(
            parsed,
            json!({"action": {"name": "x"}, "context": {"host": "h"}})
        );
    }
}
