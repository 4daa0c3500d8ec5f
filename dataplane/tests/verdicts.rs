//! Verdicts end to end: every XDP verdict, driven through a running
//! dataplane of in-memory ring ports, with exact counts.
//!
//! Each test builds ring ports with endpoints (the test is the far side of
//! every port), attaches programs written as assembler text (or a real
//! clang-built object), injects a known mix of packets, waits until the
//! dataplane has received them all, stops it, and then checks:
//!
//! * every counter it expects, exactly, and the packets that came out of
//!   each endpoint, byte for byte where it matters;
//! * the identity `rx = drop + tx + redirect + pass + aborted` for every
//!   port ([`check_identity`], which also prints each port's counters);
//! * that no frame leaked: every endpoint's pool is full again.
//!
//! The test packets are 64-byte Ethernet frames with a local experimental
//! EtherType; byte 14 is a command the programs branch on, byte 15 an
//! argument, bytes 16..20 a sequence number unique within a test.
//!
//! Every wait is bounded (see [`DEADLINE`]); nothing asserts on timing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_bpf::asm::assemble;
use sluice_bpf::helpers::Registry;
use sluice_bpf::maps::{Map, MapDef, MapType, Pinning};
use sluice_bpf::object::{LoadOptions, LoadedObject};
use sluice_bpf::Program;
use sluice_dataplane::{Dataplane, DataplaneError, Hook, PortSnapshot, StaleVersion, Stats};
use sluice_drivers::ring::{RingEndpoint, RingPort};
use sluice_drivers::{FramePool, Port};

/// Longest any test waits for traffic to get through.
const DEADLINE: Duration = Duration::from_secs(30);
/// Frames per ring: every test keeps fewer than this in any ring.
const RING: usize = 2048;
/// An ifindex no port has (ring ports are numbered from 1000).
const NO_SUCH_PORT: u32 = 7;
/// The test packets' EtherType (IEEE local experimental).
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// (port, queue, worker) of every RX queue.
fn dp_places(s: &Stats) -> Vec<(usize, u16, usize)> {
    s.ports
        .iter()
        .flat_map(|p| p.rx_queues.iter())
        .map(|q| (q.place.port, q.place.queue, q.place.worker))
        .collect()
}

/// A map with no flags, pinning or inner map, for `ncpus` workers.
fn map(
    name: &str,
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    ncpus: usize,
) -> Arc<Map> {
    let def = MapDef {
        name: name.into(),
        map_type,
        key_size,
        value_size,
        max_entries,
        flags: 0,
        pinning: Pinning::None,
        inner: None,
    };
    Map::create(&def, ncpus).unwrap_or_else(|e| panic!("map {name}: {e}"))
}

/// Assembles and loads an XDP program that uses no maps.
fn xdp(src: &str) -> Arc<Program> {
    xdp_with_maps(src, Vec::new())
}

/// Assembles and loads an XDP program; `lddw %rN, map_idx I` names `maps[I]`.
fn xdp_with_maps(src: &str, maps: Vec<Arc<Map>>) -> Arc<Program> {
    let insns = assemble(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    Arc::new(Program::load_with_maps(insns, &Registry::xdp(), maps).expect("program loads"))
}

/// A 64-byte test packet: `cmd` at byte 14, `arg` at 15, `seq` at 16..20.
fn packet(cmd: u8, arg: u8, seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; 64];
    p[0..6].copy_from_slice(&DST_MAC);
    p[6..12].copy_from_slice(&SRC_MAC);
    p[12..14].copy_from_slice(&ETHERTYPE);
    p[14] = cmd;
    p[15] = arg;
    p[16..20].copy_from_slice(&seq.to_le_bytes());
    p
}

fn seq_of(p: &[u8]) -> u32 {
    u32::from_le_bytes(p[16..20].try_into().unwrap())
}

/// A packet mix: `(cmd, arg, count)` kinds, interleaved round-robin so each
/// burst carries several verdicts; sequence numbers from `first_seq` up.
/// Returns the packets and, per kind, the sequence numbers it got.
fn mix(kinds: &[(u8, u8, usize)], first_seq: u32) -> (Vec<Vec<u8>>, Vec<Vec<u32>>) {
    let mut left: Vec<usize> = kinds.iter().map(|k| k.2).collect();
    let mut seqs = vec![Vec::new(); kinds.len()];
    let mut pkts = Vec::new();
    let mut seq = first_seq;
    while left.iter().any(|&n| n > 0) {
        for (i, &(cmd, arg, _)) in kinds.iter().enumerate() {
            if left[i] > 0 {
                left[i] -= 1;
                pkts.push(packet(cmd, arg, seq));
                seqs[i].push(seq);
                seq += 1;
            }
        }
    }
    (pkts, seqs)
}

/// Puts every packet into the port's RX ring `queue` (the rings are sized
/// so that this never finds one full).
fn send_all(ep: &RingEndpoint, queue: u16, pkts: &[Vec<u8>]) {
    for p in pkts {
        let f = ep.frame(p).expect("endpoint pool has a frame");
        ep.send(queue, f).expect("RX ring has room");
    }
}

/// Takes every frame the port transmitted on `queue`, as bytes.
fn drain(ep: &RingEndpoint, queue: u16) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| ep.recv(queue))
        .map(|f| f.data().to_vec())
        .collect()
}

/// Sorted sequence numbers of `pkts`.
fn seqs(pkts: &[Vec<u8>]) -> Vec<u32> {
    let mut s: Vec<u32> = pkts.iter().map(|p| seq_of(p)).collect();
    s.sort_unstable();
    s
}

/// Sorted concatenation of some kinds' sequence numbers.
fn expect_seqs(kinds: &[&Vec<u32>]) -> Vec<u32> {
    let mut s: Vec<u32> = kinds.iter().flat_map(|k| k.iter().copied()).collect();
    s.sort_unstable();
    s
}

/// Waits until port `p` has received `want[p]` packets, for every port.
fn wait_rx(dp: &Dataplane, want: &[u64]) {
    let start = Instant::now();
    loop {
        let s = dp.stats();
        let got: Vec<u64> = s.ports.iter().map(|p| p.total.rx_packets).collect();
        if got.iter().zip(want).all(|(g, w)| g >= w) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "dataplane received {got:?} packets per port, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The counters of a port worth printing: the non-zero ones.
fn describe(s: &PortSnapshot) -> String {
    let all = [
        ("rx", s.rx_packets),
        ("tx", s.tx_packets),
        ("drop", s.xdp_drop),
        ("xdp_tx", s.xdp_tx),
        ("redirect", s.xdp_redirect),
        ("pass", s.xdp_pass),
        ("aborted", s.xdp_aborted),
        ("prog_faults", s.prog_faults),
        ("redirect_invalid", s.redirect_invalid),
        ("tx_full", s.tx_full),
        ("egress_drop", s.egress_drop),
        ("pass_full", s.pass_full),
        ("pass_no_stack", s.pass_no_stack),
    ];
    let parts: Vec<String> = all
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    if parts.is_empty() {
        "idle".to_string()
    } else {
        parts.join(" ")
    }
}

/// Prints every port's counters and checks, for every port, that every
/// received packet got exactly one verdict:
/// `rx = drop + tx + redirect + pass + aborted`.
fn check_identity(test: &str, stats: &Stats) {
    for p in &stats.ports {
        let t = &p.total;
        println!("{test}: {}: {}", p.info.name, describe(t));
        assert_eq!(
            t.rx_packets,
            t.verdicts(),
            "{test}: port {}: rx {} != drop {} + tx {} + redirect {} + pass {} + aborted {}",
            p.info.name,
            t.rx_packets,
            t.xdp_drop,
            t.xdp_tx,
            t.xdp_redirect,
            t.xdp_pass,
            t.xdp_aborted
        );
        // The sum over workers is the total, worker by worker.
        for (w, s) in p.per_worker.iter().enumerate() {
            assert_eq!(
                s.rx_packets,
                s.verdicts(),
                "{test}: {} worker {w}",
                p.info.name
            );
        }
    }
}

/// Checks that every frame of every endpoint's pool came home: none is
/// held by a ring, a queue or a lost reference. Call after the dataplane
/// stopped and every endpoint was drained.
fn check_no_leak(test: &str, eps: &[(&RingEndpoint, usize)]) {
    for (ep, full) in eps {
        assert_eq!(
            ep.pool().available(),
            *full,
            "{test}: {ep:?}: frames leaked"
        );
    }
}

/// A ring port with an endpoint, and how many frames its pool holds.
fn port(name: &str, queues: u16) -> (Arc<RingPort>, RingEndpoint, usize) {
    let (p, ep) = RingPort::with_endpoint(name, queues, RING);
    let full = ep.pool().available();
    (p, ep, full)
}

/// `n` cores for `n` workers, from the allowed set (repeating cores when
/// there are fewer).
fn cores(n: usize) -> Vec<usize> {
    let allowed = sluice_dataplane::allowed_cores();
    assert!(!allowed.is_empty(), "no allowed cores");
    allowed.iter().copied().cycle().take(n).collect()
}

/// The prologue of every assembler program here: `r2` = data, `r3` =
/// data_end, and a jump to `drop` unless `len` bytes are there.
fn prologue(len: u32) -> String {
    format!(
        "ldxw %r2, [%r1+0]\n\
         ldxw %r3, [%r1+4]\n\
         mov %r4, %r2\n\
         add %r4, {len}\n\
         jgt %r4, %r3, drop\n"
    )
}

/// The epilogue that `prologue` jumps to.
const DROP: &str = "drop:\nmov %r0, 1\nexit\n";

/// `bpf_redirect(ifindex, 0)` for every packet.
fn redirect_all(ifindex: u32) -> Arc<Program> {
    xdp(&format!(
        "mov %r1, {ifindex}\n\
         mov %r2, 0\n\
         call 23\n\
         exit"
    ))
}

// ---------------------------------------------------------------------------
// Redirect
// ---------------------------------------------------------------------------

/// Three ports. A's program redirects by ifindex with `bpf_redirect`; B's
/// through a devmap with `bpf_redirect_map`, with each packet choosing the
/// key and the fallback action. Checked: every packet lands on the port it
/// was sent to, unchanged; a missing key takes the fallback action; a
/// redirect to an ifindex that is no port is counted `redirect_invalid`.
#[test]
fn redirects_by_ifindex_and_devmap_reach_the_right_ports() {
    let (a, ea, fa) = port("redir-a", 1);
    let (b, eb, fb) = port("redir-b", 1);
    let (c, ec, fc) = port("redir-c", 1);
    let (ia, ib, ic) = (a.info().ifindex, b.info().ifindex, c.info().ifindex);

    // A: cmd 1 -> B, cmd 2 -> C, anything else -> an ifindex no port has.
    let by_ifindex = xdp(&format!(
        "{}\
         ldxb %r5, [%r2+14]\n\
         mov %r1, {ib}\n\
         jeq %r5, 1, go\n\
         mov %r1, {ic}\n\
         jeq %r5, 2, go\n\
         mov %r1, {NO_SUCH_PORT}\n\
         go:\n\
         mov %r2, 0\n\
         call 23\n\
         exit\n\
         {DROP}",
        prologue(16)
    ));

    // B: bpf_redirect_map(devmap, key = byte 14, flags = byte 15).
    let devmap = map("tx_ports", MapType::Devmap, 4, 4, 8, 1);
    for (key, ifindex) in [(0u32, ia), (1, ic), (2, NO_SUCH_PORT)] {
        devmap
            .ops()
            .update(&key.to_le_bytes(), &ifindex.to_le_bytes(), 0)
            .unwrap();
    }
    let by_devmap = xdp_with_maps(
        &format!(
            "{}\
             ldxb %r6, [%r2+14]\n\
             ldxb %r7, [%r2+15]\n\
             lddw %r1, map_idx 0\n\
             mov %r2, %r6\n\
             mov %r3, %r7\n\
             call 51\n\
             exit\n\
             {DROP}",
            prologue(16)
        ),
        vec![devmap.clone()],
    );

    let dp = Dataplane::builder()
        .port(a.clone())
        .port(b.clone())
        .port(c.clone())
        .program(0, Hook::Ingress, by_ifindex, "by-ifindex")
        .program(1, Hook::Ingress, by_devmap, "by-devmap")
        .start()
        .expect("dataplane starts");

    // Into A: (cmd, -, count).
    let (to_a, a_kinds) = mix(&[(1, 0, 300), (2, 0, 200), (3, 0, 100)], 0);
    let [a_to_b, a_to_c, a_nowhere] = &a_kinds[..] else {
        unreachable!()
    };
    // Into B: (devmap key, fallback flags, count). Keys 0..=2 are filled;
    // 5..=7 are empty and fall back to XDP_DROP (1), XDP_TX (3), XDP_PASS
    // (2) and, with flags 0, XDP_ABORTED.
    let (to_b, b_kinds) = mix(
        &[
            (0, 0, 150),
            (1, 0, 120),
            (2, 0, 90),
            (5, 1, 80),
            (6, 3, 70),
            (7, 2, 60),
            (7, 0, 50),
        ],
        10_000,
    );
    let [b_to_a, b_to_c, b_nowhere, b_fb_drop, b_fb_tx, b_fb_pass, b_fb_abort] = &b_kinds[..]
    else {
        unreachable!()
    };
    send_all(&ea, 0, &to_a);
    send_all(&eb, 0, &to_b);
    wait_rx(&dp, &[to_a.len() as u64, to_b.len() as u64, 0]);
    let stats = dp.stop();
    check_identity("redirect", &stats);

    let (out_a, out_b, out_c) = (drain(&ea, 0), drain(&eb, 0), drain(&ec, 0));
    println!(
        "redirect: out of A {} packets, out of B {}, out of C {}",
        out_a.len(),
        out_b.len(),
        out_c.len()
    );
    // Where each packet went, by sequence number.
    assert_eq!(
        seqs(&out_a),
        expect_seqs(&[b_to_a]),
        "A sends what B's devmap key 0 chose"
    );
    assert_eq!(
        seqs(&out_b),
        expect_seqs(&[a_to_b, b_fb_tx]),
        "B sends A's cmd-1 packets and its own XDP_TX fallbacks"
    );
    assert_eq!(
        seqs(&out_c),
        expect_seqs(&[a_to_c, b_to_c]),
        "C sends A's cmd-2 packets and B's devmap key 1"
    );
    // Redirected packets are untouched.
    for p in out_a.iter().chain(&out_b).chain(&out_c) {
        let s = seq_of(p);
        let original = to_a.iter().chain(&to_b).find(|o| seq_of(o) == s).unwrap();
        assert_eq!(p, original, "packet {s} changed on its way");
    }

    let (sa, sb, sc) = (
        &stats.ports[0].total,
        &stats.ports[1].total,
        &stats.ports[2].total,
    );
    let n = |v: &[&Vec<u32>]| v.iter().map(|k| k.len() as u64).sum::<u64>();
    // A: everything is a redirect; the cmd-3 ones go nowhere.
    assert_eq!(sa.rx_packets, 600);
    assert_eq!(sa.xdp_redirect, 600);
    assert_eq!(sa.redirect_invalid, n(&[a_nowhere]));
    assert_eq!(sa.tx_packets, n(&[b_to_a]));
    // B: three redirects (one invalid), then each fallback action.
    assert_eq!(sb.rx_packets, to_b.len() as u64);
    assert_eq!(sb.xdp_redirect, n(&[b_to_a, b_to_c, b_nowhere]));
    assert_eq!(sb.redirect_invalid, n(&[b_nowhere]));
    assert_eq!(sb.xdp_drop, n(&[b_fb_drop]));
    assert_eq!(sb.xdp_tx, n(&[b_fb_tx]));
    assert_eq!(sb.xdp_pass, n(&[b_fb_pass]));
    assert_eq!(sb.pass_no_stack, n(&[b_fb_pass]));
    assert_eq!(sb.xdp_aborted, n(&[b_fb_abort]));
    assert_eq!(
        sb.prog_faults, 0,
        "a fallback abort is a verdict, not a fault"
    );
    assert_eq!(sb.tx_packets, n(&[a_to_b, b_fb_tx]));
    // C runs nothing and receives nothing; it only sends.
    assert_eq!(sc.rx_packets, 0);
    assert_eq!(sc.tx_packets, n(&[a_to_c, b_to_c]));
    for s in [sa, sb, sc] {
        assert_eq!(s.tx_full, 0);
    }
    check_no_leak("redirect", &[(&ea, fa), (&eb, fb), (&ec, fc)]);
}

// ---------------------------------------------------------------------------
// XDP_TX
// ---------------------------------------------------------------------------

/// The clang-built `macswap.o` (swap the MACs, XDP_TX) on a two-queue port
/// with two workers: every packet comes back out of the port it came in
/// on, on the queue it came in on (worker `w` owns RX queue `w` and TX
/// queue `w`), in order, with its addresses swapped; a runt is dropped.
#[test]
fn xdp_tx_sends_back_out_of_the_same_port_and_queue() {
    let obj = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bpf/tests/progs/macswap.o"
    ))
    .expect("bpf/tests/progs/macswap.o");
    let obj = LoadedObject::from_elf(
        &obj,
        &LoadOptions {
            ncpus: 2,
            ..Default::default()
        },
    )
    .expect("macswap.o loads");
    let macswap = obj.programs[0].program.clone();

    let (a, ea, fa) = port("tx-a", 2);
    let dp = Dataplane::builder()
        .port(a.clone())
        .cores(cores(2))
        .program(0, Hook::Ingress, macswap, "macswap.o")
        .start()
        .expect("dataplane starts");
    const PER_QUEUE: u32 = 1000;
    for q in 0..2u16 {
        let pkts: Vec<Vec<u8>> = (0..PER_QUEUE)
            .map(|i| packet(0, q as u8, u32::from(q) * PER_QUEUE + i))
            .collect();
        send_all(&ea, q, &pkts);
    }
    // A runt (shorter than an Ethernet header): macswap drops it.
    ea.send(0, ea.frame(&[0xab; 10]).unwrap()).unwrap();
    wait_rx(&dp, &[2 * u64::from(PER_QUEUE) + 1]);
    let stats = dp.stop();
    check_identity("xdp_tx", &stats);

    for q in 0..2u16 {
        let out = drain(&ea, q);
        println!("xdp_tx: queue {q}: {} packets back", out.len());
        assert_eq!(out.len(), PER_QUEUE as usize, "queue {q}");
        for (i, p) in out.iter().enumerate() {
            let mut want = packet(0, q as u8, u32::from(q) * PER_QUEUE + i as u32);
            want[0..6].copy_from_slice(&SRC_MAC);
            want[6..12].copy_from_slice(&DST_MAC);
            assert_eq!(p, &want, "queue {q}, packet {i}: MACs swapped, in order");
        }
    }
    let s = &stats.ports[0].total;
    assert_eq!(s.rx_packets, 2 * u64::from(PER_QUEUE) + 1);
    assert_eq!(s.xdp_tx, 2 * u64::from(PER_QUEUE));
    assert_eq!(s.xdp_drop, 1, "the runt");
    assert_eq!(s.tx_packets, 2 * u64::from(PER_QUEUE));
    assert_eq!(s.tx_full, 0);
    // Each worker handled its own queue.
    for (w, ws) in stats.ports[0].per_worker.iter().enumerate() {
        assert_eq!(ws.xdp_tx, u64::from(PER_QUEUE), "worker {w}");
    }
    // Per queue: queue q went to worker q on the q-th core, and its
    // counters hold exactly its own packets (the runt came in on queue 0).
    let want_cores = cores(2);
    let rxq = &stats.ports[0].rx_queues;
    assert_eq!(rxq.len(), 2);
    for q in rxq {
        let i = usize::from(q.place.queue);
        println!(
            "xdp_tx: rx queue {i}: worker {} core {:?}: {:?}",
            q.place.worker, q.place.core, q.counters
        );
        assert_eq!(q.place.worker, i);
        assert_eq!(q.place.core, Some(want_cores[i]));
        let runt = u64::from(i == 0);
        assert_eq!(q.counters.rx_packets, u64::from(PER_QUEUE) + runt);
        assert_eq!(q.counters.xdp_tx, u64::from(PER_QUEUE));
        assert_eq!(q.counters.xdp_drop, runt);
        assert_eq!(q.counters.verdicts(), q.counters.rx_packets);
        assert_eq!(q.counters.rx_bytes, u64::from(PER_QUEUE) * 64 + runt * 10);
    }
    let txq = &stats.ports[0].tx_queues;
    assert_eq!(txq.len(), 2);
    for q in txq {
        assert_eq!(q.place.core, Some(want_cores[q.place.worker]));
        assert_eq!(
            q.tx_packets,
            u64::from(PER_QUEUE),
            "tx queue {}",
            q.place.queue
        );
    }
    assert_eq!(dp_places(&stats), vec![(0, 0, 0), (0, 1, 1)]);
    check_no_leak("xdp_tx", &[(&ea, fa)]);
}

/// A cpumap: `bpf_redirect_map` into an entry sends the packet to the
/// network stack by way of that CPU — in Sluice, the host stack behind the
/// port — counted as a redirect; an empty entry takes the fallback action.
/// The program is verified and run by both engines.
#[test]
fn cpumap_redirects_go_to_the_host_stack() {
    for engine in [sluice_bpf::Engine::Interp, sluice_bpf::Engine::best()] {
        let (a, ea, fa) = port("cpumap-a", 1);
        let cpumap = map("cpu_map", MapType::Cpumap, 4, 4, 4, 1);
        // CPU 0 has a queue; 1..=3 are empty (CPU 1 is not even a worker).
        cpumap
            .ops()
            .update(&0u32.to_ne_bytes(), &192u32.to_ne_bytes(), 0)
            .unwrap();
        assert!(cpumap
            .ops()
            .update(&1u32.to_ne_bytes(), &192u32.to_ne_bytes(), 0)
            .is_err());
        // bpf_redirect_map(cpu_map, key = byte 14, flags = XDP_DROP).
        let insns = assemble(&format!(
            "{}\
             ldxb %r6, [%r2+14]\n\
             lddw %r1, map_idx 0\n\
             mov %r2, %r6\n\
             mov %r3, 1\n\
             call 51\n\
             exit\n\
             {DROP}",
            prologue(16)
        ))
        .unwrap();
        let prog = Arc::new(
            Program::load_verified(
                insns,
                sluice_bpf::verifier::ProgKind::Xdp,
                &Registry::xdp(),
                vec![cpumap.clone()],
            )
            .expect("verifies"),
        );
        let dp = Dataplane::builder()
            .port(a.clone())
            .host_stack(true)
            .pass_queue(1024)
            .engine(engine)
            .program(0, Hook::Ingress, prog, "to-cpu")
            .start()
            .expect("dataplane starts");
        // (key, -, count): key 0 reaches the stack, key 2 falls back to drop.
        let (pkts, kinds) = mix(&[(0, 0, 300), (2, 0, 200)], 0);
        send_all(&ea, 0, &pkts);
        wait_rx(&dp, &[pkts.len() as u64]);
        let host: Vec<Vec<u8>> = std::iter::from_fn(|| dp.host_rx(0))
            .map(|f| f.data().to_vec())
            .collect();
        let stats = dp.stop();
        check_identity("cpumap", &stats);
        let s = &stats.ports[0].total;
        println!(
            "cpumap ({engine:?}): {} to the host stack, {} dropped by the fallback",
            host.len(),
            s.xdp_drop
        );
        assert_eq!(seqs(&host), expect_seqs(&[&kinds[0]]), "{engine:?}");
        for p in &host {
            assert!(pkts.contains(p), "a packet changed on its way to the stack");
        }
        assert_eq!((s.xdp_redirect, s.xdp_drop), (300, 200), "{engine:?}");
        assert_eq!((s.redirect_invalid, s.pass_full, s.tx_packets), (0, 0, 0));
        drop(host);
        check_no_leak("cpumap", &[(&ea, fa)]);
    }
}

// ---------------------------------------------------------------------------
// Egress hook
// ---------------------------------------------------------------------------

/// A redirects everything to B. B's egress program decides again, by
/// content: cmd 0xD0 is dropped, 0xAB gets an unknown verdict, 0xFA faults
/// (all three counted `egress_drop`), 0xE0 is rewritten (byte 15 := 0x55)
/// and sent, anything else is sent as it is. B's ingress counters see none
/// of it: egress is not a receive.
#[test]
fn egress_hook_drops_and_rewrites_packets_about_to_be_sent() {
    let (a, ea, fa) = port("egress-a", 1);
    let (b, eb, fb) = port("egress-b", 1);
    let egress = xdp(&format!(
        "{}\
         ldxb %r5, [%r2+14]\n\
         jeq %r5, 0xd0, drop\n\
         jeq %r5, 0xab, unknown\n\
         jeq %r5, 0xfa, fault\n\
         jeq %r5, 0xe0, rewrite\n\
         mov %r0, 3\n\
         exit\n\
         unknown:\n\
         mov %r0, 9\n\
         exit\n\
         fault:\n\
         ldxb %r0, [%r2+4000]\n\
         exit\n\
         rewrite:\n\
         stb [%r2+15], 0x55\n\
         mov %r0, 2\n\
         exit\n\
         {DROP}",
        prologue(16)
    ));
    let dp = Dataplane::builder()
        .port(a.clone())
        .port(b.clone())
        .program(0, Hook::Ingress, redirect_all(b.info().ifindex), "to-b")
        .program(1, Hook::Egress, egress, "egress")
        .start()
        .expect("dataplane starts");
    let (pkts, kinds) = mix(
        &[
            (0xd0, 0, 200),
            (0xab, 0, 50),
            (0xfa, 0, 30),
            (0xe0, 0, 250),
            (0x11, 0, 300),
        ],
        0,
    );
    let [dropped, unknown, faulted, rewritten, plain] = &kinds[..] else {
        unreachable!()
    };
    send_all(&ea, 0, &pkts);
    wait_rx(&dp, &[pkts.len() as u64, 0]);
    let stats = dp.stop();
    check_identity("egress", &stats);

    let out = drain(&eb, 0);
    println!("egress: {} of {} packets left B", out.len(), pkts.len());
    assert_eq!(seqs(&out), expect_seqs(&[rewritten, plain]));
    for p in &out {
        let mut want = pkts
            .iter()
            .find(|o| seq_of(o) == seq_of(p))
            .unwrap()
            .clone();
        if want[14] == 0xe0 {
            want[15] = 0x55;
        }
        assert_eq!(p, &want, "packet {}", seq_of(p));
    }
    let (sa, sb) = (&stats.ports[0].total, &stats.ports[1].total);
    let n = |v: &[&Vec<u32>]| v.iter().map(|k| k.len() as u64).sum::<u64>();
    assert_eq!(sa.rx_packets, pkts.len() as u64);
    assert_eq!(sa.xdp_redirect, pkts.len() as u64);
    assert_eq!(sb.egress_drop, n(&[dropped, unknown, faulted]));
    assert_eq!(sb.tx_packets, n(&[rewritten, plain]));
    assert_eq!(sb.rx_packets, 0, "egress runs are not receives");
    assert_eq!(sb.verdicts(), 0, "nor ingress verdicts");
    check_no_leak("egress", &[(&ea, fa), (&eb, fb)]);
}

/// An egress program sees Linux's context for a devmap (egress) program:
/// `ingress_ifindex` and `rx_queue_index` name where the packet came in,
/// `egress_ifindex` the port it is about to leave by. The program stamps
/// the three into the packet.
#[test]
fn egress_programs_see_the_ingress_and_egress_ifindex() {
    let (a, ea, fa) = port("egctx-a", 2);
    let (b, eb, fb) = port("egctx-b", 2);
    let stamp = xdp(&format!(
        "{}\
         ldxw %r5, [%r1+12]\n\
         stxw [%r2+24], %r5\n\
         ldxw %r5, [%r1+16]\n\
         stxw [%r2+28], %r5\n\
         ldxw %r5, [%r1+20]\n\
         stxw [%r2+32], %r5\n\
         mov %r0, 2\n\
         exit\n\
         {DROP}",
        prologue(36)
    ));
    let dp = Dataplane::builder()
        .port(a.clone())
        .port(b.clone())
        .program(0, Hook::Ingress, redirect_all(b.info().ifindex), "to-b")
        .program(1, Hook::Egress, stamp, "stamp")
        .start()
        .expect("dataplane starts");
    send_all(&ea, 1, &[packet(0, 0, 1)]);
    wait_rx(&dp, &[1, 0]);
    let stats = dp.stop();
    check_identity("egress_ctx", &stats);
    let out = drain(&eb, 0);
    assert_eq!(out.len(), 1);
    let word = |o: usize| u32::from_le_bytes(out[0][o..o + 4].try_into().unwrap());
    let (ingress, rxq, egress) = (word(24), word(28), word(32));
    println!(
        "egress_ctx: egress program saw ingress_ifindex {ingress}, rx_queue_index {rxq}, \
         egress_ifindex {egress} (A is {}, B is {})",
        a.info().ifindex,
        b.info().ifindex
    );
    assert_eq!(
        egress,
        b.info().ifindex,
        "egress_ifindex is the port it leaves by"
    );
    assert_eq!(
        ingress,
        a.info().ifindex,
        "ingress_ifindex is the port it came in on"
    );
    assert_eq!(rxq, 1, "rx_queue_index is the queue it came in on");
    check_no_leak("egress_ctx", &[(&ea, fa), (&eb, fb)]);
}

// ---------------------------------------------------------------------------
// PASS
// ---------------------------------------------------------------------------

/// With a host stack that never drains its queue, PASS traffic overflows
/// the queue and is counted `pass_full`, while the worker keeps forwarding
/// the rest. Two phases of the same length: forwarding alone, then
/// forwarding with a PASS packet between every two forwarded ones. The
/// packets forwarded in each are printed side by side; what is asserted is
/// that every forwarded packet arrived (a worker blocked on the full queue
/// would forward nothing) and the exact PASS accounting.
#[test]
fn pass_queue_overflow_is_counted_and_never_blocks_forwarding() {
    const PHASE: Duration = Duration::from_millis(300);
    const PASS_QUEUE: usize = 64;
    /// Packets the sender keeps in A's RX ring at most.
    const IN_RING: usize = 512;
    let (a, ea, fa) = port("pass-a", 1);
    let (b, eb, fb) = port("pass-b", 1);
    // cmd 'P' is passed to the host; everything else goes to B.
    let prog = xdp(&format!(
        "{}\
         ldxb %r5, [%r2+14]\n\
         mov %r0, 2\n\
         jeq %r5, 0x50, out\n\
         mov %r1, {}\n\
         mov %r2, 0\n\
         call 23\n\
         out:\n\
         exit\n\
         {DROP}",
        prologue(16),
        b.info().ifindex
    ));
    let dp = Dataplane::builder()
        .port(a.clone())
        .port(b.clone())
        .host_stack(true)
        .pass_queue(PASS_QUEUE)
        .program(0, Hook::Ingress, prog, "pass-or-forward")
        .start()
        .expect("dataplane starts");

    let mut seq = 0u32;
    let mut received = 0u64;
    // Sends for one phase: every packet forwarded, or every other one
    // passed (the last one always forwarded). Returns (forwarded sent,
    // passed sent, forwarded received during the phase).
    let mut phase = |with_pass: bool| {
        let (mut fwd, mut pass, mut got) = (0u64, 0u64, 0u64);
        let start = Instant::now();
        let mut next_is_pass = with_pass;
        while start.elapsed() < PHASE || (with_pass && !next_is_pass) {
            // A worker stuck on the full host queue would leave A's ring
            // full and this loop waiting for room.
            assert!(
                start.elapsed() < DEADLINE,
                "A's RX ring stayed full: the worker stopped"
            );
            if a.rx_pending(0) < IN_RING {
                let cmd = if next_is_pass { 0x50 } else { 0x46 };
                let f = ea
                    .frame(&packet(cmd, 0, seq))
                    .expect("endpoint pool has a frame");
                ea.send(0, f).expect("RX ring has room");
                seq += 1;
                if next_is_pass {
                    pass += 1;
                } else {
                    fwd += 1;
                }
                next_is_pass = with_pass && !next_is_pass;
            }
            let n = std::iter::from_fn(|| eb.recv(0)).count() as u64;
            got += n;
            received += n;
        }
        (fwd, pass, got)
    };
    let (fwd1, _, got1) = phase(false);
    let before = dp.stats().ports[0].total;
    let (fwd2, pass2, got2) = phase(true);
    // Every forwarded packet arrives: the worker never stalled on the
    // full host queue.
    let start = Instant::now();
    while received < fwd1 + fwd2 {
        received += std::iter::from_fn(|| eb.recv(0)).count() as u64;
        assert!(
            start.elapsed() < DEADLINE,
            "{received} of {} forwarded packets arrived",
            fwd1 + fwd2
        );
        std::thread::yield_now();
    }
    // The last packet was forwarded, so every PASS verdict has been
    // given: the host queue holds exactly its capacity.
    let held = std::iter::from_fn(|| dp.host_rx(0)).count();
    let stats = dp.stop();
    check_identity("pass_full", &stats);
    let sa = &stats.ports[0].total;
    println!(
        "pass_full: in {PHASE:?} each: forwarding alone {got1} forwarded ({} received by A); \
         with {pass2} PASS packets overflowing a {PASS_QUEUE}-frame queue {got2} forwarded \
         ({} received by A); {} of {} forwarded packets arrived in all; {held} held by the \
         host queue, {} counted pass_full",
        before.rx_packets,
        sa.rx_packets - before.rx_packets,
        received,
        fwd1 + fwd2,
        sa.pass_full
    );
    assert!(fwd1 > 0 && fwd2 > 0 && pass2 > PASS_QUEUE as u64);
    assert_eq!(received, fwd1 + fwd2, "every forwarded packet arrived");
    assert_eq!(held, PASS_QUEUE, "the host queue filled up");
    assert_eq!(sa.xdp_pass, pass2);
    assert_eq!(sa.pass_full, pass2 - PASS_QUEUE as u64);
    assert_eq!(sa.pass_no_stack, 0);
    assert_eq!(sa.xdp_redirect, fwd1 + fwd2);
    assert_eq!(stats.ports[1].total.tx_packets, fwd1 + fwd2);
    check_no_leak("pass_full", &[(&ea, fa), (&eb, fb)]);
}

/// Without a host stack, PASS is counted `pass_no_stack` and dropped: from
/// a program's verdict (port A) and from a port with no program (B).
#[test]
fn pass_without_a_host_stack_is_counted_and_dropped() {
    let (a, ea, fa) = port("nostack-a", 1);
    let (b, eb, fb) = port("nostack-b", 1);
    let dp = Dataplane::builder()
        .port(a.clone())
        .port(b.clone())
        .program(0, Hook::Ingress, xdp("mov %r0, 2\nexit"), "pass")
        .start()
        .expect("dataplane starts");
    let (pa, _) = mix(&[(0, 0, 500)], 0);
    let (pb, _) = mix(&[(0, 0, 300)], 1000);
    send_all(&ea, 0, &pa);
    send_all(&eb, 0, &pb);
    wait_rx(&dp, &[500, 300]);
    assert!(
        dp.host_rx(0).is_none() && dp.host_rx(1).is_none(),
        "nothing queued"
    );
    let stats = dp.stop();
    check_identity("pass_no_stack", &stats);
    for (p, n) in [(0, 500u64), (1, 300)] {
        let s = &stats.ports[p].total;
        assert_eq!(
            (s.xdp_pass, s.pass_no_stack, s.pass_full),
            (n, n, 0),
            "port {p}"
        );
        assert_eq!(s.tx_packets, 0);
    }
    assert!(drain(&ea, 0).is_empty() && drain(&eb, 0).is_empty());
    check_no_leak("pass_no_stack", &[(&ea, fa), (&eb, fb)]);
}

// ---------------------------------------------------------------------------
// ABORTED
// ---------------------------------------------------------------------------

/// Four ways to abort, mixed with packets forwarded to B in the same
/// bursts: XDP_ABORTED itself, a verdict beyond XDP_REDIRECT, an
/// out-of-bounds packet load (a fault), a helper given something that is
/// not a map (a fault). Faults are counted both as aborted and as
/// `prog_faults`; the forwarded packets are untouched by the aborts
/// around them.
#[test]
fn aborted_verdicts_and_faults_are_counted() {
    let (a, ea, fa) = port("abort-a", 1);
    let (b, eb, fb) = port("abort-b", 1);
    let prog = xdp(&format!(
        "{}\
         ldxb %r5, [%r2+14]\n\
         jeq %r5, 0, aborted\n\
         jeq %r5, 1, seven\n\
         jeq %r5, 2, oob\n\
         jeq %r5, 3, notmap\n\
         mov %r1, {}\n\
         mov %r2, 0\n\
         call 23\n\
         exit\n\
         aborted:\n\
         mov %r0, 0\n\
         exit\n\
         seven:\n\
         mov %r0, 7\n\
         exit\n\
         oob:\n\
         ldxb %r0, [%r2+4000]\n\
         exit\n\
         notmap:\n\
         mov %r1, 0\n\
         mov %r2, 0\n\
         mov %r3, 0\n\
         call 51\n\
         exit\n\
         {DROP}",
        prologue(16),
        b.info().ifindex
    ));
    let dp = Dataplane::builder()
        .port(a.clone())
        .port(b.clone())
        .program(0, Hook::Ingress, prog, "aborts")
        .start()
        .expect("dataplane starts");
    let (pkts, kinds) = mix(
        &[(0, 0, 100), (1, 0, 90), (2, 0, 80), (3, 0, 70), (9, 0, 200)],
        0,
    );
    let [xdp_aborted, seven, oob, notmap, forwarded] = &kinds[..] else {
        unreachable!()
    };
    send_all(&ea, 0, &pkts);
    wait_rx(&dp, &[pkts.len() as u64, 0]);
    let stats = dp.stop();
    check_identity("aborted", &stats);
    let out = drain(&eb, 0);
    assert_eq!(seqs(&out), expect_seqs(&[forwarded]));
    let n = |v: &[&Vec<u32>]| v.iter().map(|k| k.len() as u64).sum::<u64>();
    let sa = &stats.ports[0].total;
    assert_eq!(sa.rx_packets, pkts.len() as u64);
    assert_eq!(sa.xdp_aborted, n(&[xdp_aborted, seven, oob, notmap]));
    assert_eq!(sa.prog_faults, n(&[oob, notmap]));
    assert_eq!(sa.xdp_redirect, n(&[forwarded]));
    assert_eq!(stats.ports[1].total.tx_packets, n(&[forwarded]));
    check_no_leak("aborted", &[(&ea, fa), (&eb, fb)]);
}

// ---------------------------------------------------------------------------
// Per-CPU state
// ---------------------------------------------------------------------------

/// Two workers; every packet increments a per-CPU array counter, is
/// stamped with `bpf_get_smp_processor_id()` and forwarded to B. After the
/// traffic, each worker's copy of the counter equals the packets that
/// worker processed (per-worker stats), and every packet's stamp is the
/// worker that forwarded it (worker `w` transmits on TX queue `w`).
#[test]
fn per_cpu_maps_are_per_worker() {
    const WORKERS: usize = 2;
    let (a, ea, fa) = port("percpu-a", 2);
    let (b, eb, fb) = port("percpu-b", 2);
    let counter = map("per_worker", MapType::PercpuArray, 4, 8, 1, WORKERS);
    let prog = xdp_with_maps(
        &format!(
            "{}\
             mov %r6, %r2\n\
             call 8\n\
             stxw [%r6+24], %r0\n\
             stw [%r10-4], 0\n\
             mov %r2, %r10\n\
             add %r2, -4\n\
             lddw %r1, map_idx 0\n\
             call 1\n\
             jeq %r0, 0, fwd\n\
             ldxdw %r1, [%r0+0]\n\
             add %r1, 1\n\
             stxdw [%r0+0], %r1\n\
             fwd:\n\
             mov %r1, {}\n\
             mov %r2, 0\n\
             call 23\n\
             exit\n\
             {DROP}",
            prologue(28),
            b.info().ifindex
        ),
        vec![counter.clone()],
    );
    let dp = Dataplane::builder()
        .port(a.clone())
        .port(b.clone())
        .cores(cores(WORKERS))
        .program(0, Hook::Ingress, prog, "count")
        .start()
        .expect("dataplane starts");
    // Unequal loads, so a swapped copy could not pass.
    let (q0, _) = mix(&[(0, 0, 1500)], 0);
    let (q1, _) = mix(&[(0, 1, 900)], 10_000);
    send_all(&ea, 0, &q0);
    send_all(&ea, 1, &q1);
    wait_rx(&dp, &[(q0.len() + q1.len()) as u64, 0]);
    let stats = dp.stop();
    check_identity("percpu", &stats);

    let values = counter.lookup_vec(&0u32.to_le_bytes()).unwrap();
    assert_eq!(values.len(), 8 * WORKERS, "one 8-byte copy per worker");
    let copies: Vec<u64> = values
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let processed: Vec<u64> = stats.ports[0]
        .per_worker
        .iter()
        .map(|w| w.rx_packets)
        .collect();
    // Stamps, per TX queue (= per worker).
    let mut stamps: BTreeMap<(u16, u32), u64> = BTreeMap::new();
    for q in 0..WORKERS as u16 {
        for p in drain(&eb, q) {
            let cpu = u32::from_le_bytes(p[24..28].try_into().unwrap());
            *stamps.entry((q, cpu)).or_default() += 1;
        }
    }
    println!(
        "percpu: map copies {copies:?}, packets processed per worker {processed:?}, \
         (tx queue, stamp) -> packets {stamps:?}"
    );
    assert_eq!(
        copies, processed,
        "each worker's copy counts its own packets"
    );
    assert_eq!(copies.iter().sum::<u64>(), (q0.len() + q1.len()) as u64);
    assert!(copies.iter().all(|&c| c > 0), "both workers had traffic");
    for (&(q, cpu), &count) in &stamps {
        assert_eq!(
            u32::from(q),
            cpu,
            "a packet sent by worker {q} says it ran on {cpu}"
        );
        assert_eq!(count, processed[usize::from(q)], "worker {q}");
    }
    check_no_leak("percpu", &[(&ea, fa), (&eb, fb)]);
}

// ---------------------------------------------------------------------------
// Control: compare-and-swap, refusing to start
// ---------------------------------------------------------------------------

/// `replace` with a stale expected version is refused, names the version
/// that runs, and changes nothing: the running program keeps handling the
/// traffic. With the right version it goes through.
#[test]
fn replace_with_a_stale_version_is_refused_and_changes_nothing() {
    let (a, ea, fa) = port("cas-a", 1);
    let (b, eb, fb) = port("cas-b", 1);
    let bi = b.info().ifindex;
    // Writes `tag` at byte 15 and forwards to B.
    let tagger = |tag: u8| {
        xdp(&format!(
            "{}\
             stb [%r2+15], {tag}\n\
             mov %r1, {bi}\n\
             mov %r2, 0\n\
             call 23\n\
             exit\n\
             {DROP}",
            prologue(16)
        ))
    };
    let dp = Dataplane::builder()
        .port(a.clone())
        .port(b.clone())
        .program(0, Hook::Ingress, tagger(1), "v1")
        .start()
        .expect("dataplane starts");
    assert_eq!(dp.version(0, Hook::Ingress), 1);
    assert_eq!(dp.attach(0, Hook::Ingress, tagger(2), "v2"), Some(2));

    // Stale: the caller thinks v1 still runs.
    let e = dp
        .replace(0, Hook::Ingress, 1, Some(tagger(3)), "v3")
        .unwrap_err();
    assert_eq!(
        e,
        StaleVersion {
            expected: 1,
            current: 2
        }
    );
    println!("cas: refused: {e}");
    // "Only if empty" on a slot that holds a program, and emptying it with
    // a stale version, are refused too.
    assert!(dp
        .replace(0, Hook::Ingress, 0, Some(tagger(4)), "v4")
        .is_err());
    assert!(dp.replace(0, Hook::Ingress, 1, None, "").is_err());
    // A port that does not exist has nothing to replace.
    assert!(dp
        .replace(9, Hook::Ingress, 0, Some(tagger(5)), "v5")
        .is_err());
    assert_eq!(
        dp.version(0, Hook::Ingress),
        2,
        "the version did not change"
    );
    assert_eq!(dp.program(0, Hook::Ingress).unwrap().label, "v2");
    assert_eq!(
        dp.version(0, Hook::Egress),
        0,
        "the other hook is untouched"
    );

    let run = |n: u32, first: u32| {
        let (pkts, _) = mix(&[(0, 0, n as usize)], first);
        send_all(&ea, 0, &pkts);
        let start = Instant::now();
        let mut out = Vec::new();
        while out.len() < pkts.len() {
            out.extend(drain(&eb, 0));
            assert!(start.elapsed() < DEADLINE, "{} of {} arrived", out.len(), n);
            std::thread::yield_now();
        }
        out.iter().map(|p| p[15]).collect::<Vec<u8>>()
    };
    let tags = run(200, 0);
    assert!(
        tags.iter().all(|&t| t == 2),
        "v2 still handles every packet"
    );

    // The right expected version goes through.
    assert_eq!(
        dp.replace(0, Hook::Ingress, 2, Some(tagger(3)), "v3"),
        Ok(3)
    );
    assert!(dp.wait_quiescent(Duration::from_secs(5)));
    let tags = run(200, 1000);
    assert!(tags.iter().all(|&t| t == 3), "v3 handles every packet");
    let stats = dp.stop();
    check_identity("cas", &stats);
    assert_eq!(stats.ports[0].ingress_version, 3);
    assert_eq!(stats.ports[0].total.xdp_redirect, 400);
    assert_eq!(stats.ports[1].total.tx_packets, 400);
    check_no_leak("cas", &[(&ea, fa), (&eb, fb)]);
}

/// A dataplane that cannot start says why, naming the core, port or
/// program at fault, and leaves nothing behind: the same ports start fine
/// right after.
#[test]
fn a_dataplane_that_cannot_start_names_the_problem() {
    let (a, _ea, _) = port("refuse-a", 1);
    let (b, _eb, _) = port("refuse-b", 2);
    let allowed = sluice_dataplane::allowed_cores();
    let not_allowed = (0..4096).find(|c| !allowed.contains(c)).unwrap();

    let start = |builder: sluice_dataplane::Builder| match builder.start() {
        Ok(_) => panic!("the dataplane started"),
        Err(e) => e,
    };
    let e = start(
        Dataplane::builder()
            .port(a.clone())
            .cores(vec![not_allowed]),
    );
    println!("refuse: {e}");
    assert!(matches!(e, DataplaneError::CoreNotAllowed { core, .. } if core == not_allowed));
    assert!(
        e.to_string().contains(&format!("core {not_allowed} ")),
        "{e}"
    );

    // Two workers need two TX queues on every port; A has one.
    let e = start(
        Dataplane::builder()
            .port(b.clone())
            .port(a.clone())
            .cores(cores(2)),
    );
    println!("refuse: {e}");
    assert!(
        matches!(&e, DataplaneError::TooFewTxQueues { port, tx_queues: 1, workers: 2 } if port == "refuse-a"),
        "{e:?}"
    );
    assert!(e.to_string().contains("refuse-a"), "{e}");

    let e = start(
        Dataplane::builder()
            .port(a.clone())
            .port(b.clone())
            .program(2, Hook::Ingress, xdp("mov %r0, 2\nexit"), "nowhere"),
    );
    println!("refuse: {e}");
    assert!(matches!(e, DataplaneError::Config(_)), "{e:?}");
    assert!(e.to_string().contains("port 2"), "{e}");

    let e = start(Dataplane::builder());
    println!("refuse: {e}");
    assert!(e.to_string().contains("no ports"), "{e}");
    let e = start(Dataplane::builder().port(a.clone()).burst(0));
    println!("refuse: {e}");
    assert!(e.to_string().contains("burst 0"), "{e}");

    // Nothing was left holding a queue: the same ports start now.
    let dp = Dataplane::builder()
        .port(a.clone())
        .port(b.clone())
        .start()
        .expect("the ports are free again");
    let stats = dp.stop();
    check_identity("refuse", &stats);
}
