//! Drives `sluice-conformance-plugin` exactly as upstream's
//! `bpf_conformance_runner` does (shared/conformance/README.md §4): one
//! process per test, memory as one argv element of hex bytes each followed
//! by two spaces, the program on stdin in the same format, r0 parsed from
//! stdout with base 16 after one trailing newline is removed.

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

/// The runner's byte format: lowercase hex, two spaces after each byte.
fn runner_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}  ")).collect()
}

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run_plugin(program: &[u8], mem: &[u8], options: &[&str]) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-conformance-plugin"));
    if !mem.is_empty() {
        cmd.arg(runner_hex(mem));
    }
    cmd.args(options)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn plugin");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", runner_hex(program)).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    Outcome {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn cases() -> Vec<Case> {
    let path = common::shared_dir().join("conformance/assembled_tests.jsonl");
    std::fs::read_to_string(path)
        .expect("assembled_tests.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run_suite(options: &[&str]) {
    let cases = cases();
    let mut passed = 0;
    let mut failures = Vec::new();
    for c in &cases {
        let expected = u64::from_str_radix(c.result.trim_start_matches("0x"), 16).unwrap();
        let out = run_plugin(
            &hex::decode(&c.program).unwrap(),
            &hex::decode(&c.mem).unwrap(),
            options,
        );
        let text = out.stdout.strip_suffix('\n').unwrap_or(&out.stdout);
        match (
            out.ok,
            u64::from_str_radix(text.trim_start_matches("0x"), 16),
        ) {
            (true, Ok(r0)) if r0 == expected => passed += 1,
            _ => failures.push(format!(
                "{}: ok={} stdout={:?} stderr={:?}",
                c.file, out.ok, out.stdout, out.stderr
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
fn plugin_passes_the_suite_with_default_options() {
    run_suite(&[]);
}

#[test]
fn plugin_passes_the_suite_with_checked() {
    run_suite(&["--checked"]);
}

#[test]
fn plugin_passes_the_suite_with_interpret() {
    // As the runner passes `--plugin_options "--interpret"`; an empty
    // trailing argument (double space in the option string) is ignored.
    run_suite(&["--interpret", ""]);
}

#[test]
fn plugin_reports_failures_on_stderr_with_nonzero_status() {
    // An out-of-bounds read: ldxw r0, [r1+0] with no memory. Refused by the
    // verifier by default; caught at run time by the checked sanitizer.
    let prog = [0x61, 0x10, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    let out = run_plugin(&prog, &[], &[]);
    assert!(!out.ok);
    assert!(out.stdout.is_empty());
    assert!(out.stderr.starts_with("verifier: "), "{}", out.stderr);
    let out = run_plugin(&prog, &[], &["--checked"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("invalid memory access"),
        "{}",
        out.stderr
    );
    // A reserved field set.
    let prog = [0x95, 0x01, 0, 0, 0, 0, 0, 0];
    let out = run_plugin(&prog, &[], &[]);
    assert!(!out.ok);
    assert!(out.stderr.contains("reserved field dst"), "{}", out.stderr);
    // An infinite loop: refused by the verifier; the checked sanitizer ends
    // it with the budget.
    let prog = [0x05, 0, 0xff, 0xff, 0, 0, 0, 0];
    let out = run_plugin(&prog, &[], &[]);
    assert!(!out.ok);
    assert!(out.stderr.starts_with("verifier: "), "{}", out.stderr);
    let out = run_plugin(&prog, &[], &["--checked"]);
    assert!(!out.ok);
    assert!(out.stderr.contains("budget"), "{}", out.stderr);
}
