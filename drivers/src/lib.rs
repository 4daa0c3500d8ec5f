//! Sluice's packet I/O, behind one burst interface.
//!
//! A driver opens a [`Port`]; a port has RX and TX queues; a worker thread
//! owns the queues it polls. [`RxQueue::rx_burst`] fills a caller-owned,
//! fixed-capacity [`Burst`] with [`Frame`]s; [`TxQueue::tx_burst`] takes
//! frames from the front of a burst and leaves what it could not send.
//! Frames are buffers owned by a [`FramePool`] and go back to it when
//! dropped or sent; every frame has at least [`HEADROOM`] bytes in front of
//! the packet, so programs can push headers (`bpf_xdp_adjust_head`).
//!
//! Nothing here knows about eBPF.
//!
//! # Software ports
//!
//! Ports that need no kernel or hardware, for tests, benchmarks and tools
//! (tier 2 of the test plan), implement the same traits as the real ones:
//!
//! * [`ring`]: in-memory rings, zero-copy, in back-to-back pairs, as a
//!   loopback, or with a [`ring::RingEndpoint`] for a test to drive;
//! * [`null`]: makes packets from a template on RX, frees them on TX;
//! * [`pcap`]: plays a capture file on RX and writes one on TX, plus
//!   standalone pcap/pcapng [`pcap::Reader`] and [`pcap::Writer`];
//! * [`fault`]: a seeded fault injector wrapping any queue;
//! * [`spec`]: `ring:a,peer=b`-style specifications and [`spec::open`].
//!
//! Ports without a kernel interface get interface indexes from a
//! process-wide counter starting at 1000.
//!
//! # How the real back-ends map onto this
//!
//! | concept | AF_XDP | DPDK | netmap |
//! |---|---|---|---|
//! | [`FramePool`] | the UMEM and its free-frame list; `free` refills the fill ring | an `rte_mempool`; `free` is `rte_pktmbuf_free` | the rings' buffer pool (`buf_idx` free list) |
//! | [`Frame`] `base`/`cap` | UMEM frame address and frame size | `mbuf->buf_addr`, `buf_len` | `NETMAP_BUF(ring, slot->buf_idx)`, buffer size |
//! | [`Frame`] `head`/`len` | descriptor `addr` offset within the frame, `len` | `data_off`, `data_len` | slot `offset` (0 unless NS_MOREFRAG), `len` |
//! | [`Frame::cookie`] | UMEM address of the frame | the `rte_mbuf *` | `buf_idx` |
//! | `rx_burst` | peek the RX ring, release it, refill the fill ring | `rte_eth_rx_burst` | advance `head` to `tail` on the RX ring |
//! | `tx_burst` | reserve TX descriptors, submit, kick with `sendto` only if the ring asks (`need_wakeup`); reclaim from the completion ring | `rte_eth_tx_burst`, the rest stays with the caller | fill TX slots, `NIOCTXSYNC` per burst |
//! | foreign frames on TX | copied into a UMEM frame unless the pools share the UMEM | copied into an mbuf of the port's pool | copied into a ring buffer (or slot buffer swap within one pool) |
//!
//! Headroom: AF_XDP registers its UMEM with `headroom = 0`, because the
//! kernel already places every received packet `XDP_PACKET_HEADROOM` (256)
//! bytes into its frame, in copy and zero-copy mode alike; DPDK's
//! `RTE_PKTMBUF_HEADROOM` is a build-time 128, so Sluice's mbuf pools have a
//! 128-byte private area right before each buffer that frames use as the
//! other 128 bytes (see `dpdk::mbuf`); netmap buffers get the packet
//! written at an offset.
//!
//! # Ownership rules
//!
//! A frame is owned by exactly one place at a time: a pool's free list, a
//! driver ring, or a [`Burst`]. Handing a frame to `tx_burst` moves it;
//! dropping a frame returns its buffer to the pool, so a buffer is never
//! lost.
//! Frames may cross threads (a memory-ring port hands them to another
//! worker); pools are therefore safe to free into from any thread.

#[cfg(feature = "afxdp")]
pub mod afxdp;
mod common;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod fault;
#[cfg(feature = "netlink")]
pub mod netlink;
pub mod null;
pub mod pcap;
pub mod pool;
pub mod ring;
pub mod spec;
pub mod stats;

use std::fmt;
use std::ptr::NonNull;

pub use pool::{FramePool, HeapPool};
pub use stats::{DropReason, QueueStats, QueueStatsSnapshot};

/// Bytes every frame has in front of the packet.
pub const HEADROOM: usize = 256;
/// Largest burst a queue moves at once.
pub const MAX_BURST: usize = 64;
/// Default burst size of a worker.
pub const DEFAULT_BURST: usize = 32;

/// A packet buffer on loan from a [`FramePool`].
///
/// `base..base+cap` is the whole buffer; the packet is `head..head+len`
/// within it. A frame is not `Clone`: it is the buffer's single owner.
pub struct Frame {
    base: NonNull<u8>,
    cap: u32,
    head: u32,
    len: u32,
    pool: &'static dyn FramePool,
    /// The back-end's own handle for the buffer (UMEM address, mbuf
    /// pointer, netmap buffer index, or the pool's slot index).
    pub cookie: u64,
    /// Port the frame was received on (set by `rx_burst`).
    pub rx_port: u16,
    /// Queue the frame was received on.
    pub rx_queue: u16,
}

// SAFETY: a Frame is the unique owner of its buffer (see the ownership
// rules in the crate docs); moving it to another thread moves that
// ownership, and pools accept frees from any thread.
#[allow(unsafe_code)]
unsafe impl Send for Frame {}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("pool", &self.pool.name())
            .field("cookie", &self.cookie)
            .field("head", &self.head)
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

impl Frame {
    /// Wraps a buffer.
    ///
    /// # Safety
    /// `base..base+cap` must be valid for reads and writes and owned by
    /// `pool` exclusively for this frame until the frame is freed or sent,
    /// and `cookie` must let that pool take the buffer back.
    #[allow(unsafe_code)]
    pub unsafe fn from_raw(
        base: NonNull<u8>,
        cap: u32,
        pool: &'static dyn FramePool,
        cookie: u64,
    ) -> Frame {
        let head = (HEADROOM as u32).min(cap);
        Frame {
            base,
            cap,
            head,
            len: 0,
            pool,
            cookie,
            rx_port: 0,
            rx_queue: 0,
        }
    }

    /// The pool that owns the buffer.
    pub fn pool(&self) -> &'static dyn FramePool {
        self.pool
    }

    /// The packet bytes.
    pub fn data(&self) -> &[u8] {
        &self.buffer()[self.head as usize..(self.head + self.len) as usize]
    }

    /// The packet bytes, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (h, l) = (self.head as usize, self.len as usize);
        &mut self.buffer_mut()[h..h + l]
    }

    /// The whole buffer, headroom and tailroom included.
    pub fn buffer(&self) -> &[u8] {
        // SAFETY: `base..base+cap` is valid and owned by this frame
        // (constructor contract); the borrow is tied to `&self`.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr(), self.cap as usize)
        }
    }

    /// The whole buffer, writable.
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `buffer`, and `&mut self` makes the borrow unique.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr(), self.cap as usize)
        }
    }

    /// Offset of the first packet byte in the buffer.
    pub fn head(&self) -> usize {
        self.head as usize
    }

    /// Packet length.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the packet is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Buffer size.
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// Sets where the packet lies in the buffer.
    ///
    /// # Panics
    /// If `head + len` exceeds the buffer.
    pub fn set_bounds(&mut self, head: usize, len: usize) {
        // `checked_add`: a wrapped sum must not pass the check in release builds.
        let end = head.checked_add(len);
        assert!(
            end.is_some_and(|e| e <= self.cap as usize),
            "frame bounds outside the buffer"
        );
        self.head = head as u32;
        self.len = len as u32;
    }

    /// Replaces the packet with `bytes`, placed after the headroom; returns
    /// false (and changes nothing) when it does not fit.
    pub fn fill(&mut self, bytes: &[u8]) -> bool {
        let head = HEADROOM.min(self.cap as usize);
        if head + bytes.len() > self.cap as usize {
            return false;
        }
        self.buffer_mut()[head..head + bytes.len()].copy_from_slice(bytes);
        self.set_bounds(head, bytes.len());
        true
    }

    /// Returns the buffer to its pool (what dropping the frame does).
    pub fn free(self) {
        drop(self);
    }

    /// Gives up ownership without returning the buffer to its pool: the
    /// caller (a driver handing the buffer to hardware or the kernel) takes
    /// over the duty to bring it home with [`FramePool::recycle`]. Returns
    /// the cookie.
    pub fn into_cookie(self) -> u64 {
        let c = self.cookie;
        std::mem::forget(self);
        c
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        // SAFETY: the cookie is this live frame's own (the pool handed it
        // out with the buffer), and a frame is dropped exactly once;
        // `into_cookie` forgets the frame, so this never runs for a buffer
        // whose return a driver took over.
        #[allow(unsafe_code)]
        unsafe {
            self.pool.recycle(self.cookie)
        };
    }
}

/// A caller-owned, fixed-capacity batch of frames: what a burst moves.
pub struct Burst {
    frames: [Option<Frame>; MAX_BURST],
    len: usize,
    cap: usize,
}

impl fmt::Debug for Burst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Burst")
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

impl Default for Burst {
    fn default() -> Self {
        Burst::new(DEFAULT_BURST)
    }
}

impl Burst {
    /// An empty burst holding at most `cap` frames (clamped to 1..=[`MAX_BURST`]).
    pub fn new(cap: usize) -> Burst {
        Burst {
            frames: std::array::from_fn(|_| None),
            len: 0,
            cap: cap.clamp(1, MAX_BURST),
        }
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no frames.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Room left.
    pub fn room(&self) -> usize {
        self.cap - self.len
    }

    /// Whether it is full.
    pub fn is_full(&self) -> bool {
        self.len == self.cap
    }

    /// Appends a frame; gives it back when the burst is full.
    pub fn push(&mut self, f: Frame) -> Result<(), Frame> {
        if self.len == self.cap {
            return Err(f);
        }
        self.frames[self.len] = Some(f);
        self.len += 1;
        Ok(())
    }

    /// Removes the last frame.
    pub fn pop(&mut self) -> Option<Frame> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.frames[self.len].take()
    }

    /// The frame at `i`.
    pub fn get(&self, i: usize) -> Option<&Frame> {
        self.frames[..self.len].get(i)?.as_ref()
    }

    /// The frame at `i`, writable.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Frame> {
        self.frames[..self.len].get_mut(i)?.as_mut()
    }

    /// Iterates over the frames.
    pub fn iter(&self) -> impl Iterator<Item = &Frame> {
        self.frames[..self.len].iter().flatten()
    }

    /// Iterates over the frames, writable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Frame> {
        self.frames[..self.len].iter_mut().flatten()
    }

    /// Removes the first `n` frames and hands each to `f`, in order; the
    /// rest move to the front.
    pub fn drain_front(&mut self, n: usize, mut f: impl FnMut(Frame)) {
        let n = n.min(self.len);
        for slot in &mut self.frames[..n] {
            if let Some(fr) = slot.take() {
                f(fr);
            }
        }
        self.frames[..self.len].rotate_left(n);
        self.len -= n;
    }

    /// Offers the frames at the front to `f`, in order, until it refuses
    /// one (gives it back) or none are left; the refused frame and those
    /// after it stay in the burst, in order, at the front. Returns how many
    /// `f` took. This is the shape of a TX ring that fills up mid-burst.
    pub fn drain_front_while(&mut self, mut f: impl FnMut(Frame) -> Result<(), Frame>) -> usize {
        let mut taken = 0;
        while taken < self.len {
            let Some(fr) = self.frames[taken].take() else {
                break;
            };
            if let Err(fr) = f(fr) {
                self.frames[taken] = Some(fr);
                break;
            }
            taken += 1;
        }
        self.frames[..self.len].rotate_left(taken);
        self.len -= taken;
        taken
    }

    /// Frees every frame to its pool.
    pub fn free_all(&mut self) {
        self.drain_front(self.len, Frame::free);
    }
}

/// What kind of port, and how it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// The name given at setup (`ring:a`, `afxdp:eth0`, ...).
    pub name: String,
    /// Driver (`ring`, `null`, `pcap`, `afxdp`, `dpdk`, `netmap`).
    pub driver: &'static str,
    /// Interface index programs use to name the port (`bpf_redirect`,
    /// devmap values); Sluice assigns one when the port has no kernel
    /// interface.
    pub ifindex: u32,
    /// RX queues.
    pub rx_queues: u16,
    /// TX queues.
    pub tx_queues: u16,
    /// How the back-end runs (`native`, `generic`, `zero-copy`, `copy`,
    /// `memory`, `file`).
    pub mode: String,
}

/// Why a port or queue cannot be opened: one line naming the port and the
/// problem.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The port specification is malformed (or names ports that do not
    /// fit together, like two rings claiming the same peer).
    #[error("port spec \"{spec}\": {reason}")]
    BadSpec {
        /// The specification.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// A queue index beyond the port's queues.
    #[error("port {port}: queue {queue} out of range (it has {count})")]
    QueueOutOfRange {
        /// Port name.
        port: String,
        /// Queue asked for.
        queue: u16,
        /// Queues the port has.
        count: u16,
    },
    /// The queue is already taken by another worker.
    #[error("port {port}: queue {queue} is already in use")]
    QueueInUse {
        /// Port name.
        port: String,
        /// Queue.
        queue: u16,
    },
    /// The port's configuration cannot be used (a size out of range, a
    /// pool that cannot be made).
    #[error("port {port}: {reason}")]
    Config {
        /// Port name.
        port: String,
        /// What is wrong.
        reason: String,
    },
    /// A capture file cannot be read or written.
    #[error("port {port}: {source}")]
    Capture {
        /// Port name.
        port: String,
        /// What is wrong with the file (it names the file).
        source: pcap::PcapError,
    },
    /// An operating-system call failed.
    #[error("port {port}: {what}: {source}")]
    Os {
        /// Port name.
        port: String,
        /// What was attempted.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// An RX queue, owned by one worker.
pub trait RxQueue: Send {
    /// Moves up to `burst.room()` received frames into `burst`; returns how
    /// many. Never blocks, allocates or logs.
    fn rx_burst(&mut self, burst: &mut Burst) -> usize;
    /// The queue's counters.
    fn stats(&self) -> &QueueStats;
}

/// A TX queue, owned by one worker.
pub trait TxQueue: Send {
    /// Sends frames from the front of `burst`, as many as the queue takes;
    /// returns how many. What it could not take stays in `burst`, in order.
    /// Never blocks, allocates or logs.
    fn tx_burst(&mut self, burst: &mut Burst) -> usize;
    /// Work that must happen even when nothing is sent (reclaiming
    /// completed buffers, a pending kick). Called once per worker loop.
    fn poll(&mut self) {}
    /// The queue's counters.
    fn stats(&self) -> &QueueStats;
}

impl<Q: RxQueue + ?Sized> RxQueue for Box<Q> {
    #[inline]
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        (**self).rx_burst(burst)
    }
    fn stats(&self) -> &QueueStats {
        (**self).stats()
    }
}

impl<Q: TxQueue + ?Sized> TxQueue for Box<Q> {
    #[inline]
    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        (**self).tx_burst(burst)
    }
    fn poll(&mut self) {
        (**self).poll()
    }
    fn stats(&self) -> &QueueStats {
        (**self).stats()
    }
}

/// A port: a set of RX and TX queues.
pub trait Port: Send + Sync {
    /// What the port is.
    fn info(&self) -> &PortInfo;
    /// Opens RX queue `q` for the calling worker.
    ///
    /// # Errors
    /// [`PortError`] when the queue does not exist or is taken.
    fn open_rx(&self, q: u16) -> Result<Box<dyn RxQueue>, PortError>;
    /// Opens TX queue `q` for the calling worker.
    ///
    /// # Errors
    /// [`PortError`] when the queue does not exist or is taken.
    fn open_tx(&self, q: u16) -> Result<Box<dyn TxQueue>, PortError>;
    /// Every queue's counters, for the control side (the workers own the
    /// queues; ports that share their counters with the queues through an
    /// `Arc` report them here). Empty by default.
    fn queue_stats(&self) -> Vec<QueueReport> {
        Vec::new()
    }
    /// For a port whose RX ends (a null port with a limit, a pcap file
    /// played a finite number of times): whether it has handed out every
    /// packet. `None` for ports that can always receive more.
    fn is_exhausted(&self) -> Option<bool> {
        None
    }
}

/// One queue's counters, as a port reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueReport {
    /// RX or TX.
    pub direction: Direction,
    /// Queue index.
    pub queue: u16,
    /// The counters.
    pub stats: QueueStatsSnapshot,
}

/// Which way a queue moves packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Receive.
    Rx,
    /// Transmit.
    Tx,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn burst_of(pool: &'static HeapPool, tags: &[u8]) -> Burst {
        let mut b = Burst::new(MAX_BURST);
        for &t in tags {
            let mut f = pool.alloc().unwrap();
            assert!(f.fill(&[t; 64]));
            b.push(f).unwrap();
        }
        b
    }

    #[test]
    fn drain_front_while_stops_at_the_first_refusal() {
        let pool = HeapPool::new("lib-drain", 8, 1024).unwrap();
        let mut b = burst_of(pool, &[0, 1, 2, 3, 4]);
        let mut took = Vec::new();
        let n = b.drain_front_while(|f| {
            if f.data()[0] == 3 {
                return Err(f);
            }
            took.push(f.data()[0]);
            Ok(())
        });
        assert_eq!((n, took), (3, vec![0, 1, 2]));
        let left: Vec<u8> = b.iter().map(|f| f.data()[0]).collect();
        assert_eq!(left, [3, 4]);
        assert_eq!(b.drain_front_while(Err), 0);
        assert_eq!(b.len(), 2);
        assert_eq!(b.drain_front_while(|_| Ok(())), 2);
        assert!(b.is_empty());
        assert_eq!(pool.available(), 8);
    }

    #[test]
    #[should_panic(expected = "frame bounds outside the buffer")]
    fn set_bounds_refuses_a_wrapping_length() {
        let pool = HeapPool::new("lib-bounds", 1, 1024).unwrap();
        pool.alloc().unwrap().set_bounds(8, usize::MAX - 4);
    }
}
