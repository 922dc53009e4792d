//! A body wrapper that counts bytes and reports how the body ended: completely, with an
//! error (the upstream died mid-response), or dropped early (the client went away).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use tokio::time::Sleep;

use crate::plugin::{Body, BoxError};

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Complete,
    Failed,
    Dropped,
}

type OnEnd = Box<dyn FnOnce(Ending, u64) + Send + Sync>;

/// Wraps a body; calls `on_end` exactly once.
pub struct Tracked<B: HttpBody = Body> {
    inner: B,
    bytes: u64,
    on_end: Option<OnEnd>,
}

impl<B: HttpBody> Tracked<B> {
    pub fn new(inner: B, on_end: impl FnOnce(Ending, u64) + Send + Sync + 'static) -> Tracked<B> {
        Tracked {
            inner,
            bytes: 0,
            on_end: Some(Box::new(on_end)),
        }
    }

    fn end(&mut self, ending: Ending) {
        if let Some(f) = self.on_end.take() {
            f(ending, self.bytes);
        }
    }
}

impl<B> HttpBody for Tracked<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                // Trailers are always the last frame; the server may stop polling after them.
                if frame.is_trailers() || self.inner.is_end_stream() {
                    self.end(Ending::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => self.end(Ending::Failed),
            Poll::Ready(None) => self.end(Ending::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where an upstream response body reports how it ended, for its target's passive outlier
/// counters (a response counts as a success only once its body was read to the end).
pub trait BodyOutcome: Send + Sync {
    /// The body of a response from `target` was read to its end (`complete`), or the upstream
    /// broke it off (a reset, a close before the declared end, malformed framing).
    fn body_ended(&self, target: usize, complete: bool);
}

impl BodyOutcome for crate::forward::UpstreamRt {
    fn body_ended(&self, target: usize, complete: bool) {
        self.balancer.on_body_end(target, complete);
    }
}

/// A response body from hyper's client (HTTP/2 pools, streamed uploads, upgrades) that
/// reports its ending to the target's outlier counters ([`BodyOutcome`]). A body the gateway
/// stops reading (the client went away) reports nothing.
pub struct Reported<B: HttpBody> {
    inner: B,
    /// Set until the ending is reported; `None` for a `5xx`, already counted as a failure.
    home: Option<Arc<dyn BodyOutcome>>,
    target: usize,
}

impl<B: HttpBody> Reported<B> {
    /// `inner`, reporting to `home` for `target` unless `status` is a server error.
    pub fn new(
        inner: B,
        status: http::StatusCode,
        home: Arc<dyn BodyOutcome>,
        target: usize,
    ) -> Reported<B> {
        Reported {
            inner,
            home: (!status.is_server_error()).then_some(home),
            target,
        }
    }

    fn report(&mut self, complete: bool) {
        if let Some(home) = self.home.take() {
            home.body_ended(self.target, complete);
        }
    }
}

impl<B> HttpBody for Reported<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                // Trailers are the last frame; a server may stop polling at the end of stream.
                if frame.is_trailers() || self.inner.is_end_stream() {
                    self.report(true);
                }
            }
            Some(Err(_)) => self.report(false),
            None => self.report(true),
        }
        Poll::Ready(polled.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: HttpBody> Drop for Reported<B> {
    fn drop(&mut self) {
        // An empty body (a `101`, a `204`) is complete without ever being polled; a body
        // dropped part-way says nothing about the target.
        if self.home.is_some() && self.inner.is_end_stream() {
            self.report(true);
        }
    }
}

impl<B: HttpBody> Drop for Tracked<B> {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.end(Ending::Complete);
        } else {
            self.end(Ending::Dropped);
        }
    }
}

/// What happened to a streamed request body, read after the exchange.
#[derive(Debug, Default)]
pub struct UploadStats {
    /// Body bytes taken from the client so far.
    pub bytes: AtomicU64,
    /// The body grew past `max_body_bytes` (the exchange is answered 413).
    pub too_large: AtomicBool,
    /// Reading the client's body failed (the client went away or broke the framing).
    pub client_failed: AtomicBool,
    /// The client sent no body bytes for `body_timeout`.
    pub stalled: AtomicBool,
}

/// A request body streamed to the upstream: the part read while deciding whether to buffer,
/// then the rest straight from the client, cut off with an error past `limit` bytes.
pub struct Upload {
    prefix: VecDeque<Bytes>,
    rest: Incoming,
    limit: u64,
    /// The longest wait for the client's next bytes.
    stall: Duration,
    /// Armed while waiting for the client; reset by every frame.
    waiting: Option<Pin<Box<Sleep>>>,
    stats: Arc<UploadStats>,
}

impl Upload {
    pub fn new(
        prefix: Vec<Bytes>,
        rest: Incoming,
        limit: u64,
        stall: Duration,
        stats: Arc<UploadStats>,
    ) -> Upload {
        let seen: u64 = prefix.iter().map(|b| b.len() as u64).sum();
        stats.bytes.store(seen, Ordering::Relaxed);
        Upload {
            prefix: prefix.into(),
            rest,
            limit,
            stall,
            waiting: None,
            stats,
        }
    }
}

/// The client sent no body bytes for the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled: no bytes for {} ms", .0.as_millis())]
pub struct Stalled(pub Duration);

/// The body grew past the gateway's limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than {0} bytes")]
pub struct TooLarge(pub u64);

impl HttpBody for Upload {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let polled = Pin::new(&mut self.rest).poll_frame(cx);
        if polled.is_pending() {
            let stall = self.stall;
            let waiting = self
                .waiting
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
            if waiting.as_mut().poll(cx).is_ready() {
                self.waiting = None;
                self.stats.stalled.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(Box::new(Stalled(stall)))));
            }
            return Poll::Pending;
        }
        self.waiting = None;
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let total = self
                        .stats
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed)
                        + data.len() as u64;
                    if total > self.limit {
                        self.stats.too_large.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(TooLarge(self.limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.stats.client_failed.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            other => other.map(|o| o.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let queued: u64 = self.prefix.iter().map(|b| b.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + queued);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + queued);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Mutex;

    /// The endings reported, in order.
    #[derive(Default)]
    struct Endings(Mutex<Vec<(usize, bool)>>);

    impl BodyOutcome for Endings {
        fn body_ended(&self, target: usize, complete: bool) {
            self.0.lock().unwrap().push((target, complete));
        }
    }

    /// A body of `frames`, then the end (or an error, if `fails`).
    struct Script {
        frames: VecDeque<Bytes>,
        fails: bool,
    }

    impl HttpBody for Script {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(match self.frames.pop_front() {
                Some(b) => Some(Ok(Frame::data(b))),
                None if self.fails => {
                    self.fails = false;
                    Some(Err("reset".into()))
                }
                None => None,
            })
        }

        fn is_end_stream(&self) -> bool {
            self.frames.is_empty() && !self.fails
        }
    }

    fn script(n: usize, fails: bool) -> Script {
        Script {
            frames: (0..n).map(|_| Bytes::from_static(b"x")).collect(),
            fails,
        }
    }

    #[tokio::test]
    async fn a_body_reports_its_ending_once() {
        let endings = Arc::new(Endings::default());
        let ok = http::StatusCode::OK;
        let read = |body: Reported<Script>| async move { body.collect().await.is_ok() };
        assert!(read(Reported::new(script(2, false), ok, endings.clone(), 1)).await);
        assert!(!read(Reported::new(script(2, true), ok, endings.clone(), 2)).await);
        // Empty: complete without a poll.
        drop(Reported::new(script(0, false), ok, endings.clone(), 3));
        // Dropped part-way (the client left): nothing said about the target.
        let mut partial = Reported::new(script(2, true), ok, endings.clone(), 4);
        assert!(partial.frame().await.is_some());
        drop(partial);
        // A 5xx counted as a failure at its head: nothing more.
        let unavailable = http::StatusCode::SERVICE_UNAVAILABLE;
        assert!(
            !read(Reported::new(
                script(1, true),
                unavailable,
                endings.clone(),
                5
            ))
            .await
        );
        assert_eq!(
            *endings.0.lock().unwrap(),
            [(1, true), (2, false), (3, true)]
        );
    }
}
