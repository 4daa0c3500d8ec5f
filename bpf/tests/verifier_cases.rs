//! The verifier's case table (`tests/verifier/cases.txt`): each program
//! with Sluice's expected verdict and, for rejections, the kind of reason
//! and often the instruction. Accepted XDP cases also run in the checked
//! interpreter over a few packets, which must not fault.
//!
//! Also here: the bpf_conformance suite with verification on (all 313
//! programs verify as plain-memory programs and still give their results),
//! its negative programs, and the shape of the verifier's log.

#[path = "verifier/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use sluice_bpf::asm::assemble;
use sluice_bpf::helpers::Registry;
use sluice_bpf::interp::XdpFrame;
use sluice_bpf::maps::{Map, MapDef};
use sluice_bpf::verifier::{verify, CtxField, ProgKind, VerifyOptions};
use sluice_bpf::{Program, Vm};
use support::{load_cases, Case, Expect};

fn registry(kind: ProgKind) -> Registry {
    match kind {
        ProgKind::Xdp => Registry::xdp(),
        ProgKind::Memory { .. } => Registry::conformance(),
    }
}

/// Runs an accepted XDP case over a few packets in the checked interpreter.
fn run_accepted(case: &Case, insns: Vec<sluice_bpf::isa::Insn>) -> Result<(), String> {
    let maps: Vec<Arc<Map>> = case
        .maps
        .iter()
        .map(|d| Map::create(d, 2).map_err(|e| format!("map: {e}")))
        .collect::<Result<_, _>>()?;
    let prog = Program::load_with_maps(insns, &Registry::xdp(), maps)
        .map_err(|e| format!("verified but does not load: {e}"))?;
    let mut vm = Vm::new();
    for len in [0usize, 1, 13, 14, 15, 33, 34, 60, 200] {
        let mut buf = vec![0x45u8; 256 + len + 64];
        let mut frame = XdpFrame::new(&mut buf, 256, 256 + len);
        vm.run_xdp(&prog, &mut frame)
            .map_err(|f| format!("verified but faulted on a {len}-byte packet: {f}"))?;
    }
    Ok(())
}

#[test]
fn case_table() {
    let cases = load_cases();
    assert!(cases.len() >= 200, "the table must keep at least 200 cases");
    let mut failures = Vec::new();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut accepted = 0;
    for c in &cases {
        let insns = match assemble(&c.code) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("cases.txt:{} {}: assembler: {e}", c.line, c.name));
                continue;
            }
        };
        let got = verify(
            &insns,
            c.kind,
            &registry(c.kind),
            &c.maps,
            &VerifyOptions::default(),
        );
        let ok = match (&c.expect, &got) {
            (Expect::Accept, Ok(_)) => {
                accepted += 1;
                if c.kind == ProgKind::Xdp {
                    if let Err(e) = run_accepted(c, insns.clone()) {
                        failures.push(format!("cases.txt:{} {}: {e}", c.line, c.name));
                    }
                }
                true
            }
            (Expect::Reject(kind, at), Err(e)) => {
                *by_kind.entry(kind.clone()).or_default() += 1;
                e.reason.kind() == kind && at.is_none_or(|n| n == e.insn)
            }
            _ => false,
        };
        if !ok {
            let got = match got {
                Ok(_) => "accepted".to_string(),
                Err(e) => format!("rejected ({}):\n{e}", e.reason.kind()),
            };
            failures.push(format!(
                "cases.txt:{} {}: expected {:?}, got {got}",
                c.line, c.name, c.expect
            ));
        }
    }
    println!(
        "verifier cases: {} ({} accepted, {} rejected); rejections by reason: {by_kind:?}",
        cases.len(),
        accepted,
        cases.len() - accepted
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[derive(Deserialize)]
struct Conformance {
    file: String,
    mem: String,
    result: String,
    program: String,
}

fn conformance_lines<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<T> {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = match std::env::var_os("SLUICE_SHARED") {
        Some(p) => std::path::PathBuf::from(p),
        None => ["../../shared", "../shared", "/work/shared"]
            .iter()
            .map(|c| here.join(c))
            .find(|p| p.exists())
            .unwrap_or_else(|| here.join("../../shared")),
    };
    let path = shared.join("conformance").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

#[test]
fn conformance_suite_verifies_and_still_passes() {
    let cases: Vec<Conformance> = conformance_lines("assembled_tests.jsonl");
    assert_eq!(cases.len(), 313);
    let registry = Registry::conformance();
    let mut failures = Vec::new();
    for c in &cases {
        let bytes = hex::decode(&c.program).unwrap();
        let mut mem = hex::decode(&c.mem).unwrap();
        let insns = sluice_bpf::isa::slots(&bytes).unwrap();
        let kind = ProgKind::Memory {
            len: mem.len() as u32,
        };
        if let Err(e) = verify(
            &insns,
            kind,
            &registry,
            &[] as &[MapDef],
            &VerifyOptions::default(),
        ) {
            failures.push(format!("{}: refused:\n{e}", c.file));
            continue;
        }
        let expected = u64::from_str_radix(c.result.trim_start_matches("0x"), 16).unwrap();
        let prog = Program::load(insns, &registry).unwrap();
        match Vm::new().run_mem(&prog, &mut mem) {
            Ok(r) if r == expected => {}
            other => failures.push(format!("{}: {other:?}, expected {expected:#x}", c.file)),
        }
    }
    println!(
        "conformance with verification: {} of {} verified and passed",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[derive(Deserialize)]
struct Negative {
    file: String,
    program: String,
}

#[test]
fn conformance_negative_programs_are_refused() {
    let cases: Vec<Negative> = conformance_lines("assembled_negative.jsonl");
    for c in &cases {
        let bytes = hex::decode(&c.program).unwrap();
        let Ok(insns) = sluice_bpf::isa::slots(&bytes) else {
            continue;
        };
        let r = verify(
            &insns,
            ProgKind::Memory { len: 0 },
            &Registry::conformance(),
            &[] as &[MapDef],
            &VerifyOptions::default(),
        );
        assert!(r.is_err(), "{}: verified, but it must be refused", c.file);
    }
}

const BAD_PACKET_READ: &str = "\
    ldxw %r2, [%r1+0]
    ldxw %r3, [%r1+4]
    ldxw %r6, [%r1+12]
    jeq %r6, 0, out
    mov %r4, %r2
    add %r4, 14
    jgt %r4, %r3, out
    ldxh %r0, [%r2+14]
    exit
    out:
    mov %r0, 1
    exit";

#[test]
fn a_refusal_names_insn_reason_path_and_state() {
    let insns = assemble(BAD_PACKET_READ).unwrap();
    let e = verify(
        &insns,
        ProgKind::Xdp,
        &Registry::xdp(),
        &[] as &[MapDef],
        &VerifyOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.insn, 7);
    assert_eq!(e.reason.kind(), "packet-bounds");
    assert_eq!(e.text, "ldxh %r0, [%r2+14]");
    // The two branch decisions that lead to the access.
    assert_eq!(e.path.len(), 2, "{e}");
    assert!(e.state.contains("R2=pkt(id=0,off=0,r=14)"), "{}", e.state);
    let text = e.to_string();
    for needle in [
        "insn 7: invalid access to packet: R2 off=14 size=2, but only 14 bytes are proven",
        "7: ldxh %r0, [%r2+14]",
        "why: a packet access must lie inside bytes the program compared against data_end",
        "path: 3: not taken -> 4, 6: not taken -> 7",
        "state: R1=ctx() R2=pkt(id=0,off=0,r=14) R3=pkt_end()",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    println!("{text}");
}

#[test]
fn verbose_log_shows_every_instruction_with_its_state() {
    let insns = assemble(BAD_PACKET_READ).unwrap();
    let opts = VerifyOptions {
        log_level: 2,
        ..Default::default()
    };
    let e = verify(
        &insns,
        ProgKind::Xdp,
        &Registry::xdp(),
        &[] as &[MapDef],
        &opts,
    )
    .unwrap_err();
    assert!(e.log.contains("0: ldxw %r2, [%r1]"), "{}", e.log);
    assert!(e.log.contains("R1=ctx()"), "{}", e.log);
    assert!(e.log.contains("7: ldxh %r0, [%r2+14]"), "{}", e.log);
    let ok = verify(
        &assemble("mov %r0, 2\nexit").unwrap(),
        ProgKind::Xdp,
        &Registry::xdp(),
        &[] as &[MapDef],
        &VerifyOptions {
            log_level: 1,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(ok.log.contains("processed 2 insns"), "{}", ok.log);
}

#[test]
fn context_loads_are_reported_for_rewriting() {
    let insns = assemble(
        "ldxw %r2, [%r1+0]\nldxw %r3, [%r1+4]\nldxw %r4, [%r1+8]\nldxw %r5, [%r1+16]\n\
         mov %r0, %r3\nsub %r0, %r2\nexit",
    )
    .unwrap();
    let v = verify(
        &insns,
        ProgKind::Xdp,
        &Registry::xdp(),
        &[] as &[MapDef],
        &VerifyOptions::default(),
    )
    .unwrap();
    let got: Vec<(usize, CtxField)> = v.ctx_loads.iter().map(|c| (c.insn, c.field)).collect();
    assert_eq!(
        got,
        [
            (0, CtxField::Data),
            (1, CtxField::DataEnd),
            (2, CtxField::DataMeta),
            (3, CtxField::RxQueueIndex)
        ]
    );
    assert!(v.ctx_loads.iter().take(3).all(|c| c.field.is_pointer()));
}
