//! The in-kernel half: a five-instruction XDP program that hands every
//! packet of a queue to that queue's XDP socket, and the BPF link that
//! attaches it.
//!
//! ```text
//! r2 = *(u32 *)(r1 + 16)        ; ctx->rx_queue_index
//! r1 = map_fd(xsks)             ; the XSKMAP, one slot per queue
//! r3 = XDP_PASS                 ; fallback when the slot is empty
//! call bpf_redirect_map         ; helper 51
//! exit
//! ```
//!
//! This is libxdp's default program without the pre-5.3 fallback. It is
//! written as raw instructions rather than shipped as a compiled object:
//! no ELF loader, no clang at build time, and the map reference is patched
//! in directly.
//!
//! It is loaded with `BPF_PROG_LOAD` and attached with `BPF_LINK_CREATE`
//! (attach type `BPF_XDP`). A link is owned by its file descriptor: when
//! Sluice closes it — or exits, or crashes, or is killed — the kernel
//! detaches the program, so nothing is left on the interface. A link also
//! refuses to replace a program someone else attached (`EBUSY`), which is
//! how "the interface already has an XDP program" is detected.
//!
//! Native (driver) mode is tried first; if the driver has no XDP support
//! the program is attached in generic (SKB) mode, and the fallback is
//! logged and shown in the port's mode.

use std::io;
use std::sync::Arc;

use super::sys::{Fd, Sys, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};

/// How the XDP program is to be attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native if the driver supports it, else generic (logged).
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (SKB) mode only.
    Generic,
}

impl XdpMode {
    /// Its name in port specifications.
    pub fn name(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

/// `BPF_LD | BPF_IMM | BPF_DW`.
const LD_IMM64: u8 = 0x18;
/// `BPF_LDX | BPF_MEM | BPF_W`.
const LDX_W: u8 = 0x61;
/// `BPF_ALU64 | BPF_MOV | BPF_K`.
const MOV64_IMM: u8 = 0xb7;
/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
/// `BPF_JMP | BPF_EXIT`.
const EXIT: u8 = 0x95;
/// `BPF_PSEUDO_MAP_FD`: the immediate of an `LD_IMM64` is a map fd.
const PSEUDO_MAP_FD: u8 = 1;
/// `BPF_FUNC_redirect_map`.
const FUNC_REDIRECT_MAP: i32 = 51;
/// `XDP_PASS`.
const XDP_PASS: i32 = 2;
/// `offsetof(struct xdp_md, rx_queue_index)`.
const RX_QUEUE_INDEX: i16 = 16;

/// One instruction in the kernel's in-memory layout (`struct bpf_insn` on
/// a little-endian host).
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (dst & 0x0f) | (src << 4);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    u64::from_ne_bytes(b)
}

/// The program, referring to the XSKMAP `map_fd`.
pub fn program(map_fd: i32) -> [u64; 6] {
    [
        insn(LDX_W, 2, 1, RX_QUEUE_INDEX, 0),
        insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_IMM, 3, 0, 0, XDP_PASS),
        insn(CALL, 0, 0, 0, FUNC_REDIRECT_MAP),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// The license the program is loaded under (its helpers are not GPL-only;
/// any string would do, this one matches the project's).
const LICENSE: &str = "Dual MIT/GPL";

/// The program attached to one interface, and its XSKMAP. Dropping it
/// closes the link (detaching the program), the program and the map.
#[derive(Debug)]
pub struct Attachment {
    /// Field order is drop order: the link goes first.
    link: Fd,
    _prog: Fd,
    xskmap: Fd,
    /// The mode it runs in.
    pub mode: XdpMode,
    /// Interface index.
    pub ifindex: u32,
}

impl Attachment {
    /// Puts socket `sock_fd` in the XSKMAP slot of kernel queue `queue`.
    ///
    /// # Errors
    /// The kernel's refusal.
    pub fn insert(&self, queue: u32, sock_fd: i32) -> io::Result<()> {
        self.link
            .sys()
            .map_update_u32(self.xskmap.raw(), queue, sock_fd as u32)
    }
}

/// Why the program could not be attached.
#[derive(Debug)]
pub enum AttachError {
    /// Creating the XSKMAP failed.
    Map(io::Error),
    /// Loading the program failed; the verifier's log, if any.
    Load(io::Error, String),
    /// Attaching failed in every mode tried: the last error, and the mode
    /// it was tried in.
    Link(io::Error, XdpMode),
}

/// Creates the XSKMAP (`queues` slots), loads the program and attaches it
/// to `ifindex` in `mode`.
///
/// # Errors
/// [`AttachError`] naming the step.
pub fn attach(
    sys: &Arc<dyn Sys>,
    ifname: &str,
    ifindex: u32,
    queues: u32,
    mode: XdpMode,
) -> Result<Attachment, AttachError> {
    let map = sys
        .xskmap_create(&format!("xsks_{ifname}"), queues.max(1))
        .map_err(AttachError::Map)?;
    let map = Fd::new(map, Arc::clone(sys));
    let insns = program(map.raw());
    let mut log = vec![0u8; 4096];
    let prog = sys
        .prog_load_xdp("sluice_xsk", &insns, LICENSE, &mut log)
        .map_err(|e| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end])
                .trim()
                .replace('\n', "; ");
            AttachError::Load(e, text)
        })?;
    let prog = Fd::new(prog, Arc::clone(sys));
    let try_mode = |m: XdpMode| {
        let flags = match m {
            XdpMode::Generic => XDP_FLAGS_SKB_MODE,
            _ => XDP_FLAGS_DRV_MODE,
        };
        sys.xdp_link_create(prog.raw(), ifindex, flags)
    };
    let (link, mode) = match mode {
        XdpMode::Auto => match try_mode(XdpMode::Native) {
            Ok(l) => (l, XdpMode::Native),
            Err(e) if native_unsupported(&e) => {
                tracing::warn!(
                    interface = ifname,
                    error = %e,
                    "native XDP is not available; falling back to generic (SKB) mode"
                );
                match try_mode(XdpMode::Generic) {
                    Ok(l) => (l, XdpMode::Generic),
                    Err(e) => return Err(AttachError::Link(e, XdpMode::Generic)),
                }
            }
            Err(e) => return Err(AttachError::Link(e, XdpMode::Native)),
        },
        m => (try_mode(m).map_err(|e| AttachError::Link(e, m))?, m),
    };
    Ok(Attachment {
        link: Fd::new(link, Arc::clone(sys)),
        _prog: prog,
        xskmap: map,
        mode,
        ifindex,
    })
}

/// Whether a native attach failed because the driver cannot do it (and
/// generic mode is worth a try), rather than because of a conflict or a
/// permission.
fn native_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ERANGE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_libxdps_default() {
        let p = program(7);
        let bytes: Vec<u8> = p.iter().flat_map(|i| i.to_ne_bytes()).collect();
        assert_eq!(
            bytes,
            [
                0x61, 0x12, 16, 0, 0, 0, 0, 0, // r2 = *(u32 *)(r1 + 16)
                0x18, 0x11, 0, 0, 7, 0, 0, 0, // r1 = map_fd 7
                0, 0, 0, 0, 0, 0, 0, 0, //
                0xb7, 0x03, 0, 0, 2, 0, 0, 0, // r3 = 2
                0x85, 0, 0, 0, 51, 0, 0, 0, // call 51
                0x95, 0, 0, 0, 0, 0, 0, 0, // exit
            ]
        );
    }
}
