//! The body of an upstream's HTTP/1.1 response, read straight from its connection: exactly
//! `Content-Length` bytes, chunked (trailers included), or up to the close. When the last byte
//! is in, the connection goes back to its pool (if it may serve another exchange); a body
//! that ends early is an error, so the client sees a truncated response, never a clean end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::{H1Conn, ResponseHead, READ_CHUNK};
use crate::plugin::{Body, BoxError};

/// Where a connection goes once its response has been read.
pub trait Return: Send + Sync {
    fn checkin(&self, conn: H1Conn);
}

/// The longest chunk-size line accepted (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// The largest trailer section accepted.
const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// Why an upstream body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the upstream closed the connection with {0} body bytes still due")]
    Short(u64),
    #[error("the upstream closed the connection in the middle of a chunked body")]
    ChunkedCutShort,
    #[error("the upstream's chunked body is malformed: {0}")]
    BadChunk(&'static str),
    #[error("reading the upstream's body failed: {0}")]
    Read(std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes still due.
    Length(u64),
    /// Before a chunk-size line.
    ChunkSize,
    /// Inside a chunk: this many data bytes still due.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailers, then a blank line.
    Trailers,
    UntilClose,
    Done,
}

/// A response body read from an upstream connection.
pub struct UpstreamBody {
    conn: Option<H1Conn>,
    state: State,
    reusable: bool,
    home: Option<Arc<dyn Return>>,
}

/// Turn a parsed head into the response for the gateway. A body already in the buffer is
/// taken whole and the connection returned at once.
pub fn into_response(
    head: ResponseHead,
    mut conn: H1Conn,
    home: Arc<dyn Return>,
) -> http::Response<Body> {
    use http_body_util::BodyExt;
    let ResponseHead {
        status,
        version,
        headers,
        reason,
        framing,
        reusable,
    } = head;
    let state = match framing {
        super::Framing::Empty => State::Done,
        super::Framing::Length(n) => State::Length(n),
        super::Framing::Chunked => State::ChunkSize,
        super::Framing::UntilClose => State::UntilClose,
    };
    let body: Body = match state {
        State::Done => {
            if reusable && conn.buf.is_empty() {
                home.checkin(conn);
            }
            crate::responses::full(Bytes::new())
        }
        State::Length(n) if conn.buf.len() as u64 >= n => {
            let whole = conn.buf.split_to(n as usize).freeze();
            if reusable && conn.buf.is_empty() {
                home.checkin(conn);
            }
            crate::responses::full(whole)
        }
        state => UpstreamBody {
            conn: Some(conn),
            state,
            reusable,
            home: Some(home),
        }
        .boxed(),
    };
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    if let Some(reason) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
        response.extensions_mut().insert(reason);
    }
    response
}

impl UpstreamBody {
    /// The body was read to its end: return the connection if it can serve another exchange
    /// (nothing unasked behind the body).
    fn finish(&mut self) {
        self.state = State::Done;
        let (Some(conn), Some(home)) = (self.conn.take(), self.home.take()) else {
            return;
        };
        if self.reusable && conn.buf.is_empty() {
            home.checkin(conn);
        }
    }

    /// Read more bytes into the buffer; `Ok(false)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, BodyError>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        conn.buf.reserve(READ_CHUNK);
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut conn.io),
            cx,
            &mut conn.buf
        ))
        .map_err(BodyError::Read)?;
        Poll::Ready(Ok(n > 0))
    }

    fn buffered(&self) -> usize {
        self.conn.as_ref().map_or(0, |c| c.buf.len())
    }

    fn take(&mut self, n: usize) -> Bytes {
        match self.conn.as_mut() {
            Some(c) => c.buf.split_to(n).freeze(),
            None => Bytes::new(),
        }
    }

    fn buf(&self) -> &[u8] {
        self.conn.as_ref().map_or(&[], |c| &c.buf[..])
    }

    fn advance(&mut self, n: usize) {
        if let Some(c) = self.conn.as_mut() {
            c.buf.advance(n);
        }
    }

    /// The next frame, or `None` at the end.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            match self.state {
                State::Done => return Poll::Ready(None),
                State::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                State::Length(due) | State::ChunkData(due) => {
                    if self.buffered() == 0 {
                        if !ready!(self.poll_fill(cx))? {
                            return Poll::Ready(Some(Err(match self.state {
                                State::Length(_) => BodyError::Short(due),
                                _ => BodyError::ChunkedCutShort,
                            })));
                        }
                        continue;
                    }
                    let n = (self.buffered() as u64).min(due);
                    let data = self.take(n as usize);
                    match self.state {
                        State::Length(_) if n == due => self.finish(),
                        State::Length(_) => self.state = State::Length(due - n),
                        _ if n == due => self.state = State::ChunkEnd,
                        _ => self.state = State::ChunkData(due - n),
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::UntilClose => {
                    if self.buffered() == 0 {
                        if !ready!(self.poll_fill(cx))? {
                            // The close is the end: the connection is not reused.
                            self.reusable = false;
                            self.finish();
                            return Poll::Ready(None);
                        }
                        continue;
                    }
                    let n = self.buffered();
                    return Poll::Ready(Some(Ok(Frame::data(self.take(n)))));
                }
                State::ChunkSize => match parse_chunk_size(self.buf())? {
                    Some((line, size)) => {
                        self.advance(line);
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    None => {
                        if self.buffered() > MAX_CHUNK_LINE {
                            return Poll::Ready(Some(Err(BodyError::BadChunk(
                                "chunk-size line too long",
                            ))));
                        }
                        if !ready!(self.poll_fill(cx))? {
                            return Poll::Ready(Some(Err(BodyError::ChunkedCutShort)));
                        }
                    }
                },
                State::ChunkEnd => {
                    let buf = self.buf();
                    if buf.len() >= 2 {
                        if &buf[..2] != b"\r\n" {
                            return Poll::Ready(Some(Err(BodyError::BadChunk(
                                "chunk data not followed by CRLF",
                            ))));
                        }
                        self.advance(2);
                        self.state = State::ChunkSize;
                        continue;
                    }
                    if !ready!(self.poll_fill(cx))? {
                        return Poll::Ready(Some(Err(BodyError::ChunkedCutShort)));
                    }
                }
                State::Trailers => {
                    if self.buf().starts_with(b"\r\n") {
                        self.advance(2);
                        self.finish();
                        return Poll::Ready(None);
                    }
                    match parse_trailers(self.buf())? {
                        Some((len, trailers)) => {
                            self.advance(len);
                            self.finish();
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        None => {
                            if self.buffered() > MAX_TRAILER_BYTES {
                                return Poll::Ready(Some(Err(BodyError::BadChunk(
                                    "trailers too large",
                                ))));
                            }
                            if !ready!(self.poll_fill(cx))? {
                                return Poll::Ready(Some(Err(BodyError::ChunkedCutShort)));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A complete chunk-size line at the front of `buf`: its length (CRLF included) and the size.
fn parse_chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, BodyError> {
    let Some(lf) = memchr::memchr(b'\n', buf) else {
        return Ok(None);
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(BodyError::BadChunk("chunk-size line not ended by CRLF"));
    }
    let line = &buf[..lf - 1];
    // Extensions (`;name=value`) are allowed and ignored.
    let digits = match memchr::memchr(b';', line) {
        Some(i) => &line[..i],
        None => line,
    };
    let digits = digits.trim_ascii_end();
    if digits.is_empty() || digits.len() > 16 {
        return Err(BodyError::BadChunk("invalid chunk size"));
    }
    let mut size: u64 = 0;
    for &b in digits {
        let d = (b as char)
            .to_digit(16)
            .ok_or(BodyError::BadChunk("invalid chunk size"))?;
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or(BodyError::BadChunk("chunk size overflows"))?;
    }
    Ok(Some((lf + 1, size)))
}

/// A complete trailer section (ending with a blank line) at the front of `buf`.
fn parse_trailers(buf: &[u8]) -> Result<Option<(usize, HeaderMap)>, BodyError> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    match httparse::parse_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete((len, fields))) => {
            let mut trailers = HeaderMap::with_capacity(fields.len());
            for f in fields.iter() {
                let name = http::HeaderName::from_bytes(f.name.as_bytes())
                    .map_err(|_| BodyError::BadChunk("invalid trailer name"))?;
                let value = http::HeaderValue::from_bytes(f.value)
                    .map_err(|_| BodyError::BadChunk("invalid trailer value"))?;
                trailers.append(name, value);
            }
            Ok(Some((len, trailers)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(BodyError::BadChunk("invalid trailers")),
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match ready!(this.step(cx)) {
            Some(Err(e)) => {
                // The connection is in an unknown state: it is closed, never reused.
                this.state = State::Done;
                this.conn = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            other => Poll::Ready(other.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a\r\nxx").unwrap(), Some((4, 26)));
        assert_eq!(parse_chunk_size(b"0;ext=1\r\n").unwrap(), Some((9, 0)));
        assert_eq!(parse_chunk_size(b"FF  \r\n").unwrap(), Some((6, 255)));
        assert_eq!(parse_chunk_size(b"1a").unwrap(), None);
        for bad in [
            &b"\r\n"[..],
            b"zz\r\n",
            b"1a\n",
            b"-1\r\n",
            b"11111111111111111\r\n",
        ] {
            assert!(parse_chunk_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn trailers() {
        let (len, t) = parse_trailers(b"grpc-status: 0\r\nx-b: 2\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(len, 26);
        assert_eq!(t["grpc-status"], "0");
        assert!(parse_trailers(b"grpc-status: 0\r\n").unwrap().is_none());
    }
}
