//! Path normalization for matching. The path the upstream receives is never rewritten; this
//! only decides which operation it names, and refuses paths whose meaning depends on who
//! decodes them (encoded slashes, double encoding, dot segments), since a server that decodes
//! them differently from us would act on an operation we did not judge.

use std::borrow::Cow;

/// A path whose operation cannot be determined safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error(
        "the path contains an encoded slash or backslash (%2F, %5C); send path separators unencoded"
    )]
    EncodedSeparator,
    #[error("the path is percent-encoded twice (%25 followed by hex digits)")]
    DoubleEncoded,
    #[error("the path has malformed percent-encoding")]
    BadPercent,
    #[error("the path contains a dot segment (. or ..)")]
    DotSegment,
    #[error("the path contains a backslash or a control character")]
    BadCharacter,
    #[error("the path must start with /")]
    NotAbsolute,
}

/// Normalizes a request path for matching: percent-encoded unreserved characters decoded,
/// one trailing slash dropped; refuses ambiguous paths.
pub(super) fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = path.as_bytes();
    let mut out: Option<String> = None;
    let mut i = 0;
    let mut segment_start = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(h), Some(l)) => (hex(*h), hex(*l)),
                    _ => (None, None),
                };
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadPercent);
                };
                let decoded = hi << 4 | lo;
                match decoded {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b'%' if bytes.get(i + 3).and_then(|c| hex(*c)).is_some()
                        && bytes.get(i + 4).and_then(|c| hex(*c)).is_some() =>
                    {
                        return Err(PathError::DoubleEncoded);
                    }
                    0..=0x1f | 0x7f => return Err(PathError::BadCharacter),
                    _ => {}
                }
                let s = out.get_or_insert_with(|| path[..i].to_owned());
                if decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'.' | b'_' | b'~') {
                    s.push(decoded as char);
                } else {
                    s.push('%');
                    s.push(HEX[(decoded >> 4) as usize] as char);
                    s.push(HEX[(decoded & 15) as usize] as char);
                }
                i += 3;
                continue;
            }
            b'\\' | 0..=0x1f | 0x7f => return Err(PathError::BadCharacter),
            b'/' => {
                // Offsets are in `out` once it exists, in `path` before.
                let here = out.as_ref().map_or(i, String::len);
                check_dots(&out, path, segment_start, here)?;
                segment_start = here + 1;
            }
            _ => {}
        }
        if let Some(s) = &mut out {
            // Multi-byte UTF-8 is copied byte by byte; the string stays valid as a whole.
            let ch_len = utf8_len(b);
            s.push_str(&path[i..i + ch_len]);
            i += ch_len;
        } else {
            i += 1;
        }
    }
    let end = out.as_ref().map_or(path.len(), String::len);
    check_dots(&out, path, segment_start, end)?;
    // Double encoding spelt with encoded hex digits (`%25%34%31`) shows once they are
    // decoded: the result must not decode to another escape.
    let text = out.as_deref().unwrap_or(path).as_bytes();
    if memchr::memmem::find_iter(text, b"%25").any(|i| {
        text.get(i + 3).and_then(|c| hex(*c)).is_some()
            && text.get(i + 4).and_then(|c| hex(*c)).is_some()
    }) {
        return Err(PathError::DoubleEncoded);
    }
    let strip = |p: &str| p.len() > 1 && p.ends_with('/');
    Ok(match out {
        None if strip(path) => Cow::Borrowed(&path[..path.len() - 1]),
        None => Cow::Borrowed(path),
        Some(mut s) => {
            if strip(&s) {
                s.pop();
            }
            Cow::Owned(s)
        }
    })
}

fn check_dots(out: &Option<String>, path: &str, start: usize, end: usize) -> Result<(), PathError> {
    let text = out.as_deref().unwrap_or(path);
    let segment = text.get(start..end).unwrap_or("");
    if segment == "." || segment == ".." {
        return Err(PathError::DotSegment);
    }
    Ok(())
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A parameter value as text: percent-decoded, invalid UTF-8 replaced.
pub(super) fn decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_plain_paths_borrowed() {
        assert!(matches!(
            normalize("/repos/a/b").unwrap(),
            Cow::Borrowed("/repos/a/b")
        ));
        assert_eq!(normalize("/repos/a/b/").unwrap(), "/repos/a/b");
        assert_eq!(normalize("/").unwrap(), "/");
    }

    #[test]
    fn decodes_unreserved_only() {
        assert_eq!(normalize("/repos/%61cme/web").unwrap(), "/repos/acme/web");
        assert_eq!(normalize("/x/a%20b").unwrap(), "/x/a%20b");
        assert_eq!(normalize("/x/%c3%a9").unwrap(), "/x/%C3%A9");
        assert_eq!(normalize("/x/é/y").unwrap(), "/x/é/y");
        assert_eq!(normalize("/x/%41/é").unwrap(), "/x/A/é");
    }

    #[test]
    fn refuses_ambiguous_paths() {
        assert_eq!(
            normalize("/repos/a%2Fb/c"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(normalize("/repos/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/repos/a%252Fb"), Err(PathError::DoubleEncoded));
        assert_eq!(normalize("/repos/../admin"), Err(PathError::DotSegment));
        assert_eq!(normalize("/repos/%2e%2e/admin"), Err(PathError::DotSegment));
        assert_eq!(normalize("/repos/a/.."), Err(PathError::DotSegment));
        assert_eq!(normalize("/repos/a/./b"), Err(PathError::DotSegment));
        assert_eq!(normalize("/a\\b"), Err(PathError::BadCharacter));
        assert_eq!(normalize("/a%00"), Err(PathError::BadCharacter));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadPercent));
        assert_eq!(normalize("/a%4"), Err(PathError::BadPercent));
        assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
        // A literal percent that is not double encoding stays encoded.
        assert_eq!(normalize("/a%25zz").unwrap(), "/a%25zz");
        // Dots inside names are fine.
        assert_eq!(normalize("/repos/a/b.js").unwrap(), "/repos/a/b.js");
        assert_eq!(normalize("/repos/a/...").unwrap(), "/repos/a/...");
        // Double encoding spelt with encoded hex digits.
        assert_eq!(normalize("/a%25%34%31"), Err(PathError::DoubleEncoded));
        assert_eq!(
            normalize("/repos/a/b%25%32%46c"),
            Err(PathError::DoubleEncoded)
        );
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        fn once(s: &str) -> String {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        }

        /// Path-ish text: the characters and escapes that matter, mixed.
        fn pathish() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("/".to_owned()),
                Just(".".to_owned()),
                Just("%".to_owned()),
                Just("%25".to_owned()),
                Just("%2F".to_owned()),
                Just("%2e".to_owned()),
                Just("%5C".to_owned()),
                Just("\\".to_owned()),
                "[0-9a-fA-F]{1,2}",
                "%[0-9a-fA-F]{2}",
                "[a-z~_-]{1,4}",
                any::<char>().prop_map(String::from),
            ];
            prop::collection::vec(piece, 0..24).prop_map(|v| format!("/{}", v.concat()))
        }

        /// Segments of unreserved characters, some of them percent-encoded.
        fn plain() -> impl Strategy<Value = (String, String)> {
            let seg = prop::collection::vec(
                (
                    prop::sample::select(b"abcxyzABC019-_~".to_vec()),
                    any::<bool>(),
                ),
                1..6,
            );
            prop::collection::vec(seg, 1..6).prop_map(|segs| {
                let mut raw = String::new();
                let mut want = String::new();
                for seg in segs {
                    raw.push('/');
                    want.push('/');
                    for (c, enc) in seg {
                        if enc {
                            raw.push_str(&format!("%{c:02X}"));
                        } else {
                            raw.push(char::from(c));
                        }
                        want.push(char::from(c));
                    }
                }
                (raw, want)
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Never panics; what it accepts means the same to a server that decodes once
            /// and one that decodes twice, has no dot segment, no encoded separator, and
            /// decodes to what the original decodes to.
            #[test]
            fn accepted_paths_mean_one_thing(p in pathish()) {
                if let Ok(n) = normalize(&p) {
                    let decoded = once(&n);
                    prop_assert_eq!(once(&decoded), decoded.clone(), "{} -> {}", p, n);
                    let orig = once(&p);
                    let orig = if orig.len() > 1 { orig.strip_suffix('/').unwrap_or(&orig) } else { &orig };
                    prop_assert_eq!(decoded.as_str(), orig);
                    prop_assert!(!decoded.split('/').any(|s| s == "." || s == ".."));
                    prop_assert!(!decoded.contains('\\'));
                    prop_assert!(!n.to_ascii_uppercase().contains("%2F"));
                }
            }

            /// Encoding unreserved characters changes nothing.
            #[test]
            fn unreserved_escapes_decode((raw, want) in plain()) {
                prop_assert_eq!(normalize(&raw).unwrap(), want);
            }

            #[test]
            fn arbitrary_text_never_panics(s in any::<String>()) {
                let _ = normalize(&s);
            }
        }
    }
}
