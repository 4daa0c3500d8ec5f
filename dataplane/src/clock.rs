//! The clock of the program-time counter: the CPU's time-stamp counter on
//! x86-64 (read twice per burst, so its cost matters: `rdtsc` is a few
//! cycles, a `clock_gettime` through the vDSO some 20 ns), the monotonic
//! clock elsewhere. Ticks become nanoseconds with a rate measured once per
//! process against the monotonic clock ([`ns_per_tick`]); the time-stamp
//! counters of current x86-64 CPUs (and of VMs on them) run at a constant
//! rate whatever the core's frequency (`constant_tsc`, `nonstop_tsc`).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Ticks now.
#[inline]
pub(crate) fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` has no preconditions; it reads a counter.
        #[allow(unsafe_code)]
        unsafe {
            std::arch::x86_64::_rdtsc()
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Nanoseconds per tick, measured the first time it is asked for (a
/// 5 ms busy wait, done when a dataplane starts, never on the packet path).
pub(crate) fn ns_per_tick() -> f64 {
    static RATE: OnceLock<f64> = OnceLock::new();
    *RATE.get_or_init(|| {
        let (t0, c0) = (Instant::now(), ticks());
        while t0.elapsed() < Duration::from_millis(5) {
            std::hint::spin_loop();
        }
        let (ns, c) = (t0.elapsed().as_nanos() as f64, ticks().wrapping_sub(c0));
        if c == 0 {
            1.0
        } else {
            ns / c as f64
        }
    })
}

/// Ticks to nanoseconds.
pub(crate) fn to_ns(ticks: u64) -> u64 {
    (ticks as f64 * ns_per_tick()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_measure_time() {
        let rate = ns_per_tick();
        assert!(rate > 0.0 && rate.is_finite(), "{rate}");
        let (t0, c0) = (Instant::now(), ticks());
        std::thread::sleep(Duration::from_millis(20));
        let (ns, c) = (t0.elapsed().as_nanos() as u64, ticks() - c0);
        let est = to_ns(c);
        // Within 5% of the monotonic clock over 20 ms (the rate is
        // measured over 5 ms; a loaded machine adds jitter at both ends).
        assert!(
            est.abs_diff(ns) * 20 < ns,
            "ticks say {est} ns, the clock {ns} ns"
        );
    }
}
