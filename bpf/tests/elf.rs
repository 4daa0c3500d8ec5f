//! The ELF loader against real objects (`shared/ebpf-samples/`), objects
//! compiled here with clang, and truncated or bit-flipped copies; and the
//! object loader where the ELF file decides what a map starts with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_bpf::elf::{self, ElfError, MapInit, MapOrigin, Object, ProgType};
use sluice_bpf::interp::XdpFrame;
use sluice_bpf::isa::{self, pseudo, CallTarget, Insn, Instruction, LdImm64};
use sluice_bpf::maps::map_in_map::MapOfMaps;
use sluice_bpf::maps::prog_array::ProgArray;
use sluice_bpf::maps::{flags, MapType, Pinning};
use sluice_bpf::object::{LoadOptions, LoadedObject};
use sluice_bpf::Vm;

/// Where `shared/` is: `$SLUICE_SHARED`, else beside the checkout, else
/// `/work/shared`.
fn shared_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_SHARED") {
        return PathBuf::from(p);
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    if beside.exists() {
        return beside;
    }
    PathBuf::from("/work/shared")
}

fn samples_dir() -> PathBuf {
    shared_dir().join("ebpf-samples")
}

/// Every object file under `ebpf-samples/`, sorted.
fn sample_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if !matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("md" | "json" | "txt")
            ) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&samples_dir(), &mut out);
    out.sort();
    out
}

fn load(rel: &str) -> Object {
    let path = samples_dir().join(rel);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    elf::parse(&bytes).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn load_err(rel: &str) -> ElfError {
    let path = samples_dir().join(rel);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match elf::parse(&bytes) {
        Ok(_) => panic!("{rel}: parsed, but should fail"),
        Err(e) => e,
    }
}

/// Checks what every linked program must satisfy: map indices name maps,
/// and every local call or function address lands inside the program.
fn check_linked(obj: &Object) -> Result<(), String> {
    for p in &obj.programs {
        let n = p.insns.len();
        let mut pc = 0;
        while pc < n {
            let i = p.insns[pc];
            let in_prog = |rel: i32| {
                let t = pc as i64 + 1 + i64::from(rel);
                (0..n as i64).contains(&t)
            };
            match (i.code, i.src) {
                (0x18, s)
                    if (s == pseudo::MAP_IDX || s == pseudo::MAP_IDX_VALUE)
                        && usize::try_from(i.imm).map_or(true, |m| m >= obj.maps.len()) =>
                {
                    return Err(format!(
                        "{}: insn {pc}: map index {} out of range",
                        p.name, i.imm
                    ));
                }
                (0x18, s) if s == pseudo::FUNC && !in_prog(i.imm) => {
                    return Err(format!("{}: insn {pc}: function address outside", p.name));
                }
                (0x85, 1) if !in_prog(i.imm) => {
                    return Err(format!("{}: insn {pc}: call target outside", p.name));
                }
                _ => {}
            }
            pc += if i.code == 0x18 { 2 } else { 1 };
        }
    }
    Ok(())
}

#[test]
fn parses_every_sample() {
    let files = sample_files();
    assert!(
        files.len() > 50,
        "expected the ebpf-samples corpus under {}, found {} files",
        samples_dir().display(),
        files.len()
    );
    let (mut ok, mut failed, mut programs, mut maps, mut decoded) = (0, 0, 0, 0, 0);
    let mut decode_errors = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(samples_dir())
            .unwrap_or(path)
            .display()
            .to_string();
        let bytes = std::fs::read(path).expect("read sample");
        match elf::parse(&bytes) {
            Ok(obj) => {
                ok += 1;
                programs += obj.programs.len();
                maps += obj.maps.len();
                if let Err(e) = check_linked(&obj) {
                    panic!("{rel}: {e}");
                }
                for p in &obj.programs {
                    match isa::decode(&p.insns) {
                        Ok(_) => decoded += 1,
                        Err(e) => decode_errors.push(format!("{rel}:{}: {e}", p.name)),
                    }
                }
                let progs: Vec<String> = obj
                    .programs
                    .iter()
                    .map(|p| {
                        format!(
                            "{}@{}({:?},{})",
                            p.name,
                            p.section,
                            p.prog_type,
                            p.insns.len()
                        )
                    })
                    .collect();
                let maps: Vec<&str> = obj.maps.iter().map(|m| m.def.name.as_str()).collect();
                println!(
                    "ok   {rel}: programs [{}] maps [{}]",
                    progs.join(" "),
                    maps.join(" ")
                );
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {rel}: {e}");
            }
        }
    }
    println!("decode errors (left to the program loader):");
    for e in &decode_errors {
        println!("  {e}");
    }
    println!(
        "{} objects: {ok} parsed ({programs} programs, {decoded} of them decode; {maps} maps), {failed} failed",
        files.len()
    );
}

// ---------------------------------------------------------------------------
// Facts about known objects.

/// The single `lddw` map reference (src, imm, second imm) in `insns` at `pc`.
fn lddw(insns: &[Insn], pc: usize) -> (u8, i32, i32) {
    assert_eq!(
        insns[pc].code, 0x18,
        "insn {pc} is not lddw: {:?}",
        insns[pc]
    );
    (insns[pc].src, insns[pc].imm, insns[pc + 1].imm)
}

fn map_index(obj: &Object, name: &str) -> i32 {
    obj.maps
        .iter()
        .position(|m| m.def.name == name)
        .unwrap_or_else(|| panic!("no map {name}")) as i32
}

#[test]
fn btf_maps_of_new_linux_sockex3() {
    let obj = load("new_linux/sockex3_kern.o");
    assert_eq!(obj.license.as_deref(), Some("GPL"));
    let names: Vec<&str> = obj.maps.iter().map(|m| m.def.name.as_str()).collect();
    assert_eq!(names, ["jmp_table", "percpu_map", "hash_map"]);
    assert!(obj
        .maps
        .iter()
        .all(|m| m.origin == MapOrigin::Btf && m.initial.is_none()));

    let jmp = &obj.map("jmp_table").unwrap().def;
    assert_eq!(
        (jmp.map_type, jmp.key_size, jmp.value_size, jmp.max_entries),
        (MapType::ProgArray, 4, 4, 8)
    );
    // `__type(value, struct globals)` (16 bytes), `__type(key, u32)`.
    let percpu = &obj.map("percpu_map").unwrap().def;
    assert_eq!(
        (
            percpu.map_type,
            percpu.key_size,
            percpu.value_size,
            percpu.max_entries
        ),
        (MapType::Array, 4, 16, 32)
    );
    // key: struct flow_key_record (16 bytes, through typedefs and a union).
    let hash = &obj.map("hash_map").unwrap().def;
    assert_eq!(
        (
            hash.map_type,
            hash.key_size,
            hash.value_size,
            hash.max_entries,
            hash.pinning
        ),
        (MapType::Hash, 16, 16, 1024, Pinning::None)
    );

    let names: Vec<&str> = obj.programs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bpf_func_PARSE_IP",
            "bpf_func_PARSE_IPV6",
            "bpf_func_PARSE_VLAN",
            "bpf_func_PARSE_MPLS",
            "main_prog"
        ]
    );
    assert!(obj
        .programs
        .iter()
        .all(|p| p.prog_type == ProgType::SocketFilter));
    assert_eq!(obj.program("socket/0").unwrap().name, "main_prog");
    assert_eq!(obj.program("main_prog").unwrap().section, "socket/0");
    assert!(obj.program("nope").is_none());
}

#[test]
fn legacy_maps_of_linux_xdp_router_ipv4() {
    let obj = load("linux/xdp_router_ipv4_kern.o");
    let got: Vec<(&str, MapType, u32, u32, u32, u32)> = obj
        .maps
        .iter()
        .map(|m| {
            let d = &m.def;
            (
                d.name.as_str(),
                d.map_type,
                d.key_size,
                d.value_size,
                d.max_entries,
                d.flags,
            )
        })
        .collect();
    // Record order (by offset in `maps`), read with llvm-objdump -s -j maps.
    assert_eq!(
        got,
        [
            ("lpm_map", MapType::LpmTrie, 8, 32, 50, 1),
            ("rxcnt", MapType::PercpuArray, 4, 8, 256, 0),
            ("arp_table", MapType::Hash, 4, 8, 50, 0),
            ("exact_match", MapType::Hash, 4, 32, 50, 0),
            ("tx_port", MapType::Devmap, 4, 4, 100, 0),
        ]
    );
    assert!(obj.maps.iter().all(|m| m.origin == MapOrigin::Legacy));
    let prog = obj.program("xdp_router_ipv4").unwrap();
    assert_eq!(
        (prog.name.as_str(), prog.prog_type),
        ("xdp_router_ipv4_prog", ProgType::Xdp)
    );
    // Every lddw that names a map names one of these five.
    let refs: Vec<i32> = isa::decode(&prog.insns)
        .unwrap()
        .into_iter()
        .filter_map(|(_, i)| match i {
            Instruction::LdImm64 {
                value: LdImm64::MapIdx(m),
                ..
            } => Some(m),
            _ => None,
        })
        .collect();
    assert!(!refs.is_empty());
    assert!(refs.iter().all(|&m| (0..5).contains(&m)));
}

#[test]
fn old_objects_without_function_symbols() {
    // linux/xdp1_kern.o: one NOTYPE global per section, legacy 28-byte map.
    let obj = load("linux/xdp1_kern.o");
    let p = obj.program("xdp1").unwrap();
    assert_eq!(
        (p.name.as_str(), p.prog_type, p.insns.len()),
        ("xdp_prog1", ProgType::Xdp, 61)
    );
    let rxcnt = obj.map("rxcnt").unwrap();
    assert_eq!(
        (
            rxcnt.def.map_type,
            rxcnt.def.key_size,
            rxcnt.def.value_size,
            rxcnt.def.max_entries
        ),
        (MapType::PercpuArray, 4, 8, 256)
    );
    // The relocation at byte 0x1a0 is slot 52.
    assert_eq!(lddw(&p.insns, 52), (pseudo::MAP_IDX, 0, 0));

    // ovs/datapath.o: EM_NONE, RELA relocations of type 0, local NOTYPE names.
    let obj = load("ovs/datapath.o");
    let p = obj.program("tail-32").unwrap();
    assert_eq!(p.name, "ovs_parser");
    // `.relatail-32`: offset 0x1248 against percpu_headers.
    assert_eq!(
        lddw(&p.insns, 0x1248 / 8),
        (pseudo::MAP_IDX, map_index(&obj, "percpu_headers"), 0)
    );
    assert_eq!(obj.program("xdp_ingress").unwrap().prog_type, ProgType::Xdp);
}

#[test]
fn iproute2_bpf_elf_map_pinning() {
    // Old Cilium: 28-byte `struct bpf_elf_map` records with PIN_GLOBAL_NS.
    let obj = load("cilium/bpf_xdp.o");
    let events = obj.map("cilium_events").unwrap();
    assert_eq!(
        (
            events.def.map_type,
            events.def.key_size,
            events.def.value_size,
            events.def.max_entries
        ),
        (MapType::PerfEventArray, 4, 4, 8)
    );
    assert_eq!(events.def.pinning, Pinning::ByName);
    assert_eq!(obj.maps.len(), 11);
    assert!(obj.maps.iter().all(|m| m.def.pinning == Pinning::ByName));
}

#[test]
fn map_in_map_inner_definitions() {
    // BTF: `__array(values, struct { ... })` after a separately declared map.
    let obj = load("build/map_in_map.o");
    let outer = &obj.map("array_of_maps").unwrap().def;
    assert_eq!(
        (
            outer.map_type,
            outer.key_size,
            outer.value_size,
            outer.max_entries
        ),
        (MapType::ArrayOfMaps, 4, 4, 1)
    );
    let inner = outer.inner.as_deref().expect("inner template");
    assert_eq!(
        (
            inner.name.as_str(),
            inner.map_type,
            inner.key_size,
            inner.value_size,
            inner.max_entries
        ),
        ("array_of_maps.inner", MapType::Array, 4, 4, 1)
    );
    assert!(inner.inner.is_none());

    // Anonymous and typedef'd inner structs.
    for rel in ["build/map_in_map_anonymous.o", "build/map_in_map_typedef.o"] {
        let obj = load(rel);
        let outers: Vec<_> = obj.maps.iter().filter(|m| m.def.inner.is_some()).collect();
        assert!(!outers.is_empty(), "{rel}: no map-in-map");
        for m in outers {
            assert!(
                matches!(m.def.map_type, MapType::ArrayOfMaps | MapType::HashOfMaps),
                "{rel}"
            );
            assert_eq!(m.def.value_size, 4, "{rel}");
            let inner = m.def.inner.as_deref().unwrap();
            assert!(
                inner.key_size > 0 && inner.max_entries > 0,
                "{rel}: {inner:?}"
            );
        }
    }

    // Legacy `bpf_map_def.inner_map_idx` across `maps/*` sections.
    let obj = load("build/map_in_map_legacy.o");
    let outer = &obj.map("array_of_maps").unwrap().def;
    assert_eq!(
        (outer.map_type, outer.max_entries),
        (MapType::ArrayOfMaps, 1)
    );
    let inner = outer.inner.as_deref().unwrap();
    assert_eq!(
        (
            inner.name.as_str(),
            inner.map_type,
            inner.key_size,
            inner.value_size
        ),
        ("inner_map", MapType::Array, 4, 8)
    );

    // A prog array's `__array(values, int ())`.
    let obj = load("build/prog_array.o");
    let pa = &obj.map("prog_array_map").unwrap().def;
    assert_eq!(
        (pa.map_type, pa.value_size, pa.inner.is_none()),
        (MapType::ProgArray, 4, true)
    );
}

#[test]
fn global_data_offsets() {
    let obj = load("build/global_variable.o");
    let names: Vec<&str> = obj.maps.iter().map(|m| m.def.name.as_str()).collect();
    assert_eq!(names, [".bss", ".rodata", ".data"]);
    for m in &obj.maps {
        let d = &m.def;
        assert_eq!(
            m.origin,
            MapOrigin::GlobalData {
                section: d.name.clone()
            }
        );
        assert_eq!(
            (d.map_type, d.key_size, d.max_entries),
            (MapType::Array, 4, 1)
        );
        assert_eq!(
            m.initial.as_ref().map(Vec::len),
            Some(d.value_size as usize)
        );
        let ro = d.name.starts_with(".rodata");
        assert_eq!(
            d.flags,
            flags::BPF_F_MMAPABLE | if ro { flags::BPF_F_RDONLY_PROG } else { 0 }
        );
    }
    let bss = obj.map(".bss").unwrap();
    assert_eq!(bss.def.value_size, 8); // global_var, global_var_2
    assert_eq!(bss.initial.as_deref(), Some(&[0u8; 8][..]));

    let p = obj.program("func").unwrap();
    assert_eq!(
        (p.section.as_str(), p.prog_type),
        (".text", ProgType::Unspec)
    );
    // Slots per llvm-objdump: `.bss`+0, `.bss`+4 (addend in the insn),
    // `.rodata`+0, `.data`+0.
    assert_eq!(lddw(&p.insns, 1), (pseudo::MAP_IDX_VALUE, 0, 0));
    assert_eq!(lddw(&p.insns, 5), (pseudo::MAP_IDX_VALUE, 0, 4));
    assert_eq!(lddw(&p.insns, 8), (pseudo::MAP_IDX_VALUE, 1, 0));
    assert_eq!(lddw(&p.insns, 11), (pseudo::MAP_IDX_VALUE, 2, 0));
    let decoded = isa::decode(&p.insns).unwrap();
    assert!(decoded.iter().any(|(pc, i)| *pc == 5
        && matches!(
            i,
            Instruction::LdImm64 {
                value: LdImm64::MapIdxValue { map: 0, off: 4 },
                ..
            }
        )));
}

/// The code and dst fields of each slot: what linking never changes.
fn shape(insns: &[Insn]) -> Vec<(u8, u8)> {
    insns.iter().map(|i| (i.code, i.dst)).collect()
}

#[test]
fn bpf2bpf_calls_are_linked() {
    // `func` (section `test`, 37 slots) calls `add2` (.text slots 13..21)
    // twice; `add2` calls `add1` (.text slots 0..13) twice.
    let obj = load("build/bpf2bpf.o");
    assert_eq!(
        obj.programs.len(),
        1,
        "the .text functions are subprograms here"
    );
    let p = obj.program("func").unwrap();
    assert_eq!(p.insns.len(), 37 + 8 + 13);
    let decoded = isa::decode(&p.insns).unwrap();
    let calls: Vec<(usize, usize)> = decoded
        .iter()
        .filter_map(|(pc, i)| match i {
            Instruction::Call(CallTarget::Local(off)) => {
                Some((*pc, (*pc as i64 + 1 + i64::from(*off)) as usize))
            }
            _ => None,
        })
        .collect();
    // Calls at slots 7 and 9 land on add2's first slot (37); add2's calls
    // (its slots 4 and 6, now 41 and 43) land on add1's (45).
    assert_eq!(calls, [(7, 37), (9, 37), (41, 45), (43, 45)]);
    // add2 starts `*(u64 *)(r10 - 8) = r1; r1 = 13`, add1 `... r1 = 1`.
    assert_eq!((p.insns[37].code, p.insns[38].imm), (0x7b, 13));
    assert_eq!((p.insns[45].code, p.insns[46].imm), (0x7b, 1));
}

#[test]
fn tail_call_sections() {
    let obj = load("build/tail_call.o");
    let caller = obj.program("xdp_prog").unwrap();
    let callee = obj.program("xdp_prog/0").unwrap();
    assert_eq!(
        (caller.name.as_str(), caller.prog_type),
        ("caller", ProgType::Xdp)
    );
    assert_eq!(
        (callee.name.as_str(), callee.prog_type),
        ("callee", ProgType::Xdp)
    );
    assert_eq!(obj.map("map").unwrap().def.map_type, MapType::ProgArray);
}

#[test]
fn section_names_give_program_types() {
    for (name, ty) in [
        ("xdp", ProgType::Xdp),
        ("xdp/foo", ProgType::Xdp),
        ("xdp_redirect_map", ProgType::Xdp),
        ("xdp1", ProgType::Xdp),
        ("xdp.frags", ProgType::XdpFrags),
        ("xdp.frags/devmap", ProgType::XdpFrags),
        ("tc", ProgType::SchedCls),
        ("tc/ingress", ProgType::SchedCls),
        ("tc_mark", ProgType::SchedCls),
        ("tcx/egress", ProgType::SchedCls),
        ("classifier", ProgType::SchedCls),
        ("classifier/x", ProgType::SchedCls),
        ("socket", ProgType::SocketFilter),
        ("socket/3", ProgType::SocketFilter),
        ("socket_filter", ProgType::SocketFilter),
        ("tcp", ProgType::Unspec),
        ("kprobe/sys_open", ProgType::Unspec),
        (".text", ProgType::Unspec),
    ] {
        assert_eq!(ProgType::from_section(name), ty, "{name}");
    }
}

#[test]
fn malformed_and_unsupported_samples_fail_cleanly() {
    for rel in [
        "invalid/806cc077e56f0ec32236c99055714f63649e7a38",
        "invalid/af99e766f6ba44fd7f2135c3e325c817224b99a3",
        "invalid/c049438cf649269921736e7306231385350dea58",
        "invalid/badsymsize.o",
        "invalid/58087ea4ff41695f3186d628a3250b26dc8d237a",
        "invalid/ab3408afd06d68dd7e73bf21bde38350d9751a78",
    ] {
        let e = load_err(rel);
        println!("{rel}: {e}");
    }
    let e = load_err("invalid/invalid-lddw.o");
    assert!(e.to_string().contains("lddw is cut off"), "{e}");
    let e = load_err("build/externalfunction.o");
    assert_eq!(
        e.to_string().split(" (helpers").next().unwrap(),
        "section .text: insn 6: call to undefined function \"bpf_map_lookup_elem\""
    );
}

/// Finds section `name` of an object and returns its file offset and size.
fn section_range(bytes: &[u8], name: &str) -> (usize, usize) {
    use object::read::elf::{FileHeader, SectionHeader};
    let header = object::elf::FileHeader64::<object::Endianness>::parse(bytes).unwrap();
    let endian = header.endian().unwrap();
    let sections = header.sections(endian, bytes).unwrap();
    let (_, sh) = sections.section_by_name(endian, name.as_bytes()).unwrap();
    let (off, size) = sh.file_range(endian).unwrap();
    (off as usize, size as usize)
}

#[test]
fn unsupported_relocation_type_is_named() {
    let mut bytes = std::fs::read(samples_dir().join("build/bpf2bpf.o")).unwrap();
    let (off, _) = section_range(&bytes, ".reltest");
    // r_info is at +8 of the first Elf64_Rel; its low 32 bits are the type.
    bytes[off + 8] = 2; // R_BPF_64_ABS64
    let e = elf::parse(&bytes).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported relocation type 2 in .reltest (offset 56)"
    );
}

// ---------------------------------------------------------------------------
// Robustness: truncated and bit-flipped objects never panic.

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn parse_no_panic(bytes: &[u8], what: &dyn Fn() -> String) {
    if std::panic::catch_unwind(|| elf::parse(bytes)).is_err() {
        panic!("parse panicked on {}", what());
    }
}

#[test]
fn truncated_and_bit_flipped_objects_never_panic() {
    let objects = [
        "build/bpf2bpf.o",
        "build/map_in_map.o",
        "build/map_in_map_legacy.o",
        "build/prog_array.o",
        "build/global_variable.o",
        "build/tail_call.o",
        "linux/xdp1_kern.o",
        "new_linux/sockex3_kern.o",
        "cilium-examples/xdp_bpf_bpfel.o",
        "cilium/bpf_xdp.o",
    ];
    let mut rng = Rng(0x5eed_0f51_07ce);
    let mut parsed_ok = 0usize;
    let mut runs = 0usize;
    for rel in objects {
        let original = std::fs::read(samples_dir().join(rel)).unwrap();
        let step = (original.len() / 1500).max(1);
        for len in (0..original.len()).step_by(step) {
            parse_no_panic(&original[..len], &|| {
                format!("{rel} truncated to {len} bytes")
            });
            runs += 1;
        }
        for round in 0..2500 {
            let mut bytes = original.clone();
            let flips = 1 + rng.below(4);
            for _ in 0..flips {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
            }
            // Now and then also a random byte in the first KiB (headers).
            if round % 4 == 0 {
                let at = rng.below(bytes.len().min(1024));
                bytes[at] = rng.next() as u8;
            }
            if std::panic::catch_unwind(|| elf::parse(&bytes)).map_or_else(
                |_| panic!("parse panicked on {rel}, mutation round {round}"),
                |r| r.is_ok(),
            ) {
                parsed_ok += 1;
            }
            runs += 1;
        }
    }
    println!(
        "{runs} mutated parses without a panic ({parsed_ok} bit-flipped objects still parsed)"
    );
}

// ---------------------------------------------------------------------------
// Objects compiled here: relocation cases the samples do not cover.

/// Compiles `source` with `clang -O2 -g -target bpf` (plus `defines`) and
/// returns the object's bytes, or `None` (loudly) without clang.
fn compile(test: &str, source: &str, defines: &[&str]) -> Option<Vec<u8>> {
    let ok = std::process::Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: clang not found; {test} needs it to compile its BPF objects");
        return None;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("elf-{test}"));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("prog.c");
    let obj = dir.join("prog.o");
    std::fs::write(&src, source).unwrap();
    let out = std::process::Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-c"])
        .args(defines.iter().map(|d| format!("-D{d}")))
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "clang failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(std::fs::read(&obj).unwrap())
}

/// Function bodies by name, straight from the object's symbols.
fn function_bodies(bytes: &[u8]) -> Vec<(String, Vec<Insn>)> {
    use object::read::elf::{FileHeader, SectionHeader, Sym};
    let header = object::elf::FileHeader64::<object::Endianness>::parse(bytes).unwrap();
    let endian = header.endian().unwrap();
    let sections = header.sections(endian, bytes).unwrap();
    let symbols = sections
        .symbols(endian, bytes, object::elf::SHT_SYMTAB)
        .unwrap();
    let mut out = Vec::new();
    for (i, sym) in symbols.enumerate() {
        if sym.st_type() != object::elf::STT_FUNC {
            continue;
        }
        let section = symbols.symbol_section(endian, sym, i).unwrap().unwrap();
        let data = sections
            .section(section)
            .unwrap()
            .data(endian, bytes)
            .unwrap();
        let start = sym.st_value(endian) as usize;
        let body = &data[start..start + sym.st_size(endian) as usize];
        let name = String::from_utf8(symbols.symbol_name(endian, sym).unwrap().to_vec()).unwrap();
        out.push((name, isa::slots(body).unwrap()));
    }
    out
}

const MULTI: &str = r#"
#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
struct xdp_md { unsigned int data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex; };
static long (*bpf_loop)(unsigned int nr, void *cb, void *ctx, unsigned long long flags) = (void *)181;
static long (*bpf_trace_printk)(const char *fmt, unsigned int size, ...) = (void *)6;
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

struct {
    __uint(type, 1);
    __type(key, unsigned int);
    __type(value, unsigned long long);
    __uint(max_entries, 16);
    __uint(pinning, 1);
} counts SEC(".maps");

const volatile int cfg = 7;
int counter;
int data_var = 5;

__attribute__((noinline)) int text_helper(int x) { return x * 3 + cfg; }
static __attribute__((noinline)) int static_text(int x) { return x ^ 0x55; }
static __attribute__((noinline)) int cb(unsigned int i, void *ctx) { (*(int *)ctx)++; counter++; return 0; }

static __attribute__((noinline)) SEC("xdp") int static_in_xdp(int x) { return x + data_var; }
__attribute__((noinline)) SEC("xdp") int second(struct xdp_md *ctx) { return static_in_xdp(ctx->data) & 3; }
SEC("xdp") int first(struct xdp_md *ctx) {
    int n = 0;
    unsigned int k = ctx->ingress_ifindex;
    bpf_loop(4, cb, &n, 0);
    bpf_trace_printk("n=%d\n", sizeof("n=%d\n"), n);
    unsigned long long *v = bpf_map_lookup_elem(&counts, &k);
    if (v) *v += 1;
    return (second(ctx) + text_helper(n) + static_text(k)) & 3;
}
char _license[] SEC("license") = "GPL";
"#;

#[test]
fn shared_sections_callbacks_and_global_data_link() {
    let Some(bytes) = compile("multi", MULTI, &[]) else {
        return;
    };
    let obj = elf::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(obj.license.as_deref(), Some("GPL"));
    let mut names: Vec<&str> = obj.programs.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["first", "second", "static_in_xdp"]);
    assert!(obj
        .programs
        .iter()
        .all(|p| p.section == "xdp" && p.prog_type == ProgType::Xdp));

    let counts = &obj.map("counts").unwrap().def;
    assert_eq!(
        (
            counts.map_type,
            counts.key_size,
            counts.value_size,
            counts.max_entries,
            counts.pinning
        ),
        (MapType::Hash, 4, 8, 16, Pinning::ByName)
    );
    assert_eq!(
        obj.map(".rodata").unwrap().initial.as_deref(),
        Some(&7i32.to_le_bytes()[..])
    );
    assert_eq!(
        obj.map(".data").unwrap().initial.as_deref(),
        Some(&5i32.to_le_bytes()[..])
    );
    assert_eq!(
        obj.map(".bss").unwrap().initial.as_deref(),
        Some(&[0u8; 4][..])
    );
    let strings = obj.map(".rodata.str1.1").unwrap();
    assert!(strings.initial.as_deref().unwrap().starts_with(b"n=%d\n\0"));
    assert_ne!(strings.def.flags & flags::BPF_F_RDONLY_PROG, 0);

    let bodies = function_bodies(&bytes);
    let body = |name: &str| &bodies.iter().find(|(n, _)| n == name).unwrap().1;
    let first = obj.program("first").unwrap();
    let own = body("first").len();
    // Every call and function address lands on the first slot of a copy of
    // a function; each needed function is there exactly once.
    let decoded = isa::decode(&first.insns).unwrap();
    let mut landed = Vec::new();
    for (pc, i) in &decoded {
        let off = match i {
            Instruction::Call(CallTarget::Local(off)) => *off,
            Instruction::LdImm64 {
                value: LdImm64::Func(off),
                ..
            } => *off,
            _ => continue,
        };
        let target = (*pc as i64 + 1 + i64::from(off)) as usize;
        assert!(target >= own, "call at {pc} lands inside `first`");
        let (name, b) = bodies
            .iter()
            .find(|(_, b)| {
                first
                    .insns
                    .get(target..target + b.len())
                    .is_some_and(|s| shape(s) == shape(b))
            })
            .unwrap_or_else(|| panic!("call at {pc} lands on no function start ({target})"));
        landed.push((name.as_str(), target, b.len()));
    }
    landed.sort_unstable();
    landed.dedup();
    let mut called: Vec<&str> = landed.iter().map(|l| l.0).collect();
    called.dedup();
    // `static_text` is called through the `.text` section symbol (imm + 1
    // is its slot), the others through their own symbols, `static_in_xdp`
    // (from `second`'s copy) without any relocation, `cb` by address.
    assert_eq!(
        called,
        [
            "cb",
            "second",
            "static_in_xdp",
            "static_text",
            "text_helper"
        ]
    );
    assert_eq!(landed.len(), 5, "each function appended once: {landed:?}");
    let total: usize = own + landed.iter().map(|l| l.2).sum::<usize>();
    assert_eq!(first.insns.len(), total);

    // Map references, wherever they ended up.
    let mut refs: Vec<(i32, u32)> = decoded
        .iter()
        .filter_map(|(_, i)| match i {
            Instruction::LdImm64 {
                value: LdImm64::MapIdx(m),
                ..
            } => Some((*m, u32::MAX)),
            Instruction::LdImm64 {
                value: LdImm64::MapIdxValue { map, off },
                ..
            } => Some((*map, *off)),
            _ => None,
        })
        .collect();
    refs.sort_unstable();
    let mut want = vec![
        (map_index(&obj, "counts"), u32::MAX),
        (map_index(&obj, ".rodata"), 0),
        (map_index(&obj, ".data"), 0),
        (map_index(&obj, ".bss"), 0),
        (map_index(&obj, ".rodata.str1.1"), 0),
    ];
    want.sort_unstable();
    assert_eq!(refs, want);

    // `second` alone: its unrelocated call to the static function of the
    // same section is linked too.
    let second = obj.program("second").unwrap();
    assert_eq!(
        second.insns.len(),
        body("second").len() + body("static_in_xdp").len()
    );
}

const FEATURES: &str = r#"
#define SEC(n) __attribute__((section(n), used))
struct xdp_md { unsigned int data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex; };
#ifdef KFUNC
extern int bpf_kfunc_x(int) __attribute__((section(".ksyms")));
SEC("xdp") int prog(struct xdp_md *ctx) { return bpf_kfunc_x(ctx->data); }
#endif
#ifdef KCONFIG
extern int CONFIG_HZ __attribute__((section(".kconfig"), weak));
SEC("xdp") int prog(struct xdp_md *ctx) { return CONFIG_HZ; }
#endif
#ifdef COLD
__attribute__((noinline, section(".text.unlikely"))) int cold(int x) { return x + 1; }
SEC("xdp") int prog(struct xdp_md *ctx) { return cold(ctx->data); }
#endif
#ifdef CORE
struct S { int a; int b; } __attribute__((preserve_access_index));
SEC("xdp") int prog(struct xdp_md *ctx) {
    struct S *s = (void *)(long)ctx->data;
    if ((void *)(s + 1) > (void *)(long)ctx->data_end) return 0;
    return s->b;
}
#endif
char _license[] SEC("license") = "GPL";
"#;

#[test]
fn unsupported_features_are_named() {
    let cases = [
        ("KFUNC", "kfunc call to \"bpf_kfunc_x\" is not supported"),
        ("KCONFIG", "reference to extern symbol \"CONFIG_HZ\""),
        (
            "COLD",
            "relocation against symbol \"cold\" in section .text.unlikely is not supported",
        ),
        (
            "CORE",
            "BTF CO-RE relocations (.BTF.ext) are not supported (field_byte_offset relocation)",
        ),
    ];
    for (define, want) in cases {
        let Some(bytes) = compile(&format!("feature-{define}"), FEATURES, &[define]) else {
            return;
        };
        let e = elf::parse(&bytes).expect_err(define).to_string();
        assert!(e.starts_with("section xdp: insn "), "{define}: {e}");
        assert!(e.contains(want), "{define}: {e}");
    }
}

const LEGACY: &str = r#"
#define SEC(n) __attribute__((section(n), used))
struct xdp_md { unsigned int data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex; };
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
#ifdef ELF_MAP
/* iproute2's struct bpf_elf_map, with map-in-map fields. */
struct bpf_elf_map { unsigned int type, size_key, size_value, max_elem, flags, id, pinning, inner_id, inner_idx; };
struct bpf_elf_map SEC("maps") inner = { .type = 2, .size_key = 4, .size_value = 8, .max_elem = 1, .id = 7 };
struct bpf_elf_map SEC("maps") outer = { .type = 13, .size_key = 4, .size_value = 4, .max_elem = 64,
                                          .pinning = 2, .inner_id = 7 };
#define MAP outer
#else
/* libbpf's five-field struct bpf_map_def. */
struct bpf_map_def { unsigned int type, key_size, value_size, max_entries, map_flags; };
struct bpf_map_def SEC("maps") first = { .type = 1, .key_size = 8, .value_size = 16, .max_entries = 100 };
struct bpf_map_def SEC("maps") second = { .type = 6, .key_size = 4, .value_size = 8, .max_entries = 4, .map_flags = 0 };
#define MAP second
#endif
SEC("xdp") int prog(struct xdp_md *ctx) {
    unsigned int k = 0;
    return bpf_map_lookup_elem(&MAP, &k) ? 2 : 1;
}
char _license[] SEC("license") = "GPL";
"#;

#[test]
fn legacy_map_layouts() {
    let Some(bytes) = compile("legacy-elf-map", LEGACY, &["ELF_MAP"]) else {
        return;
    };
    let obj = elf::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let outer = &obj.map("outer").unwrap().def;
    assert_eq!(
        (
            outer.map_type,
            outer.key_size,
            outer.value_size,
            outer.max_entries,
            outer.pinning
        ),
        (MapType::HashOfMaps, 4, 4, 64, Pinning::ByName)
    );
    let inner = outer.inner.as_deref().expect("inner_id names the template");
    assert_eq!(
        (inner.name.as_str(), inner.map_type, inner.value_size),
        ("inner", MapType::Array, 8)
    );
    let prog = obj.program("xdp").unwrap();
    let refs: Vec<_> = isa::decode(&prog.insns)
        .unwrap()
        .into_iter()
        .filter_map(|(_, i)| match i {
            Instruction::LdImm64 {
                value: LdImm64::MapIdx(m),
                ..
            } => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(refs, [map_index(&obj, "outer")]);

    let Some(bytes) = compile("legacy-map-def", LEGACY, &[]) else {
        return;
    };
    let obj = elf::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<_> = obj
        .maps
        .iter()
        .map(|m| {
            (
                m.def.name.as_str(),
                m.def.map_type,
                m.def.key_size,
                m.def.value_size,
                m.def.max_entries,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("first", MapType::Hash, 8, 16, 100),
            ("second", MapType::PercpuArray, 4, 8, 4)
        ]
    );
    let prog = obj.program("prog").unwrap();
    let pc = prog.insns.iter().position(|i| i.code == 0x18).unwrap();
    assert_eq!(lddw(&prog.insns, pc), (pseudo::MAP_IDX, 1, 0));
}

// ---------------------------------------------------------------------------
// Initial values of prog arrays and maps of maps.

const VALUES: &str = r#"
#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]
struct xdp_md { unsigned int data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex; };
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_tail_call)(void *ctx, void *map, unsigned int index) = (void *)12;

SEC("xdp") int stage_a(struct xdp_md *ctx) { return 1; }
SEC("xdp/b") int stage_b(struct xdp_md *ctx) { return 2; }
/* Static: clang relocates it against its section symbol. */
static SEC("xdp/c") int stage_c(struct xdp_md *ctx) { return 3; }
#ifdef SKIPPED
SEC("tc") int classifier(struct xdp_md *ctx) { return 0; }
#endif
#ifdef SUBPROG
__attribute__((noinline)) int helper(struct xdp_md *ctx) { return ctx->data; }
#endif

struct {
    __uint(type, 3); /* BPF_MAP_TYPE_PROG_ARRAY */
    __uint(max_entries, MAX);
    __uint(key_size, 4);
    __array(values, int (struct xdp_md *));
} jmp SEC(".maps") = {
    .values = { [0] = &stage_a, [2] = &stage_b, [3] = &stage_c,
#ifdef SKIPPED
        [1] = &classifier,
#endif
#ifdef SUBPROG
        [1] = &helper,
#endif
    },
};

struct inner { __uint(type, 2); __uint(max_entries, 1); __type(key, unsigned int); __type(value, unsigned long long); };
struct inner in0 SEC(".maps"), in1 SEC(".maps");
struct {
    __uint(type, 12); /* BPF_MAP_TYPE_ARRAY_OF_MAPS */
    __uint(max_entries, 3);
    __type(key, unsigned int);
    __array(values, struct inner);
} outer SEC(".maps") = { .values = { [0] = &in0, [2] = &in1 } };
struct {
    __uint(type, 13); /* BPF_MAP_TYPE_HASH_OF_MAPS */
    __uint(max_entries, 8);
    __type(key, unsigned int);
    __array(values, struct inner);
} houter SEC(".maps") = { .values = { [5] = &in1 } };

/* Counts in outer[0] (in0), then tail-calls jmp[rx_queue_index]; 7 when
   the slot is empty. */
SEC("xdp") int entry(struct xdp_md *ctx) {
    unsigned int k = 0;
    void *m = bpf_map_lookup_elem(&outer, &k);
    if (!m) return 0;
    unsigned long long *v = bpf_map_lookup_elem(m, &k);
    if (v) *v += 1;
    bpf_tail_call(ctx, &jmp, ctx->rx_queue_index);
    return 7;
}
char _license[] SEC("license") = "GPL";
"#;

fn map_idx(obj: &Object, name: &str) -> usize {
    obj.maps
        .iter()
        .position(|m| m.def.name == name)
        .unwrap_or_else(|| panic!("no map {name}"))
}

#[test]
fn values_fill_prog_arrays_and_maps_of_maps() {
    let Some(bytes) = compile("values", VALUES, &["MAX=4"]) else {
        return;
    };
    let obj = elf::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let program = |index: u32, name: &str, section: &str| MapInit::Program {
        index,
        name: name.into(),
        section: section.into(),
    };
    assert_eq!(
        obj.map("jmp").unwrap().init,
        [
            program(0, "stage_a", "xdp"),
            program(2, "stage_b", "xdp/b"),
            program(3, "stage_c", "xdp/c"),
        ]
    );
    let (in0, in1) = (map_idx(&obj, "in0"), map_idx(&obj, "in1"));
    assert_eq!(
        obj.map("outer").unwrap().init,
        [
            MapInit::Map { index: 0, map: in0 },
            MapInit::Map { index: 2, map: in1 }
        ]
    );
    assert_eq!(
        obj.map("houter").unwrap().init,
        [MapInit::Map { index: 5, map: in1 }]
    );
    assert!(obj.map("in0").unwrap().init.is_empty());

    let loaded =
        LoadedObject::from_elf(&bytes, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let jmp = loaded.map("jmp").unwrap().downcast::<ProgArray>().unwrap();
    for (slot, name) in [
        (0, Some("stage_a")),
        (1, None),
        (2, Some("stage_b")),
        (3, Some("stage_c")),
    ] {
        let got = jmp.load(slot);
        let want = name.map(|n| &loaded.program(n).unwrap().program);
        assert_eq!(
            got.is_some(),
            want.is_some(),
            "jmp[{slot}] should hold {name:?}"
        );
        if let (Some(got), Some(want)) = (got, want) {
            assert!(Arc::ptr_eq(&got, want), "jmp[{slot}] holds another program");
        }
    }
    let id = |name: &str| loaded.map(name).unwrap().id();
    let outer = loaded
        .map("outer")
        .unwrap()
        .downcast::<MapOfMaps>()
        .unwrap();
    let key = |k: u32| k.to_le_bytes();
    assert_eq!(outer.get(&key(0)).map(|m| m.id()), Some(id("in0")));
    assert!(outer.get(&key(1)).is_none());
    assert_eq!(outer.get(&key(2)).map(|m| m.id()), Some(id("in1")));
    let houter = loaded
        .map("houter")
        .unwrap()
        .downcast::<MapOfMaps>()
        .unwrap();
    assert_eq!(houter.get(&key(5)).map(|m| m.id()), Some(id("in1")));
    assert_eq!(loaded.map("houter").unwrap().ops().len(), 1);

    // The entry program counts through outer[0] and tail-calls by queue.
    let entry = &loaded.program("entry").unwrap().program;
    let mut vm = Vm::new();
    for (queue, verdict) in [(0, 1), (1, 7), (2, 2), (3, 3)] {
        let mut buf = vec![0u8; 128];
        let mut frame = XdpFrame::new(&mut buf, 64, 128);
        frame.rx_queue_index = queue;
        assert_eq!(
            vm.run_xdp(entry, &mut frame).unwrap(),
            verdict,
            "queue {queue}"
        );
    }
    let count = loaded.map("in0").unwrap().lookup_vec(&key(0)).unwrap();
    assert_eq!(count, 4u64.to_le_bytes());
    loaded.clear_prog_arrays();
    assert!(jmp.load(0).is_none());
}

#[test]
fn values_that_cannot_be_honoured_are_named() {
    // A program that is not loaded: the whole object fails, naming the
    // map, the index, the program and why it was skipped.
    let Some(bytes) = compile("values-skipped", VALUES, &["MAX=4", "SKIPPED"]) else {
        return;
    };
    let obj = elf::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert!(obj.map("jmp").unwrap().init.contains(&MapInit::Program {
        index: 1,
        name: "classifier".into(),
        section: "tc".into()
    }));
    let e = LoadedObject::from_elf(&bytes, &LoadOptions::default())
        .expect_err("a prog array slot names a tc program")
        .to_string();
    assert_eq!(
        e,
        "map jmp: initial value at index 1: program classifier was not loaded: \
         section tc: program type SchedCls is not supported: Sluice runs XDP programs"
    );

    // A subprogram is not a program.
    let Some(bytes) = compile("values-subprog", VALUES, &["MAX=4", "SUBPROG"]) else {
        return;
    };
    let e = elf::parse(&bytes).expect_err("values names a subprogram");
    assert_eq!(
        e.to_string(),
        "map \"jmp\": values[1] names \"helper\", a subprogram of section .text, not a program"
    );

    // An index past max_entries.
    let Some(bytes) = compile("values-past-end", VALUES, &["MAX=3"]) else {
        return;
    };
    let e = elf::parse(&bytes).expect_err("values[3] of a 3-slot array");
    assert_eq!(
        e.to_string(),
        "map \"jmp\": index 3 (program \"stage_c\") is past max_entries 3"
    );
}

#[test]
fn values_of_samples() {
    // PREVAIL's prog_array.o: four `.text` programs in `.values`, and a
    // fifth that tail-calls a random one of them.
    let bytes = std::fs::read(samples_dir().join("build/prog_array.o")).unwrap();
    let obj = elf::parse(&bytes).unwrap();
    let inits: Vec<_> = obj.map("prog_array_map").unwrap().init.clone();
    let want: Vec<_> = (0..4)
        .map(|i| MapInit::Program {
            index: i,
            name: format!("func{i}"),
            section: ".text".into(),
        })
        .collect();
    assert_eq!(inits, want);
    // Without a type, the `.text` programs are skipped, and so is the
    // object; as XDP (what `ip ... xdp obj` would say) it loads.
    assert!(LoadedObject::from_elf(&bytes, &LoadOptions::default()).is_err());
    let opts = LoadOptions {
        default_type: Some(ProgType::Xdp),
        ..LoadOptions::default()
    };
    let loaded = LoadedObject::from_elf(&bytes, &opts).unwrap_or_else(|e| panic!("{e}"));
    let func = &loaded.program("func").unwrap().program;
    let mut vm = Vm::new();
    let mut seen = [false; 4];
    for seed in 0..64 {
        vm.seed_random(seed);
        let mut buf = vec![0u8; 64];
        let mut frame = XdpFrame::new(&mut buf, 0, 64);
        let r = vm.run_xdp(func, &mut frame).unwrap();
        assert!(r < 4, "tail call fell through: {r:#x}");
        seen[r as usize] = true;
    }
    assert_eq!(seen, [true; 4], "every slot is reachable");
    loaded.clear_prog_arrays();

    // Old Cilium, built for iproute2: tail calls in sections `2/KEY` fill
    // the prog array whose `id` is 2.
    let obj = load("cilium/bpf_xdp_dsr_linux.o");
    let calls = &obj.map("cilium_calls_xdp").unwrap().init;
    let slots: Vec<(u32, &str)> = calls
        .iter()
        .map(|i| match i {
            MapInit::Program { index, section, .. } => (*index, section.as_str()),
            MapInit::Map { .. } => panic!("a map in a prog array: {i:?}"),
        })
        .collect();
    assert_eq!(
        slots,
        [
            (1, "2/1"),
            (7, "2/7"),
            (10, "2/10"),
            (15, "2/15"),
            (16, "2/16"),
            (17, "2/17"),
            (18, "2/18"),
            (19, "2/19"),
            (20, "2/20"),
            (21, "2/21"),
            (24, "2/24")
        ]
    );

    // PREVAIL's map_in_map.o: `.values = { &inner_map }`.
    let bytes = std::fs::read(samples_dir().join("build/map_in_map.o")).unwrap();
    let obj = elf::parse(&bytes).unwrap();
    assert_eq!(
        obj.map("array_of_maps").unwrap().init,
        [MapInit::Map {
            index: 0,
            map: map_idx(&obj, "inner_map")
        }]
    );
    let loaded = LoadedObject::from_elf(&bytes, &opts).unwrap_or_else(|e| panic!("{e}"));
    let outer = loaded.map("array_of_maps").unwrap();
    let inner = outer
        .downcast::<MapOfMaps>()
        .unwrap()
        .get(&0u32.to_le_bytes())
        .expect("slot 0 filled");
    assert_eq!(inner.id(), loaded.map("inner_map").unwrap().id());
}

const IPROUTE2: &str = r#"
#define SEC(n) __attribute__((section(n), used))
struct xdp_md { unsigned int data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex; };
static long (*bpf_tail_call)(void *ctx, void *map, unsigned int index) = (void *)12;
struct bpf_elf_map { unsigned int type, size_key, size_value, max_elem, flags, id, pinning, inner_id, inner_idx; };
/* Inner maps go at key inner_idx of the outer map whose inner_id is their id. */
struct bpf_elf_map SEC("maps") inner_a = { .type = 2, .size_key = 4, .size_value = 8, .max_elem = 1, .id = 7, .inner_idx = 3 };
struct bpf_elf_map SEC("maps") template = { .type = 2, .size_key = 4, .size_value = 8, .max_elem = 1, .id = 7, .inner_idx = -1 };
struct bpf_elf_map SEC("maps") outer = { .type = 12, .size_key = 4, .size_value = 4, .max_elem = 4, .inner_id = 7 };
/* Tail calls: sections ID/KEY fill the prog array whose id is ID. */
struct bpf_elf_map SEC("maps") jmp = { .type = 3, .size_key = 4, .size_value = 4, .max_elem = 4, .id = 9 };
SEC("9/1") int one(struct xdp_md *ctx) { return 1; }
SEC("0x9/2") int two(struct xdp_md *ctx) { return 2; }
SEC("5/0") int unrelated(struct xdp_md *ctx) { return 5; }
SEC("xdp") int entry(struct xdp_md *ctx) { bpf_tail_call(ctx, &jmp, ctx->rx_queue_index); return 7; }
char _license[] SEC("license") = "GPL";
"#;

#[test]
fn iproute2_inner_idx_and_tail_call_sections() {
    let Some(bytes) = compile("iproute2-values", IPROUTE2, &[]) else {
        return;
    };
    let obj = elf::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        obj.map("outer").unwrap().init,
        [MapInit::Map {
            index: 3,
            map: map_idx(&obj, "inner_a")
        }]
    );
    let program = |index: u32, name: &str, section: &str| MapInit::Program {
        index,
        name: name.into(),
        section: section.into(),
    };
    assert_eq!(
        obj.map("jmp").unwrap().init,
        [program(1, "one", "9/1"), program(2, "two", "0x9/2")]
    );

    // The tail-call sections have no type of their own: iproute2 gives
    // them the command's.
    let e = LoadedObject::from_elf(&bytes, &LoadOptions::default())
        .expect_err("9/1 is skipped without a type")
        .to_string();
    assert!(
        e.starts_with("map jmp: initial value at index 1: program one was not loaded: "),
        "{e}"
    );
    let opts = LoadOptions {
        default_type: Some(ProgType::Xdp),
        ..LoadOptions::default()
    };
    let loaded = LoadedObject::from_elf(&bytes, &opts).unwrap_or_else(|e| panic!("{e}"));
    let entry = &loaded.program("entry").unwrap().program;
    let mut vm = Vm::new();
    for (queue, verdict) in [(0, 7), (1, 1), (2, 2), (3, 7)] {
        let mut buf = vec![0u8; 64];
        let mut frame = XdpFrame::new(&mut buf, 0, 64);
        frame.rx_queue_index = queue;
        assert_eq!(
            vm.run_xdp(entry, &mut frame).unwrap(),
            verdict,
            "queue {queue}"
        );
    }
    let outer = loaded
        .map("outer")
        .unwrap()
        .downcast::<MapOfMaps>()
        .unwrap();
    assert_eq!(
        outer.get(&3u32.to_le_bytes()).map(|m| m.id()),
        Some(loaded.map("inner_a").unwrap().id())
    );
    assert_eq!(loaded.map("outer").unwrap().ops().len(), 1);
    loaded.clear_prog_arrays();
}
