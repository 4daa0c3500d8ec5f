//! Constant blinding: with `harden`, none of a program's 32-bit immediates
//! appears in the emitted machine code.
//!
//! The scan is a plain byte search of the whole code for each immediate's
//! four little-endian bytes, at every offset: stronger than decoding the
//! instructions and looking at their immediate fields, since it also finds
//! a constant that would sit across instruction boundaries or inside a
//! displacement. Immediates are drawn with at least 17 significant bits, so
//! that no four-byte pattern can occur by accident in ordinary code
//! (small values like 0 or 1 are everywhere in machine code; they are also
//! useless to an attacker who wants to plant instruction bytes). The same
//! programs compiled without `harden` must show most of their immediates,
//! which proves the scan sees what it looks for.
//!
//! Not blinded, as in Linux: shift counts (masked to at most 6 bits),
//! byte-swap widths, and 16-bit offsets. Each generated program also runs,
//! hardened, and must give the interpreter's result.
#![cfg(all(feature = "jit", target_arch = "x86_64"))]
#![allow(unsafe_code)]

use sluice_bpf::helpers::Registry;
use sluice_bpf::isa::Insn;
use sluice_bpf::jit::{self, JitInput, JitVm};
use sluice_bpf::{Program, Vm};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A 32-bit immediate with at least 17 significant bits, either sign.
    fn big(&mut self) -> i32 {
        loop {
            let v = self.next() as i32;
            if v.unsigned_abs() >= 1 << 16 {
                return v;
            }
        }
    }
}

/// A straight-line program using every immediate-carrying form, and the
/// immediates it contains (4-byte patterns that must not appear).
fn program(rng: &mut Rng) -> (Vec<Insn>, Vec<i32>) {
    let mut p = Vec::new();
    let mut imms = Vec::new();
    // r0 and r2-r9 start from 64-bit constants: both halves are immediates.
    for r in [0u8, 2, 3, 4, 5, 6, 7, 8, 9] {
        let (lo, hi) = (rng.big(), rng.big());
        p.push(Insn::new(0x18, r, 0, 0, lo));
        p.push(Insn::new(0, 0, 0, 0, hi));
        imms.extend([lo, hi]);
    }
    let regs = [0u8, 2, 3, 4, 5, 6, 7, 8, 9];
    for i in 0..60 {
        let dst = regs[i % regs.len()];
        let imm = rng.big();
        imms.push(imm);
        let class = if rng.next() & 1 == 0 { 0x07 } else { 0x04 };
        match i % 6 {
            // add sub mul div or and mod xor mov (and signed div/mod)
            0..=2 => {
                let ops = [0x00u8, 0x10, 0x20, 0x30, 0x40, 0x50, 0x90, 0xa0, 0xb0];
                let op = ops[(rng.next() % ops.len() as u64) as usize];
                let off = i16::from(matches!(op, 0x30 | 0x90) && rng.next() & 1 == 0);
                p.push(Insn::new(op | class, dst, 0, off, imm));
            }
            // Conditional jumps over the next instruction (JMP and JMP32).
            3 => {
                let ops = [
                    0x10u8, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xa0, 0xb0, 0xc0, 0xd0,
                ];
                let op = ops[(rng.next() % ops.len() as u64) as usize];
                let class = if class == 0x07 { 0x05 } else { 0x06 };
                p.push(Insn::new(op | class, dst, 0, 1, imm));
                p.push(Insn::new(0x07, dst, 0, 0, 1));
            }
            // Stores of immediates to the stack, every size.
            _ => {
                let sizes = [0x10u8, 0x08, 0x00, 0x18];
                let sz = sizes[(rng.next() % 4) as usize];
                p.push(Insn::new(0x62 | sz, 10, 0, -8 * (1 + (i as i16 % 60)), imm));
                // Only W and DW stores put all four bytes in memory.
                if sz == 0x10 || sz == 0x08 {
                    imms.pop();
                }
            }
        }
    }
    // r0 = a mix of everything, so a wrong constant shows.
    for r in [2u8, 3, 4, 5, 6, 7, 8, 9] {
        p.push(Insn::new(0xaf, 0, r, 0, 0));
    }
    for k in 1..=60i16 {
        p.push(Insn::new(0x79, 2, 10, -8 * k, 0));
        p.push(Insn::new(0xaf, 0, 2, 0, 0));
    }
    p.push(Insn::new(0x95, 0, 0, 0, 0));
    (p, imms)
}

fn contains(code: &[u8], imm: i32) -> bool {
    let pat = imm.to_le_bytes();
    code.windows(4).any(|w| w == pat)
}

#[test]
fn hardened_code_contains_none_of_the_programs_immediates() {
    let reg = Registry::new();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let (mut checked, mut seen_plain, mut total) = (0usize, 0usize, 0usize);
    for case in 0..200 {
        let (insns, imms) = program(&mut rng);
        let hard = jit::compile(&JitInput::new(&insns, &reg).harden(true)).expect("compiles");
        let plain = jit::compile(&JitInput::new(&insns, &reg)).expect("compiles");
        for &imm in &imms {
            assert!(
                !contains(hard.code(), imm),
                "case {case}: immediate {imm:#x} in the clear in hardened code"
            );
            checked += 1;
            total += 1;
            seen_plain += usize::from(contains(plain.code(), imm));
        }
        // Hardened code computes the same thing.
        let prog = Program::load(insns.clone(), &reg).expect("loads");
        let expected = Vm::new().run_mem(&prog, &mut []);
        // SAFETY: the program touches only its own stack frame (fixed
        // offsets in [r10-480, r10)), as the interpreter run confirms.
        let got = unsafe { JitVm::new().run_mem(&hard, &mut []) };
        assert_eq!(got, expected, "case {case}");
    }
    println!(
        "blinding: {checked} immediates absent from hardened code; \
         {seen_plain} of {total} visible without hardening"
    );
    assert!(
        seen_plain * 10 >= total * 9,
        "the scan should see at least 90% of the immediates in plain code"
    );
}

#[test]
fn blinding_keys_differ_between_compilations() {
    let reg = Registry::new();
    let (insns, _) = program(&mut Rng(7));
    let a = jit::compile(&JitInput::new(&insns, &reg).harden(true)).expect("compiles");
    let b = jit::compile(&JitInput::new(&insns, &reg).harden(true)).expect("compiles");
    assert_ne!(a.code(), b.code(), "two compilations must draw fresh keys");
}
