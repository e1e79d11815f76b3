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

/// `BPF_COMPLEXITY_LIMIT_JMP_SEQ`: the kernel's verifier refuses a program once it has this
/// many branch states pending (a loop whose exit test stays undecided for that many
/// iterations). We count every two-way branch we analyse, which stands in for the kernel's
/// pushes; the kernel explores paths without joining them, so the two counts can differ, and
/// the random-program test against the kernel is what checks this rule.
pub const KERNEL_JMP_SEQ_LIMIT: u64 = 8192;

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

/// The largest count of two-way branches one kernel verification run meets, and where that run
/// starts: the whole program's, unless `options.global_functions` names functions the kernel
/// verifies on their own; then each of those (reached from the main program) counts apart.
fn kernel_branch_count(
    input: &ProgramInput,
    analysis: &Analysis,
    options: &Options,
) -> (usize, u64) {
    if options.global_functions.is_empty() {
        return (0, analysis.two_way_branches);
    }
    let mut main = 0u64;
    let mut worst = (0usize, 0u64);
    for (root, &count) in &analysis.two_way_branches_by_root {
        let target = root.and_then(|site| {
            let insn = input.insns.get(site)?;
            usize::try_from(site as i64 + 1 + i64::from(insn.imm)).ok()
        });
        match target {
            Some(t) if options.global_functions.contains(&t) => {
                if count > worst.1 {
                    worst = (t, count);
                }
            }
            _ => main += count,
        }
    }
    if main >= worst.1 { (0, main) } else { worst }
}

/// Whether `backend` accepts the analysed program; the first reason when not.
pub fn judge(
    input: &ProgramInput,
    cfg: &Cfg,
    analysis: &Analysis,
    backend: Backend,
    options: &Options,
) -> Result<(), Refusal> {
    if backend != Backend::Vm
        && let Some((pc, amount, width)) = (0..cfg.len)
            .filter(|&pc| cfg.is_insn[pc] && cfg.reachable[pc])
            .find_map(|pc| out_of_range_shift(input.insns[pc]).map(|(a, w)| (pc, a, w)))
    {
        return refuse(
            pc,
            format!(
                "shift by {amount} at {pc} is not below the {width}-bit operand width (the \
                 kernel refuses it; the VM masks the amount as the ISA says)"
            ),
        );
    }
    let (branch_site, branches) = kernel_branch_count(input, analysis, options);
    if backend == Backend::Kernel && branches > KERNEL_JMP_SEQ_LIMIT {
        return refuse(
            branch_site,
            format!(
                "{branches} conditional jumps with both directions possible on the analysed paths: the \
                 kernel's verifier gives up past {KERNEL_JMP_SEQ_LIMIT} pending branches (\"the \
                 sequence of jumps is too complex\"); bound the loop lower"
            ),
        );
    }
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

/// A shift by a constant outside `0..width`: `(amount, width)`.
fn out_of_range_shift(insn: Insn) -> Option<(i64, u32)> {
    let class = insn.class();
    if !matches!(class, op::CLASS_ALU | op::CLASS_ALU64)
        || op::source(insn.opcode) != op::SRC_K
        || !matches!(
            op::operation(insn.opcode),
            op::ALU_LSH | op::ALU_RSH | op::ALU_ARSH
        )
    {
        return None;
    }
    let width = if class == op::CLASS_ALU64 { 64 } else { 32 };
    let amount = i64::from(insn.imm);
    (!(0..i64::from(width)).contains(&amount)).then_some((amount, width))
}

fn first_use(input: &ProgramInput, cfg: &Cfg, map: u32) -> Option<usize> {
    (0..cfg.len).find(|&pc| {
        cfg.is_insn[pc]
            && input.insns[pc].is_lddw()
            && input.insns[pc].src != op::PSEUDO_NONE
            && input.insns[pc].imm as u32 == map
    })
}
