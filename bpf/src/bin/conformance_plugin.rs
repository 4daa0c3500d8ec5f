//! `sluice-conformance-plugin`: runs one bpf_conformance test program.
//!
//! Protocol (see shared/conformance/README.md §4): the program arrives on
//! stdin as hex bytes (every non-hex character is ignored); the test's memory,
//! if any, is the first argument, also hex; options follow. On success r0 is
//! printed in hex on stdout and the exit status is 0; on failure a one-line
//! message goes to stderr and the status is 1.
//!
//! Options: `--interpret` (the default), `--jit` (refused until the JIT
//! exists), `--program HEX` (program as an argument instead of stdin),
//! `--elf` (refused: raw bytecode only). Empty arguments are ignored.

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

fn run() -> Result<u64, String> {
    let mut mem: Option<Vec<u8>> = None;
    let mut program: Option<Vec<u8>> = None;
    let mut args = std::env::args().skip(1).filter(|a| !a.is_empty());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--interpret" => {}
            "--jit" => return Err("--jit: the JIT is not built yet".into()),
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
    let prog = Program::from_bytes(&bytes, &Registry::conformance()).map_err(|e| e.to_string())?;
    let mut mem = mem.unwrap_or_default();
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
