//! Array maps (`BPF_MAP_TYPE_ARRAY`, `BPF_MAP_TYPE_PERCPU_ARRAY`), and the
//! value storage they share with the hash maps ([`storage`]).
//!
//! # Semantics
//!
//! As Linux's `kernel/bpf/arraymap.c`: the key is a native-endian `u32`
//! index below `max_entries`; every element always exists and starts zeroed.
//! Looking up an index out of range finds nothing (`ENOENT`), updating one
//! is `E2BIG`, `BPF_NOEXIST` is `EEXIST` (the element exists), deleting is
//! `EINVAL`. `next_key` walks `0..max_entries`; the key after a missing or
//! out-of-range key is 0, after the last one there is none.
//!
//! # Layout
//!
//! All values live in one zeroed, cache-line-aligned allocation, the map's
//! [`MapOps::value_area`]. Each value occupies `elem_size =
//! round_up(value_size, 8)` bytes, so every value is 8-byte aligned. A
//! per-CPU array keeps one region per CPU (CPU-major: every copy of CPU 0,
//! then every copy of CPU 1, ...), each region padded to a cache line, so
//! workers that update their own copies never share a line:
//!
//! ```text
//! value(index, cpu) = base + cpu * cpu_stride + index * elem_size
//! ```
//!
//! [`ArrayMap::elem_size`] and [`ArrayMap::cpu_stride`] expose this so a JIT
//! can inline lookups, as Linux's `array_map_gen_lookup` does.
//!
//! # Concurrency
//!
//! Nothing is ever linked or unlinked, so there is nothing to lock: a
//! lookup is a bounds check and an address computation. Values are copied
//! in and out a 64-bit word at a time with relaxed atomic loads and stores;
//! concurrent writers of the same value may interleave words (a torn value),
//! exactly as in Linux without `BPF_F_LOCK`, but never tear a word.
//!
//! The storage is built from atomics only, so this module needs no `unsafe`:
//! a pointer handed to a program is derived from the whole allocation (it
//! may address any byte of it) and every byte lies inside an `UnsafeCell`,
//! so writes through it are permitted while the map is shared.

use std::any::Any;
use std::ptr::NonNull;

use super::{flags, MapDef, MapError, MapOps, MapType};
use storage::{invalid_def, ValueArea};

/// Building blocks shared by the array and hash maps: the zeroed,
/// word-addressed value area, size limits and creation-flag checks.
pub(crate) mod storage {
    use std::ptr::NonNull;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    use super::super::{MapDef, MapError};

    /// Bytes in a cache line (x86-64 and most arm64 cores).
    pub(crate) const CACHE_LINE: usize = 64;
    /// Words (`u64`) in a cache line.
    pub(crate) const LINE_WORDS: usize = CACHE_LINE / 8;
    /// Linux's `KMALLOC_MAX_SIZE` on x86-64 with 4 KiB pages (4 MiB): the
    /// largest value (plus key, for hash maps) a map element may have.
    pub(crate) const KMALLOC_MAX_SIZE: u64 = 4 << 20;
    /// Linux's `PCPU_MIN_UNIT_SIZE` (32 KiB): the largest per-CPU value
    /// (rounded up to 8 bytes).
    pub(crate) const PCPU_MIN_UNIT_SIZE: u64 = 32 << 10;
    /// The most memory one map may take (4 GiB). Linux bounds maps by the
    /// memory cgroup; a process that owns its cores has no such guard, so
    /// an absurd `max_entries * value_size` is refused here with a clear
    /// message rather than ending in an out-of-memory abort.
    pub(crate) const MAX_MAP_BYTES: u64 = 4 << 30;

    /// `BPF_F_NUMA_NODE`
    pub(crate) const BPF_F_NUMA_NODE: u32 = 1 << 2;
    /// `BPF_F_RDONLY` (read-only for the control side)
    pub(crate) const BPF_F_RDONLY: u32 = 1 << 3;
    /// `BPF_F_WRONLY` (write-only for the control side)
    pub(crate) const BPF_F_WRONLY: u32 = 1 << 4;
    /// `BPF_F_ZERO_SEED`: hash with a fixed seed (tests, reproducibility).
    pub(crate) const BPF_F_ZERO_SEED: u32 = 1 << 6;
    /// `BPF_F_WRONLY_PROG`
    pub(crate) const BPF_F_WRONLY_PROG: u32 = 1 << 8;
    /// `BPF_F_INNER_MAP`
    pub(crate) const BPF_F_INNER_MAP: u32 = 1 << 12;
    /// Linux's `BPF_F_ACCESS_MASK`.
    pub(crate) const BPF_F_ACCESS_MASK: u32 =
        BPF_F_RDONLY | BPF_F_WRONLY | super::flags::BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG;

    /// [`MapError::InvalidDef`] for `def` with `reason`.
    pub(crate) fn invalid_def(def: &MapDef, reason: impl Into<String>) -> MapError {
        MapError::InvalidDef {
            name: def.name.clone(),
            reason: reason.into(),
        }
    }

    /// Checks `map_flags` against the creation flags a map type accepts
    /// (`allowed`) and Linux's `bpf_map_flags_access_ok`.
    pub(crate) fn check_create_flags(def: &MapDef, allowed: u32) -> Result<(), MapError> {
        let unknown = def.flags & !allowed;
        if unknown != 0 {
            return Err(invalid_def(
                def,
                format!(
                    "map_flags {:#x} has bits {unknown:#x} that a {} map does not accept",
                    def.flags,
                    def.map_type.name()
                ),
            ));
        }
        let both = |a: u32, b: u32| def.flags & a != 0 && def.flags & b != 0;
        if both(BPF_F_RDONLY, BPF_F_WRONLY)
            || both(super::flags::BPF_F_RDONLY_PROG, BPF_F_WRONLY_PROG)
        {
            return Err(invalid_def(
                def,
                "map_flags ask for read-only and write-only at once",
            ));
        }
        Ok(())
    }

    /// Refuses a map whose memory (`bytes`, computed without overflow by the
    /// caller; `None` if it overflowed) is beyond [`MAX_MAP_BYTES`].
    pub(crate) fn check_budget(def: &MapDef, bytes: Option<u64>) -> Result<(), MapError> {
        match bytes {
            Some(b) if b <= MAX_MAP_BYTES => Ok(()),
            _ => Err(invalid_def(
                def,
                format!(
                    "max_entries {} with key_size {} and value_size {} needs {}, more than the \
                     {} GiB one map may use",
                    def.max_entries,
                    def.key_size,
                    def.value_size,
                    bytes.map_or_else(
                        || "more than 2^64 bytes".to_string(),
                        |b| format!("{b} bytes")
                    ),
                    MAX_MAP_BYTES >> 30
                ),
            )),
        }
    }

    /// Number of 64-bit words that hold `bytes` bytes.
    pub(crate) const fn words_for(bytes: usize) -> usize {
        bytes.div_ceil(8)
    }

    /// The `i`-th 64-bit word of `bytes` in native byte order, zero-padded
    /// past the end.
    #[inline]
    pub(crate) fn load_word(bytes: &[u8], i: usize) -> u64 {
        let start = i * 8;
        let mut word = [0u8; 8];
        if let Some(chunk) = bytes.get(start..start + 8) {
            word.copy_from_slice(chunk);
        } else if let Some(tail) = bytes.get(start..) {
            word[..tail.len()].copy_from_slice(tail);
        }
        u64::from_ne_bytes(word)
    }

    /// Stores `word` as the `i`-th 64-bit word of `bytes`, truncated at the
    /// end of `bytes`.
    #[inline]
    pub(crate) fn store_word(bytes: &mut [u8], i: usize, word: u64) {
        let start = i * 8;
        let end = bytes.len().min(start + 8);
        if let Some(dst) = bytes.get_mut(start..end) {
            dst.copy_from_slice(&word.to_ne_bytes()[..dst.len()]);
        }
    }

    /// One cache line of the value area.
    #[repr(C, align(64))]
    #[derive(Default)]
    struct Line([AtomicU64; LINE_WORDS]);

    /// A `T` alone on its cache line (per-CPU counters, list heads).
    #[repr(align(64))]
    #[derive(Default, Debug)]
    pub(crate) struct Padded<T>(pub(crate) T);

    /// All the values of a map: one zeroed, cache-line-aligned allocation,
    /// addressed in 64-bit words, that never moves or shrinks while the map
    /// lives. Rust code copies values in and out with relaxed atomic word
    /// operations; programs get raw pointers into it.
    pub(crate) struct ValueArea {
        lines: Box<[Line]>,
        words: usize,
    }

    impl ValueArea {
        /// A zeroed area of `words` words, or a message saying why it
        /// could not be allocated.
        pub(crate) fn new(words: usize) -> Result<ValueArea, String> {
            let nlines = words.div_ceil(LINE_WORDS).max(1);
            let mut lines = Vec::new();
            lines
                .try_reserve_exact(nlines)
                .map_err(|_| format!("cannot allocate {} bytes for values", nlines * CACHE_LINE))?;
            lines.resize_with(nlines, Line::default);
            Ok(ValueArea {
                lines: lines.into_boxed_slice(),
                words,
            })
        }

        /// The word at index `w` (panics past the end: callers compute `w`
        /// from validated indices only).
        #[inline]
        pub(crate) fn word(&self, w: usize) -> &AtomicU64 {
            &self.lines[w / LINE_WORDS].0[w % LINE_WORDS]
        }

        /// A pointer to word `w`, with the provenance of the whole area.
        #[inline]
        pub(crate) fn ptr(&self, w: usize) -> Option<NonNull<u8>> {
            debug_assert!(w < self.words);
            let base = self.lines.as_ptr().cast::<AtomicU64>();
            // Every byte of a `Line` is inside an `AtomicU64` (an
            // `UnsafeCell`), so the pointer may be used to write.
            NonNull::new(base.wrapping_add(w).cast::<u8>().cast_mut())
        }

        /// Start and length in bytes of the whole area.
        pub(crate) fn bounds(&self) -> Option<(NonNull<u8>, usize)> {
            Some((self.ptr(0)?, self.lines.len() * CACHE_LINE))
        }

        /// Copies `src` into the words from `w` on; a partial last word is
        /// zero-padded.
        #[inline]
        pub(crate) fn write(&self, w: usize, src: &[u8]) {
            for i in 0..words_for(src.len()) {
                self.word(w + i).store(load_word(src, i), Relaxed);
            }
        }

        /// Copies the words from `w` on into `dst` (truncating the last).
        #[inline]
        pub(crate) fn read(&self, w: usize, dst: &mut [u8]) {
            for i in 0..words_for(dst.len()) {
                store_word(dst, i, self.word(w + i).load(Relaxed));
            }
        }

        /// Zeroes `n` words from `w` on.
        #[inline]
        pub(crate) fn zero(&self, w: usize, n: usize) {
            for i in w..w + n {
                self.word(i).store(0, Relaxed);
            }
        }
    }
}

/// Creation flags an array accepts (Linux's `ARRAY_CREATE_FLAG_MASK`, minus
/// `BPF_F_PRESERVE_ELEMS`, which only perf event arrays take).
const ARRAY_CREATE_FLAGS: u32 = storage::BPF_F_NUMA_NODE
    | flags::BPF_F_MMAPABLE
    | storage::BPF_F_ACCESS_MASK
    | storage::BPF_F_INNER_MAP;

/// A `BPF_MAP_TYPE_ARRAY` or `BPF_MAP_TYPE_PERCPU_ARRAY`: `max_entries`
/// preallocated, zero-initialised values indexed by a `u32` key.
pub struct ArrayMap {
    values: ValueArea,
    max_entries: u32,
    value_size: usize,
    /// `round_up(value_size, 8) / 8`.
    elem_words: usize,
    /// Whether this is a per-CPU array.
    percpu: bool,
    /// Copies per element: `ncpus` for a per-CPU array, else 1.
    copies: usize,
    /// Words from one CPU's region to the next.
    cpu_stride: usize,
}

impl std::fmt::Debug for ArrayMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayMap")
            .field("max_entries", &self.max_entries)
            .field("value_size", &self.value_size)
            .field("copies", &self.copies)
            .finish_non_exhaustive()
    }
}

impl ArrayMap {
    /// Creates an array (or, for [`MapType::PercpuArray`], one copy of
    /// every value per CPU, `ncpus` of them), every value zeroed.
    ///
    /// # Errors
    /// [`MapError::InvalidDef`] when the key is not 4 bytes, the value is
    /// empty or too large (4 MiB; 32 KiB per CPU for per-CPU arrays, as
    /// Linux), `max_entries` is 0, the flags are not an array's, or the map
    /// would need more than 4 GiB.
    pub fn new(def: &MapDef, ncpus: usize) -> Result<ArrayMap, MapError> {
        let percpu = match def.map_type {
            MapType::Array => false,
            MapType::PercpuArray => true,
            t => {
                return Err(invalid_def(
                    def,
                    format!("{} is not an array map type", t.name()),
                ))
            }
        };
        if def.key_size != 4 {
            return Err(invalid_def(
                def,
                format!(
                    "array maps need key_size 4 (a u32 index), not {}",
                    def.key_size
                ),
            ));
        }
        if def.value_size == 0 {
            return Err(invalid_def(def, "value_size must be > 0"));
        }
        if def.max_entries == 0 {
            return Err(invalid_def(def, "max_entries must be > 0"));
        }
        storage::check_create_flags(def, ARRAY_CREATE_FLAGS)?;
        if percpu && def.flags & (flags::BPF_F_MMAPABLE | storage::BPF_F_INNER_MAP) != 0 {
            return Err(invalid_def(
                def,
                "per-CPU arrays cannot be BPF_F_MMAPABLE or BPF_F_INNER_MAP",
            ));
        }
        let value_size = u64::from(def.value_size);
        if value_size > storage::KMALLOC_MAX_SIZE {
            return Err(invalid_def(
                def,
                format!(
                    "value_size {value_size} is larger than the {} MiB a map value may have",
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
        let copies = if percpu { ncpus.max(1) } else { 1 };
        let stride_bytes = u64::from(def.max_entries)
            .checked_mul(elem_bytes)
            .map(|b| b.next_multiple_of(storage::CACHE_LINE as u64));
        let total = stride_bytes.and_then(|s| s.checked_mul(copies as u64));
        storage::check_budget(def, total)?;
        let elem_words = (elem_bytes / 8) as usize;
        let cpu_stride = stride_bytes.map_or(0, |s| (s / 8) as usize);
        let values = ValueArea::new(cpu_stride * copies).map_err(|e| invalid_def(def, e))?;
        Ok(ArrayMap {
            values,
            max_entries: def.max_entries,
            value_size: def.value_size as usize,
            elem_words,
            percpu,
            copies,
            cpu_stride,
        })
    }

    /// Bytes from one value to the next: `round_up(value_size, 8)`.
    pub fn elem_size(&self) -> usize {
        self.elem_words * 8
    }

    /// Bytes from a CPU's copy of a value to the next CPU's copy (only CPU
    /// 0's region exists in a plain array). The value of `index` on `cpu`
    /// is at `base + cpu * cpu_stride() + index * elem_size()`, `base`
    /// being the start of [`MapOps::value_area`].
    pub fn cpu_stride(&self) -> usize {
        self.cpu_stride * 8
    }

    /// The index a key names, or `Invalid` for a key of the wrong size.
    fn index(key: &[u8]) -> Result<u32, MapError> {
        <[u8; 4]>::try_from(key)
            .map(u32::from_ne_bytes)
            .map_err(|_| MapError::Invalid("array key must be 4 bytes"))
    }

    /// First word of `index`'s copy for `cpu`.
    #[inline]
    fn word(&self, index: u32, cpu: usize) -> usize {
        cpu * self.cpu_stride + index as usize * self.elem_words
    }

    /// Size of a control-side value buffer: `value_size`, or every CPU's
    /// copy rounded up to 8 bytes.
    fn ctl_len(&self) -> usize {
        if self.percpu {
            self.elem_size() * self.copies
        } else {
            self.value_size
        }
    }

    /// Linux's `array_map_update_elem` checks, in its order.
    fn check_update(&self, key: &[u8], flags: u64) -> Result<u32, MapError> {
        let index = Self::index(key)?;
        if flags & !flags::BPF_F_LOCK > flags::BPF_EXIST {
            return Err(MapError::Invalid("unknown map update flags"));
        }
        if index >= self.max_entries {
            return Err(MapError::Full);
        }
        if flags & flags::BPF_NOEXIST != 0 {
            return Err(MapError::Exists);
        }
        if flags & flags::BPF_F_LOCK != 0 {
            return Err(MapError::Invalid(
                "BPF_F_LOCK needs a bpf_spin_lock in the value",
            ));
        }
        Ok(index)
    }
}

impl MapOps for ArrayMap {
    fn lookup(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError> {
        let index = Self::index(key)?;
        if out.len() != self.ctl_len() {
            return Err(MapError::Invalid("value buffer has the wrong size"));
        }
        if index >= self.max_entries {
            return Err(MapError::NotFound);
        }
        if !self.percpu {
            self.values.read(self.word(index, 0), out);
        } else {
            for (cpu, chunk) in out.chunks_exact_mut(self.elem_size()).enumerate() {
                self.values.read(self.word(index, cpu), chunk);
            }
        }
        Ok(())
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        if value.len() != self.ctl_len() {
            return Err(MapError::Invalid("value has the wrong size"));
        }
        let index = self.check_update(key, flags)?;
        if !self.percpu {
            self.values.write(self.word(index, 0), value);
        } else {
            for (cpu, chunk) in value.chunks_exact(self.elem_size()).enumerate() {
                self.values.write(self.word(index, cpu), chunk);
            }
        }
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        Self::index(key)?;
        Err(MapError::Invalid("array elements cannot be deleted"))
    }

    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        if out.len() != 4 {
            return Err(MapError::Invalid("array key must be 4 bytes"));
        }
        let index = key.map(Self::index).transpose()?.unwrap_or(u32::MAX);
        let next = if index >= self.max_entries {
            0
        } else if index == self.max_entries - 1 {
            return Err(MapError::NotFound);
        } else {
            index + 1
        };
        out.copy_from_slice(&next.to_ne_bytes());
        Ok(())
    }

    #[inline]
    fn prog_lookup(&self, key: &[u8], cpu: usize) -> Option<NonNull<u8>> {
        let index = Self::index(key).ok()?;
        let cpu = if self.percpu { cpu } else { 0 };
        if index >= self.max_entries || cpu >= self.copies {
            return None;
        }
        self.values.ptr(self.word(index, cpu))
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
        let index = self.check_update(key, flags)?;
        let cpu = if self.percpu { cpu } else { 0 };
        if cpu >= self.copies {
            return Err(MapError::Invalid("cpu index out of range"));
        }
        self.values.write(self.word(index, cpu), value);
        Ok(())
    }

    fn value_area(&self) -> Option<(NonNull<u8>, usize)> {
        self.values.bounds()
    }

    fn len(&self) -> usize {
        self.max_entries as usize
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::flags::{BPF_ANY, BPF_EXIST, BPF_F_LOCK, BPF_NOEXIST};
    use crate::maps::Pinning;

    fn def(map_type: MapType, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
        MapDef {
            name: "t".into(),
            map_type,
            key_size,
            value_size,
            max_entries,
            flags: 0,
            pinning: Pinning::None,
            inner: None,
        }
    }

    fn k(i: u32) -> [u8; 4] {
        i.to_ne_bytes()
    }

    fn reason(r: Result<ArrayMap, MapError>) -> String {
        match r {
            Err(MapError::InvalidDef { reason, .. }) => reason,
            Err(e) => panic!("expected InvalidDef, got {e}"),
            Ok(_) => panic!("expected InvalidDef, got a map"),
        }
    }

    #[test]
    fn creation_is_validated() {
        assert!(reason(ArrayMap::new(&def(MapType::Array, 8, 4, 1), 1)).contains("key_size 4"));
        assert!(reason(ArrayMap::new(&def(MapType::Array, 4, 0, 1), 1)).contains("value_size"));
        assert!(reason(ArrayMap::new(&def(MapType::Array, 4, 4, 0), 1)).contains("max_entries"));
        assert!(
            reason(ArrayMap::new(&def(MapType::Array, 4, (4 << 20) + 1, 1), 1)).contains("MiB")
        );
        assert!(reason(ArrayMap::new(&def(MapType::PercpuArray, 4, 40_000, 1), 4)).contains("KiB"));
        assert!(reason(ArrayMap::new(&def(MapType::Array, 4, 4096, u32::MAX), 1)).contains("GiB"));
        assert!(reason(ArrayMap::new(&def(MapType::Hash, 4, 4, 1), 1)).contains("not an array"));
        let mut bad_flags = def(MapType::Array, 4, 4, 1);
        bad_flags.flags = flags::BPF_F_NO_COMMON_LRU;
        assert!(reason(ArrayMap::new(&bad_flags, 1)).contains("map_flags"));
        let mut mmap = def(MapType::PercpuArray, 4, 4, 1);
        mmap.flags = flags::BPF_F_MMAPABLE;
        assert!(reason(ArrayMap::new(&mmap, 2)).contains("MMAPABLE"));
        // Global data: mmapable, read-only for programs, one large value.
        let mut rodata = def(MapType::Array, 4, 3 << 20, 1);
        rodata.flags = flags::BPF_F_MMAPABLE | flags::BPF_F_RDONLY_PROG;
        assert!(ArrayMap::new(&rodata, 1).is_ok());
    }

    #[test]
    fn linux_semantics() {
        let a = ArrayMap::new(&def(MapType::Array, 4, 12, 4), 2).unwrap();
        assert_eq!(a.len(), 4);
        let mut out = [0xffu8; 12];
        a.lookup(&k(3), &mut out).unwrap();
        assert_eq!(out, [0; 12], "values start zeroed");
        assert_eq!(a.lookup(&k(4), &mut out), Err(MapError::NotFound));
        assert_eq!(a.prog_lookup(&k(4), 0), None);

        let v: Vec<u8> = (1..=12).collect();
        a.update(&k(2), &v, BPF_ANY).unwrap();
        a.update(&k(2), &v, BPF_EXIST).unwrap();
        a.lookup(&k(2), &mut out).unwrap();
        assert_eq!(out[..], v[..]);

        let e = a.update(&k(4), &v, BPF_ANY).unwrap_err();
        assert_eq!(
            (e.clone(), e.errno()),
            (MapError::Full, -7),
            "E2BIG out of range"
        );
        let e = a.update(&k(1), &v, BPF_NOEXIST).unwrap_err();
        assert_eq!((e.clone(), e.errno()), (MapError::Exists, -17));
        assert!(matches!(
            a.update(&k(1), &v, BPF_F_LOCK),
            Err(MapError::Invalid(_))
        ));
        assert!(matches!(a.update(&k(1), &v, 3), Err(MapError::Invalid(_))));
        assert!(matches!(a.update(&k(1), &v, 8), Err(MapError::Invalid(_))));
        let e = a.delete(&k(1)).unwrap_err();
        assert!(matches!(e, MapError::Invalid(_)) && e.errno() == -22);

        // Sizes.
        assert!(matches!(
            a.lookup(&[0; 8], &mut out),
            Err(MapError::Invalid(_))
        ));
        assert!(matches!(
            a.lookup(&k(0), &mut [0; 16]),
            Err(MapError::Invalid(_))
        ));
        assert!(matches!(
            a.update(&k(0), &[0; 11], BPF_ANY),
            Err(MapError::Invalid(_))
        ));
        assert!(matches!(
            a.prog_update(&k(0), &[0; 13], BPF_ANY, 0),
            Err(MapError::Invalid(_))
        ));
        assert_eq!(a.prog_lookup(&[0; 3], 0), None);

        // Program side: same value for every cpu of a plain array.
        a.prog_update(&k(0), &v, BPF_ANY, 1).unwrap();
        a.lookup(&k(0), &mut out).unwrap();
        assert_eq!(out[..], v[..]);
        assert_eq!(a.prog_lookup(&k(0), 0), a.prog_lookup(&k(0), 1));
    }

    #[test]
    fn next_key_walks_every_index() {
        let a = ArrayMap::new(&def(MapType::Array, 4, 4, 5), 1).unwrap();
        let mut out = [0u8; 4];
        let mut seen = Vec::new();
        let mut cur: Option<[u8; 4]> = None;
        while a.next_key(cur.as_ref().map(|c| &c[..]), &mut out).is_ok() {
            seen.push(u32::from_ne_bytes(out));
            cur = Some(out);
        }
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        assert_eq!(a.next_key(Some(&k(4)), &mut out), Err(MapError::NotFound));
        a.next_key(Some(&k(77)), &mut out).unwrap();
        assert_eq!(out, k(0), "next of an out-of-range key is 0");
        assert!(matches!(
            a.next_key(None, &mut [0; 8]),
            Err(MapError::Invalid(_))
        ));
    }

    #[test]
    fn percpu_layout() {
        let ncpus = 3;
        let a = ArrayMap::new(&def(MapType::PercpuArray, 4, 4, 2), ncpus).unwrap();
        let mut out = vec![0u8; 8 * ncpus];
        // Program side: each CPU writes only its copy.
        for cpu in 0..ncpus {
            a.prog_update(&k(1), &(10 + cpu as u32).to_ne_bytes(), BPF_ANY, cpu)
                .unwrap();
        }
        a.lookup(&k(1), &mut out).unwrap();
        for cpu in 0..ncpus {
            let copy = &out[cpu * 8..cpu * 8 + 8];
            assert_eq!(copy[..4], (10 + cpu as u32).to_ne_bytes());
            assert_eq!(copy[4..], [0; 4], "padding is zero");
        }
        for cpu in 0..ncpus {
            let p = a.prog_lookup(&k(1), cpu).unwrap();
            let (base, _) = a.value_area().unwrap();
            let off = p.as_ptr() as usize - base.as_ptr() as usize;
            assert_eq!(off, cpu * a.cpu_stride() + a.elem_size());
        }
        assert_eq!(a.prog_lookup(&k(1), ncpus), None);
        assert!(matches!(
            a.prog_update(&k(1), &[0; 4], BPF_ANY, ncpus),
            Err(MapError::Invalid(_))
        ));

        // Control side: writes every copy.
        let all: Vec<u8> = (0..8 * ncpus as u8).collect();
        a.update(&k(0), &all, BPF_ANY).unwrap();
        a.lookup(&k(0), &mut out).unwrap();
        assert_eq!(out, all);
        assert!(matches!(
            a.update(&k(0), &[0; 4], BPF_ANY),
            Err(MapError::Invalid(_))
        ));
        assert!(matches!(
            a.lookup(&k(0), &mut [0; 4]),
            Err(MapError::Invalid(_))
        ));

        // One CPU still uses the rounded-up control layout.
        let one = ArrayMap::new(&def(MapType::PercpuArray, 4, 4, 2), 1).unwrap();
        one.lookup(&k(0), &mut [0; 8]).unwrap();
    }

    #[test]
    fn lookup_pointers_stay_in_value_area() {
        for (t, ncpus) in [(MapType::Array, 1), (MapType::PercpuArray, 4)] {
            let a = ArrayMap::new(&def(t, 4, 20, 33), ncpus).unwrap();
            let (base, len) = a.value_area().unwrap();
            assert_eq!(base.as_ptr() as usize % 64, 0);
            for i in 0..33 {
                for cpu in 0..ncpus {
                    let p = a.prog_lookup(&k(i), cpu).unwrap().as_ptr() as usize;
                    assert_eq!(p % 8, 0);
                    assert!(p >= base.as_ptr() as usize && p + 20 <= base.as_ptr() as usize + len);
                }
            }
        }
    }

    #[test]
    fn through_map_create() {
        use crate::maps::Map;
        for (t, ncpus) in [(MapType::Array, 2), (MapType::PercpuArray, 3)] {
            let m = Map::create(&def(t, 4, 6, 5), ncpus).unwrap();
            let value: Vec<u8> = (0..m.value_buf_size() as u8).collect();
            m.ops().update(&k(4), &value, BPF_ANY).unwrap();
            let back = m.lookup_vec(&k(4)).unwrap();
            if t == MapType::Array {
                assert_eq!(back, value);
            } else {
                // Bytes past value_size in each 8-byte copy are padding.
                for (b, v) in back.chunks(8).zip(value.chunks(8)) {
                    assert_eq!(b[..6], v[..6]);
                }
            }
            assert_eq!(m.keys().len(), 5);
            assert!(m.downcast::<ArrayMap>().is_some());
        }
    }

    #[test]
    fn concurrent_per_cpu_counters() {
        let ncpus = 4;
        let a = ArrayMap::new(&def(MapType::PercpuArray, 4, 8, 1), ncpus).unwrap();
        std::thread::scope(|s| {
            for cpu in 0..ncpus {
                let a = &a;
                s.spawn(move || {
                    for n in 1..=10_000u64 {
                        a.prog_update(&k(0), &n.to_ne_bytes(), BPF_ANY, cpu)
                            .unwrap();
                    }
                });
            }
            s.spawn(|| {
                let mut out = vec![0u8; 8 * ncpus];
                for _ in 0..1_000 {
                    a.lookup(&k(0), &mut out).unwrap();
                }
            });
        });
        let mut out = vec![0u8; 8 * ncpus];
        a.lookup(&k(0), &mut out).unwrap();
        for c in out.chunks(8) {
            assert_eq!(u64::from_ne_bytes(c.try_into().unwrap()), 10_000);
        }
    }
}
