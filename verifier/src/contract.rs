//! The contract: what a verified program may use, and where it may run.

use serde::Serialize;

use crate::bound;
use crate::cfg::Cfg;
use crate::error::ErrorKind;
use crate::transfer::Analysis;
use crate::{Backend, MAX_STACK_BYTES, MapInfo, Options, ProgramInput, helpers, map_type, profile};

/// One map the program uses and its memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MapUse {
    pub name: String,
    pub bytes: u64,
}

/// What a verified program is proven to need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Contract {
    pub program: String,
    /// Sound upper bound on the instructions any run executes.
    pub max_insns_executed: u64,
    /// Stack over the deepest call chain, in bytes.
    pub max_stack_bytes: u32,
    /// Sum of (key + value) × max_entries over the maps used, × CPUs for per-CPU maps.
    pub map_bytes: u64,
    pub maps: Vec<MapUse>,
    /// `(id, name)` of each helper called.
    pub helpers_used: Vec<(i32, &'static str)>,
    pub eligible: Vec<Backend>,
    /// Each refused backend with its first reason.
    pub refused: Vec<(Backend, String)>,
    /// Instruction slots in the program.
    pub insn_slots: usize,
}

/// Memory of one map.
pub fn map_bytes(map: &MapInfo, ncpus: u32) -> u64 {
    if map.map_type == map_type::RINGBUF {
        return u64::from(map.max_entries);
    }
    let entry = u64::from(map.key_size) + u64::from(map.value_size);
    let cpus = if map_type::is_per_cpu(map.map_type) {
        u64::from(ncpus.max(1))
    } else {
        1
    };
    entry
        .saturating_mul(u64::from(map.max_entries))
        .saturating_mul(cpus)
}

/// Builds the contract, enforcing the limits; the errors with their instruction when refused.
pub fn build(
    input: &ProgramInput,
    cfg: &Cfg,
    analysis: &Analysis,
    options: &Options,
) -> Result<Contract, Vec<(ErrorKind, usize, String)>> {
    let mut errors = Vec::new();
    let stack = bound::stack_chain(cfg, &analysis.stack_depth);
    let max_stack = options.max_stack.min(MAX_STACK_BYTES);
    if stack > max_stack {
        errors.push((
            ErrorKind::StackTooDeep {
                bytes: stack,
                max: max_stack,
            },
            0,
            String::new(),
        ));
    }
    if analysis.max_insns > options.max_insns {
        errors.push((
            ErrorKind::LimitExceeded {
                what: "bound on executed instructions",
                value: analysis.max_insns,
                limit: options.max_insns,
            },
            0,
            String::new(),
        ));
    }
    let maps: Vec<MapUse> = analysis
        .maps_used
        .iter()
        .filter_map(|&m| input.maps.get(m as usize))
        .map(|m| MapUse {
            name: m.name.clone(),
            bytes: map_bytes(m, options.ncpus),
        })
        .collect();
    let total = maps.iter().fold(0u64, |acc, m| acc.saturating_add(m.bytes));
    if total > options.max_map_bytes {
        errors.push((
            ErrorKind::LimitExceeded {
                what: "map memory in bytes",
                value: total,
                limit: options.max_map_bytes,
            },
            0,
            String::new(),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut eligible = Vec::new();
    let mut refused = Vec::new();
    let mut refusals = Vec::new();
    for &backend in &options.profiles {
        match profile::judge(input, cfg, analysis, backend, options) {
            Ok(()) => eligible.push(backend),
            Err(r) => {
                refused.push((backend, r.reason.clone()));
                refusals.push((
                    ErrorKind::ProfileRefused {
                        backend,
                        reason: r.reason,
                    },
                    r.insn,
                    String::new(),
                ));
            }
        }
    }
    if eligible.is_empty() && !options.profiles.is_empty() {
        return Err(refusals);
    }
    Ok(Contract {
        program: input.name.clone(),
        max_insns_executed: analysis.max_insns,
        max_stack_bytes: stack,
        map_bytes: total,
        maps,
        helpers_used: analysis
            .helpers_used
            .iter()
            .filter_map(|&id| helpers::lookup(id).map(|h| (h.id, h.name)))
            .collect(),
        eligible,
        refused,
        insn_slots: input.insns.len(),
    })
}
