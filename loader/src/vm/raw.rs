//! Programs that are not lambdas: `r1` points to a block of memory and `r0` is the answer. This
//! is the bpf_conformance suite's convention (as in uBPF: `r1` = memory, `r2` = its length), and
//! lets the VM's engines be checked instruction by instruction against the kernel.

use std::sync::Arc;

use ebpf_isa::{Insn, opcode as op};

use super::helpers::RunState;
use super::interp::{FRAME_STACK, Finished, MAX_FRAMES, Machine, Region};
use super::{Engine, VmError, XdpMd, jit};

/// Runs `code` on `memory` with the chosen engine and returns `r0`. The program may call the
/// VM's helpers that need no context or maps (`ktime_get_ns`, `get_prandom_u32`, …). The
/// interpreter runs any program (it checks every access and counts instructions); the JIT only
/// one our verifier accepts, with a bound within `budget`.
pub fn run_raw(
    code: &[Insn],
    memory: &mut [u8],
    engine: Engine,
    budget: u64,
) -> Result<u64, VmError> {
    super::check_supported(code)?;
    super::interp::check_registers(code)?;
    let mut helpers = NoContext::new();
    let mut state = helpers.state();
    let len = memory.len() as u64;
    match engine {
        Engine::Interpreter => Ok(interpret(code, memory, budget, &mut state)?.r0),
        Engine::Jit => {
            // Compiled code checks no memory access and counts no instruction: only programs
            // the verifier proves safe and bounded within the budget run on the JIT.
            let size = u32::try_from(len).map_err(|_| VmError::Unsupported {
                insn: 0,
                what: "memory blocks of 4 GiB or more",
            })?;
            let input = verifier::ProgramInput::new(
                "raw",
                verifier::ProgramKind::RawMemory { size },
                code.to_vec(),
            );
            let options = verifier::Options {
                profiles: vec![verifier::Backend::Vm],
                ..verifier::Options::default()
            };
            let contract = verifier::verify(&input, &options).map_err(|rejection| {
                crate::verify::VerifyError::Rejected {
                    program: "raw program".to_owned(),
                    rejection: Box::new(rejection),
                }
            })?;
            if contract.max_insns_executed > budget {
                return Err(VmError::JitOverBudget {
                    bound: contract.max_insns_executed,
                    budget,
                });
            }
            // rbpf's JIT passes only r1 for a raw program and leaves r0 as it finds it: set r2
            // to the length and r0 to 0 in a prologue, as the interpreter does. The program's
            // jumps and calls are relative, so shifting it does not move their targets.
            let len = i32::try_from(len).map_err(|_| VmError::Unsupported {
                insn: 0,
                what: "memory blocks of 2 GiB or more",
            })?;
            let mut with_prologue = vec![
                Insn::new(op::CLASS_ALU64 | op::SRC_K | op::ALU_MOV, 2, 0, 0, len),
                Insn::new(op::CLASS_ALU64 | op::SRC_K | op::ALU_MOV, 0, 0, 0, 0),
            ];
            with_prologue.extend_from_slice(code);
            let prepared: Arc<[u8]> =
                Arc::from(jit::prepare(&with_prologue).map_err(|e| shift_insn(e, PROLOGUE))?);
            let program = jit::JitProgram::compile(prepared)?;
            program.run_on(memory, &mut state)
        }
    }
}

/// Runs `code` on `memory` in the interpreter and returns `r0` with the number of instructions
/// executed (what the verifier's bound must cover).
pub fn run_raw_counted(code: &[Insn], memory: &mut [u8], budget: u64) -> Result<Finished, VmError> {
    super::check_supported(code)?;
    super::interp::check_registers(code)?;
    let mut helpers = NoContext::new();
    interpret(code, memory, budget, &mut helpers.state())
}

/// What helpers get in a raw run: no context (helpers that take one refuse), no maps.
struct NoContext {
    ctx: XdpMd,
    rng: u64,
    log: Vec<String>,
}

impl NoContext {
    fn new() -> NoContext {
        NoContext {
            ctx: XdpMd::default(),
            rng: 0x2545_f491_4f6c_dd1d,
            log: Vec::new(),
        }
    }

    fn state(&mut self) -> RunState<'_> {
        RunState {
            ctx: &mut self.ctx,
            ctx_addr: u64::MAX,
            frame_start: 0,
            frame_hard_end: 0,
            high_water: 0,
            maps: &[],
            cpu: 0,
            rng: &mut self.rng,
            log: &mut self.log,
        }
    }
}

fn interpret(
    code: &[Insn],
    memory: &mut [u8],
    budget: u64,
    state: &mut RunState<'_>,
) -> Result<Finished, VmError> {
    let start = memory.as_mut_ptr() as u64;
    let len = memory.len() as u64;
    let regions = [Region {
        start,
        end: start + len,
        writable: true,
    }];
    let machine = Machine {
        code,
        regions: &regions,
        budget,
    };
    let mut stack = Box::new([0u8; FRAME_STACK * MAX_FRAMES]);
    machine.run([start, len], &mut stack, state)
}

/// Instructions the JIT prologue adds in front of a raw program.
const PROLOGUE: usize = 2;

/// An error about the prologued program, renumbered to the caller's instructions.
fn shift_insn(error: VmError, by: usize) -> VmError {
    match error {
        VmError::EngineCannot { insn, engine, what } => VmError::EngineCannot {
            insn: insn.saturating_sub(by),
            engine,
            what,
        },
        VmError::JumpOutOfRange { insn } => VmError::JumpOutOfRange {
            insn: insn.saturating_sub(by),
        },
        other => other,
    }
}
