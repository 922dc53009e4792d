//! The body of an upstream's HTTP/1.1 response, read straight from its connection: exactly
//! `Content-Length` bytes, chunked (trailers included), or up to the close. When the last byte
//! is in, the connection goes back to its pool (if it may serve another exchange); a body
//! that ends early is an error, so the client sees a truncated response, never a clean end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::{H1Conn, ResponseHead, READ_CHUNK};
use crate::plugin::{Body, BoxError};

/// Where a connection goes once its response has been read, and where the body reports how
/// it ended (the target's outlier counters).
pub trait Return: crate::body::BodyOutcome {
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
    decoder: Decoder,
    reusable: bool,
    home: Option<Arc<dyn Return>>,
    /// The connection's target, for [`crate::body::BodyOutcome`].
    target: usize,
    /// How the body ends is reported (not for a `5xx`, counted as a failure at its head).
    report: bool,
    /// A frame (or a deferred error) went to the client side already.
    started: bool,
    /// A failure at the very first poll, handed on at the next one (see `poll_frame`).
    deferred: Option<BodyError>,
}

/// Turn a parsed head into the response for the gateway. A body already in the buffer is
/// taken whole and the connection returned at once. How the body ends is reported to `home`
/// ([`crate::body::BodyOutcome`]) unless the status is a `5xx`.
///
/// A chunked body whose first chunk-size line is already in the buffer and malformed is an
/// error here, before the head goes to the client: the gateway can still answer `502` (or
/// retry), where a body failing right after the head would leave the client an empty reply.
pub fn into_response(
    head: ResponseHead,
    mut conn: H1Conn,
    home: Arc<dyn Return>,
) -> Result<http::Response<Body>, BodyError> {
    use http_body_util::BodyExt;
    let ResponseHead {
        status,
        version,
        headers,
        reason,
        framing,
        reusable,
    } = head;
    let decoder = Decoder::new(framing);
    if decoder.state == State::ChunkSize && !conn.buf.is_empty() {
        parse_chunk_size(&conn.buf)?;
    }
    let streams = match decoder.state {
        State::Done => false,
        State::Length(n) => (conn.buf.len() as u64) < n,
        _ => true,
    };
    if streams && conn.buf.is_empty() {
        peek_body(&mut conn, decoder.state)?;
    }
    let report = !status.is_server_error();
    let target = conn.target;
    let body: Body = match decoder.state {
        State::Done => {
            if report {
                home.body_ended(target, true);
            }
            if reusable && conn.buf.is_empty() {
                home.checkin(conn);
            }
            crate::responses::full(Bytes::new())
        }
        State::Length(n) if conn.buf.len() as u64 >= n => {
            let whole = conn.buf.split_to(n as usize).freeze();
            if report {
                home.body_ended(target, true);
            }
            if reusable && conn.buf.is_empty() {
                home.checkin(conn);
            }
            crate::responses::full(whole)
        }
        _ => UpstreamBody {
            conn: Some(conn),
            decoder,
            reusable,
            home: Some(home),
            target,
            report,
            started: false,
            deferred: None,
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
    Ok(response)
}

/// A head came without body bytes behind it: read what the socket already holds, without
/// waiting. An upstream that reset (or closed) right after its head is then caught while the
/// gateway can still answer `502` or retry, instead of the client getting the head and a
/// broken body, or nothing at all when hyper had not written the head yet.
fn peek_body(conn: &mut H1Conn, state: State) -> Result<(), BodyError> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    conn.buf.reserve(READ_CHUNK);
    match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), &mut cx, &mut conn.buf) {
        Poll::Ready(Err(e)) => Err(BodyError::Read(e)),
        Poll::Ready(Ok(0)) => match state {
            // An empty close-delimited body; its first poll sees the close again.
            State::UntilClose => Ok(()),
            State::Length(n) => Err(BodyError::Short(n)),
            _ => Err(BodyError::ChunkedCutShort),
        },
        Poll::Ready(Ok(_)) => match state {
            State::ChunkSize => parse_chunk_size(&conn.buf).map(|_| ()),
            _ => Ok(()),
        },
        Poll::Pending => Ok(()),
    }
}

impl UpstreamBody {
    /// The body was read to its end: return the connection if it can serve another exchange
    /// (nothing unasked behind the body).
    fn finish(&mut self) {
        self.decoder.state = State::Done;
        let (Some(conn), Some(home)) = (self.conn.take(), self.home.take()) else {
            return;
        };
        if self.report {
            home.body_ended(self.target, true);
        }
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

    /// The next frame, or `None` at the end.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.decoder.decode(&mut conn.buf)? {
                Decoded::Frame(frame) => {
                    if self.decoder.is_done() {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Decoded::End => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Decoded::NeedMore => {
                    if !ready!(self.poll_fill(cx))? {
                        // The close ends a close-delimited body (its connection is not
                        // reused); any other body is short.
                        self.decoder.at_close()?;
                        self.reusable = false;
                        self.finish();
                        return Poll::Ready(None);
                    }
                }
            }
        }
    }
}

/// What [`Decoder::decode`] found in the buffer.
#[derive(Debug)]
pub enum Decoded {
    Frame(Frame<Bytes>),
    /// The body is complete.
    End,
    /// More bytes are needed.
    NeedMore,
}

/// The body framing as a state machine over a buffer, with no I/O (also used by the fuzz
/// target): [`Decoder::decode`] takes what it can from the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    state: State,
}

impl Decoder {
    pub fn new(framing: super::Framing) -> Decoder {
        let state = match framing {
            super::Framing::Empty => State::Done,
            super::Framing::Length(0) => State::Done,
            super::Framing::Length(n) => State::Length(n),
            super::Framing::Chunked => State::ChunkSize,
            super::Framing::UntilClose => State::UntilClose,
        };
        Decoder { state }
    }

    /// The whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The bytes still due, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// The upstream closed the connection: the end of a close-delimited body (`Ok`), else an
    /// error (the body is short).
    pub fn at_close(&mut self) -> Result<(), BodyError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            State::Length(due) => Err(BodyError::Short(due)),
            _ => Err(BodyError::ChunkedCutShort),
        }
    }

    /// Decode from the front of `buf`, consuming what was decoded.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(due) | State::ChunkData(due) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (buf.len() as u64).min(due);
                    let data = buf.split_to(n as usize).freeze();
                    self.state = match self.state {
                        State::Length(_) if n == due => State::Done,
                        State::Length(_) => State::Length(due - n),
                        _ if n == due => State::ChunkEnd,
                        _ => State::ChunkData(due - n),
                    };
                    return Ok(Decoded::Frame(Frame::data(data)));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = buf.len();
                    return Ok(Decoded::Frame(Frame::data(buf.split_to(n).freeze())));
                }
                State::ChunkSize => match parse_chunk_size(buf)? {
                    Some((line, size)) => {
                        buf.advance(line);
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    None if buf.len() > MAX_CHUNK_LINE => {
                        return Err(BodyError::BadChunk("chunk-size line too long"))
                    }
                    None => return Ok(Decoded::NeedMore),
                },
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyError::BadChunk("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        self.state = State::Done;
                        return Ok(Decoded::End);
                    }
                    match parse_trailers(buf)? {
                        Some((len, trailers)) => {
                            buf.advance(len);
                            self.state = State::Done;
                            return Ok(Decoded::Frame(Frame::trailers(trailers)));
                        }
                        None if buf.len() > MAX_TRAILER_BYTES => {
                            return Err(BodyError::BadChunk("trailers too large"))
                        }
                        None => return Ok(Decoded::NeedMore),
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
        if let Some(e) = this.deferred.take() {
            return Poll::Ready(Some(Err(Box::new(e))));
        }
        match ready!(this.step(cx)) {
            Some(Err(e)) => {
                // The connection is in an unknown state: it is closed, never reused. The
                // upstream broke the body off: a failure for its target.
                this.decoder.state = State::Done;
                this.conn = None;
                if let Some(home) = this.home.take().filter(|_| this.report) {
                    home.body_ended(this.target, false);
                }
                if !this.started {
                    // hyper drops a head it has not written yet when the body fails at its
                    // first poll: the client would get nothing at all. One `Pending` first
                    // lets it write the head, so the client sees a response that breaks off.
                    this.started = true;
                    this.deferred = Some(e);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(Box::new(e))))
            }
            other => {
                this.started = true;
                Poll::Ready(other.map(|r| r.map_err(|e| Box::new(e) as BoxError)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
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

    /// Decode `wire` fed in pieces of `piece` bytes: the data, the trailers, and whether the
    /// body ended before the close.
    fn decode_in_pieces(
        framing: super::super::Framing,
        wire: &[u8],
        piece: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>, bool), BodyError> {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut pieces = wire.chunks(piece);
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Frame(f) => match f.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Decoded::End => return Ok((data, trailers, true)),
                Decoded::NeedMore => match pieces.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None => {
                        decoder.at_close()?;
                        return Ok((data, trailers, false));
                    }
                },
            }
        }
    }

    #[test]
    fn every_split_of_the_wire_decodes_the_same() {
        use super::super::Framing;
        let chunked = b"5;x=y\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-sum: 7\r\n\r\n";
        for piece in 1..chunked.len() {
            let (data, trailers, ended) =
                decode_in_pieces(Framing::Chunked, chunked, piece).unwrap();
            assert_eq!(data, b"hello world", "piece {piece}");
            assert_eq!(trailers.unwrap()["x-sum"], "7");
            assert!(ended);
        }
        for piece in 1..12 {
            let (data, _, ended) =
                decode_in_pieces(Framing::Length(11), b"hello world", piece).unwrap();
            assert_eq!((data.as_slice(), ended), (&b"hello world"[..], true));
            let (data, _, ended) =
                decode_in_pieces(Framing::UntilClose, b"hello world", piece).unwrap();
            assert_eq!((data.as_slice(), ended), (&b"hello world"[..], false));
        }
    }

    #[test]
    fn short_and_malformed_bodies_are_errors() {
        use super::super::Framing;
        assert!(matches!(
            decode_in_pieces(Framing::Length(20), b"hello", 3),
            Err(BodyError::Short(15))
        ));
        for bad in [
            &b"5\r\nhel"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"zz\r\n",
            b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
        ] {
            assert!(
                decode_in_pieces(Framing::Chunked, bad, 2).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let endless = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(decode_in_pieces(Framing::Chunked, &endless, 100).is_err());
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
