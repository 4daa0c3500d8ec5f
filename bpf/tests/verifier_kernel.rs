//! Kernel agreement: every XDP case of `tests/verifier/cases.txt` also goes
//! through the Linux kernel's verifier (`BPF_PROG_LOAD`, as root), with its
//! maps created by `BPF_MAP_CREATE` and its map references patched from
//! Sluice's loader indices (`BPF_PSEUDO_MAP_IDX{,_VALUE}`) to the kernel's
//! file descriptors (`BPF_PSEUDO_MAP_FD` / `BPF_PSEUDO_MAP_VALUE`).
//!
//! The test prints how many verdicts agree and lists every intentional
//! difference with its reason (the `linux:`/`why:` lines of the table). It
//! fails when
//!
//! * Linux refuses a program Sluice accepts and the table does not say why
//!   (Sluice must never accept what Linux refuses for safety; the listed
//!   exceptions are rules of the RFC Linux does not follow, such as masked
//!   shift counts and division by a constant zero);
//! * Linux accepts a program Sluice refuses and the table does not say why;
//! * an annotation no longer matches what the kernel does.
//!
//! Without root (or without `bpf(2)`) it prints a loud SKIPPED line and
//! passes, unless `CI=true`, where it fails: CI runs as root. The table was
//! recorded on Linux 6.18.

#![allow(unsafe_code)]

#[path = "verifier/support.rs"]
mod support;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use sluice_bpf::asm::assemble;
use sluice_bpf::helpers::Registry;
use sluice_bpf::isa::{pseudo, Insn};
use sluice_bpf::maps::MapDef;
use sluice_bpf::verifier::{verify, ProgKind, VerifyOptions};
use support::{load_cases, Case, Linux};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// Size of the `union bpf_attr` prefix this test fills (the kernel wants
/// every byte it does not know to be zero, which they are).
const ATTR_SIZE: usize = 128;

/// `bpf(cmd, attr, ATTR_SIZE)`: a new file descriptor, or the OS error.
fn bpf(cmd: libc::c_long, attr: &mut [u8; ATTR_SIZE]) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid, writable buffer of ATTR_SIZE bytes laid out
    // as the kernel's `union bpf_attr` for `cmd`; every pointer stored in it
    // (instructions, license, log buffer) outlives the call, which is
    // synchronous.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            ATTR_SIZE as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: on success bpf(2) returns a new file descriptor that nothing
    // else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn put_u32(attr: &mut [u8], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(attr: &mut [u8], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// `BPF_MAP_CREATE` for a case's map (and its inner template first).
fn map_create(def: &MapDef) -> std::io::Result<OwnedFd> {
    let inner = match &def.inner {
        Some(i) => Some(map_create(i)?),
        None => None,
    };
    let mut attr = [0u8; ATTR_SIZE];
    put_u32(&mut attr, 0, def.map_type.to_u32());
    put_u32(&mut attr, 4, def.key_size);
    put_u32(&mut attr, 8, def.value_size);
    put_u32(&mut attr, 12, def.max_entries);
    put_u32(&mut attr, 16, def.flags);
    if let Some(fd) = &inner {
        put_u32(&mut attr, 20, fd.as_raw_fd() as u32);
    }
    bpf(BPF_MAP_CREATE, &mut attr)
}

/// What the kernel said.
enum Verdict {
    Accepted,
    Rejected(String),
}

/// `BPF_PROG_LOAD` as an XDP program; on refusal, the last line of the
/// verifier's log (loaded again with a log, which costs only on failure).
fn prog_load(insns: &[Insn]) -> Verdict {
    let license = b"GPL\0";
    let bytes = sluice_bpf::isa::to_bytes(insns);
    let load = |log: Option<&mut Vec<u8>>| {
        let mut attr = [0u8; ATTR_SIZE];
        put_u32(&mut attr, 0, BPF_PROG_TYPE_XDP);
        put_u32(&mut attr, 4, insns.len() as u32);
        put_u64(&mut attr, 8, bytes.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        if let Some(buf) = log {
            put_u32(&mut attr, 24, 1);
            put_u32(&mut attr, 28, buf.len() as u32);
            put_u64(&mut attr, 32, buf.as_mut_ptr() as u64);
        }
        attr[48..48 + 7].copy_from_slice(b"vercase");
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    match load(None) {
        Ok(_) => Verdict::Accepted,
        Err(err) => {
            let mut buf = vec![0u8; 16 << 20];
            let _ = load(Some(&mut buf));
            let text =
                String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == 0).unwrap_or(0)])
                    .into_owned();
            let msg = text
                .lines()
                .rev()
                .find(|l| {
                    !l.starts_with("processed ")
                        && !l.starts_with("verification time")
                        && !l.starts_with("stack depth")
                        && !l.trim().is_empty()
                })
                .unwrap_or("")
                .to_string();
            Verdict::Rejected(format!("{msg} ({err})"))
        }
    }
}

/// The case's program with map references turned into the kernel's fds.
fn patch_maps(insns: &[Insn], fds: &[OwnedFd]) -> Vec<Insn> {
    let mut out = insns.to_vec();
    let mut i = 0;
    while i < out.len() {
        if out[i].code == 0x18 {
            let fd_of = |idx: i32| {
                usize::try_from(idx)
                    .ok()
                    .and_then(|i| fds.get(i))
                    .map_or(-1, |fd| fd.as_raw_fd())
            };
            match out[i].src {
                pseudo::MAP_IDX => {
                    out[i].src = pseudo::MAP_FD;
                    out[i].imm = fd_of(out[i].imm);
                }
                pseudo::MAP_IDX_VALUE => {
                    out[i].src = pseudo::MAP_VALUE;
                    out[i].imm = fd_of(out[i].imm);
                }
                _ => {}
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

fn kernel_usable() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    let probe = MapDef {
        name: "probe".into(),
        map_type: sluice_bpf::maps::MapType::Array,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        flags: 0,
        pinning: sluice_bpf::maps::Pinning::None,
        inner: None,
    };
    map_create(&probe)
        .map(drop)
        .map_err(|e| format!("bpf(BPF_MAP_CREATE) fails: {e}"))
}

#[test]
fn kernel_agrees_with_the_case_table() {
    if let Err(why) = kernel_usable() {
        let msg = format!(
            "\n********************************************************************\n\
             *** SKIPPED verifier_kernel: {why}.\n\
             *** The Linux verifier agreement test needs root and bpf(2).\n\
             ********************************************************************\n"
        );
        eprintln!("{msg}");
        println!("{msg}");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but the kernel agreement test cannot run: {why}"
        );
        return;
    }
    let cases = load_cases();
    let mut agree = 0;
    let mut differences: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut skipped = 0;
    for c in &cases {
        if c.linux == Linux::Skip || c.kind != ProgKind::Xdp {
            skipped += 1;
            continue;
        }
        let insns = assemble(&c.code).expect("case assembles");
        let sluice = verify(
            &insns,
            c.kind,
            &Registry::xdp(),
            &c.maps,
            &VerifyOptions::default(),
        );
        let fds: Vec<OwnedFd> = match c.maps.iter().map(map_create).collect() {
            Ok(f) => f,
            Err(e) => {
                failures.push(format!(
                    "cases.txt:{} {}: map creation: {e}",
                    c.line, c.name
                ));
                continue;
            }
        };
        let verdict = prog_load(&patch_maps(&insns, &fds));
        let (kernel_ok, kernel_msg) = match &verdict {
            Verdict::Accepted => (true, String::new()),
            Verdict::Rejected(m) => (false, m.clone()),
        };
        let sluice_ok = sluice.is_ok();
        let sluice_msg = match &sluice {
            Ok(_) => String::new(),
            Err(e) => e.reason.to_string(),
        };
        let described = describe(c, kernel_ok, &kernel_msg, sluice_ok, &sluice_msg);
        if kernel_ok == sluice_ok {
            agree += 1;
            if c.linux != Linux::Same {
                failures.push(format!(
                    "stale annotation, Linux agrees with Sluice: {described}"
                ));
            }
            continue;
        }
        let annotated = c.linux_accepts() == Some(kernel_ok);
        match (annotated, sluice_ok) {
            (true, _) => differences.push(format!(
                "{described}\n      why: {}",
                c.why.as_deref().unwrap_or("")
            )),
            (false, true) => failures.push(format!(
                "SAFETY: Sluice accepts what Linux refuses, and the table does not say why: \
                 {described}"
            )),
            (false, false) => failures.push(format!(
                "undocumented difference, Linux accepts what Sluice refuses: {described}"
            )),
        }
    }
    let run = cases.len() - skipped;
    println!(
        "kernel agreement: {run} cases run through BPF_PROG_LOAD ({skipped} plain-memory cases \
         skipped): {agree} agree, {} intentional differences, {} failures",
        differences.len(),
        failures.len()
    );
    println!("intentional differences:");
    for d in &differences {
        println!("  - {d}");
    }
    assert!(
        failures.is_empty(),
        "{} kernel agreement failures:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

fn describe(
    c: &Case,
    kernel_ok: bool,
    kernel_msg: &str,
    sluice_ok: bool,
    sluice_msg: &str,
) -> String {
    let v = |ok: bool, msg: &str| {
        if ok {
            "accepts".to_string()
        } else {
            format!("refuses ({msg})")
        }
    };
    format!(
        "cases.txt:{} {:?}: Linux {}, Sluice {}",
        c.line,
        c.name,
        v(kernel_ok, kernel_msg),
        v(sluice_ok, sluice_msg)
    )
}
