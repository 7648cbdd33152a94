use http::HeaderMap;

use super::*;
use crate::intent::testing::{get, intent, tuple_of};
use crate::intent::{BodyError, Class, IntentError};

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
    // Repeats within one list are listed once.
    let a = slack(Some("channels=C1,C2,C1"), None, b"").unwrap();
    assert_eq!(a.channels, ["C1", "C2"]);
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

#[test]
fn slack_ambiguous_arguments_are_refused() {
    let form = Some("application/x-www-form-urlencoded");
    let json = Some("application/json");
    let mp = Some("multipart/form-data; boundary=z");
    let part = |headers: &str, value: &str| format!("--z\r\n{headers}\r\n\r\n{value}\r\n");
    let cases: Vec<(Option<&str>, Option<&str>, String, &str)> = vec![
        (None, form, "channel=C1&channel=C2".into(), "more than once"),
        (
            Some("channel=C1"),
            form,
            "channel=C1".into(),
            "again in the body",
        ),
        (
            Some("channel=C1"),
            json,
            r#"{"channel":"C1"}"#.into(),
            "again in the body",
        ),
        (
            None,
            form,
            "channel=C1&channel_id=C2".into(),
            "both name channels",
        ),
        (
            None,
            form,
            "channels=C1&channel=C1".into(),
            "both name channels",
        ),
        (None, form, "+channel=C2".into(), "reads as channel"),
        (None, form, "channel+=C2".into(), "reads as channel"),
        (None, form, "%20channel=C2".into(), "reads as channel"),
        (None, form, "Channel=C2".into(), "reads as channel"),
        (None, form, "CHANNEL_ID=C2".into(), "reads as channel_id"),
        (None, form, "channel%00=C2".into(), "reads as channel"),
        (None, form, "channel[]=C2".into(), "reads as channel"),
        (None, form, "channel.id=C2".into(), "reads as channel_id"),
        (None, form, "text%00x=1".into(), "not a plain name"),
        (None, form, "=C1".into(), "not a plain name"),
        (None, form, "channel=C1%00".into(), "not printable ASCII"),
        (None, form, "channel=C1+C2".into(), "not printable ASCII"),
        (None, form, "channel=%C3%A9".into(), "not printable ASCII"),
        (None, form, "channels=C1,,C2".into(), "not printable ASCII"),
        (
            None,
            json,
            r#"{"channel":"C1","channel":"C2"}"#.into(),
            "twice",
        ),
        (
            None,
            json,
            r#"{"channel":"C1","text":"a","text":"b"}"#.into(),
            "twice",
        ),
        (None, json, r#"{"Channel":"C2"}"#.into(), "reads as channel"),
        (
            None,
            json,
            r#"{"channel":"C\u00e9"}"#.into(),
            "not printable ASCII",
        ),
        (
            None,
            mp,
            part(
                "Content-Disposition: form-data; name=\"channel\"; name=\"text\"",
                "C1",
            ) + "--z--",
            "parameter name twice",
        ),
        (
            None,
            mp,
            part("Content-Disposition: form-data", "C1") + "--z--",
            "has no name",
        ),
        (
            None,
            mp,
            part("Content-Type: text/plain", "C1") + "--z--",
            "no Content-Disposition",
        ),
        (
            None,
            mp,
            part(
                "Content-Disposition: form-data; name=channel\r\nContent-Disposition: form-data; name=text",
                "C1",
            ) + "--z--",
            "two Content-Disposition",
        ),
        (
            None,
            mp,
            part("Content-Disposition: form-data; name*=UTF-8''channel", "C1") + "--z--",
            "RFC 2231",
        ),
        (
            None,
            mp,
            part("Content-Disposition: form-data; name=\"channel\"", "C1")
                + &part("Content-Disposition: form-data; name=\"channel\"", "C2")
                + "--z--",
            "more than once",
        ),
        (
            None,
            mp,
            part(
                "Content-Disposition: form-data; name=\"channels\"; filename=\"c\"",
                "C1",
            ) + "--z--",
            "as a file",
        ),
        (
            None,
            mp,
            part(
                "Content-Disposition: form-data; name=\"file\"\r\nContent-Type: multipart/mixed; boundary=y",
                "--y\r\n\r\nx\r\n--y--",
            ) + "--z--",
            "itself multipart",
        ),
        (
            None,
            mp,
            part(
                "Content-Disposition: form-data; name=\"channel\"\r\nContent-Transfer-Encoding: base64",
                "QzE=",
            ) + "--z--",
            "Content-Transfer-Encoding",
        ),
        (
            None,
            mp,
            part("Content-Disposition: form-data; name=\"channel\"", "C1"),
            "no closing",
        ),
    ];
    for (q, ct, body, why) in cases {
        match slack(q, ct, body.as_bytes()) {
            Err(BodyError::Ambiguous(e)) => assert!(e.contains(why), "{q:?} {body:?}: {e}"),
            other => panic!("{q:?} {body:?}: expected ambiguous ({why}), got {other:?}"),
        }
    }
    // The token rule sees through the same spellings.
    for (q, ct, body) in [
        (None, form, "Token=x"),
        (None, form, "+token=x"),
        (None, form, "token%00=x"),
        (None, form, "token[]=x"),
        (None, form, "%20token%20=x"),
        (None, json, r#"{"token": 5}"#),
        (Some("tOkEn=x"), None, ""),
        (
            None,
            mp,
            "--z\r\nContent-Disposition: form-data; name=\"TOKEN\"\r\n\r\nx\r\n--z--",
        ),
    ] {
        assert!(
            matches!(slack(q, ct, body.as_bytes()), Err(BodyError::SlackToken(_))),
            "{q:?} {body:?}: {:?}",
            slack(q, ct, body.as_bytes())
        );
    }
}

#[test]
fn slack_channel_count_is_capped() {
    let list = |n: usize| {
        let ids: Vec<String> = (0..n).map(|i| format!("C{i:07}")).collect();
        format!("channels={}", ids.join(","))
    };
    let a = slack(None, None, list(SLACK_MAX_CHANNELS).as_bytes()).unwrap();
    assert_eq!(a.channels.len(), SLACK_MAX_CHANNELS);
    assert!(matches!(
        slack(None, None, list(SLACK_MAX_CHANNELS + 1).as_bytes()),
        Err(BodyError::TooComplex(_))
    ));
    // The issue's body: 540 KB naming 60,000 channels (5–7 s of CPU before).
    let body = list(60_000);
    let t = std::time::Instant::now();
    let r = slack(
        None,
        Some("application/x-www-form-urlencoded"),
        body.as_bytes(),
    );
    eprintln!(
        "60k-channel Slack form ({} bytes): {:?}",
        body.len(),
        t.elapsed()
    );
    assert!(matches!(r, Err(BodyError::TooComplex(_))), "{r:?}");
}

#[test]
fn slack_tuples() {
    let intent = intent();
    let mut h = HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    let t = tuple_of(
        &intent,
        "POST",
        "slack.com",
        "/api/chat.postMessage",
        &h,
        br#"{"channel":"C42","text":"x"}"#,
    )
    .unwrap();
    assert_eq!(&*t.action, "slack.chat.postMessage");
    assert_eq!(
        t.json["resource"],
        serde_json::json!({"type": "slack.channel", "id": "C42", "properties": {}})
    );
    assert_eq!(t.json["context"]["body"]["channel"], "C42");
    // GET with arguments in the query works too, and a token there is refused.
    let t = get(
        &intent,
        "slack.com",
        "/api/conversations.history?channel=C7",
    );
    assert_eq!(t.json["resource"]["id"], "C7");
    assert_eq!(t.class, Class::Read);
    assert!(matches!(
        tuple_of(
            &intent,
            "GET",
            "slack.com",
            "/api/auth.test?token=xoxb-1",
            &HeaderMap::new(),
            b""
        ),
        Err(IntentError::Body(BodyError::SlackToken(_)))
    ));
}
