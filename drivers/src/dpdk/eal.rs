//! DPDK's Environment Abstraction Layer: initialised once per process, and
//! worker threads registered as (non-EAL) lcores.

#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use dpdk_sys as sys;

/// The environment variable that replaces the default EAL arguments
/// (whitespace-separated, without the program name), e.g.
/// `SLUICE_DPDK_EAL="-l 2 -m 1024 --file-prefix fwd -a 0000:01:00.0"`.
pub const EAL_ENV: &str = "SLUICE_DPDK_EAL";

/// The outcome of the one `rte_eal_init` of this process.
static EAL: OnceLock<Result<Vec<String>, String>> = OnceLock::new();

/// Threads that could not be registered as lcores.
static REGISTER_FAILURES: AtomicU64 = AtomicU64::new(0);

/// The arguments EAL gets when [`EAL_ENV`] is not set: no huge pages, no
/// shared configuration file (`--no-shconf`; `--in-memory` would say the
/// same but EAL refuses it together with `--no-huge`), no PCI scan (devices are
/// hot-plugged by [`super::DpdkPort::open`]), 512 MiB of ordinary memory,
/// a file prefix of this process's own, the main lcore on the first CPU
/// this process may use, no telemetry socket, and only warnings logged.
pub fn default_args() -> Vec<String> {
    let cpu = first_allowed_cpu().unwrap_or(0);
    [
        "--no-huge",
        "--no-shconf",
        "--no-pci",
        "-m",
        "512",
        "--file-prefix",
        &format!("sluice-{}", std::process::id()),
        "-l",
        &cpu.to_string(),
        "--no-telemetry",
        "--log-level",
        "*:warning",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The arguments [`init`] uses: [`EAL_ENV`] split on whitespace, or
/// [`default_args`].
pub fn args() -> Vec<String> {
    match std::env::var(EAL_ENV) {
        Ok(v) if !v.trim().is_empty() => v.split_whitespace().map(str::to_string).collect(),
        _ => default_args(),
    }
}

/// Initialises EAL once for the process ([`args`]); later calls return the
/// first call's outcome. Returns the arguments EAL got.
///
/// EAL pins the calling thread to its main lcore's CPU; `init` puts the
/// thread's CPU affinity back afterwards, so threads the caller spawns
/// later are not all squeezed onto that CPU.
///
/// # Errors
/// One line: the arguments and `rte_strerror(rte_errno)`.
pub fn init() -> Result<&'static [String], String> {
    EAL.get_or_init(|| {
        let args = args();
        let mut argv: Vec<*mut c_char> = Vec::with_capacity(args.len() + 2);
        let owned: Vec<CString> = std::iter::once("sluice")
            .chain(args.iter().map(String::as_str))
            .map(|a| CString::new(a).map_err(|_| format!("EAL argument \"{a}\" holds a NUL byte")))
            .collect::<Result<_, _>>()?;
        // EAL may keep pointers into argv for the life of the process.
        for a in owned {
            argv.push(a.into_raw());
        }
        argv.push(std::ptr::null_mut());
        let affinity = get_affinity();
        // SAFETY: argv is argc valid NUL-terminated strings plus a NULL,
        // leaked (they live as long as the process); `OnceLock` makes this
        // the only call in the process.
        let rc = unsafe { sys::rte_eal_init((argv.len() - 1) as i32, argv.as_mut_ptr()) };
        if let Some(set) = affinity {
            set_affinity(&set);
        }
        if rc < 0 {
            return Err(format!(
                "DPDK EAL initialisation failed ({}) with arguments \"{}\" (set {EAL_ENV} to change them)",
                errno_text(errno()),
                args.join(" ")
            ));
        }
        Ok(args)
    })
    .as_ref()
    .map(Vec::as_slice)
    .map_err(Clone::clone)
}

/// `rte_errno` of the calling thread.
pub fn errno() -> i32 {
    // SAFETY: reads a thread-local integer.
    unsafe { sys::sluice_rte_errno() }
}

/// `rte_strerror` of an error number (DPDK's own codes and errno values).
pub fn errno_text(e: i32) -> String {
    let e = e.abs();
    // SAFETY: a plain call; it returns a static or thread-local string.
    let p = unsafe { sys::rte_strerror(e) };
    // SAFETY: a NUL-terminated string, copied out at once.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Per-thread registration state: 0 not tried, 1 registered by us,
/// 2 an EAL lcore already (nothing to undo), 3 failed.
struct Registration(Cell<u8>);

impl Drop for Registration {
    fn drop(&mut self) {
        if self.0.get() == 1 {
            // SAFETY: this thread registered itself (state 1) and is
            // exiting; unregistering gives its lcore id back.
            unsafe { sys::rte_thread_unregister() };
        }
    }
}

thread_local! {
    static REGISTERED: Registration = const { Registration(Cell::new(0)) };
}

/// Makes the calling thread an lcore (`rte_thread_register`) the first
/// time it is called on the thread, so that mempool operations use the
/// per-lcore caches; later calls are one thread-local load. The lcore id
/// is given back when the thread exits.
///
/// If registration fails (every one of `RTE_MAX_LCORE` ids taken), the
/// thread still works: without an lcore id, mbuf alloc and free go to the
/// mempool's shared ring directly, which is correct but slower. The
/// failure is logged once for the thread and counted
/// ([`registration_failures`]).
#[inline]
pub fn register_thread() {
    let done = REGISTERED.try_with(|r| r.0.get() != 0).unwrap_or(true);
    if !done {
        register_slow();
    }
}

#[cold]
fn register_slow() {
    let _ = REGISTERED.try_with(|r| {
        // SAFETY: reads this thread's lcore id.
        let id = unsafe { sys::sluice_rte_lcore_id() };
        if id != sys::LCORE_ID_ANY {
            r.0.set(2);
            return;
        }
        // SAFETY: EAL is initialised (queues exist only after `init`);
        // registers the calling thread.
        let rc = unsafe { sys::rte_thread_register() };
        if rc == 0 {
            r.0.set(1);
        } else {
            r.0.set(3);
            REGISTER_FAILURES.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error = %errno_text(errno()),
                "cannot register this thread with DPDK (rte_thread_register): its mbuf allocs and frees bypass the mempool cache"
            );
        }
    });
}

/// Threads whose registration failed, since the start.
pub fn registration_failures() -> u64 {
    REGISTER_FAILURES.load(Ordering::Relaxed)
}

/// The calling thread's lcore id (`LCORE_ID_ANY` when it has none).
pub fn lcore_id() -> u32 {
    // SAFETY: reads a thread-local.
    unsafe { sys::sluice_rte_lcore_id() }
}

fn get_affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most the size given.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    (rc == 0).then_some(set)
}

fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: a valid set of the size given.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(set), set) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot restore the CPU affinity EAL changed"
        );
    }
}

fn first_allowed_cpu() -> Option<usize> {
    let set = get_affinity()?;
    // SAFETY: CPU_ISSET reads the set within its size.
    (0..libc::CPU_SETSIZE as usize).find(|&c| unsafe { libc::CPU_ISSET(c, &set) })
}
