//! `BPF_MAP_TYPE_PERF_EVENT_ARRAY`: per-CPU rings of samples that programs
//! write with `bpf_perf_event_output` and the control side reads, in the
//! place of Linux's perf events.
//!
//! # Slots and readers
//!
//! The map has `max_entries` slots (libbpf gives it one per CPU when the
//! object leaves `max_entries` out). In Linux a slot holds the fd of a perf
//! event opened on one CPU (`perf_event_open(PERF_COUNT_SW_BPF_OUTPUT,
//! cpu = i)`, its ring mmapped), which user space puts into the map; here
//! [`PerfEventArray::open`] does both at once: it gives slot `i` a ring
//! bound to worker `i` and returns the one [`PerfReader`] of that slot.
//! Dropping the reader closes the slot again. A ring is allocated by the
//! first `open` of its slot and kept until the map goes (a producer may be
//! writing into it while the reader closes); a later `open` of the slot
//! must ask for the same size, and starts with an empty ring.
//!
//! # One producer per ring
//!
//! As in Linux, a ring takes samples only from the CPU it is bound to:
//! `bpf_perf_event_output` with `BPF_F_CURRENT_CPU` on worker `w` writes
//! slot `w`, and a program that names another slot explicitly gets
//! `-EOPNOTSUPP` (Linux's `event->oncpu != cpu`), counted in
//! [`PerfReader::stats`] as `wrong_cpu`. A worker index is held by one
//! thread at a time, so every ring has a single producer; the ring does not
//! rely on it for memory safety, though: the producer claims the ring with
//! one uncontended atomic swap, and a second producer that finds it claimed
//! (two threads running as the same worker) gets `-EBUSY` (Linux's answer
//! to nested output), counted as `busy`. The per-sample path therefore
//! takes no lock, never allocates, never logs and never waits.
//!
//! # Layout
//!
//! The ring is `pages * 4096` bytes (a power of 2), words of
//! `AtomicU64`. Positions count bytes and only grow; producer and consumer
//! positions live on cache lines of their own. A record is an 8-byte
//! header (low half: the record's length in bytes, header included; high
//! half: [`PERF_RECORD_SAMPLE`] or a padding type) and, for a sample,
//! Linux's `PERF_SAMPLE_RAW` body: a `u32` size followed by the raw bytes,
//! zero-padded so that size and bytes together are a multiple of 8. The
//! size a reader sees is that padded size, as libbpf's `perf_buffer` and
//! `bpftool map event_pipe` see it. A record never wraps: when it does not
//! fit before the end of the ring, a padding record fills the rest and the
//! sample starts at offset 0 (the reader then gets each sample in one
//! slice, with no copy).
//!
//! A full ring drops the sample, counts it as lost and returns `-ENOSPC`,
//! as Linux's `perf_output_begin`; [`PerfReader::read`] reports the losses
//! since the previous read, in the place of libbpf's `PERF_RECORD_LOST`
//! callback.
//!
//! # Control side
//!
//! Slots hold no values user space can read: `lookup`, `update`, `delete`
//! and `next_key` return [`MapError::NotSupported`]. [`MapOps::len`] is the
//! number of slots with a reader.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock};

use super::lpm::common::{alloc_slice, invalid_def, CachePadded};
use super::{Map, MapDef, MapError, MapOps};

/// `bpf_perf_event_output` flags: the slot index, or [`BPF_F_CURRENT_CPU`].
pub const BPF_F_INDEX_MASK: u64 = 0xffff_ffff;
/// `bpf_perf_event_output` flags: the running CPU's slot.
pub const BPF_F_CURRENT_CPU: u64 = BPF_F_INDEX_MASK;
/// `bpf_perf_event_output` flags: bytes of the packet to append (bits 32-51).
pub const BPF_F_CTXLEN_MASK: u64 = 0xf_ffff << 32;
/// Header type of a sample record (Linux's `PERF_RECORD_SAMPLE`).
pub const PERF_RECORD_SAMPLE: u32 = 9;
/// Header type of the padding before the end of the ring.
const RECORD_PAD: u32 = 0;
/// Size of a page, the unit of a ring's size.
pub const PAGE_SIZE: usize = 4096;
/// Largest ring: 2^16 pages (256 MiB).
pub const MAX_PAGES: usize = 1 << 16;
const HDR: u64 = 8;

/// Why `bpf_perf_event_output` refused a sample; each is an errno of
/// Linux's `bpf_xdp_event_output`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OutputError {
    /// Flag bits outside the index and the packet length (`EINVAL`).
    BadFlags,
    /// More packet bytes asked for than the frame has (`EFAULT`).
    PacketTooShort,
    /// The index is not below `max_entries` (`E2BIG`).
    IndexOutOfRange,
    /// The slot has no reader (`ENOENT`: no perf event in the slot).
    NoReader,
    /// The slot's ring belongs to another CPU (`EOPNOTSUPP`).
    WrongCpu,
    /// Another producer is writing the ring (`EBUSY`).
    Busy,
    /// The ring is full; the sample is counted as lost (`ENOSPC`).
    Full,
}

impl OutputError {
    /// The negative errno the helper returns.
    pub fn errno(self) -> i64 {
        match self {
            OutputError::BadFlags => -22,       // EINVAL
            OutputError::PacketTooShort => -14, // EFAULT
            OutputError::IndexOutOfRange => -7, // E2BIG
            OutputError::NoReader => -2,        // ENOENT
            OutputError::WrongCpu => -95,       // EOPNOTSUPP
            OutputError::Busy => -16,           // EBUSY
            OutputError::Full => -28,           // ENOSPC
        }
    }
}

/// What the producer side owns: written by the ring's worker only (the
/// drop counters also by foreign workers that were refused).
#[derive(Default)]
struct Producer {
    /// Bytes produced (records and padding).
    head: AtomicU64,
    /// Held while a sample is written.
    claimed: AtomicBool,
    /// Samples dropped because the ring was full.
    lost: AtomicU64,
    /// Samples refused because another producer held the ring.
    busy: AtomicU64,
    /// Samples refused because they came from another CPU.
    wrong_cpu: AtomicU64,
}

/// One slot's ring (see the module docs).
struct PerfRing {
    data: Box<[AtomicU64]>,
    size: u64,
    cpu: u32,
    producer: CachePadded<Producer>,
    /// Bytes consumed; written by the slot's reader only.
    tail: CachePadded<AtomicU64>,
}

impl PerfRing {
    fn new(pages: usize, cpu: u32) -> Option<PerfRing> {
        let size = pages * PAGE_SIZE;
        Some(PerfRing {
            data: alloc_slice(size / 8, AtomicU64::default)?,
            size: size as u64,
            cpu,
            producer: CachePadded::default(),
            tail: CachePadded::default(),
        })
    }

    /// Writes one sample made of `parts`, claiming the ring for the time.
    fn output(&self, parts: [&[u8]; 2]) -> Result<(), OutputError> {
        let p = &self.producer;
        if p.claimed.swap(true, Acquire) {
            p.busy.fetch_add(1, Relaxed);
            return Err(OutputError::Busy);
        }
        let r = self.write(parts);
        p.claimed.store(false, Release);
        if r.is_err() {
            p.lost.fetch_add(1, Relaxed);
        }
        r
    }

    /// The producer's half; the caller holds the claim.
    fn write(&self, parts: [&[u8]; 2]) -> Result<(), OutputError> {
        let n = (parts[0].len() + parts[1].len()) as u64;
        // Linux's PERF_SAMPLE_RAW: a u32 size, then the bytes zero-padded
        // so that both are a multiple of 8.
        let raw = (n + 4).next_multiple_of(8) - 4;
        let len = HDR + 4 + raw;
        if len > self.size || raw > u64::from(u32::MAX) {
            return Err(OutputError::Full);
        }
        let head = self.producer.head.load(Relaxed);
        let tail = self.tail.load(Acquire);
        let offset = head & (self.size - 1);
        let pad = if offset + len > self.size {
            self.size - offset
        } else {
            0
        };
        if head + pad + len - tail > self.size {
            return Err(OutputError::Full);
        }
        if pad != 0 {
            self.store(offset / 8, header(RECORD_PAD, pad));
        }
        let first = ((offset + pad) & (self.size - 1)) / 8;
        let mut w = WordWriter {
            words: &self.data,
            next: first as usize + 1,
            acc: [0; 8],
            fill: 0,
        };
        w.put(&(raw as u32).to_ne_bytes());
        w.put(parts[0]);
        w.put(parts[1]);
        w.finish();
        self.store(first, header(PERF_RECORD_SAMPLE, len));
        // Publishes the record's words to the reader.
        self.producer.head.store(head + pad + len, Release);
        Ok(())
    }

    fn store(&self, word: u64, v: u64) {
        if let Some(w) = self.data.get(word as usize) {
            w.store(v, Relaxed);
        }
    }

    /// The reader's half: delivers every record from the tail on.
    #[allow(unsafe_code)]
    fn read(&self, mut f: impl FnMut(&[u8])) -> usize {
        let mask = self.size - 1;
        let mut tail = self.tail.load(Relaxed);
        let head = self.producer.head.load(Acquire);
        let mut delivered = 0;
        while tail < head {
            let word = ((tail & mask) / 8) as usize;
            let h = self.data[word].load(Relaxed);
            let (kind, len) = ((h >> 32) as u32, h & 0xffff_ffff);
            // A producer never writes a record shorter than its header or
            // past the end of the ring; the clamp keeps a torn one harmless.
            let len = len.clamp(HDR, self.size - (tail & mask));
            if kind == PERF_RECORD_SAMPLE && len >= HDR + 4 {
                let size = (self.data[word + 1].load(Relaxed) as u32).to_ne_bytes();
                let size = u64::from(u32::from_ne_bytes(size)).min(len - HDR - 4);
                let start = (tail & mask) + HDR + 4;
                let ptr = self.data.as_ptr().cast::<u8>().wrapping_add(start as usize);
                // SAFETY: `ptr` is derived from the whole data area and
                // `[start, start + size)` lies inside this record, which
                // lies inside the area (clamped above), so the bytes are
                // allocated, initialised and live while `self` is borrowed.
                // Nothing writes them while the slice lives: the producer
                // published them (release store of `head`, acquired above)
                // and writes only between `head` and `tail + size`, and
                // `tail` moves past this record only after `f` returns;
                // there is one reader per ring (`PerfReader` is the only
                // caller and `read` takes it by `&mut`). The slice cannot
                // outlive `f`'s call.
                let sample = unsafe { std::slice::from_raw_parts(ptr, size as usize) };
                f(sample);
                delivered += 1;
            }
            tail += len;
            // Frees the record's space for the producer.
            self.tail.store(tail, Release);
        }
        delivered
    }
}

fn header(kind: u32, len: u64) -> u64 {
    u64::from(kind) << 32 | len
}

/// Stores a byte stream into consecutive words, 8 bytes at a time.
struct WordWriter<'a> {
    words: &'a [AtomicU64],
    next: usize,
    acc: [u8; 8],
    fill: usize,
}

impl WordWriter<'_> {
    fn put(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.fill == 0 && bytes.len() >= 8 {
                let mut chunks = bytes.chunks_exact(8);
                for c in &mut chunks {
                    let mut b = [0; 8];
                    b.copy_from_slice(c);
                    self.flush_word(u64::from_ne_bytes(b));
                }
                bytes = chunks.remainder();
                continue;
            }
            let take = (8 - self.fill).min(bytes.len());
            self.acc[self.fill..self.fill + take].copy_from_slice(&bytes[..take]);
            self.fill += take;
            bytes = &bytes[take..];
            if self.fill == 8 {
                self.flush_word(u64::from_ne_bytes(self.acc));
                self.acc = [0; 8];
                self.fill = 0;
            }
        }
    }

    fn flush_word(&mut self, v: u64) {
        if let Some(w) = self.words.get(self.next) {
            w.store(v, Relaxed);
        }
        self.next += 1;
    }

    /// Stores the last, zero-padded word.
    fn finish(mut self) {
        if self.fill != 0 {
            self.flush_word(u64::from_ne_bytes(self.acc));
        }
    }
}

/// One slot: its ring once opened, and whether a reader holds it.
#[derive(Default)]
struct Slot {
    ring: OnceLock<PerfRing>,
    reader: AtomicBool,
}

/// A `BPF_MAP_TYPE_PERF_EVENT_ARRAY` map (see the module docs).
pub struct PerfEventArray {
    slots: Box<[Slot]>,
    ncpus: usize,
}

impl std::fmt::Debug for PerfEventArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfEventArray")
            .field("slots", &self.slots.len())
            .field("open", &self.len())
            .finish()
    }
}

impl PerfEventArray {
    /// Creates a map of `max_entries` closed slots, for `ncpus` workers.
    ///
    /// # Errors
    /// [`MapError::InvalidDef`] unless `key_size` and `value_size` are 4
    /// (an index and, in Linux, a perf event fd).
    pub fn new(def: &MapDef, ncpus: usize) -> Result<PerfEventArray, MapError> {
        if def.key_size != 4 || def.value_size != 4 {
            return Err(invalid_def(
                def,
                "a perf_event_array needs key_size 4 and value_size 4",
            ));
        }
        Ok(PerfEventArray {
            slots: (0..def.max_entries).map(|_| Slot::default()).collect(),
            ncpus,
        })
    }

    /// `bpf_perf_event_output` from worker `cpu` into slot `index`: one
    /// sample made of `parts` (the program's data, then packet bytes).
    /// Never allocates, locks or blocks.
    ///
    /// # Errors
    /// The [`OutputError`] the helper turns into an errno.
    pub fn output(&self, cpu: u32, index: u64, parts: [&[u8]; 2]) -> Result<(), OutputError> {
        let slot = usize::try_from(index)
            .ok()
            .and_then(|i| self.slots.get(i))
            .ok_or(OutputError::IndexOutOfRange)?;
        let ring = match slot.ring.get() {
            Some(r) if slot.reader.load(Acquire) => r,
            _ => return Err(OutputError::NoReader),
        };
        if ring.cpu != cpu {
            ring.producer.wrong_cpu.fetch_add(1, Relaxed);
            return Err(OutputError::WrongCpu);
        }
        ring.output(parts)
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }
}

impl MapOps for PerfEventArray {
    fn lookup(&self, _key: &[u8], _out: &mut [u8]) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }

    fn update(&self, _key: &[u8], _value: &[u8], _flags: u64) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }

    fn delete(&self, _key: &[u8]) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }

    fn next_key(&self, _key: Option<&[u8]>, _out: &mut [u8]) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }

    /// Slots with a reader.
    fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.reader.load(Relaxed)).count()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Why [`PerfEventArray::open`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The map is not a perf event array.
    #[error("map {0} is not a perf_event_array")]
    NotPerfEventArray(String),
    /// The index is not a slot, or no worker has that index.
    #[error("index {index} is not a slot of map {map} ({slots} slots, {ncpus} workers)")]
    NoSuchSlot {
        /// Map name.
        map: String,
        /// The index asked for.
        index: u32,
        /// The map's slots.
        slots: usize,
        /// Workers the map was created for.
        ncpus: usize,
    },
    /// The page count is not a power of 2 up to [`MAX_PAGES`].
    #[error("{0} pages: a ring is a power of 2 pages, at most 65536")]
    BadPages(usize),
    /// The slot already has a reader.
    #[error("index {0} already has a reader")]
    InUse(u32),
    /// The slot's ring was made with another size by an earlier reader.
    #[error("index {index} has a ring of {have} pages, not {want}")]
    SizeMismatch {
        /// The index.
        index: u32,
        /// Pages of the existing ring.
        have: usize,
        /// Pages asked for.
        want: usize,
    },
    /// The ring's memory cannot be had.
    #[error("cannot allocate a ring of {0} pages")]
    NoMemory(usize),
}

/// Per-ring counters, as a reader sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Samples dropped because the ring was full (`PERF_RECORD_LOST`).
    pub lost: u64,
    /// Samples refused because another producer held the ring.
    pub busy: u64,
    /// Samples refused because a program on another CPU named this slot.
    pub wrong_cpu: u64,
}

/// What one [`PerfReader::read`] delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Samples handed to the callback.
    pub samples: usize,
    /// Samples lost (ring full) since the previous read.
    pub lost: u64,
}

/// The reader of one slot: what a perf event fd and its mmapped ring are to
/// libbpf's `perf_buffer`. Dropping it closes the slot (programs then get
/// `-ENOENT` for it).
pub struct PerfReader {
    map: Arc<Map>,
    index: u32,
    lost_seen: u64,
}

impl std::fmt::Debug for PerfReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfReader")
            .field("map", &self.map.def().name)
            .field("index", &self.index)
            .finish()
    }
}

impl PerfEventArray {
    /// Opens slot `index` of `map` with a ring of `pages` pages bound to
    /// worker `index`, as libbpf's `perf_buffer__new` opens a perf event on
    /// CPU `index` and stores its fd at key `index`. The ring starts empty.
    ///
    /// # Errors
    /// An [`OpenError`] naming what is wrong.
    pub fn open(map: &Arc<Map>, index: u32, pages: usize) -> Result<PerfReader, OpenError> {
        let name = || map.def().name.clone();
        let pea = map
            .downcast::<PerfEventArray>()
            .ok_or_else(|| OpenError::NotPerfEventArray(name()))?;
        let no_slot = || OpenError::NoSuchSlot {
            map: name(),
            index,
            slots: pea.slots.len(),
            ncpus: pea.ncpus,
        };
        if index as usize >= pea.ncpus {
            return Err(no_slot());
        }
        let slot = pea.slots.get(index as usize).ok_or_else(no_slot)?;
        if !pages.is_power_of_two() || pages > MAX_PAGES {
            return Err(OpenError::BadPages(pages));
        }
        if slot.ring.get().is_none() {
            let ring = PerfRing::new(pages, index).ok_or(OpenError::NoMemory(pages))?;
            // Another open may have won the race; its ring is kept.
            let _ = slot.ring.set(ring);
        }
        let ring = slot.ring.get().ok_or(OpenError::NoMemory(pages))?;
        let have = ring.size as usize / PAGE_SIZE;
        if have != pages {
            return Err(OpenError::SizeMismatch {
                index,
                have,
                want: pages,
            });
        }
        if slot.reader.swap(true, Acquire) {
            return Err(OpenError::InUse(index));
        }
        // Anything an earlier reader left unread is dropped.
        ring.tail.store(ring.producer.head.load(Acquire), Release);
        Ok(PerfReader {
            map: map.clone(),
            index,
            lost_seen: ring.producer.lost.load(Relaxed),
        })
    }
}

impl PerfReader {
    fn ring(&self) -> Option<&PerfRing> {
        self.map
            .downcast::<PerfEventArray>()?
            .slots
            .get(self.index as usize)?
            .ring
            .get()
    }

    /// The slot (and worker) index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Delivers every sample written since the last read to `f`, in order
    /// (each with Linux's padded raw size), and frees their space; returns
    /// how many there were and how many were lost since the last read.
    pub fn read(&mut self, f: impl FnMut(&[u8])) -> ReadStats {
        let Some(ring) = self.ring() else {
            return ReadStats::default();
        };
        let samples = ring.read(f);
        let lost_now = ring.producer.lost.load(Relaxed);
        let lost = lost_now.wrapping_sub(self.lost_seen);
        self.lost_seen = lost_now;
        ReadStats { samples, lost }
    }

    /// Whether a sample is waiting.
    pub fn has_data(&self) -> bool {
        self.ring()
            .is_some_and(|r| r.producer.head.load(Acquire) != r.tail.load(Relaxed))
    }

    /// The ring's counters since it was created.
    pub fn stats(&self) -> RingStats {
        self.ring()
            .map(|r| RingStats {
                lost: r.producer.lost.load(Relaxed),
                busy: r.producer.busy.load(Relaxed),
                wrong_cpu: r.producer.wrong_cpu.load(Relaxed),
            })
            .unwrap_or_default()
    }
}

impl Drop for PerfReader {
    fn drop(&mut self) {
        if let Some(slot) = self
            .map
            .downcast::<PerfEventArray>()
            .and_then(|p| p.slots.get(self.index as usize))
        {
            slot.reader.store(false, Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{MapType, Pinning};

    fn def(entries: u32) -> MapDef {
        MapDef {
            name: "events".into(),
            map_type: MapType::PerfEventArray,
            key_size: 4,
            value_size: 4,
            max_entries: entries,
            flags: 0,
            pinning: Pinning::None,
            inner: None,
        }
    }

    fn map(entries: u32, ncpus: usize) -> Arc<Map> {
        Map::create(&def(entries), ncpus).unwrap()
    }

    fn pea(m: &Map) -> &PerfEventArray {
        m.downcast::<PerfEventArray>().unwrap()
    }

    fn drain(r: &mut PerfReader) -> (Vec<Vec<u8>>, u64) {
        let mut got = Vec::new();
        let st = r.read(|s| got.push(s.to_vec()));
        assert_eq!(st.samples, got.len());
        (got, st.lost)
    }

    /// Linux's raw sample: the bytes zero-padded to 4 mod 8.
    fn padded(b: &[u8]) -> Vec<u8> {
        let mut v = b.to_vec();
        v.resize((b.len() + 4).next_multiple_of(8) - 4, 0);
        v
    }

    #[test]
    fn samples_are_delivered_padded_and_in_order() {
        let m = map(2, 2);
        let mut r = PerfEventArray::open(&m, 0, 1).unwrap();
        assert_eq!(m.ops().len(), 1);
        let p = pea(&m);
        p.output(0, 0, [b"head", b"pkt"]).unwrap();
        p.output(0, 0, [b"", b""]).unwrap();
        p.output(0, 0, [&[7; 12], &[]]).unwrap();
        assert!(r.has_data());
        let (got, lost) = drain(&mut r);
        assert_eq!(got, [padded(b"headpkt"), padded(b""), padded(&[7; 12])]);
        assert_eq!(got[0].len(), 12);
        assert_eq!(got[1].len(), 4);
        assert_eq!(got[2].len(), 12);
        assert_eq!(lost, 0);
        assert!(!r.has_data());
        assert_eq!(drain(&mut r).0.len(), 0);
    }

    #[test]
    fn errors_follow_linux() {
        let m = map(4, 2);
        let p = pea(&m);
        assert_eq!(
            p.output(0, 4, [b"x", b""]),
            Err(OutputError::IndexOutOfRange)
        );
        assert_eq!(
            p.output(0, u64::MAX, [b"x", b""]),
            Err(OutputError::IndexOutOfRange)
        );
        assert_eq!(p.output(0, 0, [b"x", b""]), Err(OutputError::NoReader));
        let r1 = PerfEventArray::open(&m, 1, 1).unwrap();
        assert_eq!(p.output(0, 1, [b"x", b""]), Err(OutputError::WrongCpu));
        assert_eq!(r1.stats().wrong_cpu, 1);
        drop(r1);
        assert_eq!(p.output(1, 1, [b"x", b""]), Err(OutputError::NoReader));
        assert_eq!(m.ops().len(), 0);
        // Slots 2 and 3 have no worker.
        assert!(matches!(
            PerfEventArray::open(&m, 2, 1),
            Err(OpenError::NoSuchSlot { index: 2, .. })
        ));
        assert_eq!(
            PerfEventArray::open(&m, 0, 3).unwrap_err(),
            OpenError::BadPages(3)
        );
        let _r0 = PerfEventArray::open(&m, 0, 1).unwrap();
        assert_eq!(
            PerfEventArray::open(&m, 0, 1).unwrap_err(),
            OpenError::InUse(0)
        );
        let other = Map::create(
            &MapDef {
                map_type: MapType::Array,
                ..def(1)
            },
            1,
        )
        .unwrap();
        assert!(matches!(
            PerfEventArray::open(&other, 0, 1),
            Err(OpenError::NotPerfEventArray(_))
        ));
        for e in [
            (OutputError::BadFlags, -22),
            (OutputError::PacketTooShort, -14),
            (OutputError::IndexOutOfRange, -7),
            (OutputError::NoReader, -2),
            (OutputError::WrongCpu, -95),
            (OutputError::Busy, -16),
            (OutputError::Full, -28),
        ] {
            assert_eq!(e.0.errno(), e.1);
        }
    }

    #[test]
    fn reopen_starts_empty_and_keeps_the_size() {
        let m = map(1, 1);
        let r = PerfEventArray::open(&m, 0, 1).unwrap();
        pea(&m).output(0, 0, [b"old", b""]).unwrap();
        drop(r);
        assert_eq!(
            PerfEventArray::open(&m, 0, 2).unwrap_err(),
            OpenError::SizeMismatch {
                index: 0,
                have: 1,
                want: 2
            }
        );
        let mut r = PerfEventArray::open(&m, 0, 1).unwrap();
        assert!(!r.has_data());
        pea(&m).output(0, 0, [b"new", b""]).unwrap();
        assert_eq!(drain(&mut r).0, [padded(b"new")]);
    }

    #[test]
    fn full_ring_counts_lost_and_wraps_around() {
        let m = map(1, 1);
        let mut r = PerfEventArray::open(&m, 0, 1).unwrap();
        let p = pea(&m);
        // 1000 bytes: a record of 8 + 4 + 1004 = 1016 bytes; 4 fit in 4096.
        for i in 0..4u8 {
            p.output(0, 0, [&[i; 600], &[i; 400]]).unwrap();
        }
        assert_eq!(p.output(0, 0, [&[9; 1000], &[]]), Err(OutputError::Full));
        assert_eq!(p.output(0, 0, [&[9; 4096], &[]]), Err(OutputError::Full));
        assert_eq!(r.stats().lost, 2);
        let (got, lost) = drain(&mut r);
        assert_eq!(lost, 2);
        assert_eq!(got.len(), 4);
        for (i, s) in got.iter().enumerate() {
            assert_eq!(s, &padded(&[i as u8; 1000]));
        }
        // 4064 bytes used: the next record pads the last 32 and starts at 0.
        for round in 0..20u8 {
            for i in 0..3u8 {
                p.output(0, 0, [&[round ^ i; 999], &[i]]).unwrap();
            }
            let (got, lost) = drain(&mut r);
            assert_eq!(lost, 0);
            assert_eq!(got.len(), 3);
            for (i, s) in got.iter().enumerate() {
                let mut want = vec![round ^ i as u8; 999];
                want.push(i as u8);
                assert_eq!(s, &padded(&want), "round {round} sample {i}");
            }
        }
        let ring = p.slots[0].ring.get().unwrap();
        assert!(ring.producer.head.load(Relaxed) > 10 * 4096);
        assert_eq!(ring.producer.head.load(Relaxed), ring.tail.load(Relaxed));
        assert_eq!(drain(&mut r).1, 0);
    }

    #[test]
    fn a_claimed_ring_refuses_a_second_producer() {
        let m = map(1, 1);
        let mut r = PerfEventArray::open(&m, 0, 1).unwrap();
        let p = pea(&m);
        let ring = p.slots[0].ring.get().unwrap();
        ring.producer.claimed.store(true, Relaxed);
        assert_eq!(p.output(0, 0, [b"x", b""]), Err(OutputError::Busy));
        ring.producer.claimed.store(false, Relaxed);
        assert_eq!(r.stats().busy, 1);
        assert_eq!(r.stats().lost, 0);
        p.output(0, 0, [b"x", b""]).unwrap();
        assert_eq!(drain(&mut r).0.len(), 1);
    }

    #[test]
    fn creation_rules() {
        let bad = |d: MapDef| match Map::create(&d, 2) {
            Err(MapError::InvalidDef { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(bad(MapDef {
            value_size: 8,
            ..def(2)
        })
        .contains("value_size 4"));
        let m = map(2, 2);
        assert_eq!(
            m.ops().lookup(&[0; 4], &mut [0; 4]),
            Err(MapError::NotSupported)
        );
        assert!(m.keys().is_empty());
        assert_eq!(pea(&m).slots(), 2);
    }

    /// One producer thread, one reader thread, a million samples of varying
    /// length through a one-page ring: every accepted sample arrives once,
    /// in order and intact (checked byte by byte and by a checksum), and
    /// every refused one is counted as lost.
    #[test]
    fn producer_and_reader_threads() {
        const N: u64 = if cfg!(miri) { 500 } else { 1_000_000 };
        let m = map(1, 1);
        let mut r = PerfEventArray::open(&m, 0, 1).unwrap();
        let p = pea(&m);
        let (mut got_sum, mut got, mut lost) = (0u64, 0u64, 0u64);
        let done = AtomicBool::new(false);
        let (sent, sent_sum, refused) = std::thread::scope(|s| {
            let producer = s.spawn(|| {
                let (mut sent, mut sum, mut refused) = (0u64, 0u64, 0u64);
                let mut buf = [0u8; 64];
                for i in 0..N {
                    let len = 8 + (i as usize * 13) % 56;
                    buf[..8].copy_from_slice(&i.to_ne_bytes());
                    for (k, b) in buf[8..len].iter_mut().enumerate() {
                        *b = (i as u8).wrapping_mul(31) ^ k as u8;
                    }
                    let (a, b) = buf[..len].split_at(len / 3);
                    loop {
                        match p.output(0, 0, [a, b]) {
                            Ok(()) => {
                                sent += 1;
                                sum = sum.wrapping_add(i.wrapping_mul(0x9e37_79b9));
                                break;
                            }
                            Err(OutputError::Full) => {
                                refused += 1;
                                // Give up on one in 16 for good; retry the rest.
                                if i % 16 == 0 {
                                    break;
                                }
                                std::thread::yield_now();
                            }
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                }
                done.store(true, Release);
                (sent, sum, refused)
            });
            let mut next = 0u64;
            loop {
                let finished = done.load(Acquire);
                let st = r.read(|s| {
                    let i = u64::from_ne_bytes(s[..8].try_into().unwrap());
                    assert!(i >= next, "sample {i} after {next}");
                    next = i + 1;
                    let len = 8 + (i as usize * 13) % 56;
                    assert_eq!(s.len(), (len + 4).next_multiple_of(8) - 4);
                    for (k, &b) in s[8..len].iter().enumerate() {
                        assert_eq!(b, (i as u8).wrapping_mul(31) ^ k as u8);
                    }
                    assert!(s[len..].iter().all(|&b| b == 0));
                    got_sum = got_sum.wrapping_add(i.wrapping_mul(0x9e37_79b9));
                    got += 1;
                });
                lost += st.lost;
                if finished && st.samples == 0 {
                    break;
                }
                if st.samples == 0 {
                    std::thread::yield_now();
                }
            }
            producer.join().unwrap()
        });
        assert_eq!(got, sent);
        assert_eq!(got_sum, sent_sum);
        assert_eq!(lost, refused);
        assert_eq!(r.stats().lost, refused);
        assert!(sent >= N - N / 16);
    }
}
