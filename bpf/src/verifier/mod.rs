//! The static verifier: proves, before a program ever runs, that every run
//! of it ends, touches only memory it may touch, and never turns an address
//! into data — what Linux's `kernel/bpf/verifier.c` proves for the same
//! features.
//!
//! [`verify`] takes a program's slots, its type ([`ProgKind`]), its helper
//! [`Registry`] and its maps, and returns [`Verified`] (statistics and what
//! the engines need to drop run-time checks) or a [`VerifyError`] that
//! names the instruction, the reason, the path and the state.
//!
//! # How
//!
//! 1. **Shape** ([`cfg`]): every instruction decodes; jumps land on
//!    instructions of their own function (never in the middle of an
//!    `lddw`); no function runs off its end; every instruction is reachable
//!    (dead code is refused, as Linux's `check_cfg` does); no function calls
//!    itself.
//! 2. **Abstract interpretation over all paths** ([`check`]): starting from
//!    the entry state (r1 = context, r10 = frame pointer, everything else
//!    unwritten), each instruction transforms an abstract [`state::State`];
//!    a conditional jump the state does not decide forks the path. A path
//!    ends at the program's `exit` (r0 must be a number, every acquired
//!    reference released) or when it is pruned.
//!
//! # The abstract domain
//!
//! * **Registers** ([`state::Reg`]) are typed as in Linux: not initialised;
//!   scalar; pointer to the context, the packet (with a proven `range`),
//!   the packet's end or metadata, the stack of a given frame, a map value
//!   (or a lookup result that may be NULL), a map, a ring buffer record
//!   (carrying an acquired reference) or, for conformance programs, plain
//!   memory. A pointer is `base + off + v`, `off` a constant and `v` a
//!   scalar set.
//! * **Scalars** ([`scalar::Scalar`]) are a tnum ([`tnum::Tnum`]: known
//!   bits) plus signed and unsigned bounds in 64 and 32 bits, kept
//!   consistent by `sync` (Linux's `reg_bounds_sync`). Transfer functions
//!   follow RFC 9669 exactly (masked shifts, division by zero defined);
//!   comparisons narrow both operands on each side, and decide branches
//!   when only one side is possible.
//! * **Ids** link copies: a null check on one copy of a lookup result
//!   checks all of them, a comparison of one packet pointer against
//!   `data_end` proves bytes for every pointer with the same variable
//!   offset (`find_good_pkt_pointers`), and narrowing one copy of a scalar
//!   narrows all (`find_equal_scalars`).
//! * **The stack** of each frame is 64 slots of 8 bytes, each either eight
//!   bytes (unwritten / data / zero) or a spilled register, restored with
//!   its type and bounds by an aligned 8-byte load.
//!
//! # Pruning, loops, termination
//!
//! At jump targets, after conditional jumps and calls, the state is
//! compared with those stored there by earlier paths. A stored state whose
//! exploration has *finished* and which includes the current one (every
//! live register's set includes the current set, ids map consistently,
//! every stack byte is at least as well known, packet ranges are no
//! smaller, references correspond one to one) proves the current path
//! safe: it ends. Registers that are dead at the point (a backward
//! data-flow in [`cfg`]) are ignored. Using only finished states is what
//! makes pruning prove termination, not only safety (see [`check`]); a
//! path that comes back to an unfinished ancestor state unchanged is an
//! infinite loop and is refused. Bounded loops are therefore explored
//! iteration by iteration, like Linux does, within a budget of
//! 1,000,000 processed instructions ([`VerifyOptions::budget`]).
//!
//! All scalars are compared exactly (by inclusion): Linux's precision
//! tracking, which lets it ignore scalars that never reach a memory
//! access or a decided branch, is not implemented. That is sound and
//! costs only pruning; every program of the team's and the sample corpus
//! verifies well within the budget (see `bpf/tests/verifier_samples.rs`).
//!
//! # What Sluice refuses that Linux (as root) allows
//!
//! Sluice never lets a program turn an address into data: returning a
//! pointer in r0, storing it into a map, the packet or a ring buffer
//! record, passing it to a helper as a number, comparing it with a number,
//! or converting it (32-bit moves, byte swaps, partial spills) are refused,
//! as Linux refuses them for unprivileged programs. Pointer differences
//! within one region (`data_end - data`) and comparisons within one region
//! are allowed. Reading stack bytes that were never written is refused
//! (Linux lets `CAP_PERFMON` programs do it). The full list, with Linux's
//! behaviour, is kept by `bpf/tests/verifier_kernel.rs`.
//!
//! # Not supported (refused with a message that says so)
//!
//! kfuncs, `BPF_PSEUDO_FUNC` callbacks (`bpf_loop`, timers), BTF-typed
//! pointers, spin locks, dynptrs, iterators, `BPF_PSEUDO_MAP_FD` references
//! (Sluice's loader links maps by index), constant-string helper
//! arguments, reading the contents of frozen read-only maps as constants,
//! and tail calls from subprograms.

pub mod cfg;
pub mod check;
pub mod log;
pub mod scalar;
pub mod state;
pub mod tnum;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::Registry;
use crate::isa::Insn;
use crate::maps::{Map, MapDef};

pub use log::{Leak, Reason, Step, VerifyError};

/// The instruction budget: Linux's `BPF_COMPLEXITY_LIMIT_INSNS`.
pub const DEFAULT_BUDGET: u64 = 1_000_000;

/// What kind of program is verified: what r1 (and r2) hold on entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProgKind {
    /// An XDP program: r1 points to a read-only `struct xdp_md`.
    Xdp,
    /// A bpf_conformance program: r1 points to `len` bytes of plain,
    /// writable memory and r2 holds `len`. The conformance plugin knows the
    /// test's memory before it runs the program, so it verifies the program
    /// for exactly that length.
    Memory {
        /// Bytes of memory.
        len: u32,
    },
}

/// How to verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    /// 0: no log; 1: a summary line; 2: every instruction with the state
    /// before it (Linux's log level 2), returned in [`Verified::log`] or
    /// [`VerifyError::log`].
    pub log_level: u8,
    /// Instructions the exploration may process, over all paths.
    pub budget: u64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            log_level: 0,
            budget: DEFAULT_BUDGET,
        }
    }
}

/// How much work the proof took.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VerifyStats {
    /// Instructions processed, over all paths (Linux's
    /// `insn_processed`).
    pub insns_processed: u64,
    /// States stored at prune points (Linux's `total_states`).
    pub states: u64,
    /// Most states held at once, stored and pending (Linux's
    /// `peak_states`).
    pub peak_states: u64,
    /// Paths that ended because an earlier state covered them.
    pub pruned: u64,
    /// Wall-clock time.
    pub duration: Duration,
}

/// A field of `struct xdp_md` a program reads.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CtxField {
    /// `data`: becomes a packet pointer.
    Data,
    /// `data_end`.
    DataEnd,
    /// `data_meta`.
    DataMeta,
    /// `ingress_ifindex`.
    IngressIfindex,
    /// `rx_queue_index`.
    RxQueueIndex,
}

impl CtxField {
    /// The field's offset in `struct xdp_md` (what the program's `ldxw`
    /// uses).
    pub fn xdp_md_offset(self) -> i16 {
        match self {
            CtxField::Data => 0,
            CtxField::DataEnd => 4,
            CtxField::DataMeta => 8,
            CtxField::IngressIfindex => 12,
            CtxField::RxQueueIndex => 16,
        }
    }

    /// Whether the field is a pointer, so that a runtime with real
    /// pointers must rewrite the 32-bit load into a 64-bit one.
    pub fn is_pointer(self) -> bool {
        matches!(
            self,
            CtxField::Data | CtxField::DataEnd | CtxField::DataMeta
        )
    }
}

/// One context load to rewrite for an engine with real pointers: the
/// `ldxw dst, [ctx + xdp_md_offset]` at slot `insn` reads `field`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CtxLoad {
    /// The load's slot.
    pub insn: usize,
    /// The field it reads.
    pub field: CtxField,
}

/// A program proven safe, and what engines may rely on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The work it took.
    pub stats: VerifyStats,
    /// Every context load, by slot (ascending). Each of these instructions
    /// reads the context on every path that reaches it, and nothing else.
    pub ctx_loads: Vec<CtxLoad>,
    /// Deepest stack byte any frame uses, in bytes below its frame pointer.
    pub max_stack_depth: u32,
    /// The log, as [`VerifyOptions::log_level`] asked.
    pub log: String,
}

/// Rewrites the context loads a verification found for an engine whose
/// context has another layout, such as the native one with 64-bit packet
/// pointers ([`crate::native::NativeXdpMd`]): `layout(field)` gives the
/// field's offset there and whether it is 64 bits wide. Each load keeps
/// its destination and base register; a 64-bit field becomes a `ldxdw`.
///
/// Only loads in `loads` are touched; the verifier guarantees each of them
/// reads the context on every path, so the rewrite is exact.
///
/// ```
/// # use sluice_bpf::asm::assemble;
/// # use sluice_bpf::helpers::Registry;
/// # use sluice_bpf::maps::MapDef;
/// # use sluice_bpf::verifier::{rewrite_ctx_loads, verify, ProgKind, VerifyOptions};
/// let mut insns = assemble("ldxw %r2, [%r1+4]\nldxw %r0, [%r1+16]\nexit").unwrap();
/// let v = verify(&insns, ProgKind::Xdp, &Registry::xdp(), &[] as &[MapDef], &VerifyOptions::default()).unwrap();
/// rewrite_ctx_loads(&mut insns, &v.ctx_loads, |f| {
///     sluice_bpf::native::native_ctx_field(f.xdp_md_offset() as usize).unwrap()
/// });
/// assert_eq!(sluice_bpf::disasm::disassemble(&insns).unwrap(),
///            "ldxdw %r2, [%r1+8]\nldxw %r0, [%r1+28]\nexit\n");
/// ```
pub fn rewrite_ctx_loads(
    insns: &mut [Insn],
    loads: &[CtxLoad],
    layout: impl Fn(CtxField) -> (i16, bool),
) {
    use crate::isa::{class, mode, size};
    for load in loads {
        let Some(slot) = insns.get_mut(load.insn) else {
            continue;
        };
        let (off, wide) = layout(load.field);
        slot.off = off;
        if wide {
            slot.code = class::LDX | mode::MEM | size::DW;
        }
    }
}

/// Something that has a map definition: the maps of a loaded program
/// (`Arc<Map>`), or bare definitions (tests, tools).
pub trait MapSource {
    /// The definition.
    fn map_def(&self) -> &MapDef;
}

impl MapSource for MapDef {
    fn map_def(&self) -> &MapDef {
        self
    }
}

impl MapSource for Map {
    fn map_def(&self) -> &MapDef {
        self.def()
    }
}

impl MapSource for Arc<Map> {
    fn map_def(&self) -> &MapDef {
        self.def()
    }
}

impl<T: MapSource + ?Sized> MapSource for &T {
    fn map_def(&self) -> &MapDef {
        (**self).map_def()
    }
}

/// Verifies a program.
///
/// `maps` are the maps its `lddw map_idx N` references index (what
/// [`crate::program::Program::load_with_maps`] gets); `helpers` is its
/// program type's registry.
///
/// # Errors
/// A [`VerifyError`] naming the first unsafe instruction found, why, the
/// path to it and the state there.
///
/// # Examples
///
/// ```
/// use sluice_bpf::asm::assemble;
/// use sluice_bpf::helpers::Registry;
/// use sluice_bpf::maps::MapDef;
/// use sluice_bpf::verifier::{verify, ProgKind, VerifyOptions};
///
/// let prog = assemble(
///     "ldxw %r2, [%r1+0]\n\
///      ldxw %r3, [%r1+4]\n\
///      mov %r4, %r2\n\
///      add %r4, 14\n\
///      jgt %r4, %r3, drop\n\
///      ldxh %r0, [%r2+12]\n\
///      mov %r0, 2\n\
///      exit\n\
///      drop:\n\
///      mov %r0, 1\n\
///      exit",
/// )
/// .unwrap();
/// let ok = verify(&prog, ProgKind::Xdp, &Registry::xdp(), &[] as &[MapDef], &VerifyOptions::default());
/// assert!(ok.is_ok());
///
/// // Reading byte 14 is one byte too far.
/// let bad = assemble(
///     "ldxw %r2, [%r1+0]\nldxw %r3, [%r1+4]\nmov %r4, %r2\nadd %r4, 14\n\
///      jgt %r4, %r3, +2\nldxb %r0, [%r2+14]\nexit\nmov %r0, 1\nexit",
/// )
/// .unwrap();
/// let err = verify(&bad, ProgKind::Xdp, &Registry::xdp(), &[] as &[MapDef], &VerifyOptions::default())
///     .unwrap_err();
/// assert_eq!(err.insn, 5);
/// assert_eq!(err.reason.kind(), "packet-bounds");
/// ```
// A refusal is made once per verification, on the way out, and carries the
// whole explanation (state, path, log): boxing it would buy nothing.
#[allow(clippy::result_large_err)]
pub fn verify<M: MapSource>(
    insns: &[Insn],
    kind: ProgKind,
    helpers: &Registry,
    maps: &[M],
    opts: &VerifyOptions,
) -> Result<Verified, VerifyError> {
    let start = Instant::now();
    let early = |insn: usize, reason: Reason| VerifyError {
        insn,
        reason,
        text: String::new(),
        state: String::new(),
        path: Vec::new(),
        path_len: 0,
        log: String::new(),
    };
    if insns.is_empty() || insns.len() as u64 > opts.budget.max(1) {
        return Err(early(0, Reason::BadLength { len: insns.len() }));
    }
    let cfg = cfg::Cfg::build(insns, helpers).map_err(|(pc, r)| {
        let mut e = early(pc, r);
        if let Ok(ins) = crate::isa::decode_one(insns, pc) {
            e.text = crate::disasm::format_instruction(&ins);
        }
        e
    })?;
    let defs: Vec<&MapDef> = maps.iter().map(MapSource::map_def).collect();
    let table = check::map_table(&defs);
    let mut v = check::Verifier::new(cfg, kind, helpers, table, defs.len(), opts);
    v.run()?;
    let stats = v.stats(start.elapsed());
    let mut log = std::mem::take(&mut v.log);
    if opts.log_level >= 1 {
        use std::fmt::Write as _;
        let _ = writeln!(
            log,
            "processed {} insns (limit {}) total_states {} peak_states {} pruned {} in {:?}",
            stats.insns_processed,
            opts.budget,
            stats.states,
            stats.peak_states,
            stats.pruned,
            stats.duration
        );
    }
    let mut ctx_loads = std::mem::take(&mut v.ctx_loads);
    ctx_loads.sort_by_key(|c| c.insn);
    Ok(Verified {
        stats,
        ctx_loads,
        max_stack_depth: u32::try_from(v.max_stack).unwrap_or(u32::MAX),
        log,
    })
}
