//! Assembler for the text syntax of the bpf_conformance suite, and a parser
//! for the suite's `.data` test files.
//!
//! [`assemble`] turns text into raw [`Insn`] slots; [`crate::disasm`] goes
//! the other way, and `assemble(&disassemble(p)?)` gives back `p` for every
//! program that [`isa::decode`] accepts.
//!
//! # Syntax
//!
//! One instruction or label per line. `#` starts a comment that runs to the
//! end of the line; blank lines are ignored. Operands are separated by
//! whitespace and/or commas (`mov %r0, 1`, `mov %r0 1` and `mov %r0,1` are
//! the same).
//!
//! | form | meaning |
//! |---|---|
//! | `name:` | a label: names the next instruction's slot. An instruction may follow on the same line. |
//! | `%r0` .. `%r10` | registers; `%r11` .. `%r15` are also accepted so that negative tests can be built (the result does not decode) |
//! | `[%rN]`, `[%rN+off]`, `[%rN-off]` | memory operand; `off` must fit in an `i16` |
//! | `123`, `-5`, `0xff` | 32-bit immediate: decimal must fit in an `i32`, hex must be at most `0xffffffff` and is stored as its `u32` bits |
//! | `+N`, `-N`, `label` | jump target, in slots relative to the slot after the jump's first slot |
//!
//! The label `exit` implicitly names the first `exit` instruction, unless
//! the program defines a label called `exit` itself. `lddw` occupies two
//! slots, which labels and relative targets account for.
//!
//! Mnemonics:
//!
//! * ALU: `add sub mul div sdiv or and lsh rsh mod smod xor mov arsh`, each
//!   with an optional `32` (ALU class) or `64` (ALU64 class, the default)
//!   suffix, as `OP %rD, %rS` or `OP %rD, imm`; `neg`, `neg32`, `neg64`
//!   take one register.
//! * Sign-extending moves: `movsx{8,16,32}{32,64} %rD, %rS`, for example
//!   `movsx832` or `movsx1664` (`movsx3232` is not an instruction).
//! * Byte swaps: `le16 le32 le64 be16 be32 be64 swap16 swap32 swap64` and
//!   `bswap16 bswap32 bswap64` (`swapN` and `bswapN` are the same
//!   instruction), each with one register.
//! * Loads: `ldxb ldxh ldxw ldxdw %rD, [%rS+off]`, sign-extending
//!   `ldxsb ldxsh ldxsw`.
//! * Stores: `stb sth stw stdw [%rD+off], imm` and
//!   `stxb stxh stxw stxdw [%rD+off], %rS`.
//! * `lddw %rD, imm64`: hex up to `0xffffffffffffffff`, or decimal from
//!   `i64::MIN` to `u64::MAX`.
//! * Jumps: `ja TARGET` (16-bit offset), `ja32 TARGET` (JMP32 class, 32-bit
//!   offset in imm), and `jeq jgt jge jset jne jsgt jsge jlt jle jslt jsle`,
//!   with an optional `32` suffix for the JMP32 class, as
//!   `OP %rD, %rS|imm, TARGET`.
//! * Calls: `call N` (helper), `call local TARGET` (bpf-to-bpf),
//!   `call runtime N` (`src = 2`), `call %rN` (callx: opcode `0x8d`,
//!   `dst = N`); `exit`.
//! * Atomics: `lock [fetch] add|or|and|xor[32] [%rD+off], %rS`,
//!   `lock xchg[32] [%rD+off], %rS`, `lock cmpxchg[32] [%rD+off], %rS`.
//!   A `32` suffix selects the 32-bit form; `xchg` and `cmpxchg` always
//!   fetch (a `fetch` before them is accepted and changes nothing).
//!
//! # Extensions
//!
//! These forms are not in the conformance syntax. They exist so that the
//! disassembler can print every program that decodes:
//!
//! | text | encoding |
//! |---|---|
//! | `lddw %rD, map_fd N` | `LD_IMM64`, `src = 1` (`BPF_PSEUDO_MAP_FD`), imm = N |
//! | `lddw %rD, map_value N+OFF` | `src = 2`, imm = N, second imm = OFF (a `u32`; `+OFF` may be left out for 0) |
//! | `lddw %rD, btf_id N` | `src = 3` |
//! | `lddw %rD, func TARGET` | `src = 4`, imm = TARGET relative to the slot after the first slot, as Linux reads it |
//! | `lddw %rD, map_idx N` | `src = 5` |
//! | `lddw %rD, map_idx_value N+OFF` | `src = 6`, second imm = OFF |
//! | `call helper N` | same as `call N` (upstream's long form) |
//! | `call kfunc N` | same as `call runtime N` |
//! | `callx %rN` | same as `call %rN` |
//!
//! # `.data` files
//!
//! [`parse_data_file`] reads the conformance suite's test files following
//! §1 of the suite's README (the rules of upstream's `bpf_test_parser.cc`),
//! with one deliberate difference: a `-- raw` section in which every line
//! is exactly eight two-digit hex bytes (`07 00 01 00 01 00 00 00`, the
//! layout of `negative/unused-*.data`) is read as instruction bytes rather
//! than as eight 64-bit numbers, which upstream would misread.

use std::collections::HashMap;
use std::fmt;

use crate::isa::{
    self, AluOp, AtomicOp, ByteOrder, CallTarget, Insn, Instruction, JmpOp, LdImm64, Reg, Size,
    Source, Width,
};

/// An error found while assembling, or while parsing a `.data` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsmError {
    /// 1-based line number of the offending line; 0 when the error concerns
    /// the input as a whole (for example a file without a program).
    pub line: usize,
    /// What is wrong, naming the offending token.
    pub message: String,
}

impl AsmError {
    fn new(line: usize, message: impl Into<String>) -> AsmError {
        AsmError {
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for AsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for AsmError {}

/// Assembles a program.
///
/// Returns the raw slots, two for each `lddw`. An empty (or comment-only)
/// text gives an empty program.
///
/// # Errors
/// The first problem found, with its line: an unknown mnemonic, a bad
/// operand or operand count, an out-of-range immediate, offset or jump, a
/// duplicate or undefined label.
pub fn assemble(src: &str) -> Result<Vec<Insn>, AsmError> {
    let mut stmts: Vec<Stmt<'_>> = Vec::new();
    // Label name -> (slot, line of definition).
    let mut labels: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut first_exit: Option<usize> = None;
    let mut slot = 0usize;

    for (idx, raw_line) in src.lines().enumerate() {
        let line = idx + 1;
        let mut text = strip_comment(raw_line).trim();
        let first = text.split_whitespace().next().unwrap_or("");
        if let Some(name) = first.strip_suffix(':') {
            if !is_label_name(name) {
                return Err(AsmError::new(line, format!("invalid label name '{name}'")));
            }
            if let Some(&(_, prev)) = labels.get(name) {
                return Err(AsmError::new(
                    line,
                    format!("duplicate label '{name}' (first defined on line {prev})"),
                ));
            }
            labels.insert(name, (slot, line));
            text = text[first.len()..].trim_start();
        }
        let mut tokens = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty());
        let Some(mnemonic) = tokens.next() else {
            continue;
        };
        let operands: Vec<&str> = tokens.collect();
        let parsed =
            parse_statement(mnemonic, &operands).map_err(|message| AsmError { line, message })?;
        let mut ins = parsed.ins;
        let label = match parsed.target {
            Some(Target::Rel(rel)) => {
                set_target(&mut ins, rel).map_err(|message| AsmError { line, message })?;
                None
            }
            Some(Target::Label(name)) => Some(name),
            None => None,
        };
        if ins == Instruction::Exit && first_exit.is_none() {
            first_exit = Some(slot);
        }
        stmts.push(Stmt {
            line,
            slot,
            ins,
            label,
            high: parsed.high,
        });
        slot += ins.slots();
    }

    let mut out = Vec::with_capacity(slot);
    for mut stmt in stmts {
        if let Some(name) = stmt.label {
            let target = labels
                .get(name)
                .map(|&(s, _)| s)
                .or(if name == "exit" { first_exit } else { None })
                .ok_or_else(|| AsmError::new(stmt.line, format!("undefined label '{name}'")))?;
            let rel = target as i128 - (stmt.slot as i128 + 1);
            set_target(&mut stmt.ins, rel).map_err(|m| {
                AsmError::new(
                    stmt.line,
                    format!("jump to label '{name}' is out of range: {m}"),
                )
            })?;
        }
        let start = out.len();
        isa::encode_into(&stmt.ins, &mut out);
        // Registers above r10 cannot be represented by `Reg`: the
        // instruction was built with a placeholder, patch the raw field.
        if let Some(first) = out.get_mut(start) {
            if let Some(d) = stmt.high.dst {
                first.dst = d;
            }
            if let Some(s) = stmt.high.src {
                first.src = s;
            }
        }
    }
    Ok(out)
}

/// One parsed instruction, with the label its target still names, if any.
struct Stmt<'a> {
    line: usize,
    slot: usize,
    ins: Instruction,
    label: Option<&'a str>,
    high: HighRegs,
}

/// Raw register numbers above 10 to patch into the first slot.
#[derive(Clone, Copy, Default)]
struct HighRegs {
    dst: Option<u8>,
    src: Option<u8>,
}

/// A jump target as written.
enum Target<'a> {
    Rel(i128),
    Label(&'a str),
}

/// The result of parsing one line.
struct Parsed<'a> {
    ins: Instruction,
    high: HighRegs,
    target: Option<Target<'a>>,
}

impl<'a> Parsed<'a> {
    fn new(ins: Instruction) -> Parsed<'a> {
        Parsed {
            ins,
            high: HighRegs::default(),
            target: None,
        }
    }

    fn regs(ins: Instruction, dst: Option<AsmReg>, src: Option<AsmReg>) -> Parsed<'a> {
        let high = HighRegs {
            dst: dst.and_then(AsmReg::high),
            src: src.and_then(AsmReg::high),
        };
        Parsed {
            ins,
            high,
            target: None,
        }
    }

    fn with_target(mut self, target: Target<'a>) -> Parsed<'a> {
        self.target = Some(target);
        self
    }
}

/// A register operand as written: `%r0` to `%r15`.
#[derive(Clone, Copy)]
struct AsmReg(u8);

impl AsmReg {
    /// The register, or a placeholder (r0) for `%r11`..`%r15`, whose number
    /// is patched into the raw slot afterwards.
    fn reg(self) -> Reg {
        Reg::new(self.0).unwrap_or(Reg::R0)
    }

    fn high(self) -> Option<u8> {
        (self.0 > 10).then_some(self.0)
    }
}

/// Stores a relative target into the instruction's offset field.
fn set_target(ins: &mut Instruction, rel: i128) -> Result<(), String> {
    let too_far = |bits: u32| format!("offset {rel:+} does not fit in {bits} bits");
    match ins {
        Instruction::Ja { off, long: false } => {
            *off = i16::try_from(rel).map_err(|_| too_far(16))?.into();
        }
        Instruction::Jmp { off, .. } => *off = i16::try_from(rel).map_err(|_| too_far(16))?,
        Instruction::Ja { off, long: true }
        | Instruction::Call(CallTarget::Local(off))
        | Instruction::LdImm64 {
            value: LdImm64::Func(off),
            ..
        } => {
            *off = i32::try_from(rel).map_err(|_| too_far(32))?;
        }
        // Only instructions built with a target reach here.
        _ => {}
    }
    Ok(())
}

fn strip_comment(line: &str) -> &str {
    let line = line.strip_suffix('\r').unwrap_or(line);
    line.split_once('#').map_or(line, |(code, _)| code)
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '.')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

fn expect_operands(mnemonic: &str, ops: &[&str], n: usize) -> Result<(), String> {
    if ops.len() == n {
        Ok(())
    } else {
        Err(format!(
            "wrong number of operands for {mnemonic}: expected {n}, got {}",
            ops.len()
        ))
    }
}

fn parse_statement<'a>(mnemonic: &str, ops: &[&'a str]) -> Result<Parsed<'a>, String> {
    match mnemonic {
        "exit" => {
            expect_operands(mnemonic, ops, 0)?;
            Ok(Parsed::new(Instruction::Exit))
        }
        "lddw" => parse_lddw(ops),
        "ja" | "ja32" => {
            expect_operands(mnemonic, ops, 1)?;
            let long = mnemonic == "ja32";
            let ins = Instruction::Ja { off: 0, long };
            Ok(Parsed::new(ins).with_target(parse_target(ops[0])?))
        }
        "call" => parse_call(ops),
        "callx" => {
            expect_operands(mnemonic, ops, 1)?;
            one_reg(ops[0], |reg| Instruction::Callx { reg })
        }
        "lock" => parse_lock(ops),
        _ => {
            if let Some((form, size)) = memory_mnemonic(mnemonic) {
                parse_memory(mnemonic, ops, form, size)
            } else if let Some((order, bits)) = endian_mnemonic(mnemonic) {
                expect_operands(mnemonic, ops, 1)?;
                one_reg(ops[0], |dst| Instruction::Endian { order, bits, dst })
            } else if let Some(rest) = mnemonic.strip_prefix("movsx") {
                parse_movsx(mnemonic, rest, ops)
            } else if let Some((op, width)) = jmp_mnemonic(mnemonic) {
                expect_operands(mnemonic, ops, 3)?;
                let dst = parse_reg(ops[0])?;
                let (src, src_reg) = parse_source(ops[1])?;
                let ins = Instruction::Jmp {
                    width,
                    op,
                    dst: dst.reg(),
                    src,
                    off: 0,
                };
                Ok(Parsed::regs(ins, Some(dst), src_reg).with_target(parse_target(ops[2])?))
            } else {
                parse_alu(mnemonic, ops)
            }
        }
    }
}

/// An instruction whose only operand is one register.
fn one_reg<'a>(op: &str, build: impl FnOnce(Reg) -> Instruction) -> Result<Parsed<'a>, String> {
    let r = parse_reg(op)?;
    Ok(Parsed::regs(build(r.reg()), Some(r), None))
}

/// `OP[32|64] %rD, %rS|imm` and `neg[32|64] %rD`.
fn parse_alu<'a>(mnemonic: &str, ops: &[&'a str]) -> Result<Parsed<'a>, String> {
    let (base, width) = match mnemonic.strip_suffix("32") {
        Some(base) => (base, Width::W32),
        None => (mnemonic.strip_suffix("64").unwrap_or(mnemonic), Width::W64),
    };
    if base == "neg" {
        expect_operands(mnemonic, ops, 1)?;
        return one_reg(ops[0], |dst| Instruction::Neg { width, dst });
    }
    let op = alu_op(base).ok_or_else(|| format!("unknown mnemonic '{mnemonic}'"))?;
    expect_operands(mnemonic, ops, 2)?;
    let dst = parse_reg(ops[0])?;
    let (src, src_reg) = parse_source(ops[1])?;
    let ins = Instruction::Alu {
        width,
        op,
        dst: dst.reg(),
        src,
    };
    Ok(Parsed::regs(ins, Some(dst), src_reg))
}

/// `movsx{8,16,32}{32,64} %rD, %rS`; `rest` is what follows `movsx`.
fn parse_movsx<'a>(mnemonic: &str, rest: &str, ops: &[&'a str]) -> Result<Parsed<'a>, String> {
    let (bits, width) = match rest {
        "832" => (8, Width::W32),
        "864" => (8, Width::W64),
        "1632" => (16, Width::W32),
        "1664" => (16, Width::W64),
        "3264" => (32, Width::W64),
        "3232" => return Err("movsx3232 is not an instruction (use mov32)".to_string()),
        _ => return Err(format!("unknown mnemonic '{mnemonic}'")),
    };
    expect_operands(mnemonic, ops, 2)?;
    let dst = parse_reg(ops[0])?;
    let src = parse_reg(ops[1]).map_err(|e| format!("{e}: {mnemonic} needs a register source"))?;
    let ins = Instruction::Alu {
        width,
        op: AluOp::Movsx(bits),
        dst: dst.reg(),
        src: Source::Reg(src.reg()),
    };
    Ok(Parsed::regs(ins, Some(dst), Some(src)))
}

/// The three shapes of memory instructions.
#[derive(Clone, Copy)]
enum MemForm {
    /// `ldx[s]SIZE %rD, [%rS+off]`
    Load { signed: bool },
    /// `stSIZE [%rD+off], imm`
    Store,
    /// `stxSIZE [%rD+off], %rS`
    StoreReg,
}

fn memory_mnemonic(mnemonic: &str) -> Option<(MemForm, Size)> {
    let prefixes = [
        ("ldxs", MemForm::Load { signed: true }),
        ("ldx", MemForm::Load { signed: false }),
        ("stx", MemForm::StoreReg),
        ("st", MemForm::Store),
    ];
    let (form, size) = prefixes
        .iter()
        .find_map(|&(prefix, form)| mnemonic.strip_prefix(prefix).map(|size| (form, size)))?;
    let size = match size {
        "b" => Size::B,
        "h" => Size::H,
        "w" => Size::W,
        "dw" => Size::DW,
        _ => return None,
    };
    // There is no sign-extending 64-bit load.
    match (form, size) {
        (MemForm::Load { signed: true }, Size::DW) => None,
        _ => Some((form, size)),
    }
}

fn parse_memory<'a>(
    mnemonic: &str,
    ops: &[&'a str],
    form: MemForm,
    size: Size,
) -> Result<Parsed<'a>, String> {
    expect_operands(mnemonic, ops, 2)?;
    match form {
        MemForm::Load { signed } => {
            let dst = parse_reg(ops[0])?;
            let (src, off) = parse_mem(ops[1])?;
            let ins = Instruction::Load {
                size,
                signed,
                dst: dst.reg(),
                src: src.reg(),
                off,
            };
            Ok(Parsed::regs(ins, Some(dst), Some(src)))
        }
        MemForm::Store => {
            let (dst, off) = parse_mem(ops[0])?;
            let src = Source::Imm(parse_imm32(ops[1])?);
            let ins = Instruction::Store {
                size,
                dst: dst.reg(),
                off,
                src,
            };
            Ok(Parsed::regs(ins, Some(dst), None))
        }
        MemForm::StoreReg => {
            let (dst, off) = parse_mem(ops[0])?;
            let src = parse_reg(ops[1])?;
            let ins = Instruction::Store {
                size,
                dst: dst.reg(),
                off,
                src: Source::Reg(src.reg()),
            };
            Ok(Parsed::regs(ins, Some(dst), Some(src)))
        }
    }
}

fn alu_op(name: &str) -> Option<AluOp> {
    Some(match name {
        "add" => AluOp::Add,
        "sub" => AluOp::Sub,
        "mul" => AluOp::Mul,
        "div" => AluOp::Div,
        "sdiv" => AluOp::Sdiv,
        "or" => AluOp::Or,
        "and" => AluOp::And,
        "lsh" => AluOp::Lsh,
        "rsh" => AluOp::Rsh,
        "mod" => AluOp::Mod,
        "smod" => AluOp::Smod,
        "xor" => AluOp::Xor,
        "mov" => AluOp::Mov,
        "arsh" => AluOp::Arsh,
        _ => return None,
    })
}

fn jmp_mnemonic(mnemonic: &str) -> Option<(JmpOp, Width)> {
    let (base, width) = match mnemonic.strip_suffix("32") {
        Some(base) => (base, Width::W32),
        None => (mnemonic, Width::W64),
    };
    let op = match base {
        "jeq" => JmpOp::Eq,
        "jgt" => JmpOp::Gt,
        "jge" => JmpOp::Ge,
        "jset" => JmpOp::Set,
        "jne" => JmpOp::Ne,
        "jsgt" => JmpOp::Sgt,
        "jsge" => JmpOp::Sge,
        "jlt" => JmpOp::Lt,
        "jle" => JmpOp::Le,
        "jslt" => JmpOp::Slt,
        "jsle" => JmpOp::Sle,
        _ => return None,
    };
    Some((op, width))
}

fn endian_mnemonic(mnemonic: &str) -> Option<(ByteOrder, u8)> {
    let (order, bits) = if let Some(bits) = mnemonic.strip_prefix("le") {
        (ByteOrder::Le, bits)
    } else if let Some(bits) = mnemonic.strip_prefix("be") {
        (ByteOrder::Be, bits)
    } else if let Some(bits) = mnemonic
        .strip_prefix("bswap")
        .or_else(|| mnemonic.strip_prefix("swap"))
    {
        (ByteOrder::Swap, bits)
    } else {
        return None;
    };
    let bits = match bits {
        "16" => 16,
        "32" => 32,
        "64" => 64,
        _ => return None,
    };
    Some((order, bits))
}

fn parse_lddw<'a>(ops: &[&'a str]) -> Result<Parsed<'a>, String> {
    let (dst, value, target) = match *ops {
        [d, v] => (parse_reg(d)?, LdImm64::Imm(parse_imm64(v)?), None),
        [d, kind, v] => {
            let dst = parse_reg(d)?;
            match kind {
                "map_fd" => (dst, LdImm64::MapFd(parse_imm32(v)?), None),
                "map_value" => {
                    let (map, off) = parse_map_offset(v)?;
                    (dst, LdImm64::MapValue { map, off }, None)
                }
                "btf_id" => (dst, LdImm64::BtfId(parse_imm32(v)?), None),
                "func" => (dst, LdImm64::Func(0), Some(parse_target(v)?)),
                "map_idx" => (dst, LdImm64::MapIdx(parse_imm32(v)?), None),
                "map_idx_value" => {
                    let (map, off) = parse_map_offset(v)?;
                    (dst, LdImm64::MapIdxValue { map, off }, None)
                }
                _ => {
                    return Err(format!(
                        "unknown lddw operand kind '{kind}' (expected map_fd, map_value, \
                         btf_id, func, map_idx or map_idx_value)"
                    ))
                }
            }
        }
        _ => {
            return Err(format!(
                "wrong number of operands for lddw: expected 2 (or 3 with a kind), got {}",
                ops.len()
            ))
        }
    };
    let parsed = Parsed::regs(
        Instruction::LdImm64 {
            dst: dst.reg(),
            value,
        },
        Some(dst),
        None,
    );
    Ok(match target {
        Some(t) => parsed.with_target(t),
        None => parsed,
    })
}

fn parse_call<'a>(ops: &[&'a str]) -> Result<Parsed<'a>, String> {
    match *ops {
        [r] if r.starts_with('%') => {
            let r = parse_reg(r)?;
            Ok(Parsed::regs(
                Instruction::Callx { reg: r.reg() },
                Some(r),
                None,
            ))
        }
        [n] | ["helper", n] => Ok(Parsed::new(Instruction::Call(CallTarget::Helper(
            parse_imm32(n)?,
        )))),
        ["local", t] => {
            Ok(Parsed::new(Instruction::Call(CallTarget::Local(0))).with_target(parse_target(t)?))
        }
        ["runtime" | "kfunc", n] => Ok(Parsed::new(Instruction::Call(CallTarget::Kfunc(
            parse_imm32(n)?,
        )))),
        [kind, _] => Err(format!(
            "unknown call kind '{kind}' (expected helper, local, runtime or kfunc)"
        )),
        _ => Err(format!(
            "wrong number of operands for call: expected 1 or 2, got {}",
            ops.len()
        )),
    }
}

fn parse_lock<'a>(ops: &[&'a str]) -> Result<Parsed<'a>, String> {
    let (fetch, rest) = match ops.split_first() {
        Some((&"fetch", rest)) => (true, rest),
        _ => (false, ops),
    };
    let &[name, mem, src] = rest else {
        return Err(format!(
            "wrong number of operands for lock: expected [fetch] OP [%rD+off], %rS (got {} operands)",
            ops.len()
        ));
    };
    let (base, width) = match name.strip_suffix("32") {
        Some(base) => (base, Width::W32),
        None => (name, Width::W64),
    };
    let op = match base {
        "add" => AtomicOp::Add,
        "or" => AtomicOp::Or,
        "and" => AtomicOp::And,
        "xor" => AtomicOp::Xor,
        "xchg" => AtomicOp::Xchg,
        "cmpxchg" => AtomicOp::Cmpxchg,
        _ => return Err(format!("unknown atomic operation 'lock {name}'")),
    };
    let fetch = fetch || matches!(op, AtomicOp::Xchg | AtomicOp::Cmpxchg);
    let (dst, off) = parse_mem(mem)?;
    let src = parse_reg(src)?;
    let ins = Instruction::Atomic {
        width,
        op,
        fetch,
        dst: dst.reg(),
        src: src.reg(),
        off,
    };
    Ok(Parsed::regs(ins, Some(dst), Some(src)))
}

fn parse_reg(s: &str) -> Result<AsmReg, String> {
    s.strip_prefix("%r")
        .filter(|d| (1..=2).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u8>().ok())
        .filter(|&n| n <= 15)
        .map(AsmReg)
        .ok_or_else(|| format!("invalid register '{s}'"))
}

/// A register (`%rN`) or a 32-bit immediate.
fn parse_source(s: &str) -> Result<(Source, Option<AsmReg>), String> {
    if s.starts_with('%') {
        let r = parse_reg(s)?;
        Ok((Source::Reg(r.reg()), Some(r)))
    } else {
        Ok((Source::Imm(parse_imm32(s)?), None))
    }
}

/// `[%rN]`, `[%rN+off]` or `[%rN-off]`.
fn parse_mem(s: &str) -> Result<(AsmReg, i16), String> {
    let inner = s
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| format!("expected a memory operand like [%r1+8], got '{s}'"))?;
    let (reg, off) = match inner.find(['+', '-']) {
        Some(i) => inner.split_at(i),
        None => (inner, ""),
    };
    let reg = parse_reg(reg)?;
    if off.is_empty() {
        return Ok((reg, 0));
    }
    let n = parse_number(off).ok_or_else(|| format!("invalid offset '{off}' in '{s}'"))?;
    let off = i16::try_from(n.value)
        .map_err(|_| format!("offset {off} out of range (must fit in a signed 16-bit integer)"))?;
    Ok((reg, off))
}

/// `+N`, `-N` (decimal or hex) or a label name.
fn parse_target(s: &str) -> Result<Target<'_>, String> {
    if s.starts_with(['+', '-']) {
        parse_number(s)
            .map(|n| Target::Rel(n.value))
            .ok_or_else(|| format!("invalid jump offset '{s}'"))
    } else if is_label_name(s) {
        Ok(Target::Label(s))
    } else {
        Err(format!(
            "invalid jump target '{s}' (expected +N, -N or a label)"
        ))
    }
}

/// A number as written.
struct Number {
    value: i128,
    hex: bool,
}

/// Parses an optionally signed decimal or `0x` hex number. Values too large
/// for an `i128` saturate, which every caller then reports as out of range.
fn parse_number(s: &str) -> Option<Number> {
    let (neg, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (hex, digits) = match rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
        Some(d) => (true, d),
        None => (false, rest),
    };
    let valid = |b: u8| {
        if hex {
            b.is_ascii_hexdigit()
        } else {
            b.is_ascii_digit()
        }
    };
    if digits.is_empty() || !digits.bytes().all(valid) {
        return None;
    }
    // The digits are valid, so the only possible error is overflow.
    let magnitude = i128::from_str_radix(digits, if hex { 16 } else { 10 }).unwrap_or(i128::MAX);
    Some(Number {
        value: if neg { -magnitude } else { magnitude },
        hex: hex && !neg,
    })
}

/// A 32-bit immediate: decimal within `i32`, hex up to `0xffffffff`.
fn parse_imm32(s: &str) -> Result<i32, String> {
    let n = parse_number(s).ok_or_else(|| format!("invalid immediate '{s}'"))?;
    let v = if n.hex {
        u32::try_from(n.value).ok().map(|u| u as i32)
    } else {
        i32::try_from(n.value).ok()
    };
    v.ok_or_else(|| {
        let rule = if n.hex {
            "hex immediates must be at most 0xffffffff"
        } else {
            "decimal immediates must fit in a signed 32-bit integer"
        };
        format!("immediate {s} out of range ({rule})")
    })
}

/// A 64-bit immediate: hex up to `u64::MAX`, decimal from `i64::MIN` to
/// `u64::MAX`.
fn parse_imm64(s: &str) -> Result<u64, String> {
    let n = parse_number(s).ok_or_else(|| format!("invalid immediate '{s}'"))?;
    let v = if n.value < 0 {
        i64::try_from(n.value).ok().map(|v| v as u64)
    } else {
        u64::try_from(n.value).ok()
    };
    v.ok_or_else(|| format!("immediate {s} out of range (must fit in 64 bits)"))
}

/// `MAP+OFF` or `MAP`: a 32-bit map fd or index and a `u32` offset.
fn parse_map_offset(s: &str) -> Result<(i32, u32), String> {
    let (map, off) = match s.rsplit_once('+') {
        Some((map, off)) if !map.is_empty() => (map, Some(off)),
        _ => (s, None),
    };
    let map = parse_imm32(map)?;
    let off = match off {
        None => 0,
        Some(off) => Some(off)
            .filter(|o| !o.starts_with(['+', '-']))
            .and_then(parse_number)
            .and_then(|n| u32::try_from(n.value).ok())
            .ok_or_else(|| {
                format!("invalid map value offset '{off}' (expected 0 to 0xffffffff)")
            })?,
    };
    Ok((map, off))
}

/// A conformance test file (`.data`), parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataFile {
    /// The `-- asm` section: its non-empty lines with comments removed,
    /// joined by newlines. Line numbers in [`DataFile::program`]'s errors
    /// count lines of this text.
    pub asm: Option<String>,
    /// The `-- raw` section as bytes (8 per slot). Takes precedence over
    /// `asm` when present.
    pub raw: Option<Vec<u8>>,
    /// The `-- mem` section: input memory (empty when absent).
    pub mem: Vec<u8>,
    /// The `-- result` section: the expected value of r0.
    pub result: Option<u64>,
    /// The `-- error` section: the expected error text (its last line).
    /// `None` when the section is absent or empty.
    pub error: Option<String>,
}

impl DataFile {
    /// The test's program: the `raw` section if present, else the assembled
    /// `asm` section.
    ///
    /// # Errors
    /// An assembly error, a `raw` section whose length is not a multiple of
    /// 8, or a file that yields no instructions (no program section, or an
    /// empty one). Assembly errors count lines of the `asm` text.
    pub fn program(&self) -> Result<Vec<Insn>, AsmError> {
        let insns = match (&self.raw, &self.asm) {
            (Some(raw), _) if raw.is_empty() => Vec::new(),
            (Some(raw), _) => isa::slots(raw).map_err(|e| AsmError::new(0, e.to_string()))?,
            (None, Some(asm)) => assemble(asm)?,
            (None, None) => {
                return Err(AsmError::new(
                    0,
                    "the file has no program (no -- asm or -- raw section)",
                ))
            }
        };
        if insns.is_empty() {
            return Err(AsmError::new(0, "the file's program has no instructions"));
        }
        Ok(insns)
    }
}

/// Sections of a `.data` file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Preamble,
    Asm,
    Result,
    Mem,
    Raw,
    Ignored,
    Error,
}

/// Which section a header line (one containing `--`) starts, by upstream's
/// substring search in upstream's order.
fn section_of(header: &str) -> Option<Section> {
    const ORDER: [(&str, Section); 7] = [
        ("asm", Section::Asm),
        ("result", Section::Result),
        ("mem", Section::Mem),
        ("raw", Section::Raw),
        ("no register offset", Section::Ignored),
        (" c", Section::Ignored),
        ("error", Section::Error),
    ];
    ORDER
        .iter()
        .find(|(key, _)| header.contains(key))
        .map(|&(_, s)| s)
}

/// Parses a conformance `.data` file, following §1 of the suite's README.
///
/// Comments (`#` to the end of the line) are removed first; a line that then
/// contains `--` starts a section; empty lines and lines before the first
/// section are ignored. See the module docs for the one difference from
/// upstream (byte-per-token `raw` sections).
///
/// # Errors
/// A header that names no known section (upstream skips such a file: the
/// error names the directive), or a malformed `raw`, `mem` or `result`
/// token. Line numbers are the file's.
pub fn parse_data_file(text: &str) -> Result<DataFile, AsmError> {
    let mut section = Section::Preamble;
    let mut asm: Option<Vec<&str>> = None;
    let mut raw: Option<Vec<(usize, &str)>> = None;
    let mut mem = Vec::new();
    let mut result: Option<(usize, &str)> = None;
    let mut error: Option<&str> = None;

    for (idx, line) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = strip_comment(line);
        if line.contains("--") {
            section = section_of(line).ok_or_else(|| {
                AsmError::new(line_no, format!("unknown directive '{}'", line.trim()))
            })?;
            match section {
                Section::Asm => {
                    asm.get_or_insert_with(Vec::new);
                }
                Section::Raw => {
                    raw.get_or_insert_with(Vec::new);
                }
                _ => {}
            }
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        match section {
            Section::Asm => asm.get_or_insert_with(Vec::new).push(trimmed),
            Section::Raw => raw.get_or_insert_with(Vec::new).push((line_no, trimmed)),
            Section::Mem => {
                for tok in trimmed.split_whitespace() {
                    mem.push(parse_hex_byte(tok).ok_or_else(|| {
                        AsmError::new(line_no, format!("invalid memory byte '{tok}'"))
                    })?);
                }
            }
            Section::Result => result = Some((line_no, trimmed)),
            Section::Error => error = Some(trimmed),
            Section::Preamble | Section::Ignored => {}
        }
    }

    let result = match result {
        None => None,
        Some((line_no, text)) => Some(
            parse_result(text)
                .ok_or_else(|| AsmError::new(line_no, format!("invalid result '{text}'")))?,
        ),
    };
    Ok(DataFile {
        asm: asm.map(|lines| lines.join("\n")),
        raw: raw.map(|lines| parse_raw(&lines)).transpose()?,
        mem,
        result,
        error: error.map(str::to_string),
    })
}

/// One or two hex digits, no prefix.
fn parse_hex_byte(tok: &str) -> Option<u8> {
    if (1..=2).contains(&tok.len()) && tok.bytes().all(|b| b.is_ascii_hexdigit()) {
        u8::from_str_radix(tok, 16).ok()
    } else {
        None
    }
}

/// A result line: hex if it contains `0x`, else unsigned decimal.
fn parse_result(text: &str) -> Option<u64> {
    match text.split_once("0x") {
        Some((before, digits)) if before.trim().is_empty() => {
            u64::from_str_radix(digits.trim(), 16).ok()
        }
        Some(_) => None,
        None => text.parse().ok(),
    }
}

/// The `raw` section's lines to bytes.
fn parse_raw(lines: &[(usize, &str)]) -> Result<Vec<u8>, AsmError> {
    let byte_layout = !lines.is_empty()
        && lines.iter().all(|(_, l)| {
            let toks: Vec<&str> = l.split_whitespace().collect();
            toks.len() == 8
                && toks
                    .iter()
                    .all(|t| t.len() == 2 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        });
    let mut out = Vec::new();
    for &(line_no, line) in lines {
        for tok in line.split_whitespace() {
            if byte_layout {
                out.push(
                    parse_hex_byte(tok).ok_or_else(|| {
                        AsmError::new(line_no, format!("invalid raw byte '{tok}'"))
                    })?,
                );
                continue;
            }
            let slot = match tok.strip_prefix("0x").or_else(|| tok.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => tok.parse::<u64>().ok(),
            }
            .ok_or_else(|| {
                AsmError::new(
                    line_no,
                    format!("invalid raw slot '{tok}' (expected a 64-bit number)"),
                )
            })?;
            out.extend_from_slice(&slot.to_le_bytes());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asm(src: &str) -> Vec<Insn> {
        assemble(src).unwrap_or_else(|e| panic!("{e}\n{src}"))
    }

    fn err(src: &str) -> AsmError {
        assemble(src).expect_err(src)
    }

    #[test]
    fn basic_encodings() {
        let p = asm("mov32 %r0, 0\nadd %r0, %r1\nadd32 %r0, -3\nexit");
        assert_eq!(
            p,
            vec![
                Insn::new(0xb4, 0, 0, 0, 0),
                Insn::new(0x0f, 0, 1, 0, 0),
                Insn::new(0x04, 0, 0, 0, -3),
                Insn::new(0x95, 0, 0, 0, 0),
            ]
        );
        assert_eq!(asm("add64 %r1, 2"), asm("add %r1, 2"));
        assert_eq!(asm("sdiv32 %r1, 2"), vec![Insn::new(0x34, 1, 0, 1, 2)]);
        assert_eq!(asm("smod %r1, %r2"), vec![Insn::new(0x9f, 1, 2, 1, 0)]);
        assert_eq!(
            asm("movsx1664 %r1, %r2"),
            vec![Insn::new(0xbf, 1, 2, 16, 0)]
        );
        assert_eq!(asm("movsx832 %r1, %r2"), vec![Insn::new(0xbc, 1, 2, 8, 0)]);
        assert_eq!(asm("be16 %r3"), vec![Insn::new(0xdc, 3, 0, 0, 16)]);
        assert_eq!(asm("swap64 %r3"), asm("bswap64 %r3"));
        assert_eq!(
            asm("ldxsh %r1, [%r2-4]"),
            vec![Insn::new(0x89, 1, 2, -4, 0)]
        );
        assert_eq!(
            asm("stdw [%r10-8], 0xffffffff"),
            vec![Insn::new(0x7a, 10, 0, -8, -1)]
        );
        assert_eq!(asm("stxb [%r1], %r2"), vec![Insn::new(0x73, 1, 2, 0, 0)]);
        assert_eq!(asm("call 5"), vec![Insn::new(0x85, 0, 0, 0, 5)]);
        assert_eq!(asm("call runtime 7"), vec![Insn::new(0x85, 0, 2, 0, 7)]);
        assert_eq!(asm("call %r2"), vec![Insn::new(0x8d, 2, 0, 0, 0)]);
        assert_eq!(
            asm("lock fetch add32 [%r10-4], %r1"),
            vec![Insn::new(0xc3, 10, 1, -4, 1)]
        );
        assert_eq!(
            asm("lock xor [%r10-8], %r1"),
            vec![Insn::new(0xdb, 10, 1, -8, 0xa0)]
        );
        assert_eq!(
            asm("lock cmpxchg [%r10-8], %r1"),
            vec![Insn::new(0xdb, 10, 1, -8, 0xf1)]
        );
        assert_eq!(
            asm("lock xchg32 [%r10-8], %r1"),
            vec![Insn::new(0xc3, 10, 1, -8, 0xe1)]
        );
    }

    #[test]
    fn labels_resolve_relative_to_next_slot() {
        let p = asm("ja end\nmov %r0, 1\nback:\nmov %r0, 2\nend:\njne %r0, 2, back\nexit");
        assert_eq!(p[0], Insn::new(0x05, 0, 0, 2, 0));
        // jne at slot 3, back = slot 2: 2 - 4 = -2.
        assert_eq!(p[3], Insn::new(0x55, 0, 0, -2, 2));
        // Label and instruction on one line; comments anywhere.
        let p = asm("# start\nl: ja l # loop\n");
        assert_eq!(p, vec![Insn::new(0x05, 0, 0, -1, 0)]);
    }

    #[test]
    fn exit_label_names_first_exit() {
        let p = asm("jeq %r1, 0, exit\nmov %r0, 1\nexit\nmov %r0, 2\nexit");
        assert_eq!(p[0].off, 1);
        // An explicit `exit:` label wins over the implicit one.
        let p = asm("jeq %r1, 0, exit\nexit\nexit:\nmov %r0, 2\nexit");
        assert_eq!(p[0].off, 1);
        assert!(err("ja exit").message.contains("undefined label 'exit'"));
    }

    #[test]
    fn lddw_takes_two_slots() {
        let p = asm("ja l\nlddw %r0, 0x1122334455667788\nl:\nexit\nja -4");
        assert_eq!(p.len(), 5);
        assert_eq!(p[0].off, 2);
        assert_eq!(
            (p[1].code, p[1].imm as u32, p[2].imm as u32),
            (0x18, 0x55667788, 0x11223344)
        );
        assert_eq!(p[4].off, -4);
        assert_eq!(asm("lddw %r1, -1")[1].imm, -1);
        assert_eq!(asm("lddw %r1, 18446744073709551615"), asm("lddw %r1, -1"));
        assert!(err("lddw %r1, 18446744073709551616")
            .message
            .contains("out of range"));
        assert!(err("lddw %r1, 0x10000000000000000")
            .message
            .contains("out of range"));
    }

    #[test]
    fn ja32_and_call_local_use_imm() {
        let p = asm("ja32 f\nexit\nf:\ncall local f\nexit");
        assert_eq!(p[0], Insn::new(0x06, 0, 0, 0, 1));
        assert_eq!(p[2], Insn::new(0x85, 0, 1, 0, -1));
    }

    #[test]
    fn pseudo_lddw_extensions() {
        let p = asm("lddw %r1, map_value 3+16\nlddw %r2, map_idx 0\nlddw %r3, func +2\nlddw %r4, map_idx_value -1");
        assert_eq!((p[0].src, p[0].imm, p[1].imm), (2, 3, 16));
        assert_eq!((p[2].src, p[2].imm), (5, 0));
        assert_eq!((p[4].src, p[4].imm), (4, 2));
        assert_eq!((p[6].src, p[6].imm, p[7].imm), (6, -1, 0));
        // A func target counts from the slot after lddw's first slot.
        assert_eq!(asm("lddw %r1, func f\nf:\nexit")[0].imm, 1);
    }

    #[test]
    fn high_registers_are_encoded_raw() {
        assert_eq!(asm("mov %r11, %r15"), vec![Insn::new(0xbf, 11, 15, 0, 0)]);
        assert_eq!(
            asm("ldxw %r12, [%r13+1]"),
            vec![Insn::new(0x61, 12, 13, 1, 0)]
        );
        assert!(err("mov %r16, 1")
            .message
            .contains("invalid register '%r16'"));
    }

    #[test]
    fn range_errors() {
        assert_eq!(asm("mov32 %r0, 2147483647")[0].imm, i32::MAX);
        assert_eq!(asm("mov32 %r0, -2147483648")[0].imm, i32::MIN);
        assert_eq!(asm("mov32 %r0, 0xffffffff")[0].imm, -1);
        let e = err("mov32 %r0, 4294967296");
        assert_eq!(e.line, 1);
        assert!(
            e.message.contains("immediate 4294967296 out of range"),
            "{e}"
        );
        assert!(err("mov32 %r0, 2147483648")
            .message
            .contains("out of range"));
        assert!(err("mov32 %r0, 0x100000000")
            .message
            .contains("out of range"));
        assert!(err("ldxb %r0, [%r1+32768]")
            .message
            .contains("out of range"));
        assert_eq!(asm("ldxb %r0, [%r1-32768]")[0].off, i16::MIN);
        assert!(err("ja +32768").message.contains("16 bits"));
        assert!(err("ja32 +2147483648").message.contains("32 bits"));
        let far = format!("ja l\n{}l:\nexit", "mov %r0, 0\n".repeat(40000));
        let e = err(&far);
        assert_eq!(e.line, 1);
        assert!(e.message.contains("label 'l' is out of range"), "{e}");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = err("mov %r0, 1\nfoo %r1");
        assert_eq!(e.to_string(), "line 2: unknown mnemonic 'foo'");
        assert!(err("ja bar").message.contains("undefined label 'bar'"));
        assert_eq!(
            err("add %r0, %r1, %r2").message,
            "wrong number of operands for add: expected 2, got 3"
        );
        assert!(err("l:\nl:\nexit").message.contains("duplicate label 'l'"));
        assert!(err("ldxb %r0, %r1").message.contains("memory operand"));
        assert!(err("lock").message.contains("operands for lock"));
        assert!(err("lock or [%r10-8]")
            .message
            .contains("operands for lock"));
        assert!(err("lock sub [%r10-8], %r1")
            .message
            .contains("atomic operation"));
        assert!(err("movsx3232 %r0, %r1")
            .message
            .contains("not an instruction"));
        assert!(err("movsx864 %r0, 1").message.contains("register"));
        assert!(err("ja 5").message.contains("jump target"));
        assert!(err("call bogus 5").message.contains("call kind"));
        assert!(err("mov %r0, 1x").message.contains("invalid immediate"));
        assert_eq!(
            err("ldxsdw %r0, [%r1]").message,
            "unknown mnemonic 'ldxsdw'"
        );
        assert!(err("stxw [%r1], 5")
            .message
            .contains("invalid register '5'"));
    }

    #[test]
    fn empty_source_is_empty_program() {
        assert_eq!(asm("  \n# nothing\n"), Vec::new());
    }

    #[test]
    fn data_file_sections() {
        let text = "# header\r\nignored before header\n-- asm\nmov %r0, 1 # c\n\nexit\n\
                    -- mem\naa bb\n 1 ff\n-- result\n0x1\n-- c\nint x;\n";
        let d = parse_data_file(text).unwrap();
        assert_eq!(d.asm.as_deref(), Some("mov %r0, 1\nexit"));
        assert_eq!(d.mem, vec![0xaa, 0xbb, 0x01, 0xff]);
        assert_eq!(d.result, Some(1));
        assert_eq!(d.error, None);
        assert_eq!(d.program().unwrap().len(), 2);

        let d = parse_data_file("-- result\n42\n-- error\nfirst\nInvalid\n").unwrap();
        assert_eq!((d.result, d.error.as_deref()), (Some(42), Some("Invalid")));
        assert!(d.program().unwrap_err().message.contains("no program"));

        let d = parse_data_file("-- asm\nexit\n-- raw\n0x95\n149\n").unwrap();
        assert_eq!(d.raw.as_deref().map(<[u8]>::len), Some(16));
        assert_eq!(d.program().unwrap(), vec![Insn::new(0x95, 0, 0, 0, 0); 2]);

        let d =
            parse_data_file("-- raw\n07 00 01 00 01 00 00 00\n95 00 00 00 00 00 00 00\n").unwrap();
        assert_eq!(d.program().unwrap()[0], Insn::new(0x07, 0, 0, 1, 1));

        let e = parse_data_file("-- asm\nexit\n-- bogus\n").unwrap_err();
        assert_eq!(e.to_string(), "line 3: unknown directive '-- bogus'");
        assert!(parse_data_file("-- mem\nzz\n").is_err());
        assert!(parse_data_file("-- result\nnope\n").is_err());
        assert!(parse_data_file("-- raw\n0xg\n").is_err());
    }
}
