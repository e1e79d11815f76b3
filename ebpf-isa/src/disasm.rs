//! A disassembler to the syntax [`asm`](crate::asm) reads.
//!
//! Jump targets are printed as signed slot distances (`+3`, `-2`), immediates in decimal and
//! `lddw` constants in hex, so that `assemble(&disassemble(x)?.join("\n")) == x` for every
//! program the disassembler accepts.
//!
//! That round trip is the contract, so the disassembler refuses what the syntax cannot express
//! rather than print something that would assemble to other bytes: an unknown opcode, a field
//! the instruction does not use but which is not zero (bpf_conformance's `negative/unused-*`
//! files), a register above `r10`, an unknown atomic operation, or an `lddw` without a proper
//! second slot. [`Insn`]'s `Display` prints the raw fields of such a slot.

use std::fmt;

use thiserror::Error;

use crate::Insn;
use crate::opcode::*;

/// A field of an instruction slot, as named in error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// The destination register.
    Dst,
    /// The source register (for `lddw` and `call`, a pseudo kind).
    Src,
    /// The 16-bit offset.
    Off,
    /// The 32-bit immediate.
    Imm,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Dst => "dst",
            Field::Src => "src",
            Field::Off => "off",
            Field::Imm => "imm",
        })
    }
}

/// Why a slot could not be printed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DisasmError {
    /// The opcode byte is not an eBPF instruction.
    #[error("slot {index}: unknown opcode {opcode:#04x}")]
    UnknownOpcode {
        /// Slot index in the program.
        index: usize,
        /// The opcode byte.
        opcode: u8,
    },
    /// A field holds a value the instruction does not allow: a register above `r10`, a non-zero
    /// unused field, a byte-swap width other than 16/32/64, an unknown call or `lddw` kind, an
    /// unknown atomic operation.
    #[error("slot {index}: opcode {opcode:#04x} does not allow {field} = {value}")]
    InvalidField {
        /// Slot index in the program.
        index: usize,
        /// The opcode byte.
        opcode: u8,
        /// The offending field.
        field: Field,
        /// Its value.
        value: i64,
    },
    /// An `lddw` in the last slot.
    #[error("slot {index}: lddw needs a second slot but the program ends")]
    TruncatedLddw {
        /// Slot index of the `lddw`.
        index: usize,
    },
    /// The second slot of an `lddw` has something besides its immediate.
    #[error("slot {index}: the second slot of an lddw may only hold imm, found {slot}")]
    BadLddwSecondSlot {
        /// Slot index of the second slot.
        index: usize,
        /// The slot.
        slot: Insn,
    },
    /// `disassemble_one` was asked for a slot the program does not have.
    #[error("slot {index} is past the end of a {len}-slot program")]
    IndexOutOfRange {
        /// The requested index.
        index: usize,
        /// The program's length in slots.
        len: usize,
    },
}

/// Disassembles a whole program: one line per instruction (an `lddw` gives one line for its two
/// slots).
///
/// ```
/// use ebpf_isa::{asm::assemble, disasm::disassemble};
///
/// let slots = assemble("lddw %r0, 0x1122334455667788\njeq %r0, 0, done\nmov32 %r0, 1\ndone: exit")
///     .unwrap();
/// let lines = disassemble(&slots).unwrap();
/// assert_eq!(
///     lines,
///     ["lddw %r0, 0x1122334455667788", "jeq %r0, 0, +1", "mov32 %r0, 1", "exit"]
/// );
/// assert_eq!(assemble(&lines.join("\n")).unwrap(), slots);
/// ```
pub fn disassemble(insns: &[Insn]) -> Result<Vec<String>, DisasmError> {
    let mut lines = Vec::new();
    let mut index = 0;
    while index < insns.len() {
        lines.push(disassemble_one(insns, index)?);
        index += if insns[index].is_lddw() { 2 } else { 1 };
    }
    Ok(lines)
}

/// Disassembles the instruction at slot `index` (with the next slot too if it is an `lddw`), for
/// messages that point at one instruction.
pub fn disassemble_one(insns: &[Insn], index: usize) -> Result<String, DisasmError> {
    let insn = *insns.get(index).ok_or(DisasmError::IndexOutOfRange {
        index,
        len: insns.len(),
    })?;
    let slot = Slot { index, insn };
    match insn.class() {
        CLASS_LD => slot.ld(insns.get(index + 1).copied()),
        CLASS_LDX => slot.ldx(),
        CLASS_ST => slot.st(),
        CLASS_STX => slot.stx(),
        CLASS_JMP | CLASS_JMP32 => slot.jmp(),
        // The class is three bits: ALU and ALU64 are all that is left.
        _ => slot.alu(),
    }
}

/// The slot being printed, with the checks that every printer shares.
struct Slot {
    index: usize,
    insn: Insn,
}

impl Slot {
    fn unknown(&self) -> DisasmError {
        DisasmError::UnknownOpcode {
            index: self.index,
            opcode: self.insn.opcode,
        }
    }

    fn value(&self, field: Field) -> i64 {
        match field {
            Field::Dst => i64::from(self.insn.dst),
            Field::Src => i64::from(self.insn.src),
            Field::Off => i64::from(self.insn.off),
            Field::Imm => i64::from(self.insn.imm),
        }
    }

    fn invalid(&self, field: Field) -> DisasmError {
        DisasmError::InvalidField {
            index: self.index,
            opcode: self.insn.opcode,
            field,
            value: self.value(field),
        }
    }

    /// Refuses a non-zero field that the syntax has no place for.
    fn zero(&self, fields: &[Field]) -> Result<(), DisasmError> {
        match fields.iter().find(|&&field| self.value(field) != 0) {
            Some(&field) => Err(self.invalid(field)),
            None => Ok(()),
        }
    }

    /// The register in `field` (`Dst` or `Src`), printed.
    fn reg(&self, field: Field) -> Result<String, DisasmError> {
        let number = self.value(field);
        if (0..=10).contains(&number) {
            Ok(format!("%r{number}"))
        } else {
            Err(self.invalid(field))
        }
    }

    /// `[%rN+off]` from the register in `field` and `off`.
    fn memory(&self, field: Field) -> Result<String, DisasmError> {
        let reg = self.reg(field)?;
        Ok(match self.insn.off {
            0 => format!("[{reg}]"),
            off => format!("[{reg}{off:+}]"),
        })
    }

    fn ld(&self, next: Option<Insn>) -> Result<String, DisasmError> {
        let opcode = self.insn.opcode;
        let size = size_name(size(opcode));
        match mode(opcode) {
            MODE_IMM if opcode == LDDW => {
                self.zero(&[Field::Off])?;
                let dst = self.reg(Field::Dst)?;
                let second = next.ok_or(DisasmError::TruncatedLddw { index: self.index })?;
                if second.opcode != 0 || second.dst != 0 || second.src != 0 || second.off != 0 {
                    return Err(DisasmError::BadLddwSecondSlot {
                        index: self.index + 1,
                        slot: second,
                    });
                }
                let (low, high) = (self.insn.imm, second.imm);
                match self.insn.src {
                    PSEUDO_NONE => {
                        let value = u64::from(low as u32) | (u64::from(high as u32) << 32);
                        Ok(format!("lddw {dst}, {value:#x}"))
                    }
                    PSEUDO_MAP_FD if high == 0 => Ok(format!("lddw {dst}, map_fd {low}")),
                    // A map fd has no offset: the second immediate must stay zero.
                    PSEUDO_MAP_FD => Err(DisasmError::InvalidField {
                        index: self.index + 1,
                        opcode: second.opcode,
                        field: Field::Imm,
                        value: i64::from(high),
                    }),
                    PSEUDO_MAP_VALUE => Ok(format!("lddw {dst}, map_value {low}{high:+}")),
                    _ => Err(self.invalid(Field::Src)),
                }
            }
            MODE_ABS => {
                self.zero(&[Field::Dst, Field::Src, Field::Off])?;
                Ok(format!("ldabs{size} {}", self.insn.imm))
            }
            MODE_IND => {
                self.zero(&[Field::Dst, Field::Off])?;
                let src = self.reg(Field::Src)?;
                Ok(format!("ldind{size} {src}, {}", self.insn.imm))
            }
            _ => Err(self.unknown()),
        }
    }

    fn ldx(&self) -> Result<String, DisasmError> {
        let opcode = self.insn.opcode;
        let name = match (mode(opcode), size(opcode)) {
            (MODE_MEM, size) => format!("ldx{}", size_name(size)),
            (MODE_MEMSX, size) if size != SIZE_DW => format!("ldxs{}", size_name(size)),
            _ => return Err(self.unknown()),
        };
        self.zero(&[Field::Imm])?;
        let dst = self.reg(Field::Dst)?;
        let memory = self.memory(Field::Src)?;
        Ok(format!("{name} {dst}, {memory}"))
    }

    fn st(&self) -> Result<String, DisasmError> {
        let opcode = self.insn.opcode;
        if mode(opcode) != MODE_MEM {
            return Err(self.unknown());
        }
        self.zero(&[Field::Src])?;
        let memory = self.memory(Field::Dst)?;
        Ok(format!(
            "st{} {memory}, {}",
            size_name(size(opcode)),
            self.insn.imm
        ))
    }

    fn stx(&self) -> Result<String, DisasmError> {
        let opcode = self.insn.opcode;
        match mode(opcode) {
            MODE_MEM => {
                self.zero(&[Field::Imm])?;
                let memory = self.memory(Field::Dst)?;
                let src = self.reg(Field::Src)?;
                Ok(format!("stx{} {memory}, {src}", size_name(size(opcode))))
            }
            MODE_ATOMIC => {
                let suffix = match size(opcode) {
                    SIZE_W => "32",
                    SIZE_DW => "",
                    _ => return Err(self.unknown()),
                };
                let imm = self.insn.imm;
                let (fetch, operation) = match imm {
                    // These always fetch: the assembler sets the bit itself.
                    ATOMIC_XCHG => ("", "xchg"),
                    ATOMIC_CMPXCHG => ("", "cmpxchg"),
                    _ => {
                        let fetch = if imm & ATOMIC_FETCH != 0 {
                            "fetch "
                        } else {
                            ""
                        };
                        let operation = match imm & !ATOMIC_FETCH {
                            ATOMIC_ADD => "add",
                            ATOMIC_OR => "or",
                            ATOMIC_AND => "and",
                            ATOMIC_XOR => "xor",
                            _ => return Err(self.invalid(Field::Imm)),
                        };
                        (fetch, operation)
                    }
                };
                let memory = self.memory(Field::Dst)?;
                let src = self.reg(Field::Src)?;
                Ok(format!("lock {fetch}{operation}{suffix} {memory}, {src}"))
            }
            _ => Err(self.unknown()),
        }
    }

    fn alu(&self) -> Result<String, DisasmError> {
        let opcode = self.insn.opcode;
        let is64 = self.insn.class() == CLASS_ALU64;
        let by_register = source(opcode) == SRC_X;
        let suffix = if is64 { "" } else { "32" };
        // Each arm checks the opcode before the fields, so that an unknown opcode is reported
        // as such whatever its fields hold.
        let dst = || self.reg(Field::Dst);
        match operation(opcode) {
            ALU_END => {
                let name = match (is64, by_register) {
                    (false, false) => "le",
                    (false, true) => "be",
                    (true, false) => "bswap",
                    (true, true) => return Err(self.unknown()),
                };
                self.zero(&[Field::Src, Field::Off])?;
                match self.insn.imm {
                    16 | 32 | 64 => Ok(format!("{name}{} {}", self.insn.imm, dst()?)),
                    _ => Err(self.invalid(Field::Imm)),
                }
            }
            ALU_NEG => {
                if by_register {
                    return Err(self.unknown());
                }
                self.zero(&[Field::Src, Field::Off, Field::Imm])?;
                Ok(format!("neg{suffix} {}", dst()?))
            }
            ALU_MOV if by_register && self.insn.off != 0 => {
                match (self.insn.off, is64) {
                    (8 | 16, _) | (32, true) => {}
                    _ => return Err(self.invalid(Field::Off)),
                }
                self.zero(&[Field::Imm])?;
                let src = self.reg(Field::Src)?;
                let width = if is64 { 64 } else { 32 };
                Ok(format!("movsx{}{width} {}, {src}", self.insn.off, dst()?))
            }
            operation => {
                let name = match operation {
                    ALU_ADD => "add",
                    ALU_SUB => "sub",
                    ALU_MUL => "mul",
                    ALU_DIV => "div",
                    ALU_OR => "or",
                    ALU_AND => "and",
                    ALU_LSH => "lsh",
                    ALU_RSH => "rsh",
                    ALU_MOD => "mod",
                    ALU_XOR => "xor",
                    ALU_MOV => "mov",
                    ALU_ARSH => "arsh",
                    _ => return Err(self.unknown()),
                };
                let signed = match (operation, self.insn.off) {
                    (_, 0) => "",
                    (ALU_DIV | ALU_MOD, 1) => "s",
                    _ => return Err(self.invalid(Field::Off)),
                };
                let dst = dst()?;
                let operand = self.operand(by_register)?;
                Ok(format!("{signed}{name}{suffix} {dst}, {operand}"))
            }
        }
    }

    /// The source operand of an ALU or jump instruction: the `src` register (with `imm` zero) or
    /// `imm` (with `src` zero).
    fn operand(&self, by_register: bool) -> Result<String, DisasmError> {
        if by_register {
            self.zero(&[Field::Imm])?;
            self.reg(Field::Src)
        } else {
            self.zero(&[Field::Src])?;
            Ok(self.insn.imm.to_string())
        }
    }

    fn jmp(&self) -> Result<String, DisasmError> {
        let opcode = self.insn.opcode;
        let is32 = self.insn.class() == CLASS_JMP32;
        let by_register = source(opcode) == SRC_X;
        let off = self.insn.off;
        match operation(opcode) {
            JMP_JA if by_register => Err(self.unknown()),
            JMP_JA if is32 => {
                self.zero(&[Field::Dst, Field::Src, Field::Off])?;
                Ok(format!("ja32 {:+}", self.insn.imm))
            }
            JMP_JA => {
                self.zero(&[Field::Dst, Field::Src, Field::Imm])?;
                Ok(format!("ja {off:+}"))
            }
            JMP_CALL | JMP_EXIT if is32 => Err(self.unknown()),
            JMP_CALL if by_register => {
                self.zero(&[Field::Src, Field::Off, Field::Imm])?;
                Ok(format!("call {}", self.reg(Field::Dst)?))
            }
            JMP_CALL => {
                self.zero(&[Field::Dst, Field::Off])?;
                let imm = self.insn.imm;
                match self.insn.src {
                    CALL_HELPER => Ok(format!("call {imm}")),
                    CALL_LOCAL => Ok(format!("call local {imm:+}")),
                    CALL_KFUNC => Ok(format!("call runtime {imm}")),
                    _ => Err(self.invalid(Field::Src)),
                }
            }
            JMP_EXIT if by_register => Err(self.unknown()),
            JMP_EXIT => {
                self.zero(&[Field::Dst, Field::Src, Field::Off, Field::Imm])?;
                Ok("exit".to_string())
            }
            operation => {
                let name = match operation {
                    JMP_JEQ => "jeq",
                    JMP_JGT => "jgt",
                    JMP_JGE => "jge",
                    JMP_JSET => "jset",
                    JMP_JNE => "jne",
                    JMP_JSGT => "jsgt",
                    JMP_JSGE => "jsge",
                    JMP_JLT => "jlt",
                    JMP_JLE => "jle",
                    JMP_JSLT => "jslt",
                    JMP_JSLE => "jsle",
                    _ => return Err(self.unknown()),
                };
                let suffix = if is32 { "32" } else { "" };
                let dst = self.reg(Field::Dst)?;
                let operand = self.operand(by_register)?;
                Ok(format!("{name}{suffix} {dst}, {operand}, {off:+}"))
            }
        }
    }
}

fn size_name(size: u8) -> &'static str {
    match size {
        SIZE_W => "w",
        SIZE_H => "h",
        SIZE_B => "b",
        _ => "dw",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::assemble;

    /// Assembles `line`, checks that it prints back as exactly `line`.
    fn same(line: &str) {
        let slots = assemble(line).unwrap();
        assert_eq!(disassemble(&slots).unwrap(), [line], "{line}");
    }

    #[test]
    fn every_family_prints_back_as_written() {
        for line in [
            "add %r1, %r2",
            "add32 %r1, -5",
            "sdiv %r1, 3",
            "smod32 %r1, %r2",
            "neg %r1",
            "neg32 %r9",
            "mov %r0, -1",
            "movsx864 %r6, %r5",
            "movsx3264 %r0, %r9",
            "movsx1632 %r4, %r3",
            "le16 %r0",
            "be64 %r1",
            "bswap32 %r2",
            "lddw %r0, 0x1122334455667788",
            "lddw %r1, map_fd 3",
            "lddw %r1, map_value 3+16",
            "lddw %r1, map_value 3-16",
            "ldxb %r0, [%r1+2]",
            "ldxdw %r0, [%r10-8]",
            "ldxw %r0, [%r1]",
            "ldxsh %r0, [%r10-2]",
            "stw [%r1+2], 5",
            "stxdw [%r10-8], %r0",
            "lock add [%r10-8], %r1",
            "lock fetch and32 [%r10-4], %r3",
            "lock xchg [%r10-8], %r1",
            "lock cmpxchg32 [%r10-8], %r1",
            "ldabsw 12",
            "ldinddw %r1, -4",
            "ja +3",
            "ja -1",
            "ja32 +70000",
            "jeq %r1, 5, +0",
            "jsle32 %r1, %r2, -2",
            "call 5",
            "call -1",
            "call local -3",
            "call runtime 7",
            "call %r2",
            "exit",
        ] {
            same(line);
        }
    }

    #[test]
    fn disassemble_one_points_at_a_slot() {
        let slots = assemble("mov %r0, 1\nlddw %r1, 0x100000000\nexit").unwrap();
        assert_eq!(disassemble_one(&slots, 1).unwrap(), "lddw %r1, 0x100000000");
        assert_eq!(disassemble_one(&slots, 3).unwrap(), "exit");
        // The second slot of an lddw is not an instruction.
        assert_eq!(
            disassemble_one(&slots, 2),
            Err(DisasmError::UnknownOpcode {
                index: 2,
                opcode: 0
            })
        );
        assert_eq!(
            disassemble_one(&slots, 4),
            Err(DisasmError::IndexOutOfRange { index: 4, len: 4 })
        );
    }

    #[test]
    fn refuses_what_it_cannot_print_faithfully() {
        let refused = |insn: Insn| disassemble(&[insn]).unwrap_err();
        assert_eq!(
            refused(Insn::new(0xff, 0, 0, 0, 0)),
            DisasmError::UnknownOpcode {
                index: 0,
                opcode: 0xff
            }
        );
        // Unused fields must be zero (bpf_conformance negative/unused-*).
        assert_eq!(
            refused(Insn::new(0x07, 0, 0, 1, 1)),
            DisasmError::InvalidField {
                index: 0,
                opcode: 0x07,
                field: Field::Off,
                value: 1
            }
        );
        assert!(matches!(
            refused(Insn::new(0x95, 0, 1, 0, 0)),
            DisasmError::InvalidField {
                field: Field::Src,
                ..
            }
        ));
        assert!(matches!(
            refused(Insn::new(0xb7, 11, 0, 0, 0)),
            DisasmError::InvalidField {
                field: Field::Dst,
                value: 11,
                ..
            }
        ));
        assert!(matches!(
            refused(Insn::new(0xd4, 0, 0, 0, 8)),
            DisasmError::InvalidField {
                field: Field::Imm,
                value: 8,
                ..
            }
        ));
        assert!(matches!(
            refused(Insn::new(0xbc, 0, 1, 32, 0)),
            DisasmError::InvalidField {
                field: Field::Off,
                value: 32,
                ..
            }
        ));
        assert!(matches!(
            refused(Insn::new(0x3f, 0, 1, 2, 0)),
            DisasmError::InvalidField {
                field: Field::Off,
                value: 2,
                ..
            }
        ));
        assert!(matches!(
            refused(Insn::new(0xdb, 10, 1, -8, 0x02)),
            DisasmError::InvalidField {
                field: Field::Imm,
                value: 2,
                ..
            }
        ));
        assert!(matches!(
            refused(Insn::new(0x85, 0, 3, 0, 0)),
            DisasmError::InvalidField {
                field: Field::Src,
                value: 3,
                ..
            }
        ));
        for opcode in [
            0x8c, 0x8f, 0xdf, 0x9d, 0x86, 0x96, 0x0d, 0x99, 0xd3, 0xe7, 0xf5, 0x10,
        ] {
            assert!(
                matches!(
                    refused(Insn::new(opcode, 0, 0, 0, 0)),
                    DisasmError::UnknownOpcode { .. }
                ),
                "{opcode:#04x}"
            );
        }
        assert_eq!(
            refused(Insn::new(LDDW, 0, 0, 0, 1)),
            DisasmError::TruncatedLddw { index: 0 }
        );
        assert!(matches!(
            disassemble(&[Insn::new(LDDW, 0, 0, 0, 1), Insn::new(0, 0, 0, 1, 0)]),
            Err(DisasmError::BadLddwSecondSlot { index: 1, .. })
        ));
    }

    #[test]
    fn errors_display_on_one_line_with_the_slot() {
        let message = disassemble(&[Insn::new(0x95, 0, 0, 0, 0), Insn::new(0xff, 0, 0, 0, 0)])
            .unwrap_err()
            .to_string();
        assert_eq!(message, "slot 1: unknown opcode 0xff");
        let message = disassemble(&[Insn::new(0x07, 0, 1, 0, 1)])
            .unwrap_err()
            .to_string();
        assert_eq!(message, "slot 0: opcode 0x07 does not allow src = 1");
    }
}
