//! `sluice`: the command line.
//!
//! It will become the daemon and its bpftool-like client (`prog load`,
//! `map dump`, `stats`, ...; see the project's issues). Today it runs
//! eBPF programs:
//!
//! ```text
//! sluice asm FILE.s [-o FILE.bin]          assemble conformance-syntax text
//! sluice disasm FILE.bin                   disassemble raw bytecode
//! sluice run-raw FILE.bin|FILE.s [--mem HEX]  run a plain-memory program, print r0
//! ```

fn main() -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
