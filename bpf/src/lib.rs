//! Sluice's eBPF runtime.
//!
//! This crate owns everything about eBPF programs and nothing about packets'
//! way through the machine: it has no I/O and no threads of its own.
//!
//! * [`isa`]: RFC 9669 instructions, raw slots and a validated typed form.
//! * [`asm`] and [`disasm`]: the text syntax of the bpf_conformance suite.
//! * [`helpers`]: the helper registry; every helper declares the types of
//!   its arguments and return value, for the verifier to check.
//! * [`program`]: a loaded program, decoded once into the engines' form.
//! * [`interp`]: the interpreter, with run-time checking of every memory
//!   access against the regions a run may touch.
//! * [`fib`]: the userspace FIB behind `bpf_fib_lookup`.
//!
//! Still to come (see the project's issues): the ELF loader and maps, the
//! verifier, the x86-64 JIT.
//!
//! # Memory model
//!
//! A run sees a handful of *regions* (context, packet or plain memory, the
//! stack, map values). In checked mode each region has its own virtual
//! address range, and every load or store is translated and bounds-checked
//! at both ends before it touches host memory; see [`interp`]. A program
//! therefore never reads or writes host memory outside its regions, whatever
//! its bytes say.

pub mod asm;
pub mod btf;
pub mod disasm;
pub mod elf;
pub mod fib;
pub mod helpers;
pub mod interp;
pub mod isa;
#[cfg(feature = "jit")]
pub mod jit;
pub mod maps;
pub mod native;
pub mod object;
pub mod program;
pub mod verifier;

pub use interp::{Engine, Fault, Vm};
pub use program::{LoadError, Program};
