//! One HTTP/1.1 exchange on a plain or TLS connection, with the failure classified (reset,
//! close, timeout) and the bytes received before it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};

/// Largest answer read (headers and body); the rest is not needed.
const MAX_ANSWER: usize = 4 << 20;

/// A connection to the server, plain or TLS.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    /// The TCP stream underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
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

/// A response's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// HTTP minor version (0 for HTTP/1.0, 1 for HTTP/1.1).
    pub minor_version: u8,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body bytes read.
    pub body_len: usize,
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
}

/// How an exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A complete response.
    Response(Response),
    /// A reset, after this many bytes of answer.
    Reset(usize),
    /// The server closed (FIN) before a complete response, after this many bytes.
    Closed(usize),
    /// No complete response within the timeout, after this many bytes.
    Timeout(usize),
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

/// Sends `request` and reads one response.
pub fn exchange(conn: &mut Conn, request: &[u8], timeout: Duration) -> Outcome {
    let _ = conn.tcp().set_read_timeout(Some(timeout));
    let _ = conn.tcp().set_write_timeout(Some(timeout));
    if let Err(e) = conn.write_all(request).and_then(|_| conn.flush()) {
        return failure(&e, 0);
    }
    read_response(conn)
}

fn failure(err: &io::Error, got: usize) -> Outcome {
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

/// Reads one response (head, then the body by Content-Length, chunked end or close).
pub fn read_response(conn: &mut Conn) -> Outcome {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut head: Option<(Response, usize)> = None;
    loop {
        if let Some((response, start)) = &head {
            if body_complete(response, &buf[*start..]) {
                let mut done = response.clone();
                done.body_len = buf.len() - start;
                return Outcome::Response(done);
            }
        }
        if buf.len() > MAX_ANSWER {
            return Outcome::Error(format!("answer larger than {MAX_ANSWER} bytes"));
        }
        let n = match conn.read(&mut chunk) {
            Ok(n) => n,
            Err(e) => return failure(&e, buf.len()),
        };
        if n == 0 {
            // Close-delimited body: complete at EOF.
            if let Some((response, start)) = head {
                if response.header("content-length").is_none() && !is_chunked(&response) {
                    let mut done = response;
                    done.body_len = buf.len() - start;
                    return Outcome::Response(done);
                }
            }
            return Outcome::Closed(buf.len());
        }
        buf.extend_from_slice(&chunk[..n]);
        if head.is_none() {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let response = Response {
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
                    };
                    head = Some((response, len));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Outcome::Error(format!("malformed response: {e}")),
            }
        }
    }
}

fn is_chunked(response: &Response) -> bool {
    response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

fn body_complete(response: &Response, body: &[u8]) -> bool {
    if response.status / 100 == 1 || response.status == 204 || response.status == 304 {
        return true;
    }
    if is_chunked(response) {
        return body.ends_with(b"0\r\n\r\n");
    }
    match response
        .header("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        Some(len) => body.len() >= len,
        None => false,
    }
}
