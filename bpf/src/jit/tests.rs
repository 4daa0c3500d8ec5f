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

/// `bpf_redirect(ctx->ingress_ifindex ^ 1 (+ high garbage), ctx->rx_queue_index
/// << shift)`, keeping r6 across the call: the flags come from the frame, so
/// one program covers both outcomes.
const REDIRECT_SRC: &str = "mov %r6, 100\n\
    ldxw %r2, [%r1+16]\n\
    ldxw %r1, [%r1+12]\n\
    xor %r1, 1\n\
    lddw %r3, 0xabcd000000000000\n\
    or %r1, %r3\n\
    lsh %r2, SHIFT\n\
    call 23\n\
    mov %r7, %r0\n\
    add %r7, %r6\n\
    jne %r7, 104, +1\n\
    mov %r0, 4\n\
    exit";

#[test]
fn bpf_redirect_is_inlined_with_the_helpers_semantics() {
    use crate::helpers::action::{XDP_ABORTED, XDP_REDIRECT};
    use crate::interp::XdpFrame;
    use crate::verifier::ProgKind;

    let reg = Registry::xdp();
    let helper = reg.get(crate::helpers::id::REDIRECT).expect("bpf_redirect");
    // Flags in the low half, and flags only in the high half (non-zero as a
    // u64, zero as a u32: the helper looks at all 64 bits).
    for shift in [0, 32] {
        let src = REDIRECT_SRC.replace("SHIFT", &shift.to_string());
        let p = Program::load_verified(assemble(&src).unwrap(), ProgKind::Xdp, &reg, Vec::new())
            .expect("verifies");
        let native = p.native_insns().expect("native form").to_vec();
        for (ifindex, queue) in [(7u32, 0u32), (6, 1), (0xffff_ffff, 0), (3, 0x8000_0000)] {
            let want_verdict = if queue == 0 {
                XDP_REDIRECT
            } else {
                XDP_ABORTED
            };
            let want_target = (queue == 0).then_some(crate::interp::Redirect::Port(ifindex ^ 1));
            fn frame(buf: &mut [u8], ifindex: u32, queue: u32) -> XdpFrame<'_> {
                let mut f = XdpFrame::new(buf, 64, 128);
                f.ingress_ifindex = ifindex;
                f.rx_queue_index = queue;
                f
            }
            // The interpreter, checked and native.
            let mut results = Vec::new();
            for checked in [true, false] {
                let mut vm = crate::Vm::new();
                vm.set_checked(checked);
                let mut buf = vec![0u8; 256];
                let mut f = frame(&mut buf, ifindex, queue);
                results.push((
                    format!("interp checked={checked}"),
                    vm.run_xdp(&p, &mut f),
                    f.redirect,
                ));
            }
            // The JIT, plain and hardened, with and without BMI2.
            for harden in [false, true] {
                for bmi2 in [false, true] {
                    let j = compile(&JitInput::new(&native, &reg).options(JitOptions {
                        harden,
                        bmi2: Some(bmi2),
                        passes: 2,
                    }))
                    .expect("compiles");
                    // Inlined: the helper's address appears nowhere in the code.
                    let addr = (helper.func as usize as u64).to_le_bytes();
                    assert!(
                        !j.code().windows(8).any(|w| w == addr),
                        "bpf_redirect is called, not inlined (harden={harden})"
                    );
                    let mut vm = JitVm::new();
                    for run in 0..2 {
                        // A target from an earlier run must not show.
                        let mut buf = vec![0u8; 256];
                        let mut primer = XdpFrame::new(&mut buf, 64, 128);
                        primer.ingress_ifindex = 50;
                        assert_eq!(vm.run_frame(&j, &mut primer), Ok(XDP_REDIRECT));
                        assert_eq!(primer.redirect, Some(crate::interp::Redirect::Port(51)));
                        let mut buf = vec![0u8; 256];
                        let mut f = frame(&mut buf, ifindex, queue);
                        let r = vm.run_frame(&j, &mut f);
                        assert_eq!(vm.redirect(), f.redirect);
                        results.push((
                            format!("jit harden={harden} bmi2={bmi2} run={run}"),
                            r,
                            f.redirect,
                        ));
                    }
                }
            }
            // The whole product path: Vm with the JIT engine.
            let mut vm = crate::Vm::new();
            vm.set_engine(crate::Engine::Jit);
            let mut buf = vec![0u8; 256];
            let mut f = frame(&mut buf, ifindex, queue);
            results.push(("vm jit".into(), vm.run_xdp(&p, &mut f), f.redirect));
            for (what, r, target) in results {
                let ctx = format!("{what}, shift {shift}, ifindex {ifindex:#x}, queue {queue:#x}");
                assert_eq!(r, Ok(want_verdict), "{ctx}");
                assert_eq!(target, want_target, "{ctx}");
            }
        }
    }
}

#[test]
fn only_sluices_own_bpf_redirect_is_inlined() {
    // Another function registered as helper 23 is called like any helper.
    let mut reg = Registry::conformance();
    let xdp = Registry::xdp();
    let mut h = *xdp.get(crate::helpers::id::REDIRECT).unwrap();
    h.func = |_, a| Ok(a[0] + a[1]);
    reg.register(h);
    assert_eq!(
        same_with(&reg, "mov %r1, 40\nmov %r2, 2\ncall 23\nexit"),
        42
    );
    // Sluice's own, in a plain-memory program (no frame): the same results
    // as the interpreter, and r1-r5 and r6-r9 survive the inlined call (as
    // they do in the interpreter; the verifier would refuse reading r1-r5).
    for src in [
        "mov %r1, 40\nmov %r2, 0\ncall 23\nexit",
        "mov %r1, 40\nmov %r2, 2\ncall 23\nexit",
        "mov %r1, 40\nmov %r2, 0\nmov %r6, 9\ncall 23\nlsh %r0, 8\nadd %r0, %r1\nlsh %r0, 8\nadd %r0, %r6\nexit",
        "mov %r1, 40\nmov %r2, 3\nmov %r3, 4\nmov %r4, 5\nmov %r5, 6\ncall 23\n\
         add %r0, %r1\nadd %r0, %r2\nadd %r0, %r3\nadd %r0, %r4\nadd %r0, %r5\nexit",
    ] {
        same_with(&xdp, src);
    }
}

/// As [`same`], with a given registry.
fn same_with(reg: &Registry, src: &str) -> u64 {
    let insns = assemble(src).expect("assembles");
    let p = Program::load(insns.clone(), reg).expect("loads");
    let i = crate::Vm::new().run_mem(&p, &mut [0u8; 64]);
    for harden in [false, true] {
        let j = compile(&JitInput::new(&insns, reg).harden(harden)).expect("compiles");
        // SAFETY: the program touches no memory, as the interpreter run
        // above just checked.
        let r = unsafe { JitVm::new().run_mem(&j, &mut [0u8; 64]) };
        assert_eq!(i, r, "{src} (harden={harden})");
    }
    i.expect("runs")
}
