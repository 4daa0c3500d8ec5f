//! Soundness: every program the verifier accepts runs in the checked
//! interpreter without a single run-time fault.
//!
//! A seeded generator writes random XDP programs in assembler text, biased
//! towards what the verifier must judge: packet accesses just inside and
//! just outside the bytes a bounds check proved (checks in every
//! comparison form and operand order), variable packet offsets, map
//! lookups with and without null checks and with offsets around
//! `value_size`, stack stores and loads of every size (spilled pointers
//! too), bounded and unbounded loops, `bpf_xdp_adjust_*` with and without
//! reloading the packet pointers, ring buffer reservations released or
//! not, csum_diff over packet and stack, local calls passing stack
//! pointers, tail calls, and pointer leaks. Each program the verifier
//! accepts then runs over random packets (empty to 90 bytes, with and
//! without metadata) and random map contents in [`Vm::run_xdp`], whose
//! checked mode bounds-checks every access. Any [`Fault`] of an accepted
//! program (an out-of-bounds access, a misaligned atomic, a bad helper
//! pointer, a run that does not end) is a soundness bug: the test fails and
//! prints the program.
//!
//! Runs 10,000 programs by default. Longer runs:
//!
//! ```text
//! SLUICE_SOUNDNESS_PROGRAMS=1000000 cargo test --release -p sluice-bpf \
//!     --test verifier_soundness -- --nocapture
//! ```
//!
//! `SLUICE_SOUNDNESS_SEED` picks another seed (the default is fixed, so CI
//! is reproducible). The recorded long run is in `bpf/tests/verifier/README.md`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use sluice_bpf::asm::assemble;
use sluice_bpf::helpers::Registry;
use sluice_bpf::interp::XdpFrame;
use sluice_bpf::maps::{flags, Map, MapDef, MapType, Pinning};
use sluice_bpf::verifier::{verify, ProgKind, VerifyOptions};
use sluice_bpf::{Program, Vm};

/// splitmix64: small, fast, good enough to drive a generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Map indices the generated programs use.
const HASH: usize = 0;
const ARRAY: usize = 1;
const RINGBUF: usize = 2;
const RODATA: usize = 3;
const PROG_ARRAY: usize = 4;
const PERCPU: usize = 5;
const OUTER: usize = 6;
/// Value sizes of the maps above.
const HASH_VALUE: i64 = 16;
const ARRAY_VALUE: i64 = 24;
const RODATA_VALUE: i64 = 16;
const PERCPU_VALUE: i64 = 8;
const INNER_VALUE: i64 = 16;

fn def(name: &str, t: MapType, key: u32, value: u32, entries: u32, flags: u32) -> MapDef {
    MapDef {
        name: name.into(),
        map_type: t,
        key_size: key,
        value_size: value,
        max_entries: entries,
        flags,
        pinning: Pinning::None,
        inner: None,
    }
}

fn make_maps() -> Vec<Arc<Map>> {
    let defs = [
        def("hash", MapType::Hash, 4, HASH_VALUE as u32, 8, 0),
        def("array", MapType::Array, 4, ARRAY_VALUE as u32, 4, 0),
        def("events", MapType::RingBuf, 0, 0, 4096, 0),
        def(
            ".rodata",
            MapType::Array,
            4,
            RODATA_VALUE as u32,
            1,
            flags::BPF_F_RDONLY_PROG,
        ),
        def("jump", MapType::ProgArray, 4, 4, 4, 0),
        def("percpu", MapType::PercpuArray, 4, PERCPU_VALUE as u32, 2, 0),
        MapDef {
            inner: Some(Box::new(def(
                "inner",
                MapType::Array,
                4,
                INNER_VALUE as u32,
                4,
                0,
            ))),
            ..def("outer", MapType::ArrayOfMaps, 4, 4, 2, 0)
        },
    ];
    let maps: Vec<Arc<Map>> = defs
        .iter()
        .map(|d| Map::create(d, 2).expect("map"))
        .collect();
    let inner = Map::create(
        &def("inner", MapType::Array, 4, INNER_VALUE as u32, 8, 0),
        2,
    )
    .expect("inner map");
    maps[OUTER]
        .downcast::<sluice_bpf::maps::map_in_map::MapOfMaps>()
        .expect("map of maps")
        .set(&0u32.to_le_bytes(), inner)
        .expect("inner map fits");
    maps
}

/// Fills the maps with random contents.
fn fill_maps(maps: &[Arc<Map>], r: &mut Rng) {
    for k in 0..8u32 {
        let key = k.to_le_bytes();
        if r.chance(50) {
            let v: Vec<u8> = (0..HASH_VALUE).map(|_| r.next() as u8).collect();
            let _ = maps[HASH].update_via_ops(&key, &v);
        } else {
            let _ = maps[HASH].ops().delete(&key);
        }
    }
    for k in 0..4u32 {
        let v: Vec<u8> = (0..ARRAY_VALUE).map(|_| r.next() as u8).collect();
        let _ = maps[ARRAY].update_via_ops(&k.to_le_bytes(), &v);
    }
}

trait UpdateViaOps {
    fn update_via_ops(&self, key: &[u8], value: &[u8]) -> Result<(), sluice_bpf::maps::MapError>;
}

impl UpdateViaOps for Arc<Map> {
    fn update_via_ops(&self, key: &[u8], value: &[u8]) -> Result<(), sluice_bpf::maps::MapError> {
        self.ops().update(key, value, flags::BPF_ANY)
    }
}

/// Appends one formatted line (the arguments are evaluated first).
macro_rules! emit {
    ($g:expr, $($arg:tt)*) => {{
        let line = format!($($arg)*);
        $g.line(&line);
    }};
}

/// Writes one random program.
struct Gen<'r> {
    r: &'r mut Rng,
    out: String,
    labels: usize,
    /// Nesting of conditional snippets (bounds the size).
    depth: u32,
    /// Whether a subprogram must be appended.
    needs_sub: Option<i64>,
}

impl Gen<'_> {
    fn label(&mut self) -> String {
        self.labels += 1;
        format!("l{}", self.labels)
    }

    fn line(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn size(&mut self) -> (&'static str, i64) {
        *self.r.pick(&[("b", 1), ("h", 2), ("w", 4), ("dw", 8)])
    }

    /// An offset near `edge`: inside, at, or just past it.
    fn near(&mut self, edge: i64, size: i64) -> i64 {
        if self.r.chance(75) {
            // Inside.
            return if self.r.chance(50) {
                edge - size
            } else {
                self.r.range(0, edge - size)
            };
        }
        match self.r.below(4) {
            0 => edge - size + 1,
            1 => self.r.range(-2, -1),
            2 => edge,
            _ => self.r.range(0, edge.max(1)) - self.r.below(2) as i64,
        }
    }

    /// `if (data + k > data_end) skip;` in one of its many spellings, then
    /// `body`, then the skip label.
    fn packet_check(&mut self, ptr: &str, k: i64, body: impl FnOnce(&mut Self)) {
        let skip = self.label();
        emit!(self, "mov %r1, {ptr}");
        emit!(self, "add %r1, {k}");
        match self.r.below(6) {
            0 => emit!(self, "jgt %r1, %r8, {skip}"),
            1 => emit!(self, "jge %r1, %r8, {skip}"),
            2 => emit!(self, "jlt %r8, %r1, {skip}"),
            3 => emit!(self, "jle %r8, %r1, {skip}"),
            4 => {
                let ok = self.label();
                emit!(self, "jle %r1, %r8, {ok}");
                emit!(self, "ja {skip}");
                emit!(self, "{ok}:");
            }
            _ => {
                let ok = self.label();
                emit!(self, "jgt %r8, %r1, {ok}");
                emit!(self, "ja {skip}");
                emit!(self, "{ok}:");
            }
        }
        body(self);
        emit!(self, "{skip}:");
    }

    fn access(&mut self, base: &str, off: i64, size: (&str, i64)) {
        let (s, _) = size;
        match self.r.below(4) {
            0 => emit!(self, "st{s} [{base}{off:+}], {}", self.r.below(256)),
            1 => emit!(self, "stx{s} [{base}{off:+}], %r9"),
            _ => emit!(self, "ldx{s} %r9, [{base}{off:+}]"),
        }
    }

    fn snippet(&mut self) {
        match self.r.below(24) {
            20 | 21 => self.bounded_index(),
            22 => self.stack_atomic(),
            23 => self.map_in_map(),
            0..=2 => {
                // Constant-offset packet access around the proven edge.
                let k = self.r.range(0, 40);
                self.packet_check("%r7", k, |g| {
                    for _ in 0..=g.r.below(2) {
                        let sz = g.size();
                        let off = g.near(k, sz.1);
                        g.access("%r7", off, sz);
                    }
                    if g.depth < 2 && g.r.chance(30) {
                        g.depth += 1;
                        g.snippet();
                        g.depth -= 1;
                    }
                });
            }
            3 => {
                // Variable-offset packet access.
                let mask = *self.r.pick(&[3i64, 7, 15, 63, 255, 0xffff, -1]);
                self.line("mov %r2, %r9");
                if mask != -1 {
                    emit!(self, "and %r2, {mask}");
                } else if self.r.chance(50) {
                    let lim = self.r.range(1, 64);
                    let skip = self.label();
                    emit!(self, "jgt %r2, {lim}, {skip}");
                    self.var_packet(lim);
                    emit!(self, "{skip}:");
                    return;
                }
                self.var_packet(mask.max(0));
            }
            4 | 5 => self.map_lookup(),
            6 | 7 => self.stack_ops(),
            8 | 9 => self.scalar_ops(),
            10 => self.branch(),
            11 => self.bounded_loop(),
            12 => self.adjust(),
            13 => self.meta_access(),
            14 => self.ringbuf(),
            15 => self.csum(),
            16 => self.local_call(),
            17 => {
                // Tail call (the prog array is empty: it falls through).
                self.line("mov %r1, %r6");
                emit!(self, "lddw %r2, map_idx {PROG_ARRAY}");
                emit!(self, "mov %r3, {}", self.r.below(5));
                self.line("call 12");
            }
            18 => {
                // Global data: read-only .rodata, direct value access.
                let off = self.r.range(0, RODATA_VALUE - 1);
                emit!(self, "lddw %r1, map_idx_value {RODATA}+{off}");
                let sz = self.size();
                let o = self.near(RODATA_VALUE - off, sz.1);
                if self.r.chance(80) {
                    emit!(self, "ldx{} %r9, [%r1{o:+}]", sz.0);
                } else {
                    self.access("%r1", o, sz);
                }
            }
            _ => {
                // Something raw: an access through whatever a register holds.
                let reg = *self
                    .r
                    .pick(&["%r0", "%r1", "%r6", "%r7", "%r8", "%r9", "%r10"]);
                let sz = self.size();
                let off = self.r.range(-16, 32);
                self.access(reg, off, sz);
            }
        }
    }

    /// A number computed, bounded by comparisons (sometimes through a
    /// linked copy, sometimes in 32 bits or signed), then used as an offset
    /// into the stack and into the packet.
    fn bounded_index(&mut self) {
        let skip = self.label();
        self.line("mov %r2, %r9");
        for _ in 0..self.r.below(3) {
            let op = *self.r.pick(&[
                "add", "sub", "and", "or", "lsh", "rsh", "mul", "xor", "arsh", "mod", "div",
            ]);
            let w = *self.r.pick(&["", "32"]);
            let imm = *self.r.pick(&[1i64, 3, 7, 8, 15, 60, 255, -1, -16]);
            emit!(self, "{op}{w} %r2, {imm}");
        }
        let linked = self.r.chance(50);
        if linked {
            self.line("mov %r3, %r2");
        }
        let reg = if linked { "%r3" } else { "%r2" };
        let bound = self.r.range(0, 70);
        let (op, w) = *self.r.pick(&[
            ("jgt", ""),
            ("jge", ""),
            ("jgt", "32"),
            ("jsgt", ""),
            ("jsge", "32"),
            ("jeq", ""),
        ]);
        emit!(self, "{op}{w} {reg}, {bound}, {skip}");
        if op.starts_with("js") || self.r.chance(20) {
            let low = *self.r.pick(&["jslt", "jsle", "jlt"]);
            let lw = *self.r.pick(&["", "32"]);
            emit!(self, "{low}{lw} {reg}, {}, {skip}", self.r.range(-2, 1));
        }
        if op == "jeq" {
            // The equal side skips: the rest sees `!=`, which bounds nothing.
        }
        // Into 72 written stack bytes from fp-72.
        self.line("mov %r1, %r10");
        self.line("add %r1, -72");
        self.line("add %r1, %r2");
        let sz = self.size();
        let off = self.r.range(-1, 72 - bound - sz.1 + 1).max(-1);
        match self.r.below(2) {
            0 => emit!(self, "ldx{} %r4, [%r1{off:+}]", sz.0),
            _ => emit!(self, "st{} [%r1{off:+}], 1", sz.0),
        }
        // Into the packet, under a check through the moved pointer.
        self.line("mov %r3, %r7");
        self.line("add %r3, %r2");
        let k = self.r.range(1, 8);
        self.line("mov %r1, %r3");
        emit!(self, "add %r1, {k}");
        emit!(self, "jgt %r1, %r8, {skip}");
        let sz = self.size();
        let off = self.near(k, sz.1);
        self.access("%r3", off, sz);
        emit!(self, "{skip}:");
    }

    fn stack_atomic(&mut self) {
        let (w, size) = *self.r.pick(&[("", 8i64), ("32", 4)]);
        let off = -8 * self.r.range(1, 8) + if self.r.chance(15) { 4 } else { 0 };
        let op = *self
            .r
            .pick(&["add", "fetch add", "or", "fetch xor", "xchg", "cmpxchg"]);
        self.line("mov %r1, 1");
        self.line("mov %r0, 0");
        emit!(self, "lock {op}{w} [%r10{off:+}], %r1");
        let _ = size;
        self.line("mov %r9, %r1");
    }

    fn map_in_map(&mut self) {
        let skip = self.label();
        emit!(self, "stw [%r10-4], {}", self.r.below(3));
        emit!(self, "lddw %r1, map_idx {OUTER}");
        self.line("mov %r2, %r10");
        self.line("add %r2, -4");
        self.line("call 1");
        if self.r.chance(90) {
            emit!(self, "jeq %r0, 0, {skip}");
        }
        self.line("mov %r1, %r0");
        self.line("mov %r2, %r10");
        self.line("add %r2, -4");
        self.line("call 1");
        if self.r.chance(90) {
            emit!(self, "jeq %r0, 0, {skip}");
        }
        let sz = self.size();
        let off = self.near(INNER_VALUE, sz.1);
        self.access("%r0", off, sz);
        emit!(self, "{skip}:");
    }

    fn var_packet(&mut self, max: i64) {
        self.line("mov %r3, %r7");
        self.line("add %r3, %r2");
        let k = self.r.range(1, 16);
        let skip = self.label();
        self.line("mov %r1, %r3");
        emit!(self, "add %r1, {k}");
        emit!(self, "jgt %r1, %r8, {skip}");
        let sz = self.size();
        let off = self.near(k, sz.1);
        self.access("%r3", off, sz);
        let _ = max;
        emit!(self, "{skip}:");
    }

    fn map_lookup(&mut self) {
        let (map, vsize) = *self.r.pick(&[
            (HASH, HASH_VALUE),
            (ARRAY, ARRAY_VALUE),
            (PERCPU, PERCPU_VALUE),
        ]);
        if self.r.chance(92) {
            emit!(self, "stw [%r10-4], {}", self.r.below(6));
        }
        emit!(self, "lddw %r1, map_idx {map}");
        self.line("mov %r2, %r10");
        self.line("add %r2, -4");
        self.line("call 1");
        let skip = self.label();
        if self.r.chance(85) {
            if self.r.chance(50) {
                emit!(self, "jeq %r0, 0, {skip}");
            } else {
                let ok = self.label();
                emit!(self, "jne %r0, 0, {ok}");
                emit!(self, "ja {skip}");
                emit!(self, "{ok}:");
            }
        }
        match self.r.below(4) {
            0 => {
                // Variable offset into the value.
                self.line("mov %r2, %r9");
                let m = *self.r.pick(&[3i64, 7, 15, 31]);
                emit!(self, "and %r2, {m}");
                self.line("add %r0, %r2");
                let sz = self.size();
                let off = self.r.range(-1, vsize - m);
                self.access("%r0", off, sz);
            }
            1 => {
                let w = *self.r.pick(&["", "32"]);
                let size = if w.is_empty() { 8 } else { 4 };
                let off = self.near(vsize, size);
                self.line("mov %r1, 1");
                let fetch = *self.r.pick(&["", "fetch "]);
                emit!(self, "lock {fetch}add{w} [%r0{off:+}], %r1");
            }
            2 if self.r.chance(30) => {
                // A pointer stored into the value: a leak.
                self.line("stxdw [%r0+0], %r7");
            }
            _ => {
                for _ in 0..=self.r.below(2) {
                    let sz = self.size();
                    let off = self.near(vsize, sz.1);
                    self.access("%r0", off, sz);
                }
            }
        }
        emit!(self, "{skip}:");
    }

    fn stack_ops(&mut self) {
        for _ in 0..=self.r.below(3) {
            let sz = self.size();
            let off = -self.r.range(1, 64) / sz.1 * sz.1 - if self.r.chance(10) { 1 } else { 0 };
            let off = off.min(-sz.1);
            match self.r.below(6) {
                0 => emit!(self, "stxdw [%r10{:+}], %r7", off & !7),
                1 => emit!(self, "ldxdw %r1, [%r10{:+}]", off & !7),
                2 => {
                    // Fill a spilled packet pointer and use it after a check.
                    self.line("stxdw [%r10-48], %r7");
                    self.line("ldxdw %r7, [%r10-48]");
                }
                3 => emit!(self, "ldx{} %r9, [%r10{off:+}]", sz.0),
                _ => self.access("%r10", off, sz),
            }
        }
    }

    fn scalar_ops(&mut self) {
        let ops = [
            "add", "sub", "mul", "div", "sdiv", "or", "and", "lsh", "rsh", "mod", "smod", "xor",
            "arsh", "mov",
        ];
        for _ in 0..=self.r.below(3) {
            let op = *self.r.pick(&ops);
            let w = *self.r.pick(&["", "32"]);
            if self.r.chance(50) {
                let imm = *self
                    .r
                    .pick(&[0i64, 1, 2, 7, 8, 31, 32, 63, 64, 255, -1, -8]);
                emit!(self, "{op}{w} %r9, {imm}");
            } else {
                let src = *self.r.pick(&["%r9", "%r0"]);
                emit!(self, "{op}{w} %r9, {src}");
            }
        }
        match self.r.below(5) {
            0 => self.line("neg %r9"),
            1 => emit!(self, "be{} %r9", self.r.pick(&[16, 32, 64])),
            2 => emit!(self, "movsx{}64 %r9, %r9", self.r.pick(&[8, 16, 32])),
            _ => {}
        }
        if self.r.chance(20) {
            // A packet byte as data, under a check.
            self.packet_check("%r7", 2, |g| g.line("ldxb %r9, [%r7+1]"));
        }
    }

    fn branch(&mut self) {
        let ops = [
            "jeq", "jne", "jgt", "jge", "jlt", "jle", "jsgt", "jsge", "jslt", "jsle", "jset",
        ];
        let op = *self.r.pick(&ops);
        let w = *self.r.pick(&["", "32"]);
        let imm = *self.r.pick(&[0i64, 1, 7, 14, 255, -1, 0x7fff_ffff]);
        let skip = self.label();
        emit!(self, "{op}{w} %r9, {imm}, {skip}");
        if self.depth < 2 {
            self.depth += 1;
            self.snippet();
            self.depth -= 1;
        }
        emit!(self, "{skip}:");
    }

    fn bounded_loop(&mut self) {
        let n = self.r.range(1, 24);
        let top = self.label();
        let out = self.label();
        self.line("mov %r4, 0");
        emit!(self, "{top}:");
        // Read byte r4 of the packet under a check.
        self.line("mov %r3, %r7");
        self.line("add %r3, %r4");
        self.line("mov %r1, %r3");
        emit!(self, "add %r1, {}", self.r.range(0, 2));
        emit!(self, "jgt %r1, %r8, {out}");
        self.line("ldxb %r2, [%r3+0]");
        self.line("add %r9, %r2");
        self.line("add %r4, 1");
        if self.r.chance(90) {
            emit!(self, "jlt %r4, {n}, {top}");
        } else {
            // Bounded only by data the verifier cannot see.
            emit!(self, "jlt %r4, %r9, {top}");
        }
        emit!(self, "{out}:");
    }

    fn adjust(&mut self) {
        let (id, delta) = match self.r.below(3) {
            0 => (44, self.r.range(-64, 64)),
            1 => (65, self.r.range(-64, 64)),
            _ => (54, -4 * self.r.range(0, 8)),
        };
        self.line("mov %r1, %r6");
        emit!(self, "mov %r2, {delta}");
        emit!(self, "call {id}");
        if self.r.chance(85) {
            self.line("ldxw %r7, [%r6+0]");
            self.line("ldxw %r8, [%r6+4]");
        }
    }

    fn meta_access(&mut self) {
        let k = self.r.range(0, 16);
        let skip = self.label();
        self.line("ldxw %r2, [%r6+8]");
        self.line("mov %r1, %r2");
        emit!(self, "add %r1, {k}");
        emit!(self, "jgt %r1, %r7, {skip}");
        let sz = self.size();
        let off = self.near(k, sz.1);
        self.access("%r2", off, sz);
        emit!(self, "{skip}:");
    }

    fn ringbuf(&mut self) {
        let size = *self.r.pick(&[8i64, 16, 24]);
        let skip = self.label();
        emit!(self, "lddw %r1, map_idx {RINGBUF}");
        emit!(self, "mov %r2, {size}");
        self.line("mov %r3, 0");
        self.line("call 131");
        emit!(self, "jeq %r0, 0, {skip}");
        let sz = self.size();
        let off = self.near(size, sz.1);
        self.access("%r0", off, sz);
        if self.r.chance(90) {
            self.line("mov %r1, %r0");
            self.line("mov %r2, 0");
            emit!(self, "call {}", self.r.pick(&[132, 133]));
        }
        emit!(self, "{skip}:");
    }

    fn csum(&mut self) {
        let n = 4 * self.r.range(0, 6) + if self.r.chance(10) { 1 } else { 0 };
        if self.r.chance(50) {
            let k = self.r.range(0, 24);
            self.packet_check("%r7", k, |g| {
                g.line("mov %r1, %r7");
                emit!(g, "mov %r2, {n}");
                g.line("mov %r3, 0");
                g.line("mov %r4, 0");
                g.line("mov %r5, 0");
                g.line("call 28");
                g.line("ldxw %r7, [%r6+0]");
                g.line("ldxw %r8, [%r6+4]");
            });
        } else {
            self.line("stdw [%r10-16], 1");
            self.line("stdw [%r10-8], 2");
            self.line("mov %r1, %r10");
            self.line("add %r1, -16");
            emit!(self, "mov %r2, {n}");
            self.line("mov %r3, 0");
            self.line("mov %r4, 0");
            self.line("mov %r5, 0");
            self.line("call 28");
        }
    }

    fn local_call(&mut self) {
        self.line("stdw [%r10-8], 5");
        self.line("mov %r1, %r10");
        self.line("add %r1, -8");
        self.line("mov %r2, %r9");
        self.line("call local sub");
        self.line("mov %r9, %r0");
        if self.needs_sub.is_none() {
            self.needs_sub = Some(self.r.range(-10, 8));
        }
    }
}

/// A random program: the text, and whether it should run as is.
fn generate(r: &mut Rng) -> String {
    let mut g = Gen {
        r,
        out: String::new(),
        labels: 0,
        depth: 0,
        needs_sub: None,
    };
    g.line("mov %r6, %r1");
    g.line("ldxw %r7, [%r6+0]");
    g.line("ldxw %r8, [%r6+4]");
    if g.r.chance(50) {
        g.line("ldxw %r9, [%r6+16]");
    } else {
        emit!(g, "mov %r9, {}", g.r.below(64));
    }
    g.line("mov %r0, 0");
    if g.r.chance(85) {
        for off in (8..=72).step_by(8) {
            emit!(g, "stdw [%r10-{off}], 0");
        }
    }
    for _ in 0..g.r.range(1, 5) {
        g.snippet();
    }
    match g.r.below(12) {
        0 => g.line("mov %r0, %r7"),
        1 => g.line("mov %r0, %r9"),
        _ => emit!(g, "mov %r0, {}", g.r.below(5)),
    }
    g.line("exit");
    if let Some(off) = g.needs_sub {
        g.line("sub:");
        g.line("ldxdw %r0, [%r1+0]");
        emit!(g, "stdw [%r1{off:+}], 7");
        g.line("stdw [%r10-8], 1");
        g.line("ldxdw %r3, [%r10-8]");
        g.line("add %r0, %r3");
        g.line("exit");
    }
    g.out
}

#[test]
fn accepted_programs_never_fault() {
    let programs: u64 = std::env::var("SLUICE_SOUNDNESS_PROGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let seed: u64 = std::env::var("SLUICE_SOUNDNESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x005e_ed0f_5a1c);
    let mut r = Rng(seed);
    let maps = make_maps();
    let registry = Registry::xdp();
    let opts = VerifyOptions {
        budget: 50_000,
        ..Default::default()
    };
    let mut vm = Vm::new();
    vm.set_budget(1 << 20);
    let started = Instant::now();
    let (mut accepted, mut runs) = (0u64, 0u64);
    let mut reasons: std::collections::BTreeMap<&'static str, u64> = Default::default();
    for n in 0..programs {
        let text = generate(&mut r);
        let insns =
            assemble(&text).unwrap_or_else(|e| panic!("generator wrote bad text: {e}\n{text}"));
        let verdict = verify(&insns, ProgKind::Xdp, &registry, &maps, &opts);
        let v = match verdict {
            Ok(v) => v,
            Err(e) => {
                *reasons.entry(e.reason.kind()).or_default() += 1;
                continue;
            }
        };
        let _ = v;
        accepted += 1;
        let prog = Program::load_with_maps(insns, &registry, maps.clone())
            .unwrap_or_else(|e| panic!("verified program does not load: {e}\n{text}"));
        fill_maps(&maps, &mut r);
        for _ in 0..6 {
            let len = r.range(0, 90) as usize;
            let headroom = 256;
            let mut buf: Vec<u8> = (0..headroom + len + 128).map(|_| r.next() as u8).collect();
            let mut frame = XdpFrame::new(&mut buf, headroom, headroom + len);
            if r.chance(30) {
                frame.meta = headroom - 4 * r.range(1, 8) as usize;
            }
            frame.rx_queue_index = r.next() as u32;
            runs += 1;
            if let Err(fault) = vm.run_xdp(&prog, &mut frame) {
                let mut listing = String::new();
                for (i, l) in text.lines().enumerate() {
                    let _ = writeln!(listing, "{i:4}  {l}");
                }
                panic!(
                    "SOUNDNESS BUG: program #{n} (seed {seed:#x}) was verified but faulted: \
                     {fault}\npacket length {len}\n{listing}\ndisassembly:\n{}",
                    sluice_bpf::disasm::disassemble_listing(prog.insns()).unwrap_or_default()
                );
            }
        }
    }
    println!(
        "soundness: {programs} programs (seed {seed:#x}), {accepted} accepted, {runs} runs, \
         0 faults, {:.1?}",
        started.elapsed()
    );
    println!("rejections by reason: {reasons:?}");
    assert!(
        accepted * 10 >= programs,
        "the generator should produce mostly verifiable programs ({accepted} of {programs})"
    );
}
