//! The UMEM: the packet memory an XDP socket shares with the kernel, and
//! the [`FramePool`] its frames belong to.
//!
//! One anonymous mapping, cut into `count` frames of `frame_size` bytes
//! (a power of two: 2048 or 4096, the kernel's aligned-chunk mode). A frame
//! is named by its offset in the area — the UMEM address the kernel's
//! descriptors carry — and that offset is also the [`Frame::cookie`].
//!
//! # Where a frame is
//!
//! Every frame is in exactly one of three places:
//!
//! * **free**: on the UMEM's lock-free free list (a crossbeam `ArrayQueue`
//!   of addresses);
//! * **kernel**: on a fill ring, an RX ring, a TX ring, in flight in a
//!   driver, or on a completion ring;
//! * **user**: in a [`Frame`] somewhere in Sluice.
//!
//! Moves: the RX side takes free frames to the fill ring (free → kernel)
//! and turns RX descriptors into frames (kernel → user). A dropped frame
//! goes back on the free list from whatever thread drops it
//! ([`FramePool::recycle`], user → free). The TX side sends frames of this
//! UMEM by descriptor only (user → kernel), copies other frames into a free
//! frame (free → kernel), and returns completed frames to the free list
//! (kernel → free). Nothing on these paths allocates, locks or makes a
//! syscall; the free list is the only state threads share, so frames can
//! be received on one socket and sent or freed on another, by any worker.
//!
//! # Giving the memory back
//!
//! The pool itself is `'static` (frames point home with a plain reference)
//! and a few kilobytes; the area is unmapped once it is provably unused:
//! every socket sharing it has been closed (the kernel no longer touches
//! the frames it held) and every frame that was in user hands is back on
//! the free list. The sockets count, single-writer, what they moved into
//! and out of the kernel; when one closes, what it still had in the kernel
//! is written off as home. The check runs when the last socket closes and,
//! after that, on every recycle — one relaxed load of a flag until then.

#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;

use super::sys::{Mapping, Sys, UmemReg};
use crate::{Frame, FramePool, HEADROOM};

/// A free frame taken off the free list: the proof that the caller may
/// write it and hand it to the kernel.
#[derive(Debug)]
#[must_use = "a free frame must go to a ring or back to the free list"]
pub(super) struct FreeFrame(u64);

impl FreeFrame {
    /// Its UMEM address (the frame's first byte).
    pub(super) fn addr(&self) -> u64 {
        self.0
    }
}

/// A UMEM and its free list (see the module docs).
pub struct Umem {
    name: String,
    /// Start of the area; valid until `released`.
    area: NonNull<u8>,
    len: usize,
    frame_size: u32,
    count: u32,
    free: ArrayQueue<u64>,
    /// Unmapped (taken) on release.
    mapping: Mutex<Option<Mapping>>,
    live_sockets: AtomicUsize,
    /// Frames the closed sockets still had in the kernel.
    written_off: AtomicI64,
    closing: AtomicBool,
    released: AtomicBool,
    alloc_failures: AtomicU64,
}

// SAFETY: the area is only reached through frames, each the unique owner
// of its buffer, and through free frames the caller took off the
// thread-safe free list; all other state is atomic or behind a mutex.
unsafe impl Send for Umem {}
// SAFETY: as above.
unsafe impl Sync for Umem {}

impl std::fmt::Debug for Umem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Umem")
            .field("name", &self.name)
            .field("frames", &self.count)
            .field("frame_size", &self.frame_size)
            .field("free", &self.free.len())
            .finish()
    }
}

impl Umem {
    /// Maps `count` frames of `frame_size` bytes (a power of two, at least
    /// [`HEADROOM`] + 64) through `sys`, all free.
    ///
    /// # Errors
    /// The mapping's OS error, or `EINVAL` for sizes out of range.
    pub(super) fn new(
        name: &str,
        sys: &Arc<dyn Sys>,
        count: u32,
        frame_size: u32,
    ) -> std::io::Result<&'static Umem> {
        let inval = || std::io::Error::from_raw_os_error(libc::EINVAL);
        if !frame_size.is_power_of_two() || (frame_size as usize) < HEADROOM + 64 || count == 0 {
            return Err(inval());
        }
        let len = (count as usize)
            .checked_mul(frame_size as usize)
            .ok_or_else(inval)?;
        let area = sys.mmap_anonymous(len)?;
        let free = ArrayQueue::new(count as usize);
        for i in 0..u64::from(count) {
            let _ = free.push(i * u64::from(frame_size));
        }
        Ok(Box::leak(Box::new(Umem {
            name: name.to_string(),
            area,
            len,
            frame_size,
            count,
            free,
            mapping: Mutex::new(Some(Mapping::new(area, len, Arc::clone(sys)))),
            live_sockets: AtomicUsize::new(0),
            written_off: AtomicI64::new(0),
            closing: AtomicBool::new(false),
            released: AtomicBool::new(false),
            alloc_failures: AtomicU64::new(0),
        })))
    }

    /// The registration a socket makes for this area: aligned chunks, no
    /// extra headroom (the kernel's own `XDP_PACKET_HEADROOM` of 256 bytes
    /// already puts received packets at [`HEADROOM`]).
    pub(super) fn registration(&self) -> UmemReg {
        UmemReg {
            addr: self.area.as_ptr() as u64,
            len: self.len as u64,
            chunk_size: self.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        }
    }

    /// Frames in the area.
    pub fn frames(&self) -> u32 {
        self.count
    }

    /// Bytes in the area.
    pub fn size(&self) -> usize {
        self.len
    }

    /// Whether the area has been unmapped (every socket closed and every
    /// frame home).
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// Whether `pool` is this UMEM (a frame of it can be sent by
    /// descriptor alone).
    #[inline]
    pub(super) fn owns(&self, pool: &dyn FramePool) -> bool {
        std::ptr::addr_eq(pool as *const dyn FramePool, self as *const Umem)
    }

    /// The start of the frame holding UMEM address `addr`.
    #[inline]
    pub(super) fn frame_base(&self, addr: u64) -> u64 {
        addr & !u64::from(self.frame_size - 1)
    }

    /// Takes a free frame.
    #[inline]
    pub(super) fn take_free(&self) -> Option<FreeFrame> {
        self.free.pop().map(FreeFrame)
    }

    /// Puts a frame the caller took (or got back from the kernel) on the
    /// free list.
    #[inline]
    pub(super) fn put_free(&self, addr: u64) {
        // Cannot overflow: at most `count` addresses exist.
        let _ = self.free.push(self.frame_base(addr));
    }

    /// Puts a free frame back unused.
    #[inline]
    pub(super) fn untake(&self, f: FreeFrame) {
        self.put_free(f.0);
    }

    /// Copies `bytes` into free frame `f` at [`HEADROOM`]; returns the
    /// descriptor address of the copy, or gives the frame back when the
    /// bytes do not fit.
    #[inline]
    pub(super) fn copy_into(&self, f: FreeFrame, bytes: &[u8]) -> Result<u64, FreeFrame> {
        if HEADROOM + bytes.len() > self.frame_size as usize || f.0 >= self.len as u64 {
            return Err(f);
        }
        let at = f.0 as usize + HEADROOM;
        let dst = self.area.as_ptr().wrapping_add(at);
        // SAFETY: `at + len` lies inside frame `f`, inside the live area
        // (checked above; the area is not released while a socket — our
        // caller — is open); the caller took `f` off the free list, so
        // nobody else reads or writes it; `bytes` is another buffer.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
        Ok(at as u64)
    }

    /// Turns a received descriptor into a frame: `addr` is where the
    /// packet starts, `len` its length. `None` (and the frame, if `addr`
    /// names one, back on the free list) for a descriptor that does not
    /// fit its frame.
    #[inline]
    pub(super) fn frame_from_rx(&'static self, addr: u64, len: u32) -> Option<Frame> {
        let base = self.frame_base(addr);
        if base >= self.len as u64 {
            return None;
        }
        let head = (addr - base) as usize;
        if head + len as usize > self.frame_size as usize {
            self.put_free(base);
            return None;
        }
        let ptr = self.frame_ptr(base)?;
        // SAFETY: `base` is the start of a frame inside the live area; the
        // kernel handed it over on the RX ring, so it is in no fill ring,
        // no free list and no other Frame; this pool takes it back.
        let mut f = unsafe { Frame::from_raw(ptr, self.frame_size, self, base) };
        f.set_bounds(head, len as usize);
        Some(f)
    }

    /// The address of the frame at offset `base` (checked by the callers
    /// to lie inside the area).
    #[inline]
    fn frame_ptr(&self, base: u64) -> Option<NonNull<u8>> {
        NonNull::new(self.area.as_ptr().wrapping_add(base as usize))
    }

    /// A socket using this UMEM was created.
    pub(super) fn socket_opened(&self) {
        self.live_sockets.fetch_add(1, Ordering::AcqRel);
    }

    /// A socket using this UMEM was closed (its rings unmapped and its
    /// descriptor closed); `in_kernel` frames it had given the kernel are
    /// now unused.
    pub(super) fn socket_closed(&'static self, in_kernel: i64) {
        self.written_off.fetch_add(in_kernel, Ordering::AcqRel);
        if self.live_sockets.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.closing.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            self.try_release();
        }
    }

    /// Unmaps the area if no socket uses it (one was made for ports that
    /// then failed to open); otherwise the last socket to close does.
    pub(super) fn release_if_unused(&self) {
        if self.live_sockets.load(Ordering::Acquire) == 0 {
            self.closing.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            self.try_release();
        }
    }

    fn try_release(&self) {
        let home = self.free.len() as i64 + self.written_off.load(Ordering::Acquire);
        if home < i64::from(self.count) {
            return;
        }
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        let mapping = self
            .mapping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(mapping);
        tracing::debug!(umem = %self.name, "UMEM released");
    }
}

impl FramePool for Umem {
    fn alloc(&'static self) -> Option<Frame> {
        let Some(FreeFrame(base)) = self.take_free() else {
            self.alloc_failures.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        // Pairs with the fence in `socket_closed`: either the release
        // check sees this frame gone from the free list, or this sees
        // `closing` and puts it back (the memory may be about to go).
        fence(Ordering::SeqCst);
        if self.closing.load(Ordering::Relaxed) {
            // SAFETY: `base` was just taken off the free list and no Frame
            // holds it.
            unsafe { self.recycle(base) };
            return None;
        }
        let ptr = self.frame_ptr(base)?;
        // SAFETY: `base` came off the free list: a frame inside the live
        // area (not released while it is open) that nobody else holds.
        Some(unsafe { Frame::from_raw(ptr, self.frame_size, self, base) })
    }

    unsafe fn recycle(&self, cookie: u64) {
        if cookie >= self.len as u64 || cookie & u64::from(self.frame_size - 1) != 0 {
            debug_assert!(
                false,
                "cookie {cookie} is not a frame of UMEM {}",
                self.name
            );
            return;
        }
        // Cannot fail: at most `count` addresses exist.
        let _ = self.free.push(cookie);
        // Pairs with the fence in `socket_closed`: either that thread sees
        // this push, or this thread sees `closing`.
        fence(Ordering::SeqCst);
        if self.closing.load(Ordering::Relaxed) {
            self.try_release();
        }
    }

    fn frame_size(&self) -> usize {
        self.frame_size as usize
    }

    fn available(&self) -> usize {
        self.free.len()
    }

    fn name(&self) -> &str {
        &self.name
    }
}
