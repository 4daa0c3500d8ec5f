//! Helpers shared by the host-stack tests: hand-made frames (with their own
//! checksum code, so smoltcp is not checked against itself), a `FrameIo`
//! over a ring endpoint, and waiting.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_dataplane::host::FrameIo;
use sluice_drivers::ring::RingEndpoint;
use sluice_drivers::Frame;

/// The peer's MAC on the endpoint side.
pub const PEER_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x02];
/// The peer's address.
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The host stack's address in the tests.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// A ring endpoint as a host stack's queues (queue 0 both ways).
pub struct EndpointIo(pub Arc<RingEndpoint>);

impl FrameIo for EndpointIo {
    fn recv(&mut self) -> Option<Frame> {
        self.0.recv(0)
    }

    fn send(&mut self, frame: Frame) -> Result<(), Frame> {
        self.0.send(0, frame)
    }
}

/// The Internet checksum (RFC 1071) of `b`, as stored.
pub fn csum(b: &[u8]) -> u16 {
    let mut s = 0u32;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An Ethernet header and payload.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + payload.len());
    v.extend_from_slice(&dst);
    v.extend_from_slice(&src);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// An ARP request from the peer for `target`.
pub fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&PEER_MAC);
    a.extend_from_slice(&PEER_IP.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    eth([0xff; 6], PEER_MAC, 0x0806, &a)
}

/// An IPv4 packet (checksummed) from the peer to `dst`.
pub fn ipv4(dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&PEER_IP.octets());
    ip.extend_from_slice(&dst.octets());
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(payload);
    ip
}

/// An ICMP echo request from the peer, in an Ethernet frame to `dst_mac`.
pub fn echo_request(dst_mac: [u8; 6], ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&ident.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(data);
    let c = csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    eth(dst_mac, PEER_MAC, 0x0800, &ipv4(HOST_IP, 1, &icmp))
}

/// A UDP datagram from the peer (port 40000) to the host's `port`.
pub fn udp(dst_mac: [u8; 6], port: u16, data: &[u8]) -> Vec<u8> {
    let len = (8 + data.len()) as u16;
    let mut u = Vec::new();
    u.extend_from_slice(&40000u16.to_be_bytes());
    u.extend_from_slice(&port.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&PEER_IP.octets());
    pseudo.extend_from_slice(&HOST_IP.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&len.to_be_bytes());
    pseudo.extend_from_slice(&u);
    let c = match csum(&pseudo) {
        0 => 0xffff,
        c => c,
    };
    u[6..8].copy_from_slice(&c.to_be_bytes());
    eth(dst_mac, PEER_MAC, 0x0800, &ipv4(HOST_IP, 17, &u))
}

/// Sends `bytes` into the port through the endpoint.
pub fn inject(ep: &RingEndpoint, bytes: &[u8]) {
    let f = ep.frame(bytes).expect("endpoint pool has a frame");
    ep.send(0, f).expect("ring has room");
}

/// The next frame the port sent that `pick` accepts (others are
/// discarded), within `timeout`.
pub fn expect_frame(
    ep: &RingEndpoint,
    timeout: Duration,
    mut pick: impl FnMut(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match ep.recv(0) {
            Some(f) => {
                if pick(f.data()) {
                    return Some(f.data().to_vec());
                }
            }
            None => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    None
}

/// Waits until `cond` holds, up to `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// Whether `f` is an ARP reply.
pub fn is_arp_reply(f: &[u8]) -> bool {
    f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 2]
}

/// Whether `f` is an ICMP echo reply.
pub fn is_echo_reply(f: &[u8]) -> bool {
    f.len() >= 42 && f[12..14] == [8, 0] && f[23] == 1 && f[34] == 0
}
