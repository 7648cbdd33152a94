use super::*;

/// Feeds `input` in pieces of `step` bytes; returns the bytes hyper would see.
fn feed(input: &[u8], step: usize) -> (Vec<u8>, State) {
    let mut f = Framing::new((), 65536, 100);
    let mut out = Vec::new();
    for piece in input.chunks(step) {
        let mut piece = piece.to_vec();
        f.observe(&mut piece);
        out.extend_from_slice(&piece);
    }
    (out, f.state)
}

#[test]
fn follows_pipelined_requests_in_any_split() {
    let stream = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
GET /z HTTP/1.1\r\nHost: a\r\n\r\n";
    for step in [1, 2, 3, 7, 64, stream.len()] {
        let (out, state) = feed(stream, step);
        assert_eq!(&out[..], &stream[..], "step {step}");
        assert_eq!(state, State::Head, "step {step}");
    }
}

#[test]
fn refuses_content_length_with_transfer_encoding() {
    for head in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX"[..],
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 6\r\n\r\n",
    ] {
        for step in [1, 5, head.len()] {
            let (out, state) = feed(head, step);
            assert_eq!(state, State::Passthrough);
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let last_head = out.windows(5).rposition(|w| w == b"POST ").unwrap_or(0);
            let parsed = httparse::Request::new(&mut headers).parse(&out[last_head..]);
            assert!(parsed.is_err(), "hyper must reject: {parsed:?}");
        }
    }
}

#[test]
fn stops_following_after_connect_and_upgrade() {
    let (_, s) = feed(
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n\x16\x03\x01",
        4,
    );
    assert_eq!(s, State::Passthrough);
    let (_, s) = feed(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        9,
    );
    assert_eq!(s, State::Passthrough);
}

mod props {
    use proptest::prelude::*;

    use super::*;

    /// How one generated request frames its body.
    #[derive(Debug, Clone)]
    enum Body {
        None,
        Fixed(Vec<u8>),
        /// Chunk payloads, an extension on each size line, trailer lines, bare-LF
        /// line endings in the chunk framing.
        Chunked(Vec<Vec<u8>>, bool, Vec<String>, bool),
    }

    fn request() -> impl Strategy<Value = (String, Vec<(String, String)>, Body, usize)> {
        let body = prop_oneof![
            Just(Body::None),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(Body::Fixed),
            (
                prop::collection::vec(prop::collection::vec(any::<u8>(), 1..20), 0..5),
                any::<bool>(),
                prop::collection::vec("X-[a-z]{1,5}: [a-z]{0,5}", 0..3),
                any::<bool>(),
            )
                .prop_map(|(c, e, t, lf)| Body::Chunked(c, e, t, lf)),
        ];
        (
            prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]),
            prop::collection::vec(("X-[A-Za-z]{1,8}", "[ -~]{0,12}"), 0..4),
            body,
            0usize..3,
        )
            .prop_map(|(m, h, b, blank)| (m.to_owned(), h, b, blank))
    }

    fn render(
        (method, headers, body, blank): &(String, Vec<(String, String)>, Body, usize),
        both: bool,
    ) -> Vec<u8> {
        let mut out = b"\r\n".repeat(*blank);
        out.extend_from_slice(format!("{method} /x HTTP/1.1\r\nHost: a\r\n").as_bytes());
        for (k, v) in headers {
            out.extend_from_slice(format!("{k}: {}\r\n", v.trim()).as_bytes());
        }
        match body {
            Body::None => {
                if both {
                    out.extend_from_slice(b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
            Body::Fixed(b) => {
                out.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
                if both {
                    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(b);
            }
            Body::Chunked(chunks, ext, trailers, lf) => {
                let eol: &[u8] = if *lf { b"\n" } else { b"\r\n" };
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                if both {
                    out.extend_from_slice(b"Content-Length: 5\r\n");
                }
                out.extend_from_slice(b"\r\n");
                for c in chunks {
                    out.extend_from_slice(format!("{:x}", c.len()).as_bytes());
                    if *ext {
                        out.extend_from_slice(b";a=b");
                    }
                    out.extend_from_slice(eol);
                    out.extend_from_slice(c);
                    out.extend_from_slice(eol);
                }
                out.extend_from_slice(b"0");
                out.extend_from_slice(eol);
                for t in trailers {
                    out.extend_from_slice(t.as_bytes());
                    out.extend_from_slice(eol);
                }
                out.extend_from_slice(eol);
            }
        }
        out
    }

    /// Feeds `input` in the pieces `splits` cut it into.
    fn feed_split(input: &[u8], splits: &[usize]) -> (Vec<u8>, State) {
        let mut f = Framing::new((), 65536, 100);
        let mut out = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = splits
                .get(i)
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            let mut piece = rest[..n].to_vec();
            f.observe(&mut piece);
            out.extend_from_slice(&piece);
            rest = &rest[n..];
            i += 1;
        }
        (out, f.state)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A pipeline of well-framed requests passes untouched, however it is split, and
        /// the follower ends between requests.
        #[test]
        fn well_framed_pipelines_pass_untouched(
            reqs in prop::collection::vec(request(), 1..5),
            splits in prop::collection::vec(1usize..40, 0..64),
        ) {
            let stream: Vec<u8> = reqs.iter().flat_map(|r| render(r, false)).collect();
            let (out, state) = feed_split(&stream, &splits);
            prop_assert_eq!(out, stream);
            prop_assert_eq!(state, State::Head);
        }

        /// A request carrying both Content-Length and Transfer-Encoding, anywhere in a
        /// pipeline and however split, has its head corrupted so hyper refuses it, and
        /// nothing before it is touched.
        #[test]
        fn both_lengths_are_always_refused(
            before in prop::collection::vec(request(), 0..3),
            bad in request(),
            splits in prop::collection::vec(1usize..40, 0..64),
        ) {
            let clean: Vec<u8> = before.iter().flat_map(|r| render(r, false)).collect();
            let bad = render(&bad, true);
            let stream = [clean.clone(), bad.clone()].concat();
            let (out, state) = feed_split(&stream, &splits);
            prop_assert_eq!(state, State::Passthrough);
            prop_assert_eq!(&out[..clean.len()], &clean[..]);
            let head = &out[clean.len()..];
            let start = head.iter().position(|b| !matches!(b, b'\r' | b'\n')).unwrap_or(0);
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let parsed = httparse::Request::new(&mut headers).parse(&head[start..]);
            prop_assert!(parsed.is_err(), "hyper must reject: {:?}", parsed);
        }

        /// Arbitrary bytes, or a valid stream with bytes flipped, never panic the
        /// follower, and the result does not depend on how reads split the stream except
        /// through the one byte it may corrupt.
        #[test]
        fn arbitrary_input_never_panics(
            reqs in prop::collection::vec(request(), 1..3),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            noise in prop::collection::vec(any::<u8>(), 0..200),
            splits in prop::collection::vec(1usize..40, 0..64),
        ) {
            let mut stream: Vec<u8> = reqs.iter().flat_map(|r| render(r, false)).collect();
            for (at, b) in flips {
                let i = at.index(stream.len());
                stream[i] = b;
            }
            let (out_split, state_split) = feed_split(&stream, &splits);
            let (out_whole, state_whole) = feed_split(&stream, &[]);
            prop_assert_eq!(state_split, state_whole);
            prop_assert_eq!(out_split, out_whole);
            let _ = feed_split(&noise, &splits);
        }
    }
}

#[test]
fn oversize_heads_are_left_to_hyper() {
    let mut f = Framing::new((), 64, 100);
    let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 100));
    f.observe(&mut big);
    assert_eq!(f.state, State::Passthrough);
}
