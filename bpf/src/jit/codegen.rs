//! eBPF to x86-64 translation: analysis, then one emission pass per
//! program (two for programs small enough that denser jumps are worth a
//! second pass), then fixups. See the module docs of [`super`] for the
//! register mapping, frame layout and calling convention this implements.

use std::hash::{BuildHasher, RandomState};

use super::x86::{
    Alu, Asm, Cond, Reg, Shift, Width as W, R10, R11, R12, R13, R14, R15, R8, R9, RAX, RBP, RBX,
    RCX, RDI, RDX, RSI, RSP,
};
use super::{layout, ArrayLayout, JitError, Resolved};
use crate::helpers::{action, id as helper_id, is_builtin_redirect, Helper, Registry};
use crate::interp::{FRAME_SIZE, MAX_FRAMES};
use crate::isa::{
    self, AluOp, AtomicOp, ByteOrder, CallTarget, Insn, Instruction, JmpOp, LdImm64, Size, Source,
    Width,
};

/// eBPF register `i` lives in x86 register `MAP[i]` (Linux's mapping).
const MAP: [Reg; 11] = [RAX, RDI, RSI, RDX, RCX, R8, RBX, R13, R14, R15, RBP];
/// Blinding scratch (Linux's `BPF_REG_AX`) and the divisor / save register.
const AX: Reg = R10;
/// General scratch.
const TMP: Reg = R11;
/// Saves r0 around divisions.
const TMP2: Reg = R9;
/// The `NativeEnv` pointer for the whole run.
const ENV: Reg = R12;

/// Host stack bytes one local call adds: five saved registers (r6-r9,
/// r10) and the return address.
const CALL_FRAME: i32 = 48;

fn x(r: isa::Reg) -> Reg {
    MAP[r.index() as usize]
}

/// A program after analysis, ready for emission.
pub(crate) struct Prepared {
    insns: Vec<(usize, Instruction)>,
    /// Resolved `LD_IMM64` values by slot.
    imm64: Vec<Option<Resolved>>,
    /// Helpers by call slot.
    helpers: Vec<Option<Helper>>,
    /// Slots that are jump or call targets (block starts).
    is_target: Vec<bool>,
    /// eBPF registers (other than r1, r2, r10) the entry must zero because
    /// some path may read them before writing them.
    zero: u16,
    /// What the entry must set up.
    frame: Frame,
    nslots: usize,
}

/// What a program's entry sets up: only what its body uses.
///
/// A *leaf* program (no calls of any kind, no r6-r10, no per-CPU lookup,
/// no inlined `bpf_redirect`) needs nothing: the entry is the body and
/// `exit` returns straight to the caller. Otherwise the entry saves the
/// callee-saved registers the body uses, sets r10 and r12 if used, records
/// `RSP_MAIN` if anything can fault or nest, and calls the body. A program
/// that tail-calls gets the full frame (all six registers saved, r10, r12,
/// `RSP_MAIN`), because the target's body runs in it.
#[derive(Clone, Debug, Default)]
struct Frame {
    saves: Vec<Reg>,
    env: bool,
    rbp: bool,
    rsp_main: bool,
    /// `sub rsp, 8` so that shim calls see a 16-byte aligned rsp.
    pad: bool,
    leaf: bool,
}

/// Every register an instruction names.
fn named(ins: &Instruction) -> u16 {
    let b = |r: isa::Reg| 1u16 << r.index();
    let s = |src: Source| match src {
        Source::Reg(r) => b(r),
        Source::Imm(_) => 0,
    };
    match *ins {
        Instruction::Alu { dst, src, .. } | Instruction::Store { dst, src, .. } => b(dst) | s(src),
        Instruction::Jmp { dst, src, .. } => b(dst) | s(src),
        Instruction::Neg { dst, .. }
        | Instruction::Endian { dst, .. }
        | Instruction::LdImm64 { dst, .. } => b(dst),
        Instruction::Load { dst, src, .. } => b(dst) | b(src),
        Instruction::Atomic { dst, src, op, .. } => {
            b(dst) | b(src) | u16::from(op == AtomicOp::Cmpxchg)
        }
        Instruction::Callx { reg } => b(reg),
        _ => 0,
    }
}

fn frame(
    insns: &[(usize, Instruction)],
    helpers: &[Option<Helper>],
    imm64: &[Option<Resolved>],
) -> Frame {
    let mut regs = 0u16;
    let (mut helper, mut local, mut tail, mut redirect) = (false, false, false, false);
    for (pc, ins) in insns {
        regs |= named(ins);
        match ins {
            Instruction::Call(CallTarget::Helper(_)) => match helpers[*pc] {
                Some(h) if h.id == helper_id::TAIL_CALL => tail = true,
                // Inlined: needs the environment (for the run state), but
                // calls nothing and cannot fault.
                Some(h) if is_builtin_redirect(&h) => redirect = true,
                _ => helper = true,
            },
            Instruction::Callx { .. } => helper = true,
            Instruction::Call(CallTarget::Local(_)) => local = true,
            _ => {}
        }
    }
    let percpu = imm64
        .iter()
        .flatten()
        .any(|r| r.array.is_some_and(|a| a.percpu));
    if tail {
        return Frame {
            saves: vec![RBP, RBX, R12, R13, R14, R15],
            env: true,
            rbp: true,
            rsp_main: true,
            pad: false,
            leaf: false,
        };
    }
    let rsp_main = helper || local;
    let env = rsp_main || percpu || redirect;
    let rbp = regs & (1 << 10) != 0 || local;
    let mut saves = Vec::new();
    for (cond, r) in [
        (rbp, RBP),
        (regs & (1 << 6) != 0, RBX),
        (env, R12),
        (regs & (1 << 7) != 0, R13),
        (regs & (1 << 8) != 0, R14),
        (regs & (1 << 9) != 0, R15),
    ] {
        if cond {
            saves.push(r);
        }
    }
    let pad = helper && saves.len() % 2 == 1;
    let leaf = saves.is_empty() && !env && !rbp && !rsp_main;
    Frame {
        saves,
        env,
        rbp,
        rsp_main,
        pad,
        leaf,
    }
}

impl Prepared {
    /// Whether any instruction satisfies `f`.
    pub(crate) fn uses(&self, f: impl Fn(&Instruction) -> bool) -> bool {
        self.insns.iter().any(|(_, i)| f(i))
    }
}

/// Pieces of the compiled image.
pub(crate) struct Image {
    pub code: Vec<u8>,
    /// Offset of the program body (the tail-call entry).
    pub body: usize,
    /// The final pass's `addrs`: native offset of each slot, then the end
    /// of the body (see [`super::JitProgram::insn_offsets`]).
    pub addrs: Vec<u32>,
}

/// Code-generation settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub harden: bool,
    pub bmi2: bool,
    pub passes: u8,
}

fn target(pc: usize, rel: i64, starts: &[bool]) -> Result<usize, JitError> {
    let t = pc as i64 + 1 + rel;
    if t < 0 || t >= starts.len() as i64 {
        return Err(JitError::JumpOutOfRange { pc, target: t });
    }
    if !starts[t as usize] {
        return Err(JitError::JumpIntoLdImm64 {
            pc,
            target: t as usize,
        });
    }
    Ok(t as usize)
}

/// Registers an instruction writes (as a bit set of eBPF registers).
fn writes(ins: &Instruction) -> u16 {
    let b = |r: isa::Reg| 1u16 << r.index();
    match *ins {
        Instruction::Alu { dst, .. }
        | Instruction::Neg { dst, .. }
        | Instruction::Endian { dst, .. }
        | Instruction::Load { dst, .. }
        | Instruction::LdImm64 { dst, .. } => b(dst),
        Instruction::Atomic { op, fetch, src, .. } => match op {
            AtomicOp::Cmpxchg => 1,
            _ if fetch => b(src),
            _ => 0,
        },
        Instruction::Call(CallTarget::Helper(_)) | Instruction::Callx { .. } => 0x3f,
        _ => 0,
    }
}

/// Decodes, validates and analyses a program.
pub(crate) fn prepare(
    slots: &[Insn],
    registry: &Registry,
    resolve: &dyn Fn(&LdImm64) -> Option<Resolved>,
) -> Result<Prepared, JitError> {
    if slots.len() > crate::program::MAX_INSNS {
        return Err(JitError::TooLarge { len: slots.len() });
    }
    let insns = isa::decode(slots)?;
    let n = slots.len();
    let mut starts = vec![false; n];
    for (pc, _) in &insns {
        starts[*pc] = true;
    }
    if let Some((pc, last)) = insns.last() {
        if !matches!(last, Instruction::Exit | Instruction::Ja { .. }) {
            return Err(JitError::FallsOffEnd { pc: *pc });
        }
    }
    let mut is_target = vec![false; n + 1];
    is_target[0] = true;
    let mut imm64 = vec![None; n];
    let mut helpers = vec![None; n];
    for &(pc, ins) in &insns {
        if writes(&ins) & (1 << 10) != 0 {
            return Err(JitError::WritesFramePointer { pc });
        }
        match ins {
            Instruction::Ja { off, .. } => is_target[target(pc, off.into(), &starts)?] = true,
            Instruction::Jmp { off, .. } => is_target[target(pc, off.into(), &starts)?] = true,
            Instruction::Call(CallTarget::Local(rel)) => {
                is_target[target(pc, rel.into(), &starts)?] = true
            }
            Instruction::Call(CallTarget::Helper(id)) => {
                let h = u32::try_from(id)
                    .ok()
                    .and_then(|id| registry.get(id))
                    .ok_or(JitError::UnknownHelper { pc, id })?;
                helpers[pc] = Some(*h);
            }
            Instruction::Call(CallTarget::Kfunc(_)) => {
                return Err(JitError::Unsupported {
                    pc,
                    feature: "a kernel function call (kfunc)",
                })
            }
            Instruction::LdImm64 { value, .. } => {
                imm64[pc] = Some(match value {
                    LdImm64::Imm(v) => Resolved {
                        value: v,
                        array: None,
                    },
                    other => resolve(&other).ok_or(JitError::Unresolved { pc, what: other })?,
                });
            }
            _ => {}
        }
    }
    let zero = uninit_reads(&insns, &starts, &helpers, n)?;
    let frame = frame(&insns, &helpers, &imm64);
    Ok(Prepared {
        insns,
        imm64,
        helpers,
        is_target,
        zero,
        frame,
        nslots: n,
    })
}

/// Backward liveness: the registers some path from the entry may read
/// before writing. A verified program has none (the verifier refuses
/// reads of uninitialised registers), so its entry zeroes nothing; for any
/// other program the entry zeroes exactly these, which makes native runs
/// start from the interpreter's all-zero registers.
fn uninit_reads(
    insns: &[(usize, Instruction)],
    starts: &[bool],
    helpers: &[Option<Helper>],
    n: usize,
) -> Result<u16, JitError> {
    // Index of each instruction by slot.
    let mut index = vec![usize::MAX; n];
    for (i, (pc, _)) in insns.iter().enumerate() {
        index[*pc] = i;
    }
    let b = |r: isa::Reg| 1u16 << r.index();
    let src_bit = |s: Source| match s {
        Source::Reg(r) => b(r),
        Source::Imm(_) => 0,
    };
    let args = |k: usize| -> u16 { (((1u32 << k) - 1) << 1) as u16 };
    let mut uses = Vec::with_capacity(insns.len());
    let mut defs = Vec::with_capacity(insns.len());
    let mut succ: Vec<[usize; 2]> = Vec::with_capacity(insns.len());
    const NONE: usize = usize::MAX;
    for (i, &(pc, ins)) in insns.iter().enumerate() {
        let next = if i + 1 < insns.len() { i + 1 } else { NONE };
        let to = |rel: i64| -> Result<usize, JitError> { Ok(index[target(pc, rel, starts)?]) };
        let (u, s) = match ins {
            Instruction::Alu { op, dst, src, .. } => match op {
                AluOp::Mov | AluOp::Movsx(_) => (src_bit(src), [next, NONE]),
                _ => (b(dst) | src_bit(src), [next, NONE]),
            },
            Instruction::Neg { dst, .. } | Instruction::Endian { dst, .. } => {
                (b(dst), [next, NONE])
            }
            Instruction::Load { src, .. } => (b(src), [next, NONE]),
            Instruction::Store { dst, src, .. } => (b(dst) | src_bit(src), [next, NONE]),
            Instruction::Atomic { op, dst, src, .. } => {
                let r0 = if op == AtomicOp::Cmpxchg { 1 } else { 0 };
                (b(dst) | b(src) | r0, [next, NONE])
            }
            Instruction::LdImm64 { .. } => (0, [next, NONE]),
            Instruction::Ja { off, .. } => (0, [to(off.into())?, NONE]),
            Instruction::Jmp { dst, src, off, .. } => {
                (b(dst) | src_bit(src), [next, to(off.into())?])
            }
            Instruction::Call(CallTarget::Helper(_)) => {
                let arity = helpers[pc].map_or(5, |h| h.arity());
                (args(arity), [next, NONE])
            }
            Instruction::Call(CallTarget::Local(rel)) => (0, [next, to(rel.into())?]),
            Instruction::Call(CallTarget::Kfunc(_)) => (0, [next, NONE]),
            Instruction::Callx { reg } => (b(reg) | args(5), [next, NONE]),
            Instruction::Exit => (1, [NONE, NONE]),
        };
        uses.push(u);
        // A tail call that falls through leaves r0-r5 as they were.
        let tail = helpers[pc].is_some_and(|h| h.id == helper_id::TAIL_CALL);
        defs.push(if tail { 0 } else { writes(&ins) });
        succ.push(s);
    }
    let mut live_in = vec![0u16; insns.len()];
    loop {
        let mut changed = false;
        for i in (0..insns.len()).rev() {
            let out = succ[i]
                .iter()
                .filter(|&&s| s != NONE)
                .fold(0u16, |acc, &s| acc | live_in[s]);
            let v = uses[i] | (out & !defs[i]);
            if v != live_in[i] {
                live_in[i] = v;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // r1, r2 and r10 are set by the entry.
    Ok(live_in.first().copied().unwrap_or(0) & !(1 << 1 | 1 << 2 | 1 << 10))
}

/// An out-of-line fault exit.
#[derive(Clone, Copy)]
enum Stub {
    /// A helper set `NativeEnv::fault`.
    Helper { pc: u32, id: u32 },
    /// A helper called through `callx` failed; its number is in the
    /// scratch value slot.
    HelperDyn { pc: u32 },
    /// A local call past [`MAX_FRAMES`].
    Depth { pc: u32 },
    /// `callx` to a number that is no helper (target in r11).
    Callx { pc: u32 },
}

/// A jump whose displacement is patched at the end of the pass.
#[derive(Clone, Copy)]
enum Fix {
    /// Displacement byte(s) at `at` to slot `to`.
    Insn { at: usize, short: bool, to: usize },
    /// rel32 at `at` to stub `to`.
    Stub { at: usize, to: usize },
}

/// Operand after blinding: an immediate, or the register it was rebuilt in.
#[derive(Clone, Copy)]
enum Opnd {
    Imm(i32),
    Reg(Reg),
}

struct Gen<'p> {
    p: &'p Prepared,
    set: Settings,
    a: Asm,
    /// Native offset of each slot (and of the end).
    addrs: Vec<u32>,
    /// The previous pass's offsets, when this is a later pass.
    prev: Option<Vec<u32>>,
    fixes: Vec<Fix>,
    stubs: Vec<Stub>,
    /// Blinding keys: `key(pc, n)` is a SipHash of (pc, n) under a random
    /// per-compilation key, so every pass draws the same keys.
    keys: RandomState,
    pc: usize,
    nkey: u32,
    shim: u64,
    tail_shim: u64,
    callx: (u64, u32),
    /// Which eBPF registers hold a known array map pointer (block-local).
    known: [Option<ArrayLayout>; 11],
    /// The register (and width) whose value the flags reflect, when the
    /// previous instruction ended with an ALU operation on it, so that a
    /// following `jeq/jne dst, 0` needs no `test`.
    flags: Option<(Reg, bool)>,
}

/// Compiles a prepared program. `callx` is the helper table's address and
/// length (used only if the program has `callx`).
pub(crate) fn emit(
    p: &Prepared,
    set: Settings,
    shims: (u64, u64),
    callx: (u64, u32),
) -> Result<Image, JitError> {
    let keys = RandomState::new();
    let mut prev = None;
    let passes = set.passes.max(1);
    let mut out = None;
    for pass in 1..=passes {
        let mut g = Gen {
            p,
            set,
            a: Asm::with_capacity(p.nslots * 8 + 128),
            addrs: vec![0; p.nslots + 1],
            prev: prev.take(),
            fixes: Vec::new(),
            stubs: Vec::new(),
            keys: keys.clone(),
            pc: 0,
            nkey: 0,
            shim: shims.0,
            tail_shim: shims.1,
            callx,
            known: [None; 11],
            flags: None,
        };
        let body = g.program()?;
        let addrs = std::mem::take(&mut g.addrs);
        let addrs = if pass == passes {
            addrs
        } else {
            prev = Some(addrs);
            Vec::new()
        };
        out = Some(Image {
            code: std::mem::take(&mut g.a.buf),
            body,
            addrs,
        });
    }
    out.ok_or(JitError::TooLarge { len: 0 })
}

impl Gen<'_> {
    fn program(&mut self) -> Result<usize, JitError> {
        self.prologue();
        let body = if self.p.frame.leaf {
            self.a.pos()
        } else {
            let call_body = self.a.call32(0);
            self.epilogue();
            let body = self.a.pos();
            self.a.patch32(call_body, body);
            body
        };
        let p = self.p;
        let mut fused = false;
        for (i, &(pc, ins)) in p.insns.iter().enumerate() {
            self.pc = pc;
            self.nkey = 0;
            if p.is_target[pc] {
                self.known = [None; 11];
            }
            for s in self.addrs[pc..=pc + ins.slots() - 1].iter_mut() {
                *s = self.a.pos() as u32;
            }
            if fused {
                // Emitted with the previous instruction (see `lea_pair`).
                fused = false;
                continue;
            }
            if let Some((d, s, k)) = self.lea_pair(&ins, p.insns.get(i + 1)) {
                self.a.lea(d, s, k);
                self.known[d_index(&ins)] = None;
                self.flags = None;
                fused = true;
                continue;
            }
            self.insn(ins)?;
        }
        self.addrs[p.nslots] = self.a.pos() as u32;
        // Fault stubs and the common fault exit.
        let mut stub_at = Vec::with_capacity(self.stubs.len());
        let fault_exit_fixes: Vec<usize> = self
            .stubs
            .clone()
            .into_iter()
            .map(|s| {
                stub_at.push(self.a.pos());
                self.stub(s)
            })
            .collect();
        if !fault_exit_fixes.is_empty() {
            let fault_exit = self.a.pos();
            self.a.load(W::Q, RSP, ENV, layout::RSP_MAIN);
            self.a.ret();
            for at in fault_exit_fixes {
                self.a.patch32(at, fault_exit);
            }
        }
        for f in std::mem::take(&mut self.fixes) {
            match f {
                Fix::Insn { at, short, to } => {
                    let t = self.addrs[to] as usize;
                    if short {
                        self.a.patch8(at, t)
                    } else {
                        self.a.patch32(at, t)
                    }
                }
                Fix::Stub { at, to } => self.a.patch32(at, stub_at[to]),
            }
        }
        if self.a.pos() > (i32::MAX as usize) / 2 {
            return Err(JitError::TooLarge { len: self.p.nslots });
        }
        Ok(body)
    }

    /// `mov dst, src; add dst, imm` (how clang computes `data + N` for a
    /// bounds check) as one `lea dst, [src + imm]`, when no jump lands on
    /// the `add` and constants need no blinding (a displacement is not
    /// blinded).
    fn lea_pair(
        &self,
        ins: &Instruction,
        next: Option<&(usize, Instruction)>,
    ) -> Option<(Reg, Reg, i32)> {
        if self.set.harden {
            return None;
        }
        let Instruction::Alu {
            width: Width::W64,
            op: AluOp::Mov,
            dst,
            src: Source::Reg(s),
        } = *ins
        else {
            return None;
        };
        let &(npc, next) = next?;
        match next {
            Instruction::Alu {
                width: Width::W64,
                op: AluOp::Add,
                dst: d2,
                src: Source::Imm(k),
            } if d2 == dst && s != dst && !self.p.is_target[npc] => Some((x(dst), x(s), k)),
            _ => None,
        }
    }

    /// Entry: save the caller's callee-saved registers the body uses, set
    /// up r10 and the environment if used, zero what must be zeroed (the
    /// body is called next, unless the program is a leaf; see [`Frame`]).
    fn prologue(&mut self) {
        let f = &self.p.frame;
        for &r in &f.saves {
            self.a.push(r);
        }
        if f.pad {
            self.a.alu_ri(Alu::Sub, true, RSP, 8);
        }
        if f.env {
            // rcx = *mut JitEnv; r12 = &(*rcx).env.
            self.a.lea(ENV, RCX, layout::ENV_IN_JITENV);
        }
        if f.rbp {
            self.a.mov_rr(true, RBP, RDX);
        }
        if f.rsp_main {
            // The body runs with rsp 8 below this (the call's return address).
            self.a.lea(TMP, RSP, -8);
            self.a.store(W::Q, ENV, layout::RSP_MAIN, TMP);
        }
        for r in 0..10u8 {
            if self.p.zero & (1 << r) != 0 {
                let reg = MAP[r as usize];
                self.a.alu_rr(Alu::Xor, false, reg, reg);
            }
        }
    }

    fn epilogue(&mut self) {
        let f = &self.p.frame;
        if f.pad {
            self.a.alu_ri(Alu::Add, true, RSP, 8);
        }
        for &r in f.saves.iter().rev() {
            self.a.pop(r);
        }
        self.a.ret();
    }

    /// Emits a stub; returns the offset of its jump to the fault exit.
    fn stub(&mut self, s: Stub) -> usize {
        let (kind, pc) = match s {
            Stub::Helper { pc, id } => {
                self.a.store_imm(W::W, ENV, layout::FAULT_AUX, id as i32);
                (layout::KIND_HELPER, pc)
            }
            Stub::HelperDyn { pc } => (layout::KIND_HELPER_DYN, pc),
            Stub::Depth { pc } => (layout::KIND_DEPTH, pc),
            Stub::Callx { pc } => {
                self.a.store(W::Q, ENV, layout::FAULT_VALUE, TMP);
                (layout::KIND_CALLX, pc)
            }
        };
        self.a.store_imm(W::W, ENV, layout::FAULT_PC, pc as i32);
        self.a.store_imm(W::W, ENV, layout::FAULT_KIND, kind as i32);
        self.a.jmp32(0)
    }

    /// `jcc` (or `jmp` for `None`) to a new stub.
    fn jump_to_stub(&mut self, cc: Cond, s: Stub) {
        let at = self.a.jcc32(cc, 0);
        self.fixes.push(Fix::Stub {
            at,
            to: self.stubs.len(),
        });
        self.stubs.push(s);
    }

    /// A jump to slot `to` from the instruction at `self.pc` (of one slot).
    fn jump(&mut self, cc: Option<Cond>, to: usize) {
        let next = self.pc + 1;
        if to == next {
            return;
        }
        let long = if cc.is_some() { 6 } else { 5 };
        if to <= self.pc {
            // Backward: the target's offset is known.
            let t = self.addrs[to] as i64;
            let short_rel = t - (self.a.pos() as i64 + 2);
            if let Ok(r) = i8::try_from(short_rel) {
                match cc {
                    Some(c) => self.a.jcc8(c, r),
                    None => self.a.jmp8(r),
                };
            } else {
                let rel = (t - (self.a.pos() as i64 + long)) as i32;
                match cc {
                    Some(c) => self.a.jcc32(c, rel),
                    None => self.a.jmp32(rel),
                };
            }
            return;
        }
        // Forward: short if the previous pass proves it fits (sizes only
        // shrink from one pass to the next, so distances do too).
        let short = self
            .prev
            .as_ref()
            .is_some_and(|prev| i64::from(prev[to]) - i64::from(prev[next]) <= 127);
        let at = match (cc, short) {
            (Some(c), true) => self.a.jcc8(c, 0),
            (None, true) => self.a.jmp8(0),
            (Some(c), false) => self.a.jcc32(c, 0),
            (None, false) => self.a.jmp32(0),
        };
        self.fixes.push(Fix::Insn { at, short, to });
    }

    /// A fresh blinding key for the current instruction.
    fn key(&mut self) -> i32 {
        self.nkey += 1;
        self.keys.hash_one((self.pc, self.nkey)) as i32
    }

    fn key64(&mut self) -> u64 {
        self.nkey += 1;
        self.keys.hash_one((self.pc, self.nkey, 64u8))
    }

    /// `dst = imm` (sign-extended for 64 bits, zero-extended for 32),
    /// blinded when hardening: `mov dst, imm ^ k; xor dst, k`.
    fn mov_imm(&mut self, w64: bool, dst: Reg, imm: i32) {
        if self.set.harden && imm != 0 {
            let k = self.key();
            if w64 && imm < 0 {
                self.a.mov_r64_simm(dst, imm ^ k);
                self.a.alu_ri(Alu::Xor, true, dst, k);
            } else {
                self.a.mov_r32_imm(dst, (imm ^ k) as u32);
                self.a.alu_ri(Alu::Xor, false, dst, k);
            }
        } else if imm == 0 {
            self.a.alu_rr(Alu::Xor, false, dst, dst);
        } else if w64 && imm < 0 {
            self.a.mov_r64_simm(dst, imm);
        } else {
            self.a.mov_r32_imm(dst, imm as u32);
        }
    }

    /// A 64-bit constant into `dst`, blinded when hardening.
    fn mov_imm64(&mut self, dst: Reg, v: u64) {
        if self.set.harden && v != 0 {
            let k = self.key64();
            let kr = if dst == AX { TMP2 } else { AX };
            self.a.mov_r64_imm64(dst, v ^ k);
            self.a.mov_r64_imm64(kr, k);
            self.a.alu_rr(Alu::Xor, true, dst, kr);
        } else {
            self.a.load_imm64(dst, v);
        }
    }

    /// An immediate operand: as is, or rebuilt in `AX` when hardening.
    fn opnd(&mut self, imm: i32, w64: bool) -> Opnd {
        if self.set.harden && imm != 0 {
            self.mov_imm(w64, AX, imm);
            Opnd::Reg(AX)
        } else {
            Opnd::Imm(imm)
        }
    }

    /// `op dst, imm` through [`Gen::opnd`].
    fn alu_imm(&mut self, op: Alu, w64: bool, dst: Reg, imm: i32) {
        match self.opnd(imm, w64) {
            Opnd::Imm(i) => self.a.alu_ri(op, w64, dst, i),
            Opnd::Reg(r) => self.a.alu_rr(op, w64, dst, r),
        }
    }

    fn insn(&mut self, ins: Instruction) -> Result<(), JitError> {
        let pc = self.pc;
        // Flags carry over only into an instruction no jump lands on.
        let flags = self.flags.take().filter(|_| !self.p.is_target[pc]);
        // Knowledge of array map pointers dies with any write.
        let w = writes(&ins);
        for (r, k) in self.known.iter_mut().enumerate() {
            if w & (1 << r) != 0 {
                *k = None;
            }
        }
        match ins {
            Instruction::Alu {
                width,
                op,
                dst,
                src,
            } => {
                if let (AluOp::Mov, Width::W64, Source::Reg(s)) = (op, width, src) {
                    self.known[dst.index() as usize] = self.known[s.index() as usize];
                }
                let w64 = width == Width::W64;
                self.alu(w64, op, x(dst), src);
                if matches!(
                    op,
                    AluOp::Add | AluOp::Sub | AluOp::And | AluOp::Or | AluOp::Xor
                ) {
                    self.flags = Some((x(dst), w64));
                }
            }
            Instruction::Neg { width, dst } => self.a.neg(width == Width::W64, x(dst)),
            Instruction::Endian { order, bits, dst } => {
                let d = x(dst);
                match (order, bits) {
                    (ByteOrder::Le, 16) => self.a.movzx16_rr(d, d),
                    (ByteOrder::Le, 32) => self.a.mov_rr(false, d, d),
                    (ByteOrder::Le, _) => {}
                    (_, 16) => {
                        self.a.ror16_8(d);
                        self.a.movzx16_rr(d, d);
                    }
                    (_, 32) => self.a.bswap(false, d),
                    _ => self.a.bswap(true, d),
                }
            }
            Instruction::Load {
                size,
                signed,
                dst,
                src,
                off,
            } => {
                let wd = width_of(size);
                if signed {
                    self.a.load_sx(wd, x(dst), x(src), off.into());
                } else {
                    self.a.load(wd, x(dst), x(src), off.into());
                }
            }
            Instruction::Store {
                size,
                dst,
                off,
                src,
            } => {
                let wd = width_of(size);
                match src {
                    Source::Reg(s) => self.a.store(wd, x(dst), off.into(), x(s)),
                    Source::Imm(i) => match self.opnd(i, true) {
                        Opnd::Imm(i) => self.a.store_imm(wd, x(dst), off.into(), i),
                        Opnd::Reg(r) => self.a.store(wd, x(dst), off.into(), r),
                    },
                }
            }
            Instruction::Atomic {
                width,
                op,
                fetch,
                dst,
                src,
                off,
            } => self.atomic(width == Width::W64, op, fetch, x(dst), x(src), off.into()),
            Instruction::LdImm64 { dst, .. } => {
                let r = self.p.imm64[pc].ok_or(JitError::Unresolved {
                    pc,
                    what: LdImm64::Imm(0),
                })?;
                self.mov_imm64(x(dst), r.value);
                self.known[dst.index() as usize] = r.array;
            }
            Instruction::Ja { off, .. } => {
                let t = (pc as i64 + 1 + i64::from(off)) as usize;
                self.jump(None, t);
            }
            Instruction::Jmp {
                width,
                op,
                dst,
                src,
                off,
            } => {
                let w64 = width == Width::W64;
                let d = x(dst);
                let set = op == JmpOp::Set;
                let zero_test = matches!(op, JmpOp::Eq | JmpOp::Ne)
                    && src == Source::Imm(0)
                    && flags == Some((d, w64));
                match src {
                    // ZF already says whether dst is 0.
                    _ if zero_test => {}
                    Source::Reg(s) if set => self.a.test_rr(w64, d, x(s)),
                    Source::Reg(s) => self.a.alu_rr(Alu::Cmp, w64, d, x(s)),
                    Source::Imm(i) => match self.opnd(i, w64) {
                        Opnd::Imm(i) if set => self.a.test_ri(w64, d, i),
                        Opnd::Imm(0) => self.a.test_rr(w64, d, d),
                        Opnd::Imm(i) => self.a.alu_ri(Alu::Cmp, w64, d, i),
                        Opnd::Reg(r) if set => self.a.test_rr(w64, d, r),
                        Opnd::Reg(r) => self.a.alu_rr(Alu::Cmp, w64, d, r),
                    },
                }
                let t = (pc as i64 + 1 + i64::from(off)) as usize;
                self.jump(Some(cond(op)), t);
            }
            Instruction::Call(CallTarget::Helper(_)) => {
                let h = self.p.helpers[pc].ok_or(JitError::UnknownHelper { pc, id: -1 })?;
                if h.id == helper_id::TAIL_CALL {
                    self.tail_call();
                } else if let (helper_id::MAP_LOOKUP_ELEM, Some(arr)) = (h.id, self.known[1]) {
                    self.inline_array_lookup(arr);
                } else if is_builtin_redirect(&h) {
                    self.inline_redirect();
                } else {
                    self.a.mov_r64_imm64(TMP, h.func as usize as u64);
                    self.a.store(W::Q, ENV, layout::ENV_HELPER, TMP);
                    self.call_shim(Stub::Helper {
                        pc: pc as u32,
                        id: h.id,
                    });
                }
                self.known = [None; 11];
            }
            Instruction::Callx { reg } => {
                self.callx(x(reg));
                self.known = [None; 11];
            }
            Instruction::Call(CallTarget::Local(rel)) => {
                let to = (pc as i64 + 1 + i64::from(rel)) as usize;
                self.local_call(to);
                self.known = [None; 11];
            }
            Instruction::Call(CallTarget::Kfunc(_)) => {
                return Err(JitError::Unsupported {
                    pc,
                    feature: "a kernel function call (kfunc)",
                })
            }
            Instruction::Exit => self.a.ret(),
        }
        Ok(())
    }

    /// Calls the helper shim (the helper is already in `NativeEnv::helper`;
    /// r1-r5 are already in rdi, rsi, rdx, rcx, r8) and leaves through
    /// `stub` if the helper failed.
    fn call_shim(&mut self, stub: Stub) {
        self.a.mov_rr(true, R9, ENV);
        self.a.mov_r64_imm64(TMP, self.shim);
        self.a.call_r(TMP);
        self.a.cmp_mem_imm8(ENV, layout::ENV_FAULT, 0);
        self.jump_to_stub(Cond::Ne, stub);
    }

    fn callx(&mut self, r: Reg) {
        let pc = self.pc as u32;
        let (table, len) = self.callx;
        self.a.mov_rr(true, TMP, r);
        self.a.alu_ri(Alu::Cmp, true, TMP, len as i32);
        self.jump_to_stub(Cond::Ae, Stub::Callx { pc });
        self.a.mov_r64_imm64(AX, table);
        self.a.load_indexed8(AX, AX, TMP);
        self.a.test_rr(true, AX, AX);
        self.jump_to_stub(Cond::E, Stub::Callx { pc });
        self.a.store(W::Q, ENV, layout::ENV_HELPER, AX);
        self.a.store(W::Q, ENV, layout::FAULT_VALUE, TMP);
        self.call_shim(Stub::HelperDyn { pc });
    }

    /// `bpf_tail_call(ctx, map, index)`: only from the program's own frame
    /// (as Linux and the interpreter); the shim counts, looks the target up
    /// and returns its body's address or 0. r0-r5 are kept either way.
    fn tail_call(&mut self) {
        self.a.cmp_r_mem(RSP, ENV, layout::RSP_MAIN);
        let skip1 = self.a.jcc8(Cond::Ne, 0);
        // Six pushes keep rsp 16-byte aligned for the call.
        let saved = [RAX, RDI, RSI, RDX, RCX, R8];
        for r in saved {
            self.a.push(r);
        }
        // shim(env: *mut JitEnv, map = r2 (rsi), index = r3 (rdx)).
        self.a.lea(RDI, ENV, -layout::ENV_IN_JITENV);
        self.a.mov_r64_imm64(TMP, self.tail_shim);
        self.a.call_r(TMP);
        self.a.mov_rr(true, TMP, RAX);
        for r in saved.iter().rev() {
            self.a.pop(*r);
        }
        self.a.test_rr(true, TMP, TMP);
        let skip2 = self.a.jcc8(Cond::E, 0);
        self.a.jmp_r(TMP);
        let here = self.a.pos();
        self.a.patch8(skip1, here);
        self.a.patch8(skip2, here);
    }

    /// A bpf-to-bpf call: check the depth, save r6-r9 and r10, move r10
    /// down one frame, call, restore.
    fn local_call(&mut self, to: usize) {
        // rsp is RSP_MAIN - 48 * depth; depth + 1 must stay below MAX_FRAMES.
        let limit = CALL_FRAME * (MAX_FRAMES as i32 - 1);
        self.a.lea(TMP, RSP, limit);
        self.a.cmp_r_mem(TMP, ENV, layout::RSP_MAIN);
        self.jump_to_stub(Cond::Be, Stub::Depth { pc: self.pc as u32 });
        let saved = [RBX, R13, R14, R15, RBP];
        for r in saved {
            self.a.push(r);
        }
        self.a.lea(RBP, RBP, -(FRAME_SIZE as i32));
        let at = self.a.call32(0);
        self.fixes.push(Fix::Insn {
            at,
            short: false,
            to,
        });
        for r in saved.iter().rev() {
            self.a.pop(*r);
        }
    }

    /// `r0 = bpf_map_lookup_elem(array, r2)` inline, as Linux's
    /// `array_map_gen_lookup`: bounds-check the u32 key, compute the
    /// address; r1-r5 are left as they were.
    fn inline_array_lookup(&mut self, arr: ArrayLayout) {
        self.a.load(W::W, RAX, RSI, 0);
        match self.opnd(arr.max_entries as i32, false) {
            Opnd::Imm(i) => self.a.alu_ri(Alu::Cmp, false, RAX, i),
            Opnd::Reg(r) => self.a.alu_rr(Alu::Cmp, false, RAX, r),
        }
        let null1 = self.a.jcc32(Cond::Ae, 0);
        let es = u64::from(arr.elem_size);
        if es.is_power_of_two() {
            let sh = es.trailing_zeros() as u8;
            if sh > 0 {
                self.a.shift_ri(Shift::Shl, true, RAX, sh);
            }
        } else {
            match self.opnd(arr.elem_size as i32, true) {
                Opnd::Imm(i) => self.a.imul_rri(true, RAX, RAX, i),
                Opnd::Reg(r) => self.a.imul_rr(true, RAX, r),
            }
        }
        let mut null2 = None;
        if arr.percpu {
            self.a.load(W::W, TMP, ENV, layout::CPU);
            self.a.alu_ri(Alu::Cmp, false, TMP, arr.ncpus as i32);
            null2 = Some(self.a.jcc32(Cond::Ae, 0));
            self.mov_imm64(AX, arr.cpu_stride);
            self.a.imul_rr(true, TMP, AX);
            self.a.alu_rr(Alu::Add, true, RAX, TMP);
        }
        self.mov_imm64(TMP, arr.base);
        self.a.alu_rr(Alu::Add, true, RAX, TMP);
        let done = self.a.jmp8(0);
        let null = self.a.pos();
        self.a.patch32(null1, null);
        if let Some(n) = null2 {
            self.a.patch32(n, null);
        }
        self.a.alu_rr(Alu::Xor, false, RAX, RAX);
        let end = self.a.pos();
        self.a.patch8(done, end);
    }

    /// `r0 = bpf_redirect(r1, r2)` inline, exactly as the helper
    /// (`redirect` in `helpers/xdp.rs`): flags (r2) non-zero gives
    /// `XDP_ABORTED` and records nothing; flags 0 stores the port (r1's low
    /// 32 bits, zero-extended) in the run state's `redirect` as one 8-byte
    /// word, which the runtime reads whole after the run, and gives
    /// `XDP_REDIRECT`. r1-r5 are left as they were; r11 is scratch.
    ///
    /// ```text
    ///     xor  eax, eax                   ; r0 = XDP_ABORTED
    ///     test rsi, rsi
    ///     jne  done
    ///     mov  r11, [r12 + ENV_STATE]     ; the RunState
    ///     mov  eax, edi
    ///     mov  [r11 + STATE_REDIRECT], rax
    ///     mov  eax, XDP_REDIRECT          ; blinded when hardening
    /// done:
    /// ```
    fn inline_redirect(&mut self) {
        self.a.alu_rr(Alu::Xor, false, RAX, RAX);
        self.a.test_rr(true, RSI, RSI);
        let done = self.a.jcc8(Cond::Ne, 0);
        self.a.load(W::Q, TMP, ENV, layout::ENV_STATE);
        self.a.mov_rr(false, RAX, RDI);
        self.a.store(W::Q, TMP, layout::STATE_REDIRECT, RAX);
        self.mov_imm(false, RAX, action::XDP_REDIRECT as i32);
        let end = self.a.pos();
        self.a.patch8(done, end);
    }

    fn alu(&mut self, w64: bool, op: AluOp, d: Reg, src: Source) {
        let alu2 = |op: AluOp| match op {
            AluOp::Add => Some(Alu::Add),
            AluOp::Sub => Some(Alu::Sub),
            AluOp::Or => Some(Alu::Or),
            AluOp::And => Some(Alu::And),
            AluOp::Xor => Some(Alu::Xor),
            _ => None,
        };
        match (op, src) {
            (AluOp::Mov, Source::Reg(s)) => {
                let s = x(s);
                if !(w64 && s == d) {
                    self.a.mov_rr(w64, d, s);
                }
            }
            (AluOp::Mov, Source::Imm(i)) => self.mov_imm(w64, d, i),
            (AluOp::Movsx(bits), Source::Reg(s)) => self.a.movsx_rr(bits, w64, d, x(s)),
            (AluOp::Movsx(_), Source::Imm(i)) => self.mov_imm(w64, d, i), // not decodable
            (op, Source::Reg(s)) if alu2(op).is_some() => {
                if let Some(o) = alu2(op) {
                    self.a.alu_rr(o, w64, d, x(s));
                }
            }
            (op, Source::Imm(i)) if alu2(op).is_some() => {
                if let Some(o) = alu2(op) {
                    self.alu_imm(o, w64, d, i);
                }
            }
            (AluOp::Mul, Source::Reg(s)) => self.a.imul_rr(w64, d, x(s)),
            (AluOp::Mul, Source::Imm(i)) => match self.opnd(i, w64) {
                Opnd::Imm(i) => self.a.imul_rri(w64, d, d, i),
                Opnd::Reg(r) => self.a.imul_rr(w64, d, r),
            },
            (AluOp::Lsh | AluOp::Rsh | AluOp::Arsh, _) => {
                let sh = match op {
                    AluOp::Lsh => Shift::Shl,
                    AluOp::Rsh => Shift::Shr,
                    _ => Shift::Sar,
                };
                self.shift(w64, sh, d, src);
            }
            (AluOp::Div | AluOp::Mod | AluOp::Sdiv | AluOp::Smod, _) => {
                self.divmod(w64, op, d, src)
            }
            // Covered above; listed for exhaustiveness.
            (AluOp::Add | AluOp::Sub | AluOp::Or | AluOp::And | AluOp::Xor, _) => {}
        }
    }

    fn shift(&mut self, w64: bool, sh: Shift, d: Reg, src: Source) {
        match src {
            Source::Imm(i) => {
                // The count is masked to the width, as RFC 9669 says; the
                // masked count is at most 6 bits and is not blinded.
                let n = (i as u32 & if w64 { 63 } else { 31 }) as u8;
                if n != 0 {
                    self.a.shift_ri(sh, w64, d, n);
                } else if !w64 {
                    self.a.mov_rr(false, d, d);
                }
            }
            Source::Reg(s) => {
                let s = x(s);
                if self.set.bmi2 {
                    self.a.shiftx(sh, w64, d, d, s);
                } else if s == RCX {
                    self.a.shift_cl(sh, w64, d);
                } else if d == RCX {
                    // dst is r4 (rcx): shift a copy, since cl must hold the count.
                    self.a.mov_rr(true, TMP, RCX);
                    self.a.mov_rr(true, RCX, s);
                    self.a.shift_cl(sh, w64, TMP);
                    self.a.mov_rr(true, RCX, TMP);
                } else {
                    self.a.mov_rr(true, TMP, RCX);
                    self.a.mov_rr(true, RCX, s);
                    self.a.shift_cl(sh, w64, d);
                    self.a.mov_rr(true, RCX, TMP);
                }
            }
        }
    }

    /// Division and modulo with RFC 9669's rules: by zero, `div` gives 0
    /// and `mod` leaves dst (zero-extended for 32 bits); signed `MIN / -1`
    /// gives `MIN` and `MIN % -1` gives 0 (x86 `idiv` would trap, so -1 is
    /// handled before it).
    fn divmod(&mut self, w64: bool, op: AluOp, d: Reg, src: Source) {
        let signed = matches!(op, AluOp::Sdiv | AluOp::Smod);
        let is_mod = matches!(op, AluOp::Mod | AluOp::Smod);
        let zero_case = |g: &mut Self| {
            if !is_mod {
                g.a.alu_rr(Alu::Xor, false, d, d);
            } else if !w64 {
                g.a.mov_rr(false, d, d);
            }
        };
        let neg1_case = |g: &mut Self| {
            if is_mod {
                g.a.alu_rr(Alu::Xor, false, d, d);
            } else {
                g.a.neg(w64, d);
            }
        };
        let checks = match src {
            Source::Imm(i) => {
                // The divisor as the operation sees it.
                let v = if w64 {
                    i as i64 as u64
                } else {
                    u64::from(i as u32)
                };
                if v == 0 {
                    zero_case(self);
                    return;
                }
                if signed && i == -1 {
                    neg1_case(self);
                    return;
                }
                if !signed && v.is_power_of_two() {
                    let k = v.trailing_zeros() as u8;
                    if is_mod {
                        // v - 1 < 2^31 here, so the immediate is exact.
                        self.alu_imm(Alu::And, w64, d, (v - 1) as i32);
                    } else if k > 0 {
                        self.a.shift_ri(Shift::Shr, w64, d, k);
                    } else if !w64 {
                        self.a.mov_rr(false, d, d);
                    }
                    return;
                }
                self.mov_imm(w64, TMP, i);
                false
            }
            Source::Reg(s) => {
                self.a.mov_rr(w64, TMP, x(s));
                true
            }
        };
        let (mut zero_j, mut neg1_j) = (None, None);
        if checks {
            self.a.test_rr(w64, TMP, TMP);
            zero_j = Some(self.a.jcc8(Cond::E, 0));
            if signed {
                self.a.alu_ri(Alu::Cmp, w64, TMP, -1);
                neg1_j = Some(self.a.jcc8(Cond::E, 0));
            }
        }
        if d != RAX {
            self.a.mov_rr(true, TMP2, RAX);
        }
        if d != RDX {
            self.a.mov_rr(true, AX, RDX);
        }
        if d != RAX {
            self.a.mov_rr(w64, RAX, d);
        }
        if signed {
            self.a.cqo(w64);
        } else {
            self.a.alu_rr(Alu::Xor, false, RDX, RDX);
        }
        self.a.div(w64, signed, TMP);
        let res = if is_mod { RDX } else { RAX };
        if d != res {
            self.a.mov_rr(w64, d, res);
        }
        if d != RAX {
            self.a.mov_rr(true, RAX, TMP2);
        }
        if d != RDX {
            self.a.mov_rr(true, RDX, AX);
        }
        if let Some(z) = zero_j {
            let done1 = self.a.jmp8(0);
            let here = self.a.pos();
            self.a.patch8(z, here);
            zero_case(self);
            let mut dones = vec![done1];
            if let Some(n) = neg1_j {
                dones.push(self.a.jmp8(0));
                let here = self.a.pos();
                self.a.patch8(n, here);
                neg1_case(self);
            }
            let end = self.a.pos();
            for j in dones {
                self.a.patch8(j, end);
            }
        }
    }

    fn atomic(&mut self, w64: bool, op: AtomicOp, fetch: bool, d: Reg, s: Reg, off: i32) {
        let alu = match op {
            AtomicOp::Add => Alu::Add,
            AtomicOp::Or => Alu::Or,
            AtomicOp::And => Alu::And,
            AtomicOp::Xor => Alu::Xor,
            AtomicOp::Xchg => {
                self.a.xchg_mem(w64, d, off, s);
                return;
            }
            AtomicOp::Cmpxchg => {
                self.a.lock_cmpxchg(w64, d, off, s);
                if !w64 {
                    // cmpxchg32 leaves rax's upper half alone on success;
                    // eBPF's r0 is the zero-extended old value either way.
                    self.a.mov_rr(false, RAX, RAX);
                }
                return;
            }
        };
        if !fetch {
            self.a.lock_alu_mem(alu, w64, d, off, s);
            return;
        }
        if op == AtomicOp::Add {
            self.a.lock_xadd(w64, d, off, s);
            return;
        }
        // Fetch and/or/xor: a cmpxchg loop (as Linux). rax is cmpxchg's
        // comparand, so r0 is kept in AX meanwhile.
        self.a.mov_rr(true, AX, RAX);
        let rs = if s == RAX { AX } else { s };
        let rd = if d == RAX { AX } else { d };
        let top = self.a.pos();
        self.a.load(if w64 { W::Q } else { W::W }, RAX, rd, off);
        self.a.mov_rr(w64, TMP, RAX);
        self.a.alu_rr(alu, w64, TMP, rs);
        self.a.lock_cmpxchg(w64, rd, off, TMP);
        let rel = top as i64 - (self.a.pos() as i64 + 2);
        self.a.jcc8(Cond::Ne, rel as i8);
        self.a.mov_rr(w64, rs, RAX);
        self.a.mov_rr(true, RAX, AX);
    }
}

/// The destination register number of an ALU instruction.
fn d_index(ins: &Instruction) -> usize {
    match ins {
        Instruction::Alu { dst, .. } => dst.index() as usize,
        _ => 0,
    }
}

fn width_of(s: Size) -> W {
    match s {
        Size::B => W::B,
        Size::H => W::H,
        Size::W => W::W,
        Size::DW => W::Q,
    }
}

fn cond(op: JmpOp) -> Cond {
    match op {
        JmpOp::Eq => Cond::E,
        JmpOp::Ne | JmpOp::Set => Cond::Ne,
        JmpOp::Gt => Cond::A,
        JmpOp::Ge => Cond::Ae,
        JmpOp::Lt => Cond::B,
        JmpOp::Le => Cond::Be,
        JmpOp::Sgt => Cond::G,
        JmpOp::Sge => Cond::Ge,
        JmpOp::Slt => Cond::L,
        JmpOp::Sle => Cond::Le,
    }
}
