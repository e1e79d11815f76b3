//! The capacity planner: from the verifier's contracts and a [`NicModel`], whether a set of
//! lambdas fits the NIC, how many cores one copy of the set takes, and the worst-case cycles
//! per request of each lambda — on a machine without the NIC.
//!
//! # Packing
//!
//! A NIC core runs one program, so lambdas sharing a core are coalesced into one program (the
//! workload optimizer's job): each core holds lambdas whose instruction slots, plus the
//! coalescer's dispatch (its fixed part and [`DISPATCH_PER_RULE_INSNS`] per lambda, the sizes
//! `nic_offload::coalesce` generates), fit the model's instruction budget. Lambdas are packed
//! first-fit by decreasing size ([`crate::coalesce::pack_cores`]), which is within 11/9 of the
//! fewest cores plus one; the remaining cores run further copies of the same programs for
//! throughput. Code the coalescer would merge between lambdas is counted twice: an upper bound.
//!
//! # Cycles
//!
//! `max_insns_executed × cycles_per_insn + map call sites × cycles_per_map_call +
//! dispatch`, with the model's estimates (see [`NicModel`]). The instruction bound is the
//! verifier's sound bound; the per-instruction and per-map-call costs are planning estimates,
//! and counting each map call site once assumes no map call sits in a loop (true of the SDK's
//! lambdas; a lambda that loops over lookups is under-estimated).

use loader::{
    LambdaParams,
    link::LinkedProgram,
    verify::{Limits, VerifyError, verify_object},
};
use serde::Serialize;
use verifier::{Backend, Contract};

use crate::model::NicModel;

/// Instructions per lambda in the coalescer's dispatch, at most: compare the port and the
/// lambda id, set up the context argument, call, return.
pub const DISPATCH_PER_RULE_INSNS: usize = 5;

/// Why planning failed for an object (not: why it does not fit).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("no objects to plan")]
    Empty,
    #[error(transparent)]
    Link(#[from] loader::link::LinkError),
    #[error(transparent)]
    Lower(#[from] crate::lower::LowerError),
}

/// One lambda in a plan.
#[derive(Clone, Debug, Serialize)]
pub struct LambdaPlan {
    pub lambda: String,
    pub insn_slots: usize,
    pub max_insns_executed: u64,
    pub max_stack_bytes: u32,
    pub map_bytes: u64,
    pub map_entries: u64,
    /// Map helper call sites in the code.
    pub map_call_sites: usize,
    pub worst_case_cycles: u64,
    /// `worst_case_cycles` at the model's clock, in nanoseconds.
    pub worst_case_ns: u64,
    /// Which core (0-based) holds this lambda, when it fits one.
    pub core: Option<usize>,
    /// Why this lambda cannot be offloaded to the model (empty: it can).
    pub refusals: Vec<String>,
}

/// The plan for a set of lambdas on one NIC model.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub nic: &'static str,
    pub cores_available: u32,
    pub insn_budget: usize,
    /// Cores one copy of the whole set needs.
    pub cores_needed: usize,
    /// Instruction slots of each core's coalesced program (estimate, with the dispatch).
    pub core_insns: Vec<usize>,
    pub total_map_entries: u64,
    pub fits: bool,
    /// Why the set does not fit (empty when it does).
    pub reasons: Vec<String>,
    pub lambdas: Vec<LambdaPlan>,
}

/// The maps of `linked` its code uses (the contract lists them): objects link every map the
/// ELF file declares, also those the program never references, and only used ones go to the
/// NIC.
pub fn used_maps<'a>(
    linked: &'a LinkedProgram,
    contract: &Contract,
) -> impl Iterator<Item = &'a loader::link::LinkedMap> {
    linked
        .maps
        .iter()
        .filter(|m| contract.maps.iter().any(|u| u.name == m.name))
}

/// Why `model` cannot hold the maps `linked` uses, one reason per problem.
pub fn map_refusals(model: &NicModel, linked: &LinkedProgram, contract: &Contract) -> Vec<String> {
    let mut out = Vec::new();
    for map in used_maps(linked, contract) {
        if !model.has_map_type(map.map_type) {
            out.push(format!(
                "map {} is a {} map; {} holds only array and hash maps",
                map.name,
                map.type_name(),
                model.name
            ));
        }
        let elem = NicModel::elem_bytes(map.key_size, map.value_size);
        if elem > model.max_elem_bytes {
            out.push(format!(
                "map {} has {elem}-byte elements (key and value rounded up to 8); {} takes at most {}",
                map.name, model.name, model.max_elem_bytes
            ));
        }
        if map.flags != 0 {
            out.push(format!(
                "map {} has flags {:#x}; the nfp driver refuses any map flags (read-only global data included)",
                map.name, map.flags
            ));
        }
    }
    out
}

/// Every reason `model` cannot run the program: the verifier's nfp profile (its first
/// refusal), the model's map rules (a map type the profile already named is not repeated) and
/// the stack. Empty when it can.
pub fn offload_refusals(
    model: &NicModel,
    linked: &LinkedProgram,
    contract: &Contract,
) -> Vec<String> {
    let verifier: Vec<String> = contract
        .refused
        .iter()
        .filter(|(b, _)| *b == Backend::Nfp)
        .map(|(_, r)| format!("verifier (nfp profile): {r}"))
        .collect();
    let mut out = verifier.clone();
    for reason in map_refusals(model, linked, contract) {
        let named = used_maps(linked, contract).any(|m| {
            reason.starts_with(&format!("map {} is a ", m.name))
                && verifier
                    .iter()
                    .any(|v| v.contains(&format!("map {} has type", m.name)))
        });
        if !named {
            out.push(reason);
        }
    }
    if contract.max_stack_bytes > model.stack_bytes {
        out.push(format!(
            "{} bytes of stack; {} gives {}",
            contract.max_stack_bytes, model.name, model.stack_bytes
        ));
    }
    out
}

fn map_call_sites(linked: &LinkedProgram) -> usize {
    linked
        .insns
        .iter()
        .filter(|i| i.is_helper_call() && matches!(i.imm, 1..=3))
        .count()
}

/// Verifies `object` for the kernel and the NFP (with the model's budget): the linked program
/// and the contract.
pub fn contract_for(
    bytes: &[u8],
    name: &str,
    params: &LambdaParams,
    model: &NicModel,
) -> Result<(LinkedProgram, Contract), VerifyError> {
    verify_object(
        bytes,
        name,
        params,
        &model.verifier_options(&Limits::default()),
    )
}

/// Plans `objects` (`(name, ELF bytes)`) on `model`.
pub fn plan(model: &'static NicModel, objects: &[(String, Vec<u8>)]) -> Result<Plan, PlanError> {
    plan_with(model, objects, false)
}

/// The contract and refusals of `object` after the NFP lowering pass ([`crate::lower`]): of
/// the lowered program when the pass succeeds; of the object as written, with the pass's
/// reasons as the refusals, when it refuses.
fn lowered_contract(
    bytes: &[u8],
    name: &str,
    model: &'static NicModel,
) -> Result<(LinkedProgram, Contract, Vec<String>), PlanError> {
    let params = LambdaParams::default();
    let rule = crate::coalesce::MatchRule {
        port: params.port,
        lambda_id: params.lambda_id,
    };
    let input = crate::coalesce::CoalesceInput::from_object(bytes, name, rule)?;
    match crate::lower::lower(&input, model) {
        Ok(out) => {
            let options = model.verifier_options(&Limits::default());
            let contract = loader::verify::verify_linked(&out.input.linked, &options)?;
            let refusals = offload_refusals(model, &out.input.linked, &contract);
            Ok((out.input.linked, contract, refusals))
        }
        Err(crate::lower::LowerError::Refused { refusals, .. }) => {
            let (linked, contract) = contract_for(bytes, name, &params, model)?;
            let refusals = refusals.iter().map(|r| format!("lowering: {r}")).collect();
            Ok((linked, contract, refusals))
        }
        Err(e) => Err(e.into()),
    }
}

/// [`plan`], with each object first lowered for the model ([`crate::lower`]) when `lower`.
pub fn plan_with(
    model: &'static NicModel,
    objects: &[(String, Vec<u8>)],
    lower: bool,
) -> Result<Plan, PlanError> {
    if objects.is_empty() {
        return Err(PlanError::Empty);
    }
    let mut lambdas = Vec::new();
    for (name, bytes) in objects {
        let (linked, contract, refusals) = if lower {
            lowered_contract(bytes, name, model)?
        } else {
            let (linked, contract) = contract_for(bytes, name, &LambdaParams::default(), model)?;
            let refusals = offload_refusals(model, &linked, &contract);
            (linked, contract, refusals)
        };
        let sites = map_call_sites(&linked);
        let cycles = contract
            .max_insns_executed
            .saturating_add(
                (crate::coalesce::dispatch_fixed_insns() + DISPATCH_PER_RULE_INSNS * objects.len())
                    as u64,
            )
            .saturating_mul(model.cycles_per_insn)
            .saturating_add(sites as u64 * model.cycles_per_map_call);
        lambdas.push(LambdaPlan {
            lambda: name.clone(),
            insn_slots: contract.insn_slots,
            max_insns_executed: contract.max_insns_executed,
            max_stack_bytes: contract.max_stack_bytes,
            map_bytes: contract.map_bytes,
            map_entries: used_maps(&linked, &contract)
                .map(|m| u64::from(m.max_entries))
                .sum(),
            map_call_sites: sites,
            worst_case_cycles: cycles,
            worst_case_ns: cycles.saturating_mul(1000) / u64::from(model.clock_mhz.max(1)),
            core: None,
            refusals,
        });
    }

    // Refused lambdas cannot go to the NIC at all: they take no core.
    let budget = model.insn_budget;
    let offloadable: Vec<usize> = (0..lambdas.len())
        .filter(|&i| lambdas[i].refusals.is_empty())
        .collect();
    let sizes: Vec<usize> = offloadable.iter().map(|&i| lambdas[i].insn_slots).collect();
    let packing = crate::coalesce::pack_cores(model, &sizes);
    let mut reasons = Vec::new();
    for (k, &i) in offloadable.iter().enumerate() {
        lambdas[i].core = packing.core_of[k];
        if packing.core_of[k].is_none() {
            reasons.push(format!(
                "{}: {} instruction slots with the dispatch exceed one core's budget of {budget}",
                lambdas[i].lambda,
                crate::coalesce::dispatch_fixed_insns()
                    + DISPATCH_PER_RULE_INSNS
                    + lambdas[i].insn_slots
            ));
        }
    }
    let cores = packing.core_insns;
    for l in &lambdas {
        for r in &l.refusals {
            reasons.push(format!("{}: {r}", l.lambda));
        }
    }
    if cores.len() > model.cores as usize {
        reasons.push(format!(
            "one copy of the set needs {} cores; {} has {}",
            cores.len(),
            model.name,
            model.cores
        ));
    }
    let total_map_entries: u64 = lambdas.iter().map(|l| l.map_entries).sum();
    if total_map_entries > model.max_total_entries {
        reasons.push(format!(
            "{total_map_entries} map entries in total; {} holds {}",
            model.name, model.max_total_entries
        ));
    }
    Ok(Plan {
        nic: model.name,
        cores_available: model.cores,
        insn_budget: budget,
        cores_needed: cores.len(),
        core_insns: cores,
        total_map_entries,
        fits: reasons.is_empty(),
        reasons,
        lambdas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use loader::link::{LinkedMap, LinkedMapKind};

    /// Every rule the model adds to the verifier's nfp profile (map type, element size, map
    /// flags, stack) refuses a program, with its message.
    #[test]
    fn the_models_own_rules_each_refuse_a_program_with_the_message() {
        let linked = LinkedProgram {
            lambda: "t".into(),
            program: "t".into(),
            section: "xdp".into(),
            insns: ebpf_isa::asm::assemble(
                "stdw [%r10-16], 0
stw [%r10-4], 0
mov %r2, %r10
add %r2, -4
lddw %r1, map_fd 0
call 1
mov %r0, 2
exit",
            )
            .unwrap(),
            maps: vec![LinkedMap {
                name: "M".into(),
                map_type: verifier::map_type::HASH,
                key_size: 4,
                value_size: 8,
                max_entries: 16,
                // BPF_F_NO_PREALLOC.
                flags: 1,
                kind: LinkedMapKind::Declared,
                initial: vec![],
            }],
            lines: vec![],
        };
        let options = Limits::default().options(Backend::Kernel, 1);
        let contract = loader::verify::verify_linked(&linked, &options).unwrap();
        let model = NicModel {
            map_types: &[crate::model::MAP_ARRAY],
            max_elem_bytes: 8,
            stack_bytes: 8,
            ..crate::model::model("nfp-4000").unwrap().clone()
        };
        assert_eq!(
            offload_refusals(&model, &linked, &contract),
            vec![
                "map M is a hash map; nfp-4000 holds only array and hash maps",
                "map M has 16-byte elements (key and value rounded up to 8); nfp-4000 takes at most 8",
                "map M has flags 0x1; the nfp driver refuses any map flags (read-only global data included)",
                "16 bytes of stack; nfp-4000 gives 8",
            ]
        );
    }
}
