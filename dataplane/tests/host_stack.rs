//! The host stack behind a running dataplane, without root: a ring port
//! whose far side is a test endpoint. Frames the test injects go through a
//! worker (and its program), PASS frames reach the host stack, and its
//! replies come back out through worker 0 to the endpoint.
//!
//! Checked: ARP requests answered with the stack's MAC; ICMP echo answered
//! with correct IPv4 and ICMP checksums; IPv6 neighbour solicitation and
//! echo answered; a program that drops UDP and passes ICMP (UDP never
//! reaches a bound socket, ping still answered; detach it and UDP flows);
//! malformed frames counted by reason and survived; a full PASS queue
//! counted as `pass_full` while forwarded traffic keeps flowing.

mod host_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use host_support::*;
use sluice_bpf::asm::assemble;
use sluice_bpf::helpers::Registry;
use sluice_bpf::Program;
use sluice_dataplane::host::{HostConfig, HostStack, SocketError};
use sluice_dataplane::{Dataplane, Hook, IdlePolicy};
use sluice_drivers::ring::{RingEndpoint, RingPort};
use sluice_drivers::Port;

const WAIT: Duration = Duration::from_secs(5);

fn setup(
    name: &str,
    program: Option<Arc<Program>>,
) -> (Dataplane, RingEndpoint, HostStack, [u8; 6]) {
    let (port, ep) = RingPort::with_endpoint(name, 1, 1024);
    let mut b = Dataplane::builder()
        .port(port)
        .host_stack(true)
        .idle(IdlePolicy::Adaptive);
    if let Some(p) = program {
        b = b.program(0, Hook::Ingress, p, "test");
    }
    let dp = b.start().expect("dataplane starts");
    let cfg = HostConfig::default()
        .with_address("10.0.0.1/24".parse().unwrap())
        .with_address("fd00::1/64".parse().unwrap());
    let host = HostStack::start(dp.host_ports(), cfg, None).expect("host stack starts");
    let mac = host.mac(0).expect("port 0 has an interface").0;
    (dp, ep, host, mac)
}

/// ARP so the host stack knows the peer (as a real peer would before ping).
fn resolve(ep: &RingEndpoint, mac: [u8; 6]) {
    inject(ep, &arp_request(HOST_IP));
    let reply = expect_frame(ep, WAIT, is_arp_reply).expect("ARP reply");
    assert_eq!(&reply[22..28], &mac);
}

#[test]
fn arp_request_is_answered_with_the_stacks_mac() {
    let (dp, ep, host, mac) = setup("host-arp", None);
    inject(&ep, &arp_request(HOST_IP));
    let r = expect_frame(&ep, WAIT, is_arp_reply).expect("an ARP reply");
    assert_eq!(&r[0..6], &PEER_MAC, "sent to the asker");
    assert_eq!(&r[6..12], &mac, "from the stack's MAC");
    assert_eq!(&r[22..28], &mac, "sender hardware address");
    assert_eq!(&r[28..32], &HOST_IP.octets(), "sender protocol address");
    assert_eq!(&r[32..38], &PEER_MAC, "target hardware address");
    assert_eq!(&r[38..42], &PEER_IP.octets(), "target protocol address");
    // A request for an address the stack does not own goes unanswered.
    inject(&ep, &arp_request("10.0.0.99".parse().unwrap()));
    assert!(expect_frame(&ep, Duration::from_millis(300), is_arp_reply).is_none());
    let s = host.stop();
    assert!(s.ports[0].counters.rx_frames >= 2);
    assert!(s.ports[0].addresses.contains(&"10.0.0.1/24".to_string()));
    let d = dp.stop();
    assert_eq!(d.ports[0].total.xdp_pass, 2);
    assert!(d.ports[0].total.host_tx >= 1);
}

#[test]
fn icmp_echo_is_answered_with_correct_checksums() {
    let (dp, ep, host, mac) = setup("host-ping", None);
    resolve(&ep, mac);
    for seq in 0..5u16 {
        let payload: Vec<u8> = (0..56).map(|i| (i as u8) ^ seq as u8).collect();
        inject(&ep, &echo_request(mac, 0x4242, seq, &payload));
        let r = expect_frame(&ep, WAIT, is_echo_reply).expect("an echo reply");
        let ip = &r[14..34];
        assert_eq!(csum(ip), 0, "IPv4 header checksum");
        assert_eq!(&ip[12..16], &HOST_IP.octets());
        assert_eq!(&ip[16..20], &PEER_IP.octets());
        let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        let icmp = &r[34..14 + total];
        assert_eq!(csum(icmp), 0, "ICMP checksum");
        assert_eq!(&icmp[4..6], &0x4242u16.to_be_bytes());
        assert_eq!(&icmp[6..8], &seq.to_be_bytes());
        assert_eq!(&icmp[8..], &payload[..], "payload echoed");
        assert_eq!(&r[0..6], &PEER_MAC);
    }
    drop(host);
    drop(dp);
}

/// IPv6: a neighbour solicitation for the stack's address is answered with
/// an advertisement carrying its MAC, and an ICMPv6 echo is answered.
#[test]
fn ndp_and_icmpv6_echo_are_answered() {
    let (dp, ep, host, mac) = setup("host-v6", None);
    let peer: [u8; 16] = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let me: [u8; 16] = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let ip6 = |dst: [u8; 16], next: u8, hop: u8, payload: &mut Vec<u8>, cs_at: usize| {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&peer);
        pseudo.extend_from_slice(&dst);
        pseudo.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, next]);
        pseudo.extend_from_slice(payload);
        let c = csum(&pseudo);
        payload[cs_at..cs_at + 2].copy_from_slice(&c.to_be_bytes());
        let mut v = vec![0x60, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        v.extend_from_slice(&[next, hop]);
        v.extend_from_slice(&peer);
        v.extend_from_slice(&dst);
        v.extend_from_slice(payload);
        v
    };
    // Solicited-node multicast of fd00::1: ff02::1:ff00:1.
    let mut snm = [0u8; 16];
    snm[0] = 0xff;
    snm[1] = 0x02;
    snm[11] = 1;
    snm[12] = 0xff;
    snm[13..].copy_from_slice(&me[13..]);
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&me);
    ns.extend_from_slice(&[1, 1]);
    ns.extend_from_slice(&PEER_MAC);
    let pkt = ip6(snm, 58, 255, &mut ns, 2);
    inject(
        &ep,
        &eth([0x33, 0x33, 0xff, 0, 0, 1], PEER_MAC, 0x86dd, &pkt),
    );
    let na = expect_frame(&ep, WAIT, |f| {
        f.len() > 54 && f[12..14] == [0x86, 0xdd] && f[54] == 136
    })
    .expect("a neighbour advertisement");
    assert_eq!(&na[54 + 8..54 + 24], &me, "target address");
    assert_eq!(&na[6..12], &mac);

    let mut echo = vec![128, 0, 0, 0, 0, 7, 0, 1, b'p', b'i', b'n', b'g'];
    let pkt = ip6(me, 58, 64, &mut echo, 2);
    inject(&ep, &eth(mac, PEER_MAC, 0x86dd, &pkt));
    let r = expect_frame(&ep, WAIT, |f| {
        f.len() > 54 && f[12..14] == [0x86, 0xdd] && f[54] == 129
    })
    .expect("an ICMPv6 echo reply");
    assert_eq!(&r[54 + 8..], b"ping");
    drop(host);
    drop(dp);
}

/// Drops IPv4 UDP, passes everything else.
fn drop_udp() -> Arc<Program> {
    let src = "ldxw %r2, [%r1+0]\n\
               ldxw %r3, [%r1+4]\n\
               mov %r4, %r2\n\
               add %r4, 34\n\
               jgt %r4, %r3, pass\n\
               ldxh %r5, [%r2+12]\n\
               jne %r5, 0x0008, pass\n\
               ldxb %r5, [%r2+23]\n\
               jne %r5, 17, pass\n\
               mov %r0, 1\n\
               exit\n\
               pass:\n\
               mov %r0, 2\n\
               exit";
    Arc::new(Program::load(assemble(src).unwrap(), &Registry::xdp()).unwrap())
}

#[test]
fn a_program_that_drops_udp_and_passes_icmp() {
    let (dp, ep, host, mac) = setup("host-prog", Some(drop_udp()));
    let sock = host.udp_bind("10.0.0.1:7000".parse().unwrap()).unwrap();
    resolve(&ep, mac);
    for i in 0..10u8 {
        inject(&ep, &udp(mac, 7000, &[i; 32]));
    }
    inject(&ep, &echo_request(mac, 1, 1, b"still there?"));
    assert!(
        expect_frame(&ep, WAIT, is_echo_reply).is_some(),
        "ping answered"
    );
    let mut buf = [0u8; 64];
    assert_eq!(sock.recv_from(&mut buf), Err(SocketError::WouldBlock));
    let s = dp.stats().ports[0].total;
    assert_eq!(s.xdp_drop, 10, "every UDP datagram dropped by the program");
    assert_eq!(s.xdp_pass, 2, "ARP and ICMP passed");

    // Without the program the same datagrams reach the socket.
    let v = dp.version(0, Hook::Ingress);
    dp.replace(0, Hook::Ingress, v, None, "none").unwrap();
    assert!(dp.wait_quiescent(WAIT));
    inject(&ep, &udp(mac, 7000, b"through"));
    let mut got = None;
    wait_until(WAIT, || match sock.recv_from(&mut buf) {
        Ok((n, from)) => {
            got = Some((buf[..n].to_vec(), from));
            true
        }
        Err(_) => false,
    });
    let (data, from) = got.expect("datagram reaches the socket");
    assert_eq!(data, b"through");
    assert_eq!(from, "10.0.0.2:40000".parse().unwrap());
    // And the socket answers through the host stack.
    sock.send_to(b"pong", from).unwrap();
    let r = expect_frame(&ep, WAIT, |f| f.len() > 42 && f[23] == 17).expect("UDP reply");
    assert_eq!(&r[42..], b"pong");
    let udp_hdr = &r[34..42];
    assert_eq!(&udp_hdr[2..4], &40000u16.to_be_bytes());
    drop(sock);
    drop(host);
    drop(dp);
}

#[test]
fn malformed_frames_are_dropped_counted_and_survived() {
    let (dp, ep, host, mac) = setup("host-bad", None);
    resolve(&ep, mac);
    let good = echo_request(mac, 9, 9, b"0123456789abcdef");
    let mut bad: Vec<(Vec<u8>, &str)> = Vec::new();
    // Truncated at every length inside the headers.
    for n in [0, 1, 13, 14, 20, 33, 34, 37] {
        bad.push((good[..n].to_vec(), "malformed"));
    }
    // IPv4 total length longer than the frame; header length below 20;
    // version 5 in an IPv4 frame.
    let mut long = good.clone();
    long[16..18].copy_from_slice(&1400u16.to_be_bytes());
    bad.push((long, "malformed"));
    let mut ihl = good.clone();
    ihl[14] = 0x44;
    bad.push((ihl, "malformed"));
    let mut ver = good.clone();
    ver[14] = 0x55;
    bad.push((ver, "malformed"));
    // UDP length field larger than the datagram.
    let mut ulen = udp(mac, 9, b"abcd");
    ulen[38..40].copy_from_slice(&500u16.to_be_bytes());
    bad.push((ulen, "malformed"));
    // Bad checksums: IPv4 header, ICMP, UDP.
    let mut ipc = good.clone();
    ipc[24] ^= 0xff;
    bad.push((ipc, "bad_checksum"));
    let mut icmpc = good.clone();
    icmpc[36] ^= 0xff;
    bad.push((icmpc, "bad_checksum"));
    let mut udpc = udp(mac, 9, b"abcd");
    udpc[40] ^= 0xff;
    bad.push((udpc, "bad_checksum"));
    // A VLAN tag and an unknown EtherType.
    bad.push((eth(mac, PEER_MAC, 0x8100, &[0; 50]), "unsupported"));
    bad.push((eth(mac, PEER_MAC, 0x88cc, &[0; 50]), "unsupported"));
    // Unicast for someone else.
    bad.push((echo_request([2, 9, 9, 9, 9, 9], 9, 9, b"x"), "other_host"));
    // Garbage of every size up to a full frame.
    let mut seed = 0x1234_5678u32;
    for n in (15..1514).step_by(97) {
        let mut g: Vec<u8> = (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        g[..6].copy_from_slice(&mac);
        g[12..14].copy_from_slice(&[8, 0]);
        g[14] = 0x45;
        bad.push((g, "malformed_or_checksum"));
    }
    let before = host.stats().ports[0].counters;
    for (b, _) in &bad {
        inject(&ep, b);
    }
    inject(&ep, &good);
    let r = expect_frame(&ep, WAIT, is_echo_reply).expect("the stack still answers");
    assert_eq!(&r[42..], b"0123456789abcdef");
    let after = host.stats().ports[0].counters;
    let count = |what: &str| bad.iter().filter(|(_, w)| *w == what).count() as u64;
    assert!(after.rx_malformed - before.rx_malformed >= count("malformed"));
    assert_eq!(
        after.rx_unsupported - before.rx_unsupported,
        count("unsupported")
    );
    assert_eq!(
        after.rx_other_host - before.rx_other_host,
        count("other_host")
    );
    assert!(after.rx_bad_checksum - before.rx_bad_checksum >= count("bad_checksum"));
    assert_eq!(
        after.rx_dropped() - before.rx_dropped(),
        bad.len() as u64,
        "every bad frame dropped before smoltcp, each counted once"
    );
    drop(host);
    drop(dp);
}

/// Redirects frames whose byte 14 is 0xf0 to `ifindex`, passes the rest.
fn fwd_or_pass(ifindex: u32) -> Arc<Program> {
    let src = format!(
        "ldxw %r2, [%r1+0]\n\
         ldxw %r3, [%r1+4]\n\
         mov %r4, %r2\n\
         add %r4, 15\n\
         jgt %r4, %r3, pass\n\
         ldxb %r5, [%r2+14]\n\
         jne %r5, 0xf0, pass\n\
         mov %r1, {ifindex}\n\
         mov %r2, 0\n\
         call 23\n\
         exit\n\
         pass:\n\
         mov %r0, 2\n\
         exit"
    );
    Arc::new(Program::load(assemble(&src).unwrap(), &Registry::xdp()).unwrap())
}

/// Sends `forward` frames to be redirected A → B and, when `pass_every` is
/// set, a frame for the host queue after every `pass_every - 1` of them;
/// returns the forwarding rate (packets/s), the host frames sent, and the
/// dataplane's counters for A.
fn flood(name: &str, forward: u64, pass_every: u64) -> (f64, u64, sluice_dataplane::PortSnapshot) {
    let (a, ea) = RingPort::with_endpoint(&format!("{name}-a"), 1, 4096);
    let (b, eb) = RingPort::with_endpoint(&format!("{name}-b"), 1, 4096);
    let dp = Dataplane::builder()
        .port(a)
        .port(b.clone())
        .host_stack(true)
        .pass_queue(64)
        .idle(IdlePolicy::Spin)
        .program(0, Hook::Ingress, fwd_or_pass(b.info().ifindex), "fwd")
        .start()
        .unwrap();
    // No host stack drains the PASS queue: it fills and stays full.
    let mut fwd = vec![0u8; 64];
    fwd[14] = 0xf0;
    let pass = vec![0u8; 64];
    let (mut sent, mut passed, mut got, mut i) = (0u64, 0u64, 0u64, 0u64);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    while got < forward && Instant::now() < deadline {
        // Keep a window so the rings never overflow.
        while sent < forward && sent - got < 2048 {
            let for_host = pass_every > 0 && (i + 1) % pass_every == 0;
            let Some(f) = ea.frame(if for_host { &pass } else { &fwd }) else {
                break;
            };
            if ea.send(0, f).is_err() {
                break;
            }
            i += 1;
            if for_host {
                passed += 1;
            } else {
                sent += 1;
            }
        }
        while let Some(f) = eb.recv(0) {
            assert_eq!(f.data()[14], 0xf0);
            got += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(got, forward, "every forwarded frame arrives");
    let s = dp.stop();
    (got as f64 / secs, passed, s.ports[0].total)
}

#[test]
fn a_full_pass_queue_is_counted_and_forwarding_goes_on() {
    const N: u64 = 100_000;
    let (base, _, _) = flood("passfull-base", N, 0);
    let (rate, passed, s) = flood("passfull", N, 2);
    // Every other frame was for the host; 64 fit in the queue.
    assert!(passed >= N - 1);
    assert_eq!(s.xdp_pass, passed);
    assert_eq!(s.pass_full, passed - 64, "overflow counted as pass_full");
    assert_eq!(s.xdp_redirect, N);
    assert_eq!(s.pass_no_stack, 0);
    eprintln!(
        "forwarding: {:.0} pps alone, {:.0} pps with a full PASS queue taking every other frame ({:.2}x)",
        base,
        rate,
        rate / base
    );
    // Twice the frames go through the worker in the second run; a full
    // queue must not cost more than that (a blocked worker would show as
    // a collapse, not a halving).
    assert!(
        rate > base / 4.0,
        "forwarding collapsed: {rate:.0} vs {base:.0} pps"
    );
}
