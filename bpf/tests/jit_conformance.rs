//! The bpf_conformance suite (313 programs) on the x86-64 JIT, in every
//! code-generation configuration: default, and hardened (constant
//! blinding) with one emission pass and without BMI2, so both shift
//! sequences, both jump-shortening modes and the blinded forms of every
//! immediate are exercised.
//!
//! Each program first runs in the checked interpreter on a copy of its
//! memory. That is the expected result's cross-check, and it is also what
//! makes the native run sound before the verifier gates the JIT: a run that
//! the checked interpreter finished without a fault touches only the test's
//! memory and stack, and the JIT computes the same addresses. The JIT must
//! then give the expected r0 and leave memory exactly as the interpreter
//! did.
#![cfg(all(feature = "jit", target_arch = "x86_64"))]
#![allow(unsafe_code)]

mod common;

use common::shared_dir;
use serde::Deserialize;
use sluice_bpf::helpers::Registry;
use sluice_bpf::isa;
use sluice_bpf::jit::{self, JitInput, JitOptions, JitVm};
use sluice_bpf::{Program, Vm};

#[derive(Deserialize)]
struct Case {
    file: String,
    mem: String,
    result: String,
    program: String,
}

fn cases() -> Vec<Case> {
    let path = shared_dir().join("conformance/assembled_tests.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

const CONFIGS: [(&str, JitOptions); 2] = [
    (
        "default",
        JitOptions {
            harden: false,
            bmi2: None,
            passes: 2,
        },
    ),
    (
        "hardened, 1 pass, no BMI2",
        JitOptions {
            harden: true,
            bmi2: Some(false),
            passes: 1,
        },
    ),
];

#[test]
fn all_conformance_programs_pass_on_the_jit() {
    let cases = cases();
    assert_eq!(cases.len(), 313, "the suite has 313 programs");
    let registry = Registry::conformance();
    let mut failures = Vec::new();
    let mut passed = [0usize; CONFIGS.len()];
    for c in &cases {
        let expected = u64::from_str_radix(c.result.trim_start_matches("0x"), 16).unwrap();
        let bytes = hex::decode(&c.program).unwrap();
        let mem = hex::decode(&c.mem).unwrap();
        // The checked run: expected result and the gate for the native run.
        let mut checked_mem = mem.clone();
        let checked = Program::from_bytes(&bytes, &registry)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                Vm::new()
                    .run_mem(&p, &mut checked_mem)
                    .map_err(|e| e.to_string())
            });
        if checked != Ok(expected) {
            failures.push(format!("{}: interpreter gives {checked:?}", c.file));
            continue;
        }
        let slots = isa::slots(&bytes).unwrap();
        for (k, (name, options)) in CONFIGS.iter().enumerate() {
            let prog = match jit::compile(&JitInput::new(&slots, &registry).options(*options)) {
                Ok(p) => p,
                Err(e) => {
                    failures.push(format!("{} [{name}]: compile: {e}", c.file));
                    continue;
                }
            };
            let mut jit_mem = mem.clone();
            // SAFETY: the checked interpreter just ran this program on the
            // same memory without a fault, so it accesses only that memory
            // and its stack (see the module docs).
            let r = unsafe { JitVm::new().run_mem(&prog, &mut jit_mem) };
            match r {
                Ok(r0) if r0 == expected && jit_mem == checked_mem => passed[k] += 1,
                Ok(r0) if r0 == expected => {
                    failures.push(format!("{} [{name}]: memory differs", c.file))
                }
                other => failures.push(format!(
                    "{} [{name}]: {other:?}, expected {expected:#x}",
                    c.file
                )),
            }
        }
    }
    for (k, (name, _)) in CONFIGS.iter().enumerate() {
        println!(
            "conformance (JIT, {name}): {} of {} passed",
            passed[k],
            cases.len()
        );
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
