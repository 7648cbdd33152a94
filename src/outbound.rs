//! AgentGate's own outbound HTTPS calls (token endpoints, CIBA, webhooks): the client
//! (our TLS roots, no proxy, no redirects, every call bounded), which endpoints a secret
//! may travel to, OAuth client authentication, and errors that never carry a secret.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Why a call to a token endpoint (or revocation, CIBA) failed. Never holds a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("{what} did not answer within {0:?}", what = "the token endpoint")]
    Timeout(Duration),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status}{detail}")]
    Refused {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url} answered something that is not a token response: {reason}")]
    Garbage { url: String, reason: String },
    #[error("{url} returned a token that is already expired (expires_in {expires_in})")]
    Expired { url: String, expires_in: i64 },
    #[error("{0}")]
    Setup(String),
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

/// A client for calls AgentGate makes itself (token endpoints, CIBA, webhooks): our TLS
/// roots, no proxy, no redirects (a secret must not follow one), every call bounded.
pub fn http_client(tls: rustls::ClientConfig, timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("agentgate/", env!("CARGO_PKG_VERSION")))
}

/// Refuses endpoints a secret must not be sent to: anything but https, except loopback http.
pub fn check_endpoint(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let loopback = parsed.host_str().is_some_and(|h| {
        h == "localhost"
            || h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "`{url}` must use https (http is accepted only on loopback): client secrets and tokens travel to it"
        )),
    }
}

/// Authenticates an OAuth client on a form request (`client_secret_basic` or `_post`).
pub fn client_auth<'a>(
    req: reqwest::RequestBuilder,
    auth: ClientAuth,
    client_id: &'a str,
    secret: &'a Secret,
    mut form: Vec<(&'a str, &'a str)>,
) -> reqwest::RequestBuilder {
    match auth {
        ClientAuth::ClientSecretBasic => {
            // RFC 6749 §2.3.1: both parts form-urlencoded before Basic encoding.
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            req.basic_auth(enc(client_id), Some(enc(secret.expose())))
                .form(&form)
        }
        ClientAuth::ClientSecretPost => {
            form.push(("client_id", client_id));
            form.push(("client_secret", secret.expose()));
            req.form(&form)
        }
    }
}

/// A client secret from the environment variable `env`, or else the (0600) file `file`;
/// trimmed.
pub fn load_secret(env: &str, file: &std::path::Path) -> Result<Secret, String> {
    let value = if !env.is_empty() {
        std::env::var(env).map_err(|_| {
            format!("client_secret_env names {env}, which is not set; export it before starting")
        })?
    } else {
        let bytes = crate::state::read_private(file).map_err(|e| e.to_string())?;
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", file.display()))?
    };
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err("the client secret is empty".into());
    }
    Ok(Secret::new(value))
}

/// `timeout` is the client's own bound (e.g. `vault.fetch_timeout`), named when it fired.
pub fn unreachable(url: &str, e: &reqwest::Error, timeout: Duration) -> FetchError {
    if e.is_timeout() {
        return FetchError::Timeout(timeout);
    }
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    FetchError::Unreachable {
        url: url.to_owned(),
        reason,
    }
}

/// An error answer: the OAuth `error` / `error_description` when there is one (they never
/// hold secrets), otherwise just the status.
pub fn refused(url: &str, status: u16, answer: &[u8]) -> FetchError {
    let v: serde_json::Value = serde_json::from_slice(answer).unwrap_or_default();
    let field = |k: &str| {
        v[k].as_str()
            .map(|s| s.chars().take(200).collect::<String>())
    };
    let detail = match (
        field("error"),
        field("error_description").or(field("message")),
    ) {
        (Some(e), Some(d)) => format!(": {e} ({d})"),
        (Some(e), None) | (None, Some(e)) => format!(": {e}"),
        (None, None) => String::new(),
    };
    FetchError::Refused {
        url: url.to_owned(),
        status,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_cleartext_endpoints_off_loopback() {
        assert!(check_endpoint("https://oauth2.googleapis.com/token").is_ok());
        assert!(check_endpoint("http://127.0.0.1:9/token").is_ok());
        assert!(check_endpoint("http://[::1]:9/token").is_ok());
        assert!(check_endpoint("http://oauth.example/token").is_err());
        assert!(check_endpoint("ftp://127.0.0.1/x").is_err());
    }

    #[test]
    fn error_answers_keep_only_the_oauth_error() {
        let e = refused(
            "u",
            400,
            br#"{"error":"invalid_grant","error_description":"grant consumed","refresh_token":"rt_secret"}"#,
        );
        let s = e.to_string();
        assert!(s.contains("invalid_grant (grant consumed)"), "{s}");
        assert!(!s.contains("rt_secret"));
    }
}
