//! `sluice prog dump jited`: the JIT's machine code as an x86-64 listing,
//! as `bpftool prog dump jited` prints it (AT&T syntax, offsets from the
//! start of the code, branch targets as offsets), with the eBPF instruction
//! each block of native code comes from as a comment before it:
//!
//! ```text
//! ; prologue
//!    0: push   %rbx
//!    1: mov    %rdi,%rbx
//!    ...
//! ; 0: ldxw %r2, [%r1+0]
//!   1a: mov    (%rdi),%rsi
//! ```
//!
//! The eBPF text is the instruction the JIT compiled: the program's native
//! form (context loads rewritten for the native `xdp_md`), slot for slot
//! the program of `dump xlated`. Code before slot 0 is the entry stub
//! (`; prologue`), code after the last slot the fault stubs and the common
//! fault exit (`; fault exits`).

use std::fmt::Write as _;

use anyhow::{anyhow, bail, Result};
use iced_x86::{Decoder, DecoderOptions, Formatter, GasFormatter, Instruction};
use sluice_bpf::disasm::format_instruction;
use sluice_bpf::isa::{self, CallTarget, Instruction as Bpf, LdImm64};
use sluice_bpf::Program;

/// The listing of `program`'s machine code, one line per native
/// instruction (with its bytes, objdump style, if `opcodes`) and one
/// comment line per eBPF instruction.
///
/// # Errors
/// The program has no machine code (not verified, or a build without the
/// JIT), or its instructions do not decode.
pub fn listing(program: &Program, opcodes: bool) -> Result<Vec<String>> {
    let (Some(code), Some(offsets)) = (program.jit_code(), program.jit_insn_offsets()) else {
        bail!("the program has no machine code (not verified, or a build without the JIT)");
    };
    let insns = program.native_insns().unwrap_or(program.insns());
    let decoded = isa::decode(insns).map_err(|e| anyhow!("disassembling: {e}"))?;
    if offsets.len() != insns.len() + 1 {
        bail!(
            "{} instruction offsets for {} slots",
            offsets.len(),
            insns.len()
        );
    }
    // (native offset, comment) in order: the eBPF instructions (an LD_IMM64
    // once, for its first slot), the stub labels.
    let mut marks: Vec<(usize, String)> = Vec::with_capacity(decoded.len() + 2);
    if offsets[0] > 0 {
        marks.push((0, "; prologue".to_owned()));
    }
    for (pc, ins) in &decoded {
        let mut text = format!("; {pc}: {}", format_instruction(ins));
        if let Some(rel) = relative_target(ins) {
            let _ = write!(text, "  # -> {}", *pc as i64 + 1 + i64::from(rel));
        }
        marks.push((offsets[*pc] as usize, text));
    }
    let end = offsets[insns.len()] as usize;
    if end < code.len() {
        marks.push((end, "; fault exits".to_owned()));
    }

    let width = format!("{:x}", code.len()).len().max(4);
    // Widest instruction in the program, for the bytes column.
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut formatter = GasFormatter::new();
    let o = formatter.options_mut();
    o.set_first_operand_char_index(7);
    o.set_space_after_operand_separator(false);
    o.set_small_hex_numbers_in_decimal(false);
    o.set_uppercase_hex(false);
    o.set_branch_leading_zeros(false);
    let mut ins = Instruction::default();
    let mut decoded_x86 = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut ins);
        decoded_x86.push(ins);
    }
    let bytes_width = decoded_x86.iter().map(|i| i.len()).max().unwrap_or(0) * 3 + 1;

    let mut out = Vec::with_capacity(marks.len() + decoded_x86.len());
    let mut marks = marks.into_iter().peekable();
    let mut text = String::new();
    for ins in &decoded_x86 {
        let at = ins.ip() as usize;
        while let Some((_, m)) = marks.next_if(|(off, _)| *off <= at) {
            out.push(m);
        }
        let mut line = format!("{at:>width$x}: ");
        if opcodes {
            let bytes = &code[at..at + ins.len()];
            let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let _ = write!(line, "{:bytes_width$}", hex.join(" "));
        }
        if ins.is_invalid() {
            line.push_str("(bad)");
        } else {
            text.clear();
            formatter.format(ins, &mut text);
            line.push_str(&text);
        }
        out.push(line);
    }
    // Marks at the very end (a slot without code of its own at the end).
    out.extend(marks.map(|(_, m)| m));
    Ok(out)
}

/// The slot offset a jump, call or function reference goes to, counted
/// from the slot after it (as `dump xlated` shows them).
fn relative_target(ins: &Bpf) -> Option<i32> {
    match *ins {
        Bpf::Ja { off, .. }
        | Bpf::Call(CallTarget::Local(off))
        | Bpf::LdImm64 {
            value: LdImm64::Func(off),
            ..
        } => Some(off),
        Bpf::Jmp { off, .. } => Some(off.into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_bpf::asm::assemble;
    use sluice_bpf::helpers::Registry;
    use sluice_bpf::verifier::ProgKind;

    /// A bounds check (a `mov`/`add` pair), an `lddw`, a helper call (so an
    /// entry stub and a fault exit), two exits.
    const SRC: &str = "\
ldxw %r2, [%r1+0]
ldxw %r3, [%r1+4]
mov %r4, %r2
add %r4, 14
jgt %r4, %r3, +5
lddw %r6, 0x100000000
call 5
mov %r0, 2
exit
mov %r0, 1
exit
";

    fn program(src: &str) -> Program {
        let insns = assemble(src).expect("assembles");
        Program::load_verified(insns, ProgKind::Xdp, &Registry::xdp(), Vec::new())
            .expect("verifies")
    }

    /// The offset a native line starts with, if it is one.
    fn offset(line: &str) -> Option<usize> {
        let (off, _) = line.split_once(": ")?;
        if line.starts_with(';') {
            return None;
        }
        usize::from_str_radix(off.trim(), 16).ok()
    }

    fn check(p: &Program) -> Vec<String> {
        let code = p.jit_code().expect("has machine code");
        for opcodes in [false, true] {
            let l = listing(p, opcodes).unwrap();
            assert!(l.iter().all(|s| !s.contains("(bad)")), "{l:#?}");
            assert!(
                l.iter().any(|s| s.split_whitespace().last() == Some("ret")),
                "{l:#?}"
            );
            assert!(l.iter().any(|s| s.starts_with("; 0: ")), "{l:#?}");
            // Every eBPF instruction is there, each before native code.
            let slots = isa::decode(p.insns()).unwrap();
            for (pc, _) in &slots {
                let i = l
                    .iter()
                    .position(|s| s.starts_with(&format!("; {pc}: ")))
                    .unwrap_or_else(|| panic!("slot {pc} in {l:#?}"));
                assert!(l[i..].iter().any(|s| offset(s).is_some()), "{l:#?}");
            }
            // The native lines are the code's instructions, one after the
            // other, and cover every byte.
            let natives: Vec<usize> = l.iter().filter_map(|s| offset(s)).collect();
            let all: Vec<Instruction> = Decoder::with_ip(64, code, 0, DecoderOptions::NONE)
                .iter()
                .collect();
            let ips: Vec<usize> = all.iter().map(|i| i.ip() as usize).collect();
            assert_eq!(natives, ips);
            assert!(all.iter().all(|i| !i.is_invalid()));
            assert_eq!(all.iter().map(Instruction::len).sum::<usize>(), code.len());
            assert!(all.windows(2).all(|w| w[0].next_ip() == w[1].ip()));
            for &o in p.jit_insn_offsets().unwrap() {
                let o = o as usize;
                assert!(o == code.len() || natives.contains(&o), "{o}: {l:#?}");
            }
            if opcodes {
                // Native lines carry their bytes.
                let first = l.iter().find(|s| offset(s).is_some()).unwrap();
                let hex = first.split_once(": ").unwrap().1;
                let b = u8::from_str_radix(&hex[..2], 16).unwrap();
                assert_eq!(b, code[natives[0]], "{first}");
            }
        }
        listing(p, false).unwrap()
    }

    #[test]
    fn non_leaf_program_has_prologue_slots_and_fault_exits() {
        let p = program(SRC);
        let l = check(&p);
        assert_eq!(l[0], "; prologue", "{l:#?}");
        assert!(l.iter().any(|s| s == "; fault exits"), "{l:#?}");
        // The lddw appears once, the jump with its target.
        assert!(l
            .iter()
            .any(|s| s.starts_with("; 5: lddw %r6, 0x100000000")));
        assert!(!l.iter().any(|s| s.starts_with("; 6: ")), "{l:#?}");
        assert!(l.iter().any(|s| s.ends_with("# -> 10")), "{l:#?}");
        // AT&T syntax, branch targets as offsets.
        assert!(l.iter().any(|s| s.contains("call   *%r11")), "{l:#?}");
        assert!(
            l.iter().any(|s| s.ends_with(": mov    (%rdi),%rsi")),
            "{l:#?}"
        );
        // The bounds check's jump goes to slot 10's code.
        let ja = l.iter().position(|s| s.starts_with("; 4: ")).unwrap();
        let jump = l[ja..].iter().find(|s| s.contains(": ja ")).unwrap();
        let target = jump.rsplit(' ').next().unwrap();
        let target = usize::from_str_radix(target.strip_prefix("0x").unwrap(), 16).unwrap();
        let s10 = l.iter().position(|s| s.starts_with("; 10: ")).unwrap();
        assert_eq!(offset(&l[s10 + 1]), Some(target), "{l:#?}");
        assert_eq!(target, p.jit_insn_offsets().unwrap()[10] as usize);
        println!("{}", l.join("\n"));
    }

    #[test]
    fn leaf_program_starts_with_slot_0() {
        let p = program("mov %r0, 2\nexit");
        let l = check(&p);
        assert_eq!(l[0], "; 0: mov %r0, 2", "{l:#?}");
        assert!(l.iter().all(|s| !s.starts_with("; prologue")));
        assert!(l.iter().all(|s| !s.starts_with("; fault")));
    }

    #[test]
    fn unverified_programs_have_no_listing() {
        let insns = assemble("mov %r0, 2\nexit").unwrap();
        let p = Program::load(insns, &Registry::xdp()).unwrap();
        assert!(listing(&p, false).is_err());
    }
}
