//! The AF_XDP driver on real veth pairs between network namespaces (tier
//! 4), without the dataplane: receive, reflect by descriptor, send copies
//! of foreign frames, multi-queue, statistics, clean-up, and every setup
//! error with its message. Root only: without root each test prints a loud
//! SKIPPED line and passes, except with `CI=true`, where it fails.

#![cfg(feature = "afxdp")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{require_root, test_frame, test_seq, NetNs, PacketSocket, Veth};
use sluice_drivers::afxdp::{AfXdpConfig, AfXdpPort, Queues, XdpMode};
use sluice_drivers::{Burst, DropReason, FramePool, HeapPool, Port, HEADROOM};

/// Receives on `rx` until `n` test frames arrived or `timeout`; returns them.
fn collect(
    rx: &mut dyn sluice_drivers::RxQueue,
    tx: &mut dyn sluice_drivers::TxQueue,
    n: usize,
    timeout: Duration,
) -> Vec<sluice_drivers::Frame> {
    let mut out = Vec::new();
    let mut burst = Burst::new(32);
    let deadline = Instant::now() + timeout;
    while out.len() < n && Instant::now() < deadline {
        if rx.rx_burst(&mut burst) == 0 {
            tx.poll();
            std::thread::sleep(Duration::from_micros(200));
        }
        burst.drain_front(burst.len(), |f| {
            if test_seq(f.data()).is_some() {
                out.push(f);
            }
        });
    }
    out
}

#[test]
fn frames_arrive_in_the_umem_and_go_back_by_descriptor_or_by_copy() {
    if !require_root("afxdp::frames_arrive_in_the_umem_and_go_back_by_descriptor_or_by_copy") {
        return;
    }
    const N: u64 = 2000;
    let ns = NetNs::new();
    let veth = Veth::new(&ns, 1);
    let port = AfXdpPort::open(
        &format!("afxdp:{}", veth.host),
        &AfXdpConfig::new(&veth.host),
    )
    .expect("port opens");
    veth.wait_up(&ns);
    let info = port.info().clone();
    println!(
        "port {} mode {} notes {:?}",
        info.name,
        info.mode,
        port.notes()
    );
    assert_eq!(info.driver, "afxdp");
    assert_eq!((info.rx_queues, info.tx_queues), (1, 1));
    assert_eq!(info.mode, "native/copy", "veth: native XDP, no zero-copy");
    assert!(!veth.host_xdp().is_empty(), "the program is attached");

    let mut rx = port.open_rx(0).unwrap();
    let mut tx = port.open_tx(0).unwrap();
    let (peer, peer_mac, host_mac) = (veth.peer.clone(), veth.peer_mac, veth.host_mac);
    // The peer sends N frames, then waits for N answers.
    let sender = ns.enter(move || {
        let sock = PacketSocket::open(&peer, Duration::from_millis(100)).unwrap();
        let mut back = Vec::new();
        let mut buf = vec![0u8; 4096];
        for seq in 0..N {
            sock.send(&test_frame(
                host_mac,
                peer_mac,
                seq,
                60 + (seq % 200) as usize,
            ))
            .unwrap();
            if seq % 64 == 63 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while (back.len() as u64) < N && Instant::now() < deadline {
            if let Some(n) = sock.recv(&mut buf) {
                if let Some(s) = test_seq(&buf[..n]) {
                    assert_eq!(&buf[..6], &peer_mac, "reflected to the sender");
                    assert_eq!(&buf[6..12], &host_mac, "from Sluice's side");
                    back.push(s);
                }
            }
        }
        back
    });

    let got = collect(&mut *rx, &mut *tx, N as usize, Duration::from_secs(20));
    assert_eq!(got.len() as u64, N, "every frame arrives");
    let umem = port.umem();
    let mut burst = Burst::new(64);
    let heap = HeapPool::new("afxdp-copy", 64, 2048).unwrap();
    let mut sent = 0u64;
    let mut by_copy = 0u64;
    for (i, mut f) in got.into_iter().enumerate() {
        assert_eq!(f.head(), HEADROOM, "the packet starts at HEADROOM");
        assert_eq!(f.capacity(), 2048);
        let seq = test_seq(f.data()).unwrap();
        assert_eq!(f.len(), 60 + (seq % 200) as usize);
        assert!(std::ptr::addr_eq(f.pool(), umem as &dyn FramePool));
        // MAC swap.
        let d = f.data_mut();
        let (a, b) = d.split_at_mut(6);
        a.swap_with_slice(&mut b[..6]);
        if i % 4 == 0 {
            // Every fourth frame goes back as a copy from a heap pool.
            let mut h = heap.alloc().unwrap();
            assert!(h.fill(f.data()));
            drop(f);
            burst.push(h).unwrap();
            by_copy += 1;
        } else {
            burst.push(f).unwrap();
        }
        if burst.is_full() {
            while !burst.is_empty() {
                sent += tx.tx_burst(&mut burst) as u64;
                tx.poll();
            }
        }
    }
    while !burst.is_empty() {
        sent += tx.tx_burst(&mut burst) as u64;
        tx.poll();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && port.socket_reports()[0].tx.packets < N {
        tx.poll();
    }
    let back = sender.join().unwrap();
    let mut sorted = back.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let r = port.socket_reports()[0];
    println!(
        "reflect: sent {N}, received {} in Sluice, sent back {sent} ({by_copy} by copy), \
         peer got {} distinct; tx kicks {}, rx kicks {}",
        r.rx.packets,
        sorted.len(),
        r.tx_kicks,
        r.rx_kicks
    );
    assert_eq!(sent, N);
    assert_eq!(sorted.len() as u64, N, "every frame came back, once");
    assert_eq!(back.len() as u64, N);
    assert!(
        r.tx_kicks <= N / 8,
        "wake-ups are per burst, not per packet: {}",
        r.tx_kicks
    );
    assert_eq!(heap.available(), 64, "copied frames went home");
    // Drain completions; every frame of the UMEM is then free or in the
    // fill ring.
    for _ in 0..100 {
        tx.poll();
    }
    let stats = port.xdp_statistics().unwrap();
    println!("XDP_STATISTICS: {stats:?}");
    assert_eq!(
        stats.rx_ring_full + stats.rx_invalid_descs + stats.tx_invalid_descs,
        0
    );
    drop((rx, tx));
    drop(port);
    assert!(
        umem.is_released(),
        "the UMEM is unmapped once everything is home"
    );
    assert!(
        common::wait_no_xdp(&veth.host),
        "the program left with the port"
    );
}

#[test]
fn two_queues_each_get_their_own_socket() {
    if !require_root("afxdp::two_queues_each_get_their_own_socket") {
        return;
    }
    let ns = NetNs::new();
    let veth = Veth::new(&ns, 2);
    let port = AfXdpPort::open("q2", &AfXdpConfig::new(&veth.host)).expect("opens");
    assert_eq!(port.info().rx_queues, 2);
    let reports = port.socket_reports();
    assert_eq!(reports.len(), 2);
    assert_eq!((reports[0].kernel_queue, reports[1].kernel_queue), (0, 1));
    // Only queue 1 of a two-queue interface.
    drop(port);
    let mut cfg = AfXdpConfig::new(&veth.host);
    cfg.queues = Queues::Range(1, 1);
    let port = AfXdpPort::open("q1", &cfg).expect("opens");
    assert_eq!(port.info().rx_queues, 1);
    assert_eq!(port.socket_reports()[0].kernel_queue, 1);
}

#[test]
fn a_full_fill_ring_drop_is_counted_with_the_kernels_reason() {
    if !require_root("afxdp::a_full_fill_ring_drop_is_counted_with_the_kernels_reason") {
        return;
    }
    let ns = NetNs::new();
    let veth = Veth::new(&ns, 1);
    let mut cfg = AfXdpConfig::new(&veth.host);
    cfg.ring_size = 64;
    cfg.frames_per_queue = 64;
    let port = AfXdpPort::open("small", &cfg).expect("opens");
    veth.wait_up(&ns);
    let mut rx = port.open_rx(0).unwrap();
    // 64 frames fill the fill ring; the RX ring holds 64; 200 frames sent
    // while nobody polls: the rest find no buffer or a full RX ring.
    let (peer, pm, hm) = (veth.peer.clone(), veth.peer_mac, veth.host_mac);
    ns.enter(move || {
        let sock = PacketSocket::open(&peer, Duration::from_millis(50)).unwrap();
        for s in 0..200 {
            sock.send(&test_frame(hm, pm, s, 64)).unwrap();
        }
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let s = port.xdp_statistics().unwrap();
    println!("XDP_STATISTICS after 200 frames into 64 buffers: {s:?}");
    assert!(s.rx_fill_ring_empty_descs + s.rx_ring_full + s.rx_dropped > 0);
    // Draining folds the counters into the queue's drop reasons.
    let mut burst = Burst::new(64);
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        got += rx.rx_burst(&mut burst);
        burst.free_all();
    }
    drop(rx);
    let r = port.socket_reports()[0];
    println!(
        "received {got}; drops: no_buffer {} rx_ring_full {} kernel_dropped {}",
        r.rx.dropped(DropReason::NoBuffer),
        r.rx.dropped(DropReason::RxRingFull),
        r.rx.dropped(DropReason::KernelDropped)
    );
    assert_eq!(
        r.rx.dropped(DropReason::NoBuffer),
        s.rx_fill_ring_empty_descs
    );
    assert_eq!(r.rx.dropped(DropReason::RxRingFull), s.rx_ring_full);
    // In copy mode the kernel counts a packet that found no buffer in
    // rx_dropped too; Sluice counts it once.
    assert_eq!(
        r.rx.dropped(DropReason::KernelDropped),
        s.rx_dropped - s.rx_fill_ring_empty_descs
    );
    assert_eq!(
        r.rx.total_dropped(),
        200 - got as u64,
        "every drop counted once"
    );
    assert!(got >= 64);
}

fn open_err(cfg: &AfXdpConfig) -> String {
    match AfXdpPort::open(&format!("afxdp:{}", cfg.iface), cfg) {
        Ok(_) => panic!("{} opened", cfg.iface),
        Err(e) => e.to_string(),
    }
}

#[test]
fn setup_errors_are_one_line_and_leave_nothing_behind() {
    if !require_root("afxdp::setup_errors_are_one_line_and_leave_nothing_behind") {
        return;
    }
    // Interface missing.
    let e = open_err(&AfXdpConfig::new("slnosuch0"));
    println!("missing: {e}");
    assert_eq!(
        e,
        "port afxdp:slnosuch0: interface \"slnosuch0\" does not exist"
    );

    let ns = NetNs::new();
    let veth = Veth::new(&ns, 1);
    let host = veth.host.clone();

    // Queue out of range.
    let mut cfg = AfXdpConfig::new(&host);
    cfg.queues = Queues::Count(3);
    let e = open_err(&cfg);
    println!("queue: {e}");
    assert_eq!(
        e,
        format!("port afxdp:{host}: queue 2 out of range (it has 1)")
    );
    assert!(common::wait_no_xdp(&host));

    // Already has an XDP program: one attached by ip(8).
    let obj = concat!(env!("CARGO_MANIFEST_DIR"), "/../bpf/tests/progs/macswap.o");
    common::run(&[
        "ip", "link", "set", "dev", &host, "xdpdrv", "obj", obj, "sec", "xdp",
    ]);
    let e = open_err(&AfXdpConfig::new(&host));
    println!("busy: {e}");
    assert_eq!(
        e,
        format!(
            "port afxdp:{host}: interface {host} already has an XDP program attached; \
             remove it first (ip link set dev {host} xdp off)"
        )
    );
    common::run(&["ip", "link", "set", "dev", &host, "xdp", "off"]);
    // ... and by another Sluice port.
    let first = AfXdpPort::open("first", &AfXdpConfig::new(&host)).expect("opens");
    let e = open_err(&AfXdpConfig::new(&host));
    assert!(e.contains("already has an XDP program"), "{e}");
    drop(first);
    assert!(
        common::wait_no_xdp(&host),
        "nothing left: {}",
        veth.host_xdp()
    );

    // A forced mode the driver lacks: zero-copy on veth.
    let mut cfg = AfXdpConfig::new(&host);
    cfg.bind_mode = sluice_drivers::afxdp::BindMode::ZeroCopy;
    let e = open_err(&cfg);
    println!("zerocopy: {e}");
    assert!(e.contains("zero-copy"), "{e}");
    assert!(
        common::wait_no_xdp(&host),
        "nothing left after a failed bind"
    );
}

#[test]
fn a_device_without_native_xdp_falls_back_to_generic() {
    if !require_root("afxdp::a_device_without_native_xdp_falls_back_to_generic") {
        return;
    }
    let name = format!("slt{}d0", std::process::id());
    common::run(&["ip", "link", "add", &name, "type", "bridge"]);
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            common::try_run(&["ip", "link", "del", &self.0]);
        }
    }
    let _del = Del(name.clone());
    common::run(&["ip", "link", "set", &name, "up"]);
    let port = AfXdpPort::open("bridge", &AfXdpConfig::new(&name)).expect("opens");
    println!("bridge: mode {} notes {:?}", port.info().mode, port.notes());
    assert_eq!(port.xdp_mode(), XdpMode::Generic);
    assert!(port.info().mode.starts_with("generic/"));
    assert!(port.notes().iter().any(|n| n.contains("generic")));
    let mut cfg = AfXdpConfig::new(&name);
    cfg.xdp_mode = XdpMode::Native;
    drop(port);
    assert!(common::wait_no_xdp(&name));
    let e = open_err(&cfg);
    println!("bridge native: {e}");
    assert!(
        e.contains("cannot attach the XDP program in native mode"),
        "{e}"
    );
}

#[test]
fn ports_opened_together_share_one_umem() {
    if !require_root("afxdp::ports_opened_together_share_one_umem") {
        return;
    }
    let ns = NetNs::new();
    let a = Veth::new(&ns, 1);
    let b = Veth::new(&ns, 1);
    let sys = sluice_drivers::afxdp::sys::LinuxSys::shared();
    let (ca, cb) = (AfXdpConfig::new(&a.host), AfXdpConfig::new(&b.host));
    let ports = AfXdpPort::open_with(&sys, &[("a", &ca), ("b", &cb)]).expect("open");
    assert!(std::ptr::eq(ports[0].umem(), ports[1].umem()), "one UMEM");
    assert_eq!(ports[0].umem().frames(), 2 * ca.frames_per_queue);
    let mut own = cb.clone();
    own.shared_umem = false;
    drop(ports);
    let ports = AfXdpPort::open_with(&sys, &[("a", &ca), ("b", &own)]).expect("open");
    assert!(!std::ptr::eq(ports[0].umem(), ports[1].umem()));
    let _ = Arc::clone(&ports[0]);
}

/// Not a test of its own: the body of the child processes below, which
/// open a port on `$SLUICE_AFXDP_CHILD_IFACE` with fewer privileges and
/// print the outcome. Does nothing without that variable.
#[test]
fn child_opens_a_port() {
    let Ok(iface) = std::env::var("SLUICE_AFXDP_CHILD_IFACE") else {
        return;
    };
    match AfXdpPort::open(&format!("afxdp:{iface}"), &AfXdpConfig::new(&iface)) {
        Ok(p) => println!("CHILD-RESULT: opened {}", p.info().mode),
        Err(e) => println!("CHILD-RESULT: {e}"),
    }
}

/// Runs [`child_opens_a_port`] on `iface` under `wrapper` (a command that
/// takes the rest of its arguments as the command to run); returns the
/// child's one result line.
fn child_result(wrapper: &[&str], iface: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(&exe)
        .args([
            "--exact",
            "child_opens_a_port",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SLUICE_AFXDP_CHILD_IFACE", iface)
        .output()
        .expect("child runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split_once("CHILD-RESULT: ").map(|(_, r)| r))
        .unwrap_or_else(|| {
            panic!(
                "no result from the child: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string()
}

#[test]
fn missing_privileges_and_a_too_small_memlock_limit_are_named() {
    if !require_root("afxdp::missing_privileges_and_a_too_small_memlock_limit_are_named") {
        return;
    }
    let ns = NetNs::new();
    let veth = Veth::new(&ns, 1);
    let host = veth.host.clone();
    // Root without any capability.
    let e = child_result(
        &["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"],
        &host,
    );
    println!("no capabilities: {e}");
    assert_eq!(
        e,
        format!(
            "port afxdp:{host}: not enough permissions to create the XSKMAP (Operation not permitted): \
             AF_XDP needs root, or CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF"
        )
    );
    assert!(common::wait_no_xdp(&host));
    // Root without CAP_IPC_LOCK, with a 1 MiB locked-memory limit: the
    // 16 MiB UMEM cannot be registered.
    let e = child_result(
        &[
            "prlimit",
            "--memlock=1048576:1048576",
            "setpriv",
            "--inh-caps=-ipc_lock",
            "--bounding-set=-ipc_lock",
            "--",
        ],
        &host,
    );
    println!("memlock: {e}");
    assert!(
        e.starts_with(&format!(
            "port afxdp:{host}: UMEM registration failed (16 MiB in 8192 frames of 2048 bytes): "
        )) && e.ends_with(
            "the locked-memory limit (ulimit -l) is too low for it without CAP_IPC_LOCK"
        ),
        "{e}"
    );
    assert!(common::wait_no_xdp(&host), "nothing left behind");
    // With the privileges back, the same port opens.
    let e = child_result(&["env"], &host);
    assert_eq!(e, "opened native/copy");
}
