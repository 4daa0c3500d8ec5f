//! The packets the differential tests feed to XDP programs, built in Rust
//! with correct checksums unless a case says otherwise.
//!
//! The set covers what a parser must survive: frames cut short at every
//! layer, each encapsulation the test programs know (802.1Q, 802.1ad + 802.1Q,
//! IP-in-IP), IPv4 with and without options, IPv6 with and without an
//! extension header, TCP, UDP, ICMP and ICMPv6, odd and maximal lengths,
//! and seeded random garbage. Some packets exist for one program's
//! configuration (the source addresses of the LPM firewall's rules, the
//! DNS port `rodata_cfg` blocks), which their names say.
//!
//! Every packet has a fixed content: the set is the same on every run and
//! every machine, so a difference found once can be reproduced.

// Each test crate that includes `common` uses a different part of it.
#![allow(dead_code)]

/// One test packet: a name for reports and the frame's bytes (from the
/// Ethernet destination address on, without a frame check sequence).
#[derive(Clone, Debug)]
pub struct TestPacket {
    /// Short identifier used in reports, e.g. `ipv4_udp_dns`.
    pub name: &'static str,
    /// The frame.
    pub bytes: Vec<u8>,
}

/// Destination MAC of unicast test frames.
pub const MAC_DST: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x02];
/// Source MAC of test frames.
pub const MAC_SRC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];
/// The broadcast MAC.
pub const MAC_BROADCAST: [u8; 6] = [0xff; 6];

/// `ETH_P_IP`
pub const ETH_P_IP: u16 = 0x0800;
/// `ETH_P_ARP`
pub const ETH_P_ARP: u16 = 0x0806;
/// `ETH_P_8021Q`
pub const ETH_P_8021Q: u16 = 0x8100;
/// `ETH_P_8021AD`
pub const ETH_P_8021AD: u16 = 0x88a8;
/// `ETH_P_IPV6`
pub const ETH_P_IPV6: u16 = 0x86dd;

/// `IPPROTO_HOPOPTS`
pub const IPPROTO_HOPOPTS: u8 = 0;
/// `IPPROTO_ICMP`
pub const IPPROTO_ICMP: u8 = 1;
/// `IPPROTO_IPIP`
pub const IPPROTO_IPIP: u8 = 4;
/// `IPPROTO_TCP`
pub const IPPROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`
pub const IPPROTO_UDP: u8 = 17;
/// `IPPROTO_GRE`
pub const IPPROTO_GRE: u8 = 47;
/// `IPPROTO_ICMPV6`
pub const IPPROTO_ICMPV6: u8 = 58;

/// The usual IPv4 source and destination of test packets.
pub const V4_SRC: [u8; 4] = [192, 0, 2, 10];
/// See [`V4_SRC`].
pub const V4_DST: [u8; 4] = [198, 51, 100, 20];
/// The usual IPv6 source (2001:db8::1) of test packets.
pub const V6_SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// The usual IPv6 destination (2001:db8::2) of test packets.
pub const V6_DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// The Internet checksum (RFC 1071) of `chunks` taken as one byte string.
pub fn inet_checksum(chunks: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = chunks.concat();
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet header.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(14);
    v.extend_from_slice(&dst);
    v.extend_from_slice(&src);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v
}

/// An IPv4 header (with `options`, padded by the caller to 4 bytes) for a
/// payload of `payload_len` bytes, with a correct checksum.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Protocol number.
    pub proto: u8,
    /// Time to live.
    pub ttl: u8,
    /// Flags and fragment offset, host order (0x4000 is DF).
    pub frag: u16,
    /// Options, a multiple of 4 bytes long, at most 40.
    pub options: Vec<u8>,
}

impl Ipv4 {
    /// A plain header from [`V4_SRC`] to [`V4_DST`] with DF set.
    pub fn new(proto: u8) -> Ipv4 {
        Ipv4 {
            src: V4_SRC,
            dst: V4_DST,
            proto,
            ttl: 64,
            frag: 0x4000,
            options: Vec::new(),
        }
    }

    /// The header's bytes for a payload of `payload_len` bytes.
    pub fn header(&self, payload_len: usize) -> Vec<u8> {
        assert!(self.options.len().is_multiple_of(4) && self.options.len() <= 40);
        let hlen = 20 + self.options.len();
        let tot_len = (hlen + payload_len) as u16;
        let mut h = vec![0x40 | (hlen / 4) as u8, 0];
        h.extend_from_slice(&tot_len.to_be_bytes());
        h.extend_from_slice(&0x1234u16.to_be_bytes()); // id
        h.extend_from_slice(&self.frag.to_be_bytes());
        h.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
        h.extend_from_slice(&self.src);
        h.extend_from_slice(&self.dst);
        h.extend_from_slice(&self.options);
        let c = inet_checksum(&[&h]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    /// The pseudo-header that TCP/UDP/ICMP checksums cover (ICMP: none).
    fn pseudo(&self, l4_len: usize) -> Vec<u8> {
        let mut p = Vec::with_capacity(12);
        p.extend_from_slice(&self.src);
        p.extend_from_slice(&self.dst);
        p.extend_from_slice(&[0, self.proto]);
        p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        p
    }
}

/// An IPv6 fixed header.
pub fn ipv6(next: u8, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0x60, 0x00, 0x00, 0x00];
    h.extend_from_slice(&(payload_len as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&V6_SRC);
    h.extend_from_slice(&V6_DST);
    h
}

/// The IPv6 pseudo-header for an upper-layer length and protocol.
fn pseudo6(next: u8, l4_len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&V6_SRC);
    p.extend_from_slice(&V6_DST);
    p.extend_from_slice(&(l4_len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, next]);
    p
}

/// An upper-layer segment, before its checksum is known.
#[derive(Clone, Debug)]
pub enum L4 {
    /// UDP from `sport` to `dport`.
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
    },
    /// TCP from `sport` to `dport` with `flags` and data offset `doff`.
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        doff: u8,
        payload: Vec<u8>,
    },
    /// An ICMP echo request (ICMPv6 when carried by IPv6).
    Echo { id: u16, seq: u16, payload: Vec<u8> },
    /// Opaque bytes (another protocol, an inner packet).
    Raw(Vec<u8>),
}

impl L4 {
    /// UDP with `len` payload bytes 0, 1, 2, ...
    pub fn udp(sport: u16, dport: u16, len: usize) -> L4 {
        L4::Udp {
            sport,
            dport,
            payload: counting(len),
        }
    }

    /// A TCP segment with a 20-byte header and `len` payload bytes.
    pub fn tcp(sport: u16, dport: u16, flags: u8, len: usize) -> L4 {
        L4::Tcp {
            sport,
            dport,
            flags,
            doff: 5,
            payload: counting(len),
        }
    }

    /// The segment's bytes with its checksum over `pseudo` (empty for ICMP
    /// over IPv4, which has none) and the ICMP type for `v6`.
    fn emit(&self, pseudo: &[u8], v6: bool) -> Vec<u8> {
        let (mut seg, csum_at) = match self {
            L4::Udp {
                sport,
                dport,
                payload,
            } => {
                let mut s = Vec::new();
                s.extend_from_slice(&sport.to_be_bytes());
                s.extend_from_slice(&dport.to_be_bytes());
                s.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                s.extend_from_slice(&[0, 0]);
                s.extend_from_slice(payload);
                (s, 6)
            }
            L4::Tcp {
                sport,
                dport,
                flags,
                doff,
                payload,
            } => {
                let mut s = Vec::new();
                s.extend_from_slice(&sport.to_be_bytes());
                s.extend_from_slice(&dport.to_be_bytes());
                s.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
                s.extend_from_slice(&0u32.to_be_bytes()); // ack
                s.extend_from_slice(&[doff << 4, *flags]);
                s.extend_from_slice(&0xffffu16.to_be_bytes()); // window
                s.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
                s.extend_from_slice(payload);
                (s, 16)
            }
            L4::Echo { id, seq, payload } => {
                let mut s = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
                s.extend_from_slice(&id.to_be_bytes());
                s.extend_from_slice(&seq.to_be_bytes());
                s.extend_from_slice(payload);
                (s, 2)
            }
            L4::Raw(bytes) => return bytes.clone(),
        };
        let c = inet_checksum(&[pseudo, &seg]);
        seg[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        seg
    }

    fn len(&self) -> usize {
        self.emit(&[], false).len()
    }
}

/// An Ethernet + IPv4 frame carrying `l4`.
pub fn v4_frame(ip: &Ipv4, l4: &L4) -> Vec<u8> {
    let pseudo = match l4 {
        L4::Echo { .. } => Vec::new(),
        _ => ip.pseudo(l4.len()),
    };
    let seg = l4.emit(&pseudo, false);
    let mut f = eth(MAC_DST, MAC_SRC, ETH_P_IP);
    f.extend(ip.header(seg.len()));
    f.extend(seg);
    f
}

/// An Ethernet + IPv6 frame carrying `l4` as protocol `next`.
pub fn v6_frame(next: u8, l4: &L4) -> Vec<u8> {
    let seg = l4.emit(&pseudo6(next, l4.len()), true);
    let mut f = eth(MAC_DST, MAC_SRC, ETH_P_IPV6);
    f.extend(ipv6(next, seg.len()));
    f.extend(seg);
    f
}

/// `frame` with VLAN tags (outer first) inserted after the MAC addresses.
/// Each tag is (TPID, VLAN id).
pub fn with_vlans(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&frame[12..]);
    f
}

/// `len` bytes 0, 1, 2, ... (wrapping).
pub fn counting(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

/// `len` pseudo-random bytes from `seed` (xorshift64*: the same on every
/// machine, no dependency).
pub fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// An ARP request from [`MAC_SRC`] (192.0.2.10) for 192.0.2.1, broadcast.
pub fn arp_request() -> Vec<u8> {
    let mut f = eth(MAC_BROADCAST, MAC_SRC, ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&MAC_SRC);
    f.extend_from_slice(&V4_SRC);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[192, 0, 2, 1]);
    f
}

/// A UDP/IPv4 frame from `src`: the LPM firewall's cases.
fn udp_from(src: [u8; 4]) -> Vec<u8> {
    v4_frame(
        &Ipv4 {
            src,
            ..Ipv4::new(IPPROTO_UDP)
        },
        &L4::udp(4000, 5000, 16),
    )
}

/// Every test packet, in a fixed order.
pub fn all() -> Vec<TestPacket> {
    let udp = Ipv4::new(IPPROTO_UDP);
    let tcp = Ipv4::new(IPPROTO_TCP);
    let icmp = Ipv4::new(IPPROTO_ICMP);
    let syn = L4::tcp(40000, 80, 0x02, 0);
    let echo = L4::Echo {
        id: 7,
        seq: 1,
        payload: counting(32),
    };
    let ipv4_udp_dns = v4_frame(&udp, &L4::udp(5353, 53, 29));
    let ipv4_tcp_syn = v4_frame(&tcp, &syn);
    let ipv6_udp = v6_frame(IPPROTO_UDP, &L4::udp(1000, 2000, 20));
    let ipv6_tcp = v6_frame(IPPROTO_TCP, &L4::tcp(40001, 443, 0x18, 10));

    // Headers that end early: a valid frame cut after `n` bytes.
    let cut = |frame: &[u8], n: usize| frame[..n].to_vec();
    // A frame with one byte changed.
    let poke = |frame: &[u8], at: usize, byte: u8| {
        let mut f = frame.to_vec();
        f[at] = byte;
        f
    };

    // IHL 6: a 4-byte Router Alert option (RFC 2113).
    let ra = Ipv4 {
        options: vec![0x94, 0x04, 0x00, 0x00],
        ..udp.clone()
    };
    // IHL 15: a 40-byte timestamp option, the largest IPv4 header.
    let mut ts = vec![0x44, 40, 5, 0];
    ts.extend(counting(36));
    let max_opts = Ipv4 {
        options: ts,
        ..tcp.clone()
    };
    // A non-first fragment (offset 185 * 8 bytes, more fragments).
    let frag = Ipv4 {
        frag: 0x2000 | 185,
        ..udp.clone()
    };
    // IP-in-IP around a UDP packet.
    let inner = v4_frame(&udp, &L4::udp(7, 9, 12))[14..].to_vec();
    let ipip = v4_frame(
        &Ipv4 {
            src: [203, 0, 113, 1],
            dst: [203, 0, 113, 2],
            ..Ipv4::new(IPPROTO_IPIP)
        },
        &L4::Raw(inner),
    );
    // A hop-by-hop options header (8 bytes: next = UDP, PadN) before UDP.
    let mut hbh = vec![IPPROTO_UDP, 0, 1, 4, 0, 0, 0, 0];
    hbh.extend(L4::udp(1000, 2000, 8).emit(&pseudo6(IPPROTO_UDP, 16), true));
    // A 60-byte frame: a small UDP packet padded as a NIC pads runts.
    let mut padded = v4_frame(&udp, &L4::udp(1, 2, 2));
    padded.resize(60, 0);
    // IPv4 total length claiming 100 bytes more than the frame holds.
    let mut overlong = v4_frame(&udp, &L4::udp(1, 2, 10));
    let tot = u16::from_be_bytes([overlong[16], overlong[17]]) + 100;
    overlong[16..18].copy_from_slice(&tot.to_be_bytes());

    let packets: Vec<(&'static str, Vec<u8>)> = vec![
        // Linux's BPF_PROG_TEST_RUN refuses input shorter than ETH_HLEN.
        ("runt_10", counting(10)),
        ("eth_only_ipv4", eth(MAC_DST, MAC_SRC, ETH_P_IP)),
        ("arp_request", arp_request()),
        ("ipv4_trunc_10", cut(&ipv4_udp_dns, 24)),
        ("ipv4_version_6", poke(&ipv4_udp_dns, 14, 0x65)),
        ("ipv4_ihl_3", poke(&ipv4_udp_dns, 14, 0x43)),
        ("ipv4_ihl_15_trunc", poke(&ipv4_udp_dns, 14, 0x4f)),
        ("ipv4_udp_dns", ipv4_udp_dns.clone()),
        ("ipv4_udp_trunc", cut(&ipv4_udp_dns, 14 + 20 + 4)),
        ("ipv4_tcp_syn", ipv4_tcp_syn.clone()),
        ("ipv4_tcp_syn_again", ipv4_tcp_syn.clone()),
        ("ipv4_tcp_trunc", cut(&ipv4_tcp_syn, 14 + 20 + 12)),
        ("ipv4_tcp_doff_4", poke(&ipv4_tcp_syn, 14 + 20 + 12, 0x40)),
        ("ipv4_icmp_echo", v4_frame(&icmp, &echo)),
        ("ipv4_icmp_trunc", cut(&v4_frame(&icmp, &echo), 14 + 20 + 4)),
        ("ipv4_opts_udp", v4_frame(&ra, &L4::udp(6000, 161, 24))),
        (
            "ipv4_opts_max_tcp",
            v4_frame(&max_opts, &L4::tcp(40002, 443, 0x10, 40)),
        ),
        ("ipv4_frag_udp", v4_frame(&frag, &L4::Raw(counting(64)))),
        (
            "ipv4_gre",
            v4_frame(&Ipv4::new(IPPROTO_GRE), &L4::Raw(counting(28))),
        ),
        (
            "ipv4_ttl_1",
            v4_frame(
                &Ipv4 {
                    ttl: 1,
                    ..udp.clone()
                },
                &L4::udp(1, 2, 8),
            ),
        ),
        ("ipv4_bad_csum", poke(&ipv4_udp_dns, 24, 0x00)),
        ("ipv4_ipip_udp", ipip.clone()),
        // IP-in-IP whose outer IHL (15) claims more than the frame holds.
        ("ipv4_ipip_ihl_15_trunc", cut(&poke(&ipip, 14, 0x4f), 40)),
        ("ipv4_src_10_9_9_9", udp_from([10, 9, 9, 9])),
        ("ipv4_src_10_1_2_3", udp_from([10, 1, 2, 3])),
        ("ipv4_src_192_168_1_7", udp_from([192, 168, 1, 7])),
        ("ipv4_src_198_51_100_7", udp_from([198, 51, 100, 7])),
        ("ipv4_udp_odd_len", v4_frame(&udp, &L4::udp(1234, 4321, 37))),
        (
            "ipv4_udp_1514",
            v4_frame(&udp, &L4::udp(9999, 8888, 1500 - 28)),
        ),
        ("ipv4_udp_padded_60", padded),
        ("ipv4_totlen_overlong", overlong),
        (
            "vlan_ipv4_udp",
            with_vlans(&ipv4_udp_dns, &[(ETH_P_8021Q, 100)]),
        ),
        (
            "qinq_ipv4_tcp",
            with_vlans(&ipv4_tcp_syn, &[(ETH_P_8021AD, 10), (ETH_P_8021Q, 20)]),
        ),
        (
            "vlan_trunc",
            cut(&with_vlans(&ipv4_udp_dns, &[(ETH_P_8021Q, 100)]), 16),
        ),
        ("ipv6_udp", ipv6_udp.clone()),
        ("ipv6_tcp", ipv6_tcp.clone()),
        (
            "ipv6_tcp_1514",
            v6_frame(IPPROTO_TCP, &L4::tcp(40003, 22, 0x10, 1500 - 60)),
        ),
        ("ipv6_icmpv6_echo", v6_frame(IPPROTO_ICMPV6, &echo)),
        ("ipv6_trunc", cut(&ipv6_udp, 14 + 30)),
        ("ipv6_hopopts_udp", v6_frame(IPPROTO_HOPOPTS, &L4::Raw(hbh))),
        (
            "vlan_ipv6_tcp",
            with_vlans(&ipv6_tcp, &[(ETH_P_8021Q, 4094)]),
        ),
        ("garbage_64", garbage(1, 64)),
        ("garbage_333", garbage(2, 333)),
    ];
    packets
        .into_iter()
        .map(|(name, bytes)| TestPacket { name, bytes })
        .collect()
}
