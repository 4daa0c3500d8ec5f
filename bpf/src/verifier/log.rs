//! Why a program was refused, and how the verifier got there.
//!
//! A [`VerifyError`] names the instruction, the typed [`Reason`], the
//! register and stack state at that instruction and the path that led
//! there: the branch decisions and calls from the entry, as a [`Trail`].
//! Its `Display` is a multi-line log meant for a person, in the spirit of
//! Linux's verifier log:
//!
//! ```text
//! insn 5: invalid access to packet: R2 off=14 size=2, but only 14 bytes are proven (r=14)
//!    5: ldxh %r0, [%r2+14]
//!   why: a packet read must lie inside bytes the program compared against
//!        data_end (e.g. `if (data + 16 > data_end) return XDP_DROP;`)
//!   path: 4: jgt taken no -> 5
//!   state: R1=ctx() R2=pkt(id=0,off=0,r=14) R3=pkt_end() R10=fp+0
//! ```

use std::fmt;
use std::rc::Rc;

use crate::isa::DecodeError;

/// One step of a path: a branch decision, a call or a return.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Step {
    /// The conditional jump at `at` went to `to` (`taken` tells which way).
    Branch {
        /// The jump.
        at: usize,
        /// Whether the jump was taken.
        taken: bool,
        /// Where the path went.
        to: usize,
    },
    /// A local call from `at` to the function at `to`.
    Call {
        /// The call.
        at: usize,
        /// The callee's first instruction.
        to: usize,
    },
    /// A return from the function's `exit` at `at` to `to`.
    Return {
        /// The `exit`.
        at: usize,
        /// The instruction after the call.
        to: usize,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Step::Branch { at, taken, to } => {
                write!(
                    f,
                    "{at}: {} -> {to}",
                    if taken { "taken" } else { "not taken" }
                )
            }
            Step::Call { at, to } => write!(f, "{at}: call -> {to}"),
            Step::Return { at, to } => write!(f, "{at}: exit -> {to}"),
        }
    }
}

/// The steps of one path, shared between the paths that fork from it (a
/// persistent list, newest step first).
#[derive(Clone, Default)]
pub struct Trail(Option<Rc<TrailNode>>);

struct TrailNode {
    step: Step,
    len: usize,
    prev: Trail,
}

impl Drop for Trail {
    /// Drops a long list without recursing once per step.
    fn drop(&mut self) {
        let mut cur = self.0.take();
        while let Some(node) = cur {
            match Rc::try_unwrap(node) {
                Ok(mut n) => cur = n.prev.0.take(),
                Err(_) => break,
            }
        }
    }
}

impl Trail {
    /// The path extended by `step`.
    pub fn push(&self, step: Step) -> Trail {
        Trail(Some(Rc::new(TrailNode {
            step,
            len: self.len() + 1,
            prev: self.clone(),
        })))
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |n| n.len)
    }

    /// Whether the path has no steps yet.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The last `n` steps, oldest first.
    pub fn last(&self, n: usize) -> Vec<Step> {
        let mut out = Vec::new();
        let mut cur = &self.0;
        while let Some(node) = cur {
            if out.len() == n {
                break;
            }
            out.push(node.step);
            cur = &node.prev.0;
        }
        out.reverse();
        out
    }
}

/// What a pointer leak would expose.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Leak {
    /// Stored into a map value, the packet or a ring buffer record.
    Store,
    /// Returned from the program in r0.
    Return,
    /// Passed to a helper as a number.
    HelperArg,
    /// Compared with a number (its bits steer the program).
    Comparison,
    /// Copied or converted to a number (32-bit move, negation, byte swap,
    /// partial stack spill).
    Conversion,
    /// Read back in part from the stack.
    PartialFill,
    /// Spilled to the stack in part, or through a variable offset.
    PartialSpill,
    /// Compared with, or subtracted from, a pointer into another region
    /// (the result depends on where the regions are).
    OtherRegion,
    /// A stack pointer stored into a caller's frame, where it would
    /// outlive the frame it points to.
    CallerFrame,
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Leak::Store => "stored into memory outside the stack",
            Leak::Return => "returned from the program",
            Leak::HelperArg => "passed to a helper as a number",
            Leak::Comparison => "compared with a number",
            Leak::Conversion => "converted to a number",
            Leak::PartialFill => "read back in part from the stack",
            Leak::PartialSpill => "spilled to the stack in part (invalid size of register spill)",
            Leak::OtherRegion => "compared with or subtracted from a pointer into another region",
            Leak::CallerFrame => {
                "to the stack stored into the stack frame of the caller (it would dangle)"
            }
        })
    }
}

/// Why a program was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The bytes do not decode.
    Decode(DecodeError),
    /// No instructions, or more than the budget allows.
    BadLength {
        /// Slots.
        len: usize,
    },
    /// A jump or call leaves the program.
    JumpOutOfRange {
        /// Target slot.
        target: i64,
    },
    /// A jump lands on the second slot of an `lddw`.
    JumpIntoLdImm64 {
        /// Target slot.
        target: usize,
    },
    /// A jump leaves its function.
    JumpOutOfFunction {
        /// Target slot.
        target: usize,
    },
    /// Execution runs past the end of a function.
    FallsOffEnd,
    /// No path from the entry reaches the instruction.
    Unreachable,
    /// A function calls itself, directly or not.
    Recursion {
        /// The function called again.
        callee: usize,
    },
    /// More than 8 nested frames.
    CallDepth,
    /// A register is read before it is written.
    UninitRegister {
        /// The register.
        reg: u8,
        /// Why it holds nothing.
        why: &'static str,
    },
    /// r10 is written.
    FramePointerWrite,
    /// A memory access through something that is not a usable pointer.
    InvalidMemAccess {
        /// The base register.
        reg: u8,
        /// Its type.
        kind: &'static str,
    },
    /// A packet pointer used after a helper that can move the packet.
    StalePacket {
        /// The register.
        reg: u8,
        /// The helper call that invalidated it.
        at: usize,
    },
    /// A pointer that may be NULL is used before the null check.
    NullDeref {
        /// The register.
        reg: u8,
        /// Its type.
        kind: &'static str,
    },
    /// A packet access outside the proven range.
    PacketBounds {
        /// Base register.
        reg: u8,
        /// Offset of the access from the pointer's base.
        off: i64,
        /// Access size.
        size: u32,
        /// Bytes proven from the base.
        range: u32,
        /// Whether the pointer is into the metadata area.
        meta: bool,
    },
    /// A packet pointer whose variable offset may be negative is used.
    PacketNegative {
        /// Base register.
        reg: u8,
        /// Smallest possible variable offset.
        min: i64,
    },
    /// A map value access outside `value_size`.
    MapBounds {
        /// Base register.
        reg: u8,
        /// Lowest offset the access may start at.
        lo: i64,
        /// Highest offset the access may end at (exclusive).
        hi: i64,
        /// The map's value size.
        value_size: u32,
    },
    /// A memory (ring buffer record or plain memory) access outside its size.
    MemBounds {
        /// Base register.
        reg: u8,
        /// Lowest offset.
        lo: i64,
        /// Highest end offset (exclusive).
        hi: i64,
        /// The size.
        size: u32,
    },
    /// A stack access outside the frame's 512 bytes.
    StackBounds {
        /// Lowest offset (from the frame pointer).
        lo: i64,
        /// Highest end offset (exclusive).
        hi: i64,
    },
    /// Stack bytes read before they were written.
    UninitStack {
        /// The first unwritten byte (from the frame pointer).
        off: i64,
        /// The frame.
        frame: u32,
    },
    /// An access to the context that `struct xdp_md` does not allow.
    CtxAccess {
        /// Offset into the context.
        off: i64,
        /// Access size.
        size: u32,
        /// Whether it is a write.
        write: bool,
        /// What is wrong.
        why: &'static str,
    },
    /// One instruction reads the context on one path and other memory on
    /// another: its context access could not be rewritten.
    MixedCtxAccess,
    /// A pointer's value would escape.
    PointerLeak {
        /// The register.
        reg: u8,
        /// How.
        how: Leak,
    },
    /// Arithmetic that does not keep a pointer inside its region.
    PointerArith {
        /// The register.
        reg: u8,
        /// What is wrong.
        why: String,
    },
    /// A write to read-only memory (a map with `BPF_F_RDONLY_PROG`).
    ReadOnly {
        /// The map.
        map: String,
    },
    /// An atomic operation on memory that does not allow it, or misaligned.
    Atomic {
        /// What is wrong.
        why: String,
    },
    /// A call to a helper the program type does not have.
    UnknownHelper {
        /// The number.
        id: i64,
    },
    /// A helper argument of the wrong type or size.
    HelperArg {
        /// The helper.
        helper: &'static str,
        /// Argument number (1-5).
        arg: u8,
        /// What is wrong.
        why: String,
    },
    /// A map passed to a helper that cannot use maps of its type.
    HelperMap {
        /// The helper.
        helper: &'static str,
        /// The map's name.
        map: String,
        /// Its type.
        map_type: &'static str,
    },
    /// A tail call the runtime cannot make.
    TailCall {
        /// Why.
        why: &'static str,
    },
    /// A reference (ring buffer reservation) not released on this path.
    UnreleasedReference {
        /// The reference.
        id: u32,
        /// Where it was acquired.
        acquired_at: usize,
    },
    /// r0 at the program's exit is not a number.
    ReturnValue {
        /// What r0 holds.
        kind: &'static str,
    },
    /// A function returns a pointer to its own stack.
    ReturnStackPointer,
    /// A loop the verifier found to repeat the same state forever.
    InfiniteLoop,
    /// The instruction budget ran out.
    TooComplex {
        /// Instructions processed.
        processed: u64,
        /// The budget.
        budget: u64,
    },
    /// A map reference to a map the program was not given.
    BadMap {
        /// The index.
        index: i64,
        /// What is wrong.
        why: String,
    },
    /// A valid instruction Sluice does not support.
    Unsupported {
        /// What.
        what: &'static str,
    },
}

impl Reason {
    /// A short, stable name for the reason, used by the case tables.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::Decode(_) => "decode",
            Reason::BadLength { .. } => "length",
            Reason::JumpOutOfRange { .. }
            | Reason::JumpIntoLdImm64 { .. }
            | Reason::JumpOutOfFunction { .. }
            | Reason::FallsOffEnd => "cfg",
            Reason::Unreachable => "unreachable",
            Reason::Recursion { .. } => "recursion",
            Reason::CallDepth => "call-depth",
            Reason::UninitRegister { .. } => "uninit-reg",
            Reason::FramePointerWrite => "fp-write",
            Reason::InvalidMemAccess { .. } | Reason::StalePacket { .. } => "bad-deref",
            Reason::NullDeref { .. } => "null-deref",
            Reason::PacketBounds { .. } | Reason::PacketNegative { .. } => "packet-bounds",
            Reason::MapBounds { .. } => "map-bounds",
            Reason::MemBounds { .. } => "mem-bounds",
            Reason::StackBounds { .. } => "stack-bounds",
            Reason::UninitStack { .. } => "uninit-stack",
            Reason::CtxAccess { .. } | Reason::MixedCtxAccess => "ctx-access",
            Reason::PointerLeak { .. } => "ptr-leak",
            Reason::PointerArith { .. } => "ptr-arith",
            Reason::ReadOnly { .. } => "read-only",
            Reason::Atomic { .. } => "atomic",
            Reason::UnknownHelper { .. } => "unknown-helper",
            Reason::HelperArg { .. } => "helper-arg",
            Reason::HelperMap { .. } => "helper-map",
            Reason::TailCall { .. } => "tail-call",
            Reason::UnreleasedReference { .. } => "ref-leak",
            Reason::ReturnValue { .. } | Reason::ReturnStackPointer => "exit-r0",
            Reason::InfiniteLoop => "infinite-loop",
            Reason::TooComplex { .. } => "too-complex",
            Reason::BadMap { .. } => "bad-map",
            Reason::Unsupported { .. } => "unsupported",
        }
    }

    /// What to do about it, when there is more to say than the message.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Reason::PacketBounds {
                off,
                size,
                meta: false,
                ..
            } => format!(
                "a packet access must lie inside bytes the program compared against \
                 data_end first, e.g. `if (data + {} > data_end) return XDP_DROP;` \
                 before touching bytes {}..{}",
                off + i64::from(*size),
                off,
                off + i64::from(*size)
            ),
            Reason::PacketBounds {
                meta: true,
                off,
                size,
                ..
            } => format!(
                "a metadata access must lie inside bytes the program compared against \
                 data first, e.g. `if (data_meta + {} > data) return XDP_DROP;`",
                off + i64::from(*size)
            ),
            Reason::PacketNegative { .. } => "use an unsigned index, or check `if (index >= 0)` \
                 before adding it to the packet pointer"
                .into(),
            Reason::StalePacket { .. } => "load data, data_end and data_meta from the context \
                 again after bpf_xdp_adjust_head/_tail/_meta, and check bounds again"
                .into(),
            Reason::NullDeref { .. } => "compare the pointer with 0 first: \
                 `if (!value) return ...;` (every copy of it is checked at once)"
                .into(),
            Reason::MapBounds { .. } | Reason::MemBounds { .. } => "bound the offset first, \
                 e.g. `if (i >= N) return ...;` or `i &= MASK`, so that every access stays \
                 inside the value"
                .into(),
            Reason::UninitStack { .. } => "write the bytes (e.g. `__builtin_memset`) before \
                 reading them or passing them to a helper"
                .into(),
            Reason::UnreleasedReference { acquired_at, .. } => format!(
                "every path must submit or discard the record reserved at insn {acquired_at} \
                 (bpf_ringbuf_submit / bpf_ringbuf_discard)"
            ),
            Reason::TooComplex { .. } => "bound every loop by a constant the verifier can see \
                 (e.g. `for (i = 0; i < 64 && i < n; i++)`), or split the program with tail calls"
                .into(),
            Reason::InfiniteLoop => "the loop came back to this instruction with exactly the \
                 same state, so it would never end"
                .into(),
            Reason::PointerLeak { .. } => "Sluice never lets a program turn an address into \
                 data: addresses may be dereferenced, compared with their own region's \
                 pointers, and subtracted from them, nothing else"
                .into(),
            _ => return None,
        })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Decode(e) => write!(f, "{e}"),
            Reason::BadLength { len } => write!(f, "program of {len} instructions"),
            Reason::JumpOutOfRange { target } => write!(f, "jump out of range to {target}"),
            Reason::JumpIntoLdImm64 { target } => {
                write!(f, "jump into the middle of ldimm64 at {target}")
            }
            Reason::JumpOutOfFunction { target } => {
                write!(f, "jump to {target}, outside the function")
            }
            Reason::FallsOffEnd => {
                f.write_str("the function's last instruction is not an exit or a jump")
            }
            Reason::Unreachable => f.write_str("unreachable insn"),
            Reason::Recursion { callee } => {
                write!(f, "recursive call to the function at {callee}")
            }
            Reason::CallDepth => f.write_str("the call stack of 9 frames is too deep (max 8)"),
            Reason::UninitRegister { reg, why } => write!(f, "R{reg} !read_ok ({why})"),
            Reason::FramePointerWrite => f.write_str("frame pointer is read only"),
            Reason::InvalidMemAccess { reg, kind } => {
                write!(f, "R{reg} invalid mem access '{kind}'")
            }
            Reason::StalePacket { reg, at } => write!(
                f,
                "R{reg} invalid mem access: the packet pointer was invalidated by the helper \
                 call at insn {at}, which can move or resize the packet"
            ),
            Reason::NullDeref { reg, kind } => write!(
                f,
                "R{reg} invalid mem access '{kind}': the pointer may be NULL"
            ),
            Reason::PacketBounds {
                reg,
                off,
                size,
                range,
                meta,
            } => write!(
                f,
                "invalid access to {}: R{reg} off={off} size={size}, but only {range} bytes \
                 are proven (r={range})",
                if *meta { "packet metadata" } else { "packet" }
            ),
            Reason::PacketNegative { reg, min } => write!(
                f,
                "R{reg} min value is negative ({min}), either use unsigned index or do a \
                 if (index >=0) check"
            ),
            Reason::MapBounds {
                reg,
                lo,
                hi,
                value_size,
            } => write!(
                f,
                "invalid access to map value: R{reg} may touch bytes {lo}..{hi}, value_size={value_size}"
            ),
            Reason::MemBounds { reg, lo, hi, size } => write!(
                f,
                "invalid access to memory: R{reg} may touch bytes {lo}..{hi}, mem_size={size}"
            ),
            Reason::StackBounds { lo, hi } => write!(
                f,
                "invalid stack access: bytes fp{lo}..fp{hi} are outside the frame (fp-512..fp+0)"
            ),
            Reason::UninitStack { off, frame } => write!(
                f,
                "invalid read from stack: fp{off} (frame {frame}) was never written on this path"
            ),
            Reason::CtxAccess {
                off,
                size,
                write,
                why,
            } => write!(
                f,
                "invalid bpf_context access off={off} size={size}{}: {why}",
                if *write { " (write)" } else { "" }
            ),
            Reason::MixedCtxAccess => f.write_str(
                "same insn cannot be used with different pointers (the context on one path, \
                 other memory on another)",
            ),
            Reason::PointerLeak { reg, how } => write!(f, "R{reg} leaks addr: pointer {how}"),
            Reason::PointerArith { reg, why } => write!(f, "R{reg} {why}"),
            Reason::ReadOnly { map } => write!(f, "write into map {map} forbidden (read-only)"),
            Reason::Atomic { why } => write!(f, "invalid atomic operation: {why}"),
            Reason::UnknownHelper { id } => write!(f, "invalid func unknown#{id}"),
            Reason::HelperArg { helper, arg, why } => write!(f, "{helper} arg{arg}: {why}"),
            Reason::HelperMap {
                helper,
                map,
                map_type,
            } => write!(
                f,
                "cannot pass map_type {map_type} (map {map}) into func {helper}"
            ),
            Reason::TailCall { why } => write!(f, "tail call: {why}"),
            Reason::UnreleasedReference { id, acquired_at } => write!(
                f,
                "Unreleased reference id={id} alloc_insn={acquired_at}"
            ),
            Reason::ReturnValue { kind } => {
                write!(f, "R0 at exit must be a number, but it is {kind}")
            }
            Reason::ReturnStackPointer => f.write_str("cannot return stack pointer to the caller"),
            Reason::InfiniteLoop => f.write_str("infinite loop detected"),
            Reason::TooComplex { processed, budget } => write!(
                f,
                "program too complex: {processed} instructions processed, the budget is {budget}"
            ),
            Reason::BadMap { index, why } => write!(f, "map reference {index}: {why}"),
            Reason::Unsupported { what } => write!(f, "{what} is not supported"),
        }
    }
}

/// A refused program: where, why, in which state and by which path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// The instruction (slot index) where the verifier stopped.
    pub insn: usize,
    /// Why.
    pub reason: Reason,
    /// The instruction, disassembled (empty when it does not decode).
    pub text: String,
    /// Registers and stack before the instruction, rendered as in the log.
    pub state: String,
    /// The last branch decisions, calls and returns that led there, oldest
    /// first.
    pub path: Vec<Step>,
    /// How many steps the whole path had (`path` keeps the last ones).
    pub path_len: usize,
    /// The verifier's log up to the error, when [`super::VerifyOptions`]
    /// asked for one.
    pub log: String,
}

impl std::error::Error for VerifyError {}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "insn {}: {}", self.insn, self.reason)?;
        if !self.text.is_empty() {
            writeln!(f, "  {:>4}: {}", self.insn, self.text)?;
        }
        if let Some(h) = self.reason.hint() {
            writeln!(f, "  why: {h}")?;
        }
        if !self.path.is_empty() {
            let steps: Vec<String> = self.path.iter().map(Step::to_string).collect();
            let more = if self.path_len > self.path.len() {
                format!("({} earlier steps) ... ", self.path_len - self.path.len())
            } else {
                String::new()
            };
            writeln!(f, "  path: {more}{}", steps.join(", "))?;
        } else if self.insn > 0 && !self.state.is_empty() {
            writeln!(f, "  path: straight from the entry")?;
        }
        if !self.state.is_empty() {
            write!(f, "  state: {}", self.state.replace('\n', "\n         "))?;
        }
        Ok(())
    }
}
