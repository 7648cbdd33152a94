//! Property tests of the Slack reader: no input panics it; well-formed calls generated
//! from structured arguments read back as exactly their channels in every encoding; the
//! ambiguous variants of those calls (a duplicate, a second channel argument, a lenient
//! spelling) are refused; and the worst bodies of the inspection bound stop at the budget.

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

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
    let form = Some("application/x-www-form-urlencoded");
    let json = Some("application/json");
    let mp = Some("multipart/form-data; boundary=z");
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
    ];
    for (name, run) in cases {
        let t = std::time::Instant::now();
        let r = run();
        eprintln!("{name}: {:?} -> {r:?}", t.elapsed());
    }
}
