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
mod tests;
