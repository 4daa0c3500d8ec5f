//! `BPF_MAP_TYPE_DEVMAP` and `BPF_MAP_TYPE_DEVMAP_HASH`: the port tables
//! `bpf_redirect_map` sends packets through.
//!
//! A value is Linux's `struct bpf_devmap_val` cut to `value_size`: a `u32`
//! ifindex (4 bytes), optionally followed by a `u32` program fd on update
//! and program id on lookup (8 bytes). Sluice does not run programs on
//! devmap entries: an update whose program fd is positive is refused with
//! [`MapError::Invalid`] (like Linux, 0 and negative fds mean "no program"),
//! and a lookup reads back id 0.
//!
//! * `DEVMAP`: the key is an index below `max_entries`; a slot holds an
//!   ifindex or 0 (empty). Updating a slot with ifindex 0 empties it, and
//!   deleting an empty slot succeeds, both as in Linux.
//! * `DEVMAP_HASH`: the key is any `u32` (usually the ifindex itself), at
//!   most `max_entries` of them, in a preallocated
//!   `HashIndex` (`lpm::common`).
//!
//! # Program side
//!
//! [`DevMap::target`] is the `bpf_redirect_map` fast path: one relaxed load
//! for `DEVMAP`, a lock-free (seqlock-validated) hash lookup for
//! `DEVMAP_HASH`. [`MapOps::prog_lookup`] returns a pointer to the value in
//! [`MapOps::value_area`], which programs may read but not write (Linux
//! sets `BPF_F_RDONLY_PROG` on every devmap for the same reason; the
//! verifier must enforce it). Programs cannot update or delete devmap
//! entries (Linux's verifier allows only lookup and redirect), so
//! `prog_update` and `prog_delete` refuse with [`MapError::NotSupported`],
//! which keeps every writer on the control side.
//!
//! The ifindex is not checked against the ports the dataplane owns (Linux
//! checks it names a netdev): the dataplane counts a redirect to an unknown
//! port as a drop.

use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;

use super::lpm::common::HashIndex;
use super::lpm::common::{alloc_failed, alloc_slice, array_next_key, invalid_def, key_u32};
use super::{flags, MapDef, MapError, MapOps, MapType};

/// Storage layout of the two map types.
enum Kind {
    /// Slot = key.
    Array,
    /// Slot = the key's element in the index.
    Hash(Box<HashIndex>),
}

/// A `DEVMAP` or `DEVMAP_HASH` map (see the module docs).
pub struct DevMap {
    kind: Kind,
    value_size: usize,
    /// `u32` words per value: 1 (ifindex) or 2 (ifindex, program).
    stride: usize,
    max_entries: u32,
    /// `stride` words per slot; the program word is always 0.
    values: Box<[AtomicU32]>,
    /// Occupied slots (`DEVMAP`; the index counts for `DEVMAP_HASH`).
    len: AtomicU32,
}

impl std::fmt::Debug for DevMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevMap")
            .field("hash", &matches!(self.kind, Kind::Hash(_)))
            .field("value_size", &self.value_size)
            .field("max_entries", &self.max_entries)
            .field("len", &self.len())
            .finish()
    }
}

/// A parsed `struct bpf_devmap_val`.
struct DevVal {
    ifindex: u32,
}

impl DevMap {
    /// Creates an empty devmap, every slot preallocated.
    ///
    /// # Errors
    /// [`MapError::InvalidDef`] unless `key_size` is 4, `value_size` is 4 or
    /// 8 and `max_entries` is positive.
    pub fn new(def: &MapDef) -> Result<DevMap, MapError> {
        if def.key_size != 4 {
            return Err(invalid_def(def, "key_size must be 4 (a u32)"));
        }
        if def.value_size != 4 && def.value_size != 8 {
            return Err(invalid_def(
                def,
                format!(
                    "value_size {} is invalid: a devmap value is a u32 ifindex (4) \
                     optionally followed by a u32 program fd (8)",
                    def.value_size
                ),
            ));
        }
        if def.max_entries == 0 {
            return Err(invalid_def(def, "max_entries must be > 0"));
        }
        let kind = match def.map_type {
            MapType::Devmap => Kind::Array,
            MapType::DevmapHash => Kind::Hash(Box::new(
                HashIndex::new(4, def.max_entries).ok_or_else(|| alloc_failed(def))?,
            )),
            other => {
                return Err(invalid_def(
                    def,
                    format!("{} is not a devmap type", other.name()),
                ))
            }
        };
        let stride = def.value_size as usize / 4;
        let words = (def.max_entries as usize)
            .checked_mul(stride)
            .ok_or_else(|| alloc_failed(def))?;
        Ok(DevMap {
            kind,
            value_size: def.value_size as usize,
            stride,
            max_entries: def.max_entries,
            values: alloc_slice(words, AtomicU32::default).ok_or_else(|| alloc_failed(def))?,
            len: AtomicU32::new(0),
        })
    }

    /// The ifindex `bpf_redirect_map` sends to for `key`, or `None` (no
    /// entry: the helper then returns its `flags` fallback action).
    /// Lock-free, no allocation.
    pub fn target(&self, key: u32) -> Option<u32> {
        let ifindex = match &self.kind {
            Kind::Array => self.ifindex(key)?.load(Relaxed),
            Kind::Hash(index) => index.lookup(&key.to_ne_bytes(), |slot| {
                self.ifindex(slot).map_or(0, |w| w.load(Relaxed))
            })?,
        };
        (ifindex != 0).then_some(ifindex)
    }

    /// The ifindex word of slot `slot`.
    fn ifindex(&self, slot: u32) -> Option<&AtomicU32> {
        self.values.get(slot as usize * self.stride)
    }

    /// Pointer to slot `slot`'s value, derived from the whole value area.
    fn value_ptr(&self, slot: u32) -> Option<NonNull<u8>> {
        let word = self
            .values
            .as_ptr()
            .wrapping_add(slot as usize * self.stride);
        NonNull::new(word.cast_mut().cast::<u8>())
    }

    /// Writes a value as Linux's lookup returns it (program id 0).
    fn write_value(&self, ifindex: u32, out: &mut [u8]) {
        out[..4].copy_from_slice(&ifindex.to_ne_bytes());
        if let Some(prog_id) = out.get_mut(4..8) {
            prog_id.fill(0);
        }
    }

    fn parse_value(&self, value: &[u8]) -> Result<DevVal, MapError> {
        if value.len() != self.value_size {
            return Err(MapError::Invalid("value size does not match value_size"));
        }
        let word = |at: usize| value.get(at..at + 4).and_then(|b| b.try_into().ok());
        let ifindex = word(0).map_or(0, u32::from_ne_bytes);
        if word(4).map_or(0, i32::from_ne_bytes) > 0 {
            return Err(MapError::Invalid("devmap programs are not supported"));
        }
        Ok(DevVal { ifindex })
    }

    fn check_out(&self, out: &[u8]) -> Result<(), MapError> {
        if out.len() == self.value_size {
            Ok(())
        } else {
            Err(MapError::Invalid(
                "value buffer size does not match value_size",
            ))
        }
    }
}

impl MapOps for DevMap {
    fn lookup(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError> {
        self.check_out(out)?;
        let key = key_u32(key)?;
        let ifindex = match &self.kind {
            Kind::Array => self.ifindex(key).map_or(0, |w| w.load(Relaxed)),
            Kind::Hash(index) => index
                .lookup(&key.to_ne_bytes(), |slot| {
                    self.ifindex(slot).map_or(0, |w| w.load(Relaxed))
                })
                .unwrap_or(0),
        };
        if ifindex == 0 {
            return Err(MapError::NotFound);
        }
        self.write_value(ifindex, out);
        Ok(())
    }

    /// Linux's semantics: for `DEVMAP`, an index past the end is
    /// [`MapError::Full`] (`E2BIG`), `BPF_NOEXIST` always fails with
    /// [`MapError::Exists`] (every index exists) and ifindex 0 empties the
    /// slot; for `DEVMAP_HASH`, ifindex 0 is [`MapError::Invalid`], a full
    /// map [`MapError::Full`], and (as in Linux) `BPF_EXIST` does not
    /// require the key to be present.
    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        let key = key_u32(key)?;
        let DevVal { ifindex } = self.parse_value(value)?;
        if flags > flags::BPF_EXIST {
            return Err(MapError::Invalid(
                "flags must be BPF_ANY, BPF_NOEXIST or BPF_EXIST",
            ));
        }
        match &self.kind {
            Kind::Array => {
                let slot = self
                    .ifindex(key)
                    .filter(|_| key < self.max_entries)
                    .ok_or(MapError::Full)?;
                if flags == flags::BPF_NOEXIST {
                    return Err(MapError::Exists);
                }
                match (slot.swap(ifindex, Relaxed), ifindex) {
                    (0, 0) => {}
                    (0, _) => {
                        self.len.fetch_add(1, Relaxed);
                    }
                    (_, 0) => {
                        self.len.fetch_sub(1, Relaxed);
                    }
                    _ => {}
                }
                Ok(())
            }
            Kind::Hash(index) => {
                if ifindex == 0 {
                    return Err(MapError::Invalid("ifindex must not be 0"));
                }
                let key = key.to_ne_bytes();
                let w = index.write();
                let slot = match w.find(&key) {
                    Some(_) if flags == flags::BPF_NOEXIST => return Err(MapError::Exists),
                    Some(slot) => slot,
                    None => w.insert(&key).ok_or(MapError::Full)?,
                };
                // Stored under the index's write lock: a lookup sees the key
                // and its ifindex together.
                if let Some(word) = self.ifindex(slot) {
                    word.store(ifindex, Relaxed);
                }
                Ok(())
            }
        }
    }

    /// `DEVMAP`: empties the slot (succeeds if already empty, as in Linux;
    /// an index past the end is [`MapError::Invalid`], Linux's `EINVAL`);
    /// `DEVMAP_HASH`: [`MapError::NotFound`] if the key is absent.
    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        let key = key_u32(key)?;
        match &self.kind {
            Kind::Array => {
                let slot = self
                    .ifindex(key)
                    .filter(|_| key < self.max_entries)
                    .ok_or(MapError::Invalid("index is not below max_entries"))?;
                if slot.swap(0, Relaxed) != 0 {
                    self.len.fetch_sub(1, Relaxed);
                }
                Ok(())
            }
            Kind::Hash(index) => {
                let w = index.write();
                let slot = w.remove(&key.to_ne_bytes()).ok_or(MapError::NotFound)?;
                if let Some(word) = self.ifindex(slot) {
                    word.store(0, Relaxed);
                }
                Ok(())
            }
        }
    }

    /// `DEVMAP`: every index, occupied or not, as Linux does;
    /// `DEVMAP_HASH`: the keys present.
    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        match &self.kind {
            Kind::Array => array_next_key(key, self.max_entries, out),
            Kind::Hash(index) => index.next_key(key, out),
        }
    }

    /// Read-only pointer to the value (see the module docs); lock-free.
    fn prog_lookup(&self, key: &[u8], _cpu: usize) -> Option<NonNull<u8>> {
        let key = key_u32(key).ok()?;
        let slot = match &self.kind {
            Kind::Array => key,
            Kind::Hash(index) => index.lookup(&key.to_ne_bytes(), |slot| slot)?,
        };
        if self.ifindex(slot)?.load(Relaxed) == 0 {
            return None;
        }
        self.value_ptr(slot)
    }

    /// Programs cannot write devmaps.
    fn prog_update(&self, _: &[u8], _: &[u8], _: u64, _: usize) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }

    /// Programs cannot write devmaps.
    fn prog_delete(&self, _key: &[u8]) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }

    fn value_area(&self) -> Option<(NonNull<u8>, usize)> {
        let start = NonNull::new(self.values.as_ptr().cast_mut().cast::<u8>())?;
        Some((start, self.values.len() * 4))
    }

    fn len(&self) -> usize {
        match &self.kind {
            Kind::Array => self.len.load(Relaxed) as usize,
            Kind::Hash(index) => index.len(),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{Map, Pinning};

    fn def(map_type: MapType, value_size: u32, max_entries: u32) -> MapDef {
        MapDef {
            name: "ports".into(),
            map_type,
            key_size: 4,
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

    fn val8(ifindex: u32, prog: i32) -> Vec<u8> {
        let mut v = ifindex.to_ne_bytes().to_vec();
        v.extend_from_slice(&prog.to_ne_bytes());
        v
    }

    fn all_keys(m: &DevMap) -> Vec<u32> {
        let mut out = [0; 4];
        let mut cur: Option<[u8; 4]> = None;
        let mut keys = Vec::new();
        while m.next_key(cur.as_ref().map(|k| &k[..]), &mut out).is_ok() {
            keys.push(u32::from_ne_bytes(out));
            cur = Some(out);
            assert!(keys.len() < 100);
        }
        keys
    }

    #[test]
    fn devmap_array() {
        let m = DevMap::new(&def(MapType::Devmap, 4, 4)).unwrap();
        assert_eq!(m.target(0), None);
        m.update(&k(1), &7u32.to_ne_bytes(), flags::BPF_ANY)
            .unwrap();
        assert_eq!(m.target(1), Some(7));
        assert_eq!(m.target(9), None);
        assert_eq!(m.len(), 1);
        assert_eq!(
            m.update(&k(1), &[8, 0, 0, 0], flags::BPF_NOEXIST),
            Err(MapError::Exists)
        );
        m.update(&k(2), &9u32.to_ne_bytes(), flags::BPF_EXIST)
            .unwrap();
        let mut out = [0; 4];
        m.lookup(&k(2), &mut out).unwrap();
        assert_eq!(u32::from_ne_bytes(out), 9);
        assert_eq!(m.lookup(&k(0), &mut out), Err(MapError::NotFound));
        assert_eq!(m.lookup(&k(4), &mut out), Err(MapError::NotFound));
        assert_eq!(m.update(&k(4), &[1; 4], 0), Err(MapError::Full));
        // ifindex 0 empties the slot; deleting an empty slot succeeds.
        m.update(&k(2), &0u32.to_ne_bytes(), 0).unwrap();
        assert_eq!(m.target(2), None);
        m.delete(&k(1)).unwrap();
        m.delete(&k(1)).unwrap();
        assert!(matches!(m.delete(&k(4)), Err(MapError::Invalid(_))));
        assert!(m.is_empty());
        assert_eq!(all_keys(&m), [0, 1, 2, 3]);
    }

    #[test]
    fn value_with_program_part() {
        let m = DevMap::new(&def(MapType::Devmap, 8, 2)).unwrap();
        m.update(&k(0), &val8(5, 0), 0).unwrap();
        m.update(&k(1), &val8(6, -1), 0).unwrap();
        assert_eq!(
            m.update(&k(1), &val8(6, 3), 0),
            Err(MapError::Invalid("devmap programs are not supported"))
        );
        assert!(matches!(
            m.update(&k(1), &[6, 0, 0, 0], 0),
            Err(MapError::Invalid(_))
        ));
        let mut out = [0xff; 8];
        m.lookup(&k(1), &mut out).unwrap();
        assert_eq!(out.to_vec(), val8(6, 0));
        // The program-side pointer reads the same value.
        let p = m.prog_lookup(&k(1), 0).unwrap();
        let (start, len) = m.value_area().unwrap();
        let off = p.as_ptr() as usize - start.as_ptr() as usize;
        assert_eq!((off, len), (8, 16));
        assert!(m.prog_lookup(&k(2), 0).is_none());
        assert_eq!(
            m.prog_update(&k(0), &val8(1, 0), 0, 0),
            Err(MapError::NotSupported)
        );
    }

    #[test]
    fn devmap_hash() {
        let m = DevMap::new(&def(MapType::DevmapHash, 4, 3)).unwrap();
        assert_eq!(m.target(1000), None);
        for ifindex in [1000, 7, 123_456] {
            m.update(&k(ifindex), &ifindex.to_ne_bytes(), flags::BPF_NOEXIST)
                .unwrap();
        }
        assert_eq!(m.target(7), Some(7));
        assert_eq!(m.target(123_456), Some(123_456));
        assert_eq!(m.target(8), None);
        assert_eq!(
            m.update(&k(7), &k(7), flags::BPF_NOEXIST),
            Err(MapError::Exists)
        );
        assert_eq!(m.update(&k(8), &k(8), 0), Err(MapError::Full));
        assert!(matches!(
            m.update(&k(7), &k(0), 0),
            Err(MapError::Invalid(_))
        ));
        m.update(&k(7), &k(70), flags::BPF_EXIST).unwrap();
        assert_eq!(m.target(7), Some(70));
        let mut out = [0; 4];
        m.lookup(&k(7), &mut out).unwrap();
        assert_eq!(out, k(70));
        assert!(m.prog_lookup(&k(1000), 0).is_some());
        let mut keys = all_keys(&m);
        keys.sort_unstable();
        assert_eq!(keys, [7, 1000, 123_456]);
        m.delete(&k(7)).unwrap();
        assert_eq!(m.delete(&k(7)), Err(MapError::NotFound));
        assert_eq!(m.target(7), None);
        assert_eq!(m.lookup(&k(7), &mut out), Err(MapError::NotFound));
        assert_eq!(m.len(), 2);
        m.update(&k(8), &k(8), 0).unwrap();
        assert_eq!(m.target(8), Some(8));
    }

    #[test]
    fn creation_rules_and_downcast() {
        let bad = |d: MapDef| match DevMap::new(&d) {
            Err(MapError::InvalidDef { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(bad(def(MapType::Devmap, 6, 4)).contains("value_size 6"));
        let mut d = def(MapType::DevmapHash, 4, 4);
        d.key_size = 8;
        assert!(bad(d).contains("key_size"));
        let map = Map::create(&def(MapType::DevmapHash, 8, 16), 2).unwrap();
        map.ops().update(&k(3), &val8(3, 0), 0).unwrap();
        assert_eq!(map.downcast::<DevMap>().unwrap().target(3), Some(3));
    }

    #[test]
    fn hash_lookups_during_churn() {
        let m = DevMap::new(&def(MapType::DevmapHash, 4, 8)).unwrap();
        m.update(&k(1), &k(1), 0).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    while !stop.load(Relaxed) {
                        assert_eq!(m.target(1), Some(1));
                        assert!(matches!(m.target(2), None | Some(2)));
                    }
                });
            }
            for _ in 0..if cfg!(miri) { 30 } else { 3000 } {
                m.update(&k(2), &k(2), 0).unwrap();
                m.delete(&k(2)).unwrap();
            }
            stop.store(true, Relaxed);
        });
    }
}
