//! Runs the capture analyser on a file and prints its totals and bookkeeping counters
//! (used to measure time and memory on large captures without building the CLI):
//! `cargo run --release -p holdfast-doctor --example pcap_work -- FILE`.

use std::fs::File;

use holdfast_doctor::pcap::{self, Filter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: pcap_work FILE")?;
    let verbose = std::env::args().nth(2).is_some();
    let outcome = pcap::analyze(File::open(path)?, &Filter::default(), |r| {
        if verbose {
            println!("{}", r.human());
        }
    })?;
    let s = &outcome.summary;
    println!(
        "packets {} tcp {} malformed {} connections {} untracked {} resets {} seconds {:.3}",
        s.packets,
        s.tcp_packets,
        s.malformed_packets,
        s.connections,
        s.untracked_connections,
        s.reset_connections,
        s.seconds
    );
    println!("{:?}", outcome.work);
    if let Some(damage) = outcome.damage {
        println!("damage: {damage}");
    }
    Ok(())
}
