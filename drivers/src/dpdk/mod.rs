//! DPDK ports: the system's libdpdk (22.11) through the project's own
//! `dpdk-sys` bindings and C shim.
//!
//! `dpdk:DEVARGS[,queues=N][,rxd=N][,txd=N][,mbufs=N]` hot-plugs a device
//! with `rte_dev_probe(DEVARGS)` — a virtual device such as
//! `net_null0,size=64`, `net_ring0`, `net_af_packet0,iface=veth0`,
//! `net_tap0,iface=dtap0` or `net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`,
//! or a PCI address (`0000:01:00.0[,PMD ARGS]`) for a NIC bound to
//! vfio-pci — configures `queues` RX and TX queue pairs of `rxd`/`txd`
//! descriptors, and starts it.
//!
//! # The specification's commas
//!
//! DPDK's devargs are themselves `NAME,KEY=VALUE,...`. Sluice takes the
//! keys it knows (`queues`, `rxd`, `txd`, `mbufs`) out of the list and
//! passes every other item, in order, to DPDK. A PMD key that clashes
//! with one of Sluice's (`net_vhost`'s `queues`) is written with a `dev.`
//! prefix: `dpdk:net_vhost0,iface=/tmp/s,dev.queues=2,queues=2` probes
//! `net_vhost0,iface=/tmp/s,queues=2` and opens two queue pairs. Values
//! cannot hold commas (DPDK's bracketed lists such as `representor=[0,1]`
//! cannot be written here).
//!
//! # EAL
//!
//! EAL is initialised once per process, by the first DPDK port opened
//! ([`eal::init`]), with [`eal::default_args`]: `--no-huge
//! --no-shconf --no-pci -m 512 --file-prefix sluice-PID -l CPU --no-telemetry
//! --log-level *:warning`. The environment variable `SLUICE_DPDK_EAL`
//! ([`eal::EAL_ENV`]) replaces them all (for huge pages, PCI devices, a
//! larger `-m`); there is no per-port option, since EAL is one per
//! process. A PCI NIC needs `SLUICE_DPDK_EAL` without `--no-pci` and
//! usually with huge pages; that path cannot be tested on a machine
//! without one and is not.
//!
//! # Frames without copies
//!
//! Each port has one `rte_mempool` of mbufs, its [`FramePool`]
//! ([`mbuf::MbufPool`]): a frame's cookie is its `rte_mbuf` pointer, alloc
//! is `rte_pktmbuf_alloc`, recycling is `rte_pktmbuf_free`. `rx_burst`
//! turns the mbufs `rte_eth_rx_burst` returns into frames in place;
//! `tx_burst` hands frames of any of Sluice's mbuf pools (this port's, or
//! another DPDK port's: the PMD frees an mbuf into its own pool) to
//! `rte_eth_tx_burst` as they are, and copies frames of other pools
//! (memory rings, AF_XDP's UMEM) into a fresh mbuf of this port's pool.
//! What the PMD does not take stays in the burst, as the trait asks.
//! Headroom: see [`mbuf`] (a 128-byte private area in front of DPDK's
//! 128-byte headroom makes Sluice's 256).
//!
//! An mbuf from a pool Sluice did not make (a PMD with a pool of its
//! own) has no such private area; it is copied into this port's pool on
//! RX. Multi-segment mbufs are not used (no scatter RX is configured);
//! one that arrives anyway is dropped as [`DropReason::TooBig`].
//!
//! # Threads
//!
//! Workers are not EAL lcores. The first burst on a thread registers it
//! with `rte_thread_register` ([`eal::register_thread`]) so the mempool's
//! per-lcore cache serves its allocs and frees; see there for what
//! happens when that fails.
//!
//! # Counters
//!
//! Sluice counts packets and bytes per queue itself. DPDK's port-wide
//! drop counters (`rte_eth_stats_get`) are folded in when the control
//! side reads [`Port::queue_stats`] (never on the per-packet path),
//! reported on queue 0:
//!
//! | DPDK | [`DropReason`] | queue |
//! |---|---|---|
//! | `imissed` | `RxRingFull` | RX 0 |
//! | `rx_nombuf` | `NoBuffer` (plus Sluice's own RX copy failures) | RX 0 |
//! | `ierrors` | `InvalidDescriptor` | RX 0 |
//! | `oerrors` | `TxError` | TX 0 |
//!
//! # What never happens per packet
//!
//! No allocation (bursts use stack arrays of `MAX_BURST` mbuf pointers),
//! no lock, no log, no syscall beyond what the PMD itself does.

#![allow(unsafe_code)]

pub mod eal;
pub mod mbuf;

use std::ffi::CString;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dpdk_sys as sys;

use self::mbuf::{MbufPool, TxPrep};
use crate::common::{next_ifindex, Claim, Claims};
use crate::{
    Burst, Direction, DropReason, Frame, FramePool, Port, PortError, PortInfo, QueueReport,
    QueueStats, RxQueue, TxQueue, HEADROOM, MAX_BURST,
};

/// Default RX descriptors per queue.
pub const DEFAULT_RXD: u16 = 1024;
/// Default TX descriptors per queue.
pub const DEFAULT_TXD: u16 = 1024;
/// Per-lcore mempool cache size.
pub const MEMPOOL_CACHE: u32 = 256;

/// How to open a DPDK port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpdkConfig {
    /// DPDK devargs: `net_null0,size=64`, `0000:01:00.0`, ...
    pub devargs: String,
    /// RX/TX queue pairs.
    pub queues: u16,
    /// RX descriptors per queue.
    pub rxd: u16,
    /// TX descriptors per queue.
    pub txd: u16,
    /// Mbufs in the port's pool (`None`: enough for every ring plus 2048
    /// in flight, rounded to a power of two less one).
    pub mbufs: Option<u32>,
}

impl DpdkConfig {
    /// Defaults for `devargs`: one queue pair, 1024 descriptors each.
    pub fn new(devargs: &str) -> DpdkConfig {
        DpdkConfig {
            devargs: devargs.to_string(),
            queues: 1,
            rxd: DEFAULT_RXD,
            txd: DEFAULT_TXD,
            mbufs: None,
        }
    }

    /// The device name: the devargs' first item, PCI addresses in their
    /// full `DOMAIN:BUS:DEV.FN` form.
    pub fn device_name(&self) -> String {
        let first = self.devargs.split(',').next().unwrap_or_default();
        if is_pci(first) && first.matches(':').count() == 1 {
            format!("0000:{first}")
        } else {
            first.to_string()
        }
    }

    /// The port's name: `dpdk:DEVICE`.
    pub fn port_name(&self) -> String {
        format!("dpdk:{}", self.device_name())
    }

    /// Mbufs the pool gets.
    pub fn pool_size(&self) -> u32 {
        self.mbufs.unwrap_or_else(|| {
            let need = u32::from(self.queues) * (u32::from(self.rxd) + u32::from(self.txd)) + 2048;
            need.next_power_of_two() - 1
        })
    }
}

/// Whether a device name is a PCI address (`[DOMAIN:]BUS:DEV.FN`).
pub fn is_pci(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    let parts: Vec<&str> = name.split(':').collect();
    let (bus, devfn) = match parts.as_slice() {
        [d, b, df] if hex(d, 4) => (*b, *df),
        [b, df] => (*b, *df),
        _ => return false,
    };
    match devfn.split_once('.') {
        Some((dev, func)) => hex(bus, 2) && hex(dev, 2) && func.len() == 1 && hex(func, 1),
        None => false,
    }
}

/// The ethdev a port owns: stopped, closed and removed when the port and
/// all its queues are gone.
struct Device {
    port_id: u16,
    dev: *mut sys::rte_device,
    name: String,
}

// SAFETY: the port id and device pointer are handles into EAL's tables,
// usable from any thread; ethdev's control functions are thread-safe
// against each other, and the data path is per-queue (one owner each).
unsafe impl Send for Device {}
// SAFETY: as above.
unsafe impl Sync for Device {}

/// Ethdev ports open in this process.
static OWNED: Mutex<Vec<u16>> = Mutex::new(Vec::new());

impl Drop for Device {
    fn drop(&mut self) {
        OWNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != self.port_id);
        // SAFETY: our port, no queue left (they hold the Arc); stopping and
        // closing frees the mbufs still in its rings into their pools.
        let rc = unsafe { sys::rte_eth_dev_stop(self.port_id) };
        if rc != 0 {
            tracing::debug!(device = %self.name, error = %eal::errno_text(rc), "rte_eth_dev_stop");
        }
        // SAFETY: as above.
        let _ = unsafe { sys::rte_eth_dev_close(self.port_id) };
        if !self.dev.is_null() {
            // SAFETY: the device this port probed; removing it lets the name
            // be probed again in this process.
            let rc = unsafe { sys::rte_dev_remove(self.dev) };
            if rc != 0 {
                tracing::debug!(device = %self.name, error = %eal::errno_text(rc), "rte_dev_remove");
            }
        }
    }
}

/// Counters a queue shares with its port.
#[derive(Debug, Default)]
struct QueueShared {
    stats: QueueStats,
    /// RX: frames of foreign mempools that could not be copied (no mbuf);
    /// folded into `NoBuffer` with `rx_nombuf`.
    no_buffer: AtomicU64,
    /// TX: packets moved forward in their buffer (their program pushed more
    /// than DPDK's headroom).
    moved: AtomicU64,
    /// TX: frames of other pools copied into an mbuf.
    copied: AtomicU64,
}

/// A DPDK port (see the module docs).
pub struct DpdkPort {
    info: PortInfo,
    config: DpdkConfig,
    mac: [u8; 6],
    pool: &'static MbufPool,
    rx: Vec<Arc<QueueShared>>,
    tx: Vec<Arc<QueueShared>>,
    rx_claims: Arc<Claims>,
    tx_claims: Arc<Claims>,
    dev: Arc<Device>,
}

impl fmt::Debug for DpdkPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpdkPort")
            .field("info", &self.info)
            .field("port_id", &self.dev.port_id)
            .field("pool", &self.pool)
            .finish()
    }
}

/// DPDK's own counters of a port (`rte_eth_stats`), the ones Sluice uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EthStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// RX drops for a full RX ring.
    pub imissed: u64,
    /// Erroneous received packets.
    pub ierrors: u64,
    /// Failed transmissions.
    pub oerrors: u64,
    /// RX mbuf allocation failures.
    pub rx_nombuf: u64,
}

impl DpdkPort {
    /// Initialises EAL if needed, probes the device, makes its pool,
    /// configures and starts it.
    ///
    /// # Errors
    /// One [`PortError::Config`] line: EAL cannot start, the device does
    /// not probe (an unknown driver, a missing interface), it has fewer
    /// queues than asked, the pool cannot be made, a setup call fails.
    pub fn open(name: &str, cfg: &DpdkConfig) -> Result<Arc<DpdkPort>, PortError> {
        let fail = |reason: String| PortError::Config {
            port: name.to_string(),
            reason,
        };
        if cfg.queues == 0 {
            return Err(fail("a DPDK port needs at least one queue".into()));
        }
        eal::init().map_err(fail)?;
        let dev_name = cfg.device_name();
        let c_devargs = CString::new(cfg.devargs.as_str())
            .map_err(|_| fail("devargs hold a NUL byte".into()))?;
        let c_name = CString::new(dev_name.as_str()).map_err(|_| fail("NUL in the name".into()))?;
        // SAFETY: a valid C string; EAL is initialised.
        let rc = unsafe { sys::rte_dev_probe(c_devargs.as_ptr()) };
        // A PCI device EAL probed at start-up (no --no-pci) exists already.
        if rc < 0 && !(rc == -libc::EEXIST && is_pci(&dev_name)) {
            return Err(fail(probe_error(cfg, rc)));
        }
        let mut port_id = 0u16;
        // SAFETY: valid name and out-pointer.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(c_name.as_ptr(), &mut port_id) };
        if rc != 0 {
            return Err(fail(format!(
                "DPDK probed \"{}\" but made no ethdev called \"{dev_name}\" (is it a network device?)",
                cfg.devargs
            )));
        }
        {
            let mut owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
            if owned.contains(&port_id) {
                return Err(fail(format!(
                    "device {dev_name} is already open in this process"
                )));
            }
            owned.push(port_id);
        }
        // From here on, dropping `dev` undoes the probe.
        let mut dev = Device {
            port_id,
            dev: std::ptr::null_mut(),
            name: dev_name.clone(),
        };
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: a valid port id and out-pointer.
        let rc = unsafe { sys::rte_eth_dev_info_get(port_id, &mut info) };
        if rc != 0 {
            return Err(fail(format!(
                "rte_eth_dev_info_get: {}",
                eal::errno_text(rc)
            )));
        }
        dev.dev = info.device;
        let driver = if info.driver_name.is_null() {
            "unknown".to_string()
        } else {
            // SAFETY: a static NUL-terminated string of the PMD.
            unsafe { std::ffi::CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        if cfg.queues > info.max_rx_queues || cfg.queues > info.max_tx_queues {
            return Err(fail(format!(
                "{queues} queues asked, {driver} has at most {} RX and {} TX",
                info.max_rx_queues,
                info.max_tx_queues,
                queues = cfg.queues
            )));
        }
        let rxd = clamp_desc(cfg.rxd, &info.rx_desc_lim);
        let txd = clamp_desc(cfg.txd, &info.tx_desc_lim);
        // SAFETY: a valid port id.
        let socket = unsafe { sys::rte_eth_dev_socket_id(port_id) };
        let socket = if socket < 0 {
            sys::SOCKET_ID_ANY
        } else {
            socket
        };
        let count = cfg.pool_size();
        let cache = MEMPOOL_CACHE.min(count / 2);
        let pool = MbufPool::create(&format!("{name}.pool"), count, cache, socket).map_err(fail)?;
        let conf = sys::rte_eth_conf::default();
        // SAFETY: a valid port id and configuration.
        let rc = unsafe { sys::rte_eth_dev_configure(port_id, cfg.queues, cfg.queues, &conf) };
        if rc != 0 {
            return Err(fail(format!(
                "rte_eth_dev_configure: {}",
                eal::errno_text(rc)
            )));
        }
        for q in 0..cfg.queues {
            // SAFETY: a configured port, a queue below the configured
            // count, the default queue configuration (NULL), a valid pool.
            let rc = unsafe {
                sys::rte_eth_rx_queue_setup(
                    port_id,
                    q,
                    rxd,
                    socket as u32,
                    std::ptr::null(),
                    pool.raw(),
                )
            };
            if rc != 0 {
                return Err(fail(format!("RX queue {q} setup: {}", eal::errno_text(rc))));
            }
            // SAFETY: as above.
            let rc = unsafe {
                sys::rte_eth_tx_queue_setup(port_id, q, txd, socket as u32, std::ptr::null())
            };
            if rc != 0 {
                return Err(fail(format!("TX queue {q} setup: {}", eal::errno_text(rc))));
            }
        }
        // SAFETY: a configured port with all queues set up.
        let rc = unsafe { sys::rte_eth_dev_start(port_id) };
        if rc != 0 {
            return Err(fail(format!("rte_eth_dev_start: {}", eal::errno_text(rc))));
        }
        // Not every PMD has a promiscuous mode (net_null does not).
        // SAFETY: a started port.
        let _ = unsafe { sys::rte_eth_promiscuous_enable(port_id) };
        let mut mac = sys::rte_ether_addr::default();
        // SAFETY: a valid port and out-pointer.
        let _ = unsafe { sys::rte_eth_macaddr_get(port_id, &mut mac) };
        Ok(Arc::new(DpdkPort {
            info: PortInfo {
                name: name.to_string(),
                driver: "dpdk",
                ifindex: next_ifindex(),
                rx_queues: cfg.queues,
                tx_queues: cfg.queues,
                mode: format!("dpdk:{driver}"),
            },
            config: cfg.clone(),
            mac: mac.addr_bytes,
            pool,
            rx: (0..cfg.queues).map(|_| Arc::default()).collect(),
            tx: (0..cfg.queues).map(|_| Arc::default()).collect(),
            rx_claims: Claims::new(name, cfg.queues),
            tx_claims: Claims::new(name, cfg.queues),
            dev: Arc::new(dev),
        }))
    }

    /// DPDK's port id.
    pub fn port_id(&self) -> u16 {
        self.dev.port_id
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &DpdkConfig {
        &self.config
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The port's mbuf pool.
    pub fn pool(&self) -> &'static MbufPool {
        self.pool
    }

    /// DPDK's counters of the port, read now.
    pub fn eth_stats(&self) -> EthStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: a valid port id and out-pointer.
        let rc = unsafe { sys::rte_eth_stats_get(self.dev.port_id, &mut s) };
        if rc != 0 {
            return EthStats::default();
        }
        EthStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// TX packets moved forward in their buffer because their program
    /// pushed more than DPDK's 128 bytes of headroom (see [`mbuf`]).
    pub fn headroom_moves(&self) -> u64 {
        self.tx
            .iter()
            .map(|q| q.moved.load(Ordering::Relaxed))
            .sum()
    }

    /// TX frames of other pools copied into an mbuf.
    pub fn tx_copies(&self) -> u64 {
        self.tx
            .iter()
            .map(|q| q.copied.load(Ordering::Relaxed))
            .sum()
    }

    /// Folds DPDK's drop counters into the queues' (module docs).
    fn fold(&self) {
        let s = self.eth_stats();
        for (q, rx) in self.rx.iter().enumerate() {
            let own = rx.no_buffer.load(Ordering::Relaxed);
            let (nombuf, missed, errors) = if q == 0 {
                (s.rx_nombuf, s.imissed, s.ierrors)
            } else {
                (0, 0, 0)
            };
            rx.stats.set_drops(DropReason::NoBuffer, own + nombuf);
            rx.stats.set_drops(DropReason::RxRingFull, missed);
            rx.stats.set_drops(DropReason::InvalidDescriptor, errors);
        }
        if let Some(tx) = self.tx.first() {
            tx.stats.set_drops(DropReason::TxError, s.oerrors);
        }
    }
}

fn clamp_desc(want: u16, lim: &sys::rte_eth_desc_lim) -> u16 {
    let mut n = want.clamp(lim.nb_min.max(1), lim.nb_max.max(1));
    if lim.nb_align > 1 {
        n -= n % lim.nb_align;
        n = n.max(lim.nb_align);
    }
    n
}

/// One line for a device that does not probe.
fn probe_error(cfg: &DpdkConfig, rc: i32) -> String {
    let dev = cfg.device_name();
    let text = eal::errno_text(rc);
    let hint = if is_pci(&dev) {
        " (a PCI device needs SLUICE_DPDK_EAL without --no-pci, and the NIC bound to vfio-pci)"
    } else if rc == -libc::EEXIST {
        " (the device already exists: is it named twice?)"
    } else {
        if let Some(iface) = cfg
            .devargs
            .split(',')
            .find_map(|kv| kv.strip_prefix("iface="))
        {
            if !std::path::Path::new("/sys/class/net").join(iface).exists()
                && !dev.starts_with("net_tap")
            {
                return format!(
                    "DPDK cannot probe \"{}\": interface \"{iface}\" does not exist",
                    cfg.devargs
                );
            }
        }
        " (an unknown driver name or argument; DPDK's log above says which)"
    };
    format!("DPDK cannot probe \"{}\": {text}{hint}", cfg.devargs)
}

impl Port for DpdkPort {
    fn info(&self) -> &PortInfo {
        &self.info
    }

    fn open_rx(&self, q: u16) -> Result<Box<dyn RxQueue>, PortError> {
        let claim = self.rx_claims.claim(q)?;
        Ok(Box::new(DpdkRx {
            port_id: self.dev.port_id,
            queue: q,
            pool: self.pool,
            shared: Arc::clone(&self.rx[usize::from(q)]),
            _claim: claim,
            _dev: Arc::clone(&self.dev),
        }))
    }

    fn open_tx(&self, q: u16) -> Result<Box<dyn TxQueue>, PortError> {
        let claim = self.tx_claims.claim(q)?;
        Ok(Box::new(DpdkTx {
            port_id: self.dev.port_id,
            queue: q,
            pool: self.pool,
            shared: Arc::clone(&self.tx[usize::from(q)]),
            _claim: claim,
            _dev: Arc::clone(&self.dev),
        }))
    }

    /// Every queue's counters, DPDK's drop counters folded in (read now).
    fn queue_stats(&self) -> Vec<QueueReport> {
        self.fold();
        let rx = self.rx.iter().enumerate().map(|(q, s)| QueueReport {
            direction: Direction::Rx,
            queue: q as u16,
            stats: s.stats.snapshot(),
        });
        let tx = self.tx.iter().enumerate().map(|(q, s)| QueueReport {
            direction: Direction::Tx,
            queue: q as u16,
            stats: s.stats.snapshot(),
        });
        rx.chain(tx).collect()
    }
}

struct DpdkRx {
    port_id: u16,
    queue: u16,
    pool: &'static MbufPool,
    shared: Arc<QueueShared>,
    _claim: Claim,
    _dev: Arc<Device>,
}

impl DpdkRx {
    /// The frame for a received mbuf (copied when it is not of one of
    /// Sluice's pools); `None` when it is dropped (counted).
    #[inline]
    fn frame(&self, m: NonNull<sys::rte_mbuf>) -> Option<Frame> {
        // SAFETY: the PMD handed us this mbuf.
        let mb = unsafe { m.as_ref() };
        let mp = mb.pool;
        let pool = if mp == self.pool.raw() {
            Some(self.pool)
        } else {
            MbufPool::of_mempool(mp)
        };
        if mb.nb_segs != 1 {
            self.shared.stats.drop_n(DropReason::TooBig, 1);
            // SAFETY: ours to free (the whole chain).
            unsafe { sys::sluice_rte_pktmbuf_free(m.as_ptr()) };
            return None;
        }
        match pool {
            // SAFETY: a single-segment mbuf of a Sluice pool, ours.
            Some(p) => Some(unsafe { mbuf::to_frame(p, m) }),
            None => {
                // A PMD's own pool: no private area, so copy.
                // SAFETY: a plain call on a valid mbuf.
                let at = unsafe { sys::sluice_rte_pktmbuf_mtod(m.as_ptr()) } as *const u8;
                // SAFETY: the mbuf's data is data_len bytes at mtod.
                let data = unsafe { std::slice::from_raw_parts(at, usize::from(mb.data_len)) };
                let out = self
                    .pool
                    .alloc()
                    .and_then(|mut f| f.fill(data).then_some(f));
                if out.is_none() {
                    self.shared.no_buffer.fetch_add(1, Ordering::Relaxed);
                }
                // SAFETY: ours to free; `data` is not used after this.
                unsafe { sys::sluice_rte_pktmbuf_free(m.as_ptr()) };
                out
            }
        }
    }
}

impl RxQueue for DpdkRx {
    #[inline]
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let room = burst.room().min(MAX_BURST);
        if room == 0 {
            return 0;
        }
        eal::register_thread();
        let mut mbufs = [std::ptr::null_mut::<sys::rte_mbuf>(); MAX_BURST];
        // SAFETY: our queue (claimed), an array of `room` slots.
        let n = unsafe {
            sys::sluice_rte_eth_rx_burst(self.port_id, self.queue, mbufs.as_mut_ptr(), room as u16)
        };
        let mut got = 0usize;
        let mut bytes = 0u64;
        for &m in &mbufs[..usize::from(n)] {
            let Some(m) = NonNull::new(m) else { continue };
            if let Some(mut f) = self.frame(m) {
                f.rx_queue = self.queue;
                bytes += f.len() as u64;
                // Cannot fail: at most `room` frames.
                let _ = burst.push(f);
                got += 1;
            }
        }
        if got > 0 {
            self.shared.stats.add(got as u64, bytes);
        }
        got
    }

    fn stats(&self) -> &QueueStats {
        &self.shared.stats
    }
}

struct DpdkTx {
    port_id: u16,
    queue: u16,
    pool: &'static MbufPool,
    shared: Arc<QueueShared>,
    _claim: Claim,
    _dev: Arc<Device>,
}

/// What `tx_burst` did with one frame of the burst.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Its own mbuf is in the TX array.
    Mbuf,
    /// A copy of it is in the TX array.
    Copy,
    /// It cannot be sent (too big): taken and dropped.
    Drop,
}

impl TxQueue for DpdkTx {
    #[inline]
    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let n = burst.len().min(MAX_BURST);
        if n == 0 {
            return 0;
        }
        eal::register_thread();
        let mut mbufs = [std::ptr::null_mut::<sys::rte_mbuf>(); MAX_BURST];
        let mut slots = [Slot::Drop; MAX_BURST];
        let mut count = 0usize;
        let mut prepared = 0usize; // burst positions looked at
        let mut moved = 0u64;
        let mut copied = 0u64;
        // A copy is placed HEADROOM into a fresh frame, as `Frame::fill` does.
        let copy_max = self.pool.frame_size() - HEADROOM;
        while prepared < n {
            let Some(f) = burst.get_mut(prepared) else {
                break;
            };
            if MbufPool::is_mbuf_pool(f.pool()) {
                // SAFETY: a frame of a Sluice mbuf pool.
                match unsafe { mbuf::to_mbuf(f, &mut moved) } {
                    TxPrep::Ready(m) => {
                        mbufs[count] = m;
                        count += 1;
                        slots[prepared] = Slot::Mbuf;
                    }
                    TxPrep::TooBig => slots[prepared] = Slot::Drop,
                }
            } else if f.len() > copy_max {
                slots[prepared] = Slot::Drop;
            } else {
                let Some(mut c) = self.pool.alloc() else {
                    // No mbuf: send what is ready, keep the rest.
                    break;
                };
                c.fill(f.data());
                copied += 1;
                // SAFETY: `c` is a frame of this port's mbuf pool.
                match unsafe { mbuf::to_mbuf(&mut c, &mut moved) } {
                    TxPrep::Ready(m) => {
                        c.into_cookie();
                        mbufs[count] = m;
                        count += 1;
                        slots[prepared] = Slot::Copy;
                    }
                    TxPrep::TooBig => slots[prepared] = Slot::Drop,
                }
            }
            prepared += 1;
        }
        // SAFETY: our queue (claimed); `count` mbufs we own, fields set.
        let sent = usize::from(unsafe {
            sys::sluice_rte_eth_tx_burst(self.port_id, self.queue, mbufs.as_mut_ptr(), count as u16)
        });
        // Frames taken: every position up to the last sent mbuf, and the
        // dropped ones before the first unsent one. Copies not sent are
        // freed; frames not sent stay in the burst, in order.
        let mut taken = 0usize;
        let mut seen = 0usize;
        let mut stopped = false;
        let mut bytes = 0u64;
        let mut dropped = 0u64;
        for (pos, &slot) in slots[..prepared].iter().enumerate() {
            if slot == Slot::Drop {
                if !stopped {
                    taken = pos + 1;
                    dropped += 1;
                }
                continue;
            }
            if seen < sent {
                taken = pos + 1;
                bytes += burst.get(pos).map_or(0, |f| f.len() as u64);
            } else {
                stopped = true;
                if slot == Slot::Copy {
                    // SAFETY: the copy's mbuf, ours, not taken by the PMD.
                    unsafe { sys::sluice_rte_pktmbuf_free(mbufs[seen]) };
                }
            }
            seen += 1;
        }
        let mut pos = 0usize;
        burst.drain_front(taken, |f| {
            if slots[pos] == Slot::Mbuf {
                // The PMD owns the mbuf now.
                f.into_cookie();
            }
            pos += 1;
        });
        if sent > 0 {
            self.shared.stats.add(sent as u64, bytes);
        }
        if dropped > 0 {
            self.shared.stats.drop_n(DropReason::TooBig, dropped);
        }
        if moved > 0 {
            self.shared.moved.fetch_add(moved, Ordering::Relaxed);
        }
        if copied > 0 {
            self.shared.copied.fetch_add(copied, Ordering::Relaxed);
        }
        taken
    }

    fn stats(&self) -> &QueueStats {
        &self.shared.stats
    }
}
