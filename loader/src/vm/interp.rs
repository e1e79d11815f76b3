//! The VM backend's interpreter: every instruction of the eBPF ISA (RFC 9669), an instruction
//! budget, and a bounds check of every memory access against the regions the program may touch
//! (its stack, the packet, the context, map values).
//!
//! rbpf's own interpreter is not used: it has no instruction budget, checks only the start
//! address of an access, and lacks atomics, signed division, sign extension and byte swaps.
//!
//! Errors are built lazily (`ok_or_else`) on purpose: `VmError` has a non-trivial drop, and
//! building one eagerly on every instruction cost a fifth of the run time.
#![allow(clippy::unnecessary_lazy_evaluations)]

use ebpf_isa::semantics::{alu, condition, sign_extend};
use ebpf_isa::{Insn, opcode as op};

use super::helpers::{self, HelperCall, RunState};
use super::{Access, VmError};

/// Bytes of stack per call frame (the kernel's `MAX_BPF_STACK`).
pub const FRAME_STACK: usize = 512;
/// Frames a call chain may have (the kernel's `MAX_CALL_FRAMES`).
pub const MAX_FRAMES: usize = 8;

/// A memory region the program may access.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub writable: bool,
}

impl Region {
    #[inline(always)]
    fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.start && addr.checked_add(len).is_some_and(|end| end <= self.end)
    }
}

/// Refuses, before any run, register fields above r10 and instructions that write r10 (the
/// frame pointer is read-only). The interpreter relies on this to index registers unchecked.
pub fn check_registers(code: &[Insn]) -> Result<(), VmError> {
    let mut second_slot = false;
    for (index, insn) in code.iter().enumerate() {
        if std::mem::take(&mut second_slot) {
            continue;
        }
        second_slot = insn.is_lddw();
        let class = insn.class();
        let src_is_register = !matches!(insn.opcode, op::LDDW | op::CALL);
        let writes_dst =
            matches!(class, op::CLASS_ALU | op::CLASS_ALU64 | op::CLASS_LDX) || insn.is_lddw();
        if insn.dst > 10 || (src_is_register && insn.src > 10) || (writes_dst && insn.dst == 10) {
            return Err(VmError::BadRegister { insn: index });
        }
    }
    Ok(())
}

/// Register state saved by a bpf-to-bpf call.
#[derive(Clone, Copy, Default)]
struct CallFrame {
    return_pc: usize,
    callee_saved: [u64; 4],
    frame_pointer: u64,
}

/// What one run needs besides the code.
pub struct Machine<'a> {
    pub code: &'a [Insn],
    /// Regions other than the stack and the packet (context, map values, global data).
    pub regions: &'a [Region],
    pub budget: u64,
}

/// The result of a run: `r0` and how many instructions executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    pub r0: u64,
    pub executed: u64,
}

impl Machine<'_> {
    /// Runs from instruction 0 with `r1`, `r2` = `args`. The stack is `stack` (`MAX_FRAMES`
    /// frames); `state` gives helpers the packet and maps.
    pub fn run(
        &self,
        args: [u64; 2],
        stack: &mut [u8; FRAME_STACK * MAX_FRAMES],
        state: &mut RunState<'_>,
    ) -> Result<Finished, VmError> {
        let code = self.code;
        let stack_region = Region {
            start: stack.as_ptr() as u64,
            end: stack.as_ptr() as u64 + stack.len() as u64,
            writable: true,
        };
        // 16 slots: a 4-bit register field always indexes in bounds; `check_registers` has
        // already refused registers above r10 and writes to r10.
        let mut reg = [0u64; 16];
        reg[1] = args[0];
        reg[2] = args[1];
        reg[10] = stack_region.end;
        let mut frames: Vec<CallFrame> = Vec::new();
        let mut pc = 0usize;
        let mut executed = 0u64;

        // Whether `[addr, addr + len)` lies in one region (`write` needs a writable one). The
        // stack and the packet come first: nearly every access is to one of them.
        let accessible = |state: &RunState<'_>, addr: u64, len: u64, write: bool| -> bool {
            stack_region.contains(addr, len)
                || state.packet_region().contains(addr, len)
                || self
                    .regions
                    .iter()
                    .any(|r| r.contains(addr, len) && (r.writable || !write))
        };
        let check = |state: &RunState<'_>,
                     pc: usize,
                     addr: u64,
                     len: u64,
                     write: bool|
         -> Result<(), VmError> {
            if accessible(state, addr, len, write) {
                Ok(())
            } else {
                Err(VmError::OutOfBounds {
                    insn: pc,
                    access: if write { Access::Store } else { Access::Load },
                    addr,
                    len,
                })
            }
        };

        loop {
            let Some(&insn) = code.get(pc) else {
                return Err(VmError::FellOffEnd { insn: pc });
            };
            executed += 1;
            if executed > self.budget {
                return Err(VmError::BudgetExceeded {
                    budget: self.budget,
                    insn: pc,
                });
            }
            let dst = (insn.dst & 0x0f) as usize;
            let src = (insn.src & 0x0f) as usize;
            let imm = insn.imm as i64 as u64;

            // The instructions compiled lambdas are made of, dispatched on the whole opcode
            // byte (one jump table); everything else goes through the general decoder below.
            macro_rules! next {
                ($value:expr) => {{
                    reg[dst] = $value;
                    pc += 1;
                    continue;
                }};
            }
            macro_rules! branch {
                ($cond:expr) => {{
                    pc = if $cond {
                        match jump_target(pc, i64::from(insn.off), code.len()) {
                            Some(target) => target,
                            None => return Err(VmError::JumpOutOfRange { insn: pc }),
                        }
                    } else {
                        pc + 1
                    };
                    continue;
                }};
            }
            macro_rules! load {
                ($width:expr) => {{
                    let addr = reg[src].wrapping_add(insn.off as i64 as u64);
                    check(state, pc, addr, $width, false)?;
                    // SAFETY: `check` proved the range lies in a live region.
                    next!(unsafe { load(addr, $width) })
                }};
            }
            macro_rules! store {
                ($width:expr, $value:expr) => {{
                    let addr = reg[dst].wrapping_add(insn.off as i64 as u64);
                    check(state, pc, addr, $width, true)?;
                    // SAFETY: `check` proved the range lies in a live, writable region.
                    unsafe { store(addr, $width, $value) };
                    pc += 1;
                    continue;
                }};
            }
            match insn.opcode {
                0x07 => next!(reg[dst].wrapping_add(imm)),
                0x0f => next!(reg[dst].wrapping_add(reg[src])),
                0x17 => next!(reg[dst].wrapping_sub(imm)),
                0x1f => next!(reg[dst].wrapping_sub(reg[src])),
                0x27 => next!(reg[dst].wrapping_mul(imm)),
                0x2f => next!(reg[dst].wrapping_mul(reg[src])),
                0x47 => next!(reg[dst] | imm),
                0x4f => next!(reg[dst] | reg[src]),
                0x57 => next!(reg[dst] & imm),
                0x5f => next!(reg[dst] & reg[src]),
                0x67 => next!(reg[dst].wrapping_shl((imm & 63) as u32)),
                0x6f => next!(reg[dst].wrapping_shl((reg[src] & 63) as u32)),
                0x77 => next!(reg[dst].wrapping_shr((imm & 63) as u32)),
                0x7f => next!(reg[dst].wrapping_shr((reg[src] & 63) as u32)),
                0xa7 => next!(reg[dst] ^ imm),
                0xaf => next!(reg[dst] ^ reg[src]),
                0xb7 if insn.off == 0 => next!(imm),
                0xbf if insn.off == 0 => next!(reg[src]),
                0xc7 => next!((reg[dst] as i64).wrapping_shr((imm & 63) as u32) as u64),
                0x04 => next!(u64::from((reg[dst] as u32).wrapping_add(imm as u32))),
                0x0c => next!(u64::from((reg[dst] as u32).wrapping_add(reg[src] as u32))),
                0x14 => next!(u64::from((reg[dst] as u32).wrapping_sub(imm as u32))),
                0x1c => next!(u64::from((reg[dst] as u32).wrapping_sub(reg[src] as u32))),
                0x54 => next!(reg[dst] & imm & 0xffff_ffff),
                0x5c => next!(reg[dst] & reg[src] & 0xffff_ffff),
                0x44 => next!((reg[dst] | imm) & 0xffff_ffff),
                0x4c => next!((reg[dst] | reg[src]) & 0xffff_ffff),
                0x64 => next!(u64::from((reg[dst] as u32).wrapping_shl((imm & 31) as u32))),
                0x74 => next!(u64::from((reg[dst] as u32).wrapping_shr((imm & 31) as u32))),
                0xb4 if insn.off == 0 => next!(imm & 0xffff_ffff),
                0xbc if insn.off == 0 => next!(reg[src] & 0xffff_ffff),
                0x05 => branch!(true),
                0x15 => branch!(reg[dst] == imm),
                0x1d => branch!(reg[dst] == reg[src]),
                0x55 => branch!(reg[dst] != imm),
                0x5d => branch!(reg[dst] != reg[src]),
                0x25 => branch!(reg[dst] > imm),
                0x2d => branch!(reg[dst] > reg[src]),
                0x35 => branch!(reg[dst] >= imm),
                0x3d => branch!(reg[dst] >= reg[src]),
                0xa5 => branch!(reg[dst] < imm),
                0xad => branch!(reg[dst] < reg[src]),
                0xb5 => branch!(reg[dst] <= imm),
                0xbd => branch!(reg[dst] <= reg[src]),
                0x45 => branch!(reg[dst] & imm != 0),
                0x4d => branch!(reg[dst] & reg[src] != 0),
                0x65 => branch!((reg[dst] as i64) > (imm as i64)),
                0x6d => branch!((reg[dst] as i64) > (reg[src] as i64)),
                0xc5 => branch!((reg[dst] as i64) < (imm as i64)),
                0xcd => branch!((reg[dst] as i64) < (reg[src] as i64)),
                0x61 => load!(4),
                0x69 => load!(2),
                0x71 => load!(1),
                0x79 => load!(8),
                0x62 => store!(4, imm),
                0x6a => store!(2, imm),
                0x72 => store!(1, imm),
                0x7a => store!(8, imm),
                0x63 => store!(4, reg[src]),
                0x6b => store!(2, reg[src]),
                0x73 => store!(1, reg[src]),
                0x7b => store!(8, reg[src]),
                _ => {}
            }

            let class = insn.class();
            match class {
                op::CLASS_ALU | op::CLASS_ALU64 => {
                    if dst == 10 {
                        return Err(VmError::BadRegister { insn: pc });
                    }
                    let is64 = class == op::CLASS_ALU64;
                    let operand = if op::source(insn.opcode) == op::SRC_X {
                        reg[src]
                    } else {
                        imm
                    };
                    reg[dst] =
                        alu(insn, reg[dst], operand, is64).ok_or_else(|| VmError::BadOpcode {
                            insn: pc,
                            opcode: insn.opcode,
                        })?;
                    pc += 1;
                }
                op::CLASS_JMP | op::CLASS_JMP32 => {
                    let operation = op::operation(insn.opcode);
                    match (class, operation) {
                        (op::CLASS_JMP, op::JMP_EXIT) => match frames.pop() {
                            None => {
                                return Ok(Finished {
                                    r0: reg[0],
                                    executed,
                                });
                            }
                            Some(frame) => {
                                reg[6..10].copy_from_slice(&frame.callee_saved);
                                reg[10] = frame.frame_pointer;
                                pc = frame.return_pc;
                            }
                        },
                        (op::CLASS_JMP, op::JMP_CALL) => match insn.src {
                            op::CALL_HELPER => {
                                let call = HelperCall {
                                    id: insn.imm as u32,
                                    args: [reg[1], reg[2], reg[3], reg[4], reg[5]],
                                    insn: pc,
                                };
                                reg[0] = helpers::call(
                                    state,
                                    &call,
                                    &|s: &RunState<'_>, addr, len, write| {
                                        accessible(s, addr, len, write)
                                    },
                                )?;
                                pc += 1;
                            }
                            op::CALL_LOCAL => {
                                if frames.len() + 1 >= MAX_FRAMES {
                                    return Err(VmError::CallDepth {
                                        insn: pc,
                                        max: MAX_FRAMES,
                                    });
                                }
                                let target = jump_target(pc, i64::from(insn.imm), code.len())
                                    .ok_or_else(|| VmError::JumpOutOfRange { insn: pc })?;
                                frames.push(CallFrame {
                                    return_pc: pc + 1,
                                    callee_saved: [reg[6], reg[7], reg[8], reg[9]],
                                    frame_pointer: reg[10],
                                });
                                reg[10] -= FRAME_STACK as u64;
                                pc = target;
                            }
                            _ => {
                                return Err(VmError::Unsupported {
                                    insn: pc,
                                    what: "calls of kernel functions (kfuncs)",
                                });
                            }
                        },
                        _ => {
                            let (taken, offset) =
                                if insn.opcode == op::JA32 {
                                    (true, i64::from(insn.imm))
                                } else if operation == op::JMP_JA {
                                    (true, i64::from(insn.off))
                                } else {
                                    let operand = if op::source(insn.opcode) == op::SRC_X {
                                        reg[src]
                                    } else {
                                        imm
                                    };
                                    let taken = condition(
                                        operation,
                                        reg[dst],
                                        operand,
                                        class == op::CLASS_JMP32,
                                    )
                                    .ok_or_else(|| VmError::BadOpcode {
                                        insn: pc,
                                        opcode: insn.opcode,
                                    })?;
                                    (taken, i64::from(insn.off))
                                };
                            pc = if taken {
                                jump_target(pc, offset, code.len())
                                    .ok_or_else(|| VmError::JumpOutOfRange { insn: pc })?
                            } else {
                                pc + 1
                            };
                        }
                    }
                }
                op::CLASS_LDX => {
                    let mode = op::mode(insn.opcode);
                    let width = op::size_bytes(op::size(insn.opcode));
                    if dst == 10 || (mode != op::MODE_MEM && mode != op::MODE_MEMSX) {
                        return Err(unsupported_load(insn, pc));
                    }
                    let addr = reg[src].wrapping_add(insn.off as i64 as u64);
                    check(state, pc, addr, width as u64, false)?;
                    // SAFETY: `check` proved [addr, addr + width) lies in a live region.
                    let value = unsafe { load(addr, width) };
                    reg[dst] = if mode == op::MODE_MEMSX {
                        sign_extend(value, width * 8)
                    } else {
                        value
                    };
                    pc += 1;
                }
                op::CLASS_ST | op::CLASS_STX => {
                    let mode = op::mode(insn.opcode);
                    let width = op::size_bytes(op::size(insn.opcode));
                    let addr = reg[dst].wrapping_add(insn.off as i64 as u64);
                    match (class, mode) {
                        (op::CLASS_ST, op::MODE_MEM) => {
                            check(state, pc, addr, width as u64, true)?;
                            // SAFETY: checked above.
                            unsafe { store(addr, width, imm) };
                        }
                        (op::CLASS_STX, op::MODE_MEM) => {
                            check(state, pc, addr, width as u64, true)?;
                            // SAFETY: checked above.
                            unsafe { store(addr, width, reg[src]) };
                        }
                        (op::CLASS_STX, op::MODE_ATOMIC) if width >= 4 => {
                            check(state, pc, addr, width as u64, true)?;
                            atomic(insn, pc, addr, width, &mut reg)?;
                        }
                        _ => return Err(unsupported_load(insn, pc)),
                    }
                    pc += 1;
                }
                op::CLASS_LD => {
                    if insn.opcode != op::LDDW {
                        return Err(VmError::Unsupported {
                            insn: pc,
                            what: "legacy packet loads (ld_abs/ld_ind)",
                        });
                    }
                    let high = code
                        .get(pc + 1)
                        .ok_or_else(|| VmError::FellOffEnd { insn: pc + 1 })?;
                    if dst == 10 || insn.src != op::PSEUDO_NONE {
                        return Err(VmError::Unsupported {
                            insn: pc,
                            what: "lddw of an unrelocated pseudo value",
                        });
                    }
                    reg[dst] = u64::from(insn.imm as u32) | (u64::from(high.imm as u32) << 32);
                    pc += 2;
                }
                _ => unreachable!("class is 3 bits"),
            }
        }
    }
}

fn unsupported_load(insn: Insn, pc: usize) -> VmError {
    VmError::BadOpcode {
        insn: pc,
        opcode: insn.opcode,
    }
}

/// `pc + 1 + offset`, if inside the program.
fn jump_target(pc: usize, offset: i64, len: usize) -> Option<usize> {
    let target = (pc as i64).checked_add(1)?.checked_add(offset)?;
    (0..len as i64).contains(&target).then_some(target as usize)
}

/// Reads `width` bytes (1, 2, 4 or 8) at `addr`, little-endian, zero-extended.
///
/// # Safety
/// `[addr, addr + width)` must be readable memory.
unsafe fn load(addr: u64, width: usize) -> u64 {
    let ptr = addr as *const u8;
    // SAFETY: per the caller; unaligned reads are allowed on every access.
    unsafe {
        match width {
            1 => u64::from(ptr.read()),
            2 => u64::from(ptr.cast::<u16>().read_unaligned()),
            4 => u64::from(ptr.cast::<u32>().read_unaligned()),
            _ => ptr.cast::<u64>().read_unaligned(),
        }
    }
}

/// Writes the low `width` bytes of `value` at `addr`.
///
/// # Safety
/// `[addr, addr + width)` must be writable memory.
unsafe fn store(addr: u64, width: usize, value: u64) {
    let ptr = addr as *mut u8;
    // SAFETY: per the caller.
    unsafe {
        match width {
            1 => ptr.write(value as u8),
            2 => ptr.cast::<u16>().write_unaligned(value as u16),
            4 => ptr.cast::<u32>().write_unaligned(value as u32),
            _ => ptr.cast::<u64>().write_unaligned(value),
        }
    }
}

/// An atomic read-modify-write (`lock` instructions). The VM runs one program per worker thread
/// on shared map memory, so these are real atomics when the address is aligned, as the
/// kernel requires; a misaligned one (which the kernel's verifier refuses) is an error.
fn atomic(
    insn: Insn,
    pc: usize,
    addr: u64,
    width: usize,
    reg: &mut [u64; 16],
) -> Result<(), VmError> {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
    if !addr.is_multiple_of(width as u64) {
        return Err(VmError::Misaligned {
            insn: pc,
            addr,
            width,
        });
    }
    let src = insn.src as usize;
    let operand = reg[src];
    let fetch = insn.imm & op::ATOMIC_FETCH != 0;
    let old = if width == 8 {
        // SAFETY: aligned, in bounds (checked by the caller), 8 bytes.
        let cell = unsafe { AtomicU64::from_ptr(addr as *mut u64) };
        match insn.imm {
            x if x & !op::ATOMIC_FETCH == op::ATOMIC_ADD => cell.fetch_add(operand, SeqCst),
            x if x & !op::ATOMIC_FETCH == op::ATOMIC_OR => cell.fetch_or(operand, SeqCst),
            x if x & !op::ATOMIC_FETCH == op::ATOMIC_AND => cell.fetch_and(operand, SeqCst),
            x if x & !op::ATOMIC_FETCH == op::ATOMIC_XOR => cell.fetch_xor(operand, SeqCst),
            op::ATOMIC_XCHG => cell.swap(operand, SeqCst),
            op::ATOMIC_CMPXCHG => {
                let old = match cell.compare_exchange(reg[0], operand, SeqCst, SeqCst) {
                    Ok(v) | Err(v) => v,
                };
                reg[0] = old;
                return Ok(());
            }
            _ => {
                return Err(VmError::BadOpcode {
                    insn: pc,
                    opcode: insn.opcode,
                });
            }
        }
    } else {
        // SAFETY: aligned, in bounds (checked by the caller), 4 bytes.
        let cell = unsafe { AtomicU32::from_ptr(addr as *mut u32) };
        let operand = operand as u32;
        u64::from(match insn.imm {
            x if x & !op::ATOMIC_FETCH == op::ATOMIC_ADD => cell.fetch_add(operand, SeqCst),
            x if x & !op::ATOMIC_FETCH == op::ATOMIC_OR => cell.fetch_or(operand, SeqCst),
            x if x & !op::ATOMIC_FETCH == op::ATOMIC_AND => cell.fetch_and(operand, SeqCst),
            x if x & !op::ATOMIC_FETCH == op::ATOMIC_XOR => cell.fetch_xor(operand, SeqCst),
            op::ATOMIC_XCHG => cell.swap(operand, SeqCst),
            op::ATOMIC_CMPXCHG => {
                let old = match cell.compare_exchange(reg[0] as u32, operand, SeqCst, SeqCst) {
                    Ok(v) | Err(v) => v,
                };
                reg[0] = u64::from(old);
                return Ok(());
            }
            _ => {
                return Err(VmError::BadOpcode {
                    insn: pc,
                    opcode: insn.opcode,
                });
            }
        })
    };
    if fetch {
        reg[src] = old;
    }
    Ok(())
}
