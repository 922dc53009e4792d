//! Snap-length cuts inside the TCP options, damaged record lengths, and unsupported link
//! types: what is lost, what is damage, and what the user is told.

mod support;

use std::io::Cursor;
use std::path::Path;

use holdfast_doctor::pcap::{self, Filter, PcapError};
use support::fixture_dir;

/// Rewrites a little-endian classic pcap with every record cut to `snaplen` bytes (wire
/// lengths kept), as `tcpdump -s SNAPLEN` would have written it.
fn cut_to(bytes: &[u8], snaplen: u32) -> Vec<u8> {
    let mut out = bytes[..24].to_vec();
    out[16..20].copy_from_slice(&snaplen.to_le_bytes());
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let incl = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let data = &bytes[at + 16..at + 16 + incl];
        let kept = incl.min(snaplen as usize);
        out.extend_from_slice(&bytes[at..at + 8]);
        out.extend_from_slice(&(kept as u32).to_le_bytes());
        out.extend_from_slice(&bytes[at + 12..at + 16]);
        out.extend_from_slice(&data[..kept]);
        at += 16 + incl;
    }
    out
}

fn verdicts(bytes: Vec<u8>) -> (Vec<(String, String, Option<u8>)>, pcap::Summary) {
    let mut found = Vec::new();
    let outcome = pcap::analyze(Cursor::new(bytes), &Filter::default(), |r| {
        found.push((
            r.verdict.resetter.to_string(),
            r.verdict.cause.to_string(),
            r.verdict.hop,
        ))
    })
    .expect("readable");
    assert!(outcome.damage.is_none(), "{:?}", outcome.damage);
    (found, outcome.summary)
}

/// `tcpdump -s 54` (and 66, 68) cuts the TCP options of most packets: only the options are
/// lost; ports, sequence numbers, flags and window are in the first 20 bytes, so every
/// fixture keeps its verdict and no packet is malformed. (The old decoder dropped such
/// packets as malformed and the verdicts flipped.)
#[test]
fn packets_cut_inside_the_tcp_options_keep_their_verdicts() {
    let mut dir: Vec<_> = std::fs::read_dir(fixture_dir())
        .expect("fixtures")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    dir.sort();
    assert!(dir.len() >= 8);
    for path in dir {
        let bytes = std::fs::read(&path).expect("fixture");
        let (whole, _) = verdicts(bytes.clone());
        let v6 = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("ipv6"));
        let extra = if v6 { 20 } else { 0 };
        for snaplen in [54, 66, 68] {
            let (cut, summary) = verdicts(cut_to(&bytes, snaplen + extra));
            assert_eq!(
                summary.malformed_packets,
                0,
                "{} at snap length {snaplen}",
                name(&path)
            );
            assert_eq!(cut, whole, "{} at snap length {snaplen}", name(&path));
        }
    }
}

/// A cut below the fixed TCP header is still malformed (nothing to decode).
#[test]
fn a_cut_inside_the_fixed_tcp_header_is_malformed() {
    let bytes = std::fs::read(fixture_dir().join("injected.pcap")).expect("fixture");
    let (_, summary) = verdicts(cut_to(&bytes, 40));
    assert_eq!(summary.malformed_packets, summary.packets);
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// The first `records` records of a fixture, then one record header with the given
/// lengths and some bytes after it.
fn with_bad_record(incl: u32, orig: u32) -> (Vec<u8>, u64) {
    let bytes = std::fs::read(fixture_dir().join("refused.pcap")).expect("fixture");
    let mut at = 24;
    for _ in 0..2 {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + len;
    }
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(&bytes[at..at + 8]);
    out.extend_from_slice(&incl.to_le_bytes());
    out.extend_from_slice(&orig.to_le_bytes());
    // The rest of the file follows, so this is not a file cut short.
    out.extend_from_slice(&bytes[at + 16..]);
    (out, at as u64)
}

fn damage_of(bytes: Vec<u8>) -> (u64, Option<PcapError>) {
    let outcome = pcap::analyze(Cursor::new(bytes), &Filter::default(), |_| {}).expect("readable");
    (outcome.summary.packets, outcome.damage)
}

/// A record claiming more bytes than the snap length, more than its wire length, or fewer
/// than any snap length cuts, mid-file, is damage (exit 2) at its offset, not "the capture
/// ends inside a record" (which the old reader said, with exit 0 and the rest lost).
#[test]
fn implausible_record_lengths_mid_file_are_damage() {
    for (incl, orig, words) in [
        (300_000, 66, "snap length"),
        (0x7fff_ffff, 66, "snap length"),
        (100, 66, "66-byte packet"),
        (5, 66, "only 5"),
    ] {
        let (bytes, offset) = with_bad_record(incl, orig);
        let (packets, damage) = damage_of(bytes);
        assert_eq!(packets, 2, "incl {incl}");
        match damage {
            Some(PcapError::Damaged { offset: at, detail }) => {
                assert_eq!(at, offset, "incl {incl}");
                assert!(detail.contains(words), "incl {incl}: {detail}");
            }
            other => panic!("incl {incl}: expected damage, got {other:?}"),
        }
    }
}

/// A pcapng block with total length 13 gets a short message with its offset, not the
/// parser's debug dump of the rest of the file.
#[test]
fn a_pcapng_block_with_an_odd_length_is_described_in_words() {
    let mut bytes = Vec::new();
    support::synth::ng_section(&mut bytes);
    support::synth::ng_interface(&mut bytes, support::synth::Link::Ethernet, 6);
    let offset = bytes.len() as u64;
    bytes.extend_from_slice(&6u32.to_le_bytes());
    bytes.extend_from_slice(&13u32.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 200]);
    let (_, damage) = damage_of(bytes);
    let Some(PcapError::Damaged { offset: at, detail }) = damage else {
        panic!("expected damage, got {damage:?}");
    };
    assert_eq!(at, offset);
    assert!(detail.contains("total length of 13"), "{detail}");
    assert!(detail.len() < 200, "{detail}");
    assert!(!detail.contains("[0, 0"), "{detail}");
}

/// Frames of a link type the decoder does not know are reported as such.
#[test]
fn an_unsupported_link_type_is_named() {
    let mut bytes = std::fs::read(fixture_dir().join("refused.pcap")).expect("fixture");
    bytes[20..24].copy_from_slice(&147u32.to_le_bytes());
    let (_, summary) = verdicts(bytes);
    assert_eq!(summary.tcp_packets, 0);
    assert!(
        summary
            .warnings
            .iter()
            .any(|w| w.contains("link type 147 is not supported")),
        "{:?}",
        summary.warnings
    );
}
