//! Test support: real TCP servers that misbehave on request (resets, idle closes, hangs,
//! garbage), for putting Holdfast in front of them.
//!
//! Each [`Misbehaving`] server listens on `127.0.0.1:0`, runs on its own threads, counts the
//! requests it read completely, remembers every `x-request-id` it read, and stops on drop.
//! [`pki::TestPki`] makes a fresh CA and `localhost` certificate for TLS tests.

pub mod pki;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What the server does with each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Answers `200` and keeps connections alive (60 s idle limit).
    Healthy,
    /// Sends a reset as soon as it accepts (SO_LINGER 0), reading nothing.
    ResetOnAccept,
    /// Reads the whole request, then resets (SO_LINGER 0): it may have processed it.
    ResetAfterRequest,
    /// Answers `200` with keep-alive, and closes a connection idle for exactly this long
    /// (without announcing it in a `Keep-Alive` header).
    IdleClose(Duration),
    /// Like `IdleClose`, but announces the limit as `Keep-Alive: timeout=SECS` (whole seconds).
    IdleCloseAnnounced(Duration),
    /// Sends the head and part of a `Content-Length` body, then resets.
    ResetMidBody,
    /// Sends the head and one chunk of a chunked body, then resets.
    ResetMidChunked,
    /// Reads the request and never answers (until the server stops, at most 60 s).
    Hang,
    /// Answers `200` after this delay.
    Slow(Duration),
    /// Answers `503`.
    Unavailable,
    /// Answers bytes that are not HTTP, then closes.
    Garbage,
    /// Answers the first request of each connection `200` with keep-alive, and every later
    /// one with bytes that are not HTTP (then closes): garbage on a reused connection.
    GarbageOnReuse,
    /// Answers `200` with `bytes=N sum=S`: the request body's length and the wrapping sum of
    /// its bytes (to check that a body arrived whole).
    EchoLength,
}

struct Shared {
    behavior: Behavior,
    stop: AtomicBool,
    requests: AtomicUsize,
    connections: AtomicUsize,
    ids: Mutex<HashMap<String, usize>>,
}

/// A running misbehaving server; stops when dropped.
pub struct Misbehaving {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Misbehaving {
    /// Start a server with `behavior` on `127.0.0.1:0`.
    pub fn start(behavior: Behavior) -> io::Result<Misbehaving> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            behavior,
            stop: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            ids: Mutex::new(HashMap::new()),
        });
        let s = shared.clone();
        thread::spawn(move || accept_loop(listener, s));
        Ok(Misbehaving { addr, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests read completely so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// How many times each `x-request-id` was read.
    pub fn request_ids(&self) -> HashMap<String, usize> {
        self.shared
            .ids
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

impl Drop for Misbehaving {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                // Answers go out at once (no Nagle wait for the ACK of a previous segment,
                // which a peer delays by up to 40 ms).
                let _ = stream.set_nodelay(true);
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let s = shared.clone();
                thread::spawn(move || {
                    let _ = serve_connection(stream, &s);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(1))
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// One request: the head lines and the body.
struct Request {
    id: Option<String>,
    /// Body length and wrapping byte sum.
    body: (usize, u64),
}

/// Read one request; `Ok(None)` on a clean close or an idle timeout.
fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    }
    // Idle timeout applies between requests only; a started request gets 10 s.
    reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut length = 0usize;
    let mut chunked = false;
    let mut id = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim();
            match name.as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "x-request-id" => id = Some(value.to_string()),
                _ => {}
            }
        }
    }
    let mut seen = (0usize, 0u64);
    let mut take = |bytes: &[u8]| {
        seen.0 += bytes.len();
        seen.1 = bytes
            .iter()
            .fold(seen.1, |sum, b| sum.wrapping_add(u64::from(*b)));
    };
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut data = vec![0u8; n + 2];
            reader.read_exact(&mut data)?;
            take(&data[..n]);
            if n == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        take(&body);
    }
    Ok(Some(Request { id, body: seen }))
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    // Head and body in one write, as a well-behaved server sends a small answer.
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes())
}

fn serve_connection(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let behavior = shared.behavior;
    if behavior == Behavior::ResetOnAccept {
        reset(stream);
        return Ok(());
    }
    let idle = match behavior {
        Behavior::IdleClose(d) | Behavior::IdleCloseAnnounced(d) => d,
        _ => Duration::from_secs(60),
    };
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut served = 0usize;
    loop {
        reader.get_ref().set_read_timeout(Some(idle))?;
        let Some(req) = read_request(&mut reader)? else {
            // Clean close (FIN) on idle timeout or client close.
            let _ = writer.shutdown(std::net::Shutdown::Write);
            return Ok(());
        };
        shared.requests.fetch_add(1, Ordering::SeqCst);
        if let Some(id) = req.id {
            if let Ok(mut ids) = shared.ids.lock() {
                *ids.entry(id).or_insert(0) += 1;
            }
        }
        served += 1;
        match behavior {
            Behavior::GarbageOnReuse if served == 1 => respond(&mut writer, "200 OK", "ok\n")?,
            Behavior::Healthy | Behavior::IdleClose(_) => respond(&mut writer, "200 OK", "ok\n")?,
            Behavior::EchoLength => respond(
                &mut writer,
                "200 OK",
                &format!("bytes={} sum={}", req.body.0, req.body.1),
            )?,
            Behavior::IdleCloseAnnounced(d) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nkeep-alive: timeout={}\r\ncontent-length: 3\r\n\r\nok\n",
                    d.as_secs()
                );
                writer.write_all(head.as_bytes())?;
            }
            Behavior::Slow(d) => {
                thread::sleep(d);
                respond(&mut writer, "200 OK", "slow ok\n")?;
            }
            Behavior::Unavailable => {
                respond(&mut writer, "503 Service Unavailable", "unavailable\n")?
            }
            Behavior::ResetAfterRequest => {
                reset(writer);
                return Ok(());
            }
            Behavior::ResetMidBody => {
                writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")?;
                writer.write_all(&[b'x'; 100])?;
                writer.flush()?;
                thread::sleep(Duration::from_millis(50));
                reset(writer);
                return Ok(());
            }
            Behavior::ResetMidChunked => {
                writer.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n64\r\n")?;
                writer.write_all(&[b'x'; 100])?;
                writer.write_all(b"\r\n")?;
                writer.flush()?;
                thread::sleep(Duration::from_millis(50));
                reset(writer);
                return Ok(());
            }
            Behavior::Hang => {
                let until = Instant::now() + Duration::from_secs(60);
                while Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(20));
                }
                return Ok(());
            }
            Behavior::Garbage | Behavior::GarbageOnReuse => {
                writer.write_all(b"\x00\x01garbage, not HTTP\r\n\r\n")?;
                let _ = writer.shutdown(std::net::Shutdown::Write);
                return Ok(());
            }
            Behavior::ResetOnAccept => return Ok(()),
        }
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn refused_addr() -> io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}
