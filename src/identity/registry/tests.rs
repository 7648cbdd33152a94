use super::*;

fn token(jti: &str, kid: &str, expires: i64) -> Token {
    Token {
        jti: jti.into(),
        kid: kid.into(),
        issued: 1,
        expires,
        token: format!("tok-{jti}"),
    }
}

#[test]
fn revocation_covers_agent_and_tokens_and_survives_reregistration() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = Registry::open_path(&dir.path().join(FILE)).unwrap();
    let id = "spiffe://agentgate.local/agent/bot";
    reg.upsert_agent("bot", id, Some("alice"), None, 1).unwrap();
    reg.add_token("bot", &token("j1", "k1", 100)).unwrap();
    reg.add_token("bot", &token("j2", "k1", 100)).unwrap();
    let snap = reg.snapshot(10).unwrap();
    assert_eq!(snap.agents[id].owner.as_deref(), Some("alice"));
    assert!(snap.revoked_ids.is_empty());

    reg.revoke_token("bot", "j1", 10).unwrap();
    assert!(reg.snapshot(10).unwrap().revoked_jtis.contains("j1"));
    assert!(matches!(
        reg.revoke_token("bot", "nope", 10),
        Err(RegistryError::UnknownToken(_))
    ));

    assert_eq!(reg.revoke_agent("bot", "test", 11).unwrap(), 1);
    let snap = reg.snapshot(11).unwrap();
    assert!(snap.revoked_ids.contains(id));
    assert!(snap.revoked_jtis.contains("j2"));
    assert!(reg.latest_token("bot").unwrap().is_none());

    // A new registration is active again, but the old tokens stay dead.
    reg.upsert_agent("bot", id, Some("alice"), None, 12)
        .unwrap();
    reg.add_token("bot", &token("j3", "k1", 100)).unwrap();
    let snap = reg.snapshot(12).unwrap();
    assert!(!snap.revoked_ids.contains(id));
    assert!(snap.revoked_jtis.contains("j1") && snap.revoked_jtis.contains("j2"));
    assert_eq!(reg.latest_token("bot").unwrap().unwrap().jti, "j3");
    assert!(matches!(
        reg.revoke_agent("ghost", "x", 1),
        Err(RegistryError::UnknownAgent(_))
    ));
}

#[test]
fn retired_keys_live_until_their_last_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open_path(&dir.path().join(FILE)).unwrap();
    reg.add_issuer_key("k1", "{}", 1).unwrap();
    reg.upsert_agent_for_test();
    reg.add_token("bot", &token("j1", "k1", 500)).unwrap();
    assert_eq!(reg.retire_issuer_key("k1", 100).unwrap(), 500);
    reg.add_issuer_key("k2", "{}", 100).unwrap();
    assert_eq!(reg.current_issuer_key().unwrap().unwrap().kid, "k2");
    assert_eq!(reg.snapshot(400).unwrap().issuer_keys.len(), 2);
    assert_eq!(reg.snapshot(501).unwrap().issuer_keys.len(), 1);
    assert_eq!(reg.drop_expired_issuer_keys(501).unwrap(), vec!["k1"]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

impl Registry {
    fn upsert_agent_for_test(&self) {
        self.conn
            .execute(
                "INSERT INTO agents (name, spiffe_id, created) VALUES ('bot', 'spiffe://t/agent/bot', 1)",
                [],
            )
            .unwrap();
    }
}
