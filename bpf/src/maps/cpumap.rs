//! `BPF_MAP_TYPE_CPUMAP`: the CPU table `bpf_redirect_map` hands packets to
//! the network stack through.
//!
//! In Linux, a packet redirected into a cpumap entry is queued to a kernel
//! thread on that CPU, which turns it into an `skb` for the network stack
//! there: a way to spread the stack's work over CPUs from XDP. In Sluice
//! the network stack is the host stack (smoltcp), fed by the PASS queue of
//! the port the packet came in on; so a redirect into a cpumap entry is a
//! PASS by way of that CPU's entry, and the dataplane counts it as a
//! redirect. "CPU" is what it is everywhere in Sluice: a worker index, below
//! the `ncpus` the map was created for.
//!
//! A value is Linux's `struct bpf_cpumap_val` cut to `value_size`: a `u32`
//! queue size (4 bytes), optionally followed by a `u32` program fd on
//! update and program id on lookup (8 bytes). Sluice runs no second
//! program on cpumap entries: an update whose program fd is positive is
//! refused with [`MapError::Invalid`], and a lookup reads back id 0.
//!
//! Control side, as Linux (`kernel/bpf/cpumap.c`):
//!
//! * the key is a CPU index below `max_entries` ([`MapError::Full`],
//!   `E2BIG`, past it); the CPU must exist ([`MapError::Invalid`]; Linux
//!   says `ENODEV`);
//! * queue size 0 empties the entry (as a delete does); more than 16384 is
//!   refused ([`MapError::Invalid`]; Linux says `EOVERFLOW`);
//! * `BPF_NOEXIST` always fails with [`MapError::Exists`] (every index
//!   exists); deleting an empty entry succeeds.
//!
//! Program side: programs can only redirect into a cpumap (Linux's verifier
//! allows `bpf_redirect_map` and nothing else on it), so the only fast
//! path is [`CpuMap::target`], one relaxed load.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;

use super::lpm::common::{alloc_failed, alloc_slice, array_next_key, invalid_def, key_u32};
use super::{flags, MapDef, MapError, MapOps, MapType};

/// Linux's limit on a cpumap entry's queue size.
pub const MAX_QSIZE: u32 = 16384;

/// Most entries a cpumap may have (Linux limits it to `NR_CPUS`; a
/// distribution kernel's is 8192).
pub const MAX_ENTRIES: u32 = 8192;

/// A `CPUMAP` (see the module docs).
pub struct CpuMap {
    value_size: usize,
    max_entries: u32,
    /// CPUs that exist: the dataplane's workers.
    ncpus: u32,
    /// Queue size per entry; 0: empty.
    qsize: Box<[AtomicU32]>,
    /// Occupied entries.
    len: AtomicU32,
}

impl std::fmt::Debug for CpuMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuMap")
            .field("value_size", &self.value_size)
            .field("max_entries", &self.max_entries)
            .field("ncpus", &self.ncpus)
            .field("len", &self.len())
            .finish()
    }
}

impl CpuMap {
    /// Creates an empty cpumap for `ncpus` CPUs (workers).
    ///
    /// # Errors
    /// [`MapError::InvalidDef`] unless `key_size` is 4, `value_size` is 4 or
    /// 8 and `max_entries` is in `1..=8192`.
    pub fn new(def: &MapDef, ncpus: usize) -> Result<CpuMap, MapError> {
        if def.map_type != MapType::Cpumap {
            return Err(invalid_def(
                def,
                format!("{} is not a cpumap", def.map_type.name()),
            ));
        }
        if def.key_size != 4 {
            return Err(invalid_def(def, "key_size must be 4 (a u32 CPU index)"));
        }
        if def.value_size != 4 && def.value_size != 8 {
            return Err(invalid_def(
                def,
                format!(
                    "value_size {} is invalid: a cpumap value is a u32 queue size (4) \
                     optionally followed by a u32 program fd (8)",
                    def.value_size
                ),
            ));
        }
        if def.max_entries == 0 || def.max_entries > MAX_ENTRIES {
            return Err(invalid_def(
                def,
                format!("max_entries must be in 1..={MAX_ENTRIES}"),
            ));
        }
        Ok(CpuMap {
            value_size: def.value_size as usize,
            max_entries: def.max_entries,
            ncpus: u32::try_from(ncpus.max(1)).unwrap_or(u32::MAX),
            qsize: alloc_slice(def.max_entries as usize, AtomicU32::default)
                .ok_or_else(|| alloc_failed(def))?,
            len: AtomicU32::new(0),
        })
    }

    /// The CPU `bpf_redirect_map` hands the packet to for `key`, or `None`
    /// (no entry: the helper then returns its `flags` fallback action).
    /// One relaxed load; no allocation.
    #[inline]
    pub fn target(&self, key: u32) -> Option<u32> {
        let q = self.qsize.get(key as usize)?.load(Relaxed);
        (q != 0).then_some(key)
    }

    fn check_size(&self, len: usize, what: &'static str) -> Result<(), MapError> {
        if len == self.value_size {
            Ok(())
        } else {
            Err(MapError::Invalid(what))
        }
    }
}

impl MapOps for CpuMap {
    fn lookup(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError> {
        self.check_size(out.len(), "value buffer size does not match value_size")?;
        let key = key_u32(key)?;
        let q = self.qsize.get(key as usize).map_or(0, |q| q.load(Relaxed));
        if q == 0 {
            return Err(MapError::NotFound);
        }
        out[..4].copy_from_slice(&q.to_ne_bytes());
        if let Some(prog_id) = out.get_mut(4..8) {
            prog_id.fill(0);
        }
        Ok(())
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        self.check_size(value.len(), "value size does not match value_size")?;
        let key = key_u32(key)?;
        let word = |at: usize| value.get(at..at + 4).and_then(|b| b.try_into().ok());
        let qsize = word(0).map_or(0, u32::from_ne_bytes);
        if flags > flags::BPF_EXIST {
            return Err(MapError::Invalid(
                "flags must be BPF_ANY, BPF_NOEXIST or BPF_EXIST",
            ));
        }
        let slot = self
            .qsize
            .get(key as usize)
            .filter(|_| key < self.max_entries)
            .ok_or(MapError::Full)?;
        if flags == flags::BPF_NOEXIST {
            return Err(MapError::Exists);
        }
        if qsize > MAX_QSIZE {
            return Err(MapError::Invalid("queue size is above 16384"));
        }
        if key >= self.ncpus {
            return Err(MapError::Invalid(
                "no such CPU: the key must be a worker index below the worker count",
            ));
        }
        if word(4).map_or(0, i32::from_ne_bytes) > 0 {
            return Err(MapError::Invalid("cpumap programs are not supported"));
        }
        match (slot.swap(qsize, Relaxed), qsize) {
            (0, 0) | (1.., 1..) => {}
            (0, _) => {
                self.len.fetch_add(1, Relaxed);
            }
            (_, 0) => {
                self.len.fetch_sub(1, Relaxed);
            }
        }
        Ok(())
    }

    /// Empties the entry (succeeds if already empty; an index past the end
    /// is [`MapError::Invalid`], Linux's `EINVAL`).
    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        let key = key_u32(key)?;
        let slot = self
            .qsize
            .get(key as usize)
            .ok_or(MapError::Invalid("index is not below max_entries"))?;
        if slot.swap(0, Relaxed) != 0 {
            self.len.fetch_sub(1, Relaxed);
        }
        Ok(())
    }

    /// Every index, occupied or not, as Linux does.
    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        array_next_key(key, self.max_entries, out)
    }

    /// Programs cannot look cpumap entries up (only redirect into them).
    fn prog_lookup(&self, _key: &[u8], _cpu: usize) -> Option<std::ptr::NonNull<u8>> {
        None
    }

    /// Programs cannot write cpumaps.
    fn prog_update(&self, _: &[u8], _: &[u8], _: u64, _: usize) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }

    /// Programs cannot write cpumaps.
    fn prog_delete(&self, _key: &[u8]) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }

    fn len(&self) -> usize {
        self.len.load(Relaxed) as usize
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(value_size: u32, max_entries: u32) -> MapDef {
        MapDef {
            name: "cpu_map".into(),
            map_type: MapType::Cpumap,
            key_size: 4,
            value_size,
            max_entries,
            flags: 0,
            pinning: super::super::Pinning::None,
            inner: None,
        }
    }

    fn val(qsize: u32, prog: i32) -> Vec<u8> {
        let mut v = qsize.to_ne_bytes().to_vec();
        v.extend_from_slice(&prog.to_ne_bytes());
        v
    }

    #[test]
    fn entries_follow_linux() {
        let m = CpuMap::new(&def(8, 12), 2).unwrap();
        let k = |i: u32| i.to_ne_bytes();
        assert_eq!(m.target(0), None);
        m.update(&k(1), &val(192, 0), flags::BPF_ANY).unwrap();
        assert_eq!((m.target(1), m.len()), (Some(1), 1));
        let mut out = [0xffu8; 8];
        m.lookup(&k(1), &mut out).unwrap();
        assert_eq!(out, *val(192, 0));
        // Every index exists: NOEXIST fails, past the end is E2BIG.
        assert_eq!(
            m.update(&k(0), &val(8, 0), flags::BPF_NOEXIST),
            Err(MapError::Exists)
        );
        assert_eq!(
            m.update(&k(12), &val(8, 0), flags::BPF_ANY),
            Err(MapError::Full)
        );
        // A CPU the dataplane does not have, a queue too long, a program.
        assert!(matches!(
            m.update(&k(5), &val(8, 0), flags::BPF_ANY),
            Err(MapError::Invalid(e)) if e.contains("no such CPU")
        ));
        assert!(matches!(
            m.update(&k(0), &val(MAX_QSIZE + 1, 0), flags::BPF_ANY),
            Err(MapError::Invalid(_))
        ));
        assert!(matches!(
            m.update(&k(0), &val(8, 3), flags::BPF_ANY),
            Err(MapError::Invalid(e)) if e.contains("programs")
        ));
        // Queue size 0 empties, as delete does; deleting twice is fine.
        m.update(&k(1), &val(0, 0), flags::BPF_ANY).unwrap();
        assert_eq!((m.target(1), m.len()), (None, 0));
        assert_eq!(m.lookup(&k(1), &mut out), Err(MapError::NotFound));
        m.update(&k(0), &val(64, -1), flags::BPF_ANY).unwrap();
        m.delete(&k(0)).unwrap();
        m.delete(&k(0)).unwrap();
        assert_eq!(m.len(), 0);
        assert!(m.delete(&k(99)).is_err());
        assert!(m.prog_lookup(&k(0), 0).is_none());
    }

    #[test]
    fn definitions_are_checked() {
        assert!(CpuMap::new(&def(4, 4), 1).is_ok());
        assert!(CpuMap::new(&def(12, 4), 1).is_err());
        assert!(CpuMap::new(&def(4, 0), 1).is_err());
        assert!(CpuMap::new(&def(4, MAX_ENTRIES + 1), 1).is_err());
        let mut d = def(4, 4);
        d.key_size = 8;
        assert!(CpuMap::new(&d, 1).is_err());
    }
}
