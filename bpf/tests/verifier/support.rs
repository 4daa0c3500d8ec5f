//! The verifier case table (`cases.txt`), shared by `verifier_cases.rs`
//! (Sluice's verdicts) and `verifier_kernel.rs` (Linux's).
//!
//! # Format
//!
//! ```text
//! # a comment (column 0, outside code)
//! == packet: the last byte a 14-byte check proves
//! maps: hash key 4 value 8 entries 16; array key 4 value 16 entries 4
//! kind: xdp                      (or `mem 16`: a conformance program over 16 bytes)
//! expect: reject packet-bounds at 5   (or `accept`; `at N` is optional)
//! linux: accept                  (only when Linux differs, or `skip`)
//! why: Linux lets root ...       (required with `linux:`)
//!     ldxw %r2, [%r1+0]          (code: indented lines, assembler syntax)
//!     ...
//! ```
//!
//! Maps are created in order and referenced as `lddw %rN, map_idx I` or
//! `lddw %rN, map_idx_value I+OFF`. A map is `TYPE [key K] [value V]
//! [entries N] [flags rdonly|no_prealloc|...] [inner TYPE ...]`.

#![allow(dead_code)]

use sluice_bpf::maps::{flags, MapDef, MapType, Pinning};
use sluice_bpf::verifier::ProgKind;

/// Sluice's expected verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Verified.
    Accept,
    /// Refused for a reason of this [`Reason::kind`](sluice_bpf::verifier::Reason::kind),
    /// at this instruction if given.
    Reject(String, Option<usize>),
}

/// What Linux does with the case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linux {
    /// The same as Sluice.
    Same,
    /// Linux loads it (Sluice refuses).
    Accept,
    /// Linux refuses it (Sluice accepts).
    Reject,
    /// Not loadable in Linux as is (plain-memory programs).
    Skip,
}

/// One case.
#[derive(Clone, Debug)]
pub struct Case {
    /// Its name.
    pub name: String,
    /// Line of the `==` header in `cases.txt`.
    pub line: usize,
    /// Maps, by index.
    pub maps: Vec<MapDef>,
    /// Program type.
    pub kind: ProgKind,
    /// Sluice's verdict.
    pub expect: Expect,
    /// Linux's, when different.
    pub linux: Linux,
    /// Why Linux differs.
    pub why: Option<String>,
    /// The program.
    pub code: String,
}

impl Case {
    /// Whether Sluice accepts it.
    pub fn sluice_accepts(&self) -> bool {
        self.expect == Expect::Accept
    }

    /// Whether Linux is expected to accept it (`None`: not run in Linux).
    pub fn linux_accepts(&self) -> Option<bool> {
        match self.linux {
            Linux::Same => Some(self.sluice_accepts()),
            Linux::Accept => Some(true),
            Linux::Reject => Some(false),
            Linux::Skip => None,
        }
    }
}

/// The case file.
pub const CASES: &str = include_str!("cases.txt");

/// Parses `cases.txt`.
///
/// # Panics
/// On a malformed case, naming its line.
pub fn load_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    let mut cur: Option<Case> = None;
    for (i, raw) in CASES.lines().enumerate() {
        let line = i + 1;
        if let Some(name) = raw.strip_prefix("== ") {
            if let Some(c) = cur.take() {
                cases.push(finish(c));
            }
            cur = Some(Case {
                name: name.trim().to_string(),
                line,
                maps: Vec::new(),
                kind: ProgKind::Xdp,
                expect: Expect::Accept,
                linux: Linux::Same,
                why: None,
                code: String::new(),
            });
            continue;
        }
        if raw.starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        let c = cur
            .as_mut()
            .unwrap_or_else(|| panic!("cases.txt:{line}: text before the first case"));
        if raw.starts_with(' ') || raw.starts_with('\t') {
            c.code.push_str(raw.trim());
            c.code.push('\n');
            continue;
        }
        let (key, value) = raw
            .split_once(':')
            .unwrap_or_else(|| panic!("cases.txt:{line}: expected `key: value`"));
        let value = value.trim();
        match key.trim() {
            "maps" => {
                c.maps = value
                    .split(';')
                    .filter(|s| !s.trim().is_empty())
                    .enumerate()
                    .map(|(n, s)| parse_map(s, n, line))
                    .collect()
            }
            "kind" => {
                c.kind = match value.split_whitespace().collect::<Vec<_>>()[..] {
                    ["xdp"] => ProgKind::Xdp,
                    ["mem", n] => ProgKind::Memory {
                        len: n.parse().expect("mem length"),
                    },
                    _ => panic!("cases.txt:{line}: bad kind {value}"),
                }
            }
            "expect" => {
                let w: Vec<&str> = value.split_whitespace().collect();
                c.expect = match w[..] {
                    ["accept"] => Expect::Accept,
                    ["reject", k] => Expect::Reject(k.into(), None),
                    ["reject", k, "at", n] => {
                        Expect::Reject(k.into(), Some(n.parse().expect("insn")))
                    }
                    _ => panic!("cases.txt:{line}: bad expect {value}"),
                }
            }
            "linux" => {
                c.linux = match value {
                    "accept" => Linux::Accept,
                    "reject" => Linux::Reject,
                    "skip" => Linux::Skip,
                    _ => panic!("cases.txt:{line}: bad linux {value}"),
                }
            }
            "why" => c.why = Some(value.to_string()),
            k => panic!("cases.txt:{line}: unknown key {k}"),
        }
    }
    if let Some(c) = cur.take() {
        cases.push(finish(c));
    }
    cases
}

fn finish(mut c: Case) -> Case {
    if matches!(c.kind, ProgKind::Memory { .. }) && c.linux == Linux::Same {
        c.linux = Linux::Skip;
    }
    assert!(
        !c.code.is_empty(),
        "cases.txt:{}: case {:?} has no code",
        c.line,
        c.name
    );
    if matches!(c.linux, Linux::Accept | Linux::Reject) {
        assert!(
            c.why.is_some(),
            "cases.txt:{}: case {:?} differs from Linux but says not why",
            c.line,
            c.name
        );
        assert!(
            c.linux_accepts() != Some(c.sluice_accepts()),
            "cases.txt:{}: case {:?}: `linux:` must differ from `expect:`",
            c.line,
            c.name
        );
    }
    c
}

/// Parses one map: `TYPE [key K] [value V] [entries N] [flags F,...] [inner ...]`.
pub fn parse_map(spec: &str, n: usize, line: usize) -> MapDef {
    let (outer, inner) = match spec.split_once(" inner ") {
        Some((o, i)) => (o, Some(i)),
        None => (spec, None),
    };
    let mut def = parse_one(outer, &format!("m{n}"), line);
    if let Some(i) = inner {
        def.inner = Some(Box::new(parse_one(i, &format!("m{n}_inner"), line)));
    }
    def
}

fn parse_one(spec: &str, name: &str, line: usize) -> MapDef {
    let w: Vec<&str> = spec.split_whitespace().collect();
    let map_type = match w.first().copied() {
        Some("hash") => MapType::Hash,
        Some("array") => MapType::Array,
        Some("prog_array") => MapType::ProgArray,
        Some("percpu_hash") => MapType::PercpuHash,
        Some("percpu_array") => MapType::PercpuArray,
        Some("lru_hash") => MapType::LruHash,
        Some("lpm_trie") => MapType::LpmTrie,
        Some("array_of_maps") => MapType::ArrayOfMaps,
        Some("hash_of_maps") => MapType::HashOfMaps,
        Some("devmap") => MapType::Devmap,
        Some("queue") => MapType::Queue,
        Some("stack") => MapType::Stack,
        Some("ringbuf") => MapType::RingBuf,
        t => panic!("cases.txt:{line}: unknown map type {t:?}"),
    };
    let (mut key, mut value, mut entries, mut fl) = match map_type {
        MapType::RingBuf => (0, 0, 4096, 0),
        MapType::Queue | MapType::Stack => (0, 8, 4, 0),
        MapType::ProgArray | MapType::Devmap | MapType::ArrayOfMaps | MapType::HashOfMaps => {
            (4, 4, 4, 0)
        }
        _ => (4, 8, 4, 0),
    };
    let mut i = 1;
    while i < w.len() {
        let v = w.get(i + 1).copied().unwrap_or("");
        match w[i] {
            "key" => key = v.parse().expect("key size"),
            "value" => value = v.parse().expect("value size"),
            "entries" => entries = v.parse().expect("entries"),
            "flags" => {
                for f in v.split(',') {
                    fl |= match f {
                        "rdonly" => flags::BPF_F_RDONLY_PROG,
                        "no_prealloc" => flags::BPF_F_NO_PREALLOC,
                        "mmapable" => flags::BPF_F_MMAPABLE,
                        _ => panic!("cases.txt:{line}: unknown flag {f}"),
                    }
                }
            }
            x => panic!("cases.txt:{line}: unknown map attribute {x}"),
        }
        i += 2;
    }
    MapDef {
        name: name.into(),
        map_type,
        key_size: key,
        value_size: value,
        max_entries: entries,
        flags: fl,
        pinning: Pinning::None,
        inner: None,
    }
}
