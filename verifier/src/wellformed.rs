//! Well-formed code: valid opcodes, registers and reserved fields, `lddw` pairs and map
//! references, jumps inside the program and never into an `lddw`'s second slot, every path
//! ending in `exit`, nothing unreachable, `r10` never written, calls only to known helpers or
//! to subprograms.

use ebpf_isa::{Insn, opcode as op};

use crate::cfg::Cfg;
use crate::error::{ErrorKind, Located};
use crate::{ProgramInput, ProgramKind, helpers};

/// Largest program the verifier accepts: the kernel's BPF_MAXINSNS for privileged loaders is
/// one million slots; the analysis cost is linear in it for loop-free code.
pub const MAX_PROGRAM_SLOTS: usize = 1_000_000;

/// Frame pointer register.
pub const R10: u8 = 10;

fn reserved(field: &'static str, value: i64, expected: &'static str) -> ErrorKind {
    ErrorKind::ReservedField {
        field,
        value,
        expected,
    }
}

fn zero(field: &'static str, value: i64) -> Result<(), ErrorKind> {
    if value == 0 {
        Ok(())
    } else {
        Err(reserved(field, value, "0"))
    }
}

/// Does `insn` write its `dst` register?
fn writes_dst(insn: Insn) -> bool {
    match insn.class() {
        op::CLASS_ALU | op::CLASS_ALU64 | op::CLASS_LDX => true,
        op::CLASS_LD => insn.is_lddw(),
        _ => false,
    }
}

/// The checks of one instruction on its own.
pub fn check_insn(insn: Insn, kind: ProgramKind) -> Result<(), ErrorKind> {
    let opcode = insn.opcode;
    let src_x = op::source(opcode) == op::SRC_X;
    let (imm, off, src, dst) = (i64::from(insn.imm), i64::from(insn.off), insn.src, insn.dst);
    let invalid = || ErrorKind::InvalidOpcode { opcode };
    if dst > R10 {
        return Err(ErrorKind::InvalidRegister { reg: dst });
    }
    match insn.class() {
        op::CLASS_ALU | op::CLASS_ALU64 => {
            let alu64 = insn.class() == op::CLASS_ALU64;
            let operation = op::operation(opcode);
            match operation {
                op::ALU_NEG => {
                    if src_x {
                        return Err(invalid());
                    }
                    zero("src", i64::from(src))?;
                    zero("off", off)?;
                    zero("imm", imm)?;
                }
                op::ALU_END => {
                    if alu64 && src_x {
                        return Err(invalid());
                    }
                    zero("src", i64::from(src))?;
                    zero("off", off)?;
                    if !matches!(imm, 16 | 32 | 64) {
                        return Err(reserved("imm", imm, "16, 32 or 64"));
                    }
                }
                op::ALU_ADD
                | op::ALU_SUB
                | op::ALU_MUL
                | op::ALU_OR
                | op::ALU_AND
                | op::ALU_LSH
                | op::ALU_RSH
                | op::ALU_XOR
                | op::ALU_ARSH
                | op::ALU_DIV
                | op::ALU_MOD
                | op::ALU_MOV => {
                    let signed_ok = matches!(operation, op::ALU_DIV | op::ALU_MOD);
                    let off_ok = off == 0
                        || (signed_ok && off == 1)
                        || (operation == op::ALU_MOV
                            && src_x
                            && (matches!(off, 8 | 16) || (alu64 && off == 32)));
                    if !off_ok {
                        return Err(reserved("off", off, "0"));
                    }
                    if src_x {
                        zero("imm", imm)?;
                        if src > R10 {
                            return Err(ErrorKind::InvalidRegister { reg: src });
                        }
                    } else {
                        zero("src", i64::from(src))?;
                        if matches!(operation, op::ALU_DIV | op::ALU_MOD) && imm == 0 {
                            return Err(ErrorKind::DivisionByZero {
                                op: if operation == op::ALU_DIV {
                                    "division"
                                } else {
                                    "modulo"
                                },
                            });
                        }
                        // A constant shift at or past the operand width is well defined (the
                        // ISA masks the amount); the kernel refuses it, which is a profile rule
                        // (`profile::out_of_range_shift`), not a malformation.
                    }
                }
                _ => return Err(invalid()),
            }
        }
        op::CLASS_JMP | op::CLASS_JMP32 => {
            let jmp32 = insn.class() == op::CLASS_JMP32;
            match op::operation(opcode) {
                op::JMP_JA => {
                    if src_x {
                        return Err(invalid());
                    }
                    zero("dst", i64::from(dst))?;
                    zero("src", i64::from(src))?;
                    if jmp32 {
                        zero("off", off)?;
                    } else {
                        zero("imm", imm)?;
                    }
                }
                op::JMP_CALL => {
                    if jmp32 {
                        return Err(invalid());
                    }
                    if src_x {
                        return Err(ErrorKind::Unsupported {
                            what: "indirect call (callx)",
                        });
                    }
                    zero("dst", i64::from(dst))?;
                    zero("off", off)?;
                    match src {
                        op::CALL_HELPER => {
                            let helper = helpers::lookup(insn.imm)
                                .ok_or(ErrorKind::UnknownHelper { id: insn.imm })?;
                            let (allowed, kind_name) = match kind {
                                ProgramKind::Xdp => (helper.xdp, "XDP"),
                                ProgramKind::RawMemory { .. } => (helper.raw, "raw-memory"),
                            };
                            if !allowed {
                                return Err(ErrorKind::HelperNotAllowed {
                                    id: helper.id,
                                    name: helper.name,
                                    kind: kind_name,
                                });
                            }
                        }
                        op::CALL_LOCAL => {}
                        op::CALL_KFUNC => {
                            return Err(ErrorKind::Unsupported { what: "kfunc call" });
                        }
                        _ => return Err(reserved("src", i64::from(src), "0, 1 or 2")),
                    }
                }
                op::JMP_EXIT => {
                    if jmp32 || src_x {
                        return Err(invalid());
                    }
                    zero("dst", i64::from(dst))?;
                    zero("src", i64::from(src))?;
                    zero("off", off)?;
                    zero("imm", imm)?;
                }
                op::JMP_JEQ
                | op::JMP_JGT
                | op::JMP_JGE
                | op::JMP_JSET
                | op::JMP_JNE
                | op::JMP_JSGT
                | op::JMP_JSGE
                | op::JMP_JLT
                | op::JMP_JLE
                | op::JMP_JSLT
                | op::JMP_JSLE => {
                    if src_x {
                        zero("imm", imm)?;
                        if src > R10 {
                            return Err(ErrorKind::InvalidRegister { reg: src });
                        }
                    } else {
                        zero("src", i64::from(src))?;
                    }
                }
                _ => return Err(invalid()),
            }
        }
        op::CLASS_LD => {
            if !insn.is_lddw() {
                return Err(match op::mode(opcode) {
                    op::MODE_ABS | op::MODE_IND => ErrorKind::Unsupported {
                        what: "legacy packet access (ld_abs/ld_ind)",
                    },
                    _ => invalid(),
                });
            }
            zero("off", off)?;
            if src > op::PSEUDO_MAP_VALUE {
                return Err(ErrorKind::InvalidLddwSource { src });
            }
        }
        op::CLASS_LDX => {
            let mode = op::mode(opcode);
            let size = op::size(opcode);
            match mode {
                op::MODE_MEM => {}
                op::MODE_MEMSX if size != op::SIZE_DW => {}
                _ => return Err(invalid()),
            }
            zero("imm", imm)?;
            if src > R10 {
                return Err(ErrorKind::InvalidRegister { reg: src });
            }
        }
        op::CLASS_ST => {
            if op::mode(opcode) != op::MODE_MEM {
                return Err(invalid());
            }
            zero("src", i64::from(src))?;
        }
        op::CLASS_STX => {
            if src > R10 {
                return Err(ErrorKind::InvalidRegister { reg: src });
            }
            match op::mode(opcode) {
                op::MODE_MEM => zero("imm", imm)?,
                op::MODE_ATOMIC => {
                    if !matches!(op::size(opcode), op::SIZE_W | op::SIZE_DW) {
                        return Err(invalid());
                    }
                    let plain = insn.imm & !op::ATOMIC_FETCH;
                    let ok = matches!(
                        plain,
                        op::ATOMIC_ADD | op::ATOMIC_OR | op::ATOMIC_AND | op::ATOMIC_XOR
                    ) || insn.imm == op::ATOMIC_XCHG
                        || insn.imm == op::ATOMIC_CMPXCHG;
                    if !ok {
                        return Err(reserved("imm", imm, "an atomic operation"));
                    }
                }
                _ => return Err(invalid()),
            }
        }
        _ => return Err(invalid()),
    }
    if writes_dst(insn) && dst == R10 {
        return Err(ErrorKind::WriteToR10);
    }
    Ok(())
}

/// Checks the whole program and builds its control-flow graph.
pub fn check(input: &ProgramInput) -> Result<Cfg, Located> {
    let insns = &input.insns;
    if insns.is_empty() {
        return Err(Located::new(ErrorKind::EmptyProgram, 0));
    }
    if insns.len() > MAX_PROGRAM_SLOTS {
        return Err(Located::new(
            ErrorKind::ProgramTooLarge {
                len: insns.len(),
                max: MAX_PROGRAM_SLOTS,
            },
            0,
        ));
    }
    let mut pc = 0;
    while pc < insns.len() {
        let insn = insns[pc];
        check_insn(insn, input.kind).map_err(|kind| Located::new(kind, pc))?;
        if insn.is_lddw() {
            let Some(second) = insns.get(pc + 1) else {
                return Err(Located::new(ErrorKind::IncompleteLddw, pc));
            };
            if second.opcode != 0 || second.dst != 0 || second.src != 0 || second.off != 0 {
                return Err(Located::new(ErrorKind::IncompleteLddw, pc));
            }
            if insn.src != op::PSEUDO_NONE {
                let index = i64::from(insn.imm);
                let map = usize::try_from(index)
                    .ok()
                    .and_then(|i| input.maps.get(i))
                    .ok_or(Located::new(
                        ErrorKind::UnknownMap {
                            index,
                            count: input.maps.len(),
                        },
                        pc,
                    ))?;
                let offset = i64::from(second.imm);
                if insn.src == op::PSEUDO_MAP_VALUE
                    && (offset < 0 || offset >= i64::from(map.value_size))
                {
                    return Err(Located::new(
                        ErrorKind::MapValueOffset {
                            map: map.name.clone(),
                            offset,
                            value_size: map.value_size,
                        },
                        pc,
                    ));
                }
            }
            pc += 2;
        } else {
            pc += 1;
        }
    }
    let cfg = Cfg::build(insns)?;
    if let Some(pc) = (0..cfg.len).find(|&pc| cfg.is_insn[pc] && !cfg.reachable[pc]) {
        return Err(Located::new(ErrorKind::Unreachable, pc));
    }
    Ok(cfg)
}
