use super::*;
use crate::vault::Settings;

fn index(conns: &[Connection]) -> Index {
    let mut index = Index::default();
    for c in conns {
        index
            .by_origin
            .entry(c.origin.clone())
            .or_default()
            .push(Arc::new(c.clone()));
    }
    index
}

fn conn(id: &str) -> Connection {
    Connection {
        id: id.into(),
        tenant: String::new(),
        service: "gmail".into(),
        user: String::new(),
        kind: Kind::Oauth,
        origin: "gmail.googleapis.com".into(),
        settings: Settings::default(),
        fingerprint: "hmac-sha256:aa".into(),
        expires: None,
        created: 1,
        updated: 1,
        revoked: None,
    }
}

#[test]
fn only_a_rotated_refresh_token_keeps_the_cached_access_tokens() {
    let before = index(&[conn("a"), conn("b")]);
    let mut rotated = conn("b");
    rotated.fingerprint = "hmac-sha256:bb".into();
    rotated.updated = 2;
    assert!(only_rotated(&before, &index(&[conn("a"), rotated])));

    let mut revoked = conn("b");
    revoked.revoked = Some(3);
    assert!(!only_rotated(&before, &index(&[conn("a"), revoked])));
    assert!(!only_rotated(&before, &index(&[conn("a")])));
    assert!(!only_rotated(&before, &index(&[conn("a"), conn("c")])));
}
