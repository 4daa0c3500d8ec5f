//! Dataplane counters: per worker and port, written only by the worker
//! (relaxed load + store, no read-modify-write), summed by the control
//! thread.
//!
//! Every received packet gets exactly one verdict counter (drop, tx,
//! redirect, pass, aborted), so for any port
//! `rx = drop + tx + redirect + pass + aborted` once nothing is in flight.
//! What happens after the verdict is counted apart: a full TX ring, a
//! redirect to a port that does not exist, a full host queue.

use std::sync::atomic::{AtomicU64, Ordering};

/// Pads a value to its own cache line so workers never share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Padded<T>(pub T);

/// Batch-size histogram bucket upper bounds (inclusive).
pub const BATCH_BUCKETS: [usize; 7] = [1, 3, 7, 15, 31, 63, 64];

macro_rules! counters {
    ($(#[$m:meta])* $name:ident / $snap:ident { $($(#[$fm:meta])* $f:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        #[repr(align(64))]
        pub struct $name {
            $($(#[$fm])* pub $f: AtomicU64,)*
            /// Batches by size, bucketed by [`BATCH_BUCKETS`].
            pub batch_hist: [AtomicU64; BATCH_BUCKETS.len()],
        }

        /// A copy of the counters, summable.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct $snap {
            $($(#[$fm])* pub $f: u64,)*
            /// Batches by size, bucketed by [`BATCH_BUCKETS`].
            pub batch_hist: [u64; BATCH_BUCKETS.len()],
        }

        impl $name {
            /// Reads every counter.
            pub fn snapshot(&self) -> $snap {
                $snap {
                    $($f: self.$f.load(Ordering::Relaxed),)*
                    batch_hist: std::array::from_fn(|i| self.batch_hist[i].load(Ordering::Relaxed)),
                }
            }
        }

        impl std::ops::AddAssign for $snap {
            fn add_assign(&mut self, o: $snap) {
                $(self.$f += o.$f;)*
                for (a, b) in self.batch_hist.iter_mut().zip(o.batch_hist) {
                    *a += b;
                }
            }
        }
    };
}

counters! {
    /// One worker's counters for one port.
    PortCounters / PortSnapshot {
        /// Packets received.
        rx_packets,
        /// Bytes received.
        rx_bytes,
        /// Packets sent.
        tx_packets,
        /// Bytes sent.
        tx_bytes,
        /// Verdict XDP_DROP.
        xdp_drop,
        /// Verdict XDP_TX.
        xdp_tx,
        /// Verdict XDP_REDIRECT.
        xdp_redirect,
        /// Verdict XDP_PASS.
        xdp_pass,
        /// Verdict XDP_ABORTED, a run-time fault, or an unknown verdict.
        xdp_aborted,
        /// Program runs that faulted (memory, budget, helper): on ingress
        /// they count as aborted, on egress as egress drops.
        prog_faults,
        /// Redirects to a port that does not exist (dropped).
        redirect_invalid,
        /// Frames the TX ring would not take (dropped).
        tx_full,
        /// Frames the egress program dropped.
        egress_drop,
        /// Passed frames (XDP_PASS, or a redirect into a cpumap entry) the
        /// host queue had no room for (dropped).
        pass_full,
        /// Passed frames (as above) dropped because no host stack runs.
        pass_no_stack,
        /// Frames the host stack sent out of this port.
        host_tx,
        /// Bursts processed.
        batches,
        /// Program runs.
        prog_runs,
        /// Nanoseconds spent in programs (in a worker's counters: ticks of
        /// the program-time clock, converted by `Dataplane::stats`).
        prog_ns,
    }
}

counters! {
    /// One RX queue's counters, written once per burst by the worker that
    /// polls the queue (each RX queue belongs to exactly one worker).
    QueueCounters / QueueSnapshot {
        /// Packets received.
        rx_packets,
        /// Bytes received.
        rx_bytes,
        /// Verdict XDP_DROP.
        xdp_drop,
        /// Verdict XDP_TX.
        xdp_tx,
        /// Verdict XDP_REDIRECT.
        xdp_redirect,
        /// Verdict XDP_PASS.
        xdp_pass,
        /// Verdict XDP_ABORTED, a fault or an unknown verdict.
        xdp_aborted,
        /// Bursts received.
        batches,
    }
}

/// Verdict counts of one burst, kept in registers and added to the shared
/// counters once per burst: index with [`verdict_index`].
pub type BurstVerdicts = [u64; 5];

/// Where a verdict is counted in [`BurstVerdicts`]: drop, tx, redirect,
/// pass, and everything else (aborted).
#[inline]
pub fn verdict_index(v: u64) -> usize {
    use sluice_bpf::helpers::action::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
    match v {
        XDP_DROP => 0,
        XDP_TX => 1,
        XDP_REDIRECT => 2,
        XDP_PASS => 3,
        _ => 4,
    }
}

impl QueueCounters {
    /// Counts one burst of `n` packets, `bytes` bytes, and its verdicts
    /// (owner thread only).
    #[inline]
    pub fn burst(&self, n: usize, bytes: u64, v: &BurstVerdicts) {
        let add = PortCounters::add;
        add(&self.rx_packets, n as u64);
        add(&self.rx_bytes, bytes);
        add(&self.batches, 1);
        add(&self.xdp_drop, v[0]);
        add(&self.xdp_tx, v[1]);
        add(&self.xdp_redirect, v[2]);
        add(&self.xdp_pass, v[3]);
        add(&self.xdp_aborted, v[4]);
        add(&self.batch_hist[bucket(n)], 1);
    }
}

fn bucket(n: usize) -> usize {
    BATCH_BUCKETS
        .iter()
        .position(|&b| n <= b)
        .unwrap_or(BATCH_BUCKETS.len() - 1)
}

impl PortCounters {
    /// Adds to a counter (owner thread only).
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Counts one batch of `n` packets.
    #[inline]
    pub fn batch(&self, n: usize) {
        Self::add(&self.batches, 1);
        Self::add(&self.batch_hist[bucket(n)], 1);
    }

    /// Adds one burst's verdict counts (owner thread only).
    #[inline]
    pub fn verdicts(&self, v: &BurstVerdicts) {
        Self::add(&self.xdp_drop, v[0]);
        Self::add(&self.xdp_tx, v[1]);
        Self::add(&self.xdp_redirect, v[2]);
        Self::add(&self.xdp_pass, v[3]);
        Self::add(&self.xdp_aborted, v[4]);
    }
}

impl QueueSnapshot {
    /// All verdicts counted.
    pub fn verdicts(&self) -> u64 {
        self.xdp_drop + self.xdp_tx + self.xdp_redirect + self.xdp_pass + self.xdp_aborted
    }
}

impl PortSnapshot {
    /// All verdicts counted: equals `rx_packets` when nothing is in flight.
    pub fn verdicts(&self) -> u64 {
        self.xdp_drop + self.xdp_tx + self.xdp_redirect + self.xdp_pass + self.xdp_aborted
    }

    /// Every packet dropped for any reason, by reason name.
    pub fn drops(&self) -> [(&'static str, u64); 7] {
        [
            ("xdp_drop", self.xdp_drop),
            ("xdp_aborted", self.xdp_aborted),
            ("redirect_invalid", self.redirect_invalid),
            ("tx_full", self.tx_full),
            ("egress_drop", self.egress_drop),
            ("pass_full", self.pass_full),
            ("pass_no_stack", self.pass_no_stack),
        ]
    }
}
