//! A userspace forwarding information base for `bpf_fib_lookup`.
//!
//! XDP routers (Linux's `samples/bpf/xdp_fwd_kern.c`, Cilium, Katran's
//! decap path) ask the kernel's FIB where a packet goes: the egress port,
//! the next hop's MAC and the port's own MAC. Under Sluice the dataplane owns
//! the NICs, so the same question is answered here, from tables the control
//! side fills (from the kernel's own tables over rtnetlink, see
//! `sluice_dataplane::fib`, or by hand).
//!
//! * [`FibTable`] is one immutable snapshot: interfaces (MAC, MTU,
//!   forwarding enabled per family), IPv4 and IPv6 routes by table
//!   (prefix, type, output port, gateway or on-link, metric, MTU) and
//!   neighbours (port + address → MAC). Everything is indexed once when the
//!   snapshot is built; a lookup walks sorted vectors with binary searches,
//!   one per prefix length present: no allocation, lock, syscall or log.
//! * [`Fib`] is the shared handle: an [`ArcSwap`] of the current snapshot.
//!   The control side [`Fib::store`]s a new snapshot; workers see it from
//!   their next lookup, and a lookup in progress keeps the one it started
//!   with.
//! * [`FibTable::lookup`] is the helper's semantics over the 64-byte
//!   `struct bpf_fib_lookup`, following `net/core/filter.c`
//!   (`bpf_ipv4_fib_lookup`, `bpf_ipv6_fib_lookup`) of Linux 6.x.
//!
//! What is modelled, and what is not:
//!
//! * Rules: none beyond Linux's defaults. As in Linux without custom
//!   `ip rule`s, IPv4's local table (255) is merged into main (254), and a
//!   full (non-`DIRECT`) IPv4 lookup falls back to table default (253) when
//!   main gives no route; IPv6 looks in local, then main.
//!   `BPF_FIB_LOOKUP_MARK` is accepted and, without rules, has no effect.
//! * Routes: one next hop each (a multipath route uses its first); `tos`
//!   routes match the packet's DSCP; lightweight tunnels only as
//!   "has an encapsulation" (→ `UNSUPP_LWT`); IPv4 routes through an IPv6
//!   gateway (`via inet6`) are not supported.
//! * MTU: a route's MTU counts where Linux lets it (IPv4: locked, or
//!   `ip_forward_use_pmtu`; IPv6: locked); the reader stores 0 otherwise,
//!   and the output port's MTU applies. No PMTU exceptions.
//! * `BPF_FIB_LOOKUP_SRC`: the route's preferred source only; without one,
//!   `NO_SRC_ADDR` (Linux would pick an address of the port).
//! * No VRFs (l3mdev): `DIRECT` without `TBID` uses table main.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

/// Return values of `bpf_fib_lookup` (`BPF_FIB_LKUP_RET_*`).
pub mod ret {
    /// Lookup successful: `ifindex`, `smac`, `dmac` (and the gateway in the
    /// destination) are set.
    pub const SUCCESS: i64 = 0;
    /// The destination is blackholed.
    pub const BLACKHOLE: i64 = 1;
    /// The destination is unreachable.
    pub const UNREACHABLE: i64 = 2;
    /// The destination is prohibited.
    pub const PROHIBIT: i64 = 3;
    /// The packet is not forwarded (no route, local, broadcast, ...).
    pub const NOT_FWDED: i64 = 4;
    /// Forwarding is disabled on the ingress port.
    pub const FWD_DISABLED: i64 = 5;
    /// The route needs an encapsulation.
    pub const UNSUPP_LWT: i64 = 6;
    /// No neighbour entry for the next hop.
    pub const NO_NEIGH: i64 = 7;
    /// The packet exceeds the MTU; `mtu_result` holds it.
    pub const FRAG_NEEDED: i64 = 8;
    /// No source address could be derived (`BPF_FIB_LOOKUP_SRC`).
    pub const NO_SRC_ADDR: i64 = 9;
}

/// `bpf_fib_lookup` flags (`BPF_FIB_LOOKUP_*`).
pub mod flags {
    /// Look in one table (main, or `tbid` with [`TBID`]) instead of
    /// following the rules.
    pub const DIRECT: u64 = 1 << 0;
    /// Egress perspective: `ifindex` is the output port.
    pub const OUTPUT: u64 = 1 << 1;
    /// Do not look the next hop's MAC up.
    pub const SKIP_NEIGH: u64 = 1 << 2;
    /// With [`DIRECT`]: use the table in `tbid`.
    pub const TBID: u64 = 1 << 3;
    /// Set the source address from the route.
    pub const SRC: u64 = 1 << 4;
    /// Use `mark` for rule lookups.
    pub const MARK: u64 = 1 << 5;
    /// Every flag Linux 6.10+ accepts; others make the helper `-EINVAL`.
    pub const ALL: u64 = DIRECT | OUTPUT | SKIP_NEIGH | TBID | SRC | MARK;
}

/// Size of `struct bpf_fib_lookup`.
pub const PARAMS_SIZE: usize = 64;
/// `AF_INET`.
pub const AF_INET: u8 = 2;
/// `AF_INET6`.
pub const AF_INET6: u8 = 10;
/// `RT_TABLE_DEFAULT`.
pub const TABLE_DEFAULT: u32 = 253;
/// `RT_TABLE_MAIN`.
pub const TABLE_MAIN: u32 = 254;
/// `RT_TABLE_LOCAL`.
pub const TABLE_LOCAL: u32 = 255;

const EINVAL: i64 = -22;
const ENODEV: i64 = -19;
const EAFNOSUPPORT: i64 = -97;
const IPV6_MIN_MTU: u32 = 1280;
const IP_MAX_MTU: u32 = 0xfff0;
const IP6_MAX_MTU: u32 = 0xffff + 40;

/// Byte ranges of `struct bpf_fib_lookup`'s fields.
mod field {
    use std::ops::Range;
    pub const FAMILY: usize = 0;
    pub const TOT_LEN: Range<usize> = 6..8;
    pub const IFINDEX: Range<usize> = 8..12;
    pub const TOS: usize = 12;
    pub const RT_METRIC: Range<usize> = 12..16;
    pub const SRC4: Range<usize> = 16..20;
    pub const SRC6: Range<usize> = 16..32;
    pub const DST4: Range<usize> = 32..36;
    pub const DST6: Range<usize> = 32..48;
    pub const TBID: Range<usize> = 48..52;
    pub const SMAC: Range<usize> = 52..58;
    pub const DMAC: Range<usize> = 58..64;
}

/// What a route does with matching packets (`rtm_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteType {
    /// A forwarding route (`RTN_UNICAST`).
    Unicast,
    /// Drop silently (`RTN_BLACKHOLE`).
    Blackhole,
    /// Drop, host unreachable (`RTN_UNREACHABLE`).
    Unreachable,
    /// Drop, administratively prohibited (`RTN_PROHIBIT`).
    Prohibit,
    /// Anything else: local, broadcast, multicast, throw, nat...; never
    /// forwarded. The `rtm_type` number is kept for display.
    Other(u8),
}

impl RouteType {
    /// The type for an `rtm_type` number.
    pub fn from_rtm_type(t: u8) -> RouteType {
        match t {
            1 => RouteType::Unicast,
            6 => RouteType::Blackhole,
            7 => RouteType::Unreachable,
            8 => RouteType::Prohibit,
            t => RouteType::Other(t),
        }
    }

    /// Whether it ends an IPv4 lookup with an error (`fib_props[].error`).
    fn is_error(self) -> bool {
        matches!(
            self,
            RouteType::Blackhole | RouteType::Unreachable | RouteType::Prohibit
        ) || self == RouteType::Other(9) // RTN_THROW
    }
}

/// One route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route<A> {
    /// Table id (254 main, 255 local, ...).
    pub table: u32,
    /// Destination prefix (host bits are ignored).
    pub dst: A,
    /// Prefix length.
    pub len: u8,
    /// What the route does.
    pub kind: RouteType,
    /// Output port (0 for routes without a next hop).
    pub oif: u32,
    /// The next hop; `None` when the destination is on-link.
    pub gateway: Option<A>,
    /// Priority (`ip route ... metric N`); lower wins among equal prefixes.
    pub metric: u32,
    /// MTU that overrides the port's (0: the port's).
    pub mtu: u32,
    /// TOS/DSCP the route is restricted to (0: any).
    pub tos: u8,
    /// Preferred source address.
    pub prefsrc: Option<A>,
    /// Whether the route carries a lightweight-tunnel encapsulation.
    pub encap: bool,
}

impl<A> Route<A> {
    /// A unicast route of table main with no gateway, metric 0, the port's
    /// MTU: the shape of most routes; adjust fields from there.
    pub fn new(dst: A, len: u8, oif: u32) -> Route<A> {
        Route {
            table: TABLE_MAIN,
            dst,
            len,
            kind: RouteType::Unicast,
            oif,
            gateway: None,
            metric: 0,
            mtu: 0,
            tos: 0,
            prefsrc: None,
            encap: false,
        }
    }
}

/// One port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Interface index.
    pub ifindex: u32,
    /// Its MAC address (the `smac` of packets leaving by it).
    pub mac: [u8; 6],
    /// Its MTU.
    pub mtu: u32,
    /// IPv4 forwarding enabled (`net.ipv4.conf.<dev>.forwarding`).
    pub forwarding_v4: bool,
    /// IPv6 forwarding enabled; `false` also when IPv6 is off on it.
    pub forwarding_v6: bool,
    /// IPv6 MTU (`mtu6`; 0: the port's MTU).
    pub mtu6: u32,
}

/// A neighbour: a next hop's MAC on a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour<A> {
    /// Port.
    pub ifindex: u32,
    /// Address.
    pub addr: A,
    /// Link-layer address.
    pub mac: [u8; 6],
}

/// What a [`FibTable`] is built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FibConfig {
    /// Ports.
    pub interfaces: Vec<Interface>,
    /// IPv4 routes, any table.
    pub routes_v4: Vec<Route<Ipv4Addr>>,
    /// IPv6 routes, any table.
    pub routes_v6: Vec<Route<Ipv6Addr>>,
    /// IPv4 neighbours (only usable ones: reachable, stale, permanent...).
    pub neighbours_v4: Vec<Neighbour<Ipv4Addr>>,
    /// IPv6 neighbours.
    pub neighbours_v6: Vec<Neighbour<Ipv6Addr>>,
}

/// An address as a big-endian integer key.
trait Key: Copy + Ord + std::fmt::Debug {
    const BITS: u8;
    fn mask(self, len: u8) -> Self;
}

impl Key for u32 {
    const BITS: u8 = 32;
    fn mask(self, len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            self & (u32::MAX << (32 - u32::from(len.min(32))))
        }
    }
}

impl Key for u128 {
    const BITS: u8 = 128;
    fn mask(self, len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            self & (u128::MAX << (128 - u32::from(len.min(128))))
        }
    }
}

/// A route as a lookup keeps it.
#[derive(Clone, Copy, Debug)]
struct Entry<K> {
    kind: RouteType,
    oif: u32,
    gateway: Option<K>,
    metric: u32,
    mtu: u32,
    tos: u8,
    prefsrc: Option<K>,
    encap: bool,
}

/// A route's masked prefix, its length and the route.
type Prefixed<K> = (K, u8, Entry<K>);

/// Prefixes of one length, sorted, each with its routes' range.
#[derive(Clone, Debug)]
struct Level<K> {
    len: u8,
    prefixes: Vec<(K, u32, u32)>,
}

/// One routing table: levels from the longest prefix to the shortest.
#[derive(Clone, Debug)]
struct Table<K> {
    id: u32,
    levels: Vec<Level<K>>,
    entries: Vec<Entry<K>>,
}

/// How a table lookup ended.
enum Hit<'t, K> {
    /// No route matched.
    None,
    /// This route matched.
    Route(&'t Entry<K>),
}

impl<'t, K> Hit<'t, K> {
    /// The unicast route found, or what Linux returns instead: no route or
    /// a type it does not forward by → `NOT_FWDED`; blackhole,
    /// unreachable, prohibit → their own codes.
    fn unicast(self) -> Result<&'t Entry<K>, i64> {
        match self {
            Hit::None => Err(ret::NOT_FWDED),
            Hit::Route(e) => match e.kind {
                RouteType::Unicast => Ok(e),
                RouteType::Blackhole => Err(ret::BLACKHOLE),
                RouteType::Unreachable => Err(ret::UNREACHABLE),
                RouteType::Prohibit => Err(ret::PROHIBIT),
                RouteType::Other(_) => Err(ret::NOT_FWDED),
            },
        }
    }
}

impl<K: Key> Table<K> {
    fn build(id: u32, mut routes: Vec<Prefixed<K>>) -> Table<K> {
        // Longest prefix first; within a prefix, TOS-specific routes first
        // (as Linux's alias list), then by metric.
        routes.sort_by(|a, b| {
            (b.1, a.0, std::cmp::Reverse(a.2.tos), a.2.metric).cmp(&(
                a.1,
                b.0,
                std::cmp::Reverse(b.2.tos),
                b.2.metric,
            ))
        });
        let mut levels: Vec<Level<K>> = Vec::new();
        let mut entries = Vec::with_capacity(routes.len());
        for (prefix, len, e) in routes {
            let i = entries.len() as u32;
            entries.push(e);
            match levels.last_mut() {
                Some(l) if l.len == len => match l.prefixes.last_mut() {
                    Some(p) if p.0 == prefix => p.2 = i + 1,
                    _ => l.prefixes.push((prefix, i, i + 1)),
                },
                _ => levels.push(Level {
                    len,
                    prefixes: vec![(prefix, i, i + 1)],
                }),
            }
        }
        Table {
            id,
            levels,
            entries,
        }
    }

    /// Longest-prefix match. `accept` skips routes that do not fit (wrong
    /// TOS or output port), which lets shorter prefixes match, as Linux's
    /// trie does.
    fn lookup(&self, dst: K, accept: impl Fn(&Entry<K>) -> bool) -> Hit<'_, K> {
        for level in &self.levels {
            let key = dst.mask(level.len);
            if let Ok(i) = level.prefixes.binary_search_by(|p| p.0.cmp(&key)) {
                let (_, start, end) = level.prefixes[i];
                for e in &self.entries[start as usize..end as usize] {
                    if accept(e) {
                        return Hit::Route(e);
                    }
                }
            }
        }
        Hit::None
    }
}

fn build_tables<A: Copy, K: Key>(
    routes: &[Route<A>],
    key: impl Fn(A) -> K,
    merge_local: bool,
) -> Vec<Table<K>> {
    let mut by_table: Vec<(u32, Vec<Prefixed<K>>)> = Vec::new();
    for r in routes {
        let len = r.len.min(K::BITS);
        let table = if merge_local && r.table == TABLE_LOCAL {
            TABLE_MAIN
        } else {
            r.table
        };
        let e = Entry {
            kind: r.kind,
            oif: r.oif,
            gateway: r.gateway.map(&key),
            metric: r.metric,
            mtu: r.mtu,
            tos: r.tos,
            prefsrc: r.prefsrc.map(&key),
            encap: r.encap,
        };
        let item = (key(r.dst).mask(len), len, e);
        match by_table.iter_mut().find(|t| t.0 == table) {
            Some(t) => t.1.push(item),
            None => by_table.push((table, vec![item])),
        }
    }
    let mut tables: Vec<Table<K>> = by_table
        .into_iter()
        .map(|(id, rs)| Table::build(id, rs))
        .collect();
    tables.sort_by_key(|t| t.id);
    tables
}

/// One immutable snapshot of the FIB, indexed for lookups.
#[derive(Clone, Debug, Default)]
pub struct FibTable {
    interfaces: Vec<Interface>,
    v4: Vec<Table<u32>>,
    v6: Vec<Table<u128>>,
    neigh_v4: Vec<(u32, u32, [u8; 6])>,
    neigh_v6: Vec<(u32, u128, [u8; 6])>,
    config: FibConfig,
}

fn k4(a: Ipv4Addr) -> u32 {
    u32::from(a)
}

fn k6(a: Ipv6Addr) -> u128 {
    u128::from(a)
}

impl FibTable {
    /// An empty FIB: every lookup ends in `-ENODEV` (no ports).
    pub fn empty() -> FibTable {
        FibTable::default()
    }

    /// A shared empty FIB (what a VM without one looks up in).
    pub fn empty_ref() -> &'static FibTable {
        static EMPTY: FibTable = FibTable {
            interfaces: Vec::new(),
            v4: Vec::new(),
            v6: Vec::new(),
            neigh_v4: Vec::new(),
            neigh_v6: Vec::new(),
            config: FibConfig {
                interfaces: Vec::new(),
                routes_v4: Vec::new(),
                routes_v6: Vec::new(),
                neighbours_v4: Vec::new(),
                neighbours_v6: Vec::new(),
            },
        };
        &EMPTY
    }

    /// Indexes `config` for lookups.
    pub fn new(config: FibConfig) -> FibTable {
        let mut interfaces = config.interfaces.clone();
        interfaces.sort_by_key(|i| i.ifindex);
        interfaces.dedup_by_key(|i| i.ifindex);
        let mut neigh_v4: Vec<_> = config
            .neighbours_v4
            .iter()
            .map(|n| (n.ifindex, k4(n.addr), n.mac))
            .collect();
        neigh_v4.sort_by_key(|n| (n.0, n.1));
        neigh_v4.dedup_by_key(|n| (n.0, n.1));
        let mut neigh_v6: Vec<_> = config
            .neighbours_v6
            .iter()
            .map(|n| (n.ifindex, k6(n.addr), n.mac))
            .collect();
        neigh_v6.sort_by_key(|n| (n.0, n.1));
        neigh_v6.dedup_by_key(|n| (n.0, n.1));
        FibTable {
            interfaces,
            v4: build_tables(&config.routes_v4, k4, true),
            v6: build_tables(&config.routes_v6, k6, false),
            neigh_v4,
            neigh_v6,
            config,
        }
    }

    /// What the snapshot was built from.
    pub fn config(&self) -> &FibConfig {
        &self.config
    }

    fn interface(&self, ifindex: u32) -> Option<&Interface> {
        self.interfaces
            .binary_search_by_key(&ifindex, |i| i.ifindex)
            .ok()
            .map(|i| &self.interfaces[i])
    }

    fn table_v4(&self, id: u32) -> Option<&Table<u32>> {
        let id = if id == TABLE_LOCAL { TABLE_MAIN } else { id };
        self.v4
            .binary_search_by_key(&id, |t| t.id)
            .ok()
            .map(|i| &self.v4[i])
    }

    fn table_v6(&self, id: u32) -> Option<&Table<u128>> {
        self.v6
            .binary_search_by_key(&id, |t| t.id)
            .ok()
            .map(|i| &self.v6[i])
    }

    fn neighbour<K: Ord + Copy>(
        list: &[(u32, K, [u8; 6])],
        ifindex: u32,
        addr: K,
    ) -> Option<[u8; 6]> {
        list.binary_search_by(|n| (n.0, n.1).cmp(&(ifindex, addr)))
            .ok()
            .map(|i| list[i].2)
    }

    /// `bpf_fib_lookup(ctx, params, plen, flags)` on `params`, the
    /// program's `struct bpf_fib_lookup` (at least [`PARAMS_SIZE`] bytes;
    /// the caller checks `plen`): returns a `BPF_FIB_LKUP_RET_*` code from
    /// [`ret`] or a negative errno, and writes the outputs into `params`
    /// as Linux does.
    pub fn lookup(&self, params: &mut [u8], flags: u64) -> i64 {
        if params.len() < PARAMS_SIZE {
            return EINVAL;
        }
        if flags & !flags::ALL != 0 {
            return EINVAL;
        }
        let Some(p) = params.first_chunk_mut::<PARAMS_SIZE>() else {
            return EINVAL;
        };
        match p[field::FAMILY] {
            AF_INET => self.lookup_v4(p, flags),
            AF_INET6 => self.lookup_v6(p, flags),
            _ => EAFNOSUPPORT,
        }
    }

    fn lookup_v4(&self, p: &mut [u8; PARAMS_SIZE], flags: u64) -> i64 {
        let ifindex = get_u32(p, field::IFINDEX);
        let Some(dev) = self.interface(ifindex) else {
            return ENODEV;
        };
        if !dev.forwarding_v4 {
            return ret::FWD_DISABLED;
        }
        let oif = if flags & flags::OUTPUT != 0 {
            ifindex
        } else {
            0
        };
        let tos = p[field::TOS] & 0xfc;
        let dst = u32::from_be_bytes(get4(p, field::DST4));
        let accept = |e: &Entry<u32>| {
            (e.tos == 0 || e.tos == tos) && (e.kind.is_error() || oif == 0 || e.oif == oif)
        };
        let hit = if flags & flags::DIRECT != 0 {
            let mut tbid = TABLE_MAIN;
            if flags & flags::TBID != 0 {
                tbid = get_u32(p, field::TBID);
                set_u32(p, field::TBID, 0);
            }
            let Some(t) = self.table_v4(tbid) else {
                return ret::NOT_FWDED;
            };
            t.lookup(dst, accept)
        } else {
            let main = match self.table_v4(TABLE_MAIN) {
                Some(t) => t.lookup(dst, accept),
                None => Hit::None,
            };
            let failed = match &main {
                Hit::None => true,
                Hit::Route(e) => e.kind.is_error(),
            };
            match self.table_v4(TABLE_DEFAULT) {
                Some(t) if failed => t.lookup(dst, accept),
                _ => main,
            }
        };
        let route = match hit.unicast() {
            Ok(e) => e,
            Err(code) => return code,
        };
        let Some(out) = self.interface(route.oif) else {
            return ret::NOT_FWDED;
        };
        if flags & flags::SRC != 0 {
            match route.prefsrc {
                Some(src) => p[field::SRC4].copy_from_slice(&src.to_be_bytes()),
                None => return ret::NO_SRC_ADDR,
            }
        }
        let mtu = if route.mtu != 0 {
            route.mtu
        } else {
            out.mtu.min(IP_MAX_MTU)
        };
        if u32::from(get_u16(p, field::TOT_LEN)) > mtu {
            set_u16(p, field::TOT_LEN, mtu as u16);
            return ret::FRAG_NEEDED;
        }
        if route.encap {
            return ret::UNSUPP_LWT;
        }
        set_u32(p, field::RT_METRIC, route.metric);
        set_u32(p, field::IFINDEX, out.ifindex);
        let mut next = dst;
        if let Some(gw) = route.gateway {
            p[field::DST4].copy_from_slice(&gw.to_be_bytes());
            next = gw;
        }
        if flags & flags::SKIP_NEIGH == 0 {
            let Some(mac) = Self::neighbour(&self.neigh_v4, out.ifindex, next) else {
                return ret::NO_NEIGH;
            };
            p[field::DMAC].copy_from_slice(&mac);
            p[field::SMAC].copy_from_slice(&out.mac);
        }
        set_fwd_params(p, mtu)
    }

    fn lookup_v6(&self, p: &mut [u8; PARAMS_SIZE], flags: u64) -> i64 {
        let src = u128::from_be_bytes(get16(p, field::SRC6));
        let dst = u128::from_be_bytes(get16(p, field::DST6));
        if need_strict(dst) || need_strict(src) {
            return ret::NOT_FWDED;
        }
        let ifindex = get_u32(p, field::IFINDEX);
        let Some(dev) = self.interface(ifindex) else {
            return ENODEV;
        };
        if !dev.forwarding_v6 {
            return ret::FWD_DISABLED;
        }
        // Linux's IPv6 lookup takes the output port as a preference, not a
        // requirement (no RT6_LOOKUP_F_IFACE): a single route always matches.
        let accept = |_: &Entry<u128>| true;
        let hit = if flags & flags::DIRECT != 0 {
            let mut tbid = TABLE_MAIN;
            if flags & flags::TBID != 0 {
                tbid = get_u32(p, field::TBID);
                set_u32(p, field::TBID, 0);
            }
            let Some(t) = self.table_v6(tbid) else {
                return ret::NOT_FWDED;
            };
            t.lookup(dst, accept)
        } else {
            let local = match self.table_v6(TABLE_LOCAL) {
                Some(t) => t.lookup(dst, accept),
                None => Hit::None,
            };
            match (local, self.table_v6(TABLE_MAIN)) {
                (Hit::None, Some(t)) => t.lookup(dst, accept),
                (hit, _) => hit,
            }
        };
        let route = match hit.unicast() {
            Ok(e) => e,
            Err(code) => return code,
        };
        let Some(out) = self.interface(route.oif) else {
            return ret::NOT_FWDED;
        };
        if flags & flags::SRC != 0 {
            match route.prefsrc {
                Some(s) => p[field::SRC6].copy_from_slice(&s.to_be_bytes()),
                None => return ret::NO_SRC_ADDR,
            }
        }
        let mtu = if route.mtu != 0 {
            route.mtu
        } else {
            let m = if out.mtu6 != 0 { out.mtu6 } else { out.mtu };
            m.clamp(IPV6_MIN_MTU, IP6_MAX_MTU)
        };
        if u32::from(get_u16(p, field::TOT_LEN)) > mtu {
            set_u16(p, field::TOT_LEN, mtu as u16);
            return ret::FRAG_NEEDED;
        }
        if route.encap {
            return ret::UNSUPP_LWT;
        }
        let mut next = dst;
        if let Some(gw) = route.gateway {
            p[field::DST6].copy_from_slice(&gw.to_be_bytes());
            next = gw;
        }
        set_u32(p, field::RT_METRIC, route.metric);
        set_u32(p, field::IFINDEX, out.ifindex);
        if flags & flags::SKIP_NEIGH == 0 {
            let Some(mac) = Self::neighbour(&self.neigh_v6, out.ifindex, next) else {
                return ret::NO_NEIGH;
            };
            p[field::DMAC].copy_from_slice(&mac);
            p[field::SMAC].copy_from_slice(&out.mac);
        }
        set_fwd_params(p, mtu)
    }
}

/// `bpf_fib_set_fwd_params`: no VLAN, the MTU. (The MACs are written
/// with the neighbour: with `SKIP_NEIGH` neither is.)
fn set_fwd_params(p: &mut [u8; PARAMS_SIZE], mtu: u32) -> i64 {
    set_u32(p, field::TBID, 0); // h_vlan_proto, h_vlan_TCI
    if mtu != 0 {
        set_u16(p, field::TOT_LEN, mtu as u16);
    }
    ret::SUCCESS
}

/// Linux's `rt6_need_strict`: multicast, link-local and loopback
/// addresses are never forwarded.
fn need_strict(a: u128) -> bool {
    let hi = (a >> 112) as u16;
    hi & 0xff00 == 0xff00 || hi & 0xffc0 == 0xfe80 || a == 1
}

fn get4(p: &[u8; PARAMS_SIZE], r: std::ops::Range<usize>) -> [u8; 4] {
    let mut b = [0; 4];
    b.copy_from_slice(&p[r]);
    b
}

fn get16(p: &[u8; PARAMS_SIZE], r: std::ops::Range<usize>) -> [u8; 16] {
    let mut b = [0; 16];
    b.copy_from_slice(&p[r]);
    b
}

fn get_u32(p: &[u8; PARAMS_SIZE], r: std::ops::Range<usize>) -> u32 {
    u32::from_ne_bytes(get4(p, r))
}

fn set_u32(p: &mut [u8; PARAMS_SIZE], r: std::ops::Range<usize>, v: u32) {
    p[r].copy_from_slice(&v.to_ne_bytes());
}

fn get_u16(p: &[u8; PARAMS_SIZE], r: std::ops::Range<usize>) -> u16 {
    u16::from_ne_bytes([p[r.start], p[r.start + 1]])
}

fn set_u16(p: &mut [u8; PARAMS_SIZE], r: std::ops::Range<usize>, v: u16) {
    p[r].copy_from_slice(&v.to_ne_bytes());
}

/// The FIB programs look up: the current snapshot behind an [`ArcSwap`].
/// Shared by every worker (`Arc<Fib>`); the control side replaces the
/// snapshot with [`Fib::store`].
#[derive(Debug)]
pub struct Fib {
    current: ArcSwap<FibTable>,
}

impl Default for Fib {
    fn default() -> Self {
        Fib::new(FibTable::empty())
    }
}

impl Fib {
    /// A FIB whose first snapshot is `table`.
    pub fn new(table: FibTable) -> Fib {
        Fib {
            current: ArcSwap::from_pointee(table),
        }
    }

    /// Replaces the snapshot; lookups from now on see `table`.
    pub fn store(&self, table: FibTable) {
        self.current.store(Arc::new(table));
    }

    /// The current snapshot (lock-free; no allocation).
    pub fn load(&self) -> Guard<Arc<FibTable>> {
        self.current.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_IN: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC_OUT: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const MAC_GW: [u8; 6] = [2, 0, 0, 0, 0, 0x99];
    const MAC_HOST: [u8; 6] = [2, 0, 0, 0, 0, 0x55];

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn iface(ifindex: u32, mac: [u8; 6], mtu: u32) -> Interface {
        Interface {
            ifindex,
            mac,
            mtu,
            forwarding_v4: true,
            forwarding_v6: true,
            mtu6: 0,
        }
    }

    /// Port 2 in, port 3 out; 10.3.0.0/16 via 10.2.0.254 on port 3 (which
    /// has a neighbour), 10.3.5.0/24 on-link on port 3, 10.4.0.0/16 via a
    /// gateway without a neighbour, special routes under 10.9.
    fn fib() -> FibTable {
        let mut routes = vec![
            Route::new(v4("10.1.0.0"), 16, 2),
            Route::new(v4("10.2.0.0"), 16, 3),
            Route {
                gateway: Some(v4("10.2.0.254")),
                metric: 20,
                ..Route::new(v4("10.3.0.0"), 16, 3)
            },
            Route::new(v4("10.3.5.0"), 24, 3),
            Route {
                gateway: Some(v4("10.2.0.253")),
                ..Route::new(v4("10.4.0.0"), 16, 3)
            },
            Route {
                mtu: 1000,
                gateway: Some(v4("10.2.0.254")),
                ..Route::new(v4("10.5.0.0"), 16, 3)
            },
            Route {
                encap: true,
                ..Route::new(v4("10.6.0.0"), 16, 3)
            },
            Route {
                table: TABLE_LOCAL,
                kind: RouteType::Other(2),
                ..Route::new(v4("10.1.0.1"), 32, 2)
            },
            Route {
                table: 100,
                gateway: Some(v4("10.1.0.254")),
                ..Route::new(v4("0.0.0.0"), 0, 2)
            },
        ];
        for (net, kind) in [
            ("10.9.1.0", RouteType::Blackhole),
            ("10.9.2.0", RouteType::Unreachable),
            ("10.9.3.0", RouteType::Prohibit),
        ] {
            routes.push(Route {
                kind,
                ..Route::new(v4(net), 24, 0)
            });
        }
        FibTable::new(FibConfig {
            interfaces: vec![
                iface(2, MAC_IN, 1500),
                iface(3, MAC_OUT, 1500),
                Interface {
                    forwarding_v4: false,
                    forwarding_v6: false,
                    ..iface(4, [2, 0, 0, 0, 0, 4], 1500)
                },
            ],
            routes_v4: routes,
            routes_v6: vec![
                Route {
                    gateway: Some(v6("fd00:2::fe")),
                    ..Route::new(v6("fd00:3::"), 48, 3)
                },
                Route::new(v6("fd00:2::"), 64, 3),
                Route {
                    kind: RouteType::Prohibit,
                    ..Route::new(v6("fd00:9::"), 64, 0)
                },
            ],
            neighbours_v4: vec![
                Neighbour {
                    ifindex: 3,
                    addr: v4("10.2.0.254"),
                    mac: MAC_GW,
                },
                Neighbour {
                    ifindex: 3,
                    addr: v4("10.3.5.7"),
                    mac: MAC_HOST,
                },
                Neighbour {
                    ifindex: 2,
                    addr: v4("10.1.0.254"),
                    mac: MAC_HOST,
                },
            ],
            neighbours_v6: vec![Neighbour {
                ifindex: 3,
                addr: v6("fd00:2::fe"),
                mac: MAC_GW,
            }],
        })
    }

    fn params4(dst: &str, ifindex: u32, tot_len: u16) -> [u8; PARAMS_SIZE] {
        let mut p = [0u8; PARAMS_SIZE];
        p[field::FAMILY] = AF_INET;
        p[1] = 17;
        set_u16(&mut p, field::TOT_LEN, tot_len);
        set_u32(&mut p, field::IFINDEX, ifindex);
        p[field::SRC4].copy_from_slice(&v4("10.1.0.9").octets());
        p[field::DST4].copy_from_slice(&v4(dst).octets());
        p
    }

    fn params6(dst: &str, ifindex: u32) -> [u8; PARAMS_SIZE] {
        let mut p = [0u8; PARAMS_SIZE];
        p[field::FAMILY] = AF_INET6;
        set_u16(&mut p, field::TOT_LEN, 100);
        set_u32(&mut p, field::IFINDEX, ifindex);
        p[field::SRC6].copy_from_slice(&v6("fd00:1::9").octets());
        p[field::DST6].copy_from_slice(&v6(dst).octets());
        p
    }

    fn dst4(p: &[u8; PARAMS_SIZE]) -> Ipv4Addr {
        Ipv4Addr::from(get4(p, field::DST4))
    }

    #[test]
    fn longest_prefix_wins_and_gateway_replaces_the_destination() {
        let f = fib();
        let mut p = params4("10.3.5.7", 2, 100);
        assert_eq!(f.lookup(&mut p, 0), ret::SUCCESS);
        assert_eq!(dst4(&p), v4("10.3.5.7"), "on-link /24 beats the /16");
        assert_eq!(p[field::DMAC], MAC_HOST);
        assert_eq!(p[field::SMAC], MAC_OUT);
        assert_eq!(get_u32(&p, field::IFINDEX), 3);
        assert_eq!(get_u16(&p, field::TOT_LEN), 1500, "mtu_result");
        let mut p = params4("10.3.6.1", 2, 100);
        assert_eq!(f.lookup(&mut p, 0), ret::SUCCESS);
        assert_eq!(dst4(&p), v4("10.2.0.254"), "the /16's gateway");
        assert_eq!(p[field::DMAC], MAC_GW);
        assert_eq!(get_u32(&p, field::RT_METRIC), 20);
    }

    #[test]
    fn every_return_code() {
        let f = fib();
        let cases: &[(&str, u32, u16, u64, i64)] = &[
            ("10.3.6.1", 2, 100, 0, ret::SUCCESS),
            ("10.9.1.1", 2, 100, 0, ret::BLACKHOLE),
            ("10.9.2.1", 2, 100, 0, ret::UNREACHABLE),
            ("10.9.3.1", 2, 100, 0, ret::PROHIBIT),
            ("192.168.1.1", 2, 100, 0, ret::NOT_FWDED),
            ("10.1.0.1", 2, 100, 0, ret::NOT_FWDED), // a local address
            ("10.3.6.1", 4, 100, 0, ret::FWD_DISABLED),
            ("10.6.0.1", 2, 100, 0, ret::UNSUPP_LWT),
            ("10.4.0.1", 2, 100, 0, ret::NO_NEIGH),
            ("10.3.6.1", 2, 1501, 0, ret::FRAG_NEEDED),
            ("10.3.6.1", 2, 100, flags::SRC, ret::NO_SRC_ADDR),
            ("10.3.6.1", 9, 100, 0, ENODEV),
            ("10.3.6.1", 2, 100, 1 << 6, EINVAL),
        ];
        for &(dst, ifindex, len, fl, want) in cases {
            let mut p = params4(dst, ifindex, len);
            assert_eq!(
                f.lookup(&mut p, fl),
                want,
                "{dst} in {ifindex} len {len} flags {fl}"
            );
        }
        let mut p = params4("10.3.6.1", 2, 100);
        p[0] = 7;
        assert_eq!(f.lookup(&mut p, 0), EAFNOSUPPORT);
        assert_eq!(f.lookup(&mut p[..63], 0), EINVAL, "short params");
        assert_eq!(
            FibTable::empty().lookup(&mut params4("10.3.6.1", 2, 100), 0),
            ENODEV
        );
    }

    #[test]
    fn mtu_of_the_route_and_of_the_port() {
        let f = fib();
        let mut p = params4("10.5.0.1", 2, 1000);
        assert_eq!(f.lookup(&mut p, 0), ret::SUCCESS);
        assert_eq!(get_u16(&p, field::TOT_LEN), 1000);
        let mut p = params4("10.5.0.1", 2, 1001);
        assert_eq!(f.lookup(&mut p, 0), ret::FRAG_NEEDED);
        assert_eq!(get_u16(&p, field::TOT_LEN), 1000, "mtu_result");
        assert_eq!(dst4(&p), v4("10.5.0.1"), "nothing else written");
        assert_eq!(get_u32(&p, field::IFINDEX), 2);
        let mut p = params4("10.3.6.1", 2, 1500);
        assert_eq!(f.lookup(&mut p, 0), ret::SUCCESS);
    }

    #[test]
    fn direct_and_tbid_and_output() {
        let f = fib();
        // DIRECT: main only (with local merged in, as Linux without rules).
        let mut p = params4("10.1.0.1", 2, 100);
        assert_eq!(f.lookup(&mut p, flags::DIRECT), ret::NOT_FWDED);
        let mut p = params4("10.3.6.1", 2, 100);
        assert_eq!(f.lookup(&mut p, flags::DIRECT), ret::SUCCESS);
        // TBID: table 100 has a default route via 10.1.0.254 on port 2.
        let mut p = params4("10.3.6.1", 2, 100);
        set_u32(&mut p, field::TBID, 100);
        assert_eq!(f.lookup(&mut p, flags::DIRECT | flags::TBID), ret::SUCCESS);
        assert_eq!(dst4(&p), v4("10.1.0.254"));
        assert_eq!(get_u32(&p, field::IFINDEX), 2);
        let mut p = params4("10.3.6.1", 2, 100);
        set_u32(&mut p, field::TBID, 77);
        assert_eq!(
            f.lookup(&mut p, flags::DIRECT | flags::TBID),
            ret::NOT_FWDED
        );
        // OUTPUT: routes out of another port are skipped; 10.3.6.1 from
        // port 2's view has no route by port 2.
        let mut p = params4("10.3.6.1", 2, 100);
        assert_eq!(f.lookup(&mut p, flags::OUTPUT), ret::NOT_FWDED);
        let mut p = params4("10.3.5.7", 3, 100);
        assert_eq!(f.lookup(&mut p, flags::OUTPUT), ret::SUCCESS);
        // Error routes match whatever the port.
        let mut p = params4("10.9.1.1", 3, 100);
        assert_eq!(f.lookup(&mut p, flags::OUTPUT), ret::BLACKHOLE);
        // SKIP_NEIGH: success without a neighbour, MACs untouched (as
        // Linux 6.x), the gateway and port set.
        let mut p = params4("10.4.0.1", 2, 100);
        assert_eq!(f.lookup(&mut p, flags::SKIP_NEIGH), ret::SUCCESS);
        assert_eq!(p[field::DMAC], [0; 6]);
        assert_eq!(p[field::SMAC], [0; 6]);
        assert_eq!(dst4(&p), v4("10.2.0.253"));
        assert_eq!(get_u32(&p, field::IFINDEX), 3);
    }

    #[test]
    fn ipv6() {
        let f = fib();
        let mut p = params6("fd00:3::1", 2);
        assert_eq!(f.lookup(&mut p, 0), ret::SUCCESS);
        assert_eq!(p[field::DST6], v6("fd00:2::fe").octets());
        assert_eq!(p[field::DMAC], MAC_GW);
        assert_eq!(get_u32(&p, field::IFINDEX), 3);
        assert_eq!(f.lookup(&mut params6("fd00:2::5", 2), 0), ret::NO_NEIGH);
        assert_eq!(f.lookup(&mut params6("fd00:9::5", 2), 0), ret::PROHIBIT);
        assert_eq!(f.lookup(&mut params6("fd00:7::5", 2), 0), ret::NOT_FWDED);
        assert_eq!(f.lookup(&mut params6("fe80::1", 2), 0), ret::NOT_FWDED);
        assert_eq!(f.lookup(&mut params6("ff02::1", 9), 0), ret::NOT_FWDED);
        assert_eq!(f.lookup(&mut params6("fd00:3::1", 9), 0), ENODEV);
        assert_eq!(f.lookup(&mut params6("fd00:3::1", 4), 0), ret::FWD_DISABLED);
        let mut p = params6("fd00:3::1", 2);
        set_u16(&mut p, field::TOT_LEN, 1501);
        assert_eq!(f.lookup(&mut p, 0), ret::FRAG_NEEDED);
        assert_eq!(get_u16(&p, field::TOT_LEN), 1500);
    }

    #[test]
    fn equal_prefixes_pick_the_lowest_metric_and_store_swaps() {
        let mut worse = Route::new(v4("10.8.0.0"), 16, 2);
        worse.metric = 200;
        let mut better = Route::new(v4("10.8.0.0"), 16, 3);
        better.metric = 100;
        let config = FibConfig {
            interfaces: vec![iface(2, MAC_IN, 1500), iface(3, MAC_OUT, 1500)],
            routes_v4: vec![worse, better],
            ..FibConfig::default()
        };
        let fib = Fib::new(FibTable::new(config));
        let mut p = params4("10.8.1.1", 2, 100);
        assert_eq!(fib.load().lookup(&mut p, flags::SKIP_NEIGH), ret::SUCCESS);
        assert_eq!(get_u32(&p, field::IFINDEX), 3);
        fib.store(FibTable::empty());
        assert_eq!(
            fib.load().lookup(&mut params4("10.8.1.1", 2, 100), 0),
            ENODEV
        );
    }
}
