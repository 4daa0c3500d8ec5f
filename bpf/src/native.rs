//! Native mode: how verified programs run as machine code (the JIT) or in
//! the unchecked interpreter.
//!
//! Because the verifier proved every access safe, native code uses real
//! host addresses and plain loads and stores. This module fixes the ABI
//! between the runtime and native code:
//!
//! * the **context** of an XDP program is a [`NativeXdpMd`], whose packet
//!   pointers are 64-bit host addresses; the verifier's context-access
//!   conversion rewrites the program's 32-bit `struct xdp_md` loads into
//!   loads at [`NativeXdpMd`]'s offsets (see [`native_ctx_field`]);
//! * **helpers** are reached through one C-ABI shim,
//!   [`sluice_helper_shim`]: native code stores the helper's function
//!   pointer in [`NativeEnv::helper`], passes r1-r5 in the first five
//!   argument registers and the environment in the sixth, and after the
//!   call checks [`NativeEnv::fault`];
//! * **map pointers** keep the loader's handle encoding (they are never
//!   dereferenced by a verified program); map value pointers and ring
//!   buffer records are host addresses.
#![allow(unsafe_code)]

use std::sync::Arc;

use crate::helpers::{HelperError, HelperFn};
use crate::interp::ctx::{CallCtx, RunState};
use crate::interp::xdp_md;
use crate::maps::Map;

/// The context a native XDP program sees in r1.
#[derive(Debug, Default, Clone, Copy)]
#[repr(C)]
pub struct NativeXdpMd {
    /// Host address of the first packet byte.
    pub data: u64,
    /// Host address one past the last packet byte.
    pub data_end: u64,
    /// Host address of the metadata.
    pub data_meta: u64,
    /// `ingress_ifindex`.
    pub ingress_ifindex: u32,
    /// `rx_queue_index`.
    pub rx_queue_index: u32,
    /// `egress_ifindex`.
    pub egress_ifindex: u32,
    /// Padding (keeps the size a multiple of 8).
    pub _pad: u32,
}

/// Byte offsets in [`NativeXdpMd`].
pub mod native_xdp_md {
    /// `data` (u64).
    pub const DATA: i16 = 0;
    /// `data_end` (u64).
    pub const DATA_END: i16 = 8;
    /// `data_meta` (u64).
    pub const DATA_META: i16 = 16;
    /// `ingress_ifindex` (u32).
    pub const INGRESS_IFINDEX: i16 = 24;
    /// `rx_queue_index` (u32).
    pub const RX_QUEUE_INDEX: i16 = 28;
    /// `egress_ifindex` (u32).
    pub const EGRESS_IFINDEX: i16 = 32;
}

/// Where a load of `struct xdp_md` at `off` goes in the native context:
/// the new offset and whether it becomes a 64-bit load. `None` for offsets
/// that are not a field start (the verifier refuses those anyway).
pub fn native_ctx_field(off: usize) -> Option<(i16, bool)> {
    Some(match off {
        xdp_md::DATA => (native_xdp_md::DATA, true),
        xdp_md::DATA_END => (native_xdp_md::DATA_END, true),
        xdp_md::DATA_META => (native_xdp_md::DATA_META, true),
        xdp_md::INGRESS_IFINDEX => (native_xdp_md::INGRESS_IFINDEX, false),
        xdp_md::RX_QUEUE_INDEX => (native_xdp_md::RX_QUEUE_INDEX, false),
        xdp_md::EGRESS_IFINDEX => (native_xdp_md::EGRESS_IFINDEX, false),
        _ => return None,
    })
}

/// What native code carries for helper calls: set up by the runtime before
/// entering a program, read and written by [`sluice_helper_shim`].
#[repr(C)]
pub struct NativeEnv {
    /// The helper to call next; native code stores it before each call.
    pub helper: Option<HelperFn>,
    /// Non-zero once a helper failed; native code checks it after each call
    /// and leaves the program, returning the fault.
    pub fault: u64,
    /// What failed, when `fault` is set.
    pub error: Option<HelperError>,
    /// The run's state (worker, redirect, inner maps, XDP frame).
    pub(crate) state: *mut RunState,
    /// The running program's maps.
    pub(crate) maps: *const [Arc<Map>],
    /// The native context (null for non-XDP programs).
    pub(crate) ctx: *mut NativeXdpMd,
}

impl NativeEnv {
    /// The running program's maps (for the JIT's tail-call resolver).
    #[cfg(all(feature = "jit", target_arch = "x86_64"))]
    pub(crate) fn maps(&self) -> Option<&[Arc<Map>]> {
        if self.maps.is_null() {
            return None;
        }
        // SAFETY: `maps` is set to the running program's maps before native
        // code runs with this environment (`NativeEnv::new`'s contract).
        Some(unsafe { &*self.maps })
    }
}

/// Offset of [`NativeEnv::helper`].
pub const ENV_HELPER: i32 = std::mem::offset_of!(NativeEnv, helper) as i32;
/// Offset of [`NativeEnv::fault`].
pub const ENV_FAULT: i32 = std::mem::offset_of!(NativeEnv, fault) as i32;

impl NativeEnv {
    /// An environment for one run.
    ///
    /// # Safety
    /// `state`, `maps` and `ctx` (if non-null) must stay valid and otherwise
    /// unused while native code runs with this environment, and the program
    /// must be one the verifier accepted.
    #[allow(dead_code)] // used by the JIT and the unchecked interpreter, which come next
    pub(crate) unsafe fn new(
        state: *mut RunState,
        maps: *const [Arc<Map>],
        ctx: *mut NativeXdpMd,
    ) -> NativeEnv {
        NativeEnv {
            helper: None,
            fault: 0,
            error: None,
            state,
            maps,
            ctx,
        }
    }
}

/// The one entry native code uses to call a helper: r1-r5 in the first
/// five argument registers, the environment in the sixth (System V:
/// rdi, rsi, rdx, rcx, r8, r9). Returns r0; on a helper error returns 0
/// and sets [`NativeEnv::fault`].
///
/// # Safety
/// `env` must be the environment of the running native program, with
/// `helper` set.
pub unsafe extern "C" fn sluice_helper_shim(
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
    a5: u64,
    env: *mut NativeEnv,
) -> u64 {
    // SAFETY: the caller passes its live environment (function contract).
    let env = unsafe { &mut *env };
    let Some(f) = env.helper else {
        env.fault = 1;
        return 0;
    };
    // SAFETY: `NativeEnv::new`'s contract: the state is valid and ours for
    // the run.
    let state = unsafe { &mut *env.state };
    // SAFETY: same contract: the program's maps outlive the run.
    let maps = unsafe { &*env.maps };
    // SAFETY: the program was verified (NativeEnv contract).
    let mut cx = unsafe { CallCtx::native(env.ctx, state, maps) };
    match f(&mut cx, [a1, a2, a3, a4, a5]) {
        Ok(v) => v,
        Err(e) => {
            env.fault = 1;
            env.error = Some(e);
            0
        }
    }
}
