//! Gate 1 — Identity: who is calling. Reads the JWT-SVID from `Proxy-Authorization`
//! (`Bearer <jwt>`, or `Basic base64(<name>:<jwt>)` as clients send for a proxy URL with
//! credentials) and turns it into a [`Caller`], or a refusal: `407` when the credential is
//! missing or invalid (the body says precisely why), `403` when it is revoked.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use http::{HeaderMap, StatusCode, header};

use crate::error::{Denial, Gate};
use crate::identity::{Caller, Identity, IdentityError};

/// What a request offers as proof of who sent it.
pub enum Claim<'a> {
    /// Its own `Proxy-Authorization` (a `CONNECT`, or a plain `http://` request).
    Credential(&'a HeaderMap),
    /// The caller verified when its tunnel was opened (or before it waited for consent):
    /// still live, unless revoked or expired since.
    Verified(&'a Arc<Caller>),
    /// No credential of its own: the pod's traffic (the transparent listener, or loopback
    /// with `pod.loopback_is_pod`), verified with the pod's token.
    Pod,
}

impl<'a> Claim<'a> {
    /// What an explicit-proxy request offers: its `Proxy-Authorization`, or — with
    /// `loopback_is_pod`, from loopback and without one — the pod's identity.
    pub fn of_request(headers: &'a HeaderMap, from_loopback: bool, loopback_is_pod: bool) -> Self {
        if loopback_is_pod && from_loopback && !headers.contains_key(header::PROXY_AUTHORIZATION) {
            Claim::Pod
        } else {
            Claim::Credential(headers)
        }
    }
}

/// Verifies who is calling.
pub fn verify(identity: &Identity, claim: Claim<'_>) -> Result<Arc<Caller>, Denial> {
    if identity.fleet().stale() {
        // Revocations made elsewhere may be missing here: judge nobody.
        return Err(Denial::new(
            Gate::Identity,
            StatusCode::SERVICE_UNAVAILABLE,
            "fleet_unavailable",
            "the fleet's bus has been unreachable for longer than fleet.max_staleness; revocations made elsewhere may be missing, so no request is judged until it is back",
        ));
    }
    match claim {
        Claim::Credential(headers) => {
            let token = credential(headers)?;
            identity.authenticate(&token).map_err(refusal)
        }
        Claim::Verified(caller) => identity
            .recheck(caller)
            .map(|()| caller.clone())
            .map_err(refusal),
        Claim::Pod => match identity.authenticate_pod() {
            Some(verified) => verified.map_err(refusal),
            None => Err(Denial::new(
                Gate::Identity,
                StatusCode::SERVICE_UNAVAILABLE,
                "pod_identity_unavailable",
                "the pod's own identity token is not available yet (pod.agent, or the SPIFFE Workload API); retry shortly",
            )),
        },
    }
}

/// The token from `Proxy-Authorization`; never echoed in a refusal.
fn credential(headers: &HeaderMap) -> Result<Cow<'_, str>, Denial> {
    let mut values = headers.get_all(header::PROXY_AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Denial::new(
            Gate::Identity,
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "proxy_auth_required",
            "no agent identity: send Proxy-Authorization with a JWT-SVID (run the agent with `agentgate exec --agent NAME -- CMD`)",
        ));
    };
    if values.next().is_some() {
        return Err(invalid("more than one Proxy-Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| invalid("Proxy-Authorization is not ASCII"))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(invalid("Bearer credential is empty"));
        }
        return Ok(Cow::Borrowed(rest));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(invalid(
            "unsupported Proxy-Authorization scheme; use Bearer <jwt> or Basic <name>:<jwt>",
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| invalid("Basic credential is not base64 of <name>:<jwt>"))?;
    let Some((user, password)) = decoded.split_once(':') else {
        return Err(invalid("Basic credential is not <name>:<jwt>"));
    };
    // The name is informational; the token alone says who the caller is. Some clients
    // put a lone credential in the user part (`http://<jwt>@host`).
    let token = if password.is_empty() { user } else { password };
    if token.is_empty() {
        return Err(invalid("Basic credential carries no token"));
    }
    Ok(Cow::Owned(token.to_owned()))
}

fn invalid(reason: impl Into<Cow<'static, str>>) -> Denial {
    Denial::new(
        Gate::Identity,
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "invalid_identity",
        reason,
    )
}

fn refusal(e: IdentityError) -> Denial {
    match e {
        IdentityError::Invalid(e) => invalid(e.to_string()),
        revoked => Denial::new(
            Gate::Identity,
            StatusCode::FORBIDDEN,
            "identity_revoked",
            revoked.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::PROXY_AUTHORIZATION,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn basic(s: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }

    #[test]
    fn reads_bearer_and_basic() {
        assert_eq!(credential(&headers(&["Bearer a.b.c"])).unwrap(), "a.b.c");
        assert_eq!(credential(&headers(&["bearer   a.b.c "])).unwrap(), "a.b.c");
        assert_eq!(
            credential(&headers(&[&basic("bot:a.b.c")])).unwrap(),
            "a.b.c"
        );
        assert_eq!(credential(&headers(&[&basic("a.b.c:")])).unwrap(), "a.b.c");
    }

    #[test]
    fn refuses_missing_and_malformed_credentials() {
        let missing = credential(&HeaderMap::new()).unwrap_err();
        assert_eq!(missing.status, 407);
        assert_eq!(missing.error, "proxy_auth_required");
        for bad in [
            vec!["Bearer"],
            vec!["Digest x"],
            vec!["Basic !!!notbase64"],
            vec![basic("no-colon").as_str()],
            vec![basic(":").as_str()],
            vec!["Bearer a.b.c", "Bearer d.e.f"],
        ] {
            let d = credential(&headers(&bad)).unwrap_err();
            assert_eq!(
                (d.status.as_u16(), d.error),
                (407, "invalid_identity"),
                "{bad:?}"
            );
        }
        // Non-UTF-8 bytes after base64 decoding.
        let raw = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode([0xff, b':', 0xfe])
        );
        assert_eq!(
            credential(&headers(&[&raw])).unwrap_err().error,
            "invalid_identity"
        );
    }

    #[test]
    fn revocation_is_403_and_never_quotes_the_token() {
        let d = refusal(IdentityError::AgentRevoked("spiffe://t/agent/x".into()));
        assert_eq!(d.status, 403);
        let d = refusal(IdentityError::Invalid(
            crate::identity::jwt::JwtError::BadSignature,
        ));
        assert_eq!(d.status, 407);
        assert!(!d.reason.contains("eyJ"));
    }
}
