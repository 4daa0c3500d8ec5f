//! Sluice's JIT side by side with its anchors, in one process: the same
//! three XDP programs as `benches/interp.rs` (`mac_swap`, `parse_udp`,
//! `sum_256`) on
//!
//! * **Sluice JIT**: verified as XDP, context loads converted to the native
//!   context ([`NativeXdpMd`]), compiled, run by a [`JitVm`];
//! * **Sluice interpreter**: [`Vm::run_xdp`] (checked mode);
//! * **rbpf JIT**: `EbpfVmFixedMbuff::execute_program_jit` after
//!   `jit_compile` (rbpf 0.4.1);
//! * **rbpf interpreter**: `EbpfVmMbuff::execute_program`;
//! * **native Rust**: the same logic written in Rust, `#[inline(never)]`;
//! * **Linux JIT**: the kernel's own JIT through `BPF_PROG_TEST_RUN` with a
//!   large repeat count, which reports the mean duration of one run (root
//!   only; `SKIPPED` otherwise).
//!
//! Every engine first runs every program once and must give the same r0
//! (and, for `mac_swap`, the same bytes). Then a plain `Instant` loop times
//! each engine in alternating rounds (so a burst of load on a shared
//! machine hits all of them) and keeps each one's best round; criterion
//! adds its own statistics for the Sluice JIT. The table gives ns/run and
//! the ratios to native Rust and to rbpf's JIT, and checks the targets
//! (Sluice JIT within 1.2x of native Rust, faster than rbpf's JIT).
//!
//! Run with `cargo bench -p sluice-bpf --bench jit`.
#![allow(unsafe_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use sluice_bpf::helpers::Registry;
use sluice_bpf::interp::XdpFrame;
use sluice_bpf::isa::{self, Insn, Instruction};
use sluice_bpf::jit::{self, JitInput, JitOptions, JitProgram, JitVm};
use sluice_bpf::native::NativeXdpMd;
use sluice_bpf::verifier::ProgKind;
use sluice_bpf::{Program, Vm};

// The programs, their packets and builders: `benches/programs/`.
mod programs;

use programs::*;

// ---------------------------------------------------------------------------
// The same logic in Rust

#[inline(never)]
fn native_mac_swap(p: &mut [u8]) -> u64 {
    if p.len() < 14 {
        return XDP_DROP as u64;
    }
    for i in 0..6 {
        p.swap(i, 6 + i);
    }
    XDP_TX as u64
}

#[inline(never)]
fn native_parse_udp(p: &[u8]) -> u64 {
    const FAIL: u64 = 0xffff_ffff;
    if p.len() < 14 + 20 || p[12..14] != [0x08, 0x00] || p[14 + 9] != 17 {
        return FAIL;
    }
    let ihl = usize::from(p[14] & 0x0f) * 4;
    if ihl < 20 || p.len() < 14 + ihl + 8 {
        return FAIL;
    }
    u64::from(u16::from_be_bytes([p[14 + ihl + 2], p[14 + ihl + 3]]))
}

#[inline(never)]
fn native_sum_256(p: &[u8]) -> u64 {
    match p.get(..256) {
        Some(b) => b.iter().map(|&x| u64::from(x)).sum(),
        None => 0,
    }
}

#[inline(never)]
fn native_empty(p: &[u8]) -> u64 {
    black_box(p);
    2
}

// ---------------------------------------------------------------------------
// Engines

/// The verifier's context-access conversion for an engine with real
/// pointers: each `ldxw` of a `struct xdp_md` pointer field becomes an
/// `ldxdw` at the native context's offset.
/// The program as native engines run it: verified, context loads rewritten
/// (what `Program::load_verified` does for every program it loads).
fn native_program(linux: &[Insn]) -> Vec<Insn> {
    Program::load_verified(linux.to_vec(), ProgKind::Xdp, &Registry::xdp(), Vec::new())
        .unwrap_or_else(|e| panic!("Sluice's verifier refuses the benchmark program: {e}"))
        .native_insns()
        .expect("a verified program has native instructions")
        .to_vec()
}

struct SluiceJit {
    prog: JitProgram,
    vm: JitVm,
    ctx: NativeXdpMd,
    buf: Vec<u8>,
}

impl SluiceJit {
    fn new(native: &[Insn], packet: &[u8], options: JitOptions) -> SluiceJit {
        let reg = Registry::xdp();
        let prog = jit::compile(&JitInput::new(native, &reg).options(options))
            .unwrap_or_else(|e| panic!("the JIT refuses the benchmark program: {e}"));
        SluiceJit {
            prog,
            vm: JitVm::new(),
            ctx: NativeXdpMd::default(),
            buf: packet.to_vec(),
        }
    }

    #[inline]
    fn run(&mut self) -> u64 {
        let range = self.buf.as_mut_ptr_range();
        self.ctx.data = range.start as u64;
        self.ctx.data_meta = range.start as u64;
        self.ctx.data_end = range.end as u64;
        // SAFETY: the program passed Sluice's verifier as XDP, and the
        // context delimits `buf`, which is borrowed for the run.
        match unsafe { self.vm.run_xdp(&self.prog, &mut self.ctx) } {
            Ok(r0) => r0,
            Err(e) => faulted(e),
        }
    }
}

#[cold]
#[inline(never)]
fn faulted(e: sluice_bpf::Fault) -> ! {
    panic!("Sluice JIT faulted: {e}")
}

struct SluiceInterp {
    prog: Program,
    vm: Vm,
    buf: Vec<u8>,
}

impl SluiceInterp {
    fn new(linux: &[Insn], packet: &[u8]) -> SluiceInterp {
        SluiceInterp {
            prog: Program::load(linux.to_vec(), &Registry::new()).expect("loads"),
            vm: Vm::new(),
            buf: packet.to_vec(),
        }
    }

    #[inline]
    fn run(&mut self) -> u64 {
        let end = self.buf.len();
        let mut frame = XdpFrame::new(&mut self.buf, 0, end);
        self.vm.run_xdp(&self.prog, &mut frame).expect("runs")
    }
}

struct RbpfJit<'p> {
    vm: rbpf::EbpfVmFixedMbuff<'p>,
    buf: Vec<u8>,
}

impl<'p> RbpfJit<'p> {
    fn new(code: &'p [u8], packet: &[u8]) -> RbpfJit<'p> {
        let mut vm = rbpf::EbpfVmFixedMbuff::new(Some(code), 0, 8).expect("rbpf loads");
        vm.jit_compile().expect("rbpf's JIT compiles");
        RbpfJit {
            vm,
            buf: packet.to_vec(),
        }
    }

    #[inline]
    fn run(&mut self) -> u64 {
        // `execute_program_jit` borrows the packet for the VM's whole
        // lifetime; a fresh slice over the same buffer each run is what its
        // signature allows.
        let (p, n) = (self.buf.as_mut_ptr(), self.buf.len());
        // SAFETY: `p..p+n` is `buf`, alive and not otherwise borrowed while
        // the slice is used (only during this call).
        let mem = unsafe { std::slice::from_raw_parts_mut(p, n) };
        // SAFETY: rbpf's JIT has no bounds checks; the program is the
        // verified benchmark program over this packet.
        unsafe { self.vm.execute_program_jit(mem) }.expect("rbpf JIT runs")
    }
}

struct RbpfInterp<'p> {
    vm: rbpf::EbpfVmMbuff<'p>,
    mbuff: [u8; 16],
    buf: Vec<u8>,
}

impl<'p> RbpfInterp<'p> {
    fn new(code: &'p [u8], packet: &[u8]) -> RbpfInterp<'p> {
        RbpfInterp {
            vm: rbpf::EbpfVmMbuff::new(Some(code)).expect("rbpf loads"),
            mbuff: [0; 16],
            buf: packet.to_vec(),
        }
    }

    #[inline]
    fn run(&mut self) -> u64 {
        let data = self.buf.as_ptr() as u64;
        self.mbuff[0..8].copy_from_slice(&data.to_le_bytes());
        self.mbuff[8..16].copy_from_slice(&(data + self.buf.len() as u64).to_le_bytes());
        self.vm
            .execute_program(&self.buf, &self.mbuff)
            .expect("rbpf runs")
    }
}

// ---------------------------------------------------------------------------
// The kernel's JIT through bpf(2)

mod kernel {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use sluice_bpf::isa::{self, Insn};

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_PROG_TYPE_XDP: u32 = 6;

    /// `union bpf_attr` for `BPF_PROG_LOAD` (the fields used), zero-padded.
    #[repr(C)]
    #[derive(Default)]
    struct ProgLoad {
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
        rest: [u64; 12],
    }

    /// `union bpf_attr` for `BPF_PROG_TEST_RUN`.
    #[repr(C)]
    #[derive(Default)]
    struct TestRun {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        pad: u32,
        rest: [u64; 8],
    }

    fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
        // SAFETY: `attr` is a zero-padded `union bpf_attr` of the size
        // passed, valid for the kernel to read and write during the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut T as *mut libc::c_void,
                std::mem::size_of::<T>() as libc::c_uint,
            )
        };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }

    /// A loaded XDP program.
    pub struct Prog(OwnedFd);

    /// Loads `insns` as an XDP program (the kernel verifies and JITs it);
    /// on failure, loads again with the verifier log for the message.
    pub fn load(name: &str, insns: &[Insn]) -> Result<Prog, String> {
        load_with_log(name, insns, 0).or_else(|_| load_with_log(name, insns, 1))
    }

    fn load_with_log(name: &str, insns: &[Insn], log_level: u32) -> Result<Prog, String> {
        let bytes = isa::to_bytes(insns);
        let license = b"GPL\0";
        let mut log = vec![0u8; if log_level > 0 { 1 << 20 } else { 0 }];
        let mut attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: bytes.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level,
            log_size: log.len() as u32,
            log_buf: if log_level > 0 {
                log.as_mut_ptr() as u64
            } else {
                0
            },
            ..ProgLoad::default()
        };
        // The kernel takes [A-Za-z0-9_.] only.
        for (d, c) in attr.prog_name[..15].iter_mut().zip(
            name.bytes()
                .filter(|c| c.is_ascii_alphanumeric() || *c == b'_'),
        ) {
            *d = c;
        }
        match bpf(BPF_PROG_LOAD, &mut attr) {
            // SAFETY: BPF_PROG_LOAD returned a new file descriptor we own.
            Ok(fd) => Ok(Prog(unsafe { OwnedFd::from_raw_fd(fd as i32) })),
            Err(e) => {
                let text = String::from_utf8_lossy(&log);
                let text = text.trim_end_matches('\0');
                // The end of the log says why.
                let tail = &text[text.len().saturating_sub(400)..];
                Err(format!("BPF_PROG_LOAD: {e}: {tail}"))
            }
        }
    }

    impl Prog {
        /// Runs the program `repeat` times on `data`; returns (r0, mean ns).
        pub fn test_run(&self, data: &[u8], repeat: u32) -> Result<(u32, u32), String> {
            let mut out = vec![0u8; data.len() + 512];
            let mut attr = TestRun {
                prog_fd: self.0.as_raw_fd() as u32,
                data_size_in: data.len() as u32,
                data_size_out: out.len() as u32,
                data_in: data.as_ptr() as u64,
                data_out: out.as_mut_ptr() as u64,
                repeat,
                ..TestRun::default()
            };
            bpf(BPF_PROG_TEST_RUN, &mut attr).map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
            Ok((attr.retval, attr.duration))
        }
    }
}

// ---------------------------------------------------------------------------
// Timing

const ROUNDS: usize = 7;
const ROUND: Duration = Duration::from_millis(60);

/// Best ns/run of each engine over alternating rounds.
fn compare(engines: &mut [&mut dyn FnMut() -> u64]) -> Vec<f64> {
    let n: Vec<u64> = engines.iter_mut().map(|f| calibrate(*f, ROUND)).collect();
    let mut best = vec![f64::INFINITY; engines.len()];
    for _ in 0..ROUNDS {
        for (i, f) in engines.iter_mut().enumerate() {
            best[i] = best[i].min(time_runs(*f, n[i]));
        }
    }
    best
}

struct Case {
    name: &'static str,
    body: Vec<Instruction>,
    packet: Vec<u8>,
    r0: u64,
    after: Vec<u8>,
    native: fn(&mut [u8]) -> u64,
}

fn cases() -> Vec<Case> {
    let udp = udp_packet();
    let mut swapped = udp.clone();
    let (d, s) = swapped.split_at_mut(6);
    d.swap_with_slice(&mut s[..6]);
    let sum = sum_packet();
    let total: u64 = sum.iter().map(|&b| u64::from(b)).sum();
    vec![
        Case {
            name: "mac_swap",
            body: mac_swap(),
            packet: udp.clone(),
            r0: XDP_TX as u64,
            after: swapped,
            native: native_mac_swap,
        },
        Case {
            name: "parse_udp",
            body: parse_udp(),
            packet: udp.clone(),
            r0: u64::from(UDP_DST_PORT),
            after: udp,
            native: |p| native_parse_udp(p),
        },
        Case {
            name: "sum_256",
            body: sum_256(),
            packet: sum.clone(),
            r0: total,
            after: sum,
            native: |p| native_sum_256(p),
        },
        // Not one of the three: `r0 = XDP_PASS` after the prologue, what a
        // run costs before the first instruction of real work.
        Case {
            name: "(empty)",
            body: vec![mov(R0, 2), Instruction::Exit],
            packet: udp_packet(),
            r0: 2,
            after: udp_packet(),
            native: |p| native_empty(p),
        },
    ]
}

struct Row {
    name: &'static str,
    ns: Vec<f64>,
    kernel: Result<f64, String>,
    compile_us: f64,
    /// Code generation only: (us, bytes) with 1 and 2 passes.
    emit: [(f64, usize); 2],
}

const ENGINES: [&str; 5] = [
    "Sluice JIT",
    "Sluice interp",
    "rbpf JIT",
    "rbpf interp",
    "native Rust",
];

fn main() {
    let measuring = !std::env::args()
        .any(|a| a == "--test" || a == "--list" || a.starts_with("--profile-time"));
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    let is_root = {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    };
    let mut rows = Vec::new();
    for case in cases() {
        let linux = slots(Abi::Sluice, &case.body);
        let rbpf_code = isa::to_bytes(&slots(Abi::Rbpf, &case.body));
        let native = native_program(&linux);

        let mut sj = SluiceJit::new(&native, &case.packet, JitOptions::default());
        let mut si = SluiceInterp::new(&linux, &case.packet);
        let mut rj = RbpfJit::new(&rbpf_code, &case.packet);
        let mut ri = RbpfInterp::new(&rbpf_code, &case.packet);
        let mut nbuf = case.packet.clone();
        let nf = case.native;

        // Agreement, outside any timing.
        assert_eq!(sj.run(), case.r0, "{}: Sluice JIT", case.name);
        assert_eq!(si.run(), case.r0, "{}: Sluice interpreter", case.name);
        assert_eq!(rj.run(), case.r0, "{}: rbpf JIT", case.name);
        assert_eq!(ri.run(), case.r0, "{}: rbpf interpreter", case.name);
        assert_eq!(nf(&mut nbuf), case.r0, "{}: native Rust", case.name);
        assert_eq!(sj.buf, case.after, "{}: Sluice JIT packet", case.name);
        assert_eq!(nbuf, case.after, "{}: native packet", case.name);
        let hardened = SluiceJit::new(
            &native,
            &case.packet,
            JitOptions {
                harden: true,
                ..JitOptions::default()
            },
        )
        .run();
        assert_eq!(hardened, case.r0, "{}: Sluice JIT, hardened", case.name);

        // Compile speed: verification excluded, code memory (mmap,
        // mprotect, munmap) included.
        let reg = Registry::xdp();
        let n = 2_000;
        for _ in 0..200 {
            black_box(jit::compile(&JitInput::new(&native, &reg)).expect("compiles"));
        }
        let t = Instant::now();
        for _ in 0..n {
            black_box(jit::compile(&JitInput::new(&native, &reg)).expect("compiles"));
        }
        let compile_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        // Code generation alone, one pass and two.
        let mut emit = [(0.0, 0usize); 2];
        for (k, passes) in [1u8, 2].into_iter().enumerate() {
            let input = JitInput::new(&native, &reg).options(JitOptions {
                passes,
                ..JitOptions::default()
            });
            let t = Instant::now();
            let mut bytes = 0;
            for _ in 0..n {
                bytes = black_box(jit::emit_code(&input).expect("emits")).len();
            }
            emit[k] = (t.elapsed().as_secs_f64() * 1e6 / f64::from(n), bytes);
        }

        let mut group = criterion.benchmark_group(format!("jit/{}", case.name));
        group.bench_function("sluice_jit", |b| b.iter(|| black_box(sj.run())));
        group.bench_function("rbpf_jit", |b| b.iter(|| black_box(rj.run())));
        group.bench_function("native", |b| b.iter(|| black_box(nf(black_box(&mut nbuf)))));
        group.finish();

        if !measuring {
            continue;
        }
        let kernel = if is_root && std::env::var_os("SLUICE_BENCH_NO_KERNEL").is_none() {
            kernel::load(case.name, &linux).and_then(|p| {
                let (r0, _) = p.test_run(&case.packet, 1)?;
                if u64::from(r0) != case.r0 {
                    return Err(format!("kernel r0 {r0} != {}", case.r0));
                }
                // Best of a few long runs, like the other engines.
                let mut best = u32::MAX;
                for _ in 0..5 {
                    best = best.min(p.test_run(&case.packet, 5_000_000)?.1);
                }
                Ok(f64::from(best))
            })
        } else {
            Err("SKIPPED (needs root)".into())
        };
        let ns = compare(&mut [
            &mut || sj.run(),
            &mut || si.run(),
            &mut || rj.run(),
            &mut || ri.run(),
            &mut || nf(black_box(&mut nbuf)),
        ]);
        rows.push(Row {
            name: case.name,
            ns,
            kernel,
            compile_us,
            emit,
        });
    }
    criterion.final_summary();
    if rows.is_empty() {
        return;
    }

    println!();
    println!(
        "ns/run, best of {ROUNDS} alternating rounds (Linux JIT: mean of BPF_PROG_TEST_RUN, \
         best of 5 x 5,000,000 runs)"
    );
    print!("{:<10}", "program");
    for e in ENGINES {
        print!(" {e:>14}");
    }
    println!(
        " {:>14} {:>12} {:>12}",
        "Linux JIT", "JIT/native", "rbpfJIT/JIT"
    );
    for r in &rows {
        print!("{:<10}", r.name);
        for v in &r.ns {
            print!(" {v:>14.2}");
        }
        match &r.kernel {
            Ok(k) => print!(" {k:>14.1}"),
            Err(_) => print!(" {:>14}", "SKIPPED"),
        }
        println!(" {:>11.2}x {:>11.2}x", r.ns[0] / r.ns[4], r.ns[2] / r.ns[0]);
    }
    println!();
    for r in &rows {
        if let Err(e) = &r.kernel {
            println!("Linux JIT, {}: {e}", r.name);
        }
        let nslots = cases()
            .iter()
            .find(|c| c.name == r.name)
            .map_or(0, |c| slots(Abi::Sluice, &c.body).len());
        println!(
            "compile {}: {nslots} slots; code generation {:.2} us / {} bytes with 1 pass, \
             {:.2} us / {} bytes with 2; with code memory {:.1} us",
            r.name, r.emit[0].0, r.emit[0].1, r.emit[1].0, r.emit[1].1, r.compile_us
        );
    }
    println!();
    for r in rows.iter().filter(|r| !r.name.starts_with('(')) {
        let vs_native = r.ns[0] / r.ns[4];
        let vs_rbpf = r.ns[2] / r.ns[0];
        println!(
            "{}: Sluice JIT {:.2}x native Rust ({} the 1.2x target), {:.2}x faster than \
             rbpf's JIT ({})",
            r.name,
            vs_native,
            if vs_native <= 1.2 { "meets" } else { "MISSES" },
            vs_rbpf,
            if vs_rbpf > 1.0 { "meets" } else { "MISSES" },
        );
    }
}
