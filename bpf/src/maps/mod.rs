//! eBPF maps: Linux's map types and semantics, for many worker threads and a
//! control thread at once.
//!
//! Every map is created from a [`MapDef`] (what an ELF object's `.maps` or
//! `maps` section declares, or what the control plane asks for) and lives in
//! an `Arc<Map>` shared by the programs that reference it, the control plane
//! and, for pinned maps, the next version of a program.
//!
//! # Two sides
//!
//! * The **program side** (`prog_*` methods, called by helpers while a
//!   packet is processed) never allocates and never blocks: all elements are
//!   preallocated when the map is created, lookups are lock-free, and the
//!   writers that must serialise (inserting into or deleting from a hash
//!   bucket, an LPM trie update, a ring buffer reservation) hold a short
//!   spinlock around the splice only, exactly where Linux holds its
//!   `raw_spin_lock`. A lookup returns a pointer into the map's
//!   [`MapOps::value_area`], which stays valid for the map's life, as the
//!   value pointer Linux hands to a program does.
//! * The **control side** (`lookup`, `update`, `delete`, `next_key`) copies
//!   keys and values in and out, like the `bpf(2)` map commands; for per-CPU
//!   maps it reads or writes every CPU's copy at once, each rounded up to 8
//!   bytes, as `bpftool` shows them.
//!
//! Per-CPU means per worker: `cpu` is the worker index, below the `ncpus`
//! the map was created with.

use std::any::Any;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

pub mod array;
pub mod cpumap;
pub mod devmap;
pub mod hash;
pub mod lpm;
pub mod map_in_map;
pub mod perf_event_array;
pub mod prog_array;
pub mod queue;
pub mod ringbuf;

/// Update flags (`BPF_ANY`, `BPF_NOEXIST`, `BPF_EXIST`, `BPF_F_LOCK`).
pub mod flags {
    /// Create a new element or update an existing one.
    pub const BPF_ANY: u64 = 0;
    /// Create a new element only if it does not exist.
    pub const BPF_NOEXIST: u64 = 1;
    /// Update an existing element only.
    pub const BPF_EXIST: u64 = 2;
    /// Take the value's spin lock (not supported: refused with EINVAL).
    pub const BPF_F_LOCK: u64 = 4;
    /// Map creation flag: do not preallocate (ignored: Sluice always does).
    pub const BPF_F_NO_PREALLOC: u32 = 1;
    /// Map creation flag: LRU lists per CPU instead of one common list.
    pub const BPF_F_NO_COMMON_LRU: u32 = 2;
    /// Map creation flag: read-only for programs.
    pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;
    /// Map creation flag: the map may be memory-mapped (global data).
    pub const BPF_F_MMAPABLE: u32 = 1 << 10;
}

/// Linux's map types (`enum bpf_map_type`) that Sluice knows by number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum MapType {
    /// `BPF_MAP_TYPE_HASH`
    Hash,
    /// `BPF_MAP_TYPE_ARRAY`
    Array,
    /// `BPF_MAP_TYPE_PROG_ARRAY`
    ProgArray,
    /// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`
    PerfEventArray,
    /// `BPF_MAP_TYPE_PERCPU_HASH`
    PercpuHash,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`
    PercpuArray,
    /// `BPF_MAP_TYPE_LRU_HASH`
    LruHash,
    /// `BPF_MAP_TYPE_LRU_PERCPU_HASH`
    LruPercpuHash,
    /// `BPF_MAP_TYPE_LPM_TRIE`
    LpmTrie,
    /// `BPF_MAP_TYPE_ARRAY_OF_MAPS`
    ArrayOfMaps,
    /// `BPF_MAP_TYPE_HASH_OF_MAPS`
    HashOfMaps,
    /// `BPF_MAP_TYPE_DEVMAP`
    Devmap,
    /// `BPF_MAP_TYPE_CPUMAP`
    Cpumap,
    /// `BPF_MAP_TYPE_QUEUE`
    Queue,
    /// `BPF_MAP_TYPE_STACK`
    Stack,
    /// `BPF_MAP_TYPE_DEVMAP_HASH`
    DevmapHash,
    /// `BPF_MAP_TYPE_RINGBUF`
    RingBuf,
    /// Any other type number (refused at creation, named in the error).
    Other(u32),
}

impl MapType {
    /// The type with Linux's number `n`.
    pub fn from_u32(n: u32) -> MapType {
        match n {
            1 => MapType::Hash,
            2 => MapType::Array,
            3 => MapType::ProgArray,
            4 => MapType::PerfEventArray,
            5 => MapType::PercpuHash,
            6 => MapType::PercpuArray,
            9 => MapType::LruHash,
            10 => MapType::LruPercpuHash,
            11 => MapType::LpmTrie,
            12 => MapType::ArrayOfMaps,
            13 => MapType::HashOfMaps,
            14 => MapType::Devmap,
            16 => MapType::Cpumap,
            22 => MapType::Queue,
            23 => MapType::Stack,
            25 => MapType::DevmapHash,
            27 => MapType::RingBuf,
            n => MapType::Other(n),
        }
    }

    /// Linux's number for the type.
    pub fn to_u32(self) -> u32 {
        match self {
            MapType::Hash => 1,
            MapType::Array => 2,
            MapType::ProgArray => 3,
            MapType::PerfEventArray => 4,
            MapType::PercpuHash => 5,
            MapType::PercpuArray => 6,
            MapType::LruHash => 9,
            MapType::LruPercpuHash => 10,
            MapType::LpmTrie => 11,
            MapType::ArrayOfMaps => 12,
            MapType::HashOfMaps => 13,
            MapType::Devmap => 14,
            MapType::Cpumap => 16,
            MapType::Queue => 22,
            MapType::Stack => 23,
            MapType::DevmapHash => 25,
            MapType::RingBuf => 27,
            MapType::Other(n) => n,
        }
    }

    /// bpftool's name for the type (`hash`, `lru_percpu_hash`, ...).
    pub fn name(self) -> &'static str {
        match self {
            MapType::Hash => "hash",
            MapType::Array => "array",
            MapType::ProgArray => "prog_array",
            MapType::PerfEventArray => "perf_event_array",
            MapType::PercpuHash => "percpu_hash",
            MapType::PercpuArray => "percpu_array",
            MapType::LruHash => "lru_hash",
            MapType::LruPercpuHash => "lru_percpu_hash",
            MapType::LpmTrie => "lpm_trie",
            MapType::ArrayOfMaps => "array_of_maps",
            MapType::HashOfMaps => "hash_of_maps",
            MapType::Devmap => "devmap",
            MapType::Cpumap => "cpumap",
            MapType::Queue => "queue",
            MapType::Stack => "stack",
            MapType::DevmapHash => "devmap_hash",
            MapType::RingBuf => "ringbuf",
            MapType::Other(_) => "unknown",
        }
    }

    /// Whether each worker has its own copy of every value.
    pub fn is_percpu(self) -> bool {
        matches!(
            self,
            MapType::PercpuHash | MapType::PercpuArray | MapType::LruPercpuHash
        )
    }
}

/// libbpf's `pinning` attribute.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Pinning {
    /// `LIBBPF_PIN_NONE`
    #[default]
    None,
    /// `LIBBPF_PIN_BY_NAME`: the map is kept by name across program versions.
    ByName,
}

/// A map's definition.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MapDef {
    /// Name (the ELF symbol, or `.rodata`-style names for global data).
    pub name: String,
    /// Type.
    pub map_type: MapType,
    /// Key size in bytes (0 for queue, stack and ring buffer).
    pub key_size: u32,
    /// Value size in bytes (0 for ring buffers).
    pub value_size: u32,
    /// Capacity (for ring buffers: the data size in bytes, a power of 2).
    pub max_entries: u32,
    /// `map_flags`.
    pub flags: u32,
    /// Pinning.
    pub pinning: Pinning,
    /// The template of inner maps, for array-of-maps and hash-of-maps.
    pub inner: Option<Box<MapDef>>,
}

/// Why a map operation failed. Each maps onto the errno Linux returns, which
/// is what a helper hands back to the program (negated).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The definition is not valid for its type; names what is wrong.
    #[error("map {name}: {reason}")]
    InvalidDef {
        /// Map name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The map type is not supported.
    #[error("map {name}: map type {ty} is not supported")]
    Unsupported {
        /// Map name.
        name: String,
        /// Type name or number.
        ty: String,
    },
    /// No such element (`ENOENT`).
    #[error("no such element")]
    NotFound,
    /// The element exists and `BPF_NOEXIST` was given (`EEXIST`).
    #[error("element exists")]
    Exists,
    /// The map is full (`E2BIG`; `ENOSPC` for ring buffers and queues).
    #[error("map is full")]
    Full,
    /// A key or value of the wrong size, a bad flag or index (`EINVAL`).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// The operation does not exist for this map type (`EOPNOTSUPP`/`EINVAL`).
    #[error("operation not supported by this map type")]
    NotSupported,
}

impl MapError {
    /// The negative errno a helper returns for this error.
    pub fn errno(&self) -> i64 {
        match self {
            MapError::NotFound => -2,      // ENOENT
            MapError::Exists => -17,       // EEXIST
            MapError::Full => -7,          // E2BIG
            MapError::NotSupported => -95, // EOPNOTSUPP
            _ => -22,                      // EINVAL
        }
    }
}

/// The operations every map type provides. Defaults say "not supported".
pub trait MapOps: Send + Sync + Any {
    /// Control side: copies the value of `key` into `out` (all CPUs' copies,
    /// each rounded up to 8 bytes, for per-CPU maps).
    fn lookup(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError>;
    /// Control side: sets `key` to `value` (all CPUs' copies for per-CPU maps).
    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError>;
    /// Control side: removes `key`.
    fn delete(&self, key: &[u8]) -> Result<(), MapError>;
    /// Control side: the key after `key` (the first key for `None`) into
    /// `out`; [`MapError::NotFound`] past the last one.
    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError>;

    /// Program side: a pointer to the value of `key` (this CPU's copy), or
    /// `None`. Never allocates or blocks.
    fn prog_lookup(&self, _key: &[u8], _cpu: usize) -> Option<NonNull<u8>> {
        None
    }
    /// Program side: `bpf_map_update_elem` (this CPU's copy for per-CPU maps).
    fn prog_update(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u64,
        _cpu: usize,
    ) -> Result<(), MapError> {
        self.update(key, value, flags)
    }
    /// Program side: `bpf_map_delete_elem`.
    fn prog_delete(&self, key: &[u8]) -> Result<(), MapError> {
        self.delete(key)
    }
    /// `bpf_map_push_elem` (queue, stack).
    fn push(&self, _value: &[u8], _flags: u64) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }
    /// `bpf_map_pop_elem` (queue, stack).
    fn pop(&self, _out: &mut [u8]) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }
    /// `bpf_map_peek_elem` (queue, stack).
    fn peek(&self, _out: &mut [u8]) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }
    /// The memory every pointer `prog_lookup` returns lies in: start and
    /// length. `None` for maps whose values programs cannot address.
    fn value_area(&self) -> Option<(NonNull<u8>, usize)> {
        None
    }
    /// Number of elements present (for `map show` and tests).
    fn len(&self) -> usize;
    /// Whether the map holds no elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// For downcasting to a concrete type (prog array, devmap, ring buffer,
    /// map-in-map) where a helper needs more than the common operations.
    fn as_any(&self) -> &dyn Any;
}

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// Every live map, for [`Map::by_id`] (control side only: map-in-map
/// updates name inner maps by id, as `bpf(2)` names them by fd).
static ALL_MAPS: Mutex<Vec<Weak<Map>>> = Mutex::new(Vec::new());

/// A map: its definition, a process-unique id, and its storage.
pub struct Map {
    def: MapDef,
    id: u32,
    ncpus: usize,
    ops: Box<dyn MapOps>,
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("id", &self.id)
            .field("def", &self.def)
            .finish()
    }
}

impl Map {
    /// Creates a map for `ncpus` workers, every element preallocated.
    ///
    /// # Errors
    /// [`MapError::InvalidDef`] or [`MapError::Unsupported`] naming the map
    /// and what is wrong with its definition.
    pub fn create(def: &MapDef, ncpus: usize) -> Result<Arc<Map>, MapError> {
        let ncpus = ncpus.max(1);
        let bad = |reason: &str| MapError::InvalidDef {
            name: def.name.clone(),
            reason: reason.to_string(),
        };
        if def.max_entries == 0 {
            return Err(bad("max_entries must be > 0"));
        }
        let ops: Box<dyn MapOps> = match def.map_type {
            MapType::Array | MapType::PercpuArray => Box::new(array::ArrayMap::new(def, ncpus)?),
            MapType::Hash | MapType::PercpuHash | MapType::LruHash | MapType::LruPercpuHash => {
                Box::new(hash::HashMap::new(def, ncpus)?)
            }
            MapType::LpmTrie => Box::new(lpm::LpmTrie::new(def)?),
            MapType::ProgArray => Box::new(prog_array::ProgArray::new(def)?),
            MapType::Devmap | MapType::DevmapHash => Box::new(devmap::DevMap::new(def)?),
            MapType::Cpumap => Box::new(cpumap::CpuMap::new(def, ncpus)?),
            MapType::ArrayOfMaps | MapType::HashOfMaps => {
                Box::new(map_in_map::MapOfMaps::new(def)?)
            }
            MapType::Queue | MapType::Stack => Box::new(queue::QueueMap::new(def)?),
            MapType::RingBuf => Box::new(ringbuf::RingBuf::new(def)?),
            MapType::PerfEventArray => Box::new(perf_event_array::PerfEventArray::new(def, ncpus)?),
            MapType::Other(_) => {
                return Err(MapError::Unsupported {
                    name: def.name.clone(),
                    ty: match def.map_type {
                        MapType::Other(n) => format!("#{n}"),
                        t => t.name().to_string(),
                    },
                })
            }
        };
        let mut def = def.clone();
        if let Some(h) = ops.as_any().downcast_ref::<hash::HashMap>() {
            // Rounded up for BPF_F_NO_COMMON_LRU, as Linux reports it.
            def.max_entries = h.max_entries();
        }
        let map = Arc::new(Map {
            def,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            ncpus,
            ops,
        });
        let mut all = ALL_MAPS.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&map));
        Ok(map)
    }

    /// The live map with this id (control side; takes a mutex).
    pub fn by_id(id: u32) -> Option<Arc<Map>> {
        let all = ALL_MAPS.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().filter_map(Weak::upgrade).find(|m| m.id == id)
    }

    /// The definition.
    pub fn def(&self) -> &MapDef {
        &self.def
    }

    /// The process-unique id (as `bpftool map show` prints).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Number of per-CPU copies.
    pub fn ncpus(&self) -> usize {
        self.ncpus
    }

    /// Size of a control-side value buffer: `value_size`, or for per-CPU
    /// maps `round_up(value_size, 8) * ncpus`.
    pub fn value_buf_size(&self) -> usize {
        let v = self.def.value_size as usize;
        if self.def.map_type.is_percpu() {
            v.next_multiple_of(8) * self.ncpus
        } else {
            v
        }
    }

    /// The operations.
    pub fn ops(&self) -> &dyn MapOps {
        &*self.ops
    }

    /// Downcasts the storage to a concrete map type.
    pub fn downcast<T: MapOps>(&self) -> Option<&T> {
        self.ops.as_any().downcast_ref::<T>()
    }

    /// Control side: the value of `key` as an owned buffer.
    ///
    /// # Errors
    /// [`MapError::NotFound`] or [`MapError::Invalid`] for a bad key size.
    pub fn lookup_vec(&self, key: &[u8]) -> Result<Vec<u8>, MapError> {
        let mut out = vec![0; self.value_buf_size()];
        self.ops.lookup(key, &mut out)?;
        Ok(out)
    }

    /// Control side: every key, in iteration order.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        let mut cur: Option<Vec<u8>> = None;
        let mut out = vec![0; self.def.key_size as usize];
        while self.ops.next_key(cur.as_deref(), &mut out).is_ok() {
            keys.push(out.clone());
            if keys.len() > self.def.max_entries as usize {
                break; // concurrent churn; never loop forever
            }
            cur = Some(out.clone());
        }
        keys
    }
}
