//! Property tests of the body extractors: no input panics them; well-formed bodies
//! generated from structured values (recipients, Slack arguments, GraphQL operations) read
//! back as exactly those values in every encoding; and the ambiguous variants of those
//! bodies (a bare CR, a missing comma, a duplicate, a nested part) are refused.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;

use base64::Engine as _;
use proptest::prelude::*;
use serde_json::json;

use super::*;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

// ---------------------------------------------------------------------------------------
// Gmail

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
// Slack

#[derive(Debug, Clone)]
struct SlackCall {
    key: Option<&'static str>,
    channels: Vec<String>,
    extras: Vec<(&'static str, String)>,
    /// 0 form, 1 JSON, 2 multipart, 3 query only.
    encoding: u8,
    in_query: bool,
}

fn slack_call() -> impl Strategy<Value = SlackCall> {
    (
        prop::option::of(prop::sample::select(SLACK_CHANNEL_KEYS.to_vec())),
        prop::collection::vec("[CGD][A-Z0-9]{2,10}|#[a-z0-9_-]{1,10}", 1..6),
        prop::sample::subsequence(
            vec![
                "text",
                "thread_ts",
                "blocks",
                "unfurl_links",
                "as_user",
                "username",
            ],
            0..4,
        ),
        prop::collection::vec("\\PC{0,20}", 6),
        0u8..4,
        any::<bool>(),
    )
        .prop_map(
            |(key, channels, names, values, encoding, in_query)| SlackCall {
                key,
                channels,
                extras: names.into_iter().zip(values).collect(),
                encoding,
                in_query: in_query || encoding == 3,
            },
        )
}

impl SlackCall {
    fn expected(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if self.key.is_some() {
            for c in &self.channels {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
        }
        out
    }

    /// (query, content type, body) with `extra` arguments added where the channel goes.
    fn encode(&self, extra: &[(String, String)]) -> (Option<String>, Option<String>, Vec<u8>) {
        let mut query_args: Vec<(String, String)> = Vec::new();
        let mut body_args: Vec<(String, String)> = self
            .extras
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let mut channel_args: Vec<(String, String)> = Vec::new();
        if let Some(k) = self.key {
            channel_args.push((k.to_owned(), self.channels.join(",")));
        }
        channel_args.extend(extra.iter().cloned());
        if self.in_query {
            query_args.extend(channel_args);
        } else {
            body_args.extend(channel_args);
        }
        if self.encoding == 3 {
            query_args.append(&mut body_args);
        }
        let form = |args: &[(String, String)]| {
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(args)
                .finish()
        };
        let query = (!query_args.is_empty()).then(|| form(&query_args));
        match self.encoding {
            0 => (
                query,
                Some("application/x-www-form-urlencoded".into()),
                form(&body_args).into_bytes(),
            ),
            1 => {
                // Built by hand, so that a duplicate key stays a duplicate.
                let pairs: Vec<String> = body_args
                    .iter()
                    .map(|(k, v)| format!("{}: {}", json!(k), json!(v)))
                    .collect();
                (
                    query,
                    Some("application/json; charset=utf-8".into()),
                    format!("{{{}}}", pairs.join(", ")).into_bytes(),
                )
            }
            2 => {
                let mut body = String::new();
                for (k, v) in &body_args {
                    body.push_str(&format!(
                        "--XyZ\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                    ));
                }
                body.push_str("--XyZ--\r\n");
                if body_args.is_empty() {
                    body.clear();
                }
                (
                    query,
                    Some("multipart/form-data; boundary=XyZ".into()),
                    body.into_bytes(),
                )
            }
            _ => (query, None, Vec::new()),
        }
    }
}

fn run_slack(
    (q, ct, body): &(Option<String>, Option<String>, Vec<u8>),
) -> Result<SlackArgs, BodyError> {
    slack(q.as_deref(), ct.as_deref(), body)
}

proptest! {
    #![proptest_config(config())]

    /// Slack arguments read back as exactly the generated channels, in every encoding.
    #[test]
    fn slack_reads_back_generated_channels(call in slack_call()) {
        let encoded = call.encode(&[]);
        let args = run_slack(&encoded).unwrap();
        prop_assert_eq!(args.channels, call.expected(), "{:?}", encoded);
    }

    /// A second channel-bearing argument (the same key again, or another one), a key that
    /// other parsers read as a channel key, or a token under any spelling is refused.
    #[test]
    fn slack_refuses_ambiguous_variants(
        call in slack_call(),
        other in prop::sample::select(SLACK_CHANNEL_KEYS.to_vec()),
        spelling in prop::sample::select(vec![" {}", "{} ", "+{}", "{}%00", "{}[]", "{}\0", "UPPER"]),
    ) {
        let refused = |r: Result<SlackArgs, BodyError>| matches!(r, Err(BodyError::Ambiguous(_)));
        // The same or another channel key, once more.
        let key = call.key.unwrap_or(other);
        let dup = SlackCall { key: Some(key), ..call.clone() };
        let again = [(other.to_owned(), "C1".to_owned())];
        prop_assert!(refused(run_slack(&dup.encode(&again))), "{:?}", dup.encode(&again));
        // In the query when the call has it in the body, and the other way round.
        if dup.encoding != 3 {
            let (q, _, _) = SlackCall { in_query: true, ..dup.clone() }.encode(&[]);
            let (_, ct, body) = SlackCall { in_query: false, ..dup.clone() }.encode(&[]);
            prop_assert!(refused(run_slack(&(q, ct, body))));
        }
        // A spelling that lenient parsers read as the channel key.
        let variant = if spelling == "UPPER" { other.to_ascii_uppercase() } else { spelling.replace("{}", other) };
        let odd = SlackCall { key: None, ..call.clone() };
        let extra = [(variant.clone(), "C9".to_owned())];
        prop_assert!(refused(run_slack(&odd.encode(&extra))), "{:?}", odd.encode(&extra));
        // The token, spelt the same ways.
        let token = if spelling == "UPPER" { "TOKEN".to_owned() } else { spelling.replace("{}", "token") };
        let extra = [(token, "xoxb-1".to_owned())];
        // (`token%00` with a literal `%00` is no token to anyone, but still no plain name.)
        let r = run_slack(&call.encode(&extra));
        prop_assert!(matches!(r, Err(BodyError::SlackToken(_) | BodyError::Ambiguous(_))), "{:?}", r);
        if !spelling.contains('%') && !spelling.contains('\0') {
            let form = SlackCall { encoding: 0, ..call.clone() };
            prop_assert!(matches!(run_slack(&form.encode(&extra)), Err(BodyError::SlackToken(_))));
        }
    }

    /// Token soup never panics the Slack reader, whatever the content type.
    #[test]
    fn slack_never_panics(parts in prop::collection::vec(prop_oneof![
        Just("&"), Just("="), Just("%"), Just("%00"), Just("+"), Just(","), Just("channel"),
        Just("channels"), Just("token"), Just("C1"), Just("\r\n"), Just("--z"), Just("--z--"),
        Just("Content-Disposition: form-data; name="), Just("\""), Just("{"), Just("}"),
        Just(":"), Just("é"),
    ], 0..64), ct in prop::sample::select(vec![
        "application/x-www-form-urlencoded", "application/json", "multipart/form-data; boundary=z", "text/plain",
    ])) {
        let text = parts.concat();
        let _ = slack(Some(&text), Some(ct), text.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// GraphQL

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

type Op = (bool, Vec<(&'static str, Option<String>, u8)>);

fn operations() -> impl Strategy<Value = Vec<Op>> {
    let field = (
        prop::sample::select(vec![
            "viewer",
            "repository",
            "createIssue",
            "deleteRef",
            "launch",
            "__typename",
        ]),
        prop::option::of("[a-z]{1,4}"),
        0u8..3,
    );
    prop::collection::vec((any::<bool>(), prop::collection::vec(field, 1..5)), 1..4)
}

proptest! {
    #![proptest_config(config())]

    /// Every top-level field of every operation, also those reached through inline and
    /// named fragments, is reported with its class.
    #[test]
    fn graphql_reads_back_generated_operations(ops in operations()) {
        let mut doc = String::new();
        let mut fragments = String::new();
        let mut want = Vec::new();
        let schema = schema();
        for (o, (mutation, fields)) in ops.iter().enumerate() {
            let kind = if *mutation { "mutation" } else { "query" };
            let root = if *mutation { "Mutation" } else { "Query" };
            doc.push_str(&format!("{kind} Op{o} {{"));
            for (f, (name, alias, wrap)) in fields.iter().enumerate() {
                let sel = match alias {
                    Some(a) => format!("{a}: {name}"),
                    None => (*name).to_owned(),
                };
                match wrap {
                    0 => doc.push_str(&format!(" {sel}")),
                    1 => doc.push_str(&format!(" ... on {root} {{ {sel} }}")),
                    _ => {
                        doc.push_str(&format!(" ...F{o}x{f}"));
                        fragments.push_str(&format!(" fragment F{o}x{f} on {root} {{ {sel} }}"));
                    }
                }
                let class = if *name == "__typename" {
                    Class::Read
                } else {
                    schema.fields[kind].get(*name).copied().unwrap_or(Class::Unknown)
                };
                want.push((kind, (*name).to_owned(), alias.clone(), class));
            }
            doc.push_str(" }\n");
        }
        doc.push_str(&fragments);
        let body = json!({ "query": doc }).to_string();
        let s = graphql(body.as_bytes(), &schema).unwrap();
        let have: Vec<_> = s.fields.iter().map(|f| (f.operation, f.field.clone(), f.alias.clone(), f.class)).collect();
        prop_assert_eq!(have, want, "{}", doc);
    }

    #[test]
    fn graphql_never_panics(parts in prop::collection::vec(prop_oneof![
        Just("{"), Just("}"), Just("..."), Just("fragment F on Query"), Just("F"), Just("query"),
        Just("mutation"), Just("viewer"), Just("("), Just(")"), Just(":"), Just(" "), Just("\""),
        Just("on"), Just("$v"), Just("@skip"),
    ], 0..64)) {
        let body = json!({ "query": parts.concat() }).to_string();
        let _ = graphql(body.as_bytes(), &schema());
    }
}

// ---------------------------------------------------------------------------------------
// Bounded work: the worst bodies of the inspection bound (1 MiB) stop at the budget or the
// caps, and every extractor finishes (times printed with --nocapture, not asserted).

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
    let form = Some("application/x-www-form-urlencoded");
    let json = Some("application/json");
    let mp = Some("multipart/form-data; boundary=z");
    let mut budget = Budget::default();
    type Case = Box<dyn Fn() -> Result<(), BodyError>>;
    let cases: Vec<(&str, Case)> = vec![
        (
            "slack form: channels list",
            Box::new(move || {
                slack(None, form, &fill("channels=", "C0000001,", "C0000002")).map(drop)
            }),
        ),
        (
            "slack form: repeated pairs",
            Box::new(move || slack(None, form, &fill("", "a=&", "")).map(drop)),
        ),
        (
            "slack form: distinct pairs",
            Box::new(move || {
                let mut s = String::new();
                let mut i = 0;
                while s.len() < MIB - 16 {
                    s.push_str(&format!("k{i}=&"));
                    i += 1;
                }
                slack(None, form, s.as_bytes()).map(drop)
            }),
        ),
        (
            "slack json: many keys",
            Box::new(move || {
                let mut s = String::from("{");
                let mut i = 0;
                while s.len() < MIB - 32 {
                    s.push_str(&format!("\"k{i}\":0,"));
                    i += 1;
                }
                s.push_str("\"end\":0}");
                slack(None, json, s.as_bytes()).map(drop)
            }),
        ),
        (
            "slack multipart: tiny parts",
            Box::new(move || {
                slack(
                    None,
                    mp,
                    &fill(
                        "",
                        "--z\r\nContent-Disposition: form-data; name=a\r\n\r\n\r\n",
                        "--z--",
                    ),
                )
                .map(drop)
            }),
        ),
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
        (
            "graphql: fields",
            Box::new(|| {
                let mut doc = String::from("{");
                while doc.len() < MIB - 16 {
                    doc.push_str(" viewer");
                }
                doc.push('}');
                graphql(json!({ "query": doc }).to_string().as_bytes(), &schema()).map(drop)
            }),
        ),
        (
            "graphql: nesting",
            Box::new(|| {
                let doc = "{ a".repeat(MIB / 8) + &"}".repeat(MIB / 8);
                graphql(json!({ "query": doc }).to_string().as_bytes(), &schema()).map(drop)
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
