//! `sluice run`: a dataplane in the foreground, for a fixed time or until
//! Ctrl-C, with a live status line and final statistics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::json;
use sluice_bpf::object::{LoadOptions, LoadedObject};
use sluice_bpf::Program;
use sluice_dataplane::host::{
    http, metrics, Handler, HostConfig, HostStack, HostStackStats, HttpConfig,
};
use sluice_dataplane::{parse_core_list, Dataplane, Hook, PortSnapshot, Stats};
use sluice_drivers::spec::{self, PortSpec};

/// Arguments of `sluice run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A port: `ring:NAME[,peer=OTHER]`, `null[:size=64]`,
    /// `pcap:in=FILE[,out=FILE]` (repeatable; numbered from 0 in order).
    #[arg(long = "port", value_name = "SPEC")]
    pub ports: Vec<String>,
    /// Program for every port's ingress: `OBJ[:SECTION]`.
    #[arg(long, value_name = "OBJ[:SECTION]")]
    pub prog: Option<String>,
    /// Program for one port: `PORT=OBJ[:SECTION]` (PORT is its number or
    /// name; `PORT/egress=...` attaches to the egress hook).
    #[arg(long = "attach", value_name = "PORT=OBJ[:SECTION]")]
    pub attach: Vec<String>,
    /// Cores to run workers on, DPDK `-l` style: `0-3,8`.
    #[arg(long)]
    pub cores: Option<String>,
    /// Where `bpf_fib_lookup` finds routes and neighbours: `kernel` (the
    /// kernel's tables, read over rtnetlink at start, when a loaded program
    /// calls the helper) or `none` (an empty FIB).
    #[arg(long, default_value = "kernel")]
    pub fib: sluice_dataplane::fib::FibSource,
    /// Execution engine for verified programs: `jit` (the default on
    /// x86-64) or `interp`.
    #[arg(long)]
    pub engine: Option<String>,
    /// Stop after this many seconds (default: until Ctrl-C, or until every
    /// finite port is drained).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Packets per burst.
    #[arg(long, default_value_t = 32)]
    pub burst: usize,
    /// A TOML configuration file with the same content (the flags above
    /// override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// No live status line.
    #[arg(short, long)]
    pub quiet: bool,
    /// Final statistics as one JSON object on stdout.
    #[arg(short = 'j', long)]
    pub json: bool,
    // ---- host stack (issue 6) ----
    /// An address the host stack owns: `ADDR/PREFIX[@PORT]` (IPv4 or IPv6;
    /// port 0 by default; repeatable). Turns the host stack on: it answers
    /// ARP/NDP and ping and serves HTTP on these addresses.
    #[arg(long = "host-ip", value_name = "ADDR/PREFIX[@PORT]")]
    pub host_ip: Vec<String>,
    /// Default gateway of the host stack: `ADDR[@PORT]` (repeatable, one
    /// per family and port).
    #[arg(long = "gateway", value_name = "ADDR[@PORT]")]
    pub gateway: Vec<String>,
    /// Get an IPv4 address by DHCP on a port (default port 0; repeatable).
    #[arg(long = "dhcp", value_name = "PORT", num_args = 0..=1, default_missing_value = "0")]
    pub dhcp: Vec<String>,
    /// TCP port of the HTTP service on the host stack (`/metrics`,
    /// `/status`); 0 turns it off.
    #[arg(long = "http-port", default_value_t = 9100)]
    pub http_port: u16,
    /// Bearer token required by HTTP requests that change state (without
    /// one, such requests are always refused).
    #[arg(long = "http-token", value_name = "TOKEN")]
    pub http_token: Option<String>,
    // ---- end host stack ----
}

/// The TOML configuration of `sluice run` (and, later, the daemon).
///
/// ```toml
/// cores = "0-1"
/// engine = "interp"
/// duration = 10
/// burst = 32
/// program = "fwd.o:xdp"          # every port's ingress, unless a port says otherwise
///
/// [[port]]
/// spec = "null:size=64"
///
/// [[port]]
/// spec = "pcap:out=out.pcap"
/// program = "other.o"
/// egress = "stamp.o:xdp"
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Cores, `0-3,8` style.
    pub cores: Option<String>,
    /// `interp` or `jit`.
    pub engine: Option<String>,
    /// Seconds to run.
    pub duration: Option<f64>,
    /// Packets per burst.
    pub burst: Option<usize>,
    /// Default ingress program, `OBJ[:SECTION]`.
    pub program: Option<String>,
    /// Ports, in order.
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
}

/// One `[[port]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// The port specification, as `--port` takes it.
    pub spec: String,
    /// Ingress program, `OBJ[:SECTION]`.
    pub program: Option<String>,
    /// Egress program, `OBJ[:SECTION]`.
    pub egress: Option<String>,
}

impl Config {
    /// Reads and checks a configuration file; errors name the file, line
    /// and field.
    ///
    /// # Errors
    /// A message with the file, the line and what is wrong.
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let cfg: Config = toml::from_str(&text).map_err(|e| {
            let Some(span) = e.span() else {
                return anyhow::anyhow!("{}: {}", path.display(), e.message());
            };
            let line = text[..span.start].matches('\n').count() + 1;
            // The key of the line the error is on, unless the message
            // names it already (unknown fields do).
            let start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
            let key = text[start..]
                .split_once('=')
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && !k.starts_with('[') && !e.message().contains(k));
            match key {
                Some(k) => anyhow::anyhow!("{}: line {line}: {k}: {}", path.display(), e.message()),
                None => anyhow::anyhow!("{}: line {line}: {}", path.display(), e.message()),
            }
        })?;
        for (i, p) in cfg.ports.iter().enumerate() {
            PortSpec::parse(&p.spec)
                .with_context(|| format!("{}: port[{i}].spec", path.display()))?;
        }
        if let Some(c) = &cfg.cores {
            parse_core_list(c).map_err(|e| anyhow::anyhow!("{}: cores: {e}", path.display()))?;
        }
        if let Some(e) = &cfg.engine {
            check_engine(e).with_context(|| format!("{}: engine", path.display()))?;
        }
        Ok(cfg)
    }
}

fn check_engine(e: &str) -> Result<sluice_bpf::Engine> {
    match e {
        "interp" => Ok(sluice_bpf::Engine::Interp),
        "jit" if sluice_bpf::Engine::best() == sluice_bpf::Engine::Jit => {
            Ok(sluice_bpf::Engine::Jit)
        }
        "jit" => {
            bail!("engine \"jit\": this build has no JIT (x86-64 with the `jit` feature only)")
        }
        other => bail!("engine {other:?}: expected interp or jit"),
    }
}

/// Splits `OBJ[:SECTION]` (the section may contain `/` and `:`; the object
/// path ends in `.o`).
fn obj_section(s: &str) -> (PathBuf, Option<String>) {
    match s.find(".o:") {
        Some(i) => (PathBuf::from(&s[..i + 2]), Some(s[i + 3..].to_string())),
        None => (PathBuf::from(s), None),
    }
}

/// Loads programs once per object, for `ncpus` workers.
struct Loader {
    ncpus: usize,
    objects: HashMap<PathBuf, LoadedObject>,
}

impl Loader {
    fn program(&mut self, spec: &str) -> Result<(Arc<Program>, String)> {
        let (path, section) = obj_section(spec);
        if !self.objects.contains_key(&path) {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let obj = LoadedObject::from_elf(
                &bytes,
                &LoadOptions {
                    ncpus: self.ncpus,
                    ..Default::default()
                },
            )
            .with_context(|| format!("loading {}", path.display()))?;
            self.objects.insert(path.clone(), obj);
        }
        let obj = &self.objects[&path];
        let p = match &section {
            Some(s) => obj
                .program(s)
                .with_context(|| format!("{}: no program or section {s:?}", path.display()))?,
            None => &obj.programs[0],
        };
        Ok((p.program.clone(), format!("{}:{}", path.display(), p.name)))
    }
}

fn mpps(n: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        n as f64 / secs / 1e6
    }
}

fn dropped(s: &PortSnapshot) -> u64 {
    s.drops().iter().map(|(_, n)| n).sum()
}

/// `sluice run`.
pub fn run(a: RunArgs) -> Result<()> {
    let cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let engine = a.engine.clone().or(cfg.engine.clone()).unwrap_or_else(|| {
        match sluice_bpf::Engine::best() {
            sluice_bpf::Engine::Jit => "jit".into(),
            sluice_bpf::Engine::Interp => "interp".into(),
        }
    });
    let engine_kind = check_engine(&engine)?;
    let mut port_cfgs: Vec<PortConfig> = cfg.ports;
    for p in &a.ports {
        port_cfgs.push(PortConfig {
            spec: p.clone(),
            program: None,
            egress: None,
        });
    }
    if port_cfgs.is_empty() {
        bail!("no ports: give --port SPEC (e.g. --port null --port ring:a)");
    }
    let specs: Vec<PortSpec> = port_cfgs
        .iter()
        .map(|p| PortSpec::parse(&p.spec))
        .collect::<Result<_, _>>()?;
    let ports = spec::open(&specs)?;
    let cores = match a.cores.as_ref().or(cfg.cores.as_ref()) {
        Some(c) => parse_core_list(c).map_err(anyhow::Error::msg)?,
        None => vec![*sluice_dataplane::allowed_cores().last().unwrap_or(&0)],
    };
    let mut loader = Loader {
        ncpus: cores.len(),
        objects: HashMap::new(),
    };
    let mut builder = Dataplane::builder()
        .engine(engine_kind)
        .cores(cores)
        .burst(a.burst.min(cfg.burst.unwrap_or(a.burst)));
    let names: Vec<String> = ports.iter().map(|p| p.info().name.clone()).collect();
    for p in &ports {
        builder = builder.port(p.clone());
    }
    let default_prog = a.prog.clone().or(cfg.program.clone());
    let mut attach: Vec<(usize, Hook, String)> = Vec::new();
    for (i, pc) in port_cfgs.iter().enumerate() {
        if let Some(p) = pc.program.clone().or_else(|| default_prog.clone()) {
            attach.push((i, Hook::Ingress, p));
        }
        if let Some(e) = &pc.egress {
            attach.push((i, Hook::Egress, e.clone()));
        }
    }
    for spec in &a.attach {
        let (port, prog) = spec
            .split_once('=')
            .with_context(|| format!("--attach {spec:?}: expected PORT=OBJ[:SECTION]"))?;
        let (port, hook) = match port.strip_suffix("/egress") {
            Some(p) => (p, Hook::Egress),
            None => (port.strip_suffix("/ingress").unwrap_or(port), Hook::Ingress),
        };
        let idx = port
            .parse::<usize>()
            .ok()
            .filter(|i| *i < names.len())
            .or_else(|| {
                names
                    .iter()
                    .position(|n| n == port || n.split_once(':').is_some_and(|(_, x)| x == port))
            })
            .with_context(|| {
                format!(
                    "--attach {spec:?}: no port {port:?} (ports: {})",
                    names.join(", ")
                )
            })?;
        attach.retain(|(i, h, _)| !(*i == idx && *h == hook));
        attach.push((idx, hook, prog.to_string()));
    }
    for (i, hook, spec) in &attach {
        let (prog, label) = loader.program(spec)?;
        builder = builder.program(*i, *hook, prog, &label);
    }
    let uses_fib = loader.objects.values().any(|o| {
        o.programs
            .iter()
            .any(|p| p.program.calls_helper(sluice_bpf::helpers::id::FIB_LOOKUP))
    });
    if uses_fib {
        let fib = sluice_dataplane::fib::open(a.fib).context("reading the kernel's FIB")?;
        builder = builder.fib(fib);
    }
    let workers = builder.workers();
    // ---- host stack (issue 6): PASS traffic to smoltcp, HTTP /metrics and /status ----
    let host_cfg = host_config(&a)?;
    if host_cfg.is_some() {
        builder = builder.host_stack(true);
    }
    let dp = Arc::new(builder.start()?);
    let host = match host_cfg {
        Some(cfg) => {
            let handler = cfg.http.is_some().then(|| http_handler(&dp));
            let h = HostStack::start(dp.host_ports(), cfg, handler)?;
            if !a.quiet && !a.json {
                for p in h.stats().ports.iter().filter(|p| !p.addresses.is_empty()) {
                    eprintln!(
                        "sluice: host stack on {} ({}): {}",
                        p.name,
                        p.mac,
                        p.addresses.join(" ")
                    );
                }
            }
            Some(h)
        }
        None => None,
    };
    // ---- end host stack ----
    let duration = a.duration.or(cfg.duration).map(Duration::from_secs_f64);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed));
    }
    if !a.quiet && !a.json {
        eprintln!(
            "sluice: {} ports, {workers} workers, engine {engine}; Ctrl-C stops",
            names.len()
        );
    }
    let started = Instant::now();
    let mut last = dp.stats();
    let mut last_t = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if stop.load(Ordering::Relaxed) || duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        // Without a duration, a run whose ports all end stops once they
        // have: every worker then finishes the bursts it holds.
        if duration.is_none() && ports.iter().all(|p| p.is_exhausted() == Some(true)) {
            dp.wait_quiescent(Duration::from_secs(1));
            dp.wait_quiescent(Duration::from_secs(1));
            break;
        }
        if last_t.elapsed() >= Duration::from_secs(1) {
            let now = dp.stats();
            let secs = last_t.elapsed().as_secs_f64();
            if !a.quiet && !a.json {
                eprintln!("{}", status_line(&last, &now, secs));
            }
            last = now;
            last_t = Instant::now();
        }
    }
    // ---- host stack (issue 6) ----
    // The host thread holds the HTTP handler and with it the dataplane:
    // stop it first.
    let host_stats = host.map(HostStack::stop);
    let stats = match Arc::try_unwrap(dp) {
        Ok(dp) => dp.stop(),
        Err(dp) => dp.stats(),
    };
    if a.json {
        let mut j = stats_json(&stats);
        if let Some(h) = &host_stats {
            j["host_stack"] = host_json(h);
        }
        println!("{j}");
    } else {
        print_table(&stats);
        if let Some(h) = &host_stats {
            print_host_table(h);
        }
    }
    // ---- end host stack ----
    Ok(())
}

// ---- host stack (issue 6) ----

/// The host stack's configuration from the command line; `None` when no
/// address or DHCP client is asked for.
fn host_config(a: &RunArgs) -> Result<Option<HostConfig>> {
    let mut cfg = HostConfig::from_args(&a.host_ip, &a.gateway, &a.dhcp)?;
    if !cfg.has_interfaces() {
        if !a.gateway.is_empty() || a.http_token.is_some() {
            bail!("--gateway and --http-token need a host stack: give --host-ip or --dhcp");
        }
        return Ok(None);
    }
    if a.http_port != 0 {
        cfg.http = Some(HttpConfig {
            port: a.http_port,
            token: a.http_token.clone(),
            ..HttpConfig::default()
        });
    }
    Ok(Some(cfg))
}

/// `GET /metrics` (Prometheus text) and `GET /status` (the `-j` JSON plus
/// the host stack's counters), both read live from the dataplane.
fn http_handler(dp: &Arc<Dataplane>) -> Box<dyn Handler> {
    let (m, s) = (dp.clone(), dp.clone());
    Box::new(http::metrics_status(
        move |host| metrics::render(&m.stats(), Some(host)),
        move |host| {
            let mut j = stats_json(&s.stats());
            j["host_stack"] = host_json(host);
            j.to_string()
        },
    ))
}

/// The host stack's counters as JSON.
fn host_json(h: &HostStackStats) -> serde_json::Value {
    let ports: Vec<serde_json::Value> = h
        .ports
        .iter()
        .map(|p| {
            let c = &p.counters;
            let drops: serde_json::Map<String, serde_json::Value> = c
                .drops()
                .iter()
                .map(|(k, v)| ((*k).to_string(), json!(v)))
                .collect();
            json!({
                "name": p.name,
                "mac": p.mac,
                "addresses": p.addresses,
                "rx_frames": c.rx_frames,
                "rx_bytes": c.rx_bytes,
                "tx_frames": c.tx_frames,
                "tx_bytes": c.tx_bytes,
                "tx_deferred": c.tx_deferred,
                "dropped": drops,
            })
        })
        .collect();
    let x = &h.http;
    json!({
        "ports": ports,
        "http": {
            "connections": x.connections,
            "requests": x.requests,
            "responses_2xx": x.responses_2xx,
            "responses_4xx": x.responses_4xx,
            "responses_5xx": x.responses_5xx,
            "unauthorized": x.unauthorized,
            "rejected": x.rejected,
        },
    })
}

fn print_host_table(h: &HostStackStats) {
    for p in h.ports.iter().filter(|p| !p.addresses.is_empty()) {
        let c = &p.counters;
        println!(
            "host {:<15} rx {} tx {} dropped {} ({})",
            p.name,
            c.rx_frames,
            c.tx_frames,
            c.rx_dropped() + c.tx_queue_full + c.tx_no_buffer + c.tx_oversize,
            p.addresses.join(" ")
        );
    }
}
// ---- end host stack ----

/// `0.123 Mpps`, or `364 pps` below 10 kpps (a demo's or a test's traffic
/// would all read 0.000 Mpps).
fn rate(n: u64, secs: f64) -> String {
    let pps = if secs > 0.0 { n as f64 / secs } else { 0.0 };
    if pps >= 10_000.0 {
        format!("{:.3} Mpps", pps / 1e6)
    } else {
        format!("{pps:.0} pps")
    }
}

/// The live status line: rx/tx/drop rates per port since `prev`.
pub(crate) fn status_line(prev: &Stats, now: &Stats, secs: f64) -> String {
    let parts: Vec<String> = now
        .ports
        .iter()
        .zip(&prev.ports)
        .map(|(port, p)| {
            let (n, p) = (&port.total, &p.total);
            format!(
                "{}: rx {} tx {} drop {}",
                port.info.name,
                rate(n.rx_packets - p.rx_packets, secs),
                rate(n.tx_packets - p.tx_packets, secs),
                rate(dropped(n) - dropped(p), secs),
            )
        })
        .collect();
    format!(
        "[{:>6.1}s] {}",
        now.elapsed.as_secs_f64(),
        parts.join(" | ")
    )
}

/// The final statistics as JSON.
pub fn stats_json(s: &Stats) -> serde_json::Value {
    let ports: Vec<serde_json::Value> = s
        .ports
        .iter()
        .map(|p| {
            let t = &p.total;
            let drops: serde_json::Map<String, serde_json::Value> =
                t.drops().iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect();
            json!({
                "name": p.info.name,
                "driver": p.info.driver,
                "ifindex": p.info.ifindex,
                "rx_packets": t.rx_packets,
                "tx_packets": t.tx_packets,
                "rx_bytes": t.rx_bytes,
                "tx_bytes": t.tx_bytes,
                "dropped": drops,
                "passed": t.xdp_pass,
                "redirected": t.xdp_redirect,
                "tx_verdicts": t.xdp_tx,
                "aborted": t.xdp_aborted,
                "prog_faults": t.prog_faults,
                "prog_ns_per_packet": if t.prog_runs > 0 { t.prog_ns as f64 / t.prog_runs as f64 } else { 0.0 },
                "batches": t.batches,
                "ingress_version": p.ingress_version,
                "egress_version": p.egress_version,
                "queues": queues_json(p),
            })
        })
        .collect();
    json!({ "duration_secs": s.elapsed.as_secs_f64(), "ports": ports })
}

/// A driver's per-queue counters, drops by reason name.
fn driver_json(d: Option<sluice_drivers::QueueStatsSnapshot>) -> serde_json::Value {
    match d {
        None => serde_json::Value::Null,
        Some(d) => {
            let drops: serde_json::Map<String, serde_json::Value> = sluice_drivers::DropReason::ALL
                .iter()
                .map(|r| (r.name().to_string(), json!(d.dropped(*r))))
                .collect();
            json!({"packets": d.packets, "bytes": d.bytes, "drops": drops})
        }
    }
}

/// Every queue of a port: where it runs (worker, core) and its counters.
pub(crate) fn queues_json(p: &sluice_dataplane::PortStats) -> serde_json::Value {
    let rx: Vec<serde_json::Value> = p
        .rx_queues
        .iter()
        .map(|q| {
            let c = &q.counters;
            json!({
                "queue": q.place.queue, "worker": q.place.worker, "core": q.place.core,
                "rx_packets": c.rx_packets, "rx_bytes": c.rx_bytes, "batches": c.batches,
                "xdp_drop": c.xdp_drop, "xdp_pass": c.xdp_pass, "xdp_tx": c.xdp_tx,
                "xdp_redirect": c.xdp_redirect, "xdp_aborted": c.xdp_aborted,
                "driver": driver_json(q.driver),
            })
        })
        .collect();
    let tx: Vec<serde_json::Value> = p
        .tx_queues
        .iter()
        .map(|q| {
            json!({
                "queue": q.place.queue, "worker": q.place.worker, "core": q.place.core,
                "tx_packets": q.tx_packets, "tx_bytes": q.tx_bytes, "tx_full": q.tx_full,
                "driver": driver_json(q.driver),
            })
        })
        .collect();
    json!({"rx": rx, "tx": tx})
}

/// The final table: per port counts, drops by reason, rates.
pub(crate) fn print_table(s: &Stats) {
    let secs = s.elapsed.as_secs_f64();
    println!(
        "{:<20} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "port", "rx", "tx", "dropped", "passed", "redirect", "aborted", "rx Mpps", "tx Mpps"
    );
    for p in &s.ports {
        let t = &p.total;
        println!(
            "{:<20} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10} {:>9.3} {:>9.3}",
            p.info.name,
            t.rx_packets,
            t.tx_packets,
            dropped(t),
            t.xdp_pass,
            t.xdp_redirect,
            t.xdp_aborted,
            mpps(t.rx_packets, secs),
            mpps(t.tx_packets, secs)
        );
        let reasons: Vec<String> = t
            .drops()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        if !reasons.is_empty() {
            println!("{:<20} drops: {}", "", reasons.join(" "));
        }
    }
    println!("{:.2} s", secs);
}
