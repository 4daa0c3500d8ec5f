//! The per-packet path never allocates: every test program, with its maps
//! seeded, runs over a spread of packets under a counting global allocator,
//! and not one allocation may happen during the runs (loading may allocate).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use sluice_bpf::interp::XdpFrame;
use sluice_bpf::maps::devmap::DevMap;
use sluice_bpf::maps::prog_array::ProgArray;
use sluice_bpf::maps::ringbuf::RingBuf;
use sluice_bpf::object::{LoadOptions, LoadedObject};
use sluice_bpf::Vm;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn packets() -> Vec<Vec<u8>> {
    let eth = |proto: u16| {
        let mut p = vec![0x02, 0, 0x5e, 0, 0, 2, 0x03, 0, 0x5e, 0, 0, 1];
        p.extend_from_slice(&proto.to_be_bytes());
        p
    };
    let ipv4 = |proto: u8, payload: &[u8]| {
        let mut p = eth(0x0800);
        let total = (20 + payload.len()) as u16;
        let mut h = vec![
            0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto, 0, 0, 192, 0, 2, 10, 198, 51, 100, 20,
        ];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        let mut sum: u32 = h
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        p.extend_from_slice(&h);
        p.extend_from_slice(payload);
        p
    };
    let udp = ipv4(
        17,
        &[0x30, 0x39, 0x00, 0x35, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
    );
    let tcp = ipv4(
        6,
        &[
            0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ],
    );
    let icmp = ipv4(1, &[8, 0, 0, 0, 0, 1, 0, 1]);
    let mut v6 = eth(0x86dd);
    v6.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64]);
    v6.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    v6.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    v6.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 8, 0, 0]);
    let mut big = udp.clone();
    big.resize(1500, 0xab);
    vec![udp, tcp, icmp, v6, big, eth(0x0806), vec![1, 2, 3]]
}

#[test]
fn no_program_run_allocates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/progs");
    let mut objects: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    objects.sort();
    assert!(
        objects.len() >= 10,
        "expected the committed test programs in {}",
        dir.display()
    );
    let packets = packets();
    let mut runs = 0u64;
    for path in &objects {
        let obj = LoadedObject::from_elf(&std::fs::read(path).unwrap(), &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Give maps that programs only read something to find.
        for m in &obj.maps {
            if let Some(pa) = m.downcast::<ProgArray>() {
                for (i, p) in obj.programs.iter().enumerate() {
                    let _ = pa.set(i as u32, Some(Arc::clone(&p.program)));
                }
            }
            if m.downcast::<DevMap>().is_some() {
                for k in 0..4u32 {
                    let _ = m.ops().update(&k.to_le_bytes(), &(k + 1).to_le_bytes(), 0);
                }
            }
        }
        let mut vm = Vm::new();
        let mut buf = vec![0u8; 4096 - 320];
        // Warm up once (lazy statics such as the clock's base allocate).
        for p in &packets {
            buf[256..256 + p.len()].copy_from_slice(p);
            let mut f = XdpFrame::new(&mut buf, 256, 256 + p.len());
            let _ = vm.run_xdp(&obj.programs[0].program, &mut f);
        }
        ALLOCS.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        for _ in 0..50 {
            for prog in &obj.programs {
                for p in &packets {
                    buf[256..256 + p.len()].copy_from_slice(p);
                    let mut f = XdpFrame::new(&mut buf, 256, 256 + p.len());
                    let _ = vm.run_xdp(&prog.program, &mut f);
                    runs += 1;
                }
            }
        }
        COUNTING.store(false, Ordering::Relaxed);
        let n = ALLOCS.load(Ordering::Relaxed);
        assert_eq!(
            n,
            0,
            "{}: {n} allocations during program runs",
            path.display()
        );
        // Drain ring buffers so they do not fill across objects.
        for m in &obj.maps {
            if let Some(rb) = m.downcast::<RingBuf>() {
                rb.consume(|_| {});
            }
        }
    }
    println!(
        "no-alloc: {} objects, {runs} program runs, 0 allocations",
        objects.len()
    );
}
