//! The program-to-host memory boundary: the only place where a program's
//! virtual address becomes a host pointer.
//!
//! A [`Region`] is `len` bytes of host memory that a program sees at virtual
//! address `vbase`. [`Regions`] is the table a run translates through: the
//! top 32 bits of an address pick the region, the rest is checked against
//! the region's bounds at both ends of the access.
//!
//! Indices below [`DYN_REGIONS`] are per run (packet, context, stack, the
//! inner maps a run looked up); the rest are the program's maps, fixed when
//! it was loaded.
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::program::atomic;

/// Per-run region slots; program map regions start at this index.
pub const DYN_REGIONS: usize = 8;

/// One region: `len` bytes at host `host`, seen by the program at `vbase`.
///
/// Invariant: while a run can reach the region, `host..host+len` is valid
/// for reads (and for writes when `writable`), and every other user of those
/// bytes accesses them through raw pointers or atomics only (packet buffers
/// are lent to the run exclusively; map storage is shared by design, like
/// Linux's map values).
#[derive(Clone, Copy)]
pub struct Region {
    vbase: u64,
    len: u64,
    host: *mut u8,
    writable: bool,
}

// SAFETY: a Region is an address range plus the permission to use it; the
// memory behind a program's fixed regions is owned by `Arc<Map>`s that the
// same program holds, and map storage is built for concurrent access.
unsafe impl Send for Region {}
// SAFETY: as above; a shared Region only hands out raw accesses that the
// map storage is designed for.
unsafe impl Sync for Region {}

impl Region {
    /// The region nothing lives in.
    pub const EMPTY: Region = Region {
        vbase: 0,
        len: 0,
        host: std::ptr::null_mut(),
        writable: false,
    };

    /// A region over `bytes`, at virtual address `vbase`.
    pub fn new(vbase: u64, bytes: &mut [u8], writable: bool) -> Region {
        Region {
            vbase,
            len: bytes.len() as u64,
            host: bytes.as_mut_ptr(),
            writable,
        }
    }

    /// A region over memory that outlives every run that can reach it: map
    /// storage held through an `Arc<Map>` by the program, or by the run for
    /// inner maps. Creating a region is harmless; the crate's run loop is
    /// what keeps the type's invariant, by never putting a region in a table
    /// after its memory's owner is gone.
    pub(crate) fn from_raw(vbase: u64, host: NonNull<u8>, len: usize, writable: bool) -> Region {
        Region {
            vbase,
            len: len as u64,
            host: host.as_ptr(),
            writable,
        }
    }

    /// Host pointer of `size` bytes at `addr`, if they all lie inside.
    #[inline(always)]
    fn at(&self, addr: u64, size: u64) -> Option<*mut u8> {
        let off = addr.wrapping_sub(self.vbase);
        // Both ends: the first byte at `off` and the last at `off + size - 1`
        // must be below `len`; written so that nothing wraps.
        if off < self.len && size <= self.len - off {
            Some(self.host.wrapping_add(off as usize))
        } else {
            None
        }
    }

    #[inline(always)]
    fn at_mut(&self, addr: u64, size: u64) -> Option<*mut u8> {
        if self.writable {
            self.at(addr, size)
        } else {
            None
        }
    }

    /// The part `off..off+len` of this region as a region of its own, at
    /// the matching virtual address; empty when out of bounds.
    pub(crate) fn sub(&self, off: usize, len: usize) -> Region {
        match (off as u64).checked_add(len as u64) {
            Some(end) if end <= self.len => Region {
                vbase: self.vbase + off as u64,
                len: len as u64,
                host: self.host.wrapping_add(off),
                writable: self.writable,
            },
            _ => Region::EMPTY,
        }
    }

    fn in_bounds(&self, off: usize, len: usize) -> bool {
        (off as u64)
            .checked_add(len as u64)
            .is_some_and(|e| e <= self.len)
    }

    /// Moves `len` bytes from offset `from` to offset `to` (ranges may
    /// overlap); false when either is out of bounds.
    pub(crate) fn copy_within(&self, from: usize, to: usize, len: usize) -> bool {
        if !self.in_bounds(from, len) || !self.in_bounds(to, len) {
            return false;
        }
        // SAFETY: both ranges were just checked to lie inside the region,
        // which is valid for reads and writes while a run uses it.
        unsafe {
            std::ptr::copy(
                self.host.wrapping_add(from),
                self.host.wrapping_add(to),
                len,
            )
        };
        true
    }

    /// Zeroes `len` bytes at offset `at`; false when out of bounds.
    pub(crate) fn fill_zero(&self, at: usize, len: usize) -> bool {
        if !self.in_bounds(at, len) {
            return false;
        }
        // SAFETY: the range was just checked to lie inside the region.
        unsafe { std::ptr::write_bytes(self.host.wrapping_add(at), 0, len) };
        true
    }

    /// Writes a u32 at offset `off`, writable or not (the context's fields
    /// are read-only to programs, but helpers keep them current).
    pub(crate) fn poke_u32(&self, off: usize, v: u32) -> bool {
        if !self.in_bounds(off, 4) {
            return false;
        }
        // SAFETY: the 4 bytes were just checked to lie inside the region.
        unsafe {
            std::ptr::copy_nonoverlapping(v.to_le_bytes().as_ptr(), self.host.wrapping_add(off), 4)
        };
        true
    }

    /// Borrows `len` bytes at offset `off` from the region's start, if they
    /// lie inside.
    pub(crate) fn bytes(&self, off: usize, len: usize) -> Option<&[u8]> {
        if !self.in_bounds(off, len) {
            return None;
        }
        self.slice(self.vbase + off as u64, len as u64)
    }

    /// The host address of the region's first byte.
    pub(crate) fn host_base(&self) -> *mut u8 {
        self.host
    }

    /// The virtual address of host pointer `p`, if it lies in the region.
    pub fn vaddr_of(&self, p: NonNull<u8>) -> Option<u64> {
        let off = (p.as_ptr() as usize).wrapping_sub(self.host as usize) as u64;
        (off < self.len).then_some(self.vbase + off)
    }

    #[inline(always)]
    pub(super) fn load<const N: usize>(&self, addr: u64) -> Option<u64> {
        let p = self.at(addr, N as u64)?;
        let mut buf = [0u8; 8];
        // SAFETY: `at` proved the N bytes at `p` lie inside the region, which
        // is valid for reads during the run; `buf` has room for N <= 8.
        unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), N) };
        Some(u64::from_le_bytes(buf))
    }

    #[inline(always)]
    pub(super) fn store<const N: usize>(&self, addr: u64, v: u64) -> Option<()> {
        let p = self.at_mut(addr, N as u64)?;
        let bytes = v.to_le_bytes();
        // SAFETY: `at_mut` proved the N bytes at `p` lie inside the writable
        // region; the source is a local array of 8 bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, N) };
        Some(())
    }

    /// An atomic read-modify-write; `Err(true)` when misaligned, `Err(false)`
    /// when outside. Returns the old value.
    #[inline]
    pub(super) fn atomic(
        &self,
        addr: u64,
        wide: bool,
        kind: u64,
        operand: u64,
        expected: u64,
    ) -> Result<u64, bool> {
        let size = if wide { 8 } else { 4 };
        let p = self.at_mut(addr, size).ok_or(false)?;
        // The program's address must be aligned (as Linux requires), and so
        // must the host's, which every region's backing store guarantees.
        if !addr.is_multiple_of(size) || !(p as usize).is_multiple_of(size as usize) {
            return Err(true);
        }
        let o = Ordering::SeqCst;
        let op = kind & !atomic::FETCH;
        if wide {
            // SAFETY: `p` is inside the writable region and 8-byte aligned;
            // other users of program memory use raw accesses or atomics.
            let a = unsafe { AtomicU64::from_ptr(p.cast::<u64>()) };
            Ok(match op {
                atomic::ADD => a.fetch_add(operand, o),
                atomic::OR => a.fetch_or(operand, o),
                atomic::AND => a.fetch_and(operand, o),
                atomic::XOR => a.fetch_xor(operand, o),
                k if k == atomic::XCHG & !atomic::FETCH => a.swap(operand, o),
                _ => match a.compare_exchange(expected, operand, o, o) {
                    Ok(v) | Err(v) => v,
                },
            })
        } else {
            // SAFETY: as above, 4-byte aligned.
            let a = unsafe { AtomicU32::from_ptr(p.cast::<u32>()) };
            let (x, e) = (operand as u32, expected as u32);
            Ok(u64::from(match op {
                atomic::ADD => a.fetch_add(x, o),
                atomic::OR => a.fetch_or(x, o),
                atomic::AND => a.fetch_and(x, o),
                atomic::XOR => a.fetch_xor(x, o),
                k if k == atomic::XCHG & !atomic::FETCH => a.swap(x, o),
                _ => match a.compare_exchange(e, x, o, o) {
                    Ok(v) | Err(v) => v,
                },
            }))
        }
    }

    fn slice(&self, addr: u64, len: u64) -> Option<&[u8]> {
        if len == 0 {
            return Some(&[]);
        }
        let p = self.at(addr, len)?;
        // SAFETY: `at` proved `p..p+len` lies inside the region, which the
        // type's invariant keeps valid for reads during the run.
        Some(unsafe { std::slice::from_raw_parts(p, len as usize) })
    }

    fn host_ptr(&self, addr: u64, len: u64) -> Option<NonNull<u8>> {
        NonNull::new(self.at(addr, len.max(1))?)
    }
}

/// How a run reaches memory: checked through [`Regions`], or native for
/// verified programs ([`NativeAccess`]). The dispatch loop is generic over
/// it, so each mode gets its own machine code.
pub(crate) trait Access: Sized {
    /// The access for a tail-called program.
    type Retarget<'n>: Access
    where
        Self: 'n;
    /// The lowered slots this mode runs (`None`: the program cannot run in
    /// this mode).
    fn slots(prog: &crate::Program) -> Option<&[crate::program::Slot]>;
    /// A load of N bytes.
    fn load<const N: usize>(&self, addr: u64) -> Option<u64>;
    /// A store of N bytes.
    fn store<const N: usize>(&self, addr: u64, v: u64) -> Option<()>;
    /// An atomic read-modify-write (see [`Region::atomic`]).
    fn atomic(
        &self,
        addr: u64,
        wide: bool,
        kind: u64,
        operand: u64,
        expected: u64,
    ) -> Result<u64, bool>;
    /// Runs `f` with a helper context for this mode.
    fn call<R>(
        &mut self,
        state: &mut super::ctx::RunState,
        maps: &[std::sync::Arc<crate::maps::Map>],
        f: impl FnOnce(&mut super::ctx::CallCtx<'_, '_>) -> R,
    ) -> R;
    /// The access for a tail call into `next`.
    fn retarget<'n>(&'n mut self, next: &'n crate::Program) -> Self::Retarget<'n>;
}

impl Access for Regions<'_> {
    type Retarget<'n>
        = Regions<'n>
    where
        Self: 'n;

    fn slots(prog: &crate::Program) -> Option<&[crate::program::Slot]> {
        Some(&prog.slots)
    }

    #[inline(always)]
    fn load<const N: usize>(&self, addr: u64) -> Option<u64> {
        self.region(addr).load::<N>(addr)
    }

    #[inline(always)]
    fn store<const N: usize>(&self, addr: u64, v: u64) -> Option<()> {
        self.region(addr).store::<N>(addr, v)
    }

    #[inline]
    fn atomic(
        &self,
        addr: u64,
        wide: bool,
        kind: u64,
        operand: u64,
        expected: u64,
    ) -> Result<u64, bool> {
        self.region(addr)
            .atomic(addr, wide, kind, operand, expected)
    }

    fn call<R>(
        &mut self,
        state: &mut super::ctx::RunState,
        maps: &[std::sync::Arc<crate::maps::Map>],
        f: impl FnOnce(&mut super::ctx::CallCtx<'_, '_>) -> R,
    ) -> R {
        f(&mut super::ctx::CallCtx::checked(self, state, maps))
    }

    fn retarget<'n>(&'n mut self, next: &'n crate::Program) -> Regions<'n> {
        Regions {
            dynamic: &mut *self.dynamic,
            fixed: &next.map_regions,
        }
    }
}

/// Native access for verified programs: program addresses are host
/// addresses and loads and stores are plain.
pub(crate) struct NativeAccess {
    ctx: *mut crate::native::NativeXdpMd,
}

impl NativeAccess {
    /// Native access for one run.
    ///
    /// # Safety
    /// Only for runs of programs the verifier accepted (every address such a
    /// program loads from or stores to is valid host memory of the right
    /// kind), with `ctx` the run's native context or null.
    pub(crate) unsafe fn new(ctx: *mut crate::native::NativeXdpMd) -> NativeAccess {
        NativeAccess { ctx }
    }
}

impl Access for NativeAccess {
    type Retarget<'n> = NativeAccess;

    fn slots(prog: &crate::Program) -> Option<&[crate::program::Slot]> {
        prog.native_slots.as_deref()
    }

    #[inline(always)]
    fn load<const N: usize>(&self, addr: u64) -> Option<u64> {
        let mut buf = [0u8; 8];
        // SAFETY: `NativeAccess::new`'s contract: the verifier proved the N
        // bytes at `addr` readable.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), N) };
        Some(u64::from_le_bytes(buf))
    }

    #[inline(always)]
    fn store<const N: usize>(&self, addr: u64, v: u64) -> Option<()> {
        let bytes = v.to_le_bytes();
        // SAFETY: as in `load`, and the verifier proved the bytes writable.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, N) };
        Some(())
    }

    #[inline]
    fn atomic(
        &self,
        addr: u64,
        wide: bool,
        kind: u64,
        operand: u64,
        expected: u64,
    ) -> Result<u64, bool> {
        let size = if wide { 8 } else { 4 };
        let Some(p) = std::ptr::NonNull::new(addr as *mut u8) else {
            return Err(false);
        };
        // Reuse the checked implementation on a one-access region: the
        // verifier proved `size` writable bytes at `addr`.
        Region::from_raw(addr, p, size, true).atomic(addr, wide, kind, operand, expected)
    }

    fn call<R>(
        &mut self,
        state: &mut super::ctx::RunState,
        maps: &[std::sync::Arc<crate::maps::Map>],
        f: impl FnOnce(&mut super::ctx::CallCtx<'_, '_>) -> R,
    ) -> R {
        // SAFETY: native access exists only for verified runs, with this
        // run's context (`NativeAccess::new`'s contract).
        f(&mut unsafe { super::ctx::CallCtx::native(self.ctx, state, maps) })
    }

    fn retarget<'n>(&'n mut self, _next: &'n crate::Program) -> NativeAccess {
        NativeAccess { ctx: self.ctx }
    }
}

/// The regions one run translates through.
pub struct Regions<'a> {
    /// Packet, context, stack and inner-map slots of this run.
    pub(super) dynamic: &'a mut [Region; DYN_REGIONS],
    /// The running program's map regions (index `DYN_REGIONS + i`).
    pub(super) fixed: &'a [Region],
}

impl Regions<'_> {
    #[inline(always)]
    pub(super) fn region(&self, addr: u64) -> &Region {
        let i = (addr >> 32) as usize;
        if i < DYN_REGIONS {
            &self.dynamic[i]
        } else {
            self.fixed.get(i - DYN_REGIONS).unwrap_or(&Region::EMPTY)
        }
    }

    /// Borrows `len` bytes at virtual address `addr` if they lie in one region.
    pub fn slice(&self, addr: u64, len: u64) -> Option<&[u8]> {
        self.region(addr).slice(addr, len)
    }

    /// Borrows `len` writable bytes at `addr` if they lie in one writable
    /// region.
    pub fn slice_mut(&mut self, addr: u64, len: u64) -> Option<&mut [u8]> {
        if len == 0 {
            return Some(&mut []);
        }
        let p = self.region(addr).at_mut(addr, len)?;
        // SAFETY: `at_mut` proved `p..p+len` lies inside a writable region;
        // `&mut self` is held for the borrow's life, and every other slice
        // of program memory is made through this table, so it is unique.
        Some(unsafe { std::slice::from_raw_parts_mut(p, len as usize) })
    }

    /// The host pointer behind `addr` if `len` bytes there lie in one region.
    pub fn host_ptr(&self, addr: u64, len: u64) -> Option<NonNull<u8>> {
        self.region(addr).host_ptr(addr, len)
    }
}

/// `len` bytes at host address `addr`, for native (verified) runs.
///
/// # Safety
/// `addr..addr+len` must be readable for the borrow's life: the verifier
/// proved it for the helper argument this comes from.
pub(crate) unsafe fn native_slice<'a>(addr: u64, len: u64) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    let p = addr as *const u8;
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    Some(unsafe { std::slice::from_raw_parts(p, len as usize) })
}

/// `len` writable bytes at host address `addr`, for native runs.
///
/// # Safety
/// As [`native_slice`], and the bytes must be writable and not otherwise
/// borrowed while the slice lives.
pub(crate) unsafe fn native_slice_mut<'a>(addr: u64, len: u64) -> Option<&'a mut [u8]> {
    if len == 0 {
        return Some(&mut []);
    }
    let p = addr as *mut u8;
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    Some(unsafe { std::slice::from_raw_parts_mut(p, len as usize) })
}
