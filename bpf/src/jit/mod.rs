//! The x86-64 JIT: verified eBPF programs as native code.
//!
//! Because the verifier proves every memory access safe before a program
//! runs, native code uses real host pointers and plain `mov`s: no bounds
//! checks, no address translation. (Before the verifier gates it, running
//! compiled code is `unsafe`; see [`JitVm::run_mem`].)
//!
//! # Code generator
//!
//! A direct emitter with its own encoder ([`x86`]): each eBPF instruction
//! becomes a short fixed sequence of x86 instructions, appended to a byte
//! buffer; jumps whose targets are not yet known are recorded and patched
//! when the pass ends (see *Fixups*). This is how Linux's
//! `arch/x86/net/bpf_jit_comp.c` works, and it was chosen for the same
//! reasons:
//!
//! * eBPF was designed to map one-to-one onto x86-64 registers and
//!   instructions, so a register allocator or an IR (Cranelift) has nothing
//!   to win on the programs XDP runs and would cost orders of magnitude more
//!   compile time and code to audit;
//! * a few hundred lines of encoder, each form pinned by a unit test against
//!   GNU `as`, are easier to audit than a macro assembler: `dynasm-rs`
//!   needs a procedural macro and its runtime-register syntax obscures
//!   exactly the REX/ModRM corner cases (rbp/r13 bases, r12/rsp SIBs,
//!   `sil`/`dil` byte registers) that matter here; `iced-x86`'s code
//!   assembler is a large crate that builds an instruction list and encodes
//!   it afterwards, allocating per instruction;
//! * compile time is what Linux's is: one pass over the program, two for
//!   programs up to 64 Ki slots. Measured (`cargo bench --bench jit`):
//!   code generation takes about 1 µs for the 24-32-slot benchmark
//!   programs (the second pass adds about a quarter and makes the code up
//!   to 20% smaller), while mapping the code (`mmap`, `mprotect`, and
//!   `munmap` at drop) takes 10-15 µs: the emitter is not what loading
//!   costs.
//!
//! # Register mapping
//!
//! | eBPF | x86-64 | why |
//! |------|--------|-----|
//! | r0   | rax    | return value register of both ABIs |
//! | r1-r5 | rdi, rsi, rdx, rcx, r8 | the System V argument registers, so helper arguments are already in place |
//! | r6-r9 | rbx, r13, r14, r15 | callee-saved in System V, so helpers preserve them |
//! | r10  | rbp    | frame pointer, callee-saved |
//! | (AX) | r10    | constant-blinding scratch, divisor save (Linux's `BPF_REG_AX`) |
//! | (tmp) | r11, r9 | scratch within one instruction's sequence |
//! | (env) | r12   | the run's [`NativeEnv`], for the whole run |
//!
//! This is Linux's mapping, with r12 put to use.
//!
//! # Stack layout
//!
//! There are two stacks, and programs can reach only one of them:
//!
//! * The **eBPF stack** is a caller-provided area of
//!   [`MAX_FRAMES`]` x `[`FRAME_SIZE`] bytes, 16-byte aligned (a
//!   [`JitVm`] owns one). r10 starts at its top; frame *k* (the *k*-th
//!   nested local call) has r10 = top - 512*k and owns the 512 bytes below.
//! * The **host stack** (rsp) holds only what the JIT puts there: the
//!   caller's callee-saved registers, return addresses, and the r6-r10 saved
//!   across local calls. No eBPF instruction addresses it, so a program can
//!   never overwrite a return address, even if it wrote outside its frame.
//!
//! Host stack, growing down:
//!
//! ```text
//! [ return address into Rust      ]  <- entry
//! [ rbp rbx r12 r13 r14 r15       ]  callee-saved of the caller (those used)
//! [ (8 bytes of padding)          ]  if needed for alignment
//! [ return address into the entry ]  <- rsp of the main body = RSP_MAIN (16-aligned)
//! [ rbx r13 r14 r15 rbp           ]  one local call: r6-r9, r10 of the caller
//! [ return address                ]  <- rsp of depth 1 = RSP_MAIN - 48
//! ...                                   depth d at RSP_MAIN - 48*d
//! ```
//!
//! Every depth's rsp is 16-byte aligned, so helper calls need no
//! adjustment. A local call is allowed while `depth + 1 < MAX_FRAMES`,
//! checked against rsp (which programs cannot change): deeper calls end the
//! run with [`Fault::CallDepth`], as in the interpreter.
//!
//! # Calling convention
//!
//! * **Entry** ([`EntryFn`]): `extern "C" fn(r1, r2, stack_top, env: *mut
//!   JitEnv) -> r0`. The entry stub sets up only what the body uses: it
//!   saves the callee-saved registers among rbx, r13-r15 (r6-r9), rbp (r10)
//!   and r12 (env) that the program touches, points rbp at `stack_top` if
//!   r10 is used, points r12 at `(*env).env` if anything needs the
//!   environment, records `RSP_MAIN` if anything can fault or nest, zeroes
//!   the registers some path may read before writing (none, for a verified
//!   program; see `uninit_reads` in `codegen.rs`), and calls the body. The
//!   body's `exit` is a `ret`, at every depth, so `exit` behaves exactly as
//!   the interpreter's: return to the caller's frame, or end the program.
//!   A *leaf* program (no calls, no r6-r10) has no frame at all: the entry
//!   is the body, and its `exit` returns straight to Rust. A program that
//!   tail-calls gets the full frame (all six registers, r10, r12,
//!   `RSP_MAIN`), because its targets' bodies run in it.
//! * **Helpers**: the helper's [`HelperFn`] is stored in
//!   [`NativeEnv::helper`], r9 = env, and [`sluice_helper_shim`] is called
//!   (r1-r5 are already rdi, rsi, rdx, rcx, r8). After it, a non-zero
//!   [`NativeEnv::fault`] jumps to an out-of-line stub that records the
//!   instruction and leaves the program. As in Linux, r1-r5 are clobbered
//!   by a call (the verifier marks them unreadable).
//! * **Array map lookups** (`bpf_map_lookup_elem` on an array whose
//!   pointer was loaded in the same basic block) are inlined as Linux's
//!   `array_map_gen_lookup`: key bound check, `base + key * elem_size`
//!   (+ `cpu * cpu_stride` for per-CPU arrays), or NULL.
//! * **`bpf_redirect`** (Sluice's own helper 23) is inlined: flags (r2)
//!   non-zero gives `XDP_ABORTED`; otherwise r1's low 32 bits go to the
//!   run state's redirect slot (one 8-byte store, found through
//!   `NativeEnv::state`) and r0 = `XDP_REDIRECT`. It needs r12 but no
//!   `RSP_MAIN`: it calls nothing and cannot fault. `bpf_redirect_map`
//!   stays a helper call.
//! * **Local calls**: check the depth, push r6-r9 and r10, `r10 -= 512`,
//!   `call`, pop.
//! * **Tail calls** (`bpf_tail_call`, from the main frame only): r0-r5 are
//!   saved, `jit_tail_call(env, map, index)` returns the target's body
//!   address (or 0, and the program goes on after the call), and the code
//!   jumps there, reusing the frame and the return address into the entry
//!   stub. The shim keeps the count (at most [`MAX_TAIL_CALLS`]) and keeps
//!   each target alive until the run ends.
//! * **Faults** leave from any depth with `mov rsp, [RSP_MAIN]; ret`, back
//!   into the entry stub, which restores the caller's registers.
//!
//! # Fixups
//!
//! One emission pass records `addrs[pc]`, the native offset of every slot.
//! A backward jump knows its target and takes the short form when it fits.
//! A forward jump is emitted with a placeholder displacement and a fixup
//! entry (slot target, and whether the form is rel8 or rel32); jumps to the
//! out-of-line fault stubs are fixups too. After the pass, the stubs and
//! the common fault exit are emitted and every fixup is patched. The first
//! pass emits every forward jump as rel32. A second pass (for programs up
//! to 64 Ki slots) takes the short form for a forward jump when the first
//! pass's distance fits in rel8: code only shrinks from one pass to the
//! next (every other instruction has the same size in both, blinding keys
//! included), so the real distance is no larger and the patch always fits.
//!
//! # Instruction semantics
//!
//! Exactly the interpreter's (RFC 9669), except that a helper call leaves
//! r1-r5 unspecified (as in Linux; the verifier makes them unreadable,
//! where the interpreter happens to keep them): 32-bit operations zero-extend
//! (x86 does it for free); shift counts are masked (x86 masks the same way,
//! `shlx`/`shrx`/`sarx` when BMI2 is there, else through `cl`); division by
//! zero gives 0 and modulo by zero leaves dst, signed `MIN / -1` gives `MIN`
//! and `MIN % -1` gives 0 (both checked before `idiv`, which would trap);
//! atomics are `lock`ed (`xadd` for fetch-add, a `cmpxchg` loop for
//! fetch-and/or/xor, `xchg`, `cmpxchg` with r0 as the comparand, its 32-bit
//! form zero-extending r0).
//!
//! # Constant blinding
//!
//! With [`JitOptions::harden`], every non-zero 32-bit immediate of an ALU,
//! jump or store instruction, both halves of every `LD_IMM64`, and the
//! immediates of inlined array lookups (map sizes come from the object
//! file) and the verdict of the inlined `bpf_redirect` are rebuilt at run
//! time as `mov r10, imm ^ k; xor r10, k` with a fresh random `k` per use,
//! as Linux's `bpf_jit_blind_constants`, so no value a program chose
//! appears in executable memory. Not blinded, as in
//! Linux: shift counts (masked to at most 6 bits), byte-swap widths, and
//! 16-bit memory and jump offsets.
//!
//! # Code memory
//!
//! See [`code`]: mapped read-write, filled, then read-execute; never both;
//! every `mmap`/`mprotect` result checked; unmapped on drop.
#![allow(clippy::doc_markdown)]

#[cfg(not(target_arch = "x86_64"))]
compile_error!("the `jit` feature of sluice-bpf needs x86-64; build with --no-default-features");

mod code;
mod codegen;
mod run;
mod x86;

use std::sync::Arc;

pub use code::CodeMemoryError;
pub use run::{JitEnv, JitVm};

use crate::helpers::Registry;
use crate::interp::ctx::MAP_HANDLE_BASE;
use crate::interp::{FRAME_SIZE, MAX_FRAMES, STACK_SIZE};
use crate::isa::{DecodeError, Insn, Instruction, LdImm64};
use crate::maps::array::ArrayMap;
use crate::maps::{Map, MapType};
// The runtime's side of the native ABI: environment, helper shim, context.
// (This is the one line to change if the ABI moves.)
use crate::native::{sluice_helper_shim, NativeEnv};
#[cfg(doc)]
use crate::{
    helpers::HelperFn, interp::Fault, maps::prog_array::MAX_TAIL_CALLS, native::NativeXdpMd,
};
use run::{jit_tail_call, layout};

/// The compiled program's entry point (see "Calling convention").
pub type EntryFn =
    unsafe extern "C" fn(r1: u64, r2: u64, stack_top: *mut u8, env: *mut JitEnv) -> u64;

/// Finds the program a tail call jumps to: `map` is the handle the program
/// passed as r2, `index` its r3. `None` makes the call fall through.
///
/// The runtime's version looks `map` up among the running program's maps,
/// takes the slot's program from the prog array and returns its compiled
/// form. The returned `Arc` is held until the run ends.
pub type TailCallFn = fn(env: &mut NativeEnv, map: u64, index: u32) -> Option<Arc<JitProgram>>;

/// Why a program cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JitError {
    /// The bytes are not a valid instruction sequence.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// More slots than [`crate::program::MAX_INSNS`], or code beyond 1 GiB.
    #[error("program of {len} instructions is too large to compile")]
    TooLarge {
        /// Slots in the program.
        len: usize,
    },
    /// A jump or call lands outside the program.
    #[error("insn {pc}: jump out of range to {target}")]
    JumpOutOfRange {
        /// Jumping instruction.
        pc: usize,
        /// Target slot.
        target: i64,
    },
    /// A jump or call lands on the second slot of an `LD_IMM64`.
    #[error("insn {pc}: jump into the middle of ldimm64 at {target}")]
    JumpIntoLdImm64 {
        /// Jumping instruction.
        pc: usize,
        /// Target slot.
        target: usize,
    },
    /// The last instruction would fall through past the end.
    #[error("insn {pc}: last instruction is not an exit or an unconditional jump")]
    FallsOffEnd {
        /// The last instruction.
        pc: usize,
    },
    /// A call to a helper the registry does not have.
    #[error("insn {pc}: unknown helper {id}")]
    UnknownHelper {
        /// Calling instruction.
        pc: usize,
        /// Helper number.
        id: i32,
    },
    /// An `LD_IMM64` map reference the resolver could not resolve.
    #[error("insn {pc}: cannot resolve {what:?}")]
    Unresolved {
        /// The `LD_IMM64`.
        pc: usize,
        /// What it references.
        what: LdImm64,
    },
    /// An instruction Sluice does not support.
    #[error("insn {pc}: {feature} is not supported")]
    Unsupported {
        /// The instruction.
        pc: usize,
        /// What it needs.
        feature: &'static str,
    },
    /// An instruction writes r10, which is read-only (the native frame
    /// layout depends on it; Linux's verifier refuses the same).
    #[error("insn {pc}: frame pointer r10 is read only")]
    WritesFramePointer {
        /// The instruction.
        pc: usize,
    },
    /// Executable memory could not be set up.
    #[error(transparent)]
    CodeMemory(#[from] CodeMemoryError),
}

/// What an `LD_IMM64` map reference becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The 64-bit value the register gets (a map handle, or a host pointer
    /// into a map value).
    pub value: u64,
    /// For an array map: its layout, so lookups can be inlined.
    pub array: Option<ArrayLayout>,
}

/// Where an array map's values are, for inlined lookups
/// (`value(index, cpu) = base + cpu * cpu_stride + index * elem_size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayLayout {
    /// Host address of the value area.
    pub base: u64,
    /// Bytes from one value to the next.
    pub elem_size: u32,
    /// Number of elements.
    pub max_entries: u32,
    /// Bytes from one CPU's copy to the next (per-CPU arrays).
    pub cpu_stride: u64,
    /// Copies: the number of CPUs for a per-CPU array, else 1.
    pub ncpus: u32,
    /// Whether values are per CPU (the lookup then also checks the worker
    /// index against `ncpus`).
    pub percpu: bool,
}

impl ArrayLayout {
    /// The layout of `map`, if it is an array or per-CPU array.
    ///
    /// The addresses stay valid while the map lives: a [`JitProgram`] holds
    /// the `Arc<Map>`s it was compiled with.
    pub fn of(map: &Map) -> Option<ArrayLayout> {
        let a = map.downcast::<ArrayMap>()?;
        let (base, _) = map.ops().value_area()?;
        let percpu = map.def().map_type == MapType::PercpuArray;
        Some(ArrayLayout {
            base: base.as_ptr() as u64,
            elem_size: u32::try_from(a.elem_size()).ok()?,
            max_entries: map.def().max_entries,
            cpu_stride: a.cpu_stride() as u64,
            ncpus: if percpu {
                u32::try_from(map.ncpus()).ok()?
            } else {
                1
            },
            percpu,
        })
    }
}

/// The default resolver over a program's maps, with the loader's
/// conventions: `BPF_PSEUDO_MAP_IDX` *i* becomes the handle
/// `MAP_HANDLE_BASE | i` (what helpers expect, as in the interpreter),
/// `BPF_PSEUDO_MAP_IDX_VALUE` a host pointer into an array's value.
pub fn resolve_maps(maps: &[Arc<Map>]) -> impl Fn(&LdImm64) -> Option<Resolved> + '_ {
    move |v| match *v {
        LdImm64::MapIdx(i) => {
            let m = maps.get(usize::try_from(i).ok()?)?;
            Some(Resolved {
                value: MAP_HANDLE_BASE | i as u64,
                array: ArrayLayout::of(m),
            })
        }
        LdImm64::MapIdxValue { map, off } => {
            let m = maps.get(usize::try_from(map).ok()?)?;
            if m.def().map_type != MapType::Array || off >= m.def().value_size {
                return None;
            }
            let (p, _) = m.ops().value_area()?;
            Some(Resolved {
                value: p.as_ptr() as u64 + u64::from(off),
                array: None,
            })
        }
        _ => None,
    }
}

/// Resolves the `LD_IMM64` map forms of a program (see [`resolve_maps`]).
pub type Resolver<'a> = dyn Fn(&LdImm64) -> Option<Resolved> + 'a;

/// Compilation options.
#[derive(Clone, Copy, Debug)]
pub struct JitOptions {
    /// Constant blinding (see "Constant blinding").
    pub harden: bool,
    /// Use BMI2 `shlx`/`shrx`/`sarx` for register shifts: `None` detects
    /// the CPU; `Some(false)` forces the `cl` sequences (for tests).
    pub bmi2: Option<bool>,
    /// Emission passes: 1 (forward jumps rel32) or 2 (short forward jumps
    /// where they fit; the default, for programs up to 64 Ki slots).
    pub passes: u8,
}

impl Default for JitOptions {
    fn default() -> Self {
        JitOptions {
            harden: false,
            bmi2: None,
            passes: 2,
        }
    }
}

/// Everything the JIT needs to compile one program.
pub struct JitInput<'a> {
    /// The raw slots, after the verifier's rewrites (context accesses
    /// converted to [`NativeXdpMd`] offsets).
    pub insns: &'a [Insn],
    /// Helpers by number (each with its function and declared types).
    pub helpers: &'a Registry,
    /// The maps `LD_IMM64` map references index; the compiled program keeps
    /// them alive.
    pub maps: &'a [Arc<Map>],
    /// Resolves `LD_IMM64` map forms; `None` uses [`resolve_maps`] over
    /// `maps`.
    pub resolve: Option<&'a Resolver<'a>>,
    /// Options.
    pub options: JitOptions,
}

impl<'a> JitInput<'a> {
    /// A program without maps, default options.
    pub fn new(insns: &'a [Insn], helpers: &'a Registry) -> JitInput<'a> {
        JitInput {
            insns,
            helpers,
            maps: &[],
            resolve: None,
            options: JitOptions::default(),
        }
    }

    /// Sets the maps (resolved with [`resolve_maps`] unless a resolver is
    /// set).
    pub fn maps(mut self, maps: &'a [Arc<Map>]) -> JitInput<'a> {
        self.maps = maps;
        self
    }

    /// Sets a custom `LD_IMM64` resolver.
    pub fn resolver(mut self, f: &'a Resolver<'a>) -> JitInput<'a> {
        self.resolve = Some(f);
        self
    }

    /// Sets the options.
    pub fn options(mut self, options: JitOptions) -> JitInput<'a> {
        self.options = options;
        self
    }

    /// Turns constant blinding on or off.
    pub fn harden(mut self, on: bool) -> JitInput<'a> {
        self.options.harden = on;
        self
    }
}

/// A compiled program.
pub struct JitProgram {
    code: code::CodeMemory,
    body: usize,
    /// Helper addresses by number, for `callx`; the code embeds the
    /// table's address.
    _callx: Box<[u64]>,
    maps: Box<[Arc<Map>]>,
    slots: usize,
    /// Native offset of each slot, then the end of the body (see
    /// [`JitProgram::insn_offsets`]).
    offsets: Box<[u32]>,
}

impl std::fmt::Debug for JitProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitProgram")
            .field("slots", &self.slots)
            .field("code_bytes", &self.code.bytes().len())
            .finish()
    }
}

/// Compiles a program.
///
/// # Errors
/// A [`JitError`] naming the first offending instruction, or the code
/// memory failure.
pub fn compile(input: &JitInput<'_>) -> Result<JitProgram, JitError> {
    let (image, callx) = build(input)?;
    Ok(JitProgram {
        code: code::CodeMemory::new(&image.code)?,
        body: image.body,
        _callx: callx,
        maps: input.maps.into(),
        slots: input.insns.len(),
        offsets: image.addrs.into_boxed_slice(),
    })
}

/// The machine code `compile` would map, without mapping it: for
/// inspection (`bpftool prog dump jited`-style listings, code scans) and
/// for measuring code generation alone. The bytes embed addresses (helpers,
/// maps, the `callx` table) and must never be executed.
///
/// # Errors
/// As [`compile`], except code memory errors.
pub fn emit_code(input: &JitInput<'_>) -> Result<Vec<u8>, JitError> {
    Ok(build(input)?.0.code)
}

fn build(input: &JitInput<'_>) -> Result<(codegen::Image, Box<[u64]>), JitError> {
    let default = resolve_maps(input.maps);
    let resolve: &dyn Fn(&LdImm64) -> Option<Resolved> = match input.resolve {
        Some(r) => r,
        None => &default,
    };
    let prepared = codegen::prepare(input.insns, input.helpers, resolve)?;
    let uses_callx = prepared.uses(|i| matches!(i, Instruction::Callx { .. }));
    let callx: Box<[u64]> = if uses_callx {
        let n = input
            .helpers
            .iter()
            .map(|h| h.id as usize + 1)
            .max()
            .unwrap_or(0);
        let mut t = vec![0u64; n];
        for h in input.helpers.iter() {
            t[h.id as usize] = h.func as usize as u64;
        }
        t.into_boxed_slice()
    } else {
        Box::new([])
    };
    let o = input.options;
    let settings = codegen::Settings {
        harden: o.harden,
        bmi2: o
            .bmi2
            .unwrap_or_else(|| std::arch::is_x86_feature_detected!("bmi2")),
        passes: if input.insns.len() <= 1 << 16 {
            o.passes.clamp(1, 2)
        } else {
            1
        },
    };
    let shims = (
        sluice_helper_shim as *const () as u64,
        jit_tail_call as *const () as u64,
    );
    let table = (callx.as_ptr() as u64, callx.len() as u32);
    let image = codegen::emit(&prepared, settings, shims, table)?;
    Ok((image, callx))
}

impl JitProgram {
    /// The machine code (for inspection and tests).
    pub fn code(&self) -> &[u8] {
        self.code.bytes()
    }

    /// The maps the program references.
    pub fn maps(&self) -> &[Arc<Map>] {
        &self.maps
    }

    /// Number of eBPF slots compiled.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Where each eBPF slot's native code begins, as an offset into
    /// [`JitProgram::code`]: `slots() + 1` entries, non-decreasing, the last
    /// being the end of the body.
    ///
    /// The code has three parts:
    ///
    /// * `[0, insn_offsets()[0])`: the entry stub (prologue, the `call`
    ///   into the body, epilogue; see "Calling convention"), empty for a
    ///   leaf program;
    /// * `[insn_offsets()[0], insn_offsets()[slots()])`: the body, slot by
    ///   slot. A slot may have no code of its own: the second slot of an
    ///   `LD_IMM64` has its first slot's offset, and the `add` of a
    ///   `mov`/`add` pair emitted as one `lea` begins where the `lea` ends;
    /// * `[insn_offsets()[slots()], code().len())`: the out-of-line fault
    ///   stubs and the common fault exit, if any.
    pub fn insn_offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// The entry point, for a runtime that sets up [`JitEnv`] and the stack
    /// itself. Valid while `self` lives.
    pub fn entry(&self) -> EntryFn {
        self.code.entry()
    }

    /// The body's address: where a tail call into this program jumps.
    pub(crate) fn body_addr(&self) -> u64 {
        self.code.addr(self.body)
    }
}

const _: () = assert!(FRAME_SIZE * MAX_FRAMES == STACK_SIZE);

#[cfg(test)]
mod tests;

#[cfg(test)]
mod offset_tests {
    use super::*;
    use crate::asm::assemble;

    fn compiled(src: &str) -> JitProgram {
        let insns = assemble(src).expect("assembles");
        let reg = Registry::conformance();
        compile(&JitInput::new(&insns, &reg)).expect("compiles")
    }

    fn check(j: &JitProgram) {
        let o = j.insn_offsets();
        assert_eq!(o.len(), j.slots() + 1);
        assert_eq!(o[0] as usize, j.body, "slot 0 starts the body");
        assert!(o.windows(2).all(|w| w[0] <= w[1]), "{o:?}");
        assert!(o[j.slots()] as usize <= j.code().len());
    }

    #[test]
    fn leaf_body_starts_at_zero() {
        let j = compiled("mov %r0, 1\njeq %r1, 0, +1\nmov %r0, 2\nexit");
        check(&j);
        assert_eq!(j.insn_offsets()[0], 0, "a leaf has no entry stub");
        // No calls, no faults: the body ends the code.
        assert_eq!(j.insn_offsets()[4] as usize, j.code().len());
        // `mov eax, 1` is 5 bytes.
        assert_eq!(j.insn_offsets()[1], 5);
    }

    #[test]
    fn non_leaf_body_follows_the_entry_stub() {
        let j = compiled("mov %r6, %r1\nlddw %r1, 0x100000000\ncall 5\nmov %r0, %r6\nexit");
        check(&j);
        let o = j.insn_offsets();
        assert!(o[0] > 0, "the entry stub comes first");
        // The entry stub ends with the epilogue's `ret`.
        assert_eq!(j.code()[o[0] as usize - 1], 0xc3);
        // The second slot of the lddw has the first one's offset.
        assert_eq!(o[1], o[2]);
        // The helper call has a fault stub after the body.
        assert!((o[j.slots()] as usize) < j.code().len());
    }

    #[test]
    fn offsets_of_every_pass_count() {
        for passes in [1, 2] {
            let insns =
                assemble("mov %r0, 0\njeq %r1, 0, +2\nmov %r6, 3\nadd %r0, %r6\nexit").unwrap();
            let reg = Registry::conformance();
            let j = compile(&JitInput::new(&insns, &reg).options(JitOptions {
                passes,
                ..JitOptions::default()
            }))
            .unwrap();
            check(&j);
        }
    }
}
