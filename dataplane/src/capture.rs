//! Packet capture at program exit, like `xdpdump`: the packet as the
//! ingress program left it, with its verdict.
//!
//! A [`CaptureTap`] is attached to one port. Workers check for a tap once
//! per burst; when one is there, each packet whose verdict the tap wants is
//! copied (up to the snap length) into a preallocated slot and queued for
//! the reader. When the reader falls behind, slots run out and packets are
//! counted as missed: a capture never slows a worker down beyond the copy,
//! and never allocates on its path.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

/// Largest number of bytes kept per packet.
pub const MAX_SNAPLEN: usize = 4096;

/// One captured packet.
#[derive(Debug)]
pub struct Captured {
    /// XDP verdict (0-4, or 0 for a fault).
    pub verdict: u64,
    /// Length on the wire.
    pub len: u32,
    /// Nanoseconds since the tap was created.
    pub ts_ns: u64,
    /// Worker that handled it.
    pub worker: u16,
    /// RX queue.
    pub queue: u16,
    buf: Box<[u8]>,
    caplen: u32,
}

impl Captured {
    /// The captured bytes (at most the snap length).
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.caplen as usize]
    }
}

/// A capture point on one port.
pub struct CaptureTap {
    /// Verdicts wanted, as a bit mask (bit v for verdict v).
    mask: u32,
    snaplen: usize,
    free: ArrayQueue<Captured>,
    full: ArrayQueue<Captured>,
    missed: AtomicU64,
    started: std::time::Instant,
}

impl std::fmt::Debug for CaptureTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureTap")
            .field("mask", &self.mask)
            .field("snaplen", &self.snaplen)
            .finish()
    }
}

impl CaptureTap {
    /// A tap keeping packets whose verdict is in `verdicts` (all when empty),
    /// up to `snaplen` bytes each, with `slots` packets of buffer.
    pub fn new(verdicts: &[u64], snaplen: usize, slots: usize) -> CaptureTap {
        let snaplen = snaplen.clamp(1, MAX_SNAPLEN);
        let slots = slots.max(1);
        let mask = if verdicts.is_empty() {
            u32::MAX
        } else {
            verdicts
                .iter()
                .filter(|&&v| v < 32)
                .fold(0, |m, &v| m | 1 << v)
        };
        let free = ArrayQueue::new(slots);
        for _ in 0..slots {
            let _ = free.push(Captured {
                verdict: 0,
                len: 0,
                ts_ns: 0,
                worker: 0,
                queue: 0,
                buf: vec![0; snaplen].into_boxed_slice(),
                caplen: 0,
            });
        }
        CaptureTap {
            mask,
            snaplen,
            free,
            full: ArrayQueue::new(slots),
            missed: AtomicU64::new(0),
            started: std::time::Instant::now(),
        }
    }

    /// Whether packets with this verdict are wanted.
    #[inline]
    pub fn wants(&self, verdict: u64) -> bool {
        verdict < 32 && self.mask & (1 << verdict) != 0
    }

    /// Worker side: copies a packet in, or counts it missed.
    #[inline]
    pub fn record(&self, data: &[u8], verdict: u64, worker: usize, queue: u16) {
        let Some(mut slot) = self.free.pop() else {
            self.missed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let n = data.len().min(self.snaplen);
        slot.buf[..n].copy_from_slice(&data[..n]);
        slot.caplen = n as u32;
        slot.len = data.len() as u32;
        slot.verdict = verdict;
        slot.worker = worker as u16;
        slot.queue = queue;
        slot.ts_ns = self.started.elapsed().as_nanos() as u64;
        if let Err(slot) = self.full.push(slot) {
            let _ = self.free.push(slot);
            self.missed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reader side: the next captured packet; hand it back with
    /// [`CaptureTap::recycle`] when done.
    pub fn next(&self) -> Option<Captured> {
        self.full.pop()
    }

    /// Returns a slot to the tap.
    pub fn recycle(&self, c: Captured) {
        let _ = self.free.push(c);
    }

    /// Packets that could not be captured because the reader fell behind.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_wanted_verdicts_and_counts_misses() {
        let tap = CaptureTap::new(&[1, 2], 8, 2);
        assert!(tap.wants(1) && tap.wants(2) && !tap.wants(3));
        tap.record(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 1, 0, 0);
        tap.record(&[7; 4], 2, 1, 3);
        tap.record(&[9; 4], 2, 1, 3); // no slot left
        assert_eq!(tap.missed(), 1);
        let a = tap.next().unwrap();
        assert_eq!(
            (a.data(), a.len, a.verdict),
            (&[1, 2, 3, 4, 5, 6, 7, 8][..], 10, 1)
        );
        tap.recycle(a);
        let b = tap.next().unwrap();
        assert_eq!((b.data(), b.worker, b.queue), (&[7; 4][..], 1, 3));
        assert!(tap.next().is_none());
        assert!(CaptureTap::new(&[], 64, 1).wants(4));
    }
}
