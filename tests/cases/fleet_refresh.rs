//! OAuth refresh-token rotation across a fleet, against the real oidc-provider (rotation
//! with reuse detection: a second use of one refresh token revokes the whole grant). Two
//! instances on one JetStream server share one `oauth` connection and need fresh access
//! tokens at the same moment, round after round, with the token endpoint slowed so their
//! refreshes would overlap: every request succeeds (the fleet's lease serializes them), and
//! afterwards both instances and the bus hold the same, newest refresh token. A rotation on
//! one instance leaves the access token another holds in use. With the bus gone, a cached
//! access token keeps working and a refresh is refused.

use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::future::join_all;
use serde_json::Value;

use super::fleet::{instance_with, readyz, until};
use crate::support::TestEnv;
use crate::support::cli::{agentgate, ok, secret_file};
use crate::support::nats::Nats;
use crate::support::oidc::{CLIENT_ID, CLIENT_SECRET, OidcProvider};
use crate::support::proxy::{Proxy, toml_str};
use crate::support::raw::{self, RawResponse};

/// The fleet's vault key (every instance holds the same one; `instance_with` writes it).
use super::fleet::FLEET_VAULT_KEY as VAULT_KEY;
const GMAIL: &str = "gmail.googleapis.com";
const GMAIL_PATH: &str = "/gmail/v1/users/me/messages";
/// Access tokens live 4 s; with `refresh_skew` 1 s each is renewed after 3 s.
const ACCESS_TTL: u64 = 4;
const RENEW_AFTER: Duration = Duration::from_millis(3200);
/// How long the token endpoint takes: refreshes that are not serialized overlap.
const SLOW_MS: u64 = 300;
const ROUNDS: usize = 4;
const PER_INSTANCE: usize = 3;

/// GETs of Gmail on every proxy in `proxies`, `PER_INSTANCE` each: every tunnel first,
/// then all the requests at once.
async fn all_at_once(proxies: &[&Proxy]) -> Vec<RawResponse> {
    let tunnels = proxies
        .iter()
        .flat_map(|p| (0..PER_INSTANCE).map(move |_| *p));
    let senders =
        join_all(tunnels.map(|p| async move {
            raw::h1_client(raw::tunnel_to(p, GMAIL, b"http/1.1").await).await
        }))
        .await;
    join_all(
        senders
            .into_iter()
            .map(|mut h1| async move { raw::send_h1(&mut h1, raw::get(GMAIL_PATH, GMAIL)).await }),
    )
    .await
}

/// The injected credential as the echo shows it to the agent (masked).
fn injected(resp: &RawResponse) -> String {
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["headers"]["authorization"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The fingerprint of connection `id` in `proxy`'s `vault.db`, if it holds it (read
/// directly: a CLI process per poll is too slow for the cache windows below).
fn local_fingerprint(proxy: &Proxy, id: &str) -> Option<String> {
    let db = rusqlite::Connection::open_with_flags(
        proxy.home.join("vault.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open vault.db");
    db.query_row(
        "SELECT fingerprint FROM connections WHERE id = ?1",
        [id],
        |r| r.get(0),
    )
    .ok()
}

/// The bus's row of connection `id`: its fingerprint and its refresh token, unsealed with
/// the fleet's vault key (AES-256-GCM, the id as associated data).
async fn bus_row(nats: &Nats, id: &str) -> (String, String) {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let kv = async_nats::jetstream::new(client)
        .get_key_value("e2e-vault")
        .await
        .expect("vault bucket");
    let entry = kv
        .get(format!("conn.{id}"))
        .await
        .expect("get")
        .expect("row");
    // `<64 hex of the fleet tag>.<row JSON>` (see src/fleet/entry.rs).
    assert_eq!(entry.get(64), Some(&b'.'), "the bus row is not tagged");
    let row: Value = serde_json::from_slice(&entry[65..]).expect("row JSON");
    let sealed = STANDARD
        .decode(row["secret"].as_str().expect("secret"))
        .expect("base64");
    let key = STANDARD.decode(VAULT_KEY).expect("key");
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("key"));
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let mut buf = ct.to_vec();
    let plain = key
        .open_in_place(
            Nonce::try_assume_unique_for_key(nonce).expect("nonce"),
            Aad::from(id.as_bytes()),
            &mut buf,
        )
        .expect("the bus's row does not open under the fleet's vault key");
    let token = String::from_utf8(plain.to_vec()).expect("UTF-8");
    (row["fingerprint"].as_str().expect("fp").to_owned(), token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_rotation_raced_by_two_instances_keeps_the_newest_token() {
    let env = TestEnv::new().await;
    let mut nats = Nats::start(env.dir.path());
    let op = OidcProvider::start(ACCESS_TTL).await;
    let client_secret = secret_file(env.dir.path(), "client.secret", CLIENT_SECRET);
    let p = "vault.providers.test";
    let cfg = || {
        env.config()
            .set("fleet", "max_staleness", &toml_str("30s"))
            .set("vault", "refresh_skew", &toml_str("1s"))
            .set(p, "token_url", &toml_str(&op.token_url()))
            .set(p, "client_id", &toml_str(CLIENT_ID))
            .set(
                p,
                "client_secret_file",
                &toml_str(&client_secret.display().to_string()),
            )
    };
    let a = instance_with(&env, &nats, "a", cfg());
    let b = instance_with(&env, &nats, "b", cfg());
    for p in [&a, &b] {
        until("ready", 20, 200, || readyz(p)).await;
    }

    // One connection, set once on A, holding a refresh token from the provider.
    let first = op.refresh_token("alice", CLIENT_ID).await;
    let file = secret_file(env.dir.path(), "gmail.refresh", &first);
    let config = a.home.join("agentgate.toml").display().to_string();
    let file = file.display().to_string();
    let args = [
        "vault",
        "set",
        "gmail",
        "--kind",
        "oauth",
        "--provider",
        "test",
        "--secret-file",
        &file,
    ];
    let out = agentgate(&a.home, &args, &[("AGENTGATE_CONFIG", &config)]).await;
    let stdout = ok(&out, "vault set");
    let id = stdout
        .strip_prefix("stored ")
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("vault set printed {stdout:?}"))
        .to_owned();
    until("B holds the connection set on A", 10, 1, || async {
        u16::from(local_fingerprint(&b, &id).is_some())
    })
    .await;

    op.fault(Some("slow"), SLOW_MS).await;
    for round in 0..ROUNDS {
        // Both instances' access tokens are due for renewal: both must refresh now.
        tokio::time::sleep(RENEW_AFTER).await;
        let answers = all_at_once(&[&a, &b]).await;
        for (i, r) in answers.iter().enumerate() {
            let on = if i < PER_INSTANCE { "A" } else { "B" };
            assert_eq!(r.status, 200, "round {round}, {on}: {}", r.text());
            assert!(
                injected(r).starts_with("Bearer "),
                "round {round}, {on}: no credential"
            );
        }
    }
    op.fault(None, 0).await;
    let stats = op.stats().await;
    assert_eq!(
        stats["refresh_failures"], 0,
        "a refresh token was reused: {stats}"
    );
    // One refresh per instance per round: a rotation elsewhere does not drop the access
    // token an instance holds.
    assert_eq!(stats["refresh_grants"], 2 * ROUNDS, "{stats}");

    // A rotation on B reaches A and leaves the access token A holds in use.
    tokio::time::sleep(RENEW_AFTER).await;
    let on_a = all_at_once(&[&a]).await;
    assert!(injected(&on_a[0]).starts_with("Bearer "));
    let on_b = all_at_once(&[&b]).await;
    assert!(injected(&on_b[0]).starts_with("Bearer "));
    let (rotated_on_b, _) = bus_row(&nats, &id).await;
    until("A holds B's rotation", 2, 1, || async {
        u16::from(local_fingerprint(&a, &id).as_deref() == Some(rotated_on_b.as_str()))
    })
    .await;
    let again = all_at_once(&[&a]).await;
    assert!(injected(&again[0]).starts_with("Bearer "));
    let stats = op.stats().await;
    assert_eq!(
        stats["refresh_grants"],
        2 * ROUNDS + 2,
        "A refreshed again after B's rotation: {stats}"
    );

    // Both instances and the bus hold one refresh token, the newest: the provider's only
    // active one (every earlier one was consumed by its rotation).
    let (fingerprint, newest) = bus_row(&nats, &id).await;
    assert_ne!(newest, first, "never rotated");
    assert!(
        op.active(&newest).await,
        "the bus holds a spent refresh token"
    );
    assert!(!op.active(&first).await);
    for p in [&a, &b] {
        let what = format!("{} holds the newest refresh token", p.home.display());
        until(&what, 10, 1, || async {
            u16::from(local_fingerprint(p, &id).as_deref() == Some(fingerprint.as_str()))
        })
        .await;
    }

    // Without the bus: a cached access token still serves; a refresh is refused, saying why.
    let fresh = all_at_once(&[&a]).await;
    assert!(injected(&fresh[0]).starts_with("Bearer "));
    nats.kill();
    let cached = all_at_once(&[&a]).await;
    assert_eq!(
        injected(&cached[0]),
        injected(&fresh[0]),
        "not the cached token"
    );
    tokio::time::sleep(RENEW_AFTER).await;
    let refused = all_at_once(&[&a]).await;
    assert_eq!(refused[0].status, 503, "{}", refused[0].text());
    let body = refused[0].json();
    assert_eq!(body["error"], "token_unavailable", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("fleet bus is unreachable")),
        "{body}"
    );
    let stats = op.stats().await;
    assert_eq!(stats["refresh_failures"], 0, "{stats}");
}
