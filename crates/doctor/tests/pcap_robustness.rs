//! Randomized robustness (runs in every `cargo test`; `fuzz/` has the coverage-guided
//! version): mutated and truncated captures give a report or an error, never a panic.

mod support;

use std::io::Cursor;

use holdfast_doctor::pcap::{self, Filter};
use support::{fixture_dir, SCENARIOS};

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut ran = 0;
    for scenario in SCENARIOS {
        let original =
            std::fs::read(fixture_dir().join(format!("{}.pcap", scenario.name))).unwrap();
        for round in 0..150 {
            let mut bytes = original.clone();
            match round % 4 {
                0 => {
                    for _ in 0..1 + rng.below(8) {
                        let at = rng.below(bytes.len());
                        bytes[at] = rng.next() as u8;
                    }
                }
                1 => {
                    let keep = rng.below(bytes.len());
                    bytes.truncate(keep);
                }
                2 => {
                    // Overwrite a 4-byte field with an extreme value (lengths, counts).
                    let at = rng.below(bytes.len().saturating_sub(4));
                    let value = [0u32, 1, 0xffff_ffff, 0x7fff_ffff, 65_535][rng.below(5)];
                    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
                }
                _ => {
                    let at = rng.below(bytes.len());
                    let len = rng.below(64);
                    let chunk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    bytes.splice(at..at, chunk);
                }
            }
            let mut reports = 0;
            let result = pcap::analyze(Cursor::new(bytes), &Filter::default(), |report| {
                let _ = report.human();
                let _ = serde_json::to_string(&report.json()).unwrap();
                reports += 1;
            });
            if let Ok(outcome) = result {
                assert!(outcome.summary.reset_connections as usize == reports);
            }
            ran += 1;
        }
    }
    assert_eq!(ran, SCENARIOS.len() * 150);
}
