//! Fuzzes the gateway's HTTP/1.1 client on the response side: any bytes from an upstream, in
//! pieces of any size, must parse into a head and a body (or an error), never a panic, a hang
//! or a body longer than the bytes that came.
#![no_main]

use bytes::BytesMut;
use holdfast_proxy::h1::body::{Decoded, Decoder};
use holdfast_proxy::h1::response::parse_head;
use holdfast_proxy::h1::MAX_HEAD_BYTES;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, wire)) = data.split_first() else {
        return;
    };
    let piece = usize::from(flags & 0x7f) + 1;
    let head_request = flags & 0x80 != 0;
    let mut pieces = wire.chunks(piece);
    let mut buf = BytesMut::new();
    let head = loop {
        match parse_head(&mut buf, head_request) {
            Ok(Some(head)) => break head,
            Ok(None) if buf.len() > MAX_HEAD_BYTES => return,
            Ok(None) => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return,
            },
            Err(_) => return,
        }
    };
    let mut decoder = Decoder::new(head.framing);
    let mut body = 0usize;
    // Every step either consumes bytes, takes a piece, or ends: bounded by the input.
    for _ in 0..(wire.len() * 4 + 16) {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Frame(f)) => {
                if let Some(d) = f.data_ref() {
                    body += d.len();
                }
            }
            Ok(Decoded::End) | Err(_) => break,
            Ok(Decoded::NeedMore) => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => {
                    let _ = decoder.at_close();
                    break;
                }
            },
        }
    }
    assert!(body <= wire.len());
});
