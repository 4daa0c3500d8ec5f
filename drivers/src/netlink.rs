//! A small rtnetlink reader: the kernel's links, routes and neighbours, as
//! `ip link`, `ip route show table all` and `ip neigh` see them.
//!
//! Used to fill Sluice's userspace FIB from what an operator configured
//! with `ip route` / `ip neigh` (the tables `bpf_fib_lookup` consults under
//! Linux). One `NETLINK_ROUTE` socket per [`read_tables`] call, one dump
//! request per kind and family, read until `NLMSG_DONE`. It reads the
//! network namespace of the calling thread.
//!
//! Only what a FIB needs is decoded; everything else in the messages is
//! skipped. Nothing here knows about eBPF: the result is plain data.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What reading the kernel's tables failed on.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// A socket call failed.
    #[error("netlink {call}: {source}")]
    Io {
        /// The failing call.
        call: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The kernel answered a dump request with an error.
    #[error("netlink dump {what}: {source}")]
    Dump {
        /// The dump (`links`, `routes`, `neighbours`).
        what: &'static str,
        /// The errno the kernel returned.
        source: io::Error,
    },
    /// A message was shorter than its header says.
    #[error("netlink dump {what}: truncated message")]
    Truncated {
        /// The dump.
        what: &'static str,
    },
}

/// One network interface (`RTM_NEWLINK`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub ifindex: u32,
    /// Name.
    pub name: String,
    /// Hardware address (empty when it has none).
    pub mac: Vec<u8>,
    /// MTU.
    pub mtu: u32,
    /// IPv4 forwarding (`IPV4_DEVCONF_FORWARDING`); `None` without IPv4.
    pub forwarding_v4: Option<bool>,
    /// IPv6 forwarding (`DEVCONF_FORWARDING`); `None` without IPv6.
    pub forwarding_v6: Option<bool>,
    /// IPv6 MTU (`DEVCONF_MTU6`).
    pub mtu6: Option<u32>,
}

/// One route (`RTM_NEWROUTE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// Table id.
    pub table: u32,
    /// Destination prefix (`0.0.0.0`/`::` for a default route).
    pub dst: IpAddr,
    /// Prefix length.
    pub dst_len: u8,
    /// `rtm_type` (`RTN_UNICAST` = 1, `RTN_LOCAL` = 2, ...).
    pub kind: u8,
    /// TOS the route is restricted to.
    pub tos: u8,
    /// Output interface (first next hop of a multipath route).
    pub oif: Option<u32>,
    /// Gateway (first next hop of a multipath route).
    pub gateway: Option<IpAddr>,
    /// Priority (metric).
    pub priority: u32,
    /// `RTAX_MTU` (0: none).
    pub mtu: u32,
    /// Whether the MTU is locked (`mtu lock N`).
    pub mtu_locked: bool,
    /// Preferred source.
    pub prefsrc: Option<IpAddr>,
    /// Whether it has a lightweight-tunnel encapsulation.
    pub encap: bool,
    /// Whether it has several next hops.
    pub multipath: bool,
}

/// One neighbour (`RTM_NEWNEIGH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighEntry {
    /// Interface.
    pub ifindex: u32,
    /// Address.
    pub addr: IpAddr,
    /// Link-layer address (empty when none).
    pub mac: Vec<u8>,
    /// `ndm_state` (`NUD_*` bits).
    pub state: u16,
}

impl NeighEntry {
    /// Whether Linux uses the entry for forwarding (`NUD_VALID`).
    pub fn is_valid(&self) -> bool {
        self.state & NUD_VALID != 0
    }
}

/// The kernel's tables, as one read saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    /// Interfaces.
    pub links: Vec<Link>,
    /// IPv4 and IPv6 routes of every table.
    pub routes: Vec<RouteEntry>,
    /// IPv4 and IPv6 neighbours in any state.
    pub neighbours: Vec<NeighEntry>,
    /// `net.ipv4.ip_forward_use_pmtu` (route MTUs count for forwarding).
    pub ip_forward_use_pmtu: bool,
}

const NETLINK_ROUTE: i32 = 0;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_INET_CONF: u16 = 1;
const IFLA_INET6_CONF: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_METRICS: u16 = 8;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTA_ENCAP: u16 = 22;
const RTAX_LOCK: u16 = 1;
const RTAX_MTU: u16 = 2;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// `NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT`.
pub const NUD_VALID: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;
const NLMSG_HDRLEN: usize = 16;

/// Reads links, routes (IPv4 and IPv6, every table) and neighbours of the
/// calling thread's network namespace.
///
/// # Errors
/// [`NetlinkError`] when the socket cannot be used or a dump fails.
pub fn read_tables() -> Result<Tables, NetlinkError> {
    let sock = Socket::open()?;
    let mut t = Tables::default();
    sock.dump("links", RTM_GETLINK, &[AF_UNSPEC; 16], |ty, body| {
        if ty == RTM_NEWLINK {
            if let Some(l) = parse_link(body) {
                t.links.push(l);
            }
        }
    })?;
    for family in [AF_INET, AF_INET6] {
        let mut req = [0u8; 12];
        req[0] = family;
        sock.dump("routes", RTM_GETROUTE, &req, |ty, body| {
            if ty == RTM_NEWROUTE {
                if let Some(r) = parse_route(body) {
                    t.routes.push(r);
                }
            }
        })?;
        sock.dump("neighbours", RTM_GETNEIGH, &req, |ty, body| {
            if ty == RTM_NEWNEIGH {
                if let Some(n) = parse_neigh(body) {
                    t.neighbours.push(n);
                }
            }
        })?;
    }
    t.ip_forward_use_pmtu = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward_use_pmtu")
        .map(|s| s.trim() != "0")
        .unwrap_or(false);
    Ok(t)
}

struct Socket {
    fd: OwnedFd,
}

fn os_err(call: &'static str) -> NetlinkError {
    NetlinkError::Io {
        call,
        source: io::Error::last_os_error(),
    }
}

impl Socket {
    fn open() -> Result<Socket, NetlinkError> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(os_err("socket"));
        }
        // SAFETY: `fd` is a new descriptor this function owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Socket { fd })
    }

    /// Sends dump request `ty` with `body` and hands each answer's type
    /// and body to `f` until `NLMSG_DONE`.
    fn dump(
        &self,
        what: &'static str,
        ty: u16,
        body: &[u8],
        mut f: impl FnMut(u16, &[u8]),
    ) -> Result<(), NetlinkError> {
        let mut req = Vec::with_capacity(NLMSG_HDRLEN + body.len());
        req.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        req.extend_from_slice(&ty.to_ne_bytes());
        req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req.extend_from_slice(&1u32.to_ne_bytes()); // seq
        req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
        req.extend_from_slice(body);
        // SAFETY: `req` is a live buffer of `req.len()` bytes; no address
        // (a netlink socket sends to the kernel by default).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(os_err("send"));
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NetlinkError::Io {
                    call: "recv",
                    source: e,
                });
            }
            let mut msgs = &buf[..n as usize];
            while msgs.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([msgs[0], msgs[1], msgs[2], msgs[3]]) as usize;
                let mty = u16::from_ne_bytes([msgs[4], msgs[5]]);
                if len < NLMSG_HDRLEN || len > msgs.len() {
                    return Err(NetlinkError::Truncated { what });
                }
                let body = &msgs[NLMSG_HDRLEN..len];
                match mty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = body
                            .first_chunk::<4>()
                            .map(|b| i32::from_ne_bytes(*b))
                            .unwrap_or(0);
                        if errno != 0 {
                            return Err(NetlinkError::Dump {
                                what,
                                source: io::Error::from_raw_os_error(-errno),
                            });
                        }
                    }
                    t => f(t, body),
                }
                msgs = &msgs[align(len).min(msgs.len())..];
            }
        }
    }
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Attributes (`struct rtattr`/`nlattr`) of `buf`: type (without the
/// nested/byte-order bits) and payload.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((ty, payload))
    })
}

fn u32_of(b: &[u8]) -> Option<u32> {
    b.first_chunk::<4>().map(|b| u32::from_ne_bytes(*b))
}

fn ip_of(family: u8, b: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => b.first_chunk::<4>().map(|a| IpAddr::V4(Ipv4Addr::from(*a))),
        AF_INET6 => b
            .first_chunk::<16>()
            .map(|a| IpAddr::V6(Ipv6Addr::from(*a))),
        _ => None,
    }
}

fn parse_link(body: &[u8]) -> Option<Link> {
    // struct ifinfomsg: family, pad, type (u16), index (i32), flags, change.
    let hdr = body.get(..16)?;
    let mut l = Link {
        ifindex: u32_of(&hdr[4..8])?,
        name: String::new(),
        mac: Vec::new(),
        mtu: 0,
        forwarding_v4: None,
        forwarding_v6: None,
        mtu6: None,
    };
    for (ty, p) in attrs(&body[16..]) {
        match ty {
            IFLA_ADDRESS => l.mac = p.to_vec(),
            IFLA_IFNAME => {
                let p = p.split(|&b| b == 0).next().unwrap_or(p);
                l.name = String::from_utf8_lossy(p).into_owned();
            }
            IFLA_MTU => l.mtu = u32_of(p).unwrap_or(0),
            IFLA_AF_SPEC => {
                for (family, spec) in attrs(p) {
                    for (ty, conf) in attrs(spec) {
                        // IPv4's array is indexed by IPV4_DEVCONF_* - 1,
                        // IPv6's by DEVCONF_*: forwarding is word 0 of both.
                        match (family as u8, ty) {
                            (AF_INET, IFLA_INET_CONF) => {
                                l.forwarding_v4 = u32_of(conf).map(|v| v != 0);
                            }
                            (AF_INET6, IFLA_INET6_CONF) => {
                                l.forwarding_v6 = u32_of(conf).map(|v| v != 0);
                                l.mtu6 = conf.get(8..12).and_then(u32_of);
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Some(l)
}

fn parse_route(body: &[u8]) -> Option<RouteEntry> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope,
    // type, flags (u32).
    let hdr = body.get(..12)?;
    let family = hdr[0];
    let flags = u32_of(&hdr[8..12])?;
    if flags & 0x200 != 0 {
        return None; // RTM_F_CLONED: a cache entry, not a route
    }
    let unspecified = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AF_INET6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut r = RouteEntry {
        table: u32::from(hdr[4]),
        dst: unspecified,
        dst_len: hdr[1],
        kind: hdr[7],
        tos: hdr[3],
        oif: None,
        gateway: None,
        priority: 0,
        mtu: 0,
        mtu_locked: false,
        prefsrc: None,
        encap: false,
        multipath: false,
    };
    for (ty, p) in attrs(&body[12..]) {
        match ty {
            RTA_DST => r.dst = ip_of(family, p)?,
            RTA_OIF => r.oif = u32_of(p),
            RTA_GATEWAY => r.gateway = ip_of(family, p),
            RTA_PRIORITY => r.priority = u32_of(p).unwrap_or(0),
            RTA_PREFSRC => r.prefsrc = ip_of(family, p),
            RTA_TABLE => r.table = u32_of(p).unwrap_or(r.table),
            RTA_ENCAP => r.encap = true,
            RTA_METRICS => {
                for (m, v) in attrs(p) {
                    match m {
                        RTAX_MTU => r.mtu = u32_of(v).unwrap_or(0),
                        RTAX_LOCK => {
                            r.mtu_locked = u32_of(v).is_some_and(|l| l & (1 << RTAX_MTU) != 0);
                        }
                        _ => {}
                    }
                }
            }
            RTA_MULTIPATH => {
                r.multipath = true;
                // struct rtnexthop: len (u16), flags, hops, ifindex (i32),
                // then its attributes. The first next hop is used.
                if let Some(nh) = p.get(..8) {
                    let len = (u16::from_ne_bytes([nh[0], nh[1]]) as usize).min(p.len());
                    r.oif = u32_of(&nh[4..8]);
                    for (ty, a) in attrs(p.get(8..len).unwrap_or(&[])) {
                        if ty == RTA_GATEWAY {
                            r.gateway = ip_of(family, a);
                        }
                        if ty == RTA_ENCAP {
                            r.encap = true;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Some(r)
}

fn parse_neigh(body: &[u8]) -> Option<NeighEntry> {
    // struct ndmsg: family, pad1, pad2 (u16), ifindex (i32), state (u16),
    // flags, type.
    let hdr = body.get(..12)?;
    let family = hdr[0];
    let mut n = NeighEntry {
        ifindex: u32_of(&hdr[4..8])?,
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        mac: Vec::new(),
        state: u16::from_ne_bytes([hdr[8], hdr[9]]),
    };
    let mut has_dst = false;
    for (ty, p) in attrs(&body[12..]) {
        match ty {
            NDA_DST => {
                n.addr = ip_of(family, p)?;
                has_dst = true;
            }
            NDA_LLADDR => n.mac = p.to_vec(),
            _ => {}
        }
    }
    has_dst.then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn parses_a_route_with_gateway_and_locked_mtu() {
        let mut body = vec![AF_INET, 16, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0];
        body.extend(attr(RTA_DST, &[10, 3, 0, 0]));
        body.extend(attr(RTA_GATEWAY, &[10, 2, 0, 254]));
        body.extend(attr(RTA_OIF, &7u32.to_ne_bytes()));
        body.extend(attr(RTA_PRIORITY, &20u32.to_ne_bytes()));
        let mut metrics = attr(RTAX_LOCK, &(1u32 << RTAX_MTU).to_ne_bytes());
        metrics.extend(attr(RTAX_MTU, &1280u32.to_ne_bytes()));
        body.extend(attr(RTA_METRICS, &metrics));
        let r = parse_route(&body).expect("parses");
        assert_eq!(r.dst, "10.3.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(r.dst_len, 16);
        assert_eq!(r.gateway, Some("10.2.0.254".parse().unwrap()));
        assert_eq!(
            (r.oif, r.priority, r.mtu, r.mtu_locked),
            (Some(7), 20, 1280, true)
        );
        assert_eq!((r.table, r.kind), (254, 1));
    }

    #[test]
    fn reads_this_namespace() {
        // Any Linux namespace has a loopback device with a local route.
        let Ok(t) = read_tables() else { return };
        assert!(t.links.iter().any(|l| l.name == "lo"), "{t:?}");
        assert!(t.routes.iter().any(|r| r.kind == 2), "a local route: {t:?}");
    }
}
