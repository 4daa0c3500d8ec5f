//! The eBPF instruction set (RFC 9669): raw encoding and a typed, validated form.
//!
//! Two layers, kept apart as smoltcp keeps its wire views apart from its `Repr`s:
//!
//! * [`Insn`] is one raw 8-byte slot exactly as it sits in an object file:
//!   opcode, registers, offset and immediate, with no judgement.
//! * [`Instruction`] is a decoded, validated instruction. [`decode`] turns a
//!   slice of slots into `Instruction`s and refuses anything RFC 9669 (or
//!   Linux, for the reserved fields) does not allow: unknown opcodes, registers
//!   above r10, non-zero reserved fields, a truncated `LD_IMM64`. [`encode`]
//!   goes the other way and is its exact inverse for every valid program.
//!
//! The assembler, disassembler, verifier and both engines work on
//! `Instruction`; only the loaders and the encoder touch raw slots.

use std::fmt;

/// Size of one instruction slot in bytes.
pub const INSN_SIZE: usize = 8;

/// Instruction classes (the low three bits of the opcode).
pub mod class {
    /// Non-standard load (only `LD_IMM64` and the legacy packet loads).
    pub const LD: u8 = 0x00;
    /// Load into register.
    pub const LDX: u8 = 0x01;
    /// Store immediate.
    pub const ST: u8 = 0x02;
    /// Store register (and atomics).
    pub const STX: u8 = 0x03;
    /// 32-bit arithmetic.
    pub const ALU: u8 = 0x04;
    /// 64-bit jumps, calls, exit.
    pub const JMP: u8 = 0x05;
    /// 32-bit jumps.
    pub const JMP32: u8 = 0x06;
    /// 64-bit arithmetic.
    pub const ALU64: u8 = 0x07;
}

/// Load/store size field (bits 3-4).
pub mod size {
    /// 4 bytes.
    pub const W: u8 = 0x00;
    /// 2 bytes.
    pub const H: u8 = 0x08;
    /// 1 byte.
    pub const B: u8 = 0x10;
    /// 8 bytes.
    pub const DW: u8 = 0x18;
}

/// Load/store mode field (bits 5-7).
pub mod mode {
    /// 64-bit immediate (`LD_IMM64`).
    pub const IMM: u8 = 0x00;
    /// Legacy absolute packet load.
    pub const ABS: u8 = 0x20;
    /// Legacy indirect packet load.
    pub const IND: u8 = 0x40;
    /// Regular memory access.
    pub const MEM: u8 = 0x60;
    /// Sign-extending load.
    pub const MEMSX: u8 = 0x80;
    /// Atomic operation.
    pub const ATOMIC: u8 = 0xc0;
}

/// Source bit of ALU and JMP opcodes.
pub const SRC_REG: u8 = 0x08;

/// `src` values of `LD_IMM64` (Linux's `BPF_PSEUDO_*`).
pub mod pseudo {
    /// Plain 64-bit immediate.
    pub const IMM: u8 = 0;
    /// imm = map file descriptor (or loader map index before relocation).
    pub const MAP_FD: u8 = 1;
    /// imm = map fd, next imm = offset into the map's value.
    pub const MAP_VALUE: u8 = 2;
    /// imm = BTF id of a kernel variable.
    pub const BTF_ID: u8 = 3;
    /// imm = relative instruction offset of a function.
    pub const FUNC: u8 = 4;
    /// imm = map index.
    pub const MAP_IDX: u8 = 5;
    /// imm = map index, next imm = offset into the map's value.
    pub const MAP_IDX_VALUE: u8 = 6;
}

/// One raw 8-byte instruction slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Insn {
    /// Opcode byte.
    pub code: u8,
    /// Destination register (low nibble of byte 1).
    pub dst: u8,
    /// Source register (high nibble of byte 1).
    pub src: u8,
    /// Signed 16-bit offset.
    pub off: i16,
    /// Signed 32-bit immediate.
    pub imm: i32,
}

impl Insn {
    /// Builds a slot from its fields; `dst` and `src` are masked to 4 bits.
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst: dst & 0xf,
            src: src & 0xf,
            off,
            imm,
        }
    }

    /// Reads one slot from 8 little-endian bytes.
    pub fn from_bytes(b: [u8; 8]) -> Insn {
        Insn {
            code: b[0],
            dst: b[1] & 0xf,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Writes the slot as 8 little-endian bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        let o = self.off.to_le_bytes();
        let i = self.imm.to_le_bytes();
        [
            self.code,
            (self.dst & 0xf) | (self.src << 4),
            o[0],
            o[1],
            i[0],
            i[1],
            i[2],
            i[3],
        ]
    }

    /// The instruction class.
    pub fn class(self) -> u8 {
        self.code & 0x07
    }
}

impl fmt::Debug for Insn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Insn {{ code: {:#04x}, dst: {}, src: {}, off: {}, imm: {} }}",
            self.code, self.dst, self.src, self.off, self.imm
        )
    }
}

/// Splits a byte string into raw slots.
///
/// # Errors
/// [`DecodeError::Length`] when the length is not a multiple of 8, and
/// [`DecodeError::Empty`] when there are no slots at all.
pub fn slots(bytes: &[u8]) -> Result<Vec<Insn>, DecodeError> {
    if !bytes.len().is_multiple_of(INSN_SIZE) {
        return Err(DecodeError::Length { len: bytes.len() });
    }
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(bytes
        .chunks_exact(INSN_SIZE)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            Insn::from_bytes(b)
        })
        .collect())
}

/// Serialises slots back to bytes.
pub fn to_bytes(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(|i| i.to_bytes()).collect()
}

/// A register number, `r0` to `r10`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reg(u8);

impl Reg {
    /// Return value and helper result.
    pub const R0: Reg = Reg(0);
    /// First argument (the context on entry).
    pub const R1: Reg = Reg(1);
    /// Read-only frame pointer.
    pub const R10: Reg = Reg(10);

    /// The register with this number, if it exists.
    pub const fn new(n: u8) -> Option<Reg> {
        if n <= 10 {
            Some(Reg(n))
        } else {
            None
        }
    }

    /// The register number.
    pub const fn index(self) -> u8 {
        self.0
    }
}

impl fmt::Debug for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%r{}", self.0)
    }
}

/// Operand width of an ALU, jump or atomic instruction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Width {
    /// 32-bit: operands are the low halves, results zero-extended.
    W32,
    /// 64-bit.
    W64,
}

/// Second operand of an ALU, jump or store instruction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Source {
    /// A register.
    Reg(Reg),
    /// The 32-bit immediate (sign-extended to 64 bits for 64-bit operations).
    Imm(i32),
}

/// Binary ALU operations.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AluOp {
    /// `dst += src`
    Add,
    /// `dst -= src`
    Sub,
    /// `dst *= src`
    Mul,
    /// Unsigned `dst /= src`; division by zero gives 0.
    Div,
    /// Signed division; by zero gives 0; `MIN / -1` gives `MIN`.
    Sdiv,
    /// `dst |= src`
    Or,
    /// `dst &= src`
    And,
    /// `dst <<= src` (count masked to the width).
    Lsh,
    /// Logical `dst >>= src` (count masked).
    Rsh,
    /// Unsigned `dst %= src`; by zero leaves `dst` unchanged.
    Mod,
    /// Signed modulo; by zero leaves `dst` unchanged; `MIN % -1` gives 0.
    Smod,
    /// `dst ^= src`
    Xor,
    /// `dst = src`
    Mov,
    /// `dst = sign_extend(src, bits)`; bits is 8, 16 or 32.
    Movsx(u8),
    /// Arithmetic `dst >>= src` (count masked).
    Arsh,
}

/// Byte-order operations.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ByteOrder {
    /// To little endian (`le16/32/64`): truncate (a no-op swap on x86).
    Le,
    /// To big endian (`be16/32/64`).
    Be,
    /// Unconditional swap (`bswap16/32/64`, ALU64 class).
    Swap,
}

/// Memory access sizes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Size {
    /// 1 byte.
    B,
    /// 2 bytes.
    H,
    /// 4 bytes.
    W,
    /// 8 bytes.
    DW,
}

impl Size {
    /// Size in bytes.
    pub const fn bytes(self) -> u32 {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::DW => 8,
        }
    }

    fn from_code(code: u8) -> Size {
        match code & 0x18 {
            size::W => Size::W,
            size::H => Size::H,
            size::B => Size::B,
            _ => Size::DW,
        }
    }

    /// The size field bits of an opcode.
    pub const fn code(self) -> u8 {
        match self {
            Size::W => size::W,
            Size::H => size::H,
            Size::B => size::B,
            Size::DW => size::DW,
        }
    }
}

/// Conditional jump operations.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum JmpOp {
    /// `==`
    Eq,
    /// unsigned `>`
    Gt,
    /// unsigned `>=`
    Ge,
    /// `dst & src != 0`
    Set,
    /// `!=`
    Ne,
    /// signed `>`
    Sgt,
    /// signed `>=`
    Sge,
    /// unsigned `<`
    Lt,
    /// unsigned `<=`
    Le,
    /// signed `<`
    Slt,
    /// signed `<=`
    Sle,
}

impl JmpOp {
    /// The operation field (bits 4-7) of the opcode.
    pub const fn code(self) -> u8 {
        match self {
            JmpOp::Eq => 0x10,
            JmpOp::Gt => 0x20,
            JmpOp::Ge => 0x30,
            JmpOp::Set => 0x40,
            JmpOp::Ne => 0x50,
            JmpOp::Sgt => 0x60,
            JmpOp::Sge => 0x70,
            JmpOp::Lt => 0xa0,
            JmpOp::Le => 0xb0,
            JmpOp::Slt => 0xc0,
            JmpOp::Sle => 0xd0,
        }
    }

    fn from_code(code: u8) -> Option<JmpOp> {
        Some(match code & 0xf0 {
            0x10 => JmpOp::Eq,
            0x20 => JmpOp::Gt,
            0x30 => JmpOp::Ge,
            0x40 => JmpOp::Set,
            0x50 => JmpOp::Ne,
            0x60 => JmpOp::Sgt,
            0x70 => JmpOp::Sge,
            0xa0 => JmpOp::Lt,
            0xb0 => JmpOp::Le,
            0xc0 => JmpOp::Slt,
            0xd0 => JmpOp::Sle,
            _ => return None,
        })
    }

    /// The mnemonic (`jeq`, `jsgt`, ...), without the `32` suffix.
    pub const fn mnemonic(self) -> &'static str {
        match self {
            JmpOp::Eq => "jeq",
            JmpOp::Gt => "jgt",
            JmpOp::Ge => "jge",
            JmpOp::Set => "jset",
            JmpOp::Ne => "jne",
            JmpOp::Sgt => "jsgt",
            JmpOp::Sge => "jsge",
            JmpOp::Lt => "jlt",
            JmpOp::Le => "jle",
            JmpOp::Slt => "jslt",
            JmpOp::Sle => "jsle",
        }
    }

    /// Evaluates the condition on 64-bit operands.
    #[inline(always)]
    pub fn eval64(self, a: u64, b: u64) -> bool {
        match self {
            JmpOp::Eq => a == b,
            JmpOp::Gt => a > b,
            JmpOp::Ge => a >= b,
            JmpOp::Set => a & b != 0,
            JmpOp::Ne => a != b,
            JmpOp::Sgt => (a as i64) > (b as i64),
            JmpOp::Sge => (a as i64) >= (b as i64),
            JmpOp::Lt => a < b,
            JmpOp::Le => a <= b,
            JmpOp::Slt => (a as i64) < (b as i64),
            JmpOp::Sle => (a as i64) <= (b as i64),
        }
    }

    /// Evaluates the condition on 32-bit operands.
    #[inline(always)]
    pub fn eval32(self, a: u32, b: u32) -> bool {
        match self {
            JmpOp::Eq => a == b,
            JmpOp::Gt => a > b,
            JmpOp::Ge => a >= b,
            JmpOp::Set => a & b != 0,
            JmpOp::Ne => a != b,
            JmpOp::Sgt => (a as i32) > (b as i32),
            JmpOp::Sge => (a as i32) >= (b as i32),
            JmpOp::Lt => a < b,
            JmpOp::Le => a <= b,
            JmpOp::Slt => (a as i32) < (b as i32),
            JmpOp::Sle => (a as i32) <= (b as i32),
        }
    }
}

/// Atomic read-modify-write operations.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AtomicOp {
    /// `*p += src`
    Add,
    /// `*p |= src`
    Or,
    /// `*p &= src`
    And,
    /// `*p ^= src`
    Xor,
    /// `src = xchg(*p, src)` (always fetches).
    Xchg,
    /// `r0 = cmpxchg(*p, r0, src)` (always fetches, into r0).
    Cmpxchg,
}

impl AtomicOp {
    /// The immediate that selects this operation (without `FETCH`).
    pub const fn code(self) -> i32 {
        match self {
            AtomicOp::Add => 0x00,
            AtomicOp::Or => 0x40,
            AtomicOp::And => 0x50,
            AtomicOp::Xor => 0xa0,
            AtomicOp::Xchg => 0xe0,
            AtomicOp::Cmpxchg => 0xf0,
        }
    }
}

/// The `FETCH` flag of an atomic immediate.
pub const ATOMIC_FETCH: i32 = 0x01;

/// What an `LD_IMM64` loads.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LdImm64 {
    /// A plain 64-bit constant.
    Imm(u64),
    /// A map, by file descriptor or loader index (`BPF_PSEUDO_MAP_FD`).
    MapFd(i32),
    /// A pointer into a map's value (`BPF_PSEUDO_MAP_VALUE`).
    MapValue {
        /// Map fd or index.
        map: i32,
        /// Offset into the value.
        off: u32,
    },
    /// A kernel variable by BTF id (`BPF_PSEUDO_BTF_ID`); never supported.
    BtfId(i32),
    /// A function address by relative slot offset (`BPF_PSEUDO_FUNC`).
    Func(i32),
    /// A map by index into the program's map array (`BPF_PSEUDO_MAP_IDX`).
    MapIdx(i32),
    /// A map value by map index (`BPF_PSEUDO_MAP_IDX_VALUE`).
    MapIdxValue {
        /// Map index.
        map: i32,
        /// Offset into the value.
        off: u32,
    },
}

/// Targets of a `call` instruction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CallTarget {
    /// A helper function by Linux helper number (`src = 0`).
    Helper(i32),
    /// A local (bpf-to-bpf) function, slot offset relative to the next slot.
    Local(i32),
    /// A kernel function by BTF id (`src = 2`); never supported by Sluice.
    Kfunc(i32),
}

/// A decoded, validated instruction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Instruction {
    /// Binary ALU operation.
    Alu {
        /// Operand width.
        width: Width,
        /// Operation.
        op: AluOp,
        /// Destination (and first operand).
        dst: Reg,
        /// Second operand.
        src: Source,
    },
    /// `dst = -dst`.
    Neg {
        /// Operand width.
        width: Width,
        /// Register.
        dst: Reg,
    },
    /// Byte order conversion of the low `bits` (16, 32 or 64) of `dst`.
    Endian {
        /// Conversion.
        order: ByteOrder,
        /// 16, 32 or 64.
        bits: u8,
        /// Register.
        dst: Reg,
    },
    /// `dst = *(size *)(src + off)`, optionally sign-extended.
    Load {
        /// Access size.
        size: Size,
        /// Sign-extend (`LDXS*`, `MEMSX` mode).
        signed: bool,
        /// Destination register.
        dst: Reg,
        /// Base register.
        src: Reg,
        /// Offset from the base.
        off: i16,
    },
    /// `*(size *)(dst + off) = src`.
    Store {
        /// Access size.
        size: Size,
        /// Base register.
        dst: Reg,
        /// Offset from the base.
        off: i16,
        /// Value: a register (`STX`) or an immediate (`ST`).
        src: Source,
    },
    /// Atomic read-modify-write on `*(width *)(dst + off)`.
    Atomic {
        /// 32 or 64 bits.
        width: Width,
        /// Operation.
        op: AtomicOp,
        /// Whether the old value is returned in `src` (always for xchg/cmpxchg).
        fetch: bool,
        /// Base register.
        dst: Reg,
        /// Operand register.
        src: Reg,
        /// Offset from the base.
        off: i16,
    },
    /// Two-slot 64-bit load (`lddw`).
    LdImm64 {
        /// Destination register.
        dst: Reg,
        /// What is loaded.
        value: LdImm64,
    },
    /// Unconditional jump, slot offset relative to the next slot (`ja`, or
    /// `gotol`/`ja32` with a 32-bit offset).
    Ja {
        /// Relative target.
        off: i32,
        /// `true` for the JMP32-class `gotol` encoding (offset in imm).
        long: bool,
    },
    /// Conditional jump.
    Jmp {
        /// Comparison width.
        width: Width,
        /// Comparison.
        op: JmpOp,
        /// First operand.
        dst: Reg,
        /// Second operand.
        src: Source,
        /// Relative target.
        off: i16,
    },
    /// Call a helper, a local function or a kfunc.
    Call(CallTarget),
    /// Indirect call through a register (`callx`): the register holds a
    /// helper number.
    Callx {
        /// Register holding the target.
        reg: Reg,
    },
    /// Return from the current function (or the program).
    Exit,
}

impl Instruction {
    /// Number of slots the instruction occupies (2 for `LD_IMM64`).
    pub const fn slots(&self) -> usize {
        match self {
            Instruction::LdImm64 { .. } => 2,
            _ => 1,
        }
    }
}

/// Why a program's bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The program length is not a multiple of 8.
    #[error("program length {len} is not a multiple of 8 bytes")]
    Length {
        /// Length in bytes.
        len: usize,
    },
    /// The program has no instructions.
    #[error("program has no instructions")]
    Empty,
    /// The opcode is not defined.
    #[error("insn {pc}: unknown opcode {code:#04x}")]
    UnknownOpcode {
        /// Slot index.
        pc: usize,
        /// Opcode.
        code: u8,
    },
    /// A register number above 10.
    #[error("insn {pc}: invalid register r{reg}")]
    BadRegister {
        /// Slot index.
        pc: usize,
        /// Register number.
        reg: u8,
    },
    /// A field the instruction does not use is not zero.
    #[error("insn {pc} (opcode {code:#04x}): reserved field {field} must be 0, is {value}")]
    Reserved {
        /// Slot index.
        pc: usize,
        /// Opcode.
        code: u8,
        /// Field name.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// A field holds a value the instruction does not define.
    #[error("insn {pc} (opcode {code:#04x}): invalid {field} {value}")]
    BadField {
        /// Slot index.
        pc: usize,
        /// Opcode.
        code: u8,
        /// Field name.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// `LD_IMM64` in the last slot, or its second slot malformed.
    #[error("insn {pc}: incomplete lddw (second slot missing or not zero-filled)")]
    IncompleteLdImm64 {
        /// Slot index.
        pc: usize,
    },
    /// Legacy `BPF_ABS`/`BPF_IND` packet loads (socket filters only).
    #[error(
        "insn {pc}: legacy packet load (BPF_ABS/BPF_IND, opcode {code:#04x}) is not supported"
    )]
    LegacyPacketLoad {
        /// Slot index.
        pc: usize,
        /// Opcode.
        code: u8,
    },
}

fn reg(pc: usize, n: u8) -> Result<Reg, DecodeError> {
    Reg::new(n).ok_or(DecodeError::BadRegister { pc, reg: n })
}

fn zero(pc: usize, i: Insn, field: &'static str, value: i64) -> Result<(), DecodeError> {
    if value == 0 {
        Ok(())
    } else {
        Err(DecodeError::Reserved {
            pc,
            code: i.code,
            field,
            value,
        })
    }
}

/// Decodes the instruction at slot `pc` of `insns`.
///
/// # Errors
/// Any [`DecodeError`] naming `pc`.
pub fn decode_one(insns: &[Insn], pc: usize) -> Result<Instruction, DecodeError> {
    let Some(&i) = insns.get(pc) else {
        return Err(DecodeError::Empty);
    };
    let code = i.code;
    let unknown = || DecodeError::UnknownOpcode { pc, code };
    match i.class() {
        class::ALU | class::ALU64 => decode_alu(i, pc),
        class::JMP | class::JMP32 => decode_jmp(i, pc),
        class::LDX => {
            let signed = match code & 0xe0 {
                mode::MEM => false,
                mode::MEMSX if code & 0x18 != size::DW => true,
                _ => return Err(unknown()),
            };
            zero(pc, i, "imm", i.imm.into())?;
            Ok(Instruction::Load {
                size: Size::from_code(code),
                signed,
                dst: reg(pc, i.dst)?,
                src: reg(pc, i.src)?,
                off: i.off,
            })
        }
        class::ST => {
            if code & 0xe0 != mode::MEM {
                return Err(unknown());
            }
            zero(pc, i, "src", i.src.into())?;
            Ok(Instruction::Store {
                size: Size::from_code(code),
                dst: reg(pc, i.dst)?,
                off: i.off,
                src: Source::Imm(i.imm),
            })
        }
        class::STX => match code & 0xe0 {
            mode::MEM => {
                zero(pc, i, "imm", i.imm.into())?;
                Ok(Instruction::Store {
                    size: Size::from_code(code),
                    dst: reg(pc, i.dst)?,
                    off: i.off,
                    src: Source::Reg(reg(pc, i.src)?),
                })
            }
            mode::ATOMIC => {
                let width = match code & 0x18 {
                    size::W => Width::W32,
                    size::DW => Width::W64,
                    _ => return Err(unknown()),
                };
                let fetch = i.imm & ATOMIC_FETCH != 0;
                let op = match i.imm & !ATOMIC_FETCH {
                    0x00 => AtomicOp::Add,
                    0x40 => AtomicOp::Or,
                    0x50 => AtomicOp::And,
                    0xa0 => AtomicOp::Xor,
                    0xe0 if fetch => AtomicOp::Xchg,
                    0xf0 if fetch => AtomicOp::Cmpxchg,
                    _ => {
                        return Err(DecodeError::BadField {
                            pc,
                            code,
                            field: "atomic operation",
                            value: i.imm.into(),
                        })
                    }
                };
                Ok(Instruction::Atomic {
                    width,
                    op,
                    fetch,
                    dst: reg(pc, i.dst)?,
                    src: reg(pc, i.src)?,
                    off: i.off,
                })
            }
            _ => Err(unknown()),
        },
        _ => match code {
            0x18 => decode_lddw(insns, pc),
            0x20 | 0x28 | 0x30 | 0x40 | 0x48 | 0x50 => {
                Err(DecodeError::LegacyPacketLoad { pc, code })
            }
            _ => Err(unknown()),
        },
    }
}

fn decode_lddw(insns: &[Insn], pc: usize) -> Result<Instruction, DecodeError> {
    let i = insns[pc];
    let Some(&next) = insns.get(pc + 1) else {
        return Err(DecodeError::IncompleteLdImm64 { pc });
    };
    if next.code != 0 || next.dst != 0 || next.src != 0 || next.off != 0 {
        return Err(DecodeError::IncompleteLdImm64 { pc });
    }
    zero(pc, i, "offset", i.off.into())?;
    let dst = reg(pc, i.dst)?;
    let lo = i.imm as u32 as u64;
    let hi = next.imm as u32 as u64;
    let must_be_zero_hi = |v: LdImm64| -> Result<Instruction, DecodeError> {
        if next.imm != 0 {
            return Err(DecodeError::Reserved {
                pc,
                code: i.code,
                field: "second imm",
                value: next.imm.into(),
            });
        }
        Ok(Instruction::LdImm64 { dst, value: v })
    };
    match i.src {
        pseudo::IMM => Ok(Instruction::LdImm64 {
            dst,
            value: LdImm64::Imm(lo | hi << 32),
        }),
        pseudo::MAP_FD => must_be_zero_hi(LdImm64::MapFd(i.imm)),
        pseudo::MAP_VALUE => Ok(Instruction::LdImm64 {
            dst,
            value: LdImm64::MapValue {
                map: i.imm,
                off: next.imm as u32,
            },
        }),
        pseudo::BTF_ID => must_be_zero_hi(LdImm64::BtfId(i.imm)),
        pseudo::FUNC => must_be_zero_hi(LdImm64::Func(i.imm)),
        pseudo::MAP_IDX => must_be_zero_hi(LdImm64::MapIdx(i.imm)),
        pseudo::MAP_IDX_VALUE => Ok(Instruction::LdImm64 {
            dst,
            value: LdImm64::MapIdxValue {
                map: i.imm,
                off: next.imm as u32,
            },
        }),
        s => Err(DecodeError::BadField {
            pc,
            code: i.code,
            field: "lddw src",
            value: s.into(),
        }),
    }
}

fn decode_alu(i: Insn, pc: usize) -> Result<Instruction, DecodeError> {
    let code = i.code;
    let width = if i.class() == class::ALU64 {
        Width::W64
    } else {
        Width::W32
    };
    let dst = reg(pc, i.dst)?;
    let is_reg = code & SRC_REG != 0;
    let opbits = code & 0xf0;
    // Byte swaps: the source bit selects the byte order, imm the width.
    if opbits == 0xd0 {
        let order = match (width, is_reg) {
            (Width::W32, false) => ByteOrder::Le,
            (Width::W32, true) => ByteOrder::Be,
            (Width::W64, false) => ByteOrder::Swap,
            (Width::W64, true) => return Err(DecodeError::UnknownOpcode { pc, code }),
        };
        zero(pc, i, "src", i.src.into())?;
        zero(pc, i, "offset", i.off.into())?;
        if !matches!(i.imm, 16 | 32 | 64) {
            return Err(DecodeError::BadField {
                pc,
                code,
                field: "swap width",
                value: i.imm.into(),
            });
        }
        return Ok(Instruction::Endian {
            order,
            bits: i.imm as u8,
            dst,
        });
    }
    if opbits == 0x80 {
        if is_reg {
            return Err(DecodeError::UnknownOpcode { pc, code });
        }
        zero(pc, i, "src", i.src.into())?;
        zero(pc, i, "offset", i.off.into())?;
        zero(pc, i, "imm", i.imm.into())?;
        return Ok(Instruction::Neg { width, dst });
    }
    let signed_off = |op_plain: AluOp, op_signed: AluOp| match i.off {
        0 => Ok(op_plain),
        1 => Ok(op_signed),
        v => Err(DecodeError::BadField {
            pc,
            code,
            field: "offset",
            value: v.into(),
        }),
    };
    let op = match opbits {
        0x00 => AluOp::Add,
        0x10 => AluOp::Sub,
        0x20 => AluOp::Mul,
        0x30 => signed_off(AluOp::Div, AluOp::Sdiv)?,
        0x40 => AluOp::Or,
        0x50 => AluOp::And,
        0x60 => AluOp::Lsh,
        0x70 => AluOp::Rsh,
        0x90 => signed_off(AluOp::Mod, AluOp::Smod)?,
        0xa0 => AluOp::Xor,
        0xb0 => match (i.off, width, is_reg) {
            (0, _, _) => AluOp::Mov,
            (8 | 16, _, true) | (32, Width::W64, true) => AluOp::Movsx(i.off as u8),
            (v, _, _) => {
                return Err(DecodeError::BadField {
                    pc,
                    code,
                    field: "offset",
                    value: v.into(),
                })
            }
        },
        0xc0 => AluOp::Arsh,
        _ => return Err(DecodeError::UnknownOpcode { pc, code }),
    };
    if !matches!(op, AluOp::Sdiv | AluOp::Smod | AluOp::Movsx(_)) {
        zero(pc, i, "offset", i.off.into())?;
    }
    let src = if is_reg {
        zero(pc, i, "imm", i.imm.into())?;
        Source::Reg(reg(pc, i.src)?)
    } else {
        zero(pc, i, "src", i.src.into())?;
        Source::Imm(i.imm)
    };
    Ok(Instruction::Alu {
        width,
        op,
        dst,
        src,
    })
}

fn decode_jmp(i: Insn, pc: usize) -> Result<Instruction, DecodeError> {
    let code = i.code;
    let width = if i.class() == class::JMP {
        Width::W64
    } else {
        Width::W32
    };
    let is_reg = code & SRC_REG != 0;
    match (code & 0xf0, width) {
        (0x00, _) => {
            if is_reg {
                return Err(DecodeError::UnknownOpcode { pc, code });
            }
            zero(pc, i, "dst", i.dst.into())?;
            zero(pc, i, "src", i.src.into())?;
            match width {
                Width::W64 => {
                    zero(pc, i, "imm", i.imm.into())?;
                    Ok(Instruction::Ja {
                        off: i.off.into(),
                        long: false,
                    })
                }
                Width::W32 => {
                    zero(pc, i, "offset", i.off.into())?;
                    Ok(Instruction::Ja {
                        off: i.imm,
                        long: true,
                    })
                }
            }
        }
        (0x80, Width::W64) => {
            zero(pc, i, "offset", i.off.into())?;
            if is_reg {
                // callx: LLVM puts the register in dst.
                zero(pc, i, "src", i.src.into())?;
                zero(pc, i, "imm", i.imm.into())?;
                return Ok(Instruction::Callx {
                    reg: reg(pc, i.dst)?,
                });
            }
            zero(pc, i, "dst", i.dst.into())?;
            let target = match i.src {
                0 => CallTarget::Helper(i.imm),
                1 => CallTarget::Local(i.imm),
                2 => CallTarget::Kfunc(i.imm),
                s => {
                    return Err(DecodeError::BadField {
                        pc,
                        code,
                        field: "call src",
                        value: s.into(),
                    })
                }
            };
            Ok(Instruction::Call(target))
        }
        (0x90, Width::W64) => {
            if is_reg {
                return Err(DecodeError::UnknownOpcode { pc, code });
            }
            zero(pc, i, "dst", i.dst.into())?;
            zero(pc, i, "src", i.src.into())?;
            zero(pc, i, "offset", i.off.into())?;
            zero(pc, i, "imm", i.imm.into())?;
            Ok(Instruction::Exit)
        }
        (bits, _) => {
            let op = JmpOp::from_code(bits).ok_or(DecodeError::UnknownOpcode { pc, code })?;
            let dst = reg(pc, i.dst)?;
            let src = if is_reg {
                zero(pc, i, "imm", i.imm.into())?;
                Source::Reg(reg(pc, i.src)?)
            } else {
                zero(pc, i, "src", i.src.into())?;
                Source::Imm(i.imm)
            };
            Ok(Instruction::Jmp {
                width,
                op,
                dst,
                src,
                off: i.off,
            })
        }
    }
}

/// Decodes a whole program. The result has one entry per instruction (not
/// per slot): each with the slot index it starts at.
///
/// # Errors
/// The first [`DecodeError`] in slot order.
pub fn decode(insns: &[Insn]) -> Result<Vec<(usize, Instruction)>, DecodeError> {
    if insns.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut out = Vec::with_capacity(insns.len());
    let mut pc = 0;
    while pc < insns.len() {
        let ins = decode_one(insns, pc)?;
        out.push((pc, ins));
        pc += ins.slots();
    }
    Ok(out)
}

fn alu_code(op: AluOp) -> (u8, i16) {
    match op {
        AluOp::Add => (0x00, 0),
        AluOp::Sub => (0x10, 0),
        AluOp::Mul => (0x20, 0),
        AluOp::Div => (0x30, 0),
        AluOp::Sdiv => (0x30, 1),
        AluOp::Or => (0x40, 0),
        AluOp::And => (0x50, 0),
        AluOp::Lsh => (0x60, 0),
        AluOp::Rsh => (0x70, 0),
        AluOp::Mod => (0x90, 0),
        AluOp::Smod => (0x90, 1),
        AluOp::Xor => (0xa0, 0),
        AluOp::Mov => (0xb0, 0),
        AluOp::Movsx(bits) => (0xb0, bits as i16),
        AluOp::Arsh => (0xc0, 0),
    }
}

fn width_class(w: Width, c32: u8, c64: u8) -> u8 {
    match w {
        Width::W32 => c32,
        Width::W64 => c64,
    }
}

/// Encodes one instruction into one or two slots (appended to `out`).
///
/// The instruction must be one [`decode`] can produce: a short `Ja` offset
/// that fits in 16 bits, `Xchg`/`Cmpxchg` with `fetch`, `Movsx` from a
/// register with a width the class allows, byte swaps of 16, 32 or 64 bits.
/// Anything else encodes to slots that `decode` refuses (debug builds
/// assert).
pub fn encode_into(ins: &Instruction, out: &mut Vec<Insn>) {
    let r = |r: Reg| r.index();
    match *ins {
        Instruction::Alu {
            width,
            op,
            dst,
            src,
        } => {
            let (opc, off) = alu_code(op);
            let cls = width_class(width, class::ALU, class::ALU64);
            match src {
                Source::Reg(s) => out.push(Insn::new(opc | cls | SRC_REG, r(dst), r(s), off, 0)),
                Source::Imm(imm) => out.push(Insn::new(opc | cls, r(dst), 0, off, imm)),
            }
        }
        Instruction::Neg { width, dst } => out.push(Insn::new(
            0x80 | width_class(width, class::ALU, class::ALU64),
            r(dst),
            0,
            0,
            0,
        )),
        Instruction::Endian { order, bits, dst } => {
            let code = match order {
                ByteOrder::Le => 0xd4,
                ByteOrder::Be => 0xdc,
                ByteOrder::Swap => 0xd7,
            };
            out.push(Insn::new(code, r(dst), 0, 0, bits.into()))
        }
        Instruction::Load {
            size,
            signed,
            dst,
            src,
            off,
        } => {
            let m = if signed { mode::MEMSX } else { mode::MEM };
            out.push(Insn::new(
                m | size.code() | class::LDX,
                r(dst),
                r(src),
                off,
                0,
            ))
        }
        Instruction::Store {
            size,
            dst,
            off,
            src,
        } => match src {
            Source::Reg(s) => out.push(Insn::new(
                mode::MEM | size.code() | class::STX,
                r(dst),
                r(s),
                off,
                0,
            )),
            Source::Imm(imm) => out.push(Insn::new(
                mode::MEM | size.code() | class::ST,
                r(dst),
                0,
                off,
                imm,
            )),
        },
        Instruction::Atomic {
            width,
            op,
            fetch,
            dst,
            src,
            off,
        } => {
            let sz = width_class(width, size::W, size::DW);
            let imm = op.code() | if fetch { ATOMIC_FETCH } else { 0 };
            out.push(Insn::new(
                mode::ATOMIC | sz | class::STX,
                r(dst),
                r(src),
                off,
                imm,
            ))
        }
        Instruction::LdImm64 { dst, value } => {
            let (src, lo, hi) = match value {
                LdImm64::Imm(v) => (pseudo::IMM, v as u32 as i32, (v >> 32) as u32 as i32),
                LdImm64::MapFd(fd) => (pseudo::MAP_FD, fd, 0),
                LdImm64::MapValue { map, off } => (pseudo::MAP_VALUE, map, off as i32),
                LdImm64::BtfId(id) => (pseudo::BTF_ID, id, 0),
                LdImm64::Func(o) => (pseudo::FUNC, o, 0),
                LdImm64::MapIdx(m) => (pseudo::MAP_IDX, m, 0),
                LdImm64::MapIdxValue { map, off } => (pseudo::MAP_IDX_VALUE, map, off as i32),
            };
            out.push(Insn::new(0x18, r(dst), src, 0, lo));
            out.push(Insn::new(0, 0, 0, 0, hi));
        }
        Instruction::Ja { off, long } => {
            debug_assert!(
                long || i16::try_from(off).is_ok(),
                "short ja offset {off} overflows"
            );
            if long {
                out.push(Insn::new(class::JMP32, 0, 0, 0, off))
            } else {
                out.push(Insn::new(class::JMP, 0, 0, off as i16, 0))
            }
        }
        Instruction::Jmp {
            width,
            op,
            dst,
            src,
            off,
        } => {
            let cls = width_class(width, class::JMP32, class::JMP);
            match src {
                Source::Reg(s) => {
                    out.push(Insn::new(op.code() | cls | SRC_REG, r(dst), r(s), off, 0))
                }
                Source::Imm(imm) => out.push(Insn::new(op.code() | cls, r(dst), 0, off, imm)),
            }
        }
        Instruction::Call(t) => {
            let (src, imm) = match t {
                CallTarget::Helper(n) => (0, n),
                CallTarget::Local(o) => (1, o),
                CallTarget::Kfunc(id) => (2, id),
            };
            out.push(Insn::new(0x85, 0, src, 0, imm))
        }
        Instruction::Callx { reg } => out.push(Insn::new(0x8d, r(reg), 0, 0, 0)),
        Instruction::Exit => out.push(Insn::new(0x95, 0, 0, 0, 0)),
    }
}

/// Encodes a sequence of instructions.
pub fn encode(program: &[Instruction]) -> Vec<Insn> {
    let mut out = Vec::with_capacity(program.len() + 4);
    for i in program {
        encode_into(i, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_roundtrip() {
        let b = [0x18, 0x21, 0xfe, 0xff, 0x78, 0x56, 0x34, 0x12];
        let i = Insn::from_bytes(b);
        assert_eq!(
            (i.code, i.dst, i.src, i.off, i.imm),
            (0x18, 1, 2, -2, 0x12345678)
        );
        assert_eq!(i.to_bytes(), b);
    }

    #[test]
    fn every_opcode_byte_decodes_or_is_refused_and_roundtrips() {
        // Exhaustive over the opcode byte with a spread of other fields: a
        // decoded instruction must re-encode to the very same slots.
        for code in 0..=255u8 {
            for &(dst, src, off, imm) in &[
                (0u8, 0u8, 0i16, 0i32),
                (1, 2, 0, 0),
                (3, 0, 0, 16),
                (3, 0, 0, 32),
                (3, 0, 0, 64),
                (1, 2, 1, 0),
                (1, 2, 8, 0),
                (1, 2, 32, 0),
                (4, 5, -3, 7),
                (0, 0, 0, 0x01),
                (0, 0, 0, 0xe1),
                (0, 0, 0, 0xf1),
            ] {
                let slots = [
                    Insn::new(code, dst, src, off, imm),
                    Insn::new(0, 0, 0, 0, 9),
                ];
                if let Ok(ins) = decode_one(&slots, 0) {
                    let mut out = Vec::new();
                    encode_into(&ins, &mut out);
                    assert_eq!(&out[..], &slots[..out.len()], "{ins:?}");
                }
            }
        }
    }

    #[test]
    fn reserved_fields_refused() {
        // add64 imm with a non-zero offset
        let e = decode(&[Insn::new(0x07, 0, 0, 1, 1), Insn::new(0x95, 0, 0, 0, 0)]).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::Reserved {
                    field: "offset",
                    ..
                }
            ),
            "{e}"
        );
        // exit with a non-zero dst
        let e = decode(&[Insn::new(0x95, 1, 0, 0, 0)]).unwrap_err();
        assert!(
            matches!(e, DecodeError::Reserved { field: "dst", .. }),
            "{e}"
        );
        // lddw in the last slot
        let e = decode(&[Insn::new(0x18, 0, 0, 0, 0)]).unwrap_err();
        assert_eq!(e, DecodeError::IncompleteLdImm64 { pc: 0 });
        // r11
        let e = decode(&[Insn::new(0xb7, 11, 0, 0, 0)]).unwrap_err();
        assert_eq!(e, DecodeError::BadRegister { pc: 0, reg: 11 });
        // movsx32 with 32-bit source is not defined
        let e = decode(&[Insn::new(0xbc, 1, 2, 32, 0)]).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::BadField {
                    field: "offset",
                    ..
                }
            ),
            "{e}"
        );
    }
}
