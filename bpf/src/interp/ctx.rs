//! What a helper can reach during a run: memory through the region table,
//! the running program's maps, the XDP frame, and per-run state.

use std::ptr::NonNull;
use std::sync::Arc;

use super::mem::{self, Region, Regions, DYN_REGIONS};
use super::{xdp_md, PACKET_VBASE, REGION_CTX, REGION_PACKET};
use crate::helpers::HelperError;
use crate::maps::Map;

/// Bytes at the start of every frame buffer that `adjust_head` and
/// `adjust_meta` may not reach (Linux keeps `struct xdp_frame` there).
pub const XDP_FRAME_RESERVE: usize = 40;
/// Shortest packet `adjust_head`/`adjust_tail` may leave (`ETH_HLEN`).
pub const ETH_HLEN: usize = 14;
/// Largest metadata area `adjust_meta` may create (Linux bounds it by
/// `skb_shared_info.meta_len`, a `u8`, since 6.x; it used to be 32).
pub const MAX_META: usize = 255;

/// First dynamic region slot used for inner maps of map-in-map lookups.
pub(crate) const REGION_INNER: usize = 3;
/// Inner maps one run can hold at once.
pub(crate) const INNER_SLOTS: usize = DYN_REGIONS - REGION_INNER;
/// Map pointers (`LD_IMM64` map references) are `MAP_HANDLE_BASE | index`:
/// region index `0x7fff_0000`, which never holds memory, so a map pointer
/// cannot be dereferenced.
pub const MAP_HANDLE_BASE: u64 = 0x7fff_0000 << 32;
/// Set in a map handle's low half for inner maps held by the run.
pub(crate) const INNER_HANDLE: u64 = 0x8000_0000;

/// Receives `bpf_trace_printk` output: the formatted line, without a
/// trailing newline. Called on the worker thread; keep it cheap.
pub type TraceSink = fn(&[u8]);

/// The frame a running XDP program works on, as host offsets.
pub(crate) struct XdpState {
    /// The whole buffer, headroom and tailroom included, at `PACKET_VBASE`.
    pub whole: Region,
    pub buf_len: usize,
    pub meta: usize,
    pub data: usize,
    pub end: usize,
}

/// [`RunState::redirect`] when no `bpf_redirect*` chose a target in the run.
pub(crate) const NO_REDIRECT: u64 = u64::MAX;

/// In [`RunState::redirect`], marks a CPU (cpumap) target; a port is the
/// bare zero-extended ifindex.
pub(crate) const REDIRECT_CPU: u64 = 1 << 32;

/// Per-run state that helpers read and change.
pub struct RunState {
    pub(crate) cpu: u32,
    pub(crate) rng: u64,
    pub(crate) trace: Option<TraceSink>,
    pub(crate) xdp: Option<XdpState>,
    /// The port `bpf_redirect*` chose (zero-extended), a CPU
    /// ([`REDIRECT_CPU`] | cpu), or [`NO_REDIRECT`].
    /// One `u64`, written and read whole: the helpers, the JIT's inlined
    /// `bpf_redirect` and the reset before each run all store 8 bytes, and
    /// the runtime reads 8 bytes after the run, so the read is always
    /// forwarded from the store (an `Option<u32>` is written as two 4-byte
    /// halves and read as one 8-byte word: a store-forwarding stall on
    /// every redirected packet).
    pub(crate) redirect: u64,
    pub(crate) inner: [Option<Arc<Map>>; INNER_SLOTS],
    /// Whether `inner` holds anything (so a run that used none skips the
    /// release).
    pub(crate) inner_used: bool,
    pub(crate) tail_calls: u32,
    pub(crate) used: u64,
    pub(crate) limit: u64,
    /// The FIB `bpf_fib_lookup` consults (`None`: an empty one).
    pub(crate) fib: Option<Arc<crate::fib::Fib>>,
}

impl RunState {
    /// Where the last run's `bpf_redirect*` sent the packet.
    #[inline]
    pub(crate) fn redirect(&self) -> Option<super::Redirect> {
        match self.redirect {
            NO_REDIRECT => None,
            r if r & REDIRECT_CPU != 0 => Some(super::Redirect::Cpu(r as u32)),
            r => Some(super::Redirect::Port(r as u32)),
        }
    }

    /// Drops the inner maps a run held.
    pub(crate) fn release_inner(&mut self) {
        self.inner = Default::default();
        self.inner_used = false;
    }

    pub(crate) fn new(cpu: u32, rng: u64, trace: Option<TraceSink>, limit: u64) -> RunState {
        RunState {
            cpu,
            rng,
            trace,
            xdp: None,
            redirect: NO_REDIRECT,
            inner: Default::default(),
            inner_used: false,
            tail_calls: 0,
            used: 0,
            limit,
            fib: None,
        }
    }
}

/// What a helper can reach while it runs.
pub struct CallCtx<'a, 'r> {
    pub(crate) space: Space<'a, 'r>,
    pub(crate) state: &'a mut RunState,
    pub(crate) maps: &'a [Arc<Map>],
}

/// How program addresses reach host memory during a call.
pub(crate) enum Space<'a, 'r> {
    /// Checked mode: virtual addresses, translated through the run's regions.
    Checked(&'a mut Regions<'r>),
    /// Native mode (verified programs only): program addresses are host
    /// addresses; the context is a [`crate::native::NativeXdpMd`] at this
    /// address (null for non-XDP programs).
    Native(*mut crate::native::NativeXdpMd),
}

impl<'a, 'r> CallCtx<'a, 'r> {
    /// A context for a checked run.
    pub(crate) fn checked(
        regions: &'a mut Regions<'r>,
        state: &'a mut RunState,
        maps: &'a [Arc<Map>],
    ) -> Self {
        CallCtx {
            space: Space::Checked(regions),
            state,
            maps,
        }
    }

    /// A context for a native run.
    ///
    /// # Safety
    /// Only for programs the verifier accepted: every pointer argument such
    /// a program passes to a helper is a host address of at least the size
    /// the helper's declared argument types say, and `ctx` is null or the
    /// run's native context.
    #[allow(unsafe_code)]
    pub(crate) unsafe fn native(
        ctx: *mut crate::native::NativeXdpMd,
        state: &'a mut RunState,
        maps: &'a [Arc<Map>],
    ) -> Self {
        CallCtx {
            space: Space::Native(ctx),
            state,
            maps,
        }
    }
}

impl CallCtx<'_, '_> {
    /// Borrows `len` bytes at program address `addr` for reading.
    ///
    /// # Errors
    /// [`HelperError::BadPointer`] naming argument `arg` when the range is not
    /// inside one region.
    pub fn read(&self, arg: u8, addr: u64, len: u64) -> Result<&[u8], HelperError> {
        let bad = HelperError::BadPointer { arg, addr, len };
        match &self.space {
            Space::Checked(r) => r.slice(addr, len).ok_or(bad),
            // SAFETY: native mode runs verified programs only (see
            // `CallCtx::native`): `addr` holds `len` readable bytes.
            #[allow(unsafe_code)]
            Space::Native(_) => unsafe { mem::native_slice(addr, len) }.ok_or(bad),
        }
    }

    /// Borrows `len` bytes at program address `addr` for writing.
    ///
    /// # Errors
    /// [`HelperError::BadPointer`] when the range is not inside one writable
    /// region.
    pub fn write(&mut self, arg: u8, addr: u64, len: u64) -> Result<&mut [u8], HelperError> {
        let bad = HelperError::BadPointer { arg, addr, len };
        match &mut self.space {
            Space::Checked(r) => r.slice_mut(addr, len).ok_or(bad),
            // SAFETY: as in `read`, and the verifier proved the bytes
            // writable; `&mut self` keeps the borrow unique among helpers.
            #[allow(unsafe_code)]
            Space::Native(_) => unsafe { mem::native_slice_mut(addr, len) }.ok_or(bad),
        }
    }

    /// The host pointer behind a program address (for map storage that
    /// takes pointers, such as ring buffer records).
    ///
    /// # Errors
    /// [`HelperError::BadPointer`] when `len` bytes there are not in one region.
    pub fn host_ptr(&self, arg: u8, addr: u64, len: u64) -> Result<NonNull<u8>, HelperError> {
        let bad = HelperError::BadPointer { arg, addr, len };
        match &self.space {
            Space::Checked(r) => r.host_ptr(addr, len).ok_or(bad),
            Space::Native(_) => NonNull::new(addr as *mut u8).ok_or(bad),
        }
    }

    /// Whether this run is native (verified, host addresses).
    pub fn is_native(&self) -> bool {
        matches!(self.space, Space::Native(_))
    }

    /// The worker index (`bpf_get_smp_processor_id`).
    pub fn cpu(&self) -> u32 {
        self.state.cpu
    }

    /// A pseudo-random number from the worker's generator (xorshift64*).
    pub fn random_u32(&mut self) -> u32 {
        let mut x = self.state.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    /// Hands a formatted `bpf_trace_printk` line to the sink, if any.
    pub fn trace(&self, line: &[u8]) {
        if let Some(sink) = self.state.trace {
            sink(line);
        }
    }

    /// The FIB `bpf_fib_lookup` consults, if the VM was given one.
    pub fn fib(&self) -> Option<&crate::fib::Fib> {
        self.state.fib.as_deref()
    }

    /// Records the port a `bpf_redirect`/`bpf_redirect_map` chose.
    pub fn set_redirect(&mut self, ifindex: u32) {
        self.state.redirect = u64::from(ifindex);
    }

    /// Records the CPU a `bpf_redirect_map` into a cpumap chose.
    pub fn set_redirect_cpu(&mut self, cpu: u32) {
        self.state.redirect = REDIRECT_CPU | u64::from(cpu);
    }

    /// The map behind a map pointer the program passed as argument `arg`.
    ///
    /// # Errors
    /// [`HelperError::BadMap`] when `handle` is not one of the program's maps
    /// or an inner map this run looked up.
    pub fn map(&self, arg: u8, handle: u64) -> Result<&Arc<Map>, HelperError> {
        let bad = HelperError::BadMap { arg, value: handle };
        if handle & !0xffff_ffff != MAP_HANDLE_BASE {
            return Err(bad);
        }
        let low = handle & 0xffff_ffff;
        if low & INNER_HANDLE != 0 {
            let slot = (low & !INNER_HANDLE) as usize;
            self.state
                .inner
                .get(slot)
                .and_then(Option::as_ref)
                .ok_or(bad)
        } else {
            self.maps.get(low as usize).ok_or(bad)
        }
    }

    /// The program address of a value pointer that map `handle` returned.
    /// Returns 0 (NULL) when the pointer is not in the map's value area,
    /// which a correct map never does.
    pub fn map_value_addr(&self, handle: u64, p: NonNull<u8>) -> u64 {
        let Space::Checked(regions) = &self.space else {
            return p.as_ptr() as u64;
        };
        let low = handle & 0xffff_ffff;
        let region = if low & INNER_HANDLE != 0 {
            regions
                .dynamic
                .get(REGION_INNER + (low & !INNER_HANDLE) as usize)
        } else {
            regions.fixed.get(low as usize)
        };
        region.and_then(|r| r.vaddr_of(p)).unwrap_or(0)
    }

    /// The program's map, or an inner map this run holds, whose value area
    /// contains program address `addr` (a ring buffer record, say).
    pub fn map_owning(&self, addr: u64) -> Option<&Arc<Map>> {
        match &self.space {
            Space::Checked(_) => {
                let i = (addr >> 32).checked_sub(DYN_REGIONS as u64)?;
                self.maps.get(usize::try_from(i).ok()?)
            }
            Space::Native(_) => self.maps.iter().find(|m| {
                m.ops().value_area().is_some_and(|(p, len)| {
                    let base = p.as_ptr() as u64;
                    addr >= base && addr - base < len as u64
                })
            }),
        }
    }

    /// Makes an inner map (from an array- or hash-of-maps lookup) reachable
    /// for the rest of the run and returns its handle; 0 when the run
    /// already holds [`INNER_SLOTS`] other inner maps.
    pub fn inner_map_handle(&mut self, map: Arc<Map>) -> u64 {
        let slots = &mut self.state.inner;
        let slot = match slots
            .iter()
            .position(|m| m.as_ref().is_some_and(|m| Arc::ptr_eq(m, &map)))
        {
            Some(s) => return MAP_HANDLE_BASE | INNER_HANDLE | s as u64,
            None => match slots.iter().position(Option::is_none) {
                Some(s) => s,
                None => return 0,
            },
        };
        // The run keeps `map` alive in `state.inner[slot]` for as long as
        // the region is in its table: both are dropped when the run ends.
        if let Space::Checked(regions) = &mut self.space {
            let region = match map.ops().value_area() {
                Some((p, len)) => Region::from_raw(region_vbase(REGION_INNER + slot), p, len, true),
                None => Region::EMPTY,
            };
            regions.dynamic[REGION_INNER + slot] = region;
        }
        slots[slot] = Some(map);
        self.state.inner_used = true;
        MAP_HANDLE_BASE | INNER_HANDLE | slot as u64
    }

    /// The first `len` bytes of the XDP frame's packet data (for
    /// `bpf_perf_event_output`'s `BPF_F_CTXLEN_MASK`); `None` when the run
    /// has no frame or the packet is shorter.
    pub fn xdp_data(&self, len: u64) -> Option<&[u8]> {
        let x = self.state.xdp.as_ref()?;
        let len = usize::try_from(len).ok()?;
        if len > x.end - x.data {
            return None;
        }
        x.whole.bytes(x.data, len)
    }

    fn xdp(&mut self) -> Option<&mut XdpState> {
        self.state.xdp.as_mut()
    }

    /// `bpf_xdp_adjust_head`: moves the packet start by `delta` bytes
    /// (metadata moves with it). Returns 0 or `-EINVAL`.
    pub fn xdp_adjust_head(&mut self, delta: i64) -> i64 {
        let Some(x) = self.xdp() else { return -22 };
        let metalen = x.data - x.meta;
        let data = x.data as i64 + delta;
        if data < (XDP_FRAME_RESERVE + metalen) as i64 || data > x.end as i64 - ETH_HLEN as i64 {
            return -22;
        }
        let data = data as usize;
        let meta = data - metalen;
        if metalen > 0 {
            x.whole.copy_within(x.meta, meta, metalen);
        }
        x.meta = meta;
        x.data = data;
        self.sync_xdp();
        0
    }

    /// `bpf_xdp_adjust_tail`: moves the packet end by `delta` bytes; grown
    /// bytes are zeroed. Returns 0 or `-EINVAL`.
    pub fn xdp_adjust_tail(&mut self, delta: i64) -> i64 {
        let Some(x) = self.xdp() else { return -22 };
        let end = x.end as i64 + delta;
        if end > x.buf_len as i64 || end < (x.data + ETH_HLEN) as i64 {
            return -22;
        }
        let end = end as usize;
        if end > x.end {
            x.whole.fill_zero(x.end, end - x.end);
        }
        x.end = end;
        self.sync_xdp();
        0
    }

    /// `bpf_xdp_adjust_meta`: moves the metadata start by `delta` bytes.
    /// Returns 0, `-EINVAL` or `-EACCES`.
    pub fn xdp_adjust_meta(&mut self, delta: i64) -> i64 {
        let Some(x) = self.xdp() else { return -22 };
        let meta = x.meta as i64 + delta;
        if meta < XDP_FRAME_RESERVE as i64 || meta > x.data as i64 {
            return -22;
        }
        let metalen = x.data - meta as usize;
        if !metalen.is_multiple_of(4) || metalen > MAX_META {
            return -13;
        }
        x.meta = meta as usize;
        self.sync_xdp();
        0
    }

    /// Rebuilds the packet region and the context's pointers after the
    /// frame moved.
    fn sync_xdp(&mut self) {
        let Some(x) = &self.state.xdp else { return };
        match &mut self.space {
            Space::Checked(regions) => {
                regions.dynamic[REGION_PACKET] = x.whole.sub(x.meta, x.end - x.meta);
                let v = |off: usize| (PACKET_VBASE + off as u64) as u32;
                let ctx = &regions.dynamic[REGION_CTX];
                for (at, val) in [
                    (xdp_md::DATA, v(x.data)),
                    (xdp_md::DATA_END, v(x.end)),
                    (xdp_md::DATA_META, v(x.meta)),
                ] {
                    ctx.poke_u32(at, val);
                }
            }
            Space::Native(ctx) => {
                let base = x.whole.host_base() as u64;
                // SAFETY: a native run's context pointer is its live
                // NativeXdpMd (constructor contract of `CallCtx::native`).
                #[allow(unsafe_code)]
                if let Some(ctx) = unsafe { ctx.as_mut() } {
                    ctx.data = base + x.data as u64;
                    ctx.data_end = base + x.end as u64;
                    ctx.data_meta = base + x.meta as u64;
                }
            }
        }
    }
}

/// Virtual base of dynamic region slot `i`.
pub(crate) fn region_vbase(i: usize) -> u64 {
    (i as u64) << 32
}
