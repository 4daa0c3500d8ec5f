//! `sluice daemon --config FILE`: a dataplane with a control thread that
//! owns the loaded objects, the maps, the hooks and the statistics, served
//! over a Unix socket (and over `POST /api` on the host stack's HTTP
//! service) with one versioned JSON schema ([`crate::api`]).
//!
//! # State
//!
//! Every change goes through one mutex ([`State`]), so commands are
//! serialised; packets never touch it. Each loaded object gets an id, and
//! each of its programs a program id (`prog show`). A hook records which
//! program id runs on it and the dataplane version it was installed as; a
//! replacement is a compare-and-swap on that version
//! ([`Dataplane::replace`]), so nothing but the daemon's own record can be
//! swapped out, and `--expect-id` adds the operator's own check on top.
//! An object whose programs are all off their hooks is dropped once the
//! workers have passed a quiescent point (objects loaded without
//! `--attach` are kept until `prog unload`).
//!
//! # Pinned maps
//!
//! The pin table maps names to maps. Maps declared with
//! `pinning = LIBBPF_PIN_BY_NAME` are pinned automatically when their
//! object loads, and every pinned map is handed to the next load through
//! [`LoadOptions::pinned`], so the new version uses the very same map. A
//! map pinned by command (`map pin`) whose object does not declare
//! `LIBBPF_PIN_BY_NAME` cannot be shared by the loader (it reuses only
//! maps declared that way, as libbpf does); for such a map the daemon
//! copies every element into the new object's map of the same name and
//! shape just before the swap, and the pin moves to the new map.
//!
//! # Socket
//!
//! The socket is bound inside a fresh directory of mode 0700, made 0600,
//! and only then renamed into place, so there is no moment when anyone but
//! the owner can reach it. A path that holds a live socket is refused (a
//! daemon runs there); a stale one is replaced. The socket is removed on
//! exit.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use sluice_bpf::maps::perf_event_array::PerfEventArray;
use sluice_bpf::maps::{flags, Map, MapType, Pinning};
use sluice_bpf::object::{LoadOptions, LoadedObject};
use sluice_bpf::{disasm, Program};
use sluice_dataplane::host::{http, metrics, HostConfig, HostStack, HttpConfig};
use sluice_dataplane::{parse_core_list, CaptureTap, Dataplane, Hook, Stats};
use sluice_drivers::pcap::{Format, Writer, WriterOptions};
use sluice_drivers::spec::{self, PortSpec};
use tracing::{info, warn};

use crate::api::{self, Command};
use crate::config::{DaemonConfig, DEFAULT_SOCKET};

/// Arguments of `sluice daemon`.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The TOML configuration (see docs/config.md).
    #[arg(long)]
    pub config: PathBuf,
    /// The API socket (overrides `api.socket`; default
    /// /run/sluice/sluice.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Log format: `text` or `json` (overrides `log.format`).
    #[arg(long = "log-format")]
    pub log_format: Option<String>,
    /// Where `bpf_fib_lookup` finds routes and neighbours: `kernel` (the
    /// kernel's tables, read at start and again on every SIGHUP) or `none`.
    #[arg(long, default_value = "kernel")]
    pub fib: sluice_dataplane::fib::FibSource,
}

/// Splits `OBJ[:SECTION]` (the object path ends in `.o`).
pub fn obj_section(s: &str) -> (PathBuf, Option<String>) {
    match s.find(".o:") {
        Some(i) => (PathBuf::from(&s[..i + 2]), Some(s[i + 3..].to_string())),
        None => (PathBuf::from(s), None),
    }
}

/// A loaded object.
struct Object {
    path: String,
    /// A hash of the file's bytes as loaded: a reload reloads an object
    /// only when the file changed.
    digest: u64,
    obj: LoadedObject,
    /// Loaded by `prog load` without `--attach`: kept until unloaded.
    keep: bool,
}

/// A loaded program.
struct Prog {
    obj: u32,
    name: String,
    section: String,
    program: Arc<Program>,
}

/// Who put a program on a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// The configuration file (at start or on reload): a reload that no
    /// longer names the hook empties it.
    Config,
    /// A command (`prog load --attach`, `prog replace`): a reload leaves
    /// the hook alone unless the configuration names it.
    Api,
}

/// What runs on a hook.
#[derive(Clone, Copy)]
struct Attachment {
    prog: u32,
    version: u64,
    origin: Origin,
    /// The port's program-run counters when it was attached.
    runs0: u64,
    ns0: u64,
    /// The port's verdict counters when it was attached (ingress).
    verdicts0: [u64; 5],
}

/// A port's verdict counters, in [`VERDICTS`] order.
fn verdicts(t: &sluice_dataplane::PortSnapshot) -> [u64; 5] {
    [
        t.xdp_drop,
        t.xdp_tx,
        t.xdp_redirect,
        t.xdp_pass,
        t.xdp_aborted,
    ]
}

/// Verdict label values, in the order of [`verdicts`].
const VERDICTS: [&str; 5] = ["drop", "tx", "redirect", "pass", "aborted"];

/// A pinned map.
#[derive(Clone)]
struct Pin {
    map: Arc<Map>,
    /// Pinned because the object declares `LIBBPF_PIN_BY_NAME`.
    auto: bool,
}

/// Everything the control thread owns.
#[derive(Default)]
struct State {
    next_id: u32,
    objects: BTreeMap<u32, Object>,
    progs: BTreeMap<u32, Prog>,
    hooks: HashMap<(usize, Hook), Attachment>,
    pins: BTreeMap<String, Pin>,
    swaps: HashMap<(usize, Hook), u64>,
}

/// At most `per_sec` log lines a second from one source; the rest are
/// counted and reported with the next line let through.
pub struct RateLimit {
    per_sec: u64,
    window: Mutex<(Instant, u64)>,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// A limiter of `per_sec` lines a second.
    pub fn new(per_sec: u64) -> RateLimit {
        RateLimit {
            per_sec,
            window: Mutex::new((Instant::now(), 0)),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed so far)` when a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if w.0.elapsed() >= Duration::from_secs(1) {
            *w = (Instant::now(), 0);
        }
        if w.1 < self.per_sec {
            w.1 += 1;
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The daemon: the dataplane and the control state.
pub struct Daemon {
    dp: Arc<Dataplane>,
    ncpus: usize,
    names: Vec<String>,
    /// The configuration file, and the configuration now applied.
    config_path: PathBuf,
    config: Mutex<DaemonConfig>,
    /// Sets the log filter (a reload may change `log.filter`).
    log_filter: Option<LogFilter>,
    state: Mutex<State>,
    stop: AtomicBool,
    host: Mutex<Option<HostStack>>,
    request_log: RateLimit,
}

/// Parses `PORT[:ingress|egress]` against the port names.
fn parse_hook(names: &[String], s: &str) -> Result<(usize, Hook)> {
    let (port, hook) = if let Some(p) = s.strip_suffix(":egress").or(s.strip_suffix("/egress")) {
        (p, Hook::Egress)
    } else {
        (
            s.strip_suffix(":ingress")
                .or(s.strip_suffix("/ingress"))
                .unwrap_or(s),
            Hook::Ingress,
        )
    };
    Ok((resolve_port(names, port)?, hook))
}

/// A port by number, full name (`ring:a`) or name without the driver (`a`).
fn resolve_port(names: &[String], port: &str) -> Result<usize> {
    port.parse::<usize>()
        .ok()
        .filter(|i| *i < names.len())
        .or_else(|| {
            names
                .iter()
                .position(|n| n == port || n.split_once(':').is_some_and(|(_, x)| x == port))
        })
        .with_context(|| format!("no port {port:?} (ports: {})", names.join(", ")))
}

fn hook_name(h: Hook) -> &'static str {
    match h {
        Hook::Ingress => "ingress",
        Hook::Egress => "egress",
    }
}

fn verdict_name(v: u64) -> &'static str {
    match v {
        0 => "XDP_ABORTED",
        1 => "XDP_DROP",
        2 => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "XDP_UNKNOWN",
    }
}

fn verdict_number(s: &str) -> Result<u64> {
    Ok(match s.to_ascii_lowercase().trim_start_matches("xdp_") {
        "aborted" => 0,
        "drop" => 1,
        "pass" => 2,
        "tx" => 3,
        "redirect" => 4,
        other => bail!("verdict {other:?}: expected drop, pass, tx, redirect or aborted"),
    })
}

fn pinning_shape(m: &Map) -> (u32, u32, u32, String) {
    let d = m.def();
    (
        d.key_size,
        d.value_size,
        d.max_entries,
        d.map_type.name().to_string(),
    )
}

impl Daemon {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic in a command leaves the maps and hooks as they were
        // between two dataplane calls; carrying on beats refusing forever.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loads an object for `ncpus` workers and returns the id of the
    /// program asked for.
    fn load(
        ncpus: usize,
        st: &mut State,
        path: &str,
        section: Option<&str>,
        keep: bool,
    ) -> Result<(u32, Vec<String>)> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        let digest = digest(&bytes);
        let pinned: HashMap<String, Arc<Map>> = st
            .pins
            .iter()
            .map(|(k, p)| (k.clone(), p.map.clone()))
            .collect();
        let obj = LoadedObject::from_elf(
            &bytes,
            &LoadOptions {
                ncpus,
                pinned,
                ..Default::default()
            },
        )
        .with_context(|| format!("loading {path}"))?;
        let chosen = match section {
            Some(s) => obj.program(s).map(|p| p.name.clone()).with_context(|| {
                let have: Vec<String> = obj
                    .programs
                    .iter()
                    .map(|p| format!("{} ({})", p.name, p.section))
                    .collect();
                format!(
                    "{path}: no program or section {s:?} (programs: {})",
                    have.join(", ")
                )
            })?,
            None => obj.programs[0].name.clone(),
        };
        let mut notes = Vec::new();
        // Command-pinned maps the loader could not share: copy them.
        for m in &obj.maps {
            let name = &m.def().name;
            let Some(pin) = st.pins.get(name) else {
                continue;
            };
            if Arc::ptr_eq(&pin.map, m) || m.def().pinning == Pinning::ByName {
                continue;
            }
            if pinning_shape(&pin.map) != pinning_shape(m) {
                bail!(
                    "{path}: map {name} is pinned with another definition ({:?}, object {:?})",
                    pinning_shape(&pin.map),
                    pinning_shape(m)
                );
            }
            let mut n = 0;
            for key in pin.map.keys() {
                if let Ok(v) = pin.map.lookup_vec(&key) {
                    m.ops()
                        .update(&key, &v, flags::BPF_ANY)
                        .with_context(|| format!("copying pinned map {name}"))?;
                    n += 1;
                }
            }
            notes.push(format!(
                "map {name} is pinned by command but not declared LIBBPF_PIN_BY_NAME: {n} elements copied"
            ));
        }
        for m in &obj.maps {
            let name = m.def().name.clone();
            if m.def().pinning == Pinning::ByName {
                st.pins.entry(name).or_insert(Pin {
                    map: m.clone(),
                    auto: true,
                });
            } else if let Some(pin) = st.pins.get_mut(&name) {
                pin.map = m.clone();
            }
        }
        st.next_id += 1;
        let oid = st.next_id;
        let mut chosen_id = 0;
        for p in &obj.programs {
            st.next_id += 1;
            if p.name == chosen {
                chosen_id = st.next_id;
            }
            st.progs.insert(
                st.next_id,
                Prog {
                    obj: oid,
                    name: p.name.clone(),
                    section: p.section.clone(),
                    program: p.program.clone(),
                },
            );
        }
        for s in &obj.skipped {
            notes.push(format!("skipped {}: {}", s.name, s.reason));
        }
        st.objects.insert(
            oid,
            Object {
                path: path.to_string(),
                digest,
                obj,
                keep,
            },
        );
        Ok((chosen_id, notes))
    }

    /// Puts program `prog` on a hook, compare-and-swap against what the
    /// daemon recorded there (and against `expect` when given).
    fn attach(
        &self,
        st: &mut State,
        port: usize,
        hook: Hook,
        prog: u32,
        expect: Option<u32>,
        origin: Origin,
    ) -> Result<u64> {
        let cur = st.hooks.get(&(port, hook)).copied();
        let cur_id = cur.map_or(0, |a| a.prog);
        if let Some(e) = expect {
            if e != cur_id {
                bail!(
                    "{}:{} runs program {cur_id}, not the expected {e}: nothing changed",
                    self.names[port],
                    hook_name(hook)
                );
            }
        }
        let p = st.progs.get(&prog).context("no such program")?;
        let label = format!("{}:{}", st.objects[&p.obj].path, p.name);
        let version = self
            .dp
            .replace(
                port,
                hook,
                cur.map_or(0, |a| a.version),
                Some(p.program.clone()),
                &label,
            )
            .map_err(|e| {
                anyhow!(
                    "{}:{}: {e}: nothing changed",
                    self.names[port],
                    hook_name(hook)
                )
            })?;
        let t = self.dp.stats().ports[port].total;
        st.hooks.insert(
            (port, hook),
            Attachment {
                prog,
                version,
                origin,
                runs0: t.prog_runs,
                ns0: t.prog_ns,
                verdicts0: verdicts(&t),
            },
        );
        *st.swaps.entry((port, hook)).or_default() += 1;
        info!(port = %self.names[port], hook = hook_name(hook), prog, version, %label, "program attached");
        Ok(version)
    }

    /// Drops objects nothing uses any more, after the workers moved on.
    fn collect(&self, st: &mut State) {
        let attached: Vec<u32> = st.hooks.values().map(|a| a.prog).collect();
        let dead: Vec<u32> = st
            .objects
            .iter()
            .filter(|(id, o)| {
                !o.keep
                    && !st
                        .progs
                        .iter()
                        .any(|(pid, p)| p.obj == **id && attached.contains(pid))
            })
            .map(|(id, _)| *id)
            .collect();
        if dead.is_empty() {
            return;
        }
        self.dp.wait_quiescent(Duration::from_secs(1));
        for id in dead {
            if let Some(o) = st.objects.remove(&id) {
                o.obj.clear_prog_arrays();
            }
            st.progs.retain(|_, p| p.obj != id);
        }
    }

    /// Every map the daemon knows: pinned ones and those of live objects.
    fn maps(st: &State) -> Vec<Arc<Map>> {
        let mut out: Vec<Arc<Map>> = Vec::new();
        for m in st
            .pins
            .values()
            .map(|p| &p.map)
            .chain(st.objects.values().rev().flat_map(|o| o.obj.maps.iter()))
        {
            if !out.iter().any(|x| x.id() == m.id()) {
                out.push(m.clone());
            }
        }
        out
    }

    /// A map by `id:N` or name (pinned first, then the newest object).
    fn find_map(st: &State, name: &str) -> Result<Arc<Map>> {
        let all = Daemon::maps(st);
        let found = match name.strip_prefix("id:").or(name.strip_prefix("id ")) {
            Some(id) => {
                let id: u32 = id.trim().parse().context("id:N needs a number")?;
                all.into_iter().find(|m| m.id() == id)
            }
            None => all.into_iter().find(|m| m.def().name == name),
        };
        found.with_context(|| format!("no map {name:?}"))
    }

    fn map_json(st: &State, m: &Map) -> Value {
        let d = m.def();
        let pinned = st
            .pins
            .iter()
            .find(|(_, p)| p.map.id() == m.id())
            .map(|(_, p)| if p.auto { "by_name" } else { "command" });
        let users: Vec<u32> = st
            .objects
            .iter()
            .filter(|(_, o)| o.obj.maps.iter().any(|x| x.id() == m.id()))
            .flat_map(|(oid, _)| {
                st.progs
                    .iter()
                    .filter(move |(_, p)| p.obj == *oid)
                    .map(|(id, _)| *id)
            })
            .collect();
        json!({
            "id": m.id(), "name": d.name, "type": d.map_type.name(),
            "key_size": d.key_size, "value_size": d.value_size,
            "max_entries": d.max_entries, "flags": d.flags,
            "entries": m.ops().len(), "pinned": pinned, "prog_ids": users,
        })
    }

    fn prog_json(&self, st: &State, stats: &Stats, id: u32, p: &Prog) -> Value {
        let o = &st.objects[&p.obj];
        let hooks: Vec<Value> = st
            .hooks
            .iter()
            .filter(|(_, a)| a.prog == id)
            .map(|((port, hook), a)| {
                let t = &stats.ports[*port].total;
                let (runs, ns) = if *hook == Hook::Ingress {
                    (
                        json!(t.prog_runs.saturating_sub(a.runs0)),
                        json!(t.prog_ns.saturating_sub(a.ns0)),
                    )
                } else {
                    (Value::Null, Value::Null)
                };
                json!({"port": self.names[*port], "hook": hook_name(*hook), "version": a.version,
                       "run_cnt": runs, "run_time_ns": ns})
            })
            .collect();
        let maps: Vec<u32> = o.obj.maps.iter().map(|m| m.id()).collect();
        json!({"id": id, "type": "xdp", "name": p.name, "section": p.section, "object": o.path,
               "insns": p.program.insns().len(), "map_ids": maps, "attached": hooks})
    }

    /// Answers one request. `http` is true for requests from the host
    /// stack (which cannot hold a connection for a capture).
    pub fn handle(&self, req: api::Request, http: bool) -> Value {
        let changes = req.cmd.changes_state();
        if let Some(suppressed) = self.request_log.allow() {
            if changes {
                info!(via = if http { "http" } else { "unix" }, suppressed, request = ?req.cmd, "api request");
            }
        }
        match self.command(req.cmd, http) {
            Ok(v) => api::ok(v),
            Err(e) => {
                let msg = format!("{e:#}");
                if changes {
                    warn!(error = %msg, "api request refused");
                }
                api::error(msg)
            }
        }
    }

    fn command(&self, cmd: Command, http: bool) -> Result<Value> {
        match cmd {
            Command::ProgLoad {
                path,
                section,
                attach,
            } => {
                let hook = attach
                    .as_deref()
                    .map(|a| parse_hook(&self.names, a))
                    .transpose()?;
                let mut st = self.state();
                let (id, notes) = Daemon::load(
                    self.ncpus,
                    &mut st,
                    &path,
                    section.as_deref(),
                    hook.is_none(),
                )?;
                let version = match hook {
                    Some((port, h)) => match self.attach(&mut st, port, h, id, None, Origin::Api) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            if let Some(o) = st.progs.get(&id).map(|p| p.obj) {
                                st.objects.remove(&o);
                                st.progs.retain(|_, p| p.obj != o);
                            }
                            return Err(e);
                        }
                    },
                    None => None,
                };
                self.collect(&mut st);
                Ok(json!({"id": id, "version": version, "notes": notes}))
            }
            Command::ProgReplace {
                port,
                path,
                section,
                expect_id,
            } => {
                let (port, hook) = parse_hook(&self.names, &port)?;
                let mut st = self.state();
                if let Some(e) = expect_id {
                    let cur = st.hooks.get(&(port, hook)).map_or(0, |a| a.prog);
                    if cur != e {
                        bail!(
                            "{}:{} runs program {cur}, not the expected {e}: nothing changed",
                            self.names[port],
                            hook_name(hook)
                        );
                    }
                }
                let old = st.hooks.get(&(port, hook)).map(|a| a.prog);
                let (id, notes) =
                    Daemon::load(self.ncpus, &mut st, &path, section.as_deref(), false)?;
                match self.attach(&mut st, port, hook, id, expect_id, Origin::Api) {
                    Ok(version) => {
                        self.collect(&mut st);
                        Ok(json!({"id": id, "old_id": old, "version": version, "notes": notes}))
                    }
                    Err(e) => {
                        self.collect(&mut st);
                        Err(e)
                    }
                }
            }
            Command::ProgDetach { port } => {
                let (port, hook) = parse_hook(&self.names, &port)?;
                let mut st = self.state();
                let cur = st.hooks.get(&(port, hook)).copied().with_context(|| {
                    format!(
                        "{}:{}: no program attached",
                        self.names[port],
                        hook_name(hook)
                    )
                })?;
                self.dp
                    .replace(port, hook, cur.version, None, "")
                    .map_err(|e| anyhow!("{e}: nothing changed"))?;
                st.hooks.remove(&(port, hook));
                *st.swaps.entry((port, hook)).or_default() += 1;
                info!(port = %self.names[port], hook = hook_name(hook), prog = cur.prog, "program detached");
                self.collect(&mut st);
                Ok(json!({"id": cur.prog}))
            }
            Command::ProgUnload { id } => {
                let mut st = self.state();
                let obj = st
                    .progs
                    .get(&id)
                    .map(|p| p.obj)
                    .with_context(|| format!("no program {id}"))?;
                if st
                    .hooks
                    .values()
                    .any(|a| st.progs.get(&a.prog).is_some_and(|p| p.obj == obj))
                {
                    bail!("program {id}'s object has an attached program: detach it first");
                }
                if let Some(o) = st.objects.get_mut(&obj) {
                    o.keep = false;
                }
                self.collect(&mut st);
                Ok(json!({}))
            }
            Command::ProgShow {} => {
                let st = self.state();
                let stats = self.dp.stats();
                let progs: Vec<Value> = st
                    .progs
                    .iter()
                    .map(|(id, p)| self.prog_json(&st, &stats, *id, p))
                    .collect();
                Ok(json!({"programs": progs}))
            }
            Command::ProgDump { id, kind } => {
                let st = self.state();
                let p = st
                    .progs
                    .get(&id)
                    .with_context(|| format!("no program {id}"))?;
                match kind.as_str() {
                    "xlated" => {
                        let text = disasm::disassemble_listing(p.program.insns())
                            .map_err(|e| anyhow!("disassembling: {e}"))?;
                        Ok(
                            json!({"id": id, "name": p.name, "xlated": text.lines().collect::<Vec<_>>()}),
                        )
                    }
                    "jited" => {
                        let Some(code) = p.program.jit_code() else {
                            bail!("program {id} has no machine code (not verified, or a build without the JIT)")
                        };
                        // bpftool's form: x86-64 in AT&T syntax, offsets
                        // from the start, each eBPF instruction before its code.
                        let lines = crate::jited::listing(&p.program, false)?;
                        Ok(json!({"id": id, "name": p.name, "bytes": code.len(), "jited": lines}))
                    }
                    k => bail!("dump kind {k:?}: expected xlated or jited"),
                }
            }
            Command::MapShow {} => {
                let st = self.state();
                let maps: Vec<Value> = Daemon::maps(&st)
                    .iter()
                    .map(|m| Daemon::map_json(&st, m))
                    .collect();
                Ok(json!({"maps": maps}))
            }
            Command::MapDump { map } => {
                let st = self.state();
                let m = Daemon::find_map(&st, &map)?;
                drop(st);
                let entries: Vec<Value> = m
                    .keys()
                    .into_iter()
                    .filter_map(|k| {
                        let v = m.lookup_vec(&k).ok()?;
                        Some(entry_json(&m, &k, &v))
                    })
                    .collect();
                Ok(json!({"map": m.def().name, "id": m.id(), "entries": entries}))
            }
            Command::MapLookup { map, key } => {
                let m = Daemon::find_map(&self.state(), &map)?;
                let k = decode_sized(&key, m.def().key_size as usize, "key")?;
                let v = m.lookup_vec(&k).map_err(|e| anyhow!("lookup: {e}"))?;
                Ok(entry_json(&m, &k, &v))
            }
            Command::MapUpdate {
                map,
                key,
                value,
                flags: f,
            } => {
                let m = Daemon::find_map(&self.state(), &map)?;
                let k = decode_sized(&key, m.def().key_size as usize, "key")?;
                let mut v =
                    hex::decode(value.trim_start_matches("0x")).context("value is not hex")?;
                let vs = m.def().value_size as usize;
                if m.def().map_type.is_percpu() && v.len() == vs && m.value_buf_size() != vs {
                    // One value for every CPU.
                    let stride = vs.next_multiple_of(8);
                    let mut all = vec![0; m.value_buf_size()];
                    for c in all.chunks_mut(stride) {
                        c[..vs].copy_from_slice(&v);
                    }
                    v = all;
                } else if v.len() != m.value_buf_size() {
                    bail!(
                        "value has {} bytes, map {} takes {}",
                        v.len(),
                        m.def().name,
                        m.value_buf_size()
                    );
                }
                let fl = match f.as_deref().unwrap_or("any") {
                    "any" => flags::BPF_ANY,
                    "noexist" => flags::BPF_NOEXIST,
                    "exist" => flags::BPF_EXIST,
                    o => bail!("flags {o:?}: expected any, noexist or exist"),
                };
                m.ops()
                    .update(&k, &v, fl)
                    .map_err(|e| anyhow!("update: {e}"))?;
                info!(map = %m.def().name, key = %hex::encode(&k), "map element updated");
                Ok(json!({}))
            }
            Command::MapDelete { map, key } => {
                let m = Daemon::find_map(&self.state(), &map)?;
                let k = decode_sized(&key, m.def().key_size as usize, "key")?;
                m.ops().delete(&k).map_err(|e| anyhow!("delete: {e}"))?;
                info!(map = %m.def().name, key = %hex::encode(&k), "map element deleted");
                Ok(json!({}))
            }
            Command::MapPin { map } => {
                let mut st = self.state();
                let m = Daemon::find_map(&st, &map)?;
                let name = m.def().name.clone();
                match st.pins.get(&name) {
                    Some(p) if p.map.id() == m.id() => {}
                    Some(p) => bail!("another map (id {}) is pinned as {name}", p.map.id()),
                    None => {
                        st.pins.insert(
                            name.clone(),
                            Pin {
                                map: m.clone(),
                                auto: false,
                            },
                        );
                    }
                }
                info!(map = %name, id = m.id(), "map pinned");
                Ok(json!({"name": name, "id": m.id()}))
            }
            Command::MapUnpin { map } => {
                let mut st = self.state();
                let p = st
                    .pins
                    .remove(&map)
                    .with_context(|| format!("no map pinned as {map:?}"))?;
                info!(map = %map, "map unpinned");
                Ok(json!({"name": map, "id": p.map.id()}))
            }
            Command::PortList {} => {
                let rxq = self.dp.rx_queues();
                let cores = self.dp.worker_cores();
                let ports: Vec<Value> = self
                    .dp
                    .ports()
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        // RX queues as the dataplane spread them; TX queue
                        // w is worker w's.
                        let queues: Vec<Value> = rxq
                            .iter()
                            .filter(|q| q.port == i)
                            .map(|q| json!({"direction": "rx", "queue": q.queue, "worker": q.worker, "core": q.core}))
                            .chain(cores.iter().enumerate().map(|(w, c)| {
                                json!({"direction": "tx", "queue": w, "worker": w, "core": c})
                            }))
                            .collect();
                        json!({"index": i, "name": p.name, "driver": p.driver, "mode": p.mode,
                               "ifindex": p.ifindex, "rx_queues": p.rx_queues, "tx_queues": p.tx_queues,
                               "ingress_version": self.dp.version(i, Hook::Ingress),
                               "egress_version": self.dp.version(i, Hook::Egress),
                               "queues": queues})
                    })
                    .collect();
                Ok(json!({"workers": self.dp.workers(), "worker_cores": cores, "ports": ports}))
            }
            Command::Stats {} => Ok(self.stats_json()),
            Command::Capture {
                port,
                verdicts,
                path,
                count,
                duration,
                snaplen,
            } => {
                if http {
                    bail!("capture runs over the Unix socket only (it holds the connection until done)");
                }
                self.capture(&port, &verdicts, &path, count, duration, snaplen)
            }
            Command::MapEventPipe { .. } => {
                bail!(
                    "map.event_pipe runs over the Unix socket only (it streams samples until done)"
                )
            }
            Command::ConfigReload {} => self.reload(),
            Command::DaemonStop {} => {
                // The Unix server sets the flag once the answer is out;
                // over HTTP the answer may be lost in the shutdown.
                if http {
                    self.stop.store(true, Ordering::Relaxed);
                }
                Ok(json!({}))
            }
        }
    }

    /// Re-reads the configuration file and applies it, all or nothing.
    ///
    /// * A file with errors is refused with every error (line and field).
    /// * Fields only a restart applies (cores, engine, ports, API, host
    ///   addresses, log format) must be unchanged; otherwise the reload is
    ///   refused naming them.
    /// * Every hook the file names runs what it names: a hook already
    ///   running that program from an unchanged file keeps it (and its
    ///   maps); otherwise the object is loaded (verified) and swapped in by
    ///   compare-and-swap. Pinned maps are handed to the new objects, so
    ///   their contents carry over. Every object is loaded before any
    ///   swap: one that fails to load or verify refuses the reload and
    ///   nothing changes.
    /// * A hook the file no longer names is emptied if the configuration
    ///   put its program there; programs attached by command stay.
    /// * `log.filter` takes effect at once (unless `RUST_LOG` is set).
    fn reload(&self) -> Result<Value> {
        let path = &self.config_path;
        let new = DaemonConfig::load(path)?;
        let mut applied = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        let fixed = applied.restart_fields(&new);
        if !fixed.is_empty() {
            bail!(
                "{}: {} changed, which only a restart applies: nothing changed",
                path.display(),
                fixed.join(", ")
            );
        }
        let mut st = self.state();
        // What the file wants on every hook.
        let mut want: Vec<((usize, Hook), Option<String>)> = Vec::new();
        for (i, pc) in new.ports.iter().enumerate() {
            want.push((
                (i, Hook::Ingress),
                pc.program.clone().or(new.program.clone()),
            ));
            want.push(((i, Hook::Egress), pc.egress.clone()));
        }
        // Phase 1: load everything that changed; any failure undoes the
        // loads (and the pin table) and refuses the reload.
        let pins = st.pins.clone();
        let mut loaded: Vec<((usize, Hook), u32)> = Vec::new();
        let mut unchanged: Vec<Value> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        let mut failure = None;
        for (key, spec) in &want {
            let Some(spec) = spec else { continue };
            let (obj_path, section) = obj_section(spec);
            let obj_path = obj_path.to_string_lossy().into_owned();
            if let Some(id) = self.runs_unchanged(&st, *key, &obj_path, section.as_deref()) {
                unchanged
                    .push(json!({"port": self.names[key.0], "hook": hook_name(key.1), "id": id}));
                continue;
            }
            match Daemon::load(self.ncpus, &mut st, &obj_path, section.as_deref(), false) {
                Ok((id, n)) => {
                    notes.extend(n);
                    loaded.push((*key, id));
                }
                Err(e) => {
                    failure = Some(anyhow!(
                        "{}:{}: {e:#}: nothing changed",
                        self.names[key.0],
                        hook_name(key.1)
                    ));
                    break;
                }
            }
        }
        if let Some(e) = failure {
            for (_, id) in &loaded {
                if let Some(o) = st.progs.get(id).map(|p| p.obj) {
                    st.objects.remove(&o);
                    st.progs.retain(|_, p| p.obj != o);
                }
            }
            st.pins = pins;
            return Err(e);
        }
        // Phase 2: swap. The state lock is held, so every compare-and-swap
        // is against the version the daemon recorded.
        let mut changed = Vec::new();
        for ((port, hook), id) in loaded {
            let old = st.hooks.get(&(port, hook)).map(|a| a.prog);
            let version = self.attach(&mut st, port, hook, id, None, Origin::Config)?;
            changed.push(json!({"port": self.names[port], "hook": hook_name(hook),
                                "old_id": old, "id": id, "version": version}));
        }
        let mut detached = Vec::new();
        for ((port, hook), spec) in &want {
            let cur = st.hooks.get(&(*port, *hook)).copied();
            if let (None, Some(cur)) = (spec, cur) {
                if cur.origin != Origin::Config {
                    continue;
                }
                self.dp
                    .replace(*port, *hook, cur.version, None, "")
                    .map_err(|e| anyhow!("{e}"))?;
                st.hooks.remove(&(*port, *hook));
                *st.swaps.entry((*port, *hook)).or_default() += 1;
                info!(port = %self.names[*port], hook = hook_name(*hook), prog = cur.prog, "program detached by reload");
                detached.push(
                    json!({"port": self.names[*port], "hook": hook_name(*hook), "id": cur.prog}),
                );
            }
        }
        self.collect(&mut st);
        if new.log_filter != applied.log_filter {
            match (&self.log_filter, std::env::var("RUST_LOG")) {
                (_, Ok(v)) if !v.is_empty() => {
                    notes.push("log.filter changed but RUST_LOG is set: RUST_LOG stays".into());
                }
                (Some(set), _) => set(new.log_filter.as_deref().unwrap_or("info"))?,
                (None, _) => {}
            }
        }
        *applied = new;
        info!(config = %path.display(), changed = changed.len(), unchanged = unchanged.len(), detached = detached.len(), "configuration reloaded");
        Ok(
            json!({"config": path.display().to_string(), "changed": changed,
                  "unchanged": unchanged, "detached": detached, "notes": notes}),
        )
    }

    /// The program id on `key` when it is the one `path`/`section` names
    /// and the file has not changed since it was loaded.
    fn runs_unchanged(
        &self,
        st: &State,
        key: (usize, Hook),
        path: &str,
        section: Option<&str>,
    ) -> Option<u32> {
        let a = st.hooks.get(&key)?;
        let p = st.progs.get(&a.prog)?;
        let o = st.objects.get(&p.obj)?;
        if o.path != path {
            return None;
        }
        let same_program = match section {
            Some(s) => o.obj.program(s).is_some_and(|q| q.name == p.name),
            None => o.obj.programs.first().is_some_and(|q| q.name == p.name),
        };
        let bytes = std::fs::read(path).ok()?;
        (same_program && digest(&bytes) == o.digest).then_some(a.prog)
    }

    fn stats_json(&self) -> Value {
        let s = self.dp.stats();
        let mut j = crate::run::stats_json(&s);
        let st = self.state();
        for (i, p) in s.ports.iter().enumerate() {
            let workers: Vec<Value> = p
                .per_worker
                .iter()
                .enumerate()
                .map(|(w, c)| {
                    json!({"worker": w, "rx_packets": c.rx_packets, "rx_bytes": c.rx_bytes,
                           "tx_packets": c.tx_packets, "tx_bytes": c.tx_bytes,
                           "xdp_drop": c.xdp_drop, "xdp_pass": c.xdp_pass, "xdp_tx": c.xdp_tx,
                           "xdp_redirect": c.xdp_redirect, "xdp_aborted": c.xdp_aborted})
                })
                .collect();
            let port = &mut j["ports"][i];
            port["xdp_drop"] = json!(p.total.xdp_drop);
            port["per_worker"] = json!(workers);
            port["swaps"] = json!({
                "ingress": st.swaps.get(&(i, Hook::Ingress)).copied().unwrap_or(0),
                "egress": st.swaps.get(&(i, Hook::Egress)).copied().unwrap_or(0),
            });
            port["ingress_prog_id"] = json!(st.hooks.get(&(i, Hook::Ingress)).map(|a| a.prog));
            port["egress_prog_id"] = json!(st.hooks.get(&(i, Hook::Egress)).map(|a| a.prog));
        }
        j
    }

    fn capture(
        &self,
        port: &str,
        verdicts: &[String],
        path: &str,
        count: Option<u64>,
        duration: Option<f64>,
        snaplen: Option<usize>,
    ) -> Result<Value> {
        let port = resolve_port(&self.names, port)?;
        let v: Vec<u64> = verdicts
            .iter()
            .map(|s| verdict_number(s))
            .collect::<Result<_>>()?;
        let mut w = Writer::create(
            path,
            WriterOptions {
                format: Format::PcapNg,
                ..WriterOptions::default()
            },
        )
        .map_err(|e| anyhow!("{e}"))?;
        let tap = Arc::new(CaptureTap::new(&v, snaplen.unwrap_or(4096), 4096));
        let t0 = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let limit = duration.or(if count.is_none() { Some(10.0) } else { None });
        let deadline = limit.map(|s| Instant::now() + Duration::from_secs_f64(s));
        let max = count.unwrap_or(u64::MAX);
        if !self.dp.capture_start(port, tap.clone()) {
            bail!("no port {port}");
        }
        info!(port = %self.names[port], path, "capture started");
        let mut n = 0u64;
        let mut result = Ok(());
        'outer: loop {
            let mut idle = true;
            while let Some(c) = tap.next() {
                idle = false;
                let comment = format!("verdict={}", verdict_name(c.verdict));
                let r = w.write_packet_full(t0 + c.ts_ns, c.data(), c.len, Some(&comment));
                tap.recycle(c);
                if let Err(e) = r {
                    result = Err(anyhow!("{e}"));
                    break 'outer;
                }
                n += 1;
                if n >= max {
                    break 'outer;
                }
            }
            if self.stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.dp.capture_stop(port);
        result?;
        w.flush().map_err(|e| anyhow!("{e}"))?;
        info!(port = %self.names[port], path, packets = n, "capture done");
        Ok(json!({"port": self.names[port], "path": path, "packets": n, "missed": tap.missed()}))
    }

    /// `map.event_pipe`: opens every slot of a perf event array that has a
    /// worker (the slot of worker `i` is index `i`, as libbpf's perf
    /// buffer puts CPU `i`'s event at key `i`) and writes each sample to
    /// `out` as one `{"event":"sample","cpu":i,"index":i,"data":HEX}` line
    /// (Linux's raw sample, padding included), and each loss as
    /// `{"event":"lost","cpu":i,"lost":N}`, until `count` samples, the
    /// `duration`, the daemon's stop or the client going away (an empty
    /// line every second finds that out). The slots close when it returns.
    fn event_pipe(
        &self,
        map: &str,
        count: Option<u64>,
        duration: Option<f64>,
        out: &mut impl Write,
    ) -> Result<Value> {
        let m = Daemon::find_map(&self.state(), map)?;
        let name = m.def().name.clone();
        if m.def().map_type != MapType::PerfEventArray {
            bail!(
                "map {name} is a {}, not a perf_event_array",
                m.def().map_type.name()
            );
        }
        let slots = (m.def().max_entries as usize).min(self.ncpus);
        let mut readers = (0..slots as u32)
            .map(|i| PerfEventArray::open(&m, i, EVENT_PIPE_PAGES))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("map {name}"))?;
        info!(map = %name, slots, "event pipe opened");
        let deadline = duration.map(|s| Instant::now() + Duration::from_secs_f64(s));
        let max = count.unwrap_or(u64::MAX);
        let (mut samples, mut lost) = (0u64, 0u64);
        let mut last_write = Instant::now();
        let result = 'outer: loop {
            let mut idle = true;
            for r in &mut readers {
                let cpu = r.index();
                let mut failed = None;
                let st = r.read(|data| {
                    if samples >= max || failed.is_some() {
                        return;
                    }
                    let line = json!({"event": "sample", "cpu": cpu, "index": cpu,
                                      "data": hex::encode(data)});
                    match writeln!(out, "{line}") {
                        Ok(()) => samples += 1,
                        Err(e) => failed = Some(e),
                    }
                });
                if st.lost > 0 && failed.is_none() {
                    lost += st.lost;
                    let line = json!({"event": "lost", "cpu": cpu, "lost": st.lost});
                    if let Err(e) = writeln!(out, "{line}") {
                        failed = Some(e);
                    }
                }
                if let Some(e) = failed {
                    break 'outer Err(anyhow!("client gone: {e}"));
                }
                if st.samples > 0 || st.lost > 0 {
                    idle = false;
                    last_write = Instant::now();
                }
            }
            if samples >= max
                || self.stop.load(Ordering::Relaxed)
                || deadline.is_some_and(|d| Instant::now() >= d)
            {
                break Ok(());
            }
            if idle {
                if last_write.elapsed() >= Duration::from_secs(1) {
                    if let Err(e) = writeln!(out) {
                        break Err(anyhow!("client gone: {e}"));
                    }
                    last_write = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        drop(readers);
        info!(map = %name, samples, lost, "event pipe closed");
        result?;
        Ok(json!({"map": name, "id": m.id(), "samples": samples, "lost": lost}))
    }

    /// Prometheus text: the dataplane's families (ports, queues, host
    /// stack), then the daemon's own (swaps, programs).
    fn metrics(&self, host: Option<&sluice_dataplane::host::HostStackStats>) -> String {
        use std::fmt::Write as _;
        let stats = self.dp.stats();
        let mut out = metrics::render(&stats, host);
        let st = self.state();
        let _ = writeln!(
            out,
            "# HELP sluice_program_swaps_total Programs installed on or removed from a hook."
        );
        let _ = writeln!(out, "# TYPE sluice_program_swaps_total counter");
        for (i, name) in self.names.iter().enumerate() {
            for h in [Hook::Ingress, Hook::Egress] {
                let n = st.swaps.get(&(i, h)).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "sluice_program_swaps_total{{port=\"{name}\",hook=\"{}\"}} {n}",
                    hook_name(h)
                );
            }
        }
        let mut hooks: Vec<_> = st.hooks.iter().collect();
        hooks.sort_by_key(|((p, h), _)| (*p, hook_name(*h)));
        let labelled: Vec<(String, usize, Hook, Attachment)> = hooks
            .into_iter()
            .map(|((port, hook), a)| {
                let name = st.progs.get(&a.prog).map_or("", |p| p.name.as_str());
                let labels = format!(
                    "port=\"{}\",hook=\"{}\",prog=\"{}\",id=\"{}\"",
                    self.names[*port],
                    hook_name(*hook),
                    name.replace(['"', '\\', '\n'], ""),
                    a.prog
                );
                (labels, *port, *hook, *a)
            })
            .collect();
        let _ = writeln!(
            out,
            "# HELP sluice_program_info The program on each hook (value 1).\n# TYPE sluice_program_info gauge"
        );
        for (labels, ..) in &labelled {
            let _ = writeln!(out, "sluice_program_info{{{labels}}} 1");
        }
        for (fam, help, secs) in [
            (
                "sluice_program_hook_runs_total",
                "Runs of the program now on a port's ingress, since it was attached.",
                false,
            ),
            (
                "sluice_program_hook_run_seconds_total",
                "Run time of the program now on a port's ingress, since it was attached.",
                true,
            ),
        ] {
            let _ = writeln!(out, "# HELP {fam} {help}\n# TYPE {fam} counter");
            for (labels, port, hook, a) in &labelled {
                if *hook != Hook::Ingress {
                    continue;
                }
                let t = &stats.ports[*port].total;
                if secs {
                    let s = t.prog_ns.saturating_sub(a.ns0) as f64 / 1e9;
                    let _ = writeln!(out, "{fam}{{{labels}}} {s:.9}");
                } else {
                    let n = t.prog_runs.saturating_sub(a.runs0);
                    let _ = writeln!(out, "{fam}{{{labels}}} {n}");
                }
            }
        }
        let fam = "sluice_program_verdicts_total";
        let _ = writeln!(
            out,
            "# HELP {fam} Verdicts of the program now on a port's ingress, since it was attached.\n# TYPE {fam} counter"
        );
        for (labels, port, hook, a) in &labelled {
            if *hook != Hook::Ingress {
                continue;
            }
            let now = verdicts(&stats.ports[*port].total);
            for (i, v) in VERDICTS.iter().enumerate() {
                let n = now[i].saturating_sub(a.verdicts0[i]);
                let _ = writeln!(out, "{fam}{{{labels},verdict=\"{v}\"}} {n}");
            }
        }
        out
    }
}

/// A hash of an object file's bytes (change detection, not security).
fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Decodes a hex key and checks its size.
fn decode_sized(h: &str, size: usize, what: &str) -> Result<Vec<u8>> {
    let b =
        hex::decode(h.trim_start_matches("0x")).with_context(|| format!("{what} is not hex"))?;
    if b.len() != size {
        bail!("{what} has {} bytes, the map takes {size}", b.len());
    }
    Ok(b)
}

/// One element as JSON: hex key and value, plus each CPU's copy for
/// per-CPU maps.
fn entry_json(m: &Map, k: &[u8], v: &[u8]) -> Value {
    let mut e = json!({"key": hex::encode(k), "value": hex::encode(v)});
    if m.def().map_type.is_percpu() {
        let vs = m.def().value_size as usize;
        let stride = vs.next_multiple_of(8).max(1);
        let cpus: Vec<Value> = v
            .chunks(stride)
            .enumerate()
            .map(|(cpu, c)| json!({"cpu": cpu, "value": hex::encode(&c[..vs.min(c.len())])}))
            .collect();
        e["values"] = json!(cpus);
    }
    e
}

/// The bound socket; removed on drop if it is still ours.
pub struct SocketGuard {
    path: PathBuf,
    ino: u64,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the API socket at `path`, mode 0600 from its first moment (see
/// the module docs).
///
/// # Errors
/// A live socket at `path`, something else there, or an OS error.
pub fn bind_socket(path: &Path) -> Result<(UnixListener, SocketGuard)> {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        if UnixStream::connect(path).is_ok() {
            bail!("{}: a daemon is already listening there", path.display());
        }
        warn!(path = %path.display(), "removing a stale socket");
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(parent)
        .with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".sluice-sock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let inner = tmp.join("s");
    let r = (|| -> Result<UnixListener> {
        let l =
            UnixListener::bind(&inner).with_context(|| format!("binding {}", inner.display()))?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inner, path)
            .with_context(|| format!("moving the socket to {}", path.display()))?;
        Ok(l)
    })();
    let _ = std::fs::remove_file(&inner);
    let _ = std::fs::remove_dir(&tmp);
    let l = r?;
    let ino = std::fs::symlink_metadata(path)?.ino();
    Ok((
        l,
        SocketGuard {
            path: path.to_path_buf(),
            ino,
        },
    ))
}

/// Pages of each ring `map.event_pipe` opens (bpftool's default too).
const EVENT_PIPE_PAGES: usize = 16;

/// Serves one connection: a request per line, a response per line.
fn serve_conn(d: Arc<Daemon>, s: UnixStream) {
    let Ok(mut w) = s.try_clone() else { return };
    for line in BufReader::new(s).lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let mut stop = false;
        let resp = match api::parse_request(&line) {
            Ok(api::Request {
                cmd:
                    Command::MapEventPipe {
                        map,
                        count,
                        duration,
                    },
                ..
            }) => match d.event_pipe(&map, count, duration, &mut w) {
                Ok(v) => api::ok(v),
                Err(e) => api::error(format!("{e:#}")),
            },
            Ok(req) => {
                stop = matches!(req.cmd, Command::DaemonStop {});
                d.handle(req, false)
            }
            Err(e) => e,
        };
        let sent = writeln!(w, "{resp}").is_ok();
        if stop {
            d.stop.store(true, Ordering::Relaxed);
        }
        if !sent {
            break;
        }
    }
}

/// Installs the `tracing` subscriber: `RUST_LOG` (else `filter`, else
/// `info`), text or JSON lines on stderr.
pub fn init_logging(format: &str, filter: Option<&str>) -> Result<LogFilter> {
    use tracing_subscriber::EnvFilter;
    let f = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() => EnvFilter::try_new(s),
        _ => EnvFilter::try_new(filter.unwrap_or("info")),
    }
    .map_err(|e| anyhow!("log filter: {e}"))?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(f)
        .with_writer(std::io::stderr);
    // The handle's type depends on the format: wrap each in a closure.
    fn setter<H>(h: H) -> LogFilter
    where
        H: Fn(EnvFilter) -> Result<(), tracing_subscriber::reload::Error> + Send + Sync + 'static,
    {
        Box::new(move |s: &str| {
            let f = EnvFilter::try_new(s).map_err(|e| anyhow!("log filter {s:?}: {e}"))?;
            h(f).map_err(|e| anyhow!("log filter: {e}"))
        })
    }
    match format {
        "json" => {
            let b = b.json().with_filter_reloading();
            let h = b.reload_handle();
            b.try_init().map_err(|e| anyhow!("logging: {e}"))?;
            Ok(setter(move |f| h.reload(f)))
        }
        "text" => {
            let b = b.with_ansi(false).with_filter_reloading();
            let h = b.reload_handle();
            b.try_init().map_err(|e| anyhow!("logging: {e}"))?;
            Ok(setter(move |f| h.reload(f)))
        }
        o => bail!("log format {o:?}: expected text or json"),
    }
}

/// Sets the log filter of the running subscriber.
pub type LogFilter = Box<dyn Fn(&str) -> Result<()> + Send + Sync>;

/// The daemon's signals: SIGHUP reloads the configuration (as for most
/// daemons) instead of ending the process; SIGINT and SIGTERM stop it.
/// The handlers only set flags; the control loop acts on them.
fn catch_signals() -> Result<(Arc<AtomicBool>, Arc<AtomicBool>)> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let (reload, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    signal_hook::flag::register(SIGHUP, reload.clone())
        .and_then(|_| signal_hook::flag::register(SIGINT, stop.clone()))
        .and_then(|_| signal_hook::flag::register(SIGTERM, stop.clone()))
        .context("installing the signal handlers")?;
    Ok((reload, stop))
}

/// `sluice daemon`.
pub fn run(a: DaemonArgs) -> Result<()> {
    let cfg = DaemonConfig::load(&a.config)?;
    let format = a
        .log_format
        .clone()
        .or(cfg.log_format.clone())
        .unwrap_or("text".into());
    let log_filter = init_logging(&format, cfg.log_filter.as_deref())?;
    let socket = a
        .socket
        .clone()
        .or(cfg.socket.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let (listener, guard) = bind_socket(&socket)?;

    let specs: Vec<PortSpec> = cfg
        .ports
        .iter()
        .map(|p| PortSpec::parse(&p.spec))
        .collect::<Result<_, _>>()?;
    let ports = spec::open(&specs)?;
    let cores = match &cfg.cores {
        Some(c) => parse_core_list(c).map_err(anyhow::Error::msg)?,
        None => vec![*sluice_dataplane::allowed_cores().last().unwrap_or(&0)],
    };
    let ncpus = cores.len();
    let names: Vec<String> = ports.iter().map(|p| p.info().name.clone()).collect();
    let engine = match cfg.engine.as_deref() {
        Some("interp") => sluice_bpf::Engine::Interp,
        _ => sluice_bpf::Engine::best(),
    };
    // Programs may be loaded later by command, so the FIB is read up
    // front; programs that never call bpf_fib_lookup never touch it.
    let fib = sluice_dataplane::fib::open(a.fib).unwrap_or_else(|e| {
        warn!(error = %e, "cannot read the kernel's FIB: bpf_fib_lookup sees an empty one");
        None
    });
    let mut builder = Dataplane::builder()
        .cores(cores)
        .engine(engine)
        .burst(cfg.burst.unwrap_or(32))
        .fib(fib.clone());
    for p in &ports {
        builder = builder.port(p.clone());
    }
    let mut host_cfg =
        HostConfig::from_args(&cfg.host_addresses, &cfg.host_gateways, &cfg.host_dhcp)?;
    let host_on = host_cfg.has_interfaces();
    if host_on {
        builder = builder.host_stack(true);
        let port = cfg.http_port.unwrap_or(9100);
        if port != 0 {
            host_cfg.http = Some(HttpConfig {
                port,
                token: cfg.http_token.clone(),
                ..HttpConfig::default()
            });
        }
    }
    // Programs from the configuration, loaded through the same path as the
    // API and installed before the first packet arrives.
    let mut st = State::default();
    let mut initial = Vec::new();
    for (i, pc) in cfg.ports.iter().enumerate() {
        for (hook, prog) in [
            (Hook::Ingress, pc.program.clone().or(cfg.program.clone())),
            (Hook::Egress, pc.egress.clone()),
        ] {
            if let Some(p) = prog {
                let (path, section) = obj_section(&p);
                let path = path.to_string_lossy().into_owned();
                let (id, _) = Daemon::load(ncpus, &mut st, &path, section.as_deref(), false)?;
                let p = &st.progs[&id];
                builder =
                    builder.program(i, hook, p.program.clone(), &format!("{path}:{}", p.name));
                initial.push((i, hook, id));
            }
        }
    }
    let dp = Arc::new(builder.start()?);
    for (i, hook, prog) in initial {
        let version = dp.version(i, hook);
        st.hooks.insert(
            (i, hook),
            Attachment {
                prog,
                version,
                origin: Origin::Config,
                runs0: 0,
                ns0: 0,
                verdicts0: [0; 5],
            },
        );
        *st.swaps.entry((i, hook)).or_default() += 1;
        info!(port = %names[i], hook = hook_name(hook), prog, version, "program attached");
    }
    let d = Arc::new(Daemon {
        dp,
        ncpus,
        names: names.clone(),
        config_path: a.config.clone(),
        config: Mutex::new(cfg.clone()),
        log_filter: Some(log_filter),
        state: Mutex::new(st),
        stop: AtomicBool::new(false),
        host: Mutex::new(None),
        request_log: RateLimit::new(20),
    });
    if host_on {
        let handler = host_cfg.http.is_some().then(|| http_handler(&d));
        let h = HostStack::start(d.dp.host_ports(), host_cfg, handler)?;
        for p in h.stats().ports.iter().filter(|p| !p.addresses.is_empty()) {
            info!(port = %p.name, mac = %p.mac, addresses = %p.addresses.join(" "), "host stack up");
        }
        *d.host.lock().unwrap_or_else(PoisonError::into_inner) = Some(h);
    }
    let (reload, term) = catch_signals()?;
    listener.set_nonblocking(true)?;
    info!(socket = %socket.display(), ports = %names.join(", "), workers = d.dp.workers(), "sluice daemon ready");
    while !d.stop.load(Ordering::Relaxed) {
        if term.load(Ordering::Relaxed) {
            d.stop.store(true, Ordering::Relaxed);
        }
        if reload.swap(false, Ordering::Relaxed) {
            if let Some(f) = &fib {
                match sluice_dataplane::fib::refresh(f) {
                    Ok(()) => info!("SIGHUP: FIB re-read from the kernel"),
                    Err(e) => warn!(error = %e, "SIGHUP: FIB not re-read"),
                }
            }
            match d.reload() {
                Ok(r) => info!(result = %r, "SIGHUP: configuration reloaded"),
                Err(e) => warn!(error = %format!("{e:#}"), "SIGHUP: reload refused"),
            }
        }
        match listener.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                let d = d.clone();
                let _ = std::thread::Builder::new()
                    .name("sluice-api".into())
                    .spawn(move || serve_conn(d, s));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => warn!(error = %e, "accept failed"),
        }
    }
    info!("sluice daemon stopping");
    drop(guard);
    if let Some(h) = d.host.lock().unwrap_or_else(PoisonError::into_inner).take() {
        h.stop();
    }
    let stats = d.dp.stats();
    info!(ports = %serde_json::to_string(&crate::run::stats_json(&stats)).unwrap_or_default(), "final statistics");
    Ok(())
}

/// The host stack's HTTP handler: `/metrics` and `/status` as in
/// `sluice run`, plus `POST /api` (the server has already refused a POST
/// without the token with 401).
fn http_handler(d: &Arc<Daemon>) -> Box<dyn http::Handler> {
    let (m, s) = (d.clone(), d.clone());
    let mut base = http::metrics_status(
        move |host| m.metrics(Some(host)),
        move |_host| s.stats_json().to_string(),
    );
    let d = d.clone();
    Box::new(move |req: &http::Request<'_>| {
        if req.path != "/api" {
            return http::Handler::handle(&mut base, req);
        }
        if req.method != "POST" {
            return http::Response::json(
                405,
                api::error("POST a JSON request to /api").to_string(),
            )
            .with_header("Allow", "POST");
        }
        let body = String::from_utf8_lossy(req.body);
        let (status, resp) = match api::parse_request(&body) {
            Ok(r) => {
                let v = d.handle(r, true);
                (if v["ok"] == json!(true) { 200 } else { 422 }, v)
            }
            Err(e) => (400, e),
        };
        http::Response::json(status, resp.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_what_it_suppresses() {
        let r = RateLimit::new(2);
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
        assert_eq!(r.allow(), None);
        r.window.lock().unwrap().0 -= Duration::from_secs(2);
        assert_eq!(r.allow(), Some(2));
    }

    #[test]
    fn hooks_and_verdicts_parse() {
        let names = vec!["null0".to_string(), "ring:a".to_string()];
        assert_eq!(parse_hook(&names, "0").unwrap(), (0, Hook::Ingress));
        assert_eq!(
            parse_hook(&names, "ring:a:egress").unwrap(),
            (1, Hook::Egress)
        );
        assert_eq!(parse_hook(&names, "a/ingress").unwrap(), (1, Hook::Ingress));
        assert!(parse_hook(&names, "7")
            .unwrap_err()
            .to_string()
            .contains("no port"));
        assert_eq!(verdict_number("XDP_DROP").unwrap(), 1);
        assert_eq!(
            verdict_name(verdict_number("redirect").unwrap()),
            "XDP_REDIRECT"
        );
        assert!(verdict_number("bogus").is_err());
    }
}
