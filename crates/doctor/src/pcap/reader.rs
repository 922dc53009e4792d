//! Streaming capture reader: pcap (both byte orders, µs and ns) and pcapng (several sections
//! and interfaces), optionally gzip-compressed. Calls back once per packet with a borrowed
//! slice; memory stays bounded by the read buffer.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};

use pcap_parser::pcapng::Block;
use pcap_parser::traits::{PcapNGPacketBlock, PcapReaderIterator};
use pcap_parser::{create_reader, Linktype, PcapBlockOwned, PcapError as ParserError};

use super::error::PcapError;

/// Initial read buffer size.
const BUFFER_BYTES: usize = 1 << 20;
/// The read buffer grows for large blocks up to this size; a larger block is damage.
const MAX_BLOCK_BYTES: usize = 16 << 20;

/// One captured packet.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// 1-based frame number, as Wireshark counts.
    pub number: u64,
    /// Capture time in nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// Link type of the interface it was captured on.
    pub linktype: i32,
    /// Captured bytes (possibly cut by the snap length).
    pub data: &'a [u8],
    /// Length on the wire.
    pub orig_len: u32,
}

/// What reading noticed besides the frames.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    /// Frames delivered.
    pub frames: u64,
    /// Bytes of capture consumed (after decompression).
    pub bytes: u64,
    /// Non-fatal problems (e.g. the file ends inside a record).
    pub warnings: Vec<String>,
    /// Fatal damage after some frames were delivered.
    pub damage: Option<PcapError>,
}

/// What to do after one call to the parser.
enum Step {
    Consume(usize),
    Eof,
    CutShort,
    Incomplete(usize),
    ReadFailed(String),
    Damaged(String),
}

/// Per-interface facts of a pcapng section.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: i32,
    units_per_second: u64,
    offset_seconds: i64,
}

/// Reads every frame of `input` and calls `visit` for each. Returns an error only when the
/// input cannot be read as a capture at all; damage later on ends reading and is reported in
/// [`ReadOutcome::damage`].
pub fn read_frames<R, F>(input: R, mut visit: F) -> Result<ReadOutcome, PcapError>
where
    R: Read + Send + 'static,
    F: FnMut(&Frame<'_>),
{
    let error_slot = Arc::new(Mutex::new(None));
    let gzip_cut = Arc::new(Mutex::new(None));
    let input = decompress(
        BufReader::with_capacity(BUFFER_BYTES, input),
        Arc::clone(&gzip_cut),
    )
    .map_err(|source| PcapError::Io {
        what: "the input".into(),
        source,
    })?;
    let cut_at = |slot: &Arc<Mutex<Option<u64>>>| slot.lock().ok().and_then(|s| *s);
    let mut input = BufReader::with_capacity(
        64 * 1024,
        ErrorKeeping {
            inner: input,
            slot: Arc::clone(&error_slot),
        },
    );
    // The parser keeps the first pcapng section header to itself: note its byte order here.
    let first_section_big_endian = match input.fill_buf() {
        Ok(head) if head.starts_with(&[0x0A, 0x0D, 0x0D, 0x0A]) => match head.get(8..12) {
            Some([0x1A, 0x2B, 0x3C, 0x4D]) => Some(true),
            Some(_) => Some(false),
            None => None,
        },
        Ok(_) => None,
        Err(_) => None,
    };
    let mut reader = match create_reader(BUFFER_BYTES, input) {
        Ok(reader) => reader,
        Err(_) if cut_at(&gzip_cut).is_some() => {
            let offset = cut_at(&gzip_cut).unwrap_or(0);
            return Err(PcapError::Damaged {
                offset,
                detail: "the gzip stream ends early (the compressed file was cut short) \
                         before a whole capture header"
                    .into(),
            });
        }
        Err(ParserError::Eof) => return Err(PcapError::Empty),
        Err(ParserError::ReadError) => {
            return Err(read_error(&error_slot));
        }
        Err(ParserError::Incomplete(_)) => {
            return Err(PcapError::NotACapture {
                detail: "the input is shorter than a capture header".into(),
            })
        }
        Err(other) => {
            return Err(PcapError::NotACapture {
                detail: other.to_string(),
            })
        }
    };
    let mut outcome = ReadOutcome::default();
    let mut legacy: Option<(i32, i64)> = None;
    // Byte order and snap length of a classic pcap, to check each record header.
    let mut legacy_layout: Option<(bool, u32)> = None;
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut capacity = BUFFER_BYTES;
    let mut last_time = 0i64;
    let mut ng_big_endian: Option<bool> = first_section_big_endian;
    loop {
        let offset = reader.consumed() as u64;
        if let Some(detail) =
            legacy_layout.and_then(|(big, snaplen)| implausible_record(reader.data(), big, snaplen))
        {
            outcome.damage = Some(PcapError::Damaged { offset, detail });
            break;
        }
        let step = match reader.next() {
            Ok((length, block)) => {
                let frame = match &block {
                    PcapBlockOwned::LegacyHeader(header) => {
                        let units = if header.is_nanosecond_precision() {
                            1_000_000_000
                        } else {
                            1_000_000
                        };
                        legacy = Some((header.network.0, units));
                        legacy_layout = Some((header.is_bigendian(), header.snaplen));
                        None
                    }
                    PcapBlockOwned::Legacy(packet) => {
                        let (linktype, units) = legacy.unwrap_or((Linktype::ETHERNET.0, 1_000_000));
                        let fraction = i64::from(packet.ts_usec) * (1_000_000_000 / units);
                        Some((
                            linktype,
                            i64::from(packet.ts_sec) * 1_000_000_000 + fraction,
                            packet.data,
                            packet.origlen,
                        ))
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
                        ng_big_endian = Some(shb.big_endian());
                        interfaces.clear();
                        None
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        interfaces.push(Interface {
                            linktype: idb.linktype.0,
                            units_per_second: idb.ts_resolution().unwrap_or(1_000_000).max(1),
                            offset_seconds: idb.ts_offset(),
                        });
                        None
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        match interfaces.get(epb.if_id as usize) {
                            Some(iface) => {
                                let ticks = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                                Some((
                                    iface.linktype,
                                    ticks_to_ns(ticks, iface),
                                    epb.packet_data(),
                                    epb.origlen,
                                ))
                            }
                            None => {
                                outcome.warnings.push(format!(
                                    "byte offset {offset}: packet for undeclared interface {} skipped",
                                    epb.if_id
                                ));
                                None
                            }
                        }
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        let linktype = interfaces.first().map(|i| i.linktype);
                        linktype
                            .map(|linktype| (linktype, last_time, spb.packet_data(), spb.origlen))
                    }
                    PcapBlockOwned::NG(_) => None,
                };
                if let Some((linktype, time_ns, data, orig_len)) = frame {
                    outcome.frames += 1;
                    last_time = time_ns;
                    visit(&Frame {
                        number: outcome.frames,
                        time_ns,
                        linktype,
                        data,
                        orig_len,
                    });
                }
                Step::Consume(length)
            }
            Err(ParserError::Eof) => Step::Eof,
            Err(ParserError::UnexpectedEof) => Step::CutShort,
            Err(ParserError::Incomplete(needed)) => Step::Incomplete(needed),
            Err(ParserError::ReadError) => Step::ReadFailed(read_error(&error_slot).to_string()),
            Err(other) => {
                let short = short_error(&other);
                Step::Damaged(
                    ng_big_endian
                        .and_then(|big| bad_block_length(reader.data(), big))
                        .unwrap_or_else(|| format!("unparsable block ({short})")),
                )
            }
        };
        match step {
            Step::Consume(length) => reader.consume(length),
            Step::Eof => break,
            Step::CutShort => {
                let detail = "a length field disagrees with the block";
                if !skip_damaged(&mut *reader, ng_big_endian, offset, detail, &mut outcome) {
                    outcome
                        .warnings
                        .push(cut_short(offset, reader.data().len()));
                    break;
                }
            }
            Step::ReadFailed(detail) => {
                outcome.damage = Some(PcapError::Damaged { offset, detail });
                break;
            }
            Step::Damaged(detail) => {
                if !skip_damaged(&mut *reader, ng_big_endian, offset, &detail, &mut outcome) {
                    outcome.damage = Some(PcapError::Damaged { offset, detail });
                    break;
                }
            }
            Step::Incomplete(needed) => {
                if reader.reader_exhausted() {
                    if skip_damaged(
                        &mut *reader,
                        ng_big_endian,
                        offset,
                        "a length field disagrees with the block",
                        &mut outcome,
                    ) {
                        continue;
                    }
                    if !reader.data().is_empty() {
                        outcome
                            .warnings
                            .push(cut_short(offset, reader.data().len()));
                    }
                    break;
                }
                if reader.data().len() + needed.max(1) > capacity {
                    let wanted = (reader.data().len() + needed).max(capacity * 2);
                    if wanted > MAX_BLOCK_BYTES {
                        if skip_damaged(
                            &mut *reader,
                            ng_big_endian,
                            offset,
                            "a length field claims a huge record",
                            &mut outcome,
                        ) {
                            continue;
                        }
                        outcome.damage = Some(PcapError::Damaged {
                            offset,
                            detail: format!(
                                "a record claims more than {} MiB; its length field is corrupt",
                                MAX_BLOCK_BYTES >> 20
                            ),
                        });
                        break;
                    }
                    reader.grow(wanted);
                    capacity = wanted;
                }
                let refill = reader.refill().map_err(|err| match err {
                    ParserError::ReadError => read_error(&error_slot).to_string(),
                    other => other.to_string(),
                });
                if let Err(detail) = refill {
                    outcome.damage = Some(PcapError::Damaged { offset, detail });
                    break;
                }
            }
        }
    }
    outcome.bytes = reader.consumed() as u64;
    if let Some(offset) = cut_at(&gzip_cut) {
        outcome.warnings.push(format!(
            "the gzip stream ends early at byte offset {offset} of the decompressed capture (the \
             compressed file was cut short); the frames before it were analysed"
        ));
    }
    Ok(outcome)
}

/// pcapng blocks carry their length twice: a damaged block whose two lengths agree is skipped
/// with a warning. Returns whether it was.
fn skip_damaged(
    reader: &mut (dyn PcapReaderIterator + Send),
    ng_big_endian: Option<bool>,
    offset: u64,
    detail: &str,
    outcome: &mut ReadOutcome,
) -> bool {
    let Some(length) = ng_big_endian.and_then(|big| skippable_block(reader.data(), big)) else {
        return false;
    };
    outcome.warnings.push(format!(
        "byte offset {offset}: damaged block skipped ({detail})"
    ));
    reader.consume(length);
    true
}

/// The length of the pcapng block at the start of `data` when both its length fields agree
/// and it is complete.
fn skippable_block(data: &[u8], big_endian: bool) -> Option<usize> {
    let read = |at: usize| -> Option<usize> {
        let bytes: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        let value = if big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        };
        usize::try_from(value).ok()
    };
    let length = read(4)?;
    if length < 12 || length % 4 != 0 || length > data.len() || read(length - 4)? != length {
        return None;
    }
    // Never skip a section header: its byte order decides how the rest is read.
    (read(0)? != 0x0A0D_0D0A).then_some(length)
}

/// Whether the classic pcap record header at the start of `data` cannot be right: more
/// captured bytes than the snap length or than the packet had on the wire, or a packet cut
/// below any snap length. Such a record is damage, not a capture cut short.
fn implausible_record(data: &[u8], big_endian: bool, snaplen: u32) -> Option<String> {
    let read = |at: usize| -> Option<u32> {
        let bytes: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        })
    };
    let incl = read(8)?;
    let orig = read(12)?;
    if snaplen > 0 && incl > snaplen {
        return Some(format!(
            "a record header claims {incl} captured bytes, more than the capture's snap length \
             ({snaplen}): its length field is corrupt"
        ));
    }
    if incl > orig {
        return Some(format!(
            "a record header claims {incl} captured bytes of a {orig}-byte packet: its length \
             fields are corrupt"
        ));
    }
    let limit = if snaplen == 0 {
        orig
    } else {
        orig.min(snaplen)
    };
    if incl < limit && incl < MIN_PLAUSIBLE_CUT {
        return Some(format!(
            "a record header claims only {incl} captured bytes of a {orig}-byte packet (snap \
             length {snaplen}): its length field is corrupt"
        ));
    }
    None
}

/// No snap length cuts a packet below this many bytes (a link header and part of an IP
/// header): a shorter record that is not the whole packet is a corrupt length field.
const MIN_PLAUSIBLE_CUT: u32 = 20;

/// A pcapng block whose total length field cannot be right, described in words.
fn bad_block_length(data: &[u8], big_endian: bool) -> Option<String> {
    let bytes: [u8; 4] = data.get(4..8)?.try_into().ok()?;
    let length = if big_endian {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    };
    if length as usize > MAX_BLOCK_BYTES {
        return Some(format!(
            "a block claims a total length of {length} bytes, more than {} MiB: its length \
             field is corrupt",
            MAX_BLOCK_BYTES >> 20
        ));
    }
    (length < 12 || length % 4 != 0).then(|| {
        format!(
            "a block claims a total length of {length} bytes (a pcapng block length is a \
             multiple of 4, at least 12): its length field is corrupt"
        )
    })
}

/// The parser's error without the input bytes some of its variants carry.
fn short_error(err: &ParserError<&[u8]>) -> String {
    match err {
        ParserError::NomError(_, kind) => format!("{kind:?}"),
        ParserError::OwnedNomError(_, kind) => format!("{kind:?}"),
        other => {
            let text = other.to_string();
            match text.char_indices().nth(120) {
                Some((at, _)) => format!("{}...", &text[..at]),
                None => text,
            }
        }
    }
}

fn cut_short(offset: u64, left_over: usize) -> String {
    format!(
        "the capture ends inside a record at byte offset {offset} ({left_over} bytes left over); \
         it was probably cut short while being written"
    )
}

/// Nanoseconds since the epoch from pcapng ticks, without overflow.
fn ticks_to_ns(ticks: u64, iface: &Interface) -> i64 {
    let units = u128::from(iface.units_per_second);
    let ns = u128::from(ticks) * 1_000_000_000 / units;
    let ns = i64::try_from(ns).unwrap_or(i64::MAX);
    ns.saturating_add(iface.offset_seconds.saturating_mul(1_000_000_000))
}

/// Wraps gzip input in a decoder; passes anything else through. A gzip stream that ends early
/// (a cut file) ends the decompressed stream there, like a plain capture cut short, and
/// `cut` gets the decompressed byte offset.
fn decompress<R: Read + Send + 'static>(
    mut input: BufReader<R>,
    cut: Arc<Mutex<Option<u64>>>,
) -> io::Result<Box<dyn Read + Send>> {
    let head = input.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(GzipCutTolerant {
            inner: flate2::read::MultiGzDecoder::new(input),
            produced: 0,
            cut,
        }))
    } else {
        Ok(Box::new(input))
    }
}

/// A gzip decoder whose early end of input is an end of stream (noted in `cut`), not an
/// error. Corrupt compressed data stays an error.
struct GzipCutTolerant<R> {
    inner: R,
    produced: u64,
    cut: Arc<Mutex<Option<u64>>>,
}

impl<R: Read> Read for GzipCutTolerant<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cut.lock().is_ok_and(|cut| cut.is_some()) {
            return Ok(0);
        }
        match self.inner.read(buf) {
            Ok(n) => {
                self.produced += n as u64;
                Ok(n)
            }
            Err(err) if is_early_end(&err) => {
                if let Ok(mut cut) = self.cut.lock() {
                    *cut = Some(self.produced);
                }
                Ok(0)
            }
            Err(err) => Err(err),
        }
    }
}

/// Whether a decoder error means the compressed input ended too soon.
fn is_early_end(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::UnexpectedEof || err.to_string().contains("incomplete")
}

fn read_error(slot: &Arc<Mutex<Option<String>>>) -> PcapError {
    let detail = slot
        .lock()
        .ok()
        .and_then(|mut slot| slot.take())
        .unwrap_or_else(|| "read failed".into());
    PcapError::Io {
        what: "the capture".into(),
        source: io::Error::other(detail),
    }
}

/// Remembers the last I/O error, which the parser otherwise reduces to "read error".
struct ErrorKeeping<R> {
    inner: R,
    slot: Arc<Mutex<Option<String>>>,
}

impl<R: Read> Read for ErrorKeeping<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|err| {
            if let Ok(mut slot) = self.slot.lock() {
                *slot = Some(err.to_string());
            }
        })
    }
}
