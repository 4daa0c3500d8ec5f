//! Sluice's dataplane: the part that moves packets.
//!
//! * **Workers** ([`worker`]): one poll-mode thread per core, pinned with
//!   `core_affinity` to cores of the process's allowed set. Each owns a set
//!   of (port, queue) RX queues and one TX queue on every port; it moves
//!   bursts of 32-64 packets through the current program and acts on each
//!   verdict (DROP, TX, REDIRECT to any port, PASS to a bounded host queue,
//!   ABORTED counted), with one `tx_burst` per destination per burst.
//! * **Program slots** ([`slot`]): per port and hook (ingress, egress),
//!   swapped atomically while traffic flows; a compare-and-swap form
//!   replaces a program only if the slot still holds the expected version.
//! * **Statistics** ([`stats`]): per worker and port, cache-line padded,
//!   summed by the control side; every received packet has one verdict.
//! * **Per-CPU state**: per-CPU maps are per worker; worker *i* runs its
//!   programs as CPU *i* (`bpf_get_smp_processor_id()` returns *i*), so
//!   objects must be loaded with `ncpus` equal to [`Dataplane::workers`].
//!
//! [`Dataplane::builder`] is the library API that the `sluice` command line
//! and NFV programs embed.

pub mod capture;
mod clock;
pub mod fib;
pub mod host;
pub mod slot;
pub mod stats;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use sluice_bpf::Program;
use sluice_drivers::{
    Direction, Frame, Port, PortError, PortInfo, QueueStatsSnapshot, DEFAULT_BURST, MAX_BURST,
};

pub use capture::{CaptureTap, Captured};
pub use host::{HostConfig, HostStack};
pub use slot::{ProgramSlot, Quiescence, StaleVersion, Version};
pub use stats::{PortCounters, PortSnapshot, QueueCounters, QueueSnapshot};

/// Where a program is attached on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Every received packet.
    Ingress,
    /// Every packet about to be sent.
    Egress,
}

/// What an idle worker does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IdlePolicy {
    /// Spin, as DPDK does: lowest latency, a full core always.
    Spin,
    /// Spin for a while, then yield, then sleep 50 µs between polls: for
    /// shared machines, tests and demos.
    #[default]
    Adaptive,
}

/// Why the dataplane cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// A port or queue failed to open.
    #[error(transparent)]
    Port(#[from] PortError),
    /// A core is not in the process's allowed CPU set.
    #[error("core {core} is not in this process's allowed CPU set ({allowed})")]
    CoreNotAllowed {
        /// The core asked for.
        core: usize,
        /// The allowed cores.
        allowed: String,
    },
    /// A port has fewer TX queues than there are workers.
    #[error("port {port} has {tx_queues} TX queues, fewer than the {workers} workers")]
    TooFewTxQueues {
        /// Port name.
        port: String,
        /// Its TX queues.
        tx_queues: u16,
        /// Workers.
        workers: usize,
    },
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// A worker thread could not be started.
    #[error("starting worker {worker}: {source}")]
    Spawn {
        /// Worker index.
        worker: usize,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A port and its hooks, as the workers see it.
pub(crate) struct PortEntry {
    /// Held so the port outlives every queue the workers opened on it;
    /// asked for its drivers' per-queue counters.
    pub port: Arc<dyn Port>,
    pub info: PortInfo,
    pub ingress: ProgramSlot,
    pub egress: ProgramSlot,
    /// PASS traffic for the host stack.
    pub host_rx: ArrayQueue<Frame>,
    /// Frames the host stack sends out of this port.
    pub host_tx: ArrayQueue<Frame>,
    /// A capture of packets at program exit, when one runs.
    pub capture: ArcSwapOption<CaptureTap>,
}

/// An RX queue, the worker that polls it, and its counters.
pub(crate) struct RxQueueEntry {
    pub place: QueuePlace,
    pub counters: stats::QueueCounters,
}

/// Which worker, on which core, serves a queue. RX queues are spread
/// round-robin over the workers; TX queue *w* of every port belongs to
/// worker *w*.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuePlace {
    /// Port index.
    pub port: usize,
    /// Queue index on the port.
    pub queue: u16,
    /// The worker.
    pub worker: usize,
    /// The core the worker is pinned to (`None`: the process's allowed set
    /// could not be read, so the worker is not pinned).
    pub core: Option<usize>,
}

/// State shared by the workers and the control side.
pub(crate) struct Shared {
    pub ports: Vec<PortEntry>,
    /// Every RX queue, in port then queue order.
    pub rx_queues: Vec<RxQueueEntry>,
    /// The core of each worker.
    pub cores: Vec<Option<usize>>,
    pub stats: Vec<Vec<PortCounters>>,
    pub quiescence: Quiescence,
    pub stop: AtomicBool,
    pub host_stack: bool,
    pub idle: IdlePolicy,
    pub engine: sluice_bpf::Engine,
    /// The FIB programs' `bpf_fib_lookup` consults (none: an empty one).
    pub fib: Option<Arc<sluice_bpf::fib::Fib>>,
}

impl Shared {
    #[inline]
    pub(crate) fn port_by_ifindex(&self, ifindex: u32) -> Option<usize> {
        self.ports.iter().position(|p| p.info.ifindex == ifindex)
    }
}

/// Builds a [`Dataplane`].
pub struct Builder {
    ports: Vec<Arc<dyn Port>>,
    cores: Option<Vec<usize>>,
    burst: usize,
    programs: Vec<(usize, Hook, Arc<Program>, String)>,
    host_stack: bool,
    pass_queue: usize,
    idle: IdlePolicy,
    engine: sluice_bpf::Engine,
    fib: Option<Arc<sluice_bpf::fib::Fib>>,
}

/// The cores this process may run on (`sched_getaffinity`).
pub fn allowed_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

impl Builder {
    /// Adds a port; ports are numbered in the order they are added.
    pub fn port(mut self, port: Arc<dyn Port>) -> Builder {
        self.ports.push(port);
        self
    }

    /// The cores to run workers on, one worker each (default: one worker on
    /// the last allowed core).
    pub fn cores(mut self, cores: Vec<usize>) -> Builder {
        self.cores = Some(cores);
        self
    }

    /// Packets per RX burst (1..=64; default 32).
    pub fn burst(mut self, n: usize) -> Builder {
        self.burst = n;
        self
    }

    /// Attaches a program to a port's hook at start.
    pub fn program(
        mut self,
        port: usize,
        hook: Hook,
        program: Arc<Program>,
        label: &str,
    ) -> Builder {
        self.programs.push((port, hook, program, label.to_string()));
        self
    }

    /// Whether PASS traffic goes to a host stack (through
    /// [`Dataplane::host_rx`]); without one it is counted and dropped.
    pub fn host_stack(mut self, on: bool) -> Builder {
        self.host_stack = on;
        self
    }

    /// Capacity of each port's PASS queue (default 1024).
    pub fn pass_queue(mut self, n: usize) -> Builder {
        self.pass_queue = n;
        self
    }

    /// The engine for verified programs (default: the JIT on x86-64, the
    /// interpreter elsewhere).
    pub fn engine(mut self, e: sluice_bpf::Engine) -> Builder {
        self.engine = e;
        self
    }

    /// The FIB `bpf_fib_lookup` consults in every worker (default: none,
    /// an empty FIB). The control side keeps the handle and
    /// [`sluice_bpf::fib::Fib::store`]s new snapshots; see [`crate::fib`].
    pub fn fib(mut self, fib: Option<Arc<sluice_bpf::fib::Fib>>) -> Builder {
        self.fib = fib;
        self
    }

    /// What idle workers do.
    pub fn idle(mut self, p: IdlePolicy) -> Builder {
        self.idle = p;
        self
    }

    /// The worker count this builder will start.
    pub fn workers(&self) -> usize {
        self.cores.as_ref().map_or(1, Vec::len)
    }

    /// Opens every queue and starts the workers.
    ///
    /// # Errors
    /// A [`DataplaneError`] naming the port, queue or core at fault;
    /// nothing is left running.
    pub fn start(self) -> Result<Dataplane, DataplaneError> {
        if self.ports.is_empty() {
            return Err(DataplaneError::Config("no ports".into()));
        }
        if !(1..=MAX_BURST).contains(&self.burst) {
            return Err(DataplaneError::Config(format!(
                "burst {} is not in 1..={MAX_BURST}",
                self.burst
            )));
        }
        let allowed = allowed_cores();
        let cores: Vec<Option<usize>> = match &self.cores {
            Some(c) if c.is_empty() => return Err(DataplaneError::Config("no cores".into())),
            Some(c) => {
                for &core in c {
                    if !allowed.is_empty() && !allowed.contains(&core) {
                        return Err(DataplaneError::CoreNotAllowed {
                            core,
                            allowed: format!("{allowed:?}"),
                        });
                    }
                }
                c.iter().map(|&c| Some(c)).collect()
            }
            None => vec![allowed.last().copied()],
        };
        let workers = cores.len();
        let infos: Vec<PortInfo> = self.ports.iter().map(|p| p.info().clone()).collect();
        for info in &infos {
            if usize::from(info.tx_queues) < workers {
                return Err(DataplaneError::TooFewTxQueues {
                    port: info.name.clone(),
                    tx_queues: info.tx_queues,
                    workers,
                });
            }
        }
        // Queues: RX queues round-robin over workers; each worker gets TX
        // queue `w` of every port.
        let mut rx: Vec<Vec<worker::RxAssignment>> = (0..workers).map(|_| Vec::new()).collect();
        let mut rx_queues = Vec::new();
        for (p, port) in self.ports.iter().enumerate() {
            for q in 0..infos[p].rx_queues {
                let slot = rx_queues.len();
                let worker = slot % workers;
                rx[worker].push(worker::RxAssignment {
                    port: p,
                    queue: q,
                    slot,
                    q: port.open_rx(q)?,
                });
                rx_queues.push(RxQueueEntry {
                    place: QueuePlace {
                        port: p,
                        queue: q,
                        worker,
                        core: cores[worker],
                    },
                    counters: stats::QueueCounters::default(),
                });
            }
        }
        let mut tx = Vec::with_capacity(workers);
        for w in 0..workers {
            let mut t = Vec::with_capacity(self.ports.len());
            for port in &self.ports {
                t.push(port.open_tx(w as u16)?);
            }
            tx.push(t);
        }
        let pass = self.pass_queue.max(1);
        let ports: Vec<PortEntry> = self
            .ports
            .iter()
            .zip(&infos)
            .map(|(port, info)| PortEntry {
                port: port.clone(),
                info: info.clone(),
                ingress: ProgramSlot::new(),
                egress: ProgramSlot::new(),
                host_rx: ArrayQueue::new(pass),
                host_tx: ArrayQueue::new(pass),
                capture: ArcSwapOption::empty(),
            })
            .collect();
        for (p, hook, prog, label) in self.programs {
            let entry = ports.get(p).ok_or_else(|| {
                DataplaneError::Config(format!(
                    "program attached to port {p}, which does not exist"
                ))
            })?;
            let slot = if hook == Hook::Ingress {
                &entry.ingress
            } else {
                &entry.egress
            };
            slot.store(Some(prog), label);
        }
        let shared = Arc::new(Shared {
            stats: (0..workers)
                .map(|_| (0..ports.len()).map(|_| PortCounters::default()).collect())
                .collect(),
            ports,
            rx_queues,
            cores: cores.clone(),
            quiescence: Quiescence::new(workers),
            stop: AtomicBool::new(false),
            host_stack: self.host_stack,
            idle: self.idle,
            engine: self.engine,
            fib: self.fib,
        });
        // Measure the program-time clock's rate now, not on a stats call.
        clock::ns_per_tick();
        tracing::info!(engine = ?self.engine, workers, "dataplane engine for verified programs");
        let mut threads = Vec::with_capacity(workers);
        for (w, ((core, rx), tx)) in cores.into_iter().zip(rx).zip(tx).enumerate() {
            let worker = worker::Worker {
                index: w,
                core,
                rx,
                tx,
                shared: shared.clone(),
                burst_size: self.burst,
            };
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-w{w}"))
                .spawn(move || worker.run());
            match spawned {
                Ok(h) => threads.push(h),
                Err(source) => {
                    shared.stop.store(true, Ordering::Relaxed);
                    for h in threads {
                        let _ = h.join();
                    }
                    return Err(DataplaneError::Spawn { worker: w, source });
                }
            }
        }
        Ok(Dataplane {
            shared,
            threads,
            started: Instant::now(),
            workers,
        })
    }
}

/// A running dataplane.
pub struct Dataplane {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
    workers: usize,
}

/// The host side of every port: what programs passed (XDP_PASS), and a
/// queue for frames the host stack sends. Cheap to clone; safe to use from
/// any thread; never blocks.
#[derive(Clone)]
pub struct HostPorts {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HostPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPorts")
            .field("ports", &self.shared.ports.len())
            .finish()
    }
}

impl HostPorts {
    /// Number of ports.
    pub fn len(&self) -> usize {
        self.shared.ports.len()
    }

    /// Whether there are no ports.
    pub fn is_empty(&self) -> bool {
        self.shared.ports.is_empty()
    }

    /// A port's description (ifindex, name).
    pub fn info(&self, port: usize) -> Option<&PortInfo> {
        self.shared.ports.get(port).map(|p| &p.info)
    }

    /// The next frame a program passed on `port`.
    pub fn recv(&self, port: usize) -> Option<Frame> {
        self.shared.ports.get(port)?.host_rx.pop()
    }

    /// Queues a frame to be sent out of `port` by a worker; gives it back
    /// when the queue is full or the port does not exist.
    pub fn send(&self, port: usize, frame: Frame) -> Result<(), Frame> {
        match self.shared.ports.get(port) {
            Some(e) => e.host_tx.push(frame),
            None => Err(frame),
        }
    }

    /// Whether the dataplane is stopping.
    pub fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }
}

/// One RX queue's counters: the dataplane's (packets, bytes, verdicts)
/// and, when the driver reports them, the driver's (drops by reason before
/// the packets reached the dataplane).
#[derive(Debug, Clone)]
pub struct RxQueueStats {
    /// Where it runs.
    pub place: QueuePlace,
    /// The dataplane's counters.
    pub counters: QueueSnapshot,
    /// The driver's counters for this queue, when it reports them.
    pub driver: Option<QueueStatsSnapshot>,
}

/// One TX queue's counters: the dataplane's (sent, and drops after the
/// verdict) and the driver's when it reports them.
#[derive(Debug, Clone)]
pub struct TxQueueStats {
    /// Where it runs (TX queue *w* belongs to worker *w*).
    pub place: QueuePlace,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames dropped because the ring stayed full.
    pub tx_full: u64,
    /// The driver's counters for this queue, when it reports them.
    pub driver: Option<QueueStatsSnapshot>,
}

/// Counters of one port: per worker, summed, and per queue.
#[derive(Debug, Clone)]
pub struct PortStats {
    /// The port.
    pub info: PortInfo,
    /// Sum over workers.
    pub total: PortSnapshot,
    /// Per worker.
    pub per_worker: Vec<PortSnapshot>,
    /// Per RX queue, in queue order.
    pub rx_queues: Vec<RxQueueStats>,
    /// The TX queues the workers use (queue *w* for worker *w*).
    pub tx_queues: Vec<TxQueueStats>,
    /// Ingress program version (0: none).
    pub ingress_version: u64,
    /// Egress program version (0: none).
    pub egress_version: u64,
}

/// A snapshot of every counter.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Seconds since start.
    pub elapsed: Duration,
    /// Per port.
    pub ports: Vec<PortStats>,
}

impl Dataplane {
    /// A builder with defaults: one worker, bursts of 32, no host stack.
    pub fn builder() -> Builder {
        Builder {
            ports: Vec::new(),
            cores: None,
            burst: DEFAULT_BURST,
            programs: Vec::new(),
            host_stack: false,
            pass_queue: 1024,
            idle: IdlePolicy::default(),
            engine: sluice_bpf::Engine::best(),
            fib: None,
        }
    }

    /// Workers running.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Where every RX queue runs: its worker and core, in port then queue
    /// order.
    pub fn rx_queues(&self) -> Vec<QueuePlace> {
        self.shared.rx_queues.iter().map(|q| q.place).collect()
    }

    /// The core each worker is pinned to, by worker index (TX queue *w* of
    /// every port runs there).
    pub fn worker_cores(&self) -> Vec<Option<usize>> {
        self.shared.cores.clone()
    }

    /// The ports, in order.
    pub fn ports(&self) -> Vec<PortInfo> {
        self.shared.ports.iter().map(|p| p.info.clone()).collect()
    }

    fn slot(&self, port: usize, hook: Hook) -> Option<&ProgramSlot> {
        let e = self.shared.ports.get(port)?;
        Some(if hook == Hook::Ingress {
            &e.ingress
        } else {
            &e.egress
        })
    }

    /// Attaches `program` (replacing whatever runs); returns the new
    /// version, or `None` when the port does not exist.
    pub fn attach(
        &self,
        port: usize,
        hook: Hook,
        program: Arc<Program>,
        label: &str,
    ) -> Option<u64> {
        Some(
            self.slot(port, hook)?
                .store(Some(program), label.to_string()),
        )
    }

    /// Replaces the program only if version `expected` still runs.
    ///
    /// # Errors
    /// [`StaleVersion`] when another version runs; nothing changes.
    pub fn replace(
        &self,
        port: usize,
        hook: Hook,
        expected: u64,
        program: Option<Arc<Program>>,
        label: &str,
    ) -> Result<u64, StaleVersion> {
        match self.slot(port, hook) {
            Some(s) => s.compare_and_store(expected, program, label.to_string()),
            None => Err(StaleVersion {
                expected,
                current: 0,
            }),
        }
    }

    /// The version running on a hook (0: none).
    pub fn version(&self, port: usize, hook: Hook) -> u64 {
        self.slot(port, hook).map_or(0, ProgramSlot::version)
    }

    /// The program version running on a hook.
    pub fn program(&self, port: usize, hook: Hook) -> Option<Arc<Version>> {
        self.slot(port, hook)?.load()
    }

    /// Waits until every worker has finished the burst it was in when this
    /// was called: after a swap, no worker runs the old version any more.
    pub fn wait_quiescent(&self, timeout: Duration) -> bool {
        self.shared.quiescence.wait(timeout)
    }

    /// A frame the program passed on `port`, for the host stack.
    pub fn host_rx(&self, port: usize) -> Option<Frame> {
        self.shared.ports.get(port)?.host_rx.pop()
    }

    /// Queues a frame from the host stack for `port`; gives it back when the
    /// queue is full or the port does not exist.
    pub fn host_tx(&self, port: usize, frame: Frame) -> Result<(), Frame> {
        match self.shared.ports.get(port) {
            Some(e) => e.host_tx.push(frame),
            None => Err(frame),
        }
    }

    /// Starts capturing packets at `port`'s program exit (replacing any
    /// capture running there); false when the port does not exist.
    pub fn capture_start(&self, port: usize, tap: Arc<CaptureTap>) -> bool {
        match self.shared.ports.get(port) {
            Some(e) => {
                e.capture.store(Some(tap));
                true
            }
            None => false,
        }
    }

    /// Stops the capture on `port`.
    pub fn capture_stop(&self, port: usize) {
        if let Some(e) = self.shared.ports.get(port) {
            e.capture.store(None);
        }
    }

    /// A handle on the PASS and host-TX queues of every port, for a host
    /// stack running on its own thread.
    pub fn host_ports(&self) -> HostPorts {
        HostPorts {
            shared: self.shared.clone(),
        }
    }

    /// Reads every counter.
    pub fn stats(&self) -> Stats {
        let ports = self
            .shared
            .ports
            .iter()
            .enumerate()
            .map(|(p, e)| {
                let per_worker: Vec<PortSnapshot> = self
                    .shared
                    .stats
                    .iter()
                    .map(|w| {
                        let mut s = w[p].snapshot();
                        // The workers count program time in clock ticks.
                        s.prog_ns = clock::to_ns(s.prog_ns);
                        s
                    })
                    .collect();
                let mut total = PortSnapshot::default();
                for s in &per_worker {
                    total += *s;
                }
                let driver = e.port.queue_stats();
                let driver_of = |dir: Direction, q: u16| {
                    driver
                        .iter()
                        .find(|r| r.direction == dir && r.queue == q)
                        .map(|r| r.stats)
                };
                let rx_queues = self
                    .shared
                    .rx_queues
                    .iter()
                    .filter(|q| q.place.port == p)
                    .map(|q| RxQueueStats {
                        place: q.place,
                        counters: q.counters.snapshot(),
                        driver: driver_of(Direction::Rx, q.place.queue),
                    })
                    .collect();
                let tx_queues = per_worker
                    .iter()
                    .enumerate()
                    .map(|(w, c)| TxQueueStats {
                        place: QueuePlace {
                            port: p,
                            queue: w as u16,
                            worker: w,
                            core: self.shared.cores[w],
                        },
                        tx_packets: c.tx_packets,
                        tx_bytes: c.tx_bytes,
                        tx_full: c.tx_full,
                        driver: driver_of(Direction::Tx, w as u16),
                    })
                    .collect();
                PortStats {
                    info: e.info.clone(),
                    total,
                    per_worker,
                    rx_queues,
                    tx_queues,
                    ingress_version: e.ingress.version(),
                    egress_version: e.egress.version(),
                }
            })
            .collect();
        Stats {
            elapsed: self.started.elapsed(),
            ports,
        }
    }

    /// Stops the workers, waits for them, and returns the final counters.
    pub fn stop(mut self) -> Stats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        // Passed frames nobody consumed go back to their pools.
        for e in &self.shared.ports {
            while e.host_rx.pop().is_some() {}
            while e.host_tx.pop().is_some() {}
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Parses a core list in DPDK's `-l` grammar: `0-3,8`, `2`, `1,3-4`.
///
/// # Errors
/// A message naming the bad element.
pub fn parse_core_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cores = Vec::new();
    for part in s.split(',').map(str::trim) {
        let num = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("core list {s:?}: {x:?} is not a core number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("core list {s:?}: range {part:?} is backwards"));
                }
                cores.extend(a..=b);
            }
            None => cores.push(num(part)?),
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = cores.iter().find(|c| !seen.insert(**c)) {
        return Err(format!("core list {s:?}: core {d} appears twice"));
    }
    Ok(cores)
}

#[cfg(test)]
mod tests {
    use super::parse_core_list;

    #[test]
    fn core_lists() {
        assert_eq!(parse_core_list("0-3,8").unwrap(), vec![0, 1, 2, 3, 8]);
        assert_eq!(parse_core_list("1").unwrap(), vec![1]);
        assert!(parse_core_list("3-1").unwrap_err().contains("backwards"));
        assert!(parse_core_list("1,x").unwrap_err().contains("\"x\""));
        assert!(parse_core_list("1,1").unwrap_err().contains("twice"));
        assert!(parse_core_list("").is_err());
    }
}
