//! A loaded program: decoded once, checked for structure, lowered into the
//! interpreter's internal form.
//!
//! Loading does all the work that does not depend on a run: every slot is
//! decoded and validated ([`crate::isa::decode`]), jump and call targets are
//! resolved to absolute slot indices and checked to land on an instruction
//! (never past the end, never in the second half of an `LD_IMM64`), the last
//! instruction must not fall through, helpers are looked up in the registry
//! once, and every instruction becomes a 16-byte [`Slot`] whose operation
//! already encodes width, operand kind and sign extension. The interpreter
//! then never decodes or validates anything while it runs.

use std::sync::Arc;

use crate::helpers::{id as helper_id, HelperFn, Registry};
use crate::interp::ctx::MAP_HANDLE_BASE;
use crate::interp::mem::Region;
use crate::interp::DYN_REGIONS;
use crate::isa::{
    self, AluOp, AtomicOp, ByteOrder, CallTarget, DecodeError, Insn, Instruction, JmpOp, LdImm64,
    Size, Source, Width,
};
use crate::maps::{flags, Map, MapType};
use crate::native::native_ctx_field;
use crate::verifier::{self, ProgKind, Verified, VerifyError, VerifyOptions};

/// Largest program accepted, in slots (Linux's `BPF_COMPLEXITY_LIMIT_INSNS`).
pub const MAX_INSNS: usize = 1_000_000;

/// Why a program cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a valid instruction sequence.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// More than [`MAX_INSNS`] slots.
    #[error("program has {len} instructions, the limit is {MAX_INSNS}")]
    TooLarge {
        /// Slots in the program.
        len: usize,
    },
    /// A jump or call lands outside the program.
    #[error("insn {pc}: jump out of range to {target}")]
    JumpOutOfRange {
        /// Jumping instruction.
        pc: usize,
        /// Target slot (may be negative).
        target: i64,
    },
    /// A jump or call lands on the second slot of an `LD_IMM64`.
    #[error("insn {pc}: jump into the middle of ldimm64 at {target}")]
    JumpIntoLdImm64 {
        /// Jumping instruction.
        pc: usize,
        /// Target slot.
        target: usize,
    },
    /// The last instruction would fall through past the end.
    #[error("insn {pc}: last instruction is not an exit or an unconditional jump")]
    FallsOffEnd {
        /// The last instruction.
        pc: usize,
    },
    /// A call to a helper the program type does not offer.
    #[error("insn {pc}: unknown helper {id}")]
    UnknownHelper {
        /// Calling instruction.
        pc: usize,
        /// Helper number.
        id: i32,
    },
    /// A map reference to an index the program was not given.
    #[error("insn {pc}: map index {index} does not exist")]
    BadMapIndex {
        /// The `LD_IMM64`.
        pc: usize,
        /// The index.
        index: i32,
    },
    /// A map value reference outside the value, or into a map that is not
    /// an array (global data is).
    #[error("insn {pc}: map value reference to offset {off} of map {map} is invalid")]
    BadMapValue {
        /// The `LD_IMM64`.
        pc: usize,
        /// The map.
        map: String,
        /// Offset into the value.
        off: u32,
    },
    /// The verifier refused the program; the error explains where and why.
    #[error("{0}")]
    Verify(Box<VerifyError>),
    /// A valid instruction Sluice does not support in this context.
    #[error("insn {pc}: {feature} is not supported")]
    Unsupported {
        /// The instruction.
        pc: usize,
        /// What it needs.
        feature: &'static str,
    },
}

/// Internal operations: one per (operation, width, operand kind), so the
/// interpreter's dispatch needs no second decision.
#[allow(missing_docs)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Op {
    Add64I,
    Sub64I,
    Mul64I,
    Div64I,
    Sdiv64I,
    Or64I,
    And64I,
    Lsh64I,
    Rsh64I,
    Mod64I,
    Smod64I,
    Xor64I,
    Mov64I,
    Arsh64I,
    Add64R,
    Sub64R,
    Mul64R,
    Div64R,
    Sdiv64R,
    Or64R,
    And64R,
    Lsh64R,
    Rsh64R,
    Mod64R,
    Smod64R,
    Xor64R,
    Mov64R,
    Arsh64R,
    Add32I,
    Sub32I,
    Mul32I,
    Div32I,
    Sdiv32I,
    Or32I,
    And32I,
    Lsh32I,
    Rsh32I,
    Mod32I,
    Smod32I,
    Xor32I,
    Mov32I,
    Arsh32I,
    Add32R,
    Sub32R,
    Mul32R,
    Div32R,
    Sdiv32R,
    Or32R,
    And32R,
    Lsh32R,
    Rsh32R,
    Mod32R,
    Smod32R,
    Xor32R,
    Mov32R,
    Arsh32R,
    Movsx8To64,
    Movsx16To64,
    Movsx32To64,
    Movsx8To32,
    Movsx16To32,
    Neg64,
    Neg32,
    Zext16,
    Zext32,
    Bswap16,
    Bswap32,
    Bswap64,
    Ldxb,
    Ldxh,
    Ldxw,
    Ldxdw,
    Ldxsb,
    Ldxsh,
    Ldxsw,
    Stb,
    Sth,
    Stw,
    Stdw,
    Stxb,
    Stxh,
    Stxw,
    Stxdw,
    /// imm = atomic kind (`isa::AtomicOp` code | fetch)
    Atomic32,
    Atomic64,
    LdImm64,
    Ja,
    Jeq64I,
    Jgt64I,
    Jge64I,
    Jset64I,
    Jne64I,
    Jsgt64I,
    Jsge64I,
    Jlt64I,
    Jle64I,
    Jslt64I,
    Jsle64I,
    Jeq64R,
    Jgt64R,
    Jge64R,
    Jset64R,
    Jne64R,
    Jsgt64R,
    Jsge64R,
    Jlt64R,
    Jle64R,
    Jslt64R,
    Jsle64R,
    Jeq32I,
    Jgt32I,
    Jge32I,
    Jset32I,
    Jne32I,
    Jsgt32I,
    Jsge32I,
    Jlt32I,
    Jle32I,
    Jslt32I,
    Jsle32I,
    Jeq32R,
    Jgt32R,
    Jge32R,
    Jset32R,
    Jne32R,
    Jsgt32R,
    Jsge32R,
    Jlt32R,
    Jle32R,
    Jslt32R,
    Jsle32R,
    /// imm = index into `Program::helpers`
    Call,
    /// `bpf_tail_call`, handled by the interpreter itself.
    TailCall,
    /// off = target slot
    CallLocal,
    Callx,
    Exit,
    /// Second slot of an `LD_IMM64`; never executed.
    Filler,
    /// Fused `mov dst, src; add dst, imm; jcc dst, rZ, target` (the
    /// `data + K > data_end` bounds check): the jump is read from slot
    /// pc+2, which keeps its own op for jumps that land on it.
    MovAddJcc,
    /// Fused `add dst, imm; jcc dst, imm2, target` (a loop's tail): the jump
    /// is read from slot pc+1.
    AddJccImm,
    /// Fused `ldx{b,h,w,dw} dst, [src+off]; stx [base+off2], dst` of the
    /// same size (clang's byte-by-byte copies): imm holds the size, the
    /// store is read from slot pc+1.
    LdxStx,
}

/// One lowered instruction.
///
/// `off` is the memory offset for loads and stores and the absolute target
/// slot for jumps and local calls; `imm` is the immediate sign-extended to
/// 64 bits (32-bit operations use its low half).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub op: Op,
    pub dst: u8,
    pub src: u8,
    pub off: i32,
    pub imm: u64,
}

/// A program ready to run.
#[derive(Clone)]
pub struct Program {
    insns: Vec<Insn>,
    pub(crate) slots: Box<[Slot]>,
    pub(crate) helpers: Box<[(u32, HelperFn)]>,
    /// Maps the program references, by loader index.
    pub(crate) maps: Box<[Arc<Map>]>,
    /// The value area of each map, at region index `DYN_REGIONS + i`.
    pub(crate) map_regions: Box<[Region]>,
    /// Helper table by number, present only when the program uses `callx`.
    pub(crate) callx: Option<Box<[Option<HelperFn>]>>,
    /// The verifier's result, for programs loaded verified.
    verified: Option<Verified>,
    /// Instructions for native engines (context loads rewritten).
    native_insns: Option<Vec<Insn>>,
    /// Native lowering, for the unchecked interpreter.
    pub(crate) native_slots: Option<Box<[Slot]>>,
    /// Machine code, for verified programs on x86-64.
    #[cfg(all(feature = "jit", target_arch = "x86_64"))]
    pub(crate) jit: Option<Arc<crate::jit::JitProgram>>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("insns", &self.insns.len())
            .finish()
    }
}

impl Program {
    /// Loads a program from raw bytecode (8 bytes a slot).
    ///
    /// # Errors
    /// A [`LoadError`] naming the first offending instruction.
    pub fn from_bytes(bytes: &[u8], helpers: &Registry) -> Result<Program, LoadError> {
        Program::load(isa::slots(bytes)?, helpers)
    }

    /// Loads a program from raw slots.
    ///
    /// # Errors
    /// A [`LoadError`] naming the first offending instruction.
    pub fn load(insns: Vec<Insn>, helpers: &Registry) -> Result<Program, LoadError> {
        Program::load_with_maps(insns, helpers, Vec::new())
    }

    /// Loads a program whose `LD_IMM64` map references (`BPF_PSEUDO_MAP_IDX`
    /// and `BPF_PSEUDO_MAP_IDX_VALUE`, as the ELF loader emits them) index
    /// into `maps`.
    ///
    /// # Errors
    /// A [`LoadError`] naming the first offending instruction.
    pub fn load_with_maps(
        insns: Vec<Insn>,
        helpers: &Registry,
        maps: Vec<Arc<Map>>,
    ) -> Result<Program, LoadError> {
        let lowered = lower(&insns, helpers, &maps, false)?;
        Ok(Program::assemble(insns, lowered, maps, None, None))
    }

    /// Verifies a program (see [`crate::verifier`]) and loads it for both
    /// engines: the checked interpreter, and the native form — context loads
    /// rewritten for [`crate::native::NativeXdpMd`], global data as host
    /// addresses — that the unchecked interpreter and the JIT run. This is
    /// the constructor every product path uses; [`Program::load_with_maps`]
    /// gives programs that only the checked interpreter will run.
    ///
    /// # Errors
    /// [`LoadError::Verify`] with the verifier's explanation, or any other
    /// [`LoadError`].
    pub fn load_verified(
        insns: Vec<Insn>,
        kind: ProgKind,
        helpers: &Registry,
        maps: Vec<Arc<Map>>,
    ) -> Result<Program, LoadError> {
        Program::load_verified_with(insns, kind, helpers, maps, &VerifyOptions::default())
    }

    /// [`Program::load_verified`] with verifier options (log level, budget).
    ///
    /// # Errors
    /// As [`Program::load_verified`].
    pub fn load_verified_with(
        insns: Vec<Insn>,
        kind: ProgKind,
        helpers: &Registry,
        maps: Vec<Arc<Map>>,
        opts: &VerifyOptions,
    ) -> Result<Program, LoadError> {
        let lowered = lower(&insns, helpers, &maps, false)?;
        let verified = verifier::verify(&insns, kind, helpers, &maps, opts)
            .map_err(|e| LoadError::Verify(Box::new(e)))?;
        let mut native = insns.clone();
        if kind == ProgKind::Xdp {
            verifier::rewrite_ctx_loads(&mut native, &verified.ctx_loads, |f| {
                native_ctx_field(f.xdp_md_offset() as usize).unwrap_or((f.xdp_md_offset(), false))
            });
        }
        let native_lowered = lower(&native, helpers, &maps, true)?;
        // Machine code too, where the JIT exists. A program the JIT cannot
        // compile still runs in the interpreter.
        #[cfg(all(feature = "jit", target_arch = "x86_64"))]
        let jit = crate::jit::compile(&crate::jit::JitInput::new(&native, helpers).maps(&maps))
            .ok()
            .map(Arc::new);
        #[allow(unused_mut)]
        let mut prog = Program::assemble(
            insns,
            lowered,
            maps,
            Some(verified),
            Some((native, native_lowered.slots)),
        );
        #[cfg(all(feature = "jit", target_arch = "x86_64"))]
        {
            prog.jit = jit;
        }
        Ok(prog)
    }

    fn assemble(
        insns: Vec<Insn>,
        lowered: Lowered,
        maps: Vec<Arc<Map>>,
        verified: Option<Verified>,
        native: Option<(Vec<Insn>, Box<[Slot]>)>,
    ) -> Program {
        let map_regions = maps
            .iter()
            .enumerate()
            .map(|(i, m)| match m.ops().value_area() {
                Some((p, len)) => {
                    let vbase = ((DYN_REGIONS + i) as u64) << 32;
                    let writable = m.def().flags & flags::BPF_F_RDONLY_PROG == 0;
                    // The program holds `m` for as long as it holds the region.
                    Region::from_raw(vbase, p, len, writable)
                }
                None => Region::EMPTY,
            })
            .collect();
        let (native_insns, native_slots) = match native {
            Some((i, s)) => (Some(i), Some(s)),
            None => (None, None),
        };
        Program {
            insns,
            slots: lowered.slots,
            helpers: lowered.helpers,
            maps: maps.into_boxed_slice(),
            map_regions,
            callx: lowered.callx,
            verified,
            native_insns,
            native_slots,
            #[cfg(all(feature = "jit", target_arch = "x86_64"))]
            jit: None,
        }
    }

    /// Whether the program calls helper `id` (Linux's number), e.g.
    /// `bpf_fib_lookup`, for which the runtime must provide a FIB.
    pub fn calls_helper(&self, id: u32) -> bool {
        self.helpers.iter().any(|(h, _)| *h == id)
    }

    /// The program's machine code, when it has some.
    pub fn jit_code(&self) -> Option<&[u8]> {
        #[cfg(all(feature = "jit", target_arch = "x86_64"))]
        {
            self.jit.as_deref().map(|j| j.code())
        }
        #[cfg(not(all(feature = "jit", target_arch = "x86_64")))]
        {
            None
        }
    }

    /// Where each slot's machine code begins in [`Program::jit_code`], plus
    /// the end of the body, when the program has machine code: the entry
    /// stub comes before the first offset, the fault stubs after the last
    /// (see `jit::JitProgram::insn_offsets`). The slots are those of
    /// [`Program::native_insns`], one-for-one with [`Program::insns`].
    pub fn jit_insn_offsets(&self) -> Option<&[u32]> {
        #[cfg(all(feature = "jit", target_arch = "x86_64"))]
        {
            self.jit.as_deref().map(|j| j.insn_offsets())
        }
        #[cfg(not(all(feature = "jit", target_arch = "x86_64")))]
        {
            None
        }
    }

    /// Whether the program has machine code (verified, x86-64, JIT built).
    pub fn has_jit(&self) -> bool {
        #[cfg(all(feature = "jit", target_arch = "x86_64"))]
        {
            self.jit.is_some()
        }
        #[cfg(not(all(feature = "jit", target_arch = "x86_64")))]
        {
            false
        }
    }

    /// The verifier's result, when the program was loaded verified.
    pub fn verified(&self) -> Option<&Verified> {
        self.verified.as_ref()
    }

    /// The instructions native engines run (context loads rewritten), when
    /// the program was verified.
    pub fn native_insns(&self) -> Option<&[Insn]> {
        self.native_insns.as_deref()
    }
}

/// The engines' form of a program.
pub(crate) struct Lowered {
    pub slots: Box<[Slot]>,
    pub helpers: Box<[(u32, HelperFn)]>,
    pub callx: Option<Box<[Option<HelperFn>]>>,
}

/// Decodes, checks and lowers slots. `native`: global-data references
/// become host addresses (for verified programs run natively) instead of
/// region addresses.
fn lower(
    insns: &[Insn],
    helpers: &Registry,
    maps: &[Arc<Map>],
    native: bool,
) -> Result<Lowered, LoadError> {
    {
        if insns.len() > MAX_INSNS {
            return Err(LoadError::TooLarge { len: insns.len() });
        }
        let decoded = isa::decode(insns)?;
        let len = insns.len();
        let mut starts = vec![false; len];
        for (pc, _) in &decoded {
            starts[*pc] = true;
        }
        let target = |pc: usize, rel: i64| -> Result<i32, LoadError> {
            let t = pc as i64 + 1 + rel;
            if t < 0 || t >= len as i64 {
                return Err(LoadError::JumpOutOfRange { pc, target: t });
            }
            if !starts[t as usize] {
                return Err(LoadError::JumpIntoLdImm64 {
                    pc,
                    target: t as usize,
                });
            }
            Ok(t as i32)
        };
        if let Some((pc, last)) = decoded.last() {
            if !matches!(last, Instruction::Exit | Instruction::Ja { .. }) {
                return Err(LoadError::FallsOffEnd { pc: *pc });
            }
        }

        let filler = Slot {
            op: Op::Filler,
            dst: 0,
            src: 0,
            off: 0,
            imm: 0,
        };
        let mut slots = vec![filler; len];
        let mut table: Vec<(u32, HelperFn)> = Vec::new();
        let mut uses_callx = false;
        for &(pc, ins) in &decoded {
            let slot = match ins {
                Instruction::Alu {
                    width,
                    op,
                    dst,
                    src,
                } => lower_alu(width, op, dst.index(), src),
                Instruction::Neg { width, dst } => {
                    let op = if width == Width::W64 {
                        Op::Neg64
                    } else {
                        Op::Neg32
                    };
                    Slot {
                        op,
                        dst: dst.index(),
                        src: 0,
                        off: 0,
                        imm: 0,
                    }
                }
                Instruction::Endian { order, bits, dst } => {
                    let op = match (order, bits) {
                        (ByteOrder::Le, 16) => Op::Zext16,
                        (ByteOrder::Le, 32) => Op::Zext32,
                        // le64 is the identity on a little-endian host.
                        (ByteOrder::Le, _) => Op::Mov64R,
                        (_, 16) => Op::Bswap16,
                        (_, 32) => Op::Bswap32,
                        _ => Op::Bswap64,
                    };
                    Slot {
                        op,
                        dst: dst.index(),
                        src: dst.index(),
                        off: 0,
                        imm: 0,
                    }
                }
                Instruction::Load {
                    size,
                    signed,
                    dst,
                    src,
                    off,
                } => {
                    let op = match (size, signed) {
                        (Size::B, false) => Op::Ldxb,
                        (Size::H, false) => Op::Ldxh,
                        (Size::W, false) => Op::Ldxw,
                        (Size::DW, _) => Op::Ldxdw,
                        (Size::B, true) => Op::Ldxsb,
                        (Size::H, true) => Op::Ldxsh,
                        (Size::W, true) => Op::Ldxsw,
                    };
                    Slot {
                        op,
                        dst: dst.index(),
                        src: src.index(),
                        off: off.into(),
                        imm: 0,
                    }
                }
                Instruction::Store {
                    size,
                    dst,
                    off,
                    src,
                } => {
                    let (op, s, imm) = match (size, src) {
                        (Size::B, Source::Imm(i)) => (Op::Stb, 0, i),
                        (Size::H, Source::Imm(i)) => (Op::Sth, 0, i),
                        (Size::W, Source::Imm(i)) => (Op::Stw, 0, i),
                        (Size::DW, Source::Imm(i)) => (Op::Stdw, 0, i),
                        (Size::B, Source::Reg(r)) => (Op::Stxb, r.index(), 0),
                        (Size::H, Source::Reg(r)) => (Op::Stxh, r.index(), 0),
                        (Size::W, Source::Reg(r)) => (Op::Stxw, r.index(), 0),
                        (Size::DW, Source::Reg(r)) => (Op::Stxdw, r.index(), 0),
                    };
                    Slot {
                        op,
                        dst: dst.index(),
                        src: s,
                        off: off.into(),
                        imm: imm as i64 as u64,
                    }
                }
                Instruction::Atomic {
                    width,
                    op,
                    fetch,
                    dst,
                    src,
                    off,
                } => {
                    let o = if width == Width::W64 {
                        Op::Atomic64
                    } else {
                        Op::Atomic32
                    };
                    let kind = op.code() | i32::from(fetch);
                    Slot {
                        op: o,
                        dst: dst.index(),
                        src: src.index(),
                        off: off.into(),
                        imm: kind as u64,
                    }
                }
                Instruction::LdImm64 { dst, value } => match value {
                    LdImm64::Imm(v) => Slot {
                        op: Op::LdImm64,
                        dst: dst.index(),
                        src: 0,
                        off: 0,
                        imm: v,
                    },
                    LdImm64::MapIdx(i) => {
                        if i < 0 || i as usize >= maps.len() {
                            return Err(LoadError::BadMapIndex { pc, index: i });
                        }
                        Slot {
                            op: Op::LdImm64,
                            dst: dst.index(),
                            src: 0,
                            off: 0,
                            imm: MAP_HANDLE_BASE | i as u64,
                        }
                    }
                    LdImm64::MapIdxValue { map, off } => {
                        let Some(m) = usize::try_from(map).ok().and_then(|i| maps.get(i)) else {
                            return Err(LoadError::BadMapIndex { pc, index: map });
                        };
                        if m.def().map_type != MapType::Array || off >= m.def().value_size {
                            return Err(LoadError::BadMapValue {
                                pc,
                                map: m.def().name.clone(),
                                off,
                            });
                        }
                        let vbase = if native {
                            // Global data is an array map: its value area is
                            // the section's bytes.
                            m.ops().value_area().map_or(0, |(p, _)| p.as_ptr() as u64)
                        } else {
                            ((DYN_REGIONS + map as usize) as u64) << 32
                        };
                        Slot {
                            op: Op::LdImm64,
                            dst: dst.index(),
                            src: 0,
                            off: 0,
                            imm: vbase + u64::from(off),
                        }
                    }
                    LdImm64::MapFd(_) => {
                        return Err(LoadError::Unsupported {
                            pc,
                            feature: "a map reference (ld_imm64 map)",
                        })
                    }
                    LdImm64::MapValue { .. } => {
                        return Err(LoadError::Unsupported {
                            pc,
                            feature: "a map value reference (ld_imm64 map value)",
                        })
                    }
                    LdImm64::BtfId(_) => {
                        return Err(LoadError::Unsupported {
                            pc,
                            feature: "a kernel variable (ld_imm64 BTF id)",
                        })
                    }
                    LdImm64::Func(_) => {
                        return Err(LoadError::Unsupported {
                            pc,
                            feature: "a function pointer (ld_imm64 func)",
                        })
                    }
                },
                Instruction::Ja { off, .. } => Slot {
                    op: Op::Ja,
                    dst: 0,
                    src: 0,
                    off: target(pc, off.into())?,
                    imm: 0,
                },
                Instruction::Jmp {
                    width,
                    op,
                    dst,
                    src,
                    off,
                } => {
                    let (o, s, imm) = lower_jmp(width, op, src);
                    Slot {
                        op: o,
                        dst: dst.index(),
                        src: s,
                        off: target(pc, off.into())?,
                        imm,
                    }
                }
                Instruction::Call(CallTarget::Helper(id)) => {
                    let h = u32::try_from(id)
                        .ok()
                        .and_then(|id| helpers.get(id))
                        .ok_or(LoadError::UnknownHelper { pc, id })?;
                    if h.id == helper_id::TAIL_CALL {
                        slots[pc] = Slot {
                            op: Op::TailCall,
                            dst: 0,
                            src: 0,
                            off: 0,
                            imm: 0,
                        };
                        continue;
                    }
                    let idx = match table.iter().position(|(n, _)| *n == h.id) {
                        Some(i) => i,
                        None => {
                            table.push((h.id, h.func));
                            table.len() - 1
                        }
                    };
                    Slot {
                        op: Op::Call,
                        dst: 0,
                        src: 0,
                        off: 0,
                        imm: idx as u64,
                    }
                }
                Instruction::Call(CallTarget::Local(rel)) => Slot {
                    op: Op::CallLocal,
                    dst: 0,
                    src: 0,
                    off: target(pc, rel.into())?,
                    imm: 0,
                },
                Instruction::Call(CallTarget::Kfunc(_)) => {
                    return Err(LoadError::Unsupported {
                        pc,
                        feature: "a kernel function call (kfunc)",
                    })
                }
                Instruction::Callx { reg } => {
                    uses_callx = true;
                    Slot {
                        op: Op::Callx,
                        dst: reg.index(),
                        src: 0,
                        off: 0,
                        imm: 0,
                    }
                }
                Instruction::Exit => Slot {
                    op: Op::Exit,
                    dst: 0,
                    src: 0,
                    off: 0,
                    imm: 0,
                },
            };
            slots[pc] = slot;
        }
        fuse(&mut slots, &starts);
        let callx = uses_callx.then(|| {
            let n = helpers.iter().map(|h| h.id as usize + 1).max().unwrap_or(0);
            let mut t = vec![None; n];
            for h in helpers.iter() {
                t[h.id as usize] = Some(h.func);
            }
            t.into_boxed_slice()
        });
        Ok(Lowered {
            slots: slots.into_boxed_slice(),
            helpers: table.into_boxed_slice(),
            callx,
        })
    }
}

impl Program {
    /// The maps the program references.
    pub fn maps(&self) -> &[Arc<Map>] {
        &self.maps
    }

    /// The program's raw slots, as loaded.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Whether the program has no slots (never true for a loaded program).
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }
}

/// Replaces the first slot of two hot sequences with a fused operation that
/// does the whole sequence in one dispatch. The other slots keep their own
/// operations, so a jump landing inside a sequence runs it normally.
fn fuse(slots: &mut [Slot], starts: &[bool]) {
    let is_reg_cmp = |op: Op| matches!(op, Op::Jgt64R | Op::Jge64R | Op::Jlt64R | Op::Jle64R);
    let is_imm_jcc = |op: Op| {
        matches!(
            op,
            Op::Jeq64I
                | Op::Jne64I
                | Op::Jgt64I
                | Op::Jge64I
                | Op::Jlt64I
                | Op::Jle64I
                | Op::Jsgt64I
                | Op::Jsge64I
                | Op::Jslt64I
                | Op::Jsle64I
        )
    };
    for pc in 0..slots.len() {
        let s = slots[pc];
        if s.op == Op::Mov64R && pc + 2 < slots.len() && starts[pc + 1] && starts[pc + 2] {
            let (add, j) = (slots[pc + 1], slots[pc + 2]);
            if add.op == Op::Add64I
                && add.dst == s.dst
                && is_reg_cmp(j.op)
                && j.dst == s.dst
                && j.src != s.dst
            {
                slots[pc] = Slot {
                    op: Op::MovAddJcc,
                    dst: s.dst,
                    src: s.src,
                    off: 0,
                    imm: add.imm,
                };
            }
        } else if matches!(s.op, Op::Ldxb | Op::Ldxh | Op::Ldxw | Op::Ldxdw)
            && pc + 1 < slots.len()
            && starts[pc + 1]
        {
            let st = slots[pc + 1];
            let size = match (s.op, st.op) {
                (Op::Ldxb, Op::Stxb) => 1,
                (Op::Ldxh, Op::Stxh) => 2,
                (Op::Ldxw, Op::Stxw) => 4,
                (Op::Ldxdw, Op::Stxdw) => 8,
                _ => 0,
            };
            if size != 0 && st.src == s.dst {
                slots[pc] = Slot {
                    op: Op::LdxStx,
                    imm: size,
                    ..s
                };
            }
        } else if s.op == Op::Add64I && pc + 1 < slots.len() && starts[pc + 1] {
            let j = slots[pc + 1];
            if is_imm_jcc(j.op) && j.dst == s.dst {
                slots[pc] = Slot {
                    op: Op::AddJccImm,
                    ..s
                };
            }
        }
    }
}

fn lower_alu(width: Width, op: AluOp, dst: u8, src: Source) -> Slot {
    use Op::*;
    let (s, imm, is_reg) = match src {
        Source::Reg(r) => (r.index(), 0u64, true),
        Source::Imm(i) => (0, i as i64 as u64, false),
    };
    let o = match (width, is_reg, op) {
        (_, _, AluOp::Movsx(bits)) => match (width, bits) {
            (Width::W64, 8) => Movsx8To64,
            (Width::W64, 16) => Movsx16To64,
            (Width::W64, _) => Movsx32To64,
            (Width::W32, 8) => Movsx8To32,
            (Width::W32, _) => Movsx16To32,
        },
        (Width::W64, false, op) => pick(
            op,
            [
                Add64I, Sub64I, Mul64I, Div64I, Sdiv64I, Or64I, And64I, Lsh64I, Rsh64I, Mod64I,
                Smod64I, Xor64I, Mov64I, Arsh64I,
            ],
        ),
        (Width::W64, true, op) => pick(
            op,
            [
                Add64R, Sub64R, Mul64R, Div64R, Sdiv64R, Or64R, And64R, Lsh64R, Rsh64R, Mod64R,
                Smod64R, Xor64R, Mov64R, Arsh64R,
            ],
        ),
        (Width::W32, false, op) => pick(
            op,
            [
                Add32I, Sub32I, Mul32I, Div32I, Sdiv32I, Or32I, And32I, Lsh32I, Rsh32I, Mod32I,
                Smod32I, Xor32I, Mov32I, Arsh32I,
            ],
        ),
        (Width::W32, true, op) => pick(
            op,
            [
                Add32R, Sub32R, Mul32R, Div32R, Sdiv32R, Or32R, And32R, Lsh32R, Rsh32R, Mod32R,
                Smod32R, Xor32R, Mov32R, Arsh32R,
            ],
        ),
    };
    Slot {
        op: o,
        dst,
        src: s,
        off: 0,
        imm,
    }
}

/// Picks the variant for `op` from a row ordered add, sub, mul, div, sdiv,
/// or, and, lsh, rsh, mod, smod, xor, mov, arsh.
fn pick(op: AluOp, row: [Op; 14]) -> Op {
    let i = match op {
        AluOp::Add => 0,
        AluOp::Sub => 1,
        AluOp::Mul => 2,
        AluOp::Div => 3,
        AluOp::Sdiv => 4,
        AluOp::Or => 5,
        AluOp::And => 6,
        AluOp::Lsh => 7,
        AluOp::Rsh => 8,
        AluOp::Mod => 9,
        AluOp::Smod => 10,
        AluOp::Xor => 11,
        AluOp::Mov | AluOp::Movsx(_) => 12,
        AluOp::Arsh => 13,
    };
    row[i]
}

fn lower_jmp(width: Width, op: JmpOp, src: Source) -> (Op, u8, u64) {
    use Op::*;
    let (s, imm, is_reg) = match src {
        Source::Reg(r) => (r.index(), 0u64, true),
        Source::Imm(i) => (0, i as i64 as u64, false),
    };
    let row = match (width, is_reg) {
        (Width::W64, false) => [
            Jeq64I, Jgt64I, Jge64I, Jset64I, Jne64I, Jsgt64I, Jsge64I, Jlt64I, Jle64I, Jslt64I,
            Jsle64I,
        ],
        (Width::W64, true) => [
            Jeq64R, Jgt64R, Jge64R, Jset64R, Jne64R, Jsgt64R, Jsge64R, Jlt64R, Jle64R, Jslt64R,
            Jsle64R,
        ],
        (Width::W32, false) => [
            Jeq32I, Jgt32I, Jge32I, Jset32I, Jne32I, Jsgt32I, Jsge32I, Jlt32I, Jle32I, Jslt32I,
            Jsle32I,
        ],
        (Width::W32, true) => [
            Jeq32R, Jgt32R, Jge32R, Jset32R, Jne32R, Jsgt32R, Jsge32R, Jlt32R, Jle32R, Jslt32R,
            Jsle32R,
        ],
    };
    let i = match op {
        JmpOp::Eq => 0,
        JmpOp::Gt => 1,
        JmpOp::Ge => 2,
        JmpOp::Set => 3,
        JmpOp::Ne => 4,
        JmpOp::Sgt => 5,
        JmpOp::Sge => 6,
        JmpOp::Lt => 7,
        JmpOp::Le => 8,
        JmpOp::Slt => 9,
        JmpOp::Sle => 10,
    };
    (row[i], s, imm)
}

/// The atomic kinds stored in a lowered slot's `imm`.
pub(crate) mod atomic {
    use super::AtomicOp;
    pub const ADD: u64 = AtomicOp::Add.code() as u64;
    pub const OR: u64 = AtomicOp::Or.code() as u64;
    pub const AND: u64 = AtomicOp::And.code() as u64;
    pub const XOR: u64 = AtomicOp::Xor.code() as u64;
    pub const FETCH: u64 = 1;
    pub const XCHG: u64 = AtomicOp::Xchg.code() as u64 | FETCH;
    pub const CMPXCHG: u64 = AtomicOp::Cmpxchg.code() as u64 | FETCH;
}

/// The JIT's tail-call resolver: the program a prog array of the running
/// program holds at `index`, as machine code.
#[cfg(all(feature = "jit", target_arch = "x86_64"))]
pub(crate) fn jit_tail_target(
    env: &mut crate::native::NativeEnv,
    map: u64,
    index: u32,
) -> Option<Arc<crate::jit::JitProgram>> {
    use crate::interp::ctx::MAP_HANDLE_BASE;
    use crate::maps::prog_array::ProgArray;
    if map & !0xffff_ffff != MAP_HANDLE_BASE || map & 0x8000_0000 != 0 {
        return None;
    }
    let maps = env.maps()?;
    let next = maps
        .get((map & 0xffff_ffff) as usize)?
        .downcast::<ProgArray>()?
        .load(index)?;
    next.jit.clone()
}
