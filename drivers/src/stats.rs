//! Per-queue counters: plain relaxed atomics written by the one thread that
//! owns the queue, read (and summed) by the control thread.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a queue dropped a packet, in DPDK's and the kernel's vocabulary.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DropReason {
    /// The RX ring was full (`imissed`, AF_XDP `rx_ring_full`).
    RxRingFull,
    /// No free buffer to receive into (`rx_nombuf`, AF_XDP fill ring empty).
    NoBuffer,
    /// The kernel dropped it before the ring (AF_XDP `rx_dropped`).
    KernelDropped,
    /// A malformed descriptor (AF_XDP `rx/tx_invalid_descs`).
    InvalidDescriptor,
    /// The TX ring was full and the frame was not sent (`oerrors`).
    TxRingFull,
    /// The frame does not fit the port's buffers or MTU.
    TooBig,
    /// The back-end failed to send it for a reason other than a full ring
    /// (a capture file that cannot be written, a device error).
    TxError,
}

impl DropReason {
    /// Every reason, in a fixed order (the index into the counters).
    pub const ALL: [DropReason; 7] = [
        DropReason::RxRingFull,
        DropReason::NoBuffer,
        DropReason::KernelDropped,
        DropReason::InvalidDescriptor,
        DropReason::TxRingFull,
        DropReason::TooBig,
        DropReason::TxError,
    ];

    /// A stable snake_case name for metrics and JSON.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::RxRingFull => "rx_ring_full",
            DropReason::NoBuffer => "no_buffer",
            DropReason::KernelDropped => "kernel_dropped",
            DropReason::InvalidDescriptor => "invalid_descriptor",
            DropReason::TxRingFull => "tx_ring_full",
            DropReason::TooBig => "too_big",
            DropReason::TxError => "tx_error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One queue's counters.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct QueueStats {
    packets: AtomicU64,
    bytes: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

/// A copy of a queue's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStatsSnapshot {
    /// Packets moved.
    pub packets: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Drops by reason, indexed like [`DropReason::ALL`].
    pub drops: [u64; DropReason::ALL.len()],
}

impl QueueStatsSnapshot {
    /// Drops for one reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }

    /// All drops.
    pub fn total_dropped(&self) -> u64 {
        self.drops.iter().sum()
    }
}

impl QueueStats {
    /// Counts `n` packets of `bytes` bytes in total (owner thread only).
    #[inline]
    pub fn add(&self, n: u64, bytes: u64) {
        bump(&self.packets, n);
        bump(&self.bytes, bytes);
    }

    /// Counts `n` drops for `reason` (owner thread only).
    #[inline]
    pub fn drop_n(&self, reason: DropReason, n: u64) {
        bump(&self.drops[reason.index()], n);
    }

    /// Sets a drop counter to a value read from elsewhere (the kernel's
    /// `XDP_STATISTICS`), for counters the back-end keeps itself.
    pub fn set_drops(&self, reason: DropReason, total: u64) {
        self.drops[reason.index()].store(total, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> QueueStatsSnapshot {
        QueueStatsSnapshot {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            drops: std::array::from_fn(|i| self.drops[i].load(Ordering::Relaxed)),
        }
    }
}

/// Single-writer increment: a relaxed load and store, cheaper than an
/// atomic read-modify-write; only the owning thread writes.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}
