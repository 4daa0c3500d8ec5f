//! The bpf_conformance suite (313 programs) and its 45 negative programs,
//! run from the pre-assembled `assembled_*.jsonl` files in `shared/`.

mod common;

use common::shared_dir;
use serde::Deserialize;
use sluice_bpf::helpers::Registry;
use sluice_bpf::verifier::ProgKind;
use sluice_bpf::{Program, Vm};

#[derive(Deserialize)]
struct Case {
    file: String,
    mem: String,
    result: String,
    program: String,
}

#[derive(Deserialize)]
struct Negative {
    file: String,
    program: String,
}

fn lines<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<T> {
    let path = shared_dir().join("conformance").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

#[test]
fn all_conformance_programs_pass_in_the_interpreter() {
    let cases: Vec<Case> = lines("assembled_tests.jsonl");
    assert_eq!(cases.len(), 313, "the suite has 313 programs");
    let registry = Registry::conformance();
    let mut failures = Vec::new();
    for c in &cases {
        let expected = u64::from_str_radix(c.result.trim_start_matches("0x"), 16).unwrap();
        let bytes = hex::decode(&c.program).unwrap();
        let mut mem = hex::decode(&c.mem).unwrap();
        let outcome = Program::from_bytes(&bytes, &registry)
            .map_err(|e| format!("load: {e}"))
            .and_then(|p| {
                Vm::new()
                    .run_mem(&p, &mut mem)
                    .map_err(|e| format!("run: {e}"))
            });
        match outcome {
            Ok(r0) if r0 == expected => {}
            Ok(r0) => failures.push(format!("{}: r0 = {r0:#x}, expected {expected:#x}", c.file)),
            Err(e) => failures.push(format!("{}: {e}", c.file)),
        }
    }
    println!(
        "conformance (interpreter): {} of {} passed",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn all_negative_programs_are_rejected_at_load() {
    let cases: Vec<Negative> = lines("assembled_negative.jsonl");
    assert_eq!(cases.len(), 45);
    let registry = Registry::conformance();
    for c in &cases {
        let bytes = hex::decode(&c.program).unwrap();
        match Program::from_bytes(&bytes, &registry) {
            Ok(_) => panic!("{}: loaded, but it must be rejected", c.file),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with("insn "),
                    "{}: message names no instruction: {msg}",
                    c.file
                );
                println!("{}: rejected: {msg}", c.file);
            }
        }
    }
    println!(
        "negative: {} of {} rejected at load",
        cases.len(),
        cases.len()
    );
}

#[test]
fn all_conformance_programs_verify_and_pass_natively_and_checked() {
    // What the plugin does: verify each program as a plain-memory program
    // of exactly its test's memory, then run it — natively (the verified
    // fast path) and in the checked mode as a sanitizer.
    let cases: Vec<Case> = lines("assembled_tests.jsonl");
    let registry = Registry::conformance();
    let mut failures = Vec::new();
    let mut passed = 0;
    for c in &cases {
        let expected = u64::from_str_radix(c.result.trim_start_matches("0x"), 16).unwrap();
        let insns = sluice_bpf::isa::slots(&hex::decode(&c.program).unwrap()).unwrap();
        let mem = hex::decode(&c.mem).unwrap();
        let kind = ProgKind::Memory {
            len: mem.len() as u32,
        };
        let prog = match Program::load_verified(insns, kind, &registry, Vec::new()) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{}: verifier: {e}", c.file));
                continue;
            }
        };
        let mut ok = true;
        for checked in [false, true] {
            let mut vm = Vm::new();
            vm.set_checked(checked);
            let mut m = mem.clone();
            match vm.run_mem(&prog, &mut m) {
                Ok(r0) if r0 == expected => {}
                Ok(r0) => {
                    ok = false;
                    failures.push(format!(
                        "{} (checked={checked}): r0 = {r0:#x}, expected {expected:#x}",
                        c.file
                    ));
                }
                Err(e) => {
                    ok = false;
                    failures.push(format!("{} (checked={checked}): {e}", c.file));
                }
            }
        }
        passed += usize::from(ok);
    }
    println!(
        "conformance (verified; native and checked): {passed} of {} passed",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
