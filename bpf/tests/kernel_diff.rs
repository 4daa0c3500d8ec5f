//! Differential test against the Linux kernel: every XDP program under
//! `tests/progs/` runs on every packet of `common::packets` both in the
//! kernel (`BPF_PROG_TEST_RUN`, through bpftool; see `common::kernel`) and
//! in Sluice, and the two must agree on
//!
//! * the verdict (the program's return value),
//! * the frame afterwards, from `data_meta` to `data_end` (what the kernel
//!   returns as `data_out`, so metadata a program adds is compared too),
//! * the contents of the maps the program writes, after every packet;
//!   for a ring buffer, the records produced so far.
//!
//! Each program gets one loaded object per side; the packets go through it
//! in order, so map state accumulates on both sides alike. Per-CPU maps are
//! compared as the sum over CPUs of each 64-bit word (the kernel runs the
//! program on whichever CPU the test thread is on; Sluice on worker 0).
//! Ring buffers are read without consuming on the kernel side (see
//! `common::kernel`) and drained after every packet on Sluice's, so both
//! give every record since the start. The maps the test only seeds (devmap,
//! prog array) are not compared; the programs count what they do with them
//! into array maps that are.
//!
//! Sluice runs each packet in a frame laid out like the kernel's: 256 bytes
//! of headroom, the packet, and tailroom up to 4096 - 320 bytes, arriving on
//! ifindex 1 (test runs arrive on the loopback device).
//!
//! Every difference is listed in detail and fails the test. When the
//! kernel cannot be used (not root, no bpftool, no bpf(2)) the test prints
//! a loud `SKIPPED` line and passes, except with `CI=true`, where it fails.

// `common` is shared by several test crates; this one uses a part of it.
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::sync::Arc;

use common::kernel::{self, KernelObject, TestRun};
use common::packets::{self, TestPacket};
use sluice_bpf::interp::XdpFrame;
use sluice_bpf::maps::prog_array::ProgArray;
use sluice_bpf::maps::ringbuf::RingBuf;
use sluice_bpf::maps::Map;
use sluice_bpf::object::{LoadOptions, LoadedObject};
use sluice_bpf::{Program, Vm};

/// Where the test programs and their committed objects are.
fn progs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/progs")
}

/// Map contents both sides get before the first packet.
enum Seed {
    /// `map[key] = value`.
    Elem {
        map: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Slot `index` of prog array `map` holds program `prog` of the object.
    TailCall {
        map: &'static str,
        index: u32,
        prog: &'static str,
    },
}

/// One program of the suite: which object, where packets enter, how the
/// maps are prepared, which maps are compared.
struct Case {
    /// Object file name under `tests/progs/`, without `.o`.
    object: &'static str,
    /// The program packets enter (its C function name).
    entry: &'static str,
    /// Map contents set on both sides before the first packet.
    seeds: Vec<Seed>,
    /// Maps compared after every packet, by name; global data by section
    /// (`.rodata`, `.data`, `.bss`). Ring buffers too.
    maps: &'static [&'static str],
}

/// An LPM rule of `lpm_fw.c`: `{ prefixlen, addr }` -> `{ action, pad, hits }`.
fn lpm_rule(addr: [u8; 4], prefixlen: u32, action: u32) -> Seed {
    let mut key = prefixlen.to_le_bytes().to_vec();
    key.extend_from_slice(&addr);
    let mut value = action.to_le_bytes().to_vec();
    value.extend_from_slice(&[0; 12]);
    Seed::Elem {
        map: "src_rules",
        key,
        value,
    }
}

/// Slot `index` of `redirect.c`'s devmap sends to the loopback device.
fn devmap_port(index: u32) -> Seed {
    Seed::Elem {
        map: "tx_ports",
        key: index.to_le_bytes().to_vec(),
        value: kernel::TEST_RUN_IFINDEX.to_le_bytes().to_vec(),
    }
}

/// The suite: every program under `tests/progs/`.
fn cases() -> Vec<Case> {
    const XDP_DROP: u32 = 1;
    const XDP_PASS: u32 = 2;
    const XDP_TX: u32 = 3;
    let case = |object, entry, maps| Case {
        object,
        entry,
        seeds: Vec::new(),
        maps,
    };
    vec![
        case("parse", "xdp_parse", &["last_dport", "outcomes"]),
        case("macswap", "xdp_macswap", &[]),
        case("encap", "xdp_ipip", &["adjust_ret"]),
        case("trim", "xdp_trim", &["results"]),
        case("meta", "xdp_meta", &["results"]),
        Case {
            seeds: (0..4).map(devmap_port).collect(),
            ..case("redirect", "xdp_redirect", &["verdicts"])
        },
        Case {
            seeds: vec![
                lpm_rule([10, 0, 0, 0], 8, XDP_DROP),
                lpm_rule([10, 1, 0, 0], 16, XDP_PASS),
                lpm_rule([192, 168, 1, 0], 24, XDP_DROP),
                lpm_rule([198, 51, 100, 7], 32, XDP_TX),
            ],
            ..case("lpm_fw", "xdp_lpm_fw", &["src_rules", "misses"])
        },
        case("lru_flows", "xdp_lru_flows", &["flows", "inserts"]),
        case("percpu_stats", "xdp_percpu_stats", &["stats"]),
        Case {
            seeds: vec![
                Seed::TailCall {
                    map: "jmp_table",
                    index: 0,
                    prog: "xdp_ipv4",
                },
                Seed::TailCall {
                    map: "jmp_table",
                    index: 1,
                    prog: "xdp_ipv6",
                },
                Seed::TailCall {
                    map: "jmp_table",
                    index: 2,
                    prog: "xdp_udp",
                },
                // Slot 3 stays empty: xdp_dispatch's fall-through path.
            ],
            ..case("tailcall", "xdp_dispatch", &["hits"])
        },
        case(
            "rodata_cfg",
            "xdp_rodata_cfg",
            &[".rodata", ".data", ".bss"],
        ),
        case("ringbuf", "xdp_ringbuf", &["counts", "events"]),
        case("loop", "xdp_loop", &["sums"]),
        case("subprog", "xdp_subprog", &["calls", "ports"]),
        case("csum", "xdp_csum", &["raw"]),
        case("bounds", "xdp_bounds", &["rets"]),
        case(
            "hashmap",
            "xdp_hashmap",
            &["by_len", "rets", "errors", ".bss"],
        ),
        case("atomics", "xdp_atomics", &["slots"]),
    ]
}

/// A map's contents, normalised for comparison: key -> value, per-CPU
/// values summed over CPUs word by word. A ring buffer's are its records,
/// keyed by their index (a little-endian `u32`).
type Contents = BTreeMap<Vec<u8>, Vec<u8>>;

/// Ring buffer records as [`Contents`].
fn records_as_contents(records: &[Vec<u8>]) -> Contents {
    (0u32..)
        .zip(records)
        .map(|(i, r)| (i.to_le_bytes().to_vec(), r.clone()))
        .collect()
}

/// A map compared after every packet, with both sides' handles.
struct ComparedMap {
    /// The name in the case's list.
    name: &'static str,
    /// The kernel's pin name.
    pin: String,
    /// Sluice's map.
    sluice: Arc<Map>,
    /// For a ring buffer: every record Sluice produced so far (draining
    /// consumes them, the kernel side only reads).
    records: Option<Vec<Vec<u8>>>,
}

impl ComparedMap {
    /// The kernel's contents.
    fn kernel(&self, kobj: &KernelObject) -> Contents {
        let read = if self.records.is_some() {
            kobj.ringbuf_records(&self.pin)
                .map(|r| records_as_contents(&r))
        } else {
            kernel_contents(kobj, &self.pin)
        };
        read.unwrap_or_else(|e| panic!("kernel side: map {}: {e}", self.name))
    }

    /// Sluice's contents.
    fn sluice(&mut self) -> Result<Contents, String> {
        match &mut self.records {
            Some(records) => {
                let ring = self
                    .sluice
                    .downcast::<RingBuf>()
                    .ok_or_else(|| format!("{} is not a ring buffer in Sluice", self.name))?;
                ring.consume(|r| records.push(r.to_vec()));
                Ok(records_as_contents(records))
            }
            None => sluice_contents(&self.sluice),
        }
    }
}

/// Sums per-CPU copies of a value as little-endian 64-bit words.
fn sum_percpu<'a>(copies: impl IntoIterator<Item = &'a [u8]>, value_size: usize) -> Vec<u8> {
    assert!(
        value_size.is_multiple_of(8),
        "per-CPU values are compared as sums of u64 counters; value size {value_size} is not"
    );
    let mut sum = vec![0u64; value_size / 8];
    for copy in copies {
        for (s, w) in sum.iter_mut().zip(copy[..value_size].chunks_exact(8)) {
            *s = s.wrapping_add(u64::from_le_bytes(w.try_into().expect("8-byte chunk")));
        }
    }
    sum.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The kernel's pin name for map `name`: global data maps are pinned as
/// `<object prefix>_rodata` and so on.
fn kernel_map_name(kobj: &KernelObject, name: &str) -> Option<String> {
    match name.strip_prefix('.') {
        None => Some(name.to_string()),
        Some(section) => {
            let suffix = format!("_{section}");
            kobj.maps().into_iter().find(|m| m.ends_with(&suffix))
        }
    }
}

/// The kernel's view of the map pinned as `pin`.
fn kernel_contents(kobj: &KernelObject, pin: &str) -> Result<Contents, kernel::KernelError> {
    let entries = kobj.map_dump(pin)?;
    Ok(entries
        .into_iter()
        .map(|e| {
            let value = if e.percpu {
                let size = e.values.first().map_or(0, Vec::len);
                sum_percpu(e.values.iter().map(Vec::as_slice), size)
            } else {
                e.values.into_iter().next().unwrap_or_default()
            };
            (e.key, value)
        })
        .collect())
}

/// Sluice's view of a map, in the same form as [`kernel_contents`].
fn sluice_contents(map: &Map) -> Result<Contents, String> {
    let value_size = map.def().value_size as usize;
    let mut out = Contents::new();
    for key in map.keys() {
        let buf = map
            .lookup_vec(&key)
            .map_err(|e| format!("lookup {}: {e}", hex(&key)))?;
        let value = if map.def().map_type.is_percpu() {
            sum_percpu(buf.chunks(value_size.next_multiple_of(8)), value_size)
        } else {
            buf
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// What Sluice did with one packet.
#[derive(Debug)]
struct SluiceRun {
    verdict: u64,
    /// From `meta` to `end`, as the kernel's `data_out`.
    bytes: Vec<u8>,
}

/// Runs `prog` on `packet` in a frame laid out as the kernel's test run
/// lays it out.
fn sluice_run(vm: &mut Vm, prog: &Program, packet: &[u8]) -> Result<SluiceRun, String> {
    let mut buf = vec![0u8; kernel::TEST_RUN_FRAME];
    let start = kernel::TEST_RUN_HEADROOM;
    buf[start..start + packet.len()].copy_from_slice(packet);
    let mut frame = XdpFrame::new(&mut buf, start, start + packet.len());
    frame.ingress_ifindex = kernel::TEST_RUN_IFINDEX;
    let verdict = vm
        .run_xdp(prog, &mut frame)
        .map_err(|f| format!("fault: {f}"))?;
    let bytes = frame.buf[frame.meta..frame.end].to_vec();
    Ok(SluiceRun { verdict, bytes })
}

/// One way in which Sluice disagreed with the kernel.
enum Difference {
    /// The kernel loaded the object; Sluice did not, or lacks a part of it.
    Load { object: &'static str, error: String },
    /// Seeding a map worked in the kernel and failed in Sluice.
    Seed { object: &'static str, error: String },
    /// A run's verdict or bytes differ, or Sluice faulted.
    Run {
        program: &'static str,
        packet: &'static str,
        kernel: TestRun,
        sluice: Result<SluiceRun, String>,
    },
    /// A map's contents differ after a packet (the first such packet; later
    /// differing dumps of the same map are only counted).
    Map {
        program: &'static str,
        map: &'static str,
        after: &'static str,
        kernel: Contents,
        sluice: Result<Contents, String>,
        later: usize,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Load { object, error } => {
                write!(f, "{object}.o: loads in the kernel, not in Sluice: {error}")
            }
            Difference::Seed { object, error } => {
                write!(f, "{object}.o: map setup failed in Sluice: {error}")
            }
            Difference::Run {
                program,
                packet,
                kernel,
                sluice,
            } => {
                writeln!(f, "{program} on {packet}:")?;
                match sluice {
                    Err(e) => {
                        writeln!(f, "  kernel verdict {}", verdict_name(kernel.retval.into()))?;
                        write!(f, "  sluice {e}")
                    }
                    Ok(s) => {
                        let kv = u64::from(kernel.retval);
                        if kv != s.verdict {
                            writeln!(
                                f,
                                "  verdict: kernel {}, sluice {}",
                                verdict_name(kv),
                                verdict_name(s.verdict)
                            )?;
                        } else {
                            writeln!(f, "  verdict: both {}", verdict_name(kv))?;
                        }
                        if kernel.data_out != s.bytes {
                            write!(f, "{}", hexdiff(&kernel.data_out, &s.bytes))?;
                        } else {
                            write!(f, "  bytes: equal ({} bytes)", s.bytes.len())?;
                        }
                        Ok(())
                    }
                }
            }
            Difference::Map {
                program,
                map,
                after,
                kernel,
                sluice,
                later,
            } => {
                writeln!(f, "{program}: map {map} differs after packet {after}:")?;
                match sluice {
                    Err(e) => write!(f, "  sluice could not read it: {e}")?,
                    Ok(s) => write!(f, "{}", contents_diff(kernel, s))?,
                }
                if *later > 0 {
                    write!(f, "\n  (and after {later} later packets)")?;
                }
                Ok(())
            }
        }
    }
}

/// An XDP verdict with its name.
fn verdict_name(v: u64) -> String {
    let name = match v {
        0 => "XDP_ABORTED",
        1 => "XDP_DROP",
        2 => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "?",
    };
    format!("{v} ({name})")
}

/// Bytes as space-separated hex.
fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The 16-byte rows in which `kernel` and `sluice` differ, side by side.
fn hexdiff(kernel: &[u8], sluice: &[u8]) -> String {
    const ROW: usize = 16;
    const MAX_ROWS: usize = 12;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  bytes: kernel {} bytes, sluice {} bytes",
        kernel.len(),
        sluice.len()
    );
    let rows = kernel.len().max(sluice.len()).div_ceil(ROW);
    let row = |b: &[u8], r: usize| {
        let start = (r * ROW).min(b.len());
        let part = &b[start..(start + ROW).min(b.len())];
        format!("{:<47}", hex(part))
    };
    let differing: Vec<usize> = (0..rows)
        .filter(|&r| row(kernel, r) != row(sluice, r))
        .collect();
    for &r in differing.iter().take(MAX_ROWS) {
        let _ = writeln!(s, "  {:04x} kernel {}", r * ROW, row(kernel, r).trim_end());
        let _ = writeln!(s, "       sluice {}", row(sluice, r).trim_end());
    }
    if differing.len() > MAX_ROWS {
        let _ = writeln!(
            s,
            "  ... {} more differing rows",
            differing.len() - MAX_ROWS
        );
    }
    s.trim_end().to_string()
}

/// The elements in which two map contents differ.
fn contents_diff(kernel: &Contents, sluice: &Contents) -> String {
    const MAX_LINES: usize = 16;
    let mut lines = Vec::new();
    for (key, kv) in kernel {
        match sluice.get(key) {
            None => lines.push(format!(
                "  key {}: kernel {}, sluice missing",
                hex(key),
                hex(kv)
            )),
            Some(sv) if sv != kv => lines.push(format!(
                "  key {}:\n    kernel {}\n    sluice {}",
                hex(key),
                hex(kv),
                hex(sv)
            )),
            Some(_) => {}
        }
    }
    for (key, sv) in sluice {
        if !kernel.contains_key(key) {
            lines.push(format!(
                "  key {}: kernel missing, sluice {}",
                hex(key),
                hex(sv)
            ));
        }
    }
    let more = lines.len().saturating_sub(MAX_LINES);
    lines.truncate(MAX_LINES);
    if more > 0 {
        lines.push(format!("  ... {more} more differing elements"));
    }
    lines.join("\n")
}

/// What the suite compared and found.
#[derive(Default)]
struct Report {
    /// Programs run on both sides.
    programs: usize,
    /// Runs compared (program x packet).
    runs: usize,
    /// Runs the kernel refused (not compared): packet name -> (programs,
    /// the kernel's reason).
    not_comparable: BTreeMap<&'static str, (usize, String)>,
    /// Runs whose verdict or bytes differ (or Sluice faulted).
    run_differences: usize,
    /// Map (and ring buffer) contents compared after a run.
    map_dumps: usize,
    /// Map dumps whose contents differ.
    map_differences: usize,
    /// Every finding, in the order found.
    differences: Vec<Difference>,
}

/// Applies the case's seeds to both sides.
///
/// # Errors
/// What failed on the Sluice side (the kernel side panics: its failures are
/// the harness's).
fn seed(case: &Case, kobj: &KernelObject, sobj: &LoadedObject) -> Result<(), String> {
    for s in &case.seeds {
        match s {
            Seed::Elem { map, key, value } => {
                kobj.map_update(map, key, value)
                    .unwrap_or_else(|e| panic!("kernel side: {e}"));
                sobj.map(map)
                    .ok_or_else(|| format!("no map {map}"))
                    .and_then(|m| m.ops().update(key, value, 0).map_err(|e| e.to_string()))
                    .map_err(|e| format!("{map}[{}] = {}: {e}", hex(key), hex(value)))
            }
            Seed::TailCall { map, index, prog } => {
                kobj.prog_array_set(map, *index, prog)
                    .unwrap_or_else(|e| panic!("kernel side: {e}"));
                let target = sobj.program(prog).map(|p| Arc::clone(&p.program));
                sobj.map(map)
                    .ok_or_else(|| format!("no map {map}"))
                    .and_then(|m| {
                        m.downcast::<ProgArray>()
                            .ok_or_else(|| format!("{map} is not a prog array"))
                    })
                    .and_then(|pa| {
                        let target = target.ok_or_else(|| format!("no program {prog}"))?;
                        pa.set(*index, Some(target)).map_err(|e| e.to_string())
                    })
                    .map_err(|e| format!("{map}[{index}] = {prog}: {e}"))
            }
        }?;
    }
    Ok(())
}

/// Runs one program of the suite on every packet on both sides.
fn run_case(case: &Case, packets: &[TestPacket], report: &mut Report, engine: sluice_bpf::Engine) {
    let path = progs_dir().join(format!("{}.o", case.object));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // The kernel side must work: a failure here is the harness's, not Sluice's.
    let kobj = KernelObject::load(&path).unwrap_or_else(|e| panic!("kernel side: {e}"));
    assert!(
        kobj.programs().iter().any(|p| p == case.entry),
        "{}.o has no program {} (kernel pinned {:?})",
        case.object,
        case.entry,
        kobj.programs()
    );
    report.programs += 1;

    let sobj = match LoadedObject::from_elf(&bytes, &LoadOptions::default()) {
        Ok(o) => o,
        Err(e) => {
            let error = e.to_string();
            report.differences.push(Difference::Load {
                object: case.object,
                error,
            });
            return;
        }
    };
    let Some(entry) = sobj.program(case.entry) else {
        let error = format!("no program {} (skipped: {:?})", case.entry, sobj.skipped);
        report.differences.push(Difference::Load {
            object: case.object,
            error,
        });
        return;
    };
    if engine == sluice_bpf::Engine::Jit {
        for p in &sobj.programs {
            assert!(
                p.program.has_jit(),
                "{}: {} has no machine code",
                case.object,
                p.name
            );
        }
    }
    let mut compared = Vec::new();
    for &name in case.maps {
        let pin = kernel_map_name(&kobj, name)
            .unwrap_or_else(|| panic!("kernel side: no pinned map for {name} ({:?})", kobj.maps()));
        let ring = kobj
            .map_type(&pin)
            .unwrap_or_else(|e| panic!("kernel side: {e}"))
            == "ringbuf";
        match sobj.map(name) {
            Some(m) => compared.push(ComparedMap {
                name,
                pin,
                sluice: Arc::clone(m),
                records: ring.then(Vec::new),
            }),
            None => {
                let names: Vec<&str> = sobj.maps.iter().map(|m| m.def().name.as_str()).collect();
                let error = format!("no map {name} (maps: {names:?})");
                report.differences.push(Difference::Load {
                    object: case.object,
                    error,
                });
                return;
            }
        }
    }
    if let Err(error) = seed(case, &kobj, &sobj) {
        report.differences.push(Difference::Seed {
            object: case.object,
            error,
        });
        return;
    }

    let mut vm = Vm::for_cpu(0);
    vm.set_engine(engine);
    // Index into report.differences of each map's first difference.
    let mut first_map_diff: BTreeMap<&str, usize> = BTreeMap::new();
    for packet in packets {
        let kernel = match kobj.run(case.entry, &packet.bytes) {
            Ok(k) => k,
            Err(e) if packet.bytes.len() < kernel::TEST_RUN_MIN_LEN => {
                let entry = report.not_comparable.entry(packet.name).or_insert_with(|| {
                    let why = e.message.lines().next().unwrap_or("").to_string();
                    (0, why)
                });
                entry.0 += 1;
                continue;
            }
            Err(e) => panic!("kernel side: {} on {}: {e}", case.entry, packet.name),
        };
        let sluice = sluice_run(&mut vm, &entry.program, &packet.bytes);
        report.runs += 1;
        let same = matches!(&sluice, Ok(s) if s.verdict == u64::from(kernel.retval)
            && s.bytes == kernel.data_out);
        if !same {
            report.run_differences += 1;
            report.differences.push(Difference::Run {
                program: case.entry,
                packet: packet.name,
                kernel,
                sluice,
            });
        }

        for map in &mut compared {
            let name = map.name;
            let k = map.kernel(&kobj);
            let s = map.sluice();
            report.map_dumps += 1;
            if s.as_ref().is_ok_and(|s| *s == k) {
                continue;
            }
            report.map_differences += 1;
            match first_map_diff.get(name) {
                Some(&i) => {
                    if let Difference::Map { later, .. } = &mut report.differences[i] {
                        *later += 1;
                    }
                }
                None => {
                    first_map_diff.insert(name, report.differences.len());
                    report.differences.push(Difference::Map {
                        program: case.entry,
                        map: name,
                        after: packet.name,
                        kernel: k,
                        sluice: s,
                        later: 0,
                    });
                }
            }
        }
    }
    // `kobj` drops here: its pins are removed, also when a panic unwinds.
}

/// The committed objects, run by the kernel and by Sluice, agree.
#[test]
fn kernel_and_sluice_agree() {
    let probe = progs_dir().join("macswap.o");
    if let Some(reason) = kernel::unavailable(&probe, "xdp_macswap") {
        kernel::skip_or_fail("kernel differential", &reason);
        return;
    }
    let packets = packets::all();
    let cases = cases();
    let mut report = Report::default();
    // Both engines against the kernel: the interpreter (natively, on the
    // verified programs) and the JIT's machine code.
    for engine in [sluice_bpf::Engine::Interp, sluice_bpf::Engine::Jit] {
        for case in &cases {
            run_case(case, &packets, &mut report, engine);
        }
    }

    for (packet, (programs, why)) in &report.not_comparable {
        println!(
            "not comparable: {packet} on {programs} programs: the kernel refuses input \
             shorter than {} bytes ({why})",
            kernel::TEST_RUN_MIN_LEN
        );
    }
    for (i, d) in report.differences.iter().enumerate() {
        println!("--- difference {}:\n{d}\n", i + 1);
    }
    let summary = format!(
        "kernel differential (interpreter and JIT): {} programs x {} packets: {} runs compared, {} not comparable \
         (the kernel refuses runts), {} differences; {} map dumps compared, {} differ",
        report.programs,
        packets.len(),
        report.runs,
        report
            .not_comparable
            .values()
            .map(|(n, _)| n)
            .sum::<usize>(),
        report.run_differences,
        report.map_dumps,
        report.map_differences,
    );
    println!("{summary}");
    assert_eq!(report.programs, 2 * cases.len());
    assert!(
        report.differences.is_empty(),
        "{summary}: {} findings, listed above (run with --nocapture to see them)",
        report.differences.len()
    );
}

/// The packet set is what the report's counts assume: unique names, sizes
/// from a runt to a full 1514-byte frame.
#[test]
fn packet_set_is_sound() {
    let packets = packets::all();
    let mut names: Vec<&str> = packets.iter().map(|p| p.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), packets.len(), "packet names must be unique");
    assert!((20..=45).contains(&packets.len()));
    assert!(packets
        .iter()
        .any(|p| p.bytes.len() < kernel::TEST_RUN_MIN_LEN));
    assert!(packets.iter().all(|p| p.bytes.len() <= 1514));
    assert_eq!(packets.iter().map(|p| p.bytes.len()).max(), Some(1514));
    // IPv4 headers built without a deliberate fault carry a valid checksum.
    let udp = packets
        .iter()
        .find(|p| p.name == "ipv4_udp_dns")
        .expect("ipv4_udp_dns");
    assert_eq!(packets::inet_checksum(&[&udp.bytes[14..34]]), 0);
}
