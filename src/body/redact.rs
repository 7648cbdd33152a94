//! Masking the injected credential where an upstream echoes it back.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;

/// Where a scanned body counts what it saw (the outcome record's fields).
pub(super) struct Tally<'a> {
    pub(super) bytes_down: &'a mut u64,
    pub(super) redacted: &'a mut u64,
    pub(super) aborted: &'a mut bool,
}

/// Masks every occurrence of a secret (the injected credential, and the encoded form it was
/// sent in) in a streamed body with as many `*`, holding back only the bytes that could begin
/// an occurrence split across two pieces.
pub struct Redact {
    finders: Vec<memchr::memmem::Finder<'static>>,
    carry: bytes::BytesMut,
    pending: Option<Frame<Bytes>>,
    pub(super) done: bool,
}

// By hand: the searcher holds the secret, and Debug output must never show it.
impl std::fmt::Debug for Redact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redact")
            .field("secrets", &self.finders.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Redact {
    /// A scanner for `secret` (at least one byte).
    pub fn new(secret: &[u8]) -> Redact {
        Redact::any_of(&[secret])
    }

    /// A scanner for each of `secrets` (empty ones are ignored).
    pub fn any_of(secrets: &[&[u8]]) -> Redact {
        Redact {
            finders: secrets
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| memchr::memmem::Finder::new(s).into_owned())
                .collect(),
            carry: bytes::BytesMut::new(),
            pending: None,
            done: false,
        }
    }

    /// Whether a secret occurs in `data`.
    pub fn occurs_in(&self, data: &[u8]) -> bool {
        self.finders.iter().any(|f| f.find(data).is_some())
    }

    /// Masks `data` in place; returns how many occurrences there were.
    pub fn mask(&self, data: &mut [u8]) -> u64 {
        self.finders.iter().map(|f| mask_with(f, data)).sum()
    }

    /// Masks what can be masked of `carry ‖ data`; returns the bytes safe to send now.
    fn feed(&mut self, data: &[u8], count: &mut u64) -> Bytes {
        self.carry.extend_from_slice(data);
        let carry = &mut self.carry[..];
        *count += self
            .finders
            .iter()
            .map(|f| mask_with(f, carry))
            .sum::<u64>();
        let longest = self.finders.iter().map(|f| f.needle().len()).max();
        let keep = longest.unwrap_or(1).saturating_sub(1).min(self.carry.len());
        let ready = self.carry.len() - keep;
        self.carry.split_to(ready).freeze()
    }

    /// The next frame of `body` with the secrets masked; counts what came down, what was
    /// masked, and whether the body broke off.
    pub(super) fn poll_frame(
        &mut self,
        body: &mut Incoming,
        tally: Tally<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        loop {
            if let Some(frame) = self.pending.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        *tally.bytes_down += data.len() as u64;
                        let out = self.feed(&data, tally.redacted);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(trailers) => {
                        let tail = self.carry.split().freeze();
                        if tail.is_empty() {
                            return Poll::Ready(Some(Ok(trailers)));
                        }
                        self.pending = Some(trailers);
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                },
                Some(Err(e)) => {
                    *tally.aborted = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    self.done = true;
                    let tail = self.carry.split().freeze();
                    if !tail.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                }
            }
        }
    }
}

fn mask_with(finder: &memchr::memmem::Finder<'_>, data: &mut [u8]) -> u64 {
    let n = finder.needle().len();
    let mut count = 0;
    let mut at = 0;
    while let Some(i) = finder.find(&data[at..]) {
        data[at + i..at + i + n].fill(b'*');
        at += i + n;
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes and returns (output, occurrences).
    fn run(secret: &str, input: &str, step: usize) -> (String, u64) {
        let mut r = Redact::new(secret.as_bytes());
        let mut count = 0;
        let mut out = Vec::new();
        for piece in input.as_bytes().chunks(step) {
            out.extend_from_slice(&r.feed(piece, &mut count));
        }
        out.extend_from_slice(&r.carry.split());
        (String::from_utf8(out).unwrap_or_default(), count)
    }

    #[test]
    fn masks_echoes_split_across_pieces() {
        let input = r#"{"token":"gho_SECRET123","again":"gho_SECRET123gho_SECRET123"}"#;
        let want = input.replace("gho_SECRET123", "*************");
        for step in 1..=input.len() {
            assert_eq!(
                run("gho_SECRET123", input, step),
                (want.clone(), 3),
                "step {step}"
            );
        }
        assert_eq!(
            run("gho_SECRET123", "nothing here", 4),
            ("nothing here".into(), 0)
        );
    }

    #[test]
    fn masks_every_secret_split_across_pieces() {
        let input = "Basic eC1hY2Nlc3M6dG9r and tok, tok";
        let want = "Basic **************** and ***, ***";
        for step in 1..=input.len() {
            let mut r = Redact::any_of(&[b"tok", b"eC1hY2Nlc3M6dG9r", b""]);
            let mut count = 0;
            let mut out = Vec::new();
            for piece in input.as_bytes().chunks(step) {
                out.extend_from_slice(&r.feed(piece, &mut count));
            }
            out.extend_from_slice(&r.carry.split());
            assert_eq!(
                (String::from_utf8_lossy(&out).as_ref(), count),
                (want, 3),
                "step {step}"
            );
        }
    }
}
