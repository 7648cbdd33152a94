//! JWT-SVID verification (JWS compact serialization, SPIFFE profile) and ES256 signing for
//! the built-in issuer. Signatures are checked with aws-lc-rs; everything else (header and
//! claim rules, leeway) is here so that every rule is visible and unit-tested.

use std::time::Duration;

use aws_lc_rs::signature::{
    self, EcdsaKeyPair, KeyPair, RsaPublicKeyComponents, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// Signature algorithms a JWT-SVID may use (the SPIFFE allow-list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Es256,
    Es384,
    Es512,
    Ps256,
    Ps384,
    Ps512,
}

impl Alg {
    /// Parses a JOSE `alg` name; anything off the allow-list (`none`, `HS256`…) is `None`.
    pub fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "ES512" => Alg::Es512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            _ => return None,
        })
    }

    fn rsa(self) -> Option<&'static signature::RsaParameters> {
        Some(match self {
            Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Alg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Alg::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
            _ => return None,
        })
    }
}

/// Elliptic curves a JWK may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn from_name(name: &str) -> Option<Curve> {
        match name {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            _ => None,
        }
    }

    /// Byte length of one coordinate.
    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// The one JWS algorithm that goes with this curve (RFC 7518 §3.4).
    fn alg(self) -> Alg {
        match self {
            Curve::P256 => Alg::Es256,
            Curve::P384 => Alg::Es384,
            Curve::P521 => Alg::Es512,
        }
    }

    fn verification(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
            Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED,
        }
    }
}

/// A public key that can verify JWT-SVID signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyKey {
    /// Uncompressed point `0x04 || x || y`.
    Ec { curve: Curve, point: Vec<u8> },
    /// Big-endian modulus and exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

/// Why a JWK could not be used as a verification key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JwkError(pub String);

#[derive(Deserialize)]
struct Jwk<'a> {
    kty: &'a str,
    crv: Option<&'a str>,
    x: Option<&'a str>,
    y: Option<&'a str>,
    n: Option<&'a str>,
    e: Option<&'a str>,
}

impl VerifyKey {
    /// Reads the public part of a JWK (`kty` EC or RSA); other members are the caller's.
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<VerifyKey, JwkError> {
        let jwk = Jwk::deserialize(jwk).map_err(|e| JwkError(format!("not a JWK: {e}")))?;
        let field = |name: &str, v: Option<&str>| -> Result<Vec<u8>, JwkError> {
            let v = v.ok_or_else(|| JwkError(format!("{} key without \"{name}\"", jwk.kty)))?;
            URL_SAFE_NO_PAD
                .decode(v)
                .map_err(|_| JwkError(format!("\"{name}\" is not base64url")))
        };
        match jwk.kty {
            "EC" => {
                let crv = jwk.crv.unwrap_or("");
                let curve = Curve::from_name(crv)
                    .ok_or_else(|| JwkError(format!("unsupported curve \"{crv}\"")))?;
                let (x, y) = (field("x", jwk.x)?, field("y", jwk.y)?);
                let len = curve.coordinate_len();
                if x.len() != len || y.len() != len {
                    return Err(JwkError(format!(
                        "coordinates of a {crv} key must be {len} bytes"
                    )));
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Ok(VerifyKey::Ec { curve, point })
            }
            "RSA" => {
                let n = field("n", jwk.n)?;
                if n.len() < 256 {
                    return Err(JwkError(
                        "RSA keys shorter than 2048 bits are refused".into(),
                    ));
                }
                Ok(VerifyKey::Rsa {
                    n,
                    e: field("e", jwk.e)?,
                })
            }
            other => Err(JwkError(format!("unsupported key type \"{other}\""))),
        }
    }

    /// The public key as a JWK (without `kid`/`use`, which the bundle adds).
    pub fn to_jwk(&self) -> serde_json::Value {
        match self {
            VerifyKey::Ec { curve, point } => {
                let len = curve.coordinate_len();
                let crv = match curve {
                    Curve::P256 => "P-256",
                    Curve::P384 => "P-384",
                    Curve::P521 => "P-521",
                };
                serde_json::json!({
                    "kty": "EC",
                    "crv": crv,
                    "x": URL_SAFE_NO_PAD.encode(&point[1..1 + len]),
                    "y": URL_SAFE_NO_PAD.encode(&point[1 + len..]),
                })
            }
            VerifyKey::Rsa { n, e } => serde_json::json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(n),
                "e": URL_SAFE_NO_PAD.encode(e),
            }),
        }
    }

    /// Checks `signature` over `message` with `alg`, which must suit this key.
    fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> Result<(), JwtError> {
        let ok = match self {
            VerifyKey::Ec { curve, point } => {
                if curve.alg() != alg {
                    return Err(JwtError::KeyMismatch);
                }
                UnparsedPublicKey::new(curve.verification(), point)
                    .verify(message, sig)
                    .is_ok()
            }
            VerifyKey::Rsa { n, e } => {
                let params = alg.rsa().ok_or(JwtError::KeyMismatch)?;
                RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(JwtError::BadSignature)
        }
    }
}

/// Why a token was refused; the text is safe to show the agent (it never quotes the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is larger than {0} bytes")]
    TooLarge(usize),
    #[error("token is not a JWS in compact form (header.payload.signature)")]
    Malformed,
    #[error("token {0} is not valid base64url JSON")]
    BadEncoding(&'static str),
    #[error("token header field \"{0}\" is not allowed (JWT-SVIDs may carry only alg, kid, typ)")]
    ForbiddenHeader(String),
    #[error("token algorithm \"{0}\" is not allowed (use RS/ES/PS 256/384/512)")]
    AlgNotAllowed(String),
    #[error("token header has no \"kid\"")]
    MissingKid,
    #[error("token \"typ\" must be JWT or JOSE")]
    BadTyp,
    #[error("token has no \"{0}\" claim")]
    MissingClaim(&'static str),
    #[error("token subject is not a valid SPIFFE ID: {0}")]
    NotSpiffeId(String),
    #[error("trust domain \"{0}\" is not trusted by this proxy")]
    UntrustedDomain(String),
    #[error("signing key \"{kid}\" is unknown for trust domain \"{trust_domain}\"")]
    UnknownKey { trust_domain: String, kid: String },
    #[error("token algorithm does not match its signing key")]
    KeyMismatch,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token audience does not include \"{0}\"")]
    WrongAudience(String),
    #[error("token expired {0} s ago")]
    Expired(i64),
    #[error("token is not valid for another {0} s (nbf)")]
    NotYetValid(i64),
}

/// What a verified token says; only fields the gate uses are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub sub: spiffe::SpiffeId,
    pub exp: i64,
    pub jti: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: Option<String>,
    kid: Option<String>,
    typ: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<f64>,
    nbf: Option<f64>,
    jti: Option<String>,
}

/// The checks that depend on the verifier's configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    pub audience: String,
    pub leeway: Duration,
    pub max_token_bytes: usize,
}

/// Verifies `token`; `key_for(trust_domain, kid)` finds the key (or says why not).
pub fn verify<'k>(
    token: &str,
    rules: &Rules,
    now: i64,
    key_for: impl FnOnce(&str, &str) -> Result<&'k VerifyKey, JwtError>,
) -> Result<Claims, JwtError> {
    if token.len() > rules.max_token_bytes {
        return Err(JwtError::TooLarge(rules.max_token_bytes));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header_json = decode(header_b64, "header")?;
    let header = parse_header(&header_json)?;
    let payload = decode(payload_b64, "payload")?;
    let raw: RawClaims =
        serde_json::from_slice(&payload).map_err(|_| JwtError::BadEncoding("payload"))?;
    let sub = raw.sub.ok_or(JwtError::MissingClaim("sub"))?;
    let sub = spiffe::SpiffeId::new(&sub).map_err(|e| JwtError::NotSpiffeId(e.to_string()))?;
    let key = key_for(sub.trust_domain_name(), &header.kid)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| JwtError::BadEncoding("signature"))?;
    let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
    key.verify(header.alg, signed.as_bytes(), &sig)?;

    // Claims are trusted only from here on.
    let audience_ok = match &raw.aud {
        Some(Audience::One(a)) => *a == rules.audience,
        Some(Audience::Many(all)) => all.contains(&rules.audience),
        None => return Err(JwtError::MissingClaim("aud")),
    };
    if !audience_ok {
        return Err(JwtError::WrongAudience(rules.audience.clone()));
    }
    let leeway = rules.leeway.as_secs() as i64;
    let exp = raw.exp.ok_or(JwtError::MissingClaim("exp"))?.floor() as i64;
    if now > exp.saturating_add(leeway) {
        return Err(JwtError::Expired(now - exp));
    }
    if let Some(nbf) = raw.nbf {
        let nbf = nbf.ceil() as i64;
        if now.saturating_add(leeway) < nbf {
            return Err(JwtError::NotYetValid(nbf - now));
        }
    }
    Ok(Claims {
        sub,
        exp,
        jti: raw.jti,
    })
}

struct CheckedHeader {
    alg: Alg,
    kid: String,
}

fn decode(part: &str, what: &'static str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::BadEncoding(what))
}

fn parse_header(json: &[u8]) -> Result<CheckedHeader, JwtError> {
    let header: Header = serde_json::from_slice(json).map_err(|e| {
        // `deny_unknown_fields` names the offending field; nothing else is echoed.
        let msg = e.to_string();
        match msg
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
        {
            Some(field) => JwtError::ForbiddenHeader(field.chars().take(32).collect()),
            None => JwtError::BadEncoding("header"),
        }
    })?;
    let alg_name = header.alg.ok_or(JwtError::MissingClaim("alg"))?;
    let alg = Alg::from_name(&alg_name)
        .ok_or_else(|| JwtError::AlgNotAllowed(alg_name.chars().take(16).collect()))?;
    let kid = header
        .kid
        .filter(|k| !k.is_empty())
        .ok_or(JwtError::MissingKid)?;
    if !matches!(header.typ.as_deref(), None | Some("JWT") | Some("JOSE")) {
        return Err(JwtError::BadTyp);
    }
    Ok(CheckedHeader { alg, kid })
}

/// Signs JWT-SVIDs with an ES256 key (the built-in issuer).
pub struct Es256Signer {
    kid: String,
    key: EcdsaKeyPair,
}

impl Es256Signer {
    /// Loads a PKCS#8 P-256 key.
    pub fn from_pkcs8(kid: String, pkcs8: &[u8]) -> Result<Es256Signer, JwkError> {
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|_| JwkError("not a PKCS#8 P-256 private key".into()))?;
        Ok(Es256Signer { kid, key })
    }

    /// A fresh P-256 key as PKCS#8 DER.
    pub fn generate_pkcs8() -> Result<Vec<u8>, JwkError> {
        EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .map(|doc| doc.as_ref().to_vec())
        .map_err(|_| JwkError("cannot generate a P-256 key".into()))
    }

    /// This key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half.
    pub fn public_key(&self) -> VerifyKey {
        VerifyKey::Ec {
            curve: Curve::P256,
            point: self.key.public_key().as_ref().to_vec(),
        }
    }

    /// Signs `claims` into a compact JWS with header `{alg: ES256, kid, typ: JWT}`.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, JwkError> {
        let header = serde_json::json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self.sign_raw(token.as_bytes())?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(token)
    }

    /// Signs `message` (the JWS signing input), giving the fixed-size `r || s`.
    pub fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, JwkError> {
        self.key
            .sign(&aws_lc_rs::rand::SystemRandom::new(), message)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| JwkError("signing failed".into()))
    }
}

#[cfg(test)]
mod tests;
