//! `sluice`: the command line.
//!
//! It will become the daemon and its bpftool-like client (`prog load`,
//! `map dump`, `stats`, ...; see the project's issues). Today it drives the
//! eBPF runtime:
//!
//! ```text
//! sluice daemon --config FILE [--socket PATH] [--log-format text|json]
//! sluice prog load|replace|detach|show|dump ...  [--socket PATH] [-j]   (daemon client)
//! sluice map show|dump|lookup|update|delete|pin|unpin ...              (daemon client)
//! sluice port list | stats [-e] [--count N] | capture PORT -w F.pcapng (daemon client)
//! sluice config check FILE [-j]
//! sluice demo [--duration SECS]         route between two namespaces over AF_XDP (root)
//! sluice conformance [--shared DIR]     assemble and run the bpf_conformance suite
//! sluice asm FILE [-o OUT]              assemble conformance-syntax text to bytecode
//! sluice disasm FILE                    disassemble raw bytecode
//! sluice exec FILE [--mem HEX]          run a plain-memory program, print r0
//! sluice run --port SPEC... [--prog OBJ[:SEC]] [--attach PORT=OBJ[:SEC]]... [--cores LIST]
//!            [--engine interp|jit] [--duration SECS] [--config FILE] [-j]
//! sluice prog run OBJ [--section S] --data-in F [--data-out F] [--repeat N]
//!                 [--map NAME:KEY=VALUE]... [--dump-maps] [--pcap-in F [--pcap-out F]] [-j]
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod api;
mod client;
mod config;
mod daemon;
mod demo;
mod jited;
mod prog;
mod run;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sluice_bpf::helpers::Registry;
use sluice_bpf::{asm, disasm, isa, Program, Vm};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a kernel-bypass eBPF packet dataplane"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum ProgCmd {
    /// Run a program of an ELF object on a packet or a capture, like
    /// `bpftool prog run`.
    Run(prog::RunArgs),
    /// Verify every program of an ELF object, like the kernel does at
    /// load: print each verdict (and with -v the verifier's log); exit
    /// non-zero if any program is refused.
    Verify(prog::VerifyArgs),
    /// Daemon commands: load, replace, detach, show, dump.
    #[command(flatten)]
    Daemon(client::ProgCmd),
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Check a daemon configuration; name the line and field of every error.
    Check {
        /// The TOML file.
        file: PathBuf,
        /// JSON output.
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// Make the running daemon re-read its configuration file and apply
    /// it (programs swapped in, pinned maps kept; SIGHUP does the same).
    Reload {
        #[command(flatten)]
        conn: client::Conn,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a dataplane: ports, programs, cores; live status, final table.
    Run(run::RunArgs),
    /// Sluice routing between two network namespaces over AF_XDP, with
    /// ping and UDP traffic, a live status line and a final table (root;
    /// everything it creates is removed at the end).
    Demo(demo::DemoArgs),
    /// The daemon: a dataplane served over a Unix socket (and HTTP on the
    /// host stack), configured by a TOML file.
    Daemon(daemon::DaemonArgs),
    /// Maps of the daemon: show, dump, lookup, update, delete, pin, unpin.
    Map {
        #[command(subcommand)]
        cmd: client::MapCmd,
    },
    /// Ports of the daemon.
    Port {
        #[command(subcommand)]
        cmd: client::PortCmd,
    },
    /// The daemon's counters, one line per port and interval.
    Stats(client::StatsArgs),
    /// Capture packets at program exit, with their verdicts, to pcapng.
    Capture(client::CaptureArgs),
    /// Configuration files.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Programs: `sluice prog run OBJ --data-in FILE ...`.
    Prog {
        #[command(subcommand)]
        cmd: ProgCmd,
    },
    /// Assemble every program of the bpf_conformance suite from its source
    /// text and run it in the interpreter; report each failure and a summary.
    Conformance {
        /// The `shared/` directory holding `conformance/` (default: beside
        /// the working directory's repository, or /work/shared).
        #[arg(long)]
        shared: Option<PathBuf>,
        /// Print every test, not only failures.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Assemble conformance-syntax text (`%rN` registers, labels) to bytecode.
    Asm {
        /// Source file (a `.data` test file or plain assembler text).
        file: PathBuf,
        /// Write raw bytecode here instead of hex to stdout.
        #[arg(short)]
        output: Option<PathBuf>,
    },
    /// Disassemble raw bytecode (8 bytes per instruction).
    Disasm {
        /// Bytecode file.
        file: PathBuf,
    },
    /// Run a program with r1 = memory, r2 = its length; print r0 in hex.
    Exec {
        /// Program: assembler text (`.s`, `.asm`, `.data`) or raw bytecode.
        file: PathBuf,
        /// Memory as hex bytes (a `.data` file's `-- mem` is used otherwise).
        #[arg(long)]
        mem: Option<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Demo(a) => demo::run(a).map(|()| ExitCode::SUCCESS),
        Cmd::Daemon(a) => daemon::run(a).map(|()| ExitCode::SUCCESS),
        Cmd::Prog {
            cmd: ProgCmd::Daemon(c),
        } => client::prog(c),
        Cmd::Map { cmd } => client::map(cmd),
        Cmd::Port { cmd } => client::port(cmd),
        Cmd::Stats(a) => client::stats(a),
        Cmd::Capture(a) => client::capture(a),
        Cmd::Config {
            cmd: ConfigCmd::Reload { conn },
        } => client::reload(&conn),
        Cmd::Config {
            cmd: ConfigCmd::Check { file, json },
        } => Ok(if config::check(&file, json)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Cmd::Run(a) => {
            let json = a.json;
            match run::run(a) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) if json => {
                    println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => Err(e),
            }
        }
        Cmd::Prog {
            cmd: ProgCmd::Verify(a),
        } => prog::verify(&a),
        Cmd::Prog {
            cmd: ProgCmd::Run(a),
        } => {
            let json = a.json;
            match prog::run(&a) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) if json => {
                    println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => Err(e),
            }
        }
        Cmd::Conformance { shared, verbose } => conformance(&shared_dir(shared)?, verbose),
        Cmd::Asm { file, output } => {
            let (insns, _) = load_text(&file)?;
            let bytes = isa::to_bytes(&insns);
            match output {
                Some(out) => std::fs::write(&out, &bytes)
                    .with_context(|| format!("writing {}", out.display()))?,
                None => println!("{}", hex::encode(bytes)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Disasm { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let insns = isa::slots(&bytes).with_context(|| file.display().to_string())?;
            print!("{}", disasm::disassemble_listing(&insns)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Exec { file, mem } => {
            let (insns, file_mem) = if is_text(&file) {
                load_text(&file)?
            } else {
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                (isa::slots(&bytes)?, Vec::new())
            };
            let mut mem = match mem {
                Some(h) => {
                    hex::decode(h.replace(char::is_whitespace, "")).context("--mem is not hex")?
                }
                None => file_mem,
            };
            let prog = Program::load(insns, &Registry::conformance())?;
            let r0 = Vm::new().run_mem(&prog, &mut mem)?;
            println!("{r0:#x}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn is_text(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("s" | "asm" | "data")
    )
}

/// Assembles a `.data` test file or plain assembler text; returns the
/// program and the test's memory (empty for plain text).
fn load_text(path: &Path) -> Result<(Vec<isa::Insn>, Vec<u8>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().and_then(|e| e.to_str()) == Some("data") {
        let data = asm::parse_data_file(&text).with_context(|| path.display().to_string())?;
        let prog = data.program().with_context(|| path.display().to_string())?;
        Ok((prog, data.mem))
    } else {
        Ok((
            asm::assemble(&text).with_context(|| path.display().to_string())?,
            Vec::new(),
        ))
    }
}

fn shared_dir(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    for candidate in [PathBuf::from("../shared"), PathBuf::from("/work/shared")] {
        if candidate.join("conformance").is_dir() {
            return Ok(candidate);
        }
    }
    bail!("cannot find shared/conformance; pass --shared DIR")
}

fn conformance(shared: &Path, verbose: bool) -> Result<ExitCode> {
    let dir = shared.join("conformance/bpf_conformance/tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "data"))
        .collect();
    files.sort();
    let registry = Registry::conformance();
    let (mut passed, mut failed) = (0usize, 0usize);
    let started = std::time::Instant::now();
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let outcome = (|| -> Result<(u64, u64)> {
            let text = std::fs::read_to_string(path)?;
            let data = asm::parse_data_file(&text)?;
            let expected = data.result.context("no -- result section")?;
            let prog = Program::load(data.program()?, &registry)?;
            let mut mem = data.mem.clone();
            Ok((Vm::new().run_mem(&prog, &mut mem)?, expected))
        })();
        match outcome {
            Ok((r0, want)) if r0 == want => {
                passed += 1;
                if verbose {
                    println!("PASS: {name}");
                }
            }
            Ok((r0, want)) => {
                failed += 1;
                println!("FAIL: {name}: r0 = {r0:#x}, expected {want:#x}");
            }
            Err(e) => {
                failed += 1;
                println!("ERROR: {name}: {e:#}");
            }
        }
    }
    println!(
        "Passed {passed} out of {} tests ({} failed) in {:.1} ms: assembled from source, run in the checked interpreter.",
        files.len(),
        failed,
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
