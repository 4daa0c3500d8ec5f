//! The program's shape, checked before any path is followed (Linux's
//! `check_subprogs` and `check_cfg`): every instruction decodes, every
//! jump lands on an instruction of its own function, no function runs off
//! its end, every instruction is reachable, no function calls itself.
//!
//! It also computes what the path exploration needs about each
//! instruction: whether it is a *prune point* (a jump target, the
//! instruction after a conditional jump or a call, a function entry), and
//! which registers are *live* there (read on some path before being
//! written). Liveness is a plain backward data-flow over each function's
//! graph; a register that is not live cannot influence anything that
//! follows, so pruning may ignore it.

use super::log::Reason;
use super::state::LiveSet;
use crate::helpers::Registry;
use crate::isa::{self, AtomicOp, CallTarget, Insn, Instruction, LdImm64, Source};

/// The checked shape of a program.
pub struct Cfg {
    /// The instruction starting at each slot (`None` for the second slot
    /// of an `lddw`).
    pub insns: Vec<Option<Instruction>>,
    /// First slot of each function, ascending (the program's own is 0).
    pub functions: Vec<usize>,
    /// Whether the verifier compares states at each slot.
    pub prune: Vec<bool>,
    /// Registers live on entry to each slot.
    pub live: Vec<LiveSet>,
}

/// A shape error and the slot it concerns.
pub type CfgError = (usize, Reason);

const ARGS: LiveSet = 0b11_1110;
const CALLER_SAVED: LiveSet = 0b11_1111;

fn bit(r: isa::Reg) -> LiveSet {
    1 << r.index()
}

impl Cfg {
    /// Checks the shape of `insns` and computes prune points and liveness.
    ///
    /// # Errors
    /// The first problem found, with its slot.
    pub fn build(insns: &[Insn], helpers: &Registry) -> Result<Cfg, CfgError> {
        let decoded = isa::decode(insns).map_err(|e| {
            let pc = match &e {
                isa::DecodeError::UnknownOpcode { pc, .. }
                | isa::DecodeError::BadRegister { pc, .. }
                | isa::DecodeError::Reserved { pc, .. }
                | isa::DecodeError::BadField { pc, .. }
                | isa::DecodeError::IncompleteLdImm64 { pc }
                | isa::DecodeError::LegacyPacketLoad { pc, .. } => *pc,
                _ => 0,
            };
            (pc, Reason::Decode(e))
        })?;
        let len = insns.len();
        let mut slots: Vec<Option<Instruction>> = vec![None; len];
        for &(pc, ins) in &decoded {
            slots[pc] = Some(ins);
        }
        let target = |pc: usize, rel: i64| -> Result<usize, CfgError> {
            let t = pc as i64 + 1 + rel;
            if t < 0 || t >= len as i64 {
                return Err((pc, Reason::JumpOutOfRange { target: t }));
            }
            let t = t as usize;
            if slots[t].is_none() {
                return Err((pc, Reason::JumpIntoLdImm64 { target: t }));
            }
            Ok(t)
        };

        // Functions: the entry and every local call's target.
        let mut functions = vec![0usize];
        for &(pc, ins) in &decoded {
            if let Instruction::Call(CallTarget::Local(rel)) = ins {
                functions.push(target(pc, rel.into())?);
            }
        }
        functions.sort_unstable();
        functions.dedup();
        let function_of = |pc: usize| match functions.binary_search(&pc) {
            Ok(i) => i,
            Err(i) => i - 1,
        };

        // Edges, checked to stay inside their function.
        let mut succ: Vec<Vec<usize>> = vec![Vec::new(); len];
        let mut prune = vec![false; len];
        for &f in &functions {
            prune[f] = true;
        }
        for &(pc, ins) in &decoded {
            let next = pc + ins.slots();
            let fall = |succ: &mut Vec<usize>| -> Result<(), CfgError> {
                if next >= len || function_of(next) != function_of(pc) {
                    return Err((pc, Reason::FallsOffEnd));
                }
                succ.push(next);
                Ok(())
            };
            let jump = |rel: i64| -> Result<usize, CfgError> {
                let t = target(pc, rel)?;
                if function_of(t) != function_of(pc) {
                    return Err((pc, Reason::JumpOutOfFunction { target: t }));
                }
                Ok(t)
            };
            match ins {
                Instruction::Exit => {}
                Instruction::Ja { off, .. } => {
                    let t = jump(off.into())?;
                    succ[pc].push(t);
                    prune[t] = true;
                }
                Instruction::Jmp { off, .. } => {
                    let t = jump(off.into())?;
                    fall(&mut succ[pc])?;
                    succ[pc].push(t);
                    prune[t] = true;
                    prune[next] = true;
                }
                Instruction::Call(CallTarget::Local(_)) => {
                    fall(&mut succ[pc])?;
                    prune[next] = true;
                }
                _ => fall(&mut succ[pc])?,
            }
        }

        // Reachability from the entry, through calls.
        let mut seen = vec![false; len];
        let mut work = vec![0usize];
        seen[0] = true;
        while let Some(pc) = work.pop() {
            let mut next: Vec<usize> = succ[pc].clone();
            if let Some(Instruction::Call(CallTarget::Local(rel))) = slots[pc] {
                next.push(target(pc, rel.into())?);
            }
            for t in next {
                if !seen[t] {
                    seen[t] = true;
                    work.push(t);
                }
            }
        }
        if let Some(&(pc, _)) = decoded.iter().find(|(pc, _)| !seen[*pc]) {
            return Err((pc, Reason::Unreachable));
        }

        // Recursion: a cycle in the call graph.
        let mut calls: Vec<Vec<(usize, usize)>> = vec![Vec::new(); functions.len()];
        for &(pc, ins) in &decoded {
            if let Instruction::Call(CallTarget::Local(rel)) = ins {
                let t = target(pc, rel.into())?;
                calls[function_of(pc)].push((pc, function_of(t)));
            }
        }
        // 0 = unvisited, 1 = on the stack, 2 = done.
        let mut mark = vec![0u8; functions.len()];
        fn visit(
            f: usize,
            calls: &[Vec<(usize, usize)>],
            mark: &mut [u8],
            functions: &[usize],
        ) -> Result<(), CfgError> {
            mark[f] = 1;
            for &(pc, g) in &calls[f] {
                match mark[g] {
                    1 => {
                        return Err((
                            pc,
                            Reason::Recursion {
                                callee: functions[g],
                            },
                        ))
                    }
                    0 => visit(g, calls, mark, functions)?,
                    _ => {}
                }
            }
            mark[f] = 2;
            Ok(())
        }
        visit(0, &calls, &mut mark, &functions)?;

        let live = liveness(&decoded, &succ, helpers, len);
        Ok(Cfg {
            insns: slots,
            functions,
            prune,
            live,
        })
    }
}

/// Registers an instruction reads and writes.
fn use_def(ins: &Instruction, helpers: &Registry) -> (LiveSet, LiveSet) {
    let src_bit = |s: &Source| match s {
        Source::Reg(r) => bit(*r),
        Source::Imm(_) => 0,
    };
    match ins {
        Instruction::Alu { op, dst, src, .. } => match op {
            isa::AluOp::Mov | isa::AluOp::Movsx(_) => (src_bit(src), bit(*dst)),
            _ => (bit(*dst) | src_bit(src), bit(*dst)),
        },
        Instruction::Neg { dst, .. } | Instruction::Endian { dst, .. } => (bit(*dst), bit(*dst)),
        Instruction::Load { dst, src, .. } => (bit(*src), bit(*dst)),
        Instruction::Store { dst, src, .. } => (bit(*dst) | src_bit(src), 0),
        Instruction::Atomic {
            op,
            fetch,
            dst,
            src,
            ..
        } => {
            let mut u = bit(*dst) | bit(*src);
            let mut d = 0;
            if *op == AtomicOp::Cmpxchg {
                u |= 1;
                d |= 1;
            } else if *fetch {
                d |= bit(*src);
            }
            (u, d)
        }
        Instruction::LdImm64 { dst, value } => match value {
            LdImm64::Imm(_)
            | LdImm64::MapIdx(_)
            | LdImm64::MapIdxValue { .. }
            | LdImm64::MapFd(_)
            | LdImm64::MapValue { .. }
            | LdImm64::BtfId(_)
            | LdImm64::Func(_) => (0, bit(*dst)),
        },
        Instruction::Ja { .. } => (0, 0),
        Instruction::Jmp { dst, src, .. } => (bit(*dst) | src_bit(src), 0),
        Instruction::Call(CallTarget::Helper(id)) => {
            let args = u32::try_from(*id)
                .ok()
                .and_then(|id| helpers.get(id))
                .map_or(ARGS, |h| ((1u16 << (h.arity() + 1)) - 1) & ARGS);
            (args, CALLER_SAVED)
        }
        Instruction::Call(_) => (ARGS, CALLER_SAVED),
        Instruction::Callx { reg } => (ARGS | bit(*reg), CALLER_SAVED),
        Instruction::Exit => (1, 0),
    }
}

/// Live-in sets by backward data-flow to a fixed point.
fn liveness(
    decoded: &[(usize, Instruction)],
    succ: &[Vec<usize>],
    helpers: &Registry,
    len: usize,
) -> Vec<LiveSet> {
    let mut live = vec![0 as LiveSet; len];
    let ud: Vec<(usize, LiveSet, LiveSet)> = decoded
        .iter()
        .map(|(pc, ins)| {
            let (u, d) = use_def(ins, helpers);
            (*pc, u, d)
        })
        .collect();
    let mut changed = true;
    while changed {
        changed = false;
        for &(pc, u, d) in ud.iter().rev() {
            let out = succ[pc].iter().fold(0, |acc, &s| acc | live[s]);
            let inn = u | (out & !d);
            if inn != live[pc] {
                live[pc] = inn;
                changed = true;
            }
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::assemble;

    fn build(src: &str) -> Result<Cfg, CfgError> {
        Cfg::build(&assemble(src).unwrap(), &Registry::xdp())
    }

    #[test]
    fn shape_errors() {
        assert!(matches!(
            build("ja +1\nmov %r0, 0\nexit"),
            Err((1, Reason::Unreachable))
        ));
        assert!(matches!(build("mov %r0, 0"), Err((0, Reason::FallsOffEnd))));
        assert!(matches!(
            build("ja +1\nlddw %r0, 1\nexit"),
            Err((0, Reason::JumpIntoLdImm64 { target: 2 }))
        ));
        assert!(matches!(
            build("call local f\nexit\nf:\ncall local f\nexit"),
            Err((2, Reason::Recursion { callee: 2 }))
        ));
        assert!(matches!(
            build("call local f\nja +1\nf:\nexit\nexit"),
            Err((1, Reason::JumpOutOfFunction { .. }))
        ));
    }

    #[test]
    fn liveness_follows_reads() {
        let cfg = build("mov %r2, 1\nmov %r0, %r2\nmov %r3, 5\nexit").unwrap();
        assert_eq!(cfg.live[0], 0);
        assert_eq!(cfg.live[1], 0b100);
        assert_eq!(cfg.live[3], 0b1);
    }
}
