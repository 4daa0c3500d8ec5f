//! `BPF_MAP_TYPE_QUEUE` (FIFO) and `BPF_MAP_TYPE_STACK` (LIFO): bounded
//! collections of values without keys (`key_size` 0).
//!
//! Storage is one preallocated ring of `max_entries` value slots with a
//! head (the oldest element) and a count. A queue pops at the head, a stack
//! at the newest end; both push at the newest end. Pushing onto a full map
//! fails with [`MapError::Full`] unless the flags say `BPF_EXIST`, which
//! overwrites the *oldest* element, for both kinds, exactly as Linux's
//! `queue_stack_map_push_elem` does.
//!
//! # Concurrency
//!
//! Push, pop and peek all move the ends, so every operation takes the map's
//! spinlock for the copy of one value, where Linux takes the map's
//! `raw_spin_lock`; nothing allocates. [`MapOps::len`] reads the count
//! without the lock.
//!
//! # Control side
//!
//! As in Linux's `bpf(2)`: `lookup` peeks (the key must be empty), `update`
//! pushes, and `BPF_MAP_LOOKUP_AND_DELETE_ELEM` is [`MapOps::pop`]; `delete`
//! and `next_key` are [`MapError::NotSupported`] (Linux: `EINVAL`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};

use super::lpm::common::SeqLock;
use super::lpm::common::{alloc_failed, alloc_slice, invalid_def, load_bytes, store_bytes};
use super::{flags, MapDef, MapError, MapOps, MapType};

/// Which end `pop` and `peek` take from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Order {
    Fifo,
    Lifo,
}

/// A `QUEUE` or `STACK` map (see the module docs).
pub struct QueueMap {
    order: Order,
    value_size: usize,
    /// 64-bit words per slot.
    stride: usize,
    capacity: u32,
    /// Taken by every operation (used as a plain spinlock).
    lock: SeqLock,
    /// Slot of the oldest element.
    head: AtomicU32,
    /// Elements present.
    count: AtomicU32,
    slots: Box<[AtomicU64]>,
}

impl std::fmt::Debug for QueueMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueMap")
            .field("order", &self.order)
            .field("value_size", &self.value_size)
            .field("capacity", &self.capacity)
            .field("len", &self.count.load(Relaxed))
            .finish()
    }
}

impl QueueMap {
    /// Creates an empty queue or stack with `max_entries` preallocated slots.
    ///
    /// # Errors
    /// [`MapError::InvalidDef`] unless `key_size` is 0 and `value_size` and
    /// `max_entries` are positive.
    pub fn new(def: &MapDef) -> Result<QueueMap, MapError> {
        let order = match def.map_type {
            MapType::Queue => Order::Fifo,
            MapType::Stack => Order::Lifo,
            other => {
                return Err(invalid_def(
                    def,
                    format!("{} is not a queue or stack type", other.name()),
                ))
            }
        };
        if def.key_size != 0 {
            return Err(invalid_def(
                def,
                format!("key_size must be 0 for a {}", def.map_type.name()),
            ));
        }
        if def.value_size == 0 {
            return Err(invalid_def(def, "value_size must be > 0"));
        }
        if def.max_entries == 0 {
            return Err(invalid_def(def, "max_entries must be > 0"));
        }
        let stride = (def.value_size as usize).div_ceil(8);
        let words = (def.max_entries as usize)
            .checked_mul(stride)
            .ok_or_else(|| alloc_failed(def))?;
        Ok(QueueMap {
            order,
            value_size: def.value_size as usize,
            stride,
            capacity: def.max_entries,
            lock: SeqLock::new(),
            head: AtomicU32::new(0),
            count: AtomicU32::new(0),
            slots: alloc_slice(words, AtomicU64::default).ok_or_else(|| alloc_failed(def))?,
        })
    }

    fn slot(&self, i: u32) -> &[AtomicU64] {
        let start = i as usize * self.stride;
        &self.slots[start..start + self.stride]
    }

    /// Slot `n` places after the head.
    fn nth(&self, head: u32, n: u32) -> u32 {
        ((u64::from(head) + u64::from(n)) % u64::from(self.capacity)) as u32
    }

    /// The slot `pop`/`peek` take from, given the ends (`count > 0`).
    fn taken_slot(&self, head: u32, count: u32) -> u32 {
        match self.order {
            Order::Fifo => head,
            Order::Lifo => self.nth(head, count - 1),
        }
    }

    /// Copies the element `pop` would return, optionally removing it.
    fn take(&self, out: &mut [u8], remove: bool) -> Result<(), MapError> {
        if out.len() != self.value_size {
            return Err(MapError::Invalid(
                "value buffer size does not match value_size",
            ));
        }
        let _locked = self.lock.write();
        let (head, count) = (self.head.load(Relaxed), self.count.load(Relaxed));
        if count == 0 {
            return Err(MapError::NotFound);
        }
        let slot = self.taken_slot(head, count);
        load_bytes(self.slot(slot), out);
        if remove {
            if self.order == Order::Fifo {
                self.head.store(self.nth(head, 1), Relaxed);
            }
            self.count.store(count - 1, Relaxed);
        }
        Ok(())
    }
}

impl MapOps for QueueMap {
    /// Peeks, as Linux's `BPF_MAP_LOOKUP_ELEM` on a queue or stack does.
    fn lookup(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError> {
        if !key.is_empty() {
            return Err(MapError::Invalid("queue and stack keys are empty"));
        }
        self.peek(out)
    }

    /// Pushes, as Linux's `BPF_MAP_UPDATE_ELEM` on a queue or stack does.
    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        if !key.is_empty() {
            return Err(MapError::Invalid("queue and stack keys are empty"));
        }
        self.push(value, flags)
    }

    fn delete(&self, _key: &[u8]) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }

    fn next_key(&self, _key: Option<&[u8]>, _out: &mut [u8]) -> Result<(), MapError> {
        Err(MapError::NotSupported)
    }

    /// `BPF_ANY`: [`MapError::Full`] when full; `BPF_EXIST`: when full,
    /// overwrite the oldest element; `BPF_NOEXIST` or anything else:
    /// [`MapError::Invalid`].
    fn push(&self, value: &[u8], flags: u64) -> Result<(), MapError> {
        if value.len() != self.value_size {
            return Err(MapError::Invalid("value size does not match value_size"));
        }
        if flags != flags::BPF_ANY && flags != flags::BPF_EXIST {
            return Err(MapError::Invalid("push flags must be BPF_ANY or BPF_EXIST"));
        }
        let _locked = self.lock.write();
        let (head, count) = (self.head.load(Relaxed), self.count.load(Relaxed));
        let slot = self.nth(head, count);
        if count == self.capacity {
            if flags != flags::BPF_EXIST {
                return Err(MapError::Full);
            }
            // The new element takes the oldest one's slot (`slot == head`).
            store_bytes(self.slot(slot), value);
            self.head.store(self.nth(head, 1), Relaxed);
        } else {
            store_bytes(self.slot(slot), value);
            self.count.store(count + 1, Relaxed);
        }
        Ok(())
    }

    /// Removes and copies the oldest (queue) or newest (stack) element;
    /// [`MapError::NotFound`] if empty. Also the control side's
    /// `BPF_MAP_LOOKUP_AND_DELETE_ELEM`.
    fn pop(&self, out: &mut [u8]) -> Result<(), MapError> {
        self.take(out, true)
    }

    /// Copies the element [`MapOps::pop`] would remove;
    /// [`MapError::NotFound`] if empty.
    fn peek(&self, out: &mut [u8]) -> Result<(), MapError> {
        self.take(out, false)
    }

    fn len(&self) -> usize {
        self.count.load(Relaxed) as usize
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
            name: "q".into(),
            map_type,
            key_size: 0,
            value_size,
            max_entries,
            flags: 0,
            pinning: Pinning::None,
            inner: None,
        }
    }

    fn pop_all(q: &QueueMap) -> Vec<u32> {
        let mut out = [0; 4];
        let mut all = Vec::new();
        while q.pop(&mut out).is_ok() {
            all.push(u32::from_ne_bytes(out));
        }
        all
    }

    fn push(q: &QueueMap, v: u32, flags: u64) -> Result<(), MapError> {
        q.push(&v.to_ne_bytes(), flags)
    }

    #[test]
    fn queue_is_fifo() {
        let q = QueueMap::new(&def(MapType::Queue, 4, 3)).unwrap();
        let mut out = [0; 4];
        assert_eq!(q.pop(&mut out), Err(MapError::NotFound));
        assert_eq!(q.peek(&mut out), Err(MapError::NotFound));
        for v in 1..=3 {
            push(&q, v, flags::BPF_ANY).unwrap();
        }
        assert_eq!(push(&q, 4, flags::BPF_ANY), Err(MapError::Full));
        q.peek(&mut out).unwrap();
        assert_eq!(u32::from_ne_bytes(out), 1);
        q.pop(&mut out).unwrap();
        assert_eq!(u32::from_ne_bytes(out), 1);
        // Wrap around the ring.
        push(&q, 4, flags::BPF_ANY).unwrap();
        assert_eq!(q.len(), 3);
        assert_eq!(pop_all(&q), [2, 3, 4]);
        assert!(q.is_empty());
    }

    #[test]
    fn stack_is_lifo() {
        let q = QueueMap::new(&def(MapType::Stack, 4, 3)).unwrap();
        for v in 1..=3 {
            push(&q, v, flags::BPF_ANY).unwrap();
        }
        let mut out = [0; 4];
        q.peek(&mut out).unwrap();
        assert_eq!(u32::from_ne_bytes(out), 3);
        q.pop(&mut out).unwrap();
        assert_eq!(u32::from_ne_bytes(out), 3);
        push(&q, 4, flags::BPF_ANY).unwrap();
        assert_eq!(pop_all(&q), [4, 2, 1]);
    }

    #[test]
    fn bpf_exist_overwrites_the_oldest() {
        let q = QueueMap::new(&def(MapType::Queue, 4, 3)).unwrap();
        for v in 1..=5 {
            push(&q, v, flags::BPF_EXIST).unwrap();
        }
        assert_eq!(pop_all(&q), [3, 4, 5]);

        let s = QueueMap::new(&def(MapType::Stack, 4, 3)).unwrap();
        for v in 1..=5 {
            push(&s, v, flags::BPF_EXIST).unwrap();
        }
        // The bottom (oldest) went, as in Linux.
        assert_eq!(pop_all(&s), [5, 4, 3]);
        assert!(matches!(
            push(&s, 1, flags::BPF_NOEXIST),
            Err(MapError::Invalid(_))
        ));
        assert!(matches!(
            push(&s, 1, flags::BPF_F_LOCK),
            Err(MapError::Invalid(_))
        ));
    }

    #[test]
    fn control_side_and_odd_value_sizes() {
        let map = Map::create(&def(MapType::Queue, 11, 2), 1).unwrap();
        let ops = map.ops();
        ops.update(&[], b"hello world", 0).unwrap();
        ops.update(&[], b"second valu", 0).unwrap();
        assert_eq!(map.lookup_vec(&[]).unwrap(), b"hello world");
        assert_eq!(map.lookup_vec(&[]).unwrap(), b"hello world");
        assert!(matches!(
            ops.lookup(&[0], &mut [0; 11]),
            Err(MapError::Invalid(_))
        ));
        assert!(matches!(
            ops.update(&[], b"short", 0),
            Err(MapError::Invalid(_))
        ));
        assert_eq!(ops.delete(&[]), Err(MapError::NotSupported));
        assert!(map.keys().is_empty());
        let mut out = [0; 11];
        ops.pop(&mut out).unwrap();
        assert_eq!(&out, b"hello world");
        ops.pop(&mut out).unwrap();
        assert_eq!(&out, b"second valu");
        assert_eq!(map.lookup_vec(&[]), Err(MapError::NotFound));
    }

    #[test]
    fn creation_rules() {
        let bad = |d: MapDef| match QueueMap::new(&d) {
            Err(MapError::InvalidDef { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        let mut d = def(MapType::Queue, 4, 4);
        d.key_size = 4;
        assert_eq!(bad(d), "key_size must be 0 for a queue");
        assert_eq!(bad(def(MapType::Stack, 0, 4)), "value_size must be > 0");
    }

    #[test]
    fn concurrent_push_pop_loses_nothing() {
        let q = QueueMap::new(&def(MapType::Queue, 8, 64)).unwrap();
        let producers = 3u64;
        let per = if cfg!(miri) { 30 } else { 3000u64 };
        let popped = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for p in 0..producers {
                let q = &q;
                s.spawn(move || {
                    for i in 0..per {
                        let v = (p << 32 | i).to_ne_bytes();
                        while q.push(&v, flags::BPF_ANY).is_err() {
                            std::thread::yield_now();
                        }
                    }
                });
            }
            s.spawn(|| {
                let mut got = Vec::new();
                let mut out = [0; 8];
                while got.len() < (producers * per) as usize {
                    if q.pop(&mut out).is_ok() {
                        got.push(u64::from_ne_bytes(out));
                    } else {
                        std::thread::yield_now();
                    }
                }
                *popped.lock().unwrap() = got;
            });
        });
        let got = popped.into_inner().unwrap();
        for p in 0..producers {
            let mine: Vec<u64> = got
                .iter()
                .filter(|v| *v >> 32 == p)
                .map(|v| v & 0xffff_ffff)
                .collect();
            assert_eq!(mine, (0..per).collect::<Vec<_>>());
        }
    }
}
