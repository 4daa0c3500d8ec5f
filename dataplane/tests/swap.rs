//! Program swaps under load: while two workers forward traffic from ring
//! port A to ring port B, the control side swaps the program 10,000 times.
//! Every program version stamps its own number into each packet. Checked:
//! every packet arrives, carrying exactly one valid version; per queue the
//! versions never go backwards (a swap is atomic and in order); the
//! counters add up (rx = tx + drop, nothing lost to the swaps).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_bpf::asm::assemble;
use sluice_bpf::helpers::Registry;
use sluice_bpf::Program;
use sluice_dataplane::{Dataplane, Hook, IdlePolicy};
use sluice_drivers::ring::RingPort;
use sluice_drivers::{Burst, Port};

const SWAPS: u64 = 10_000;
const PACKETS_PER_QUEUE: u64 = 150_000;

/// Writes `version` into bytes 14..22 and redirects to `ifindex`.
fn stamp(version: u64, ifindex: u32) -> Arc<Program> {
    let src = format!(
        "ldxw %r2, [%r1+0]\n\
         ldxw %r3, [%r1+4]\n\
         mov %r4, %r2\n\
         add %r4, 22\n\
         jgt %r4, %r3, drop\n\
         lddw %r5, {version:#x}\n\
         stxdw [%r2+14], %r5\n\
         mov %r1, {ifindex}\n\
         mov %r2, 0\n\
         call 23\n\
         exit\n\
         drop:\n\
         mov %r0, 1\n\
         exit"
    );
    Arc::new(Program::load(assemble(&src).unwrap(), &Registry::xdp()).unwrap())
}

#[test]
fn ten_thousand_swaps_under_load_lose_nothing_and_never_mix() {
    let allowed = sluice_dataplane::allowed_cores();
    let cores: Vec<usize> = allowed.iter().copied().cycle().take(2).collect();
    let (a, ea) = RingPort::with_endpoint("swap-a", 2, 4096);
    let (b, eb) = RingPort::with_endpoint("swap-b", 2, 4096);
    let b_ifindex = b.info().ifindex;
    // Versions are made ahead of time so swapping is only the swap.
    let programs: Vec<Arc<Program>> = (0..=SWAPS).map(|v| stamp(v + 1, b_ifindex)).collect();
    let dp = Dataplane::builder()
        .port(a.clone())
        .port(b.clone())
        .cores(cores)
        .idle(IdlePolicy::Adaptive)
        .program(0, Hook::Ingress, programs[0].clone(), "v1")
        .start()
        .expect("dataplane starts");
    assert_eq!(dp.workers(), 2);

    let done_sending = Arc::new(AtomicBool::new(false));
    // Flow control: the sender keeps at most WINDOW packets per queue in
    // flight, so no ring ever overflows and any loss is the dataplane's.
    const WINDOW: u64 = 1024;
    let received: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    // Sender: sequence numbers per queue at bytes 30..38.
    let sender = {
        let done = done_sending.clone();
        let received = received.clone();
        std::thread::spawn(move || {
            let mut seq = [0u64; 2];
            let mut pkt = vec![0u8; 64];
            pkt[12] = 0x08;
            while seq.iter().any(|&s| s < PACKETS_PER_QUEUE) {
                for q in 0..2u16 {
                    let i = q as usize;
                    if seq[i] >= PACKETS_PER_QUEUE
                        || seq[i] - received[i].load(Ordering::Acquire) >= WINDOW
                    {
                        std::hint::spin_loop();
                        continue;
                    }
                    pkt[30..38].copy_from_slice(&seq[q as usize].to_le_bytes());
                    let Some(f) = ea.frame(&pkt) else { continue };
                    if ea.send(q, f).is_ok() {
                        seq[q as usize] += 1;
                    }
                }
            }
            done.store(true, Ordering::Relaxed);
            ea
        })
    };
    // Receiver: checks every packet as it comes. Worker w polls A's RX
    // queue w and sends on B's TX queue w, so B's queue w carries A's queue
    // w packets, in order.
    let receiver = std::thread::spawn(move || {
        let received = received;
        let mut last_version = [0u64; 2];
        let mut next_seq = [0u64; 2];
        let mut per_queue = [0u64; 2];
        let mut burst = Burst::new(64);
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut versions_seen = std::collections::BTreeSet::new();
        while per_queue.iter().sum::<u64>() < 2 * PACKETS_PER_QUEUE && Instant::now() < deadline {
            for q in 0..2usize {
                let n = eb.recv_burst(q as u16, &mut burst);
                burst.drain_front(n, |f| {
                    let d = f.data();
                    let v = u64::from_le_bytes(d[14..22].try_into().unwrap());
                    let seq = u64::from_le_bytes(d[30..38].try_into().unwrap());
                    assert!(
                        (1..=SWAPS + 1).contains(&v),
                        "packet carries no valid version: {v}"
                    );
                    assert!(
                        v >= last_version[q],
                        "queue {q}: version went back from {} to {v}",
                        last_version[q]
                    );
                    assert_eq!(seq, next_seq[q], "queue {q}: packet lost or reordered");
                    last_version[q] = v;
                    next_seq[q] = seq + 1;
                    versions_seen.insert(v);
                    per_queue[q] += 1;
                    received[q].store(per_queue[q], Ordering::Release);
                });
            }
        }
        (
            per_queue.iter().sum::<u64>(),
            per_queue,
            versions_seen.len(),
        )
    });

    // Control: swap as fast as it can while traffic flows.
    let started = Instant::now();
    let mut swaps = 0u64;
    let mut expected = dp.version(0, Hook::Ingress);
    for p in &programs[1..] {
        expected = dp
            .replace(0, Hook::Ingress, expected, Some(p.clone()), "v")
            .expect("no one else swaps");
        swaps += 1;
        // Spread the swaps over the traffic rather than finishing first.
        if swaps.is_multiple_of(8) && !done_sending.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let swap_time = started.elapsed();
    assert!(
        dp.wait_quiescent(Duration::from_secs(5)),
        "workers pass quiescent points"
    );
    let _ea = sender.join().unwrap();
    let (got, per_queue, distinct) = receiver.join().unwrap();
    let stats = dp.stop();
    let a_stats = &stats.ports[0].total;
    let b_stats = &stats.ports[1].total;
    println!(
        "swap test: {swaps} swaps in {:.1} ms while forwarding; received {got} of {} packets \
         (queues {per_queue:?}), {distinct} distinct versions seen; port A rx {} = redirect {} + drop {} + aborted {}; port B tx {}",
        swap_time.as_secs_f64() * 1e3,
        2 * PACKETS_PER_QUEUE,
        a_stats.rx_packets,
        a_stats.xdp_redirect,
        a_stats.xdp_drop,
        a_stats.xdp_aborted,
        b_stats.tx_packets,
    );
    assert_eq!(swaps, SWAPS);
    assert_eq!(got, 2 * PACKETS_PER_QUEUE, "every packet arrives");
    assert_eq!(a_stats.rx_packets, 2 * PACKETS_PER_QUEUE);
    assert_eq!(
        a_stats.rx_packets,
        a_stats.verdicts(),
        "rx = drop + tx + redirect + pass + aborted"
    );
    assert_eq!(
        a_stats.xdp_redirect, a_stats.rx_packets,
        "nothing dropped or aborted"
    );
    assert_eq!(
        b_stats.tx_packets, a_stats.xdp_redirect,
        "every redirect was sent"
    );
    assert_eq!(b_stats.tx_full + a_stats.redirect_invalid, 0);
    assert!(
        distinct > 100,
        "the swaps happened while traffic flowed: {distinct} versions seen"
    );
}
