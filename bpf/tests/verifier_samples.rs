//! Real programs through the verifier: the team's XDP test programs
//! (`tests/progs/*.o`) and every program of PREVAIL's corpus
//! (`shared/ebpf-samples/`) that parses, verified as XDP programs, side by
//! side with PREVAIL's recorded verdict.
//!
//! The table is committed as `tests/verifier/samples.md`; this test renders
//! it afresh and fails with a diff when the two differ. Regenerate it with
//!
//! ```text
//! SLUICE_UPDATE_VERIFIER_SAMPLES=1 cargo test -p sluice-bpf --test verifier_samples
//! ```
//!
//! Checked on top: every team program verifies, and every program whose
//! section makes it an XDP program verifies unless it is listed in
//! [`XDP_REFUSED`] with the reason. Programs of other types (`.text`
//! functions, PREVAIL's `test` sections) are verified as XDP programs too,
//! as `ip link set dev X xdp obj O` would load them, for information.
//!
//! `verification_times` prints the median and worst verification time of
//! every accepted program, for `BENCHMARKS.md`; run it in release:
//!
//! ```text
//! cargo test --release -p sluice-bpf --test verifier_samples -- --nocapture verification_times
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_bpf::elf::{self, ProgType};
use sluice_bpf::helpers::Registry;
use sluice_bpf::maps::MapDef;
use sluice_bpf::object::{LoadOptions, LoadedObject};
use sluice_bpf::verifier::{verify, ProgKind, VerifyOptions};

const TABLE: &str = "tests/verifier/samples.md";
const UPDATE_VAR: &str = "SLUICE_UPDATE_VERIFIER_SAMPLES";

/// XDP programs the verifier refuses, each for a reason that makes it
/// unsafe or beyond what Linux's verifier can prove as well.
const XDP_REFUSED: &[(&str, &str, &str, &str)] = &[
    (
        "build/correlated_branch.o",
        "ConvergedBranch",
        "packet-bounds",
        "the packet length is checked as a number (data_end - data >= 14) and the pointer \
         used later; neither Linux nor Sluice relates the two (PREVAIL's relational domain \
         does). Linux refuses it at the same instruction",
    ),
    (
        "build/packet_overflow.o",
        "read_write_packet_start",
        "packet-bounds",
        "unsafe: it checks only data <= data_end, then reads and writes 4 bytes, which an \
         empty packet does not have. Linux refuses it too",
    ),
    (
        "build/ptr_arith.o",
        "test_ptr_arith",
        "ptr-arith",
        "unsafe: it adds data_end to data (pointer + pointer). Linux refuses it too",
    ),
    (
        "build/tail_call.o",
        "caller",
        "uninit-reg",
        "it returns bpf_tail_call's result, but a tail call has none (RET_VOID): r0 is not \
         written when the call falls through. Linux refuses it too (R0 !read_ok)",
    ),
    (
        "build/tail_call_bad.o",
        "caller",
        "helper-map",
        "unsafe: it tail-calls through an array map, not a prog array. Linux refuses it too",
    ),
];

fn samples_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_SHARED") {
        return PathBuf::from(p).join("ebpf-samples");
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for c in [
        "../../shared/ebpf-samples",
        "../shared/ebpf-samples",
        "/work/shared/ebpf-samples",
    ] {
        let p = here.join(c);
        if p.exists() {
            return p;
        }
    }
    panic!("shared/ebpf-samples not found (set SLUICE_SHARED)")
}

/// PREVAIL's verdicts from MANIFEST.md, by (file, section), then by function.
fn prevail() -> HashMap<(String, String), String> {
    let text = std::fs::read_to_string(samples_dir().join("MANIFEST.md")).expect("MANIFEST.md");
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| file"))
    {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if cols.len() >= 9 {
            out.insert(
                (cols[1].to_string(), cols[3].to_string()),
                cols[8].to_string(),
            );
        }
    }
    out
}

fn prevail_for(
    map: &HashMap<(String, String), String>,
    file: &str,
    section: &str,
    func: &str,
) -> String {
    let Some(v) = map.get(&(file.to_string(), section.to_string())) else {
        return "-".into();
    };
    if v.contains('=') {
        return v
            .split(';')
            .find_map(|kv| {
                kv.split_once('=')
                    .filter(|(k, _)| *k == func)
                    .map(|(_, v)| v)
            })
            .unwrap_or("pass")
            .to_string();
    }
    v.clone()
}

struct Row {
    file: String,
    section: String,
    name: String,
    xdp: bool,
    team: bool,
    loader: String,
    verdict: Result<u64, (usize, String, String)>,
    prevail: String,
}

fn first_line(s: &str, n: usize) -> String {
    let l = s.lines().next().unwrap_or("").replace('|', "/");
    if l.chars().count() > n {
        format!("{}…", l.chars().take(n).collect::<String>())
    } else {
        l
    }
}

fn objects() -> Vec<(String, PathBuf, bool)> {
    let mut out = Vec::new();
    let progs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/progs");
    let mut team: Vec<PathBuf> = std::fs::read_dir(&progs)
        .expect("tests/progs")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    team.sort();
    for p in team {
        let name = format!("progs/{}", p.file_name().unwrap().to_string_lossy());
        out.push((name, p, true));
    }
    let root = samples_dir();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("samples")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            let rel = f
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, f, false));
        }
    }
    out
}

fn rows() -> (Vec<Row>, usize) {
    let prevail = prevail();
    let mut rows = Vec::new();
    let mut unparsed = 0;
    for (file, path, team) in objects() {
        let bytes = std::fs::read(&path).expect("read object");
        let Ok(obj) = elf::parse(&bytes) else {
            unparsed += 1;
            continue;
        };
        let loader = LoadedObject::from_elf(
            &bytes,
            &LoadOptions {
                ncpus: 2,
                default_type: Some(ProgType::Xdp),
                ..Default::default()
            },
        );
        let defs: Vec<&MapDef> = obj.maps.iter().map(|m| &m.def).collect();
        for p in &obj.programs {
            let loader = match &loader {
                Ok(o)
                    if o.programs
                        .iter()
                        .any(|l| l.name == p.name && l.section == p.section) =>
                {
                    "loads".to_string()
                }
                Ok(o) => o
                    .skipped
                    .iter()
                    .find(|s| s.name == p.name && s.section == p.section)
                    .map_or("skipped".into(), |s| {
                        format!("skipped: {}", first_line(&s.reason, 60))
                    }),
                Err(e) => format!("object refused: {}", first_line(&e.to_string(), 60)),
            };
            let verdict = verify(
                &p.insns,
                ProgKind::Xdp,
                &Registry::xdp(),
                &defs,
                &VerifyOptions::default(),
            )
            .map(|v| v.stats.insns_processed)
            .map_err(|e| {
                (
                    e.insn,
                    e.reason.kind().to_string(),
                    first_line(&e.reason.to_string(), 90),
                )
            });
            rows.push(Row {
                prevail: if team {
                    "-".into()
                } else {
                    prevail_for(&prevail, &file, &p.section, &p.name)
                },
                file: file.clone(),
                section: p.section.clone(),
                name: p.name.clone(),
                xdp: matches!(p.prog_type, ProgType::Xdp | ProgType::XdpFrags),
                team,
                loader,
                verdict,
            });
        }
    }
    (rows, unparsed)
}

fn render(rows: &[Row], unparsed: usize) -> String {
    let mut out = String::new();
    let count = |f: &dyn Fn(&Row) -> bool| rows.iter().filter(|r| f(r)).count();
    let _ = writeln!(
        out,
        "# Verifier verdicts on real programs\n\n\
         The team's XDP test programs (`bpf/tests/progs`) and every program of PREVAIL's corpus \
         (`shared/ebpf-samples`) that parses, verified by Sluice as XDP programs (with the maps \
         the object declares), beside PREVAIL's recorded verdict (`MANIFEST.md`; \
         `expected_failure` means PREVAIL refuses it). Generated by `tests/verifier_samples.rs`, \
         which fails when this file is out of date; regenerate with\n\n\
         ```text\n{UPDATE_VAR}=1 cargo test -p sluice-bpf --test verifier_samples\n```\n\n\
         *type* is the program type the section name gives (`Xdp`) or `other` (sections without \
         an XDP name, verified as XDP for information). *loader* is what \
         `LoadedObject::from_elf` does with the program (an object whose maps Sluice cannot \
         create is refused whole; the verifier still judges its programs, with the map \
         definitions). *verdict*: `accepted (N)` with N instructions processed, or `refused` \
         with the instruction and the reason.\n"
    );
    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(out, "- objects that do not parse: {unparsed}");
    let _ = writeln!(
        out,
        "- team programs: {}, accepted: {}",
        count(&|r| r.team),
        count(&|r| r.team && r.verdict.is_ok())
    );
    let _ = writeln!(
        out,
        "- sample XDP programs: {}, accepted: {} (of those the loader loads: {}, accepted: {})",
        count(&|r| !r.team && r.xdp),
        count(&|r| !r.team && r.xdp && r.verdict.is_ok()),
        count(&|r| !r.team && r.xdp && r.loader == "loads"),
        count(&|r| !r.team && r.xdp && r.loader == "loads" && r.verdict.is_ok())
    );
    let _ = writeln!(
        out,
        "- other sample programs verified as XDP: {}, accepted: {}",
        count(&|r| !r.team && !r.xdp),
        count(&|r| !r.team && !r.xdp && r.verdict.is_ok())
    );
    let comparable = |r: &Row| !r.team && r.prevail != "-" && !r.prevail.starts_with("whole file");
    let same = |r: &Row| (r.prevail == "pass") == r.verdict.is_ok();
    let _ = writeln!(
        out,
        "- same verdict as PREVAIL (pass vs. anything else), XDP programs: {} of {}; other \
         programs (mostly socket filters, whose `__sk_buff` context is not XDP's): {} of {}",
        count(&|r| comparable(r) && r.xdp && same(r)),
        count(&|r| comparable(r) && r.xdp),
        count(&|r| comparable(r) && !r.xdp && same(r)),
        count(&|r| comparable(r) && !r.xdp)
    );
    let _ = writeln!(out, "\n## Programs\n");
    let _ = writeln!(
        out,
        "| file | section | program | type | loader | verdict | PREVAIL |\n|---|---|---|---|---|---|---|"
    );
    for r in rows {
        let verdict = match &r.verdict {
            Ok(n) => format!("accepted ({n})"),
            Err((insn, kind, msg)) => format!("refused at {insn}: {kind}: {msg}"),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.file,
            r.section,
            r.name,
            if r.xdp { "Xdp" } else { "other" },
            r.loader,
            verdict,
            r.prevail
        );
    }
    let _ = writeln!(out, "\n## XDP programs refused, and why\n");
    for (file, prog, kind, why) in XDP_REFUSED {
        let _ = writeln!(out, "- `{file}` `{prog}` ({kind}): {why}.");
    }
    for r in rows
        .iter()
        .filter(|r| r.xdp && !r.team && r.verdict.is_err())
    {
        if XDP_REFUSED
            .iter()
            .any(|(f, p, ..)| *f == r.file && *p == r.name)
        {
            continue;
        }
        if let Err((insn, kind, msg)) = &r.verdict {
            let _ = writeln!(
                out,
                "- `{}` `{}` ({kind}, insn {insn}): {msg}. {}",
                r.file,
                r.name,
                unsupported_note(kind)
            );
        }
    }
    out
}

/// Why an XDP program the loader refuses anyway is refused by the verifier.
fn unsupported_note(kind: &str) -> &'static str {
    match kind {
        "unknown-helper" => "The helper is not one Sluice provides (the loader refuses the object for the same reason or for its map type).",
        "helper-map" => "The map type is not one Sluice provides (cpumap, xskmap, perf event array); the loader refuses the object.",
        _ => "",
    }
}

#[test]
fn verdicts_on_real_programs() {
    let (rows, unparsed) = rows();
    let mut failures = Vec::new();
    for r in &rows {
        if r.team {
            if let Err((insn, kind, msg)) = &r.verdict {
                failures.push(format!(
                    "team program {} {} refused at {insn}: {kind}: {msg}",
                    r.file, r.name
                ));
            }
            continue;
        }
        if !r.xdp || r.loader != "loads" {
            continue;
        }
        let listed = XDP_REFUSED
            .iter()
            .find(|(f, p, ..)| *f == r.file && *p == r.name);
        match (&r.verdict, listed) {
            (Ok(_), Some(_)) => failures.push(format!(
                "{} {} is accepted now: remove it from XDP_REFUSED",
                r.file, r.name
            )),
            (Err((_, kind, _)), Some((_, _, want, _))) if kind != want => failures.push(format!(
                "{} {} is refused for {kind}, XDP_REFUSED says {want}",
                r.file, r.name
            )),
            (Err((insn, kind, msg)), None) => failures.push(format!(
                "loadable XDP program {} {} refused at {insn}: {kind}: {msg}",
                r.file, r.name
            )),
            _ => {}
        }
    }
    let text = render(&rows, unparsed);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(TABLE);
    if std::env::var(UPDATE_VAR).is_ok() {
        std::fs::write(&path, &text).expect("write the table");
    } else {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != text {
            let diff: Vec<String> = text
                .lines()
                .zip(committed.lines().chain(std::iter::repeat("")))
                .filter(|(a, b)| a != b)
                .take(10)
                .map(|(a, b)| format!("- {b}\n+ {a}"))
                .collect();
            failures.push(format!(
                "{TABLE} is out of date (regenerate with {UPDATE_VAR}=1); first differences:\n{}",
                diff.join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn verification_times() {
    let mut all: Vec<(String, Duration, u64)> = Vec::new();
    for (file, path, _) in objects() {
        let bytes = std::fs::read(&path).expect("read");
        let Ok(obj) = elf::parse(&bytes) else {
            continue;
        };
        let defs: Vec<&MapDef> = obj.maps.iter().map(|m| &m.def).collect();
        let mut object_time = Duration::ZERO;
        let mut processed = 0;
        let mut any = false;
        for p in &obj.programs {
            let run = || {
                verify(
                    &p.insns,
                    ProgKind::Xdp,
                    &Registry::xdp(),
                    &defs,
                    &VerifyOptions::default(),
                )
                .map_err(|e| e.insn)
            };
            if run().is_err() {
                continue;
            }
            any = true;
            // The best of 5 runs, as the time of this program.
            let best = (0..5)
                .map(|_| {
                    let t = Instant::now();
                    let v = run().expect("verified once");
                    processed = processed.max(v.stats.insns_processed);
                    t.elapsed()
                })
                .min()
                .unwrap_or_default();
            object_time += best;
        }
        if any {
            all.push((file, object_time, processed));
        }
    }
    all.sort_by_key(|(_, t, _)| *t);
    let median = all[all.len() / 2].1;
    let (worst_file, worst, worst_processed) = all.last().cloned().expect("objects");
    println!("verification time per accepted object (all its accepted programs), best of 5:");
    for (f, t, n) in &all {
        println!("  {f:<60} {t:>10.1?}  (max {n} insns processed)");
    }
    println!(
        "verification time: {} objects, median {median:.1?}, worst {worst:.1?} ({worst_file}, \
         {worst_processed} insns processed){}",
        all.len(),
        if cfg!(debug_assertions) {
            " [debug build: use --release for BENCHMARKS.md]"
        } else {
            ""
        }
    );
}
