//! mbuf pools as [`FramePool`]s, and the mapping between an `rte_mbuf` and
//! a [`Frame`].
//!
//! # Headroom
//!
//! Sluice promises [`HEADROOM`] (256) bytes in front of every packet
//! (`XDP_PACKET_HEADROOM`, what `bpf_xdp_adjust_head` may use); DPDK's
//! `RTE_PKTMBUF_HEADROOM` is a build-time 128, and PMDs place received
//! packets at `buf_addr + data_off` with `data_off` reset to it. An mbuf
//! is laid out as the `rte_mbuf` header, then the pool's private area,
//! then the data buffer at `buf_addr`. Sluice's pools have a private area
//! of [`PRIV_SIZE`] (128) bytes that nothing else uses, so the bytes right
//! before `buf_addr` are Sluice's: a frame's buffer starts [`PRIV_SIZE`]
//! bytes before `buf_addr`, and a packet at `data_off` = 128 sits 256
//! bytes into the frame.
//!
//! On TX the packet start must be inside the data buffer again (`data_off`
//! is unsigned). When a program moved it into the private area (`head` <
//! [`PRIV_SIZE`]), the packet is moved forward within the same buffer
//! ([`to_mbuf`]), to `data_off` = `RTE_PKTMBUF_HEADROOM` when it fits: one
//! `memmove` of the packet, only for frames whose program pushed more than
//! 128 bytes of headers.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

use dpdk_sys as sys;

use crate::{Frame, FramePool, HEADROOM};

/// Bytes of Sluice's pools' mbuf private area, used as extra headroom.
pub const PRIV_SIZE: u16 = (HEADROOM - sys::RTE_PKTMBUF_HEADROOM as usize) as u16;

const _: () = assert!((PRIV_SIZE as u32).is_multiple_of(sys::RTE_MBUF_PRIV_ALIGN));
const _: () = assert!(PRIV_SIZE as u32 + sys::RTE_PKTMBUF_HEADROOM == HEADROOM as u32);

/// Data room of each mbuf: `RTE_MBUF_DEFAULT_BUF_SIZE` (2048 bytes of
/// packet after the 128 of headroom).
pub const DATA_ROOM: u16 = (sys::RTE_MBUF_DEFAULT_DATAROOM + sys::RTE_PKTMBUF_HEADROOM) as u16;

/// Most pools a process makes.
const MAX_POOLS: usize = 256;

/// Every pool made, so that a frame or an mbuf can be recognised as one of
/// Sluice's mbufs (lock-free reads; written under `CREATE`).
static POOLS: [AtomicPtr<MbufPool>; MAX_POOLS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_POOLS];
static NPOOLS: AtomicUsize = AtomicUsize::new(0);
static CREATE: Mutex<()> = Mutex::new(());

/// An `rte_mempool` of packet mbufs with Sluice's private area (see the
/// module docs). Frames' cookies are `rte_mbuf` pointers; `alloc` is
/// `rte_pktmbuf_alloc`, `recycle` is `rte_pktmbuf_free` (which returns
/// the mbuf to whichever pool it belongs to).
pub struct MbufPool {
    mp: NonNull<sys::rte_mempool>,
    name: String,
    count: u32,
}

// SAFETY: an rte_mempool is made for concurrent use from many threads
// (its default ops are the multi-producer/multi-consumer ring); the
// pointer is never freed.
unsafe impl Send for MbufPool {}
// SAFETY: as above.
unsafe impl Sync for MbufPool {}

impl std::fmt::Debug for MbufPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MbufPool")
            .field("name", &self.name)
            .field("count", &self.count)
            .finish()
    }
}

impl MbufPool {
    /// Creates a pool of `count` mbufs with a per-lcore cache of `cache`,
    /// on NUMA socket `socket`. It lives for the rest of the process.
    ///
    /// # Errors
    /// `rte_pktmbuf_pool_create`'s error, as text.
    pub fn create(
        name: &str,
        count: u32,
        cache: u32,
        socket: i32,
    ) -> Result<&'static MbufPool, String> {
        let _guard = CREATE.lock().unwrap_or_else(|e| e.into_inner());
        let slot = NPOOLS.load(Ordering::Acquire);
        if slot >= MAX_POOLS {
            return Err(format!("this process already made {MAX_POOLS} mbuf pools"));
        }
        // Mempool names are short (RTE_MEMPOOL_NAMESIZE): a serial number.
        let c_name = CString::new(format!("sluice{slot}")).expect("no NUL in a number");
        // SAFETY: a valid name; the other arguments are plain values.
        let mp = unsafe {
            sys::rte_pktmbuf_pool_create(
                c_name.as_ptr(),
                count,
                cache,
                PRIV_SIZE,
                DATA_ROOM,
                socket,
            )
        };
        let Some(mp) = NonNull::new(mp) else {
            let e = super::eal::errno();
            return Err(format!(
                "cannot create a pool of {count} mbufs ({} MiB): {}{}",
                (u64::from(count) * (256 + u64::from(PRIV_SIZE) + u64::from(DATA_ROOM))) >> 20,
                super::eal::errno_text(e),
                if e == libc::ENOMEM || e == libc::ENOBUFS {
                    " (EAL's memory, -m, is used up: set SLUICE_DPDK_EAL with a larger -m, or ask for fewer mbufs=)"
                } else {
                    ""
                }
            ));
        };
        let pool: &'static MbufPool = Box::leak(Box::new(MbufPool {
            mp,
            name: name.to_string(),
            count,
        }));
        POOLS[slot].store(pool as *const MbufPool as *mut MbufPool, Ordering::Release);
        NPOOLS.store(slot + 1, Ordering::Release);
        Ok(pool)
    }

    /// The `rte_mempool`.
    pub fn raw(&self) -> *mut sys::rte_mempool {
        self.mp.as_ptr()
    }

    /// Mbufs in the pool.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The Sluice pool an mempool belongs to (`None`: a pool Sluice did not
    /// make, whose mbufs have no private area to use as headroom).
    #[inline]
    pub fn of_mempool(mp: *mut sys::rte_mempool) -> Option<&'static MbufPool> {
        let n = NPOOLS.load(Ordering::Acquire);
        POOLS[..n].iter().find_map(|p| {
            let p = p.load(Ordering::Acquire);
            // SAFETY: non-null entries are leaked `&'static MbufPool`s.
            let pool = unsafe { p.as_ref() }?;
            (pool.mp.as_ptr() == mp).then_some(pool)
        })
    }

    /// Whether `pool` is one of Sluice's mbuf pools (a frame of it is an
    /// mbuf, its cookie the `rte_mbuf` pointer).
    #[inline]
    pub fn is_mbuf_pool(pool: &dyn FramePool) -> bool {
        let addr = pool as *const dyn FramePool as *const u8;
        let n = NPOOLS.load(Ordering::Acquire);
        POOLS[..n]
            .iter()
            .any(|p| std::ptr::eq(p.load(Ordering::Relaxed) as *const u8, addr))
    }
}

impl FramePool for MbufPool {
    #[inline]
    fn alloc(&'static self) -> Option<Frame> {
        // SAFETY: a valid mempool of packet mbufs.
        let m = unsafe { sys::sluice_rte_pktmbuf_alloc(self.mp.as_ptr()) };
        let m = NonNull::new(m)?;
        // SAFETY: a freshly allocated mbuf of this pool, owned by nobody else.
        Some(unsafe { to_frame(self, m) })
    }

    unsafe fn recycle(&self, cookie: u64) {
        // SAFETY: the caller passes the cookie of an mbuf that is out and
        // owned by no frame (trait contract); rte_pktmbuf_free returns it
        // to its own pool.
        unsafe { sys::sluice_rte_pktmbuf_free(cookie as usize as *mut sys::rte_mbuf) };
    }

    fn frame_size(&self) -> usize {
        usize::from(DATA_ROOM) + usize::from(PRIV_SIZE)
    }

    fn available(&self) -> usize {
        // SAFETY: a valid mempool; a racy count is fine for statistics.
        unsafe { sys::rte_mempool_avail_count(self.mp.as_ptr()) as usize }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// A frame for an mbuf of one of Sluice's pools: the buffer starts
/// [`PRIV_SIZE`] bytes before `buf_addr`; the packet is at `data_off +
/// PRIV_SIZE`, `data_len` long.
///
/// # Safety
/// `m` must be a single-segment mbuf of `pool` (so it has the private
/// area), owned by the caller, which hands that ownership to the frame.
#[inline]
pub unsafe fn to_frame(pool: &'static MbufPool, m: NonNull<sys::rte_mbuf>) -> Frame {
    // SAFETY: `m` is a valid mbuf (contract).
    let mb = unsafe { m.as_ref() };
    let priv_ = usize::from(PRIV_SIZE);
    let base = (mb.buf_addr as *mut u8).wrapping_sub(priv_);
    // buf_addr of a pool-made mbuf is never null (it follows the header).
    let Some(base) = NonNull::new(base) else {
        unreachable!("an mbuf without a buffer")
    };
    let cap = u32::from(mb.buf_len) + u32::from(PRIV_SIZE);
    // SAFETY: the private area (PRIV_SIZE bytes, Sluice's pools only) lies
    // right before buf_addr and the data buffer is buf_len long, so
    // base..base+cap is this mbuf's memory, owned by the caller; the
    // cookie is the mbuf, which `recycle` frees.
    let mut f = unsafe { Frame::from_raw(base, cap, pool, m.as_ptr() as usize as u64) };
    f.set_bounds(usize::from(mb.data_off) + priv_, usize::from(mb.data_len));
    f
}

/// What a frame needs to become an mbuf for TX.
pub enum TxPrep {
    /// Ready: the frame's own mbuf, fields set.
    Ready(*mut sys::rte_mbuf),
    /// The packet does not fit the mbuf's data buffer.
    TooBig,
}

/// Prepares a frame of one of Sluice's pools for TX: sets `data_off`,
/// `data_len`, `pkt_len` from the frame, moving the packet forward when a
/// program moved its start into the private area (see the module docs;
/// the frame's bounds follow the move). Returns whether it moved.
///
/// # Safety
/// `f` must be a frame of an [`MbufPool`] (its cookie an mbuf made by
/// [`to_frame`]).
#[inline]
pub unsafe fn to_mbuf(f: &mut Frame, moved: &mut u64) -> TxPrep {
    let m = f.cookie as usize as *mut sys::rte_mbuf;
    let priv_ = usize::from(PRIV_SIZE);
    let (mut head, len) = (f.head(), f.len());
    // The data buffer is the frame's capacity less the private area.
    let buf_len = f.capacity() - priv_;
    if len > buf_len {
        return TxPrep::TooBig;
    }
    if head < priv_ {
        let off = (sys::RTE_PKTMBUF_HEADROOM as usize).min(buf_len - len);
        let to = priv_ + off;
        f.buffer_mut().copy_within(head..head + len, to);
        f.set_bounds(to, len);
        head = to;
        *moved += 1;
    }
    // SAFETY: the frame owns the mbuf (its cookie), nobody else touches it.
    let mb = unsafe { &mut *m };
    // head - priv_ + len <= buf_len (frame bounds), all below 64 KiB.
    mb.data_off = (head - priv_) as u16;
    mb.data_len = len as u16;
    mb.pkt_len = len as u32;
    mb.ol_flags = 0;
    TxPrep::Ready(m)
}
