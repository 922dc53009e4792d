//! Fuzzes the capture reader, the decoders and the attribution end to end: any input must
//! give a result or an error, never a panic, and memory stays bounded.
#![no_main]

use holdfast_doctor::pcap::{self, decode, Filter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reports = 0usize;
    let _ = pcap::analyze(
        std::io::Cursor::new(data.to_vec()),
        &Filter::default(),
        |report| {
            reports += 1;
            let _ = report.human();
        },
    );
    for linktype in [0, 1, 101, 113, 276] {
        let _ = decode::decode(linktype, data);
    }
});
