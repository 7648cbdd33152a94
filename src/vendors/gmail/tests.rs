use base64::Engine as _;
use http::HeaderMap;

use super::*;
use crate::intent::testing::{intent, tuple_of};

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
fn gmail_cut_off_bodies() {
    let big = format!("To: a@x.com\r\nSubject: s\r\n\r\n{}", "x".repeat(5000));
    // A cut-off JSON body could hide a second "raw" beyond the cut: refused.
    let body = raw(&big);
    assert!(matches!(
        gmail_json(&body[..200], true),
        Err(BodyError::Ambiguous(_))
    ));
    // A cut-off media upload still gives its recipients when its headers end in the prefix.
    let e = gmail_upload(None, Some("media"), &big.as_bytes()[..200], true).unwrap();
    assert_eq!(e.to, ["a@x.com"]);
    assert_eq!(e.attachments, None);
    // ... and is refused when they do not.
    let long = format!(
        "Subject: {}\r\nBcc: evil@evil.test\r\n\r\n",
        "x".repeat(300)
    );
    assert!(matches!(
        gmail_upload(None, Some("media"), &long.as_bytes()[..200], true),
        Err(BodyError::Ambiguous(_))
    ));
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

// ---------------------------------------------------------------------------------------
// Ambiguity (issue 15, finding 4): what two readers could read differently is refused.

fn ambiguous_msg(msg: &str) -> String {
    match rfc822(msg.as_bytes(), false) {
        Err(BodyError::Ambiguous(why)) => why,
        other => panic!("{msg:?}: expected ambiguous, got {other:?}"),
    }
}

#[test]
fn mail_headers_with_bare_cr_lf_or_bad_folding_are_refused() {
    for (msg, why) in [
        (
            "Bcc: x@evil.example\rTo: a@example.com\r\n\r\nhi",
            "bare CR",
        ),
        (
            "To: a@example.com\r\nBcc: x@evil.example\nSubject: s\r\n\r\nhi",
            "bare LF",
        ),
        (
            "To: a@example.com\nBcc: x@evil.example\r\n\r\nhi",
            "bare CR",
        ),
        (" To: a@example.com\r\n\r\nhi", "before any header"),
        (
            "To: a@example.com\r\n \r\nBcc: x@evil.example\r\n\r\nhi",
            "only whitespace",
        ),
        (
            "To: a@example.com\r\nBcc x@evil.example\r\n\r\nhi",
            "without a colon",
        ),
        ("To : a@example.com\r\n\r\nhi", "invalid name"),
        (
            "From bob Tue Jan 1\r\nTo: a@example.com\r\n\r\nhi",
            "without a colon",
        ),
        (
            "From bob Tue Jan 1 10:00\r\nTo: a@example.com\r\n\r\nhi",
            "invalid name",
        ),
        ("To: a@example.com\r\nX: \0\r\n\r\nhi", "control character"),
    ] {
        let e = ambiguous_msg(msg);
        assert!(e.contains(why), "{msg:?}: {e}");
    }
    // Consistent bare-LF messages (Python's email writes them) and folding are fine.
    let e = rfc822(
        b"To: a@example.com,\n b@corp.io\nCc: c@x.org\n\nhi\r\n",
        false,
    )
    .unwrap();
    assert_eq!(e.to, ["a@example.com", "b@corp.io"]);
    assert_eq!(e.cc, ["c@x.org"]);
    // A message with headers only.
    assert_eq!(rfc822(b"To: a@x.com", false).unwrap().to, ["a@x.com"]);
}

#[test]
fn address_lists_are_read_strictly() {
    for (value, why) in [
        ("a@example.com b@evil.example", "without a comma"),
        ("Alice a@example.com", "display name without angle brackets"),
        (
            "\"Alice\" a@example.com",
            "display name without angle brackets",
        ),
        ("Alice <a@example.com> b@evil.example", "without a comma"),
        ("Alice <a@example.com> junk", "without a comma"),
        ("Alice <a@example.com>, ", "without @"),
        ("a@example.com,,b@corp.io", "without @"),
        ("garbage", "without @"),
        ("g: h: a@x.com;;", "group inside a group"),
        ("g: a@x.com", "not closed"),
        ("<@route:a@x.com>", "source route"),
        ("<a@x.com", "inside the angle brackets"),
        ("< a@x.com>", "dot-atom"),
        ("\"a@evil.example\"@example.com", "quoted local part"),
        ("a @example.com", "before @"),
        ("a(c)@example.com", "before @"),
        ("a@[1.2.3.4]", "domain"),
        ("a@example.com.", "domain"),
        ("a@-x.com", "domain"),
        ("a..b@x.com", "dot-atom"),
        ("é@x.com", "dot-atom"),
        ("a@exämple.com", "without a comma"),
        ("Alice (unterminated <a@x.com>", "unterminated comment"),
        ("\"Alice <a@x.com>", "unterminated quoted"),
    ] {
        let e = ambiguous_msg(&format!("To: {value}\r\n\r\nhi"));
        assert!(e.contains(why), "{value:?}: {e}");
    }
    for (value, want) in [
        ("A@X.com", vec!["a@x.com"]),
        (
            "\"Doe, John\" <j@x.com>, Mary Q. Public <m@y.org>",
            vec!["j@x.com", "m@y.org"],
        ),
        ("=?UTF-8?B?w4lsaXNl?= <e@x.com>", vec!["e@x.com"]),
        ("Élise <e@x.com>", vec!["e@x.com"]),
        (
            "a@x.com (Alice), (team) Bob <b@y.com> (work)",
            vec!["a@x.com", "b@y.com"],
        ),
        ("undisclosed-recipients:;", vec![]),
        (
            "team: a@x.com, B <b@y.com>;, c@z.io",
            vec!["a@x.com", "b@y.com", "c@z.io"],
        ),
        ("<a@x.com>", vec!["a@x.com"]),
        ("   ", vec![]),
    ] {
        let e = rfc822(format!("To: {value}\r\n\r\nhi").as_bytes(), false)
            .unwrap_or_else(|e| panic!("{value:?}: {e}"));
        assert_eq!(e.to, want, "{value:?}");
    }
    // Resent-* recipients are read differently by different readers: refused.
    let e = ambiguous_msg("To: a@x.com\r\nResent-Bcc: x@evil.example\r\n\r\nhi");
    assert!(e.contains("Resent-Bcc"), "{e}");
    // Every To/Cc/Bcc header counts, whatever its case.
    let e = rfc822(b"to: a@x.com\r\nTO: b@y.com\r\nbcc: c@z.io\r\n\r\n", false).unwrap();
    assert_eq!((e.to.len(), e.bcc.len()), (2, 1));
}

#[test]
fn gmail_json_duplicates_are_refused() {
    let r = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("To: a@x.com\r\n\r\nhi");
    let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("To: x@evil.test\r\n\r\nhi");
    for body in [
        format!(r#"{{"raw": "{r}", "raw": "{evil}"}}"#),
        format!(r#"{{"raw": "{r}", "\u0072aw": "{evil}"}}"#),
        format!(r#"{{"raw": "{r}", "message": {{"raw": "{evil}"}}}}"#),
        format!(r#"{{"message": {{"raw": "{r}", "raw": "{evil}"}}}}"#),
    ] {
        assert!(
            matches!(
                gmail_json(body.as_bytes(), false),
                Err(BodyError::Ambiguous(_))
            ),
            "{body}"
        );
    }
}

#[test]
fn gmail_upload_type_must_be_given_once_exactly() {
    assert_eq!(gmail_upload_type(None).unwrap(), None);
    assert_eq!(
        gmail_upload_type(Some("uploadType=media&x=1"))
            .unwrap()
            .as_deref(),
        Some("media")
    );
    for q in [
        "uploadType=media&uploadType=multipart",
        "uploadType=media&uploadtype=multipart",
        "UploadType=media",
        "upload_type=media",
        "%24uploadType=media",
        "uploadType%20=media",
    ] {
        assert!(
            matches!(gmail_upload_type(Some(q)), Err(BodyError::Ambiguous(_))),
            "{q}"
        );
    }
}

const CT: Option<&str> = Some("multipart/related; boundary=s");

fn upload(body: &str) -> Result<Email, BodyError> {
    gmail_upload(CT, Some("multipart"), body.as_bytes(), false)
}

#[test]
fn multipart_uploads_hold_exactly_metadata_and_message() {
    let ok = "--s\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{\"threadId\": \"t\"}\r\n--s\r\nContent-Type: message/rfc822\r\n\r\nTo: b@y.com\r\n\r\nhi\r\n--s--\r\n";
    assert_eq!(upload(ok).unwrap().to, ["b@y.com"]);
    // What google-api-python-client writes: bare LF throughout, MIME-Version headers.
    let python = "--===1==\nContent-Type: application/json\nMIME-Version: 1.0\n\n{}\n--===1==\nContent-Type: message/rfc822\nMIME-Version: 1.0\n\nTo: b@y.com\n\nhi\n--===1==--\n";
    let e = gmail_upload(
        Some("multipart/related; boundary=\"===1==\""),
        Some("multipart"),
        python.as_bytes(),
        false,
    )
    .unwrap();
    assert_eq!(e.to, ["b@y.com"]);
    let meta = "--s\r\nContent-Type: application/json\r\n\r\n{}\r\n";
    let msg = "--s\r\nContent-Type: message/rfc822\r\n\r\nTo: b@y.com\r\n\r\nhi\r\n";
    for (body, why) in [
        // The first part itself multipart (the issue's attack).
        (
            format!(
                "--s\r\nContent-Type: multipart/related; boundary=t\r\n\r\n--t\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--t\r\nContent-Type: message/rfc822\r\n\r\nTo: a@example.com\r\n\r\nhi\r\n--t--\r\n\r\n{msg}--s--\r\n"
            ),
            "metadata part is \"multipart/related\"",
        ),
        (
            format!(
                "{meta}--s\r\nContent-Type: multipart/mixed; boundary=t\r\n\r\n--t\r\n\r\nx\r\n--t--\r\n--s--\r\n"
            ),
            "is \"multipart/mixed\"",
        ),
        (format!("{meta}{msg}{msg}--s--\r\n"), "exactly two parts"),
        (format!("{msg}--s--\r\n"), "exactly two parts"),
        (
            format!("{msg}{meta}--s--\r\n"),
            "metadata part is \"message/rfc822\"",
        ),
        (
            format!("preamble\r\n{meta}{msg}--s--\r\n"),
            "does not begin",
        ),
        (format!("{meta}{msg}--s--\r\nepilogue"), "after its closing"),
        (format!("{meta}{msg}"), "no closing"),
        (
            format!(
                "{meta}--s \r\nContent-Type: message/rfc822\r\n\r\nTo: b@y.com\r\n\r\nhi\r\n--s--"
            ),
            "goes on with other text",
        ),
        (
            format!(
                "{meta}--sx\r\nContent-Type: message/rfc822\r\n\r\nTo: b@y.com\r\n\r\nhi\r\n--s--"
            ),
            "goes on with other text",
        ),
        (
            format!(
                "{meta}--s\nContent-Type: message/rfc822\r\n\r\nTo: b@y.com\r\n\r\nhi\r\n--s--"
            ),
            "goes on with other text",
        ),
        (
            "--s\r\nContent-Type: application/json\r\n\r\n{}\n--s\r\nContent-Type: message/rfc822\r\n\r\nTo: b@y.com\r\n\r\nhi\r\n--s--"
                .to_owned(),
            "mixes CRLF and bare LF",
        ),
        (
            format!(
                "--s\r\nContent-Type: application/json\r\n\r\n{{\"raw\": \"x\"}}\r\n{msg}--s--"
            ),
            "carries a \"raw\"",
        ),
        (
            format!(
                "{meta}--s\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nVG86IGJAeS5jb20NCg0K\r\n--s--"
            ),
            "Content-Transfer-Encoding",
        ),
        (
            format!(
                "{meta}--s\r\nContent-Type: message/rfc822\r\nContent-Type: text/plain\r\n\r\nTo: b@y.com\r\n\r\n--s--"
            ),
            "two Content-Type",
        ),
        (
            format!(
                "{meta}--s\r\n--s\r\nContent-Type: message/rfc822\r\n\r\nTo: b@y.com\r\n\r\n--s--"
            ),
            "empty part",
        ),
        (
            format!(
                "{meta}--s\r\nContent-Type: message/rfc822\r\n\r\nBcc: x@evil.example\rTo: b@y.com\r\n\r\nhi\r\n--s--"
            ),
            "bare CR",
        ),
    ] {
        match upload(&body) {
            Err(BodyError::Ambiguous(e)) => assert!(e.contains(why), "{body:?}: {e}"),
            other => panic!("{body:?}: expected ambiguous, got {other:?}"),
        }
    }
    for ct in [
        "multipart/related; boundary=s; boundary=t",
        "multipart/related; boundary*=s",
        "multipart/related; boundary=\"s\\\"\"",
        "multipart/related; boundary=s x",
    ] {
        let body = format!("{meta}{msg}--s--\r\n");
        assert!(
            matches!(
                gmail_upload(Some(ct), Some("multipart"), body.as_bytes(), false),
                Err(BodyError::Ambiguous(_))
            ),
            "{ct}"
        );
    }
    // A multipart upload cut off at the bound cannot be checked.
    assert!(matches!(
        gmail_upload(CT, Some("multipart"), ok.as_bytes(), true),
        Err(BodyError::Ambiguous(_))
    ));
}

#[test]
fn attachments_are_counted_without_unbounded_nesting() {
    // mail-parser 0.11 built one nested message per "Content-Type: message/rfc822" header
    // block and overflowed a 2 MiB stack (a tokio worker's) dropping ~700 KiB of them,
    // aborting the whole proxy. The message's own type is read, nested messages never.
    let mut m = String::from("To: a@x.com\r\n");
    while m.len() < 1 << 20 {
        m.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    let e = rfc822(m.as_bytes(), false).unwrap();
    assert_eq!((e.to.len(), e.attachments), (1, Some(0)));
    // mail-parser 0.11 overflowed the stack dropping this (nested message/rfc822 parts);
    // nested messages count as one attachment and are not opened.
    let mut m = String::from("To: a@x.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n");
    while m.len() < 1 << 20 {
        m.push_str("--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n");
    }
    assert!(rfc822(m.as_bytes(), false).is_err());
    let fwd = "To: a@x.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\npreamble\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee below\r\n--b  \r\nContent-Type: message/rfc822\r\n\r\nTo: x@y.z\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c--\r\n--b\r\nContent-Type: image/png\r\n\r\nPNG\r\n--b--\r\nepilogue";
    assert_eq!(rfc822(fwd.as_bytes(), false).unwrap().attachments, Some(2));
    // Deep multipart nesting is refused as too complex, not followed.
    let mut deep = String::from("x");
    for i in (0..40).rev() {
        deep = format!(
            "Content-Type: multipart/mixed; boundary=b{i}z\r\n\r\n--b{i}z\r\n{deep}\r\n--b{i}z--"
        );
    }
    let deep = format!("To: a@x.com\r\n{deep}");
    let r = rfc822(deep.as_bytes(), false);
    assert!(matches!(r, Err(BodyError::TooComplex(_))), "{r:?}");
}

#[test]
fn gmail_tuples() {
    let intent = intent();
    let raw =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("To: a@x.com, b@y.org\r\n\r\nhi");
    let body = serde_json::json!({ "raw": raw }).to_string();
    let mut h = HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    let t = tuple_of(
        &intent,
        "POST",
        "gmail.googleapis.com",
        "/gmail/v1/users/me/messages/send",
        &h,
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(&*t.action, "gmail.users.messages.send");
    assert_eq!(t.json["resource"]["type"], "gmail.mailbox");
    assert_eq!(t.json["resource"]["id"], "me");
    assert_eq!(
        t.json["context"]["body"]["email"]["domains"],
        serde_json::json!(["x.com", "y.org"])
    );
    let t = tuple_of(
        &intent,
        "POST",
        "gmail.googleapis.com",
        "/upload/gmail/v1/users/me/messages/send?uploadType=media",
        &HeaderMap::new(),
        b"To: c@z.net\r\n\r\nhi",
    )
    .unwrap();
    assert_eq!(&*t.action, "gmail.users.messages.send");
    assert_eq!(
        t.json["context"]["body"]["email"]["to"],
        serde_json::json!(["c@z.net"])
    );
}
