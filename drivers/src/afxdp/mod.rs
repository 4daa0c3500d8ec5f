//! AF_XDP ports: kernel-bypass packet I/O on any Linux interface.
//!
//! `afxdp:IFACE[:QUEUES]` opens one XDP socket per queue of the interface
//! (all of them, `N` for queues `0..N`, or `A-B`), attaches a tiny XDP
//! program that redirects every packet of those queues into their sockets
//! ([`xdp_prog`]), and hands the sockets' RX and TX rings to Sluice's
//! workers as [`RxQueue`]s and [`TxQueue`]s.
//!
//! # Frames without copies
//!
//! The packet memory is a UMEM ([`umem::Umem`]), which is also the
//! [`FramePool`](crate::FramePool) of the port's frames: a received packet
//! becomes a [`Frame`](crate::Frame) that points into the UMEM (its cookie
//! is the UMEM address), and dropping it puts the frame on the UMEM's
//! lock-free free list, from any thread. Each RX poll moves free frames to
//! the socket's fill ring. Sending a frame of the same UMEM is a TX
//! descriptor and nothing else; a frame of another pool is copied into a
//! free UMEM frame. Sent frames come back through the completion ring,
//! which every `tx_burst` and every `poll` drains.
//!
//! ## One UMEM for several ports
//!
//! The AF_XDP ports [`spec::open`](crate::spec::open) makes in one call
//! share one UMEM (`XDP_SHARED_UMEM`, Linux ≥ 5.10 across devices): the
//! first socket registers it, the others bind to it with their own fill
//! and completion rings. A packet received on one port and redirected out
//! of another then crosses by descriptor, whichever workers poll the two
//! queues, because the only state the sockets share is the free list. A
//! port whose sockets cannot join (another frame size, a driver whose
//! zero-copy mode cannot share) gets a UMEM of its own and the copy path;
//! `umem=own` asks for that.
//!
//! # Syscalls, and when
//!
//! Never one per packet. The rings are shared memory; a burst costs one
//! acquire load and one release store per ring touched. Sockets bind with
//! `XDP_USE_NEED_WAKEUP`: `tx_burst` and `poll` call `sendto` only when
//! the TX ring's flag asks for it (in copy mode the kernel sends only from
//! that call, so it asks after every burst), and `rx_burst` calls
//! `recvfrom` only when the fill ring's flag asks and nothing arrived, at
//! most once per burst of new fill entries or per 64 empty polls. The
//! kernel's drop counters (`XDP_STATISTICS`) are read every 100 ms at most,
//! from the poll loop, and folded into the queues' drop reasons:
//!
//! | kernel | [`DropReason`](crate::DropReason) | queue |
//! |---|---|---|
//! | `rx_ring_full` | `RxRingFull` | RX |
//! | `rx_fill_ring_empty_descs` | `NoBuffer` | RX |
//! | `rx_dropped` | `KernelDropped` | RX |
//! | `rx_invalid_descs` | `InvalidDescriptor` | RX |
//! | `tx_invalid_descs` | `InvalidDescriptor` | TX |
//! | `tx_ring_empty_descs` | — (not a drop: the kernel found nothing to send) | [`AfXdpPort::xdp_statistics`] |
//!
//! # Modes and fallbacks
//!
//! The XDP program is attached in native (driver) mode, or, when the
//! driver has no XDP support, in generic (SKB) mode. Sockets bind without
//! forcing a mode, so the kernel uses zero-copy when the driver supports
//! it and copy mode otherwise; `XDP_OPTIONS` tells which. Every fallback
//! is logged (`tracing`) and the outcome is the port's
//! [`PortInfo::mode`](crate::PortInfo::mode), e.g. `native/copy` on a veth.
//! `xdp=native|generic` and `bind=zerocopy|copy` force a mode.
//!
//! # Headroom
//!
//! The UMEM is registered with `headroom = 0`: the kernel already leaves
//! `XDP_PACKET_HEADROOM` (256 bytes) in front of every packet it writes
//! into a frame, in copy and in zero-copy mode, so a received descriptor's
//! address is the frame's start plus 256 — [`HEADROOM`](crate::HEADROOM).
//! The frame's `head` is taken from the descriptor, never assumed; copies
//! for TX are placed at `HEADROOM` too.
//!
//! # Errors and clean-up
//!
//! Setup errors are one line naming the port: the interface does not
//! exist; it already has an XDP program; not enough permissions; the UMEM
//! cannot be registered; a queue out of range; a queue taken by another
//! AF_XDP socket. Everything made before the failure is undone by
//! ownership: file descriptors close, mappings unmap, and the program goes
//! with its BPF link. A link is a file descriptor, so the program also
//! goes away when the process exits or crashes; nothing is left on the
//! interface.
//!
//! # Why raw syscalls
//!
//! The driver speaks to the kernel through `libc` system calls only, all
//! in [`sys`], behind a trait that tests replace. The alternatives were
//! weighed: libxdp/libbpf (through `xsk-rs` or `libxdp-sys`) are C
//! libraries under LGPL/BSD-2 built by a build script with a C toolchain
//! and kernel headers, and they would own the rings, the UMEM and the
//! program loading that this module needs to shape itself (UMEM as a
//! frame pool, halves on different threads, link-based attachment, exact
//! error mapping); `xsk-rs` also wraps a single socket per UMEM owner in
//! ways that fight shared UMEMs across ports. `aya` brings a whole eBPF
//! loader for a five-instruction program. The UAPI is small and stable —
//! a handful of `setsockopt`s, four `mmap`s, `bind`, and three `bpf(2)`
//! commands — so owning it costs a few hundred lines, keeps the
//! dependency set to `libc` (MIT/Apache-2.0, like this project), needs no
//! C build, and puts every `unsafe` block of the driver in two short
//! modules ([`sys`] and the ring access), each with its safety argument.

pub mod sys;
pub mod umem;
pub mod xdp_prog;

mod ring;
mod socket;

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

pub use socket::BindMode;
pub use sys::XdpStatistics;
pub use xdp_prog::XdpMode;

use self::socket::{AfXdpRx, AfXdpTx, Home, NewSocket, RxRings, SocketCore, SocketError, TxRings};
use self::sys::{LinuxSys, Sys};
use self::umem::Umem;
use self::xdp_prog::{AttachError, Attachment};
use crate::{
    Direction, Port, PortError, PortInfo, QueueReport, QueueStatsSnapshot, RxQueue, TxQueue,
};

/// Default size of each of a socket's four rings.
pub const DEFAULT_RING_SIZE: u32 = 2048;
/// Default UMEM frame size.
pub const DEFAULT_FRAME_SIZE: u32 = 2048;
/// UMEM frames per queue by default, in ring sizes: enough for a full
/// fill ring, a full RX ring, a full TX ring and the frames in flight in
/// workers and host-stack queues.
pub const DEFAULT_FRAMES_PER_RING: u32 = 4;

/// Queues of an interface a port uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queues {
    /// Every RX queue the interface has.
    All,
    /// Queues `0..n`.
    Count(u16),
    /// Queues `first..=last`.
    Range(u16, u16),
}

impl fmt::Display for Queues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Queues::All => Ok(()),
            Queues::Count(n) => write!(f, "{n}"),
            Queues::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

/// How to open an AF_XDP port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfXdpConfig {
    /// Interface name.
    pub iface: String,
    /// Which of its queues.
    pub queues: Queues,
    /// How to attach the XDP program.
    pub xdp_mode: XdpMode,
    /// How to bind the sockets.
    pub bind_mode: BindMode,
    /// Entries of each ring (a power of two).
    pub ring_size: u32,
    /// UMEM frames per queue.
    pub frames_per_queue: u32,
    /// UMEM frame size: 2048 or 4096.
    pub frame_size: u32,
    /// Share one UMEM with the other AF_XDP ports opened together.
    pub shared_umem: bool,
}

impl AfXdpConfig {
    /// Defaults for `iface`: every queue, automatic modes, 2048-entry
    /// rings, 2048-byte frames, a shared UMEM.
    pub fn new(iface: &str) -> AfXdpConfig {
        AfXdpConfig {
            iface: iface.to_string(),
            queues: Queues::All,
            xdp_mode: XdpMode::Auto,
            bind_mode: BindMode::Auto,
            ring_size: DEFAULT_RING_SIZE,
            frames_per_queue: DEFAULT_FRAMES_PER_RING * DEFAULT_RING_SIZE,
            frame_size: DEFAULT_FRAME_SIZE,
            shared_umem: true,
        }
    }

    /// The port's name: `afxdp:IFACE`, plus `:QUEUES` when not all.
    pub fn port_name(&self) -> String {
        match self.queues {
            Queues::All => format!("afxdp:{}", self.iface),
            q => format!("afxdp:{}:{q}", self.iface),
        }
    }
}

/// One queue of the port: its socket and where its halves wait.
struct QueueSlot {
    rx: Home<RxRings>,
    tx: Home<TxRings>,
    core: Arc<SocketCore>,
}

/// An AF_XDP port (see the module docs).
pub struct AfXdpPort {
    info: PortInfo,
    iface: String,
    mac: [u8; 6],
    /// Field order is drop order: queues (and their sockets) first.
    queues: Vec<QueueSlot>,
    umem: &'static Umem,
    attachment: Arc<Attachment>,
    notes: Vec<String>,
}

impl fmt::Debug for AfXdpPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfXdpPort")
            .field("info", &self.info)
            .field("umem", &self.umem)
            .finish()
    }
}

/// Counters of one socket (queue) of an AF_XDP port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketReport {
    /// The interface queue.
    pub kernel_queue: u32,
    /// RX counters and drops (kernel reasons folded in).
    pub rx: QueueStatsSnapshot,
    /// TX counters and drops.
    pub tx: QueueStatsSnapshot,
    /// `sendto` wake-ups made.
    pub tx_kicks: u64,
    /// `recvfrom` wake-ups made.
    pub rx_kicks: u64,
    /// Whether the socket is bound in zero-copy mode.
    pub zero_copy: bool,
}

impl AfXdpPort {
    /// Opens one port with the real kernel.
    ///
    /// # Errors
    /// A one-line [`PortError`] (see the module docs).
    pub fn open(name: &str, cfg: &AfXdpConfig) -> Result<Arc<AfXdpPort>, PortError> {
        AfXdpPort::open_with(&LinuxSys::shared(), &[(name, cfg)]).map(|mut v| v.remove(0))
    }

    /// Opens several ports, sharing one UMEM among those that ask for it
    /// (see the module docs), through `sys`.
    ///
    /// # Errors
    /// The first port's failure; ports opened before it are closed again.
    pub fn open_with(
        sys: &Arc<dyn Sys>,
        ports: &[(&str, &AfXdpConfig)],
    ) -> Result<Vec<Arc<AfXdpPort>>, PortError> {
        // Plan: resolve every interface and attach every program first,
        // so the common errors come before any memory is pinned.
        let mut plans = Vec::with_capacity(ports.len());
        for &(name, cfg) in ports {
            plans.push(Plan::new(sys, name, cfg)?);
        }
        // One shared UMEM per frame size, sized for every queue that joins.
        let mut groups: Vec<(u32, u32)> = Vec::new(); // (frame size, frames)
        for p in plans.iter().filter(|p| p.cfg.shared_umem) {
            let frames = p.frames();
            match groups.iter_mut().find(|g| g.0 == p.cfg.frame_size) {
                Some(g) => g.1 = g.1.saturating_add(frames),
                None => groups.push((p.cfg.frame_size, frames)),
            }
        }
        let mut shared: Vec<(u32, &'static Umem, Option<Arc<SocketCore>>)> = Vec::new();
        // Whatever happens below, a UMEM no socket ended up using is
        // unmapped on the way out.
        let mut made = UnusedUmems(Vec::new());
        for (size, frames) in groups {
            let name = format!("afxdp-shared-{size}");
            let umem = new_umem(sys, &plans[0].name, &name, frames, size)?;
            made.0.push(umem);
            shared.push((size, umem, None));
        }
        let mut out = Vec::with_capacity(plans.len());
        for plan in plans {
            let group = shared
                .iter_mut()
                .find(|g| plan.cfg.shared_umem && g.0 == plan.cfg.frame_size);
            let port = match group {
                Some((_, umem, owner)) => {
                    let owner_fd = owner.as_ref().map(|c| c.raw_fd());
                    match plan.sockets(sys, umem, owner_fd) {
                        Ok(p) => {
                            if owner.is_none() {
                                *owner = p.queues.first().map(|q| Arc::clone(&q.core));
                            }
                            p
                        }
                        Err(e) if owner_fd.is_some() => {
                            tracing::warn!(
                                port = %plan.name,
                                error = %e,
                                "cannot share the UMEM; using one of its own (frames redirected to it are copied)"
                            );
                            let umem = new_umem(
                                sys,
                                &plan.name,
                                &plan.name,
                                plan.frames(),
                                plan.cfg.frame_size,
                            )?;
                            made.0.push(umem);
                            let mut p = plan.sockets(sys, umem, None)?;
                            p.notes.push("own UMEM: could not share".into());
                            p
                        }
                        Err(e) => return Err(e),
                    }
                }
                None => {
                    let umem = new_umem(
                        sys,
                        &plan.name,
                        &plan.name,
                        plan.frames(),
                        plan.cfg.frame_size,
                    )?;
                    made.0.push(umem);
                    plan.sockets(sys, umem, None)?
                }
            };
            out.push(Arc::new(port));
        }
        Ok(out)
    }

    /// The interface name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The UMEM the port's frames live in.
    pub fn umem(&self) -> &'static Umem {
        self.umem
    }

    /// The mode the XDP program runs in (native or generic).
    pub fn xdp_mode(&self) -> XdpMode {
        self.attachment.mode
    }

    /// Whether the sockets are bound in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.queues.first().is_some_and(|q| q.core.zero_copy)
    }

    /// What fell back to what while opening (also logged).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Counters of each queue, in queue order.
    pub fn socket_reports(&self) -> Vec<SocketReport> {
        self.queues
            .iter()
            .map(|q| {
                let c = &q.core;
                SocketReport {
                    kernel_queue: c.kernel_queue,
                    rx: c.rx_stats.snapshot(),
                    tx: c.tx_stats.snapshot(),
                    tx_kicks: c.tx_kicks.load(std::sync::atomic::Ordering::Relaxed),
                    rx_kicks: c.rx_kicks.load(std::sync::atomic::Ordering::Relaxed),
                    zero_copy: c.zero_copy,
                }
            })
            .collect()
    }

    /// The kernel's statistics, summed over the port's sockets, read now.
    ///
    /// # Errors
    /// The first `getsockopt` that fails.
    pub fn xdp_statistics(&self) -> io::Result<XdpStatistics> {
        let mut sum = XdpStatistics::default();
        for q in &self.queues {
            sum += q.core.statistics()?;
        }
        Ok(sum)
    }
}

impl Port for AfXdpPort {
    fn info(&self) -> &PortInfo {
        &self.info
    }

    fn open_rx(&self, q: u16) -> Result<Box<dyn RxQueue>, PortError> {
        let slot = self.slot(q)?;
        let rings = slot
            .rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| PortError::QueueInUse {
                port: self.info.name.clone(),
                queue: q,
            })?;
        Ok(Box::new(AfXdpRx::new(rings, Arc::clone(&slot.rx))))
    }

    fn open_tx(&self, q: u16) -> Result<Box<dyn TxQueue>, PortError> {
        let slot = self.slot(q)?;
        let rings = slot
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| PortError::QueueInUse {
                port: self.info.name.clone(),
                queue: q,
            })?;
        Ok(Box::new(AfXdpTx::new(rings, Arc::clone(&slot.tx))))
    }

    /// RX and TX counters of every queue, the kernel's drop reasons folded
    /// in (as of the last refresh, at most 100 ms old while traffic flows).
    fn queue_stats(&self) -> Vec<QueueReport> {
        let mut out = Vec::with_capacity(2 * self.queues.len());
        for q in &self.queues {
            let c = &q.core;
            out.push(QueueReport {
                direction: Direction::Rx,
                queue: c.queue,
                stats: c.rx_stats.snapshot(),
            });
            out.push(QueueReport {
                direction: Direction::Tx,
                queue: c.queue,
                stats: c.tx_stats.snapshot(),
            });
        }
        out
    }
}

impl AfXdpPort {
    fn slot(&self, q: u16) -> Result<&QueueSlot, PortError> {
        self.queues
            .get(usize::from(q))
            .ok_or_else(|| PortError::QueueOutOfRange {
                port: self.info.name.clone(),
                queue: q,
                count: self.queues.len() as u16,
            })
    }
}

/// UMEMs made while opening ports; those no socket uses when this is
/// dropped are unmapped.
struct UnusedUmems(Vec<&'static Umem>);

impl Drop for UnusedUmems {
    fn drop(&mut self) {
        for u in &self.0 {
            u.release_if_unused();
        }
    }
}

/// A UMEM for a port, with the port's error on failure.
fn new_umem(
    sys: &Arc<dyn Sys>,
    port: &str,
    name: &str,
    frames: u32,
    frame_size: u32,
) -> Result<&'static Umem, PortError> {
    Umem::new(name, sys, frames, frame_size).map_err(|e| PortError::Config {
        port: port.to_string(),
        reason: format!(
            "cannot allocate the UMEM ({} frames of {frame_size} bytes): {e}",
            frames
        ),
    })
}

/// Whether an OS error means "not allowed".
fn is_permission(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

fn permission_error(port: &str, what: &str, e: &io::Error) -> PortError {
    PortError::Config {
        port: port.to_string(),
        reason: format!(
            "not enough permissions to {what} ({}): AF_XDP needs root, or CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF",
            plain(e)
        ),
    }
}

/// An OS error's text without the "(os error N)" suffix.
fn plain(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A port that is resolved and has its program attached, before sockets.
struct Plan {
    name: String,
    cfg: AfXdpConfig,
    ifindex: u32,
    mac: [u8; 6],
    /// Interface queues to bind, in port-queue order.
    kernel_queues: Vec<u32>,
    attachment: Arc<Attachment>,
}

impl Plan {
    fn new(sys: &Arc<dyn Sys>, name: &str, cfg: &AfXdpConfig) -> Result<Plan, PortError> {
        let port = name.to_string();
        let config = |reason: String| PortError::Config {
            port: port.clone(),
            reason,
        };
        if !(cfg.frame_size == 2048 || cfg.frame_size == 4096) {
            return Err(config(format!(
                "frame size {} is not 2048 or 4096",
                cfg.frame_size
            )));
        }
        if !cfg.ring_size.is_power_of_two() || !(64..=32768).contains(&cfg.ring_size) {
            return Err(config(format!(
                "ring size {} is not a power of two in 64..=32768",
                cfg.ring_size
            )));
        }
        if cfg.frames_per_queue < cfg.ring_size {
            return Err(config(format!(
                "{} frames per queue cannot fill a {}-entry fill ring",
                cfg.frames_per_queue, cfg.ring_size
            )));
        }
        let iface = cfg.iface.as_str();
        let ifindex = sys.if_nametoindex(iface).map_err(|e| {
            if matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ENXIO)) {
                config(format!("interface \"{iface}\" does not exist"))
            } else {
                PortError::Os {
                    port: port.clone(),
                    what: format!("looking up interface \"{iface}\""),
                    source: e,
                }
            }
        })?;
        let available = match sys.rx_queues(iface) {
            Ok(Some(n)) if n > 0 => Some(n),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(interface = iface, error = %e, "cannot read the channel count");
                None
            }
        };
        let (first, count) = match cfg.queues {
            Queues::All => (0, available.unwrap_or(1)),
            Queues::Count(n) => (0, u32::from(n)),
            Queues::Range(a, b) => (u32::from(a), u32::from(b) - u32::from(a) + 1),
        };
        if let Some(have) = available {
            if first + count > have {
                return Err(PortError::QueueOutOfRange {
                    port,
                    queue: (first + count - 1).min(u32::from(u16::MAX)) as u16,
                    count: have.min(u32::from(u16::MAX)) as u16,
                });
            }
        }
        let mac = sys.mac_address(iface).unwrap_or([0; 6]);
        let map_slots = available.unwrap_or(first + count).max(first + count);
        let attachment =
            xdp_prog::attach(sys, iface, ifindex, map_slots, cfg.xdp_mode).map_err(|e| match e {
                AttachError::Map(e) if is_permission(&e) => {
                    permission_error(&port, "create the XSKMAP", &e)
                }
                AttachError::Map(e) => PortError::Os {
                    port: port.clone(),
                    what: "creating the XSKMAP".into(),
                    source: e,
                },
                AttachError::Load(e, _) if is_permission(&e) => {
                    permission_error(&port, "load the XDP program", &e)
                }
                AttachError::Load(e, log) => config(format!(
                    "the kernel refused the XSK redirect program: {}{}",
                    plain(&e),
                    if log.is_empty() {
                        String::new()
                    } else {
                        format!(" (verifier: {log})")
                    }
                )),
                AttachError::Link(e, _) if is_permission(&e) => {
                    permission_error(&port, "attach the XDP program", &e)
                }
                AttachError::Link(e, _)
                    if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EEXIST)) =>
                {
                    config(format!(
                        "interface {iface} already has an XDP program attached; remove it first (ip link set dev {iface} xdp off)"
                    ))
                }
                AttachError::Link(e, mode) => config(format!(
                    "cannot attach the XDP program in {} mode: {}",
                    mode.name(),
                    plain(&e)
                )),
            })?;
        let kernel_queues = (first..first + count).collect();
        Ok(Plan {
            name: port,
            cfg: cfg.clone(),
            ifindex,
            mac,
            kernel_queues,
            attachment: Arc::new(attachment),
        })
    }

    fn frames(&self) -> u32 {
        self.cfg
            .frames_per_queue
            .saturating_mul(self.kernel_queues.len() as u32)
    }

    /// Creates the sockets on `umem` (registering it on the first socket
    /// unless `shared_with` names the socket that did) and fills the XSKMAP.
    fn sockets(
        &self,
        sys: &Arc<dyn Sys>,
        umem: &'static Umem,
        shared_with: Option<i32>,
    ) -> Result<AfXdpPort, PortError> {
        let port = &self.name;
        let iface = &self.cfg.iface;
        let mut queues: Vec<QueueSlot> = Vec::with_capacity(self.kernel_queues.len());
        let mut owner = shared_with;
        for (i, &kq) in self.kernel_queues.iter().enumerate() {
            let params = socket::SocketParams {
                sys,
                ifindex: self.ifindex,
                kernel_queue: kq,
                queue: i as u16,
                umem,
                shared_with: owner,
                ring_size: self.cfg.ring_size,
                bind: self.cfg.bind_mode,
                need_wakeup: true,
                attachment: &self.attachment,
            };
            let NewSocket { core, rx, tx } =
                socket::create(&params).map_err(|e| self.socket_error(e, kq, umem))?;
            self.attachment
                .insert(kq, core.raw_fd())
                .map_err(|e| PortError::Os {
                    port: port.clone(),
                    what: format!("putting the socket of queue {kq} into the XSKMAP"),
                    source: e,
                })?;
            if owner.is_none() {
                owner = Some(core.raw_fd());
            }
            queues.push(QueueSlot {
                rx: Arc::new(Mutex::new(Some(rx))),
                tx: Arc::new(Mutex::new(Some(tx))),
                core,
            });
        }
        let zero_copy = queues.first().is_some_and(|q| q.core.zero_copy);
        let xdp = self.attachment.mode.name();
        let bind = if zero_copy { "zero-copy" } else { "copy" };
        let mut notes = Vec::new();
        if self.cfg.xdp_mode == XdpMode::Auto && self.attachment.mode == XdpMode::Generic {
            notes.push(format!(
                "{iface}: native XDP unavailable, running in generic (SKB) mode"
            ));
        }
        if self.cfg.bind_mode == BindMode::Auto && !zero_copy {
            let note = format!("{iface}: zero-copy unavailable, sockets bound in copy mode");
            tracing::info!(port = %port, "{note}");
            notes.push(note);
        }
        let n = queues.len() as u16;
        Ok(AfXdpPort {
            info: PortInfo {
                name: port.clone(),
                driver: "afxdp",
                ifindex: self.ifindex,
                rx_queues: n,
                tx_queues: n,
                mode: format!("{xdp}/{bind}"),
            },
            iface: iface.clone(),
            mac: self.mac,
            queues,
            umem,
            attachment: Arc::clone(&self.attachment),
            notes,
        })
    }

    fn socket_error(&self, e: SocketError, kq: u32, umem: &Umem) -> PortError {
        let port = self.name.clone();
        let iface = &self.cfg.iface;
        match e {
            SocketError::Socket(e) if is_permission(&e) => {
                permission_error(&port, "create an AF_XDP socket", &e)
            }
            SocketError::Socket(e) => PortError::Os {
                port,
                what: "creating an AF_XDP socket".into(),
                source: e,
            },
            SocketError::Register(e) => {
                let hint = match e.raw_os_error() {
                    Some(libc::ENOBUFS | libc::ENOMEM | libc::EPERM) => {
                        "; the locked-memory limit (ulimit -l) is too low for it without CAP_IPC_LOCK"
                    }
                    _ => "",
                };
                PortError::Config {
                    port,
                    reason: format!(
                        "UMEM registration failed ({} MiB in {} frames of {} bytes): {}{hint}",
                        umem.size() >> 20,
                        umem.frames(),
                        self.cfg.frame_size,
                        plain(&e)
                    ),
                }
            }
            SocketError::Rings(what, e) => PortError::Os {
                port,
                what: format!("queue {kq}: {what}"),
                source: e,
            },
            SocketError::Layout(e) => PortError::Config {
                port,
                reason: format!("queue {kq}: {e}"),
            },
            SocketError::Bind(e) => match e.raw_os_error() {
                Some(libc::EBUSY) => PortError::Config {
                    port,
                    reason: format!(
                        "queue {kq} of {iface} is already used by another AF_XDP socket"
                    ),
                },
                Some(libc::EINVAL) if self.cfg.queues != Queues::All => {
                    PortError::QueueOutOfRange {
                        port,
                        queue: kq.min(u32::from(u16::MAX)) as u16,
                        count: kq.min(u32::from(u16::MAX)) as u16,
                    }
                }
                Some(libc::EOPNOTSUPP | libc::EPROTONOSUPPORT)
                    if self.cfg.bind_mode == BindMode::ZeroCopy =>
                {
                    PortError::Config {
                        port,
                        reason: format!(
                            "{iface} does not support zero-copy AF_XDP (bind=zerocopy)"
                        ),
                    }
                }
                _ => PortError::Os {
                    port,
                    what: format!("binding the socket of queue {kq}"),
                    source: e,
                },
            },
        }
    }
}
