//! `sluice-conformance-plugin`: runs one bpf_conformance test program.
//!
//! Protocol (see shared/conformance/README.md §4): the program arrives on
//! stdin as hex bytes (every non-hex character is ignored); the test's memory,
//! if any, is the first argument, also hex; options follow. On success r0 is
//! printed in hex on stdout and the exit status is 0; on failure a one-line
//! message goes to stderr and the status is 1.
//!
//! Options: `--interpret` (the default: verify the program for the test's
//! memory, then interpret it without run-time checks), `--checked` (no
//! verification; every access checked at run time: the sanitizer), `--jit` (verify the program for
//! the test's memory, then run it as x86-64 machine code: the native path
//! of a verified program, with no run-time checks), `--jit-harden` (as
//! `--jit`, with constant blinding), `--program HEX` (program as an
//! argument instead of stdin), `--elf` (refused: raw bytecode only). Empty
//! arguments are ignored.

use std::io::Read;
use std::process::ExitCode;

use sluice_bpf::helpers::Registry;
use sluice_bpf::{Program, Vm};

fn hex_bytes(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    Ok(digits
        .chunks_exact(2)
        .map(|p| {
            let n = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            n(p[0]) << 4 | n(p[1])
        })
        .collect())
}

/// How the program runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Engine {
    Interpret,
    Jit {
        harden: bool,
    },
    /// Unverified, every memory access checked at run time (a sanitizer).
    Checked,
}

/// Verifies `bytes` as a plain-memory program for `mem`, compiles it and
/// runs it natively.
#[cfg(all(feature = "jit", target_arch = "x86_64"))]
#[allow(unsafe_code)]
fn run_jit(bytes: &[u8], mem: &mut [u8], harden: bool) -> Result<u64, String> {
    use sluice_bpf::jit::{self, JitInput, JitVm};
    use sluice_bpf::maps::MapDef;
    use sluice_bpf::verifier::{verify, ProgKind, VerifyOptions};

    let registry = Registry::conformance();
    let slots = sluice_bpf::isa::slots(bytes).map_err(|e| e.to_string())?;
    let len = u32::try_from(mem.len()).map_err(|_| "memory larger than 4 GiB".to_string())?;
    verify(
        &slots,
        ProgKind::Memory { len },
        &registry,
        &[] as &[MapDef],
        &VerifyOptions::default(),
    )
    .map_err(|e| format!("verifier: {e}"))?;
    let prog = jit::compile(&JitInput::new(&slots, &registry).harden(harden))
        .map_err(|e| e.to_string())?;
    // SAFETY: the verifier just proved the program safe as a plain-memory
    // program over exactly `mem.len()` bytes, which is what it runs on.
    unsafe { JitVm::new().run_mem(&prog, mem) }.map_err(|e| e.to_string())
}

#[cfg(not(all(feature = "jit", target_arch = "x86_64")))]
fn run_jit(_: &[u8], _: &mut [u8], _: bool) -> Result<u64, String> {
    Err("--jit: this build has no JIT (x86-64 with the `jit` feature only)".into())
}

fn run() -> Result<u64, String> {
    let mut mem: Option<Vec<u8>> = None;
    let mut program: Option<Vec<u8>> = None;
    let mut engine = Engine::Interpret;
    let mut args = std::env::args().skip(1).filter(|a| !a.is_empty());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--interpret" => engine = Engine::Interpret,
            "--checked" => engine = Engine::Checked,
            "--jit" => engine = Engine::Jit { harden: false },
            "--jit-harden" => engine = Engine::Jit { harden: true },
            "--elf" => return Err("--elf: only raw bytecode is supported".into()),
            "--program" => {
                let hex = args.next().ok_or("--program needs a hex argument")?;
                program = Some(hex_bytes(&hex)?);
            }
            a if a.starts_with("--") => return Err(format!("unknown option {a}")),
            a if mem.is_none() => mem = Some(hex_bytes(a)?),
            a => return Err(format!("unexpected argument {a:?}")),
        }
    }
    let bytes = match program {
        Some(p) => p,
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("reading the program from stdin: {e}"))?;
            hex_bytes(&text)?
        }
    };
    let mut mem = mem.unwrap_or_default();
    if let Engine::Jit { harden } = engine {
        return run_jit(&bytes, &mut mem, harden);
    }
    let registry = Registry::conformance();
    if engine == Engine::Checked {
        // The sanitizer: no verification, every access checked at run time.
        let prog = Program::from_bytes(&bytes, &registry).map_err(|e| e.to_string())?;
        let mut vm = Vm::new();
        vm.set_checked(true);
        return vm.run_mem(&prog, &mut mem).map_err(|e| e.to_string());
    }
    // Like every program Sluice runs: verified first (as a plain-memory
    // program over exactly this memory), then interpreted natively.
    let slots = sluice_bpf::isa::slots(&bytes).map_err(|e| e.to_string())?;
    let len = u32::try_from(mem.len()).map_err(|_| "memory larger than 4 GiB".to_string())?;
    let prog = Program::load_verified(
        slots,
        sluice_bpf::verifier::ProgKind::Memory { len },
        &registry,
        Vec::new(),
    )
    .map_err(|e| match e {
        sluice_bpf::LoadError::Verify(v) => format!("verifier: {v}"),
        other => other.to_string(),
    })?;
    Vm::new()
        .run_mem(&prog, &mut mem)
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match run() {
        Ok(r0) => {
            println!("{r0:x}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
