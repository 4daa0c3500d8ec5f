//! The ELF object loader: what `clang -O2 -g -target bpf` writes, turned into
//! maps and fully linked programs.
//!
//! # Pipeline
//!
//! [`parse`] runs four steps, each over the output of the one before:
//!
//! 1. **ELF view.** Sections (classified by name and flags: code, `.maps`,
//!    legacy `maps`/`maps/*`, global data, `license`, `.BTF`, `.BTF.ext`),
//!    symbols and relocation records are read through the `object` crate,
//!    which checks every header, offset and size against the file. Only
//!    little-endian `ET_REL` objects for `EM_BPF` (or `EM_NONE`, which old
//!    LLVM wrote) are accepted.
//! 2. **Maps**, in the order libbpf creates them: BTF-defined maps of `.maps`
//!    (their definitions read from `.BTF` by [`crate::btf`], their names and
//!    offsets from the symbols of the same name, since clang leaves the
//!    `DATASEC` offsets zero), then legacy maps, then one single-element
//!    array per non-empty global data section (`.rodata*`, `.data*`,
//!    `.bss*`), as libbpf makes them.
//! 3. **Functions.** Each code section is cut into functions by its
//!    `STT_FUNC` symbols (value and size). Objects from before clang emitted
//!    function symbols have one function per section, named by the global
//!    symbol at offset 0.
//! 4. **Linking.** Each program starts as a copy of its own function. Its
//!    instructions are walked once: map references become
//!    [`pseudo::MAP_IDX`] / [`pseudo::MAP_IDX_VALUE`] with indices into
//!    [`Object::maps`], and every bpf-to-bpf call (or `lddw` of a function
//!    address, for callbacks) gets its target function appended, once, and
//!    its relative offset rewritten. Appended functions are walked the same
//!    way, so subprograms are pulled in transitively.
//! 5. **Initial values** of prog arrays and maps of maps ([`MapSpec::init`]),
//!    which need both maps and programs: libbpf's `.values = { [i] = &x }`
//!    in `.maps` (a relocation in `.rel.maps` per index, against a program
//!    or another map), and iproute2's two conventions for `struct
//!    bpf_elf_map`: an inner map's `inner_idx` (its key in every outer map
//!    whose `inner_id` is the inner map's `id`), and tail-call sections
//!    named `ID/KEY` (put at `KEY` of the prog array whose `id` is `ID`).
//!    They are only recorded here; [`crate::object`] puts them in place
//!    once the maps exist and the programs are loaded.
//!
//! # Which programs
//!
//! Every function of every code section except `.text` is a program, named
//! by its symbol; several `SEC("xdp")` functions in one section are several
//! programs. Static functions there are programs too (Cilium's tail-call
//! programs are static; libbpf refuses them, cilium/ebpf does not). The type comes from the section name ([`ProgType::from_section`]).
//! `.text` holds subprograms, except in objects with no other code section:
//! then each global `.text` function is a program of type
//! [`ProgType::Unspec`], so tools can still pick one.
//!
//! Calls may go to `.text` or to another function of the caller's own
//! section, as libbpf allows; a relocation into any other section (such as
//! `.text.unlikely`) is an error.
//!
//! # Errors: the whole object or nothing
//!
//! An object either parses completely or fails with the first problem found.
//! That is what libbpf's `bpf_object__open` does for bad relocations, and
//! what `ip link set dev X xdp obj prog.o` shows a user, and it keeps the
//! contract simple: every [`ProgramSpec`] in an [`Object`] is ready to load,
//! and every map reference in it names a map in [`Object::maps`]. Errors name
//! the section and the instruction (its slot index in that section, as
//! `llvm-objdump -d` numbers it) and the feature that is missing, such as a
//! kfunc call, an extern, or CO-RE relocations in `.BTF.ext`.
//!
//! # Untrusted input
//!
//! Every byte is treated as hostile: offsets and sizes are checked before use
//! (`get`, checked arithmetic), sizes are capped ([`MAX_PROGRAM_INSNS`],
//! [`MAX_GLOBAL_DATA`]), and BTF type chains are followed with a depth limit.
//! The tests parse truncated and bit-flipped copies of real objects.
//!
//! # Not supported
//!
//! CO-RE relocations, kfuncs, `__ksym`/`__kconfig` externs, and static
//! linking of several objects.

use std::collections::{HashMap, HashSet, VecDeque};

use ::object::elf;
use ::object::read::elf::{FileHeader as _, Rel as _, Rela as _, SectionHeader as _, Sym as _};
use ::object::Endianness;

use crate::btf::{self, Btf, BtfError, Kind, MapDefError};
use crate::isa::{pseudo, Insn, INSN_SIZE};
use crate::maps::{flags, MapDef, MapType, Pinning};

/// Most instructions a linked program may have (Linux's
/// `BPF_COMPLEXITY_LIMIT_INSNS`).
pub const MAX_PROGRAM_INSNS: usize = 1_000_000;

/// Most global data an object may have, all sections together (64 MiB), so
/// a small file cannot make the loader allocate gigabytes of `.bss`.
pub const MAX_GLOBAL_DATA: u64 = 64 << 20;

/// Most instructions all linked programs of an object may have together.
/// Subprograms are copied into every program that calls them, so a small
/// crafted file could otherwise ask for programs × code slots.
pub const MAX_OBJECT_INSNS: usize = 8 * MAX_PROGRAM_INSNS;

/// `R_BPF_NONE`: written by old LLVM (with `EM_NONE`) on every relocation;
/// treated by the instruction it is on, as libbpf does.
const R_BPF_NONE: u32 = 0;
/// `R_BPF_64_64`: a 64-bit immediate (`lddw`).
const R_BPF_64_64: u32 = 1;
/// `R_BPF_64_32`: a call's 32-bit immediate.
const R_BPF_64_32: u32 = 10;

/// Opcode of `lddw`.
const LD_IMM64: u8 = 0x18;
/// Opcode of `call`.
const CALL: u8 = 0x85;
/// `call` src for a bpf-to-bpf call.
const PSEUDO_CALL: u8 = 1;
/// `call` src for a kfunc call.
const PSEUDO_KFUNC_CALL: u8 = 2;

/// `BPF_F_NUMA_NODE`, which gives `bpf_map_def`'s last field a meaning.
const BPF_F_NUMA_NODE: u32 = 1 << 2;

/// A parsed object: its license, its maps and its linked programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// The `license` section, without NUL bytes.
    pub license: Option<String>,
    /// Every map, in creation order; programs refer to them by index.
    pub maps: Vec<MapSpec>,
    /// Every program, in section order and then by offset.
    pub programs: Vec<ProgramSpec>,
}

impl Object {
    /// The program whose function is called `name_or_section`, or else the
    /// first program of the section with that name.
    pub fn program(&self, name_or_section: &str) -> Option<&ProgramSpec> {
        self.programs
            .iter()
            .find(|p| p.name == name_or_section)
            .or_else(|| self.programs.iter().find(|p| p.section == name_or_section))
    }

    /// The map called `name`.
    pub fn map(&self, name: &str) -> Option<&MapSpec> {
        self.maps.iter().find(|m| m.def.name == name)
    }
}

/// A map the object defines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// The definition.
    pub def: MapDef,
    /// Where it was defined.
    pub origin: MapOrigin,
    /// For global data: the section's bytes (zeros for `.bss`), the initial
    /// value of the map's single element.
    pub initial: Option<Vec<u8>>,
    /// For prog arrays and maps of maps: the elements the map starts with,
    /// by ascending index (see [`MapInit`]). Empty for every other map.
    pub init: Vec<MapInit>,
}

/// One initial element of a prog array or a map of maps.
///
/// Where they come from: libbpf's `.values = { [0] = &prog, [2] = &inner }`
/// on a BTF-defined map, iproute2's `inner_idx` on a `struct bpf_elf_map`,
/// and iproute2's tail-call sections named `ID/KEY`. A static function in
/// `.values` (which clang relocates against its section, and libbpf
/// refuses) is found by its offset, so it works too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapInit {
    /// Slot `index` of a prog array holds a program of this object.
    Program {
        /// The slot.
        index: u32,
        /// The program's name ([`ProgramSpec::name`]).
        name: String,
        /// Its section ([`ProgramSpec::section`]), which with the name
        /// identifies it.
        section: String,
    },
    /// Key `index` (a `u32`, little-endian, for a hash of maps as well) of a
    /// map of maps holds another map of this object.
    Map {
        /// The key.
        index: u32,
        /// The inner map, an index into [`Object::maps`].
        map: usize,
    },
}

impl MapInit {
    /// The slot or key.
    pub fn index(&self) -> u32 {
        match self {
            MapInit::Program { index, .. } | MapInit::Map { index, .. } => *index,
        }
    }
}

/// Where a map was defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOrigin {
    /// A BTF-defined map in `.maps`.
    Btf,
    /// A `struct bpf_map_def` or iproute2 `struct bpf_elf_map` in `maps` or
    /// `maps/*`.
    Legacy,
    /// A global data section turned into an array map.
    GlobalData {
        /// The section (`.rodata`, `.data.foo`, `.bss`, ...).
        section: String,
    },
}

/// A linked program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramSpec {
    /// The function symbol (the section name for objects without one).
    pub name: String,
    /// The section it came from.
    pub section: String,
    /// The type its section name implies.
    pub prog_type: ProgType,
    /// Linked instructions: map references as [`pseudo::MAP_IDX`] /
    /// [`pseudo::MAP_IDX_VALUE`], subprograms appended, calls resolved.
    pub insns: Vec<Insn>,
}

/// Program types, by section name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProgType {
    /// `xdp`, `xdp/*`, `xdp_*` and other `xdp*` names (as samples/bpf's
    /// loader reads them, e.g. `xdp1`).
    Xdp,
    /// `xdp.frags`, `xdp.frags/*`: XDP that accepts multi-buffer packets.
    XdpFrags,
    /// `tc`, `tc/*`, `tc_*`, `tcx/*`, `classifier`, `classifier/*`.
    SchedCls,
    /// `socket*`.
    SocketFilter,
    /// Anything else (including `.text` functions); the section name says
    /// what it was meant for.
    Unspec,
}

impl ProgType {
    /// The type a program in section `name` has.
    pub fn from_section(name: &str) -> ProgType {
        let under = |prefix: &str| {
            name == prefix
                || name
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        if under("xdp.frags") {
            ProgType::XdpFrags
        } else if name.starts_with("xdp") {
            ProgType::Xdp
        } else if under("tc")
            || name.starts_with("tc_")
            || name.starts_with("tcx/")
            || under("classifier")
        {
            ProgType::SchedCls
        } else if name.starts_with("socket") {
            ProgType::SocketFilter
        } else {
            ProgType::Unspec
        }
    }
}

/// Why an object could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// The bytes are not a well-formed ELF file.
    #[error("malformed ELF: {0}")]
    Malformed(String),
    /// A well-formed ELF file that is not a little-endian eBPF object.
    #[error("not an eBPF object: {0}")]
    NotBpf(String),
    /// A section is malformed or unusable.
    #[error("section {section}: {reason}")]
    Section {
        /// Section name.
        section: String,
        /// What is wrong.
        reason: String,
    },
    /// A symbol is malformed.
    #[error("symbol {index} (\"{name}\"): {reason}")]
    Symbol {
        /// Symbol table index.
        index: usize,
        /// Symbol name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A relocation type no code relocation may have.
    #[error("unsupported relocation type {rtype} in {section} (offset {offset})")]
    RelocationType {
        /// The type.
        rtype: u32,
        /// The relocation section.
        section: String,
        /// Offset of the relocated instruction in its section.
        offset: u64,
    },
    /// `.BTF` or `.BTF.ext` is malformed.
    #[error("section {section}: {source}")]
    Btf {
        /// `.BTF` or `.BTF.ext`.
        section: String,
        /// What is wrong.
        #[source]
        source: BtfError,
    },
    /// A BTF-defined map is malformed.
    #[error("section {section}: {source}")]
    MapDef {
        /// `.maps`.
        section: String,
        /// What is wrong.
        #[source]
        source: MapDefError,
    },
    /// A legacy map is malformed.
    #[error("section {section}: map \"{map}\": {reason}")]
    LegacyMap {
        /// The `maps` section.
        section: String,
        /// Map name.
        map: String,
        /// What is wrong.
        reason: String,
    },
    /// An instruction cannot be linked.
    #[error("section {section}: insn {insn}: {problem}")]
    Insn {
        /// The code section holding the instruction.
        section: String,
        /// Its slot index within that section (as `llvm-objdump -d` counts).
        insn: usize,
        /// What is wrong.
        problem: InsnProblem,
    },
    /// A program grows past [`MAX_PROGRAM_INSNS`] when its subprograms are
    /// appended, or all programs together past [`MAX_OBJECT_INSNS`].
    #[error("program \"{program}\": linked size exceeds {max} instructions")]
    TooLarge {
        /// Program name.
        program: String,
        /// The limit.
        max: usize,
    },
    /// The global data sections together exceed [`MAX_GLOBAL_DATA`].
    #[error("global data sections hold more than {max} bytes together")]
    TooMuchData {
        /// The limit.
        max: u64,
    },
    /// An initial value of a prog array or map of maps ([`MapInit`]) is
    /// malformed or names something it cannot hold.
    #[error("map \"{map}\": {reason}")]
    MapInit {
        /// The map being initialised.
        map: String,
        /// What is wrong, naming the index and the target.
        reason: String,
    },
}

/// Why one instruction cannot be linked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InsnProblem {
    /// A relocation against a symbol in a section that programs cannot
    /// reference.
    #[error("relocation against symbol \"{symbol}\" in section {section} is not supported")]
    UnsupportedTarget {
        /// Symbol name.
        symbol: String,
        /// Its section.
        section: String,
    },
    /// A call to a kernel function (`__ksym` extern function).
    #[error("kfunc call to \"{0}\" is not supported")]
    Kfunc(String),
    /// A raw kfunc call instruction (`call` with src 2).
    #[error("kfunc call (BTF id {0}) is not supported")]
    KfuncId(i32),
    /// A call to an undefined function that is not a kfunc.
    #[error(
        "call to undefined function \"{0}\" (helpers are called by number, e.g. \
         `static long (*bpf_foo)(...) = (void *)N`)"
    )]
    UndefinedFunction(String),
    /// A reference to an extern variable.
    #[error("reference to extern symbol \"{0}\" (__kconfig/__ksym) is not supported")]
    Extern(String),
    /// A relocation on an instruction it cannot apply to.
    #[error(
        "relocation type {rtype} cannot apply to opcode {code:#04x} \
         (R_BPF_64_64 goes on lddw, R_BPF_64_32 on call)"
    )]
    RelocationMismatch {
        /// Relocation type.
        rtype: u32,
        /// Opcode.
        code: u8,
    },
    /// A relocation against a map section at an offset where no map starts.
    #[error("relocation against symbol \"{symbol}\" at offset {offset} of section {section} names no map")]
    UnknownMap {
        /// Symbol name.
        symbol: String,
        /// Map section.
        section: String,
        /// Offset in it.
        offset: i64,
    },
    /// A global data reference outside its section.
    #[error("offset {offset} lies outside global data section {section} ({size} bytes)")]
    DataOffset {
        /// Data section.
        section: String,
        /// The offset.
        offset: i64,
        /// Section size.
        size: u64,
    },
    /// A call target outside its section.
    #[error("call target {target} lies outside section {section}")]
    TargetOutOfBounds {
        /// Target section.
        section: String,
        /// Target slot.
        target: i64,
    },
    /// A call target between functions.
    #[error("call target insn {target} of section {section} is not inside any function")]
    TargetNotInFunction {
        /// Target section.
        section: String,
        /// Target slot.
        target: usize,
    },
    /// A function reference that is not at an instruction boundary.
    #[error("target of symbol \"{0}\" is not at an instruction boundary")]
    Misaligned(String),
    /// A map reference without a relocation (its index would be meaningless).
    #[error("lddw with src {0} (a map reference) has no relocation")]
    MapWithoutRelocation(u8),
    /// `lddw` of a kernel variable by BTF id.
    #[error("lddw of a kernel BTF id (src 3, __ksym) is not supported")]
    BtfId,
    /// An `lddw` whose second slot lies past its function.
    #[error("lddw is cut off by the end of its function")]
    TruncatedLdImm64,
    /// A relocation on the second slot of an `lddw`.
    #[error("relocation on the second slot of an lddw")]
    RelocationInsideLdImm64,
    /// The instruction has a CO-RE relocation.
    #[error("BTF CO-RE relocations (.BTF.ext) are not supported ({0} relocation)")]
    CoRe(&'static str),
}

/// Parses an eBPF ELF object: its maps, and its programs fully linked.
///
/// # Errors
/// The first problem found, as an [`ElfError`] naming the section, the
/// instruction and the feature; see the [module docs](self) for why an
/// object fails as a whole.
pub fn parse(bytes: &[u8]) -> Result<Object, ElfError> {
    let file = ElfFile::read(bytes)?;
    let btf = BtfInfo::read(&file)?;
    let mut maps = MapTable::build(&file, btf.btf.as_ref())?;
    let code = CodeSection::all(&file)?;
    let linker = Linker {
        file: &file,
        code: &code,
        maps: &maps,
        btf: &btf,
        text: file.sections.iter().position(|s| s.name == ".text"),
    };
    let programs = linker.programs()?;
    maps.btf_initial_values(&file, &code, &programs)?;
    maps.tail_call_sections(&programs)?;
    let license = file
        .sections
        .iter()
        .find(|s| s.kind == SectionKind::License)
        .map(|s| {
            String::from_utf8_lossy(s.data.split(|&b| b == 0).next().unwrap_or(&[])).into_owned()
        });
    Ok(Object {
        license,
        maps: maps.specs,
        programs,
    })
}

// ---------------------------------------------------------------------------
// Step 1: the ELF view.

/// What a section is to the loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SectionKind {
    /// Executable instructions.
    Code,
    /// BTF-defined maps.
    BtfMaps,
    /// `maps` or `maps/*`.
    LegacyMaps,
    /// Global data.
    Data {
        /// `.rodata*`: read-only for programs.
        readonly: bool,
    },
    /// `license`.
    License,
    /// `.BTF`.
    Btf,
    /// `.BTF.ext`.
    BtfExt,
    /// Anything else (debug info, relocations, symbols, ...).
    Other,
}

impl SectionKind {
    fn classify(name: &str, sh_type: elf::SectionType, sh_flags: elf::SectionFlags) -> SectionKind {
        let named = |base: &str| {
            name == base
                || name
                    .strip_prefix(base)
                    .is_some_and(|rest| rest.starts_with('.'))
        };
        let has_bytes = sh_type == elf::SHT_PROGBITS;
        if has_bytes && sh_flags.contains(elf::SHF_EXECINSTR) {
            SectionKind::Code
        } else if name == ".maps" && has_bytes {
            SectionKind::BtfMaps
        } else if (name == "maps" || name.starts_with("maps/")) && has_bytes {
            SectionKind::LegacyMaps
        } else if named(".rodata") && has_bytes {
            SectionKind::Data { readonly: true }
        } else if (named(".data") && has_bytes) || (named(".bss") && sh_type == elf::SHT_NOBITS) {
            SectionKind::Data { readonly: false }
        } else if name == "license" && has_bytes {
            SectionKind::License
        } else if name == ".BTF" && has_bytes {
            SectionKind::Btf
        } else if name == ".BTF.ext" && has_bytes {
            SectionKind::BtfExt
        } else {
            SectionKind::Other
        }
    }
}

/// One section: name, kind, and bytes (empty for `NOBITS` and for sections
/// the loader does not read).
struct Section<'a> {
    name: String,
    kind: SectionKind,
    data: &'a [u8],
    /// `sh_size` (the only size a `NOBITS` section has).
    size: u64,
}

/// One symbol table entry.
struct Symbol {
    name: String,
    /// Defining section; `None` for undefined (extern) and absolute symbols.
    section: Option<usize>,
    value: u64,
    size: u64,
    st_type: elf::SymbolType,
    global: bool,
}

impl Symbol {
    /// Whether the symbol names an object (not a section, file or label).
    fn is_data(&self) -> bool {
        !self.name.is_empty() && matches!(self.st_type, elf::STT_NOTYPE | elf::STT_OBJECT)
    }
}

/// One relocation record.
#[derive(Clone, Copy, Debug)]
struct Reloc {
    symbol: usize,
    rtype: u32,
    /// Explicit addend (`SHT_RELA`); `None` for `SHT_REL`, whose addend is in
    /// the instruction.
    addend: Option<i64>,
}

/// The relocations of one code section.
#[derive(Default)]
struct RelocSet {
    /// Name of the relocation section, for errors.
    section: String,
    /// `(r_offset, record)`.
    relocs: Vec<(u64, Reloc)>,
}

/// Sections, symbols and relocations, read and bounds-checked.
struct ElfFile<'a> {
    sections: Vec<Section<'a>>,
    /// Indexed by symbol table index (0 is the null symbol).
    symbols: Vec<Symbol>,
    /// Indices into `symbols` of each section's symbols, by section index.
    by_section: Vec<Vec<usize>>,
    /// Relocations of code sections and of `.maps` (`.values`
    /// initialisers), by target section index.
    relocations: HashMap<usize, RelocSet>,
}

impl<'a> ElfFile<'a> {
    fn read(bytes: &'a [u8]) -> Result<ElfFile<'a>, ElfError> {
        let header = elf::FileHeader64::<Endianness>::parse(bytes).map_err(malformed)?;
        let endian = header.endian().map_err(malformed)?;
        if endian != Endianness::Little {
            return Err(ElfError::NotBpf(
                "big-endian objects are not supported".into(),
            ));
        }
        if header.e_type(endian) != elf::ET_REL {
            return Err(ElfError::NotBpf(format!(
                "e_type {} is not ET_REL (a relocatable object, as clang -c writes)",
                header.e_type(endian).0
            )));
        }
        let machine = header.e_machine(endian);
        if machine != elf::EM_BPF && machine != elf::EM_NONE {
            return Err(ElfError::NotBpf(format!(
                "e_machine {} is not EM_BPF",
                machine.0
            )));
        }
        let table = header.sections(endian, bytes).map_err(malformed)?;

        let mut sections = Vec::with_capacity(table.len());
        for sh in table.iter() {
            let name = table.section_name(endian, sh).map_err(malformed)?;
            let name = String::from_utf8_lossy(name).into_owned();
            let kind = SectionKind::classify(&name, sh.sh_type(endian), sh.sh_flags(endian));
            let data = match kind {
                SectionKind::Other => &[][..],
                _ => sh.data(endian, bytes).map_err(|e| ElfError::Section {
                    section: name.clone(),
                    reason: e.to_string(),
                })?,
            };
            sections.push(Section {
                name,
                kind,
                data,
                size: sh.sh_size(endian),
            });
        }

        let symtab = table
            .symbols(endian, bytes, elf::SHT_SYMTAB)
            .map_err(malformed)?;
        let mut symbols = Vec::with_capacity(symtab.len());
        for (index, sym) in symtab.enumerate() {
            let name = symtab
                .symbol_name(endian, sym)
                .map_err(|e| ElfError::Symbol {
                    index: index.0,
                    name: String::new(),
                    reason: e.to_string(),
                })?;
            let name = String::from_utf8_lossy(name).into_owned();
            let bad = |reason: &str| ElfError::Symbol {
                index: index.0,
                name: name.clone(),
                reason: reason.to_string(),
            };
            let section = symtab
                .symbol_section(endian, sym, index)
                .map_err(|e| bad(&e.to_string()))?
                .map(|s| s.0);
            if section.is_some_and(|s| s >= sections.len()) {
                return Err(bad("section index out of range"));
            }
            symbols.push(Symbol {
                section,
                value: sym.st_value(endian),
                size: sym.st_size(endian),
                st_type: sym.st_type(),
                global: sym.st_bind() != elf::STB_LOCAL,
                name,
            });
        }

        let mut relocations: HashMap<usize, RelocSet> = HashMap::new();
        for sh in table.iter() {
            let sh_type = sh.sh_type(endian);
            if sh_type != elf::SHT_REL && sh_type != elf::SHT_RELA {
                continue;
            }
            let target = sh.info_link(endian).0;
            if !matches!(
                sections.get(target).map(|s| s.kind),
                Some(SectionKind::Code | SectionKind::BtfMaps)
            ) {
                continue; // debug info, BTF, ...
            }
            let name = String::from_utf8_lossy(table.section_name(endian, sh).map_err(malformed)?)
                .into_owned();
            let bad = |e: ::object::read::Error| ElfError::Section {
                section: name.clone(),
                reason: e.to_string(),
            };
            let set = relocations.entry(target).or_default();
            set.section = name.clone();
            if let Some((rels, _)) = sh.rel(endian, bytes).map_err(bad)? {
                set.relocs.extend(rels.iter().map(|r| {
                    let reloc = Reloc {
                        symbol: r.r_sym(endian) as usize,
                        rtype: r.r_type(endian).0,
                        addend: None,
                    };
                    (r.r_offset(endian), reloc)
                }));
            }
            if let Some((relas, _)) = sh.rela(endian, bytes).map_err(bad)? {
                set.relocs.extend(relas.iter().map(|r| {
                    let reloc = Reloc {
                        symbol: r.r_sym(endian, false) as usize,
                        rtype: r.r_type(endian, false).0,
                        addend: Some(r.r_addend(endian)),
                    };
                    (r.r_offset(endian), reloc)
                }));
            }
        }
        let mut by_section = vec![Vec::new(); sections.len()];
        for (i, sym) in symbols.iter().enumerate() {
            if let Some(s) = sym.section {
                by_section[s].push(i);
            }
        }
        Ok(ElfFile {
            sections,
            symbols,
            by_section,
            relocations,
        })
    }

    /// The symbols defined in section `si`.
    fn symbols_in(&self, si: usize) -> impl Iterator<Item = &Symbol> + '_ {
        self.by_section
            .get(si)
            .into_iter()
            .flatten()
            .map(|&i| &self.symbols[i])
    }

    /// Index of the first section of `kind`.
    fn find(&self, kind: SectionKind) -> Option<usize> {
        self.sections.iter().position(|s| s.kind == kind)
    }

    /// Indices of every section of `kind`, in header order.
    fn all(&self, kind: SectionKind) -> impl Iterator<Item = usize> + '_ {
        self.sections
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.kind == kind)
            .map(|(i, _)| i)
    }
}

/// What the loader takes from `.BTF` and `.BTF.ext`.
struct BtfInfo {
    btf: Option<Btf>,
    /// CO-RE relocations by `(code section, slot)`, with their kind.
    core: HashMap<(usize, usize), &'static str>,
    /// Names in the `.ksyms` `DATASEC`: kfuncs and kernel variables.
    ksyms: HashSet<String>,
}

impl BtfInfo {
    fn read(file: &ElfFile<'_>) -> Result<BtfInfo, ElfError> {
        let btf_err = |section: &str| {
            let section = section.to_string();
            move |source| ElfError::Btf { section, source }
        };
        let btf = file
            .find(SectionKind::Btf)
            .map(|i| Btf::parse(file.sections[i].data))
            .transpose()
            .map_err(btf_err(".BTF"))?;
        let mut info = BtfInfo {
            btf,
            core: HashMap::new(),
            ksyms: HashSet::new(),
        };
        let Some(btf) = &info.btf else {
            return Ok(info);
        };
        if let Some((_, vars)) = btf.datasec(".ksyms").map_err(btf_err(".BTF"))? {
            for v in vars {
                if let Ok(t) = btf.get(v.ty) {
                    info.ksyms
                        .insert(btf.name(t.name_off).map_err(btf_err(".BTF"))?.to_string());
                }
            }
        }
        if let Some(ext) = file.find(SectionKind::BtfExt) {
            let relos =
                btf::core_relocations(file.sections[ext].data, btf).map_err(btf_err(".BTF.ext"))?;
            let code: HashMap<&str, usize> = file
                .all(SectionKind::Code)
                .map(|i| (file.sections[i].name.as_str(), i))
                .collect();
            for r in relos {
                let Some(&section) = code.get(r.section.as_str()) else {
                    continue;
                };
                let slot = r.insn_off as usize / INSN_SIZE;
                info.core.entry((section, slot)).or_insert(r.kind_name());
            }
        }
        Ok(info)
    }
}

// ---------------------------------------------------------------------------
// Step 2: maps.

/// The object's maps, and how relocations find them.
#[derive(Default)]
struct MapTable {
    specs: Vec<MapSpec>,
    /// `(section, offset)` of a `.maps` or legacy map symbol → map index.
    by_symbol: HashMap<(usize, u64), usize>,
    /// Global data section → map index.
    by_data_section: HashMap<usize, usize>,
    /// The `.maps` section, if any.
    btf_section: Option<usize>,
    /// Where each BTF-defined map lies in `.maps`, for `.values`.
    btf_places: Vec<BtfMapPlace>,
    /// iproute2 `id` of a `bpf_elf_map` prog array → its map index (the
    /// first with that id, as iproute2 finds it), for `ID/KEY` sections.
    prog_array_ids: HashMap<u32, usize>,
}

/// The bytes of one BTF-defined map in `.maps`.
struct BtfMapPlace {
    /// Index in `MapTable::specs`.
    map: usize,
    /// Offset of its symbol.
    start: u64,
    /// End of its symbol (`.values` makes it longer than the BTF struct).
    end: u64,
    /// Offset of its `values` member from `start`, if it has one.
    values: Option<u64>,
}

/// Record layouts of legacy map sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LegacyLayout {
    /// `struct bpf_map_def` (samples/bpf, libbpf < 1.0): `type, key_size,
    /// value_size, max_entries, map_flags[, inner_map_idx, numa_node]`.
    MapDef,
    /// iproute2's `struct bpf_elf_map`: `type, size_key, size_value,
    /// max_elem, flags, id, pinning[, inner_id, inner_idx]`.
    ElfMap,
}

/// One legacy map record, kept until inner maps are resolved.
struct LegacyRecord {
    /// Index in `MapTable::specs`.
    map: usize,
    section: usize,
    layout: LegacyLayout,
    /// The record's `u32` fields (zero past its end).
    fields: [u32; 9],
}

impl MapTable {
    fn build(file: &ElfFile<'_>, btf: Option<&Btf>) -> Result<MapTable, ElfError> {
        let mut maps = MapTable::default();
        if let Some(section) = file.find(SectionKind::BtfMaps) {
            maps.add_btf_maps(file, section, btf)?;
        }
        maps.add_legacy_maps(file)?;
        maps.add_global_data(file)?;
        Ok(maps)
    }

    fn push(&mut self, spec: MapSpec) -> usize {
        self.specs.push(spec);
        self.specs.len() - 1
    }

    /// BTF-defined maps: one per `VAR` of the `.maps` `DATASEC`, at the
    /// offset of the ELF symbol of the same name.
    fn add_btf_maps(
        &mut self,
        file: &ElfFile<'_>,
        section: usize,
        btf: Option<&Btf>,
    ) -> Result<(), ElfError> {
        let sec_err = |reason: &str| ElfError::Section {
            section: ".maps".into(),
            reason: reason.to_string(),
        };
        let symbols: HashMap<&str, (u64, u64)> = file
            .symbols_in(section)
            .filter(|s| s.is_data())
            .map(|s| (s.name.as_str(), (s.value, s.size)))
            .collect();
        self.btf_section = Some(section);
        let btf_err = |source| ElfError::Btf {
            section: ".BTF".into(),
            source,
        };
        let Some(btf) = btf else {
            if symbols.is_empty() {
                return Ok(());
            }
            return Err(sec_err(
                "BTF-defined maps need a .BTF section (compile with -g)",
            ));
        };
        let Some((_, vars)) = btf.datasec(".maps").map_err(btf_err)? else {
            if symbols.is_empty() {
                return Ok(());
            }
            return Err(sec_err(".BTF has no DATASEC \".maps\""));
        };
        for v in vars {
            let var = btf.get(v.ty).map_err(btf_err)?;
            let Kind::Var { target, .. } = var.kind else {
                return Err(sec_err(&format!(
                    "DATASEC entry {} is a BTF {}, not a VAR",
                    v.ty,
                    var.kind.name()
                )));
            };
            let name = btf.name(var.name_off).map_err(btf_err)?;
            let (offset, size) = *symbols
                .get(name)
                .ok_or_else(|| sec_err(&format!("map \"{name}\" has no ELF symbol")))?;
            let map_def_err = |source| ElfError::MapDef {
                section: ".maps".into(),
                source,
            };
            let def = btf.map_def(name, target).map_err(map_def_err)?;
            let values = btf.map_values_offset(name, target).map_err(map_def_err)?;
            let index = self.push(MapSpec {
                def,
                origin: MapOrigin::Btf,
                initial: None,
                init: Vec::new(),
            });
            self.by_symbol.insert((section, offset), index);
            self.btf_places.push(BtfMapPlace {
                map: index,
                start: offset,
                end: offset.saturating_add(size),
                values: values.map(u64::from),
            });
        }
        // A symbol without a size (hand-written assembly) runs to the next
        // map or the end of the section.
        let mut starts: Vec<u64> = self.btf_places.iter().map(|p| p.start).collect();
        starts.sort_unstable();
        let section_size = file.sections[section].size;
        for p in &mut self.btf_places {
            if p.end == p.start {
                let next = starts.iter().find(|&&s| s > p.start);
                p.end = next.copied().unwrap_or(section_size);
            }
        }
        Ok(())
    }

    /// Legacy maps of every `maps`/`maps/*` section, in header order and then
    /// by offset; `bpf_map_def::inner_map_idx` counts in that order.
    fn add_legacy_maps(&mut self, file: &ElfFile<'_>) -> Result<(), ElfError> {
        let mut records: Vec<LegacyRecord> = Vec::new();
        for si in file.all(SectionKind::LegacyMaps) {
            let section = &file.sections[si];
            let mut syms: Vec<&Symbol> = file.symbols_in(si).filter(|s| s.is_data()).collect();
            syms.sort_by(|a, b| (a.value, &a.name).cmp(&(b.value, &b.name)));
            syms.dedup_by_key(|s| s.value);
            if syms.is_empty() {
                continue;
            }
            let size = legacy_record_size(section, &syms)?;
            let mut fields = Vec::with_capacity(syms.len());
            for sym in &syms {
                let bytes = usize::try_from(sym.value)
                    .ok()
                    .and_then(|start| section.data.get(start..start.checked_add(size)?))
                    .ok_or_else(|| ElfError::LegacyMap {
                        section: section.name.clone(),
                        map: sym.name.clone(),
                        reason: format!(
                            "record at offset {} runs past the section ({} bytes)",
                            sym.value, section.size
                        ),
                    })?;
                let mut f = [0u32; 9];
                for (field, chunk) in f.iter_mut().zip(bytes.chunks_exact(4)) {
                    *field = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                }
                fields.push(f);
            }
            let layout = legacy_layout(size, &fields);
            for (sym, f) in syms.iter().zip(fields) {
                let pinning = match (layout, f[6]) {
                    // PIN_OBJECT_NS pins per object file, so a new version
                    // of the program never shares it: not kept across updates.
                    (LegacyLayout::MapDef, _) | (LegacyLayout::ElfMap, 0 | 1) => Pinning::None,
                    (LegacyLayout::ElfMap, 2) => Pinning::ByName, // PIN_GLOBAL_NS
                    (LegacyLayout::ElfMap, v) => {
                        return Err(ElfError::LegacyMap {
                            section: section.name.clone(),
                            map: sym.name.clone(),
                            reason: format!("iproute2 custom pinning {v} is not supported"),
                        })
                    }
                };
                let def = MapDef {
                    name: sym.name.clone(),
                    map_type: MapType::from_u32(f[0]),
                    key_size: f[1],
                    value_size: f[2],
                    max_entries: f[3],
                    flags: f[4],
                    pinning,
                    inner: None,
                };
                let map = self.push(MapSpec {
                    def,
                    origin: MapOrigin::Legacy,
                    initial: None,
                    init: Vec::new(),
                });
                self.by_symbol.insert((si, sym.value), map);
                records.push(LegacyRecord {
                    map,
                    section: si,
                    layout,
                    fields: f,
                });
            }
        }
        self.resolve_legacy_inner(file, &records)?;
        self.legacy_initial_values(file, &records)
    }

    /// Sets the inner map template of legacy map-in-map definitions:
    /// `inner_map_idx` counts legacy maps; iproute2's `inner_id` names the
    /// map whose `id` field matches.
    fn resolve_legacy_inner(
        &mut self,
        file: &ElfFile<'_>,
        records: &[LegacyRecord],
    ) -> Result<(), ElfError> {
        let mut by_id: HashMap<u32, &LegacyRecord> = HashMap::new();
        for r in records.iter().filter(|r| r.layout == LegacyLayout::ElfMap) {
            by_id.entry(r.fields[5]).or_insert(r);
        }
        for r in records {
            let def = &self.specs[r.map].def;
            if !matches!(def.map_type, MapType::ArrayOfMaps | MapType::HashOfMaps) {
                continue;
            }
            let inner = match r.layout {
                LegacyLayout::MapDef => records.get(r.fields[5] as usize),
                LegacyLayout::ElfMap if r.fields[7] != 0 => by_id.get(&r.fields[7]).copied(),
                LegacyLayout::ElfMap => continue,
            };
            let err = |reason: &str| ElfError::LegacyMap {
                section: file.sections[r.section].name.clone(),
                map: def.name.clone(),
                reason: reason.to_string(),
            };
            let inner = inner.ok_or_else(|| err("its inner map template does not exist"))?;
            if inner.map == r.map {
                return Err(err("it is its own inner map template"));
            }
            let mut inner_def = self.specs[inner.map].def.clone();
            inner_def.inner = None;
            self.specs[r.map].def.inner = Some(Box::new(inner_def));
        }
        Ok(())
    }

    /// iproute2's initial values of `struct bpf_elf_map` maps: a map with
    /// an `id`, no `inner_id` of its own and an `inner_idx` other than -1
    /// goes at key `inner_idx` of every map of maps whose `inner_id` is that
    /// `id` (`bpf_maps_attach_all`). Also remembers each prog array's `id`
    /// for the `ID/KEY` tail-call sections.
    fn legacy_initial_values(
        &mut self,
        file: &ElfFile<'_>,
        records: &[LegacyRecord],
    ) -> Result<(), ElfError> {
        const ID: usize = 5;
        const INNER_ID: usize = 7;
        const INNER_IDX: usize = 8;
        let elf_maps = || records.iter().filter(|r| r.layout == LegacyLayout::ElfMap);
        for r in elf_maps() {
            if self.specs[r.map].def.map_type == MapType::ProgArray && r.fields[ID] != 0 {
                self.prog_array_ids.entry(r.fields[ID]).or_insert(r.map);
            }
        }
        for inner in elf_maps() {
            let (id, index) = (inner.fields[ID], inner.fields[INNER_IDX]);
            if id == 0 || inner.fields[INNER_ID] != 0 || index == u32::MAX {
                continue;
            }
            for outer in elf_maps().filter(|o| o.fields[INNER_ID] == id) {
                let def = &self.specs[outer.map].def;
                if !matches!(def.map_type, MapType::ArrayOfMaps | MapType::HashOfMaps) {
                    continue;
                }
                let inner_name = &self.specs[inner.map].def.name;
                check_init_index(def, index, &format!("map \"{inner_name}\" (inner_idx)"))
                    .map_err(|reason| ElfError::LegacyMap {
                        section: file.sections[outer.section].name.clone(),
                        map: def.name.clone(),
                        reason,
                    })?;
                self.specs[outer.map].init.push(MapInit::Map {
                    index,
                    map: inner.map,
                });
            }
        }
        Ok(())
    }

    /// One array map per non-empty global data section, as libbpf makes it.
    fn add_global_data(&mut self, file: &ElfFile<'_>) -> Result<(), ElfError> {
        let mut total: u64 = 0;
        for (si, section) in file.sections.iter().enumerate() {
            let SectionKind::Data { readonly } = section.kind else {
                continue;
            };
            if section.size == 0 {
                continue;
            }
            let too_big = ElfError::TooMuchData {
                max: MAX_GLOBAL_DATA,
            };
            total = total.saturating_add(section.size);
            if total > MAX_GLOBAL_DATA {
                return Err(too_big);
            }
            let value_size = u32::try_from(section.size).map_err(|_| too_big)?;
            let initial = if section.data.is_empty() {
                vec![0; value_size as usize] // .bss
            } else {
                section.data.to_vec()
            };
            let mut map_flags = flags::BPF_F_MMAPABLE;
            if readonly {
                map_flags |= flags::BPF_F_RDONLY_PROG;
            }
            let index = self.push(MapSpec {
                def: MapDef {
                    name: section.name.clone(),
                    map_type: MapType::Array,
                    key_size: 4,
                    value_size,
                    max_entries: 1,
                    flags: map_flags,
                    pinning: Pinning::None,
                    inner: None,
                },
                origin: MapOrigin::GlobalData {
                    section: section.name.clone(),
                },
                initial: Some(initial),
                init: Vec::new(),
            });
            self.by_data_section.insert(si, index);
        }
        Ok(())
    }
}

/// The size of one legacy map record: the symbols' common size if they all
/// have one, else the section size divided by the number of maps.
fn legacy_record_size(section: &Section<'_>, syms: &[&Symbol]) -> Result<usize, ElfError> {
    let bad = |reason: String| ElfError::Section {
        section: section.name.clone(),
        reason,
    };
    let first = syms.first().map_or(0, |s| s.size);
    let size = if first != 0 && syms.iter().all(|s| s.size == first) {
        first
    } else {
        let count = syms.len() as u64;
        if !section.size.is_multiple_of(count) {
            return Err(bad(format!(
                "cannot tell the map record size: {} bytes for {count} maps",
                section.size
            )));
        }
        section.size / count
    };
    // `struct bpf_map_def` has at least type, key_size, value_size,
    // max_entries.
    if !(16..=1024).contains(&size) || size % 4 != 0 {
        return Err(bad(format!(
            "map record size {size} is not a map definition"
        )));
    }
    Ok(size as usize)
}

/// Tells `bpf_map_def` and iproute2's `bpf_elf_map` apart. A 36-byte record
/// is `bpf_elf_map` with `inner_id`/`inner_idx`. At 28 bytes both exist
/// (`bpf_map_def` with `inner_map_idx, numa_node`, `bpf_elf_map` with `id,
/// pinning`): a non-zero 7th field without `BPF_F_NUMA_NODE` can only be
/// iproute2's pinning. Anything else reads as `bpf_map_def`, as libbpf reads
/// it.
fn legacy_layout(size: usize, records: &[[u32; 9]]) -> LegacyLayout {
    let pinned = |f: &[u32; 9]| f[6] != 0 && f[4] & BPF_F_NUMA_NODE == 0;
    match size {
        36 => LegacyLayout::ElfMap,
        28 if records.iter().any(pinned) => LegacyLayout::ElfMap,
        _ => LegacyLayout::MapDef,
    }
}

// ---------------------------------------------------------------------------
// Step 3: code sections and their functions.

/// A function: a symbol's slot range in its code section.
#[derive(Clone, Debug)]
struct Function {
    name: String,
    start: usize,
    end: usize,
    global: bool,
}

/// A code section cut into functions, with its relocations by slot.
struct CodeSection {
    name: String,
    insns: Vec<Insn>,
    /// Sorted by start; ranges do not overlap.
    functions: Vec<Function>,
    relocs: HashMap<usize, Reloc>,
}

impl CodeSection {
    /// Every non-empty code section, by section index.
    fn all(file: &ElfFile<'_>) -> Result<HashMap<usize, CodeSection>, ElfError> {
        let mut out = HashMap::new();
        for si in file.all(SectionKind::Code) {
            let section = &file.sections[si];
            if section.data.is_empty() {
                continue;
            }
            out.insert(si, CodeSection::read(file, si)?);
        }
        Ok(out)
    }

    fn read(file: &ElfFile<'_>, si: usize) -> Result<CodeSection, ElfError> {
        let section = &file.sections[si];
        let bad = |reason: String| ElfError::Section {
            section: section.name.clone(),
            reason,
        };
        if !section.data.len().is_multiple_of(INSN_SIZE) {
            return Err(bad(format!(
                "size {} is not a multiple of the instruction size",
                section.data.len()
            )));
        }
        let insns: Vec<Insn> = section
            .data
            .chunks_exact(INSN_SIZE)
            .map(|c| Insn::from_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let functions = functions(file, si, insns.len())?;

        let mut relocs = HashMap::new();
        if let Some(set) = file.relocations.get(&si) {
            for &(offset, reloc) in &set.relocs {
                let bad = |reason: String| ElfError::Section {
                    section: set.section.clone(),
                    reason: format!("relocation at offset {offset}: {reason}"),
                };
                if !matches!(reloc.rtype, R_BPF_NONE | R_BPF_64_64 | R_BPF_64_32) {
                    return Err(ElfError::RelocationType {
                        rtype: reloc.rtype,
                        section: set.section.clone(),
                        offset,
                    });
                }
                if offset % INSN_SIZE as u64 != 0 {
                    return Err(bad("not at an instruction boundary".into()));
                }
                let slot = usize::try_from(offset / INSN_SIZE as u64)
                    .ok()
                    .filter(|&s| s < insns.len())
                    .ok_or_else(|| bad(format!("past the end of {}", section.name)))?;
                if reloc.symbol == 0 || reloc.symbol >= file.symbols.len() {
                    return Err(bad(format!(
                        "symbol index {} is out of range",
                        reloc.symbol
                    )));
                }
                if relocs.insert(slot, reloc).is_some() {
                    return Err(bad("a second relocation for the same instruction".into()));
                }
            }
        }
        Ok(CodeSection {
            name: section.name.clone(),
            insns,
            functions,
            relocs,
        })
    }

    /// The function containing `slot`.
    fn function_at(&self, slot: usize) -> Option<usize> {
        let i = self
            .functions
            .partition_point(|f| f.start <= slot)
            .checked_sub(1)?;
        (slot < self.functions[i].end).then_some(i)
    }
}

/// Cuts code section `si` (of `len` slots) into functions by its `STT_FUNC`
/// symbols. A symbol without a size runs to the next function or the end.
/// Without any function symbol (objects from before clang wrote them) the
/// whole section is one function, named by the symbol at offset 0.
fn functions(file: &ElfFile<'_>, si: usize, len: usize) -> Result<Vec<Function>, ElfError> {
    let section = &file.sections[si];
    let mut funcs: Vec<(usize, u64, &Symbol)> = Vec::new();
    for &index in file.by_section.get(si).into_iter().flatten() {
        let sym = &file.symbols[index];
        if sym.st_type != elf::STT_FUNC {
            continue;
        }
        let bad = |reason: String| ElfError::Symbol {
            index,
            name: sym.name.clone(),
            reason,
        };
        if !sym.value.is_multiple_of(INSN_SIZE as u64) || !sym.size.is_multiple_of(INSN_SIZE as u64)
        {
            return Err(bad("function is not aligned to instructions".into()));
        }
        let start = usize::try_from(sym.value / INSN_SIZE as u64)
            .ok()
            .filter(|&s| s < len)
            .ok_or_else(|| bad(format!("function starts past the end of {}", section.name)))?;
        funcs.push((start, sym.size / INSN_SIZE as u64, sym));
    }
    funcs.sort_by_key(|&(start, _, _)| start);
    funcs.dedup_by_key(|&mut (start, _, _)| start); // aliases

    if funcs.is_empty() {
        let named = |global: bool| {
            file.symbols_in(si).find(|s| {
                s.value == 0
                    && s.st_type == elf::STT_NOTYPE
                    && s.global == global
                    && !s.name.is_empty()
                    && !s.name.starts_with("LBB")
                    && !s.name.starts_with(".L")
            })
        };
        let sym = named(true).or_else(|| named(false));
        return Ok(vec![Function {
            name: sym.map_or_else(|| section.name.clone(), |s| s.name.clone()),
            start: 0,
            end: len,
            global: true,
        }]);
    }

    let mut out = Vec::with_capacity(funcs.len());
    for (i, &(start, size, sym)) in funcs.iter().enumerate() {
        let next = funcs.get(i + 1).map_or(len, |f| f.0);
        let end = if size == 0 {
            next
        } else {
            usize::try_from(size)
                .ok()
                .and_then(|size| start.checked_add(size))
                .filter(|&end| end <= next)
                .ok_or_else(|| ElfError::Section {
                    section: section.name.clone(),
                    reason: format!(
                        "function \"{}\" ({size} insns at {start}) overlaps the next function or the section end",
                        sym.name
                    ),
                })?
        };
        out.push(Function {
            name: sym.name.clone(),
            start,
            end,
            global: sym.global,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Step 4: linking.

/// Everything linking reads.
struct Linker<'a> {
    file: &'a ElfFile<'a>,
    code: &'a HashMap<usize, CodeSection>,
    maps: &'a MapTable,
    btf: &'a BtfInfo,
    /// The `.text` section, where subprograms live.
    text: Option<usize>,
}

/// One program being linked.
struct LinkState {
    out: Vec<Insn>,
    /// `(section, function)` → its first slot in `out`.
    placed: HashMap<(usize, usize), usize>,
    /// Placed functions whose instructions are still to be fixed.
    queue: VecDeque<(usize, usize)>,
}

impl Linker<'_> {
    /// Every program of the object, linked.
    fn programs(&self) -> Result<Vec<ProgramSpec>, ElfError> {
        let mut sections: Vec<usize> = self
            .code
            .keys()
            .copied()
            .filter(|&si| Some(si) != self.text)
            .collect();
        sections.sort_unstable();
        let only_text = sections.is_empty();
        if only_text {
            sections.extend(self.text.filter(|t| self.code.contains_key(t)));
        }
        let mut programs = Vec::new();
        let mut total: usize = 0;
        for si in sections {
            let cs = &self.code[&si];
            for (fi, f) in cs.functions.iter().enumerate() {
                if only_text && !f.global {
                    continue; // a static helper of the text-only object
                }
                let insns = self.link(si, fi)?;
                total = total.saturating_add(insns.len());
                if total > MAX_OBJECT_INSNS {
                    return Err(ElfError::TooLarge {
                        program: f.name.clone(),
                        max: MAX_OBJECT_INSNS,
                    });
                }
                programs.push(ProgramSpec {
                    name: f.name.clone(),
                    section: cs.name.clone(),
                    prog_type: if only_text {
                        ProgType::Unspec
                    } else {
                        ProgType::from_section(&cs.name)
                    },
                    insns,
                });
            }
        }
        Ok(programs)
    }

    /// Links the program that starts with function `fi` of section `si`.
    fn link(&self, si: usize, fi: usize) -> Result<Vec<Insn>, ElfError> {
        let mut st = LinkState {
            out: Vec::new(),
            placed: HashMap::new(),
            queue: VecDeque::new(),
        };
        let program = &self.code[&si].functions[fi].name;
        self.place(&mut st, si, fi, program)?;
        while let Some((s, f)) = st.queue.pop_front() {
            self.fix_function(&mut st, s, f, program)?;
        }
        Ok(st.out)
    }

    /// Appends function `fi` of section `si` unless it is already placed;
    /// returns its first slot in the program.
    fn place(
        &self,
        st: &mut LinkState,
        si: usize,
        fi: usize,
        program: &str,
    ) -> Result<usize, ElfError> {
        if let Some(&base) = st.placed.get(&(si, fi)) {
            return Ok(base);
        }
        let cs = &self.code[&si];
        let f = &cs.functions[fi];
        let base = st.out.len();
        if base + (f.end - f.start) > MAX_PROGRAM_INSNS {
            return Err(ElfError::TooLarge {
                program: program.to_string(),
                max: MAX_PROGRAM_INSNS,
            });
        }
        st.out.extend_from_slice(&cs.insns[f.start..f.end]);
        st.placed.insert((si, fi), base);
        st.queue.push_back((si, fi));
        Ok(base)
    }

    /// Resolves every relocation and local call of a placed function.
    fn fix_function(
        &self,
        st: &mut LinkState,
        si: usize,
        fi: usize,
        program: &str,
    ) -> Result<(), ElfError> {
        let cs = &self.code[&si];
        let f = &cs.functions[fi];
        let base = st.placed[&(si, fi)];
        let mut slot = f.start;
        while slot < f.end {
            let at = Site {
                section: si,
                slot,
                pc: base + (slot - f.start),
            };
            let err = |problem| ElfError::Insn {
                section: cs.name.clone(),
                insn: slot,
                problem,
            };
            if let Some(kind) = self.btf.core.get(&(si, slot)) {
                return Err(err(InsnProblem::CoRe(kind)));
            }
            let insn = cs.insns[slot];
            let wide = insn.code == LD_IMM64;
            if wide {
                if slot + 1 >= f.end {
                    return Err(err(InsnProblem::TruncatedLdImm64));
                }
                if cs.relocs.contains_key(&(slot + 1)) {
                    return Err(err(InsnProblem::RelocationInsideLdImm64));
                }
            }
            match cs.relocs.get(&slot) {
                Some(reloc) => self.relocate(st, at, insn, reloc, program),
                None => self.fix_unrelocated(st, at, insn, program),
            }
            .map_err(|e| match e {
                LinkError::Insn(problem) => err(problem),
                LinkError::Elf(e) => e,
            })?;
            slot += if wide { 2 } else { 1 };
        }
        Ok(())
    }

    /// Applies the relocation of the instruction at `at`.
    fn relocate(
        &self,
        st: &mut LinkState,
        at: Site,
        insn: Insn,
        reloc: &Reloc,
        program: &str,
    ) -> Result<(), LinkError> {
        let sym = &self.file.symbols[reloc.symbol];
        // REL keeps the addend in the instruction; RELA in the record.
        let addend = reloc.addend.unwrap_or(i64::from(insn.imm));
        let mismatch = || {
            LinkError::Insn(InsnProblem::RelocationMismatch {
                rtype: reloc.rtype,
                code: insn.code,
            })
        };
        let Some(ts) = sym.section else {
            let name = sym.name.clone();
            return Err(LinkError::Insn(match insn.code {
                CALL if self.btf.ksyms.contains(&name) => InsnProblem::Kfunc(name),
                CALL => InsnProblem::UndefinedFunction(name),
                _ => InsnProblem::Extern(name),
            }));
        };
        let target = &self.file.sections[ts];
        let unsupported = || {
            LinkError::Insn(InsnProblem::UnsupportedTarget {
                symbol: symbol_label(sym, target),
                section: target.name.clone(),
            })
        };
        match insn.code {
            LD_IMM64 => {
                if !matches!(reloc.rtype, R_BPF_NONE | R_BPF_64_64) {
                    return Err(mismatch());
                }
                let offset = i64::try_from(sym.value)
                    .ok()
                    .and_then(|v| v.checked_add(addend))
                    .ok_or_else(|| LinkError::Insn(InsnProblem::Misaligned(sym.name.clone())))?;
                match target.kind {
                    SectionKind::BtfMaps | SectionKind::LegacyMaps => {
                        let map = u64::try_from(offset)
                            .ok()
                            .and_then(|o| self.maps.by_symbol.get(&(ts, o)))
                            .ok_or_else(|| {
                                LinkError::Insn(InsnProblem::UnknownMap {
                                    symbol: symbol_label(sym, target),
                                    section: target.name.clone(),
                                    offset,
                                })
                            })?;
                        st.set_lddw(at.pc, pseudo::MAP_IDX, *map, 0);
                    }
                    SectionKind::Data { .. } => {
                        let outside = || {
                            LinkError::Insn(InsnProblem::DataOffset {
                                section: target.name.clone(),
                                offset,
                                size: target.size,
                            })
                        };
                        let map = self.maps.by_data_section.get(&ts).ok_or_else(outside)?;
                        let off = u32::try_from(offset)
                            .ok()
                            .filter(|&o| u64::from(o) <= target.size)
                            .ok_or_else(outside)?;
                        st.set_lddw(at.pc, pseudo::MAP_IDX_VALUE, *map, off as i32);
                    }
                    SectionKind::Code if ts == at.section || Some(ts) == self.text => {
                        // The address of a function (a callback).
                        if offset % INSN_SIZE as i64 != 0 {
                            return Err(LinkError::Insn(InsnProblem::Misaligned(sym.name.clone())));
                        }
                        let pc = self.call_target(st, ts, offset / INSN_SIZE as i64, program)?;
                        let rel = relative(at.pc, pc);
                        st.out[at.pc].src = pseudo::FUNC;
                        st.out[at.pc].imm = rel;
                        st.out[at.pc + 1].imm = 0;
                    }
                    _ => return Err(unsupported()),
                }
            }
            CALL => {
                if !matches!(reloc.rtype, R_BPF_NONE | R_BPF_64_32) {
                    return Err(mismatch());
                }
                if target.kind != SectionKind::Code || (ts != at.section && Some(ts) != self.text) {
                    return Err(unsupported());
                }
                if !sym.value.is_multiple_of(INSN_SIZE as u64) {
                    return Err(LinkError::Insn(InsnProblem::Misaligned(sym.name.clone())));
                }
                let value = i64::try_from(sym.value / INSN_SIZE as u64).unwrap_or(i64::MAX);
                // libbpf: a global function's call has imm -1; a static
                // one's relocation is against the section symbol and imm + 1
                // is the callee's slot.
                let slot = match reloc.addend {
                    None => value.saturating_add(i64::from(insn.imm)).saturating_add(1),
                    Some(a) => value.saturating_add(a / INSN_SIZE as i64),
                };
                let pc = self.call_target(st, ts, slot, program)?;
                st.out[at.pc].src = PSEUDO_CALL;
                st.out[at.pc].imm = relative(at.pc, pc);
            }
            code => {
                return Err(LinkError::Insn(InsnProblem::RelocationMismatch {
                    rtype: reloc.rtype,
                    code,
                }))
            }
        }
        Ok(())
    }

    /// Checks an instruction without a relocation, and links calls within
    /// its section (which need none: their offset is relative already).
    fn fix_unrelocated(
        &self,
        st: &mut LinkState,
        at: Site,
        insn: Insn,
        program: &str,
    ) -> Result<(), LinkError> {
        let local = || i64::try_from(at.slot).unwrap_or(i64::MAX) + i64::from(insn.imm) + 1;
        match (insn.code, insn.src) {
            (CALL, PSEUDO_CALL) => {
                let pc = self.call_target(st, at.section, local(), program)?;
                st.out[at.pc].imm = relative(at.pc, pc);
            }
            (CALL, PSEUDO_KFUNC_CALL) => {
                return Err(LinkError::Insn(InsnProblem::KfuncId(insn.imm)))
            }
            (LD_IMM64, pseudo::FUNC) => {
                let pc = self.call_target(st, at.section, local(), program)?;
                st.out[at.pc].imm = relative(at.pc, pc);
            }
            (LD_IMM64, pseudo::BTF_ID) => return Err(LinkError::Insn(InsnProblem::BtfId)),
            (
                LD_IMM64,
                src
                @ (pseudo::MAP_FD | pseudo::MAP_VALUE | pseudo::MAP_IDX | pseudo::MAP_IDX_VALUE),
            ) => return Err(LinkError::Insn(InsnProblem::MapWithoutRelocation(src))),
            _ => {}
        }
        Ok(())
    }

    /// The program slot of slot `target` of code section `ts`, placing its
    /// function if needed.
    fn call_target(
        &self,
        st: &mut LinkState,
        ts: usize,
        target: i64,
        program: &str,
    ) -> Result<usize, LinkError> {
        let section_name = || self.file.sections[ts].name.clone();
        let Some(cs) = self.code.get(&ts) else {
            return Err(LinkError::Insn(InsnProblem::TargetOutOfBounds {
                section: section_name(),
                target,
            }));
        };
        let slot = usize::try_from(target)
            .ok()
            .filter(|&s| s < cs.insns.len())
            .ok_or_else(|| {
                LinkError::Insn(InsnProblem::TargetOutOfBounds {
                    section: section_name(),
                    target,
                })
            })?;
        let fi = cs.function_at(slot).ok_or_else(|| {
            LinkError::Insn(InsnProblem::TargetNotInFunction {
                section: section_name(),
                target: slot,
            })
        })?;
        let base = self.place(st, ts, fi, program).map_err(LinkError::Elf)?;
        Ok(base + (slot - cs.functions[fi].start))
    }
}

// ---------------------------------------------------------------------------
// Step 5: initial values of prog arrays and maps of maps.

/// R_BPF_64_ABS64: a 64-bit data address, what clang ≥ 13 writes in
/// `.rel.maps` (older versions write [`R_BPF_64_64`]).
const R_BPF_64_ABS64: u32 = 2;

impl MapTable {
    /// libbpf's `.values = { [i] = &x }`: each relocation in `.rel.maps`
    /// lies in the `values` member of a map, at 8 bytes per index, and
    /// points at a program (for a prog array) or at another map of `.maps`
    /// (for a map of maps). The target is found by section and offset
    /// (symbol value plus addend), so static programs, which clang
    /// relocates against their section symbol, work as well.
    fn btf_initial_values(
        &mut self,
        file: &ElfFile<'_>,
        code: &HashMap<usize, CodeSection>,
        programs: &[ProgramSpec],
    ) -> Result<(), ElfError> {
        let Some(section) = self.btf_section else {
            return Ok(());
        };
        let Some(set) = file.relocations.get(&section) else {
            return Ok(());
        };
        let maps_data = file.sections[section].data;
        for &(offset, reloc) in &set.relocs {
            let bad_reloc = |reason: String| ElfError::Section {
                section: set.section.clone(),
                reason: format!("relocation at offset {offset}: {reason}"),
            };
            if !matches!(reloc.rtype, R_BPF_NONE | R_BPF_64_64 | R_BPF_64_ABS64) {
                return Err(ElfError::RelocationType {
                    rtype: reloc.rtype,
                    section: set.section.clone(),
                    offset,
                });
            }
            let place = self
                .btf_places
                .iter()
                .find(|p| p.start <= offset && offset.saturating_add(8) <= p.end)
                .ok_or_else(|| bad_reloc("lies in no map of .maps".into()))?;
            let map = place.map;
            let def = &self.specs[map].def;
            let init_err = |reason: String| ElfError::MapInit {
                map: def.name.clone(),
                reason,
            };
            let Some(values) = place.values else {
                return Err(init_err(format!(
                    "relocation at offset {offset} of .maps, but the map has no `values` member"
                )));
            };
            let slot = offset - place.start;
            if slot < values || (slot - values) % 8 != 0 {
                return Err(init_err(format!(
                    "relocation at offset {offset} of .maps is not on a `values` element"
                )));
            }
            let index = u32::try_from((slot - values) / 8).unwrap_or(u32::MAX);
            let sym = file
                .symbols
                .get(reloc.symbol)
                .filter(|_| reloc.symbol != 0)
                .ok_or_else(|| {
                    bad_reloc(format!("symbol index {} is out of range", reloc.symbol))
                })?;
            // REL keeps the addend in the 8 bytes being relocated.
            let addend = match reloc.addend {
                Some(a) => a,
                None => usize::try_from(offset)
                    .ok()
                    .and_then(|o| maps_data.get(o..o.checked_add(8)?))
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(i64::from_le_bytes)
                    .ok_or_else(|| bad_reloc("past the end of .maps".into()))?,
            };
            let target = i64::try_from(sym.value)
                .ok()
                .and_then(|v| v.checked_add(addend))
                .and_then(|t| u64::try_from(t).ok());
            let target_section = sym.section.map(|s| &file.sections[s]);
            let label = match target_section {
                Some(ts) => symbol_label(sym, ts),
                None => sym.name.clone(),
            };
            let init = match def.map_type {
                MapType::ProgArray => {
                    let what = format!("\"{label}\"");
                    let func = sym
                        .section
                        .filter(|s| file.sections[*s].kind == SectionKind::Code)
                        .zip(target)
                        .and_then(|(ts, t)| {
                            let cs = code.get(&ts)?;
                            let f = cs
                                .functions
                                .iter()
                                .find(|f| (f.start * INSN_SIZE) as u64 == t)?;
                            Some((cs, f))
                        })
                        .ok_or_else(|| {
                            init_err(format!(
                                "values[{index}] must point to a program, but {what} is not a function"
                            ))
                        })?;
                    let (cs, f) = func;
                    if !programs
                        .iter()
                        .any(|p| p.section == cs.name && p.name == f.name)
                    {
                        return Err(init_err(format!(
                            "values[{index}] names \"{}\", a subprogram of section {}, not a program",
                            f.name, cs.name
                        )));
                    }
                    check_init_index(def, index, &format!("program \"{}\"", f.name))
                        .map_err(init_err)?;
                    MapInit::Program {
                        index,
                        name: f.name.clone(),
                        section: cs.name.clone(),
                    }
                }
                MapType::ArrayOfMaps | MapType::HashOfMaps => {
                    let inner = sym
                        .section
                        .filter(|&s| s == section)
                        .zip(target)
                        .and_then(|(s, t)| self.by_symbol.get(&(s, t)).copied())
                        .ok_or_else(|| {
                            init_err(format!(
                                "values[{index}] must point to a map of .maps, but \"{label}\" is not one"
                            ))
                        })?;
                    let inner_name = &self.specs[inner].def.name;
                    check_init_index(def, index, &format!("map \"{inner_name}\""))
                        .map_err(init_err)?;
                    MapInit::Map { index, map: inner }
                }
                other => {
                    return Err(init_err(format!(
                        "`values` initialisers are only for prog arrays and maps of maps, \
                         not {} maps",
                        other.name()
                    )))
                }
            };
            self.specs[map].init.push(init);
        }
        for spec in &mut self.specs {
            spec.init.sort_by_key(MapInit::index);
        }
        Ok(())
    }

    /// iproute2's tail-call sections: a section named `ID/KEY` (each a
    /// number, as `sscanf("%i/%i")` reads them) holds the program for slot
    /// `KEY` of the `bpf_elf_map` prog array whose `id` is `ID`
    /// (`bpf_fill_prog_arrays`). The section's first program is the one;
    /// sections whose `ID` names no prog array are left alone, as iproute2
    /// leaves them.
    fn tail_call_sections(&mut self, programs: &[ProgramSpec]) -> Result<(), ElfError> {
        if self.prog_array_ids.is_empty() {
            return Ok(());
        }
        let mut seen = HashSet::new();
        for p in programs {
            if !seen.insert(p.section.as_str()) {
                continue; // not the section's first program
            }
            let Some((id, key)) = p
                .section
                .split_once('/')
                .and_then(|(id, key)| Some((parse_c_uint(id)?, parse_c_uint(key)?)))
            else {
                continue;
            };
            let Some(&map) = self.prog_array_ids.get(&id) else {
                continue;
            };
            let def = &self.specs[map].def;
            check_init_index(
                def,
                key,
                &format!("program \"{}\" of section {}", p.name, p.section),
            )
            .map_err(|reason| ElfError::MapInit {
                map: def.name.clone(),
                reason,
            })?;
            self.specs[map].init.push(MapInit::Program {
                index: key,
                name: p.name.clone(),
                section: p.section.clone(),
            });
            self.specs[map].init.sort_by_key(MapInit::index);
        }
        Ok(())
    }
}

/// Checks that `index` can hold an initial value (`what`, for messages) of
/// map `def`: within `max_entries` for arrays, and a 4-byte key for a hash
/// of maps (the index is the key).
fn check_init_index(def: &MapDef, index: u32, what: &str) -> Result<(), String> {
    match def.map_type {
        MapType::HashOfMaps if def.key_size != 4 => Err(format!(
            "index {index} ({what}) needs 4-byte keys, but key_size is {}",
            def.key_size
        )),
        MapType::ProgArray | MapType::ArrayOfMaps if index >= def.max_entries => Err(format!(
            "index {index} ({what}) is past max_entries {}",
            def.max_entries
        )),
        _ => Ok(()),
    }
}

/// A non-negative number as C's `%i` reads it: decimal, `0x` hex or
/// `0`-prefixed octal.
fn parse_c_uint(s: &str) -> Option<u32> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u32::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

/// Where an instruction is: its section and slot there, and its slot in the
/// program being linked.
#[derive(Clone, Copy)]
struct Site {
    section: usize,
    slot: usize,
    pc: usize,
}

/// A linking failure: about the instruction (wrapped with its place by the
/// caller), or already complete.
enum LinkError {
    Insn(InsnProblem),
    Elf(ElfError),
}

impl LinkState {
    /// Rewrites the `lddw` at `pc` to a map form.
    fn set_lddw(&mut self, pc: usize, src: u8, map: usize, second_imm: i32) {
        // Map indices are bounded by the number of symbols, far below i32::MAX.
        self.out[pc].src = src;
        self.out[pc].imm = i32::try_from(map).unwrap_or(i32::MAX);
        self.out[pc + 1].imm = second_imm;
    }
}

/// The relative offset from the slot after `pc` to `target`, both slots of
/// one program.
fn relative(pc: usize, target: usize) -> i32 {
    // `place` keeps every program below MAX_PROGRAM_INSNS (10^6) slots, so
    // both fit in i64 and their difference in i32.
    const _: () = assert!(MAX_PROGRAM_INSNS < i32::MAX as usize);
    (target as i64 - pc as i64 - 1) as i32
}

/// An `object` parse failure: the ELF structure itself is broken.
fn malformed(e: ::object::read::Error) -> ElfError {
    ElfError::Malformed(e.to_string())
}

/// A symbol's name for messages (section symbols have none of their own).
fn symbol_label(sym: &Symbol, section: &Section<'_>) -> String {
    if sym.name.is_empty() {
        section.name.clone()
    } else {
        sym.name.clone()
    }
}
