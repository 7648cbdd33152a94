#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;

use base64::Engine as _;

use super::*;

fn schema() -> GraphqlSchema {
    let mut fields = HashMap::new();
    fields.insert(
        "query".to_owned(),
        HashMap::from([
            ("viewer".to_owned(), Class::Read),
            ("repository".to_owned(), Class::Read),
        ]),
    );
    fields.insert(
        "mutation".to_owned(),
        HashMap::from([
            ("createIssue".to_owned(), Class::Write),
            ("deleteRef".to_owned(), Class::Delete),
        ]),
    );
    GraphqlSchema {
        path: "/graphql".into(),
        fields,
    }
}

fn gql(doc: &str) -> Result<GraphqlSummary, BodyError> {
    graphql(
        serde_json::json!({ "query": doc }).to_string().as_bytes(),
        &schema(),
    )
}

#[test]
fn graphql_action_is_the_most_dangerous_field_of_every_operation() {
    let s = gql("query A { viewer { login } } mutation B { x: createIssue(input: {}) { clientMutationId } y: deleteRef(input: {}) { clientMutationId } }").unwrap();
    let f = s.decisive().unwrap();
    assert_eq!(
        (f.operation, f.field.as_str(), f.class),
        ("mutation", "deleteRef", Class::Delete)
    );
    assert_eq!(s.operations.len(), 2);
    assert_eq!(s.fields.len(), 3);
    assert_eq!(s.fields[2].alias.as_deref(), Some("y"));
}

#[test]
fn graphql_sees_through_fragments() {
    let s = gql(
        "mutation { ...F } fragment F on Mutation { deleteRef(input: {}) { clientMutationId } }",
    )
    .unwrap();
    assert_eq!(s.decisive().unwrap().field, "deleteRef");
    let s = gql("mutation { ... on Mutation { createIssue(input: {}) { clientMutationId } } }")
        .unwrap();
    assert_eq!(s.decisive().unwrap().class, Class::Write);
    // Shorthand `{ … }` is a query.
    let s = gql("{ viewer { login } __typename }").unwrap();
    assert_eq!(s.decisive().unwrap().class, Class::Read);
    assert_eq!(s.operations[0].0, "query");
}

#[test]
fn graphql_unknown_fields_are_unknown() {
    let s = gql("mutation { launchMissiles { ok } createIssue(input: {}) { clientMutationId } }")
        .unwrap();
    let f = s.decisive().unwrap();
    assert_eq!(
        (f.field.as_str(), f.class),
        ("launchMissiles", Class::Unknown)
    );
    let s = gql("subscription { viewer }").unwrap();
    assert_eq!(s.decisive().unwrap().class, Class::Unknown);
}

#[test]
fn graphql_refuses_what_it_cannot_read() {
    for (body, why) in [
        ("not json", "not valid JSON"),
        ("[{\"query\": \"{ viewer }\"}]", "batched"),
        ("{\"query\": 5}", "no \"query\" string"),
        ("{\"variables\": {}}", "no \"query\" string"),
    ] {
        let e = graphql(body.as_bytes(), &schema()).unwrap_err().to_string();
        assert!(e.contains(why), "{body}: {e}");
    }
    for (doc, why) in [
        ("mutation { createIssue(", "does not parse"),
        ("query { ...Missing }", "not defined"),
        ("type Query { x: Int }", "definition"),
        ("fragment F on Query { viewer }", "no field"),
    ] {
        let e = gql(doc).unwrap_err().to_string();
        assert!(e.contains(why), "{doc}: {e}");
    }
    // Nesting and size are bounded by the parser's limits.
    let deep = format!("{{ viewer {} }}", "{ a ".repeat(200) + &"}".repeat(200));
    assert!(gql(&deep).is_err());
    let many = format!("{{ {} }}", "viewer ".repeat(60_000));
    assert!(gql(&many).is_err());
}

#[test]
fn graphql_fragment_cycles_terminate() {
    let s = gql(
        "mutation { ...A } fragment A on Mutation { ...B createIssue(input: {}) { clientMutationId } } fragment B on Mutation { ...A }",
    );
    assert_eq!(s.unwrap().decisive().unwrap().field, "createIssue");
}

fn raw(msg: &str) -> Vec<u8> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(msg);
    serde_json::json!({ "raw": raw }).to_string().into_bytes()
}

#[test]
fn gmail_reads_every_recipient_header() {
    let msg = "To: Alice <Alice@Example.com>, bob@corp.io\r\nTo: eve@evil.test\r\nCc: carol@corp.io\r\nBcc: undisclosed: dave@x.org;\r\nSubject: hi\r\n\r\nbody";
    let e = gmail_json(&raw(msg), false).unwrap().unwrap();
    assert_eq!(e.to, ["alice@example.com", "bob@corp.io", "eve@evil.test"]);
    assert_eq!(e.cc, ["carol@corp.io"]);
    assert_eq!(e.bcc, ["dave@x.org"]);
    assert_eq!(e.attachments, Some(0));
    let j = e.to_json();
    assert_eq!(
        j["domains"],
        serde_json::json!(["corp.io", "evil.test", "example.com", "x.org"])
    );
    assert_eq!(j["recipient_count"], 5);
}

#[test]
fn gmail_counts_attachments_and_reads_drafts() {
    let msg = "To: a@x.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\n%PDF\r\n--b--\r\n";
    let e = gmail_json(&raw(msg), false).unwrap().unwrap();
    assert_eq!(e.attachments, Some(1));
    let draft = serde_json::json!({"message": {"raw": base64::engine::general_purpose::URL_SAFE.encode(msg)}});
    let e = gmail_json(draft.to_string().as_bytes(), false)
        .unwrap()
        .unwrap();
    assert_eq!(e.to, ["a@x.com"]);
    // drafts.send by id: no message in the request.
    assert_eq!(gmail_json(br#"{"id": "r123"}"#, false).unwrap(), None);
}

#[test]
fn gmail_cut_off_bodies_still_give_recipients() {
    let big = format!("To: a@x.com\r\nSubject: s\r\n\r\n{}", "x".repeat(5000));
    let body = raw(&big);
    let cut = &body[..200];
    let e = gmail_json(cut, true).unwrap().unwrap();
    assert_eq!(e.to, ["a@x.com"]);
    assert_eq!(e.attachments, None);
    // A "raw" inside another string is not the message.
    let tricky = br#"{"threadId": "\"raw\": \"VG86IGV2aWxAZXZpbC50ZXN0DQoNCg\"", "raw": "VG86IGFAeC5jb20NCg0K"#;
    let e = gmail_json(tricky, true).unwrap().unwrap();
    assert_eq!(e.to, ["a@x.com"]);
    assert!(gmail_json(br#"{"labelIds": ["A"], "#, true).is_err());
}

#[test]
fn gmail_refuses_unreadable_messages() {
    assert!(gmail_json(b"{}", false).is_err());
    assert!(gmail_json(b"{\"raw\": \"***\"}", false).is_err());
    assert!(gmail_json(b"nope", false).is_err());
    assert!(gmail_json(&raw("To: garbage\r\n\r\nx"), false).is_err());
}

#[test]
fn gmail_uploads() {
    let msg = b"To: a@x.com\r\nSubject: s\r\n\r\nhi";
    assert_eq!(
        gmail_upload(None, Some("media"), msg, false).unwrap().to,
        ["a@x.com"]
    );
    let multipart = b"--s\r\nContent-Type: application/json\r\n\r\n{}\r\n--s\r\nContent-Type: message/rfc822\r\n\r\nTo: b@y.com\r\n\r\nhi\r\n--s--\r\n";
    let e = gmail_upload(
        Some("multipart/related; boundary=s"),
        Some("multipart"),
        multipart,
        false,
    )
    .unwrap();
    assert_eq!(e.to, ["b@y.com"]);
    assert!(
        gmail_upload(None, Some("resumable"), b"{}", false)
            .unwrap_err()
            .to_string()
            .contains("resumable")
    );
    assert!(gmail_upload(None, None, msg, false).is_err());
}

#[test]
fn slack_channel_from_every_encoding() {
    let a = slack(
        None,
        Some("application/json; charset=utf-8"),
        br#"{"channel":"C1","text":"hi"}"#,
    )
    .unwrap();
    assert_eq!(a.channels, ["C1"]);
    let a = slack(
        None,
        Some("application/x-www-form-urlencoded"),
        b"channel=%23general&text=hi",
    )
    .unwrap();
    assert_eq!(a.channels, ["#general"]);
    let a = slack(Some("channel=C2"), None, b"").unwrap();
    assert_eq!(a.channels, ["C2"]);
    let a = slack(None, Some("multipart/form-data; boundary=z"), b"--z\r\nContent-Disposition: form-data; name=\"channels\"\r\n\r\nC1,C3\r\n--z\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nxx\r\n--z--\r\n").unwrap();
    assert_eq!(a.channels, ["C1", "C3"]);
    // Query and body disagreeing: both are listed, none hidden.
    let a = slack(
        Some("channel=C9"),
        Some("application/json"),
        br#"{"channel":"C1"}"#,
    )
    .unwrap();
    assert_eq!(a.channels, ["C9", "C1"]);
}

#[test]
fn slack_tokens_never_pass() {
    for (q, ct, body) in [
        (Some("token=xoxb-1"), None, &b""[..]),
        (
            None,
            Some("application/x-www-form-urlencoded"),
            &b"channel=C1&token=xoxb-1"[..],
        ),
        (
            None,
            Some("application/json"),
            &br#"{"channel":"C1","token":"xoxb"}"#[..],
        ),
        (
            None,
            Some("multipart/form-data; boundary=z"),
            &b"--z\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\nxoxb\r\n--z--\r\n"[..],
        ),
        (Some("TOKEN=x"), None, &b""[..]),
    ] {
        assert!(
            matches!(slack(q, ct, body), Err(BodyError::SlackToken(_))),
            "{q:?} {body:?}"
        );
    }
}

#[test]
fn slack_refuses_unreadable_bodies() {
    assert!(slack(None, Some("application/json"), b"{nope").is_err());
    assert!(slack(None, Some("application/json"), b"[1]").is_err());
    assert!(
        slack(
            None,
            Some("application/json"),
            br#"{"channel": {"id": "C1"}}"#
        )
        .is_err()
    );
    assert!(slack(None, Some("text/plain"), b"channel=C1").is_err());
    let deep = "[".repeat(10_000);
    assert!(slack(None, Some("application/json"), deep.as_bytes()).is_err());
}
