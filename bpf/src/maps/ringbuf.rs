//! `BPF_MAP_TYPE_RINGBUF`: variable-length records from programs on many
//! workers to one consumer on the control side, in order.
//!
//! # Layout
//!
//! `max_entries` is the size of the data area in bytes: a power of 2 and a
//! multiple of 4096, as Linux requires (at most 1 GiB here). The data area
//! is [`MapOps::value_area`]. Producer and consumer positions count bytes
//! from the start and only grow; a position's offset in the area is the
//! position modulo the size. Each record is an 8-byte header followed by
//! the sample, rounded up to 8 bytes, so every sample is 8-byte aligned. The
//! header is Linux's: the low 32 bits hold the sample length with
//! [`BPF_RINGBUF_BUSY_BIT`] (reserved, not yet committed) and
//! [`BPF_RINGBUF_DISCARD_BIT`] (skip it); the high 32 bits, Linux's
//! `pg_off`, hold the header's own offset in 8-byte units, which lets
//! [`RingBuf::submit`] check that a pointer is one of its samples.
//!
//! Linux maps the data pages twice in a row, so a record may run past the
//! end and continue at the start. A process cannot do that portably, and
//! every sample must lie in the value area in one piece (the interpreter
//! bounds-checks program accesses against it), so a record never wraps: if
//! it does not fit before the end, the producer fills the rest of the area
//! with one discarded *padding* record and puts the record at offset 0. The
//! padding counts as used space until the consumer passes it, so near the
//! end of the area a reservation needs its own size plus the padding free.
//!
//! # Concurrency
//!
//! * Producers (workers, through `bpf_ringbuf_reserve`/`output`) take a
//!   spinlock only to advance the producer position and write the header,
//!   where Linux takes the ring's `raw_spin_lock`; they fill and commit
//!   their records without it, so commits may come in any order.
//! * The consumer ([`RingBuf::consume`], control side; one at a time, behind
//!   a mutex) walks records from the consumer position and stops at the
//!   first one still busy, so records are delivered in reservation order
//!   and only once committed. It advances the consumer position after each
//!   record, which is what frees space for producers.
//!
//! Positions are published with release stores and read with acquire
//! loads, and commits clear the busy bit with a release store that the
//! consumer's acquire load of the header pairs with, exactly as in Linux
//! and libbpf. The consumer position sits on its own cache lines, away from
//! the producer's.
//!
//! # Control side
//!
//! There are no keys: `lookup`, `update`, `delete` and `next_key` return
//! [`MapError::NotSupported`] (Linux: `EINVAL`/`ENOTSUPP`). [`MapOps::len`]
//! is the number of bytes produced and not yet consumed.

use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Mutex, PoisonError};

use super::lpm::common::{alloc_failed, alloc_slice, invalid_def, store_bytes};
use super::lpm::common::{CachePadded, SeqLock};
use super::{MapDef, MapError, MapOps};

/// Header bit: the record is reserved and not yet submitted or discarded.
pub const BPF_RINGBUF_BUSY_BIT: u32 = 1 << 31;
/// Header bit: the record was discarded (or is padding); skip it.
pub const BPF_RINGBUF_DISCARD_BIT: u32 = 1 << 30;
/// Size of a record's header.
pub const BPF_RINGBUF_HDR_SZ: usize = 8;
/// [`RingBuf::query`]: bytes produced and not yet consumed.
pub const BPF_RB_AVAIL_DATA: u64 = 0;
/// [`RingBuf::query`]: the data area's size.
pub const BPF_RB_RING_SIZE: u64 = 1;
/// [`RingBuf::query`]: the consumer position.
pub const BPF_RB_CONS_POS: u64 = 2;
/// [`RingBuf::query`]: the producer position.
pub const BPF_RB_PROD_POS: u64 = 3;

/// Largest sample (Linux's `RINGBUF_MAX_RECORD_SZ`).
const MAX_RECORD: u64 = u32::MAX as u64 / 4;
/// Largest data area: every length, padding included, fits below the flags.
const MAX_SIZE: u32 = 1 << 30;
const HDR: u64 = BPF_RINGBUF_HDR_SZ as u64;

/// A header word: length and flags, and the header's offset in words.
fn header(len_flags: u32, offset: u64) -> u64 {
    (offset / 8) << 32 | u64::from(len_flags)
}

/// A `BPF_MAP_TYPE_RINGBUF` map (see the module docs).
pub struct RingBuf {
    /// The data area, as words (8-byte aligned, shared mutable).
    data: Box<[AtomicU64]>,
    /// Its size in bytes (a power of 2).
    size: u64,
    producer_lock: SeqLock,
    producer_pos: CachePadded<AtomicU64>,
    consumer_pos: CachePadded<AtomicU64>,
    /// One consumer at a time.
    consumer: Mutex<()>,
}

impl std::fmt::Debug for RingBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingBuf")
            .field("size", &self.size)
            .field("producer_pos", &self.producer_pos.load(Relaxed))
            .field("consumer_pos", &self.consumer_pos.load(Relaxed))
            .finish()
    }
}

impl RingBuf {
    /// Creates an empty ring buffer of `max_entries` data bytes.
    ///
    /// # Errors
    /// [`MapError::InvalidDef`] unless `key_size` and `value_size` are 0 and
    /// `max_entries` is a power of 2, a multiple of 4096 and at most 1 GiB.
    pub fn new(def: &MapDef) -> Result<RingBuf, MapError> {
        if def.key_size != 0 || def.value_size != 0 {
            return Err(invalid_def(
                def,
                "key_size and value_size must be 0 for a ringbuf",
            ));
        }
        let size = def.max_entries;
        if !size.is_power_of_two() || !size.is_multiple_of(4096) {
            return Err(invalid_def(
                def,
                format!(
                    "max_entries {size} is the ring's data size in bytes and must be \
                     a power of 2 and a multiple of 4096"
                ),
            ));
        }
        if size > MAX_SIZE {
            return Err(invalid_def(
                def,
                format!("max_entries {size} is larger than the 1 GiB a ringbuf may have"),
            ));
        }
        Ok(RingBuf {
            data: alloc_slice(size as usize / 8, AtomicU64::default)
                .ok_or_else(|| alloc_failed(def))?,
            size: u64::from(size),
            producer_lock: SeqLock::new(),
            producer_pos: CachePadded::default(),
            consumer_pos: CachePadded::default(),
            consumer: Mutex::new(()),
        })
    }

    /// The data area's size in bytes.
    pub fn size(&self) -> usize {
        self.size as usize
    }

    /// `bpf_ringbuf_reserve`: room for a `size`-byte sample, 8-byte
    /// aligned, inside [`MapOps::value_area`] in one piece; `None` if there
    /// is not enough free space (or `size` is larger than any record may
    /// be). The sample must be given back with [`RingBuf::submit`] or
    /// [`RingBuf::discard`]; until then the consumer waits at it.
    ///
    /// Takes the producer spinlock for a few stores; never allocates.
    pub fn reserve(&self, size: u64) -> Option<NonNull<u8>> {
        let record = self.reserve_record(size)?;
        self.word_ptr(record / 8 + 1)
    }

    /// Reserves a record for a `size`-byte sample; returns its header's
    /// offset in the data area.
    fn reserve_record(&self, size: u64) -> Option<usize> {
        if size > MAX_RECORD {
            return None;
        }
        let len = (size + HDR).next_multiple_of(8);
        if len > self.size {
            return None;
        }
        let mask = self.size - 1;
        let _locked = self.producer_lock.write();
        let cons = self.consumer_pos.load(Acquire);
        let prod = self.producer_pos.load(Relaxed);
        let offset = prod & mask;
        // A record never wraps: pad to the end and start over at 0.
        let pad = if offset + len > self.size {
            self.size - offset
        } else {
            0
        };
        let new_prod = prod + pad + len;
        if new_prod - cons > self.size {
            return None;
        }
        if pad != 0 {
            // A whole, discarded record: the consumer skips it.
            let pad_len = (pad - HDR) as u32 | BPF_RINGBUF_DISCARD_BIT;
            self.data[(offset / 8) as usize].store(header(pad_len, offset), Relaxed);
        }
        let record = (prod + pad) & mask;
        let busy = size as u32 | BPF_RINGBUF_BUSY_BIT;
        self.data[(record / 8) as usize].store(header(busy, record), Relaxed);
        // Publishes the headers above to the consumer.
        self.producer_pos.store(new_prod, Release);
        Some(record as usize)
    }

    /// `bpf_ringbuf_submit`: commits a sample from [`RingBuf::reserve`], in
    /// any order relative to other samples. A pointer that is not a
    /// reserved sample of this ring (which the verifier rules out) is
    /// ignored.
    pub fn submit(&self, sample: NonNull<u8>) {
        self.commit(sample, 0);
    }

    /// `bpf_ringbuf_discard`: gives a reserved sample back unread; the
    /// consumer skips it. Pointers are checked as for [`RingBuf::submit`].
    pub fn discard(&self, sample: NonNull<u8>) {
        self.commit(sample, BPF_RINGBUF_DISCARD_BIT);
    }

    /// `bpf_ringbuf_output`: reserves, copies `data` and submits.
    ///
    /// # Errors
    /// [`MapError::Full`] if there is not enough free space.
    pub fn output(&self, data: &[u8]) -> Result<(), MapError> {
        let record = self
            .reserve_record(data.len() as u64)
            .ok_or(MapError::Full)?;
        // The record lies in the area in one piece, so the slice is in range.
        let first = record / 8 + 1;
        store_bytes(&self.data[first..first + data.len().div_ceil(8)], data);
        self.commit_at(record, 0);
        Ok(())
    }

    /// Delivers every committed record from the consumer position on, in
    /// order, to `f`, skipping discarded ones and stopping at the first
    /// record still being written; frees each record's space as soon as `f`
    /// returns. Returns the number of records delivered.
    ///
    /// Control side: one consumer at a time (a second one waits).
    #[allow(unsafe_code)]
    pub fn consume(&self, mut f: impl FnMut(&[u8])) -> usize {
        let _consumer = self.consumer.lock().unwrap_or_else(PoisonError::into_inner);
        let mask = self.size - 1;
        let mut cons = self.consumer_pos.load(Relaxed);
        let mut delivered = 0;
        while cons < self.producer_pos.load(Acquire) {
            let offset = (cons & mask) as usize;
            // Pairs with the producer's release of the header (commit).
            let len_flags = self.data[offset / 8].load(Acquire) as u32;
            if len_flags & BPF_RINGBUF_BUSY_BIT != 0 {
                break;
            }
            let len = (len_flags & !BPF_RINGBUF_DISCARD_BIT) as usize;
            if len_flags & BPF_RINGBUF_DISCARD_BIT == 0 {
                let start = offset + BPF_RINGBUF_HDR_SZ;
                // Records never wrap; the clamp only guards the slice below.
                let len = len.min(self.size() - start);
                let ptr = self.data.as_ptr().wrapping_add(start / 8).cast::<u8>();
                // SAFETY: `ptr` is derived from the whole data area and
                // `[start, start + len)` lies inside it (clamped above), so
                // the bytes are allocated, initialised and live while
                // `self` is borrowed. Nothing writes them while the slice
                // lives: the record is committed (busy bit seen clear with
                // acquire, after the producer's release), so its producer
                // has given it up (the verifier rejects programs that touch
                // a sample after submitting it, as Linux's does); no producer can reserve over it before
                // the consumer position passes it, which happens only after
                // `f` returns; and consumers are serialised by the mutex.
                // The slice cannot outlive `f`'s call.
                let sample = unsafe { std::slice::from_raw_parts(ptr, len) };
                f(sample);
                delivered += 1;
            }
            cons += (len as u64 + HDR).next_multiple_of(8);
            // Frees the record's space for producers.
            self.consumer_pos.store(cons, Release);
        }
        delivered
    }

    /// Bytes produced and not yet consumed: records (committed or not),
    /// their headers and any padding (`BPF_RB_AVAIL_DATA`).
    pub fn available(&self) -> usize {
        let cons = self.consumer_pos.load(Acquire);
        let prod = self.producer_pos.load(Acquire);
        prod.saturating_sub(cons) as usize
    }

    /// `bpf_ringbuf_query`: one of `BPF_RB_AVAIL_DATA`, `BPF_RB_RING_SIZE`,
    /// `BPF_RB_CONS_POS`, `BPF_RB_PROD_POS`; 0 for anything else.
    pub fn query(&self, what: u64) -> u64 {
        match what {
            BPF_RB_AVAIL_DATA => self.available() as u64,
            BPF_RB_RING_SIZE => self.size,
            BPF_RB_CONS_POS => self.consumer_pos.load(Acquire),
            BPF_RB_PROD_POS => self.producer_pos.load(Acquire),
            _ => 0,
        }
    }

    /// Whether `ptr` lies in this ring's data area (for a helper that must
    /// find which ring buffer a sample belongs to).
    pub fn contains(&self, ptr: NonNull<u8>) -> bool {
        (ptr.as_ptr() as usize)
            .checked_sub(self.data.as_ptr() as usize)
            .is_some_and(|offset| offset < self.size())
    }

    /// Pointer to data word `word`, derived from the whole data area.
    fn word_ptr(&self, word: usize) -> Option<NonNull<u8>> {
        let ptr = self.data.as_ptr().wrapping_add(word);
        NonNull::new(ptr.cast_mut().cast::<u8>())
    }

    /// A sample pointer's offset in the data area, if it could be one.
    fn offset_of(&self, sample: NonNull<u8>) -> Option<usize> {
        let offset = (sample.as_ptr() as usize).checked_sub(self.data.as_ptr() as usize)?;
        (offset >= BPF_RINGBUF_HDR_SZ && offset % 8 == 0 && offset < self.size()).then_some(offset)
    }

    /// Commits `sample` (see [`RingBuf::commit_at`]) if it is one.
    fn commit(&self, sample: NonNull<u8>, discard: u32) {
        if let Some(offset) = self.offset_of(sample) {
            self.commit_at(offset - BPF_RINGBUF_HDR_SZ, discard);
        }
    }

    /// Clears the busy bit of the header at offset `record` (release: the
    /// sample's bytes become visible to the consumer), setting `discard`.
    fn commit_at(&self, record: usize, discard: u32) {
        let busy = u64::from(BPF_RINGBUF_BUSY_BIT);
        let own_offset = record as u64 / 8;
        // Only a busy header that names its own offset: anything else is
        // not a reserved sample, and committing twice changes nothing.
        let _ = self.data[record / 8].fetch_update(Release, Relaxed, |h| {
            (h & busy != 0 && h >> 32 == own_offset).then_some(h & !busy | u64::from(discard))
        });
    }
}

impl MapOps for RingBuf {
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

    /// The data area: every sample [`RingBuf::reserve`] returns lies in it
    /// in one piece.
    fn value_area(&self) -> Option<(NonNull<u8>, usize)> {
        Some((self.word_ptr(0)?, self.size()))
    }

    /// Bytes produced and not yet consumed ([`RingBuf::available`]).
    fn len(&self) -> usize {
        self.available()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{Map, MapType, Pinning};

    fn def(size: u32) -> MapDef {
        MapDef {
            name: "events".into(),
            map_type: MapType::RingBuf,
            key_size: 0,
            value_size: 0,
            max_entries: size,
            flags: 0,
            pinning: Pinning::None,
            inner: None,
        }
    }

    fn drain(rb: &RingBuf) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        rb.consume(|s| got.push(s.to_vec()));
        got
    }

    /// Fills a reserved sample through the data area, as a program would.
    fn fill(rb: &RingBuf, sample: NonNull<u8>, bytes: &[u8]) {
        let first = rb.offset_of(sample).unwrap() / 8;
        store_bytes(&rb.data[first..first + bytes.len().div_ceil(8)], bytes);
    }

    fn offset(rb: &RingBuf, p: NonNull<u8>) -> usize {
        p.as_ptr() as usize - rb.value_area().unwrap().0.as_ptr() as usize
    }

    #[test]
    fn reserve_submit_discard_output() {
        let rb = RingBuf::new(&def(4096)).unwrap();
        assert_eq!(rb.consume(|_| unreachable!()), 0);
        let a = rb.reserve(5).unwrap();
        assert_eq!(offset(&rb, a), 8);
        fill(&rb, a, b"hello");
        // Busy: the consumer waits.
        assert_eq!(rb.consume(|_| unreachable!()), 0);
        rb.submit(a);
        let b = rb.reserve(3).unwrap();
        assert_eq!(offset(&rb, b), 16 + 8);
        fill(&rb, b, b"bad");
        rb.discard(b);
        rb.output(b"world!!!!").unwrap();
        assert_eq!(rb.available(), 16 + 16 + 24);
        assert_eq!(rb.query(BPF_RB_PROD_POS), 56);
        assert_eq!(drain(&rb), [b"hello".to_vec(), b"world!!!!".to_vec()]);
        assert_eq!(rb.available(), 0);
        assert_eq!(rb.query(BPF_RB_CONS_POS), 56);
        assert_eq!(rb.query(BPF_RB_RING_SIZE), 4096);
        // A second submit, or a foreign pointer, is ignored.
        rb.submit(a);
        rb.submit(NonNull::dangling());
        assert!(drain(&rb).is_empty());
        rb.output(&[]).unwrap();
        assert_eq!(drain(&rb), [Vec::<u8>::new()]);
    }

    #[test]
    fn out_of_order_submit_is_delivered_in_order() {
        let rb = RingBuf::new(&def(4096)).unwrap();
        let a = rb.reserve(8).unwrap();
        let b = rb.reserve(8).unwrap();
        let c = rb.reserve(8).unwrap();
        fill(&rb, a, b"AAAAAAAA");
        fill(&rb, b, b"BBBBBBBB");
        fill(&rb, c, b"CCCCCCCC");
        rb.submit(c);
        rb.discard(b);
        assert_eq!(rb.consume(|_| unreachable!()), 0);
        rb.submit(a);
        assert_eq!(drain(&rb), [b"AAAAAAAA".to_vec(), b"CCCCCCCC".to_vec()]);
    }

    #[test]
    fn wraparound_pads_to_the_end() {
        let rb = RingBuf::new(&def(4096)).unwrap();
        let (start, len) = rb.value_area().unwrap();
        assert_eq!(len, 4096);
        for i in 0..4u8 {
            rb.output(&[i; 1000]).unwrap();
        }
        assert_eq!(rb.available(), 4 * 1008);
        // 64 bytes remain before the end: not enough for the next record.
        assert!(rb.reserve(1000).is_none());
        assert_eq!(rb.consume(|s| assert_eq!(s.len(), 1000)), 4);
        let p = rb.reserve(1000).unwrap();
        assert_eq!(p.as_ptr() as usize, start.as_ptr() as usize + 8);
        let end = p.as_ptr() as usize + 1000;
        assert!(end <= start.as_ptr() as usize + len);
        fill(&rb, p, &[9; 1000]);
        rb.submit(p);
        assert_eq!(rb.available(), 64 + 1008);
        assert_eq!(drain(&rb), [vec![9; 1000]]);
        assert_eq!(rb.query(BPF_RB_CONS_POS), 4096 + 1008);
    }

    #[test]
    fn full() {
        let rb = RingBuf::new(&def(4096)).unwrap();
        assert!(rb.reserve(4096).is_none());
        assert!(rb.reserve(MAX_RECORD + 1).is_none());
        let whole = rb.reserve(4088).unwrap();
        assert!(rb.reserve(0).is_none());
        assert_eq!(rb.output(b"x"), Err(MapError::Full));
        rb.submit(whole);
        assert_eq!(rb.consume(|s| assert_eq!(s.len(), 4088)), 1);
        for _ in 0..256 {
            rb.output(&[1; 8]).unwrap();
        }
        assert_eq!(rb.output(&[1; 8]), Err(MapError::Full));
        assert_eq!(rb.len(), 4096);
        assert_eq!(rb.consume(|_| {}), 256);
        assert!(rb.is_empty());
    }

    #[test]
    fn creation_rules() {
        let bad = |d: MapDef| match RingBuf::new(&d) {
            Err(MapError::InvalidDef { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(bad(def(4096 + 8)).contains("power of 2 and a multiple of 4096"));
        assert!(bad(def(2048)).contains("power of 2 and a multiple of 4096"));
        assert!(bad(def(1 << 31)).contains("1 GiB"));
        let mut d = def(4096);
        d.value_size = 8;
        assert!(bad(d).contains("value_size must be 0"));
        let map = Map::create(&def(8192), 4).unwrap();
        assert_eq!(map.ops().lookup(&[], &mut []), Err(MapError::NotSupported));
        assert!(map.keys().is_empty());
        assert_eq!(map.downcast::<RingBuf>().unwrap().size(), 8192);
    }

    #[test]
    fn many_producers_one_consumer() {
        const PRODUCERS: u32 = 4;
        const PER: u32 = if cfg!(miri) { 40 } else { 5000 };
        let rb = RingBuf::new(&def(4096)).unwrap();
        let mut next = [0u32; PRODUCERS as usize];
        let mut total = 0;
        std::thread::scope(|s| {
            for p in 0..PRODUCERS {
                let rb = &rb;
                s.spawn(move || {
                    for i in 0..PER {
                        // 8..=71 bytes: producer, sequence, then a pattern.
                        let len = 8 + (i as usize * 7 + p as usize) % 64;
                        let mut rec = vec![(i as u8) ^ (p as u8); len];
                        rec[..4].copy_from_slice(&p.to_ne_bytes());
                        rec[4..8].copy_from_slice(&i.to_ne_bytes());
                        if i % 2 == 0 {
                            while rb.output(&rec).is_err() {
                                std::thread::yield_now();
                            }
                        } else {
                            let sample = loop {
                                match rb.reserve(len as u64) {
                                    Some(sample) => break sample,
                                    None => std::thread::yield_now(),
                                }
                            };
                            if i % 3 == 0 {
                                std::thread::yield_now(); // widen the race
                            }
                            fill(rb, sample, &rec);
                            rb.submit(sample);
                        }
                    }
                });
            }
            while total < PRODUCERS * PER {
                let n = rb.consume(|s| {
                    let p = u32::from_ne_bytes(s[..4].try_into().unwrap());
                    let i = u32::from_ne_bytes(s[4..8].try_into().unwrap());
                    assert_eq!(i, next[p as usize], "producer {p} out of order");
                    next[p as usize] += 1;
                    assert_eq!(s.len(), 8 + (i as usize * 7 + p as usize) % 64);
                    assert!(s[8..].iter().all(|&b| b == (i as u8) ^ (p as u8)));
                });
                total += n as u32;
                if n == 0 {
                    std::thread::yield_now();
                }
            }
        });
        assert_eq!(next, [PER; PRODUCERS as usize]);
        assert_eq!(rb.available(), 0);
        assert_eq!(rb.consume(|_| unreachable!()), 0);
    }
}
