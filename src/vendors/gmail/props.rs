//! Property tests of the Gmail reader: no input panics it; well-formed messages generated
//! from structured recipients read back as exactly those recipients in every encoding; the
//! ambiguous variants of those messages (a bare CR, a missing comma, a duplicate, a nested
//! part) are refused; and the worst bodies of the inspection bound stop at the budget.

use base64::Engine as _;
use proptest::prelude::*;

use super::*;
use crate::intent::extract::budget::WORK_BUDGET;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

#[derive(Debug, Clone)]
struct Recipient {
    local: String,
    domain: String,
    /// How it is written: bare, <…>, Name <…>, "quoted, name" <…>, encoded word, comment.
    style: u8,
    upper: bool,
}

impl Recipient {
    fn address(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }

    fn render(&self) -> String {
        let mut a = self.address();
        if self.upper {
            a = a.to_ascii_uppercase();
        }
        match self.style {
            0 => a,
            1 => format!("<{a}>"),
            2 => format!("Jo Q. Public <{a}>"),
            3 => format!("\"x@evil.test, <y@evil.test>\" <{a}>"),
            4 => format!("=?UTF-8?B?w4lsaXNl?= <{a}>"),
            _ => format!("{a} (c@evil.test, <d>)"),
        }
    }
}

fn recipient() -> impl Strategy<Value = Recipient> {
    (
        "[a-z0-9]{1,6}(\\.[a-z0-9+_-]{1,4})?",
        "[a-z0-9]{1,6}(-[a-z0-9]{1,3})?(\\.[a-z]{2,4}){1,2}",
        0u8..6,
        any::<bool>(),
    )
        .prop_map(|(local, domain, style, upper)| Recipient {
            local,
            domain,
            style,
            upper,
        })
}

/// One address header: kind (0 To, 1 Cc, 2 Bcc), spelling of its name, recipients, whether
/// they sit in a group, and where the value folds (after which commas).
#[derive(Debug, Clone)]
struct Header {
    kind: usize,
    name: &'static str,
    recipients: Vec<Recipient>,
    group: bool,
    folds: Vec<bool>,
}

fn header() -> impl Strategy<Value = Header> {
    (
        0usize..3,
        any::<prop::sample::Index>(),
        prop::collection::vec(recipient(), 0..4),
        any::<bool>(),
        prop::collection::vec(any::<bool>(), 4),
    )
        .prop_map(|(kind, spelling, recipients, group, folds)| {
            let names = [
                ["To", "to", "TO"],
                ["Cc", "cc", "CC"],
                ["Bcc", "bcc", "BCC"],
            ];
            Header {
                kind,
                name: names[kind][spelling.index(3)],
                group: group || recipients.is_empty(),
                recipients,
                folds,
            }
        })
}

#[derive(Debug, Clone)]
struct Message {
    headers: Vec<Header>,
    lf: bool,
}

fn message() -> impl Strategy<Value = Message> {
    (prop::collection::vec(header(), 0..4), any::<bool>())
        .prop_map(|(headers, lf)| Message { headers, lf })
}

impl Message {
    fn eol(&self) -> &'static str {
        if self.lf { "\n" } else { "\r\n" }
    }

    /// The header lines (each possibly folded), `sep` between the addresses of the first
    /// header with two or more.
    fn lines(&self, missing_comma: bool) -> Vec<String> {
        let eol = self.eol();
        let mut lines = vec![
            "From: bot@example.com".to_owned(),
            "MIME-Version: 1.0".to_owned(),
        ];
        let mut dropped = false;
        for h in &self.headers {
            let mut value = String::new();
            for (i, r) in h.recipients.iter().enumerate() {
                if i > 0 {
                    if missing_comma && !dropped {
                        value.push(' ');
                        dropped = true;
                    } else {
                        value.push(',');
                        value.push_str(if h.folds[i % 4] { eol } else { "" });
                        value.push(' ');
                    }
                }
                value.push_str(&r.render());
            }
            if h.group {
                value = format!("team: {value};");
            }
            lines.push(format!("{}: {value}", h.name));
            lines.push("Subject: numbers".to_owned());
        }
        lines
    }

    fn render_with(&self, lines: &[String], joins: &[&str]) -> String {
        let mut out = String::new();
        for (i, l) in lines.iter().enumerate() {
            out.push_str(l);
            out.push_str(joins.get(i).copied().unwrap_or(self.eol()));
        }
        out.push_str(self.eol());
        out.push_str("body with To: x@evil.test\r\n");
        out
    }

    fn render(&self) -> String {
        self.render_with(&self.lines(false), &[])
    }

    fn expected(&self) -> [Vec<String>; 3] {
        let mut out: [Vec<String>; 3] = Default::default();
        for h in &self.headers {
            out[h.kind].extend(h.recipients.iter().map(Recipient::address));
        }
        out
    }

    fn has_two_in_a_header(&self) -> bool {
        self.headers.iter().any(|h| h.recipients.len() >= 2)
    }
}

fn got(e: &Email) -> [Vec<String>; 3] {
    [e.to.clone(), e.cc.clone(), e.bcc.clone()]
}

fn multipart_upload(message: &str, lf: bool) -> Vec<u8> {
    let eol = if lf { "\n" } else { "\r\n" };
    format!(
        "--==b=={eol}Content-Type: application/json{eol}{eol}{{\"labelIds\": [\"INBOX\"]}}{eol}--==b=={eol}Content-Type: message/rfc822{eol}{eol}{message}{eol}--==b==--{eol}"
    )
    .into_bytes()
}

const UPLOAD_CT: Option<&str> = Some("multipart/related; boundary=\"==b==\"");

proptest! {
    #![proptest_config(config())]

    /// A message built from recipients reads back as exactly those recipients, whether
    /// sent as JSON `raw`, as a media upload or as a multipart upload.
    #[test]
    fn gmail_reads_back_generated_recipients(m in message()) {
        let text = m.render();
        let want = m.expected();
        prop_assert_eq!(got(&rfc822(text.as_bytes(), false).unwrap()), want.clone(), "{}", text);
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&text);
        let body = json!({ "raw": raw }).to_string();
        let e = gmail_json(body.as_bytes(), false).unwrap().unwrap();
        prop_assert_eq!(got(&e), want.clone());
        let e = gmail_upload(None, Some("media"), text.as_bytes(), false).unwrap();
        prop_assert_eq!(got(&e), want.clone());
        let e = gmail_upload(UPLOAD_CT, Some("multipart"), &multipart_upload(&text, m.lf), false).unwrap();
        prop_assert_eq!(got(&e), want);
    }

    /// The same messages with a bare CR or bare LF between two headers, or a comma missing
    /// between two addresses, are refused as ambiguous, in every encoding.
    #[test]
    fn gmail_refuses_ambiguous_variants(m in message(), at in any::<prop::sample::Index>(), bare_lf in any::<bool>()) {
        let lines = m.lines(false);
        let mut joins = vec![m.eol(); lines.len()];
        let cut = at.index(lines.len() - 1);
        joins[cut] = if bare_lf && !m.lf { "\n" } else { "\r" };
        let mut variants = vec![m.render_with(&lines, &joins)];
        if m.has_two_in_a_header() {
            variants.push(m.render_with(&m.lines(true), &[]));
        }
        for text in variants {
            let refused = |r: Result<Email, BodyError>| matches!(r, Err(BodyError::Ambiguous(_)));
            prop_assert!(refused(rfc822(text.as_bytes(), false)), "{:?}", text);
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&text);
            let body = json!({ "raw": raw }).to_string();
            prop_assert!(refused(gmail_json(body.as_bytes(), false).map(Option::unwrap_or_default)));
            prop_assert!(refused(gmail_upload(UPLOAD_CT, Some("multipart"), &multipart_upload(&text, m.lf), false)));
        }
    }

    /// A multipart upload whose first part is itself a multipart holding a message, and a
    /// duplicated `uploadType`, are refused.
    #[test]
    fn gmail_refuses_nested_uploads_and_duplicate_upload_types(m in message(), order in any::<bool>()) {
        let text = m.render();
        let inner = String::from_utf8(multipart_upload("To: a@example.com\r\n\r\nhi", false)).unwrap();
        let nested = format!(
            "--==b==\r\nContent-Type: multipart/related; boundary=\"==b==\"\r\n\r\n{inner}\r\n--==b==\r\nContent-Type: message/rfc822\r\n\r\n{text}\r\n--==b==--\r\n"
        );
        let nested = nested.replace("boundary=\"==b==\"\r\n\r\n--==b==\r\nContent-Type: app", "boundary=\"==i==\"\r\n\r\n--==i==\r\nContent-Type: app");
        prop_assert!(matches!(
            gmail_upload(UPLOAD_CT, Some("multipart"), nested.as_bytes(), false),
            Err(BodyError::Ambiguous(_))
        ));
        let q = if order { "uploadType=media&uploadType=multipart" } else { "uploadType=multipart&alt=json&uploadType=media" };
        prop_assert!(matches!(gmail_upload_type(Some(q)), Err(BodyError::Ambiguous(_))));
    }

    /// Token soup never panics the mail readers.
    #[test]
    fn gmail_never_panics(parts in prop::collection::vec(prop_oneof![
        Just("\r\n"), Just("\n"), Just("\r"), Just(" "), Just(":"), Just(","), Just(";"),
        Just("<"), Just(">"), Just("\""), Just("\\"), Just("("), Just(")"), Just("@"),
        Just("To"), Just("Cc"), Just("Content-Type: multipart/mixed; boundary=b"),
        Just("--b"), Just("--b--"), Just("a@x.com"), Just("é"), Just("\0"),
    ], 0..64)) {
        let text = parts.concat();
        let _ = rfc822(text.as_bytes(), false);
        let _ = rfc822(text.as_bytes(), true);
        let _ = gmail_upload(Some("multipart/related; boundary=b"), Some("multipart"), text.as_bytes(), false);
        let _ = gmail_json(text.as_bytes(), false);
    }
}

// ---------------------------------------------------------------------------------------
// Bounded work: the worst bodies of the inspection bound (1 MiB) stop at the budget or the
// caps, and every reading finishes (times printed with --nocapture, not asserted).

const MIB: usize = 1 << 20;

fn fill(prefix: &str, unit: &str, suffix: &str) -> Vec<u8> {
    let mut s = String::from(prefix);
    while s.len() + unit.len() + suffix.len() <= MIB {
        s.push_str(unit);
    }
    s.push_str(suffix);
    s.into_bytes()
}

#[test]
fn worst_case_bodies_of_one_mib_are_bounded() {
    let mut budget = Budget::default();
    type Case = Box<dyn Fn() -> Result<(), BodyError>>;
    let cases: Vec<(&str, Case)> = vec![
        (
            "mail: header lines",
            Box::new(|| rfc822(&fill("", "X: y\r\n", "\r\n"), false).map(drop)),
        ),
        (
            "mail: addresses",
            Box::new(|| rfc822(&fill("To: ", "a@x.co,", "a@x.co\r\n\r\n"), false).map(drop)),
        ),
        (
            "mail: nested comments",
            Box::new(|| {
                let n = MIB / 2 - 16;
                let value = "(".repeat(n) + &")".repeat(n);
                rfc822(format!("To: a@x.com {value}\r\n\r\n").as_bytes(), false).map(drop)
            }),
        ),
        (
            "mail: parts",
            Box::new(|| {
                rfc822(
                    &fill(
                        "To: a@x.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n",
                        "--b\r\n\r\nx\r\n",
                        "--b--",
                    ),
                    false,
                )
                .map(drop)
            }),
        ),
        (
            "mail: folds",
            Box::new(|| rfc822(&fill("To: a@x.com", "\r\n x", "\r\n\r\n"), false).map(drop)),
        ),
        (
            "upload: parts",
            Box::new(|| {
                gmail_upload(
                    Some("multipart/related; boundary=b"),
                    Some("multipart"),
                    &fill(
                        "",
                        "--b\r\nContent-Type: application/json\r\n\r\n{}\r\n",
                        "--b--",
                    ),
                    false,
                )
                .map(drop)
            }),
        ),
    ];
    for (name, run) in cases {
        let t = std::time::Instant::now();
        let r = run();
        eprintln!("{name}: {:?} -> {r:?}", t.elapsed());
    }
    // The counter itself: a mail of 1 MiB of addresses stops at the budget.
    let body = fill("To: ", "a@x.co,", "a@x.co\r\n\r\n");
    assert!(matches!(
        rfc822_in(&body, false, &mut budget),
        Err(BodyError::TooComplex(_))
    ));
    assert!(budget.spent() <= WORK_BUDGET);
}
