use super::issuer::Registration;
use super::jwt::Es256Signer;
use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    state: StateDir,
    config: IdentityConfig,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open_or_create(dir.path().join("home")).unwrap();
    Fixture {
        _dir: dir,
        state,
        config: IdentityConfig::default(),
    }
}

fn register(f: &Fixture, name: &str, tenant: Option<&str>) -> issuer::Registered {
    let mut reg = Registry::open(&f.state).unwrap();
    let req = Registration {
        name,
        owner: Some("alice"),
        tenant,
        ttl: Duration::from_secs(3600),
    };
    issuer::register(&f.state, &mut reg, &f.config, &req, now()).unwrap()
}

#[test]
fn built_in_tokens_verify_and_revocation_beats_the_cache() {
    let f = fixture();
    let bot = register(&f, "bot", None);
    let identity = Identity::load(&f.config, &f.state).unwrap();
    let caller = identity.authenticate(&bot.token).unwrap();
    assert_eq!(caller.spiffe_id, "spiffe://agentgate.local/agent/bot");
    assert_eq!(caller.agent, "bot");
    assert_eq!(caller.owner.as_deref(), Some("alice"));
    assert_eq!(caller.jti.as_deref(), Some(bot.jti.as_str()));
    // Cached now; a revocation must still win at once after a reload.
    assert!(identity.authenticate(&bot.token).is_ok());
    Registry::open(&f.state)
        .unwrap()
        .revoke_agent("bot", "test", now())
        .unwrap();
    assert!(
        identity.refresh(false).unwrap(),
        "data_version noticed the change"
    );
    assert!(matches!(
        identity.authenticate(&bot.token),
        Err(IdentityError::AgentRevoked(_))
    ));
    assert!(matches!(
        identity.recheck(&caller),
        Err(IdentityError::AgentRevoked(_))
    ));
    assert!(!identity.refresh(false).unwrap(), "nothing changed since");
}

#[test]
fn one_token_can_be_revoked_alone() {
    let f = fixture();
    let first = register(&f, "bot", Some("acme"));
    let second = register(&f, "bot", Some("acme"));
    let identity = Identity::load(&f.config, &f.state).unwrap();
    let caller = identity.authenticate(&first.token).unwrap();
    assert_eq!(caller.tenant.as_deref(), Some("acme"));
    Registry::open(&f.state)
        .unwrap()
        .revoke_token("bot", &first.jti, now())
        .unwrap();
    identity.refresh(false).unwrap();
    assert!(matches!(
        identity.authenticate(&first.token),
        Err(IdentityError::TokenRevoked(_))
    ));
    assert!(identity.authenticate(&second.token).is_ok());
}

#[test]
fn rotation_keeps_old_tokens_and_serves_both_keys() {
    let f = fixture();
    let old = register(&f, "bot", None);
    let identity = Identity::load(&f.config, &f.state).unwrap();
    let reg = Registry::open(&f.state).unwrap();
    issuer::rotate(&f.state, &reg, now()).unwrap();
    let new = register(&f, "bot", None);
    // Not reloaded yet: the new key is unknown.
    assert!(matches!(
        identity.authenticate(&new.token),
        Err(IdentityError::Invalid(JwtError::UnknownKey { .. }))
    ));
    identity.refresh(false).unwrap();
    assert!(identity.authenticate(&new.token).is_ok());
    assert!(identity.authenticate(&old.token).is_ok());
    let jwks: serde_json::Value = serde_json::from_slice(&identity.bundle_jwks()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["use"] == "jwt-svid" && k["kid"].is_string() && k.get("d").is_none())
    );
}

#[test]
fn bundle_files_and_workload_bundles_are_trusted_and_followed() {
    let mut f = fixture();
    let signer =
        Es256Signer::from_pkcs8("fk1".into(), &Es256Signer::generate_pkcs8().unwrap()).unwrap();
    let path = f.state.path("example.jwks");
    let write = |keys: Vec<(&str, &VerifyKey)>| {
        std::fs::write(&path, bundle::to_jwks(keys).to_string()).unwrap();
    };
    write(vec![("fk1", &signer.public_key())]);
    f.config.bundles.insert("example.org".into(), path.clone());
    let identity = Identity::load(&f.config, &f.state).unwrap();
    let claims = serde_json::json!({
        "sub": "spiffe://example.org/ns/prod/sa/bot",
        "aud": "agentgate",
        "exp": now() + 60,
    });
    let token = signer.sign(&claims).unwrap();
    let caller = identity.authenticate(&token).unwrap();
    assert_eq!(caller.agent, "ns/prod/sa/bot");
    assert_eq!(caller.owner, None);

    // The file drops the key: after the reload, the token is refused.
    let other =
        Es256Signer::from_pkcs8("fk2".into(), &Es256Signer::generate_pkcs8().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    write(vec![("fk2", &other.public_key())]);
    identity.refresh(true).unwrap();
    assert!(identity.authenticate(&token).is_err());

    // A broken file keeps the last good keys.
    std::fs::write(&path, "{ not json").unwrap();
    identity.refresh(true).unwrap();
    assert!(identity.authenticate(&other.sign(&claims).unwrap()).is_ok());

    // Workload API bundles add trust domains.
    let wl = Es256Signer::from_pkcs8("w1".into(), &Es256Signer::generate_pkcs8().unwrap()).unwrap();
    let wl_token = wl
        .sign(&serde_json::json!({"sub": "spiffe://prod.example/agent/x", "aud": ["agentgate"], "exp": now() + 60}))
        .unwrap();
    assert!(identity.authenticate(&wl_token).is_err());
    let mut keys = Authorities::new();
    keys.insert("w1".into(), Arc::new(wl.public_key()));
    identity.set_workload_bundles(HashMap::from([("prod.example".to_owned(), keys)]));
    assert_eq!(identity.authenticate(&wl_token).unwrap().agent, "x");
    identity.set_workload_bundles(HashMap::new());
    assert!(
        identity.authenticate(&wl_token).is_err(),
        "rotation away is followed"
    );
}

#[test]
fn bad_bundle_file_refuses_to_start() {
    let mut f = fixture();
    let path = f.state.path("bad.jwks");
    std::fs::write(&path, "[]").unwrap();
    f.config.bundles.insert("example.org".into(), path);
    let err = Identity::load(&f.config, &f.state)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("example.org") && err.contains("bad.jwks"),
        "{err}"
    );
}

#[test]
fn splits_spiffe_paths() {
    assert_eq!(split_path("/agent/bot"), (None, "bot".into()));
    assert_eq!(
        split_path("/tenant/acme/agent/bot"),
        (Some("acme".into()), "bot".into())
    );
    assert_eq!(split_path("/ns/a/sa/b"), (None, "ns/a/sa/b".into()));
}
