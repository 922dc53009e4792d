//! A body wrapper that counts bytes and reports how the body ended: completely, with an
//! error (the upstream died mid-response), or dropped early (the client went away).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

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
                if self.inner.is_end_stream() {
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

impl<B: HttpBody> Drop for Tracked<B> {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.end(Ending::Complete);
        } else {
            self.end(Ending::Dropped);
        }
    }
}
