//! Calls to token endpoints: OAuth refresh, Auth0 Token Vault exchange, GitHub App
//! installation tokens, and revocation. One HTTP client (rustls with the upstream roots,
//! `upstream.resolve` honoured, no redirects); every call bounded by `vault.fetch_timeout`
//! and every answer bounded in size. Errors never carry a secret.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use super::config::{ClientConfig, VaultConfig};
use super::error::VaultError;
use crate::outbound::{
    ClientAuth, FetchError, client_auth, http_client, load_secret, refused, unreachable,
};
use crate::secret::Secret;

/// Largest token-endpoint answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// Auth0's federated connection token exchange.
pub const AUTH0_GRANT: &str =
    "urn:auth0:params:oauth:grant-type:token-exchange:federated-connection-access-token";
const REFRESH_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:refresh_token";
const FEDERATED_TOKEN_TYPE: &str =
    "http://auth0.com/oauth/token-type/federated-connection-access-token";

/// What a token endpoint handed out.
#[derive(Debug)]
pub struct Obtained {
    pub token: Secret,
    /// Seconds from now; `None` when the endpoint did not say.
    pub expires_in: Option<i64>,
    /// A rotated refresh token, to be stored before the access token is used.
    pub refresh_token: Option<Secret>,
}

/// A configured OAuth client, with its secret loaded.
struct Client {
    token_url: String,
    revoke_url: Option<String>,
    client_id: String,
    secret: Secret,
    auth: ClientAuth,
}

/// The vault's HTTP side.
pub struct Fetcher {
    http: reqwest::Client,
    timeout: Duration,
    providers: HashMap<String, Client>,
    auth0: Option<Client>,
}

impl Fetcher {
    /// Builds the client (with `upstream.resolve`'s pinned addresses) and loads every
    /// configured client secret (a missing one is a startup error naming the variable or
    /// file).
    pub fn new(
        vault: &VaultConfig,
        resolve: &BTreeMap<String, SocketAddr>,
        tls: rustls::ClientConfig,
    ) -> Result<Fetcher, VaultError> {
        let setup = |reason: String| VaultError::Config {
            key: "providers".into(),
            reason,
        };
        let mut builder = http_client(tls, vault.fetch_timeout);
        for (host_port, addr) in resolve {
            if let Some((host, _)) = crate::authority::split_host_port(host_port) {
                builder = builder.resolve(host, *addr);
            }
        }
        let http = builder.build().map_err(|e| setup(e.to_string()))?;
        let load = |key: String, c: &ClientConfig| -> Result<Client, VaultError> {
            Ok(Client {
                token_url: c.token_endpoint(),
                revoke_url: c.revoke_endpoint(),
                client_id: c.client_id.clone(),
                secret: client_secret(c).map_err(|reason| VaultError::Config {
                    key: key.clone(),
                    reason,
                })?,
                auth: c.client_auth,
            })
        };
        let providers = vault
            .providers
            .iter()
            .map(|(n, c)| Ok((n.clone(), load(format!("providers.{n}"), c)?)))
            .collect::<Result<_, VaultError>>()?;
        let auth0 = vault
            .auth0
            .as_ref()
            .map(|c| load("auth0".into(), c))
            .transpose()?;
        Ok(Fetcher {
            http,
            timeout: vault.fetch_timeout,
            providers,
            auth0,
        })
    }

    /// OAuth refresh grant at `provider`'s token endpoint.
    pub async fn refresh(
        &self,
        provider: &str,
        refresh_token: &Secret,
        scopes: &[String],
    ) -> Result<Obtained, FetchError> {
        let client = self.providers.get(provider).ok_or_else(|| {
            FetchError::Setup(format!(
                "no [vault.providers.{provider}] in the config; add its token_url, client_id and client secret"
            ))
        })?;
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        let scope = scopes.join(" ");
        if !scope.is_empty() {
            form.push(("scope", &scope));
        }
        self.token_call(client, form).await
    }

    /// Auth0 Token Vault: exchanges the user's Auth0 refresh token for the federated
    /// connection's access token, down-scoped to `scopes` when given.
    pub async fn exchange(
        &self,
        connection: &str,
        refresh_token: &Secret,
        scopes: &[String],
    ) -> Result<Obtained, FetchError> {
        let client = self.auth0.as_ref().ok_or_else(|| {
            FetchError::Setup(
                "no [vault.auth0] in the config; add domain, client_id and the client secret"
                    .into(),
            )
        })?;
        let mut form = vec![
            ("grant_type", AUTH0_GRANT),
            ("subject_token", refresh_token.expose()),
            ("subject_token_type", REFRESH_TOKEN_TYPE),
            ("requested_token_type", FEDERATED_TOKEN_TYPE),
            ("connection", connection),
        ];
        let scope = scopes.join(" ");
        if !scope.is_empty() {
            form.push(("scope", &scope));
        }
        let got = self.token_call(client, form).await?;
        // Auth0 Token Vault does not rotate here; a refresh token in the answer is ignored.
        Ok(Obtained {
            refresh_token: None,
            ..got
        })
    }

    /// A GitHub App installation token, limited to `repositories` and `permissions`.
    pub async fn github_installation(
        &self,
        api_url: &str,
        app_id: u64,
        installation_id: u64,
        private_key: &Secret,
        repositories: &[String],
        permissions: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Obtained, FetchError> {
        let jwt =
            github_app_jwt(app_id, private_key, crate::clock::now()).map_err(FetchError::Setup)?;
        let url = format!(
            "{}/app/installations/{installation_id}/access_tokens",
            api_url.trim_end_matches('/')
        );
        let mut body = serde_json::Map::new();
        if !repositories.is_empty() {
            body.insert("repositories".into(), repositories.into());
        }
        if !permissions.is_empty() {
            body.insert("permissions".into(), permissions.clone().into());
        }
        let req = self
            .http
            .post(&url)
            .bearer_auth(jwt)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .json(&body);
        let (status, answer) = self.send(&url, req).await?;
        if !(200..300).contains(&status) {
            return Err(refused(&url, status, &answer));
        }
        let v: serde_json::Value = serde_json::from_slice(&answer).map_err(|e| garbage(&url, e))?;
        let token = v["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| garbage(&url, "no \"token\""))?;
        let expires_in = match v["expires_at"].as_str() {
            Some(at) => Some(
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| garbage(&url, e))?
                    .unix_timestamp()
                    - crate::clock::now(),
            ),
            None => None,
        };
        check_fresh(&url, expires_in)?;
        Ok(Obtained {
            token: Secret::new(token.to_owned()),
            expires_in,
            refresh_token: None,
        })
    }

    /// RFC 7009 revocation at `provider` (or Auth0 when `provider` is `None`). `Ok(false)`
    /// when that client has no revocation endpoint.
    pub async fn revoke(
        &self,
        provider: Option<&str>,
        token: &Secret,
        hint: &str,
    ) -> Result<bool, FetchError> {
        let client = match provider {
            Some(p) => self.providers.get(p),
            None => self.auth0.as_ref(),
        };
        let Some(client) = client else {
            return Ok(false);
        };
        let Some(url) = &client.revoke_url else {
            return Ok(false);
        };
        let form = vec![("token", token.expose()), ("token_type_hint", hint)];
        let req = authenticate(self.http.post(url), client, form);
        let (status, answer) = self.send(url, req).await?;
        if (200..300).contains(&status) {
            Ok(true)
        } else {
            Err(refused(url, status, &answer))
        }
    }

    /// Revokes a GitHub App installation token (`DELETE /installation/token`).
    pub async fn revoke_github_installation(
        &self,
        api_url: &str,
        token: &Secret,
    ) -> Result<(), FetchError> {
        let url = format!("{}/installation/token", api_url.trim_end_matches('/'));
        let req = self
            .http
            .delete(&url)
            .bearer_auth(token.expose())
            .header("accept", "application/vnd.github+json");
        let (status, answer) = self.send(&url, req).await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(refused(&url, status, &answer))
        }
    }

    async fn token_call<'a>(
        &self,
        client: &'a Client,
        form: Vec<(&'a str, &'a str)>,
    ) -> Result<Obtained, FetchError> {
        let url = &client.token_url;
        let req =
            authenticate(self.http.post(url), client, form).header("accept", "application/json");
        let (status, answer) = self.send(url, req).await?;
        if !(200..300).contains(&status) {
            return Err(refused(url, status, &answer));
        }
        let v: serde_json::Value = serde_json::from_slice(&answer).map_err(|e| garbage(url, e))?;
        let token = v["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| garbage(url, "no \"access_token\""))?;
        let expires_in = match &v["expires_in"] {
            serde_json::Value::Null => None,
            n => Some(
                n.as_i64()
                    .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| garbage(url, "\"expires_in\" is not a number"))?,
            ),
        };
        check_fresh(url, expires_in)?;
        let refresh_token = v["refresh_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(|t| Secret::new(t.to_owned()));
        Ok(Obtained {
            token: Secret::new(token.to_owned()),
            expires_in,
            refresh_token,
        })
    }

    /// Sends `req` and reads at most [`MAX_ANSWER`] bytes of the answer.
    async fn send(
        &self,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), FetchError> {
        let call = async {
            let mut resp = req
                .send()
                .await
                .map_err(|e| unreachable(url, &e, self.timeout))?;
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| unreachable(url, &e, self.timeout))?
            {
                if body.len() + chunk.len() > MAX_ANSWER {
                    return Err(garbage(
                        url,
                        format!("answer longer than {MAX_ANSWER} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| FetchError::Timeout(self.timeout))?
    }
}

fn authenticate<'a>(
    req: reqwest::RequestBuilder,
    client: &'a Client,
    form: Vec<(&'a str, &'a str)>,
) -> reqwest::RequestBuilder {
    client_auth(req, client.auth, &client.client_id, &client.secret, form)
}

fn check_fresh(url: &str, expires_in: Option<i64>) -> Result<(), FetchError> {
    match expires_in {
        Some(s) if s <= 0 => Err(FetchError::Expired {
            url: url.to_owned(),
            expires_in: s,
        }),
        _ => Ok(()),
    }
}

fn garbage(url: &str, e: impl std::fmt::Display) -> FetchError {
    FetchError::Garbage {
        url: url.to_owned(),
        reason: e.to_string(),
    }
}

/// The client secret from its variable or file.
fn client_secret(c: &ClientConfig) -> Result<Secret, String> {
    load_secret(&c.client_secret_env, &c.client_secret_file)
}

/// Checks that `pem` is an RSA private key GitHub Apps sign with.
pub fn check_github_app_key(pem: &Secret) -> Result<(), String> {
    rsa_key(pem).map(drop)
}

fn rsa_key(pem: &Secret) -> Result<RsaKeyPair, String> {
    let der = PrivateKeyDer::from_pem_slice(pem.expose().as_bytes())
        .map_err(|e| format!("the GitHub App private key is not a PEM private key: {e}"))?;
    match der {
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        _ => return Err("the GitHub App private key must be an RSA key (PKCS#1 or PKCS#8)".into()),
    }
    .map_err(|e| format!("the GitHub App private key is unusable: {e}"))
}

/// The App's JWT (RS256): `iss` = app id, issued a minute ago for clock drift, 9 minutes
/// left (GitHub allows at most 10).
pub fn github_app_jwt(app_id: u64, pem: &Secret, now: i64) -> Result<String, String> {
    let key = rsa_key(pem)?;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = serde_json::json!({"iss": app_id.to_string(), "iat": now - 60, "exp": now + 540});
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{claims}");
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| "signing the GitHub App JWT failed".to_owned())?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_github_app_jwts() {
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .unwrap()
            .serialize_pem();
        let jwt = github_app_jwt(42, &Secret::new(pem), 1_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "42");
        assert_eq!(claims["exp"], 1_000_540);
        assert!(check_github_app_key(&Secret::new("not a key".into())).is_err());
    }
}
