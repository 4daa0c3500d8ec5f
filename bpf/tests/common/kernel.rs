//! The Linux kernel as the oracle for program semantics, driven through
//! `bpftool`.
//!
//! [`KernelObject::load`] runs `bpftool prog loadall OBJ DIR/progs type xdp
//! pinmaps DIR/maps`: libbpf loads every program and map of the object the
//! way `ip link set dev X xdp obj OBJ` would, and pins them by name under a
//! fresh directory of the BPF filesystem. Everything else goes through
//! those pins:
//!
//! * [`KernelObject::run`]: `bpftool -j prog run pinned P data_in IN
//!   data_out OUT data_size_out 4096 repeat 1`, i.e. `BPF_PROG_TEST_RUN`
//!   once. The kernel builds a 4096-byte frame with 256 bytes of headroom
//!   (`XDP_PACKET_HEADROOM`) and 320 bytes of `skb_shared_info` at the end,
//!   on the loopback device (ingress ifindex 1, queue 0), and returns the
//!   verdict and the bytes from `data_meta` to `data_end`: metadata the
//!   program added comes first. It refuses input shorter than `ETH_HLEN`
//!   (14 bytes) with `EINVAL`.
//! * [`KernelObject::map_dump`], [`KernelObject::map_update`] and
//!   [`KernelObject::prog_array_set`]: `bpftool -j map dump/update pinned`.
//!   libbpf pins the global-data maps as `<object name, 8 chars>_rodata`,
//!   `_data`, `_bss` (the `.` becomes `_`).
//!
//! [`BpffsDir`] owns the pin directory and removes it when dropped, also
//! while a failing test unwinds; directories that a killed test process
//! left behind are removed by the next run. Scratch files live in a
//! [`ScratchDir`] under the system's temporary directory, removed the same
//! way.
//!
//! bpftool cannot read a ring buffer, so [`KernelObject::ringbuf_records`]
//! does what a libbpf consumer does: it opens the pin with `bpf(2)`
//! (`BPF_OBJ_GET`) and maps the buffer read-only. That function is the
//! only `unsafe` code of the test helpers.
//!
//! `$BPFTOOL` names another bpftool binary.

// Each test crate that includes `common` uses a different part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

/// Where the BPF filesystem is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Prefix of every directory this module creates (in bpffs and in /tmp).
const DIR_PREFIX: &str = "sluice-test-";
/// `data_size_out` for test runs: more than any frame can hold.
const DATA_SIZE_OUT: usize = 4096;

/// Headroom of the kernel's `BPF_PROG_TEST_RUN` XDP frame
/// (`XDP_PACKET_HEADROOM`).
pub const TEST_RUN_HEADROOM: usize = 256;
/// Bytes of the kernel's test frame that headroom, packet and tailroom may
/// use: a page minus `skb_shared_info` (320 bytes on x86-64).
pub const TEST_RUN_FRAME: usize = 4096 - 320;
/// The shortest input `BPF_PROG_TEST_RUN` accepts for XDP (`ETH_HLEN`).
pub const TEST_RUN_MIN_LEN: usize = 14;
/// The ifindex test-run packets arrive on (the loopback device).
pub const TEST_RUN_IFINDEX: u32 = 1;

/// A kernel-side step that failed: a `bpftool` invocation, a syscall, a
/// scratch file.
#[derive(Debug)]
pub struct KernelError {
    /// The command line or operation, for the report.
    pub command: String,
    /// What went wrong: bpftool's error message, exit status, stderr; or
    /// the OS error.
    pub message: String,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed: {}", self.command, self.message)
    }
}

impl std::error::Error for KernelError {}

/// The bpftool binary to run.
fn bpftool_path() -> PathBuf {
    std::env::var_os("BPFTOOL").map_or_else(|| PathBuf::from("bpftool"), PathBuf::from)
}

/// Runs bpftool with `args` and returns its standard output.
fn bpftool<I, S>(args: I) -> Result<String, KernelError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let tool = bpftool_path();
    let command = std::iter::once(tool.as_os_str())
        .chain(args.iter().map(AsRef::as_ref))
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(&tool)
        .args(&args)
        .output()
        .map_err(|e| KernelError {
            command: command.clone(),
            message: e.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    // With -j, bpftool reports errors as {"error": "..."} on stdout.
    let json_error = serde_json::from_str::<Value>(&stdout)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = format!(
        "{} ({}){}{}",
        json_error.as_deref().unwrap_or("error"),
        out.status,
        if stderr.trim().is_empty() { "" } else { "\n" },
        stderr.trim_end()
    );
    Err(KernelError { command, message })
}

/// Whether this process runs with effective user id 0 (from
/// `/proc/self/status`, so no libc is needed).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Whether a BPF filesystem is mounted at [`BPFFS`].
fn bpffs_mounted() -> bool {
    fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 2 && f[1] == BPFFS && f[2] == "bpf"
        })
    })
}

/// Why the kernel cannot serve as the oracle here, or `None` when it can:
/// root, bpftool, a mounted bpffs, and `probe_object` loading and running
/// once under `BPF_PROG_TEST_RUN` (which proves that bpf(2) works).
pub fn unavailable(probe_object: &Path, probe_prog: &str) -> Option<String> {
    if !is_root() {
        return Some(
            "not running as root (bpf(2) and bpffs pins need CAP_BPF/CAP_SYS_ADMIN)".into(),
        );
    }
    if let Err(e) = bpftool(["version"]) {
        return Some(format!("bpftool is not usable: {e}"));
    }
    if !bpffs_mounted() {
        return Some(format!(
            "no BPF filesystem at {BPFFS} (mount -t bpf bpf {BPFFS})"
        ));
    }
    let probe = || -> Result<(), KernelError> {
        let obj = KernelObject::load(probe_object)?;
        obj.run(probe_prog, &[0u8; 64])?;
        Ok(())
    };
    match probe() {
        Ok(()) => None,
        Err(e) => Some(format!("bpf(2) or BPF_PROG_TEST_RUN unavailable: {e}")),
    }
}

/// Handles a missing kernel oracle: prints a loud `SKIPPED` line, or panics
/// when `$CI` is `true`, where the oracle must be there (CI runs as root
/// with bpftool installed).
pub fn skip_or_fail(test: &str, reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: the kernel oracle is required when CI=true, but: {reason}");
    }
    eprintln!();
    eprintln!("**************************************************************");
    eprintln!("SKIPPED: {test}: {reason}");
    eprintln!("**************************************************************");
    eprintln!();
}

/// A unique name for a directory of this process.
fn unique_name(label: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let label: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{DIR_PREFIX}{}-{n}-{label}", std::process::id())
}

/// Removes `sluice-test-<pid>-*` entries under `parent` whose process is
/// gone (a test killed before its guards ran).
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A directory removed, with everything in it, when the guard is dropped.
#[derive(Debug)]
struct DirGuard {
    path: PathBuf,
}

impl DirGuard {
    fn create(parent: &Path, label: &str) -> std::io::Result<DirGuard> {
        remove_stale(parent);
        let path = parent.join(unique_name(label));
        fs::create_dir(&path)?;
        Ok(DirGuard { path })
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("warning: could not remove {}: {e}", self.path.display());
            }
        }
    }
}

/// A fresh directory in the BPF filesystem; unpinning everything in it
/// (removing the directory) on drop releases the programs and maps.
#[derive(Debug)]
pub struct BpffsDir(DirGuard);

impl BpffsDir {
    /// Creates `/sys/fs/bpf/sluice-test-<pid>-<n>-<label>`.
    ///
    /// # Errors
    /// When the directory cannot be created (no bpffs, not root).
    pub fn create(label: &str) -> std::io::Result<BpffsDir> {
        DirGuard::create(Path::new(BPFFS), label).map(BpffsDir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0.path
    }
}

/// A fresh directory under the system's temporary directory, removed on
/// drop.
#[derive(Debug)]
pub struct ScratchDir(DirGuard);

impl ScratchDir {
    /// Creates `$TMPDIR/sluice-test-<pid>-<n>-<label>`.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn create(label: &str) -> std::io::Result<ScratchDir> {
        DirGuard::create(&std::env::temp_dir(), label).map(ScratchDir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0.path
    }
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (the XDP verdict).
    pub retval: u32,
    /// The frame after the run, from `data_meta` to `data_end`.
    pub data_out: Vec<u8>,
}

/// One map element as bpftool dumps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    /// The key.
    pub key: Vec<u8>,
    /// The value: one element, or one per possible CPU for per-CPU maps.
    pub values: Vec<Vec<u8>>,
    /// Whether the map is per-CPU (bpftool printed `values`).
    pub percpu: bool,
}

/// An object loaded into the kernel, its programs and maps pinned by name.
/// Dropping it unpins everything, which frees the programs and maps.
#[derive(Debug)]
pub struct KernelObject {
    // Field order is drop order: the scratch files, then the pins.
    scratch: ScratchDir,
    pins: BpffsDir,
}

impl KernelObject {
    /// Loads every program of `object` as XDP and pins programs and maps.
    ///
    /// # Errors
    /// When the pin directory cannot be made or bpftool fails (the error
    /// carries libbpf's verifier log).
    pub fn load(object: &Path) -> Result<KernelObject, KernelError> {
        let label = object.file_stem().map(|s| s.to_string_lossy().into_owned());
        let label = label.as_deref().unwrap_or("object");
        let io_err = |what: &str, e: std::io::Error| KernelError {
            command: format!("create {what} directory for {}", object.display()),
            message: e.to_string(),
        };
        let pins = BpffsDir::create(label).map_err(|e| io_err("bpffs", e))?;
        let scratch = ScratchDir::create(label).map_err(|e| io_err("scratch", e))?;
        let obj = KernelObject { scratch, pins };
        bpftool([
            OsStr::new("prog"),
            OsStr::new("loadall"),
            object.as_os_str(),
            obj.progs_dir().as_os_str(),
            OsStr::new("type"),
            OsStr::new("xdp"),
            OsStr::new("pinmaps"),
            obj.maps_dir().as_os_str(),
        ])?;
        Ok(obj)
    }

    fn progs_dir(&self) -> PathBuf {
        self.pins.path().join("progs")
    }

    fn maps_dir(&self) -> PathBuf {
        self.pins.path().join("maps")
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The pinned programs' names (the C function names).
    pub fn programs(&self) -> Vec<String> {
        Self::names(&self.progs_dir())
    }

    /// The pinned maps' names.
    pub fn maps(&self) -> Vec<String> {
        Self::names(&self.maps_dir())
    }

    /// The pin of program `prog`.
    pub fn prog_pin(&self, prog: &str) -> PathBuf {
        self.progs_dir().join(prog)
    }

    /// The pin of map `map`.
    pub fn map_pin(&self, map: &str) -> PathBuf {
        self.maps_dir().join(map)
    }

    /// The type of map `map` as bpftool names it (`array`, `ringbuf`, ...).
    ///
    /// # Errors
    /// When bpftool cannot show the map.
    pub fn map_type(&self, map: &str) -> Result<String, KernelError> {
        let pin = self.map_pin(map);
        let info = bpftool([
            OsStr::new("-j"),
            OsStr::new("map"),
            OsStr::new("show"),
            OsStr::new("pinned"),
            pin.as_os_str(),
        ])?;
        serde_json::from_str::<Value>(&info)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
            .ok_or_else(|| KernelError {
                command: format!("map show {map}"),
                message: format!("no type in {info:?}"),
            })
    }

    /// Runs `prog` once on `data` with `BPF_PROG_TEST_RUN`.
    ///
    /// # Errors
    /// When the kernel refuses the run (e.g. `data` shorter than 14 bytes)
    /// or bpftool's output cannot be read.
    pub fn run(&self, prog: &str, data: &[u8]) -> Result<TestRun, KernelError> {
        let data_in = self.scratch.path().join("data_in");
        let data_out = self.scratch.path().join("data_out");
        let scratch_err = |e: std::io::Error| KernelError {
            command: format!("scratch file in {}", self.scratch.path().display()),
            message: e.to_string(),
        };
        fs::write(&data_in, data).map_err(scratch_err)?;
        let _ = fs::remove_file(&data_out);
        let size_out = DATA_SIZE_OUT.to_string();
        let stdout = bpftool([
            OsStr::new("-j"),
            OsStr::new("prog"),
            OsStr::new("run"),
            OsStr::new("pinned"),
            self.prog_pin(prog).as_os_str(),
            OsStr::new("data_in"),
            data_in.as_os_str(),
            OsStr::new("data_out"),
            data_out.as_os_str(),
            OsStr::new("data_size_out"),
            OsStr::new(&size_out),
            OsStr::new("repeat"),
            OsStr::new("1"),
        ])?;
        let parsed: Value = serde_json::from_str(&stdout).map_err(|e| KernelError {
            command: format!("prog run {prog}"),
            message: format!("unreadable output {stdout:?}: {e}"),
        })?;
        let retval = parsed
            .get("retval")
            .and_then(Value::as_u64)
            .ok_or_else(|| KernelError {
                command: format!("prog run {prog}"),
                message: format!("no retval in {stdout:?}"),
            })?;
        Ok(TestRun {
            retval: retval as u32,
            data_out: fs::read(&data_out).map_err(scratch_err)?,
        })
    }

    /// Sets `map[key] = value` (`BPF_ANY`).
    ///
    /// # Errors
    /// When bpftool or the kernel refuses the update.
    pub fn map_update(&self, map: &str, key: &[u8], value: &[u8]) -> Result<(), KernelError> {
        let mut args: Vec<String> = vec![
            "map".into(),
            "update".into(),
            "pinned".into(),
            path_arg(&self.map_pin(map)),
        ];
        args.push("key".into());
        args.push("hex".into());
        args.extend(key.iter().map(|b| format!("{b:02x}")));
        args.push("value".into());
        args.push("hex".into());
        args.extend(value.iter().map(|b| format!("{b:02x}")));
        bpftool(args).map(drop)
    }

    /// Puts program `prog` of this object into slot `index` of prog array
    /// `map`, as a loader fills a tail-call table.
    ///
    /// # Errors
    /// When bpftool or the kernel refuses the update.
    pub fn prog_array_set(&self, map: &str, index: u32, prog: &str) -> Result<(), KernelError> {
        let mut args: Vec<String> = vec![
            "map".into(),
            "update".into(),
            "pinned".into(),
            path_arg(&self.map_pin(map)),
        ];
        args.push("key".into());
        args.push("hex".into());
        args.extend(index.to_le_bytes().iter().map(|b| format!("{b:02x}")));
        args.extend([
            "value".into(),
            "pinned".into(),
            path_arg(&self.prog_pin(prog)),
        ]);
        bpftool(args).map(drop)
    }

    /// Every element of `map`, in bpftool's order. Elements bpftool cannot
    /// read (empty slots of a devmap or prog array) are left out.
    ///
    /// # Errors
    /// When the map cannot be dumped (a ring buffer, for one) or the output
    /// cannot be read.
    pub fn map_dump(&self, map: &str) -> Result<Vec<MapEntry>, KernelError> {
        let pin = self.map_pin(map);
        let stdout = bpftool([
            OsStr::new("-j"),
            OsStr::new("map"),
            OsStr::new("dump"),
            OsStr::new("pinned"),
            pin.as_os_str(),
        ])?;
        let bad = |why: String| KernelError {
            command: format!("map dump {map}"),
            message: why,
        };
        let parsed: Value = serde_json::from_str(&stdout)
            .map_err(|e| bad(format!("unreadable output {stdout:?}: {e}")))?;
        let elems = parsed
            .as_array()
            .ok_or_else(|| bad(format!("not a list: {stdout:?}")))?;
        let mut entries = Vec::with_capacity(elems.len());
        for elem in elems {
            let key = hex_bytes(&elem["key"]).ok_or_else(|| bad(format!("bad key in {elem}")))?;
            if let Some(per_cpu) = elem.get("values").and_then(Value::as_array) {
                let values = per_cpu
                    .iter()
                    .map(|c| hex_bytes(&c["value"]))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad(format!("bad per-CPU value in {elem}")))?;
                entries.push(MapEntry {
                    key,
                    values,
                    percpu: true,
                });
            } else if let Some(value) = hex_bytes(&elem["value"]) {
                entries.push(MapEntry {
                    key,
                    values: vec![value],
                    percpu: false,
                });
            }
            // else: {"value": {"error": ...}}, an empty slot.
        }
        Ok(entries)
    }

    /// The records in ring buffer `map` that user space has not consumed,
    /// oldest first, without consuming them. Discarded records are left
    /// out, as a consumer skips them.
    ///
    /// # Errors
    /// When the pin cannot be opened or mapped, or the buffer's positions
    /// are inconsistent.
    pub fn ringbuf_records(&self, map: &str) -> Result<Vec<Vec<u8>>, KernelError> {
        let pin = self.map_pin(map);
        let err = |what: &str, message: String| KernelError {
            command: format!("{what} {}", pin.display()),
            message,
        };
        let info = bpftool([
            OsStr::new("-j"),
            OsStr::new("map"),
            OsStr::new("show"),
            OsStr::new("pinned"),
            pin.as_os_str(),
        ])?;
        let size = serde_json::from_str::<Value>(&info)
            .ok()
            .and_then(|v| v.get("max_entries").and_then(Value::as_u64))
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| n.is_power_of_two())
            .ok_or_else(|| err("map show", format!("no ring buffer size in {info:?}")))?;
        let fd = obj_get(&pin).map_err(|e| err("BPF_OBJ_GET", e.to_string()))?;
        let mapping = RingMapping::new(&fd, size).map_err(|e| err("mmap", e.to_string()))?;
        mapping.records().map_err(|m| err("read ring buffer", m))
    }
}

/// A path as a command-line argument string.
fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// bpftool's `["0x0a", "0xff", ...]` as bytes.
fn hex_bytes(v: &Value) -> Option<Vec<u8>> {
    v.as_array()?
        .iter()
        .map(|b| u8::from_str_radix(b.as_str()?.strip_prefix("0x")?, 16).ok())
        .collect()
}

/// `bpf(2)` commands used here.
const BPF_OBJ_GET: libc::c_long = 7;

/// Opens the BPF object pinned at `path` (`BPF_OBJ_GET`).
#[allow(unsafe_code)]
fn obj_get(path: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;

    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // union bpf_attr for BPF_OBJ_GET: pathname (u64), bpf_fd, file_flags,
    // path_fd (u32 each); the rest of the union must be zero.
    let mut attr = [0u64; 16];
    attr[0] = cpath.as_ptr() as u64;
    let size = std::mem::size_of_val(&attr) as libc::c_long;
    // SAFETY: bpf(BPF_OBJ_GET) reads `size` bytes of `attr`, which lives
    // until the call returns, and the NUL-terminated path `pathname` points
    // to, which `cpath` keeps alive; it writes nothing to our memory.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, attr.as_mut_ptr(), size) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing
    // else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// A read-only mapping of a BPF ring buffer: the consumer page, the producer
/// page, then the data area mapped twice in a row (so a record that wraps
/// reads contiguously), as `kernel/bpf/ringbuf.c` lays it out.
struct RingMapping {
    base: std::ptr::NonNull<u8>,
    len: usize,
    page: usize,
    size: usize,
}

/// `BPF_RINGBUF_BUSY_BIT`: the record is reserved, not yet committed.
const RINGBUF_BUSY: u32 = 1 << 31;
/// `BPF_RINGBUF_DISCARD_BIT`: the record was discarded.
const RINGBUF_DISCARD: u32 = 1 << 30;
/// `BPF_RINGBUF_HDR_SZ`: `{ u32 len; s32 pg_off; }` before each record.
const RINGBUF_HDR: usize = 8;

#[allow(unsafe_code)]
impl RingMapping {
    fn new(fd: &std::os::fd::OwnedFd, size: usize) -> std::io::Result<RingMapping> {
        use std::os::fd::AsRawFd;

        // SAFETY: sysconf has no memory effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = usize::try_from(page).map_err(|_| std::io::Error::last_os_error())?;
        let len = 2 * page + 2 * size;
        // SAFETY: a new shared read-only mapping chosen by the kernel (addr
        // NULL); it aliases no Rust object, and `Drop` unmaps it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base =
            std::ptr::NonNull::new(ptr.cast::<u8>()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(RingMapping {
            base,
            len,
            page,
            size,
        })
    }

    /// The mapping as bytes.
    fn bytes(&self) -> &[u8] {
        // SAFETY: `base` maps `len` readable bytes for as long as `self`
        // lives. Only the kernel writes them, and only while a program runs,
        // which never overlaps this borrow (test runs are synchronous).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.len) }
    }

    fn u64_at(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.bytes()[off..off + 8].try_into().expect("8 bytes"))
    }

    /// The committed records between the consumer and producer positions.
    fn records(&self) -> Result<Vec<Vec<u8>>, String> {
        let consumer = self.u64_at(0);
        let producer = self.u64_at(self.page);
        if producer < consumer || producer - consumer > self.size as u64 {
            return Err(format!(
                "positions: consumer {consumer}, producer {producer}"
            ));
        }
        let data = &self.bytes()[2 * self.page..];
        let mask = self.size as u64 - 1;
        let mut records = Vec::new();
        let mut pos = consumer;
        while pos < producer {
            let at = (pos & mask) as usize;
            let hdr = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
            if hdr & RINGBUF_BUSY != 0 {
                return Err(format!("record at {pos} is still reserved"));
            }
            let len = (hdr & !(RINGBUF_BUSY | RINGBUF_DISCARD)) as usize;
            if at + RINGBUF_HDR + len > data.len() {
                return Err(format!(
                    "record at {pos} of {len} bytes overruns the buffer"
                ));
            }
            if hdr & RINGBUF_DISCARD == 0 {
                records.push(data[at + RINGBUF_HDR..at + RINGBUF_HDR + len].to_vec());
            }
            pos += (RINGBUF_HDR + len).next_multiple_of(8) as u64;
        }
        Ok(records)
    }
}

#[allow(unsafe_code)]
impl Drop for RingMapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; no borrow of it
        // outlives `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}
