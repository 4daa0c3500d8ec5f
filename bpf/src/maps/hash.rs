//! Hash maps: `BPF_MAP_TYPE_HASH`, `BPF_MAP_TYPE_PERCPU_HASH`,
//! `BPF_MAP_TYPE_LRU_HASH` and `BPF_MAP_TYPE_LRU_PERCPU_HASH`.
//!
//! # Semantics
//!
//! As Linux's `kernel/bpf/hashtab.c` with preallocated elements: a full map
//! refuses a new key with `E2BIG` but still updates an existing one;
//! `BPF_NOEXIST` fails with `EEXIST` on a present key, `BPF_EXIST` with
//! `ENOENT` on an absent one, `BPF_F_LOCK` (no `bpf_spin_lock` support) and
//! unknown flag bits with `EINVAL`. `next_key` of nothing or of an absent
//! key is the first key. A per-CPU element inserted from the program side
//! has the other CPUs' copies zeroed. An LRU map never reports full: it
//! evicts an element that was not recently used instead.
//!
//! As in Linux's preallocated maps, an element deleted while a program
//! still holds a pointer to its value may be reused at once for another
//! key, and the program then sees the new key's value. Only the control
//! side's copying `lookup` guarantees a value that belongs to its key.
//!
//! # Layout
//!
//! Everything is allocated when the map is created; no operation
//! allocates afterwards. There are `n` element *slots* (`n = max_entries`,
//! rounded up to a multiple of the CPU count for `BPF_F_NO_COMMON_LRU`, as
//! Linux does), named by `u32` index:
//!
//! * `buckets`: a power-of-two number (`>= n`) of `{head, lock}` pairs. A
//!   chain is linked through slot indices; it ends with a *nulls* marker,
//!   `NULLS | bucket`, that names the bucket it ends (Linux's
//!   `hlist_nulls`).
//! * `slots`: per element, the chain link, the 32-bit hash, a generation
//!   (odd while the slot is not in a chain), a reference count, the free
//!   list link, the LRU reference bit and the first key word, in 32 bytes.
//! * `keys`: the rest of each key, in 64-bit words, zero-padded.
//! * the value area: `round_up(value_size, 8)` bytes per slot, 8-byte
//!   aligned; for per-CPU maps one cache-line-padded region per CPU.
//!
//! Keys and values are copied with relaxed atomic 64-bit loads and stores,
//! so the module needs no `unsafe`; programs get pointers into the value
//! area (see [`super::array`] for why that is sound).
//!
//! # Concurrency
//!
//! Lookups take no lock and never wait. Writers hold the bucket's spinlock
//! only to search and splice its chain. A lookup walks the chain with
//! acquire loads; it accepts an element only if its generation is even
//! (linked) before and unchanged after comparing the key (a seqlock on
//! the element), and it restarts if the walk ends in another bucket's
//! nulls marker (it followed an element that was deleted and reused
//! elsewhere, as Linux's lookups restart). A deleted element keeps its
//! chain link, so a reader standing on it still reaches the end of some
//! chain. A writer that updates a value in place pins the element (its
//! reference count) under the lock and copies after releasing it; a
//! deleted element returns to a free list only when the last pin goes, so
//! no writer ever copies into an element reused for another key.
//!
//! Free slots sit in one lock-free (tagged Treiber) stack per CPU, each
//! holding the slots of its CPU's share. An insert pops from its CPU's
//! stack and steals from the others when that is empty, so workers rarely
//! touch the same cache line.
//!
//! # LRU policy
//!
//! LRU maps approximate least-recently-used with CLOCK (second chance): a
//! program-side lookup sets the element's reference bit (a plain atomic
//! store, skipped when already set); when an insert finds no free slot, a
//! clock hand sweeps slots, clearing set bits and evicting the first
//! element whose bit is clear. Like Linux's lists, it is approximate:
//! an element survives at least one full sweep after its last use.
//!
//! * Common LRU (default): one hand sweeps all slots and an insert may
//!   take any CPU's free slot, so the whole capacity is shared and the
//!   coldest elements of the map go first; the hand is one shared atomic.
//! * `BPF_F_NO_COMMON_LRU`: each CPU owns `n / ncpus` slots, its own free
//!   stack and its own hand, and evicts only among the elements it
//!   inserted, so CPUs never contend; but a CPU's share is all it can
//!   use, and a busy CPU evicts its own keys while another's sit idle.
//!   Control-side inserts are spread over the CPUs' shares round-robin.

use std::any::Any;
use std::hash::{BuildHasher, Hasher};
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{fence, AtomicIsize, AtomicU32, AtomicU64, AtomicUsize};

use super::array::storage::{self, invalid_def, load_word, store_word, Padded, ValueArea};
use super::{flags, MapDef, MapError, MapOps, MapType};

/// Chain terminator bit: `NULLS | bucket` ends bucket `bucket`'s chain.
const NULLS: u32 = 1 << 31;
/// End of a free list.
const NIL: u32 = u32::MAX;
/// Most slots a map may have (indices must stay below [`NULLS`]).
const MAX_SLOTS: u64 = (NULLS - 1) as u64;
/// Spins on a busy bucket lock before yielding the thread: the holder may
/// have been preempted (userspace cannot disable preemption), and spinning
/// through its time slice helps nobody.
const SPINS_BEFORE_YIELD: u32 = 1 << 10;
/// Linux's `sizeof(struct htab_elem)` on x86-64, for its size limit.
const HTAB_ELEM_SIZE: u64 = 48;
/// Creation flags a hash map accepts (Linux's `HTAB_CREATE_FLAG_MASK`).
const HTAB_CREATE_FLAGS: u32 = flags::BPF_F_NO_PREALLOC
    | flags::BPF_F_NO_COMMON_LRU
    | storage::BPF_F_NUMA_NODE
    | storage::BPF_F_ACCESS_MASK
    | storage::BPF_F_ZERO_SEED;
/// Multiplier of the key hash (the PCG/Knuth 64-bit LCG multiplier).
const HASH_MULTIPLE: u64 = 0x5851_f42d_4c95_7f2d;

/// How an LRU map picks its victims (none for plain hash maps).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lru {
    /// Not an LRU map: a full map refuses new keys.
    Off,
    /// One clock over all slots, free slots shared by every CPU.
    Common,
    /// `BPF_F_NO_COMMON_LRU`: each CPU has its own slots and clock.
    PerCpu,
}

/// Per-element metadata.
#[repr(C, align(32))]
#[derive(Default)]
struct Slot {
    /// Next element of the chain, or `NULLS | bucket`. Kept when the
    /// element is unlinked, so a reader standing on it can go on.
    next: AtomicU32,
    /// Hash of the key (valid while linked).
    hash: AtomicU32,
    /// Generation: odd while free or being prepared, even while linked;
    /// incremented on every link and unlink.
    gen: AtomicU32,
    /// 1 for being linked (or held by the thread preparing it), plus 1
    /// per writer copying into the value; the slot is freed at 0.
    refs: AtomicU32,
    /// Next slot of the free stack.
    free_next: AtomicU32,
    /// LRU reference bit.
    referenced: AtomicU32,
    /// First 8 bytes of the key.
    key0: AtomicU64,
}

/// Where an element sits in its chain: what links to it.
#[derive(Clone, Copy)]
enum Pred {
    /// The bucket's head.
    Head,
    /// The `next` of this slot.
    Slot(u32),
}

/// A chain head and the spinlock writers hold to change the chain.
struct Bucket {
    head: AtomicU32,
    lock: AtomicU32,
}

/// Holds a bucket's lock; releases it on drop.
struct BucketGuard<'a>(&'a AtomicU32);

impl Drop for BucketGuard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Release);
    }
}

/// A key and its hash.
struct Key<'a> {
    bytes: &'a [u8],
    hash: u32,
}

/// Where the bytes of an update come from.
#[derive(Clone, Copy)]
enum Src<'a> {
    /// The value of a map that is not per-CPU.
    Plain(&'a [u8]),
    /// One CPU's copy (program side of a per-CPU map).
    OneCpu(usize, &'a [u8]),
    /// Every CPU's copy, each rounded up to 8 bytes (control side).
    AllCpus(&'a [u8]),
}

/// What a CLOCK visit did to a slot.
enum Visit {
    /// Not evicted (free, recently used, or changed under us).
    Skip,
    /// Evicted, and the slot is now the evicter's.
    Got,
    /// Evicted, but a writer still pins it; it frees the slot later.
    Unlinked,
}

/// Outcome of a walk for `next_key` in one bucket.
enum Chain {
    /// A key was copied out.
    Copied,
    /// The bucket has no (further) key.
    End,
    /// The key to continue from is not in the bucket.
    KeyAbsent,
}

/// A hash map of any of the four hash types; see the module docs.
pub struct HashMap {
    map_type: MapType,
    lru: Lru,
    percpu: bool,
    key_size: usize,
    /// `round_up(key_size, 8) / 8`.
    key_words: usize,
    value_size: usize,
    /// `round_up(value_size, 8) / 8`.
    elem_words: usize,
    /// Value copies per slot (`ncpus` for per-CPU maps, else 1).
    copies: usize,
    /// Words from one CPU's value region to the next.
    cpu_stride: usize,
    /// Number of slots.
    n_slots: u32,
    /// `buckets.len() - 1`.
    mask: u32,
    /// Slots per free list (the last may have fewer).
    part: u32,
    /// Hash seeds.
    seed: [u64; 2],
    buckets: Box<[Bucket]>,
    slots: Box<[Slot]>,
    /// Key words 1.. of each slot (`key_words - 1` per slot).
    keys: Box<[AtomicU64]>,
    values: ValueArea,
    /// Free stacks: tag (high 32 bits) and top slot (low 32 bits).
    free: Box<[Padded<AtomicU64>]>,
    /// Elements present, per free list (summed by `len`).
    counts: Box<[Padded<AtomicIsize>]>,
    /// CLOCK hands: none, one (common LRU) or one per CPU.
    hands: Box<[Padded<AtomicUsize>]>,
    /// Round-robin CPU for control-side inserts with per-CPU LRU.
    ctl_rr: AtomicUsize,
}

impl std::fmt::Debug for HashMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashMap")
            .field("type", &self.map_type.name())
            .field("key_size", &self.key_size)
            .field("value_size", &self.value_size)
            .field("slots", &self.n_slots)
            .field("buckets", &self.buckets.len())
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl HashMap {
    /// Creates a hash map of `def`'s type with every element preallocated;
    /// `ncpus` is the number of per-CPU copies and free lists.
    ///
    /// # Errors
    /// [`MapError::InvalidDef`] when a size is 0 or too large (key plus
    /// value under 4 MiB, per-CPU values up to 32 KiB, as Linux), the flags
    /// are not a hash map's (`BPF_F_NO_COMMON_LRU` without LRU,
    /// `BPF_F_NO_PREALLOC` with LRU), or the map would need more than
    /// 4 GiB.
    pub fn new(def: &MapDef, ncpus: usize) -> Result<HashMap, MapError> {
        let ncpus = ncpus.max(1);
        let (percpu, lru) = match def.map_type {
            MapType::Hash => (false, false),
            MapType::PercpuHash => (true, false),
            MapType::LruHash => (false, true),
            MapType::LruPercpuHash => (true, true),
            t => {
                return Err(invalid_def(
                    def,
                    format!("{} is not a hash map type", t.name()),
                ))
            }
        };
        storage::check_create_flags(def, HTAB_CREATE_FLAGS)?;
        let no_common = def.flags & flags::BPF_F_NO_COMMON_LRU != 0;
        if no_common && !lru {
            return Err(invalid_def(def, "BPF_F_NO_COMMON_LRU is only for LRU maps"));
        }
        if lru && def.flags & flags::BPF_F_NO_PREALLOC != 0 {
            return Err(invalid_def(def, "LRU maps cannot be BPF_F_NO_PREALLOC"));
        }
        if def.max_entries == 0 {
            return Err(invalid_def(def, "max_entries must be > 0"));
        }
        if def.key_size == 0 {
            return Err(invalid_def(def, "key_size must be > 0"));
        }
        if def.value_size == 0 {
            return Err(invalid_def(def, "value_size must be > 0"));
        }
        let (key_size, value_size) = (u64::from(def.key_size), u64::from(def.value_size));
        if key_size + value_size >= storage::KMALLOC_MAX_SIZE - HTAB_ELEM_SIZE {
            return Err(invalid_def(
                def,
                format!(
                    "key_size {key_size} + value_size {value_size} is too large (the limit is \
                     just under {} MiB)",
                    storage::KMALLOC_MAX_SIZE >> 20
                ),
            ));
        }
        let elem_bytes = value_size.next_multiple_of(8);
        if percpu && elem_bytes > storage::PCPU_MIN_UNIT_SIZE {
            return Err(invalid_def(
                def,
                format!(
                    "per-CPU value_size {value_size} is larger than {} KiB",
                    storage::PCPU_MIN_UNIT_SIZE >> 10
                ),
            ));
        }

        let lru = match (lru, no_common) {
            (false, _) => Lru::Off,
            (true, false) => Lru::Common,
            (true, true) => Lru::PerCpu,
        };
        let cpus = ncpus as u64;
        let mut n_slots = u64::from(def.max_entries);
        if lru == Lru::PerCpu {
            // Every CPU gets the same share, at least one slot (Linux).
            n_slots = n_slots.next_multiple_of(cpus);
        }
        if n_slots > MAX_SLOTS {
            return Err(invalid_def(
                def,
                format!(
                    "max_entries {} is more than the {MAX_SLOTS} a hash map may hold",
                    def.max_entries
                ),
            ));
        }
        let n_buckets = n_slots.next_power_of_two();
        let key_words = key_size.div_ceil(8);
        let copies = if percpu { cpus } else { 1 };
        let stride_bytes = n_slots * elem_bytes;
        let stride_bytes = stride_bytes.next_multiple_of(storage::CACHE_LINE as u64);
        let memory = (|| {
            let values = stride_bytes.checked_mul(copies)?;
            let keys = n_slots.checked_mul((key_words - 1) * 8)?;
            let meta = n_slots * 32 + n_buckets * 8 + cpus * 3 * storage::CACHE_LINE as u64;
            values.checked_add(keys)?.checked_add(meta)
        })();
        storage::check_budget(def, memory)?;

        // All sizes fit in u32 or are bounded by MAX_MAP_BYTES: casts below
        // are lossless.
        let n = n_slots as usize;
        let nlists = ncpus;
        let part = if lru == Lru::PerCpu {
            n_slots / cpus
        } else {
            n_slots.div_ceil(cpus)
        };
        let alloc_err = |what: &str| invalid_def(def, format!("cannot allocate the {what}"));
        let buckets = try_collect(n_buckets as usize, |b| Bucket {
            head: AtomicU32::new(NULLS | b as u32),
            lock: AtomicU32::new(0),
        })
        .ok_or_else(|| alloc_err("buckets"))?;
        let slots = try_collect(n, |_| Slot {
            gen: AtomicU32::new(1),
            ..Slot::default()
        })
        .ok_or_else(|| alloc_err("elements"))?;
        let keys = try_collect(n * (key_words as usize - 1), |_| AtomicU64::new(0))
            .ok_or_else(|| alloc_err("keys"))?;
        let cpu_stride = (stride_bytes / 8) as usize;
        let values =
            ValueArea::new(cpu_stride * copies as usize).map_err(|e| invalid_def(def, e))?;
        let free = (0..nlists)
            .map(|_| Padded(AtomicU64::new(u64::from(NIL))))
            .collect();
        let counts = (0..nlists).map(|_| Padded(AtomicIsize::new(0))).collect();
        let nhands = match lru {
            Lru::Off => 0,
            Lru::Common => 1,
            Lru::PerCpu => ncpus,
        };
        let hands = (0..nhands).map(|_| Padded(AtomicUsize::new(0))).collect();

        let map = HashMap {
            map_type: def.map_type,
            lru,
            percpu,
            key_size: key_size as usize,
            key_words: key_words as usize,
            value_size: value_size as usize,
            elem_words: (elem_bytes / 8) as usize,
            copies: copies as usize,
            cpu_stride,
            n_slots: n_slots as u32,
            mask: (n_buckets - 1) as u32,
            part: part.max(1) as u32,
            seed: if def.flags & storage::BPF_F_ZERO_SEED != 0 {
                [0, HASH_MULTIPLE]
            } else {
                random_seed()
            },
            buckets,
            slots,
            keys,
            values,
            free,
            counts,
            hands,
            ctl_rr: AtomicUsize::new(0),
        };
        // Each free stack gets its CPU's share; pushing in reverse makes
        // the first inserts take the lowest slots.
        for i in (0..map.n_slots).rev() {
            map.push(map.home(i), i);
        }
        Ok(map)
    }

    /// The number of elements the map holds when full: `max_entries`, or
    /// with `BPF_F_NO_COMMON_LRU` that rounded up to a multiple of the CPU
    /// count (Linux reports this rounded value as the map's `max_entries`).
    pub fn max_entries(&self) -> u32 {
        self.n_slots
    }

    // ---- hashing and keys ------------------------------------------------

    /// The key's hash: a seeded folded-multiply hash over its 64-bit words
    /// (the construction of aHash's fallback and wyhash), fast for the
    /// short keys of packet processing and well mixed in the low bits the
    /// bucket index uses.
    #[inline]
    fn hash(&self, key: &[u8]) -> u32 {
        let mut h = self.seed[0];
        for w in 0..self.key_words {
            h = folded_multiply(h ^ load_word(key, w), HASH_MULTIPLE);
        }
        let h = folded_multiply(h, self.seed[1]);
        (h ^ (h >> 32)) as u32
    }

    /// Checks the key's size and hashes it.
    #[inline]
    fn key<'a>(&self, bytes: &'a [u8]) -> Result<Key<'a>, MapError> {
        if bytes.len() != self.key_size {
            return Err(MapError::Invalid("key has the wrong size"));
        }
        Ok(Key {
            bytes,
            hash: self.hash(bytes),
        })
    }

    /// Key word `w` of slot `i`.
    #[inline]
    fn key_word(&self, i: u32, w: usize) -> &AtomicU64 {
        if w == 0 {
            &self.slots[i as usize].key0
        } else {
            &self.keys[i as usize * (self.key_words - 1) + w - 1]
        }
    }

    /// Whether slot `i` holds `key` (the caller checks the generation).
    #[inline]
    fn key_eq(&self, i: u32, key: &Key<'_>) -> bool {
        self.slots[i as usize].hash.load(Relaxed) == key.hash
            && (0..self.key_words)
                .all(|w| self.key_word(i, w).load(Relaxed) == load_word(key.bytes, w))
    }

    /// Copies slot `i`'s key into `out` (the caller checks the generation).
    fn copy_key(&self, i: u32, out: &mut [u8]) {
        for w in 0..self.key_words {
            store_word(out, w, self.key_word(i, w).load(Relaxed));
        }
    }

    // ---- values -------------------------------------------------------------

    /// First word of slot `i`'s value copy for `cpu`.
    #[inline]
    fn value_word(&self, i: u32, cpu: usize) -> usize {
        cpu * self.cpu_stride + i as usize * self.elem_words
    }

    /// Size of a control-side value buffer.
    fn ctl_value_len(&self) -> usize {
        if self.percpu {
            self.elem_words * 8 * self.copies
        } else {
            self.value_size
        }
    }

    /// Writes `src` into slot `i`; for a `fresh` element (not yet linked)
    /// a single CPU's write zeroes the other copies.
    fn write_value(&self, i: u32, src: Src<'_>, fresh: bool) {
        match src {
            Src::Plain(v) => self.values.write(self.value_word(i, 0), v),
            Src::OneCpu(cpu, v) => {
                self.values.write(self.value_word(i, cpu), v);
                if fresh {
                    for other in (0..self.copies).filter(|&c| c != cpu) {
                        self.values.zero(self.value_word(i, other), self.elem_words);
                    }
                }
            }
            Src::AllCpus(v) => {
                for (cpu, chunk) in v.chunks_exact(self.elem_words * 8).enumerate() {
                    self.values.write(self.value_word(i, cpu), chunk);
                }
            }
        }
    }

    /// Copies slot `i`'s value (every CPU's copy for per-CPU maps) into
    /// `out` (the caller checks the generation).
    fn read_value(&self, i: u32, out: &mut [u8]) {
        if self.percpu {
            for (cpu, chunk) in out.chunks_exact_mut(self.elem_words * 8).enumerate() {
                self.values.read(self.value_word(i, cpu), chunk);
            }
        } else {
            self.values.read(self.value_word(i, 0), out);
        }
    }

    // ---- chains ---------------------------------------------------------

    #[inline]
    fn bucket_of(&self, hash: u32) -> u32 {
        hash & self.mask
    }

    /// Takes bucket `b`'s lock.
    fn lock(&self, b: u32) -> BucketGuard<'_> {
        let lock = &self.buckets[b as usize].lock;
        let mut spins = 0;
        while lock.compare_exchange_weak(0, 1, Acquire, Relaxed).is_err() {
            while lock.load(Relaxed) != 0 {
                if spins < SPINS_BEFORE_YIELD {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        BucketGuard(lock)
    }

    /// Lock-free lookup: the slot holding `key` and the (even) generation
    /// it was seen with.
    #[inline]
    fn find(&self, key: &Key<'_>) -> Option<(u32, u32)> {
        let b = self.bucket_of(key.hash);
        let head = &self.buckets[b as usize].head;
        'restart: loop {
            let mut cur = head.load(Acquire);
            let mut steps = 0;
            while cur & NULLS == 0 {
                let slot = &self.slots[cur as usize];
                let gen = slot.gen.load(Acquire);
                if gen & 1 == 0 && self.key_eq(cur, key) {
                    // The key words were read between two loads of the
                    // generation: if it did not move, they were this
                    // element's while it was linked.
                    fence(Acquire);
                    if slot.gen.load(Relaxed) == gen {
                        return Some((cur, gen));
                    }
                }
                cur = slot.next.load(Acquire);
                steps += 1;
                if steps > self.n_slots {
                    continue 'restart; // walked in circles through reused elements
                }
            }
            if cur == NULLS | b {
                return None;
            }
            // Ended in another bucket's chain: an element we passed through
            // was deleted and reused meanwhile. Start again, as Linux does.
        }
    }

    /// With bucket `b` locked: the first slot of its chain for which
    /// `is_it` holds, and what links to it.
    fn find_locked(&self, b: u32, is_it: impl Fn(u32) -> bool) -> Option<(Pred, u32)> {
        let mut pred = Pred::Head;
        let mut cur = self.buckets[b as usize].head.load(Relaxed);
        while cur & NULLS == 0 {
            if is_it(cur) {
                return Some((pred, cur));
            }
            pred = Pred::Slot(cur);
            cur = self.slots[cur as usize].next.load(Relaxed);
        }
        None
    }

    /// With bucket `b` locked: puts prepared slot `i` at the chain's head.
    fn link(&self, b: u32, i: u32) {
        let head = &self.buckets[b as usize].head;
        let slot = &self.slots[i as usize];
        slot.next.store(head.load(Relaxed), Relaxed);
        // Odd to even, releasing the key and value written before.
        slot.gen.fetch_add(1, Release);
        head.store(i, Release);
    }

    /// With bucket `b` locked: removes slot `i`, linked from `pred`. Its
    /// own `next` stays, for readers standing on it.
    fn unlink(&self, b: u32, pred: Pred, i: u32) {
        let slot = &self.slots[i as usize];
        let link = match pred {
            Pred::Slot(p) => &self.slots[p as usize].next,
            Pred::Head => &self.buckets[b as usize].head,
        };
        link.store(slot.next.load(Relaxed), Release);
        slot.gen.fetch_add(1, Release);
    }

    /// Slot `i`'s hash if it is linked and stayed so while read.
    fn stable_hash(&self, i: u32) -> Option<u32> {
        let slot = &self.slots[i as usize];
        let gen = slot.gen.load(Acquire);
        let hash = slot.hash.load(Relaxed);
        fence(Acquire);
        (gen & 1 == 0 && slot.gen.load(Relaxed) == gen).then_some(hash)
    }

    // ---- slot lifetime ----------------------------------------------------

    /// The free list slot `i` belongs to.
    #[inline]
    fn home(&self, i: u32) -> usize {
        (i / self.part) as usize
    }

    /// The free list of a CPU.
    #[inline]
    fn list_of(&self, cpu: usize) -> usize {
        cpu % self.free.len()
    }

    /// The CPU a control-side insert acts for.
    fn ctl_cpu(&self) -> usize {
        if self.lru == Lru::PerCpu {
            self.ctl_rr.fetch_add(1, Relaxed) % self.free.len()
        } else {
            0
        }
    }

    fn push(&self, list: usize, i: u32) {
        let head = &self.free[list].0;
        let mut cur = head.load(Relaxed);
        loop {
            self.slots[i as usize].free_next.store(cur as u32, Relaxed);
            let new = ((cur >> 32).wrapping_add(1) << 32) | u64::from(i);
            match head.compare_exchange_weak(cur, new, Release, Relaxed) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    fn pop(&self, list: usize) -> Option<u32> {
        let head = &self.free[list].0;
        let mut cur = head.load(Acquire);
        loop {
            let top = cur as u32;
            if top == NIL {
                return None;
            }
            // May be stale if `top` was popped and pushed again since; the
            // tag then changed and the exchange fails.
            let next = self.slots[top as usize].free_next.load(Relaxed);
            let new = ((cur >> 32).wrapping_add(1) << 32) | u64::from(next);
            match head.compare_exchange_weak(cur, new, Acquire, Acquire) {
                Ok(_) => return Some(top),
                Err(now) => cur = now,
            }
        }
    }

    /// Adjusts the element count of slot `i`'s list.
    fn count(&self, i: u32, delta: isize) {
        self.counts[self.home(i)].0.fetch_add(delta, Relaxed);
    }

    /// Drops one reference to slot `i`; the last one frees it.
    fn release(&self, i: u32) {
        if self.slots[i as usize].refs.fetch_sub(1, AcqRel) == 1 {
            self.push(self.home(i), i);
        }
    }

    /// Returns a prepared slot that was not linked.
    fn discard(&self, prepared: Option<u32>) {
        if let Some(i) = prepared {
            self.slots[i as usize].refs.store(0, Relaxed);
            self.push(self.home(i), i);
        }
    }

    /// A free slot for an insert on `cpu`: from its free list, another
    /// CPU's (unless LRU lists are per CPU), or by eviction (LRU maps).
    fn alloc(&self, cpu: usize) -> Option<u32> {
        let own = self.list_of(cpu);
        if let Some(i) = self.pop(own) {
            return Some(i);
        }
        if self.lru != Lru::PerCpu {
            let n = self.free.len();
            if let Some(i) = (1..n).find_map(|d| self.pop((own + d) % n)) {
                return Some(i);
            }
        }
        match self.lru {
            Lru::Off => None,
            Lru::Common | Lru::PerCpu => self.evict(own),
        }
    }

    /// CLOCK: sweeps the hand over the slots `list`'s CPU may evict until
    /// one is evicted into its hands; gives up after two full turns.
    fn evict(&self, list: usize) -> Option<u32> {
        let (hand, base, len) = match self.lru {
            Lru::Off => return None,
            Lru::Common => (&self.hands[0].0, 0, self.n_slots as usize),
            Lru::PerCpu => (
                &self.hands[list].0,
                list * self.part as usize,
                self.part as usize,
            ),
        };
        for _ in 0..=2 * len {
            let i = (base + hand.fetch_add(1, Relaxed) % len) as u32;
            match self.visit(i) {
                Visit::Got => return Some(i),
                Visit::Skip | Visit::Unlinked => {}
            }
        }
        // Everything was pinned or in flight; a slot may have been freed.
        self.pop(list)
    }

    /// One CLOCK step at slot `i`.
    fn visit(&self, i: u32) -> Visit {
        let slot = &self.slots[i as usize];
        if slot.gen.load(Relaxed) & 1 != 0 {
            return Visit::Skip;
        }
        if slot.referenced.load(Relaxed) != 0 {
            slot.referenced.store(0, Relaxed);
            return Visit::Skip;
        }
        let Some(hash) = self.stable_hash(i) else {
            return Visit::Skip;
        };
        let b = self.bucket_of(hash);
        let guard = self.lock(b);
        // Under b's lock, a slot linked in b stays linked; check it is.
        if self.stable_hash(i).map(|h| self.bucket_of(h)) != Some(b) {
            return Visit::Skip;
        }
        let Some((pred, _)) = self.find_locked(b, |cur| cur == i) else {
            return Visit::Skip;
        };
        self.unlink(b, pred, i);
        drop(guard);
        self.count(i, -1);
        if slot.refs.fetch_sub(1, AcqRel) == 1 {
            Visit::Got
        } else {
            Visit::Unlinked
        }
    }

    /// A slot holding `key` and `src`'s value, not yet linked.
    fn prepare(&self, key: &Key<'_>, src: Src<'_>, cpu: usize) -> Option<u32> {
        let i = self.alloc(cpu)?;
        // Readers that still look at this slot's previous life compare its
        // generation after reading; this orders the writes below after the
        // unlink that made it odd, so they see the change.
        fence(Release);
        let slot = &self.slots[i as usize];
        slot.hash.store(key.hash, Relaxed);
        for w in 0..self.key_words {
            self.key_word(i, w).store(load_word(key.bytes, w), Relaxed);
        }
        self.write_value(i, src, true);
        slot.referenced.store(0, Relaxed);
        slot.refs.store(1, Relaxed);
        Some(i)
    }

    /// Marks slot `i` recently used (LRU maps).
    #[inline]
    fn touch(&self, i: u32) {
        if self.lru != Lru::Off {
            let bit = &self.slots[i as usize].referenced;
            if bit.load(Relaxed) == 0 {
                bit.store(1, Relaxed);
            }
        }
    }

    // ---- operations ---------------------------------------------------------

    /// `bpf_map_update_elem` for both sides.
    fn update_impl(
        &self,
        key: &[u8],
        src: Src<'_>,
        flags: u64,
        cpu: usize,
    ) -> Result<(), MapError> {
        let key = self.key(key)?;
        if flags & !flags::BPF_F_LOCK > flags::BPF_EXIST {
            return Err(MapError::Invalid("unknown map update flags"));
        }
        if flags & flags::BPF_F_LOCK != 0 {
            return Err(MapError::Invalid(
                "BPF_F_LOCK needs a bpf_spin_lock in the value",
            ));
        }
        let b = self.bucket_of(key.hash);
        // Prepare a new element outside the lock unless the key is there.
        let mut tried = false;
        let mut prepared = None;
        if flags != flags::BPF_EXIST && self.find(&key).is_none() {
            prepared = self.prepare(&key, src, cpu);
            tried = true;
        }
        loop {
            let guard = self.lock(b);
            if let Some((_, i)) = self.find_locked(b, |i| self.key_eq(i, &key)) {
                if flags == flags::BPF_NOEXIST {
                    drop(guard);
                    self.discard(prepared);
                    return Err(MapError::Exists);
                }
                // Pin it, so that it is not reused while we copy.
                self.slots[i as usize].refs.fetch_add(1, Relaxed);
                drop(guard);
                self.discard(prepared);
                self.write_value(i, src, false);
                self.touch(i);
                self.release(i);
                return Ok(());
            }
            if flags == flags::BPF_EXIST {
                drop(guard);
                self.discard(prepared);
                return Err(MapError::NotFound);
            }
            if let Some(i) = prepared {
                self.link(b, i);
                drop(guard);
                self.count(i, 1);
                return Ok(());
            }
            drop(guard);
            if tried {
                return Err(MapError::Full);
            }
            // The key went away after the lock-free check.
            prepared = self.prepare(&key, src, cpu);
            tried = true;
        }
    }

    /// Walks bucket `b` lock-free for `next_key`: copies the first key
    /// after `after` (or the first key, for `None`) into `out`.
    fn next_in_bucket(&self, b: u32, after: Option<&Key<'_>>, out: &mut [u8]) -> Chain {
        let head = &self.buckets[b as usize].head;
        'restart: loop {
            let mut passed = after.is_none();
            let mut cur = head.load(Acquire);
            let mut steps = 0;
            while cur & NULLS == 0 {
                let slot = &self.slots[cur as usize];
                let gen = slot.gen.load(Acquire);
                if gen & 1 == 0 {
                    if passed {
                        self.copy_key(cur, out);
                        fence(Acquire);
                        if slot.gen.load(Relaxed) == gen {
                            return Chain::Copied;
                        }
                        continue 'restart;
                    }
                    if after.is_some_and(|k| self.key_eq(cur, k)) {
                        fence(Acquire);
                        passed = slot.gen.load(Relaxed) == gen;
                    }
                }
                cur = slot.next.load(Acquire);
                steps += 1;
                if steps > self.n_slots {
                    continue 'restart;
                }
            }
            if cur != NULLS | b {
                continue 'restart;
            }
            return if passed { Chain::End } else { Chain::KeyAbsent };
        }
    }
}

impl MapOps for HashMap {
    fn lookup(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError> {
        let key = self.key(key)?;
        if out.len() != self.ctl_value_len() {
            return Err(MapError::Invalid("value buffer has the wrong size"));
        }
        loop {
            let (i, gen) = self.find(&key).ok_or(MapError::NotFound)?;
            self.read_value(i, out);
            fence(Acquire);
            if self.slots[i as usize].gen.load(Relaxed) == gen {
                return Ok(());
            }
            // Deleted (and maybe reused) while copying: look again.
        }
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        if value.len() != self.ctl_value_len() {
            return Err(MapError::Invalid("value has the wrong size"));
        }
        let src = if self.percpu {
            Src::AllCpus(value)
        } else {
            Src::Plain(value)
        };
        self.update_impl(key, src, flags, self.ctl_cpu())
    }

    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        let key = self.key(key)?;
        if self.find(&key).is_none() {
            return Err(MapError::NotFound);
        }
        let b = self.bucket_of(key.hash);
        let guard = self.lock(b);
        let (pred, i) = self
            .find_locked(b, |i| self.key_eq(i, &key))
            .ok_or(MapError::NotFound)?;
        self.unlink(b, pred, i);
        drop(guard);
        self.count(i, -1);
        self.release(i);
        Ok(())
    }

    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        if out.len() != self.key_size {
            return Err(MapError::Invalid("key buffer has the wrong size"));
        }
        let mut start = 0;
        if let Some(key) = key {
            let key = self.key(key)?;
            let b = self.bucket_of(key.hash);
            match self.next_in_bucket(b, Some(&key), out) {
                Chain::Copied => return Ok(()),
                Chain::End => start = b + 1,
                // Linux: iteration restarts from the first key.
                Chain::KeyAbsent => start = 0,
            }
        }
        for b in start..=self.mask {
            if let Chain::Copied = self.next_in_bucket(b, None, out) {
                return Ok(());
            }
        }
        Err(MapError::NotFound)
    }

    #[inline]
    fn prog_lookup(&self, key: &[u8], cpu: usize) -> Option<NonNull<u8>> {
        let cpu = if self.percpu { cpu } else { 0 };
        if cpu >= self.copies {
            return None;
        }
        let key = self.key(key).ok()?;
        let (i, _) = self.find(&key)?;
        self.touch(i);
        self.values.ptr(self.value_word(i, cpu))
    }

    fn prog_update(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u64,
        cpu: usize,
    ) -> Result<(), MapError> {
        if value.len() != self.value_size {
            return Err(MapError::Invalid("value has the wrong size"));
        }
        let src = if self.percpu {
            if cpu >= self.copies {
                return Err(MapError::Invalid("cpu index out of range"));
            }
            Src::OneCpu(cpu, value)
        } else {
            Src::Plain(value)
        };
        self.update_impl(key, src, flags, cpu)
    }

    fn value_area(&self) -> Option<(NonNull<u8>, usize)> {
        self.values.bounds()
    }

    fn len(&self) -> usize {
        let n: isize = self.counts.iter().map(|c| c.0.load(Relaxed)).sum();
        usize::try_from(n).unwrap_or(0)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The high and low halves of `a * b`, folded together.
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// A fresh random seed per map (from the standard library's per-process
/// random keys, mixed with a counter), so that keys that collide in one map
/// do not collide in another or in the next run.
fn random_seed() -> [u64; 2] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let mut seed = [0; 2];
    for (k, s) in seed.iter_mut().enumerate() {
        let mut h = state.build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Relaxed));
        h.write_usize(k);
        *s = h.finish();
    }
    seed[1] |= 1; // an odd multiplier loses no bits
    seed
}

/// A boxed slice of `n` elements made by `f`, or `None` if the memory
/// cannot be had.
fn try_collect<T>(n: usize, f: impl FnMut(usize) -> T) -> Option<Box<[T]>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.extend((0..n).map(f));
    Some(v.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::maps::flags::{BPF_ANY, BPF_EXIST, BPF_F_LOCK, BPF_NOEXIST};
    use crate::maps::Pinning;

    fn def(
        map_type: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        flags: u32,
    ) -> MapDef {
        MapDef {
            name: "t".into(),
            map_type,
            key_size,
            value_size,
            max_entries,
            flags,
            pinning: Pinning::None,
            inner: None,
        }
    }

    fn map(map_type: MapType, max_entries: u32, flags: u32, ncpus: usize) -> HashMap {
        HashMap::new(&def(map_type, 8, 16, max_entries, flags), ncpus).unwrap()
    }

    fn k(i: u64) -> [u8; 8] {
        i.to_ne_bytes()
    }

    /// A value that names its key in both words.
    fn v(i: u64) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&i.to_ne_bytes());
        out[8..].copy_from_slice(&(!i).to_ne_bytes());
        out
    }

    /// The value of key `i` (CPU 0's copy for per-CPU maps).
    fn get(m: &HashMap, i: u64) -> Option<[u8; 16]> {
        let mut out = vec![0; m.ctl_value_len()];
        m.lookup(&k(i), &mut out).ok()?;
        out[..16].try_into().ok()
    }

    /// Every key, by `next_key`; under concurrent deletes iteration may
    /// restart (Linux's behaviour), so it stops after `limit` keys.
    fn keys_upto(m: &HashMap, limit: usize) -> Vec<u64> {
        let mut out = [0u8; 8];
        let mut cur: Option<[u8; 8]> = None;
        let mut keys = Vec::new();
        while keys.len() < limit && m.next_key(cur.as_ref().map(|c| &c[..]), &mut out).is_ok() {
            keys.push(u64::from_ne_bytes(out));
            cur = Some(out);
        }
        keys
    }

    fn keys(m: &HashMap) -> Vec<u64> {
        let keys = keys_upto(m, m.n_slots as usize + 1);
        assert!(keys.len() <= m.n_slots as usize, "iteration does not end");
        keys
    }

    fn reason(r: Result<HashMap, MapError>) -> String {
        match r {
            Err(MapError::InvalidDef { reason, .. }) => reason,
            Err(e) => panic!("expected InvalidDef, got {e}"),
            Ok(_) => panic!("expected InvalidDef, got a map"),
        }
    }

    #[test]
    fn creation_is_validated() {
        let new = |t, ks, vs, max, fl| HashMap::new(&def(t, ks, vs, max, fl), 4);
        assert!(reason(new(MapType::Hash, 0, 4, 1, 0)).contains("key_size"));
        assert!(reason(new(MapType::Hash, 4, 0, 1, 0)).contains("value_size"));
        assert!(reason(new(MapType::Hash, 4, 4, 0, 0)).contains("max_entries"));
        assert!(reason(new(MapType::Hash, 4, 4 << 20, 1, 0)).contains("too large"));
        assert!(reason(new(MapType::PercpuHash, 4, 40_000, 1, 0)).contains("KiB"));
        assert!(reason(new(MapType::Hash, 4, 1 << 20, 1 << 20, 0)).contains("GiB"));
        assert!(reason(new(MapType::Hash, 4, 4, u32::MAX, 0)).contains("may hold"));
        let no_common = flags::BPF_F_NO_COMMON_LRU;
        assert!(reason(new(MapType::Hash, 4, 4, 1, no_common)).contains("only for LRU"));
        assert!(
            reason(new(MapType::LruHash, 4, 4, 1, flags::BPF_F_NO_PREALLOC)).contains("PREALLOC")
        );
        assert!(reason(new(MapType::Hash, 4, 4, 1, flags::BPF_F_MMAPABLE)).contains("map_flags"));
        assert!(reason(new(MapType::Array, 4, 4, 1, 0)).contains("not a hash"));
        assert!(
            new(MapType::Hash, 4, 4, 1, flags::BPF_F_NO_PREALLOC).is_ok(),
            "ignored: always preallocated"
        );
        assert!(new(MapType::LruPercpuHash, 64, 4096, 1000, no_common).is_ok());
    }

    #[test]
    fn linux_semantics() {
        let m = map(MapType::Hash, 4, 0, 2);
        assert_eq!((m.len(), get(&m, 1)), (0, None));
        let e = m.delete(&k(1)).unwrap_err();
        assert_eq!((e.clone(), e.errno()), (MapError::NotFound, -2));
        assert_eq!(m.update(&k(1), &v(9), BPF_EXIST), Err(MapError::NotFound));
        m.update(&k(1), &v(1), BPF_NOEXIST).unwrap();
        let e = m.update(&k(1), &v(1), BPF_NOEXIST).unwrap_err();
        assert_eq!((e.clone(), e.errno()), (MapError::Exists, -17));
        m.update(&k(1), &v(11), BPF_EXIST).unwrap();
        assert_eq!(get(&m, 1), Some(v(11)));
        m.update(&k(1), &v(1), BPF_ANY).unwrap();
        assert_eq!(get(&m, 1), Some(v(1)));
        for bad in [BPF_F_LOCK, BPF_F_LOCK | BPF_EXIST, 3, 8, 1 << 40] {
            assert!(
                matches!(m.update(&k(1), &v(1), bad), Err(MapError::Invalid(_))),
                "flags {bad}"
            );
        }
        // Sizes.
        assert!(matches!(
            m.update(&[0; 4], &v(1), BPF_ANY),
            Err(MapError::Invalid(_))
        ));
        assert!(matches!(
            m.update(&k(1), &[0; 15], BPF_ANY),
            Err(MapError::Invalid(_))
        ));
        assert!(matches!(
            m.lookup(&k(1), &mut [0; 17]),
            Err(MapError::Invalid(_))
        ));
        assert!(matches!(m.delete(&[0; 9]), Err(MapError::Invalid(_))));
        assert!(matches!(
            m.next_key(None, &mut [0; 4]),
            Err(MapError::Invalid(_))
        ));
        assert_eq!(m.prog_lookup(&[0; 7], 0), None);

        // Full: new keys refused, existing ones still updated.
        for i in 2..=4 {
            m.prog_update(&k(i), &v(i), BPF_ANY, i as usize).unwrap();
        }
        assert_eq!(m.len(), 4);
        let e = m.update(&k(5), &v(5), BPF_ANY).unwrap_err();
        assert_eq!((e.clone(), e.errno()), (MapError::Full, -7));
        assert_eq!(
            m.prog_update(&k(5), &v(5), BPF_NOEXIST, 1),
            Err(MapError::Full)
        );
        m.update(&k(4), &v(44), BPF_ANY).unwrap();
        m.prog_update(&k(3), &v(33), BPF_EXIST, 0).unwrap();
        assert_eq!((get(&m, 4), get(&m, 3)), (Some(v(44)), Some(v(33))));
        m.delete(&k(2)).unwrap();
        assert_eq!(get(&m, 2), None);
        assert_eq!(m.len(), 3);
        m.update(&k(5), &v(5), BPF_ANY).unwrap();
        assert_eq!(get(&m, 5), Some(v(5)));
        assert_eq!(m.len(), 4);

        // The program side sees the same value through its pointer.
        let p = m.prog_lookup(&k(5), 0).unwrap();
        let (base, len) = m.value_area().unwrap();
        let off = p.as_ptr() as usize - base.as_ptr() as usize;
        assert!(off.is_multiple_of(8) && off + 16 <= len);
    }

    #[test]
    fn odd_key_and_value_sizes() {
        // 13-byte keys (a 5-tuple) span two words; 6-byte values one.
        let m = HashMap::new(&def(MapType::Hash, 13, 6, 64, 0), 1).unwrap();
        let key = |i: u8| {
            let mut key = [i; 13];
            key[12] = i.wrapping_mul(7);
            key
        };
        for i in 0..64 {
            m.update(&key(i), &[i; 6], BPF_NOEXIST).unwrap();
        }
        for i in 0..64 {
            let mut out = [0; 6];
            m.lookup(&key(i), &mut out).unwrap();
            assert_eq!(out, [i; 6]);
        }
        let mut near = key(3);
        near[12] ^= 1;
        assert_eq!(m.lookup(&near, &mut [0; 6]), Err(MapError::NotFound));
    }

    #[test]
    fn next_key_visits_every_key_once() {
        let m = map(MapType::Hash, 1000, 0, 4);
        let mut out = [0u8; 8];
        assert_eq!(
            m.next_key(None, &mut out),
            Err(MapError::NotFound),
            "empty map"
        );
        for i in 0..1000 {
            m.update(&k(i * 7919), &v(i), BPF_NOEXIST).unwrap();
        }
        let seen = keys(&m);
        assert_eq!(seen.len(), 1000);
        let set: HashSet<u64> = seen.iter().copied().collect();
        assert_eq!(set, (0..1000).map(|i| i * 7919).collect());

        m.next_key(None, &mut out).unwrap();
        let first = out;
        m.next_key(Some(&k(1)), &mut out).unwrap();
        assert_eq!(out, first, "an absent key restarts from the first");
        let last = *seen.last().unwrap();
        assert_eq!(
            m.next_key(Some(&k(last)), &mut out),
            Err(MapError::NotFound)
        );
        // Deleting while iterating (the usual "dump and delete" loop).
        let mut cur: Option<[u8; 8]> = None;
        let mut n = 0;
        while m.next_key(cur.as_ref().map(|c| &c[..]), &mut out).is_ok() {
            if let Some(c) = cur {
                m.delete(&c).unwrap();
            }
            cur = Some(out);
            n += 1;
        }
        m.delete(&cur.unwrap()).unwrap();
        assert_eq!((n, m.len(), keys(&m).len()), (1000, 0, 0));
    }

    #[test]
    fn percpu_layout() {
        let ncpus = 3;
        let m = HashMap::new(&def(MapType::PercpuHash, 4, 4, 8, 0), ncpus).unwrap();
        let mut out = vec![0xffu8; 8 * ncpus];
        // Control side writes every copy.
        let all: Vec<u8> = (1..=8 * ncpus as u8).collect();
        m.update(&7u32.to_ne_bytes(), &all, BPF_ANY).unwrap();
        m.lookup(&7u32.to_ne_bytes(), &mut out).unwrap();
        assert_eq!(out, all);
        // Program side overwrites only its copy of an existing element...
        m.prog_update(&7u32.to_ne_bytes(), &[9; 4], BPF_ANY, 1)
            .unwrap();
        m.lookup(&7u32.to_ne_bytes(), &mut out).unwrap();
        assert_eq!(out[..8], all[..8]);
        assert_eq!(out[8..12], [9; 4]);
        assert_eq!(out[16..], all[16..]);
        // ... and a new element gets the other copies zeroed, as Linux.
        m.prog_update(&1u32.to_ne_bytes(), &[5; 4], BPF_ANY, 2)
            .unwrap();
        m.lookup(&1u32.to_ne_bytes(), &mut out).unwrap();
        assert_eq!(out[..16], [0; 16]);
        assert_eq!(out[16..20], [5; 4]);
        // Program-side pointers name each CPU's own copy.
        let (base, len) = m.value_area().unwrap();
        let ptrs: Vec<usize> = (0..ncpus)
            .map(|c| m.prog_lookup(&1u32.to_ne_bytes(), c).unwrap().as_ptr() as usize)
            .collect();
        assert!(ptrs
            .iter()
            .all(|&p| p >= base.as_ptr() as usize && p + 4 <= base.as_ptr() as usize + len));
        assert_eq!(HashSet::<usize>::from_iter(ptrs).len(), ncpus);
        assert_eq!(m.prog_lookup(&1u32.to_ne_bytes(), ncpus), None);
        assert!(matches!(
            m.prog_update(&1u32.to_ne_bytes(), &[0; 4], BPF_ANY, ncpus),
            Err(MapError::Invalid(_))
        ));
        assert!(matches!(
            m.update(&1u32.to_ne_bytes(), &[0; 4], BPF_ANY),
            Err(MapError::Invalid(_))
        ));
        assert!(matches!(
            m.prog_update(&1u32.to_ne_bytes(), &[0; 24], BPF_ANY, 0),
            Err(MapError::Invalid(_))
        ));
    }

    #[test]
    fn lru_full_map_stays_usable_and_keeps_hot_keys() {
        for (t, fl, ncpus) in [
            (MapType::LruHash, 0, 1),
            (MapType::LruHash, 0, 4),
            (MapType::LruPercpuHash, 0, 2),
            (MapType::LruHash, flags::BPF_F_NO_COMMON_LRU, 1),
        ] {
            let m = map(t, 128, fl, ncpus);
            let hot = 0..16u64;
            let mut one = vec![0u8; m.ctl_value_len()];
            for i in 0..128 {
                one[..16].copy_from_slice(&v(i));
                m.update(&k(i), &one, BPF_NOEXIST).unwrap();
            }
            for i in 128..2000 {
                if i % 8 == 0 {
                    for h in hot.clone() {
                        assert!(
                            m.prog_lookup(&k(h), 0).is_some(),
                            "{t:?}: hot key {h} evicted at {i}"
                        );
                    }
                }
                let cpu = i as usize % ncpus;
                m.prog_update(&k(i), &v(i), BPF_NOEXIST, cpu).unwrap();
                assert_eq!(m.len(), 128);
                assert!(get(&m, i).is_some(), "just inserted");
            }
            assert_eq!(keys(&m).len(), 128);
            // Cold keys went first.
            assert!((16..128).all(|i| get(&m, i).is_none()));
        }
    }

    #[test]
    fn lru_per_cpu_lists_evict_their_own_keys() {
        // 10 entries over 4 CPUs: rounded up to 12, 3 per CPU (Linux).
        let m = map(MapType::LruHash, 10, flags::BPF_F_NO_COMMON_LRU, 4);
        assert_eq!(m.n_slots, 12);
        for i in 0..3 {
            m.prog_update(&k(100 + i), &v(100 + i), BPF_ANY, 1).unwrap();
        }
        for i in 0..50 {
            m.prog_update(&k(i), &v(i), BPF_ANY, 0).unwrap();
        }
        assert!(
            (100..103).all(|i| get(&m, i) == Some(v(i))),
            "CPU 0 evicts only its own keys"
        );
        assert_eq!(m.len(), 6);
        // The control side spreads inserts over the CPUs' shares.
        for i in 200..212 {
            m.update(&k(i), &v(i), BPF_ANY).unwrap();
        }
        assert_eq!(m.len(), 12);
    }

    #[test]
    fn plain_hash_full_when_per_cpu_lists_are_uneven() {
        // CPU 0's list empties first; it must steal from the others.
        let m = map(MapType::Hash, 16, 0, 4);
        for i in 0..16 {
            m.prog_update(&k(i), &v(i), BPF_ANY, 0).unwrap();
        }
        assert_eq!(
            m.prog_update(&k(16), &v(16), BPF_ANY, 0),
            Err(MapError::Full)
        );
        assert_eq!(m.len(), 16);
    }

    /// Writers insert, update and delete keys from overlapping ranges of a
    /// small (often full) map while readers check that every value they
    /// copy out names its key and iterate.
    fn stress(t: MapType, fl: u32, max_entries: u32) {
        const THREADS: usize = 4;
        const OPS: u64 = 100_000;
        const KEYS: u64 = 96;
        let m = map(t, max_entries, fl, THREADS);
        let stop = AtomicBool::new(false);
        let (base, len) = m.value_area().unwrap();
        let (lo, hi) = (base.as_ptr() as usize, base.as_ptr() as usize + len);
        std::thread::scope(|s| {
            let writers: Vec<_> = (0..THREADS)
                .map(|cpu| {
                    let m = &m;
                    s.spawn(move || {
                        let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ cpu as u64;
                        let mut hits = 0u64;
                        for _ in 0..OPS {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            // Overlapping ranges: thread c uses [16c, 16c + 48).
                            let key = (cpu as u64 * 16 + x % 48) % KEYS;
                            match (x >> 32) % 8 {
                                0..=2 => {
                                    let r = m.prog_update(&k(key), &v(key), BPF_ANY, cpu);
                                    assert!(r.is_ok() || r == Err(MapError::Full), "{r:?}");
                                }
                                3 => {
                                    let r = m.prog_update(&k(key), &v(key), BPF_NOEXIST, cpu);
                                    assert!(matches!(
                                        r,
                                        Ok(()) | Err(MapError::Exists | MapError::Full)
                                    ));
                                }
                                4 | 5 => {
                                    let r = m.prog_delete(&k(key));
                                    assert!(matches!(r, Ok(()) | Err(MapError::NotFound)));
                                }
                                _ => {
                                    if let Some(p) = m.prog_lookup(&k(key), cpu) {
                                        let p = p.as_ptr() as usize;
                                        assert!(p >= lo && p + 16 <= hi && p.is_multiple_of(8));
                                        hits += 1;
                                    }
                                }
                            }
                        }
                        hits
                    })
                })
                .collect();
            let readers: Vec<_> = (0..2)
                .map(|r| {
                    let (m, stop) = (&m, &stop);
                    s.spawn(move || {
                        let mut checked = 0u64;
                        let mut out = vec![0u8; m.ctl_value_len()];
                        while !stop.load(Relaxed) {
                            for key in 0..KEYS {
                                if m.lookup(&k(key), &mut out).is_ok() {
                                    for copy in out.chunks(m.elem_words * 8) {
                                        let (a, b) = (&copy[..8], &copy[8..16]);
                                        let a = u64::from_ne_bytes(a.try_into().unwrap());
                                        let b = u64::from_ne_bytes(b.try_into().unwrap());
                                        // Never another key's value. A per-CPU copy
                                        // starts zeroed, and its first write may be
                                        // seen half done (values tear by word).
                                        let ok = if m.percpu {
                                            (a == key || a == 0) && (b == !key || b == 0)
                                        } else {
                                            (a, b) == (key, !key)
                                        };
                                        assert!(ok, "key {key} read value ({a:#x}, {b:#x})");
                                    }
                                    checked += 1;
                                }
                            }
                            if r == 0 {
                                keys_upto(m, 4 * m.n_slots as usize);
                            }
                        }
                        checked
                    })
                })
                .collect();
            let hits: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
            stop.store(true, Relaxed);
            let checked: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
            assert!(hits > 0 && checked > 0);
        });
        // Quiescent: the count, iteration and lookups agree.
        let present = keys(&m);
        let set: HashSet<u64> = present.iter().copied().collect();
        assert_eq!(set.len(), present.len(), "a key iterated twice");
        assert_eq!(present.len(), m.len());
        for key in 0..KEYS {
            assert_eq!(
                get(&m, key).is_some(),
                set.contains(&key),
                "key {key} in {present:?}"
            );
        }
        // Every slot is either linked or free: fill the map up.
        let mut value = vec![0u8; m.ctl_value_len()];
        for key in 1000..1000 + u64::from(max_entries) {
            value[..16].copy_from_slice(&v(key));
            let r = m.update(&k(key), &value, BPF_ANY);
            assert!(matches!(r, Ok(()) | Err(MapError::Full)), "{r:?}");
        }
        assert_eq!(m.len(), max_entries as usize);
    }

    #[test]
    fn stress_hash() {
        stress(MapType::Hash, 0, 64);
    }

    #[test]
    fn stress_lru_hash() {
        stress(MapType::LruHash, 0, 32);
    }

    #[test]
    fn stress_lru_percpu_hash_no_common_lru() {
        stress(MapType::LruPercpuHash, flags::BPF_F_NO_COMMON_LRU, 32);
    }

    #[test]
    fn stress_percpu_hash() {
        stress(MapType::PercpuHash, 0, 48);
    }

    #[test]
    fn through_map_create() {
        use crate::maps::Map;
        for t in [
            MapType::Hash,
            MapType::PercpuHash,
            MapType::LruHash,
            MapType::LruPercpuHash,
        ] {
            let m = Map::create(&def(t, 4, 4, 10, 0), 3).unwrap();
            let value = vec![7u8; m.value_buf_size()];
            for i in 0..10u32 {
                m.ops().update(&i.to_ne_bytes(), &value, BPF_ANY).unwrap();
            }
            assert_eq!(m.lookup_vec(&3u32.to_ne_bytes()).unwrap(), value);
            assert_eq!(m.keys().len(), 10);
            assert_eq!(m.downcast::<HashMap>().map(HashMap::max_entries), Some(10));
        }
        let lru = Map::create(
            &def(MapType::LruHash, 4, 4, 10, flags::BPF_F_NO_COMMON_LRU),
            4,
        )
        .unwrap();
        assert_eq!(
            lru.downcast::<HashMap>().map(HashMap::max_entries),
            Some(12)
        );
    }

    #[test]
    fn hash_spreads_keys() {
        let m = map(MapType::Hash, 1 << 12, 0, 1);
        let mut used = HashSet::new();
        for i in 0..(1u64 << 12) {
            used.insert(m.bucket_of(m.hash(&k(i << 20))));
        }
        // A random function fills about 63% of the buckets.
        assert!(
            used.len() > (1 << 12) * 55 / 100,
            "{} buckets used",
            used.len()
        );
        let zero = HashMap::new(&def(MapType::Hash, 8, 8, 4, storage::BPF_F_ZERO_SEED), 1).unwrap();
        let zero2 =
            HashMap::new(&def(MapType::Hash, 8, 8, 4, storage::BPF_F_ZERO_SEED), 1).unwrap();
        assert_eq!(
            zero.hash(&k(42)),
            zero2.hash(&k(42)),
            "BPF_F_ZERO_SEED is deterministic"
        );
    }
}
