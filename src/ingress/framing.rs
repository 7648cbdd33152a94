//! HTTP/1.1 framing watch: refuses requests whose body length is ambiguous.
//!
//! hyper follows RFC 9112 §6.1 for a request carrying both `Content-Length` and
//! `Transfer-Encoding`: it reads the body as chunked, drops `Content-Length` before we could
//! see it, and closes the connection afterwards. That is safe, but such a request is a
//! smuggling probe, and a security gate should refuse it outright. This wrapper sits under
//! hyper on every HTTP/1.1 connection, follows the framing of each request (head, then a
//! fixed-length or chunked body) and, when a head carries both headers, corrupts the head's
//! final byte so that hyper answers `400` and closes the connection.
//!
//! Anything it cannot follow (malformed heads, which hyper rejects itself; CONNECT and
//! upgrades, after which the bytes are no longer HTTP) switches it to pass-through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Where in the request stream the next byte falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Fixed(u64),
    ChunkSize { size: u64, digits: bool, ext: bool },
    ChunkSizeLf { size: u64 },
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    Trailer { line: usize },
    Passthrough,
}

/// A transport that watches HTTP/1.1 request framing on its read side.
pub struct Framing<T> {
    inner: T,
    state: State,
    /// Bytes of a request head that arrived over several reads.
    head: Vec<u8>,
    max_head: usize,
    max_headers: usize,
}

impl<T> Framing<T> {
    /// Wraps `inner`; heads beyond `max_head` bytes or `max_headers` headers are left to
    /// hyper (which refuses them with 431).
    pub fn new(inner: T, max_head: usize, max_headers: usize) -> Self {
        Framing {
            inner,
            state: State::Head,
            head: Vec::new(),
            max_head,
            max_headers,
        }
    }

    /// Follows `buf` (bytes just read); may corrupt one byte to make hyper refuse a head.
    fn observe(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        while i < buf.len() {
            i += match self.state {
                State::Passthrough => return,
                State::Head => self.head_bytes(buf, i),
                State::Fixed(left) => self.skip(left, buf.len() - i, State::Fixed, State::Head),
                State::ChunkData(left) => {
                    self.skip(left, buf.len() - i, State::ChunkData, State::ChunkDataCr)
                }
                _ => {
                    self.state = chunk_step(self.state, buf[i]);
                    1
                }
            };
        }
    }

    /// Passes over up to `avail` bytes of a body part with `left` bytes to go.
    fn skip(&mut self, left: u64, avail: usize, more: fn(u64) -> State, done: State) -> usize {
        let n = left.min(avail as u64);
        self.state = if n == left { done } else { more(left - n) };
        n as usize
    }

    /// Consumes head bytes from `buf[start..]`; returns how many belonged to the head.
    fn head_bytes(&mut self, buf: &mut [u8], start: usize) -> usize {
        let new = &buf[start..];
        if self.head.is_empty() {
            // Empty lines before a request line are ignored (RFC 9112 §2.2).
            let skip = new
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            if skip > 0 {
                return skip;
            }
        }
        let before = self.head.len();
        // Parse only when this read could have ended the head: cheap for byte-at-a-time heads.
        if !may_end_head(&self.head[before.saturating_sub(3)..], new) {
            self.buffer_head(new);
            return new.len();
        }
        let parsed = if before == 0 {
            self.classify(new)
        } else {
            self.head.extend_from_slice(new);
            let head = std::mem::take(&mut self.head);
            let parsed = self.classify(&head);
            self.head = head;
            self.head.truncate(before);
            parsed
        };
        match parsed {
            Parsed::Partial => {
                self.buffer_head(new);
                new.len()
            }
            Parsed::Done { len, next, refuse } => {
                self.head.clear();
                self.state = next;
                let used = len - before;
                if refuse {
                    tracing::warn!(
                        "refused a request carrying both Content-Length and Transfer-Encoding (ambiguous framing)"
                    );
                    buf[start + used - 1] = 0;
                }
                used
            }
        }
    }

    fn buffer_head(&mut self, new: &[u8]) {
        if self.head.len() + new.len() > self.max_head {
            self.state = State::Passthrough;
            self.head = Vec::new();
        } else if self.state == State::Head {
            self.head.extend_from_slice(new);
        }
    }

    /// Parses a complete-looking head and decides the framing of its body.
    fn classify(&mut self, head: &[u8]) -> Parsed {
        // Most heads fit the stack array; a larger configured limit gets a heap one.
        let mut stack = [httparse::EMPTY_HEADER; 128];
        let mut heap;
        let headers: &mut [httparse::Header<'_>] = if self.max_headers <= stack.len() {
            &mut stack[..self.max_headers]
        } else {
            heap = vec![httparse::EMPTY_HEADER; self.max_headers];
            &mut heap
        };
        let mut req = httparse::Request::new(headers);
        let len = match req.parse(head) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => {
                self.state = State::Passthrough;
                return Parsed::Done {
                    len: head.len(),
                    next: State::Passthrough,
                    refuse: false,
                };
            }
        };
        let mut content_length: Option<Option<u64>> = None;
        let mut chunked = None;
        let mut upgrade = req.method == Some("CONNECT");
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
                content_length = Some(v);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        let (next, refuse) = match (content_length, chunked) {
            (Some(_), Some(_)) => (State::Passthrough, true),
            _ if upgrade => (State::Passthrough, false),
            (None, Some(true)) => (
                State::ChunkSize {
                    size: 0,
                    digits: false,
                    ext: false,
                },
                false,
            ),
            (None, Some(false)) | (Some(None), None) => (State::Passthrough, false),
            (Some(Some(0)), None) | (None, None) => (State::Head, false),
            (Some(Some(n)), None) => (State::Fixed(n), false),
        };
        Parsed::Done { len, next, refuse }
    }
}

enum Parsed {
    Partial,
    Done {
        len: usize,
        next: State,
        refuse: bool,
    },
}

/// Whether `new` (after the last bytes `tail` of a partial head) contains a blank line,
/// i.e. the end of a head, with CRLF or bare LF line endings.
fn may_end_head(tail: &[u8], new: &[u8]) -> bool {
    let blank = |w: &[u8]| w.ends_with(b"\n\n") || w.ends_with(b"\n\r\n");
    if new.windows(2).any(|w| w == b"\n\n") || new.windows(3).any(|w| w == b"\n\r\n") {
        return true;
    }
    // The blank line may straddle the previous read and this one.
    let mut joined = [0u8; 6];
    let n = new.len().min(3);
    joined[..tail.len()].copy_from_slice(tail);
    joined[tail.len()..tail.len() + n].copy_from_slice(&new[..n]);
    let joined = &joined[..tail.len() + n];
    (2..=joined.len()).any(|end| blank(&joined[..end]))
}

/// One byte of chunked framing outside chunk data.
fn chunk_step(state: State, b: u8) -> State {
    match state {
        State::ChunkSize { size, digits, ext } => match b {
            b'\r' => State::ChunkSizeLf { size },
            b'\n' => after_size(size),
            _ if ext => state,
            b';' | b' ' | b'\t' if digits => State::ChunkSize {
                size,
                digits,
                ext: true,
            },
            _ => match (b as char).to_digit(16) {
                Some(d) if size < (1 << 58) => State::ChunkSize {
                    size: size * 16 + u64::from(d),
                    digits: true,
                    ext,
                },
                _ => State::Passthrough,
            },
        },
        State::ChunkSizeLf { size } if b == b'\n' => after_size(size),
        State::ChunkDataCr if b == b'\r' => State::ChunkDataLf,
        State::ChunkDataCr if b == b'\n' => State::ChunkSize {
            size: 0,
            digits: false,
            ext: false,
        },
        State::ChunkDataLf if b == b'\n' => State::ChunkSize {
            size: 0,
            digits: false,
            ext: false,
        },
        State::Trailer { line } => match b {
            b'\n' if line == 0 => State::Head,
            b'\n' => State::Trailer { line: 0 },
            b'\r' => state,
            _ => State::Trailer { line: line + 1 },
        },
        _ => State::Passthrough,
    }
}

fn after_size(size: u64) -> State {
    if size == 0 {
        State::Trailer { line: 0 }
    } else {
        State::ChunkData(size)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Framing<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            if this.state != State::Passthrough {
                this.observe(&mut buf.filled_mut()[before..]);
            }
        }
        res
    }
}

delegate_async_write!(Framing);

#[cfg(test)]
mod tests {
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
                        out.extend_from_slice(
                            b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
                        );
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
}
