//! What the instructions compute: the eBPF ISA's (RFC 9669) arithmetic and comparison
//! semantics on concrete values — division by zero, shift masking, 32-bit zero extension,
//! signed forms, byte swaps. The VM's interpreter executes with these, and the verifier
//! evaluates constants with them, so the two can never disagree on what an instruction means.

use crate::Insn;
use crate::opcode as op;

/// `value`'s low `bits` bits, sign-extended to 64 bits.
#[inline]
pub fn sign_extend(value: u64, bits: usize) -> u64 {
    let shift = 64 - bits;
    (((value << shift) as i64) >> shift) as u64
}

/// One ALU operation; `None` for an opcode that is not one.
/// One ALU instruction (class ALU or ALU64 by `is64`) on the destination value `dst` and the
/// operand (`imm` sign-extended, or the source register): the new destination value, or `None`
/// for an opcode/offset/immediate combination that is not an instruction. `off` selects the
/// signed forms of division and modulo (1) and the sign-extending moves (8, 16, 32).
#[inline(always)]
pub fn alu(insn: Insn, dst: u64, operand: u64, is64: bool) -> Option<u64> {
    let operation = op::operation(insn.opcode);
    let signed = insn.off == 1;
    if is64 {
        let result = match operation {
            op::ALU_ADD => dst.wrapping_add(operand),
            op::ALU_SUB => dst.wrapping_sub(operand),
            op::ALU_MUL => dst.wrapping_mul(operand),
            op::ALU_DIV if signed => {
                if operand == 0 {
                    0
                } else {
                    (dst as i64).wrapping_div(operand as i64) as u64
                }
            }
            op::ALU_DIV => dst.checked_div(operand).unwrap_or(0),
            op::ALU_MOD if signed => {
                if operand == 0 {
                    dst
                } else {
                    (dst as i64).wrapping_rem(operand as i64) as u64
                }
            }
            op::ALU_MOD => dst.checked_rem(operand).unwrap_or(dst),
            op::ALU_OR => dst | operand,
            op::ALU_AND => dst & operand,
            op::ALU_XOR => dst ^ operand,
            op::ALU_LSH => dst.wrapping_shl((operand & 63) as u32),
            op::ALU_RSH => dst.wrapping_shr((operand & 63) as u32),
            op::ALU_ARSH => ((dst as i64).wrapping_shr((operand & 63) as u32)) as u64,
            op::ALU_NEG => dst.wrapping_neg(),
            op::ALU_MOV => match insn.off {
                0 => operand,
                8 | 16 | 32 => sign_extend(operand, insn.off as usize),
                _ => return None,
            },
            op::ALU_END => {
                // 64-bit END is the unconditional `bswap`.
                match insn.imm {
                    16 => u64::from((dst as u16).swap_bytes()),
                    32 => u64::from((dst as u32).swap_bytes()),
                    64 => dst.swap_bytes(),
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(result)
    } else {
        let d = dst as u32;
        let s = operand as u32;
        let result: u32 = match operation {
            op::ALU_ADD => d.wrapping_add(s),
            op::ALU_SUB => d.wrapping_sub(s),
            op::ALU_MUL => d.wrapping_mul(s),
            op::ALU_DIV if signed => {
                if s == 0 {
                    0
                } else {
                    (d as i32).wrapping_div(s as i32) as u32
                }
            }
            op::ALU_DIV => d.checked_div(s).unwrap_or(0),
            op::ALU_MOD if signed => {
                if s == 0 {
                    d
                } else {
                    (d as i32).wrapping_rem(s as i32) as u32
                }
            }
            op::ALU_MOD => d.checked_rem(s).unwrap_or(d),
            op::ALU_OR => d | s,
            op::ALU_AND => d & s,
            op::ALU_XOR => d ^ s,
            op::ALU_LSH => d.wrapping_shl(s & 31),
            op::ALU_RSH => d.wrapping_shr(s & 31),
            op::ALU_ARSH => ((d as i32).wrapping_shr(s & 31)) as u32,
            op::ALU_NEG => d.wrapping_neg(),
            op::ALU_MOV => match insn.off {
                0 => s,
                8 | 16 => sign_extend(u64::from(s), insn.off as usize) as u32,
                _ => return None,
            },
            op::ALU_END => {
                // In the 32-bit class the source bit picks the byte order; this host is
                // little-endian, so `le` only truncates and `be` swaps.
                let to_be = op::source(insn.opcode) == op::SRC_X;
                return match (insn.imm, to_be) {
                    (16, false) => Some(dst & 0xffff),
                    (32, false) => Some(dst & 0xffff_ffff),
                    (64, false) => Some(dst),
                    (16, true) => Some(u64::from((dst as u16).swap_bytes())),
                    (32, true) => Some(u64::from((dst as u32).swap_bytes())),
                    (64, true) => Some(dst.swap_bytes()),
                    _ => None,
                };
            }
            _ => return None,
        };
        Some(u64::from(result))
    }
}

/// A conditional jump's condition (class JMP, or JMP32 comparing the low halves when `is32`);
/// `None` for an operation that is not a comparison.
#[inline(always)]
pub fn condition(operation: u8, dst: u64, operand: u64, is32: bool) -> Option<bool> {
    let (a, b, sa, sb) = if is32 {
        let (a, b) = (dst as u32, operand as u32);
        (
            u64::from(a),
            u64::from(b),
            i64::from(a as i32),
            i64::from(b as i32),
        )
    } else {
        (dst, operand, dst as i64, operand as i64)
    };
    Some(match operation {
        op::JMP_JEQ => a == b,
        op::JMP_JNE => a != b,
        op::JMP_JGT => a > b,
        op::JMP_JGE => a >= b,
        op::JMP_JLT => a < b,
        op::JMP_JLE => a <= b,
        op::JMP_JSET => a & b != 0,
        op::JMP_JSGT => sa > sb,
        op::JMP_JSGE => sa >= sb,
        op::JMP_JSLT => sa < sb,
        op::JMP_JSLE => sa <= sb,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alu64(operation: u8, off: i16, dst: u64, operand: u64) -> u64 {
        let insn = Insn::new(op::CLASS_ALU64 | op::SRC_X | operation, 0, 1, off, 0);
        alu(insn, dst, operand, true).unwrap()
    }

    fn alu32(operation: u8, off: i16, dst: u64, operand: u64) -> u64 {
        let insn = Insn::new(op::CLASS_ALU | op::SRC_X | operation, 0, 1, off, 0);
        alu(insn, dst, operand, false).unwrap()
    }

    #[test]
    fn division_by_zero_follows_the_isa() {
        assert_eq!(alu64(op::ALU_DIV, 0, 7, 0), 0);
        assert_eq!(alu64(op::ALU_MOD, 0, 7, 0), 7);
        assert_eq!(alu64(op::ALU_DIV, 1, 7, 0), 0);
        assert_eq!(alu64(op::ALU_MOD, 1, 7, 0), 7);
        // 32-bit modulo by zero keeps the low half, zero-extended.
        assert_eq!(alu32(op::ALU_MOD, 0, 0x1_0000_0007, 0), 7);
        assert_eq!(
            alu64(op::ALU_DIV, 1, i64::MIN as u64, u64::MAX),
            i64::MIN as u64
        );
        assert_eq!(alu64(op::ALU_MOD, 1, i64::MIN as u64, u64::MAX), 0);
        assert_eq!(alu64(op::ALU_DIV, 1, (-7i64) as u64, 2), (-3i64) as u64);
        assert_eq!(alu64(op::ALU_MOD, 1, (-7i64) as u64, 2), (-1i64) as u64);
    }

    #[test]
    fn shifts_mask_and_32_bit_results_zero_extend() {
        assert_eq!(alu64(op::ALU_LSH, 0, 1, 65), 2);
        assert_eq!(alu32(op::ALU_LSH, 0, 1, 33), 2);
        assert_eq!(alu32(op::ALU_ARSH, 0, 0x8000_0000, 4), 0xf800_0000);
        assert_eq!(alu32(op::ALU_ADD, 0, u64::MAX, 1), 0);
        assert_eq!(alu64(op::ALU_MOV, 8, 0, 0x80), 0xffff_ffff_ffff_ff80);
        assert_eq!(alu32(op::ALU_MOV, 16, 0, 0x8000), 0xffff_8000);
    }

    #[test]
    fn byte_order_conversions() {
        let end = |class: u8, source: u8, imm: i32, value: u64| {
            let insn = Insn::new(class | source | op::ALU_END, 0, 0, 0, imm);
            alu(insn, value, 0, class == op::CLASS_ALU64).unwrap()
        };
        assert_eq!(end(op::CLASS_ALU, op::SRC_X, 16, 0x1122_3344), 0x4433);
        assert_eq!(end(op::CLASS_ALU, op::SRC_K, 16, 0x1122_3344), 0x3344);
        assert_eq!(
            end(op::CLASS_ALU64, op::SRC_K, 64, 0x0102_0304_0506_0708),
            0x0807_0605_0403_0201
        );
        assert!(alu(Insn::new(0xd4, 0, 0, 0, 12), 0, 0, false).is_none());
    }

    #[test]
    fn conditions_compare_signed_and_32_bit() {
        assert_eq!(condition(op::JMP_JSGT, 1, u64::MAX, false), Some(true));
        assert_eq!(condition(op::JMP_JGT, 1, u64::MAX, false), Some(false));
        assert_eq!(condition(op::JMP_JEQ, 0x1_0000_0001, 1, true), Some(true));
        assert_eq!(condition(op::JMP_JSLT, 0xffff_ffff, 0, true), Some(true));
        assert_eq!(condition(0xe0, 0, 0, false), None);
    }
}
