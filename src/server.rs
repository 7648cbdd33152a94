//! The hyper connection driver both listeners use (the proxy's ingress and the admin API):
//! server settings from the limits, and serving a connection until it has been idle too
//! long or the process shuts down.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::rt::{Read, Write};
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::LimitsConfig;

/// A served hyper connection that can be asked to finish gracefully.
pub(crate) trait GracefulConn: Future<Output = Result<(), hyper::Error>> {
    /// Stops taking new requests; the connection ends once in-flight ones finish.
    fn shutdown(self: Pin<&mut Self>);
}

impl<I, S> GracefulConn for http1::UpgradeableConnection<I, S>
where
    I: Read + Write + Unpin + Send + 'static,
    S: HttpService<hyper::body::Incoming>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> GracefulConn for http2::Connection<I, S, E>
where
    I: Read + Write + Unpin + 'static,
    S: HttpService<hyper::body::Incoming>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// A boxed connection: what a tunnel holds, so that the tunnel's own future stays small.
impl<C: GracefulConn + ?Sized> GracefulConn for Pin<Box<C>> {
    fn shutdown(self: Pin<&mut Self>) {
        self.get_mut().as_mut().shutdown();
    }
}

/// Request activity on one client connection, for the idle timeout.
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` at the last request start or end.
    last: AtomicU64,
    epoch: Instant,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Marks a request as started; the returned guard marks it finished when dropped.
    pub(crate) fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self)
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        Some(self.epoch.elapsed().saturating_sub(last))
    }
}

/// A request in progress on a connection.
pub(crate) struct InFlight<'a>(&'a Activity);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Drives a connection to completion, closing it gracefully when it has been idle for
/// `idle` or when the process is shutting down.
pub(crate) async fn drive<C: GracefulConn>(
    conn: C,
    activity: &Activity,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), hyper::Error> {
    tokio::pin!(conn);
    let mut closing = *shutdown.borrow();
    if closing {
        conn.as_mut().shutdown();
    }
    let mut next_check = idle;
    loop {
        tokio::select! {
            res = conn.as_mut() => return res,
            _ = tokio::time::sleep(next_check), if !closing => {
                match activity.idle_for() {
                    Some(quiet) if quiet >= idle => {
                        closing = true;
                        conn.as_mut().shutdown();
                    }
                    Some(quiet) => next_check = idle - quiet,
                    None => next_check = idle,
                }
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                conn.as_mut().shutdown();
            }
        }
    }
}

/// HTTP/1.1 server settings from the limits (header size and count, header read timeout).
pub(crate) fn http1_builder(limits: &LimitsConfig) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true)
        // One buffer per write: over TLS, head and body then share a record.
        .writev(false);
    b
}

/// HTTP/2 server settings from the limits (header list size), with at most `max_streams`
/// concurrent streams per connection.
pub(crate) fn http2_builder(
    limits: &LimitsConfig,
    max_streams: u32,
) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(max_streams);
    b
}
