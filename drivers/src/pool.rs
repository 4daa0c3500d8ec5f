//! Frame pools: where buffers live when no packet is in them.
//!
//! A pool is created once and lives for the rest of the process (it is
//! `'static`), so a [`Frame`] can always find its way home with a plain
//! reference, from any thread, without a lookup or a reference count. The
//! buffer memory itself is given back by [`HeapPool::release`] once every
//! frame is home (a dataplane that stops, a test that ends).
//!
//! # Per-thread caches
//!
//! Like DPDK's per-lcore mempool caches: a thread that turns on a
//! [`ThreadCache`] (a dataplane worker) keeps up to [`CACHE_SIZE`] free
//! frames of each of a few pools to itself. `alloc` and the free of a frame
//! on that thread then touch only the thread's own array; the shared free
//! list is used in batches of [`CACHE_BATCH`] when the cache runs empty or
//! full. A worker that receives into a pool and sends (or drops) what it
//! received frees as many frames as it allocates, so in steady state it
//! never touches the shared list. Frames freed on other threads go to the
//! shared list directly. Frames in a cache count as in use
//! ([`FramePool::available`], [`HeapPool::release`]) until the cache is
//! turned off, which gives them all back.

use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam_queue::ArrayQueue;

use crate::{Frame, HEADROOM};

/// A source of frames. Implementations must accept frees from any thread
/// and never block, allocate or log in `alloc` and `free`.
pub trait FramePool: Send + Sync {
    /// A free frame, its packet empty and placed after the headroom.
    fn alloc(&'static self) -> Option<Frame>;
    /// Takes the buffer with this cookie back (a dropped frame, or one a
    /// driver got back from hardware after [`Frame::into_cookie`]).
    ///
    /// # Safety
    /// `cookie` must name a buffer of this pool that is out (handed out by
    /// `alloc` and not yet taken back) and that no live [`Frame`] holds
    /// any more: the cookie of a frame being dropped, or one returned by
    /// [`Frame::into_cookie`]. Each such cookie is recycled once. Taking a
    /// buffer back twice would let `alloc` hand it to two frames at once.
    #[allow(unsafe_code)]
    unsafe fn recycle(&self, cookie: u64);
    /// Size of each buffer.
    fn frame_size(&self) -> usize;
    /// Frames currently free.
    fn available(&self) -> usize;
    /// A name for logs and statistics.
    fn name(&self) -> &str;
}

/// Free frames a thread keeps for one pool, at most.
pub const CACHE_SIZE: usize = 512;
/// Frames moved between a thread's cache and the shared free list at once.
pub const CACHE_BATCH: usize = 64;
/// Pools one thread caches at once (further pools use the shared list).
const CACHE_POOLS: usize = 4;

/// One pool's frames in one thread's cache.
struct Local {
    /// The pool's address; 0: entry unused.
    pool: usize,
    len: usize,
    idx: [u32; CACHE_SIZE],
}

/// A thread's caches, when turned on.
struct Caches {
    locals: [Local; CACHE_POOLS],
}

thread_local! {
    static CACHES: RefCell<Option<Box<Caches>>> = const { RefCell::new(None) };
}

/// Turns on this thread's frame caches while it lives; dropping it gives
/// every cached frame back to its pool's shared free list. For threads
/// that allocate and free frames at a high rate (a dataplane worker).
#[must_use = "the cache is turned off when this is dropped"]
pub struct ThreadCache(std::marker::PhantomData<*const ()>);

impl ThreadCache {
    /// Turns the calling thread's caches on (allocates them once).
    pub fn enable() -> ThreadCache {
        CACHES.with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                *c = Some(Box::new(Caches {
                    locals: std::array::from_fn(|_| Local {
                        pool: 0,
                        len: 0,
                        idx: [0; CACHE_SIZE],
                    }),
                }));
            }
        });
        ThreadCache(std::marker::PhantomData)
    }
}

impl Drop for ThreadCache {
    fn drop(&mut self) {
        let caches = CACHES.with(|c| c.borrow_mut().take());
        let Some(caches) = caches else { return };
        for l in caches.locals.iter().filter(|l| l.pool != 0) {
            // SAFETY of the cast: `pool` was taken from a `&'static
            // HeapPool` in `with_local`, and pools are never deallocated.
            let pool = pool_at(l.pool);
            for &i in &l.idx[..l.len] {
                let _ = pool.free.push(i);
            }
        }
    }
}

/// The pool at an address recorded by `with_local`.
fn pool_at(addr: usize) -> &'static HeapPool {
    // Pools are leaked boxes (`HeapPool::new`), never freed: an address
    // recorded from a `&'static HeapPool` stays valid.
    #[allow(unsafe_code)]
    // SAFETY: as above; `addr` came from a `&'static HeapPool`.
    unsafe {
        &*(addr as *const HeapPool)
    }
}

/// A pool of equal-sized buffers in one heap allocation, with a lock-free
/// free list (crossbeam's `ArrayQueue` of frame indices). Used by the
/// memory, null and pcap ports, and as the copy target of any port.
pub struct HeapPool {
    name: String,
    frame_size: usize,
    count: usize,
    storage: NonNull<u8>,
    free: ArrayQueue<u32>,
    released: AtomicBool,
    alloc_failures: AtomicU64,
    /// The allocation, kept to free it in `release`.
    layout: std::alloc::Layout,
    release_lock: Mutex<()>,
}

// SAFETY: the storage is only reached through frames, each the unique owner
// of its buffer; the free list is a thread-safe queue.
#[allow(unsafe_code)]
unsafe impl Send for HeapPool {}
// SAFETY: as above; all shared state is atomic or behind the queue.
#[allow(unsafe_code)]
unsafe impl Sync for HeapPool {}

/// Why a pool cannot be created or released.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Frame size or count out of range.
    #[error("pool {name}: {reason}")]
    Invalid {
        /// Pool name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Frames are still out (in rings, bursts or other threads).
    #[error("pool {name}: {out} frames are still in use")]
    InUse {
        /// Pool name.
        name: String,
        /// Frames not home.
        out: usize,
    },
}

impl HeapPool {
    /// Creates a pool of `count` buffers of `frame_size` bytes each
    /// (`frame_size` must leave room for [`HEADROOM`] plus a 64-byte packet).
    ///
    /// # Errors
    /// [`PoolError::Invalid`] for sizes out of range.
    #[allow(unsafe_code)]
    pub fn new(
        name: &str,
        count: usize,
        frame_size: usize,
    ) -> Result<&'static HeapPool, PoolError> {
        let bad = |reason: &str| PoolError::Invalid {
            name: name.into(),
            reason: reason.into(),
        };
        if !(HEADROOM + 64..=65536).contains(&frame_size) {
            return Err(bad(
                "frame size must be between HEADROOM + 64 and 65536 bytes",
            ));
        }
        if count == 0 || count > (1 << 24) {
            return Err(bad("frame count must be between 1 and 16M"));
        }
        let frame_size = frame_size.next_multiple_of(64);
        let layout = std::alloc::Layout::from_size_align(frame_size * count, 4096)
            .map_err(|_| bad("pool too large"))?;
        // SAFETY: the layout has a non-zero size (count and frame_size > 0).
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let storage = NonNull::new(p).ok_or_else(|| bad("out of memory"))?;
        let free = ArrayQueue::new(count);
        for i in 0..count as u32 {
            let _ = free.push(i);
        }
        Ok(Box::leak(Box::new(HeapPool {
            name: name.into(),
            frame_size,
            count,
            storage,
            free,
            released: AtomicBool::new(false),
            alloc_failures: AtomicU64::new(0),
            layout,
            release_lock: Mutex::new(()),
        })))
    }

    /// Times `alloc` found the pool empty.
    pub fn alloc_failures(&self) -> u64 {
        self.alloc_failures.load(Ordering::Relaxed)
    }

    /// Frees the buffer memory. Only when every frame is home; afterwards
    /// the pool hands out nothing.
    ///
    /// # Errors
    /// [`PoolError::InUse`] naming how many frames are still out.
    #[allow(unsafe_code)]
    pub fn release(&'static self) -> Result<(), PoolError> {
        let _guard = self.release_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.released.load(Ordering::Acquire) {
            return Ok(());
        }
        // Take every index off the free list before deciding. Checking the
        // list's length first and emptying it afterwards would let an
        // `alloc` on another thread take a buffer in between, and that
        // frame would then point into freed memory. Holding all `count`
        // indices proves no frame exists and none can be made. (An `alloc`
        // racing with a refused release may fail spuriously meanwhile.)
        let mut held = Vec::with_capacity(self.count);
        while let Some(i) = self.free.pop() {
            held.push(i);
        }
        if held.len() != self.count {
            let out = self.count - held.len();
            for i in held {
                let _ = self.free.push(i);
            }
            return Err(PoolError::InUse {
                name: self.name.clone(),
                out,
            });
        }
        self.released.store(true, Ordering::Release);
        // SAFETY: this thread holds every buffer index and the free list is
        // empty, so no Frame points into the storage and none can be made
        // again.
        unsafe { std::alloc::dealloc(self.storage.as_ptr(), self.layout) };
        Ok(())
    }
}

impl HeapPool {
    /// Runs `f` on this thread's cache of this pool, when the thread has
    /// caches on and one is (or can be made) this pool's; `None` otherwise.
    #[inline]
    fn with_local<R>(&'static self, f: impl FnOnce(&mut Local) -> R) -> Option<R> {
        let me = self as *const HeapPool as usize;
        CACHES
            .try_with(|c| {
                let mut c = c.try_borrow_mut().ok()?;
                let caches = c.as_mut()?;
                let pos = caches
                    .locals
                    .iter()
                    .position(|l| l.pool == me)
                    .or_else(|| caches.locals.iter().position(|l| l.pool == 0))?;
                let l = &mut caches.locals[pos];
                l.pool = me;
                Some(f(l))
            })
            .ok()
            .flatten()
    }

    /// A free index: from this thread's cache (refilled from the shared
    /// list in a batch when empty), or from the shared list.
    #[inline]
    fn take(&'static self) -> Option<u32> {
        let cached = self.with_local(|l| {
            if l.len == 0 {
                while l.len < CACHE_BATCH {
                    let Some(i) = self.free.pop() else { break };
                    l.idx[l.len] = i;
                    l.len += 1;
                }
            }
            if l.len == 0 {
                return None;
            }
            l.len -= 1;
            Some(l.idx[l.len])
        });
        match cached {
            Some(got) => got,
            None => self.free.pop(),
        }
    }

    /// Gives an index back: to this thread's cache (spilling a batch to
    /// the shared list when full), or to the shared list.
    #[inline]
    fn give(&self, i: u32) {
        // `recycle` takes `&self`; every pool is `'static` (see `new`).
        let me: &'static HeapPool = pool_at(self as *const HeapPool as usize);
        let cached = me.with_local(|l| {
            if l.len == CACHE_SIZE {
                for _ in 0..CACHE_BATCH {
                    l.len -= 1;
                    let _ = me.free.push(l.idx[l.len]);
                }
            }
            l.idx[l.len] = i;
            l.len += 1;
        });
        if cached.is_none() {
            // Cannot fail: at most `count` indices exist.
            let _ = self.free.push(i);
        }
    }
}

impl FramePool for HeapPool {
    #[allow(unsafe_code)]
    fn alloc(&'static self) -> Option<Frame> {
        let Some(i) = self.take() else {
            self.alloc_failures.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        // SAFETY: `i < count`, so the buffer lies inside the storage.
        let base = unsafe { self.storage.add(i as usize * self.frame_size) };
        // SAFETY: the buffer is valid, owned by this pool, and was on the
        // free list, so no other frame has it; the cookie is its index.
        Some(unsafe { Frame::from_raw(base, self.frame_size as u32, self, u64::from(i)) })
    }

    #[allow(unsafe_code)]
    unsafe fn recycle(&self, cookie: u64) {
        // A cookie out of range would make a later `alloc` point outside the
        // storage: refuse it in every build, not only under debug_assert.
        if cookie >= self.count as u64 {
            debug_assert!(
                false,
                "cookie {cookie} is not a frame of pool {}",
                self.name
            );
            return;
        }
        self.give(cookie as u32);
    }

    fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Frames on the shared free list (frames in threads' caches count as
    /// in use until the caches are turned off).
    fn available(&self) -> usize {
        self.free.len()
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_and_go_across_threads() {
        let pool = HeapPool::new("t", 64, 2048).unwrap();
        let mut frames: Vec<Frame> = (0..64).map(|_| pool.alloc().unwrap()).collect();
        assert!(pool.alloc().is_none());
        assert_eq!(pool.alloc_failures(), 1);
        for (i, f) in frames.iter_mut().enumerate() {
            assert!(f.fill(&[i as u8; 100]));
            assert_eq!(f.head(), HEADROOM);
        }
        let h = std::thread::spawn(move || {
            for f in frames {
                assert_eq!(f.data()[0] as usize, f.cookie as usize % 256);
                f.free();
            }
        });
        h.join().unwrap();
        assert_eq!(pool.available(), 64);
        pool.release().unwrap();
        assert!(pool.alloc().is_none());
    }

    #[test]
    fn release_refuses_while_frames_are_out() {
        let pool = HeapPool::new("t2", 4, 1024).unwrap();
        let f = pool.alloc().unwrap();
        assert!(matches!(
            pool.release(),
            Err(PoolError::InUse { out: 1, .. })
        ));
        f.free();
        pool.release().unwrap();
    }

    /// A caching thread: never two frames on one buffer, spills and
    /// refills in batches, frames freed on other threads go home, and
    /// turning the cache off gives everything back.
    #[test]
    fn thread_cache_keeps_frames_unique_and_gives_them_back() {
        const N: usize = 3 * CACHE_SIZE;
        let pool = HeapPool::new("cache", N, 1024).unwrap();
        let cache = ThreadCache::enable();
        // All N frames, each on its own buffer.
        let alloc_all = || -> Vec<Frame> {
            let frames: Vec<Frame> = (0..N).map(|_| pool.alloc().unwrap()).collect();
            let mut seen = std::collections::HashSet::new();
            for f in &frames {
                assert!(
                    seen.insert(f.cookie),
                    "buffer {} handed out twice",
                    f.cookie
                );
            }
            frames
        };
        let frames = alloc_all();
        assert!(pool.alloc().is_none(), "all {N} are out");
        assert_eq!(pool.available(), 0);
        // Free them all here: the cache fills, then spills batches.
        drop(frames);
        let shared = pool.available();
        assert!(
            (N - CACHE_SIZE..=N - CACHE_SIZE + CACHE_BATCH).contains(&shared),
            "{shared} on the shared list, the rest cached"
        );
        // Allocate again: the cached ones first, then batches from the
        // shared list; still never a duplicate.
        let frames = alloc_all();
        // Freed on another thread (no cache there): straight home.
        std::thread::spawn(move || drop(frames)).join().unwrap();
        assert_eq!(pool.available(), N);
        let f = pool.alloc().unwrap();
        drop(f);
        assert!(pool.available() < N, "the cache refilled a batch");
        assert!(matches!(pool.release(), Err(PoolError::InUse { .. })));
        drop(cache);
        assert_eq!(pool.available(), N, "turned off: every frame is home");
        pool.release().unwrap();
    }

    #[test]
    fn bad_sizes_are_named() {
        assert!(HeapPool::new("x", 0, 2048).is_err());
        let e = HeapPool::new("x", 4, 100).err().unwrap().to_string();
        assert!(e.contains("frame size"), "{e}");
    }
}
