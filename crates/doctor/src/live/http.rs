//! One HTTP/1.1 exchange on a plain or TLS connection, with the failure classified (reset,
//! close, timeout) and the bytes received before it.
//!
//! Every exchange runs against one deadline ([`exchange`]: `--timeout` from the moment the
//! request is written to the last byte of the answer), not a timeout per read, so a server
//! that trickles its answer cannot hold a probe longer than that. Interim `1xx` answers are
//! skipped (and remembered); the body is read and counted, not kept, so its size does not
//! matter.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};

/// Largest response head (the status line and headers), interim heads included one by one.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most interim (`1xx`) answers accepted before the final one.
pub const MAX_INTERIM: usize = 32;
/// Body bytes read at most: an answer whose body goes on beyond this counts as answered
/// ("enough" to know the server answers), and the rest is not read.
pub const MAX_BODY_READ: u64 = 64 << 20;
/// Body bytes that make an answer whose body is still arriving at the deadline count as
/// answered (a large body on a slow link), rather than as a timeout (a trickle).
pub const BODY_ENOUGH: u64 = 1 << 20;

/// A TCP stream whose reads and writes stop at a deadline: each one waits at most for the
/// time left, and fails with `TimedOut` once it has passed. Without a deadline, the socket's
/// own timeouts apply.
#[derive(Debug)]
pub struct Timed {
    tcp: TcpStream,
    deadline: Option<Instant>,
}

impl Timed {
    /// Wraps a stream, with no deadline.
    pub fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            deadline: None,
        }
    }

    /// The stream.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Sets (or, with `None`, clears) the deadline of later reads and writes.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// The time left before the deadline (None: no deadline), or `TimedOut` when it passed.
    fn left(&self) -> io::Result<Option<Duration>> {
        let Some(deadline) = self.deadline else {
            return Ok(None);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(deadline_passed());
        }
        Ok(Some(left))
    }
}

fn deadline_passed() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the --timeout deadline passed")
}

/// A socket timeout is `WouldBlock` on Unix; rustls must not take it for a non-blocking
/// socket, so it becomes `TimedOut`.
fn timed_out(err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::WouldBlock {
        deadline_passed()
    } else {
        err
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(left) = self.left()? {
            self.tcp.set_read_timeout(Some(left))?;
        }
        self.tcp.read(buf).map_err(timed_out)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(left) = self.left()? {
            self.tcp.set_write_timeout(Some(left))?;
        }
        self.tcp.write(buf).map_err(timed_out)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// A connection to the server, plain or TLS.
pub enum Conn {
    /// Plain TCP.
    Plain(Timed),
    /// TLS over TCP.
    Tls(Box<StreamOwned<ClientConnection, Timed>>),
}

impl Conn {
    /// A plain connection over `tcp`.
    pub fn plain(tcp: TcpStream) -> Self {
        Conn::Plain(Timed::new(tcp))
    }

    /// The TCP stream underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s.tcp(),
            Conn::Tls(s) => s.sock.tcp(),
        }
    }

    /// Sets (or clears) the deadline of the reads and writes underneath, TLS records
    /// included.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        match self {
            Conn::Plain(s) => s.set_deadline(deadline),
            Conn::Tls(s) => s.sock.set_deadline(deadline),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// How far the body of an answer was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// To its end (by Content-Length, the last chunk, or the close).
    Complete,
    /// [`MAX_BODY_READ`] bytes were read and the rest was left unread.
    Enough,
    /// The deadline passed while the body was still arriving, after at least
    /// [`BODY_ENOUGH`] bytes.
    Deadline,
}

/// A response's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code of the final answer.
    pub status: u16,
    /// HTTP minor version (0 for HTTP/1.0, 1 for HTTP/1.1).
    pub minor_version: u8,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body bytes read (decoded from chunks for a chunked body).
    pub body_len: u64,
    /// The interim (`1xx`) answers that came before the final one, in order.
    pub interim: Vec<u16>,
    /// How far the body was read.
    pub body_end: BodyEnd,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the server will keep the connection open: HTTP/1.1 unless it says
    /// `Connection: close`, HTTP/1.0 only when it says `Connection: keep-alive`.
    pub fn keeps_alive(&self) -> bool {
        let connection = self
            .header("connection")
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        if self.minor_version == 0 {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        }
    }

    /// The answer in words: "answered 200 (2 body bytes)", with the interim answers and a
    /// body that was not read to its end.
    pub fn describe(&self) -> String {
        let interim = if self.interim.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = self.interim.iter().map(|s| interim_name(*s)).collect();
            format!(" after interim {}", list.join(", "))
        };
        let announced = self
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|n| format!(" of {n}"))
            .unwrap_or_default();
        let body = match self.body_end {
            BodyEnd::Complete => format!("{} body bytes", self.body_len),
            BodyEnd::Enough => format!(
                "read {}{announced} body bytes, then stopped: enough to know it answers",
                self.body_len
            ),
            BodyEnd::Deadline => format!(
                "read {}{announced} body bytes before the --timeout deadline; the body was still arriving",
                self.body_len
            ),
        };
        format!("answered {}{interim} ({body})", self.status)
    }
}

/// An interim status with its name ("103 Early Hints").
fn interim_name(status: u16) -> String {
    let name = match status {
        100 => " Continue",
        102 => " Processing",
        103 => " Early Hints",
        _ => "",
    };
    format!("{status}{name}")
}

/// How an exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A complete response.
    Response(Response),
    /// A reset, after this many bytes of answer.
    Reset(u64),
    /// The server closed (FIN) before a complete response, after this many bytes.
    Closed(u64),
    /// No complete response within the timeout, after this many bytes.
    Timeout(u64),
    /// Another error.
    Error(String),
}

impl Outcome {
    /// A short word for patterns ("ok", "RST", "FIN", "timeout", "error").
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Response(_) => "ok",
            Outcome::Reset(_) => "RST",
            Outcome::Closed(_) => "FIN",
            Outcome::Timeout(_) => "timeout",
            Outcome::Error(_) => "error",
        }
    }
}

/// Whether an I/O error is a reset.
pub fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// A GET request.
pub fn request(path: &str, host: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: holdfast-doctor\r\nAccept: */*\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `request` and reads one response, all within `timeout` (one deadline for the
/// whole exchange, from the first byte written to the last byte read).
pub fn exchange(conn: &mut Conn, request: &[u8], timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    conn.set_deadline(Some(deadline));
    let outcome = match conn.write_all(request).and_then(|_| conn.flush()) {
        Err(e) => failure(&e, 0),
        Ok(()) => read_answer(conn),
    };
    conn.set_deadline(None);
    outcome
}

fn failure(err: &io::Error, got: u64) -> Outcome {
    if is_reset(err) {
        Outcome::Reset(got)
    } else if matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        Outcome::Timeout(got)
    } else if err.kind() == io::ErrorKind::UnexpectedEof {
        Outcome::Closed(got)
    } else {
        Outcome::Error(err.to_string())
    }
}

/// Reads one response (interim answers skipped, then the final head and its body by
/// Content-Length, chunks or close), all before `deadline`.
pub fn read_response(conn: &mut Conn, deadline: Instant) -> Outcome {
    conn.set_deadline(Some(deadline));
    let outcome = read_answer(conn);
    conn.set_deadline(None);
    outcome
}

/// A head parsed from the front of a buffer: the response and the head's length.
fn parse_head(buf: &[u8]) -> Result<Option<(Response, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some((
            Response {
                status: parsed.code.unwrap_or(0),
                minor_version: parsed.version.unwrap_or(1),
                headers: parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
                body_len: 0,
                interim: Vec::new(),
                body_end: BodyEnd::Complete,
            },
            len,
        ))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("malformed response: {e}")),
    }
}

/// How the body of the final answer ends.
enum Framing {
    /// No body (1xx, 204, 304).
    Empty,
    /// This many bytes are still to come.
    Length(u64),
    /// Chunked.
    Chunked(Chunked),
    /// Until the server closes.
    Close,
}

fn framing(response: &Response) -> Result<Framing, String> {
    if response.status / 100 == 1 || response.status == 204 || response.status == 304 {
        return Ok(Framing::Empty);
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return Ok(Framing::Chunked(Chunked::default()));
    }
    let mut length: Option<u64> = None;
    for (_, value) in response
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
    {
        // `Content-Length: 5, 5` (folded duplicates) is one length.
        for part in value.split(',') {
            let n = part.trim().parse::<u64>().map_err(|_| {
                format!("malformed response: Content-Length {value:?} is not a number")
            })?;
            if length.is_some_and(|l| l != n) {
                return Err(format!(
                    "malformed response: conflicting Content-Length values ({value:?})"
                ));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// The state of a chunked body being read.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
    /// The size line (or trailer line) read so far.
    line: usize,
    size: Vec<u8>,
    /// Trailer bytes so far.
    trailer: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    #[default]
    Size,
    /// Reading chunk data: this many bytes to go.
    Data(u64),
    /// After the data: expecting CRLF (`seen_cr`: the CR came).
    DataEnd { seen_cr: bool },
    /// Trailer lines, ending with an empty line.
    Trailer,
    /// The body is complete.
    Done,
}

/// Longest chunk-size line (with extensions) and trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILER: usize = 64 * 1024;

impl Chunked {
    /// Feeds raw bytes; returns the body (data) bytes among them. Bytes after the end are
    /// ignored.
    fn feed(&mut self, mut data: &[u8]) -> Result<u64, String> {
        let mut body = 0u64;
        while !data.is_empty() {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                    body += take as u64;
                    data = &data[take..];
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd { seen_cr: false }
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd { seen_cr } => {
                    let byte = data[0];
                    data = &data[1..];
                    self.state = match (byte, seen_cr) {
                        (b'\r', false) => ChunkState::DataEnd { seen_cr: true },
                        (b'\n', _) => ChunkState::Size,
                        _ => return Err("malformed chunked body: no CRLF after a chunk".into()),
                    };
                }
                ChunkState::Size => {
                    let byte = data[0];
                    data = &data[1..];
                    if byte != b'\n' {
                        self.line += 1;
                        if self.line > MAX_CHUNK_LINE {
                            return Err("malformed chunked body: chunk-size line too long".into());
                        }
                        self.size.push(byte);
                        continue;
                    }
                    let line = String::from_utf8_lossy(&self.size).into_owned();
                    self.size.clear();
                    self.line = 0;
                    let hex = line
                        .trim_end_matches('\r')
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim();
                    let size = u64::from_str_radix(hex, 16).map_err(|_| {
                        format!("malformed chunked body: chunk size {hex:?} is not hexadecimal")
                    })?;
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Trailer => {
                    let byte = data[0];
                    data = &data[1..];
                    self.trailer += 1;
                    if self.trailer > MAX_TRAILER {
                        return Err("malformed chunked body: trailer section too long".into());
                    }
                    match byte {
                        b'\n' if self.line == 0 => self.state = ChunkState::Done,
                        b'\n' => self.line = 0,
                        b'\r' => {}
                        _ => self.line += 1,
                    }
                }
            }
        }
        Ok(body)
    }

    fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// Counts the body bytes in `data`; true when the body is complete.
fn feed(framing: &mut Framing, data: &[u8], body_len: &mut u64) -> Result<bool, String> {
    match framing {
        Framing::Empty => Ok(true),
        Framing::Length(left) => {
            let take = (*left).min(data.len() as u64);
            *left -= take;
            *body_len += take;
            Ok(*left == 0)
        }
        Framing::Chunked(chunked) => {
            *body_len += chunked.feed(data)?;
            Ok(chunked.done())
        }
        Framing::Close => {
            *body_len += data.len() as u64;
            Ok(false)
        }
    }
}

/// The final answer with its body read this far.
fn done(mut response: Response, body_len: u64, end: BodyEnd) -> Outcome {
    response.body_len = body_len;
    response.body_end = end;
    Outcome::Response(response)
}

/// Reads heads until the final one (skipping interim `1xx` answers, except a `101`), then
/// reads and counts its body.
fn read_answer(conn: &mut Conn) -> Outcome {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    // Every byte received, for the outcome's count.
    let mut got: u64 = 0;
    let mut interim = Vec::new();
    let (mut response, rest) = loop {
        match parse_head(&buf) {
            Ok(Some((response, len))) if response.status / 100 == 1 && response.status != 101 => {
                // 100 Continue, 102 Processing, 103 Early Hints: the final answer follows.
                interim.push(response.status);
                if interim.len() > MAX_INTERIM {
                    return Outcome::Error(format!(
                        "more than {MAX_INTERIM} interim (1xx) answers and no final one"
                    ));
                }
                buf.drain(..len);
                continue;
            }
            Ok(Some((response, len))) => break (response, buf.split_off(len)),
            Ok(None) => {}
            Err(e) => return Outcome::Error(e),
        }
        if buf.len() > MAX_HEAD {
            return Outcome::Error(format!(
                "response head larger than {MAX_HEAD} bytes without its end"
            ));
        }
        match conn.read(&mut chunk) {
            Ok(0) => return Outcome::Closed(got),
            Ok(n) => {
                got += n as u64;
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) => return failure(&e, got),
        }
    };
    response.interim = interim;
    let mut framing = match framing(&response) {
        Ok(f) => f,
        Err(e) => return Outcome::Error(e),
    };
    let mut body_len = 0u64;
    match feed(&mut framing, &rest, &mut body_len) {
        Ok(true) => return done(response, body_len, BodyEnd::Complete),
        Ok(false) => {}
        Err(e) => return Outcome::Error(e),
    }
    drop(rest);
    loop {
        if body_len >= MAX_BODY_READ {
            return done(response, body_len, BodyEnd::Enough);
        }
        // Never more than the limit: raw bytes are at least as many as body bytes.
        let room = usize::try_from(MAX_BODY_READ - body_len)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        match conn.read(&mut chunk[..room]) {
            Ok(0) if matches!(framing, Framing::Close) => {
                return done(response, body_len, BodyEnd::Complete)
            }
            Ok(0) => return Outcome::Closed(got),
            Ok(n) => {
                got += n as u64;
                match feed(&mut framing, &chunk[..n], &mut body_len) {
                    Ok(true) => return done(response, body_len, BodyEnd::Complete),
                    Ok(false) => {}
                    Err(e) => return Outcome::Error(e),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) && body_len >= BODY_ENOUGH =>
            {
                return done(response, body_len, BodyEnd::Deadline)
            }
            // A TLS close-delimited body ends with close_notify (Ok(0) above); a FIN
            // without it is a truncation, as is a reset.
            Err(e) => return failure(&e, got),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(input: &[u8], step: usize) -> Result<(u64, bool), String> {
        let mut c = Chunked::default();
        let mut body = 0;
        for part in input.chunks(step.max(1)) {
            body += c.feed(part)?;
        }
        Ok((body, c.done()))
    }

    #[test]
    fn chunked_bodies_are_decoded_in_any_split() {
        let input = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            assert_eq!(chunked(input, step), Ok((15, true)), "step {step}");
        }
        // Incomplete: no end yet.
        assert_eq!(chunked(b"5\r\nhel", 1), Ok((3, false)));
        // A body that contains the end marker's bytes is not ended by them.
        assert_eq!(chunked(b"7\r\n0\r\n\r\n\r\n\r\n", 1), Ok((7, false)));
        // Bad input is an error, never a panic.
        assert!(chunked(b"zz\r\n", 1).is_err());
        assert!(chunked(b"ffffffffffffffffffff\r\n", 1).is_err());
        assert!(chunked(b"1\r\nab\r\n", 1).is_err());
        assert!(chunked(&vec![b'1'; MAX_CHUNK_LINE + 10], 64).is_err());
    }

    #[test]
    fn content_length_must_be_a_number_and_agree() {
        let head = |headers: &[(&str, &str)]| Response {
            status: 200,
            minor_version: 1,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body_len: 0,
            interim: Vec::new(),
            body_end: BodyEnd::Complete,
        };
        assert!(matches!(
            framing(&head(&[("content-length", "5, 5")])),
            Ok(Framing::Length(5))
        ));
        assert!(framing(&head(&[("content-length", "x")])).is_err());
        assert!(framing(&head(&[("content-length", "5"), ("content-length", "6")])).is_err());
        assert!(matches!(framing(&head(&[])), Ok(Framing::Close)));
    }
}
