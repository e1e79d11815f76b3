//! The eBPF instruction set as data.
//!
//! [`Insn`] is one 8-byte instruction slot, decoded from or encoded to the little-endian wire
//! form; [`opcode`] names every opcode field. A 64-bit immediate load (`lddw`) takes two slots:
//! [`Program`] keeps the slots as they are, so instruction indices are the same ones the kernel
//! and the BTF line info use.
//!
//! Text both ways: [`asm`] assembles the uBPF / bpf_conformance assembly syntax into slots and
//! [`disasm`] prints slots back in that syntax, so that disassembling and reassembling any
//! program gives the same slots. [`conformance`] reads bpf_conformance's `.data` test files
//! (program, input memory, expected `r0` or error).
//!
//! Everything that reads or writes eBPF code — the VM backend, the verifier, the assembler and
//! the conformance runner — goes through this crate, so there is one definition of the encoding.

#![warn(missing_docs)]

pub mod asm;
pub mod conformance;
pub mod disasm;
pub mod opcode;
pub mod semantics;

mod insn;

pub use insn::{DecodeError, INSN_SIZE, Insn, Program, decode, encode};
