//! `sluice-conformance-plugin --jit` (and `--jit-harden`) through the
//! plugin protocol, exactly as upstream's `bpf_conformance_runner` drives
//! it (see `plugin.rs` for the interpreter): one process per test, memory as
//! one argv element of hex bytes each followed by two spaces, the program on
//! stdin, r0 in hex on stdout.
#![cfg(all(feature = "jit", target_arch = "x86_64"))]

use std::io::Write;
use std::process::{Command, Stdio};

use serde::Deserialize;

mod common;

#[derive(Deserialize)]
struct Case {
    file: String,
    mem: String,
    result: String,
    program: String,
}

fn runner_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}  ")).collect()
}

/// (success, stdout, stderr)
fn run_plugin(program: &[u8], mem: &[u8], options: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-conformance-plugin"));
    if !mem.is_empty() {
        cmd.arg(runner_hex(mem));
    }
    cmd.args(options)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn plugin");
    let mut stdin = child.stdin.take().expect("piped stdin");
    writeln!(stdin, "{}", runner_hex(program)).expect("write program");
    drop(stdin);
    let out = child.wait_with_output().expect("plugin output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_suite(options: &[&str]) {
    let path = common::shared_dir().join("conformance/assembled_tests.jsonl");
    let cases: Vec<Case> = std::fs::read_to_string(path)
        .expect("assembled_tests.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect();
    assert_eq!(cases.len(), 313);
    let mut passed = 0;
    let mut failures = Vec::new();
    for c in &cases {
        let expected = u64::from_str_radix(c.result.trim_start_matches("0x"), 16).unwrap();
        let (ok, stdout, stderr) = run_plugin(
            &hex::decode(&c.program).unwrap(),
            &hex::decode(&c.mem).unwrap(),
            options,
        );
        let text = stdout.strip_suffix('\n').unwrap_or(&stdout);
        match (ok, u64::from_str_radix(text.trim_start_matches("0x"), 16)) {
            (true, Ok(r0)) if r0 == expected => passed += 1,
            _ => failures.push(format!(
                "{}: ok={ok} stdout={stdout:?} stderr={stderr:?}",
                c.file
            )),
        }
    }
    println!(
        "plugin {options:?}: Passed {passed} out of {} tests.",
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn plugin_passes_the_suite_with_jit() {
    run_suite(&["--jit"]);
}

#[test]
fn plugin_passes_the_suite_with_jit_harden() {
    run_suite(&["--jit-harden", ""]);
}

#[test]
fn plugin_refuses_unverifiable_programs_under_jit() {
    // An out-of-bounds read: ldxw r0, [r1+0] with no memory. The verifier
    // refuses it, so it never reaches native code.
    let prog = [0x61, 0x10, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    let (ok, stdout, stderr) = run_plugin(&prog, &[], &["--jit"]);
    assert!(!ok);
    assert!(stdout.is_empty());
    assert!(stderr.contains("verifier"), "{stderr}");
    // An infinite loop is refused too (the JIT has no budget to stop it).
    let prog = [0x05, 0, 0xff, 0xff, 0, 0, 0, 0];
    let (ok, _, stderr) = run_plugin(&prog, &[], &["--jit"]);
    assert!(!ok);
    assert!(stderr.contains("verifier"), "{stderr}");
}
