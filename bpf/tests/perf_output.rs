//! `bpf_perf_event_output` end to end: `tests/progs/perf_output.c` loaded
//! from its ELF object, run on packets in the checked interpreter, the
//! native interpreter and the JIT, on two workers; the samples read back
//! through [`PerfEventArray::open`] must be byte for byte what Linux's
//! `bpf_xdp_event_output` writes (the struct, then the packet's first
//! bytes, zero-padded to Linux's raw size), and the helper's return codes
//! Linux's (checked against the kernel itself in `kernel_diff.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use sluice_bpf::interp::XdpFrame;
use sluice_bpf::maps::perf_event_array::{PerfEventArray, PerfReader};
use sluice_bpf::maps::Map;
use sluice_bpf::object::{LoadOptions, LoadedObject};
use sluice_bpf::{Engine, Program, Vm};

fn load() -> LoadedObject {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/progs/perf_output.o");
    let bytes = std::fs::read(&path).unwrap();
    let opts = LoadOptions {
        ncpus: 2,
        ..Default::default()
    };
    LoadedObject::from_elf(&bytes, &opts).unwrap()
}

fn map<'a>(obj: &'a LoadedObject, name: &str) -> &'a Arc<Map> {
    obj.maps.iter().find(|m| m.def().name == name).unwrap()
}

fn rets(obj: &LoadedObject) -> Vec<i64> {
    let m = map(obj, "rets");
    (0u32..6)
        .map(|k| i64::from_ne_bytes(m.lookup_vec(&k.to_ne_bytes()).unwrap().try_into().unwrap()))
        .collect()
}

fn packet(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

fn run(vm: &mut Vm, prog: &Program, pkt: &[u8]) -> u64 {
    let mut buf = vec![0u8; 2048];
    buf[256..256 + pkt.len()].copy_from_slice(pkt);
    let mut frame = XdpFrame::new(&mut buf, 256, 256 + pkt.len());
    vm.run_xdp(prog, &mut frame).unwrap()
}

/// What Linux puts in the sample: the struct, then `min(len, 64)` packet
/// bytes, zero-padded so that the u32 size and the bytes fill 8-byte words.
fn expected(pkt: &[u8], seq: u32) -> Vec<u8> {
    let sampled = pkt.len().min(64);
    let mut v = Vec::new();
    v.extend_from_slice(&0x5151ceu32.to_ne_bytes());
    v.extend_from_slice(&(pkt.len() as u16).to_ne_bytes());
    v.extend_from_slice(&(sampled as u16).to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&pkt[..sampled]);
    v.resize((v.len() + 4).next_multiple_of(8) - 4, 0);
    v
}

fn drain(r: &mut PerfReader) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let st = r.read(|s| got.push(s.to_vec()));
    assert_eq!(st.lost, 0);
    got
}

fn modes() -> Vec<(&'static str, Engine, bool)> {
    let mut m = vec![
        ("checked interpreter", Engine::Interp, true),
        ("native interpreter", Engine::Interp, false),
    ];
    if cfg!(all(feature = "jit", target_arch = "x86_64")) {
        m.push(("JIT", Engine::Jit, false));
    }
    m
}

#[test]
fn samples_are_byte_exact_in_every_engine() {
    for (mode, engine, checked) in modes() {
        let obj = load();
        let prog = obj.programs[0].program.clone();
        let events = map(&obj, "events");
        let mut r0 = PerfEventArray::open(events, 0, 4).unwrap();
        let mut r1 = PerfEventArray::open(events, 1, 4).unwrap();
        let mut seq = 0;
        for cpu in [0u32, 1] {
            let mut vm = Vm::for_cpu(cpu);
            vm.set_engine(engine);
            vm.set_checked(checked);
            for (i, len) in [14usize, 60, 64, 65, 1500, 3].into_iter().enumerate() {
                let pkt = packet(len, i as u8 ^ cpu as u8);
                assert_eq!(run(&mut vm, &prog, &pkt), 2, "{mode}");
                let (mine, other) = if cpu == 0 {
                    (&mut r0, &mut r1)
                } else {
                    (&mut r1, &mut r0)
                };
                let got = drain(mine);
                let mut want = vec![expected(&pkt, seq)];
                if cpu == 0 {
                    // rets[5]: slot 0 named explicitly, 2 bytes of the struct.
                    want.push(vec![0xce, 0x51, 0, 0]);
                }
                assert_eq!(got, want, "{mode} cpu {cpu} len {len}");
                assert!(
                    drain(other).is_empty(),
                    "{mode}: a sample in the other CPU's ring"
                );
                let slot0 = if cpu == 0 { 0 } else { -95 }; // EOPNOTSUPP
                assert_eq!(rets(&obj), [0, -22, -14, -7, -2, slot0], "{mode} cpu {cpu}");
                seq += 1;
            }
        }
        assert_eq!(r1.stats().wrong_cpu, 0);
        assert_eq!(
            r0.stats().wrong_cpu,
            6,
            "{mode}: cpu 1 named slot 0 six times"
        );
        // Closed slots: -ENOENT, and nothing is written.
        drop(r0);
        drop(r1);
        let mut vm = Vm::for_cpu(0);
        vm.set_engine(engine);
        vm.set_checked(checked);
        run(&mut vm, &prog, &packet(60, 0));
        assert_eq!(rets(&obj), [-2, -22, -14, -7, -2, -2], "{mode}");
    }
}

#[test]
fn a_full_ring_loses_samples_and_says_enospc() {
    for (mode, engine, checked) in modes() {
        let obj = load();
        let prog = obj.programs[0].program.clone();
        let mut r0 = PerfEventArray::open(map(&obj, "events"), 0, 1).unwrap();
        let mut vm = Vm::for_cpu(0);
        vm.set_engine(engine);
        vm.set_checked(checked);
        // Records of 8 + 4 + 76 bytes (struct and 64 packet bytes) and of
        // 8 + 4 + 4 (rets[5]): 104 bytes a packet, 39 packets in 4096 bytes;
        // the 40th packet's sample is lost, its small one still fits.
        let pkt = packet(100, 1);
        let mut ok = 0;
        for _ in 0..40 {
            run(&mut vm, &prog, &pkt);
            match rets(&obj)[0] {
                0 => ok += 1,
                r => assert_eq!(r, -28, "{mode}"),
            }
        }
        let mut got = Vec::new();
        let st = r0.read(|s| got.push(s.len()));
        assert_eq!(ok, 39, "{mode}");
        assert_eq!(st.lost, 1, "{mode}");
        assert_eq!(st.lost, r0.stats().lost, "{mode}");
        assert_eq!(got.iter().filter(|&&n| n == 76).count(), 39, "{mode}");
    }
}
