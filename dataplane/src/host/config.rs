//! What the host stack owns: addresses per port, default gateways, DHCPv4,
//! the HTTP service, and a few sizes.
//!
//! Addresses are written as on the command line, `ADDR/PREFIX[@PORT]`:
//!
//! ```
//! use sluice_dataplane::host::{HostAddr, HostConfig, PortRef};
//!
//! let a: HostAddr = "10.0.0.1/24".parse().unwrap();
//! assert_eq!(a.port, PortRef::Index(0));
//! let b: HostAddr = "fd00::1/64@ring:b".parse().unwrap();
//! assert_eq!(b.port, PortRef::Name("ring:b".into()));
//! let cfg = HostConfig::default().with_address(a).with_address(b);
//! assert_eq!(cfg.addresses.len(), 2);
//! ```
//!
//! A port is named by its number (the order ports were added to the
//! dataplane) or its name (`ring:b`, or just `b`). Everything here is plain
//! data; names are resolved against the dataplane's ports when the stack
//! starts, and every error names the bad item.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// Why a host-stack configuration cannot be used; the message names the
/// item at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostConfigError {
    /// An address is not `ADDR/PREFIX[@PORT]`.
    #[error("host address {given:?}: {reason}")]
    BadAddress {
        /// What was given.
        given: String,
        /// What is wrong.
        reason: String,
    },
    /// A gateway is not `ADDR[@PORT]`.
    #[error("gateway {given:?}: {reason}")]
    BadGateway {
        /// What was given.
        given: String,
        /// What is wrong.
        reason: String,
    },
    /// A MAC address is not six hex octets, or not unicast.
    #[error("MAC address {given:?}: {reason}")]
    BadMac {
        /// What was given.
        given: String,
        /// What is wrong.
        reason: String,
    },
    /// A port reference names no port of the dataplane.
    #[error("{what}: no port {port} (ports: {known})")]
    NoSuchPort {
        /// The item that names the port.
        what: String,
        /// The reference.
        port: String,
        /// The ports there are.
        known: String,
    },
    /// A size or limit is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// A port named by its number or its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// The port's index in the dataplane.
    Index(usize),
    /// The port's name (`ring:a`), or the part after the driver (`a`).
    Name(String),
}

impl Default for PortRef {
    fn default() -> Self {
        PortRef::Index(0)
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Index(i) => write!(f, "{i}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

impl FromStr for PortRef {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<usize>() {
            Ok(i) => PortRef::Index(i),
            Err(_) => PortRef::Name(s.to_string()),
        })
    }
}

impl PortRef {
    /// The index of the port this names among `names` (the dataplane's
    /// port names, in order).
    pub fn resolve(&self, names: &[String]) -> Option<usize> {
        match self {
            PortRef::Index(i) => (*i < names.len()).then_some(*i),
            PortRef::Name(n) => names.iter().position(|p| p == n).or_else(|| {
                names
                    .iter()
                    .position(|p| p.split_once(':').is_some_and(|(_, rest)| rest == n))
            }),
        }
    }
}

/// An IP network with the host's own address in it: `10.0.0.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length (0..=32 for IPv4, 0..=128 for IPv6).
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s
            .split_once('/')
            .ok_or("expected ADDR/PREFIX, e.g. 10.0.0.1/24 or fd00::1/64")?;
        let addr: IpAddr = a
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 or IPv6 address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("prefix {p:?} is not a number"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("prefix /{prefix} is longer than {max}"));
        }
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(format!("{addr} cannot be a host address"));
        }
        if let IpAddr::V4(v4) = addr {
            if v4.is_broadcast() {
                return Err(format!("{addr} cannot be a host address"));
            }
        }
        Ok(Cidr { addr, prefix })
    }
}

/// One address the host stack owns, on one port: `ADDR/PREFIX[@PORT]`
/// (port 0 when no port is named).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddr {
    /// Address and network.
    pub cidr: Cidr,
    /// The port it lives on.
    pub port: PortRef,
}

impl FromStr for HostAddr {
    type Err = HostConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| HostConfigError::BadAddress {
            given: s.to_string(),
            reason,
        };
        let (cidr, port) = match s.split_once('@') {
            Some((c, "")) => return Err(bad(format!("empty port after {c:?}@"))),
            Some((c, p)) => (c, p.parse().unwrap_or_default()),
            None => (s, PortRef::default()),
        };
        Ok(HostAddr {
            cidr: cidr.parse().map_err(bad)?,
            port,
        })
    }
}

/// A default gateway: `ADDR[@PORT]`. Without a port it goes to the port
/// whose network contains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// The router's address.
    pub addr: IpAddr,
    /// The port, if named.
    pub port: Option<PortRef>,
}

impl FromStr for Gateway {
    type Err = HostConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| HostConfigError::BadGateway {
            given: s.to_string(),
            reason: reason.to_string(),
        };
        let (a, port) = match s.split_once('@') {
            Some((_, "")) => return Err(bad("empty port")),
            Some((a, p)) => (a, Some(p.parse().unwrap_or_default())),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad("not an IPv4 or IPv6 address"))?;
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(bad("not a unicast address"));
        }
        Ok(Gateway { addr, port })
    }
}

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A locally administered unicast address derived from an interface
    /// index: `02:53:4c:` ("SL") and the index's low 24 bits. For ports
    /// without a hardware address of their own.
    pub fn derived(ifindex: u32) -> Mac {
        let i = ifindex.to_be_bytes();
        Mac([0x02, 0x53, 0x4c, i[1], i[2], i[3]])
    }

    /// Whether this is a usable unicast address (not multicast, not zero).
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }

    /// The address of a kernel interface, from
    /// `/sys/class/net/IFACE/address` (AF_XDP and AF_PACKET ports use
    /// the NIC's own address, so peers' ARP caches stay valid).
    pub fn of_kernel_interface(iface: &str) -> Option<Mac> {
        if iface.is_empty() || iface.contains('/') || iface.starts_with('.') {
            return None;
        }
        let text = std::fs::read_to_string(format!("/sys/class/net/{iface}/address")).ok()?;
        text.trim().parse().ok().filter(Mac::is_unicast)
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for Mac {
    type Err = HostConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| HostConfigError::BadMac {
            given: s.to_string(),
            reason: reason.to_string(),
        };
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut out {
            let p = parts.next().ok_or_else(|| bad("expected six octets"))?;
            if p.len() != 2 {
                return Err(bad("each octet is two hex digits"));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad("not hex"))?;
        }
        if parts.next().is_some() {
            return Err(bad("expected six octets"));
        }
        let mac = Mac(out);
        if !mac.is_unicast() {
            return Err(bad("not a unicast address"));
        }
        Ok(mac)
    }
}

/// The HTTP service on the host stack (`/metrics`, `/status`, and what the
/// embedder's handler serves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// TCP port (default 9100, Prometheus' node-exporter convention).
    pub port: u16,
    /// Bearer token required for every method that can change state
    /// (anything but GET, HEAD, OPTIONS). Without a token such requests are
    /// always refused.
    pub token: Option<String>,
    /// Connections served at once per port (each is one smoltcp socket;
    /// further SYNs wait for the peer's retransmission).
    pub max_connections: usize,
    /// Largest request line plus headers (431 beyond).
    pub max_header_bytes: usize,
    /// Largest request body (413 beyond).
    pub max_body_bytes: usize,
    /// Time a request may take to arrive completely (408 beyond).
    pub request_timeout: Duration,
    /// Time an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            port: 9100,
            token: None,
            max_connections: 4,
            max_header_bytes: 8 * 1024,
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Everything the host stack is told at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Static addresses, each on a port.
    pub addresses: Vec<HostAddr>,
    /// Default gateways (at most one per port and family).
    pub gateways: Vec<Gateway>,
    /// Ports that get an IPv4 address by DHCP.
    pub dhcp: Vec<PortRef>,
    /// MAC addresses for ports (default: the kernel interface's own for
    /// ports named `DRIVER:IFACE`, else [`Mac::derived`]).
    pub macs: Vec<(PortRef, Mac)>,
    /// The HTTP service, if any.
    pub http: Option<HttpConfig>,
    /// IP MTU of every interface (default 1500).
    pub mtu: usize,
    /// Frames in the host stack's own transmit pool (default 1024).
    pub tx_frames: usize,
    /// Frames handled per interface per poll, so one busy port cannot hold
    /// the stack (and the socket API's lock) for long (default 256).
    pub rx_budget: usize,
    /// Longest the host thread sleeps when idle (default 1 ms). The PASS
    /// queues carry no wake-up (workers never make a syscall for the host
    /// stack), so this bounds the added latency of an idle stack's first
    /// answer.
    pub max_sleep: Duration,
    /// Random seed for smoltcp (TCP initial sequence numbers, ephemeral
    /// choices). Default: from the clock and process id.
    pub seed: Option<u64>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            addresses: Vec::new(),
            gateways: Vec::new(),
            dhcp: Vec::new(),
            macs: Vec::new(),
            http: None,
            mtu: 1500,
            tx_frames: 1024,
            rx_budget: 256,
            max_sleep: Duration::from_millis(1),
            seed: None,
        }
    }
}

/// One interface of the stack, resolved: a port and what it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IfacePlan {
    pub port: usize,
    pub mac: Option<Mac>,
    pub addrs: Vec<Cidr>,
    pub gateways: Vec<IpAddr>,
    pub dhcp: bool,
}

impl HostConfig {
    /// Adds an address.
    pub fn with_address(mut self, a: HostAddr) -> HostConfig {
        self.addresses.push(a);
        self
    }

    /// Adds a default gateway.
    pub fn with_gateway(mut self, g: Gateway) -> HostConfig {
        self.gateways.push(g);
        self
    }

    /// Runs a DHCPv4 client on a port.
    pub fn with_dhcp(mut self, port: PortRef) -> HostConfig {
        self.dhcp.push(port);
        self
    }

    /// Serves HTTP.
    pub fn with_http(mut self, http: HttpConfig) -> HostConfig {
        self.http = Some(http);
        self
    }

    /// Builds a configuration from command-line strings: `--host-ip`
    /// (`ADDR/PREFIX[@PORT]`), `--gateway` (`ADDR[@PORT]`) and `--dhcp`
    /// (`PORT`) values.
    ///
    /// # Errors
    /// The first bad item, named.
    pub fn from_args<S: AsRef<str>>(
        addresses: &[S],
        gateways: &[S],
        dhcp: &[S],
    ) -> Result<HostConfig, HostConfigError> {
        let mut cfg = HostConfig::default();
        for a in addresses {
            cfg.addresses.push(a.as_ref().parse()?);
        }
        for g in gateways {
            cfg.gateways.push(g.as_ref().parse()?);
        }
        for d in dhcp {
            let d = d.as_ref();
            cfg.dhcp.push(if d.is_empty() {
                PortRef::default()
            } else {
                d.parse().unwrap_or_default()
            });
        }
        Ok(cfg)
    }

    /// Whether the stack owns anything (an address or a DHCP client).
    pub fn has_interfaces(&self) -> bool {
        !self.addresses.is_empty() || !self.dhcp.is_empty()
    }

    /// Resolves port references against the dataplane's port names and
    /// checks the whole configuration; returns one plan per interface, in
    /// port order.
    pub(crate) fn resolve(&self, names: &[String]) -> Result<Vec<IfacePlan>, HostConfigError> {
        if !(576..=9000).contains(&self.mtu) {
            return Err(HostConfigError::Invalid(format!(
                "mtu {} is not in 576..=9000",
                self.mtu
            )));
        }
        if !(16..=1 << 20).contains(&self.tx_frames) {
            return Err(HostConfigError::Invalid(format!(
                "tx_frames {} is not in 16..=1048576",
                self.tx_frames
            )));
        }
        if self.rx_budget == 0 {
            return Err(HostConfigError::Invalid(
                "rx_budget must be at least 1".into(),
            ));
        }
        if let Some(h) = &self.http {
            if h.port == 0 || h.max_connections == 0 || h.max_header_bytes < 64 {
                return Err(HostConfigError::Invalid(
                    "http: port, max_connections and max_header_bytes must be set".into(),
                ));
            }
        }
        let known = || names.join(", ");
        let find = |what: String, r: &PortRef| {
            r.resolve(names).ok_or_else(|| HostConfigError::NoSuchPort {
                what,
                port: r.to_string(),
                known: known(),
            })
        };
        let mut plans: Vec<IfacePlan> = Vec::new();
        fn plan(plans: &mut Vec<IfacePlan>, port: usize) -> &mut IfacePlan {
            let i = match plans.iter().position(|p| p.port == port) {
                Some(i) => i,
                None => {
                    plans.push(IfacePlan {
                        port,
                        mac: None,
                        addrs: Vec::new(),
                        gateways: Vec::new(),
                        dhcp: false,
                    });
                    plans.len() - 1
                }
            };
            &mut plans[i]
        }
        for a in &self.addresses {
            let port = find(format!("host address {}", a.cidr), &a.port)?;
            let p = plan(&mut plans, port);
            if p.addrs.iter().any(|c| c.addr == a.cidr.addr) {
                return Err(HostConfigError::BadAddress {
                    given: a.cidr.to_string(),
                    reason: "given twice".into(),
                });
            }
            p.addrs.push(a.cidr);
        }
        for d in &self.dhcp {
            let port = find("dhcp".into(), d)?;
            plan(&mut plans, port).dhcp = true;
        }
        for p in &plans {
            // Room for the static addresses, an IPv6 link-local and a lease.
            if p.addrs.len() > 6 {
                return Err(HostConfigError::Invalid(format!(
                    "port {}: at most 6 static addresses",
                    names[p.port]
                )));
            }
        }
        for g in &self.gateways {
            let port = match &g.port {
                Some(r) => find(format!("gateway {}", g.addr), r)?,
                None => plans
                    .iter()
                    .find(|p| p.addrs.iter().any(|c| c.contains(g.addr)))
                    .map(|p| p.port)
                    .ok_or_else(|| HostConfigError::BadGateway {
                        given: g.addr.to_string(),
                        reason: "no host address's network contains it (name a port with @PORT)"
                            .into(),
                    })?,
            };
            let p = plan(&mut plans, port);
            if p.gateways.iter().any(|x| x.is_ipv4() == g.addr.is_ipv4()) {
                return Err(HostConfigError::BadGateway {
                    given: g.addr.to_string(),
                    reason: "a second default gateway of the same family on one port".into(),
                });
            }
            p.gateways.push(g.addr);
        }
        for (r, mac) in &self.macs {
            let port = find(format!("MAC {mac}"), r)?;
            if !mac.is_unicast() {
                return Err(HostConfigError::BadMac {
                    given: mac.to_string(),
                    reason: "not a unicast address".into(),
                });
            }
            plan(&mut plans, port).mac = Some(*mac);
        }
        plans.sort_by_key(|p| p.port);
        Ok(plans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["ring:a".into(), "ring:b".into()]
    }

    #[test]
    fn addresses_parse_with_and_without_port() {
        let a: HostAddr = "10.0.0.1/24".parse().unwrap();
        assert_eq!(a.cidr.to_string(), "10.0.0.1/24");
        assert_eq!(a.port, PortRef::Index(0));
        let b: HostAddr = "fd00::1/64@1".parse().unwrap();
        assert_eq!(b.port, PortRef::Index(1));
        let c: HostAddr = "[fd00::2]/64@b".parse().unwrap();
        assert_eq!(c.cidr.addr.to_string(), "fd00::2");
        assert_eq!(c.port.resolve(&names()), Some(1));
        for (bad, why) in [
            ("10.0.0.1", "ADDR/PREFIX"),
            ("10.0.0.1/33", "longer than 32"),
            ("fd00::1/129", "longer than 128"),
            ("10.0.0/24", "not an IPv4"),
            ("10.0.0.1/x", "not a number"),
            ("0.0.0.0/0", "cannot be a host"),
            ("224.0.0.1/4", "cannot be a host"),
            ("10.0.0.1/24@", "empty port"),
        ] {
            let e = bad.parse::<HostAddr>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn cidr_contains() {
        let c: Cidr = "10.1.2.3/16".parse().unwrap();
        assert!(c.contains("10.1.200.1".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        let z: Cidr = "10.1.2.3/0".parse().unwrap();
        assert!(z.contains("1.1.1.1".parse().unwrap()));
        let v6: Cidr = "fd00::1/64".parse().unwrap();
        assert!(v6.contains("fd00::ffff".parse().unwrap()));
        assert!(!v6.contains("fd01::1".parse().unwrap()));
    }

    #[test]
    fn macs() {
        let m: Mac = "02:00:00:aa:bb:cc".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:00:aa:bb:cc");
        assert!("01:00:5e:00:00:01".parse::<Mac>().is_err());
        assert!("00:00:00:00:00:00".parse::<Mac>().is_err());
        assert!("02:00:00:aa:bb".parse::<Mac>().is_err());
        assert!("02:00:00:aa:bb:cc:dd".parse::<Mac>().is_err());
        assert!(Mac::derived(1000).is_unicast());
        assert_eq!(Mac::of_kernel_interface("../etc"), None);
    }

    #[test]
    fn resolve_groups_by_port_and_places_gateways() {
        let cfg = HostConfig::from_args(
            &["10.0.0.1/24", "fd00::1/64@0", "10.9.0.1/16@ring:b"],
            &["10.9.0.254", "fd00::fe"],
            &["b"],
        )
        .unwrap();
        let plans = cfg.resolve(&names()).unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].port, 0);
        assert_eq!(plans[0].addrs.len(), 2);
        assert_eq!(
            plans[0].gateways,
            vec!["fd00::fe".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            plans[1].gateways,
            vec!["10.9.0.254".parse::<IpAddr>().unwrap()]
        );
        assert!(plans[1].dhcp);
    }

    #[test]
    fn resolve_names_what_is_wrong() {
        let e = HostConfig::from_args(&["10.0.0.1/24@c"], &[], &[])
            .unwrap()
            .resolve(&names())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no port c") && e.contains("ring:a"), "{e}");
        let e = HostConfig::from_args(&["10.0.0.1/24"], &["192.168.1.1"], &[])
            .unwrap()
            .resolve(&names())
            .unwrap_err()
            .to_string();
        assert!(e.contains("192.168.1.1") && e.contains("@PORT"), "{e}");
        let e = HostConfig::from_args(&["10.0.0.1/24"], &["10.0.0.2", "10.0.0.3"], &[])
            .unwrap()
            .resolve(&names())
            .unwrap_err()
            .to_string();
        assert!(e.contains("second default gateway"), "{e}");
        let e = HostConfig::from_args(&["10.0.0.1/24", "10.0.0.1/16"], &[], &[])
            .unwrap()
            .resolve(&names())
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
    }
}
