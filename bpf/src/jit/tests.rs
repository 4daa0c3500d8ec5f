//! Unit tests: programs in assembler text, run by the JIT and compared with
//! the interpreter.

#![allow(unsafe_code)]

use super::*;
use crate::asm::assemble;
use crate::{Fault, Program};

fn both(src: &str, mem: &[u8]) -> (Result<u64, Fault>, Result<u64, Fault>) {
    let insns = assemble(src).expect("assembles");
    let reg = Registry::conformance();
    let p = Program::load(insns.clone(), &reg).expect("loads");
    let mut m1 = mem.to_vec();
    let i = crate::Vm::new().run_mem(&p, &mut m1);
    let mut out = Vec::new();
    for harden in [false, true] {
        for bmi2 in [false, true] {
            let j = compile(&JitInput::new(&insns, &reg).options(JitOptions {
                harden,
                bmi2: Some(bmi2),
                passes: 2,
            }))
            .expect("compiles");
            let mut m2 = mem.to_vec();
            // SAFETY: test programs only touch `mem` and their stack, as the
            // interpreter run above just checked.
            let r = unsafe { JitVm::new().run_mem(&j, &mut m2) };
            assert_eq!(m1, m2, "memory after {src}");
            out.push(r);
        }
    }
    for r in &out[1..] {
        assert_eq!(*r, out[0], "{src}");
    }
    (i, out[0])
}

fn same(src: &str) -> u64 {
    let (i, j) = both(src, &[0u8; 64]);
    assert_eq!(i, j, "{src}");
    j.expect("runs")
}

#[test]
fn basic_alu_and_exit() {
    assert_eq!(same("mov %r0, 42\nexit"), 42);
    assert_eq!(same("mov %r0, -1\nadd32 %r0, 1\nexit"), 0);
    assert_eq!(
        same("lddw %r0, 0x123456789abcdef0\nexit"),
        0x1234_5678_9abc_def0
    );
}

#[test]
fn division_edge_cases() {
    for src in [
        "mov %r0, 7\nmov %r1, 0\ndiv %r0, %r1\nexit",
        "mov %r0, 7\nmov %r1, 0\nmod %r0, %r1\nexit",
        "lddw %r0, 0xffffffff00000007\nmov %r1, 0\nmod32 %r0, %r1\nexit",
        "lddw %r0, 0x8000000000000000\nmov %r1, -1\nsdiv %r0, %r1\nexit",
        "lddw %r0, 0x8000000000000000\nmov %r1, -1\nsmod %r0, %r1\nexit",
        "mov32 %r0, 0x80000000\nmov %r1, -1\nsdiv32 %r0, %r1\nexit",
        "mov32 %r0, 0x80000000\nsmod32 %r0, -1\nexit",
        "mov %r3, 100\nmov %r0, 7\ndiv %r3, %r0\nmov %r0, %r3\nexit",
        "mov %r3, 100\nmov %r0, 7\nmod %r0, %r3\nexit",
        "mov %r3, -100\nsdiv %r3, 7\nmov %r0, %r3\nexit",
        "mov %r0, -100\nsmod32 %r0, 7\nexit",
        "mov %r0, 100\ndiv %r0, 8\nexit",
        "mov %r0, 100\nmod %r0, 8\nexit",
        "mov %r0, 100\nmod32 %r0, 1\nexit",
    ] {
        same(src);
    }
}

#[test]
fn local_calls_nest_eight_frames_and_no_more() {
    let mut src = String::from("call local f1\nexit\n");
    for i in 1..=7 {
        src += &format!("f{i}:\nstdw [%r10-8], {i}\n");
        if i < 7 {
            src += &format!("call local f{}\n", i + 1);
        } else {
            src += "mov %r0, 0\n";
        }
        src += "ldxdw %r1, [%r10-8]\nadd %r0, %r1\nexit\n";
    }
    assert_eq!(same(&src), 28);
    let deep = src.replace("mov %r0, 0\n", "call local f1\n");
    let (i, j) = both(&deep, &[]);
    assert!(matches!(j, Err(Fault::CallDepth { .. })), "{j:?}");
    assert_eq!(i, j);
}

#[test]
fn helper_calls_and_callx() {
    assert_eq!(same("mov %r1, 42\ncall 5\nexit"), 42);
    assert_eq!(same("mov %r1, 43\nmov %r6, 5\ncallx %r6\nexit"), 43);
    let (i, j) = both("mov %r2, 6\ncall %r2\nexit", &[]);
    assert_eq!(i, j);
    assert!(matches!(j, Err(Fault::BadCallx { target: 6, .. })));
}

#[test]
fn writes_to_r10_are_refused() {
    let insns = assemble("mov %r10, 0\nexit").unwrap();
    let reg = Registry::conformance();
    assert!(matches!(
        compile(&JitInput::new(&insns, &reg)),
        Err(JitError::WritesFramePointer { pc: 0 })
    ));
}

/// Tail-call targets of the tests below, by index (map handle 77).
static TARGETS: std::sync::OnceLock<Vec<Arc<JitProgram>>> = std::sync::OnceLock::new();

fn targets(_: &mut NativeEnv, map: u64, index: u32) -> Option<Arc<JitProgram>> {
    if map != 77 {
        return None;
    }
    TARGETS.get()?.get(index as usize).cloned()
}

#[test]
fn tail_calls_chain_at_most_33_times_and_fall_through_otherwise() {
    let reg = Registry::xdp();
    let jit = |src: &str| {
        Arc::new(compile(&JitInput::new(&assemble(src).unwrap(), &reg)).expect("compiles"))
    };
    // 0: counts its runs in the (shared) frame and tail-calls itself.
    let counter = jit("ldxdw %r6, [%r10-8]\nadd %r6, 1\nstxdw [%r10-8], %r6\n\
         mov %r2, 77\nmov %r3, 0\ncall 12\nldxdw %r0, [%r10-8]\nexit");
    // 1: reads the first byte of memory through r1, which must survive.
    let reader = jit("ldxb %r0, [%r1+0]\nadd %r0, 100\nexit");
    TARGETS.get_or_init(|| vec![counter.clone(), reader]);
    let mut vm = JitVm::new();
    vm.set_tail_call(Some(targets));
    let mut mem = [5u8; 8];
    // SAFETY: the programs touch only their first frame and `mem[0]`.
    assert_eq!(unsafe { vm.run_mem(&counter, &mut mem) }, Ok(34));
    let caller = jit("mov %r2, 77\nmov %r3, 1\ncall 12\nmov %r0, 1\nexit");
    // SAFETY: as above.
    assert_eq!(unsafe { vm.run_mem(&caller, &mut mem) }, Ok(105));
    // Out of range, wrong map, and from a local call: fall through, with
    // r0 and r1-r5 as they were.
    for src in [
        "mov %r0, 9\nmov %r2, 77\nmov %r3, 2\ncall 12\nexit",
        "mov %r0, 9\nmov %r2, 78\nmov %r3, 1\ncall 12\nexit",
        "mov %r0, 9\nmov %r4, 0\nmov %r2, 77\nmov %r3, 5\ncall 12\nadd %r0, %r4\nadd %r0, %r3\nsub %r0, 5\nexit",
        "call local f\nexit\nf:\nmov %r0, 8\nmov %r2, 77\nmov %r3, 1\ncall 12\nadd %r0, %r3\nexit",
    ] {
        // SAFETY: as above.
        assert_eq!(unsafe { vm.run_mem(&jit(src), &mut mem) }, Ok(9), "{src}");
    }
    // Without a resolver every tail call falls through.
    let mut plain = JitVm::new();
    // SAFETY: as above.
    assert_eq!(unsafe { plain.run_mem(&caller, &mut mem) }, Ok(1));
}

#[test]
fn code_pages_are_read_execute_only() {
    let reg = Registry::conformance();
    let p = compile(&JitInput::new(&assemble("mov %r0, 1\nexit").unwrap(), &reg)).unwrap();
    let addr = p.code().as_ptr() as u64;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| {
            let range = l.split_whitespace().next().unwrap_or("");
            let (a, b) = range.split_once('-').unwrap_or(("0", "0"));
            let (a, b) = (
                u64::from_str_radix(a, 16).unwrap_or(0),
                u64::from_str_radix(b, 16).unwrap_or(0),
            );
            (a..b).contains(&addr)
        })
        .expect("the code is mapped");
    assert_eq!(line.split_whitespace().nth(1), Some("r-xp"), "{line}");
}

#[test]
fn atomics_and_byte_swaps() {
    for src in [
        "stdw [%r10-8], 5\nmov %r1, 3\nlock fetch add [%r10-8], %r1\nldxdw %r0, [%r10-8]\nadd %r0, %r1\nexit",
        "stdw [%r10-8], 6\nmov %r0, 3\nlock fetch or [%r10-8], %r0\nldxdw %r2, [%r10-8]\nlsh %r2, 8\nor %r0, %r2\nexit",
        "stw [%r10-8], 6\nmov %r2, 3\nlock fetch and32 [%r10-8], %r2\nldxw %r0, [%r10-8]\nlsh %r0, 8\nor %r0, %r2\nexit",
        "stdw [%r10-8], 6\nmov %r2, 10\nlock fetch xor [%r10-8], %r2\nldxdw %r0, [%r10-8]\nlsh %r0, 8\nor %r0, %r2\nexit",
        "stdw [%r10-8], 6\nmov %r2, 10\nlock xchg [%r10-8], %r2\nldxdw %r0, [%r10-8]\nlsh %r0, 8\nor %r0, %r2\nexit",
        "stdw [%r10-8], 6\nlddw %r0, 0xffffffff00000006\nmov %r2, 10\nlock cmpxchg32 [%r10-8], %r2\nldxdw %r3, [%r10-8]\nlsh %r3, 40\nor %r0, %r3\nexit",
        "stdw [%r10-8], 7\nmov %r0, 6\nmov %r2, 10\nlock cmpxchg [%r10-8], %r2\nldxdw %r3, [%r10-8]\nlsh %r3, 8\nor %r0, %r3\nexit",
        "lddw %r0, 0x0102030405060708\nbe16 %r0\nexit",
        "lddw %r0, 0x0102030405060708\nbe32 %r0\nexit",
        "lddw %r0, 0x0102030405060708\nbe64 %r0\nexit",
        "lddw %r0, 0x0102030405060708\nle16 %r0\nexit",
        "lddw %r0, 0x0102030405060708\nle32 %r0\nexit",
        "lddw %r2, 0x0102030405060708\nbswap16 %r2\nmov %r0, %r2\nexit",
    ] {
        same(src);
    }
}

#[test]
fn programs_are_shareable_and_vms_movable_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<JitProgram>();
    send::<JitVm>();
    send::<crate::Vm>();
}
