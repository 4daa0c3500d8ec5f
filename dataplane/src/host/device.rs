//! The host stack's network device: a smoltcp [`Device`] over one port's
//! PASS queue (receive) and host TX queue (transmit).
//!
//! Receiving pops frames a program passed; each is checked before smoltcp
//! sees it ([`check_frame`]): truncated frames, length fields that lie, bad
//! IPv4 header / TCP / UDP / ICMP / ICMPv6 checksums, EtherTypes the stack
//! does not speak and unicast for another MAC are dropped and counted by
//! reason. smoltcp would drop most of them too, silently; checking first is
//! what lets `/metrics` say why traffic to the appliance vanished. The
//! received frame is read in place (no copy) and goes back to its pool (the
//! driver's) as soon as smoltcp is done with it.
//!
//! Transmitting takes a frame from the host stack's own [`HeapPool`] (never
//! from a driver's pool, which belongs to the workers) and queues it on the
//! port's host TX queue, which a worker drains in its loop. When that queue
//! is full the frame waits in a small backlog here and the device tells
//! smoltcp it cannot transmit, so TCP backs off instead of losing segments;
//! only when the backlog too is full is a frame dropped (`tx_queue_full`).
//!
//! The device reaches the port through [`FrameIo`], so the same code serves
//! the dataplane ([`PortIo`]), in-memory queues for tests and fuzzing
//! ([`QueueIo`]), or anything else that moves [`Frame`]s.

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use sluice_drivers::{Frame, FramePool, HeapPool, HEADROOM};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Packet,
    Icmpv6Packet, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};

use super::config::Mac;
use super::stats::HostPortCounters as C;
use crate::HostPorts;

/// Moves frames between the host stack and a port.
pub trait FrameIo: Send {
    /// The next received frame, if any. Never blocks.
    fn recv(&mut self) -> Option<Frame>;
    /// Queues a frame to send; gives it back when there is no room. Never
    /// blocks.
    fn send(&mut self, frame: Frame) -> Result<(), Frame>;
}

/// A dataplane port's PASS and host TX queues.
#[derive(Debug, Clone)]
pub struct PortIo {
    ports: HostPorts,
    port: usize,
}

impl PortIo {
    /// The queues of port `port`.
    pub fn new(ports: HostPorts, port: usize) -> PortIo {
        PortIo { ports, port }
    }
}

impl FrameIo for PortIo {
    fn recv(&mut self) -> Option<Frame> {
        self.ports.recv(self.port)
    }

    fn send(&mut self, frame: Frame) -> Result<(), Frame> {
        self.ports.send(self.port, frame)
    }
}

/// Two bounded in-memory queues: `rx` feeds the stack, `tx` takes what it
/// sends. Clones share the queues, so a test or fuzzer keeps one clone to
/// inject and collect frames.
#[derive(Debug, Clone)]
pub struct QueueIo {
    /// Frames for the stack.
    pub rx: Arc<ArrayQueue<Frame>>,
    /// Frames from the stack.
    pub tx: Arc<ArrayQueue<Frame>>,
}

impl QueueIo {
    /// Queues of `capacity` frames each.
    ///
    /// # Panics
    /// If `capacity` is 0.
    pub fn new(capacity: usize) -> QueueIo {
        QueueIo {
            rx: Arc::new(ArrayQueue::new(capacity)),
            tx: Arc::new(ArrayQueue::new(capacity)),
        }
    }
}

impl FrameIo for QueueIo {
    fn recv(&mut self) -> Option<Frame> {
        self.rx.pop()
    }

    fn send(&mut self, frame: Frame) -> Result<(), Frame> {
        self.tx.push(frame)
    }
}

/// Why a received frame is dropped before smoltcp sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxDrop {
    /// Truncated, a length field that lies, a bad header.
    Malformed,
    /// A checksum is wrong.
    BadChecksum,
    /// An EtherType the stack does not speak.
    Unsupported,
    /// Unicast to another MAC address.
    OtherHost,
}

/// Checks a received Ethernet frame as far as the stack will read it: the
/// Ethernet header; ARP; the IPv4 header and its checksum or the IPv6
/// header; the TCP, UDP, ICMP or ICMPv6 header, length and checksum.
/// Fragments are checked only up to the IP header (their transport
/// checksum covers the whole datagram). IPv6 extension headers are left to
/// smoltcp. `mac` is the interface's address: unicast to any other is
/// [`RxDrop::OtherHost`].
///
/// # Errors
/// The reason the frame must be dropped.
pub fn check_frame(bytes: &[u8], mac: Mac) -> Result<(), RxDrop> {
    use RxDrop::*;
    let mac = EthernetAddress(mac.0);
    let eth = EthernetFrame::new_checked(bytes).map_err(|_| Malformed)?;
    let dst = eth.dst_addr();
    if !dst.is_broadcast() && !dst.is_multicast() && dst != mac {
        return Err(OtherHost);
    }
    match eth.ethertype() {
        EthernetProtocol::Arp => {
            let arp = ArpPacket::new_checked(eth.payload()).map_err(|_| Malformed)?;
            ArpRepr::parse(&arp).map_err(|_| Malformed)?;
            Ok(())
        }
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).map_err(|_| Malformed)?;
            if ip.version() != 4 {
                return Err(Malformed);
            }
            if !ip.verify_checksum() {
                return Err(BadChecksum);
            }
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Ok(());
            }
            let (src, dst) = (
                IpAddress::Ipv4(ip.src_addr()),
                IpAddress::Ipv4(ip.dst_addr()),
            );
            check_transport(ip.next_header(), ip.payload(), &src, &dst)
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).map_err(|_| Malformed)?;
            if ip.version() != 6 {
                return Err(Malformed);
            }
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            if ip.next_header() == IpProtocol::Icmpv6 {
                let icmp = Icmpv6Packet::new_checked(ip.payload()).map_err(|_| Malformed)?;
                if !icmp.verify_checksum(&src, &dst) {
                    return Err(BadChecksum);
                }
                return Ok(());
            }
            check_transport(
                ip.next_header(),
                ip.payload(),
                &IpAddress::Ipv6(src),
                &IpAddress::Ipv6(dst),
            )
        }
        _ => Err(Unsupported),
    }
}

fn check_transport(
    proto: IpProtocol,
    payload: &[u8],
    src: &IpAddress,
    dst: &IpAddress,
) -> Result<(), RxDrop> {
    use RxDrop::*;
    match proto {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(payload).map_err(|_| Malformed)?;
            if !tcp.verify_checksum(src, dst) {
                return Err(BadChecksum);
            }
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(payload).map_err(|_| Malformed)?;
            // IPv4 UDP may carry no checksum (0); IPv6 UDP must.
            let optional = matches!(src, IpAddress::Ipv4(_)) && udp.checksum() == 0;
            if !optional && !udp.verify_checksum(src, dst) {
                return Err(BadChecksum);
            }
        }
        IpProtocol::Icmp if matches!(src, IpAddress::Ipv4(_)) => {
            let icmp = Icmpv4Packet::new_checked(payload).map_err(|_| Malformed)?;
            if !icmp.verify_checksum() {
                return Err(BadChecksum);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Frames a device keeps when the host TX queue is full, before it drops.
const BACKLOG: usize = 64;

/// A smoltcp device over one port (see the module docs).
pub struct HostDevice {
    io: Box<dyn FrameIo>,
    pool: &'static HeapPool,
    mac: EthernetAddress,
    mtu: usize,
    counters: Arc<C>,
    backlog: VecDeque<Frame>,
    budget: usize,
    left: usize,
    activity: u64,
}

impl std::fmt::Debug for HostDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostDevice")
            .field("mac", &self.mac)
            .field("mtu", &self.mtu)
            .field("backlog", &self.backlog.len())
            .finish()
    }
}

impl HostDevice {
    /// A device over `io` sending from `pool`, with IP MTU `mtu`, handing
    /// smoltcp at most `budget` frames per [`HostDevice::refill`].
    pub fn new(
        io: Box<dyn FrameIo>,
        pool: &'static HeapPool,
        mac: EthernetAddress,
        mtu: usize,
        budget: usize,
        counters: Arc<C>,
    ) -> HostDevice {
        HostDevice {
            io,
            pool,
            mac,
            mtu,
            counters,
            backlog: VecDeque::new(),
            budget,
            left: budget,
            activity: 0,
        }
    }

    /// Starts a new poll: smoltcp may take `budget` more frames.
    pub fn refill(&mut self) {
        self.left = self.budget;
    }

    /// Whether the last poll stopped at the budget (more may be waiting).
    pub fn exhausted(&self) -> bool {
        self.left == 0
    }

    /// Frames taken or transmission tokens handed out so far: a caller
    /// compares two readings to learn whether a poll did anything.
    pub fn activity(&self) -> u64 {
        self.activity
    }

    /// Frames waiting for room in the host TX queue.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }

    /// Moves backlogged frames to the host TX queue; true when none is left.
    pub fn flush(&mut self) -> bool {
        while let Some(f) = self.backlog.pop_front() {
            if let Err(f) = self.io.send(f) {
                self.backlog.push_front(f);
                return false;
            }
        }
        true
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> EthernetAddress {
        self.mac
    }

    /// Drains the port without a stack behind it: every frame is dropped
    /// and counted as `rx_no_interface`. Returns how many.
    pub fn drain_unowned(io: &mut dyn FrameIo, counters: &C, budget: usize) -> usize {
        let mut n = 0;
        while n < budget {
            let Some(f) = io.recv() else { break };
            drop(f);
            C::add(&counters.rx_no_interface, 1);
            n += 1;
        }
        n
    }

    fn count_drop(&self, why: RxDrop) {
        let c = match why {
            RxDrop::Malformed => &self.counters.rx_malformed,
            RxDrop::BadChecksum => &self.counters.rx_bad_checksum,
            RxDrop::Unsupported => &self.counters.rx_unsupported,
            RxDrop::OtherHost => &self.counters.rx_other_host,
        };
        C::add(c, 1);
    }

    fn tx_token(&mut self) -> HostTxToken<'_> {
        let frame = self.pool.alloc();
        if frame.is_none() {
            C::add(&self.counters.tx_no_buffer, 1);
        }
        HostTxToken {
            frame,
            io: &mut *self.io,
            backlog: &mut self.backlog,
            counters: &self.counters,
        }
    }
}

impl Device for HostDevice {
    type RxToken<'a>
        = HostRxToken
    where
        Self: 'a;
    type TxToken<'a>
        = HostTxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(HostRxToken, HostTxToken<'_>)> {
        loop {
            if self.left == 0 {
                return None;
            }
            let frame = self.io.recv()?;
            self.left -= 1;
            self.activity += 1;
            match check_frame(frame.data(), Mac(self.mac.0)) {
                Ok(()) => {
                    C::add(&self.counters.rx_frames, 1);
                    C::add(&self.counters.rx_bytes, frame.len() as u64);
                    return Some((HostRxToken { frame }, self.tx_token()));
                }
                Err(why) => self.count_drop(why),
            }
        }
    }

    fn transmit(&mut self, _now: Instant) -> Option<HostTxToken<'_>> {
        if !self.flush() {
            C::add(&self.counters.tx_deferred, 1);
            return None;
        }
        if self.pool.available() == 0 {
            C::add(&self.counters.tx_no_buffer, 1);
            return None;
        }
        self.activity += 1;
        Some(self.tx_token())
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + EthernetFrame::<&[u8]>::header_len();
        caps.max_burst_size = None;
        caps
    }
}

/// A received frame, read in place.
pub struct HostRxToken {
    frame: Frame,
}

impl phy::RxToken for HostRxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.frame.data())
    }
}

/// Room for one frame to send (or none, when the pool was empty: the frame
/// is then built in a scratch buffer and counted as dropped).
pub struct HostTxToken<'a> {
    frame: Option<Frame>,
    io: &'a mut dyn FrameIo,
    backlog: &'a mut VecDeque<Frame>,
    counters: &'a C,
}

impl phy::TxToken for HostTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let Some(mut frame) = self.frame else {
            // Counted as no_buffer when the token was made.
            return f(&mut vec![0u8; len]);
        };
        if HEADROOM + len > frame.capacity() {
            C::add(&self.counters.tx_oversize, 1);
            return f(&mut vec![0u8; len]);
        }
        frame.set_bounds(HEADROOM, len);
        let r = f(frame.data_mut());
        let c = self.counters;
        let bytes = len as u64;
        let queued = if self.backlog.is_empty() {
            self.io.send(frame)
        } else {
            Err(frame)
        };
        match queued {
            Ok(()) => {
                C::add(&c.tx_frames, 1);
                C::add(&c.tx_bytes, bytes);
            }
            Err(frame) if self.backlog.len() < BACKLOG => {
                // Counted as sent: it will be, in order, once there is room.
                self.backlog.push_back(frame);
                C::add(&c.tx_frames, 1);
                C::add(&c.tx_bytes, bytes);
            }
            Err(_) => C::add(&c.tx_queue_full, 1),
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([2, 0, 0, 0, 0, 1]);

    fn eth(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&dst);
        v.extend_from_slice(&[2, 0, 0, 0, 0, 2]);
        v.extend_from_slice(&ethertype.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn csum(b: &[u8]) -> u16 {
        let mut s = 0u32;
        for c in b.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    fn ipv4_icmp_echo() -> Vec<u8> {
        let mut icmp = vec![8, 0, 0, 0, 0, 1, 0, 1, b'h', b'i'];
        let c = csum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let total = (20 + icmp.len()) as u16;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let c = csum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        ip.extend_from_slice(&icmp);
        eth(MAC.0, 0x0800, &ip)
    }

    #[test]
    fn a_good_echo_passes_and_each_fault_has_its_reason() {
        let good = ipv4_icmp_echo();
        assert_eq!(check_frame(&good, MAC), Ok(()));
        assert_eq!(check_frame(&good[..10], MAC), Err(RxDrop::Malformed));
        assert_eq!(check_frame(&good[..30], MAC), Err(RxDrop::Malformed));
        let mut other = good.clone();
        other[5] = 9;
        assert_eq!(check_frame(&other, MAC), Err(RxDrop::OtherHost));
        let mut bad_ip = good.clone();
        bad_ip[14 + 10] ^= 1;
        assert_eq!(check_frame(&bad_ip, MAC), Err(RxDrop::BadChecksum));
        let mut bad_icmp = good.clone();
        bad_icmp[14 + 20 + 8] ^= 1;
        assert_eq!(check_frame(&bad_icmp, MAC), Err(RxDrop::BadChecksum));
        // Total length longer than the frame.
        let mut long = good.clone();
        long[14 + 3] = 200;
        assert_eq!(check_frame(&long, MAC), Err(RxDrop::Malformed));
        let vlan = eth(MAC.0, 0x8100, &[0; 46]);
        assert_eq!(check_frame(&vlan, MAC), Err(RxDrop::Unsupported));
        let short_arp = eth([0xff; 6], 0x0806, &[0, 1, 8, 0, 6, 4]);
        assert_eq!(check_frame(&short_arp, MAC), Err(RxDrop::Malformed));
    }
}
