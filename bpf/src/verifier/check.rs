//! The path explorer and the transfer function of every instruction.
//!
//! [`Verifier::run`] follows every path from the entry, depth first: at a
//! conditional jump whose outcome the state does not decide, the taken
//! side is set aside and the fall-through side followed; a path ends at
//! the program's `exit`, at a dead branch, or when it is *pruned*.
//!
//! # Pruning
//!
//! At prune points (see [`super::cfg`]) the current state is compared with
//! the states earlier paths had there. Each stored state is a
//! *checkpoint*; a checkpoint is *complete* once every path that went
//! through it has ended. If a complete checkpoint's state includes the
//! current one ([`state_safe`]), every continuation of the current path is
//! one the checkpoint's exploration already proved safe, so the path ends.
//!
//! Only complete checkpoints may prune. That is what makes pruning prove
//! termination as well as safety: a concrete run from the current state
//! follows the checkpoint's finished exploration, which ended everywhere
//! (in an exit, or in states pruned against checkpoints completed even
//! earlier, which by the same argument end too). A checkpoint still in
//! progress is an ancestor of the current path (the exploration is depth
//! first); if the current state *equals* it on everything that matters,
//! the loop between them would repeat forever, and the program is refused.
//! Loops that do end are explored iteration by iteration until their
//! condition decides, within the instruction budget.
//!
//! Checkpoints in progress are indexed by instruction and a hash of what
//! the exact comparison looks at ([`exact_hash`]), so spotting a repeated
//! state costs one lookup however many iterations a loop has had. Complete
//! checkpoints sit in a list per instruction, at most
//! `MAX_STATES_PER_INSN`: when it overflows, the state that pruned least
//! for the comparisons it cost is forgotten. At most `MAX_STORED_STATES`
//! states are kept in all. Forgetting a state or not storing one only
//! costs pruning, never soundness: a path that is not pruned is explored.
//!
//! # Transfer functions
//!
//! Each instruction is checked and applied to the state in the style of
//! Linux's `do_check`: `alu` (`adjust_scalar_min_max_vals` and
//! `adjust_ptr_min_max_vals`), `mem_read`/`mem_write`/`atomic`
//! (`check_mem_access` by pointer kind: context fields, stack bytes,
//! packet range, map value and memory bounds), `cond_jump`
//! (`check_cond_jmp_op`: scalar refinement, null checks,
//! `find_good_pkt_pointers`), `helper_call` (`check_helper_call`, driven by
//! the registry's argument and return types), local calls and `exit`.

use std::collections::HashMap;

use super::cfg::Cfg;
use super::log::{Leak, Reason, Step, Trail, VerifyError};
use super::scalar::{self, Cond, Scalar};
use super::state::{
    exact_hash, locate, render, state_safe, Byte, Frame, Kind, LiveSet, RefEntry, Reg, Slot, State,
    Uninit, STACK_BYTES,
};
use super::tnum::Tnum;
use super::{CtxField, CtxLoad, ProgKind, VerifyOptions, VerifyStats};
use crate::helpers::{id as hid, ArgType, Registry, RetType};
use crate::isa::{
    AluOp, AtomicOp, ByteOrder, CallTarget, Instruction, JmpOp, LdImm64, Size, Source, Width,
};
use crate::maps::{flags, MapDef, MapType};

/// Frames a path may have (the program's own plus seven nested calls).
pub const MAX_FRAMES: usize = 8;
/// The largest constant or variable offset a pointer may carry (Linux's
/// `BPF_MAX_VAR_OFF`).
const MAX_VAR_OFF: i64 = 1 << 29;
/// The largest variable offset a packet pointer may carry and still learn
/// a range (Linux's `MAX_PACKET_OFF`).
const MAX_PACKET_OFF: u64 = 0xffff;
/// States kept per prune point; beyond that, complete ones that prune
/// least are forgotten.
const MAX_STATES_PER_INSN: usize = 64;
/// States kept at once over the whole program; beyond that no new
/// checkpoints are made (pruning weakens, memory stays bounded: about
/// 1.5 KiB a state).
const MAX_STORED_STATES: usize = 64 * 1024;

/// What the verifier knows about a map the program may reference.
pub(crate) struct MapInfo {
    pub name: String,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub flags: u32,
    /// The map-table index of an outer map's inner-map template.
    pub inner: Option<u32>,
}

impl MapInfo {
    fn of(def: &MapDef, name: String) -> MapInfo {
        MapInfo {
            name,
            map_type: def.map_type,
            key_size: def.key_size,
            value_size: def.value_size,
            flags: def.flags,
            inner: None,
        }
    }

    fn read_only(&self) -> bool {
        self.flags & flags::BPF_F_RDONLY_PROG != 0
    }
}

/// The map table: the program's maps by loader index, then the inner-map
/// templates of its maps of maps.
pub(crate) fn map_table(defs: &[&MapDef]) -> Vec<MapInfo> {
    let mut out: Vec<MapInfo> = defs
        .iter()
        .map(|d| MapInfo::of(d, d.name.clone()))
        .collect();
    for (i, d) in defs.iter().enumerate() {
        if let Some(inner) = &d.inner {
            out.push(MapInfo::of(inner, format!("{}.inner", d.name)));
            out[i].inner = Some((out.len() - 1) as u32);
        }
    }
    out
}

struct Checkpoint {
    state: Option<Box<State>>,
    /// [`exact_hash`] of the state.
    hash: u64,
    /// Where it was taken.
    insn: usize,
    parent: Option<u32>,
    /// Paths and unfinished child checkpoints below this one.
    pending: u32,
    hits: u32,
    misses: u32,
}

/// One path being explored.
struct Path {
    state: State,
    pc: usize,
    /// The newest checkpoint on this path.
    parent: Option<u32>,
    trail: Trail,
}

enum Flow {
    Next(usize),
    Done,
}

/// What kind of memory access a check is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    /// Read, then written (a helper's in-out argument).
    ReadWrite,
}

/// The exploration of one program.
pub(crate) struct Verifier<'a> {
    cfg: Cfg,
    kind: ProgKind,
    helpers: &'a Registry,
    maps: Vec<MapInfo>,
    prog_maps: usize,
    opts: VerifyOptions,
    pub log: String,
    next_id: u32,
    pub processed: u64,
    checkpoints: Vec<Checkpoint>,
    /// Complete checkpoints, by instruction: these prune.
    explored: Vec<Vec<u32>>,
    /// Unfinished checkpoints by instruction and exact hash: these spot
    /// infinite loops.
    in_progress: HashMap<(usize, u64), Vec<u32>>,
    stored: usize,
    pub peak_states: usize,
    pub pruned: u64,
    /// Per slot: 0 unseen, 1 accessed the context, 2 other memory.
    ctx_use: Vec<u8>,
    pub ctx_loads: Vec<CtxLoad>,
    pub max_stack: i64,
}

impl<'a> Verifier<'a> {
    pub fn new(
        cfg: Cfg,
        kind: ProgKind,
        helpers: &'a Registry,
        maps: Vec<MapInfo>,
        prog_maps: usize,
        opts: &VerifyOptions,
    ) -> Verifier<'a> {
        let len = cfg.insns.len();
        Verifier {
            cfg,
            kind,
            helpers,
            maps,
            prog_maps,
            opts: opts.clone(),
            log: String::new(),
            next_id: 0,
            processed: 0,
            checkpoints: Vec::new(),
            explored: vec![Vec::new(); len],
            in_progress: HashMap::new(),
            stored: 0,
            peak_states: 0,
            pruned: 0,
            ctx_use: vec![0; len],
            ctx_loads: Vec::new(),
            max_stack: 0,
        }
    }

    pub fn stats(&self, duration: std::time::Duration) -> VerifyStats {
        VerifyStats {
            insns_processed: self.processed,
            states: self.checkpoints.len() as u64,
            peak_states: self.peak_states as u64,
            pruned: self.pruned,
            duration,
        }
    }

    fn new_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn map_name(&self, aux: u32) -> String {
        self.maps
            .get(aux as usize)
            .map_or_else(|| format!("#{aux}"), |m| m.name.clone())
    }

    fn render(&self, st: &State) -> String {
        render(st, &|aux| self.map_name(aux))
    }

    fn initial_state(&self) -> State {
        let mut st = State::entry();
        match self.kind {
            ProgKind::Xdp => st.cur_mut().regs[1] = Reg::pointer(Kind::Ctx, 0),
            ProgKind::Memory { len } => {
                st.cur_mut().regs[1] = Reg::pointer(Kind::Mem, len);
                st.cur_mut().regs[2] = Reg::scalar(Scalar::konst(len.into()));
            }
        }
        st
    }

    fn fail(&self, p: &Path, reason: Reason) -> VerifyError {
        let text = self
            .cfg
            .insns
            .get(p.pc)
            .copied()
            .flatten()
            .map(|i| crate::disasm::format_instruction(&i))
            .unwrap_or_default();
        VerifyError {
            insn: p.pc,
            reason,
            text,
            state: self.render(&p.state),
            path: p.trail.last(32),
            path_len: p.trail.len(),
            log: self.log.clone(),
        }
    }

    /// Explores every path.
    // The error is made once per verification, on the way out: its size
    // costs nothing that matters.
    #[allow(clippy::result_large_err)]
    pub fn run(&mut self) -> Result<(), VerifyError> {
        let mut stack = vec![Path {
            state: self.initial_state(),
            pc: 0,
            parent: None,
            trail: Trail::default(),
        }];
        let mut resumed = false;
        while let Some(mut p) = stack.pop() {
            if self.opts.log_level >= 2 && resumed {
                let line = format!("from branch to {}: {}\n", p.pc, self.render(&p.state));
                self.log.push_str(&line);
            }
            resumed = true;
            loop {
                self.processed += 1;
                if self.processed > self.opts.budget {
                    let r = Reason::TooComplex {
                        processed: self.processed,
                        budget: self.opts.budget,
                    };
                    return Err(self.fail(&p, r));
                }
                if self.cfg.prune[p.pc] {
                    match self.visit(&mut p) {
                        Ok(true) => {
                            if self.opts.log_level >= 2 {
                                let line = format!("{}: safe (pruned)\n", p.pc);
                                self.log.push_str(&line);
                            }
                            self.path_done(p.parent);
                            break;
                        }
                        Ok(false) => {}
                        Err(r) => return Err(self.fail(&p, r)),
                    }
                }
                if self.opts.log_level >= 2 {
                    let ins = self.cfg.insns[p.pc]
                        .map_or_else(String::new, |i| crate::disasm::format_instruction(&i));
                    let line = format!("{}: {ins:<32} ; {}\n", p.pc, self.render(&p.state));
                    self.log.push_str(&line);
                }
                match self.step(&mut p, &mut stack) {
                    Ok(Flow::Next(pc)) => p.pc = pc,
                    Ok(Flow::Done) => {
                        self.path_done(p.parent);
                        break;
                    }
                    Err(r) => return Err(self.fail(&p, r)),
                }
                self.peak_states = self.peak_states.max(self.stored + stack.len() + 1);
            }
        }
        Ok(())
    }

    /// Registers that matter in each frame at `pc`.
    fn live_masks(&self, st: &State, pc: usize) -> Vec<LiveSet> {
        let n = st.frames.len();
        (0..n)
            .map(|i| {
                if i + 1 == n {
                    self.cfg.live[pc]
                } else {
                    // Caller frames: what survives the return (r6-r9).
                    let site = st.frames[i + 1].callsite.unwrap_or(0);
                    self.cfg.live.get(site + 1).copied().unwrap_or(0) & 0b11_1100_0000
                }
            })
            .collect()
    }

    /// Compares the path's state with the checkpoints at its instruction.
    /// `Ok(true)`: pruned. `Ok(false)`: go on (a checkpoint was added,
    /// unless the store is full).
    fn visit(&mut self, p: &mut Path) -> Result<bool, Reason> {
        let pc = p.pc;
        p.state.clear_singular_scalar_ids();
        let live = self.live_masks(&p.state, pc);
        let hash = exact_hash(&p.state, &live);
        // An unfinished ancestor with the very same state: a loop that
        // would repeat forever.
        if let Some(list) = self.in_progress.get(&(pc, hash)) {
            for &ck in list {
                if let Some(old) = &self.checkpoints[ck as usize].state {
                    if state_safe(old, &p.state, &live, true) {
                        return Err(Reason::InfiniteLoop);
                    }
                }
            }
        }
        for i in 0..self.explored[pc].len() {
            let ck = self.explored[pc][i] as usize;
            let Some(old) = &self.checkpoints[ck].state else {
                continue;
            };
            if state_safe(old, &p.state, &live, false) {
                self.pruned += 1;
                self.checkpoints[ck].hits += 1;
                return Ok(true);
            }
            self.checkpoints[ck].misses += 1;
        }
        if self.stored >= MAX_STORED_STATES {
            return Ok(false);
        }
        let id = self.checkpoints.len() as u32;
        self.checkpoints.push(Checkpoint {
            state: Some(Box::new(p.state.clone())),
            hash,
            insn: pc,
            parent: p.parent,
            pending: 1,
            hits: 0,
            misses: 0,
        });
        self.stored += 1;
        self.in_progress.entry((pc, hash)).or_default().push(id);
        p.parent = Some(id);
        Ok(false)
    }

    /// A path below checkpoint `ck` ended: completes checkpoints upwards.
    /// A complete checkpoint moves from the in-progress index to the list
    /// that prunes; when that list is full, the complete state that pruned
    /// least for the comparisons it cost is forgotten.
    fn path_done(&mut self, mut ck: Option<u32>) {
        while let Some(c) = ck {
            let cp = &mut self.checkpoints[c as usize];
            cp.pending -= 1;
            if cp.pending > 0 {
                break;
            }
            ck = cp.parent;
            let (insn, hash) = (cp.insn, cp.hash);
            if let Some(list) = self.in_progress.get_mut(&(insn, hash)) {
                list.retain(|&x| x != c);
                if list.is_empty() {
                    self.in_progress.remove(&(insn, hash));
                }
            }
            let list = &mut self.explored[insn];
            list.push(c);
            if list.len() > MAX_STATES_PER_INSN {
                let checkpoints = &self.checkpoints;
                let worst = list
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, &x)| {
                        let k = &checkpoints[x as usize];
                        i64::from(k.misses) - 4 * i64::from(k.hits)
                    })
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                let victim = list.swap_remove(worst);
                if self.checkpoints[victim as usize].state.take().is_some() {
                    self.stored -= 1;
                }
            }
        }
    }

    fn fork(&mut self, ck: Option<u32>) {
        if let Some(c) = ck {
            self.checkpoints[c as usize].pending += 1;
        }
    }

    fn step(&mut self, p: &mut Path, stack: &mut Vec<Path>) -> Result<Flow, Reason> {
        let pc = p.pc;
        let Some(ins) = self.cfg.insns[pc] else {
            return Err(Reason::JumpIntoLdImm64 { target: pc });
        };
        let st = &mut p.state;
        match ins {
            Instruction::Alu {
                width,
                op,
                dst,
                src,
            } => self.alu(st, width, op, dst.index(), src)?,
            Instruction::Neg { width, dst } => {
                let r = self.scalar_operand(st, dst.index())?;
                *st.reg_mut(dst.index()) = Reg::scalar(scalar::neg(width, &r));
            }
            Instruction::Endian { order, bits, dst } => {
                let v = self.scalar_operand(st, dst.index())?;
                *st.reg_mut(dst.index()) = Reg::scalar(endian(order, bits, &v));
            }
            Instruction::Load {
                size,
                signed,
                dst,
                src,
                off,
            } => {
                if dst.index() == 10 {
                    return Err(Reason::FramePointerWrite);
                }
                let base = self.read(st, src.index())?;
                let v = self.mem_read(st, &base, src.index(), off.into(), size, signed, pc)?;
                *st.reg_mut(dst.index()) = v;
            }
            Instruction::Store {
                size,
                dst,
                off,
                src,
            } => {
                let base = self.read(st, dst.index())?;
                let (value, vreg) = match src {
                    Source::Reg(r) => (self.read(st, r.index())?, Some(r.index())),
                    Source::Imm(i) => (Reg::scalar(Scalar::konst(i as i64 as u64)), None),
                };
                self.mem_write(st, &base, dst.index(), off.into(), size, &value, vreg, pc)?;
            }
            Instruction::Atomic {
                width,
                op,
                fetch,
                dst,
                src,
                off,
            } => self.atomic(
                st,
                width,
                op,
                fetch,
                dst.index(),
                src.index(),
                off.into(),
                pc,
            )?,
            Instruction::LdImm64 { dst, value } => {
                if dst.index() == 10 {
                    return Err(Reason::FramePointerWrite);
                }
                let r = self.ld_imm64(value)?;
                *st.reg_mut(dst.index()) = r;
                return Ok(Flow::Next(pc + 2));
            }
            Instruction::Ja { off, .. } => {
                return Ok(Flow::Next((pc as i64 + 1 + i64::from(off)) as usize))
            }
            Instruction::Jmp {
                width,
                op,
                dst,
                src,
                off,
            } => return self.cond_jump(p, stack, width, op, dst.index(), src, off),
            Instruction::Call(CallTarget::Helper(id)) => self.helper_call(st, id.into(), pc)?,
            Instruction::Call(CallTarget::Local(rel)) => {
                let target = (pc as i64 + 1 + i64::from(rel)) as usize;
                if st.frames.len() >= MAX_FRAMES {
                    return Err(Reason::CallDepth);
                }
                let depth = st.frames.len();
                let mut frame = Frame::new(target, depth, Some(pc));
                frame.regs[1..=5].copy_from_slice(&st.cur().regs[1..=5]);
                st.frames.push(frame);
                p.trail = p.trail.push(Step::Call { at: pc, to: target });
                return Ok(Flow::Next(target));
            }
            Instruction::Call(CallTarget::Kfunc(_)) => {
                return Err(Reason::Unsupported {
                    what: "a kernel function call (kfunc)",
                })
            }
            Instruction::Callx { reg } => {
                let r = self.read(st, reg.index())?;
                let id = match (r.kind, r.val.const_value()) {
                    (Kind::Scalar, Some(v)) if v < (1 << 31) && v != u64::from(hid::TAIL_CALL) => v,
                    _ => {
                        return Err(Reason::Unsupported {
                            what: "callx through a register that does not hold a known helper \
                                   number",
                        })
                    }
                };
                self.helper_call(st, id as i64, pc)?;
            }
            Instruction::Exit => return self.exit(p),
        }
        Ok(Flow::Next(pc + 1))
    }

    /// Reads register `r`, which must be initialised.
    fn read(&self, st: &State, r: u8) -> Result<Reg, Reason> {
        let reg = *st.reg(r);
        if reg.kind == Kind::NotInit {
            let why = match reg.uninit {
                Uninit::Never => "it was never written on this path",
                Uninit::ClobberedByCall => "a call clobbers r0-r5; it was not written since",
                Uninit::Released => "the record it pointed to was submitted or discarded",
            };
            return Err(Reason::UninitRegister { reg: r, why });
        }
        Ok(reg)
    }

    /// Reads register `r` as a number for an operation that converts it.
    fn scalar_operand(&self, st: &State, r: u8) -> Result<Scalar, Reason> {
        if r == 10 {
            return Err(Reason::FramePointerWrite);
        }
        let reg = self.read(st, r)?;
        if reg.kind.is_pointer() {
            return Err(Reason::PointerLeak {
                reg: r,
                how: Leak::Conversion,
            });
        }
        Ok(reg.val)
    }

    fn alu(
        &mut self,
        st: &mut State,
        width: Width,
        op: AluOp,
        dst: u8,
        src: Source,
    ) -> Result<(), Reason> {
        if dst == 10 {
            return Err(Reason::FramePointerWrite);
        }
        let (s, sreg) = match src {
            Source::Reg(r) => (self.read(st, r.index())?, Some(r.index())),
            Source::Imm(i) => (Reg::scalar(Scalar::konst(i as i64 as u64)), None),
        };
        match op {
            AluOp::Mov if width == Width::W64 => {
                let mut v = s;
                if let Some(r) = sreg {
                    if v.kind == Kind::Scalar && v.val.const_value().is_none() {
                        if v.id == 0 {
                            v.id = self.new_id();
                            st.reg_mut(r).id = v.id;
                        }
                    } else if v.kind == Kind::Scalar {
                        v.id = 0;
                    }
                }
                *st.reg_mut(dst) = v;
            }
            AluOp::Mov | AluOp::Movsx(_) => {
                if s.kind.is_pointer() {
                    return Err(Reason::PointerLeak {
                        reg: sreg.unwrap_or(dst),
                        how: Leak::Conversion,
                    });
                }
                let v = scalar::alu(op, width, &Scalar::konst(0), &s.val);
                *st.reg_mut(dst) = Reg::scalar(v);
            }
            _ => {
                let d = self.read(st, dst)?;
                let result = match (d.kind.is_pointer(), s.kind.is_pointer()) {
                    (false, false) => Reg::scalar(scalar::alu(op, width, &d.val, &s.val)),
                    (true, false) => self.ptr_arith(d, &s.val, op, width, dst)?,
                    (false, true) if op == AluOp::Add => {
                        self.ptr_arith(s, &d.val, op, width, sreg.unwrap_or(dst))?
                    }
                    (false, true) => {
                        return Err(Reason::PointerArith {
                            reg: dst,
                            why: format!(
                                "{} with a pointer operand is prohibited (only scalar + pointer)",
                                alu_name(op)
                            ),
                        })
                    }
                    (true, true) => {
                        if op == AluOp::Sub && same_region(&d, &s) {
                            Reg::scalar(match width {
                                Width::W64 => Scalar::UNKNOWN,
                                Width::W32 => Scalar::sized(4),
                            })
                        } else if op == AluOp::Sub {
                            return Err(Reason::PointerLeak {
                                reg: dst,
                                how: Leak::OtherRegion,
                            });
                        } else {
                            return Err(Reason::PointerArith {
                                reg: dst,
                                why: format!("pointer {} pointer prohibited", alu_name(op)),
                            });
                        }
                    }
                };
                *st.reg_mut(dst) = result;
            }
        }
        Ok(())
    }

    /// `p OP off` for a pointer `p` and a scalar `off` (Linux's
    /// `adjust_ptr_min_max_vals`).
    fn ptr_arith(
        &mut self,
        p: Reg,
        off: &Scalar,
        op: AluOp,
        width: Width,
        reg: u8,
    ) -> Result<Reg, Reason> {
        let name = p.kind.name();
        let bad = |why: String| Err(Reason::PointerArith { reg, why });
        if width == Width::W32 {
            return bad("32-bit pointer arithmetic prohibited".into());
        }
        match op {
            AluOp::Add | AluOp::Sub => {}
            AluOp::And | AluOp::Or | AluOp::Xor => {
                return bad(format!(
                    "bitwise operator {} on pointer prohibited",
                    alu_name(op)
                ))
            }
            _ => {
                return bad(format!(
                    "pointer arithmetic with {} operator prohibited",
                    alu_name(op)
                ))
            }
        }
        if p.kind.maybe_null() {
            return bad(format!(
                "pointer arithmetic on {name} prohibited, null-check it first"
            ));
        }
        if matches!(p.kind, Kind::PacketEnd | Kind::MapPtr) {
            return bad(format!("pointer arithmetic on {name} prohibited"));
        }
        let mut r = p;
        if let Some(c) = off.const_value() {
            let c = c as i64;
            let new = if op == AluOp::Add {
                i64::from(p.off).checked_add(c)
            } else {
                i64::from(p.off).checked_sub(c)
            };
            return match new {
                Some(o) if o.abs() < MAX_VAR_OFF => {
                    r.off = o as i32;
                    Ok(r)
                }
                _ => bad(format!(
                    "math between {name} pointer and {c} is not allowed (offsets are limited \
                     to ±2^29)"
                )),
            };
        }
        let v = scalar::alu(op, Width::W64, &p.val, off);
        if v.smin == i64::MIN {
            return bad(format!(
                "math between {name} pointer and register with unbounded min value is not \
                 allowed"
            ));
        }
        if v.smin <= -MAX_VAR_OFF {
            return bad(format!(
                "value {} makes {name} pointer be out of bounds",
                v.smin
            ));
        }
        r.val = v;
        match p.kind {
            Kind::Packet | Kind::PacketMeta => {
                r.id = self.new_id();
                r.range = 0;
            }
            _ => r.id = 0,
        }
        Ok(r)
    }

    fn ld_imm64(&self, value: LdImm64) -> Result<Reg, Reason> {
        let map = |i: i32| -> Result<usize, Reason> {
            usize::try_from(i)
                .ok()
                .filter(|&i| i < self.prog_maps)
                .ok_or(Reason::BadMap {
                    index: i.into(),
                    why: format!("the program has {} maps", self.prog_maps),
                })
        };
        Ok(match value {
            LdImm64::Imm(v) => Reg::scalar(Scalar::konst(v)),
            LdImm64::MapIdx(i) => Reg::pointer(Kind::MapPtr, map(i)? as u32),
            LdImm64::MapIdxValue { map: i, off } => {
                let m = map(i)?;
                let info = &self.maps[m];
                if info.map_type != MapType::Array {
                    return Err(Reason::BadMap {
                        index: i.into(),
                        why: format!(
                            "direct value access needs an array map, {} is a {}",
                            info.name,
                            info.map_type.name()
                        ),
                    });
                }
                if off >= info.value_size {
                    return Err(Reason::BadMap {
                        index: i.into(),
                        why: format!(
                            "offset {off} is past the value of {} (value_size {})",
                            info.name, info.value_size
                        ),
                    });
                }
                let mut r = Reg::pointer(Kind::MapValue, m as u32);
                r.off = off as i32;
                r
            }
            LdImm64::MapFd(_) | LdImm64::MapValue { .. } => {
                return Err(Reason::Unsupported {
                    what: "a map reference by file descriptor (the loader links maps by index)",
                })
            }
            LdImm64::BtfId(_) => {
                return Err(Reason::Unsupported {
                    what: "a kernel variable (ld_imm64 BTF id)",
                })
            }
            LdImm64::Func(_) => {
                return Err(Reason::Unsupported {
                    what: "a function pointer (ld_imm64 func, callbacks)",
                })
            }
        })
    }

    /// Records whether the instruction at `pc` accessed the context.
    fn note_ctx_use(&mut self, pc: usize, is_ctx: bool) -> Result<(), Reason> {
        let mark = if is_ctx { 1 } else { 2 };
        match self.ctx_use[pc] {
            0 => {
                self.ctx_use[pc] = mark;
                Ok(())
            }
            m if m == mark => Ok(()),
            _ => Err(Reason::MixedCtxAccess),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn mem_read(
        &mut self,
        st: &State,
        base: &Reg,
        reg: u8,
        off: i64,
        size: Size,
        signed: bool,
        pc: usize,
    ) -> Result<Reg, Reason> {
        let bytes = size.bytes();
        self.note_ctx_use(pc, base.kind == Kind::Ctx)?;
        let loaded = |bytes: u32| {
            let v = Scalar::sized(bytes);
            if signed {
                v.sext(bytes * 8)
            } else {
                v
            }
        };
        match base.kind {
            Kind::Ctx => self.ctx_read(base, off, bytes, signed, pc),
            Kind::Stack => {
                let r = self.stack_read(st, base, reg, off, bytes)?;
                Ok(if signed && r.kind == Kind::Scalar {
                    Reg::scalar(r.val.sext(bytes * 8))
                } else {
                    r
                })
            }
            Kind::Packet | Kind::PacketMeta => {
                check_packet(base, reg, off, bytes)?;
                Ok(Reg::scalar(loaded(bytes)))
            }
            Kind::MapValue => {
                let m = &self.maps[base.aux as usize];
                check_region(base, reg, off, bytes, m.value_size, true)?;
                Ok(Reg::scalar(loaded(bytes)))
            }
            Kind::Mem => {
                check_region(base, reg, off, bytes, base.aux, false)?;
                Ok(Reg::scalar(loaded(bytes)))
            }
            _ => Err(bad_base(reg, base)),
        }
    }

    fn ctx_read(
        &mut self,
        base: &Reg,
        off: i64,
        size: u32,
        signed: bool,
        pc: usize,
    ) -> Result<Reg, Reason> {
        let bad = |why: &'static str| Reason::CtxAccess {
            off: off + i64::from(base.off),
            size,
            write: false,
            why,
        };
        if base.off != 0 || !base.fixed_offset() {
            return Err(bad(
                "dereference of modified ctx ptr: read the fields through the context \
                 pointer itself",
            ));
        }
        if !(0..24).contains(&off) {
            return Err(bad("outside struct xdp_md (24 bytes)"));
        }
        if size != 4 || off % 4 != 0 {
            return Err(bad("xdp_md fields are read as whole, aligned 32-bit words"));
        }
        let field = match off {
            0 => CtxField::Data,
            4 => CtxField::DataEnd,
            8 => CtxField::DataMeta,
            12 => CtxField::IngressIfindex,
            16 => CtxField::RxQueueIndex,
            _ => {
                return Err(bad(
                    "egress_ifindex is only readable by programs attached to a devmap entry \
                     (BPF_XDP_DEVMAP)",
                ))
            }
        };
        if signed && field.is_pointer() {
            return Err(bad(
                "a pointer field (data, data_end, data_meta) cannot be read sign-extended",
            ));
        }
        if !self.ctx_loads.iter().any(|c| c.insn == pc) {
            self.ctx_loads.push(CtxLoad { insn: pc, field });
        }
        Ok(match field {
            CtxField::Data => Reg::pointer(Kind::Packet, 0),
            CtxField::DataEnd => Reg::pointer(Kind::PacketEnd, 0),
            CtxField::DataMeta => Reg::pointer(Kind::PacketMeta, 0),
            CtxField::IngressIfindex | CtxField::RxQueueIndex if signed => {
                Reg::scalar(Scalar::sized(4).sext(32))
            }
            CtxField::IngressIfindex | CtxField::RxQueueIndex => Reg::scalar(Scalar::sized(4)),
        })
    }

    /// The stack bytes `[lo, hi)` of `base`'s frame an access may touch.
    fn stack_span(
        &mut self,
        st: &State,
        base: &Reg,
        off: i64,
        size: u32,
    ) -> Result<(i64, i64), Reason> {
        if base.aux as usize >= st.frames.len() {
            // Cannot happen: no pointer outlives its frame (see `exit` and
            // `stack_write`). Refuse rather than index out of bounds.
            return Err(Reason::Unsupported {
                what: "a pointer to a stack frame that no longer exists",
            });
        }
        let (vlo, vhi) = base.val.signed_interval();
        let start = i128::from(base.off) + i128::from(off) + i128::from(vlo);
        let end = i128::from(base.off) + i128::from(off) + i128::from(vhi) + i128::from(size);
        if start < -i128::from(STACK_BYTES) || end > 0 {
            let c = |v: i128| v.clamp(i64::MIN.into(), i64::MAX.into()) as i64;
            return Err(Reason::StackBounds {
                lo: c(start),
                hi: c(end),
            });
        }
        self.max_stack = self.max_stack.max(-(start as i64));
        Ok((start as i64, end as i64))
    }

    fn stack_read(
        &mut self,
        st: &State,
        base: &Reg,
        reg: u8,
        off: i64,
        size: u32,
    ) -> Result<Reg, Reason> {
        let (start, end) = self.stack_span(st, base, off, size)?;
        let frame = &st.frames[base.aux as usize];
        let fixed = base.val.const_value().is_some();
        if fixed {
            let (slot, idx) = locate(start);
            if let Slot::Spill(r) = frame.slot(slot) {
                if size == 8 && idx == 0 {
                    return Ok(r);
                }
                if idx + size as usize <= 8 {
                    if r.kind != Kind::Scalar {
                        return Err(Reason::PointerLeak {
                            reg,
                            how: Leak::PartialFill,
                        });
                    }
                    let shifted = scalar::alu(
                        AluOp::Rsh,
                        Width::W64,
                        &r.val,
                        &Scalar::konst(8 * idx as u64),
                    );
                    return Ok(Reg::scalar(shifted.cast(size)));
                }
            }
        }
        let all_zero = check_stack_bytes(st, base.aux, start, end, reg)?;
        Ok(Reg::scalar(if all_zero && fixed {
            Scalar::konst(0)
        } else {
            Scalar::sized(size)
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn mem_write(
        &mut self,
        st: &mut State,
        base: &Reg,
        reg: u8,
        off: i64,
        size: Size,
        value: &Reg,
        vreg: Option<u8>,
        pc: usize,
    ) -> Result<(), Reason> {
        let bytes = size.bytes();
        self.note_ctx_use(pc, base.kind == Kind::Ctx)?;
        if base.kind == Kind::Stack {
            return self.stack_write(st, base, off, bytes, value, vreg.unwrap_or(reg));
        }
        if value.kind.is_pointer()
            && base.kind.is_pointer()
            && !base.kind.maybe_null()
            && base.kind != Kind::Ctx
        {
            return Err(Reason::PointerLeak {
                reg: vreg.unwrap_or(reg),
                how: Leak::Store,
            });
        }
        match base.kind {
            Kind::Ctx => Err(Reason::CtxAccess {
                off: off + i64::from(base.off),
                size: bytes,
                write: true,
                why: "the context is read-only",
            }),
            Kind::Packet | Kind::PacketMeta => check_packet(base, reg, off, bytes),
            Kind::MapValue => {
                let m = &self.maps[base.aux as usize];
                if m.read_only() {
                    return Err(Reason::ReadOnly {
                        map: m.name.clone(),
                    });
                }
                check_region(base, reg, off, bytes, m.value_size, true)
            }
            Kind::Mem => check_region(base, reg, off, bytes, base.aux, false),
            _ => Err(bad_base(reg, base)),
        }
    }

    /// A store to the stack (Linux's `check_stack_write`).
    fn stack_write(
        &mut self,
        st: &mut State,
        base: &Reg,
        off: i64,
        size: u32,
        value: &Reg,
        vreg: u8,
    ) -> Result<(), Reason> {
        let frame_no = base.aux as usize;
        if value.kind == Kind::Stack && frame_no + 1 != st.frames.len() {
            return Err(Reason::PointerLeak {
                reg: vreg,
                how: Leak::CallerFrame,
            });
        }
        let (start, end) = self.stack_span(st, base, off, size)?;
        let frame = &mut st.frames[frame_no];
        if base.val.const_value().is_none() {
            if value.kind.is_pointer() {
                return Err(Reason::PointerLeak {
                    reg: vreg,
                    how: Leak::PartialSpill,
                });
            }
            // Any byte of the span may or may not be written: what was
            // written stays readable as data, what was not stays unwritten.
            for b in start..end {
                let (s, i) = locate(b);
                let mut bytes = frame.slot(s).as_bytes();
                if bytes[i] != Byte::Invalid {
                    bytes[i] = Byte::Misc;
                }
                *frame.slot_mut(s) = Slot::Bytes(bytes);
            }
            return Ok(());
        }
        let (slot, idx) = locate(start);
        if size == 8 && idx == 0 {
            *frame.slot_mut(slot) = Slot::Spill(*value);
            return Ok(());
        }
        if value.kind.is_pointer() {
            return Err(Reason::PointerLeak {
                reg: vreg,
                how: Leak::PartialSpill,
            });
        }
        if idx == 0 {
            // A narrow number stored at the start of a slot whose other
            // bytes are written: keep the slot as one spilled number, so a
            // load of the same size gets the bounds back (Linux spills
            // narrow scalars the same way).
            let old = frame.slot(slot).as_bytes();
            let rest = &old[size as usize..];
            if rest.iter().all(|b| *b != Byte::Invalid) {
                let low = value.val.cast(size);
                let whole = if rest.iter().all(|b| *b == Byte::Zero) {
                    low
                } else {
                    // Bits of the stored bytes known as the value's, the
                    // others unknown.
                    let m = (1u64 << (8 * size)) - 1;
                    let mut w = Scalar::UNKNOWN;
                    w.var = Tnum {
                        value: low.var.value & m,
                        mask: (low.var.mask & m) | !m,
                    };
                    if size == 4 {
                        w.u32min = low.u32min;
                        w.u32max = low.u32max;
                        w.s32min = low.s32min;
                        w.s32max = low.s32max;
                    }
                    if !w.sync() {
                        w = Scalar::UNKNOWN;
                    }
                    w
                };
                *frame.slot_mut(slot) = Slot::Spill(Reg::scalar(whole));
                return Ok(());
            }
        }
        for (k, b) in (start..end).enumerate() {
            let (s, i) = locate(b);
            let mut bytes = frame.slot(s).as_bytes();
            let t = value.val.var.rshift(8 * k as u32).cast(1);
            bytes[i] = if t.is_const() && t.value == 0 {
                Byte::Zero
            } else {
                Byte::Misc
            };
            *frame.slot_mut(s) = Slot::Bytes(bytes);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn atomic(
        &mut self,
        st: &mut State,
        width: Width,
        op: AtomicOp,
        fetch: bool,
        dst: u8,
        src: u8,
        off: i64,
        pc: usize,
    ) -> Result<(), Reason> {
        let base = self.read(st, dst)?;
        let v = self.read(st, src)?;
        if v.kind.is_pointer() {
            return Err(Reason::PointerLeak {
                reg: src,
                how: Leak::Store,
            });
        }
        if op == AtomicOp::Cmpxchg {
            let r0 = self.read(st, 0)?;
            if r0.kind.is_pointer() {
                return Err(Reason::PointerLeak {
                    reg: 0,
                    how: Leak::Comparison,
                });
            }
        }
        if fetch && op != AtomicOp::Cmpxchg && src == 10 {
            return Err(Reason::FramePointerWrite);
        }
        self.note_ctx_use(pc, base.kind == Kind::Ctx)?;
        let size: u32 = if width == Width::W64 { 8 } else { 4 };
        let misaligned = |what: &str| Reason::Atomic {
            why: format!("misaligned access to {what}: atomics need {size}-byte alignment"),
        };
        match base.kind {
            Kind::Stack => {
                if base.val.const_value().is_none() {
                    return Err(Reason::Atomic {
                        why: "atomic access to the stack through a variable offset".into(),
                    });
                }
                let (start, end) = self.stack_span(st, &base, off, size)?;
                if start % i64::from(size) != 0 {
                    return Err(misaligned("the stack"));
                }
                let (slot, idx) = locate(start);
                let spilled = matches!(st.frames[base.aux as usize].slot(slot), Slot::Spill(r) if r.kind != Kind::Scalar);
                if spilled {
                    return Err(Reason::Atomic {
                        why: "atomic operation on a spilled pointer".into(),
                    });
                }
                let _ = idx;
                check_stack_bytes(st, base.aux, start, end, dst)?;
                let unknown = Reg::scalar(Scalar::sized(size));
                self.stack_write(st, &base, off, size, &unknown, src)?;
            }
            Kind::MapValue | Kind::Mem => {
                let limit = if base.kind == Kind::MapValue {
                    let m = &self.maps[base.aux as usize];
                    if m.read_only() {
                        return Err(Reason::ReadOnly {
                            map: m.name.clone(),
                        });
                    }
                    m.value_size
                } else {
                    base.aux
                };
                check_region(&base, dst, off, size, limit, base.kind == Kind::MapValue)?;
                let fixed = i64::from(base.off) + off;
                if fixed % i64::from(size) != 0 || !base.val.var.is_aligned(size.into()) {
                    return Err(misaligned(base.kind.name()));
                }
                if self.kind != ProgKind::Xdp && base.kind == Kind::Mem && base.ref_id == 0 {
                    // The plain memory of a test program is a byte buffer
                    // of the caller's with no alignment promise.
                    return Err(Reason::Atomic {
                        why: "atomic access to the program's plain memory (the buffer has no \
                              alignment guarantee); use the stack"
                            .into(),
                    });
                }
            }
            Kind::Packet | Kind::PacketMeta | Kind::Ctx | Kind::PacketEnd => {
                return Err(Reason::Atomic {
                    why: format!(
                        "BPF_ATOMIC stores into R{dst} {} is not allowed",
                        base.kind.name()
                    ),
                })
            }
            _ => return Err(bad_base(dst, &base)),
        }
        let loaded = Reg::scalar(Scalar::sized(size));
        if op == AtomicOp::Cmpxchg {
            *st.reg_mut(0) = loaded;
        } else if fetch {
            *st.reg_mut(src) = loaded;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn cond_jump(
        &mut self,
        p: &mut Path,
        stack: &mut Vec<Path>,
        width: Width,
        op: JmpOp,
        dst: u8,
        src: Source,
        off: i16,
    ) -> Result<Flow, Reason> {
        let pc = p.pc;
        let target = (pc as i64 + 1 + i64::from(off)) as usize;
        let fall = pc + 1;
        let a = self.read(&p.state, dst)?;
        let (b, sreg) = match src {
            Source::Reg(r) => (self.read(&p.state, r.index())?, Some(r.index())),
            Source::Imm(i) => (Reg::scalar(Scalar::konst(i as i64 as u64)), None),
        };
        let cond = Cond::of(op);
        let (taken, not_taken) = self.branch_states(&p.state, &a, &b, dst, sreg, cond, width)?;
        match (taken, not_taken) {
            (Some(t), Some(f)) => {
                self.fork(p.parent);
                stack.push(Path {
                    state: t,
                    pc: target,
                    parent: p.parent,
                    trail: p.trail.push(Step::Branch {
                        at: pc,
                        taken: true,
                        to: target,
                    }),
                });
                p.state = f;
                p.trail = p.trail.push(Step::Branch {
                    at: pc,
                    taken: false,
                    to: fall,
                });
                Ok(Flow::Next(fall))
            }
            (Some(t), None) => {
                p.state = t;
                Ok(Flow::Next(target))
            }
            (None, Some(f)) => {
                p.state = f;
                Ok(Flow::Next(fall))
            }
            (None, None) => Ok(Flow::Done),
        }
    }

    /// The states on both sides of a comparison (`None` for a side no
    /// concrete state takes).
    #[allow(clippy::too_many_arguments)]
    fn branch_states(
        &mut self,
        st: &State,
        a: &Reg,
        b: &Reg,
        dst: u8,
        sreg: Option<u8>,
        cond: Cond,
        width: Width,
    ) -> Result<(Option<State>, Option<State>), Reason> {
        if a.kind == Kind::Scalar && b.kind == Kind::Scalar {
            let (t, f) = scalar::branch(&a.val, &b.val, cond, width);
            let side = |res: Option<(Scalar, Scalar)>| {
                res.map(|(x, y)| {
                    let mut s = st.clone();
                    set_scalar(&mut s, dst, x);
                    if let Some(r) = sreg {
                        set_scalar(&mut s, r, y);
                    }
                    s
                })
            };
            return Ok((side(t), side(f)));
        }
        let leak = |r: u8| Reason::PointerLeak {
            reg: r,
            how: Leak::Comparison,
        };
        let ptr_reg = if a.kind.is_pointer() {
            dst
        } else {
            sreg.unwrap_or(dst)
        };
        if width == Width::W32 {
            return Err(leak(ptr_reg));
        }
        // A pointer against NULL.
        let (ptr, other) = if a.kind.is_pointer() { (a, b) } else { (b, a) };
        if other.is_null() && matches!(cond, Cond::Eq | Cond::Ne) {
            let (is_null, non_null) = if ptr.kind.maybe_null() {
                let mut n = st.clone();
                self.mark_null(&mut n, ptr.id, true);
                let mut nn = st.clone();
                self.mark_null(&mut nn, ptr.id, false);
                (Some(n), Some(nn))
            } else {
                (None, Some(st.clone()))
            };
            return Ok(if cond == Cond::Eq {
                (is_null, non_null)
            } else {
                (non_null, is_null)
            });
        }
        if !(a.kind.is_pointer() && b.kind.is_pointer()) {
            return Err(leak(ptr_reg));
        }
        if ptr.kind.maybe_null() || other.kind.maybe_null() {
            return Err(Reason::PointerArith {
                reg: ptr_reg,
                why: "comparison of a pointer that may be NULL with another pointer; \
                      null-check it first"
                    .into(),
            });
        }
        if !same_region(a, b) {
            return Err(Reason::PointerLeak {
                reg: ptr_reg,
                how: Leak::OtherRegion,
            });
        }
        let (mut t, mut f) = (st.clone(), st.clone());
        if let Some((on_taken, pkt, range)) = packet_range(a, b, cond) {
            let s = if on_taken { &mut t } else { &mut f };
            s.for_each_reg(|r| {
                if r.kind == pkt.kind && r.id == pkt.id {
                    r.range = r.range.max(range);
                }
            });
        }
        Ok((Some(t), Some(f)))
    }

    /// The null check of every copy of the pointer with `id`.
    fn mark_null(&self, st: &mut State, id: u32, is_null: bool) {
        let mut released = None;
        st.for_each_reg(|r| {
            if r.kind.maybe_null() && r.id == id {
                if is_null {
                    if r.ref_id != 0 {
                        released = Some(r.ref_id);
                    }
                    *r = Reg::scalar(Scalar::konst(0));
                } else {
                    r.kind = r.kind.non_null();
                    r.id = 0;
                }
            }
        });
        if let Some(ref_id) = released {
            st.refs.retain(|e| e.id != ref_id);
        }
    }

    fn exit(&mut self, p: &mut Path) -> Result<Flow, Reason> {
        let pc = p.pc;
        let st = &mut p.state;
        if st.frames.len() > 1 {
            let r0 = *st.reg(0);
            if r0.kind == Kind::Stack {
                return Err(Reason::ReturnStackPointer);
            }
            let callee = st.frames.pop().expect("more than one frame");
            let site = callee.callsite.unwrap_or(0);
            let caller = st.cur_mut();
            caller.regs[0] = r0;
            for r in &mut caller.regs[1..=5] {
                *r = Reg::invalidated(Uninit::ClobberedByCall, site);
            }
            p.trail = p.trail.push(Step::Return {
                at: pc,
                to: site + 1,
            });
            return Ok(Flow::Next(site + 1));
        }
        let r0 = self.read(st, 0)?;
        if r0.kind.is_pointer() {
            return Err(Reason::PointerLeak {
                reg: 0,
                how: Leak::Return,
            });
        }
        if let Some(r) = st.refs.first() {
            return Err(Reason::UnreleasedReference {
                id: r.id,
                acquired_at: r.insn,
            });
        }
        Ok(Flow::Done)
    }

    /// A helper call (Linux's `check_helper_call`).
    fn helper_call(&mut self, st: &mut State, id: i64, pc: usize) -> Result<(), Reason> {
        let h = *u32::try_from(id)
            .ok()
            .and_then(|i| self.helpers.get(i))
            .ok_or(Reason::UnknownHelper { id })?;
        let name = h.name;
        if h.id == hid::TAIL_CALL {
            if st.frames.len() > 1 {
                return Err(Reason::TailCall {
                    why: "tail calls from a subprogram are not supported (Sluice's runtime \
                          makes them from the program's main function only)",
                });
            }
            if !st.refs.is_empty() {
                return Err(Reason::TailCall {
                    why: "the program holds a ring buffer reservation: the tail call would \
                          leak it",
                });
            }
        }
        let mut map: Option<u32> = None;
        let mut release: Option<u32> = None;
        let mut alloc: Option<u64> = None;
        let mut pending: Option<(u8, Reg, Access, bool)> = None;
        for (i, &at) in h.args.iter().enumerate() {
            let regno = (i + 1) as u8;
            if at == ArgType::Unused {
                continue;
            }
            if h.id == hid::TRACE_PRINTK
                && i >= 2
                && at == ArgType::Anything
                && st.reg(regno).kind == Kind::NotInit
            {
                // The format's values are variadic: Linux declares only
                // the format and its size, and `bpf_printk("text")` leaves
                // r3-r5 unwritten.
                continue;
            }
            let r = self.read(st, regno)?;
            let err = |why: String| Reason::HelperArg {
                helper: name,
                arg: regno,
                why,
            };
            let type_err = |expected: &str| {
                err(format!(
                    "R{regno} type={} expected={expected}",
                    r.kind.name()
                ))
            };
            match at {
                ArgType::Unused => {}
                ArgType::Anything => {
                    if r.kind.is_pointer() {
                        return Err(Reason::PointerLeak {
                            reg: regno,
                            how: Leak::HelperArg,
                        });
                    }
                }
                ArgType::ConstMapPtr => match r.kind {
                    Kind::MapPtr => {
                        map = Some(r.aux);
                        self.check_map_helper(r.aux, h.id, name)?;
                    }
                    Kind::MapPtrOrNull => {
                        return Err(err(format!(
                            "R{regno} type=map_ptr_or_null expected=map_ptr: null-check the \
                             inner map first"
                        )))
                    }
                    _ => return Err(type_err("map_ptr")),
                },
                ArgType::PtrToMapKey | ArgType::PtrToMapValue | ArgType::PtrToUninitMapValue => {
                    let m = map.ok_or_else(|| err("no map argument before it".into()))?;
                    let info = &self.maps[m as usize];
                    let (size, access) = match at {
                        ArgType::PtrToMapKey => (info.key_size, Access::Read),
                        ArgType::PtrToMapValue => (info.value_size, Access::Read),
                        _ => (info.value_size, Access::Write),
                    };
                    self.helper_mem(st, regno, &r, size.into(), access, name)?;
                }
                ArgType::PtrToMem
                | ArgType::PtrToMemOrNull
                | ArgType::PtrToUninitMem
                | ArgType::PtrToRwMem => {
                    let may_null = at == ArgType::PtrToMemOrNull;
                    if r.is_null() && !may_null {
                        return Err(type_err("pointer to memory (it is NULL)"));
                    }
                    let access = match at {
                        ArgType::PtrToUninitMem => Access::Write,
                        ArgType::PtrToRwMem => Access::ReadWrite,
                        _ => Access::Read,
                    };
                    pending = Some((regno, r, access, may_null));
                }
                ArgType::ConstSize | ArgType::ConstSizeOrZero => {
                    let (preg, ptr, access, may_null) = pending
                        .take()
                        .ok_or_else(|| err("a size without a pointer before it".into()))?;
                    if r.kind.is_pointer() {
                        return Err(type_err("scalar (a size)"));
                    }
                    if r.val.smin < 0 {
                        return Err(err(format!(
                            "R{regno} min value is negative, either use unsigned or 'var &= const'"
                        )));
                    }
                    if r.val.umax >= MAX_VAR_OFF as u64 {
                        return Err(err(format!(
                            "R{regno} unbounded memory access, use 'var &= const' or 'if (var < const)'"
                        )));
                    }
                    if at == ArgType::ConstSize && r.val.umin == 0 {
                        return Err(err(format!(
                            "R{regno} invalid zero-sized read: the size may be 0 ({})",
                            r.val
                        )));
                    }
                    let size = r.val.umax;
                    if ptr.is_null() {
                        if !(may_null && size == 0) {
                            return Err(Reason::HelperArg {
                                helper: name,
                                arg: preg,
                                why: format!("R{preg} is NULL but the size may be {size}"),
                            });
                        }
                    } else {
                        self.helper_mem(st, preg, &ptr, size, access, name)?;
                    }
                }
                ArgType::ConstAllocSizeOrZero => {
                    let c = match (r.kind, r.val.const_value()) {
                        (Kind::Scalar, Some(c)) => c,
                        _ => return Err(err(format!("R{regno} is not a known constant"))),
                    };
                    if c >= MAX_VAR_OFF as u64 {
                        return Err(err(format!("R{regno} size {c} is too large")));
                    }
                    alloc = Some(c);
                }
                ArgType::PtrToCtx => {
                    if self.kind != ProgKind::Xdp {
                        return Err(err("plain-memory programs have no context".into()));
                    }
                    if r.kind != Kind::Ctx {
                        return Err(type_err("ctx"));
                    }
                    if r.off != 0 || !r.fixed_offset() {
                        return Err(err(format!(
                            "dereference of modified ctx ptr R{regno} off={} disallowed",
                            r.off
                        )));
                    }
                }
                ArgType::PtrToAllocMem => match r.kind {
                    Kind::Mem if r.ref_id != 0 => {
                        if r.off != 0 || !r.fixed_offset() {
                            return Err(err(format!(
                                "R{regno} must have zero offset when passed to release func \
                                 (off={})",
                                r.off
                            )));
                        }
                        release = Some(r.ref_id);
                    }
                    Kind::MemOrNull => {
                        return Err(err(format!(
                            "R{regno} type=mem_or_null: null-check the reservation first"
                        )))
                    }
                    _ => return Err(type_err("a record from bpf_ringbuf_reserve")),
                },
                ArgType::PtrToConstStr => {
                    return Err(Reason::Unsupported {
                        what: "a constant string argument (ARG_PTR_TO_CONST_STR)",
                    })
                }
            }
        }
        if let Some((preg, ..)) = pending {
            return Err(Reason::HelperArg {
                helper: name,
                arg: preg,
                why: "memory argument without a size argument after it".into(),
            });
        }
        if let Some(ref_id) = release {
            st.refs.retain(|e| e.id != ref_id);
            st.for_each_reg(|r| {
                if r.ref_id == ref_id && r.kind.is_pointer() {
                    *r = Reg::invalidated(Uninit::Released, pc);
                }
            });
        }
        for r in 1..=5 {
            *st.reg_mut(r) = Reg::invalidated(Uninit::ClobberedByCall, pc);
        }
        if matches!(
            h.id,
            hid::XDP_ADJUST_HEAD | hid::XDP_ADJUST_META | hid::XDP_ADJUST_TAIL
        ) {
            st.for_each_reg(|r| {
                if matches!(r.kind, Kind::Packet | Kind::PacketMeta | Kind::PacketEnd) {
                    r.kind = Kind::PacketStale;
                    r.aux = u32::try_from(pc + 1).unwrap_or(u32::MAX);
                    r.id = 0;
                    r.range = 0;
                }
            });
        }
        let r0 = match (h.id, h.ret) {
            (hid::TAIL_CALL, _) | (_, RetType::Void) => {
                Reg::invalidated(Uninit::ClobberedByCall, pc)
            }
            (hid::GET_PRANDOM_U32 | hid::GET_SMP_PROCESSOR_ID, RetType::Integer) => {
                Reg::scalar(Scalar::sized(4))
            }
            (_, RetType::Integer) => Reg::scalar(Scalar::UNKNOWN),
            (_, RetType::PtrToMapValueOrNull) => {
                let m = map.ok_or(Reason::HelperArg {
                    helper: name,
                    arg: 1,
                    why: "returns a map value but takes no map".into(),
                })?;
                let info = &self.maps[m as usize];
                let mut r = match info.inner {
                    Some(inner) => Reg::pointer(Kind::MapPtrOrNull, inner),
                    None => Reg::pointer(Kind::MapValueOrNull, m),
                };
                r.id = self.new_id();
                r
            }
            (_, RetType::PtrToAllocMemOrNull) => {
                let size = alloc.ok_or(Reason::HelperArg {
                    helper: name,
                    arg: 2,
                    why: "returns memory but takes no allocation size".into(),
                })?;
                let mut r = Reg::pointer(Kind::MemOrNull, size as u32);
                r.id = self.new_id();
                r.ref_id = self.new_id();
                st.refs.push(RefEntry {
                    id: r.ref_id,
                    insn: pc,
                });
                r
            }
        };
        *st.reg_mut(0) = r0;
        Ok(())
    }

    /// Linux's `check_map_func_compatibility`, both ways.
    fn check_map_helper(&self, map: u32, helper: u32, name: &'static str) -> Result<(), Reason> {
        let info = &self.maps[map as usize];
        let t = info.map_type;
        let map_ok = match t {
            MapType::ProgArray => helper == hid::TAIL_CALL,
            MapType::RingBuf => matches!(helper, hid::RINGBUF_OUTPUT | hid::RINGBUF_RESERVE),
            MapType::Devmap | MapType::DevmapHash => {
                matches!(helper, hid::REDIRECT_MAP | hid::MAP_LOOKUP_ELEM)
            }
            MapType::Queue | MapType::Stack => matches!(
                helper,
                hid::MAP_PUSH_ELEM | hid::MAP_POP_ELEM | hid::MAP_PEEK_ELEM
            ),
            MapType::ArrayOfMaps | MapType::HashOfMaps => helper == hid::MAP_LOOKUP_ELEM,
            MapType::PerfEventArray => helper == hid::PERF_EVENT_OUTPUT,
            // Linux allows nothing but redirecting into a cpumap.
            MapType::Cpumap => helper == hid::REDIRECT_MAP,
            MapType::Other(_) => false,
            _ => true,
        };
        let helper_ok = match helper {
            hid::TAIL_CALL => t == MapType::ProgArray,
            hid::RINGBUF_OUTPUT | hid::RINGBUF_RESERVE => t == MapType::RingBuf,
            hid::REDIRECT_MAP => {
                matches!(t, MapType::Devmap | MapType::DevmapHash | MapType::Cpumap)
            }
            hid::PERF_EVENT_OUTPUT => t == MapType::PerfEventArray,
            hid::MAP_PUSH_ELEM | hid::MAP_POP_ELEM | hid::MAP_PEEK_ELEM => {
                matches!(t, MapType::Queue | MapType::Stack)
            }
            _ => true,
        };
        if map_ok && helper_ok {
            Ok(())
        } else {
            Err(Reason::HelperMap {
                helper: name,
                map: info.name.clone(),
                map_type: t.name(),
            })
        }
    }

    /// Memory a helper reads or writes through argument `regno`
    /// (Linux's `check_helper_mem_access`).
    fn helper_mem(
        &mut self,
        st: &mut State,
        regno: u8,
        r: &Reg,
        size: u64,
        access: Access,
        helper: &'static str,
    ) -> Result<(), Reason> {
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        match r.kind {
            Kind::Stack | Kind::Packet | Kind::PacketMeta | Kind::MapValue | Kind::Mem => {}
            k if k.maybe_null() || k == Kind::PacketStale => return Err(bad_base(regno, r)),
            k => {
                return Err(Reason::HelperArg {
                    helper,
                    arg: regno,
                    why: format!(
                        "R{regno} type={} expected=pointer to memory (stack, packet, map value)",
                        k.name()
                    ),
                })
            }
        }
        if size == 0 {
            return Ok(());
        }
        match r.kind {
            Kind::Stack => {
                let (start, end) = self.stack_span(st, r, 0, size)?;
                if access != Access::Write {
                    check_stack_bytes(st, r.aux, start, end, regno)?;
                }
                match access {
                    Access::Read => {}
                    Access::Write | Access::ReadWrite => {
                        let fixed = r.val.const_value().is_some();
                        let frame = &mut st.frames[r.aux as usize];
                        for b in start..end {
                            let (s, i) = locate(b);
                            let mut bytes = frame.slot(s).as_bytes();
                            if fixed || bytes[i] != Byte::Invalid {
                                bytes[i] = Byte::Misc;
                            }
                            *frame.slot_mut(s) = Slot::Bytes(bytes);
                        }
                    }
                }
                Ok(())
            }
            Kind::Packet | Kind::PacketMeta => check_packet(r, regno, 0, size),
            Kind::MapValue => {
                let m = &self.maps[r.aux as usize];
                if access != Access::Read && m.read_only() {
                    return Err(Reason::ReadOnly {
                        map: m.name.clone(),
                    });
                }
                check_region(r, regno, 0, size, m.value_size, true)
            }
            _ => check_region(r, regno, 0, size, r.aux, false),
        }
    }
}

/// Writes a refined scalar into register `r` and every register linked
/// to it (Linux's `find_equal_scalars`).
fn set_scalar(st: &mut State, r: u8, v: Scalar) {
    let id = st.reg(r).id;
    st.reg_mut(r).val = v;
    if id != 0 {
        st.for_each_reg(|x| {
            if x.kind == Kind::Scalar && x.id == id {
                x.val = v;
            }
        });
    }
}

/// Checks that the stack bytes `[start, end)` of `frame` were written and
/// hold no part of a spilled pointer. Returns whether all are known zero.
fn check_stack_bytes(
    st: &State,
    frame: u32,
    start: i64,
    end: i64,
    reg: u8,
) -> Result<bool, Reason> {
    let f = &st.frames[frame as usize];
    let mut all_zero = true;
    for b in start..end {
        let (s, _) = locate(b);
        if let Slot::Spill(r) = f.slot(s) {
            if r.kind != Kind::Scalar {
                return Err(Reason::PointerLeak {
                    reg,
                    how: Leak::PartialFill,
                });
            }
        }
        match f.byte(b) {
            Byte::Invalid => return Err(Reason::UninitStack { off: b, frame }),
            Byte::Misc => all_zero = false,
            Byte::Zero => {}
        }
    }
    Ok(all_zero)
}

/// A packet or metadata access of `size` bytes at `off` from `base`
/// (Linux's `check_packet_access`).
fn check_packet(base: &Reg, reg: u8, off: i64, size: u32) -> Result<(), Reason> {
    let (lo, _) = base.val.signed_interval();
    if lo < 0 {
        return Err(Reason::PacketNegative { reg, min: lo });
    }
    let o = i64::from(base.off) + off;
    if o < 0 || o + i64::from(size) > i64::from(base.range) {
        return Err(Reason::PacketBounds {
            reg,
            off: o,
            size,
            range: base.range,
            meta: base.kind == Kind::PacketMeta,
        });
    }
    Ok(())
}

/// An access of `size` bytes at `off` from `base` into a region of `limit`
/// bytes (map values, memory).
fn check_region(
    base: &Reg,
    reg: u8,
    off: i64,
    size: u32,
    limit: u32,
    map: bool,
) -> Result<(), Reason> {
    let (lo, hi) = base.val.signed_interval();
    let fixed = i128::from(base.off) + i128::from(off);
    let start = fixed + i128::from(lo);
    let end = fixed + i128::from(hi) + i128::from(size);
    if start < 0 || end > i128::from(limit) {
        let c = |v: i128| v.clamp(i64::MIN.into(), i64::MAX.into()) as i64;
        return Err(if map {
            Reason::MapBounds {
                reg,
                lo: c(start),
                hi: c(end),
                value_size: limit,
            }
        } else {
            Reason::MemBounds {
                reg,
                lo: c(start),
                hi: c(end),
                size: limit,
            }
        });
    }
    Ok(())
}

fn bad_base(reg: u8, base: &Reg) -> Reason {
    let kind = base.kind;
    if kind == Kind::PacketStale {
        return Reason::StalePacket {
            reg,
            at: base.aux.saturating_sub(1) as usize,
        };
    }
    if kind.maybe_null() {
        Reason::NullDeref {
            reg,
            kind: kind.name(),
        }
    } else {
        Reason::InvalidMemAccess {
            reg,
            kind: kind.name(),
        }
    }
}

/// Whether two pointers point into the same region (so that their
/// difference or their order says nothing about addresses).
fn same_region(a: &Reg, b: &Reg) -> bool {
    let packet = |k: Kind| {
        matches!(
            k,
            Kind::Packet | Kind::PacketMeta | Kind::PacketEnd | Kind::PacketStale
        )
    };
    if packet(a.kind) && packet(b.kind) {
        return true;
    }
    a.kind == b.kind
        && match a.kind {
            Kind::Stack | Kind::MapValue => a.aux == b.aux,
            Kind::Mem => a.aux == b.aux && a.ref_id == b.ref_id,
            Kind::Ctx => true,
            _ => false,
        }
}

/// What a comparison between packet pointers proves (Linux's
/// `find_good_pkt_pointers`): on which side, for which pointer group, how
/// many bytes from its base are in the packet.
fn packet_range(a: &Reg, b: &Reg, cond: Cond) -> Option<(bool, Reg, u32)> {
    let is_init_data =
        |r: &Reg| r.kind == Kind::Packet && r.off == 0 && r.id == 0 && r.fixed_offset();
    let ends = |p: &Reg, e: &Reg| {
        (p.kind == Kind::Packet && e.kind == Kind::PacketEnd)
            || (p.kind == Kind::PacketMeta && is_init_data(e))
    };
    let (p, c) = if ends(a, b) {
        (a, cond)
    } else if ends(b, a) {
        (b, cond.swap())
    } else {
        return None;
    };
    // (side where p <= end (closed) or p < end (open) holds)
    let (on_taken, open) = match c {
        Cond::Gt => (false, false),
        Cond::Ge => (false, true),
        Cond::Lt => (true, true),
        Cond::Le => (true, false),
        _ => return None,
    };
    if p.off < 0 || (p.off == 0 && open) {
        return None;
    }
    if p.val.umax > MAX_PACKET_OFF || p.val.umax + p.off as u64 > MAX_PACKET_OFF {
        return None;
    }
    let range = p.off as u32 + u32::from(open);
    Some((on_taken, *p, range))
}

fn endian(order: ByteOrder, bits: u8, v: &Scalar) -> Scalar {
    let bytes = u32::from(bits) / 8;
    match order {
        ByteOrder::Le => v.cast(bytes),
        ByteOrder::Be | ByteOrder::Swap => match v.const_value() {
            Some(c) => Scalar::konst(match bits {
                16 => u64::from((c as u16).swap_bytes()),
                32 => u64::from((c as u32).swap_bytes()),
                _ => c.swap_bytes(),
            }),
            None => Scalar::sized(bytes),
        },
    }
}

fn alu_name(op: AluOp) -> &'static str {
    match op {
        AluOp::Add => "+=",
        AluOp::Sub => "-=",
        AluOp::Mul => "*=",
        AluOp::Div | AluOp::Sdiv => "/=",
        AluOp::Or => "|=",
        AluOp::And => "&=",
        AluOp::Lsh => "<<=",
        AluOp::Rsh => ">>=",
        AluOp::Mod | AluOp::Smod => "%=",
        AluOp::Xor => "^=",
        AluOp::Mov | AluOp::Movsx(_) => "=",
        AluOp::Arsh => "s>>=",
    }
}
