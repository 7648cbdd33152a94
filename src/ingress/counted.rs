//! A byte counter on the read side of a connection, for what crosses an upgraded
//! (spliced) connection: its `upgrade` audit record says how much went each way.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Counts the bytes read from `inner` into a shared counter.
pub struct Counted<T> {
    inner: T,
    count: Arc<AtomicU64>,
}

impl<T> Counted<T> {
    /// Wraps `inner`; every byte read from it is added to `count`.
    pub fn new(inner: T, count: Arc<AtomicU64>) -> Self {
        Counted { inner, count }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        this.count.fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

delegate_async_write!(Counted);
