use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::audit::{Audit, AuditConfig};
use crate::replica::Replica;
use crate::secret::Secret;
use crate::state::StateDir;
use crate::vault::coordinator::{BoxFuture, RefreshLease};
use crate::vault::fleet::{CONN, VaultReplica};
use crate::vault::store::NewConnection;
use crate::vault::{ClientConfig, Kind, Settings, VaultConfig};

/// The fleet as a refresh sees it: the shared row, and whether a write-back finds it
/// changed.
#[derive(Clone, Default)]
struct Fleet {
    row: Arc<Mutex<Option<Vec<u8>>>>,
    changed: Arc<AtomicBool>,
    written: Arc<Mutex<Vec<Vec<u8>>>>,
}

struct Held(Fleet, Option<Vec<u8>>);

impl RefreshCoordinator for Fleet {
    fn lease<'a>(
        &'a self,
        _id: &'a str,
        _wait: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn RefreshLease>, CoordinationError>> {
        let row = self.row.lock().unwrap().clone();
        Box::pin(async move { Ok(Box::new(Held(self.clone(), row)) as Box<dyn RefreshLease>) })
    }
}

impl RefreshLease for Held {
    fn row(&self) -> Option<&[u8]> {
        self.1.as_deref()
    }

    fn write_back(&mut self, row: Vec<u8>) -> BoxFuture<'_, Result<(), CoordinationError>> {
        Box::pin(async move {
            if self.0.changed.load(Ordering::Relaxed) {
                return Err(CoordinationError::Changed("c".into()));
            }
            self.0.written.lock().unwrap().push(row.clone());
            *self.0.row.lock().unwrap() = Some(row);
            Ok(())
        })
    }
}

/// A token endpoint that rotates: the n-th refresh answers `at-n` and `rt-n`. Returns its
/// URL and the refresh tokens it was sent.
async fn provider() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let sent = Arc::new(Mutex::new(Vec::new()));
    let seen = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let body = loop {
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "request cut short");
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                let Some(end) = text.find("\r\n\r\n") else {
                    continue;
                };
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break buf[end + 4..end + 4 + len].to_vec();
                }
            };
            let token = form_urlencoded::parse(&body)
                .find(|(k, _)| k == "refresh_token")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let n = {
                let mut sent = seen.lock().unwrap();
                sent.push(token);
                sent.len()
            };
            let json = format!(
                r#"{{"access_token":"at-{n}","token_type":"Bearer","expires_in":60,"refresh_token":"rt-{n}"}}"#
            );
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                json.len()
            );
            sock.write_all(reply.as_bytes()).await.unwrap();
        }
    });
    (url, sent)
}

/// A vault in a fresh state dir with an `oauth` connection holding `rt-0`, refreshed at
/// `token_url` under `fleet`.
fn vault(dir: &tempfile::TempDir, token_url: &str, fleet: &Fleet) -> (Vault, StateDir, Connection) {
    let state = StateDir::open_or_create(dir.path().join("home")).unwrap();
    let secret_file = dir.path().join("client.secret");
    crate::state::write_private(&secret_file, b"s3cret").unwrap();
    let mut config = VaultConfig::default();
    config.providers.insert(
        "test".into(),
        ClientConfig {
            token_url: token_url.into(),
            client_id: "agentgate".into(),
            client_secret_file: secret_file,
            ..ClientConfig::default()
        },
    );
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let audit =
        Arc::new(Audit::open(&AuditConfig::default(), &state, "test", Default::default()).unwrap());
    let vault = Vault::open(&config, &BTreeMap::new(), &state, tls, audit)
        .unwrap()
        .with_refresh_coordinator(Arc::new(fleet.clone()));
    let new = NewConnection {
        tenant: String::new(),
        service: "gmail".into(),
        user: String::new(),
        kind: Kind::Oauth,
        origin: "gmail.googleapis.com".into(),
        settings: Settings {
            provider: Some("test".into()),
            ..Settings::default()
        },
        expires: None,
    };
    let c = vault
        .lock_store()
        .put(new, &Secret::new("rt-0".into()), 1)
        .unwrap();
    (vault, state, c)
}

/// The connection's row as this instance's mirror publishes it.
fn published(state: &StateDir, id: &str) -> Vec<u8> {
    let entries = VaultReplica::open(state).unwrap().entries(0).unwrap();
    entries[&format!("{CONN}{id}")].clone()
}

/// The fleet's row of `c` with its secret replaced by `secret`.
fn shared_row(vault: &Vault, state: &StateDir, c: &Connection, secret: &str) -> Vec<u8> {
    let mut row = Row::parse(&published(state, &c.id)).unwrap();
    let (sealed, fp) = vault
        .lock_store()
        .seal_secret(&c.id, &Secret::new(secret.into()))
        .unwrap();
    row.rotate(&sealed, fp, 2);
    row.to_bytes()
}

fn secret_of(vault: &Vault, id: &str, row: &[u8]) -> String {
    let sealed = Row::parse(row).unwrap().sealed().unwrap();
    vault
        .lock_store()
        .unseal(id, &sealed)
        .unwrap()
        .expose()
        .to_owned()
}

#[tokio::test]
async fn refreshes_with_the_fleets_row_and_writes_the_rotation_back_and_here_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (url, sent) = provider().await;
    let fleet = Fleet::default();
    let (vault, state, c) = vault(&dir, &url, &fleet);
    // This instance's copy lags: the fleet's row already holds a later token.
    *fleet.row.lock().unwrap() = Some(shared_row(&vault, &state, &c, "rt-fleet"));

    let got = vault.refresh(&c, &[]).await.unwrap();
    assert_eq!(got.token.expose(), "at-1");
    assert_eq!(*sent.lock().unwrap(), ["rt-fleet"], "not the fleet's token");
    let written = fleet.written.lock().unwrap().clone();
    assert_eq!(written.len(), 1);
    assert_eq!(secret_of(&vault, &c.id, &written[0]), "rt-1");
    assert_eq!(vault.lock_store().secret(&c.id).unwrap().expose(), "rt-1");
    // Byte for byte, so the mirror has nothing to publish and the watch nothing to apply.
    assert_eq!(published(&state, &c.id), written[0]);

    // The next refresh starts from what was written back.
    vault.refresh(&c, &[]).await.unwrap();
    assert_eq!(*sent.lock().unwrap(), ["rt-fleet", "rt-1"]);
}

#[tokio::test]
async fn a_row_changed_meanwhile_is_not_overwritten_and_the_refresh_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _sent) = provider().await;
    let fleet = Fleet::default();
    let (vault, state, c) = vault(&dir, &url, &fleet);
    let row = published(&state, &c.id);
    *fleet.row.lock().unwrap() = Some(row.clone());
    fleet.changed.store(true, Ordering::Relaxed);

    let err = vault.refresh(&c, &[]).await.err().unwrap();
    assert!(
        matches!(err, TokenError::Fleet(CoordinationError::Changed(_))),
        "{err}"
    );
    assert!(err.to_string().contains("vault set"), "{err}");
    assert_eq!(vault.lock_store().secret(&c.id).unwrap().expose(), "rt-0");
    assert_eq!(published(&state, &c.id), row, "the local row was written");
}

#[tokio::test]
async fn a_revoked_or_missing_row_is_not_refreshed() {
    let dir = tempfile::tempdir().unwrap();
    let (url, sent) = provider().await;
    let fleet = Fleet::default();
    let (vault, state, c) = vault(&dir, &url, &fleet);

    let err = vault.refresh(&c, &[]).await.err().unwrap();
    assert!(
        matches!(err, TokenError::Fleet(CoordinationError::Missing(_))),
        "{err}"
    );
    vault
        .lock_store()
        .mark_revoked(&c.id, "PANIC: test", 3)
        .unwrap();
    *fleet.row.lock().unwrap() = Some(published(&state, &c.id));
    let err = vault.refresh(&c, &[]).await.err().unwrap();
    assert!(matches!(err, TokenError::Revoked(_)), "{err}");
    assert!(sent.lock().unwrap().is_empty(), "the provider was called");
}
