//! Fuzzes the per-connection request-head watcher: any byte stream, split at any points, must
//! come out unchanged except for added marks, never a panic or a hang.
#![no_main]

use std::time::Duration;

use holdfast_proxy::framing::Watched;
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncReadExt;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // The stream arrives in pieces of `split` bytes (1..=256).
        let piece = usize::from(split) + 1;
        let mut reader = tokio_test_reader(bytes, piece);
        let mut watched = Watched::new(&mut reader, Duration::from_secs(3600), 16 * 1024);
        let mut out = Vec::new();
        let _ = watched.read_to_end(&mut out).await;
        let marks = out.windows(18).filter(|w| *w == b"x-holdfast-framing").count();
        let input_marks = bytes.windows(18).filter(|w| *w == b"x-holdfast-framing").count();
        // Only marks are added (each with ": ambiguous\r\n"), nothing is lost.
        assert!(out.len() >= bytes.len());
        assert!(marks >= input_marks);
    });
});

/// A reader that hands out `piece` bytes per read.
fn tokio_test_reader(bytes: &[u8], piece: usize) -> impl tokio::io::AsyncRead + Unpin + '_ {
    Pieces { bytes, piece }
}

struct Pieces<'a> {
    bytes: &'a [u8],
    piece: usize,
}

impl tokio::io::AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.piece.min(self.bytes.len()).min(buf.remaining());
        let (head, rest) = self.bytes.split_at(n);
        buf.put_slice(head);
        self.bytes = rest;
        std::task::Poll::Ready(Ok(()))
    }
}
