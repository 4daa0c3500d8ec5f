//! The host stack without its thread: one smoltcp [`Interface`], device and
//! [`SocketSet`] per port that owns an address, polled by whoever holds the
//! [`Stack`]. [`HostStack`](super::HostStack) runs one on its own thread;
//! tests and the fuzzer drive one directly.
//!
//! Each interface has its own socket set. smoltcp sends a socket's traffic
//! through whichever interface polls it, so sharing one set between ports
//! could send a connection's segments out of the wrong port.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use sluice_drivers::{HeapPool, HEADROOM};
use smoltcp::iface::{Config as IfaceConfig, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::dhcpv4;
use smoltcp::time::{Duration as SmolDuration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Cidr, Ipv6Address};

use super::config::{HostConfig, IfacePlan, Mac};
use super::device::{FrameIo, HostDevice};
use super::http::{Handler, HttpServer};
use super::stats::{HostPortCounters, HostPortStats, HostStackStats, HttpCounters};
use super::HostError;

/// One port handed to a [`Stack`].
pub struct IoPort {
    /// Port name (`ring:a`, `afxdp:eth0`), for port references and stats.
    pub name: String,
    /// Interface index (used to derive a MAC when the port has none).
    pub ifindex: u32,
    /// Its queues.
    pub io: Box<dyn FrameIo>,
}

impl std::fmt::Debug for IoPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoPort")
            .field("name", &self.name)
            .field("ifindex", &self.ifindex)
            .finish()
    }
}

/// An interface: a port that owns addresses.
pub(crate) struct Iface {
    pub port: usize,
    pub iface: Interface,
    pub device: HostDevice,
    pub sockets: SocketSet<'static>,
    dhcp: Option<SocketHandle>,
    dhcp_addr: Option<Ipv4Cidr>,
}

/// A port without an interface: drained, its frames counted and dropped.
struct Unowned {
    io: Box<dyn FrameIo>,
    counters: Arc<HostPortCounters>,
}

/// What a bound socket occupies, to refuse a second bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Proto {
    Tcp,
    Udp,
}

/// The HTTP service: its servers (one per interface) and the handler.
pub(crate) struct HttpService {
    servers: Vec<(usize, HttpServer)>,
    handler: Box<dyn Handler>,
}

impl HttpService {
    /// Moves bytes between sockets and connection buffers (under the lock).
    pub(crate) fn exchange(&mut self, stack: &mut Stack, now: Instant) -> bool {
        let mut moved = false;
        for (i, s) in &mut self.servers {
            moved |= s.exchange(&mut stack.ifaces[*i].sockets, now);
        }
        moved
    }

    /// Whether a request may be ready.
    pub(crate) fn has_work(&self) -> bool {
        self.servers.iter().any(|(_, s)| s.has_work())
    }

    /// Answers complete requests (without the lock).
    pub(crate) fn serve(&mut self, host: &HostStackStats, now: Instant) -> bool {
        let mut served = false;
        for (_, s) in &mut self.servers {
            served |= s.serve(&mut *self.handler, host, now);
        }
        served
    }
}

/// A TCP listener's sockets: a backlog of listening sockets per interface.
pub(crate) struct ListenerState {
    pub port: u16,
    pub local: Option<IpAddr>,
    pub slots: Vec<(usize, SocketHandle)>,
    pub opts: super::sockets::TcpOptions,
}

/// A connection whose handle was dropped: closing, reaped when done.
pub(crate) struct Orphan {
    pub iface: usize,
    pub handle: SocketHandle,
    pub deadline: Instant,
    pub port: Option<u16>,
}

/// The host stack's state (see the module docs).
pub struct Stack {
    started: std::time::Instant,
    pub(crate) ifaces: Vec<Iface>,
    unowned: Vec<Unowned>,
    names: Vec<String>,
    macs: Vec<Option<Mac>>,
    counters: Vec<Arc<HostPortCounters>>,
    http_counters: Arc<HttpCounters>,
    pub(crate) http: Option<HttpService>,
    pool: &'static HeapPool,
    pub(crate) bound: HashSet<(usize, Proto, u16)>,
    pub(crate) next_ephemeral: u16,
    pub(crate) next_id: u64,
    pub(crate) listeners: std::collections::HashMap<u64, ListenerState>,
    pub(crate) udp: std::collections::HashMap<u64, (u16, Vec<(usize, SocketHandle)>)>,
    pub(crate) orphans: Vec<Orphan>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("ports", &self.names)
            .field("interfaces", &self.ifaces.len())
            .finish()
    }
}

/// The kernel interface behind a port name like `afxdp:eth0` or
/// `af_packet:eth0,queues=2`.
fn kernel_iface(name: &str) -> Option<&str> {
    let (driver, rest) = name.split_once(':')?;
    if !matches!(
        driver,
        "afxdp" | "af_xdp" | "af_packet" | "afpacket" | "xdp"
    ) {
        return None;
    }
    let iface = rest.split([',', '@', ':']).next()?;
    (!iface.is_empty()).then_some(iface)
}

/// The IPv6 link-local address made from a MAC (modified EUI-64).
fn link_local(mac: Mac) -> Ipv6Address {
    let m = mac.0;
    Ipv6Address::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([m[0] ^ 2, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    )
}

fn default_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32) ^ 0x5a17_c0de_0000_0000
}

impl Stack {
    /// A stack over `ports` (every port of the dataplane, in order), owning
    /// what `config` gives it, serving HTTP with `handler` when
    /// `config.http` is set.
    ///
    /// # Errors
    /// [`HostError`] naming the bad configuration item, or the pool that
    /// could not be made.
    pub fn new(
        config: &HostConfig,
        ports: Vec<IoPort>,
        handler: Option<Box<dyn Handler>>,
    ) -> Result<Stack, HostError> {
        let names: Vec<String> = ports.iter().map(|p| p.name.clone()).collect();
        let plans = config.resolve(&names)?;
        if config.http.is_some() && handler.is_none() {
            return Err(HostError::Config(super::HostConfigError::Invalid(
                "http is configured but no handler was given".into(),
            )));
        }
        let frame_size = (HEADROOM + config.mtu + 14).next_multiple_of(64);
        let pool = HeapPool::new("host-stack", config.tx_frames, frame_size)?;
        let seed = config.seed.unwrap_or_else(default_seed);
        let started = std::time::Instant::now();
        let now = Instant::from_micros(0);
        let counters: Vec<Arc<HostPortCounters>> = ports.iter().map(|_| Arc::default()).collect();
        let http_counters = Arc::new(HttpCounters::default());
        let mut stack = Stack {
            started,
            ifaces: Vec::new(),
            unowned: Vec::new(),
            names,
            macs: vec![None; ports.len()],
            counters,
            http_counters,
            http: None,
            pool,
            bound: HashSet::new(),
            next_ephemeral: 49152 + (seed % 16384) as u16,
            next_id: 1,
            listeners: Default::default(),
            udp: Default::default(),
            orphans: Vec::new(),
        };
        let mut servers = Vec::new();
        for (index, port) in ports.into_iter().enumerate() {
            let counters = stack.counters[index].clone();
            let Some(plan) = plans.iter().find(|p| p.port == index) else {
                stack.unowned.push(Unowned {
                    io: port.io,
                    counters,
                });
                continue;
            };
            let mac = plan
                .mac
                .or_else(|| kernel_iface(&port.name).and_then(Mac::of_kernel_interface))
                .unwrap_or_else(|| Mac::derived(port.ifindex));
            stack.macs[index] = Some(mac);
            let iface_index = stack.ifaces.len();
            let mut iface = make_iface(plan, mac, port.io, pool, config, seed, counters, now);
            if let Some(h) = &config.http {
                servers.push((
                    iface_index,
                    HttpServer::new(
                        h.clone(),
                        &mut iface.sockets,
                        stack.http_counters.clone(),
                        now,
                    ),
                ));
                stack.bound.insert((iface_index, Proto::Tcp, h.port));
            }
            stack.ifaces.push(iface);
        }
        if let Some(handler) = handler {
            if !servers.is_empty() {
                stack.http = Some(HttpService { servers, handler });
            }
        }
        Ok(stack)
    }

    /// Time since the stack was made, in smoltcp's terms.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.started.elapsed().as_micros().min(i64::MAX as u128) as i64)
    }

    /// Receives, answers and sends what there is (a bounded amount: at
    /// most the configured budget of frames per port), serves HTTP
    /// requests, and returns whether anything happened.
    pub fn poll(&mut self) -> bool {
        let now = self.now();
        let mut work = self.poll_io(now);
        if let Some(mut http) = self.http.take() {
            work |= http.exchange(self, now);
            if http.has_work() {
                let stats = self.stats();
                if http.serve(&stats, now) {
                    work = true;
                    http.exchange(self, now);
                    self.poll_io(now);
                }
            }
            self.http = Some(http);
        }
        work
    }

    /// The network part of [`Stack::poll`]: every interface, DHCP, the
    /// ports without an interface, orphaned connections.
    pub(crate) fn poll_io(&mut self, now: Instant) -> bool {
        let mut work = false;
        for i in &mut self.ifaces {
            i.device.refill();
            let before = i.device.activity();
            if i.iface.poll(now, &mut i.device, &mut i.sockets) == PollResult::SocketStateChanged {
                work = true;
            }
            i.device.flush();
            work |= i.device.activity() != before || i.device.exhausted();
            work |= i.poll_dhcp();
        }
        for u in &mut self.unowned {
            work |= HostDevice::drain_unowned(&mut *u.io, &u.counters, 1024) > 0;
        }
        self.reap_orphans(now);
        work
    }

    /// How long until smoltcp wants to be polled again (a retransmission,
    /// a delayed ACK), if it has timers running.
    pub fn poll_delay(&mut self) -> Option<std::time::Duration> {
        let now = self.now();
        self.ifaces
            .iter_mut()
            .filter_map(|i| i.iface.poll_delay(now, &i.sockets))
            .min()
            .map(|d| std::time::Duration::from_micros(d.total_micros()))
    }

    fn reap_orphans(&mut self, now: Instant) {
        let (ifaces, bound) = (&mut self.ifaces, &mut self.bound);
        self.orphans.retain(|o| {
            let Some(i) = ifaces.get_mut(o.iface) else {
                return false;
            };
            let s = i
                .sockets
                .get_mut::<smoltcp::socket::tcp::Socket<'_>>(o.handle);
            let done = !s.is_open();
            if done || now >= o.deadline + SmolDuration::from_secs(1) {
                i.sockets.remove(o.handle);
                if let Some(p) = o.port {
                    bound.remove(&(o.iface, Proto::Tcp, p));
                }
                return false;
            }
            if now >= o.deadline {
                // Lingered too long: reset; removed on a later poll, once
                // the RST went out.
                s.abort();
            }
            true
        });
    }

    /// The interface that reaches `dst`: one whose network contains it,
    /// else one with a default route of its family.
    pub(crate) fn route(&self, dst: IpAddr) -> Option<usize> {
        let a = IpAddress::from(dst);
        self.ifaces
            .iter()
            .position(|i| i.iface.ip_addrs().iter().any(|c| c.contains_addr(&a)))
            .or_else(|| {
                self.ifaces.iter().position(|i| match dst {
                    IpAddr::V4(_) => i.iface.routes().get_default_ipv4_route().is_some(),
                    IpAddr::V6(_) => i.iface.routes().get_default_ipv6_route().is_some(),
                })
            })
    }

    /// The interface that owns `ip`.
    pub(crate) fn owner(&self, ip: IpAddr) -> Option<usize> {
        let a = IpAddress::from(ip);
        self.ifaces.iter().position(|i| i.iface.has_ip_addr(a))
    }

    /// Every counter and address.
    pub fn stats(&self) -> HostStackStats {
        let ports = self
            .names
            .iter()
            .enumerate()
            .map(|(p, name)| {
                let iface = self.ifaces.iter().find(|i| i.port == p);
                HostPortStats {
                    port: p,
                    name: name.clone(),
                    mac: self.macs[p].map(|m| m.to_string()).unwrap_or_default(),
                    addresses: iface
                        .map(|i| i.iface.ip_addrs().iter().map(|c| c.to_string()).collect())
                        .unwrap_or_default(),
                    counters: self.counters[p].snapshot(),
                }
            })
            .collect();
        HostStackStats {
            ports,
            http: self.http_counters.snapshot(),
        }
    }

    /// The host stack's transmit pool.
    pub fn pool(&self) -> &'static HeapPool {
        self.pool
    }

    /// The MAC address the stack uses on `port` (none when the port has no
    /// interface).
    pub fn mac(&self, port: usize) -> Option<Mac> {
        self.macs.get(port).copied().flatten()
    }
}

#[allow(clippy::too_many_arguments)]
fn make_iface(
    plan: &IfacePlan,
    mac: Mac,
    io: Box<dyn FrameIo>,
    pool: &'static HeapPool,
    config: &HostConfig,
    seed: u64,
    counters: Arc<HostPortCounters>,
    now: Instant,
) -> Iface {
    let eth = EthernetAddress(mac.0);
    let mut device = HostDevice::new(io, pool, eth, config.mtu, config.rx_budget, counters);
    let mut cfg = IfaceConfig::new(HardwareAddress::Ethernet(eth));
    cfg.random_seed = seed ^ (plan.port as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut iface = Interface::new(cfg, &mut device, now);
    let has_v6 = plan.addrs.iter().any(|c| c.addr.is_ipv6());
    iface.update_ip_addrs(|addrs| {
        for c in &plan.addrs {
            // Cannot overflow: `resolve` allows at most 6 static addresses
            // and the table holds 8.
            let _ = addrs.push(IpCidr::new(c.addr.into(), c.prefix));
        }
        if has_v6 {
            let _ = addrs.push(IpCidr::new(link_local(mac).into(), 64));
        }
    });
    for gw in &plan.gateways {
        // A table of 4 routes holds one default per family.
        let _ = match gw {
            IpAddr::V4(g) => iface.routes_mut().add_default_ipv4_route(*g).map(|_| ()),
            IpAddr::V6(g) => iface.routes_mut().add_default_ipv6_route(*g).map(|_| ()),
        };
    }
    let mut sockets = SocketSet::new(Vec::new());
    let dhcp = plan.dhcp.then(|| sockets.add(dhcpv4::Socket::new()));
    Iface {
        port: plan.port,
        iface,
        device,
        sockets,
        dhcp,
        dhcp_addr: None,
    }
}

impl Iface {
    /// Applies what the DHCP client learned; true when something changed.
    fn poll_dhcp(&mut self) -> bool {
        let Some(h) = self.dhcp else { return false };
        let event = self.sockets.get_mut::<dhcpv4::Socket<'_>>(h).poll();
        let (iface, current) = (&mut self.iface, &mut self.dhcp_addr);
        match event {
            None => false,
            Some(dhcpv4::Event::Configured(cfg)) => {
                let new = cfg.address;
                let old = current.replace(new);
                iface.update_ip_addrs(|addrs| {
                    if let Some(old) = old {
                        addrs.retain(|a| *a != IpCidr::Ipv4(old));
                    }
                    let _ = addrs.push(IpCidr::Ipv4(new));
                });
                match cfg.router {
                    Some(r) => {
                        let _ = iface.routes_mut().add_default_ipv4_route(r);
                    }
                    None => {
                        iface.routes_mut().remove_default_ipv4_route();
                    }
                }
                tracing::info!(address = %new, router = ?cfg.router, "host stack: DHCP lease");
                true
            }
            Some(dhcpv4::Event::Deconfigured) => {
                if let Some(old) = current.take() {
                    iface.update_ip_addrs(|addrs| addrs.retain(|a| *a != IpCidr::Ipv4(old)));
                    iface.routes_mut().remove_default_ipv4_route();
                    tracing::info!(address = %old, "host stack: DHCP lease lost");
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_interface_names() {
        assert_eq!(kernel_iface("afxdp:eth0"), Some("eth0"));
        assert_eq!(kernel_iface("afxdp:veth1,queues=2"), Some("veth1"));
        assert_eq!(kernel_iface("ring:a"), None);
        assert_eq!(kernel_iface("afxdp:"), None);
    }

    #[test]
    fn link_local_is_eui64() {
        let ll = link_local(Mac([0x02, 0x53, 0x4c, 0x00, 0x03, 0xe8]));
        assert_eq!(ll.to_string(), "fe80::53:4cff:fe00:3e8");
    }
}
