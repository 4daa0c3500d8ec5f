//! Differential tests: the x86-64 JIT against the checked interpreter.
//!
//! A seeded generator builds random, valid, terminating programs over a
//! memory buffer; both engines run each one on the same memory and must
//! give the same result (r0, or the same fault at the same instruction)
//! and leave the same bytes in memory. A fixed epilogue copies every data
//! register and the hot part of the stack into memory, so a difference
//! that never reaches r0 is still seen.
//!
//! # What is generated
//!
//! Everything both engines run: every ALU operation in both widths with
//! register and immediate operands (signed division and modulo, `movsx`,
//! shifts by any count, division by zero and `MIN / -1` on purpose), `neg`,
//! every byte swap, `lddw`, zero- and sign-extending loads, stores of
//! registers and immediates, every atomic operation (with and without
//! fetch, `xchg`, `cmpxchg`) on aligned addresses, JMP and JMP32
//! conditional jumps, `ja` and `gotol`, bounded loops (backward jumps),
//! local calls up to eight frames deep (and, now and then, unbounded
//! recursion, which both engines must stop with the same `CallDepth`
//! fault), helper calls and `callx` (including a helper that fails and a
//! number that is no helper), and early exits from the program and from
//! functions.
//!
//! # Rules that keep the two engines comparable
//!
//! * r1 (the memory) and r10 (the frame) hold different addresses in the
//!   two engines (virtual in the interpreter, host in the JIT), so they are
//!   used only as the base of loads and stores, never as values; every
//!   function saves r1 at `[r10-512]` on entry.
//! * As in Linux, a helper call leaves r1-r5 unreadable (the JIT's helpers
//!   clobber them, the interpreter's do not), so every call is followed by
//!   reloading r1 from the frame and setting r2-r5.
//! * Accesses stay inside the first [`DATA_LEN`] bytes of memory and in
//!   `[r10-504, r10)`; loop counters are written only by their loop.
//!
//! # Running
//!
//! `cargo test -p sluice-bpf --test jit_differential` runs
//! [`DEFAULT_CASES`] programs; `SLUICE_JIT_DIFF_CASES=1000000` runs a
//! million (about 30 s with `--release`; the recorded run is in BENCHMARKS.md);
//! `SLUICE_JIT_DIFF_SEED` picks another seed. A failure prints the seed and
//! case number and the program in assembler text.
#![cfg(all(feature = "jit", target_arch = "x86_64"))]
#![allow(unsafe_code)]

use std::sync::Arc;

use sluice_bpf::disasm;
use sluice_bpf::helpers::{ArgType, Helper, HelperError, Registry, RetType};
use sluice_bpf::isa::{self, Insn};
use sluice_bpf::jit::{self, JitInput, JitOptions, JitVm};
use sluice_bpf::maps::{Map, MapDef, MapType};
use sluice_bpf::{Fault, Program, Vm};

/// Programs per run unless `SLUICE_JIT_DIFF_CASES` says otherwise.
const DEFAULT_CASES: u64 = 10_000;
/// Bytes generated loads and stores may touch through r1.
const DATA_LEN: i16 = 64;
/// Where the epilogue writes r0, r2-r9.
const REGS_AT: i16 = DATA_LEN;
/// Where the epilogue writes the 64 bytes below the main frame's r10.
const STACK_AT: i16 = REGS_AT + 9 * 8;
/// The memory both engines get.
const MEM_LEN: usize = (STACK_AT + 64) as usize;
/// Frame slot where every function keeps r1.
const SAVED_R1: i16 = -512;

/// Registers holding data (r1 and r10 hold addresses).
const DATA: [u8; 9] = [0, 2, 3, 4, 5, 6, 7, 8, 9];

/// The generator's randomness: splitmix64.
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
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }

    /// Immediates that hit the edge cases, or anything.
    fn imm(&mut self) -> i32 {
        match self.below(10) {
            0 => 0,
            1 => -1,
            2 => 1,
            3 => i32::MIN,
            4 => i32::MAX,
            5 => self.below(64) as i32,
            6 => 1 << self.below(31),
            _ => self.next() as i32,
        }
    }

    fn value(&mut self) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => u64::MAX,
            2 => 1 << 63,
            3 => 0x8000_0000,
            4 => self.below(256),
            _ => self.next(),
        }
    }
}

/// Label-patched code under construction.
#[derive(Default)]
struct Code {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    /// (slot, label, kind)
    fixups: Vec<(usize, usize, Patch)>,
}

#[derive(Clone, Copy)]
enum Patch {
    Off16,
    Imm32,
}

impl Code {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn bind(&mut self, l: usize) {
        self.labels[l] = Some(self.insns.len());
    }

    fn push(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn::new(code, dst, src, off, imm));
    }

    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: usize) {
        self.fixups.push((self.insns.len(), to, Patch::Off16));
        self.push(code, dst, src, 0, imm);
    }

    fn call_to(&mut self, to: usize) {
        self.fixups.push((self.insns.len(), to, Patch::Imm32));
        self.push(0x85, 0, 1, 0, 0);
    }

    fn lddw(&mut self, dst: u8, v: u64) {
        self.push(0x18, dst, 0, 0, v as u32 as i32);
        self.push(0, 0, 0, 0, (v >> 32) as u32 as i32);
    }

    fn finish(mut self) -> Vec<Insn> {
        for &(at, l, kind) in &self.fixups {
            let t = self.labels[l].expect("every label is bound") as i64;
            let rel = t - (at as i64 + 1);
            match kind {
                Patch::Off16 => {
                    self.insns[at].off = i16::try_from(rel).expect("short jump in range")
                }
                Patch::Imm32 => self.insns[at].imm = rel as i32,
            }
        }
        self.insns
    }
}

/// Where a load, store or atomic goes.
fn addr(rng: &mut Rng, size: i16, aligned: bool) -> (u8, i16) {
    let a = if aligned { size } else { 1 };
    if rng.chance(50) {
        let n = (DATA_LEN - size) / a + 1;
        (1, rng.below(n as u64) as i16 * a)
    } else {
        // [-504, -size], aligned if asked.
        let n = (504 - size) / a + 1;
        (10, -(size + rng.below(n as u64) as i16 * a))
    }
}

/// Context of the block being generated.
struct Ctx {
    /// Registers random steps may not write (loop counters).
    locked: u16,
    /// This function's index (0 = main); it may call functions above it.
    func: usize,
    /// Entry labels of every function.
    funcs: Vec<usize>,
    /// Whether this function calls itself without bound (depth fault).
    recurse: bool,
    depth: u32,
}

fn data_dst(rng: &mut Rng, locked: u16) -> u8 {
    loop {
        let r = rng.pick(&DATA);
        if locked & (1 << r) == 0 {
            return r;
        }
    }
}

/// After a helper call: r1 back from the frame, r2-r5 set.
fn after_call(rng: &mut Rng, c: &mut Code) {
    c.push(0x79, 1, 10, SAVED_R1, 0);
    for r in 2..=5 {
        if rng.chance(50) {
            c.push(0xb7, r, 0, 0, rng.imm());
        } else {
            c.lddw(r, rng.value());
        }
    }
}

/// One block of `steps` random steps; jumps stay inside the block.
fn block(rng: &mut Rng, c: &mut Code, cx: &mut Ctx, steps: usize) {
    let labels: Vec<usize> = (0..=steps).map(|_| c.label()).collect();
    for i in 0..steps {
        c.bind(labels[i]);
        let later = |rng: &mut Rng| labels[i + 1 + rng.below((steps - i) as u64) as usize];
        let dst = data_dst(rng, cx.locked);
        let src = rng.pick(&DATA);
        let w64 = rng.chance(50);
        match rng.below(100) {
            // ALU, register or immediate.
            0..=29 => {
                let ops = [
                    0x00u8, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x90, 0xa0, 0xb0, 0xc0,
                ];
                let op = rng.pick(&ops);
                let class = if w64 { 0x07 } else { 0x04 };
                let signed = matches!(op, 0x30 | 0x90) && rng.chance(40);
                let off = i16::from(signed);
                if op == 0xb0 && rng.chance(25) {
                    // movsx
                    let bits = if w64 {
                        rng.pick(&[8, 16, 32])
                    } else {
                        rng.pick(&[8, 16])
                    };
                    c.push(0xb0 | class | 0x08, dst, src, bits, 0);
                } else if rng.chance(50) {
                    c.push(op | class | 0x08, dst, src, off, 0);
                } else {
                    c.push(op | class, dst, 0, off, rng.imm());
                }
            }
            30..=32 => c.push(if w64 { 0x87 } else { 0x84 }, dst, 0, 0, 0),
            33..=36 => {
                let (code, bits) = match rng.below(3) {
                    0 => (0xd4, rng.pick(&[16, 32, 64])),
                    1 => (0xdc, rng.pick(&[16, 32, 64])),
                    _ => (0xd7, rng.pick(&[16, 32, 64])),
                };
                c.push(code, dst, 0, 0, bits);
            }
            37..=40 => c.lddw(dst, rng.value()),
            // Loads.
            41..=49 => {
                let (sz, bytes) = rng.pick(&[(0x10u8, 1i16), (0x08, 2), (0x00, 4), (0x18, 8)]);
                let (base, off) = addr(rng, bytes, false);
                let mode = if sz != 0x18 && rng.chance(30) {
                    0x80
                } else {
                    0x60
                };
                c.push(mode | sz | 0x01, dst, base, off, 0);
            }
            // Stores.
            50..=58 => {
                let (sz, bytes) = rng.pick(&[(0x10u8, 1i16), (0x08, 2), (0x00, 4), (0x18, 8)]);
                let (base, off) = addr(rng, bytes, false);
                if rng.chance(50) {
                    c.push(0x60 | sz | 0x03, base, src, off, 0);
                } else {
                    c.push(0x60 | sz | 0x02, base, 0, off, rng.imm());
                }
            }
            // Atomics.
            59..=63 => {
                let (sz, bytes) = if w64 { (0x18u8, 8i16) } else { (0x00, 4) };
                let (base, off) = addr(rng, bytes, true);
                let mut imm = rng.pick(&[0x00, 0x40, 0x50, 0xa0, 0xe1, 0xf1]);
                if imm < 0xe0 && rng.chance(50) {
                    imm |= 1;
                }
                // Fetching writes src (cmpxchg writes r0): not a counter.
                let fetch_dst = if imm == 0xf1 { 0 } else { src };
                if imm & 1 != 0 && cx.locked & (1 << fetch_dst) != 0 {
                    continue;
                }
                c.push(0xc0 | sz | 0x03, base, src, off, imm);
            }
            // Conditional jumps forward.
            64..=75 => {
                let op = rng.pick(&[
                    0x10u8, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xa0, 0xb0, 0xc0, 0xd0,
                ]);
                let class = if w64 { 0x05 } else { 0x06 };
                let to = later(rng);
                if rng.chance(50) {
                    c.jump(op | class | 0x08, rng.pick(&DATA), src, 0, to);
                } else {
                    c.jump(op | class, rng.pick(&DATA), 0, rng.imm(), to);
                }
            }
            76..=77 => {
                let to = later(rng);
                if rng.chance(50) {
                    c.jump(0x05, 0, 0, 0, to);
                } else {
                    // gotol: JMP32-class ja, offset in imm.
                    c.fixups.push((c.insns.len(), to, Patch::Imm32));
                    c.push(0x06, 0, 0, 0, 0);
                }
            }
            // Helper calls and callx.
            78..=82 => {
                match rng.below(4) {
                    0 | 1 => c.push(0x85, 0, 0, 0, rng.pick(&[1000, 1000, 1001])),
                    _ => {
                        let r = data_dst(rng, cx.locked | 0x3e);
                        c.push(
                            0xb7,
                            r,
                            0,
                            0,
                            rng.pick(&[1000, 1001, 1000, 1000, 1001, 1000, 1002, 7]),
                        );
                        c.push(0x8d, r, 0, 0, 0);
                    }
                }
                after_call(rng, c);
            }
            // Local calls.
            83..=86 => {
                if cx.recurse && cx.func > 0 {
                    c.call_to(cx.funcs[cx.func]);
                } else if cx.func + 1 < cx.funcs.len() {
                    let f = cx.func + 1 + rng.below((cx.funcs.len() - cx.func - 1) as u64) as usize;
                    c.call_to(cx.funcs[f]);
                }
            }
            // A bounded loop.
            87..=92 if cx.depth < 2 && steps - i > 1 => {
                let free: Vec<u8> = [6u8, 7, 8, 9]
                    .into_iter()
                    .filter(|r| cx.locked & (1 << r) == 0)
                    .collect();
                if free.is_empty() {
                    continue;
                }
                let rc = rng.pick(&free);
                c.push(0xb7, rc, 0, 0, 1 + rng.below(5) as i32);
                let top = c.label();
                c.bind(top);
                cx.locked |= 1 << rc;
                cx.depth += 1;
                let n = 1 + rng.below(6) as usize;
                block(rng, c, cx, n);
                cx.depth -= 1;
                cx.locked &= !(1 << rc);
                c.push(0x07, rc, 0, 0, -1);
                c.jump(0x55, rc, 0, 0, top);
            }
            93..=94 => c.push(0x95, 0, 0, 0, 0),
            // `mov dst, src; add dst, imm` (the JIT fuses it into a `lea`).
            95..=97 => {
                c.push(0xbf, dst, src, 0, 0);
                c.push(0x07, dst, 0, 0, rng.imm());
            }
            _ => c.push(0xbf, dst, src, 0, 0),
        }
    }
    c.bind(labels[steps]);
}

/// A whole program: main, then up to three functions.
fn program(rng: &mut Rng) -> Vec<Insn> {
    let mut c = Code::default();
    let nfuncs = rng.below(4) as usize;
    let funcs: Vec<usize> = (0..=nfuncs).map(|_| c.label()).collect();
    let recurse = nfuncs > 0 && rng.chance(3);
    // main
    c.bind(funcs[0]);
    c.push(0x7b, 10, 1, SAVED_R1, 0);
    for &r in &DATA {
        c.lddw(r, rng.value());
    }
    let mut cx = Ctx {
        locked: 0,
        func: 0,
        funcs: funcs.clone(),
        recurse,
        depth: 0,
    };
    let n = 1 + rng.below(40) as usize;
    block(rng, &mut c, &mut cx, n);
    // Epilogue: registers and the top of the stack into memory.
    c.push(0x79, 1, 10, SAVED_R1, 0);
    for (k, &r) in DATA.iter().enumerate() {
        c.push(0x7b, 1, r, REGS_AT + 8 * k as i16, 0);
    }
    for k in 0..8i16 {
        c.push(0x79, 2, 10, -8 * (k + 1), 0);
        c.push(0x7b, 1, 2, STACK_AT + 8 * k, 0);
    }
    c.push(0x95, 0, 0, 0, 0);
    for (f, &l) in funcs.iter().enumerate().skip(1) {
        c.bind(l);
        c.push(0x7b, 10, 1, SAVED_R1, 0);
        cx.func = f;
        let n = 1 + rng.below(12) as usize;
        block(rng, &mut c, &mut cx, n);
        c.push(0x95, 0, 0, 0, 0);
    }
    c.finish()
}

fn mix(_: &mut sluice_bpf::helpers::CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    // a[0] is r1, an address: not part of the result.
    Ok(a[1].wrapping_mul(0x9e37_79b9) ^ a[2].rotate_left(7) ^ a[3] ^ (a[4] << 1))
}

fn picky(_: &mut sluice_bpf::helpers::CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    if a[1] & 15 == 0 {
        Err(HelperError::Unwind)
    } else {
        Ok(a[1].wrapping_add(a[4]))
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    for (id, name, func) in [
        (1000, "mix", mix as sluice_bpf::helpers::HelperFn),
        (1001, "picky", picky),
    ] {
        r.register(Helper {
            id,
            name,
            args: [ArgType::Anything; 5],
            ret: RetType::Integer,
            func,
        });
    }
    r
}

fn listing(insns: &[Insn]) -> String {
    match isa::decode(insns) {
        Ok(d) => d
            .iter()
            .map(|(pc, i)| format!("{pc:4}: {}\n", disasm::format_instruction(i)))
            .collect(),
        Err(e) => format!("(does not decode: {e})"),
    }
}

/// 8-byte aligned memory (atomics need it in both engines).
fn aligned(buf: &mut Vec<u8>) -> &mut [u8] {
    buf.resize(MEM_LEN + 8, 0);
    let off = buf.as_ptr().align_offset(8);
    &mut buf[off..off + MEM_LEN]
}

const CONFIGS: [JitOptions; 4] = [
    JitOptions {
        harden: false,
        bmi2: None,
        passes: 2,
    },
    JitOptions {
        harden: true,
        bmi2: None,
        passes: 2,
    },
    JitOptions {
        harden: false,
        bmi2: Some(false),
        passes: 1,
    },
    JitOptions {
        harden: true,
        bmi2: Some(false),
        passes: 1,
    },
];

#[test]
fn jit_matches_the_interpreter_on_random_programs() {
    let cases = std::env::var("SLUICE_JIT_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let seed = std::env::var("SLUICE_JIT_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_0ff1_a700_u64);
    let reg = registry();
    let (mut faults, mut slots) = (0u64, 0u64);
    for case in 0..cases {
        let mut rng = Rng(seed ^ case.wrapping_mul(0xd134_2543_de82_ef95));
        let insns = program(&mut rng);
        slots += insns.len() as u64;
        let init: Vec<u8> = (0..MEM_LEN).map(|_| rng.next() as u8).collect();
        let ctx = || format!("seed {seed} case {case}\n{}", listing(&insns));

        let prog = Program::load(insns.clone(), &reg)
            .unwrap_or_else(|e| panic!("generated program does not load: {e}\n{}", ctx()));
        let mut ibuf = Vec::new();
        let imem = aligned(&mut ibuf);
        imem.copy_from_slice(&init);
        let expected = Vm::new().run_mem(&prog, imem);
        if let Err(Fault::MemoryAccess { .. } | Fault::Misaligned { .. } | Fault::Budget { .. }) =
            expected
        {
            panic!("generator bug: {expected:?}\n{}", ctx());
        }
        faults += u64::from(expected.is_err());

        let options = CONFIGS[(case % CONFIGS.len() as u64) as usize];
        let jp = jit::compile(&JitInput::new(&insns, &reg).options(options))
            .unwrap_or_else(|e| panic!("JIT refuses: {e}\n{}", ctx()));
        let mut jbuf = Vec::new();
        let jmem = aligned(&mut jbuf);
        jmem.copy_from_slice(&init);
        // SAFETY: generated programs access only the first DATA_LEN bytes
        // of memory, the dump area, and [r10-512, r10) of their frames (the
        // checked interpreter confirmed it for this very input above).
        let got = unsafe { JitVm::new().run_mem(&jp, jmem) };
        assert_eq!(
            got,
            expected,
            "r0 or fault differs ({options:?})\n{}",
            ctx()
        );
        assert_eq!(
            ibuf_slice(&ibuf),
            ibuf_slice(&jbuf),
            "memory differs ({options:?})\n{}",
            ctx()
        );
    }
    println!(
        "JIT = interpreter on {cases} random programs ({slots} slots, {faults} ending in a fault), \
         seed {seed}"
    );
}

fn ibuf_slice(buf: &[u8]) -> &[u8] {
    let off = buf.as_ptr().align_offset(8);
    &buf[off..off + MEM_LEN]
}

/// An array map and a per-CPU array map, looked up in the basic block that
/// loads the map pointer (inlined by the JIT) and in another block (through
/// the helper shim); values are incremented through the returned pointers.
/// The maps must end up the same after the interpreter and the JIT ran the
/// program on separate copies.
#[test]
fn array_lookups_inline_and_through_the_helper_agree_with_the_interpreter() {
    let src = "
        mov %r6, 0
    loop:
        stxw [%r10-4], %r6
        lddw %r1, map_idx 0
        mov %r2, %r10
        add %r2, -4
        call 1
        jeq %r0, 0, miss0
        ldxdw %r3, [%r0+0]
        add %r3, %r6
        add %r3, 1
        stxdw [%r0+0], %r3
    miss0:
        stxw [%r10-4], %r6
        lddw %r1, map_idx 1
        mov %r2, %r10
        add %r2, -4
        call 1
        jeq %r0, 0, miss1
        ldxw %r3, [%r0+4]
        add %r3, 7
        stxw [%r0+4], %r3
    miss1:
        lddw %r1, map_idx 0
        ja split
    split:
        stxw [%r10-4], %r6
        mov %r2, %r10
        add %r2, -4
        call 1
        jeq %r0, 0, miss2
        ldxb %r3, [%r0+9]
        add %r3, 3
        stxb [%r0+9], %r3
    miss2:
        add %r6, 1
        jlt %r6, 12, loop
        mov %r0, %r6
        exit";
    let insns = sluice_bpf::asm::assemble(src).expect("assembles");
    let reg = Registry::xdp();
    let make = || -> Vec<Arc<Map>> {
        let def = |name: &str, t, value_size, max_entries| MapDef {
            name: name.into(),
            map_type: t,
            key_size: 4,
            value_size,
            max_entries,
            flags: 0,
            pinning: Default::default(),
            inner: None,
        };
        vec![
            Map::create(&def("arr", MapType::Array, 12, 10), 2).unwrap(),
            Map::create(&def("pcpu", MapType::PercpuArray, 8, 7), 2).unwrap(),
        ]
    };
    let (imaps, jmaps) = (make(), make());
    let prog = Program::load_with_maps(insns.clone(), &reg, imaps.clone()).expect("loads");
    let ri = Vm::for_cpu(1)
        .run_mem(&prog, &mut [])
        .expect("interpreter runs");
    for harden in [false, true] {
        let jp = jit::compile(&JitInput::new(&insns, &reg).maps(&jmaps).harden(harden))
            .expect("compiles");
        // SAFETY: the program only dereferences lookup results it checked
        // for NULL, within each map's value_size, and its own stack.
        let rj = unsafe { JitVm::for_cpu(1).run_mem(&jp, &mut []) }.expect("JIT runs");
        assert_eq!(ri, rj);
    }
    // The JIT ran twice: apply the interpreter's effect once more.
    let _ = Vm::for_cpu(1).run_mem(&prog, &mut []);
    for (a, b) in imaps.iter().zip(&jmaps) {
        for key in 0..a.def().max_entries {
            let k = key.to_ne_bytes();
            assert_eq!(
                a.lookup_vec(&k).ok(),
                b.lookup_vec(&k).ok(),
                "{} key {key}",
                a.def().name
            );
        }
    }
}
