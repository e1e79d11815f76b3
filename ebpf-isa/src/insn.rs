//! One instruction slot and whole programs.

use std::fmt;

use thiserror::Error;

use crate::opcode;

/// Bytes per instruction slot.
pub const INSN_SIZE: usize = 8;

/// One 8-byte instruction slot: `opcode:8 dst:4 src:4 off:16 imm:32`, little-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Insn {
    /// The opcode byte; [`opcode`](crate::opcode) names its fields.
    pub opcode: u8,
    /// Destination register, 0–15 as encoded (only 0–10 are valid registers).
    pub dst: u8,
    /// Source register, 0–15 as encoded; for `lddw` and `call` a pseudo kind.
    pub src: u8,
    /// Signed 16-bit offset: a memory displacement or a jump distance in slots.
    pub off: i16,
    /// Signed 32-bit immediate (for `lddw`, the low half of the constant).
    pub imm: i32,
}

impl Insn {
    /// An instruction slot from its fields.
    pub const fn new(opcode: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            opcode,
            dst,
            src,
            off,
            imm,
        }
    }

    /// Decodes one slot.
    pub fn from_bytes(bytes: [u8; INSN_SIZE]) -> Insn {
        Insn {
            opcode: bytes[0],
            dst: bytes[1] & 0x0f,
            src: bytes[1] >> 4,
            off: i16::from_le_bytes([bytes[2], bytes[3]]),
            imm: i32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        }
    }

    /// Encodes one slot.
    pub fn to_bytes(self) -> [u8; INSN_SIZE] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [
            self.opcode,
            (self.dst & 0x0f) | (self.src << 4),
            off[0],
            off[1],
            imm[0],
            imm[1],
            imm[2],
            imm[3],
        ]
    }

    /// The instruction class (low 3 bits of the opcode).
    pub const fn class(self) -> u8 {
        opcode::class(self.opcode)
    }

    /// The first slot of a 64-bit immediate load.
    pub const fn is_lddw(self) -> bool {
        self.opcode == opcode::LDDW
    }

    /// `exit`.
    pub const fn is_exit(self) -> bool {
        self.opcode == opcode::EXIT
    }

    /// A helper call (not a bpf-to-bpf or kfunc call).
    pub const fn is_helper_call(self) -> bool {
        self.opcode == opcode::CALL && self.src == opcode::CALL_HELPER
    }

    /// A bpf-to-bpf call.
    pub const fn is_local_call(self) -> bool {
        self.opcode == opcode::CALL && self.src == opcode::CALL_LOCAL
    }
}

/// A program as instruction slots (an `lddw` occupies two).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    /// The slots, in order.
    pub insns: Vec<Insn>,
}

impl Program {
    /// A program from its slots.
    pub fn new(insns: Vec<Insn>) -> Program {
        Program { insns }
    }

    /// Number of slots (not instructions: an `lddw` counts twice).
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// No slots at all.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// The 64-bit constant of the `lddw` at slot `index`, if slot `index` is an `lddw` with a
    /// second slot.
    pub fn lddw_value(&self, index: usize) -> Option<u64> {
        let first = self.insns.get(index)?;
        let second = self.insns.get(index + 1)?;
        first
            .is_lddw()
            .then(|| u64::from(first.imm as u32) | (u64::from(second.imm as u32) << 32))
    }

    /// The raw little-endian code.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(&self.insns)
    }
}

/// Raw bytes that are not a whole number of instruction slots.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{len} bytes of eBPF code is not a multiple of {INSN_SIZE}-byte instructions")]
pub struct DecodeError {
    /// Length of the refused input in bytes.
    pub len: usize,
}

/// Decodes raw little-endian code into instruction slots.
pub fn decode(bytes: &[u8]) -> Result<Program, DecodeError> {
    if !bytes.len().is_multiple_of(INSN_SIZE) {
        return Err(DecodeError { len: bytes.len() });
    }
    let insns = bytes
        .chunks_exact(INSN_SIZE)
        .map(|slot| {
            let mut raw = [0u8; INSN_SIZE];
            raw.copy_from_slice(slot);
            Insn::from_bytes(raw)
        })
        .collect();
    Ok(Program { insns })
}

/// Encodes instruction slots into raw little-endian code.
pub fn encode(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(|insn| insn.to_bytes()).collect()
}

impl fmt::Display for Insn {
    /// The raw fields; the disassembler gives the readable form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{op {:#04x} dst r{} src r{} off {} imm {}}}",
            self.opcode, self.dst, self.src, self.off, self.imm
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_round_trips_every_field() {
        let insn = Insn::new(0x61, 3, 1, -4, 0x7fff_fffe);
        let bytes = insn.to_bytes();
        assert_eq!(bytes, [0x61, 0x13, 0xfc, 0xff, 0xfe, 0xff, 0xff, 0x7f]);
        assert_eq!(Insn::from_bytes(bytes), insn);
    }

    #[test]
    fn decode_refuses_partial_slots_and_reads_lddw() {
        assert_eq!(decode(&[0; 12]), Err(DecodeError { len: 12 }));
        let lddw = [
            Insn::new(opcode::LDDW, 1, 0, 0, 0x1122_3344),
            Insn::new(0, 0, 0, 0, 0x5566_7788),
        ];
        let program = decode(&encode(&lddw)).unwrap();
        assert_eq!(program.lddw_value(0), Some(0x5566_7788_1122_3344));
        assert_eq!(program.lddw_value(1), None);
    }
}
