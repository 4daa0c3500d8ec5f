//! The dataplane over AF_XDP, end to end, on veth pairs between network
//! namespaces (tier 4): Sluice's workers, programs from the assembler,
//! real packets sent and received by AF_PACKET sockets and `ping` in the
//! peer namespaces.
//!
//! * reflect: a MAC-swap program on one port; every frame the peer sends
//!   comes back swapped, and the counts match exactly;
//! * forward: two ports joined by a devmap; `ping` from namespace A to
//!   namespace B goes through Sluice; a drop rule in a map stops it;
//!   removing the rule restores it;
//! * multi-queue: a two-queue veth, two workers, both queues busy;
//! * swap: the forwarding program is replaced thousands of times while
//!   traffic flows; not one packet is lost.
//!
//! Root only: without root each test prints a loud SKIPPED line and
//! passes, except with `CI=true`, where it fails. Only addresses inside
//! the test's own namespaces are used.

#![cfg(target_os = "linux")]

#[path = "../../drivers/tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    ping_pong, require_root, test_frame, test_seq, udp_test_frame, NetNs, PacketSocket, Veth,
};
use sluice_bpf::asm::assemble;
use sluice_bpf::helpers::Registry;
use sluice_bpf::maps::{Map, MapDef, MapType, Pinning};
use sluice_bpf::Program;
use sluice_dataplane::{Dataplane, Hook, IdlePolicy};
use sluice_drivers::afxdp::sys::LinuxSys;
use sluice_drivers::afxdp::{AfXdpConfig, AfXdpPort};
use sluice_drivers::Port;

/// Swaps the Ethernet addresses and returns XDP_TX.
const MACSWAP: &str = "
    ldxw %r2, [%r1+0]
    ldxw %r3, [%r1+4]
    mov %r4, %r2
    add %r4, 14
    jgt %r4, %r3, drop
    ldxw %r5, [%r2+0]
    ldxh %r6, [%r2+4]
    ldxw %r7, [%r2+6]
    ldxh %r8, [%r2+10]
    stxw [%r2+0], %r7
    stxh [%r2+4], %r8
    stxw [%r2+6], %r5
    stxh [%r2+10], %r6
    mov %r0, 3
    exit
drop:
    mov %r0, 1
    exit
";

fn macswap() -> Arc<Program> {
    Arc::new(Program::load(assemble(MACSWAP).unwrap(), &Registry::xdp()).unwrap())
}

fn map(name: &str, map_type: MapType, entries: u32) -> Arc<Map> {
    Map::create(
        &MapDef {
            name: name.into(),
            map_type,
            key_size: 4,
            value_size: 4,
            max_entries: entries,
            flags: 0,
            pinning: Pinning::None,
            inner: None,
        },
        1,
    )
    .unwrap()
}

fn cores(n: usize) -> Vec<usize> {
    let allowed = sluice_dataplane::allowed_cores();
    allowed.iter().rev().copied().cycle().take(n).collect()
}

#[test]
fn reflect_every_frame_comes_back_swapped_and_the_counts_match() {
    if !require_root("afxdp_e2e::reflect") {
        return;
    }
    const N: u64 = 20_000;
    let ns = NetNs::new();
    let veth = Veth::new(&ns, 1);
    let port = AfXdpPort::open("reflect", &AfXdpConfig::new(&veth.host)).expect("port opens");
    let dp = Dataplane::builder()
        .port(port.clone())
        .cores(cores(1))
        .idle(IdlePolicy::Adaptive)
        .program(0, Hook::Ingress, macswap(), "macswap")
        .start()
        .expect("dataplane starts");
    veth.wait_up(&ns);
    let (peer, pm, hm) = (veth.peer.clone(), veth.peer_mac, veth.host_mac);
    let got = ns
        .enter(move || {
            let sock = PacketSocket::open(&peer, Duration::from_millis(200)).unwrap();
            ping_pong(
                &sock,
                N,
                256,
                Duration::from_secs(60),
                |s| test_frame(hm, pm, s, 60 + (s % 300) as usize),
                |f| {
                    assert_eq!(&f[0..6], &pm, "back to the sender");
                    assert_eq!(&f[6..12], &hm, "swapped");
                },
            )
        })
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let stats = dp.stop();
    let t = &stats.ports[0].total;
    let mut distinct = got.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let r = port.socket_reports()[0];
    println!(
        "reflect: peer sent {N}, got back {} ({} distinct); Sluice rx {} xdp_tx {} tx {} drops {:?}; \
         socket rx {} tx {} in {} bursts, tx kicks {} rx kicks {}",
        got.len(),
        distinct.len(),
        t.rx_packets,
        t.xdp_tx,
        t.tx_packets,
        t.drops().iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>(),
        r.rx.packets,
        r.tx.packets,
        t.batches,
        r.tx_kicks,
        r.rx_kicks,
    );
    assert_eq!(got.len() as u64, N, "every frame came back");
    assert_eq!(distinct.len() as u64, N, "each exactly once");
    assert_eq!(t.rx_packets, N, "Sluice received exactly what was sent");
    assert_eq!(t.xdp_tx, N);
    assert_eq!(t.tx_packets, N);
    assert_eq!(r.rx.total_dropped() + r.tx.total_dropped(), 0);
    // Wake-ups are per burst, never per packet: at most one in tx_burst
    // and one in the poll after it (copy mode sends 32 per sendto).
    assert!(
        r.tx_kicks <= 2 * t.batches,
        "wake-ups per burst: {} kicks for {} bursts",
        r.tx_kicks,
        t.batches
    );
}

/// Forwards through devmap slot `slot` unless the IPv4 source is a key of
/// the rules map (map 1), in which case it drops.
fn forwarder(slot: u32, devmap: &Arc<Map>, rules: &Arc<Map>) -> Arc<Program> {
    let src = format!(
        "
    mov %r6, %r1
    ldxw %r2, [%r6+0]
    ldxw %r3, [%r6+4]
    mov %r4, %r2
    add %r4, 34
    jgt %r4, %r3, fwd
    ldxh %r5, [%r2+12]
    jne %r5, 0x8, fwd
    ldxw %r5, [%r2+26]
    stxw [%r10-4], %r5
    mov %r2, %r10
    add %r2, -4
    lddw %r1, map_idx 1
    call 1
    jeq %r0, 0, fwd
    mov %r0, 1
    exit
fwd:
    lddw %r1, map_idx 0
    mov %r2, {slot}
    mov %r3, 0
    call 51
    exit
"
    );
    Arc::new(
        Program::load_with_maps(
            assemble(&src).unwrap(),
            &Registry::xdp(),
            vec![devmap.clone(), rules.clone()],
        )
        .unwrap(),
    )
}

fn ping(ns: &NetNs, to: &str, count: &str) -> bool {
    let out = ns.exec(&["ping", "-c", count, "-i", "0.2", "-W", "1", "-q", to]);
    println!(
        "ping {to} from {}: {}",
        ns.name(),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains("transmitted"))
            .unwrap_or("(no summary)")
    );
    out.status.success()
}

#[test]
fn forward_ping_goes_through_sluice_and_a_map_rule_stops_it() {
    if !require_root("afxdp_e2e::forward") {
        return;
    }
    if !common::try_run(&["ping", "-V"]) {
        panic!("ping (iputils-ping) is needed for this test");
    }
    let (nsa, nsb) = (NetNs::new(), NetNs::new());
    let (va, vb) = (Veth::new(&nsa, 1), Veth::new(&nsb, 1));
    // One subnet: Sluice is the wire between the two namespaces.
    nsa.ip(&["addr", "add", "10.201.7.1/24", "dev", &va.peer]);
    nsb.ip(&["addr", "add", "10.201.7.2/24", "dev", &vb.peer]);
    let sys = LinuxSys::shared();
    let ports = AfXdpPort::open_with(
        &sys,
        &[
            ("a", &AfXdpConfig::new(&va.host)),
            ("b", &AfXdpConfig::new(&vb.host)),
        ],
    )
    .expect("ports open");
    assert!(
        std::ptr::eq(ports[0].umem(), ports[1].umem()),
        "shared UMEM"
    );
    let devmap = map("ports", MapType::Devmap, 2);
    let rules = map("rules", MapType::Hash, 16);
    let (ia, ib) = (ports[0].info().ifindex, ports[1].info().ifindex);
    devmap
        .ops()
        .update(&0u32.to_ne_bytes(), &ib.to_ne_bytes(), 0)
        .unwrap();
    devmap
        .ops()
        .update(&1u32.to_ne_bytes(), &ia.to_ne_bytes(), 0)
        .unwrap();
    let dp = Dataplane::builder()
        .port(ports[0].clone())
        .port(ports[1].clone())
        .cores(cores(1))
        .idle(IdlePolicy::Adaptive)
        .program(0, Hook::Ingress, forwarder(0, &devmap, &rules), "a->b")
        .program(1, Hook::Ingress, forwarder(1, &devmap, &rules), "b->a")
        .start()
        .expect("dataplane starts");
    va.wait_up(&nsa);
    vb.wait_up(&nsb);

    assert!(ping(&nsa, "10.201.7.2", "3"), "ping A -> B through Sluice");
    let before = dp.stats();
    let key = [10u8, 201, 7, 1];
    rules.ops().update(&key, &1u32.to_ne_bytes(), 0).unwrap();
    assert!(!ping(&nsa, "10.201.7.2", "2"), "the rule drops A's packets");
    let blocked = dp.stats();
    let dropped = blocked.ports[0].total.xdp_drop - before.ports[0].total.xdp_drop;
    rules.ops().delete(&key).unwrap();
    assert!(
        ping(&nsa, "10.201.7.2", "3"),
        "removing the rule restores it"
    );
    let stats = dp.stop();
    let (a, b) = (&stats.ports[0].total, &stats.ports[1].total);
    println!(
        "forward: A rx {} redirect {} drop {} | B rx {} redirect {} tx {} | A tx {}; \
         dropped while blocked: {dropped}",
        a.rx_packets,
        a.xdp_redirect,
        a.xdp_drop,
        b.rx_packets,
        b.xdp_redirect,
        b.tx_packets,
        a.tx_packets
    );
    assert!(
        dropped >= 2,
        "the pings were dropped by the rule: {dropped}"
    );
    assert_eq!(a.rx_packets, a.verdicts());
    assert_eq!(
        b.tx_packets, a.xdp_redirect,
        "everything A redirected left by B"
    );
    assert_eq!(a.tx_packets, b.xdp_redirect, "and the other way");
    assert_eq!(
        a.redirect_invalid + b.redirect_invalid + a.tx_full + b.tx_full,
        0
    );
}

#[test]
fn multi_queue_veth_two_workers_both_queues_busy() {
    if !require_root("afxdp_e2e::multi_queue") {
        return;
    }
    const N: u64 = 20_000;
    let ns = NetNs::new();
    let veth = Veth::new(&ns, 2);
    let port = AfXdpPort::open("mq", &AfXdpConfig::new(&veth.host)).expect("port opens");
    assert_eq!(port.info().rx_queues, 2);
    let dp = Dataplane::builder()
        .port(port.clone())
        .cores(cores(2))
        .idle(IdlePolicy::Adaptive)
        .program(0, Hook::Ingress, macswap(), "macswap")
        .start()
        .expect("dataplane starts");
    assert_eq!(dp.workers(), 2);
    veth.wait_up(&ns);
    let (peer, pm, hm) = (veth.peer.clone(), veth.peer_mac, veth.host_mac);
    let got = ns
        .enter(move || {
            let sock = PacketSocket::open(&peer, Duration::from_millis(200)).unwrap();
            ping_pong(
                &sock,
                N,
                256,
                Duration::from_secs(60),
                // Many flows, so the sender's two TX queues both carry some.
                |s| udp_test_frame(hm, pm, s, 1024 + (s % 97) as u16),
                |f| assert_eq!(&f[0..6], &pm),
            )
        })
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let stats = dp.stop();
    let t = &stats.ports[0].total;
    let per_worker: Vec<u64> = stats.ports[0]
        .per_worker
        .iter()
        .map(|w| w.rx_packets)
        .collect();
    let per_queue: Vec<u64> = port.socket_reports().iter().map(|r| r.rx.packets).collect();
    let mut distinct = got.clone();
    distinct.sort_unstable();
    distinct.dedup();
    println!(
        "multi-queue: sent {N}, back {} distinct; rx per queue {per_queue:?}, per worker {per_worker:?}; tx {}",
        distinct.len(),
        t.tx_packets
    );
    assert_eq!(distinct.len() as u64, N);
    assert_eq!(t.rx_packets, N);
    assert_eq!(t.tx_packets, N);
    assert!(
        per_queue.iter().all(|&n| n > 0),
        "both queues carried traffic"
    );
    assert!(per_worker.iter().all(|&n| n > 0), "both workers worked");
}

/// Stamps `version` at bytes 26..34 and redirects through devmap slot 0.
fn stamper(version: u64, devmap: &Arc<Map>) -> Arc<Program> {
    let src = format!(
        "
    ldxw %r2, [%r1+0]
    ldxw %r3, [%r1+4]
    mov %r4, %r2
    add %r4, 34
    jgt %r4, %r3, drop
    lddw %r5, {version:#x}
    stxdw [%r2+26], %r5
    lddw %r1, map_idx 0
    mov %r2, 0
    mov %r3, 0
    call 51
    exit
drop:
    mov %r0, 1
    exit
"
    );
    Arc::new(
        Program::load_with_maps(
            assemble(&src).unwrap(),
            &Registry::xdp(),
            vec![devmap.clone()],
        )
        .unwrap(),
    )
}

#[test]
fn swapping_the_program_under_traffic_loses_nothing() {
    if !require_root("afxdp_e2e::swap") {
        return;
    }
    const N: u64 = 30_000;
    const VERSIONS: u64 = 3_000;
    let (nsa, nsb) = (NetNs::new(), NetNs::new());
    let (va, vb) = (Veth::new(&nsa, 1), Veth::new(&nsb, 1));
    let sys = LinuxSys::shared();
    let ports = AfXdpPort::open_with(
        &sys,
        &[
            ("a", &AfXdpConfig::new(&va.host)),
            ("b", &AfXdpConfig::new(&vb.host)),
        ],
    )
    .expect("ports open");
    let devmap = map("to_b", MapType::Devmap, 1);
    devmap
        .ops()
        .update(
            &0u32.to_ne_bytes(),
            &ports[1].info().ifindex.to_ne_bytes(),
            0,
        )
        .unwrap();
    let programs: Vec<Arc<Program>> = (1..=VERSIONS).map(|v| stamper(v, &devmap)).collect();
    let dp = Dataplane::builder()
        .port(ports[0].clone())
        .port(ports[1].clone())
        .cores(cores(1))
        .idle(IdlePolicy::Adaptive)
        .program(0, Hook::Ingress, programs[0].clone(), "v1")
        .start()
        .expect("dataplane starts");
    va.wait_up(&nsa);
    vb.wait_up(&nsb);

    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // The sender starts only once the receiver's socket is bound.
    let ready = Arc::new(AtomicBool::new(false));
    // Receiver in B: checks order and versions as frames come.
    let receiver = {
        let (peer, received, ready) = (vb.peer.clone(), received.clone(), ready.clone());
        nsb.enter(move || {
            let sock = PacketSocket::open(&peer, Duration::from_millis(200)).unwrap();
            ready.store(true, Ordering::Release);
            let mut buf = vec![0u8; 2048];
            let (mut next, mut last_version) = (0u64, 0u64);
            let mut versions = std::collections::BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(90);
            while next < N && Instant::now() < deadline {
                let Some(n) = sock.recv(&mut buf) else {
                    continue;
                };
                let f = &buf[..n];
                let Some(seq) = test_seq(f) else { continue };
                let v = u64::from_le_bytes(f[26..34].try_into().unwrap());
                assert_eq!(seq, next, "lost or reordered");
                assert!((1..=VERSIONS).contains(&v), "no valid version: {v}");
                assert!(v >= last_version, "version went back {last_version} -> {v}");
                last_version = v;
                versions.insert(v);
                next += 1;
                received.store(next, Ordering::Release);
            }
            (next, versions.len())
        })
    };
    // Sender in A: at most WINDOW frames in flight.
    const WINDOW: u64 = 256;
    let sender = {
        let (peer, received, done) = (va.peer.clone(), received.clone(), done.clone());
        let ready = ready.clone();
        let (dst, src) = (vb.peer_mac, va.peer_mac);
        nsa.enter(move || {
            let sock = PacketSocket::open(&peer, Duration::from_millis(200)).unwrap();
            while !ready.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let deadline = Instant::now() + Duration::from_secs(90);
            let mut seq = 0;
            while seq < N && Instant::now() < deadline {
                if seq - received.load(Ordering::Acquire) >= WINDOW {
                    std::thread::yield_now();
                    continue;
                }
                sock.send(&test_frame(dst, src, seq, 64)).unwrap();
                seq += 1;
            }
            done.store(true, Ordering::Release);
        })
    };
    // Control: swap while traffic flows.
    let started = Instant::now();
    let mut expected = dp.version(0, Hook::Ingress);
    let mut swaps = 0u64;
    for (i, p) in programs.iter().enumerate().skip(1) {
        if done.load(Ordering::Acquire) {
            break;
        }
        expected = dp
            .replace(
                0,
                Hook::Ingress,
                expected,
                Some(p.clone()),
                &format!("v{}", i + 1),
            )
            .expect("no one else swaps");
        swaps += 1;
        std::thread::sleep(Duration::from_micros(200));
    }
    let swap_time = started.elapsed();
    sender.join().unwrap();
    let (got, distinct) = receiver.join().unwrap();
    assert!(dp.wait_quiescent(Duration::from_secs(5)));
    let stats = dp.stop();
    let (a, b) = (&stats.ports[0].total, &stats.ports[1].total);
    println!(
        "swap: {swaps} swaps in {:.2} s while forwarding; B received {got} of {N} in order, \
         {distinct} distinct versions; A rx {} redirect {} drop {}; B tx {}",
        swap_time.as_secs_f64(),
        a.rx_packets,
        a.xdp_redirect,
        a.xdp_drop,
        b.tx_packets
    );
    assert_eq!(got, N, "not one packet lost to the swaps");
    assert_eq!(a.rx_packets, N);
    assert_eq!(a.xdp_redirect, N);
    assert_eq!(b.tx_packets, N);
    assert!(
        distinct > 50,
        "the swaps happened under traffic: {distinct}"
    );
}
