//! `sluice prog ...`: bpftool's `prog` commands over Sluice's runtime.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sluice_bpf::interp::XdpFrame;
use sluice_bpf::maps::Map;
use sluice_bpf::object::{LoadOptions, LoadedObject, LoadedProgram};
use sluice_bpf::Vm;
use sluice_drivers::pcap;

/// Headroom in front of the packet, as the kernel's `BPF_PROG_TEST_RUN` and
/// Sluice's frames have.
pub const HEADROOM: usize = 256;
/// Frame size of `BPF_PROG_TEST_RUN` minus its `skb_shared_info` tailroom:
/// what a program may grow the packet into.
pub const FRAME: usize = 4096 - 320;

/// Arguments of `sluice prog run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The ELF object.
    pub object: PathBuf,
    /// Program by function name or ELF section (default: the first).
    #[arg(long)]
    pub section: Option<String>,
    /// Packet to run the program on (raw bytes).
    #[arg(long, required_unless_present = "pcap_in")]
    pub data_in: Option<PathBuf>,
    /// Where to write the packet after the run.
    #[arg(long)]
    pub data_out: Option<PathBuf>,
    /// Runs (the reported duration is the average).
    #[arg(long, default_value_t = 1)]
    pub repeat: u64,
    /// Map entries to set first: `NAME:KEYHEX=VALUEHEX` (repeatable).
    #[arg(long = "map", value_name = "NAME:KEY=VALUE")]
    pub maps: Vec<String>,
    /// Print every map's contents after the runs.
    #[arg(long)]
    pub dump_maps: bool,
    /// Run every packet of a capture file (pcap or pcapng).
    #[arg(long, conflicts_with = "data_in")]
    pub pcap_in: Option<PathBuf>,
    /// Write the resulting packets, each with its verdict as a comment
    /// (pcapng).
    #[arg(long, requires = "pcap_in")]
    pub pcap_out: Option<PathBuf>,
    /// JSON output.
    #[arg(short = 'j', long)]
    pub json: bool,
    /// Where `bpf_fib_lookup` finds routes and neighbours: `kernel` (this
    /// network namespace's tables, read when the program calls the helper)
    /// or `none` (an empty FIB).
    #[arg(long, default_value = "kernel")]
    pub fib: sluice_dataplane::fib::FibSource,
}

/// The name of an XDP verdict.
pub fn verdict_name(v: u64) -> String {
    match v {
        0 => "XDP_ABORTED".into(),
        1 => "XDP_DROP".into(),
        2 => "XDP_PASS".into(),
        3 => "XDP_TX".into(),
        4 => "XDP_REDIRECT".into(),
        n => format!("unknown({n})"),
    }
}

fn parse_hex(what: &str, s: &str) -> Result<Vec<u8>> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let clean = clean.strip_prefix("0x").unwrap_or(&clean);
    hex::decode(clean).with_context(|| format!("{what} {s:?} is not hex bytes"))
}

/// Loads an object and picks a program, with errors that name both.
pub fn load(object: &Path, section: Option<&str>) -> Result<(LoadedObject, LoadedProgram)> {
    let bytes = std::fs::read(object).with_context(|| format!("reading {}", object.display()))?;
    let obj = LoadedObject::from_elf(&bytes, &LoadOptions::default())
        .with_context(|| format!("loading {}", object.display()))?;
    let prog = match section {
        Some(s) => obj.program(s).cloned().with_context(|| {
            let names: Vec<String> = obj
                .programs
                .iter()
                .map(|p| format!("{} (section {})", p.name, p.section))
                .collect();
            format!(
                "{}: no program or section {s:?}; it has: {}",
                object.display(),
                names.join(", ")
            )
        })?,
        None => obj.programs[0].clone(),
    };
    Ok((obj, prog))
}

fn set_map(obj: &LoadedObject, spec: &str) -> Result<()> {
    let (name, kv) = spec
        .split_once(':')
        .with_context(|| format!("--map {spec:?}: expected NAME:KEYHEX=VALUEHEX"))?;
    let (k, v) = kv
        .split_once('=')
        .with_context(|| format!("--map {spec:?}: expected NAME:KEYHEX=VALUEHEX"))?;
    let map = obj
        .map(name)
        .with_context(|| format!("--map {spec:?}: the object has no map {name:?}"))?;
    let key = parse_hex("key", k)?;
    let value = parse_hex("value", v)?;
    let d = map.def();
    if key.len() != d.key_size as usize {
        bail!(
            "--map {spec:?}: key is {} bytes, map {name} wants {}",
            key.len(),
            d.key_size
        );
    }
    if value.len() != map.value_buf_size() {
        bail!(
            "--map {spec:?}: value is {} bytes, map {name} wants {}",
            value.len(),
            map.value_buf_size()
        );
    }
    map.ops()
        .update(&key, &value, 0)
        .with_context(|| format!("--map {spec:?}"))?;
    Ok(())
}

/// One run of the program on a packet: verdict, packet after, ns per run.
fn run_packet(
    vm: &mut Vm,
    prog: &LoadedProgram,
    packet: &[u8],
    repeat: u64,
) -> Result<(u64, Vec<u8>, u64)> {
    if packet.len() > FRAME - HEADROOM {
        bail!(
            "packet of {} bytes is larger than the {} bytes a frame holds",
            packet.len(),
            FRAME - HEADROOM
        );
    }
    let mut buf = vec![0u8; FRAME];
    let mut verdict = 0;
    let mut out = Vec::new();
    let started = Instant::now();
    for _ in 0..repeat.max(1) {
        buf[..HEADROOM].fill(0);
        buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
        let mut frame = XdpFrame::new(&mut buf, HEADROOM, HEADROOM + packet.len());
        verdict = vm
            .run_xdp(&prog.program, &mut frame)
            .context("the program faulted")?;
        // As BPF_PROG_TEST_RUN: the metadata, if any, comes first.
        out = frame.buf[frame.meta..frame.end].to_vec();
    }
    let ns = started.elapsed().as_nanos() as u64 / repeat.max(1);
    Ok((verdict, out, ns))
}

/// The contents of one map, as bpftool's JSON dump.
pub fn dump_map(map: &Map) -> Value {
    let entries: Vec<Value> = map
        .keys()
        .into_iter()
        .filter_map(|k| {
            map.lookup_vec(&k)
                .ok()
                .map(|v| json!({ "key": k, "value": v }))
        })
        .collect();
    json!({
        "id": map.id(),
        "name": map.def().name,
        "type": map.def().map_type.name(),
        "entries": entries,
    })
}

fn print_map_text(map: &Map) {
    println!("map {} ({}):", map.def().name, map.def().map_type.name());
    let keys = map.keys();
    if keys.is_empty() {
        println!("  (empty)");
    }
    for k in keys {
        if let Ok(v) = map.lookup_vec(&k) {
            println!("  key: {}  value: {}", spaced_hex(&k), spaced_hex(&v));
        }
    }
}

fn spaced_hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `sluice prog run`.
pub fn run(a: &RunArgs) -> Result<()> {
    let (obj, prog) = load(&a.object, a.section.as_deref())?;
    for spec in &a.maps {
        set_map(&obj, spec)?;
    }
    let mut vm = Vm::new();
    if prog
        .program
        .calls_helper(sluice_bpf::helpers::id::FIB_LOOKUP)
    {
        vm.set_fib(sluice_dataplane::fib::open(a.fib).context("reading the kernel's FIB")?);
    }
    let mut result = serde_json::Map::new();
    if let Some(input) = &a.pcap_in {
        let reader =
            pcap::Reader::open(input).with_context(|| format!("reading {}", input.display()))?;
        let mut writer = match &a.pcap_out {
            Some(p) => Some(
                pcap::Writer::create(
                    p,
                    pcap::WriterOptions {
                        format: pcap::Format::PcapNg,
                        ..Default::default()
                    },
                )
                .with_context(|| format!("creating {}", p.display()))?,
            ),
            None => None,
        };
        let mut verdicts = std::collections::BTreeMap::<String, u64>::new();
        let mut packets = Vec::new();
        for (i, p) in reader.packets().enumerate() {
            let (v, out, ns) = run_packet(&mut vm, &prog, p.data, a.repeat)
                .with_context(|| format!("{} packet {}", input.display(), i + 1))?;
            *verdicts.entry(verdict_name(v)).or_default() += 1;
            if let Some(w) = writer.as_mut() {
                let comment = format!("sluice verdict={}", verdict_name(v));
                w.write_packet_full(p.ts_ns, &out, out.len() as u32, Some(&comment))?;
            }
            if a.json {
                packets.push(json!({ "retval": v, "duration": ns, "len": out.len() }));
            } else {
                println!(
                    "packet {}: Return value: {v} ({}), duration (average): {ns}ns",
                    i + 1,
                    verdict_name(v)
                );
            }
        }
        if let Some(w) = writer.as_mut() {
            w.flush()?;
        }
        if a.json {
            result.insert("packets".into(), json!(packets));
            result.insert("verdicts".into(), json!(verdicts));
        } else {
            let summary: Vec<String> = verdicts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            println!("{} packets; {}", reader.len(), summary.join(", "));
        }
    } else {
        let input = a
            .data_in
            .as_ref()
            .context("--data-in or --pcap-in is required")?;
        let packet =
            std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
        let (v, out, ns) = run_packet(&mut vm, &prog, &packet, a.repeat)?;
        if let Some(path) = &a.data_out {
            std::fs::write(path, &out).with_context(|| format!("writing {}", path.display()))?;
        }
        if a.json {
            result.insert("retval".into(), json!(v));
            result.insert("duration".into(), json!(ns));
            result.insert("data_out".into(), json!(out));
        } else {
            println!("Return value: {v}, duration (average): {ns}ns");
        }
    }
    if a.dump_maps {
        if a.json {
            result.insert(
                "maps".into(),
                Value::Array(obj.maps.iter().map(|m| dump_map(m)).collect()),
            );
        } else {
            for m in &obj.maps {
                print_map_text(m);
            }
        }
    }
    if a.json {
        println!("{}", Value::Object(result));
    }
    Ok(())
}

/// Arguments of `sluice prog verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The ELF object.
    pub object: PathBuf,
    /// Only this program (function name or section).
    #[arg(long)]
    pub section: Option<String>,
    /// Print the verifier's log (every instruction with its state).
    #[arg(short, long)]
    pub verbose: bool,
    /// JSON output.
    #[arg(short = 'j', long)]
    pub json: bool,
}

/// `sluice prog verify`: exit status 0 only when every program is accepted.
pub fn verify(a: &VerifyArgs) -> Result<std::process::ExitCode> {
    use sluice_bpf::elf::{self, ProgType};
    use sluice_bpf::helpers::Registry;
    use sluice_bpf::maps::MapDef;
    use sluice_bpf::verifier::{self, ProgKind, VerifyOptions};

    let bytes =
        std::fs::read(&a.object).with_context(|| format!("reading {}", a.object.display()))?;
    let obj = elf::parse(&bytes).with_context(|| format!("parsing {}", a.object.display()))?;
    let defs: Vec<MapDef> = obj.maps.iter().map(|m| m.def.clone()).collect();
    let opts = VerifyOptions {
        log_level: if a.verbose { 2 } else { 0 },
        ..Default::default()
    };
    let mut refused = 0;
    let mut checked = 0;
    let mut results = Vec::new();
    for p in &obj.programs {
        if let Some(s) = &a.section {
            if &p.name != s && &p.section != s {
                continue;
            }
        }
        checked += 1;
        if !matches!(
            p.prog_type,
            ProgType::Xdp | ProgType::XdpFrags | ProgType::Unspec
        ) {
            refused += 1;
            let why = format!(
                "program type {:?} is not supported: Sluice runs XDP programs",
                p.prog_type
            );
            if a.json {
                results.push(json!({ "name": p.name, "section": p.section, "accepted": false, "error": why }));
            } else {
                println!("{} (section {}): refused: {why}", p.name, p.section);
            }
            continue;
        }
        match verifier::verify(&p.insns, ProgKind::Xdp, &Registry::xdp(), &defs, &opts) {
            Ok(v) => {
                if a.json {
                    results.push(json!({
                        "name": p.name, "section": p.section, "accepted": true,
                        "insns": p.insns.len(),
                        "insns_processed": v.stats.insns_processed,
                        "states": v.stats.states,
                        "duration_us": v.stats.duration.as_secs_f64() * 1e6,
                    }));
                } else {
                    if a.verbose {
                        print!("{}", v.log);
                    }
                    println!(
                        "{} (section {}): accepted: {} insns, {} processed, {} states, {:.1} us",
                        p.name,
                        p.section,
                        p.insns.len(),
                        v.stats.insns_processed,
                        v.stats.states,
                        v.stats.duration.as_secs_f64() * 1e6
                    );
                }
            }
            Err(e) => {
                refused += 1;
                if a.json {
                    results.push(json!({ "name": p.name, "section": p.section, "accepted": false, "error": e.to_string() }));
                } else {
                    if a.verbose {
                        print!("{}", e.log);
                    }
                    println!("{} (section {}): refused:\n{e}", p.name, p.section);
                }
            }
        }
    }
    if checked == 0 {
        bail!(
            "{}: no program {:?}",
            a.object.display(),
            a.section.as_deref().unwrap_or("")
        );
    }
    if a.json {
        println!(
            "{}",
            json!({ "object": a.object.display().to_string(), "programs": results, "refused": refused })
        );
    }
    Ok(if refused == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
