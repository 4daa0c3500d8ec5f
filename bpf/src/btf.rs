//! BTF (BPF Type Format): a small typed model of the `.BTF` section, and the
//! two things the ELF loader needs from it.
//!
//! * **Map definitions.** libbpf's `SEC(".maps")` maps carry no bytes that
//!   matter; their whole definition lives in the *types*. `__uint(name, n)`
//!   declares a member `int (*name)[n]` (a pointer to an array whose element
//!   count is the value), `__type(name, T)` declares `T *name` (the size of `T`
//!   is the key or value size), and `__array(values, struct inner)` declares
//!   `struct inner *values[]` (the template of a map-in-map's inner maps).
//!   [`Btf::map_def`] reads such a struct into a [`MapDef`], following libbpf's
//!   `parse_btf_map_def` rule for rule, so an object means here what it means
//!   to libbpf.
//! * **CO-RE relocations.** [`core_relocations`] lists the CO-RE records of
//!   `.BTF.ext`, so the loader can refuse a program that needs them instead of
//!   running it with the compiler's guesses. Function and line info are
//!   skipped.
//!
//! # Untrusted input
//!
//! Every count and offset in the bytes is checked before use; nothing here
//! panics or allocates more than a small multiple of its input. Type chains
//! (typedef → const → array → …) are followed iteratively with libbpf's depth
//! limit of 32 links, so a cycle is an error ([`BtfError::TooDeep`]), never a
//! hang or a stack overflow. Every string offset is checked when the types are
//! parsed, so looking a name up can only fail on bad UTF-8.
//!
//! Only little-endian BTF is read, as only little-endian objects are loaded.

use crate::maps::{MapDef, MapType, Pinning};

/// A BTF type id. Id 0 is `void`; real types are numbered from 1 in order.
pub type TypeId = u32;

/// The magic number that opens `.BTF` and `.BTF.ext`.
pub const BTF_MAGIC: u16 = 0xeb9f;

/// How many links of a type chain are followed before giving up (libbpf's
/// `MAX_RESOLVE_DEPTH`).
pub const MAX_RESOLVE_DEPTH: usize = 32;

/// Cilium's own `pinning` value (`1 << 4`): replace the pinned map on load.
const CILIUM_PIN_REPLACE: u32 = 1 << 4;

/// Size of `struct btf_header`.
const HEADER_LEN: usize = 24;
/// Size of `struct btf_type` without its kind-specific tail.
const TYPE_LEN: usize = 12;
/// Size of a pointer on BPF.
const PTR_SIZE: u32 = 8;

/// One BTF type: its name and what kind of type it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Type {
    /// Offset of the name in the string section (0 for anonymous types);
    /// read it with [`Btf::name`].
    pub name_off: u32,
    /// The kind and its data.
    pub kind: Kind,
}

/// A struct or union member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Offset of the member's name in the string section.
    pub name_off: u32,
    /// The member's type.
    pub ty: TypeId,
    /// Bit offset (with a bitfield size in the top 8 bits when the struct's
    /// kind flag is set).
    pub offset: u32,
}

/// One variable of a `DATASEC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VarSecinfo {
    /// The `VAR` (or `FUNC`, for `.ksyms`) type.
    pub ty: TypeId,
    /// Offset in the section. Clang leaves it 0 in object files; the ELF
    /// symbol of the same name has the real one.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// The kinds of BTF types, with the data each one carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `BTF_KIND_INT`.
    Int {
        /// Size in bytes.
        size: u32,
        /// Encoding, offset and bit count, as stored.
        encoding: u32,
    },
    /// `BTF_KIND_PTR`.
    Ptr {
        /// Pointee.
        target: TypeId,
    },
    /// `BTF_KIND_ARRAY`.
    Array {
        /// Element type.
        elem: TypeId,
        /// Index type.
        index: TypeId,
        /// Number of elements.
        nelems: u32,
    },
    /// `BTF_KIND_STRUCT`.
    Struct {
        /// Size in bytes.
        size: u32,
        /// Members in declaration order.
        members: Vec<Member>,
    },
    /// `BTF_KIND_UNION`.
    Union {
        /// Size in bytes.
        size: u32,
        /// Members in declaration order.
        members: Vec<Member>,
    },
    /// `BTF_KIND_ENUM` (values are not kept).
    Enum {
        /// Size in bytes.
        size: u32,
    },
    /// `BTF_KIND_FWD`: a declared but undefined struct or union.
    Fwd,
    /// `BTF_KIND_TYPEDEF`.
    Typedef {
        /// Aliased type.
        target: TypeId,
    },
    /// `BTF_KIND_VOLATILE`.
    Volatile {
        /// Qualified type.
        target: TypeId,
    },
    /// `BTF_KIND_CONST`.
    Const {
        /// Qualified type.
        target: TypeId,
    },
    /// `BTF_KIND_RESTRICT`.
    Restrict {
        /// Qualified type.
        target: TypeId,
    },
    /// `BTF_KIND_FUNC`.
    Func {
        /// The `FUNC_PROTO`.
        proto: TypeId,
        /// Linkage (static, global, extern).
        linkage: u16,
    },
    /// `BTF_KIND_FUNC_PROTO`.
    FuncProto {
        /// Return type.
        ret: TypeId,
        /// Parameter types.
        params: Vec<TypeId>,
    },
    /// `BTF_KIND_VAR`.
    Var {
        /// The variable's type.
        target: TypeId,
        /// Linkage (static, global, extern).
        linkage: u32,
    },
    /// `BTF_KIND_DATASEC`.
    Datasec {
        /// Section size (0 in object files).
        size: u32,
        /// The section's variables.
        vars: Vec<VarSecinfo>,
    },
    /// `BTF_KIND_FLOAT`.
    Float {
        /// Size in bytes.
        size: u32,
    },
    /// `BTF_KIND_DECL_TAG`.
    DeclTag {
        /// Tagged type.
        target: TypeId,
        /// Member or parameter index, or -1 for the type itself.
        component: i32,
    },
    /// `BTF_KIND_TYPE_TAG`.
    TypeTag {
        /// Tagged type.
        target: TypeId,
    },
    /// `BTF_KIND_ENUM64` (values are not kept).
    Enum64 {
        /// Size in bytes.
        size: u32,
    },
}

impl Kind {
    /// bpftool's name for the kind (`STRUCT`, `PTR`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Int { .. } => "INT",
            Kind::Ptr { .. } => "PTR",
            Kind::Array { .. } => "ARRAY",
            Kind::Struct { .. } => "STRUCT",
            Kind::Union { .. } => "UNION",
            Kind::Enum { .. } => "ENUM",
            Kind::Fwd => "FWD",
            Kind::Typedef { .. } => "TYPEDEF",
            Kind::Volatile { .. } => "VOLATILE",
            Kind::Const { .. } => "CONST",
            Kind::Restrict { .. } => "RESTRICT",
            Kind::Func { .. } => "FUNC",
            Kind::FuncProto { .. } => "FUNC_PROTO",
            Kind::Var { .. } => "VAR",
            Kind::Datasec { .. } => "DATASEC",
            Kind::Float { .. } => "FLOAT",
            Kind::DeclTag { .. } => "DECL_TAG",
            Kind::TypeTag { .. } => "TYPE_TAG",
            Kind::Enum64 { .. } => "ENUM64",
        }
    }
}

/// Why BTF bytes could not be read, or a type could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    /// Shorter than the fixed header.
    #[error("BTF data is too short for its header ({len} bytes)")]
    ShortHeader {
        /// Length of the data.
        len: usize,
    },
    /// Wrong magic (a byte-swapped magic means big-endian BTF).
    #[error("bad BTF magic {magic:#06x} (only little-endian BTF is supported)")]
    BadMagic {
        /// The magic found.
        magic: u16,
    },
    /// A BTF version other than 1.
    #[error("unsupported BTF version {0}")]
    Version(u8),
    /// A header field is inconsistent.
    #[error("malformed BTF header: {0}")]
    Header(&'static str),
    /// A section named by the header lies outside the data.
    #[error("BTF {what} (offset {off}, length {len}) lies outside the data ({size} bytes)")]
    Bounds {
        /// Which section.
        what: &'static str,
        /// Its offset.
        off: u64,
        /// Its length.
        len: u64,
        /// Length of the data.
        size: usize,
    },
    /// The string section does not start and end with a NUL byte.
    #[error("BTF string section must start and end with a NUL byte")]
    Strings,
    /// A type's record runs past the end of the type section.
    #[error("BTF type {id} is truncated")]
    TruncatedType {
        /// Type id.
        id: TypeId,
    },
    /// A kind this parser does not know (so its size is unknown).
    #[error("BTF type {id} has unknown kind {kind}")]
    UnknownKind {
        /// Type id.
        id: TypeId,
        /// Kind number.
        kind: u32,
    },
    /// A name offset outside the string section.
    #[error("BTF type {id}: string offset {off} is out of range")]
    StringOffset {
        /// Type id whose record holds the offset.
        id: TypeId,
        /// The offset.
        off: u32,
    },
    /// A string offset from elsewhere (`.BTF.ext`) outside the string section.
    #[error("BTF string offset {off} is out of range")]
    NameOffset {
        /// The offset.
        off: u32,
    },
    /// A name that is not UTF-8.
    #[error("BTF string at offset {off} is not valid UTF-8")]
    Utf8 {
        /// The offset.
        off: u32,
    },
    /// A reference to a type id that does not exist (or to `void` where a
    /// type is needed).
    #[error("unknown BTF type {id}")]
    UnknownType {
        /// The id.
        id: TypeId,
    },
    /// A type with no size (function, forward declaration, void).
    #[error("BTF type {id} ({kind}) has no size")]
    NoSize {
        /// Type id.
        id: TypeId,
        /// Its kind.
        kind: &'static str,
    },
    /// A type chain longer than [`MAX_RESOLVE_DEPTH`], which includes every
    /// cycle.
    #[error("BTF type chain from type {id} is cyclic or longer than 32 links")]
    TooDeep {
        /// Where the chain starts.
        id: TypeId,
    },
    /// A size that does not fit in 32 bits.
    #[error("size of BTF type {id} does not fit in 32 bits")]
    SizeOverflow {
        /// Type id.
        id: TypeId,
    },
    /// `.BTF.ext` is malformed.
    #[error("malformed .BTF.ext: {0}")]
    Ext(&'static str),
}

/// Why a BTF-defined map could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapDefError {
    /// The variable's type could not be followed to its definition.
    #[error("map \"{map}\": {source}")]
    Type {
        /// Map name.
        map: String,
        /// What went wrong.
        #[source]
        source: BtfError,
    },
    /// The definition is not a struct.
    #[error("map \"{map}\": definition is a BTF {kind}, not a STRUCT")]
    NotStruct {
        /// Map name.
        map: String,
        /// The kind found.
        kind: &'static str,
    },
    /// One member of the definition is malformed.
    #[error("map \"{map}\": BTF member \"{member}\" {problem}")]
    Member {
        /// Map name.
        map: String,
        /// Member name.
        member: String,
        /// What is wrong with it.
        problem: MemberProblem,
    },
}

/// What is wrong with one member of a map definition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberProblem {
    /// The member's type chain names a missing type.
    #[error("refers to unknown type {id}")]
    UnknownType {
        /// The missing id.
        id: TypeId,
    },
    /// Any other BTF resolution failure.
    #[error("is invalid: {0}")]
    Btf(BtfError),
    /// A `__uint` member that is not a pointer to an array.
    #[error("is not a __uint(...) (a pointer to an array): found {found}")]
    NotUint {
        /// Kind found where the pointer or array should be.
        found: &'static str,
    },
    /// A `__type` member that is not a pointer.
    #[error("is not a __type(...) (a pointer): found {found}")]
    NotType {
        /// Kind found.
        found: &'static str,
    },
    /// An explicit size disagrees with the size of the declared type.
    #[error("has size {from_type}, but the map says {what} = {explicit}")]
    Conflict {
        /// `key_size` or `value_size`.
        what: &'static str,
        /// The explicit size.
        explicit: u32,
        /// The size of the type.
        from_type: u32,
    },
    /// A pinning value libbpf does not define.
    #[error("has unsupported pinning value {0} (LIBBPF_PIN_NONE = 0, LIBBPF_PIN_BY_NAME = 1 and Cilium's PIN_REPLACE = 16 are known)")]
    Pinning(u32),
    /// A malformed `values` member.
    #[error("{0}")]
    Values(&'static str),
    /// A member libbpf does not define.
    #[error("is not a known map attribute")]
    Unknown,
}

impl From<BtfError> for MemberProblem {
    fn from(e: BtfError) -> MemberProblem {
        match e {
            BtfError::UnknownType { id } => MemberProblem::UnknownType { id },
            e => MemberProblem::Btf(e),
        }
    }
}

/// A parsed `.BTF` section: the types (ids 1..) and the string section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Btf {
    /// `types[i]` has id `i + 1`.
    types: Vec<Type>,
    strings: Vec<u8>,
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.bytes(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Reads a little-endian `u16`/`u32` at `off` of `data`.
fn le_u16(data: &[u8], off: usize) -> Option<u16> {
    let b = data.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn le_u32(data: &[u8], off: usize) -> Option<u32> {
    let b = data.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The sub-slice `[base + off, base + off + len)` of `data`, checked.
fn subslice<'a>(
    data: &'a [u8],
    base: usize,
    off: u32,
    len: u32,
    what: &'static str,
) -> Result<&'a [u8], BtfError> {
    let bounds = || BtfError::Bounds {
        what,
        off: off.into(),
        len: len.into(),
        size: data.len(),
    };
    let start = base.checked_add(off as usize).ok_or_else(bounds)?;
    let end = start.checked_add(len as usize).ok_or_else(bounds)?;
    data.get(start..end).ok_or_else(bounds)
}

impl Btf {
    /// Parses the contents of a `.BTF` section.
    ///
    /// # Errors
    /// A [`BtfError`] for a malformed header, a truncated or unknown type
    /// record, or a name offset outside the string section.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if data.len() < HEADER_LEN {
            return Err(BtfError::ShortHeader { len: data.len() });
        }
        let field = |off| le_u32(data, off).ok_or(BtfError::ShortHeader { len: data.len() });
        let magic = le_u16(data, 0).ok_or(BtfError::ShortHeader { len: data.len() })?;
        if magic != BTF_MAGIC {
            return Err(BtfError::BadMagic { magic });
        }
        if data[2] != 1 {
            return Err(BtfError::Version(data[2]));
        }
        let hdr_len = field(4)? as usize;
        if hdr_len < HEADER_LEN || hdr_len > data.len() {
            return Err(BtfError::Header(
                "hdr_len is smaller than the header or past the data",
            ));
        }
        let type_data = subslice(data, hdr_len, field(8)?, field(12)?, "type section")?;
        let strings = subslice(data, hdr_len, field(16)?, field(20)?, "string section")?;
        if strings.first() != Some(&0) || strings.last() != Some(&0) {
            return Err(BtfError::Strings);
        }
        let mut btf = Btf {
            types: Vec::new(),
            strings: strings.to_vec(),
        };
        let mut r = Reader::new(type_data);
        while r.remaining() > 0 {
            let id = TypeId::try_from(btf.types.len() + 1)
                .map_err(|_| BtfError::Header("too many types"))?;
            let ty = btf.parse_type(&mut r, id)?;
            btf.types.push(ty);
        }
        Ok(btf)
    }

    /// Reads one type record and checks its string offsets.
    fn parse_type(&self, r: &mut Reader<'_>, id: TypeId) -> Result<Type, BtfError> {
        let short = || BtfError::TruncatedType { id };
        let name_off = r.u32().ok_or_else(short)?;
        let info = r.u32().ok_or_else(short)?;
        let size_or_type = r.u32().ok_or_else(short)?;
        let vlen = (info & 0xffff) as usize;
        let kind_no = (info >> 24) & 0x1f;
        self.check_str(id, name_off)?;
        let members = |r: &mut Reader<'_>| -> Result<Vec<Member>, BtfError> {
            if r.remaining() < vlen.saturating_mul(TYPE_LEN) {
                return Err(short());
            }
            (0..vlen)
                .map(|_| {
                    let m = Member {
                        name_off: r.u32().ok_or_else(short)?,
                        ty: r.u32().ok_or_else(short)?,
                        offset: r.u32().ok_or_else(short)?,
                    };
                    self.check_str(id, m.name_off)?;
                    Ok(m)
                })
                .collect()
        };
        let kind = match kind_no {
            1 => Kind::Int {
                size: size_or_type,
                encoding: r.u32().ok_or_else(short)?,
            },
            2 => Kind::Ptr {
                target: size_or_type,
            },
            3 => Kind::Array {
                elem: r.u32().ok_or_else(short)?,
                index: r.u32().ok_or_else(short)?,
                nelems: r.u32().ok_or_else(short)?,
            },
            4 => Kind::Struct {
                size: size_or_type,
                members: members(r)?,
            },
            5 => Kind::Union {
                size: size_or_type,
                members: members(r)?,
            },
            6 => {
                r.bytes(vlen.saturating_mul(8)).ok_or_else(short)?;
                Kind::Enum { size: size_or_type }
            }
            7 => Kind::Fwd,
            8 => Kind::Typedef {
                target: size_or_type,
            },
            9 => Kind::Volatile {
                target: size_or_type,
            },
            10 => Kind::Const {
                target: size_or_type,
            },
            11 => Kind::Restrict {
                target: size_or_type,
            },
            12 => Kind::Func {
                proto: size_or_type,
                linkage: vlen as u16,
            },
            13 => {
                if r.remaining() < vlen.saturating_mul(8) {
                    return Err(short());
                }
                let params = (0..vlen)
                    .map(|_| {
                        let name_off = r.u32().ok_or_else(short)?;
                        self.check_str(id, name_off)?;
                        r.u32().ok_or_else(short)
                    })
                    .collect::<Result<_, _>>()?;
                Kind::FuncProto {
                    ret: size_or_type,
                    params,
                }
            }
            14 => Kind::Var {
                target: size_or_type,
                linkage: r.u32().ok_or_else(short)?,
            },
            15 => {
                if r.remaining() < vlen.saturating_mul(TYPE_LEN) {
                    return Err(short());
                }
                let vars = (0..vlen)
                    .map(|_| {
                        Ok(VarSecinfo {
                            ty: r.u32().ok_or_else(short)?,
                            offset: r.u32().ok_or_else(short)?,
                            size: r.u32().ok_or_else(short)?,
                        })
                    })
                    .collect::<Result<_, BtfError>>()?;
                Kind::Datasec {
                    size: size_or_type,
                    vars,
                }
            }
            16 => Kind::Float { size: size_or_type },
            17 => Kind::DeclTag {
                target: size_or_type,
                component: r.u32().ok_or_else(short)? as i32,
            },
            18 => Kind::TypeTag {
                target: size_or_type,
            },
            19 => {
                r.bytes(vlen.saturating_mul(TYPE_LEN)).ok_or_else(short)?;
                Kind::Enum64 { size: size_or_type }
            }
            kind => return Err(BtfError::UnknownKind { id, kind }),
        };
        Ok(Type { name_off, kind })
    }

    fn check_str(&self, id: TypeId, off: u32) -> Result<(), BtfError> {
        if (off as usize) < self.strings.len() {
            Ok(())
        } else {
            Err(BtfError::StringOffset { id, off })
        }
    }

    /// Number of types, not counting `void`; valid ids are `1..=len()`.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether there are no types at all.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The type with id `id`.
    ///
    /// # Errors
    /// [`BtfError::UnknownType`] for `void` (id 0) and for ids past the end.
    pub fn get(&self, id: TypeId) -> Result<&Type, BtfError> {
        (id as usize)
            .checked_sub(1)
            .and_then(|i| self.types.get(i))
            .ok_or(BtfError::UnknownType { id })
    }

    /// The string at offset `off` of the string section (type and member
    /// names; `""` for anonymous ones).
    ///
    /// # Errors
    /// [`BtfError::Utf8`] for a name that is not UTF-8, and
    /// [`BtfError::NameOffset`] for an offset outside the section (which
    /// never happens for offsets taken from this `Btf`'s types).
    pub fn name(&self, off: u32) -> Result<&str, BtfError> {
        let tail = self
            .strings
            .get(off as usize..)
            .ok_or(BtfError::NameOffset { off })?;
        // The section ends with a NUL (checked in `parse`), so one is found.
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).map_err(|_| BtfError::Utf8 { off })
    }

    /// Follows typedefs and qualifiers (`const`, `volatile`, `restrict`,
    /// type tags) from `id` to the first other type, as libbpf's
    /// `skip_mods_and_typedefs` does. `void` is returned as 0.
    ///
    /// # Errors
    /// [`BtfError::UnknownType`] and [`BtfError::TooDeep`].
    pub fn skip_mods_and_typedefs(&self, id: TypeId) -> Result<TypeId, BtfError> {
        let mut cur = id;
        for _ in 0..MAX_RESOLVE_DEPTH {
            if cur == 0 {
                return Ok(0);
            }
            match self.get(cur)?.kind {
                Kind::Typedef { target }
                | Kind::Volatile { target }
                | Kind::Const { target }
                | Kind::Restrict { target }
                | Kind::TypeTag { target } => cur = target,
                _ => return Ok(cur),
            }
        }
        Err(BtfError::TooDeep { id })
    }

    /// The size in bytes of type `id`, as libbpf's `btf__resolve_size`
    /// computes it: through typedefs, qualifiers, variables and tags, with
    /// arrays multiplied out and pointers 8 bytes.
    ///
    /// # Errors
    /// [`BtfError::NoSize`] for void, functions and forward declarations,
    /// [`BtfError::UnknownType`], [`BtfError::TooDeep`], and
    /// [`BtfError::SizeOverflow`] when the size does not fit in 32 bits.
    pub fn resolve_size(&self, id: TypeId) -> Result<u32, BtfError> {
        let mut nelems: u32 = 1;
        let mut cur = id;
        for _ in 0..MAX_RESOLVE_DEPTH {
            if cur == 0 {
                return Err(BtfError::NoSize {
                    id: 0,
                    kind: "void",
                });
            }
            let size = match &self.get(cur)?.kind {
                Kind::Int { size, .. }
                | Kind::Struct { size, .. }
                | Kind::Union { size, .. }
                | Kind::Enum { size }
                | Kind::Enum64 { size }
                | Kind::Datasec { size, .. }
                | Kind::Float { size } => *size,
                Kind::Ptr { .. } => PTR_SIZE,
                Kind::Typedef { target }
                | Kind::Volatile { target }
                | Kind::Const { target }
                | Kind::Restrict { target }
                | Kind::Var { target, .. }
                | Kind::DeclTag { target, .. }
                | Kind::TypeTag { target } => {
                    cur = *target;
                    continue;
                }
                Kind::Array {
                    elem, nelems: n, ..
                } => {
                    nelems = nelems
                        .checked_mul(*n)
                        .ok_or(BtfError::SizeOverflow { id })?;
                    cur = *elem;
                    continue;
                }
                k @ (Kind::Fwd | Kind::Func { .. } | Kind::FuncProto { .. }) => {
                    return Err(BtfError::NoSize {
                        id: cur,
                        kind: k.name(),
                    })
                }
            };
            return size
                .checked_mul(nelems)
                .ok_or(BtfError::SizeOverflow { id });
        }
        Err(BtfError::TooDeep { id })
    }

    /// The `DATASEC` called `name` (`.maps`, `.ksyms`, ...), with its id.
    ///
    /// # Errors
    /// [`BtfError::Utf8`] if a `DATASEC`'s name is not UTF-8.
    pub fn datasec(&self, name: &str) -> Result<Option<(TypeId, &[VarSecinfo])>, BtfError> {
        for (i, t) in self.types.iter().enumerate() {
            if let Kind::Datasec { vars, .. } = &t.kind {
                if self.name(t.name_off)? == name {
                    // `i + 1` fits: `parse` numbered every type as a TypeId.
                    return Ok(Some((i as TypeId + 1, vars)));
                }
            }
        }
        Ok(None)
    }

    /// Reads the map definition struct that the `.maps` variable `name` has
    /// as its type (`var_type`, the `VAR`'s target).
    ///
    /// Members: `type`, `max_entries`, `map_flags`, `key_size`, `value_size`,
    /// `pinning` (`LIBBPF_PIN_NONE`, `LIBBPF_PIN_BY_NAME`, and Cilium's
    /// `PIN_REPLACE`, read as none), `numa_node` and `map_extra` (read, then
    /// ignored) as `__uint`; `key` and `value` as `__type`, whose sizes must agree with
    /// explicit `key_size`/`value_size`; `values` as `__array`, for
    /// map-in-map (the inner template, named `"<name>.inner"`, becomes
    /// [`MapDef::inner`], and `value_size` becomes 4) and prog arrays
    /// (function prototypes; `value_size` becomes 4). Anything else is an
    /// error, as in libbpf.
    ///
    /// # Errors
    /// A [`MapDefError`] naming the map and, where one is at fault, the member.
    pub fn map_def(&self, name: &str, var_type: TypeId) -> Result<MapDef, MapDefError> {
        self.map_def_at(name, var_type, false)
    }

    fn map_def_at(&self, name: &str, ty: TypeId, is_inner: bool) -> Result<MapDef, MapDefError> {
        let type_err = |source| MapDefError::Type {
            map: name.to_string(),
            source,
        };
        let id = self.skip_mods_and_typedefs(ty).map_err(type_err)?;
        let def_ty = self.get(id).map_err(type_err)?;
        let Kind::Struct { members, .. } = &def_ty.kind else {
            return Err(MapDefError::NotStruct {
                map: name.to_string(),
                kind: def_ty.kind.name(),
            });
        };

        let mut def = MapDef {
            name: name.to_string(),
            map_type: MapType::Other(0),
            key_size: 0,
            value_size: 0,
            max_entries: 0,
            flags: 0,
            pinning: Pinning::None,
            inner: None,
        };
        let mut key = Sizes::default();
        let mut value = Sizes::default();
        let mut values: Option<(&str, TypeId)> = None;
        for m in members {
            let member = self.name(m.name_off).map_err(type_err)?;
            let at = |problem| MapDefError::Member {
                map: name.to_string(),
                member: member.to_string(),
                problem,
            };
            match member {
                "type" => def.map_type = MapType::from_u32(self.uint_attr(m.ty).map_err(at)?),
                "max_entries" => def.max_entries = self.uint_attr(m.ty).map_err(at)?,
                "map_flags" => def.flags = self.uint_attr(m.ty).map_err(at)?,
                "key_size" => key.explicit = Some(self.uint_attr(m.ty).map_err(at)?),
                "value_size" => value.explicit = Some(self.uint_attr(m.ty).map_err(at)?),
                "key" => key.from_type = Some(self.type_attr_size(m.ty).map_err(at)?),
                "value" => value.from_type = Some(self.type_attr_size(m.ty).map_err(at)?),
                "pinning" => {
                    def.pinning = match self.uint_attr(m.ty).map_err(at)? {
                        0 => Pinning::None,
                        1 => Pinning::ByName,
                        // Cilium's CILIUM_PIN_REPLACE: a new map replaces
                        // the pinned one on every load, so nothing is kept,
                        // which is what an unpinned map gives.
                        CILIUM_PIN_REPLACE => Pinning::None,
                        v => return Err(at(MemberProblem::Pinning(v))),
                    }
                }
                "numa_node" | "map_extra" => {
                    self.uint_attr(m.ty).map_err(at)?;
                }
                "values" => values = Some((member, m.ty)),
                _ => return Err(at(MemberProblem::Unknown)),
            }
        }
        let member_err = |member: &str, problem| MapDefError::Member {
            map: name.to_string(),
            member: member.to_string(),
            problem,
        };
        def.key_size = key.resolve("key_size").map_err(|p| member_err("key", p))?;
        def.value_size = value
            .resolve("value_size")
            .map_err(|p| member_err("value", p))?;

        if let Some((member, ty)) = values {
            let at = |problem| member_err(member, problem);
            if is_inner {
                return Err(at(MemberProblem::Values(
                    "defines a map-in-map inside an inner map template (nested map-in-map is not supported)",
                )));
            }
            if def.value_size != 0 && def.value_size != 4 {
                return Err(at(MemberProblem::Conflict {
                    what: "value_size",
                    explicit: def.value_size,
                    from_type: 4,
                }));
            }
            def.value_size = 4;
            let target = self.values_target(ty).map_err(at)?;
            let target_kind = &self.get(target).map_err(|e| at(e.into()))?.kind;
            match def.map_type {
                MapType::ArrayOfMaps | MapType::HashOfMaps => {
                    if !matches!(target_kind, Kind::Struct { .. }) {
                        return Err(at(MemberProblem::Values(
                            "must point to an inner map definition struct (__array(values, struct {...}))",
                        )));
                    }
                    let inner = self.map_def_at(&format!("{name}.inner"), target, true)?;
                    def.inner = Some(Box::new(inner));
                }
                MapType::ProgArray => {
                    if !matches!(target_kind, Kind::FuncProto { .. }) {
                        return Err(at(MemberProblem::Values(
                            "of a prog array must point to function prototypes (__array(values, int (void *)))",
                        )));
                    }
                }
                _ => {
                    return Err(at(MemberProblem::Values(
                        "is only valid for map-in-map and prog array maps",
                    )))
                }
            }
        }
        Ok(def)
    }

    /// Where the initial values of the `.maps` variable `name` begin: the
    /// byte offset of the `values` member in the definition struct that
    /// `var_type` (the `VAR`'s target) names, or `None` if it has no such
    /// member. libbpf's `.values = { [i] = &x }` puts one 8-byte pointer per
    /// index there, each with a relocation in `.rel.maps`.
    ///
    /// # Errors
    /// A [`MapDefError`] if the type cannot be followed to a struct, or the
    /// member does not start on a byte boundary.
    pub fn map_values_offset(
        &self,
        name: &str,
        var_type: TypeId,
    ) -> Result<Option<u32>, MapDefError> {
        let type_err = |source| MapDefError::Type {
            map: name.to_string(),
            source,
        };
        let id = self.skip_mods_and_typedefs(var_type).map_err(type_err)?;
        let def_ty = self.get(id).map_err(type_err)?;
        let Kind::Struct { members, .. } = &def_ty.kind else {
            return Err(MapDefError::NotStruct {
                map: name.to_string(),
                kind: def_ty.kind.name(),
            });
        };
        for m in members {
            if self.name(m.name_off).map_err(type_err)? != "values" {
                continue;
            }
            // A pointer array is never a bitfield, so even with the struct's
            // kind flag set the top 8 bits (the bitfield size) are zero.
            if m.offset % 8 != 0 {
                return Err(MapDefError::Member {
                    map: name.to_string(),
                    member: "values".into(),
                    problem: MemberProblem::Values("does not start on a byte boundary"),
                });
            }
            return Ok(Some(m.offset / 8));
        }
        Ok(None)
    }

    /// Reads a `__uint(name, n)` member: `int (*name)[n]`, giving `n`.
    fn uint_attr(&self, ty: TypeId) -> Result<u32, MemberProblem> {
        let ptr = self.get(self.skip_mods_and_typedefs(ty)?)?;
        let Kind::Ptr { target } = ptr.kind else {
            return Err(MemberProblem::NotUint {
                found: ptr.kind.name(),
            });
        };
        let array = self.get(target)?;
        match array.kind {
            Kind::Array { nelems, .. } => Ok(nelems),
            ref k => Err(MemberProblem::NotUint { found: k.name() }),
        }
    }

    /// Reads a `__type(name, T)` member: `T *name`, giving the size of `T`.
    fn type_attr_size(&self, ty: TypeId) -> Result<u32, MemberProblem> {
        let ptr = self.get(ty)?;
        let Kind::Ptr { target } = ptr.kind else {
            return Err(MemberProblem::NotType {
                found: ptr.kind.name(),
            });
        };
        Ok(self.resolve_size(target)?)
    }

    /// Reads an `__array(values, T)` member: `T *values[]`, giving `T`'s id
    /// (after typedefs and qualifiers).
    fn values_target(&self, ty: TypeId) -> Result<TypeId, MemberProblem> {
        let Kind::Array { elem, .. } = self.get(ty)?.kind else {
            return Err(MemberProblem::Values(
                "must be an array of pointers (__array(values, ...))",
            ));
        };
        let Kind::Ptr { target } = self.get(self.skip_mods_and_typedefs(elem)?)?.kind else {
            return Err(MemberProblem::Values(
                "must be an array of pointers (__array(values, ...))",
            ));
        };
        Ok(self.skip_mods_and_typedefs(target)?)
    }
}

/// A key or value size as the definition gives it: explicitly, through a
/// type, or both (then they must agree).
#[derive(Default)]
struct Sizes {
    explicit: Option<u32>,
    from_type: Option<u32>,
}

impl Sizes {
    fn resolve(&self, what: &'static str) -> Result<u32, MemberProblem> {
        match (self.explicit, self.from_type) {
            (Some(explicit), Some(from_type)) if explicit != from_type => {
                Err(MemberProblem::Conflict {
                    what,
                    explicit,
                    from_type,
                })
            }
            (e, t) => Ok(e.or(t).unwrap_or(0)),
        }
    }
}

/// One CO-RE relocation record of `.BTF.ext`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreRelocation {
    /// The code section it applies to.
    pub section: String,
    /// Byte offset of the instruction within that section.
    pub insn_off: u32,
    /// The local type the access is relative to.
    pub type_id: TypeId,
    /// `enum bpf_core_relo_kind`.
    pub kind: u32,
}

impl CoreRelocation {
    /// libbpf's name for the relocation kind.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            0 => "field_byte_offset",
            1 => "field_byte_size",
            2 => "field_exists",
            3 => "field_signed",
            4 => "field_lshift_u64",
            5 => "field_rshift_u64",
            6 => "local_type_id",
            7 => "target_type_id",
            8 => "type_exists",
            9 => "type_size",
            10 => "enumval_exists",
            11 => "enumval_value",
            12 => "type_matches",
            _ => "unknown",
        }
    }
}

/// Size of `struct bpf_core_relo`.
const CORE_RELO_LEN: u32 = 16;

/// Lists the CO-RE relocation records of a `.BTF.ext` section; section names
/// are looked up in `btf`. An extension header too old to have a CO-RE part
/// gives an empty list.
///
/// # Errors
/// [`BtfError::Ext`] for a malformed header or record table, and name lookup
/// errors.
pub fn core_relocations(ext: &[u8], btf: &Btf) -> Result<Vec<CoreRelocation>, BtfError> {
    let field = |off| le_u32(ext, off).ok_or(BtfError::Ext("header is truncated"));
    if le_u16(ext, 0).ok_or(BtfError::Ext("header is truncated"))? != BTF_MAGIC {
        return Err(BtfError::Ext("bad magic"));
    }
    let hdr_len = field(4)? as usize;
    if hdr_len > ext.len() || hdr_len < 8 {
        return Err(BtfError::Ext(
            "hdr_len is smaller than the header or past the data",
        ));
    }
    // The CO-RE part arrived with a longer header (32 bytes).
    if hdr_len < 32 {
        return Ok(Vec::new());
    }
    let (off, len) = (field(24)?, field(28)?);
    if len == 0 {
        return Ok(Vec::new());
    }
    let data = subslice(ext, hdr_len, off, len, ".BTF.ext CO-RE part")?;
    let mut r = Reader::new(data);
    let rec_size = r.u32().ok_or(BtfError::Ext("CO-RE part is truncated"))?;
    if rec_size < CORE_RELO_LEN {
        return Err(BtfError::Ext(
            "CO-RE record size is smaller than struct bpf_core_relo",
        ));
    }
    let mut out = Vec::new();
    while r.remaining() > 0 {
        let truncated = BtfError::Ext("CO-RE section table is truncated");
        let sec_name_off = r.u32().ok_or(truncated.clone())?;
        let num_info = r.u32().ok_or(truncated.clone())?;
        let section = btf.name(sec_name_off)?.to_string();
        let table_len = (num_info as usize)
            .checked_mul(rec_size as usize)
            .ok_or(truncated.clone())?;
        let table = r.bytes(table_len).ok_or(truncated)?;
        for rec in table.chunks_exact(rec_size as usize) {
            let word = |i: usize| le_u32(rec, i * 4).unwrap_or(0);
            out.push(CoreRelocation {
                section: section.clone(),
                insn_off: word(0),
                type_id: word(1),
                kind: word(3),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes BTF the way clang does, one type at a time.
    struct Builder {
        types: Vec<u32>,
        strings: Vec<u8>,
        next_id: TypeId,
    }

    impl Builder {
        fn new() -> Builder {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        /// Adds a type record (name, kind, vlen, size-or-type, tail words).
        fn ty(&mut self, name: &str, kind: u32, vlen: u32, st: u32, tail: &[u32]) -> TypeId {
            let name = self.str(name);
            self.types.extend_from_slice(&[name, kind << 24 | vlen, st]);
            self.types.extend_from_slice(tail);
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, size: u32) -> TypeId {
            self.ty(name, 1, 0, size, &[size * 8])
        }

        fn ptr(&mut self, to: TypeId) -> TypeId {
            self.ty("", 2, 0, to, &[])
        }

        fn array(&mut self, elem: TypeId, nelems: u32) -> TypeId {
            self.ty("", 3, 0, 0, &[elem, elem, nelems])
        }

        fn typedef(&mut self, name: &str, to: TypeId) -> TypeId {
            self.ty(name, 8, 0, to, &[])
        }

        fn konst(&mut self, to: TypeId) -> TypeId {
            self.ty("", 10, 0, to, &[])
        }

        fn strukt(&mut self, name: &str, size: u32, members: &[(&str, TypeId)]) -> TypeId {
            let mut tail = Vec::new();
            for (i, (n, t)) in members.iter().enumerate() {
                tail.extend_from_slice(&[self.str(n), *t, i as u32 * 64]);
            }
            self.ty(name, 4, members.len() as u32, size, &tail)
        }

        /// `__uint(name, n)`: a pointer to an array of `n` ints.
        fn uint(&mut self, int: TypeId, n: u32) -> TypeId {
            let a = self.array(int, n);
            self.ptr(a)
        }

        fn bytes(&self) -> Vec<u8> {
            let type_len = (self.types.len() * 4) as u32;
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for v in [24u32, 0, type_len, type_len, self.strings.len() as u32] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for t in &self.types {
                out.extend_from_slice(&t.to_le_bytes());
            }
            out.extend_from_slice(&self.strings);
            out
        }

        fn parse(&self) -> Btf {
            Btf::parse(&self.bytes()).unwrap()
        }
    }

    #[test]
    fn resolves_sizes_through_chains() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let td = b.typedef("u32", int);
        let c = b.konst(td);
        let arr = b.array(c, 10);
        let p = b.ptr(arr);
        let s = b.strukt("pair", 16, &[("a", arr), ("p", p)]);
        let btf = b.parse();
        assert_eq!(btf.resolve_size(c), Ok(4));
        assert_eq!(btf.resolve_size(arr), Ok(40));
        assert_eq!(btf.resolve_size(p), Ok(8));
        assert_eq!(btf.resolve_size(s), Ok(16));
        assert_eq!(btf.skip_mods_and_typedefs(c), Ok(int));
        assert_eq!(btf.name(btf.get(td).unwrap().name_off), Ok("u32"));
        assert_eq!(btf.resolve_size(99), Err(BtfError::UnknownType { id: 99 }));
        assert!(matches!(btf.resolve_size(0), Err(BtfError::NoSize { .. })));
    }

    #[test]
    fn cycles_and_overflows_are_errors() {
        let mut b = Builder::new();
        let td = b.typedef("loop", 2);
        let c = b.konst(td);
        let int = b.int("int", 4);
        let huge = b.array(int, u32::MAX);
        let btf = b.parse();
        assert_eq!(btf.resolve_size(td), Err(BtfError::TooDeep { id: td }));
        assert_eq!(
            btf.skip_mods_and_typedefs(c),
            Err(BtfError::TooDeep { id: c })
        );
        assert_eq!(
            btf.resolve_size(huge),
            Err(BtfError::SizeOverflow { id: huge })
        );
    }

    #[test]
    fn malformed_headers_and_records() {
        assert!(matches!(
            Btf::parse(&[0; 8]),
            Err(BtfError::ShortHeader { .. })
        ));
        let mut bytes = Builder::new().bytes();
        bytes.swap(0, 1);
        assert!(matches!(Btf::parse(&bytes), Err(BtfError::BadMagic { .. })));

        // A struct that claims 3 members but has none.
        let mut b = Builder::new();
        b.ty("", 4, 3, 8, &[]);
        assert_eq!(
            Btf::parse(&b.bytes()),
            Err(BtfError::TruncatedType { id: 1 })
        );
        // A name past the strings.
        let mut b = Builder::new();
        b.types.extend_from_slice(&[99, 1 << 24, 4, 32]);
        assert_eq!(
            Btf::parse(&b.bytes()),
            Err(BtfError::StringOffset { id: 1, off: 99 })
        );
        // An unknown kind.
        let mut b = Builder::new();
        b.ty("", 31, 0, 0, &[]);
        assert_eq!(
            Btf::parse(&b.bytes()),
            Err(BtfError::UnknownKind { id: 1, kind: 31 })
        );
    }

    #[test]
    fn reads_map_definitions() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let u64t = b.int("u64", 8);
        let hash = b.uint(int, 1);
        let aom = b.uint(int, 12);
        let max = b.uint(int, 1024);
        let by_name = b.uint(int, 1);
        let key = b.ptr(int);
        let value = b.ptr(u64t);
        let flows = b.strukt(
            "",
            40,
            &[
                ("type", hash),
                ("key", key),
                ("value", value),
                ("max_entries", max),
                ("pinning", by_name),
            ],
        );
        let inner_ptr = b.ptr(flows);
        let values = b.array(inner_ptr, 0);
        let outer = b.strukt(
            "",
            24,
            &[("type", aom), ("max_entries", max), ("values", values)],
        );
        let bad_values = b.strukt("", 16, &[("type", aom), ("values", 57)]);
        let four = b.uint(int, 4);
        let conflict = b.strukt("", 16, &[("key_size", four), ("key", value)]);
        let unknown = b.strukt("", 8, &[("colour", hash)]);
        let btf = b.parse();

        let def = btf.map_def("flows", flows).unwrap();
        assert_eq!(
            def,
            MapDef {
                name: "flows".into(),
                map_type: MapType::Hash,
                key_size: 4,
                value_size: 8,
                max_entries: 1024,
                flags: 0,
                pinning: Pinning::ByName,
                inner: None,
            }
        );
        let def = btf.map_def("outer", outer).unwrap();
        assert_eq!((def.map_type, def.value_size), (MapType::ArrayOfMaps, 4));
        // The builder places member i at bit 64 * i.
        assert_eq!(btf.map_values_offset("outer", outer), Ok(Some(16)));
        assert_eq!(btf.map_values_offset("flows", flows), Ok(None));
        assert!(matches!(
            btf.map_values_offset("i", int),
            Err(MapDefError::NotStruct { .. })
        ));
        let inner = def.inner.unwrap();
        assert_eq!(
            (inner.name.as_str(), inner.map_type),
            ("outer.inner", MapType::Hash)
        );

        let e = btf.map_def("flows", bad_values).unwrap_err();
        assert_eq!(
            e.to_string(),
            "map \"flows\": BTF member \"values\" refers to unknown type 57"
        );
        let e = btf.map_def("c", conflict).unwrap_err();
        assert_eq!(
            e.to_string(),
            "map \"c\": BTF member \"key\" has size 8, but the map says key_size = 4"
        );
        let e = btf.map_def("u", unknown).unwrap_err();
        assert_eq!(
            e.to_string(),
            "map \"u\": BTF member \"colour\" is not a known map attribute"
        );
        let e = btf.map_def("i", int).unwrap_err();
        assert_eq!(
            e.to_string(),
            "map \"i\": definition is a BTF INT, not a STRUCT"
        );
    }
}
