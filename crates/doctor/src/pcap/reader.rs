//! Streaming capture reader: pcap (both byte orders, µs and ns) and pcapng (several sections
//! and interfaces, each with its own timestamp resolution, power of ten or of two; enhanced,
//! simple and obsolete Packet Blocks), optionally gzip-compressed. Calls back once per packet
//! with a borrowed slice; memory stays bounded by the read buffer.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};

use pcap_parser::pcapng::{Block, InterfaceDescriptionBlock, OptionCode, UnknownBlock};
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
    /// A block that does not parse (skipped when its two length fields agree).
    Damaged(String),
    /// Damage that ends reading even when the block could be skipped.
    Fatal(String),
}

/// Per-interface facts of a pcapng section.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: i32,
    /// Timestamp units per second (`if_tsresol`), or the raw `if_tsresol` byte when it
    /// declares a resolution no 64-bit timestamp can use.
    units_per_second: Result<u64, u8>,
    offset_seconds: i64,
}

impl Interface {
    fn of(idb: &InterfaceDescriptionBlock<'_>, big_endian: bool) -> Self {
        Self {
            linktype: idb.linktype.0,
            units_per_second: units_per_second(idb.if_tsresol).ok_or(idb.if_tsresol),
            offset_seconds: ts_offset(idb, big_endian),
        }
    }

    /// The capture time of `ticks` in nanoseconds since the epoch, or why it cannot be told.
    fn time_ns(&self, ticks: u64, id: u32) -> Result<i64, String> {
        match self.units_per_second {
            Ok(units) => Ok(ticks_to_ns(ticks, units, self.offset_seconds)),
            Err(raw) => Err(absurd_resolution(id, raw)),
        }
    }
}

/// The pcapng block type of the obsolete Packet Block (pcap-parser reads it as unknown).
const PACKET_BLOCK: u32 = 0x0000_0002;

/// Bytes of a Packet Block's fixed fields between its length fields: interface ID (16 bits),
/// drops count (16 bits), timestamp high and low, captured and packet lengths.
const PACKET_BLOCK_FIELDS: usize = 20;

/// One obsolete Packet Block's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PacketBlock<'a> {
    if_id: u16,
    ticks: u64,
    data: &'a [u8],
    orig_len: u32,
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
                // A block that parsed but whose contents are wrong, and damage that ends
                // reading.
                let mut damaged: Option<String> = None;
                let mut fatal: Option<String> = None;
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
                        interfaces.push(Interface::of(idb, ng_big_endian.unwrap_or(false)));
                        None
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        match interfaces.get(epb.if_id as usize) {
                            Some(iface) => {
                                let ticks = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                                match iface.time_ns(ticks, epb.if_id) {
                                    Ok(time_ns) => Some((
                                        iface.linktype,
                                        time_ns,
                                        epb.packet_data(),
                                        epb.origlen,
                                    )),
                                    Err(detail) => {
                                        fatal = Some(detail);
                                        None
                                    }
                                }
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
                    PcapBlockOwned::NG(Block::Unknown(block))
                        if block_type(block, ng_big_endian.unwrap_or(false)) == PACKET_BLOCK =>
                    {
                        match packet_block(block, ng_big_endian.unwrap_or(false)) {
                            Err(detail) => {
                                damaged = Some(detail);
                                None
                            }
                            Ok(pb) => match interfaces.get(usize::from(pb.if_id)) {
                                Some(iface) => match iface.time_ns(pb.ticks, pb.if_id.into()) {
                                    Ok(time_ns) => {
                                        Some((iface.linktype, time_ns, pb.data, pb.orig_len))
                                    }
                                    Err(detail) => {
                                        fatal = Some(detail);
                                        None
                                    }
                                },
                                None => {
                                    outcome.warnings.push(format!(
                                        "byte offset {offset}: packet for undeclared interface {} \
                                         skipped",
                                        pb.if_id
                                    ));
                                    None
                                }
                            },
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
                match (fatal, damaged) {
                    (Some(detail), _) => Step::Fatal(detail),
                    (None, Some(detail)) => Step::Damaged(detail),
                    (None, None) => Step::Consume(length),
                }
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
            Step::Fatal(detail) => {
                outcome.damage = Some(PcapError::Damaged { offset, detail });
                break;
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

/// Timestamp units per second from an `if_tsresol` byte: with the high bit clear the rest is
/// a negative power of ten (6 = µs, 9 = ns), with it set a negative power of two (0x8A =
/// 2^-10 s). None when the resolution is finer than a 64-bit count of units per second
/// can hold (above 10^19 or 2^63, where libpcap refuses the file too): such a 64-bit
/// timestamp spans less than two seconds.
fn units_per_second(if_tsresol: u8) -> Option<u64> {
    let exponent = u32::from(if_tsresol & 0x7f);
    if if_tsresol & 0x80 == 0 {
        10u64.checked_pow(exponent)
    } else {
        1u64.checked_shl(exponent)
    }
}

/// The resolution an `if_tsresol` byte declares, in words ("10^-6 s", "2^-10 s").
fn resolution_words(if_tsresol: u8) -> String {
    let base = if if_tsresol & 0x80 == 0 { 10 } else { 2 };
    format!("{base}^-{} s", if_tsresol & 0x7f)
}

/// Why packets of interface `id` cannot be given a time.
fn absurd_resolution(id: u32, if_tsresol: u8) -> String {
    format!(
        "a packet on interface {id}, whose description declares a timestamp resolution of {} \
         (if_tsresol {if_tsresol:#04x}): finer than a 64-bit timestamp can count (at most \
         10^-19 or 2^-63 s), so its times cannot be read; the if_tsresol option is corrupt",
        resolution_words(if_tsresol)
    )
}

/// The interface's `if_tsoffset` (seconds added to every timestamp), in the section's byte
/// order (pcap-parser 0.17 reads it as little-endian whatever the section's order). The last
/// one counts, as for `if_tsresol`; a malformed one is 0.
fn ts_offset(idb: &InterfaceDescriptionBlock<'_>, big_endian: bool) -> i64 {
    idb.options
        .iter()
        .rfind(|option| option.code == OptionCode::IfTsoffset)
        .and_then(|option| option.as_bytes().ok()?.get(..8)?.try_into().ok())
        .map(|bytes: [u8; 8]| {
            if big_endian {
                i64::from_be_bytes(bytes)
            } else {
                i64::from_le_bytes(bytes)
            }
        })
        .unwrap_or(0)
}

/// Nanoseconds since the epoch from pcapng ticks, without overflow.
fn ticks_to_ns(ticks: u64, units_per_second: u64, offset_seconds: i64) -> i64 {
    let units = u128::from(units_per_second.max(1));
    let ns = u128::from(ticks) * 1_000_000_000 / units;
    let ns = i64::try_from(ns).unwrap_or(i64::MAX);
    ns.saturating_add(offset_seconds.saturating_mul(1_000_000_000))
}

/// The block type of a block pcap-parser did not recognise, in the section's byte order (it
/// keeps the type's bytes as a little-endian number).
fn block_type(block: &UnknownBlock<'_>, big_endian: bool) -> u32 {
    if big_endian {
        block.block_type.swap_bytes()
    } else {
        block.block_type
    }
}

/// Decodes an obsolete pcapng Packet Block (type 2): the fields of an Enhanced Packet Block,
/// with a 16-bit interface ID followed by a 16-bit drops count. Bounds are checked; the
/// error says what is wrong.
fn packet_block<'a>(block: &UnknownBlock<'a>, big_endian: bool) -> Result<PacketBlock<'a>, String> {
    if block.block_len1 != block.block_len2 {
        return Err(format!(
            "a Packet Block's two length fields disagree ({} and {})",
            block.block_len1, block.block_len2
        ));
    }
    let body = block.data;
    let u16_at = |at: usize| -> Option<u16> {
        let bytes: [u8; 2] = body.get(at..at + 2)?.try_into().ok()?;
        Some(if big_endian {
            u16::from_be_bytes(bytes)
        } else {
            u16::from_le_bytes(bytes)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let bytes: [u8; 4] = body.get(at..at + 4)?.try_into().ok()?;
        Some(if big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        })
    };
    let short = || {
        format!(
            "a Packet Block of {} bytes is shorter than its {}-byte header",
            body.len() + 12,
            PACKET_BLOCK_FIELDS + 12
        )
    };
    let (Some(if_id), Some(high), Some(low), Some(captured), Some(orig_len)) =
        (u16_at(0), u32_at(4), u32_at(8), u32_at(12), u32_at(16))
    else {
        return Err(short());
    };
    let room = body.len().saturating_sub(PACKET_BLOCK_FIELDS);
    let data = usize::try_from(captured)
        .ok()
        .and_then(|len| body.get(PACKET_BLOCK_FIELDS..PACKET_BLOCK_FIELDS.checked_add(len)?))
        .ok_or_else(|| {
            format!(
                "a Packet Block claims {captured} captured bytes but holds only {room}: its \
                 captured length is corrupt"
            )
        })?;
    Ok(PacketBlock {
        if_id,
        ticks: (u64::from(high) << 32) | u64::from(low),
        data,
        orig_len,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_tsresol_is_a_power_of_ten_or_of_two() {
        assert_eq!(units_per_second(6), Some(1_000_000));
        assert_eq!(units_per_second(9), Some(1_000_000_000));
        assert_eq!(units_per_second(0), Some(1));
        assert_eq!(units_per_second(19), Some(10_000_000_000_000_000_000));
        assert_eq!(units_per_second(0x8A), Some(1024));
        assert_eq!(units_per_second(0x80), Some(1));
        assert_eq!(units_per_second(0x80 | 63), Some(1 << 63));
        for absurd in [20, 0x7f, 0x80 | 64, 0xC8, 0xff] {
            assert_eq!(units_per_second(absurd), None, "{absurd:#x}");
        }
        assert_eq!(resolution_words(0x8A), "2^-10 s");
        assert_eq!(resolution_words(0x7f), "10^-127 s");
    }

    #[test]
    fn ticks_convert_at_any_resolution() {
        // 1.5 s at 2^-10 s, 10^-9 s and 10^-19 s; an offset in whole seconds.
        assert_eq!(ticks_to_ns(1536, 1024, 0), 1_500_000_000);
        assert_eq!(
            ticks_to_ns(1_500_000_000, 1_000_000_000, 10),
            11_500_000_000
        );
        assert_eq!(ticks_to_ns(15 << 59, 1 << 63, 0), 937_500_000);
        assert_eq!(ticks_to_ns(u64::MAX, 1, i64::MAX), i64::MAX);
        assert_eq!(ticks_to_ns(5, 0, 0), 5_000_000_000);
    }

    fn block(body: &[u8], len2_delta: u32) -> UnknownBlock<'_> {
        let len = body.len() as u32 + 12;
        UnknownBlock {
            block_type: PACKET_BLOCK,
            block_len1: len,
            data: body,
            block_len2: len + len2_delta,
        }
    }

    #[test]
    fn packet_blocks_are_bounds_checked() {
        let mut body = Vec::new();
        body.extend_from_slice(&3u16.to_be_bytes());
        body.extend_from_slice(&0xffffu16.to_be_bytes());
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&2u32.to_be_bytes());
        body.extend_from_slice(&5u32.to_be_bytes());
        body.extend_from_slice(&60u32.to_be_bytes());
        body.extend_from_slice(&[1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(
            packet_block(&block(&body, 0), true),
            Ok(PacketBlock {
                if_id: 3,
                ticks: (1 << 32) | 2,
                data: &[1, 2, 3, 4, 5],
                orig_len: 60,
            })
        );
        // Read in the other byte order the captured length is huge: refused, not a panic.
        let err = packet_block(&block(&body, 0), false).unwrap_err();
        assert!(
            err.contains("claims 83886080 captured bytes but holds only 8"),
            "{err}"
        );
        let err = packet_block(&block(&body, 4), true).unwrap_err();
        assert!(err.contains("disagree"), "{err}");
        for cut in 0..20 {
            let err = packet_block(&block(&body[..cut], 0), true).unwrap_err();
            assert!(
                err.contains("shorter than its 32-byte header"),
                "{cut}: {err}"
            );
        }
        let mut huge = body.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(packet_block(&block(&huge, 0), true).is_err());
        assert_eq!(
            block_type(
                &UnknownBlock {
                    block_type: 0x0200_0000,
                    ..block(&body, 0)
                },
                true
            ),
            PACKET_BLOCK
        );
    }
}
