//! The poll-mode worker: one thread per core, moving bursts of packets
//! through the current program of each port.
//!
//! Per burst a worker loads the port's ingress program once, runs it on
//! every frame, sorts the frames by verdict (drop, TX, redirect, pass),
//! runs each destination port's egress program, and issues one `tx_burst`
//! per destination. Then it marks a quiescent point. Nothing on this path
//! allocates, takes a lock, logs or makes a syscall (reading the clock for
//! the program-time counter is an `rdtsc`, see `clock`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sluice_bpf::helpers::action::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
use sluice_bpf::interp::{Redirect, XdpFrame};
use sluice_bpf::Vm;
use sluice_drivers::{Burst, Frame, RxQueue, TxQueue, MAX_BURST};

use crate::slot::Version;
use crate::stats::{verdict_index, BurstVerdicts, PortCounters as C};
use crate::{IdlePolicy, Shared};

/// An RX queue a worker polls.
pub(crate) struct RxAssignment {
    pub port: usize,
    pub queue: u16,
    /// Index into `Shared::rx_queues` (this queue's counters).
    pub slot: usize,
    pub q: Box<dyn RxQueue>,
}

/// Everything one worker owns.
pub(crate) struct Worker {
    pub index: usize,
    pub core: Option<usize>,
    pub rx: Vec<RxAssignment>,
    /// One TX queue on every port.
    pub tx: Vec<Box<dyn TxQueue>>,
    pub shared: Arc<Shared>,
    pub burst_size: usize,
}

/// Tries a full TX ring this many times (reclaiming in between) before the
/// rest of a burst is dropped and counted.
const TX_RETRIES: usize = 4;

impl Worker {
    pub(crate) fn run(mut self) {
        if let Some(core) = self.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                tracing::warn!(
                    worker = self.index,
                    core,
                    "could not pin the worker to its core"
                );
            }
        }
        // Frames this worker allocates and frees stay in its own cache
        // (given back when the worker ends).
        let _cache = sluice_drivers::pool::ThreadCache::enable();
        let shared = self.shared.clone();
        let w = self.index;
        let mut vm = Vm::for_cpu(w as u32);
        vm.set_engine(shared.engine);
        vm.set_fib(shared.fib.clone());
        let mut rx_burst = Burst::new(self.burst_size);
        let mut tx_bursts: Vec<Burst> = (0..shared.ports.len())
            .map(|_| Burst::new(MAX_BURST))
            .collect();
        let mut epoch = 0u64;
        let mut idle_rounds = 0u32;
        shared.quiescence.mark(w, epoch);
        while !shared.stop.load(Ordering::Relaxed) {
            let mut moved = 0;
            for a in &mut self.rx {
                let n = a.q.rx_burst(&mut rx_burst);
                if n == 0 {
                    continue;
                }
                moved += n;
                process(&shared, w, &mut vm, a, &mut rx_burst, &mut tx_bursts);
                flush(&shared, w, &mut vm, &mut self.tx, &mut tx_bursts);
            }
            moved += drain_host_tx(&shared, w, &mut tx_bursts);
            flush(&shared, w, &mut vm, &mut self.tx, &mut tx_bursts);
            for t in &mut self.tx {
                t.poll();
            }
            epoch += 1;
            shared.quiescence.mark(w, epoch);
            if moved == 0 {
                idle_rounds = idle_rounds.saturating_add(1);
                idle(shared.idle, idle_rounds);
            } else {
                idle_rounds = 0;
            }
        }
        // Frames still in hand go back to their pools when the bursts drop.
        shared.quiescence.mark(w, crate::slot::OFFLINE);
    }
}

fn idle(policy: IdlePolicy, rounds: u32) {
    match policy {
        IdlePolicy::Spin => std::hint::spin_loop(),
        IdlePolicy::Adaptive => {
            if rounds < 1024 {
                std::hint::spin_loop();
            } else if rounds < 4096 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

/// Runs `version` on one frame; returns the verdict and the redirect
/// target. A fault is an abort.
#[inline]
fn run_program(
    vm: &mut Vm,
    version: &Version,
    frame: &mut Frame,
    ifindex: u32,
    queue: u16,
    egress_ifindex: u32,
    counters: &C,
) -> (u64, u64) {
    let (head, len) = (frame.head(), frame.len());
    let mut xf = XdpFrame {
        buf: frame.buffer_mut(),
        meta: head,
        data: head,
        end: head + len,
        ingress_ifindex: ifindex,
        rx_queue_index: u32::from(queue),
        egress_ifindex,
        redirect: None,
    };
    let r = vm.run_xdp(&version.program, &mut xf);
    let (data, end, redirect) = (xf.data, xf.end, xf.redirect);
    frame.set_bounds(data, end - data);
    let target = match redirect {
        None => NO_TARGET,
        Some(Redirect::Port(ifindex)) => u64::from(ifindex),
        Some(Redirect::Cpu(cpu)) => CPU_TARGET | u64::from(cpu),
    };
    match r {
        Ok(v) => (v, target),
        Err(_) => {
            C::add(&counters.prog_faults, 1);
            (XDP_ABORTED, NO_TARGET)
        }
    }
}

fn process(
    shared: &Shared,
    w: usize,
    vm: &mut Vm,
    a: &RxAssignment,
    burst: &mut Burst,
    tx: &mut [Burst],
) {
    let (port, queue) = (a.port, a.queue);
    let entry = &shared.ports[port];
    let c = &shared.stats[w][port];
    let n = burst.len();
    let bytes: u64 = burst.iter().map(|f| f.len() as u64).sum();
    c.batch(n);
    C::add(&c.rx_packets, n as u64);
    C::add(&c.rx_bytes, bytes);
    // Verdicts are counted here and added to the shared counters (the
    // worker's and the queue's) once per burst.
    let mut verdicts: BurstVerdicts = [0; 5];
    let program = entry.ingress.load();
    let tap = entry.capture.load();
    let started = program.as_ref().map(|_| crate::clock::ticks());
    let ifindex = entry.info.ifindex;
    // Two passes, as vector dataplanes do: first every frame runs the
    // program where it lies in the burst, then every frame moves to its
    // destination. Moving a frame right after the program wrote its
    // bounds would load those fields while the stores are still in the
    // store buffer (a failed store-to-load forwarding, many cycles a
    // frame); a burst later they have long reached the cache.
    let mut actions = [XDP_ABORTED as u8; MAX_BURST];
    let mut targets = [NO_TARGET; MAX_BURST];
    for (i, frame) in burst.iter_mut().enumerate() {
        // Where it came in, for the egress program of the port it leaves by.
        frame.rx_port = port as u16;
        let (verdict, target) = match &program {
            None => (XDP_PASS, NO_TARGET),
            Some(v) => run_program(vm, v, frame, ifindex, queue, 0, c),
        };
        if let Some(t) = tap.as_ref() {
            if t.wants(verdict) {
                t.record(frame.data(), verdict, w, queue);
            }
        }
        verdicts[verdict_index(verdict)] += 1;
        // Anything but the four actions is an abort.
        actions[i] = if verdict <= XDP_REDIRECT {
            verdict as u8
        } else {
            XDP_ABORTED as u8
        };
        targets[i] = target;
    }
    let mut i = 0;
    burst.drain_front(n, |frame| {
        let (action, target) = (u64::from(actions[i]), targets[i]);
        i += 1;
        match action {
            XDP_TX => queue_tx(&mut tx[port], frame, c),
            // A cpumap entry: to the network stack, which in Sluice is the
            // host stack behind this port (Linux hands it to the stack on
            // that CPU).
            XDP_REDIRECT if target & CPU_TARGET != 0 && target != NO_TARGET => {
                to_host(shared, entry, frame, c);
            }
            XDP_REDIRECT => {
                let dst = u32::try_from(target)
                    .ok()
                    .and_then(|ifx| shared.port_by_ifindex(ifx));
                match dst {
                    Some(dst) => queue_tx(&mut tx[dst], frame, c),
                    None => C::add(&c.redirect_invalid, 1),
                }
            }
            XDP_PASS => to_host(shared, entry, frame, c),
            // Drop and abort: the frame goes back to its pool here.
            _ => {}
        }
    });
    c.verdicts(&verdicts);
    shared.rx_queues[a.slot].counters.burst(n, bytes, &verdicts);
    if let Some(t) = started {
        C::add(&c.prog_runs, n as u64);
        C::add(&c.prog_ns, crate::clock::ticks().wrapping_sub(t));
    }
}

/// "No redirect target" in a burst's target list; otherwise a target is a
/// port's ifindex, or [`CPU_TARGET`] | a CPU (a cpumap entry).
const NO_TARGET: u64 = u64::MAX;
/// Marks a CPU target.
const CPU_TARGET: u64 = 1 << 32;

/// Hands a frame to the host stack behind `entry` (PASS, and redirects
/// into a cpumap); a full queue, or no stack, drops it and counts why.
#[inline]
fn to_host(shared: &Shared, entry: &crate::PortEntry, frame: Frame, c: &C) {
    if !shared.host_stack {
        C::add(&c.pass_no_stack, 1);
    } else if entry.host_rx.push(frame).is_err() {
        C::add(&c.pass_full, 1);
    }
}

/// Queues a frame for a port; a full burst (more than one RX burst's worth
/// aimed at one port before a flush) drops the frame.
#[inline]
fn queue_tx(b: &mut Burst, frame: Frame, c: &C) {
    if b.push(frame).is_err() {
        C::add(&c.tx_full, 1);
    }
}

/// Frames the host stack wants sent: worker 0 moves them to the TX bursts.
fn drain_host_tx(shared: &Shared, w: usize, tx: &mut [Burst]) -> usize {
    if w != 0 || !shared.host_stack {
        return 0;
    }
    let mut moved = 0;
    for (p, entry) in shared.ports.iter().enumerate() {
        while !tx[p].is_full() {
            let Some(f) = entry.host_tx.pop() else { break };
            C::add(&shared.stats[w][p].host_tx, 1);
            let mut f = f;
            f.rx_port = u16::MAX; // from the host: no ingress port
            let _ = tx[p].push(f);
            moved += 1;
        }
    }
    moved
}

fn flush(shared: &Shared, w: usize, vm: &mut Vm, txq: &mut [Box<dyn TxQueue>], tx: &mut [Burst]) {
    for (p, b) in tx.iter_mut().enumerate() {
        if b.is_empty() {
            continue;
        }
        let entry = &shared.ports[p];
        let c = &shared.stats[w][p];
        if let Some(egress) = entry.egress.load() {
            let n = b.len();
            let ifindex = entry.info.ifindex;
            // Egress: the program decides again; anything but a drop or
            // abort is sent.
            let mut keep = Burst::new(MAX_BURST);
            b.drain_front(n, |mut f| {
                let ingress = shared
                    .ports
                    .get(usize::from(f.rx_port))
                    .map_or(0, |e| e.info.ifindex);
                let rxq = f.rx_queue;
                let (v, _) = run_program(vm, &egress, &mut f, ingress, rxq, ifindex, c);
                if v == XDP_DROP || v == XDP_ABORTED || v > XDP_REDIRECT {
                    C::add(&c.egress_drop, 1);
                } else {
                    let _ = keep.push(f);
                }
            });
            std::mem::swap(b, &mut keep);
        }
        let q = &mut txq[p];
        for attempt in 0..=TX_RETRIES {
            let bytes: u64 = b.iter().map(|f| f.len() as u64).sum();
            let sent = q.tx_burst(b);
            let left: u64 = b.iter().map(|f| f.len() as u64).sum();
            C::add(&c.tx_packets, sent as u64);
            C::add(&c.tx_bytes, bytes - left);
            if b.is_empty() || attempt == TX_RETRIES {
                break;
            }
            q.poll();
        }
        if !b.is_empty() {
            C::add(&c.tx_full, b.len() as u64);
            b.free_all();
        }
    }
}
