use super::*;

fn new_conn(service: &str) -> NewConnection {
    NewConnection {
        tenant: String::new(),
        service: service.into(),
        user: String::new(),
        kind: Kind::Static,
        origin: "api.github.com".into(),
        settings: Settings::default(),
        expires: None,
    }
}

#[test]
fn seals_secrets_and_refuses_a_wrong_or_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(FILE);
    let key = dir.path().join(KEY_FILE);
    let mut store = Store::open_paths(&db, &key).unwrap();
    let c = store
        .put(new_conn("github"), &Secret::new("ghp_canary".into()), 1)
        .unwrap();
    assert_eq!(store.secret(&c.id).unwrap().expose(), "ghp_canary");
    assert!(c.fingerprint.starts_with("hmac-sha256:"));
    drop(store);
    // The database holds no plaintext.
    let bytes = std::fs::read(&db).unwrap();
    assert!(!bytes.windows(10).any(|w| w == b"ghp_canary"));

    // A different key is refused at open, naming both files.
    let good = std::fs::read(&key).unwrap();
    write_private(&key, STANDARD.encode([7u8; 32]).as_bytes()).unwrap();
    let err = Store::open_paths(&db, &key).err().unwrap().to_string();
    assert!(err.contains("does not match"), "{err}");
    // A missing key while secrets exist is refused, not recreated.
    std::fs::remove_file(&key).unwrap();
    let err = Store::open_paths(&db, &key).err().unwrap().to_string();
    assert!(err.contains("vault.key"), "{err}");
    assert!(!key.exists());
    write_private(&key, &good).unwrap();
    let store = Store::open_paths(&db, &key).unwrap();
    assert_eq!(store.secret(&c.id).unwrap().expose(), "ghp_canary");
}

#[test]
fn ciphertext_is_bound_to_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_paths(&dir.path().join(FILE), &dir.path().join(KEY_FILE)).unwrap();
    let a = store
        .put(new_conn("a"), &Secret::new("secret-a".into()), 1)
        .unwrap();
    let b = store
        .put(new_conn("b"), &Secret::new("secret-b".into()), 1)
        .unwrap();
    store
        .db
        .execute(
            "UPDATE connections SET secret = (SELECT secret FROM connections WHERE id = ?1)
             WHERE id = ?2",
            params![a.id, b.id],
        )
        .unwrap();
    assert!(matches!(
        store.secret(&b.id),
        Err(VaultError::Corrupt { .. })
    ));
}

#[test]
fn replaces_by_tenant_service_user_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_paths(&dir.path().join(FILE), &dir.path().join(KEY_FILE)).unwrap();
    store
        .put(new_conn("github"), &Secret::new("one".into()), 1)
        .unwrap();
    let c = store
        .put(new_conn("github"), &Secret::new("two".into()), 2)
        .unwrap();
    assert_eq!(store.list().unwrap().len(), 1);
    store
        .set_secret(&c.id, &Secret::new("three".into()), 3)
        .unwrap();
    assert_eq!(store.secret(&c.id).unwrap().expose(), "three");
    assert_eq!(store.remove("github", "", "").unwrap(), 1);
    assert!(store.list().unwrap().is_empty());
}
