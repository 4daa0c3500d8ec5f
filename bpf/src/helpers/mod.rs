//! The helper registry.
//!
//! Programs call helpers by Linux's helper numbers (`call 1` is
//! `bpf_map_lookup_elem` everywhere). A [`Registry`] maps numbers to
//! [`Helper`] entries, and every entry declares the type of each argument and
//! of its return value in the vocabulary of Linux's verifier
//! (`ARG_PTR_TO_MAP_KEY`, `RET_PTR_TO_MAP_VALUE_OR_NULL`, ...), so the verifier
//! can check a call without knowing the helper's code.
//!
//! Registries are per program type: an XDP program sees the XDP set, while
//! the conformance plugin's plain-memory programs see uBPF's test helper at
//! number 5 instead of `bpf_ktime_get_ns`.
//!
//! A helper is a plain function pointer. It receives the five argument
//! registers and a [`CallCtx`] through which it reaches memory the program
//! pointed at: in checked mode every pointer argument is translated and
//! bounds-checked like any load or store.

pub use crate::interp::ctx::{CallCtx, TraceSink};
use crate::interp::Fault;

mod xdp;

/// XDP verdicts (`enum xdp_action`).
pub mod action {
    /// Error: drop and count.
    pub const XDP_ABORTED: u64 = 0;
    /// Drop.
    pub const XDP_DROP: u64 = 1;
    /// Pass to the host stack.
    pub const XDP_PASS: u64 = 2;
    /// Send back out of the same port.
    pub const XDP_TX: u64 = 3;
    /// Send out of the port chosen by `bpf_redirect*`.
    pub const XDP_REDIRECT: u64 = 4;
}

/// Linux helper numbers used by Sluice (`enum bpf_func_id`).
pub mod id {
    /// `void *bpf_map_lookup_elem(map, key)`
    pub const MAP_LOOKUP_ELEM: u32 = 1;
    /// `long bpf_map_update_elem(map, key, value, flags)`
    pub const MAP_UPDATE_ELEM: u32 = 2;
    /// `long bpf_map_delete_elem(map, key)`
    pub const MAP_DELETE_ELEM: u32 = 3;
    /// `u64 bpf_ktime_get_ns(void)`
    pub const KTIME_GET_NS: u32 = 5;
    /// `long bpf_trace_printk(fmt, fmt_size, ...)`
    pub const TRACE_PRINTK: u32 = 6;
    /// `u32 bpf_get_prandom_u32(void)`
    pub const GET_PRANDOM_U32: u32 = 7;
    /// `u32 bpf_get_smp_processor_id(void)`
    pub const GET_SMP_PROCESSOR_ID: u32 = 8;
    /// `long bpf_tail_call(ctx, prog_array, index)`
    pub const TAIL_CALL: u32 = 12;
    /// `long bpf_redirect(ifindex, flags)`
    pub const REDIRECT: u32 = 23;
    /// `long bpf_perf_event_output(ctx, map, flags, data, size)`
    pub const PERF_EVENT_OUTPUT: u32 = 25;
    /// `s64 bpf_csum_diff(from, from_size, to, to_size, seed)`
    pub const CSUM_DIFF: u32 = 28;
    /// `long bpf_xdp_adjust_head(ctx, delta)`
    pub const XDP_ADJUST_HEAD: u32 = 44;
    /// `long bpf_redirect_map(map, key, flags)`
    pub const REDIRECT_MAP: u32 = 51;
    /// `long bpf_xdp_adjust_meta(ctx, delta)`
    pub const XDP_ADJUST_META: u32 = 54;
    /// `long bpf_xdp_adjust_tail(ctx, delta)`
    pub const XDP_ADJUST_TAIL: u32 = 65;
    /// `long bpf_fib_lookup(ctx, params, plen, flags)`
    pub const FIB_LOOKUP: u32 = 69;
    /// `long bpf_map_push_elem(map, value, flags)`
    pub const MAP_PUSH_ELEM: u32 = 87;
    /// `long bpf_map_pop_elem(map, value)`
    pub const MAP_POP_ELEM: u32 = 88;
    /// `long bpf_map_peek_elem(map, value)`
    pub const MAP_PEEK_ELEM: u32 = 89;
    /// `u64 bpf_ktime_get_boot_ns(void)`
    pub const KTIME_GET_BOOT_NS: u32 = 125;
    /// `long bpf_ringbuf_output(ringbuf, data, size, flags)`
    pub const RINGBUF_OUTPUT: u32 = 130;
    /// `void *bpf_ringbuf_reserve(ringbuf, size, flags)`
    pub const RINGBUF_RESERVE: u32 = 131;
    /// `void bpf_ringbuf_submit(data, flags)`
    pub const RINGBUF_SUBMIT: u32 = 132;
    /// `void bpf_ringbuf_discard(data, flags)`
    pub const RINGBUF_DISCARD: u32 = 133;
}

/// Type of one helper argument, as Linux's verifier knows it
/// (`enum bpf_arg_type`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ArgType {
    /// The argument is not used; the register may hold anything.
    Unused,
    /// Any initialised scalar (`ARG_ANYTHING`).
    Anything,
    /// A map pointer from `LD_IMM64` (`ARG_CONST_MAP_PTR`).
    ConstMapPtr,
    /// Pointer to `key_size` readable bytes (`ARG_PTR_TO_MAP_KEY`).
    PtrToMapKey,
    /// Pointer to `value_size` readable bytes (`ARG_PTR_TO_MAP_VALUE`).
    PtrToMapValue,
    /// Pointer to `value_size` writable bytes (`ARG_PTR_TO_UNINIT_MAP_VALUE`).
    PtrToUninitMapValue,
    /// Pointer to readable memory whose size is the next argument
    /// (`ARG_PTR_TO_MEM | MEM_RDONLY`).
    PtrToMem,
    /// Pointer to readable memory or NULL, size in the next argument.
    PtrToMemOrNull,
    /// Pointer to writable, possibly uninitialised memory, size in the next
    /// argument (`ARG_PTR_TO_UNINIT_MEM`).
    PtrToUninitMem,
    /// Pointer to initialised memory the helper reads and writes, size in
    /// the next argument (`ARG_PTR_TO_MEM` without `MEM_RDONLY`).
    PtrToRwMem,
    /// A known constant size for the previous pointer, > 0
    /// (`ARG_CONST_SIZE`).
    ConstSize,
    /// A known constant size for the previous pointer, may be 0
    /// (`ARG_CONST_SIZE_OR_ZERO`).
    ConstSizeOrZero,
    /// A constant allocation size (`ARG_CONST_ALLOC_SIZE_OR_ZERO`).
    ConstAllocSizeOrZero,
    /// The program's context (`ARG_PTR_TO_CTX`).
    PtrToCtx,
    /// Memory returned by `bpf_ringbuf_reserve` (`ARG_PTR_TO_ALLOC_MEM`,
    /// `OBJ_RELEASE`: the reference is released by the call).
    PtrToAllocMem,
    /// A NUL-terminated constant string in a read-only map
    /// (`ARG_PTR_TO_CONST_STR`).
    PtrToConstStr,
}

/// Type of a helper's return value (`enum bpf_return_type`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RetType {
    /// A scalar (`RET_INTEGER`).
    Integer,
    /// Nothing; r0 is left unreadable (`RET_VOID`).
    Void,
    /// A pointer into a map value, or NULL (`RET_PTR_TO_MAP_VALUE_OR_NULL`).
    PtrToMapValueOrNull,
    /// Memory of the size in the first constant argument, or NULL, carrying
    /// a reference that must be released (`RET_PTR_TO_ALLOC_MEM_OR_NULL`).
    PtrToAllocMemOrNull,
}

/// Why a helper ended the run.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum HelperError {
    /// A pointer argument does not point into memory the program may use.
    #[error("argument {arg} ({addr:#x}, {len} bytes) is outside the program's memory")]
    BadPointer {
        /// Argument number, 1-5.
        arg: u8,
        /// The pointer.
        addr: u64,
        /// Bytes the helper needed.
        len: u64,
    },
    /// A map argument is not a map of the program.
    #[error("argument {arg} ({value:#x}) is not a map pointer")]
    BadMap {
        /// Argument number, 1-5.
        arg: u8,
        /// The register's value.
        value: u64,
    },
    /// The helper asked the run to stop (uBPF's "unwind" test helper).
    #[error("helper requested the program to stop")]
    Unwind,
}

/// A helper's code.
pub type HelperFn = fn(&mut CallCtx<'_, '_>, [u64; 5]) -> Result<u64, HelperError>;

/// One registered helper.
#[derive(Clone, Copy, Debug)]
pub struct Helper {
    /// Linux helper number.
    pub id: u32,
    /// Name as in Linux (`bpf_map_lookup_elem`).
    pub name: &'static str,
    /// Types of r1-r5.
    pub args: [ArgType; 5],
    /// Type of r0 after the call.
    pub ret: RetType,
    /// The code.
    pub func: HelperFn,
}

impl Helper {
    /// Number of arguments the helper uses.
    pub fn arity(&self) -> usize {
        self.args
            .iter()
            .take_while(|a| **a != ArgType::Unused)
            .count()
    }
}

/// Helpers by number, for one program type.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    by_id: Vec<Option<Helper>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds or replaces a helper.
    pub fn register(&mut self, helper: Helper) -> &mut Registry {
        let i = helper.id as usize;
        if self.by_id.len() <= i {
            self.by_id.resize(i + 1, None);
        }
        self.by_id[i] = Some(helper);
        self
    }

    /// The helper with Linux number `id`.
    pub fn get(&self, id: u32) -> Option<&Helper> {
        self.by_id.get(id as usize).and_then(Option::as_ref)
    }

    /// Every registered helper, by number.
    pub fn iter(&self) -> impl Iterator<Item = &Helper> {
        self.by_id.iter().flatten()
    }

    /// The registry of the bpf_conformance suite's plain-memory programs:
    /// helper 5 returns its first argument (uBPF's `unwind` test helper and
    /// rbpf's `_unwind`; both the runner's `call_unwind_fail` and `callx`
    /// tests rely on it).
    pub fn conformance() -> Registry {
        let mut r = Registry::new();
        r.register(Helper {
            id: 5,
            name: "unwind",
            args: [
                ArgType::Anything,
                ArgType::Unused,
                ArgType::Unused,
                ArgType::Unused,
                ArgType::Unused,
            ],
            ret: RetType::Integer,
            func: |_, a| Ok(a[0]),
        });
        r
    }
}

/// Whether `h` is Sluice's own `bpf_redirect` (`helpers/xdp.rs`), whose
/// semantics the JIT reproduces inline. A registry may put another function
/// at number 23; that one is called as usual.
#[cfg(all(feature = "jit", target_arch = "x86_64"))]
pub(crate) fn is_builtin_redirect(h: &Helper) -> bool {
    h.id == id::REDIRECT && std::ptr::fn_addr_eq(h.func, xdp::redirect as HelperFn)
}

/// Fault raised when a helper fails; kept here so the interpreter's fault
/// type stays the single place that names run-time errors.
pub(crate) fn helper_fault(pc: usize, helper: u32, err: HelperError) -> Fault {
    Fault::Helper { pc, helper, err }
}
