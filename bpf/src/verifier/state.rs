//! Abstract machine states: registers, stack slots, call frames, acquired
//! references, and the subsumption test that pruning rests on.
//!
//! # Registers
//!
//! A [`Reg`] is Linux's `struct bpf_reg_state` cut down to what Sluice
//! supports. Its [`Kind`] says what the register holds; for pointers the
//! address is `base + off + v`, where `off` is a known constant and `v` a
//! member of the [`Scalar`] `val` (the *variable offset*), so copies of a
//! pointer that differ only by constants share everything else. For
//! scalars, `val` is the value itself.
//!
//! `id` links registers that hold the same thing: copies of one
//! map-lookup result (a null check on one is a null check on all), packet
//! pointers with the same variable offset (a bounds check through one
//! proves bytes for all), and copies of one scalar (a comparison that
//! narrows one narrows all). Ids are never reused within a verification,
//! so equal ids mean "derived from the same event". A packet pointer with
//! `id == 0` has no variable offset.
//!
//! # Stack
//!
//! Each frame has 512 bytes in 64 slots of 8 ([`Slot`]). A slot is either
//! eight independent bytes ([`Byte`]: never written, some data, known
//! zero) or a whole register spilled by an aligned 8-byte store, which a
//! later 8-byte load at the same place restores exactly (with its bounds
//! and, for pointers, its type). Stores that cover part of a spilled
//! register turn the rest of it into plain bytes: scalar bits stay
//! readable as data, pointer bits become unreadable, so a pointer never
//! leaks through the stack. A number narrower than 8 bytes stored at the
//! start of a slot whose other bytes are written keeps the slot a spilled
//! number, so that a load of the same size gets its bounds back (Linux
//! spills narrow scalars the same way); the verifier does this in
//! `check::Verifier::stack_write`.

use std::fmt::{self, Write as _};

use super::scalar::Scalar;

/// Bytes of stack per frame.
pub const STACK_BYTES: i64 = 512;
/// Slots per frame.
pub const SLOTS: usize = (STACK_BYTES / 8) as usize;

/// What a register holds (Linux's `enum bpf_reg_type`, for Sluice's
/// features).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kind {
    /// Never written on this path, or invalidated (`aux` says where).
    NotInit,
    /// A number.
    Scalar,
    /// The context (`struct xdp_md`).
    Ctx,
    /// Into the stack of frame `aux`.
    Stack,
    /// Into the packet, `range` bytes from `base + v` proven readable.
    Packet,
    /// Into the packet's metadata, `range` bytes proven before `data`.
    PacketMeta,
    /// `data_end`.
    PacketEnd,
    /// A packet pointer (or `data_end`) from before a helper that can move
    /// or resize the packet (`aux` is that call's slot plus one). It can no
    /// longer be dereferenced, but differences of such pointers are still
    /// lengths, as programs use them.
    PacketStale,
    /// Into a value of map `aux` (an index into the verifier's map table).
    MapValue,
    /// A map lookup's result before its null check.
    MapValueOrNull,
    /// A map (`LD_IMM64` map reference, or an inner map).
    MapPtr,
    /// An inner map from a map-of-maps lookup, before its null check.
    MapPtrOrNull,
    /// `aux` bytes of memory: a ring buffer record (`ref_id != 0`), or
    /// the plain memory of a conformance program.
    Mem,
    /// A ring buffer reservation before its null check.
    MemOrNull,
}

impl Kind {
    /// Whether the register holds an address.
    pub fn is_pointer(self) -> bool {
        !matches!(self, Kind::NotInit | Kind::Scalar)
    }

    /// Whether the register may be NULL (needs a check before use).
    pub fn maybe_null(self) -> bool {
        matches!(
            self,
            Kind::MapValueOrNull | Kind::MapPtrOrNull | Kind::MemOrNull
        )
    }

    /// The kind a successful null check leaves.
    pub fn non_null(self) -> Kind {
        match self {
            Kind::MapValueOrNull => Kind::MapValue,
            Kind::MapPtrOrNull => Kind::MapPtr,
            Kind::MemOrNull => Kind::Mem,
            k => k,
        }
    }

    /// Linux's name for the type, as the log prints it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::NotInit => "?",
            Kind::Scalar => "scalar",
            Kind::Ctx => "ctx",
            Kind::Stack => "fp",
            Kind::Packet => "pkt",
            Kind::PacketMeta => "pkt_meta",
            Kind::PacketEnd => "pkt_end",
            Kind::PacketStale => "pkt_invalidated",
            Kind::MapValue => "map_value",
            Kind::MapValueOrNull => "map_value_or_null",
            Kind::MapPtr => "map_ptr",
            Kind::MapPtrOrNull => "map_ptr_or_null",
            Kind::Mem => "mem",
            Kind::MemOrNull => "mem_or_null",
        }
    }
}

/// Why a register is not initialised.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Uninit {
    /// Nothing was ever written to it.
    Never,
    /// r1-r5 after a call (the callee may have changed them).
    ClobberedByCall,
    /// A ring buffer record after it was submitted or discarded.
    Released,
}

/// One register (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Reg {
    /// What it holds.
    pub kind: Kind,
    /// Constant offset of a pointer.
    pub off: i32,
    /// Link between copies (see the module docs); 0 for none.
    pub id: u32,
    /// The acquired reference a ring buffer record carries; 0 for none.
    pub ref_id: u32,
    /// Packet pointers: bytes from `base + v` known to be in the packet.
    pub range: u32,
    /// Map table index (map kinds), frame (stack), size (memory), or for
    /// `NotInit` the instruction that invalidated it, plus one.
    pub aux: u32,
    /// Why it is not initialised (`NotInit` only).
    pub uninit: Uninit,
    /// A scalar's value, or a pointer's variable offset.
    pub val: Scalar,
}

impl Reg {
    /// A register never written.
    pub const NOT_INIT: Reg = Reg {
        kind: Kind::NotInit,
        off: 0,
        id: 0,
        ref_id: 0,
        range: 0,
        aux: 0,
        uninit: Uninit::Never,
        val: Scalar::konst(0),
    };

    /// An invalidated register: `why`, at instruction `insn`.
    pub fn invalidated(why: Uninit, insn: usize) -> Reg {
        Reg {
            uninit: why,
            aux: u32::try_from(insn + 1).unwrap_or(u32::MAX),
            ..Reg::NOT_INIT
        }
    }

    /// A scalar.
    pub fn scalar(val: Scalar) -> Reg {
        Reg {
            kind: Kind::Scalar,
            val,
            ..Reg::NOT_INIT
        }
    }

    /// A pointer of `kind` with `aux`, at constant offset 0.
    pub fn pointer(kind: Kind, aux: u32) -> Reg {
        Reg {
            kind,
            aux,
            ..Reg::NOT_INIT
        }
    }

    /// Whether it holds a number (not a pointer, and initialised).
    pub fn is_scalar(&self) -> bool {
        self.kind == Kind::Scalar
    }

    /// Whether it is the scalar 0 (`NULL`).
    pub fn is_null(&self) -> bool {
        self.kind == Kind::Scalar && self.val.is_const(0)
    }

    /// Whether its variable offset is known to be 0.
    pub fn fixed_offset(&self) -> bool {
        self.val.is_const(0)
    }
}

/// One byte of stack that holds no spilled register.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Byte {
    /// Never written: reading it is an error.
    Invalid,
    /// Holds data the verifier does not track.
    Misc,
    /// Known to be 0.
    Zero,
}

impl Byte {
    fn symbol(self) -> char {
        match self {
            Byte::Invalid => '?',
            Byte::Misc => 'm',
            Byte::Zero => '0',
        }
    }
}

/// One 8-byte stack slot (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Slot {
    /// Eight independent bytes, lowest address first.
    Bytes([Byte; 8]),
    /// A register stored whole by an aligned 8-byte store.
    Spill(Reg),
}

impl Slot {
    /// A slot never written.
    pub const INVALID: Slot = Slot::Bytes([Byte::Invalid; 8]);

    /// The slot as bytes, for partial accesses: spilled scalars become
    /// data (zero where the value's byte is known zero), spilled pointers
    /// unreadable.
    pub fn as_bytes(&self) -> [Byte; 8] {
        match self {
            Slot::Bytes(b) => *b,
            Slot::Spill(r) if r.kind == Kind::Scalar => {
                let mut out = [Byte::Misc; 8];
                for (i, b) in out.iter_mut().enumerate() {
                    let t = r.val.var.rshift(8 * i as u32).cast(1);
                    if t.is_const() && t.value == 0 {
                        *b = Byte::Zero;
                    }
                }
                out
            }
            Slot::Spill(_) => [Byte::Invalid; 8],
        }
    }
}

/// One call frame.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Frame {
    /// r0-r10.
    pub regs: [Reg; 11],
    /// Slots from the top of the frame down: slot `i` holds bytes
    /// `-8(i+1)..-8i` relative to the frame pointer. Slots past the end are
    /// [`Slot::INVALID`].
    pub stack: Vec<Slot>,
    /// The `call` that made this frame (`None` for the program's own).
    pub callsite: Option<usize>,
    /// First instruction of the function this frame runs.
    pub entry: usize,
}

impl Frame {
    /// A fresh frame for the function at `entry`, number `depth`.
    pub fn new(entry: usize, depth: usize, callsite: Option<usize>) -> Frame {
        let mut regs = [Reg::NOT_INIT; 11];
        regs[10] = Reg::pointer(Kind::Stack, depth as u32);
        Frame {
            regs,
            stack: Vec::new(),
            callsite,
            entry,
        }
    }

    /// The slot at index `i`.
    pub fn slot(&self, i: usize) -> Slot {
        self.stack.get(i).copied().unwrap_or(Slot::INVALID)
    }

    /// The slot at index `i`, allocated if needed.
    pub fn slot_mut(&mut self, i: usize) -> &mut Slot {
        if self.stack.len() <= i {
            self.stack.resize(i + 1, Slot::INVALID);
        }
        &mut self.stack[i]
    }

    /// The byte at frame offset `off` (`-512..0`).
    pub fn byte(&self, off: i64) -> Byte {
        let (slot, idx) = locate(off);
        self.slot(slot).as_bytes()[idx]
    }
}

/// The slot index and byte index within it of frame offset `off`.
pub fn locate(off: i64) -> (usize, usize) {
    let from_bottom = (off + STACK_BYTES) as usize; // 0..512
    let slot = SLOTS - 1 - from_bottom / 8;
    (slot, from_bottom % 8)
}

/// An acquired reference.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RefEntry {
    /// The reference id registers carry in `ref_id`.
    pub id: u32,
    /// The instruction that acquired it.
    pub insn: usize,
}

/// The state of one path at one instruction.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct State {
    /// Call frames, the program's own first.
    pub frames: Vec<Frame>,
    /// References acquired and not yet released.
    pub refs: Vec<RefEntry>,
}

impl State {
    /// The state at a program's first instruction.
    pub fn entry() -> State {
        State {
            frames: vec![Frame::new(0, 0, None)],
            refs: Vec::new(),
        }
    }

    /// The running frame.
    pub fn cur(&self) -> &Frame {
        &self.frames[self.frames.len() - 1]
    }

    /// The running frame, mutably.
    pub fn cur_mut(&mut self) -> &mut Frame {
        let n = self.frames.len() - 1;
        &mut self.frames[n]
    }

    /// Register `r` of the running frame.
    pub fn reg(&self, r: u8) -> &Reg {
        &self.cur().regs[usize::from(r)]
    }

    /// Register `r` of the running frame, mutably.
    pub fn reg_mut(&mut self, r: u8) -> &mut Reg {
        &mut self.cur_mut().regs[usize::from(r)]
    }

    /// Calls `f` on every register and spilled register of every frame.
    pub fn for_each_reg(&mut self, mut f: impl FnMut(&mut Reg)) {
        for frame in &mut self.frames {
            for r in frame.regs.iter_mut() {
                f(r);
            }
            for s in frame.stack.iter_mut() {
                if let Slot::Spill(r) = s {
                    f(r);
                }
            }
        }
    }

    /// Calls `f` on every register and spilled register, read-only.
    pub fn visit_regs(&self, mut f: impl FnMut(&Reg)) {
        for frame in &self.frames {
            frame.regs.iter().for_each(&mut f);
            for s in &frame.stack {
                if let Slot::Spill(r) = s {
                    f(r);
                }
            }
        }
    }

    /// Forgets scalar links that only one register carries: they say
    /// nothing, and would only make equal states look different.
    pub fn clear_singular_scalar_ids(&mut self) {
        let mut counts: Vec<(u32, u32)> = Vec::new();
        self.visit_regs(|r| {
            if r.kind == Kind::Scalar && r.id != 0 {
                match counts.iter_mut().find(|(id, _)| *id == r.id) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((r.id, 1)),
                }
            }
        });
        if counts.iter().all(|&(_, n)| n > 1) {
            return;
        }
        self.for_each_reg(|r| {
            if r.kind == Kind::Scalar
                && r.id != 0
                && counts.iter().any(|&(id, n)| id == r.id && n == 1)
            {
                r.id = 0;
            }
        });
    }
}

/// A correspondence between the ids of an old state and a current one,
/// built while comparing them.
#[derive(Default)]
pub struct IdMap {
    pairs: Vec<(u32, u32)>,
    refs: Vec<(u32, u32)>,
}

impl IdMap {
    /// Whether old id `old` may stand for current id `cur`: each old id
    /// maps to one current id. (Two old groups may map to one current
    /// group: the current state then knows more, which is safe.)
    fn link(&mut self, old: u32, cur: u32) -> bool {
        match self.pairs.iter().find(|(o, _)| *o == old) {
            Some(&(_, c)) => c == cur,
            None => {
                self.pairs.push((old, cur));
                true
            }
        }
    }

    /// As [`IdMap::link`] but one-to-one, for references: releasing one
    /// must release the same set in both states.
    fn link_ref(&mut self, old: u32, cur: u32) -> bool {
        if old == 0 || cur == 0 {
            return old == cur;
        }
        match self.refs.iter().find(|(o, c)| *o == old || *c == cur) {
            Some(&(o, c)) => o == old && c == cur,
            None => {
                self.refs.push((old, cur));
                true
            }
        }
    }
}

/// Whether every value `cur` may hold is one `old` was verified with
/// (Linux's `regsafe`).
pub fn reg_safe(old: &Reg, cur: &Reg, ids: &mut IdMap) -> bool {
    match old.kind {
        Kind::NotInit => true,
        Kind::Scalar => {
            cur.kind == Kind::Scalar
                && old.val.includes(&cur.val)
                && (old.id == 0 || (cur.id != 0 && ids.link(old.id, cur.id)))
        }
        kind => {
            if cur.kind != kind
                || old.off != cur.off
                || old.aux != cur.aux
                || !old.val.includes(&cur.val)
                || !ids.link_ref(old.ref_id, cur.ref_id)
            {
                return false;
            }
            match kind {
                Kind::Packet | Kind::PacketMeta => {
                    old.range <= cur.range
                        && if old.id == 0 {
                            cur.id == 0
                        } else {
                            ids.link(old.id, cur.id)
                        }
                }
                Kind::MapValueOrNull | Kind::MapPtrOrNull | Kind::MemOrNull => {
                    ids.link(old.id, cur.id)
                }
                _ => true,
            }
        }
    }
}

/// Whether the stack of `cur` is covered by that of `old` (Linux's
/// `stacksafe`): every byte `old` relied on is as good in `cur`.
fn stack_safe(old: &Frame, cur: &Frame, ids: &mut IdMap) -> bool {
    for i in 0..old.stack.len() {
        let (o, c) = (old.slot(i), cur.slot(i));
        let ok = match (&o, &c) {
            (Slot::Spill(or), Slot::Spill(cr)) => reg_safe(or, cr, ids),
            (Slot::Spill(or), Slot::Bytes(cb)) => {
                or.kind == Kind::Scalar
                    && or.id == 0
                    && or.val == Scalar::UNKNOWN
                    && cb.iter().all(|b| *b != Byte::Invalid)
            }
            (Slot::Bytes(ob), _) => {
                let cb = c.as_bytes();
                let cur_pointer = matches!(c, Slot::Spill(r) if r.kind != Kind::Scalar);
                ob.iter().zip(cb).all(|(o, c)| match o {
                    Byte::Invalid => true,
                    Byte::Misc => !cur_pointer && c != Byte::Invalid,
                    Byte::Zero => !cur_pointer && c == Byte::Zero,
                })
            }
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Registers r0-r9 live at some instruction, one bit each.
pub type LiveSet = u16;

/// Whether every concrete state `cur` stands for is one `old` stands for,
/// looking only at the registers `live` says matter in each frame (Linux's
/// `states_equal`). With `exact`, `old` must equal `cur` on everything
/// that matters (used to spot infinite loops).
pub fn state_safe(old: &State, cur: &State, live: &[LiveSet], exact: bool) -> bool {
    if old.frames.len() != cur.frames.len() || old.refs.len() != cur.refs.len() {
        return false;
    }
    let mut ids = IdMap::default();
    for ((of, cf), &mask) in old.frames.iter().zip(&cur.frames).zip(live) {
        if of.callsite != cf.callsite || of.entry != cf.entry {
            return false;
        }
        for r in 0..10 {
            if mask & (1 << r) == 0 {
                continue;
            }
            let (o, c) = (&of.regs[r], &cf.regs[r]);
            let ok = if exact {
                o.kind == c.kind && (o.kind == Kind::NotInit || strip(o) == strip(c))
            } else {
                reg_safe(o, c, &mut ids)
            };
            if !ok {
                return false;
            }
        }
        let ok = if exact {
            let n = of.stack.len().max(cf.stack.len());
            (0..n).all(|i| of.slot(i) == cf.slot(i))
        } else {
            stack_safe(of, cf, &mut ids)
        };
        if !ok {
            return false;
        }
    }
    old.refs
        .iter()
        .zip(&cur.refs)
        .all(|(o, c)| ids.link_ref(o.id, c.id))
}

/// A hash of what [`state_safe`] compares in `exact` mode: states it
/// finds equal hash equally, so most unequal states are told apart
/// without comparing them.
pub fn exact_hash(st: &State, live: &[LiveSet]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    st.frames.len().hash(&mut h);
    st.refs.len().hash(&mut h);
    for (f, &mask) in st.frames.iter().zip(live) {
        f.callsite.hash(&mut h);
        f.entry.hash(&mut h);
        for r in 0..10 {
            if mask & (1 << r) != 0 {
                let reg = &f.regs[r];
                reg.kind.hash(&mut h);
                if reg.kind != Kind::NotInit {
                    strip(reg).hash(&mut h);
                }
            }
        }
        let used = f
            .stack
            .iter()
            .rposition(|s| *s != Slot::INVALID)
            .map_or(0, |i| i + 1);
        for s in &f.stack[..used] {
            match s {
                Slot::Spill(r) => strip(r).hash(&mut h),
                b => b.hash(&mut h),
            }
        }
    }
    h.finish()
}

/// A register without its ids, for exact comparison.
fn strip(r: &Reg) -> Reg {
    Reg {
        id: 0,
        ref_id: 0,
        ..*r
    }
}

/// Renders registers and stack for the log, in the style of Linux's
/// verifier log. `map_name` names map table entries.
pub fn render(state: &State, map_name: &dyn Fn(u32) -> String) -> String {
    let mut out = String::new();
    let depth = state.frames.len();
    for (f, frame) in state.frames.iter().enumerate() {
        if depth > 1 {
            let _ = write!(out, "frame{f}: ");
        }
        let mut first = true;
        for (i, r) in frame.regs.iter().enumerate() {
            if r.kind == Kind::NotInit && r.uninit == Uninit::Never {
                continue;
            }
            if !first {
                out.push(' ');
            }
            first = false;
            let _ = write!(out, "R{i}={}", RegText(r, map_name, f));
        }
        for i in 0..frame.stack.len() {
            let s = frame.slot(i);
            if s == Slot::INVALID {
                continue;
            }
            let off = -8 * (i as i64 + 1);
            let _ = match s {
                Slot::Spill(r) => write!(out, " fp{off}={}", RegText(&r, map_name, f)),
                Slot::Bytes(b) => {
                    let text: String = b.iter().rev().map(|b| b.symbol()).collect();
                    write!(out, " fp{off}={text}")
                }
            };
        }
        if f + 1 < depth {
            out.push('\n');
        }
    }
    if !state.refs.is_empty() {
        let refs: Vec<String> = state
            .refs
            .iter()
            .map(|r| format!("id={} (insn {})", r.id, r.insn))
            .collect();
        let _ = write!(out, " refs=[{}]", refs.join(", "));
    }
    out
}

/// One register in log form.
pub struct RegText<'a>(pub &'a Reg, pub &'a dyn Fn(u32) -> String, pub usize);

impl fmt::Display for RegText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        match r.kind {
            Kind::NotInit => {
                let why = match r.uninit {
                    Uninit::Never => "never written",
                    Uninit::ClobberedByCall => "clobbered by the call",
                    Uninit::Released => "record released by the helper",
                };
                if r.aux > 0 {
                    write!(f, "?({why} at insn {})", r.aux - 1)
                } else {
                    write!(f, "?({why})")
                }
            }
            Kind::Scalar => {
                if r.id == 0 && r.val.const_value().is_some() {
                    write!(f, "{}", r.val)
                } else if r.id == 0 {
                    if r.val == Scalar::UNKNOWN {
                        f.write_str("scalar()")
                    } else {
                        write!(f, "scalar({})", r.val)
                    }
                } else if r.val == Scalar::UNKNOWN {
                    write!(f, "scalar(id={})", r.id)
                } else {
                    write!(f, "scalar(id={},{})", r.id, r.val)
                }
            }
            Kind::Stack => {
                let frame = r.aux as usize;
                let fp = if frame == self.2 {
                    "fp".to_string()
                } else {
                    format!("fp[{frame}]")
                };
                if r.fixed_offset() {
                    write!(f, "{fp}{}", Signed(r.off))
                } else {
                    write!(f, "{fp}{}+({})", Signed(r.off), r.val)
                }
            }
            kind => {
                let mut parts: Vec<String> = Vec::new();
                match kind {
                    Kind::MapValue | Kind::MapValueOrNull | Kind::MapPtr | Kind::MapPtrOrNull => {
                        parts.push(format!("map={}", (self.1)(r.aux)))
                    }
                    Kind::Mem | Kind::MemOrNull => parts.push(format!("size={}", r.aux)),
                    Kind::PacketStale => parts.push(format!("by insn {}", r.aux.saturating_sub(1))),
                    _ => {}
                }
                if r.id != 0 || matches!(kind, Kind::Packet | Kind::PacketMeta) {
                    parts.push(format!("id={}", r.id));
                }
                if r.ref_id != 0 {
                    parts.push(format!("ref={}", r.ref_id));
                }
                if r.off != 0 || matches!(kind, Kind::Packet | Kind::PacketMeta) {
                    parts.push(format!("off={}", r.off));
                }
                if matches!(kind, Kind::Packet | Kind::PacketMeta) {
                    parts.push(format!("r={}", r.range));
                }
                if !r.fixed_offset() {
                    parts.push(format!("var=({})", r.val));
                }
                write!(f, "{}({})", kind.name(), parts.join(","))
            }
        }
    }
}

/// An offset with its sign always shown.
struct Signed(i32);

impl fmt::Display for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 0 {
            write!(f, "+{}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_offsets_map_to_slots() {
        assert_eq!(locate(-1), (0, 7));
        assert_eq!(locate(-8), (0, 0));
        assert_eq!(locate(-9), (1, 7));
        assert_eq!(locate(-512), (63, 0));
    }

    #[test]
    fn wider_scalars_subsume_narrower_ones() {
        let old = Reg::scalar(Scalar::urange(0, 100));
        let cur = Reg::scalar(Scalar::konst(5));
        assert!(reg_safe(&old, &cur, &mut IdMap::default()));
        assert!(!reg_safe(&cur, &old, &mut IdMap::default()));
        // An uninitialised old register accepts anything.
        assert!(reg_safe(&Reg::NOT_INIT, &cur, &mut IdMap::default()));
        // A pointer never stands in for a scalar.
        let p = Reg::pointer(Kind::Ctx, 0);
        assert!(!reg_safe(&old, &p, &mut IdMap::default()));
    }

    #[test]
    fn packet_range_must_not_shrink() {
        let mut old = Reg::pointer(Kind::Packet, 0);
        old.range = 14;
        let mut cur = old;
        cur.range = 20;
        assert!(reg_safe(&old, &cur, &mut IdMap::default()));
        assert!(!reg_safe(&cur, &old, &mut IdMap::default()));
    }

    #[test]
    fn linked_ids_must_map_consistently() {
        let mut a = Reg::scalar(Scalar::urange(0, 9));
        a.id = 1;
        let mut s1 = State::entry();
        s1.cur_mut().regs[1] = a;
        s1.cur_mut().regs[2] = a;
        let mut s2 = s1.clone();
        s2.cur_mut().regs[2].id = 7; // no longer linked to r1
        let live = [0b110];
        assert!(!state_safe(&s1, &s2, &live, false));
        assert!(state_safe(&s2, &s1, &live, false));
    }
}
