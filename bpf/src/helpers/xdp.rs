//! The helpers XDP programs call, with Linux's numbers, argument types and
//! semantics (net/core/filter.c, kernel/bpf/helpers.c, ringbuf.c).
//!
//! Each helper is a plain function over the five argument registers; memory
//! and maps are reached through [`CallCtx`], which translates and
//! bounds-checks every pointer. None of them allocates, locks (beyond the
//! short spinlocks some map writers take, as Linux's do) or makes a
//! syscall.

use std::sync::OnceLock;
use std::time::Instant;

use super::{action, id, ArgType, CallCtx, Helper, HelperError, Registry, RetType};
use crate::maps::cpumap::CpuMap;
use crate::maps::devmap::DevMap;
use crate::maps::map_in_map::MapOfMaps;
use crate::maps::perf_event_array::{
    OutputError, PerfEventArray, BPF_F_CTXLEN_MASK, BPF_F_CURRENT_CPU, BPF_F_INDEX_MASK,
};
use crate::maps::ringbuf::RingBuf;
use crate::maps::MapError;

use ArgType::{
    Anything as Any, ConstAllocSizeOrZero, ConstMapPtr, ConstSize, ConstSizeOrZero, PtrToAllocMem,
    PtrToCtx, PtrToMapKey, PtrToMapValue, PtrToMem, PtrToMemOrNull, PtrToRwMem,
    PtrToUninitMapValue, Unused as No,
};

const EINVAL: i64 = -22;
const EAGAIN: i64 = -11;
const ENOENT: i64 = -2;
/// `bpf_redirect_map` flag bits that select the fallback action.
const BPF_F_ACTION_MASK: u64 = 3;
/// The largest `csum_diff` input, as Linux's per-CPU scratch buffer.
const CSUM_DIFF_MAX: u64 = 512;

fn neg(e: i64) -> u64 {
    e as u64
}

fn err(e: &MapError) -> u64 {
    neg(e.errno())
}

fn key_size(cx: &CallCtx<'_, '_>, handle: u64) -> Result<u64, HelperError> {
    Ok(u64::from(cx.map(1, handle)?.def().key_size))
}

fn map_lookup_elem(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let map = cx.map(1, a[0])?;
    let key = cx.read(2, a[1], u64::from(map.def().key_size))?;
    if let Some(outer) = map.downcast::<MapOfMaps>() {
        return Ok(match outer.get(key) {
            Some(inner) => cx.inner_map_handle(inner),
            None => 0,
        });
    }
    Ok(match map.ops().prog_lookup(key, cx.cpu() as usize) {
        Some(p) => cx.map_value_addr(a[0], p),
        None => 0,
    })
}

fn map_update_elem(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let map = cx.map(1, a[0])?;
    let key = cx.read(2, a[1], u64::from(map.def().key_size))?;
    let value = cx.read(3, a[2], u64::from(map.def().value_size))?;
    Ok(
        match map.ops().prog_update(key, value, a[3], cx.cpu() as usize) {
            Ok(()) => 0,
            Err(e) => err(&e),
        },
    )
}

fn map_delete_elem(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let map = cx.map(1, a[0])?;
    let key = cx.read(2, a[1], key_size(cx, a[0])?)?;
    Ok(match map.ops().prog_delete(key) {
        Ok(()) => 0,
        Err(e) => err(&e),
    })
}

fn map_push_elem(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let map = cx.map(1, a[0])?;
    let value = cx.read(2, a[1], u64::from(map.def().value_size))?;
    Ok(match map.ops().push(value, a[2]) {
        Ok(()) => 0,
        Err(e) => err(&e),
    })
}

fn pop_or_peek(cx: &mut CallCtx<'_, '_>, a: [u64; 5], pop: bool) -> Result<u64, HelperError> {
    let map = cx.map(1, a[0])?.clone();
    let out = cx.write(2, a[1], u64::from(map.def().value_size))?;
    let r = if pop {
        map.ops().pop(out)
    } else {
        map.ops().peek(out)
    };
    Ok(match r {
        Ok(()) => 0,
        Err(e) => err(&e),
    })
}

fn map_pop_elem(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    pop_or_peek(cx, a, true)
}

fn map_peek_elem(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    pop_or_peek(cx, a, false)
}

fn monotonic_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    // An arbitrary epoch: programs only ever use differences.
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1_000_000_000
}

fn ktime_get_ns(_: &mut CallCtx<'_, '_>, _: [u64; 5]) -> Result<u64, HelperError> {
    Ok(monotonic_ns())
}

fn get_prandom_u32(cx: &mut CallCtx<'_, '_>, _: [u64; 5]) -> Result<u64, HelperError> {
    Ok(u64::from(cx.random_u32()))
}

fn get_smp_processor_id(cx: &mut CallCtx<'_, '_>, _: [u64; 5]) -> Result<u64, HelperError> {
    Ok(u64::from(cx.cpu()))
}

fn tail_call(_: &mut CallCtx<'_, '_>, _: [u64; 5]) -> Result<u64, HelperError> {
    // The interpreter performs tail calls itself (the call never returns on
    // success); reached only through `callx`, where it is a failed call.
    Ok(neg(ENOENT))
}

/// `bpf_redirect(ifindex, flags)`. The JIT inlines it (`inline_redirect` in
/// `jit/codegen.rs`): a change here must be made there too.
pub(super) fn redirect(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    if a[1] != 0 {
        return Ok(action::XDP_ABORTED);
    }
    cx.set_redirect(a[0] as u32);
    Ok(action::XDP_REDIRECT)
}

fn redirect_map(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let map = cx.map(1, a[0])?;
    if a[2] & !BPF_F_ACTION_MASK != 0 {
        // Broadcast and exclude-ingress are not supported.
        return Ok(action::XDP_ABORTED);
    }
    if let Some(cpus) = map.downcast::<CpuMap>() {
        return Ok(match cpus.target(a[1] as u32) {
            Some(cpu) => {
                cx.set_redirect_cpu(cpu);
                action::XDP_REDIRECT
            }
            None => a[2] & BPF_F_ACTION_MASK,
        });
    }
    let target = map.downcast::<DevMap>().and_then(|d| d.target(a[1] as u32));
    match target {
        Some(ifindex) => {
            cx.set_redirect(ifindex);
            Ok(action::XDP_REDIRECT)
        }
        None => Ok(a[2] & BPF_F_ACTION_MASK),
    }
}

/// x86-64 `csum_partial` of little-endian 32-bit words: the ones'-complement
/// sum with end-around carry, 0 only when every word and the seed are 0.
fn csum_partial(bytes: &[u8], seed: u32) -> u32 {
    let acc: u64 = u64::from(seed)
        + bytes
            .chunks_exact(4)
            .map(|w| u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
            .sum::<u64>();
    let fold = |v: u64| (v & 0xffff_ffff) + (v >> 32);
    fold(fold(acc)) as u32
}

fn csum_add(a: u32, b: u32) -> u32 {
    let s = a.wrapping_add(b);
    s.wrapping_add(u32::from(s < b))
}

/// `bpf_csum_diff`: the ones'-complement sum of `to` minus `from`, plus
/// `seed`, folded to 16 bits, as Linux computes it since 6.12 (earlier
/// kernels returned the unfolded 32-bit sum on x86).
fn csum_diff(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let (from_size, to_size) = (a[1], a[3]);
    if (from_size | to_size) & 3 != 0 || from_size + to_size > CSUM_DIFF_MAX {
        return Ok(neg(EINVAL));
    }
    let seed = a[4] as u32;
    let from = if from_size == 0 {
        &[][..]
    } else {
        cx.read(1, a[0], from_size)?
    };
    let to = if to_size == 0 {
        &[][..]
    } else {
        cx.read(3, a[2], to_size)?
    };
    let ret = match (from.is_empty(), to.is_empty()) {
        (false, false) => csum_add(csum_partial(to, seed), !csum_partial(from, 0)),
        (true, false) => csum_partial(to, seed),
        (false, true) => !csum_partial(from, !seed),
        (true, true) => seed,
    };
    let x = (ret & 0xffff) + (ret >> 16);
    Ok(u64::from((x & 0xffff) + (x >> 16)))
}

fn xdp_adjust_head(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    Ok(neg(cx.xdp_adjust_head(i64::from(a[1] as i32))))
}

fn xdp_adjust_tail(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    Ok(neg(cx.xdp_adjust_tail(i64::from(a[1] as i32))))
}

fn xdp_adjust_meta(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    Ok(neg(cx.xdp_adjust_meta(i64::from(a[1] as i32))))
}

/// `bpf_fib_lookup(ctx, params, plen, flags)`: a route and neighbour
/// lookup in the VM's FIB (`crate::fib`), with Linux's return codes; an
/// empty FIB when the VM has none.
fn fib_lookup(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    // `int plen` compared with a `size_t`, as in Linux.
    if (a[2] as i32 as u64) < crate::fib::PARAMS_SIZE as u64 {
        return Ok(neg(EINVAL));
    }
    let table = cx.fib().map(crate::fib::Fib::load);
    let params = cx.write(2, a[1], crate::fib::PARAMS_SIZE as u64)?;
    Ok(neg(match &table {
        Some(t) => t.lookup(params, a[3] & 0xffff_ffff),
        None => crate::fib::FibTable::empty_ref().lookup(params, a[3] & 0xffff_ffff),
    }))
}

fn ringbuf_of<'c>(
    cx: &'c CallCtx<'_, '_>,
    arg: u8,
    handle: u64,
) -> Result<&'c RingBuf, HelperError> {
    cx.map(arg, handle)?
        .downcast::<RingBuf>()
        .ok_or(HelperError::BadMap { arg, value: handle })
}

fn ringbuf_output(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let data = cx.read(2, a[1], a[2])?;
    let rb = ringbuf_of(cx, 1, a[0])?;
    Ok(match rb.output(data) {
        Ok(()) => 0,
        Err(MapError::Full) => neg(EAGAIN),
        Err(e) => err(&e),
    })
}

fn ringbuf_reserve(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    if a[2] != 0 {
        return Ok(0);
    }
    let rb = ringbuf_of(cx, 1, a[0])?;
    Ok(match rb.reserve(a[1]) {
        Some(p) => cx.map_value_addr(a[0], p),
        None => 0,
    })
}

/// `bpf_perf_event_output(ctx, map, flags, data, size)`, XDP flavour
/// (Linux's `bpf_xdp_event_output`): one sample of `data` followed by the
/// first `(flags & BPF_F_CTXLEN_MASK) >> 32` packet bytes, into the slot
/// `flags & BPF_F_INDEX_MASK` (`BPF_F_CURRENT_CPU`: the worker's). The
/// errors are Linux's, in Linux's order: `-EINVAL` for other flag bits,
/// `-EFAULT` for more packet bytes than the frame has, then `-E2BIG`,
/// `-ENOENT`, `-EOPNOTSUPP`, `-EBUSY`, `-ENOSPC` from the map.
fn perf_event_output(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let flags = a[2];
    if flags & !(BPF_F_INDEX_MASK | BPF_F_CTXLEN_MASK) != 0 {
        return Ok(neg(OutputError::BadFlags.errno()));
    }
    let data = cx.read(4, a[3], a[4])?;
    let Some(packet) = cx.xdp_data((flags & BPF_F_CTXLEN_MASK) >> 32) else {
        return Ok(neg(OutputError::PacketTooShort.errno()));
    };
    let map = cx.map(2, a[1])?;
    let pea = map
        .downcast::<PerfEventArray>()
        .ok_or(HelperError::BadMap {
            arg: 2,
            value: a[1],
        })?;
    let cpu = cx.cpu();
    let index = match flags & BPF_F_INDEX_MASK {
        BPF_F_CURRENT_CPU => u64::from(cpu),
        i => i,
    };
    Ok(match pea.output(cpu, index, [data, packet]) {
        Ok(()) => 0,
        Err(e) => neg(e.errno()),
    })
}

/// The ring buffer that owns the record at program address `addr`.
fn record_owner<'c>(cx: &'c CallCtx<'_, '_>, addr: u64) -> Result<&'c RingBuf, HelperError> {
    cx.map_owning(addr)
        .and_then(|m| m.downcast::<RingBuf>())
        .ok_or(HelperError::BadPointer {
            arg: 1,
            addr,
            len: 8,
        })
}

fn ringbuf_commit(cx: &mut CallCtx<'_, '_>, a: [u64; 5], submit: bool) -> Result<u64, HelperError> {
    let rb = record_owner(cx, a[0])?;
    let p = cx.host_ptr(1, a[0], 1)?;
    if submit {
        rb.submit(p);
    } else {
        rb.discard(p);
    }
    Ok(0)
}

fn ringbuf_submit(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    ringbuf_commit(cx, a, true)
}

fn ringbuf_discard(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    ringbuf_commit(cx, a, false)
}

/// `bpf_trace_printk(fmt, fmt_size, a, b, c)`: formats into a fixed buffer
/// (no allocation) and hands the line to the Vm's trace sink. Supports the
/// conversions Linux does: `%d %i %u %x %X %ld %li %lu %lx %lld %lli %llu
/// %llx %p %c %%`; `%s` prints its argument as a pointer (the string is not
/// read). Returns the length written, or `-EINVAL` for a bad format.
fn trace_printk(cx: &mut CallCtx<'_, '_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let fmt = cx.read(1, a[0], a[1])?;
    let Some(nul) = fmt.iter().position(|&b| b == 0) else {
        return Ok(neg(EINVAL));
    };
    let mut out = Line::default();
    let args = [a[2], a[3], a[4]];
    let mut next = 0;
    let mut i = 0;
    let fmt = &fmt[..nul];
    while i < fmt.len() {
        let c = fmt[i];
        i += 1;
        if c != b'%' {
            out.push(c);
            continue;
        }
        let mut longs = 0;
        while fmt.get(i) == Some(&b'l') {
            longs += 1;
            i += 1;
        }
        let Some(&conv) = fmt.get(i) else {
            return Ok(neg(EINVAL));
        };
        i += 1;
        if conv == b'%' {
            out.push(b'%');
            continue;
        }
        let Some(&v) = args.get(next) else {
            return Ok(neg(EINVAL));
        };
        next += 1;
        let v = if longs == 0 && conv != b'p' && conv != b's' {
            match conv {
                b'd' | b'i' => v as i32 as i64 as u64,
                _ => u64::from(v as u32),
            }
        } else {
            v
        };
        match conv {
            b'd' | b'i' => out.signed(v as i64),
            b'u' => out.unsigned(v, 10, false),
            b'x' => out.unsigned(v, 16, false),
            b'X' => out.unsigned(v, 16, true),
            b'p' | b's' => {
                out.push(b'0');
                out.push(b'x');
                out.unsigned(v, 16, false);
            }
            b'c' => out.push(v as u8),
            _ => return Ok(neg(EINVAL)),
        }
    }
    cx.trace(out.as_bytes());
    Ok(out.len as u64)
}

/// A fixed-size output line for `trace_printk`.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; 256],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn unsigned(&mut self, mut v: u64, base: u64, upper: bool) {
        let digits: &[u8; 16] = if upper {
            b"0123456789ABCDEF"
        } else {
            b"0123456789abcdef"
        };
        let mut tmp = [0u8; 20];
        let mut n = 0;
        loop {
            tmp[n] = digits[(v % base) as usize];
            n += 1;
            v /= base;
            if v == 0 {
                break;
            }
        }
        for &d in tmp[..n].iter().rev() {
            self.push(d);
        }
    }

    fn signed(&mut self, v: i64) {
        if v < 0 {
            self.push(b'-');
        }
        self.unsigned(v.unsigned_abs(), 10, false);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

const fn helper(
    id: u32,
    name: &'static str,
    args: [ArgType; 5],
    ret: RetType,
    func: super::HelperFn,
) -> Helper {
    Helper {
        id,
        name,
        args,
        ret,
        func,
    }
}

/// Every XDP helper Sluice provides.
pub(super) const XDP_HELPERS: &[Helper] = &[
    helper(
        id::MAP_LOOKUP_ELEM,
        "bpf_map_lookup_elem",
        [ConstMapPtr, PtrToMapKey, No, No, No],
        RetType::PtrToMapValueOrNull,
        map_lookup_elem,
    ),
    helper(
        id::MAP_UPDATE_ELEM,
        "bpf_map_update_elem",
        [ConstMapPtr, PtrToMapKey, PtrToMapValue, Any, No],
        RetType::Integer,
        map_update_elem,
    ),
    helper(
        id::MAP_DELETE_ELEM,
        "bpf_map_delete_elem",
        [ConstMapPtr, PtrToMapKey, No, No, No],
        RetType::Integer,
        map_delete_elem,
    ),
    helper(
        id::KTIME_GET_NS,
        "bpf_ktime_get_ns",
        [No, No, No, No, No],
        RetType::Integer,
        ktime_get_ns,
    ),
    helper(
        id::TRACE_PRINTK,
        "bpf_trace_printk",
        [PtrToMem, ConstSize, Any, Any, Any],
        RetType::Integer,
        trace_printk,
    ),
    helper(
        id::GET_PRANDOM_U32,
        "bpf_get_prandom_u32",
        [No, No, No, No, No],
        RetType::Integer,
        get_prandom_u32,
    ),
    helper(
        id::GET_SMP_PROCESSOR_ID,
        "bpf_get_smp_processor_id",
        [No, No, No, No, No],
        RetType::Integer,
        get_smp_processor_id,
    ),
    helper(
        id::TAIL_CALL,
        "bpf_tail_call",
        [PtrToCtx, ConstMapPtr, Any, No, No],
        RetType::Integer,
        tail_call,
    ),
    helper(
        id::REDIRECT,
        "bpf_redirect",
        [Any, Any, No, No, No],
        RetType::Integer,
        redirect,
    ),
    helper(
        id::PERF_EVENT_OUTPUT,
        "bpf_perf_event_output",
        [PtrToCtx, ConstMapPtr, Any, PtrToMem, ConstSizeOrZero],
        RetType::Integer,
        perf_event_output,
    ),
    helper(
        id::CSUM_DIFF,
        "bpf_csum_diff",
        [
            PtrToMemOrNull,
            ConstSizeOrZero,
            PtrToMemOrNull,
            ConstSizeOrZero,
            Any,
        ],
        RetType::Integer,
        csum_diff,
    ),
    helper(
        id::XDP_ADJUST_HEAD,
        "bpf_xdp_adjust_head",
        [PtrToCtx, Any, No, No, No],
        RetType::Integer,
        xdp_adjust_head,
    ),
    helper(
        id::REDIRECT_MAP,
        "bpf_redirect_map",
        [ConstMapPtr, Any, Any, No, No],
        RetType::Integer,
        redirect_map,
    ),
    helper(
        id::XDP_ADJUST_META,
        "bpf_xdp_adjust_meta",
        [PtrToCtx, Any, No, No, No],
        RetType::Integer,
        xdp_adjust_meta,
    ),
    helper(
        id::XDP_ADJUST_TAIL,
        "bpf_xdp_adjust_tail",
        [PtrToCtx, Any, No, No, No],
        RetType::Integer,
        xdp_adjust_tail,
    ),
    helper(
        id::FIB_LOOKUP,
        "bpf_fib_lookup",
        [PtrToCtx, PtrToRwMem, ConstSize, Any, No],
        RetType::Integer,
        fib_lookup,
    ),
    helper(
        id::MAP_PUSH_ELEM,
        "bpf_map_push_elem",
        [ConstMapPtr, PtrToMapValue, Any, No, No],
        RetType::Integer,
        map_push_elem,
    ),
    helper(
        id::MAP_POP_ELEM,
        "bpf_map_pop_elem",
        [ConstMapPtr, PtrToUninitMapValue, No, No, No],
        RetType::Integer,
        map_pop_elem,
    ),
    helper(
        id::MAP_PEEK_ELEM,
        "bpf_map_peek_elem",
        [ConstMapPtr, PtrToUninitMapValue, No, No, No],
        RetType::Integer,
        map_peek_elem,
    ),
    helper(
        id::KTIME_GET_BOOT_NS,
        "bpf_ktime_get_boot_ns",
        [No, No, No, No, No],
        RetType::Integer,
        ktime_get_ns,
    ),
    helper(
        id::RINGBUF_OUTPUT,
        "bpf_ringbuf_output",
        [ConstMapPtr, PtrToMem, ConstSizeOrZero, Any, No],
        RetType::Integer,
        ringbuf_output,
    ),
    helper(
        id::RINGBUF_RESERVE,
        "bpf_ringbuf_reserve",
        [ConstMapPtr, ConstAllocSizeOrZero, Any, No, No],
        RetType::PtrToAllocMemOrNull,
        ringbuf_reserve,
    ),
    helper(
        id::RINGBUF_SUBMIT,
        "bpf_ringbuf_submit",
        [PtrToAllocMem, Any, No, No, No],
        RetType::Void,
        ringbuf_submit,
    ),
    helper(
        id::RINGBUF_DISCARD,
        "bpf_ringbuf_discard",
        [PtrToAllocMem, Any, No, No, No],
        RetType::Void,
        ringbuf_discard,
    ),
];

impl Registry {
    /// The helpers of XDP programs.
    pub fn xdp() -> Registry {
        let mut r = Registry::new();
        for h in XDP_HELPERS {
            r.register(*h);
        }
        r
    }
}
