//! Request bodies: small ones are kept for retries, large ones stream to the upstream whole,
//! a streamed body still fails over on a refused connect, and a body over the limit gets 413.

mod proxy_support;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use holdfast_testkit::{Behavior, Misbehaving};
use proxy_support::{read_answer, Holdfast};

fn config(targets: &[String], server_extra: &str) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\naccess_log = \"stdout\"\n{server_extra}\n\n[upstreams.pool]\ntargets = [{}]\n\n[[routes]]\nname = \"main\"\nupstream = \"pool\"\n",
        list.join(", ")
    )
}

/// A body whose bytes are not all alike, so a shifted or truncated copy changes the sum.
fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn echo_of(bytes: &[u8]) -> String {
    let sum = bytes
        .iter()
        .fold(0u64, |s, b| s.wrapping_add(u64::from(*b)));
    format!("bytes={} sum={sum}", bytes.len())
}

/// Send `body` with Content-Length (or chunked, in 64 KiB chunks); the status and body text.
fn upload(addr: std::net::SocketAddr, body: &[u8], chunked: bool) -> (u16, String) {
    let (status, text, _) = upload_checked(addr, body, chunked);
    (status, text)
}

/// [`upload`], also saying whether the whole request could be written (a gateway that closes
/// with unread bytes resets the connection, and the client's writes fail).
fn upload_checked(
    addr: std::net::SocketAddr,
    body: &[u8],
    chunked: bool,
) -> (u16, String, std::io::Result<()>) {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let owned = body.to_vec();
    // Write from another thread: an early answer (413) must be readable while we still send.
    let sender = std::thread::spawn(move || {
        let head = if chunked {
            "POST /up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_string()
        } else {
            format!(
                "POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
                owned.len()
            )
        };
        writer.write_all(head.as_bytes())?;
        if chunked {
            for piece in owned.chunks(64 * 1024) {
                writer.write_all(format!("{:x}\r\n", piece.len()).as_bytes())?;
                writer.write_all(piece)?;
                writer.write_all(b"\r\n")?;
            }
            writer.write_all(b"0\r\n\r\n")?;
        } else {
            writer.write_all(&owned)?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut reader = BufReader::new(stream);
    let answer = read_answer(&mut reader, false).expect("an answer, never a reset");
    let sent = sender.join().expect("sender thread");
    // Then close our side and read to the end: the gateway closes with a FIN, never a reset.
    let _ = reader.get_ref().shutdown(std::net::Shutdown::Write);
    let mut rest = Vec::new();
    let end = std::io::Read::read_to_end(&mut reader, &mut rest).map(|_| ());
    (answer.status, answer.text(), sent.and(end))
}

#[test]
fn large_bodies_stream_whole_and_small_ones_are_kept_for_retries() {
    let echo = Misbehaving::start(Behavior::EchoLength).unwrap();
    let hf = Holdfast::start(&config(
        &[echo.url()],
        "retry_buffer_bytes = 65536\nmax_body_bytes = 8388608",
    ));
    for (len, chunked) in [
        (1000, false),
        (3 * 1024 * 1024, false),
        (1024 * 1024 + 7, true),
    ] {
        let data = body(len);
        let (status, text) = upload(hf.addr, &data, chunked);
        assert_eq!(status, 200, "{len} bytes: {text}");
        assert_eq!(text, echo_of(&data), "{len} bytes (chunked: {chunked})");
    }
    let records = hf.records_eventually(3);
    let sizes: Vec<u64> = records
        .iter()
        .filter_map(|r| r["bytes_in"].as_u64())
        .collect();
    assert_eq!(sizes, [1000, 3 * 1024 * 1024, 1024 * 1024 + 7]);
}

#[test]
fn a_streamed_body_fails_over_past_a_refused_target() {
    let echo = Misbehaving::start(Behavior::EchoLength).unwrap();
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_url = format!("http://{}", refused.local_addr().unwrap());
    drop(refused);
    let hf = Holdfast::start(&config(
        &[refused_url, echo.url()],
        "retry_buffer_bytes = 1024",
    ));
    // Round robin sends some of these to the refused target first.
    for i in 0..6 {
        let data = body(200_000 + i);
        let (status, text) = upload(hf.addr, &data, i % 2 == 0);
        assert_eq!(status, 200, "upload {i}: {text}");
        assert_eq!(text, echo_of(&data), "upload {i}");
    }
    assert_eq!(echo.requests(), 6);
}

#[test]
fn a_body_over_the_limit_gets_413_declared_or_streamed() {
    let echo = Misbehaving::start(Behavior::EchoLength).unwrap();
    let hf = Holdfast::start(&config(
        &[echo.url()],
        "retry_buffer_bytes = 65536\nmax_body_bytes = 1048576",
    ));
    let data = body(2 * 1024 * 1024);
    let (status, text, sent) = upload_checked(hf.addr, &data, false);
    assert_eq!(status, 413, "{text}");
    // The client could finish sending: the unread body was drained before the close.
    assert!(sent.is_ok(), "declared: {sent:?}");
    // Chunked: the size is only known while it streams.
    let (status, text, sent) = upload_checked(hf.addr, &data, true);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("body_too_large"), "{text}");
    assert!(sent.is_ok(), "chunked: {sent:?}");
    // Nothing whole reached the upstream.
    assert_eq!(echo.requests(), 0);
}

#[test]
fn an_upload_still_under_way_after_an_early_413_is_read_to_its_end() {
    // Like nginx's lingering close: after the 413 the gateway keeps reading what the client
    // sends (up to 30 s, or until it pauses for 5 s), so a slow uploader is not reset after
    // a few seconds and still reads its answer.
    let up = Misbehaving::start(Behavior::Healthy).unwrap();
    let hf = Holdfast::start(&config(&[up.url()], "max_body_bytes = 1000"));
    let mut s = TcpStream::connect(hf.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let chunks = 70;
    s.write_all(
        format!(
            "POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            chunks * 4096
        )
        .as_bytes(),
    )
    .unwrap();
    let chunk = vec![b'x'; 4096];
    for i in 0..chunks {
        // 7 s in all, more than the 5 s a closing connection used to get.
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(&chunk)
            .unwrap_or_else(|e| panic!("chunk {i}: the gateway cut the upload: {e}"));
    }
    let mut reader = BufReader::new(s);
    let answer = read_answer(&mut reader, false).expect("the 413, never a reset");
    assert_eq!(answer.status, 413);
}
