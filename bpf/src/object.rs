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
//! and the object still loads as long as one program does.

use std::collections::HashMap;
use std::sync::Arc;

use crate::elf::{self, ElfError, MapOrigin, ProgType};
use crate::helpers::Registry;
use crate::maps::{flags, Map, MapDef, MapError, Pinning};
use crate::program::{LoadError, Program};

/// How to load an object.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Workers, i.e. copies of each per-CPU value.
    pub ncpus: usize,
    /// Maps kept by name (`LIBBPF_PIN_BY_NAME`): reused instead of created
    /// when the object declares a pinned map of the same name and shape.
    pub pinned: HashMap<String, Arc<Map>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            ncpus: 1,
            pinned: HashMap::new(),
        }
    }
}

/// Why an object does not load.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The ELF file is malformed or uses something unsupported.
    #[error(transparent)]
    Elf(#[from] ElfError),
    /// A map could not be created.
    #[error("map {name}: {err}")]
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
}

/// A program of a loaded object.
#[derive(Debug, Clone)]
pub struct LoadedProgram {
    /// Function name.
    pub name: String,
    /// ELF section.
    pub section: String,
    /// Program type from the section name.
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
        for spec in &obj.maps {
            let def = &spec.def;
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
            let loaded = registry_for(&p.prog_type).and_then(|reg| {
                Program::load_with_maps(p.insns.clone(), &reg, maps.clone())
                    .map_err(|e: LoadError| e.to_string())
            });
            match loaded {
                Ok(program) => programs.push(LoadedProgram {
                    name: p.name.clone(),
                    section: p.section.clone(),
                    prog_type: p.prog_type,
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
        Ok(LoadedObject {
            license: obj.license,
            maps,
            programs,
            skipped,
        })
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
