//! Disassembler to the text syntax of the bpf_conformance suite.
//!
//! The output is the syntax [`crate::asm`] reads, with jump targets written
//! as relative offsets (`+N`/`-N`), so that
//! `assemble(&disassemble(p)?)? == p` for every program `p` that
//! [`isa::decode`] accepts. Forms the conformance syntax lacks (the
//! pseudo-sources of `lddw`) use the extensions documented in
//! [`crate::asm`].
//!
//! Spelling choices, where the assembler accepts several: 64-bit ALU
//! mnemonics have no suffix (`add`, not `add64`), byte swaps are `bswapN`,
//! immediates are signed decimal, `lddw` constants are hex, and kfunc calls
//! are `call runtime N`.

use std::fmt::{self, Write as _};

use crate::isa::{
    self, AluOp, AtomicOp, ByteOrder, CallTarget, DecodeError, Insn, Instruction, LdImm64, Reg,
    Size, Source, Width,
};

/// Formats one instruction (no label, no slot number, no newline).
#[must_use]
pub fn format_instruction(ins: &Instruction) -> String {
    Text(ins).to_string()
}

/// Disassembles a program: one line per instruction, each ending in `\n`,
/// jump targets relative.
///
/// # Errors
/// The first [`DecodeError`] of the program.
pub fn disassemble(insns: &[Insn]) -> Result<String, DecodeError> {
    let mut out = String::new();
    for (_, ins) in isa::decode(insns)? {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{}", Text(&ins));
    }
    Ok(out)
}

/// Disassembles a program for people: each line starts with the slot
/// number, and jumps and calls end with a comment naming the slot they go
/// to, for example
///
/// ```text
///    0: lddw %r0, 0x1
///    2: jeq %r1, 0, +1  # -> 4
///    3: mov %r0, 2
///    4: exit
/// ```
///
/// # Errors
/// The first [`DecodeError`] of the program.
pub fn disassemble_listing(insns: &[Insn]) -> Result<String, DecodeError> {
    let mut out = String::new();
    for (pc, ins) in isa::decode(insns)? {
        let _ = write!(out, "{pc:>4}: {}", Text(&ins));
        if let Some(rel) = relative_target(&ins) {
            let target = pc as i64 + 1 + i64::from(rel);
            let _ = write!(out, "  # -> {target}");
        }
        out.push('\n');
    }
    Ok(out)
}

/// The relative slot offset an instruction refers to, counted from the slot
/// after its first slot.
fn relative_target(ins: &Instruction) -> Option<i32> {
    match *ins {
        Instruction::Ja { off, .. }
        | Instruction::Call(CallTarget::Local(off))
        | Instruction::LdImm64 {
            value: LdImm64::Func(off),
            ..
        } => Some(off),
        Instruction::Jmp { off, .. } => Some(off.into()),
        _ => None,
    }
}

/// Display adapter for an instruction in assembler syntax.
struct Text<'a>(&'a Instruction);

/// A register or an immediate operand.
struct Src(Source);

impl fmt::Display for Src {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Source::Reg(r) => write!(f, "{r}"),
            Source::Imm(imm) => write!(f, "{imm}"),
        }
    }
}

/// A memory operand: `[%rN]`, `[%rN+off]`, `[%rN-off]`.
struct Mem(Reg, i16);

impl fmt::Display for Mem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            0 => write!(f, "[{}]", self.0),
            off => write!(f, "[{}{off:+}]", self.0),
        }
    }
}

fn suffix(width: Width) -> &'static str {
    match width {
        Width::W32 => "32",
        Width::W64 => "",
    }
}

fn size_suffix(size: Size) -> &'static str {
    match size {
        Size::B => "b",
        Size::H => "h",
        Size::W => "w",
        Size::DW => "dw",
    }
}

fn alu_name(op: AluOp) -> &'static str {
    match op {
        AluOp::Add => "add",
        AluOp::Sub => "sub",
        AluOp::Mul => "mul",
        AluOp::Div => "div",
        AluOp::Sdiv => "sdiv",
        AluOp::Or => "or",
        AluOp::And => "and",
        AluOp::Lsh => "lsh",
        AluOp::Rsh => "rsh",
        AluOp::Mod => "mod",
        AluOp::Smod => "smod",
        AluOp::Xor => "xor",
        AluOp::Mov => "mov",
        AluOp::Movsx(_) => "movsx",
        AluOp::Arsh => "arsh",
    }
}

fn atomic_name(op: AtomicOp) -> &'static str {
    match op {
        AtomicOp::Add => "add",
        AtomicOp::Or => "or",
        AtomicOp::And => "and",
        AtomicOp::Xor => "xor",
        AtomicOp::Xchg => "xchg",
        AtomicOp::Cmpxchg => "cmpxchg",
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self.0 {
            Instruction::Alu {
                width,
                op: AluOp::Movsx(bits),
                dst,
                src,
            } => {
                let w = match width {
                    Width::W32 => 32,
                    Width::W64 => 64,
                };
                write!(f, "movsx{bits}{w} {dst}, {}", Src(src))
            }
            Instruction::Alu {
                width,
                op,
                dst,
                src,
            } => {
                write!(f, "{}{} {dst}, {}", alu_name(op), suffix(width), Src(src))
            }
            Instruction::Neg { width, dst } => write!(f, "neg{} {dst}", suffix(width)),
            Instruction::Endian { order, bits, dst } => {
                let name = match order {
                    ByteOrder::Le => "le",
                    ByteOrder::Be => "be",
                    ByteOrder::Swap => "bswap",
                };
                write!(f, "{name}{bits} {dst}")
            }
            Instruction::Load {
                size,
                signed,
                dst,
                src,
                off,
            } => {
                let s = if signed { "s" } else { "" };
                write!(f, "ldx{s}{} {dst}, {}", size_suffix(size), Mem(src, off))
            }
            Instruction::Store {
                size,
                dst,
                off,
                src,
            } => {
                let x = if matches!(src, Source::Reg(_)) {
                    "x"
                } else {
                    ""
                };
                write!(
                    f,
                    "st{x}{} {}, {}",
                    size_suffix(size),
                    Mem(dst, off),
                    Src(src)
                )
            }
            Instruction::Atomic {
                width,
                op,
                fetch,
                dst,
                src,
                off,
            } => {
                // xchg and cmpxchg always fetch; the mnemonic says so.
                let fetch = if fetch && !matches!(op, AtomicOp::Xchg | AtomicOp::Cmpxchg) {
                    "fetch "
                } else {
                    ""
                };
                write!(
                    f,
                    "lock {fetch}{}{} {}, {src}",
                    atomic_name(op),
                    suffix(width),
                    Mem(dst, off)
                )
            }
            Instruction::LdImm64 { dst, value } => match value {
                LdImm64::Imm(v) => write!(f, "lddw {dst}, {v:#x}"),
                LdImm64::MapFd(fd) => write!(f, "lddw {dst}, map_fd {fd}"),
                LdImm64::MapValue { map, off } => write!(f, "lddw {dst}, map_value {map}+{off}"),
                LdImm64::BtfId(id) => write!(f, "lddw {dst}, btf_id {id}"),
                LdImm64::Func(off) => write!(f, "lddw {dst}, func {off:+}"),
                LdImm64::MapIdx(idx) => write!(f, "lddw {dst}, map_idx {idx}"),
                LdImm64::MapIdxValue { map, off } => {
                    write!(f, "lddw {dst}, map_idx_value {map}+{off}")
                }
            },
            Instruction::Ja { off, long: false } => write!(f, "ja {off:+}"),
            Instruction::Ja { off, long: true } => write!(f, "ja32 {off:+}"),
            Instruction::Jmp {
                width,
                op,
                dst,
                src,
                off,
            } => {
                write!(
                    f,
                    "{}{} {dst}, {}, {off:+}",
                    op.mnemonic(),
                    suffix(width),
                    Src(src)
                )
            }
            Instruction::Call(CallTarget::Helper(n)) => write!(f, "call {n}"),
            Instruction::Call(CallTarget::Local(off)) => write!(f, "call local {off:+}"),
            Instruction::Call(CallTarget::Kfunc(id)) => write!(f, "call runtime {id}"),
            Instruction::Callx { reg } => write!(f, "call {reg}"),
            Instruction::Exit => f.write_str("exit"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::assemble;

    fn roundtrip(src: &str) -> String {
        let insns = assemble(src).unwrap();
        let text = disassemble(&insns).unwrap();
        assert_eq!(assemble(&text).unwrap(), insns, "{text}");
        text
    }

    #[test]
    fn formats_in_assembler_syntax() {
        let text = roundtrip(
            "mov32 %r0, -1\nadd %r1, %r2\nneg32 %r3\nmovsx832 %r1, %r2\nswap16 %r0\n\
             ldxsb %r1, [%r2-3]\nstxdw [%r10-8], %r1\nsth [%r1+2], 7\nldxw %r0, [%r1]\n\
             lock fetch or32 [%r10-4], %r2\nlock cmpxchg [%r10-8], %r1\n\
             lddw %r4, 0x8000000000000000\njsle32 %r1, %r2, -3\nja +0\nja32 -1\n\
             call 1\ncall local +1\ncall runtime 3\ncall %r5\nexit\n",
        );
        let expected = "mov32 %r0, -1\nadd %r1, %r2\nneg32 %r3\nmovsx832 %r1, %r2\nbswap16 %r0\n\
             ldxsb %r1, [%r2-3]\nstxdw [%r10-8], %r1\nsth [%r1+2], 7\nldxw %r0, [%r1]\n\
             lock fetch or32 [%r10-4], %r2\nlock cmpxchg [%r10-8], %r1\n\
             lddw %r4, 0x8000000000000000\njsle32 %r1, %r2, -3\nja +0\nja32 -1\n\
             call 1\ncall local +1\ncall runtime 3\ncall %r5\nexit\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn pseudo_lddw_roundtrip() {
        roundtrip(
            "lddw %r1, map_fd 3\nlddw %r1, map_value -1+4294967295\nlddw %r2, btf_id 9\n\
             lddw %r3, func -2\nlddw %r4, map_idx 0\nlddw %r5, map_idx_value 1+8\nexit",
        );
    }

    #[test]
    fn listing_numbers_slots_and_targets() {
        let insns = assemble("lddw %r0, 1\njeq %r1, 0, +1\nmov %r0, 2\nexit").unwrap();
        let listing = disassemble_listing(&insns).unwrap();
        assert_eq!(
            listing,
            "   0: lddw %r0, 0x1\n   2: jeq %r1, 0, +1  # -> 4\n   3: mov %r0, 2\n   4: exit\n"
        );
    }

    #[test]
    fn undecodable_programs_are_refused() {
        let insns = assemble("mov %r11, 1").unwrap();
        assert!(matches!(
            disassemble(&insns),
            Err(DecodeError::BadRegister { reg: 11, .. })
        ));
    }
}
