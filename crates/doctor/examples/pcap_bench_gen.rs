//! Writes a large synthetic pcap for `bench/pcap.sh`: many interleaved TCP connections with
//! full-size data segments, most closing cleanly and a share ending in resets of several kinds
//! (server aborts, forged resets with a foreign TTL, refused SYNs).
//!
//! Usage: `cargo run --release -p holdfast-doctor --example pcap_bench_gen -- OUT.pcap MEGABYTES`

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

/// Connections open at once (interleaved round-robin).
const CONCURRENT: usize = 256;
/// Payload of a full segment.
const MSS: usize = 1448;

struct Writer {
    out: BufWriter<File>,
    time_ns: u64,
    written: u64,
    payload: Vec<u8>,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    fn packet(
        &mut self,
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        ttl: u8,
        len: usize,
    ) -> std::io::Result<()> {
        // About 1 Gbit/s of full-size segments.
        self.time_ns += 12_000;
        let ip_len = 20 + 20 + len;
        let frame_len = 14 + ip_len;
        let mut header = [0u8; 16 + 14 + 40];
        let secs = (1_700_000_000 + self.time_ns / 1_000_000_000) as u32;
        let micros = ((self.time_ns % 1_000_000_000) / 1000) as u32;
        header[0..4].copy_from_slice(&secs.to_le_bytes());
        header[4..8].copy_from_slice(&micros.to_le_bytes());
        header[8..12].copy_from_slice(&(frame_len as u32).to_le_bytes());
        header[12..16].copy_from_slice(&(frame_len as u32).to_le_bytes());
        let eth = &mut header[16..30];
        eth[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        eth[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        eth[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut header[30..50];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&((seq >> 3) as u16).to_be_bytes());
        ip[6] = 0x40;
        ip[8] = ttl;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let tcp = &mut header[50..70];
        tcp[0..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&dport.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&ack.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&502u16.to_be_bytes());
        self.out.write_all(&header)?;
        self.out.write_all(&self.payload[..len])?;
        self.written += (header.len() + len) as u64;
        Ok(())
    }
}

/// One connection's script position.
struct Conn {
    id: u32,
    step: u32,
    segments: u32,
    ending: u32,
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

impl Conn {
    fn new(id: u32) -> Self {
        Self {
            id,
            step: 0,
            segments: 20 + id % 40,
            ending: id % 50,
        }
    }

    /// Emits the next packet; returns false when the connection is over.
    fn next(&mut self, w: &mut Writer) -> std::io::Result<bool> {
        let client = [10, 1, (self.id >> 8) as u8, self.id as u8];
        let server = [10, 200, 0, (self.id % 16) as u8 + 1];
        let cport = 1024 + (self.id % 60000) as u16;
        let sport = 443;
        let (cisn, sisn) = (
            self.id.wrapping_mul(2_654_435_761),
            self.id.wrapping_mul(40_503),
        );
        let c2s = |w: &mut Writer, seq: u32, ack: u32, flags: u8, len: usize| {
            w.packet(client, server, cport, sport, seq, ack, flags, 64, len)
        };
        let s2c = |w: &mut Writer, seq: u32, ack: u32, flags: u8, ttl: u8, len: usize| {
            w.packet(server, client, sport, cport, seq, ack, flags, ttl, len)
        };
        let request = 300u32;
        let sent = |n: u32| sisn.wrapping_add(1 + n * MSS as u32);
        let step = self.step;
        self.step += 1;
        // Ending 0: refused at once.
        if self.ending == 0 {
            match step {
                0 => c2s(w, cisn, 0, SYN, 0)?,
                _ => {
                    s2c(w, 0, cisn.wrapping_add(1), RST | ACK, 61, 0)?;
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        let data_end = 4 + self.segments;
        match step {
            0 => c2s(w, cisn, 0, SYN, 0)?,
            1 => s2c(w, sisn, cisn.wrapping_add(1), SYN | ACK, 61, 0)?,
            2 => c2s(w, cisn.wrapping_add(1), sisn.wrapping_add(1), ACK, 0)?,
            3 => c2s(
                w,
                cisn.wrapping_add(1),
                sisn.wrapping_add(1),
                PSH | ACK,
                request as usize,
            )?,
            n if n < data_end => {
                let k = n - 4;
                s2c(w, sent(k), cisn.wrapping_add(1 + request), ACK, 61, MSS)?;
                if k % 2 == 1 {
                    c2s(w, cisn.wrapping_add(1 + request), sent(k + 1), ACK, 0)?;
                }
            }
            n if n == data_end => {
                let ack = cisn.wrapping_add(1 + request);
                match self.ending {
                    // Server abort.
                    1 => s2c(w, sent(self.segments), ack, RST | ACK, 61, 0)?,
                    // Forged reset one hop away.
                    2 => s2c(w, sent(self.segments), ack, RST | ACK, 64, 0)?,
                    _ => s2c(w, sent(self.segments), ack, FIN | ACK, 61, 0)?,
                }
                if self.ending <= 2 {
                    return Ok(false);
                }
            }
            n if n == data_end + 1 => c2s(
                w,
                cisn.wrapping_add(1 + request),
                sent(self.segments).wrapping_add(1),
                FIN | ACK,
                0,
            )?,
            _ => {
                s2c(
                    w,
                    sent(self.segments).wrapping_add(1),
                    cisn.wrapping_add(2 + request),
                    ACK,
                    61,
                    0,
                )?;
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(megabytes)) =
        (args.get(1), args.get(2).and_then(|m| m.parse::<u64>().ok()))
    else {
        eprintln!("usage: pcap_bench_gen OUT.pcap MEGABYTES");
        return ExitCode::from(2);
    };
    match generate(path, megabytes << 20) {
        Ok((bytes, connections)) => {
            println!("wrote {path}: {bytes} bytes, {connections} connections");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("pcap_bench_gen: {path}: {err}");
            ExitCode::FAILURE
        }
    }
}

fn generate(path: &str, target: u64) -> std::io::Result<(u64, u32)> {
    let mut w = Writer {
        out: BufWriter::with_capacity(1 << 20, File::create(path)?),
        time_ns: 0,
        written: 24,
        payload: vec![0x61; MSS],
    };
    let mut header = Vec::new();
    header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&4u16.to_le_bytes());
    header.extend_from_slice(&[0; 8]);
    header.extend_from_slice(&65535u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    w.out.write_all(&header)?;
    let mut next_id = 0u32;
    let mut open: Vec<Conn> = (0..CONCURRENT)
        .map(|_| {
            next_id += 1;
            Conn::new(next_id)
        })
        .collect();
    while w.written < target {
        for conn in open.iter_mut() {
            if !conn.next(&mut w)? {
                next_id += 1;
                *conn = Conn::new(next_id);
            }
        }
    }
    w.out.flush()?;
    Ok((w.written, next_id))
}
