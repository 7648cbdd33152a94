//! Every JWT-SVID rule, one test each, plus Wycheproof ECDSA P-256 vectors.

use super::*;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
    ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaSigningAlgorithm, RsaEncoding, RsaKeyPair,
};
use serde_json::{Value, json};

const NOW: i64 = 1_800_000_000;
const SUB: &str = "spiffe://example.org/agent/bot";

fn rules() -> Rules {
    Rules {
        audience: "agentgate".into(),
        leeway: Duration::from_secs(30),
        max_token_bytes: 8192,
    }
}

fn claims() -> Value {
    json!({"sub": SUB, "aud": ["agentgate"], "exp": NOW + 600, "jti": "j1"})
}

fn header(alg: &str) -> Value {
    json!({"alg": alg, "kid": "k1", "typ": "JWT"})
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A key of any supported family that signs arbitrary headers.
enum TestKey {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl TestKey {
    fn ec(alg: &'static EcdsaSigningAlgorithm) -> TestKey {
        TestKey::Ec(EcdsaKeyPair::generate(alg).unwrap())
    }

    fn rsa() -> TestKey {
        TestKey::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap())
    }

    fn public(&self, curve: Curve) -> VerifyKey {
        match self {
            TestKey::Ec(k) => VerifyKey::Ec {
                curve,
                point: k.public_key().as_ref().to_vec(),
            },
            TestKey::Rsa(k) => VerifyKey::Rsa {
                n: k.public_key()
                    .modulus()
                    .big_endian_without_leading_zero()
                    .to_vec(),
                e: k.public_key()
                    .exponent()
                    .big_endian_without_leading_zero()
                    .to_vec(),
            },
        }
    }

    fn sign(
        &self,
        header: &Value,
        claims: &Value,
        rsa: Option<&'static dyn RsaEncoding>,
    ) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let sig = match self {
            TestKey::Ec(k) => k.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            TestKey::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(rsa.unwrap(), &rng, input.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

fn check(token: &str, key: &VerifyKey) -> Result<Claims, JwtError> {
    verify(token, &rules(), NOW, |td, kid| {
        if td != "example.org" {
            return Err(JwtError::UntrustedDomain(td.into()));
        }
        if kid != "k1" {
            return Err(JwtError::UnknownKey {
                trust_domain: td.into(),
                kid: kid.into(),
            });
        }
        Ok(key)
    })
}

fn p256() -> (TestKey, VerifyKey) {
    let k = TestKey::ec(&ECDSA_P256_SHA256_FIXED_SIGNING);
    let public = k.public(Curve::P256);
    (k, public)
}

#[test]
fn accepts_every_allowed_algorithm() {
    let ec = [
        ("ES256", &ECDSA_P256_SHA256_FIXED_SIGNING, Curve::P256),
        ("ES384", &ECDSA_P384_SHA384_FIXED_SIGNING, Curve::P384),
        ("ES512", &ECDSA_P521_SHA512_FIXED_SIGNING, Curve::P521),
    ];
    for (alg, signing, curve) in ec {
        let k = TestKey::ec(signing);
        let public = k.public(curve);
        let token = k.sign(&header(alg), &claims(), None);
        let c = check(&token, &public).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(c.sub.to_string(), SUB);
        assert_eq!(c.jti.as_deref(), Some("j1"));
        // The JWK round trip keeps the key usable.
        let back = VerifyKey::from_jwk(&public.to_jwk()).unwrap();
        assert!(check(&token, &back).is_ok(), "{alg} after JWK round trip");
    }
    let rsa = TestKey::rsa();
    let public = rsa.public(Curve::P256);
    let schemes: [(&str, &'static dyn RsaEncoding); 6] = [
        ("RS256", &signature::RSA_PKCS1_SHA256),
        ("RS384", &signature::RSA_PKCS1_SHA384),
        ("RS512", &signature::RSA_PKCS1_SHA512),
        ("PS256", &signature::RSA_PSS_SHA256),
        ("PS384", &signature::RSA_PSS_SHA384),
        ("PS512", &signature::RSA_PSS_SHA512),
    ];
    for (alg, scheme) in schemes {
        let token = rsa.sign(&header(alg), &claims(), Some(scheme));
        check(&token, &public).unwrap_or_else(|e| panic!("{alg}: {e}"));
    }
    // PKCS#1 v1.5 signed, PSS claimed: refused.
    let token = rsa.sign(
        &header("PS256"),
        &claims(),
        Some(&signature::RSA_PKCS1_SHA256),
    );
    assert_eq!(check(&token, &public), Err(JwtError::BadSignature));
    let back = VerifyKey::from_jwk(&public.to_jwk()).unwrap();
    assert_eq!(back, public);
}

#[test]
fn refuses_alg_none_and_hmac() {
    let (k, public) = p256();
    let none = format!("{}.{}.", b64(&header("none")), b64(&claims()));
    assert_eq!(
        check(&none, &public),
        Err(JwtError::AlgNotAllowed("none".into()))
    );
    // HS256 keyed with the public key bytes: the classic confusion attack.
    let input = format!("{}.{}", b64(&header("HS256")), b64(&claims()));
    let VerifyKey::Ec { point, .. } = &public else {
        unreachable!()
    };
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, point),
        input.as_bytes(),
    );
    let hs = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
    assert_eq!(
        check(&hs, &public),
        Err(JwtError::AlgNotAllowed("HS256".into()))
    );
    // Mismatched families and curves.
    let es384 = k.sign(&header("ES384"), &claims(), None);
    assert_eq!(check(&es384, &public), Err(JwtError::KeyMismatch));
    let rs = k.sign(&header("RS256"), &claims(), None);
    assert_eq!(check(&rs, &public), Err(JwtError::KeyMismatch));
    let rsa_key = TestKey::rsa().public(Curve::P256);
    let es = k.sign(&header("ES256"), &claims(), None);
    assert_eq!(check(&es, &rsa_key), Err(JwtError::KeyMismatch));
}

#[test]
fn refuses_every_header_but_alg_kid_typ() {
    let (k, public) = p256();
    for field in ["jku", "x5u", "jwk", "x5c", "crit", "cty", "x5t"] {
        let mut h = header("ES256");
        h[field] = json!("https://evil.example/keys");
        let token = k.sign(&h, &claims(), None);
        assert_eq!(
            check(&token, &public),
            Err(JwtError::ForbiddenHeader(field.into())),
            "{field}"
        );
    }
    let token = k.sign(&json!({"alg": "ES256", "typ": "JWT"}), &claims(), None);
    assert_eq!(check(&token, &public), Err(JwtError::MissingKid));
    let token = k.sign(&json!({"alg": "ES256", "kid": ""}), &claims(), None);
    assert_eq!(check(&token, &public), Err(JwtError::MissingKid));
    let token = k.sign(
        &json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt"}),
        &claims(),
        None,
    );
    assert_eq!(check(&token, &public), Err(JwtError::BadTyp));
    let token = k.sign(
        &json!({"alg": "ES256", "kid": "k1", "typ": "JOSE"}),
        &claims(),
        None,
    );
    assert!(check(&token, &public).is_ok());
    let token = k.sign(&json!({"alg": "ES256", "kid": "k1"}), &claims(), None);
    assert!(check(&token, &public).is_ok(), "typ is optional");
}

#[test]
fn picks_bundle_by_trust_domain_and_key_by_kid() {
    let (k, public) = p256();
    let mut h = header("ES256");
    h["kid"] = json!("other");
    let token = k.sign(&h, &claims(), None);
    assert!(matches!(
        check(&token, &public),
        Err(JwtError::UnknownKey { .. })
    ));
    let mut c = claims();
    c["sub"] = json!("spiffe://evil.org/agent/bot");
    let token = k.sign(&header("ES256"), &c, None);
    assert_eq!(
        check(&token, &public),
        Err(JwtError::UntrustedDomain("evil.org".into()))
    );
}

#[test]
fn refuses_subjects_that_are_not_spiffe_ids() {
    let (k, public) = p256();
    for sub in [
        "bot",
        "https://example.org/agent/bot",
        "spiffe://",
        "spiffe://example.org/a/../b",
        "spiffe://example.org/a?q",
    ] {
        let mut c = claims();
        c["sub"] = json!(sub);
        let token = k.sign(&header("ES256"), &c, None);
        assert!(
            matches!(check(&token, &public), Err(JwtError::NotSpiffeId(_))),
            "{sub}"
        );
    }
    let mut c = claims();
    c.as_object_mut().unwrap().remove("sub");
    let token = k.sign(&header("ES256"), &c, None);
    assert_eq!(check(&token, &public), Err(JwtError::MissingClaim("sub")));
}

#[test]
fn audience_must_include_ours() {
    let (k, public) = p256();
    for (aud, ok) in [
        (json!("agentgate"), true),
        (json!(["other", "agentgate"]), true),
        (json!("other"), false),
        (json!([]), false),
        (json!(["AgentGate"]), false),
    ] {
        let mut c = claims();
        c["aud"] = aud.clone();
        let token = k.sign(&header("ES256"), &c, None);
        let r = check(&token, &public);
        if ok {
            assert!(r.is_ok(), "{aud}");
        } else {
            assert_eq!(r, Err(JwtError::WrongAudience("agentgate".into())), "{aud}");
        }
    }
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    let token = k.sign(&header("ES256"), &c, None);
    assert_eq!(check(&token, &public), Err(JwtError::MissingClaim("aud")));
}

#[test]
fn time_claims_with_leeway() {
    let (k, public) = p256();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        check(&k.sign(&header("ES256"), &c, None), &public)
    };
    assert_eq!(
        with(&|c| c["exp"] = json!(NOW - 31)),
        Err(JwtError::Expired(31))
    );
    assert!(
        with(&|c| c["exp"] = json!(NOW - 29)).is_ok(),
        "within leeway"
    );
    assert_eq!(
        with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
        Err(JwtError::MissingClaim("exp"))
    );
    assert_eq!(
        with(&|c| c["exp"] = json!("soon")),
        Err(JwtError::BadEncoding("payload"))
    );
    assert_eq!(
        with(&|c| c["nbf"] = json!(NOW + 60)),
        Err(JwtError::NotYetValid(60))
    );
    assert!(
        with(&|c| c["nbf"] = json!(NOW + 20)).is_ok(),
        "within leeway"
    );
    assert!(with(&|c| c["nbf"] = json!(NOW - 20)).is_ok());
}

#[test]
fn refuses_garbage_truncation_tampering_and_size() {
    let (k, public) = p256();
    let token = k.sign(&header("ES256"), &claims(), None);
    for bad in [
        "",
        ".",
        "..",
        "a.b",
        "a.b.c.d",
        "not a token",
        "eyJ.eyJ.",
        "\u{0}\u{1}.x.y",
    ] {
        assert!(check(bad, &public).is_err(), "{bad:?}");
    }
    for cut in 1..=4 {
        assert!(
            matches!(
                check(&token[..token.len() - cut], &public),
                Err(JwtError::BadSignature | JwtError::BadEncoding("signature"))
            ),
            "cut {cut}"
        );
    }
    let (head, _) = token.rsplit_once('.').unwrap();
    assert_eq!(
        check(&format!("{head}."), &public),
        Err(JwtError::BadSignature)
    );
    assert_eq!(
        check(&format!("{token}="), &public),
        Err(JwtError::BadEncoding("signature"))
    );
    // Same header and signature, different payload.
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims();
    c["sub"] = json!("spiffe://example.org/agent/admin");
    let forged = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
    assert_eq!(check(&forged, &public), Err(JwtError::BadSignature));
    let huge = format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]);
    assert_eq!(check(&huge, &public), Err(JwtError::TooLarge(8192)));
    // Duplicate header fields are not a way around the rules.
    let dup = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"k1","alg":"none"}"#),
        parts[1],
        parts[2]
    );
    assert!(check(&dup, &public).is_err());
}

/// Wycheproof `ecdsa_secp256r1_sha256_p1363_test.json` (C2SP/wycheproof), first test group:
/// its key, message, the one valid signature and the invalid edge cases (r or s 0, 1, n,
/// n±1, p, modified by ±n, wrong sizes). Every invalid one must fail.
#[test]
fn wycheproof_p256_invalid_signatures_fail() {
    let point = hex(
        "042927b10512bae3eddcfe467828128bad2903269919f7086069c8c4df6c732838c7787964eaac00e5921fb1498a60f4606766b3d9685001558d1a974e7341513e",
    );
    let key = VerifyKey::Ec {
        curve: Curve::P256,
        point,
    };
    let msg = hex("313233343030");
    let valid = "2ba3a8be6b94d5ec80a6d9d1190a436effe50d85a1eee859b8cc6af9bd5c2e184cd60b855d442f5b3c7b11eb6c4e0ae7525fe710fab9aa7c77a67f79e6fadd76";
    assert!(key.verify(Alg::Es256, &msg, &hex(valid)).is_ok(), "tcId 1");
    let n = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
    let n_minus_1 = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632550";
    let n_plus_1 = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632552";
    let p = "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff";
    let p_plus_1 = "ffffffff00000001000000000000000000000001000000000000000000000000";
    let zero = &"0".repeat(64);
    let one = &format!("{}1", "0".repeat(63));
    let mut invalid: Vec<String> = vec![
        // tcId 2-8: r or s modified by the group order, or too long.
        "012ba3a8bd6b94d5ed80a6d9d1190a436ebccc0833490686deac8635bcb9bf536900b329f479a2bbd0a5c384ee1493b1f5186a87139cac5df4087c134b49156847db".into(),
        "d45c5740946b2a147f59262ee6f5bc90bd01ed280528b62b3aed5fc93f06f739b329f479a2bbd0a5c384ee1493b1f5186a87139cac5df4087c134b49156847db".into(),
        "012ba3a8be6b94d5ec80a6d9d1190a436effe50d85a1eee859b8cc6af9bd5c2e1800b329f479a2bbd0a5c384ee1493b1f5186a87139cac5df4087c134b49156847db".into(),
        "d45c5741946b2a137f59262ee6f5bc91001af27a5e1117a64733950642a3d1e8b329f479a2bbd0a5c384ee1493b1f5186a87139cac5df4087c134b49156847db".into(),
        "002ba3a8be6b94d5ec80a6d9d1190a436effe50d85a1eee859b8cc6af9bd5c2e1801b329f478a2bbd0a6c384ee1493b1f518276e0e4a5375928d6fcd160c11cb6d2c".into(),
        "002ba3a8be6b94d5ec80a6d9d1190a436effe50d85a1eee859b8cc6af9bd5c2e1801b329f479a2bbd0a5c384ee1493b1f5186a87139cac5df4087c134b49156847db".into(),
        "2ba3a8be6b94d5ec80a6d9d1190a436effe50d85a1eee859b8cc6af9bd5c2e184cd60b865d442f5a3c7b11eb6c4e0ae79578ec6353a20bf783ecb4b6ea97b825".into(),
    ];
    // tcId 9-36: every pairing of the special values for r and s.
    for r in [zero.as_str(), one, n, n_minus_1] {
        for s in [zero.as_str(), one, n, n_minus_1, n_plus_1, p, p_plus_1] {
            invalid.push(format!("{r}{s}"));
        }
    }
    assert!(invalid.len() >= 35);
    for (i, sig) in invalid.iter().enumerate() {
        assert_eq!(
            key.verify(Alg::Es256, &msg, &hex(sig)),
            Err(JwtError::BadSignature),
            "vector {i}: {sig}"
        );
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn jwk_rules() {
    assert!(
        VerifyKey::from_jwk(&json!({"kty": "EC", "crv": "P-256K", "x": "AA", "y": "AA"})).is_err()
    );
    assert!(
        VerifyKey::from_jwk(&json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"})).is_err(),
        "short RSA"
    );
    assert!(VerifyKey::from_jwk(&json!({"kty": "oct", "k": "AA"})).is_err());
    assert!(VerifyKey::from_jwk(&json!("nope")).is_err());
    assert!(
        VerifyKey::from_jwk(&json!({"kty": "EC", "crv": "P-256", "x": "!!", "y": "AA"})).is_err()
    );
}
