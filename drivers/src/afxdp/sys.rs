//! The one place where the AF_XDP back-end talks to the kernel.
//!
//! Every system call the driver makes — `bpf(2)` for the XSKMAP, the
//! program and its link, the AF_XDP socket calls (`socket`, `setsockopt`,
//! `getsockopt`, `mmap`, `bind`, `sendto`, `recvfrom`), the interface
//! look-ups (`if_nametoindex`, `SIOCETHTOOL`, `SIOCGIFHWADDR`) and the
//! anonymous mapping that holds the UMEM — goes through the [`Sys`] trait.
//! [`LinuxSys`] makes the real calls; tests put a fake in its place
//! ([`super::AfXdpPort::open_with`]) so that setup and error paths run
//! without root and without a kernel that has AF_XDP (tier 3 of the test
//! plan), as aya's `sys` module does for its loader.
//!
//! The structures are the kernel's UAPI (`<linux/if_xdp.h>`,
//! `<linux/bpf.h>`), written out here with `#[repr(C)]` so their sizes are
//! the ones the kernel checks, whatever the `libc` crate's version carries.
//!
//! File descriptors come back as [`Fd`], which closes through the same
//! [`Sys`] when dropped, so a fake never has a real descriptor closed under
//! it. Memory the kernel maps for the rings comes back as a [`Mapping`],
//! unmapped the same way.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::Arc;

/// `struct xdp_ring_offset`: where a ring's producer, consumer, descriptors
/// and flags lie in its mapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingOffset {
    /// Offset of the producer index (`u32`).
    pub producer: u64,
    /// Offset of the consumer index (`u32`).
    pub consumer: u64,
    /// Offset of the descriptor array.
    pub desc: u64,
    /// Offset of the flags word (`u32`, `XDP_RING_NEED_WAKEUP`).
    pub flags: u64,
}

/// `struct xdp_mmap_offsets` (`XDP_MMAP_OFFSETS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmapOffsets {
    /// RX ring.
    pub rx: RingOffset,
    /// TX ring.
    pub tx: RingOffset,
    /// Fill ring.
    pub fill: RingOffset,
    /// Completion ring.
    pub completion: RingOffset,
}

/// `struct xdp_umem_reg` (`XDP_UMEM_REG`), the full 32-byte form.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UmemReg {
    /// Start of the area (user address).
    pub addr: u64,
    /// Length of the area.
    pub len: u64,
    /// Frame (chunk) size.
    pub chunk_size: u32,
    /// Bytes the kernel leaves free at the start of every frame, in
    /// addition to `XDP_PACKET_HEADROOM`.
    pub headroom: u32,
    /// `XDP_UMEM_UNALIGNED_CHUNK_FLAG` and friends.
    pub flags: u32,
    /// Bytes of TX metadata in front of each TX packet (0: none).
    pub tx_metadata_len: u32,
}

/// `struct xdp_statistics` (`XDP_STATISTICS`): the kernel's drop counters
/// for one socket, totals since it was created.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStatistics {
    /// Dropped for other reasons (no buffer in copy mode, too long, ...).
    pub rx_dropped: u64,
    /// RX descriptors the kernel found invalid.
    pub rx_invalid_descs: u64,
    /// TX descriptors the kernel found invalid (and dropped).
    pub tx_invalid_descs: u64,
    /// Dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the TX ring empty when asked to send.
    pub tx_ring_empty_descs: u64,
}

impl std::ops::AddAssign for XdpStatistics {
    fn add_assign(&mut self, o: XdpStatistics) {
        self.rx_dropped += o.rx_dropped;
        self.rx_invalid_descs += o.rx_invalid_descs;
        self.tx_invalid_descs += o.tx_invalid_descs;
        self.rx_ring_full += o.rx_ring_full;
        self.rx_fill_ring_empty_descs += o.rx_fill_ring_empty_descs;
        self.tx_ring_empty_descs += o.tx_ring_empty_descs;
    }
}

/// `struct sockaddr_xdp`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockaddrXdp {
    /// `AF_XDP`.
    pub family: u16,
    /// `XDP_SHARED_UMEM`, `XDP_COPY`, `XDP_ZEROCOPY`, `XDP_USE_NEED_WAKEUP`.
    pub flags: u16,
    /// Interface index.
    pub ifindex: u32,
    /// Queue of the interface.
    pub queue_id: u32,
    /// With `XDP_SHARED_UMEM`: the socket that registered the UMEM.
    pub shared_umem_fd: u32,
}

/// `struct xdp_desc`: one RX or TX descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpDesc {
    /// UMEM address of the first packet byte.
    pub addr: u64,
    /// Packet length.
    pub len: u32,
    /// Options (0; `XDP_PKT_CONTD` for multi-buffer, not used).
    pub options: u32,
}

/// Address family of XDP sockets.
pub const AF_XDP: i32 = 44;
/// `SOL_XDP`.
pub const SOL_XDP: i32 = 283;
/// `XDP_MMAP_OFFSETS`.
pub const XDP_MMAP_OFFSETS: i32 = 1;
/// `XDP_RX_RING`.
pub const XDP_RX_RING: i32 = 2;
/// `XDP_TX_RING`.
pub const XDP_TX_RING: i32 = 3;
/// `XDP_UMEM_REG`.
pub const XDP_UMEM_REG: i32 = 4;
/// `XDP_UMEM_FILL_RING`.
pub const XDP_UMEM_FILL_RING: i32 = 5;
/// `XDP_UMEM_COMPLETION_RING`.
pub const XDP_UMEM_COMPLETION_RING: i32 = 6;
/// `XDP_STATISTICS`.
pub const XDP_STATISTICS: i32 = 7;
/// `XDP_OPTIONS`.
pub const XDP_OPTIONS: i32 = 8;
/// `XDP_OPTIONS_ZEROCOPY`: the socket is bound in zero-copy mode.
pub const XDP_OPTIONS_ZEROCOPY: u32 = 1;
/// Bind flag: share the UMEM of `shared_umem_fd`.
pub const XDP_SHARED_UMEM: u16 = 1 << 0;
/// Bind flag: force copy mode.
pub const XDP_COPY: u16 = 1 << 1;
/// Bind flag: force zero-copy mode.
pub const XDP_ZEROCOPY: u16 = 1 << 2;
/// Bind flag: the kernel says through the rings' flags when it needs a
/// syscall to make progress.
pub const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;
/// Ring flag: the kernel needs a wake-up (`sendto` for TX, `recvfrom` or
/// `poll` for the fill ring).
pub const XDP_RING_NEED_WAKEUP: u32 = 1;
/// `XDP_PACKET_HEADROOM`: what the kernel leaves in front of every packet
/// it writes into a UMEM frame.
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// `XDP_FLAGS_UPDATE_IF_NOEXIST`.
pub const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
/// `XDP_FLAGS_SKB_MODE`: generic XDP.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native (driver) XDP.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `BPF_MAP_TYPE_XSKMAP`.
pub const BPF_MAP_TYPE_XSKMAP: u32 = 17;
/// `BPF_PROG_TYPE_XDP`.
pub const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_XDP` attach type.
pub const BPF_XDP: u32 = 37;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;

/// Which of a socket's four rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RingKind {
    /// RX descriptors, kernel to user.
    Rx,
    /// TX descriptors, user to kernel.
    Tx,
    /// Free frames, user to kernel.
    Fill,
    /// Sent frames, kernel to user.
    Completion,
}

impl RingKind {
    /// The socket option that sizes this ring.
    pub fn sockopt(self) -> i32 {
        match self {
            RingKind::Rx => XDP_RX_RING,
            RingKind::Tx => XDP_TX_RING,
            RingKind::Fill => XDP_UMEM_FILL_RING,
            RingKind::Completion => XDP_UMEM_COMPLETION_RING,
        }
    }

    /// The `mmap` offset (`XDP_PGOFF_*`) of this ring.
    pub fn pgoff(self) -> i64 {
        match self {
            RingKind::Rx => 0,
            RingKind::Tx => 0x8000_0000,
            RingKind::Fill => 0x1_0000_0000,
            RingKind::Completion => 0x1_8000_0000,
        }
    }

    /// Bytes of one entry: a descriptor for RX/TX, an address otherwise.
    pub fn entry_size(self) -> usize {
        match self {
            RingKind::Rx | RingKind::Tx => std::mem::size_of::<XdpDesc>(),
            RingKind::Fill | RingKind::Completion => std::mem::size_of::<u64>(),
        }
    }

    /// The ring's offsets within `o`.
    pub fn offsets(self, o: &MmapOffsets) -> RingOffset {
        match self {
            RingKind::Rx => o.rx,
            RingKind::Tx => o.tx,
            RingKind::Fill => o.fill,
            RingKind::Completion => o.completion,
        }
    }
}

/// Every kernel call of the AF_XDP back-end. Implementations must be
/// usable from any thread.
///
/// Memory-returning methods hand out raw pointers; the driver wraps them in
/// [`Mapping`]s and touches them only through its ring and UMEM code.
pub trait Sys: Send + Sync + fmt::Debug {
    /// `if_nametoindex`.
    ///
    /// # Errors
    /// `ENODEV` when there is no such interface.
    fn if_nametoindex(&self, name: &str) -> io::Result<u32>;
    /// RX queues of the interface (`ETHTOOL_GCHANNELS`: RX plus combined
    /// channels), or `None` when the driver does not report channels.
    ///
    /// # Errors
    /// The ioctl's error other than "not supported".
    fn rx_queues(&self, name: &str) -> io::Result<Option<u32>>;
    /// The interface's MAC address (`SIOCGIFHWADDR`).
    ///
    /// # Errors
    /// The ioctl's error.
    fn mac_address(&self, name: &str) -> io::Result<[u8; 6]>;

    /// `socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0)`.
    ///
    /// # Errors
    /// `EPERM` without `CAP_NET_RAW`, `EAFNOSUPPORT` without AF_XDP.
    fn xsk_socket(&self) -> io::Result<RawFd>;
    /// `close`.
    fn close(&self, fd: RawFd);
    /// `setsockopt(fd, SOL_XDP, XDP_UMEM_REG, reg)`.
    ///
    /// # Errors
    /// The kernel's refusal (`EINVAL`, `ENOBUFS`/`ENOMEM` past the
    /// locked-memory limit, `EBUSY`).
    fn umem_register(&self, fd: RawFd, reg: &UmemReg) -> io::Result<()>;
    /// Sizes one ring.
    ///
    /// # Errors
    /// `EINVAL` for a size that is not a power of two.
    fn set_ring_size(&self, fd: RawFd, ring: RingKind, entries: u32) -> io::Result<()>;
    /// `getsockopt(XDP_MMAP_OFFSETS)`.
    ///
    /// # Errors
    /// The kernel's error.
    fn mmap_offsets(&self, fd: RawFd) -> io::Result<MmapOffsets>;
    /// Maps `len` bytes of a ring (`MAP_SHARED | MAP_POPULATE`).
    ///
    /// # Errors
    /// The kernel's error.
    fn mmap_ring(&self, fd: RawFd, ring: RingKind, len: usize) -> io::Result<NonNull<u8>>;
    /// Maps `len` bytes of anonymous, zeroed, page-aligned memory (the UMEM).
    ///
    /// # Errors
    /// `ENOMEM`.
    fn mmap_anonymous(&self, len: usize) -> io::Result<NonNull<u8>>;
    /// Unmaps what one of the `mmap_*` calls returned.
    fn munmap(&self, addr: NonNull<u8>, len: usize);
    /// `bind`.
    ///
    /// # Errors
    /// The kernel's refusal (`EINVAL`: queue out of range, `EBUSY`: queue
    /// taken, `EOPNOTSUPP`: zero-copy unsupported...).
    fn bind(&self, fd: RawFd, addr: &SockaddrXdp) -> io::Result<()>;
    /// `getsockopt(XDP_OPTIONS)`: [`XDP_OPTIONS_ZEROCOPY`] when bound
    /// zero-copy.
    ///
    /// # Errors
    /// The kernel's error.
    fn xdp_options(&self, fd: RawFd) -> io::Result<u32>;
    /// `getsockopt(XDP_STATISTICS)`.
    ///
    /// # Errors
    /// The kernel's error.
    fn statistics(&self, fd: RawFd) -> io::Result<XdpStatistics>;
    /// `sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0)`: makes the kernel
    /// process the TX ring.
    ///
    /// # Errors
    /// `EAGAIN`, `EBUSY`, `ENOBUFS` (try later) or a real error.
    fn kick_tx(&self, fd: RawFd) -> io::Result<()>;
    /// `recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL)`: makes the kernel
    /// look at the fill ring again.
    ///
    /// # Errors
    /// `EAGAIN` or a real error.
    fn kick_rx(&self, fd: RawFd) -> io::Result<()>;

    /// `BPF_MAP_CREATE` of an XSKMAP with `entries` slots.
    ///
    /// # Errors
    /// `EPERM` without `CAP_BPF`/`CAP_SYS_ADMIN`.
    fn xskmap_create(&self, name: &str, entries: u32) -> io::Result<RawFd>;
    /// `BPF_MAP_UPDATE_ELEM`: `map[key] = value` for a map of `u32`s.
    ///
    /// # Errors
    /// The kernel's refusal.
    fn map_update_u32(&self, map_fd: RawFd, key: u32, value: u32) -> io::Result<()>;
    /// `BPF_PROG_LOAD` of an XDP program (`expected_attach_type` `BPF_XDP`).
    /// The verifier's log goes to `log` when loading fails.
    ///
    /// # Errors
    /// The kernel's refusal.
    fn prog_load_xdp(
        &self,
        name: &str,
        insns: &[u64],
        license: &str,
        log: &mut [u8],
    ) -> io::Result<RawFd>;
    /// `BPF_LINK_CREATE` attaching an XDP program to an interface with
    /// `XDP_FLAGS_*` `flags`.
    ///
    /// # Errors
    /// `EBUSY`/`EEXIST` when the interface has a program, `EOPNOTSUPP`
    /// or `EINVAL` when the mode is unsupported.
    fn xdp_link_create(&self, prog_fd: RawFd, ifindex: u32, flags: u32) -> io::Result<RawFd>;
}

/// A file descriptor that closes through its [`Sys`] when dropped.
pub struct Fd {
    fd: RawFd,
    sys: Arc<dyn Sys>,
}

impl fmt::Debug for Fd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fd({})", self.fd)
    }
}

impl Fd {
    /// Takes ownership of `fd`.
    pub fn new(fd: RawFd, sys: Arc<dyn Sys>) -> Fd {
        Fd { fd, sys }
    }

    /// The raw number.
    pub fn raw(&self) -> RawFd {
        self.fd
    }

    /// The funnel the descriptor belongs to.
    pub fn sys(&self) -> &Arc<dyn Sys> {
        &self.sys
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        self.sys.close(self.fd);
    }
}

/// A memory mapping that unmaps through its [`Sys`] when dropped.
pub struct Mapping {
    addr: NonNull<u8>,
    len: usize,
    sys: Arc<dyn Sys>,
}

// SAFETY: a Mapping is a plain address range; who may touch the memory is
// decided by the ring and UMEM code that owns it, not by the handle.
unsafe impl Send for Mapping {}
// SAFETY: as above; the handle itself has no interior mutability.
unsafe impl Sync for Mapping {}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mapping({:p}, {} bytes)", self.addr, self.len)
    }
}

impl Mapping {
    /// Takes ownership of a mapping made by one of `sys`'s `mmap_*` calls.
    pub fn new(addr: NonNull<u8>, len: usize, sys: Arc<dyn Sys>) -> Mapping {
        Mapping { addr, len, sys }
    }

    /// Start of the mapping.
    pub fn addr(&self) -> NonNull<u8> {
        self.addr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, for a real one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        self.sys.munmap(self.addr, self.len);
    }
}

/// Turns transmit checksum offload of an interface (of the calling
/// thread's network namespace) on or off: `ethtool -K IFACE tx on|off`.
///
/// Not used by the driver. It is for setups that feed an AF_XDP port from
/// a local stack through a veth: with offload on, the stack leaves a
/// UDP/TCP checksum half-done for the device to finish, XDP sees the frame
/// as bytes only, and what Sluice forwards arrives with a bad checksum.
/// Test rigs and `sluice demo` turn it off on the traffic's source veth.
///
/// # Errors
/// The ioctl's error (`ENODEV`, `EPERM`, `EOPNOTSUPP`).
pub fn set_tx_checksum_offload(iface: &str, on: bool) -> io::Result<()> {
    /// `struct ethtool_value`.
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    const ETHTOOL_STXCSUM: u32 = 0x17;
    let s = IoctlSocket::new()?;
    let mut v = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    let mut req = ifreq(iface)?;
    req.data[..8].copy_from_slice(&(&mut v as *mut EthtoolValue as u64).to_ne_bytes());
    s.ioctl(SIOCETHTOOL, &mut req)
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSys;

impl LinuxSys {
    /// The real funnel, shared.
    pub fn shared() -> Arc<dyn Sys> {
        Arc::new(LinuxSys)
    }
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `struct ifreq` with the union as raw bytes (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

fn ifreq(name: &str) -> io::Result<IfReq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= 16 || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    let mut r = IfReq {
        name: [0; 16],
        data: [0; 24],
    };
    r.name[..bytes.len()].copy_from_slice(bytes);
    Ok(r)
}

/// A throw-away datagram socket for interface ioctls.
struct IoctlSocket(RawFd);

impl IoctlSocket {
    fn new() -> io::Result<IoctlSocket> {
        // SAFETY: socket(2) takes no pointers.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        check(fd).map(IoctlSocket)
    }

    fn ioctl(&self, request: libc::c_ulong, req: &mut IfReq) -> io::Result<()> {
        // SAFETY: `req` is a valid, writable ifreq-sized buffer for the
        // duration of the call, as both requests used here expect.
        let r = unsafe { libc::ioctl(self.0, request, req as *mut IfReq) };
        check(r).map(drop)
    }
}

impl Drop for IoctlSocket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is owned by this value and closed once.
        unsafe { libc::close(self.0) };
    }
}

/// `struct ethtool_channels`.
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

const ETHTOOL_GCHANNELS: u32 = 0x3c;
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const SIOCGIFHWADDR: libc::c_ulong = 0x8927;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<RawFd> {
    // SAFETY: `attr` points to a live, initialised `bpf_attr` prefix of
    // `size_of::<T>()` bytes for the command `cmd`; every pointer inside it
    // was set by the caller to memory that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as RawFd)
    }
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(
        name.bytes()
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .take(15),
    ) {
        *o = b;
    }
    out
}

#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
struct MapUpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

impl LinuxSys {
    fn setsockopt<T>(fd: RawFd, name: i32, value: &T) -> io::Result<()> {
        // SAFETY: `value` is a live `T` and the length passed is its size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                SOL_XDP,
                name,
                value as *const T as *const libc::c_void,
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        };
        check(r).map(drop)
    }

    fn getsockopt<T: Default>(fd: RawFd, name: i32) -> io::Result<T> {
        let mut out = T::default();
        let mut len = std::mem::size_of::<T>() as libc::socklen_t;
        // SAFETY: `out` is a writable `T` and `len` holds its size; the
        // kernel writes at most `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                fd,
                SOL_XDP,
                name,
                &mut out as *mut T as *mut libc::c_void,
                &mut len,
            )
        };
        check(r)?;
        if (len as usize) < std::mem::size_of::<T>() {
            // An older kernel filled a shorter version; the rest stays 0.
            tracing::debug!(name, len, "short getsockopt answer");
        }
        Ok(out)
    }
}

impl Sys for LinuxSys {
    fn if_nametoindex(&self, name: &str) -> io::Result<u32> {
        let c = cstring(name)?;
        // SAFETY: `c` is a NUL-terminated string that outlives the call.
        let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if i == 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(i)
        }
    }

    fn rx_queues(&self, name: &str) -> io::Result<Option<u32>> {
        let s = IoctlSocket::new()?;
        let mut ch = EthtoolChannels {
            cmd: ETHTOOL_GCHANNELS,
            ..Default::default()
        };
        let mut req = ifreq(name)?;
        req.data[..8].copy_from_slice(&(&mut ch as *mut EthtoolChannels as u64).to_ne_bytes());
        match s.ioctl(SIOCETHTOOL, &mut req) {
            Ok(()) => Ok(Some(ch.rx_count + ch.combined_count)),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn mac_address(&self, name: &str) -> io::Result<[u8; 6]> {
        let s = IoctlSocket::new()?;
        let mut req = ifreq(name)?;
        s.ioctl(SIOCGIFHWADDR, &mut req)?;
        // ifr_hwaddr is a struct sockaddr: sa_family (2 bytes), sa_data.
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&req.data[2..8]);
        Ok(mac)
    }

    fn xsk_socket(&self) -> io::Result<RawFd> {
        // SAFETY: socket(2) takes no pointers.
        let fd = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        check(fd)
    }

    fn close(&self, fd: RawFd) {
        // SAFETY: the caller (an `Fd`) owns `fd` and closes it once.
        unsafe { libc::close(fd) };
    }

    fn umem_register(&self, fd: RawFd, reg: &UmemReg) -> io::Result<()> {
        LinuxSys::setsockopt(fd, XDP_UMEM_REG, reg)
    }

    fn set_ring_size(&self, fd: RawFd, ring: RingKind, entries: u32) -> io::Result<()> {
        LinuxSys::setsockopt(fd, ring.sockopt(), &entries)
    }

    fn mmap_offsets(&self, fd: RawFd) -> io::Result<MmapOffsets> {
        LinuxSys::getsockopt(fd, XDP_MMAP_OFFSETS)
    }

    fn mmap_ring(&self, fd: RawFd, ring: RingKind, len: usize) -> io::Result<NonNull<u8>> {
        // SAFETY: a fresh shared mapping of the socket's ring; no existing
        // memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                ring.pgoff(),
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))
    }

    fn mmap_anonymous(&self, len: usize) -> io::Result<NonNull<u8>> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))
    }

    fn munmap(&self, addr: NonNull<u8>, len: usize) {
        // SAFETY: `addr..addr+len` is a mapping this funnel made and whose
        // owner (a `Mapping`) gives it up now; nothing refers to it after.
        unsafe { libc::munmap(addr.as_ptr().cast(), len) };
    }

    fn bind(&self, fd: RawFd, addr: &SockaddrXdp) -> io::Result<()> {
        // SAFETY: `addr` is a live sockaddr_xdp and the length is its size.
        let r = unsafe {
            libc::bind(
                fd,
                addr as *const SockaddrXdp as *const libc::sockaddr,
                std::mem::size_of::<SockaddrXdp>() as libc::socklen_t,
            )
        };
        check(r).map(drop)
    }

    fn xdp_options(&self, fd: RawFd) -> io::Result<u32> {
        LinuxSys::getsockopt::<u32>(fd, XDP_OPTIONS)
    }

    fn statistics(&self, fd: RawFd) -> io::Result<XdpStatistics> {
        LinuxSys::getsockopt(fd, XDP_STATISTICS)
    }

    fn kick_tx(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: no buffer and no address: the call only tells the kernel
        // to look at the TX ring.
        let r = unsafe {
            libc::sendto(
                fd,
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn kick_rx(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: no buffer and no address: the call only tells the kernel
        // to look at the fill ring.
        let r = unsafe {
            libc::recvfrom(
                fd,
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn xskmap_create(&self, name: &str, entries: u32) -> io::Result<RawFd> {
        let mut attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_XSKMAP,
            key_size: 4,
            value_size: 4,
            max_entries: entries,
            map_flags: 0,
            inner_map_fd: 0,
            numa_node: 0,
            map_name: name16(name),
        };
        bpf(BPF_MAP_CREATE, &mut attr)
    }

    fn map_update_u32(&self, map_fd: RawFd, key: u32, value: u32) -> io::Result<()> {
        let mut attr = MapUpdateAttr {
            map_fd: map_fd as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            flags: 0,
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    }

    fn prog_load_xdp(
        &self,
        name: &str,
        insns: &[u64],
        license: &str,
        log: &mut [u8],
    ) -> io::Result<RawFd> {
        let license = cstring(license)?;
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: 0,
            prog_name: name16(name),
            prog_ifindex: 0,
            expected_attach_type: BPF_XDP,
        };
        match bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(fd) => Ok(fd),
            Err(first) if !log.is_empty() && first.raw_os_error() != Some(libc::EPERM) => {
                // Load again with the verifier's log, for the error message.
                attr.log_level = 1;
                attr.log_size = log.len() as u32;
                attr.log_buf = log.as_mut_ptr() as u64;
                bpf(BPF_PROG_LOAD, &mut attr).or(Err(first))
            }
            Err(e) => Err(e),
        }
    }

    fn xdp_link_create(&self, prog_fd: RawFd, ifindex: u32, flags: u32) -> io::Result<RawFd> {
        let mut attr = LinkCreateAttr {
            prog_fd: prog_fd as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags,
        };
        bpf(BPF_LINK_CREATE, &mut attr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uapi_sizes_match_the_kernel() {
        assert_eq!(std::mem::size_of::<RingOffset>(), 32);
        assert_eq!(std::mem::size_of::<MmapOffsets>(), 128);
        assert_eq!(std::mem::size_of::<UmemReg>(), 32);
        assert_eq!(std::mem::size_of::<XdpStatistics>(), 48);
        assert_eq!(std::mem::size_of::<SockaddrXdp>(), 16);
        assert_eq!(std::mem::size_of::<XdpDesc>(), 16);
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(std::mem::size_of::<EthtoolChannels>(), 36);
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::size_of::<MapUpdateAttr>(), 32);
    }

    #[test]
    fn names_are_trimmed_for_the_kernel() {
        assert_eq!(&name16("sluice-xsks.veth0")[..], b"sluicexsksveth0\0");
        assert_eq!(name16("a_b")[..4], *b"a_b\0");
    }
}
