//! Backend profiles: what each backend accepts on top of memory safety and bounds.
//!
//! - `kernel`: everything the analysis proves safe.
//! - `vm` (the VM backend's interpreter): the whole ISA, including atomics and the v4
//!   additions, but no tail calls or helpers it does not implement. rbpf's JIT lacks atomics,
//!   signed division, sign extension, `bswap` and `gotol`; the VM refuses those for the JIT
//!   itself, naming the instruction, when a program is loaded with `--jit`.
//! - `nfp` (Netronome offload): only array and hash maps (and a perf event array for
//!   `bpf_perf_event_output`), only its short helper list, no tail calls, no direct stores into
//!   map values, 32-bit multiplies only, division only by constants, none of the ISA v4
//!   additions, and the program must fit the instruction budget.

use ebpf_isa::{Insn, opcode as op};

use crate::cfg::Cfg;
use crate::transfer::Analysis;
use crate::{Backend, Options, ProgramInput, helpers, map_type};

/// Why a backend refuses a program: the first offending instruction and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub insn: usize,
    pub reason: String,
}

fn refuse(insn: usize, reason: impl Into<String>) -> Result<(), Refusal> {
    Err(Refusal {
        insn,
        reason: reason.into(),
    })
}

/// Instruction features newer than what the VM and the NFP implement, by name.
fn isa_v4_feature(insn: Insn) -> Option<&'static str> {
    let operation = op::operation(insn.opcode);
    match insn.class() {
        op::CLASS_ALU | op::CLASS_ALU64 => {
            if matches!(operation, op::ALU_DIV | op::ALU_MOD) && insn.off == 1 {
                Some("signed division or modulo")
            } else if operation == op::ALU_MOV && insn.off != 0 {
                Some("sign-extending move (movsx)")
            } else if operation == op::ALU_END && insn.class() == op::CLASS_ALU64 {
                Some("unconditional byte swap (bswap)")
            } else {
                None
            }
        }
        op::CLASS_LDX if op::mode(insn.opcode) == op::MODE_MEMSX => {
            Some("sign-extending load (ldxs)")
        }
        op::CLASS_JMP32 if insn.opcode == op::JA32 => Some("32-bit jump offset (gotol)"),
        _ => None,
    }
}

fn is_atomic(insn: Insn) -> bool {
    insn.class() == op::CLASS_STX && op::mode(insn.opcode) == op::MODE_ATOMIC
}

/// Whether `backend` accepts the analysed program; the first reason when not.
pub fn judge(
    input: &ProgramInput,
    cfg: &Cfg,
    analysis: &Analysis,
    backend: Backend,
    options: &Options,
) -> Result<(), Refusal> {
    if backend == Backend::Kernel {
        // Safe, but beyond what the kernel's verifier can prove.
        for pc in 0..cfg.len {
            if analysis.facts.get(pc).is_some_and(|f| f.packet_by_bounds) {
                return refuse(
                    pc,
                    format!(
                        "packet access at {pc} is proven only by the bounds of its variable \
                         offset; the kernel needs a data_end check on the pointer after the \
                         offset is added"
                    ),
                );
            }
        }
        return Ok(());
    }
    let name = backend.name();
    if backend == Backend::Nfp && input.insns.len() > options.nfp_insn_budget {
        return refuse(
            0,
            format!(
                "{} instructions exceed the NFP budget of {}",
                input.insns.len(),
                options.nfp_insn_budget
            ),
        );
    }
    if backend == Backend::Nfp {
        for &map in &analysis.maps_used {
            if let Some(info) = input.maps.get(map as usize)
                && !matches!(
                    info.map_type,
                    map_type::HASH | map_type::ARRAY | map_type::PERF_EVENT_ARRAY
                )
            {
                let at = first_use(input, cfg, map).unwrap_or(0);
                return refuse(
                    at,
                    format!(
                        "map {} has type {}; the NFP offloads only array and hash maps",
                        info.name, info.map_type
                    ),
                );
            }
        }
    }
    for pc in 0..cfg.len {
        if !cfg.is_insn[pc] || !cfg.reachable[pc] {
            continue;
        }
        let insn = input.insns[pc];
        let facts = analysis.facts.get(pc).copied().unwrap_or_default();
        if backend != Backend::Vm
            && let Some(feature) = isa_v4_feature(insn)
        {
            return refuse(pc, format!("{feature} at {pc} is not supported by {name}"));
        }
        if insn.is_helper_call()
            && let Some(helper) = helpers::lookup(insn.imm)
            && !helper.allowed_on(backend)
        {
            let what = if helper.id == helpers::TAIL_CALL {
                "tail call"
            } else {
                "helper"
            };
            return refuse(
                pc,
                format!("{what} {} at {pc} is not supported by {name}", helper.name),
            );
        }
        match backend {
            Backend::Vm => {}
            Backend::Nfp => {
                if is_atomic(insn) && insn.imm != op::ATOMIC_ADD {
                    return refuse(
                        pc,
                        format!("atomic operation other than add at {pc} is not supported by nfp"),
                    );
                }
                if facts.map_value_store && !is_atomic(insn) {
                    return refuse(pc, format!("direct store into a map value at {pc}"));
                }
                if facts.wide_mul {
                    return refuse(
                        pc,
                        format!("64-bit multiply at {pc} with an operand wider than 32 bits"),
                    );
                }
                if facts.variable_divisor {
                    return refuse(pc, format!("division by a non-constant at {pc}"));
                }
            }
            Backend::Kernel => {}
        }
    }
    Ok(())
}

fn first_use(input: &ProgramInput, cfg: &Cfg, map: u32) -> Option<usize> {
    (0..cfg.len).find(|&pc| {
        cfg.is_insn[pc]
            && input.insns[pc].is_lddw()
            && input.insns[pc].src != op::PSEUDO_NONE
            && input.insns[pc].imm as u32 == map
    })
}
