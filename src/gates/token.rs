//! Gate 5 — Token: only after every other gate passed, the credential for the request's
//! origin is taken from the vault (a grant for this decision) and injected; the agent's own
//! `Authorization`, `Proxy-Authorization` and `Cookie` never travel. An `agw_` reference the
//! agent sends is checked and swapped. Which connection applies is decided by the exact
//! origin (host and port over TLS), so a redirect elsewhere is a new request that never
//! carries this origin's credential; the one exception is an origin another one serves by
//! design (github.com, git over HTTPS, takes api.github.com's token as
//! `Basic x-access-token:<token>`: [`crate::vault::served_by`]).

use std::sync::Arc;

use aws_lc_rs::digest::{Context, SHA256};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

use super::consent::Consent;
use super::policy::Verdict;
use crate::body::Redact;
use crate::error::{Denial, Gate};
use crate::identity::Caller;
use crate::intent::Tuple;
use crate::vault::grant::{TokenError, Want};
use crate::vault::references::PREFIX;
use crate::vault::{Form, Grant, Vault, form_at};

/// What the token gate puts in the request: the agent's own credentials always go, and the
/// credential granted for this decision, when a vault connection serves the origin.
#[derive(Clone)]
pub struct Injection {
    issued: Option<Issued>,
}

/// A credential granted for one decision, in the form its origin takes.
#[derive(Clone)]
pub struct Issued {
    pub grant: Arc<Grant>,
    /// An `agw_` reference from the agent was swapped for it.
    pub reference: bool,
    /// The `Authorization` value: the credential in the form the origin takes.
    header: HeaderValue,
    form: Form,
}

impl Injection {
    /// The credential injected, if any.
    pub fn issued(&self) -> Option<&Issued> {
        self.issued.as_ref()
    }

    /// Removes the agent's own credentials and injects the granted one. Runs after
    /// hop-by-hop removal, so `Connection: authorization` cannot strip what is injected.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.remove(header::AUTHORIZATION);
        headers.remove(header::PROXY_AUTHORIZATION);
        headers.remove(header::COOKIE);
        if let Some(i) = &self.issued {
            headers.insert(header::AUTHORIZATION, i.header.clone());
            // An uncompressed answer can be scanned for echoes of the credential.
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
    }
}

impl Issued {
    /// A scanner masking the credential in the response: the token itself and, when it
    /// was sent encoded (Basic), the encoded form, which gives the token back when decoded.
    pub fn redactor(&self) -> Redact {
        let token = self.grant.credential.token().as_bytes();
        match self.form {
            Form::Scheme => Redact::new(token),
            Form::Basic { .. } => {
                let encoded = self.header.as_bytes();
                let encoded = encoded.strip_prefix(b"Basic ").unwrap_or(encoded);
                Redact::any_of(&[token, encoded])
            }
        }
    }
}

/// Issues the credential for this request, granted to this decision (`verdict`, and the
/// `consent` it needed). `origin` is `None` for cleartext requests, which never get one; an
/// origin no vault connection serves gets none either.
pub async fn issue(
    vault: &Arc<Vault>,
    caller: &Caller,
    origin: Option<&str>,
    tuple: &Tuple,
    verdict: &Verdict,
    _consent: &Consent,
    headers: &HeaderMap,
) -> Result<Injection, Denial> {
    let scopes = &verdict.decision.scopes;
    let presented = reference_in(headers);
    let connection = origin
        .and_then(|o| vault.connection_for(caller.tenant.as_deref(), o, caller.owner.as_deref()));
    let Some(connection) = connection else {
        return match presented {
            Some(_) => Err(reference_invalid(
                "no vault connection serves this origin (over TLS), so there is nothing to swap the agw_ reference for".into(),
            )),
            None => Ok(Injection { issued: None }),
        };
    };
    if let Some(r) = presented {
        vault
            .references
            .check(r, &caller.spiffe_id, &connection.service)
            .map_err(|e| reference_invalid(e.to_string()))?;
    }
    let repository = (&*tuple.resource_type == "github.repo").then_some(tuple.resource_id.as_str());
    let want = Want {
        agent: &caller.spiffe_id,
        scopes,
        repository,
        digest: digest(caller, tuple),
    };
    let grant = vault.grant(&connection, &want).await.map_err(unavailable)?;
    let form = origin.map_or(Form::Scheme, form_at);
    let header = grant.credential.header_in(form).map_err(unavailable)?;
    Ok(Injection {
        issued: Some(Issued {
            grant,
            reference: presented.is_some(),
            header,
            form,
        }),
    })
}

/// Masks echoes of the injected credential in response headers; returns how many.
pub fn redact_headers(headers: &mut HeaderMap, redact: &Redact) -> u64 {
    let mut count = 0;
    for value in headers.values_mut() {
        if !redact.occurs_in(value.as_bytes()) {
            continue;
        }
        let mut bytes = value.as_bytes().to_vec();
        count += redact.mask(&mut bytes);
        // Masking with '*' keeps a valid header value valid.
        if let Ok(masked) = HeaderValue::from_bytes(&bytes) {
            *value = masked;
        }
    }
    count
}

/// The `agw_…` reference in `Authorization`, if the agent sent one.
fn reference_in(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let token = value.split_once(' ').map_or(value, |(_, t)| t.trim());
    token.starts_with(PREFIX).then_some(token)
}

/// Digest of (agent, tuple) naming one decision's grant.
fn digest(caller: &Caller, tuple: &Tuple) -> [u8; 16] {
    let mut ctx = Context::new(&SHA256);
    for part in [
        caller.spiffe_id.as_bytes(),
        tuple.action.as_bytes(),
        tuple.resource_type.as_bytes(),
        tuple.resource_id.as_bytes(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&ctx.finish().as_ref()[..16]);
    out
}

fn reference_invalid(reason: String) -> Denial {
    Denial::new(
        Gate::Token,
        StatusCode::FORBIDDEN,
        "reference_invalid",
        reason,
    )
}

fn unavailable(e: TokenError) -> Denial {
    let (code, reason) = match &e {
        TokenError::Revoked(_) => ("credential_revoked", e.to_string()),
        _ => (
            "token_unavailable",
            format!("no credential could be obtained: {e}"),
        ),
    };
    Denial::new(Gate::Token, StatusCode::SERVICE_UNAVAILABLE, code, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_references_in_either_scheme() {
        let mut h = HeaderMap::new();
        assert_eq!(reference_in(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer agw_abc"),
        );
        assert_eq!(reference_in(&h), Some("agw_abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("token agw_abc"),
        );
        assert_eq!(reference_in(&h), Some("agw_abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer ghp_x"),
        );
        assert_eq!(reference_in(&h), None);
    }

    #[test]
    fn strips_agent_credentials_and_injects() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("token mine"),
        );
        h.insert(header::COOKIE, HeaderValue::from_static("session=1"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Bearer x"),
        );
        Injection { issued: None }.apply(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn masks_header_echoes() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-echo",
            HeaderValue::from_static("Bearer tok123 and tok123"),
        );
        let n = redact_headers(&mut h, &Redact::new(b"tok123"));
        assert_eq!(n, 2);
        assert_eq!(h["x-echo"], "Bearer ****** and ******");
    }
}
