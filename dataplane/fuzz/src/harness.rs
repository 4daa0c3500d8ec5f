//! The PASS path: whatever a program passes reaches the host stack, so any
//! bytes at all must be dropped (and counted) or answered, never crash it.
//!
//! The input is a sequence of frames, each a big-endian `u16` length, a
//! flags byte and that many bytes (cut short at the end of the input).
//! Flag bit 0 addresses the frame to the stack's MAC and completes its
//! IPv4 header and TCP/UDP/ICMP/ICMPv6 checksums, so mutations get past
//! the checks and into smoltcp's parsers and state machines; without it
//! the bytes go in as they are. Each goes through
//! the host stack's own checks ([`check_frame`]) and then into a live
//! [`Stack`] with IPv4 and IPv6 addresses, a default gateway and the HTTP
//! service, polled after every frame. The stack lives across inputs, as a
//! real one lives across packets. Checked besides "no panic": every frame
//! is counted exactly once, as accepted or as dropped for a reason.
//!
//! Shared by the `pass` fuzz target and by
//! `dataplane/tests/host_fuzz_regressions.rs`, which replays every input
//! kept in `dataplane/fuzz/regressions/`.

use std::sync::{Mutex, OnceLock};

use sluice_dataplane::host::device::check_frame;
use sluice_dataplane::host::{http, HostConfig, HttpConfig, IoPort, Mac, PortRef, QueueIo, Stack};
use sluice_drivers::{FramePool, HeapPool};

const MAC: Mac = Mac([0x02, 0x53, 0x4c, 0, 0, 1]);

struct World {
    stack: Stack,
    io: QueueIo,
    pool: &'static HeapPool,
}

fn world() -> &'static Mutex<World> {
    static W: OnceLock<Mutex<World>> = OnceLock::new();
    W.get_or_init(|| {
        let io = QueueIo::new(64);
        let mut cfg = HostConfig::default()
            .with_address("10.0.0.1/24".parse().unwrap())
            .with_address("fd00::1/64".parse().unwrap())
            .with_gateway("10.0.0.254".parse().unwrap())
            .with_http(HttpConfig::default());
        cfg.macs.push((PortRef::Index(0), MAC));
        cfg.seed = Some(1);
        cfg.tx_frames = 256;
        let handler = http::metrics_status(|_| "m 1\n".to_string(), |_| "{}".to_string());
        let port = IoPort {
            name: "fuzz".into(),
            ifindex: 1,
            io: Box::new(io.clone()),
        };
        let stack = Stack::new(&cfg, vec![port], Some(Box::new(handler))).expect("stack");
        let pool = HeapPool::new("fuzz-in", 128, 2048 + 256).expect("pool");
        Mutex::new(World { stack, io, pool })
    })
}

/// Feeds one input (see the module docs) to the shared stack.
pub fn run(data: &[u8]) {
    let mut w = world().lock().unwrap_or_else(|e| e.into_inner());
    let seen = |w: &World| {
        let c = w.stack.stats().ports[0].counters;
        c.rx_frames + c.rx_dropped()
    };
    let before = seen(&w);
    let mut pushed = 0u64;
    let mut rest = data;
    while rest.len() >= 3 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 3);
        let flags = rest[2];
        let mut bytes = rest[3..3 + len].to_vec();
        rest = &rest[3 + len..];
        if flags & 1 != 0 {
            fixup(&mut bytes);
        }
        let _ = check_frame(&bytes, MAC);
        let Some(mut f) = w.pool.alloc() else { break };
        if !f.fill(&bytes) {
            continue;
        }
        if w.io.rx.push(f).is_err() {
            break;
        }
        pushed += 1;
        w.stack.poll();
        while w.io.tx.pop().is_some() {}
    }
    w.stack.poll();
    while w.io.tx.pop().is_some() {}
    assert_eq!(seen(&w) - before, pushed, "every frame counted once");
}

/// The Internet checksum of `parts` concatenated (each part even-sized but
/// the last).
fn csum(parts: &[&[u8]]) -> u16 {
    let mut s = 0u32;
    for p in parts {
        for c in p.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Addresses `f` to the stack and completes its checksums where its own
/// length fields allow.
fn fixup(f: &mut [u8]) {
    if f.len() < 14 {
        return;
    }
    f[..6].copy_from_slice(&MAC.0);
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    let ip = &mut f[14..];
    match ethertype {
        0x0800 if ip.len() >= 20 => {
            let ihl = usize::from(ip[0] & 0xf) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if ihl < 20 || ihl > ip.len() {
                return;
            }
            ip[10..12].fill(0);
            let c = csum(&[&ip[..ihl]]);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            if total < ihl || total > ip.len() {
                return;
            }
            let proto = ip[9];
            let (head, l4) = ip[..total].split_at_mut(ihl);
            let len = (l4.len() as u16).to_be_bytes();
            let pseudo = [&head[12..20], &[0, proto], &len[..]].concat();
            l4_fixup(proto, l4, Some(&pseudo));
        }
        0x86dd if ip.len() >= 40 => {
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if 40 + plen > ip.len() {
                return;
            }
            let next = ip[6];
            let (head, l4) = ip[..40 + plen].split_at_mut(40);
            let len = (l4.len() as u32).to_be_bytes();
            let pseudo = [&head[8..40], &len[..], &[0, 0, 0, next]].concat();
            l4_fixup(next, l4, Some(&pseudo));
        }
        _ => {}
    }
}

fn l4_fixup(proto: u8, l4: &mut [u8], pseudo: Option<&[u8]>) {
    let at = match proto {
        6 => 16,
        17 => 6,
        1 | 58 => 2,
        _ => return,
    };
    if l4.len() < at + 2 {
        return;
    }
    l4[at..at + 2].fill(0);
    let c = match (proto, pseudo) {
        (1, _) => csum(&[l4]),
        (_, Some(p)) => csum(&[p, l4]),
        _ => return,
    };
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
}
