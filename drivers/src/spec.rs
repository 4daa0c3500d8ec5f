//! Port specifications as written on the command line and in the config
//! file, and [`open`], which builds the ports they name.
//!
//! ```text
//! ring:NAME[,peer=OTHER][,queues=N][,size=N]
//! null[:NAME][,size=N][,queues=N][,limit=N]      also null:size=N,...
//! pcap:[in=FILE][,out=FILE][,loop=N|forever]     at least one of in, out
//! afxdp:IFACE[:QUEUES][,xdp=auto|native|generic][,bind=auto|zerocopy|copy]
//!       [,ring=N][,frames=N][,frame_size=2048|4096][,umem=shared|own]
//! dpdk:DEVARGS[,queues=N][,rxd=N][,txd=N][,mbufs=N]
//! ```
//!
//! `QUEUES` of an `afxdp` port is a count `N` (queues `0..N`) or a range
//! `A-B`; without it the port takes every queue of the interface. `frames`
//! is UMEM frames per queue. AF_XDP ports opened by one [`open`] call share
//! one UMEM unless they say `umem=own` (see [`crate::afxdp`]).
//!
//! `DEVARGS` of a `dpdk` port are DPDK's own (`net_null0,size=64`,
//! `net_af_packet0,iface=veth0`, a PCI address): Sluice takes out the keys
//! it knows (`queues`, `rxd`, `txd`, `mbufs`) and passes the other items,
//! in order, to `rte_dev_probe`; a PMD key of the same name as Sluice's is
//! written `dev.KEY=VALUE` (see [`crate::dpdk`]).
//!
//! A specification is `DRIVER[:ARGS]`; `ARGS` is a comma-separated list of
//! `KEY=VALUE` pairs, optionally led by a bare `NAME`. Values cannot hold
//! commas (so neither can file names given here). Every error names the
//! whole specification and the key or value at fault, for example
//! `port spec "null:size=abc": size: invalid number "abc"`.
//!
//! Adding a driver is adding a [`PortSpec`] variant and one arm each in
//! [`PortSpec::parse`], `Display` and [`open`]; the tokenizer, the number
//! and range checks and the error shapes are shared.
//!
//! ```
//! use sluice_drivers::spec::{open, PortSpec};
//!
//! let specs: Vec<PortSpec> = ["ring:a,peer=b,queues=2", "ring:b", "null:size=128,limit=10"]
//!     .iter()
//!     .map(|s| s.parse())
//!     .collect::<Result<_, _>>()?;
//! let ports = open(&specs)?;
//! assert_eq!(ports[1].info().name, "ring:b");
//! assert_eq!(ports[1].info().rx_queues, 2);
//!
//! let e = PortSpec::parse("null:size=abc").unwrap_err();
//! assert_eq!(e.to_string(), r#"port spec "null:size=abc": size: invalid number "abc""#);
//! # Ok::<(), sluice_drivers::PortError>(())
//! ```
//!
//! # Rings
//!
//! `ring:a,peer=b` and `ring:b` (or `ring:b,peer=a`) are two ports back to
//! back ([`RingPort::pair`]): naming the peer on one side is enough, and
//! `queues`/`size` given on either side apply to both (given on both, they
//! must agree). A ring that nobody pairs with, or that names itself as its
//! peer, is a loopback ([`RingPort::loopback`]): what it transmits on queue
//! `q` it receives on queue `q`, as DPDK's `net_ring` does with one ring.
//! An endpoint for tests comes from [`RingPort::with_endpoint`] directly;
//! specifications describe what a deployed dataplane can run.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

#[cfg(feature = "afxdp")]
use crate::afxdp::{AfXdpConfig, AfXdpPort, BindMode, Queues, XdpMode};
#[cfg(feature = "dpdk")]
use crate::dpdk::{DpdkConfig, DpdkPort};
use crate::null::{NullConfig, NullPort, DEFAULT_SIZE, MAX_SIZE};
use crate::pcap::{Loops, PcapConfig, PcapPort};
use crate::ring::RingPort;
use crate::{Port, PortError};

/// Most queues a specification may ask for.
pub const MAX_QUEUES: u16 = 1024;
/// Largest ring, in frames.
pub const MAX_RING_SIZE: usize = 1 << 20;
/// Ring size when none is given.
pub const DEFAULT_RING_SIZE: usize = 1024;

/// The drivers this build knows, for messages.
const DRIVERS: &str = match (cfg!(feature = "afxdp"), cfg!(feature = "dpdk")) {
    (true, true) => "ring, null, pcap, afxdp, dpdk",
    (true, false) => "ring, null, pcap, afxdp",
    (false, true) => "ring, null, pcap, dpdk",
    (false, false) => "ring, null, pcap",
};

/// A parsed port specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// `ring:NAME[,peer=OTHER][,queues=N][,size=N]`.
    Ring(RingSpec),
    /// `null[:NAME][,size=N][,queues=N][,limit=N]`.
    Null(NullSpec),
    /// `pcap:[in=FILE][,out=FILE][,loop=N|forever]`.
    Pcap(PcapSpec),
    /// `afxdp:IFACE[:QUEUES][,KEY=VALUE...]`.
    #[cfg(feature = "afxdp")]
    AfXdp(AfXdpConfig),
    /// `dpdk:DEVARGS[,queues=N][,rxd=N][,txd=N][,mbufs=N]`.
    #[cfg(feature = "dpdk")]
    Dpdk(DpdkConfig),
}

/// A ring port (see the module docs for pairing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingSpec {
    /// Its name; the port is called `ring:NAME`.
    pub name: String,
    /// The ring it is connected to.
    pub peer: Option<String>,
    /// Queues per direction (default 1, or the peer's).
    pub queues: Option<u16>,
    /// Frames per ring (default [`DEFAULT_RING_SIZE`], or the peer's).
    pub size: Option<usize>,
}

/// A null port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NullSpec {
    /// Its name; the port is called `null:NAME`, or `nullI` (`I` its place
    /// in the list) without one.
    pub name: Option<String>,
    /// Packet size.
    pub size: usize,
    /// Queues.
    pub queues: u16,
    /// Packets to make in all.
    pub limit: Option<u64>,
}

/// A pcap port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcapSpec {
    /// File to receive from.
    pub input: Option<PathBuf>,
    /// File to write transmitted packets to.
    pub output: Option<PathBuf>,
    /// How many times to play the input.
    pub loops: Loops,
}

/// The arguments after `DRIVER:`, checked for shape: an optional leading
/// bare word, then `KEY=VALUE` pairs with distinct keys and non-empty
/// values.
struct Args<'a> {
    spec: &'a str,
    positional: Option<&'a str>,
    pairs: Vec<(&'a str, &'a str)>,
}

fn bad(spec: &str, reason: impl Into<String>) -> PortError {
    PortError::BadSpec {
        spec: spec.to_string(),
        reason: reason.into(),
    }
}

impl<'a> Args<'a> {
    fn parse(spec: &'a str, rest: Option<&'a str>) -> Result<Args<'a>, PortError> {
        let mut args = Args {
            spec,
            positional: None,
            pairs: Vec::new(),
        };
        let Some(rest) = rest else {
            return Ok(args);
        };
        for (i, item) in rest.split(',').enumerate() {
            let item = item.trim();
            match item.split_once('=') {
                _ if item.is_empty() => return Err(bad(spec, "empty argument")),
                None if i == 0 => args.positional = Some(item),
                None => {
                    return Err(bad(
                        spec,
                        format!("unexpected \"{item}\" (expected KEY=VALUE)"),
                    ))
                }
                Some(("", _)) => return Err(bad(spec, format!("\"{item}\": missing key"))),
                Some((k, "")) => return Err(bad(spec, format!("{k}: empty value"))),
                Some((k, _)) if args.pairs.iter().any(|(seen, _)| *seen == k) => {
                    return Err(bad(spec, format!("{k}: given twice")))
                }
                Some((k, v)) => args.pairs.push((k, v)),
            }
        }
        Ok(args)
    }

    /// Refuses keys outside `known`.
    fn only(&self, driver: &str, known: &[&str]) -> Result<(), PortError> {
        match self.pairs.iter().find(|(k, _)| !known.contains(k)) {
            Some((k, _)) => Err(bad(
                self.spec,
                format!("unknown key \"{k}\" ({driver} takes {})", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| *k == key).map(|&(_, v)| v)
    }

    /// A number in `range`.
    fn num<T>(&self, key: &str, range: std::ops::RangeInclusive<T>) -> Result<Option<T>, PortError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n: T = v
            .parse()
            .map_err(|_| bad(self.spec, format!("{key}: invalid number \"{v}\"")))?;
        if !range.contains(&n) {
            return Err(bad(
                self.spec,
                format!(
                    "{key}: {n} out of range ({}..={})",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(Some(n))
    }

    fn name(&self, what: &str) -> Result<Option<String>, PortError> {
        let Some(n) = self.positional else {
            return Ok(None);
        };
        if n.chars().any(|c| c.is_whitespace() || c == ':') {
            return Err(bad(
                self.spec,
                format!("{what} name \"{n}\": no spaces or colons"),
            ));
        }
        Ok(Some(n.to_string()))
    }
}

impl PortSpec {
    /// Parses one specification.
    ///
    /// # Errors
    /// [`PortError::BadSpec`] naming the specification and what is wrong.
    pub fn parse(spec: &str) -> Result<PortSpec, PortError> {
        let (driver, rest) = match spec.split_once(':') {
            Some((d, r)) => (d, Some(r)),
            None => (spec, None),
        };
        let args = Args::parse(spec, rest)?;
        match driver {
            "ring" => {
                args.only("ring", &["peer", "queues", "size"])?;
                let name = args
                    .name("ring")?
                    .ok_or_else(|| bad(spec, "a ring needs a name: ring:NAME"))?;
                Ok(PortSpec::Ring(RingSpec {
                    name,
                    peer: args.get("peer").map(str::to_string),
                    queues: args.num("queues", 1..=MAX_QUEUES)?,
                    size: args.num("size", 1..=MAX_RING_SIZE)?,
                }))
            }
            "null" => {
                args.only("null", &["size", "queues", "limit"])?;
                Ok(PortSpec::Null(NullSpec {
                    name: args.name("null")?,
                    size: args.num("size", 1..=MAX_SIZE)?.unwrap_or(DEFAULT_SIZE),
                    queues: args.num("queues", 1..=MAX_QUEUES)?.unwrap_or(1),
                    limit: args.num("limit", 0..=u64::MAX)?,
                }))
            }
            "pcap" => {
                if let Some(p) = args.positional {
                    return Err(bad(
                        spec,
                        format!("unexpected \"{p}\" (expected in=FILE or out=FILE)"),
                    ));
                }
                args.only("pcap", &["in", "out", "loop"])?;
                let loops = match args.get("loop") {
                    None => Loops::Once,
                    Some("forever") => Loops::Forever,
                    Some(_) => match args.num("loop", 1..=u64::MAX) {
                        Ok(n) => Loops::Times(n.unwrap_or(1)),
                        Err(PortError::BadSpec { reason, .. }) => {
                            return Err(bad(spec, format!("{reason} (or \"forever\")")))
                        }
                        Err(e) => return Err(e),
                    },
                };
                let input = args.get("in").map(PathBuf::from);
                let output = args.get("out").map(PathBuf::from);
                if input.is_none() && output.is_none() {
                    return Err(bad(spec, "pcap needs in=FILE, out=FILE or both"));
                }
                if input.is_none() && loops != Loops::Once {
                    return Err(bad(spec, "loop: there is no in=FILE to loop over"));
                }
                Ok(PortSpec::Pcap(PcapSpec {
                    input,
                    output,
                    loops,
                }))
            }
            #[cfg(feature = "afxdp")]
            "afxdp" => parse_afxdp(spec, &args).map(PortSpec::AfXdp),
            #[cfg(feature = "dpdk")]
            "dpdk" => parse_dpdk(spec, &args).map(PortSpec::Dpdk),
            "" => Err(bad(spec, format!("no driver (known: {DRIVERS})"))),
            d => Err(bad(
                spec,
                format!("unknown driver \"{d}\" (known: {DRIVERS})"),
            )),
        }
    }

    /// The name the port gets from [`open`] when it is `index`-th in the
    /// list (before two ports of the same name are told apart).
    pub fn port_name(&self, index: usize) -> String {
        match self {
            PortSpec::Ring(r) => format!("ring:{}", r.name),
            PortSpec::Null(NullSpec { name: Some(n), .. }) => format!("null:{n}"),
            PortSpec::Null(NullSpec { name: None, .. }) => format!("null{index}"),
            PortSpec::Pcap(p) => {
                let file = p.input.as_ref().or(p.output.as_ref());
                format!(
                    "pcap:{}",
                    file.map(|f| f.display().to_string()).unwrap_or_default()
                )
            }
            #[cfg(feature = "afxdp")]
            PortSpec::AfXdp(c) => c.port_name(),
            #[cfg(feature = "dpdk")]
            PortSpec::Dpdk(c) => c.port_name(),
        }
    }
}

/// Sluice's own keys of a `dpdk` specification; the others are DPDK's.
#[cfg(feature = "dpdk")]
const DPDK_KEYS: [&str; 4] = ["queues", "rxd", "txd", "mbufs"];

/// Parses `dpdk:DEVARGS[,queues=N][,rxd=N][,txd=N][,mbufs=N]` (see the
/// module docs for how the items are split between Sluice and DPDK).
#[cfg(feature = "dpdk")]
fn parse_dpdk(spec: &str, args: &Args<'_>) -> Result<DpdkConfig, PortError> {
    let dev = args.positional.ok_or_else(|| {
        bad(
            spec,
            "dpdk needs a device: dpdk:DEVARGS (net_null0, net_af_packet0,iface=eth0, 0000:01:00.0)",
        )
    })?;
    if dev.chars().any(char::is_whitespace) {
        return Err(bad(spec, format!("device name \"{dev}\": no spaces")));
    }
    let mut devargs = dev.to_string();
    for &(k, v) in &args.pairs {
        if DPDK_KEYS.contains(&k) {
            continue;
        }
        let k = k.strip_prefix("dev.").unwrap_or(k);
        devargs.push_str(&format!(",{k}={v}"));
    }
    let mut cfg = DpdkConfig::new(&devargs);
    cfg.queues = args.num("queues", 1..=MAX_QUEUES)?.unwrap_or(1);
    cfg.rxd = args.num("rxd", 1..=u16::MAX)?.unwrap_or(cfg.rxd);
    cfg.txd = args.num("txd", 1..=u16::MAX)?.unwrap_or(cfg.txd);
    cfg.mbufs = args.num("mbufs", 1024..=(1u32 << 24))?;
    Ok(cfg)
}

/// Parses the arguments of `afxdp:IFACE[:QUEUES][,KEY=VALUE...]`.
#[cfg(feature = "afxdp")]
fn parse_afxdp(spec: &str, args: &Args<'_>) -> Result<AfXdpConfig, PortError> {
    args.only(
        "afxdp",
        &[
            "queues",
            "xdp",
            "bind",
            "ring",
            "frames",
            "frame_size",
            "umem",
        ],
    )?;
    let first = args
        .positional
        .ok_or_else(|| bad(spec, "afxdp needs an interface: afxdp:IFACE[:QUEUES]"))?;
    let (iface, queues) = match first.split_once(':') {
        Some((i, q)) => (i, Some(q)),
        None => (first, None),
    };
    if iface.is_empty() || iface.len() > 15 || iface.chars().any(|c| c.is_whitespace() || c == '/')
    {
        return Err(bad(
            spec,
            format!("interface name \"{iface}\": 1 to 15 characters, no spaces or slashes"),
        ));
    }
    if queues.is_some() && args.get("queues").is_some() {
        return Err(bad(spec, "queues: given twice (as :QUEUES and queues=)"));
    }
    let mut cfg = AfXdpConfig::new(iface);
    if let Some(q) = queues.or(args.get("queues")) {
        let num = |s: &str| {
            s.parse::<u16>()
                .ok()
                .filter(|n| *n < MAX_QUEUES)
                .ok_or_else(|| bad(spec, format!("queues: invalid queue \"{s}\"")))
        };
        cfg.queues = match q.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(bad(spec, format!("queues: range {q} is backwards")));
                }
                Queues::Range(a, b)
            }
            None => match num(q)? {
                0 => return Err(bad(spec, "queues: 0 out of range (1..=1023)")),
                n => Queues::Count(n),
            },
        };
    }
    let choice = |key: &str, options: &[&str]| -> Result<Option<usize>, PortError> {
        match args.get(key) {
            None => Ok(None),
            Some(v) => options
                .iter()
                .position(|o| *o == v)
                .map(Some)
                .ok_or_else(|| {
                    bad(
                        spec,
                        format!("{key}: \"{v}\" is not one of {}", options.join(", ")),
                    )
                }),
        }
    };
    if let Some(i) = choice("xdp", &["auto", "native", "generic"])? {
        cfg.xdp_mode = [XdpMode::Auto, XdpMode::Native, XdpMode::Generic][i];
    }
    if let Some(i) = choice("bind", &["auto", "zerocopy", "copy"])? {
        cfg.bind_mode = [BindMode::Auto, BindMode::ZeroCopy, BindMode::Copy][i];
    }
    if let Some(i) = choice("umem", &["shared", "own"])? {
        cfg.shared_umem = i == 0;
    }
    if let Some(i) = choice("frame_size", &["2048", "4096"])? {
        cfg.frame_size = [2048, 4096][i];
    }
    if let Some(r) = args.num("ring", 64..=32768u32)? {
        if !r.is_power_of_two() {
            return Err(bad(spec, format!("ring: {r} is not a power of two")));
        }
        cfg.ring_size = r;
        cfg.frames_per_queue = crate::afxdp::DEFAULT_FRAMES_PER_RING * r;
    }
    if let Some(f) = args.num("frames", 64..=(1u32 << 22))? {
        if f < cfg.ring_size {
            return Err(bad(
                spec,
                format!(
                    "frames: {f} cannot fill a {}-entry fill ring",
                    cfg.ring_size
                ),
            ));
        }
        cfg.frames_per_queue = f;
    }
    Ok(cfg)
}

impl FromStr for PortSpec {
    type Err = PortError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PortSpec::parse(s)
    }
}

/// The canonical form, which parses back to the same specification.
impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Ring(r) => {
                write!(f, "ring:{}", r.name)?;
                if let Some(p) = &r.peer {
                    write!(f, ",peer={p}")?;
                }
                if let Some(q) = r.queues {
                    write!(f, ",queues={q}")?;
                }
                if let Some(s) = r.size {
                    write!(f, ",size={s}")?;
                }
                Ok(())
            }
            PortSpec::Null(n) => {
                let mut sep = ':';
                f.write_str("null")?;
                if let Some(name) = &n.name {
                    write!(f, ":{name}")?;
                    sep = ',';
                }
                let mut put = |f: &mut fmt::Formatter<'_>, kv: fmt::Arguments<'_>| {
                    let r = write!(f, "{sep}{kv}");
                    sep = ',';
                    r
                };
                if n.size != DEFAULT_SIZE {
                    put(f, format_args!("size={}", n.size))?;
                }
                if n.queues != 1 {
                    put(f, format_args!("queues={}", n.queues))?;
                }
                if let Some(l) = n.limit {
                    put(f, format_args!("limit={l}"))?;
                }
                Ok(())
            }
            PortSpec::Pcap(p) => {
                let mut sep = ':';
                f.write_str("pcap")?;
                if let Some(i) = &p.input {
                    write!(f, "{sep}in={}", i.display())?;
                    sep = ',';
                }
                if let Some(o) = &p.output {
                    write!(f, "{sep}out={}", o.display())?;
                }
                match p.loops {
                    Loops::Once => Ok(()),
                    Loops::Times(n) => write!(f, ",loop={n}"),
                    Loops::Forever => f.write_str(",loop=forever"),
                }
            }
            #[cfg(feature = "afxdp")]
            PortSpec::AfXdp(c) => {
                let d = AfXdpConfig::new(&c.iface);
                f.write_str(&c.port_name())?;
                if c.xdp_mode != d.xdp_mode {
                    write!(f, ",xdp={}", c.xdp_mode.name())?;
                }
                if c.bind_mode != d.bind_mode {
                    write!(f, ",bind={}", c.bind_mode.name())?;
                }
                if c.ring_size != d.ring_size {
                    write!(f, ",ring={}", c.ring_size)?;
                }
                if c.frames_per_queue != crate::afxdp::DEFAULT_FRAMES_PER_RING * c.ring_size {
                    write!(f, ",frames={}", c.frames_per_queue)?;
                }
                if c.frame_size != d.frame_size {
                    write!(f, ",frame_size={}", c.frame_size)?;
                }
                if !c.shared_umem {
                    f.write_str(",umem=own")?;
                }
                Ok(())
            }
            #[cfg(feature = "dpdk")]
            PortSpec::Dpdk(c) => {
                let d = DpdkConfig::new(&c.devargs);
                for (i, item) in c.devargs.split(',').enumerate() {
                    let clash = item
                        .split_once('=')
                        .is_some_and(|(k, _)| DPDK_KEYS.contains(&k) || k.starts_with("dev."));
                    match (i, clash) {
                        (0, _) => write!(f, "dpdk:{item}")?,
                        (_, true) => write!(f, ",dev.{item}")?,
                        (_, false) => write!(f, ",{item}")?,
                    }
                }
                if c.queues != d.queues {
                    write!(f, ",queues={}", c.queues)?;
                }
                if c.rxd != d.rxd {
                    write!(f, ",rxd={}", c.rxd)?;
                }
                if c.txd != d.txd {
                    write!(f, ",txd={}", c.txd)?;
                }
                if let Some(m) = c.mbufs {
                    write!(f, ",mbufs={m}")?;
                }
                Ok(())
            }
        }
    }
}

/// Builds the ports `specs` describe, in order, connecting rings to their
/// peers (see the module docs). Ports whose names would clash (two `pcap`
/// ports reading one file) get `#2`, `#3`... appended; two rings of one
/// name are an error, since `peer=` could not tell them apart.
///
/// # Errors
/// [`PortError::BadSpec`] for rings that do not pair up (an unknown peer, a
/// ring claimed by two others, queue or size counts that disagree), or the
/// error of the port that failed to open.
pub fn open(specs: &[PortSpec]) -> Result<Vec<Arc<dyn Port>>, PortError> {
    let partner = pair_rings(specs)?;
    let mut names: Vec<String> = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        let base = s.port_name(i);
        let mut name = base.clone();
        let mut k = 1;
        while names.contains(&name) {
            k += 1;
            name = format!("{base}#{k}");
        }
        names.push(name);
    }
    let mut ports: Vec<Option<Arc<dyn Port>>> = vec![None; specs.len()];
    // AF_XDP ports open together, so that they can share one UMEM.
    #[cfg(feature = "afxdp")]
    {
        let afxdp: Vec<(usize, &AfXdpConfig)> = specs
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                PortSpec::AfXdp(c) => Some((i, c)),
                _ => None,
            })
            .collect();
        if !afxdp.is_empty() {
            let list: Vec<(&str, &AfXdpConfig)> =
                afxdp.iter().map(|&(i, c)| (names[i].as_str(), c)).collect();
            let opened = AfXdpPort::open_with(&crate::afxdp::sys::LinuxSys::shared(), &list)?;
            for (&(i, _), port) in afxdp.iter().zip(opened) {
                ports[i] = Some(port);
            }
        }
    }
    for (i, spec) in specs.iter().enumerate() {
        if ports[i].is_some() {
            continue; // the second of a pair, made with the first
        }
        let name = &names[i];
        let port: Arc<dyn Port> = match spec {
            PortSpec::Ring(r) => {
                let peer = partner[i].map(|j| (j, ring(&specs[j])));
                let queues = r.queues.or(peer.and_then(|(_, p)| p.queues)).unwrap_or(1);
                let size = r
                    .size
                    .or(peer.and_then(|(_, p)| p.size))
                    .unwrap_or(DEFAULT_RING_SIZE);
                match peer {
                    Some((j, _)) if j != i => {
                        let (a, b) = RingPort::pair(name, &names[j], queues, size);
                        ports[j] = Some(b);
                        a
                    }
                    _ => RingPort::loopback(name, queues, size),
                }
            }
            PortSpec::Null(n) => NullPort::new(
                name,
                NullConfig {
                    size: n.size,
                    queues: n.queues,
                    template: None,
                    limit: n.limit,
                },
            )?,
            PortSpec::Pcap(p) => PcapPort::open(
                name,
                PcapConfig {
                    input: p.input.clone(),
                    output: p.output.clone(),
                    loops: p.loops,
                    ..PcapConfig::default()
                },
            )?,
            // Opened above, with the other AF_XDP ports.
            #[cfg(feature = "afxdp")]
            PortSpec::AfXdp(_) => continue,
            #[cfg(feature = "dpdk")]
            PortSpec::Dpdk(c) => DpdkPort::open(name, c)?,
        };
        ports[i] = Some(port);
    }
    Ok(ports.into_iter().flatten().collect())
}

/// The ring spec of a spec known to be a ring.
fn ring(s: &PortSpec) -> &RingSpec {
    match s {
        PortSpec::Ring(r) => r,
        // `pair_rings` only pairs rings with rings.
        _ => unreachable!("paired a ring with a non-ring"),
    }
}

/// For each spec, the index of the ring it is paired with (itself for an
/// explicit loopback), checking that the pairs are consistent.
fn pair_rings(specs: &[PortSpec]) -> Result<Vec<Option<usize>>, PortError> {
    let rings: Vec<(usize, &RingSpec)> = specs
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            PortSpec::Ring(r) => Some((i, r)),
            _ => None,
        })
        .collect();
    let find = |name: &str| rings.iter().find(|(_, r)| r.name == name).map(|&(j, _)| j);
    let mut partner: Vec<Option<usize>> = vec![None; specs.len()];
    for &(i, r) in &rings {
        let text = specs[i].to_string();
        if find(&r.name) != Some(i) {
            return Err(bad(
                &text,
                format!("ring name \"{}\" is used twice", r.name),
            ));
        }
        let Some(peer) = &r.peer else {
            continue;
        };
        let j = find(peer).ok_or_else(|| {
            bad(
                &text,
                format!("peer \"{peer}\": no ring of that name in this configuration"),
            )
        })?;
        let other = ring(&specs[j]);
        if let Some(back) = other.peer.as_deref().filter(|&b| b != r.name) {
            return Err(bad(
                &text,
                format!("peer \"{peer}\" is paired with \"{back}\""),
            ));
        }
        for (side, k) in [(i, j), (j, i)] {
            if let Some(prev) = partner[side].filter(|&p| p != k) {
                let (a, b) = (&ring(&specs[side]).name, &ring(&specs[prev]).name);
                return Err(bad(
                    &text,
                    format!("ring \"{a}\" is already paired with \"{b}\""),
                ));
            }
            partner[side] = Some(k);
        }
        for (key, mine, theirs) in [
            (
                "queues",
                r.queues.map(|q| q as usize),
                other.queues.map(|q| q as usize),
            ),
            ("size", r.size, other.size),
        ] {
            if let (Some(m), Some(t)) = (mine, theirs) {
                if m != t {
                    return Err(bad(
                        &text,
                        format!("{key}: {m} here, but peer \"{peer}\" has {t}"),
                    ));
                }
            }
        }
    }
    Ok(partner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> PortSpec {
        PortSpec::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        match PortSpec::parse(s) {
            Ok(p) => panic!("{s} parsed as {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn documented_forms_parse() {
        assert_eq!(
            parse("ring:a,peer=b,queues=2,size=256"),
            PortSpec::Ring(RingSpec {
                name: "a".into(),
                peer: Some("b".into()),
                queues: Some(2),
                size: Some(256)
            })
        );
        assert_eq!(
            parse("ring:x"),
            PortSpec::Ring(RingSpec {
                name: "x".into(),
                peer: None,
                queues: None,
                size: None
            })
        );
        let null = |name: Option<&str>, size, queues, limit| {
            PortSpec::Null(NullSpec {
                name: name.map(str::to_string),
                size,
                queues,
                limit,
            })
        };
        assert_eq!(parse("null"), null(None, 64, 1, None));
        assert_eq!(parse("null:size=128"), null(None, 128, 1, None));
        assert_eq!(
            parse("null:size=60,queues=4,limit=1000"),
            null(None, 60, 4, Some(1000))
        );
        assert_eq!(parse("null:gen,limit=5"), null(Some("gen"), 64, 1, Some(5)));
        assert_eq!(parse("null:gen"), null(Some("gen"), 64, 1, None));
        assert_eq!(
            parse("pcap:in=/tmp/a.pcap,out=b.pcap,loop=3"),
            PortSpec::Pcap(PcapSpec {
                input: Some("/tmp/a.pcap".into()),
                output: Some("b.pcap".into()),
                loops: Loops::Times(3)
            })
        );
        assert!(matches!(
            parse("pcap:in=a.pcap,loop=forever"),
            PortSpec::Pcap(PcapSpec {
                loops: Loops::Forever,
                ..
            })
        ));
        assert!(matches!(
            parse("pcap:out=o.pcap"),
            PortSpec::Pcap(PcapSpec { input: None, .. })
        ));
        assert_eq!(
            "null:size=90".parse::<PortSpec>().unwrap(),
            null(None, 90, 1, None)
        );
    }

    #[test]
    fn display_is_canonical_and_parses_back() {
        for s in [
            "ring:a",
            "ring:a,peer=b,queues=2,size=256",
            "null",
            "null:size=128",
            "null:g",
            "null:g,size=60,queues=2,limit=7",
            "null:queues=3",
            "pcap:in=a.pcap",
            "pcap:out=b.pcap",
            "pcap:in=a.pcap,out=b.pcap,loop=2",
            "pcap:in=a.pcap,loop=forever",
        ] {
            let p = parse(s);
            assert_eq!(p.to_string(), s);
            assert_eq!(parse(&p.to_string()), p);
        }
        assert_eq!(parse("null:size=64,queues=1").to_string(), "null");
    }

    #[test]
    fn bad_specs_name_the_spec_and_the_problem() {
        let cases = [
            (
                "null:size=abc",
                r#"port spec "null:size=abc": size: invalid number "abc""#,
            ),
            (
                "null:size=0",
                r#"port spec "null:size=0": size: 0 out of range (1..=65280)"#,
            ),
            (
                "null:size=-1",
                r#"port spec "null:size=-1": size: invalid number "-1""#,
            ),
            (
                "null:queues=0",
                r#"port spec "null:queues=0": queues: 0 out of range (1..=1024)"#,
            ),
            (
                "null:limit=lots",
                r#"port spec "null:limit=lots": limit: invalid number "lots""#,
            ),
            (
                "null:colour=red",
                r#"port spec "null:colour=red": unknown key "colour" (null takes size, queues, limit)"#,
            ),
            (
                "null:size=64,size=65",
                r#"port spec "null:size=64,size=65": size: given twice"#,
            ),
            (
                "null:a,b",
                r#"port spec "null:a,b": unexpected "b" (expected KEY=VALUE)"#,
            ),
            ("null:size=", r#"port spec "null:size=": size: empty value"#),
            ("null:", r#"port spec "null:": empty argument"#),
            (
                "null:size=64,",
                r#"port spec "null:size=64,": empty argument"#,
            ),
            (
                "ring",
                r#"port spec "ring": a ring needs a name: ring:NAME"#,
            ),
            (
                "ring:peer=b",
                r#"port spec "ring:peer=b": a ring needs a name: ring:NAME"#,
            ),
            (
                "ring:a,size=0",
                r#"port spec "ring:a,size=0": size: 0 out of range (1..=1048576)"#,
            ),
            (
                "ring:a,queues=70000",
                r#"port spec "ring:a,queues=70000": queues: invalid number "70000""#,
            ),
            (
                "ring:a,limit=3",
                r#"port spec "ring:a,limit=3": unknown key "limit" (ring takes peer, queues, size)"#,
            ),
            (
                "pcap",
                r#"port spec "pcap": pcap needs in=FILE, out=FILE or both"#,
            ),
            (
                "pcap:a.pcap",
                r#"port spec "pcap:a.pcap": unexpected "a.pcap" (expected in=FILE or out=FILE)"#,
            ),
            (
                "pcap:in=a,loop=0",
                r#"port spec "pcap:in=a,loop=0": loop: 0 out of range (1..=18446744073709551615) (or "forever")"#,
            ),
            (
                "pcap:in=a,loop=often",
                r#"port spec "pcap:in=a,loop=often": loop: invalid number "often" (or "forever")"#,
            ),
            (
                "pcap:out=o,loop=2",
                r#"port spec "pcap:out=o,loop=2": loop: there is no in=FILE to loop over"#,
            ),
            ("null:=5", r#"port spec "null:=5": "=5": missing key"#),
        ];
        for (spec, want) in cases {
            assert_eq!(err(spec), want, "{spec}");
        }
        assert_eq!(
            err("netmap:0"),
            format!(r#"port spec "netmap:0": unknown driver "netmap" (known: {DRIVERS})"#)
        );
        assert_eq!(
            err(":x"),
            format!(r#"port spec ":x": no driver (known: {DRIVERS})"#)
        );
    }

    #[cfg(feature = "afxdp")]
    #[test]
    fn afxdp_specs_parse_and_print_back() {
        let c = |s: &str| match parse(s) {
            PortSpec::AfXdp(c) => c,
            other => panic!("{s}: {other:?}"),
        };
        let d = c("afxdp:veth0");
        assert_eq!(d, AfXdpConfig::new("veth0"));
        assert_eq!(d.queues, Queues::All);
        assert_eq!(c("afxdp:eth1:4").queues, Queues::Count(4));
        assert_eq!(c("afxdp:eth1:2-3").queues, Queues::Range(2, 3));
        assert_eq!(c("afxdp:eth1,queues=2").queues, Queues::Count(2));
        let full =
            c("afxdp:eth1:2,xdp=generic,bind=copy,ring=512,frames=4096,frame_size=4096,umem=own");
        assert_eq!(full.xdp_mode, XdpMode::Generic);
        assert_eq!(full.bind_mode, BindMode::Copy);
        assert_eq!(
            (full.ring_size, full.frames_per_queue, full.frame_size),
            (512, 4096, 4096)
        );
        assert!(!full.shared_umem);
        for s in [
            "afxdp:veth0",
            "afxdp:eth1:4",
            "afxdp:eth1:2-3",
            "afxdp:eth1:2,xdp=generic,bind=copy,ring=512,frames=4096,frame_size=4096,umem=own",
            "afxdp:eth1,xdp=native,bind=zerocopy",
            "afxdp:eth1,ring=256",
        ] {
            assert_eq!(parse(s).to_string(), s);
        }
        assert_eq!(parse("afxdp:eth1:2-3").port_name(0), "afxdp:eth1:2-3");
        for (spec, want) in [
            ("afxdp", "afxdp needs an interface: afxdp:IFACE[:QUEUES]"),
            ("afxdp:eth0:0", "queues: 0 out of range (1..=1023)"),
            ("afxdp:eth0:x", "queues: invalid queue \"x\""),
            ("afxdp:eth0:3-1", "queues: range 3-1 is backwards"),
            ("afxdp:eth0:2,queues=2", "queues: given twice (as :QUEUES and queues=)"),
            ("afxdp:eth0,xdp=fast", "xdp: \"fast\" is not one of auto, native, generic"),
            ("afxdp:eth0,ring=100", "ring: 100 is not a power of two"),
            ("afxdp:eth0,frames=100", "frames: 100 cannot fill a 2048-entry fill ring"),
            ("afxdp:eth0,frame_size=1024", "frame_size: \"1024\" is not one of 2048, 4096"),
            ("afxdp:averyveryverylongname", "interface name \"averyveryverylongname\": 1 to 15 characters, no spaces or slashes"),
            ("afxdp:eth0,mtu=9000", "unknown key \"mtu\" (afxdp takes queues, xdp, bind, ring, frames, frame_size, umem)"),
        ] {
            assert_eq!(err(spec), format!("port spec \"{spec}\": {want}"), "{spec}");
        }
    }

    #[cfg(feature = "dpdk")]
    #[test]
    fn dpdk_specs_split_devargs_from_sluices_keys() {
        let c = |s: &str| match parse(s) {
            PortSpec::Dpdk(c) => c,
            other => panic!("{other:?}"),
        };
        let d = c("dpdk:net_null0,size=64,queues=2,copy=1");
        assert_eq!(d.devargs, "net_null0,size=64,copy=1");
        assert_eq!(d.queues, 2);
        assert_eq!(d.device_name(), "net_null0");
        let v = c("dpdk:net_vhost0,iface=/tmp/s,dev.queues=2,queues=2,rxd=512,mbufs=4095");
        assert_eq!(v.devargs, "net_vhost0,iface=/tmp/s,queues=2");
        assert_eq!(
            (v.queues, v.rxd, v.txd, v.mbufs),
            (2, 512, 1024, Some(4095))
        );
        assert_eq!(c("dpdk:01:00.0").device_name(), "0000:01:00.0");
        assert_eq!(parse("dpdk:01:00.0").port_name(0), "dpdk:0000:01:00.0");
        for s in [
            "dpdk:net_null0",
            "dpdk:net_null0,size=64,queues=2",
            "dpdk:net_vhost0,iface=/tmp/s,dev.queues=2,queues=2,rxd=512,txd=256,mbufs=4095",
            "dpdk:0000:01:00.0,rxq_cqe_comp_en=0",
        ] {
            assert_eq!(parse(s).to_string(), s);
        }
        assert!(err("dpdk").contains("dpdk needs a device"));
        assert!(err("dpdk:net_null0,queues=0").contains("queues: 0 out of range"));
        assert!(err("dpdk:net_null0,size=1,size=2").contains("size: given twice"));
    }

    fn open_strs(specs: &[&str]) -> Result<Vec<Arc<dyn Port>>, PortError> {
        let specs: Vec<PortSpec> = specs.iter().map(|s| parse(s)).collect();
        open(&specs)
    }

    fn open_err(specs: &[&str]) -> String {
        match open_strs(specs) {
            Ok(_) => panic!("{specs:?} opened"),
            Err(e) => e.to_string(),
        }
    }

    /// Sends one frame out of `from` queue `q` and says whether `to` got it.
    fn connected(from: &Arc<dyn Port>, to: &Arc<dyn Port>, q: u16) -> bool {
        let pool = crate::HeapPool::new("spec-test", 4, 1024).unwrap();
        let mut burst = crate::Burst::new(4);
        burst.push(crate::FramePool::alloc(pool).unwrap()).unwrap();
        assert_eq!(from.open_tx(q).unwrap().tx_burst(&mut burst), 1);
        to.open_rx(q).unwrap().rx_burst(&mut burst) == 1
    }

    #[test]
    fn open_pairs_rings_and_builds_the_rest() {
        let ports = open_strs(&[
            "ring:b",
            "null:limit=3",
            "ring:a,peer=b,queues=2,size=64",
            "ring:lo",
            "null",
        ])
        .unwrap();
        let names: Vec<&str> = ports.iter().map(|p| p.info().name.as_str()).collect();
        assert_eq!(names, ["ring:b", "null1", "ring:a", "ring:lo", "null4"]);
        assert_eq!(
            ports[0].info().rx_queues,
            2,
            "queues given on one side apply to both"
        );
        assert!(connected(&ports[2], &ports[0], 1));
        assert!(connected(&ports[0], &ports[2], 0));
        assert!(
            connected(&ports[3], &ports[3], 0),
            "an unpaired ring loops back"
        );
        assert_eq!(ports[1].info().driver, "null");
        let mut ifindexes: Vec<u32> = ports.iter().map(|p| p.info().ifindex).collect();
        ifindexes.sort_unstable();
        ifindexes.dedup();
        assert_eq!(ifindexes.len(), 5);

        let ports = open_strs(&["ring:x,peer=y", "ring:y,peer=x", "ring:z,peer=z"]).unwrap();
        assert!(connected(&ports[0], &ports[1], 0));
        assert!(connected(&ports[2], &ports[2], 0));
    }

    #[test]
    fn open_refuses_rings_that_do_not_pair_up() {
        assert_eq!(
            open_err(&["ring:a,peer=b"]),
            r#"port spec "ring:a,peer=b": peer "b": no ring of that name in this configuration"#
        );
        assert_eq!(
            open_err(&["ring:a,peer=b", "ring:b,peer=c", "ring:c"]),
            r#"port spec "ring:a,peer=b": peer "b" is paired with "c""#
        );
        assert_eq!(
            open_err(&["ring:a,peer=c", "ring:b,peer=c", "ring:c"]),
            r#"port spec "ring:b,peer=c": ring "c" is already paired with "a""#
        );
        assert_eq!(
            open_err(&["ring:a,peer=b,size=64", "ring:b,size=128"]),
            r#"port spec "ring:a,peer=b,size=64": size: 64 here, but peer "b" has 128"#
        );
        assert_eq!(
            open_err(&["ring:a", "ring:a"]),
            r#"port spec "ring:a": ring name "a" is used twice"#
        );
        let e = open_err(&["pcap:in=/nonexistent/x.pcap"]);
        assert!(
            e.starts_with("port pcap:/nonexistent/x.pcap: /nonexistent/x.pcap: "),
            "{e}"
        );
    }
}
