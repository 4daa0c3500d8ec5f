//! Every object of PREVAIL's corpus (`shared/ebpf-samples/`) through
//! [`LoadedObject::from_elf`], as one table: what loads, what is skipped and
//! why, next to what PREVAIL expects of the same program.
//!
//! The table is committed as `tests/ebpf-samples.md`; this test renders it
//! afresh and fails with a diff when the two differ, so any change in what
//! Sluice loads shows up in review. Regenerate it with
//!
//! ```text
//! SLUICE_UPDATE_SAMPLES=1 cargo test -p sluice-bpf --test samples
//! ```
//!
//! The promise checked on top: every XDP program (section type `Xdp` or
//! `XdpFrags`) of an object that parses loads, except the ones listed in
//! [`XDP_EXCEPTIONS`], each for a named feature Sluice lacks. A new XDP
//! program that stops loading fails the test, and so does an exception that
//! no longer applies.
//!
//! "Loaded" means parsed, linked, maps created, every helper known, the
//! program accepted by the verifier, and the initial values of prog arrays
//! and maps of maps in place.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sluice_bpf::elf::{self, ElfError, InsnProblem, Object, ProgType, ProgramSpec};
use sluice_bpf::helpers::Registry;
use sluice_bpf::isa::pseudo;
use sluice_bpf::maps::MapError;
use sluice_bpf::object::{LoadOptions, LoadedObject, ObjectError};

/// The committed table, beside this file.
const TABLE: &str = "tests/ebpf-samples.md";

/// The variable that makes the test write the table instead of comparing.
const UPDATE_VAR: &str = "SLUICE_UPDATE_SAMPLES";

/// XDP programs that do not load although their object parses, with the
/// feature that stops them.
struct Exception {
    /// The object, relative to `ebpf-samples/`.
    file: &'static str,
    /// Its XDP programs this applies to, by function name.
    programs: &'static [&'static str],
    /// What the failure message says (after [`annotate`]).
    says: &'static str,
    /// The feature Sluice lacks, for the owner to decide on.
    why: &'static str,
}

/// Every XDP program of an object that parses loads, except these. The test
/// fails when one of them starts loading (remove it here) or fails for
/// another reason, and when any other XDP program stops loading.
const XDP_EXCEPTIONS: &[Exception] = &[
    // Refused by the verifier, as Linux refuses them too.
    Exception {
        file: "build/correlated_branch.o",
        programs: &["ConvergedBranch"],
        says: "invalid access to packet: R7 off=12 size=2",
        why: "checks the packet length as a number, which neither Linux nor Sluice relates to the pointer (only PREVAIL proves it)",
    },
    Exception {
        file: "build/packet_overflow.o",
        programs: &["read_write_packet_start"],
        says: "invalid access to packet: R2 off=0 size=4",
        why: "unsafe: reads 4 bytes after checking only data <= data_end",
    },
    Exception {
        file: "build/ptr_arith.o",
        programs: &["test_ptr_arith"],
        says: "pointer += pointer prohibited",
        why: "unsafe: adds data_end to data",
    },
    Exception {
        file: "build/tail_call.o",
        programs: &["caller"],
        says: "R0 !read_ok",
        why: "returns the result of bpf_tail_call, which has none (r0 unwritten on the fall-through path); Linux refuses it too",
    },
    Exception {
        file: "build/tail_call_bad.o",
        programs: &["caller"],
        says: "cannot pass map_type array (map map) into func bpf_tail_call",
        why: "unsafe: tail-calls through an array map",
    },
    Exception {
        file: "build/wronghelper.o",
        programs: &["func"],
        says: "unknown helper 53 (bpf_sock_map_update)",
        why: "a sockmap helper, which XDP programs may not call: Linux and PREVAIL reject it too",
    },
    Exception {
        file: "cilium-core/bpf_xdp.o",
        programs: &[
            "tail_lb_ipv4",
            "tail_lb_ipv6",
            "tail_nodeport_nat_ingress_ipv6",
        ],
        says: "program too complex: 1000001 instructions processed",
        why: "the verifier's budget of 1M instructions runs out (PREVAIL expects these to \
              fail too); the object's perf_event_array and bpf_perf_event_output work",
    },
    Exception {
        file: "linux/xdpsock_kern.o",
        programs: &["xdp_sock_prog"],
        says: "map type #17 (xskmap) is not supported",
        why: "map type xskmap (17): bpf_redirect_map to an AF_XDP socket",
    },
];

/// Linux's helper names by number (`__BPF_FUNC_MAPPER` in
/// `include/uapi/linux/bpf.h`, without the `bpf_` prefix), to name the
/// helpers a program needs and Sluice lacks.
#[rustfmt::skip]
const HELPERS: &[&str] = &[
    "unspec", "map_lookup_elem", "map_update_elem", "map_delete_elem", "probe_read", "ktime_get_ns",
    "trace_printk", "get_prandom_u32", "get_smp_processor_id", "skb_store_bytes", "l3_csum_replace",
    "l4_csum_replace", "tail_call", "clone_redirect", "get_current_pid_tgid", "get_current_uid_gid",
    "get_current_comm", "get_cgroup_classid", "skb_vlan_push", "skb_vlan_pop", "skb_get_tunnel_key",
    "skb_set_tunnel_key", "perf_event_read", "redirect", "get_route_realm", "perf_event_output",
    "skb_load_bytes", "get_stackid", "csum_diff", "skb_get_tunnel_opt", "skb_set_tunnel_opt",
    "skb_change_proto", "skb_change_type", "skb_under_cgroup", "get_hash_recalc",
    "get_current_task", "probe_write_user", "current_task_under_cgroup", "skb_change_tail",
    "skb_pull_data", "csum_update", "set_hash_invalid", "get_numa_node_id", "skb_change_head",
    "xdp_adjust_head", "probe_read_str", "get_socket_cookie", "get_socket_uid", "set_hash",
    "setsockopt", "skb_adjust_room", "redirect_map", "sk_redirect_map", "sock_map_update",
    "xdp_adjust_meta", "perf_event_read_value", "perf_prog_read_value", "getsockopt",
    "override_return", "sock_ops_cb_flags_set", "msg_redirect_map", "msg_apply_bytes",
    "msg_cork_bytes", "msg_pull_data", "bind", "xdp_adjust_tail", "skb_get_xfrm_state", "get_stack",
    "skb_load_bytes_relative", "fib_lookup", "sock_hash_update", "msg_redirect_hash",
    "sk_redirect_hash", "lwt_push_encap", "lwt_seg6_store_bytes", "lwt_seg6_adjust_srh",
    "lwt_seg6_action", "rc_repeat", "rc_keydown", "skb_cgroup_id", "get_current_cgroup_id",
    "get_local_storage", "sk_select_reuseport", "skb_ancestor_cgroup_id", "sk_lookup_tcp",
    "sk_lookup_udp", "sk_release", "map_push_elem", "map_pop_elem", "map_peek_elem",
    "msg_push_data", "msg_pop_data", "rc_pointer_rel", "spin_lock", "spin_unlock", "sk_fullsock",
    "tcp_sock", "skb_ecn_set_ce", "get_listener_sock", "skc_lookup_tcp", "tcp_check_syncookie",
    "sysctl_get_name", "sysctl_get_current_value", "sysctl_get_new_value", "sysctl_set_new_value",
    "strtol", "strtoul", "sk_storage_get", "sk_storage_delete", "send_signal", "tcp_gen_syncookie",
    "skb_output", "probe_read_user", "probe_read_kernel", "probe_read_user_str",
    "probe_read_kernel_str", "tcp_send_ack", "send_signal_thread", "jiffies64",
    "read_branch_records", "get_ns_current_pid_tgid", "xdp_output", "get_netns_cookie",
    "get_current_ancestor_cgroup_id", "sk_assign", "ktime_get_boot_ns", "seq_printf", "seq_write",
    "sk_cgroup_id", "sk_ancestor_cgroup_id", "ringbuf_output", "ringbuf_reserve", "ringbuf_submit",
    "ringbuf_discard", "ringbuf_query", "csum_level", "skc_to_tcp6_sock", "skc_to_tcp_sock",
    "skc_to_tcp_timewait_sock", "skc_to_tcp_request_sock", "skc_to_udp6_sock", "get_task_stack",
    "load_hdr_opt", "store_hdr_opt", "reserve_hdr_opt", "inode_storage_get", "inode_storage_delete",
    "d_path", "copy_from_user", "snprintf_btf", "seq_printf_btf", "skb_cgroup_classid",
    "redirect_neigh", "per_cpu_ptr", "this_cpu_ptr", "redirect_peer", "task_storage_get",
    "task_storage_delete", "get_current_task_btf", "bprm_opts_set", "ktime_get_coarse_ns",
    "ima_inode_hash", "sock_from_file", "check_mtu", "for_each_map_elem", "snprintf", "sys_bpf",
    "btf_find_by_name_kind", "sys_close", "timer_init", "timer_set_callback", "timer_start",
    "timer_cancel", "get_func_ip", "get_attach_cookie", "task_pt_regs", "get_branch_snapshot",
    "trace_vprintk", "skc_to_unix_sock", "kallsyms_lookup_name", "find_vma", "loop", "strncmp",
    "get_func_arg", "get_func_ret", "get_func_arg_cnt", "get_retval", "set_retval",
    "xdp_get_buff_len", "xdp_load_bytes", "xdp_store_bytes", "copy_from_user_task",
    "skb_set_tstamp", "ima_file_hash", "kptr_xchg", "map_lookup_percpu_elem", "skc_to_mptcp_sock",
    "dynptr_from_mem", "ringbuf_reserve_dynptr", "ringbuf_submit_dynptr", "ringbuf_discard_dynptr",
    "dynptr_read", "dynptr_write", "dynptr_data", "tcp_raw_gen_syncookie_ipv4",
    "tcp_raw_gen_syncookie_ipv6", "tcp_raw_check_syncookie_ipv4", "tcp_raw_check_syncookie_ipv6",
    "ktime_get_tai_ns", "user_ringbuf_drain",
];

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

/// Every object under `dir` (everything but the corpus's text files), as
/// sorted paths relative to `dir` with `/` separators.
fn object_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if !matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("md" | "json" | "txt")
            ) {
                let rel = p.strip_prefix(root).unwrap_or(&p);
                let parts: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
                out.push(parts.join("/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// PREVAIL's expectations from `MANIFEST.md`, by `(file, section)`: the
/// last column of its table (`file | bytes | section | insns | relocs |
/// type guess | maps | PREVAIL`).
fn prevail_expectations(manifest: &str) -> HashMap<(String, String), String> {
    let mut out = HashMap::new();
    for line in manifest.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split(" | ")
            .map(str::trim)
            .collect();
        if cells.len() != 8 || cells[0] == "file" || cells[0].starts_with("---") {
            continue;
        }
        out.insert(
            (cells[0].to_string(), cells[2].to_string()),
            cells[7].to_string(),
        );
    }
    out
}

/// PREVAIL's word on one program: a section's value, or for sections of
/// several functions (`f=pass;g=reject`) the function's own.
fn prevail_for(
    expectations: &HashMap<(String, String), String>,
    file: &str,
    section: &str,
    program: &str,
) -> String {
    let Some(value) = expectations.get(&(file.to_string(), section.to_string())) else {
        return "not in MANIFEST".into();
    };
    if value.contains('=') && !value.contains(' ') {
        // Only the overridden functions are listed; the others pass.
        return value
            .split(';')
            .find_map(|e| e.strip_prefix(program).and_then(|r| r.strip_prefix('=')))
            .unwrap_or("pass")
            .to_string();
    }
    value.clone()
}

/// PREVAIL's word on a whole file: its sections' values, each once.
fn prevail_for_file(expectations: &HashMap<(String, String), String>, file: &str) -> String {
    let mut values: Vec<&str> = expectations
        .iter()
        .filter(|((f, _), _)| f == file)
        .map(|(_, v)| v.as_str())
        .collect();
    values.sort_unstable();
    values.dedup();
    if values.is_empty() {
        "not in MANIFEST".into()
    } else {
        values.join("; ")
    }
}

/// What became of one program.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Loaded,
    Skipped(String),
    Refused(String),
}

impl Outcome {
    fn cell(&self) -> String {
        match self {
            Outcome::Loaded => "loaded".into(),
            Outcome::Skipped(r) => format!("skipped: {r}"),
            Outcome::Refused(r) => format!("refused: {r}"),
        }
    }

    fn reason(&self) -> &str {
        match self {
            Outcome::Loaded => "",
            Outcome::Skipped(r) | Outcome::Refused(r) => r,
        }
    }
}

/// One row of the table.
struct Row {
    file: String,
    section: String,
    program: String,
    prog_type: Option<ProgType>,
    outcome: Outcome,
    insns: Option<usize>,
    maps: String,
    prevail: String,
    /// For XDP programs: the helpers they call that Sluice lacks.
    missing_helpers: Vec<usize>,
}

/// One object's result.
struct ObjectResult {
    rows: Vec<Row>,
    /// The category of a whole-object refusal.
    refused: Option<String>,
}

/// Linux's map type names by number (`enum bpf_map_type`), for the types
/// Sluice does not know by name.
#[rustfmt::skip]
const MAP_TYPES: &[&str] = &[
    "unspec", "hash", "array", "prog_array", "perf_event_array", "percpu_hash", "percpu_array",
    "stack_trace", "cgroup_array", "lru_hash", "lru_percpu_hash", "lpm_trie", "array_of_maps",
    "hash_of_maps", "devmap", "sockmap", "cpumap", "xskmap", "sockhash", "cgroup_storage",
    "reuseport_sockarray", "percpu_cgroup_storage", "queue", "stack", "sk_storage", "devmap_hash",
    "struct_ops", "ringbuf", "inode_storage", "task_storage", "bloom_filter", "user_ringbuf",
    "cgrp_storage",
];

/// The name of helper `id`, as Linux calls it.
fn helper_name(id: usize) -> String {
    HELPERS
        .get(id)
        .map_or_else(|| "not a Linux helper".into(), |n| format!("bpf_{n}"))
}

/// `message` with Linux's name after each number Sluice reports bare:
/// `unknown helper 69 (bpf_fib_lookup)`, `map type #16 (cpumap)`.
fn annotate(message: &str) -> String {
    let mut out = message.to_string();
    for (key, name) in [
        ("unknown helper ", &helper_name as &dyn Fn(usize) -> String),
        ("map type #", &|n| {
            MAP_TYPES.get(n).map_or("?", |t| t).to_string()
        }),
    ] {
        let Some(at) = out.find(key) else {
            continue;
        };
        let rest = &out[at + key.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(n) = digits.parse::<usize>() else {
            continue;
        };
        let end = at + key.len() + digits.len();
        out = format!("{} ({}){}", &out[..end], name(n), &out[end..]);
    }
    out
}

/// A short category for a whole-object refusal, for the summary.
fn category(e: &ObjectError) -> String {
    match e {
        ObjectError::Elf(e) => match e {
            ElfError::Malformed(_) | ElfError::NotBpf(_) => "malformed ELF".into(),
            ElfError::Section { .. } | ElfError::Symbol { .. } => {
                "malformed section or symbol".into()
            }
            ElfError::RelocationType { .. } => "unsupported relocation type".into(),
            ElfError::Btf { .. } | ElfError::MapDef { .. } => "malformed BTF".into(),
            ElfError::LegacyMap { .. } => "malformed legacy map".into(),
            ElfError::Insn { problem, .. } => match problem {
                InsnProblem::CoRe(_) => "CO-RE relocations".into(),
                InsnProblem::Kfunc(_) | InsnProblem::KfuncId(_) => "kfunc call".into(),
                InsnProblem::Extern(_) | InsnProblem::BtfId => "extern (__ksym/__kconfig)".into(),
                InsnProblem::UndefinedFunction(_) => "call to an undefined function".into(),
                _ => "instruction cannot be linked".into(),
            },
            ElfError::TooLarge { .. } | ElfError::TooMuchData { .. } => "too large".into(),
            ElfError::MapInit { .. } => "bad initial value of a map".into(),
        },
        ObjectError::Map { err, .. } => match err {
            MapError::Unsupported { ty, .. } => format!("unsupported map type {ty}"),
            _ => "invalid map definition".into(),
        },
        ObjectError::PinnedMismatch { .. } => "pinned map mismatch".into(),
        ObjectError::NoPrograms(_) => "no XDP program".into(),
        ObjectError::MapInit { .. } => "initial value names a program not loaded".into(),
        #[allow(unreachable_patterns)]
        _ => "other".into(),
    }
}

/// Names of the maps `p` references, in first-use order.
fn maps_used(obj: &Object, p: &ProgramSpec) -> String {
    let mut used: Vec<usize> = Vec::new();
    let mut pc = 0;
    while pc < p.insns.len() {
        let i = p.insns[pc];
        if i.code == 0x18 {
            if i.src == pseudo::MAP_IDX || i.src == pseudo::MAP_IDX_VALUE {
                if let Ok(m) = usize::try_from(i.imm) {
                    if !used.contains(&m) {
                        used.push(m);
                    }
                }
            }
            pc += 2;
        } else {
            pc += 1;
        }
    }
    if used.is_empty() {
        return "-".into();
    }
    let names: Vec<&str> = used
        .iter()
        .filter_map(|&m| obj.maps.get(m).map(|s| s.def.name.as_str()))
        .collect();
    const SHOWN: usize = 4;
    if names.len() > SHOWN {
        format!("{}, … ({} maps)", names[..SHOWN].join(", "), names.len())
    } else {
        names.join(", ")
    }
}

/// The helpers `p` calls that Sluice's XDP helper set lacks, ascending.
fn missing_helpers(p: &ProgramSpec) -> Vec<usize> {
    let xdp = Registry::xdp();
    let mut out: Vec<usize> = p
        .insns
        .iter()
        .filter(|i| i.code == 0x85 && i.src == 0)
        .filter(|i| u32::try_from(i.imm).map_or(true, |id| xdp.get(id).is_none()))
        .filter_map(|i| usize::try_from(i.imm).ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Loads one object and describes each of its programs.
fn survey(file: &str, bytes: &[u8], prevail: &HashMap<(String, String), String>) -> ObjectResult {
    let opts = LoadOptions {
        ncpus: 2,
        ..Default::default()
    };
    let loaded = LoadedObject::from_elf(bytes, &opts);
    let parsed = elf::parse(bytes);
    let obj = match parsed {
        Ok(obj) => obj,
        Err(e) => {
            let refusal = match &loaded {
                Err(le) => le,
                Ok(_) => panic!("{file}: elf::parse fails ({e}) but from_elf loads"),
            };
            return ObjectResult {
                rows: vec![Row {
                    file: file.into(),
                    section: "-".into(),
                    program: "-".into(),
                    prog_type: None,
                    outcome: Outcome::Refused(refusal.to_string()),
                    insns: None,
                    maps: "-".into(),
                    prevail: prevail_for_file(prevail, file),
                    missing_helpers: Vec::new(),
                }],
                refused: Some(category(refusal)),
            };
        }
    };
    let mut rows = Vec::new();
    for p in &obj.programs {
        let outcome = match &loaded {
            Ok(lo) => {
                if lo
                    .programs
                    .iter()
                    .any(|l| l.name == p.name && l.section == p.section)
                {
                    Outcome::Loaded
                } else {
                    let s = lo
                        .skipped
                        .iter()
                        .find(|s| s.name == p.name && s.section == p.section)
                        .unwrap_or_else(|| {
                            panic!("{file}: {} is neither loaded nor skipped", p.name)
                        });
                    let prefix = format!("section {}: ", p.section);
                    Outcome::Skipped(
                        s.reason
                            .strip_prefix(&prefix)
                            .unwrap_or(&s.reason)
                            .to_string(),
                    )
                }
            }
            // All programs were skipped: say why this one was.
            Err(ObjectError::NoPrograms(reasons)) => {
                let prefix = format!("{}: section {}: ", p.name, p.section);
                let own = reasons
                    .iter()
                    .find_map(|r| r.strip_prefix(&prefix))
                    .unwrap_or("?");
                Outcome::Refused(format!("no program loaded; this one: {own}"))
            }
            Err(e) => Outcome::Refused(e.to_string()),
        };
        rows.push(Row {
            file: file.into(),
            section: p.section.clone(),
            program: p.name.clone(),
            prog_type: Some(p.prog_type),
            outcome,
            insns: Some(p.insns.len()),
            maps: maps_used(&obj, p),
            prevail: prevail_for(prevail, file, &p.section, &p.name),
            missing_helpers: if is_xdp(Some(p.prog_type)) {
                missing_helpers(p)
            } else {
                Vec::new()
            },
        });
    }
    if obj.programs.is_empty() {
        rows.push(Row {
            file: file.into(),
            section: "-".into(),
            program: "-".into(),
            prog_type: None,
            outcome: Outcome::Refused(
                loaded
                    .as_ref()
                    .err()
                    .map_or_else(|| "?".into(), ToString::to_string),
            ),
            insns: None,
            maps: "-".into(),
            prevail: prevail_for_file(prevail, file),
            missing_helpers: Vec::new(),
        });
    }
    ObjectResult {
        rows,
        refused: loaded.as_ref().err().map(category),
    }
}

fn is_xdp(t: Option<ProgType>) -> bool {
    matches!(t, Some(ProgType::Xdp | ProgType::XdpFrags))
}

/// A table cell: one line, pipes escaped.
fn cell(s: &str) -> String {
    s.replace('\n', " ").replace('|', "\\|")
}

/// Renders the whole document.
fn render(objects: &[ObjectResult]) -> String {
    let rows: Vec<&Row> = objects.iter().flat_map(|o| &o.rows).collect();
    let programs: Vec<&&Row> = rows.iter().filter(|r| r.prog_type.is_some()).collect();
    let count = |f: &dyn Fn(&Row) -> bool| programs.iter().filter(|r| f(r)).count();
    let refused: Vec<&String> = objects.iter().filter_map(|o| o.refused.as_ref()).collect();
    let unparsed = objects
        .iter()
        .filter(|o| o.rows.iter().all(|r| r.prog_type.is_none()))
        .count();
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &refused {
        *by_reason.entry(r.as_str()).or_default() += 1;
    }

    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# ebpf-samples through `LoadedObject::from_elf`\n");
    let _ = writeln!(
        w,
        "Every object of `shared/ebpf-samples/` (PREVAIL's corpus) loaded with \
         `LoadOptions {{ ncpus: 2, ..Default::default() }}`: one row per program \
         of each object that parses, one row for an object that does not. \
         Generated by `tests/samples.rs`, which fails when this file is out of date; \
         regenerate it with\n\n\
         ```text\n{UPDATE_VAR}=1 cargo test -p sluice-bpf --test samples\n```\n\n\
         *loaded* means parsed, linked, maps created, every helper known, \
         accepted by the verifier, and initial map values in place. *skipped* programs \
         are not XDP (or need what Sluice lacks); the object loads without them. \
         *refused* is a whole-object failure. *insns* counts the linked program's \
         slots (subprograms included); *maps* are the maps it references. \
         *PREVAIL* is the expectation `MANIFEST.md` records \
         (`expected_failure` means PREVAIL rejects it).\n"
    );
    let _ = writeln!(w, "## Summary\n");
    let _ = writeln!(
        w,
        "- objects: {} ({} load, {} refused, {} of them do not parse)",
        objects.len(),
        objects.len() - refused.len(),
        refused.len(),
        unparsed
    );
    let _ = writeln!(w, "- programs in objects that parse: {}", programs.len());
    let _ = writeln!(
        w,
        "- XDP programs: {}, of which loaded: {}, skipped: {}, in refused objects: {}",
        count(&|r| is_xdp(r.prog_type)),
        count(&|r| is_xdp(r.prog_type) && r.outcome == Outcome::Loaded),
        count(&|r| is_xdp(r.prog_type) && matches!(r.outcome, Outcome::Skipped(_))),
        count(&|r| is_xdp(r.prog_type) && matches!(r.outcome, Outcome::Refused(_))),
    );
    let _ = writeln!(
        w,
        "- non-XDP programs: {}, of which skipped: {}, in refused objects: {}",
        count(&|r| !is_xdp(r.prog_type)),
        count(&|r| !is_xdp(r.prog_type) && matches!(r.outcome, Outcome::Skipped(_))),
        count(&|r| !is_xdp(r.prog_type) && matches!(r.outcome, Outcome::Refused(_))),
    );
    let _ = writeln!(w, "- refused objects by reason:");
    for (reason, n) in &by_reason {
        let _ = writeln!(w, "  - {}: {n}", annotate(reason));
    }
    // Helper → file → programs.
    let mut helpers: BTreeMap<usize, BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    for r in &programs {
        for &h in &r.missing_helpers {
            helpers
                .entry(h)
                .or_default()
                .entry(&r.file)
                .or_default()
                .push(&r.program);
        }
    }
    let _ = writeln!(
        w,
        "- helpers XDP programs call that Sluice lacks (whatever else stops them \
         first), with the programs that call them:"
    );
    if helpers.is_empty() {
        let _ = writeln!(w, "  none");
    }
    for (h, files) in &helpers {
        let users: Vec<String> = files
            .iter()
            .map(|(file, progs)| match progs.len() {
                1..=3 => format!("{file} ({})", progs.join(", ")),
                n => format!("{file} ({n} programs)"),
            })
            .collect();
        let _ = writeln!(w, "  - {h} `{}`: {}", helper_name(*h), users.join("; "));
    }
    let _ = writeln!(w, "\n## XDP programs that do not load\n");
    let _ = writeln!(
        w,
        "Listed in `XDP_EXCEPTIONS` of `tests/samples.rs`, each with what it needs:\n"
    );
    for e in XDP_EXCEPTIONS {
        let _ = writeln!(
            w,
            "- {} ({}): {}",
            e.file,
            match e.programs.len() {
                1..=2 => e.programs.join(", "),
                n => format!("{n} programs"),
            },
            e.why
        );
    }
    let _ = writeln!(w, "\n## Programs\n");
    let _ = writeln!(
        w,
        "| file | section | program | type | outcome | insns | maps | PREVAIL |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&r.file),
            cell(&r.section),
            cell(&r.program),
            r.prog_type.map_or_else(|| "-".into(), |t| format!("{t:?}")),
            cell(&annotate(&r.outcome.cell())),
            r.insns.map_or_else(|| "-".into(), |n| n.to_string()),
            cell(&r.maps),
            cell(&r.prevail),
        );
    }
    out
}

/// The lines of `want` and `got` that differ, with a little context.
fn diff(want: &str, got: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    // Common prefix and suffix; the middle is the change.
    let pre = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut out = String::new();
    let from = pre.saturating_sub(2);
    for l in &a[from..pre] {
        let _ = writeln!(out, "  {l}");
    }
    const MAX: usize = 60;
    for l in a[pre..a.len() - suf].iter().take(MAX) {
        let _ = writeln!(out, "- {l}");
    }
    for l in b[pre..b.len() - suf].iter().take(MAX) {
        let _ = writeln!(out, "+ {l}");
    }
    if a.len() - suf - pre > MAX || b.len() - suf - pre > MAX {
        let _ = writeln!(out, "  (diff cut at {MAX} lines each way)");
    }
    out
}

#[test]
fn ebpf_samples_table() {
    let dir = shared_dir().join("ebpf-samples");
    let files = object_files(&dir);
    assert!(
        files.len() > 50,
        "expected the ebpf-samples corpus under {} (set SLUICE_SHARED), found {} files",
        dir.display(),
        files.len()
    );
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.md"))
        .unwrap_or_else(|e| panic!("{}/MANIFEST.md: {e}", dir.display()));
    let prevail = prevail_expectations(&manifest);
    assert!(prevail.len() > 100, "MANIFEST.md table not found");

    let objects: Vec<ObjectResult> = files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            survey(f, &bytes, &prevail)
        })
        .collect();

    // Refusals and skips say where: the section, instruction, symbol or
    // map at fault, or the program type.
    const WHERE: &[&str] = &[
        "section ",
        "insn ",
        "symbol ",
        "map ",
        "program type ",
        "malformed ELF",
    ];
    for r in objects.iter().flat_map(|o| &o.rows) {
        let reason = r.outcome.reason();
        assert!(
            r.outcome == Outcome::Loaded || WHERE.iter().any(|w| reason.contains(w)),
            "{} {}: the reason does not say where: {reason:?}",
            r.file,
            r.program
        );
    }

    // The promise: every XDP program of an object that parses loads, but
    // for the listed exceptions.
    let mut unexpected = Vec::new();
    let mut used = std::collections::HashSet::new();
    for r in objects.iter().flat_map(|o| &o.rows) {
        if !is_xdp(r.prog_type) || r.outcome == Outcome::Loaded {
            continue;
        }
        let reason = annotate(r.outcome.reason());
        match XDP_EXCEPTIONS
            .iter()
            .find(|e| e.file == r.file && e.programs.contains(&r.program.as_str()))
        {
            Some(e) if reason.contains(e.says) => {
                used.insert((e.file, r.program.clone()));
            }
            Some(e) => unexpected.push(format!(
                "{} {}: fails otherwise than listed ({:?}, {}): {reason}",
                r.file, r.program, e.says, e.why
            )),
            None => unexpected.push(format!("{} {}: {reason}", r.file, r.program)),
        }
    }
    for e in XDP_EXCEPTIONS {
        for p in e.programs {
            if !used.contains(&(e.file, p.to_string())) {
                unexpected.push(format!(
                    "{} {p}: listed in XDP_EXCEPTIONS but loads now (or is gone): remove it",
                    e.file
                ));
            }
        }
    }

    let table = render(&objects);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(TABLE);
    if std::env::var_os(UPDATE_VAR).is_some() {
        std::fs::write(&path, &table).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("wrote {}", path.display());
    } else {
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; create it with\n  {UPDATE_VAR}=1 cargo test -p sluice-bpf --test samples",
                path.display()
            )
        });
        assert!(
            committed == table,
            "{TABLE} is out of date; regenerate it with\n  \
             {UPDATE_VAR}=1 cargo test -p sluice-bpf --test samples\n\
             and review the change:\n{}",
            diff(&committed, &table)
        );
    }
    assert!(
        unexpected.is_empty(),
        "XDP programs whose loading changed (see XDP_EXCEPTIONS in tests/samples.rs):\n  {}",
        unexpected.join("\n  ")
    );
}
