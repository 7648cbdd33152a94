//! The test agent: one ES256 key per test process, trusted by every proxy the tests
//! start (as a bundle file for trust domain [`TRUST_DOMAIN`]), and tokens signed with it.
//! Identity tests also mint broken tokens here.

use agentgate::identity::jwt::Es256Signer;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

pub const TRUST_DOMAIN: &str = "e2e.test";
pub const NAME: &str = "e2e-bot";
pub const KID: &str = "e2e-key";

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

pub fn signer() -> &'static Es256Signer {
    static SIGNER: OnceLock<Es256Signer> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let pkcs8 = Es256Signer::generate_pkcs8().expect("generate key");
        Es256Signer::from_pkcs8(KID.into(), &pkcs8).expect("load key")
    })
}

/// Claims of a valid token for `name` in the test trust domain.
pub fn claims(name: &str) -> Value {
    json!({
        "sub": format!("spiffe://{TRUST_DOMAIN}/agent/{name}"),
        "aud": ["agentgate"],
        "exp": now() + 3 * 3600,
        "iat": now(),
        "jti": format!("jti-{name}"),
    })
}

/// The test agent's token (valid for hours).
pub fn token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| signer().sign(&claims(NAME)).expect("sign"))
}

/// `Proxy-Authorization` value for the test agent.
pub fn bearer() -> String {
    format!("Bearer {}", token())
}

/// A token with any header and claims, signed by the test key.
pub fn mint(header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = signer().sign_raw(input.as_bytes()).expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Writes the bundle (JWKS) trusting the test key into `dir`.
pub fn write_bundle(dir: &Path) -> PathBuf {
    let path = dir.join("e2e-agents.jwks");
    let doc = agentgate::identity::bundle::to_jwks([(KID, &signer().public_key())]);
    std::fs::write(&path, doc.to_string()).expect("write bundle");
    path
}
