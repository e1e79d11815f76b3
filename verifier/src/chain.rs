//! Bounds over a tail-call chain: a dispatcher that tail-calls one of many lambdas.
//!
//! A tail call replaces the running program, so one request executes the dispatcher's
//! instructions up to the tail call and then the lambda's. The chain cannot loop when no
//! target tail-calls again, which is what [`tail_call_chain`] demands; the kernel's own limit
//! of 33 chained calls is then never approached, and the chain's bound is the sum of the two.

use crate::contract::Contract;
use crate::helpers::TAIL_CALL;

/// Why a chain is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A tail-call target tail-calls itself: the chain could loop or grow without a bound
    /// this verifier can state.
    #[error(
        "program `{program}` calls bpf_tail_call: a lambda behind a dispatcher may not tail-call, since the chain could loop"
    )]
    TargetTailCalls { program: String },
    /// The chain's bound exceeds the limit.
    #[error(
        "the chain dispatcher → `{program}` may execute {total} instructions ({entry} + {target}), more than the limit of {limit}"
    )]
    OverLimit {
        program: String,
        entry: u64,
        target: u64,
        total: u64,
        limit: u64,
    },
}

/// The bound on instructions one request executes through `entry` (which may tail-call) and
/// then `target` (which may not), refused above `limit`.
pub fn tail_call_chain(entry: &Contract, target: &Contract, limit: u64) -> Result<u64, ChainError> {
    if target.helpers_used.iter().any(|(id, _)| *id == TAIL_CALL) {
        return Err(ChainError::TargetTailCalls {
            program: target.program.clone(),
        });
    }
    let total = entry
        .max_insns_executed
        .saturating_add(target.max_insns_executed);
    if total > limit {
        return Err(ChainError::OverLimit {
            program: target.program.clone(),
            entry: entry.max_insns_executed,
            target: target.max_insns_executed,
            total,
            limit,
        });
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(name: &str, bound: u64, helpers: Vec<(i32, &'static str)>) -> Contract {
        Contract {
            program: name.into(),
            max_insns_executed: bound,
            max_stack_bytes: 0,
            map_bytes: 0,
            maps: Vec::new(),
            helpers_used: helpers,
            eligible: Vec::new(),
            refused: Vec::new(),
            insn_slots: 0,
        }
    }

    #[test]
    fn the_chain_bound_is_the_sum_and_a_tail_calling_target_is_refused() {
        let dispatcher = contract("dispatch", 60, vec![(TAIL_CALL, "bpf_tail_call")]);
        let lambda = contract("whoami", 1500, vec![(1, "bpf_map_lookup_elem")]);
        assert_eq!(tail_call_chain(&dispatcher, &lambda, 10_000), Ok(1560));
        assert!(matches!(
            tail_call_chain(&dispatcher, &lambda, 1000),
            Err(ChainError::OverLimit { total: 1560, .. })
        ));
        let looping = contract("again", 10, vec![(TAIL_CALL, "bpf_tail_call")]);
        let err = tail_call_chain(&dispatcher, &looping, 10_000).unwrap_err();
        assert!(err.to_string().contains("may not tail-call"), "{err}");
    }
}
