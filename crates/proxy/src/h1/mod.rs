//! HTTP/1.1 exchanges with upstreams, driven in the request's own task.
//!
//! hyper's client runs every connection as a task of its own and passes each request and
//! response through channels to it; a proxy pays for those hand-offs on every request. Here
//! the request task writes the request head and its (buffered) body in one write, reads and
//! parses the response head itself ([`response`]), and the response body reads the socket
//! directly ([`body`]). A connection goes back to its pool the moment the last body byte has
//! been read, often before the client has seen the head: a small answer usually arrives
//! whole with its head.
//!
//! Streamed uploads, protocol upgrades and HTTP/2 pools still use hyper (see
//! [`crate::forward`]).
//!
//! Failures say how far the exchange got ([`ExchangeError`]), which is what the retry rules
//! need: nothing written, written but no response byte, or a response that broke off.

pub mod body;
pub mod request;
pub mod response;

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use crate::dial::UpstreamIo;

pub use response::{Framing, ResponseHead};

/// Bytes read per socket read (the buffer grows by this much when it runs low).
const READ_CHUNK: usize = 16 * 1024;

/// The largest response head accepted (status line and headers).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A body up to this size is copied behind the head and goes out in the same write.
const COALESCE_BODY_BYTES: usize = 16 * 1024;

/// One HTTP/1.1 connection to an upstream target, idle or in an exchange.
pub struct H1Conn {
    io: UpstreamIo,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The request being written (kept to reuse its allocation).
    out: Vec<u8>,
    /// The target's index in its pool.
    pub target: usize,
    /// It served an earlier exchange (a failure before any response byte is the idle race).
    pub reused: bool,
}

/// How far a failed exchange got.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Writing the request failed.
    #[error("writing the request failed: {0}")]
    Write(std::io::Error),
    /// The request went out; the upstream closed or reset without a response byte.
    #[error("the upstream closed the connection without answering")]
    Closed,
    /// The request went out; reading failed before any response byte.
    #[error("reading the response failed: {0}")]
    Read(std::io::Error),
    /// Part of a response head came, then the connection ended.
    #[error("the upstream ended the connection in the middle of the response head")]
    CutShort,
    /// The answer is not an HTTP/1.x response head.
    #[error("the upstream's answer is not valid HTTP/1.1: {0}")]
    Parse(String),
}

impl ExchangeError {
    /// Whether any response byte arrived.
    pub fn got_response_bytes(&self) -> bool {
        matches!(self, ExchangeError::CutShort | ExchangeError::Parse(_))
    }

    /// Whether the request was never written.
    pub fn unsent(&self) -> bool {
        matches!(self, ExchangeError::Write(_))
    }
}

/// The request to write: method, origin-form target, headers and the whole body.
pub struct RequestParts<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
    /// The target's `host:port`: the `Host` of a request that came without one (an HTTP/1.0
    /// client), since HTTP/1.1 requires it.
    pub authority: &'a str,
}

impl H1Conn {
    pub fn new(io: UpstreamIo, target: usize) -> H1Conn {
        H1Conn {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            target,
            reused: false,
        }
    }

    /// Whether the upstream closed the connection, reset it or sent something unasked since
    /// its last exchange. Never waits and, unless the socket was reported readable, makes no
    /// system call.
    pub fn is_stale(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [MaybeUninit::<u8>::uninit(); 1];
        let mut probe = ReadBuf::uninit(&mut probe);
        !matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Write `req` and read the response head (1xx heads other than `101` are skipped). A
    /// pooled connection was checked with [`H1Conn::is_stale`] at checkout.
    pub async fn exchange(
        &mut self,
        req: &RequestParts<'_>,
    ) -> Result<ResponseHead, ExchangeError> {
        self.out.clear();
        request::encode_head(&mut self.out, req);
        let body = req.body;
        if body.len() <= COALESCE_BODY_BYTES {
            self.out.extend_from_slice(body);
            self.io
                .write_all(&self.out)
                .await
                .map_err(ExchangeError::Write)?;
        } else {
            self.io
                .write_all(&self.out)
                .await
                .map_err(ExchangeError::Write)?;
            self.io
                .write_all(body)
                .await
                .map_err(ExchangeError::Write)?;
        }
        if self.out.capacity() > 4 * COALESCE_BODY_BYTES {
            self.out = Vec::new();
        }
        self.io.flush().await.map_err(ExchangeError::Write)?;
        let head_request = req.method == Method::HEAD;
        let mut seen_any = false;
        loop {
            match response::parse_head(&mut self.buf, head_request)? {
                Some(head) => return Ok(head),
                None if self.buf.len() > MAX_HEAD_BYTES => {
                    return Err(ExchangeError::Parse(format!(
                        "the response head is larger than {MAX_HEAD_BYTES} bytes"
                    )))
                }
                None => {}
            }
            self.buf.reserve(READ_CHUNK);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) if seen_any => return Err(ExchangeError::CutShort),
                Ok(0) => return Err(ExchangeError::Closed),
                Ok(_) => seen_any = true,
                Err(_) if seen_any => return Err(ExchangeError::CutShort),
                Err(e) => return Err(ExchangeError::Read(e)),
            }
        }
    }
}
