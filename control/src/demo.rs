//! `sluice demo`: Sluice as a router between two network namespaces, with
//! real traffic, on a machine that has no spare NIC.
//!
//! ```text
//!  namespace sluice-demo-a            host (Sluice)              namespace sluice-demo-b
//!  eth0 10.200.1.2/24  ── veth ──  sldemo-a ══ AF_XDP ══ sldemo-b  ── veth ──  eth0 10.200.2.2/24
//!  default via 10.200.1.1              (XDP program demo.o)             default via 10.200.2.1
//! ```
//!
//! The demo creates the two namespaces and veth pairs, opens the two host
//! ends as AF_XDP ports (one shared UMEM), and runs the bundled program
//! (`control/progs/demo.c`) on both: it routes by destination /24 — MAC
//! rewrite, TTL decrement, `bpf_redirect_map` out of the other port — and
//! drops UDP to a blocked port (9999). ICMP is forwarded like the rest; the
//! program has a switch to pass it to Sluice's host stack instead. The
//! namespaces reach their gateway through permanent neighbour entries, so
//! no ARP is needed.
//!
//! Traffic comes from ordinary tools in the namespaces: `ping` from A to B,
//! and a UDP sender (this binary, run in namespace A by `ip netns exec`)
//! that alternates between an allowed port and the blocked one, with a
//! receiver in B that counts what arrives on each. The live status line is
//! `sluice run`'s; at the end come the dataplane's table, the program's own
//! counters, the driver's per-queue counters and what the tools saw.
//!
//! Only addresses inside the two namespaces are used. Everything the demo
//! creates is removed when it ends, when it fails, and on Ctrl-C; leftovers
//! of an earlier demo that was killed are removed before it starts.

use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sluice_bpf::object::{LoadOptions, LoadedObject};
use sluice_dataplane::{Dataplane, Hook, IdlePolicy};

use crate::run::{print_table, status_line};
use sluice_drivers::spec::{self, PortSpec};
use sluice_drivers::Direction;

/// The bundled program (built by `control/progs/build.sh`).
const DEMO_OBJECT: &[u8] = include_bytes!("../progs/demo.o");

const NS: [&str; 2] = ["sluice-demo-a", "sluice-demo-b"];
const HOST_IF: [&str; 2] = ["sldemo-a", "sldemo-b"];
const NS_ADDR: [&str; 2] = ["10.200.1.2", "10.200.2.2"];
const GATEWAY: [&str; 2] = ["10.200.1.1", "10.200.2.1"];
const NET: [[u8; 4]; 2] = [[10, 200, 1, 0], [10, 200, 2, 0]];
const UDP_OPEN: u16 = 7777;
const UDP_BLOCKED: u16 = 9999;
const STAT_NAMES: [&str; 6] = [
    "forwarded",
    "blocked",
    "to_host",
    "no_route",
    "ttl_exceeded",
    "not_ipv4",
];

/// Arguments of `sluice demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Seconds of traffic.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Internal: a traffic helper run inside a namespace (`udp-send`,
    /// `udp-recv`).
    #[arg(long, hide = true)]
    pub helper: Option<String>,
    /// Internal: destination address of `udp-send`.
    #[arg(long, hide = true)]
    pub to: Option<Ipv4Addr>,
    /// Internal: UDP ports, comma-separated.
    #[arg(long, hide = true)]
    pub ports: Option<String>,
    /// Internal: datagrams to send.
    #[arg(long, hide = true, default_value_t = 1000)]
    pub count: u64,
    /// Internal: seconds to listen / to spread the sending over.
    #[arg(long, hide = true, default_value_t = 5.0)]
    pub secs: f64,
}

/// `sluice demo`.
///
/// # Errors
/// Not root, a tool missing, or a step that failed (named).
pub fn run(a: DemoArgs) -> Result<()> {
    match a.helper.as_deref() {
        Some("udp-send") => return udp_send(&a),
        Some("udp-recv") => return udp_recv(&a),
        Some("tx-csum-off") => {
            // Inside a namespace: the veth's TX checksum offload off (see
            // `build_side`).
            return sluice_drivers::afxdp::sys::set_tx_checksum_offload("eth0", false)
                .context("turning off TX checksum offload on eth0");
        }
        Some(other) => bail!("unknown demo helper {other:?}"),
        None => {}
    }
    if !is_root() {
        bail!(
            "sluice demo must run as root: it creates network namespaces and veth pairs \
             and attaches XDP programs (try: sudo sluice demo)"
        );
    }
    if !tool_works("ip", &["-V"]) {
        bail!("sluice demo needs ip(8) from iproute2 (Debian: apt-get install iproute2)");
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed));
    }
    let mut world = World::default();
    let result = demo(&a, &mut world, &stop);
    let removed = world.tear_down();
    println!("\ncleaned up: removed {removed}");
    result
}

fn demo(a: &DemoArgs, world: &mut World, stop: &AtomicBool) -> Result<()> {
    let duration = Duration::from_secs_f64(a.duration.clamp(3.0, 600.0));
    world.remove_leftovers();
    println!(
        "sluice demo: two namespaces, two veth pairs, Sluice routing between them over AF_XDP"
    );
    let mut host_mac = [[0u8; 6]; 2];
    let mut ns_mac = [[0u8; 6]; 2];
    for i in 0..2 {
        world.build_side(i)?;
        host_mac[i] = read_mac(&std::fs::read_to_string(format!(
            "/sys/class/net/{}/address",
            HOST_IF[i]
        ))?)?;
        let out = cmd(&[
            "ip",
            "netns",
            "exec",
            NS[i],
            "cat",
            "/sys/class/net/eth0/address",
        ])?;
        ns_mac[i] = read_mac(&out)?;
        cmd(&[
            "ip",
            "-n",
            NS[i],
            "neigh",
            "add",
            GATEWAY[i],
            "lladdr",
            &mac_text(host_mac[i]),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])?;
        println!(
            "  {}: eth0 {}/24 ({}), gateway {} = {} ({})",
            NS[i],
            NS_ADDR[i],
            mac_text(ns_mac[i]),
            GATEWAY[i],
            HOST_IF[i],
            mac_text(host_mac[i])
        );
    }

    // The program and its maps.
    let obj = LoadedObject::from_elf(
        DEMO_OBJECT,
        &LoadOptions {
            ncpus: 1,
            ..Default::default()
        },
    )
    .context("loading the bundled demo.o")?;
    let prog = obj
        .program("xdp_demo_router")
        .context("demo.o has no xdp_demo_router")?
        .program
        .clone();
    let map = |name: &str| {
        obj.map(name)
            .cloned()
            .with_context(|| format!("demo.o has no map {name}"))
    };
    let (tx_ports, routes, blocked, stats) = (
        map("tx_ports")?,
        map("routes")?,
        map("blocked_udp")?,
        map("stats")?,
    );

    // The ports: both host ends, opened together (one shared UMEM).
    let specs: Vec<PortSpec> = HOST_IF
        .iter()
        .map(|i| PortSpec::parse(&format!("afxdp:{i}")))
        .collect::<Result<_, _>>()?;
    let ports = spec::open(&specs)?;
    for (i, p) in ports.iter().enumerate() {
        let info = p.info();
        tx_ports
            .ops()
            .update(&(i as u32).to_ne_bytes(), &info.ifindex.to_ne_bytes(), 0)
            .map_err(|e| anyhow::anyhow!("tx_ports[{i}]: {e}"))?;
        let mut route = Vec::with_capacity(16);
        route.extend_from_slice(&(i as u32).to_ne_bytes());
        route.extend_from_slice(&ns_mac[i]);
        route.extend_from_slice(&host_mac[i]);
        routes
            .ops()
            .update(&NET[i], &route, 0)
            .map_err(|e| anyhow::anyhow!("routes: {e}"))?;
        println!(
            "  port {i}: {} (ifindex {}, {} queue(s), {})",
            info.name, info.ifindex, info.rx_queues, info.mode
        );
    }
    blocked
        .ops()
        .update(&UDP_BLOCKED.to_ne_bytes(), &[1], 0)
        .map_err(|e| anyhow::anyhow!("blocked_udp: {e}"))?;
    // Sluice's host stack owns the two gateway addresses: traffic for them
    // is passed to it (and ping answered by it).
    let host_addrs = map("host_addrs")?;
    for gw in GATEWAY {
        let ip: std::net::Ipv4Addr = gw.parse().context("gateway address")?;
        host_addrs
            .ops()
            .update(&ip.octets(), &[1], 0)
            .map_err(|e| anyhow::anyhow!("host_addrs: {e}"))?;
    }
    println!(
        "  program: demo.o:xdp_demo_router on both ports — route 10.200.1.0/24 <-> 10.200.2.0/24, \
         drop UDP port {UDP_BLOCKED}"
    );
    let mut builder = Dataplane::builder()
        .idle(IdlePolicy::Adaptive)
        .host_stack(true)
        .cores(vec![*sluice_dataplane::allowed_cores()
            .last()
            .unwrap_or(&0)]);
    for (i, p) in ports.iter().enumerate() {
        builder = builder.port(p.clone()).program(
            i,
            Hook::Ingress,
            prog.clone(),
            "demo.o:xdp_demo_router",
        );
    }
    let dp = builder.start()?;
    let mut host_cfg = sluice_dataplane::HostConfig::default();
    for (i, gw) in GATEWAY.iter().enumerate() {
        host_cfg = host_cfg.with_address(format!("{gw}/24@{i}").parse()?);
    }
    let host = sluice_dataplane::HostStack::start(dp.host_ports(), host_cfg, None)?;
    println!(
        "  host stack: {} on port 0 and {} on port 1 (smoltcp, answers ARP and ping)",
        GATEWAY[0], GATEWAY[1]
    );
    wait_carrier();

    // Traffic.
    let exe = std::env::current_exe().context("finding this program")?;
    let exe = exe.to_string_lossy().into_owned();
    let secs = duration.as_secs_f64();
    let ports_arg = format!("{UDP_OPEN},{UDP_BLOCKED}");
    let recv_secs = format!("{:.1}", secs + 1.0);
    world.spawn(
        "udp receiver (B)",
        &[
            "ip", "netns", "exec", NS[1], &exe, "demo", "--helper", "udp-recv", "--ports",
            &ports_arg, "--secs", &recv_secs,
        ],
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let udp_count = ((secs - 1.0).max(1.0) * 400.0) as u64;
    let send_secs = format!("{:.1}", (secs - 1.0).max(1.0));
    world.spawn(
        "udp sender (A)",
        &[
            "ip",
            "netns",
            "exec",
            NS[0],
            &exe,
            "demo",
            "--helper",
            "udp-send",
            "--to",
            NS_ADDR[1],
            "--ports",
            &ports_arg,
            "--count",
            &udp_count.to_string(),
            "--secs",
            &send_secs,
        ],
    )?;
    let have_ping = tool_works("ping", &["-V"]);
    let pings = ((secs - 1.0).max(1.0) * 5.0) as u64;
    if have_ping {
        world.spawn(
            "ping A -> B",
            &[
                "ip",
                "netns",
                "exec",
                NS[0],
                "ping",
                "-c",
                &pings.to_string(),
                "-i",
                "0.2",
                "-W",
                "1",
                NS_ADDR[1],
            ],
        )?;
        world.spawn(
            "ping A -> Sluice's host stack",
            &[
                "ip",
                "netns",
                "exec",
                NS[0],
                "ping",
                "-c",
                &pings.to_string(),
                "-i",
                "0.2",
                "-W",
                "1",
                GATEWAY[0],
            ],
        )?;
    } else {
        println!("  (ping not found: Debian's iputils-ping; the ICMP part is skipped)");
    }
    println!(
        "traffic for {secs:.0} s: ping {} -> {} ({pings} echoes), UDP {} -> {} ports {UDP_OPEN} (allowed) and {UDP_BLOCKED} (blocked); Ctrl-C stops\n",
        NS_ADDR[0], NS_ADDR[1], NS_ADDR[0], NS_ADDR[1]
    );

    let started = Instant::now();
    let mut last = dp.stats();
    let mut last_t = Instant::now();
    while started.elapsed() < duration + Duration::from_millis(500) && !stop.load(Ordering::Relaxed)
    {
        std::thread::sleep(Duration::from_millis(100));
        if last_t.elapsed() >= Duration::from_secs(1) {
            let now = dp.stats();
            eprintln!(
                "{}",
                status_line(&last, &now, last_t.elapsed().as_secs_f64())
            );
            last = now;
            last_t = Instant::now();
        }
    }
    let interrupted = stop.load(Ordering::Relaxed);
    let outputs = world.collect(Duration::from_secs(3));
    let host_stats = host.stop();
    let final_stats = dp.stop();
    println!();
    print_table(&final_stats);

    let h = host_stats.total();
    println!(
        "\nhost stack (smoltcp, the gateway addresses): received {} frames, answered {} (malformed {}, bad checksum {})",
        h.rx_frames, h.tx_frames, h.rx_malformed, h.rx_bad_checksum
    );
    println!("\nprogram counters (demo.o stats map):");
    let mut counters = Vec::new();
    for (k, name) in STAT_NAMES.iter().enumerate() {
        let v = stats
            .lookup_vec(&(k as u32).to_ne_bytes())
            .map(|b| {
                b.chunks(8)
                    .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
                    .sum::<u64>()
            })
            .unwrap_or(0);
        counters.push(format!("{name}={v}"));
    }
    println!("  {}", counters.join(" "));
    println!("driver queues (AF_XDP, kernel drop reasons folded in):");
    for p in &ports {
        for q in p.queue_stats() {
            let dir = if q.direction == Direction::Rx {
                "rx"
            } else {
                "tx"
            };
            let drops: Vec<String> = sluice_drivers::DropReason::ALL
                .iter()
                .filter(|r| q.stats.dropped(**r) > 0)
                .map(|r| format!("{}={}", r.name(), q.stats.dropped(*r)))
                .collect();
            println!(
                "  {} {dir}{}: {} packets, {} bytes{}",
                p.info().name,
                q.queue,
                q.stats.packets,
                q.stats.bytes,
                if drops.is_empty() {
                    String::new()
                } else {
                    format!(", drops {}", drops.join(" "))
                }
            );
        }
    }
    println!("what the tools saw:");
    for (label, text) in &outputs {
        for line in text
            .lines()
            .filter(|l| l.contains("transmitted") || l.contains("rtt") || l.starts_with("udp-"))
        {
            println!("  {label}: {line}");
        }
    }
    if interrupted {
        println!("(interrupted)");
    }
    Ok(())
}

/// Everything the demo created, removed in reverse on `tear_down`.
#[derive(Default)]
struct World {
    namespaces: Vec<&'static str>,
    links: Vec<&'static str>,
    children: Vec<(String, Child)>,
}

impl World {
    fn remove_leftovers(&self) {
        let mut found = false;
        for i in 0..2 {
            if Path::new(&format!("/sys/class/net/{}", HOST_IF[i])).exists() {
                found = true;
                let _ = cmd(&["ip", "link", "del", HOST_IF[i]]);
            }
            if Path::new(&format!("/var/run/netns/{}", NS[i])).exists() {
                found = true;
                let _ = cmd(&["ip", "netns", "del", NS[i]]);
            }
        }
        if found {
            println!("removed the leftovers of an earlier demo");
        }
    }

    fn build_side(&mut self, i: usize) -> Result<()> {
        cmd(&["ip", "netns", "add", NS[i]])?;
        self.namespaces.push(NS[i]);
        cmd(&["ip", "-n", NS[i], "link", "set", "lo", "up"])?;
        cmd(&[
            "ip", "link", "add", HOST_IF[i], "type", "veth", "peer", "name", "eth0", "netns", NS[i],
        ])?;
        self.links.push(HOST_IF[i]);
        // IPv6 off on the veths: no router solicitations in the counts.
        let _ = cmd(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=1", HOST_IF[i]),
        ]);
        let _ = cmd(&[
            "ip",
            "netns",
            "exec",
            NS[i],
            "sysctl",
            "-qw",
            "net.ipv6.conf.eth0.disable_ipv6=1",
        ]);
        cmd(&["ip", "link", "set", HOST_IF[i], "up"])?;
        cmd(&["ip", "-n", NS[i], "link", "set", "eth0", "up"])?;
        // The namespaces' stacks must finish their own UDP checksums: with
        // TX checksum offload on, a veth leaves them half-done for the
        // "hardware", XDP forwards the bytes as they are, and the other
        // namespace drops the datagrams as corrupt. (`ethtool -K eth0 tx
        // off`, without needing ethtool.)
        let exe = std::env::current_exe().context("finding this program")?;
        cmd(&[
            "ip",
            "netns",
            "exec",
            NS[i],
            &exe.to_string_lossy(),
            "demo",
            "--helper",
            "tx-csum-off",
        ])?;
        cmd(&[
            "ip",
            "-n",
            NS[i],
            "addr",
            "add",
            &format!("{}/24", NS_ADDR[i]),
            "dev",
            "eth0",
        ])?;
        cmd(&[
            "ip", "-n", NS[i], "route", "add", "default", "via", GATEWAY[i], "dev", "eth0",
            "onlink",
        ])?;
        Ok(())
    }

    fn spawn(&mut self, label: &str, args: &[&str]) -> Result<()> {
        let child = Command::new(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {label}: {}", args.join(" ")))?;
        self.children.push((label.to_string(), child));
        Ok(())
    }

    /// Waits up to `grace` for the traffic tools, stops the rest, and
    /// returns each one's output.
    fn collect(&mut self, grace: Duration) -> Vec<(String, String)> {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline
            && self
                .children
                .iter_mut()
                .any(|(_, c)| matches!(c.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.children
            .drain(..)
            .map(|(label, mut c)| {
                let _ = c.kill();
                let out = c.wait_with_output().ok();
                let text = out
                    .map(|o| {
                        format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        )
                    })
                    .unwrap_or_default();
                (label, text)
            })
            .collect()
    }

    /// Removes everything; returns what, for the report.
    fn tear_down(&mut self) -> String {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        let mut removed = Vec::new();
        for l in self.links.drain(..).rev() {
            if cmd(&["ip", "link", "del", l]).is_ok() {
                removed.push(format!("veth {l}"));
            }
        }
        for n in self.namespaces.drain(..).rev() {
            if cmd(&["ip", "netns", "del", n]).is_ok() {
                removed.push(format!("namespace {n}"));
            }
        }
        if removed.is_empty() {
            "nothing (nothing was created)".into()
        } else {
            removed.join(", ")
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !self.links.is_empty() || !self.namespaces.is_empty() || !self.children.is_empty() {
            self.tear_down();
        }
    }
}

/// Runs a command; its stdout, or an error with its stderr.
fn cmd(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tool_works(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Effective uid 0, from `/proc/self/status`.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Waits (briefly) until both veth host ends report carrier.
fn wait_carrier() {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let up = HOST_IF.iter().all(|i| {
            std::fs::read_to_string(format!("/sys/class/net/{i}/operstate"))
                .is_ok_and(|s| s.trim() == "up")
        });
        if up {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_mac(text: &str) -> Result<[u8; 6]> {
    let mut m = [0u8; 6];
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() != 6 {
        bail!("not a MAC address: {text:?}");
    }
    for (o, p) in m.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).with_context(|| format!("not a MAC address: {text:?}"))?;
    }
    Ok(m)
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_ports(a: &DemoArgs) -> Result<Vec<u16>> {
    a.ports
        .as_deref()
        .context("--ports is required")?
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<u16>()
                .with_context(|| format!("port {p:?}"))
        })
        .collect()
}

/// Helper, inside namespace A: sends `count` datagrams spread over `secs`,
/// alternating between the ports.
fn udp_send(a: &DemoArgs) -> Result<()> {
    let to = a.to.context("--to is required")?;
    let ports = parse_ports(a)?;
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    let gap = Duration::from_secs_f64(a.secs.max(0.1) / a.count.max(1) as f64);
    let mut sent = vec![0u64; ports.len()];
    let started = Instant::now();
    for i in 0..a.count {
        let k = (i as usize) % ports.len();
        let msg = format!("sluice demo datagram {i}");
        if sock.send_to(msg.as_bytes(), (to, ports[k])).is_ok() {
            sent[k] += 1;
        }
        let due = gap * (i as u32 + 1);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let parts: Vec<String> = ports
        .iter()
        .zip(&sent)
        .map(|(p, n)| format!("{p}={n}"))
        .collect();
    println!("udp-send sent {}", parts.join(" "));
    std::io::stdout().flush()?;
    Ok(())
}

/// Helper, inside namespace B: counts datagrams per port for `secs`.
fn udp_recv(a: &DemoArgs) -> Result<()> {
    let ports = parse_ports(a)?;
    let socks: Vec<UdpSocket> = ports
        .iter()
        .map(|p| {
            let s = UdpSocket::bind(("0.0.0.0", *p))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<Result<_>>()?;
    let mut got = vec![0u64; ports.len()];
    let mut buf = [0u8; 2048];
    let end = Instant::now() + Duration::from_secs_f64(a.secs.max(0.1));
    while Instant::now() < end {
        let mut any = false;
        for (k, s) in socks.iter().enumerate() {
            while s.recv_from(&mut buf).is_ok() {
                got[k] += 1;
                any = true;
            }
        }
        if !any {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let parts: Vec<String> = ports
        .iter()
        .zip(&got)
        .map(|(p, n)| format!("{p}={n}"))
        .collect();
    println!("udp-recv received {}", parts.join(" "));
    std::io::stdout().flush()?;
    Ok(())
}
