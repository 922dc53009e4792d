//! A watch on each client connection's bytes, so that *every* request on a keep-alive
//! connection, not only the first, gets the same head checks:
//!
//! - a head with both `Content-Length` and `Transfer-Encoding` (a request-smuggling shape) is
//!   marked, and the gateway answers it `400` and closes the connection;
//! - a head that is malformed (not parseable, bare-LF line ends, a bad or conflicting
//!   `Content-Length`, no or several `Host` on HTTP/1.1), too large (`max_header_bytes`
//!   counts the request line too), of an unknown HTTP/1 version, or with a transfer coding
//!   other than `chunked`, is replaced by a marked stand-in: the gateway answers it (`400`,
//!   `431`, `505`, `501`), logs it as `bad_request`, and the connection ends;
//! - a head that does not complete within `header_timeout` of its first byte is replaced by a
//!   marked stand-in, and the gateway answers `408` and closes;
//! - a connection whose first request sends no byte within `header_timeout` is ended (FIN).
//!
//! The watcher finds each head by following the body framing of the one before it
//! (`Content-Length` or chunked; a request with neither has no body), with the same rules
//! hyper applies. Heads are held back until complete (they are small); body bytes go straight
//! through. HTTP/2 and HTTP/1.0 switch it to pass-through and leave the verdict to hyper;
//! upgrades and `CONNECT` (HTTP/1.1) do too, after their head passed the `Host` and
//! Content-Length/Transfer-Encoding checks.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The header the watcher adds to a head it marks; the gateway answers such requests itself
/// and never forwards the header.
pub const MARK_HEADER: &str = "x-holdfast-framing";
/// [`MARK_HEADER`] value: both `Content-Length` and `Transfer-Encoding`.
pub const MARK_AMBIGUOUS: &str = "ambiguous";
/// [`MARK_HEADER`] value: the head did not complete in time.
pub const MARK_HEAD_TIMEOUT: &str = "head-timeout";
/// [`MARK_HEADER`] value: the head cannot be parsed as HTTP/1.
pub const MARK_MALFORMED: &str = "malformed";
/// [`MARK_HEADER`] value: a line of the head ends with a bare LF.
pub const MARK_BARE_LF: &str = "bare-lf";
/// [`MARK_HEADER`] value: the head (request line included) is over `max_header_bytes`, or has
/// too many header lines.
pub const MARK_TOO_LARGE: &str = "too-large";
/// [`MARK_HEADER`] value: an HTTP version other than 1.0 and 1.1.
pub const MARK_BAD_VERSION: &str = "bad-version";
/// [`MARK_HEADER`] value: a `Content-Length` that is not a number, or several that differ.
pub const MARK_BAD_LENGTH: &str = "bad-length";
/// [`MARK_HEADER`] value: a `Content-Length` too large for any body (over `u64`).
pub const MARK_HUGE_LENGTH: &str = "huge-length";
/// [`MARK_HEADER`] value: a transfer coding other than `chunked`.
pub const MARK_UNSUPPORTED_CODING: &str = "unsupported-coding";
/// [`MARK_HEADER`] value: an HTTP/1.1 request without a `Host`, or with several.
pub const MARK_BAD_HOST: &str = "bad-host";
/// [`MARK_HEADER`] value: a `Host` that is not `host[:port]` (characters a host cannot have,
/// such as `"`, a space or `/`).
pub const MARK_INVALID_HOST: &str = "invalid-host";

/// Most header lines hyper accepts in a head.
const MAX_HEADERS: usize = 100;
/// Room for a head's header lines, left uninitialised (httparse fills what it uses; zeroing
/// 100 slots for every request cost more than parsing a typical head).
fn header_slots<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Longest chunk-size line (with extensions) followed before giving up.
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line; `len` bytes of it so far, `size` parsed so far.
    Size {
        len: usize,
        size: u64,
        digits: bool,
        ext: bool,
    },
    /// Chunk data left.
    Data(u64),
    /// The CRLF after chunk data (bytes left).
    DataEnd(u8),
    /// Trailer lines after the last chunk; `len` bytes of the current line.
    Trailer { len: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between messages: no byte of the next head yet.
    Idle,
    /// Collecting a head.
    Head,
    /// `Content-Length` body bytes left.
    Body(u64),
    Chunked(Chunk),
    /// Not watching any more.
    Through,
}

/// A client stream with its request heads watched (see the module docs).
pub struct Watched<S> {
    inner: S,
    phase: Phase,
    /// Head bytes held back until the head is complete.
    head: BytesMut,
    /// Bytes checked and ready for hyper.
    ready: BytesMut,
    /// No more bytes for hyper after `ready`.
    ended: bool,
    /// After `ready`, never answer reads (a timed-out head was replaced by a stand-in: hyper
    /// must answer it, and an end of stream now would make it close without answering).
    stalled: bool,
    /// Still waiting for the connection's first request.
    first: bool,
    started: Instant,
    deadline: Option<Pin<Box<Sleep>>>,
    header_timeout: Duration,
    max_head: usize,
}

impl<S> Watched<S> {
    /// Watch `inner`; `max_head` bounds a held-back head (larger ones go to hyper, which
    /// answers 431).
    pub fn new(inner: S, header_timeout: Duration, max_head: usize) -> Watched<S> {
        Watched {
            inner,
            phase: Phase::Idle,
            head: BytesMut::new(),
            ready: BytesMut::new(),
            ended: false,
            stalled: false,
            first: true,
            started: Instant::now(),
            deadline: None,
            header_timeout,
            max_head,
        }
    }

    /// Take in bytes read while a head was being collected (and whatever follows it).
    fn take_head_bytes(&mut self) {
        loop {
            if self.phase == Phase::Idle {
                // Empty lines before a request line are allowed; pass them on.
                let blank = self
                    .head
                    .iter()
                    .take_while(|b| **b == b'\r' || **b == b'\n')
                    .count();
                if blank > 0 {
                    let lines = self.head.split_to(blank);
                    self.ready.extend_from_slice(&lines);
                }
                if self.head.is_empty() {
                    return;
                }
                self.phase = Phase::Head;
                if !self.first {
                    self.started = Instant::now();
                }
                self.first = false;
                self.deadline = None;
            }
            if self.phase != Phase::Head {
                return;
            }
            if self.head.starts_with(b"PRI ") {
                // The HTTP/2 preface: hyper's.
                return self.pass_through();
            }
            let mut slots = header_slots();
            let mut req = httparse::Request::new(&mut []);
            let parsed = req.parse_with_uninit_headers(&self.head, &mut slots);
            let end = match parsed {
                Ok(httparse::Status::Complete(end)) if end <= self.max_head => end,
                Ok(httparse::Status::Partial) if self.head.len() <= self.max_head => return,
                Ok(_) | Err(httparse::Error::TooManyHeaders) => return self.refuse(MARK_TOO_LARGE),
                Err(httparse::Error::Version) if one_space_pair(&self.head) => {
                    return self.refuse(MARK_BAD_VERSION)
                }
                Err(_) => return self.refuse(MARK_MALFORMED),
            };
            let verdict = judge(&req, &self.head[..end]);
            if let Verdict::Refuse(why) = verdict {
                return self.refuse(why);
            }
            let head = self.head.split_to(end);
            self.deadline = None;
            match verdict {
                Verdict::Mark(value, framing) => {
                    self.ready.extend_from_slice(&mark(&head, value));
                    self.phase = framing;
                }
                Verdict::Frame(framing) => {
                    self.ready.extend_from_slice(&head);
                    self.phase = framing;
                }
                Verdict::Unknown => {
                    self.ready.extend_from_slice(&head);
                    return self.pass_through();
                }
                Verdict::Refuse(_) => unreachable!("refused above"),
            }
            // What follows the head in the same read: body, then maybe the next head.
            let (phase, used) = advance_body(self.phase, &self.head);
            self.phase = phase;
            let body = self.head.split_to(used);
            self.ready.extend_from_slice(&body);
            if self.phase == Phase::Through {
                return self.pass_through();
            }
        }
    }

    /// The common case without copies: one read that holds exactly one whole request (a
    /// complete head needing no mark, and all of its body or the start of it). It stays in
    /// hyper's buffer; `true` when it was taken this way. Anything else (a partial head, blank
    /// lines, a mark, pipelined bytes after the request) goes the general way.
    fn judge_in_place(&mut self, data: &[u8]) -> bool {
        if data.first().is_none_or(|b| *b == b'\r' || *b == b'\n') {
            return false;
        }
        let mut slots = header_slots();
        let mut req = httparse::Request::new(&mut []);
        let Ok(httparse::Status::Complete(end)) = req.parse_with_uninit_headers(data, &mut slots)
        else {
            return false;
        };
        if end > self.max_head {
            return false;
        }
        let Verdict::Frame(framing) = judge(&req, &data[..end]) else {
            return false;
        };
        let (phase, used) = advance_body(framing, &data[end..]);
        if end + used != data.len() && phase != Phase::Through {
            return false;
        }
        self.phase = phase;
        self.first = false;
        self.deadline = None;
        true
    }

    fn pass_through(&mut self) {
        let rest = self.head.split();
        self.ready.extend_from_slice(&rest);
        self.phase = Phase::Through;
        self.deadline = None;
    }

    /// The head is refused: hand hyper a marked stand-in for it (the gateway answers it and
    /// closes) and read no further; the rest of the connection's bytes are never parsed.
    fn refuse(&mut self, why: &'static str) {
        self.head.clear();
        self.deadline = None;
        self.ready.extend_from_slice(b"GET / HTTP/1.1\r\n");
        self.ready.extend_from_slice(MARK_HEADER.as_bytes());
        self.ready.extend_from_slice(b": ");
        self.ready.extend_from_slice(why.as_bytes());
        self.ready.extend_from_slice(b"\r\n\r\n");
        self.stalled = true;
        self.ended = true;
        self.phase = Phase::Through;
    }

    /// The head did not complete in time: hand hyper a marked stand-in and end the stream.
    fn time_out(&mut self) {
        self.head.clear();
        self.deadline = None;
        if self.phase == Phase::Head {
            self.ready.extend_from_slice(
                format!("GET / HTTP/1.1\r\n{MARK_HEADER}: {MARK_HEAD_TIMEOUT}\r\n\r\n").as_bytes(),
            );
            // The answer carries `Connection: close`; hyper closes once it is written.
            self.stalled = true;
        }
        self.ended = true;
        self.phase = Phase::Through;
    }

    /// Whether a deadline applies while waiting for bytes now.
    fn waits_on_deadline(&self) -> bool {
        self.phase == Phase::Head || (self.phase == Phase::Idle && self.first)
    }
}

/// What to do with a complete head.
enum Verdict {
    Frame(Phase),
    Mark(&'static str, Phase),
    /// Refused with this mark: the connection ends after the answer.
    Refuse(&'static str),
    Unknown,
}

/// A decimal `Content-Length` value: digits only (no sign, no list), optional blanks around.
/// A number too large for `u64` is `u64::MAX` (a body over any limit: 413, not 400).
fn content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(std::str::from_utf8(v).ok()?.parse().unwrap_or(u64::MAX))
}

/// Whether the request line has exactly two spaces (`METHOD TARGET VERSION`): a version error
/// is then about the version, not a space inside the target.
fn one_space_pair(head: &[u8]) -> bool {
    let line_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
    head[..line_end].iter().filter(|b| **b == b' ').count() == 2
}

/// Whether a line of `head` ends with a bare LF (no CR before it).
fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

fn judge(req: &httparse::Request<'_, '_>, head: &[u8]) -> Verdict {
    if has_bare_lf(head) {
        return Verdict::Refuse(MARK_BARE_LF);
    }
    let mut lengths: Option<u64> = None;
    let mut has_cl = false;
    let mut has_te = false;
    let mut chunked = 0u32;
    let mut other_coding = false;
    let mut upgrade = false;
    let mut hosts = 0u32;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            has_cl = true;
            let Some(n) = content_length(h.value) else {
                return Verdict::Refuse(MARK_BAD_LENGTH);
            };
            if lengths.is_some_and(|prev| prev != n) {
                return Verdict::Refuse(MARK_BAD_LENGTH);
            }
            if n == u64::MAX {
                return Verdict::Refuse(MARK_HUGE_LENGTH);
            }
            lengths = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_te = true;
            for coding in h.value.split(|b| *b == b',') {
                let coding = coding.trim_ascii();
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked += 1;
                } else if !coding.is_empty() {
                    other_coding = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if !valid_host(h.value) {
                return Verdict::Refuse(MARK_INVALID_HOST);
            }
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            // An `h2c` upgrade is never passed on (see `hygiene::upgrade_requested`): such a
            // request stays HTTP/1.1 and the heads after it are watched as usual.
            upgrade |= !crate::hygiene::only_h2c(h.value);
        }
    }
    let tunnel = upgrade || req.method == Some("CONNECT");
    if req.version == Some(1) {
        if hosts != 1 {
            return Verdict::Refuse(MARK_BAD_HOST);
        }
        if tunnel && has_cl && has_te {
            // An upgrade is not followed past its head, so the ambiguity cannot be marked and
            // answered later: refuse it here.
            return Verdict::Refuse(MARK_AMBIGUOUS);
        }
    }
    if tunnel || req.version != Some(1) {
        // Upgrades and tunnels leave HTTP; HTTP/1.0 has its own rules: hyper decides.
        return Verdict::Unknown;
    }
    let framing = if has_te {
        if other_coding {
            return Verdict::Refuse(MARK_UNSUPPORTED_CODING);
        }
        if chunked != 1 {
            return Verdict::Refuse(MARK_MALFORMED);
        }
        Phase::Chunked(Chunk::Size {
            len: 0,
            size: 0,
            digits: false,
            ext: false,
        })
    } else {
        match lengths {
            Some(0) | None => Phase::Idle,
            Some(n) => Phase::Body(n),
        }
    };
    if has_cl && has_te {
        Verdict::Mark(MARK_AMBIGUOUS, framing)
    } else {
        Verdict::Frame(framing)
    }
}

/// Whether a `Host` value is `uri-host [":" port]` (RFC 9110 section 7.2 with RFC 3986
/// section 3.2.2): a bracketed IP literal, or a reg-name (an IPv4 address is one too) of
/// unreserved characters, sub-delims and percent-encodings; the port all digits. An empty
/// value is allowed (RFC 9112 section 3.2: a target URI without an authority).
pub(crate) fn valid_host(value: &[u8]) -> bool {
    let v = value.trim_ascii();
    let sub_delim = |b: u8| b"!$&'()*+,;=".contains(&b);
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    let port = if let Some(rest) = v.strip_prefix(b"[") {
        // IPv6address / IPvFuture: hex digits, `:` and `.`, or `v1.` and a reg-name-like rest.
        let Some(end) = memchr::memchr(b']', rest) else {
            return false;
        };
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b == b':' || unreserved(b) || sub_delim(b))
        {
            return false;
        }
        &rest[end + 1..]
    } else {
        let end = memchr::memchr(b':', v).unwrap_or(v.len());
        let mut name = v[..end].iter();
        while let Some(&b) = name.next() {
            let ok = if b == b'%' {
                matches!((name.next(), name.next()), (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit())
            } else {
                unreserved(b) || sub_delim(b)
            };
            if !ok {
                return false;
            }
        }
        &v[end..]
    };
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

/// `head` with `MARK_HEADER: value` added after the request line.
fn mark(head: &[u8], value: &str) -> Vec<u8> {
    let line_end = head
        .iter()
        .position(|b| *b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(head.len());
    let mut out = Vec::with_capacity(head.len() + MARK_HEADER.len() + value.len() + 4);
    out.extend_from_slice(&head[..line_end]);
    out.extend_from_slice(MARK_HEADER.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&head[line_end..]);
    out
}

/// Follow body framing over `bytes`: the new phase and how many bytes belong to the body.
fn advance_body(mut phase: Phase, bytes: &[u8]) -> (Phase, usize) {
    let mut i = 0;
    while i < bytes.len() {
        match phase {
            Phase::Body(left) => {
                let take = left.min((bytes.len() - i) as u64);
                i += take as usize;
                phase = if left == take {
                    Phase::Idle
                } else {
                    Phase::Body(left - take)
                };
            }
            Phase::Chunked(chunk) => {
                let (next, used) = advance_chunk(chunk, &bytes[i..]);
                i += used;
                phase = next;
            }
            _ => break,
        }
        if phase == Phase::Idle || phase == Phase::Through {
            break;
        }
    }
    (phase, i)
}

fn advance_chunk(chunk: Chunk, bytes: &[u8]) -> (Phase, usize) {
    match chunk {
        Chunk::Size {
            mut len,
            mut size,
            mut digits,
            mut ext,
        } => {
            for (i, &b) in bytes.iter().enumerate() {
                len += 1;
                if len > MAX_CHUNK_LINE {
                    return (Phase::Through, i);
                }
                match b {
                    b'\n' => {
                        if !digits {
                            return (Phase::Through, i); // hyper answers the error
                        }
                        let next = if size == 0 {
                            Chunk::Trailer { len: 0 }
                        } else {
                            Chunk::Data(size)
                        };
                        return (Phase::Chunked(next), i + 1);
                    }
                    b';' | b'\r' | b' ' | b'\t' => ext = true,
                    _ if ext => {}
                    _ => match (b as char).to_digit(16) {
                        Some(d) if size <= (u64::MAX >> 4) => {
                            size = size * 16 + u64::from(d);
                            digits = true;
                        }
                        _ => return (Phase::Through, i),
                    },
                }
            }
            let next = Chunk::Size {
                len,
                size,
                digits,
                ext,
            };
            (Phase::Chunked(next), bytes.len())
        }
        Chunk::Data(left) => {
            let take = left.min(bytes.len() as u64);
            let next = if take == left {
                Chunk::DataEnd(2)
            } else {
                Chunk::Data(left - take)
            };
            (Phase::Chunked(next), take as usize)
        }
        Chunk::DataEnd(left) => {
            let mut left = left;
            let mut i = 0;
            while left > 0 && i < bytes.len() {
                left -= 1;
                i += 1;
                // A bare LF ends the chunk data too.
                if bytes[i - 1] == b'\n' {
                    left = 0;
                }
            }
            let next = if left == 0 {
                Chunk::Size {
                    len: 0,
                    size: 0,
                    digits: false,
                    ext: false,
                }
            } else {
                Chunk::DataEnd(left)
            };
            (Phase::Chunked(next), i)
        }
        Chunk::Trailer { mut len } => {
            for (i, &b) in bytes.iter().enumerate() {
                match b {
                    b'\n' if len == 0 => return (Phase::Idle, i + 1),
                    b'\n' => len = 0,
                    b'\r' => {}
                    _ => {
                        len += 1;
                        if len > MAX_CHUNK_LINE {
                            return (Phase::Through, i);
                        }
                    }
                }
            }
            (Phase::Chunked(Chunk::Trailer { len }), bytes.len())
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.stalled {
                return Poll::Pending;
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            match this.phase {
                Phase::Through => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Phase::Body(_) | Phase::Chunked(_) => {
                    // Body bytes go straight to hyper; what follows the body is held back.
                    ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                    let (phase, used) = advance_body(this.phase, &buf.filled()[before..]);
                    this.phase = phase;
                    let end = before + used;
                    if end < buf.filled().len() {
                        if this.phase == Phase::Through {
                            return Poll::Ready(Ok(()));
                        }
                        this.head.extend_from_slice(&buf.filled()[end..]);
                        buf.set_filled(end);
                        this.take_head_bytes();
                    }
                    if buf.filled().len() > before || used == 0 && this.ready.is_empty() {
                        // Body bytes delivered, or end of stream.
                        return Poll::Ready(Ok(()));
                    }
                }
                Phase::Idle | Phase::Head => {
                    match Pin::new(&mut this.inner).poll_read(cx, buf) {
                        Poll::Pending => {
                            if !this.waits_on_deadline() {
                                return Poll::Pending;
                            }
                            let at = this.started + this.header_timeout;
                            let deadline = this
                                .deadline
                                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                            ready!(deadline.as_mut().poll(cx));
                            this.time_out();
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => {
                            if buf.filled().len() == before {
                                // End of stream: hand over what there is.
                                let rest = this.head.split();
                                this.ready.extend_from_slice(&rest);
                                this.ended = true;
                                continue;
                            }
                            if this.phase == Phase::Idle
                                && this.head.is_empty()
                                && this.judge_in_place(&buf.filled()[before..])
                            {
                                return Poll::Ready(Ok(()));
                            }
                            this.head.extend_from_slice(&buf.filled()[before..]);
                            buf.set_filled(before);
                            this.take_head_bytes();
                        }
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Feed `chunks` (with pauses) through a watcher; everything hyper would read.
    async fn through(chunks: &[&[u8]], timeout_ms: u64) -> String {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let owned: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for c in owned {
                client.write_all(&c).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            client
        });
        let mut w = Watched::new(server, Duration::from_millis(timeout_ms), 16 * 1024);
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        // Small reads exercise every split point.
        loop {
            match tokio::time::timeout(Duration::from_millis(400), w.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => panic!("{e}"),
            }
        }
        drop(writer);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn passes_keep_alive_requests_unchanged() {
        let input = "GET /a HTTP/1.1\r\nhost: x\r\n\r\nPOST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloPOST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\nGET /d HTTP/1.1\r\nhost: x\r\n\r\n";
        let out = through(&[input.as_bytes()], 1000).await;
        assert_eq!(out, input);
    }

    #[tokio::test]
    async fn marks_ambiguous_framing_on_a_later_request() {
        let first = "GET /a HTTP/1.1\r\nhost: x\r\n\r\n";
        let second = "POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        let out = through(&[first.as_bytes(), second.as_bytes()], 1000).await;
        assert!(out.starts_with(first), "{out}");
        assert!(
            out[first.len()..].starts_with("POST /b HTTP/1.1\r\nx-holdfast-framing: ambiguous\r\n"),
            "{out}"
        );
        // A body that only looks like a head is not taken for one.
        let body = "POST /c HTTP/1.1\r\nhost: x\r\ncontent-length: 60\r\n\r\nGET / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: x\r\n\r\n";
        let out = through(&[body.as_bytes()], 1000).await;
        assert_eq!(out, body);
    }

    #[tokio::test]
    async fn a_slow_later_head_becomes_a_marked_stand_in() {
        let first = "GET /a HTTP/1.1\r\nhost: x\r\n\r\n";
        let out = through(&[first.as_bytes(), b"GET /slow HTTP/1.1\r\nhost"], 150).await;
        assert_eq!(
            out,
            format!("{first}GET / HTTP/1.1\r\nx-holdfast-framing: head-timeout\r\n\r\n")
        );
    }

    #[tokio::test]
    async fn a_stalled_head_behind_a_complete_one_in_the_same_read_times_out() {
        let out = through(
            &[b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET /slow HTTP/1.1\r\nhost"],
            150,
        )
        .await;
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nx-holdfast-framing: head-timeout\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_silent_first_request_ends_the_stream() {
        let out = through(&[], 100).await;
        assert_eq!(out, "");
    }

    #[tokio::test]
    async fn byte_by_byte_heads_and_chunks_are_followed() {
        let input = "POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\nGET /d HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        let bytes: Vec<&[u8]> = input.as_bytes().chunks(1).collect();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        for c in &bytes {
            client.write_all(c).await.unwrap();
        }
        drop(client);
        let mut w = Watched::new(server, Duration::from_secs(5), 16 * 1024);
        let mut out = String::new();
        w.read_to_string(&mut out).await.unwrap();
        let (before, after) = out.split_at(out.find("GET /d").unwrap());
        assert_eq!(before, &input[..input.find("GET /d").unwrap()]);
        assert!(after.contains("x-holdfast-framing: ambiguous"), "{after}");
    }

    /// What hyper reads from a connection that sends `first` (a good request) then `bad`.
    async fn refused(bad: &[u8]) -> String {
        let first = "GET /a HTTP/1.1\r\nhost: x\r\n\r\n";
        let out = through(&[first.as_bytes(), bad], 1000).await;
        assert!(out.starts_with(first), "{out}");
        out[first.len()..].to_string()
    }

    #[tokio::test]
    async fn bad_heads_become_marked_stand_ins_and_nothing_after_them_is_read() {
        let cases: &[(&[u8], &str)] = &[
            (b"GET / HTTP/1.1\r\nhost x\r\n\r\n", MARK_MALFORMED),
            (b"GET / HTTP/1.1\r\nhost: x\r\nbad\0name: 1\r\n\r\n", MARK_MALFORMED),
            (b"GET /a b HTTP/1.1\r\nhost: x\r\n\r\n", MARK_MALFORMED),
            (b"GET / HTTP/1.2\r\nhost: x\r\n\r\n", MARK_BAD_VERSION),
            (b"GET / HTTP/1.1\nhost: x\n\n", MARK_BARE_LF),
            (b"GET / HTTP/1.1\r\nhost: x\nx-a: 1\r\n\r\n", MARK_BARE_LF),
            (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: +3\r\n\r\nabc", MARK_BAD_LENGTH),
            (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n", MARK_BAD_LENGTH),
            (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999999999999999999\r\n\r\n", MARK_HUGE_LENGTH),
            (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd", MARK_BAD_LENGTH),
            (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3, 3\r\n\r\nabc", MARK_BAD_LENGTH),
            (b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n", MARK_UNSUPPORTED_CODING),
            (b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, chunked\r\n\r\n0\r\n\r\n", MARK_MALFORMED),
            (b"GET / HTTP/1.1\r\n\r\n", MARK_BAD_HOST),
            (b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", MARK_BAD_HOST),
            // Upgrades are not followed past their head: their checks happen at once.
            (b"POST / HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", MARK_AMBIGUOUS),
            (b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n", MARK_BAD_HOST),
            (b"CONNECT a:443 HTTP/1.1\r\n\r\n", MARK_BAD_HOST),
            (b"GET / HTTP/1.1\r\nhost: a\"b\r\n\r\n", MARK_INVALID_HOST),
            (b"GET / HTTP/1.1\r\nhost: a b\r\n\r\n", MARK_INVALID_HOST),
            (b"GET / HTTP/1.1\r\nhost: a/b\r\n\r\n", MARK_INVALID_HOST),
            (b"GET / HTTP/1.1\r\nhost: a:8x\r\n\r\n", MARK_INVALID_HOST),
            (b"GET / HTTP/1.0\r\nhost: <a>\r\n\r\n", MARK_INVALID_HOST),
        ];
        for (bad, why) in cases {
            let mut input = bad.to_vec();
            // Whatever follows a refused head is never handed on.
            input.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n");
            let out = refused(&input).await;
            assert_eq!(
                out,
                format!("GET / HTTP/1.1\r\n{MARK_HEADER}: {why}\r\n\r\n"),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn host_values_follow_rfc_3986() {
        for good in [
            &b"example.com"[..],
            b"Example.COM:8443",
            b"127.0.0.1:80",
            b"[::1]:8080",
            b"[2001:db8::1]",
            b"[v1.fe80::a+en1]",
            b"my_host-1.local~x",
            b"caf%C3%A9.example",
            b"a!$&'()*+,;=b",
            b"host:",
            b"",
        ] {
            assert!(valid_host(good), "{}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b"a\"b"[..],
            b"a b",
            b"a/b",
            b"a@b",
            b"a\\b",
            b"a:80:80",
            b"a:8x",
            b"[::1",
            b"[]",
            b"[::1]x",
            b"[::1]:8x",
            b"a%2",
            b"a%zz",
            b"a{b}",
            b"h\xc3\xa9",
        ] {
            assert!(!valid_host(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn an_h2c_upgrade_request_is_watched_like_any_other() {
        // Not a tunnel: the next head on the connection gets the usual checks.
        let first = "GET /a HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n";
        let second = "POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        let out = through(&[first.as_bytes(), second.as_bytes()], 1000).await;
        assert!(out.starts_with(first), "{out}");
        assert!(
            out[first.len()..].starts_with("POST /b HTTP/1.1\r\nx-holdfast-framing: ambiguous\r\n"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn the_request_line_counts_toward_the_head_limit() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let long = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(3000));
        client.write_all(long.as_bytes()).await.unwrap();
        let mut w = Watched::new(server, Duration::from_secs(5), 2048);
        let mut buf = vec![0u8; 8192];
        let n = w.read(&mut buf).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            format!("GET / HTTP/1.1\r\n{MARK_HEADER}: {MARK_TOO_LARGE}\r\n\r\n")
        );
    }

    #[tokio::test]
    async fn http1_0_and_the_http2_preface_pass_through() {
        let input = "GET / HTTP/1.0\r\n\r\n";
        assert_eq!(through(&[input.as_bytes()], 1000).await, input);
        let preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(through(&[preface.as_bytes()], 1000).await, preface);
    }

    #[test]
    fn chunk_sizes_follow_hex_and_stop_on_garbage() {
        let start = Phase::Chunked(Chunk::Size {
            len: 0,
            size: 0,
            digits: false,
            ext: false,
        });
        let (p, used) = advance_body(start, b"1F\r\n");
        assert_eq!((p, used), (Phase::Chunked(Chunk::Data(31)), 4));
        let (p, _) = advance_body(start, b"zz\r\n");
        assert_eq!(p, Phase::Through);
        let (p, used) = advance_body(Phase::Body(3), b"abcGET");
        assert_eq!((p, used), (Phase::Idle, 3));
    }
}
