//! Running compiled code: the entry call, the environment compiled code
//! finds at r12, and the tail-call shim. With the code memory module, the
//! only place of the JIT that needs `unsafe`.
#![allow(unsafe_code)]

use std::mem::offset_of;
use std::sync::Arc;

use super::{JitProgram, TailCallFn};
use crate::helpers::HelperError;
use crate::interp::ctx::{RunState, NO_REDIRECT};
use crate::interp::{Fault, DEFAULT_BUDGET, STACK_SIZE};
use crate::maps::prog_array::MAX_TAIL_CALLS;
use crate::maps::Map;
use crate::native::{self, NativeEnv, NativeXdpMd};

/// The per-run words native code keeps next to the [`NativeEnv`] (at
/// negative offsets from r12).
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
struct JitScratch {
    /// rsp of the main body (the fault exit and the depth check use it).
    rsp_main: u64,
    /// Fault detail: the `callx` target.
    value: u64,
    /// Fault kind (0: none).
    kind: u32,
    /// Fault instruction.
    pc: u32,
    /// Fault detail: the helper number.
    aux: u32,
    /// Worker index, for per-CPU array lookups.
    cpu: u32,
    /// Tail calls taken in this run.
    tail_calls: u32,
    _pad: u32,
}

/// The environment of native runs: the runtime's [`NativeEnv`] plus the
/// JIT's own per-run words, which compiled code finds at fixed offsets from
/// the `NativeEnv` it is given. One per worker; reused by every run.
#[repr(C)]
pub struct JitEnv {
    scratch: JitScratch,
    /// What helpers see.
    pub env: NativeEnv,
    tail_call: Option<TailCallFn>,
    /// Tail-call targets entered in this run (kept alive until it ends).
    held: Vec<Arc<JitProgram>>,
}

/// Offsets and codes shared by the code generator and the runtime.
pub(super) mod layout {
    use super::{native, offset_of, JitEnv, JitScratch, RunState};

    /// Offset of `JitEnv::env`: r12 = the `JitEnv` pointer + this.
    pub(in crate::jit) const ENV_IN_JITENV: i32 = offset_of!(JitEnv, env) as i32;
    const SCRATCH: i32 = offset_of!(JitEnv, scratch) as i32 - ENV_IN_JITENV;
    pub(in crate::jit) const RSP_MAIN: i32 = SCRATCH + offset_of!(JitScratch, rsp_main) as i32;
    pub(in crate::jit) const FAULT_VALUE: i32 = SCRATCH + offset_of!(JitScratch, value) as i32;
    pub(in crate::jit) const FAULT_KIND: i32 = SCRATCH + offset_of!(JitScratch, kind) as i32;
    pub(in crate::jit) const FAULT_PC: i32 = SCRATCH + offset_of!(JitScratch, pc) as i32;
    pub(in crate::jit) const FAULT_AUX: i32 = SCRATCH + offset_of!(JitScratch, aux) as i32;
    pub(in crate::jit) const CPU: i32 = SCRATCH + offset_of!(JitScratch, cpu) as i32;
    /// `NativeEnv::helper` (a function pointer).
    pub(in crate::jit) const ENV_HELPER: i32 = native::ENV_HELPER;
    /// `NativeEnv::fault` (a `u64`, non-zero after a helper failed).
    pub(in crate::jit) const ENV_FAULT: i32 = native::ENV_FAULT;
    /// `NativeEnv::state` (a `*mut RunState`).
    pub(in crate::jit) const ENV_STATE: i32 = offset_of!(native::NativeEnv, state) as i32;
    /// `RunState::redirect` (a `u64`: the zero-extended port, or
    /// `NO_REDIRECT`), which the inlined `bpf_redirect` stores.
    pub(in crate::jit) const STATE_REDIRECT: i32 = offset_of!(RunState, redirect) as i32;

    // Compiled code reads these fields with these widths: a change of
    // their types in `native.rs` must fail to compile here.
    const _HELPER_IS_A_FN_POINTER: fn(&native::NativeEnv) -> Option<crate::helpers::HelperFn> =
        |e| e.helper;
    const _FAULT_IS_A_U64: fn(&native::NativeEnv) -> u64 = |e| e.fault;
    const _STATE_IS_A_POINTER: fn(&native::NativeEnv) -> *mut RunState = |e| e.state;
    const _REDIRECT_IS_A_U64: fn(&RunState) -> u64 = |s| s.redirect;

    pub(in crate::jit) const KIND_HELPER: u32 = 1;
    pub(in crate::jit) const KIND_HELPER_DYN: u32 = 2;
    pub(in crate::jit) const KIND_DEPTH: u32 = 3;
    pub(in crate::jit) const KIND_CALLX: u32 = 4;
}

/// The tail-call shim compiled code calls (see "Calling convention").
///
/// # Safety
/// `env` is the running program's environment; called only from compiled
/// code, between instructions of a run.
pub(super) unsafe extern "C" fn jit_tail_call(env: *mut JitEnv, map: u64, index: u64) -> u64 {
    // SAFETY: compiled code passes the `JitEnv` the entry was given, which
    // `JitVm::run_raw` keeps exclusively for the run; nothing else uses it
    // while the shim runs.
    let je = unsafe { &mut *env };
    if je.scratch.tail_calls >= MAX_TAIL_CALLS {
        return 0;
    }
    let (Some(f), Ok(i)) = (je.tail_call, u32::try_from(index)) else {
        return 0;
    };
    let Some(p) = f(&mut je.env, map, i) else {
        return 0;
    };
    je.scratch.tail_calls += 1;
    // Helpers of the target see the target's maps.
    je.env.maps = p.maps() as *const [Arc<Map>];
    let body = p.body_addr();
    // Capacity for every allowed tail call was reserved: no allocation.
    je.held.push(p);
    body
}

/// The eBPF stack of native runs.
#[repr(C, align(64))]
struct Stack([u8; STACK_SIZE]);

/// Runs compiled programs: one per worker, reused by every run, allocating
/// nothing per run. The native counterpart of [`crate::Vm`].
pub struct JitVm {
    stack: Box<Stack>,
    state: Box<RunState>,
    env: Box<JitEnv>,
}

// SAFETY: the raw pointers a `JitVm` holds (in its `NativeEnv`) point to
// its own boxed `RunState`, which moves with it, or are set at the start of
// each run (`maps`, `ctx`) and dereferenced only during that run, which
// borrows the VM mutably on one thread. Nothing is shared with other VMs.
unsafe impl Send for JitVm {}

impl Default for JitVm {
    fn default() -> Self {
        JitVm::new()
    }
}

impl std::fmt::Debug for JitVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitVm")
            .field("cpu", &self.state.cpu)
            .finish()
    }
}

impl JitVm {
    /// A context for worker 0.
    pub fn new() -> JitVm {
        JitVm::for_cpu(0)
    }

    /// A context for worker `cpu` (per-CPU maps use its copy).
    pub fn for_cpu(cpu: u32) -> JitVm {
        let rng = 0x9e37_79b9_7f4a_7c15 ^ (u64::from(cpu) + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let mut state = Box::new(RunState::new(cpu, rng, None, DEFAULT_BUDGET));
        let sp: *mut RunState = &mut *state;
        let no_maps: &[Arc<Map>] = &[];
        // SAFETY: the state is boxed and lives as long as the environment
        // (both belong to the VM); `run_raw` points `maps` and `ctx` at the
        // running program's before any code runs with it.
        let env = unsafe { NativeEnv::new(sp, no_maps, std::ptr::null_mut()) };
        JitVm {
            stack: Box::new(Stack([0; STACK_SIZE])),
            state,
            env: Box::new(JitEnv {
                scratch: JitScratch {
                    cpu,
                    ..JitScratch::default()
                },
                env,
                tail_call: None,
                held: Vec::with_capacity(MAX_TAIL_CALLS as usize),
            }),
        }
    }

    /// Sets how tail calls find their targets (`None`: they fall through).
    pub fn set_tail_call(&mut self, f: Option<TailCallFn>) {
        self.env.tail_call = f;
    }

    /// Seeds the generator behind `bpf_get_prandom_u32`.
    pub fn seed_random(&mut self, seed: u64) {
        self.state.rng = seed | 1;
    }

    /// The FIB `bpf_fib_lookup` consults (see [`crate::Vm::set_fib`]).
    pub fn set_fib(&mut self, fib: Option<Arc<crate::fib::Fib>>) {
        self.state.fib = fib;
    }

    /// Runs a verified program's machine code on an XDP frame, like
    /// [`crate::Vm::run_xdp`]: the frame's offsets and `redirect` reflect
    /// what the program did (including `bpf_xdp_adjust_*`).
    ///
    /// Inlined into [`crate::Vm::run_xdp`] and its caller, so that the
    /// frame's fields go straight from the caller's registers into the
    /// native context and back (an out-of-line copy of two adjacent `u32`s
    /// the caller has just stored is one 8-byte load, which the CPU cannot
    /// forward from two 4-byte stores: a stall on every packet).
    ///
    /// # Errors
    /// The [`Fault`] that ended the run.
    #[inline]
    pub(crate) fn run_frame(
        &mut self,
        prog: &JitProgram,
        frame: &mut crate::interp::XdpFrame<'_>,
    ) -> Result<u64, Fault> {
        let buf_len = frame.buf.len();
        let base = frame.buf.as_mut_ptr() as u64;
        let mut ctx = NativeXdpMd {
            data: base + frame.data as u64,
            data_end: base + frame.end as u64,
            data_meta: base + frame.meta as u64,
            ingress_ifindex: frame.ingress_ifindex,
            rx_queue_index: frame.rx_queue_index,
            egress_ifindex: frame.egress_ifindex,
            _pad: 0,
        };
        self.state.xdp = Some(crate::interp::ctx::XdpState {
            whole: crate::interp::mem::Region::new(crate::interp::PACKET_VBASE, frame.buf, true),
            buf_len,
            meta: frame.meta,
            data: frame.data,
            end: frame.end,
        });
        if self.env.tail_call.is_none() {
            self.env.tail_call = Some(crate::program::jit_tail_target);
        }
        // SAFETY: this crate calls `run_frame` only with the code
        // `Program::load_verified` compiled, i.e. for programs the verifier
        // accepted as XDP programs; `ctx` delimits this frame's buffer, which
        // the `&mut` borrow keeps valid and unaliased for the run.
        #[allow(unsafe_code)]
        let r = unsafe { self.run_xdp(prog, &mut ctx) };
        if let Some(x) = self.state.xdp.take() {
            (frame.meta, frame.data, frame.end) = (x.meta, x.data, x.end);
        }
        frame.redirect = self.state.redirect();
        r
    }

    /// Where the last run's `bpf_redirect*` sent the packet.
    pub fn redirect(&self) -> Option<crate::interp::Redirect> {
        self.state.redirect()
    }

    /// The end of a run that tail-called, held inner maps or faulted: kept
    /// out of line, so that the common path stays a few instructions.
    #[cold]
    #[inline(never)]
    fn finish_slow(&mut self, r0: u64) -> Result<u64, Fault> {
        if !self.env.held.is_empty() {
            // Only a tail call that was taken adds to `held` and the count.
            self.env.held.clear();
            self.env.scratch.tail_calls = 0;
        }
        if self.state.inner_used {
            self.state.release_inner();
        }
        if self.env.scratch.kind == 0 {
            Ok(r0)
        } else {
            Err(self.fault())
        }
    }

    /// The fault the last run recorded (and clears it).
    fn fault(&mut self) -> Fault {
        let s = self.env.scratch;
        self.env.scratch.kind = 0;
        let pc = s.pc as usize;
        match s.kind {
            layout::KIND_DEPTH => Fault::CallDepth { pc },
            layout::KIND_CALLX => Fault::BadCallx {
                pc,
                target: s.value,
            },
            kind => {
                let helper = if kind == layout::KIND_HELPER_DYN {
                    s.value as u32
                } else {
                    s.aux
                };
                let err = self.env.env.error.take().unwrap_or(HelperError::Unwind);
                self.env.env.fault = 0;
                Fault::Helper { pc, helper, err }
            }
        }
    }

    /// Runs a plain-memory program: r1 = `mem`'s address, r2 = its length.
    ///
    /// # Errors
    /// The [`Fault`] that ended the run.
    ///
    /// # Safety
    /// Native code does no bounds checks: the program must be one the
    /// verifier accepted for this program type (or otherwise be known to
    /// access only `mem`, its stack frames and its maps' values on this
    /// input, e.g. because the checked interpreter ran it on the same input
    /// without a fault).
    #[inline]
    pub unsafe fn run_mem(&mut self, prog: &JitProgram, mem: &mut [u8]) -> Result<u64, Fault> {
        let (p, len) = (mem.as_mut_ptr() as u64, mem.len() as u64);
        // SAFETY: the caller's guarantee, passed on.
        unsafe { self.run_raw(prog, p, len, std::ptr::null_mut()) }
    }

    /// Runs an XDP program on `ctx` (r1 = its address).
    ///
    /// # Errors
    /// The [`Fault`] that ended the run.
    ///
    /// # Safety
    /// As [`JitVm::run_mem`], and `ctx`'s pointers must delimit a packet
    /// buffer that stays valid and unaliased for the run.
    #[inline]
    pub unsafe fn run_xdp(
        &mut self,
        prog: &JitProgram,
        ctx: &mut NativeXdpMd,
    ) -> Result<u64, Fault> {
        let p: *mut NativeXdpMd = ctx;
        // SAFETY: the caller's guarantee, passed on.
        unsafe { self.run_raw(prog, p as u64, 0, p) }
    }

    /// Runs `prog` with r1 and r2 as given; `ctx` is the native XDP context
    /// helpers see (null for other program types).
    ///
    /// # Errors
    /// The [`Fault`] that ended the run.
    ///
    /// # Safety
    /// As [`JitVm::run_mem`]: every address the program uses must be valid
    /// for the accesses it makes.
    #[inline]
    pub unsafe fn run_raw(
        &mut self,
        prog: &JitProgram,
        r1: u64,
        r2: u64,
        ctx: *mut NativeXdpMd,
    ) -> Result<u64, Fault> {
        self.state.redirect = NO_REDIRECT;
        // Only what changes between runs is written: the state pointer was
        // set when the VM was made (the state is boxed, it never moves), the
        // fault flag is cleared when a fault is reported.
        self.env.env.maps = prog.maps();
        self.env.env.ctx = ctx;
        let top = self.stack.0.as_mut_ptr_range().end;
        let env: *mut JitEnv = &mut *self.env;
        let entry = prog.entry();
        // SAFETY: the entry call. `entry` is the program's code, alive for
        // the borrow of `prog`; the stack is `STACK_SIZE` bytes below `top`,
        // 64-byte aligned; `env` points to this VM's environment, whose
        // state and maps pointers are valid for the run (`self` and `prog`
        // are borrowed for all of it) and which nothing else uses during
        // the call; the eBPF program's memory accesses are valid by the
        // caller's guarantee.
        let r0 = unsafe { entry(r1, r2, top, env) };
        if self.env.scratch.kind != 0 || !self.env.held.is_empty() || self.state.inner_used {
            return self.finish_slow(r0);
        }
        Ok(r0)
    }
}
