//! `BPF_MAP_TYPE_PROG_ARRAY`: the program table that `bpf_tail_call` jumps
//! through.
//!
//! Each of the `max_entries` slots holds an `Arc<Program>` or nothing, in an
//! [`ArcSwapOption`]: the control plane swaps a slot's program atomically
//! while workers run, and a worker's [`ProgArray::load`] is lock-free. A
//! program taken from a slot stays alive for as long as the worker holds it,
//! even if the control plane replaces or clears the slot meanwhile (Linux
//! gets the same from RCU). If it was the last reference, the worker frees
//! the old program when it lets go of it.
//!
//! # Control side
//!
//! Linux's `bpf(2)` writes a program *fd* into a slot and reads back a
//! program *id*. This crate has neither (programs are plain values here,
//! named by the control plane), so the control plane uses the typed
//! [`ProgArray::set`], and the byte-level `lookup` and `update` return
//! [`MapError::NotSupported`]. `delete` clears a slot and `next_key` walks
//! every index, occupied or not, as Linux does. Programs cannot update or
//! delete slots (Linux's verifier allows only `bpf_tail_call` on this map);
//! `prog_update`/`prog_delete` refuse with [`MapError::NotSupported`].
//!
//! # Reference cycles
//!
//! A program that tail-calls through this array keeps the array alive, and
//! the array keeps its programs alive; a program stored in an array it uses
//! itself forms a cycle. Linux breaks it by clearing the array when the last
//! user-space reference goes away; here the owner of the hook should call
//! [`ProgArray::clear_all`] when it retires a program set.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::lpm::common::{alloc_failed, alloc_slice, array_next_key, invalid_def, key_u32};
use super::{MapDef, MapError, MapOps};
use crate::Program;

/// How many tail calls one run may chain (Linux's `MAX_TAIL_CALL_CNT`); the
/// next `bpf_tail_call` falls through instead, as in Linux.
pub const MAX_TAIL_CALLS: u32 = 33;

/// A `BPF_MAP_TYPE_PROG_ARRAY` map (see the module docs).
pub struct ProgArray {
    slots: Box<[ArcSwapOption<Program>]>,
    /// Occupied slots.
    len: AtomicU32,
}

impl std::fmt::Debug for ProgArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgArray")
            .field("max_entries", &self.slots.len())
            .field("len", &self.len.load(Relaxed))
            .finish()
    }
}

impl ProgArray {
    /// Creates an array of `max_entries` empty slots.
    ///
    /// # Errors
    /// [`MapError::InvalidDef`] unless `key_size` and `value_size` are 4 and
    /// `max_entries` is positive.
    pub fn new(def: &MapDef) -> Result<ProgArray, MapError> {
        if def.key_size != 4 {
            return Err(invalid_def(def, "key_size must be 4 (a u32 index)"));
        }
        if def.value_size != 4 {
            return Err(invalid_def(
                def,
                "value_size must be 4 (a program fd or id)",
            ));
        }
        if def.max_entries == 0 {
            return Err(invalid_def(def, "max_entries must be > 0"));
        }
        let slots = alloc_slice(def.max_entries as usize, ArcSwapOption::empty)
            .ok_or_else(|| alloc_failed(def))?;
        Ok(ProgArray {
            slots,
            len: AtomicU32::new(0),
        })
    }

    /// Number of slots (`max_entries`).
    pub fn max_entries(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Puts `prog` into slot `index` (`None` clears it), atomically for the
    /// workers: a tail call sees the old program or the new one.
    ///
    /// # Errors
    /// [`MapError::Full`] if `index` is not below `max_entries` (Linux's
    /// `E2BIG`, like every array map).
    pub fn set(&self, index: u32, prog: Option<Arc<Program>>) -> Result<(), MapError> {
        let slot = self.slot(index)?;
        let new = prog.is_some();
        let old = slot.swap(prog);
        match (old.is_some(), new) {
            (false, true) => self.len.fetch_add(1, Relaxed),
            (true, false) => self.len.fetch_sub(1, Relaxed),
            _ => 0,
        };
        // `old` is dropped here, on the control side, unless a worker still
        // holds it.
        Ok(())
    }

    /// The program in slot `index`, for `bpf_tail_call`: `None` for an empty
    /// slot or an index out of range (the tail call then falls through).
    ///
    /// Lock-free and allocation-free: one atomic load and one reference
    /// count increment (arc-swap's first load on a thread registers the
    /// thread once; every later load is just that).
    pub fn load(&self, index: u32) -> Option<Arc<Program>> {
        self.slots.get(index as usize)?.load_full()
    }

    /// Empties every slot (see "Reference cycles" in the module docs).
    pub fn clear_all(&self) {
        for slot in self.slots.iter() {
            if slot.swap(None).is_some() {
                self.len.fetch_sub(1, Relaxed);
            }
        }
    }

    fn slot(&self, index: u32) -> Result<&ArcSwapOption<Program>, MapError> {
        self.slots.get(index as usize).ok_or(MapError::Full)
    }
}

impl MapOps for ProgArray {
    /// Not supported: Linux returns the program's id, and programs have no
    /// ids here. Use [`ProgArray::load`].
    fn lookup(&self, _key: &[u8], _out: &mut [u8]) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }

    /// Not supported: the value would be a program fd, which cannot be
    /// resolved here. The control plane uses [`ProgArray::set`].
    fn update(&self, _key: &[u8], _value: &[u8], _flags: u64) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }

    /// Clears slot `key`: [`MapError::NotFound`] if it was empty (Linux:
    /// `ENOENT`), [`MapError::Full`] past the end (Linux: `E2BIG`).
    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        let slot = self.slot(key_u32(key)?)?;
        match slot.swap(None) {
            Some(_) => {
                self.len.fetch_sub(1, Relaxed);
                Ok(())
            }
            None => Err(MapError::NotFound),
        }
    }

    /// Every index, occupied or not, as Linux does.
    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        array_next_key(key, self.max_entries(), out)
    }

    /// Programs only tail-call through this map.
    fn prog_update(&self, _: &[u8], _: &[u8], _: u64, _: usize) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }

    /// Programs only tail-call through this map.
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
    use crate::helpers::Registry;
    use crate::maps::{Map, MapType, Pinning};

    fn def(max_entries: u32) -> MapDef {
        MapDef {
            name: "jmp".into(),
            map_type: MapType::ProgArray,
            key_size: 4,
            value_size: 4,
            max_entries,
            flags: 0,
            pinning: Pinning::None,
            inner: None,
        }
    }

    fn prog() -> Arc<Program> {
        // r0 = 1; exit
        let bytes = [0xb7, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
        Arc::new(Program::from_bytes(&bytes, &Registry::new()).unwrap())
    }

    #[test]
    fn set_load_clear() {
        let a = ProgArray::new(&def(4)).unwrap();
        assert!(a.load(0).is_none());
        assert!(a.load(99).is_none());
        let p = prog();
        a.set(2, Some(p.clone())).unwrap();
        assert!(Arc::ptr_eq(&a.load(2).unwrap(), &p));
        assert_eq!(a.len(), 1);
        // Replacing keeps the count; the old program lives while held.
        let held = a.load(2).unwrap();
        let q = prog();
        a.set(2, Some(q.clone())).unwrap();
        assert!(Arc::ptr_eq(&a.load(2).unwrap(), &q));
        assert!(Arc::ptr_eq(&held, &p));
        assert_eq!(a.len(), 1);
        a.set(2, None).unwrap();
        assert!(a.load(2).is_none());
        assert_eq!(a.len(), 0);
        assert_eq!(a.set(4, Some(p)), Err(MapError::Full));
    }

    #[test]
    fn control_side_ops() {
        let a = ProgArray::new(&def(3)).unwrap();
        a.set(1, Some(prog())).unwrap();
        let mut out = [0; 4];
        assert_eq!(
            a.lookup(&1u32.to_ne_bytes(), &mut out),
            Err(MapError::NotSupported)
        );
        assert_eq!(
            a.update(&1u32.to_ne_bytes(), &[0; 4], 0),
            Err(MapError::NotSupported)
        );
        assert_eq!(
            a.prog_delete(&1u32.to_ne_bytes()),
            Err(MapError::NotSupported)
        );
        a.delete(&1u32.to_ne_bytes()).unwrap();
        assert_eq!(a.delete(&1u32.to_ne_bytes()), Err(MapError::NotFound));
        assert_eq!(a.delete(&3u32.to_ne_bytes()), Err(MapError::Full));
        assert!(a.is_empty());
        // next_key walks every index, like Linux's arrays.
        let mut keys = Vec::new();
        let mut cur: Option<[u8; 4]> = None;
        while a.next_key(cur.as_ref().map(|k| &k[..]), &mut out).is_ok() {
            keys.push(u32::from_ne_bytes(out));
            cur = Some(out);
        }
        assert_eq!(keys, [0, 1, 2]);
        a.next_key(Some(&7u32.to_ne_bytes()), &mut out).unwrap();
        assert_eq!(u32::from_ne_bytes(out), 0);
    }

    #[test]
    fn through_map_create_and_clear_all() {
        let map = Map::create(&def(8), 1).unwrap();
        let a = map.downcast::<ProgArray>().unwrap();
        a.set(0, Some(prog())).unwrap();
        a.set(7, Some(prog())).unwrap();
        assert_eq!(map.ops().len(), 2);
        a.clear_all();
        assert!(map.ops().is_empty());
        let mut d = def(8);
        d.value_size = 8;
        assert!(matches!(
            ProgArray::new(&d),
            Err(MapError::InvalidDef { .. })
        ));
    }

    #[test]
    fn concurrent_loads_while_swapping() {
        let a = ProgArray::new(&def(1)).unwrap();
        let rounds = if cfg!(miri) { 50 } else { 5000 };
        let (p, q) = (prog(), prog());
        a.set(0, Some(p.clone())).unwrap();
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..rounds {
                        let got = a.load(0).unwrap();
                        assert!(Arc::ptr_eq(&got, &p) || Arc::ptr_eq(&got, &q));
                    }
                });
            }
            for i in 0..rounds {
                a.set(0, Some(if i % 2 == 0 { q.clone() } else { p.clone() }))
                    .unwrap();
            }
        });
        assert_eq!(a.len(), 1);
    }
}
