//! The eBPF instruction set as data.
//!
//! [`Insn`] is one 8-byte instruction slot, decoded from or encoded to the little-endian wire
//! form; [`opcode`] names every opcode field. A 64-bit immediate load (`lddw`) takes two slots:
//! [`Program`] keeps the slots as they are, so instruction indices are the same ones the kernel
//! and the BTF line info use.
//!
//! Everything that reads or writes eBPF code — the VM backend, the verifier, the assembler and
//! the conformance runner — goes through this crate, so there is one definition of the encoding.

pub mod opcode;

mod insn;

pub use insn::{DecodeError, Insn, Program, decode, encode};
