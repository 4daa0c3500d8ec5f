//! Capture files: a [`Reader`] and a [`Writer`] for tools and tests, and
//! [`PcapPort`], a port that receives the packets of a file and writes
//! every packet it transmits to another.
//!
//! # Formats
//!
//! Reading takes what tcpdump, tshark, dumpcap and editcap write:
//!
//! * classic libpcap files, microsecond (`0xa1b2c3d4`) and nanosecond
//!   (`0xa1b23c4d`) magic, in either byte order;
//! * pcapng: sections in either byte order, Interface Description Blocks
//!   (link type, snaplen, `if_tsresol`, `if_tsoffset`), Enhanced, Simple
//!   and (obsolete) Packet Blocks, with `opt_comment`; every other block
//!   (name resolution, statistics, custom, ...) is skipped.
//!
//! Anything else is refused with an error naming the file and what is
//! wrong: the magic it found, a record cut short at byte offset N, a
//! captured length beyond the snaplen, a packet naming an interface that
//! was never described. The whole file is read and checked when it is
//! opened, so a bad file fails at setup, never halfway through a run.
//!
//! Writing makes classic pcap (nanosecond or microsecond timestamps, little
//! endian) or pcapng (one section, one interface, per-packet comments: a
//! tool can note each packet's verdict), with link type Ethernet unless
//! told otherwise. Both are read back by tcpdump and tshark.
//!
//! # The port
//!
//! [`PcapPort`] has one RX and one TX queue. RX hands out the input file's
//! packets in order, as fast as it is polled (timestamps are not replayed),
//! each copied into a buffer of the port's own pool; at the end it returns
//! 0 and [`PcapPort::is_exhausted`] turns true, unless it is told to play
//! the file several times or forever ([`Loops`]). TX writes each packet to
//! the output file through a `BufWriter` and frees it: the hot path copies
//! into the writer's buffer and makes a `write` syscall only when that
//! 1 MiB buffer fills, which is acceptable for a port whose point is a
//! file. The buffer is flushed by `poll` once it holds data older than the
//! flush interval (100 ms by default), and when the queue or the port is
//! dropped. All packets of one burst get the same timestamp (one clock read
//! per burst). Without an output file, TX frees and counts.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{next_ifindex, Claim, Claims};
use crate::{
    Burst, DropReason, FramePool, HeapPool, Port, PortError, PortInfo, QueueStats, RxQueue,
    TxQueue, HEADROOM,
};

/// `LINKTYPE_ETHERNET`: what Sluice's ports carry.
pub const LINKTYPE_ETHERNET: u16 = 1;
/// Largest snaplen libpcap accepts for Ethernet, and the default snaplen of
/// files written here.
pub const MAX_SNAPLEN: u32 = 262_144;

const MAGIC_USEC: u32 = 0xa1b2_c3d4;
const MAGIC_NSEC: u32 = 0xa1b2_3c4d;
const MAGIC_KUZNETZOV: u32 = 0xa1b2_cd34;
const BLOCK_SHB: u32 = 0x0a0d_0d0a;
const BLOCK_IDB: u32 = 1;
const BLOCK_PB: u32 = 2;
const BLOCK_SPB: u32 = 3;
const BLOCK_EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
const OPT_ENDOFOPT: u16 = 0;
const OPT_COMMENT: u16 = 1;
const IF_TSRESOL: u16 = 9;
const IF_TSOFFSET: u16 = 14;

/// What is wrong with a capture file. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not a well-formed capture.
    #[error("{path}: byte offset {offset}: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// Where the problem starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A well-formed file this code does not take (a format variant, or a
    /// link type the port cannot carry).
    #[error("{path}: {reason}")]
    Unsupported {
        /// The file.
        path: String,
        /// What is not supported.
        reason: String,
    },
}

/// A capture file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Classic libpcap.
    Pcap,
    /// pcapng.
    PcapNg,
}

/// A name for the link types one meets, for messages.
pub fn link_type_name(lt: u16) -> &'static str {
    match lt {
        0 => "NULL",
        1 => "ETHERNET",
        101 => "RAW",
        105 => "IEEE802_11",
        113 => "LINUX_SLL",
        127 => "IEEE802_11_RADIOTAP",
        228 => "IPV4",
        229 => "IPV6",
        276 => "LINUX_SLL2",
        _ => "unknown",
    }
}

/// Byte order of a file or section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn u16(self, b: &[u8], at: usize) -> u16 {
        let a = [b[at], b[at + 1]];
        match self {
            Endian::Little => u16::from_le_bytes(a),
            Endian::Big => u16::from_be_bytes(a),
        }
    }

    fn u32(self, b: &[u8], at: usize) -> u32 {
        let a = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        match self {
            Endian::Little => u32::from_le_bytes(a),
            Endian::Big => u32::from_be_bytes(a),
        }
    }
}

/// How an interface's timestamps count time (pcapng `if_tsresol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsResolution {
    /// Units of 10^-n seconds (6: microseconds, 9: nanoseconds).
    Decimal(u8),
    /// Units of 2^-n seconds.
    Binary(u8),
}

impl TsResolution {
    /// Nanoseconds in `ticks` units, saturating.
    fn to_ns(self, ticks: u64) -> u128 {
        let t = u128::from(ticks);
        match self {
            TsResolution::Decimal(n) if n <= 9 => t * 10u128.pow(u32::from(9 - n)),
            TsResolution::Decimal(n) => match 10u128.checked_pow(u32::from(n - 9)) {
                Some(d) => t / d,
                None => 0,
            },
            TsResolution::Binary(n) => (t * 1_000_000_000) >> n.min(127),
        }
    }
}

/// An interface of a capture (classic pcap files have one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// `LINKTYPE_*` of its packets.
    pub link_type: u16,
    /// Largest captured length it promises (0: no limit).
    pub snaplen: u32,
    /// Its timestamps' unit.
    pub ts_resolution: TsResolution,
    /// Seconds added to its timestamps (pcapng `if_tsoffset`).
    pub ts_offset: i64,
}

/// One packet of a capture, borrowed from the [`Reader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Capture time, nanoseconds since the Unix epoch (0 when the format
    /// has none, as in pcapng Simple Packet Blocks).
    pub ts_ns: u64,
    /// Length on the wire (at least `data.len()`).
    pub orig_len: u32,
    /// The captured bytes.
    pub data: &'a [u8],
    /// Index into [`Reader::interfaces`].
    pub interface: u32,
    /// `LINKTYPE_*` of the packet's interface.
    pub link_type: u16,
    /// The packet's comment (pcapng `opt_comment`, when it is UTF-8).
    pub comment: Option<&'a str>,
}

/// Where a packet lies in the file.
#[derive(Clone, Debug)]
struct Record {
    ts_ns: u64,
    orig_len: u32,
    data: Range<usize>,
    interface: u32,
    comment: Option<Range<usize>>,
}

/// A capture file, read whole and checked when opened; then its packets,
/// in file order, without further I/O or errors.
#[derive(Debug)]
pub struct Reader {
    path: String,
    bytes: Vec<u8>,
    format: Format,
    big_endian: bool,
    interfaces: Vec<Interface>,
    records: Vec<Record>,
}

impl Reader {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// [`PcapError`] naming the file and the problem.
    pub fn open(path: impl AsRef<Path>) -> Result<Reader, PcapError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| PcapError::Io {
            path: name.clone(),
            source,
        })?;
        Reader::from_bytes(&name, bytes)
    }

    /// Checks a capture held in memory; `name` stands for the file in
    /// messages.
    ///
    /// # Errors
    /// [`PcapError`] naming `name` and the problem.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Reader, PcapError> {
        let mut r = Reader {
            path: name.to_string(),
            bytes,
            format: Format::Pcap,
            big_endian: false,
            interfaces: Vec::new(),
            records: Vec::new(),
        };
        if r.bytes.len() >= 4 && r.bytes[..4] == BLOCK_SHB.to_le_bytes() {
            r.format = Format::PcapNg;
            r.parse_pcapng()?;
        } else {
            r.parse_pcap()?;
        }
        Ok(r)
    }

    fn malformed(&self, offset: usize, reason: String) -> PcapError {
        PcapError::Malformed {
            path: self.path.clone(),
            offset: offset as u64,
            reason,
        }
    }

    fn parse_pcap(&mut self) -> Result<(), PcapError> {
        let b = &self.bytes;
        if b.len() < 24 {
            if b.len() >= 4 {
                self.check_magic()?;
            }
            return Err(self.malformed(
                0,
                format!(
                    "truncated file header: {} bytes, a pcap file header has 24",
                    b.len()
                ),
            ));
        }
        let (e, nanos) = self.check_magic()?;
        let (major, minor) = (e.u16(b, 4), e.u16(b, 6));
        if major != 2 {
            return Err(PcapError::Unsupported {
                path: self.path.clone(),
                reason: format!("pcap version {major}.{minor} (only 2.x is defined)"),
            });
        }
        let snaplen = e.u32(b, 16);
        // The upper bits of the link-type field carry FCS information.
        let link_type = (e.u32(b, 20) & 0xffff) as u16;
        self.big_endian = e == Endian::Big;
        self.interfaces.push(Interface {
            link_type,
            snaplen,
            ts_resolution: TsResolution::Decimal(if nanos { 9 } else { 6 }),
            ts_offset: 0,
        });
        let frac_ns: u64 = if nanos { 1 } else { 1000 };
        let mut off = 24;
        let mut records = Vec::new();
        while off < b.len() {
            let n = records.len();
            let left = b.len() - off;
            if left < 16 {
                return Err(self.malformed(
                    off,
                    format!("packet {n}: truncated record header: {left} of 16 bytes"),
                ));
            }
            let (sec, frac) = (e.u32(b, off), e.u32(b, off + 4));
            let (caplen, orig_len) = (e.u32(b, off + 8), e.u32(b, off + 12));
            if snaplen != 0 && caplen > snaplen {
                return Err(self.malformed(
                    off,
                    format!(
                        "packet {n}: captured length {caplen} exceeds the file's snaplen {snaplen}"
                    ),
                ));
            }
            if caplen as usize > left - 16 {
                return Err(self.malformed(
                    off,
                    format!(
                        "packet {n}: truncated record: {caplen} bytes of packet data, {} left in the file",
                        left - 16
                    ),
                ));
            }
            let start = off + 16;
            records.push(Record {
                ts_ns: u64::from(sec) * 1_000_000_000 + u64::from(frac) * frac_ns,
                orig_len: orig_len.max(caplen),
                data: start..start + caplen as usize,
                interface: 0,
                comment: None,
            });
            off = start + caplen as usize;
        }
        self.records = records;
        Ok(())
    }

    /// The byte order and timestamp unit of a classic file's magic.
    fn check_magic(&self) -> Result<(Endian, bool), PcapError> {
        let m = u32::from_le_bytes([self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]]);
        match m {
            MAGIC_USEC => Ok((Endian::Little, false)),
            MAGIC_NSEC => Ok((Endian::Little, true)),
            _ if m.swap_bytes() == MAGIC_USEC => Ok((Endian::Big, false)),
            _ if m.swap_bytes() == MAGIC_NSEC => Ok((Endian::Big, true)),
            _ if m == MAGIC_KUZNETZOV || m.swap_bytes() == MAGIC_KUZNETZOV => {
                Err(PcapError::Unsupported {
                    path: self.path.clone(),
                    reason: "Kuznetzov's modified pcap format; convert it with `editcap -F pcap`"
                        .into(),
                })
            }
            _ => Err(self.malformed(
                0,
                format!(
                    "bad magic {:02x} {:02x} {:02x} {:02x}: not a pcap or pcapng file",
                    self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]
                ),
            )),
        }
    }

    fn parse_pcapng(&mut self) -> Result<(), PcapError> {
        let b = &self.bytes;
        let mut e = Endian::Little;
        let mut off = 0;
        // Interfaces are numbered per section; `section_base` is the index
        // of the section's first interface in `self.interfaces`.
        let mut section_base = 0usize;
        let mut interfaces: Vec<Interface> = Vec::new();
        let mut records = Vec::new();
        let mut first = true;
        while off < b.len() {
            let left = b.len() - off;
            if left < 12 {
                return Err(
                    self.malformed(off, format!("truncated block header: {left} of 12 bytes"))
                );
            }
            let btype = e.u32(b, off);
            if btype == BLOCK_SHB {
                if left < 28 {
                    return Err(self.malformed(
                        off,
                        format!("truncated section header block: {left} of 28 bytes"),
                    ));
                }
                e = match u32::from_le_bytes([b[off + 8], b[off + 9], b[off + 10], b[off + 11]]) {
                    BYTE_ORDER_MAGIC => Endian::Little,
                    m if m.swap_bytes() == BYTE_ORDER_MAGIC => Endian::Big,
                    m => {
                        return Err(self
                            .malformed(off + 8, format!("bad pcapng byte-order magic {m:#010x}")))
                    }
                };
                if first {
                    self.big_endian = e == Endian::Big;
                    first = false;
                }
                let major = e.u16(b, off + 12);
                if major != 1 {
                    return Err(PcapError::Unsupported {
                        path: self.path.clone(),
                        reason: format!(
                            "pcapng version {major}.{} (only 1.x is defined)",
                            e.u16(b, off + 14)
                        ),
                    });
                }
                section_base = interfaces.len();
            } else if first {
                return Err(self.malformed(
                    off,
                    "pcapng file does not start with a section header".into(),
                ));
            }
            let total = e.u32(b, off + 4) as usize;
            if total < 12 || !total.is_multiple_of(4) {
                return Err(self.malformed(
                    off,
                    format!("block of type {btype:#x} has an invalid length {total}"),
                ));
            }
            if total > left {
                return Err(self.malformed(
                    off,
                    format!("truncated block of type {btype:#x}: it declares {total} bytes, {left} are left"),
                ));
            }
            let trailer = e.u32(b, off + total - 4) as usize;
            if trailer != total {
                return Err(self.malformed(
                    off,
                    format!("block of type {btype:#x}: length {total} at the start, {trailer} at the end"),
                ));
            }
            let body = off + 8..off + total - 4;
            let n = records.len();
            let section_ifaces = interfaces.len() - section_base;
            let iface = |id: usize, off: usize| -> Result<&Interface, PcapError> {
                interfaces.get(section_base + id).filter(|_| id < section_ifaces).ok_or_else(|| {
                    self.malformed(
                        off,
                        format!("packet {n} names interface {id}, but its section describes {section_ifaces}"),
                    )
                })
            };
            let short = |need: usize| {
                self.malformed(
                    off,
                    format!("block of type {btype:#x} too short: {total} bytes, needs {need}"),
                )
            };
            match btype {
                BLOCK_IDB => {
                    if body.len() < 8 {
                        return Err(short(20));
                    }
                    let mut itf = Interface {
                        link_type: e.u16(b, body.start),
                        snaplen: e.u32(b, body.start + 4),
                        ts_resolution: TsResolution::Decimal(6),
                        ts_offset: 0,
                    };
                    for (code, val) in Options::new(e, &b[body.start + 8..body.end]) {
                        match (code, val.len()) {
                            (IF_TSRESOL, 1) => {
                                itf.ts_resolution = if val[0] & 0x80 == 0 {
                                    TsResolution::Decimal(val[0])
                                } else {
                                    TsResolution::Binary(val[0] & 0x7f)
                                };
                            }
                            (IF_TSOFFSET, 8) => {
                                let v: [u8; 8] = val.try_into().unwrap_or([0; 8]);
                                itf.ts_offset = match e {
                                    Endian::Little => i64::from_le_bytes(v),
                                    Endian::Big => i64::from_be_bytes(v),
                                };
                            }
                            _ => {}
                        }
                    }
                    interfaces.push(itf);
                }
                BLOCK_EPB | BLOCK_PB => {
                    if body.len() < 20 {
                        return Err(short(32));
                    }
                    let s = body.start;
                    let id = if btype == BLOCK_EPB {
                        e.u32(b, s) as usize
                    } else {
                        usize::from(e.u16(b, s))
                    };
                    let itf = iface(id, off)?;
                    let ticks = (u64::from(e.u32(b, s + 4)) << 32) | u64::from(e.u32(b, s + 8));
                    let (caplen, orig_len) = (e.u32(b, s + 12) as usize, e.u32(b, s + 16));
                    let data = s + 20..s + 20 + caplen;
                    if data.end > body.end {
                        return Err(self.malformed(
                            off,
                            format!(
                                "packet {n}: captured length {caplen} overruns its {total}-byte block"
                            ),
                        ));
                    }
                    if itf.snaplen != 0 && caplen > itf.snaplen as usize {
                        return Err(self.malformed(
                            off,
                            format!(
                                "packet {n}: captured length {caplen} exceeds interface {id}'s snaplen {}",
                                itf.snaplen
                            ),
                        ));
                    }
                    let opts_at = (data.end + 3) & !3;
                    let mut comment = None;
                    if opts_at < body.end {
                        for (code, val) in Options::new(e, &b[opts_at..body.end]) {
                            if code == OPT_COMMENT && comment.is_none() {
                                let start = val.as_ptr() as usize - b.as_ptr() as usize;
                                comment = Some(start..start + val.len());
                            }
                        }
                    }
                    let ns = itf.ts_resolution.to_ns(ticks) as i128
                        + i128::from(itf.ts_offset) * 1_000_000_000;
                    records.push(Record {
                        ts_ns: ns.clamp(0, i128::from(u64::MAX)) as u64,
                        orig_len: orig_len.max(caplen as u32),
                        data,
                        interface: (section_base + id) as u32,
                        comment,
                    });
                }
                BLOCK_SPB => {
                    if body.len() < 4 {
                        return Err(short(16));
                    }
                    let itf = iface(0, off)?;
                    let orig_len = e.u32(b, body.start);
                    let mut caplen = (orig_len as usize).min(body.len() - 4);
                    if itf.snaplen != 0 {
                        caplen = caplen.min(itf.snaplen as usize);
                    }
                    records.push(Record {
                        ts_ns: 0,
                        orig_len,
                        data: body.start + 4..body.start + 4 + caplen,
                        interface: section_base as u32,
                        comment: None,
                    });
                }
                _ => {} // name resolution, statistics, custom blocks...
            }
            off += total;
        }
        self.interfaces = interfaces;
        self.records = records;
        Ok(())
    }

    /// The file's name, as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The file's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether the file (its first section, for pcapng) is big-endian.
    pub fn is_big_endian(&self) -> bool {
        self.big_endian
    }

    /// The interfaces packets were captured on (one for classic pcap).
    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// The link type of the first interface, if there is one.
    pub fn link_type(&self) -> Option<u16> {
        self.interfaces.first().map(|i| i.link_type)
    }

    /// Number of packets.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the file holds no packet.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Packet `i`, in file order.
    pub fn get(&self, i: usize) -> Option<Packet<'_>> {
        self.records.get(i).map(|r| self.packet(r))
    }

    /// Every packet, in file order.
    pub fn packets(&self) -> impl ExactSizeIterator<Item = Packet<'_>> + '_ {
        self.records.iter().map(|r| self.packet(r))
    }

    fn packet(&self, r: &Record) -> Packet<'_> {
        Packet {
            ts_ns: r.ts_ns,
            orig_len: r.orig_len,
            data: &self.bytes[r.data.clone()],
            interface: r.interface,
            link_type: self.interfaces[r.interface as usize].link_type,
            comment: r
                .comment
                .clone()
                .and_then(|c| std::str::from_utf8(&self.bytes[c]).ok()),
        }
    }

    /// Checks that every packet is an Ethernet frame.
    fn require_ethernet(&self) -> Result<(), PcapError> {
        let bad = |what: String, lt: u16| PcapError::Unsupported {
            path: self.path.clone(),
            reason: format!(
                "{what} has link type {lt} ({}); Sluice ports carry Ethernet frames (link type 1)",
                link_type_name(lt)
            ),
        };
        if self.format == Format::Pcap {
            if let Some(lt) = self.link_type().filter(|&lt| lt != LINKTYPE_ETHERNET) {
                return Err(bad("the file".into(), lt));
            }
        }
        for (n, r) in self.records.iter().enumerate() {
            let lt = self.interfaces[r.interface as usize].link_type;
            if lt != LINKTYPE_ETHERNET {
                return Err(bad(format!("packet {n}"), lt));
            }
        }
        Ok(())
    }
}

/// The options of a pcapng block, as (code, value) until `opt_endofopt`;
/// stops quietly at a malformed option (options are advisory).
struct Options<'a> {
    e: Endian,
    b: &'a [u8],
}

impl<'a> Options<'a> {
    fn new(e: Endian, b: &'a [u8]) -> Self {
        Options { e, b }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.b.len() < 4 {
            return None;
        }
        let (code, len) = (self.e.u16(self.b, 0), usize::from(self.e.u16(self.b, 2)));
        if code == OPT_ENDOFOPT || 4 + len > self.b.len() {
            return None;
        }
        let val = &self.b[4..4 + len];
        self.b = self.b.get((4 + len + 3) & !3..).unwrap_or(&[]);
        Some((code, val))
    }
}

/// How a [`Writer`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// Classic pcap or pcapng.
    pub format: Format,
    /// Nanosecond timestamps (the default) or microsecond ones.
    pub nanos: bool,
    /// Longest captured length; longer packets are cut, their original
    /// length kept.
    pub snaplen: u32,
    /// `LINKTYPE_*` of the packets.
    pub link_type: u16,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            format: Format::Pcap,
            nanos: true,
            snaplen: MAX_SNAPLEN,
            link_type: LINKTYPE_ETHERNET,
        }
    }
}

/// Writes a capture file, packet by packet, with no allocation per packet
/// (headers are built on the stack; give it a buffered sink).
pub struct Writer<W: Write> {
    out: W,
    path: String,
    opts: WriterOptions,
    packets: u64,
}

impl<W: Write> std::fmt::Debug for Writer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.path)
            .field("opts", &self.opts)
            .field("packets", &self.packets)
            .finish()
    }
}

/// The writer's buffer size for files.
const WRITE_BUFFER: usize = 1 << 20;

impl Writer<BufWriter<File>> {
    /// Creates (or truncates) the file at `path` and writes the file
    /// header, through a 1 MiB buffer. The header is flushed at once, so
    /// the file is a valid (empty) capture from the start.
    ///
    /// # Errors
    /// [`PcapError::Io`] naming the file.
    pub fn create(path: impl AsRef<Path>, opts: WriterOptions) -> Result<Self, PcapError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let f = File::create(path).map_err(|source| PcapError::Io {
            path: name.clone(),
            source,
        })?;
        let mut w = Writer::new(BufWriter::with_capacity(WRITE_BUFFER, f), &name, opts)?;
        w.flush()?;
        Ok(w)
    }
}

impl<W: Write> Writer<W> {
    /// Writes the file header to `out`; `name` stands for the file in
    /// messages.
    ///
    /// # Errors
    /// [`PcapError::Io`] when the header cannot be written.
    pub fn new(out: W, name: &str, opts: WriterOptions) -> Result<Self, PcapError> {
        let mut w = Writer {
            out,
            path: name.to_string(),
            opts,
            packets: 0,
        };
        let r = match opts.format {
            Format::Pcap => {
                let mut h = [0u8; 24];
                let magic = if opts.nanos { MAGIC_NSEC } else { MAGIC_USEC };
                h[0..4].copy_from_slice(&magic.to_le_bytes());
                h[4..6].copy_from_slice(&2u16.to_le_bytes());
                h[6..8].copy_from_slice(&4u16.to_le_bytes());
                h[16..20].copy_from_slice(&opts.snaplen.to_le_bytes());
                h[20..24].copy_from_slice(&u32::from(opts.link_type).to_le_bytes());
                w.out.write_all(&h)
            }
            Format::PcapNg => {
                let mut shb = [0u8; 28];
                put32(&mut shb, 0, BLOCK_SHB);
                put32(&mut shb, 4, 28);
                put32(&mut shb, 8, BYTE_ORDER_MAGIC);
                shb[12..14].copy_from_slice(&1u16.to_le_bytes());
                shb[16..24].copy_from_slice(&u64::MAX.to_le_bytes()); // section length unknown
                put32(&mut shb, 24, 28);
                let mut idb = [0u8; 32];
                let len = if opts.nanos { 32 } else { 20 };
                put32(&mut idb, 0, BLOCK_IDB);
                put32(&mut idb, 4, len as u32);
                idb[8..10].copy_from_slice(&opts.link_type.to_le_bytes());
                put32(&mut idb, 12, opts.snaplen);
                if opts.nanos {
                    idb[16..18].copy_from_slice(&IF_TSRESOL.to_le_bytes());
                    idb[18..20].copy_from_slice(&1u16.to_le_bytes());
                    idb[20] = 9;
                    // idb[24..28]: opt_endofopt
                }
                put32(&mut idb, len - 4, len as u32);
                w.out
                    .write_all(&shb)
                    .and_then(|()| w.out.write_all(&idb[..len]))
            }
        };
        r.map_err(|e| w.io(e))?;
        Ok(w)
    }

    fn io(&self, source: io::Error) -> PcapError {
        PcapError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Whether [`Writer::write_packet_full`] keeps comments (pcapng only).
    pub fn supports_comments(&self) -> bool {
        self.opts.format == Format::PcapNg
    }

    /// Writes one packet captured at `ts_ns` (nanoseconds since the Unix
    /// epoch).
    ///
    /// # Errors
    /// [`PcapError::Io`] naming the file.
    pub fn write_packet(&mut self, ts_ns: u64, data: &[u8]) -> Result<(), PcapError> {
        self.write_packet_full(ts_ns, data, data.len() as u32, None)
    }

    /// Writes one packet with its length on the wire and, in pcapng, a
    /// comment (classic pcap has no place for one and drops it; comments
    /// beyond 65535 bytes are cut).
    ///
    /// # Errors
    /// [`PcapError::Io`] naming the file.
    pub fn write_packet_full(
        &mut self,
        ts_ns: u64,
        data: &[u8],
        orig_len: u32,
        comment: Option<&str>,
    ) -> Result<(), PcapError> {
        let cap = data.len().min(self.opts.snaplen as usize);
        let data = &data[..cap];
        let orig_len = orig_len.max(cap as u32);
        let r = match self.opts.format {
            Format::Pcap => {
                let (sec, ns) = (ts_ns / 1_000_000_000, ts_ns % 1_000_000_000);
                let frac = if self.opts.nanos { ns } else { ns / 1000 };
                let mut h = [0u8; 16];
                put32(&mut h, 0, sec as u32);
                put32(&mut h, 4, frac as u32);
                put32(&mut h, 8, cap as u32);
                put32(&mut h, 12, orig_len);
                self.out
                    .write_all(&h)
                    .and_then(|()| self.out.write_all(data))
            }
            Format::PcapNg => self.write_epb(ts_ns, data, orig_len, comment),
        };
        r.map_err(|e| self.io(e))?;
        self.packets += 1;
        Ok(())
    }

    fn write_epb(
        &mut self,
        ts_ns: u64,
        data: &[u8],
        orig_len: u32,
        comment: Option<&str>,
    ) -> io::Result<()> {
        const PAD: [u8; 4] = [0; 4];
        let pad = |n: usize| (4 - n % 4) % 4;
        let comment = comment.map(|c| {
            let mut end = c.len().min(0xffff);
            while !c.is_char_boundary(end) {
                end -= 1;
            }
            &c.as_bytes()[..end]
        });
        let opts_len = comment.map_or(0, |c| 4 + c.len() + pad(c.len()) + 4);
        let total = 28 + data.len() + pad(data.len()) + opts_len + 4;
        let ticks = if self.opts.nanos { ts_ns } else { ts_ns / 1000 };
        let mut h = [0u8; 28];
        put32(&mut h, 0, BLOCK_EPB);
        put32(&mut h, 4, total as u32);
        // interface 0
        put32(&mut h, 12, (ticks >> 32) as u32);
        put32(&mut h, 16, ticks as u32);
        put32(&mut h, 20, data.len() as u32);
        put32(&mut h, 24, orig_len);
        self.out.write_all(&h)?;
        self.out.write_all(data)?;
        self.out.write_all(&PAD[..pad(data.len())])?;
        if let Some(c) = comment {
            let mut o = [0u8; 4];
            o[0..2].copy_from_slice(&OPT_COMMENT.to_le_bytes());
            o[2..4].copy_from_slice(&(c.len() as u16).to_le_bytes());
            self.out.write_all(&o)?;
            self.out.write_all(c)?;
            self.out.write_all(&PAD[..pad(c.len())])?;
            self.out.write_all(&PAD)?; // opt_endofopt
        }
        self.out.write_all(&(total as u32).to_le_bytes())
    }

    /// Packets written so far.
    pub fn packets_written(&self) -> u64 {
        self.packets
    }

    /// Pushes buffered bytes to the file.
    ///
    /// # Errors
    /// [`PcapError::Io`] naming the file.
    pub fn flush(&mut self) -> Result<(), PcapError> {
        self.out.flush().map_err(|e| self.io(e))
    }

    /// The sink.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Flushes and returns the sink.
    ///
    /// # Errors
    /// [`PcapError::Io`] when the flush fails.
    pub fn into_inner(mut self) -> Result<W, PcapError> {
        self.flush()?;
        Ok(self.out)
    }
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// How many times a [`PcapPort`] plays its input file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Loops {
    /// Once (the default).
    #[default]
    Once,
    /// This many times in all (at least 1).
    Times(u64),
    /// Until the port is closed.
    Forever,
}

impl Loops {
    fn done(self, passes: u64) -> bool {
        match self {
            Loops::Once => passes >= 1,
            Loops::Times(n) => passes >= n.max(1),
            Loops::Forever => false,
        }
    }
}

/// What a [`PcapPort`] reads and writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcapConfig {
    /// The capture RX plays; `None` for a port that receives nothing.
    pub input: Option<PathBuf>,
    /// Where TX writes; `None` to free transmitted packets unwritten.
    pub output: Option<PathBuf>,
    /// How many times RX plays the input.
    pub loops: Loops,
    /// How the output is written (classic pcap with nanosecond timestamps
    /// by default).
    pub write: WriterOptions,
    /// How old buffered output may get before `poll` flushes it.
    pub flush_interval: Duration,
}

impl Default for PcapConfig {
    fn default() -> Self {
        PcapConfig {
            input: None,
            output: None,
            loops: Loops::Once,
            write: WriterOptions::default(),
            flush_interval: Duration::from_millis(100),
        }
    }
}

type FileWriter = Writer<BufWriter<File>>;

/// Where RX stands, kept by the port while no queue is open so a reopened
/// queue carries on.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    next: usize,
    passes: u64,
    done: bool,
}

struct Input {
    reader: Reader,
    pool: &'static HeapPool,
    loops: Loops,
    /// Largest packet a pool buffer holds.
    max_len: usize,
    cursor: Mutex<Cursor>,
    exhausted: AtomicBool,
}

/// A port over capture files (see the module docs): one RX queue playing
/// the input file, one TX queue writing the output file.
pub struct PcapPort {
    info: PortInfo,
    input: Option<Arc<Input>>,
    /// The output writer while no TX queue holds it.
    output: Arc<Mutex<Option<FileWriter>>>,
    has_output: bool,
    tx_error: Arc<OnceLock<String>>,
    flush_interval: Duration,
    rx_claims: Arc<Claims>,
    tx_claims: Arc<Claims>,
}

impl std::fmt::Debug for PcapPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapPort")
            .field("info", &self.info)
            .finish()
    }
}

impl PcapPort {
    /// Reads and checks the input file (all of it, now), makes the pool RX
    /// copies into (buffers big enough for the file's largest packet, up to
    /// 64 KiB), and creates the output file.
    ///
    /// # Errors
    /// [`PortError::Capture`] naming the file and what is wrong with it
    /// (including packets that are not Ethernet frames);
    /// [`PortError::Config`] when the pool cannot be made.
    pub fn open(name: &str, config: PcapConfig) -> Result<Arc<PcapPort>, PortError> {
        let capture = |source| PortError::Capture {
            port: name.to_string(),
            source,
        };
        let input = match &config.input {
            None => None,
            Some(path) => {
                let reader = Reader::open(path).map_err(capture)?;
                reader.require_ethernet().map_err(capture)?;
                let largest = reader.packets().map(|p| p.data.len()).max().unwrap_or(0);
                let frame_size = (largest + HEADROOM).clamp(2048 + HEADROOM, 65536);
                let count = ((64 << 20) / frame_size).clamp(256, 4096);
                let pool =
                    HeapPool::new(&format!("{name}.pool"), count, frame_size).map_err(|e| {
                        PortError::Config {
                            port: name.to_string(),
                            reason: e.to_string(),
                        }
                    })?;
                let max_len = pool.frame_size() - HEADROOM;
                // A file none of whose packets fit is played once: looping
                // over it would spin without making a packet.
                let fits = reader.packets().any(|p| p.data.len() <= max_len);
                let loops = if fits { config.loops } else { Loops::Once };
                let exhausted = AtomicBool::new(reader.is_empty());
                Some(Arc::new(Input {
                    reader,
                    pool,
                    loops,
                    max_len,
                    cursor: Mutex::default(),
                    exhausted,
                }))
            }
        };
        let output = match &config.output {
            None => None,
            Some(path) => Some(Writer::create(path, config.write).map_err(capture)?),
        };
        Ok(Arc::new(PcapPort {
            info: PortInfo {
                name: name.to_string(),
                driver: "pcap",
                ifindex: next_ifindex(),
                rx_queues: 1,
                tx_queues: 1,
                mode: "file".to_string(),
            },
            input,
            has_output: output.is_some(),
            output: Arc::new(Mutex::new(output)),
            tx_error: Arc::new(OnceLock::new()),
            flush_interval: config.flush_interval,
            rx_claims: Claims::new(name, 1),
            tx_claims: Claims::new(name, 1),
        }))
    }

    /// Whether RX has handed out every packet it will (always true without
    /// an input file).
    pub fn is_exhausted(&self) -> bool {
        self.input
            .as_ref()
            .is_none_or(|i| i.exhausted.load(Ordering::Acquire))
    }

    /// Packets in the input file.
    pub fn input_packets(&self) -> usize {
        self.input.as_ref().map_or(0, |i| i.reader.len())
    }

    /// The pool RX copies into (`None` without an input file).
    pub fn pool(&self) -> Option<&'static HeapPool> {
        self.input.as_ref().map(|i| i.pool)
    }

    /// The first error writing the output, after which TX stopped writing
    /// and counted [`DropReason::TxError`].
    pub fn tx_error(&self) -> Option<&str> {
        self.tx_error.get().map(String::as_str)
    }

    /// Flushes the output file, unless a TX queue is open (its `poll` and
    /// its drop flush).
    ///
    /// # Errors
    /// [`PcapError::Io`] naming the file.
    pub fn flush(&self) -> Result<(), PcapError> {
        let mut out = self.output.lock().unwrap_or_else(|e| e.into_inner());
        out.as_mut().map_or(Ok(()), Writer::flush)
    }
}

impl Drop for PcapPort {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl Port for PcapPort {
    fn info(&self) -> &PortInfo {
        &self.info
    }

    fn is_exhausted(&self) -> Option<bool> {
        match &self.input {
            Some(i) if i.loops == Loops::Forever => None,
            _ => Some(PcapPort::is_exhausted(self)),
        }
    }

    fn open_rx(&self, q: u16) -> Result<Box<dyn RxQueue>, PortError> {
        let claim = self.rx_claims.claim(q)?;
        let cursor = self
            .input
            .as_ref()
            .map(|i| *i.cursor.lock().unwrap_or_else(|e| e.into_inner()))
            .unwrap_or_default();
        Ok(Box::new(PcapRx {
            _claim: claim,
            input: self.input.clone(),
            cursor,
            stats: QueueStats::default(),
        }))
    }

    fn open_tx(&self, q: u16) -> Result<Box<dyn TxQueue>, PortError> {
        let claim = self.tx_claims.claim(q)?;
        let writer = self.output.lock().unwrap_or_else(|e| e.into_inner()).take();
        debug_assert_eq!(
            writer.is_some(),
            self.has_output,
            "the claim guards the writer"
        );
        Ok(Box::new(PcapTx {
            _claim: claim,
            writer,
            home: Arc::clone(&self.output),
            tx_error: Arc::clone(&self.tx_error),
            flush_interval: self.flush_interval,
            last_flush: Instant::now(),
            stats: QueueStats::default(),
        }))
    }
}

struct PcapRx {
    _claim: Claim,
    input: Option<Arc<Input>>,
    cursor: Cursor,
    stats: QueueStats,
}

impl RxQueue for PcapRx {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let Some(input) = self.input.as_deref() else {
            return 0;
        };
        let records = &input.reader.records;
        let bytes = &input.reader.bytes;
        let (mut n, mut nbytes) = (0u64, 0u64);
        while !burst.is_full() && !self.cursor.done {
            if self.cursor.next == records.len() {
                self.cursor.passes += 1;
                if records.is_empty() || input.loops.done(self.cursor.passes) {
                    self.cursor.done = true;
                    input.exhausted.store(true, Ordering::Release);
                    break;
                }
                self.cursor.next = 0;
            }
            let data = &bytes[records[self.cursor.next].data.clone()];
            if data.len() > input.max_len {
                self.stats.drop_n(DropReason::TooBig, 1);
                self.cursor.next += 1;
                continue;
            }
            let Some(mut f) = input.pool.alloc() else {
                self.stats.drop_n(DropReason::NoBuffer, 1);
                break;
            };
            // Cannot fail: the pool's buffers hold `max_len` after the headroom.
            f.fill(data);
            f.rx_queue = 0;
            // Cannot fail: the burst has room.
            let _ = burst.push(f);
            self.cursor.next += 1;
            n += 1;
            nbytes += data.len() as u64;
        }
        if n > 0 {
            self.stats.add(n, nbytes);
        }
        n as usize
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }
}

impl Drop for PcapRx {
    fn drop(&mut self) {
        if let Some(input) = &self.input {
            *input.cursor.lock().unwrap_or_else(|e| e.into_inner()) = self.cursor;
        }
    }
}

struct PcapTx {
    _claim: Claim,
    writer: Option<FileWriter>,
    home: Arc<Mutex<Option<FileWriter>>>,
    tx_error: Arc<OnceLock<String>>,
    flush_interval: Duration,
    last_flush: Instant,
    stats: QueueStats,
}

impl PcapTx {
    fn fail(&self, e: PcapError) {
        // Formatting happens once, on the first failure.
        let _ = self.tx_error.set(e.to_string());
    }
}

impl TxQueue for PcapTx {
    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let n = burst.len();
        if n == 0 {
            return 0;
        }
        let (mut sent, mut bytes, mut failed) = (0u64, 0u64, 0u64);
        match self.writer.as_mut() {
            None => burst.drain_front(n, |f| {
                sent += 1;
                bytes += f.len() as u64;
            }),
            Some(w) => {
                // One clock read per burst.
                let ts = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                let tx_error = &self.tx_error;
                burst.drain_front(n, |f| {
                    if tx_error.get().is_some() {
                        failed += 1;
                        return;
                    }
                    match w.write_packet(ts, f.data()) {
                        Ok(()) => {
                            sent += 1;
                            bytes += f.len() as u64;
                        }
                        Err(e) => {
                            let _ = tx_error.set(e.to_string());
                            failed += 1;
                        }
                    }
                });
            }
        }
        if sent > 0 {
            self.stats.add(sent, bytes);
        }
        if failed > 0 {
            self.stats.drop_n(DropReason::TxError, failed);
        }
        n
    }

    fn poll(&mut self) {
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        // No clock read while there is nothing to flush. After a quiet
        // spell `last_flush` is old, so the first buffered burst goes out
        // at the next poll; under steady traffic, once per interval.
        if w.get_ref().buffer().is_empty() {
            return;
        }
        if self.last_flush.elapsed() >= self.flush_interval {
            self.last_flush = Instant::now();
            if let Err(e) = w.flush() {
                self.fail(e);
            }
        }
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }
}

impl Drop for PcapTx {
    fn drop(&mut self) {
        if let Some(mut w) = self.writer.take() {
            if let Err(e) = w.flush() {
                self.fail(e);
            }
            *self.home.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::null::udp_template;
    use std::process::Command;

    /// A scratch file path, removed when dropped.
    struct TempPath(PathBuf);

    impl TempPath {
        fn new(name: &str) -> TempPath {
            let p = std::env::temp_dir().join(format!("sluice-pcap-{}-{name}", std::process::id()));
            let _ = std::fs::remove_file(&p);
            TempPath(p)
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Packets of different sizes and contents, with their timestamps.
    fn sample() -> Vec<(u64, Vec<u8>)> {
        (0..10u64)
            .map(|i| {
                // Told apart by size; the checksums stay valid (tshark checks).
                let p = udp_template(60 + 97 * i as usize);
                (1_700_000_000_123_456_789 + i * 1_000_001_001, p)
            })
            .collect()
    }

    fn write_to_vec(opts: WriterOptions, comments: bool) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), "mem", opts).unwrap();
        for (i, (ts, p)) in sample().iter().enumerate() {
            let c = format!("packet {i}: XDP_PASS");
            w.write_packet_full(*ts, p, p.len() as u32 + 4, comments.then_some(c.as_str()))
                .unwrap();
        }
        assert_eq!(w.packets_written(), 10);
        w.into_inner().unwrap()
    }

    fn check_sample(r: &Reader, nanos: bool, comments: bool) {
        assert_eq!(r.len(), 10);
        assert_eq!(r.link_type(), Some(LINKTYPE_ETHERNET));
        for (i, (p, (ts, data))) in r.packets().zip(sample()).enumerate() {
            assert_eq!(p.data, &data[..], "packet {i}");
            assert_eq!(p.orig_len as usize, data.len() + 4);
            let want_ts = if nanos { ts } else { ts / 1000 * 1000 };
            assert_eq!(p.ts_ns, want_ts, "packet {i}");
            assert_eq!(p.link_type, LINKTYPE_ETHERNET);
            let c = format!("packet {i}: XDP_PASS");
            assert_eq!(p.comment, comments.then_some(c.as_str()));
        }
    }

    #[test]
    fn classic_pcap_round_trips_in_both_resolutions() {
        for nanos in [true, false] {
            let bytes = write_to_vec(
                WriterOptions {
                    nanos,
                    ..WriterOptions::default()
                },
                false,
            );
            assert_eq!(
                &bytes[..4],
                if nanos {
                    [0x4d, 0x3c, 0xb2, 0xa1]
                } else {
                    [0xd4, 0xc3, 0xb2, 0xa1]
                }
            );
            let r = Reader::from_bytes("mem", bytes).unwrap();
            assert_eq!((r.format(), r.is_big_endian()), (Format::Pcap, false));
            check_sample(&r, nanos, false);
        }
    }

    #[test]
    fn the_writer_cuts_at_the_snaplen_and_keeps_the_length() {
        for format in [Format::Pcap, Format::PcapNg] {
            let opts = WriterOptions {
                format,
                snaplen: 100,
                ..WriterOptions::default()
            };
            let mut w = Writer::new(Vec::new(), "mem", opts).unwrap();
            w.write_packet(5, &udp_template(300)).unwrap();
            let r = Reader::from_bytes("mem", w.into_inner().unwrap()).unwrap();
            let p = r.get(0).unwrap();
            assert_eq!(
                (p.data, p.orig_len, p.ts_ns),
                (&udp_template(300)[..100], 300, 5)
            );
        }
    }

    #[test]
    fn an_output_that_cannot_be_written_fails_at_open() {
        if !Path::new("/dev/full").exists() {
            println!("notice: no /dev/full; skipping");
            return;
        }
        let cfg = PcapConfig {
            output: Some("/dev/full".into()),
            ..PcapConfig::default()
        };
        let e = PcapPort::open("pcap:full", cfg).unwrap_err().to_string();
        assert!(
            e.starts_with("port pcap:full: /dev/full: No space left on device"),
            "{e}"
        );
    }

    #[test]
    fn pcapng_round_trips_with_comments() {
        for nanos in [true, false] {
            let opts = WriterOptions {
                format: Format::PcapNg,
                nanos,
                ..WriterOptions::default()
            };
            let r = Reader::from_bytes("mem", write_to_vec(opts, true)).unwrap();
            assert_eq!(r.format(), Format::PcapNg);
            assert_eq!(
                r.interfaces()[0].ts_resolution,
                TsResolution::Decimal(if nanos { 9 } else { 6 })
            );
            check_sample(&r, nanos, true);
        }
    }

    /// Rewrites a little-endian classic file as big-endian.
    fn to_big_endian(le: &[u8]) -> Vec<u8> {
        let mut b = le.to_vec();
        for at in [0, 8, 12, 16, 20] {
            b[at..at + 4].reverse();
        }
        b[4..6].reverse();
        b[6..8].reverse();
        let mut off = 24;
        while off < b.len() {
            for f in 0..4 {
                b[off + 4 * f..off + 4 * f + 4].reverse();
            }
            off += 16 + u32::from_be_bytes(b[off + 8..off + 12].try_into().unwrap()) as usize;
        }
        b
    }

    #[test]
    fn big_endian_classic_files_read_the_same() {
        let le = write_to_vec(WriterOptions::default(), false);
        let r = Reader::from_bytes("be", to_big_endian(&le)).unwrap();
        assert!(r.is_big_endian());
        check_sample(&r, true, false);
    }

    /// A block: type, body, lengths, in the given byte order.
    fn block(be: bool, btype: u32, body: &[u8]) -> Vec<u8> {
        let w = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let total = 12 + body.len().next_multiple_of(4);
        let mut b = Vec::new();
        b.extend(w(btype));
        b.extend(w(total as u32));
        b.extend(body);
        b.resize(total - 4, 0);
        b.extend(w(total as u32));
        b
    }

    /// A hand-made pcapng file: big-endian section, an unknown block, an
    /// interface with 2^-10 s units and a 100 s offset, an EPB and an SPB;
    /// then a little-endian section with its own interface 0.
    fn handmade_pcapng() -> Vec<u8> {
        let mut f = Vec::new();
        let be32 = |v: u32| v.to_be_bytes();
        let mut shb = Vec::new();
        shb.extend(be32(BYTE_ORDER_MAGIC));
        shb.extend([0, 1, 0, 0]);
        shb.extend([0xff; 8]);
        f.extend(block(true, BLOCK_SHB, &shb));
        f.extend(block(true, 0x0bad, b"skip me"));
        let mut idb = vec![0, 1, 0, 0];
        idb.extend(be32(0));
        idb.extend([0, 9, 0, 1, 0x80 | 10, 0, 0, 0]); // if_tsresol = 2^-10
        idb.extend([0, 14, 0, 8]);
        idb.extend(100i64.to_be_bytes()); // if_tsoffset
        idb.extend([0, 0, 0, 0]);
        f.extend(block(true, BLOCK_IDB, &idb));
        let mut epb = Vec::new();
        epb.extend(be32(0));
        epb.extend(be32(0));
        epb.extend(be32(2048)); // two seconds in 2^-10 units
        epb.extend(be32(3));
        epb.extend(be32(5));
        epb.extend([1, 2, 3, 0]);
        f.extend(block(true, BLOCK_EPB, &epb));
        let mut spb = Vec::new();
        spb.extend(be32(6));
        spb.extend([4, 5, 6, 7, 8, 9, 0, 0]);
        f.extend(block(true, BLOCK_SPB, &spb));
        let mut shb = Vec::new();
        shb.extend(BYTE_ORDER_MAGIC.to_le_bytes());
        shb.extend([1, 0, 0, 0]);
        shb.extend([0xff; 8]);
        f.extend(block(false, BLOCK_SHB, &shb));
        f.extend(block(false, BLOCK_IDB, &[1, 0, 0, 0, 0, 0, 0, 0]));
        let mut epb = Vec::new();
        epb.extend(0u32.to_le_bytes());
        epb.extend(0u32.to_le_bytes());
        epb.extend(7u32.to_le_bytes()); // 7 us
        epb.extend(1u32.to_le_bytes());
        epb.extend(1u32.to_le_bytes());
        epb.extend([0xee, 0, 0, 0]);
        f.extend(block(false, BLOCK_EPB, &epb));
        f
    }

    #[test]
    fn pcapng_sections_resolutions_and_block_kinds() {
        let r = Reader::from_bytes("ng", handmade_pcapng()).unwrap();
        assert!(r.is_big_endian());
        assert_eq!(r.interfaces().len(), 2);
        assert_eq!(r.interfaces()[0].ts_resolution, TsResolution::Binary(10));
        assert_eq!(r.interfaces()[0].ts_offset, 100);
        let p: Vec<Packet<'_>> = r.packets().collect();
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].data, p[0].orig_len, p[0].ts_ns),
            (&[1, 2, 3][..], 5, 102_000_000_000)
        );
        assert_eq!(
            (p[1].data, p[1].orig_len, p[1].ts_ns),
            (&[4, 5, 6, 7, 8, 9][..], 6, 0)
        );
        assert_eq!(
            (p[2].data, p[2].interface, p[2].ts_ns),
            (&[0xee][..], 1, 7_000)
        );
    }

    fn read_err(bytes: Vec<u8>) -> String {
        Reader::from_bytes("f.pcap", bytes).unwrap_err().to_string()
    }

    #[test]
    fn malformed_files_are_named_precisely() {
        let good = write_to_vec(WriterOptions::default(), false);
        assert_eq!(
            read_err(b"GIF89a..........................".to_vec()),
            "f.pcap: byte offset 0: bad magic 47 49 46 38: not a pcap or pcapng file"
        );
        assert_eq!(
            read_err(good[..10].to_vec()),
            "f.pcap: byte offset 0: truncated file header: 10 bytes, a pcap file header has 24"
        );
        assert_eq!(
            read_err(vec![1, 2]),
            "f.pcap: byte offset 0: truncated file header: 2 bytes, a pcap file header has 24"
        );
        // Cut inside the third packet's data: 24 + (16+60) + (16+157) = 273.
        assert_eq!(
            read_err(good[..273 + 16 + 10].to_vec()),
            "f.pcap: byte offset 273: packet 2: truncated record: 254 bytes of packet data, 10 left in the file"
        );
        assert_eq!(
            read_err(good[..273 + 7].to_vec()),
            "f.pcap: byte offset 273: packet 2: truncated record header: 7 of 16 bytes"
        );
        let mut small_snap = good.clone();
        small_snap[16..20].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(
            read_err(small_snap),
            "f.pcap: byte offset 100: packet 1: captured length 157 exceeds the file's snaplen 100"
        );
        let mut v3 = good.clone();
        v3[4] = 3;
        assert_eq!(
            read_err(v3),
            "f.pcap: pcap version 3.4 (only 2.x is defined)"
        );
        let mut kuz = good;
        kuz[..4].copy_from_slice(&MAGIC_KUZNETZOV.to_le_bytes());
        assert!(read_err(kuz).contains("Kuznetzov"));

        let ng = handmade_pcapng();
        let e = read_err(ng[..ng.len() - 3].to_vec());
        assert!(
            e.contains("truncated block of type 0x6: it declares 36 bytes, 33 are left"),
            "{e}"
        );
        let mut bad_len = ng.clone();
        bad_len[7] = 30; // SHB length 30: not a multiple of 4
        assert!(read_err(bad_len)
            .contains("byte offset 0: block of type 0xa0d0d0a has an invalid length 30"));
        let mut mismatch = ng.clone();
        mismatch[27] = 0;
        assert!(read_err(mismatch).contains("length 28 at the start, 0 at the end"));
        let mut no_iface = ng;
        let epb_at = 28 + 20 + 44;
        no_iface[epb_at + 11] = 4; // interface 4
        assert_eq!(read_err(no_iface), format!("f.pcap: byte offset {epb_at}: packet 0 names interface 4, but its section describes 1"));
        let e = Reader::open("/nonexistent/dir/x.pcap")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/dir/x.pcap: "), "{e}");
    }

    fn tool(name: &str) -> bool {
        let ok = Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            println!("notice: {name} not found; skipping the check against it");
        }
        ok
    }

    #[test]
    fn tcpdump_and_tshark_read_what_we_write() {
        for (format, nanos) in [
            (Format::Pcap, true),
            (Format::Pcap, false),
            (Format::PcapNg, true),
        ] {
            let path = TempPath::new(&format!("tools-{format:?}-{nanos}"));
            let mut w = Writer::create(
                &path.0,
                WriterOptions {
                    format,
                    nanos,
                    ..WriterOptions::default()
                },
            )
            .unwrap();
            for (i, (ts, p)) in sample().iter().enumerate() {
                w.write_packet_full(*ts, p, p.len() as u32, Some(&format!("verdict {i}")))
                    .unwrap();
            }
            drop(w.into_inner().unwrap());
            if format == Format::Pcap && tool("tcpdump") {
                let out = Command::new("tcpdump")
                    .args(["-nn", "-tt", "-r"])
                    .arg(&path.0)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = String::from_utf8_lossy(&out.stdout);
                let lines: Vec<&str> = text.lines().collect();
                assert_eq!(lines.len(), 10, "{text}");
                assert!(
                    lines[0].starts_with(
                        "1700000000.123456 IP 198.18.0.1.1024 > 198.18.0.2.9: UDP, length 18"
                    ),
                    "{text}"
                );
            }
            if tool("tshark") {
                let out = Command::new("tshark")
                    .args(["-n", "-r"])
                    .arg(&path.0)
                    .args([
                        "-T",
                        "fields",
                        "-e",
                        "frame.time_epoch",
                        "-e",
                        "udp.length",
                        "-e",
                        "frame.comment",
                        "-e",
                        "ip.checksum.status",
                        "-e",
                        "udp.checksum.status",
                        "-o",
                        "ip.check_checksum:TRUE",
                        "-o",
                        "udp.check_checksum:TRUE",
                    ])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = String::from_utf8_lossy(&out.stdout);
                let lines: Vec<&str> = text.lines().collect();
                assert_eq!(lines.len(), 10, "{text}");
                let f: Vec<&str> = lines[3].split('\t').collect();
                let want_ts = if nanos {
                    "1700000003.123459792"
                } else {
                    "1700000003.123459000"
                };
                assert_eq!((f[0], f[1]), (want_ts, "317"), "{text}");
                let want_comment = if format == Format::PcapNg {
                    "verdict 3"
                } else {
                    ""
                };
                assert_eq!(f[2], want_comment, "{text}");
                // Wireshark's checksum status 1 is "Good".
                assert_eq!((f[3], f[4]), ("1", "1"), "IPv4 and UDP checksums: {text}");
            }
        }
    }

    #[test]
    fn we_read_what_tcpdump_and_editcap_write() {
        let ours = TempPath::new("ours.pcap");
        let mut w = Writer::create(&ours.0, WriterOptions::default()).unwrap();
        for (ts, p) in sample() {
            w.write_packet(ts, &p).unwrap();
        }
        drop(w.into_inner().unwrap());
        if tool("tcpdump") {
            // tcpdump rewrites with libpcap: microseconds, host byte order.
            let theirs = TempPath::new("tcpdump.pcap");
            let st = Command::new("tcpdump")
                .args(["-r"])
                .arg(&ours.0)
                .arg("-w")
                .arg(&theirs.0)
                .output()
                .unwrap();
            assert!(
                st.status.success(),
                "{}",
                String::from_utf8_lossy(&st.stderr)
            );
            check_sample_file(&theirs.0, false, Format::Pcap);
        }
        if Command::new("editcap")
            .arg("-h")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            for (fmt, nanos, format) in [
                ("pcapng", true, Format::PcapNg),
                ("nsecpcap", true, Format::Pcap),
                ("pcap", false, Format::Pcap),
            ] {
                let theirs = TempPath::new(&format!("editcap.{fmt}"));
                let st = Command::new("editcap")
                    .args(["-F", fmt])
                    .arg(&ours.0)
                    .arg(&theirs.0)
                    .output()
                    .unwrap();
                assert!(
                    st.status.success(),
                    "{}",
                    String::from_utf8_lossy(&st.stderr)
                );
                check_sample_file(&theirs.0, nanos, format);
            }
        } else {
            println!("notice: editcap not found; skipping the check against it");
        }
    }

    fn check_sample_file(path: &Path, nanos: bool, format: Format) {
        let r = Reader::open(path).unwrap();
        assert_eq!(r.format(), format, "{}", path.display());
        assert_eq!(r.len(), 10);
        for (p, (ts, data)) in r.packets().zip(sample()) {
            assert_eq!(p.data, &data[..]);
            assert_eq!(
                p.ts_ns,
                if nanos { ts } else { ts / 1000 * 1000 },
                "{}",
                path.display()
            );
        }
    }

    fn write_file(path: &Path, packets: &[Vec<u8>]) {
        let mut w = Writer::create(path, WriterOptions::default()).unwrap();
        for (i, p) in packets.iter().enumerate() {
            w.write_packet(i as u64, p).unwrap();
        }
        drop(w.into_inner().unwrap());
    }

    fn tagged(n: u32) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut p = udp_template(64 + i as usize);
                p[60..64].copy_from_slice(&i.to_be_bytes());
                p
            })
            .collect()
    }

    fn drain(rx: &mut dyn RxQueue, burst: &mut Burst) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while rx.rx_burst(burst) > 0 {
            out.extend(burst.iter().map(|f| f.data().to_vec()));
            burst.free_all();
        }
        out
    }

    #[test]
    fn the_port_plays_a_file_then_says_so() {
        let input = TempPath::new("port-in.pcap");
        write_file(&input.0, &tagged(50));
        let cfg = PcapConfig {
            input: Some(input.0.clone()),
            ..PcapConfig::default()
        };
        let port = PcapPort::open("pcap:in", cfg).unwrap();
        let full = port.pool().unwrap().available();
        assert_eq!(
            (port.info().driver, port.info().mode.as_str()),
            ("pcap", "file")
        );
        assert_eq!(port.input_packets(), 50);
        assert!(!port.is_exhausted());
        let mut rx = port.open_rx(0).unwrap();
        let mut burst = Burst::new(16);
        assert_eq!(rx.rx_burst(&mut burst), 16);
        burst.free_all();
        // A reopened queue carries on where the last one stopped.
        drop(rx);
        let mut rx = port.open_rx(0).unwrap();
        let got = drain(&mut *rx, &mut burst);
        assert_eq!(got, tagged(50)[16..]);
        assert!(port.is_exhausted());
        assert_eq!(rx.rx_burst(&mut burst), 0);
        assert_eq!(rx.stats().snapshot().packets, 34);
        drop(rx);
        assert_eq!(port.pool().unwrap().available(), full);

        let cfg = PcapConfig {
            input: Some(input.0.clone()),
            loops: Loops::Times(3),
            ..PcapConfig::default()
        };
        let port = PcapPort::open("pcap:loop3", cfg).unwrap();
        let got = drain(&mut *port.open_rx(0).unwrap(), &mut burst);
        assert_eq!(got.len(), 150);
        assert_eq!(got[100..], tagged(50)[..]);
        assert!(port.is_exhausted());

        let cfg = PcapConfig {
            input: Some(input.0.clone()),
            loops: Loops::Forever,
            ..PcapConfig::default()
        };
        let port = PcapPort::open("pcap:forever", cfg).unwrap();
        let mut rx = port.open_rx(0).unwrap();
        for _ in 0..100 {
            assert_eq!(rx.rx_burst(&mut burst), 16);
            burst.free_all();
        }
        assert!(!port.is_exhausted());
    }

    #[test]
    fn the_port_writes_what_it_transmits() {
        let input = TempPath::new("fwd-in.pcap");
        let output = TempPath::new("fwd-out.pcap");
        write_file(&input.0, &tagged(40));
        let cfg = PcapConfig {
            input: Some(input.0.clone()),
            output: Some(output.0.clone()),
            flush_interval: Duration::ZERO,
            ..PcapConfig::default()
        };
        let port = PcapPort::open("pcap:fwd", cfg).unwrap();
        let full = port.pool().unwrap().available();
        let mut rx = port.open_rx(0).unwrap();
        let mut tx = port.open_tx(0).unwrap();
        assert!(matches!(port.open_tx(0), Err(PortError::QueueInUse { .. })));
        let mut burst = Burst::new(32);
        let before = std::fs::metadata(&output.0).unwrap().len();
        assert_eq!(before, 24, "the header is written at open");
        while rx.rx_burst(&mut burst) > 0 {
            let n = burst.len();
            assert_eq!(tx.tx_burst(&mut burst), n);
            assert!(burst.is_empty());
        }
        assert_eq!(
            std::fs::metadata(&output.0).unwrap().len(),
            24,
            "buffered until poll"
        );
        tx.poll();
        let r = Reader::open(&output.0).unwrap();
        let got: Vec<Vec<u8>> = r.packets().map(|p| p.data.to_vec()).collect();
        assert_eq!(got, tagged(40));
        let s = tx.stats().snapshot();
        assert_eq!((s.packets, s.total_dropped()), (40, 0));
        assert_eq!(port.pool().unwrap().available(), full);
        assert!(port.tx_error().is_none());
    }

    #[test]
    fn dropping_the_queue_or_port_flushes() {
        let output = TempPath::new("drop-out.pcap");
        let cfg = PcapConfig {
            output: Some(output.0.clone()),
            ..PcapConfig::default()
        };
        let port = PcapPort::open("pcap:sink", cfg).unwrap();
        assert!(port.is_exhausted(), "nothing to receive");
        assert_eq!(port.open_rx(0).unwrap().rx_burst(&mut Burst::new(4)), 0);
        let pool = HeapPool::new("pcap-sink", 8, 1024).unwrap();
        let send = |n: usize| {
            let mut tx = port.open_tx(0).unwrap();
            let mut burst = Burst::new(8);
            for _ in 0..n {
                let mut f = pool.alloc().unwrap();
                f.fill(&udp_template(64));
                burst.push(f).unwrap();
            }
            assert_eq!(tx.tx_burst(&mut burst), n);
            tx.poll(); // the interval (100 ms) has not passed
        };
        send(3);
        assert_eq!(
            Reader::open(&output.0).unwrap().len(),
            3,
            "flushed when the queue went"
        );
        send(2);
        drop(port);
        assert_eq!(
            Reader::open(&output.0).unwrap().len(),
            5,
            "the writer carried on, and the port flushed"
        );
        assert_eq!(pool.available(), 8);
    }

    #[test]
    fn the_port_refuses_what_it_cannot_carry_and_skips_giants() {
        let input = TempPath::new("sll.pcap");
        let mut w = Writer::create(
            &input.0,
            WriterOptions {
                link_type: 113,
                ..WriterOptions::default()
            },
        )
        .unwrap();
        w.write_packet(0, &[0; 40]).unwrap();
        drop(w.into_inner().unwrap());
        let cfg = PcapConfig {
            input: Some(input.0.clone()),
            ..PcapConfig::default()
        };
        let e = PcapPort::open("pcap:sll", cfg).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "port pcap:sll: {}: the file has link type 113 (LINUX_SLL); Sluice ports carry Ethernet frames (link type 1)",
                input.0.display()
            )
        );

        let giants = TempPath::new("giants.pcap");
        write_file(
            &giants.0,
            &[udp_template(100), udp_template(70_000), udp_template(200)],
        );
        let cfg = PcapConfig {
            input: Some(giants.0.clone()),
            loops: Loops::Times(2),
            ..PcapConfig::default()
        };
        let port = PcapPort::open("pcap:giants", cfg).unwrap();
        let mut rx = port.open_rx(0).unwrap();
        let mut burst = Burst::new(8);
        let got = drain(&mut *rx, &mut burst);
        assert_eq!(
            got.iter().map(Vec::len).collect::<Vec<_>>(),
            [100, 200, 100, 200]
        );
        assert_eq!(rx.stats().snapshot().dropped(DropReason::TooBig), 2);

        let only_giant = TempPath::new("giant.pcap");
        write_file(&only_giant.0, &[udp_template(70_000)]);
        let cfg = PcapConfig {
            input: Some(only_giant.0.clone()),
            loops: Loops::Forever,
            ..PcapConfig::default()
        };
        let port = PcapPort::open("pcap:giant", cfg).unwrap();
        assert_eq!(
            port.open_rx(0).unwrap().rx_burst(&mut burst),
            0,
            "no endless spin"
        );
        assert!(port.is_exhausted());
    }
}
