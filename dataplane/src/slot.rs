//! Program slots: one per (port, hook), swapped atomically while traffic
//! flows.
//!
//! A slot holds the current [`Version`] (a program and a version number).
//! A worker loads it once per burst, so every packet of a burst is handled
//! by one whole version, and reports the version it used as its quiescent
//! mark when the burst is done. The control thread swaps in a new version
//! with one atomic store; the old version is freed when the last worker
//! that loaded it drops its reference, which is after that worker's burst,
//! i.e. after it passed a quiescent point. [`ProgramSlot::wait_quiescent`]
//! lets the control side wait until every worker has moved on, so a swap
//! can be reported as complete.
//!
//! Loads are `arc_swap` loads: wait-free in the common case, no allocation,
//! no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use sluice_bpf::Program;

/// A program version in a slot.
#[derive(Debug)]
pub struct Version {
    /// Monotonic per slot, starting at 1 (0 means "no program").
    pub id: u64,
    /// The program.
    pub program: Arc<Program>,
    /// A label for humans (object path and section).
    pub label: String,
}

/// Why a compare-and-swap did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("slot holds version {current}, not the expected {expected}")]
pub struct StaleVersion {
    /// The version the caller expected.
    pub expected: u64,
    /// The version the slot holds.
    pub current: u64,
}

/// One hook's program.
#[derive(Debug, Default)]
pub struct ProgramSlot {
    current: ArcSwapOption<Version>,
    next_id: AtomicU64,
    swaps: AtomicU64,
}

impl ProgramSlot {
    /// An empty slot.
    pub fn new() -> ProgramSlot {
        ProgramSlot::default()
    }

    /// The current version (per burst, on the worker side).
    #[inline]
    pub fn load(&self) -> Option<Arc<Version>> {
        self.current.load_full()
    }

    /// The current version's id, 0 when empty.
    pub fn version(&self) -> u64 {
        self.current.load().as_ref().map_or(0, |v| v.id)
    }

    /// Swaps completed so far.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }

    fn make(&self, program: Option<Arc<Program>>, label: String) -> Option<Arc<Version>> {
        program.map(|program| {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
            Arc::new(Version { id, program, label })
        })
    }

    /// Installs `program` (or empties the slot); returns the new version id
    /// (0 when emptied).
    pub fn store(&self, program: Option<Arc<Program>>, label: String) -> u64 {
        let v = self.make(program, label);
        let id = v.as_ref().map_or(0, |v| v.id);
        self.current.store(v);
        self.swaps.fetch_add(1, Ordering::Relaxed);
        id
    }

    /// Installs `program` only if the slot still holds version `expected`
    /// (0: only if empty).
    ///
    /// # Errors
    /// [`StaleVersion`] naming the version the slot holds; nothing changes.
    pub fn compare_and_store(
        &self,
        expected: u64,
        program: Option<Arc<Program>>,
        label: String,
    ) -> Result<u64, StaleVersion> {
        let cur = self.current.load();
        let current = cur.as_ref().map_or(0, |v| v.id);
        if current != expected {
            return Err(StaleVersion { expected, current });
        }
        let v = self.make(program, label);
        let id = v.as_ref().map_or(0, |v| v.id);
        let prev = self.current.compare_and_swap(&*cur, v);
        let won = match (&*prev, &*cur) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !won {
            let now = prev.as_ref().map_or(0, |v| v.id);
            return Err(StaleVersion {
                expected,
                current: now,
            });
        }
        self.swaps.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }
}

/// Each worker's quiescent mark: a counter it bumps after every burst (and
/// sets to `u64::MAX` while parked or stopped).
#[derive(Debug)]
pub struct Quiescence {
    marks: Box<[crate::stats::Padded<AtomicU64>]>,
}

/// A worker that is not running holds no program reference.
pub const OFFLINE: u64 = u64::MAX;

impl Quiescence {
    /// Marks for `workers` workers, all offline.
    pub fn new(workers: usize) -> Quiescence {
        Quiescence {
            marks: (0..workers)
                .map(|_| crate::stats::Padded(AtomicU64::new(OFFLINE)))
                .collect(),
        }
    }

    /// Worker `w` finished a burst (or went offline with [`OFFLINE`]).
    #[inline]
    pub fn mark(&self, w: usize, value: u64) {
        if let Some(m) = self.marks.get(w) {
            m.0.store(value, Ordering::Release);
        }
    }

    /// Waits until every online worker has passed a quiescent point after
    /// this call began; false on timeout.
    pub fn wait(&self, timeout: Duration) -> bool {
        let start: Vec<u64> = self
            .marks
            .iter()
            .map(|m| m.0.load(Ordering::Acquire))
            .collect();
        let deadline = Instant::now() + timeout;
        loop {
            let done = self.marks.iter().zip(&start).all(|(m, &s)| {
                let now = m.0.load(Ordering::Acquire);
                s == OFFLINE || now == OFFLINE || now != s
            });
            if done {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

impl ProgramSlot {
    /// Waits until every worker has passed a quiescent point, so none can
    /// still be running a version older than the current one.
    pub fn wait_quiescent(&self, q: &Quiescence, timeout: Duration) -> bool {
        q.wait(timeout)
    }
}
