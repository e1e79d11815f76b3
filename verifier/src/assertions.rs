//! What each instruction needs to be safe: a closed set of assertions, derived from the
//! instruction alone. [`crate::checks`] proves or refutes them against an abstract state;
//! [`crate::transfer`] applies the instruction assuming they hold.

use ebpf_isa::{Insn, opcode as op};

use crate::error::AccessKind;

/// The second operand of an ALU, jump or store instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    Reg(u8),
    Imm(i64),
}

/// One fact an instruction needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assertion {
    /// The register has been written on every path.
    Initialized { reg: u8 },
    /// `[reg + off, reg + off + width)` may be accessed this way; a write stores `value`.
    ValidAccess {
        reg: u8,
        off: i16,
        width: u8,
        access: AccessKind,
        value: Option<Operand>,
    },
    /// The ALU operation is allowed on the operand kinds (pointer arithmetic rules).
    ValidArithmetic {
        operation: u8,
        dst: u8,
        src: Operand,
        alu64: bool,
    },
    /// The comparison is between comparable kinds.
    ValidComparison { left: u8, right: Operand },
    /// Each argument register of the helper has the kind the helper needs.
    HelperArgs { helper: i32 },
    /// `r0` is a value the caller may receive (an initialised scalar for the program; for a
    /// subprogram anything but a pointer into its own frame — possibly uninitialised, as the
    /// kernel lets a subprogram such as `memset` return nothing and only refuses a later read).
    ValidReturn,
    /// Every loop through this head terminates within the analysis' cap (checked by
    /// [`crate::bound`] when a back edge is taken).
    BoundedLoop { head: usize },
}

fn operand(insn: Insn) -> Operand {
    if op::source(insn.opcode) == op::SRC_X {
        Operand::Reg(insn.src)
    } else {
        Operand::Imm(i64::from(insn.imm))
    }
}

/// The assertions of the instruction at `pc`; `loop_head` says whether `pc` heads a loop.
pub fn of(insn: Insn, loop_head: bool, pc: usize) -> Vec<Assertion> {
    let mut out = Vec::new();
    push_of(insn, loop_head, pc, &mut out);
    out
}

/// [`of`], appended to `out` (one buffer for a whole program instead of one per instruction).
pub fn push_of(insn: Insn, loop_head: bool, pc: usize, out: &mut Vec<Assertion>) {
    use Assertion::*;
    if loop_head {
        out.push(BoundedLoop { head: pc });
    }
    let width = op::size_bytes(op::size(insn.opcode)) as u8;
    match insn.class() {
        op::CLASS_ALU | op::CLASS_ALU64 => {
            let operation = op::operation(insn.opcode);
            // A byte swap's source bit picks the byte order, not a register.
            let src = if operation == op::ALU_END {
                Operand::Imm(i64::from(insn.imm))
            } else {
                operand(insn)
            };
            if let Operand::Reg(reg) = src {
                out.push(Initialized { reg });
            }
            if operation != op::ALU_MOV {
                out.push(Initialized { reg: insn.dst });
            }
            out.push(ValidArithmetic {
                operation,
                dst: insn.dst,
                src,
                alu64: insn.class() == op::CLASS_ALU64,
            });
        }
        op::CLASS_LDX => {
            out.push(Initialized { reg: insn.src });
            out.push(ValidAccess {
                reg: insn.src,
                off: insn.off,
                width,
                access: AccessKind::Read,
                value: None,
            });
        }
        op::CLASS_ST => {
            out.push(Initialized { reg: insn.dst });
            out.push(ValidAccess {
                reg: insn.dst,
                off: insn.off,
                width,
                access: AccessKind::Write,
                value: Some(Operand::Imm(i64::from(insn.imm))),
            });
        }
        op::CLASS_STX => {
            out.push(Initialized { reg: insn.dst });
            out.push(Initialized { reg: insn.src });
            let atomic = op::mode(insn.opcode) == op::MODE_ATOMIC;
            if atomic && insn.imm == op::ATOMIC_CMPXCHG {
                out.push(Initialized { reg: 0 });
            }
            out.push(ValidAccess {
                reg: insn.dst,
                off: insn.off,
                width,
                access: if atomic {
                    AccessKind::Atomic
                } else {
                    AccessKind::Write
                },
                value: Some(Operand::Reg(insn.src)),
            });
        }
        op::CLASS_JMP | op::CLASS_JMP32 => match op::operation(insn.opcode) {
            op::JMP_JA => {}
            op::JMP_CALL if insn.is_helper_call() => out.push(HelperArgs { helper: insn.imm }),
            op::JMP_CALL => {}
            // Whether r0 must be initialised depends on the frame: see `checks::valid_return`.
            op::JMP_EXIT => out.push(ValidReturn),
            _ => {
                let right = operand(insn);
                out.push(Initialized { reg: insn.dst });
                if let Operand::Reg(reg) = right {
                    out.push(Initialized { reg });
                }
                out.push(ValidComparison {
                    left: insn.dst,
                    right,
                });
            }
        },
        // `lddw` needs nothing: its map index was checked with the program's shape.
        _ => {}
    }
}
