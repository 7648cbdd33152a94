//! The OAuth/OIDC provider fixture (`tests/support/oidc_provider.mjs`) on its own,
//! without the proxy: refresh-token rotation and reuse detection, the Auth0
//! federated exchange, RFC 7009 revocation, and the token-endpoint faults the
//! token-gate tests rely on.

use crate::support::oidc::{
    CLIENT_ID, CLIENT_SECRET, GRANT_EXCHANGE, OidcProvider, POST_CLIENT_ID, TOKEN_TYPE_FEDERATED,
    TOKEN_TYPE_REFRESH,
};
use crate::support::raw::RawResponse;
use std::time::{Duration, Instant};

const BASIC: Option<(&str, &str)> = Some((CLIENT_ID, CLIENT_SECRET));

async fn refresh(op: &OidcProvider, refresh_token: &str) -> RawResponse {
    op.post_form(
        "/token",
        BASIC,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// The federated exchange as `client_secret_post` client `agentgate-post`.
async fn exchange(op: &OidcProvider, subject_token: &str, connection: &str) -> RawResponse {
    op.post_form(
        "/token",
        None,
        &[
            ("grant_type", GRANT_EXCHANGE),
            ("subject_token", subject_token),
            ("subject_token_type", TOKEN_TYPE_REFRESH),
            ("requested_token_type", TOKEN_TYPE_FEDERATED),
            ("connection", connection),
            ("scope", "repo read:user"),
            ("login_hint", "alice@example.com"),
            ("client_id", POST_CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_rotates_refresh_tokens_and_detects_reuse() {
    let op = OidcProvider::start(120).await;
    assert_eq!(op.token_url(), format!("{}/token", op.url));
    let rt = op.refresh_token("alice", CLIENT_ID).await;
    assert!(op.active(&rt).await);

    let resp = refresh(&op, &rt).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body = resp.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 120);
    let access = body["access_token"].as_str().expect("access_token");
    let rotated = body["refresh_token"].as_str().expect("refresh_token");
    assert_ne!(rotated, rt, "refresh token was not rotated");
    assert!(op.active(access).await);
    assert!(
        !op.active(&rt).await,
        "the consumed refresh token is active"
    );
    assert!(op.active(rotated).await);

    // Reuse of the consumed token: invalid_grant, and the whole grant is revoked.
    let reuse = refresh(&op, &rt).await;
    assert_eq!(reuse.status, 400, "{}", reuse.text());
    assert_eq!(reuse.json()["error"], "invalid_grant");
    assert!(!op.active(rotated).await, "reuse did not revoke the grant");
    assert!(!op.active(access).await, "reuse did not revoke the grant");

    // The other client cannot use alice's token; a token minted for it works with client_secret_post.
    let other = op.refresh_token("bob", POST_CLIENT_ID).await;
    let resp = refresh(&op, &other).await;
    assert_eq!(resp.json()["error"], "invalid_grant", "{}", resp.text());
    let resp = op
        .post_form(
            "/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &other),
                ("client_id", POST_CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    let stats = op.stats().await;
    assert_eq!(stats["refresh_grants"], 2, "{stats}");
    assert_eq!(stats["refresh_failures"], 2, "{stats}");
    assert_eq!(stats["token_requests"], 4, "{stats}");
    let issued = stats["issued_access_tokens"].as_array().expect("issued");
    assert_eq!(issued.len(), 2, "{stats}");
    assert_eq!(issued[0], access);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_federated_exchange() {
    let op = OidcProvider::start(3600).await;
    let rt = op.refresh_token("alice", POST_CLIENT_ID).await;

    let resp = exchange(&op, &rt, "github").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body = resp.json();
    let token = body["access_token"].as_str().expect("access_token");
    assert!(token.starts_with("fed_github_"), "{body}");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "repo read:user");
    assert_eq!(body["issued_token_type"], TOKEN_TYPE_FEDERATED);
    assert_eq!(body["token_type"], "Bearer");
    // Not rotated: the subject token still works, again and again.
    assert!(op.active(&rt).await);
    let again = exchange(&op, &rt, "github").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_ne!(again.json()["access_token"], token);

    // Missing connection: invalid_request; unknown subject token: 401 invalid_grant.
    let resp = op
        .post_form(
            "/token",
            None,
            &[
                ("grant_type", GRANT_EXCHANGE),
                ("subject_token", &rt),
                ("subject_token_type", TOKEN_TYPE_REFRESH),
                ("requested_token_type", TOKEN_TYPE_FEDERATED),
                ("client_id", POST_CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
        )
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.json()["error"], "invalid_request");
    let resp = exchange(&op, "not-a-token", "github").await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_eq!(resp.json()["error"], "invalid_grant");

    // Revoking the subject token (what PANIC does) ends further exchanges.
    let resp = op
        .post_form(
            "/token/revocation",
            None,
            &[
                ("token", &rt),
                ("token_type_hint", "refresh_token"),
                ("client_id", POST_CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(!op.active(&rt).await);
    let resp = exchange(&op, &rt, "github").await;
    assert_eq!(resp.status, 401, "{}", resp.text());

    let stats = op.stats().await;
    assert_eq!(stats["exchanges"], 2, "{stats}");
    let requests = stats["exchange_requests"].as_array().expect("requests");
    assert_eq!(requests.len(), 5, "{stats}");
    assert_eq!(requests[0]["connection"], "github");
    assert_eq!(requests[0]["scope"], "repo read:user");
    assert_eq!(requests[0]["login_hint"], "alice@example.com");
    assert_eq!(stats["revocations"][0]["token"], rt.as_str());
    assert_eq!(stats["revocations"][0]["token_type_hint"], "refresh_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_revocation() {
    let op = OidcProvider::start(3600).await;
    let rt = op.refresh_token("alice", CLIENT_ID).await;
    let resp = refresh(&op, &rt).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let access = resp.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    assert!(op.active(&access).await);

    let revoke = |token: String, hint: &'static str| {
        let op = &op;
        async move {
            op.post_form(
                "/token/revocation",
                BASIC,
                &[("token", &token), ("token_type_hint", hint)],
            )
            .await
        }
    };
    let resp = revoke(access.clone(), "access_token").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(
        !op.active(&access).await,
        "revoked access token still active"
    );

    // fed_ tokens are revocable at the same endpoint.
    let rt = op.refresh_token("alice", POST_CLIENT_ID).await;
    let fed = exchange(&op, &rt, "google-oauth2").await.json()["access_token"]
        .as_str()
        .expect("fed token")
        .to_owned();
    assert!(op.active(&fed).await);
    let resp = revoke(fed.clone(), "access_token").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(!op.active(&fed).await, "revoked fed_ token still active");

    // Without client authentication nothing is revoked (and the call is still recorded).
    let rt = op.refresh_token("carol", CLIENT_ID).await;
    let resp = op
        .post_form("/token/revocation", None, &[("token", &rt)])
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(op.active(&rt).await);

    let stats = op.stats().await;
    let revocations = stats["revocations"].as_array().expect("revocations");
    assert_eq!(revocations.len(), 3, "{stats}");
    assert_eq!(revocations[0]["token"], access.as_str());
    assert_eq!(revocations[0]["token_type_hint"], "access_token");
    assert_eq!(revocations[1]["token"], fed.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_token_endpoint_faults() {
    let op = OidcProvider::start(3600).await;
    let rt = op.refresh_token("alice", CLIENT_ID).await;

    op.fault(Some("down"), 0).await;
    let resp = refresh(&op, &rt).await;
    assert_eq!(resp.status, 503);
    assert!(resp.body.is_empty(), "{}", resp.text());

    op.fault(Some("garbage"), 0).await;
    let resp = refresh(&op, &rt).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "not json{");

    op.fault(Some("expired"), 0).await;
    let resp = refresh(&op, &rt).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body = resp.json();
    assert_eq!(body["expires_in"], 0, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        op.active(&rt).await,
        "a fault must not consume the refresh token"
    );

    op.fault(Some("slow"), 1500).await;
    let started = Instant::now();
    let resp = refresh(&op, &rt).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "slow fault answered after {:?}",
        started.elapsed()
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let rotated = resp.json()["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();

    op.fault(None, 0).await;
    let started = Instant::now();
    let resp = refresh(&op, &rotated).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(started.elapsed() < Duration::from_millis(1400));

    let stats = op.stats().await;
    assert_eq!(stats["token_requests"], 5, "{stats}");
    assert_eq!(stats["refresh_grants"], 2, "{stats}");
    assert_eq!(stats["refresh_failures"], 0, "{stats}");
    // Faked answers are not issued tokens.
    assert_eq!(
        stats["issued_access_tokens"].as_array().map(Vec::len),
        Some(2),
        "{stats}"
    );
}
