//! `BPF_MAP_TYPE_ARRAY_OF_MAPS` and `BPF_MAP_TYPE_HASH_OF_MAPS`: maps whose
//! values are other maps.
//!
//! Every inner map must be compatible with the template the outer map was
//! declared with ([`MapDef::inner`], from the ELF object's `__array(values,
//! ...)` or the control plane): same type, key size and value size
//! (`max_entries` may differ, as Linux allows). Maps of maps do not nest, as
//! in Linux.
//!
//! Each slot holds an `Arc<Map>` in an [`ArcSwapOption`]; `ARRAY_OF_MAPS`
//! indexes slots by key, `HASH_OF_MAPS` finds them through a preallocated
//! `HashIndex` (`lpm::common`) of `max_entries` keys.
//!
//! # Program side
//!
//! A program's `bpf_map_lookup_elem` on the outer map yields the inner map,
//! not a pointer to bytes, so the helper calls [`MapOfMaps::get`] (through
//! [`MapOps::as_any`]) rather than [`MapOps::prog_lookup`], which returns
//! `None` here. `get` is lock-free and allocation-free: one reference count
//! increment. The inner map stays alive while the program holds it, even if
//! the control plane replaces the entry meanwhile (Linux gets the same from
//! RCU); if that was the last reference, the worker frees the inner map when
//! it lets go of it. Programs cannot update or delete entries (Linux's
//! verifier allows only lookups), so `prog_update`/`prog_delete` refuse with
//! [`MapError::NotSupported`] and every writer is on the control side.
//!
//! # Control side
//!
//! As with `bpf(2)`, values are 4 bytes: `update` takes an inner map's id
//! (where Linux takes an fd) and resolves it with [`Map::by_id`]; `lookup`
//! reads back the inner map's id. [`MapOfMaps::set`] takes the map itself.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::lpm::common::HashIndex;
use super::lpm::common::{alloc_failed, alloc_slice, array_next_key, invalid_def, key_u32};
use super::{flags, Map, MapDef, MapError, MapOps, MapType};

/// Storage layout of the two map types.
enum Kind {
    /// Slot = key.
    Array,
    /// Slot = the key's element in the index.
    Hash(Box<HashIndex>),
}

/// An `ARRAY_OF_MAPS` or `HASH_OF_MAPS` map (see the module docs).
pub struct MapOfMaps {
    inner: MapDef,
    kind: Kind,
    key_size: usize,
    max_entries: u32,
    slots: Box<[ArcSwapOption<Map>]>,
    /// Occupied slots (`ARRAY_OF_MAPS`; the index counts for the hash).
    len: AtomicU32,
}

impl std::fmt::Debug for MapOfMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapOfMaps")
            .field("hash", &matches!(self.kind, Kind::Hash(_)))
            .field("inner", &self.inner)
            .field("max_entries", &self.max_entries)
            .field("len", &self.len())
            .finish()
    }
}

impl MapOfMaps {
    /// Creates an empty map of maps, every slot preallocated.
    ///
    /// # Errors
    /// [`MapError::InvalidDef`] if the inner map definition is missing or is
    /// itself a map of maps, `value_size` is not 4, the key size is not 4
    /// (array) or positive (hash), or `max_entries` is 0.
    pub fn new(def: &MapDef) -> Result<MapOfMaps, MapError> {
        let Some(inner) = def.inner.as_deref() else {
            return Err(invalid_def(def, "inner map definition missing"));
        };
        if matches!(inner.map_type, MapType::ArrayOfMaps | MapType::HashOfMaps) {
            return Err(invalid_def(
                def,
                "the inner map cannot itself be a map of maps (they do not nest)",
            ));
        }
        if def.value_size != 4 {
            return Err(invalid_def(def, "value_size must be 4 (an inner map id)"));
        }
        if def.max_entries == 0 {
            return Err(invalid_def(def, "max_entries must be > 0"));
        }
        let kind = match def.map_type {
            MapType::ArrayOfMaps if def.key_size != 4 => {
                return Err(invalid_def(def, "key_size must be 4 (a u32 index)"));
            }
            MapType::ArrayOfMaps => Kind::Array,
            MapType::HashOfMaps if def.key_size == 0 => {
                return Err(invalid_def(def, "key_size must be > 0"));
            }
            MapType::HashOfMaps => Kind::Hash(Box::new(
                HashIndex::new(def.key_size as usize, def.max_entries)
                    .ok_or_else(|| alloc_failed(def))?,
            )),
            other => {
                return Err(invalid_def(
                    def,
                    format!("{} is not a map-of-maps type", other.name()),
                ))
            }
        };
        Ok(MapOfMaps {
            inner: inner.clone(),
            kind,
            key_size: def.key_size as usize,
            max_entries: def.max_entries,
            slots: alloc_slice(def.max_entries as usize, ArcSwapOption::empty)
                .ok_or_else(|| alloc_failed(def))?,
            len: AtomicU32::new(0),
        })
    }

    /// The template every inner map must match.
    pub fn inner_def(&self) -> &MapDef {
        &self.inner
    }

    /// The inner map at `key`, for the program side's
    /// `bpf_map_lookup_elem` as well as the control side: `None` if absent
    /// or `key` has the wrong size.
    ///
    /// Lock-free and allocation-free: one reference count increment
    /// (arc-swap's first load on a thread registers the thread once).
    pub fn get(&self, key: &[u8]) -> Option<Arc<Map>> {
        match &self.kind {
            Kind::Array => self.slots.get(key_u32(key).ok()? as usize)?.load_full(),
            Kind::Hash(index) => index
                .lookup(key, |slot| self.slots[slot as usize].load_full())
                .flatten(),
        }
    }

    /// Puts `map` at `key` (`BPF_ANY`), atomically for the workers.
    ///
    /// # Errors
    /// [`MapError::Invalid`] for a key of the wrong size or a map
    /// incompatible with [`MapOfMaps::inner_def`]; [`MapError::Full`] for an
    /// index past the end of an array of maps (Linux's `E2BIG`) or a full
    /// hash of maps.
    pub fn set(&self, key: &[u8], map: Arc<Map>) -> Result<(), MapError> {
        self.insert(key, map, flags::BPF_ANY)
    }

    /// Refuses a map that does not match the inner template.
    fn check_inner(&self, map: &Map) -> Result<(), MapError> {
        let (have, want) = (map.def(), &self.inner);
        if have.map_type != want.map_type
            || have.key_size != want.key_size
            || have.value_size != want.value_size
        {
            return Err(MapError::Invalid(
                "the inner map's type, key_size or value_size differs from the outer map's \
                 inner map definition",
            ));
        }
        Ok(())
    }

    fn insert(&self, key: &[u8], map: Arc<Map>, flags: u64) -> Result<(), MapError> {
        self.check_inner(&map)?;
        let old = match &self.kind {
            Kind::Array => {
                if flags != flags::BPF_ANY {
                    return Err(MapError::Invalid("array of maps updates take BPF_ANY only"));
                }
                let old = self.array_slot(key)?.swap(Some(map));
                if old.is_none() {
                    self.len.fetch_add(1, Relaxed);
                }
                old
            }
            Kind::Hash(index) => {
                if key.len() != self.key_size {
                    return Err(MapError::Invalid("key size does not match key_size"));
                }
                if flags > flags::BPF_EXIST {
                    return Err(MapError::Invalid(
                        "flags must be BPF_ANY, BPF_NOEXIST or BPF_EXIST",
                    ));
                }
                let w = index.write();
                let slot = match w.find(key) {
                    Some(_) if flags == flags::BPF_NOEXIST => return Err(MapError::Exists),
                    Some(slot) => slot,
                    None if flags == flags::BPF_EXIST => return Err(MapError::NotFound),
                    None => w.insert(key).ok_or(MapError::Full)?,
                };
                // Stored under the index's write lock: a lookup sees the key
                // and its map together.
                self.slots[slot as usize].swap(Some(map))
            }
        };
        // A replaced map is released here, after the lock.
        drop(old);
        Ok(())
    }

    fn array_slot(&self, key: &[u8]) -> Result<&ArcSwapOption<Map>, MapError> {
        self.slots.get(key_u32(key)? as usize).ok_or(MapError::Full)
    }
}

impl MapOps for MapOfMaps {
    /// Writes the inner map's id (4 bytes).
    fn lookup(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError> {
        let out: &mut [u8; 4] = out
            .try_into()
            .map_err(|_| MapError::Invalid("value buffer must be 4 bytes (a map id)"))?;
        if key.len() != self.key_size {
            return Err(MapError::Invalid("key size does not match key_size"));
        }
        let map = self.get(key).ok_or(MapError::NotFound)?;
        *out = map.id().to_ne_bytes();
        Ok(())
    }

    /// `value` is an inner map's id (4 bytes). Arrays of maps take
    /// `BPF_ANY` only, hashes of maps any of `BPF_ANY`, `BPF_NOEXIST` and
    /// `BPF_EXIST`, as in Linux.
    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        let id = <[u8; 4]>::try_from(value)
            .map(u32::from_ne_bytes)
            .map_err(|_| MapError::Invalid("value must be 4 bytes (an inner map id)"))?;
        let map = Map::by_id(id).ok_or(MapError::Invalid("no map has this id"))?;
        self.insert(key, map, flags)
    }

    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        let old = match &self.kind {
            Kind::Array => {
                let old = self.array_slot(key)?.swap(None);
                if old.is_some() {
                    self.len.fetch_sub(1, Relaxed);
                }
                old
            }
            Kind::Hash(index) => {
                if key.len() != self.key_size {
                    return Err(MapError::Invalid("key size does not match key_size"));
                }
                let w = index.write();
                w.remove(key)
                    .and_then(|slot| self.slots[slot as usize].swap(None))
            }
        };
        match old {
            Some(map) => {
                // Released here, after the lock.
                drop(map);
                Ok(())
            }
            None => Err(MapError::NotFound),
        }
    }

    /// Arrays: every index, occupied or not, as Linux does; hashes: the
    /// keys present.
    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        match &self.kind {
            Kind::Array => array_next_key(key, self.max_entries, out),
            Kind::Hash(index) => index.next_key(key, out),
        }
    }

    /// Programs only look maps of maps up.
    fn prog_update(&self, _: &[u8], _: &[u8], _: u64, _: usize) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }

    /// Programs only look maps of maps up.
    fn prog_delete(&self, _key: &[u8]) -> Result<(), MapError> {
        Err(MapError::NotSupported)
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
    use crate::maps::Pinning;

    fn def(name: &str, map_type: MapType, key_size: u32, value_size: u32, max: u32) -> MapDef {
        MapDef {
            name: name.into(),
            map_type,
            key_size,
            value_size,
            max_entries: max,
            flags: 0,
            pinning: Pinning::None,
            inner: None,
        }
    }

    fn inner_def() -> MapDef {
        def("inner", MapType::Devmap, 4, 4, 8)
    }

    fn outer(map_type: MapType, key_size: u32, max: u32) -> MapDef {
        let mut d = def("outer", map_type, key_size, 4, max);
        d.inner = Some(Box::new(inner_def()));
        d
    }

    #[test]
    fn array_of_maps_set_get_by_id() {
        let outer = Map::create(&outer(MapType::ArrayOfMaps, 4, 4), 1).unwrap();
        let mom = outer.downcast::<MapOfMaps>().unwrap();
        // A compatible inner map may have another max_entries.
        let mut d = inner_def();
        d.max_entries = 64;
        let a = Map::create(&d, 1).unwrap();
        let b = Map::create(&inner_def(), 1).unwrap();
        assert!(mom.get(&0u32.to_ne_bytes()).is_none());
        mom.set(&0u32.to_ne_bytes(), a.clone()).unwrap();
        assert!(Arc::ptr_eq(&mom.get(&0u32.to_ne_bytes()).unwrap(), &a));
        outer
            .ops()
            .update(&3u32.to_ne_bytes(), &b.id().to_ne_bytes(), 0)
            .unwrap();
        assert_eq!(
            outer.lookup_vec(&3u32.to_ne_bytes()).unwrap(),
            b.id().to_ne_bytes()
        );
        assert_eq!(outer.ops().len(), 2);
        // The inner map works through the outer one.
        let inner = mom.get(&3u32.to_ne_bytes()).unwrap();
        inner
            .ops()
            .update(&1u32.to_ne_bytes(), &9u32.to_ne_bytes(), 0)
            .unwrap();
        assert_eq!(
            b.lookup_vec(&1u32.to_ne_bytes()).unwrap(),
            9u32.to_ne_bytes()
        );

        let ops = outer.ops();
        let (k0, k4) = (0u32.to_ne_bytes(), 4u32.to_ne_bytes());
        assert_eq!(
            ops.update(&k0, &b.id().to_ne_bytes(), flags::BPF_NOEXIST),
            Err(MapError::Invalid("array of maps updates take BPF_ANY only"))
        );
        assert_eq!(
            ops.update(&k4, &b.id().to_ne_bytes(), 0),
            Err(MapError::Full)
        );
        assert_eq!(ops.delete(&k4), Err(MapError::Full));
        assert_eq!(
            ops.update(&k0, &u32::MAX.to_ne_bytes(), 0),
            Err(MapError::Invalid("no map has this id"))
        );
        assert_eq!(
            ops.prog_update(&k0, &b.id().to_ne_bytes(), 0, 0),
            Err(MapError::NotSupported)
        );
        let held = mom.get(&k0).unwrap();
        ops.delete(&k0).unwrap();
        assert_eq!(ops.delete(&k0), Err(MapError::NotFound));
        assert_eq!(outer.lookup_vec(&k0), Err(MapError::NotFound));
        assert_eq!(ops.len(), 1);
        assert_eq!(outer.keys().len(), 4);
        // What a program got stays usable after the control plane removed it.
        assert_eq!(Arc::strong_count(&a), 2);
        held.ops()
            .update(&0u32.to_ne_bytes(), &1u32.to_ne_bytes(), 0)
            .unwrap();
    }

    #[test]
    fn incompatible_inner_refused() {
        let outer = Map::create(&outer(MapType::ArrayOfMaps, 4, 2), 1).unwrap();
        let mom = outer.downcast::<MapOfMaps>().unwrap();
        let k = 0u32.to_ne_bytes();
        let other_type = Map::create(&def("h", MapType::DevmapHash, 4, 4, 8), 1).unwrap();
        let other_value = Map::create(&def("v", MapType::Devmap, 4, 8, 8), 1).unwrap();
        let other_key = Map::create(&def("l", MapType::LpmTrie, 8, 4, 8), 1).unwrap();
        for m in [other_type, other_value, other_key] {
            assert!(matches!(mom.set(&k, m.clone()), Err(MapError::Invalid(_))));
            assert!(matches!(
                outer.ops().update(&k, &m.id().to_ne_bytes(), 0),
                Err(MapError::Invalid(_))
            ));
        }
        assert!(outer.ops().is_empty());
    }

    #[test]
    fn hash_of_maps() {
        let outer = Map::create(&outer(MapType::HashOfMaps, 6, 2), 1).unwrap();
        let mom = outer.downcast::<MapOfMaps>().unwrap();
        let (a, b, c) = (
            Map::create(&inner_def(), 1).unwrap(),
            Map::create(&inner_def(), 1).unwrap(),
            Map::create(&inner_def(), 1).unwrap(),
        );
        let ops = outer.ops();
        let (ka, kb, kc) = (
            *b"\x02\0\0\0\0\x01",
            *b"\x02\0\0\0\0\x02",
            *b"\x02\0\0\0\0\x03",
        );
        assert_eq!(
            ops.update(&ka, &a.id().to_ne_bytes(), flags::BPF_EXIST),
            Err(MapError::NotFound)
        );
        ops.update(&ka, &a.id().to_ne_bytes(), flags::BPF_NOEXIST)
            .unwrap();
        assert_eq!(
            ops.update(&ka, &b.id().to_ne_bytes(), flags::BPF_NOEXIST),
            Err(MapError::Exists)
        );
        mom.set(&kb, b.clone()).unwrap();
        assert_eq!(mom.set(&kc, c.clone()), Err(MapError::Full));
        assert!(Arc::ptr_eq(&mom.get(&ka).unwrap(), &a));
        assert!(Arc::ptr_eq(&mom.get(&kb).unwrap(), &b));
        assert!(mom.get(&kc).is_none());
        assert!(mom.get(&ka[..4]).is_none());
        ops.update(&ka, &c.id().to_ne_bytes(), flags::BPF_EXIST)
            .unwrap();
        assert_eq!(outer.lookup_vec(&ka).unwrap(), c.id().to_ne_bytes());
        let mut keys = outer.keys();
        keys.sort();
        assert_eq!(keys, [ka.to_vec(), kb.to_vec()]);
        ops.delete(&ka).unwrap();
        assert_eq!(ops.delete(&ka), Err(MapError::NotFound));
        assert!(mom.get(&ka).is_none());
        mom.set(&kc, a.clone()).unwrap();
        assert_eq!(ops.len(), 2);
        // Only the outer map's references remain besides ours.
        assert_eq!(Arc::strong_count(&a), 2);
        assert_eq!(Arc::strong_count(&c), 1);
    }

    #[test]
    fn creation_rules() {
        let bad = |d: MapDef| match MapOfMaps::new(&d) {
            Err(MapError::InvalidDef { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        let mut d = outer(MapType::ArrayOfMaps, 4, 2);
        d.inner = None;
        assert_eq!(bad(d), "inner map definition missing");
        let mut d = outer(MapType::HashOfMaps, 4, 2);
        d.inner = Some(Box::new(outer(MapType::ArrayOfMaps, 4, 2)));
        assert!(bad(d).contains("nest"));
        let mut d = outer(MapType::ArrayOfMaps, 4, 2);
        d.value_size = 8;
        assert!(bad(d).contains("value_size must be 4"));
        assert!(bad(outer(MapType::ArrayOfMaps, 8, 2)).contains("key_size must be 4"));
        assert!(bad(outer(MapType::HashOfMaps, 0, 2)).contains("key_size must be > 0"));
    }
}
