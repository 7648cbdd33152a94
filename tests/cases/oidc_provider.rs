//! The OAuth/OIDC provider fixture (`tests/support/oidc_provider.mjs`) on its own,
//! without the proxy: refresh-token rotation and reuse detection, the Auth0
//! federated exchange, RFC 7009 revocation, the token-endpoint faults the
//! token-gate tests rely on, and CIBA (poll and ping) for the consent gate; plus
//! the webhook receiver (`tests/support/webhook.rs`).

use crate::support::certs::Pki;
use crate::support::oidc::{
    BACKCHANNEL_PATH, CIBA_CLIENT_ID, CIBA_POST_CLIENT_ID, CLIENT_ID, CLIENT_SECRET, CibaOptions,
    GRANT_CIBA, GRANT_EXCHANGE, OidcProvider, POST_CLIENT_ID, TOKEN_TYPE_FEDERATED,
    TOKEN_TYPE_REFRESH,
};
use crate::support::raw::{self, RawResponse};
use crate::support::webhook::{WebhookReceiver, sign_standard_webhook};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// A backchannel authentication request for `login_hint` with `binding_message`.
async fn bc_authorize(
    op: &OidcProvider,
    client_id: &str,
    login_hint: &str,
    binding_message: &str,
    extra: &[(&str, &str)],
) -> RawResponse {
    let mut form = vec![
        ("scope", "openid"),
        ("login_hint", login_hint),
        ("binding_message", binding_message),
    ];
    form.extend_from_slice(extra);
    op.backchannel_authorize(client_id, &form).await
}

/// The auth_req_id of a 200 backchannel authentication response.
fn auth_req_id(resp: &RawResponse) -> String {
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["auth_req_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no auth_req_id: {}", resp.text()))
        .to_owned()
}

fn error_of(resp: &RawResponse) -> String {
    resp.json()["error"].as_str().unwrap_or_default().to_owned()
}

async fn ciba_request(op: &OidcProvider, id: &str) -> Value {
    op.ciba_requests()
        .await
        .into_iter()
        .find(|r| r["auth_req_id"] == id)
        .unwrap_or_else(|| panic!("no CIBA request {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_ciba_poll_approve() {
    let op = OidcProvider::start_ciba("poll", None).await;

    // Discovery, as the proxy reads it.
    let resp = op
        .request(
            "GET",
            "/.well-known/openid-configuration",
            &[("accept", "application/json")],
            Vec::new(),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let meta = resp.json();
    assert_eq!(
        op.discovery_url(),
        format!("{}/.well-known/openid-configuration", op.issuer())
    );
    assert_eq!(meta["issuer"], op.issuer());
    assert_eq!(
        meta["backchannel_authentication_endpoint"],
        op.backchannel_url()
    );
    assert_eq!(meta["token_endpoint"], op.token_url());
    assert_eq!(
        meta["backchannel_token_delivery_modes_supported"],
        json!(["poll", "ping"])
    );
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .is_some_and(|g| g.contains(&json!(GRANT_CIBA))),
        "{meta}"
    );
    assert_eq!(
        meta["authorization_details_types_supported"],
        json!(["agentgate_action"])
    );

    // Auth0's login_hint form, RAR details and audience, as the proxy sends them.
    let hint =
        json!({"format": "iss_sub", "iss": format!("{}/", op.issuer()), "sub": "auth0|alice"})
            .to_string();
    let details = json!([{
        "type": "agentgate_action",
        "subject": {"type": "agent", "id": "spiffe://example.org/agent/a1"},
        "action": {"name": "github.repo.delete"},
        "resource": {"type": "repo", "id": "acme/widgets"},
    }]);
    let resp = bc_authorize(
        &op,
        CIBA_CLIENT_ID,
        &hint,
        "K7QX:github.repo.delete:acme.widgets",
        &[
            ("requested_expiry", "120"),
            ("authorization_details", &details.to_string()),
            ("audience", "https://api.agentgate.test"),
        ],
    )
    .await;
    let id = auth_req_id(&resp);
    let body = resp.json();
    assert_eq!(body["expires_in"], 120, "{body}");
    assert_eq!(body["interval"], 1, "{body}");

    let resp = op.ciba_poll(CIBA_CLIENT_ID, &id).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(error_of(&resp), "authorization_pending");

    let request = ciba_request(&op, &id).await;
    assert_eq!(request["status"], "pending", "{request}");
    assert_eq!(request["account"], "auth0|alice");
    assert_eq!(request["login_hint"], hint.as_str());
    assert_eq!(
        request["binding_message"],
        "K7QX:github.repo.delete:acme.widgets"
    );
    assert_eq!(request["requested_expiry"], "120");
    assert_eq!(request["scope"], "openid");
    assert_eq!(request["audience"], "https://api.agentgate.test");
    assert_eq!(request["authorization_details"], details);
    assert_eq!(request["client_id"], CIBA_CLIENT_ID);
    assert_eq!(request["client_auth"], "client_secret_basic");
    assert_eq!(request["polls"], 1);

    // The end-user approves on the device (by binding code).
    let reply = op.ciba_approve("K7QX").await;
    assert_eq!(reply["auth_req_id"], id.as_str(), "{reply}");
    assert_eq!(reply["status"], "approved");
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let resp = op.ciba_poll(CIBA_CLIENT_ID, &id).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let tokens = resp.json();
    assert!(
        tokens["access_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{tokens}"
    );
    assert!(
        tokens["id_token"].as_str().is_some_and(|t| !t.is_empty()),
        "{tokens}"
    );
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "openid");
    assert_eq!(tokens["authorization_details"], details);

    // auth_req_id is single-use; the answer cannot change.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let resp = op.ciba_poll(CIBA_CLIENT_ID, &id).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(error_of(&resp), "invalid_grant");
    let resp = op.ciba_answer(false, &id, None).await;
    assert_eq!(resp.status, 409, "{}", resp.text());
    assert_eq!(resp.json()["error"], "already_answered");

    let request = ciba_request(&op, &id).await;
    assert_eq!(request["status"], "approved", "{request}");
    assert_eq!(request["polls"], 3);
    assert_eq!(
        request["answers"],
        json!(["authorization_pending", "tokens", "invalid_grant"])
    );
    assert_eq!(request["slow_downs"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_ciba_deny_and_rejections() {
    let op = OidcProvider::start_ciba("poll", None).await;

    // client_secret_post client, plain login_hint, denied by auth_req_id.
    let id = auth_req_id(
        &bc_authorize(&op, CIBA_POST_CLIENT_ID, "bob", "Q2W3:slack.post:C123", &[]).await,
    );
    assert_eq!(
        ciba_request(&op, &id).await["client_auth"],
        "client_secret_post"
    );
    let reply = op.ciba_deny(&id, Some("not now")).await;
    assert_eq!(reply["status"], "denied", "{reply}");
    let resp = op.ciba_poll(CIBA_POST_CLIENT_ID, &id).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(error_of(&resp), "access_denied");
    assert_eq!(ciba_request(&op, &id).await["status"], "denied");
    let resp = op.ciba_answer(true, &id, None).await;
    assert_eq!(resp.status, 409, "{}", resp.text());
    let resp = op.ciba_answer(true, "ZZZZ", None).await;
    assert_eq!(resp.status, 404, "{}", resp.text());

    // Unknown end-users, either hint form.
    for hint in [
        "mallory".to_owned(),
        json!({"format": "iss_sub", "iss": format!("{}/", op.issuer()), "sub": "auth0|mallory"})
            .to_string(),
    ] {
        let resp = bc_authorize(&op, CIBA_CLIENT_ID, &hint, "AB12:x", &[]).await;
        assert_eq!(resp.status, 400, "{hint}: {}", resp.text());
        assert_eq!(error_of(&resp), "unknown_user_id", "{hint}");
    }

    // Binding messages Auth0 would refuse (the proxy must sanitize).
    let long = "A".repeat(65);
    for message in [
        "K7QX:github.repo.delete:acme/widgets",
        "K7QX github.repo.delete",
        "K7QX:déjà",
        long.as_str(),
        "",
    ] {
        let resp = bc_authorize(&op, CIBA_CLIENT_ID, "alice", message, &[]).await;
        assert_eq!(resp.status, 400, "{message:?}: {}", resp.text());
        assert_eq!(error_of(&resp), "invalid_binding_message", "{message:?}");
    }
    let resp = op
        .backchannel_authorize(
            CIBA_CLIENT_ID,
            &[("scope", "openid"), ("login_hint", "alice")],
        )
        .await;
    assert_eq!(
        error_of(&resp),
        "invalid_binding_message",
        "{}",
        resp.text()
    );
    // 64 characters of the allowed set pass.
    let max = format!("AB12:{}", "a+-_.,:#".repeat(8)[..59].to_owned());
    assert_eq!(max.len(), 64);
    auth_req_id(&bc_authorize(&op, CIBA_CLIENT_ID, "alice", &max, &[]).await);

    // openid scope required; each client only with its registered authentication.
    let resp = op
        .backchannel_authorize(
            CIBA_CLIENT_ID,
            &[
                ("scope", "profile"),
                ("login_hint", "alice"),
                ("binding_message", "AB12:x"),
            ],
        )
        .await;
    assert_eq!(error_of(&resp), "invalid_request", "{}", resp.text());
    let resp = op
        .post_form(
            BACKCHANNEL_PATH,
            None,
            &[
                ("scope", "openid"),
                ("login_hint", "alice"),
                ("binding_message", "AB12:x"),
                ("client_id", CIBA_CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
        )
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_eq!(error_of(&resp), "invalid_client");
    let resp = op
        .post_form(
            BACKCHANNEL_PATH,
            Some((CIBA_POST_CLIENT_ID, CLIENT_SECRET)),
            &[
                ("scope", "openid"),
                ("login_hint", "alice"),
                ("binding_message", "AB12:x"),
            ],
        )
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    let resp = op
        .post_form(
            BACKCHANNEL_PATH,
            Some((CIBA_CLIENT_ID, "wrong")),
            &[
                ("scope", "openid"),
                ("login_hint", "alice"),
                ("binding_message", "AB12:x"),
            ],
        )
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    // A token poll by the other client for this request.
    let resp = op.ciba_poll(CIBA_CLIENT_ID, &id).await;
    assert_eq!(error_of(&resp), "invalid_grant", "{}", resp.text());

    // Only the two accepted requests were recorded.
    assert_eq!(op.ciba_requests().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_ciba_expiry_and_slow_down() {
    let op = OidcProvider::start_ciba("poll", None).await;

    // requested_expiry is honoured: expired_token after it (approving is too late).
    let resp = bc_authorize(
        &op,
        CIBA_CLIENT_ID,
        "alice",
        "EXP1:x",
        &[("requested_expiry", "2")],
    )
    .await;
    let id = auth_req_id(&resp);
    assert_eq!(resp.json()["expires_in"], 2);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let resp = op.ciba_poll(CIBA_CLIENT_ID, &id).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(error_of(&resp), "expired_token");
    assert_eq!(ciba_request(&op, &id).await["status"], "expired");
    let resp = op.ciba_answer(true, "EXP1", None).await;
    assert_eq!(resp.status, 409, "{}", resp.text());
    assert_eq!(resp.json()["error"], "expired");
    // Without requested_expiry: Auth0's default.
    let resp = bc_authorize(&op, CIBA_CLIENT_ID, "alice", "EXP2:x", &[]).await;
    assert_eq!(resp.json()["expires_in"], 300, "{}", resp.text());

    // Polling faster than the interval: slow_down, and the interval grows by 5 s.
    let id = auth_req_id(&bc_authorize(&op, CIBA_CLIENT_ID, "alice", "FAST:x", &[]).await);
    assert_eq!(
        error_of(&op.ciba_poll(CIBA_CLIENT_ID, &id).await),
        "authorization_pending"
    );
    assert_eq!(
        error_of(&op.ciba_poll(CIBA_CLIENT_ID, &id).await),
        "slow_down"
    );
    let request = ciba_request(&op, &id).await;
    assert_eq!(request["interval"], 6, "{request}");
    assert_eq!(request["slow_downs"], 1);

    // Stock oidc-provider (interval 0): no interval sent, nothing enforced; the
    // slow_down fault answers the next N CIBA polls and then ends by itself.
    let stock = OidcProvider::start_with(CibaOptions {
        interval_secs: 0,
        ..CibaOptions::default()
    })
    .await;
    let resp = bc_authorize(&stock, CIBA_CLIENT_ID, "alice", "SLOW:x", &[]).await;
    let id = auth_req_id(&resp);
    assert!(resp.json().get("interval").is_none(), "{}", resp.text());
    stock.fault_slow_down(2).await;
    let refresh_token = stock.refresh_token("alice", CLIENT_ID).await;
    assert_eq!(
        refresh(&stock, &refresh_token).await.status,
        200,
        "other grants pass"
    );
    for want in [
        "slow_down",
        "slow_down",
        "authorization_pending",
        "authorization_pending",
    ] {
        let resp = stock.ciba_poll(CIBA_CLIENT_ID, &id).await;
        assert_eq!(resp.status, 400, "{}", resp.text());
        assert_eq!(error_of(&resp), want);
    }
    stock.ciba_approve("SLOW").await;
    assert_eq!(stock.ciba_poll(CIBA_CLIENT_ID, &id).await.status, 200);
    let request = ciba_request(&stock, &id).await;
    assert_eq!(request["slow_downs"], 2, "{request}");
    assert_eq!(request["polls"], 5);

    // The other token-endpoint faults reach CIBA polls too.
    let id = auth_req_id(&bc_authorize(&stock, CIBA_CLIENT_ID, "bob", "DOWN:x", &[]).await);
    stock.fault(Some("down"), 0).await;
    assert_eq!(stock.ciba_poll(CIBA_CLIENT_ID, &id).await.status, 503);
    stock.fault(None, 0).await;
    assert_eq!(
        error_of(&stock.ciba_poll(CIBA_CLIENT_ID, &id).await),
        "authorization_pending"
    );
    assert_eq!(
        ciba_request(&stock, &id).await["answers"],
        json!(["fault:down", "authorization_pending"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_ciba_ping() {
    let receiver = WebhookReceiver::start_plain().await;
    // Two-phase, as with the proxy: started without the endpoint, told it later.
    let op = OidcProvider::start_ciba("ping", None).await;

    // Ping clients must send client_notification_token.
    let resp = bc_authorize(&op, CIBA_CLIENT_ID, "alice", "PNG1:x", &[]).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(error_of(&resp), "invalid_request");

    op.ciba_set_client("ping", Some(&receiver.url)).await;
    let id = auth_req_id(
        &bc_authorize(
            &op,
            CIBA_CLIENT_ID,
            "alice",
            "PNG1:x",
            &[("client_notification_token", "cnt-1.abc")],
        )
        .await,
    );
    let reply = op.ciba_approve("PNG1").await;
    assert!(reply.get("ping_error").is_none(), "{reply}");
    let pings = receiver.wait_for(1, Duration::from_secs(5)).await;
    let ping = &pings[0];
    assert_eq!(ping.method, "POST");
    assert_eq!(ping.path, "/hook");
    assert_eq!(ping.header("authorization"), Some("Bearer cnt-1.abc"));
    assert_eq!(ping.header("content-type"), Some("application/json"));
    assert_eq!(ping.json(), json!({ "auth_req_id": id }));
    // One token call after the ping.
    let resp = op.ciba_poll(CIBA_CLIENT_ID, &id).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        ciba_request(&op, &id).await["pings"],
        json!([{ "status": 200 }])
    );

    // Denials ping too; a failing endpoint is reported (the answer stands).
    receiver.set_status(503);
    let id = auth_req_id(
        &bc_authorize(
            &op,
            CIBA_POST_CLIENT_ID,
            "bob",
            "PNG2:x",
            &[("client_notification_token", "cnt-2")],
        )
        .await,
    );
    let reply = op.ciba_deny("PNG2", None).await;
    assert!(
        reply["ping_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{reply}"
    );
    let pings = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(pings[1].header("authorization"), Some("Bearer cnt-2"));
    assert_eq!(
        error_of(&op.ciba_poll(CIBA_POST_CLIENT_ID, &id).await),
        "access_denied"
    );
    assert_eq!(op.ciba_pings().await.len(), 2);

    // An https endpoint with a test-PKI certificate (node trusts the CA via extra_ca).
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let https = WebhookReceiver::start(&pki).await;
    let op = OidcProvider::start_with(CibaOptions {
        delivery: "ping".to_owned(),
        notify_url: Some(https.url.clone()),
        extra_ca: Some(pki.upstream_ca_path.clone()),
        ..CibaOptions::default()
    })
    .await;
    let id = auth_req_id(
        &bc_authorize(
            &op,
            CIBA_CLIENT_ID,
            "carol",
            "PNG3:x",
            &[("client_notification_token", "cnt-3")],
        )
        .await,
    );
    let reply = op.ciba_approve(&id).await;
    assert!(reply.get("ping_error").is_none(), "{reply}");
    let pings = https.wait_for(1, Duration::from_secs(5)).await;
    assert!(pings[0].tls);
    assert_eq!(pings[0].json(), json!({ "auth_req_id": id }));

    // Back to poll: no client_notification_token needed, no ping.
    op.ciba_set_client("poll", None).await;
    let id = auth_req_id(&bc_authorize(&op, CIBA_CLIENT_ID, "carol", "PNG4:x", &[]).await);
    op.ciba_approve(&id).await;
    assert_eq!(https.received().len(), 1);
    assert_eq!(op.ciba_poll(CIBA_CLIENT_ID, &id).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_webhook_receiver() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let receiver = WebhookReceiver::start(&pki).await;
    assert!(
        receiver.url.starts_with("https://127.0.0.1:"),
        "{}",
        receiver.url
    );
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    let post = |body: String, signature: Option<String>| {
        let receiver = &receiver;
        let ca = pki.upstream_ca_path.clone();
        async move {
            let tcp = raw::tcp(receiver.addr).await;
            // Verified against the upstream CA for IP 127.0.0.1, as the proxy will.
            let tls = raw::tls_over(tcp, "127.0.0.1", &ca, &[b"http/1.1"]).await;
            let mut h1 = raw::h1_client(tls).await;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_secs();
            let signature = signature
                .unwrap_or_else(|| sign_standard_webhook(secret, "msg_1", now, body.as_bytes()));
            let req = http::Request::builder()
                .method("POST")
                .uri("/hook")
                .header("host", receiver.addr.to_string())
                .header("content-type", "application/json")
                .header("webhook-id", "msg_1")
                .header("webhook-timestamp", now.to_string())
                .header("webhook-signature", signature)
                .body(Full::new(Bytes::from(body)))
                .expect("request");
            raw::send_h1(&mut h1, req).await
        }
    };

    let body =
        json!({"type": "consent.requested", "timestamp": "2026-01-01T00:00:00Z", "data": {}})
            .to_string();
    let resp = post(body.clone(), None).await;
    assert_eq!(resp.status, 200);
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].method, "POST");
    assert!(got[0].tls);
    assert_eq!(got[0].text(), body);
    assert_eq!(got[0].header("Content-Type"), Some("application/json"));
    assert_eq!(got[0].verify(secret), Ok(()));
    assert!(got[0].verify("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_err());
    assert_eq!(receiver.events("consent.requested").len(), 1);

    // A forged signature is recorded like any request, and fails verification.
    post(body.clone(), Some("v1,AAAA".to_owned())).await;
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert!(
        got[1]
            .verify(secret)
            .unwrap_err()
            .contains("no v1 signature")
    );

    // Configurable answer and delay.
    receiver.set_status(503);
    receiver.set_delay(300);
    let started = Instant::now();
    let resp = post(body.clone(), None).await;
    assert_eq!(resp.status, 503);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    receiver.set_status(204);
    receiver.set_delay(0);
    assert_eq!(post(body, None).await.status, 204);
    assert_eq!(receiver.received().len(), 4);
}
