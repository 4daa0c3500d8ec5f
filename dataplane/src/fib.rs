//! Filling `bpf_fib_lookup`'s FIB from the kernel's tables.
//!
//! XDP routers are configured with `ip route` and `ip neigh`; under Sluice
//! the same tables are read over rtnetlink ([`sluice_drivers::netlink`])
//! and turned into a [`FibTable`] snapshot, which the control side stores
//! into the dataplane's [`Fib`] at start and on every refresh.
//!
//! What Linux would not use is left out: neighbours not in a `NUD_VALID`
//! state, route MTUs that are neither locked nor enabled by
//! `ip_forward_use_pmtu` (IPv4) or not locked (IPv6), links without an
//! Ethernet address (their MAC reads as zeros).

use std::net::IpAddr;
use std::sync::Arc;

use sluice_bpf::fib::{Fib, FibConfig, FibTable, Interface, Neighbour, Route, RouteType};
use sluice_drivers::netlink::{self, NetlinkError, Tables};

/// Where the FIB comes from (`--fib`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FibSource {
    /// The kernel's tables of the process's network namespace.
    #[default]
    Kernel,
    /// None: every lookup fails as on a host without ports.
    None,
}

impl std::str::FromStr for FibSource {
    type Err = String;
    fn from_str(s: &str) -> Result<FibSource, String> {
        match s {
            "kernel" => Ok(FibSource::Kernel),
            "none" => Ok(FibSource::None),
            _ => Err(format!("unknown FIB source {s:?} (kernel, none)")),
        }
    }
}

fn mac6(v: &[u8]) -> [u8; 6] {
    let mut m = [0u8; 6];
    if v.len() == 6 {
        m.copy_from_slice(v);
    }
    m
}

/// The FIB configuration that `tables` describe.
pub fn config_from_tables(tables: &Tables) -> FibConfig {
    let mut c = FibConfig::default();
    for l in &tables.links {
        c.interfaces.push(Interface {
            ifindex: l.ifindex,
            mac: mac6(&l.mac),
            mtu: l.mtu,
            forwarding_v4: l.forwarding_v4.unwrap_or(false),
            forwarding_v6: l.forwarding_v6.unwrap_or(false),
            mtu6: l.mtu6.unwrap_or(0),
        });
    }
    for r in &tables.routes {
        let kind = RouteType::from_rtm_type(r.kind);
        let oif = r.oif.unwrap_or(0);
        match (r.dst, r.gateway, r.prefsrc) {
            (IpAddr::V4(dst), gw, src) => {
                let gateway = match gw {
                    Some(IpAddr::V4(g)) => Some(g),
                    // `via inet6` next hops are not supported: skip.
                    Some(IpAddr::V6(_)) => continue,
                    None => None,
                };
                let use_mtu = r.mtu_locked || tables.ip_forward_use_pmtu;
                c.routes_v4.push(Route {
                    table: r.table,
                    gateway,
                    kind,
                    metric: r.priority,
                    mtu: if use_mtu { r.mtu } else { 0 },
                    tos: r.tos,
                    prefsrc: match src {
                        Some(IpAddr::V4(s)) => Some(s),
                        _ => None,
                    },
                    encap: r.encap,
                    ..Route::new(dst, r.dst_len, oif)
                });
            }
            (IpAddr::V6(dst), gw, src) => {
                c.routes_v6.push(Route {
                    table: r.table,
                    gateway: match gw {
                        Some(IpAddr::V6(g)) => Some(g),
                        _ => None,
                    },
                    kind,
                    metric: r.priority,
                    mtu: if r.mtu_locked { r.mtu } else { 0 },
                    tos: 0,
                    prefsrc: match src {
                        Some(IpAddr::V6(s)) => Some(s),
                        _ => None,
                    },
                    encap: r.encap,
                    ..Route::new(dst, r.dst_len, oif)
                });
            }
        }
    }
    for n in tables.neighbours.iter().filter(|n| n.is_valid()) {
        let mac = mac6(&n.mac);
        match n.addr {
            IpAddr::V4(addr) => c.neighbours_v4.push(Neighbour {
                ifindex: n.ifindex,
                addr,
                mac,
            }),
            IpAddr::V6(addr) => c.neighbours_v6.push(Neighbour {
                ifindex: n.ifindex,
                addr,
                mac,
            }),
        }
    }
    c
}

/// A snapshot of the kernel's FIB (the calling thread's network
/// namespace).
///
/// # Errors
/// When the rtnetlink dumps fail.
pub fn read_kernel() -> Result<FibTable, NetlinkError> {
    Ok(FibTable::new(config_from_tables(&netlink::read_tables()?)))
}

/// The FIB a dataplane starts with: read from the kernel, or none.
///
/// # Errors
/// When the kernel's tables cannot be read.
pub fn open(source: FibSource) -> Result<Option<Arc<Fib>>, NetlinkError> {
    match source {
        FibSource::Kernel => Ok(Some(Arc::new(Fib::new(read_kernel()?)))),
        FibSource::None => Ok(None),
    }
}

/// Re-reads the kernel's tables into `fib` (a refresh after `ip route`
/// changes). Lookups in progress finish on the old snapshot.
///
/// # Errors
/// When the kernel's tables cannot be read; `fib` is then unchanged.
pub fn refresh(fib: &Fib) -> Result<(), NetlinkError> {
    fib.store(read_kernel()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_drivers::netlink::{Link, NeighEntry, RouteEntry};

    #[test]
    fn converts_and_filters() {
        let tables = Tables {
            links: vec![Link {
                ifindex: 3,
                name: "veth0".into(),
                mac: vec![2, 0, 0, 0, 0, 3],
                mtu: 1500,
                forwarding_v4: Some(true),
                forwarding_v6: None,
                mtu6: None,
            }],
            routes: vec![RouteEntry {
                table: 254,
                dst: "10.0.0.0".parse().unwrap(),
                dst_len: 8,
                kind: 1,
                tos: 0,
                oif: Some(3),
                gateway: Some("10.0.0.1".parse().unwrap()),
                priority: 5,
                mtu: 1000,
                mtu_locked: false,
                prefsrc: None,
                encap: false,
                multipath: false,
            }],
            neighbours: vec![
                NeighEntry {
                    ifindex: 3,
                    addr: "10.0.0.1".parse().unwrap(),
                    mac: vec![2, 0, 0, 0, 0, 9],
                    state: 0x80,
                },
                NeighEntry {
                    ifindex: 3,
                    addr: "10.0.0.2".parse().unwrap(),
                    mac: vec![],
                    state: 0x20, // NUD_FAILED
                },
            ],
            ip_forward_use_pmtu: false,
        };
        let c = config_from_tables(&tables);
        assert_eq!(c.interfaces[0].mac, [2, 0, 0, 0, 0, 3]);
        assert!(!c.interfaces[0].forwarding_v6);
        assert_eq!(c.routes_v4[0].mtu, 0, "an unlocked MTU does not count");
        assert_eq!(c.routes_v4[0].metric, 5);
        assert_eq!(c.neighbours_v4.len(), 1, "the failed entry is left out");
    }
}
