//! Loading an ELF object: its maps created, its programs loaded against
//! them, ready to run.
//!
//! This is what `ip link set dev X xdp obj prog.o` or libbpf's
//! `bpf_object__load` do: parse the object ([`crate::elf`]), create every map
//! (global data sections become one-element array maps holding the
//! section's initial bytes), and load each program with the helper set of
//! its type. Maps marked `LIBBPF_PIN_BY_NAME` are taken from
//! [`LoadOptions::pinned`] when a map of that name is there, so their state
//! carries over to a new version of a program.
//!
//! Sluice runs XDP programs. Other programs in the same object (`tc`,
//! `socket`, ...) are listed in [`LoadedObject::skipped`] with the reason,
//! and the object still loads as long as one program does. Programs whose
//! section name gives no type are skipped too, unless
//! [`LoadOptions::default_type`] names one (as the `xdp` of `ip link set
//! dev X xdp obj O` does for iproute2).
//!
//! # Initial values
//!
//! Once the programs are loaded, prog arrays and maps of maps get the
//! elements the object declares ([`elf::MapInit`]: libbpf's `.values`,
//! iproute2's `inner_idx` and `ID/KEY` tail-call sections), as libbpf
//! fills them: a map of maps only when it was created here (a pinned one
//! that is reused keeps its contents), a prog array always (so a reused,
//! pinned prog array gets the new version's programs while the old version
//! may still be running, exactly as with libbpf). An element naming a
//! program that was not loaded fails the whole object: a tail call that
//! silently falls through would change what the program does.
//!
//! A program stored in a prog array it tail-calls through keeps that array
//! alive, and the array keeps the program: whoever retires the object's
//! programs calls [`LoadedObject::clear_prog_arrays`] to break the cycle,
//! as Linux clears a prog array when its last user reference goes away.

use std::collections::HashMap;
use std::sync::Arc;

use crate::elf::{self, ElfError, MapInit, MapOrigin, ProgType};
use crate::helpers::Registry;
use crate::maps::map_in_map::MapOfMaps;
use crate::maps::prog_array::ProgArray;
use crate::maps::{flags, Map, MapDef, MapError, MapType, Pinning};
use crate::program::{LoadError, Program};
use crate::verifier::ProgKind;

/// How to load an object.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Workers, i.e. copies of each per-CPU value.
    pub ncpus: usize,
    /// Maps kept by name (`LIBBPF_PIN_BY_NAME`): reused instead of created
    /// when the object declares a pinned map of the same name and shape.
    pub pinned: HashMap<String, Arc<Map>>,
    /// The type of programs whose section name does not tell one
    /// ([`ProgType::Unspec`]: Cilium's `from-netdev`, iproute2's `ID/KEY`
    /// tail-call sections, the functions of a `.text`-only object), as `ip
    /// link set dev X xdp obj O` gives every program of the object the type
    /// of the command. `None` skips them.
    pub default_type: Option<ProgType>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            ncpus: 1,
            pinned: HashMap::new(),
            default_type: None,
        }
    }
}

/// Why an object does not load.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The ELF file is malformed or uses something unsupported.
    #[error(transparent)]
    Elf(#[from] ElfError),
    /// A map could not be created, or its initial contents not stored.
    #[error("{}", map_error_message(name, err))]
    Map {
        /// Map name.
        name: String,
        /// Why.
        err: MapError,
    },
    /// A pinned map exists under the name but with another shape.
    #[error("pinned map {name} has a different definition: pinned {pinned}, object {wanted}")]
    PinnedMismatch {
        /// Map name.
        name: String,
        /// The pinned map's shape.
        pinned: String,
        /// The object's.
        wanted: String,
    },
    /// No program of the object could be loaded; each reason is listed.
    #[error("no program loaded: {}", .0.join("; "))]
    NoPrograms(Vec<String>),
    /// An initial element of a prog array or map of maps could not be put
    /// in place: the program was not loaded, or the map refused it.
    #[error("map {map}: initial value at index {index}: {reason}")]
    MapInit {
        /// The prog array or map of maps.
        map: String,
        /// The slot or key.
        index: u32,
        /// Why, naming the program or inner map.
        reason: String,
    },
}

/// A program of a loaded object.
#[derive(Debug, Clone)]
pub struct LoadedProgram {
    /// Function name.
    pub name: String,
    /// ELF section.
    pub section: String,
    /// Program type: from the section name, else
    /// [`LoadOptions::default_type`].
    pub prog_type: ProgType,
    /// The program, ready to run.
    pub program: Arc<Program>,
}

/// A program the object has but Sluice did not load, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// Function name.
    pub name: String,
    /// ELF section.
    pub section: String,
    /// Why it was not loaded.
    pub reason: String,
}

/// An object whose maps exist and whose programs are loaded.
#[derive(Debug)]
pub struct LoadedObject {
    /// `license` section, if any.
    pub license: Option<String>,
    /// Maps, in the object's order (the index programs reference).
    pub maps: Vec<Arc<Map>>,
    /// Loaded programs, in the object's order.
    pub programs: Vec<LoadedProgram>,
    /// Programs not loaded, with the reason.
    pub skipped: Vec<Skipped>,
}

/// `map NAME: why`, without naming the map twice when the map error
/// already does (as definition errors do).
fn map_error_message(name: &str, err: &MapError) -> String {
    match err {
        MapError::InvalidDef { .. } | MapError::Unsupported { .. } => err.to_string(),
        _ => format!("map {name}: {err}"),
    }
}

fn shape(d: &MapDef) -> String {
    format!(
        "{} key {} value {} max_entries {} flags {:#x}",
        d.map_type.name(),
        d.key_size,
        d.value_size,
        d.max_entries,
        d.flags
    )
}

/// The definition a map is created with: as declared, except that a perf
/// event array without `max_entries` gets one entry per CPU, as libbpf
/// gives it.
fn creation_def(def: &MapDef, ncpus: usize) -> std::borrow::Cow<'_, MapDef> {
    if def.map_type == MapType::PerfEventArray && def.max_entries == 0 {
        let mut def = def.clone();
        def.max_entries = u32::try_from(ncpus.max(1)).unwrap_or(u32::MAX);
        std::borrow::Cow::Owned(def)
    } else {
        std::borrow::Cow::Borrowed(def)
    }
}

/// The helper set for a program type, or why it cannot run in Sluice.
pub fn registry_for(t: &ProgType) -> Result<Registry, String> {
    match t {
        ProgType::Xdp | ProgType::XdpFrags => Ok(Registry::xdp()),
        other => Err(format!(
            "program type {other:?} is not supported: Sluice runs XDP programs"
        )),
    }
}

impl LoadedObject {
    /// Parses and loads an ELF object.
    ///
    /// # Errors
    /// An [`ObjectError`] naming the section, map or program at fault.
    pub fn from_elf(bytes: &[u8], opts: &LoadOptions) -> Result<LoadedObject, ObjectError> {
        let obj = elf::parse(bytes)?;
        let mut maps = Vec::with_capacity(obj.maps.len());
        let mut reused = vec![false; obj.maps.len()];
        for (i, spec) in obj.maps.iter().enumerate() {
            let def = &*creation_def(&spec.def, opts.ncpus);
            if def.pinning == Pinning::ByName {
                if let Some(m) = opts.pinned.get(&def.name) {
                    if shape(m.def()) != shape(def) || m.def().map_type != def.map_type {
                        return Err(ObjectError::PinnedMismatch {
                            name: def.name.clone(),
                            pinned: shape(m.def()),
                            wanted: shape(def),
                        });
                    }
                    maps.push(m.clone());
                    reused[i] = true;
                    continue;
                }
            }
            let map = Map::create(def, opts.ncpus).map_err(|err| ObjectError::Map {
                name: def.name.clone(),
                err,
            })?;
            if let (MapOrigin::GlobalData { .. }, Some(init)) = (&spec.origin, &spec.initial) {
                if init.iter().any(|&b| b != 0) {
                    map.ops()
                        .update(&0u32.to_le_bytes(), init, flags::BPF_ANY)
                        .map_err(|err| ObjectError::Map {
                            name: def.name.clone(),
                            err,
                        })?;
                }
            }
            maps.push(map);
        }
        let mut programs = Vec::new();
        let mut skipped = Vec::new();
        for p in &obj.programs {
            let prog_type = match (p.prog_type, opts.default_type) {
                (ProgType::Unspec, Some(t)) => t,
                (t, _) => t,
            };
            let loaded = registry_for(&prog_type).and_then(|reg| {
                Program::load_verified(p.insns.clone(), ProgKind::Xdp, &reg, maps.clone())
                    .map_err(|e: LoadError| e.to_string())
            });
            match loaded {
                Ok(program) => programs.push(LoadedProgram {
                    name: p.name.clone(),
                    section: p.section.clone(),
                    prog_type,
                    program: Arc::new(program),
                }),
                Err(reason) => skipped.push(Skipped {
                    name: p.name.clone(),
                    section: p.section.clone(),
                    reason: format!("section {}: {reason}", p.section),
                }),
            }
        }
        if programs.is_empty() {
            let mut reasons: Vec<String> = skipped
                .iter()
                .map(|s| format!("{}: {}", s.name, s.reason))
                .collect();
            if reasons.is_empty() {
                reasons.push("the object has no programs".into());
            }
            return Err(ObjectError::NoPrograms(reasons));
        }
        let loaded = LoadedObject {
            license: obj.license,
            maps,
            programs,
            skipped,
        };
        loaded.apply_initial_values(&obj.maps, &reused)?;
        Ok(loaded)
    }

    /// Puts the initial elements of prog arrays and maps of maps in place
    /// (see the module docs). Everything is resolved before anything is
    /// stored, and maps this load did not create (reused pinned prog
    /// arrays, which a running version may be using) are written last,
    /// once nothing else can fail.
    fn apply_initial_values(
        &self,
        specs: &[elf::MapSpec],
        reused: &[bool],
    ) -> Result<(), ObjectError> {
        let mut tail_calls: Vec<(bool, &ProgArray, u32, &LoadedProgram, &str)> = Vec::new();
        let mut inners: Vec<(&MapOfMaps, u32, &Arc<Map>, &str)> = Vec::new();
        for ((spec, outer), &reused) in specs.iter().zip(&self.maps).zip(reused) {
            let map = outer.def().name.as_str();
            for init in &spec.init {
                let err = |reason: String| ObjectError::MapInit {
                    map: map.to_string(),
                    index: init.index(),
                    reason,
                };
                match init {
                    MapInit::Program {
                        index,
                        name,
                        section,
                    } => {
                        let prog = self.resolve_program(name, section).map_err(err)?;
                        let array = outer
                            .downcast::<ProgArray>()
                            .ok_or_else(|| err("the map is not a prog array".into()))?;
                        tail_calls.push((reused, array, *index, prog, map));
                    }
                    MapInit::Map { .. } if reused => {} // keeps what it holds
                    MapInit::Map { index, map: inner } => {
                        let inner = self
                            .maps
                            .get(*inner)
                            .ok_or_else(|| err(format!("map index {inner} does not exist")))?;
                        let outer_maps = outer
                            .downcast::<MapOfMaps>()
                            .ok_or_else(|| err("the map is not a map of maps".into()))?;
                        inners.push((outer_maps, *index, inner, map));
                    }
                }
            }
        }
        let err = |map: &str, index: u32, reason: String| ObjectError::MapInit {
            map: map.to_string(),
            index,
            reason,
        };
        for (outer, index, inner, map) in inners {
            outer
                .set(&index.to_le_bytes(), inner.clone())
                .map_err(|e| err(map, index, format!("map {}: {e}", inner.def().name)))?;
        }
        // Arrays created here first, reused ones last (a stable sort).
        tail_calls.sort_by_key(|&(reused, ..)| reused);
        for (_, array, index, prog, map) in tail_calls {
            if let Err(e) = array.set(index, Some(prog.program.clone())) {
                // Nothing else holds this load's programs and arrays yet:
                // break the cycles already made, so they are freed.
                for (m, _) in self.maps.iter().zip(reused).filter(|(_, &r)| !r) {
                    if let Some(array) = m.downcast::<ProgArray>() {
                        array.clear_all();
                    }
                }
                return Err(err(map, index, format!("program {}: {e}", prog.name)));
            }
        }
        Ok(())
    }

    /// The loaded program `name` of `section`, or why there is none.
    fn resolve_program(&self, name: &str, section: &str) -> Result<&LoadedProgram, String> {
        if let Some(p) = self
            .programs
            .iter()
            .find(|p| p.name == name && p.section == section)
        {
            return Ok(p);
        }
        let why = self
            .skipped
            .iter()
            .find(|s| s.name == name && s.section == section)
            .map_or_else(
                || format!("the object has no program {name} in section {section}"),
                |s| s.reason.clone(),
            );
        Err(format!("program {name} was not loaded: {why}"))
    }

    /// Empties the prog arrays of this object that are not pinned by name,
    /// breaking the reference cycles between prog arrays and the programs
    /// in them (see the module docs); tail calls through them fall through
    /// afterwards. Pinned prog arrays are left alone: they may be shared
    /// with another version through [`LoadOptions::pinned`], and whoever
    /// holds the pins clears them when dropping the last one.
    pub fn clear_prog_arrays(&self) {
        for m in &self.maps {
            if m.def().pinning == Pinning::ByName {
                continue;
            }
            if let Some(array) = m.downcast::<ProgArray>() {
                array.clear_all();
            }
        }
    }

    /// A program by function name, else by section name (the first).
    pub fn program(&self, name_or_section: &str) -> Option<&LoadedProgram> {
        self.programs
            .iter()
            .find(|p| p.name == name_or_section)
            .or_else(|| self.programs.iter().find(|p| p.section == name_or_section))
    }

    /// A map by name.
    pub fn map(&self, name: &str) -> Option<&Arc<Map>> {
        self.maps.iter().find(|m| m.def().name == name)
    }

    /// The maps marked for pinning by name, for the next version's
    /// [`LoadOptions::pinned`].
    pub fn pinned_maps(&self) -> HashMap<String, Arc<Map>> {
        self.maps
            .iter()
            .filter(|m| m.def().pinning == Pinning::ByName)
            .map(|m| (m.def().name.clone(), m.clone()))
            .collect()
    }
}
