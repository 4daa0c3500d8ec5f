//! The `sluice` command line as the daemon's client: `prog`, `map`,
//! `port`, `stats`, `capture`, speaking like bpftool and xdp-loader.
//!
//! Every command sends one [`api::Request`] over the Unix socket
//! (`--socket PATH`, default [`DEFAULT_SOCKET`]) and renders the answer:
//! bpftool-like text, or with `-j` the response object itself. In JSON
//! mode an error is a JSON object on stdout too
//! (`{"v":1,"ok":false,"error":"..."}`), with a non-zero exit.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::api::{self, parse_bytes, spaced_hex, Command, Request};
use crate::config::DEFAULT_SOCKET;

/// Options every client command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// The daemon's socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// JSON output (errors too).
    #[arg(short = 'j', long)]
    pub json: bool,
}

/// `prog ...` client commands.
#[derive(Debug, clap::Subcommand)]
pub enum ProgCmd {
    /// Load an object (verified) and optionally attach a program.
    Load {
        /// The object file.
        obj: PathBuf,
        /// Program name or section.
        #[arg(long)]
        section: Option<String>,
        /// `PORT[:ingress|egress]`.
        #[arg(long)]
        attach: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Replace a hook's program with one from OBJ (compare-and-swap).
    Replace {
        /// `PORT[:ingress|egress]`.
        port: String,
        /// The object file.
        obj: PathBuf,
        /// Program name or section.
        #[arg(long)]
        section: Option<String>,
        /// Only if the hook still runs this program id.
        #[arg(long = "expect-id")]
        expect_id: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Empty a hook.
    Detach {
        /// `PORT[:ingress|egress]`.
        port: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Forget a loaded, unattached program's object.
    Unload {
        /// Program id.
        id: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// List programs.
    Show {
        #[command(flatten)]
        conn: Conn,
    },
    /// Disassemble a program: `prog dump xlated ID`.
    Dump {
        /// `xlated` or `jited`.
        kind: String,
        /// Program id (`id N` is accepted too).
        #[arg(num_args = 1..=2)]
        id: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `map ...` commands.
#[derive(Debug, clap::Subcommand)]
pub enum MapCmd {
    /// List maps.
    Show {
        #[command(flatten)]
        conn: Conn,
    },
    /// Every element: `map dump NAME`.
    Dump {
        /// Map name or `id:N`.
        map: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// `map lookup NAME key BYTES..`.
    Lookup {
        /// Map name or `id:N`.
        map: String,
        /// `key BYTES..`.
        #[arg(num_args = 1..)]
        words: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// `map update NAME key BYTES.. value BYTES.. [any|noexist|exist]`.
    Update {
        /// Map name or `id:N`.
        map: String,
        /// `key BYTES.. value BYTES.. [flag]`.
        #[arg(num_args = 1..)]
        words: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// `map delete NAME key BYTES..`.
    Delete {
        /// Map name or `id:N`.
        map: String,
        /// `key BYTES..`.
        #[arg(num_args = 1..)]
        words: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// `map event_pipe NAME`: the samples programs write into a perf
    /// event array, one line each, like bpftool's.
    #[command(name = "event_pipe")]
    EventPipe {
        /// Map name or `id:N`.
        map: String,
        /// Stop after this many samples.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Keep a map across program replacement.
    Pin {
        /// Map name or `id:N`.
        map: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop keeping a map.
    Unpin {
        /// Pinned name.
        map: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `port ...` commands.
#[derive(Debug, clap::Subcommand)]
pub enum PortCmd {
    /// The ports: driver, mode, queues, ifindex.
    List {
        #[command(flatten)]
        conn: Conn,
    },
}

/// `sluice stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Seconds between lines.
    #[arg(short, long, default_value_t = 1.0)]
    pub interval: f64,
    /// Stop after this many lines.
    #[arg(short, long)]
    pub count: Option<u64>,
    /// Per-queue detail (the core serving each queue, verdicts, the
    /// driver's drops) and the dataplane's drops by reason.
    #[arg(short = 'e', long)]
    pub extended: bool,
    #[command(flatten)]
    pub conn: Conn,
}

/// `sluice capture`.
#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// Port number or name.
    pub port: String,
    /// Keep packets with this verdict (repeatable; default all).
    #[arg(long = "verdict")]
    pub verdicts: Vec<String>,
    /// Output pcapng file.
    #[arg(short = 'w', value_name = "FILE.pcapng")]
    pub write: PathBuf,
    /// Stop after this many packets.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds (default 10 without --count).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Bytes kept per packet.
    #[arg(long)]
    pub snaplen: Option<usize>,
    #[command(flatten)]
    pub conn: Conn,
}

/// One connection to the daemon.
pub struct Client {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the socket.
    ///
    /// # Errors
    /// The socket's path and the OS error.
    pub fn connect(path: &Path) -> Result<Client> {
        let s = UnixStream::connect(path)
            .with_context(|| format!("connecting to the daemon at {}", path.display()))?;
        Ok(Client {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    /// Sends a command; the whole response (ok or not).
    ///
    /// # Errors
    /// I/O errors and unparsable answers.
    pub fn call(&mut self, cmd: Command) -> Result<Value> {
        let line = serde_json::to_string(&Request::new(cmd))?;
        writeln!(self.w, "{line}").context("sending to the daemon")?;
        let mut resp = String::new();
        self.r
            .read_line(&mut resp)
            .context("reading the daemon's answer")?;
        if resp.is_empty() {
            bail!("the daemon closed the connection");
        }
        serde_json::from_str(&resp).context("the daemon's answer is not JSON")
    }
}

/// Sends `cmd`; prints the answer with `text` (or as JSON); the exit code.
fn one(conn: &Conn, cmd: Command, text: impl FnOnce(&Value)) -> Result<ExitCode> {
    let resp = Client::connect(&conn.socket).and_then(|mut c| c.call(cmd));
    finish(conn.json, resp, text)
}

fn finish(json: bool, resp: Result<Value>, text: impl FnOnce(&Value)) -> Result<ExitCode> {
    let resp = match resp {
        Ok(r) => r,
        Err(e) if json => api::error(format!("{e:#}")),
        Err(e) => return Err(e),
    };
    if resp["ok"] != Value::Bool(true) {
        if json {
            println!("{resp}");
            return Ok(ExitCode::FAILURE);
        }
        bail!("{}", resp["error"].as_str().unwrap_or("unknown error"));
    }
    if json {
        println!("{resp}");
    } else {
        text(&resp);
    }
    Ok(ExitCode::SUCCESS)
}

/// An error before anything was sent, as JSON in JSON mode.
fn usage_error(json: bool, e: anyhow::Error) -> Result<ExitCode> {
    finish(json, Err(e), |_| {})
}

fn abs(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        o => o.to_string(),
    }
}

fn notes(r: &Value) {
    for n in r["notes"].as_array().into_iter().flatten() {
        eprintln!("sluice: note: {}", s(n));
    }
}

/// A key, an optional value and an optional update flag.
type KeyValue = (Vec<u8>, Option<Vec<u8>>, Option<String>);

/// Splits `key BYTES.. [value BYTES..] [flag]`.
fn key_value(words: &[String]) -> Result<KeyValue> {
    let mut it = words.iter().peekable();
    match it.next().map(String::as_str) {
        Some("key") => {}
        _ => bail!("expected `key BYTES..` (bpftool syntax: key 0x0a 0 0 0)"),
    }
    let mut key = Vec::new();
    let mut value = None;
    let mut flag = None;
    let mut cur: Vec<String> = Vec::new();
    let mut in_value = false;
    for w in it {
        match w.as_str() {
            "value" if !in_value => {
                key = parse_bytes(&std::mem::take(&mut cur)).map_err(|e| anyhow!("key: {e}"))?;
                in_value = true;
            }
            "any" | "noexist" | "exist" => flag = Some(w.clone()),
            _ => cur.push(w.clone()),
        }
    }
    if in_value {
        value = Some(parse_bytes(&cur).map_err(|e| anyhow!("value: {e}"))?);
    } else {
        key = parse_bytes(&cur).map_err(|e| anyhow!("key: {e}"))?;
    }
    if key.is_empty() {
        bail!("empty key");
    }
    Ok((key, value, flag))
}

fn print_entry(e: &Value) {
    let h = |x: &Value| spaced_hex(&hex::decode(x.as_str().unwrap_or("")).unwrap_or_default());
    if let Some(cpus) = e["values"].as_array() {
        println!("key: {}", h(&e["key"]));
        for c in cpus {
            println!(
                "value (CPU {:02}): {}",
                c["cpu"].as_u64().unwrap_or(0),
                h(&c["value"])
            );
        }
    } else {
        println!("key: {}  value: {}", h(&e["key"]), h(&e["value"]));
    }
}

/// `sluice prog ...` (daemon commands).
pub fn prog(cmd: ProgCmd) -> Result<ExitCode> {
    match cmd {
        ProgCmd::Load {
            obj,
            section,
            attach,
            conn,
        } => one(
            &conn,
            Command::ProgLoad {
                path: abs(&obj),
                section,
                attach,
            },
            |r| {
                notes(r);
                match r["version"].as_u64() {
                    Some(v) => println!("loaded program {} (attached, version {v})", s(&r["id"])),
                    None => println!("loaded program {}", s(&r["id"])),
                }
            },
        ),
        ProgCmd::Replace {
            port,
            obj,
            section,
            expect_id,
            conn,
        } => one(
            &conn,
            Command::ProgReplace {
                port,
                path: abs(&obj),
                section,
                expect_id,
            },
            |r| {
                notes(r);
                println!(
                    "replaced program {} with {} (version {})",
                    s(&r["old_id"]),
                    s(&r["id"]),
                    s(&r["version"])
                );
            },
        ),
        ProgCmd::Detach { port, conn } => one(&conn, Command::ProgDetach { port }, |r| {
            println!("detached program {}", s(&r["id"]));
        }),
        ProgCmd::Unload { id, conn } => one(&conn, Command::ProgUnload { id }, |_| {}),
        ProgCmd::Show { conn } => one(&conn, Command::ProgShow {}, |r| {
            for p in r["programs"].as_array().into_iter().flatten() {
                println!(
                    "{}: xdp  name {}  section {}  insns {}",
                    s(&p["id"]),
                    s(&p["name"]),
                    s(&p["section"]),
                    s(&p["insns"])
                );
                println!("\tobject {}  map_ids {}", s(&p["object"]), p["map_ids"]);
                for a in p["attached"].as_array().into_iter().flatten() {
                    println!(
                        "\tattached {}:{}  version {}  run_cnt {}  run_time_ns {}",
                        s(&a["port"]),
                        s(&a["hook"]),
                        s(&a["version"]),
                        s(&a["run_cnt"]),
                        s(&a["run_time_ns"])
                    );
                }
            }
        }),
        ProgCmd::Dump { kind, id, conn } => {
            let n = id.last().cloned().unwrap_or_default();
            let Ok(id) = n.parse::<u32>() else {
                return usage_error(conn.json, anyhow!("program id {n:?} is not a number"));
            };
            one(
                &conn,
                Command::ProgDump {
                    id,
                    kind: kind.clone(),
                },
                |r| {
                    for l in r[kind.as_str()].as_array().into_iter().flatten() {
                        println!("{}", s(l));
                    }
                },
            )
        }
    }
}

/// `sluice map ...`.
pub fn map(cmd: MapCmd) -> Result<ExitCode> {
    match cmd {
        MapCmd::Show { conn } => one(&conn, Command::MapShow {}, |r| {
            for m in r["maps"].as_array().into_iter().flatten() {
                println!(
                    "{}: {}  name {}  flags {:#x}",
                    s(&m["id"]),
                    s(&m["type"]),
                    s(&m["name"]),
                    m["flags"].as_u64().unwrap_or(0)
                );
                let pinned = match m["pinned"].as_str() {
                    Some(p) => format!("  pinned ({p})"),
                    None => String::new(),
                };
                println!(
                    "\tkey {}B  value {}B  max_entries {}  entries {}{pinned}",
                    s(&m["key_size"]),
                    s(&m["value_size"]),
                    s(&m["max_entries"]),
                    s(&m["entries"])
                );
            }
        }),
        MapCmd::Dump { map, conn } => one(&conn, Command::MapDump { map }, |r| {
            let e = r["entries"].as_array().cloned().unwrap_or_default();
            for x in &e {
                print_entry(x);
            }
            println!(
                "Found {} element{}",
                e.len(),
                if e.len() == 1 { "" } else { "s" }
            );
        }),
        MapCmd::Lookup { map, words, conn } => match key_value(&words) {
            Ok((k, None, _)) => one(
                &conn,
                Command::MapLookup {
                    map,
                    key: hex::encode(k),
                },
                print_entry,
            ),
            Ok(_) => usage_error(conn.json, anyhow!("lookup takes only a key")),
            Err(e) => usage_error(conn.json, e),
        },
        MapCmd::Update { map, words, conn } => match key_value(&words) {
            Ok((k, Some(v), flags)) => one(
                &conn,
                Command::MapUpdate {
                    map,
                    key: hex::encode(k),
                    value: hex::encode(v),
                    flags,
                },
                |_| {},
            ),
            Ok(_) => usage_error(
                conn.json,
                anyhow!("update needs `key BYTES.. value BYTES..`"),
            ),
            Err(e) => usage_error(conn.json, e),
        },
        MapCmd::Delete { map, words, conn } => match key_value(&words) {
            Ok((k, None, _)) => one(
                &conn,
                Command::MapDelete {
                    map,
                    key: hex::encode(k),
                },
                |_| {},
            ),
            Ok(_) => usage_error(conn.json, anyhow!("delete takes only a key")),
            Err(e) => usage_error(conn.json, e),
        },
        MapCmd::EventPipe {
            map,
            count,
            duration,
            conn,
        } => event_pipe(
            &conn,
            Command::MapEventPipe {
                map,
                count,
                duration,
            },
        ),
        MapCmd::Pin { map, conn } => one(&conn, Command::MapPin { map }, |r| {
            println!("pinned map {} (id {})", s(&r["name"]), s(&r["id"]));
        }),
        MapCmd::Unpin { map, conn } => one(&conn, Command::MapUnpin { map }, |r| {
            println!("unpinned map {} (id {})", s(&r["name"]), s(&r["id"]));
        }),
    }
}

/// `sluice map event_pipe`: prints each `{"event": ...}` line the daemon
/// streams (as is with `-j`; else `CPU: 0 index: 0: 0a 0b ..` and `lost N
/// events`, as bpftool words them) until its answer.
fn event_pipe(conn: &Conn, cmd: Command) -> Result<ExitCode> {
    let resp = Client::connect(&conn.socket).and_then(|mut c| {
        let line = serde_json::to_string(&Request::new(cmd))?;
        writeln!(c.w, "{line}").context("sending to the daemon")?;
        let stdout = std::io::stdout();
        loop {
            let mut line = String::new();
            if c.r.read_line(&mut line).context("reading the daemon")? == 0 {
                bail!("the daemon closed the connection");
            }
            if line.trim().is_empty() {
                continue; // the daemon checking that we are still here
            }
            let v: Value = serde_json::from_str(&line).context("the daemon's line is not JSON")?;
            if v.get("ok").is_some() {
                break Ok(v);
            }
            let mut out = stdout.lock();
            if conn.json {
                writeln!(out, "{v}")?;
            } else if v["event"] == "lost" {
                writeln!(out, "lost {} events", s(&v["lost"]))?;
            } else {
                let data = hex::decode(v["data"].as_str().unwrap_or("")).unwrap_or_default();
                writeln!(
                    out,
                    "CPU: {} index: {}: {}",
                    s(&v["cpu"]),
                    s(&v["index"]),
                    api::spaced_hex(&data)
                )?;
            }
            out.flush()?;
        }
    });
    finish(conn.json, resp, |r| {
        eprintln!("{} samples, {} lost", s(&r["samples"]), s(&r["lost"]));
    })
}

/// `sluice port list`.
pub fn port(cmd: PortCmd) -> Result<ExitCode> {
    let PortCmd::List { conn } = cmd;
    one(&conn, Command::PortList {}, |r| {
        println!(
            "{:<4} {:<20} {:<8} {:<10} {:>7} {:>6} {:>6} {:>8} {:>8}",
            "idx", "name", "driver", "mode", "ifindex", "rxq", "txq", "ingress", "egress"
        );
        for p in r["ports"].as_array().into_iter().flatten() {
            println!(
                "{:<4} {:<20} {:<8} {:<10} {:>7} {:>6} {:>6} {:>8} {:>8}",
                s(&p["index"]),
                s(&p["name"]),
                s(&p["driver"]),
                s(&p["mode"]),
                s(&p["ifindex"]),
                s(&p["rx_queues"]),
                s(&p["tx_queues"]),
                s(&p["ingress_version"]),
                s(&p["egress_version"])
            );
        }
        println!(
            "\n{:<20} {:<4} {:>5} {:>6} {:>5}",
            "port", "dir", "queue", "worker", "core"
        );
        for p in r["ports"].as_array().into_iter().flatten() {
            for q in p["queues"].as_array().into_iter().flatten() {
                println!(
                    "{:<20} {:<4} {:>5} {:>6} {:>5}",
                    s(&p["name"]),
                    s(&q["direction"]),
                    s(&q["queue"]),
                    s(&q["worker"]),
                    core(&q["core"])
                );
            }
        }
        println!("workers: {}", s(&r["workers"]));
    })
}

/// A core number, or "-" for an unpinned worker.
fn core(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "-".to_string(), |c| c.to_string())
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// `sluice stats`: one line per port per interval, like xdp-bench.
pub fn stats(a: StatsArgs) -> Result<ExitCode> {
    let mut c = match Client::connect(&a.conn.socket) {
        Ok(c) => c,
        Err(e) => return usage_error(a.conn.json, e),
    };
    let mut prev: Option<(Instant, Value)> = None;
    let mut lines = 0u64;
    let interval = Duration::from_secs_f64(a.interval.max(0.05));
    loop {
        let r = match c.call(Command::Stats {}) {
            Ok(r) if r["ok"] == Value::Bool(true) => r,
            other => return finish(a.conn.json, other, |_| {}),
        };
        let now = Instant::now();
        if let Some((t, p)) = &prev {
            let secs = now.duration_since(*t).as_secs_f64().max(1e-9);
            if a.conn.json {
                println!("{r}");
            } else {
                for (port, old) in r["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .zip(p["ports"].as_array().into_iter().flatten())
                {
                    let d = |k: &str| u(&port[k]).saturating_sub(u(&old[k])) as f64 / secs;
                    let drop_now: u64 = port["dropped"]
                        .as_object()
                        .map_or(0, |m| m.values().map(u).sum());
                    let drop_old: u64 = old["dropped"]
                        .as_object()
                        .map_or(0, |m| m.values().map(u).sum());
                    println!(
                        "{:<16} {:>12.0} rx/s {:>12.0} tx/s {:>12.0} drop/s {:>10.0} pass/s {:>10.0} redir/s {:>8.0} abort/s",
                        s(&port["name"]),
                        d("rx_packets"),
                        d("tx_packets"),
                        drop_now.saturating_sub(drop_old) as f64 / secs,
                        d("passed"),
                        d("redirected"),
                        d("aborted"),
                    );
                    if a.extended {
                        print_queues(port, old, secs);
                        let reasons: Vec<String> = port["dropped"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| {
                                format!("{k}={}", u(v).saturating_sub(u(&old["dropped"][k])))
                            })
                            .collect();
                        println!("  drops: {}", reasons.join(" "));
                    }
                }
            }
            lines += 1;
            if a.count.is_some_and(|n| lines >= n) {
                return Ok(ExitCode::SUCCESS);
            }
        }
        prev = Some((now, r));
        std::thread::sleep(interval);
    }
}

/// `stats -e`: one line per RX queue (verdict rates, the driver's drops
/// by reason) and per TX queue, each with the core serving it, like
/// xdp-bench's per-CPU lines.
fn print_queues(port: &Value, old: &Value, secs: f64) {
    let rate =
        |new: &Value, old: &Value, k: &str| u(&new[k]).saturating_sub(u(&old[k])) as f64 / secs;
    let drivers = |new: &Value, old: &Value| -> String {
        let d: Vec<String> = new["driver"]["drops"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let n = u(v).saturating_sub(u(&old["driver"]["drops"][k]));
                (n > 0).then(|| format!("{k}={n}"))
            })
            .collect();
        if d.is_empty() {
            String::new()
        } else {
            format!("  driver drops: {}", d.join(" "))
        }
    };
    for dir in ["rx", "tx"] {
        let olds = old["queues"][dir].as_array().cloned().unwrap_or_default();
        for (i, q) in port["queues"][dir]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let o = olds.get(i).unwrap_or(&Value::Null);
            if dir == "rx" {
                println!(
                    "  rx q{:<3} core {:>3} {:>12.0} rx/s   drop {:.0} pass {:.0} tx {:.0} redirect {:.0} aborted {:.0} /s{}",
                    s(&q["queue"]),
                    core(&q["core"]),
                    rate(q, o, "rx_packets"),
                    rate(q, o, "xdp_drop"),
                    rate(q, o, "xdp_pass"),
                    rate(q, o, "xdp_tx"),
                    rate(q, o, "xdp_redirect"),
                    rate(q, o, "xdp_aborted"),
                    drivers(q, o),
                );
            } else {
                println!(
                    "  tx q{:<3} core {:>3} {:>12.0} tx/s   tx_full {:.0} /s{}",
                    s(&q["queue"]),
                    core(&q["core"]),
                    rate(q, o, "tx_packets"),
                    rate(q, o, "tx_full"),
                    drivers(q, o),
                );
            }
        }
    }
}

/// `sluice config reload`: what changed on each hook.
pub fn reload(conn: &Conn) -> Result<ExitCode> {
    one(conn, Command::ConfigReload {}, |r| {
        println!("reloaded {}", s(&r["config"]));
        for c in r["changed"].as_array().into_iter().flatten() {
            println!(
                "  {}:{}: program {} -> {} (version {})",
                s(&c["port"]),
                s(&c["hook"]),
                s(&c["old_id"]),
                s(&c["id"]),
                s(&c["version"])
            );
        }
        for c in r["unchanged"].as_array().into_iter().flatten() {
            println!(
                "  {}:{}: unchanged (program {})",
                s(&c["port"]),
                s(&c["hook"]),
                s(&c["id"])
            );
        }
        for c in r["detached"].as_array().into_iter().flatten() {
            println!(
                "  {}:{}: program {} detached",
                s(&c["port"]),
                s(&c["hook"]),
                s(&c["id"])
            );
        }
        notes(r);
    })
}

/// `sluice capture PORT -w FILE.pcapng`.
pub fn capture(a: CaptureArgs) -> Result<ExitCode> {
    one(
        &a.conn,
        Command::Capture {
            port: a.port,
            verdicts: a.verdicts,
            path: abs(&a.write),
            count: a.count,
            duration: a.duration,
            snaplen: a.snaplen,
        },
        |r| {
            println!(
                "{} packets captured on {} to {} ({} missed)",
                s(&r["packets"]),
                s(&r["port"]),
                s(&r["path"]),
                s(&r["missed"])
            );
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn key_value_words() {
        let (k, v, f) = key_value(&w("key 0x0a 0 0 0 value 1 0 0 0 noexist")).unwrap();
        assert_eq!(
            (k, v.unwrap(), f.unwrap()),
            (vec![10, 0, 0, 0], vec![1, 0, 0, 0], "noexist".into())
        );
        let (k, v, _) = key_value(&w("key 0a000000")).unwrap();
        assert_eq!((k, v), (vec![10, 0, 0, 0], None));
        assert!(key_value(&w("0a")).is_err());
    }
}
