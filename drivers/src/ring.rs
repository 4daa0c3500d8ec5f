//! In-memory ring ports, like DPDK's `net_ring`: TX on one port is RX on
//! its peer, with no copy.
//!
//! Each direction of each queue is one bounded lock-free ring
//! (`crossbeam_queue::ArrayQueue<Frame>`). Transmitting moves the [`Frame`]
//! itself into the peer's RX ring, so a packet crosses ports (and threads)
//! without touching its bytes, and its buffer still goes home to the pool
//! it came from when whoever ends up with it drops it.
//!
//! Three shapes:
//!
//! * [`RingPort::pair`]: two ports back to back, like a veth pair. TX queue
//!   `q` of one feeds RX queue `q` of the other.
//! * [`RingPort::with_endpoint`]: one port whose far side is a
//!   [`RingEndpoint`], for tests and tools that inject traffic and collect
//!   what the port sent.
//! * [`RingPort::loopback`]: TX queue `q` feeds the port's own RX queue `q`
//!   (what DPDK's `net_ring` does when a port is made from one ring).
//!
//! ```
//! use sluice_drivers::ring::RingPort;
//! use sluice_drivers::{Burst, FramePool, HeapPool, Port};
//!
//! let (a, b) = RingPort::pair("a", "b", 1, 256);
//! let pool = HeapPool::new("doc", 64, 2048).unwrap();
//! let (mut tx, mut rx) = (a.open_tx(0).unwrap(), b.open_rx(0).unwrap());
//! let mut burst = Burst::new(32);
//! let mut frame = pool.alloc().unwrap();
//! frame.fill(b"hello");
//! burst.push(frame).unwrap();
//! assert_eq!(tx.tx_burst(&mut burst), 1);
//! assert_eq!(rx.rx_burst(&mut burst), 1);
//! assert_eq!(burst.get(0).unwrap().data(), b"hello");
//! ```
//!
//! # Who counts what
//!
//! A ring never drops on its own: a full ring is backpressure returned to
//! whoever enqueues.
//!
//! * `tx_burst` moves frames until the peer's ring is full and leaves the
//!   rest in the caller's burst, in order. It counts what it moved (packets
//!   and bytes on the TX queue's stats) and **no drop**: the caller decides
//!   whether to retry next loop or give up. A worker that gives up frees
//!   the frames and counts them itself, as
//!   `txq.stats().drop_n(DropReason::TxRingFull, n)` (it owns the queue, so
//!   the single-writer rule of [`QueueStats`] holds). This is
//!   `rte_eth_tx_burst`'s contract, and it keeps one drop counted once.
//! * `rx_burst` counts what it received. It never counts
//!   [`DropReason::RxRingFull`](crate::DropReason::RxRingFull): a frame that
//!   did not fit was never enqueued, and the sender already knows (its
//!   `tx_burst` left it in the burst). The RX side cannot count it anyway
//!   without breaking the single-writer rule: the failure happens on the
//!   sender's thread.
//! * [`RingEndpoint::send`] hands a frame that does not fit back to its
//!   caller (`Err(frame)`), and counts nothing; a tool that then drops it
//!   counts it where it likes.
//!
//! # Queue ownership
//!
//! Each queue has at most one open handle at a time ([`PortError::QueueInUse`]
//! otherwise); dropping the handle gives the queue back. Frames still in a
//! ring when the ports are dropped go back to their pools.

use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::common::{next_ifindex, Claim, Claims};
use crate::{
    Burst, Frame, FramePool, HeapPool, Port, PortError, PortInfo, QueueStats, RxQueue, TxQueue,
    MAX_BURST,
};

/// One direction of a port: ring `q` carries queue `q`'s frames.
type Rings = Arc<[ArrayQueue<Frame>]>;

/// Buffer size of a [`RingEndpoint`]'s pool: a 2048-byte data room (what
/// DPDK's default mbufs give) after the [`HEADROOM`](crate::HEADROOM).
pub const ENDPOINT_FRAME_SIZE: usize = 2048 + crate::HEADROOM;

fn rings(queues: u16, ring_size: usize) -> Rings {
    assert!(queues > 0, "a ring port needs at least one queue");
    assert!(ring_size > 0, "a ring needs room for at least one frame");
    (0..queues).map(|_| ArrayQueue::new(ring_size)).collect()
}

/// A port whose queues are in-memory rings (see the module docs).
pub struct RingPort {
    info: PortInfo,
    /// Frames arriving at this port.
    rx: Rings,
    /// Where this port's TX goes (the peer's `rx`, the endpoint's inbox,
    /// or `rx` itself for a loopback).
    tx: Rings,
    rx_claims: Arc<Claims>,
    tx_claims: Arc<Claims>,
}

impl std::fmt::Debug for RingPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingPort")
            .field("info", &self.info)
            .finish()
    }
}

impl RingPort {
    fn new(name: &str, rx: Rings, tx: Rings) -> Arc<RingPort> {
        let queues = rx.len() as u16;
        Arc::new(RingPort {
            info: PortInfo {
                name: name.to_string(),
                driver: "ring",
                ifindex: next_ifindex(),
                rx_queues: queues,
                tx_queues: queues,
                mode: "memory".to_string(),
            },
            rx,
            tx,
            rx_claims: Claims::new(name, queues),
            tx_claims: Claims::new(name, queues),
        })
    }

    /// Two ports back to back, each with `queues` RX and TX queues of
    /// `ring_size` frames: what one transmits on queue `q`, the other
    /// receives on queue `q`.
    ///
    /// # Panics
    /// If `queues` or `ring_size` is 0 ([`crate::spec`] rejects both before
    /// it gets here).
    pub fn pair(
        name_a: &str,
        name_b: &str,
        queues: u16,
        ring_size: usize,
    ) -> (Arc<RingPort>, Arc<RingPort>) {
        let a_to_b = rings(queues, ring_size);
        let b_to_a = rings(queues, ring_size);
        let a = RingPort::new(name_a, Arc::clone(&b_to_a), Arc::clone(&a_to_b));
        let b = RingPort::new(name_b, a_to_b, b_to_a);
        (a, b)
    }

    /// A port whose TX queue `q` feeds its own RX queue `q`.
    ///
    /// # Panics
    /// If `queues` or `ring_size` is 0.
    pub fn loopback(name: &str, queues: u16, ring_size: usize) -> Arc<RingPort> {
        let r = rings(queues, ring_size);
        RingPort::new(name, Arc::clone(&r), r)
    }

    /// A port and its far side, for tests and tools: the endpoint puts
    /// frames into the port's RX rings and takes the frames the port
    /// transmitted. The endpoint brings a [`HeapPool`] of
    /// [`ENDPOINT_FRAME_SIZE`]-byte frames, enough to fill every ring of
    /// both directions twice over.
    ///
    /// Pools live for the whole process; the endpoint's pool keeps its
    /// buffers until [`HeapPool::release`] is called on it.
    ///
    /// # Panics
    /// If `queues` or `ring_size` is 0, or the pool's memory cannot be had.
    pub fn with_endpoint(
        name: &str,
        queues: u16,
        ring_size: usize,
    ) -> (Arc<RingPort>, RingEndpoint) {
        let to_port = rings(queues, ring_size);
        let from_port = rings(queues, ring_size);
        let port = RingPort::new(name, Arc::clone(&to_port), Arc::clone(&from_port));
        let frames = (4 * usize::from(queues))
            .saturating_mul(ring_size)
            .saturating_add(4 * MAX_BURST)
            .min(1 << 24);
        let pool = HeapPool::new(&format!("{name}.endpoint"), frames, ENDPOINT_FRAME_SIZE)
            .unwrap_or_else(|e| panic!("ring endpoint {name}: {e}"));
        let ep = RingEndpoint {
            name: name.to_string(),
            to_port,
            from_port,
            pool,
        };
        (port, ep)
    }

    /// Frames waiting in RX ring `q` (0 for a queue that does not exist).
    pub fn rx_pending(&self, q: u16) -> usize {
        self.rx.get(usize::from(q)).map_or(0, ArrayQueue::len)
    }

    /// Size of each ring, in frames.
    pub fn ring_size(&self) -> usize {
        self.rx[0].capacity()
    }
}

impl Port for RingPort {
    fn info(&self) -> &PortInfo {
        &self.info
    }

    fn open_rx(&self, q: u16) -> Result<Box<dyn RxQueue>, PortError> {
        let claim = self.rx_claims.claim(q)?;
        Ok(Box::new(RingRx {
            rings: Arc::clone(&self.rx),
            claim,
            stats: QueueStats::default(),
        }))
    }

    fn open_tx(&self, q: u16) -> Result<Box<dyn TxQueue>, PortError> {
        let claim = self.tx_claims.claim(q)?;
        Ok(Box::new(RingTx {
            rings: Arc::clone(&self.tx),
            claim,
            stats: QueueStats::default(),
        }))
    }
}

/// Moves up to `burst.room()` frames from `ring` into `burst`, stamping the
/// queue; returns (frames, bytes).
fn dequeue(ring: &ArrayQueue<Frame>, q: u16, burst: &mut Burst) -> (usize, u64) {
    let (mut n, mut bytes) = (0, 0u64);
    while !burst.is_full() {
        let Some(mut f) = ring.pop() else {
            break;
        };
        f.rx_queue = q;
        bytes += f.len() as u64;
        // Cannot fail: the burst has room.
        let _ = burst.push(f);
        n += 1;
    }
    (n, bytes)
}

/// Moves frames from the front of `burst` into `ring` until it is full;
/// returns (frames, bytes).
fn enqueue(ring: &ArrayQueue<Frame>, burst: &mut Burst) -> (usize, u64) {
    let mut bytes = 0u64;
    let n = burst.drain_front_while(|f| {
        let len = f.len() as u64;
        ring.push(f)?;
        bytes += len;
        Ok(())
    });
    (n, bytes)
}

struct RingRx {
    rings: Rings,
    claim: Claim,
    stats: QueueStats,
}

impl RxQueue for RingRx {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let q = self.claim.queue();
        let (n, bytes) = dequeue(&self.rings[usize::from(q)], q, burst);
        if n > 0 {
            self.stats.add(n as u64, bytes);
        }
        n
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }
}

struct RingTx {
    rings: Rings,
    claim: Claim,
    stats: QueueStats,
}

impl TxQueue for RingTx {
    /// Takes frames until the peer's ring is full; counts no drop for what
    /// it leaves (see the module docs).
    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let (n, bytes) = enqueue(&self.rings[usize::from(self.claim.queue())], burst);
        if n > 0 {
            self.stats.add(n as u64, bytes);
        }
        n
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }
}

/// The far side of a [`RingPort`] made by [`RingPort::with_endpoint`]:
/// what it sends, the port receives; what the port transmits, it receives.
///
/// Every method takes `&self` and may be called from any thread (the rings
/// are multi-producer, multi-consumer). A queue index beyond the port's
/// queues sends nothing and receives nothing.
pub struct RingEndpoint {
    name: String,
    to_port: Rings,
    from_port: Rings,
    pool: &'static HeapPool,
}

impl std::fmt::Debug for RingEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingEndpoint")
            .field("port", &self.name)
            .finish()
    }
}

impl RingEndpoint {
    /// Puts `frame` in the port's RX ring `queue`.
    ///
    /// # Errors
    /// Gives the frame back when the ring is full (or the queue does not
    /// exist); nothing is counted (see the module docs).
    pub fn send(&self, queue: u16, frame: Frame) -> Result<(), Frame> {
        match self.to_port.get(usize::from(queue)) {
            Some(ring) => ring.push(frame),
            None => Err(frame),
        }
    }

    /// Moves frames from the front of `burst` into the port's RX ring
    /// `queue` until it is full; returns how many. The rest stay in
    /// `burst`.
    pub fn send_burst(&self, queue: u16, burst: &mut Burst) -> usize {
        self.to_port
            .get(usize::from(queue))
            .map_or(0, |r| enqueue(r, burst).0)
    }

    /// Takes the oldest frame the port transmitted on `queue`.
    pub fn recv(&self, queue: u16) -> Option<Frame> {
        self.from_port.get(usize::from(queue))?.pop()
    }

    /// Moves frames the port transmitted on `queue` into `burst`, up to its
    /// room; returns how many.
    pub fn recv_burst(&self, queue: u16, burst: &mut Burst) -> usize {
        self.from_port
            .get(usize::from(queue))
            .map_or(0, |r| dequeue(r, queue, burst).0)
    }

    /// Frames the port transmitted on `queue` and nobody took yet.
    pub fn tx_pending(&self, queue: u16) -> usize {
        self.from_port
            .get(usize::from(queue))
            .map_or(0, ArrayQueue::len)
    }

    /// The endpoint's pool, to allocate frames to send.
    pub fn pool(&self) -> &'static HeapPool {
        self.pool
    }

    /// A frame from the endpoint's pool holding `bytes` (after the
    /// headroom); `None` when the pool is empty or `bytes` does not fit.
    pub fn frame(&self, bytes: &[u8]) -> Option<Frame> {
        let mut f = self.pool.alloc()?;
        f.fill(bytes).then_some(f)
    }

    /// Queues per direction.
    pub fn queues(&self) -> u16 {
        self.to_port.len() as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DropReason;

    fn pkt(tag: u32, len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7)).collect();
        v[..4].copy_from_slice(&tag.to_be_bytes());
        v
    }

    fn tag(f: &Frame) -> u32 {
        u32::from_be_bytes(f.data()[..4].try_into().unwrap())
    }

    #[test]
    fn a_pair_moves_frames_both_ways_in_order_without_copying() {
        let (a, b) = RingPort::pair("a", "b", 2, 64);
        let pool = HeapPool::new("ring-pair", 128, 2048).unwrap();
        for (from, to, q) in [(&a, &b, 0u16), (&b, &a, 1u16)] {
            let mut tx = from.open_tx(q).unwrap();
            let mut rx = to.open_rx(q).unwrap();
            let mut burst = Burst::new(32);
            let mut bases = Vec::new();
            for i in 0..20u32 {
                let mut f = pool.alloc().unwrap();
                assert!(f.fill(&pkt(i, 60 + i as usize)));
                bases.push(f.buffer().as_ptr() as usize);
                burst.push(f).unwrap();
            }
            assert_eq!(tx.tx_burst(&mut burst), 20);
            assert!(burst.is_empty());
            assert_eq!(to.rx_pending(q), 20);
            // Nothing arrives on the other queue or back at the sender.
            assert_eq!(to.rx_pending(1 - q), 0);
            assert_eq!(from.rx_pending(q), 0);

            let mut got = Burst::new(8);
            let mut seen = 0u32;
            while rx.rx_burst(&mut got) > 0 {
                for f in got.iter() {
                    assert_eq!(tag(f), seen);
                    assert_eq!(f.data(), &pkt(seen, 60 + seen as usize)[..]);
                    assert_eq!(f.rx_queue, q);
                    // Zero copy: the very buffer that was sent.
                    assert_eq!(f.buffer().as_ptr() as usize, bases[seen as usize]);
                    seen += 1;
                }
                got.free_all();
            }
            assert_eq!(seen, 20);
            let bytes: u64 = (0..20).map(|i| 60 + i).sum();
            assert_eq!(tx.stats().snapshot().packets, 20);
            assert_eq!(tx.stats().snapshot().bytes, bytes);
            assert_eq!(rx.stats().snapshot().packets, 20);
            assert_eq!(rx.stats().snapshot().bytes, bytes);
        }
        assert_eq!(pool.available(), 128);
    }

    #[test]
    fn a_full_ring_leaves_the_rest_in_the_burst_and_counts_no_drop() {
        let (a, b) = RingPort::pair("full-a", "full-b", 1, 4);
        let pool = HeapPool::new("ring-full", 16, 1024).unwrap();
        let mut tx = a.open_tx(0).unwrap();
        let mut burst = Burst::new(8);
        for i in 0..6 {
            let mut f = pool.alloc().unwrap();
            f.fill(&pkt(i, 64));
            burst.push(f).unwrap();
        }
        assert_eq!(tx.tx_burst(&mut burst), 4);
        assert_eq!(burst.len(), 2);
        assert_eq!(tag(burst.get(0).unwrap()), 4);
        assert_eq!(tag(burst.get(1).unwrap()), 5);
        assert_eq!(tx.tx_burst(&mut burst), 0, "still full");
        let s = tx.stats().snapshot();
        assert_eq!((s.packets, s.total_dropped()), (4, 0));

        // The receiver makes room; the rest go through, still in order.
        let mut rx = b.open_rx(0).unwrap();
        let mut got = Burst::new(2);
        assert_eq!(rx.rx_burst(&mut got), 2);
        assert_eq!(tx.tx_burst(&mut burst), 2);
        assert!(burst.is_empty());
        let mut order: Vec<u32> = got.iter().map(tag).collect();
        got.free_all();
        while rx.rx_burst(&mut got) > 0 {
            order.extend(got.iter().map(tag));
            got.free_all();
        }
        assert_eq!(order, [0, 1, 2, 3, 4, 5]);

        assert_eq!(tx.stats().snapshot().dropped(DropReason::TxRingFull), 0);
        assert_eq!(pool.available(), 16);
    }

    #[test]
    fn a_queue_is_opened_once_at_a_time() {
        let (a, _b) = RingPort::pair("once-a", "once-b", 2, 8);
        let rx = a.open_rx(1).unwrap();
        let e = a.open_rx(1).err().unwrap();
        assert!(matches!(e, PortError::QueueInUse { queue: 1, .. }), "{e}");
        assert_eq!(e.to_string(), "port once-a: queue 1 is already in use");
        // RX and TX queues are claimed separately.
        let _tx = a.open_tx(1).unwrap();
        assert!(matches!(a.open_tx(1), Err(PortError::QueueInUse { .. })));
        assert!(matches!(
            a.open_rx(2),
            Err(PortError::QueueOutOfRange { count: 2, .. })
        ));
        drop(rx);
        a.open_rx(1).unwrap();
    }

    #[test]
    fn ports_describe_themselves() {
        let (a, b) = RingPort::pair("info-a", "info-b", 3, 8);
        let i = a.info();
        assert_eq!(
            (i.driver, i.mode.as_str(), i.rx_queues, i.tx_queues),
            ("ring", "memory", 3, 3)
        );
        assert!(i.ifindex >= 1000);
        assert_ne!(i.ifindex, b.info().ifindex);
        assert_eq!(a.ring_size(), 8);
    }

    #[test]
    fn an_endpoint_feeds_and_drains_its_port() {
        let (port, ep) = RingPort::with_endpoint("ep", 2, 4);
        let full = ep.pool().available();
        let mut rx = port.open_rx(1).unwrap();
        let mut tx = port.open_tx(0).unwrap();
        for i in 0..4 {
            ep.send(1, ep.frame(&pkt(i, 64)).unwrap()).unwrap();
        }
        let extra = ep.frame(&pkt(99, 64)).unwrap();
        let back = ep.send(1, extra).unwrap_err();
        assert_eq!(tag(&back), 99, "a full ring hands the frame back");
        assert!(ep.send(7, back).is_err(), "no such queue");

        let mut burst = Burst::new(16);
        assert_eq!(rx.rx_burst(&mut burst), 4);
        assert_eq!(rx.stats().snapshot().total_dropped(), 0);
        // Forward everything out of TX queue 0: it holds 4.
        assert_eq!(tx.tx_burst(&mut burst), 4);
        assert_eq!(ep.tx_pending(0), 4);
        assert_eq!(ep.recv(1).map(|f| tag(&f)), None);
        let tags: Vec<u32> = std::iter::from_fn(|| ep.recv(0)).map(|f| tag(&f)).collect();
        assert_eq!(tags, [0, 1, 2, 3]);

        // Bursts through the endpoint.
        for i in 0..3 {
            burst.push(ep.frame(&pkt(i, 80)).unwrap()).unwrap();
        }
        assert_eq!(ep.send_burst(0, &mut burst), 3);
        let mut rx0 = port.open_rx(0).unwrap();
        assert_eq!(rx0.rx_burst(&mut burst), 3);
        assert_eq!(tx.tx_burst(&mut burst), 3);
        assert_eq!(ep.recv_burst(0, &mut burst), 3);
        burst.free_all();
        drop((rx, rx0));
        assert_eq!(ep.pool().available(), full);
    }

    #[test]
    fn a_loopback_port_receives_what_it_sends() {
        let port = RingPort::loopback("lo", 1, 8);
        let pool = HeapPool::new("ring-lo", 8, 1024).unwrap();
        let mut tx = port.open_tx(0).unwrap();
        let mut rx = port.open_rx(0).unwrap();
        let mut burst = Burst::new(4);
        let mut f = pool.alloc().unwrap();
        f.fill(&pkt(5, 64));
        burst.push(f).unwrap();
        assert_eq!(tx.tx_burst(&mut burst), 1);
        assert_eq!(rx.rx_burst(&mut burst), 1);
        assert_eq!(tag(burst.get(0).unwrap()), 5);
    }

    #[test]
    fn frames_left_in_rings_go_home_when_the_ports_go() {
        let pool = HeapPool::new("ring-home", 8, 1024).unwrap();
        {
            let (a, _b) = RingPort::pair("home-a", "home-b", 1, 8);
            let mut tx = a.open_tx(0).unwrap();
            let mut burst = Burst::new(8);
            while let Some(f) = pool.alloc() {
                burst.push(f).unwrap();
            }
            assert_eq!(tx.tx_burst(&mut burst), 8);
            assert_eq!(pool.available(), 0);
        }
        assert_eq!(pool.available(), 8);
    }

    #[test]
    fn frames_cross_threads_in_order() {
        const N: u32 = 20_000;
        let (a, b) = RingPort::pair("thr-a", "thr-b", 1, 256);
        let pool = HeapPool::new("ring-thr", 1024, 1024).unwrap();
        let mut tx = a.open_tx(0).unwrap();
        let mut rx = b.open_rx(0).unwrap();
        let sender = std::thread::spawn(move || {
            let mut burst = Burst::new(32);
            let mut next = 0;
            while next < N || !burst.is_empty() {
                while next < N && !burst.is_full() {
                    let Some(mut f) = pool.alloc() else { break };
                    f.fill(&next.to_be_bytes());
                    burst.push(f).unwrap();
                    next += 1;
                }
                if tx.tx_burst(&mut burst) == 0 {
                    std::thread::yield_now();
                }
            }
        });
        let mut burst = Burst::new(32);
        let mut expect = 0;
        while expect < N {
            if rx.rx_burst(&mut burst) == 0 {
                std::thread::yield_now();
            }
            burst.drain_front(burst.len(), |f| {
                assert_eq!(tag(&f), expect);
                expect += 1;
            });
        }
        sender.join().unwrap();
        assert_eq!(pool.available(), 1024);
    }
}
