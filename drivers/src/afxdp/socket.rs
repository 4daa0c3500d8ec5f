//! One XDP socket per (interface, queue): its creation, and its RX and TX
//! halves as Sluice queues.
//!
//! A socket's four rings split into two halves that may live on different
//! worker threads: the RX half owns the RX ring and the fill ring, the TX
//! half owns the TX ring and the completion ring. Each ring has exactly
//! one user-space side, so no ring needs a lock; the halves meet only at
//! the UMEM's free list.
//!
//! The halves hold the socket's [`SocketCore`] (descriptor, counters,
//! statistics) through an `Arc`, so the socket is closed only after both
//! halves' rings are unmapped — a mapping keeps the kernel socket alive —
//! and the UMEM is told what the socket still had in the kernel.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ring::{map_len, ConsRing, ProdRing, RingLayoutError};
use super::sys::{
    Fd, Mapping, RingKind, SockaddrXdp, Sys, XdpDesc, XdpStatistics, AF_XDP, XDP_COPY,
    XDP_OPTIONS_ZEROCOPY, XDP_SHARED_UMEM, XDP_USE_NEED_WAKEUP, XDP_ZEROCOPY,
};
use super::umem::Umem;
use super::xdp_prog::Attachment;
use crate::{Burst, DropReason, QueueStats, RxQueue, TxQueue};

/// How sockets bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BindMode {
    /// Zero-copy if the driver supports it, else copy (the kernel decides;
    /// the outcome is logged and shown in the port's mode).
    #[default]
    Auto,
    /// Zero-copy or fail.
    ZeroCopy,
    /// Copy mode.
    Copy,
}

impl BindMode {
    /// Its name in port specifications.
    pub fn name(self) -> &'static str {
        match self {
            BindMode::Auto => "auto",
            BindMode::ZeroCopy => "zerocopy",
            BindMode::Copy => "copy",
        }
    }
}

/// Most fill-ring entries one `rx_burst` posts.
const REFILL_MAX: u32 = 2 * crate::MAX_BURST as u32;
/// Polls between looks at the clock for the statistics refresh (a power
/// of two).
const STATS_POLLS: u32 = 1024;
/// How often the kernel's statistics are read.
const STATS_PERIOD: Duration = Duration::from_millis(100);
/// Empty polls between two fill-ring wake-ups when nothing new was posted
/// (a power of two).
const RX_KICK_EVERY: u32 = 64;

/// Single-writer counter add (see [`QueueStats`]).
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// What a socket moved into and out of the kernel, for the UMEM's
/// accounting; each counter has one writer (the half named).
#[derive(Debug, Default)]
struct Moves {
    /// RX half: frames put on the fill ring.
    filled: AtomicU64,
    /// RX half: descriptors taken off the RX ring.
    received: AtomicU64,
    /// TX half: descriptors put on the TX ring.
    sent: AtomicU64,
    /// TX half: addresses taken off the completion ring.
    completed: AtomicU64,
}

/// A socket, shared by its two halves and its port.
#[derive(Debug)]
pub(super) struct SocketCore {
    /// `None` only while dropping.
    fd: Option<Fd>,
    raw_fd: RawFd,
    sys: Arc<dyn Sys>,
    /// The port's queue number.
    pub(super) queue: u16,
    /// The interface's queue it is bound to.
    pub(super) kernel_queue: u32,
    pub(super) umem: &'static Umem,
    pub(super) zero_copy: bool,
    pub(super) need_wakeup: bool,
    pub(super) rx_stats: QueueStats,
    pub(super) tx_stats: QueueStats,
    moves: Moves,
    /// `sendto` wake-ups (TX half).
    pub(super) tx_kicks: AtomicU64,
    /// `recvfrom` wake-ups (RX half).
    pub(super) rx_kicks: AtomicU64,
    /// Wake-ups that failed for a reason other than "try again" (TX half).
    pub(super) kick_errors: AtomicU64,
    /// Keeps the program (and its XSKMAP slot) alive while the socket is.
    _attachment: Arc<Attachment>,
}

impl SocketCore {
    /// The kernel's statistics for this socket.
    ///
    /// # Errors
    /// The `getsockopt` error.
    pub(super) fn statistics(&self) -> io::Result<XdpStatistics> {
        self.sys.statistics(self.raw_fd)
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        self.raw_fd
    }
}

impl Drop for SocketCore {
    fn drop(&mut self) {
        let m = &self.moves;
        let in_kernel = m.filled.load(Ordering::Relaxed) as i64
            + m.sent.load(Ordering::Relaxed) as i64
            - m.received.load(Ordering::Relaxed) as i64
            - m.completed.load(Ordering::Relaxed) as i64;
        // Close first: once the descriptor (and, before it, every ring
        // mapping) is gone, the kernel no longer uses this socket's frames.
        drop(self.fd.take());
        self.umem.socket_closed(in_kernel);
    }
}

/// The RX half's rings. The core comes last: it is released after the
/// rings are unmapped.
pub(super) struct RxRings {
    rx: ConsRing<XdpDesc>,
    fill: ProdRing<u64>,
    core: Arc<SocketCore>,
}

/// The TX half's rings, core last.
pub(super) struct TxRings {
    tx: ProdRing<XdpDesc>,
    completion: ConsRing<u64>,
    core: Arc<SocketCore>,
}

/// A place a half's rings wait while no queue handle holds them.
pub(super) type Home<T> = Arc<Mutex<Option<T>>>;

/// A new, bound socket.
pub(super) struct NewSocket {
    pub(super) core: Arc<SocketCore>,
    pub(super) rx: RxRings,
    pub(super) tx: TxRings,
}

/// Which step of socket setup failed.
#[derive(Debug)]
pub(super) enum SocketError {
    /// `socket(AF_XDP)`.
    Socket(io::Error),
    /// `XDP_UMEM_REG`.
    Register(io::Error),
    /// A ring size, the mmap offsets or a ring mapping.
    Rings(&'static str, io::Error),
    /// The kernel's offsets do not fit.
    Layout(RingLayoutError),
    /// `bind`.
    Bind(io::Error),
}

/// What a socket is made with.
pub(super) struct SocketParams<'a> {
    pub sys: &'a Arc<dyn Sys>,
    pub ifindex: u32,
    pub kernel_queue: u32,
    pub queue: u16,
    pub umem: &'static Umem,
    /// Share the UMEM registered by this socket; `None`: register it here.
    pub shared_with: Option<RawFd>,
    pub ring_size: u32,
    pub bind: BindMode,
    pub need_wakeup: bool,
    pub attachment: &'a Arc<Attachment>,
}

fn map_ring(
    sys: &Arc<dyn Sys>,
    fd: RawFd,
    kind: RingKind,
    offsets: &super::sys::MmapOffsets,
    size: u32,
) -> Result<Mapping, SocketError> {
    let len = map_len(kind, offsets, size);
    let what = match kind {
        RingKind::Rx => "mapping the RX ring",
        RingKind::Tx => "mapping the TX ring",
        RingKind::Fill => "mapping the fill ring",
        RingKind::Completion => "mapping the completion ring",
    };
    let addr = sys
        .mmap_ring(fd, kind, len)
        .map_err(|e| SocketError::Rings(what, e))?;
    Ok(Mapping::new(addr, len, Arc::clone(sys)))
}

/// Creates, maps, binds and fills one socket.
///
/// # Errors
/// [`SocketError`] naming the step; everything made so far is undone.
pub(super) fn create(p: &SocketParams<'_>) -> Result<NewSocket, SocketError> {
    let sys = p.sys;
    let fd = Fd::new(
        sys.xsk_socket().map_err(SocketError::Socket)?,
        Arc::clone(sys),
    );
    let raw = fd.raw();
    if p.shared_with.is_none() {
        sys.umem_register(raw, &p.umem.registration())
            .map_err(SocketError::Register)?;
    }
    for (kind, what) in [
        (RingKind::Fill, "sizing the fill ring"),
        (RingKind::Completion, "sizing the completion ring"),
        (RingKind::Rx, "sizing the RX ring"),
        (RingKind::Tx, "sizing the TX ring"),
    ] {
        sys.set_ring_size(raw, kind, p.ring_size)
            .map_err(|e| SocketError::Rings(what, e))?;
    }
    let offsets = sys
        .mmap_offsets(raw)
        .map_err(|e| SocketError::Rings("reading the ring offsets", e))?;
    let n = p.ring_size;
    let layout = SocketError::Layout;
    let fill = ProdRing::new(
        RingKind::Fill,
        map_ring(sys, raw, RingKind::Fill, &offsets, n)?,
        &offsets,
        n,
    )
    .map_err(layout)?;
    let completion = ConsRing::new(
        RingKind::Completion,
        map_ring(sys, raw, RingKind::Completion, &offsets, n)?,
        &offsets,
        n,
    )
    .map_err(layout)?;
    let rx = ConsRing::new(
        RingKind::Rx,
        map_ring(sys, raw, RingKind::Rx, &offsets, n)?,
        &offsets,
        n,
    )
    .map_err(layout)?;
    let tx = ProdRing::new(
        RingKind::Tx,
        map_ring(sys, raw, RingKind::Tx, &offsets, n)?,
        &offsets,
        n,
    )
    .map_err(layout)?;
    let mut addr = SockaddrXdp {
        family: AF_XDP as u16,
        flags: 0,
        ifindex: p.ifindex,
        queue_id: p.kernel_queue,
        shared_umem_fd: 0,
    };
    match p.shared_with {
        // A sharing socket takes its mode and wake-up flag from the socket
        // that registered the UMEM; the kernel refuses any other flag.
        Some(owner) => {
            addr.flags = XDP_SHARED_UMEM;
            addr.shared_umem_fd = owner as u32;
        }
        None => {
            if p.need_wakeup {
                addr.flags |= XDP_USE_NEED_WAKEUP;
            }
            match p.bind {
                BindMode::Auto => {}
                BindMode::ZeroCopy => addr.flags |= XDP_ZEROCOPY,
                BindMode::Copy => addr.flags |= XDP_COPY,
            }
        }
    }
    sys.bind(raw, &addr).map_err(SocketError::Bind)?;
    let zero_copy = sys
        .xdp_options(raw)
        .map(|o| o & XDP_OPTIONS_ZEROCOPY != 0)
        .unwrap_or(false);
    p.umem.socket_opened();
    let core = Arc::new(SocketCore {
        fd: Some(fd),
        raw_fd: raw,
        sys: Arc::clone(sys),
        queue: p.queue,
        kernel_queue: p.kernel_queue,
        umem: p.umem,
        zero_copy,
        need_wakeup: p.need_wakeup,
        rx_stats: QueueStats::default(),
        tx_stats: QueueStats::default(),
        moves: Moves::default(),
        tx_kicks: AtomicU64::new(0),
        rx_kicks: AtomicU64::new(0),
        kick_errors: AtomicU64::new(0),
        _attachment: Arc::clone(p.attachment),
    });
    let mut rx = RxRings {
        rx,
        fill,
        core: Arc::clone(&core),
    };
    // Post free frames to the fill ring only now, after the bind: a
    // failed setup leaves no frame behind in the kernel.
    rx.refill(n);
    let tx = TxRings {
        tx,
        completion,
        core: Arc::clone(&core),
    };
    Ok(NewSocket { core, rx, tx })
}

impl RxRings {
    /// Moves up to `max` free frames to the fill ring; returns how many.
    #[inline]
    fn refill(&mut self, max: u32) -> u32 {
        let umem = self.core.umem;
        let room = self.fill.reserve(max);
        let mut k = 0;
        while k < room {
            let Some(f) = umem.take_free() else { break };
            self.fill.write(k, f.addr());
            k += 1;
        }
        self.fill.submit(k);
        bump(&self.core.moves.filled, u64::from(k));
        k
    }
}

impl TxRings {
    /// Returns completed frames to the free list; returns how many.
    #[inline]
    fn reclaim(&mut self) -> u32 {
        let umem = self.core.umem;
        let n = self.completion.peek(self.completion_size());
        for i in 0..n {
            umem.put_free(self.completion.read(i));
        }
        self.completion.release(n);
        bump(&self.core.moves.completed, u64::from(n));
        n
    }

    fn completion_size(&self) -> u32 {
        self.tx.size()
    }

    /// Wakes the kernel up to send, if it asked for it (or cannot ask).
    #[inline]
    fn kick(&mut self) {
        let core = &self.core;
        if core.need_wakeup && !self.tx.needs_wakeup() {
            return;
        }
        bump(&core.tx_kicks, 1);
        if let Err(e) = core.sys.kick_tx(core.raw_fd) {
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS) => {}
                _ => bump(&core.kick_errors, 1),
            }
        }
    }
}

/// Folds the kernel's RX counters into the RX queue's drop reasons.
///
/// In copy mode the kernel counts a packet that found the fill ring empty
/// twice — in `rx_fill_ring_empty_descs` and in `rx_dropped` — so the
/// latter, less the former, is what it dropped for other reasons. (In
/// zero-copy mode the driver leaves the packet in the NIC, and only the
/// fill-ring counter moves.)
fn fold_rx(core: &SocketCore, s: &XdpStatistics, own_invalid: u64) {
    let stats = &core.rx_stats;
    let other = if core.zero_copy {
        s.rx_dropped
    } else {
        s.rx_dropped.saturating_sub(s.rx_fill_ring_empty_descs)
    };
    stats.set_drops(DropReason::RxRingFull, s.rx_ring_full);
    stats.set_drops(DropReason::NoBuffer, s.rx_fill_ring_empty_descs);
    stats.set_drops(DropReason::KernelDropped, other);
    stats.set_drops(
        DropReason::InvalidDescriptor,
        s.rx_invalid_descs + own_invalid,
    );
}

/// Folds the kernel's TX counters into the TX queue's drop reasons.
fn fold_tx(stats: &QueueStats, s: &XdpStatistics) {
    stats.set_drops(DropReason::InvalidDescriptor, s.tx_invalid_descs);
}

/// A periodic timer driven by poll counts: looks at the clock once every
/// [`STATS_POLLS`] polls, fires once per [`STATS_PERIOD`].
#[derive(Debug)]
struct Every {
    polls: u32,
    last: Instant,
}

impl Every {
    fn new() -> Every {
        Every {
            polls: 0,
            last: Instant::now(),
        }
    }

    #[inline]
    fn due(&mut self) -> bool {
        self.polls = self.polls.wrapping_add(1);
        if self.polls & (STATS_POLLS - 1) != 0 || self.last.elapsed() < STATS_PERIOD {
            return false;
        }
        self.last = Instant::now();
        true
    }
}

/// An open RX queue.
pub(super) struct AfXdpRx {
    rings: Option<RxRings>,
    home: Home<RxRings>,
    core: Arc<SocketCore>,
    every: Every,
    empty_polls: u32,
    posted_since_kick: bool,
    own_invalid: u64,
}

impl AfXdpRx {
    pub(super) fn new(rings: RxRings, home: Home<RxRings>) -> AfXdpRx {
        let core = Arc::clone(&rings.core);
        AfXdpRx {
            rings: Some(rings),
            home,
            core,
            every: Every::new(),
            empty_polls: 0,
            posted_since_kick: false,
            own_invalid: 0,
        }
    }
}

impl RxQueue for AfXdpRx {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let Some(r) = self.rings.as_mut() else {
            return 0;
        };
        let core = &*self.core;
        if self.every.due() {
            if let Ok(s) = core.statistics() {
                fold_rx(core, &s, self.own_invalid);
            }
        }
        if r.refill(REFILL_MAX) > 0 {
            self.posted_since_kick = true;
        }
        let n = r.rx.peek(burst.room() as u32);
        let (mut got, mut bytes, mut bad) = (0u64, 0u64, 0u64);
        for i in 0..n {
            let d = r.rx.read(i);
            match core.umem.frame_from_rx(d.addr, d.len) {
                Some(mut f) => {
                    f.rx_queue = core.queue;
                    bytes += u64::from(d.len);
                    got += 1;
                    // Cannot fail: `n` is at most the burst's room.
                    let _ = burst.push(f);
                }
                None => bad += 1,
            }
        }
        r.rx.release(n);
        bump(&core.moves.received, u64::from(n));
        if got > 0 {
            core.rx_stats.add(got, bytes);
        }
        if bad > 0 {
            self.own_invalid += bad;
            core.rx_stats.drop_n(DropReason::InvalidDescriptor, bad);
        }
        if n == 0 && core.need_wakeup && r.fill.needs_wakeup() {
            self.empty_polls = self.empty_polls.wrapping_add(1);
            if self.posted_since_kick || self.empty_polls & (RX_KICK_EVERY - 1) == 0 {
                self.posted_since_kick = false;
                bump(&core.rx_kicks, 1);
                let _ = core.sys.kick_rx(core.raw_fd);
            }
        }
        got as usize
    }

    fn stats(&self) -> &QueueStats {
        &self.core.rx_stats
    }
}

impl Drop for AfXdpRx {
    fn drop(&mut self) {
        if let Ok(s) = self.core.statistics() {
            fold_rx(&self.core, &s, self.own_invalid);
        }
        let mut home = self.home.lock().unwrap_or_else(|e| e.into_inner());
        *home = self.rings.take();
    }
}

/// An open TX queue.
pub(super) struct AfXdpTx {
    rings: Option<TxRings>,
    home: Home<TxRings>,
    core: Arc<SocketCore>,
    every: Every,
}

impl AfXdpTx {
    pub(super) fn new(rings: TxRings, home: Home<TxRings>) -> AfXdpTx {
        let core = Arc::clone(&rings.core);
        AfXdpTx {
            rings: Some(rings),
            home,
            core,
            every: Every::new(),
        }
    }
}

impl TxQueue for AfXdpTx {
    /// Sends frames of this socket's UMEM by descriptor, copies others
    /// into free UMEM frames; stops at a full TX ring or, for copies, an
    /// empty free list. A frame too long for a UMEM frame is taken,
    /// dropped and counted as [`DropReason::TooBig`]. Returns the frames
    /// put on the ring.
    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let Some(t) = self.rings.as_mut() else {
            return 0;
        };
        let umem = self.core.umem;
        t.reclaim();
        let room = t.tx.reserve(burst.len() as u32);
        let (mut i, mut bytes, mut too_big) = (0u32, 0u64, 0u64);
        let ring = &mut t.tx;
        burst.drain_front_while(|f| {
            if i == room {
                return Err(f);
            }
            let len = f.len() as u32;
            let addr = if umem.owns(f.pool()) {
                let head = f.head() as u64;
                f.into_cookie() + head
            } else {
                let Some(free) = umem.take_free() else {
                    return Err(f);
                };
                match umem.copy_into(free, f.data()) {
                    Ok(a) => a,
                    Err(free) => {
                        umem.untake(free);
                        too_big += 1;
                        return Ok(());
                    }
                }
                // `f` is dropped here: its buffer goes home to its pool.
            };
            ring.write(
                i,
                XdpDesc {
                    addr,
                    len,
                    options: 0,
                },
            );
            i += 1;
            bytes += u64::from(len);
            Ok(())
        });
        t.tx.submit(i);
        let core = &*self.core;
        bump(&core.moves.sent, u64::from(i));
        if i > 0 {
            core.tx_stats.add(u64::from(i), bytes);
            t.kick();
        }
        if too_big > 0 {
            core.tx_stats.drop_n(DropReason::TooBig, too_big);
        }
        i as usize
    }

    fn poll(&mut self) {
        let Some(t) = self.rings.as_mut() else {
            return;
        };
        t.reclaim();
        if t.tx.outstanding() > 0 {
            t.kick();
        }
        if self.every.due() {
            if let Ok(s) = self.core.statistics() {
                fold_tx(&self.core.tx_stats, &s);
            }
        }
    }

    fn stats(&self) -> &QueueStats {
        &self.core.tx_stats
    }
}

impl Drop for AfXdpTx {
    fn drop(&mut self) {
        if let Some(t) = self.rings.as_mut() {
            t.reclaim();
        }
        if let Ok(s) = self.core.statistics() {
            fold_tx(&self.core.tx_stats, &s);
        }
        let mut home = self.home.lock().unwrap_or_else(|e| e.into_inner());
        *home = self.rings.take();
    }
}
