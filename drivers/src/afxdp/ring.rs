//! The four single-producer, single-consumer rings an XDP socket shares
//! with the kernel, read and written the way libxdp's `xsk.h` does.
//!
//! Each ring is a power-of-two array of entries plus a free-running `u32`
//! producer and consumer index in the same shared mapping. The side that
//! produces (user space for the fill and TX rings, the kernel for RX and
//! completion) writes entries, then publishes them with a release store of
//! the producer index; the consumer reads the producer index with an
//! acquire load before reading the entries, and hands slots back with a
//! release store of the consumer index, which the producer reads with an
//! acquire load before reusing them. Both sides keep a cached copy of the
//! other side's index and only touch the shared one when the cache says
//! the ring is empty (consumer) or full (producer), so a burst costs one
//! acquire load and one release store, not one per packet.
//!
//! The flags word (`XDP_RING_NEED_WAKEUP`) is read with a relaxed load: it
//! is a hint that the kernel re-checks after any wake-up, as in libxdp.

#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};

use super::sys::{Mapping, MmapOffsets, RingKind, XDP_RING_NEED_WAKEUP};

/// What is wrong with the kernel's description of a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ring {kind:?}: {reason}")]
pub struct RingLayoutError {
    kind: RingKind,
    reason: &'static str,
}

/// The pointers into one ring's mapping, checked once.
struct Raw<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    entries: *mut T,
    mask: u32,
    size: u32,
    /// Keeps the memory mapped for as long as the pointers live; dropped
    /// (unmapped) with the ring.
    _mapping: Mapping,
    _t: PhantomData<T>,
}

/// The length to map for a ring of `entries` entries of `kind`.
pub(super) fn map_len(kind: RingKind, offsets: &MmapOffsets, entries: u32) -> usize {
    let o = kind.offsets(offsets);
    o.desc as usize + entries as usize * kind.entry_size()
}

impl<T: Copy> Raw<T> {
    fn new(
        kind: RingKind,
        mapping: Mapping,
        offsets: &MmapOffsets,
        size: u32,
    ) -> Result<Raw<T>, RingLayoutError> {
        let bad = |reason| RingLayoutError { kind, reason };
        if !size.is_power_of_two() {
            return Err(bad("size is not a power of two"));
        }
        if std::mem::size_of::<T>() != kind.entry_size() {
            return Err(bad("entry type does not match the ring"));
        }
        let o = kind.offsets(offsets);
        let len = mapping.len() as u64;
        let word_ok = |off: u64| off & 3 == 0 && off + 4 <= len;
        if !(word_ok(o.producer) && word_ok(o.consumer) && word_ok(o.flags)) {
            return Err(bad("an index lies outside the mapping or is misaligned"));
        }
        let align = std::mem::align_of::<T>() as u64;
        if o.desc & (align - 1) != 0 || o.desc + u64::from(size) * kind.entry_size() as u64 > len {
            return Err(bad("the entries lie outside the mapping or are misaligned"));
        }
        let base = mapping.addr().as_ptr();
        // Every offset was checked above to lie inside the mapping.
        let at = |off: u64| base.wrapping_add(off as usize);
        Ok(Raw {
            producer: at(o.producer).cast(),
            consumer: at(o.consumer).cast(),
            flags: at(o.flags).cast(),
            entries: at(o.desc).cast(),
            mask: size - 1,
            size,
            _mapping: mapping,
            _t: PhantomData,
        })
    }

    #[inline]
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: checked in `new` to be an aligned word inside the live
        // mapping; the kernel and this process access it only atomically.
        unsafe { &*self.producer }
    }

    #[inline]
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.consumer }
    }

    #[inline]
    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.flags }
    }
}

/// A ring this process produces into: the fill ring (`u64` frame
/// addresses) or the TX ring (descriptors).
pub(super) struct ProdRing<T> {
    raw: Raw<T>,
    /// Our producer index (published by `submit`).
    cached_prod: u32,
    /// The kernel's consumer index plus the ring size: the first index we
    /// may not write.
    cached_cons: u32,
}

// SAFETY: the ring is single-producer; the handle that produces is moved
// to the one thread that uses it, and the kernel is the other side.
unsafe impl<T: Send> Send for ProdRing<T> {}

impl<T: Copy> ProdRing<T> {
    /// Wraps a mapped ring of `size` entries.
    ///
    /// # Errors
    /// When the kernel's offsets do not fit the mapping.
    pub(super) fn new(
        kind: RingKind,
        mapping: Mapping,
        offsets: &MmapOffsets,
        size: u32,
    ) -> Result<ProdRing<T>, RingLayoutError> {
        let raw = Raw::new(kind, mapping, offsets, size)?;
        let cached_prod = raw.producer().load(Ordering::Relaxed);
        let cached_cons = raw.consumer().load(Ordering::Acquire).wrapping_add(size);
        Ok(ProdRing {
            raw,
            cached_prod,
            cached_cons,
        })
    }

    /// Room for up to `want` entries: how many may be written with
    /// [`ProdRing::write`] before the next [`ProdRing::submit`].
    #[inline]
    pub(super) fn reserve(&mut self, want: u32) -> u32 {
        let mut free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free < want {
            // Acquire: the kernel has finished reading the slots it
            // released before we overwrite them.
            self.cached_cons = self
                .raw
                .consumer()
                .load(Ordering::Acquire)
                .wrapping_add(self.raw.size);
            free = self.cached_cons.wrapping_sub(self.cached_prod);
        }
        free.min(want)
    }

    /// Writes entry `i` (0-based) of the current reservation.
    #[inline]
    pub(super) fn write(&mut self, i: u32, v: T) {
        let idx = self.cached_prod.wrapping_add(i) & self.raw.mask;
        let slot = self.raw.entries.wrapping_add(idx as usize);
        // SAFETY: `idx <= mask < size` entries were checked to lie in the
        // mapping; the slot is ours (reserved and not yet published), so
        // the kernel does not read it concurrently.
        unsafe { slot.write(v) };
    }

    /// Publishes `n` written entries.
    #[inline]
    pub(super) fn submit(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        self.cached_prod = self.cached_prod.wrapping_add(n);
        // Release: the entries are written before the kernel sees them.
        self.raw
            .producer()
            .store(self.cached_prod, Ordering::Release);
    }

    /// Whether the kernel asked for a wake-up.
    #[inline]
    pub(super) fn needs_wakeup(&self) -> bool {
        self.raw.flags().load(Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0
    }

    /// Entries published but not yet taken by the kernel.
    #[inline]
    pub(super) fn outstanding(&self) -> u32 {
        self.cached_prod
            .wrapping_sub(self.raw.consumer().load(Ordering::Acquire))
    }

    /// Ring size.
    pub(super) fn size(&self) -> u32 {
        self.raw.size
    }
}

/// A ring the kernel produces into: the RX ring (descriptors) or the
/// completion ring (`u64` frame addresses).
pub(super) struct ConsRing<T> {
    raw: Raw<T>,
    /// The kernel's producer index, as last read.
    cached_prod: u32,
    /// Our consumer index (published by `release`).
    cached_cons: u32,
}

// SAFETY: the ring is single-consumer; see `ProdRing`.
unsafe impl<T: Send> Send for ConsRing<T> {}

impl<T: Copy> ConsRing<T> {
    /// Wraps a mapped ring of `size` entries.
    ///
    /// # Errors
    /// When the kernel's offsets do not fit the mapping.
    pub(super) fn new(
        kind: RingKind,
        mapping: Mapping,
        offsets: &MmapOffsets,
        size: u32,
    ) -> Result<ConsRing<T>, RingLayoutError> {
        let raw = Raw::new(kind, mapping, offsets, size)?;
        let cached_prod = raw.producer().load(Ordering::Acquire);
        let cached_cons = raw.consumer().load(Ordering::Relaxed);
        Ok(ConsRing {
            raw,
            cached_prod,
            cached_cons,
        })
    }

    /// Entries ready to read, at most `max`.
    #[inline]
    pub(super) fn peek(&mut self, max: u32) -> u32 {
        let mut ready = self.cached_prod.wrapping_sub(self.cached_cons);
        if ready == 0 {
            // Acquire: the kernel's entries are visible before we read them.
            self.cached_prod = self.raw.producer().load(Ordering::Acquire);
            ready = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        // A kernel that claims more than the ring holds is lying; never
        // read past what one lap can hold.
        ready.min(self.raw.size).min(max)
    }

    /// Entry `i` (0-based) of those `peek` reported.
    #[inline]
    pub(super) fn read(&self, i: u32) -> T {
        let idx = self.cached_cons.wrapping_add(i) & self.raw.mask;
        let slot = self.raw.entries.wrapping_add(idx as usize);
        // SAFETY: `idx < size` entries lie in the mapping; the kernel
        // published this slot (acquire in `peek`) and does not rewrite it
        // until we release it.
        unsafe { slot.read() }
    }

    /// Hands `n` read entries back to the kernel.
    #[inline]
    pub(super) fn release(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        self.cached_cons = self.cached_cons.wrapping_add(n);
        // Release: our reads of the entries happen before the kernel
        // reuses the slots.
        self.raw
            .consumer()
            .store(self.cached_cons, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::afxdp::sys::{RingOffset, XdpDesc};
    use std::ptr::NonNull;
    use std::sync::Arc;

    #[derive(Debug)]
    struct HeapSys;

    impl HeapSys {
        fn layout(len: usize) -> std::alloc::Layout {
            std::alloc::Layout::from_size_align(len, 64).unwrap()
        }
    }

    /// Only `munmap` is used by these tests: the mapping is heap memory.
    impl crate::afxdp::sys::Sys for HeapSys {
        fn if_nametoindex(&self, _: &str) -> std::io::Result<u32> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn rx_queues(&self, _: &str) -> std::io::Result<Option<u32>> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn mac_address(&self, _: &str) -> std::io::Result<[u8; 6]> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn xsk_socket(&self) -> std::io::Result<i32> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn close(&self, _: i32) {}
        fn umem_register(&self, _: i32, _: &crate::afxdp::sys::UmemReg) -> std::io::Result<()> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn set_ring_size(&self, _: i32, _: RingKind, _: u32) -> std::io::Result<()> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn mmap_offsets(&self, _: i32) -> std::io::Result<MmapOffsets> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn mmap_ring(&self, _: i32, _: RingKind, _: usize) -> std::io::Result<NonNull<u8>> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn mmap_anonymous(&self, _: usize) -> std::io::Result<NonNull<u8>> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn munmap(&self, addr: NonNull<u8>, len: usize) {
            // SAFETY: allocated in `mapping` below with this layout.
            unsafe { std::alloc::dealloc(addr.as_ptr(), HeapSys::layout(len)) }
        }
        fn bind(&self, _: i32, _: &crate::afxdp::sys::SockaddrXdp) -> std::io::Result<()> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn xdp_options(&self, _: i32) -> std::io::Result<u32> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn statistics(&self, _: i32) -> std::io::Result<crate::afxdp::sys::XdpStatistics> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn kick_tx(&self, _: i32) -> std::io::Result<()> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn kick_rx(&self, _: i32) -> std::io::Result<()> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn xskmap_create(&self, _: &str, _: u32) -> std::io::Result<i32> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn map_update_u32(&self, _: i32, _: u32, _: u32) -> std::io::Result<()> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn prog_load_xdp(&self, _: &str, _: &[u64], _: &str, _: &mut [u8]) -> std::io::Result<i32> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
        fn xdp_link_create(&self, _: i32, _: u32, _: u32) -> std::io::Result<i32> {
            Err(std::io::Error::other("HeapSys: not used by the ring tests"))
        }
    }

    fn offsets() -> MmapOffsets {
        let o = RingOffset {
            producer: 0,
            consumer: 64,
            flags: 128,
            desc: 192,
        };
        MmapOffsets {
            rx: o,
            tx: o,
            fill: o,
            completion: o,
        }
    }

    fn mapping(kind: RingKind, size: u32) -> (Mapping, *mut u8) {
        let len = map_len(kind, &offsets(), size);
        // SAFETY: non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(HeapSys::layout(len)) };
        let sys: Arc<dyn crate::afxdp::sys::Sys> = Arc::new(HeapSys);
        (Mapping::new(NonNull::new(p).unwrap(), len, sys), p)
    }

    fn word(p: *mut u8, off: usize) -> &'static AtomicU32 {
        let w = p.wrapping_add(off) as *const AtomicU32;
        // SAFETY: test memory, aligned, alive for the test.
        unsafe { &*w }
    }

    #[test]
    fn a_producer_ring_respects_the_consumer_and_wraps() {
        let (m2, p2) = mapping(RingKind::Fill, 8);
        // Start near the wrap of the u32 indices.
        word(p2, 0).store(u32::MAX - 2, Ordering::Relaxed);
        word(p2, 64).store(u32::MAX - 2, Ordering::Relaxed);
        let mut r: ProdRing<u64> = ProdRing::new(RingKind::Fill, m2, &offsets(), 8).unwrap();
        assert_eq!(r.reserve(16), 8);
        for i in 0..8 {
            r.write(i, u64::from(i) * 4096);
        }
        r.submit(8);
        assert_eq!(word(p2, 0).load(Ordering::Relaxed), 5);
        assert_eq!(r.reserve(1), 0, "full until the consumer moves");
        assert_eq!(r.outstanding(), 8);
        word(p2, 64).store(1, Ordering::Release); // the kernel took 4
        assert_eq!(r.reserve(8), 4);
        assert_eq!(r.outstanding(), 4);
        assert!(!r.needs_wakeup());
        word(p2, 128).store(XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
        assert!(r.needs_wakeup());
    }

    #[test]
    fn a_consumer_ring_reads_what_was_published() {
        let (m, p) = mapping(RingKind::Rx, 4);
        let mut r: ConsRing<XdpDesc> = ConsRing::new(RingKind::Rx, m, &offsets(), 4).unwrap();
        assert_eq!(r.peek(64), 0);
        for i in 0..3u64 {
            let slot = (p.wrapping_add(192) as *mut XdpDesc).wrapping_add(i as usize);
            let d = XdpDesc {
                addr: i * 2048 + 256,
                len: 60 + i as u32,
                options: 0,
            };
            // SAFETY: within the 4-entry test ring.
            unsafe { slot.write(d) };
        }
        word(p, 0).store(3, Ordering::Release);
        assert_eq!(r.peek(2), 2);
        assert_eq!(r.read(1).len, 61);
        r.release(2);
        assert_eq!(word(p, 64).load(Ordering::Relaxed), 2);
        assert_eq!(r.peek(64), 1);
        assert_eq!(r.read(0).addr, 2 * 2048 + 256);
        r.release(1);
        // A producer index more than a lap ahead is clamped to the ring.
        word(p, 0).store(100, Ordering::Release);
        assert_eq!(r.peek(64), 4);
    }

    #[test]
    fn layouts_outside_the_mapping_are_refused() {
        let (m, _) = mapping(RingKind::Tx, 4);
        let mut o = offsets();
        o.tx.desc = 1 << 20;
        assert!(ProdRing::<XdpDesc>::new(RingKind::Tx, m, &o, 4).is_err());
        let (m, _) = mapping(RingKind::Tx, 4);
        assert!(ProdRing::<XdpDesc>::new(RingKind::Tx, m, &offsets(), 3).is_err());
    }
}
