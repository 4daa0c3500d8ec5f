//! The DPDK back-end against the system's libdpdk, with virtual devices
//! and no huge pages (tier 4): `net_null`, `net_ring`, and
//! `net_af_packet` on a veth pair into a network namespace.
//!
//! EAL can be initialised once per process, so every DPDK test lives in
//! this one test binary and shares it (the first port opened starts it;
//! each test uses device names of its own). The veth test needs root: it
//! prints a loud SKIPPED line without it, and fails when `CI=true`.

#![cfg(feature = "dpdk")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{test_frame, test_seq, NetNs, PacketSocket, Veth};
use sluice_drivers::dpdk::{eal, DpdkConfig, DpdkPort};
use sluice_drivers::spec::{open, PortSpec};
use sluice_drivers::{
    Burst, Direction, DropReason, FramePool, HeapPool, Port, PortError, RxQueue, TxQueue, HEADROOM,
    MAX_BURST,
};

fn port(devargs: &str) -> Arc<DpdkPort> {
    DpdkPort::open(&format!("dpdk:{devargs}"), &DpdkConfig::new(devargs))
        .unwrap_or_else(|e| panic!("{devargs}: {e}"))
}

/// Receives until `want` frames arrived or `timeout` passed.
fn receive(rx: &mut dyn RxQueue, want: usize, timeout: Duration) -> Vec<sluice_drivers::Frame> {
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < want && Instant::now() < deadline {
        let mut b = Burst::new((want - out.len()).min(MAX_BURST));
        if rx.rx_burst(&mut b) == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        b.drain_front(b.len(), |f| out.push(f));
    }
    out
}

/// Sends every frame of `frames` (retrying what the ring refuses).
fn send_all(tx: &mut dyn TxQueue, frames: Vec<sluice_drivers::Frame>) {
    let mut b = Burst::new(MAX_BURST);
    let mut it = frames.into_iter().peekable();
    let deadline = Instant::now() + Duration::from_secs(5);
    while (it.peek().is_some() || !b.is_empty()) && Instant::now() < deadline {
        while !b.is_full() {
            match it.next() {
                Some(f) => b.push(f).expect("room"),
                None => break,
            }
        }
        tx.tx_burst(&mut b);
    }
    assert!(b.is_empty(), "TX kept {} frames", b.len());
}

#[test]
fn null_port_receives_and_sends_with_counts_and_contents() {
    let p = port("net_null10,size=64,copy=1");
    assert_eq!(p.info().driver, "dpdk");
    assert_eq!(p.info().mode, "dpdk:net_null");
    let pool = p.pool();
    let total = pool.available();
    let mut rx = p.open_rx(0).unwrap();
    let mut tx = p.open_tx(0).unwrap();
    assert!(matches!(p.open_rx(0), Err(PortError::QueueInUse { .. })));
    assert!(matches!(
        p.open_tx(1),
        Err(PortError::QueueOutOfRange { .. })
    ));

    let got = receive(&mut *rx, 1000, Duration::from_secs(5));
    assert_eq!(got.len(), 1000);
    for f in &got {
        // net_null with copy=1 writes its zeroed 64-byte packet.
        assert_eq!(f.len(), 64);
        assert_eq!(f.head(), HEADROOM, "256 bytes of headroom on RX");
        assert!(f.data().iter().all(|&b| b == 0));
        assert_eq!(f.pool().name(), "dpdk:net_null10,size=64,copy=1.pool");
    }
    assert_eq!(rx.stats().snapshot().packets, 1000);
    assert_eq!(rx.stats().snapshot().bytes, 64_000);

    // Send them back, rewritten, plus frames of a foreign pool (copied).
    let heap = HeapPool::new("dpdk-null-heap", 64, 2048 + HEADROOM).unwrap();
    let mut out = Vec::new();
    for (i, mut f) in got.into_iter().enumerate() {
        f.data_mut().fill(i as u8);
        out.push(f);
    }
    for i in 0..50 {
        let mut f = heap.alloc().unwrap();
        assert!(f.fill(&test_frame([2; 6], [4; 6], i, 100)));
        out.push(f);
    }
    send_all(&mut *tx, out);
    let s = tx.stats().snapshot();
    assert_eq!((s.packets, s.bytes), (1050, 64_000 + 5000));
    assert_eq!(p.tx_copies(), 50);
    assert_eq!(heap.available(), 64, "copied frames go back to their pool");
    let eth = p.eth_stats();
    assert_eq!(eth.opackets, 1050);
    assert!(eth.ipackets >= 1000);
    // Every mbuf is home (net_null frees what it sends).
    assert_eq!(pool.available(), total);
    let reports = p.queue_stats();
    let tx0 = reports
        .iter()
        .find(|r| r.direction == Direction::Tx && r.queue == 0)
        .unwrap();
    assert_eq!(tx0.stats.packets, 1050);
    assert_eq!(tx0.stats.dropped(DropReason::TxError), 0);
}

#[test]
fn ring_round_trip_is_byte_exact_and_zero_copy_for_mbufs() {
    // net_ring without arguments is a loopback: what queue 0 sends, queue 0
    // receives.
    let p = port("net_ring10");
    let mut rx = p.open_rx(0).unwrap();
    let mut tx = p.open_tx(0).unwrap();
    let heap = HeapPool::new("dpdk-ring-heap", 256, 2048 + HEADROOM).unwrap();
    let mut frames = Vec::new();
    let mut want = Vec::new();
    let mut cookies = Vec::new();
    for i in 0..200u64 {
        let len = 60 + (i as usize * 37) % 1455;
        let bytes = test_frame([0x02, 0, 0, 0, 0, 1], [0x02, 0, 0, 0, 0, 2], i, len);
        let mut f = if i % 2 == 0 {
            p.pool().alloc().unwrap()
        } else {
            heap.alloc().unwrap()
        };
        assert!(f.fill(&bytes));
        if i % 2 == 0 {
            cookies.push(f.cookie);
        }
        want.push(bytes);
        frames.push(f);
    }
    send_all(&mut *tx, frames);
    let got = receive(&mut *rx, 200, Duration::from_secs(5));
    assert_eq!(got.len(), 200);
    for (i, (f, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(f.data(), &w[..], "frame {i}");
        assert_eq!(f.head(), HEADROOM);
        if i % 2 == 0 {
            assert_eq!(
                f.cookie,
                cookies[i / 2],
                "frame {i} went by mbuf, not by copy"
            );
        }
    }
    assert_eq!(p.tx_copies(), 100);
    assert_eq!(heap.available(), 256);
    drop(got);
}

#[test]
fn frames_cross_between_two_dpdk_ports_without_copies() {
    let a = port("net_ring11");
    let b = port("net_ring12");
    let (mut arx, mut atx) = (a.open_rx(0).unwrap(), a.open_tx(0).unwrap());
    let (mut brx, mut btx) = (b.open_rx(0).unwrap(), b.open_tx(0).unwrap());
    let mut f = a.pool().alloc().unwrap();
    let bytes = test_frame([2; 6], [4; 6], 7, 300);
    assert!(f.fill(&bytes));
    let cookie = f.cookie;
    send_all(&mut *atx, vec![f]);
    let got = receive(&mut *arx, 1, Duration::from_secs(2));
    send_all(&mut *btx, got);
    let got = receive(&mut *brx, 1, Duration::from_secs(2));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data(), &bytes[..]);
    assert_eq!(got[0].cookie, cookie);
    assert_eq!(
        b.tx_copies(),
        0,
        "an mbuf of another DPDK port is sent as it is"
    );
}

/// What `bpf_xdp_adjust_head(ctx, -delta)` does to a frame: the packet
/// starts `delta` bytes earlier; the program then writes the new header.
fn push_header(f: &mut sluice_drivers::Frame, header: &[u8]) {
    let (h, l) = (f.head(), f.len());
    assert!(h >= header.len(), "headroom for {} bytes", header.len());
    f.set_bounds(h - header.len(), l + header.len());
    f.data_mut()[..header.len()].copy_from_slice(header);
}

#[test]
fn pushed_headers_beyond_dpdks_headroom_are_sent_intact() {
    let p = port("net_ring13");
    let mut rx = p.open_rx(0).unwrap();
    let mut tx = p.open_tx(0).unwrap();
    let mut want = Vec::new();
    let mut frames = Vec::new();
    for (i, push) in [200usize, 100, 200, 256, 0].into_iter().enumerate() {
        let inner = test_frame([2; 6], [4; 6], i as u64, 64 + i);
        let mut f = p.pool().alloc().unwrap();
        assert!(f.fill(&inner));
        let header: Vec<u8> = (0..push).map(|k| (k as u8) ^ 0xa5).collect();
        push_header(&mut f, &header);
        let mut w = header.clone();
        w.extend_from_slice(&inner);
        want.push(w);
        frames.push(f);
    }
    send_all(&mut *tx, frames);
    // 200, 200 and 256 reach into the private area; 100 and 0 do not.
    assert_eq!(p.headroom_moves(), 3);
    let got = receive(&mut *rx, want.len(), Duration::from_secs(2));
    assert_eq!(got.len(), want.len());
    for (f, w) in got.iter().zip(&want) {
        assert_eq!(f.data(), &w[..]);
    }
    // net_ring hands the mbufs back as sent: moved packets start at DPDK's
    // headroom again (256 into the frame); the 100-byte push stayed put.
    let heads: Vec<usize> = got.iter().map(|f| f.head()).collect();
    assert_eq!(heads, [256, 156, 256, 256, 256]);
}

#[test]
fn a_frame_too_big_for_an_mbuf_is_dropped_and_counted() {
    let p = port("net_null11");
    let mut tx = p.open_tx(0).unwrap();
    let heap = HeapPool::new("dpdk-big-heap", 4, 9000 + HEADROOM).unwrap();
    let mut b = Burst::new(8);
    let mut big = heap.alloc().unwrap();
    assert!(big.fill(&vec![1u8; 9000]));
    let mut small = heap.alloc().unwrap();
    assert!(small.fill(&[2u8; 60]));
    b.push(big).unwrap();
    b.push(small).unwrap();
    assert_eq!(tx.tx_burst(&mut b), 2);
    assert!(b.is_empty());
    let s = tx.stats().snapshot();
    assert_eq!((s.packets, s.dropped(DropReason::TooBig)), (1, 1));
    assert_eq!(heap.available(), 4);
}

#[test]
fn worker_threads_register_as_lcores() {
    let p = port("net_null12");
    let mut rx = p.open_rx(0).unwrap();
    let id = std::thread::spawn(move || {
        let before = eal::lcore_id();
        let mut b = Burst::new(8);
        rx.rx_burst(&mut b);
        (before, eal::lcore_id())
    })
    .join()
    .unwrap();
    assert_eq!(id.0, u32::MAX, "a fresh thread is not an lcore");
    assert_ne!(id.1, u32::MAX, "the first burst registered it");
    assert_eq!(eal::registration_failures(), 0);
}

#[test]
fn specs_open_dpdk_ports_and_errors_are_one_line() {
    let specs: Vec<PortSpec> = ["dpdk:net_null13,size=128,queues=2", "dpdk:net_ring14"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let ports = open(&specs).unwrap();
    assert_eq!(ports[0].info().name, "dpdk:net_null13");
    assert_eq!(ports[0].info().rx_queues, 2);
    let mut rx = ports[0].open_rx(1).unwrap();
    let got = receive(&mut *rx, 10, Duration::from_secs(2));
    assert!(got.iter().all(|f| f.len() == 128));

    let err = |s: &str| {
        let spec: PortSpec = s.parse().unwrap();
        open(&[spec]).map(|_| ()).unwrap_err().to_string()
    };
    let e = err("dpdk:net_bogus0");
    assert!(e.contains("cannot probe \"net_bogus0\""), "{e}");
    assert!(!e.contains('\n'));
    let e = err("dpdk:net_af_packet20,iface=nosuchif0");
    assert!(e.contains("interface \"nosuchif0\" does not exist"), "{e}");
    let e = err("dpdk:net_null14,queues=64");
    // 64 queue pairs of 1024 descriptors each want more than -m 512.
    assert!(e.contains("cannot create a pool of 262143 mbufs"), "{e}");
    assert!(e.contains("set SLUICE_DPDK_EAL with a larger -m"), "{e}");
    let e = err("dpdk:net_null13");
    assert!(
        e.contains("device net_null13 is already open in this process"),
        "{e}"
    );
}

#[test]
fn af_packet_on_a_veth_pair_exchanges_frames_with_a_namespace() {
    if !common::require_root("dpdk net_af_packet on veth") {
        return;
    }
    // EAL first: while another test thread is inside rte_eal_init, starting
    // a child process (`ip`) can fail with EFAULT.
    eal::init().expect("EAL");
    let ns = NetNs::new();
    let veth = Veth::new(&ns, 1);
    veth.wait_up(&ns);
    let devargs = format!("net_af_packet30,iface={}", veth.host);
    let p = port(&devargs);
    assert_eq!(p.info().mode, "dpdk:net_af_packet");
    let mut rx = p.open_rx(0).unwrap();
    let mut tx = p.open_tx(0).unwrap();

    // The namespace's side: a raw socket on the peer end.
    let peer = veth.peer.clone();
    let sock = ns
        .enter(move || PacketSocket::open(&peer, Duration::from_millis(200)))
        .join()
        .unwrap()
        .expect("raw socket in the namespace");

    // Namespace -> Sluice.
    let n = 100u64;
    let want: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            test_frame(
                veth.host_mac,
                veth.peer_mac,
                i,
                60 + (i as usize * 29) % 1400,
            )
        })
        .collect();
    for w in &want {
        sock.send(w).expect("send from the namespace");
    }
    let mut got: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut b = Burst::new(MAX_BURST);
    while (got.len() as u64) < n && Instant::now() < deadline {
        rx.rx_burst(&mut b);
        while let Some(f) = b.pop() {
            if test_seq(f.data()).is_some() {
                assert!(f.head() >= HEADROOM);
                got.push(f.data().to_vec());
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    got.sort_by_key(|f| test_seq(f));
    assert_eq!(got.len() as u64, n, "frames from the namespace");
    assert_eq!(got, want, "byte-exact");

    // Sluice -> namespace: own mbufs and copies of foreign frames.
    let heap = HeapPool::new("dpdk-veth-heap", 64, 2048 + HEADROOM).unwrap();
    let mut frames = Vec::new();
    let back: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            test_frame(
                veth.peer_mac,
                veth.host_mac,
                1000 + i,
                60 + (i as usize * 31) % 1400,
            )
        })
        .collect();
    for (i, w) in back.iter().enumerate() {
        let mut f = if i % 3 == 0 {
            heap.alloc().unwrap()
        } else {
            p.pool().alloc().unwrap()
        };
        assert!(f.fill(w));
        frames.push(f);
    }
    send_all(&mut *tx, frames);
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while (seen.len() as u64) < n && Instant::now() < deadline {
        if let Some(len) = sock.recv(&mut buf) {
            if test_seq(&buf[..len]).is_some_and(|s| s >= 1000) {
                seen.push(buf[..len].to_vec());
            }
        }
    }
    seen.sort_by_key(|f| test_seq(f));
    assert_eq!(seen.len() as u64, n, "frames into the namespace");
    assert_eq!(seen, back, "byte-exact");
    assert_eq!(tx.stats().snapshot().packets, n);
    drop((rx, tx, p));
}
