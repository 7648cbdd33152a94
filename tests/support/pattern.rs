//! A deterministic byte pattern (byte `i` is `i % 251`) for big-body tests:
//! generated in chunks without buffering, and hashed with SHA-256 on both ends.

use aws_lc_rs::digest::{Context, SHA256};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context as TaskContext, Poll};

pub const CHUNK: usize = 64 * 1024;
const PERIOD: usize = 251;

static PATTERN: LazyLock<Bytes> =
    LazyLock::new(|| (0..CHUNK + PERIOD).map(|i| (i % PERIOD) as u8).collect());

/// The `len` pattern bytes starting at absolute offset `offset` (len ≤ CHUNK).
pub fn chunk_at(offset: u64, len: usize) -> Bytes {
    assert!(len <= CHUNK);
    let start = (offset % PERIOD as u64) as usize;
    PATTERN.slice(start..start + len)
}

/// Hex SHA-256 of the first `n` pattern bytes.
pub fn pattern_sha256(n: u64) -> String {
    let mut h = Sha256Stream::new();
    let mut off = 0u64;
    while off < n {
        let len = (n - off).min(CHUNK as u64) as usize;
        h.update(&chunk_at(off, len));
        off += len as u64;
    }
    h.finish().1
}

pub struct Sha256Stream {
    ctx: Context,
    len: u64,
}

impl Default for Sha256Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Stream {
    pub fn new() -> Self {
        Sha256Stream {
            ctx: Context::new(&SHA256),
            len: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.ctx.update(data);
        self.len += data.len() as u64;
    }

    /// (bytes hashed, lowercase hex digest)
    pub fn finish(self) -> (u64, String) {
        (self.len, hex(self.ctx.finish().as_ref()))
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    let mut h = Sha256Stream::new();
    h.update(data);
    h.finish().1
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Response body producing `total` pattern bytes, CHUNK at a time.
pub struct PatternBody {
    sent: u64,
    total: u64,
}

impl PatternBody {
    pub fn new(total: u64) -> Self {
        PatternBody { sent: 0, total }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.sent >= this.total {
            return Poll::Ready(None);
        }
        let len = (this.total - this.sent).min(CHUNK as u64) as usize;
        let chunk = chunk_at(this.sent, len);
        this.sent += len as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.total
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.total - self.sent)
    }
}
