//! `BPF_MAP_TYPE_LPM_TRIE`: longest-prefix match, Linux's algorithm over a
//! preallocated node pool, with lock-free readers.
//!
//! # Keys
//!
//! A key is Linux's `struct bpf_lpm_trie_key { u32 prefixlen; u8 data[]; }`:
//! `prefixlen` in host byte order, then `key_size - 4` data bytes (1 to 256)
//! in network order, bit 0 being the most significant bit of `data[0]`. An
//! IPv4 trie has `key_size` 8, an IPv6 trie 20.
//!
//! # The trie
//!
//! The shape is exactly Linux's (`kernel/bpf/lpm_trie.c`): a binary trie in
//! which every node holds a prefix; a node's children extend its prefix by
//! the next bit; *intermediate* nodes (no value) exist only where two
//! prefixes branch, so they always have two children, and a trie of `n`
//! entries has at most `n - 1` of them. Nodes therefore come from a pool of
//! `2 * max_entries` preallocated at creation, and values from a separate
//! pool of `max_entries + 1` slots (the spare one lets an update write the
//! new value into a fresh slot before it retires the old one, so a reader
//! never sees a half-written value). Freed nodes and value slots go to the
//! back of FIFO free lists, so the slot a program may still be reading is
//! the last to be reused, the closest a userspace map gets to the RCU grace
//! period Linux waits for.
//!
//! Node prefixes are kept as big-endian 64-bit words, so matching a prefix
//! is an XOR and a `leading_zeros` per 64 bits rather than a loop over bytes.
//!
//! # Concurrency
//!
//! Writers (`update` and `delete`, from the control thread or, through
//! `bpf_map_update_elem`/`bpf_map_delete_elem`, from programs on any
//! worker) serialise on one `SeqLock`: a spinlock whose word is also a
//! sequence counter, held for one splice of at most a few nodes, where Linux
//! holds the trie's `raw_spin_lock`. Readers take no lock: they walk the
//! trie, every field of which is an atomic, and retry if a writer was active
//! meanwhile. A lookup never allocates and never blocks, whoever runs it.
//! Every walk is bounded by the depth the trie can have, so even a walk over
//! a trie that changed under it ends (and is then retried).
//!
//! A value pointer handed to a program stays inside [`MapOps::value_area`]
//! for the map's life. As with Linux's preallocated maps, if the element is
//! deleted while the program still holds the pointer, the slot may later be
//! reused for another element.
//!
//! # Differences from Linux
//!
//! Linux insists on `BPF_F_NO_PREALLOC` for this map type; Sluice always
//! preallocates and accepts the flag or its absence. A full trie refuses
//! new prefixes with [`MapError::Full`] (Linux: `ENOSPC`).

use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use self::common::{
    alloc_failed, alloc_slice, invalid_def, load_bytes, store_bytes, IndexRing, SeqLock,
    SeqWriteGuard,
};
use super::{flags, MapDef, MapError, MapOps};

/// Fewest data bytes in a key (`LPM_DATA_SIZE_MIN`).
pub const LPM_DATA_SIZE_MIN: u32 = 1;
/// Most data bytes in a key (`LPM_DATA_SIZE_MAX`).
pub const LPM_DATA_SIZE_MAX: u32 = 256;
/// Size of the `prefixlen` field at the start of every key.
const PREFIXLEN_SIZE: usize = 4;
/// "No node": an empty child link or an empty trie.
const NIL: u32 = u32::MAX;
/// A node's value slot when it is an intermediate node.
const NO_VALUE: u32 = u32::MAX;

/// One trie node. Its prefix bits live in [`LpmTrie::node_data`].
struct Node {
    /// Number of significant prefix bits.
    prefixlen: AtomicU32,
    /// Value slot, or [`NO_VALUE`] for an intermediate node.
    value: AtomicU32,
    /// Children: the prefix extended by a 0 bit, and by a 1 bit.
    child: [AtomicU32; 2],
}

impl Node {
    fn new() -> Node {
        Node {
            prefixlen: AtomicU32::new(0),
            value: AtomicU32::new(NO_VALUE),
            child: [AtomicU32::new(NIL), AtomicU32::new(NIL)],
        }
    }
}

/// A parsed key: prefix length and the data bytes.
#[derive(Clone, Copy)]
struct Key<'a> {
    prefixlen: u32,
    data: &'a [u8],
}

impl Key<'_> {
    /// Bit `bit` of the key's data (0 is the top bit of `data[0]`), as an
    /// index into [`Node::child`]; 0 past the end.
    fn bit(&self, bit: u32) -> usize {
        let (byte, shift) = ((bit / 8) as usize, 7 - bit % 8);
        self.data
            .get(byte)
            .map_or(0, |b| usize::from((b >> shift) & 1))
    }

    /// The `i`th big-endian 64-bit word of the data, zero-padded.
    fn word(&self, i: usize) -> u64 {
        let start = (i * 8).min(self.data.len());
        let chunk = &self.data[start..(start + 8).min(self.data.len())];
        let mut bytes = [0; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        u64::from_be_bytes(bytes)
    }
}

/// Where a node hangs: the root pointer, or a child link of a node.
#[derive(Clone, Copy)]
enum Link {
    Root,
    Child(u32, usize),
}

/// A `BPF_MAP_TYPE_LPM_TRIE` map (see the module docs).
pub struct LpmTrie {
    data_size: usize,
    /// 64-bit words per node prefix.
    data_words: usize,
    /// `8 * data_size`.
    max_prefixlen: u32,
    value_size: usize,
    /// 64-bit words per value slot (the slot stride).
    value_words: usize,
    max_entries: u32,
    lock: SeqLock,
    root: AtomicU32,
    nodes: Box<[Node]>,
    /// `data_words` big-endian words per node.
    node_data: Box<[AtomicU64]>,
    free_nodes: IndexRing,
    /// `value_words` words per slot, bytes in memory order.
    values: Box<[AtomicU64]>,
    free_values: IndexRing,
    len: AtomicU32,
}

impl std::fmt::Debug for LpmTrie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LpmTrie")
            .field("max_prefixlen", &self.max_prefixlen)
            .field("value_size", &self.value_size)
            .field("max_entries", &self.max_entries)
            .field("len", &self.len.load(Relaxed))
            .finish()
    }
}

impl LpmTrie {
    /// Creates an empty trie with every node and value slot preallocated.
    ///
    /// # Errors
    /// [`MapError::InvalidDef`] if `key_size` is not 4 + 1..=256,
    /// `value_size` or `max_entries` is 0, or the pools cannot be allocated.
    pub fn new(def: &MapDef) -> Result<LpmTrie, MapError> {
        let key_min = PREFIXLEN_SIZE as u32 + LPM_DATA_SIZE_MIN;
        let key_max = PREFIXLEN_SIZE as u32 + LPM_DATA_SIZE_MAX;
        if !(key_min..=key_max).contains(&def.key_size) {
            return Err(invalid_def(
                def,
                format!(
                    "key_size {} is invalid: an LPM trie key is a 4-byte prefixlen and \
                     1 to 256 data bytes, so key_size must be {key_min}..={key_max}",
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
        if def.max_entries >= (u32::MAX - 1) / 2 {
            return Err(invalid_def(
                def,
                format!("max_entries {} is too large", def.max_entries),
            ));
        }
        let data_size = def.key_size as usize - PREFIXLEN_SIZE;
        let data_words = data_size.div_ceil(8);
        let value_words = (def.value_size as usize).div_ceil(8);
        let n_nodes = 2 * def.max_entries;
        let n_values = def.max_entries + 1;
        let words = |n: u32, per: usize| (n as usize).checked_mul(per);
        let (Some(data_len), Some(values_len)) =
            (words(n_nodes, data_words), words(n_values, value_words))
        else {
            return Err(alloc_failed(def));
        };
        Ok(LpmTrie {
            data_size,
            data_words,
            max_prefixlen: 8 * data_size as u32,
            value_size: def.value_size as usize,
            value_words,
            max_entries: def.max_entries,
            lock: SeqLock::new(),
            root: AtomicU32::new(NIL),
            nodes: alloc_slice(n_nodes as usize, Node::new).ok_or_else(|| alloc_failed(def))?,
            node_data: alloc_slice(data_len, AtomicU64::default)
                .ok_or_else(|| alloc_failed(def))?,
            free_nodes: IndexRing::full(n_nodes).ok_or_else(|| alloc_failed(def))?,
            values: alloc_slice(values_len, AtomicU64::default).ok_or_else(|| alloc_failed(def))?,
            free_values: IndexRing::full(n_values).ok_or_else(|| alloc_failed(def))?,
            len: AtomicU32::new(0),
        })
    }

    /// The longest prefix a key can have: 8 bits per data byte.
    pub fn max_prefixlen(&self) -> u32 {
        self.max_prefixlen
    }

    /// Splits a key into prefix length and data; `None` for a wrong size.
    fn parse<'k>(&self, key: &'k [u8]) -> Option<Key<'k>> {
        if key.len() != PREFIXLEN_SIZE + self.data_size {
            return None;
        }
        let (prefixlen, data) = key.split_at(PREFIXLEN_SIZE);
        let prefixlen = u32::from_ne_bytes(prefixlen.try_into().ok()?);
        Some(Key { prefixlen, data })
    }

    /// [`LpmTrie::parse`] for the control side, with the error to return.
    fn parse_checked<'k>(&self, key: &'k [u8]) -> Result<Key<'k>, MapError> {
        self.parse(key).ok_or(MapError::Invalid(
            "key size does not match the trie's key_size",
        ))
    }

    fn node(&self, n: u32) -> &Node {
        &self.nodes[n as usize]
    }

    fn data(&self, n: u32) -> &[AtomicU64] {
        let start = n as usize * self.data_words;
        &self.node_data[start..start + self.data_words]
    }

    fn value(&self, slot: u32) -> &[AtomicU64] {
        let start = slot as usize * self.value_words;
        &self.values[start..start + self.value_words]
    }

    fn link(&self, link: Link) -> &AtomicU32 {
        match link {
            Link::Root => &self.root,
            Link::Child(n, bit) => &self.node(n).child[bit],
        }
    }

    /// Bit `bit` of node `n`'s prefix, as a child index.
    fn node_bit(&self, n: u32, bit: u32) -> usize {
        let word = self
            .data(n)
            .get((bit / 64) as usize)
            .map_or(0, |w| w.load(Relaxed));
        ((word >> (63 - bit % 64)) & 1) as usize
    }

    /// Linux's `longest_prefix_match`: how many leading bits node `n`
    /// (whose prefix length is `prefixlen`) shares with `key`, at most
    /// `min(prefixlen, key.prefixlen)`.
    fn match_len(&self, n: u32, prefixlen: u32, key: &Key<'_>) -> u32 {
        let limit = prefixlen.min(key.prefixlen);
        for (i, word) in self.data(n).iter().enumerate() {
            let base = 64 * i as u32;
            if base >= limit {
                break;
            }
            let diff = word.load(Relaxed) ^ key.word(i);
            if diff != 0 {
                return (base + diff.leading_zeros()).min(limit);
            }
        }
        limit
    }

    /// The value slot of the longest prefix matching `key`. Call inside a
    /// read section or with the write lock held.
    fn find_longest(&self, key: &Key<'_>) -> Option<u32> {
        let mut found = None;
        let mut n = self.root.load(Relaxed);
        // A consistent trie is at most max_prefixlen + 1 nodes deep; the
        // bound only matters for a walk over a trie changing under it.
        for _ in 0..=self.max_prefixlen + 1 {
            if n == NIL {
                break;
            }
            let node = self.node(n);
            let prefixlen = node.prefixlen.load(Relaxed);
            let value = node.value.load(Relaxed);
            let matched = self.match_len(n, prefixlen, key);
            if matched == self.max_prefixlen {
                if value != NO_VALUE {
                    found = Some(value);
                }
                break;
            }
            if matched < prefixlen {
                break;
            }
            if value != NO_VALUE {
                found = Some(value);
            }
            n = node.child[key.bit(prefixlen)].load(Relaxed);
        }
        found
    }

    /// The longest-prefix-match value slot for `key`, lock-free.
    fn lookup_slot(&self, key: &Key<'_>) -> Option<u32> {
        self.lock.read(|| self.find_longest(key))
    }

    /// Pointer to value slot `slot`, derived from the whole value area.
    fn value_ptr(&self, slot: u32) -> Option<NonNull<u8>> {
        let word = self
            .values
            .as_ptr()
            .wrapping_add(slot as usize * self.value_words);
        NonNull::new(word.cast_mut().cast::<u8>())
    }

    /// Takes a value slot from the free list and fills it with `value`.
    fn new_value(&self, w: &SeqWriteGuard<'_>, value: &[u8]) -> Result<u32, MapError> {
        let slot = self.free_values.pop(w).ok_or(MapError::Full)?;
        store_bytes(self.value(slot), value);
        Ok(slot)
    }

    /// Takes a node from the free list and initialises it.
    fn new_node(
        &self,
        w: &SeqWriteGuard<'_>,
        prefixlen: u32,
        value: u32,
        data: impl Fn(usize) -> u64,
    ) -> Option<u32> {
        let n = self.free_nodes.pop(w)?;
        let node = self.node(n);
        node.prefixlen.store(prefixlen, Relaxed);
        node.value.store(value, Relaxed);
        node.child[0].store(NIL, Relaxed);
        node.child[1].store(NIL, Relaxed);
        for (i, word) in self.data(n).iter().enumerate() {
            word.store(data(i), Relaxed);
        }
        Some(n)
    }

    fn set_data(&self, n: u32, key: &Key<'_>) {
        for (i, word) in self.data(n).iter().enumerate() {
            word.store(key.word(i), Relaxed);
        }
    }

    /// Linux's `trie_update_elem`, with the write lock held.
    fn update_locked(
        &self,
        w: &SeqWriteGuard<'_>,
        key: &Key<'_>,
        value: &[u8],
        flags: u64,
    ) -> Result<(), MapError> {
        // Find the node `key` belongs at or next to.
        let mut link = Link::Root;
        let mut n = self.root.load(Relaxed);
        let mut matched = 0;
        while n != NIL {
            let prefixlen = self.node(n).prefixlen.load(Relaxed);
            matched = self.match_len(n, prefixlen, key);
            if prefixlen != matched || prefixlen == key.prefixlen {
                break;
            }
            let bit = key.bit(prefixlen);
            link = Link::Child(n, bit);
            n = self.node(n).child[bit].load(Relaxed);
        }

        // The exact prefix has a node: set its value.
        if n != NIL && self.node(n).prefixlen.load(Relaxed) == matched {
            let node = self.node(n);
            let old = node.value.load(Relaxed);
            if old == NO_VALUE {
                // An intermediate node becomes an entry.
                if flags == flags::BPF_EXIST {
                    return Err(MapError::NotFound);
                }
                self.check_room()?;
                let slot = self.new_value(w, value)?;
                self.set_data(n, key);
                node.value.store(slot, Relaxed);
                self.len.fetch_add(1, Relaxed);
            } else {
                if flags == flags::BPF_NOEXIST {
                    return Err(MapError::Exists);
                }
                let slot = self.new_value(w, value)?;
                self.set_data(n, key);
                node.value.store(slot, Relaxed);
                self.free_values.push(w, old);
            }
            return Ok(());
        }

        // A new prefix.
        if flags == flags::BPF_EXIST {
            return Err(MapError::NotFound);
        }
        self.check_room()?;
        let slot = self.new_value(w, value)?;
        let Some(new) = self.new_node(w, key.prefixlen, slot, |i| key.word(i)) else {
            self.free_values.push(w, slot);
            return Err(MapError::Full);
        };
        if n == NIL {
            // An empty link: hang the new node there.
        } else if matched == key.prefixlen {
            // The new prefix is a prefix of `n`'s: `n` goes below it.
            self.node(new).child[self.node_bit(n, matched)].store(n, Relaxed);
        } else {
            // They branch at bit `matched`: an intermediate node joins them.
            let Some(im) = self.new_node(w, matched, NO_VALUE, |i| {
                self.data(n).get(i).map_or(0, |word| word.load(Relaxed))
            }) else {
                self.free_nodes.push(w, new);
                self.free_values.push(w, slot);
                return Err(MapError::Full);
            };
            let (zero, one) = if key.bit(matched) == 1 {
                (n, new)
            } else {
                (new, n)
            };
            self.node(im).child[0].store(zero, Relaxed);
            self.node(im).child[1].store(one, Relaxed);
            self.link(link).store(im, Relaxed);
            self.len.fetch_add(1, Relaxed);
            return Ok(());
        }
        self.link(link).store(new, Relaxed);
        self.len.fetch_add(1, Relaxed);
        Ok(())
    }

    fn check_room(&self) -> Result<(), MapError> {
        if self.len.load(Relaxed) >= self.max_entries {
            Err(MapError::Full)
        } else {
            Ok(())
        }
    }

    /// Linux's `trie_delete_elem`, with the write lock held.
    fn delete_locked(&self, w: &SeqWriteGuard<'_>, key: &Key<'_>) -> Result<(), MapError> {
        let mut trim = Link::Root;
        let mut trim_parent = Link::Root;
        let mut parent = NIL;
        let mut n = self.root.load(Relaxed);
        let mut matched = 0;
        while n != NIL {
            let prefixlen = self.node(n).prefixlen.load(Relaxed);
            matched = self.match_len(n, prefixlen, key);
            if prefixlen != matched || prefixlen == key.prefixlen {
                break;
            }
            parent = n;
            trim_parent = trim;
            let bit = key.bit(prefixlen);
            trim = Link::Child(n, bit);
            n = self.node(n).child[bit].load(Relaxed);
        }
        if n == NIL {
            return Err(MapError::NotFound);
        }
        let node = self.node(n);
        let prefixlen = node.prefixlen.load(Relaxed);
        let slot = node.value.load(Relaxed);
        if prefixlen != key.prefixlen || prefixlen != matched || slot == NO_VALUE {
            return Err(MapError::NotFound);
        }
        self.len.fetch_sub(1, Relaxed);
        self.free_values.push(w, slot);
        let (zero, one) = (node.child[0].load(Relaxed), node.child[1].load(Relaxed));

        if zero != NIL && one != NIL {
            // Two children: the node stays as an intermediate one.
            node.value.store(NO_VALUE, Relaxed);
            return Ok(());
        }
        if parent != NIL && zero == NIL && one == NIL {
            let p = self.node(parent);
            if p.value.load(Relaxed) == NO_VALUE {
                // An intermediate parent left with one child is replaced
                // by that child.
                let sibling = if p.child[0].load(Relaxed) == n {
                    p.child[1].load(Relaxed)
                } else {
                    p.child[0].load(Relaxed)
                };
                self.link(trim_parent).store(sibling, Relaxed);
                self.free_nodes.push(w, parent);
                self.free_nodes.push(w, n);
                return Ok(());
            }
        }
        // No child or one: the node's place goes to that child, if any.
        self.link(trim)
            .store(if zero != NIL { zero } else { one }, Relaxed);
        self.free_nodes.push(w, n);
        Ok(())
    }

    /// Linux's `trie_get_next_key`: the node after `key` in postorder (more
    /// specific prefixes before the prefixes that contain them), or the
    /// first node if `key` is absent or `None`. Call inside a read section;
    /// `stack` is scratch space for the path.
    fn next_node(&self, key: Option<&Key<'_>>, stack: &mut Vec<u32>) -> Option<u32> {
        let root = self.root.load(Relaxed);
        if root == NIL {
            return None;
        }
        let depth = self.max_prefixlen as usize + 2;
        stack.clear();
        let search_root = 'exact: {
            let Some(key) = key.filter(|k| k.prefixlen <= self.max_prefixlen) else {
                break 'exact root;
            };
            // Find the node of exactly `key`, remembering the path.
            let mut n = root;
            let mut matched = 0;
            while n != NIL && stack.len() < depth {
                stack.push(n);
                let prefixlen = self.node(n).prefixlen.load(Relaxed);
                matched = self.match_len(n, prefixlen, key);
                if prefixlen != matched || prefixlen == key.prefixlen {
                    break;
                }
                n = self.node(n).child[key.bit(prefixlen)].load(Relaxed);
            }
            if n == NIL
                || self.node(n).prefixlen.load(Relaxed) != matched
                || self.node(n).value.load(Relaxed) == NO_VALUE
            {
                break 'exact root;
            }
            // The first node after it in postorder: the leftmost of the
            // next right subtree up the path, or the first ancestor that
            // is an entry.
            let mut child = n;
            for &parent in stack.iter().rev().skip(1) {
                let p = self.node(parent);
                if p.child[0].load(Relaxed) == child {
                    let right = p.child[1].load(Relaxed);
                    if right != NIL {
                        break 'exact right;
                    }
                }
                if p.value.load(Relaxed) != NO_VALUE {
                    return Some(parent);
                }
                child = parent;
            }
            return None;
        };
        // The first entry in postorder below `search_root`: the deepest
        // leftmost one (intermediate nodes always have two children).
        let mut next = None;
        let mut n = search_root;
        for _ in 0..depth {
            if n == NIL {
                break;
            }
            let node = self.node(n);
            if node.value.load(Relaxed) == NO_VALUE {
                n = node.child[0].load(Relaxed);
            } else {
                next = Some(n);
                n = match node.child[0].load(Relaxed) {
                    NIL => node.child[1].load(Relaxed),
                    zero => zero,
                };
            }
        }
        next
    }
}

impl MapOps for LpmTrie {
    /// Copies the value of the longest prefix matching `key` (not the exact
    /// prefix: Linux's `BPF_MAP_LOOKUP_ELEM` on a trie does the same).
    fn lookup(&self, key: &[u8], out: &mut [u8]) -> Result<(), MapError> {
        let key = self.parse_checked(key)?;
        if out.len() != self.value_size {
            return Err(MapError::Invalid(
                "value buffer size does not match value_size",
            ));
        }
        let found = self.lock.read(|| match self.find_longest(&key) {
            Some(slot) => {
                load_bytes(self.value(slot), out);
                true
            }
            None => false,
        });
        if found {
            Ok(())
        } else {
            Err(MapError::NotFound)
        }
    }

    /// Sets the value of exactly `key`'s prefix. Also the program side's
    /// `bpf_map_update_elem`: it takes the trie's spinlock for the splice.
    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        let key = self.parse_checked(key)?;
        if value.len() != self.value_size {
            return Err(MapError::Invalid("value size does not match value_size"));
        }
        if flags > flags::BPF_EXIST {
            return Err(MapError::Invalid(
                "flags must be BPF_ANY, BPF_NOEXIST or BPF_EXIST",
            ));
        }
        if key.prefixlen > self.max_prefixlen {
            return Err(MapError::Invalid("prefixlen is longer than the key's data"));
        }
        let w = self.lock.write();
        self.update_locked(&w, &key, value, flags)
    }

    /// Removes exactly `key`'s prefix. Also the program side's
    /// `bpf_map_delete_elem`: it takes the trie's spinlock for the splice.
    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        let key = self.parse_checked(key)?;
        if key.prefixlen > self.max_prefixlen {
            return Err(MapError::Invalid("prefixlen is longer than the key's data"));
        }
        let w = self.lock.write();
        self.delete_locked(&w, &key)
    }

    /// Iterates in postorder like Linux: a prefix comes after every more
    /// specific prefix it contains. An absent `key` restarts from the first.
    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        if out.len() != PREFIXLEN_SIZE + self.data_size {
            return Err(MapError::Invalid("key buffer size does not match key_size"));
        }
        let key = key.map(|k| self.parse_checked(k)).transpose()?;
        let mut stack = Vec::with_capacity(self.max_prefixlen as usize + 2);
        let found = self.lock.read(|| {
            let Some(n) = self.next_node(key.as_ref(), &mut stack) else {
                return false;
            };
            let (prefixlen, data) = out.split_at_mut(PREFIXLEN_SIZE);
            let bits = self.node(n).prefixlen.load(Relaxed);
            prefixlen.copy_from_slice(&bits.to_ne_bytes());
            for (chunk, word) in data.chunks_mut(8).zip(self.data(n)) {
                chunk.copy_from_slice(&word.load(Relaxed).to_be_bytes()[..chunk.len()]);
            }
            true
        });
        if found {
            Ok(())
        } else {
            Err(MapError::NotFound)
        }
    }

    /// Longest-prefix match; lock-free, no allocation. The pointer stays in
    /// [`MapOps::value_area`] for the map's life.
    fn prog_lookup(&self, key: &[u8], _cpu: usize) -> Option<NonNull<u8>> {
        let key = self.parse(key)?;
        self.value_ptr(self.lookup_slot(&key)?)
    }

    fn value_area(&self) -> Option<(NonNull<u8>, usize)> {
        let start = NonNull::new(self.values.as_ptr().cast_mut().cast::<u8>())?;
        Some((start, self.values.len() * 8))
    }

    fn len(&self) -> usize {
        self.len.load(Relaxed) as usize
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Internals shared by this directory's map types: the seqlock-spinlock,
/// FIFO free lists, a preallocated hash index with lock-free lookups, and
/// helpers for keys, array iteration and atomic byte storage.
///
/// Nothing here is specific to the LPM trie; it lives in this file only
/// until `maps/mod.rs` declares a module of its own for it.
///
/// All shared memory is made of atomics, so a reader racing a writer reads
/// stale or mixed values, never undefined behaviour, and the seqlock tells
/// it to retry. Element storage that programs address through pointers is
/// `AtomicU64` words, which gives 8-byte alignment (for the program's own
/// atomics) and interior mutability (programs write through pointers derived
/// from shared references), with no `unsafe` here.
pub(super) mod common {
    use std::hash::{BuildHasher, RandomState};
    use std::hint;
    use std::ops::Deref;
    use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
    use std::sync::atomic::{fence, AtomicU32, AtomicU64};
    use std::thread;

    use crate::maps::{MapDef, MapError};

    /// [`MapError::InvalidDef`] for `def`.
    pub(crate) fn invalid_def(def: &MapDef, reason: impl Into<String>) -> MapError {
        MapError::InvalidDef {
            name: def.name.clone(),
            reason: reason.into(),
        }
    }

    /// [`MapError::InvalidDef`] for elements that cannot be allocated.
    pub(crate) fn alloc_failed(def: &MapDef) -> MapError {
        invalid_def(
            def,
            format!(
                "cannot allocate {} elements of {} bytes",
                def.max_entries,
                u64::from(def.key_size) + u64::from(def.value_size)
            ),
        )
    }

    /// A boxed slice of `n` elements made by `f`, or `None` if the memory
    /// cannot be had (instead of aborting the process).
    pub(crate) fn alloc_slice<T>(n: usize, f: impl FnMut() -> T) -> Option<Box<[T]>> {
        let mut v = Vec::new();
        v.try_reserve_exact(n).ok()?;
        v.extend(std::iter::repeat_with(f).take(n));
        Some(v.into_boxed_slice())
    }

    /// Copies words (bytes in memory order) into `out`, as far as `out` goes.
    pub(crate) fn load_bytes(words: &[AtomicU64], out: &mut [u8]) {
        for (chunk, word) in out.chunks_mut(8).zip(words) {
            chunk.copy_from_slice(&word.load(Relaxed).to_ne_bytes()[..chunk.len()]);
        }
    }

    /// Copies `src` into words (bytes in memory order); the bytes of the
    /// last word past `src` become 0.
    pub(crate) fn store_bytes(words: &[AtomicU64], src: &[u8]) {
        for (chunk, word) in src.chunks(8).zip(words) {
            word.store(ne_word(chunk), Relaxed);
        }
    }

    /// Up to 8 bytes as a native-endian word, zero-padded.
    fn ne_word(chunk: &[u8]) -> u64 {
        let mut bytes = [0; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        u64::from_ne_bytes(bytes)
    }

    /// A `u32` key (array index, ifindex, ...) in host byte order.
    pub(crate) fn key_u32(key: &[u8]) -> Result<u32, MapError> {
        <[u8; 4]>::try_from(key)
            .map(u32::from_ne_bytes)
            .map_err(|_| MapError::Invalid("key must be 4 bytes"))
    }

    /// Linux's `array_map_get_next_key`, shared by every array-like map:
    /// every index in turn, whether or not its slot is occupied; 0 after an
    /// out-of-range key or `None`.
    pub(crate) fn array_next_key(
        key: Option<&[u8]>,
        max_entries: u32,
        out: &mut [u8],
    ) -> Result<(), MapError> {
        let out: &mut [u8; 4] = out
            .try_into()
            .map_err(|_| MapError::Invalid("key buffer must be 4 bytes"))?;
        let next = match key.map(key_u32).transpose()? {
            Some(i) if i < max_entries => {
                if i + 1 == max_entries {
                    return Err(MapError::NotFound);
                }
                i + 1
            }
            _ => 0,
        };
        *out = next.to_ne_bytes();
        Ok(())
    }

    /// Spin, then yield: a waiter spins briefly (the lock holder is in a
    /// splice of a few stores), and only if the holder seems descheduled
    /// (a control thread sharing a core) does it give its time slice away.
    pub(crate) struct Backoff(u32);

    impl Backoff {
        const SPINS: u32 = 256;

        pub(crate) fn new() -> Backoff {
            Backoff(0)
        }

        pub(crate) fn snooze(&mut self) {
            if self.0 < Self::SPINS {
                self.0 += 1;
                hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
    }

    /// Pads and aligns a value to its own cache lines (128 bytes: x86's
    /// adjacent-line prefetcher pairs 64-byte lines), so that words written
    /// by different threads do not share one.
    #[derive(Default, Debug)]
    #[repr(align(128))]
    pub(crate) struct CachePadded<T>(pub(crate) T);

    impl<T> Deref for CachePadded<T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.0
        }
    }

    /// A spinlock for writers that is also a sequence counter for
    /// lock-free readers, in one word: even = free, odd = a writer is in.
    ///
    /// Writers hold it only for a splice of a few stores, where Linux holds
    /// a `raw_spin_lock`. Readers never write the word, so they do not
    /// bounce its cache line between cores: they read it before and after
    /// their reads (all atomics) and retry if it moved (Boehm's seqlock,
    /// with the fences of "Can seqlocks get along with programming language
    /// memory models?"). Never call [`SeqLock::read`] while holding the
    /// write guard on the same thread: it would wait for itself.
    #[repr(align(128))]
    pub(crate) struct SeqLock {
        seq: AtomicU64,
    }

    /// Holds a [`SeqLock`] for writing; releases it when dropped.
    pub(crate) struct SeqWriteGuard<'a> {
        lock: &'a SeqLock,
        seq: u64,
    }

    impl SeqLock {
        pub(crate) const fn new() -> SeqLock {
            SeqLock {
                seq: AtomicU64::new(0),
            }
        }

        /// Takes the lock (spinning; see [`Backoff`]).
        pub(crate) fn write(&self) -> SeqWriteGuard<'_> {
            let mut backoff = Backoff::new();
            loop {
                let seq = self.seq.load(Relaxed);
                if seq & 1 == 0
                    && self
                        .seq
                        .compare_exchange_weak(seq, seq + 1, Acquire, Relaxed)
                        .is_ok()
                {
                    // Orders the odd count before the writer's stores, for
                    // a reader that sees one of those stores.
                    fence(Release);
                    return SeqWriteGuard {
                        lock: self,
                        seq: seq + 1,
                    };
                }
                backoff.snooze();
            }
        }

        /// Runs `f` until it ran with no writer active. `f` reads only
        /// atomics, must not panic on an inconsistent state, and must end
        /// (bound its loops); its result from a torn run is dropped.
        pub(crate) fn read<R>(&self, mut f: impl FnMut() -> R) -> R {
            let mut backoff = Backoff::new();
            loop {
                let seq = self.seq.load(Acquire);
                if seq & 1 == 0 {
                    let result = f();
                    fence(Acquire);
                    if self.seq.load(Relaxed) == seq {
                        return result;
                    }
                }
                backoff.snooze();
            }
        }
    }

    impl Drop for SeqWriteGuard<'_> {
        fn drop(&mut self) {
            self.lock.seq.store(self.seq + 1, Release);
        }
    }

    /// A FIFO of free element indices, changed only under a write lock (the
    /// guard argument says so). FIFO order lets a freed element rest as long
    /// as possible before reuse.
    pub(crate) struct IndexRing {
        slots: Box<[AtomicU32]>,
        head: AtomicU32,
        len: AtomicU32,
    }

    impl IndexRing {
        /// A ring holding `0..n`.
        pub(crate) fn full(n: u32) -> Option<IndexRing> {
            let mut next = 0;
            let slots = alloc_slice(n as usize, || {
                next += 1;
                AtomicU32::new(next - 1)
            })?;
            Some(IndexRing {
                slots,
                head: AtomicU32::new(0),
                len: AtomicU32::new(n),
            })
        }

        /// The oldest free index.
        pub(crate) fn pop(&self, _locked: &SeqWriteGuard<'_>) -> Option<u32> {
            let len = self.len.load(Relaxed);
            if len == 0 {
                return None;
            }
            let head = self.head.load(Relaxed);
            let index = self.slots[head as usize].load(Relaxed);
            self.head.store((head + 1) % self.cap(), Relaxed);
            self.len.store(len - 1, Relaxed);
            Some(index)
        }

        /// Returns `index` to the ring.
        pub(crate) fn push(&self, _locked: &SeqWriteGuard<'_>, index: u32) {
            let len = self.len.load(Relaxed);
            debug_assert!(len < self.cap(), "index freed twice");
            let tail =
                (u64::from(self.head.load(Relaxed)) + u64::from(len)) % u64::from(self.cap());
            self.slots[tail as usize].store(index, Relaxed);
            self.len.store(len + 1, Relaxed);
        }

        fn cap(&self) -> u32 {
            self.slots.len() as u32
        }
    }

    /// "No element" in [`HashIndex`] chains.
    const NIL: u32 = u32::MAX;

    /// A preallocated hash index from byte keys to element indices
    /// `0..capacity`, for the hash-shaped maps whose writers are all on the
    /// control side (`DEVMAP_HASH`, `HASH_OF_MAPS`); the map keeps its
    /// values in its own arrays, by element index.
    ///
    /// Separate chaining through a `next` array, a power-of-two number of
    /// buckets (at least `capacity`, like Linux), keys stored as words.
    /// Lookups are lock-free under a [`SeqLock`], which writers hold while
    /// they relink a chain and set the element's value, so a lookup sees an
    /// element's key and value together. Freed elements are reused in FIFO
    /// order. The hash is seeded per map, against chosen-key flooding.
    pub(crate) struct HashIndex {
        key_size: usize,
        key_words: usize,
        seed: u64,
        mask: usize,
        lock: SeqLock,
        heads: Box<[AtomicU32]>,
        next: Box<[AtomicU32]>,
        keys: Box<[AtomicU64]>,
        free: IndexRing,
        len: AtomicU32,
    }

    /// Holds a [`HashIndex`]'s write lock; dropping it publishes the changes.
    pub(crate) struct IndexWriter<'a> {
        index: &'a HashIndex,
        guard: SeqWriteGuard<'a>,
    }

    impl HashIndex {
        /// An empty index; `None` if `capacity` is 0 or too large or the
        /// memory cannot be had.
        pub(crate) fn new(key_size: usize, capacity: u32) -> Option<HashIndex> {
            if capacity == 0 || capacity == NIL {
                return None;
            }
            let buckets = capacity.checked_next_power_of_two()?;
            let key_words = key_size.div_ceil(8);
            Some(HashIndex {
                key_size,
                key_words,
                seed: RandomState::new().hash_one(0x5eed_u64),
                mask: buckets as usize - 1,
                lock: SeqLock::new(),
                heads: alloc_slice(buckets as usize, || AtomicU32::new(NIL))?,
                next: alloc_slice(capacity as usize, || AtomicU32::new(NIL))?,
                keys: alloc_slice(
                    (capacity as usize).checked_mul(key_words)?,
                    AtomicU64::default,
                )?,
                free: IndexRing::full(capacity)?,
                len: AtomicU32::new(0),
            })
        }

        /// Number of keys present.
        pub(crate) fn len(&self) -> usize {
            self.len.load(Relaxed) as usize
        }

        fn bucket(&self, key: &[u8]) -> usize {
            let mut h = self.seed;
            for chunk in key.chunks(8) {
                h = (h ^ ne_word(chunk))
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .rotate_left(31);
            }
            // MurmurHash3's finaliser: every input bit reaches the low bits.
            h ^= h >> 33;
            h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
            h ^= h >> 33;
            h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            h ^= h >> 33;
            h as usize & self.mask
        }

        fn key_of(&self, i: u32) -> &[AtomicU64] {
            let start = i as usize * self.key_words;
            self.keys.get(start..start + self.key_words).unwrap_or(&[])
        }

        fn matches(&self, i: u32, key: &[u8]) -> bool {
            let stored = self.key_of(i);
            stored.len() == self.key_words
                && key
                    .chunks(8)
                    .zip(stored)
                    .all(|(chunk, word)| word.load(Relaxed) == ne_word(chunk))
        }

        /// Walks `key`'s chain (inside a read section or under the lock).
        fn find(&self, key: &[u8]) -> Option<u32> {
            let mut i = self.heads[self.bucket(key)].load(Relaxed);
            for _ in 0..self.next.len() {
                if i == NIL {
                    return None;
                }
                if self.matches(i, key) {
                    return Some(i);
                }
                i = self.next.get(i as usize)?.load(Relaxed);
            }
            None
        }

        /// Lock-free: `f(element)` for `key`'s element, run inside the read
        /// section (so the element's value is read with its key). `None` if
        /// absent or `key` has the wrong size. `f` may run more than once.
        pub(crate) fn lookup<R>(&self, key: &[u8], mut f: impl FnMut(u32) -> R) -> Option<R> {
            if key.len() != self.key_size {
                return None;
            }
            self.lock.read(|| self.find(key).map(&mut f))
        }

        /// Linux's hash `get_next_key`: the key after `key` in bucket and
        /// chain order, or the first key if `key` is absent or `None`.
        pub(crate) fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
            if out.len() != self.key_size || key.is_some_and(|k| k.len() != self.key_size) {
                return Err(MapError::Invalid("key size does not match key_size"));
            }
            let found = self.lock.read(|| {
                let after = key.and_then(|k| Some((self.find(k)?, self.bucket(k))));
                let next = match after {
                    Some((i, bucket)) => match self.next[i as usize].load(Relaxed) {
                        NIL => self.first_from(bucket + 1),
                        n => Some(n),
                    },
                    None => self.first_from(0),
                };
                next.map(|n| load_bytes(self.key_of(n), out)).is_some()
            });
            if found {
                Ok(())
            } else {
                Err(MapError::NotFound)
            }
        }

        /// The first element of the first non-empty bucket from `bucket` on.
        fn first_from(&self, bucket: usize) -> Option<u32> {
            let heads = self.heads.get(bucket..)?;
            heads.iter().map(|h| h.load(Relaxed)).find(|&i| i != NIL)
        }

        /// Takes the write lock.
        pub(crate) fn write(&self) -> IndexWriter<'_> {
            IndexWriter {
                index: self,
                guard: self.lock.write(),
            }
        }
    }

    impl IndexWriter<'_> {
        /// The element of `key`.
        pub(crate) fn find(&self, key: &[u8]) -> Option<u32> {
            self.index.find(key)
        }

        /// Adds `key` (which must be absent) and returns its element; `None`
        /// if the index is full. The caller sets the element's value before
        /// dropping the writer.
        pub(crate) fn insert(&self, key: &[u8]) -> Option<u32> {
            let ix = self.index;
            let i = ix.free.pop(&self.guard)?;
            store_bytes(ix.key_of(i), key);
            let head = &ix.heads[ix.bucket(key)];
            ix.next[i as usize].store(head.load(Relaxed), Relaxed);
            head.store(i, Relaxed);
            ix.len.fetch_add(1, Relaxed);
            Some(i)
        }

        /// Unlinks `key` and returns its element, now free; the caller
        /// clears the element's value before dropping the writer.
        pub(crate) fn remove(&self, key: &[u8]) -> Option<u32> {
            let ix = self.index;
            let head = &ix.heads[ix.bucket(key)];
            let mut link = head;
            let mut i = head.load(Relaxed);
            while i != NIL {
                if ix.matches(i, key) {
                    link.store(ix.next[i as usize].load(Relaxed), Relaxed);
                    ix.free.push(&self.guard, i);
                    ix.len.fetch_sub(1, Relaxed);
                    return Some(i);
                }
                link = &ix.next[i as usize];
                i = link.load(Relaxed);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{Map, MapType, Pinning};

    fn def(data_bytes: u32, value_size: u32, max_entries: u32) -> MapDef {
        MapDef {
            name: "lpm".into(),
            map_type: MapType::LpmTrie,
            key_size: 4 + data_bytes,
            value_size,
            max_entries,
            flags: flags::BPF_F_NO_PREALLOC,
            pinning: Pinning::None,
            inner: None,
        }
    }

    fn key(prefixlen: u32, data: &[u8]) -> Vec<u8> {
        let mut k = prefixlen.to_ne_bytes().to_vec();
        k.extend_from_slice(data);
        k
    }

    fn v4(prefixlen: u32, a: [u8; 4]) -> Vec<u8> {
        key(prefixlen, &a)
    }

    fn get(t: &LpmTrie, k: &[u8]) -> Option<u32> {
        let mut out = [0; 4];
        t.lookup(k, &mut out).ok().map(|()| u32::from_ne_bytes(out))
    }

    fn put(t: &LpmTrie, k: &[u8], v: u32) {
        t.update(k, &v.to_ne_bytes(), flags::BPF_ANY).unwrap();
    }

    /// Every key, by next_key.
    fn keys(t: &LpmTrie, key_size: usize) -> Vec<Vec<u8>> {
        let mut out = vec![0; key_size];
        let mut cur: Option<Vec<u8>> = None;
        let mut all = Vec::new();
        while t.next_key(cur.as_deref(), &mut out).is_ok() {
            all.push(out.clone());
            cur = Some(out.clone());
            assert!(all.len() <= 1000);
        }
        all
    }

    #[test]
    fn longest_match_with_overlapping_prefixes_and_default_route() {
        let t = LpmTrie::new(&def(4, 4, 16)).unwrap();
        assert_eq!(get(&t, &v4(32, [10, 1, 2, 3])), None);
        put(&t, &v4(8, [10, 0, 0, 0]), 8);
        put(&t, &v4(16, [10, 1, 0, 0]), 16);
        put(&t, &v4(24, [10, 1, 2, 0]), 24);
        put(&t, &v4(32, [10, 1, 2, 3]), 32);
        assert_eq!(get(&t, &v4(32, [10, 1, 2, 3])), Some(32));
        assert_eq!(get(&t, &v4(32, [10, 1, 2, 4])), Some(24));
        assert_eq!(get(&t, &v4(32, [10, 1, 3, 3])), Some(16));
        assert_eq!(get(&t, &v4(32, [10, 2, 3, 3])), Some(8));
        assert_eq!(get(&t, &v4(32, [11, 1, 2, 3])), None);
        // The lookup key's own prefixlen bounds the match, as in Linux.
        assert_eq!(get(&t, &v4(20, [10, 1, 2, 3])), Some(16));

        put(&t, &v4(0, [0, 0, 0, 0]), 0xdef);
        assert_eq!(get(&t, &v4(32, [11, 1, 2, 3])), Some(0xdef));
        assert_eq!(get(&t, &v4(32, [192, 168, 0, 1])), Some(0xdef));
        assert_eq!(get(&t, &v4(32, [10, 9, 9, 9])), Some(8));
        assert_eq!(t.len(), 5);

        // Branching prefixes make intermediate nodes.
        put(&t, &v4(24, [192, 168, 0, 0]), 1);
        put(&t, &v4(24, [192, 168, 1, 0]), 2);
        put(&t, &v4(24, [192, 168, 128, 0]), 3);
        assert_eq!(get(&t, &v4(32, [192, 168, 1, 77])), Some(2));
        assert_eq!(get(&t, &v4(32, [192, 168, 128, 1])), Some(3));
        assert_eq!(get(&t, &v4(32, [192, 168, 2, 1])), Some(0xdef));
        // An intermediate node (192.168.0.0/16 branch point) becomes an entry.
        put(&t, &v4(16, [192, 168, 0, 0]), 4);
        assert_eq!(get(&t, &v4(32, [192, 168, 2, 1])), Some(4));
        assert_eq!(t.len(), 9);
    }

    #[test]
    fn program_side_lookup_points_into_value_area() {
        let t = LpmTrie::new(&def(4, 12, 4)).unwrap();
        t.update(&v4(16, [10, 1, 0, 0]), &[7; 12], flags::BPF_ANY)
            .unwrap();
        let p = t.prog_lookup(&v4(32, [10, 1, 200, 1]), 0).unwrap();
        let (start, len) = t.value_area().unwrap();
        let (p, start) = (p.as_ptr() as usize, start.as_ptr() as usize);
        assert!(p >= start && p + 12 <= start + len);
        assert_eq!(p % 8, 0);
        assert!(t.prog_lookup(&v4(32, [10, 2, 0, 0]), 0).is_none());
        assert!(t.prog_lookup(&[0; 3], 0).is_none());
    }

    #[test]
    fn ipv6_keys() {
        let t = LpmTrie::new(&def(16, 4, 64)).unwrap();
        let net = |s: &[u8]| {
            let mut a = [0u8; 16];
            a[..s.len()].copy_from_slice(s);
            a
        };
        put(&t, &key(32, &net(&[0x20, 0x01, 0x0d, 0xb8])), 32);
        put(&t, &key(48, &net(&[0x20, 0x01, 0x0d, 0xb8, 0, 1])), 48);
        put(
            &t,
            &key(64, &net(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2])),
            64,
        );
        put(
            &t,
            &key(
                127,
                &net(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2]),
            ),
            127,
        );
        let mut host = net(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(get(&t, &key(128, &host)), Some(127));
        host[15] = 4;
        assert_eq!(get(&t, &key(128, &host)), Some(64));
        host[7] = 9;
        assert_eq!(get(&t, &key(128, &host)), Some(48));
        host[5] = 9;
        assert_eq!(get(&t, &key(128, &host)), Some(32));
        host[0] = 0x30;
        assert_eq!(get(&t, &key(128, &host)), None);
        // A full-length entry matches only itself.
        put(&t, &key(128, &[0xff; 16]), 128);
        assert_eq!(get(&t, &key(128, &[0xff; 16])), Some(128));
        let mut near = [0xff; 16];
        near[15] = 0xfe;
        assert_eq!(get(&t, &key(128, &near)), None);
        assert_eq!(keys(&t, 20).len(), 5);
    }

    #[test]
    fn delete_exact_prefix_only() {
        let t = LpmTrie::new(&def(4, 4, 16)).unwrap();
        put(&t, &v4(8, [10, 0, 0, 0]), 8);
        put(&t, &v4(16, [10, 1, 0, 0]), 16);
        put(&t, &v4(16, [10, 2, 0, 0]), 162);
        put(&t, &v4(24, [10, 1, 2, 0]), 24);
        assert_eq!(t.delete(&v4(24, [10, 9, 0, 0])), Err(MapError::NotFound));
        assert_eq!(t.delete(&v4(12, [10, 0, 0, 0])), Err(MapError::NotFound));
        // Data beyond the prefix does not matter.
        t.delete(&v4(16, [10, 1, 99, 99])).unwrap();
        assert_eq!(get(&t, &v4(32, [10, 1, 2, 3])), Some(24));
        assert_eq!(get(&t, &v4(32, [10, 1, 3, 3])), Some(8));
        assert_eq!(t.delete(&v4(16, [10, 1, 0, 0])), Err(MapError::NotFound));
        // A node with two children stays as an intermediate node.
        t.delete(&v4(8, [10, 0, 0, 0])).unwrap();
        assert_eq!(get(&t, &v4(32, [10, 3, 0, 0])), None);
        assert_eq!(get(&t, &v4(32, [10, 2, 0, 0])), Some(162));
        // Removing a leaf under an intermediate node collapses it.
        t.delete(&v4(24, [10, 1, 2, 0])).unwrap();
        assert_eq!(get(&t, &v4(32, [10, 1, 2, 3])), None);
        assert_eq!(get(&t, &v4(32, [10, 2, 0, 1])), Some(162));
        t.delete(&v4(16, [10, 2, 0, 0])).unwrap();
        assert_eq!(t.len(), 0);
        assert_eq!(keys(&t, 8).len(), 0);
        // Every node went back to the pool: the trie can fill up again.
        for i in 0..16u8 {
            put(&t, &v4(32, [1, 2, 3, i]), u32::from(i));
        }
        assert_eq!(get(&t, &v4(32, [1, 2, 3, 15])), Some(15));
    }

    #[test]
    fn noexist_exist_and_full() {
        let t = LpmTrie::new(&def(4, 4, 3)).unwrap();
        let k = v4(24, [10, 1, 2, 0]);
        assert_eq!(
            t.update(&k, &[1; 4], flags::BPF_EXIST),
            Err(MapError::NotFound)
        );
        t.update(&k, &1u32.to_ne_bytes(), flags::BPF_NOEXIST)
            .unwrap();
        assert_eq!(
            t.update(&k, &[2; 4], flags::BPF_NOEXIST),
            Err(MapError::Exists)
        );
        t.update(&k, &3u32.to_ne_bytes(), flags::BPF_EXIST).unwrap();
        assert_eq!(get(&t, &k), Some(3));
        assert_eq!(
            t.update(&k, &[0; 4], flags::BPF_F_LOCK),
            Err(MapError::Invalid(
                "flags must be BPF_ANY, BPF_NOEXIST or BPF_EXIST"
            ))
        );
        assert!(matches!(
            t.update(&v4(33, [0; 4]), &[0; 4], 0),
            Err(MapError::Invalid(_))
        ));
        assert!(matches!(
            t.update(&k, &[0; 3], 0),
            Err(MapError::Invalid(_))
        ));
        assert!(matches!(
            t.update(&k[..7], &[0; 4], 0),
            Err(MapError::Invalid(_))
        ));
        // An intermediate node is not an entry for BPF_EXIST.
        put(&t, &v4(24, [10, 1, 3, 0]), 4);
        assert_eq!(
            t.update(&v4(22, [10, 1, 0, 0]), &[0; 4], flags::BPF_EXIST),
            Err(MapError::NotFound)
        );
        put(&t, &v4(8, [10, 0, 0, 0]), 5);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.update(&v4(16, [10, 1, 0, 0]), &[0; 4], 0),
            Err(MapError::Full)
        );
        // Replacing an existing entry works when full.
        put(&t, &v4(8, [10, 0, 0, 0]), 6);
        assert_eq!(get(&t, &v4(32, [10, 9, 9, 9])), Some(6));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn next_key_visits_each_entry_once_more_specific_first() {
        let t = LpmTrie::new(&def(4, 4, 16)).unwrap();
        let entries = [
            v4(16, [192, 168, 0, 0]),
            v4(24, [192, 168, 0, 0]),
            v4(24, [192, 168, 1, 0]),
            v4(24, [192, 168, 128, 0]),
            v4(0, [0, 0, 0, 0]),
            v4(8, [10, 0, 0, 0]),
        ];
        for (i, k) in entries.iter().enumerate() {
            put(&t, k, i as u32);
        }
        let all = keys(&t, 8);
        assert_eq!(all.len(), entries.len());
        for k in &entries {
            assert_eq!(all.iter().filter(|x| *x == k).count(), 1);
        }
        let pos = |k: &Vec<u8>| all.iter().position(|x| x == k).unwrap();
        // Linux's documented order for the four 192.168 prefixes.
        assert!(pos(&entries[1]) < pos(&entries[2]));
        assert!(pos(&entries[2]) < pos(&entries[3]));
        assert!(pos(&entries[3]) < pos(&entries[0]));
        // Every prefix after the more specific ones it contains.
        assert_eq!(pos(&entries[4]), entries.len() - 1);
        // An absent key restarts from the first.
        let mut out = [0; 8];
        t.next_key(Some(&v4(32, [1, 1, 1, 1])), &mut out).unwrap();
        assert_eq!(out.to_vec(), all[0]);
    }

    #[test]
    fn creation_rules() {
        let bad = |d: MapDef| match LpmTrie::new(&d) {
            Err(MapError::InvalidDef { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(bad(def(0, 4, 1)).contains("key_size 4 is invalid"));
        assert!(bad(def(257, 4, 1)).contains("key_size 261 is invalid"));
        assert!(bad(def(4, 0, 1)).contains("value_size"));
        assert!(LpmTrie::new(&def(256, 1, 1)).is_ok());
        let mut d = def(4, 4, 8);
        d.flags = 0;
        let map = Map::create(&d, 2).unwrap();
        map.ops().update(&v4(8, [1, 0, 0, 0]), &[1; 4], 0).unwrap();
        assert_eq!(map.keys(), vec![v4(8, [1, 0, 0, 0])]);
        assert!(map.downcast::<LpmTrie>().is_some());
    }

    #[test]
    fn concurrent_readers_see_only_whole_values() {
        use std::sync::atomic::AtomicBool;
        let t = LpmTrie::new(&def(4, 16, 64)).unwrap();
        put_wide(&t, &v4(8, [10, 0, 0, 0]), 8);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    let mut out = [0; 16];
                    while !stop.load(Relaxed) {
                        t.lookup(&v4(32, [10, 1, 2, 3]), &mut out).unwrap();
                        let v = u32::from_ne_bytes(out[..4].try_into().unwrap());
                        assert!(out.chunks(4).all(|c| c == v.to_ne_bytes()));
                        assert!(v == 8 || v == 24, "{v}");
                    }
                });
            }
            for i in 0..if cfg!(miri) { 20 } else { 2000u32 } {
                put_wide(&t, &v4(24, [10, 1, 2, 0]), 24);
                put_wide(&t, &v4(8, [10, 0, 0, 0]), 8);
                t.delete(&v4(24, [10, 1, 2, 0])).unwrap();
                put_wide(&t, &v4(32, [10, 1, (i % 200) as u8 + 3, 0]), 8);
                t.delete(&v4(32, [10, 1, (i % 200) as u8 + 3, 0])).unwrap();
            }
            stop.store(true, Relaxed);
        });
        assert_eq!(t.len(), 1);
    }

    fn put_wide(t: &LpmTrie, k: &[u8], v: u32) {
        t.update(k, &v.to_ne_bytes().repeat(4), 0).unwrap();
    }
}
