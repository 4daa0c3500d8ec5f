//! The assembler and disassembler against the bpf_conformance suite.
//!
//! Golden data lives in the shared folder (`conformance/`): the `.data`
//! sources and `assembled_tests.jsonl`, which holds the bytecode upstream's
//! assembler produced for each of them. The shared folder is found through
//! `SLUICE_SHARED` if set, else `../../shared` from this crate, else
//! `/work/shared`.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde::Deserialize;
use sluice_bpf::asm::{assemble, parse_data_file, AsmError, DataFile};
use sluice_bpf::disasm::{disassemble, disassemble_listing, format_instruction};
use sluice_bpf::isa::{
    self, AluOp, AtomicOp, ByteOrder, CallTarget, Insn, Instruction, JmpOp, LdImm64, Reg, Size,
    Source, Width,
};

/// Number of programs in `assembled_tests.jsonl`.
const GOLDEN_COUNT: usize = 313;

fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_SHARED") {
        return PathBuf::from(dir);
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    if beside.join("conformance").is_dir() {
        beside
    } else {
        PathBuf::from("/work/shared")
    }
}

fn conformance_dir() -> PathBuf {
    let dir = shared_dir().join("conformance");
    assert!(
        dir.is_dir(),
        "conformance data not found at {} (set SLUICE_SHARED to the shared folder)",
        dir.display()
    );
    dir
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Deserialize)]
struct Golden {
    file: String,
    mem: String,
    result: String,
    program: String,
}

fn golden() -> Vec<Golden> {
    let text = read(&conformance_dir().join("assembled_tests.jsonl"));
    let entries: Vec<Golden> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(entries.len(), GOLDEN_COUNT);
    entries
}

/// Parses a `.data` file named relative to the conformance folder.
fn data_file(rel: &str) -> DataFile {
    let path = conformance_dir().join("bpf_conformance").join(rel);
    parse_data_file(&read(&path)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn golden_program(g: &Golden) -> Vec<Insn> {
    let bytes = hex::decode(&g.program).unwrap_or_else(|e| panic!("{}: {e}", g.file));
    isa::slots(&bytes).unwrap_or_else(|e| panic!("{}: {e}", g.file))
}

#[test]
fn golden_programs_assemble_byte_for_byte() {
    let entries = golden();
    let mut matched = 0;
    let mut failures = Vec::new();
    for g in &entries {
        let expected = hex::decode(&g.program).unwrap_or_else(|e| panic!("{}: {e}", g.file));
        match data_file(&g.file).program() {
            Ok(insns) if isa::to_bytes(&insns) == expected => matched += 1,
            Ok(insns) => failures.push(format!(
                "{}: assembled {} but expected {}",
                g.file,
                hex::encode(isa::to_bytes(&insns)),
                g.program
            )),
            Err(e) => failures.push(format!("{}: {e}", g.file)),
        }
    }
    println!(
        "assembled {matched} of {} golden programs byte for byte",
        entries.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(matched, GOLDEN_COUNT);
}

#[test]
fn golden_mem_and_result_parse() {
    let entries = golden();
    let mut checked = 0;
    for g in &entries {
        let d = data_file(&g.file);
        let mem = hex::decode(&g.mem).unwrap_or_else(|e| panic!("{}: {e}", g.file));
        assert_eq!(d.mem, mem, "{}: mem", g.file);
        let digits = g.result.strip_prefix("0x").unwrap_or(&g.result);
        let result = u64::from_str_radix(digits, 16).unwrap_or_else(|e| panic!("{}: {e}", g.file));
        assert_eq!(d.result, Some(result), "{}: result", g.file);
        assert_eq!(d.error, None, "{}: error", g.file);
        checked += 1;
    }
    println!("mem and result of {checked} golden files match");
    assert_eq!(checked, GOLDEN_COUNT);
}

#[test]
fn golden_programs_roundtrip_through_disassembler() {
    let entries = golden();
    let mut roundtripped = 0;
    for g in &entries {
        let insns = golden_program(g);
        let text = disassemble(&insns).unwrap_or_else(|e| panic!("{}: {e}", g.file));
        let again = assemble(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", g.file));
        assert_eq!(again, insns, "{}:\n{text}", g.file);
        let listing = disassemble_listing(&insns).unwrap_or_else(|e| panic!("{}: {e}", g.file));
        assert_eq!(listing.lines().count(), text.lines().count(), "{}", g.file);
        roundtripped += 1;
    }
    println!("{roundtripped} golden programs round-trip through the disassembler");
    assert_eq!(roundtripped, GOLDEN_COUNT);
}

/// The negative files that test the assembler or the file parser, and a
/// fragment each error message must contain.
const ASSEMBLER_NEGATIVES: &[(&str, &str)] = &[
    ("empty.data", "no program"),
    ("empty_instructions.data", "no program"),
    (
        "invalid_imm32_dec_range.data",
        "immediate 2147483648 out of range",
    ),
    (
        "invalid_imm32_hex_range.data",
        "immediate 0x100000000 out of range",
    ),
    ("invalid_label.data", "undefined label 'NOT_A_LABEL'"),
    ("invalid_lock.data", "number of operands for lock"),
    ("invalid_lock2.data", "number of operands for lock"),
    ("invalid_mnemonic.data", "unknown mnemonic 'ldxq'"),
    ("invalid_offset.data", "memory operand"),
    ("invalid_offset_range.data", "offset +0x10000 out of range"),
    ("invalid_operand_count.data", "number of operands for lddw"),
    ("invalid_register.data", "invalid register '%r50'"),
    (
        "invalid_unknown_directive.data",
        "unknown directive '-- Unknown directive'",
    ),
];

/// Negative files that test the runner: they assemble fine.
const RUNNER_NEGATIVES: &[&str] = &["error.data", "incorrect_return_value_high_bits.data"];

#[test]
fn negative_files_are_rejected_with_clear_errors() {
    let dir = conformance_dir().join("bpf_conformance/negative");
    for (file, fragment) in ASSEMBLER_NEGATIVES {
        let text = read(&dir.join(file));
        let err: AsmError = parse_data_file(&text)
            .and_then(|d| d.program())
            .expect_err(file);
        println!("{file}: {err}");
        assert!(
            err.to_string().contains(fragment),
            "{file}: '{err}' lacks '{fragment}'"
        );
    }
    for file in RUNNER_NEGATIVES {
        let d = parse_data_file(&read(&dir.join(file))).unwrap_or_else(|e| panic!("{file}: {e}"));
        d.program().unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    assert_eq!(
        data_file("negative/error.data").error.as_deref(),
        Some("Invalid")
    );

    // Every non-`unused-*` file is accounted for, so a new one is noticed.
    let mut seen = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with("unused-") {
            continue;
        }
        let known = ASSEMBLER_NEGATIVES.iter().any(|(f, _)| *f == name)
            || RUNNER_NEGATIVES.contains(&name.as_str());
        assert!(known, "negative/{name} is not classified in this test");
        seen += 1;
    }
    assert_eq!(seen, ASSEMBLER_NEGATIVES.len() + RUNNER_NEGATIVES.len());
}

#[derive(Deserialize)]
struct RawNegative {
    file: String,
    program: String,
}

#[test]
fn raw_negatives_parse_as_bytes_and_do_not_decode() {
    let text = read(&conformance_dir().join("assembled_negative.jsonl"));
    let mut count = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let n: RawNegative = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let expected = hex::decode(&n.program).unwrap();
        let insns = data_file(&n.file)
            .program()
            .unwrap_or_else(|e| panic!("{}: {e}", n.file));
        assert_eq!(isa::to_bytes(&insns), expected, "{}", n.file);
        assert!(isa::decode(&insns).is_err(), "{} decodes", n.file);
        assert!(disassemble(&insns).is_err(), "{} disassembles", n.file);
        count += 1;
    }
    println!("{count} raw negative programs parsed and refused");
    assert_eq!(count, 45);
}

fn reg() -> impl Strategy<Value = Reg> {
    (0u8..=10).prop_map(|n| Reg::new(n).unwrap())
}

fn width() -> impl Strategy<Value = Width> {
    prop_oneof![Just(Width::W32), Just(Width::W64)]
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![
        reg().prop_map(Source::Reg),
        any::<i32>().prop_map(Source::Imm)
    ]
}

fn size() -> impl Strategy<Value = Size> {
    prop_oneof![Just(Size::B), Just(Size::H), Just(Size::W), Just(Size::DW)]
}

fn alu_op() -> impl Strategy<Value = AluOp> {
    prop::sample::select(vec![
        AluOp::Add,
        AluOp::Sub,
        AluOp::Mul,
        AluOp::Div,
        AluOp::Sdiv,
        AluOp::Or,
        AluOp::And,
        AluOp::Lsh,
        AluOp::Rsh,
        AluOp::Mod,
        AluOp::Smod,
        AluOp::Xor,
        AluOp::Mov,
        AluOp::Arsh,
    ])
}

fn jmp_op() -> impl Strategy<Value = JmpOp> {
    prop::sample::select(vec![
        JmpOp::Eq,
        JmpOp::Gt,
        JmpOp::Ge,
        JmpOp::Set,
        JmpOp::Ne,
        JmpOp::Sgt,
        JmpOp::Sge,
        JmpOp::Lt,
        JmpOp::Le,
        JmpOp::Slt,
        JmpOp::Sle,
    ])
}

fn atomic_op() -> impl Strategy<Value = AtomicOp> {
    prop::sample::select(vec![
        AtomicOp::Add,
        AtomicOp::Or,
        AtomicOp::And,
        AtomicOp::Xor,
        AtomicOp::Xchg,
        AtomicOp::Cmpxchg,
    ])
}

fn ld_imm64() -> impl Strategy<Value = LdImm64> {
    prop_oneof![
        any::<u64>().prop_map(LdImm64::Imm),
        any::<i32>().prop_map(LdImm64::MapFd),
        (any::<i32>(), any::<u32>()).prop_map(|(map, off)| LdImm64::MapValue { map, off }),
        any::<i32>().prop_map(LdImm64::BtfId),
        any::<i32>().prop_map(LdImm64::Func),
        any::<i32>().prop_map(LdImm64::MapIdx),
        (any::<i32>(), any::<u32>()).prop_map(|(map, off)| LdImm64::MapIdxValue { map, off }),
    ]
}

/// Every instruction [`isa::decode`] can produce.
fn instruction() -> impl Strategy<Value = Instruction> {
    prop_oneof![
        (width(), alu_op(), reg(), source())
            .prop_map(|(width, op, dst, src)| Instruction::Alu {
                width,
                op,
                dst,
                src
            })
            .boxed(),
        (
            prop::sample::select(vec![
                (8, Width::W32),
                (8, Width::W64),
                (16, Width::W32),
                (16, Width::W64),
                (32, Width::W64),
            ]),
            reg(),
            reg()
        )
            .prop_map(|((bits, width), dst, src)| Instruction::Alu {
                width,
                op: AluOp::Movsx(bits),
                dst,
                src: Source::Reg(src),
            })
            .boxed(),
        (width(), reg())
            .prop_map(|(width, dst)| Instruction::Neg { width, dst })
            .boxed(),
        (
            prop::sample::select(vec![ByteOrder::Le, ByteOrder::Be, ByteOrder::Swap]),
            prop::sample::select(vec![16u8, 32, 64]),
            reg()
        )
            .prop_map(|(order, bits, dst)| Instruction::Endian { order, bits, dst })
            .boxed(),
        (size(), any::<bool>(), reg(), reg(), any::<i16>())
            .prop_map(|(size, signed, dst, src, off)| Instruction::Load {
                size,
                signed: signed && size != Size::DW,
                dst,
                src,
                off,
            })
            .boxed(),
        (size(), reg(), any::<i16>(), source())
            .prop_map(|(size, dst, off, src)| Instruction::Store {
                size,
                dst,
                off,
                src
            })
            .boxed(),
        (
            width(),
            atomic_op(),
            any::<bool>(),
            reg(),
            reg(),
            any::<i16>()
        )
            .prop_map(|(width, op, fetch, dst, src, off)| Instruction::Atomic {
                width,
                op,
                fetch: fetch || matches!(op, AtomicOp::Xchg | AtomicOp::Cmpxchg),
                dst,
                src,
                off,
            })
            .boxed(),
        (reg(), ld_imm64())
            .prop_map(|(dst, value)| Instruction::LdImm64 { dst, value })
            .boxed(),
        any::<i16>()
            .prop_map(|off| Instruction::Ja {
                off: off.into(),
                long: false
            })
            .boxed(),
        any::<i32>()
            .prop_map(|off| Instruction::Ja { off, long: true })
            .boxed(),
        (width(), jmp_op(), reg(), source(), any::<i16>())
            .prop_map(|(width, op, dst, src, off)| Instruction::Jmp {
                width,
                op,
                dst,
                src,
                off
            })
            .boxed(),
        prop_oneof![
            any::<i32>().prop_map(CallTarget::Helper),
            any::<i32>().prop_map(CallTarget::Local),
            any::<i32>().prop_map(CallTarget::Kfunc),
        ]
        .prop_map(Instruction::Call)
        .boxed(),
        reg().prop_map(|reg| Instruction::Callx { reg }).boxed(),
        Just(Instruction::Exit).boxed(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_programs_roundtrip(program in prop::collection::vec(instruction(), 1..24)) {
        let slots = isa::encode(&program);
        let decoded: Vec<Instruction> =
            isa::decode(&slots).map_err(|e| TestCaseError::fail(e.to_string()))?
                .into_iter().map(|(_, ins)| ins).collect();
        prop_assert_eq!(&decoded, &program);
        let text = disassemble(&slots).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again = assemble(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(again, slots, "{}", text);
    }

    #[test]
    fn single_instruction_text_roundtrips(ins in instruction()) {
        let text = format_instruction(&ins);
        let slots = assemble(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(slots, isa::encode(&[ins]), "{}", text);
    }
}
