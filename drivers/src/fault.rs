//! A seeded fault injector for tests: wraps any [`RxQueue`] ([`FaultRx`])
//! or [`TxQueue`] ([`FaultTx`]) and, packet by packet, drops, corrupts (one
//! random bit flipped) or truncates, and reorders whole bursts (a
//! permutation: nothing is duplicated or lost by reordering).
//!
//! Everything random comes from one [`XorShift64`] seeded at construction,
//! drawn in a fixed order, so the same seed and the same traffic give the
//! same faults on every run and machine: a failing test names its seed and
//! replays exactly. What the injector did is counted in [`FaultCounters`],
//! kept apart from the wrapped queue's [`QueueStats`], so a test can tell
//! the faults it asked for from the drops the port made.
//!
//! Like smoltcp's `FaultInjector`, this is a device wrapper: the code under
//! test sees the same trait as with a real port.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{Burst, Frame, QueueStats, RxQueue, TxQueue, MAX_BURST};

/// A small, fast, seedable PRNG (Marsaglia's xorshift64 with Vigna's `*`
/// output multiplier), good enough for fault injection and not meant for
/// anything secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XorShift64 {
    state: u64,
}

impl XorShift64 {
    /// A generator for `seed`; every seed, 0 included, gives a distinct,
    /// well-mixed start (the seed goes through SplitMix64 first).
    pub fn new(seed: u64) -> XorShift64 {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // xorshift's state must not be 0.
        XorShift64 {
            state: if z == 0 { 0x2545_f491_4f6c_dd1d } else { z },
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0), by Lemire's multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p` (clamped to 0..=1; NaN counts as 0).
    pub fn chance(&mut self, p: f64) -> bool {
        self.hit(threshold(p))
    }

    /// True when 53 random bits fall under `t` (see [`threshold`]).
    fn hit(&mut self, t: u64) -> bool {
        t != 0 && (self.next_u64() >> 11) < t
    }
}

/// `p` as a threshold on 53 random bits: 0 never, 2^53 always.
fn threshold(p: f64) -> u64 {
    if p.is_nan() {
        return 0;
    }
    (p.clamp(0.0, 1.0) * (1u64 << 53) as f64) as u64
}

/// What faults to inject, and the seed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Seed of the random stream.
    pub seed: u64,
    /// Probability that a packet is dropped (freed, never seen).
    pub drop: f64,
    /// Probability that one random bit of a packet is flipped.
    pub corrupt: f64,
    /// Probability that a packet is cut to a random shorter length
    /// (`0..len`).
    pub truncate: f64,
    /// Probability that a burst (of two frames or more, after drops) is
    /// shuffled.
    pub reorder: f64,
}

/// What an injector did; shared, so a test keeps a handle after the
/// wrapped queue moved into a worker.
#[derive(Debug, Default)]
pub struct FaultCounters {
    seen: AtomicU64,
    dropped: AtomicU64,
    corrupted: AtomicU64,
    truncated: AtomicU64,
    reordered: AtomicU64,
}

/// A copy of [`FaultCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Packets that went through the injector.
    pub seen: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// Packets with a bit flipped.
    pub corrupted: u64,
    /// Packets cut short.
    pub truncated: u64,
    /// Bursts shuffled.
    pub reordered_bursts: u64,
}

impl FaultCounters {
    /// Reads the counters.
    pub fn snapshot(&self) -> FaultStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FaultStats {
            seen: r(&self.seen),
            dropped: r(&self.dropped),
            corrupted: r(&self.corrupted),
            truncated: r(&self.truncated),
            reordered_bursts: r(&self.reordered),
        }
    }
}

/// Single-writer increment (the injector's owner is the only writer).
fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// The faults themselves, applied to frames of a burst; what [`FaultRx`]
/// and [`FaultTx`] use, and usable on any burst.
pub struct FaultInjector {
    rng: XorShift64,
    drop: u64,
    corrupt: u64,
    truncate: u64,
    reorder: u64,
    scratch: [Option<Frame>; MAX_BURST],
    counters: Arc<FaultCounters>,
}

impl std::fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultInjector")
            .field("rng", &self.rng)
            .field("counters", &self.counters)
            .finish()
    }
}

impl FaultInjector {
    /// An injector for `config`.
    pub fn new(config: FaultConfig) -> FaultInjector {
        FaultInjector {
            rng: XorShift64::new(config.seed),
            drop: threshold(config.drop),
            corrupt: threshold(config.corrupt),
            truncate: threshold(config.truncate),
            reorder: threshold(config.reorder),
            scratch: std::array::from_fn(|_| None),
            counters: Arc::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> Arc<FaultCounters> {
        Arc::clone(&self.counters)
    }

    /// Applies faults to the frames of `burst` from index `from` on;
    /// survivors stay in the burst after the first `from` frames. Per
    /// packet, in this order: drop, corrupt, truncate; then maybe a shuffle
    /// of the survivors. Never allocates.
    pub fn apply(&mut self, burst: &mut Burst, from: usize) {
        let n = burst.len().saturating_sub(from);
        for i in (0..n).rev() {
            self.scratch[i] = burst.pop();
        }
        let mut kept = 0;
        for i in 0..n {
            let Some(mut f) = self.scratch[i].take() else {
                continue;
            };
            bump(&self.counters.seen);
            if self.rng.hit(self.drop) {
                bump(&self.counters.dropped);
                continue; // `f` goes home to its pool
            }
            if self.rng.hit(self.corrupt) && !f.is_empty() {
                let bit = self.rng.below(f.len() as u64 * 8) as usize;
                f.data_mut()[bit / 8] ^= 1 << (bit % 8);
                bump(&self.counters.corrupted);
            }
            if self.rng.hit(self.truncate) && !f.is_empty() {
                let len = self.rng.below(f.len() as u64) as usize;
                f.set_bounds(f.head(), len);
                bump(&self.counters.truncated);
            }
            self.scratch[kept] = Some(f);
            kept += 1;
        }
        if kept >= 2 && self.rng.hit(self.reorder) {
            // Fisher-Yates: every order equally likely, no frame twice.
            for i in (1..kept).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                self.scratch.swap(i, j);
            }
            bump(&self.counters.reordered);
        }
        for slot in &mut self.scratch[..kept] {
            if let Some(f) = slot.take() {
                // Cannot fail: these frames came out of this burst.
                let _ = burst.push(f);
            }
        }
    }
}

/// An RX queue with faults: what the inner queue receives goes through a
/// [`FaultInjector`] before the caller sees it. `stats()` are the inner
/// queue's (what the port received); injected faults are in
/// [`FaultRx::counters`].
#[derive(Debug)]
pub struct FaultRx<Q> {
    inner: Q,
    faults: FaultInjector,
}

impl<Q: RxQueue> FaultRx<Q> {
    /// Wraps `inner`.
    pub fn new(inner: Q, config: FaultConfig) -> Self {
        FaultRx {
            inner,
            faults: FaultInjector::new(config),
        }
    }

    /// What the injector did.
    pub fn counters(&self) -> Arc<FaultCounters> {
        self.faults.counters()
    }

    /// The wrapped queue.
    pub fn into_inner(self) -> Q {
        self.inner
    }
}

impl<Q: RxQueue> RxQueue for FaultRx<Q> {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let start = burst.len();
        self.inner.rx_burst(burst);
        self.faults.apply(burst, start);
        burst.len() - start
    }

    fn stats(&self) -> &QueueStats {
        self.inner.stats()
    }
}

/// A TX queue with faults: frames go through a [`FaultInjector`] before the
/// inner queue sees them. A dropped frame counts as taken (the caller sees
/// a lossy link, not a full ring). Frames the inner queue leaves in the
/// burst have had their faults already, and get new ones if offered again.
#[derive(Debug)]
pub struct FaultTx<Q> {
    inner: Q,
    faults: FaultInjector,
}

impl<Q: TxQueue> FaultTx<Q> {
    /// Wraps `inner`.
    pub fn new(inner: Q, config: FaultConfig) -> Self {
        FaultTx {
            inner,
            faults: FaultInjector::new(config),
        }
    }

    /// What the injector did.
    pub fn counters(&self) -> Arc<FaultCounters> {
        self.faults.counters()
    }

    /// The wrapped queue.
    pub fn into_inner(self) -> Q {
        self.inner
    }
}

impl<Q: TxQueue> TxQueue for FaultTx<Q> {
    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let before = burst.len();
        self.faults.apply(burst, 0);
        self.inner.tx_burst(burst);
        before - burst.len()
    }

    fn poll(&mut self) {
        self.inner.poll();
    }

    fn stats(&self) -> &QueueStats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{RingEndpoint, RingPort};
    use crate::{FramePool, Port};

    /// Feeds `n` tagged 64-byte packets through a FaultRx and returns what
    /// came out, burst by burst.
    fn run(config: FaultConfig, n: u32) -> (Vec<Vec<Vec<u8>>>, FaultStats, RingEndpoint) {
        let (port, ep) = RingPort::with_endpoint("fault", 1, 1024);
        let full = ep.pool().available();
        for i in 0..n {
            let mut p = vec![0u8; 64];
            p[..4].copy_from_slice(&i.to_be_bytes());
            ep.send(0, ep.frame(&p).unwrap()).unwrap();
        }
        let mut rx = FaultRx::new(port.open_rx(0).unwrap(), config);
        let counters = rx.counters();
        let mut burst = Burst::new(16);
        let mut out = Vec::new();
        while port.rx_pending(0) > 0 {
            rx.rx_burst(&mut burst);
            out.push(burst.iter().map(|f| f.data().to_vec()).collect());
            burst.free_all();
        }
        assert_eq!(
            ep.pool().available(),
            full,
            "every frame went home, dropped ones too"
        );
        (out, counters.snapshot(), ep)
    }

    fn tag(p: &[u8]) -> u32 {
        u32::from_be_bytes(p[..4].try_into().unwrap())
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let cfg = FaultConfig {
            seed: 42,
            drop: 0.1,
            corrupt: 0.2,
            truncate: 0.1,
            reorder: 0.5,
        };
        let (a, sa, _) = run(cfg, 500);
        let (b, sb, _) = run(cfg, 500);
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert_eq!(sa.seen, 500);
        assert!(sa.dropped > 20 && sa.dropped < 90, "{sa:?}");
        assert!(
            sa.corrupted > 40 && sa.truncated > 20 && sa.reordered_bursts > 5,
            "{sa:?}"
        );
        let (c, sc, _) = run(FaultConfig { seed: 43, ..cfg }, 500);
        assert_ne!(a, c, "another seed, other faults");
        assert_ne!(sa, sc);
    }

    #[test]
    fn no_faults_is_the_identity() {
        let (out, s, _) = run(FaultConfig::default(), 100);
        let tags: Vec<u32> = out.iter().flatten().map(|p| tag(p)).collect();
        assert_eq!(tags, (0..100).collect::<Vec<_>>());
        assert_eq!(
            s,
            FaultStats {
                seen: 100,
                ..FaultStats::default()
            }
        );
    }

    #[test]
    fn each_fault_does_what_it_says() {
        let (out, s, ep) = run(
            FaultConfig {
                drop: 1.0,
                ..FaultConfig::default()
            },
            50,
        );
        assert!(out.iter().all(Vec::is_empty));
        assert_eq!((s.seen, s.dropped), (50, 50));
        drop(ep);

        let (out, s, _) = run(
            FaultConfig {
                corrupt: 1.0,
                seed: 7,
                ..FaultConfig::default()
            },
            50,
        );
        assert_eq!(s.corrupted, 50);
        for (i, p) in out.iter().flatten().enumerate() {
            let mut clean = vec![0u8; 64];
            clean[..4].copy_from_slice(&(i as u32).to_be_bytes());
            let flipped: u32 = p
                .iter()
                .zip(&clean)
                .map(|(a, b)| (a ^ b).count_ones())
                .sum();
            assert_eq!(flipped, 1, "packet {i}: exactly one bit flipped");
        }

        let (out, s, _) = run(
            FaultConfig {
                truncate: 1.0,
                ..FaultConfig::default()
            },
            50,
        );
        assert_eq!(s.truncated, 50);
        assert!(out.iter().flatten().all(|p| p.len() < 64));

        let (out, s, _) = run(
            FaultConfig {
                reorder: 1.0,
                ..FaultConfig::default()
            },
            64,
        );
        assert_eq!(s.reordered_bursts, 4);
        let mut tags: Vec<u32> = out.iter().flatten().map(|p| tag(p)).collect();
        assert_ne!(tags, (0..64).collect::<Vec<_>>(), "shuffled");
        // Within bursts only, and a permutation: nothing lost or doubled.
        for (k, b) in out.iter().enumerate() {
            let mut t: Vec<u32> = b.iter().map(|p| tag(p)).collect();
            t.sort_unstable();
            assert_eq!(t, (k as u32 * 16..k as u32 * 16 + 16).collect::<Vec<_>>());
        }
        tags.sort_unstable();
        assert_eq!(tags, (0..64).collect::<Vec<_>>());
    }

    #[test]
    fn faults_apply_only_to_the_new_frames_of_a_burst() {
        let (port, ep) = RingPort::with_endpoint("fault-keep", 1, 64);
        let full = ep.pool().available();
        let mut burst = Burst::new(8);
        burst.push(ep.frame(&[9; 64]).unwrap()).unwrap();
        for _ in 0..4 {
            ep.send(0, ep.frame(&[1; 64]).unwrap()).unwrap();
        }
        let mut rx = FaultRx::new(
            port.open_rx(0).unwrap(),
            FaultConfig {
                drop: 1.0,
                ..FaultConfig::default()
            },
        );
        assert_eq!(rx.rx_burst(&mut burst), 0);
        assert_eq!(burst.len(), 1);
        assert_eq!(burst.get(0).unwrap().data(), [9; 64]);
        assert_eq!(
            rx.stats().snapshot().packets,
            4,
            "the port did receive them"
        );
        burst.free_all();
        assert_eq!(ep.pool().available(), full);
    }

    #[test]
    fn a_lossy_tx_takes_what_it_drops() {
        let (port, ep) = RingPort::with_endpoint("fault-tx", 1, 64);
        let cfg = FaultConfig {
            seed: 1,
            drop: 0.5,
            ..FaultConfig::default()
        };
        let mut tx = FaultTx::new(port.open_tx(0).unwrap(), cfg);
        let mut burst = Burst::new(32);
        for _ in 0..32 {
            burst.push(ep.frame(&[3; 64]).unwrap()).unwrap();
        }
        assert_eq!(tx.tx_burst(&mut burst), 32);
        let s = tx.counters().snapshot();
        assert_eq!(s.seen, 32);
        assert_eq!(ep.tx_pending(0) as u64, 32 - s.dropped);
        assert!(s.dropped > 5 && s.dropped < 27, "{s:?}");
    }

    #[test]
    fn the_prng_is_fair_enough() {
        let mut r = XorShift64::new(0);
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            buckets[r.below(10) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (9_000..11_000).contains(&b)),
            "{buckets:?}"
        );
        assert!(!r.chance(0.0) && r.chance(1.0) && !r.chance(f64::NAN));
        assert_ne!(XorShift64::new(1), XorShift64::new(2));
    }
}
