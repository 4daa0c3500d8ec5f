//! The interpreter.
//!
//! It runs the lowered form that [`Program`] built at load, so a step is one
//! indexed load of a 16-byte slot and one jump through the dispatch table.
//!
//! # Checked memory
//!
//! Every run sees a small table of [`Regions`]. Region *i* lives at virtual
//! addresses `i << 32 ..`; a pointer the program holds is such a virtual
//! address, never a host address. Each load, store, atomic and helper
//! pointer argument is translated: the region comes from the top 32 bits,
//! the offset is checked so that the *whole* access (first and last byte)
//! lies inside the region, stores also need a writable region. Anything
//! else ends the run with [`Fault::MemoryAccess`] naming the instruction, so
//! a program can never touch host memory outside what it was given.
//!
//! Region 0 holds the packet (or the plain memory of a conformance test) at
//! [`PACKET_VBASE`], below 4 GiB, so the 32-bit `data`/`data_end` fields of
//! Linux's `struct xdp_md` carry real, usable pointers; region 1 is the
//! context, region 2 the stack.
//!
//! # Budget
//!
//! Each run may execute at most [`Vm::budget`] instructions. The count costs
//! nothing per instruction: it is charged at backward jumps, calls and
//! returns, with the span of slots since the last charge point. That is
//! exact for straight code and loops and over-counts only the slots a
//! forward jump skipped, so the budget is a safe upper bound.
//!
//! # Calls
//!
//! Up to [`MAX_FRAMES`] frames of [`FRAME_SIZE`] bytes of stack each. A local
//! call saves r6-r9 and r10 and moves r10 down one frame; `exit` in a callee
//! restores them, as Linux's interpreter does.

pub mod ctx;
pub(crate) mod mem;

pub use crate::maps::prog_array::MAX_TAIL_CALLS;
pub use ctx::{CallCtx, TraceSink};
use ctx::{RunState, XdpState};
pub use mem::DYN_REGIONS;
use mem::{Region, Regions};

use crate::helpers::{helper_fault, HelperError};
use crate::maps::prog_array::ProgArray;
use crate::native::NativeXdpMd;
use crate::program::{atomic, Op, Program};

/// Bytes of stack per call frame.
pub const FRAME_SIZE: usize = 512;
/// Call frames (the program's own plus seven nested local calls).
pub const MAX_FRAMES: usize = 8;
/// Total stack bytes of a [`Vm`].
pub const STACK_SIZE: usize = FRAME_SIZE * MAX_FRAMES;
/// Default instruction budget of a run.
pub const DEFAULT_BUDGET: u64 = 1 << 24;

/// Region index of the packet or plain memory.
pub const REGION_PACKET: usize = 0;
/// Region index of the context.
pub const REGION_CTX: usize = 1;
/// Region index of the stack.
pub const REGION_STACK: usize = 2;
/// Virtual address of the first byte of the packet buffer.
pub const PACKET_VBASE: u64 = 0x1000_0000;
/// Virtual address of the context.
pub const CTX_VBASE: u64 = (REGION_CTX as u64) << 32;
/// Virtual address of the lowest stack byte.
pub const STACK_VBASE: u64 = (REGION_STACK as u64) << 32;

/// Why a run ended without reaching `exit`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Fault {
    /// A load, store or atomic outside the program's memory.
    #[error("insn {pc}: invalid memory access: {} of {size} bytes at {addr:#x}", if *write { "write" } else { "read" })]
    MemoryAccess {
        /// Instruction.
        pc: usize,
        /// Virtual address.
        addr: u64,
        /// Access size in bytes.
        size: u8,
        /// Store or atomic.
        write: bool,
    },
    /// An atomic operation on an address not aligned to its size.
    #[error("insn {pc}: misaligned atomic access at {addr:#x}")]
    Misaligned {
        /// Instruction.
        pc: usize,
        /// Virtual address.
        addr: u64,
    },
    /// The instruction budget ran out.
    #[error("insn {pc}: instruction budget of {limit} exhausted")]
    Budget {
        /// Instruction where it ran out.
        pc: usize,
        /// The budget.
        limit: u64,
    },
    /// An unchecked run of a program that was not verified.
    #[error("the program was not verified, so it can only run checked")]
    NotVerified,
    /// A local call beyond [`MAX_FRAMES`] frames.
    #[error("insn {pc}: call stack deeper than {MAX_FRAMES} frames")]
    CallDepth {
        /// Calling instruction.
        pc: usize,
    },
    /// `callx` through a register that holds no helper number.
    #[error("insn {pc}: callx to {target:#x}, which is not a helper")]
    BadCallx {
        /// Calling instruction.
        pc: usize,
        /// Register value.
        target: u64,
    },
    /// A helper refused its arguments.
    #[error("insn {pc}: helper {helper}: {err}")]
    Helper {
        /// Calling instruction.
        pc: usize,
        /// Helper number.
        helper: u32,
        /// What went wrong.
        err: HelperError,
    },
}

/// Linux's `struct xdp_md` field offsets, as programs see them.
pub mod xdp_md {
    /// `__u32 data`
    pub const DATA: usize = 0;
    /// `__u32 data_end`
    pub const DATA_END: usize = 4;
    /// `__u32 data_meta`
    pub const DATA_META: usize = 8;
    /// `__u32 ingress_ifindex`
    pub const INGRESS_IFINDEX: usize = 12;
    /// `__u32 rx_queue_index`
    pub const RX_QUEUE_INDEX: usize = 16;
    /// `__u32 egress_ifindex`
    pub const EGRESS_IFINDEX: usize = 20;
    /// Size of the structure.
    pub const SIZE: usize = 24;
}

/// A packet as an XDP program sees it: a buffer with headroom, and the
/// offsets of the metadata, the data and its end within that buffer. A run
/// updates the offsets (`bpf_xdp_adjust_head/tail/meta`) and records the
/// redirect target.
#[derive(Debug)]
pub struct XdpFrame<'a> {
    /// The whole buffer: headroom, packet, and the tailroom that
    /// `bpf_xdp_adjust_tail` may grow into.
    pub buf: &'a mut [u8],
    /// Offset of the metadata (equal to `data` when there is none).
    pub meta: usize,
    /// Offset of the first packet byte.
    pub data: usize,
    /// Offset one past the last packet byte.
    pub end: usize,
    /// Interface the packet arrived on.
    pub ingress_ifindex: u32,
    /// Queue the packet arrived on.
    pub rx_queue_index: u32,
    /// For an egress program, the port the packet is about to leave by
    /// (0 on ingress), as Linux gives devmap programs.
    pub egress_ifindex: u32,
    /// Set by a run: where `bpf_redirect`/`bpf_redirect_map` sent the
    /// packet.
    pub redirect: Option<Redirect>,
}

/// Where `bpf_redirect*` sent a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Redirect {
    /// Out of a port, by ifindex (`bpf_redirect`, a devmap entry).
    Port(u32),
    /// To the network stack by way of a CPU (a cpumap entry): in Sluice,
    /// the host stack behind the port the packet came in on.
    Cpu(u32),
}

impl<'a> XdpFrame<'a> {
    /// A frame whose packet is `buf[data..end]`, with no metadata.
    pub fn new(buf: &'a mut [u8], data: usize, end: usize) -> XdpFrame<'a> {
        XdpFrame {
            buf,
            meta: data,
            data,
            end,
            ingress_ifindex: 0,
            rx_queue_index: 0,
            egress_ifindex: 0,
            redirect: None,
        }
    }

    /// The packet bytes.
    pub fn packet(&self) -> &[u8] {
        &self.buf[self.data..self.end]
    }
}

/// An execution context: the stack, the worker's identity and the run
/// settings. One per worker; runs reuse it and allocate nothing.
pub struct Vm {
    stack: Box<Stack>,
    /// Per-run regions; only the stack's entry survives between runs.
    dynamic: [Region; DYN_REGIONS],
    state: RunState,
    frames: [Frame; MAX_FRAMES],
    checked: bool,
    engine: Engine,
    #[cfg(all(feature = "jit", target_arch = "x86_64"))]
    jit: Option<Box<crate::jit::JitVm>>,
}

/// Which engine runs verified programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Engine {
    /// The interpreter (natively for verified programs, checked otherwise).
    #[default]
    Interp,
    /// Machine code from the JIT for programs that have it (verified, on
    /// x86-64); others fall back to the interpreter.
    Jit,
}

impl Engine {
    /// The JIT where this build has one, else the interpreter.
    pub fn best() -> Engine {
        if cfg!(all(feature = "jit", target_arch = "x86_64")) {
            Engine::Jit
        } else {
            Engine::Interp
        }
    }
}

impl Default for Vm {
    fn default() -> Self {
        Vm::new()
    }
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("cpu", &self.cpu())
            .field("budget", &self.budget())
            .finish()
    }
}

/// The stack, aligned so that aligned program addresses are aligned host
/// addresses (atomics need it).
#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

#[derive(Clone, Copy, Default)]
struct Frame {
    ret: usize,
    saved: [u64; 5],
}

impl Vm {
    /// A fresh context for worker 0, with a zeroed stack and the default
    /// budget.
    pub fn new() -> Vm {
        Vm::for_cpu(0)
    }

    /// A fresh context for worker `cpu`: per-CPU maps use that worker's
    /// copy and `bpf_get_smp_processor_id()` returns `cpu`.
    pub fn for_cpu(cpu: u32) -> Vm {
        let rng = 0x9e37_79b9_7f4a_7c15 ^ (u64::from(cpu) + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let mut vm = Vm {
            stack: Box::new(Stack([0; STACK_SIZE])),
            dynamic: [Region::EMPTY; DYN_REGIONS],
            state: RunState::new(cpu, rng, None, DEFAULT_BUDGET),
            frames: [Frame::default(); MAX_FRAMES],
            checked: false,
            engine: Engine::Interp,
            #[cfg(all(feature = "jit", target_arch = "x86_64"))]
            jit: None,
        };
        // The stack's address never changes (it is boxed), so its region is
        // set once.
        vm.dynamic[REGION_STACK] = Region::new(STACK_VBASE, &mut vm.stack.0[..], true);
        vm
    }

    /// The worker index.
    pub fn cpu(&self) -> u32 {
        self.state.cpu
    }

    /// The instruction budget of each run.
    pub fn budget(&self) -> u64 {
        self.state.limit
    }

    /// Sets the instruction budget of each run.
    pub fn set_budget(&mut self, budget: u64) {
        self.state.limit = budget;
    }

    /// Where `bpf_trace_printk` lines go (nowhere by default).
    pub fn set_trace_sink(&mut self, sink: Option<TraceSink>) {
        self.state.trace = sink;
    }

    /// Seeds the generator behind `bpf_get_prandom_u32`.
    pub fn seed_random(&mut self, seed: u64) {
        self.state.rng = seed | 1;
    }

    /// The FIB `bpf_fib_lookup` consults (`None`, the default: an empty
    /// FIB, where every lookup fails with `-ENODEV`). Programs that do not
    /// call the helper never touch it.
    pub fn set_fib(&mut self, fib: Option<std::sync::Arc<crate::fib::Fib>>) {
        #[cfg(all(feature = "jit", target_arch = "x86_64"))]
        if let Some(j) = &mut self.jit {
            j.set_fib(fib.clone());
        }
        self.state.fib = fib;
    }

    /// Runs a plain-memory program: r1 points to `mem`, r2 holds its length
    /// (the bpf_conformance convention). Returns r0.
    ///
    /// # Errors
    /// The [`Fault`] that ended the run.
    pub fn run_mem(&mut self, prog: &Program, mem: &mut [u8]) -> Result<u64, Fault> {
        let len = mem.len() as u64;
        self.state.xdp = None;
        if self.native_for(prog) {
            let r1 = mem.as_mut_ptr() as u64;
            return self.exec_native(prog, std::ptr::null_mut(), r1, len);
        }
        self.dynamic[REGION_PACKET] = Region::new(PACKET_VBASE, mem, true);
        self.exec(prog, PACKET_VBASE, len)
    }

    /// Selects the engine for verified programs.
    pub fn set_engine(&mut self, engine: Engine) {
        self.engine = engine;
    }

    /// The engine for verified programs.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Whether runs check every access even for verified programs (the
    /// sanitizer mode of tests and fuzzing). Off by default: verified
    /// programs run natively, unverified ones always checked.
    pub fn set_checked(&mut self, on: bool) {
        self.checked = on;
    }

    fn native_for(&self, prog: &Program) -> bool {
        !self.checked && prog.native_slots.is_some()
    }

    /// Runs a verified program natively: r1 = `r1`, r2 = `r2`, r10 = the
    /// top of the host stack.
    fn exec_native(
        &mut self,
        prog: &Program,
        ctx: *mut NativeXdpMd,
        r1: u64,
        r2: u64,
    ) -> Result<u64, Fault> {
        let mut reg = [0u64; 16];
        reg[1] = r1;
        reg[2] = r2;
        reg[10] = self.stack.0.as_mut_ptr() as u64 + STACK_SIZE as u64;
        let st = &mut self.state;
        st.redirect = ctx::NO_REDIRECT;
        st.tail_calls = 0;
        st.used = 0;
        // SAFETY: `native_for` checked that the program was verified (only
        // `Program::load_verified` makes native slots), and `ctx` is null or
        // this run's native context, alive until `run` returns.
        #[allow(unsafe_code)]
        let access = unsafe { mem::NativeAccess::new(ctx) };
        let result = run(prog, access, st, &mut reg, &mut self.frames);
        if st.inner_used {
            st.release_inner();
        }
        result
    }

    /// Runs an XDP program on one frame: r1 points to a `struct xdp_md`
    /// whose `data`, `data_end` and `data_meta` address the frame. Returns r0
    /// (the verdict); the frame's offsets and `redirect` reflect what the
    /// program did.
    ///
    /// # Errors
    /// The [`Fault`] that ended the run.
    ///
    /// # Panics
    /// If the frame's offsets are not ordered `meta <= data <= end <= buf.len()`
    /// or the buffer is 4 GiB or larger (callers build frames; programs do not).
    #[inline]
    pub fn run_xdp(&mut self, prog: &Program, frame: &mut XdpFrame<'_>) -> Result<u64, Fault> {
        assert!(
            frame.meta <= frame.data && frame.data <= frame.end && frame.end <= frame.buf.len(),
            "malformed XdpFrame offsets"
        );
        assert!(
            (frame.buf.len() as u64) < (1 << 32) - PACKET_VBASE,
            "XdpFrame buffer too large"
        );
        #[cfg(all(feature = "jit", target_arch = "x86_64"))]
        if self.engine == Engine::Jit && !self.checked {
            if let Some(code) = &prog.jit {
                let cpu = self.state.cpu;
                let fib = &self.state.fib;
                let jvm = self.jit.get_or_insert_with(|| {
                    let mut j = crate::jit::JitVm::for_cpu(cpu);
                    j.set_fib(fib.clone());
                    Box::new(j)
                });
                return jvm.run_frame(code, frame);
            }
        }
        let buf_len = frame.buf.len();
        if self.native_for(prog) {
            let base = frame.buf.as_mut_ptr() as u64;
            let mut native = NativeXdpMd {
                data: base + frame.data as u64,
                data_end: base + frame.end as u64,
                data_meta: base + frame.meta as u64,
                ingress_ifindex: frame.ingress_ifindex,
                rx_queue_index: frame.rx_queue_index,
                egress_ifindex: frame.egress_ifindex,
                _pad: 0,
            };
            let whole = Region::new(PACKET_VBASE, frame.buf, true);
            self.state.xdp = Some(XdpState {
                whole,
                buf_len,
                meta: frame.meta,
                data: frame.data,
                end: frame.end,
            });
            let ctx: *mut NativeXdpMd = &mut native;
            let r = self.exec_native(prog, ctx, ctx as u64, 0);
            if let Some(x) = self.state.xdp.take() {
                (frame.meta, frame.data, frame.end) = (x.meta, x.data, x.end);
            }
            frame.redirect = self.state.redirect();
            return r;
        }
        let v = |off: usize| (PACKET_VBASE + off as u64) as u32;
        let mut ctx = [0u32; xdp_md::SIZE / 4];
        ctx[xdp_md::DATA / 4] = v(frame.data);
        ctx[xdp_md::DATA_END / 4] = v(frame.end);
        ctx[xdp_md::DATA_META / 4] = v(frame.meta);
        ctx[xdp_md::INGRESS_IFINDEX / 4] = frame.ingress_ifindex;
        ctx[xdp_md::RX_QUEUE_INDEX / 4] = frame.rx_queue_index;
        ctx[xdp_md::EGRESS_IFINDEX / 4] = frame.egress_ifindex;
        let mut ctx_bytes = [0u8; xdp_md::SIZE];
        for (dst, src) in ctx_bytes.chunks_exact_mut(4).zip(ctx) {
            dst.copy_from_slice(&src.to_le_bytes());
        }
        let whole = Region::new(PACKET_VBASE, frame.buf, true);
        self.dynamic[REGION_PACKET] = whole.sub(frame.meta, frame.end - frame.meta);
        self.dynamic[REGION_CTX] = Region::new(CTX_VBASE, &mut ctx_bytes, false);
        self.state.xdp = Some(XdpState {
            whole,
            buf_len,
            meta: frame.meta,
            data: frame.data,
            end: frame.end,
        });
        let r = self.exec(prog, CTX_VBASE, 0);
        if let Some(x) = self.state.xdp.take() {
            (frame.meta, frame.data, frame.end) = (x.meta, x.data, x.end);
        }
        frame.redirect = self.state.redirect();
        r
    }

    #[inline]
    fn exec(&mut self, prog: &Program, r1: u64, r2: u64) -> Result<u64, Fault> {
        let mut reg = [0u64; 16];
        reg[1] = r1;
        reg[2] = r2;
        reg[10] = STACK_VBASE + STACK_SIZE as u64;
        let st = &mut self.state;
        st.redirect = ctx::NO_REDIRECT;
        st.tail_calls = 0;
        st.used = 0;
        let regions = Regions {
            dynamic: &mut self.dynamic,
            fixed: &prog.map_regions,
        };
        let result = run(prog, regions, st, &mut reg, &mut self.frames);
        // No pointer into the caller's buffers outlives the run: the packet
        // and context slots are cleared, and any inner maps are let go.
        self.dynamic[REGION_PACKET] = Region::EMPTY;
        self.dynamic[REGION_CTX] = Region::EMPTY;
        if st.inner_used {
            st.release_inner();
            for r in &mut self.dynamic[ctx::REGION_INNER..] {
                *r = Region::EMPTY;
            }
        }
        result
    }
}

#[inline(always)]
fn bswap(v: u64, bits: u32) -> u64 {
    match bits {
        16 => u64::from((v as u16).swap_bytes()),
        32 => u64::from((v as u32).swap_bytes()),
        _ => v.swap_bytes(),
    }
}

/// The dispatch loop, over checked ([`Regions`]) or native
/// ([`mem::NativeAccess`]) memory.
#[inline(never)]
fn run<A: mem::Access>(
    prog: &Program,
    mut regions: A,
    state: &mut RunState,
    reg: &mut [u64; 16],
    frames: &mut [Frame; MAX_FRAMES],
) -> Result<u64, Fault> {
    let Some(slots) = A::slots(prog) else {
        return Err(Fault::NotVerified);
    };
    let limit = state.limit;
    let mut depth = 0usize;
    let mut pc = 0usize;
    // Start of the current straight-line run, and instructions charged so far.
    let mut seg = 0usize;
    let mut used = state.used;

    macro_rules! charge {
        ($to:expr) => {{
            used += (pc - seg + 1) as u64;
            if used > limit {
                return Err(Fault::Budget { pc, limit });
            }
            seg = $to;
        }};
    }
    macro_rules! jump {
        ($cond:expr, $s:expr) => {{
            if $cond {
                let t = $s.off as usize;
                // Only a backward jump can repeat code: forward jumps are
                // charged with the next back-edge, call or return, which
                // counts the skipped slots too (an upper bound).
                if t <= pc {
                    charge!(t);
                }
                pc = t;
                continue;
            }
        }};
    }
    macro_rules! load {
        ($n:literal, $s:expr) => {{
            let a = reg[($s.src & 15) as usize].wrapping_add($s.off as i64 as u64);
            match regions.load::<$n>(a) {
                Some(v) => v,
                None => {
                    return Err(Fault::MemoryAccess {
                        pc,
                        addr: a,
                        size: $n,
                        write: false,
                    })
                }
            }
        }};
    }
    macro_rules! store {
        ($n:literal, $s:expr, $v:expr) => {{
            let a = reg[($s.dst & 15) as usize].wrapping_add($s.off as i64 as u64);
            let v = $v;
            if regions.store::<$n>(a, v).is_none() {
                return Err(Fault::MemoryAccess {
                    pc,
                    addr: a,
                    size: $n,
                    write: true,
                });
            }
        }};
    }

    loop {
        // SAFETY: `Program::load` proved every jump and call target is a slot
        // of the program, the last slot cannot fall through, and `lddw` is
        // never last, so `pc` is always in bounds here.
        #[allow(unsafe_code)]
        let s = unsafe { *slots.get_unchecked(pc) };
        let d = (s.dst & 15) as usize;
        let r = (s.src & 15) as usize;
        let imm = s.imm;
        match s.op {
            Op::Add64I => reg[d] = reg[d].wrapping_add(imm),
            Op::Sub64I => reg[d] = reg[d].wrapping_sub(imm),
            Op::Mul64I => reg[d] = reg[d].wrapping_mul(imm),
            Op::Div64I => reg[d] = reg[d].checked_div(imm).unwrap_or(0),
            Op::Sdiv64I => reg[d] = sdiv64(reg[d], imm),
            Op::Or64I => reg[d] |= imm,
            Op::And64I => reg[d] &= imm,
            Op::Lsh64I => reg[d] <<= imm & 63,
            Op::Rsh64I => reg[d] >>= imm & 63,
            Op::Mod64I => reg[d] = reg[d].checked_rem(imm).unwrap_or(reg[d]),
            Op::Smod64I => reg[d] = smod64(reg[d], imm),
            Op::Xor64I => reg[d] ^= imm,
            Op::Mov64I => reg[d] = imm,
            Op::Arsh64I => reg[d] = ((reg[d] as i64) >> (imm & 63)) as u64,

            Op::Add64R => reg[d] = reg[d].wrapping_add(reg[r]),
            Op::Sub64R => reg[d] = reg[d].wrapping_sub(reg[r]),
            Op::Mul64R => reg[d] = reg[d].wrapping_mul(reg[r]),
            Op::Div64R => reg[d] = reg[d].checked_div(reg[r]).unwrap_or(0),
            Op::Sdiv64R => reg[d] = sdiv64(reg[d], reg[r]),
            Op::Or64R => reg[d] |= reg[r],
            Op::And64R => reg[d] &= reg[r],
            Op::Lsh64R => reg[d] <<= reg[r] & 63,
            Op::Rsh64R => reg[d] >>= reg[r] & 63,
            Op::Mod64R => reg[d] = reg[d].checked_rem(reg[r]).unwrap_or(reg[d]),
            Op::Smod64R => reg[d] = smod64(reg[d], reg[r]),
            Op::Xor64R => reg[d] ^= reg[r],
            Op::Mov64R => reg[d] = reg[r],
            Op::Arsh64R => reg[d] = ((reg[d] as i64) >> (reg[r] & 63)) as u64,

            Op::Add32I => reg[d] = u64::from((reg[d] as u32).wrapping_add(imm as u32)),
            Op::Sub32I => reg[d] = u64::from((reg[d] as u32).wrapping_sub(imm as u32)),
            Op::Mul32I => reg[d] = u64::from((reg[d] as u32).wrapping_mul(imm as u32)),
            Op::Div32I => reg[d] = u64::from((reg[d] as u32).checked_div(imm as u32).unwrap_or(0)),
            Op::Sdiv32I => reg[d] = sdiv32(reg[d], imm),
            Op::Or32I => reg[d] = u64::from(reg[d] as u32 | imm as u32),
            Op::And32I => reg[d] = u64::from(reg[d] as u32 & imm as u32),
            Op::Lsh32I => reg[d] = u64::from((reg[d] as u32) << (imm & 31)),
            Op::Rsh32I => reg[d] = u64::from((reg[d] as u32) >> (imm & 31)),
            Op::Mod32I => reg[d] = mod32(reg[d], imm),
            Op::Smod32I => reg[d] = smod32(reg[d], imm),
            Op::Xor32I => reg[d] = u64::from(reg[d] as u32 ^ imm as u32),
            Op::Mov32I => reg[d] = u64::from(imm as u32),
            Op::Arsh32I => reg[d] = u64::from(((reg[d] as i32) >> (imm & 31)) as u32),

            Op::Add32R => reg[d] = u64::from((reg[d] as u32).wrapping_add(reg[r] as u32)),
            Op::Sub32R => reg[d] = u64::from((reg[d] as u32).wrapping_sub(reg[r] as u32)),
            Op::Mul32R => reg[d] = u64::from((reg[d] as u32).wrapping_mul(reg[r] as u32)),
            Op::Div32R => {
                reg[d] = u64::from((reg[d] as u32).checked_div(reg[r] as u32).unwrap_or(0))
            }
            Op::Sdiv32R => reg[d] = sdiv32(reg[d], reg[r]),
            Op::Or32R => reg[d] = u64::from(reg[d] as u32 | reg[r] as u32),
            Op::And32R => reg[d] = u64::from(reg[d] as u32 & reg[r] as u32),
            Op::Lsh32R => reg[d] = u64::from((reg[d] as u32) << (reg[r] & 31)),
            Op::Rsh32R => reg[d] = u64::from((reg[d] as u32) >> (reg[r] & 31)),
            Op::Mod32R => reg[d] = mod32(reg[d], reg[r]),
            Op::Smod32R => reg[d] = smod32(reg[d], reg[r]),
            Op::Xor32R => reg[d] = u64::from(reg[d] as u32 ^ reg[r] as u32),
            Op::Mov32R => reg[d] = u64::from(reg[r] as u32),
            Op::Arsh32R => reg[d] = u64::from(((reg[d] as i32) >> (reg[r] & 31)) as u32),

            Op::Movsx8To64 => reg[d] = reg[r] as i8 as i64 as u64,
            Op::Movsx16To64 => reg[d] = reg[r] as i16 as i64 as u64,
            Op::Movsx32To64 => reg[d] = reg[r] as i32 as i64 as u64,
            Op::Movsx8To32 => reg[d] = u64::from(reg[r] as i8 as i32 as u32),
            Op::Movsx16To32 => reg[d] = u64::from(reg[r] as i16 as i32 as u32),
            Op::Neg64 => reg[d] = reg[d].wrapping_neg(),
            Op::Neg32 => reg[d] = u64::from((reg[d] as u32).wrapping_neg()),
            Op::Zext16 => reg[d] &= 0xffff,
            Op::Zext32 => reg[d] &= 0xffff_ffff,
            Op::Bswap16 => reg[d] = bswap(reg[d], 16),
            Op::Bswap32 => reg[d] = bswap(reg[d], 32),
            Op::Bswap64 => reg[d] = bswap(reg[d], 64),

            Op::Ldxb => reg[d] = load!(1, s),
            Op::Ldxh => reg[d] = load!(2, s),
            Op::Ldxw => reg[d] = load!(4, s),
            Op::Ldxdw => reg[d] = load!(8, s),
            Op::Ldxsb => reg[d] = load!(1, s) as i8 as i64 as u64,
            Op::Ldxsh => reg[d] = load!(2, s) as i16 as i64 as u64,
            Op::Ldxsw => reg[d] = load!(4, s) as i32 as i64 as u64,
            Op::Stb => store!(1, s, imm),
            Op::Sth => store!(2, s, imm),
            Op::Stw => store!(4, s, imm),
            Op::Stdw => store!(8, s, imm),
            Op::Stxb => store!(1, s, reg[r]),
            Op::Stxh => store!(2, s, reg[r]),
            Op::Stxw => store!(4, s, reg[r]),
            Op::Stxdw => store!(8, s, reg[r]),
            Op::Atomic32 | Op::Atomic64 => {
                let wide = s.op == Op::Atomic64;
                let a = reg[d].wrapping_add(s.off as i64 as u64);
                let old = match regions.atomic(a, wide, imm, reg[r], reg[0]) {
                    Ok(v) => v,
                    Err(true) => return Err(Fault::Misaligned { pc, addr: a }),
                    Err(false) => {
                        let size = if wide { 8 } else { 4 };
                        return Err(Fault::MemoryAccess {
                            pc,
                            addr: a,
                            size,
                            write: true,
                        });
                    }
                };
                if imm == atomic::CMPXCHG {
                    reg[0] = old;
                } else if imm & atomic::FETCH != 0 {
                    reg[r] = old;
                }
            }
            Op::LdImm64 => {
                reg[d] = imm;
                pc += 2;
                continue;
            }

            Op::Ja => jump!(true, s),
            Op::Jeq64I => jump!(reg[d] == imm, s),
            Op::Jgt64I => jump!(reg[d] > imm, s),
            Op::Jge64I => jump!(reg[d] >= imm, s),
            Op::Jset64I => jump!(reg[d] & imm != 0, s),
            Op::Jne64I => jump!(reg[d] != imm, s),
            Op::Jsgt64I => jump!((reg[d] as i64) > imm as i64, s),
            Op::Jsge64I => jump!((reg[d] as i64) >= imm as i64, s),
            Op::Jlt64I => jump!(reg[d] < imm, s),
            Op::Jle64I => jump!(reg[d] <= imm, s),
            Op::Jslt64I => jump!((reg[d] as i64) < imm as i64, s),
            Op::Jsle64I => jump!((reg[d] as i64) <= imm as i64, s),
            Op::Jeq64R => jump!(reg[d] == reg[r], s),
            Op::Jgt64R => jump!(reg[d] > reg[r], s),
            Op::Jge64R => jump!(reg[d] >= reg[r], s),
            Op::Jset64R => jump!(reg[d] & reg[r] != 0, s),
            Op::Jne64R => jump!(reg[d] != reg[r], s),
            Op::Jsgt64R => jump!((reg[d] as i64) > reg[r] as i64, s),
            Op::Jsge64R => jump!((reg[d] as i64) >= reg[r] as i64, s),
            Op::Jlt64R => jump!(reg[d] < reg[r], s),
            Op::Jle64R => jump!(reg[d] <= reg[r], s),
            Op::Jslt64R => jump!((reg[d] as i64) < reg[r] as i64, s),
            Op::Jsle64R => jump!((reg[d] as i64) <= reg[r] as i64, s),
            Op::Jeq32I => jump!(reg[d] as u32 == imm as u32, s),
            Op::Jgt32I => jump!(reg[d] as u32 > imm as u32, s),
            Op::Jge32I => jump!(reg[d] as u32 >= imm as u32, s),
            Op::Jset32I => jump!(reg[d] as u32 & imm as u32 != 0, s),
            Op::Jne32I => jump!(reg[d] as u32 != imm as u32, s),
            Op::Jsgt32I => jump!((reg[d] as i32) > imm as i32, s),
            Op::Jsge32I => jump!((reg[d] as i32) >= imm as i32, s),
            Op::Jlt32I => jump!((reg[d] as u32) < imm as u32, s),
            Op::Jle32I => jump!(reg[d] as u32 <= imm as u32, s),
            Op::Jslt32I => jump!((reg[d] as i32) < imm as i32, s),
            Op::Jsle32I => jump!((reg[d] as i32) <= imm as i32, s),
            Op::Jeq32R => jump!(reg[d] as u32 == reg[r] as u32, s),
            Op::Jgt32R => jump!(reg[d] as u32 > reg[r] as u32, s),
            Op::Jge32R => jump!(reg[d] as u32 >= reg[r] as u32, s),
            Op::Jset32R => jump!(reg[d] as u32 & reg[r] as u32 != 0, s),
            Op::Jne32R => jump!(reg[d] as u32 != reg[r] as u32, s),
            Op::Jsgt32R => jump!((reg[d] as i32) > reg[r] as i32, s),
            Op::Jsge32R => jump!((reg[d] as i32) >= reg[r] as i32, s),
            Op::Jlt32R => jump!((reg[d] as u32) < reg[r] as u32, s),
            Op::Jle32R => jump!(reg[d] as u32 <= reg[r] as u32, s),
            Op::Jslt32R => jump!((reg[d] as i32) < reg[r] as i32, s),
            Op::Jsle32R => jump!((reg[d] as i32) <= reg[r] as i32, s),

            Op::Call => {
                let (id, f) = prog.helpers[imm as usize];
                let args = [reg[1], reg[2], reg[3], reg[4], reg[5]];
                reg[0] = regions
                    .call(state, &prog.maps, |cx| f(cx, args))
                    .map_err(|e| helper_fault(pc, id, e))?;
            }
            Op::TailCall => {
                // bpf_tail_call(ctx, prog_array, index): on success the run
                // continues in the target program and never comes back; on
                // failure execution goes on after the call, r0 untouched.
                if depth == 0 && state.tail_calls < MAX_TAIL_CALLS {
                    let next = regions.call(state, &prog.maps, |cx| {
                        cx.map(2, reg[2])
                            .ok()
                            .and_then(|m| m.downcast::<ProgArray>())
                            .and_then(|a| u32::try_from(reg[3]).ok().and_then(|i| a.load(i)))
                    });
                    if let Some(next) = next {
                        used += (pc - seg + 1) as u64;
                        if used > limit {
                            return Err(Fault::Budget { pc, limit });
                        }
                        state.used = used;
                        state.tail_calls += 1;
                        return run(&next, regions.retarget(&next), state, reg, frames);
                    }
                }
            }
            Op::Callx => {
                let target = reg[d];
                let f = prog
                    .callx
                    .as_deref()
                    .and_then(|t| t.get(usize::try_from(target).ok()?).copied().flatten())
                    .ok_or(Fault::BadCallx { pc, target })?;
                let args = [reg[1], reg[2], reg[3], reg[4], reg[5]];
                reg[0] = regions
                    .call(state, &prog.maps, |cx| f(cx, args))
                    .map_err(|e| helper_fault(pc, target as u32, e))?;
            }
            Op::CallLocal => {
                if depth + 1 >= MAX_FRAMES {
                    return Err(Fault::CallDepth { pc });
                }
                let t = s.off as usize;
                charge!(t);
                frames[depth] = Frame {
                    ret: pc + 1,
                    saved: [reg[6], reg[7], reg[8], reg[9], reg[10]],
                };
                depth += 1;
                reg[10] -= FRAME_SIZE as u64;
                pc = t;
                continue;
            }
            Op::Exit => {
                if depth == 0 {
                    return Ok(reg[0]);
                }
                depth -= 1;
                let f = &frames[depth];
                charge!(f.ret);
                [reg[6], reg[7], reg[8], reg[9], reg[10]] = f.saved;
                pc = f.ret;
                continue;
            }
            Op::Filler => unreachable!("the second slot of ld_imm64 is never a jump target"),
            Op::MovAddJcc => {
                reg[d] = reg[r].wrapping_add(imm);
                // SAFETY: `fuse` only fuses when slot pc+2 exists.
                #[allow(unsafe_code)]
                let j = unsafe { *slots.get_unchecked(pc + 2) };
                let (a, b) = (reg[d], reg[(j.src & 15) as usize]);
                let taken = match j.op {
                    Op::Jgt64R => a > b,
                    Op::Jge64R => a >= b,
                    Op::Jlt64R => a < b,
                    _ => a <= b,
                };
                if taken {
                    let t = j.off as usize;
                    pc += 2;
                    if t <= pc {
                        charge!(t);
                    }
                    pc = t;
                } else {
                    pc += 3;
                }
                continue;
            }
            Op::LdxStx => {
                // SAFETY: `fuse` only fuses when slot pc+1 exists.
                #[allow(unsafe_code)]
                let st = unsafe { *slots.get_unchecked(pc + 1) };
                let v = match imm {
                    1 => load!(1, s),
                    2 => load!(2, s),
                    4 => load!(4, s),
                    _ => load!(8, s),
                };
                reg[d] = v;
                pc += 1;
                match imm {
                    1 => store!(1, st, v),
                    2 => store!(2, st, v),
                    4 => store!(4, st, v),
                    _ => store!(8, st, v),
                }
                pc += 1;
                continue;
            }
            Op::AddJccImm => {
                reg[d] = reg[d].wrapping_add(imm);
                // SAFETY: `fuse` only fuses when slot pc+1 exists.
                #[allow(unsafe_code)]
                let j = unsafe { *slots.get_unchecked(pc + 1) };
                let (a, b) = (reg[d], j.imm);
                let taken = match j.op {
                    Op::Jeq64I => a == b,
                    Op::Jne64I => a != b,
                    Op::Jgt64I => a > b,
                    Op::Jge64I => a >= b,
                    Op::Jlt64I => a < b,
                    Op::Jle64I => a <= b,
                    Op::Jsgt64I => (a as i64) > b as i64,
                    Op::Jsge64I => (a as i64) >= b as i64,
                    Op::Jslt64I => (a as i64) < b as i64,
                    _ => (a as i64) <= b as i64,
                };
                if taken {
                    let t = j.off as usize;
                    pc += 1;
                    if t <= pc {
                        charge!(t);
                    }
                    pc = t;
                } else {
                    pc += 2;
                }
                continue;
            }
        }
        pc += 1;
    }
}

#[inline(always)]
fn sdiv64(a: u64, b: u64) -> u64 {
    if b == 0 {
        0
    } else {
        (a as i64).wrapping_div(b as i64) as u64
    }
}

#[inline(always)]
fn smod64(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        (a as i64).wrapping_rem(b as i64) as u64
    }
}

#[inline(always)]
fn sdiv32(a: u64, b: u64) -> u64 {
    let (a, b) = (a as i32, b as i32);
    if b == 0 {
        0
    } else {
        u64::from(a.wrapping_div(b) as u32)
    }
}

#[inline(always)]
fn mod32(a: u64, b: u64) -> u64 {
    let (a, b) = (a as u32, b as u32);
    u64::from(a.checked_rem(b).unwrap_or(a))
}

#[inline(always)]
fn smod32(a: u64, b: u64) -> u64 {
    let (a, b) = (a as i32, b as i32);
    if b == 0 {
        u64::from(a as u32)
    } else {
        u64::from(a.wrapping_rem(b) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::assemble;
    use crate::helpers::Registry;

    fn prog(src: &str) -> Program {
        Program::load(assemble(src).expect("assembles"), &Registry::conformance()).expect("loads")
    }

    fn run(src: &str, mem: &mut [u8]) -> Result<u64, Fault> {
        Vm::new().run_mem(&prog(src), mem)
    }

    #[test]
    fn both_ends_of_every_access_are_checked() {
        let mut mem = [1u8, 2, 3, 4, 5, 6, 7, 8];
        // Last byte in bounds.
        assert_eq!(run("ldxb %r0, [%r1+7]\nexit", &mut mem), Ok(8));
        // Starts inside, ends one byte past the end.
        let e = run("ldxw %r0, [%r1+5]\nexit", &mut mem).unwrap_err();
        assert_eq!(
            e,
            Fault::MemoryAccess {
                pc: 0,
                addr: PACKET_VBASE + 5,
                size: 4,
                write: false
            }
        );
        // One byte before the start.
        let e = run("stb [%r1-1], 0\nexit", &mut mem).unwrap_err();
        assert!(matches!(e, Fault::MemoryAccess { write: true, .. }), "{e}");
        // Far away, huge offsets and wrapping addresses.
        for src in [
            "lddw %r1, 0xffffffffffffffff\nldxdw %r0, [%r1]\nexit",
            "lddw %r1, 0x7ffffffffffffff8\nldxdw %r0, [%r1]\nexit",
            "mov %r1, 0\nldxb %r0, [%r1]\nexit",
            "ldxdw %r0, [%r10]\nexit",
            "ldxdw %r0, [%r10-4100]\nexit",
        ] {
            assert!(
                matches!(run(src, &mut mem), Err(Fault::MemoryAccess { .. })),
                "{src}"
            );
        }
        // The whole stack of every frame is usable.
        assert_eq!(
            run("stdw [%r10-4096], 9\nldxdw %r0, [%r10-4096]\nexit", &mut []),
            Ok(9)
        );
    }

    #[test]
    fn budget_ends_loops_exactly() {
        let mut vm = Vm::new();
        vm.set_budget(1000);
        let looping = prog("mov %r0, 0\nloop:\nadd %r0, 1\nja loop");
        let e = vm.run_mem(&looping, &mut []).unwrap_err();
        assert!(matches!(e, Fault::Budget { limit: 1000, .. }), "{e}");
        // A bounded loop runs 1 + 2*300 + 1 instructions; the charge at the
        // last taken branch is 1 + 2*299.
        let bounded = prog("mov %r0, 0\nl:\nadd %r0, 1\njlt %r0, 300, l\nexit");
        assert_eq!(vm.run_mem(&bounded, &mut []), Ok(300));
        vm.set_budget(1 + 2 * 299);
        assert_eq!(vm.run_mem(&bounded, &mut []), Ok(300));
        vm.set_budget(2 * 299);
        assert!(matches!(
            vm.run_mem(&bounded, &mut []),
            Err(Fault::Budget { .. })
        ));
    }

    #[test]
    fn local_calls_nest_eight_frames_and_no_more() {
        // Each function calls the next: main + 7 callees = 8 frames.
        let mut src = String::from("call local f1\nexit\n");
        for i in 1..=7 {
            src += &format!("f{i}:\nstdw [%r10-8], {i}\n");
            if i < 7 {
                src += &format!("call local f{}\n", i + 1);
            } else {
                src += "mov %r0, 0\n";
            }
            src += "ldxdw %r1, [%r10-8]\nadd %r0, %r1\nexit\n";
        }
        assert_eq!(run(&src, &mut []), Ok(28));
        let deep = src.replace("mov %r0, 0\n", "call local f1\n");
        assert!(matches!(run(&deep, &mut []), Err(Fault::CallDepth { .. })));
    }

    #[test]
    fn xdp_context_carries_usable_32_bit_pointers_and_is_read_only() {
        // Return data_end - data, after reading the last packet byte.
        let p = prog(
            "ldxw %r2, [%r1+0]\nldxw %r3, [%r1+4]\nmov %r0, %r3\nsub %r0, %r2\n\
             ldxb %r4, [%r3-1]\nadd %r0, %r4\nexit",
        );
        let mut buf = vec![0u8; 256 + 64];
        buf[256 + 63] = 100;
        let mut frame = XdpFrame {
            buf: &mut buf,
            meta: 256,
            data: 256,
            end: 256 + 64,
            ingress_ifindex: 3,
            rx_queue_index: 1,
            egress_ifindex: 0,
            redirect: None,
        };
        assert_eq!(Vm::new().run_xdp(&p, &mut frame), Ok(164));
        // Headroom before data is not visible.
        let p = prog("ldxw %r2, [%r1+0]\nldxb %r0, [%r2-1]\nexit");
        assert!(matches!(
            Vm::new().run_xdp(&p, &mut frame),
            Err(Fault::MemoryAccess { .. })
        ));
        // The context cannot be written.
        let p = prog("stw [%r1+12], 7\nmov %r0, 0\nexit");
        assert!(matches!(
            Vm::new().run_xdp(&p, &mut frame),
            Err(Fault::MemoryAccess { write: true, .. })
        ));
        // ingress_ifindex and rx_queue_index.
        let p = prog("ldxw %r0, [%r1+12]\nldxw %r2, [%r1+16]\nlsh %r0, 8\nor %r0, %r2\nexit");
        assert_eq!(Vm::new().run_xdp(&p, &mut frame), Ok(0x301));
    }

    #[test]
    fn fused_sequences_match_their_parts_and_can_be_entered_midway() {
        // mov/add/jgt: the bounds-check shape, taken and not taken, and
        // entered at the add and at the jump.
        let check = |r1: u64, r3: u64, entry: &str| {
            let src = format!(
                "mov %r3, {r3}\nmov %r1, {r1}\nmov %r0, 0\n{entry}\n\
                 top:\nmov %r2, %r1\nmid:\nadd %r2, 14\njump:\njgt %r2, %r3, out\n\
                 mov %r0, 1\nexit\nout:\nmov %r0, 2\nexit"
            );
            run(&src, &mut []).unwrap()
        };
        assert_eq!(check(100, 114, "ja top"), 1);
        assert_eq!(check(100, 113, "ja top"), 2);
        assert_eq!(check(100, 113, "mov %r2, 0\nja mid"), 1); // r2 = 14 <= 113
        assert_eq!(check(100, 113, "mov %r2, 500\nja jump"), 2);
        // add/jcc loop tail, with a signed comparison and a backward jump.
        let src = "mov %r0, 0\nmov %r4, 5\nl:\nadd %r0, 3\nadd %r4, -1\njsgt %r4, 0, l\nexit";
        assert_eq!(run(src, &mut []), Ok(15));
        let src = "mov %r0, 0\nmov %r4, -3\nl:\nadd %r0, 1\nadd %r4, 1\njne %r4, 0, l\nexit";
        assert_eq!(run(src, &mut []), Ok(3));
        // ldx/stx pairs of each size, and a store that faults names its own
        // instruction.
        let mut mem = [1u8, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0];
        let src = "ldxb %r2, [%r1+0]\nstxb [%r1+8], %r2\nldxh %r2, [%r1+1]\nstxh [%r1+9], %r2\n\
                   ldxw %r2, [%r1+2]\nstxw [%r1+11], %r2\nldxdw %r0, [%r1+8]\nexit";
        assert_eq!(
            run(src, &mut mem),
            Ok(u64::from_le_bytes([1, 2, 3, 3, 4, 5, 6, 0]))
        );
        let e = run("ldxw %r2, [%r1+0]\nstxw [%r1+14], %r2\nexit", &mut mem).unwrap_err();
        assert!(
            matches!(
                e,
                Fault::MemoryAccess {
                    pc: 1,
                    write: true,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn atomics_need_alignment() {
        let mut mem = [0u8; 16];
        assert!(matches!(
            run(
                "mov %r2, 1\nlock add32 [%r10-4], %r2\nmov %r0, 0\nexit",
                &mut mem
            ),
            Ok(0)
        ));
        assert!(matches!(
            run(
                "mov %r2, 1\nlock add [%r10-12], %r2\nmov %r0, 0\nexit",
                &mut mem
            ),
            Err(Fault::Misaligned { .. })
        ));
    }

    #[test]
    fn helper_faults_and_callx_to_nowhere() {
        assert_eq!(run("mov %r1, 42\ncall 5\nexit", &mut []), Ok(42));
        assert!(matches!(
            run("mov %r2, 6\ncall %r2\nexit", &mut []),
            Err(Fault::BadCallx { target: 6, .. })
        ));
        let e = Program::load(assemble("call 6\nexit").unwrap(), &Registry::conformance());
        assert_eq!(
            e.unwrap_err(),
            crate::LoadError::UnknownHelper { pc: 0, id: 6 }
        );
    }
}
